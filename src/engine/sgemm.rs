//! The engine's own single-precision GEMM for CPUs with AVX-512 or AVX2+FMA (BLIS's loop structure:
//! Van Zee & van de Geijn, "BLIS: A Framework for Rapidly Instantiating BLAS Functionality",
//! ACM TOMS 2015).
//!
//! Why not a crate: `matrixmultiply` uses 8-wide (AVX2) tiles, and `gemm` needs a nightly
//! compiler for its AVX-512 kernels; on a core with two 512-bit FMA units both stop near half
//! of the peak. The small per-head GEMMs of attention also paid `matrixmultiply`'s packing
//! allocations on every call. Here:
//! - `op(B)` is packed per `KC`-deep block into 32-column panels (zero-padded, cache-line
//!   aligned); `op(A)` is packed per `MC`-row block into `[kc][12]` per tile (4×4 SSE
//!   transposes from a row-major A, one masked copy per step from a column-major one; the AVX2
//!   kernel reads a column-major A in place);
//! - the micro-kernel keeps a 12×32 tile of C in 24 zmm registers and does 24 FMAs per 2 loads
//!   of B and 12 broadcasts of A (186 GFLOP/s in L1 on the reference machine, ~120–150 on the
//!   GPT's shapes);
//! - the epilogue applies `α`, `β·C` and an optional bias broadcast over rows, so a linear
//!   layer needs no separate pass to initialise its output; ragged edges use masked loads and
//!   stores, so C is never touched outside `[m, n]`;
//! - threads split the column panels (each packing its own B) or the rows (sharing B);
//! - [`sgemm_fused`]'s epilogue also does a layer's elementwise work on each tile while it is
//!   in registers ([`Extra`]): Adam's step on a weight from its gradient (which then never
//!   reaches memory), a layer's tanh beside its pre-activation, or the gradient through a tanh;
//!   each saves a pass over memory.
//!
//! Every element of C is the same chain of FMAs over `p` in order, followed by the same
//! epilogue, whichever tile or thread computes it: results are bit-identical for any thread
//! count, and (for finite operands) between the AVX-512 kernels and their AVX2 twins ([`avx2`]:
//! 6×16 tiles for 16 ymm registers, over operands packed to that size in the same `KC`
//! blocks), so a model's GEMMs give the same bits on either. (The direct convolution has no
//! AVX2 twin: a convolution sums otherwise there.)

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;
use std::cell::RefCell;
use std::sync::OnceLock;

use super::pool::{self, SendPtr};

#[cfg(target_arch = "x86_64")]
pub(in crate::engine) mod avx2;

/// Rows of the AVX-512 register tile.
const MR: usize = 12;
/// Columns of the AVX-512 register tile (two zmm registers).
const NR: usize = 32;
/// Rows of the AVX2 register tile (12 ymm accumulators of 6×16), with packed A tiles and B
/// panels of its own size: a 12×256 A tile beside a 256×32 B panel is 44 KiB, more than the
/// 32 KiB L1 of most AVX2 cores, where 6×256 and 256×16 take 22.
const MR_AVX2: usize = 6;
/// Columns of the AVX2 register tile (two ymm registers).
const NR_AVX2: usize = 16;
/// Rows of A per L2-resident block (a multiple of `MR` and of `MR_AVX2`).
const MC: usize = 120;
/// Depth of one packed block: a 12×256 A tile (12 KiB) stays in L1 beside the B panel row.
pub const KC: usize = 256;

/// The instruction sets the kernels come in: the same `KC` blocks and per-element arithmetic
/// in both (tiles and packing of each one's size), so the same bits ([`avx2`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F: 12×32 register tiles in 24 zmm accumulators.
    Avx512,
    /// AVX2 and FMA (no AVX-512): 6×16 register tiles in 12 ymm accumulators.
    Avx2,
}

/// The kernels' instruction set on this CPU (detected once); `None` where it has neither
/// AVX-512F nor AVX2 with FMA (the portable path, `matrixmultiply`, runs there).
pub fn isa() -> Option<Isa> {
    static ISA: OnceLock<Option<Isa>> = OnceLock::new();
    *ISA.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx512f") {
                return Some(Isa::Avx512);
            }
            if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                return Some(Isa::Avx2);
            }
            None
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            None
        }
    })
}

/// Whether this CPU runs the engine's own kernels ([`isa`]: AVX-512F, or AVX2 with FMA).
pub fn available() -> bool {
    isa().is_some()
}

/// Whether this CPU runs the AVX-512 kernels (the direct convolution, which has no AVX2 twin,
/// and the choice between each kernel and its twin check this).
pub fn avx512() -> bool {
    isa() == Some(Isa::Avx512)
}

#[cfg(test)]
thread_local! {
    /// Tests run the AVX2 kernels on an AVX-512 CPU, to compare the two bit for bit.
    static FORCE_AVX2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the micro-kernels run as AVX-512 here (else as AVX2).
#[inline]
fn zmm() -> bool {
    #[cfg(test)]
    if FORCE_AVX2.with(|f| f.get()) {
        return false;
    }
    avx512()
}

/// Bytes of one core's L2 cache, from sysfs (`/sys/devices/system/cpu/cpu0/cache`), read once;
/// 1 MiB where it cannot be read (the smallest L2 of the AVX-512 cores: Skylake-SP to
/// Ice Lake-SP have 1–1.25 MiB, Sapphire Rapids 2 MiB, Zen 4 1 MiB).
pub fn l2_bytes() -> usize {
    static L2: OnceLock<usize> = OnceLock::new();
    *L2.get_or_init(|| cache_bytes(2).unwrap_or(1 << 20))
}

/// How the AVX-512 kernel asks for an Adam epilogue's operands (the weight and its two moments:
/// per row of a tile, 128-byte runs `ldc` floats apart, which the hardware prefetcher does not
/// follow) before the epilogue reads them. Chosen per vendor, each where it was measured; `bench`
/// names it with the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdamPrefetch {
    /// All of this tile's and the next one's lines, 144 prefetches into L1 at the start of each
    /// tile: on AMD CPUs (Zen 5: the reference MLP step's share of its GEMM ceiling from
    /// 89.3–92.1 to 91.2–92.6 %). On an Intel Xeon (family 6, model 167) it cost 2–3 points
    /// (85.2–85.9 against 87.2–88.3 % with none).
    Burst,
    /// The next tile's lines (the tile to the right, which the epilogue reaches a whole tile's
    /// sum later), asked for row by row in this tile's epilogue: the weight's into L1 (`T0`),
    /// the moments' non-temporally (`NTA`: they are read once a step, and in L2 they would push
    /// out the GEMMs' operands): elsewhere. On that Intel Xeon the step's share of its ceiling
    /// went from a median of 86.5–87.1 % to 88.4–88.7 % (two sets of 6 interleaved runs), where
    /// the same requests all into L1, or the moments' only, or two tiles ahead gained less.
    Ahead,
}

/// This CPU's [`AdamPrefetch`], read once.
pub fn adam_prefetch() -> AdamPrefetch {
    static WAY: OnceLock<AdamPrefetch> = OnceLock::new();
    *WAY.get_or_init(|| {
        let amd = std::fs::read_to_string("/proc/cpuinfo").is_ok_and(|info| {
            info.lines()
                .find(|l| l.starts_with("vendor_id"))
                .is_some_and(|l| l.contains("AuthenticAMD"))
        });
        if amd {
            AdamPrefetch::Burst
        } else {
            AdamPrefetch::Ahead
        }
    })
}

