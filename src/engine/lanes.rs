//! Lockstep lanes: `LANES` same-shape models, one per SIMD lane. A tensor is a slice of
//! [`Lanes`], element `e` of model `l` at `[e][l]`, so every operation of one model becomes the
//! same operation on a whole vector, whatever the model's width: a width-4 layer fills the
//! vector as well as a width-64 one.
//!
//! Each lane must compute exactly the bits the same model computes alone, so [`gemm`] follows
//! [`super::ops::gemm_ex`]'s choices for dense operands step by step: its degenerate shapes
//! (a dot product in eight partial sums, an axpy, an outer product, each with its own order of
//! multiplies and adds), and otherwise the engine's kernels' arithmetic — one fused multiply-add
//! chain over `k` from zero, then `α·acc`, then `β·C` fused onto it. That holds while `k` fits
//! one of the kernels' `KC` blocks ([`MAX_K`]); callers check. The tests compare every branch
//! bit for bit with `gemm_ex`. The kernels come in AVX-512 (one zmm per [`Lanes`]) and, for
//! CPUs without it, AVX2 with FMA (two ymm halves: `avx2`), with the same bits.

use super::ops::Op;

#[cfg(target_arch = "x86_64")]
mod avx2;
mod buf;

pub use buf::LaneBuf;

/// Models per group: one AVX-512 vector of f32.
pub const LANES: usize = 16;

/// One element of every model in a group.
pub type Lanes = [f32; LANES];

/// The longest inner dimension [`gemm`] reproduces: the AVX-512 kernels' `KC` (beyond it they
/// add partial products per block).
pub const MAX_K: usize = super::sgemm::KC;

/// A tensor of `n` elements, zero, on cache-line boundaries ([`LaneBuf`]).
pub fn zeros(n: usize) -> LaneBuf {
    LaneBuf::zeros(n)
}

/// `h = tanh(α·op(A)·op(B) + bias)` for every lane, with no pre-activation buffer: [`gemm`]
/// (β = 0) then [`bias_tanh`] in one pass, the same bits. `false` (nothing done) where this
/// CPU or shape takes another path: call those two instead.
#[allow(clippy::too_many_arguments)]
pub fn gemm_bias_tanh(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[Lanes],
    b: &[Lanes],
    bias: Option<&[Lanes]>,
    h: &mut [Lanes],
) -> bool {
    let degenerate = k <= 1 || (n == 1 && ta == Op::N) || (m == 1 && tb == Op::N);
    if degenerate || !super::sgemm::available() {
        return false;
    }
    assert!(
        k <= MAX_K
            && a.len() >= m * k
            && b.len() >= k * n
            && h.len() >= m * n
            && bias.is_none_or(|b| b.len() >= n),
        "lanes::gemm_bias_tanh: shapes"
    );
    #[cfg(target_arch = "x86_64")]
    {
        let epi = Epi::Tanh(bias.map(|b| b.as_ptr()));
        // SAFETY: AVX-512F, or AVX2 and FMA, are present (checked); the assert bounds A, B, the
        // bias and `h`.
        unsafe { chain(ta, tb, (m, n, k), alpha, a, b, 0.0, h, epi) };
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// [`avx512::chain`] (or [`avx2::chain`] where the CPU has AVX2 and FMA but not AVX-512) on
/// dense row-major operands.
///
/// # Safety
/// [`super::sgemm::available`] must hold, and `a`, `b`, `c` (and an epilogue's bias) must hold
/// `op(A): [m, k]`, `op(B): [k, n]`, `C: [m, n]` (and `n` lanes).
#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
unsafe fn chain(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[Lanes],
    b: &[Lanes],
    beta: f32,
    c: &mut [Lanes],
    epi: Epi,
) {
    let ((ars, aps), (bps, bjs)) = strides(ta, tb, m, n, k);
    let kernel = if zmm() { avx512::chain } else { avx2::chain };
    // SAFETY: the caller's contract: the kernel's instruction set, and operands that hold these
    // shapes, so every stride the kernel walks stays inside them; `c` is a unique borrow.
    unsafe {
        kernel(
            (m, n, k),
            alpha,
            (a.as_ptr(), ars, aps),
            (b.as_ptr(), bps, bjs),
            beta,
            c.as_mut_ptr(),
            epi,
        )
    }
}

/// The element strides of `op(A)(i, p)` over `i` and `p`, and of `op(B)(p, j)` over `p` and
/// `j`, for dense row-major operands.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn strides(ta: Op, tb: Op, m: usize, n: usize, k: usize) -> ((usize, usize), (usize, usize)) {
    let a = match ta {
        Op::N => (k, 1),
        Op::T => (1, m),
    };
    let b = match tb {
        Op::N => (n, 1),
        Op::T => (1, k),
    };
    (a, b)
}

/// `C ← α·op(A)·op(B) + β·C` for every lane, dense row-major operands (`op(A): [m, k]`,
/// `op(B): [k, n]`, `C: [m, n]`), with the bits [`super::ops::gemm_ex`] gives each lane's
/// model alone on an AVX-512 machine. `k ≤ MAX_K`.
#[allow(clippy::too_many_arguments)]
pub fn gemm(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[Lanes],
    b: &[Lanes],
    beta: f32,
    c: &mut [Lanes],
) {
    // k = 0 (no model has an empty layer) is refused rather than given `gemm_ex`'s β·C.
    assert!(
        (1..=MAX_K).contains(&k) && a.len() >= m * k && b.len() >= k * n && c.len() >= m * n,
        "lanes::gemm: shapes"
    );
    if m == 0 || n == 0 {
        return;
    }
    // `gemm_ex`'s degenerate shapes, in its order.
    #[cfg(target_arch = "x86_64")]
    let fast = zmm();
    #[cfg(not(target_arch = "x86_64"))]
    let fast = false;
    #[cfg(target_arch = "x86_64")]
    if !fast && super::sgemm::available() {
        // SAFETY: AVX2 and FMA are present (checked); the assert at the top bounds A, B and C.
        return unsafe { avx2::gemm(ta, tb, (m, n, k), alpha, a, b, beta, c) };
    }
    if n == 1 && ta == Op::N {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: AVX-512F is present (checked); the assert at the top bounds A, B, C.
            return unsafe { avx512::dot_rows(m, k, alpha, a, b, beta, c) };
        }
        return dot_rows(m, k, alpha, a, b, beta, c);
    }
    if m == 1 && tb == Op::N {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: as above.
            return unsafe { avx512::axpy(n, k, alpha, a, b, beta, c) };
        }
        return axpy(n, k, alpha, a, b, beta, c);
    }
    if k == 1 {
        #[cfg(target_arch = "x86_64")]
        if fast {
            // SAFETY: as above.
            return unsafe { avx512::outer(m, n, alpha, a, b, beta, c) };
        }
        return outer(m, n, alpha, a, b, beta, c);
    }
    #[cfg(target_arch = "x86_64")]
    if fast {
        // SAFETY: AVX-512F is present (checked); the assert at the top bounds A, B and C.
        unsafe { chain(ta, tb, (m, n, k), alpha, a, b, beta, c, Epi::Store) };
        return;
    }
    chains(ta, tb, (m, n, k), alpha, a, b, beta, c);
}

