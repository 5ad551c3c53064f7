//! The U-Net (Ronneberger, Fischer & Brox 2015): an encoder of convolution blocks and 2×2 max
//! pools, a decoder that doubles the resolution and concatenates the encoder's output at the
//! same level (the skip), and a 1×1 head giving per-pixel logits. Layers from `nn/`: `conv`,
//! `channel` (norms and the biased activation), `resample` (pooling, upsampling, concat) and
//! `seg_loss`.
//!
//! With `c_l = base_channels · channel_mult^l` and `block(c_in → c_out)` = conv 3×3 (padding 1)
//! → norm → activation → conv 3×3 → norm → activation:
//! - `enc.0 = block(in → c_0)(x)`, `enc.l = block(c_{l−1} → c_l)(maxpool₂(enc.{l−1}))`;
//! - for `l = depth−1 … 0`: `u = up.l(h_{l+1})` (`h_depth = enc.depth`), `h_l = dec.l =
//!   block(2c_l → c_l)([enc.l, u])`, the skip's channels first;
//! - `up.l`: a 2×2 transposed convolution with stride 2 (`c_{l+1} → c_l`), or ×2 nearest or
//!   bilinear upsampling then a 1×1 convolution;
//! - `head`: a 1×1 convolution `c_0 → k` (k = classes for cross-entropy, 1 for the binary
//!   losses).
//!
//! Parameter names are PyTorch's for that module tree (`enc.0.conv1.weight`, `enc.0.norm1.bias`,
//! `enc.0.norm1.running_mean`, `enc.0.act1.a`, `up.0.weight`, `dec.0.conv2.bias`,
//! `head.weight`), which `benches/peers/torch_unet.py` and `tests/parity/conv_parity.py` build
//! independently.

use std::any::Any;

use super::stage::{push_conv, ConvIdx, Stage};
use super::{Batch, Model, Param, Role};
use crate::engine::{par, Float, Rng};
use crate::nn::activation::Activation;
use crate::nn::channel::ChanNorm;
use crate::nn::conv::Conv;
use crate::nn::init::InitParams;
use crate::nn::loss::LossValue;
use crate::nn::norm::Mode;
use crate::nn::resample::{self, Pool, Upsample};
use crate::nn::seg_loss;
use crate::spec::unet::{ChannelNorm, UnetSpec, Upsampling};
use crate::spec::BiasedActSpec;

/// The decoder's upsampling from level `l + 1` to `l`.
struct Up<F> {
    conv: ConvIdx,
    mode: Upsampling,
    /// The ×2 upsampled input (nearest and bilinear), `[n, c_{l+1}, plane_l]`.
    upsampled: Vec<F>,
    out: Vec<F>,
    cols: Vec<F>,
}

/// What the model is fitted to.
#[derive(Clone, Copy, Debug)]
struct Dims {
    /// Head channels: `classes`, or 1 for the binary losses.
    out_ch: usize,
    h: usize,
    w: usize,
}

pub struct Unet<F: Float> {
    params: Vec<Param<F>>,
    spec: UnetSpec,
    eps: f64,
    dims: Dims,
    capacity: usize,
    /// Images of the last forward pass.
    n: usize,
    enc: Vec<[Stage<F>; 2]>,
    dec: Vec<[Stage<F>; 2]>,
    up: Vec<Up<F>>,
    /// `pooled[l − 1]`: the max-pooled `enc.{l−1}` that `enc.l` reads, and the pool's argmax.
    pooled: Vec<(Vec<F>, Vec<u32>)>,
    /// `cats[l]`: `[enc.l, up.l]` along channels.
    cats: Vec<Vec<F>>,
    head: ConvIdx,
    head_cols: Vec<F>,
    /// `[n, out_ch, h, w]` logits of the last forward pass, and the loss's gradient.
    pub logits: Vec<F>,
    pub d_logits: Vec<F>,
    /// `g_enc[l]`: ∂L/∂enc.l (skip and pool paths summed).
    g_enc: Vec<Vec<F>>,
    /// Scratch gradients, each the size of the largest activation.
    scratch: [Vec<F>; 3],
    partial: Vec<F>,
}

