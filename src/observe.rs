//! Observables: named reducers over a model's buffers, gradients and parameters, each emitting
//! tidy rows `(step, layer, name, value)`. One registry ([`registry`]) holds them all, shared
//! ones first written once for every model, then each family's own (`observe/mlp.rs`,
//! `observe/gpt.rs`); a new observable is one struct and one line in `entries`, and the
//! training loop never changes.
//!
//! At a logged step the context holds: the activations and gradients of that step's batch (before
//! clipping: `grad_norm` reports the raw gradient), and the parameters after the update (the
//! update-to-weight ratio compares them with the snapshot taken before it).
//!
//! What `layer` means, for every model: the model's layer index, the unit its parameters carry
//! ([`crate::model::Param::layer`]): an MLP's hidden layer `l` (`0 … depth−1`) and its readout
//! (`depth`); a GPT's block `l` (`0 … n_layer−1`) and its output side, final norm and head
//! (`n_layer`). Embedding tables have no layer: their rows are named `*_embedding`. Rows without
//! a layer are whole-model values.

mod gpt;
mod mlp;
mod unet;

use crate::engine::ops;
use crate::engine::Float;
use crate::model::{Batch, Model, Param, Role};
use crate::spec::Family;
use crate::store::MetricRow;

/// What an observable may read at a logged step.
pub struct Ctx<'a, F> {
    pub step: u64,
    pub model: &'a dyn Model<F>,
    /// The step's batch (the model's buffers hold its forward and backward passes).
    pub batch: &'a Batch<'a, F>,
    /// Parameter values before this step's update (same order as `model.params()`).
    pub before: &'a [Vec<F>],
    pub lr: f64,
    /// The factor clipping applied to the gradients (1 when it did nothing).
    pub clip_coef: f64,
}

