//! Modular arithmetic as token sequences, for transformers: `a b =` → `c`, with
//! `c = (a ∘ b) mod p`. Tokens `0…p−1` are the numbers and `p` is `=`; the loss is on the answer
//! only (the targets of `a` and `b` are ignored). The table and its train/test split are those
//! of `[task.modular]` with the same `p`, `op`, `train_fraction` and seed (Power et al. 2022;
//! Nanda et al. 2023 use this encoding).

use serde::{Deserialize, Serialize};

use super::modular::{ModOp, ModularSpec};
use super::sequence::{SequenceInfo, Trained};
use super::{counts, matrix, Dataset, Target, TaskError};

/// `[task.modular_sequence]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModularSequenceSpec {
    /// 113: the prime of Nanda et al. (2023) and Omnigrok's transformer experiment.
    #[serde(default = "d_p")]
    pub p: usize,
    #[serde(default = "d_op")]
    pub op: ModOp,
    /// 30%, as `[task.modular]`.
    #[serde(default = "d_train_fraction")]
    pub train_fraction: f64,
}

fn d_p() -> usize {
    113
}
fn d_op() -> ModOp {
    ModOp::Add
}
fn d_train_fraction() -> f64 {
    0.3
}

impl Default for ModularSequenceSpec {
    fn default() -> Self {
        ModularSequenceSpec {
            p: d_p(),
            op: d_op(),
            train_fraction: d_train_fraction(),
        }
    }
}

impl ModularSequenceSpec {
    fn table(&self) -> ModularSpec {
        ModularSpec {
            p: self.p,
            op: self.op,
            train_fraction: self.train_fraction,
        }
    }

    /// The table's checks, with keys under `task.modular_sequence`.
    pub fn validate(&self) -> Result<(), TaskError> {
        self.table().validate().map_err(|e| match e {
            TaskError::Invalid { key, msg, hint } => TaskError::Invalid {
                key: key.replacen("task.modular", "task.modular_sequence", 1),
                msg,
                hint,
            },
            other => other,
        })
    }

    pub fn generate(&self, seed: u64) -> Dataset {
        let p = self.p;
        let (pairs, n_train) = self.table().split(seed);
        let encode = |rows: &[(usize, usize)]| {
            let mut x = Vec::with_capacity(rows.len() * 3);
            let mut y = Vec::with_capacity(rows.len() * 3);
            for &(a, b) in rows {
                let c = self.op.apply(a as u64, b as u64, p as u64).unwrap_or(0) as f64;
                x.extend([a as f64, b as f64, p as f64]);
                // The next tokens; only the answer `c` is trained on (`Trained::Last`).
                y.extend([b as f64, p as f64, c]);
            }
            (matrix(rows.len(), 3, x), matrix(rows.len(), 3, y))
        };
        let (train_x, train_y) = encode(&pairs[..n_train]);
        let (test_x, test_y) = encode(&pairs[n_train..]);
        let mut vocab: Vec<String> = (0..p).map(|i| i.to_string()).collect();
        vocab.push("=".into());
        Dataset {
            train_x,
            train_y,
            test_x,
            test_y,
            target: Target::Classes { n_classes: p + 1 },
            description: format!(
                "modular {} p={p} as `a b =` sequences: {}",
                self.op.name(),
                counts(n_train, pairs.len() - n_train)
            ),
            sequence: Some(SequenceInfo {
                vocab,
                seq_len: 3,
                entropy: None,
                trained: Trained::Last,
            }),
            subtasks: None,
            image: None,
            mixture: None,
            prompts: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Same split as the one-hot task: the same pairs train.
    #[test]
    fn same_split_as_the_one_hot_task() {
        let s = ModularSequenceSpec {
            p: 13,
            ..Default::default()
        };
        let seq = s.generate(4);
        let hot = s.table().generate(4);
        assert_eq!(seq.n_train(), hot.n_train());
        for i in 0..seq.n_train() {
            let (a, b) = (seq.train_x[[i, 0]], seq.train_x[[i, 1]]);
            assert_eq!(hot.train_x[[i, a as usize]], 1.0);
            assert_eq!(hot.train_x[[i, 13 + b as usize]], 1.0);
            assert_eq!(seq.train_y[[i, 2]], hot.train_y[[i, 0]]);
            assert_eq!(seq.train_y[[i, 0]], b);
            assert_eq!(seq.train_y[[i, 1]], 13.0);
            assert_eq!(seq.train_x[[i, 2]], 13.0);
        }
    }
}