impl<F: Float> Unet<F> {
    /// A U-Net for `[in_ch, h, w]` images of `classes` classes, buffers for `capacity` images.
    /// `h` and `w` must be multiples of `2^depth` (checked by the spec).
    pub fn new(
        spec: &UnetSpec,
        eps: f64,
        (in_ch, h, w): (usize, usize, usize),
        classes: usize,
        capacity: usize,
        rng: &mut Rng,
    ) -> Self {
        let depth = spec.depth;
        let out_ch = spec.loss.channels(classes);
        let ip = InitParams {
            init: spec.init,
            fan_mode: spec.fan_mode,
            ..InitParams::PYTORCH
        };
        let mut params: Vec<Param<F>> = Vec::new();
        let size = |l: usize| (h >> l, w >> l);
        let norm_of = |c: usize| match spec.norm {
            ChannelNorm::None => ChanNorm::None,
            ChannelNorm::Batchnorm => ChanNorm::Batch,
            ChannelNorm::Groupnorm => ChanNorm::Group(spec.groups_for(c)),
            ChannelNorm::Layernorm => ChanNorm::Layer,
        };
        // The biased activation must keep f(u) whenever it has parameters, so that b's and c's
        // gradients (and a's, when learned) come out of one pass.
        let act_spec: BiasedActSpec = spec.act.clone();
        let mut layer = 0;
        let stage = |params: &mut Vec<Param<F>>,
                     name: &str,
                     idx: usize,
                     c_in: usize,
                     c_out: usize,
                     size: (usize, usize),
                     rng: &mut Rng,
                     layer: usize| {
            let names = (
                format!("{name}.conv{idx}"),
                format!("{name}.norm{idx}"),
                format!("{name}.act{idx}"),
            );
            Stage::new(
                params,
                &names,
                layer,
                (c_in, c_out, size),
                norm_of(c_out),
                (spec.activation, &act_spec),
                &ip,
                capacity,
                rng,
            )
        };
        let mut enc = Vec::new();
        for l in 0..=depth {
            let c_in = if l == 0 { in_ch } else { spec.channels(l - 1) };
            let c = spec.channels(l);
            let name = format!("enc.{l}");
            let s1 = stage(&mut params, &name, 1, c_in, c, size(l), rng, layer);
            let s2 = stage(&mut params, &name, 2, c, c, size(l), rng, layer);
            enc.push([s1, s2]);
            layer += 1;
        }
        let mut up = Vec::new();
        let mut dec_rev = Vec::new();
        for l in (0..depth).rev() {
            let (c_hi, c) = (spec.channels(l + 1), spec.channels(l));
            let (hl, wl) = size(l);
            let plane = hl * wl;
            let (conv, upsampled) = match spec.upsampling {
                Upsampling::Transposed => {
                    let geom = Conv::transposed(c_hi, c, 2, 2, 0, 1, 1, size(l + 1))
                        .expect("2×2 stride-2 transposed convolution doubles the size");
                    (
                        push_conv(&mut params, &format!("up.{l}"), layer, geom, true, &ip, rng),
                        Vec::new(),
                    )
                }
                Upsampling::Nearest | Upsampling::Bilinear => {
                    let geom =
                        Conv::new(c_hi, c, 1, 1, 0, 1, 1, (hl, wl)).expect("1×1 convolution");
                    (
                        push_conv(
                            &mut params,
                            &format!("up.{l}"),
                            layer,
                            geom,
                            false,
                            &ip,
                            rng,
                        ),
                        vec![F::zero(); capacity * c_hi * plane],
                    )
                }
            };
            up.push(Up {
                conv,
                mode: spec.upsampling,
                upsampled,
                out: vec![F::zero(); capacity * c * plane],
                cols: vec![
                    F::zero();
                    if spec.upsampling == Upsampling::Transposed {
                        capacity * conv.geom.col_len()
                    } else {
                        conv.geom.cols_len::<F>(capacity)
                    }
                ],
            });
            let name = format!("dec.{l}");
            let s1 = stage(&mut params, &name, 1, 2 * c, c, (hl, wl), rng, layer);
            let s2 = stage(&mut params, &name, 2, c, c, (hl, wl), rng, layer);
            dec_rev.push([s1, s2]);
            layer += 1;
        }
        up.reverse();
        dec_rev.reverse();
        let dec = dec_rev;
        let head_geom =
            Conv::new(spec.channels(0), out_ch, 1, 1, 0, 1, 1, (h, w)).expect("1×1 head");
        let head = push_conv(&mut params, "head", layer, head_geom, false, &ip, rng);

        let plane0 = h * w;
        let pooled = (1..=depth)
            .map(|l| {
                let (hl, wl) = size(l);
                let n = capacity * spec.channels(l - 1) * hl * wl;
                (vec![F::zero(); n], vec![0u32; n])
            })
            .collect();
        let cats = (0..depth)
            .map(|l| {
                let (hl, wl) = size(l);
                vec![F::zero(); capacity * 2 * spec.channels(l) * hl * wl]
            })
            .collect();
        // The largest activation: a level's concatenation, or its block output.
        let biggest = (0..=depth)
            .map(|l| {
                let (hl, wl) = size(l);
                2 * spec.channels(l) * hl * wl
            })
            .chain([in_ch * plane0, out_ch * plane0])
            .max()
            .unwrap_or(1);
        let max_weight = params
            .iter()
            .filter(|p| p.role == Role::Weight)
            .map(|p| p.value.len())
            .max()
            .unwrap_or(1);
        let g_enc = (0..=depth)
            .map(|l| {
                let (hl, wl) = size(l);
                vec![F::zero(); capacity * spec.channels(l) * hl * wl]
            })
            .collect();
        Unet {
            params,
            spec: spec.clone(),
            eps,
            dims: Dims { out_ch, h, w },
            capacity,
            n: 0,
            enc,
            dec,
            up,
            pooled,
            cats,
            head,
            head_cols: vec![F::zero(); head_geom.cols_len::<F>(capacity)],
            logits: vec![F::zero(); capacity * out_ch * plane0],
            d_logits: vec![F::zero(); capacity * out_ch * plane0],
            g_enc,
            scratch: [
                vec![F::zero(); capacity * biggest],
                vec![F::zero(); capacity * biggest],
                vec![F::zero(); capacity * biggest],
            ],
            partial: vec![F::zero(); capacity * max_weight],
        }
    }

