//! Normalization layers over `[rows, width]` buffers, with explicit backward passes.
//!
//! - `layernorm`: `torch.nn.LayerNorm(width)` (per row, biased variance, affine weight and bias).
//! - `rmsnorm`: `torch.nn.RMSNorm(width, eps)` (per row, `x / sqrt(mean(x²) + eps) · w`).
//! - `batchnorm`: `torch.nn.BatchNorm1d(width)` (per column over the batch; training uses batch
//!   statistics and updates running ones with momentum 0.1 and the unbiased variance, evaluation
//!   uses the running ones).
//! - `dyt`: Dynamic Tanh, `w ⊙ tanh(α·x) + b` with a learned scalar α initialised to 0.5
//!   (Zhu et al. 2025, "Transformers without Normalization").

use serde::{Deserialize, Serialize};

use crate::engine::ops::ROW_BLOCK;
use crate::engine::{ops, par, Float};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Norm {
    None,
    Layernorm,
    Rmsnorm,
    Batchnorm,
    Dyt,
}

/// Where the normalization sits relative to the activation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NormPosition {
    /// `Linear → Norm → activation` (the BatchNorm paper's placement).
    BeforeActivation,
    /// `Linear → activation → Norm`.
    AfterActivation,
}

/// `torch.nn.BatchNorm1d` default momentum for the running statistics.
pub const BATCHNORM_MOMENTUM: f64 = 0.1;
/// DyT's α at initialization (Zhu et al. 2025, default for non-LLM models).
pub const DYT_ALPHA_INIT: f64 = 0.5;

impl Norm {
    pub fn name(self) -> &'static str {
        match self {
            Norm::None => "none",
            Norm::Layernorm => "layernorm",
            Norm::Rmsnorm => "rmsnorm",
            Norm::Batchnorm => "batchnorm",
            Norm::Dyt => "dyt",
        }
    }
    pub fn has_bias(self) -> bool {
        matches!(self, Norm::Layernorm | Norm::Batchnorm | Norm::Dyt)
    }
    pub fn has_alpha(self) -> bool {
        self == Norm::Dyt
    }
    pub fn has_running_stats(self) -> bool {
        self == Norm::Batchnorm
    }
}

/// Whether statistics come from the batch (and running ones are updated) or from the running ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Train,
    Eval,
}

/// Learned parameters of one normalization layer.
pub struct NormParams<'a, F> {
    pub weight: &'a [F],
    pub bias: Option<&'a [F]>,
    pub alpha: Option<F>,
}

/// Their gradients (accumulated).
pub struct NormGrads<'a, F> {
    pub weight: &'a mut [F],
    pub bias: Option<&'a mut [F]>,
    pub alpha: Option<&'a mut F>,
}

/// What the forward pass keeps for the backward pass.
#[derive(Clone, Debug, Default)]
pub struct NormCache<F> {
    /// Per-row (layer/rms) or per-column (batch) mean.
    pub mean: Vec<F>,
    /// Matching reciprocal standard deviation (or reciprocal RMS).
    pub rstd: Vec<F>,
    /// DyT's `tanh(α·x)`.
    pub t: Vec<F>,
}

impl<F: Float> NormCache<F> {
    pub fn new(norm: Norm, rows: usize, width: usize) -> Self {
        let stats = match norm {
            Norm::Layernorm | Norm::Rmsnorm => rows,
            Norm::Batchnorm => width,
            _ => 0,
        };
        NormCache {
            mean: vec![F::zero(); stats],
            rstd: vec![F::zero(); stats],
            t: vec![F::zero(); if norm == Norm::Dyt { rows * width } else { 0 }],
        }
    }
}

