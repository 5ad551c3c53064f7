//! Losses with PyTorch's default reductions, returning the loss and writing `∂L/∂output`:
//! MSE and cross-entropy over feature rows, and the language model's cross-entropy over tokens.

use crate::engine::{ops, par, Float};
use crate::spec::LossKind;

/// Loss value (f64), the samples it averages over and, for classification, how many of them
/// the argmax predicts.
#[derive(Clone, Copy, Debug, Default)]
pub struct LossValue {
    /// Mean over the counted samples (rows, or tokens whose target is not [`IGNORE`]).
    pub loss: f64,
    pub correct: Option<usize>,
    /// Samples the mean is over.
    pub counted: usize,
}

/// `out: [rows, k]`, `target`: `[rows, k]` values (MSE) or `[rows, 1]` class indices (CE).
/// Writes `∂L/∂out` into `grad` when given.
pub fn loss<F: Float>(
    kind: LossKind,
    out: &[F],
    target: &[F],
    rows: usize,
    k: usize,
    grad: Option<&mut [F]>,
) -> LossValue {
    match kind {
        LossKind::Mse => mse(out, target, rows, k, grad),
        LossKind::CrossEntropy => cross_entropy(out, target, rows, k, grad),
    }
}

/// `torch.nn.MSELoss()`: mean of `(y − t)²` over all `rows·k` elements. For class targets
/// (`target` is `[rows, 1]` but `k > 1`) the target is the one-hot vector.
fn mse<F: Float>(
    out: &[F],
    target: &[F],
    rows: usize,
    k: usize,
    grad: Option<&mut [F]>,
) -> LossValue {
    let n = (rows * k) as f64;
    let one_hot = target.len() < rows * k;
    let t_at = |r: usize, j: usize| -> F {
        if one_hot {
            if target[r].f64() as usize == j {
                F::one()
            } else {
                F::zero()
            }
        } else {
            target[r * k + j]
        }
    };
    let mut sum = 0.0;
    let scale = F::of(2.0 / n);
    match grad {
        Some(g) => {
            for r in 0..rows {
                for j in 0..k {
                    let d = out[r * k + j] - t_at(r, j);
                    sum += d.f64() * d.f64();
                    g[r * k + j] = scale * d;
                }
            }
        }
        None => {
            for r in 0..rows {
                for j in 0..k {
                    let d = out[r * k + j] - t_at(r, j);
                    sum += d.f64() * d.f64();
                }
            }
        }
    }
    let correct = one_hot.then(|| {
        (0..rows)
            .filter(|&r| argmax(&out[r * k..(r + 1) * k]) == target[r].f64() as usize)
            .count()
    });
    LossValue {
        loss: sum / n,
        correct,
        counted: rows,
    }
}

/// `torch.nn.CrossEntropyLoss()`: mean over rows of `logsumexp(y) − y_t`; gradient
/// `(softmax(y) − onehot(t)) / rows`.
fn cross_entropy<F: Float>(
    out: &[F],
    target: &[F],
    rows: usize,
    k: usize,
    mut grad: Option<&mut [F]>,
) -> LossValue {
    let mut sum = 0.0;
    let mut correct = 0;
    let inv_rows = F::of(1.0 / rows as f64);
    for r in 0..rows {
        let y = &out[r * k..(r + 1) * k];
        let t = target[r].f64() as usize;
        let max = y.iter().copied().fold(F::neg_infinity(), F::max);
        let mut z = F::zero();
        for &v in y {
            z += (v - max).exp_();
        }
        let lse = max + z.ln();
        sum += (lse - y[t]).f64();
        if argmax(y) == t {
            correct += 1;
        }
        if let Some(g) = grad.as_deref_mut() {
            let gr = &mut g[r * k..(r + 1) * k];
            let inv_z = F::one() / z;
            for (gv, &v) in gr.iter_mut().zip(y) {
                *gv = (v - max).exp_() * inv_z * inv_rows;
            }
            gr[t] -= inv_rows;
        }
    }
    LossValue {
        loss: sum / rows as f64,
        correct: Some(correct),
        counted: rows,
    }
}

/// A target that is not trained on (prompt tokens of a modular-arithmetic sequence).
pub const IGNORE: usize = usize::MAX;

