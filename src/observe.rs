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
    "theory",
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
    /// The step's input batch `[rows, input]`.
    pub input: &'a [F],
}

pub trait Observable<F: Float> {
    fn name(&self) -> &'static str;
    fn observe(&self, ctx: &Ctx<'_, F>, out: &mut Vec<MetricRow>);
}

/// One tidy row: `layer` `None` for a whole-model value.
pub(crate) fn row(step: u64, layer: Option<usize>, name: &str, value: f64) -> MetricRow {
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
        Box::new(TheoryQ),
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
            input: &x,
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
            input: &x,
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

/// At step 0 only: the mean-field prediction `q_theory` of each hidden layer's pre-activation
/// second moment (Poole et al. 2016), iterated from the measured input second moment with the
/// init's σ_w², σ_b² (`nn::init::variances`) and the activation's initial a, b, c, and
/// `q_ratio = preact_m2 / q_theory`. At finite width the ratio scatters around 1 by about
/// `√(2/width)` per layer. Not recorded for nets with a norm (the theory has none).
struct TheoryQ;
impl<F: Float> Observable<F> for TheoryQ {
    fn name(&self) -> &'static str {
        "theory"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = c.model;
        if c.step != 0 || m.norm != crate::nn::norm::Norm::None || c.input.is_empty() {
            return;
        }
        let act = &m.act_spec;
        let phi = crate::theory::meanfield::Phi {
            act: m.activation,
            a: act.a.init,
            b: act.b.init,
            c: act.c.init,
        };
        let mut q = ops::sum_squares(c.input) / c.input.len() as f64;
        for l in 0..m.depth() {
            let (sw2, sb2) = crate::nn::init::variances(&m.init, m.dims[l + 1], m.dims[l]);
            q = if l == 0 {
                sw2 * q + sb2
            } else {
                match crate::theory::meanfield::MeanField::new(phi, sw2, sb2) {
                    Ok(mf) => mf.length_map(q),
                    Err(_) => return,
                }
            };
            let z = &m.bufs[l].pre[..m.rows * m.dims[l + 1]];
            let measured = ops::sum_squares(z) / z.len().max(1) as f64;
            out.push(row(c.step, Some(l), "q_theory", q));
            out.push(row(c.step, Some(l), "q_ratio", measured / q));
        }
    }
}

#[cfg(test)]
mod theory_tests {
    use super::*;
    use crate::engine::Rng;
    use crate::nn::activation::Activation;
    use crate::nn::init::Init;
    use crate::nn::norm::Mode;
    use crate::spec::{ActParamSpec, BiasedActSpec, ModelSpec};
    use crate::theory::meanfield::{MeanField, Phi};

    /// `q_theory` is the length map iterated from the measured input moment with the init's
    /// variances, and `q_ratio` the measured/predicted ratio — close to 1 at width 512.
    #[test]
    fn theory_rows_at_step_zero() {
        let act = BiasedActSpec {
            b: ActParamSpec {
                init: 0.3,
                ..ActParamSpec::zero()
            },
            ..BiasedActSpec::default()
        };
        let spec = ModelSpec {
            width: 512,
            depth: 4,
            activation: Activation::Tanh,
            act,
            init: Init::MeanField,
            sigma_w2: 1.7,
            sigma_b2: 0.1,
            ..ModelSpec::default()
        };
        let mut m = Mlp::<f64>::new(&spec, 64, 1, 32, &mut Rng::new(3));
        let mut rng = Rng::new(4);
        let x: Vec<f64> = (0..32 * 64).map(|_| 2.0 * rng.normal()).collect();
        m.forward(&x, 32, Mode::Train);
        let before: Vec<Vec<f64>> = Vec::new();
        let ctx = Ctx {
            step: 0,
            model: &m,
            before: &before,
            lr: 0.1,
            clip_coef: 1.0,
            input: &x,
        };
        let mut rows = Vec::new();
        registry::<f64>(&["theory".into()])[0].observe(&ctx, &mut rows);
        let x_m2 = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
        let mf = MeanField::new(
            Phi {
                act: Activation::Tanh,
                a: 1.0,
                b: 0.3,
                c: 0.0,
            },
            1.7,
            0.1,
        )
        .unwrap();
        let want = mf.q_sequence(1.7 * x_m2 + 0.1, 3);
        for l in 0..4u32 {
            let q = rows
                .iter()
                .find(|r| r.name == "q_theory" && r.layer == Some(l))
                .unwrap()
                .value;
            assert!(
                (q - want[l as usize]).abs() < 1e-12 * want[l as usize],
                "layer {l}"
            );
            let ratio = rows
                .iter()
                .find(|r| r.name == "q_ratio" && r.layer == Some(l))
                .unwrap()
                .value;
            assert!((ratio - 1.0).abs() < 0.15, "layer {l}: ratio {ratio}");
        }
        // Only at step 0.
        let later = Ctx { step: 1, ..ctx };
        let mut rows = Vec::new();
        registry::<f64>(&["theory".into()])[0].observe(&later, &mut rows);
        assert!(rows.is_empty());
    }
}
