//! `[task.in_context]`: in-context regression prompts for the transformer (Garg, Tsipras, Liang
//! & Valiant 2022, "What can transformers learn in-context? A case study of simple function
//! classes").
//!
//! A prompt is `K = points` pairs `(x_i, y_i)`, `x_i ~ N(0, I_d)`, `y_i = f(x_i)` (plus noise for
//! the noisy class) with `f` drawn fresh per prompt from its function class
//! ([`crate::theory::icl::FunctionClass`]). The model predicts every `y_i` from the `i` pairs
//! before it, so one prompt scores every number of in-context examples `0 … K − 1`.
//!
//! Training prompts are fresh at every step (drawn from the seed and the step alone, so a resumed
//! run sees the same batches), as in Garg et al.; the stored splits are fixed evaluation prompts:
//! `train` a sample of the training distribution, `test` the held-out prompts on which the model
//! and the baselines are scored side by side (`crate::train` writes their error curves). The
//! optional curriculum (Garg et al. §3, appendix A.2) starts with fewer active dimensions (the
//! others zero) and shorter prompts and grows both every `interval` steps; evaluation always uses
//! the full `dim` and `points`.

use serde::{Deserialize, Serialize};

use crate::engine::{Float, Rng};
use crate::theory::icl::{Baseline, FunctionClass};

use super::{at_least, counts, finite_nonneg, key, matrix, positive, Dataset, Target, TaskError};

/// The function class of the prompts (`function = "linear"` …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FunctionKind {
    /// `f(x) = wᵀx`, `w ~ N(0, I_d)`.
    Linear,
    /// `w` with `sparsity` nonzero coordinates.
    SparseLinear,
    /// Linear, with `N(0, noise²)` on every `y`.
    NoisyLinear,
    /// Two-layer ReLU networks of `hidden` units.
    Relu2,
    /// Decision trees of depth `depth` over the signs of coordinates.
    Tree,
}

/// `[task.in_context.curriculum]`: Garg et al.'s curriculum over active dimensions and prompt
/// length. At step `s` the prompts have `min(dim, dims_start + dims_increment·⌊s/interval⌋)`
/// active dimensions and `min(points, points_start + points_increment·⌊s/interval⌋)` points.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CurriculumSpec {
    pub dims_start: usize,
    /// 1: Garg et al.'s.
    #[serde(default = "d_dims_increment")]
    pub dims_increment: usize,
    pub points_start: usize,
    /// 2: Garg et al.'s.
    #[serde(default = "d_points_increment")]
    pub points_increment: usize,
    /// Steps between increments (Garg et al. use 2,000 over 500,000 steps).
    pub interval: u64,
}

fn d_dims_increment() -> usize {
    1
}
fn d_points_increment() -> usize {
    2
}

