//! Vectorizable `f32` approximations of the transcendental functions the engine applies
//! elementwise (tanh, exp, erf, softplus, and the ln/log1p that softplus needs), plus an
//! accurate `f64` erf.
//!
//! Why: libm's `tanhf`/`expf` are scalar calls with data-dependent branches, so a loop over a
//! layer's activations cannot be vectorized and costs as much as the step's GEMMs. Every `f32`
//! function here is straight-line code (clamps, polynomials, one division, bit manipulation and
//! selects), so `for (y, x) in ys.iter_mut().zip(xs) { *y = tanh_f32(*x) }` compiles to SIMD.
//!
//! Conventions, shared by all functions:
//! - Polynomials are evaluated with plain `*` and `+` (no `mul_add`): results are then
//!   bit-identical on every IEEE-754 machine and never become a libm `fmaf` call on targets
//!   without FMA. The error bounds below were measured that way.
//! - NaN in gives NaN out; infinities give the mathematical limit.
//! - Each doc comment states the source of the approximation and its maximum absolute and
//!   relative error against `f64` std/libm over **every** `f32` input (all 2^32 bit patterns;
//!   the ignored test `exhaustive_all_f32` re-measures that in about 15 minutes on one core).
//!   The regular tests assert slightly tighter bounds on what they visit: a dense grid of
//!   2,000,001 points on [-20, 20] plus every 509th `f32` bit pattern of each sign (all
//!   magnitudes, subnormals included), and the special values.
//! - "ulp" below means the spacing of `f32` near the result; 2^-24 ≈ 5.96e-8 is half an ulp
//!   relative, the best any `f32` result can do.

// The coefficients are quoted digit for digit from their sources, more digits than f32 keeps.
#![allow(clippy::excessive_precision)]

/// `tanh(x)` for `f32`: Eigen's current `ptanh_float` (Eigen master, `GenericPacketMathFunctions.h`,
/// coefficients fitted with rminimax, type [9,8]): `(x + x³·P(x²)) / Q(x²)`, an odd numerator of
/// degree 9 over an even denominator of degree 8, each Horner step a fused multiply-add (as
/// Eigen's `pmadd` on FMA hardware), after clamping `x` to ±8.01773357391357421875: the smallest
/// input at which this evaluation rounds to exactly 1 (Eigen's FMA clamp, 7.9988, gives
/// 0.99999976 here; from 8.2205 up the ratio exceeds 1). Chosen over the older Eigen/XLA
/// degree-13/6 rational (`generic_fast_tanh_float`, XLA's `EmitFastTanh`) because, measured here
/// without FMA, it is cheaper (2 fewer multiply-adds) and more accurate (3.2e-7 vs 3.5e-7 max
/// abs error on the tests' grid), and its `x + …` form is exact for tiny and subnormal `x`,
/// where the old one needs a separate `|x| < 0.0004` select. The fused steps (8 FMAs in place of
/// 8 multiplies and 8 adds) made the width-16 tiny sweep 11% faster (`tiny-sweep.toml`, 0.414 →
/// 0.369 s median of 7 interleaved runs, Intel Xeon family 6 model 167) and cut the error on
/// the grid from 3.16e-7 to 2.62e-7.
///
/// Max error over all `f32` inputs: absolute 3.05e-7 (at x ≈ 7.037), relative 3.05e-7. Exactly
/// odd (`tanh_f32(-x) == -tanh_f32(x)`), `|tanh_f32(x)| ≤ 1`. Monotone non-decreasing for
/// |x| ≤ 2.9 (checked on the grid); beyond, where the result is within 6e-3 of ±1, rounding
/// makes it wiggle by up to 8 ulp (steps down ≤ 4.8e-7). `tanh_f32(±inf) = ±1`,
/// NaN gives NaN, `tanh_f32(-0.0) = -0.0`.
#[inline(always)]
pub fn tanh_f32(x: f32) -> f32 {
    use tanh_consts::*;
    // `clamp` keeps NaN (unlike `max`/`min`) and maps ±inf to ±CLAMP.
    let xc = x.clamp(-CLAMP, CLAMP);
    let x2 = xc * xc;
    let x3 = x2 * xc;
    // Horner steps as fused multiply-adds, as Eigen's `pmadd` takes them: one rounding each,
    // and one instruction in every vector copy of this function.
    let mut p = x2.mul_add(A3, A2);
    p = x2.mul_add(p, A1);
    p = x2.mul_add(p, A0);
    let p = x3.mul_add(p, xc);
    let mut q = x2.mul_add(B4, B3);
    q = x2.mul_add(q, B2);
    q = x2.mul_add(q, B1);
    q = x2.mul_add(q, 1.0);
    // Never outside [-1, 1]: checked for every input (test `the_ratio_never_leaves_the_unit_interval`).
    p / q
}

