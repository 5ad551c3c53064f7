//! The engine's own single-precision GEMM for CPUs with AVX-512 (BLIS's loop structure:
//! Van Zee & van de Geijn, "BLIS: A Framework for Rapidly Instantiating BLAS Functionality",
//! ACM TOMS 2015).
//!
//! Why not a crate: `matrixmultiply` uses 8-wide (AVX2) tiles, and `gemm` needs a nightly
//! compiler for its AVX-512 kernels; on a core with two 512-bit FMA units both stop at about
//! half of the peak. The small GEMMs of attention (64×64×32) also paid `matrixmultiply`'s
//! packing allocations on every call. Here:
//! - `op(B)` is packed once per `KC`-deep block into 32-column panels (zero-padded), shared by
//!   all threads; `op(A)` is packed per 12-row tile into a thread-local buffer;
//! - the micro-kernel keeps a 12×32 tile of C in 24 zmm registers and does 24 FMAs per 2 loads
//!   of B and 12 broadcasts of A;
//! - the epilogue applies `α`, `β·C` and an optional bias broadcast over rows, so a linear
//!   layer needs no separate pass to initialise its output; ragged edges use masked loads and
//!   stores, so C is never touched outside `[m, n]`.
//!
//! Every element of C is the same chain of FMAs over `p` in order, followed by the same
//! epilogue, whichever tile or thread computes it: results are bit-identical for any thread
//! count (threads split C by rows).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

use super::pool;

/// Rows of the register tile.
const MR: usize = 12;
/// Columns of the register tile (two zmm registers).
const NR: usize = 32;
/// Depth of one packed block: a 12×256 A tile (12 KiB) stays in L1 beside the B panel row.
const KC: usize = 128;

/// Whether this CPU runs the AVX-512 kernel (detected once).
pub fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::is_x86_feature_detected!("avx512f")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// A raw pointer that may cross to pool workers: every task writes a disjoint row block of C
/// and only reads the shared operands.
#[derive(Clone, Copy)]
struct Shared<T>(T);
unsafe impl<T> Sync for Shared<T> {}
unsafe impl<T> Send for Shared<T> {}

thread_local! {
    static PACK_A: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    static PACK_B: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// `C ← α·op(A)·op(B) + β·C + 1·biasᵀ` with `op(A)[i, p] = a[i·rsa + p·csa]` (`[m, k]`),
/// `op(B)[p, j] = b[p·rsb + j·csb]` (`[k, n]`), `C[i, j] = c[i·ldc + j]`, and `bias[j]` added to
/// every row when given. With `β = 0` the old C is not read (NaN included).
///
/// # Safety
/// [`available`] must be true; every index the strides reach for `i < m, p < k, j < n` must lie
/// inside its buffer; `c` must not alias `a`, `b` or `bias`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    bias: Option<*const f32>,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                let cv = c.add(i * ldc + j);
                let old = if beta == 0.0 { 0.0 } else { beta * *cv };
                *cv = old + bias.map_or(0.0, |bv| *bv.add(j));
            }
        }
        return;
    }
    // A is read in place when one of its strides is 1 (the kernel broadcasts from it);
    // otherwise each tile is packed into `[kc][MR]`, which is the `rsa = 1` layout.
    let a_direct = rsa == 1 || csa == 1;
    // B is read in place when its rows are contiguous; otherwise (a transposed B) it is packed
    // once per `KC` block into 32-column panels, shared by all threads.
    let b_direct = false;
    let panels = n.div_ceil(NR);
    PACK_B.with(|pb| {
        let mut pb = pb.borrow_mut();
        let need = if b_direct { 0 } else { panels * KC.min(k) * NR };
        // 16 floats of slack so the panels can start on a cache line: an unaligned 64-byte
        // load spans two lines and halves the kernel's load throughput.
        if pb.len() < need + 16 {
            pb.resize(need + 16, 0.0);
        }
        let skew = pb.as_ptr().align_offset(64);
        let bp = Shared(pb.as_mut_ptr().add(skew));
        let tasks = threads.min(m.div_ceil(MR)).max(1);
        let rows = pool::split(m, tasks, MR);
        let (a, c, bias) = (Shared(a), Shared(c), Shared(bias));
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            let b_block = b.offset(p0 as isize * rsb);
            if !b_direct {
                pack_b(kc, n, b_block, rsb, csb, bp.0);
            }
            let b_block = Shared(b_block);
            let first = p0 == 0;
            let body = |t: usize| {
                let r = rows(t);
                let (a, c, bias, bp, b_block) = (a, c, bias, bp, b_block);
                PACK_A.with(|pa| {
                    let mut pa = pa.borrow_mut();
                    if !a_direct && pa.len() < MR * KC {
                        pa.resize(MR * KC, 0.0);
                    }
                    // Panel-major: one B panel (kc×32, 16 KiB) stays in L1 while the task's
                    // A tiles stream past it from L2 (12 floats per step of p, against 32
                    // of B the other way round).
                    for jp in 0..panels {
                        let j0 = jp * NR;
                        let (bt, b_ps) = if b_direct {
                            (b_block.0.add(j0), rsb)
                        } else {
                            (bp.0.add(jp * kc * NR) as *const f32, NR as isize)
                        };
                        let mut i0 = r.start;
                        while i0 < r.end {
                            let mr = MR.min(r.end - i0);
                            let a_tile = a.0.offset(i0 as isize * rsa + p0 as isize * csa);
                            // (pointer, stride between rows, stride between p) as the kernel
                            // reads A.
                            let (ap, a_rs, a_ps) = if a_direct {
                                (a_tile, rsa, csa)
                            } else {
                                pack_a(kc, mr, a_tile, rsa, csa, pa.as_mut_ptr());
                                (pa.as_ptr(), 1, mr as isize)
                            };
                            let tile = Tile {
                                kc,
                                a: ap,
                                a_rs,
                                a_ps,
                                b: bt,
                                b_ps,
                                c: c.0.add(i0 * ldc + j0),
                                ldc,
                                cols: NR.min(n - j0),
                                alpha,
                                beta,
                                bias: bias.0.map(|bv| bv.add(j0)),
                                first,
                            };
                            micro(mr, a_rs == 1, &tile);
                            i0 += mr;
                        }
                    }
                });
            };
            pool::run(tasks, &body);
        }
    });
}

