//! The GEMM micro-kernels for CPUs with AVX2 and FMA but no AVX-512 (Haswell to Alder Lake,
//! Zen 1–3): the same `KC` blocks and per-element arithmetic as the AVX-512 kernels, over
//! operands packed to their own tile, so results are bit-identical to theirs for finite
//! operands (the causal parts of [`super::Part`] sum over tile-sized ranges of `p`, which can
//! add `0·inf` terms on one and not the other).
//!
//! With 16 ymm registers a 12×32 tile does not fit, so the tile is 6×16 (BLIS's Haswell
//! micro-kernel shape: 12 accumulators, 2 loads of B and 6 broadcasts of A per step of `p`, 12
//! FMAs), over A tiles and B panels packed to that size (`MR_AVX2`, `NR_AVX2`) in the same `KC`
//! blocks; each element of C is still one FMA chain over `p` in order from zero, then the same
//! epilogue.

use std::arch::x86_64::*;

use super::{Extra, SmallTile, Tile, MR_AVX2, NR_AVX2};
use crate::engine::lanes::AdamConsts;

/// `$kernel::<R>($tile)` for a runtime row count `R` in `1..=6`.
macro_rules! by_sub_rows {
    ($rows:expr, $kernel:ident, $tile:expr) => {
        match $rows {
            1 => $kernel::<1>($tile),
            2 => $kernel::<2>($tile),
            3 => $kernel::<3>($tile),
            4 => $kernel::<4>($tile),
            5 => $kernel::<5>($tile),
            6 => $kernel::<6>($tile),
            _ => unreachable!("tile rows are 1..=6"),
        }
    };
}

