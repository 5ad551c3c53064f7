//! In-context regression: the function classes of Garg, Tsipras, Liang & Valiant (2022, "What
//! can transformers learn in-context?") and the algorithms a transformer is compared with on
//! the same prompts — the theory beside the measurement.
//!
//! A prompt is `(x₁, f(x₁), …, x_k, f(x_k), x_query)` with `x ~ N(0, I_d)` and `f` drawn fresh
//! per prompt from its class. Every baseline predicts `f(x_query)` from the `k` in-context
//! examples; the error is the squared error divided by `d` (the paper's normalization, so that
//! predicting 0 on linear functions scores 1). For noiseless linear functions two curves are
//! known exactly and the tests hold the baselines to them: minimum-norm least squares has
//! error `1 − k/d` for `k < d` and 0 for `k ≥ d`; averaging `ŵ = (1/k) Σ y_i x_i` has
//! `(d + 1)/k`, since `E‖(x xᵀ − I) w‖² = (d + 1)‖w‖²` for Gaussian `x`.

use crate::engine::Rng;

/// Where a prompt's functions come from (Garg et al. 2022, section 3 and appendix A).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum FunctionClass {
    /// `f(x) = wᵀx`, `w ~ N(0, I_d)`.
    Linear,
    /// `w` with `s` nonzero coordinates (chosen uniformly), each `N(0, 1)`.
    SparseLinear { s: usize },
    /// Linear, with `N(0, σ²)` noise on each in-context `y` (the query's target stays clean).
    NoisyLinear { sigma: f64 },
    /// `f(x) = Σ_j a_j relu(w_jᵀ x)`, `w_j ~ N(0, I_d)`, `a_j ~ N(0, 2/hidden)` (He scaling, so
    /// `E f(x)²` is of order `d`, as for the linear class).
    Relu2 { hidden: usize },
    /// A full binary tree of this depth: each internal node tests `x_i > 0` for a coordinate
    /// drawn uniformly, each leaf holds a value `N(0, 1)`.
    Tree { depth: usize },
}

/// One function drawn from a class.
#[derive(Clone, Debug)]
pub enum Function {
    Linear(Vec<f64>),
    Relu2 {
        w: Vec<Vec<f64>>,
        a: Vec<f64>,
    },
    /// Internal nodes' coordinates (heap order), then leaf values.
    Tree {
        coords: Vec<usize>,
        leaves: Vec<f64>,
    },
}

impl FunctionClass {
    pub fn sample(self, d: usize, rng: &mut Rng) -> Function {
        match self {
            FunctionClass::Linear | FunctionClass::NoisyLinear { .. } => {
                Function::Linear((0..d).map(|_| rng.normal()).collect())
            }
            FunctionClass::SparseLinear { s } => {
                let mut w = vec![0.0; d];
                for &i in rng.permutation(d).iter().take(s.min(d)) {
                    w[i] = rng.normal();
                }
                Function::Linear(w)
            }
            FunctionClass::Relu2 { hidden } => {
                let scale = (2.0 / hidden as f64).sqrt();
                Function::Relu2 {
                    w: (0..hidden)
                        .map(|_| (0..d).map(|_| rng.normal()).collect())
                        .collect(),
                    a: (0..hidden).map(|_| scale * rng.normal()).collect(),
                }
            }
            FunctionClass::Tree { depth } => Function::Tree {
                coords: (0..(1usize << depth) - 1)
                    .map(|_| rng.below(d as u64) as usize)
                    .collect(),
                leaves: (0..1usize << depth).map(|_| rng.normal()).collect(),
            },
        }
    }

    /// `E f(x)²` over the class, the error of predicting 0, which normalizes squared errors so
    /// that predicting 0 scores 1 in every class: `d` for (noisy) linear functions and for the
    /// ReLU networks (He-scaled, see [`FunctionClass::Relu2`]), `s` for `s`-sparse ones, 1 for
    /// trees (leaves `N(0, 1)`) — Garg et al.'s normalizations (their code divides by the
    /// dimension, the sparsity, and nothing for trees).
    pub fn error_scale(self, d: usize) -> f64 {
        match self {
            FunctionClass::Linear
            | FunctionClass::NoisyLinear { .. }
            | FunctionClass::Relu2 { .. } => d as f64,
            FunctionClass::SparseLinear { s } => s.min(d) as f64,
            FunctionClass::Tree { .. } => 1.0,
        }
    }