/// [`tanh_f32`]'s constants (shared with the lockstep lanes' vector copy of it).
pub mod tanh_consts {
    // Numerator x + x³·(A0 + A1·x² + A2·x⁴ + A3·x⁶), Eigen's alpha[] (highest degree first there).
    pub const A0: f32 = 1.340216100e-1;
    pub const A1: f32 = 3.520756727e-3;
    pub const A2: f32 = 2.102733560e-5;
    pub const A3: f32 = 1.394553628e-8;
    // Denominator 1 + B1·x² + … + B4·x⁸, Eigen's beta[].
    pub const B1: f32 = 4.673548340e-1;
    pub const B2: f32 = 2.597254514e-2;
    pub const B3: f32 = 3.326951409e-4;
    pub const B4: f32 = 8.015776984e-7;
    pub const CLAMP: f32 = 8.01773357391357421875;
}

/// `e^x` for `f32`: Cephes `expf` (S. Moshier, Cephes Math Library): Cody–Waite range
/// reduction `x = n·ln2 + r` with `ln2 = 0.693359375 - 2.12194440e-4` (the first part has 9
/// significant bits, so `n·C1` is exact), a degree-7 polynomial for `e^r` on `|r| ≤ ln2/2`, and
/// `2^n` built from exponent bits. `n` is split into two halves, each a normal power of two, so
/// that results near overflow become `+inf` and those near underflow round correctly into the
/// subnormals and then to `0`.
///
/// Max relative error over all `f32` inputs whose result is a normal `f32`: 8.2e-8 (under 1.4
/// ulp); subnormal results are within 0.73 subnormal ulp (2^-149) on the tests' inputs. Monotone
/// non-decreasing (checked on the grid). Like the correctly rounded result, `exp_f32(x)` is
/// `+inf` from `x = 88.72284` on (including `+inf`) and `0` below `x = -103.97208` (including
/// `-inf`); `exp_f32(0) = 1` exactly; NaN gives NaN.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    use exp_consts::*;

    // Beyond these e^x is +inf / 0 in f32 anyway; clamping keeps n within [-150, 128] so the
    // two half-scales below stay normal powers of two. `clamp` keeps NaN.
    let xc = x.clamp(-104.0, 89.0);
    let t = xc * LOG2_E + MAGIC;
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = xc - n * C1 - n * C2;
    let r2 = r * r;
    let mut p = P0 * r + P1;
    p = p * r + P2;
    p = p * r + P3;
    p = p * r + P4;
    p = p * r + P5;
    let y = p * r2 + r + 1.0;
    // 2^n = 2^n1 · 2^n2 with both halves normal; multiplying one at a time rounds only once
    // (the first product is exact).
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32).wrapping_shl(23));
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32).wrapping_shl(23));
    y * s1 * s2
}

/// `erf(x)` for `f32`: the rational approximation of Eigen (`generic_fast_erf_float`, also
/// XLA/MHLO's f32 erf): `x·P(x²)/Q(x²)` with an odd numerator of degree 13 and an even
/// denominator of degree 8, after clamping `x` to ±4 (where erf rounds to ±1 in `f32`).
///
/// Max error over all `f32` inputs: absolute 4.74e-7 (at x ≈ 3.2, 8 ulp below 1), relative
/// 4.74e-7 (normal results). Exactly odd, `|erf_f32(x)| ≤ 1`. Monotone non-decreasing for
/// |x| ≤ 2.1 (checked on the grid); beyond, where the result is within 3e-3 of ±1, rounding
/// makes it wiggle by up to 9 ulp (steps down ≤ 5.4e-7). `erf_f32(±inf) = ±1`, NaN gives NaN.
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    use erf_consts::*;

    let xc = x.clamp(-4.0, 4.0);
    let x2 = xc * xc;
    let mut p = x2 * A13 + A11;
    p = x2 * p + A9;
    p = x2 * p + A7;
    p = x2 * p + A5;
    p = x2 * p + A3;
    p = x2 * p + A1;
    let mut q = x2 * B8 + B6;
    q = x2 * q + B4;
    q = x2 * q + B2;
    q = x2 * q + B0;
    // x·(P/Q) rather than Eigen's (x·P)/Q: P ≈ -0.016 would push x·P into the subnormals
    // for |x| < 7e-37 and lose precision there; P/Q ≈ 2/√π does not.
    // The rational function can overshoot 1 by rounding near the clamp; erf never leaves [-1, 1].
    (xc * (p / q)).clamp(-1.0, 1.0)
}

/// [`erf_f32`]'s coefficients (shared with [`gelu_f32`]): numerator (odd) and denominator
/// (even), Eigen's `alpha_*` and `beta_*`.
pub mod erf_consts {
    pub const A1: f32 = -1.60960333262415e-02;
    pub const A3: f32 = -2.95459980854025e-03;
    pub const A5: f32 = -7.34990630326855e-04;
    pub const A7: f32 = -5.69250639462346e-05;
    pub const A9: f32 = -2.10102402082508e-06;
    pub const A11: f32 = 2.77068142495902e-08;
    pub const A13: f32 = -2.72614225801306e-10;
    pub const B0: f32 = -1.42647390514189e-02;
    pub const B2: f32 = -7.37332916720468e-03;
    pub const B4: f32 = -1.68282697438203e-03;
    pub const B6: f32 = -2.13374055278905e-04;
    pub const B8: f32 = -1.45660718464996e-05;
}