    /// Every conv → norm → activation stage in forward order (encoder levels, then decoder
    /// levels from the coarsest), as `(name, output [n, c, plane], c, plane)` of the last
    /// forward pass: what the per-channel observables read.
    pub fn stages(&self) -> Vec<(String, &[F], usize, usize)> {
        fn one<F: Float>(name: String, s: &Stage<F>, n: usize) -> (String, &[F], usize, usize) {
            let (c, plane) = (s.channels(), s.plane());
            (name, &s.h[..n * c * plane], c, plane)
        }
        let n = self.n;
        let mut out = Vec::new();
        for (l, b) in self.enc.iter().enumerate() {
            out.push(one(format!("enc.{l}.act1"), &b[0], n));
            out.push(one(format!("enc.{l}.act2"), &b[1], n));
        }
        for (l, b) in self.dec.iter().enumerate().rev() {
            out.push(one(format!("dec.{l}.act1"), &b[0], n));
            out.push(one(format!("dec.{l}.act2"), &b[1], n));
        }
        out
    }

    /// The activation of every stage.
    pub fn activation(&self) -> Activation {
        self.spec.activation
    }

    /// Logit channels per pixel.
    pub fn out_channels(&self) -> usize {
        self.dims.out_ch
    }
    /// Pixels per image.
    pub fn plane(&self) -> usize {
        self.dims.h * self.dims.w
    }

