//! Sample quality: two samples `a` (generated) and `b` (data) as rows, compared by
//! - MMD² (Gretton et al. 2012) with a sum of Gaussian kernels `exp(−‖u−v‖²/(β·m))`, one per
//!   bandwidth β, averaged over the β: the biased (V-statistic, diagonal kept) and unbiased
//!   (U-statistic) estimates. `m` is the mean squared distance between distinct points of the
//!   *data* sample `b`, not of the pooled sample: pooled, a few far-off generated points inflate
//!   every bandwidth until all points look alike, and a diverging model scored MMD² ≈ 10⁻⁵
//!   (measured); from the data alone the kernel is the same for every model compared with the
//!   same data, so scores compare across runs. Prior draws far from the data score ≈ 1;
//! - the sliced Wasserstein-2 distance over random unit directions (Rabin et al. 2011):
//!   `√(mean over directions of the mean squared gap between sorted projections)`;
//! - the energy distance (Székely & Rizzo 2013) `2E‖A−B‖ − E‖A−A′‖ − E‖B−B′‖` (U-statistics
//!   within each sample).

use crate::engine::ops::{self, Op};
use crate::engine::Rng;

/// The metrics of one comparison.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Quality {
    pub mmd: f64,
    pub mmd_unbiased: f64,
    pub swd: f64,
    pub energy: f64,
}

/// Squared distances `[na, nb]` between the rows of `a` and `b` (`n` columns): `‖u‖² + ‖v‖² −
/// 2u·v` through one GEMM, clamped at 0 against rounding.
fn sq_distances(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
    let (na, nb) = (a.len() / n, b.len() / n);
    let mut g = vec![0.0; na * nb];
    ops::gemm(Op::N, Op::T, na, nb, n, 1.0, a, b, 0.0, &mut g);
    let norms = |x: &[f64]| -> Vec<f64> {
        x.chunks_exact(n)
            .map(|r| r.iter().map(|v| v * v).sum())
            .collect()
    };
    let (sa, sb) = (norms(a), norms(b));
    for i in 0..na {
        for j in 0..nb {
            let v = &mut g[i * nb + j];
            *v = (sa[i] + sb[j] - 2.0 * *v).max(0.0);
        }
    }
    g
}

/// Compares `a` and `b` (rows of `n` values): MMD at `bandwidths`, SWD over `slices` directions
/// drawn from `rng` (the same directions for every call with the same stream), energy distance.
/// The SWD uses the first `min(na, nb)` rows of each.
pub fn compare(
    a: &[f64],
    b: &[f64],
    n: usize,
    bandwidths: &[f64],
    slices: usize,
    rng: &mut Rng,
) -> Quality {
    let (na, nb) = (a.len() / n, b.len() / n);
    let (aa, bb, ab) = (
        sq_distances(a, a, n),
        sq_distances(b, b, n),
        sq_distances(a, b, n),
    );
    // The data's mean squared distance (over ordered pairs of distinct points).
    let fb_ = nb as f64;
    let m = (bb.iter().sum::<f64>() / (fb_ * (fb_ - 1.0)).max(1.0)).max(f64::MIN_POSITIVE);
    let kernel = |d2: f64| -> f64 {
        bandwidths
            .iter()
            .map(|beta| (-d2 / (beta * m)).exp())
            .sum::<f64>()
            / bandwidths.len() as f64
    };
    // Within-sample sums with and without the diagonal.
    let within = |g: &[f64], k: usize, f: &dyn Fn(f64) -> f64| -> (f64, f64) {
        let mut all = 0.0;
        let mut diag = 0.0;
        for i in 0..k {
            for j in 0..k {
                let v = f(g[i * k + j]);
                all += v;
                if i == j {
                    diag += v;
                }
            }
        }
        (all, all - diag)
    };
    let (kaa, kaa_off) = within(&aa, na, &kernel);
    let (kbb, kbb_off) = within(&bb, nb, &kernel);
    let kab: f64 = ab.iter().map(|&d| kernel(d)).sum();
    let (fa, fb) = (na as f64, nb as f64);
    let mmd = kaa / (fa * fa) + kbb / (fb * fb) - 2.0 * kab / (fa * fb);
    let mmd_unbiased =
        kaa_off / (fa * (fa - 1.0)) + kbb_off / (fb * (fb - 1.0)) - 2.0 * kab / (fa * fb);
    let sqrt = |d: f64| d.sqrt();
    let (_, eaa) = within(&aa, na, &sqrt);
    let (_, ebb) = within(&bb, nb, &sqrt);
    let eab: f64 = ab.iter().map(|d| d.sqrt()).sum();
    let energy = 2.0 * eab / (fa * fb) - eaa / (fa * (fa - 1.0)) - ebb / (fb * (fb - 1.0));
    Quality {
        mmd,
        mmd_unbiased,
        swd: sliced_wasserstein(a, b, n, slices, rng),
        energy,
    }
}