    /// The standard deviation of the noise on in-context targets.
    pub fn noise(self) -> f64 {
        match self {
            FunctionClass::NoisyLinear { sigma } => sigma,
            _ => 0.0,
        }
    }
}

impl Function {
    pub fn eval(&self, x: &[f64]) -> f64 {
        match self {
            Function::Linear(w) => dot(w, x),
            Function::Relu2 { w, a } => w
                .iter()
                .zip(a)
                .map(|(wj, aj)| aj * dot(wj, x).max(0.0))
                .sum(),
            Function::Tree { coords, leaves } => {
                let mut node = 0;
                while node < coords.len() {
                    node = 2 * node + if x[coords[node]] > 0.0 { 2 } else { 1 };
                }
                leaves[node - coords.len()]
            }
        }
    }
}

/// A prompt: `k` in-context examples and the query, with its clean target.
#[derive(Clone, Debug)]
pub struct Prompt {
    pub xs: Vec<Vec<f64>>,
    pub ys: Vec<f64>,
    pub query: Vec<f64>,
    pub target: f64,
}

/// How the in-context examples are chosen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Exemplars {
    /// `k` fresh draws, as in Garg et al.
    Random,
    /// The `k` nearest neighbours of the query (Euclidean, in input space) among `pool` draws
    /// of the same function: retrieval-chosen exemplars.
    Nearest { pool: usize },
}

/// Draws a prompt with `k` examples of a fresh function of `class` in dimension `d`.
pub fn prompt(class: FunctionClass, d: usize, k: usize, how: Exemplars, rng: &mut Rng) -> Prompt {
    let f = class.sample(d, rng);
    let draw = |rng: &mut Rng| -> Vec<f64> { (0..d).map(|_| rng.normal()).collect() };
    let query = draw(rng);
    let mut xs: Vec<Vec<f64>> = match how {
        Exemplars::Random => (0..k).map(|_| draw(rng)).collect(),
        Exemplars::Nearest { pool } => {
            let mut cands: Vec<Vec<f64>> = (0..pool.max(k)).map(|_| draw(rng)).collect();
            cands.sort_by(|a, b| dist2(a, &query).total_cmp(&dist2(b, &query)));
            cands.truncate(k);
            cands
        }
    };
    // Order within the prompt carries no information; the nearest come last, as in retrieval
    // pipelines that put the best exemplar next to the query.
    if matches!(how, Exemplars::Nearest { .. }) {
        xs.reverse();
    }
    let sigma = class.noise();
    let ys = xs
        .iter()
        .map(|x| f.eval(x) + sigma * rng.normal())
        .collect();
    let target = f.eval(&query);
    Prompt {
        xs,
        ys,
        query,
        target,
    }
}

/// The algorithms a transformer's in-context predictions are compared with.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Baseline {
    /// Minimum-norm least squares (the Bayes-optimal predictor for noiseless linear functions).
    LeastSquares,
    /// Ridge regression `(XᵀX + λI)⁻¹Xᵀy`.
    Ridge { lambda: f64 },
    /// Ridge with `λ = σ²`: the posterior mean under the prior `w ~ N(0, I)` and noise
    /// `N(0, σ²)`, so Bayes-optimal for the noisy linear class.
    BayesRidge { sigma: f64 },
    /// `ŵ = (1/k) Σ y_i x_i`.
    Averaging,
    /// The mean target of the `n` context examples nearest the query.
    NearestNeighbours { n: usize },
    /// LASSO, `min ½‖y − Xw‖² / k + α‖w‖₁`, by cyclic coordinate descent.
    Lasso { alpha: f64 },
    /// A two-layer ReLU network of `hidden` units fitted to the examples by `steps` full-batch
    /// Adam steps at learning rate `lr` ([`two_layer_net`]): Garg et al.'s neural-network
    /// baseline for the ReLU class (our settings; theirs are not all stated).
    TwoLayerNet {
        hidden: usize,
        steps: usize,
        lr: f64,
    },
}

