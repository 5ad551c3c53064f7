//! Times the vectorizable `f32` approximations of `src/engine/fastmath.rs` against libm, over
//! one MLP step's worth of activations (128 × 256 × 3 = 98,304 elements).
//!
//! Run: `cargo bench --bench fastmath` (prints a table; no harness, no extra dependencies).
//! Each kernel is a plain `for (y, x) in ys.iter_mut().zip(xs)` loop in its own
//! `#[inline(never)]` function, exactly the shape the engine's elementwise code has, so what is
//! timed is what auto-vectorization makes of it. Reported: median over many repetitions,
//! after warm-up.

use std::hint::black_box;
use std::time::Instant;

use cloudchamber::engine::fastmath;

const N: usize = 128 * 256 * 3;
const WARMUP: usize = 20;
const REPS: usize = 400;

/// Deterministic inputs shaped like pre-activations: roughly normal with standard deviation 2
/// (sum of four uniforms), so both the linear part and the saturated tails are exercised.
fn inputs() -> Vec<f32> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut uniform = move || {
        // xorshift64*: enough for benchmark inputs.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..N)
        .map(|_| {
            let s = uniform() + uniform() + uniform() + uniform() - 2.0;
            // Sum of 4 U(0,1) has variance 1/3: scale to standard deviation 2.
            s * 2.0 * 3.0f32.sqrt()
        })
        .collect()
}

/// One elementwise loop: `ys[i] = f(xs[i])`.
type Kernel = fn(&[f32], &mut [f32]);

macro_rules! kernel {
    ($name:ident, $f:expr) => {
        #[inline(never)]
        fn $name(xs: &[f32], ys: &mut [f32]) {
            for (y, x) in ys.iter_mut().zip(xs) {
                *y = $f(*x);
            }
        }
    };
}

kernel!(tanh_libm, f32::tanh);
kernel!(tanh_fast, fastmath::tanh_f32);
kernel!(exp_libm, f32::exp);
kernel!(exp_fast, fastmath::exp_f32);
kernel!(erf_libm, libm::erff);
kernel!(erf_fast, fastmath::erf_f32);
kernel!(softplus_libm, |x: f32| x.max(0.0)
    + (-x.abs()).exp().ln_1p());
kernel!(softplus_fast, fastmath::softplus_f32);
kernel!(ln_libm, |x: f32| x.abs().ln());
kernel!(ln_fast, |x: f32| fastmath::ln_f32(x.abs()));

/// Median nanoseconds per element of `kernel` over `REPS` runs.
fn median_ns_per_element(kernel: Kernel, xs: &[f32], ys: &mut [f32]) -> f64 {
    for _ in 0..WARMUP {
        kernel(black_box(xs), black_box(&mut *ys));
    }
    let mut times: Vec<f64> = (0..REPS)
        .map(|_| {
            let start = Instant::now();
            kernel(black_box(xs), black_box(&mut *ys));
            black_box(&mut *ys);
            start.elapsed().as_nanos() as f64 / xs.len() as f64
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn main() {
    let xs = inputs();
    let mut ys = vec![0.0f32; N];
    println!("{N} elements, median of {REPS} repetitions after {WARMUP} warm-up runs");
    println!(
        "{:<10} {:>14} {:>14} {:>9}",
        "function", "libm ns/elem", "fast ns/elem", "speedup"
    );
    let pairs: [(&str, Kernel, Kernel); 5] = [
        ("tanh", tanh_libm, tanh_fast),
        ("exp", exp_libm, exp_fast),
        ("erf", erf_libm, erf_fast),
        ("softplus", softplus_libm, softplus_fast),
        ("ln", ln_libm, ln_fast),
    ];
    for (name, libm_kernel, fast_kernel) in pairs {
        let slow = median_ns_per_element(libm_kernel, &xs, &mut ys);
        let fast = median_ns_per_element(fast_kernel, &xs, &mut ys);
        println!("{name:<10} {slow:>14.3} {fast:>14.3} {:>8.1}x", slow / fast);
    }
    println!("(libm: std's f32 methods, i.e. the system libm; erf: the `libm` crate's erff)");
}
