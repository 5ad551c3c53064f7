//! `tanh` for f64 as glibc computes it on x86-64 with FMA: fdlibm's `s_tanh.c` (Sun
//! Microsystems, 1993) over fdlibm's `s_expm1.c`, with the fused multiply-adds GCC contracted
//! when it built glibc 2.36's `__expm1_fma` (read off its machine code, one operation here per
//! instruction there). Our own copy, so that data drawn through a tanh (a teacher network's
//! targets) has the same bits on every machine and libm, and so that a slice goes through it
//! eight lanes at a time on AVX-512 and four on AVX2 with FMA: `f64::tanh` costs ~16 ns a call
//! on the development machine, and the teacher–student task evaluated it 44,000 times per run.
//!
//! [`tanh`] equals glibc 2.36's `tanh` bit for bit where that dispatches to `__expm1_fma` (a
//! test checks 2 million inputs against the host's glibc of that version; a one-off check on the
//! development machine, 200 million, found none differ), and keeps an independent error bound
//! everywhere; [`tanh_in_place`] equals [`tanh`] bit for bit.

/// fdlibm's constants (`s_expm1.c`), as stored in glibc.
mod c {
    pub const LN2_HI: f64 = f64::from_bits(0x3fe6_2e42_fee0_0000);
    pub const LN2_LO: f64 = f64::from_bits(0x3dea_39ef_3579_3c76);
    pub const INVLN2: f64 = f64::from_bits(0x3ff7_1547_652b_82fe);
    // Scaled coefficients of the rational approximation of `expm1` on [0, 0.5·ln2].
    pub const Q1: f64 = f64::from_bits(0xbfa1_1111_1111_10f4);
    pub const Q2: f64 = f64::from_bits(0x3f5a_01a0_19fe_5585);
    pub const Q3: f64 = f64::from_bits(0xbf14_ce19_9eaa_dbb7);
    pub const Q4: f64 = f64::from_bits(0x3ed0_cfca_86e6_5239);
    pub const Q5: f64 = f64::from_bits(0xbe8a_fdb7_6e09_c32d);
    /// fdlibm's `tiny`: `1 − tiny` rounds to 1 (and would raise inexact in C).
    pub const TINY: f64 = 1e-300;
}

/// The high word with the sign cleared, as fdlibm compares magnitudes.
#[inline(always)]
fn high_abs(x: f64) -> u32 {
    ((x.to_bits() >> 32) as u32) & 0x7fff_ffff
}

/// `x` with `k` added to its binary exponent (fdlibm's `SET_HIGH_WORD(y, high + (k << 20))`,
/// wrapping as the 32-bit addition does).
#[inline(always)]
fn add_exponent(x: f64, k: i32) -> f64 {
    f64::from_bits(x.to_bits().wrapping_add(((k as i64) << 52) as u64))
}

