//! The lanes' kernels for CPUs with AVX2 and FMA but no AVX-512: each [`Lanes`] is two ymm
//! halves, and every lane gets the IEEE operations, in the order, of the AVX-512 kernels (and
//! of the portable code), so a group computes the same bits on either kind of CPU — the bits
//! its models compute alone ([`crate::engine::sgemm`]'s AVX2 kernels match its AVX-512 ones).
//!
//! The GEMM is written out ([`chain`]: 3×2 tiles of lane vectors, both halves at once, 12
//! accumulators in the 16 ymm registers); the elementwise passes are the portable loops
//! compiled here for AVX2 and FMA, where LLVM vectorizes their 16-lane inner loops.

use std::arch::x86_64::*;

use super::{AdamConsts, Epi, Lanes, Op, LANES};

#[inline(always)]
unsafe fn ld(p: *const Lanes, half: usize) -> __m256 {
    _mm256_loadu_ps((p as *const f32).add(8 * half))
}

#[inline(always)]
unsafe fn st(p: *mut Lanes, half: usize, v: __m256) {
    _mm256_storeu_ps((p as *mut f32).add(8 * half), v)
}

/// [`super::gemm`] on AVX2: its degenerate shapes by the portable code (compiled here), the
/// rest by [`chain`].
///
/// # Safety
/// AVX2 and FMA present; `a`, `b`, `c` hold `op(A): [m, k]`, `op(B): [k, n]`, `C: [m, n]`.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn gemm(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[Lanes],
    b: &[Lanes],
    beta: f32,
    c: &mut [Lanes],
) {
    // `gemm_ex`'s degenerate shapes, in its order.
    if n == 1 && ta == Op::N {
        return super::dot_rows(m, k, alpha, a, b, beta, c);
    }
    if m == 1 && tb == Op::N {
        return super::axpy(n, k, alpha, a, b, beta, c);
    }
    if k == 1 {
        return super::outer(m, n, alpha, a, b, beta, c);
    }
    let ((ars, aps), (bps, bjs)) = super::strides(ta, tb, m, n, k);
    chain(
        (m, n, k),
        alpha,
        (a.as_ptr(), ars, aps),
        (b.as_ptr(), bps, bjs),
        beta,
        c.as_mut_ptr(),
        Epi::Store,
    )
}

/// `C(i, j) = α·Σ_p A(i, p)·B(p, j) (+ β·C)`, the sum one FMA chain from zero; `A(i, p)` at
/// `a + i·ars + p·aps`, `B(p, j)` at `b + p·bps + j·bjs`, `C` row-major `[m, n]` (the AVX-512
/// `chain`; its blocks of the sum fill the whole L1, where the AVX-512 one's fill half: the
/// raw sums pass through C between blocks exactly, so the bits do not depend on them).
///
/// # Safety
/// AVX2 and FMA; every address the strides reach for `i < m, j < n, p < k` is in bounds, and
/// `c` holds `m·n` lanes aliasing neither input.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn chain(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, ars, aps): (*const Lanes, usize, usize),
    (b, bps, bjs): (*const Lanes, usize, usize),
    beta: f32,
    c: *mut Lanes,
    epi: Epi,
) {
    assert!(
        (ars == 1 || aps == 1) && (bps == 1 || bjs == 1),
        "lanes::chain: an operand dense in neither direction"
    );
    let kb = if beta == 0.0 {
        super::k_block(n, k, crate::engine::sgemm::l1d_bytes())
    } else {
        k
    };
    let mut p0 = 0;
    while p0 < k {
        let kc = kb.min(k - p0);
        let t = Tile {
            k: kc,
            n,
            alpha,
            beta,
            ars,
            aps,
            bps,
            bjs,
            epi,
            resume: p0 > 0,
            finish: p0 + kc == k,
        };
        tiles(&t, m, n, a.add(p0 * aps), b.add(p0 * bps), c);
        p0 += kc;
    }
}

#[derive(Clone, Copy)]
struct Tile {
    k: usize,
    n: usize,
    alpha: f32,
    beta: f32,
    ars: usize,
    aps: usize,
    bps: usize,
    bjs: usize,
    epi: Epi,
    /// The sum goes on from the raw accumulators an earlier block left in C.
    resume: bool,
    /// The sum's last block: the epilogue follows (else the raw accumulators go to C).
    finish: bool,
}

