//! 2-D convolution (`torch.nn.Conv2d`) and transposed convolution (`torch.nn.ConvTranspose2d`),
//! forward and backward, by im2col on the engine's GEMM. Images are NCHW, row-major: `x:
//! [n, c, h, w]`. Weights follow PyTorch: a convolution's `[c_out, c_in/groups, kh, kw]`, a
//! transposed convolution's `[c_in, c_out/groups, kh, kw]`.
//!
//! One geometry, [`Conv`], describes the map from `(c_in, h, w)` to `(c_out, oh, ow)` with
//! `oh = ⌊(h + 2p − d(k − 1) − 1)/s⌋ + 1` (PyTorch's formula). Per image, `col = im2col(x)` is
//! `[c_in·kh·kw, oh·ow]` (rows ordered channel, kernel row, kernel column — the weight's own
//! order, so group `g` owns a contiguous band of rows), and
//! - convolution: `y = W·col + b`, `dW = Σ_images g·colᵀ`, `dx = col2im(Wᵀ·g)`;
//! - transposed convolution is the same map run backwards (its weight is a convolution's from
//!   its output to its input): `y = col2im(Wᵀ·x) + b`, `dx = W·im2col(g)`,
//!   `dW = Σ_images x·im2col(g)ᵀ`.
//!
//! Images are independent: each is one task on the pool (its own im2col and GEMM, one thread),
//! and weight gradients are summed over images in a fixed order from per-image partials, so
//! results are bit-identical for any thread count.

use crate::engine::direct::{self, Taps};
use crate::engine::ops::{self, Op};
use crate::engine::{par, Float};

/// A convolution's geometry: from `(c_in, h, w)` to `(c_out, oh, ow)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv {
    pub c_in: usize,
    pub c_out: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride: usize,
    pub pad: usize,
    pub dil: usize,
    pub groups: usize,
    pub h: usize,
    pub w: usize,
    pub oh: usize,
    pub ow: usize,
}

