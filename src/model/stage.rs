//! A convolution stage, the unit of the conv nets: a convolution, a norm over channels and the
//! (biased) activation, with the buffers its backward pass needs (`nn::conv`, `nn::channel`).

use super::{Param, Role};

use crate::engine::{Float, Rng};
use crate::nn::activation::Activation;
use crate::nn::channel::{self, ChanNorm};
use crate::nn::conv::Conv;
use crate::nn::init::{self, InitParams};
use crate::nn::norm::Mode;
use crate::spec::BiasedActSpec;

/// A convolution's geometry and parameter indices.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvIdx {
    pub(crate) geom: Conv,
    pub(crate) w: usize,
    pub(crate) b: usize,
}

/// conv → norm → activation, with the buffers its backward pass needs.
pub(crate) struct Stage<F> {
    pub(crate) conv: ConvIdx,
    norm: ChanNorm,
    /// γ, β and (BatchNorm) the running mean and variance.
    gamma: Option<usize>,
    beta: Option<usize>,
    running: Option<(usize, usize)>,
    act: Activation,
    /// The biased form's a, b, c (absent when plain).
    abc: Option<[usize; 3]>,
    /// im2col of the input, per image.
    cols: Vec<F>,
    /// Convolution output `[n, c, plane]`.
    z: Vec<F>,
    /// The stage's output.
    pub(crate) h: Vec<F>,
    /// `a·f′(z − b)`.
    d: Vec<F>,
    /// `f(z − b)` (only when `a` is learned).
    fu: Vec<F>,
    cache: channel::Cache<F>,
    /// a, b, c broadcast per channel (forward), then their per-channel gradients (backward).
    abc_c: [Vec<F>; 3],
}

