//! Direct (implicit-GEMM) stride-1 correlation for AVX-512, f32: the convolution's forward pass
//! and its input gradient without an im2col buffer.
//!
//! Why: by im2col, a 16-channel 3×3 convolution of a 64×64 image writes a 144×4096 column
//! matrix, the GEMM packs it again and reads it a third time, for only 16 FMAs per element: the
//! step was memory-bound at ~45 GFLOP/s. Here the micro-kernel loads its B operand straight from
//! the image: for output pixels `o … o + 15` of one row and kernel tap `(a, b)`, the inputs are
//! 16 consecutive pixels of input row `oy + a·d + off`, shifted by `b·d + off` — one masked
//! unaligned load, whose mask zeroes the padding (AVX-512 masked loads do not touch masked-off
//! lanes). The register tile is 12 output channels × 32 pixels (two such loads), as in
//! `sgemm`; the weights are packed once per call into `[tile][r][12]`.
//!
//! Every output element is one chain of FMAs over `r = (ci, a, b)` in order, then `+ bias`:
//! the same for any tiling or thread count.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;

use super::Float;

/// Output channels per register tile.
const MR: usize = 12;

thread_local! {
    /// Per-thread scratch, so that no pass allocates: the packed weights ([`with_scratch`]),
    /// the tap tables and the weight gradient's carried sums.
    static SCRATCH: RefCell<Vec<f64>> = const { RefCell::new(Vec::new()) };
    static TAPS: RefCell<Vec<(isize, u16, isize, u16)>> = const { RefCell::new(Vec::new()) };
    static TABLE: RefCell<Vec<(isize, u16)>> = const { RefCell::new(Vec::new()) };
    static ACC: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on `len` elements of this thread's scratch (grown when needed, kept between calls;
/// contents unspecified). A nested call gets a fresh buffer.
pub fn with_scratch<F: Float, R>(len: usize, f: impl FnOnce(&mut [F]) -> R) -> R {
    SCRATCH.with(|cell| {
        let Ok(mut buf) = cell.try_borrow_mut() else {
            return f(&mut vec![F::zero(); len]);
        };
        // f64 storage holds either float type: Float is implemented for f32 and f64 only,
        // both at most 8 bytes wide and aligned.
        let words = (len * std::mem::size_of::<F>()).div_ceil(8);
        if buf.len() < words {
            buf.resize(words, 0.0);
        }
        // SAFETY: the buffer holds at least `len·size_of::<F>()` initialized bytes, aligned to
        // 8 ≥ align_of::<F>(), and any bit pattern is a valid f32 or f64; the RefCell borrow
        // keeps it exclusive for `f`'s duration.
        let view = unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr() as *mut F, len) };
        f(view)
    })
}

/// Runs `f` on this thread's buffer `key`, cleared and filled with `len` copies of `fill`.
fn with_buf<T: Copy, R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<T>>>,
    len: usize,
    fill: T,
    f: impl FnOnce(&mut [T]) -> R,
) -> R {
    key.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            buf.resize(len, fill);
            f(&mut buf)
        }
        Err(_) => f(&mut vec![fill; len]),
    })
}

/// One stride-1 correlation `y[co, oy, ox] = bias[co] + Σ_(ci, a, b) W[co, ci, a, b] ·
/// x[ci, oy + a·dil + off, ox + b·dil + off]`, zero outside the `in_hw` image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taps {
    /// Input channels read.
    pub c_in: usize,
    /// Square kernel side.
    pub k: usize,
    pub dil: usize,
    /// Offset of tap 0 (a convolution's `−pad`).
    pub off: isize,
    pub in_hw: (usize, usize),
    pub out_hw: (usize, usize),
}

impl Taps {
    /// Reduction length `c_in·k·k`.
    pub fn depth(&self) -> usize {
        self.c_in * self.k * self.k
    }
}

/// Whether [`correlate`] runs for this dtype and geometry: f32 on an AVX-512 CPU, with output
/// rows a multiple of 16 pixels (one vector never spans two rows).
pub fn available<F: Float>(t: &Taps) -> bool {
    F::IS_F32 && super::sgemm::avx512() && t.out_hw.1.is_multiple_of(16) && t.k > 0
}

