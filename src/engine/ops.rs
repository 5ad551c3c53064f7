//! The narrow set of array operations the models use. Every buffer is a contiguous row-major
//! slice with explicit dimensions (the llm.c convention): this is the seam a CUDA backend would
//! replace.

use super::pool::SendPtr;
pub use super::sgemm::Part;
use super::Float;

/// Whether a GEMM operand is used as stored (`N`) or transposed (`T`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    N,
    T,
}

thread_local! {
    /// GEMM threads for the calling thread's runs (1 unless [`with_threads`] says otherwise).
    static GEMM_THREADS: std::cell::Cell<usize> = const { std::cell::Cell::new(1) };
}

/// Runs `f` with GEMMs split over `n` threads (by row blocks of C, so every element is computed
/// by the same kernel in the same order: results are bit-identical for any `n`).
pub fn with_threads<R>(n: usize, f: impl FnOnce() -> R) -> R {
    let prev = GEMM_THREADS.with(|t| t.replace(n.max(1)));
    let r = f();
    GEMM_THREADS.with(|t| t.set(prev));
    r
}

/// The thread count [`with_threads`] set for the calling thread (1 by default): other kernels
/// that split work the same way (by disjoint blocks, bit-identically) read it too.
pub fn threads() -> usize {
    GEMM_THREADS.with(|t| t.get())
}

/// `C[m,n] ← α·op(A)·op(B) + β·C`, where `op(A)` is `[m,k]` and `op(B)` is `[k,n]`; `A` is
/// stored row-major as `[m,k]` (N) or `[k,m]` (T), `B` as `[k,n]` (N) or `[n,k]` (T).
/// With β = 0 the old contents of C are ignored (NaN included).
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
    let lda = if ta == Op::N { k } else { m };
    let ldb = if tb == Op::N { n } else { k };
    gemm_ex(
        ta,
        tb,
        m,
        n,
        k,
        alpha,
        (a, lda),
        (b, ldb),
        beta,
        (c, n),
        None,
    );
}

/// `(row, column)` strides of `op(X)` for a row-major X with row stride `ld`.
fn strides(t: Op, ld: usize) -> (isize, isize) {
    match t {
        Op::N => (ld as isize, 1),
        Op::T => (1, ld as isize),
    }
}

/// Panics unless every index of a `[m, k]·[k, n]` product lies inside its buffer
/// (`(len, row stride)` each); returns the stored column counts of A and B.
fn check_operands(
    (ta, tb): (Op, Op),
    (m, n, k): (usize, usize, usize),
    (a, lda): (usize, usize),
    (b, ldb): (usize, usize),
    (c, ldc): (usize, usize),
) -> (usize, usize) {
    // Stored shapes (rows × cols) of A and B, and the extent each buffer must cover.
    let (ar, ac) = if ta == Op::N { (m, k) } else { (k, m) };
    let (br, bc) = if tb == Op::N { (k, n) } else { (n, k) };
    let extent = |rows: usize, cols: usize, ld: usize| {
        if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * ld + cols
        }
    };
    assert!(
        lda >= ac
            && ldb >= bc
            && ldc >= n
            && a >= extent(ar, ac, lda)
            && b >= extent(br, bc, ldb)
            && c >= extent(m, n, ldc),
        "gemm: buffer too small"
    );
    (ac, bc)
}

/// `C ← α·op(A)·op(B)` (as [`gemm_ex`] with `β = 0`, no bias) where only `part` of it is
/// needed or nonzero: attention's causal products ([`Part`]). With the AVX-512 kernels only
/// that part is computed, unpacked, with the values the whole product has there; elsewhere the
/// whole product is.
#[allow(clippy::too_many_arguments)]
pub fn gemm_part<F: Float>(
    part: Part,
    ta: Op,
    tb: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: F,
    (a, lda): (&[F], usize),
    (b, ldb): (&[F], usize),
    (c, ldc): (&mut [F], usize),
) {
    let fast = F::IS_F32 && super::sgemm::available() && super::sgemm::causal_fits(k);
    if !fast || part == Part::Full {
        gemm_ex(
            ta,
            tb,
            m,
            n,
            k,
            alpha,
            (a, lda),
            (b, ldb),
            F::zero(),
            (c, ldc),
            None,
        );
        return;
    }
    check_operands(
        (ta, tb),
        (m, n, k),
        (a.len(), lda),
        (b.len(), ldb),
        (c.len(), ldc),
    );
    let strides = |t: Op, ld: usize| match t {
        Op::N => (ld as isize, 1),
        Op::T => (1, ld as isize),
    };
    let ((rsa, csa), (rsb, csb)) = (strides(ta, lda), strides(tb, ldb));
    // SAFETY: F is f32 (so the casts are identities); `check_operands` bounds every index the
    // strides reach; `c` is a unique borrow, so it aliases nothing else.
    unsafe {
        super::sgemm::sgemm_part(
            part,
            m,
            n,
            k,
            alpha.f64() as f32,
            (a.as_ptr() as *const f32, rsa, csa),
            (b.as_ptr() as *const f32, rsb, csb),
            c.as_mut_ptr() as *mut f32,
            ldc,
        )
    };
}

