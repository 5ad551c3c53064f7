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

use crate::engine::Float;
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

/// The forward pass over `n` images: `y ← γ·x̂ + β`. In training BatchNorm also updates
/// `running` (mean, variance); in evaluation it normalizes by them.
#[allow(clippy::too_many_arguments)]
pub fn forward<F: Float>(
    norm: ChanNorm,
    mode: Mode,
    eps: f64,
    (n, c, plane): (usize, usize, usize),
    x: &[F],
    (gamma, beta): (&[F], &[F]),
    running: Option<(&mut [F], &mut [F])>,
    y: &mut [F],
    cache: &mut Cache<F>,
) {
    let len = n * c * plane;
    if norm == ChanNorm::None {
        y[..len].copy_from_slice(&x[..len]);
        return;
    }
    if norm == ChanNorm::Batch && mode == Mode::Eval {
        let (rm, rv) = running.expect("batch norm has running statistics");
        for q in 0..n * c {
            let ch = q % c;
            let r = 1.0 / (rv[ch].f64() + eps).sqrt();
            let (scale, shift) = (
                gamma[ch].f64() * r,
                beta[ch].f64() - gamma[ch].f64() * r * rm[ch].f64(),
            );
            let (scale, shift) = (F::of(scale), F::of(shift));
            for (yv, &xv) in y[q * plane..(q + 1) * plane]
                .iter_mut()
                .zip(&x[q * plane..(q + 1) * plane])
            {
                *yv = scale * xv + shift;
            }
        }
        return;
    }
    if norm == ChanNorm::Layer {
        // Per image: statistics over the channels at each pixel, accumulated plane by plane.
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
                let (gm, bt) = (gamma[ch], beta[ch]);
                for p in 0..plane {
                    let xh = F::of((x[o + p].f64() - mean[p]) * r[p]);
                    cache.xhat[o + p] = xh;
                    y[o + p] = gm * xh + bt;
                }
            }
        }
        return;
    }
    let count = set_size(norm, c, plane, n);
    let mut running = running;
    for s in 0..sets(norm, n, c) {
        let sum: f64 = set_planes(norm, n, c, s)
            .map(|q| {
                x[q * plane..(q + 1) * plane]
                    .iter()
                    .map(|v| v.f64())
                    .sum::<f64>()
            })
            .sum();
        let mean = sum / count;
        let sq: f64 = set_planes(norm, n, c, s)
            .map(|q| {
                x[q * plane..(q + 1) * plane]
                    .iter()
                    .map(|v| (v.f64() - mean) * (v.f64() - mean))
                    .sum::<f64>()
            })
            .sum();
        let var = sq / count;
        let r = 1.0 / (var + eps).sqrt();
        cache.rstd[s] = r;
        let (mf, rf) = (F::of(mean), F::of(r));
        for q in set_planes(norm, n, c, s) {
            let ch = q % c;
            let (gm, bt) = (gamma[ch], beta[ch]);
            let o = q * plane;
            for p in o..o + plane {
                let xh = (x[p] - mf) * rf;
                cache.xhat[p] = xh;
                y[p] = gm * xh + bt;
            }
        }
        // BatchNorm's set `s` is channel `s`: its running statistics move toward this batch's.
        if let (ChanNorm::Batch, Some((rm, rv))) = (norm, running.as_mut()) {
            let unbiased = var * count / (count - 1.0).max(1.0);
            rm[s] = F::of((1.0 - MOMENTUM) * rm[s].f64() + MOMENTUM * mean);
            rv[s] = F::of((1.0 - MOMENTUM) * rv[s].f64() + MOMENTUM * unbiased);
        }
    }
}