/// `e^x − 1` on the arguments tanh passes: `−2 < x ≤ −2^-54` and `2 ≤ x < 44`. Branch for
/// branch and rounding for rounding glibc 2.36's `__expm1_fma` there (whose filter of
/// `|x| ≥ 56·ln2 ≈ 38.8` returns early for negative `x` alone, so it is left out).
#[inline(always)]
fn expm1(x: f64) -> f64 {
    let hx = high_abs(x);
    let negative = x.is_sign_negative();
    // Argument reduction: x = k·ln2 + (hi − lo), with c the rounding error of hi − lo.
    let reduce = hx > 0x3fd6_2e42;
    let (k, hi, lo) = if reduce {
        if hx < 0x3ff0_a2b2 {
            if negative {
                (-1, x + c::LN2_HI, -c::LN2_LO)
            } else {
                (1, x - c::LN2_HI, c::LN2_LO)
            }
        } else {
            let half = if negative { -0.5 } else { 0.5 };
            let k = (half + x * c::INVLN2) as i32;
            let t = k as f64;
            (k, (-t).mul_add(c::LN2_HI, x), t * c::LN2_LO)
        }
    } else {
        (0, x, 0.0)
    };
    let (x, cc) = if reduce {
        let r = hi - lo;
        (r, (hi - r) - lo)
    } else {
        (x, 0.0)
    };
    let hfx = x * 0.5;
    let hxs = x * hfx;
    let r2 = hxs.mul_add(c::Q3, c::Q2);
    let r3 = hxs.mul_add(c::Q5, c::Q4);
    let h2 = hxs * hxs;
    let r1 = hxs.mul_add(c::Q1, 1.0);
    let h4 = h2 * h2;
    let r1 = h4.mul_add(r3, h2.mul_add(r2, r1));
    let t = (-r1).mul_add(hfx, 3.0);
    let e = ((r1 - t) / (-x).mul_add(t, 6.0)) * hxs;
    if k == 0 {
        return x - e.mul_add(x, -hxs);
    }
    let e = (e - cc).mul_add(x, -cc) - hxs;
    match k {
        -1 => 0.5f64.mul_add(x - e, -0.5),
        1 if x < -0.25 => (e - (x + 0.5)) * -2.0,
        1 => (x - e).mul_add(2.0, 1.0),
        k if k <= -2 || k > 56 => add_exponent(1.0 - (e - x), k) - 1.0,
        k if k < 20 => {
            let t = f64::from_bits((0x3ff0_0000u64 - (0x20_0000u64 >> k)) << 32);
            add_exponent(t - (e - x), k)
        }
        k => {
            let t = f64::from_bits(((0x3ff - k) as u64) << 52);
            add_exponent(x - (e + t) + 1.0, k)
        }
    }
}

/// `tanh(x)`, bit for bit as glibc's on x86-64 with FMA (see the module docs).
pub fn tanh(x: f64) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has FMA (checked).
        return unsafe { tanh_fma(x) };
    }
    tanh_body(x)
}

/// [`tanh_body`] with `mul_add` as one instruction (elsewhere it calls libm's exact `fma`).
///
/// SAFETY: the CPU has FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
unsafe fn tanh_fma(x: f64) -> f64 {
    tanh_body(x)
}

#[inline(always)]
fn tanh_body(x: f64) -> f64 {
    let hx = high_abs(x);
    if hx >= 0x7ff0_0000 {
        // ±1 at ±inf (1/x ± 1), NaN stays NaN.
        return if x.is_sign_negative() {
            1.0 / x - 1.0
        } else {
            1.0 / x + 1.0
        };
    }
    let z = if hx >= 0x4036_0000 {
        // |x| ≥ 22: within 2^-63 of ±1.
        1.0 - c::TINY
    } else if x == 0.0 {
        return x;
    } else if hx < 0x3c80_0000 {
        // |x| < 2^-55: x·(1 + x), which is x.
        return x * (1.0 + x);
    } else if hx >= 0x3ff0_0000 {
        let t = expm1(x.abs() + x.abs());
        1.0 - 2.0 / (t + 2.0)
    } else {
        let t = expm1(x.abs() * -2.0);
        -t / (t + 2.0)
    };
    if x.is_sign_negative() {
        -z
    } else {
        z
    }
}