/// [`gemm`] on sub-matrices of larger row-major buffers (BLAS's leading dimensions: each
/// operand is `(buffer, row stride)`), plus an optional `bias[n]` added to every row of C —
/// `C ← α·op(A)·op(B) + β·C + 1·biasᵀ`. Attention reads its heads straight out of the fused
/// `[BT, 3C]` projection this way, and linear layers fold their bias into the GEMM.
#[allow(clippy::too_many_arguments)]
pub fn gemm_ex<F: Float>(
    ta: Op,
    tb: Op,
    m: usize,
    n: usize,
    k: usize,
    alpha: F,
    (a, lda): (&[F], usize),
    (b, ldb): (&[F], usize),
    beta: F,
    (c, ldc): (&mut [F], usize),
    bias: Option<&[F]>,
) {
    if m == 0 || n == 0 {
        return;
    }
    let (ac, bc) = check_operands(
        (ta, tb),
        (m, n, k),
        (a.len(), lda),
        (b.len(), ldb),
        (c.len(), ldc),
    );
    assert!(bias.is_none_or(|b| b.len() >= n), "gemm: buffer too small");
    let dense = lda == ac && ldb == bc && ldc == n && bias.is_none();
    if dense && degenerate_shape(ta, tb, m, n, k) {
        return degenerate(ta, tb, m, n, k, alpha, a, b, beta, c);
    }
    let ((rsa, csa), (rsb, csb)) = (strides(ta, lda), strides(tb, ldb));
    let threads = GEMM_THREADS.with(|t| t.get()).min(m / 32).max(1);
    if F::IS_F32 && super::sgemm::available() {
        // SAFETY: F is f32 (so the casts are identities); the assert above bounds every index
        // the strides reach; `c` is a unique borrow, so it aliases nothing else.
        unsafe {
            super::sgemm::sgemm(
                m,
                n,
                k,
                alpha.f64() as f32,
                a.as_ptr() as *const f32,
                rsa,
                csa,
                b.as_ptr() as *const f32,
                rsb,
                csb,
                beta.f64() as f32,
                c.as_mut_ptr() as *mut f32,
                ldc,
                bias.map(|b| b.as_ptr() as *const f32),
                threads,
            )
        };
        return;
    }
    // The portable path (`matrixmultiply`): fold β and the bias into C first, then β = 1.
    let beta = match bias {
        Some(bias) => {
            for i in 0..m {
                let row = &mut c[i * ldc..i * ldc + n];
                for (cv, &bv) in row.iter_mut().zip(bias) {
                    *cv = if beta == F::zero() {
                        bv
                    } else {
                        beta * *cv + bv
                    };
                }
            }
            F::one()
        }
        None => beta,
    };
    // Row blocks of C (and of op(A)) on pool workers.
    let rows = super::pool::split(m, threads, 1);
    let (ap, bp, cp) = (
        SendPtr(a.as_ptr()),
        SendPtr(b.as_ptr()),
        SendPtr(c.as_mut_ptr()),
    );
    super::pool::run(threads, &|t| {
        let r = rows(t);
        if r.is_empty() {
            return;
        }
        // SAFETY: rows r of op(A) and C lie inside their buffers (assert above); each task
        // writes a disjoint row block of C.
        unsafe {
            F::gemm_raw(
                r.len(),
                k,
                n,
                alpha,
                ap.get().offset(r.start as isize * rsa),
                rsa,
                csa,
                bp.get(),
                rsb,
                csb,
                beta,
                cp.get().add(r.start * ldc),
                ldc as isize,
                1,
            )
        }
    });
}

/// `C ← α·op(A)·op(B) + S + 1·biasᵀ` (dense, `[m, n]`; `src` is S): a residual branch added
/// onto its stream, written to another buffer. The same bits as copying S into C and calling
/// [`gemm_ex`] with `β = 1`, which is what it does where the engine's kernels do not run; with
/// them, the kernels read S where they would read the old C ([`super::sgemm::sgemm_onto`]).
#[allow(clippy::too_many_arguments)]
pub fn gemm_onto<F: Float>(
    (ta, tb): (Op, Op),
    (m, n, k): (usize, usize, usize),
    alpha: F,
    (a, b): (&[F], &[F]),
    bias: Option<&[F]>,
    src: &[F],
    c: &mut [F],
) {
    let (lda, ldb) = (
        if ta == Op::N { k } else { m },
        if tb == Op::N { n } else { k },
    );
    // Where `gemm_ex` takes another path (its portable one, or `degenerate`'s loops for a
    // bias-free call), so does this: the copy, then it.
    let special = bias.is_none() && degenerate_shape(ta, tb, m, n, k);
    if !(F::IS_F32 && super::sgemm::available()) || special || m == 0 || n == 0 {
        c[..m * n].copy_from_slice(&src[..m * n]);
        return gemm_ex(
            ta,
            tb,
            m,
            n,
            k,
            alpha,
            (a, lda),
            (b, ldb),
            F::one(),
            (c, n),
            bias,
        );
    }
    assert!(src.len() >= m * n, "gemm: residual source too small");
    let (sa, sb, threads) = dense_operands((ta, tb), (m, n, k), (a, b), bias, c.len());
    // SAFETY: F is f32 (so the casts are identities); the checks above bound every index the
    // strides reach in A, B, C, S and the bias; C is a unique borrow, so it aliases nothing.
    unsafe {
        super::sgemm::sgemm_onto(
            (m, n, k),
            alpha.f64() as f32,
            (a.as_ptr() as *const f32, sa.0, sa.1),
            (b.as_ptr() as *const f32, sb.0, sb.1),
            src.as_ptr() as *const f32,
            (c.as_mut_ptr() as *mut f32, n),
            bias.map(|b| b.as_ptr() as *const f32),
            threads,
        )
    }
}

/// Checks that dense operands `a`, `b` and a C of `c_len` elements hold `op(A): [m, k]`,
/// `op(B): [k, n]` and `C: [m, n]`, and a bias `n` elements (panics otherwise); returns A's and
/// B's strides and the call's GEMM threads.
#[allow(clippy::type_complexity)]
fn dense_operands<F: Float>(
    (ta, tb): (Op, Op),
    (m, n, k): (usize, usize, usize),
    (a, b): (&[F], &[F]),
    bias: Option<&[F]>,
    c_len: usize,
) -> ((isize, isize), (isize, isize), usize) {
    let (lda, ldb) = (
        if ta == Op::N { k } else { m },
        if tb == Op::N { n } else { k },
    );
    check_operands(
        (ta, tb),
        (m, n, k),
        (a.len(), lda),
        (b.len(), ldb),
        (c_len, n),
    );
    assert!(bias.is_none_or(|b| b.len() >= n), "gemm: bias too short");
    let threads = GEMM_THREADS.with(|t| t.get()).min(m / 32).max(1);
    (strides(ta, lda), strides(tb, ldb), threads)
}

