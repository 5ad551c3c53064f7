//! Changing an image's resolution, forward and backward, over NCHW planes: max and average
//! pooling (`torch.nn.MaxPool2d(k)`, `AvgPool2d(k)`: kernel = stride = k, no padding, the
//! remainder rows and columns dropped as PyTorch does), nearest and bilinear upsampling by an
//! integer factor (`torch.nn.Upsample(scale_factor=s, mode="nearest" | "bilinear")`, bilinear
//! with `align_corners=False`, PyTorch's default), and channel concatenation for skips.
//!
//! Every function works on `planes` independent `[h, w]` planes (`n·c` of them), one pool task
//! per block of planes.

use crate::engine::{par, Float};

/// Pooling kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pool {
    Max,
    Avg,
}

/// `y: [planes, h/k, w/k]` ← pooled `x: [planes, h, w]`; for max pooling `arg` records each
/// output's source index within its plane (PyTorch's first maximum on ties).
pub fn pool_forward<F: Float>(
    kind: Pool,
    k: usize,
    planes: usize,
    (h, w): (usize, usize),
    x: &[F],
    y: &mut [F],
    arg: &mut [u32],
) {
    let (oh, ow) = (h / k, w / k);
    let (ip, op) = (h * w, oh * ow);
    let inv = F::of(1.0 / (k * k) as f64);
    par::for_row_blocks(
        planes,
        (
            par::rows(&mut y[..planes * op], op),
            par::rows(&mut arg[..planes * op], op),
        ),
        |_, r, (y, arg)| {
            for (j, p) in r.enumerate() {
                let xp = &x[p * ip..(p + 1) * ip];
                for oy in 0..oh {
                    for ox in 0..ow {
                        let o = j * op + oy * ow + ox;
                        match kind {
                            Pool::Max => {
                                let (mut best, mut at) = (F::neg_infinity(), 0usize);
                                for a in 0..k {
                                    for b in 0..k {
                                        let i = (oy * k + a) * w + ox * k + b;
                                        // `>` keeps the first maximum; NaN propagates.
                                        if xp[i] > best || xp[i].is_nan() && !best.is_nan() {
                                            best = xp[i];
                                            at = i;
                                        }
                                    }
                                }
                                y[o] = best;
                                arg[o] = at as u32;
                            }
                            Pool::Avg => {
                                let mut s = F::zero();
                                for a in 0..k {
                                    for b in 0..k {
                                        s += xp[(oy * k + a) * w + ox * k + b];
                                    }
                                }
                                y[o] = s * inv;
                            }
                        }
                    }
                }
            }
        },
    );
}

/// `dx: [planes, h, w]` ← the gradient through [`pool_forward`] of `g: [planes, h/k, w/k]`
/// (overwritten).
pub fn pool_backward<F: Float>(
    kind: Pool,
    k: usize,
    planes: usize,
    (h, w): (usize, usize),
    g: &[F],
    arg: &[u32],
    dx: &mut [F],
) {
    let (oh, ow) = (h / k, w / k);
    let (ip, op) = (h * w, oh * ow);
    let inv = F::of(1.0 / (k * k) as f64);
    par::for_row_blocks(planes, par::rows(&mut dx[..planes * ip], ip), |_, r, dx| {
        dx.fill(F::zero());
        for (j, p) in r.enumerate() {
            let d = &mut dx[j * ip..(j + 1) * ip];
            let gp = &g[p * op..(p + 1) * op];
            for oy in 0..oh {
                for ox in 0..ow {
                    let o = oy * ow + ox;
                    match kind {
                        Pool::Max => d[arg[p * op + o] as usize] += gp[o],
                        Pool::Avg => {
                            for a in 0..k {
                                for b in 0..k {
                                    d[(oy * k + a) * w + ox * k + b] += gp[o] * inv;
                                }
                            }
                        }
                    }
                }
            }
        }
    });
}

/// Upsampling modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Upsample {
    Nearest,
    Bilinear,
}

/// Source taps along one side for bilinear upsampling by `s` with `align_corners=False`:
/// output `o` reads `(1 − λ)·x[i0] + λ·x[i1]` with `src = max((o + ½)/s − ½, 0)`, `i0 = ⌊src⌋`,
/// `i1 = min(i0 + 1, n − 1)`, `λ = src − i0` (PyTorch's `upsample_bilinear2d`).
fn taps(n: usize, s: usize) -> Vec<(usize, usize, f64)> {
    (0..n * s)
        .map(|o| {
            let src = ((o as f64 + 0.5) / s as f64 - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n - 1);
            let i1 = (i0 + 1).min(n - 1);
            (i0, i1, src - i0 as f64)
        })
        .collect()
}