/// `torch.nn.functional.cross_entropy(logits, targets, ignore_index)`: softmax over each row of
/// `logits: [rows, vocab]`, averaged over rows whose target is not [`IGNORE`]. Writes
/// `∂L/∂logits` into `grad` when given (zero on ignored rows).
pub fn token_cross_entropy<F: Float>(
    logits: &[F],
    targets: &[usize],
    rows: usize,
    vocab: usize,
    grad: Option<&mut [F]>,
) -> LossValue {
    let counted = targets[..rows].iter().filter(|&&t| t != IGNORE).count();
    let inv = F::of(1.0 / counted.max(1) as f64);
    // Row blocks over the pool; each block's loss sum and hit count, added in block order.
    let blocks = rows.div_ceil(ops::ROW_BLOCK);
    CE_PARTIAL.with(|partial| {
        let mut partial = partial.borrow_mut();
        if partial.len() < blocks {
            partial.resize(blocks, (0.0, 0));
        }
        cross_entropy_blocks(
            logits,
            targets,
            rows,
            vocab,
            grad,
            inv,
            &mut partial[..blocks],
        );
        let (sum, correct) = partial[..blocks]
            .iter()
            .fold((0.0, 0), |(s, c), &(ps, pc)| (s + ps, c + pc));
        LossValue {
            loss: sum / counted.max(1) as f64,
            correct: Some(correct),
            counted,
        }
    })
}

