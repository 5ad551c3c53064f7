//! The MLP's own observables: its pre-activations, activations and activation/norm parameters
//! per hidden layer (`layer` = hidden layer `l`), and the mean-field prediction beside them.

use crate::engine::ops;
use crate::engine::Float;
use crate::model::{Denoiser, Mlp, Role};
use crate::store::MetricRow;

use super::{row, Ctx, Observable};

/// The MLP behind the context: the model itself, or a denoiser's network (these observables are
/// registered for the MLP and the denoiser only).
fn mlp<'a, F: Float>(c: &Ctx<'a, F>) -> &'a Mlp<F> {
    let any = c.model.as_any();
    match any.downcast_ref::<Mlp<F>>() {
        Some(m) => m,
        None => {
            &denoiser(c)
                .expect("registered for the MLP and the denoiser only")
                .net
        }
    }
}

fn denoiser<'a, F: Float>(c: &Ctx<'a, F>) -> Option<&'a Denoiser<F>> {
    c.model.as_any().downcast_ref::<Denoiser<F>>()
}

/// The step's input batch `[rows, input]`.
fn input<'a, F: Float>(c: &Ctx<'a, F>) -> &'a [F] {
    match *c.batch {
        crate::model::Batch::Rows { x, .. } => x,
        // A denoiser's network reads `[c_in·x, noise features]`, which the model keeps.
        crate::model::Batch::Denoise { rows, .. } => match denoiser(c) {
            Some(d) => &d.input[..rows * d.net.dims[0]],
            None => &[],
        },
        crate::model::Batch::Tokens { .. } | crate::model::Batch::Prompts { .. } => &[],
    }
}

/// `preact_mean`, `preact_std`, `preact_m2` (second moment, the mean-field `q^l`) of `z = x·Wᵀ + b`.
pub(super) struct PreActivation;
impl<F: Float> Observable<F> for PreActivation {
    fn name(&self) -> &'static str {
        "preact"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = mlp(c);
        for l in 0..m.depth() {
            let z = ops::moments(&m.bufs[l].pre[..m.rows * m.dims[l + 1]]);
            out.push(row(c.step, Some(l), "preact_mean", z.mean));
            out.push(row(c.step, Some(l), "preact_std", z.std));
            out.push(row(c.step, Some(l), "preact_m2", z.mean_sq));
        }
    }
}

/// `act_mean`, `act_std` of each hidden layer's output, and `act_abs`, the mean |value| of each
/// layer's output, the readout's (`layer` = depth) included: the coordinate size a coordinate
/// check compares across widths (Yang et al. 2022, Tensor Programs V, §D).
pub(super) struct ActivationStats;
impl<F: Float> Observable<F> for ActivationStats {
    fn name(&self) -> &'static str {
        "act"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = mlp(c);
        for l in 0..m.depth() {
            let h = ops::moments(m.layer_output(l));
            out.push(row(c.step, Some(l), "act_mean", h.mean));
            out.push(row(c.step, Some(l), "act_std", h.std));
            out.push(row(c.step, Some(l), "act_abs", h.mean_abs));
        }
        let y = ops::moments(&m.output[..m.rows * m.output_dim()]);
        out.push(row(c.step, Some(m.depth()), "act_abs", y.mean_abs));
    }
}

