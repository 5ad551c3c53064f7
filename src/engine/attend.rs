//! Fused causal attention for one head of one sequence on AVX-512 (f32, head width 16, 32, 48
//! or 64): what [`crate::nn::attention`] otherwise does with six small GEMM calls per head (two
//! of them packing a transposed operand) and separate softmax passes. Per head, on blocks that
//! stay in L1:
//! - forward: K is transposed once, 16×16 blocks in registers, into a `[hd, T↑16]` scratch (so
//!   its columns load as vectors); the scores `α·q·kᵀ` of 6-row blocks are computed only up to
//!   the block's last diagonal vector, and the block's rows go through the softmax together
//!   (their reductions overlap); then `y = P·v` sums each block of rows only up to its last
//!   row's diagonal;
//! - backward: V is transposed the same way, `dP = dy·vᵀ` is computed up to the diagonal and
//!   turned into `dS = P ⊙ (dP − rowsum(P ⊙ dP))` block by block in per-thread scratch, then
//!   `dq = α·dS·k`, and `dk = α·dSᵀ·q` and `dv = Pᵀ·dy` together in one pass over the rows
//!   `i ≥ j` (each row of q and dy read once for both).
//!
//! Every element is one chain of FMAs in a fixed order whichever thread computes it, but not the
//! GEMM path's order or reductions: results differ from it by rounding, not bit for bit (the
//! tests bound the difference against an f64 reference). The exponential is
//! [`super::fastmath::exp_f32`] on 16 lanes, bit for bit.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::Float;

/// Score rows per block (6 rows × 4 vectors of columns: 24 accumulators of 32 registers).
const SR: usize = 6;

/// Whether the fused kernels run for this dtype and head width: f32 on an AVX-512 CPU, `hd` a
/// multiple of 16 up to 64 (a row of one head in at most 4 vectors).
pub fn available<F: Float>(hd: usize) -> bool {
    F::IS_F32 && super::sgemm::avx512() && hd.is_multiple_of(16) && (16..=64).contains(&hd)
}

/// The attention kernel f32 runs for heads of width `hd` on this CPU, as benchmark figures name
/// it.
pub fn describe(hd: usize) -> String {
    if available::<f32>(hd) {
        format!(
            "cloudchamber fused causal attention, AVX-512 (head width {hd}: 6-row score blocks, \
             in-register K/V transposes, dS in per-thread scratch)"
        )
    } else {
        format!(
            "per-head causal GEMMs (head width {hd}; the fused kernels need AVX-512 and a head \
             width of 16–64 by 16)"
        )
    }
}

/// One sequence's attention shape: `seq` tokens, `heads` heads of width `hd`.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    pub seq: usize,
    pub heads: usize,
    pub hd: usize,
}

impl Shape {
    fn c(&self) -> usize {
        self.heads * self.hd
    }
    /// `T` rounded up to whole vectors: the transposed operand's row stride.
    fn tp(&self) -> usize {
        self.seq.next_multiple_of(16)
    }
}

/// This thread's engine scratch ([`super::direct::with_scratch`]): the head's transposed K
/// (forward) or V (backward), `[hd, T↑16]`, and its `dS: [T, T]` (backward); grown when needed
/// and kept between calls, so no pass allocates.
fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    super::direct::with_scratch::<f32, R>(len, f)
}

