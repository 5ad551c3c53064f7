//! Physics-guided generative models: the PFGM++ perturbation kernel (Xu et al. 2023), which
//! holds diffusion as its D → ∞ limit; EDM's samplers (Karras et al. 2022); the ideal denoiser
//! of a Gaussian mixture, the "perfect network" a trained one is measured against; and the
//! sample-quality metrics. The trained denoiser is `model::denoiser`; the loop's evaluation of
//! it is `train::generative`.

pub mod ideal;
pub mod kernel;
pub mod metrics;
pub mod sampler;

pub use ideal::Mixture;
pub use kernel::Kernel;
