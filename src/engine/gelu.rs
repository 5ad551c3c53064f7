//! GELU's forward pass over a buffer in `f32`: value `x·Φ(x)` and slope `Φ(x) + x·φ(x)` of
//! [`fastmath::gelu_f32`], sixteen lanes at a time on AVX-512, with the same fused operations in
//! the same order (so the same bits as the scalar function, which the tests check); the
//! scalar function elsewhere.
//!
//! Why its own kernel: the GPT's MLP applies it to `B·T × 4C` pre-activations per layer (1 M
//! for the reference model), and LLVM vectorizes the scalar loop to 8 lanes; at 16 lanes, with
//! `vscalefps` for `2^n`, the reference model's 2048×512 pass took 0.28 ms on 2 threads against
//! the 8-lane loop's 0.40 (and the plain-arithmetic GELU's 0.58) on an Intel Xeon (family 6
//! model 167), best of 40 in a microbenchmark kept out of the tree.

use super::{fastmath, Float};

/// `h[i], d[i] = gelu_f32(z[i])` (value and slope); `d` may be empty (value only).
pub fn forward(z: &[f32], h: &mut [f32], d: &mut [f32]) {
    assert!(h.len() == z.len() && (d.is_empty() || d.len() == z.len()));
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::avx512() {
        // SAFETY: AVX-512F is present (checked); the kernel reads `z.len()` floats of `z` and
        // writes as many of `h` (and of `d` unless it is empty), which the assert above sized.
        return unsafe { avx512::forward(z, h, d) };
    }
    elementwise(z, h, d)
}

/// [`forward`] (or any float's GELU pass) element by element, with [`Float::gelu_`].
pub fn elementwise<F: Float>(z: &[F], h: &mut [F], d: &mut [F]) {
    if d.is_empty() {
        for (hv, &zv) in h.iter_mut().zip(z) {
            *hv = zv.gelu_().0;
        }
    } else {
        for ((hv, dv), &zv) in h.iter_mut().zip(d.iter_mut()).zip(z) {
            (*hv, *dv) = zv.gelu_();
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::fastmath::gelu_consts::*;
    use std::arch::x86_64::*;

    /// [`super::forward`] on AVX-512: whole vectors, then the tail under a mask.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn forward(z: &[f32], h: &mut [f32], d: &mut [f32]) {
        let n = z.len();
        let slope = !d.is_empty();
        let (zp, hp, dp) = (z.as_ptr(), h.as_mut_ptr(), d.as_mut_ptr());
        let mut i = 0;
        while i + 16 <= n {
            let (v, s) = gelu16(_mm512_loadu_ps(zp.add(i)));
            _mm512_storeu_ps(hp.add(i), v);
            if slope {
                _mm512_storeu_ps(dp.add(i), s);
            }
            i += 16;
        }
        if i < n {
            let k = ((1u32 << (n - i)) - 1) as __mmask16;
            let (v, s) = gelu16(_mm512_maskz_loadu_ps(k, zp.add(i)));
            _mm512_mask_storeu_ps(hp.add(i), k, v);
            if slope {
                _mm512_mask_storeu_ps(dp.add(i), k, s);
            }
        }
    }

    /// [`fastmath::gelu_f32`](super::fastmath::gelu_f32) on sixteen lanes, operation for
    /// operation (`2^n` by `vscalefps`, which rounds `e·2^n` once, as the scalar's two exact
    /// half-scalings do).
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn gelu16(x: __m512) -> (__m512, __m512) {
        let c = _mm512_set1_ps;
        // `max(lo, x)` and `min(hi, ·)` return their second operand when it is NaN, as the
        // scalar `clamp` keeps NaN.
        let clamp = |v: __m512, lo: f32, hi: f32| _mm512_min_ps(c(hi), _mm512_max_ps(c(lo), v));
        let u = clamp(_mm512_mul_ps(x, c(FRAC_1_SQRT_2)), -4.0, 4.0);
        let u2 = _mm512_mul_ps(u, u);
        let mut p = _mm512_fmadd_ps(u2, c(A13), c(A11));
        for k in [A9, A7, A5, A3, A1] {
            p = _mm512_fmadd_ps(u2, p, c(k));
        }
        let mut q = _mm512_fmadd_ps(u2, c(B8), c(B6));
        for k in [B4, B2, B0] {
            q = _mm512_fmadd_ps(u2, q, c(k));
        }
        let erf = clamp(_mm512_mul_ps(u, _mm512_div_ps(p, q)), -1.0, 1.0);
        let cdf = _mm512_fmadd_ps(erf, c(0.5), c(0.5));
        let y = clamp(_mm512_mul_ps(_mm512_mul_ps(x, x), c(-0.5)), -104.0, 0.0);
        let t = _mm512_fmadd_ps(y, c(LOG2_E), c(MAGIC));
        let n = _mm512_sub_ps(t, c(MAGIC));
        let r = _mm512_fmadd_ps(n, c(-C1), y);
        let r = _mm512_fmadd_ps(n, c(-C2), r);
        let mut e = _mm512_fmadd_ps(c(P0), r, c(P1));
        for k in [P2, P3, P4, P5] {
            e = _mm512_fmadd_ps(e, r, c(k));
        }
        let e = _mm512_add_ps(_mm512_fmadd_ps(e, _mm512_mul_ps(r, r), r), c(1.0));
        let pdf = _mm512_mul_ps(_mm512_scalef_ps(e, n), c(INV_SQRT_2PI));
        (_mm512_mul_ps(x, cdf), _mm512_fmadd_ps(x, pdf, cdf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector kernel gives the scalar function's bits: a dense grid over the range, the
    /// clamps' edges, every 4099th bit pattern of each sign, the special values, and lengths
    /// that leave every tail size.
    #[test]
    fn the_kernel_is_gelu_f32() {
        let mut xs: Vec<f32> = (0..400_001)
            .map(|i| -20.0 + 40.0 * i as f32 / 400_000.0)
            .collect();
        xs.extend((0..(1u32 << 31) / 4099).flat_map(|i| {
            let b = i * 4099;
            [f32::from_bits(b), f32::from_bits(b | 0x8000_0000)]
        }));
        xs.extend([
            0.0,
            -0.0,
            5.656854,
            -5.656854,
            5.6568546,
            14.422205,
            -14.422206,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            f32::MIN_POSITIVE,
            1e-40,
        ]);
        for len in [xs.len(), 1, 15, 16, 17, 31] {
            let z = &xs[..len];
            let (mut h, mut d) = (vec![0.0; len], vec![0.0; len]);
            forward(z, &mut h, &mut d);
            let mut h_only = vec![0.0; len];
            forward(z, &mut h_only, &mut []);
            for (i, &x) in z.iter().enumerate() {
                let (v, s) = fastmath::gelu_f32(x);
                let same =
                    |a: f32, b: f32| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());
                assert!(
                    same(h[i], v) && same(h_only[i], v),
                    "value at {x:e}: {} vs {v}",
                    h[i]
                );
                assert!(same(d[i], s), "slope at {x:e}: {} vs {s}", d[i]);
            }
        }
    }
}
