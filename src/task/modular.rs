//! Modular arithmetic `(a ∘ b) mod p`: the grokking task of Power et al. (2022), "Grokking:
//! Generalization Beyond Overfitting on Small Algorithmic Datasets".
//!
//! Encoding: the input is one-hot `a` (p dims) followed by one-hot `b` (p dims), so
//! `input_dim = 2p`; the label is the class `(a ∘ b) mod p`, so `n_classes = p`. The dataset is
//! the whole table of pairs (all p² of them; p(p−1) for division, which excludes b = 0),
//! shuffled with the seed's `"task/split"` stream; the first `⌊train_fraction · N⌋` pairs train,
//! the rest test. Nothing else is random, and the shuffle does not depend on `train_fraction`,
//! so a larger fraction's train set contains a smaller one's.

use serde::{Deserialize, Serialize};

use super::{
    at_least, counts, invalid, key, label_column, matrix, open_fraction, size_ok, Dataset, Target,
    TaskError,
};
use crate::engine::rng::Rng;

/// The operation `∘`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModOp {
    Add,
    Sub,
    Mul,
    /// `a · b⁻¹ mod p` for `b ≠ 0`; needs a prime `p` (Power et al.'s headline task).
    Div,
}

impl ModOp {
    pub fn name(self) -> &'static str {
        match self {
            ModOp::Add => "addition",
            ModOp::Sub => "subtraction",
            ModOp::Mul => "multiplication",
            ModOp::Div => "division",
        }
    }

    /// `(a ∘ b) mod p` for `a, b < p`, or `None` for a pair outside the table (b = 0 in division).
    pub fn apply(self, a: u64, b: u64, p: u64) -> Option<u64> {
        let (a, b, m) = (a as u128, b as u128, p as u128);
        let r = match self {
            ModOp::Add => (a + b) % m,
            ModOp::Sub => (a + m - b) % m,
            ModOp::Mul => (a * b) % m,
            ModOp::Div => {
                if b == 0 {
                    return None;
                }
                // Fermat: b^(p−2) is b's inverse when p is prime (validate checks primality).
                (a * pow_mod(b, m - 2, m)) % m
            }
        };
        Some(r as u64)
    }
}

fn pow_mod(mut base: u128, mut exp: u128, m: u128) -> u128 {
    let mut acc = 1 % m;
    base %= m;
    while exp > 0 {
        if exp & 1 == 1 {
            acc = acc * base % m;
        }
        base = base * base % m;
        exp >>= 1;
    }
    acc
}

fn is_prime(n: usize) -> bool {
    n >= 2
        && (2..)
            .take_while(|d| d * d <= n)
            .all(|d| !n.is_multiple_of(d))
}

/// `[task.modular]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModularSpec {
    /// The modulus; the number of classes.
    #[serde(default = "default_p")]
    pub p: usize,
    #[serde(default = "default_op")]
    pub op: ModOp,
    /// Fraction of the table used for training.
    #[serde(default = "default_train_fraction")]
    pub train_fraction: f64,
}

/// 97: the prime of Power et al. (2022).
fn default_p() -> usize {
    97
}
/// Addition: the most studied case (Nanda et al. 2023 reverse-engineered its Fourier circuit).
fn default_op() -> ModOp {
    ModOp::Add
}
/// 30%: Nanda et al. (2023) train on 30% of the pairs, a fraction at which generalization comes
/// long after memorization (grokking) in Power et al. (2022).
fn default_train_fraction() -> f64 {
    0.3
}

impl Default for ModularSpec {
    fn default() -> Self {
        ModularSpec {
            p: default_p(),
            op: default_op(),
            train_fraction: default_train_fraction(),
        }
    }
}

impl ModularSpec {
    /// All pairs `(a, b)` of the table, in row-major order.
    pub fn pairs(&self) -> Vec<(usize, usize)> {
        let p = self.p;
        let b0 = if self.op == ModOp::Div { 1 } else { 0 };
        (0..p).flat_map(|a| (b0..p).map(move |b| (a, b))).collect()
    }

