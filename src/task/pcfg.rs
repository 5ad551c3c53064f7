//! A random probabilistic context-free grammar whose sentences, each closed by a `.` token,
//! form a token stream with a known entropy rate.
//!
//! Grammar: `nonterminals` symbols `N₀…`, each with `rules` rules; rule `r` of `A` emits its own
//! terminal `a_{A,r}` followed by `min(r, 2)` nonterminals drawn uniformly (stream
//! `"task/pcfg"`). Rule probabilities are Dirichlet(`concentration`) draws, redrawn until the
//! grammar is subcritical (spectral radius of the expected-children matrix `M` ≤ 0.9, so
//! sentences are finite with finite expected length). Sentences start from `N₀`.
//!
//! Entropy rate (exact): every rule has its own first terminal, so a left-to-right parser knows
//! which rule produced each token — the grammar is unambiguous and a sentence's probability is
//! its derivation's. The derivation entropy `H_A` and expected length `L_A` of each symbol solve
//!
//! `(I − M)·H = h_local`, `h_local(A) = −Σ_r p_{A,r} ln p_{A,r}`;  `(I − M)·L = 1`
//!
//! (each expansion is one rule choice and one terminal). Sentences are i.i.d. and their ends
//! are decodable, so the stream's entropy rate is `H(sentence)/E[tokens per sentence]` =
//! `H_{N₀}/(L_{N₀} + 1)` nats per token (the `+ 1` is the `.`; a renewal–reward argument).
//! Windows start at a sentence start; their Bayes loss tends to this rate as the window grows
//! (reported as `window_nats` = the rate: an estimate, exact only in that limit).

use serde::{Deserialize, Serialize};

use super::sequence::{
    self, d_concentration, d_n_test, d_n_train, d_seq_len, dirichlet, draw, EntropyRate,
    SequenceInfo,
};
use super::{at_least, counts, invalid, key, positive, Dataset, TaskError};
use crate::engine::Rng;

/// `[task.pcfg]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcfgSpec {
    /// 4 nonterminals: enough nesting to need a stack, small enough to learn quickly.
    #[serde(default = "d_nonterminals")]
    pub nonterminals: usize,
    /// 3 rules each: one leaf, one chain, one branching rule.
    #[serde(default = "d_rules")]
    pub rules: usize,
    /// Dirichlet concentration of the rule probabilities.
    #[serde(default = "d_concentration")]
    pub concentration: f64,
    #[serde(default = "d_seq_len")]
    pub seq_len: usize,
    #[serde(default = "d_n_train")]
    pub n_train: usize,
    #[serde(default = "d_n_test")]
    pub n_test: usize,
}

fn d_nonterminals() -> usize {
    4
}
fn d_rules() -> usize {
    3
}

impl Default for PcfgSpec {
    fn default() -> Self {
        PcfgSpec {
            nonterminals: d_nonterminals(),
            rules: d_rules(),
            concentration: d_concentration(),
            seq_len: d_seq_len(),
            n_train: d_n_train(),
            n_test: d_n_test(),
        }
    }
}

/// The drawn grammar. Terminal of rule `r` of `A`: token `A·rules + r`; `.` is the last token.
#[derive(Clone, Debug)]
pub struct Grammar {
    pub rules: usize,
    /// `prob[A][r]`.
    pub prob: Vec<Vec<f64>>,
    /// `children[A][r]`: the nonterminals after the terminal.
    pub children: Vec<Vec<Vec<usize>>>,
}

/// Largest spectral radius of the expected-children matrix accepted.
const MAX_RADIUS: f64 = 0.9;

impl Grammar {
    pub fn n(&self) -> usize {
        self.prob.len()
    }
    pub fn vocab(&self) -> usize {
        self.n() * self.rules + 1
    }
    pub fn stop_token(&self) -> usize {
        self.n() * self.rules
    }

    /// `M[A][B]`: expected occurrences of `B` in one expansion of `A`.
    fn expected_children(&self) -> Vec<Vec<f64>> {
        let n = self.n();
        let mut m = vec![vec![0.0; n]; n];
        for a in 0..n {
            for (r, ch) in self.children[a].iter().enumerate() {
                for &b in ch {
                    m[a][b] += self.prob[a][r];
                }
            }
        }
        m
    }

    fn spectral_radius(m: &[Vec<f64>]) -> f64 {
        let n = m.len();
        let mut v = vec![1.0; n];
        let mut rho = 0.0;
        for _ in 0..2000 {
            let w: Vec<f64> = (0..n)
                .map(|a| (0..n).map(|b| m[a][b] * v[b]).sum())
                .collect();
            let norm = w.iter().fold(0.0f64, |x, &y| x.max(y.abs()));
            if norm == 0.0 {
                return 0.0;
            }
            rho = norm / v.iter().fold(0.0f64, |x, &y| x.max(y.abs()));
            v = w.iter().map(|x| x / norm).collect();
        }
        rho
    }

