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
    MetricRow {
        step,
        layer: layer.map(|l| l as u32),
        name: name.to_string(),
        value,
    }
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
    all.into_iter()
        .filter(|o| names.iter().any(|n| n == o.name()))
        .collect()
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
            out.push(row(
                c.step,
                Some(l),
                "preact_m2",
                ops::sum_squares(z) / z.len().max(1) as f64,
            ));
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
/// bound), over all units and samples of the batch; plus `dead_units` / `saturated_units`, the
/// fraction of neurons inactive on every sample.
struct Inactive;
impl<F: Float> Observable<F> for Inactive {
    fn name(&self) -> &'static str {
        "inactive"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = c.model;
        let Some(kind) = m.activation.inactive_kind() else {
            return;
        };
        for l in 0..m.depth() {
            let width = m.dims[l + 1];
            let u = m.act_input(l);
            let shift: Vec<f64> = match m.hidden[l].act {
                Some(idx) => {
                    let b = &m.params[idx[1]].value;
                    (0..width)
                        .map(|j| b[if b.len() == 1 { 0 } else { j }].f64())
                        .collect()
                }
                None => vec![0.0; width],
            };
            let mut inactive = 0usize;
            let mut always = vec![true; width];
            for r in u.chunks_exact(width) {
                for j in 0..width {
                    let off = m
                        .activation
                        .is_inactive(m.activation.eval(r[j].f64() - shift[j]));
                    inactive += off as usize;
                    always[j] &= off;
                }
            }
            let total = u.len().max(1) as f64;
            out.push(row(
                c.step,
                Some(l),
                kind.metric_name(),
                inactive as f64 / total,
            ));
            let units = always.iter().filter(|&&a| a).count() as f64 / width as f64;
            out.push(row(c.step, Some(l), kind.units_metric_name(), units));
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
            let delta: f64 = p
                .value
                .iter()
                .zip(before)
                .map(|(a, b)| (a.f64() - b.f64()).powi(2))
                .sum();
            let norm = ops::sum_squares(before).sqrt();
            out.push(row(
                c.step,
                Some(p.layer),
                "update_ratio",
                delta.sqrt() / norm,
            ));
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

fn scalar_or_stats<F: Float>(
    step: u64,
    layer: usize,
    name: &str,
    v: &[F],
    out: &mut Vec<MetricRow>,
) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;
    use crate::nn::activation::Activation;
    use crate::nn::norm::Mode;
    use crate::spec::ModelSpec;

    fn setup(act: Activation) -> (Mlp<f64>, Vec<f64>) {
        let spec = ModelSpec {
            width: 6,
            depth: 2,
            activation: act,
            ..ModelSpec::default()
        };
        let mut m = Mlp::<f64>::new(&spec, 3, 2, 5, &mut Rng::new(1));
        let mut rng = Rng::new(2);
        let x: Vec<f64> = (0..15).map(|_| rng.normal()).collect();
        m.forward(&x, 5, Mode::Train);
        (m, x)
    }

    fn get(rows: &[MetricRow], name: &str, layer: Option<u32>) -> f64 {
        rows.iter()
            .find(|r| r.name == name && r.layer == layer)
            .unwrap_or_else(|| panic!("no {name} {layer:?}"))
            .value
    }

    /// Pre-activation statistics equal a naive recomputation of `z = x·Wᵀ + b` for layer 0.
    #[test]
    fn preact_matches_naive_recomputation() {
        let (m, x) = setup(Activation::Tanh);
        let before: Vec<Vec<f64>> = m.params.iter().map(|p| p.value.clone()).collect();
        let ctx = Ctx {
            step: 7,
            model: &m,
            before: &before,
            lr: 0.1,
            clip_coef: 1.0,
        };
        let mut rows = Vec::new();
        registry::<f64>(&ALL.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .iter()
            .for_each(|o| o.observe(&ctx, &mut rows));
        let (w, b) = (&m.params[0].value, &m.params[1].value);
        let mut z = Vec::new();
        for r in 0..5 {
            for j in 0..6 {
                z.push(b[j] + (0..3).map(|k| x[r * 3 + k] * w[j * 3 + k]).sum::<f64>());
            }
        }
        let mean = z.iter().sum::<f64>() / 30.0;
        let m2 = z.iter().map(|v| v * v).sum::<f64>() / 30.0;
        assert!((get(&rows, "preact_mean", Some(0)) - mean).abs() < 1e-12);
        assert!((get(&rows, "preact_m2", Some(0)) - m2).abs() < 1e-12);
        assert!((get(&rows, "preact_std", Some(0)) - (m2 - mean * mean).sqrt()).abs() < 1e-12);
        // tanh saturation: no |tanh| > 0.99 at these small pre-activations unless z is large.
        let sat = z.iter().filter(|v| v.tanh().abs() > 0.99).count() as f64 / 30.0;
        assert_eq!(get(&rows, "frac_saturated", Some(0)), sat);
        assert_eq!(get(&rows, "lr", None), 0.1);
        assert!(rows.iter().all(|r| r.step == 7));
        // No update happened: every update ratio is exactly 0.
        assert!(rows
            .iter()
            .filter(|r| r.name == "update_ratio")
            .all(|r| r.value == 0.0));
    }

    #[test]
    fn relu_dead_fraction_and_clipped_grad_norm() {
        let (mut m, x) = setup(Activation::Relu);
        let z0: Vec<f64> = m.bufs[0].pre[..30].to_vec();
        let dead = z0.iter().filter(|v| **v <= 0.0).count() as f64 / 30.0;
        m.d_output[..10].fill(0.3);
        m.backward(&x);
        let gnorm: f64 = m
            .params
            .iter()
            .map(|p| p.grad.iter().map(|g| g * g).sum::<f64>())
            .sum::<f64>()
            .sqrt();
        let before: Vec<Vec<f64>> = m.params.iter().map(|p| p.value.clone()).collect();
        m.params[0].value[0] += 0.5;
        let w0_norm: f64 = before[0].iter().map(|v| v * v).sum::<f64>().sqrt();
        let ctx = Ctx {
            step: 0,
            model: &m,
            before: &before,
            lr: 0.1,
            clip_coef: 0.5,
        };
        let mut rows = Vec::new();
        for o in registry::<f64>(&["inactive".into(), "grad_norm".into(), "update_ratio".into()]) {
            o.observe(&ctx, &mut rows);
        }
        assert_eq!(get(&rows, "frac_dead", Some(0)), dead);
        // Reported gradients are the unclipped ones: the stored (clipped) norm / coef.
        assert!((get(&rows, "grad_norm", None) - gnorm / 0.5).abs() < 1e-12);
        assert!((get(&rows, "update_ratio", Some(0)) - 0.5 / w0_norm).abs() < 1e-12);
        assert_eq!(get(&rows, "update_ratio", Some(1)), 0.0);
    }
}
