//! Curvature of the training loss: Hessian-vector products and the top Hessian eigenvalue
//! ("sharpness", Cohen et al. 2021, "Gradient descent on neural networks typically occurs at the
//! edge of stability").
//!
//! HVPs are central differences of exact gradients in f64, `Hv ≈ (∇L(θ + εv) − ∇L(θ − εv)) / 2ε`
//! with `‖v‖ = 1` and `ε = 1e-4·max(1, ‖θ‖/√n)`: the truncation error is O(ε²·‖∇³L‖) and the
//! rounding error O(u·‖∇L‖/ε) with u = 2⁻⁵³, so about 1e-8 relative for smooth losses (the tests
//! measure it against an exact Hessian). An f32 model is copied to f64 first. Sharpness is the
//! eigenvalue of largest magnitude, by power iteration (warm-started from the previous vector when
//! the same [`Sharpness`] is reused).

use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::model::{self, Batch, Model, Shape};
use crate::nn::norm::Mode;
use crate::spec::{LossKind, ModelSpec};

/// Gradient of the batch loss at the model's current parameters, flattened over trainable
/// parameters (train mode, as in the training step).
fn gradient(m: &mut dyn Model<f64>, batch: &Batch<'_, f64>, out: &mut Vec<f64>) {
    m.forward(batch, Mode::Train);
    m.loss(batch, true);
    m.backward(batch);
    out.clear();
    for p in m.params().iter().filter(|p| p.trainable) {
        out.extend_from_slice(&p.grad);
    }
}

fn add_scaled(m: &mut dyn Model<f64>, theta: &[f64], v: &[f64], eps: f64) {
    let mut i = 0;
    for p in m.params_mut().iter_mut().filter(|p| p.trainable) {
        for w in p.value.iter_mut() {
            *w = theta[i] + eps * v[i];
            i += 1;
        }
    }
}

/// `H·v` by central differences of the gradient (see the module docs); restores the parameters.
pub fn hvp(m: &mut dyn Model<f64>, batch: &Batch<'_, f64>, v: &[f64]) -> Vec<f64> {
    let theta: Vec<f64> = m
        .params()
        .iter()
        .filter(|p| p.trainable)
        .flat_map(|p| p.value.iter().copied())
        .collect();
    let norm_theta = theta.iter().map(|t| t * t).sum::<f64>().sqrt();
    let eps = 1e-4 * (norm_theta / (theta.len().max(1) as f64).sqrt()).max(1.0);
    let (mut gp, mut gm) = (Vec::new(), Vec::new());
    add_scaled(m, &theta, v, eps);
    gradient(m, batch, &mut gp);
    add_scaled(m, &theta, v, -eps);
    gradient(m, batch, &mut gm);
    add_scaled(m, &theta, v, 0.0);
    gp.iter()
        .zip(&gm)
        .map(|(a, b)| (a - b) / (2.0 * eps))
        .collect()
}

/// Power iteration state kept between measurements (warm start).
#[derive(Clone, Debug, Default)]
pub struct Sharpness {
    v: Vec<f64>,
}

impl Sharpness {
    /// The Hessian eigenvalue of largest magnitude of the loss on `batch`, after `iters` power
    /// iterations, for the model `m` of any family: an f64 twin is built from `spec` (for data
    /// of `shape`, trained with `loss`), given `m`'s parameters, and measured.
    #[allow(clippy::too_many_arguments)]
    pub fn measure<F: Float>(
        &mut self,
        spec: &ModelSpec,
        shape: Shape,
        loss: LossKind,
        m: &dyn Model<F>,
        batch: &Batch<'_, F>,
        iters: usize,
        rng: &mut Rng,
    ) -> Result<f64, Error> {
        let mut twin = model::build::<f64>(spec, shape, loss, batch.len(), &mut Rng::new(0))?;
        for (d, s) in twin.params_mut().iter_mut().zip(m.params()) {
            for (a, b) in d.value.iter_mut().zip(&s.value) {
                *a = b.f64();
            }
        }
        let (x64, y64, s64);
        let batch64 = match *batch {
            Batch::Rows { x, y, rows } => {
                x64 = x.iter().map(|v| v.f64()).collect::<Vec<f64>>();
                y64 = y.iter().map(|v| v.f64()).collect::<Vec<f64>>();
                Batch::Rows {
                    x: &x64,
                    y: &y64,
                    rows,
                }
            }
            Batch::Tokens { x, y, seqs, seq } => Batch::Tokens { x, y, seqs, seq },
            Batch::Denoise {
                x,
                sigma,
                y,
                rows,
                dim,
            } => {
                x64 = x.iter().map(|v| v.f64()).collect::<Vec<f64>>();
                y64 = y.iter().map(|v| v.f64()).collect::<Vec<f64>>();
                s64 = sigma.iter().map(|v| v.f64()).collect::<Vec<f64>>();
                Batch::Denoise {
                    x: &x64,
                    sigma: &s64,
                    y: &y64,
                    rows,
                    dim,
                }
            }
            Batch::Prompts {
                x,
                y,
                seqs,
                points,
                dim,
            } => {
                x64 = x.iter().map(|v| v.f64()).collect::<Vec<f64>>();
                y64 = y.iter().map(|v| v.f64()).collect::<Vec<f64>>();
                Batch::Prompts {
                    x: &x64,
                    y: &y64,
                    seqs,
                    points,
                    dim,
                }
            }
        };
        Ok(self.top_eigenvalue(&mut *twin, &batch64, iters, rng))
    }