/// [`exp_f32`]'s constants (shared with [`gelu_f32`]).
pub mod exp_consts {
    pub const LOG2_E: f32 = std::f32::consts::LOG2_E;
    /// ln 2 = C1 + C2 (Cody–Waite split, from Cephes; C2 < 0).
    pub const C1: f32 = 0.693359375;
    pub const C2: f32 = -2.12194440e-4;
    /// Adding 1.5·2^23 rounds any |t| < 2^22 to the nearest integer (ties to even) in the low
    /// mantissa bits: branch-free rounding that also yields the integer through the bits.
    pub const MAGIC: f32 = 12_582_912.0;
    /// Cephes expf polynomial: e^r ≈ 1 + r + r²·P(r).
    pub const P0: f32 = 1.9875691500e-4;
    pub const P1: f32 = 1.3981999507e-3;
    pub const P2: f32 = 8.3334519073e-3;
    pub const P3: f32 = 4.1665795894e-2;
    pub const P4: f32 = 1.6666665459e-1;
    pub const P5: f32 = 5.0000001201e-1;
}

/// GELU's value and slope for `f32`, `(x·Φ(x), Φ(x) + x·φ(x))` with `Φ(x) = ½(1 + erf(x/√2))`
/// and `φ(x) = e^{-x²/2}/√(2π)` (`torch.nn.GELU()`'s erf form and its derivative): [`erf_f32`]'s
/// rational and [`exp_f32`]'s Cephes polynomial and Cody–Waite reduction, with every Horner step
/// and every `a·b + c` a fused multiply-add — one instruction and one rounding each, as in
/// [`tanh_f32`] — so that its vector copy (`engine::gelu`, AVX-512) computes the same bits. About
/// 40 vector operations per element group where the plain-arithmetic erf and exp took ~70; the
/// GPT's MLP applies it to a million pre-activations per layer and step.
///
/// Max error on the tests' grid, sweep and special values (finite inputs, against `f64` libm):
/// value absolute 1.35e-6 (at x ≈ 5.55: f32's Φ near 1, times x) and relative 4.5e-4 where
/// `|x·Φ(x)| ≥ 1e-3` (½ + ½·erf cancels near x = -3.4; the same erf with plain arithmetic
/// measured 1.36e-6 and 4.1e-4); slope absolute 2.4e-7 (2.7e-7 before). `gelu_f32(0) = (0, ½)`,
/// `gelu_f32(6) = (6, 1)`; `+∞` gives `(+∞, NaN)` (the slope's `x·φ` is `∞·0`), NaN gives NaN.
#[inline(always)]
pub fn gelu_f32(x: f32) -> (f32, f32) {
    use gelu_consts::*;
    // Φ(x) = ½ + ½·erf(u), u = x/√2 clamped where erf rounds to ±1.
    let u = (x * FRAC_1_SQRT_2).clamp(-4.0, 4.0);
    let u2 = u * u;
    let mut p = u2.mul_add(A13, A11);
    p = u2.mul_add(p, A9);
    p = u2.mul_add(p, A7);
    p = u2.mul_add(p, A5);
    p = u2.mul_add(p, A3);
    p = u2.mul_add(p, A1);
    let mut q = u2.mul_add(B8, B6);
    q = u2.mul_add(q, B4);
    q = u2.mul_add(q, B2);
    q = u2.mul_add(q, B0);
    let erf = (u * (p / q)).clamp(-1.0, 1.0);
    let cdf = erf.mul_add(0.5, 0.5);
    // e^{y}, y = -x²/2 ≤ 0 (clamped at -104, where e^y is 0 in f32): n = round(y/ln2),
    // r = y − n·ln2 in two FMAs, e^r by the polynomial, 2^n in two normal halves.
    let y = ((x * x) * -0.5).clamp(-104.0, 0.0);
    let t = y.mul_add(LOG2_E, MAGIC);
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    let r = n.mul_add(-C1, y);
    let r = n.mul_add(-C2, r);
    let mut e = P0.mul_add(r, P1);
    e = e.mul_add(r, P2);
    e = e.mul_add(r, P3);
    e = e.mul_add(r, P4);
    e = e.mul_add(r, P5);
    let e = e.mul_add(r * r, r) + 1.0;
    let n1 = ni >> 1;
    let n2 = ni.wrapping_sub(n1);
    let s1 = f32::from_bits((n1.wrapping_add(127) as u32).wrapping_shl(23));
    let s2 = f32::from_bits((n2.wrapping_add(127) as u32).wrapping_shl(23));
    let pdf = (e * s1 * s2) * INV_SQRT_2PI;
    (x * cdf, x.mul_add(pdf, cdf))
}

/// [`gelu_f32`]'s constants (shared with its vector copy): [`erf_f32`]'s and [`exp_f32`]'s, and
/// its own two.
pub mod gelu_consts {
    pub use super::erf_consts::*;
    pub use super::exp_consts::*;
    pub const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
    /// 1/√(2π).
    pub const INV_SQRT_2PI: f32 = 0.398_942_280_401_432_7;
}