/// [`gemm`]'s general case, portable: one FMA chain per element over `p` from zero, then
/// `α·acc (+ β·C)` fused.
#[allow(clippy::too_many_arguments)]
fn chains(
    ta: Op,
    tb: Op,
    (m, n, k): (usize, usize, usize),
    alpha: f32,
    a: &[Lanes],
    b: &[Lanes],
    beta: f32,
    c: &mut [Lanes],
) {
    // The kernels: A(i, p) and B(p, j) through the transposes.
    let a_at = |i: usize, p: usize| match ta {
        Op::N => &a[i * k + p],
        Op::T => &a[p * m + i],
    };
    let b_at = |p: usize, j: usize| match tb {
        Op::N => &b[p * n + j],
        Op::T => &b[j * k + p],
    };
    // Blocks of output columns share each load of A(i, p).
    const J: usize = 4;
    for i in 0..m {
        let mut j0 = 0;
        while j0 < n {
            let jn = J.min(n - j0);
            let mut acc = [[0.0f32; LANES]; J];
            for p in 0..k {
                let av = a_at(i, p);
                for (jj, acc) in acc.iter_mut().enumerate().take(jn) {
                    let bv = b_at(p, j0 + jj);
                    for l in 0..LANES {
                        acc[l] = av[l].mul_add(bv[l], acc[l]);
                    }
                }
            }
            for (jj, acc) in acc.iter().enumerate().take(jn) {
                let cv = &mut c[i * n + j0 + jj];
                for l in 0..LANES {
                    let v = acc[l] * alpha;
                    cv[l] = if beta != 0.0 {
                        beta.mul_add(cv[l], v)
                    } else {
                        v
                    };
                }
            }
            j0 += jn;
        }
    }
}

/// `n = 1`: each row of A dotted with B ([`super::ops::dot`]: eight partial sums of products
/// in a fixed tree, then the tail), then `α·d (+ β·c)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn dot_rows(m: usize, k: usize, alpha: f32, a: &[Lanes], b: &[Lanes], beta: f32, c: &mut [Lanes]) {
    let whole = k / 8 * 8;
    for (i, cv) in c[..m].iter_mut().enumerate() {
        let row = &a[i * k..(i + 1) * k];
        let mut acc = [[0.0f32; LANES]; 8];
        for (xs, ys) in row[..whole].chunks_exact(8).zip(b[..whole].chunks_exact(8)) {
            for q in 0..8 {
                for l in 0..LANES {
                    acc[q][l] += xs[q][l] * ys[q][l];
                }
            }
        }
        let mut tail = [0.0f32; LANES];
        for p in whole..k {
            for l in 0..LANES {
                tail[l] += row[p][l] * b[p][l];
            }
        }
        for l in 0..LANES {
            let d = super::ops::fold_lanes(std::array::from_fn(|q| acc[q][l])) + tail[l];
            cv[l] = if beta == 0.0 {
                alpha * d
            } else {
                alpha * d + beta * cv[l]
            };
        }
    }
}

/// `m = 1`: `C = β·C` (or zero), then `C += (α·a_p)·B[p, :]` for each `p` in order.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn axpy(n: usize, k: usize, alpha: f32, a: &[Lanes], b: &[Lanes], beta: f32, c: &mut [Lanes]) {
    let c = &mut c[..n];
    if beta == 0.0 {
        c.fill([0.0; LANES]);
    } else if beta != 1.0 {
        for cv in c.iter_mut() {
            for x in cv.iter_mut() {
                *x *= beta;
            }
        }
    }
    for p in 0..k {
        let ap: Lanes = std::array::from_fn(|l| alpha * a[p][l]);
        for (cv, bv) in c.iter_mut().zip(&b[p * n..(p + 1) * n]) {
            for l in 0..LANES {
                cv[l] += ap[l] * bv[l];
            }
        }
    }
}

/// `k = 1`: `C = (α·a_i)·b_j (+ β·C)`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
fn outer(m: usize, n: usize, alpha: f32, a: &[Lanes], b: &[Lanes], beta: f32, c: &mut [Lanes]) {
    for i in 0..m {
        let ai: Lanes = std::array::from_fn(|l| alpha * a[i][l]);
        for (cv, bv) in c[i * n..(i + 1) * n].iter_mut().zip(&b[..n]) {
            for l in 0..LANES {
                cv[l] = if beta == 0.0 {
                    ai[l] * bv[l]
                } else {
                    ai[l] * bv[l] + beta * cv[l]
                };
            }
        }
    }
}