/// `[task.in_context]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InContextSpec {
    /// Linear regression: Garg et al.'s main class.
    #[serde(default = "d_function")]
    pub function: FunctionKind,
    /// 5 dimensions: small enough to train in minutes on a CPU (Garg et al. use 20).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// 2·dim + 1 = 11 points: past `dim` examples least squares is exact, so the curve's whole
    /// shape shows (Garg et al.'s 41 for d = 20).
    #[serde(default = "d_points")]
    pub points: usize,
    /// 3 nonzero coordinates for `sparse_linear`: Garg et al.'s.
    #[serde(default = "d_sparsity")]
    pub sparsity: usize,
    /// Noise standard deviation for `noisy_linear`.
    #[serde(default = "d_noise")]
    pub noise: f64,
    /// 100 hidden units for `relu2`: Garg et al.'s.
    #[serde(default = "d_hidden")]
    pub hidden: usize,
    /// Depth 4 for `tree`: Garg et al.'s.
    #[serde(default = "d_depth")]
    pub depth: usize,
    /// 1,000 held-out prompts: bootstrap intervals of a few percent on the error curves.
    #[serde(default = "d_n_test")]
    pub n_test: usize,
    /// 100 candidates per query from which retrieval picks the nearest exemplars.
    #[serde(default = "d_pool")]
    pub pool: usize,
    /// 3 neighbours for the nearest-neighbours baseline: Garg et al.'s.
    #[serde(default = "d_neighbours")]
    pub neighbours: usize,
    /// Ridge baselines at these penalties λ (each as `ridge_{λ}`), beside least squares (λ → 0);
    /// none by default (the noisy class gets its Bayes-optimal λ = σ² as `bayes_ridge`).
    #[serde(default)]
    pub ridge_lambdas: Vec<f64>,
    /// 0.01: LASSO's penalty for the sparse class's baseline (small: the data are noiseless).
    #[serde(default = "d_lasso_alpha")]
    pub lasso_alpha: f64,
    /// The ReLU class's two-layer network baseline: 100 hidden units (the class's own width).
    #[serde(default = "d_net_hidden")]
    pub net_hidden: usize,
    /// 1,000 full-batch Adam steps per fit: past them the training error of ≤ 40 examples no
    /// longer falls much.
    #[serde(default = "d_net_steps")]
    pub net_steps: usize,
    /// 0.01: Adam's learning rate for the fit.
    #[serde(default = "d_net_lr")]
    pub net_lr: f64,
    /// 100 prompts for that baseline (one fit per prompt and number of examples): the others
    /// use all `n_test`.
    #[serde(default = "d_net_prompts")]
    pub net_prompts: usize,
    /// No curriculum: every prompt at the full `dim` and `points`.
    #[serde(default)]
    pub curriculum: Option<CurriculumSpec>,
}

fn d_function() -> FunctionKind {
    FunctionKind::Linear
}
fn d_dim() -> usize {
    5
}
fn d_points() -> usize {
    11
}
fn d_sparsity() -> usize {
    3
}
fn d_noise() -> f64 {
    0.5
}
fn d_hidden() -> usize {
    100
}
fn d_depth() -> usize {
    4
}
fn d_n_test() -> usize {
    1000
}
fn d_pool() -> usize {
    100
}
fn d_neighbours() -> usize {
    3
}
fn d_lasso_alpha() -> f64 {
    0.01
}
fn d_net_hidden() -> usize {
    100
}
fn d_net_steps() -> usize {
    1000
}
fn d_net_lr() -> f64 {
    0.01
}
fn d_net_prompts() -> usize {
    100
}

impl Default for InContextSpec {
    fn default() -> Self {
        InContextSpec {
            function: d_function(),
            dim: d_dim(),
            points: d_points(),
            sparsity: d_sparsity(),
            noise: d_noise(),
            hidden: d_hidden(),
            depth: d_depth(),
            n_test: d_n_test(),
            pool: d_pool(),
            neighbours: d_neighbours(),
            ridge_lambdas: Vec::new(),
            lasso_alpha: d_lasso_alpha(),
            net_hidden: d_net_hidden(),
            net_steps: d_net_steps(),
            net_lr: d_net_lr(),
            net_prompts: d_net_prompts(),
            curriculum: None,
        }
    }
}

/// What the loop needs to know about a prompt task: the generator of fresh training prompts and
/// the spec its evaluation reads.
#[derive(Clone, Debug, PartialEq)]
pub struct PromptInfo {
    pub spec: InContextSpec,
    pub seed: u64,
}