/// Bytes of one core's L1 data cache, read once; 32 KiB where it cannot be read (Skylake's;
/// Ice Lake and later have 48 KiB).
pub fn l1d_bytes() -> usize {
    static L1: OnceLock<usize> = OnceLock::new();
    *L1.get_or_init(|| cache_bytes(1).unwrap_or(32 << 10))
}

/// The size of cpu0's data (or unified) cache at `level`, from sysfs.
fn cache_bytes(level: u32) -> Option<usize> {
    let root = std::path::Path::new("/sys/devices/system/cpu/cpu0/cache");
    for entry in std::fs::read_dir(root).ok()?.flatten() {
        let read = |f: &str| std::fs::read_to_string(entry.path().join(f)).ok();
        let (Some(lv), Some(kind)) = (read("level"), read("type")) else {
            continue;
        };
        if lv.trim() != level.to_string() || kind.trim() == "Instruction" {
            continue;
        }
        let size = read("size")?;
        let size = size.trim();
        let (digits, unit) = size.split_at(size.find(|c: char| !c.is_ascii_digit())?);
        let k: usize = digits.parse().ok()?;
        return match unit {
            "K" => Some(k << 10),
            "M" => Some(k << 20),
            _ => None,
        };
    }
    None
}

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
    let ops = ((a, rsa, csa), (b, rsb, csb), (c, ldc));
    with_extra((m, n, k), alpha, ops, (beta, c), bias, Extra::None, threads);
}

/// [`sgemm`] with `β = 1` onto another buffer: `C ← α·op(A)·op(B) + S + 1·biasᵀ`, `S[i, j] =
/// src[i·ldc + j]` read where [`sgemm`] reads the old C (so the same bits as copying S into C
/// and calling it with `β = 1`): a residual branch added onto its stream, written to the next
/// stream's buffer without the copy (0.35 ms of the reference GPT's step on an Intel Xeon,
/// family 6 model 167).
///
/// # Safety
/// As for [`sgemm`]; and `src` holds `[m, ldc]` elements laid out as C, which `c` does not
/// alias.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_onto(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: (*const f32, isize, isize),
    b: (*const f32, isize, isize),
    src: *const f32,
    (c, ldc): (*mut f32, usize),
    bias: Option<*const f32>,
    threads: usize,
) {
    with_extra(
        (m, n, k),
        alpha,
        (a, b, (c, ldc)),
        (1.0, src),
        bias,
        Extra::None,
        threads,
    );
}

/// [`sgemm`] with the epilogue's `extra` work: what it and [`sgemm_fused`] run.
///
/// # Safety
/// As for [`sgemm_fused`].
#[allow(clippy::type_complexity)]
unsafe fn with_extra(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    ((a, rsa, csa), (b, rsb, csb), (c, ldc)): (
        (*const f32, isize, isize),
        (*const f32, isize, isize),
        (*mut f32, usize),
    ),
    (beta, src): (f32, *const f32),
    bias: Option<*const f32>,
    extra: Extra,
    threads: usize,
) {
    let op = Operands {
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        c,
        ldc,
        alpha,
        beta,
        src,
        bias,
        n,
        k,
        extra,
        zmm: zmm(),
    };
    run(&op, m, threads);
}

/// What a tile does besides storing C, once its last `KC` block is done ([`sgemm_fused`]).
#[derive(Clone, Copy)]
pub enum Extra {
    None,
    /// Adam's step ([`crate::optim::Coeffs::adam`]'s arithmetic) on the target from each
    /// element of C (a weight's gradient), which is not stored: the updated weight and moments
    /// are the tile's only output, and C is left holding the sum of the earlier `KC` blocks (or
    /// what it held, for a sum of one block). Nothing reads the gradient of a weight updated
    /// in its GEMM ([`crate::optim::Update::fused`]), and not writing its 4 bytes per weight
    /// took the reference MLP step from a median of 89.1 to 89.65 % of its GEMM ceiling, and
    /// from 88.95 to 89.7 %, on an Intel Xeon (family 6, model 167; two sets of 8 interleaved
    /// runs).
    Adam(AdamTarget),
    /// `tanh(C)` ([`super::fastmath::tanh_f32`], operation for operation) stored at the same
    /// offsets from this pointer: a tanh layer's activation beside its pre-activation.
    Tanh(*mut f32),
    /// As [`Extra::Tanh`], but C is not stored: the activation is the tile's only output (C is
    /// the sum's scratch, left unspecified), for a step whose pre-activations nothing reads.
    /// On an Intel Xeon (family 6, model 167) the reference MLP step went from a median of
    /// 89.9 to 90.9 % of its GEMM ceiling without those 4 bytes per unit and row (8
    /// interleaved runs each).
    TanhOnly(*mut f32),
    /// C multiplied by `1 − h²`, `h` at the same offsets from this pointer, before it is
    /// stored: the gradient through a tanh layer from its output.
    TanhSlope(*const f32),
}

impl Extra {
    /// The extra's operands from `[i, j]` of C on.
    unsafe fn at(self, i: usize, j: usize, ldc: usize) -> Self {
        match self {
            Extra::None => Extra::None,
            Extra::Adam(t) => Extra::Adam(t.at(i, j, ldc)),
            Extra::Tanh(h) => Extra::Tanh(h.add(i * ldc + j)),
            Extra::TanhOnly(h) => Extra::TanhOnly(h.add(i * ldc + j)),
            Extra::TanhSlope(h) => Extra::TanhSlope(h.add(i * ldc + j)),
        }
    }
}

/// Where [`Extra::Adam`] takes Adam's step: the weight `w` and its moments `m`, `v`, laid out
/// as C (`[i·ldc + j]`), and the step's constants (one tensor's, the same in every lane).
#[derive(Clone, Copy)]
pub struct AdamTarget {
    pub w: *mut f32,
    pub m: *mut f32,
    pub v: *mut f32,
    pub consts: *const super::lanes::AdamConsts,
}

impl AdamTarget {
    /// The target's elements from `[i, j]` of C on.
    unsafe fn at(self, i: usize, j: usize, ldc: usize) -> Self {
        let o = i * ldc + j;
        AdamTarget {
            w: self.w.add(o),
            m: self.m.add(o),
            v: self.v.add(o),
            ..self
        }
    }
}

/// [`sgemm`] with β = 0 and an epilogue that does `extra`'s work on each finished tile too (see
/// [`Extra`]): the same bits as the GEMM (bias included) followed by that work as a separate
/// pass (C itself not written for [`Extra::Adam`] and [`Extra::TanhOnly`]). `false`, having
/// done nothing, where the call would take the unpacked small path
/// (shapes that gain nothing from the fusion), or where a bias meets a sum of more than one
/// `KC` block (it would join the sum in another order): the caller does the steps itself.
///
/// # Safety
/// As for [`sgemm`]; and `extra`'s buffers hold `[m, ldc]` elements each, laid out as C, alias
/// no operand nor each other, and an Adam target's constants outlive the call.
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_fused(
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    (a, rsa, csa): (*const f32, isize, isize),
    (b, rsb, csb): (*const f32, isize, isize),
    bias: Option<*const f32>,
    (c, ldc): (*mut f32, usize),
    extra: Extra,
    threads: usize,
) -> bool {
    let (mr, nr) = if zmm() { (MR, NR) } else { (MR_AVX2, NR_AVX2) };
    let tasks = threads.min((n.div_ceil(nr)).max(m.div_ceil(mr))).max(1);
    let small = tasks == 1 && small_enough(m, n, k);
    if m == 0 || n == 0 || k == 0 || (bias.is_some() && k > KC) || small {
        return false;
    }
    let ops = ((a, rsa, csa), (b, rsb, csb), (c, ldc));
    with_extra((m, n, k), alpha, ops, (0.0, c), bias, extra, threads);
    true
}