/// Every tile of C over one block of the sum.
///
/// # Safety
/// As [`chain`]'s, for the block's steps.
#[target_feature(enable = "avx2,fma")]
unsafe fn tiles(t: &Tile, m: usize, n: usize, a: *const Lanes, b: *const Lanes, c: *mut Lanes) {
    let (ars, bjs) = (t.ars, t.bjs);
    // 3×2 lane vectors: 12 accumulators and B's 4 halves in the 16 registers, A's halves
    // read as memory operands of the FMAs.
    const I: usize = 3;
    const J: usize = 2;
    let mut i = 0;
    while i < m {
        let ir = I.min(m - i);
        let mut j = 0;
        while j < n {
            let jr = J.min(n - j);
            let (ap, bp, cp) = (a.add(i * ars), b.add(j * bjs), c.add(i * n + j));
            let t = &Tile {
                epi: match t.epi {
                    Epi::Tanh(Some(bias)) => Epi::Tanh(Some(bias.add(j))),
                    e => e,
                },
                ..*t
            };
            macro_rules! pick {
                ($at:literal, $bt:literal; $($ii:literal)*) => {
                    match (ir, jr) {
                        $(($ii, 2) => tile::<$ii, 2, $at, $bt>(t, ap, bp, cp),
                          ($ii, 1) => tile::<$ii, 1, $at, $bt>(t, ap, bp, cp),)*
                        _ => unreachable!("tiles are at most 3×2"),
                    }
                };
            }
            match (ars == 1, t.bps == 1) {
                (false, false) => pick!(false, false; 1 2 3),
                (false, true) => pick!(false, true; 1 2 3),
                (true, false) => pick!(true, false; 1 2 3),
                (true, true) => pick!(true, true; 1 2 3),
            }
            j += jr;
        }
        i += ir;
    }
}

/// One `I×J` block of C, both halves of the lanes at once (each 64-byte [`Lanes`] is read
/// whole: the operands of a lanes GEMM outgrow L1, and reading half a line per pass doubled
/// the L2 traffic). `AT`: A's rows are adjacent (`ars = 1`; otherwise its steps over `p`
/// are); `BT`: B's steps over `p` are adjacent (`bps = 1`; otherwise its columns are).
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const I: usize, const J: usize, const AT: bool, const BT: bool>(
    t: &Tile,
    a: *const Lanes,
    b: *const Lanes,
    c: *mut Lanes,
) {
    let (ars, aps) = if AT { (1, t.aps) } else { (t.ars, 1) };
    let (bps, bjs) = if BT { (1, t.bjs) } else { (t.bps, 1) };
    let mut acc = [[[_mm256_setzero_ps(); 2]; J]; I];
    if t.resume {
        for (ii, acc) in acc.iter_mut().enumerate() {
            for (jj, v) in acc.iter_mut().enumerate() {
                *v = [0, 1].map(|h| ld(c.add(ii * t.n + jj), h));
            }
        }
    }
    for p in 0..t.k {
        let mut bv = [[_mm256_setzero_ps(); 2]; J];
        for (jj, bv) in bv.iter_mut().enumerate() {
            *bv = [0, 1].map(|h| ld(b.add(p * bps + jj * bjs), h));
        }
        for (ii, acc) in acc.iter_mut().enumerate() {
            for h in 0..2 {
                let av = ld(a.add(ii * ars + p * aps), h);
                for jj in 0..J {
                    acc[jj][h] = _mm256_fmadd_ps(av, bv[jj][h], acc[jj][h]);
                }
            }
        }
    }
    if !t.finish {
        for (ii, acc) in acc.iter().enumerate() {
            for (jj, v) in acc.iter().enumerate() {
                for (h, &v) in v.iter().enumerate() {
                    st(c.add(ii * t.n + jj), h, v);
                }
            }
        }
        return;
    }
    let (alpha, beta) = (_mm256_set1_ps(t.alpha), _mm256_set1_ps(t.beta));
    // `α·acc (+ β·C)`, as `gemm_ex`'s epilogue forms it (α = 1, most layers, leaves the product
    // exact: no multiply).
    let scaled = |v: __m256, dst: *const Lanes, half: usize| {
        let v = if t.alpha == 1.0 {
            v
        } else {
            _mm256_mul_ps(v, alpha)
        };
        if t.beta != 0.0 {
            _mm256_fmadd_ps(beta, ld(dst, half), v)
        } else {
            v
        }
    };
    if let Epi::Tanh(bias) = t.epi {
        // One row at a time: its four vectors' tanh side by side (`tanh_lock`: the same
        // operations, so the same bits, 1.17–1.31× the speed of one vector at a time here).
        for (ii, acc) in acc.iter().enumerate() {
            // A one-column tile's last two are zeros, computed and dropped.
            let z: [__m256; 4] = std::array::from_fn(|q| {
                let (jj, half) = (q / 2, q % 2);
                if jj >= J {
                    return _mm256_setzero_ps();
                }
                let v = scaled(acc[jj][half], c.add(ii * t.n + jj), half);
                match bias {
                    Some(bias) => _mm256_add_ps(v, ld(bias.add(jj), half)),
                    None => v,
                }
            });
            let h = crate::engine::sgemm::avx2::tanh_lock(z);
            for (q, &h) in h.iter().enumerate().take(2 * J) {
                st(c.add(ii * t.n + q / 2), q % 2, h);
            }
        }
        return;
    }
    for (ii, acc) in acc.iter().enumerate() {
        for (jj, v) in acc.iter().enumerate() {
            for (half, &v) in v.iter().enumerate() {
                let dst = c.add(ii * t.n + jj);
                st(dst, half, scaled(v, dst, half));
            }
        }
    }
}

