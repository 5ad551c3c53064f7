//! A random k-th order Markov source over `vocab` tokens, with its exact entropy rate.
//!
//! Each of the `vocab^k` contexts gets a next-token distribution drawn from a symmetric
//! Dirichlet(`concentration`) (stream `"task/markov"`): small concentrations give peaked,
//! low-entropy languages, large ones nearly uniform. Every window starts from the stationary
//! distribution `π` of the chain on k-tuples, so windows are stationary and
//!
//! `h = Σ_s π(s) · H(P(· | s))` (nats per token)
//!
//! is the entropy rate exactly (Cover & Thomas, Thm 4.2.4). `π` is the fixed point of the chain,
//! found by power iteration on the Cesàro average (which converges for any chain whose
//! transitions are all positive, as Dirichlet draws are) to 1e-13 in L1. A window's Bayes-optimal
//! loss is higher than `h` at the first `k − 1` positions, whose context is shorter than `k`:
//! there the loss is `H(X_j | X_<j)` of the stationary k-tuple marginals.

use serde::{Deserialize, Serialize};

use super::sequence::{
    self, d_concentration, d_n_test, d_n_train, d_seq_len, dirichlet, draw, entropy_nats,
    EntropyRate, SequenceInfo,
};
use super::{at_least, counts, invalid, key, positive, Dataset, TaskError};
use crate::engine::Rng;

/// `[task.markov]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkovSpec {
    /// 16 tokens: small enough that a tiny model learns the table in seconds.
    #[serde(default = "d_vocab")]
    pub vocab: usize,
    /// First order: the next token depends on the last one.
    #[serde(default = "d_order")]
    pub order: usize,
    /// Dirichlet concentration 1: transition rows uniform on the simplex.
    #[serde(default = "d_concentration")]
    pub concentration: f64,
    /// 64 tokens per window: the reference GPT's context.
    #[serde(default = "d_seq_len")]
    pub seq_len: usize,
    /// Training windows.
    #[serde(default = "d_n_train")]
    pub n_train: usize,
    /// Validation windows.
    #[serde(default = "d_n_test")]
    pub n_test: usize,
}

fn d_vocab() -> usize {
    16
}
fn d_order() -> usize {
    1
}

impl Default for MarkovSpec {
    fn default() -> Self {
        MarkovSpec {
            vocab: d_vocab(),
            order: d_order(),
            concentration: d_concentration(),
            seq_len: d_seq_len(),
            n_train: d_n_train(),
            n_test: d_n_test(),
        }
    }
}

/// The drawn source: `transitions[s·V + j] = P(next = j | context s)`, contexts as base-V
/// numbers (oldest token most significant), and the stationary distribution on contexts.
#[derive(Clone, Debug)]
pub struct MarkovSource {
    pub vocab: usize,
    pub order: usize,
    pub transitions: Vec<f64>,
    pub stationary: Vec<f64>,
}

impl MarkovSource {
    fn n_contexts(&self) -> usize {
        self.vocab.pow(self.order as u32)
    }

    /// The context after appending token `j` to context `s`.
    fn next_context(&self, s: usize, j: usize) -> usize {
        (s * self.vocab + j) % self.n_contexts()
    }

    /// Exact entropy rate `Σ_s π(s) H(P(·|s))` and the window's Bayes loss for `seq_len`.
    pub fn entropy(&self, seq_len: usize) -> EntropyRate {
        let v = self.vocab;
        let h: f64 = (0..self.n_contexts())
            .map(|s| self.stationary[s] * entropy_nats(&self.transitions[s * v..(s + 1) * v]))
            .sum();
        // H(X_j | X_<j) for j < k from the marginals of the first j + 1 tokens of π.
        let marginal_entropy = |len: usize| -> f64 {
            if len == 0 {
                return 0.0;
            }
            let div = v.pow((self.order - len) as u32);
            let mut m = vec![0.0; v.pow(len as u32)];
            for (s, &p) in self.stationary.iter().enumerate() {
                m[s / div] += p;
            }
            entropy_nats(&m)
        };
        // Target at position t has t + 1 tokens of context.
        let total: f64 = (0..seq_len)
            .map(|t| {
                let ctx = t + 1;
                if ctx >= self.order {
                    h
                } else {
                    marginal_entropy(ctx + 1) - marginal_entropy(ctx)
                }
            })
            .sum();
        EntropyRate {
            nats: h,
            window_nats: total / seq_len as f64,
            method: format!(
                "exact: Σ_s π(s)·H(P(·|s)) over the {} contexts, π by power iteration",
                self.n_contexts()
            ),
        }
    }

