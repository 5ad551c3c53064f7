//! Sparse parity and multitask sparse parity.
//!
//! **Sparse parity** (Barak et al. 2022, "Hidden Progress in Deep Learning: SGD Learns Parities
//! Near the Computational Limit"): inputs are `n_bits` uniform bits encoded as **±1**; a secret
//! subset `S` of `k` positions decides the label, the parity of the bits of `S` with `x_i = −1`
//! counting as a 1 — class 1 when `∏_{i∈S} x_i = −1`, class 0 when it is `+1`.
//!
//! **Multitask sparse parity** (Michaud et al. 2023, "The Quantization Model of Neural Scaling",
//! §3): `n_tasks` sparse-parity problems, each with its own secret `k`-subset (distinct, as in the
//! authors' code), share `n_bits` data bits. The input is a one-hot *control* block of `n_tasks`
//! bits naming the task, followed by the `n_bits` data bits encoded as **0/1** as in the paper;
//! the label (2 classes) is the parity of the chosen task's subset. Example `i` picks task `t`
//! with probability `∝ (t+1)^(−zipf_exponent)` — the Zipfian quanta frequencies whose exponent
//! sets the scaling exponent. The per-example task index is not stored in the [`Dataset`]: it is
//! the position of the hot control bit (argmax of the first `n_tasks` inputs).
//!
//! Streams: secrets from `"task/secret"`, train examples from `"task/train_inputs"`, test
//! examples from `"task/test_inputs"` (per example: one uniform for the task in the multitask
//! case, then `⌈n_bits/64⌉` 64-bit words whose low bits are the data bits). Train and test are
//! independent i.i.d. draws, so when `2^n_bits` is small the test set may repeat training inputs.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::{
    at_least, counts, finite_nonneg, invalid, key, label_column, matrix, size_ok, Dataset, Target,
    TaskError,
};
use crate::engine::rng::Rng;

/// `[task.sparse_parity]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseParitySpec {
    #[serde(default = "default_n_bits")]
    pub n_bits: usize,
    /// Size of the secret subset.
    #[serde(default = "default_k")]
    pub k: usize,
    #[serde(default = "default_n_train")]
    pub n_train: usize,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
}

/// n = 40, k = 3, 1,000 training examples: the grokking setting of Merrill, Tsilivis & Shukla
/// (2023), "A Tale of Two Circuits: Grokking as Competition of Sparse and Dense Subnetworks".
fn default_n_bits() -> usize {
    40
}
/// k = 3: see [`default_n_bits`]; also Barak et al.'s (2022) standard case.
fn default_k() -> usize {
    3
}
/// 1,000: see [`default_n_bits`].
fn default_n_train() -> usize {
    1000
}
/// 10,000 test examples: accuracy known to ±0.5% (binomial s.e. ≤ 0.5/√n).
fn default_n_test() -> usize {
    10_000
}

impl Default for SparseParitySpec {
    fn default() -> Self {
        SparseParitySpec {
            n_bits: default_n_bits(),
            k: default_k(),
            n_train: default_n_train(),
            n_test: default_n_test(),
        }
    }
}

/// `[task.multitask_sparse_parity]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultitaskSparseParitySpec {
    #[serde(default = "default_n_tasks")]
    pub n_tasks: usize,
    /// Data bits shared by all tasks.
    #[serde(default = "default_mt_n_bits")]
    pub n_bits: usize,
    /// Size of each task's secret subset.
    #[serde(default = "default_k")]
    pub k: usize,
    /// Task `t` (0-based) is drawn with probability `∝ (t+1)^(−zipf_exponent)`; 0 is uniform.
    #[serde(default = "default_zipf_exponent")]
    pub zipf_exponent: f64,
    #[serde(default = "default_mt_n_train")]
    pub n_train: usize,
    #[serde(default = "default_n_test")]
    pub n_test: usize,
}

/// 100 tasks of parity on k = 3 of n = 50 bits: the defaults of the authors' training script
/// (`scripts/sparse-parity-v4.py` in ejmichaud/quantization-model); the paper's headline runs
/// use 500 tasks on 100 bits, five times the input width.
fn default_n_tasks() -> usize {
    100
}
/// 50 bits: see [`default_n_tasks`].
fn default_mt_n_bits() -> usize {
    50
}
/// 1.4 = α + 1 with the paper's α = 0.4 (frequencies `∝ k^−(α+1)`); the authors' data-scaling
/// runs pass exactly `alpha=1.4` to their sampler (experiments/D-scaling-1).
fn default_zipf_exponent() -> f64 {
    1.4
}
/// 10,000: the low end of the authors' data-scaling sweep (D from 10⁴ to 5·10⁶).
fn default_mt_n_train() -> usize {
    10_000
}

