//! What the loop adds for in-context regression prompts: the model's error against the number
//! of in-context examples beside the algorithms it is compared with, on the same held-out
//! prompts (Garg et al. 2022, figure 2), with in-context examples drawn at random and chosen by
//! retrieval.
//!
//! Rows (errors are squared errors ÷ the class's `E f(x)²`, so that predicting 0 scores 1:
//! `dim`, the sparsity, or 1 for trees, Garg et al.'s normalizations
//! ([`crate::theory::icl::FunctionClass::error_scale`]); `k` is the number of in-context
//! examples; `_lo`/`_hi` bound a 95% percentile-bootstrap interval over prompts):
//! - `icl_error_k{k}` (and `_lo`, `_hi`): the model at each evaluation, random exemplars: on the
//!   test prompts, the prediction of `y_{k+1}` from the `k` pairs before it;
//! - `icl_error_nearest_k{k}`: the same on prompts whose `k` examples are the nearest of `pool`
//!   draws to the query (farthest first, nearest next to the query);
//! - `icl_{baseline}_k{k}` and `icl_{baseline}_nearest_k{k}`: each baseline on the very same
//!   prompts, once, at step 0 (they do not train).
//!
//! The targets are the prompts' `y` values as the model sees them (with noise for the noisy
//! class), for the model and the baselines alike.

use crate::engine::{Float, Rng};
use crate::model::{Batch, Gpt, Model};
use crate::nn::norm::Mode;
use crate::store::MetricRow;
use crate::task::{Dataset, InContextSpec};
use crate::theory::icl::{bootstrap_mean_interval, Baseline, Prompt};

use super::metric;

/// Bootstrap resamples for every interval.
const RESAMPLES: usize = 1000;

pub(crate) struct PromptReport<F> {
    spec: InContextSpec,
    seed: u64,
    /// The held-out prompts with random exemplars: `x: [n, K·d]`, `y: [n, K]`.
    x: Vec<F>,
    y: Vec<F>,
    /// Per `k = 0 … K − 1`: `n` prompts of the `k` nearest exemplars and the query, `x: [n,
    /// (k+1)·d]`, `y: [n, k+1]`.
    nearest: Vec<(Vec<F>, Vec<F>)>,
}

impl<F: Float> PromptReport<F> {
    /// The evaluation prompts: the dataset's test split, and the nearest-exemplar prompts drawn
    /// from their own stream of the run's seed.
    pub(crate) fn new(data: &Dataset) -> Option<Self> {
        let info = data.prompts.as_ref()?;
        let spec = info.spec.clone();
        let (k_max, d, n) = (spec.points, spec.dim, data.n_test());
        let x = data.test_x.iter().map(|&v| F::of(v)).collect();
        let y = data.test_y.iter().map(|&v| F::of(v)).collect();
        let class = spec.class();
        let nearest = (0..k_max)
            .map(|k| {
                let mut rng = Rng::stream(info.seed, &format!("in-context-nearest-k{k}"));
                let how = crate::theory::icl::Exemplars::Nearest { pool: spec.pool };
                let (mut px, mut py) = (Vec::with_capacity(n * (k + 1) * d), Vec::new());
                for _ in 0..n {
                    let p = crate::theory::icl::prompt(class, d, k, how, &mut rng);
                    for (xi, &yi) in p.xs.iter().zip(&p.ys) {
                        px.extend(xi.iter().map(|&v| F::of(v)));
                        py.push(F::of(yi));
                    }
                    px.extend(p.query.iter().map(|&v| F::of(v)));
                    // The query's target as the model sees targets: with the class's noise.
                    py.push(F::of(p.target + class.noise() * rng.normal()));
                }
                (px, py)
            })
            .collect();
        Some(PromptReport {
            spec,
            seed: info.seed,
            x,
            y,
            nearest,
        })
    }

    /// Step 0, once: every baseline's curve on the random and the nearest prompts.
    /// The two-layer network (a thousand Adam steps per prompt and `k`) is scored on the first
    /// `net_prompts` prompts only.
    pub(crate) fn start(&self, rows: &mut Vec<MetricRow>) {
        for b in self.spec.baselines() {
            let name = format!("icl_{}", id(b));
            let n = match b {
                Baseline::TwoLayerNet { .. } => self.spec.net_prompts,
                _ => usize::MAX,
            };
            let random = self.errors_of(&|p: &Prompt| b.predict(p), false, n);
            self.push_curve(0, &name, &random, rows);
            let nearest = self.errors_of(&|p: &Prompt| b.predict(p), true, n);
            self.push_curve(0, &format!("{name}_nearest"), &nearest, rows);
        }
    }

