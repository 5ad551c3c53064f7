//! The ideal denoiser `D*(x, σ) = E[y | x̃ = x]` of a Gaussian mixture under the PFGM++ kernel:
//! what a perfectly trained network outputs, in closed form for D = ∞ and as a one-dimensional
//! integral for finite D.
//!
//! Derivation (ours; checked against a Monte Carlo posterior mean in the tests). The kernel is
//! a scale mixture of Gaussians:
//! `(‖δ‖² + r²)^(−(N+D)/2) ∝ ∫ t^((N+D)/2 − 1) e^(−t r²) e^(−t‖δ‖²) dt`, and
//! `e^(−t‖δ‖²) = (π/t)^(N/2) · 𝒩(δ; 0, s²I)` with `s² = 1/(2t)`. So x̃ given y is Gaussian with
//! variance s², where t ~ Γ(shape D/2, rate r²) (mean 1/(2σ²) at r² = Dσ²: s² → σ² as D → ∞).
//! For a mixture component `𝒩(μ_j, τ_j²·UUᵀ)` (variance τ_j² in the subspace spanned by the
//! orthonormal rows of U, none outside it) the joint posterior over (j, t) is
//! `π_j · Γ(t; D/2, r²) · 𝒩(x̃; μ_j, τ_j²UUᵀ + s²I)`, and given (j, t) the posterior mean is
//! `μ_j + τ_j²/(τ_j² + s²) · UUᵀ(x̃ − μ_j)`. The integral over t runs on a uniform grid in
//! u = ln t (trapezoid, which is spectrally accurate for such smooth, fast-decaying integrands),
//! normalized by log-sum-exp with the components.

use crate::engine::Rng;
use crate::spec::denoiser::AugDim;

/// A Gaussian mixture in `n` dimensions, each component isotropic inside one shared subspace.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    pub n: usize,
    /// Component probabilities (sum to 1).
    pub weights: Vec<f64>,
    /// `[components, n]`.
    pub means: Vec<f64>,
    /// Each component's variance τ_j² along the subspace.
    pub var: Vec<f64>,
    /// `[k, n]` orthonormal rows spanning the subspace; empty: the whole space (k = n).
    pub basis: Vec<f64>,
}

/// Points of the t-grid per unit of ln t (at least): fine enough for a likelihood peak of width
/// √(2/N) in ln t up to N of a few thousand.
const GRID_PER_UNIT: f64 = 50.0;
/// Half-width of the grid in ln t around the prior's centre: e^±30 spans s² over 26 decades.
const GRID_HALF_WIDTH: f64 = 30.0;

impl Mixture {
    pub fn components(&self) -> usize {
        self.weights.len()
    }

    /// The subspace's dimension.
    pub fn rank(&self) -> usize {
        if self.basis.is_empty() {
            self.n
        } else {
            self.basis.len() / self.n
        }
    }

    /// One draw `y` into `out` (`[n]`).
    pub fn sample(&self, rng: &mut Rng, out: &mut [f64]) {
        let u = rng.uniform();
        let mut j = self.components() - 1;
        let mut acc = 0.0;
        for (i, w) in self.weights.iter().enumerate() {
            acc += w;
            if u < acc {
                j = i;
                break;
            }
        }
        out.copy_from_slice(&self.means[j * self.n..(j + 1) * self.n]);
        let tau = self.var[j].sqrt();
        if self.basis.is_empty() {
            for o in out.iter_mut() {
                *o += tau * rng.normal();
            }
        } else {
            for row in self.basis.chunks_exact(self.n) {
                let z = tau * rng.normal();
                for (o, b) in out.iter_mut().zip(row) {
                    *o += z * b;
                }
            }
        }
    }

    /// `‖Uᵀ… ‖²`-style projection: `UUᵀv` into `out` (or `v` itself for the whole space), and
    /// its squared norm.
    fn project(&self, v: &[f64], out: &mut [f64]) -> f64 {
        if self.basis.is_empty() {
            out.copy_from_slice(v);
            return v.iter().map(|a| a * a).sum();
        }
        out.fill(0.0);
        let mut p2 = 0.0;
        for row in self.basis.chunks_exact(self.n) {
            let c: f64 = row.iter().zip(v).map(|(a, b)| a * b).sum();
            p2 += c * c;
            for (o, b) in out.iter_mut().zip(row) {
                *o += c * b;
            }
        }
        p2
    }