    /// Forward over `n` images `x: [n, in_ch, h, w]` into [`Self::logits`]
    /// (`[n, out_ch, h, w]`).
    pub fn forward_images(&mut self, x: &[F], n: usize, mode: Mode) {
        assert!(
            n <= self.capacity,
            "unet: {n} images exceed the capacity {}",
            self.capacity
        );
        self.n = n;
        let depth = self.spec.depth;
        let eps = self.eps;
        let params = &mut self.params;
        for l in 0..=depth {
            let (done, rest) = self.enc.split_at_mut(l);
            let [s1, s2] = &mut rest[0];
            let input: &[F] = if l == 0 {
                x
            } else {
                let prev = &done[l - 1][1];
                let (c, g) = (prev.channels(), prev.conv.geom);
                let (buf, arg) = &mut self.pooled[l - 1];
                resample::pool_forward(Pool::Max, 2, n * c, (g.oh, g.ow), &prev.h, buf, arg);
                buf
            };
            s1.forward(params, input, n, mode, eps);
            s2.forward(params, &s1.h, n, mode, eps);
        }
        for l in (0..depth).rev() {
            let below: &[F] = if l + 1 == depth {
                &self.enc[depth][1].h
            } else {
                &self.dec[l + 1][1].h
            };
            let u = &mut self.up[l];
            let g = u.conv.geom;
            let (w, b) = (&params[u.conv.w].value, &params[u.conv.b].value);
            let c_hi = if u.mode == Upsampling::Transposed {
                g.c_out
            } else {
                g.c_in
            };
            match u.mode {
                Upsampling::Transposed => {
                    g.transposed_forward(n, below, w, Some(b), &mut u.out, &mut u.cols)
                }
                Upsampling::Nearest | Upsampling::Bilinear => {
                    let mode = if u.mode == Upsampling::Nearest {
                        Upsample::Nearest
                    } else {
                        Upsample::Bilinear
                    };
                    resample::upsample_forward(
                        mode,
                        2,
                        n * c_hi,
                        (g.h / 2, g.w / 2),
                        below,
                        &mut u.upsampled,
                    );
                    g.forward(n, &u.upsampled, w, Some(b), &mut u.out, &mut u.cols);
                }
            }
            let c = self.spec.channels(l);
            let plane = (self.dims.h >> l) * (self.dims.w >> l);
            resample::concat_channels(
                n,
                plane,
                (&self.enc[l][1].h, c),
                (&u.out, c),
                &mut self.cats[l],
            );
            let [s1, s2] = &mut self.dec[l];
            s1.forward(params, &self.cats[l], n, mode, eps);
            s2.forward(params, &s1.h, n, mode, eps);
        }
        let top: &[F] = if depth == 0 {
            &self.enc[0][1].h
        } else {
            &self.dec[0][1].h
        };
        let hd = self.head;
        hd.geom.forward(
            n,
            top,
            &params[hd.w].value,
            Some(&params[hd.b].value),
            &mut self.logits,
            &mut self.head_cols,
        );
    }

