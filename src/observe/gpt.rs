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
        // `act_abs`: the mean |value| of each block's output stream (layer l: after block l)
        // and of the logits (layer n_layer), the coordinate sizes a coordinate check compares.
        let mean_abs =
            |v: &[F]| v.iter().map(|x| x.f64().abs()).sum::<f64>() / v.len().max(1) as f64;
        for l in 0..m.dims.n_layer {
            out.push(row(
                c.step,
                Some(l),
                "act_abs",
                mean_abs(&m.resid[l + 1][..bt * width]),
            ));
        }
        let logits = &m.logits[..bt * m.dims.vocab];
        out.push(row(
            c.step,
            Some(m.dims.n_layer),
            "act_abs",
            mean_abs(logits),
        ));
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

/// Induction (Olsson et al. 2022), on the step's batch:
/// - `prefix_match_h{h}` (per layer): the attention a query puts on the keys just after earlier
///   occurrences of its own token — `Σ_{j ≤ i: x_{j−1} = x_i} P_ij` — averaged over the queries
///   that have such a key (Olsson et al.'s prefix-matching score, on the data itself);
/// - `offset_match_h{h}` and `offset_match_lag_h{h}`: the same score for keys `c` positions after
///   an earlier occurrence (`x_{j−c} = x_i`), at the lag `c ∈ 1..=`[`MAX_LAG`] where it is
///   largest, and that lag. Prefix matching is lag 1; a circuit whose first layer gathers the
///   token `c` back instead of the previous one (a "previous-token" head at offset `c`) matches
///   at lag `c`, which the lag-1 score misses;
/// - `lookback_h{h}` and `lookback_mass_h{h}`: the distance `i − j` on which the head puts the
///   most attention (summed over queries with a key that far back) and the mean attention there:
///   a previous-token head has lookback 1 and mass near 1;
/// - `copying_h{h}`: Elhage et al.'s (2021) copying score of the head's OV circuit on tokens,
///   `Σλ / Σ|λ|` over the eigenvalues of `W_U W_O W_V W_E` (computed as those of the small
///   `W_V W_E W_U W_O`), ignoring the norms and MLPs as their attention-only analysis does: near
///   1 when attending to a token raises that token's logit (a head that copies), near −1 when
///   it suppresses it;
/// - `loss_induction`: the mean next-token loss at the positions an induction head can predict
///   (the current token occurred earlier, followed by the target), and `loss_other` at the rest
///   (on repeated sequences: the repeated half and the first half).
pub(super) struct Induction;