    /// The grid of noise variances s² and their log prior weights at `sigma` (one point with
    /// weight 0 for D = ∞).
    pub fn grid(aug: AugDim, sigma: f64) -> (Vec<f64>, Vec<f64>) {
        match aug {
            AugDim::Infinite => (vec![sigma * sigma], vec![0.0]),
            AugDim::Finite(d) => {
                let r2 = d * sigma * sigma;
                let shape = d / 2.0;
                // Centre of the prior on u = ln t: ln(shape/rate) = ln(1/(2σ²)).
                let centre = (shape / r2).ln();
                let points = (2.0 * GRID_HALF_WIDTH * GRID_PER_UNIT) as usize + 1;
                let du = 2.0 * GRID_HALF_WIDTH / (points - 1) as f64;
                let mut s2 = Vec::with_capacity(points);
                let mut logp = Vec::with_capacity(points);
                for i in 0..points {
                    let u = centre - GRID_HALF_WIDTH + i as f64 * du;
                    let t = u.exp();
                    s2.push(0.5 / t);
                    // ln of the density of u: shape·(u + ln r²) − r²·t (constants dropped).
                    logp.push(shape * (u + r2.ln()) - r2 * t);
                }
                (s2, logp)
            }
        }
    }

    /// `D*(x, σ)` for the rows of `x` (`[rows, n]`) into `out`, under the kernel with augmented
    /// dimension `aug`.
    pub fn denoise(&self, aug: AugDim, sigma: f64, x: &[f64], out: &mut [f64]) {
        let (s2, logp) = Self::grid(aug, sigma);
        let n = self.n;
        let rows = x.len() / n;
        crate::engine::par::for_row_blocks(rows, crate::engine::par::rows(out, n), |_, r, out| {
            let mut scratch = Scratch::new(self, s2.len());
            for (i, row) in r.enumerate() {
                self.denoise_one(
                    &s2,
                    &logp,
                    &x[row * n..(row + 1) * n],
                    &mut out[i * n..(i + 1) * n],
                    &mut scratch,
                );
            }
        });
    }

    fn denoise_one(&self, s2: &[f64], logp: &[f64], x: &[f64], out: &mut [f64], sc: &mut Scratch) {
        let (n, k, comps) = (self.n, self.rank() as f64, self.components());
        let nf = n as f64;
        // Per component: ‖δ‖², ‖UUᵀδ‖² and UUᵀδ.
        for j in 0..comps {
            let mu = &self.means[j * n..(j + 1) * n];
            for (d, (a, b)) in sc.delta.iter_mut().zip(x.iter().zip(mu)) {
                *d = a - b;
            }
            sc.d2[j] = sc.delta.iter().map(|a| a * a).sum();
            sc.p2[j] = self.project(&sc.delta, &mut sc.proj[j * n..(j + 1) * n]);
        }
        // Log weights over (j, grid point).
        let mut max = f64::NEG_INFINITY;
        for j in 0..comps {
            let tau2 = self.var[j];
            let lw = self.weights[j].ln();
            for (g, (&s, &lp)) in s2.iter().zip(logp).enumerate() {
                let inside = tau2 + s;
                let v = lw + lp
                    - 0.5
                        * (sc.p2[j] / inside
                            + (sc.d2[j] - sc.p2[j]).max(0.0) / s
                            + k * inside.ln()
                            + (nf - k) * s.ln());
                sc.logw[j * s2.len() + g] = v;
                max = max.max(v);
            }
        }
        // Posterior mean: Σ_j W_j μ_j + Σ_j c_j UUᵀδ_j, with c_j = Σ_g w_jg τ_j²/(τ_j² + s_g²).
        let mut total = 0.0;
        out.fill(0.0);
        for j in 0..comps {
            let tau2 = self.var[j];
            let (mut wj, mut cj) = (0.0, 0.0);
            for (g, &s) in s2.iter().enumerate() {
                let w = (sc.logw[j * s2.len() + g] - max).exp();
                wj += w;
                cj += w * tau2 / (tau2 + s);
            }
            total += wj;
            let mu = &self.means[j * n..(j + 1) * n];
            let proj = &sc.proj[j * n..(j + 1) * n];
            for ((o, m), p) in out.iter_mut().zip(mu).zip(proj) {
                *o += wj * m + cj * p;
            }
        }
        for o in out.iter_mut() {
            *o /= total;
        }
    }
}

/// Per-thread buffers of [`Mixture::denoise`].
struct Scratch {
    delta: Vec<f64>,
    proj: Vec<f64>,
    d2: Vec<f64>,
    p2: Vec<f64>,
    logw: Vec<f64>,
}