/// `op(B)[0..kc, 0..n]` (a transposed B: `rsb = 1`) into panels `[n/NR][kc][NR]`, zero past
/// column `n`.
unsafe fn pack_b(kc: usize, n: usize, b: *const f32, rsb: isize, csb: isize, dst: *mut f32) {
    for jp in 0..n.div_ceil(NR) {
        let j0 = jp * NR;
        let cols = NR.min(n - j0);
        let panel = dst.add(jp * kc * NR);
        if csb == 1 {
            for p in 0..kc {
                let src = b.offset(p as isize * rsb + j0 as isize);
                copy_row(src, panel.add(p * NR), cols);
            }
            continue;
        }
        for jj in 0..NR {
            if jj < cols {
                let src = b.offset((j0 + jj) as isize * csb);
                for p in 0..kc {
                    *panel.add(p * NR + jj) = *src.offset(p as isize * rsb);
                }
            } else {
                for p in 0..kc {
                    *panel.add(p * NR + jj) = 0.0;
                }
            }
        }
    }
}

/// `dst[0..32] = src[0..cols]`, zero-padded.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_row(src: *const f32, dst: *mut f32, cols: usize) {
    let live = |lo: usize| ((1u32 << cols.saturating_sub(lo).min(16)) - 1) as __mmask16;
    _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(live(0), src));
    _mm512_storeu_ps(dst.add(16), _mm512_maskz_loadu_ps(live(16), src.add(16)));
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn copy_row(_: *const f32, _: *mut f32, _: usize) {
    unreachable!("sgemm::available() is false off x86_64")
}

/// `op(A)[0..mr, 0..kc]` with general strides into `[kc][mr]`.
unsafe fn pack_a(kc: usize, mr: usize, a: *const f32, rsa: isize, csa: isize, dst: *mut f32) {
    for p in 0..kc {
        for r in 0..mr {
            *dst.add(p * mr + r) = *a.offset(r as isize * rsa + p as isize * csa);
        }
    }
}

/// One register tile's operands and epilogue: `A[r, p]` at `a + r·a_rs + p·a_ps`, row `p` of
/// the B panel at `b + p·b_ps` (32 columns, of which `cols` are live).
struct Tile {
    kc: usize,
    a: *const f32,
    a_rs: isize,
    a_ps: isize,
    b: *const f32,
    b_ps: isize,
    c: *mut f32,
    ldc: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
    bias: Option<*const f32>,
    /// The first `KC` block applies β and the bias; later ones add onto C.
    first: bool,
}