pub trait Observable<F: Float> {
    fn name(&self) -> &'static str;
    /// Rows at a logged step.
    fn observe(&self, ctx: &Ctx<'_, F>, out: &mut Vec<MetricRow>);
    /// Every step's training loss, logged or not (for events between logged steps).
    fn every_step(&mut self, _step: u64, _loss: f64, _out: &mut Vec<MetricRow>) {}
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

const ALL: &[Family] = &[
    Family::Mlp,
    Family::Gpt,
    Family::Denoiser,
    Family::Unet,
    Family::Cnn,
];
/// The MLP's observables also read a denoiser's network (same rows, same meaning).
const MLP: &[Family] = &[Family::Mlp, Family::Denoiser];
const GPT: &[Family] = &[Family::Gpt];
const UNET: &[Family] = &[Family::Unet];

/// An observable's constructor.
type Make<F> = fn() -> Box<dyn Observable<F>>;

/// The registry, in recording order: each observable's name, the families it applies to, the
/// families that record it when `observe.observables` is left out, and its constructor. The
/// order of each family's default list is part of its resolved specs, and so of their run ids.
#[rustfmt::skip]
fn entries<F: Float>() -> [(&'static str, &'static [Family], &'static [Family], Make<F>); 17] {
    [
        ("preact", MLP, MLP, || Box::new(mlp::PreActivation)),
        ("act", MLP, MLP, || Box::new(mlp::ActivationStats)),
        ("inactive", MLP, MLP, || Box::new(mlp::Inactive)),
        ("resid_norm", GPT, GPT, || Box::new(gpt::ResidNorm)),
        ("attn_entropy", GPT, GPT, || Box::new(gpt::AttnEntropy)),
        ("attn_logit_max", GPT, GPT, || Box::new(gpt::AttnLogitMax)),
        ("logits", GPT, GPT, || Box::new(gpt::Logits)),
        // Not a default: listing it is a choice (and the resolved list is part of the run id).
        ("induction", GPT, &[], || Box::new(gpt::Induction)),
        ("grad_norm", ALL, ALL, || Box::new(GradNorm)),
        ("weight_norm", ALL, ALL, || Box::new(WeightNorm)),
        ("update_ratio", ALL, ALL, || Box::new(UpdateRatio)),
        ("act_params", MLP, MLP, || Box::new(mlp::ActParams)),
        ("norm_params", MLP, MLP, || Box::new(mlp::NormParams)),
        ("lr", ALL, ALL, || Box::new(LearningRate)),
        ("theory", MLP, MLP, || Box::new(mlp::TheoryQ)),
        ("loss_spike", ALL, GPT, || Box::<LossSpikes>::default()),
        ("channels", UNET, UNET, || Box::new(unet::Channels)),
    ]
}

/// The observables a family records when `observe.observables` is left out, in recording order.
pub fn defaults(family: Family) -> Vec<&'static str> {
    let e = entries::<f32>();
    e.into_iter()
        .filter(|e| e.2.contains(&family))
        .map(|e| e.0)
        .collect()
}

/// The valid values of `observe.observables` for a family.
pub fn valid(family: Family) -> Vec<&'static str> {
    let e = entries::<f32>();
    e.into_iter()
        .filter(|e| e.1.contains(&family))
        .map(|e| e.0)
        .collect()
}

/// The observables named in the spec that apply to `family` (validation refuses the others),
/// in recording order.
pub fn registry<F: Float>(names: &[String], family: Family) -> Vec<Box<dyn Observable<F>>> {
    let e = entries::<F>();
    e.into_iter()
        .filter(|e| e.1.contains(&family) && names.iter().any(|n| n == e.0))
        .map(|e| e.3())
        .collect()
}

/// The parameter groups the norm observables report: a layer's weight matrices
/// (`Some(layer)`), the embedding tables (`None`), and nothing else per group (biases, norm and
/// activation parameters count only in the whole-model value).
fn group<F>(p: &Param<F>) -> Option<Option<usize>> {
    match p.role {
        Role::Weight => Some(Some(p.layer)),
        Role::Embedding => Some(None),
        _ => None,
    }
}

/// Per layer (`name` at each layer with weight matrices), embeddings (`{name}_embedding`, when
/// the model has any) and, with `total`, the whole model (`name`, no layer): the square root of
/// `sq(i)` summed over each group's parameters `i`, every trainable parameter in the total.
fn norms_by_group<F: Float>(
    c: &Ctx<'_, F>,
    name: &str,
    total: bool,
    sq: &dyn Fn(usize) -> f64,
    scale: f64,
    out: &mut Vec<MetricRow>,
) {
    let params = c.model.params();
    let layers = params.iter().map(|p| p.layer + 1).max().unwrap_or(0);
    let mut by_layer: Vec<Option<f64>> = vec![None; layers];
    let (mut emb, mut all) = (None::<f64>, 0.0);
    for (i, p) in params.iter().enumerate().filter(|(_, p)| p.trainable) {
        let s = sq(i);
        all += s;
        match group(p) {
            Some(Some(l)) => *by_layer[l].get_or_insert(0.0) += s,
            Some(None) => *emb.get_or_insert(0.0) += s,
            None => {}
        }
    }
    for (l, s) in by_layer.into_iter().enumerate() {
        if let Some(s) = s {
            out.push(row(c.step, Some(l), name, s.sqrt() * scale));
        }
    }
    if let Some(s) = emb {
        out.push(row(
            c.step,
            None,
            &format!("{name}_embedding"),
            s.sqrt() * scale,
        ));
    }
    if total {
        out.push(row(c.step, None, name, all.sqrt() * scale));
    }
}

/// `grad_norm` of each layer's weight matrices and of the embeddings, and the global
/// `grad_norm` over all trainable parameters — all before clipping.
struct GradNorm;
impl<F: Float> Observable<F> for GradNorm {
    fn name(&self) -> &'static str {
        "grad_norm"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let p = c.model.params();
        let sq = |i: usize| ops::sum_squares(&p[i].grad);
        norms_by_group(c, "grad_norm", true, &sq, 1.0 / c.clip_coef, out);
    }
}

/// `weight_norm` (Frobenius) of each layer's weight matrices and of the embeddings, and the
/// global `weight_norm` over all trainable parameters (the grokking view watches it).
struct WeightNorm;
impl<F: Float> Observable<F> for WeightNorm {
    fn name(&self) -> &'static str {
        "weight_norm"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let p = c.model.params();
        let sq = |i: usize| ops::sum_squares(&p[i].value);
        norms_by_group(c, "weight_norm", true, &sq, 1.0, out);
    }
}