/// The convolution kernel f32 runs here, with the cache sizes it was blocked for, as benchmark
/// figures name it.
pub fn describe() -> String {
    let caches = format!(
        "L1d {} KiB, L2 {} KiB",
        super::sgemm::l1d_bytes() >> 10,
        super::sgemm::l2_bytes() >> 10
    );
    if super::sgemm::avx512() {
        format!(
            "cloudchamber AVX-512 direct (implicit GEMM: 12 channels × 32 pixels forward and input \
             gradient, 8 channels × 3 taps weight gradient; {caches}) for stride-1 convolutions \
             with rows of 16k pixels, im2col + GEMM otherwise"
        )
    } else {
        format!("im2col + {} ({caches})", super::gemm_kernel(true))
    }
}

/// Packs `w: [c_out, depth]` (row-major) into `dst` as [`correlate`] reads it: 12-row tiles,
/// each `[depth][rows]`.
pub fn pack<F: Float>(w: &[F], c_out: usize, depth: usize, dst: &mut [F]) {
    assert!(w.len() >= c_out * depth && dst.len() >= c_out * depth);
    for t0 in (0..c_out).step_by(MR) {
        let rows = MR.min(c_out - t0);
        let tile = &mut dst[t0 * depth..(t0 + rows) * depth];
        for r in 0..depth {
            for i in 0..rows {
                tile[r * rows + i] = w[(t0 + i) * depth + r];
            }
        }
    }
}

/// `y: [c_out, out_h·out_w] ← correlation of x: [c_in, in_h·in_w]` with the weights `wp` packed
/// by [`pack`] (+ `bias[c_out]`). One thread (callers split images over the pool).
///
/// Panics unless [`available`] holds and the buffers have their sizes.
pub fn correlate<F: Float>(
    t: &Taps,
    c_out: usize,
    x: &[F],
    wp: &[F],
    bias: Option<&[F]>,
    y: &mut [F],
) {
    let (ih, iw) = t.in_hw;
    let (oh, ow) = t.out_hw;
    let depth = t.depth();
    assert!(
        available::<F>(t),
        "direct correlation is not available here"
    );
    assert!(
        x.len() >= t.c_in * ih * iw
            && wp.len() >= c_out * depth
            && y.len() >= c_out * oh * ow
            && bias.is_none_or(|b| b.len() >= c_out),
        "direct correlation: buffer too small"
    );
    let kk = t.k * t.k;
    let plane = oh * ow;
    // Per 32-pixel tile: for each half and tap, the offset into an input plane and the mask of
    // lanes inside the image.
    with_buf(&TAPS, kk, (0isize, 0u16, 0isize, 0u16), |taps| {
        for p0 in (0..plane).step_by(32) {
            for (h, half) in [p0, p0 + 16].into_iter().enumerate() {
                for a in 0..t.k {
                    for b in 0..t.k {
                        let (mut off, mut mask) = (0isize, 0u16);
                        if half < plane {
                            let (oy, ox) = ((half / ow) as isize, (half % ow) as isize);
                            let iy = oy + (a * t.dil) as isize + t.off;
                            let ix = ox + (b * t.dil) as isize + t.off;
                            if iy >= 0 && iy < ih as isize {
                                mask = lanes_inside(ix, iw);
                                off = iy * iw as isize + ix;
                            }
                        }
                        let e = &mut taps[a * t.k + b];
                        if h == 0 {
                            (e.0, e.1) = (off, mask);
                        } else {
                            (e.2, e.3) = (off, mask);
                        }
                    }
                }
            }
            let store = [0xffffu16, if p0 + 16 < plane { 0xffff } else { 0 }];
            for t0 in (0..c_out).step_by(MR) {
                let rows = MR.min(c_out - t0);
                let tile = Tile {
                    a: wp[t0 * depth..].as_ptr() as *const f32,
                    x: x.as_ptr() as *const f32,
                    plane_in: ih * iw,
                    c_in: t.c_in,
                    taps,
                    y: y[t0 * plane + p0..].as_mut_ptr() as *mut f32,
                    ldy: plane,
                    bias: bias.map(|b| b[t0..].as_ptr() as *const f32),
                    store,
                };
                // SAFETY: F is f32 (`available`), so the casts are identities. The asserts above
                // bound the reads: A holds `rows·depth` floats from `t0·depth`; every unmasked lane
                // of an x load lies inside channel ci's plane (the masks were built from the image
                // bounds); y's tile rows `t0 + i` at pixels `p0 … p0 + 31` are inside `[c_out,
                // plane]`, the second half stored only when it exists.
                unsafe { micro(rows, &tile) };
            }
        }
    });
}