/// The largest lag `offset_match` looks at.
pub const MAX_LAG: usize = 8;
impl<F: Float> Observable<F> for Induction {
    fn name(&self) -> &'static str {
        "induction"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let crate::model::Batch::Tokens { x, y, seqs, seq } = *c.batch else {
            return;
        };
        let m = gpt(c);
        let heads = m.dims.h;
        // Per lag c: per query, the keys c after earlier occurrences of its token; lag 1 is
        // prefix matching (the key just after an earlier occurrence).
        let lagged: Vec<Vec<Vec<usize>>> = (1..=MAX_LAG)
            .map(|lag| {
                (0..seqs * seq)
                    .map(|q| {
                        let (b, i) = (q / seq, q % seq);
                        let w = &x[b * seq..(b + 1) * seq];
                        (lag..=i).filter(|&j| w[j - lag] == w[i]).collect()
                    })
                    .collect()
            })
            .collect();
        let keys = &lagged[0];
        // Per query: earlier positions holding its own token (duplicate-token attention).
        let dups: Vec<Vec<usize>> = (0..seqs * seq)
            .map(|q| {
                let (b, i) = (q / seq, q % seq);
                let w = &x[b * seq..(b + 1) * seq];
                (0..i).filter(|&j| w[j] == w[i]).collect()
            })
            .collect();
        // Mean attention on the given keys, over the queries that have any.
        let score = |att: &[F], h: usize, sets: &[Vec<usize>]| -> Option<f64> {
            let (mut sum, mut n) = (0.0, 0usize);
            for (q, ks) in sets.iter().enumerate().filter(|(_, ks)| !ks.is_empty()) {
                let (b, i) = (q / seq, q % seq);
                let at = (b * heads + h) * seq * seq + i * seq;
                sum += ks.iter().map(|&j| att[at + j].f64()).sum::<f64>();
                n += 1;
            }
            (n > 0).then(|| sum / n as f64)
        };
        let previous: Vec<Vec<usize>> = (0..seqs * seq)
            .map(|q| {
                if q % seq > 0 {
                    vec![q % seq - 1]
                } else {
                    vec![]
                }
            })
            .collect();
        for (l, buf) in m.bufs.iter().enumerate() {
            for h in 0..heads {
                for (name, sets) in [
                    ("prefix_match", keys),
                    ("prev_token", &previous),
                    ("dup_token", &dups),
                ] {
                    if let Some(v) = score(&buf.att, h, sets) {
                        out.push(row(c.step, Some(l), &format!("{name}_h{h}"), v));
                    }
                }
                // Ties go to the shortest lag.
                let best = lagged
                    .iter()
                    .enumerate()
                    .filter_map(|(c, sets)| score(&buf.att, h, sets).map(|v| (c + 1, v)))
                    .fold(None, |acc: Option<(usize, f64)>, x| match acc {
                        Some(a) if a.1 >= x.1 => Some(a),
                        _ => Some(x),
                    });
                if let Some((lag, v)) = best {
                    out.push(row(c.step, Some(l), &format!("offset_match_h{h}"), v));
                    let name = format!("offset_match_lag_h{h}");
                    out.push(row(c.step, Some(l), &name, lag as f64));
                }
                // Attention by distance, summed over queries; the mean at the favourite one.
                let mut by_dist = vec![(0.0f64, 0usize); seq];
                for q in 0..seqs * seq {
                    let (b, i) = (q / seq, q % seq);
                    let at = (b * heads + h) * seq * seq + i * seq;
                    for (dist, slot) in by_dist.iter_mut().enumerate().take(i + 1) {
                        slot.0 += buf.att[at + i - dist].f64();
                        slot.1 += 1;
                    }
                }
                let favourite = by_dist.iter().enumerate().fold(
                    None,
                    |acc: Option<(usize, &(f64, usize))>, x| match acc {
                        Some(a) if a.1 .0 >= x.1 .0 => Some(a),
                        _ => Some(x),
                    },
                );
                if let Some((dist, &(sum, n))) = favourite {
                    out.push(row(c.step, Some(l), &format!("lookback_h{h}"), dist as f64));
                    let mass = sum / n.max(1) as f64;
                    out.push(row(c.step, Some(l), &format!("lookback_mass_h{h}"), mass));
                }
            }
        }
        // Copying scores from the weights alone.
        for (l, h, v) in copying_scores(m) {
            out.push(row(c.step, Some(l), &format!("copying_h{h}"), v));
        }
        // Next-token loss from the logits of this forward pass, split by predictability.
        let vocab = m.dims.vocab;
        let (mut ind, mut n_ind, mut other, mut n_other) = (0.0, 0usize, 0.0, 0usize);
        for q in 0..seqs * seq {
            let target = y[q];
            if target == crate::model::IGNORE {
                continue;
            }
            let (b, i) = (q / seq, q % seq);
            let w = &x[b * seq..(b + 1) * seq];
            let predictable = (0..i).any(|j| w[j] == w[i] && w[j + 1] == target);
            let z = &m.logits[q * vocab..(q + 1) * vocab];
            let max = z.iter().fold(f64::NEG_INFINITY, |a, v| a.max(v.f64()));
            let lse = max + z.iter().map(|v| (v.f64() - max).exp()).sum::<f64>().ln();
            let loss = lse - z[target].f64();
            if predictable {
                ind += loss;
                n_ind += 1;
            } else {
                other += loss;
                n_other += 1;
            }
        }
        if n_ind > 0 {
            out.push(row(c.step, None, "loss_induction", ind / n_ind as f64));
        }
        if n_other > 0 {
            out.push(row(c.step, None, "loss_other", other / n_other as f64));
        }
    }
}

