//! The numeric core: the scalar trait, GEMM, fused elementwise kernels' math, reductions and the
//! RNG. It is the only place that knows the machine (CPU today, a CUDA backend later): models
//! call the narrow set of operations in [`ops`], never a GEMM crate directly, and split work
//! over threads with the safe iterators of [`par`]. All of the crate's `unsafe` numerics live
//! here, each block with its SAFETY note.

pub mod fastmath;
pub mod float;
pub mod hugepages;
pub mod ops;
pub mod par;
pub mod pool;
pub mod rng;
pub mod sgemm;

pub use float::Float;
pub use rng::Rng;