    /// `(H_A, L_A)` for every nonterminal (nats, terminals).
    pub fn derivation_entropy_and_length(&self) -> (Vec<f64>, Vec<f64>) {
        let n = self.n();
        let m = self.expected_children();
        let a: Vec<Vec<f64>> = (0..n)
            .map(|i| (0..n).map(|j| (i == j) as u8 as f64 - m[i][j]).collect())
            .collect();
        let local: Vec<f64> = self
            .prob
            .iter()
            .map(|p| sequence::entropy_nats(p))
            .collect();
        (solve(&a, &local), solve(&a, &vec![1.0; n]))
    }

    pub fn entropy(&self) -> EntropyRate {
        let (h, l) = self.derivation_entropy_and_length();
        let rate = h[0] / (l[0] + 1.0);
        EntropyRate {
            nats: rate,
            window_nats: rate,
            method: format!(
                "exact stream rate H(sentence)/E[len+1] = {:.4}/{:.4} from (I−M)H = h_local, (I−M)L = 1",
                h[0],
                l[0] + 1.0
            ),
        }
    }

    /// One sentence followed by `.`, appended to `out` (explicit stack, leftmost first).
    pub fn sentence(&self, rng: &mut Rng, out: &mut Vec<usize>) {
        let mut stack = vec![0usize];
        while let Some(a) = stack.pop() {
            let r = draw(rng, &self.prob[a]);
            out.push(a * self.rules + r);
            stack.extend(self.children[a][r].iter().rev());
        }
        out.push(self.stop_token());
    }
}

/// Gaussian elimination with partial pivoting (the systems are tiny and well conditioned:
/// `I − M` with `ρ(M) ≤ 0.9`).
fn solve(a: &[Vec<f64>], b: &[f64]) -> Vec<f64> {
    let n = b.len();
    let mut m: Vec<Vec<f64>> = a
        .iter()
        .zip(b)
        .map(|(row, &bi)| row.iter().copied().chain([bi]).collect())
        .collect();
    for col in 0..n {
        let piv = (col..n)
            .max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))
            .unwrap_or(col);
        m.swap(col, piv);
        for r in 0..n {
            if r != col {
                let f = m[r][col] / m[col][col];
                for c in col..=n {
                    m[r][c] -= f * m[col][c];
                }
            }
        }
    }
    (0..n).map(|i| m[i][n] / m[i][i]).collect()
}