/// [`sgemm`]'s body over `op` (`m` rows).
unsafe fn run(op: &Operands, m: usize, threads: usize) {
    let Operands {
        c,
        ldc,
        beta,
        bias,
        n,
        k,
        ..
    } = *op;
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                let cv = c.add(i * ldc + j);
                let old = if beta == 0.0 {
                    0.0
                } else {
                    beta * *op.src.add(i * ldc + j)
                };
                *cv = old + bias.map_or(0.0, |bv| *bv.add(j));
            }
        }
        return;
    }
    let (mr, nr) = (op.mr(), op.nr());
    let panels = n.div_ceil(nr);
    let tasks = threads.min(panels.max(m.div_ceil(mr))).max(1);
    // Threads split the column panels when A is column-major, B is the bigger operand
    // (n ≥ m: both have k rows) and there are enough panels: each packs its own panels of B
    // (the activations of a weight gradient), so nothing runs serially and there is one pool
    // call per GEMM. Otherwise they split the rows and share one packed B per `KC` block, so
    // the big A is read once rather than once per thread (the GPT's 512×128 MLP weight
    // gradient ran 16–20% faster so); the `MC`-row blocks go to whichever thread is free. A
    // weight gradient's `gᵀ` (column-major A) with more rows than columns, and any product over
    // several `KC` blocks, split their rows instead, each thread packing B for itself (below).
    if tasks == 1 && matches!(op.extra, Extra::None) && small_path_on() && small_enough(m, n, k) {
        small(op, m, k, Part::Full);
        return;
    }
    let split_panels =
        op.rsa == 1 && n >= m && (panels.is_multiple_of(tasks) || panels >= 3 * tasks);
    if tasks == 1 || split_panels {
        let split = pool::split(panels, tasks, 1);
        pool::run(tasks, &|t| {
            let mine = split(t);
            if mine.is_empty() {
                return;
            }
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                with_pack(&PACK_B, mine.len() * kc * nr, |bp| {
                    pack_b(op, p0, kc, mine.clone(), bp);
                    block(op, 0..m, mine.clone(), p0, kc, bp);
                });
            }
        });
    } else if (op.rsa == 1 || k > KC) && m.div_ceil(mr) >= 2 * tasks {
        // A weight gradient with more outputs than inputs (`dW = gᵀ·x`, its `k` the batch's
        // thousands of rows), or any product over several `KC` blocks, with two row tiles or
        // more per thread (fewer rows keep the shared B, packed by all threads): each thread
        // takes its share of the row tiles and packs all of B itself, `KC` block after block.
        // Sharing one packed B per block took two pool calls per block (16 for a 2048-row
        // batch) and left a thread idle on the odd `MC` block (the GPT's 384-row q/k/v gradient
        // went as 120+120+120+24 rows): its weight gradients took 2.09–2.19 ms a step against
        // 2.51–2.94, its input gradients over 384 and 512 outputs 1.62–1.67 and 2.10–2.15 ms
        // against 1.72–1.76 and 2.21–2.23 (3 paired runs each, Intel family 6 model 167).
        let tiles = m.div_ceil(mr);
        let split = pool::split(tiles, tasks, 1);
        pool::run(tasks, &|t| {
            let r = split(t);
            let rows = (r.start * mr).min(m)..(r.end * mr).min(m);
            if rows.is_empty() {
                return;
            }
            for p0 in (0..k).step_by(KC) {
                let kc = KC.min(k - p0);
                with_pack(&PACK_B, panels * kc * nr, |bp| {
                    pack_b(op, p0, kc, 0..panels, bp);
                    block(op, rows.clone(), 0..panels, p0, kc, bp);
                });
            }
        });
    } else {
        for p0 in (0..k).step_by(KC) {
            let kc = KC.min(k - p0);
            with_pack(&PACK_B, panels * kc * nr, |bp| {
                // The threads pack disjoint panel ranges of the shared B (serial, packing a
                // 1024×1024 weight took 6% of a 2-thread sampling run); the result is the same
                // bytes whoever packs them.
                if panels >= 2 * tasks {
                    let split = pool::split(panels, tasks, 1);
                    let shared = SendPtr(bp);
                    pool::run(tasks, &|t| {
                        let mine = split(t);
                        if !mine.is_empty() {
                            // SAFETY: each task writes panels `mine` only, at their offset in
                            // the `panels·kc·nr` buffer `with_pack` sized.
                            unsafe {
                                pack_b(
                                    op,
                                    p0,
                                    kc,
                                    mine.clone(),
                                    shared.get().add(mine.start * kc * nr),
                                )
                            };
                        }
                    });
                } else {
                    pack_b(op, p0, kc, 0..panels, bp);
                }
                let bp = SendPtr(bp);
                pool::run_items(m.div_ceil(MC), tasks, &|i| {
                    block(
                        op,
                        i * MC..((i + 1) * MC).min(m),
                        0..panels,
                        p0,
                        kc,
                        bp.get(),
                    )
                });
            });
        }
    }
}

/// Whether a one-thread call is small enough to skip packing: one `KC` block (so every element
/// is the same single chain of FMAs as the packed path computes) and operands that sit in L1/L2
/// anyway (a tiny MLP's 64×16×16 layers spent more in the packing machinery than in the FMAs).
fn small_enough(m: usize, n: usize, k: usize) -> bool {
    k <= KC && m.saturating_mul(n).saturating_mul(k) <= 1 << 18
}

#[cfg(test)]
thread_local! {
    /// Tests switch the small path off to compare it with the packed one.
    static SMALL_PATH: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Whether the small path may run: always, outside the tests that compare it with the packed
/// one (so a real call pays no thread-local lookup).
fn small_path_on() -> bool {
    #[cfg(test)]
    return SMALL_PATH.with(|s| s.get());
    #[cfg(not(test))]
    true
}

/// A small call without packing: A is broadcast from wherever its strides put it, B's rows are
/// read in place when row-major (masked loads at the ragged edge) and packed only when
/// transposed; only the 16-column halves that hold columns of C are computed. Per element the
/// arithmetic is the packed kernel's (FMAs over `p` in order from zero, then the same
/// epilogue), so results are bit-identical to it.
unsafe fn small(op: &Operands, m: usize, k: usize, part: Part) {
    let (mr_max, nr) = (op.mr(), op.nr());
    let panels = op.n.div_ceil(nr);
    let run = |b_of: &dyn Fn(usize) -> *const f32, b_ps: isize| {
        let mut i0 = 0;
        while i0 < m {
            let mr = mr_max.min(m - i0);
            // What the tile's rows need (see [`Part`]): columns `< end`, and `p` in `ks`.
            let (end, ks) = match part {
                Part::Full => (op.n, 0..k),
                Part::Lower => (op.n.min(i0 + mr), 0..k),
                Part::ALower => (op.n, 0..k.min(i0 + mr)),
                Part::AUpper => (op.n, i0.min(k)..k),
            };
            // On AVX2 (no mask registers) a `Lower` tile's last panel is computed whole where C
            // has the columns: its extra elements lie above the diagonal, which `Lower` leaves
            // free, and a 16-wide tile runs the unmasked kernel.
            let width = if part == Part::Lower && !op.zmm {
                op.n
            } else {
                end
            };
            for jp in 0..end.div_ceil(nr) {
                let j0 = jp * nr;
                let tile = SmallTile {
                    k: ks.len(),
                    a: op
                        .a
                        .offset(i0 as isize * op.rsa + ks.start as isize * op.csa),
                    a_rs: op.rsa,
                    a_ps: op.csa,
                    b: b_of(jp).offset(ks.start as isize * b_ps),
                    b_ps,
                    c: op.c.add(i0 * op.ldc + j0),
                    src: op.src.add(i0 * op.ldc + j0),
                    ldc: op.ldc,
                    cols: nr.min(width - j0),
                    alpha: op.alpha,
                    beta: op.beta,
                    bias: op.bias.map(|bv| bv.add(j0)),
                };
                small_micro(op.zmm, mr, &tile);
            }
            i0 += mr;
        }
    };
    if op.csb == 1 {
        run(&|jp| op.b.add(jp * nr), op.rsb);
    } else {
        with_pack(&PACK_B, panels * k * nr, |bp| {
            pack_b(op, 0, k, 0..panels, bp);
            run(&|jp| bp.add(jp * k * nr) as *const f32, nr as isize);
        });
    }
}

/// Which part of a product the small path computes. The causal parts serve attention, where
/// half of every product is known zeros: computing only the other half, each element is still
/// the same chain of FMAs from zero over the same `p` (a chain that skips only terms
/// `0·b` added to `+0`, or added after the last nonzero term, which leave it unchanged but for
/// the sign of an exact zero), so results equal the full product's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// All of C.
    Full,
    /// C's lower triangle, `j ≤ i` (the scores `q·kᵀ`, and `dy·vᵀ`): other elements are left
    /// as they were, or computed where they share a tile (on AVX2, a tile's rows of a 16-column
    /// panel) with needed ones.
    Lower,
    /// `op(A)` is lower-triangular (`A[i, p] = 0` for `p > i`: the probabilities in `P·v`,
    /// `dS·k`): row `i`'s sum stops after `p = i` (at the end of its tile of rows).
    ALower,
    /// `op(A)` is upper-triangular (`A[i, p] = 0` for `p < i`: `Pᵀ·dy`, `dSᵀ·q`): row `i`'s sum
    /// starts at `p = i` (at the start of its tile of rows).
    AUpper,
}

