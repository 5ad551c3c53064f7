//! A plain convolutional classifier: stages of conv 3×3 (padding 1) → norm → activation → 2×2
//! pool (max or average, flooring odd sizes), then global average pooling over the plane and a
//! linear head — the LeNet/VGG pattern with a global-pool head (Lin, Chen & Yan 2014, "Network
//! in Network"). Layers from `nn/` through `model::stage`; the loss is `nn::loss`'s
//! cross-entropy over the logits.
//!
//! Parameter names are PyTorch's for that module tree: `features.{i}.conv.{weight,bias}`,
//! `features.{i}.norm.*`, `features.{i}.act.{a,b,c}`, `head.{weight,bias}` (`[classes, c_last]`).

use std::any::Any;

use super::stage::Stage;
use super::{Batch, Model, Param};
use crate::engine::{par, Float, Rng};
use crate::nn::channel::ChanNorm;
use crate::nn::init::{self, InitParams};
use crate::nn::linear;
use crate::nn::loss::{self, LossValue};
use crate::nn::norm::Mode;
use crate::nn::resample::{self, Pool};
use crate::spec::cnn::{CnnSpec, PoolKind};
use crate::spec::unet::ChannelNorm;
use crate::spec::LossKind;

pub struct Cnn<F: Float> {
    params: Vec<Param<F>>,
    eps: f64,
    capacity: usize,
    classes: usize,
    pool: Pool,
    stages: Vec<Stage<F>>,
    /// `pooled[i]`: stage `i`'s pooled output `[n, c_i, h_i/2, w_i/2]` and the max pool's argmax.
    pooled: Vec<(Vec<F>, Vec<u32>)>,
    /// Globally average-pooled features `[n, c_last]`.
    feat: Vec<F>,
    head: (usize, usize),
    /// `[n, classes]` logits of the last forward pass, and the loss's gradient.
    pub logits: Vec<F>,
    pub d_logits: Vec<F>,
    /// Scratch gradients: ∂L/∂feat, and ∂L/∂(a stage's output or pooled output).
    g_feat: Vec<F>,
    g_a: Vec<F>,
    g_b: Vec<F>,
    partial: Vec<F>,
    n: usize,
}

impl<F: Float> Cnn<F> {
    /// A classifier of `[in_ch, h, w]` images into `classes`, buffers for `capacity` images.
    pub fn new(
        spec: &CnnSpec,
        eps: f64,
        (in_ch, h, w): (usize, usize, usize),
        classes: usize,
        capacity: usize,
        rng: &mut Rng,
    ) -> Self {
        let ip = InitParams {
            init: spec.init,
            fan_mode: spec.fan_mode,
            ..InitParams::PYTORCH
        };
        let mut params: Vec<Param<F>> = Vec::new();
        let mut stages = Vec::new();
        let mut pooled = Vec::new();
        let (mut c_in, mut sh, mut sw) = (in_ch, h, w);
        let mut biggest = in_ch * h * w;
        let mut max_weight = 1;
        for (i, &c) in spec.channels.iter().enumerate() {
            let norm = match spec.norm {
                ChannelNorm::None => ChanNorm::None,
                ChannelNorm::Batchnorm => ChanNorm::Batch,
                ChannelNorm::Groupnorm => ChanNorm::Group(spec.groups_for(c)),
                ChannelNorm::Layernorm => ChanNorm::Layer,
            };
            let names = (
                format!("features.{i}.conv"),
                format!("features.{i}.norm"),
                format!("features.{i}.act"),
            );
            stages.push(Stage::new(
                &mut params,
                &names,
                i,
                (c_in, c, (sh, sw)),
                norm,
                (spec.activation, &spec.act),
                &ip,
                capacity,
                rng,
            ));
            biggest = biggest.max(c * sh * sw);
            max_weight = max_weight.max(9 * c * c_in);
            let (ph, pw) = (sh / 2, sw / 2);
            pooled.push((
                vec![F::zero(); capacity * c * ph * pw],
                vec![0u32; capacity * c * ph * pw],
            ));
            (c_in, sh, sw) = (c, ph, pw);
        }
        let (wv, bv) = init::linear(&ip, classes, c_in, rng);
        let head = super::push_linear(
            &mut params,
            "head",
            spec.channels.len(),
            (classes, c_in),
            (wv, Some(bv)),
        );
        let head = (head.0, head.1.expect("the head has a bias"));
        Cnn {
            params,
            eps,
            capacity,
            classes,
            pool: match spec.pool {
                PoolKind::Max => Pool::Max,
                PoolKind::Avg => Pool::Avg,
            },
            stages,
            pooled,
            feat: vec![F::zero(); capacity * c_in],
            head,
            logits: vec![F::zero(); capacity * classes],
            d_logits: vec![F::zero(); capacity * classes],
            g_feat: vec![F::zero(); capacity * c_in],
            g_a: vec![F::zero(); capacity * biggest],
            g_b: vec![F::zero(); capacity * biggest],
            // Per-image weight-gradient partials of a convolution, or the head's bias partials.
            partial: vec![
                F::zero();
                (capacity * max_weight)
                    .max(crate::nn::norm::partial_len(capacity, classes))
            ],
            n: 0,
        }
    }