/// The lanes of an 8-float vector that lie before column `live` (all-ones where live): the
/// masks of `vmaskmovps`, which neither reads nor writes (nor faults on) the others.
#[inline(always)]
unsafe fn live_mask(live: usize) -> __m256i {
    let live = live.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(live),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// [`super::micro`] on AVX2: a tile of `mr ≤ 6` rows and up to 16 columns.
///
/// # Safety
/// AVX2 and FMA present; the tile's contract as for the AVX-512 kernel, with B's panel
/// `NR_AVX2` wide.
pub(super) unsafe fn micro(mr: usize, t: &Tile) {
    debug_assert!(mr <= MR_AVX2 && t.cols <= NR_AVX2);
    if t.a_rs == 1 {
        by_sub_rows!(mr, packed, t);
    } else {
        by_sub_rows!(mr, in_place, t);
    }
}

/// [`kernel`] on a packed A tile (or a column-major A read in place): its rows adjacent.
#[target_feature(enable = "avx2,fma")]
unsafe fn packed<const R: usize>(t: &Tile) {
    kernel::<R, false>(t)
}

/// [`kernel`] on a row-major A read in place, its rows `a_rs` apart.
#[target_feature(enable = "avx2,fma")]
unsafe fn in_place<const R: usize>(t: &Tile) {
    kernel::<R, true>(t)
}

/// Tile `t` of `R` rows (`STRIDED`: A's rows `t.a_rs` apart, else adjacent).
#[inline(always)]
unsafe fn kernel<const R: usize, const STRIDED: bool>(t: &Tile) {
    let cols = t.cols;
    let masks = [live_mask(cols), live_mask(cols.saturating_sub(8))];
    let full = [cols >= 8, cols >= 16];
    let c = t.c;
    // Ask for the C sub-tile now, so its cache misses overlap the FMAs (as the AVX-512 kernel),
    // unless the epilogue neither reads nor writes it (a first block with β = 0 whose sum is not
    // stored).
    let c_idle = matches!(t.extra, Extra::Adam(_) | Extra::TanhOnly(_)) && t.first && t.beta == 0.0;
    for r in 0..R {
        let row = c.add(r * t.ldc) as *const i8;
        if !c_idle {
            _mm_prefetch::<_MM_HINT_T0>(row);
        }
        if let Extra::Adam(a) = t.extra {
            let o = r * t.ldc;
            for p in [a.w, a.m, a.v] {
                let row = p.add(o) as *const i8;
                _mm_prefetch::<_MM_HINT_T0>(row);
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
            }
        }
    }
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut ap, mut bp) = (t.a, t.b);
    for _ in 0..t.kc {
        // The packed panel is cache-line aligned and `NR_AVX2` floats wide: aligned loads.
        let b0 = _mm256_load_ps(bp);
        let b1 = _mm256_load_ps(bp.add(8));
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = if STRIDED {
                _mm256_broadcast_ss(&*ap.offset(r as isize * t.a_rs))
            } else {
                _mm256_broadcast_ss(&*ap.add(r))
            };
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
        bp = bp.add(NR_AVX2);
        // Wrapping: after the last step, A read in place points past its buffer (never read).
        ap = ap.wrapping_offset(t.a_ps);
    }
    let alpha = _mm256_set1_ps(t.alpha);
    let beta = _mm256_set1_ps(t.beta);
    let adam = match t.extra {
        Extra::Adam(a) => Some((a, AdamRegs::load(&*a.consts))),
        _ => None,
    };
    // A tanh layer's pre-activations, kept for one lockstep tanh after the loop.
    let mut pre = [[_mm256_setzero_ps(); 2]; R];
    for (r, acc) in acc.iter().enumerate() {
        let row = c.add(r * t.ldc);
        for (q, &acc) in acc.iter().enumerate() {
            if cols <= 8 * q {
                continue;
            }
            let (mk, full) = (masks[q], full[q]);
            let ld = |p: *const f32| {
                if full {
                    _mm256_loadu_ps(p)
                } else {
                    _mm256_maskload_ps(p, mk)
                }
            };
            let st = |p: *mut f32, v: __m256| {
                if full {
                    _mm256_storeu_ps(p, v)
                } else {
                    _mm256_maskstore_ps(p, mk, v)
                }
            };
            let dst = row.add(8 * q);
            let mut v = _mm256_mul_ps(acc, alpha);
            if t.first {
                if t.beta != 0.0 {
                    v = _mm256_fmadd_ps(beta, ld(t.src.add(r * t.ldc + 8 * q)), v);
                }
                if let Some(bias) = t.bias {
                    v = _mm256_add_ps(v, ld(bias.add(8 * q)));
                }
            } else {
                v = _mm256_add_ps(ld(dst), v);
            }
            let o = r * t.ldc + 8 * q;
            if let Extra::TanhSlope(hp) = t.extra {
                // `g · (1 − h·h)`, as the slope's own pass computes it.
                let hv = ld(hp.add(o));
                let s = _mm256_sub_ps(_mm256_set1_ps(1.0), _mm256_mul_ps(hv, hv));
                v = _mm256_mul_ps(v, s);
            }
            // Adam's gradient is consumed here, not stored ([`Extra::Adam`]), nor is a
            // pre-activation nothing reads ([`Extra::TanhOnly`]).
            if adam.is_none() && !matches!(t.extra, Extra::TanhOnly(_)) {
                st(dst, v);
            }
            pre[r][q] = v;
            if let Some((a, regs)) = adam {
                let (wp, mp, vp) = (a.w.add(o), a.m.add(o), a.v.add(o));
                let (w, m, vv) = regs.step(ld(wp), v, ld(mp), ld(vp));
                st(wp, w);
                st(mp, m);
                st(vp, vv);
            }
        }
    }
    if let Extra::Tanh(hp) | Extra::TanhOnly(hp) = t.extra {
        // Two rows at a time: four tanh chains side by side ([`tanh_lock`]: the same operations,
        // so the same bits; the forward pass of the reference MLP ~2% faster on Zen 3).
        let mut r = 0;
        while r < R {
            let rows = (R - r).min(2);
            let h = tanh_lock([
                pre[r][0],
                pre[r][1],
                pre[r + rows - 1][0],
                pre[r + rows - 1][1],
            ]);
            for (i, &h) in h.iter().enumerate().take(2 * rows) {
                let (rr, q) = (r + i / 2, i % 2);
                if cols <= 8 * q {
                    continue;
                }
                let p = hp.add(rr * t.ldc + 8 * q);
                if full[q] {
                    _mm256_storeu_ps(p, h)
                } else {
                    _mm256_maskstore_ps(p, masks[q], h)
                }
            }
            r += rows;
        }
    }
}