/// Forward over `x: [rows, width] → y: [rows, width]`.
#[allow(clippy::too_many_arguments)]
pub fn forward<F: Float>(
    norm: Norm,
    mode: Mode,
    width: usize,
    eps: F,
    x: &[F],
    y: &mut [F],
    p: &NormParams<'_, F>,
    running: Option<(&mut [F], &mut [F])>,
    cache: &mut NormCache<F>,
) {
    let rows = x.len() / width;
    let w = p.weight;
    match norm {
        Norm::None | Norm::Layernorm | Norm::Rmsnorm | Norm::Dyt => {
            // Row-local: row blocks over the pool, each writing its rows' outputs and stats.
            let (per_row, per_elem) = stat_widths(norm, width);
            let NormCache { mean, rstd, t } = cache;
            let parts = (
                par::rows(y, width),
                par::rows(mean, per_row),
                par::rows(rstd, per_row),
                par::rows(t, per_elem),
            );
            par::for_row_blocks(rows, parts, |_, r, (y, mean, rstd, t)| {
                let x = &x[r.start * width..r.end * width];
                rows_forward(norm, width, eps, x, y, p, mean, rstd, t)
            });
        }
        Norm::Batchnorm => {
            let (mean, rstd) = (&mut cache.mean, &mut cache.rstd);
            match mode {
                Mode::Train => {
                    mean.fill(F::zero());
                    rstd.fill(F::zero());
                    let inv_n = F::one() / F::of(rows as f64);
                    for xr in x.chunks_exact(width) {
                        for j in 0..width {
                            mean[j] += xr[j];
                        }
                    }
                    for m in mean.iter_mut() {
                        *m *= inv_n;
                    }
                    // rstd holds the variance until the end of this block.
                    for xr in x.chunks_exact(width) {
                        for j in 0..width {
                            let d = xr[j] - mean[j];
                            rstd[j] += d * d;
                        }
                    }
                    let mom = F::of(BATCHNORM_MOMENTUM);
                    // Unbiased variance for the running estimate, as torch does (n/(n-1)).
                    let unbias = if rows > 1 {
                        F::of(rows as f64 / (rows as f64 - 1.0))
                    } else {
                        F::one()
                    };
                    if let Some((rm, rv)) = running {
                        for j in 0..width {
                            rm[j] = (F::one() - mom) * rm[j] + mom * mean[j];
                            rv[j] = (F::one() - mom) * rv[j] + mom * rstd[j] * inv_n * unbias;
                        }
                    }
                    for v in rstd.iter_mut() {
                        *v = F::one() / (*v * inv_n + eps).sqrt();
                    }
                }
                Mode::Eval => {
                    if let Some((rm, rv)) = running {
                        for j in 0..width {
                            mean[j] = rm[j];
                            rstd[j] = F::one() / (rv[j] + eps).sqrt();
                        }
                    }
                }
            }
            let b = p.bias.unwrap_or(&[]);
            for (xr, yr) in x.chunks_exact(width).zip(y.chunks_exact_mut(width)) {
                for j in 0..width {
                    yr[j] = (xr[j] - mean[j]) * rstd[j] * w[j] + b[j];
                }
            }
        }
    }
}

/// The row-local norms (`none`, `layernorm`, `rmsnorm`, `dyt`) over `x: [rows, width]`, with
/// their per-row statistics in `mean`, `rstd` (`[rows]`) and DyT's `t` (`[rows, width]`): any
/// block of rows can run on its own, which is how the GPT spreads them over threads.
#[allow(clippy::too_many_arguments)]
pub fn rows_forward<F: Float>(
    norm: Norm,
    width: usize,
    eps: F,
    x: &[F],
    y: &mut [F],
    p: &NormParams<'_, F>,
    mean: &mut [F],
    rstd: &mut [F],
    t: &mut [F],
) {
    let w = p.weight;
    let (mean_out, rstd_out, cache_t) = (mean, rstd, t);
    match norm {
        Norm::None => y.copy_from_slice(x),
        Norm::Layernorm | Norm::Rmsnorm => {
            let inv_n = F::one() / F::of(width as f64);
            for (r, (xr, yr)) in x
                .chunks_exact(width)
                .zip(y.chunks_exact_mut(width))
                .enumerate()
            {
                // Centred into y first, so both sums run over fixed lanes (vectorized).
                let mean = if norm == Norm::Layernorm {
                    ops::sum(xr) * inv_n
                } else {
                    F::zero()
                };
                for (yv, &v) in yr.iter_mut().zip(xr) {
                    *yv = v - mean;
                }
                let var = ops::dot(yr, yr) * inv_n;
                let rstd = F::one() / (var + eps).sqrt();
                mean_out[r] = mean;
                rstd_out[r] = rstd;
                match p.bias {
                    Some(b) => {
                        for j in 0..width {
                            yr[j] = yr[j] * rstd * w[j] + b[j];
                        }
                    }
                    None => {
                        for j in 0..width {
                            yr[j] = yr[j] * rstd * w[j];
                        }
                    }
                }
            }
        }
        Norm::Dyt => {
            let alpha = p.alpha.unwrap_or_else(|| F::of(DYT_ALPHA_INIT));
            let b = p.bias.unwrap_or(&[]);
            for ((xr, yr), tr) in x
                .chunks_exact(width)
                .zip(y.chunks_exact_mut(width))
                .zip(cache_t.chunks_exact_mut(width))
            {
                for j in 0..width {
                    let t = (alpha * xr[j]).tanh_();
                    tr[j] = t;
                    yr[j] = w[j] * t + b[j];
                }
            }
        }
        Norm::Batchnorm => panic!("rows_forward: batchnorm normalizes columns"),
    }
}