/// Forward for head `head` of one sequence: from `qkv: [T, 3C]` (head `i`'s q, k, v in columns
/// `i·hd`, `C + i·hd`, `2C + i·hd`) to the probabilities `att: [T, T]` (zero above the
/// diagonal) and the head's columns of `y: [T, C]`; returns the largest scaled logit (NaN if
/// any is NaN). Panics unless [`available`] holds and the buffers have these sizes.
pub fn forward<F: Float>(
    s: Shape,
    head: usize,
    scale: F,
    qkv: &[F],
    att: &mut [F],
    y: &mut [F],
) -> F {
    let (t, c) = (s.seq, s.c());
    assert!(
        available::<F>(s.hd)
            && head < s.heads
            && qkv.len() >= t * 3 * c
            && att.len() >= t * t
            && y.len() >= t * c,
        "attend::forward: shapes"
    );
    if t == 0 {
        return F::neg_infinity();
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mx = with_scratch(s.hd * s.tp(), |kt| {
            // SAFETY: F is f32 (`available`), so the casts are identities; AVX-512F is present;
            // the assert bounds every row of q, k, v, att and y the kernels reach, and `kt` has
            // `hd·T↑16` elements.
            unsafe {
                let q = (qkv.as_ptr() as *const f32).add(head * s.hd);
                fwd(
                    s,
                    scale.f64() as f32,
                    q,
                    kt.as_mut_ptr(),
                    att.as_mut_ptr() as *mut f32,
                    (y.as_mut_ptr() as *mut f32).add(head * s.hd),
                )
            }
        });
        F::of(mx as f64)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("attend::available is false off x86-64")
}

/// Backward of [`forward`] for one head: from `att` (its `P`) and `dy: [T, C]` to the head's q,
/// k, v columns of `dqkv: [T, 3C]` (overwritten). `dS: [T, T]` lives in this thread's scratch,
/// reused by every head (in cache), not in a buffer of all heads. Panics unless [`available`]
/// holds and the buffers have these sizes.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    s: Shape,
    head: usize,
    scale: F,
    qkv: &[F],
    att: &[F],
    dy: &[F],
    dqkv: &mut [F],
) {
    let (t, c) = (s.seq, s.c());
    assert!(
        available::<F>(s.hd)
            && head < s.heads
            && qkv.len() >= t * 3 * c
            && att.len() >= t * t
            && dy.len() >= t * c
            && dqkv.len() >= t * 3 * c,
        "attend::backward: shapes"
    );
    if t == 0 {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    with_scratch(s.hd * s.tp() + t * t, |scratch| {
        let off = head * s.hd;
        let (vt, dp) = scratch.split_at_mut(s.hd * s.tp());
        // SAFETY: as in `forward`; `dqkv` is a unique borrow and `vt`, `dp` this thread's
        // scratch (`hd·T↑16` and `T²` elements), so the kernels' writes alias nothing they read.
        unsafe {
            bwd(
                s,
                scale.f64() as f32,
                (qkv.as_ptr() as *const f32).add(off),
                att.as_ptr() as *const f32,
                (dy.as_ptr() as *const f32).add(off),
                (dqkv.as_mut_ptr() as *mut f32).add(off),
                dp.as_mut_ptr(),
                vt.as_mut_ptr(),
            )
        }
    });
}

/// Asks for `buf` in L2 ahead of its use (one prefetch per cache line): a sequence's rows for
/// all heads, whose later heads' loads then hit cache instead of stalling one at a time (each
/// head reads rows far apart, a stride the hardware prefetchers do not follow).
pub fn prefetch<F: Float>(buf: &[F]) {
    #[cfg(target_arch = "x86_64")]
    {
        let bytes = std::mem::size_of_val(buf);
        let base = buf.as_ptr() as *const i8;
        for off in (0..bytes).step_by(64) {
            // SAFETY: the address lies inside `buf` (SSE is part of x86-64); a prefetch reads
            // nothing architecturally.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(base.add(off)) };
        }
    }
}

/// The lanes `lo..lo + 16` of a row that are below `end`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn mask(lo: usize, end: usize) -> __mmask16 {
    let live = end.saturating_sub(lo).min(16);
    ((1u32 << live) - 1) as __mmask16
}