impl InContextSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        let k = |f: &str| key("in_context", f);
        at_least(k("dim"), self.dim, 1, "at least one input dimension")?;
        at_least(k("points"), self.points, 1, "at least one point per prompt")?;
        at_least(
            k("n_test"),
            self.n_test,
            1,
            "at least one evaluation prompt",
        )?;
        at_least(
            k("pool"),
            self.pool,
            self.points,
            "retrieval picks up to `points` exemplars from the pool",
        )?;
        match self.function {
            FunctionKind::SparseLinear => {
                at_least(k("sparsity"), self.sparsity, 1, "at least one coordinate")?;
                if self.sparsity > self.dim {
                    return Err(super::invalid(
                        k("sparsity"),
                        format!("must be ≤ dim = {} (got {})", self.dim, self.sparsity),
                        "a sparse w has at most `dim` nonzero coordinates",
                    ));
                }
            }
            FunctionKind::NoisyLinear => finite_nonneg(k("noise"), self.noise, "σ ≥ 0")?,
            FunctionKind::Relu2 => at_least(k("hidden"), self.hidden, 1, "at least one unit")?,
            FunctionKind::Tree => {
                at_least(k("depth"), self.depth, 1, "at least one split")?;
                if self.depth > 16 {
                    return Err(super::invalid(
                        k("depth"),
                        format!("must be ≤ 16 (got {})", self.depth),
                        "a tree of depth 16 already has 65,536 leaves",
                    ));
                }
            }
            FunctionKind::Linear => {}
        }
        positive(k("lasso_alpha"), self.lasso_alpha, "a positive penalty")?;
        at_least(
            k("neighbours"),
            self.neighbours,
            1,
            "at least one neighbour",
        )?;
        let mut seen = Vec::new();
        for &l in &self.ridge_lambdas {
            positive(
                k("ridge_lambdas"),
                l,
                "penalties > 0 (λ → 0 is least squares)",
            )?;
            // Each penalty names its rows (`ridge_{λ}`): two equal names would collide.
            let name = format!("{l}");
            if seen.contains(&name) {
                return Err(super::invalid(
                    k("ridge_lambdas"),
                    format!("lists {name} twice"),
                    "list each penalty once",
                ));
            }
            seen.push(name);
        }
        // Work and memory bounds: per held-out prompt and number of examples, retrieval draws
        // `pool` candidates; the ReLU class draws `hidden` units per prompt and the network
        // baseline fits `net_hidden` units.
        for (field, got, max) in [
            ("pool", self.pool, 100_000),
            ("hidden", self.hidden, 100_000),
            ("net_hidden", self.net_hidden, 10_000),
            ("net_steps", self.net_steps, 1_000_000),
        ] {
            if got > max {
                return Err(super::invalid(
                    k(field),
                    format!("must be ≤ {} (got {got})", super::thousands(max)),
                    "a smaller value; larger ones take hours or exhaust memory",
                ));
            }
        }
        at_least(k("net_hidden"), self.net_hidden, 1, "at least one unit")?;
        at_least(k("net_prompts"), self.net_prompts, 1, "at least one prompt")?;
        positive(k("net_lr"), self.net_lr, "a positive learning rate")?;
        super::size_ok(
            "in_context",
            self.n_test,
            self.eval_values_per_prompt(),
            "n_test, points or dim",
        )?;
        if let Some(c) = &self.curriculum {
            let k = |f: &str| key("in_context", &format!("curriculum.{f}"));
            at_least(
                k("dims_start"),
                c.dims_start,
                1,
                "at least one active dimension",
            )?;
            at_least(k("points_start"), c.points_start, 1, "at least one point")?;
            if c.interval == 0 {
                return Err(super::invalid(
                    k("interval"),
                    "must be ≥ 1 (got 0)",
                    "the steps between increments",
                ));
            }
            for (field, got, max) in [
                ("dims_start", c.dims_start, self.dim),
                ("points_start", c.points_start, self.points),
            ] {
                if got > max {
                    return Err(super::invalid(
                        k(field),
                        format!("must be ≤ {max}, the task's full size (got {got})"),
                        "the curriculum grows up to task.in_context.dim and points",
                    ));
                }
            }
        }
        Ok(())
    }

    /// Values one held-out prompt's evaluation holds: its two stored copies (train-eval and
    /// test, `2·K·(d + 1)`) and its retrieval-chosen twins for every `k`.
    fn eval_values_per_prompt(&self) -> usize {
        let (k, d1) = (self.points, self.dim.saturating_add(1));
        k.saturating_mul(2)
            .saturating_mul(d1)
            .saturating_add(self.retrieval_values_per_prompt())
    }

    /// Values the retrieval-chosen twins of one held-out prompt hold: `Σ_k (k + 1)(d + 1)`.
    fn retrieval_values_per_prompt(&self) -> usize {
        let (k, d1) = (self.points, self.dim.saturating_add(1));
        (k.saturating_mul(k.saturating_add(1)) / 2).saturating_mul(d1)
    }

    /// Values the retrieval-chosen evaluation prompts hold, beyond the stored splits.
    pub fn retrieval_values(&self) -> usize {
        self.n_test
            .saturating_mul(self.retrieval_values_per_prompt())
    }

    /// The function class as the theory module draws it.
    pub fn class(&self) -> FunctionClass {
        match self.function {
            FunctionKind::Linear => FunctionClass::Linear,
            FunctionKind::SparseLinear => FunctionClass::SparseLinear { s: self.sparsity },
            FunctionKind::NoisyLinear => FunctionClass::NoisyLinear { sigma: self.noise },
            FunctionKind::Relu2 => FunctionClass::Relu2 {
                hidden: self.hidden,
            },
            FunctionKind::Tree => FunctionClass::Tree { depth: self.depth },
        }
    }

    /// The algorithms the model is compared with on this class: least squares, averaging and
    /// nearest neighbours always (Garg et al.'s), ridge at each of `ridge_lambdas`, LASSO for sparse functions, the
    /// Bayes-optimal ridge for noisy ones, a two-layer ReLU network fitted by gradient descent
    /// for the ReLU class.
    pub fn baselines(&self) -> Vec<Baseline> {
        let mut b = vec![
            Baseline::LeastSquares,
            Baseline::Averaging,
            Baseline::NearestNeighbours { n: self.neighbours },
        ];
        b.extend(
            self.ridge_lambdas
                .iter()
                .map(|&lambda| Baseline::Ridge { lambda }),
        );
        match self.function {
            FunctionKind::SparseLinear => b.push(Baseline::Lasso {
                alpha: self.lasso_alpha,
            }),
            FunctionKind::NoisyLinear => b.push(Baseline::BayesRidge { sigma: self.noise }),
            FunctionKind::Relu2 => b.push(Baseline::TwoLayerNet {
                hidden: self.net_hidden,
                steps: self.net_steps,
                lr: self.net_lr,
            }),
            _ => {}
        }
        b
    }

    /// Active dimensions and points of the training prompts at `step`.
    pub fn at(&self, step: u64) -> (usize, usize) {
        match &self.curriculum {
            None => (self.dim, self.points),
            Some(c) => {
                let n = (step / c.interval) as usize;
                let grow = |start: usize, inc: usize, max: usize| {
                    start.saturating_add(inc.saturating_mul(n)).min(max)
                };
                (
                    grow(c.dims_start, c.dims_increment, self.dim),
                    grow(c.points_start, c.points_increment, self.points),
                )
            }
        }
    }

    /// Fills `x: [n, points, dim]` and `y: [n, points]` with `n = y.len() / points` prompts of
    /// `points` points whose coordinates past `active` are zero, drawn from `rng`.
    pub fn fill<F: Float>(
        &self,
        active: usize,
        points: usize,
        rng: &mut Rng,
        x: &mut [F],
        y: &mut [F],
    ) {
        let (d, class) = (self.dim, self.class());
        let sigma = class.noise();
        let mut point = vec![0.0; active];
        for (xp, yp) in x
            .chunks_exact_mut(points * d)
            .zip(y.chunks_exact_mut(points))
        {
            let f = class.sample(active, rng);
            for (xi, yi) in xp.chunks_exact_mut(d).zip(yp.iter_mut()) {
                point.iter_mut().for_each(|v| *v = rng.normal());
                xi.fill(F::zero());
                for (v, &p) in xi.iter_mut().zip(&point) {
                    *v = F::of(p);
                }
                *yi = F::of(f.eval(&point) + sigma * rng.normal());
            }
        }
    }

    /// The fixed evaluation prompts: `train` a sample of the training distribution at full
    /// size, `test` held out; both `n_test` prompts, from their own streams.
    pub fn generate(&self, seed: u64) -> Dataset {
        let (k, d, n) = (self.points, self.dim, self.n_test);
        let split = |label: &str| {
            let mut rng = Rng::stream(seed, label);
            let (mut x, mut y) = (vec![0.0f64; n * k * d], vec![0.0f64; n * k]);
            self.fill(d, k, &mut rng, &mut x, &mut y);
            (matrix(n, k * d, x), matrix(n, k, y))
        };
        let (train_x, train_y) = split("in-context-train-eval");
        let (test_x, test_y) = split("in-context-test");
        let function = serde_json::to_value(self.function)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        Dataset {
            train_x,
            train_y,
            test_x,
            test_y,
            target: Target::Regression { out_dim: 1 },
            description: format!(
                "in-context {function} regression, d = {d}, {k} points per prompt, fresh \
                 training prompts every step; evaluation prompts {}",
                counts(n, n)
            ),
            sequence: None,
            subtasks: None,
            image: None,
            mixture: None,
            prompts: Some(PromptInfo {
                spec: self.clone(),
                seed,
            }),
        }
    }
}