impl<F: Float> Stage<F> {
    /// A 3×3 convolution (padding 1) from `c_in` to `c_out` channels on `(h, w)` images, then
    /// `norm` and the activation, its parameters appended to `params` under `names` (conv,
    /// norm, activation prefixes), buffers for `capacity` images.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        params: &mut Vec<Param<F>>,
        names: &(String, String, String),
        layer: usize,
        (c_in, c_out, (sh, sw)): (usize, usize, (usize, usize)),
        norm: ChanNorm,
        (act, act_spec): (Activation, &BiasedActSpec),
        ip: &InitParams,
        capacity: usize,
        rng: &mut Rng,
    ) -> Stage<F> {
        let geom = Conv::new(c_in, c_out, 3, 1, 1, 1, 1, (sh, sw))
            .expect("3×3 convolution with padding 1 keeps the size");
        let conv = push_conv(params, &names.0, layer, geom, false, ip, rng);

        let (mut gamma, mut beta, mut running) = (None, None, None);
        if norm != ChanNorm::None {
            let nm = &names.1;
            gamma = Some(super::push_param(
                params,
                format!("{nm}.weight"),
                vec![c_out],
                vec![1.0; c_out],
                (layer, Role::NormWeight),
            ));
            beta = Some(super::push_param(
                params,
                format!("{nm}.bias"),
                vec![c_out],
                vec![0.0; c_out],
                (layer, Role::NormBias),
            ));
            if norm == ChanNorm::Batch {
                let m = super::push_param(
                    params,
                    format!("{nm}.running_mean"),
                    vec![c_out],
                    vec![0.0; c_out],
                    (layer, Role::RunningMean),
                );
                let v = super::push_param(
                    params,
                    format!("{nm}.running_var"),
                    vec![c_out],
                    vec![1.0; c_out],
                    (layer, Role::RunningVar),
                );
                params[m].trainable = false;
                params[v].trainable = false;
                running = Some((m, v));
            }
        }
        let abc = super::push_act_params(params, act_spec, &names.2, layer, c_out);
        let plane = sh * sw;
        let n = capacity * c_out * plane;
        let zeros = |k: usize| vec![F::zero(); k];
        Stage {
            conv,
            norm,
            gamma,
            beta,
            running,
            act,
            abc,
            cols: zeros(geom.cols_len::<F>(capacity)),
            z: zeros(n),
            h: zeros(n),
            d: zeros(n),
            fu: zeros(if abc.is_some() { n } else { 0 }),
            cache: channel::Cache::new(norm, capacity, c_out, plane),
            abc_c: [zeros(c_out), zeros(c_out), zeros(c_out)],
        }
    }

    pub(crate) fn channels(&self) -> usize {
        self.conv.geom.c_out
    }
    pub(crate) fn plane(&self) -> usize {
        self.conv.geom.oh * self.conv.geom.ow
    }

    /// `input: [n, c_in, h, w]` → `self.h: [n, c_out, h, w]`.
    pub(crate) fn forward(
        &mut self,
        params: &mut [Param<F>],
        input: &[F],
        n: usize,
        mode: Mode,
        eps: f64,
    ) {
        let (c, plane) = (self.channels(), self.plane());
        let len = n * c * plane;
        let g = self.conv.geom;
        g.forward(
            n,
            input,
            &params[self.conv.w].value,
            Some(&params[self.conv.b].value),
            &mut self.z,
            &mut self.cols,
        );
        // Running statistics are taken out of the parameter list while γ, β are read.
        let mut running = self.running.map(|(m, v)| {
            (
                std::mem::take(&mut params[m].value),
                std::mem::take(&mut params[v].value),
            )
        });
        let abc = self.abc.map(|idx| {
            for (k, &i) in idx.iter().enumerate() {
                let v = &params[i].value;
                if v.len() == 1 {
                    self.abc_c[k].fill(v[0]);
                } else {
                    self.abc_c[k].copy_from_slice(v);
                }
            }
            (&self.abc_c[0][..], &self.abc_c[1][..], &self.abc_c[2][..])
        });
        let fu = if self.fu.is_empty() {
            None
        } else {
            Some(&mut self.fu[..len])
        };
        let affine: (&[F], &[F]) = match (self.gamma, self.beta) {
            (Some(gi), Some(bi)) => (&params[gi].value, &params[bi].value),
            _ => (&[], &[]),
        };
        channel::forward(
            self.norm,
            mode,
            eps,
            (n, c, plane),
            &self.z,
            affine,
            running
                .as_mut()
                .map(|(m, v)| (m.as_mut_slice(), v.as_mut_slice())),
            channel::ActOut {
                act: self.act,
                abc,
                h: &mut self.h[..len],
                d: &mut self.d[..len],
                fu,
            },
            &mut self.cache,
        );
        if let (Some((m, v)), Some((mi, vi))) = (running, self.running) {
            params[mi].value = m;
            params[vi].value = v;
        }
    }

    /// From `g = ∂L/∂h` (consumed) and the forward's `input`: every parameter gradient, and
    /// `∂L/∂input` into `dx` when given. Gradients of a, b, c accumulate (zeroed by the
    /// caller); the rest are overwritten.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &mut self,
        params: &mut [Param<F>],
        input: &[F],
        g: &mut [F],
        n: usize,
        dx: Option<&mut [F]>,
        partial: &mut [F],
    ) {
        let (c, plane) = (self.channels(), self.plane());
        let len = n * c * plane;
        let g = &mut g[..len];
        let (mut dgamma, mut dbeta) = match (self.gamma, self.beta) {
            (Some(gi), Some(bi)) => (
                std::mem::take(&mut params[gi].grad),
                std::mem::take(&mut params[bi].grad),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let gamma: &[F] = self.gamma.map_or(&[], |gi| &params[gi].value);
        // The per-channel a, b, c of the forward pass are spent (d and f(u) hold what backward
        // needs), so their buffers take the per-channel gradients; f(u) is kept whenever the
        // form has parameters (see `Unet::new`).
        let [ga, gb, gc] = &mut self.abc_c;
        let act = self.abc.map(|_| {
            for v in [&mut *ga, &mut *gb, &mut *gc] {
                v.fill(F::zero());
            }
            channel::ActGrads {
                fu: &self.fu[..len],
                ga: &mut ga[..],
                gb: &mut gb[..],
                gc: &mut gc[..],
            }
        });
        channel::backward(
            self.norm,
            (n, c, plane),
            gamma,
            g,
            &self.d[..len],
            act,
            (&mut dgamma, &mut dbeta),
            &mut self.cache,
        );
        if let Some([ia, ib, ic]) = self.abc {
            for (i, grad) in [
                (ia, &self.abc_c[0]),
                (ib, &self.abc_c[1]),
                (ic, &self.abc_c[2]),
            ] {
                let p = &mut params[i].grad;
                if p.len() == 1 {
                    p[0] += grad.iter().fold(F::zero(), |s, &v| s + v);
                } else {
                    for (d, &v) in p.iter_mut().zip(grad) {
                        *d += v;
                    }
                }
            }
        }
        if let (Some(gi), Some(bi)) = (self.gamma, self.beta) {
            params[gi].grad = dgamma;
            params[bi].grad = dbeta;
        }
        let (wi, bi) = (self.conv.w, self.conv.b);
        let mut dw = std::mem::take(&mut params[wi].grad);
        let mut db = std::mem::take(&mut params[bi].grad);
        self.conv.geom.backward(
            n,
            input,
            g,
            &params[wi].value,
            &mut self.cols,
            &mut dw,
            Some(&mut db),
            dx,
            partial,
        );
        params[wi].grad = dw;
        params[bi].grad = db;
    }
}

/// Appends a convolution's weight and bias; returns the indices.
#[allow(clippy::too_many_arguments)]
pub(crate) fn push_conv<F: Float>(
    params: &mut Vec<Param<F>>,
    name: &str,
    layer: usize,
    geom: Conv,
    transposed: bool,
    ip: &InitParams,
    rng: &mut Rng,
) -> ConvIdx {
    let area = geom.kh * geom.kw;
    // PyTorch's fans from the weight's own shape: Conv2d [c_out, c_in/g, k, k], ConvTranspose2d
    // [c_in, c_out/g, k, k] (here `geom` is the transposed layer's dual, so its c_out is the
    // layer's c_in).
    let (rows, cols) = (geom.c_out, geom.c_in / geom.groups);
    let shape = vec![rows, cols, geom.kh, geom.kw];
    let (fan_in, fan_out) = (cols * area, rows * area);
    let biases = if transposed { geom.c_in } else { geom.c_out };
    let (w, b) = init::conv(ip, geom.weight_len(), (fan_in, fan_out), biases, rng);
    let w = super::push_param(
        params,
        format!("{name}.weight"),
        shape,
        w,
        (layer, Role::Weight),
    );
    let b = super::push_param(
        params,
        format!("{name}.bias"),
        vec![biases],
        b,
        (layer, Role::Bias),
    );
    ConvIdx { geom, w, b }
}