impl PcfgSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        let k = |f: &str| key("pcfg", f);
        at_least(
            k("nonterminals"),
            self.nonterminals,
            1,
            "e.g. nonterminals = 4",
        )?;
        at_least(
            k("rules"),
            self.rules,
            2,
            "one leaf rule and at least one more",
        )?;
        if self.nonterminals * self.rules > 4096 {
            return Err(invalid(
                k("rules"),
                format!(
                    "nonterminals × rules = {} terminals is too many (limit 4096)",
                    self.nonterminals * self.rules
                ),
                "lower nonterminals or rules",
            ));
        }
        positive(k("concentration"), self.concentration, "1 draws uniformly")?;
        sequence::validate_windows("pcfg", self.seq_len, self.n_train, self.n_test)
    }

    /// The grammar drawn for `seed` (the first subcritical draw).
    pub fn grammar(&self, seed: u64) -> Result<Grammar, TaskError> {
        let mut rng = Rng::stream(seed, "task/pcfg");
        let n = self.nonterminals;
        for _ in 0..1000 {
            let children = (0..n)
                .map(|_| {
                    (0..self.rules)
                        .map(|r| {
                            (0..r.min(2))
                                .map(|_| rng.below(n as u64) as usize)
                                .collect()
                        })
                        .collect()
                })
                .collect();
            let prob = (0..n)
                .map(|_| dirichlet(&mut rng, self.rules, self.concentration))
                .collect();
            let g = Grammar {
                rules: self.rules,
                prob,
                children,
            };
            if Grammar::spectral_radius(&g.expected_children()) <= MAX_RADIUS {
                return Ok(g);
            }
        }
        Err(invalid(
            key("pcfg", "concentration"),
            "no subcritical grammar in 1000 draws (sentences would be infinite)",
            "raise the concentration or lower the rules per nonterminal",
        ))
    }

    pub fn generate(&self, seed: u64) -> Result<Dataset, TaskError> {
        let g = self.grammar(seed)?;
        let len = self.seq_len + 1;
        let sample = |label: &str, n: usize| {
            let mut rng = Rng::stream(seed, label);
            (0..n)
                .map(|_| {
                    let mut w = Vec::with_capacity(len + 16);
                    while w.len() < len {
                        g.sentence(&mut rng, &mut w);
                    }
                    w.truncate(len);
                    w
                })
                .collect::<Vec<_>>()
        };
        let train = sample("task/train", self.n_train);
        let test = sample("task/test", self.n_test);
        let entropy = g.entropy();
        let description = format!(
            "pcfg {}×{} rules (entropy rate {:.4} nats = {:.4} bits/token): {} windows of {}",
            self.nonterminals,
            self.rules,
            entropy.nats,
            entropy.bits(),
            counts(self.n_train, self.n_test),
            self.seq_len
        );
        let mut vocab: Vec<String> = (0..g.n() * g.rules)
            .map(|t| {
                format!(
                    "{}{}",
                    (b'a' + (t / g.rules % 26) as u8) as char,
                    t % g.rules
                )
            })
            .collect();
        vocab.push(".".into());
        let info = SequenceInfo {
            vocab,
            seq_len: self.seq_len,
            entropy: Some(entropy),
            trained: sequence::Trained::All,
        };
        Ok(sequence::dataset(
            &train,
            &test,
            self.seq_len,
            info,
            description,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Closed forms for one nonterminal: `A → a | b A` (geometric length, `L = 1/q`,
    /// `H = h(q)/q`) and `A → a | b A A` (`L = 1/(2q − 1)`, `H = h(q)·L`).
    #[test]
    fn derivation_entropy_matches_closed_forms() {
        let q: f64 = 0.7;
        let hq = -(q * q.ln() + (1.0 - q) * (1.0 - q).ln());
        for (children, l_want) in [(vec![0usize], 1.0 / q), (vec![0, 0], 1.0 / (2.0 * q - 1.0))] {
            let g = Grammar {
                rules: 2,
                prob: vec![vec![q, 1.0 - q]],
                children: vec![vec![vec![], children]],
            };
            let (h, l) = g.derivation_entropy_and_length();
            assert!((l[0] - l_want).abs() < 1e-12, "{} vs {l_want}", l[0]);
            assert!((h[0] - hq * l_want).abs() < 1e-12);
            assert!((g.entropy().nats - hq * l_want / (l_want + 1.0)).abs() < 1e-12);
        }
    }

    /// A random grammar: the mean of −ln p(derivation) and of the length over many sampled
    /// sentences match the linear solves (within 4 standard errors).
    #[test]
    fn derivation_entropy_matches_sampling() {
        let g = PcfgSpec::default().grammar(5).unwrap();
        let (h, l) = g.derivation_entropy_and_length();
        let mut rng = Rng::new(8);
        let n = 100_000;
        let (mut s1, mut s2, mut len1, mut len2) = (0.0, 0.0, 0.0, 0.0);
        let mut toks = Vec::new();
        for _ in 0..n {
            toks.clear();
            g.sentence(&mut rng, &mut toks);
            let nll: f64 = toks[..toks.len() - 1]
                .iter()
                .map(|&t| -g.prob[t / g.rules][t % g.rules].ln())
                .sum();
            let len = (toks.len() - 1) as f64;
            s1 += nll;
            s2 += nll * nll;
            len1 += len;
            len2 += len * len;
        }
        let nf = n as f64;
        let (mh, ml) = (s1 / nf, len1 / nf);
        let se_h = ((s2 / nf - mh * mh) / nf).sqrt();
        let se_l = ((len2 / nf - ml * ml) / nf).sqrt();
        assert!((mh - h[0]).abs() < 4.0 * se_h, "{mh} vs {} ± {se_h}", h[0]);
        assert!((ml - l[0]).abs() < 4.0 * se_l, "{ml} vs {} ± {se_l}", l[0]);
    }

    /// The stream's mean −ln p per token (from the rule probabilities along a long sample)
    /// matches the entropy rate.
    #[test]
    fn stream_rate_matches_a_long_sample() {
        let g = PcfgSpec::default().grammar(2).unwrap();
        let mut rng = Rng::new(4);
        let mut toks = Vec::new();
        for _ in 0..50_000 {
            g.sentence(&mut rng, &mut toks);
        }
        let nll: f64 = toks
            .iter()
            .filter(|&&t| t != g.stop_token())
            .map(|&t| -g.prob[t / g.rules][t % g.rules].ln())
            .sum();
        let rate = nll / toks.len() as f64;
        let e = g.entropy();
        assert!(
            (rate - e.nats).abs() < 0.02 * e.nats,
            "{rate} vs {}",
            e.nats
        );
    }
}