    fn n_pairs(&self) -> usize {
        match self.op {
            ModOp::Div => self.p.saturating_mul(self.p.saturating_sub(1)),
            _ => self.p.saturating_mul(self.p),
        }
    }

    /// `(n_train, n_test)`: `⌊train_fraction · N⌋` train pairs, the rest test.
    fn split_sizes(&self) -> (usize, usize) {
        let n = self.n_pairs();
        let n_train = (self.train_fraction * n as f64).floor() as usize;
        (n_train, n.saturating_sub(n_train))
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        let k = |f: &str| key("modular", f);
        at_least(
            k("p"),
            self.p,
            2,
            "p is the modulus; the grokking literature uses primes such as 97 or 113",
        )?;
        // Size first: it bounds p, which keeps the primality search below cheap.
        size_ok(
            "modular",
            self.n_pairs(),
            self.p.saturating_mul(2).saturating_add(1),
            "p",
        )?;
        if self.op == ModOp::Div && !is_prime(self.p) {
            let below = (2..self.p).rev().find(|&q| is_prime(q));
            let above = (self.p + 1..).find(|&q| is_prime(q)).unwrap_or(self.p);
            let near = match below {
                Some(b) => format!("{b} or {above}"),
                None => above.to_string(),
            };
            return Err(invalid(
                k("p"),
                format!("division needs a prime modulus (got {})", self.p),
                format!("only a prime p gives every b ≠ 0 an inverse; nearest primes: {near}"),
            ));
        }
        open_fraction(
            k("train_fraction"),
            self.train_fraction,
            "the rest of the table is the test set",
        )?;
        let (n_train, n_test) = self.split_sizes();
        if n_train == 0 || n_test == 0 {
            return Err(invalid(
                k("train_fraction"),
                format!(
                    "leaves {n_train} train / {n_test} test pairs of the {} in the table",
                    self.n_pairs()
                ),
                "both sets need at least one pair: move train_fraction away from 0 and 1, or raise p",
            ));
        }
        Ok(())
    }

