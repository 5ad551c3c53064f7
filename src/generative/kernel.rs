//! The PFGM++ perturbation kernel (Xu, Liu, Tian, Tong, Tegmark, Jaakkola 2023, "PFGM++:
//! Unlocking the potential of physics-inspired generative models", §3 and Appendix B):
//!
//! `p_r(x̃ | y) ∝ 1/(‖x̃ − y‖² + r²)^((N+D)/2)`, with `r = σ·√D` (their alignment with EDM's σ).
//!
//! Sampling: `R = r·√(B/(1 − B))` with `B ~ Beta(N/2, D/2)`, and `x̃ = y + R·u` with `u` uniform
//! on the unit sphere of R^N. Writing `B = G₁/(G₁ + G₂)` with `G₁ ~ Γ(N/2)`, `G₂ ~ Γ(D/2)`
//! gives `B/(1 − B) = G₁/G₂` exactly, without the cancellation of `1 − B` near 1.
//! D = ∞ is the Gaussian kernel `x̃ = y + σ·ε`.
//!
//! The training noise level is EDM's: `ln σ ~ N(P_mean, P_std²)` (Karras et al. 2022, §5).

use crate::engine::Rng;
use crate::spec::denoiser::{AugDim, DenoiserSpec};

/// The kernel in `n` data dimensions, with the training distribution of σ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Kernel {
    pub n: usize,
    pub aug: AugDim,
    pub p_mean: f64,
    pub p_std: f64,
}

impl Kernel {
    pub fn new(spec: &DenoiserSpec, n: usize) -> Self {
        Kernel {
            n,
            aug: spec.aug_dim,
            p_mean: spec.p_mean,
            p_std: spec.p_std,
        }
    }

    /// A training noise level: `exp(P_mean + P_std·z)`.
    pub fn draw_sigma(&self, rng: &mut Rng) -> f64 {
        (self.p_mean + self.p_std * rng.normal()).exp()
    }

    /// Writes `x̃ = y + perturbation` at `sigma` into `out` (both `[n]`).
    pub fn perturb(&self, sigma: f64, y: &[f64], out: &mut [f64], rng: &mut Rng) {
        debug_assert_eq!((y.len(), out.len()), (self.n, self.n));
        match self.aug {
            AugDim::Infinite => {
                for (o, &v) in out.iter_mut().zip(y) {
                    *o = v + sigma * rng.normal();
                }
            }
            AugDim::Finite(d) => {
                let r = sigma * d.sqrt();
                let g1 = rng.gamma(self.n as f64 / 2.0);
                let g2 = rng.gamma(d / 2.0);
                let radius = r * (g1 / g2).sqrt();
                // Uniform direction: a standard normal vector, normalized.
                let mut norm2 = 0.0;
                for o in out.iter_mut() {
                    let z = rng.normal();
                    *o = z;
                    norm2 += z * z;
                }
                let s = radius / norm2.sqrt().max(f64::MIN_POSITIVE);
                for (o, &v) in out.iter_mut().zip(y) {
                    *o = v + s * *o;
                }
            }
        }
    }

    /// The prior at `sigma`: the kernel around the origin (`[n]`), what sampling starts from at
    /// σ_max (PFGM++'s prior is the same construction as training).
    pub fn prior(&self, sigma: f64, out: &mut [f64], rng: &mut Rng) {
        let zero = vec![0.0; self.n];
        self.perturb(sigma, &zero, out, rng);
    }

    /// `E‖x̃ − y‖²` at `sigma`: `N·σ²·D/(D − 2)` for D > 2 (∞ for D ≤ 2: the kernel's tail is
    /// that heavy), `N·σ²` for D = ∞. From `E[G₁] = N/2` and `E[1/G₂] = 1/(D/2 − 1)`.
    pub fn mean_sq_distance(&self, sigma: f64) -> f64 {
        let n = self.n as f64;
        match self.aug {
            AugDim::Infinite => n * sigma * sigma,
            AugDim::Finite(d) if d > 2.0 => n * sigma * sigma * d / (d - 2.0),
            AugDim::Finite(_) => f64::INFINITY,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kernel(n: usize, aug: AugDim) -> Kernel {
        Kernel {
            n,
            aug,
            p_mean: -1.2,
            p_std: 1.2,
        }
    }

    /// The sampler against its closed-form second moment, E‖x̃ − y‖² = N·σ²·D/(D − 2), within
    /// 2% on 40,000 draws, for several (N, D) and the Gaussian limit (the check).
    #[test]
    fn perturbation_matches_its_second_moment() {
        let cases = [
            (2, AugDim::Finite(8.0), 0.7),
            (10, AugDim::Finite(16.0), 1.3),
            (100, AugDim::Finite(100.0), 0.2),
            (1000, AugDim::Finite(2048.0), 2.0),
            (50, AugDim::Finite(5.0), 1.0),
            (3, AugDim::Infinite, 0.5),
            (1000, AugDim::Infinite, 3.0),
        ];
        for (n, aug, sigma) in cases {
            let k = kernel(n, aug);
            let mut rng = Rng::new(11);
            let y: Vec<f64> = (0..n).map(|i| (i as f64).sin()).collect();
            let mut x = vec![0.0; n];
            let draws = 40_000;
            let mut sum = 0.0;
            for _ in 0..draws {
                k.perturb(sigma, &y, &mut x, &mut rng);
                sum += x
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| (a - b) * (a - b))
                    .sum::<f64>();
            }
            let mean = sum / draws as f64;
            let want = k.mean_sq_distance(sigma);
            let rel = (mean / want - 1.0).abs();
            assert!(rel < 0.02, "N={n} D={aug:?}: {mean} vs {want} ({rel:.4})");
        }
    }

    /// The finite-D kernel tends to the Gaussian one: at D = 10⁶ the radius' spread matches
    /// σ√N's within a few percent, and the mean direction carries no bias.
    #[test]
    fn large_d_approaches_the_gaussian_kernel() {
        let (n, sigma) = (20, 0.8);
        let mut rng = Rng::new(3);
        let mut x = vec![0.0; n];
        let y = vec![0.0; n];
        let mut radii = [Vec::new(), Vec::new()];
        for (i, aug) in [AugDim::Finite(1e6), AugDim::Infinite]
            .into_iter()
            .enumerate()
        {
            for _ in 0..20_000 {
                kernel(n, aug).perturb(sigma, &y, &mut x, &mut rng);
                radii[i].push(x.iter().map(|v| v * v).sum::<f64>().sqrt());
            }
        }
        let stats = |r: &[f64]| {
            let m = r.iter().sum::<f64>() / r.len() as f64;
            let v = r.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / r.len() as f64;
            (m, v.sqrt())
        };
        let (a, b) = (stats(&radii[0]), stats(&radii[1]));
        assert!((a.0 / b.0 - 1.0).abs() < 0.01, "{a:?} {b:?}");
        assert!((a.1 / b.1 - 1.0).abs() < 0.05, "{a:?} {b:?}");
    }
}