/// Sliced Wasserstein-2 between the first `min(na, nb)` rows of `a` and `b`.
pub fn sliced_wasserstein(a: &[f64], b: &[f64], n: usize, slices: usize, rng: &mut Rng) -> f64 {
    let k = (a.len() / n).min(b.len() / n);
    let (mut pa, mut pb) = (vec![0.0; k], vec![0.0; k]);
    let mut dir = vec![0.0; n];
    let mut total = 0.0;
    for _ in 0..slices {
        let mut norm2 = 0.0;
        for d in dir.iter_mut() {
            *d = rng.normal();
            norm2 += *d * *d;
        }
        let inv = 1.0 / norm2.sqrt().max(f64::MIN_POSITIVE);
        for (p, rows) in [(&mut pa, a), (&mut pb, b)] {
            for (v, r) in p.iter_mut().zip(rows.chunks_exact(n)) {
                *v = inv * r.iter().zip(&dir).map(|(x, d)| x * d).sum::<f64>();
            }
            p.sort_by(f64::total_cmp);
        }
        total += pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            / k as f64;
    }
    (total / slices as f64).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(rng: &mut Rng, rows: usize, n: usize, shift: f64, scale: f64) -> Vec<f64> {
        (0..rows * n)
            .map(|_| shift + scale * rng.normal())
            .collect()
    }

    /// Same distribution: unbiased MMD² and energy near 0 (within a few standard errors) and the
    /// biased MMD² positive; a shifted one scores clearly higher on all four.
    #[test]
    fn same_and_shifted_distributions() {
        let mut rng = Rng::new(1);
        let n = 4;
        let a = gaussian(&mut rng, 600, n, 0.0, 1.0);
        let b = gaussian(&mut rng, 600, n, 0.0, 1.0);
        let c = gaussian(&mut rng, 600, n, 0.5, 1.0);
        let bw = [0.1, 0.5, 1.0, 2.0];
        let same = compare(&a, &b, n, &bw, 64, &mut Rng::new(2));
        let shifted = compare(&a, &c, n, &bw, 64, &mut Rng::new(2));
        assert!(same.mmd_unbiased.abs() < 2e-3, "{same:?}");
        assert!(same.mmd > same.mmd_unbiased, "{same:?}");
        assert!(same.energy.abs() < 0.03, "{same:?}");
        assert!(shifted.mmd_unbiased > 10.0 * same.mmd_unbiased.abs().max(1e-4));
        assert!(shifted.energy > 0.2, "{shifted:?}");
        assert!(shifted.swd > 2.0 * same.swd, "{same:?} {shifted:?}");
    }

    /// Closed forms: the SWD of two point sets shifted by a vector v is |v|/√n on average over
    /// directions (E(v·θ)² = |v|²/n), and the energy distance of two points at distance d is
    /// 2d (the within-sample terms of single points vanish; here two copies each).
    #[test]
    fn closed_forms() {
        let n = 3;
        let mut rng = Rng::new(4);
        let a = gaussian(&mut rng, 500, n, 0.0, 1.0);
        let v = [2.0, -1.0, 2.0];
        let b: Vec<f64> = a
            .chunks_exact(n)
            .flat_map(|r| [r[0] + v[0], r[1] + v[1], r[2] + v[2]])
            .collect();
        let swd = sliced_wasserstein(&a, &b, n, 4000, &mut Rng::new(5));
        let want = (9.0f64 / 3.0).sqrt();
        assert!((swd / want - 1.0).abs() < 0.03, "{swd} vs {want}");
        let p = [0.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let q = [3.0, 4.0, 0.0, 3.0, 4.0, 0.0];
        let e = compare(&p, &q, n, &[1.0], 1, &mut Rng::new(0)).energy;
        assert!((e - 10.0).abs() < 1e-9, "{e}");
    }
}
