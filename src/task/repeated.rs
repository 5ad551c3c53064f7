//! `[task.repeated_tokens]`: windows of `half` uniformly random tokens followed by the same
//! `half` tokens again — the task on which induction heads form (Olsson et al. 2022, "In-context
//! Learning and Induction Heads"): the second half is predictable only by finding the earlier
//! occurrence of the current token and copying the token that followed it.
//!
//! With `min_half < half` each window draws its segment length `L` uniformly from
//! `min_half..=half` and fills the rest of the window (`2·(half − L)` tokens) with random
//! tokens, so the distance between the two copies varies and no attention to a fixed relative
//! position solves the task: only an induction mechanism (a previous-token head feeding a head
//! that matches it) does.
//!
//! Theory beside measurement: a window of `2·half` tokens has `2·half − 1` next-token targets;
//! the first `half − 1` are uniform (ln V nats each, whatever the context) and the last `half`
//! are determined by the first half (0 nats for the Bayes-optimal predictor). So the
//! Bayes-optimal loss averaged over a window is `(half − 1)/(2·half − 1) · ln V`, stored as
//! `bayes_loss`; a model that never learns to copy stays at `ln V` on every position.

use serde::{Deserialize, Serialize};

use crate::engine::Rng;

use super::sequence::{self, EntropyRate, SequenceInfo};
use super::{at_least, counts, key, Dataset, TaskError};

/// `[task.repeated_tokens]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatedSpec {
    /// 64 tokens: ln 64 = 4.16 nats per unpredictable token, as in small induction-head studies.
    #[serde(default = "d_vocab")]
    pub vocab: usize,
    /// 16 random tokens, then the same 16: windows of 32, 31 targets.
    #[serde(default = "d_half")]
    pub half: usize,
    /// The shortest segment (default: `half`, every window a half and its copy). Below `half`,
    /// segment lengths vary per window, so the copy's distance does too.
    #[serde(default)]
    pub min_half: Option<usize>,
    /// Training windows.
    #[serde(default = "d_n_train")]
    pub n_train: usize,
    /// Validation windows.
    #[serde(default = "d_n_test")]
    pub n_test: usize,
}

fn d_vocab() -> usize {
    64
}
fn d_half() -> usize {
    16
}
fn d_n_train() -> usize {
    8192
}
fn d_n_test() -> usize {
    512
}

impl Default for RepeatedSpec {
    fn default() -> Self {
        RepeatedSpec {
            vocab: d_vocab(),
            half: d_half(),
            min_half: None,
            n_train: d_n_train(),
            n_test: d_n_test(),
        }
    }
}