/// `(layer, head, Σλ/Σ|λ|)` of every head's OV circuit on tokens (none for a prompt model).
pub fn copying_scores<F: Float>(m: &Gpt<F>) -> Vec<(usize, usize, f64)> {
    let crate::model::gpt::Ends::Tokens { wte, head } = m.ends else {
        return Vec::new();
    };
    let crate::model::gpt::GptDims {
        c, h, hd, vocab, ..
    } = m.dims;
    let p = &m.params;
    let (e, u) = (&p[wte].value, &p[head.unwrap_or(wte)].value);
    // G = W_E W_U = wteᵀ·head, [C, C].
    let mut g = vec![0.0f64; c * c];
    for v in 0..vocab {
        for a in 0..c {
            let ea = e[v * c + a].f64();
            for b in 0..c {
                g[a * c + b] += ea * u[v * c + b].f64();
            }
        }
    }
    let mut out = Vec::new();
    for (l, bi) in m.blocks.iter().enumerate() {
        let (wqkv, wproj) = (&p[bi.qkv_w].value, &p[bi.proj_w].value);
        for head_i in 0..h {
            // W_V^h: rows 2C + h·hd … of c_attn ([hd, C]); W_O^h: its columns of c_proj ([C, hd]).
            let wv = |i: usize, a: usize| wqkv[(2 * c + head_i * hd + i) * c + a].f64();
            let wo = |b: usize, j: usize| wproj[b * c + head_i * hd + j].f64();
            // T = W_V G [hd, C], then N = T W_O [hd, hd].
            let mut t = vec![0.0f64; hd * c];
            for i in 0..hd {
                for a in 0..c {
                    let x = wv(i, a);
                    for b in 0..c {
                        t[i * c + b] += x * g[a * c + b];
                    }
                }
            }
            let mut n = vec![0.0f64; hd * hd];
            for i in 0..hd {
                for b in 0..c {
                    for j in 0..hd {
                        n[i * hd + j] += t[i * c + b] * wo(b, j);
                    }
                }
            }
            if let Some(ev) = crate::theory::eigen::eigenvalues(&n, hd) {
                let sum: f64 = ev.iter().map(|v| v.0).sum();
                let abs: f64 = ev.iter().map(|v| v.0.hypot(v.1)).sum();
                if abs > 0.0 {
                    out.push((l, head_i, sum / abs));
                }
            }
        }
    }
    out
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

    /// With uniform attention over the past (zero q/k weights), a query's prefix-matching score
    /// is (keys after earlier occurrences of its token)/(i + 1): for `a b a b`, 1/3 at i = 2 and
    /// 1/4 at i = 3, mean 7/24. The split losses average to the model's own loss, recomputed.
    #[test]
    fn prefix_matching_and_split_losses() {
        let spec = GptSpec {
            n_layer: 1,
            d_model: 8,
            n_head: 2,
            d_mlp: Some(8),
            ..GptSpec::default()
        };
        let mut m = Gpt::<f64>::new(&spec, 1e-5, 5, 4, 1, &mut Rng::new(2));
        let (qkv, c) = (m.blocks[0].qkv_w, 8);
        m.params[qkv].value[..2 * c * c].fill(0.0);
        m.params[m.blocks[0].qkv_b].value[..2 * c].fill(0.0);
        let x = [1, 2, 1, 2];
        let y = [2, 1, 2, 3];
        let batch = Batch::Tokens {
            x: &x,
            y: &y,
            seqs: 1,
            seq: 4,
        };
        Model::forward(&mut m, &batch, Mode::Train);
        let loss = Model::loss(&mut m, &batch, false).loss;
        let ctx = Ctx {
            step: 0,
            model: &m,
            batch: &batch,
            before: &[],
            lr: 0.1,
            clip_coef: 1.0,
        };
        let mut rows = Vec::new();
        for o in registry::<f64>(&["induction".to_string()], crate::spec::Family::Gpt) {
            o.observe(&ctx, &mut rows);
        }
        let get = |n: &str| rows.iter().find(|r| r.name == n).unwrap().value;
        assert!((get("prefix_match_h0") - 7.0 / 24.0).abs() < 1e-12);
        assert!((get("prefix_match_h1") - 7.0 / 24.0).abs() < 1e-12);
        // Lag 2 (keys j with x_{j−2} = x_i): i = 2 has j = 2 (1/3), i = 3 has j = 3 (1/4): 7/24
        // too, a tie that the first (lag 1) wins.
        assert!((get("offset_match_h0") - 7.0 / 24.0).abs() < 1e-12);
        assert_eq!(get("offset_match_lag_h0"), 1.0);
        // Uniform attention: the total over queries at distance 0 is 1 + 1/2 + 1/3 + 1/4, the
        // most; its mean over the 4 queries.
        assert_eq!(get("lookback_h1"), 0.0);
        assert!((get("lookback_mass_h1") - (1.0 + 0.5 + 1.0 / 3.0 + 0.25) / 4.0).abs() < 1e-12);
        // Position 2 (token 1, earlier followed by 2 = its target) is predictable; so is
        // position 3? token 2 occurred at 1, followed by 1, not the target 3: no.
        let all = (get("loss_induction") * 1.0 + get("loss_other") * 3.0) / 4.0;
        assert!((all - loss).abs() < 1e-12, "{all} vs {loss}");
    }

    /// The copying score of a head built to copy is 1, and of one built to suppress −1: with
    /// W_V = I, W_O = ±I (one head, hd = C) and a tied head (W_U = wte, so W_E W_U = wteᵀwte is
    /// positive definite), every eigenvalue of ±wteᵀwte has the sign of W_O.
    #[test]
    fn copying_score_has_the_sign_of_the_ov_circuit() {
        let spec = GptSpec {
            n_layer: 1,
            d_model: 4,
            n_head: 1,
            d_mlp: Some(4),
            tying: crate::spec::gpt::Tying::Tied,
            ..GptSpec::default()
        };
        let mut m = Gpt::<f64>::new(&spec, 1e-5, 7, 3, 1, &mut Rng::new(5));
        let c = 4;
        for sign in [1.0, -1.0] {
            let (qkv, proj) = (m.blocks[0].qkv_w, m.blocks[0].proj_w);
            for i in 0..c {
                for a in 0..c {
                    let id = if i == a { 1.0 } else { 0.0 };
                    m.params[qkv].value[(2 * c + i) * c + a] = id;
                    m.params[proj].value[i * c + a] = sign * id;
                }
            }
            let s = copying_scores(&m);
            assert_eq!(s.len(), 1);
            assert!((s[0].2 - sign).abs() < 1e-12, "{s:?}");
        }
    }
}