/// `frac_dead` (relu family: `f(u) ≤ 0`) or `frac_saturated` (tanh/sigmoid: within 1% of the
/// bound), over all units and samples of the batch; plus `dead_units` / `saturated_units`, the
/// fraction of neurons inactive on every sample.
pub(super) struct Inactive;
impl<F: Float> Observable<F> for Inactive {
    fn name(&self) -> &'static str {
        "inactive"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = mlp(c);
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
            let active_below = m.activation.surely_active_below();
            for r in u.chunks_exact(width) {
                for j in 0..width {
                    let x = r[j].f64() - shift[j];
                    // NaN fails both tests, as `is_inactive(eval(NaN))` does.
                    let off =
                        x.abs() >= active_below && m.activation.is_inactive(m.activation.eval(x));
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

/// Learned or fixed a, b, c of the biased activation: `act_a` (value, or mean over neurons) and,
/// per neuron, `act_a_std`.
pub(super) struct ActParams;
impl<F: Float> Observable<F> for ActParams {
    fn name(&self) -> &'static str {
        "act_params"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let names = [
            (Role::ActA, "act_a"),
            (Role::ActB, "act_b"),
            (Role::ActC, "act_c"),
        ];
        by_role(c, &names, out);
    }
}

/// Normalization parameters: `norm_alpha` (DyT), `norm_weight`, `norm_bias` (mean over the
/// width, with `_std`).
pub(super) struct NormParams;
impl<F: Float> Observable<F> for NormParams {
    fn name(&self) -> &'static str {
        "norm_params"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let names = [
            (Role::NormAlpha, "norm_alpha"),
            (Role::NormWeight, "norm_weight"),
            (Role::NormBias, "norm_bias"),
        ];
        by_role(c, &names, out);
    }
}

/// The parameters whose role `names` lists, in parameter order, each under its name.
fn by_role<F: Float>(c: &Ctx<'_, F>, names: &[(Role, &str)], out: &mut Vec<MetricRow>) {
    for p in &mlp(c).params {
        if let Some((_, name)) = names.iter().find(|(r, _)| *r == p.role) {
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

/// At step 0 only: the mean-field prediction `q_theory` of each hidden layer's pre-activation
/// second moment (Poole et al. 2016), iterated from the measured input second moment with the
/// init's σ_w², σ_b² (`nn::init::variances`) and the activation's initial a, b, c, and
/// `q_ratio = preact_m2 / q_theory`. At finite width the ratio scatters around 1 by about
/// `√(2/width)` per layer. Not recorded for nets with a norm (the theory has none).
pub(super) struct TheoryQ;
impl<F: Float> Observable<F> for TheoryQ {
    fn name(&self) -> &'static str {
        "theory"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = mlp(c);
        if c.step != 0 || m.norm != crate::nn::norm::Norm::None || input(c).is_empty() {
            return;
        }
        let act = &m.act_spec;
        let phi = crate::theory::meanfield::Phi {
            act: m.activation,
            a: act.a.init,
            b: act.b.init,
            c: act.c.init,
        };
        let mut q = ops::sum_squares(input(c)) / input(c).len() as f64;
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
    use super::super::registry;
    use super::*;
    use crate::engine::Rng;
    use crate::model::Batch;
    use crate::nn::activation::Activation;
    use crate::nn::init::Init;
    use crate::nn::norm::Mode;
    use crate::spec::Family;
    use crate::spec::{ActParamSpec, BiasedActSpec, MlpSpec};
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
        let spec = MlpSpec {
            width: 512,
            depth: 4,
            activation: Activation::Tanh,
            act,
            init: Init::MeanField,
            sigma_w2: 1.7,
            sigma_b2: 0.1,
            ..MlpSpec::default()
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
            batch: &Batch::Rows {
                x: &x,
                y: &[],
                rows: 32,
            },
        };
        let mut rows = Vec::new();
        registry::<f64>(&["theory".into()], Family::Mlp)[0].observe(&ctx, &mut rows);
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
        registry::<f64>(&["theory".into()], Family::Mlp)[0].observe(&later, &mut rows);
        assert!(rows.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::super::registry;
    use super::*;
    use crate::engine::Rng;
    use crate::model::Batch;
    use crate::nn::activation::Activation;
    use crate::nn::norm::Mode;
    use crate::spec::Family;
    use crate::spec::MlpSpec;

    fn setup(act: Activation) -> (Mlp<f64>, Vec<f64>) {
        let spec = MlpSpec {
            width: 6,
            depth: 2,
            activation: act,
            ..MlpSpec::default()
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
            batch: &Batch::Rows {
                x: &x,
                y: &[],
                rows: 5,
            },
        };
        let mut rows = Vec::new();
        registry::<f64>(
            &super::super::valid(crate::spec::Family::Mlp)
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
            Family::Mlp,
        )
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
            batch: &Batch::Rows {
                x: &x,
                y: &[],
                rows: 5,
            },
        };
        let mut rows = Vec::new();
        for o in registry::<f64>(
            &["inactive".into(), "grad_norm".into(), "update_ratio".into()],
            Family::Mlp,
        ) {
            o.observe(&ctx, &mut rows);
        }
        assert_eq!(get(&rows, "frac_dead", Some(0)), dead);
        // Reported gradients are the unclipped ones: the stored (clipped) norm / coef.
        assert!((get(&rows, "grad_norm", None) - gnorm / 0.5).abs() < 1e-12);
        assert!((get(&rows, "update_ratio", Some(0)) - 0.5 / w0_norm).abs() < 1e-12);
        assert_eq!(get(&rows, "update_ratio", Some(1)), 0.0);
    }
}