impl Conv {
    /// A square-kernel convolution of `(c_in, h, w)` images; `None` if the output would be
    /// empty or the channels do not split into `groups`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        groups: usize,
        (h, w): (usize, usize),
    ) -> Option<Conv> {
        if groups == 0
            || !c_in.is_multiple_of(groups)
            || !c_out.is_multiple_of(groups)
            || stride == 0
            || dil == 0
        {
            return None;
        }
        let span = dil * (k.checked_sub(1)?) + 1;
        let out = |n: usize| (n + 2 * pad).checked_sub(span).map(|v| v / stride + 1);
        Some(Conv {
            c_in,
            c_out,
            kh: k,
            kw: k,
            stride,
            pad,
            dil,
            groups,
            h,
            w,
            oh: out(h).filter(|&v| v > 0)?,
            ow: out(w).filter(|&v| v > 0)?,
        })
    }

    /// The convolution whose backward map is the transposed convolution `c_in → c_out` on
    /// `(h, w)` images (PyTorch's `ConvTranspose2d`, output padding 0): its input is the
    /// transposed convolution's output, `((h − 1)s − 2p + d(k − 1) + 1)` on a side.
    #[allow(clippy::too_many_arguments)]
    pub fn transposed(
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        pad: usize,
        dil: usize,
        groups: usize,
        (h, w): (usize, usize),
    ) -> Option<Conv> {
        let side = |n: usize| {
            ((n.checked_sub(1)?) * stride + dil * (k.checked_sub(1)?) + 1).checked_sub(2 * pad)
        };
        let (oh, ow) = (side(h)?, side(w)?);
        let c = Conv::new(c_out, c_in, k, stride, pad, dil, groups, (oh, ow))?;
        (c.oh == h && c.ow == w).then_some(c)
    }

    /// Weight elements: `c_out · c_in/groups · kh · kw`.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.c_in / self.groups * self.kh * self.kw
    }
    /// One image's input elements.
    pub fn in_len(&self) -> usize {
        self.c_in * self.h * self.w
    }
    /// One image's output elements.
    pub fn out_len(&self) -> usize {
        self.c_out * self.oh * self.ow
    }
    /// One image's column buffer: `c_in·kh·kw × oh·ow`.
    pub fn col_len(&self) -> usize {
        self.c_in * self.kh * self.kw * self.oh * self.ow
    }
    /// Columns of one group's GEMM (`c_in/groups · kh · kw`).
    fn k_group(&self) -> usize {
        self.c_in / self.groups * self.kh * self.kw
    }

    /// The direct kernel's view of this convolution's forward map (one group), when it runs
    /// here: stride 1, square kernel, f32 on AVX-512, output rows a multiple of 16.
    fn direct_forward<F: Float>(&self) -> Option<Taps> {
        let t = Taps {
            c_in: self.c_in / self.groups,
            k: self.kh,
            dil: self.dil,
            off: -(self.pad as isize),
            in_hw: (self.h, self.w),
            out_hw: (self.oh, self.ow),
        };
        (self.stride == 1 && self.kh == self.kw && direct::available::<F>(&t)).then_some(t)
    }

    /// The same for the input gradient of a stride-1 convolution: a correlation of `g` with the
    /// flipped, transposed kernel (`dx[ci, y, x] = Σ W[co, ci, a, b]·g[co, y − a·d + p, x − b·d
    /// + p]`, so tap `a′ = k − 1 − a` sits at offset `p − (k − 1)·d`).
    fn direct_input_grad<F: Float>(&self) -> Option<Taps> {
        let t = Taps {
            c_in: self.c_out / self.groups,
            k: self.kh,
            dil: self.dil,
            off: self.pad as isize - ((self.kh - 1) * self.dil) as isize,
            in_hw: (self.oh, self.ow),
            out_hw: (self.h, self.w),
        };
        (self.stride == 1 && self.kh == self.kw && direct::available::<F>(&t)).then_some(t)
    }

    /// Elements of the per-image column buffer `forward`/`backward` need for `n` images: none
    /// when the direct kernels run every pass (f32 on AVX-512, stride 1, output rows of 16).
    pub fn cols_len<F: Float>(&self, n: usize) -> usize {
        if self.direct_forward::<F>().is_some() && self.direct_input_grad::<F>().is_some() {
            0
        } else {
            n * self.col_len()
        }
    }

    /// The weights packed for the direct kernel, group by group: as stored (forward), or
    /// flipped and transposed to `[c_in/g][c_out/g][k][k]` per group (input gradient). `buf`
    /// holds `2·weight_len` (the packed weights, then the flip's scratch); returns the first.
    fn pack_into<'b, F: Float>(&self, wt: &[F], flipped: bool, buf: &'b mut [F]) -> &'b [F] {
        let (cig, cog, kk) = (
            self.c_in / self.groups,
            self.c_out / self.groups,
            self.kh * self.kw,
        );
        let kg = cig * kk;
        let (out, flip) = buf.split_at_mut(self.weight_len());
        for g in 0..self.groups {
            let w = &wt[g * cog * kg..(g + 1) * cog * kg];
            let dst = &mut out[g * cog * kg..(g + 1) * cog * kg];
            if flipped {
                for co in 0..cog {
                    for ci in 0..cig {
                        for t in 0..kk {
                            flip[(ci * cog + co) * kk + (kk - 1 - t)] = w[(co * cig + ci) * kk + t];
                        }
                    }
                }
                direct::pack(&flip[..cog * kg], cig, cog * kk, dst);
            } else {
                direct::pack(w, cog, kg, dst);
            }
        }
        out
    }

    /// For kernel offset `a` along a side of `n` input pixels and `on` outputs: the outputs
    /// whose input pixel `o·s + a·d − p` lies inside, as `lo..hi`.
    fn valid(&self, a: usize, n: usize, on: usize) -> (usize, usize) {
        let off = (a * self.dil) as isize - self.pad as isize;
        let s = self.stride as isize;
        // o·s + off ≥ 0  ⇔  o ≥ ⌈−off/s⌉; o·s + off ≤ n − 1  ⇔  o ≤ ⌊(n − 1 − off)/s⌋.
        let lo = if off >= 0 { 0 } else { ((-off) + s - 1) / s };
        let hi = if (n as isize - 1 - off) < 0 {
            0
        } else {
            ((n as isize - 1 - off) / s + 1).min(on as isize)
        };
        (lo as usize, (hi.max(lo)) as usize)
    }

    /// `col ← im2col(x)` for one image `x: [c_in, h, w]`.
    pub fn im2col<F: Float>(&self, x: &[F], col: &mut [F]) {
        let (p, plane) = (self.oh * self.ow, self.h * self.w);
        for ci in 0..self.c_in {
            let xc = &x[ci * plane..(ci + 1) * plane];
            for a in 0..self.kh {
                let (ylo, yhi) = self.valid(a, self.h, self.oh);
                for b in 0..self.kw {
                    let (xlo, xhi) = self.valid(b, self.w, self.ow);
                    let r = (ci * self.kh + a) * self.kw + b;
                    let row = &mut col[r * p..(r + 1) * p];
                    // Rows of the output grid whose input row is padding are zero.
                    row[..ylo * self.ow].fill(F::zero());
                    row[yhi * self.ow..].fill(F::zero());
                    let base = b * self.dil;
                    for oy in ylo..yhi {
                        let iy = oy * self.stride + a * self.dil - self.pad;
                        let dst = &mut row[oy * self.ow..(oy + 1) * self.ow];
                        let src = &xc[iy * self.w..(iy + 1) * self.w];
                        dst[..xlo].fill(F::zero());
                        dst[xhi..].fill(F::zero());
                        if xlo < xhi {
                            if self.stride == 1 {
                                // One contiguous run: ox + base − pad for ox in xlo..xhi.
                                let s0 = xlo + base - self.pad;
                                dst[xlo..xhi].copy_from_slice(&src[s0..s0 + (xhi - xlo)]);
                            } else {
                                for (ox, d) in dst.iter_mut().enumerate().take(xhi).skip(xlo) {
                                    *d = src[ox * self.stride + base - self.pad];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// `x += col2im(col)` for one image: the adjoint of [`Conv::im2col`].
    pub fn col2im<F: Float>(&self, col: &[F], x: &mut [F]) {
        let (p, plane) = (self.oh * self.ow, self.h * self.w);
        for ci in 0..self.c_in {
            let xc = &mut x[ci * plane..(ci + 1) * plane];
            for a in 0..self.kh {
                let (ylo, yhi) = self.valid(a, self.h, self.oh);
                for b in 0..self.kw {
                    let (xlo, xhi) = self.valid(b, self.w, self.ow);
                    let r = (ci * self.kh + a) * self.kw + b;
                    let row = &col[r * p..(r + 1) * p];
                    let base = b * self.dil;
                    for oy in ylo..yhi {
                        let iy = oy * self.stride + a * self.dil - self.pad;
                        let src = &row[oy * self.ow..(oy + 1) * self.ow];
                        let dst = &mut xc[iy * self.w..(iy + 1) * self.w];
                        if xlo >= xhi {
                            continue;
                        }
                        if self.stride == 1 {
                            let s0 = xlo + base - self.pad;
                            for (d, &v) in dst[s0..s0 + (xhi - xlo)].iter_mut().zip(&src[xlo..xhi])
                            {
                                *d += v;
                            }
                        } else {
                            for (ox, &v) in src.iter().enumerate().take(xhi).skip(xlo) {
                                dst[ox * self.stride + base - self.pad] += v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// `y ← W·col` (+ `y` when `accumulate`) for one image, group by group.
    fn weight_times_col<F: Float>(&self, wt: &[F], col: &[F], y: &mut [F], accumulate: bool) {
        let (kg, cog, p) = (self.k_group(), self.c_out / self.groups, self.oh * self.ow);
        let beta = if accumulate { F::one() } else { F::zero() };
        for g in 0..self.groups {
            ops::gemm(
                Op::N,
                Op::N,
                cog,
                p,
                kg,
                F::one(),
                &wt[g * cog * kg..(g + 1) * cog * kg],
                &col[g * kg * p..(g + 1) * kg * p],
                beta,
                &mut y[g * cog * p..(g + 1) * cog * p],
            );
        }
    }

    /// `col ← Wᵀ·g` for one image (`g: [c_out, oh·ow]`), group by group.
    fn weight_t_times<F: Float>(&self, wt: &[F], g: &[F], col: &mut [F]) {
        let (kg, cog, p) = (self.k_group(), self.c_out / self.groups, self.oh * self.ow);
        for gi in 0..self.groups {
            ops::gemm(
                Op::T,
                Op::N,
                kg,
                p,
                cog,
                F::one(),
                &wt[gi * cog * kg..(gi + 1) * cog * kg],
                &g[gi * cog * p..(gi + 1) * cog * p],
                F::zero(),
                &mut col[gi * kg * p..(gi + 1) * kg * p],
            );
        }
    }

    /// `dw ← g·colᵀ` for one image (`g: [c_out, oh·ow]`), group by group.
    fn grad_weight<F: Float>(&self, g: &[F], col: &[F], dw: &mut [F]) {
        let (kg, cog, p) = (self.k_group(), self.c_out / self.groups, self.oh * self.ow);
        for gi in 0..self.groups {
            ops::gemm(
                Op::N,
                Op::T,
                cog,
                kg,
                p,
                F::one(),
                &g[gi * cog * p..(gi + 1) * cog * p],
                &col[gi * kg * p..(gi + 1) * kg * p],
                F::zero(),
                &mut dw[gi * cog * kg..(gi + 1) * cog * kg],
            );
        }
    }

    /// Convolution forward over `n` images: `y: [n, c_out, oh, ow] ← W ⋆ x + b`; `cols:
    /// [n, col_len]` keeps every image's im2col for the backward pass.
    pub fn forward<F: Float>(
        &self,
        n: usize,
        x: &[F],
        wt: &[F],
        bias: Option<&[F]>,
        y: &mut [F],
        cols: &mut [F],
    ) {
        let (il, ol, cl, p) = (
            self.in_len(),
            self.out_len(),
            self.col_len(),
            self.oh * self.ow,
        );
        if let Some(taps) = self.direct_forward::<F>() {
            // No columns: the weight gradient reads x itself.
            let (cig, cog, plane) = (taps.c_in, self.c_out / self.groups, self.h * self.w);
            let kg = self.k_group();
            // The packed weights live in a per-thread scratch: nothing is allocated per step.
            direct::with_scratch(2 * self.weight_len(), |buf: &mut [F]| {
                let wp = self.pack_into(wt, false, buf);
                par::for_items(n, par::rows(&mut y[..n * ol], ol), |i, yi| {
                    let xi = &x[i * il..(i + 1) * il];
                    for g in 0..self.groups {
                        direct::correlate(
                            &taps,
                            cog,
                            &xi[g * cig * plane..],
                            &wp[g * cog * kg..],
                            bias.map(|b| &b[g * cog..]),
                            &mut yi[g * cog * p..],
                        );
                    }
                });
            });
            return;
        }
        par::for_items(
            n,
            (
                par::rows(&mut y[..n * ol], ol),
                par::rows(&mut cols[..n * cl], cl),
            ),
            |i, (yi, col)| {
                self.im2col(&x[i * il..(i + 1) * il], col);
                self.weight_times_col(wt, col, yi, false);
                if let Some(b) = bias {
                    for (c, &bc) in b.iter().enumerate() {
                        for v in &mut yi[c * p..(c + 1) * p] {
                            *v += bc;
                        }
                    }
                }
            },
        );
    }

    /// Convolution backward over `n` images from `g = ∂L/∂y`, the forward's input `x` and its
    /// `cols`: overwrites `dw`, `db` and `dx` (when given). `cols` is overwritten (it holds
    /// `Wᵀ·g` afterwards; the direct kernels use neither); `partial: [n, weight_len]` is
    /// scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn backward<F: Float>(
        &self,
        n: usize,
        x: &[F],
        g: &[F],
        wt: &[F],
        cols: &mut [F],
        dw: &mut [F],
        db: Option<&mut [F]>,
        mut dx: Option<&mut [F]>,
        partial: &mut [F],
    ) {
        let (il, ol, cl, wl) = (
            self.in_len(),
            self.out_len(),
            self.col_len(),
            self.weight_len(),
        );
        if let Some(taps) = self.direct_forward::<F>() {
            let (cig, cog, kg) = (taps.c_in, self.c_out / self.groups, self.k_group());
            let (plane_in, plane) = (self.h * self.w, self.oh * self.ow);
            par::for_items(n, par::rows(&mut partial[..n * wl], wl), |i, pw| {
                let (xi, gi) = (&x[i * il..(i + 1) * il], &g[i * ol..(i + 1) * ol]);
                for gr in 0..self.groups {
                    direct::weight_grad(
                        &taps,
                        cog,
                        &xi[gr * cig * plane_in..],
                        &gi[gr * cog * plane..],
                        &mut pw[gr * cog * kg..],
                    );
                }
            });
        } else {
            par::for_items(
                n,
                (
                    par::rows(&mut partial[..n * wl], wl),
                    par::rows(&mut cols[..n * cl], cl),
                ),
                |i, (pw, col)| self.grad_weight(&g[i * ol..(i + 1) * ol], col, pw),
            );
        }
        sum_partials(&partial[..n * wl], dw);
        if let Some(db) = db {
            channel_sums(g, n, self.c_out, self.oh * self.ow, db);
        }
        if let (Some(dx), Some(taps)) = (dx.as_deref_mut(), self.direct_input_grad::<F>()) {
            let (cog, cig) = (taps.c_in, self.c_in / self.groups);
            let (plane, kg) = (self.oh * self.ow, cog * self.kh * self.kw);
            direct::with_scratch(2 * self.weight_len(), |buf: &mut [F]| {
                let wp = self.pack_into(wt, true, buf);
                par::for_items(n, par::rows(&mut dx[..n * il], il), |i, dxi| {
                    let gi = &g[i * ol..(i + 1) * ol];
                    for gr in 0..self.groups {
                        direct::correlate(
                            &taps,
                            cig,
                            &gi[gr * cog * plane..],
                            &wp[gr * cig * kg..],
                            None,
                            &mut dxi[gr * cig * self.h * self.w..],
                        );
                    }
                });
            });
            return;
        }
        if let Some(dx) = dx {
            par::for_items(
                n,
                (
                    par::rows(&mut dx[..n * il], il),
                    par::rows(&mut cols[..n * cl], cl),
                ),
                |i, (dxi, col)| {
                    self.weight_t_times(wt, &g[i * ol..(i + 1) * ol], col);
                    dxi.fill(F::zero());
                    self.col2im(col, dxi);
                },
            );
        }
    }

    /// Transposed-convolution forward (this geometry's backward map): `x: [n, c_out, oh, ow]`
    /// in, `y: [n, c_in, h, w] ← col2im(Wᵀ·x) + b`; `cols: [n, col_len]` scratch.
    pub fn transposed_forward<F: Float>(
        &self,
        n: usize,
        x: &[F],
        wt: &[F],
        bias: Option<&[F]>,
        y: &mut [F],
        cols: &mut [F],
    ) {
        let (il, ol, cl, plane) = (
            self.in_len(),
            self.out_len(),
            self.col_len(),
            self.h * self.w,
        );
        par::for_items(
            n,
            (
                par::rows(&mut y[..n * il], il),
                par::rows(&mut cols[..n * cl], cl),
            ),
            |i, (yi, col)| {
                self.weight_t_times(wt, &x[i * ol..(i + 1) * ol], col);
                match bias {
                    Some(b) => {
                        for (c, &bc) in b.iter().enumerate() {
                            yi[c * plane..(c + 1) * plane].fill(bc);
                        }
                    }
                    None => yi.fill(F::zero()),
                }
                self.col2im(col, yi);
            },
        );
    }

    /// Transposed-convolution backward from `g: [n, c_in, h, w]` and the forward's input `x:
    /// [n, c_out, oh, ow]`: overwrites `dw`, `db` and `dx` (`[n, c_out, oh, ow]`, when given);
    /// `cols` and `partial` are scratch.
    #[allow(clippy::too_many_arguments)]
    pub fn transposed_backward<F: Float>(
        &self,
        n: usize,
        g: &[F],
        x: &[F],
        wt: &[F],
        cols: &mut [F],
        dw: &mut [F],
        db: Option<&mut [F]>,
        dx: Option<&mut [F]>,
        partial: &mut [F],
    ) {
        let (il, ol, cl, wl) = (
            self.in_len(),
            self.out_len(),
            self.col_len(),
            self.weight_len(),
        );
        // col = im2col(g); dW (as this geometry's weight) = x·colᵀ.
        par::for_items(
            n,
            (
                par::rows(&mut partial[..n * wl], wl),
                par::rows(&mut cols[..n * cl], cl),
            ),
            |i, (pw, col)| {
                self.im2col(&g[i * il..(i + 1) * il], col);
                self.grad_weight(&x[i * ol..(i + 1) * ol], col, pw);
            },
        );
        sum_partials(&partial[..n * wl], dw);
        if let Some(db) = db {
            channel_sums(g, n, self.c_in, self.h * self.w, db);
        }
        if let Some(dx) = dx {
            par::for_items(
                n,
                (
                    par::rows(&mut dx[..n * ol], ol),
                    par::rows(&mut cols[..n * cl], cl),
                ),
                |_, (dxi, col)| self.weight_times_col(wt, col, dxi, false),
            );
        }
    }
}

/// `out ← Σ_i partial[i]` in image order (the same sum for any thread count).
fn sum_partials<F: Float>(partial: &[F], out: &mut [F]) {
    let len = out.len();
    out.copy_from_slice(&partial[..len]);
    for p in partial.chunks_exact(len).skip(1) {
        for (o, &v) in out.iter_mut().zip(p) {
            *o += v;
        }
    }
}

/// `out[c] ← Σ_{i, pixel} g[i, c, pixel]` over `n` images of `c` channels of `plane` pixels.
pub fn channel_sums<F: Float>(g: &[F], n: usize, c: usize, plane: usize, out: &mut [F]) {
    for (ch, o) in out.iter_mut().enumerate().take(c) {
        let mut acc = F::zero();
        for i in 0..n {
            acc += ops::sum(&g[(i * c + ch) * plane..(i * c + ch + 1) * plane]);
        }
        *o = acc;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Rng;

    fn rand(n: usize, rng: &mut Rng) -> Vec<f64> {
        (0..n).map(|_| rng.normal()).collect()
    }

    /// Direct (six nested loops) convolution, PyTorch's definition, for one image.
    fn direct(c: &Conv, x: &[f64], wt: &[f64], b: &[f64]) -> Vec<f64> {
        let (cig, cog) = (c.c_in / c.groups, c.c_out / c.groups);
        let mut y = vec![0.0; c.out_len()];
        for co in 0..c.c_out {
            let g = co / cog;
            for oy in 0..c.oh {
                for ox in 0..c.ow {
                    let mut s = b[co];
                    for ci in 0..cig {
                        for a in 0..c.kh {
                            for bb in 0..c.kw {
                                let iy = (oy * c.stride + a * c.dil) as isize - c.pad as isize;
                                let ix = (ox * c.stride + bb * c.dil) as isize - c.pad as isize;
                                if iy < 0 || ix < 0 || iy >= c.h as isize || ix >= c.w as isize {
                                    continue;
                                }
                                let xv =
                                    x[((g * cig + ci) * c.h + iy as usize) * c.w + ix as usize];
                                s += wt[((co * cig + ci) * c.kh + a) * c.kw + bb] * xv;
                            }
                        }
                    }
                    y[(co * c.oh + oy) * c.ow + ox] = s;
                }
            }
        }
        y
    }

    fn geometries() -> Vec<Conv> {
        vec![
            Conv::new(3, 4, 3, 1, 1, 1, 1, (5, 6)).unwrap(),
            Conv::new(4, 6, 3, 2, 1, 1, 2, (7, 5)).unwrap(),
            Conv::new(2, 2, 3, 1, 2, 2, 2, (6, 6)).unwrap(),
            Conv::new(3, 2, 2, 2, 0, 1, 1, (4, 6)).unwrap(),
            Conv::new(2, 3, 1, 1, 0, 1, 1, (3, 5)).unwrap(),
            Conv::new(2, 4, 5, 3, 2, 1, 1, (9, 8)).unwrap(),
        ]
    }

    /// im2col + GEMM agrees with the direct sum (stride, padding, dilation, groups, odd
    /// sizes).
    #[test]
    fn forward_matches_the_direct_sum() {
        let mut rng = Rng::new(1);
        for c in geometries() {
            let n = 2;
            let x = rand(n * c.in_len(), &mut rng);
            let wt = rand(c.weight_len(), &mut rng);
            let b = rand(c.c_out, &mut rng);
            let mut y = vec![0.0; n * c.out_len()];
            let mut cols = vec![0.0; n * c.col_len()];
            c.forward(n, &x, &wt, Some(&b), &mut y, &mut cols);
            for i in 0..n {
                let want = direct(&c, &x[i * c.in_len()..(i + 1) * c.in_len()], &wt, &b);
                for (a, e) in y[i * c.out_len()..(i + 1) * c.out_len()].iter().zip(&want) {
                    assert!((a - e).abs() < 1e-12, "{c:?}: {a} vs {e}");
                }
            }
        }
    }

    /// col2im is im2col's adjoint: ⟨im2col(x), c⟩ = ⟨x, col2im(c)⟩.
    #[test]
    fn col2im_is_the_adjoint_of_im2col() {
        let mut rng = Rng::new(2);
        for c in geometries() {
            let x = rand(c.in_len(), &mut rng);
            let cv = rand(c.col_len(), &mut rng);
            let mut col = vec![0.0; c.col_len()];
            c.im2col(&x, &mut col);
            let mut back = vec![0.0; c.in_len()];
            c.col2im(&cv, &mut back);
            let lhs: f64 = col.iter().zip(&cv).map(|(a, b)| a * b).sum();
            let rhs: f64 = x.iter().zip(&back).map(|(a, b)| a * b).sum();
            assert!((lhs - rhs).abs() < 1e-10 * lhs.abs().max(1.0), "{c:?}");
        }
    }

    /// Loss L = Σ r ⊙ y with a fixed random r: the analytic gradients of the convolution and
    /// of the transposed convolution against central differences, for weights, bias and input.
    #[test]
    fn gradients_match_finite_differences() {
        let mut rng = Rng::new(3);
        let h = 1e-6;
        for c in geometries() {
            let n = 2;
            for transposed in [false, true] {
                let (xin, xout) = if transposed {
                    (c.out_len(), c.in_len())
                } else {
                    (c.in_len(), c.out_len())
                };
                let bias_len = if transposed { c.c_in } else { c.c_out };
                let x = rand(n * xin, &mut rng);
                let wt = rand(c.weight_len(), &mut rng);
                let b = rand(bias_len, &mut rng);
                let r = rand(n * xout, &mut rng);
                let run = |x: &[f64], wt: &[f64], b: &[f64]| -> f64 {
                    let mut y = vec![0.0; n * xout];
                    let mut cols = vec![0.0; n * c.col_len()];
                    if transposed {
                        c.transposed_forward(n, x, wt, Some(b), &mut y, &mut cols);
                    } else {
                        c.forward(n, x, wt, Some(b), &mut y, &mut cols);
                    }
                    y.iter().zip(&r).map(|(a, b)| a * b).sum()
                };
                let mut y = vec![0.0; n * xout];
                let mut cols = vec![0.0; n * c.col_len()];
                let (mut dw, mut db, mut dx) = (
                    vec![0.0; c.weight_len()],
                    vec![0.0; bias_len],
                    vec![0.0; n * xin],
                );
                let mut partial = vec![0.0; n * c.weight_len()];
                if transposed {
                    c.transposed_forward(n, &x, &wt, Some(&b), &mut y, &mut cols);
                    c.transposed_backward(
                        n,
                        &r,
                        &x,
                        &wt,
                        &mut cols,
                        &mut dw,
                        Some(&mut db),
                        Some(&mut dx),
                        &mut partial,
                    );
                } else {
                    c.forward(n, &x, &wt, Some(&b), &mut y, &mut cols);
                    c.backward(
                        n,
                        &x,
                        &r,
                        &wt,
                        &mut cols,
                        &mut dw,
                        Some(&mut db),
                        Some(&mut dx),
                        &mut partial,
                    );
                }
                let check = |name: &str, analytic: &[f64], bump: &dyn Fn(usize, f64) -> f64| {
                    for (i, &a) in analytic.iter().enumerate() {
                        let fd = (bump(i, h) - bump(i, -h)) / (2.0 * h);
                        assert!(
                            (a - fd).abs() < 1e-6 * (1.0 + fd.abs()),
                            "{c:?} transposed={transposed} {name}[{i}]: {a} vs {fd}"
                        );
                    }
                };
                check("w", &dw, &|i, e| {
                    let mut w2 = wt.clone();
                    w2[i] += e;
                    run(&x, &w2, &b)
                });
                check("b", &db, &|i, e| {
                    let mut b2 = b.clone();
                    b2[i] += e;
                    run(&x, &wt, &b2)
                });
                check("x", &dx, &|i, e| {
                    let mut x2 = x.clone();
                    x2[i] += e;
                    run(&x2, &wt, &b)
                });
            }
        }
    }

    /// One convolution forward and backward over `n` images with `∂L/∂y = r`: `[y, dw, db, dx]`.
    fn pass<F: Float>(c: &Conv, n: usize, x: &[F], wt: &[F], b: &[F], r: &[F]) -> [Vec<F>; 4] {
        let mut y = vec![F::zero(); n * c.out_len()];
        let mut cols = vec![F::zero(); n * c.col_len()];
        let (mut dw, mut db, mut dx) = (
            vec![F::zero(); c.weight_len()],
            vec![F::zero(); c.c_out],
            vec![F::zero(); n * c.in_len()],
        );
        let mut partial = vec![F::zero(); n * c.weight_len()];
        c.forward(n, x, wt, Some(b), &mut y, &mut cols);
        c.backward(
            n,
            x,
            r,
            wt,
            &mut cols,
            &mut dw,
            Some(&mut db),
            Some(&mut dx),
            &mut partial,
        );
        [y, dw, db, dx]
    }

    /// The f32 direct kernel (stride 1, output rows of 16) gives the f64 im2col path's forward
    /// output and gradients to f32 rounding, with groups, dilation and no padding (whose input
    /// gradient, 18 wide, takes the im2col path).
    #[test]
    fn f32_direct_path_matches_the_f64_path() {
        let mut rng = Rng::new(4);
        for c in [
            Conv::new(3, 16, 3, 1, 1, 1, 1, (5, 16)).unwrap(),
            Conv::new(4, 26, 3, 1, 2, 2, 2, (4, 32)).unwrap(),
            Conv::new(2, 5, 3, 1, 0, 1, 1, (6, 18)).unwrap(),
            Conv::new(16, 1, 1, 1, 0, 1, 1, (2, 16)).unwrap(),
        ] {
            let n = 3;
            let x = rand(n * c.in_len(), &mut rng);
            let wt = rand(c.weight_len(), &mut rng);
            let b = rand(c.c_out, &mut rng);
            let r = rand(n * c.out_len(), &mut rng);
            let f32s = |v: &[f64]| v.iter().map(|&a| a as f32).collect::<Vec<f32>>();
            let want = pass(&c, n, &x, &wt, &b, &r);
            let [y, dw, db, dx] = pass(&c, n, &f32s(&x), &f32s(&wt), &f32s(&b), &f32s(&r));
            for (name, got, want) in [
                ("y", &y, &want[0]),
                ("dw", &dw, &want[1]),
                ("db", &db, &want[2]),
                ("dx", &dx, &want[3]),
            ] {
                for (i, (&g, &e)) in got.iter().zip(want.iter()).enumerate() {
                    assert!(
                        (g as f64 - e).abs() < 1e-4 * (1.0 + e.abs()),
                        "{c:?} {name}[{i}]: {g} vs {e}"
                    );
                }
            }
        }
    }

    /// PyTorch's output sizes: Conv2d(k=3, s=2, p=1, d=1) on 7 → 4; ConvTranspose2d(k=2, s=2)
    /// on 5 → 10.
    #[test]
    fn output_sizes_follow_pytorch() {
        let c = Conv::new(1, 1, 3, 2, 1, 1, 1, (7, 7)).unwrap();
        assert_eq!((c.oh, c.ow), (4, 4));
        let t = Conv::transposed(4, 2, 2, 2, 0, 1, 1, (5, 5)).unwrap();
        assert_eq!(
            (t.h, t.w, t.oh, t.ow, t.c_in, t.c_out),
            (10, 10, 5, 5, 2, 4)
        );
        assert!(
            Conv::new(3, 4, 3, 1, 0, 1, 2, (5, 5)).is_none(),
            "3 channels in 2 groups"
        );
    }
}
