//! `[model.denoiser]`: a PFGM++/diffusion denoiser `D_θ(x, σ)` (the model is
//! `model::denoiser`). Its network is the MLP of the flat `[model]` keys; this section holds
//! what turns it into a generative model: the augmented dimension D of the perturbation kernel,
//! the noise-level distribution, the noise embedding, EDM's preconditioning constant σ_data, the
//! sampler and what each evaluation measures.

use serde::{Deserialize, Serialize};

/// The augmented dimension D of PFGM++ (Xu et al. 2023): data in N dimensions is embedded in
/// N + D. D = 1 is Poisson flow (PFGM, Xu et al. 2022); D → ∞ is diffusion (EDM's Gaussian
/// kernel). Written `aug_dim = 128` or `aug_dim = "inf"`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AugDim {
    Finite(f64),
    Infinite,
}

impl AugDim {
    /// `"inf"` or the number.
    pub fn label(self) -> String {
        match self {
            AugDim::Finite(d) => format!("{d}"),
            AugDim::Infinite => "inf".into(),
        }
    }
}

impl Serialize for AugDim {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            AugDim::Finite(d) => s.serialize_f64(*d),
            // A string, not f64::INFINITY: JSON (the run id's form) has no infinity.
            AugDim::Infinite => s.serialize_str("inf"),
        }
    }
}

