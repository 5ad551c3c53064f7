//! Observables: named reducers over the model's buffers, gradients and parameters, each emitting
//! tidy rows `(step, layer, name, value)`. A new observable is one struct and one line in
//! [`registry`]; the training loop never changes.
//!
//! At a logged step the context holds: the activations and gradients of that step's batch (before
//! clipping: `grad_norm` reports the raw gradient), and the parameters after the update (the
//! update-to-weight ratio compares them with the snapshot taken before it).

use crate::engine::ops;
use crate::engine::Float;
use crate::model::{Mlp, Role};
use crate::store::MetricRow;

/// The names of every observable, in recording order (valid values of `observe.observables`).
pub const ALL: &[&str] = &[
    "preact",
    "act",
    "inactive",
    "grad_norm",
    "weight_norm",
    "update_ratio",
    "act_params",
    "norm_params",
    "lr",
];

/// What an observable may read at a logged step.
pub struct Ctx<'a, F> {
    pub step: u64,
    pub model: &'a Mlp<F>,
    /// Parameter values before this step's update (same order as `model.params`).
    pub before: &'a [Vec<F>],
    pub lr: f64,
    /// The factor clipping applied to the gradients (1 when it did nothing).
    pub clip_coef: f64,
}

pub trait Observable<F: Float> {
    fn name(&self) -> &'static str;
    fn observe(&self, ctx: &Ctx<'_, F>, out: &mut Vec<MetricRow>);
}

fn row(step: u64, layer: Option<usize>, name: &str, value: f64) -> MetricRow {
    MetricRow { step, layer: layer.map(|l| l as u32), name: name.to_string(), value }
}

/// The observables named in the spec, in [`ALL`]'s order.
pub fn registry<F: Float>(names: &[String]) -> Vec<Box<dyn Observable<F>>> {
    let all: Vec<Box<dyn Observable<F>>> = vec![
        Box::new(PreActivation),
        Box::new(ActivationStats),
        Box::new(Inactive),
        Box::new(GradNorm),
        Box::new(WeightNorm),
        Box::new(UpdateRatio),
        Box::new(ActParams),
        Box::new(NormParams),
        Box::new(LearningRate),
    ];
    all.into_iter().filter(|o| names.iter().any(|n| n == o.name())).collect()
}

/// `preact_mean`, `preact_std`, `preact_m2` (second moment, the mean-field `q^l`) of `z = x·Wᵀ + b`.
struct PreActivation;
impl<F: Float> Observable<F> for PreActivation {
    fn name(&self) -> &'static str {
        "preact"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = c.model;
        for l in 0..m.depth() {
            let z = &m.bufs[l].pre[..m.rows * m.dims[l + 1]];
            let (mean, std) = ops::mean_std(z);
            out.push(row(c.step, Some(l), "preact_mean", mean));
            out.push(row(c.step, Some(l), "preact_std", std));
            out.push(row(c.step, Some(l), "preact_m2", ops::sum_squares(z) / z.len().max(1) as f64));
        }
    }
}

/// `act_mean`, `act_std` of each hidden layer's output.
struct ActivationStats;
impl<F: Float> Observable<F> for ActivationStats {
    fn name(&self) -> &'static str {
        "act"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        for l in 0..c.model.depth() {
            let (mean, std) = ops::mean_std(c.model.layer_output(l));
            out.push(row(c.step, Some(l), "act_mean", mean));
            out.push(row(c.step, Some(l), "act_std", std));
        }
    }
}

/// `frac_dead` (relu family: `f(u) ≤ 0`) or `frac_saturated` (tanh/sigmoid: within 1% of the
/// bound), over all units and samples of the batch; plus `dead_units`, the fraction of neurons
/// inactive on every sample.
struct Inactive;
impl<F: Float> Observable<F> for Inactive {
    fn name(&self) -> &'static str {
        "inactive"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = c.model;
        let Some(kind) = m.activation.inactive_kind() else { return };
        for l in 0..m.depth() {
            let width = m.dims[l + 1];
            let u = m.act_input(l);
            let shift: Vec<f64> = match m.hidden[l].act {
                Some(idx) => {
                    let b = &m.params[idx[1]].value;
                    (0..width).map(|j| b[if b.len() == 1 { 0 } else { j }].f64()).collect()
                }
                None => vec![0.0; width],
            };
            let mut inactive = 0usize;
            let mut always = vec![true; width];
            for r in u.chunks_exact(width) {
                for j in 0..width {
                    let off = m.activation.is_inactive(m.activation.eval(r[j].f64() - shift[j]));
                    inactive += off as usize;
                    always[j] &= off;
                }
            }
            let total = u.len().max(1) as f64;
            out.push(row(c.step, Some(l), kind.metric_name(), inactive as f64 / total));
            let dead_units = always.iter().filter(|&&a| a).count() as f64 / width as f64;
            out.push(row(c.step, Some(l), "dead_units", dead_units));
        }
    }
}