/// [`super::small_micro`] on AVX2: a small tile of `mr ≤ 6` rows and up to 16 columns.
///
/// # Safety
/// AVX2 and FMA present; the tile's contract as for the AVX-512 kernel.
pub(super) unsafe fn small_micro(mr: usize, t: &SmallTile) {
    debug_assert!(mr <= MR_AVX2 && t.cols <= NR_AVX2);
    if t.cols == NR_AVX2 {
        by_sub_rows!(mr, small_full, t);
    } else {
        by_sub_rows!(mr, small_ragged, t);
    }
}

/// [`small_kernel`] on a tile 16 columns wide: plain loads and stores. Its own copy because
/// the masks, live across the loop, cost the registers that hold the accumulators: with them
/// LLVM kept the 6-row tile's accumulators on the stack, a store per FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn small_full<const R: usize>(t: &SmallTile) {
    small_kernel::<R, true>(t)
}

/// [`small_kernel`] on a tile narrower than 16 columns.
#[target_feature(enable = "avx2,fma")]
unsafe fn small_ragged<const R: usize>(t: &SmallTile) {
    small_kernel::<R, false>(t)
}

/// Small tile `t` of `R` rows, A and B read through their strides (`FULL`: 16 columns;
/// otherwise B's ragged edge by masked loads).
#[inline(always)]
unsafe fn small_kernel<const R: usize, const FULL: bool>(t: &SmallTile) {
    let cols = if FULL { NR_AVX2 } else { t.cols };
    let masks = if FULL {
        [_mm256_setzero_si256(); 2]
    } else {
        [live_mask(cols), live_mask(cols.saturating_sub(8))]
    };
    let ld = |q: usize, p: *const f32| {
        if FULL || cols >= 8 * (q + 1) {
            _mm256_loadu_ps(p)
        } else {
            _mm256_maskload_ps(p, masks[q])
        }
    };
    let live1 = FULL || cols > 8;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut ap, mut bp) = (t.a, t.b);
    for _ in 0..t.k {
        let b0 = ld(0, bp);
        let b1 = if live1 {
            ld(1, bp.wrapping_add(8))
        } else {
            _mm256_setzero_ps()
        };
        for (r, acc) in acc.iter_mut().enumerate() {
            let av = _mm256_set1_ps(*ap.offset(r as isize * t.a_rs));
            acc[0] = _mm256_fmadd_ps(av, b0, acc[0]);
            acc[1] = _mm256_fmadd_ps(av, b1, acc[1]);
        }
        bp = bp.wrapping_offset(t.b_ps);
        ap = ap.wrapping_offset(t.a_ps);
    }
    // The packed kernel's epilogue for a first (and only) `KC` block.
    let alpha = _mm256_set1_ps(t.alpha);
    let beta = _mm256_set1_ps(t.beta);
    for (r, acc) in acc.iter().enumerate() {
        let row = t.c.add(r * t.ldc);
        for (q, &acc) in acc.iter().enumerate() {
            if cols <= 8 * q {
                continue;
            }
            let full = FULL || cols >= 8 * (q + 1);
            let dst = row.add(8 * q);
            let mut v = _mm256_mul_ps(acc, alpha);
            if t.beta != 0.0 {
                v = _mm256_fmadd_ps(beta, ld(q, t.src.add(r * t.ldc + 8 * q)), v);
            }
            if let Some(bias) = t.bias {
                v = _mm256_add_ps(v, ld(q, bias.add(8 * q)));
            }
            if full {
                _mm256_storeu_ps(dst, v)
            } else {
                _mm256_maskstore_ps(dst, masks[q], v)
            }
        }
    }
}

/// [`super::copy_row`] on AVX2: `dst[0..16] = src[0..cols]`, zero-padded.
///
/// # Safety
/// AVX2 present; `src` holds `cols ≤ 16` floats and `dst` 16.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn copy_row(src: *const f32, dst: *mut f32, cols: usize) {
    for q in 0..NR_AVX2 / 8 {
        let live = cols.saturating_sub(8 * q);
        let v = if live >= 8 {
            _mm256_loadu_ps(src.add(8 * q))
        } else {
            // Lanes past `cols` are neither read nor faulted on; they load as zero.
            _mm256_maskload_ps(src.wrapping_add(8 * q), live_mask(live))
        };
        _mm256_storeu_ps(dst.add(8 * q), v);
    }
}

