//! Per-channel operations on NCHW images (`[n, c, plane]`, plane = h·w): the normalizations of
//! convolutional nets and the biased activation `a·f(x − b) + c` with per-channel parameters.
//!
//! Normalizations (affine weight γ and bias β per channel, ε inside the square root, biased
//! variance for normalizing):
//! - [`ChanNorm::Batch`]: `torch.nn.BatchNorm2d` — statistics per channel over `(n, h, w)` in
//!   training (running mean and unbiased running variance updated with momentum 0.1), the
//!   running statistics in evaluation;
//! - [`ChanNorm::Group`]: `torch.nn.GroupNorm(G, C)` (Wu & He 2018) — per image and group of
//!   `C/G` channels, over those channels and the plane (a contiguous block in NCHW);
//! - [`ChanNorm::Layer`]: layer norm over the channels at each pixel (ConvNeXt's
//!   channels-first `LayerNorm`, Liu et al. 2022).
//!
//! All share one backward: within a normalization set `S`, with `x̂ = (x − μ)·r`, `r = 1/√(σ² +
//! ε)` and `ĝ = γ·g`, `∂L/∂x = r·(ĝ − mean_S ĝ − x̂·mean_S(ĝ·x̂))`. Statistics accumulate in
//! f64.

use crate::engine::{par, Float};
use crate::nn::activation::Activation;
use crate::nn::norm::Mode;

/// A normalization over channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChanNorm {
    None,
    Batch,
    /// Groups of channels (`C` must be a multiple).
    Group(usize),
    Layer,
}

/// BatchNorm's running-statistics momentum (PyTorch's default).
pub const MOMENTUM: f64 = 0.1;

/// What the backward pass needs: `x̂` and `r` per normalization set.
#[derive(Clone, Debug, Default)]
pub struct Cache<F> {
    pub xhat: Vec<F>,
    pub rstd: Vec<f64>,
    /// Layer norm's per-pixel sums, `[2, plane]` (preallocated: no allocation per pass).
    scratch: Vec<f64>,
    /// Per-plane partial sums, `[n·c, 5]`.
    partial: Vec<f64>,
    /// Per-plane coefficients of the last pass, `[n·c, 3]`.
    coef: Vec<f64>,
}

impl<F: Float> Cache<F> {
    /// Buffers for up to `n` images of `c` channels of `plane` pixels.
    pub fn new(norm: ChanNorm, n: usize, c: usize, plane: usize) -> Cache<F> {
        let sets = match norm {
            ChanNorm::None => 0,
            ChanNorm::Batch => c,
            ChanNorm::Group(g) => n * g,
            ChanNorm::Layer => n * plane,
        };
        Cache {
            xhat: vec![
                F::zero();
                if norm == ChanNorm::None {
                    0
                } else {
                    n * c * plane
                }
            ],
            rstd: vec![0.0; sets],
            scratch: vec![
                0.0;
                if norm == ChanNorm::Layer {
                    2 * plane
                } else {
                    0
                }
            ],
            partial: vec![0.0; 5 * n * c],
            coef: vec![0.0; 3 * n * c],
        }
    }
}

/// The planes of normalization set `s` of BatchNorm or GroupNorm (plane `q = i·c + ch` holds
/// channel `ch` of image `i`): channel `s` across the `n` images, or image `s / g`'s group
/// `s % g`. Layer norm's sets run across planes at each pixel and are handled on their own.
fn set_planes(norm: ChanNorm, n: usize, c: usize, s: usize) -> impl Iterator<Item = usize> {
    let (start, stride, count) = match norm {
        ChanNorm::Batch => (s, c, n),
        ChanNorm::Group(g) => {
            let cg = c / g;
            ((s / g) * c + (s % g) * cg, 1, cg)
        }
        ChanNorm::None | ChanNorm::Layer => (0, 1, 0),
    };
    (0..count).map(move |j| start + j * stride)
}

/// How many sets [`set_planes`] numbers for `n` images.
fn sets(norm: ChanNorm, n: usize, c: usize) -> usize {
    match norm {
        ChanNorm::Batch => c,
        ChanNorm::Group(g) => n * g,
        ChanNorm::None | ChanNorm::Layer => 0,
    }
}