    /// A stationary window of `len` tokens.
    pub fn sample(&self, rng: &mut Rng, len: usize) -> Vec<usize> {
        let (v, k) = (self.vocab, self.order);
        let mut s = draw(rng, &self.stationary);
        let mut out = Vec::with_capacity(len);
        // The context's own tokens come first (oldest first).
        for i in (0..k).rev() {
            out.push((s / v.pow(i as u32)) % v);
        }
        while out.len() < len {
            let j = draw(rng, &self.transitions[s * v..(s + 1) * v]);
            out.push(j);
            s = self.next_context(s, j);
        }
        out.truncate(len);
        out
    }
}

impl MarkovSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        let k = |f: &str| key("markov", f);
        at_least(k("vocab"), self.vocab, 2, "a language needs two tokens")?;
        at_least(
            k("order"),
            self.order,
            1,
            "order 1: the next token depends on the last",
        )?;
        let contexts = (self.vocab as f64).powi(self.order as i32);
        if contexts * self.vocab as f64 > 1e7 {
            // Blame the vocabulary when it alone is too large (even at order 1), else the order.
            let vocab_alone = (self.vocab as f64).powi(2) > 1e7;
            return Err(invalid(
                k(if vocab_alone { "vocab" } else { "order" }),
                format!(
                    "vocab^(order+1) = {}^{} = {:.3e} transition probabilities is too many (limit 1e7)",
                    self.vocab,
                    self.order + 1,
                    contexts * self.vocab as f64
                ),
                if vocab_alone {
                    "lower the vocabulary (at most 3,162 tokens at order 1)"
                } else {
                    "lower the order or the vocabulary"
                },
            ));
        }
        positive(
            k("concentration"),
            self.concentration,
            "1 draws rows uniformly",
        )?;
        sequence::validate_windows("markov", self.seq_len, self.n_train, self.n_test)
    }

    /// The source drawn for `seed`.
    pub fn source(&self, seed: u64) -> MarkovSource {
        let (v, k) = (self.vocab, self.order);
        let n = v.pow(k as u32);
        let mut rng = Rng::stream(seed, "task/markov");
        let mut transitions = Vec::with_capacity(n * v);
        for _ in 0..n {
            transitions.extend(dirichlet(&mut rng, v, self.concentration));
        }
        let mut src = MarkovSource {
            vocab: v,
            order: k,
            transitions,
            stationary: vec![1.0 / n as f64; n],
        };
        // Power iteration with averaging: π ← (π + πP)/2 (lazy chain, aperiodic, same π).
        let mut next = vec![0.0; n];
        for _ in 0..100_000 {
            next.fill(0.0);
            for s in 0..n {
                let ps = src.stationary[s];
                for j in 0..v {
                    next[src.next_context(s, j)] += ps * src.transitions[s * v + j];
                }
            }
            let mut diff = 0.0;
            for s in 0..n {
                let new = 0.5 * (src.stationary[s] + next[s]);
                diff += (new - src.stationary[s]).abs();
                src.stationary[s] = new;
            }
            if diff < 1e-13 {
                break;
            }
        }
        src
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let src = self.source(seed);
        let sample = |label: &str, n: usize| {
            let mut rng = Rng::stream(seed, label);
            (0..n)
                .map(|_| src.sample(&mut rng, self.seq_len + 1))
                .collect::<Vec<_>>()
        };
        let train = sample("task/train", self.n_train);
        let test = sample("task/test", self.n_test);
        let entropy = src.entropy(self.seq_len);
        let description = format!(
            "markov order {} over {} tokens (entropy rate {:.4} nats = {:.4} bits/token): {} windows of {}",
            self.order,
            self.vocab,
            entropy.nats,
            entropy.bits(),
            counts(self.n_train, self.n_test),
            self.seq_len
        );
        let info = SequenceInfo {
            vocab: (0..self.vocab).map(|i| i.to_string()).collect(),
            seq_len: self.seq_len,
            entropy: Some(entropy),
            trained: sequence::Trained::All,
        };
        sequence::dataset(&train, &test, self.seq_len, info, description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A two-state chain with a closed-form stationary distribution and entropy rate.
    #[test]
    fn two_state_chain_matches_closed_form() {
        let (a, b) = (0.1, 0.3); // P(0→1), P(1→0)
        let mut src = MarkovSource {
            vocab: 2,
            order: 1,
            transitions: vec![1.0 - a, a, b, 1.0 - b],
            stationary: vec![0.5, 0.5],
        };
        src.stationary = vec![b / (a + b), a / (a + b)];
        let hb = |p: f64| -(p * p.ln() + (1.0 - p) * (1.0 - p).ln());
        let want = b / (a + b) * hb(a) + a / (a + b) * hb(b);
        let e = src.entropy(10);
        assert!((e.nats - want).abs() < 1e-15);
        assert!((e.window_nats - e.nats).abs() < 1e-15);
        assert!((e.bits() - want / std::f64::consts::LN_2).abs() < 1e-15);
    }

    /// π from power iteration is stationary; the entropy rate matches the empirical
    /// −(1/n) log P(sample) of a long sample (Shannon–McMillan–Breiman) within 3 standard errors.
    #[test]
    fn entropy_rate_matches_long_sample_log_likelihood() {
        for order in [1, 2] {
            let spec = MarkovSpec {
                vocab: 5,
                order,
                concentration: 0.7,
                ..MarkovSpec::default()
            };
            let src = spec.source(3);
            let n = src.n_contexts();
            let mut next = vec![0.0; n];
            for s in 0..n {
                for j in 0..5 {
                    next[src.next_context(s, j)] += src.stationary[s] * src.transitions[s * 5 + j];
                }
            }
            let l1: f64 = next
                .iter()
                .zip(&src.stationary)
                .map(|(a, b)| (a - b).abs())
                .sum();
            assert!(l1 < 1e-12, "order {order}: not stationary ({l1:e})");
            let len = 400_000;
            let xs = src.sample(&mut Rng::new(9), len);
            let mut s = 0;
            for &t in &xs[..order] {
                s = src.next_context(s, t);
            }
            let (mut sum, mut sum2) = (0.0, 0.0);
            for &t in &xs[order..] {
                let nll = -src.transitions[s * 5 + t].ln();
                sum += nll;
                sum2 += nll * nll;
                s = src.next_context(s, t);
            }
            let m = (len - order) as f64;
            let mean = sum / m;
            // Correlated samples: a generous 5× the iid standard error.
            let se = ((sum2 / m - mean * mean) / m).sqrt() * 5.0;
            let h = src.entropy(64).nats;
            assert!(
                (mean - h).abs() < 3.0 * se,
                "order {order}: {mean} vs {h} ± {se}"
            );
        }
    }

    /// Order 2: the first target (one token of context) costs H(X₁|X₀) > h.
    #[test]
    fn window_loss_accounts_for_short_contexts() {
        let spec = MarkovSpec {
            vocab: 4,
            order: 2,
            concentration: 0.3,
            ..MarkovSpec::default()
        };
        let e = spec.source(1).entropy(8);
        assert!(e.window_nats > e.nats);
        let d = spec.generate(1);
        assert_eq!(d.train_x.ncols(), 64);
        assert_eq!(
            d.train_x.row(0).to_vec()[1..],
            d.train_y.row(0).to_vec()[..63]
        );
        assert_eq!(d, spec.generate(1));
    }
}