    /// Backward from [`Self::d_logits`] to every parameter gradient (overwritten).
    pub fn backward_images(&mut self, x: &[F]) {
        let (n, depth) = (self.n, self.spec.depth);
        par::for_each_mut(&mut self.params, |p| p.grad.fill(F::zero()));
        let params = &mut self.params;
        let partial = &mut self.partial;
        let [ga, gb, gc] = &mut self.scratch;
        // Head: ga = ∂L/∂h_0.
        let hd = self.head;
        {
            let (mut dw, mut db) = (
                std::mem::take(&mut params[hd.w].grad),
                std::mem::take(&mut params[hd.b].grad),
            );
            let top: &[F] = if depth == 0 {
                &self.enc[0][1].h
            } else {
                &self.dec[0][1].h
            };
            hd.geom.backward(
                n,
                top,
                &self.d_logits,
                &params[hd.w].value,
                &mut self.head_cols,
                &mut dw,
                Some(&mut db),
                Some(&mut ga[..]),
                partial,
            );
            params[hd.w].grad = dw;
            params[hd.b].grad = db;
        }
        for g in self.g_enc.iter_mut() {
            g.fill(F::zero());
        }
        if depth == 0 {
            let len = self.g_enc[0].len().min(ga.len());
            self.g_enc[0][..len].copy_from_slice(&ga[..len]);
        }
        for l in 0..depth {
            let c = self.spec.channels(l);
            let plane = (self.dims.h >> l) * (self.dims.w >> l);
            // dec.l: ga = ∂L/∂dec.l's output → gc = ∂L/∂[enc.l, up.l].
            let [s1, s2] = &mut self.dec[l];
            s2.backward(params, &s1.h, ga, n, Some(&mut gb[..]), partial);
            s1.backward(params, &self.cats[l], gb, n, Some(&mut gc[..]), partial);
            // Split: the skip's share into g_enc[l], the upsampled's into gb.
            resample::split_channels(
                n,
                plane,
                &gc[..n * 2 * c * plane],
                (&mut self.g_enc[l], c),
                (&mut gb[..n * c * plane], c),
            );
            // up.l: gb → ga = ∂L/∂h_{l+1}.
            let u = &mut self.up[l];
            let g = u.conv.geom;
            let (mut dw, mut db) = (
                std::mem::take(&mut params[u.conv.w].grad),
                std::mem::take(&mut params[u.conv.b].grad),
            );
            let below: &[F] = if l + 1 == depth {
                &self.enc[depth][1].h
            } else {
                &self.dec[l + 1][1].h
            };
            match u.mode {
                Upsampling::Transposed => {
                    g.transposed_backward(
                        n,
                        &gb[..],
                        below,
                        &params[u.conv.w].value,
                        &mut u.cols,
                        &mut dw,
                        Some(&mut db),
                        Some(&mut ga[..]),
                        partial,
                    );
                }
                Upsampling::Nearest | Upsampling::Bilinear => {
                    g.backward(
                        n,
                        &u.upsampled,
                        &gb[..],
                        &params[u.conv.w].value,
                        &mut u.cols,
                        &mut dw,
                        Some(&mut db),
                        // gc is spent (split above); it has the concatenation's size, which is
                        // the upsampled input's.
                        Some(&mut gc[..]),
                        partial,
                    );
                    let mode = if u.mode == Upsampling::Nearest {
                        Upsample::Nearest
                    } else {
                        Upsample::Bilinear
                    };
                    resample::upsample_backward(
                        mode,
                        2,
                        n * g.c_in,
                        (g.h / 2, g.w / 2),
                        &gc[..],
                        &mut ga[..],
                    );
                }
            }
            params[u.conv.w].grad = dw;
            params[u.conv.b].grad = db;
            if l + 1 == depth {
                let len = self.g_enc[depth].len().min(
                    n * self.spec.channels(depth) * (self.dims.h >> depth) * (self.dims.w >> depth),
                );
                for (d, &v) in self.g_enc[depth][..len].iter_mut().zip(&ga[..len]) {
                    *d += v;
                }
            }
        }
        for l in (0..=depth).rev() {
            let [s1, s2] = &mut self.enc[l];
            let len = n * s2.channels() * s2.plane();
            ga[..len].copy_from_slice(&self.g_enc[l][..len]);
            s2.backward(params, &s1.h, ga, n, Some(&mut gb[..]), partial);
            if l == 0 {
                s1.backward(params, x, gb, n, None, partial);
            } else {
                s1.backward(
                    params,
                    &self.pooled[l - 1].0,
                    gb,
                    n,
                    Some(&mut gc[..]),
                    partial,
                );
                // Through the pool to ∂L/∂enc.{l−1}, added to its skip share.
                let prev = &self.enc[l - 1][1];
                let (c, pg) = (prev.channels(), prev.conv.geom);
                let plen = n * c * pg.oh * pg.ow;
                resample::pool_backward(
                    Pool::Max,
                    2,
                    n * c,
                    (pg.oh, pg.ow),
                    &gc[..],
                    &self.pooled[l - 1].1,
                    &mut gb[..plen],
                );
                for (d, &v) in self.g_enc[l - 1][..plen].iter_mut().zip(&gb[..plen]) {
                    *d += v;
                }
            }
        }
    }