    /// After an evaluation at `step`: the model's curves on the same prompts.
    pub(crate) fn after_eval(
        &self,
        step: u64,
        model: &mut dyn Model<F>,
        rows: &mut Vec<MetricRow>,
    ) {
        let (k_max, d) = (self.spec.points, self.spec.dim);
        let n = self.y.len() / k_max;
        let scale = self.spec.class().error_scale(d);
        // Random exemplars: one pass scores every k (the prediction at point k sees k pairs).
        let preds = predict(model, &self.x, &self.y, n, k_max, d);
        let random: Vec<Vec<f64>> = (0..k_max)
            .map(|k| {
                (0..n)
                    .map(|i| sq_err(preds[i * k_max + k], self.y[i * k_max + k].f64(), scale))
                    .collect()
            })
            .collect();
        self.push_curve(step, "icl_error", &random, rows);
        // Nearest exemplars: one pass per k, scored at the query (the last point).
        let nearest: Vec<Vec<f64>> = self
            .nearest
            .iter()
            .enumerate()
            .map(|(k, (x, y))| {
                let p = predict(model, x, y, n, k + 1, d);
                (0..n)
                    .map(|i| sq_err(p[i * (k + 1) + k], y[i * (k + 1) + k].f64(), scale))
                    .collect()
            })
            .collect();
        self.push_curve(step, "icl_error_nearest", &nearest, rows);
    }

    /// Per `k`: the normalized squared errors of `predict` over the first `limit` prompts,
    /// random (the test prompts' prefixes) or nearest.
    fn errors_of(
        &self,
        predict: &dyn Fn(&Prompt) -> f64,
        nearest: bool,
        limit: usize,
    ) -> Vec<Vec<f64>> {
        let (k_max, d) = (self.spec.points, self.spec.dim);
        let n = (self.y.len() / k_max).min(limit);
        let scale = self.spec.class().error_scale(d);
        let point = |x: &[F], j: usize| -> Vec<f64> {
            x[j * d..(j + 1) * d].iter().map(|v| v.f64()).collect()
        };
        (0..k_max)
            .map(|k| {
                (0..n)
                    .map(|i| {
                        let (x, y, at) = if nearest {
                            let (x, y) = &self.nearest[k];
                            let w = k + 1;
                            (&x[i * w * d..(i + 1) * w * d], &y[i * w..(i + 1) * w], k)
                        } else {
                            let w = k_max;
                            (
                                &self.x[i * w * d..(i + 1) * w * d],
                                &self.y[i * w..(i + 1) * w],
                                k,
                            )
                        };
                        let p = Prompt {
                            xs: (0..at).map(|j| point(x, j)).collect(),
                            ys: y[..at].iter().map(|v| v.f64()).collect(),
                            query: point(x, at),
                            target: y[at].f64(),
                        };
                        sq_err(predict(&p), p.target, scale)
                    })
                    .collect()
            })
            .collect()
    }

    /// `{name}_k{k}`, `_lo`, `_hi` for each `k`.
    fn push_curve(&self, step: u64, name: &str, errs: &[Vec<f64>], rows: &mut Vec<MetricRow>) {
        for (k, e) in errs.iter().enumerate() {
            let mean = e.iter().sum::<f64>() / e.len().max(1) as f64;
            let mut rng = Rng::stream(self.seed ^ step, &format!("icl-bootstrap-{name}-k{k}"));
            let (lo, hi) = bootstrap_mean_interval(e, RESAMPLES, &mut rng);
            rows.push(metric(step, &format!("{name}_k{k}"), mean));
            rows.push(metric(step, &format!("{name}_k{k}_lo"), lo));
            rows.push(metric(step, &format!("{name}_k{k}_hi"), hi));
        }
    }
}

/// A baseline's name in row names (ridge with its penalty: `ridge_0.1`).
fn id(b: Baseline) -> String {
    match b {
        Baseline::Ridge { lambda } => format!("ridge_{lambda}"),
        b => plain_id(b).into(),
    }
}

fn plain_id(b: Baseline) -> &'static str {
    match b {
        Baseline::LeastSquares => "least_squares",
        Baseline::Ridge { .. } => "ridge",
        Baseline::BayesRidge { .. } => "bayes_ridge",
        Baseline::Averaging => "averaging",
        Baseline::NearestNeighbours { .. } => "nearest_neighbours",
        Baseline::Lasso { .. } => "lasso",
        Baseline::TwoLayerNet { .. } => "two_layer_net",
    }
}

/// The squared error in units of the class's `E f(x)²`.
fn sq_err(pred: f64, target: f64, scale: f64) -> f64 {
    (pred - target).powi(2) / scale
}

/// The model's predictions `[n, points]` on prompts `x: [n, points·d]`, `y: [n, points]`, in
/// chunks of its capacity.
fn predict<F: Float>(
    model: &mut dyn Model<F>,
    x: &[F],
    y: &[F],
    n: usize,
    points: usize,
    d: usize,
) -> Vec<f64> {
    let cap = model.capacity();
    let mut out = Vec::with_capacity(n * points);
    let mut start = 0;
    while start < n {
        let b = cap.min(n - start);
        let batch = Batch::Prompts {
            x: &x[start * points * d..(start + b) * points * d],
            y: &y[start * points..(start + b) * points],
            seqs: b,
            points,
            dim: d,
        };
        model.forward(&batch, Mode::Eval);
        let gpt = model
            .as_any()
            .downcast_ref::<Gpt<F>>()
            .expect("prompts are read by the GPT");
        out.extend(gpt.predictions().map(|v| v.f64()));
        start += b;
    }
    out
}