    /// The table's pairs shuffled with the seed's `"task/split"` stream, and how many of the
    /// first ones train (the rest test).
    pub fn split(&self, seed: u64) -> (Vec<(usize, usize)>, usize) {
        let mut pairs = self.pairs();
        Rng::stream(seed, "task/split").shuffle(&mut pairs);
        (pairs, self.split_sizes().0)
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let p = self.p;
        let (pairs, n_train) = self.split(seed);
        let n_test = pairs.len() - n_train;
        let encode = |rows: &[(usize, usize)]| {
            let mut x = vec![0.0; rows.len() * 2 * p];
            let mut y = Vec::with_capacity(rows.len());
            for (i, &(a, b)) in rows.iter().enumerate() {
                x[i * 2 * p + a] = 1.0;
                x[i * 2 * p + p + b] = 1.0;
                // The table holds only pairs where the operation is defined.
                y.push(self.op.apply(a as u64, b as u64, p as u64).unwrap_or(0) as usize);
            }
            (matrix(rows.len(), 2 * p, x), label_column(&y))
        };
        let (train_x, train_y) = encode(&pairs[..n_train]);
        let (test_x, test_y) = encode(&pairs[n_train..]);
        Dataset {
            sequence: None,
            subtasks: None,
            image: None,
            mixture: None,
            prompts: None,
            train_x,
            train_y,
            test_x,
            test_y,
            target: Target::Classes { n_classes: p },
            description: format!(
                "modular {} p={p}: {}",
                self.op.name(),
                counts(n_train, n_test)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskSpec;

    fn decode(x: ndarray::ArrayView1<f64>, p: usize) -> (usize, usize) {
        let hot: Vec<usize> = x
            .iter()
            .enumerate()
            .filter(|(_, &v)| v == 1.0)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hot.len(), 2, "exactly two hot inputs");
        assert_eq!(x.iter().filter(|&&v| v != 0.0 && v != 1.0).count(), 0);
        assert!(hot[0] < p && hot[1] >= p);
        (hot[0], hot[1] - p)
    }

    #[test]
    fn description_matches_the_documented_example() {
        let d = ModularSpec::default().generate(0);
        assert_eq!(
            d.description,
            "modular addition p=97: 2,822 train / 6,587 test"
        );
        assert_eq!(
            (d.n_train(), d.n_test(), d.input_dim(), d.output_dim()),
            (2822, 6587, 194, 97)
        );
        assert_eq!(d.target, Target::Classes { n_classes: 97 });
    }

    /// Labels are exactly (a ∘ b) mod p, computed here with signed arithmetic, and train ∪ test
    /// is the whole table with every pair exactly once.
    #[test]
    fn labels_are_exact_and_the_split_covers_every_pair_once() {
        for (op, p) in [
            (ModOp::Add, 13),
            (ModOp::Sub, 13),
            (ModOp::Mul, 12),
            (ModOp::Div, 13),
        ] {
            let spec = ModularSpec {
                p,
                op,
                train_fraction: 0.4,
            };
            let d = spec.generate(5);
            let mut seen = vec![0usize; p * p];
            for (x, y) in [(&d.train_x, &d.train_y), (&d.test_x, &d.test_y)] {
                for (row, label) in x.rows().into_iter().zip(y.column(0)) {
                    let (a, b) = decode(row, p);
                    seen[a * p + b] += 1;
                    let (ai, bi, pi) = (a as i64, b as i64, p as i64);
                    let want = match op {
                        ModOp::Add => (ai + bi).rem_euclid(pi),
                        ModOp::Sub => (ai - bi).rem_euclid(pi),
                        ModOp::Mul => (ai * bi).rem_euclid(pi),
                        // The unique c with c·b ≡ a, found by search.
                        ModOp::Div => (0..pi).find(|c| (c * bi - ai).rem_euclid(pi) == 0).unwrap(),
                    };
                    assert_eq!(*label, want as f64, "{op:?} p={p}: {a}∘{b}");
                }
            }
            for a in 0..p {
                for b in 0..p {
                    let expect = if op == ModOp::Div && b == 0 { 0 } else { 1 };
                    assert_eq!(seen[a * p + b], expect, "{op:?} ({a},{b})");
                }
            }
            let n = if op == ModOp::Div { p * (p - 1) } else { p * p };
            assert_eq!(d.n_train(), (0.4 * n as f64).floor() as usize);
            assert_eq!(d.n_train() + d.n_test(), n);
        }
    }

    #[test]
    fn deterministic_in_the_seed() {
        let spec = ModularSpec {
            p: 11,
            ..Default::default()
        };
        assert_eq!(spec.generate(3), spec.generate(3));
        assert_ne!(spec.generate(3).train_x, spec.generate(4).train_x);
    }

    #[test]
    fn invalid_specs_name_the_key() {
        let check = |spec: ModularSpec, key: &str| {
            let err = TaskSpec::Modular(spec).validate().unwrap_err();
            assert!(matches!(err, TaskError::Invalid { .. }));
            assert_eq!(err.key(), Some(key), "{err}");
            err
        };
        check(
            ModularSpec {
                p: 1,
                ..Default::default()
            },
            "task.modular.p",
        );
        let err = check(
            ModularSpec {
                p: 96,
                op: ModOp::Div,
                ..Default::default()
            },
            "task.modular.p",
        );
        assert!(err.hints()[0].contains("89 or 97"), "{:?}", err.hints());
        check(
            ModularSpec {
                train_fraction: 1.0,
                ..Default::default()
            },
            "task.modular.train_fraction",
        );
        check(
            ModularSpec {
                train_fraction: f64::NAN,
                ..Default::default()
            },
            "task.modular.train_fraction",
        );
        // p = 2 has 4 pairs: 10% of them is no pair at all.
        check(
            ModularSpec {
                p: 2,
                train_fraction: 0.1,
                ..Default::default()
            },
            "task.modular.train_fraction",
        );
    }

    #[test]
    fn modular_inverse() {
        for b in 1..97u64 {
            assert_eq!(ModOp::Div.apply(b, b, 97), Some(1));
            let inv = ModOp::Div.apply(1, b, 97).unwrap();
            assert_eq!(inv * b % 97, 1);
        }
        assert_eq!(ModOp::Div.apply(3, 0, 97), None);
    }
}
