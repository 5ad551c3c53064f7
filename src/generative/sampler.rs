//! EDM's deterministic samplers (Karras, Aittala, Aila, Laine 2022, "Elucidating the design
//! space of diffusion-based generative models", Algorithm 1 and Eq. 5), which PFGM++ uses as they
//! are with σ = r/√D (Xu et al. 2023, §4): the ODE `dx/dσ = (x − D(x, σ))/σ` from the prior at
//! σ_max down to σ = 0.

use crate::engine::{par, Rng};
use crate::spec::denoiser::{Method, SamplerSpec};

/// EDM's schedule (Eq. 5): `σ_i = (σ_max^(1/ρ) + i/(n−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ` for
/// `i < n`, then `σ_n = 0`: `n + 1` levels.
pub fn schedule(s: &SamplerSpec) -> Vec<f64> {
    let n = s.steps;
    let (a, b) = (s.sigma_max.powf(1.0 / s.rho), s.sigma_min.powf(1.0 / s.rho));
    let mut out: Vec<f64> = (0..n)
        .map(|i| {
            let f = if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            };
            (a + f * (b - a)).powf(s.rho)
        })
        .collect();
    out.push(0.0);
    out
}

/// A denoiser as the sampler calls it: `D(x, σ)` for every row of `x` into the output.
pub type DenoiseFn<'a> = dyn FnMut(&[f64], f64, &mut [f64]) + 'a;

/// Denoiser calls one sampling run makes: Heun's two per step, one on the last (to σ = 0).
pub fn calls(s: &SamplerSpec) -> usize {
    match s.method {
        Method::Euler => s.steps,
        Method::Heun => 2 * s.steps - 1,
    }
}

/// Integrates `x` (`[rows, n]`, drawn from the prior at `sigmas[0]`) down the schedule in place.
/// `denoise(x, σ, out)` writes `D(x, σ)` for every row. With `noise = α > 0`, `x += α·σ_i·ε`
/// before each step (PFGM++'s robustness test, §5.3), ε from `rng`. `keep` gets a copy of the
/// first `keep_rows` rows at every level (`[levels, keep_rows, n]`), for the trajectories.
#[allow(clippy::too_many_arguments)]
pub fn sample(
    s: &SamplerSpec,
    sigmas: &[f64],
    n: usize,
    x: &mut [f64],
    denoise: &mut DenoiseFn<'_>,
    rng: &mut Rng,
    keep_rows: usize,
    keep: &mut Vec<f64>,
) {
    let len = x.len();
    let rows = len / n.max(1);
    let (mut d, mut d2, mut next) = (vec![0.0; len], vec![0.0; len], vec![0.0; len]);
    keep.clear();
    keep.extend_from_slice(&x[..keep_rows * n]);
    for i in 0..sigmas.len() - 1 {
        let (sc, sn) = (sigmas[i], sigmas[i + 1]);
        if s.noise > 0.0 {
            for v in x.iter_mut() {
                *v += s.noise * sc * rng.normal();
            }
        }
        // Euler: d = (x − D(x, σ_i))/σ_i, x' = x + (σ_{i+1} − σ_i)·d. (Elementwise, in row
        // blocks over the pool: the same values whoever computes them.)
        denoise(x, sc, &mut d);
        let h = sn - sc;
        {
            let x: &[f64] = x;
            par::for_row_blocks(
                rows,
                (par::rows(&mut d, n), par::rows(&mut next, n)),
                |_, r, (d, nx)| {
                    let xs = &x[r.start * n..r.end * n];
                    for ((di, nxi), &xi) in d.iter_mut().zip(nx.iter_mut()).zip(xs) {
                        *di = (xi - *di) / sc;
                        *nxi = xi + h * *di;
                    }
                },
            );
        }
        // Heun's correction, except on the last step (σ = 0 has no slope).
        if s.method == Method::Heun && sn > 0.0 {
            denoise(&next, sn, &mut d2);
            let (x, d): (&[f64], &[f64]) = (x, &d);
            par::for_row_blocks(
                rows,
                (par::rows(&mut d2, n), par::rows(&mut next, n)),
                |_, r, (d2, nx)| {
                    let span = r.start * n..r.end * n;
                    for (((d2i, nxi), &xi), &di) in d2
                        .iter_mut()
                        .zip(nx.iter_mut())
                        .zip(&x[span.clone()])
                        .zip(&d[span])
                    {
                        let slope = (*nxi - *d2i) / sn;
                        *nxi = xi + h * 0.5 * (di + slope);
                    }
                },
            );
        }
        x.copy_from_slice(&next);
        keep.extend_from_slice(&x[..keep_rows * n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::denoiser::SamplerSpec;

    #[test]
    fn schedule_runs_from_sigma_max_to_zero() {
        let s = SamplerSpec::default();
        let t = schedule(&s);
        assert_eq!(t.len(), 19);
        assert!((t[0] - 80.0).abs() < 1e-9 && (t[17] - 0.002).abs() < 1e-12 && t[18] == 0.0);
        assert!(t.windows(2).all(|w| w[0] > w[1]));
        assert_eq!(calls(&s), 35);
    }

    /// Gaussian data 𝒩(m, τ²) in one dimension has the ideal denoiser
    /// `D(x, σ) = (τ²x + σ²m)/(τ² + σ²)`, and the ODE from the prior 𝒩(m, τ² + σ_max²) ends on
    /// 𝒩(m, τ²) exactly: `x(σ) = m + (x₀ − m)·√((τ² + σ²)/(τ² + σ_max²))`. Heun is second order:
    /// its error falls ~4× per doubling of the steps, Euler's ~2×.
    #[test]
    fn heun_is_second_order_on_the_gaussian_flow() {
        let (m, tau2) = (0.7, 0.25);
        let x0 = [3.0, -40.0, 11.0];
        let err = |method: Method, steps: usize| -> f64 {
            let s = SamplerSpec {
                method,
                steps,
                ..SamplerSpec::default()
            };
            let sig = schedule(&s);
            let mut x = x0.to_vec();
            let mut keep = Vec::new();
            let mut den = |x: &[f64], sigma: f64, out: &mut [f64]| {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = (tau2 * v + sigma * sigma * m) / (tau2 + sigma * sigma);
                }
            };
            sample(
                &s,
                &sig,
                1,
                &mut x,
                &mut den,
                &mut Rng::new(0),
                0,
                &mut keep,
            );
            let smax2 = s.sigma_max * s.sigma_max;
            x.iter()
                .zip(x0)
                .map(|(&got, x0)| {
                    let want = m + (x0 - m) * (tau2 / (tau2 + smax2)).sqrt();
                    (got - want).abs()
                })
                .fold(0.0, f64::max)
        };
        let (h1, h2) = (err(Method::Heun, 32), err(Method::Heun, 64));
        let (e1, e2) = (err(Method::Euler, 32), err(Method::Euler, 64));
        assert!(h1 / h2 > 3.0, "Heun {h1} → {h2}");
        assert!(e1 / e2 > 1.6 && e1 / e2 < 2.5, "Euler {e1} → {e2}");
        assert!(h2 < e2 / 10.0, "Heun {h2} vs Euler {e2}");
    }
}
