//! Lockstep lanes: `LANES` same-shape models, one per SIMD lane. A tensor is a slice of
//! [`Lanes`], element `e` of model `l` at `[e][l]`, so every operation of one model becomes the
//! same operation on a whole vector, whatever the model's width: a width-4 layer fills the
//! vector as well as a width-64 one.
//!
//! Each lane must compute exactly the bits the same model computes alone, so [`gemm`] follows
//! [`super::ops::gemm_ex`]'s choices for dense operands step by step: its degenerate shapes
//! (a dot product in eight partial sums, an axpy, an outer product, each with its own order of
//! multiplies and adds), and otherwise the AVX-512 kernels' arithmetic — one fused multiply-add
//! chain over `k` from zero, then `α·acc`, then `β·C` fused onto it. That holds while `k` fits
//! one of the kernels' `KC` blocks ([`MAX_K`]); callers check. The tests compare every branch
//! bit for bit with `gemm_ex`.

use super::ops::Op;

/// Models per group: one AVX-512 vector of f32.
pub const LANES: usize = 16;

/// One element of every model in a group.
pub type Lanes = [f32; LANES];

/// The longest inner dimension [`gemm`] reproduces: the AVX-512 kernels' `KC` (beyond it they
/// add partial products per block).
pub const MAX_K: usize = super::sgemm::KC;

/// A tensor of `n` elements, zero.
pub fn zeros(n: usize) -> Vec<Lanes> {
    vec![[0.0; LANES]; n]
}

/// `C ← α·op(A)·op(B) + β·C` for every lane, dense row-major operands (`op(A): [m, k]`,
/// `op(B): [k, n]`, `C: [m, n]`), with the bits [`super::ops::gemm_ex`] gives each lane's
/// model alone on an AVX-512 machine. `k ≤ MAX_K`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[Lanes],
    b: &[Lanes],
    beta: f32,
    c: &mut [Lanes],
) {
    assert!(
        k <= MAX_K && a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "lanes::gemm: shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    if k > 0 {
        // `gemm_ex`'s degenerate shapes, in its order.
        if n == 1 && ta == Op::N {
            return dot_rows(m, k, alpha, a, b, beta, c);
        }
        if m == 1 && tb == Op::N {
            return axpy(n, k, alpha, a, b, beta, c);
        }
        if k == 1 {
            return outer(m, n, alpha, a, b, beta, c);
        }
    }
    // The kernels: A(i, p) and B(p, j) through the transposes.
    let a_at = |i: usize, p: usize| match ta {
        Op::N => &a[i * k + p],
        Op::T => &a[p * m + i],
    };
    let b_at = |p: usize, j: usize| match tb {
        Op::N => &b[p * n + j],
        Op::T => &b[j * k + p],
    };
    // Blocks of output columns share each load of A(i, p).
    const J: usize = 4;
    for i in 0..m {
        let mut j0 = 0;
        while j0 < n {
            let jn = J.min(n - j0);
            let mut acc = [[0.0f32; LANES]; J];
            for p in 0..k {
                let av = a_at(i, p);
                for (jj, acc) in acc.iter_mut().enumerate().take(jn) {
                    let bv = b_at(p, j0 + jj);
                    for l in 0..LANES {
                        acc[l] = av[l].mul_add(bv[l], acc[l]);
                    }
                }
            }
            for (jj, acc) in acc.iter().enumerate().take(jn) {
                let cv = &mut c[i * n + j0 + jj];
                for l in 0..LANES {
                    let v = acc[l] * alpha;
                    cv[l] = if beta != 0.0 {
                        beta.mul_add(cv[l], v)
                    } else {
                        v
                    };
                }
            }
            j0 += jn;
        }
    }
}

/// `n = 1`: each row of A dotted with B ([`super::ops::dot`]: eight partial sums of products
/// in a fixed tree, then the tail), then `α·d (+ β·c)`.
#[allow(clippy::too_many_arguments)]
fn dot_rows(m: usize, k: usize, alpha: f32, a: &[Lanes], b: &[Lanes], beta: f32, c: &mut [Lanes]) {
    let whole = k / 8 * 8;
    for (i, cv) in c[..m].iter_mut().enumerate() {
        let row = &a[i * k..(i + 1) * k];
        let mut acc = [[0.0f32; LANES]; 8];
        for (xs, ys) in row[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
            for q in 0..8 {
                for l in 0..LANES {
                    acc[q][l] += xs[q][l] * ys[q][l];
                }
            }
        }
        let mut tail = [0.0f32; LANES];
        for p in whole..k {
            for l in 0..LANES {
                tail[l] += row[p][l] * b[p][l];
            }
        }
        for l in 0..LANES {
            let d = super::ops::fold_lanes(std::array::from_fn(|q| acc[q][l])) + tail[l];
            cv[l] = if beta == 0.0 {
                alpha * d
            } else {
                alpha * d + beta * cv[l]
            };
        }
    }
}