unsafe fn micro(mr: usize, a_col_major: bool, t: &Tile) {
    macro_rules! pick {
        ($($r:literal)*) => {
            match (mr, a_col_major) {
                $(($r, true) => kernel::<$r, true>(t),
                  ($r, false) => kernel::<$r, false>(t),)*
                _ => unreachable!("tile rows are 1..=MR"),
            }
        };
    }
    pick!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// The 12×32 register tile (or fewer rows): `COLMAJOR` reads the 12 A values of one `p` from
/// one contiguous run (`a_rs = 1`), otherwise from 12 row pointers (`a_ps = 1`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize, const COLMAJOR: bool>(t: &Tile) {
    let mask = |lo: usize| -> __mmask16 {
        let live = t.cols.saturating_sub(lo).min(16);
        ((1u32 << live) - 1) as __mmask16
    };
    let masks = [mask(0), mask(16)];
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    let mut rows = [t.a; R];
    for (r, row) in rows.iter_mut().enumerate() {
        *row = t.a.offset(r as isize * t.a_rs);
    }
    let mut bp = t.b;
    let mut ap = t.a;
    for p in 0..t.kc {
        let b0 = _mm512_maskz_loadu_ps(masks[0], bp);
        let b1 = _mm512_maskz_loadu_ps(masks[1], bp.add(16));
        for r in 0..R {
            let av = if COLMAJOR {
                _mm512_set1_ps(*ap.add(r))
            } else {
                _mm512_set1_ps(*rows[r].add(p))
            };
            acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
        }
        bp = bp.offset(t.b_ps);
        ap = ap.offset(t.a_ps);
    }
    let alpha = _mm512_set1_ps(t.alpha);
    let beta = _mm512_set1_ps(t.beta);
    for r in 0..R {
        let row = t.c.add(r * t.ldc);
        for (h, acc) in [acc0[r], acc1[r]].into_iter().enumerate() {
            let mk = masks[h];
            if mk == 0 {
                continue;
            }
            let dst = row.add(16 * h);
            let mut v = _mm512_mul_ps(acc, alpha);
            if t.first {
                if t.beta != 0.0 {
                    v = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mk, dst), v);
                }
                if let Some(bias) = t.bias {
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, bias.add(16 * h)));
                }
            } else {
                v = _mm512_add_ps(_mm512_maskz_loadu_ps(mk, dst), v);
            }
            _mm512_mask_storeu_ps(dst, mk, v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn kernel<const R: usize, const COLMAJOR: bool>(_: &Tile) {
    unreachable!("sgemm::available() is false off x86_64")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// f64 reference of the whole contract (strides, β, bias).
    #[allow(clippy::too_many_arguments)]
    fn reference(
        m: usize,
        n: usize,
        k: usize,
        alpha: f32,
        a: &[f32],
        (rsa, csa): (usize, usize),
        b: &[f32],
        (rsb, csb): (usize, usize),
        beta: f32,
        c: &[f32],
        ldc: usize,
        bias: Option<&[f32]>,
    ) -> Vec<f64> {
        let mut out: Vec<f64> = c.iter().map(|&v| v as f64).collect();
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a[i * rsa + p * csa] as f64 * b[p * rsb + j * csb] as f64)
                    .sum();
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta as f64 * c[i * ldc + j] as f64
                };
                out[i * ldc + j] = alpha as f64 * s + old + bias.map_or(0.0, |b| b[j] as f64);
            }
        }
        out
    }

    #[test]
    fn matches_f64_reference_over_shapes_strides_and_epilogues() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: the kernel is not used here");
            return;
        }
        let shapes = [
            (1, 1, 1),
            (12, 32, 7),
            (13, 33, 257),
            (25, 70, 300),
            (64, 64, 32),
            (7, 5, 600),
            (100, 17, 3),
        ];
        for (si, &(m, n, k)) in shapes.iter().enumerate() {
            for &(ta, tb) in &[(false, false), (true, false), (false, true), (true, true)] {
                // A stored [m, k] (or [k, m] when transposed) inside a wider buffer.
                let (lda, ldb, ldc) = (k.max(m) + 3, k.max(n) + 5, n + 2);
                let a: Vec<f32> = (0..lda * k.max(m))
                    .map(|i| ((i * 7 + si) as f32 * 0.37).sin())
                    .collect();
                let b: Vec<f32> = (0..ldb * k.max(n))
                    .map(|i| ((i * 3 + si) as f32 * 0.91).cos())
                    .collect();
                let (sa, sb) = (
                    if ta { (1, lda) } else { (lda, 1) },
                    if tb { (1, ldb) } else { (ldb, 1) },
                );
                let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
                for (alpha, beta, with_bias, threads) in [
                    (1.0, 0.0, false, 1),
                    (0.5, 1.0, true, 2),
                    (2.0, -0.5, false, 3),
                    (1.0, 0.0, true, 2),
                ] {
                    let c0: Vec<f32> = (0..m * ldc).map(|i| (i as f32 * 0.13).sin()).collect();
                    let mut c = c0.clone();
                    if beta == 0.0 {
                        for (i, v) in c.iter_mut().enumerate() {
                            if i % ldc < n {
                                *v = f32::NAN;
                            }
                        }
                    }
                    let bias = with_bias.then_some(&bias[..]);
                    unsafe {
                        sgemm(
                            m,
                            n,
                            k,
                            alpha,
                            a.as_ptr(),
                            sa.0 as isize,
                            sa.1 as isize,
                            b.as_ptr(),
                            sb.0 as isize,
                            sb.1 as isize,
                            beta,
                            c.as_mut_ptr(),
                            ldc,
                            bias.map(|b| b.as_ptr()),
                            threads,
                        )
                    };
                    let want = reference(m, n, k, alpha, &a, sa, &b, sb, beta, &c0, ldc, bias);
                    for i in 0..m {
                        for j in 0..ldc {
                            let (got, w) = (c[i * ldc + j] as f64, want[i * ldc + j]);
                            if j >= n {
                                // Outside [m, n]: untouched.
                                assert_eq!(c[i * ldc + j].to_bits(), c0[i * ldc + j].to_bits());
                                continue;
                            }
                            let tol = 1e-5 * (k as f64).sqrt() * (1.0 + w.abs());
                            assert!(
                                (got - w).abs() < tol,
                                "{m}x{n}x{k} ta={ta} tb={tb} α={alpha} β={beta} [{i},{j}]: {got} vs {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Row splits over any thread count give bit-identical C (the engine's promise).
    #[test]
    fn any_thread_count_is_bit_identical() {
        if !available() {
            return;
        }
        let (m, n, k) = (203, 45, 530);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        let run = |threads| {
            let mut c = vec![0.5f32; m * n];
            unsafe {
                sgemm(
                    m,
                    n,
                    k,
                    1.0,
                    a.as_ptr(),
                    k as isize,
                    1,
                    b.as_ptr(),
                    n as isize,
                    1,
                    1.0,
                    c.as_mut_ptr(),
                    n,
                    None,
                    threads,
                )
            };
            c
        };
        let one = run(1);
        for t in [2, 3, 7] {
            assert!(one
                .iter()
                .zip(run(t))
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }
}

#[cfg(test)]
mod speed {
    use super::*;
    use std::time::Instant;

    #[test]
    #[ignore]
    fn kernel_speed() {
        let kc = 128;
        let a = vec![0.5f32; 12 * kc + 16];
        let b = vec![0.25f32; 32 * kc + 16];
        let mut c = vec![0f32; 12 * 32];
        let ao = a.as_ptr().align_offset(64);
        let bo = b.as_ptr().align_offset(64);
        let tile = Tile {
            kc,
            a: unsafe { a.as_ptr().add(ao) },
            a_rs: 1,
            a_ps: 12,
            b: unsafe { b.as_ptr().add(bo) },
            b_ps: 32,
            c: c.as_mut_ptr(),
            ldc: 32,
            cols: 32,
            alpha: 1.0,
            beta: 0.0,
            bias: None,
            first: true,
        };
        let reps = 200_000;
        let t = Instant::now();
        for _ in 0..reps {
            unsafe { micro(12, true, &tile) };
        }
        let gf = 2.0 * (12 * 32 * kc * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
        println!("kernel 12x32x{kc} in L1: {gf:.0} GFLOP/s");
    }

    /// Not a test: `cargo test --release --lib sgemm_speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn sgemm_speed() {
        for &(name, m, n, k, ta, tb) in &[
            ("qkv", 2048, 384, 128, false, true),
            ("fc", 2048, 512, 128, false, true),
            ("proj2", 2048, 128, 512, false, true),
            ("dX", 2048, 128, 384, false, false),
            ("dW", 384, 128, 2048, true, false),
            ("dW2", 128, 512, 2048, true, false),
            ("att", 64, 64, 32, false, true),
            ("tileT", 12, 32, 128, true, false),
            ("tileN", 12, 32, 128, false, false),
            ("sq", 96, 128, 128, true, false),
            ("sqN", 96, 128, 128, false, false),
            ("pv", 64, 32, 64, false, false),
        ] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0f32; m * n];
            let (rsa, csa) = if ta { (1, m as isize) } else { (k as isize, 1) };
            let (rsb, csb) = if tb { (1, k as isize) } else { (n as isize, 1) };
            let reps = (2e9 / (2.0 * (m * n * k) as f64)) as usize;
            let t = Instant::now();
            for _ in 0..reps {
                unsafe {
                    sgemm(
                        m,
                        n,
                        k,
                        1.0,
                        a.as_ptr(),
                        rsa,
                        csa,
                        b.as_ptr(),
                        rsb,
                        csb,
                        0.0,
                        c.as_mut_ptr(),
                        n,
                        None,
                        1,
                    )
                }
            }
            let gf = 2.0 * (m * n * k * reps) as f64 / t.elapsed().as_secs_f64() / 1e9;
            println!("{name:>6} {m}x{n}x{k} ta={ta} tb={tb}: {gf:.0} GFLOP/s");
        }
    }
}