/// [`tanh`] of every element, in place: eight at a time on AVX-512, four on AVX2 with FMA (the
/// same bits).
pub fn tanh_in_place(xs: &mut [f64]) {
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        let mut chunks = xs.chunks_exact_mut(8);
        for ch in &mut chunks {
            // SAFETY: AVX-512F and DQ are present (checked); `ch` holds 8 f64.
            unsafe { avx512::tanh8(ch.as_mut_ptr()) };
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|v| *v = tanh(*v));
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if avx2() {
        let mut chunks = xs.chunks_exact_mut(4);
        for ch in &mut chunks {
            // SAFETY: AVX2 and FMA are present (checked); `ch` holds 4 f64.
            unsafe { avx2::tanh4(ch.as_mut_ptr()) };
        }
        chunks
            .into_remainder()
            .iter_mut()
            .for_each(|v| *v = tanh(*v));
        return;
    }
    xs.iter_mut().for_each(|v| *v = tanh(*v));
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    })
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512dq")
    })
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::c;
    use std::arch::x86_64::*;

    /// Eight [`super::tanh`]s: the arguments `2^-55 ≤ |x| < 22` here, every branch of the
    /// reduction and of the result computed and picked by mask; any other lane (zero, tiny,
    /// huge, non-finite) again by the scalar function.
    ///
    /// SAFETY: AVX-512F and DQ; `p` heads 8 readable and writable f64.
    #[target_feature(enable = "avx512f,avx512dq")]
    pub(super) unsafe fn tanh8(p: *mut f64) {
        let s = _mm512_set1_pd;
        let x = _mm512_loadu_pd(p);
        let hx = high_abs(x);
        let u = |v: u32| _mm512_set1_epi64(v as i64);
        let main = _mm512_cmpge_epu64_mask(hx, u(0x3c80_0000))
            & _mm512_cmplt_epu64_mask(hx, u(0x4036_0000));
        let sign = _mm512_set1_pd(-0.0);
        let ax = _mm512_andnot_pd(sign, x);
        // |x| ≥ 1: expm1(2|x|); else expm1(−2|x|).
        let big = _mm512_cmpge_epu64_mask(hx, u(0x3ff0_0000));
        let arg = _mm512_mask_blend_pd(big, _mm512_mul_pd(ax, s(-2.0)), _mm512_add_pd(ax, ax));
        let t = expm1(arg);
        let two = s(2.0);
        let den = _mm512_add_pd(t, two);
        let z_big = _mm512_sub_pd(s(1.0), _mm512_div_pd(two, den));
        let z_small = _mm512_div_pd(_mm512_xor_pd(t, sign), den);
        let z = _mm512_mask_blend_pd(big, z_small, z_big);
        // The sign of x onto z.
        let z = _mm512_xor_pd(z, _mm512_and_pd(x, sign));
        if main != 0xff {
            let mut xs = [0.0; 8];
            _mm512_storeu_pd(xs.as_mut_ptr(), x);
            _mm512_storeu_pd(p, z);
            for (l, &v) in xs.iter().enumerate() {
                if main & (1 << l) == 0 {
                    *p.add(l) = super::tanh(v);
                }
            }
            return;
        }
        _mm512_storeu_pd(p, z);
    }

    /// The high words with the sign cleared, one per 64-bit lane.
    #[inline(always)]
    unsafe fn high_abs(x: __m512d) -> __m512i {
        _mm512_and_si512(
            _mm512_srli_epi64::<32>(_mm512_castpd_si512(x)),
            _mm512_set1_epi64(0x7fff_ffff),
        )
    }

    /// `k` (one per 64-bit lane) added to each binary exponent.
    #[inline(always)]
    unsafe fn add_exponent(x: __m512d, k: __m512i) -> __m512d {
        _mm512_castsi512_pd(_mm512_add_epi64(
            _mm512_castpd_si512(x),
            _mm512_slli_epi64::<52>(k),
        ))
    }

    /// [`super::expm1`] on 8 lanes, each `2^-54 ≤ |x| < 44` (garbage elsewhere, discarded).
    #[inline(always)]
    unsafe fn expm1(x: __m512d) -> __m512d {
        let s = _mm512_set1_pd;
        let i = _mm512_set1_epi64;
        let hx = high_abs(x);
        let neg = _mm512_movepi64_mask(_mm512_castpd_si512(x));
        let reduce = _mm512_cmpgt_epu64_mask(hx, i(0x3fd6_2e42));
        let one_ln2 = reduce & _mm512_cmplt_epu64_mask(hx, i(0x3ff0_a2b2));
        let general = reduce & !one_ln2;
        // The general k: trunc(±0.5 + x/ln2).
        let half = _mm512_mask_blend_pd(neg, s(0.5), s(-0.5));
        let kd = _mm512_add_pd(half, _mm512_mul_pd(x, s(c::INVLN2)));
        let k_gen = _mm512_cvtepi32_epi64(_mm512_cvttpd_epi32(kd));
        let t = _mm512_cvtepi64_pd(k_gen);
        let hi_gen = _mm512_fnmadd_pd(t, s(c::LN2_HI), x);
        let lo_gen = _mm512_mul_pd(t, s(c::LN2_LO));
        // |x| in (ln2/2, 1.5·ln2]: k = ±1.
        let hi_one = _mm512_mask_blend_pd(
            neg,
            _mm512_sub_pd(x, s(c::LN2_HI)),
            _mm512_add_pd(x, s(c::LN2_HI)),
        );
        let lo_one = _mm512_mask_blend_pd(neg, s(c::LN2_LO), s(-c::LN2_LO));
        let k_one = _mm512_mask_blend_epi64(neg, i(1), i(-1));
        let k = _mm512_mask_blend_epi64(general, _mm512_maskz_mov_epi64(one_ln2, k_one), k_gen);
        let hi = _mm512_mask_blend_pd(general, hi_one, hi_gen);
        let lo = _mm512_mask_blend_pd(general, lo_one, lo_gen);
        let r = _mm512_sub_pd(hi, lo);
        let cc = _mm512_sub_pd(_mm512_sub_pd(hi, r), lo);
        let x = _mm512_mask_blend_pd(reduce, x, r);
        let cc = _mm512_maskz_mov_pd(reduce, cc);
        // The rational approximation on the reduced argument.
        let hfx = _mm512_mul_pd(x, s(0.5));
        let hxs = _mm512_mul_pd(x, hfx);
        let r2 = _mm512_fmadd_pd(hxs, s(c::Q3), s(c::Q2));
        let r3 = _mm512_fmadd_pd(hxs, s(c::Q5), s(c::Q4));
        let h2 = _mm512_mul_pd(hxs, hxs);
        let r1 = _mm512_fmadd_pd(hxs, s(c::Q1), s(1.0));
        let h4 = _mm512_mul_pd(h2, h2);
        let r1 = _mm512_fmadd_pd(h4, r3, _mm512_fmadd_pd(h2, r2, r1));
        let tt = _mm512_fnmadd_pd(r1, hfx, s(3.0));
        let e = _mm512_mul_pd(
            _mm512_div_pd(_mm512_sub_pd(r1, tt), _mm512_fnmadd_pd(x, tt, s(6.0))),
            hxs,
        );
        // k = 0.
        let y0 = _mm512_sub_pd(x, _mm512_fmsub_pd(e, x, hxs));
        // k ≠ 0: e folds in the reduction's error.
        let e = _mm512_sub_pd(_mm512_fmsub_pd(_mm512_sub_pd(e, cc), x, cc), hxs);
        let ym1 = _mm512_fmadd_pd(s(0.5), _mm512_sub_pd(x, e), s(-0.5));
        let y1_low = _mm512_mul_pd(_mm512_sub_pd(e, _mm512_add_pd(x, s(0.5))), s(-2.0));
        let y1_high = _mm512_fmadd_pd(_mm512_sub_pd(x, e), s(2.0), s(1.0));
        let y1 = _mm512_mask_blend_pd(_mm512_cmplt_pd_mask(x, s(-0.25)), y1_high, y1_low);
        let e_minus_x = _mm512_sub_pd(e, x);
        let y_far = _mm512_sub_pd(add_exponent(_mm512_sub_pd(s(1.0), e_minus_x), k), s(1.0));
        // 2 ≤ k < 20: t = 1 − 2^-(k+1) (its high word 0x3ff00000 − (0x200000 >> k)).
        let t_mid = _mm512_castsi512_pd(_mm512_slli_epi64::<32>(_mm512_sub_epi64(
            i(0x3ff0_0000),
            _mm512_srlv_epi64(i(0x20_0000), k),
        )));
        let y_mid = add_exponent(_mm512_sub_pd(t_mid, e_minus_x), k);
        // 20 ≤ k ≤ 56: t = 2^-k.
        let t_top = _mm512_castsi512_pd(_mm512_slli_epi64::<52>(_mm512_sub_epi64(i(0x3ff), k)));
        let y_top = add_exponent(
            _mm512_add_pd(_mm512_sub_pd(x, _mm512_add_pd(e, t_top)), s(1.0)),
            k,
        );
        let is = |v: i64| _mm512_cmpeq_epi64_mask(k, i(v));
        let far = _mm512_cmple_epi64_mask(k, i(-2)) | _mm512_cmpgt_epi64_mask(k, i(56));
        let top = _mm512_cmpge_epi64_mask(k, i(20)) & !far;
        let mut y = y_mid;
        y = _mm512_mask_blend_pd(top, y, y_top);
        y = _mm512_mask_blend_pd(far, y, y_far);
        y = _mm512_mask_blend_pd(is(1), y, y1);
        y = _mm512_mask_blend_pd(is(-1), y, ym1);
        _mm512_mask_blend_pd(is(0), y, y0)
    }
}