impl Scratch {
    fn new(m: &Mixture, grid: usize) -> Self {
        let c = m.components();
        Scratch {
            delta: vec![0.0; m.n],
            proj: vec![0.0; c * m.n],
            d2: vec![0.0; c],
            p2: vec![0.0; c],
            logw: vec![0.0; c * grid],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generative::Kernel;

    /// Two components in 3 dimensions, one of them confined to a plane.
    fn small() -> Mixture {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        Mixture {
            n: 3,
            weights: vec![0.3, 0.7],
            means: vec![1.0, 0.0, 0.5, -0.5, 0.8, 0.0],
            var: vec![0.2, 0.05],
            basis: vec![s, s, 0.0, 0.0, 0.0, 1.0],
        }
    }

    /// The ideal denoiser against a Monte Carlo posterior mean, computed a different way: draws
    /// y from the mixture, weighted by the kernel's own density (‖x̃−y‖² + r²)^(−(N+D)/2) (or the
    /// Gaussian for D = ∞) — self-normalized importance sampling, no scale mixture involved.
    #[test]
    fn ideal_denoiser_matches_a_monte_carlo_posterior_mean() {
        let m = small();
        let mut rng = Rng::new(5);
        let draws = 400_000;
        let mut ys = vec![0.0; draws * 3];
        for y in ys.chunks_exact_mut(3) {
            m.sample(&mut rng, y);
        }
        let queries = [[0.9, 0.3, 0.4], [-0.2, 0.6, 0.1], [0.3, 0.3, 0.3]];
        for (aug, sigma) in [
            (AugDim::Finite(1.0), 0.3),
            (AugDim::Finite(4.0), 0.5),
            (AugDim::Finite(64.0), 0.4),
            (AugDim::Infinite, 0.4),
            (AugDim::Infinite, 1.5),
        ] {
            for q in queries {
                let mut ideal = [0.0; 3];
                m.denoise(aug, sigma, &q, &mut ideal);
                let (mut num, mut den) = ([0.0; 3], 0.0);
                for y in ys.chunks_exact(3) {
                    let d2: f64 = y.iter().zip(&q).map(|(a, b)| (a - b) * (a - b)).sum();
                    let w = match aug {
                        AugDim::Finite(d) => {
                            let r2 = d * sigma * sigma;
                            ((d2 + r2) / r2).powf(-(3.0 + d) / 2.0)
                        }
                        AugDim::Infinite => (-d2 / (2.0 * sigma * sigma)).exp(),
                    };
                    den += w;
                    for i in 0..3 {
                        num[i] += w * y[i];
                    }
                }
                for i in 0..3 {
                    let mc = num[i] / den;
                    assert!(
                        (mc - ideal[i]).abs() < 0.01,
                        "D={aug:?} σ={sigma} x={q:?}: ideal {ideal:?}, Monte Carlo {}",
                        mc
                    );
                }
            }
        }
    }

    /// At tiny σ the ideal denoiser returns the point itself (on the data), and at huge σ it
    /// returns the data mean.
    #[test]
    fn ideal_denoiser_limits() {
        let m = small();
        let on = [1.0, 0.0, 0.5];
        let mut out = [0.0; 3];
        m.denoise(AugDim::Finite(32.0), 1e-4, &on, &mut out);
        for i in 0..3 {
            assert!((out[i] - on[i]).abs() < 1e-3, "{out:?}");
        }
        let mean: Vec<f64> = (0..3)
            .map(|i| 0.3 * m.means[i] + 0.7 * m.means[3 + i])
            .collect();
        m.denoise(AugDim::Infinite, 1e4, &on, &mut out);
        for i in 0..3 {
            assert!((out[i] - mean[i]).abs() < 1e-3, "{out:?} vs {mean:?}");
        }
    }

    /// The ideal denoiser is the minimum-error denoiser: on the kernel's own draws its error is
    /// below that of a slightly perturbed version of it.
    #[test]
    fn ideal_denoiser_has_the_least_error() {
        let m = small();
        let k = Kernel {
            n: 3,
            aug: AugDim::Finite(8.0),
            p_mean: 0.0,
            p_std: 1.0,
        };
        let mut rng = Rng::new(9);
        let (sigma, draws) = (0.6, 20_000);
        let (mut y, mut x) = (vec![0.0; 3 * draws], vec![0.0; 3 * draws]);
        for i in 0..draws {
            m.sample(&mut rng, &mut y[3 * i..3 * i + 3]);
            k.perturb(
                sigma,
                &y[3 * i..3 * i + 3],
                &mut x[3 * i..3 * i + 3],
                &mut rng,
            );
        }
        let mut d = vec![0.0; 3 * draws];
        m.denoise(k.aug, sigma, &x, &mut d);
        let err = |shrink: f64| -> f64 {
            d.iter()
                .zip(&x)
                .zip(&y)
                .map(|((a, xx), b)| {
                    let v = a + shrink * (xx - a) - b;
                    v * v
                })
                .sum::<f64>()
        };
        assert!(err(0.0) < err(0.05) && err(0.0) < err(-0.05));
    }
}