/// [`sgemm`] with `β = 0`, no bias and one thread, computing `part` of the product on the small
/// path (no packing when B is row-major). The caller checks `k ≤ KC` ([`causal_fits`]), so the
/// results equal [`sgemm`]'s (see [`Part`]).
///
/// # Safety
/// As for [`sgemm`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn sgemm_part(
    part: Part,
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    (a, rsa, csa): (*const f32, isize, isize),
    (b, rsb, csb): (*const f32, isize, isize),
    c: *mut f32,
    ldc: usize,
) {
    // Empty shapes need nothing special: no tiles, or tiles of an empty sum (zeros, as `sgemm`
    // writes with β = 0).
    let op = Operands {
        a,
        rsa,
        csa,
        b,
        rsb,
        csb,
        c,
        ldc,
        alpha,
        beta: 0.0,
        src: c,
        bias: None,
        n,
        k,
        extra: Extra::None,
        zmm: zmm(),
    };
    small(&op, m, k, part);
}

/// Whether [`sgemm_part`] computes exactly what [`sgemm`] would: one `KC` block.
pub fn causal_fits(k: usize) -> bool {
    k <= KC
}

/// One small tile: `A[r, p]` at `a + r·a_rs + p·a_ps`, row `p` of B's panel at `b + p·b_ps`.
struct SmallTile {
    k: usize,
    a: *const f32,
    a_rs: isize,
    a_ps: isize,
    b: *const f32,
    b_ps: isize,
    c: *mut f32,
    /// Where β's term reads C (C itself, or [`sgemm_onto`]'s source), laid out as C.
    src: *const f32,
    ldc: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
    bias: Option<*const f32>,
}

unsafe fn small_micro(zmm: bool, mr: usize, t: &SmallTile) {
    #[cfg(target_arch = "x86_64")]
    if !zmm {
        return avx2::small_micro(mr, t);
    }
    macro_rules! pick {
        ($($r:literal)*) => {
            match (mr, t.cols > 16) {
                $(($r, false) => small_kernel::<$r, 1>(t),
                  ($r, true) => small_kernel::<$r, 2>(t),)*
                _ => unreachable!("tile rows are 1..=MR"),
            }
        };
    }
    pick!(1 2 3 4 5 6 7 8 9 10 11 12)
}

/// [`kernel`] over `H` live 16-column halves, with A and B read through their strides.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn small_kernel<const R: usize, const H: usize>(t: &SmallTile) {
    let mask = |lo: usize| -> __mmask16 {
        let live = t.cols.saturating_sub(lo).min(16);
        ((1u32 << live) - 1) as __mmask16
    };
    let masks = [mask(0), mask(16)];
    let mut acc = [[_mm512_setzero_ps(); R]; H];
    let (mut ap, mut bp) = (t.a, t.b);
    for _ in 0..t.k {
        let mut bv = [_mm512_setzero_ps(); H];
        for (h, v) in bv.iter_mut().enumerate() {
            *v = _mm512_maskz_loadu_ps(masks[h], bp.wrapping_add(16 * h));
        }
        for r in 0..R {
            let av = _mm512_set1_ps(*ap.offset(r as isize * t.a_rs));
            for h in 0..H {
                acc[h][r] = _mm512_fmadd_ps(av, bv[h], acc[h][r]);
            }
        }
        bp = bp.wrapping_offset(t.b_ps);
        ap = ap.wrapping_offset(t.a_ps);
    }
    // The packed kernel's epilogue for a first (and only) `KC` block.
    let alpha = _mm512_set1_ps(t.alpha);
    let beta = _mm512_set1_ps(t.beta);
    for r in 0..R {
        let row = t.c.add(r * t.ldc);
        for (h, acc_h) in acc.iter().enumerate() {
            let mk = masks[h];
            if mk == 0 {
                continue;
            }
            let dst = row.add(16 * h);
            let mut v = _mm512_mul_ps(acc_h[r], alpha);
            if t.beta != 0.0 {
                let src = t.src.add(r * t.ldc + 16 * h);
                v = _mm512_fmadd_ps(beta, _mm512_maskz_loadu_ps(mk, src), v);
            }
            if let Some(bias) = t.bias {
                v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mk, bias.add(16 * h)));
            }
            _mm512_mask_storeu_ps(dst, mk, v);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn small_kernel<const R: usize, const H: usize>(_: &SmallTile) {
    unreachable!("sgemm::available() is false off x86_64")
}

/// The operands of one call, as [`sgemm`] received them.
struct Operands {
    a: *const f32,
    rsa: isize,
    csa: isize,
    b: *const f32,
    rsb: isize,
    csb: isize,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
    /// Where β's term reads C: C itself, or [`sgemm_onto`]'s source (laid out as C).
    src: *const f32,
    bias: Option<*const f32>,
    n: usize,
    k: usize,
    /// The epilogue's extra work.
    extra: Extra,
    /// The call's kernels are AVX-512 ([`zmm`], read once per call: the packing and the
    /// kernels must agree on the tile, whichever thread runs them).
    zmm: bool,
}

impl Operands {
    /// Rows of the call's register tile (and of its packed A tiles).
    fn mr(&self) -> usize {
        if self.zmm {
            MR
        } else {
            MR_AVX2
        }
    }
    /// Columns of the call's register tile (and of its packed B panels).
    fn nr(&self) -> usize {
        if self.zmm {
            NR
        } else {
            NR_AVX2
        }
    }
}
// SAFETY: the pointers address the caller's A, B (read only) and C (and an epilogue's Adam
// target or tanh output, laid out as C), which outlive the parallel region; tasks write
// disjoint row or column blocks of C (and of the target or output).
unsafe impl Sync for Operands {}