/// `y: [planes, h·s, w·s]` ← `x: [planes, h, w]` upsampled by `s`.
pub fn upsample_forward<F: Float>(
    mode: Upsample,
    s: usize,
    planes: usize,
    (h, w): (usize, usize),
    x: &[F],
    y: &mut [F],
) {
    let (ip, op, ow) = (h * w, h * w * s * s, w * s);
    let (ty, tx) = (taps(h, s), taps(w, s));
    par::for_row_blocks(planes, par::rows(&mut y[..planes * op], op), |_, r, y| {
        for (j, p) in r.enumerate() {
            let xp = &x[p * ip..(p + 1) * ip];
            let yp = &mut y[j * op..(j + 1) * op];
            for oy in 0..h * s {
                for ox in 0..ow {
                    yp[oy * ow + ox] = match mode {
                        Upsample::Nearest => xp[(oy / s) * w + ox / s],
                        Upsample::Bilinear => {
                            let ((y0, y1, ly), (x0, x1, lx)) = (ty[oy], tx[ox]);
                            let (ly, lx) = (F::of(ly), F::of(lx));
                            let one = F::one();
                            (one - ly) * ((one - lx) * xp[y0 * w + x0] + lx * xp[y0 * w + x1])
                                + ly * ((one - lx) * xp[y1 * w + x0] + lx * xp[y1 * w + x1])
                        }
                    };
                }
            }
        }
    });
}

/// `dx: [planes, h, w]` ← the gradient through [`upsample_forward`] of `g` (overwritten).
pub fn upsample_backward<F: Float>(
    mode: Upsample,
    s: usize,
    planes: usize,
    (h, w): (usize, usize),
    g: &[F],
    dx: &mut [F],
) {
    let (ip, op, ow) = (h * w, h * w * s * s, w * s);
    let (ty, tx) = (taps(h, s), taps(w, s));
    par::for_row_blocks(planes, par::rows(&mut dx[..planes * ip], ip), |_, r, dx| {
        dx.fill(F::zero());
        for (j, p) in r.enumerate() {
            let gp = &g[p * op..(p + 1) * op];
            let d = &mut dx[j * ip..(j + 1) * ip];
            for oy in 0..h * s {
                for ox in 0..ow {
                    let v = gp[oy * ow + ox];
                    match mode {
                        Upsample::Nearest => d[(oy / s) * w + ox / s] += v,
                        Upsample::Bilinear => {
                            let ((y0, y1, ly), (x0, x1, lx)) = (ty[oy], tx[ox]);
                            let (ly, lx) = (F::of(ly), F::of(lx));
                            let one = F::one();
                            d[y0 * w + x0] += v * (one - ly) * (one - lx);
                            d[y0 * w + x1] += v * (one - ly) * lx;
                            d[y1 * w + x0] += v * ly * (one - lx);
                            d[y1 * w + x1] += v * ly * lx;
                        }
                    }
                }
            }
        }
    });
}

/// `y: [n, ca + cb, plane]` ← `a: [n, ca, plane]` then `b: [n, cb, plane]` along channels
/// (`torch.cat([a, b], dim=1)`).
pub fn concat_channels<F: Float>(
    n: usize,
    plane: usize,
    (a, ca): (&[F], usize),
    (b, cb): (&[F], usize),
    y: &mut [F],
) {
    let (la, lb) = (ca * plane, cb * plane);
    for i in 0..n {
        let yi = &mut y[i * (la + lb)..(i + 1) * (la + lb)];
        yi[..la].copy_from_slice(&a[i * la..(i + 1) * la]);
        yi[la..].copy_from_slice(&b[i * lb..(i + 1) * lb]);
    }
}

