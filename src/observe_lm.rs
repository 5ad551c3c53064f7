//! Observables of the transformer: named reducers over [`Gpt`]'s buffers, gradients and
//! parameters, emitting the same tidy rows `(step, layer, name, value)` as [`crate::observe`].
//! Per-head quantities carry the head in the name (`attn_entropy_h2`) and the block in `layer`.
//!
//! Grouping of parameters: block `l` is layer `l`; the output side (final norm and head) is
//! layer `n_layer`, as the MLP's output layer is the last; the embeddings have their own names
//! (`*_embedding`, no layer). With a tied head, `wte` counts as an embedding.

use crate::engine::{ops, Float};
use crate::model::{Gpt, Role};
use crate::observe::row;
use crate::store::MetricRow;

/// The names of every LM observable, in recording order (valid `observe.observables` with
/// `[model.gpt]`).
pub const ALL: &[&str] = &[
    "resid_norm",
    "attn_entropy",
    "attn_logit_max",
    "logits",
    "grad_norm",
    "weight_norm",
    "update_ratio",
    "lr",
    "loss_spike",
];

/// What an observable may read at a logged step: the model after the step's forward and
/// backward passes (gradients before clipping ÷ `clip_coef`) and after its update.
pub struct LmCtx<'a, F> {
    pub step: u64,
    pub model: &'a Gpt<F>,
    /// Parameter values before this step's update.
    pub before: &'a [Vec<F>],
    pub lr: f64,
    pub clip_coef: f64,
}

/// The group of a parameter: `Some(layer)` or `None` for the embeddings.
fn group<F>(p: &crate::model::Param<F>) -> Option<usize> {
    (p.role != Role::Embedding).then_some(p.layer)
}

/// Records the observables named in `names` (in [`ALL`]'s order; `loss_spike` is the loop's).
pub fn observe<F: Float>(names: &[String], c: &LmCtx<'_, F>, out: &mut Vec<MetricRow>) {
    let on = |n: &str| names.iter().any(|x| x == n);
    let m = c.model;
    let (bt, seq) = (m.batch * m.seq, m.seq);
    let d = &m.dims;
    if on("resid_norm") {
        // Mean L2 norm of a token's residual vector entering each block (and leaving the last).
        for (l, x) in m.resid.iter().enumerate() {
            let mean = x[..bt * d.c]
                .chunks_exact(d.c)
                .map(|r| ops::sum_squares(r).sqrt())
                .sum::<f64>()
                / bt.max(1) as f64;
            out.push(row(c.step, Some(l), "resid_norm", mean));
        }
    }
    if on("attn_entropy") {
        // Mean over sequences and query positions of −Σ_j P_ij ln P_ij (nats; ln(i+1) is uniform).
        for (l, buf) in m.bufs.iter().enumerate() {
            for h in 0..d.h {
                let mut sum = 0.0;
                for b in 0..m.batch {
                    let p = &buf.att[(b * d.h + h) * seq * seq..(b * d.h + h + 1) * seq * seq];
                    for i in 0..seq {
                        sum -= p[i * seq..i * seq + i + 1]
                            .iter()
                            .map(|v| v.f64())
                            .filter(|&v| v > 0.0)
                            .map(|v| v * v.ln())
                            .sum::<f64>();
                    }
                }
                let n = (m.batch * seq).max(1) as f64;
                out.push(row(c.step, Some(l), &format!("attn_entropy_h{h}"), sum / n));
            }
        }
    }
    if on("attn_logit_max") {
        for (l, buf) in m.bufs.iter().enumerate() {
            for (h, v) in buf.logit_max.iter().enumerate() {
                out.push(row(
                    c.step,
                    Some(l),
                    &format!("attn_logit_max_h{h}"),
                    v.f64(),
                ));
            }
        }
    }
    if on("logits") {
        let z = &m.logits[..bt * d.vocab];
        let max = z.iter().fold(0.0f64, |a, v| a.max(v.f64().abs()));
        let norm = z
            .chunks_exact(d.vocab)
            .map(|r| ops::sum_squares(r).sqrt())
            .sum::<f64>()
            / bt.max(1) as f64;
        out.push(row(c.step, None, "logit_max", max));
        out.push(row(c.step, None, "logit_norm", norm));
    }
    let groups = d.n_layer + 1;
    let by_group = |f: &dyn Fn(usize) -> f64| -> (Vec<f64>, f64, f64) {
        let mut g = vec![0.0; groups];
        let (mut emb, mut total) = (0.0, 0.0);
        for (i, p) in m.params.iter().enumerate() {
            if !p.trainable {
                continue;
            }
            let s = f(i);
            total += s;
            match group(p) {
                Some(l) => g[l] += s,
                None => emb += s,
            }
        }
        (g, emb, total)
    };
    let emit = |out: &mut Vec<MetricRow>, name: &str, (g, emb, total): (Vec<f64>, f64, f64)| {
        for (l, v) in g.into_iter().enumerate() {
            out.push(row(c.step, Some(l), name, v.sqrt()));
        }
        out.push(row(c.step, None, &format!("{name}_embedding"), emb.sqrt()));
        out.push(row(c.step, None, name, total.sqrt()));
    };
    if on("grad_norm") {
        let unclip = 1.0 / (c.clip_coef * c.clip_coef);
        let sums = by_group(&|i| ops::sum_squares(&m.params[i].grad) * unclip);
        emit(out, "grad_norm", sums);
    }
    if on("weight_norm") {
        emit(
            out,
            "weight_norm",
            by_group(&|i| ops::sum_squares(&m.params[i].value)),
        );
    }
    if on("update_ratio") && !c.before.is_empty() {
        let (dg, de, dt) = by_group(&|i| {
            m.params[i]
                .value
                .iter()
                .zip(&c.before[i])
                .map(|(a, b)| (a.f64() - b.f64()).powi(2))
                .sum()
        });
        let (wg, we, wt) = by_group(&|i| ops::sum_squares(&c.before[i]));
        for l in 0..groups {
            out.push(row(c.step, Some(l), "update_ratio", (dg[l] / wg[l]).sqrt()));
        }
        out.push(row(
            c.step,
            None,
            "update_ratio_embedding",
            (de / we).sqrt(),
        ));
        out.push(row(c.step, None, "update_ratio", (dt / wt).sqrt()));
    }
    if on("lr") {
        out.push(row(c.step, None, "lr", c.lr));
    }
}

