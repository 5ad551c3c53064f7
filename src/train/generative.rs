//! What the loop adds for a denoiser (`[model.denoiser]`): its loss per noise level, its excess
//! error over the ideal denoiser (for a Gaussian mixture), and the quality of the samples it
//! generates, beside the same metrics for the prior, for held-out data and for the ideal
//! denoiser's samples.
//!
//! Rows (levels `l = 0 … L−1`, log-spaced over the sampler's `[σ_min, σ_max]`, on the first
//! `level_points` test points, perturbed once):
//! - step 0, once: `sigma_level_l{l}` (the level σ_l), `sigma_ideal_l{l}` (the ideal
//!   denoiser's loss), `data_std` (per-coordinate std of the training points, to set σ_data
//!   by), `sample_count` and `reference_count` (the sizes of the generated and held-out samples
//!   the metrics compare), `prior_{m}` (prior draws vs held-out data: the scale of "nothing learned"), `data_{m}`
//!   (training vs held-out points: the estimator's floor), `ideal_{m}` (samples of the ideal
//!   denoiser, same prior draws and sampler: the "perfect network"), for each metric `m` of
//!   `mmd`, `mmd_unbiased`, `swd`, `energy`;
//! - at each evaluation: `sigma_loss_l{l}` (EDM's weighted loss `λ(σ)·‖D − y‖²/N` at σ_l, the
//!   training objective there), `sigma_excess_l{l}` (`λ(σ)·‖D_θ − D*‖²/N`: the learned
//!   denoiser's excess over the ideal one, which equals the loss gap in expectation), and
//!   `sample_{m}` for the trained model's samples.
//!
//! The samples of the last evaluation, their trajectories and the reference points are written
//! to `samples.safetensors` for the report.

use std::path::Path;

use safetensors::Dtype;

use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::generative::{metrics, sampler, Kernel};
use crate::model::denoiser::precondition;
use crate::model::Model;
use crate::spec::denoiser::DenoiserSpec;
use crate::store::MetricRow;
use crate::task::Dataset;

use super::metric;

/// The artifact this report writes.
pub const FILE: &str = "samples.safetensors";

pub(crate) struct GenerativeReport {
    spec: DenoiserSpec,
    kernel: Kernel,
    seed: u64,
    n: usize,
    levels: Vec<f64>,
    /// Per level: clean points, their perturbations `[P, N]`, the ideal denoiser's output.
    level_sets: Vec<LevelSet>,
    /// Held-out points the samples are compared with `[M, N]`.
    reference: Vec<f64>,
    /// Training points of the same count: the estimator's floor.
    train_points: Vec<f64>,
    /// Prior draws at σ_max `[M, N]`: every sampling run starts here.
    prior: Vec<f64>,
    /// The last evaluation's samples and kept trajectories.
    last: Option<(Vec<f64>, Vec<f64>)>,
    ideal: Option<(Vec<f64>, Vec<f64>)>,
}

impl GenerativeReport {
    /// Bytes the report holds for `n`-dimensional data with `n_test` held-out points: the level
    /// sets (clean, noisy, ideal), reference, training and prior points, the sampler's state
    /// and buffers, kept trajectories (model and ideal), and the metrics' distance matrices.
    pub(crate) fn bytes(spec: &DenoiserSpec, n: usize, n_test: usize) -> u64 {
        let e = &spec.eval;
        let (n, m) = (n as u64, e.samples as u64);
        let p = e.level_points.min(n_test) as u64;
        let levels = e.sigma_levels as u64;
        let traj = (spec.sampler.steps as u64 + 1) * e.trajectories as u64 * n;
        let values = levels * p * n * 3 // level sets
            + 3 * m * n // reference, training points, prior
            + 6 * m * n // sampler state, slopes, next, output, model and ideal samples
            + 2 * traj
            + 3 * m * m; // metric distance matrices
        values.saturating_mul(8)
    }