    /// Power iteration on [`hvp`].
    pub fn top_eigenvalue(
        &mut self,
        m: &mut dyn Model<f64>,
        batch: &Batch<'_, f64>,
        iters: usize,
        rng: &mut Rng,
    ) -> f64 {
        let n: usize = m
            .params()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.value.len())
            .sum();
        if self.v.len() != n {
            self.v = (0..n).map(|_| rng.normal()).collect();
        }
        normalize(&mut self.v);
        let mut lambda = 0.0;
        for _ in 0..iters.max(1) {
            let hv = hvp(m, batch, &self.v);
            lambda = hv.iter().zip(&self.v).map(|(a, b)| a * b).sum();
            self.v = hv;
            if normalize(&mut self.v) == 0.0 {
                return 0.0;
            }
        }
        lambda
    }
}

fn normalize(v: &mut [f64]) -> f64 {
    let n = v.iter().map(|a| a * a).sum::<f64>().sqrt();
    if n > 0.0 {
        for a in v.iter_mut() {
            *a /= n;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mlp;
    use crate::spec::MlpSpec;

    /// A linear model (depth 0) with MSE: `L = mean((Wx + b − y)²)` over `rows·k` entries, so
    /// `H = (2/(rows·k)) · (X̃ᵀX̃ ⊗ I_k)` with `X̃ = [x, 1]`, exactly, whatever the weights.
    fn setup() -> (Mlp<f64>, Vec<f64>, Vec<f64>, Vec<f64>, usize, usize) {
        let spec = MlpSpec {
            depth: 0,
            ..MlpSpec::default()
        };
        let (rows, d, k) = (9, 4, 2);
        let m = Mlp::<f64>::new(&spec, d, k, rows, &mut Rng::new(1));
        let mut rng = Rng::new(2);
        let x: Vec<f64> = (0..rows * d).map(|_| rng.normal()).collect();
        let y: Vec<f64> = (0..rows * k).map(|_| rng.normal()).collect();
        // Gram matrix of X̃ (d + 1 columns).
        let mut g = vec![0.0; (d + 1) * (d + 1)];
        for r in 0..rows {
            let xt: Vec<f64> = x[r * d..(r + 1) * d]
                .iter()
                .copied()
                .chain(std::iter::once(1.0))
                .collect();
            for i in 0..=d {
                for j in 0..=d {
                    g[i * (d + 1) + j] += xt[i] * xt[j];
                }
            }
        }
        (m, x, y, g, rows, k)
    }

    /// Exact `H·v` for the layout of the params: weight `[k, d]` then bias `[k]`.
    fn exact_hvp(g: &[f64], d: usize, k: usize, scale: f64, v: &[f64]) -> Vec<f64> {
        let mut out = vec![0.0; v.len()];
        let idx = |o: usize, i: usize| if i < d { o * d + i } else { k * d + o };
        for o in 0..k {
            for i in 0..=d {
                out[idx(o, i)] = (0..=d)
                    .map(|j| scale * g[i * (d + 1) + j] * v[idx(o, j)])
                    .sum();
            }
        }
        out
    }

    #[test]
    fn hvp_matches_the_exact_hessian() {
        let (mut m, x, y, g, rows, k) = setup();
        let d = 4;
        let mut rng = Rng::new(3);
        let mut v: Vec<f64> = (0..k * d + k).map(|_| rng.normal()).collect();
        normalize(&mut v);
        let got = hvp(&mut m, &Batch::Rows { x: &x, y: &y, rows }, &v);
        let want = exact_hvp(&g, d, k, 2.0 / (rows * k) as f64, &v);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f64::max);
        let scale = want.iter().map(|a| a.abs()).fold(0.0, f64::max);
        assert!(err < 1e-7 * scale, "max error {err:e} vs scale {scale:e}");
    }

    /// The sharpness of a quadratic loss is its Hessian's top eigenvalue: here
    /// `2/(rows·k)·λ_max(X̃ᵀX̃)`, with λ_max computed independently (Jacobi eigenvalues of the
    /// 5×5 Gram matrix).
    #[test]
    fn sharpness_of_a_quadratic_is_its_top_eigenvalue() {
        let (mut m, x, y, mut g, rows, k) = setup();
        let n = 5;
        // Cyclic Jacobi rotations until the off-diagonal vanishes.
        for _ in 0..100 {
            for p in 0..n {
                for q in p + 1..n {
                    let apq = g[p * n + q];
                    if apq.abs() < 1e-300 {
                        continue;
                    }
                    let theta = (g[q * n + q] - g[p * n + p]) / (2.0 * apq);
                    let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                    let t = if theta == 0.0 { 1.0 } else { t };
                    let (c, s) = (1.0 / (t * t + 1.0).sqrt(), t / (t * t + 1.0).sqrt());
                    for r in 0..n {
                        let (grp, grq) = (g[r * n + p], g[r * n + q]);
                        g[r * n + p] = c * grp - s * grq;
                        g[r * n + q] = s * grp + c * grq;
                    }
                    for r in 0..n {
                        let (gpr, gqr) = (g[p * n + r], g[q * n + r]);
                        g[p * n + r] = c * gpr - s * gqr;
                        g[q * n + r] = s * gpr + c * gqr;
                    }
                }
            }
        }
        let lmax = (0..n).map(|i| g[i * n + i]).fold(f64::MIN, f64::max);
        let want = 2.0 / (rows * k) as f64 * lmax;
        let got = Sharpness::default().top_eigenvalue(
            &mut m,
            &Batch::Rows { x: &x, y: &y, rows },
            300,
            &mut Rng::new(4),
        );
        assert!(
            (got - want).abs() < 1e-6 * want,
            "sharpness {got} vs {want}"
        );
    }

    /// For a transformer (through the same interface), `vᵀ·(H·v)` from [`hvp`] equals the
    /// second difference of the loss along `v`, `(L(θ + hv) − 2L(θ) + L(θ − hv)) / h²`, an
    /// independent estimate from loss values alone (its error is O(h²·‖∇⁴L‖) and rounding
    /// O(u·L/h²): about 1e-6 relative at h = 1e-3).
    #[test]
    fn gpt_hvp_matches_the_second_difference_of_the_loss() {
        use crate::model::Gpt;
        use crate::spec::GptSpec;
        let spec = GptSpec {
            n_layer: 1,
            d_model: 8,
            n_head: 2,
            d_mlp: Some(12),
            ..GptSpec::default()
        };
        let (vocab, seq, seqs) = (7, 5, 3);
        let mut m = Gpt::<f64>::new(&spec, 1e-5, vocab, seq, seqs, &mut Rng::new(1));
        let mut rng = Rng::new(2);
        let x: Vec<usize> = (0..seqs * seq)
            .map(|_| rng.below(vocab as u64) as usize)
            .collect();
        let y: Vec<usize> = (0..seqs * seq)
            .map(|_| rng.below(vocab as u64) as usize)
            .collect();
        let batch = Batch::Tokens {
            x: &x,
            y: &y,
            seqs,
            seq,
        };
        let n: usize = m
            .params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.value.len())
            .sum();
        let mut v: Vec<f64> = (0..n).map(|_| rng.normal()).collect();
        normalize(&mut v);
        let hv = hvp(&mut m, &batch, &v);
        let quotient: f64 = hv.iter().zip(&v).map(|(a, b)| a * b).sum();
        let theta: Vec<f64> = m
            .params
            .iter()
            .filter(|p| p.trainable)
            .flat_map(|p| p.value.iter().copied())
            .collect();
        let mut loss_at = |eps: f64| {
            add_scaled(&mut m, &theta, &v, eps);
            Model::forward(&mut m, &batch, Mode::Train);
            Model::loss(&mut m, &batch, false).loss
        };
        let h = 1e-3;
        let second = (loss_at(h) - 2.0 * loss_at(0.0) + loss_at(-h)) / (h * h);
        assert!(
            (quotient - second).abs() < 1e-4 * quotient.abs().max(1e-3),
            "vᵀHv {quotient} vs second difference {second}"
        );
    }
}