/// [`crate::engine::fastmath::tanh_f32`] on `N` vectors of 8 lanes, operation for operation
/// (as the AVX-512 lanes' copy of it), each operation applied to all `N` before the next: `N`
/// independent chains side by side, which the out-of-order core overlaps better than one
/// vector's chain after another's.
///
/// # Safety
/// AVX and FMA present.
#[inline(always)]
pub(in crate::engine) unsafe fn tanh_lock<const N: usize>(x: [__m256; N]) -> [__m256; N] {
    use crate::engine::fastmath::tanh_consts::*;
    let s = _mm256_set1_ps;
    let each = |f: &dyn Fn(usize) -> __m256| -> [__m256; N] { std::array::from_fn(f) };
    // `clamp`: max(lo, x) and min(hi, ·) return x itself when it is NaN, as `clamp` does.
    let xc = each(&|i| _mm256_min_ps(s(CLAMP), _mm256_max_ps(s(-CLAMP), x[i])));
    let x2 = each(&|i| _mm256_mul_ps(xc[i], xc[i]));
    let x3 = each(&|i| _mm256_mul_ps(x2[i], xc[i]));
    let mut p = each(&|i| _mm256_fmadd_ps(x2[i], s(A3), s(A2)));
    for c in [A1, A0] {
        p = each(&|i| _mm256_fmadd_ps(x2[i], p[i], s(c)));
    }
    let p = each(&|i| _mm256_fmadd_ps(x3[i], p[i], xc[i]));
    let mut q = each(&|i| _mm256_fmadd_ps(x2[i], s(B4), s(B3)));
    for c in [B2, B1, 1.0] {
        q = each(&|i| _mm256_fmadd_ps(x2[i], q[i], s(c)));
    }
    each(&|i| _mm256_div_ps(p[i], q[i]))
}

/// Adam's constants of one tensor broadcast to 8 lanes, for [`AdamRegs::step`].
#[derive(Clone, Copy)]
struct AdamRegs {
    adamw: bool,
    decay: __m256,
    keep: __m256,
    b1: __m256,
    omb1: __m256,
    b2: __m256,
    omb2: __m256,
    step: __m256,
    inv: __m256,
    eps: __m256,
}

impl AdamRegs {
    /// The constants of lane 0 (an [`Extra::Adam`] target's are the same in every lane).
    #[inline(always)]
    unsafe fn load(c: &AdamConsts) -> Self {
        let s = |x: &[f32; crate::engine::lanes::LANES]| _mm256_set1_ps(x[0]);
        AdamRegs {
            adamw: c.adamw,
            decay: s(&c.decay),
            keep: s(&c.keep),
            b1: s(&c.b1),
            omb1: s(&c.one_minus_b1),
            b2: s(&c.b2),
            omb2: s(&c.one_minus_b2),
            step: s(&c.step_size),
            inv: s(&c.inv_bc2_sqrt),
            eps: s(&c.eps),
        }
    }

    /// [`crate::optim::Coeffs::adam`] on 8 lanes, operation for operation (nothing fused), as
    /// the AVX-512 `AdamRegs::step`.
    #[inline(always)]
    unsafe fn step(&self, w: __m256, g: __m256, m: __m256, v: __m256) -> (__m256, __m256, __m256) {
        let (w, g) = if self.adamw {
            (_mm256_mul_ps(w, self.keep), g)
        } else {
            (w, _mm256_add_ps(g, _mm256_mul_ps(self.decay, w)))
        };
        let m = _mm256_add_ps(_mm256_mul_ps(self.b1, m), _mm256_mul_ps(self.omb1, g));
        let v = _mm256_add_ps(
            _mm256_mul_ps(self.b2, v),
            _mm256_mul_ps(_mm256_mul_ps(self.omb2, g), g),
        );
        let den = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(v), self.inv), self.eps);
        let upd = _mm256_div_ps(_mm256_mul_ps(self.step, m), den);
        (_mm256_sub_ps(w, upd), m, v)
    }
}