impl Default for MultitaskSparseParitySpec {
    fn default() -> Self {
        MultitaskSparseParitySpec {
            n_tasks: default_n_tasks(),
            n_bits: default_mt_n_bits(),
            k: default_k(),
            zipf_exponent: default_zipf_exponent(),
            n_train: default_mt_n_train(),
            n_test: default_n_test(),
        }
    }
}

/// `k` distinct positions out of `n`, sorted: the first `k` slots of a partial Fisher–Yates
/// shuffle (consumes exactly `k` draws).
fn random_subset(rng: &mut Rng, n: usize, k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..n).collect();
    for i in 0..k {
        let j = i + rng.below((n - i) as u64) as usize;
        idx.swap(i, j);
    }
    let mut s = idx[..k].to_vec();
    s.sort_unstable();
    s
}

/// `n_bits` uniform bits as `⌈n_bits/64⌉` words (bit `j` is bit `j % 64` of word `j / 64`).
fn random_bits(rng: &mut Rng, n_bits: usize, words: &mut Vec<u64>) {
    words.clear();
    words.extend((0..n_bits.div_ceil(64)).map(|_| rng.next_u64()));
}

fn bit(words: &[u64], j: usize) -> bool {
    (words[j / 64] >> (j % 64)) & 1 == 1
}

/// The parity of the bits of `subset`.
fn parity(words: &[u64], subset: &[usize]) -> usize {
    subset.iter().filter(|&&j| bit(words, j)).count() % 2
}

/// `C(n, k)`, saturating at `u128::MAX`.
fn binomial(n: usize, k: usize) -> u128 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k);
    let mut c: u128 = 1;
    for i in 0..k {
        // c·(n−i) is divisible by (i+1) because c·(n−i)/(i+1) = C(n, i+1).
        c = match c.checked_mul((n - i) as u128) {
            Some(v) => v / (i as u128 + 1),
            None => return u128::MAX,
        };
    }
    c
}

fn check_bits(kind: &str, n_bits: usize, k: usize) -> Result<(), TaskError> {
    at_least(key(kind, "n_bits"), n_bits, 1, "the number of input bits")?;
    at_least(key(kind, "k"), k, 1, "the size of the secret subset")?;
    if k > n_bits {
        return Err(invalid(
            key(kind, "k"),
            format!("the secret subset cannot be larger than n_bits = {n_bits} (got {k})"),
            "k bits out of n_bits decide the label",
        ));
    }
    Ok(())
}

fn check_counts(kind: &str, n_train: usize, n_test: usize, cols: usize) -> Result<(), TaskError> {
    at_least(
        key(kind, "n_train"),
        n_train,
        1,
        "the number of training examples",
    )?;
    at_least(
        key(kind, "n_test"),
        n_test,
        1,
        "the lab always reports a test metric",
    )?;
    size_ok(
        kind,
        n_train.saturating_add(n_test),
        cols,
        "n_train, n_test or the input width",
    )
}

impl SparseParitySpec {
    /// The secret subset `S` (sorted positions) for this seed.
    pub fn secret(&self, seed: u64) -> Vec<usize> {
        random_subset(&mut Rng::stream(seed, "task/secret"), self.n_bits, self.k)
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        check_bits("sparse_parity", self.n_bits, self.k)?;
        check_counts("sparse_parity", self.n_train, self.n_test, self.n_bits + 1)
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let secret = self.secret(seed);
        let n_bits = self.n_bits;
        let sample = |label: &str, n: usize| {
            let mut rng = Rng::stream(seed, label);
            let mut words = Vec::new();
            let mut x = Vec::with_capacity(n * n_bits);
            let mut y = Vec::with_capacity(n);
            for _ in 0..n {
                random_bits(&mut rng, n_bits, &mut words);
                // A set bit is x_i = −1, which counts as a 1 in the parity.
                x.extend((0..n_bits).map(|j| if bit(&words, j) { -1.0 } else { 1.0 }));
                y.push(parity(&words, &secret));
            }
            (matrix(n, n_bits, x), label_column(&y))
        };
        let (train_x, train_y) = sample("task/train_inputs", self.n_train);
        let (test_x, test_y) = sample("task/test_inputs", self.n_test);
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
            target: Target::Classes { n_classes: 2 },
            description: format!(
                "sparse parity n={} k={} (secret S = {secret:?}, ±1 inputs): {}",
                self.n_bits,
                self.k,
                counts(self.n_train, self.n_test)
            ),
        }
    }
}

