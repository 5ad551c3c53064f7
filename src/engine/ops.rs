//! The narrow set of array operations the models use. Every buffer is a contiguous row-major
//! slice with explicit dimensions (the llm.c convention): this is the seam a CUDA backend would
//! replace.

use super::Float;

/// Whether a GEMM operand is used as stored (`N`) or transposed (`T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

/// `C[m,n] ← α·op(A)·op(B) + β·C`, where `op(A)` is `[m,k]` and `op(B)` is `[k,n]`; `A` is
/// stored row-major as `[m,k]` (N) or `[k,m]` (T), `B` as `[k,n]` (N) or `[n,k]` (T).
#[allow(clippy::too_many_arguments)]
pub fn gemm<F: Float>(
    ta: Op,
    tb: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: F,
    a: &[F],
    b: &[F],
    beta: F,
    c: &mut [F],
) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "gemm: buffer too small");
    let (rsa, csa) = match ta {
        Op::N => (k as isize, 1),
        Op::T => (1, m as isize),
    };
    let (rsb, csb) = match tb {
        Op::N => (n as isize, 1),
        Op::T => (1, k as isize),
    };
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: the asserts above bound every index the strides reach; `c` is a unique borrow,
    // so it aliases neither `a` nor `b`.
    unsafe {
        F::gemm_raw(
            m,
            k,
            n,
            alpha,
            a.as_ptr(),
            rsa,
            csa,
            b.as_ptr(),
            rsb,
            csb,
            beta,
            c.as_mut_ptr(),
            n as isize,
            1,
        )
    }
}

/// Every row of `out` (`[rows, width]`) set to `bias` (or zero), ready for a GEMM with β = 1.
pub fn fill_rows<F: Float>(out: &mut [F], width: usize, bias: Option<&[F]>) {
    match bias {
        Some(b) => {
            for row in out.chunks_exact_mut(width) {
                row.copy_from_slice(&b[..width]);
            }
        }
        None => out.fill(F::zero()),
    }
}

/// `acc[j] += Σ_r g[r, j]` (bias gradients).
pub fn add_column_sums<F: Float>(g: &[F], width: usize, acc: &mut [F]) {
    for row in g.chunks_exact(width) {
        for (a, &v) in acc.iter_mut().zip(row) {
            *a += v;
        }
    }
}

/// `Σ x²` accumulated in f64, so norms of f32 tensors do not lose digits.
pub fn sum_squares<F: Float>(x: &[F]) -> f64 {
    x.iter().map(|v| v.f64() * v.f64()).sum()
}

/// Mean and (population) standard deviation, accumulated in f64.
pub fn mean_std<F: Float>(x: &[F]) -> (f64, f64) {
    if x.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = x.len() as f64;
    let mean = x.iter().map(|v| v.f64()).sum::<f64>() / n;
    let var = x.iter().map(|v| (v.f64() - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// `y *= s`.
pub fn scale<F: Float>(y: &mut [F], s: F) {
    for v in y {
        *v *= s;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(ta: Op, tb: Op, m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let av = if ta == Op::N { a[i * k + p] } else { a[p * m + i] };
                    let bv = if tb == Op::N { b[p * n + j] } else { b[j * k + p] };
                    c[i * n + j] += av * bv;
                }
            }
        }
        c
    }

    #[test]
    fn gemm_all_transposes_match_naive() {
        let (m, n, k) = (5, 7, 3);
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        for ta in [Op::N, Op::T] {
            for tb in [Op::N, Op::T] {
                let mut c = vec![1.0; m * n];
                gemm(ta, tb, m, n, k, 2.0, &a, &b, 0.5, &mut c);
                let want = naive(ta, tb, m, n, k, &a, &b);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - (2.0 * w + 0.5)).abs() < 1e-12);
                }
            }
        }
    }
}
