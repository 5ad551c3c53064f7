//! The linear layer `y = x·Wᵀ + b` (`torch.nn.Linear`: `W: [fan_out, fan_in]`), forward and
//! backward, on the engine's GEMM. Shapes: `x: [rows, fan_in]`, `y, g: [rows, fan_out]`.

use crate::engine::ops::{self, Op};
use crate::engine::Float;
use crate::model::Param;
use crate::optim::Update;

/// `(rows, fan_out, fan_in)`.
pub type Dims = (usize, usize, usize);

/// `y ← x·Wᵀ + b + β·y`: β = 0 for a layer's output, 1 for a residual branch added onto its
/// stream (the bias rides in the GEMM's epilogue).
pub fn forward<F: Float>(x: &[F], w: &[F], b: &[F], dims: Dims, beta: F, y: &mut [F]) {
    forward_mult(x, w, b, dims, F::one(), beta, y);
}

/// `y ← α·x·Wᵀ + b + β·y`: a layer with a bias read through a forward multiplier α on its
/// weight only (mean field's hidden layers).
pub fn forward_mult<F: Float>(
    x: &[F],
    w: &[F],
    b: &[F],
    (rows, fan_out, fan_in): Dims,
    alpha: F,
    beta: F,
    y: &mut [F],
) {
    ops::gemm_ex(
        Op::N,
        Op::T,
        rows,
        fan_out,
        fan_in,
        alpha,
        (x, fan_in),
        (w, fan_in),
        beta,
        (y, fan_out),
        Some(b),
    );
}

/// `y ← α·x·Wᵀ + b + s`: a residual branch onto the stream `s`, written to `y` (the same bits
/// as copying `s` into `y` and [`forward_mult`] with β = 1, without the copy).
pub fn forward_onto<F: Float>(
    x: &[F],
    w: &[F],
    b: &[F],
    (rows, fan_out, fan_in): Dims,
    alpha: F,
    s: &[F],
    y: &mut [F],
) {
    let dims = (rows, fan_out, fan_in);
    ops::gemm_onto((Op::N, Op::T), dims, alpha, (x, w), Some(b), s, y);
}

/// `y ← x·Wᵀ + β·y`, no bias (a bias-free layer, or one whose bias is already in `y` or comes
/// in a later fused pass).
pub fn forward_no_bias<F: Float>(x: &[F], w: &[F], dims: Dims, beta: F, y: &mut [F]) {
    forward_scaled(x, w, dims, F::one(), beta, y);
}

/// `y ← α·x·Wᵀ + β·y`: a layer read through a forward multiplier α (μP's readout).
pub fn forward_scaled<F: Float>(
    x: &[F],
    w: &[F],
    (rows, fan_out, fan_in): Dims,
    alpha: F,
    beta: F,
    y: &mut [F],
) {
    ops::gemm(Op::N, Op::T, rows, fan_out, fan_in, alpha, x, w, beta, y);
}

/// `z = α·x·Wᵀ + b` and `h = tanh(z)` in one pass (the GEMM's epilogue), where the engine can
/// ([`ops::gemm_bias_tanh`]): the same bits as [`forward_scaled`] then the bias and tanh;
/// without `keep_z`, `z` left unspecified (nothing will read it). `false`, with nothing done,
/// where it cannot.
#[allow(clippy::too_many_arguments)]
pub fn forward_tanh<F: Float>(
    x: &[F],
    w: &[F],
    (rows, fan_out, fan_in): Dims,
    alpha: F,
    b: Option<&[F]>,
    z: (&mut [F], bool),
    h: &mut [F],
) -> bool {
    ops::gemm_bias_tanh(Op::N, Op::T, (rows, fan_out, fan_in), alpha, x, w, b, z, h)
}

/// Parameter gradients from `g = ∂L/∂y`: `dW = gᵀ·x` and `db = Σ_rows g` (when there is a
/// bias), both overwritten; `partial` is the bias sum's per-row-block scratch
/// ([`ops::column_sums_par`]).
pub fn backward_params<F: Float>(
    g: &[F],
    x: &[F],
    dims: Dims,
    dw: &mut [F],
    db: Option<&mut [F]>,
    partial: &mut [F],
) {
    backward_weight(g, x, dims, dw);
    if let Some(db) = db {
        ops::column_sums_par(g, dims.1, db, partial);
    }
}

/// `dW = gᵀ·x`, overwritten.
pub fn backward_weight<F: Float>(g: &[F], x: &[F], dims: Dims, dw: &mut [F]) {
    backward_weight_scaled(g, x, dims, F::one(), dw)
}

/// `dW = α·gᵀ·x`, overwritten (the layer of [`forward_scaled`]).
pub fn backward_weight_scaled<F: Float>(
    g: &[F],
    x: &[F],
    (rows, fan_out, fan_in): Dims,
    alpha: F,
    dw: &mut [F],
) {
    ops::gemm(
        Op::T,
        Op::N,
        fan_out,
        fan_in,
        rows,
        alpha,
        g,
        x,
        F::zero(),
        dw,
    );
}

/// [`backward_weight_scaled`] into `p.grad`, then the optimizer's step on `p` (tensor `i` of
/// `up`), in one pass where the engine can (Adam's step in the GEMM's epilogue, while each tile
/// of the gradient is in registers, `p.grad` then left unspecified); otherwise the gradient
/// alone, the step left to `up`.
pub fn backward_weight_update<F: Float>(
    g: &[F],
    x: &[F],
    dims: Dims,
    alpha: F,
    (i, p): (usize, &mut Param<F>),
    up: &mut Update<'_, F>,
) {
    let (rows, fan_out, fan_in) = dims;
    let fused = up.fused(i, p, |grad, t| {
        ops::gemm_adam(Op::T, Op::N, (fan_out, fan_in, rows), alpha, g, x, grad, t)
    });
    if !fused {
        backward_weight_scaled(g, x, dims, alpha, &mut p.grad);
    }
}

/// `dx = (α·g·W) ⊙ (1 − h²)`: [`backward_input_scaled`] and the gradient through the tanh below
/// (output `h`) in one pass, where the engine can ([`ops::gemm_tanh_slope`]); `false`, with
/// nothing done, where it cannot.
pub fn backward_input_tanh<F: Float>(
    g: &[F],
    w: &[F],
    (rows, fan_out, fan_in): Dims,
    alpha: F,
    h: &[F],
    dx: &mut [F],
) -> bool {
    ops::gemm_tanh_slope(Op::N, Op::N, (rows, fan_in, fan_out), alpha, g, w, dx, h)
}

/// `dx = g·W`, overwritten.
pub fn backward_input<F: Float>(g: &[F], w: &[F], dims: Dims, dx: &mut [F]) {
    backward_input_scaled(g, w, dims, F::one(), dx)
}

/// `dx = α·g·W`, overwritten (the layer of [`forward_scaled`]).
pub fn backward_input_scaled<F: Float>(
    g: &[F],
    w: &[F],
    (rows, fan_out, fan_in): Dims,
    alpha: F,
    dx: &mut [F],
) {
    ops::gemm(
        Op::N,
        Op::N,
        rows,
        fan_in,
        fan_out,
        alpha,
        g,
        w,
        F::zero(),
        dx,
    );
}