/// Loss-spike events: a training loss above `FACTOR` × the median of the previous `WINDOW`
/// losses is recorded as `loss_spike` = loss / median at its step (logged or not).
#[derive(Clone, Debug, Default)]
pub struct SpikeDetector {
    recent: std::collections::VecDeque<f64>,
    sorted: Vec<f64>,
}

impl SpikeDetector {
    /// 2×: far above step-to-step noise of a healthy run, well below a divergence.
    pub const FACTOR: f64 = 2.0;
    /// 50 steps of history before any judgement.
    pub const WINDOW: usize = 50;

    /// Feeds one loss; returns `Some(loss / median)` for a spike.
    pub fn push(&mut self, loss: f64) -> Option<f64> {
        let spike = (self.recent.len() == Self::WINDOW).then(|| {
            self.sorted.clear();
            self.sorted.extend(self.recent.iter().copied());
            self.sorted.sort_by(|a, b| a.total_cmp(b));
            let median = self.sorted[Self::WINDOW / 2];
            (loss > Self::FACTOR * median && median > 0.0).then(|| loss / median)
        });
        if self.recent.len() == Self::WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(loss);
        spike.flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;
    use crate::model::gpt::GptSpec;

    #[test]
    fn spikes_are_flagged_against_the_running_median() {
        let mut d = SpikeDetector::default();
        for i in 0..SpikeDetector::WINDOW {
            assert_eq!(d.push(1.0 + 0.01 * (i % 3) as f64), None);
        }
        assert_eq!(d.push(1.9), None);
        let r = d.push(3.0).unwrap();
        assert!((r - 3.0 / 1.01).abs() < 1e-12, "{r}");
    }

    /// Attention entropy of uniform attention is the mean of ln(i+1); resid_norm matches a
    /// direct computation.
    #[test]
    fn attention_entropy_and_resid_norm() {
        let spec = GptSpec {
            n_layer: 1,
            d_model: 8,
            n_head: 2,
            d_mlp: Some(8),
            ..GptSpec::default()
        };
        let mut m = Gpt::<f64>::new(&spec, 1e-5, 5, 4, 2, &mut Rng::new(1));
        // Zero q/k weights and biases: every score is 0, attention is uniform over the past.
        let qkv = m.blocks[0].qkv_w;
        let c = 8;
        m.params[qkv].value[..2 * c * c].fill(0.0);
        m.params[m.blocks[0].qkv_b].value[..2 * c].fill(0.0);
        let x = [1, 2, 3, 4, 0, 1, 2, 3];
        m.forward(&x, 2, 4);
        let mut rows = Vec::new();
        let names: Vec<String> = ALL.iter().map(|s| s.to_string()).collect();
        let ctx = LmCtx {
            step: 3,
            model: &m,
            before: &[],
            lr: 0.1,
            clip_coef: 1.0,
        };
        observe(&names, &ctx, &mut rows);
        let want = (1..=4).map(|i| (i as f64).ln()).sum::<f64>() / 4.0;
        let got = rows
            .iter()
            .find(|r| r.name == "attn_entropy_h1")
            .unwrap()
            .value;
        assert!((got - want).abs() < 1e-12, "{got} vs {want}");
        let lm = rows
            .iter()
            .find(|r| r.name == "attn_logit_max_h0")
            .unwrap()
            .value;
        assert_eq!(lm, 0.0);
        let r0 = &m.resid[0];
        let direct = (0..8)
            .map(|r| {
                r0[r * 8..(r + 1) * 8]
                    .iter()
                    .map(|v| v * v)
                    .sum::<f64>()
                    .sqrt()
            })
            .sum::<f64>()
            / 8.0;
        let got = rows
            .iter()
            .find(|r| r.name == "resid_norm" && r.layer == Some(0))
            .unwrap()
            .value;
        assert!((got - direct).abs() < 1e-12);
    }
}