/// Per-row statistics (`mean`, `rstd`) and per-element ones (`t`) a row norm keeps: how many
/// values per row of each.
fn stat_widths(norm: Norm, width: usize) -> (usize, usize) {
    (
        usize::from(matches!(norm, Norm::Layernorm | Norm::Rmsnorm)),
        if norm == Norm::Dyt { width } else { 0 },
    )
}

/// Scratch [`backward`] needs for `rows` rows of `width`: one partial sum of the parameter
/// gradients per row block.
pub fn partial_len(rows: usize, width: usize) -> usize {
    rows.div_ceil(ROW_BLOCK) * (2 * width + 1)
}

/// Backward: `g` holds `∂L/∂y` on entry and `∂L/∂x` on exit; parameter gradients accumulate.
/// Assumes the forward ran in [`Mode::Train`] on the same `x`. Row norms run in row blocks over
/// the pool, each block's parameter gradients summed on their own in `partial` (at least
/// [`partial_len`]) and then added in block order: the same sums for any thread count.
#[allow(clippy::too_many_arguments)]
pub fn backward<F: Float>(
    norm: Norm,
    width: usize,
    x: &[F],
    g: &mut [F],
    p: &NormParams<'_, F>,
    grads: NormGrads<'_, F>,
    cache: &NormCache<F>,
    partial: &mut [F],
) {
    match norm {
        Norm::None => {}
        Norm::Batchnorm => batch_backward(width, x, g, p, grads, cache),
        Norm::Layernorm | Norm::Rmsnorm | Norm::Dyt => {
            let mut none: [F; 0] = [];
            let pass = (x, p, cache, partial);
            let nothing = par::rows(&mut none, 0);
            backward_then(norm, width, g, grads, pass, nothing, |_, _, _| {});
        }
    }
}

/// [`backward`], then `acc += ∂L/∂x` (`acc`: `[rows, width]`) and each row block's column sums
/// of the new `acc` into its slot of `sums` (`[blocks, width]`, [`ops::ROW_BLOCK`] rows a block,
/// as [`ops::column_sums_par`] sums), while the block is in cache: a pre-norm transformer's
/// backward adds the norm's input gradient onto the residual stream's, whose column sums are
/// the next linear layer's bias gradient. `g` is left holding `∂L/∂x`.
#[allow(clippy::too_many_arguments)]
pub fn backward_add<F: Float>(
    norm: Norm,
    width: usize,
    x: &[F],
    g: &mut [F],
    p: &NormParams<'_, F>,
    grads: NormGrads<'_, F>,
    (cache, partial): (&NormCache<F>, &mut [F]),
    acc: &mut [F],
    sums: &mut [F],
) {
    let rows = x.len() / width;
    let sums = &mut sums[..rows.div_ceil(ROW_BLOCK) * width];
    let parts = (par::rows(acc, width), par::slot(sums, width));
    let pass = (x, p, cache, partial);
    backward_then(norm, width, g, grads, pass, parts, |_, g, (acc, sums)| {
        for (a, &v) in acc.iter_mut().zip(g.iter()) {
            *a += v;
        }
        sums.fill(F::zero());
        ops::add_column_sums(acc, width, sums);
    });
}