/// Runs `f` on this thread's buffer `key`, grown to `len` floats and aligned to a cache line
/// (an unaligned 64-byte load spans two lines and halves the kernel's load throughput).
unsafe fn with_pack<R>(
    key: &'static std::thread::LocalKey<RefCell<Vec<f32>>>,
    len: usize,
    f: impl FnOnce(*mut f32) -> R,
) -> R {
    key.with(|buf| {
        let mut buf = buf.borrow_mut();
        if buf.len() < len + 16 {
            buf.resize(len + 16, 0.0);
        }
        let skew = buf.as_ptr().align_offset(64);
        f(buf.as_mut_ptr().add(skew))
    })
}

/// C's rows `rows` × panels `panels` for the `kc`-deep block at `p0`; `bp` holds those panels
/// of B packed (`[panel][kc][nr]`, from `panels.start`; `nr`, `mr`: the call's tile). A is read
/// in place when it is column-major (`rsa = 1`: a tile's `mr` values of one `p` are
/// contiguous); otherwise the block's row tiles are packed into that layout first.
unsafe fn block(
    op: &Operands,
    rows: std::ops::Range<usize>,
    panels: std::ops::Range<usize>,
    p0: usize,
    kc: usize,
    bp: *mut f32,
) {
    if rows.is_empty() {
        return;
    }
    // BLIS's `NC` loop: the panels go in chunks whose packed B fits in half the L2, so every
    // row tile after the first finds its chunk there (a 16-channel convolution's 256×4096 B is
    // 4 MiB: unchunked, each of its two row tiles streamed it from L3).
    let (mr_max, nr) = (op.mr(), op.nr());
    let chunk = (l2_bytes() / 2 / (kc * nr * 4)).max(1);
    let run = |rows: std::ops::Range<usize>,
               ap_of: &dyn Fn(usize, usize) -> (*const f32, isize, isize)| {
        for c0 in panels.clone().step_by(chunk) {
            let chunk = c0..(c0 + chunk).min(panels.end);
            // Tile-major: one A tile stays in L1 while the panels of B (in L2) pass it, and
            // each row of C is written front to back.
            let mut i0 = rows.start;
            while i0 < rows.end {
                let mr = mr_max.min(rows.end - i0);
                let (ap, a_rs, a_ps) = ap_of(i0, mr);
                for jp in chunk.clone() {
                    let j0 = jp * nr;
                    let tile = Tile {
                        kc,
                        a: ap,
                        a_rs,
                        a_ps,
                        b: bp.add((jp - panels.start) * kc * nr),
                        c: op.c.add(i0 * op.ldc + j0),
                        src: op.src.add(i0 * op.ldc + j0),
                        ldc: op.ldc,
                        cols: nr.min(op.n - j0),
                        alpha: op.alpha,
                        beta: op.beta,
                        bias: op.bias.map(|bv| bv.add(j0)),
                        first: p0 == 0,
                        extra: if p0 + kc == op.k {
                            op.extra.at(i0, j0, op.ldc)
                        } else {
                            Extra::None
                        },
                    };
                    micro(op.zmm, mr, &tile);
                }
                i0 += mr;
            }
        }
    };
    // MC rows at a time, so the block's A (MC×kc, 120 KiB) and the packed B stay in L2 while
    // every panel passes over them.
    for mc in (rows.start..rows.end).step_by(MC) {
        let rows = mc..(mc + MC).min(rows.end);
        // A column-major A (a weight gradient's `gᵀ`) is read in place by the AVX2 kernel only.
        // The AVX-512 kernel's 12-row tile reads 48 bytes a step `csa` floats apart: with the
        // GPT's 512–2048-byte strides those lines fall into a few L1 sets and are evicted before
        // the next panel, so it packs them (one masked copy per step) into a contiguous tile:
        // the GPT's weight gradients took 4–8% less time (3 paired runs).
        if op.rsa == 1 && !op.zmm {
            run(rows, &|i0, _| {
                (op.a.offset(i0 as isize + p0 as isize * op.csa), 1, op.csa)
            });
            continue;
        }
        // The AVX2 kernel reads a row-major A in place too, broadcasting from six rows (they
        // stay in L1 while the panels pass): the GPT's step took 0.87-0.98 of the packing
        // build's time so on a Zen 3. The AVX-512 kernel still packs (unmeasured there).
        if !op.zmm && op.csa == 1 {
            run(rows, &|i0, _| {
                (op.a.offset(i0 as isize * op.rsa + p0 as isize), op.rsa, 1)
            });
            continue;
        }
        with_pack(&PACK_A, rows.len() * kc, |pa| {
            let mut i0 = rows.start;
            while i0 < rows.end {
                let mr = mr_max.min(rows.end - i0);
                let src = op.a.offset(i0 as isize * op.rsa + p0 as isize * op.csa);
                pack_a(kc, mr, src, op.rsa, op.csa, pa.add((i0 - rows.start) * kc));
                i0 += mr;
            }
            run(rows.clone(), &|i0, mr| {
                (pa.add((i0 - rows.start) * kc) as *const f32, 1, mr as isize)
            });
        });
    }
}

/// Panels `panels` of `op(B)[p0..p0 + kc, ·]` into `[panel][kc][nr]` (`nr`: the call's tile
/// width), zero past column `n`.
unsafe fn pack_b(
    op: &Operands,
    p0: usize,
    kc: usize,
    panels: std::ops::Range<usize>,
    dst: *mut f32,
) {
    let b = op.b.offset(p0 as isize * op.rsb);
    let nr = op.nr();
    for (pi, jp) in panels.enumerate() {
        let j0 = jp * nr;
        let cols = nr.min(op.n - j0);
        let panel = dst.add(pi * kc * nr);
        if op.csb == 1 {
            for p in 0..kc {
                copy_row(
                    op.zmm,
                    b.offset(p as isize * op.rsb + j0 as isize),
                    panel.add(p * nr),
                    cols,
                );
            }
            continue;
        }
        // A transposed B (`rsb = 1`): column j of the panel is a contiguous run of p.
        let col = |jj: usize| b.offset((j0 + jj) as isize * op.csb);
        let mut jj = 0;
        #[cfg(target_arch = "x86_64")]
        if op.rsb == 1 {
            while jj + 4 <= cols {
                let src = [col(jj), col(jj + 1), col(jj + 2), col(jj + 3)];
                interleave4(src, kc, panel.add(jj), nr);
                jj += 4;
            }
        }
        for jj in jj..nr {
            for p in 0..kc {
                *panel.add(p * nr + jj) = if jj < cols {
                    *col(jj).offset(p as isize * op.rsb)
                } else {
                    0.0
                };
            }
        }
    }
}