/// Whether the engine has an epilogue-fused path for `F`, this CPU and these shapes
/// ([`degenerate`]'s shapes, which [`gemm`] computes in another order, have none).
fn fusable<F: Float>(m: usize, n: usize, k: usize) -> bool {
    F::IS_F32 && super::sgemm::available() && m > 1 && n > 1 && k > 1
}

/// The epilogue-fused GEMMs' shared call ([`super::sgemm::sgemm_fused`]), once [`fusable`]:
/// checks that dense operands `a`, `b` and `c` hold `op(A): [m, k]`, `op(B): [k, n]` and
/// `C: [m, n]`, and a bias `n` elements.
///
/// # Safety
/// F is f32; `extra`'s buffers hold `[m, n]` elements each and alias no operand nor each other.
#[allow(clippy::too_many_arguments)]
unsafe fn fused_call<F: Float>(
    (ta, tb): (Op, Op),
    (m, n, k): (usize, usize, usize),
    alpha: F,
    (a, b): (&[F], &[F]),
    bias: Option<&[F]>,
    c: &mut [F],
    extra: super::sgemm::Extra,
) -> bool {
    let (sa, sb, threads) = dense_operands((ta, tb), (m, n, k), (a, b), bias, c.len());
    // SAFETY: F is f32 (the caller's contract), so the casts are identities; the checks above
    // bound every index the strides reach in A, B, C and the bias, and the caller's contract
    // bounds `extra`'s; C is a unique borrow.
    unsafe {
        super::sgemm::sgemm_fused(
            (m, n, k),
            alpha.f64() as f32,
            (a.as_ptr() as *const f32, sa.0, sa.1),
            (b.as_ptr() as *const f32, sb.0, sb.1),
            bias.map(|b| b.as_ptr() as *const f32),
            (c.as_mut_ptr() as *mut f32, n),
            extra,
            threads,
        )
    }
}

/// `c ← (α·op(A)·op(B)) ⊙ (1 − h²)` (dense, `[m, n]`): the gradient through a tanh layer from
/// its output `h`, in the GEMM's epilogue where the engine can
/// ([`super::sgemm::Extra::TanhSlope`]): the same bits as [`gemm`] with β = 0, then
/// `c · (1 − h·h)`. `false`, with nothing done, where it cannot (f64, a CPU without the engine's kernels, the shapes
/// [`gemm`] computes another way or that gain nothing): the caller does the steps itself.
#[allow(clippy::too_many_arguments)]
pub fn gemm_tanh_slope<F: Float>(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: F,
    a: &[F],
    b: &[F],
    c: &mut [F],
    h: &[F],
) -> bool {
    if !fusable::<F>(m, n, k) {
        return false;
    }
    assert!(
        h.len() >= m * n,
        "gemm_tanh_slope: h is smaller than the product"
    );
    let extra = super::sgemm::Extra::TanhSlope(h.as_ptr() as *const f32);
    // SAFETY: F is f32 (`fusable`); h holds `[m, n]` (checked) and is only read, and C, a
    // unique borrow, aliases it not.
    unsafe { fused_call::<F>((ta, tb), (m, n, k), alpha, (a, b), None, c, extra) }
}

/// `z ← α·op(A)·op(B) + 1·biasᵀ` and `h ← tanh(z)` (dense, `[m, n]` each) in one pass where the
/// engine can ([`super::sgemm::Extra::Tanh`]): the same bits as [`gemm`] with β = 0, then
/// the bias added and [`super::fastmath::tanh_f32`] taken (a tanh layer's forward). Without
/// `keep_z`, `z` is only the sum's scratch, left unspecified ([`super::sgemm::Extra::TanhOnly`]):
/// `h` is the output. `false`,
/// with nothing done, where it cannot (f64, a CPU without the engine's kernels, the shapes [`gemm`] computes another way,
/// one too small to gain, or a bias over more than one `KC` block): the caller does the steps
/// itself.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_tanh<F: Float>(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: F,
    a: &[F],
    b: &[F],
    bias: Option<&[F]>,
    (z, keep_z): (&mut [F], bool),
    h: &mut [F],
) -> bool {
    if !fusable::<F>(m, n, k) {
        return false;
    }
    assert!(
        h.len() >= m * n,
        "gemm_bias_tanh: h is smaller than the product"
    );
    let h = h.as_mut_ptr() as *mut f32;
    let extra = if keep_z {
        super::sgemm::Extra::Tanh(h)
    } else {
        super::sgemm::Extra::TanhOnly(h)
    };
    // SAFETY: F is f32 (`fusable`); h holds `[m, n]` (checked) and, like z, is a unique
    // borrow, so it aliases neither z nor an operand.
    unsafe { fused_call::<F>((ta, tb), (m, n, k), alpha, (a, b), bias, z, extra) }
}

/// Adam's state for one tensor, for [`gemm_adam`]: its values `w`, moments `m`, `v` (each as
/// long as the product) and the step's constants (one tensor's, in every lane).
pub struct AdamTensor<'a, F> {
    pub w: &'a mut [F],
    pub m: &'a mut [F],
    pub v: &'a mut [F],
    pub consts: &'a super::lanes::AdamConsts,
}