/// [`backward`] with `then(rows, ∂L/∂x of those rows, extra's piece)` on each row block as soon
/// as the block is done (after the whole pass for batchnorm, which needs every row first).
#[allow(clippy::type_complexity)]
fn backward_then<F: Float, P: par::Piece>(
    norm: Norm,
    width: usize,
    g: &mut [F],
    grads: NormGrads<'_, F>,
    (x, p, cache, partial): (&[F], &NormParams<'_, F>, &NormCache<F>, &mut [F]),
    extra: P,
    then: impl Fn(std::ops::Range<usize>, &[F], P::Out) + Sync,
) {
    let rows = x.len() / width;
    match norm {
        Norm::None | Norm::Batchnorm => {
            if norm == Norm::Batchnorm {
                batch_backward(width, x, g, p, grads, cache);
            }
            par::for_row_blocks(rows, extra, |_, r, piece| {
                let gr = &g[r.start * width..r.end * width];
                then(r, gr, piece)
            });
        }
        Norm::Layernorm | Norm::Rmsnorm | Norm::Dyt => {
            let stride = 2 * width + 1;
            let partial = &mut partial[..partial_len(rows, width)];
            partial.fill(F::zero());
            let (per_row, per_elem) = stat_widths(norm, width);
            let parts = (par::rows(g, width), par::slot(partial, stride), extra);
            par::for_row_blocks(rows, parts, |_, r, (g, part, piece)| {
                let (pw, rest) = part.split_at_mut(width);
                let (pb, pa) = rest.split_at_mut(width);
                let block_grads = NormGrads {
                    weight: pw,
                    bias: norm.has_bias().then_some(pb),
                    alpha: norm.has_alpha().then(|| &mut pa[0]),
                };
                let (stats, elems) = (
                    r.start * per_row..r.end * per_row,
                    r.start * per_elem..r.end * per_elem,
                );
                rows_backward(
                    norm,
                    width,
                    &x[r.start * width..r.end * width],
                    g,
                    p,
                    block_grads,
                    &cache.mean[stats.clone()],
                    &cache.rstd[stats],
                    &cache.t[elems],
                );
                then(r, g, piece);
            });
            let NormGrads {
                weight: gw,
                bias: mut gb,
                alpha: mut galpha,
            } = grads;
            for part in partial.chunks_exact(stride) {
                for (a, &v) in gw.iter_mut().zip(&part[..width]) {
                    *a += v;
                }
                if let Some(gb) = gb.as_deref_mut() {
                    for (a, &v) in gb.iter_mut().zip(&part[width..2 * width]) {
                        *a += v;
                    }
                }
                if let Some(ga) = galpha.as_deref_mut() {
                    *ga += part[2 * width];
                }
            }
        }
    }
}

/// Batchnorm's backward (columns: every row's statistics are the batch's), `g` in place.
fn batch_backward<F: Float>(
    width: usize,
    x: &[F],
    g: &mut [F],
    p: &NormParams<'_, F>,
    grads: NormGrads<'_, F>,
    cache: &NormCache<F>,
) {
    let (rows, w) = (x.len() / width, p.weight);
    let NormGrads {
        weight: gw,
        bias: gb,
        ..
    } = grads;
    let inv_n = F::one() / F::of(rows as f64);
    let (mean, rstd) = (&cache.mean, &cache.rstd);
    // Column reductions: Σ_r g·w and Σ_r g·w·x̂ (stored in the weight/bias grads' shape).
    let mut sum_g = vec![F::zero(); width];
    let mut sum_g_xhat = vec![F::zero(); width];
    for (xr, gr) in x.chunks_exact(width).zip(g.chunks_exact(width)) {
        for j in 0..width {
            let xhat = (xr[j] - mean[j]) * rstd[j];
            sum_g[j] += gr[j];
            sum_g_xhat[j] += gr[j] * xhat;
        }
    }
    for j in 0..width {
        gw[j] += sum_g_xhat[j];
    }
    if let Some(gb) = gb {
        for j in 0..width {
            gb[j] += sum_g[j];
        }
    }
    for (xr, gr) in x.chunks_exact(width).zip(g.chunks_exact_mut(width)) {
        for j in 0..width {
            let xhat = (xr[j] - mean[j]) * rstd[j];
            gr[j] = w[j] * rstd[j] * (gr[j] - sum_g[j] * inv_n - xhat * sum_g_xhat[j] * inv_n);
        }
    }
}

/// Backward of [`rows_forward`] on any block of rows (`mean`, `rstd`, `t` as it wrote them);
/// parameter gradients accumulate into `grads`.
#[allow(clippy::too_many_arguments)]
pub fn rows_backward<F: Float>(
    norm: Norm,
    width: usize,
    x: &[F],
    g: &mut [F],
    p: &NormParams<'_, F>,
    grads: NormGrads<'_, F>,
    mean: &[F],
    rstd: &[F],
    t: &[F],
) {
    let w = p.weight;
    let NormGrads {
        weight: gw,
        bias: mut gb,
        alpha: galpha,
    } = grads;
    let (cache_mean, cache_rstd, cache_t) = (mean, rstd, t);
    match norm {
        Norm::None => {}
        Norm::Layernorm | Norm::Rmsnorm => {
            let inv_n = F::one() / F::of(width as f64);
            for (r, (xr, gr)) in x
                .chunks_exact(width)
                .zip(g.chunks_exact_mut(width))
                .enumerate()
            {
                let (mean, rstd) = (cache_mean[r], cache_rstd[r]);
                // Eight independent partial sums per row, column j into sum j mod 8: shorter
                // add chains than one running sum, in a fixed order. ∂L/∂γ and each sum in a pass
                // of its own, the sums over chunks of eight (the same sums in the same order),
                // which LLVM vectorizes: in one loop indexed by `j % 8` they stayed scalar, 2.9%
                // of the tiny GPT's step (a test holds them to that loop's bits).
                let (mut sum_gxh, mut sum_gxh_xhat) = ([F::zero(); 8], [F::zero(); 8]);
                let (xr, gr, w, gw) = (
                    &xr[..width],
                    &mut gr[..width],
                    &w[..width],
                    &mut gw[..width],
                );
                for ((gw, &g), &x) in gw.iter_mut().zip(gr.iter()).zip(xr) {
                    *gw += g * ((x - mean) * rstd);
                }
                let whole = width / 8 * 8;
                for (gs, ws) in gr[..whole].chunks_exact(8).zip(w[..whole].chunks_exact(8)) {
                    for l in 0..8 {
                        sum_gxh[l] += gs[l] * ws[l];
                    }
                }
                for ((xs, gs), ws) in xr[..whole]
                    .chunks_exact(8)
                    .zip(gr[..whole].chunks_exact(8))
                    .zip(w[..whole].chunks_exact(8))
                {
                    for l in 0..8 {
                        sum_gxh_xhat[l] += (gs[l] * ws[l]) * ((xs[l] - mean) * rstd);
                    }
                }
                // The ragged end (fixed indices: a variable one would keep the sums in memory,
                // where they do not vectorize).
                for l in 0..8 {
                    if whole + l < width {
                        let j = whole + l;
                        let gxh = gr[j] * w[j];
                        sum_gxh[l] += gxh;
                        sum_gxh_xhat[l] += gxh * ((xr[j] - mean) * rstd);
                    }
                }
                let mut mean_gxh = ops::fold_lanes(sum_gxh);
                let mut mean_gxh_xhat = ops::fold_lanes(sum_gxh_xhat);
                if let Some(gb) = gb.as_deref_mut() {
                    for (b, &g) in gb[..width].iter_mut().zip(gr.iter()) {
                        *b += g;
                    }
                }
                mean_gxh *= inv_n;
                mean_gxh_xhat *= inv_n;
                // RMSNorm has no mean subtraction, so no mean term in its gradient either.
                if norm == Norm::Rmsnorm {
                    mean_gxh = F::zero();
                }
                for ((g, &x), &w) in gr.iter_mut().zip(xr).zip(w) {
                    let xhat = (x - mean) * rstd;
                    *g = rstd * (*g * w - mean_gxh - xhat * mean_gxh_xhat);
                }
            }
        }
        Norm::Dyt => {
            let alpha = p.alpha.unwrap_or_else(|| F::of(DYT_ALPHA_INIT));
            let mut ga = F::zero();
            for ((xr, gr), tr) in x
                .chunks_exact(width)
                .zip(g.chunks_exact_mut(width))
                .zip(cache_t.chunks_exact(width))
            {
                for j in 0..width {
                    let t = tr[j];
                    gw[j] += gr[j] * t;
                    if let Some(gb) = gb.as_deref_mut() {
                        gb[j] += gr[j];
                    }
                    let gt = gr[j] * w[j] * (F::one() - t * t);
                    ga += gt * xr[j];
                    gr[j] = gt * alpha;
                }
            }
            if let Some(galpha) = galpha {
                *galpha += ga;
            }
        }
        Norm::Batchnorm => panic!("rows_backward: batchnorm normalizes columns"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    /// The row backward as one scalar loop, partial sum `j mod 8` (the order `rows_backward`
    /// keeps while its passes vectorize).
    #[allow(clippy::too_many_arguments, clippy::needless_range_loop)]
    fn reference(
        norm: Norm,
        width: usize,
        x: &[f32],
        g: &mut [f32],
        w: &[f32],
        grads: (&mut [f32], &mut [f32]),
        mean: &[f32],
        rstd: &[f32],
    ) {
        let (gw, gb) = grads;
        for (r, (xr, gr)) in x
            .chunks_exact(width)
            .zip(g.chunks_exact_mut(width))
            .enumerate()
        {
            let (mean, rstd) = (mean[r], rstd[r]);
            let (mut s1, mut s2) = ([0f32; 8], [0f32; 8]);
            for j in 0..width {
                let xhat = (xr[j] - mean) * rstd;
                gw[j] += gr[j] * xhat;
                let gxh = gr[j] * w[j];
                s1[j % 8] += gxh;
                s2[j % 8] += gxh * xhat;
            }
            for j in 0..width {
                gb[j] += gr[j];
            }
            let inv_n = 1.0 / width as f32;
            let mut m1 = ops::fold_lanes(s1) * inv_n;
            let m2 = ops::fold_lanes(s2) * inv_n;
            if norm == Norm::Rmsnorm {
                m1 = 0.0;
            }
            for j in 0..width {
                let xhat = (xr[j] - mean) * rstd;
                gr[j] = rstd * (gr[j] * w[j] - m1 - xhat * m2);
            }
        }
    }

    /// The vectorized passes give the scalar loop's bits: gradients of the input, the weight
    /// and the bias, over widths with and without a ragged end.
    #[test]
    fn row_backward_matches_the_scalar_loop_bit_for_bit() {
        let mut rng = Rng::new(5);
        let mut normal = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
        for norm in [Norm::Layernorm, Norm::Rmsnorm] {
            for width in [1, 5, 8, 13, 24, 128, 131] {
                let rows = 3;
                let (x, g0, w, b) = (
                    normal(rows * width),
                    normal(rows * width),
                    normal(width),
                    normal(width),
                );
                let (mut y, mut t) = (vec![0.0; rows * width], vec![0.0; rows * width]);
                let (mut mean, mut rstd) = (vec![0.0; rows], vec![0.0; rows]);
                let p = NormParams {
                    weight: &w,
                    bias: Some(&b),
                    alpha: None,
                };
                rows_forward(
                    norm, width, 1e-5, &x, &mut y, &p, &mut mean, &mut rstd, &mut t,
                );
                let start = (normal(width), normal(width));
                let (mut g, mut gw, mut gb) = (g0.clone(), start.0.clone(), start.1.clone());
                let grads = NormGrads {
                    weight: &mut gw,
                    bias: Some(&mut gb),
                    alpha: None,
                };
                rows_backward(norm, width, &x, &mut g, &p, grads, &mean, &rstd, &t);
                let (mut rg, mut rgw, mut rgb) = (g0.clone(), start.0.clone(), start.1.clone());
                reference(
                    norm,
                    width,
                    &x,
                    &mut rg,
                    &w,
                    (&mut rgw, &mut rgb),
                    &mean,
                    &rstd,
                );
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
                assert_eq!(
                    bits(&g),
                    bits(&rg),
                    "{norm:?} width {width}: input gradient"
                );
                assert_eq!(
                    bits(&gw),
                    bits(&rgw),
                    "{norm:?} width {width}: weight gradient"
                );
                assert_eq!(
                    bits(&gb),
                    bits(&rgb),
                    "{norm:?} width {width}: bias gradient"
                );
            }
        }
    }

    /// [`backward_add`] gives the bits of [`backward`], then `acc += g`, then
    /// [`ops::column_sums_par`] of `acc`: input and parameter gradients, the stream and its
    /// column sums, for every norm but batchnorm (which the transformer refuses), over 300 rows
    /// (three row blocks, the last ragged) on two threads.
    #[test]
    fn backward_add_is_backward_then_add_then_column_sums() {
        let mut rng = Rng::new(9);
        let mut normal = |n: usize| (0..n).map(|_| rng.normal() as f32).collect::<Vec<f32>>();
        let (rows, width) = (300, 24);
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<u32>>();
        for norm in [Norm::Layernorm, Norm::Rmsnorm, Norm::Dyt, Norm::None] {
            let (x, g0, acc0, w, b) = (
                normal(rows * width),
                normal(rows * width),
                normal(rows * width),
                normal(width),
                normal(width),
            );
            let p = NormParams {
                weight: &w,
                bias: norm.has_bias().then_some(&b[..]),
                alpha: norm.has_alpha().then_some(0.7),
            };
            let mut cache = NormCache::new(norm, rows, width);
            let mut y = vec![0.0; rows * width];
            forward(
                norm,
                Mode::Train,
                width,
                1e-5,
                &x,
                &mut y,
                &p,
                None,
                &mut cache,
            );
            let mut partial = vec![0.0; partial_len(rows, width)];
            let run = |fused: bool, partial: &mut [f32]| {
                let (mut g, mut acc) = (g0.clone(), acc0.clone());
                let (mut gw, mut gb, mut ga) = (vec![0.5; width], vec![0.25; width], 0.125f32);
                let mut sums = vec![0.0; rows.div_ceil(ROW_BLOCK) * width];
                let mut col = vec![0.0; width];
                let grads = NormGrads {
                    weight: &mut gw,
                    bias: Some(&mut gb),
                    alpha: Some(&mut ga),
                };
                ops::with_threads(2, || {
                    if fused {
                        let pc = (&cache, &mut *partial);
                        backward_add(norm, width, &x, &mut g, &p, grads, pc, &mut acc, &mut sums);
                        ops::add_column_sums(&sums, width, &mut col);
                    } else {
                        backward(norm, width, &x, &mut g, &p, grads, &cache, partial);
                        ops::add_assign(&mut acc, &g, width);
                        ops::column_sums_par(&acc, width, &mut col, &mut sums);
                    }
                });
                [
                    bits(&g),
                    bits(&acc),
                    bits(&col),
                    bits(&gw),
                    bits(&gb),
                    bits(&[ga]),
                ]
            };
            let (want, got) = (run(false, &mut partial), run(true, &mut partial));
            for (i, what) in ["g", "acc", "column sums", "weight", "bias", "alpha"]
                .iter()
                .enumerate()
            {
                assert_eq!(got[i], want[i], "{norm:?}: {what}");
            }
            assert_ne!(
                want[1],
                bits(&acc0),
                "{norm:?}: the stream gained the gradient"
            );
        }
    }
}