    /// Forward over `n` images `x: [n, in_ch, h, w]` into [`Self::logits`] (`[n, classes]`).
    pub fn forward_images(&mut self, x: &[F], n: usize, mode: Mode) {
        assert!(
            n <= self.capacity,
            "cnn: {n} images exceed the capacity {}",
            self.capacity
        );
        self.n = n;
        let eps = self.eps;
        for i in 0..self.stages.len() {
            let input: &[F] = if i == 0 { x } else { &self.pooled[i - 1].0 };
            let s = &mut self.stages[i];
            s.forward(&mut self.params, input, n, mode, eps);
            let (c, g) = (s.channels(), s.conv.geom);
            let (buf, arg) = &mut self.pooled[i];
            resample::pool_forward(self.pool, 2, n * c, (g.oh, g.ow), &s.h, buf, arg);
        }
        // Global average pooling: one feature per channel.
        let last = self.stages.last().expect("at least one stage");
        let (c, g) = (last.channels(), last.conv.geom);
        let plane = (g.oh / 2) * (g.ow / 2);
        let inv = F::of(1.0 / plane as f64);
        let pooled = &self.pooled[self.stages.len() - 1].0;
        for q in 0..n * c {
            self.feat[q] = crate::engine::ops::sum(&pooled[q * plane..(q + 1) * plane]) * inv;
        }
        let (wi, bi) = self.head;
        linear::forward(
            &self.feat[..n * c],
            &self.params[wi].value,
            &self.params[bi].value,
            (n, self.classes, c),
            F::zero(),
            &mut self.logits[..n * self.classes],
        );
    }

    /// Backward from [`Self::d_logits`] to every parameter gradient (overwritten).
    pub fn backward_images(&mut self, x: &[F]) {
        let n = self.n;
        par::for_each_mut(&mut self.params, |p| p.grad.fill(F::zero()));
        let last = self.stages.len() - 1;
        let (c, g) = (self.stages[last].channels(), self.stages[last].conv.geom);
        let (wi, bi) = self.head;
        let dims = (n, self.classes, c);
        {
            let (pw, pb) = {
                let (lo, hi) = self.params.split_at_mut(bi.max(wi));
                if wi < bi {
                    (&mut lo[wi], &mut hi[0])
                } else {
                    (&mut hi[0], &mut lo[bi])
                }
            };
            let dl = &self.d_logits[..n * self.classes];
            linear::backward_params(
                dl,
                &self.feat[..n * c],
                dims,
                &mut pw.grad,
                Some(&mut pb.grad),
                &mut self.partial,
            );
            linear::backward_input(dl, &pw.value, dims, &mut self.g_feat[..n * c]);
        }
        // Through the global average: every pixel of a channel gets 1/plane of its gradient.
        let plane = (g.oh / 2) * (g.ow / 2);
        let inv = F::of(1.0 / plane as f64);
        for q in 0..n * c {
            self.g_b[q * plane..(q + 1) * plane].fill(self.g_feat[q] * inv);
        }
        // g_b holds ∂L/∂pooled[i]; through the pool into g_a, then the stage into g_b.
        for i in (0..self.stages.len()).rev() {
            let s = &mut self.stages[i];
            let (c, gi) = (s.channels(), s.conv.geom);
            let len = n * c * gi.oh * gi.ow;
            resample::pool_backward(
                self.pool,
                2,
                n * c,
                (gi.oh, gi.ow),
                &self.g_b,
                &self.pooled[i].1,
                &mut self.g_a[..len],
            );
            let dx = (i > 0).then_some(&mut self.g_b[..]);
            let input: &[F] = if i == 0 { x } else { &self.pooled[i - 1].0 };
            s.backward(
                &mut self.params,
                input,
                &mut self.g_a,
                n,
                dx,
                &mut self.partial,
            );
        }
    }
}

impl<F: Float> Model<F> for Cnn<F> {
    fn params(&self) -> &[Param<F>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<F>] {
        &mut self.params
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    /// `Batch::Rows { x: [n, in_ch·h·w] images, y: [n, 1] class indices }`.
    fn forward(&mut self, batch: &Batch<'_, F>, mode: Mode) {
        let (x, _, rows) = batch.image_rows("cnn");
        self.forward_images(x, rows, mode);
    }
    fn loss(&mut self, batch: &Batch<'_, F>, grad: bool) -> LossValue {
        let (_, y, rows) = batch.image_rows("cnn");
        let k = self.classes;
        let g = grad.then_some(&mut self.d_logits[..rows * k]);
        loss::loss(
            LossKind::CrossEntropy,
            &self.logits[..rows * k],
            y,
            rows,
            k,
            g,
        )
    }
    fn backward(&mut self, batch: &Batch<'_, F>) {
        self.backward_images(batch.image_rows("cnn").0);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Elements of parameters and buffers for the memory estimate (an upper bound): per stage its
/// weights, and its im2col (none where the direct kernels run every pass), conv output,
/// activation, slope, f(u), cached x̂ and pooled buffers, and two scratch gradients.
pub fn elements(
    spec: &CnnSpec,
    (in_ch, h, w): (usize, usize, usize),
    classes: usize,
    capacity: usize,
) -> (u64, u64) {
    let cap = capacity as u64;
    let (mut params, mut buffers) = (0u64, 0u64);
    let (mut c_in, mut plane) = (in_ch as u64, (h * w) as u64);
    let mut biggest = c_in * plane;
    for &c in &spec.channels {
        let c = c as u64;
        params += 9 * c_in * c + c + 8 * c;
        buffers += cap * plane * (9 * c_in + 7 * c) + cap * c * plane / 2;
        biggest = biggest.max(c * plane);
        c_in = c;
        plane /= 4;
    }
    params += classes as u64 * (c_in + 1);
    buffers += cap * (2 * classes as u64 + 2 * c_in) + 2 * cap * biggest;
    (params, buffers)
}