/// Adam's step on `t` from each element of `α·op(A)·op(B)` (dense: a weight's gradient), taken
/// in the GEMM's epilogue ([`super::sgemm::Extra::Adam`]): the same bits as [`gemm`] into C
/// followed by the update, but the gradient itself is not kept: C serves as the sum's scratch
/// and is left unspecified. `false`, with nothing done, where the engine has no such
/// path (f64, a CPU without the engine's kernels, the shapes [`gemm`] computes another way or that gain nothing): the
/// caller does the two steps itself.
#[allow(clippy::too_many_arguments)]
pub fn gemm_adam<F: Float>(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: F,
    a: &[F],
    b: &[F],
    c: &mut [F],
    t: AdamTensor<'_, F>,
) -> bool {
    if !fusable::<F>(m, n, k) {
        return false;
    }
    assert!(
        t.w.len() >= m * n && t.m.len() >= m * n && t.v.len() >= m * n,
        "gemm_adam: Adam's buffers are smaller than the product"
    );
    let target = super::sgemm::AdamTarget {
        w: t.w.as_mut_ptr() as *mut f32,
        m: t.m.as_mut_ptr() as *mut f32,
        v: t.v.as_mut_ptr() as *mut f32,
        consts: t.consts,
    };
    // SAFETY: F is f32 (`fusable`); the target's three buffers hold `[m, n]` (checked) and are
    // unique borrows, so they alias no operand nor each other.
    unsafe {
        fused_call::<F>(
            (ta, tb),
            (m, n, k),
            alpha,
            (a, b),
            None,
            c,
            super::sgemm::Extra::Adam(target),
        )
    }
}

/// Whether [`degenerate`] computes a dense, bias-free GEMM of this shape: a width-1 output
/// layer (`n = 1`, A as stored), a single row (`m = 1`, B as stored), an outer product (`k = 1`).
fn degenerate_shape(ta: Op, tb: Op, m: usize, n: usize, k: usize) -> bool {
    k > 0 && ((n == 1 && ta == Op::N) || (m == 1 && tb == Op::N) || k == 1)
}

/// The [`degenerate_shape`]s of a dense, bias-free GEMM as memory-bound loops, several times
/// faster than a packed GEMM kernel.
#[allow(clippy::too_many_arguments)]
fn degenerate<F: Float>(
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
    if n == 1 && ta == Op::N {
        // op(B) is a k-vector: contiguous in both layouts ([k,1] or [1,k]).
        for (i, cv) in c[..m].iter_mut().enumerate() {
            let d = dot(&a[i * k..(i + 1) * k], &b[..k]);
            *cv = if beta == F::zero() {
                alpha * d
            } else {
                alpha * d + beta * *cv
            };
        }
    } else if m == 1 && tb == Op::N {
        // op(A) is a k-vector (contiguous in both layouts): C = Σ_p a_p · B[p, :].
        scale_or_zero(&mut c[..n], beta);
        for p in 0..k {
            let ap = alpha * a[p];
            for (cv, &bv) in c[..n].iter_mut().zip(&b[p * n..(p + 1) * n]) {
                *cv += ap * bv;
            }
        }
    } else {
        debug_assert_eq!(k, 1, "degenerate: not a degenerate shape");
        // An outer product: both operands are vectors whatever their layout.
        for i in 0..m {
            let ai = alpha * a[i];
            let row = &mut c[i * n..(i + 1) * n];
            if beta == F::zero() {
                for (cv, &bv) in row.iter_mut().zip(&b[..n]) {
                    *cv = ai * bv;
                }
            } else {
                for (cv, &bv) in row.iter_mut().zip(&b[..n]) {
                    *cv = ai * bv + beta * *cv;
                }
            }
        }
    }
}

/// Rows per block of the row-parallel passes ([`for_row_blocks`]). Fixed, so that a reduction
/// over rows (per-block partial sums, then the blocks in order) is the same whatever the thread
/// count.
pub const ROW_BLOCK: usize = 128;

/// Calls `f(block, rows)` for every block of [`ROW_BLOCK`] rows of `0..rows`, the blocks handed
/// out to [`threads`] threads as they come free ([`super::pool::run_items`]).
pub fn for_row_blocks(rows: usize, f: &(dyn Fn(usize, std::ops::Range<usize>) + Sync)) {
    super::pool::run_items(rows.div_ceil(ROW_BLOCK), threads(), &|blk| {
        f(blk, blk * ROW_BLOCK..((blk + 1) * ROW_BLOCK).min(rows))
    });
}

/// `acc += x`, in row blocks over the pool.
pub fn add_assign<F: Float>(acc: &mut [F], x: &[F], width: usize) {
    let rows = acc.len() / width;
    super::par::for_row_blocks(rows, super::par::rows(acc, width), |_, r, a| {
        for (a, &v) in a.iter_mut().zip(&x[r.start * width..r.end * width]) {
            *a += v;
        }
    });
}

/// `acc[j] = Σ_r g[r, j]` (bias gradients), each column summed in row order by one task (the
/// same bits as one serial pass, whatever the thread count); columns in fixed groups of
/// [`COLUMN_GROUP`] over the pool.
pub fn column_sums_by_columns<F: Float>(g: &[F], width: usize, acc: &mut [F]) {
    let rows = g.len() / width.max(1);
    let groups = width.div_ceil(COLUMN_GROUP);
    super::par::for_items(groups, super::par::rows(acc, COLUMN_GROUP), |grp, acc| {
        let j0 = grp * COLUMN_GROUP;
        if acc.len() == COLUMN_GROUP {
            // A whole group's sums in registers, not reloaded and stored back every row.
            let mut sums = [F::zero(); COLUMN_GROUP];
            for r in 0..rows {
                let row = &g[r * width + j0..r * width + j0 + COLUMN_GROUP];
                for (a, &v) in sums.iter_mut().zip(row) {
                    *a += v;
                }
            }
            acc.copy_from_slice(&sums);
            return;
        }
        acc.fill(F::zero());
        for r in 0..rows {
            let row = &g[r * width + j0..r * width + j0 + acc.len()];
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += v;
            }
        }
    });
}

/// Columns per task of [`column_sums_by_columns`]: 64 floats, a whole number of cache lines.
pub const COLUMN_GROUP: usize = 64;