/// The backward pass: `g` (∂L/∂y in, ∂L/∂x out) and the parameter gradients (overwritten).
pub fn backward<F: Float>(
    norm: ChanNorm,
    (n, c, plane): (usize, usize, usize),
    gamma: &[F],
    g: &mut [F],
    (dgamma, dbeta): (&mut [F], &mut [F]),
    cache: &mut Cache<F>,
) {
    if norm == ChanNorm::None {
        return;
    }
    for ch in 0..c {
        let (mut dg, mut db) = (0.0, 0.0);
        for i in 0..n {
            let q = i * c + ch;
            let (gs, xs) = (
                &g[q * plane..(q + 1) * plane],
                &cache.xhat[q * plane..(q + 1) * plane],
            );
            dg += gs
                .iter()
                .zip(xs)
                .map(|(a, b)| a.f64() * b.f64())
                .sum::<f64>();
            db += gs.iter().map(|a| a.f64()).sum::<f64>();
        }
        dgamma[ch] = F::of(dg);
        dbeta[ch] = F::of(db);
    }
    if norm == ChanNorm::Layer {
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
        return;
    }
    let count = set_size(norm, c, plane, n);
    for s in 0..sets(norm, n, c) {
        let (mut m1, mut m2) = (0.0, 0.0);
        for q in set_planes(norm, n, c, s) {
            let gm = gamma[q % c].f64();
            let (gs, xs) = (
                &g[q * plane..(q + 1) * plane],
                &cache.xhat[q * plane..(q + 1) * plane],
            );
            m1 += gm * gs.iter().map(|a| a.f64()).sum::<f64>();
            m2 += gm
                * gs.iter()
                    .zip(xs)
                    .map(|(a, b)| a.f64() * b.f64())
                    .sum::<f64>();
        }
        let (m1, m2, r) = (m1 / count, m2 / count, cache.rstd[s]);
        for q in set_planes(norm, n, c, s) {
            let gm = F::of(gamma[q % c].f64() * r);
            let (a, b) = (F::of(r * m1), F::of(r * m2));
            for p in q * plane..(q + 1) * plane {
                g[p] = gm * g[p] - a - cache.xhat[p] * b;
            }
        }
    }
}

/// The biased activation `h = a·f(z − b) + c` per channel (`a, b, c: [c]`, or `None` for the
/// plain `f`), writing `d = a·f′(z − b)` and, when given, `fu = f(z − b)` for the backward pass.
#[allow(clippy::too_many_arguments)]
pub fn act_forward<F: Float>(
    act: Activation,
    (n, c, plane): (usize, usize, usize),
    abc: Option<(&[F], &[F], &[F])>,
    z: &[F],
    h: &mut [F],
    d: &mut [F],
    mut fu: Option<&mut [F]>,
) {
    for i in 0..n {
        for ch in 0..c {
            let base = (i * c + ch) * plane;
            let (a, b, cc) = match abc {
                Some((a, b, cc)) => (a[ch], b[ch], cc[ch]),
                None => (F::one(), F::zero(), F::zero()),
            };
            for p in base..base + plane {
                let (v, s) = act.value_and_slope(z[p] - b);
                h[p] = a * v + cc;
                d[p] = a * s;
                if let Some(fu) = fu.as_deref_mut() {
                    fu[p] = v;
                }
            }
        }
    }
}