/// `q` points at the head's q columns of row 0 (k and v follow at `+C`, `+2C`); `y` at its
/// columns of row 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn fwd(
    s: Shape,
    scale: f32,
    q: *const f32,
    kt: *mut f32,
    att: *mut f32,
    y: *mut f32,
) -> f32 {
    let (t, c, tp) = (s.seq, s.c(), s.tp());
    transpose(q.add(c), 3 * c, t, s.hd, kt, tp);
    let mut mx = f32::NEG_INFINITY;
    let mut nan = false;
    for i0 in (0..t).step_by(SR) {
        // Scores for the block's rows, columns up to its last row's diagonal.
        let ncols = (i0 + SR).min(t);
        rows_times_bt(q, 3 * c, s.hd, i0, t, kt, tp, ncols, scale, att, t);
        let (m, n) = softmax_rows(att, i0, ncols - i0, t);
        nan |= n;
        mx = mx.max(m);
    }
    lower_times(att, t, q.add(2 * c), 3 * c, s.hd, t, 1.0, y, c);
    if nan {
        f32::NAN
    } else {
        mx
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn bwd(
    s: Shape,
    scale: f32,
    q: *const f32,
    att: *const f32,
    dy: *const f32,
    dq: *mut f32,
    dp: *mut f32,
    vt: *mut f32,
) {
    let (t, c, tp) = (s.seq, s.c(), s.tp());
    let (k, v) = (q.add(c), q.add(2 * c));
    transpose(v, 3 * c, t, s.hd, vt, tp);
    for i0 in (0..t).step_by(SR) {
        let ncols = (i0 + SR).min(t);
        rows_times_bt(dy, c, s.hd, i0, t, vt, tp, ncols, 1.0, dp, t);
        ds_rows(att, dp, i0, ncols - i0, t);
    }
    lower_times(dp, t, k, 3 * c, s.hd, t, scale, dq, 3 * c);
    upper_t_times(
        (dp, q, 3 * c, scale, dq.add(c)),
        (att, dy, c, 1.0, dq.add(2 * c)),
        s.hd,
        t,
        3 * c,
    );
}

/// `dst[d, j] = src[j, d]` for `d < hd`, `j < seq` (`src` rows at stride `ld`), zero for
/// `seq ≤ j < tp`: 16×16 blocks transposed in registers (`hd` and `tp` are multiples of 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose(src: *const f32, ld: usize, seq: usize, hd: usize, dst: *mut f32, tp: usize) {
    for j0 in (0..tp).step_by(16) {
        for d0 in (0..hd).step_by(16) {
            let rows: [__m512; 16] = std::array::from_fn(|r| {
                if j0 + r < seq {
                    _mm512_loadu_ps(src.add((j0 + r) * ld + d0))
                } else {
                    _mm512_setzero_ps()
                }
            });
            let cols = transpose16(rows);
            for (c, v) in cols.iter().enumerate() {
                _mm512_storeu_ps(dst.add((d0 + c) * tp + j0), *v);
            }
        }
    }
}

/// The 16×16 transpose of `r` (row `i` in `r[i]`): 32-bit then 64-bit interleaves within
/// 128-bit lanes, then two rounds of 128-bit lane shuffles.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn transpose16(r: [__m512; 16]) -> [__m512; 16] {
    let t: [__m512; 16] = std::array::from_fn(|i| {
        let (a, b) = (r[i & !1], r[i | 1]);
        if i % 2 == 0 {
            _mm512_unpacklo_ps(a, b)
        } else {
            _mm512_unpackhi_ps(a, b)
        }
    });
    // u[4g + e], 128-bit lane L: column 4L + e of rows 4g..4g+4.
    let u: [__m512; 16] = std::array::from_fn(|i| {
        let (g, e) = (i / 4 * 4, i % 4);
        let (a, b) = (
            _mm512_castps_pd(t[g + e / 2]),
            _mm512_castps_pd(t[g + 2 + e / 2]),
        );
        _mm512_castpd_ps(if e % 2 == 0 {
            _mm512_unpacklo_pd(a, b)
        } else {
            _mm512_unpackhi_pd(a, b)
        })
    });
    let mut out = [_mm512_setzero_ps(); 16];
    for e in 0..4 {
        let w0 = _mm512_shuffle_f32x4::<0x88>(u[e], u[4 + e]);
        let w1 = _mm512_shuffle_f32x4::<0xDD>(u[e], u[4 + e]);
        let w2 = _mm512_shuffle_f32x4::<0x88>(u[8 + e], u[12 + e]);
        let w3 = _mm512_shuffle_f32x4::<0xDD>(u[8 + e], u[12 + e]);
        out[e] = _mm512_shuffle_f32x4::<0x88>(w0, w2);
        out[8 + e] = _mm512_shuffle_f32x4::<0xDD>(w0, w2);
        out[4 + e] = _mm512_shuffle_f32x4::<0x88>(w1, w3);
        out[12 + e] = _mm512_shuffle_f32x4::<0xDD>(w1, w3);
    }
    out
}