/// `dw: [c_out, depth] ←` the weight gradient of the correlation `t` for one image: `dw[co, (ci,
/// a, b)] = Σ_pixels g[co, p] · x[ci, p shifted by tap (a, b)]`, from `x: [c_in, in_h·in_w]`
/// and `g = ∂L/∂y: [c_out, out_h·out_w]`. One thread.
///
/// The register tile is 8 output channels × 3 taps: per 16 output pixels, 8 loads of g, 3
/// masked loads of shifted x and 24 FMAs, over every pixel of the image; then a horizontal sum
/// per weight (the same order for any thread count). No column matrix is built.
pub fn weight_grad<F: Float>(t: &Taps, c_out: usize, x: &[F], g: &[F], dw: &mut [F]) {
    // Pixel blocks whose 8 rows of g fill half the L1 (48 vectors on a 48 KiB L1: 1.38× on a
    // 64×64 image, measured); a plane up to a third larger stays whole (blocking a 32×32 plane
    // in 48 + 16 vectors cost 8%).
    let block = (super::sgemm::l1d_bytes() / 2 / (WG_CO * 64)).max(8);
    let block = if t.out_hw.0 * t.out_hw.1 / 16 <= block * 4 / 3 {
        usize::MAX
    } else {
        block
    };
    weight_grad_blocked(t, c_out, x, g, dw, block)
}

/// [`weight_grad`] with `block` vectors per pixel block.
fn weight_grad_blocked<F: Float>(
    t: &Taps,
    c_out: usize,
    x: &[F],
    g: &[F],
    dw: &mut [F],
    block: usize,
) {
    let (ih, iw) = t.in_hw;
    let (oh, ow) = t.out_hw;
    let (depth, kk, plane) = (t.depth(), t.k * t.k, oh * ow);
    assert!(
        available::<F>(t),
        "direct correlation is not available here"
    );
    assert!(
        x.len() >= t.c_in * ih * iw && g.len() >= c_out * plane && dw.len() >= c_out * depth,
        "direct weight gradient: buffer too small"
    );
    // Per 16-pixel vector and tap: the offset into an input plane and the mask of lanes inside
    // the image (0 for a row outside it).
    let vectors = plane / 16;
    with_buf(&TABLE, vectors * kk, (0isize, 0u16), |table| {
        for v in 0..vectors {
            let (oy, ox) = (((v * 16) / ow) as isize, ((v * 16) % ow) as isize);
            for a in 0..t.k {
                for b in 0..t.k {
                    let iy = oy + (a * t.dil) as isize + t.off;
                    let ix = ox + (b * t.dil) as isize + t.off;
                    let mask = if iy >= 0 && iy < ih as isize {
                        lanes_inside(ix, iw)
                    } else {
                        0
                    };
                    table[v * kk + a * t.k + b] = (iy * iw as isize + ix, mask);
                }
            }
        }
        // Pixels go in blocks of `block` vectors, whose rows of g stay in L1 while every tap tile
        // passes over them; each tile's 24 accumulators are kept in `acc` between blocks.
        let blocks = vectors.div_ceil(block);
        let r_tiles = depth.div_ceil(WG_R);
        let acc_len = if blocks > 1 {
            r_tiles * WG_CO * WG_R * 16
        } else {
            0
        };
        with_buf(&ACC, acc_len, 0.0f32, |acc| {
            for co0 in (0..c_out).step_by(WG_CO) {
                let cos = WG_CO.min(c_out - co0);
                for blk in 0..blocks {
                    let vs = blk * block..((blk + 1) * block).min(vectors);
                    for (ti, r0) in (0..depth).step_by(WG_R).enumerate() {
                        let rs = WG_R.min(depth - r0);
                        let mut taps = [(0usize, 0usize); WG_R];
                        for (j, tap) in taps.iter_mut().enumerate().take(rs) {
                            *tap = ((r0 + j) / kk, (r0 + j) % kk);
                        }
                        let tile = WgTile {
                            g: g[co0 * plane..].as_ptr() as *const f32,
                            ldg: plane,
                            x: x.as_ptr() as *const f32,
                            plane_in: ih * iw,
                            taps,
                            table,
                            kk,
                            vectors: vs.clone(),
                            acc: if blocks > 1 {
                                acc[ti * WG_CO * WG_R * 16..].as_mut_ptr()
                            } else {
                                std::ptr::null_mut()
                            },
                            first: blk == 0,
                            last: blk + 1 == blocks,
                            out: dw[co0 * depth + r0..].as_mut_ptr() as *mut f32,
                            ld_out: depth,
                        };
                        // SAFETY: F is f32 (`available`). g's rows `co0 … co0 + cos` hold `plane =
                        // 16·vectors` floats each; every unmasked lane of an x load lies inside channel
                        // ci's plane (the table's masks come from the image bounds, ci < c_in); `acc`
                        // holds this tile's `WG_CO·WG_R` vectors whenever it is read; the outputs
                        // `dw[co0 + i, r0 + j]` for i < cos, j < rs lie inside `[c_out, depth]`.
                        unsafe { wg_pick(cos, rs, &tile) };
                    }
                }
            }
        });
    });
}

