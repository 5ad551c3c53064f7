//! The numeric core: the scalar trait, GEMM, fused elementwise kernels' math, reductions and the
//! RNG. It is the only place that knows the machine (CPU today, a CUDA backend later): models
//! call the narrow set of operations in [`ops`], never a GEMM crate directly, and split work
//! over threads with the safe iterators of [`par`]. All of the crate's `unsafe` numerics live
//! here, each block with its SAFETY note.

pub mod attend;
pub mod direct;
pub mod fastmath;
pub mod float;
pub mod gelu;
pub mod hugepages;
pub mod lanes;
pub mod ops;
pub mod par;
pub mod pool;
pub mod rng;
pub mod sgemm;
pub mod tanh64;

pub use float::Float;

/// The GEMM kernel a dtype runs on this CPU, as benchmark figures name it.
pub fn gemm_kernel(f32: bool) -> &'static str {
    if f32 && sgemm::avx512() {
        match sgemm::adam_prefetch() {
            sgemm::AdamPrefetch::Burst => {
                "cloudchamber AVX-512 sgemm (12×32 tile, Adam operands prefetched at each tile's start)"
            }
            sgemm::AdamPrefetch::Ahead => {
                "cloudchamber AVX-512 sgemm (12×32 tile, Adam operands prefetched a tile ahead)"
            }
        }
    } else if f32 && sgemm::available() {
        "cloudchamber AVX2+FMA sgemm (6×16 tile)"
    } else if f32 {
        "matrixmultiply sgemm"
    } else {
        "matrixmultiply dgemm"
    }
}
pub use rng::Rng;