/// `acc[j] = Σ_r g[r, j]` (bias gradients): per-block partial sums (in `partial`, at least
/// `[blocks, width]`), then the blocks in order (the same sums for any thread count).
pub fn column_sums_par<F: Float>(g: &[F], width: usize, acc: &mut [F], partial: &mut [F]) {
    let rows = g.len() / width;
    let partial = &mut partial[..rows.div_ceil(ROW_BLOCK) * width];
    partial.fill(F::zero());
    super::par::for_row_blocks(
        rows,
        super::par::slot(&mut *partial, width),
        |_, r, part| {
            add_column_sums(&g[r.start * width..r.end * width], width, part);
        },
    );
    acc.fill(F::zero());
    add_column_sums(partial, width, acc);
}

/// `Σ x_i y_i` with eight independent partial sums, so the loop vectorizes (a single running
/// float sum cannot be reordered by the compiler).
pub fn dot<F: Float>(x: &[F], y: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let lanes = x.len() / 8 * 8;
    for (xs, ys) in x[..lanes].chunks_exact(8).zip(y[..lanes].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += xs[l] * ys[l];
        }
    }
    let mut tail = F::zero();
    for i in lanes..x.len() {
        tail += x[i] * y[i];
    }
    fold_lanes(acc) + tail
}