thread_local! {
    /// [`token_cross_entropy`]'s per-block (loss sum, hits), grown once per thread.
    static CE_PARTIAL: std::cell::RefCell<Vec<(f64, usize)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// [`token_cross_entropy`] over row blocks: block `i`'s loss sum and argmax hits into `partial[i]`.
fn cross_entropy_blocks<F: Float>(
    logits: &[F],
    targets: &[usize],
    rows: usize,
    vocab: usize,
    grad: Option<&mut [F]>,
    inv: F,
    partial: &mut [(f64, usize)],
) {
    let with_grad = grad.is_some();
    let mut no_grad: [F; 0] = [];
    let grad = grad.unwrap_or(&mut no_grad);
    let g_width = if with_grad { vocab } else { 0 };
    let parts = (par::rows(grad, g_width), par::slot(partial, 1));
    par::for_row_blocks(rows, parts, |_, block, (grads, part)| {
        let (mut sum, mut correct) = (0.0f64, 0usize);
        let first = block.start;
        if !with_grad {
            for r in block {
                let t = targets[r];
                if t == IGNORE {
                    continue;
                }
                let z = &logits[r * vocab..(r + 1) * vocab];
                let (arg, max) = argmax_max(z);
                correct += (arg == t) as usize;
                let s: F = z.iter().map(|&v| (v - max).exp_()).sum();
                sum += max.f64() + s.f64().ln() - z[t].f64();
            }
            part[0] = (sum, correct);
            return;
        }
        // Four rows at a time: each row's max and sum stay one chain in column order (the
        // same bits as a row alone), but four chains interleave, and the exponentials run as
        // a vectorized pass of their own (a reference GPT step's loss took 0.38 ms row by row).
        let mut r = block.start;
        while r < block.end {
            let q = (block.end - r).min(4);
            let rows_z: [&[F]; 4] = std::array::from_fn(|i| {
                let row = r + i.min(q - 1);
                &logits[row * vocab..(row + 1) * vocab]
            });
            let (arg, max) = argmax_max4(rows_z, q);
            let at = (r - first) * vocab;
            let g4 = &mut grads[at..at + q * vocab];
            for (i, g) in g4.chunks_exact_mut(vocab).enumerate() {
                let m = max[i];
                for (gv, &v) in g.iter_mut().zip(rows_z[i]) {
                    *gv = (v - m).exp_();
                }
            }
            let s = row_sums4(g4, vocab, q);
            for (i, g) in g4.chunks_exact_mut(vocab).enumerate() {
                let t = targets[r + i];
                if t == IGNORE {
                    g.fill(F::zero());
                    continue;
                }
                correct += (arg[i] == t) as usize;
                sum += max[i].f64() + s[i].f64().ln() - rows_z[i][t].f64();
                let k = inv / s[i];
                for gv in g.iter_mut() {
                    *gv *= k;
                }
                g[t] -= inv;
            }
            r += q;
        }
        part[0] = (sum, correct);
    });
}

/// The first index of the largest element and that element (`v > max` from `z[0]` on, so a
/// NaN is never taken after the first element).
fn argmax_max<F: Float>(z: &[F]) -> (usize, F) {
    let (mut arg, mut max) = (0, z[0]);
    for (j, &v) in z.iter().enumerate() {
        if v > max {
            (arg, max) = (j, v);
        }
    }
    (arg, max)
}

/// [`argmax_max`] of `q ≤ 4` rows, their scans interleaved (rows past `q` repeat the last).
fn argmax_max4<F: Float>(z: [&[F]; 4], q: usize) -> ([usize; 4], [F; 4]) {
    if q < 4 {
        let mut out = ([0; 4], [F::zero(); 4]);
        for (i, row) in z.iter().take(q).enumerate() {
            (out.0[i], out.1[i]) = argmax_max(row);
        }
        return out;
    }
    let mut arg = [0; 4];
    let mut max = z.map(|row| row[0]);
    for j in 0..z[0].len() {
        for (i, row) in z.iter().enumerate() {
            let v = row[j];
            if v > max[i] {
                (arg[i], max[i]) = (j, v);
            }
        }
    }
    (arg, max)
}

/// Each of the `q ≤ 4` rows' sum (`[q, width]`), in column order per row as a plain loop adds
/// them, four rows' chains interleaved.
fn row_sums4<F: Float>(g: &[F], width: usize, q: usize) -> [F; 4] {
    let mut s = [F::zero(); 4];
    if q < 4 {
        for (i, row) in g.chunks_exact(width).enumerate() {
            s[i] = row.iter().fold(F::zero(), |a, &v| a + v);
        }
        return s;
    }
    let (r0, rest) = g.split_at(width);
    let (r1, rest) = rest.split_at(width);
    let (r2, r3) = rest.split_at(width);
    for j in 0..width {
        s[0] += r0[j];
        s[1] += r1[j];
        s[2] += r2[j];
        s[3] += r3[j];
    }
    s
}

fn argmax<F: Float>(y: &[F]) -> usize {
    let mut best = 0;
    for (i, &v) in y.iter().enumerate() {
        if v > y[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reference from Python's math module:
    /// `l = [2.0, -1.0, 0.5]; lse = math.log(sum(math.exp(v) for v in l)); lse - l[2]`
    /// = 1.7413112966571571, and for the second row `[0.1, 0.2, 0.3]`, target 0:
    /// `math.log(sum(math.exp(v) for v in [0.1, 0.2, 0.3])) - 0.1` = 1.201942848229244.
    #[test]
    fn cross_entropy_matches_reference() {
        let out = [2.0, -1.0, 0.5, 0.1, 0.2, 0.3];
        let target = [2.0, 0.0];
        let mut g = [0.0f64; 6];
        let v = loss(LossKind::CrossEntropy, &out, &target, 2, 3, Some(&mut g));
        let want = (1.7413112966571571 + 1.201942848229244) / 2.0;
        assert!((v.loss - want).abs() < 1e-14, "{}", v.loss);
        assert_eq!(v.correct, Some(0));
        // Each row's gradient sums to zero.
        assert!((g[0] + g[1] + g[2]).abs() < 1e-15);
    }

    /// Four rows at a time give each row's bits as the plain per-row loop computes them:
    /// its max from the first column on, its exponentials, their sum in column order.
    #[test]
    fn interleaved_rows_are_the_rows_alone() {
        let (rows, vocab) = (37, 65);
        let mut rng = crate::engine::Rng::stream(5, "ce");
        let logits: Vec<f32> = (0..rows * vocab)
            .map(|_| 3.0 * rng.normal() as f32)
            .collect();
        let targets: Vec<usize> = (0..rows)
            .map(|r| {
                if r % 7 == 3 {
                    IGNORE
                } else {
                    rng.below(vocab as u64) as usize
                }
            })
            .collect();
        let mut g = vec![0.0f32; rows * vocab];
        let v = token_cross_entropy(&logits, &targets, rows, vocab, Some(&mut g));
        let counted = targets.iter().filter(|&&t| t != IGNORE).count();
        let inv = 1.0 / counted as f32;
        let mut sum = 0.0f64;
        for r in 0..rows {
            let z = &logits[r * vocab..(r + 1) * vocab];
            let gr = &g[r * vocab..(r + 1) * vocab];
            let t = targets[r];
            if t == IGNORE {
                assert!(gr.iter().all(|&x| x == 0.0));
                continue;
            }
            let max = z.iter().fold(z[0], |m, &x| if x > m { x } else { m });
            let mut s = 0.0f32;
            let e: Vec<f32> = z.iter().map(|&x| (x - max).exp_()).collect();
            for &x in &e {
                s += x;
            }
            sum += max as f64 + (s as f64).ln() - z[t] as f64;
            for (j, (&got, &ej)) in gr.iter().zip(&e).enumerate() {
                let want = ej * (inv / s) - if j == t { inv } else { 0.0 };
                assert_eq!(got.to_bits(), want.to_bits(), "row {r} column {j}");
            }
        }
        // The loss adds the rows' terms in block order; the reference adds them in row order
        // (one block here: 37 rows).
        assert_eq!(v.loss, sum / counted as f64);
    }

    #[test]
    fn mse_is_mean_of_squares() {
        let out = [1.0, 2.0, 3.0, 4.0];
        let target = [1.5, 2.0, 2.0, 4.0];
        let mut g = [0.0; 4];
        let v = loss(LossKind::Mse, &out, &target, 2, 2, Some(&mut g));
        assert!((v.loss - (0.25 + 1.0) / 4.0).abs() < 1e-15);
        assert_eq!(g, [-0.25, 0.0, 0.5, 0.0]);
    }
}