/// `ln(x)` for `f32`: Cephes `logf` (S. Moshier): `x = m·2^e` with `m ∈ [√½, √2)` read from the
/// bits, `ln(1+f)` for `f = m - 1` by `f - f²/2 + f³·P(f)` (P of degree 8), and `e·ln2` added in
/// the Cody–Waite split `0.693359375 - 2.12194440e-4`. Subnormals are rescaled by 2^23 first.
///
/// Max relative error over all positive finite `f32` inputs: 8.2e-8 (under 1.4 ulp; near
/// x = 1, where ln x → 0, it stays relative to ln x). `ln_f32(±0) = -inf`,
/// `ln_f32(+inf) = +inf`, negative or NaN gives NaN.
#[inline(always)]
pub fn ln_f32(x: f32) -> f32 {
    // Subnormals have no implicit leading bit: scale them into the normal range first.
    let subnormal = x < f32::MIN_POSITIVE;
    let xs = if subnormal { x * 8_388_608.0 } else { x };
    let r = ln_core(xs, if subnormal { 23.0 } else { 0.0 });
    // Special values, as selects so the common path stays branch-free.
    let r = if x == f32::INFINITY { x } else { r };
    let r = if x == 0.0 { f32::NEG_INFINITY } else { r };
    if (x < 0.0) | x.is_nan() {
        f32::NAN
    } else {
        r
    }
}

/// `ln(x·2^-scale)` for a positive normal finite `x`: the Cephes `logf` core behind [`ln_f32`],
/// without its special-value selects (softplus only ever needs `x ∈ [1, 2]`).
#[inline(always)]
fn ln_core(x: f32, scale: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    const C1: f32 = 0.693359375;
    const C2: f32 = -2.12194440e-4;
    const P0: f32 = 7.0376836292e-2;
    const P1: f32 = -1.1514610310e-1;
    const P2: f32 = 1.1676998740e-1;
    const P3: f32 = -1.2420140846e-1;
    const P4: f32 = 1.4249322787e-1;
    const P5: f32 = -1.6668057665e-1;
    const P6: f32 = 2.0000714765e-1;
    const P7: f32 = -2.4999993993e-1;
    const P8: f32 = 3.3333331174e-1;

    let bits = x.to_bits();
    // x = m·2^e with m ∈ [0.5, 1).
    let e = ((bits >> 23) & 0xff) as i32 - 126;
    let m = f32::from_bits((bits & 0x007f_ffff) | 0x3f00_0000);
    // Move m into [√½, √2) so that |f| ≤ 0.2929 and the polynomial stays accurate.
    let low = m < SQRT_HALF;
    let e = e as f32 - scale - if low { 1.0 } else { 0.0 };
    let f = if low { m + m - 1.0 } else { m - 1.0 };
    let z = f * f;
    let mut y = P0 * f + P1;
    y = y * f + P2;
    y = y * f + P3;
    y = y * f + P4;
    y = y * f + P5;
    y = y * f + P6;
    y = y * f + P7;
    y = y * f + P8;
    y = y * f * z;
    y += e * C2;
    y += -0.5 * z;
    f + y + e * C1
}

/// `ln(1 + x)` for `f32`, accurate for small `x`: Goldberg's/Kahan's trick
/// `ln(u)·x/(u - 1)` with `u = fl(1 + x)` (D. Goldberg, "What every computer scientist should
/// know about floating-point arithmetic", 1991, Theorem 4), where the factor `x/(u-1)` cancels
/// the rounding error of `1 + x`; `x` itself where `u` rounds to 1. Uses [`ln_f32`].
///
/// Max relative error over all `f32` inputs `x > -1`: 1.82e-7. `log1p_f32(-1) = -inf`,
/// `log1p_f32(+inf) = +inf`, `x < -1` or NaN gives NaN, `log1p_f32(±0) = ±0`.
#[inline(always)]
pub fn log1p_f32(x: f32) -> f32 {
    let u = 1.0 + x;
    let d = u - 1.0;
    let r = ln_f32(u) * (x / d);
    // d == 0: u rounded to 1 and ln(1 + x) = x to f32 precision; x = +inf: inf/inf would be NaN.
    if (d == 0.0) | (x == f32::INFINITY) {
        x
    } else {
        r
    }
}