/// The eight partial sums of [`dot`] and [`sum`], added in a fixed tree.
#[inline(always)]
pub fn fold_lanes<F: Float>(acc: [F; 8]) -> F {
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// `Σ x_i` with eight independent partial sums (vectorizes, like [`dot`]; the order is fixed,
/// so the result is too).
pub fn sum<F: Float>(x: &[F]) -> F {
    let mut acc = [F::zero(); 8];
    let lanes = x.len() / 8 * 8;
    for xs in x[..lanes].chunks_exact(8) {
        for l in 0..8 {
            acc[l] += xs[l];
        }
    }
    let mut tail = F::zero();
    for &v in &x[lanes..] {
        tail += v;
    }
    fold_lanes(acc) + tail
}

/// The largest element (−∞ for none; NaN if any is NaN), over eight lanes so it vectorizes.
pub fn max<F: Float>(x: &[F]) -> F {
    let mut acc = [F::neg_infinity(); 8];
    let lanes = x.len() / 8 * 8;
    let pick = |a: F, v: F| if v > a || v.is_nan() { v } else { a };
    for xs in x[..lanes].chunks_exact(8) {
        for l in 0..8 {
            acc[l] = pick(acc[l], xs[l]);
        }
    }
    let mut m = F::neg_infinity();
    for &v in acc.iter().chain(&x[lanes..]) {
        m = pick(m, v);
    }
    m
}

fn scale_or_zero<F: Float>(c: &mut [F], beta: F) {
    if beta == F::zero() {
        c.fill(F::zero());
    } else if beta != F::one() {
        scale(c, beta);
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

/// A tensor's summary for the per-layer observables: mean and (population) standard deviation
/// (as [`mean_std`]), mean square (as [`sum_squares`] over the count) and mean |value|.
#[derive(Clone, Copy, Debug)]
pub struct Moments {
    pub mean: f64,
    pub std: f64,
    pub mean_sq: f64,
    pub mean_abs: f64,
}

/// [`Moments`] in two passes where separate calls took four: the first sums `x`, `x²` and
/// `|x|` side by side, each in element order from the same start as `Iterator::sum` (so the
/// bits of its own pass), three independent chains where one pass each waited on every add's
/// latency; the second is [`mean_std`]'s.
pub fn moments<F: Float>(x: &[F]) -> Moments {
    // `Iterator::sum`'s start for floats: −0.0, the identity of `+`.
    let (mut s, mut ss, mut sa) = (-0.0f64, -0.0f64, -0.0f64);
    for v in x {
        let v = v.f64();
        s += v;
        ss += v * v;
        sa += v.abs();
    }
    let count = x.len().max(1) as f64;
    let (mean, std) = if x.is_empty() {
        (f64::NAN, f64::NAN)
    } else {
        let mean = s / x.len() as f64;
        let var = x.iter().map(|v| (v.f64() - mean).powi(2)).sum::<f64>() / x.len() as f64;
        (mean, var.sqrt())
    };
    Moments {
        mean,
        std,
        mean_sq: ss / count,
        mean_abs: sa / count,
    }
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

    /// [`moments`] against the separate passes it replaces, bit for bit (signed zeros, an
    /// empty tensor, a NaN and large and small magnitudes included).
    #[test]
    fn moments_are_the_separate_passes() {
        let mut seed = 11u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.3
        };
        let random: Vec<f32> = (0..1037).map(|i| next() * 10f32.powi(i % 7 - 3)).collect();
        let cases: [Vec<f32>; 5] = [
            random,
            vec![],
            vec![-0.0, -0.0],
            vec![1.0, f32::NAN, -2.0],
            vec![3.5],
        ];
        for x in &cases {
            let m = moments(x);
            let (mean, std) = mean_std(x);
            let count = x.len().max(1) as f64;
            let mean_abs = x.iter().map(|v| (*v as f64).abs()).sum::<f64>() / count;
            let want = [mean, std, sum_squares(x) / count, mean_abs];
            let got = [m.mean, m.std, m.mean_sq, m.mean_abs];
            assert_eq!(got.map(f64::to_bits), want.map(f64::to_bits), "{x:?}");
        }
    }

    /// [`gemm_tanh_slope`] against [`gemm`], then `g · (1 − h·h)` (one and two `KC` blocks,
    /// ragged edges, one and two threads): the same gradient, bit for bit.
    #[test]
    fn gemm_tanh_slope_is_the_gemm_then_the_slope() {
        let mut seed = 3u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (m, n, k, threads) in [(128, 256, 256, 1), (77, 45, 300, 1), (130, 70, 96, 2)] {
            let a: Vec<f32> = (0..m * k).map(|_| next()).collect();
            let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
            let h: Vec<f32> = (0..m * n).map(|_| 2.0 * next()).collect();
            let mut g1 = vec![0.0f32; m * n];
            with_threads(threads, || {
                gemm(Op::N, Op::N, m, n, k, 0.3, &a, &b, 0.0, &mut g1)
            });
            for (g, &h) in g1.iter_mut().zip(&h) {
                *g *= 1.0 - h * h;
            }
            let mut g2 = vec![f32::NAN; m * n];
            let did = with_threads(threads, || {
                gemm_tanh_slope(Op::N, Op::N, (m, n, k), 0.3, &a, &b, &mut g2, &h)
            });
            let ctx = format!("{m}×{n}×{k} threads {threads}");
            if !super::super::sgemm::available() {
                assert!(!did && g2.iter().all(|x| x.is_nan()), "{ctx}");
                continue;
            }
            assert!(did, "{ctx}: declined");
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&g1), bits(&g2), "{ctx}");
        }
    }

    /// [`gemm_bias_tanh`] against [`gemm`], then the bias, then [`super::fastmath::tanh_f32`]
    /// (with and without a bias, ragged edges, one and two threads, values past tanh's clamp):
    /// the same pre-activations and activations, bit for bit (without a bias, over two `KC`
    /// blocks too); declined (nothing written) where a bias meets a sum of two `KC` blocks, and
    /// everywhere without the engine's kernels (AVX-512 or AVX2+FMA).
    #[test]
    fn gemm_bias_tanh_is_the_gemm_then_the_tanh() {
        let mut seed = 11u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (m, n, k, threads, with_bias) in [
            (128, 256, 64, 1, true),
            (77, 45, 200, 1, false),
            (40, 70, 300, 1, false),
            (130, 70, 96, 2, true),
        ] {
            let a: Vec<f32> = (0..m * k).map(|_| next() * 3.0).collect();
            let b: Vec<f32> = (0..n * k).map(|_| next() * 3.0).collect();
            let bias: Vec<f32> = (0..n).map(|_| next()).collect();
            let bias = with_bias.then_some(&bias[..]);
            let mut z1 = vec![0.0f32; m * n];
            with_threads(threads, || {
                gemm(Op::N, Op::T, m, n, k, 0.7, &a, &b, 0.0, &mut z1)
            });
            if let Some(bias) = bias {
                for row in z1.chunks_mut(n) {
                    for (z, &b) in row.iter_mut().zip(bias) {
                        *z += b;
                    }
                }
            }
            let h1: Vec<f32> = z1
                .iter()
                .map(|&z| super::super::fastmath::tanh_f32(z))
                .collect();
            let (mut z2, mut h2) = (vec![f32::NAN; m * n], vec![f32::NAN; m * n]);
            let did = with_threads(threads, || {
                let z = (&mut z2[..], true);
                gemm_bias_tanh(Op::N, Op::T, (m, n, k), 0.7, &a, &b, bias, z, &mut h2)
            });
            // And with the pre-activation not kept: the same activations.
            let mut h3 = vec![f32::NAN; m * n];
            let did3 = with_threads(threads, || {
                let mut scratch = vec![f32::NAN; m * n];
                let z = (&mut scratch[..], false);
                gemm_bias_tanh(Op::N, Op::T, (m, n, k), 0.7, &a, &b, bias, z, &mut h3)
            });
            let ctx = format!("{m}×{n}×{k} threads {threads} bias {with_bias}");
            if !super::super::sgemm::available() {
                assert!(!did && z2.iter().chain(&h2).all(|x| x.is_nan()), "{ctx}");
                assert!(!did3 && h3.iter().all(|x| x.is_nan()), "{ctx}");
                continue;
            }
            assert!(did && did3, "{ctx}: declined");
            let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&z1), bits(&z2), "{ctx}: pre-activation");
            assert_eq!(bits(&h1), bits(&h2), "{ctx}: tanh");
            assert_eq!(bits(&h1), bits(&h3), "{ctx}: tanh, pre-activation not kept");
            assert!(
                z1.iter().any(|z| z.abs() > 7.9),
                "{ctx}: nothing past the clamp"
            );
        }
        // A bias and two `KC` blocks: declined, nothing written.
        let k = super::super::sgemm::KC + 1;
        let (a, b) = (vec![0.5f32; 64 * k], vec![0.5f32; 64 * k]);
        let (mut z, mut h) = (vec![1.0f32; 64 * 64], vec![1.0f32; 64 * 64]);
        let bias = vec![0.25f32; 64];
        assert!(!gemm_bias_tanh(
            Op::N,
            Op::T,
            (64, 64, k),
            1.0,
            &a,
            &b,
            Some(&bias),
            (&mut z, true),
            &mut h
        ));
        assert!(z.iter().chain(&h).all(|&x| x == 1.0));
    }

    /// [`gemm_adam`] against [`gemm`] then [`crate::optim::Coeffs::adam`] element by element
    /// (Adam and AdamW, weight decay on and off, one and several `KC` blocks, ragged edges, one
    /// and two threads): the same gradient and updated tensors, bit for bit. Where the engine
    /// has no fused path it must decline and touch nothing.
    #[test]
    fn gemm_adam_is_the_gemm_then_the_update() {
        use crate::optim::{Coeffs, Hyper, Optimizer};
        // One tensor's constants at step `t`, in every lane.
        let coeffs = |optimizer, weight_decay, t| {
            let h = Hyper {
                optimizer,
                momentum: 0.0,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay,
            };
            let mult = crate::model::LrMult {
                adam: 1.0,
                sgd: 1.0,
            };
            let c = Coeffs::<f32>::new(&h, t, 1e-3, mult, true);
            (c, Coeffs::adam_consts(&[c; crate::engine::lanes::LANES]))
        };
        let mut seed = 7u32;
        let mut next = move || {
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            (seed >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        };
        for (m, n, k, threads) in [(96, 80, 64, 1), (45, 77, 300, 1), (130, 64, 128, 2)] {
            for (opt, wd) in [
                (Optimizer::Adam, 0.0),
                (Optimizer::Adam, 0.1),
                (Optimizer::Adamw, 0.01),
            ] {
                let (c, consts) = coeffs(opt, wd, 3);
                let a: Vec<f32> = (0..k * m).map(|_| next()).collect();
                let b: Vec<f32> = (0..k * n).map(|_| next()).collect();
                let w0: Vec<f32> = (0..m * n).map(|_| next()).collect();
                let m0: Vec<f32> = (0..m * n).map(|_| next() * 0.01).collect();
                let v0: Vec<f32> = (0..m * n).map(|_| next().abs() * 1e-4).collect();
                // The plain way: the gradient, then the update.
                let mut g1 = vec![0.0f32; m * n];
                with_threads(threads, || {
                    gemm(Op::T, Op::N, m, n, k, 0.5, &a, &b, 0.0, &mut g1)
                });
                let (mut w1, mut m1, mut v1) = (w0.clone(), m0.clone(), v0.clone());
                for e in 0..m * n {
                    c.adam(&mut w1[e], g1[e], &mut m1[e], &mut v1[e]);
                }
                // Fused.
                let mut g2 = vec![f32::NAN; m * n];
                let (mut w2, mut m2, mut v2) = (w0.clone(), m0.clone(), v0.clone());
                let t = AdamTensor {
                    w: &mut w2,
                    m: &mut m2,
                    v: &mut v2,
                    consts: &consts,
                };
                let did = with_threads(threads, || {
                    gemm_adam(Op::T, Op::N, (m, n, k), 0.5, &a, &b, &mut g2, t)
                });
                let ctx = format!("{m}×{n}×{k} {opt:?} wd {wd} threads {threads}");
                if !super::super::sgemm::available() {
                    assert!(!did, "{ctx}: no AVX-512 or AVX2+FMA, yet fused");
                    assert!(
                        g2.iter().all(|x| x.is_nan()) && w2 == w0,
                        "{ctx}: declined, yet wrote"
                    );
                    continue;
                }
                assert!(did, "{ctx}: declined");
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                // The gradient is not kept (`g2` is scratch): the update is the output.
                assert_eq!(bits(&w1), bits(&w2), "{ctx}: weights");
                assert_eq!(bits(&m1), bits(&m2), "{ctx}: first moment");
                assert_eq!(bits(&v1), bits(&v2), "{ctx}: second moment");
                assert_ne!(w1, w0, "{ctx}: nothing moved");
            }
        }
        // Shapes `gemm` computes another way (here a vector of outputs) are declined.
        let (_, consts) = coeffs(Optimizer::Adam, 0.0, 1);
        let (mut w, mut mm, mut v, mut g) = (
            vec![1.0f32; 64],
            vec![0.0; 64],
            vec![0.0; 64],
            vec![0.0; 64],
        );
        let t = AdamTensor {
            w: &mut w,
            m: &mut mm,
            v: &mut v,
            consts: &consts,
        };
        let (a, b) = (vec![1.0f32; 64 * 64], vec![1.0f32; 64]);
        assert!(!gemm_adam(
            Op::T,
            Op::N,
            (1, 64, 64),
            1.0,
            &b,
            &a,
            &mut g,
            t
        ));
        assert!(w.iter().all(|&x| x == 1.0));
    }

    /// The lane reductions against plain f64 loops, at every length around the 8-lane
    /// boundaries (tails included), plus max's contract: −∞ for none, NaN wins, ties and
    /// negative values handled.
    #[test]
    fn lane_reductions_match_plain_loops() {
        for len in 0..=35 {
            let x: Vec<f32> = (0..len)
                .map(|i| ((i * 37 % 17) as f32 - 8.5) * 0.3)
                .collect();
            let y: Vec<f32> = (0..len)
                .map(|i| ((i * 11 % 13) as f32 - 6.0) * 0.7)
                .collect();
            let want_sum: f64 = x.iter().map(|&v| v as f64).sum();
            let want_dot: f64 = x.iter().zip(&y).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!((sum(&x) as f64 - want_sum).abs() < 1e-4, "sum, len {len}");
            assert!(
                (dot(&x, &y) as f64 - want_dot).abs() < 1e-4,
                "dot, len {len}"
            );
            let want_max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&x), want_max, "max, len {len}");
        }
        assert_eq!(max::<f64>(&[-3.0, -1.0, -2.0]), -1.0);
        for at in [0, 5, 8, 12] {
            let mut x = vec![1.0f32; 13];
            x[at] = f32::NAN;
            assert!(max(&x).is_nan(), "NaN at {at}");
        }
    }

    fn naive(ta: Op, tb: Op, m: usize, n: usize, k: usize, a: &[f64], b: &[f64]) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                for p in 0..k {
                    let av = if ta == Op::N {
                        a[i * k + p]
                    } else {
                        a[p * m + i]
                    };
                    let bv = if tb == Op::N {
                        b[p * n + j]
                    } else {
                        b[j * k + p]
                    };
                    c[i * n + j] += av * bv;
                }
            }
        }
        c
    }

    /// [`gemm_onto`] gives the bits of copying its source into C and calling [`gemm_ex`] with
    /// β = 1, on the degenerate shapes (which that takes another way when there is no bias) as
    /// on the others, with and without a bias.
    #[test]
    fn gemm_onto_is_the_copy_then_gemm_ex() {
        for (m, n, k) in [(5, 7, 1), (1, 9, 4), (6, 1, 3), (37, 45, 19), (70, 33, 300)] {
            for with_bias in [false, true] {
                let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
                let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.23).cos()).collect();
                let src: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.51).cos() * 3.0).collect();
                let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01 - 0.2).collect();
                let bias = with_bias.then_some(&bias[..]);
                let mut onto = vec![f32::NAN; m * n];
                gemm_onto(
                    (Op::N, Op::N),
                    (m, n, k),
                    0.7,
                    (&a, &b),
                    bias,
                    &src,
                    &mut onto,
                );
                let mut want = src.clone();
                gemm_ex(
                    Op::N,
                    Op::N,
                    m,
                    n,
                    k,
                    0.7,
                    (&a, k),
                    (&b, n),
                    1.0,
                    (&mut want, n),
                    bias,
                );
                let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&onto), bits(&want), "{m}×{n}×{k} bias {with_bias}");
            }
        }
    }

    #[test]
    fn gemm_all_transposes_match_naive() {
        for (m, n, k) in [
            (5, 7, 3),
            (5, 1, 9),
            (1, 7, 9),
            (5, 7, 1),
            (1, 1, 4),
            (70, 9, 11),
        ] {
            check_shape(m, n, k);
        }
    }

    /// Threads split C by row blocks: bit-identical to one thread.
    #[test]
    fn threaded_gemm_is_bit_identical() {
        let (m, n, k) = (203, 64, 96);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        for ta in [Op::N, Op::T] {
            let mut c1 = vec![0.5f32; m * n];
            let mut c3 = c1.clone();
            gemm(ta, Op::T, m, n, k, 1.0, &a, &b, 1.0, &mut c1);
            with_threads(3, || gemm(ta, Op::T, m, n, k, 1.0, &a, &b, 1.0, &mut c3));
            assert!(c1.iter().zip(&c3).all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    /// Sub-matrices of wider buffers, plus a bias: f64 (the portable path) and f32 (the AVX-512
    /// kernel where the CPU has it) against the naive product.
    #[test]
    fn gemm_ex_with_leading_dims_and_bias() {
        let (m, n, k) = (37, 45, 29);
        let (lda, ldb, ldc) = (k.max(m) + 3, k.max(n) + 2, n + 5);
        let a: Vec<f64> = (0..lda * k.max(m))
            .map(|i| (i as f64 * 0.37).sin())
            .collect();
        let b: Vec<f64> = (0..ldb * k.max(n))
            .map(|i| (i as f64 * 0.91).cos())
            .collect();
        let bias: Vec<f64> = (0..n).map(|j| j as f64 * 0.1).collect();
        for ta in [Op::N, Op::T] {
            for tb in [Op::N, Op::T] {
                // The dense operands the naive product reads.
                let dense_a: Vec<f64> = match ta {
                    Op::N => (0..m * k).map(|i| a[(i / k) * lda + i % k]).collect(),
                    Op::T => (0..k * m).map(|i| a[(i / m) * lda + i % m]).collect(),
                };
                let dense_b: Vec<f64> = match tb {
                    Op::N => (0..k * n).map(|i| b[(i / n) * ldb + i % n]).collect(),
                    Op::T => (0..n * k).map(|i| b[(i / k) * ldb + i % k]).collect(),
                };
                let want = naive(ta, tb, m, n, k, &dense_a, &dense_b);
                let mut c = vec![1.0f64; m * ldc];
                gemm_ex(
                    ta,
                    tb,
                    m,
                    n,
                    k,
                    2.0,
                    (&a, lda),
                    (&b, ldb),
                    0.5,
                    (&mut c, ldc),
                    Some(&bias),
                );
                let a32: Vec<f32> = a.iter().map(|&v| v as f32).collect();
                let b32: Vec<f32> = b.iter().map(|&v| v as f32).collect();
                let bias32: Vec<f32> = bias.iter().map(|&v| v as f32).collect();
                let mut c32 = vec![1.0f32; m * ldc];
                with_threads(2, || {
                    gemm_ex(
                        ta,
                        tb,
                        m,
                        n,
                        k,
                        2.0,
                        (&a32, lda),
                        (&b32, ldb),
                        0.5,
                        (&mut c32, ldc),
                        Some(&bias32),
                    )
                });
                for i in 0..m {
                    for j in 0..ldc {
                        let (got, got32) = (c[i * ldc + j], c32[i * ldc + j] as f64);
                        if j >= n {
                            assert_eq!((got, got32), (1.0, 1.0), "outside C touched");
                            continue;
                        }
                        let w = 2.0 * want[i * n + j] + 0.5 + bias[j];
                        assert!((got - w).abs() < 1e-12, "f64 {ta:?}{tb:?} [{i},{j}]");
                        assert!((got32 - w).abs() < 1e-4, "f32 {ta:?}{tb:?} [{i},{j}]");
                    }
                }
            }
        }
    }

    fn check_shape(m: usize, n: usize, k: usize) {
        let a: Vec<f64> = (0..m * k).map(|i| (i as f64 * 0.37).sin()).collect();
        let b: Vec<f64> = (0..k * n).map(|i| (i as f64 * 0.91).cos()).collect();
        for ta in [Op::N, Op::T] {
            for tb in [Op::N, Op::T] {
                let want = naive(ta, tb, m, n, k, &a, &b);
                let mut c = vec![1.0; m * n];
                gemm(ta, tb, m, n, k, 2.0, &a, &b, 0.5, &mut c);
                for (x, w) in c.iter().zip(&want) {
                    assert!(
                        (x - (2.0 * w + 0.5)).abs() < 1e-12,
                        "{m}x{n}x{k} {ta:?}{tb:?}"
                    );
                }
                // β = 0 ignores what C held, NaN included.
                let mut c = vec![f64::NAN; m * n];
                gemm(ta, tb, m, n, k, 1.0, &a, &b, 0.0, &mut c);
                for (x, w) in c.iter().zip(&want) {
                    assert!((x - w).abs() < 1e-12, "{m}x{n}x{k} {ta:?}{tb:?} β=0");
                }
            }
        }
    }
}
