//! The linear layer `y = x·Wᵀ + b` (`torch.nn.Linear`: `W: [fan_out, fan_in]`), forward and
//! backward, on the engine's GEMM. Shapes: `x: [rows, fan_in]`, `y, g: [rows, fan_out]`.

use crate::engine::ops::{self, Op};
use crate::engine::Float;

/// `(rows, fan_out, fan_in)`.
pub type Dims = (usize, usize, usize);

/// `y ← x·Wᵀ + b + β·y`: β = 0 for a layer's output, 1 for a residual branch added onto its
/// stream (the bias rides in the GEMM's epilogue).
pub fn forward<F: Float>(
    x: &[F],
    w: &[F],
    b: &[F],
    (rows, fan_out, fan_in): Dims,
    beta: F,
    y: &mut [F],
) {
    ops::gemm_ex(
        Op::N,
        Op::T,
        rows,
        fan_out,
        fan_in,
        F::one(),
        (x, fan_in),
        (w, fan_in),
        beta,
        (y, fan_out),
        Some(b),
    );
}

/// `y ← x·Wᵀ + β·y`, no bias (a bias-free layer, or one whose bias is already in `y` or comes
/// in a later fused pass).
pub fn forward_no_bias<F: Float>(
    x: &[F],
    w: &[F],
    (rows, fan_out, fan_in): Dims,
    beta: F,
    y: &mut [F],
) {
    ops::gemm(Op::N, Op::T, rows, fan_out, fan_in, F::one(), x, w, beta, y);
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
pub fn backward_weight<F: Float>(g: &[F], x: &[F], (rows, fan_out, fan_in): Dims, dw: &mut [F]) {
    ops::gemm(
        Op::T,
        Op::N,
        fan_out,
        fan_in,
        rows,
        F::one(),
        g,
        x,
        F::zero(),
        dw,
    );
}

/// `dx = g·W`, overwritten.
pub fn backward_input<F: Float>(g: &[F], w: &[F], (rows, fan_out, fan_in): Dims, dx: &mut [F]) {
    ops::gemm(
        Op::N,
        Op::N,
        rows,
        fan_in,
        fan_out,
        F::one(),
        g,
        w,
        F::zero(),
        dx,
    );
}