/// `out[i, j] = α·Σ_d a[i, d]·bt[d, j]` for the rows `i0..min(i0 + SR, seq)` and the columns
/// `j < ncols`, in chunks of up to 4 vectors (`a` rows at stride `lda`, `out` at `ldo`).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn rows_times_bt(
    a: *const f32,
    lda: usize,
    hd: usize,
    i0: usize,
    seq: usize,
    bt: *const f32,
    tp: usize,
    ncols: usize,
    alpha: f32,
    out: *mut f32,
    ldo: usize,
) {
    // Rows past the end repeat the last one (in bounds) and are not stored.
    let rows: [*const f32; SR] = std::array::from_fn(|r| a.add((i0 + r).min(seq - 1) * lda));
    let live = SR.min(seq - i0);
    let out = out.add(i0 * ldo);
    for c0 in (0..ncols).step_by(64) {
        let t = ScoreTile {
            rows: &rows,
            hd,
            bt: bt.add(c0),
            tp,
            alpha,
            out: out.add(c0),
            ldo,
            live,
            cols: ncols - c0,
        };
        match (ncols - c0).div_ceil(16).min(4) {
            1 => score_tile::<1>(&t),
            2 => score_tile::<2>(&t),
            3 => score_tile::<3>(&t),
            _ => score_tile::<4>(&t),
        }
    }
}

struct ScoreTile<'a> {
    rows: &'a [*const f32; SR],
    hd: usize,
    bt: *const f32,
    tp: usize,
    alpha: f32,
    out: *mut f32,
    ldo: usize,
    live: usize,
    cols: usize,
}

/// [`rows_times_bt`] on `CV` vectors of columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn score_tile<const CV: usize>(t: &ScoreTile) {
    let mut acc = [[_mm512_setzero_ps(); CV]; SR];
    for d in 0..t.hd {
        let b: [__m512; CV] = std::array::from_fn(|v| _mm512_loadu_ps(t.bt.add(d * t.tp + 16 * v)));
        for (acc, row) in acc.iter_mut().zip(t.rows) {
            let x = _mm512_set1_ps(*row.add(d));
            for (acc, b) in acc.iter_mut().zip(&b) {
                *acc = _mm512_fmadd_ps(x, *b, *acc);
            }
        }
    }
    let alpha = _mm512_set1_ps(t.alpha);
    for (r, acc) in acc.iter().enumerate().take(t.live) {
        for (v, &a) in acc.iter().enumerate() {
            let m = mask(16 * v, t.cols);
            _mm512_mask_storeu_ps(t.out.add(r * t.ldo + 16 * v), m, _mm512_mul_ps(alpha, a));
        }
    }
}

/// Zeroes `row[from..to]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn zero(row: *mut f32, from: usize, to: usize) {
    let mut j = from;
    while j < to {
        _mm512_mask_storeu_ps(row.add(j), mask(j, to), _mm512_setzero_ps());
        j += 16;
    }
}