/// Elements of one normalization set of BatchNorm (every image's plane of a channel) or
/// GroupNorm (one image's planes of a group), for `n` images (the cache may hold more).
fn set_size(norm: ChanNorm, c: usize, plane: usize, n: usize) -> f64 {
    match norm {
        ChanNorm::Batch => (n * plane) as f64,
        ChanNorm::Group(g) => (c / g * plane) as f64,
        ChanNorm::None | ChanNorm::Layer => c as f64,
    }
}

/// Elements past which a pass is split over the pool by planes (as in `activation`: a pool call
/// costs a few microseconds, a pass over 2¹⁵ floats tens).
const PARALLEL_ELEMENTS: usize = 1 << 15;

/// Independent f64 accumulators of the partial sums: four zmm registers' worth, so the adds
/// are not one dependency chain (8 lanes ran at a quarter of the adder's rate).
const LANES: usize = 32;

/// `Σ_i Π_k xs[k][i]`-style sums over [`LANES`] lanes: `f(acc, i)` adds element `i` into the
/// lane accumulators; returns their sums (a fixed order, so the same on any thread).
#[inline(always)]
fn lanes<const S: usize>(len: usize, f: impl Fn(&mut [f64; S], usize)) -> [f64; S] {
    let mut acc = [[0.0f64; S]; LANES];
    let full = len / LANES * LANES;
    for o in (0..full).step_by(LANES) {
        for (l, a) in acc.iter_mut().enumerate() {
            f(a, o + l);
        }
    }
    let mut tail = [0.0f64; S];
    for i in full..len {
        f(&mut tail, i);
    }
    let mut out = [0.0f64; S];
    for (k, o) in out.iter_mut().enumerate() {
        *o = acc.iter().map(|a| a[k]).sum::<f64>() + tail[k];
    }
    out
}

/// Σ x in f64.
fn lane_sum<F: Float>(x: &[F]) -> f64 {
    lanes::<1>(x.len(), |a, i| a[0] += x[i].f64())[0]
}

/// Σ (x − m)² in f64.
fn lane_sq_dev<F: Float>(x: &[F], m: f64) -> f64 {
    lanes::<1>(x.len(), |a, i| {
        let d = x[i].f64() - m;
        a[0] += d * d
    })[0]
}

/// The activation after the norm, fused into the norm's last pass: its per-channel `a, b, c`
/// (`None`: the plain `f`) and the buffers it writes — `h = a·f(zn − b) + c`, `d = a·f′(zn −
/// b)`, and `fu = f(zn − b)` when given (the gradient of a learned `a` needs it).
pub struct ActOut<'a, F> {
    pub act: Activation,
    pub abc: Option<(&'a [F], &'a [F], &'a [F])>,
    pub h: &'a mut [F],
    pub d: &'a mut [F],
    pub fu: Option<&'a mut [F]>,
}

/// How the last pass gets `zn` (the norm's output) for plane `q` from `x`.
#[derive(Clone, Copy)]
enum Zn {
    /// No norm: `zn = x`.
    Raw,
    /// Training BatchNorm and GroupNorm: `x̂ = (x − μ)·r` (kept), `zn = γ·x̂ + β`.
    Stats,
    /// Layer norm: `x̂` already in the cache, `zn = γ·x̂ + β`.
    Xhat,
    /// Evaluation BatchNorm: `zn = scale·x + shift` from the running statistics.
    Running,
}