/// One row of [`super::gather_rows`]: `dst[e][l] = at[l][e]` for `e < w`, eight columns at a
/// time: each half of the lanes' eight loads transposed 8×8 in registers.
///
/// # Safety
/// AVX2 present; each `at[l]` heads `w` readable floats, `dst` holds `w` lanes.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn gather_row(at: &[*const f32; LANES], w: usize, dst: *mut Lanes) {
    let mut e0 = 0;
    while e0 < w {
        let m = (w - e0).min(8);
        let mask = _mm256_cmpgt_epi32(
            _mm256_set1_epi32(m as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        for half in 0..2 {
            // r[j]: lane 8·half + j's floats e0 … e0 + 7 (those past `w` neither read nor
            // faulted on).
            let r: [__m256; 8] = std::array::from_fn(|j| {
                let p = at[8 * half + j].add(e0);
                if m == 8 {
                    _mm256_loadu_ps(p)
                } else {
                    _mm256_maskload_ps(p, mask)
                }
            });
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            // u[0]: column 0 of lanes 0–3 and column 4 of them; u[1]: columns 1 and 5; …
            let u = [
                _mm256_shuffle_ps::<0x44>(t0, t2),
                _mm256_shuffle_ps::<0xEE>(t0, t2),
                _mm256_shuffle_ps::<0x44>(t1, t3),
                _mm256_shuffle_ps::<0xEE>(t1, t3),
            ];
            let v = [
                _mm256_shuffle_ps::<0x44>(t4, t6),
                _mm256_shuffle_ps::<0xEE>(t4, t6),
                _mm256_shuffle_ps::<0x44>(t5, t7),
                _mm256_shuffle_ps::<0xEE>(t5, t7),
            ];
            for e in 0..m.min(4) {
                st(
                    dst.add(e0 + e),
                    half,
                    _mm256_permute2f128_ps::<0x20>(u[e], v[e]),
                );
            }
            for e in 4..m {
                st(
                    dst.add(e0 + e),
                    half,
                    _mm256_permute2f128_ps::<0x31>(u[e - 4], v[e - 4]),
                );
            }
        }
        e0 += 8;
    }
}

/// [`super::column_sums`] compiled for AVX2.
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn column_sums(g: &[Lanes], width: usize, acc: &mut [Lanes]) {
    super::column_sums_portable(g, width, acc)
}

/// [`super::mse`] compiled for AVX2.
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn mse(out: &[Lanes], y: &[Lanes], scale: f32, g: &mut [Lanes]) -> [f64; LANES] {
    super::mse_portable(out, y, scale, g)
}

/// [`super::bias_tanh`] compiled for AVX2.
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn bias_tanh(
    width: usize,
    bias: Option<&[Lanes]>,
    z: &mut [Lanes],
    h: &mut [Lanes],
) {
    super::bias_tanh_portable(width, bias, z, h)
}

/// [`super::tanh_slope`] compiled for AVX2.
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tanh_slope(g: &mut [Lanes], h: &[Lanes]) {
    super::tanh_slope_portable(g, h)
}

/// [`super::adam`] compiled for AVX2.
///
/// # Safety
/// AVX2 and FMA present.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn adam(
    c: &AdamConsts,
    w: &mut [Lanes],
    g: &[Lanes],
    m: &mut [Lanes],
    v: &mut [Lanes],
) {
    super::adam_portable(c, w, g, m, v)
}