/// Output channels and taps of the weight gradient's register tile.
const WG_CO: usize = 8;
const WG_R: usize = 3;

/// One weight-gradient tile's operands: `taps[j] = (ci, tap)` of reduction index `r0 + j`.
struct WgTile<'a> {
    g: *const f32,
    ldg: usize,
    x: *const f32,
    plane_in: usize,
    taps: [(usize, usize); WG_R],
    table: &'a [(isize, u16)],
    kk: usize,
    /// The block of 16-pixel vectors this call covers.
    vectors: std::ops::Range<usize>,
    /// `[WG_CO][WG_R][16]` accumulators carried between blocks (null with one block).
    acc: *mut f32,
    first: bool,
    last: bool,
    out: *mut f32,
    ld_out: usize,
}

unsafe fn wg_pick(cos: usize, rs: usize, t: &WgTile) {
    unsafe fn by_r<const CO: usize>(rs: usize, t: &WgTile) {
        match rs {
            1 => wg_kernel::<CO, 1>(t),
            2 => wg_kernel::<CO, 2>(t),
            3 => wg_kernel::<CO, 3>(t),
            _ => unreachable!("tile taps are 1..=WG_R"),
        }
    }
    match cos {
        1 => by_r::<1>(rs, t),
        2 => by_r::<2>(rs, t),
        3 => by_r::<3>(rs, t),
        4 => by_r::<4>(rs, t),
        5 => by_r::<5>(rs, t),
        6 => by_r::<6>(rs, t),
        7 => by_r::<7>(rs, t),
        8 => by_r::<8>(rs, t),
        _ => unreachable!("tile channels are 1..=WG_CO"),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn wg_kernel<const CO: usize, const R: usize>(t: &WgTile) {
    let mut acc = [[_mm512_setzero_ps(); R]; CO];
    let slot = |i: usize, j: usize| t.acc.add((i * WG_R + j) * 16);
    if !t.first {
        for (i, row) in acc.iter_mut().enumerate() {
            for (j, a) in row.iter_mut().enumerate() {
                *a = _mm512_loadu_ps(slot(i, j));
            }
        }
    }
    let mut xs = [std::ptr::null::<f32>(); R];
    for (j, x) in xs.iter_mut().enumerate() {
        *x = t.x.wrapping_add(t.taps[j].0 * t.plane_in);
    }
    for v in t.vectors.clone() {
        let mut gv = [_mm512_setzero_ps(); CO];
        for (i, gi) in gv.iter_mut().enumerate() {
            *gi = _mm512_loadu_ps(t.g.add(i * t.ldg + 16 * v));
        }
        let row = t.table.as_ptr().add(v * t.kk);
        for j in 0..R {
            let (off, mask) = *row.add(t.taps[j].1);
            // wrapping: a tap left of the image starts before the plane; masked-off lanes are
            // never read.
            let xv = _mm512_maskz_loadu_ps(mask, xs[j].wrapping_offset(off));
            for i in 0..CO {
                acc[i][j] = _mm512_fmadd_ps(gv[i], xv, acc[i][j]);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &a) in row.iter().enumerate() {
            if t.last {
                *t.out.add(i * t.ld_out + j) = _mm512_reduce_add_ps(a);
            } else {
                _mm512_storeu_ps(slot(i, j), a);
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn wg_kernel<const CO: usize, const R: usize>(_: &WgTile) {
    unreachable!("sgemm::available() is false off x86_64")
}

/// The mask of lanes `j < 16` with `0 ≤ ix + j < w`.
fn lanes_inside(ix: isize, w: usize) -> u16 {
    let lo = (-ix).clamp(0, 16);
    let hi = (w as isize - ix).clamp(0, 16);
    if hi <= lo {
        return 0;
    }
    (((1u32 << hi) - 1) & !((1u32 << lo) - 1)) as u16
}

/// One register tile's operands.
struct Tile<'a> {
    a: *const f32,
    x: *const f32,
    plane_in: usize,
    c_in: usize,
    taps: &'a [(isize, u16, isize, u16)],
    y: *mut f32,
    ldy: usize,
    bias: Option<*const f32>,
    store: [u16; 2],
}

unsafe fn micro(rows: usize, t: &Tile) {
    super::sgemm::by_rows!(rows, kernel, t)
}

/// Per tap: two masked loads of 16 input pixels, `R` broadcasts of the packed weights, `2R`
/// FMAs; then `+ bias` and a masked store.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(t: &Tile) {
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    let mut ap = t.a;
    for ci in 0..t.c_in {
        let xc = t.x.wrapping_add(ci * t.plane_in);
        for &(o0, m0, o1, m1) in t.taps {
            // wrapping: a tap left of the image starts before the plane; its masked-off lanes
            // are never read.
            let b0 = _mm512_maskz_loadu_ps(m0, xc.wrapping_offset(o0));
            let b1 = _mm512_maskz_loadu_ps(m1, xc.wrapping_offset(o1));
            for r in 0..R {
                let av = _mm512_set1_ps(*ap.add(r));
                acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
                acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
            }
            ap = ap.add(R);
        }
    }
    for r in 0..R {
        let row = t.y.add(r * t.ldy);
        let bias = t
            .bias
            .map_or(_mm512_setzero_ps(), |b| _mm512_set1_ps(*b.add(r)));
        for (h, acc) in [acc0[r], acc1[r]].into_iter().enumerate() {
            if t.store[h] != 0 {
                _mm512_mask_storeu_ps(row.add(16 * h), t.store[h], _mm512_add_ps(acc, bias));
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const R: usize>(_: &Tile) {
    unreachable!("sgemm::available() is false off x86_64")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The definition, in f64.
    fn reference(t: &Taps, c_out: usize, x: &[f32], w: &[f32], bias: &[f32]) -> Vec<f64> {
        let (ih, iw) = t.in_hw;
        let (oh, ow) = t.out_hw;
        let mut y = vec![0.0; c_out * oh * ow];
        for co in 0..c_out {
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut s = bias[co] as f64;
                    for ci in 0..t.c_in {
                        for a in 0..t.k {
                            for b in 0..t.k {
                                let iy = oy as isize + (a * t.dil) as isize + t.off;
                                let ix = ox as isize + (b * t.dil) as isize + t.off;
                                if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                                    continue;
                                }
                                let wv = w[((co * t.c_in + ci) * t.k + a) * t.k + b] as f64;
                                s += wv * x[(ci * ih + iy as usize) * iw + ix as usize] as f64;
                            }
                        }
                    }
                    y[(co * oh + oy) * ow + ox] = s;
                }
            }
        }
        y
    }

    #[test]
    fn matches_the_definition_over_taps_offsets_and_tails() {
        let cases = [
            // (c_in, c_out, k, dil, off, in_hw, out_hw)
            (3, 16, 3, 1, -1, (64, 64), (64, 64)),
            (1, 5, 3, 1, -1, (16, 16), (16, 16)),
            (4, 13, 3, 2, -2, (20, 16), (20, 16)),
            (2, 25, 1, 1, 0, (3, 16), (3, 16)),
            (2, 3, 5, 1, -2, (8, 32), (8, 32)),
            // Output grid unlike the input's: the input gradient of a valid convolution.
            (3, 4, 3, 1, -2, (6, 14), (8, 16)),
            // One 16-pixel row: the tile's second half is past the plane.
            (2, 12, 3, 1, -1, (1, 16), (1, 16)),
        ];
        for (ci, co, k, dil, off, in_hw, out_hw) in cases {
            let t = Taps {
                c_in: ci,
                k,
                dil,
                off,
                in_hw,
                out_hw,
            };
            if !available::<f32>(&t) {
                eprintln!("no AVX-512 on this CPU: the kernel is not used here");
                return;
            }
            let depth = t.depth();
            let x: Vec<f32> = (0..ci * in_hw.0 * in_hw.1)
                .map(|i| (i as f32 * 0.37).sin())
                .collect();
            let w: Vec<f32> = (0..co * depth).map(|i| (i as f32 * 0.91).cos()).collect();
            let bias: Vec<f32> = (0..co).map(|i| i as f32 * 0.1 - 0.5).collect();
            let mut wp = vec![0.0; co * depth];
            pack(&w, co, depth, &mut wp);
            let plane = out_hw.0 * out_hw.1;
            // One extra row of sentinels: nothing is written past the output.
            let mut y = vec![f32::NAN; co * plane + 16];
            correlate(&t, co, &x, &wp, Some(&bias), &mut y);
            let want = reference(&t, co, &x, &w, &bias);
            for (i, (&g, &e)) in y.iter().zip(&want).enumerate() {
                let tol = 1e-5 * (depth as f64).sqrt() * (1.0 + e.abs());
                assert!((g as f64 - e).abs() < tol, "{t:?} [{i}]: {g} vs {e}");
            }
            assert!(y[co * plane..].iter().all(|v| v.is_nan()));

            // The weight gradient of Σ r ⊙ y: dw[co, r] = Σ_p r[co, p]·(∂y[co, p]/∂w[co, r]),
            // against the definition's sums in f64.
            let rg: Vec<f32> = (0..co * plane).map(|i| (i as f32 * 0.53).sin()).collect();
            let mut dw = vec![f32::NAN; co * depth];
            weight_grad(&t, co, &x, &rg, &mut dw);
            let (ih, iw) = in_hw;
            for o in 0..co {
                for r in 0..depth {
                    let (c, a, b) = (r / (k * k), (r % (k * k)) / k, r % k);
                    let mut want = 0.0f64;
                    for p in 0..plane {
                        let (oy, ox) = ((p / out_hw.1) as isize, (p % out_hw.1) as isize);
                        let iy = oy + (a * dil) as isize + off;
                        let ix = ox + (b * dil) as isize + off;
                        if iy < 0 || ix < 0 || iy >= ih as isize || ix >= iw as isize {
                            continue;
                        }
                        want += rg[o * plane + p] as f64
                            * x[(c * ih + iy as usize) * iw + ix as usize] as f64;
                    }
                    let got = dw[o * depth + r] as f64;
                    let tol = 1e-5 * (plane as f64).sqrt() * (1.0 + want.abs());
                    assert!(
                        (got - want).abs() < tol,
                        "{t:?} dw[{o}, {r}]: {got} vs {want}"
                    );
                }
            }
        }
    }
}