/// The forward pass over `n` images: the norm (statistics in f64), then the activation, in
/// one final pass per plane. In training BatchNorm also updates `running` (mean, variance); in
/// evaluation it normalizes by them. Planes go over the pool when the pass is large; per-plane
/// partial sums combine in a fixed order, so results are the same for any thread count.
#[allow(clippy::too_many_arguments)]
pub fn forward<F: Float>(
    norm: ChanNorm,
    mode: Mode,
    eps: f64,
    (n, c, plane): (usize, usize, usize),
    x: &[F],
    (gamma, beta): (&[F], &[F]),
    running: Option<(&mut [F], &mut [F])>,
    out: ActOut<'_, F>,
    cache: &mut Cache<F>,
) {
    let (planes, len) = (n * c, n * c * plane);
    let parallel = len >= PARALLEL_ELEMENTS;
    let x = &x[..len];
    // Per plane: (μ, r) of its set for `Stats`, (scale, shift) for `Running`.
    let mut coef_buf = std::mem::take(&mut cache.coef);
    let coef = &mut coef_buf[..2 * planes];
    let zn = match (norm, mode) {
        (ChanNorm::None, _) => Zn::Raw,
        (ChanNorm::Batch, Mode::Eval) => {
            let (rm, rv) = running.expect("batch norm has running statistics");
            for q in 0..planes {
                let ch = q % c;
                let r = 1.0 / (rv[ch].f64() + eps).sqrt();
                coef[2 * q] = gamma[ch].f64() * r;
                coef[2 * q + 1] = beta[ch].f64() - gamma[ch].f64() * r * rm[ch].f64();
            }
            Zn::Running
        }
        (ChanNorm::Layer, _) => {
            layer_stats(eps, (n, c, plane), x, cache);
            Zn::Xhat
        }
        (ChanNorm::Batch | ChanNorm::Group(_), _) => {
            let count = set_size(norm, c, plane, n);
            let part = &mut cache.partial[..planes];
            par::for_items_if(parallel, planes, par::rows(part, 1), |q, p| {
                p[0] = lane_sum(&x[q * plane..(q + 1) * plane]);
            });
            for s in 0..sets(norm, n, c) {
                let mean = set_planes(norm, n, c, s).map(|q| part[q]).sum::<f64>() / count;
                for q in set_planes(norm, n, c, s) {
                    coef[2 * q] = mean;
                }
            }
            let means = &*coef;
            par::for_items_if(parallel, planes, par::rows(part, 1), |q, p| {
                p[0] = lane_sq_dev(&x[q * plane..(q + 1) * plane], means[2 * q]);
            });
            let mut running = running;
            for s in 0..sets(norm, n, c) {
                let mean = coef[2 * set_planes(norm, n, c, s).next().unwrap_or(0)];
                let var = set_planes(norm, n, c, s).map(|q| part[q]).sum::<f64>() / count;
                let r = 1.0 / (var + eps).sqrt();
                cache.rstd[s] = r;
                for q in set_planes(norm, n, c, s) {
                    coef[2 * q + 1] = r;
                }
                // BatchNorm's set `s` is channel `s`: its running statistics move toward this
                // batch's.
                if let (ChanNorm::Batch, Some((rm, rv))) = (norm, running.as_mut()) {
                    let unbiased = var * count / (count - 1.0).max(1.0);
                    rm[s] = F::of((1.0 - MOMENTUM) * rm[s].f64() + MOMENTUM * mean);
                    rv[s] = F::of((1.0 - MOMENTUM) * rv[s].f64() + MOMENTUM * unbiased);
                }
            }
            Zn::Stats
        }
    };
    let coef = &coef_buf[..2 * planes];
    let ActOut { act, abc, h, d, fu } = out;
    let keep_fu = fu.is_some();
    let mut no_fu: [F; 0] = [];
    let fu = fu.map_or(&mut no_fu[..], |f| &mut f[..len]);
    let xhat_len = if matches!(zn, Zn::Stats | Zn::Xhat) {
        len
    } else {
        0
    };
    par::for_items_if(
        parallel,
        planes,
        (
            par::rows(&mut cache.xhat[..xhat_len], plane),
            par::rows(&mut h[..len], plane),
            par::rows(&mut d[..len], plane),
            par::rows(fu, if keep_fu { plane } else { 0 }),
        ),
        |q, (xh, h, d, fu)| {
            let ch = q % c;
            let xs = &x[q * plane..(q + 1) * plane];
            let (g, b) = if norm == ChanNorm::None {
                (F::one(), F::zero())
            } else {
                (gamma[ch], beta[ch])
            };
            let (c0, c1) = (F::of(coef[2 * q]), F::of(coef[2 * q + 1]));
            let (aa, bb, cc) = abc.map_or((F::one(), F::zero(), F::zero()), |(a, b, c)| {
                (a[ch], b[ch], c[ch])
            });
            // In chunks on the stack: `zn` never goes to memory.
            let mut z = [F::zero(); 64];
            for o in (0..plane).step_by(64) {
                let m = 64.min(plane - o);
                let zc = &mut z[..m];
                let xc = &xs[o..o + m];
                match zn {
                    Zn::Raw => zc.copy_from_slice(xc),
                    Zn::Stats => {
                        for ((zv, hv), &xv) in zc.iter_mut().zip(&mut xh[o..o + m]).zip(xc) {
                            let v = (xv - c0) * c1;
                            *hv = v;
                            *zv = g * v + b;
                        }
                    }
                    Zn::Xhat => {
                        for (zv, &hv) in zc.iter_mut().zip(&xh[o..o + m]) {
                            *zv = g * hv + b;
                        }
                    }
                    Zn::Running => {
                        for (zv, &xv) in zc.iter_mut().zip(xc) {
                            *zv = c0 * xv + c1;
                        }
                    }
                }
                let fu = if keep_fu {
                    Some(&mut fu[o..o + m])
                } else {
                    None
                };
                act_chunk(
                    act,
                    (aa, bb, cc),
                    zc,
                    &mut h[o..o + m],
                    &mut d[o..o + m],
                    fu,
                );
            }
        },
    );
    cache.coef = coef_buf;
}