/// `dst[0..nr] = src[0..cols]`, zero-padded (`nr`: 32 for the AVX-512 kernels, 16 for AVX2).
#[cfg(target_arch = "x86_64")]
unsafe fn copy_row(zmm: bool, src: *const f32, dst: *mut f32, cols: usize) {
    if zmm {
        copy_row_zmm(src, dst, cols)
    } else {
        avx2::copy_row(src, dst, cols)
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn copy_row_zmm(src: *const f32, dst: *mut f32, cols: usize) {
    let live = |lo: usize| ((1u32 << cols.saturating_sub(lo).min(16)) - 1) as __mmask16;
    _mm512_storeu_ps(dst, _mm512_maskz_loadu_ps(live(0), src));
    _mm512_storeu_ps(dst.add(16), _mm512_maskz_loadu_ps(live(16), src.add(16)));
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn copy_row(_: bool, _: *const f32, _: *mut f32, _: usize) {
    unreachable!("sgemm::available() is false off x86_64")
}

/// `op(A)[0..mr, 0..kc]` into `[kc][mr]`. A row-major A (`csa = 1`) is transposed 4×4 at a
/// time in SSE registers (half the cost of moving single floats).
unsafe fn pack_a(kc: usize, mr: usize, a: *const f32, rsa: isize, csa: isize, dst: *mut f32) {
    // Only AVX-512 calls pack a column-major A (see [`block`]); the check is the one the
    // copy's instructions need.
    #[cfg(target_arch = "x86_64")]
    if rsa == 1 && mr <= 16 && avx512() {
        return pack_a_cols(kc, mr, a, csa, dst);
    }
    let mut r0 = 0;
    #[cfg(target_arch = "x86_64")]
    if csa == 1 {
        while r0 + 4 <= mr {
            let row = |r: usize| a.offset((r0 + r) as isize * rsa);
            interleave4([row(0), row(1), row(2), row(3)], kc, dst.add(r0), mr);
            r0 += 4;
        }
    }
    for p in 0..kc {
        for r in r0..mr {
            *dst.add(p * mr + r) = *a.offset(r as isize * rsa + p as isize * csa);
        }
    }
}

/// [`pack_a`] of a column-major A: each `p`'s `mr ≤ 16` contiguous values in one masked copy.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn pack_a_cols(kc: usize, mr: usize, a: *const f32, csa: isize, dst: *mut f32) {
    let mk = ((1u32 << mr) - 1) as __mmask16;
    for p in 0..kc {
        let v = _mm512_maskz_loadu_ps(mk, a.offset(p as isize * csa));
        _mm512_mask_storeu_ps(dst.add(p * mr), mk, v);
    }
}

/// `dst[p·stride + q] = src[q][p]` for four contiguous runs of `kc` floats, 4×4 at a time.
#[cfg(target_arch = "x86_64")]
unsafe fn interleave4(src: [*const f32; 4], kc: usize, dst: *mut f32, stride: usize) {
    let mut p = 0;
    while p + 4 <= kc {
        let mut x0 = _mm_loadu_ps(src[0].add(p));
        let mut x1 = _mm_loadu_ps(src[1].add(p));
        let mut x2 = _mm_loadu_ps(src[2].add(p));
        let mut x3 = _mm_loadu_ps(src[3].add(p));
        transpose4(&mut x0, &mut x1, &mut x2, &mut x3);
        for (q, x) in [x0, x1, x2, x3].into_iter().enumerate() {
            _mm_storeu_ps(dst.add((p + q) * stride), x);
        }
        p += 4;
    }
    for p in p..kc {
        for (q, s) in src.iter().enumerate() {
            *dst.add(p * stride + q) = *s.add(p);
        }
    }
}

/// `_MM_TRANSPOSE4_PS`.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn transpose4(x0: &mut __m128, x1: &mut __m128, x2: &mut __m128, x3: &mut __m128) {
    let t0 = _mm_unpacklo_ps(*x0, *x1);
    let t1 = _mm_unpacklo_ps(*x2, *x3);
    let t2 = _mm_unpackhi_ps(*x0, *x1);
    let t3 = _mm_unpackhi_ps(*x2, *x3);
    *x0 = _mm_movelh_ps(t0, t1);
    *x1 = _mm_movehl_ps(t1, t0);
    *x2 = _mm_movelh_ps(t2, t3);
    *x3 = _mm_movehl_ps(t3, t2);
}

/// One register tile's operands and epilogue: `A[r, p]` at `a + r·a_rs + p·a_ps` (`a_rs` is 1
/// but for a row-major A the AVX2 kernel reads in place), row `p` of the
/// packed B panel at `b + nr·p` (`nr`: 32 for AVX-512, 16 for AVX2; `cols` columns are live).
struct Tile {
    kc: usize,
    a: *const f32,
    a_rs: isize,
    a_ps: isize,
    b: *const f32,
    c: *mut f32,
    /// Where β's term reads C (C itself, or [`sgemm_onto`]'s source), laid out as C.
    src: *const f32,
    ldc: usize,
    cols: usize,
    alpha: f32,
    beta: f32,
    bias: Option<*const f32>,
    /// The first `KC` block applies β and the bias; later ones add onto C.
    first: bool,
    /// The extra work on the finished tile (the last `KC` block only).
    extra: Extra,
}

/// `$kernel::<R>($tile)` for a runtime row count `R` in `1..=12` (the register tiles' rows).
macro_rules! by_rows {
    ($rows:expr, $kernel:ident, $tile:expr) => {
        match $rows {
            1 => $kernel::<1>($tile),
            2 => $kernel::<2>($tile),
            3 => $kernel::<3>($tile),
            4 => $kernel::<4>($tile),
            5 => $kernel::<5>($tile),
            6 => $kernel::<6>($tile),
            7 => $kernel::<7>($tile),
            8 => $kernel::<8>($tile),
            9 => $kernel::<9>($tile),
            10 => $kernel::<10>($tile),
            11 => $kernel::<11>($tile),
            12 => $kernel::<12>($tile),
            _ => unreachable!("tile rows are 1..=12"),
        }
    };
}
pub(crate) use by_rows;

unsafe fn micro(zmm: bool, mr: usize, t: &Tile) {
    #[cfg(target_arch = "x86_64")]
    if !zmm {
        return avx2::micro(mr, t);
    }
    debug_assert_eq!(t.a_rs, 1, "the AVX-512 kernel reads A's rows adjacent");
    by_rows!(mr, kernel, t)
}

/// The 12×32 register tile (or fewer rows): per step of `p`, two loads of B, `R` broadcasts
/// from the contiguous run of A, `2R` FMAs.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn kernel<const R: usize>(t: &Tile) {
    let mask = |lo: usize| -> __mmask16 {
        let live = t.cols.saturating_sub(lo).min(16);
        ((1u32 << live) - 1) as __mmask16
    };
    let masks = [mask(0), mask(16)];
    let mut acc0 = [_mm512_setzero_ps(); R];
    let mut acc1 = [_mm512_setzero_ps(); R];
    // Adam's operands to prefetch, if any, and how ([`adam_prefetch`]): read once per tile
    // (only for Adam tiles), not per row.
    let (burst, ahead) = match t.extra {
        Extra::Adam(a) => match adam_prefetch() {
            AdamPrefetch::Burst => (Some(a), None),
            AdamPrefetch::Ahead => (None, Some(a)),
        },
        _ => (None, None),
    };
    // Ask for the C tile now, so its cache misses overlap the FMAs instead of the epilogue;
    // unless the epilogue neither reads nor writes it (a first block with β = 0 whose sum is not
    // stored).
    let c_idle = matches!(t.extra, Extra::Adam(_) | Extra::TanhOnly(_)) && t.first && t.beta == 0.0;
    for r in 0..R {
        let row = t.c.add(r * t.ldc) as *const i8;
        if !c_idle {
            _mm_prefetch::<_MM_HINT_T0>(row);
            // A narrow last tile's second line may lie past C: `wrapping_add` forms that
            // address without claiming it is in bounds (a prefetch never faults).
            _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
        }
        // And Adam's operands, this tile's and the next one's to the right (a tile's FMAs hide
        // one miss, not a run of them): scattered 128-byte runs the hardware prefetcher does
        // not see. A prefetch past the buffer's end does not fault. Where this CPU does better
        // with the next tile's asked for in the epilogue ([`AdamPrefetch::Ahead`]), not here.
        if let Some(a) = burst {
            for p in [a.w, a.m, a.v] {
                let row = p.add(r * t.ldc) as *const i8;
                for o in [0, 64, 128, 192] {
                    _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(o));
                }
            }
        }
    }
    let (mut ap, mut bp) = (t.a, t.b);
    for _ in 0..t.kc {
        let b0 = _mm512_load_ps(bp);
        let b1 = _mm512_load_ps(bp.add(16));
        for r in 0..R {
            let av = _mm512_set1_ps(*ap.add(r));
            acc0[r] = _mm512_fmadd_ps(av, b0, acc0[r]);
            acc1[r] = _mm512_fmadd_ps(av, b1, acc1[r]);
        }
        bp = bp.add(NR);
        // Wrapping: after the last step, A read in place points past its buffer (never read).
        ap = ap.wrapping_offset(t.a_ps);
    }
    let alpha = _mm512_set1_ps(t.alpha);
    let beta = _mm512_set1_ps(t.beta);
    let adam = match t.extra {
        Extra::Adam(a) => Some((a, super::lanes::avx512::AdamRegs::load(&*a.consts))),
        _ => None,
    };
    for r in 0..R {
        let row = t.c.add(r * t.ldc);
        // The next tile's Adam operands in this row ([`AdamPrefetch::Ahead`]), 128 bytes to the
        // right. After the last tile of a row of tiles they are the next rows' first lines, or
        // past the buffer: `wrapping_add` forms those addresses without claiming they are in
        // bounds, and a prefetch never faults.
        if let Some(a) = ahead {
            let next = |p: *mut f32| (p.add(r * t.ldc) as *const i8).wrapping_add(4 * NR);
            let (w, m, v) = (next(a.w), next(a.m), next(a.v));
            _mm_prefetch::<_MM_HINT_T0>(w);
            _mm_prefetch::<_MM_HINT_T0>(w.wrapping_add(64));
            for p in [m, v] {
                _mm_prefetch::<_MM_HINT_NTA>(p);
                _mm_prefetch::<_MM_HINT_NTA>(p.wrapping_add(64));
            }
        }
        for (h, acc) in [acc0[r], acc1[r]].into_iter().enumerate() {
            let mk = masks[h];
            if mk == 0 {
                continue;
            }
            // Whole vectors (all but a narrow last tile's) load and store unmasked: on the
            // development machine (Zen 5) a masked store cost more than a plain one, and the
            // Adam epilogue makes four per vector (the reference MLP step went from 89.3–92.1%
            // to 91.2–92.6% of its GEMM ceiling, 6 paired runs).
            let ld = |p: *const f32| {
                if mk == u16::MAX {
                    _mm512_loadu_ps(p)
                } else {
                    _mm512_maskz_loadu_ps(mk, p)
                }
            };
            let st = |p: *mut f32, v: __m512| {
                if mk == u16::MAX {
                    _mm512_storeu_ps(p, v)
                } else {
                    _mm512_mask_storeu_ps(p, mk, v)
                }
            };
            let dst = row.add(16 * h);
            let mut v = _mm512_mul_ps(acc, alpha);
            if t.first {
                if t.beta != 0.0 {
                    v = _mm512_fmadd_ps(beta, ld(t.src.add(r * t.ldc + 16 * h)), v);
                }
                if let Some(bias) = t.bias {
                    v = _mm512_add_ps(v, ld(bias.add(16 * h)));
                }
            } else {
                v = _mm512_add_ps(ld(dst), v);
            }
            if let Extra::TanhSlope(hp) = t.extra {
                // `g · (1 − h·h)`, as the slope's own pass computes it.
                let hv = ld(hp.add(r * t.ldc + 16 * h));
                let s = _mm512_sub_ps(_mm512_set1_ps(1.0), _mm512_mul_ps(hv, hv));
                v = _mm512_mul_ps(v, s);
            }
            // Adam's gradient is consumed here, not stored ([`Extra::Adam`]), nor is a
            // pre-activation nothing reads ([`Extra::TanhOnly`]).
            if adam.is_none() && !matches!(t.extra, Extra::TanhOnly(_)) {
                st(dst, v);
            }
            if let Extra::Tanh(hp) | Extra::TanhOnly(hp) = t.extra {
                let o = r * t.ldc + 16 * h;
                st(hp.add(o), super::lanes::avx512::tanh(v));
            }
            if let Some((a, regs)) = adam {
                let o = r * t.ldc + 16 * h;
                let (wp, mp, vp) = (a.w.add(o), a.m.add(o), a.v.add(o));
                let (w, m, vv) = regs.step(ld(wp), v, ld(mp), ld(vp));
                st(wp, w);
                st(mp, m);
                st(vp, vv);
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

    /// Every path against the f64 reference; and on one thread the small path (no packing)
    /// against the packed one, bit for bit.
    #[test]
    fn matches_f64_reference_over_shapes_strides_and_epilogues() {
        if !available() {
            eprintln!("neither AVX-512 nor AVX2+FMA on this CPU: the kernels are not used here");
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
            // A tiny MLP's layers (the small path's case).
            (64, 16, 8),
            (16, 8, 64),
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
                    (0.5, -1.0, true, 1),
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
                    let call = |c: &mut [f32], small_path: bool| {
                        SMALL_PATH.with(|s| s.set(small_path));
                        // SAFETY: the buffers hold the m×k, k×n and m×n operands at these
                        // strides.
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
                        SMALL_PATH.with(|s| s.set(true));
                    };
                    let c_before = c.clone();
                    call(&mut c, true);
                    if threads == 1 {
                        let mut packed = c_before;
                        call(&mut packed, false);
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&c),
                            bits(&packed),
                            "{m}x{n}x{k} ta={ta} tb={tb} small path"
                        );
                    }
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

    /// [`sgemm`] onto a C of 0.5s (β = 1, no bias): A `m×k` at strides `(rsa, csa)` (both
    /// positive), B `k×n` row-major.
    fn call(
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        (a, rsa, csa): (&[f32], isize, isize),
        b: &[f32],
        threads: usize,
    ) -> Vec<f32> {
        let (rs, cs) = (rsa as usize, csa as usize);
        assert!(rsa > 0 && csa > 0 && a.len() > (m - 1) * rs + (k - 1) * cs);
        assert!(b.len() >= k * n);
        let mut c = vec![0.5f32; m * n];
        // SAFETY: A's last element `(m−1)·rsa + (k−1)·csa` and B's `k·n` were checked above,
        // and C holds m×n.
        unsafe {
            sgemm(
                m,
                n,
                k,
                alpha,
                a.as_ptr(),
                rsa,
                csa,
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
    }

    /// Row splits over any thread count give bit-identical C (the engine's promise).
    #[test]
    fn any_thread_count_is_bit_identical() {
        if !available() {
            return;
        }
        // Over several `KC` blocks (rows split by thread, B packed by each), over one (row
        // blocks to whichever thread is free, B packed once and shared), and over several with
        // too few rows to split (B shared).
        for (m, n, k) in [(203, 45, 530), (203, 45, 200), (13, 70, 530)] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
            let run = |threads| call((m, n, k), 1.0, (&a, k as isize, 1), &b, threads);
            let one = run(1);
            // The same A column-major: a weight gradient's split (rows by thread, B by each).
            let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
            let run_t = |threads| call((m, n, k), 1.0, (&at, 1, m as isize), &b, threads);
            for t in [2, 3, 7] {
                for c in [run(t), run_t(t)] {
                    assert!(one.iter().zip(c).all(|(x, y)| x.to_bits() == y.to_bits()));
                }
            }
        }
    }

    /// A row-major A (read in place on AVX2, transposed into tiles on AVX-512) gives the bits
    /// of the same A stored column-major (read in place on AVX2, copied into tiles on AVX-512,
    /// rows split another way over threads): the same chain of FMAs per element, over several
    /// `KC` blocks, ragged tiles and threads.
    #[test]
    fn row_major_a_in_place_matches_column_major_a() {
        if !available() {
            return;
        }
        let (m, n, k) = (131, 37, 300);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let at: Vec<f32> = (0..k * m).map(|i| a[(i % m) * k + i / m]).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.91).cos()).collect();
        for threads in [1, 2] {
            let rows = call((m, n, k), 0.7, (&a, k as isize, 1), &b, threads);
            let cols = call((m, n, k), 0.7, (&at, 1, m as isize), &b, threads);
            assert!(rows
                .iter()
                .zip(&cols)
                .all(|(x, y)| x.to_bits() == y.to_bits()));
        }
    }

    /// The AVX2 tiles give the AVX-512 tiles' bits, on every path (small, packed, threads,
    /// several `KC` blocks, ragged edges, each epilogue): a model trains to the same bits on
    /// either kind of CPU. Runs where the CPU has AVX-512 (the AVX2 kernels run there too).
    #[test]
    fn avx2_kernels_match_avx512_bit_for_bit() {
        if !avx512() {
            eprintln!("no AVX-512 on this CPU: nothing to compare the AVX2 kernels with");
            return;
        }
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (si, &(m, n, k)) in [
            (1, 1, 1),
            (13, 33, 257),
            (25, 70, 300),
            (64, 16, 8),
            (7, 5, 600),
        ]
        .iter()
        .enumerate()
        {
            for (ta, tb) in [(false, false), (true, true)] {
                let a: Vec<f32> = (0..m * k)
                    .map(|i| ((i * 7 + si) as f32 * 0.37).sin())
                    .collect();
                let b: Vec<f32> = (0..k * n)
                    .map(|i| ((i * 3 + si) as f32 * 0.91).cos())
                    .collect();
                let sa = if ta { (1, m) } else { (k, 1) };
                let sb = if tb { (1, k) } else { (n, 1) };
                let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.25 - 1.0).collect();
                for (alpha, beta, with_bias, threads, small) in [
                    (1.0, 0.0, false, 1, true),
                    (0.5, 1.0, true, 1, false),
                    (2.0, -0.5, false, 2, false),
                ] {
                    let run = |avx2: bool| {
                        let mut c: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.13).sin()).collect();
                        FORCE_AVX2.with(|f| f.set(avx2));
                        SMALL_PATH.with(|s| s.set(small));
                        // SAFETY: the buffers hold the m×k, k×n and m×n operands at these
                        // strides.
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
                                n,
                                with_bias.then_some(bias.as_ptr()),
                                threads,
                            )
                        };
                        FORCE_AVX2.with(|f| f.set(false));
                        SMALL_PATH.with(|s| s.set(true));
                        c
                    };
                    assert_eq!(bits(&run(false)), bits(&run(true)), "{m}x{n}x{k} ta={ta}");
                }
                // The fused epilogues: tanh beside the pre-activation, the slope, Adam.
                let consts = crate::engine::lanes::AdamConsts {
                    adamw: si % 2 == 0,
                    decay: [0.01; 16],
                    keep: [0.999; 16],
                    b1: [0.9; 16],
                    one_minus_b1: [0.1; 16],
                    b2: [0.999; 16],
                    one_minus_b2: [0.001; 16],
                    step_size: [1e-3; 16],
                    inv_bc2_sqrt: [3.0; 16],
                    eps: [1e-8; 16],
                };
                let fused = |avx2: bool, which: usize| {
                    let mut c = vec![0.0f32; m * n];
                    let mut h: Vec<f32> =
                        (0..m * n).map(|i| (i as f32 * 0.29).cos() * 0.9).collect();
                    let mut w: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.17).sin()).collect();
                    let mut mm: Vec<f32> =
                        (0..m * n).map(|i| (i as f32 * 0.11).sin() * 0.1).collect();
                    let mut vv: Vec<f32> = (0..m * n)
                        .map(|i| (i as f32 * 0.07).cos().abs() * 0.01)
                        .collect();
                    let extra = match which {
                        0 => Extra::Tanh(h.as_mut_ptr()),
                        1 => Extra::TanhSlope(h.as_ptr()),
                        _ => Extra::Adam(AdamTarget {
                            w: w.as_mut_ptr(),
                            m: mm.as_mut_ptr(),
                            v: vv.as_mut_ptr(),
                            consts: &consts,
                        }),
                    };
                    FORCE_AVX2.with(|f| f.set(avx2));
                    // SAFETY: the operands hold m×k, k×n; C, h, w, m and v hold m×n each,
                    // distinct buffers.
                    let done = unsafe {
                        sgemm_fused(
                            (m, n, k),
                            1.0,
                            (a.as_ptr(), sa.0 as isize, sa.1 as isize),
                            (b.as_ptr(), sb.0 as isize, sb.1 as isize),
                            None,
                            (c.as_mut_ptr(), n),
                            extra,
                            2,
                        )
                    };
                    FORCE_AVX2.with(|f| f.set(false));
                    // An Adam tile's C is left unspecified ([`Extra::Adam`]): not compared.
                    let c = if which == 2 { Vec::new() } else { c };
                    [c, h, w, mm, vv].map(|x| if done { bits(&x) } else { Vec::new() })
                };
                for which in 0..3 {
                    assert_eq!(
                        fused(false, which),
                        fused(true, which),
                        "{m}x{n}x{k} extra {which}"
                    );
                }
            }
        }
    }

    /// [`sgemm_onto`] gives the bits of copying its source into C and calling [`sgemm`] with
    /// β = 1, on both kernels, on the small and packed paths, over one and several `KC` blocks,
    /// with and without a bias, on one and two threads.
    #[test]
    fn sgemm_onto_is_the_copy_then_beta_one() {
        if !available() {
            return;
        }
        let bits = |x: &[f32]| x.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        for (m, n, k) in [
            (5, 7, 3),
            (8, 16, 8),
            (37, 45, 19),
            (130, 70, 300),
            (64, 128, 512),
        ] {
            let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.23).cos()).collect();
            let src: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.51).sin() * 3.0).collect();
            let bias: Vec<f32> = (0..n).map(|j| j as f32 * 0.01 - 0.2).collect();
            for avx2 in [false, true] {
                if !avx512() && !avx2 {
                    continue;
                }
                for (with_bias, threads) in [(false, 1), (true, 1), (true, 2), (false, 2)] {
                    let bias = with_bias.then_some(bias.as_ptr());
                    let (pa, pb) = ((a.as_ptr(), k as isize, 1), (b.as_ptr(), n as isize, 1));
                    FORCE_AVX2.with(|f| f.set(avx2));
                    let mut onto = vec![f32::NAN; m * n];
                    let mut want = src.clone();
                    // SAFETY: A is m×k, B k×n, C, the source and `want` m×n, the bias n; C and
                    // `want` alias nothing.
                    unsafe {
                        let c = (onto.as_mut_ptr(), n);
                        sgemm_onto((m, n, k), 0.7, pa, pb, src.as_ptr(), c, bias, threads);
                        sgemm(
                            m,
                            n,
                            k,
                            0.7,
                            pa.0,
                            pa.1,
                            pa.2,
                            pb.0,
                            pb.1,
                            pb.2,
                            1.0,
                            want.as_mut_ptr(),
                            n,
                            bias,
                            threads,
                        );
                    }
                    FORCE_AVX2.with(|f| f.set(false));
                    let case =
                        format!("{m}x{n}x{k} avx2 {avx2} bias {with_bias} threads {threads}");
                    assert_eq!(bits(&onto), bits(&want), "{case}");
                    // And it added the source: not the product alone.
                    assert_ne!(onto[1], want[1] - src[1], "{case}");
                }
            }
        }
    }
}