/// `softplus(x) = ln(1 + e^x)` for `f32`, computed as `max(x, 0) + log1p(e^{-|x|})`, which
/// neither overflows nor loses the tiny `e^x` for very negative `x`; uses [`exp_f32`] and the
/// computation of [`log1p_f32`].
///
/// Max error over all `f32` inputs: absolute 4.77e-7 (at x ≈ 8, i.e. half an ulp of the
/// result), relative 2.25e-7 where the result is a normal `f32` (x > -87.3). Monotone
/// non-decreasing (checked on the grid). `softplus_f32(+inf) = +inf`, `softplus_f32(-inf) = 0`,
/// NaN gives NaN.
#[inline(always)]
pub fn softplus_f32(x: f32) -> f32 {
    // A compare-select (maxps) rather than f32::max, whose NaN rule costs extra instructions;
    // a NaN x still comes out NaN through the second term.
    let pos = if x > 0.0 { x } else { 0.0 };
    // log1p_f32 specialised to t = e^{-|x|} ∈ [0, 1]: 1 + t ∈ [1, 2] is normal and finite, so
    // ln_core needs none of ln_f32's special-value selects (a NaN x stays NaN through t).
    let t = exp_f32(-x.abs());
    let u = 1.0 + t;
    let d = u - 1.0;
    let log1p = if d == 0.0 {
        t
    } else {
        ln_core(u, 0.0) * (t / d)
    };
    pos + log1p
}