/// Layer norm's statistics over the channels at each pixel, per image: `x̂` and `r` into the
/// cache.
fn layer_stats<F: Float>(
    eps: f64,
    (n, c, plane): (usize, usize, usize),
    x: &[F],
    cache: &mut Cache<F>,
) {
    let (mean, sq) = cache.scratch.split_at_mut(plane);
    for i in 0..n {
        mean.fill(0.0);
        sq.fill(0.0);
        for ch in 0..c {
            for (m, &v) in mean
                .iter_mut()
                .zip(&x[(i * c + ch) * plane..(i * c + ch + 1) * plane])
            {
                *m += v.f64();
            }
        }
        for m in mean.iter_mut() {
            *m /= c as f64;
        }
        for ch in 0..c {
            for ((s2, &m), &v) in sq
                .iter_mut()
                .zip(mean.iter())
                .zip(&x[(i * c + ch) * plane..(i * c + ch + 1) * plane])
            {
                let d = v.f64() - m;
                *s2 += d * d;
            }
        }
        let r = &mut cache.rstd[i * plane..(i + 1) * plane];
        for (rv, &s2) in r.iter_mut().zip(sq.iter()) {
            *rv = 1.0 / (s2 / c as f64 + eps).sqrt();
        }
        for ch in 0..c {
            let o = (i * c + ch) * plane;
            for p in 0..plane {
                cache.xhat[o + p] = F::of((x[o + p].f64() - mean[p]) * r[p]);
            }
        }
    }
}

/// `h = a·f(z − b) + c`, `d = a·f′(z − b)` (and `fu = f(z − b)`) over one chunk, one
/// monomorphized loop per activation.
fn act_chunk<F: Float>(
    act: Activation,
    (a, b, c): (F, F, F),
    z: &[F],
    h: &mut [F],
    d: &mut [F],
    fu: Option<&mut [F]>,
) {
    macro_rules! run {
        ($act:expr) => {{
            for ((hv, dv), &zv) in h.iter_mut().zip(d.iter_mut()).zip(z) {
                let (f, s) = $act.value_and_slope(zv - b);
                *hv = a * f + c;
                *dv = a * s;
            }
            if let Some(fu) = fu {
                for (fv, &zv) in fu.iter_mut().zip(z) {
                    *fv = $act.value_and_slope(zv - b).0;
                }
            }
        }};
    }
    crate::nn::activation::each_activation!(act, run)
}

/// The activation's gradients, accumulated per channel into `ga, gb, gc` (`∂L/∂a += Σ g·f(u)`,
/// `∂L/∂b −= Σ g·d`, `∂L/∂c += Σ g`), given with the forward's `f(u)`.
pub struct ActGrads<'a, F> {
    pub fu: &'a [F],
    pub ga: &'a mut [F],
    pub gb: &'a mut [F],
    pub gc: &'a mut [F],
}