/// `acc[j] = Σ_r g[r, j]` in row order, as [`super::ops::column_sums_by_columns`] sums.
pub fn column_sums(g: &[Lanes], width: usize, acc: &mut [Lanes]) {
    assert!(acc.len() >= width && width > 0);
    #[cfg(target_arch = "x86_64")]
    if zmm() {
        // SAFETY: AVX-512F is present (checked); `acc` holds `width` lanes (asserted).
        return unsafe { avx512::column_sums(g, width, acc) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::available() {
        // SAFETY: AVX2 and FMA are present (checked); the assert bounds every index.
        return unsafe { avx2::column_sums(g, width, acc) };
    }
    column_sums_portable(g, width, acc)
}

/// [`column_sums`] without the instruction-set kernels (inlined into [`avx2::column_sums`]'s
/// AVX2 and FMA code).
#[inline(always)]
fn column_sums_portable(g: &[Lanes], width: usize, acc: &mut [Lanes]) {
    let acc = &mut acc[..width];
    acc.fill([0.0; LANES]);
    for row in g.chunks_exact(width) {
        for (a, v) in acc.iter_mut().zip(row) {
            for l in 0..LANES {
                a[l] += v[l];
            }
        }
    }
}

/// `torch.nn.MSELoss` of every lane over `out` and `y` (same shape, `n` elements each): each
/// lane's sum of squared differences in f64 in element order (divide by `n` for the loss), and
/// the gradient `g = (2/n)·(out − y)` — [`crate::nn::loss`]'s arithmetic.
pub fn mse(out: &[Lanes], y: &[Lanes], g: &mut [Lanes]) -> [f64; LANES] {
    let n = out.len();
    assert!(y.len() >= n && g.len() >= n);
    let scale = (2.0 / n as f64) as f32;
    #[cfg(target_arch = "x86_64")]
    if zmm() {
        // SAFETY: AVX-512F is present (checked); the assert bounds every index.
        return unsafe { avx512::mse(out, y, scale, g) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::available() {
        // SAFETY: AVX2 and FMA are present (checked); the assert bounds every index.
        return unsafe { avx2::mse(out, y, scale, g) };
    }
    mse_portable(out, y, scale, g)
}

/// [`mse`] without the instruction-set kernels (inlined into [`avx2::mse`]'s
/// AVX2 and FMA code).
#[inline(always)]
fn mse_portable(out: &[Lanes], y: &[Lanes], scale: f32, g: &mut [Lanes]) -> [f64; LANES] {
    let mut sums = [0.0f64; LANES];
    for ((o, t), gv) in out.iter().zip(y).zip(g.iter_mut()) {
        for l in 0..LANES {
            let d = o[l] - t[l];
            sums[l] += d as f64 * d as f64;
            gv[l] = scale * d;
        }
    }
    sums
}

/// Up to [`LANES`] tensors of `n` elements as one lane tensor (`None`, or a missing lane: zero),
/// by [`gather_rows`]' kernel: one row `n` wide.
pub fn transpose(tensors: &[Option<&[f32]>], n: usize) -> LaneBuf {
    let mut out = zeros(n);
    if n == 0 {
        return out;
    }
    let zero = if tensors.len() < LANES || tensors.iter().any(Option::is_none) {
        vec![0.0; n]
    } else {
        Vec::new()
    };
    let src: [&[f32]; LANES] = std::array::from_fn(|l| {
        tensors
            .get(l)
            .copied()
            .flatten()
            .map_or(&zero[..], |t| &t[..n])
    });
    gather_rows(&mut out, n, 1, &src, &[None; LANES]);
    out
}

/// Rows of every lane's own split, gathered into one lane tensor: `dst[k·w + e][l] =
/// src[l][(picks[l][k])·w + e]` for rows `k < rows` and `e < w` (`picks[l]` `None`: row `k`
/// itself). A step's batches in one pass, with no per-model batch buffer: on AVX-512 each row
/// is sixteen `w`-float loads and an 8×16 transpose in registers per eight columns.
///
/// Panics when a pick lies beyond its lane's split.
pub fn gather_rows(
    dst: &mut [Lanes],
    w: usize,
    rows: usize,
    src: &[&[f32]; LANES],
    picks: &[Option<&[usize]>; LANES],
) {
    assert!(
        dst.len() >= rows * w && picks.iter().all(|p| p.is_none_or(|p| p.len() >= rows)),
        "lanes::gather_rows: shapes"
    );
    if w == 0 || rows == 0 {
        return;
    }
    // Each lane's row starts, bounds-checked here so the kernel reads only inside (the row
    // counts divided out once: a division per element would cost more than the copy).
    let n: [usize; LANES] = std::array::from_fn(|l| src[l].len() / w);
    let start = |l: usize, k: usize| -> usize {
        let i = picks[l].map_or(k, |p| p[k]);
        assert!(
            i < n[l],
            "lanes::gather_rows: row {i} beyond a split of {} rows",
            n[l]
        );
        i * w
    };
    #[cfg(target_arch = "x86_64")]
    let wide = zmm() && avx512vl();
    #[cfg(target_arch = "x86_64")]
    if w >= 2 && (wide || (!zmm() && super::sgemm::available())) {
        let base: [*const f32; LANES] = std::array::from_fn(|l| src[l].as_ptr());
        for k in 0..rows {
            // SAFETY: `start` checked the row lies inside lane l's split.
            let at: [*const f32; LANES] =
                std::array::from_fn(|l| unsafe { base[l].add(start(l, k)) });
            let d = dst[k * w..(k + 1) * w].as_mut_ptr();
            // SAFETY: AVX-512F/VL, or else AVX2, present (checked); each `at[l]` heads `w`
            // floats of its split (checked above), and `dst` holds rows·w lanes.
            unsafe {
                if wide {
                    avx512::gather_row(&at, w, d)
                } else {
                    avx2::gather_row(&at, w, d)
                }
            };
        }
        return;
    }
    if w == 1 {
        for (k, d) in dst[..rows].iter_mut().enumerate() {
            *d = std::array::from_fn(|l| src[l][start(l, k)]);
        }
        return;
    }
    for k in 0..rows {
        for l in 0..LANES {
            let i = start(l, k);
            for (d, &v) in dst[k * w..(k + 1) * w].iter_mut().zip(&src[l][i..i + w]) {
                d[l] = v;
            }
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Tests run the AVX2 kernels on an AVX-512 CPU, against the same references.
    static FORCE_AVX2: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the lanes' AVX-512 kernels run (else, where [`super::sgemm::available`], their AVX2
/// twins).
#[inline]
fn zmm() -> bool {
    #[cfg(test)]
    if FORCE_AVX2.with(|f| f.get()) {
        return false;
    }
    super::sgemm::avx512()
}

/// Whether this CPU has AVX-512F and VL (256-bit masked loads): [`gather_rows`]' kernel.
#[cfg(target_arch = "x86_64")]
fn avx512vl() -> bool {
    static HAS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *HAS.get_or_init(|| {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vl")
    })
}

/// Element `e` of lane `lane`, for every element: one model's tensor out of the group.
pub fn extract(t: &[Lanes], lane: usize, out: &mut [f32]) {
    for (o, v) in out.iter_mut().zip(t) {
        *o = v[lane];
    }
}

/// One model's tensor into lane `lane`.
pub fn insert(t: &mut [Lanes], lane: usize, from: &[f32]) {
    for (v, &x) in t.iter_mut().zip(from) {
        v[lane] = x;
    }
}

/// `h = tanh(z + b)` (the bias per column when given, written back into `z`), lane by lane
/// with [`super::fastmath::tanh_f32`]'s arithmetic: the pass of
/// [`crate::nn::activation::forward_bias_value_only`] for tanh.
pub fn bias_tanh(width: usize, bias: Option<&[Lanes]>, z: &mut [Lanes], h: &mut [Lanes]) {
    assert!(h.len() >= z.len() && bias.is_none_or(|b| b.len() >= width) && width > 0);
    #[cfg(target_arch = "x86_64")]
    if zmm() {
        // SAFETY: AVX-512F is present (checked); the assert bounds every index the kernel reads.
        return unsafe { avx512::bias_tanh(width, bias, z, h) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::available() {
        // SAFETY: AVX2 and FMA are present (checked); the assert bounds every index.
        return unsafe { avx2::bias_tanh(width, bias, z, h) };
    }
    bias_tanh_portable(width, bias, z, h)
}

/// [`bias_tanh`] without the instruction-set kernels (inlined into [`avx2::bias_tanh`]'s
/// AVX2 and FMA code).
#[inline(always)]
fn bias_tanh_portable(width: usize, bias: Option<&[Lanes]>, z: &mut [Lanes], h: &mut [Lanes]) {
    let f = super::fastmath::tanh_f32;
    match bias {
        Some(b) => {
            for (zr, hr) in z.chunks_exact_mut(width).zip(h.chunks_exact_mut(width)) {
                for ((zv, hv), bv) in zr.iter_mut().zip(hr.iter_mut()).zip(b) {
                    for l in 0..LANES {
                        zv[l] += bv[l];
                        hv[l] = f(zv[l]);
                    }
                }
            }
        }
        None => {
            for (zv, hv) in z.iter().zip(h.iter_mut()) {
                for l in 0..LANES {
                    hv[l] = f(zv[l]);
                }
            }
        }
    }
}

/// `g ← g·(1 − h²)`: tanh's slope from its output, as
/// [`crate::nn::activation::backward_from_output`] computes it.
pub fn tanh_slope(g: &mut [Lanes], h: &[Lanes]) {
    assert!(h.len() >= g.len());
    #[cfg(target_arch = "x86_64")]
    if zmm() {
        // SAFETY: AVX-512F is present (checked); `h` is at least as long as `g`.
        return unsafe { avx512::tanh_slope(g, h) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::available() {
        // SAFETY: AVX2 and FMA are present (checked); the assert bounds every index.
        return unsafe { avx2::tanh_slope(g, h) };
    }
    tanh_slope_portable(g, h)
}

/// [`tanh_slope`] without the instruction-set kernels (inlined into [`avx2::tanh_slope`]'s
/// AVX2 and FMA code).
#[inline(always)]
fn tanh_slope_portable(g: &mut [Lanes], h: &[Lanes]) {
    for (gv, hv) in g.iter_mut().zip(h) {
        for l in 0..LANES {
            gv[l] *= 1.0 - hv[l] * hv[l];
        }
    }
}

/// Adam's (`adamw`: AdamW's) update of every element with the constants `c`:
/// [`crate::optim::Coeffs::adam`]'s arithmetic.
pub fn adam(c: &AdamConsts, w: &mut [Lanes], g: &[Lanes], m: &mut [Lanes], v: &mut [Lanes]) {
    assert!(g.len() >= w.len() && m.len() >= w.len() && v.len() >= w.len());
    #[cfg(target_arch = "x86_64")]
    if zmm() {
        // SAFETY: AVX-512F is present (checked); the assert bounds every index.
        return unsafe { avx512::adam(c, w, g, m, v) };
    }
    #[cfg(target_arch = "x86_64")]
    if super::sgemm::available() {
        // SAFETY: AVX2 and FMA are present (checked); the assert bounds every index.
        return unsafe { avx2::adam(c, w, g, m, v) };
    }
    adam_portable(c, w, g, m, v)
}

/// [`adam`] without the instruction-set kernels (inlined into [`avx2::adam`]'s
/// AVX2 and FMA code).
#[inline(always)]
fn adam_portable(c: &AdamConsts, w: &mut [Lanes], g: &[Lanes], m: &mut [Lanes], v: &mut [Lanes]) {
    for (((w, g), m), v) in w.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        for l in 0..LANES {
            let g = if c.adamw {
                w[l] *= c.keep[l];
                g[l]
            } else {
                g[l] + c.decay[l] * w[l]
            };
            m[l] = c.b1[l] * m[l] + c.one_minus_b1[l] * g;
            v[l] = c.b2[l] * v[l] + c.one_minus_b2[l] * g * g;
            w[l] -= c.step_size[l] * m[l] / (v[l].sqrt() * c.inv_bc2_sqrt[l] + c.eps[l]);
        }
    }
}

/// Adam's constants at one step for every lane (each lane's run has its own learning rate,
/// betas, eps and weight decay), as [`crate::optim::Coeffs`] holds them (with `1 − β` and
/// AdamW's `1 − lr·λ` formed once, as the element function's expressions give them).
#[derive(Clone, Copy, Debug)]
pub struct AdamConsts {
    pub adamw: bool,
    pub decay: Lanes,
    pub keep: Lanes,
    pub b1: Lanes,
    pub one_minus_b1: Lanes,
    pub b2: Lanes,
    pub one_minus_b2: Lanes,
    pub step_size: Lanes,
    pub inv_bc2_sqrt: Lanes,
    pub eps: Lanes,
}

/// What a GEMM tile does with `α·acc (+ β·C)`: store it, or (β = 0) add the bias of its column
/// and store its tanh (the layer's activation, straight from registers).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum Epi {
    Store,
    Tanh(Option<*const Lanes>),
}

/// The depth of one block of the kernels' sum (`chain`): all of `k` while what the tiles reuse
/// fits in `budget` bytes (half the L1 data cache for AVX-512, all of it for AVX2) — all of `op(B)` (read again for each row of tiles) and one
/// row of tiles' 4 rows of `op(A)` (read again for each tile in it) — else the most steps that
/// do (at least 8), in even blocks.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn k_block(n: usize, k: usize, budget: usize) -> usize {
    let per_step = (n + 4) * std::mem::size_of::<Lanes>();
    let fit = (budget / per_step.max(1)).max(8);
    if fit >= k {
        k
    } else {
        k.div_ceil(k.div_ceil(fit))
    }
}

/// The AVX-512 kernels: one zmm per [`Lanes`]. Each applies, per lane, the same IEEE operations
/// in the same order as the portable code beside its caller (no operation is fused that is not
/// fused there), so either path gives the same bits.
#[cfg(target_arch = "x86_64")]
pub(super) mod avx512 {
    use super::{AdamConsts, Epi, Lanes, LANES};
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn ld(p: *const Lanes) -> __m512 {
        _mm512_loadu_ps(p as *const f32)
    }
    #[inline(always)]
    unsafe fn st(p: *mut Lanes, v: __m512) {
        _mm512_storeu_ps(p as *mut f32, v)
    }

    /// `C(i, j) = α·Σ_p A(i, p)·B(p, j) (+ β·C)`, the sum one FMA chain from zero; `A(i, p)`
    /// at `a + i·ars + p·aps`, `B(p, j)` at `b + p·bps + j·bjs`, `C` row-major `[m, n]`.
    ///
    /// SAFETY: AVX-512F; every address the strides reach for `i < m, j < n, p < k` is in
    /// bounds, and `c` holds `m·n` lanes aliasing neither input.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn chain(
        (m, n, k): (usize, usize, usize),
        alpha: f32,
        (a, ars, aps): (*const Lanes, usize, usize),
        (b, bps, bjs): (*const Lanes, usize, usize),
        beta: f32,
        c: *mut Lanes,
        epi: Epi,
    ) {
        // Every operand is dense in one of its two directions (`strides`), so a tile's unit
        // strides are compile-time constants: with all four strides in registers, LLVM spilled
        // them and reloaded one per two FMAs.
        assert!(
            (ars == 1 || aps == 1) && (bps == 1 || bjs == 1),
            "lanes::chain: an operand dense in neither direction"
        );
        // The sum over `p` in blocks whose operands fit in L1 together, each tile's raw
        // accumulators kept in C between blocks (β = 0: C holds nothing else): the same chain
        // of FMAs, so the same bits. A width-16 weight gradient, `[16 × 64]ᵀ·[64 × 16]`, read its
        // operands 1 KiB apart per step, so 64 steps overfilled L1's sets: on Zen 5 it took
        // 5.1 µs, blocks of 16 steps 3.3–3.4 (the forward's GEMM of as many FMAs: 2.7).
        let kb = if beta == 0.0 {
            super::k_block(n, k, crate::engine::sgemm::l1d_bytes() / 2)
        } else {
            k
        };
        let mut p0 = 0;
        while p0 < k {
            let kc = kb.min(k - p0);
            let t = Tile {
                k: kc,
                n,
                alpha,
                beta,
                ars,
                aps,
                bps,
                bjs,
                epi,
                resume: p0 > 0,
                finish: p0 + kc == k,
            };
            tiles(&t, m, n, a.add(p0 * aps), b.add(p0 * bps), c);
            p0 += kc;
        }
    }

    /// Every tile of C over one block of the sum ([`Tile::k`] steps from `a` and `b`).
    ///
    /// SAFETY: as [`chain`]'s, for the block's steps.
    #[target_feature(enable = "avx512f")]
    unsafe fn tiles(t: &Tile, m: usize, n: usize, a: *const Lanes, b: *const Lanes, c: *mut Lanes) {
        let (ars, bjs) = (t.ars, t.bjs);
        // 4×4: 16 accumulators, 4 B vectors and an A vector stay in the 32 registers. 4×6 had
        // LLVM spill 5 vectors per unrolled pair of steps; measured on the development machine
        // (Zen 5), 4×4 took the width-16 forward from 15–16 to 12–15 µs per group-step and the
        // evaluation from 334–382 to 271–333 ns per row (4 interleaved runs; backward even).
        const I: usize = 4;
        const J: usize = 4;
        let mut i = 0;
        while i < m {
            let ir = I.min(m - i);
            let mut j = 0;
            while j < n {
                let jr = J.min(n - j);
                let (ap, bp, cp) = (a.add(i * ars), b.add(j * bjs), c.add(i * n + j));
                let t = &Tile {
                    epi: match t.epi {
                        Epi::Tanh(Some(bias)) => Epi::Tanh(Some(bias.add(j))),
                        e => e,
                    },
                    ..*t
                };
                macro_rules! pick {
                    ($at:literal, $bt:literal; $($ii:literal)*) => {
                        match (ir, jr) {
                            $(($ii, 4) => tile::<$ii, 4, $at, $bt>(t, ap, bp, cp),
                              ($ii, 3) => tile::<$ii, 3, $at, $bt>(t, ap, bp, cp),
                              ($ii, 2) => tile::<$ii, 2, $at, $bt>(t, ap, bp, cp),
                              ($ii, 1) => tile::<$ii, 1, $at, $bt>(t, ap, bp, cp),)*
                            _ => unreachable!("tiles are at most 4×4"),
                        }
                    };
                }
                match (ars == 1, t.bps == 1) {
                    (false, false) => pick!(false, false; 1 2 3 4),
                    (false, true) => pick!(false, true; 1 2 3 4),
                    (true, false) => pick!(true, false; 1 2 3 4),
                    (true, true) => pick!(true, true; 1 2 3 4),
                }
                j += jr;
            }
            i += ir;
        }
    }

    #[derive(Clone, Copy)]
    struct Tile {
        k: usize,
        n: usize,
        alpha: f32,
        beta: f32,
        ars: usize,
        aps: usize,
        bps: usize,
        bjs: usize,
        epi: Epi,
        /// The sum goes on from the raw accumulators an earlier block left in C.
        resume: bool,
        /// The sum's last block: the epilogue follows (else the raw accumulators go to C).
        finish: bool,
    }

    /// One `I×J` block of C in registers. `AT`: A's rows are adjacent (`ars = 1`; otherwise its
    /// steps over `p` are, `aps = 1`); `BT`: B's steps over `p` are adjacent (`bps = 1`;
    /// otherwise its columns are, `bjs = 1`).
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const I: usize, const J: usize, const AT: bool, const BT: bool>(
        t: &Tile,
        a: *const Lanes,
        b: *const Lanes,
        c: *mut Lanes,
    ) {
        let (ars, aps) = if AT { (1, t.aps) } else { (t.ars, 1) };
        let (bps, bjs) = if BT { (1, t.bjs) } else { (t.bps, 1) };
        let mut acc = [[_mm512_setzero_ps(); J]; I];
        if t.resume {
            for (ii, acc) in acc.iter_mut().enumerate() {
                for (jj, v) in acc.iter_mut().enumerate() {
                    *v = ld(c.add(ii * t.n + jj));
                }
            }
        }
        for p in 0..t.k {
            let mut bv = [_mm512_setzero_ps(); J];
            for (jj, bv) in bv.iter_mut().enumerate() {
                *bv = ld(b.add(p * bps + jj * bjs));
            }
            for (ii, acc) in acc.iter_mut().enumerate() {
                let av = ld(a.add(ii * ars + p * aps));
                for jj in 0..J {
                    acc[jj] = _mm512_fmadd_ps(av, bv[jj], acc[jj]);
                }
            }
        }
        if !t.finish {
            for (ii, acc) in acc.iter().enumerate() {
                for (jj, &v) in acc.iter().enumerate() {
                    st(c.add(ii * t.n + jj), v);
                }
            }
            return;
        }
        let (alpha, beta) = (_mm512_set1_ps(t.alpha), _mm512_set1_ps(t.beta));
        for (ii, acc) in acc.iter().enumerate() {
            for (jj, &v) in acc.iter().enumerate() {
                let dst = c.add(ii * t.n + jj);
                // α = 1 (most layers) leaves the product exact: no multiply.
                let mut v = if t.alpha == 1.0 {
                    v
                } else {
                    _mm512_mul_ps(v, alpha)
                };
                if t.beta != 0.0 {
                    v = _mm512_fmadd_ps(beta, ld(dst), v);
                }
                match t.epi {
                    Epi::Store => st(dst, v),
                    Epi::Tanh(bias) => {
                        if let Some(bias) = bias {
                            v = _mm512_add_ps(v, ld(bias.add(jj)));
                        }
                        st(dst, tanh(v));
                    }
                }
            }
        }
    }

    /// One row of [`super::gather_rows`]: `dst[e][l] = at[l][e]` for `e < w`.
    ///
    /// SAFETY: AVX-512F and VL; each `at[l]` heads `w` readable floats, `dst` holds `w` lanes.
    #[target_feature(enable = "avx512f,avx512vl")]
    pub(super) unsafe fn gather_row(at: &[*const f32; LANES], w: usize, dst: *mut Lanes) {
        // Chunks [a.0, b.0, a.2, b.2] and [a.1, b.1, a.3, b.3] of 4 floats: the last step of
        // two 8×8 transposes side by side.
        let lo = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
        let hi = _mm512_setr_epi32(4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
        let mut e0 = 0;
        while e0 < w {
            let m = (w - e0).min(8);
            let mask = ((1u32 << m) - 1) as __mmask8;
            // z[j]: lane j's 8 floats, then lane j + 8's.
            let z: [__m512; 8] = std::array::from_fn(|j| {
                let a = _mm256_maskz_loadu_ps(mask, at[j].add(e0));
                let b = _mm256_maskz_loadu_ps(mask, at[j + 8].add(e0));
                _mm512_castpd_ps(_mm512_insertf64x4::<1>(
                    _mm512_castpd256_pd512(_mm256_castps_pd(a)),
                    _mm256_castps_pd(b),
                ))
            });
            // Per 4-float chunk: pairs of lanes, then quadruples, per element.
            let t: [__m512; 8] = std::array::from_fn(|i| {
                let (a, b) = (z[2 * (i / 2)], z[2 * (i / 2) + 1]);
                if i % 2 == 0 {
                    _mm512_unpacklo_ps(a, b)
                } else {
                    _mm512_unpackhi_ps(a, b)
                }
            });
            // u[g·4 + e]: element e (and e + 4) of lanes 4g..4g + 3 (and 8 + 4g..), g = 0, 1.
            let u: [__m512; 8] = std::array::from_fn(|i| {
                let (g, e) = (i / 4, i % 4);
                let (a, b) = (t[4 * g + e / 2], t[4 * g + 2 + e / 2]);
                if e % 2 == 0 {
                    _mm512_shuffle_ps::<0x44>(a, b)
                } else {
                    _mm512_shuffle_ps::<0xEE>(a, b)
                }
            });
            for e in 0..4 {
                if e < m {
                    st(dst.add(e0 + e), _mm512_permutex2var_ps(u[e], lo, u[4 + e]));
                }
                if e + 4 < m {
                    st(
                        dst.add(e0 + e + 4),
                        _mm512_permutex2var_ps(u[e], hi, u[4 + e]),
                    );
                }
            }
            e0 += 8;
        }
    }

    /// [`super::fastmath::tanh_f32`] on 16 lanes, operation for operation.
    #[target_feature(enable = "avx512f")]
    pub(in crate::engine) unsafe fn tanh(x: __m512) -> __m512 {
        use crate::engine::fastmath::tanh_consts::*;
        let s = _mm512_set1_ps;
        // `clamp`: max(lo, x) and min(hi, ·) return x itself when it is NaN, as `clamp` does.
        let xc = _mm512_min_ps(s(CLAMP), _mm512_max_ps(s(-CLAMP), x));
        let x2 = _mm512_mul_ps(xc, xc);
        let x3 = _mm512_mul_ps(x2, xc);
        let mut p = _mm512_fmadd_ps(x2, s(A3), s(A2));
        p = _mm512_fmadd_ps(x2, p, s(A1));
        p = _mm512_fmadd_ps(x2, p, s(A0));
        let p = _mm512_fmadd_ps(x3, p, xc);
        let mut q = _mm512_fmadd_ps(x2, s(B4), s(B3));
        q = _mm512_fmadd_ps(x2, q, s(B2));
        q = _mm512_fmadd_ps(x2, q, s(B1));
        q = _mm512_fmadd_ps(x2, q, s(1.0));
        _mm512_div_ps(p, q)
    }

    /// SAFETY: AVX-512F; `h.len() ≥ z.len()`, a bias holds `width` lanes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn bias_tanh(
        width: usize,
        bias: Option<&[Lanes]>,
        z: &mut [Lanes],
        h: &mut [Lanes],
    ) {
        let (zp, hp) = (z.as_mut_ptr(), h.as_mut_ptr());
        match bias {
            Some(b) => {
                for r in 0..z.len() / width {
                    for j in 0..width {
                        let e = r * width + j;
                        let v = _mm512_add_ps(ld(zp.add(e)), ld(b.as_ptr().add(j)));
                        st(zp.add(e), v);
                        st(hp.add(e), tanh(v));
                    }
                }
            }
            None => {
                for e in 0..z.len() {
                    st(hp.add(e), tanh(ld(zp.add(e))));
                }
            }
        }
    }

    /// SAFETY: AVX-512F; `h.len() ≥ g.len()`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn tanh_slope(g: &mut [Lanes], h: &[Lanes]) {
        let one = _mm512_set1_ps(1.0);
        for (gv, hv) in g.iter_mut().zip(h) {
            let hv = ld(hv);
            let s = _mm512_sub_ps(one, _mm512_mul_ps(hv, hv));
            st(gv, _mm512_mul_ps(ld(gv), s));
        }
    }

    /// Adam's constants in registers, for [`AdamRegs::step`]: the lanes' own, or one tensor's
    /// broadcast to every lane (the GEMM epilogue of [`crate::engine::sgemm::Extra::Adam`]).
    #[derive(Clone, Copy)]
    pub(in crate::engine) struct AdamRegs {
        adamw: bool,
        decay: __m512,
        keep: __m512,
        b1: __m512,
        omb1: __m512,
        b2: __m512,
        omb2: __m512,
        step: __m512,
        inv: __m512,
        eps: __m512,
    }

    impl AdamRegs {
        /// SAFETY: AVX-512F.
        #[inline(always)]
        pub(in crate::engine) unsafe fn load(c: &AdamConsts) -> Self {
            let s = |x: &Lanes| ld(x);
            AdamRegs {
                adamw: c.adamw,
                decay: s(&c.decay),
                keep: s(&c.keep),
                b1: s(&c.b1),
                omb1: s(&c.one_minus_b1),
                b2: s(&c.b2),
                omb2: s(&c.one_minus_b2),
                step: s(&c.step_size),
                inv: s(&c.inv_bc2_sqrt),
                eps: s(&c.eps),
            }
        }

        /// One vector of [`crate::optim::Coeffs::adam`]: the new `(w, m, v)` from `w`, the
        /// gradient `g` and the moments `m`, `v`, operation for operation (nothing fused).
        ///
        /// SAFETY: AVX-512F.
        #[inline(always)]
        pub(in crate::engine) unsafe fn step(
            &self,
            w: __m512,
            g: __m512,
            m: __m512,
            v: __m512,
        ) -> (__m512, __m512, __m512) {
            let (w, g) = if self.adamw {
                (_mm512_mul_ps(w, self.keep), g)
            } else {
                (w, _mm512_add_ps(g, _mm512_mul_ps(self.decay, w)))
            };
            let m = _mm512_add_ps(_mm512_mul_ps(self.b1, m), _mm512_mul_ps(self.omb1, g));
            let v = _mm512_add_ps(
                _mm512_mul_ps(self.b2, v),
                _mm512_mul_ps(_mm512_mul_ps(self.omb2, g), g),
            );
            let den = _mm512_add_ps(_mm512_mul_ps(_mm512_sqrt_ps(v), self.inv), self.eps);
            let upd = _mm512_div_ps(_mm512_mul_ps(self.step, m), den);
            (_mm512_sub_ps(w, upd), m, v)
        }
    }

    /// SAFETY: AVX-512F; `g`, `m`, `v` at least as long as `w`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn adam(
        c: &AdamConsts,
        w: &mut [Lanes],
        g: &[Lanes],
        m: &mut [Lanes],
        v: &mut [Lanes],
    ) {
        let regs = AdamRegs::load(c);
        for e in 0..w.len() {
            let (wp, mp, vp) = (
                w.as_mut_ptr().add(e),
                m.as_mut_ptr().add(e),
                v.as_mut_ptr().add(e),
            );
            let (wv, mv, vv) = regs.step(ld(wp), ld(g.as_ptr().add(e)), ld(mp), ld(vp));
            st(wp, wv);
            st(mp, mv);
            st(vp, vv);
        }
    }

    /// [`super::dot_rows`]. SAFETY: AVX-512F; `a` holds `m·k`, `b` `k`, `c` `m` lanes.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn dot_rows(
        m: usize,
        k: usize,
        alpha: f32,
        a: &[Lanes],
        b: &[Lanes],
        beta: f32,
        c: &mut [Lanes],
    ) {
        let whole = k / 8 * 8;
        let (al, be) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
        for i in 0..m {
            let row = a.as_ptr().add(i * k);
            let mut acc = [_mm512_setzero_ps(); 8];
            let mut p = 0;
            while p < whole {
                for (q, acc) in acc.iter_mut().enumerate() {
                    let prod = _mm512_mul_ps(ld(row.add(p + q)), ld(b.as_ptr().add(p + q)));
                    *acc = _mm512_add_ps(*acc, prod);
                }
                p += 8;
            }
            let mut tail = _mm512_setzero_ps();
            for p in whole..k {
                let prod = _mm512_mul_ps(ld(row.add(p)), ld(b.as_ptr().add(p)));
                tail = _mm512_add_ps(tail, prod);
            }
            // `fold_lanes`: ((a0 + a4) + (a1 + a5)) + ((a2 + a6) + (a3 + a7)), then the tail.
            let lo = _mm512_add_ps(_mm512_add_ps(acc[0], acc[4]), _mm512_add_ps(acc[1], acc[5]));
            let hi = _mm512_add_ps(_mm512_add_ps(acc[2], acc[6]), _mm512_add_ps(acc[3], acc[7]));
            let d = _mm512_add_ps(_mm512_add_ps(lo, hi), tail);
            let cp = c.as_mut_ptr().add(i);
            let v = _mm512_mul_ps(al, d);
            if beta == 0.0 {
                st(cp, v);
            } else {
                st(cp, _mm512_add_ps(v, _mm512_mul_ps(be, ld(cp))));
            }
        }
    }

    /// [`super::axpy`]. SAFETY: AVX-512F; `a` holds `k`, `b` `k·n`, `c` `n` lanes.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn axpy(
        n: usize,
        k: usize,
        alpha: f32,
        a: &[Lanes],
        b: &[Lanes],
        beta: f32,
        c: &mut [Lanes],
    ) {
        // Sixteen columns at a time in registers, each summed over `p` in order: the same
        // adds as through memory, without a load and a store per product (a weight gradient of
        // one output took 1.1 µs for 1,024 products on Zen 5).
        let mut j0 = 0;
        while j0 < n {
            // The widest block of 16, 8, 4, 2 or 1 columns that fits what is left.
            let width = 1 << (n - j0).min(16).ilog2();
            let (ap, bp, cp) = (a.as_ptr(), b.as_ptr().add(j0), c.as_mut_ptr().add(j0));
            match width {
                16 => axpy_block::<16>(n, k, alpha, ap, bp, beta, cp),
                8 => axpy_block::<8>(n, k, alpha, ap, bp, beta, cp),
                4 => axpy_block::<4>(n, k, alpha, ap, bp, beta, cp),
                2 => axpy_block::<2>(n, k, alpha, ap, bp, beta, cp),
                _ => axpy_block::<1>(n, k, alpha, ap, bp, beta, cp),
            }
            j0 += width;
        }
    }

    /// `J` columns of [`axpy`]: `b` and `c` head the block (row stride `n`).
    ///
    /// SAFETY: AVX-512F; `a` holds `k` lanes, `b` `k` rows of `n` with `J` from its head,
    /// `c` `J` lanes.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    unsafe fn axpy_block<const J: usize>(
        n: usize,
        k: usize,
        alpha: f32,
        a: *const Lanes,
        b: *const Lanes,
        beta: f32,
        c: *mut Lanes,
    ) {
        let (al, be) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
        let mut acc: [__m512; J] = std::array::from_fn(|jj| {
            if beta == 0.0 {
                _mm512_setzero_ps()
            } else if beta != 1.0 {
                _mm512_mul_ps(ld(c.add(jj)), be)
            } else {
                ld(c.add(jj))
            }
        });
        for p in 0..k {
            let ap = _mm512_mul_ps(al, ld(a.add(p)));
            for (jj, acc) in acc.iter_mut().enumerate() {
                let prod = _mm512_mul_ps(ap, ld(b.add(p * n + jj)));
                *acc = _mm512_add_ps(*acc, prod);
            }
        }
        for (jj, &v) in acc.iter().enumerate() {
            st(c.add(jj), v);
        }
    }

    /// [`super::outer`]. SAFETY: AVX-512F; `a` holds `m`, `b` `n`, `c` `m·n` lanes.
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn outer(
        m: usize,
        n: usize,
        alpha: f32,
        a: &[Lanes],
        b: &[Lanes],
        beta: f32,
        c: &mut [Lanes],
    ) {
        let (al, be) = (_mm512_set1_ps(alpha), _mm512_set1_ps(beta));
        for i in 0..m {
            let ai = _mm512_mul_ps(al, ld(a.as_ptr().add(i)));
            for j in 0..n {
                let cp = c.as_mut_ptr().add(i * n + j);
                let v = _mm512_mul_ps(ai, ld(b.as_ptr().add(j)));
                if beta == 0.0 {
                    st(cp, v);
                } else {
                    st(cp, _mm512_add_ps(v, _mm512_mul_ps(be, ld(cp))));
                }
            }
        }
    }

    /// [`super::column_sums`], eight columns at a time (independent sums, so the adds
    /// overlap): SAFETY: AVX-512F; `acc` holds `width` lanes, `g` whole rows.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn column_sums(g: &[Lanes], width: usize, acc: &mut [Lanes]) {
        let rows = g.len() / width;
        let mut j0 = 0;
        while j0 < width {
            let w = 8.min(width - j0);
            let mut s = [_mm512_setzero_ps(); 8];
            for r in 0..rows {
                let row = g.as_ptr().add(r * width + j0);
                for (q, s) in s.iter_mut().enumerate().take(w) {
                    *s = _mm512_add_ps(*s, ld(row.add(q)));
                }
            }
            for (q, &s) in s.iter().enumerate().take(w) {
                st(acc.as_mut_ptr().add(j0 + q), s);
            }
            j0 += w;
        }
    }

    /// [`super::mse`]. SAFETY: AVX-512F; `out`, `y`, `g` hold `n` lanes.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn mse(
        out: &[Lanes],
        y: &[Lanes],
        scale: f32,
        g: &mut [Lanes],
    ) -> [f64; LANES] {
        let sc = _mm512_set1_ps(scale);
        let (mut lo, mut hi) = (_mm512_setzero_pd(), _mm512_setzero_pd());
        for e in 0..out.len() {
            let d = _mm512_sub_ps(ld(out.as_ptr().add(e)), ld(y.as_ptr().add(e)));
            // The square and the sum in f64, as `loss::mse` takes them.
            let dl = _mm512_cvtps_pd(_mm512_castps512_ps256(d));
            let dh = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(
                _mm512_castps_pd(d),
                1,
            )));
            lo = _mm512_add_pd(lo, _mm512_mul_pd(dl, dl));
            hi = _mm512_add_pd(hi, _mm512_mul_pd(dh, dh));
            st(g.as_mut_ptr().add(e), _mm512_mul_ps(sc, d));
        }
        let mut sums = [0.0f64; LANES];
        _mm512_storeu_pd(sums.as_mut_ptr(), lo);
        _mm512_storeu_pd(sums.as_mut_ptr().add(8), hi);
        sums
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{ops, Rng};

    /// Every branch of `gemm` against `gemm_ex` on each lane's model alone, bit for bit.
    #[test]
    fn gemm_matches_each_model_alone() {
        if !crate::engine::sgemm::available() {
            eprintln!("skipped: lockstep lanes need AVX-512 or AVX2+FMA");
            return;
        }
        let mut rng = Rng::stream(7, "lanes-test");
        let shapes = [
            (64, 16, 8),
            (64, 16, 16),
            (64, 1, 16),
            (64, 1, 13),
            (1, 16, 64),
            (1, 31, 9),
            (64, 16, 1),
            (16, 16, 64),
            (16, 8, 64),
            (3, 5, 7),
            (37, 19, 21),
            (7, 33, 256),
            (1, 1, 1),
        ];
        for &(m, n, k) in &shapes {
            for ta in [Op::N, Op::T] {
                for tb in [Op::N, Op::T] {
                    for (alpha, beta) in [(1.0, 0.0), (0.5, 1.0), (1.25, 0.75)] {
                        let draw = |rng: &mut Rng, len: usize| -> Vec<Lanes> {
                            (0..len)
                                .map(|_| std::array::from_fn(|_| rng.normal() as f32))
                                .collect()
                        };
                        let a = draw(&mut rng, m * k);
                        let b = draw(&mut rng, k * n);
                        let c0 = draw(&mut rng, m * n);
                        let mut c = c0.clone();
                        gemm(ta, tb, (m, n, k), alpha, &a, &b, beta, &mut c);
                        for l in 0..LANES {
                            let one = |t: &[Lanes]| t.iter().map(|v| v[l]).collect::<Vec<f32>>();
                            let (al, bl) = (one(&a), one(&b));
                            let mut cl = one(&c0);
                            ops::gemm(ta, tb, m, n, k, alpha, &al, &bl, beta, &mut cl);
                            for (e, (x, y)) in cl.iter().zip(one(&c)).enumerate() {
                                assert_eq!(
                                    x.to_bits(),
                                    y.to_bits(),
                                    "{ta:?}{tb:?} m{m} n{n} k{k} α{alpha} β{beta} lane {l} element {e}: {x} vs {y}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// The vector tanh (fused into the GEMM or not) against `tanh_f32` element by element,
    /// special values included.
    #[test]
    fn tanh_kernels_match_the_scalar_tanh() {
        let specials = [
            f32::NAN,
            f32::INFINITY,
            f32::NEG_INFINITY,
            0.0,
            -0.0,
            1e-30,
            -1e-40,
            7.9,
            -8.0,
            20.0,
            0.5,
            -3.25,
            f32::MAX,
            f32::MIN_POSITIVE,
            1e-20,
            -2.0,
        ];
        let mut rng = Rng::stream(5, "lanes-tanh");
        let width = 3;
        let mut z: Vec<Lanes> = (0..4 * width)
            .map(|_| std::array::from_fn(|_| (rng.normal() * 4.0) as f32))
            .collect();
        z[0] = specials;
        let bias: Vec<Lanes> = (0..width)
            .map(|_| std::array::from_fn(|_| rng.normal() as f32))
            .collect();
        for with_bias in [false, true] {
            let b = with_bias.then_some(bias.as_slice());
            let mut zz = z.clone();
            let mut h = zeros(z.len());
            bias_tanh(width, b, &mut zz, &mut h);
            for (e, (hv, zv)) in h.iter().zip(&z).enumerate() {
                for l in 0..LANES {
                    let v = if with_bias {
                        zv[l] + bias[e % width][l]
                    } else {
                        zv[l]
                    };
                    let want = crate::engine::fastmath::tanh_f32(v);
                    assert_eq!(hv[l].to_bits(), want.to_bits(), "{v}: {} vs {want}", hv[l]);
                }
            }
        }
        // Fused into the GEMM: the same as the GEMM, then the pass.
        let (m, n, k) = (9, width, 5);
        let a: Vec<Lanes> = (0..m * k)
            .map(|_| std::array::from_fn(|_| rng.normal() as f32))
            .collect();
        let w: Vec<Lanes> = (0..n * k)
            .map(|_| std::array::from_fn(|_| rng.normal() as f32))
            .collect();
        let mut fused = zeros(m * n);
        if gemm_bias_tanh(
            Op::N,
            Op::T,
            (m, n, k),
            0.75,
            &a,
            &w,
            Some(&bias),
            &mut fused,
        ) {
            let mut z = zeros(m * n);
            gemm(Op::N, Op::T, (m, n, k), 0.75, &a, &w, 0.0, &mut z);
            let mut h = zeros(m * n);
            bias_tanh(n, Some(&bias), &mut z, &mut h);
            assert_eq!(fused, h);
        }
    }

    /// MSE and Adam in lanes against `loss::loss` and the optimizer's element function.
    #[test]
    fn mse_and_adam_match() {
        use crate::optim::{Coeffs, Hyper, Optimizer};
        let mut rng = Rng::stream(9, "lanes-mse-adam");
        let n = 37;
        let draw = |rng: &mut Rng| -> Vec<Lanes> {
            (0..n)
                .map(|_| std::array::from_fn(|_| rng.normal() as f32))
                .collect()
        };
        let (out, y) = (draw(&mut rng), draw(&mut rng));
        let mut g = zeros(n);
        let sums = mse(&out, &y, &mut g);
        for l in 0..LANES {
            let one = |t: &[Lanes]| t.iter().map(|v| v[l]).collect::<Vec<f32>>();
            let mut gl = vec![0.0; n];
            let v = crate::nn::loss::loss(
                crate::spec::LossKind::Mse,
                &one(&out),
                &one(&y),
                n,
                1,
                Some(&mut gl),
            );
            assert_eq!((sums[l] / n as f64).to_bits(), v.loss.to_bits());
            assert_eq!(gl, one(&g));
        }
        for optimizer in [Optimizer::Adam, Optimizer::Adamw] {
            let h = Hyper {
                optimizer,
                momentum: 0.0,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.05,
            };
            // A learning rate per lane, as runs of one group may have.
            let cs: [Coeffs<f32>; LANES] = std::array::from_fn(|l| {
                Coeffs::new(&h, 3, 0.01 * (1.0 + l as f64), Default::default(), true)
            });
            let (mut w, g, mut m, mut v) = (
                draw(&mut rng),
                draw(&mut rng),
                draw(&mut rng),
                draw(&mut rng),
            );
            for x in v.iter_mut().flatten() {
                *x = x.abs();
            }
            let (w0, m0, v0) = (w.clone(), m.clone(), v.clone());
            adam(&Coeffs::adam_consts(&cs), &mut w, &g, &mut m, &mut v);
            for e in 0..n {
                for l in 0..LANES {
                    let (mut we, mut me, mut ve) = (w0[e][l], m0[e][l], v0[e][l]);
                    cs[l].adam(&mut we, g[e][l], &mut me, &mut ve);
                    assert_eq!(
                        (we.to_bits(), me.to_bits(), ve.to_bits()),
                        (w[e][l].to_bits(), m[e][l].to_bits(), v[e][l].to_bits()),
                        "{optimizer:?}"
                    );
                }
            }
        }
    }

    /// The transposing kernel puts every lane's picked row where the plain loop does, for
    /// widths around its 8-column blocks.
    #[test]
    fn gather_rows_matches_the_plain_loop() {
        let mut rng = crate::engine::Rng::stream(3, "gather");
        for w in [1, 2, 3, 7, 8, 9, 16, 17] {
            let n = 40;
            let rows = 13;
            let data: Vec<Vec<f32>> = (0..LANES)
                .map(|_| (0..n * w).map(|_| rng.normal() as f32).collect())
                .collect();
            let perms: Vec<Vec<usize>> = (0..LANES).map(|_| rng.permutation(n)).collect();
            let src: [&[f32]; LANES] = std::array::from_fn(|l| data[l].as_slice());
            // Lane 5 reads its first rows in order.
            let picks: [Option<&[usize]>; LANES] =
                std::array::from_fn(|l| (l != 5).then(|| &perms[l][..rows]));
            let mut got = zeros(rows * w);
            gather_rows(&mut got, w, rows, &src, &picks);
            for l in 0..LANES {
                for k in 0..rows {
                    let i = picks[l].map_or(k, |p| p[k]);
                    for e in 0..w {
                        assert_eq!(
                            got[k * w + e][l],
                            data[l][i * w + e],
                            "w {w} lane {l} row {k}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "beyond a split")]
    fn gather_rows_refuses_a_pick_beyond_the_split() {
        let data = vec![0.0f32; 8 * 4];
        let src: [&[f32]; LANES] = std::array::from_fn(|_| data.as_slice());
        let bad = [4usize];
        let picks: [Option<&[usize]>; LANES] = std::array::from_fn(|_| Some(&bad[..]));
        gather_rows(&mut zeros(8), 8, 1, &src, &picks);
    }

    #[test]
    fn column_sums_match() {
        let mut rng = Rng::stream(3, "lanes-colsum");
        let (rows, width) = (37, 19);
        let g: Vec<Lanes> = (0..rows * width)
            .map(|_| std::array::from_fn(|_| rng.normal() as f32))
            .collect();
        let mut acc = zeros(width);
        column_sums(&g, width, &mut acc);
        for l in 0..LANES {
            let gl: Vec<f32> = g.iter().map(|v| v[l]).collect();
            let mut want = vec![0.0f32; width];
            ops::column_sums_by_columns(&gl, width, &mut want);
            for j in 0..width {
                assert_eq!(want[j].to_bits(), acc[j][l].to_bits());
            }
        }
    }

    /// The AVX2 kernels pass the tests above on an AVX-512 CPU too (forced), against the same
    /// references: each model alone on the AVX-512 GEMM, the scalar tanh, the plain loops.
    #[test]
    fn avx2_kernels_pass_the_same_tests() {
        if !crate::engine::sgemm::avx512() {
            eprintln!("no AVX-512 on this CPU: the tests above ran the AVX2 kernels already");
            return;
        }
        FORCE_AVX2.with(|f| f.set(true));
        gemm_matches_each_model_alone();
        tanh_kernels_match_the_scalar_tanh();
        mse_and_adam_match();
        gather_rows_matches_the_plain_loop();
        column_sums_match();
        FORCE_AVX2.with(|f| f.set(false));
    }
}