/// The biased activation's parameter gradients, accumulated per channel (`∂L/∂a += Σ g·f(u)`,
/// `∂L/∂b −= Σ g·d`, `∂L/∂c += Σ g`), then `g ← g·d` (∂L/∂z).
pub fn act_backward<F: Float>(
    (n, c, plane): (usize, usize, usize),
    g: &mut [F],
    d: &[F],
    params: Option<(&[F], &mut [F], &mut [F], &mut [F])>,
) {
    if let Some((fu, ga, gb, gc)) = params {
        for i in 0..n {
            for ch in 0..c {
                let base = (i * c + ch) * plane;
                let (mut sa, mut sb, mut sc) = (F::zero(), F::zero(), F::zero());
                for p in base..base + plane {
                    sa += g[p] * fu[p];
                    sb += g[p] * d[p];
                    sc += g[p];
                }
                ga[ch] += sa;
                gb[ch] -= sb;
                gc[ch] += sc;
            }
        }
    }
    for (gv, &dv) in g.iter_mut().zip(d) {
        *gv *= dv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    fn rand(n: usize, rng: &mut Rng) -> Vec<f64> {
        (0..n).map(|_| rng.normal()).collect()
    }

    /// Every normalization's backward against central differences of `Σ r ⊙ y` (inputs, γ, β).
    #[test]
    fn norm_gradients_match_finite_differences() {
        let mut rng = Rng::new(11);
        let (n, c, plane) = (3, 4, 5);
        for norm in [
            ChanNorm::Batch,
            ChanNorm::Group(2),
            ChanNorm::Group(4),
            ChanNorm::Layer,
        ] {
            let x = rand(n * c * plane, &mut rng);
            let gamma: Vec<f64> = (0..c).map(|_| 1.0 + 0.3 * rng.normal()).collect();
            let beta = rand(c, &mut rng);
            let r = rand(n * c * plane, &mut rng);
            let f = |x: &[f64], gamma: &[f64], beta: &[f64]| {
                let mut y = vec![0.0; x.len()];
                let mut cache = Cache::new(norm, n, c, plane);
                let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                forward(
                    norm,
                    Mode::Train,
                    1e-5,
                    (n, c, plane),
                    x,
                    (gamma, beta),
                    Some((&mut rm, &mut rv)),
                    &mut y,
                    &mut cache,
                );
                y.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
            };
            let mut y = vec![0.0; x.len()];
            let mut cache = Cache::new(norm, n, c, plane);
            let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
            forward(
                norm,
                Mode::Train,
                1e-5,
                (n, c, plane),
                &x,
                (&gamma, &beta),
                Some((&mut rm, &mut rv)),
                &mut y,
                &mut cache,
            );
            let mut g = r.clone();
            let (mut dg, mut db) = (vec![0.0; c], vec![0.0; c]);
            backward(
                norm,
                (n, c, plane),
                &gamma,
                &mut g,
                (&mut dg, &mut db),
                &mut cache,
            );
            let h = 1e-6;
            for i in 0..x.len() {
                let (mut a, mut b) = (x.clone(), x.clone());
                a[i] += h;
                b[i] -= h;
                let fd = (f(&a, &gamma, &beta) - f(&b, &gamma, &beta)) / (2.0 * h);
                assert!(
                    (fd - g[i]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{norm:?} x[{i}]: {} vs {fd}",
                    g[i]
                );
            }
            for ch in 0..c {
                let (mut a, mut b) = (gamma.clone(), gamma.clone());
                a[ch] += h;
                b[ch] -= h;
                let fd = (f(&x, &a, &beta) - f(&x, &b, &beta)) / (2.0 * h);
                assert!(
                    (fd - dg[ch]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{norm:?} γ[{ch}]"
                );
                let (mut a, mut b) = (beta.clone(), beta.clone());
                a[ch] += h;
                b[ch] -= h;
                let fd = (f(&x, &gamma, &a) - f(&x, &gamma, &b)) / (2.0 * h);
                assert!(
                    (fd - db[ch]).abs() < 1e-6 * (1.0 + fd.abs()),
                    "{norm:?} β[{ch}]"
                );
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
                let mut y = vec![0.0; capacity * c * plane];
                let mut cache = Cache::new(norm, capacity, c, plane);
                let (mut rm, mut rv) = (vec![0.0; c], vec![1.0; c]);
                forward(
                    norm,
                    Mode::Train,
                    1e-5,
                    (n, c, plane),
                    &x,
                    (&gamma, &beta),
                    Some((&mut rm, &mut rv)),
                    &mut y,
                    &mut cache,
                );
                (y[..n * c * plane].to_vec(), rm, rv)
            };
            assert_eq!(run(n), run(5), "{norm:?}");
        }
    }

    /// BatchNorm's running statistics after one training pass: 0.9·old + 0.1·(batch mean,
    /// unbiased batch variance), PyTorch's update; evaluation then normalizes by them.
    #[test]
    fn batch_norm_running_statistics_follow_pytorch() {
        let (n, c, plane) = (2, 1, 2);
        let x = [1.0f64, 2.0, 3.0, 6.0];
        let (mut rm, mut rv) = (vec![0.0f64], vec![1.0f64]);
        let mut y = vec![0.0f64; 4];
        let mut cache = Cache::new(ChanNorm::Batch, n, c, plane);
        let (gamma, beta) = ([1.0f64], [0.0f64]);
        forward(
            ChanNorm::Batch,
            Mode::Train,
            1e-5,
            (n, c, plane),
            &x,
            (&gamma, &beta),
            Some((&mut rm, &mut rv)),
            &mut y,
            &mut cache,
        );
        // mean 3, biased var 3.5, unbiased 14/3.
        assert!((rm[0] - 0.3).abs() < 1e-12);
        assert!((rv[0] - (0.9 + 0.1 * 14.0 / 3.0)).abs() < 1e-12);
        forward(
            ChanNorm::Batch,
            Mode::Eval,
            1e-5,
            (n, c, plane),
            &x,
            (&gamma, &beta),
            Some((&mut rm, &mut rv)),
            &mut y,
            &mut cache,
        );
        let want = (6.0 - rm[0]) / (rv[0] + 1e-5).sqrt();
        assert!((y[3] - want).abs() < 1e-12);
    }

    /// The per-channel biased activation's gradients (input, a, b, c) against central
    /// differences.
    #[test]
    fn biased_activation_gradients_match_finite_differences() {
        let mut rng = Rng::new(12);
        let (n, c, plane) = (2, 3, 4);
        for act in [Activation::Tanh, Activation::Gelu, Activation::Silu] {
            let z = rand(n * c * plane, &mut rng);
            let (a, b, cc) = (rand(c, &mut rng), rand(c, &mut rng), rand(c, &mut rng));
            let r = rand(n * c * plane, &mut rng);
            let f = |z: &[f64], a: &[f64], b: &[f64], cc: &[f64]| {
                let (mut h, mut d) = (vec![0.0; z.len()], vec![0.0; z.len()]);
                act_forward(
                    act,
                    (n, c, plane),
                    Some((a, b, cc)),
                    z,
                    &mut h,
                    &mut d,
                    None,
                );
                h.iter().zip(&r).map(|(x, y)| x * y).sum::<f64>()
            };
            let (mut h, mut d, mut fu) =
                (vec![0.0; z.len()], vec![0.0; z.len()], vec![0.0; z.len()]);
            act_forward(
                act,
                (n, c, plane),
                Some((&a, &b, &cc)),
                &z,
                &mut h,
                &mut d,
                Some(&mut fu),
            );
            let mut g = r.clone();
            let (mut ga, mut gb, mut gc) = (vec![0.0; c], vec![0.0; c], vec![0.0; c]);
            act_backward(
                (n, c, plane),
                &mut g,
                &d,
                Some((&fu, &mut ga, &mut gb, &mut gc)),
            );
            let e = 1e-6;
            for i in 0..z.len() {
                let (mut p, mut m) = (z.clone(), z.clone());
                p[i] += e;
                m[i] -= e;
                let fd = (f(&p, &a, &b, &cc) - f(&m, &a, &b, &cc)) / (2.0 * e);
                assert!((fd - g[i]).abs() < 1e-6, "{act:?} z[{i}]");
            }
            for (which, grad) in [(0, &ga), (1, &gb), (2, &gc)] {
                for ch in 0..c {
                    let bump = |s: f64| {
                        let mut v = [a.clone(), b.clone(), cc.clone()];
                        v[which][ch] += s;
                        f(&z, &v[0], &v[1], &v[2])
                    };
                    let fd = (bump(e) - bump(-e)) / (2.0 * e);
                    assert!((fd - grad[ch]).abs() < 1e-6, "{act:?} param {which}[{ch}]");
                }
            }
        }
    }
}