/// `erf(x)` for `f64`, accurate to about 1e-16 relative: the `libm` crate's port of FreeBSD
/// msun / musl `erf` (Sun's fdlibm `s_erf.c`, rational approximations on five intervals), whose
/// documented error is below 1 ulp. Not on a hot path: `f64` is the reference type for gradient
/// checks and theory, where accuracy matters more than speed.
#[inline]
pub fn erf_f64(x: f64) -> f64 {
    libm::erf(x)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Asserted bounds on the grid + sweep + special values (measured maxima in comments, plus a
    // few percent). The arithmetic is plain IEEE-754, so the measured values are the same on
    // every machine: a change to a function that costs accuracy fails here.
    const TANH_ABS: f64 = 2.7e-7; // measured 2.623e-7
    const TANH_REL: f64 = 2.7e-7; // 2.624e-7
    const ERF_ABS: f64 = 4.5e-7; // 4.301e-7
    const ERF_REL: f64 = 4.5e-7; // 4.301e-7
    const EXP_REL: f64 = 8.5e-8; // 8.058e-8
    const LN_REL: f64 = 8.5e-8; // 7.996e-8
    const LOG1P_REL: f64 = 1.9e-7; // 1.768e-7
    const SOFTPLUS_ABS: f64 = 5.0e-7; // 4.768e-7 (half an ulp of x in [8, 16))
    const SOFTPLUS_REL: f64 = 2.3e-7; // 2.168e-7

    // Bounds over every f32 input, for the exhaustive (ignored) test; the doc comments quote
    // these measured maxima.
    const TANH_ABS_ALL: f64 = 3.1e-7; // measured 3.047e-7 (positive inputs; odd)
    const TANH_REL_ALL: f64 = 3.1e-7; // 3.047e-7
    const ERF_ABS_ALL: f64 = 4.8e-7; // 4.736e-7
    const GELU_VALUE_ABS: f64 = 1.4e-6; // 1.351e-6 (the erf form's f32 Φ near 1, times x ≈ 5.5)
    const GELU_VALUE_REL: f64 = 4.6e-4; // 4.480e-4 (½ + ½·erf cancelling near x = -3.4)
    const GELU_SLOPE_ABS: f64 = 2.5e-7; // 2.374e-7
    const ERF_REL_ALL: f64 = 4.8e-7; // 4.736e-7
    const EXP_REL_ALL: f64 = 8.3e-8; // 8.155e-8
    const LN_REL_ALL: f64 = 8.3e-8; // 8.116e-8
    const LOG1P_REL_ALL: f64 = 1.9e-7; // 1.815e-7
    const SOFTPLUS_ABS_ALL: f64 = 4.8e-7; // 4.769e-7
    const SOFTPLUS_REL_ALL: f64 = 2.3e-7; // 2.252e-7

    /// Largest observed errors and the inputs where they occurred.
    #[derive(Debug, Default, Clone, Copy)]
    struct Errors {
        max_abs: f64,
        at_abs: f32,
        max_rel: f64,
        at_rel: f32,
        count: usize,
    }

    impl Errors {
        /// `rel_floor`: relative error is only taken where `|reference| ≥ rel_floor`
        /// (results in the subnormal range have fewer significant bits by construction).
        fn add(&mut self, x: f32, got: f32, want: f64, rel_floor: f64) {
            self.count += 1;
            if want.is_nan() {
                assert!(got.is_nan(), "x = {x:e}: want NaN, got {got:e}");
                return;
            }
            // Past f32::MAX the correctly rounded result is ±inf: then the result must be it.
            if (want as f32).is_infinite() || got.is_infinite() {
                assert_eq!(got, want as f32, "x = {x:e}");
                return;
            }
            let abs = (got as f64 - want).abs();
            if abs > self.max_abs {
                self.max_abs = abs;
                self.at_abs = x;
            }
            if want.abs() >= rel_floor {
                let rel = abs / want.abs();
                if rel > self.max_rel {
                    self.max_rel = rel;
                    self.at_rel = x;
                }
            }
        }
    }

    /// 2,000,001 evenly spaced points on [-20, 20].
    fn grid() -> impl Iterator<Item = f32> {
        const N: i64 = 2_000_000;
        (0..=N).map(|i| (-20.0 + 40.0 * i as f64 / N as f64) as f32)
    }

    /// Every 509th finite non-negative `f32` bit pattern, with both signs: all magnitudes from
    /// subnormals to f32::MAX, about 8.4 million points.
    fn bit_sweep() -> impl Iterator<Item = f32> {
        (0..0x7f80_0000u32)
            .step_by(509)
            .chain(std::iter::once(0x7f7f_ffff))
            .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
    }

    /// Special inputs every function must survive.
    fn specials() -> Vec<f32> {
        vec![
            0.0,
            -0.0,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
            f32::from_bits(1),
            -f32::from_bits(1),
            f32::EPSILON,
            1.0,
            -1.0,
            f32::MAX,
            f32::MIN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
        ]
    }

    fn measure(
        xs: impl Iterator<Item = f32>,
        f: impl Fn(f32) -> f32,
        reference: impl Fn(f64) -> f64,
        rel_floor: f64,
    ) -> Errors {
        let mut e = Errors::default();
        for x in xs {
            e.add(x, f(x), reference(x as f64), rel_floor);
        }
        e
    }

    fn all_inputs() -> impl Iterator<Item = f32> {
        grid().chain(bit_sweep()).chain(specials())
    }

    /// Checks on the grid that `f` never decreases for `|x| ≤ strict_within`, and elsewhere
    /// never steps down by more than `max_drop` (rounding wiggle where `f` is nearly flat).
    fn assert_monotone_on_grid(
        name: &str,
        f: impl Fn(f32) -> f32,
        strict_within: f32,
        max_drop: f32,
    ) {
        let mut prev = f32::NEG_INFINITY;
        let mut prev_x = f32::NEG_INFINITY;
        for x in grid() {
            let y = f(x);
            let allowed = if x.abs() <= strict_within && prev_x.abs() <= strict_within {
                0.0
            } else {
                max_drop
            };
            assert!(
                y >= prev - allowed,
                "{name} decreases: f({prev_x:e}) = {prev:e} > f({x:e}) = {y:e}"
            );
            prev = y;
            prev_x = x;
        }
    }

    fn check(name: &str, e: Errors, max_abs: f64, max_rel: f64) {
        // Printed so that `cargo test -- --nocapture` shows the numbers the docs quote.
        eprintln!(
            "{name}: max abs err {:.3e} at x = {:e}; max rel err {:.3e} at x = {:e} ({} inputs)",
            e.max_abs, e.at_abs, e.max_rel, e.at_rel, e.count
        );
        assert!(
            e.max_abs <= max_abs,
            "{name}: abs error {:e} > bound {max_abs:e}",
            e.max_abs
        );
        assert!(
            e.max_rel <= max_rel,
            "{name}: rel error {:e} > bound {max_rel:e}",
            e.max_rel
        );
    }

    #[test]
    fn tanh_error_bounds() {
        let e = measure(all_inputs(), tanh_f32, f64::tanh, 0.0);
        check("tanh_f32", e, TANH_ABS, TANH_REL);
    }

    #[test]
    fn tanh_special_values_and_shape() {
        assert_eq!(tanh_f32(f32::INFINITY), 1.0);
        assert_eq!(tanh_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(tanh_f32(f32::MAX), 1.0);
        assert_eq!(tanh_f32(20.0), 1.0);
        assert!(tanh_f32(f32::NAN).is_nan());
        assert_eq!(tanh_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(tanh_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(tanh_f32(f32::from_bits(1)), f32::from_bits(1));
        for x in grid().chain(bit_sweep()) {
            let y = tanh_f32(x);
            assert_eq!(tanh_f32(-x), -y, "odd symmetry at {x:e}");
            assert!(y.abs() <= 1.0, "|tanh_f32({x:e})| = {y:e} > 1");
        }
        assert_monotone_on_grid("tanh_f32", tanh_f32, 2.9, 4.8e-7);
    }

    /// Why `tanh_f32` needs no clamp of its result to [-1, 1]: the ratio never leaves it.
    /// Every `f32` from 0.5 to the input clamp is tried (beyond it the input is the clamp;
    /// below 0.5 the result is within 3.7e-7 of tanh ≤ 0.47); negative inputs give exactly the
    /// negated result (every step of the formula is odd or even in `x`, and IEEE rounding is
    /// symmetric). Removing the clamp (two of the vector tanh's 23 instructions) made the
    /// vector tanh 15% faster on Zen 5 (2.57 → 2.19 ns per 16 lanes) with the same bits.
    #[test]
    fn the_ratio_never_leaves_the_unit_interval() {
        let (lo, hi) = (0.5f32.to_bits(), tanh_consts::CLAMP.to_bits());
        let worst = (lo..=hi)
            .map(|b| tanh_f32(f32::from_bits(b)))
            .fold(0.0f32, f32::max);
        assert_eq!(worst, 1.0, "the largest result from 0.5 to the clamp");
        assert_eq!(tanh_f32(tanh_consts::CLAMP), 1.0);
    }

    #[test]
    fn exp_error_bounds() {
        // Relative error where the true result is a normal f32; absolute error (in subnormal
        // ulps) below that.
        let e = measure(all_inputs(), exp_f32, f64::exp, f32::MIN_POSITIVE as f64);
        check("exp_f32", e, f64::MAX, EXP_REL);
        let sub_ulp = f32::from_bits(1) as f64;
        let sub = measure(
            all_inputs().filter(|&x| (x as f64).exp() < f32::MIN_POSITIVE as f64),
            exp_f32,
            f64::exp,
            f64::INFINITY,
        );
        eprintln!(
            "exp_f32 subnormal results: max abs err {:.3} subnormal ulp",
            sub.max_abs / sub_ulp
        );
        assert!(
            sub.max_abs <= sub_ulp,
            "exp_f32: subnormal error {:e}",
            sub.max_abs
        );
    }

    #[test]
    fn exp_special_values_and_shape() {
        assert_eq!(exp_f32(0.0), 1.0);
        assert_eq!(exp_f32(-0.0), 1.0);
        assert_eq!(exp_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(exp_f32(f32::MAX), f32::INFINITY);
        assert_eq!(exp_f32(88.73), f32::INFINITY);
        assert!(exp_f32(88.72).is_finite());
        assert_eq!(exp_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp_f32(f32::MIN), 0.0);
        assert_eq!(exp_f32(-104.0), 0.0);
        assert!(exp_f32(-103.0) > 0.0, "subnormal results are kept");
        assert!(exp_f32(f32::NAN).is_nan());
        assert_monotone_on_grid("exp_f32", exp_f32, f32::INFINITY, 0.0);
    }

    #[test]
    fn erf_error_bounds() {
        let e = measure(all_inputs(), erf_f32, libm::erf, f32::MIN_POSITIVE as f64);
        check("erf_f32", e, ERF_ABS, ERF_REL);
    }

    /// GELU's value and slope against `f64` libm (finite inputs: at ±∞ the slope's `x·φ` is
    /// `∞·0`). The value's relative error is taken where `|x·Φ(x)| ≥ 1e-3`: below x ≈ -3.9
    /// f32's Φ is flushed to 0 by the erf clamp (absolute error ≤ 3e-4·…, counted in `abs`).
    #[test]
    fn gelu_error_bounds() {
        let phi = |x: f64| 0.5 * (1.0 + libm::erf(x * std::f64::consts::FRAC_1_SQRT_2));
        let pdf = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
        let finite = || all_inputs().filter(|x| x.is_finite());
        let value = measure(finite(), |x| gelu_f32(x).0, |x| x * phi(x), 1e-3);
        check("gelu_f32 value", value, GELU_VALUE_ABS, GELU_VALUE_REL);
        let slope = measure(
            finite(),
            |x| gelu_f32(x).1,
            |x| phi(x) + x * pdf(x),
            f64::INFINITY,
        );
        check("gelu_f32 slope", slope, GELU_SLOPE_ABS, 0.0);
        assert_eq!(gelu_f32(0.0), (0.0, 0.5));
        assert_eq!(gelu_f32(6.0), (6.0, 1.0));
        assert_eq!(gelu_f32(f32::INFINITY).0, f32::INFINITY);
        let (v, d) = gelu_f32(f32::NAN);
        assert!(v.is_nan() && d.is_nan());
    }

    #[test]
    fn erf_special_values_and_shape() {
        assert_eq!(erf_f32(f32::INFINITY), 1.0);
        assert_eq!(erf_f32(f32::NEG_INFINITY), -1.0);
        assert_eq!(erf_f32(10.0), 1.0);
        assert!(erf_f32(f32::NAN).is_nan());
        assert_eq!(erf_f32(0.0), 0.0);
        for x in grid().chain(bit_sweep()) {
            let y = erf_f32(x);
            assert_eq!(erf_f32(-x), -y, "odd symmetry at {x:e}");
            assert!(y.abs() <= 1.0, "|erf_f32({x:e})| = {y:e} > 1");
        }
        assert_monotone_on_grid("erf_f32", erf_f32, 2.1, 5.4e-7);
    }

    #[test]
    fn ln_error_bounds() {
        let positive = || all_inputs().filter(|&x| x > 0.0 && x.is_finite());
        let e = measure(positive(), ln_f32, f64::ln, 0.0);
        check("ln_f32", e, f64::MAX, LN_REL);
        assert_eq!(ln_f32(1.0), 0.0);
        assert_eq!(ln_f32(0.0), f32::NEG_INFINITY);
        assert_eq!(ln_f32(-0.0), f32::NEG_INFINITY);
        assert_eq!(ln_f32(f32::INFINITY), f32::INFINITY);
        assert!(ln_f32(-1.0).is_nan());
        assert!(ln_f32(f32::NEG_INFINITY).is_nan());
        assert!(ln_f32(f32::NAN).is_nan());
        assert!(
            (ln_f32(f32::from_bits(1)) as f64 - (-149.0 * std::f64::consts::LN_2)).abs() < 1e-4
        );
    }

    #[test]
    fn log1p_error_bounds() {
        let inputs = || all_inputs().filter(|&x| x > -1.0 && x.is_finite());
        let e = measure(inputs(), log1p_f32, f64::ln_1p, 0.0);
        check("log1p_f32", e, f64::MAX, LOG1P_REL);
        assert_eq!(log1p_f32(0.0).to_bits(), 0.0f32.to_bits());
        assert_eq!(log1p_f32(-0.0).to_bits(), (-0.0f32).to_bits());
        assert_eq!(log1p_f32(1e-30), 1e-30);
        assert_eq!(log1p_f32(-1.0), f32::NEG_INFINITY);
        assert_eq!(log1p_f32(f32::INFINITY), f32::INFINITY);
        assert!(log1p_f32(-2.0).is_nan());
        assert!(log1p_f32(f32::NAN).is_nan());
    }

    /// ln(1 + e^x) in f64 without overflow, the reference for softplus.
    fn softplus_f64(x: f64) -> f64 {
        x.max(0.0) + (-x.abs()).exp().ln_1p()
    }

    #[test]
    fn softplus_error_bounds() {
        let e = measure(
            all_inputs(),
            softplus_f32,
            softplus_f64,
            f32::MIN_POSITIVE as f64,
        );
        check("softplus_f32", e, SOFTPLUS_ABS, SOFTPLUS_REL);
    }

    #[test]
    fn softplus_special_values_and_shape() {
        assert_eq!(softplus_f32(f32::INFINITY), f32::INFINITY);
        assert_eq!(softplus_f32(f32::MAX), f32::MAX);
        assert_eq!(softplus_f32(f32::NEG_INFINITY), 0.0);
        assert_eq!(softplus_f32(f32::MIN), 0.0);
        assert!(softplus_f32(f32::NAN).is_nan());
        assert!((softplus_f32(0.0) - std::f32::consts::LN_2).abs() <= f32::EPSILON);
        assert_eq!(
            softplus_f32(-50.0),
            exp_f32(-50.0),
            "tiny tail is e^x, not 0"
        );
        for x in grid() {
            assert!(softplus_f32(x) >= 0.0);
        }
        assert_monotone_on_grid("softplus_f32", softplus_f32, f32::INFINITY, 0.0);
    }

    #[test]
    fn erf_f64_matches_known_values() {
        // Reference values from Abramowitz & Stegun table 7.1 / high-precision evaluation.
        let cases = [
            (1e-10, 1.1283791670955126e-10),
            (-0.1, -0.11246291601828489),
            (0.5, 0.5204998778130465),
            (1.0, 0.8427007929497149),
            (2.0, 0.9953222650189527),
            (3.0, 0.9999779095030014),
            (6.0, 1.0),
        ];
        for (x, want) in cases {
            let got = erf_f64(x);
            assert!(
                ((got - want) / want).abs() <= 1e-15,
                "erf_f64({x}) = {got:e}, want {want:e}"
            );
        }
        assert_eq!(erf_f64(f64::INFINITY), 1.0);
        assert_eq!(erf_f64(f64::NEG_INFINITY), -1.0);
        assert!(erf_f64(f64::NAN).is_nan());
    }

    /// Every f32 input (4.3 billion per function): about 15 minutes on one core, so only on
    /// request (`cargo test --lib engine::fastmath -- --ignored --nocapture exhaustive`).
    /// Measures the all-input maxima the doc comments quote.
    #[test]
    #[ignore]
    fn exhaustive_all_f32() {
        let all = || (0..=u32::MAX).map(f32::from_bits);
        let floor = f32::MIN_POSITIVE as f64;
        // Measure everything first, then assert, so one run reports every function.
        let results = [
            (
                "tanh_f32",
                measure(all(), tanh_f32, f64::tanh, 0.0),
                TANH_ABS_ALL,
                TANH_REL_ALL,
            ),
            (
                "erf_f32",
                measure(all(), erf_f32, libm::erf, floor),
                ERF_ABS_ALL,
                ERF_REL_ALL,
            ),
            (
                "exp_f32",
                measure(all(), exp_f32, f64::exp, floor),
                f64::MAX,
                EXP_REL_ALL,
            ),
            (
                "ln_f32",
                measure(all(), ln_f32, f64::ln, 0.0),
                f64::MAX,
                LN_REL_ALL,
            ),
            (
                "log1p_f32",
                measure(all(), log1p_f32, f64::ln_1p, 0.0),
                f64::MAX,
                LOG1P_REL_ALL,
            ),
            (
                "softplus_f32",
                measure(all(), softplus_f32, softplus_f64, floor),
                SOFTPLUS_ABS_ALL,
                SOFTPLUS_REL_ALL,
            ),
        ];
        for (name, e, _, _) in &results {
            eprintln!(
                "{name} (all f32): abs {:.3e} at {:e}; rel {:.3e} at {:e}",
                e.max_abs, e.at_abs, e.max_rel, e.at_rel
            );
        }
        for (name, e, max_abs, max_rel) in results {
            check(name, e, max_abs, max_rel);
        }
    }
}