impl Baseline {
    pub fn name(self) -> String {
        match self {
            Baseline::LeastSquares => "least_squares".into(),
            Baseline::Ridge { lambda } => format!("ridge(lambda={lambda})"),
            Baseline::BayesRidge { sigma } => format!("bayes_ridge(sigma={sigma})"),
            Baseline::Averaging => "averaging".into(),
            Baseline::NearestNeighbours { n } => format!("nearest_neighbours({n})"),
            Baseline::Lasso { alpha } => format!("lasso(alpha={alpha})"),
            Baseline::TwoLayerNet { hidden, steps, lr } => {
                format!("two_layer_net(hidden={hidden},steps={steps},lr={lr})")
            }
        }
    }

    /// The prediction for the prompt's query from its `k` examples (0 with no examples).
    pub fn predict(self, p: &Prompt) -> f64 {
        let k = p.xs.len();
        if k == 0 {
            return 0.0;
        }
        match self {
            Baseline::LeastSquares => dot(&min_norm_least_squares(&p.xs, &p.ys), &p.query),
            Baseline::Ridge { lambda } => dot(&ridge(&p.xs, &p.ys, lambda), &p.query),
            Baseline::BayesRidge { sigma } => dot(&ridge(&p.xs, &p.ys, sigma * sigma), &p.query),
            Baseline::Averaging => {
                let d = p.query.len();
                let mut w = vec![0.0; d];
                for (x, y) in p.xs.iter().zip(&p.ys) {
                    for (wi, xi) in w.iter_mut().zip(x) {
                        *wi += y * xi / k as f64;
                    }
                }
                dot(&w, &p.query)
            }
            Baseline::NearestNeighbours { n } => {
                let mut idx: Vec<usize> = (0..k).collect();
                idx.sort_by(|&a, &b| {
                    dist2(&p.xs[a], &p.query).total_cmp(&dist2(&p.xs[b], &p.query))
                });
                let n = n.clamp(1, k);
                idx[..n].iter().map(|&i| p.ys[i]).sum::<f64>() / n as f64
            }
            Baseline::Lasso { alpha } => dot(&lasso(&p.xs, &p.ys, alpha, 1e-10, 10_000), &p.query),
            Baseline::TwoLayerNet { hidden, steps, lr } => {
                two_layer_net(&p.xs, &p.ys, hidden, steps, lr).eval(&p.query)
            }
        }
    }
}

/// Normalized squared error (÷ [`FunctionClass::error_scale`]) of a baseline against the number
/// of in-context examples:
/// `(k, mean, 95% bootstrap interval over prompts)`.
#[derive(Clone, Debug, PartialEq)]
pub struct CurvePoint {
    pub k: usize,
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
}

/// The error curve of each baseline for `k = 0 … k_max`, every baseline on the same
/// `n_prompts` prompts for each `k` (drawn from `seed`), with percentile-bootstrap 95%
/// intervals (`boot` resamples of the prompts).
pub fn curves(
    class: FunctionClass,
    d: usize,
    k_max: usize,
    n_prompts: usize,
    how: Exemplars,
    baselines: &[Baseline],
    seed: u64,
) -> Vec<Vec<CurvePoint>> {
    let mut out = vec![Vec::with_capacity(k_max + 1); baselines.len()];
    for k in 0..=k_max {
        let mut rng = Rng::stream(seed, &format!("icl-prompts-k{k}"));
        let prompts: Vec<Prompt> = (0..n_prompts)
            .map(|_| prompt(class, d, k, how, &mut rng))
            .collect();
        for (b, curve) in baselines.iter().zip(&mut out) {
            let errs: Vec<f64> = prompts
                .iter()
                .map(|p| (b.predict(p) - p.target).powi(2) / class.error_scale(d))
                .collect();
            let mut boot = Rng::stream(seed, &format!("icl-bootstrap-k{k}"));
            let (lo, hi) = bootstrap_mean_interval(&errs, 1000, &mut boot);
            curve.push(CurvePoint {
                k,
                mean: errs.iter().sum::<f64>() / errs.len().max(1) as f64,
                lo,
                hi,
            });
        }
    }
    out
}