    pub(crate) fn new(spec: &DenoiserSpec, data: &Dataset, seed: u64) -> Self {
        let n = data.input_dim();
        let kernel = Kernel::new(spec, n);
        let e = &spec.eval;
        let s = &spec.sampler;
        let l = e.sigma_levels;
        let levels: Vec<f64> = (0..l)
            .map(|i| {
                let f = if l == 1 {
                    0.5
                } else {
                    i as f64 / (l - 1) as f64
                };
                (s.sigma_min.ln() + f * (s.sigma_max.ln() - s.sigma_min.ln())).exp()
            })
            .collect();
        let test: Vec<f64> = data.test_x.iter().copied().collect();
        let p = e.level_points.min(data.n_test());
        let mut rng = Rng::stream(seed, "denoise-levels");
        let level_sets = levels
            .iter()
            .map(|&sigma| {
                let clean = test[..p * n].to_vec();
                let mut noisy = vec![0.0; p * n];
                for (c, o) in clean.chunks_exact(n).zip(noisy.chunks_exact_mut(n)) {
                    kernel.perturb(sigma, c, o, &mut rng);
                }
                let ideal = data.mixture.as_ref().map(|m| {
                    let mut out = vec![0.0; p * n];
                    m.denoise(kernel.aug, sigma, &noisy, &mut out);
                    out
                });
                LevelSet {
                    clean,
                    noisy,
                    ideal,
                }
            })
            .collect();
        let m = e.samples.min(data.n_test()).min(data.n_train());
        let reference = test[..m * n].to_vec();
        let train_points: Vec<f64> = data.train_x.iter().take(m * n).copied().collect();
        let mut prior = vec![0.0; e.samples * n];
        let mut rng = Rng::stream(seed, "denoise-prior");
        for row in prior.chunks_exact_mut(n) {
            kernel.prior(s.sigma_max, row, &mut rng);
        }
        let mut report = GenerativeReport {
            spec: spec.clone(),
            kernel,
            seed,
            n,
            levels,
            level_sets,
            reference,
            train_points,
            prior,
            last: None,
            ideal: None,
        };
        // The ideal denoiser's samples (for a mixture): the floor of every evaluation, and a
        // panel of the report, so a resumed run computes them too.
        if let Some(mix) = &data.mixture {
            let aug = report.kernel.aug;
            let mut den = |x: &[f64], sigma: f64, out: &mut [f64]| mix.denoise(aug, sigma, x, out);
            report.ideal = Some(report.sample(&mut den));
        }
        report
    }

    fn compare(&self, samples: &[f64]) -> metrics::Quality {
        let e = &self.spec.eval;
        // The same directions at every evaluation, so SWD moves only with the samples.
        let mut rng = Rng::stream(self.seed, "denoise-slices");
        metrics::compare(
            samples,
            &self.reference,
            self.n,
            &e.bandwidths,
            e.slices,
            &mut rng,
        )
    }

    fn push_quality(rows: &mut Vec<MetricRow>, step: u64, who: &str, q: metrics::Quality) {
        rows.push(metric(step, &format!("{who}_mmd"), q.mmd));
        rows.push(metric(step, &format!("{who}_mmd_unbiased"), q.mmd_unbiased));
        rows.push(metric(step, &format!("{who}_swd"), q.swd));
        rows.push(metric(step, &format!("{who}_energy"), q.energy));
    }

    /// Runs the sampler from the fixed prior draws with `denoise`; returns the samples and the
    /// kept trajectories `[levels, T, N]`.
    fn sample(&self, denoise: &mut sampler::DenoiseFn<'_>) -> (Vec<f64>, Vec<f64>) {
        let s = &self.spec.sampler;
        let sigmas = sampler::schedule(s);
        let mut x = self.prior.clone();
        let mut keep = Vec::new();
        // Injected noise (α > 0) from its own stream, the same at every evaluation.
        let mut rng = Rng::stream(self.seed, "denoise-sampler-noise");
        let t = self.spec.eval.trajectories;
        sampler::sample(s, &sigmas, self.n, &mut x, denoise, &mut rng, t, &mut keep);
        (x, keep)
    }

    /// Step 0, once: the levels, the ideal denoiser's losses, and the reference comparisons.
    pub(crate) fn start(&mut self, rows: &mut Vec<MetricRow>) {
        for (l, &sigma) in self.levels.iter().enumerate() {
            rows.push(metric(0, &format!("sigma_level_l{l}"), sigma));
            let set = &self.level_sets[l];
            if let Some(ideal) = &set.ideal {
                let loss = weighted_mse(ideal, &set.clean, sigma, self.spec.sigma_data, self.n);
                rows.push(metric(0, &format!("sigma_ideal_l{l}"), loss));
            }
        }
        let (_, var) = moments(&self.train_points);
        rows.push(metric(0, "data_std", var.sqrt()));
        // The sample sizes every metric below rests on (the reference is capped by the data).
        rows.push(metric(
            0,
            "sample_count",
            (self.prior.len() / self.n) as f64,
        ));
        rows.push(metric(
            0,
            "reference_count",
            (self.reference.len() / self.n) as f64,
        ));
        Self::push_quality(rows, 0, "prior", self.compare(&self.prior));
        Self::push_quality(rows, 0, "data", self.compare(&self.train_points));
        if let Some((samples, _)) = &self.ideal {
            Self::push_quality(rows, 0, "ideal", self.compare(samples));
        }
    }