/// `m = 1`: `C = β·C` (or zero), then `C += (α·a_p)·B[p, :]` for each `p` in order.
#[allow(clippy::too_many_arguments)]
fn axpy(n: usize, k: usize, alpha: f32, a: &[Lanes], b: &[Lanes], beta: f32, c: &mut [Lanes]) {
    let c = &mut c[..n];
    if beta == 0.0 {
        c.fill([0.0; LANES]);
    } else if beta != 1.0 {
        for cv in c.iter_mut() {
            for x in cv.iter_mut() {
                *x *= beta;
            }
        }
    }
    for p in 0..k {
        let ap: Lanes = std::array::from_fn(|l| alpha * a[p][l]);
        for (cv, bv) in c.iter_mut().zip(&b[p * n..(p + 1) * n]) {
            for l in 0..LANES {
                cv[l] += ap[l] * bv[l];
            }
        }
    }
}

/// `k = 1`: `C = (α·a_i)·b_j (+ β·C)`.
#[allow(clippy::too_many_arguments)]
fn outer(m: usize, n: usize, alpha: f32, a: &[Lanes], b: &[Lanes], beta: f32, c: &mut [Lanes]) {
    for i in 0..m {
        let ai: Lanes = std::array::from_fn(|l| alpha * a[i][l]);
        for (cv, bv) in c[i * n..(i + 1) * n].iter_mut().zip(&b[..n]) {
            for l in 0..LANES {
                cv[l] = if beta == 0.0 {
                    ai[l] * bv[l]
                } else {
                    ai[l] * bv[l] + beta * cv[l]
                };
            }
        }
    }
}

/// `acc[j] = Σ_r g[r, j]` in row order, as [`super::ops::column_sums_by_columns`] sums.
pub fn column_sums(g: &[Lanes], width: usize, acc: &mut [Lanes]) {
    let acc = &mut acc[..width];
    acc.fill([0.0; LANES]);
    for row in g.chunks_exact(width) {
        for (a, v) in acc.iter_mut().zip(row) {
            for l in 0..LANES {
                a[l] += v[l];
            }
        }
    }
}

/// Element `e` of lane `lane`, for every element: one model's tensor out of the group.
pub fn extract(t: &[Lanes], lane: usize, out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(t) {
        *o = v[lane];
    }
}

/// One model's tensor into lane `lane`.
pub fn insert(t: &mut [Lanes], lane: usize, from: &[f32]) {
    for (v, &x) in t.iter_mut().zip(from) {
        v[lane] = x;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ops, Rng};

    /// Every branch of `gemm` against `gemm_ex` on each lane's model alone, bit for bit.
    #[test]
    fn gemm_matches_each_model_alone() {
        if !crate::engine::sgemm::available() {
            eprintln!("skipped: lockstep lanes reproduce the AVX-512 kernels only");
            return;
        }
        let mut rng = Rng::stream(7, "lanes-test");
        let shapes = [
            (64, 16, 8),
            (64, 16, 16),
            (64, 1, 16),
            (64, 1, 13),
            (1, 16, 64),
            (64, 16, 1),
            (16, 16, 64),
            (16, 8, 64),
            (3, 5, 7),
            (37, 19, 21),
            (7, 33, 256),
            (1, 1, 1),
        ];
        for &(m, n, k) in &shapes {
            for ta in [Op::N, Op::T] {
                for tb in [Op::N, Op::T] {
                    for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (1.25, 0.75)] {
                        let draw = |rng: &mut Rng, len: usize| -> Vec<Lanes> {
                            (0..len)
                                .map(|_| std::array::from_fn(|_| rng.normal() as f32))
                                .collect()
                        };
                        let a = draw(&mut rng, m * k);
                        let b = draw(&mut rng, k * n);
                        let c0 = draw(&mut rng, m * n);
                        let mut c = c0.clone();
                        gemm(ta, tb, (m, n, k), alpha, &a, &b, beta, &mut c);
                        for l in 0..LANES {
                            let one = |t: &[Lanes]| t.iter().map(|v| v[l]).collect::<Vec<f32>>();
                            let (al, bl) = (one(&a), one(&b));
                            let mut cl = one(&c0);
                            ops::gemm(ta, tb, m, n, k, alpha, &al, &bl, beta, &mut cl);
                            for (e, (x, y)) in cl.iter().zip(one(&c)).enumerate() {
                                assert_eq!(
                                    x.to_bits(),
                                    y.to_bits(),
                                    "{ta:?}{tb:?} m{m} n{n} k{k} α{alpha} β{beta} lane {l} element {e}: {x} vs {y}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn column_sums_match() {
        let mut rng = Rng::stream(3, "lanes-colsum");
        let (rows, width) = (37, 19);
        let g: Vec<Lanes> = (0..rows * width)
            .map(|_| std::array::from_fn(|_| rng.normal() as f32))
            .collect();
        let mut acc = zeros(width);
        column_sums(&g, width, &mut acc);
        for l in 0..LANES {
            let gl: Vec<f32> = g.iter().map(|v| v[l]).collect();
            let mut want = vec![0.0f32; width];
            ops::column_sums_by_columns(&gl, width, &mut want);
            for j in 0..width {
                assert_eq!(want[j].to_bits(), acc[j][l].to_bits());
            }
        }
    }
}