/// 95% percentile-bootstrap interval of the mean.
pub(crate) fn bootstrap_mean_interval(v: &[f64], resamples: usize, rng: &mut Rng) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len();
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| (0..n).map(|_| v[rng.below(n as u64) as usize]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    let at = |q: f64| means[((q * (resamples - 1) as f64).round() as usize).min(resamples - 1)];
    (at(0.025), at(0.975))
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn dist2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Solves `A x = b` for a symmetric positive-definite `A` (row-major `n × n`) by Cholesky;
/// `None` when `A` is not numerically positive definite.
fn cholesky_solve(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = a[i * n + j] - (0..j).map(|m| l[i * n + m] * l[j * n + m]).sum::<f64>();
            if i == j {
                if s <= 0.0 || !s.is_finite() {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut z = vec![0.0; n];
    for i in 0..n {
        z[i] = (b[i] - (0..i).map(|m| l[i * n + m] * z[m]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (z[i] - (i + 1..n).map(|m| l[m * n + i] * x[m]).sum::<f64>()) / l[i * n + i];
    }
    Some(x)
}

/// `(XᵀX + λI)⁻¹ Xᵀ y` (`λ > 0`), through the `k × k` system `(XXᵀ + λI) α = y`,
/// `w = Xᵀα` when there are fewer examples than dimensions; zeros if the system is singular.
fn ridge(xs: &[Vec<f64>], ys: &[f64], lambda: f64) -> Vec<f64> {
    gram_solve(xs, ys, lambda).unwrap_or_else(|| vec![0.0; xs[0].len()])
}

/// The ridge solution for `λ ≥ 0` through the smaller Gram matrix (`λ = 0`: the
/// minimum-norm least-squares solution); `None` when that matrix is singular.
fn gram_solve(xs: &[Vec<f64>], ys: &[f64], lambda: f64) -> Option<Vec<f64>> {
    let (k, d) = (xs.len(), xs[0].len());
    if k < d {
        let mut g = vec![0.0; k * k];
        for i in 0..k {
            for j in 0..k {
                g[i * k + j] = dot(&xs[i], &xs[j]) + if i == j { lambda } else { 0.0 };
            }
        }
        let alpha = cholesky_solve(&g, ys, k)?;
        let mut w = vec![0.0; d];
        for (a, x) in alpha.iter().zip(xs) {
            for (wi, xi) in w.iter_mut().zip(x) {
                *wi += a * xi;
            }
        }
        Some(w)
    } else {
        let mut g = vec![0.0; d * d];
        let mut r = vec![0.0; d];
        for (x, y) in xs.iter().zip(ys) {
            for i in 0..d {
                r[i] += x[i] * y;
                for j in 0..d {
                    g[i * d + j] += x[i] * x[j];
                }
            }
        }
        for i in 0..d {
            g[i * d + i] += lambda;
        }
        cholesky_solve(&g, &r, d)
    }
}

/// Minimum-norm least squares: the limit λ → 0⁺ of ridge, solved exactly (λ = 0) through the
/// smaller of the two Gram matrices; a rank-deficient system falls back to a λ of 1e-12 times
/// the Gram matrix's scale.
fn min_norm_least_squares(xs: &[Vec<f64>], ys: &[f64]) -> Vec<f64> {
    gram_solve(xs, ys, 0.0).unwrap_or_else(|| {
        let scale = xs.iter().map(|x| dot(x, x)).sum::<f64>() / xs.len().max(1) as f64;
        ridge(xs, ys, 1e-12 * scale.max(1e-300))
    })
}

/// LASSO by cyclic coordinate descent (Friedman, Hastie & Tibshirani 2010): each coordinate
/// is set to the soft-thresholded least-squares value given the others, until no coordinate
/// moves by more than `tol` or after `max_sweeps` sweeps.
fn lasso(xs: &[Vec<f64>], ys: &[f64], alpha: f64, tol: f64, max_sweeps: usize) -> Vec<f64> {
    let (k, d) = (xs.len(), xs[0].len());
    let kf = k as f64;
    let col_sq: Vec<f64> = (0..d)
        .map(|j| xs.iter().map(|x| x[j] * x[j]).sum::<f64>() / kf)
        .collect();
    let mut w = vec![0.0; d];
    let mut resid: Vec<f64> = ys.to_vec();
    for _ in 0..max_sweeps {
        let mut moved = 0.0f64;
        for j in 0..d {
            if col_sq[j] == 0.0 {
                continue;
            }
            // ρ = (1/k) Σ x_ij (r_i + x_ij w_j).
            let rho = xs
                .iter()
                .zip(&resid)
                .map(|(x, r)| x[j] * (r + x[j] * w[j]))
                .sum::<f64>()
                / kf;
            let new = soft(rho, alpha) / col_sq[j];
            let delta = new - w[j];
            if delta != 0.0 {
                for (x, r) in xs.iter().zip(resid.iter_mut()) {
                    *r -= x[j] * delta;
                }
                w[j] = new;
                moved = moved.max(delta.abs());
            }
        }
        if moved <= tol {
            break;
        }
    }
    w
}

/// `f(x) = Σ_j a_j relu(w_jᵀx + b_j) + c`.
#[derive(Clone, Debug)]
pub struct Net {
    /// `[hidden, d]`, row-major.
    pub w: Vec<f64>,
    pub b: Vec<f64>,
    pub a: Vec<f64>,
    pub c: f64,
}

impl Net {
    pub fn eval(&self, x: &[f64]) -> f64 {
        let d = x.len();
        self.c
            + self
                .w
                .chunks_exact(d)
                .zip(&self.b)
                .zip(&self.a)
                .map(|((wj, bj), aj)| aj * (dot(wj, x) + bj).max(0.0))
                .sum::<f64>()
    }

    /// The mean squared error over the examples and its gradient, in the order `w, b, a, c`.
    pub fn loss_grad(&self, xs: &[Vec<f64>], ys: &[f64]) -> (f64, Vec<f64>) {
        let (h, d, k) = (self.a.len(), self.w.len() / self.a.len().max(1), xs.len());
        let mut g = vec![0.0; h * d + 2 * h + 1];
        let mut loss = 0.0;
        let mut z = vec![0.0; h];
        for (x, &y) in xs.iter().zip(ys) {
            for (j, zj) in z.iter_mut().enumerate() {
                *zj = dot(&self.w[j * d..(j + 1) * d], x) + self.b[j];
            }
            let f = self.c
                + z.iter()
                    .zip(&self.a)
                    .map(|(zj, aj)| aj * zj.max(0.0))
                    .sum::<f64>();
            let e = f - y;
            loss += e * e / k as f64;
            let de = 2.0 * e / k as f64;
            for j in 0..h {
                g[h * d + h + j] += de * z[j].max(0.0);
                if z[j] > 0.0 {
                    let dz = de * self.a[j];
                    for (gw, xi) in g[j * d..(j + 1) * d].iter_mut().zip(x) {
                        *gw += dz * xi;
                    }
                    g[h * d + j] += dz;
                }
            }
            g[h * d + 2 * h] += de;
        }
        (loss, g)
    }
}

/// Fits a two-layer ReLU network of `hidden` units to the examples by `steps` full-batch Adam
/// steps (β = 0.9, 0.999; ε = 1e-8) on the mean squared error, from one fixed initialization —
/// `w ~ N(0, 2/d)` (He), `b = 0`, `a ~ N(0, 1/hidden)`, `c = 0`, drawn from a stream of its own
/// so the algorithm is the same on every prompt.
pub fn two_layer_net(xs: &[Vec<f64>], ys: &[f64], hidden: usize, steps: usize, lr: f64) -> Net {
    let d = xs.first().map_or(0, Vec::len);
    let mut rng = Rng::stream(0, "icl-two-layer-net-init");
    let mut net = Net {
        w: (0..hidden * d)
            .map(|_| rng.normal() * (2.0 / d.max(1) as f64).sqrt())
            .collect(),
        b: vec![0.0; hidden],
        a: (0..hidden)
            .map(|_| rng.normal() / (hidden as f64).sqrt())
            .collect(),
        c: 0.0,
    };
    let n = hidden * d + 2 * hidden + 1;
    let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
    for t in 1..=steps {
        let (_, g) = net.loss_grad(xs, ys);
        let (c1, c2) = (1.0 - 0.9f64.powi(t as i32), 1.0 - 0.999f64.powi(t as i32));
        let mut i = 0;
        let mut step = |p: &mut f64| {
            m[i] = 0.9 * m[i] + 0.1 * g[i];
            v[i] = 0.999 * v[i] + 0.001 * g[i] * g[i];
            *p -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + 1e-8);
            i += 1;
        };
        net.w.iter_mut().for_each(&mut step);
        net.b.iter_mut().for_each(&mut step);
        net.a.iter_mut().for_each(&mut step);
        step(&mut net.c);
    }
    net
}

fn soft(x: f64, t: f64) -> f64 {
    x.signum() * (x.abs() - t).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Garg et al.'s closed forms on noiseless linear functions, d = 8, 20,000 prompts per k:
    /// least squares 1 − k/d then 0, averaging (d + 1)/k, each within 5%. (The per-prompt
    /// error is a scaled χ²: at k = 2 its mean over 20,000 prompts has a standard deviation of
    /// 1.2% of 0.75, so 5% is four of them; 1,000 prompts would give 5.5%.)
    #[test]
    fn baselines_follow_their_closed_forms_on_linear_functions() {
        let d = 8;
        let c = curves(
            FunctionClass::Linear,
            d,
            12,
            20_000,
            Exemplars::Random,
            &[Baseline::LeastSquares, Baseline::Averaging],
            1,
        );
        for p in &c[0] {
            let want = if p.k < d {
                1.0 - p.k as f64 / d as f64
            } else {
                0.0
            };
            if want > 0.0 {
                assert!(
                    (p.mean / want - 1.0).abs() < 0.05,
                    "LS k={} {} vs {want}",
                    p.k,
                    p.mean
                );
                assert!(p.lo <= p.mean && p.mean <= p.hi);
            } else {
                assert!(p.mean < 1e-10, "LS k={} {}", p.k, p.mean);
            }
        }
        for p in c[1].iter().skip(1) {
            let want = (d as f64 + 1.0) / p.k as f64;
            assert!(
                (p.mean / want - 1.0).abs() < 0.05,
                "avg k={} {} vs {want}",
                p.k,
                p.mean
            );
        }
    }

    /// LASSO in an orthogonal design is soft-thresholded least squares (a closed form): with
    /// X = √k·I (k = d) the objective separates, ŵ_j = soft(w_LS,j, α).
    #[test]
    fn lasso_is_soft_thresholding_in_an_orthogonal_design() {
        let d = 5;
        let xs: Vec<Vec<f64>> = (0..d)
            .map(|i| {
                (0..d)
                    .map(|j| if i == j { (d as f64).sqrt() } else { 0.0 })
                    .collect()
            })
            .collect();
        let ys = vec![3.0, -0.2, 0.5, -4.0, 0.05];
        let w = lasso(&xs, &ys, 0.3, 1e-14, 1000);
        for j in 0..d {
            let ls = ys[j] / (d as f64).sqrt();
            assert!(
                (w[j] - soft(ls, 0.3)).abs() < 1e-12,
                "{j}: {} vs {}",
                w[j],
                soft(ls, 0.3)
            );
        }
    }

    /// On sparse linear functions (d = 10, s = 2), LASSO beats least squares well before k = d;
    /// on noisy linear ones the Bayes-optimal ridge beats least squares at k = d, where least
    /// squares fits the noise exactly.
    #[test]
    fn lasso_and_bayes_ridge_beat_least_squares_where_they_should() {
        let c = curves(
            FunctionClass::SparseLinear { s: 2 },
            10,
            6,
            400,
            Exemplars::Random,
            &[Baseline::LeastSquares, Baseline::Lasso { alpha: 0.01 }],
            2,
        );
        assert!(
            c[1][6].hi < 0.5 * c[0][6].lo,
            "{:?} vs {:?}",
            c[1][6],
            c[0][6]
        );
        let c = curves(
            FunctionClass::NoisyLinear { sigma: 0.5 },
            5,
            5,
            1000,
            Exemplars::Random,
            &[Baseline::LeastSquares, Baseline::BayesRidge { sigma: 0.5 }],
            3,
        );
        assert!(c[1][5].hi < c[0][5].lo, "{:?} vs {:?}", c[1][5], c[0][5]);
    }

    /// Retrieval: nearest-neighbour exemplars make the nearest-neighbour baseline far better on
    /// decision trees (whose value is constant on orthants) than random exemplars.
    #[test]
    fn retrieved_exemplars_help_a_local_predictor() {
        let run = |how| {
            curves(
                FunctionClass::Tree { depth: 4 },
                4,
                8,
                500,
                how,
                &[Baseline::NearestNeighbours { n: 1 }],
                4,
            )[0][8]
                .clone()
        };
        let random = run(Exemplars::Random);
        let near = run(Exemplars::Nearest { pool: 200 });
        assert!(near.hi < random.lo, "{near:?} vs {random:?}");
    }

    /// The function classes evaluate as defined: a tree routes by signs, a ReLU net is a sum
    /// of hinges.
    /// The two-layer net's gradient against central finite differences, and its fit: with more
    /// units than examples, Adam drives the training error of a ReLU function's examples to
    /// near zero, and the prediction on a new point beats predicting 0.
    #[test]
    fn two_layer_net_gradient_and_fit() {
        let mut rng = Rng::new(4);
        let (d, k) = (3, 12);
        let f = FunctionClass::Relu2 { hidden: 20 }.sample(d, &mut rng);
        let xs: Vec<Vec<f64>> = (0..k)
            .map(|_| (0..d).map(|_| rng.normal()).collect())
            .collect();
        let ys: Vec<f64> = xs.iter().map(|x| f.eval(x)).collect();
        let net = two_layer_net(&xs, &ys, 16, 3, 1e-2);
        let (_, g) = net.loss_grad(&xs, &ys);
        let flat = |n: &Net| [n.w.clone(), n.b.clone(), n.a.clone(), vec![n.c]].concat();
        let set = |n: &mut Net, i: usize, v: f64| {
            let (hd, h) = (n.w.len(), n.a.len());
            match i {
                i if i < hd => n.w[i] = v,
                i if i < hd + h => n.b[i - hd] = v,
                i if i < hd + 2 * h => n.a[i - hd - h] = v,
                _ => n.c = v,
            }
        };
        let p0 = flat(&net);
        for (i, &gi) in g.iter().enumerate() {
            let (mut up, mut down) = (net.clone(), net.clone());
            set(&mut up, i, p0[i] + 1e-6);
            set(&mut down, i, p0[i] - 1e-6);
            let fd = (up.loss_grad(&xs, &ys).0 - down.loss_grad(&xs, &ys).0) / 2e-6;
            assert!(
                (fd - gi).abs() < 1e-6 * (1.0 + gi.abs()),
                "{i}: {fd} vs {gi}"
            );
        }
        let fit = two_layer_net(&xs, &ys, 64, 2000, 1e-2);
        let var = ys.iter().map(|y| y * y).sum::<f64>() / k as f64;
        assert!(fit.loss_grad(&xs, &ys).0 < 1e-3 * var, "training error");
    }

    #[test]
    fn functions_evaluate_as_defined() {
        let t = Function::Tree {
            coords: vec![0, 1, 1],
            leaves: vec![10.0, 11.0, 12.0, 13.0],
        };
        assert_eq!(t.eval(&[-1.0, -1.0]), 10.0);
        assert_eq!(t.eval(&[-1.0, 1.0]), 11.0);
        assert_eq!(t.eval(&[1.0, -1.0]), 12.0);
        assert_eq!(t.eval(&[1.0, 1.0]), 13.0);
        let r = Function::Relu2 {
            w: vec![vec![1.0, 0.0], vec![0.0, 1.0]],
            a: vec![2.0, -3.0],
        };
        assert_eq!(r.eval(&[0.5, 1.0]), 1.0 - 3.0);
        assert_eq!(r.eval(&[-0.5, -1.0]), 0.0);
    }
}
