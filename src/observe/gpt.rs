//! The GPT's own observables: the residual stream, attention and logits (`layer` = block `l`;
//! per-head quantities carry the head in the name, `attn_entropy_h2`).

use crate::engine::{ops, Float};
use crate::model::Gpt;
use crate::store::MetricRow;

use super::{row, Ctx, Observable};

/// The GPT behind the context (these observables are registered for the GPT only).
fn gpt<'a, F: Float>(c: &Ctx<'a, F>) -> &'a Gpt<F> {
    c.model
        .as_any()
        .downcast_ref::<Gpt<F>>()
        .expect("registered for the GPT only")
}

/// `resid_norm`: mean L2 norm of a token's residual vector entering each block (and, at layer
/// `n_layer`, leaving the last).
pub(super) struct ResidNorm;
impl<F: Float> Observable<F> for ResidNorm {
    fn name(&self) -> &'static str {
        "resid_norm"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = gpt(c);
        let (bt, width) = (m.batch * m.seq, m.dims.c);
        for (l, x) in m.resid.iter().enumerate() {
            let mean = x[..bt * width]
                .chunks_exact(width)
                .map(|r| ops::sum_squares(r).sqrt())
                .sum::<f64>()
                / bt.max(1) as f64;
            out.push(row(c.step, Some(l), "resid_norm", mean));
        }
    }
}

/// `attn_entropy_h{h}`: mean over sequences and query positions of `−Σ_j P_ij ln P_ij` (nats;
/// uniform attention over the past gives ln(i+1)).
pub(super) struct AttnEntropy;
impl<F: Float> Observable<F> for AttnEntropy {
    fn name(&self) -> &'static str {
        "attn_entropy"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = gpt(c);
        let (seq, heads) = (m.seq, m.dims.h);
        for (l, buf) in m.bufs.iter().enumerate() {
            for h in 0..heads {
                let mut sum = 0.0;
                for b in 0..m.batch {
                    let at = (b * heads + h) * seq * seq;
                    let p = &buf.att[at..at + seq * seq];
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
}

/// `attn_logit_max_h{h}`: the largest pre-softmax attention logit of each head in the batch.
pub(super) struct AttnLogitMax;
impl<F: Float> Observable<F> for AttnLogitMax {
    fn name(&self) -> &'static str {
        "attn_logit_max"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        for (l, buf) in gpt(c).bufs.iter().enumerate() {
            for (h, v) in buf.logit_max.iter().enumerate() {
                let name = format!("attn_logit_max_h{h}");
                out.push(row(c.step, Some(l), &name, v.f64()));
            }
        }
    }
}

/// `logit_max` (largest |logit|) and `logit_norm` (mean L2 norm of a position's logits).
pub(super) struct Logits;
impl<F: Float> Observable<F> for Logits {
    fn name(&self) -> &'static str {
        "logits"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = gpt(c);
        let (bt, vocab) = (m.batch * m.seq, m.dims.vocab);
        let z = &m.logits[..bt * vocab];
        let max = z.iter().fold(0.0f64, |a, v| a.max(v.f64().abs()));
        let norm = z
            .chunks_exact(vocab)
            .map(|r| ops::sum_squares(r).sqrt())
            .sum::<f64>()
            / bt.max(1) as f64;
        out.push(row(c.step, None, "logit_max", max));
        out.push(row(c.step, None, "logit_norm", norm));
    }
}

#[cfg(test)]
mod tests {
    use super::super::registry;
    use super::*;
    use crate::engine::Rng;
    use crate::model::{Batch, Model};
    use crate::nn::norm::Mode;
    use crate::spec::GptSpec;

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
        let batch = Batch::Tokens {
            x: &x,
            y: &x,
            seqs: 2,
            seq: 4,
        };
        Model::forward(&mut m, &batch, Mode::Train);
        let mut rows = Vec::new();
        let names: Vec<String> = super::super::valid(crate::spec::Family::Gpt)
            .iter()
            .map(|s| s.to_string())
            .collect();
        let ctx = Ctx {
            step: 3,
            model: &m,
            batch: &batch,
            before: &[],
            lr: 0.1,
            clip_coef: 1.0,
        };
        for o in registry::<f64>(&names, crate::spec::Family::Gpt) {
            o.observe(&ctx, &mut rows);
        }
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