/// `update_ratio = ‖ΔW‖ / ‖W_before‖` of each layer's weight matrices, and of the embeddings
/// (`update_ratio_embedding`).
struct UpdateRatio;
impl<F: Float> Observable<F> for UpdateRatio {
    fn name(&self) -> &'static str {
        "update_ratio"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let p = c.model.params();
        if c.before.len() != p.len() {
            return;
        }
        let mut deltas = Vec::new();
        let delta = |i: usize| -> f64 {
            p[i].value
                .iter()
                .zip(&c.before[i])
                .map(|(a, b)| (a.f64() - b.f64()).powi(2))
                .sum()
        };
        norms_by_group(c, "update_ratio", false, &delta, 1.0, &mut deltas);
        let mut norms = Vec::new();
        let before = |i: usize| ops::sum_squares(&c.before[i]);
        norms_by_group(c, "update_ratio", false, &before, 1.0, &mut norms);
        for (mut d, w) in deltas.into_iter().zip(norms) {
            d.value /= w.value;
            out.push(d);
        }
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

/// Loss-spike events, at every step (logged or not): a training loss above [`FACTOR`] × the
/// median of the previous [`WINDOW`] losses is recorded as `loss_spike` = loss / median.
#[derive(Clone, Debug, Default)]
pub struct LossSpikes {
    recent: std::collections::VecDeque<f64>,
    sorted: Vec<f64>,
}

/// 2×: far above step-to-step noise of a healthy run, well below a divergence.
pub const FACTOR: f64 = 2.0;
/// 50 steps of history before any judgement.
pub const WINDOW: usize = 50;

impl LossSpikes {
    /// Feeds one loss; returns `Some(loss / median)` for a spike.
    pub fn push(&mut self, loss: f64) -> Option<f64> {
        let spike = (self.recent.len() == WINDOW).then(|| {
            self.sorted.clear();
            self.sorted.extend(self.recent.iter().copied());
            self.sorted.sort_by(|a, b| a.total_cmp(b));
            let median = self.sorted[WINDOW / 2];
            (loss > FACTOR * median && median > 0.0).then(|| loss / median)
        });
        if self.recent.len() == WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(loss);
        spike.flatten()
    }
}

impl<F: Float> Observable<F> for LossSpikes {
    fn name(&self) -> &'static str {
        "loss_spike"
    }
    fn observe(&self, _: &Ctx<'_, F>, _: &mut Vec<MetricRow>) {}
    fn every_step(&mut self, step: u64, loss: f64, out: &mut Vec<MetricRow>) {
        if let Some(ratio) = self.push(loss) {
            out.push(row(step, None, "loss_spike", ratio));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every registered name builds an observable of that name, names are unique, and each
    /// family's defaults are valid for it.
    #[test]
    #[rustfmt::skip]
    fn registry_is_consistent() {
        let e = entries::<f32>();
        for (i, (name, applies, default_for, make)) in e.iter().enumerate() {
            assert_eq!(make().name(), *name);
            assert!(e[..i].iter().all(|o| o.0 != *name), "{name} twice");
            assert!(default_for.iter().all(|f| applies.contains(f)), "{name}");
        }
        // The default lists the first release resolved (run ids hash them).
        assert_eq!(defaults(Family::Mlp), [
            "preact", "act", "inactive", "grad_norm", "weight_norm", "update_ratio",
            "act_params", "norm_params", "lr", "theory",
        ]);
        assert_eq!(defaults(Family::Gpt), [
            "resid_norm", "attn_entropy", "attn_logit_max", "logits", "grad_norm",
            "weight_norm", "update_ratio", "lr", "loss_spike",
        ]);
    }

    #[test]
    fn spikes_are_flagged_against_the_running_median() {
        let mut d = LossSpikes::default();
        for i in 0..WINDOW {
            assert_eq!(d.push(1.0 + 0.01 * (i % 3) as f64), None);
        }
        assert_eq!(d.push(1.9), None);
        let r = d.push(3.0).unwrap();
        assert!((r - 3.0 / 1.01).abs() < 1e-12, "{r}");
    }
}
