//! The quantization model of neural scaling (Michaud, Liu, Girit & Tegmark 2023, "The
//! Quantization Model of Neural Scaling", §2): a task is many discrete skills (quanta) used with
//! Zipfian frequencies `p_k ∝ k^−(α+1)`; a model that has learned the `n` most frequent has loss
//! `L(n) = L_u · Σ_{k>n} p_k` (`L_u` the loss on an unlearned quantum: ln 2 for a parity guessed
//! at chance). If `n ∝ N` (parameters), `L ∝ N^−α`; if a quantum is learned once it has been seen
//! `τ` times, `n(D)` is the largest `k` with `D·p_k ≥ τ`, so `n ∝ D^(1/(α+1))` and
//! `L ∝ D^−α/(α+1)`.
//!
//! Those are the asymptotic exponents, for infinitely many quanta. With `T` subtasks the tail is
//! cut at `T` and falls faster as `n` nears it: over a measured range of `n` the law the model
//! predicts is the least-squares slope of `ln L(n)` against `ln n` there
//! ([`Quanta::effective_exponent`]), which tends to α when `n ≪ T`.

/// Quanta frequencies and the loss of an unlearned quantum.
#[derive(Clone, Debug)]
pub struct Quanta {
    /// `p[k]`: the frequency of quantum `k` (0 the most frequent), summing to 1.
    pub p: Vec<f64>,
    /// The loss on a quantum not learned.
    pub unlearned_loss: f64,
    /// The Zipf exponent `α + 1` of the frequencies.
    pub zipf_exponent: f64,
}

impl Quanta {
    /// `n_tasks` binary subtasks with `p_k ∝ (k+1)^−zipf_exponent` (multitask sparse parity:
    /// an unlearned parity is guessed at chance, loss ln 2).
    pub fn zipf(n_tasks: usize, zipf_exponent: f64) -> Quanta {
        let w: Vec<f64> = (0..n_tasks)
            .map(|k| ((k + 1) as f64).powf(-zipf_exponent))
            .collect();
        let total: f64 = w.iter().sum();
        Quanta {
            p: w.into_iter().map(|v| v / total).collect(),
            unlearned_loss: std::f64::consts::LN_2,
            zipf_exponent,
        }
    }

    /// `α`, the asymptotic exponent of loss against parameters (`n ∝ N`).
    pub fn params_exponent(&self) -> f64 {
        self.zipf_exponent - 1.0
    }

    /// `α/(α+1)`, the asymptotic exponent of loss against data.
    pub fn data_exponent(&self) -> f64 {
        (self.zipf_exponent - 1.0) / self.zipf_exponent
    }

    /// `L(n)`: the loss with the `n` most frequent quanta learned and the rest at chance.
    pub fn loss(&self, n: usize) -> f64 {
        // A fold from +0 (an empty `sum` of floats is −0).
        self.unlearned_loss * self.p.iter().skip(n).fold(0.0, |a, p| a + p)
    }

    /// The exponent the model predicts over learned counts `lo ..= hi` (`1 ≤ lo < hi < T`):
    /// minus the least-squares slope of `ln L(n)` against `ln n` at 32 log-spaced counts.
    pub fn effective_exponent(&self, lo: usize, hi: usize) -> f64 {
        let hi = hi.min(self.p.len().saturating_sub(1));
        assert!(
            1 <= lo && lo < hi,
            "effective_exponent needs 1 ≤ lo < hi < T"
        );
        let mut ns: Vec<usize> = (0..32)
            .map(|i| {
                let t = i as f64 / 31.0;
                ((lo as f64).ln() * (1.0 - t) + (hi as f64).ln() * t)
                    .exp()
                    .round() as usize
            })
            .collect();
        ns.dedup();
        let xs: Vec<f64> = ns.iter().map(|&n| n as f64).collect();
        let ys: Vec<f64> = ns.iter().map(|&n| self.loss(n)).collect();
        -crate::coordcheck::log_slope(&xs, &ys)
    }

    /// `n(D)`: how many quanta have been seen at least `tau` times in `d` examples (a prefix,
    /// since frequencies fall).
    pub fn learned_with_examples(&self, d: f64, tau: f64) -> usize {
        self.p.iter().take_while(|&&p| d * p >= tau).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Far from the cut (T = 10⁶, n = 10 … 1000) the effective exponent is α, the asymptote;
    /// checked for α = 0.4 and 1.
    #[test]
    fn effective_exponent_tends_to_alpha_with_many_quanta() {
        for z in [1.4, 2.0] {
            let q = Quanta::zipf(1_000_000, z);
            let e = q.effective_exponent(10, 1000);
            assert!((e - (z - 1.0)).abs() < 0.01, "zipf {z}: {e}");
        }
    }

    /// The cut steepens the law: with 500 quanta (the example's) over n = 2 … 30 the model
    /// predicts a larger exponent than α = 0.4 (computed by hand from the partial sums:
    /// −Δln L/Δln n between n = 2 and 30 is ln(L(2)/L(30))/ln 15 = 0.466).
    #[test]
    fn a_finite_number_of_quanta_steepens_the_law() {
        let q = Quanta::zipf(500, 1.4);
        let two_point = (q.loss(2) / q.loss(30)).ln() / 15f64.ln();
        assert!((two_point - 0.466).abs() < 0.005, "{two_point}");
        let e = q.effective_exponent(2, 30);
        assert!(e > 0.42 && e < 0.55, "{e}");
        assert!((q.params_exponent() - 0.4).abs() < 1e-12);
        assert!((q.data_exponent() - 0.4 / 1.4).abs() < 1e-12);
        // L(0) is chance on everything; L(T) = 0.
        assert!((q.loss(0) - std::f64::consts::LN_2).abs() < 1e-12);
        assert_eq!(q.loss(500), 0.0);
    }

    /// n(D) grows like D^(1/(α+1)): ×10^1.4 more data, ×10 more quanta (far from the cut).
    #[test]
    fn learned_quanta_grow_with_data_as_the_model_says() {
        let q = Quanta::zipf(1_000_000, 1.4);
        let (a, b) = (
            q.learned_with_examples(1e6, 100.0),
            q.learned_with_examples(1e6 * 10f64.powf(1.4), 100.0),
        );
        let ratio = b as f64 / a as f64;
        assert!((ratio - 10.0).abs() < 0.2, "{a} → {b}");
    }
}