/// Softmax in place of rows `i0..i0 + n` (`n ≤ SR`) of `att: [seq, seq]`, row `i` over its
/// entries `j ≤ i`, zero past them; returns the rows' largest entry and whether any is NaN. The
/// rows go through each pass together, so their reductions overlap.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn softmax_rows(att: *mut f32, i0: usize, n: usize, seq: usize) -> (f32, bool) {
    let row = |r: usize| att.add((i0 + r.min(n - 1)) * seq);
    // Row r's live entries (none for the rows past `n`).
    let live = |r: usize| if r < n { i0 + r + 1 } else { 0 };
    let nv = (i0 + n).div_ceil(16);
    let ninf = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut mx = [ninf; SR];
    let mut nan: __mmask16 = 0;
    for v in 0..nv {
        for (r, mx) in mx.iter_mut().enumerate() {
            let x = _mm512_mask_loadu_ps(ninf, mask(16 * v, live(r)), row(r).add(16 * v));
            nan |= _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(x, x);
            *mx = _mm512_max_ps(*mx, x);
        }
    }
    let m: [f32; SR] = std::array::from_fn(|r| _mm512_reduce_max_ps(mx[r]));
    let mut sum = [_mm512_setzero_ps(); SR];
    for v in 0..nv {
        for (r, sum) in sum.iter_mut().enumerate() {
            let (k, p) = (mask(16 * v, live(r)), row(r).add(16 * v));
            let x = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, p), _mm512_set1_ps(m[r]));
            let e = exp16(x);
            _mm512_mask_storeu_ps(p, k, e);
            *sum = _mm512_mask_add_ps(*sum, k, *sum, e);
        }
    }
    let inv: [__m512; SR] =
        std::array::from_fn(|r| _mm512_set1_ps(1.0 / _mm512_reduce_add_ps(sum[r])));
    for v in 0..nv {
        for (r, inv) in inv.iter().enumerate() {
            let (k, p) = (mask(16 * v, live(r)), row(r).add(16 * v));
            _mm512_mask_storeu_ps(p, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p), *inv));
        }
    }
    for r in 0..n {
        zero(row(r), live(r), seq);
    }
    let top = m[..n].iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    (top, nan != 0)
}

/// Softmax's backward on rows `i0..i0 + n` (`n ≤ SR`) of `dp: [seq, seq]` with the
/// probabilities `p`: `dp[i, j] ← p[i, j]·(dp[i, j] − Σ_{j' ≤ i} p[i, j']·dp[i, j'])` for `j ≤ i`,
/// zero past it; the rows go through each pass together, as in [`softmax_rows`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn ds_rows(p: *const f32, dp: *mut f32, i0: usize, n: usize, seq: usize) {
    let at = |r: usize| (i0 + r.min(n - 1)) * seq;
    let live = |r: usize| if r < n { i0 + r + 1 } else { 0 };
    let nv = (i0 + n).div_ceil(16);
    let mut acc = [_mm512_setzero_ps(); SR];
    for v in 0..nv {
        for (r, acc) in acc.iter_mut().enumerate() {
            let (k, o) = (mask(16 * v, live(r)), at(r) + 16 * v);
            let (pv, dv) = (
                _mm512_maskz_loadu_ps(k, p.add(o)),
                _mm512_maskz_loadu_ps(k, dp.add(o)),
            );
            *acc = _mm512_fmadd_ps(pv, dv, *acc);
        }
    }
    let dot: [__m512; SR] = std::array::from_fn(|r| _mm512_set1_ps(_mm512_reduce_add_ps(acc[r])));
    for v in 0..nv {
        for (r, dot) in dot.iter().enumerate() {
            let (k, o) = (mask(16 * v, live(r)), at(r) + 16 * v);
            let (pv, dv) = (
                _mm512_maskz_loadu_ps(k, p.add(o)),
                _mm512_maskz_loadu_ps(k, dp.add(o)),
            );
            _mm512_mask_storeu_ps(dp.add(o), k, _mm512_mul_ps(pv, _mm512_sub_ps(dv, *dot)));
        }
    }
    for r in 0..n {
        zero(dp.add(at(r)), live(r), seq);
    }
}

/// `out[i, :] = α·Σ_{j < end(i)} a[i, j]·x[j, :]` for every row `i < seq`, where `a: [seq, seq]`
/// (row stride `lda`) is zero above the diagonal, so each block of rows sums only up to its
/// last row; `x` rows at stride `ldx`, `out` at `ldo`, `hd = 16·HV` columns.
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f")]
unsafe fn lower_times(
    a: *const f32,
    lda: usize,
    x: *const f32,
    ldx: usize,
    hd: usize,
    seq: usize,
    alpha: f32,
    out: *mut f32,
    ldo: usize,
) {
    let l = Lower {
        a,
        lda,
        x,
        ldx,
        seq,
        alpha,
        out,
        ldo,
    };
    // 16 to 18 accumulators (two FMA latencies on two ports), in blocks short enough that
    // causality wastes little: a block sums every row to its last row's diagonal.
    match hd / 16 {
        1 => lower_rows::<16, 1>(&l),
        2 => lower_rows::<8, 2>(&l),
        3 => lower_rows::<6, 3>(&l),
        _ => lower_rows::<4, 4>(&l),
    }
}