/// The AVX-512 lanes' arithmetic on four lanes, for CPUs with AVX2 and FMA: each operation
/// the same IEEE operation, each mask a vector whose lanes are all ones or zeros (what AVX2
/// blends by), each unsigned compare of a high word a signed one (the words are below 2^31).
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::c;
    use std::arch::x86_64::*;

    /// Four [`super::tanh`]s, as `avx512::tanh8` computes eight.
    ///
    /// SAFETY: AVX2 and FMA; `p` heads 4 readable and writable f64.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn tanh4(p: *mut f64) {
        let s = _mm256_set1_pd;
        let x = _mm256_loadu_pd(p);
        let hx = high_abs(x);
        let u = |v: u32| _mm256_set1_epi64x(v as i64);
        let main = _mm256_andnot_si256(ge(hx, u(0x4036_0000)), ge(hx, u(0x3c80_0000)));
        let sign = s(-0.0);
        let ax = _mm256_andnot_pd(sign, x);
        // |x| ≥ 1: expm1(2|x|); else expm1(−2|x|).
        let big = _mm256_castsi256_pd(ge(hx, u(0x3ff0_0000)));
        let arg = _mm256_blendv_pd(_mm256_mul_pd(ax, s(-2.0)), _mm256_add_pd(ax, ax), big);
        let t = expm1(arg);
        let two = s(2.0);
        let den = _mm256_add_pd(t, two);
        let z_big = _mm256_sub_pd(s(1.0), _mm256_div_pd(two, den));
        let z_small = _mm256_div_pd(_mm256_xor_pd(t, sign), den);
        let z = _mm256_blendv_pd(z_small, z_big, big);
        // The sign of x onto z.
        let z = _mm256_xor_pd(z, _mm256_and_pd(x, sign));
        let main = _mm256_movemask_pd(_mm256_castsi256_pd(main));
        if main != 0xf {
            let mut xs = [0.0; 4];
            _mm256_storeu_pd(xs.as_mut_ptr(), x);
            _mm256_storeu_pd(p, z);
            for (l, &v) in xs.iter().enumerate() {
                if main & (1 << l) == 0 {
                    *p.add(l) = super::tanh(v);
                }
            }
            return;
        }
        _mm256_storeu_pd(p, z);
    }

    /// `a ≥ b` per 64-bit lane, both non-negative.
    #[inline(always)]
    unsafe fn ge(a: __m256i, b: __m256i) -> __m256i {
        _mm256_xor_si256(_mm256_cmpgt_epi64(b, a), _mm256_set1_epi64x(-1))
    }

    /// The high words with the sign cleared, one per 64-bit lane.
    #[inline(always)]
    unsafe fn high_abs(x: __m256d) -> __m256i {
        _mm256_and_si256(
            _mm256_srli_epi64::<32>(_mm256_castpd_si256(x)),
            _mm256_set1_epi64x(0x7fff_ffff),
        )
    }

    /// `k` (one per 64-bit lane) added to each binary exponent.
    #[inline(always)]
    unsafe fn add_exponent(x: __m256d, k: __m256i) -> __m256d {
        _mm256_castsi256_pd(_mm256_add_epi64(
            _mm256_castpd_si256(x),
            _mm256_slli_epi64::<52>(k),
        ))
    }

    /// [`super::expm1`] on 4 lanes, each `2^-54 ≤ |x| < 44` (garbage elsewhere, discarded).
    #[inline(always)]
    unsafe fn expm1(x: __m256d) -> __m256d {
        let s = _mm256_set1_pd;
        let i = _mm256_set1_epi64x;
        let pd = _mm256_castsi256_pd;
        let hx = high_abs(x);
        // `blendv` picks by each lane's sign bit: x itself is the mask of its negative lanes.
        let neg = x;
        let reduce = _mm256_cmpgt_epi64(hx, i(0x3fd6_2e42));
        let one_ln2 = _mm256_and_si256(reduce, _mm256_cmpgt_epi64(i(0x3ff0_a2b2), hx));
        let general = _mm256_andnot_si256(one_ln2, reduce);
        // The general k: trunc(±0.5 + x/ln2).
        let half = _mm256_blendv_pd(s(0.5), s(-0.5), neg);
        let kd = _mm256_add_pd(half, _mm256_mul_pd(x, s(c::INVLN2)));
        let k32 = _mm256_cvttpd_epi32(kd);
        let k_gen = _mm256_cvtepi32_epi64(k32);
        let t = _mm256_cvtepi32_pd(k32);
        let hi_gen = _mm256_fnmadd_pd(t, s(c::LN2_HI), x);
        let lo_gen = _mm256_mul_pd(t, s(c::LN2_LO));
        // |x| in (ln2/2, 1.5·ln2]: k = ±1.
        let hi_one = _mm256_blendv_pd(
            _mm256_sub_pd(x, s(c::LN2_HI)),
            _mm256_add_pd(x, s(c::LN2_HI)),
            neg,
        );
        let lo_one = _mm256_blendv_pd(s(c::LN2_LO), s(-c::LN2_LO), neg);
        let k_one = _mm256_castpd_si256(_mm256_blendv_pd(pd(i(1)), pd(i(-1)), neg));
        let k = _mm256_castpd_si256(_mm256_blendv_pd(
            pd(_mm256_and_si256(one_ln2, k_one)),
            pd(k_gen),
            pd(general),
        ));
        let hi = _mm256_blendv_pd(hi_one, hi_gen, pd(general));
        let lo = _mm256_blendv_pd(lo_one, lo_gen, pd(general));
        let r = _mm256_sub_pd(hi, lo);
        let cc = _mm256_sub_pd(_mm256_sub_pd(hi, r), lo);
        let x = _mm256_blendv_pd(x, r, pd(reduce));
        let cc = _mm256_and_pd(pd(reduce), cc);
        // The rational approximation on the reduced argument.
        let hfx = _mm256_mul_pd(x, s(0.5));
        let hxs = _mm256_mul_pd(x, hfx);
        let r2 = _mm256_fmadd_pd(hxs, s(c::Q3), s(c::Q2));
        let r3 = _mm256_fmadd_pd(hxs, s(c::Q5), s(c::Q4));
        let h2 = _mm256_mul_pd(hxs, hxs);
        let r1 = _mm256_fmadd_pd(hxs, s(c::Q1), s(1.0));
        let h4 = _mm256_mul_pd(h2, h2);
        let r1 = _mm256_fmadd_pd(h4, r3, _mm256_fmadd_pd(h2, r2, r1));
        let tt = _mm256_fnmadd_pd(r1, hfx, s(3.0));
        let e = _mm256_mul_pd(
            _mm256_div_pd(_mm256_sub_pd(r1, tt), _mm256_fnmadd_pd(x, tt, s(6.0))),
            hxs,
        );
        // k = 0.
        let y0 = _mm256_sub_pd(x, _mm256_fmsub_pd(e, x, hxs));
        // k ≠ 0: e folds in the reduction's error.
        let e = _mm256_sub_pd(_mm256_fmsub_pd(_mm256_sub_pd(e, cc), x, cc), hxs);
        let ym1 = _mm256_fmadd_pd(s(0.5), _mm256_sub_pd(x, e), s(-0.5));
        let y1_low = _mm256_mul_pd(_mm256_sub_pd(e, _mm256_add_pd(x, s(0.5))), s(-2.0));
        let y1_high = _mm256_fmadd_pd(_mm256_sub_pd(x, e), s(2.0), s(1.0));
        let y1 = _mm256_blendv_pd(y1_high, y1_low, _mm256_cmp_pd::<_CMP_LT_OQ>(x, s(-0.25)));
        let e_minus_x = _mm256_sub_pd(e, x);
        let y_far = _mm256_sub_pd(add_exponent(_mm256_sub_pd(s(1.0), e_minus_x), k), s(1.0));
        // 2 ≤ k < 20: t = 1 − 2^-(k+1) (its high word 0x3ff00000 − (0x200000 >> k)); a
        // negative k shifts by a huge count, to zero, as the AVX-512 shift (lanes discarded).
        let t_mid = pd(_mm256_slli_epi64::<32>(_mm256_sub_epi64(
            i(0x3ff0_0000),
            _mm256_srlv_epi64(i(0x20_0000), k),
        )));
        let y_mid = add_exponent(_mm256_sub_pd(t_mid, e_minus_x), k);
        // 20 ≤ k ≤ 56: t = 2^-k.
        let t_top = pd(_mm256_slli_epi64::<52>(_mm256_sub_epi64(i(0x3ff), k)));
        let y_top = add_exponent(
            _mm256_add_pd(_mm256_sub_pd(x, _mm256_add_pd(e, t_top)), s(1.0)),
            k,
        );
        let is = |v: i64| pd(_mm256_cmpeq_epi64(k, i(v)));
        let far = _mm256_or_si256(_mm256_cmpgt_epi64(i(-1), k), _mm256_cmpgt_epi64(k, i(56)));
        let top = _mm256_andnot_si256(far, _mm256_cmpgt_epi64(k, i(19)));
        let mut y = y_mid;
        y = _mm256_blendv_pd(y, y_top, pd(top));
        y = _mm256_blendv_pd(y, y_far, pd(far));
        y = _mm256_blendv_pd(y, y1, is(1));
        y = _mm256_blendv_pd(y, ym1, is(-1));
        _mm256_blendv_pd(y, y0, is(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::rng::Rng;

    /// Inputs over every range tanh branches on: uniform in the bands, log-uniform over the
    /// magnitudes, the thresholds' neighbours, and random bit patterns.
    fn inputs(n: usize) -> Vec<f64> {
        let mut rng = Rng::stream(7, "tanh64");
        let mut xs = Vec::with_capacity(n + 64);
        // tanh's own thresholds, and those where expm1's argument (±2|x|) crosses expm1's:
        // half of 0x3fd62e42 and 0x3ff0a2b2, and k = 56/57 near |x| = 19.58.
        for b in [
            0x3c80_0000u64,
            0x3fc6_2e42,
            0x3fc6_2e43,
            0x3fe0_a2b1,
            0x3fe0_a2b2,
            0x3fd6_2e42,
            0x3ff0_a2b2,
            0x3ff0_0000,
            0x4033_9000,
            0x4033_947a,
            0x4036_0000,
            0x7ff0_0000,
        ] {
            for d in [-2i64, -1, 0, 1] {
                let bits = ((b << 32) as i64 + d) as u64;
                xs.push(f64::from_bits(bits));
                xs.push(-f64::from_bits(bits));
            }
        }
        xs.extend([
            0.0,
            -0.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            1e-320,
        ]);
        while xs.len() < n {
            let v = match xs.len() % 4 {
                0 => rng.normal() * 2.0,
                1 => rng.uniform_in(-25.0, 25.0),
                2 => (rng.uniform_in(-60.0, 5.0) * std::f64::consts::LN_2).exp(),
                _ => f64::from_bits(rng.next_u64()),
            };
            xs.push(if rng.next_u64() & 1 == 1 { -v } else { v });
        }
        xs
    }

    /// The running glibc's version (`gnu_get_libc_version`).
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    fn glibc_version() -> Option<String> {
        // SAFETY: glibc returns a pointer to a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(libc::gnu_get_libc_version()) };
        v.to_str().ok().map(str::to_string)
    }

    fn same(a: f64, b: f64) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    /// The AVX2 kernel against the scalar one on every CPU with AVX2 and FMA, AVX-512 ones too
    /// (where `tanh_in_place` takes the AVX-512 kernel instead).
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn avx2_kernel_equals_scalar() {
        if !avx2() {
            eprintln!("skipped: no AVX2 and FMA");
            return;
        }
        let xs = inputs(400_000);
        let mut ys = xs.clone();
        for ch in ys.chunks_exact_mut(4) {
            // SAFETY: AVX2 and FMA are present (checked); `ch` holds 4 f64.
            unsafe { avx2::tanh4(ch.as_mut_ptr()) };
        }
        let n = xs.len() / 4 * 4;
        for (x, y) in xs[..n].iter().zip(&ys[..n]) {
            assert!(
                same(*y, tanh(*x)),
                "avx2::tanh4({x:e}) = {y:e}, tanh = {:e}",
                tanh(*x)
            );
        }
    }

    /// The slice kernel (eight lanes at a time on AVX-512, four on AVX2) against the scalar one.
    #[test]
    fn in_place_equals_scalar() {
        let xs = inputs(400_000);
        let mut ys = xs.clone();
        tanh_in_place(&mut ys);
        for (x, y) in xs.iter().zip(&ys) {
            assert!(
                same(*y, tanh(*x)),
                "tanh_in_place({x:e}) = {y:e}, tanh = {:e}",
                tanh(*x)
            );
        }
    }

    /// A bound independent of glibc's algorithm where it can be had cheaply: within 4 ulps of
    /// `(1 − e^{-2|x|}) / (1 + e^{-2|x|})` (whose own roundings stay under 3) for |x| ≥ 0.5,
    /// of the host libm's tanh below; odd, and within [-1, 1].
    #[test]
    fn close_to_tanh_and_shaped_like_it() {
        for &x in &inputs(200_000) {
            let y = tanh(x);
            if x.is_nan() {
                assert!(y.is_nan());
                continue;
            }
            assert!(y.abs() <= 1.0 && same(tanh(-x), -y), "shape at {x:e}");
            let want = if x.abs() < 0.5 {
                x.tanh()
            } else {
                let e = (-2.0 * x.abs()).exp();
                ((1.0 - e) / (1.0 + e)).copysign(x)
            };
            let tol = 4.0 * f64::EPSILON * y.abs().max(f64::MIN_POSITIVE);
            assert!(
                (y - want).abs() <= tol,
                "tanh({x:e}) = {y:e}, want {want:e}"
            );
        }
    }

    /// Bit for bit against glibc's own where this process's libm is glibc 2.36 dispatching to
    /// `__expm1_fma` (x86-64 with FMA and AVX2; another version may round differently): 2
    /// million inputs.
    #[test]
    fn equals_glibc_with_fma() {
        #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
        if std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("avx2")
            && glibc_version().as_deref() == Some("2.36")
        {
            let xs = inputs(2_000_000);
            let mut bad = 0;
            for &x in &xs {
                if !same(tanh(x), x.tanh()) {
                    bad += 1;
                    if bad < 5 {
                        eprintln!(
                            "tanh({x:e} = {:#x}): ours {:e}, glibc {:e}",
                            x.to_bits(),
                            tanh(x),
                            x.tanh()
                        );
                    }
                }
            }
            assert_eq!(bad, 0, "{bad} of {} differ from glibc", xs.len());
        }
    }
}
