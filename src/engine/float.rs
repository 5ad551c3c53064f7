//! The scalar types the engine is generic over: `f32` (fast, for training) and `f64` (exact, for
//! gradient checks and theory). Elementwise transcendental functions go through this trait so that
//! `f32` uses the vectorizable approximations of [`super::fastmath`] (documented error bounds) and
//! `f64` the correctly rounded-ish libm functions — except `tanh`, our copy of glibc's
//! ([`super::tanh64`]), which the teacher–student data goes through: the same bits everywhere.

use std::fmt::{Debug, Display};
use std::iter::Sum;
use std::ops::{AddAssign, DivAssign, MulAssign, SubAssign};

use super::fastmath;

pub trait Float:
    num_traits::Float
    + num_traits::FromPrimitive
    + AddAssign
    + SubAssign
    + MulAssign
    + DivAssign
    + Sum
    + Default
    + Debug
    + Display
    + Send
    + Sync
    + 'static
{
    /// `"f32"` or `"f64"`, as written in experiment files.
    const NAME: &'static str;
    /// The safetensors dtype with the same layout.
    const SAFETENSORS: safetensors::Dtype;
    /// Whether `Self` is `f32` (the engine's own AVX-512 kernels are single precision).
    const IS_F32: bool;

    fn of(x: f64) -> Self;
    fn f64(self) -> f64;

    /// `C ← α·A·B + β·C` with arbitrary (row, column) strides, single-threaded.
    ///
    /// # Safety
    /// The pointers must address `m×k`, `k×n` and `m×n` matrices with the given strides, and `c`
    /// must not alias `a` or `b`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    );

    fn tanh_(self) -> Self;
    fn exp_(self) -> Self;
    fn erf_(self) -> Self;
    /// GELU's value and slope, `(x·Φ(x), Φ(x) + x·φ(x))` (erf form).
    fn gelu_(self) -> (Self, Self);
    /// [`Float::gelu_`] over a buffer: `h = value`, and `d = slope` unless `d` is empty.
    fn gelu_pass(z: &[Self], h: &mut [Self], d: &mut [Self]) {
        super::gelu::elementwise(z, h, d)
    }
    /// `ln(1 + e^x)` without overflow.
    fn softplus_(self) -> Self;
    fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8>;
    fn from_le_bytes_slice(bytes: &[u8]) -> Vec<Self>;
}

impl Float for f32 {
    const NAME: &'static str = "f32";
    const SAFETENSORS: safetensors::Dtype = safetensors::Dtype::F32;
    const IS_F32: bool = true;
    #[inline(always)]
    fn of(x: f64) -> Self {
        x as f32
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self as f64
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::sgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
    #[inline(always)]
    fn tanh_(self) -> Self {
        fastmath::tanh_f32(self)
    }
    #[inline(always)]
    fn exp_(self) -> Self {
        fastmath::exp_f32(self)
    }
    #[inline(always)]
    fn erf_(self) -> Self {
        fastmath::erf_f32(self)
    }
    #[inline(always)]
    fn gelu_(self) -> (Self, Self) {
        fastmath::gelu_f32(self)
    }
    fn gelu_pass(z: &[Self], h: &mut [Self], d: &mut [Self]) {
        super::gelu::forward(z, h, d)
    }
    #[inline(always)]
    fn softplus_(self) -> Self {
        fastmath::softplus_f32(self)
    }
    fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn from_le_bytes_slice(bytes: &[u8]) -> Vec<Self> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }
}

impl Float for f64 {
    const NAME: &'static str = "f64";
    const SAFETENSORS: safetensors::Dtype = safetensors::Dtype::F64;
    const IS_F32: bool = false;
    #[inline(always)]
    fn of(x: f64) -> Self {
        x
    }
    #[inline(always)]
    fn f64(self) -> f64 {
        self
    }
    unsafe fn gemm_raw(
        m: usize,
        k: usize,
        n: usize,
        alpha: Self,
        a: *const Self,
        rsa: isize,
        csa: isize,
        b: *const Self,
        rsb: isize,
        csb: isize,
        beta: Self,
        c: *mut Self,
        rsc: isize,
        csc: isize,
    ) {
        matrixmultiply::dgemm(m, k, n, alpha, a, rsa, csa, b, rsb, csb, beta, c, rsc, csc)
    }
    #[inline(always)]
    fn tanh_(self) -> Self {
        // Our copy of glibc's: the same bits on every machine and libm.
        super::tanh64::tanh(self)
    }
    #[inline(always)]
    fn exp_(self) -> Self {
        self.exp()
    }
    #[inline(always)]
    fn erf_(self) -> Self {
        fastmath::erf_f64(self)
    }
    #[inline(always)]
    fn gelu_(self) -> (Self, Self) {
        let cdf = 0.5 * (1.0 + (self * std::f64::consts::FRAC_1_SQRT_2).erf_());
        let pdf = 0.398_942_280_401_432_7 * (-0.5 * self * self).exp();
        (self * cdf, cdf + self * pdf)
    }
    #[inline(always)]
    fn softplus_(self) -> Self {
        // max(x, 0) + ln(1 + e^{-|x|}): exact and overflow-free.
        self.max(0.0) + (-self.abs()).exp().ln_1p()
    }
    fn to_le_bytes_vec(xs: &[Self]) -> Vec<u8> {
        xs.iter().flat_map(|x| x.to_le_bytes()).collect()
    }
    fn from_le_bytes_slice(bytes: &[u8]) -> Vec<Self> {
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                f64::from_le_bytes(b)
            })
            .collect()
    }
}