/// The split of a concatenation's gradient: `ga += g[:, :ca]`, `gb ← g[:, ca:]`.
pub fn split_channels<F: Float>(
    n: usize,
    plane: usize,
    g: &[F],
    (ga, ca): (&mut [F], usize),
    (gb, cb): (&mut [F], usize),
) {
    let (la, lb) = (ca * plane, cb * plane);
    for i in 0..n {
        let gi = &g[i * (la + lb)..(i + 1) * (la + lb)];
        for (d, &v) in ga[i * la..(i + 1) * la].iter_mut().zip(&gi[..la]) {
            *d += v;
        }
        gb[i * lb..(i + 1) * lb].copy_from_slice(&gi[la..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    fn rand(n: usize, rng: &mut Rng) -> Vec<f64> {
        (0..n).map(|_| rng.normal()).collect()
    }

    /// Central differences of `Σ r ⊙ y` against each backward, odd sizes included (pooling
    /// drops the remainder).
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(7);
        let planes = 3;
        for (h, w) in [(4, 6), (5, 7), (3, 3)] {
            for (k, kind) in [(2, Pool::Max), (2, Pool::Avg), (3, Pool::Avg)] {
                let (oh, ow) = (h / k, w / k);
                if oh == 0 || ow == 0 {
                    continue;
                }
                let x = rand(planes * h * w, &mut rng);
                let r = rand(planes * oh * ow, &mut rng);
                let f = |x: &[f64]| {
                    let mut y = vec![0.0; planes * oh * ow];
                    let mut arg = vec![0u32; planes * oh * ow];
                    pool_forward(kind, k, planes, (h, w), x, &mut y, &mut arg);
                    y.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
                };
                let mut y = vec![0.0; planes * oh * ow];
                let mut arg = vec![0u32; planes * oh * ow];
                pool_forward(kind, k, planes, (h, w), &x, &mut y, &mut arg);
                let mut dx = vec![0.0; planes * h * w];
                pool_backward(kind, k, planes, (h, w), &r, &arg, &mut dx);
                for i in 0..x.len() {
                    let (mut a, mut b) = (x.clone(), x.clone());
                    a[i] += 1e-6;
                    b[i] -= 1e-6;
                    let fd = (f(&a) - f(&b)) / 2e-6;
                    assert!(
                        (fd - dx[i]).abs() < 1e-6,
                        "{kind:?} {k} {h}x{w} [{i}]: {} vs {fd}",
                        dx[i]
                    );
                }
            }
            for (s, mode) in [
                (2, Upsample::Nearest),
                (2, Upsample::Bilinear),
                (3, Upsample::Bilinear),
            ] {
                let x = rand(planes * h * w, &mut rng);
                let r = rand(planes * h * w * s * s, &mut rng);
                let f = |x: &[f64]| {
                    let mut y = vec![0.0; planes * h * w * s * s];
                    upsample_forward(mode, s, planes, (h, w), x, &mut y);
                    y.iter().zip(&r).map(|(a, b)| a * b).sum::<f64>()
                };
                let mut dx = vec![0.0; planes * h * w];
                upsample_backward(mode, s, planes, (h, w), &r, &mut dx);
                for i in 0..x.len() {
                    let (mut a, mut b) = (x.clone(), x.clone());
                    a[i] += 1e-6;
                    b[i] -= 1e-6;
                    let fd = (f(&a) - f(&b)) / 2e-6;
                    assert!(
                        (fd - dx[i]).abs() < 1e-6,
                        "{mode:?} {s} [{i}]: {} vs {fd}",
                        dx[i]
                    );
                }
            }
        }
    }

    /// PyTorch's bilinear ×2 (align_corners=False) of [[1, 2], [3, 4]]: the first row is
    /// 1, 1.25, 1.75, 2 (from `torch.nn.functional.interpolate`, by hand: src = (o + ½)/2 − ½).
    #[test]
    fn bilinear_matches_pytorch_on_a_known_case() {
        let x = [1.0, 2.0, 3.0, 4.0];
        let mut y = vec![0.0; 16];
        upsample_forward(Upsample::Bilinear, 2, 1, (2, 2), &x, &mut y);
        assert_eq!(&y[..4], &[1.0, 1.25, 1.75, 2.0]);
        assert_eq!(&y[4..8], &[1.5, 1.75, 2.25, 2.5]);
        assert_eq!(&y[12..], &[3.0, 3.25, 3.75, 4.0]);
    }

    #[test]
    fn concat_then_split_round_trips() {
        let (a, b) = (vec![1.0, 2.0, 3.0, 4.0], vec![5.0, 6.0]);
        let mut y = vec![0.0; 6];
        // n = 2 images, plane 1: a has 2 channels, b 1.
        concat_channels(2, 1, (&a, 2), (&b, 1), &mut y);
        assert_eq!(y, [1.0, 2.0, 5.0, 3.0, 4.0, 6.0]);
        let (mut ga, mut gb) = (vec![1.0; 4], vec![0.0; 2]);
        split_channels(2, 1, &y, (&mut ga, 2), (&mut gb, 1));
        assert_eq!(ga, [2.0, 3.0, 4.0, 5.0]);
        assert_eq!(gb, [5.0, 6.0]);
    }
}