impl<'de> Deserialize<'de> for AugDim {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AugDim;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number > 0, or \"inf\" (diffusion)")
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<AugDim, E> {
                if v == f64::INFINITY {
                    return Ok(AugDim::Infinite);
                }
                Ok(AugDim::Finite(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<AugDim, E> {
                Ok(AugDim::Finite(v as f64))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<AugDim, E> {
                Ok(AugDim::Finite(v as f64))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<AugDim, E> {
                match v {
                    "inf" | "infinity" | "∞" => Ok(AugDim::Infinite),
                    _ => Err(E::custom(format!(
                        "expected a number > 0 or \"inf\", got \"{v}\""
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The noise-level features the network reads beside `c_in·x`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoiseEmbedding {
    /// `[cos 2π f_k c, sin 2π f_k c]` with fixed `f_k ~ N(0, fourier_scale²)` (Tancik et al.
    /// 2020; NCSN++'s GaussianFourierProjection, EDM's `FourierEmbedding`).
    Fourier,
    /// `[cos f_k c, sin f_k c]` with `f_k = (1/10000)^(k/(K−1))` (the transformer's sinusoid,
    /// EDM's `PositionalEmbedding` with `endpoint = True`).
    Positional,
}

/// The ODE integrator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// First order: one denoiser call per step.
    Euler,
    /// EDM's second-order Heun step (Karras et al. 2022, Algorithm 1): two calls per step, one
    /// on the last.
    Heun,
}

/// `[model.denoiser]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DenoiserSpec {
    /// D = 128: inside PFGM++'s reported sweet spot (D ∈ [64, 2048] on CIFAR-10, Table 1).
    #[serde(default = "d_aug_dim")]
    pub aug_dim: AugDim,
    /// 0.5: EDM's σ_data for data scaled to [−1, 1]; set it to the data's per-coordinate std.
    #[serde(default = "d_sigma_data")]
    pub sigma_data: f64,
    /// ln σ ~ N(p_mean, p_std²) during training: EDM's −1.2 (Karras et al. 2022, Table 1).
    #[serde(default = "d_p_mean")]
    pub p_mean: f64,
    /// EDM's 1.2.
    #[serde(default = "d_p_std")]
    pub p_std: f64,
    /// Fourier features: EDM's choice for its NCSN++ networks.
    #[serde(default = "d_embedding")]
    pub embedding: NoiseEmbedding,
    /// 32 noise features (16 frequencies): ample for one scalar input.
    #[serde(default = "d_embed_dim")]
    pub embed_dim: usize,
    /// Std of the Fourier frequencies: 1, smooth features of `c_noise = ln(σ)/4`. EDM's 16 (for
    /// its U-Nets) measured worse with the MLP denoisers here: two moons' sample MMD² 0.0016
    /// against 0.0007 at 1, and at 16 a 1000-d mixture's network read σ as from a hash.
    #[serde(default = "d_fourier_scale")]
    pub fourier_scale: f64,
    #[serde(default)]
    pub sampler: SamplerSpec,
    #[serde(default)]
    pub eval: GenEvalSpec,
}

/// `[model.denoiser.sampler]`: EDM's deterministic sampler (Karras et al. 2022, Algorithm 1),
/// which PFGM++ uses unchanged with σ = r/√D.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamplerSpec {
    /// Heun: EDM's default.
    #[serde(default = "d_method")]
    pub method: Method,
    /// 18 steps (35 network calls with Heun): EDM's CIFAR-10 setting.
    #[serde(default = "d_steps")]
    pub steps: usize,
    /// EDM's 0.002.
    #[serde(default = "d_sigma_min")]
    pub sigma_min: f64,
    /// EDM's 80.
    #[serde(default = "d_sigma_max")]
    pub sigma_max: f64,
    /// ρ = 7: EDM's schedule exponent.
    #[serde(default = "d_rho")]
    pub rho: f64,
    /// α of the robustness test: `x += α·σ_i·ε` before every step (PFGM++ §5.3). 0 = none.
    #[serde(default)]
    pub noise: f64,
}

/// `[model.denoiser.eval]`: what each evaluation measures.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenEvalSpec {
    /// 1,000 generated samples against 1,000 held-out points: MMD's standard error is then
    /// well below the gap between a trained model and the prior.
    #[serde(default = "d_samples")]
    pub samples: usize,
    /// 128 random directions for the sliced Wasserstein distance.
    #[serde(default = "d_slices")]
    pub slices: usize,
    /// MMD's Gaussian kernels `exp(−‖a−b‖²/(β·m))`, β listed here, m the held-out data's mean
    /// squared distance: a spread of scales around the data's own.
    #[serde(default = "d_bandwidths")]
    pub bandwidths: Vec<f64>,
    /// 10 noise levels, log-spaced over the sampler's [σ_min, σ_max], for the loss per σ.
    #[serde(default = "d_sigma_levels")]
    pub sigma_levels: usize,
    /// 256 held-out points perturbed at each level.
    #[serde(default = "d_level_points")]
    pub level_points: usize,
    /// 16 sampling trajectories kept for the report.
    #[serde(default = "d_trajectories")]
    pub trajectories: usize,
}

fn d_aug_dim() -> AugDim {
    AugDim::Finite(128.0)
}
fn d_sigma_data() -> f64 {
    0.5
}
fn d_p_mean() -> f64 {
    -1.2
}
fn d_p_std() -> f64 {
    1.2
}
fn d_embedding() -> NoiseEmbedding {
    NoiseEmbedding::Fourier
}
fn d_embed_dim() -> usize {
    32
}
fn d_fourier_scale() -> f64 {
    1.0
}
fn d_method() -> Method {
    Method::Heun
}
fn d_steps() -> usize {
    18
}
fn d_sigma_min() -> f64 {
    0.002
}
fn d_sigma_max() -> f64 {
    80.0
}
fn d_rho() -> f64 {
    7.0
}
fn d_samples() -> usize {
    1000
}
fn d_slices() -> usize {
    128
}
fn d_bandwidths() -> Vec<f64> {
    vec![0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
}
fn d_sigma_levels() -> usize {
    10
}
fn d_level_points() -> usize {
    256
}
fn d_trajectories() -> usize {
    16
}

impl Default for DenoiserSpec {
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}
impl Default for SamplerSpec {
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}
impl Default for GenEvalSpec {
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

impl DenoiserSpec {
    /// Ranges and consistency; errors name `model.denoiser.<key>`.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad =
            |k: &str, m: String, h: &str| Err((format!("model.denoiser.{k}"), m, h.to_string()));
        if let AugDim::Finite(d) = self.aug_dim {
            if !(d.is_finite() && d > 0.0) {
                return bad(
                    "aug_dim",
                    format!("must be > 0 or \"inf\" (got {d})"),
                    "D = 1 is Poisson flow, \"inf\" is diffusion; e.g. aug_dim = 128",
                );
            }
        }
        for (k, v) in [
            ("sigma_data", self.sigma_data),
            ("p_std", self.p_std),
            ("fourier_scale", self.fourier_scale),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return bad(k, format!("must be a finite number > 0 (got {v})"), "");
            }
        }
        if !self.p_mean.is_finite() || self.p_mean.abs() > 20.0 {
            return bad(
                "p_mean",
                format!("must be within ±20 (got {})", self.p_mean),
                "it is the mean of ln σ; EDM uses −1.2",
            );
        }
        if self.embed_dim == 0 || !self.embed_dim.is_multiple_of(2) || self.embed_dim > 4096 {
            return bad(
                "embed_dim",
                format!("must be even, between 2 and 4096 (got {})", self.embed_dim),
                "a cosine and a sine per frequency; e.g. embed_dim = 32",
            );
        }
        let s = &self.sampler;
        if s.steps == 0 || s.steps > 10_000 {
            return bad(
                "sampler.steps",
                format!("must be between 1 and 10000 (got {})", s.steps),
                "EDM uses 18",
            );
        }
        if !(s.sigma_min.is_finite() && s.sigma_min > 0.0 && s.sigma_max.is_finite())
            || s.sigma_max <= s.sigma_min
        {
            return bad(
                "sampler.sigma_max",
                format!(
                    "needs 0 < sigma_min < sigma_max (got {} and {})",
                    s.sigma_min, s.sigma_max
                ),
                "EDM uses 0.002 and 80",
            );
        }
        if !(s.rho.is_finite() && s.rho > 0.0) {
            return bad(
                "sampler.rho",
                format!("must be > 0 (got {})", s.rho),
                "EDM uses 7",
            );
        }
        if !(s.noise.is_finite() && s.noise >= 0.0) {
            return bad(
                "sampler.noise",
                format!("must be ≥ 0 (got {})", s.noise),
                "0 samples without injected noise",
            );
        }
        let e = &self.eval;
        if e.samples < 2 || e.samples > 100_000 {
            return bad(
                "eval.samples",
                format!("must be between 2 and 100000 (got {})", e.samples),
                "1000 is the default",
            );
        }
        if e.slices == 0 || e.slices > 100_000 {
            return bad(
                "eval.slices",
                format!("must be between 1 and 100000 (got {})", e.slices),
                "",
            );
        }
        if e.bandwidths.is_empty() || e.bandwidths.iter().any(|b| !(b.is_finite() && *b > 0.0)) {
            return bad(
                "eval.bandwidths",
                format!(
                    "must be a non-empty list of numbers > 0 (got {:?})",
                    e.bandwidths
                ),
                "e.g. bandwidths = [0.1, 0.5, 1, 2]",
            );
        }
        if e.sigma_levels == 0 || e.sigma_levels > 1000 {
            return bad(
                "eval.sigma_levels",
                format!("must be between 1 and 1000 (got {})", e.sigma_levels),
                "",
            );
        }
        if e.level_points == 0 || e.level_points > 1_000_000 {
            return bad(
                "eval.level_points",
                format!("must be between 1 and 1000000 (got {})", e.level_points),
                "",
            );
        }
        if e.trajectories > e.samples {
            return bad(
                "eval.trajectories",
                format!(
                    "must be at most eval.samples = {} (got {})",
                    e.samples, e.trajectories
                ),
                "trajectories are kept for the first samples",
            );
        }
        Ok(())
    }
}