impl RepeatedSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        let k = |f: &str| key("repeated_tokens", f);
        at_least(k("vocab"), self.vocab, 2, "at least two tokens")?;
        at_least(
            k("half"),
            self.half,
            2,
            "at least two tokens before the repeat",
        )?;
        if let Some(m) = self.min_half {
            at_least(k("min_half"), m, 2, "at least two tokens before the repeat")?;
            if m > self.half {
                return Err(super::invalid(
                    k("min_half"),
                    format!("{m} exceeds half ({})", self.half),
                    "min_half is the shortest segment; half the longest",
                ));
            }
        }
        at_least(k("n_train"), self.n_train, 1, "training windows")?;
        at_least(k("n_test"), self.n_test, 1, "validation windows")?;
        let elements = (self.n_train + self.n_test).saturating_mul(2 * self.half);
        if elements > super::MAX_ELEMENTS {
            return Err(super::invalid(
                k("n_train"),
                format!(
                    "{elements} tokens is too many (limit {})",
                    super::MAX_ELEMENTS
                ),
                "fewer windows or a shorter half",
            ));
        }
        Ok(())
    }

    /// The Bayes-optimal loss averaged over a window's `2·half − 1` targets (nats).
    pub fn bayes_window_nats(&self) -> f64 {
        (self.half - 1) as f64 / (2 * self.half - 1) as f64 * (self.vocab as f64).ln()
    }

    /// The shortest segment.
    fn shortest(&self) -> usize {
        self.min_half.unwrap_or(self.half)
    }

    pub fn generate(&self, seed: u64) -> Dataset {
        let (lo, hi) = (self.shortest(), self.half);
        let windows = |label: &str, n: usize| -> Vec<Vec<usize>> {
            let mut rng = Rng::stream(seed, label);
            (0..n)
                .map(|_| {
                    let len = lo + rng.below((hi - lo + 1) as u64) as usize;
                    let mut token = || rng.below(self.vocab as u64) as usize;
                    let first: Vec<usize> = (0..len).map(|_| token()).collect();
                    let fill: Vec<usize> = (0..2 * (hi - len)).map(|_| token()).collect();
                    first.iter().chain(&first).chain(&fill).copied().collect()
                })
                .collect()
        };
        let train = windows("task/train", self.n_train);
        let test = windows("task/test", self.n_test);
        let t = 2 * self.half - 1;
        let bayes = self.bayes_window_nats();
        // Exact only for fixed segments; with varying ones the Bayes predictor would weigh the
        // possible segment lengths, which is not computed here: no floor is claimed.
        let entropy = (lo == hi).then(|| EntropyRate {
            // Not a stationary source: the "rate" is the window's Bayes loss itself.
            nats: bayes,
            window_nats: bayes,
            method: format!(
                "exact: (half − 1)/(2·half − 1) · ln V with half = {}, V = {}",
                self.half, self.vocab
            ),
        });
        let info = SequenceInfo {
            vocab: (0..self.vocab).map(|i| i.to_string()).collect(),
            seq_len: t,
            entropy,
            trained: sequence::Trained::All,
        };
        let segment = if lo == hi {
            format!("{hi} random of {}", self.vocab)
        } else {
            format!("{lo}–{hi} random of {} (then random filler)", self.vocab)
        };
        let floor = if lo == hi {
            format!(" (Bayes window loss {bayes:.4} nats)")
        } else {
            String::new()
        };
        let description = format!(
            "repeated tokens: {segment} then the same again{floor}: {} windows of {t}",
            counts(self.n_train, self.n_test)
        );
        sequence::dataset(&train, &test, t, info, description)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every window is a half and its copy; inputs and targets are shifted by one.
    #[test]
    fn windows_repeat_their_first_half() {
        let s = RepeatedSpec {
            vocab: 10,
            half: 5,
            min_half: None,
            n_train: 20,
            n_test: 3,
        };
        let d = s.generate(7);
        let (x, y) = (&d.train_x, &d.train_y);
        assert_eq!(x.shape(), &[20, 9]);
        for r in 0..20 {
            let row: Vec<f64> = x.row(r).iter().copied().chain([y[[r, 8]]]).collect();
            assert_eq!(&row[..5], &row[5..], "window {r}");
            for i in 0..8 {
                assert_eq!(y[[r, i]], x[[r, i + 1]]);
            }
        }
        // ln 10 · 4/9.
        assert!((s.bayes_window_nats() - 10f64.ln() * 4.0 / 9.0).abs() < 1e-15);
        assert!(RepeatedSpec {
            half: 1,
            ..s.clone()
        }
        .validate()
        .is_err());
        assert!(RepeatedSpec {
            min_half: Some(6),
            ..s.clone()
        }
        .validate()
        .is_err());
        // Varying segments: each window starts with a segment of 3 to 5 tokens and its copy.
        let v = RepeatedSpec {
            min_half: Some(3),
            ..s
        };
        let d = v.generate(7);
        let mut lengths = std::collections::BTreeSet::new();
        for r in 0..20 {
            let row: Vec<f64> = d
                .train_x
                .row(r)
                .iter()
                .copied()
                .chain([d.train_y[[r, 8]]])
                .collect();
            let len = (3..=5)
                .rev()
                .find(|&l| row[..l] == row[l..2 * l])
                .expect("a repeat");
            lengths.insert(len);
        }
        assert!(lengths.len() > 1, "{lengths:?}");
    }
}