    /// At each evaluation: the loss and excess per level, and the samples' quality.
    pub(crate) fn after_eval<F: Float>(
        &mut self,
        step: u64,
        model: &mut dyn Model<F>,
        rows: &mut Vec<MetricRow>,
    ) {
        let sd = self.spec.sigma_data;
        for (l, &sigma) in self.levels.iter().enumerate() {
            let LevelSet {
                clean,
                noisy,
                ideal,
            } = &self.level_sets[l];
            let mut out = vec![0.0; noisy.len()];
            model.denoise(noisy, sigma, &mut out);
            let loss = weighted_mse(&out, clean, sigma, sd, self.n);
            rows.push(metric(step, &format!("sigma_loss_l{l}"), loss));
            if let Some(ideal) = ideal {
                let excess = weighted_mse(&out, ideal, sigma, sd, self.n);
                rows.push(metric(step, &format!("sigma_excess_l{l}"), excess));
            }
        }
        let mut den = |x: &[f64], sigma: f64, out: &mut [f64]| {
            model.denoise(x, sigma, out);
        };
        let (samples, traj) = self.sample(&mut den);
        // A diverged network yields non-finite samples: recorded as NaN, not compared.
        let q = if samples.iter().all(|v| v.is_finite()) {
            self.compare(&samples)
        } else {
            metrics::Quality {
                mmd: f64::NAN,
                mmd_unbiased: f64::NAN,
                swd: f64::NAN,
                energy: f64::NAN,
            }
        };
        Self::push_quality(rows, step, "sample", q);
        self.last = Some((samples, traj));
    }

    /// Writes the last samples, their trajectories, the reference points, the prior draws and
    /// (for a mixture) the ideal denoiser's samples, all f64.
    pub(crate) fn save(&self, path: &Path) -> Result<(), Error> {
        let n = self.n;
        let sigmas = sampler::schedule(&self.spec.sampler);
        let t = self.spec.eval.trajectories;
        let bytes = |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let mut tensors = vec![
            (
                "reference".to_string(),
                Dtype::F64,
                vec![self.reference.len() / n, n],
                bytes(&self.reference),
            ),
            (
                "prior".to_string(),
                Dtype::F64,
                vec![self.prior.len() / n, n],
                bytes(&self.prior),
            ),
            (
                "sigmas".to_string(),
                Dtype::F64,
                vec![sigmas.len()],
                bytes(&sigmas),
            ),
        ];
        let mut add = |name: &str, (samples, traj): &(Vec<f64>, Vec<f64>)| {
            tensors.push((
                name.to_string(),
                Dtype::F64,
                vec![samples.len() / n, n],
                bytes(samples),
            ));
            tensors.push((
                format!("{name}_trajectory"),
                Dtype::F64,
                vec![sigmas.len(), t, n],
                bytes(traj),
            ));
        };
        if let Some(s) = &self.last {
            add("samples", s);
        }
        if let Some(s) = &self.ideal {
            add("ideal", s);
        }
        crate::interop::write(tensors, path, None)
    }
}

/// Held-out points perturbed at one level, `[P, N]` each.
struct LevelSet {
    clean: Vec<f64>,
    noisy: Vec<f64>,
    /// The ideal denoiser's output (Gaussian mixtures only).
    ideal: Option<Vec<f64>>,
}

/// EDM's weighted loss at one level: `λ(σ)·mean over rows of ‖a − b‖²/N`, `λ = 1/c_out²`.
fn weighted_mse(a: &[f64], b: &[f64], sigma: f64, sigma_data: f64, n: usize) -> f64 {
    let (_, c_out, _, _) = precondition(sigma, sigma_data);
    let rows = (a.len() / n).max(1);
    let sq: f64 = a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum();
    sq / (rows * n) as f64 / (c_out * c_out)
}

/// Mean and variance of all values.
fn moments(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    (
        mean,
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n,
    )
}
