//! What the token-sequence tasks share: their encoding as a [`Dataset`], the vocabulary, and the
//! entropy rate of sources whose entropy is known.
//!
//! Encoding: `x: [n, T]` holds the input token ids and `y: [n, T]` the target ids (the input
//! shifted by one), exact integers in f64 arrays, every one a real token. Which positions carry a
//! loss is [`SequenceInfo::trained`] (all of them, or only the answer of a modular-arithmetic
//! prompt). The target is `Classes { n_classes: vocab }`.

use super::{at_least, key, matrix, size_ok, Dataset, Target, TaskError};

/// Which positions of a window carry a loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trained {
    /// Every position (language modelling).
    All,
    /// Only the last (the answer after a prompt).
    Last,
}

impl Trained {
    /// Whether position `t` of a `seq_len`-token window carries a loss.
    pub fn at(self, t: usize, seq_len: usize) -> bool {
        match self {
            Trained::All => true,
            Trained::Last => t + 1 == seq_len,
        }
    }
}

/// The entropy rate of a source, and the best loss a model can reach on its windows.
#[derive(Clone, Debug, PartialEq)]
pub struct EntropyRate {
    /// Nats per token.
    pub nats: f64,
    /// The cross-entropy of the Bayes-optimal predictor averaged over the positions of a window
    /// (nats per token): above `nats` where early positions lack context, equal otherwise.
    pub window_nats: f64,
    /// How it was computed (exact formula or a documented estimate), one line.
    pub method: String,
}

impl EntropyRate {
    pub fn bits(&self) -> f64 {
        self.nats / std::f64::consts::LN_2
    }
}

/// The vocabulary and what is known about a token-sequence task.
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceInfo {
    /// Printable form of each token id (a character, `<0x0a>` for a byte, a number, `=`).
    pub vocab: Vec<String>,
    /// Tokens per window (`T`).
    pub seq_len: usize,
    pub entropy: Option<EntropyRate>,
    /// The positions with a loss.
    pub trained: Trained,
}

impl SequenceInfo {
    /// The vocabulary as JSON (a list of strings), stored with the run as `vocab.json`.
    pub fn vocab_json(&self) -> String {
        serde_json::to_string(&self.vocab).unwrap_or_default()
    }
}

/// Windows of `T + 1` tokens → inputs `[n, T]` and next-token targets `[n, T]`.
pub(crate) fn windows_to_arrays(
    windows: &[Vec<usize>],
    seq_len: usize,
) -> (ndarray::Array2<f64>, ndarray::Array2<f64>) {
    let mut x = Vec::with_capacity(windows.len() * seq_len);
    let mut y = Vec::with_capacity(windows.len() * seq_len);
    for w in windows {
        x.extend(w[..seq_len].iter().map(|&t| t as f64));
        y.extend(w[1..=seq_len].iter().map(|&t| t as f64));
    }
    (
        matrix(windows.len(), seq_len, x),
        matrix(windows.len(), seq_len, y),
    )
}

/// The dataset of train and test windows.
pub(crate) fn dataset(
    train: &[Vec<usize>],
    test: &[Vec<usize>],
    seq_len: usize,
    info: SequenceInfo,
    description: String,
) -> Dataset {
    let (train_x, train_y) = windows_to_arrays(train, seq_len);
    let (test_x, test_y) = windows_to_arrays(test, seq_len);
    Dataset {
        train_x,
        train_y,
        test_x,
        test_y,
        target: Target::Classes {
            n_classes: info.vocab.len(),
        },
        description,
        sequence: Some(info),
        subtasks: None,
        image: None,
        mixture: None,
        prompts: None,
    }
}

/// `−Σ p ln p` (nats), skipping zeros.
pub fn entropy_nats(p: &[f64]) -> f64 {
    -p.iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| v * v.ln())
        .sum::<f64>()
}

/// A Dirichlet(α, …, α) draw of length `n` (normalized Gamma(α) draws).
pub(crate) fn dirichlet(rng: &mut crate::engine::Rng, n: usize, alpha: f64) -> Vec<f64> {
    let mut g: Vec<f64> = (0..n).map(|_| rng.gamma(alpha).max(1e-300)).collect();
    let s: f64 = g.iter().sum();
    for v in &mut g {
        *v /= s;
    }
    g
}

/// Inverse-CDF draw of an index from probabilities `p`.
pub(crate) fn draw(rng: &mut crate::engine::Rng, p: &[f64]) -> usize {
    let u = rng.uniform();
    let mut acc = 0.0;
    for (i, &v) in p.iter().enumerate() {
        acc += v;
        if u < acc {
            return i;
        }
    }
    p.len() - 1
}

// Defaults shared by the drawn sources' specs (`[task.markov]`, `[task.pcfg]`).

/// Dirichlet concentration 1: distributions uniform on the simplex.
pub(crate) fn d_concentration() -> f64 {
    1.0
}
/// 64 tokens per window: the reference GPT's context.
pub(crate) fn d_seq_len() -> usize {
    64
}
/// Training windows.
pub(crate) fn d_n_train() -> usize {
    2048
}
/// Validation windows.
pub(crate) fn d_n_test() -> usize {
    256
}

/// Checks a drawn source's window settings (`[task.<kind>]`'s `seq_len`, `n_train`, `n_test`).
pub(crate) fn validate_windows(
    kind: &str,
    seq_len: usize,
    n_train: usize,
    n_test: usize,
) -> Result<(), TaskError> {
    let k = |f: &str| key(kind, f);
    at_least(k("seq_len"), seq_len, 1, "e.g. seq_len = 64")?;
    at_least(k("n_train"), n_train, 1, "e.g. n_train = 2048")?;
    at_least(k("n_test"), n_test, 1, "e.g. n_test = 256")?;
    size_ok(
        kind,
        n_train + n_test,
        seq_len * 2,
        "n_train, n_test or seq_len",
    )
}