impl MultitaskSparseParitySpec {
    /// Each task's secret subset (sorted positions), all distinct. Drawn in task order, so the
    /// first tasks' subsets do not change when `n_tasks` grows.
    pub fn secrets(&self, seed: u64) -> Vec<Vec<usize>> {
        let mut rng = Rng::stream(seed, "task/secret");
        let mut seen = HashSet::new();
        let mut out = Vec::with_capacity(self.n_tasks);
        // validate guarantees C(n_bits, k) ≥ n_tasks, so rejection terminates.
        while out.len() < self.n_tasks {
            let s = random_subset(&mut rng, self.n_bits, self.k);
            if seen.insert(s.clone()) {
                out.push(s);
            }
        }
        out
    }

    /// `P(task = t) = (t+1)^(−α) / Σ_s (s+1)^(−α)`.
    pub fn task_probabilities(&self) -> Vec<f64> {
        let w: Vec<f64> = (0..self.n_tasks)
            .map(|t| ((t + 1) as f64).powf(-self.zipf_exponent))
            .collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|v| v / total).collect()
    }

    pub fn validate(&self) -> Result<(), TaskError> {
        let kind = "multitask_sparse_parity";
        at_least(
            key(kind, "n_tasks"),
            self.n_tasks,
            1,
            "the number of sparse-parity subtasks",
        )?;
        check_bits(kind, self.n_bits, self.k)?;
        let available = binomial(self.n_bits, self.k);
        if (self.n_tasks as u128) > available {
            return Err(invalid(
                key(kind, "n_tasks"),
                format!(
                    "needs {} distinct {}-subsets of {} bits, but only C({}, {}) = {available} exist",
                    self.n_tasks, self.k, self.n_bits, self.n_bits, self.k
                ),
                "raise n_bits (or k), or lower n_tasks",
            ));
        }
        finite_nonneg(
            key(kind, "zipf_exponent"),
            self.zipf_exponent,
            "0 gives uniform task frequencies",
        )?;
        check_counts(
            kind,
            self.n_train,
            self.n_test,
            self.n_tasks.saturating_add(self.n_bits).saturating_add(1),
        )
    }

    /// Assumes [`Self::validate`] passed.
    pub fn generate(&self, seed: u64) -> Dataset {
        let secrets = self.secrets(seed);
        let probs = self.task_probabilities();
        let cdf: Vec<f64> = probs
            .iter()
            .scan(0.0, |acc, p| {
                *acc += p;
                Some(*acc)
            })
            .collect();
        let (n_tasks, n_bits) = (self.n_tasks, self.n_bits);
        let width = n_tasks + n_bits;
        let sample = |label: &str, n: usize| {
            let mut rng = Rng::stream(seed, label);
            let mut words = Vec::new();
            let mut x = vec![0.0; n * width];
            let mut y = Vec::with_capacity(n);
            let mut tasks = Vec::with_capacity(n);
            for (i, row) in x.chunks_exact_mut(width).enumerate().take(n) {
                let u = rng.uniform();
                // Inverse CDF; the clamp guards against the last cdf entry rounding below 1.
                let t = cdf.partition_point(|&c| c <= u).min(n_tasks - 1);
                random_bits(&mut rng, n_bits, &mut words);
                row[t] = 1.0;
                for j in 0..n_bits {
                    if bit(&words, j) {
                        row[n_tasks + j] = 1.0;
                    }
                }
                debug_assert_eq!(y.len(), i);
                y.push(parity(&words, &secrets[t]));
                tasks.push(t);
            }
            (matrix(n, width, x), label_column(&y), tasks)
        };
        let (train_x, train_y, _) = sample("task/train_inputs", self.n_train);
        let (test_x, test_y, test_tasks) = sample("task/test_inputs", self.n_test);
        Dataset {
            sequence: None,
            mixture: None,
            subtasks: Some(super::Subtasks {
                test: test_tasks,
                frequency: probs.clone(),
            }),
            image: None,
            prompts: None,
            train_x,
            train_y,
            test_x,
            test_y,
            target: Target::Classes { n_classes: 2 },
            description: format!(
                "multitask sparse parity: {} tasks × parity of k={} of n={} bits, Zipf exponent {} \
                 (task 0 = {:.1}% of examples); inputs = {} one-hot task bits + {} data bits (0/1), \
                 task index = argmax of the task bits: {}",
                n_tasks,
                self.k,
                n_bits,
                self.zipf_exponent,
                100.0 * probs[0],
                n_tasks,
                n_bits,
                counts(self.n_train, self.n_test)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskSpec;

    #[test]
    fn sparse_parity_labels_match_the_secret() {
        let spec = SparseParitySpec {
            n_bits: 70,
            k: 5,
            n_train: 500,
            n_test: 300,
        };
        let d = spec.generate(11);
        let s = spec.secret(11);
        assert_eq!(s.len(), 5);
        assert!(s.windows(2).all(|w| w[0] < w[1]) && s[4] < 70);
        assert_eq!(d.train_x.dim(), (500, 70));
        assert_eq!(d.test_x.dim(), (300, 70));
        assert_eq!(d.target, Target::Classes { n_classes: 2 });
        let mut ones = 0;
        for (x, y) in [(&d.train_x, &d.train_y), (&d.test_x, &d.test_y)] {
            for (row, label) in x.rows().into_iter().zip(y.column(0)) {
                assert!(row.iter().all(|&v| v == 1.0 || v == -1.0));
                let prod: f64 = s.iter().map(|&i| row[i]).product();
                assert_eq!(*label, if prod < 0.0 { 1.0 } else { 0.0 });
                ones += *label as usize;
            }
        }
        // 800 fair labels: 5σ = 5·√(800/4) ≈ 71.
        assert!((ones as f64 - 400.0).abs() < 71.0, "{ones} ones of 800");
        assert!(
            d.description.contains(&format!("{s:?}")),
            "{}",
            d.description
        );
    }

    #[test]
    fn sparse_parity_deterministic_nested_and_seed_dependent() {
        let spec = SparseParitySpec {
            n_bits: 20,
            k: 3,
            n_train: 100,
            n_test: 50,
        };
        assert_eq!(spec.generate(1), spec.generate(1));
        assert_ne!(spec.generate(1).train_x, spec.generate(2).train_x);
        let secrets: HashSet<Vec<usize>> = (0..10).map(|s| spec.secret(s)).collect();
        assert!(secrets.len() > 5, "secrets vary with the seed: {secrets:?}");
        let big = SparseParitySpec {
            n_train: 300,
            ..spec.clone()
        }
        .generate(1);
        let small = spec.generate(1);
        assert_eq!(small.train_x, big.train_x.slice(ndarray::s![..100, ..]));
        assert_eq!(small.test_x, big.test_x);
    }

    #[test]
    fn multitask_inputs_labels_and_subsets() {
        let spec = MultitaskSparseParitySpec {
            n_tasks: 12,
            n_bits: 9,
            k: 3,
            zipf_exponent: 1.4,
            n_train: 3000,
            n_test: 500,
        };
        let d = spec.generate(4);
        let secrets = spec.secrets(4);
        assert_eq!(secrets.len(), 12);
        assert_eq!(
            secrets.iter().collect::<HashSet<_>>().len(),
            12,
            "distinct subsets"
        );
        assert!(secrets
            .iter()
            .all(|s| s.len() == 3 && s.windows(2).all(|w| w[0] < w[1]) && s[2] < 9));
        assert_eq!(d.input_dim(), 21);
        for (x, y) in [(&d.train_x, &d.train_y), (&d.test_x, &d.test_y)] {
            for (row, label) in x.rows().into_iter().zip(y.column(0)) {
                assert!(row.iter().all(|&v| v == 0.0 || v == 1.0));
                let hot: Vec<usize> = (0..12).filter(|&t| row[t] == 1.0).collect();
                assert_eq!(hot.len(), 1, "one control bit");
                let ones = secrets[hot[0]]
                    .iter()
                    .filter(|&&j| row[12 + j] == 1.0)
                    .count();
                assert_eq!(*label, (ones % 2) as f64);
            }
        }
        assert_eq!(spec.generate(4), d);
        assert_ne!(spec.generate(5).train_x, d.train_x);
        // More tasks keep the first tasks' subsets.
        let more = MultitaskSparseParitySpec {
            n_tasks: 20,
            ..spec.clone()
        };
        assert_eq!(more.secrets(4)[..12], secrets[..]);
    }

    /// Task counts are Binomial(N, p_t): each must lie within 5 standard deviations of N·p_t
    /// (a correct sampler fails this with probability < 10⁻⁵ over all tasks, while an exponent
    /// off by 0.1 moves task 9's share by ~20%, about 10σ here). The log–log slope of the head
    /// must also match −α to ±0.05.
    #[test]
    fn multitask_task_frequencies_follow_zipf() {
        let spec = MultitaskSparseParitySpec {
            n_tasks: 10,
            n_bits: 6,
            k: 2,
            zipf_exponent: 1.4,
            n_train: 200_000,
            n_test: 1,
        };
        let d = spec.generate(7);
        let n = d.n_train() as f64;
        let mut count = [0usize; 10];
        for row in d.train_x.rows() {
            count[(0..10).find(|&t| row[t] == 1.0).unwrap()] += 1;
        }
        let p = spec.task_probabilities();
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        for t in 0..10 {
            let (mean, sd) = (n * p[t], (n * p[t] * (1.0 - p[t])).sqrt());
            assert!(
                (count[t] as f64 - mean).abs() < 5.0 * sd,
                "task {t}: {} vs {mean:.0} ± {sd:.0}",
                count[t]
            );
        }
        let pts: Vec<(f64, f64)> = (0..10)
            .map(|t| (((t + 1) as f64).ln(), (count[t] as f64).ln()))
            .collect();
        let (mx, my) = (
            pts.iter().map(|p| p.0).sum::<f64>() / 10.0,
            pts.iter().map(|p| p.1).sum::<f64>() / 10.0,
        );
        let slope = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum::<f64>()
            / pts.iter().map(|p| (p.0 - mx).powi(2)).sum::<f64>();
        assert!((slope + 1.4).abs() < 0.05, "slope {slope}");
    }

    #[test]
    fn binomials() {
        assert_eq!(binomial(5, 2), 10);
        assert_eq!(binomial(100, 3), 161_700);
        assert_eq!(binomial(3, 4), 0);
        assert_eq!(binomial(1000, 500), u128::MAX);
    }

    #[test]
    fn invalid_specs_name_the_key() {
        let check = |spec: TaskSpec, key: &str| {
            let err = spec.validate().unwrap_err();
            assert!(matches!(err, TaskError::Invalid { .. }), "{err:?}");
            assert_eq!(err.key(), Some(key), "{err}");
        };
        check(
            TaskSpec::SparseParity(SparseParitySpec {
                k: 41,
                ..Default::default()
            }),
            "task.sparse_parity.k",
        );
        check(
            TaskSpec::SparseParity(SparseParitySpec {
                n_bits: 0,
                ..Default::default()
            }),
            "task.sparse_parity.n_bits",
        );
        check(
            TaskSpec::SparseParity(SparseParitySpec {
                n_train: 0,
                ..Default::default()
            }),
            "task.sparse_parity.n_train",
        );
        let mt = MultitaskSparseParitySpec::default;
        check(
            TaskSpec::MultitaskSparseParity(MultitaskSparseParitySpec {
                n_tasks: 11,
                n_bits: 5,
                k: 2,
                ..mt()
            }),
            "task.multitask_sparse_parity.n_tasks",
        );
        check(
            TaskSpec::MultitaskSparseParity(MultitaskSparseParitySpec {
                zipf_exponent: -1.0,
                ..mt()
            }),
            "task.multitask_sparse_parity.zipf_exponent",
        );
        check(
            TaskSpec::MultitaskSparseParity(MultitaskSparseParitySpec { k: 0, ..mt() }),
            "task.multitask_sparse_parity.k",
        );
        // Exactly as many tasks as subsets is fine.
        let all = MultitaskSparseParitySpec {
            n_tasks: 10,
            n_bits: 5,
            k: 2,
            n_train: 50,
            n_test: 10,
            ..mt()
        };
        all.validate().unwrap();
        assert_eq!(all.secrets(0).into_iter().collect::<HashSet<_>>().len(), 10);
    }
}