/// `grad_norm` of each layer's weight matrix, and the global `grad_norm` over all trainable
/// parameters — both before clipping.
struct GradNorm;
impl<F: Float> Observable<F> for GradNorm {
    fn name(&self) -> &'static str {
        "grad_norm"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let unclip = 1.0 / c.clip_coef;
        let mut total = 0.0;
        for p in c.model.params.iter().filter(|p| p.trainable) {
            let s = ops::sum_squares(&p.grad);
            total += s;
            if p.role == Role::Weight {
                out.push(row(c.step, Some(p.layer), "grad_norm", s.sqrt() * unclip));
            }
        }
        out.push(row(c.step, None, "grad_norm", total.sqrt() * unclip));
    }
}

/// `weight_norm` (Frobenius) of each layer's weight matrix, and the global `weight_norm` over
/// all trainable parameters (the grokking view watches it).
struct WeightNorm;
impl<F: Float> Observable<F> for WeightNorm {
    fn name(&self) -> &'static str {
        "weight_norm"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let mut total = 0.0;
        for p in c.model.params.iter().filter(|p| p.trainable) {
            let s = ops::sum_squares(&p.value);
            total += s;
            if p.role == Role::Weight {
                out.push(row(c.step, Some(p.layer), "weight_norm", s.sqrt()));
            }
        }
        out.push(row(c.step, None, "weight_norm", total.sqrt()));
    }
}

/// `update_ratio = ‖ΔW‖ / ‖W_before‖` for each weight matrix.
struct UpdateRatio;
impl<F: Float> Observable<F> for UpdateRatio {
    fn name(&self) -> &'static str {
        "update_ratio"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        for (p, before) in c.model.params.iter().zip(c.before) {
            if p.role != Role::Weight || before.is_empty() {
                continue;
            }
            let delta: f64 = p.value.iter().zip(before).map(|(a, b)| (a.f64() - b.f64()).powi(2)).sum();
            let norm = ops::sum_squares(before).sqrt();
            out.push(row(c.step, Some(p.layer), "update_ratio", delta.sqrt() / norm));
        }
    }
}

/// Learned or fixed a, b, c of the biased activation: `act_a` (value, or mean over neurons) and,
/// per neuron, `act_a_std`.
struct ActParams;
impl<F: Float> Observable<F> for ActParams {
    fn name(&self) -> &'static str {
        "act_params"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        for p in &c.model.params {
            let name = match p.role {
                Role::ActA => "act_a",
                Role::ActB => "act_b",
                Role::ActC => "act_c",
                _ => continue,
            };
            scalar_or_stats(c.step, p.layer, name, &p.value, out);
        }
    }
}

/// Normalization parameters: `norm_alpha` (DyT), `norm_weight`, `norm_bias` (mean over the
/// width, with `_std`).
struct NormParams;
impl<F: Float> Observable<F> for NormParams {
    fn name(&self) -> &'static str {
        "norm_params"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        for p in &c.model.params {
            let name = match p.role {
                Role::NormAlpha => "norm_alpha",
                Role::NormWeight => "norm_weight",
                Role::NormBias => "norm_bias",
                _ => continue,
            };
            scalar_or_stats(c.step, p.layer, name, &p.value, out);
        }
    }
}

fn scalar_or_stats<F: Float>(step: u64, layer: usize, name: &str, v: &[F], out: &mut Vec<MetricRow>) {
    if v.len() == 1 {
        out.push(row(step, Some(layer), name, v[0].f64()));
    } else {
        let (mean, std) = ops::mean_std(v);
        out.push(row(step, Some(layer), name, mean));
        out.push(row(step, Some(layer), &format!("{name}_std"), std));
    }
}

/// The learning rate used at the step.
struct LearningRate;
impl<F: Float> Observable<F> for LearningRate {
    fn name(&self) -> &'static str {
        "lr"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        out.push(row(c.step, None, "lr", c.lr));
    }
}