/// The stream of the training prompts of `step`: a function of the seed and the step alone.
pub fn step_rng(seed: u64, step: u64) -> Rng {
    Rng::stream(
        seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        "in-context-train",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curriculum_grows_to_the_full_size() {
        let s = InContextSpec {
            dim: 5,
            points: 11,
            curriculum: Some(CurriculumSpec {
                dims_start: 2,
                dims_increment: 1,
                points_start: 5,
                points_increment: 2,
                interval: 100,
            }),
            ..InContextSpec::default()
        };
        assert_eq!(s.at(0), (2, 5));
        assert_eq!(s.at(99), (2, 5));
        assert_eq!(s.at(100), (3, 7));
        assert_eq!(s.at(300), (5, 11));
        assert_eq!(s.at(10_000), (5, 11));
        assert_eq!(InContextSpec::default().at(7), (5, 11));
    }

    /// Inactive coordinates are zero; linear targets are wᵀx exactly (noiseless class), so the
    /// first `dim` points of a prompt determine the rest by least squares.
    #[test]
    fn prompts_are_linear_with_inactive_coordinates_zero() {
        let s = InContextSpec::default();
        let (k, d) = (s.points, s.dim);
        let mut x = vec![0.0; 3 * k * d];
        let mut y = vec![0.0; 3 * k];
        s.fill(3, k, &mut Rng::new(1), &mut x, &mut y);
        for xi in x.chunks_exact(d) {
            assert_eq!(&xi[3..], &[0.0, 0.0]);
            assert!(xi[..3].iter().all(|v| *v != 0.0));
        }
        for (xp, yp) in x.chunks_exact(k * d).zip(y.chunks_exact(k)) {
            let p = crate::theory::icl::Prompt {
                xs: xp[..(k - 1) * d]
                    .chunks_exact(d)
                    .map(<[f64]>::to_vec)
                    .collect(),
                ys: yp[..k - 1].to_vec(),
                query: xp[(k - 1) * d..].to_vec(),
                target: yp[k - 1],
            };
            let pred = Baseline::LeastSquares.predict(&p);
            assert!((pred - p.target).abs() < 1e-9, "{pred} vs {}", p.target);
        }
    }

    #[test]
    fn bad_values_name_their_key() {
        let s = InContextSpec {
            function: FunctionKind::SparseLinear,
            sparsity: 9,
            ..InContextSpec::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.key(), Some("task.in_context.sparsity"));
        let s = InContextSpec {
            curriculum: Some(CurriculumSpec {
                dims_start: 9,
                dims_increment: 1,
                points_start: 2,
                points_increment: 2,
                interval: 10,
            }),
            ..InContextSpec::default()
        };
        let e = s.validate().unwrap_err();
        assert_eq!(e.key(), Some("task.in_context.curriculum.dims_start"));
    }
}