/// The backward pass from `g = ∂L/∂h` (overwritten with ∂L/∂x): the activation (`g·d`, and its
/// parameters' gradients when `act` is given) fused with the norm's first pass, then the norm's
/// input gradient; `dgamma`, `dbeta` overwritten (ignored without a norm). Per-plane partial
/// sums combine in a fixed order: the same for any thread count.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    norm: ChanNorm,
    (n, c, plane): (usize, usize, usize),
    gamma: &[F],
    g: &mut [F],
    d: &[F],
    act: Option<ActGrads<'_, F>>,
    (dgamma, dbeta): (&mut [F], &mut [F]),
    cache: &mut Cache<F>,
) {
    let (planes, len) = (n * c, n * c * plane);
    let parallel = len >= PARALLEL_ELEMENTS;
    let g = &mut g[..len];
    let fu: Option<&[F]> = act.as_ref().map(|a| a.fu).map(|f| &f[..len]);
    let has_norm = norm != ChanNorm::None;
    let xhat = &cache.xhat[..if has_norm { len } else { 0 }];
    // Per plane: Σ g·f(u), Σ g·d, Σ g (before ·d), then Σ g′, Σ g′·x̂ (after).
    const K: usize = 5;
    let part = &mut cache.partial[..K * planes];
    par::for_items_if(
        parallel,
        planes,
        (par::rows(g, plane), par::rows(part, K)),
        |q, (gs, p)| {
            let ds = &d[q * plane..(q + 1) * plane];
            // Equal lengths up front, so the indexed loops below keep no bounds checks.
            let gs = &mut gs[..plane];
            if let Some(fu) = fu {
                let fs = &fu[q * plane..(q + 1) * plane];
                let [sa, sb, sc] = lanes::<3>(plane, |a, i| {
                    a[0] += (gs[i] * fs[i]).f64();
                    a[1] += (gs[i] * ds[i]).f64();
                    a[2] += gs[i].f64();
                });
                (p[0], p[1], p[2]) = (sa, sb, sc);
            }
            for (gv, &dv) in gs.iter_mut().zip(ds) {
                *gv *= dv;
            }
            if has_norm {
                let xs = &xhat[q * plane..(q + 1) * plane];
                let [s1, s2] = lanes::<2>(plane, |a, i| {
                    a[0] += gs[i].f64();
                    a[1] += gs[i].f64() * xs[i].f64();
                });
                (p[3], p[4]) = (s1, s2);
            }
        },
    );
    if let Some(ActGrads { ga, gb, gc, .. }) = act {
        for ch in 0..c {
            let (mut sa, mut sb, mut sc) = (0.0, 0.0, 0.0);
            for i in 0..n {
                let q = i * c + ch;
                sa += part[K * q];
                sb += part[K * q + 1];
                sc += part[K * q + 2];
            }
            ga[ch] += F::of(sa);
            gb[ch] -= F::of(sb);
            gc[ch] += F::of(sc);
        }
    }
    if !has_norm {
        return;
    }
    for ch in 0..c {
        let (mut dg, mut db) = (0.0, 0.0);
        for i in 0..n {
            let q = i * c + ch;
            db += part[K * q + 3];
            dg += part[K * q + 4];
        }
        dgamma[ch] = F::of(dg);
        dbeta[ch] = F::of(db);
    }
    if norm == ChanNorm::Layer {
        layer_input_grad((n, c, plane), gamma, g, cache);
        return;
    }
    // Per plane: γ·r, r·mean_S(γg), r·mean_S(γg·x̂) of its set.
    let count = set_size(norm, c, plane, n);
    let mut coef = std::mem::take(&mut cache.coef);
    for s in 0..sets(norm, n, c) {
        let (mut m1, mut m2) = (0.0, 0.0);
        for q in set_planes(norm, n, c, s) {
            let gm = gamma[q % c].f64();
            m1 += gm * part[K * q + 3];
            m2 += gm * part[K * q + 4];
        }
        let (m1, m2, r) = (m1 / count, m2 / count, cache.rstd[s]);
        for q in set_planes(norm, n, c, s) {
            coef[3 * q] = gamma[q % c].f64() * r;
            coef[3 * q + 1] = r * m1;
            coef[3 * q + 2] = r * m2;
        }
    }
    let xhat = &cache.xhat[..len];
    par::for_items_if(parallel, planes, par::rows(g, plane), |q, gs| {
        let (gm, a, b) = (
            F::of(coef[3 * q]),
            F::of(coef[3 * q + 1]),
            F::of(coef[3 * q + 2]),
        );
        for (gv, &xv) in gs.iter_mut().zip(&xhat[q * plane..(q + 1) * plane]) {
            *gv = gm * *gv - a - xv * b;
        }
    });
    cache.coef = coef;
}