struct Lower {
    a: *const f32,
    lda: usize,
    x: *const f32,
    ldx: usize,
    seq: usize,
    alpha: f32,
    out: *mut f32,
    ldo: usize,
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn lower_rows<const R: usize, const HV: usize>(l: &Lower) {
    let alpha = _mm512_set1_ps(l.alpha);
    for i0 in (0..l.seq).step_by(R) {
        let rows: [*const f32; R] =
            std::array::from_fn(|r| l.a.add((i0 + r).min(l.seq - 1) * l.lda));
        let end = (i0 + R).min(l.seq);
        let mut acc = [[_mm512_setzero_ps(); HV]; R];
        for j in 0..end {
            let xr = l.x.add(j * l.ldx);
            let xv: [__m512; HV] = std::array::from_fn(|h| _mm512_loadu_ps(xr.add(16 * h)));
            for r in 0..R {
                let p = _mm512_set1_ps(*rows[r].add(j));
                for h in 0..HV {
                    acc[r][h] = _mm512_fmadd_ps(p, xv[h], acc[r][h]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate().take(end - i0) {
            let o = l.out.add((i0 + r) * l.ldo);
            for (h, &v) in acc.iter().enumerate() {
                _mm512_storeu_ps(o.add(16 * h), _mm512_mul_ps(alpha, v));
            }
        }
    }
}

/// One product of [`upper_t_times`]: `(a: [seq, seq], x, x's row stride, α, out)`.
type UpperT = (*const f32, *const f32, usize, f32, *mut f32);

/// For both products `(a, x, ldx, α, out)`: `out[j, :] = α·Σ_{i ≥ j} a[i, j]·x[i, :]` for every
/// `j < seq`, where `a: [seq, seq]` (row stride `seq`) is zero above the diagonal, so each block
/// of output rows sums from its first row; `out` rows at stride `ldo`, `hd = 16·HV` columns.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn upper_t_times(one: UpperT, two: UpperT, hd: usize, seq: usize, ldo: usize) {
    // 2·R·HV accumulators: 24, or 12 for one-vector heads.
    match hd / 16 {
        1 => upper_rows::<6, 1>(one, two, seq, ldo),
        2 => upper_rows::<6, 2>(one, two, seq, ldo),
        3 => upper_rows::<4, 3>(one, two, seq, ldo),
        _ => upper_rows::<3, 4>(one, two, seq, ldo),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn upper_rows<const R: usize, const HV: usize>(
    (a1, x1, ld1, al1, o1): UpperT,
    (a2, x2, ld2, al2, o2): UpperT,
    seq: usize,
    ldo: usize,
) {
    let (al1, al2) = (_mm512_set1_ps(al1), _mm512_set1_ps(al2));
    for j0 in (0..seq).step_by(R) {
        // Columns past the end repeat the last one (in bounds) and are not stored.
        let cols: [usize; R] = std::array::from_fn(|r| (j0 + r).min(seq - 1));
        let mut acc1 = [[_mm512_setzero_ps(); HV]; R];
        let mut acc2 = [[_mm512_setzero_ps(); HV]; R];
        for i in j0..seq {
            let (r1, r2) = (x1.add(i * ld1), x2.add(i * ld2));
            let v1: [__m512; HV] = std::array::from_fn(|h| _mm512_loadu_ps(r1.add(16 * h)));
            let v2: [__m512; HV] = std::array::from_fn(|h| _mm512_loadu_ps(r2.add(16 * h)));
            let (ar1, ar2) = (a1.add(i * seq), a2.add(i * seq));
            for r in 0..R {
                let (b1, b2) = (
                    _mm512_set1_ps(*ar1.add(cols[r])),
                    _mm512_set1_ps(*ar2.add(cols[r])),
                );
                for h in 0..HV {
                    acc1[r][h] = _mm512_fmadd_ps(b1, v1[h], acc1[r][h]);
                    acc2[r][h] = _mm512_fmadd_ps(b2, v2[h], acc2[r][h]);
                }
            }
        }
        for r in 0..R.min(seq - j0) {
            let (p1, p2) = (o1.add((j0 + r) * ldo), o2.add((j0 + r) * ldo));
            for h in 0..HV {
                _mm512_storeu_ps(p1.add(16 * h), _mm512_mul_ps(al1, acc1[r][h]));
                _mm512_storeu_ps(p2.add(16 * h), _mm512_mul_ps(al2, acc2[r][h]));
            }
        }
    }
}

/// [`super::fastmath::exp_f32`] on 16 lanes, the same operations in the same order (so the
/// same bits; no FMA contraction, as in the scalar code). Its constants are `exp_f32`'s, digit
/// for digit (Cephes's, written to more places than f32 holds).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::excessive_precision)]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let c = _mm512_set1_ps;
    const MAGIC: f32 = 12_582_912.0;
    // `max(lo, x)` and `min(hi, ·)` return their second operand (x) when it is NaN: the scalar
    // `clamp` keeps NaN too.
    let xc = _mm512_min_ps(c(89.0), _mm512_max_ps(c(-104.0), x));
    let t = _mm512_add_ps(_mm512_mul_ps(xc, c(std::f32::consts::LOG2_E)), c(MAGIC));
    let n = _mm512_sub_ps(t, c(MAGIC));
    let ni = _mm512_sub_epi32(
        _mm512_castps_si512(t),
        _mm512_set1_epi32(MAGIC.to_bits() as i32),
    );
    let r = _mm512_sub_ps(
        _mm512_sub_ps(xc, _mm512_mul_ps(n, c(0.693359375))),
        _mm512_mul_ps(n, c(-2.12194440e-4)),
    );
    let r2 = _mm512_mul_ps(r, r);
    let mut p = _mm512_add_ps(_mm512_mul_ps(c(1.9875691500e-4), r), c(1.3981999507e-3));
    for k in [
        8.3334519073e-3,
        4.1665795894e-2,
        1.6666665459e-1,
        5.0000001201e-1,
    ] {
        p = _mm512_add_ps(_mm512_mul_ps(p, r), c(k));
    }
    let y = _mm512_add_ps(_mm512_add_ps(_mm512_mul_ps(p, r2), r), c(1.0));
    let n1 = _mm512_srai_epi32::<1>(ni);
    let n2 = _mm512_sub_epi32(ni, n1);
    let scale = |n: __m512i| {
        _mm512_castsi512_ps(_mm512_slli_epi32::<23>(_mm512_add_epi32(
            n,
            _mm512_set1_epi32(127),
        )))
    };
    _mm512_mul_ps(_mm512_mul_ps(y, scale(n1)), scale(n2))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// The 16-lane exponential gives `exp_f32`'s bits, across the range, at its clamps and
    /// edges, and for ±∞ and NaN.
    #[test]
    fn exp16_is_exp_f32() {
        if !super::super::sgemm::avx512() {
            return;
        }
        let mut xs: Vec<f32> = (0..200_000)
            .map(|i| -110.0 + 200.0 * i as f32 / 200_000.0)
            .collect();
        xs.extend([
            0.0,
            -0.0,
            88.72283,
            88.72284,
            -103.97208,
            -103.97207,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            1e-30,
            -1e-30,
        ]);
        while !xs.len().is_multiple_of(16) {
            xs.push(0.5);
        }
        for chunk in xs.chunks_exact(16) {
            let mut got = [0f32; 16];
            // SAFETY: AVX-512F is present (checked above); both arrays hold 16 floats.
            unsafe { _mm512_storeu_ps(got.as_mut_ptr(), exp16(_mm512_loadu_ps(chunk.as_ptr()))) };
            for (&x, &g) in chunk.iter().zip(&got) {
                let want = super::super::fastmath::exp_f32(x);
                assert!(
                    g.to_bits() == want.to_bits() || (g.is_nan() && want.is_nan()),
                    "exp16({x}) = {g}, exp_f32 = {want}"
                );
            }
        }
    }
}