    /// Elements of parameters and buffers for the memory estimate (an upper bound).
    pub fn elements(
        spec: &UnetSpec,
        (in_ch, h, w): (usize, usize, usize),
        classes: usize,
        capacity: usize,
    ) -> (u64, u64) {
        let cap = capacity as u64;
        let (mut params, mut buffers) = (0u64, 0u64);
        let out = spec.loss.channels(classes) as u64;
        let act = if spec.act.is_plain() { 0 } else { 1 };
        for l in 0..=spec.depth {
            let plane = ((h >> l) * (w >> l)) as u64;
            let c = spec.channels(l) as u64;
            let c_in = if l == 0 {
                in_ch as u64
            } else {
                spec.channels(l - 1) as u64
            };
            // Encoder and decoder blocks (the decoder's at levels below depth).
            let blocks: &[(u64, u64)] = if l < spec.depth {
                &[(c_in, c), (2 * c, c)]
            } else {
                &[(c_in, c)]
            };
            for &(ci, co) in blocks {
                params += 9 * ci * co + co + 9 * co * co + co + 8 * co;
                // Per stage: cols (none where the direct kernels run every pass, so this is an
                // upper bound), z, h, d, fu, x̂.
                buffers += cap * plane * (9 * ci + 9 * co + 2 * (5 + act) * co);
            }
            buffers += cap * plane * c * 4; // pooled, cats, up out, upsampled, g_enc
            params += 4 * c * c * 2 + c;
        }
        let plane0 = (h * w) as u64;
        params += spec.channels(0) as u64 * out + out;
        buffers += cap * plane0 * (2 * out + spec.channels(0) as u64);
        buffers += 3 * cap * plane0 * (2 * spec.channels(0) as u64).max(in_ch as u64).max(out);
        (params, buffers)
    }
}

impl<F: Float> Model<F> for Unet<F> {
    fn params(&self) -> &[Param<F>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<F>] {
        &mut self.params
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    /// `Batch::Rows { x: [n, in_ch·h·w] images, y: [n, h·w] class per pixel }`.
    fn forward(&mut self, batch: &Batch<'_, F>, mode: Mode) {
        let (x, _, rows) = batch.image_rows("unet");
        self.forward_images(x, rows, mode);
    }
    fn loss(&mut self, batch: &Batch<'_, F>, grad: bool) -> LossValue {
        let (_, y, rows) = batch.image_rows("unet");
        let (k, plane) = (self.dims.out_ch, self.plane());
        let dims = (rows, k, plane);
        let z = &self.logits[..rows * k * plane];
        let g = grad.then_some(&mut self.d_logits[..rows * k * plane]);
        seg_loss::loss(self.spec.loss, self.spec.dice_weight, dims, z, y, g)
    }
    fn backward(&mut self, batch: &Batch<'_, F>) {
        self.backward_images(batch.image_rows("unet").0);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    fn segmentation(&self) -> Option<(&[F], usize, usize)> {
        Some((
            &self.logits[..self.n * self.dims.out_ch * self.plane()],
            self.dims.out_ch,
            self.plane(),
        ))
    }
}