/// Layer norm's input gradient, per image and pixel across the channels.
fn layer_input_grad<F: Float>(
    (n, c, plane): (usize, usize, usize),
    gamma: &[F],
    g: &mut [F],
    cache: &mut Cache<F>,
) {
    let (m1, m2) = cache.scratch.split_at_mut(plane);
    for i in 0..n {
        m1.fill(0.0);
        m2.fill(0.0);
        for ch in 0..c {
            let o = (i * c + ch) * plane;
            let gm = gamma[ch].f64();
            for p in 0..plane {
                let gh = g[o + p].f64() * gm;
                m1[p] += gh;
                m2[p] += gh * cache.xhat[o + p].f64();
            }
        }
        let r = &cache.rstd[i * plane..(i + 1) * plane];
        for ch in 0..c {
            let o = (i * c + ch) * plane;
            let gm = gamma[ch].f64();
            for p in 0..plane {
                let gh = g[o + p].f64() * gm;
                g[o + p] = F::of(
                    r[p] * (gh - m1[p] / c as f64 - cache.xhat[o + p].f64() * m2[p] / c as f64),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ops, Rng};

    fn rand(n: usize, rng: &mut Rng) -> Vec<f64> {
        (0..n).map(|_| rng.normal()).collect()
    }

    /// One forward pass (training) of `norm` then `act` (with per-channel `a, b, c` when
    /// given): `(h, d, f(u), cache, running mean, running variance)`.
    #[allow(clippy::type_complexity)]
    fn fwd<F: Float>(
        norm: ChanNorm,
        mode: Mode,
        (n, c, plane): (usize, usize, usize),
        x: &[F],
        (gamma, beta): (&[F], &[F]),
        act: Activation,
        abc: Option<(&[F], &[F], &[F])>,
        running: (&mut [F], &mut [F]),
        capacity: usize,
    ) -> (Vec<F>, Vec<F>, Vec<F>, Cache<F>) {
        let len = capacity * c * plane;
        let (mut h, mut d, mut fu) = (
            vec![F::zero(); len],
            vec![F::zero(); len],
            vec![F::zero(); len],
        );
        let mut cache = Cache::new(norm, capacity, c, plane);
        forward(
            norm,
            mode,
            1e-5,
            (n, c, plane),
            x,
            (gamma, beta),
            Some(running),
            ActOut {
                act,
                abc,
                h: &mut h,
                d: &mut d,
                fu: abc.map(|_| &mut fu[..]),
            },
            &mut cache,
        );
        (h, d, fu, cache)
    }

    /// The backward pass from `∂L/∂h = r` (with the activation's parameter gradients when
    /// `fu` is given): `(∂L/∂x, dγ, dβ, [da, db, dc])`.
    #[allow(clippy::type_complexity)]
    fn bwd<F: Float>(
        norm: ChanNorm,
        (n, c, plane): (usize, usize, usize),
        gamma: &[F],
        r: &[F],
        d: &[F],
        fu: Option<&[F]>,
        cache: &mut Cache<F>,
    ) -> (Vec<F>, Vec<F>, Vec<F>, [Vec<F>; 3]) {
        let mut g = r.to_vec();
        let (mut dg, mut db) = (vec![F::zero(); c], vec![F::zero(); c]);
        let mut gabc = [vec![F::zero(); c], vec![F::zero(); c], vec![F::zero(); c]];
        let [ga, gb, gc] = &mut gabc;
        backward(
            norm,
            (n, c, plane),
            gamma,
            &mut g,
            d,
            fu.map(|fu| ActGrads { fu, ga, gb, gc }),
            (&mut dg, &mut db),
            cache,
        );
        (g, dg, db, gabc)
    }

    /// Every normalization, followed by the per-channel biased activation (or none), against
    /// central differences of `Σ r ⊙ h`: inputs, γ, β, and a, b, c.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(11);
        let (n, c, plane) = (3, 4, 5);
        for norm in [
            ChanNorm::None,
            ChanNorm::Batch,
            ChanNorm::Group(2),
            ChanNorm::Group(4),
            ChanNorm::Layer,
        ] {
            for (act, biased) in [
                (Activation::Identity, false),
                (Activation::Tanh, true),
                (Activation::Gelu, true),
                (Activation::Silu, false),
            ] {
                let x = rand(n * c * plane, &mut rng);
                let gamma: Vec<f64> = (0..c).map(|_| 1.0 + 0.3 * rng.normal()).collect();
                let beta = rand(c, &mut rng);
                let abc = [rand(c, &mut rng), rand(c, &mut rng), rand(c, &mut rng)];
                let r = rand(n * c * plane, &mut rng);
                let f = |x: &[f64], gamma: &[f64], beta: &[f64], abc: &[Vec<f64>; 3]| {
                    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                    let p = biased.then_some((&abc[0][..], &abc[1][..], &abc[2][..]));
                    let (h, ..) = fwd(
                        norm,
                        Mode::Train,
                        (n, c, plane),
                        x,
                        (gamma, beta),
                        act,
                        p,
                        (&mut rm, &mut rv),
                        n,
                    );
                    h.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
                };
                let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                let p = biased.then_some((&abc[0][..], &abc[1][..], &abc[2][..]));
                let (_, d, fu, mut cache) = fwd(
                    norm,
                    Mode::Train,
                    (n, c, plane),
                    &x,
                    (&gamma, &beta),
                    act,
                    p,
                    (&mut rm, &mut rv),
                    n,
                );
                let (g, dg, db, gabc) = bwd(
                    norm,
                    (n, c, plane),
                    &gamma,
                    &r,
                    &d,
                    biased.then_some(&fu[..]),
                    &mut cache,
                );
                let h = 1e-6;
                let close = |a: f64, fd: f64| (a - fd).abs() < 1e-6 * (1.0 + fd.abs());
                for i in 0..x.len() {
                    let (mut a, mut b) = (x.clone(), x.clone());
                    a[i] += h;
                    b[i] -= h;
                    let fd = (f(&a, &gamma, &beta, &abc) - f(&b, &gamma, &beta, &abc)) / (2.0 * h);
                    assert!(close(g[i], fd), "{norm:?} {act:?} x[{i}]: {} vs {fd}", g[i]);
                }
                for ch in 0..c {
                    if norm != ChanNorm::None {
                        let (mut a, mut b) = (gamma.clone(), gamma.clone());
                        a[ch] += h;
                        b[ch] -= h;
                        let fd = (f(&x, &a, &beta, &abc) - f(&x, &b, &beta, &abc)) / (2.0 * h);
                        assert!(close(dg[ch], fd), "{norm:?} {act:?} γ[{ch}]");
                        let (mut a, mut b) = (beta.clone(), beta.clone());
                        a[ch] += h;
                        b[ch] -= h;
                        let fd = (f(&x, &gamma, &a, &abc) - f(&x, &gamma, &b, &abc)) / (2.0 * h);
                        assert!(close(db[ch], fd), "{norm:?} {act:?} β[{ch}]");
                    }
                    if biased {
                        for which in 0..3 {
                            let bump = |s: f64| {
                                let mut v = abc.clone();
                                v[which][ch] += s;
                                f(&x, &gamma, &beta, &v)
                            };
                            let fd = (bump(h) - bump(-h)) / (2.0 * h);
                            assert!(
                                close(gabc[which][ch], fd),
                                "{norm:?} {act:?} param {which}[{ch}]: {} vs {fd}",
                                gabc[which][ch]
                            );
                        }
                    }
                }
            }
        }
    }

    /// A pass over fewer images than the buffers hold (an evaluation's last chunk) normalizes
    /// exactly as one over buffers of its own size.
    #[test]
    fn a_partial_batch_normalizes_like_a_full_one() {
        let mut rng = Rng::new(13);
        let (n, c, plane) = (2, 4, 3);
        let x: Vec<f64> = (0..n * c * plane).map(|_| rng.normal()).collect();
        let (gamma, beta) = (vec![1.0; c], vec![0.0; c]);
        for norm in [ChanNorm::Batch, ChanNorm::Group(2), ChanNorm::Layer] {
            let run = |capacity: usize| {
                let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                let (h, ..) = fwd(
                    norm,
                    Mode::Train,
                    (n, c, plane),
                    &x,
                    (&gamma, &beta),
                    Activation::Identity,
                    None,
                    (&mut rm, &mut rv),
                    capacity,
                );
                (h[..n * c * plane].to_vec(), rm, rv)
            };
            assert_eq!(run(n), run(5), "{norm:?}");
        }
    }

    /// Forward and backward over the pool (planes split between threads) are bit-identical to
    /// one thread, for passes large enough to be split.
    #[test]
    fn any_thread_count_is_bit_identical() {
        let mut rng = Rng::new(14);
        let (n, c, plane) = (4, 6, 48 * 48);
        let x: Vec<f32> = (0..n * c * plane).map(|_| rng.normal() as f32).collect();
        let r: Vec<f32> = (0..n * c * plane).map(|_| rng.normal() as f32).collect();
        let gamma: Vec<f32> = (0..c).map(|i| 1.0 + 0.1 * i as f32).collect();
        let beta: Vec<f32> = (0..c).map(|i| 0.05 * i as f32).collect();
        let abc = [vec![1.1f32; c], vec![0.2f32; c], vec![-0.1f32; c]];
        for norm in [ChanNorm::Batch, ChanNorm::Group(3), ChanNorm::None] {
            let run = |threads: usize| {
                ops::with_threads(threads, || {
                    let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                    let p = Some((&abc[0][..], &abc[1][..], &abc[2][..]));
                    let (h, d, fu, mut cache) = fwd(
                        norm,
                        Mode::Train,
                        (n, c, plane),
                        &x,
                        (&gamma, &beta),
                        Activation::Silu,
                        p,
                        (&mut rm, &mut rv),
                        n,
                    );
                    let (g, dg, db, gabc) = bwd(
                        norm,
                        (n, c, plane),
                        &gamma,
                        &r,
                        &d,
                        Some(&fu[..]),
                        &mut cache,
                    );
                    let bits = |v: &[f32]| v.iter().map(|a| a.to_bits()).collect::<Vec<u32>>();
                    [
                        bits(&h),
                        bits(&g),
                        bits(&dg),
                        bits(&db),
                        bits(&gabc[0]),
                        bits(&rv),
                    ]
                })
            };
            assert_eq!(run(1), run(2), "{norm:?}");
        }
    }

    /// BatchNorm's running statistics after one training pass: 0.9·old + 0.1·(batch mean,
    /// unbiased batch variance), PyTorch's update; evaluation then normalizes by them.
    #[test]
    fn batch_norm_running_statistics_follow_pytorch() {
        let (n, c, plane) = (2, 1, 2);
        let x = [1.0f64, 2.0, 3.0, 6.0];
        let (mut rm, mut rv) = (vec![0.0f64], vec![1.0f64]);
        let (gamma, beta) = ([1.0f64], [0.0f64]);
        let norm = ChanNorm::Batch;
        let dims = (n, c, plane);
        let id = Activation::Identity;
        fwd(
            norm,
            Mode::Train,
            dims,
            &x,
            (&gamma, &beta),
            id,
            None,
            (&mut rm, &mut rv),
            n,
        );
        // mean 3, biased var 3.5, unbiased 14/3.
        assert!((rm[0] - 0.3).abs() < 1e-12);
        assert!((rv[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-12);
        let (rm0, rv0) = (rm[0], rv[0]);
        let (y, ..) = fwd(
            norm,
            Mode::Eval,
            dims,
            &x,
            (&gamma, &beta),
            id,
            None,
            (&mut rm, &mut rv),
            n,
        );
        let want = (6.0 - rm0) / (rv0 + 1e-5).sqrt();
        assert!((y[3] - want).abs() < 1e-12);
        assert_eq!((rm[0], rv[0]), (rm0, rv0), "evaluation leaves them");
    }
}
