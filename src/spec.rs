//! The experiment file: serde structs nested by concern, defaults with the reason for each,
//! `validate()` before any work, `--set` overrides, and the stable hash that names a run.
//!
//! Errors point into the file: unknown keys get the line and the nearest valid key, wrong types
//! and out-of-range values name the dotted key.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::nn::activation::Activation;
use crate::nn::init::{FanMode, Init};
use crate::nn::norm::{Norm, NormPosition};
use crate::optim::{Optimizer, Schedule};
use crate::task::{Dataset, TaskError, TaskSpec};

pub mod cnn;
pub mod denoiser;
pub mod gpt;
pub mod unet;
pub use cnn::CnnSpec;
pub use denoiser::DenoiserSpec;
pub use gpt::GptSpec;
pub use unet::UnetSpec;

// ---------------------------------------------------------------------------------------------
// The spec
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// Seeds every random stream of the run (data, init, batch order).
    #[serde(default)]
    pub seed: u64,
    pub task: TaskSpec,
    #[serde(default)]
    pub model: ModelSpec,
    #[serde(default)]
    pub optim: OptimSpec,
    #[serde(default)]
    pub train: TrainSpec,
    #[serde(default)]
    pub observe: ObserveSpec,
    #[serde(default)]
    pub output: OutputSpec,
}

/// Numeric precision of the model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dtype {
    F32,
    F64,
}

/// `[model]`: the model family and its config, one variant per family (a new family is one
/// variant here, one file in `src/model/` and one line in `model::build`).
///
/// In the file an MLP is the flat `[model]` table and a GPT is `[model.gpt]` (with `dtype` and
/// `norm_eps` in `[model]`): the layout of the first release, read and written by hand below so
/// that every existing file reads, and hashes to its run id, as before.
#[derive(Clone, Debug, PartialEq)]
pub enum ModelSpec {
    Mlp(MlpSpec),
    Gpt {
        gpt: GptSpec,
        dtype: Dtype,
        norm_eps: f64,
    },
    /// A PFGM++/diffusion denoiser: the MLP of the flat keys as its network, `[model.denoiser]`
    /// for the rest.
    Denoiser {
        net: MlpSpec,
        denoiser: DenoiserSpec,
    },
    /// A U-Net for segmentation (`[model.unet]`, with `dtype` and `norm_eps` in `[model]`).
    Unet {
        unet: UnetSpec,
        dtype: Dtype,
        norm_eps: f64,
    },
    /// A convolutional classifier (`[model.cnn]`, with `dtype` and `norm_eps` in `[model]`).
    Cnn {
        cnn: CnnSpec,
        dtype: Dtype,
        norm_eps: f64,
    },
}

impl Default for ModelSpec {
    /// The reference MLP.
    fn default() -> Self {
        ModelSpec::Mlp(MlpSpec::default())
    }
}

/// A config section with every key at its serde default: deserialized from an empty table, so
/// the defaults (each with its reason) are written once, on the fields.
pub(crate) fn all_defaults<T: serde::de::DeserializeOwned>() -> T {
    T::deserialize(toml::Value::Table(toml::Table::new()))
        .expect("every key of a config section has a serde default")
}

/// The model families, for what depends on the family alone (observables, data kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Mlp,
    Gpt,
    Denoiser,
    Unet,
    Cnn,
}

impl ModelSpec {
    pub fn family(&self) -> Family {
        match self {
            ModelSpec::Mlp(_) => Family::Mlp,
            ModelSpec::Gpt { .. } => Family::Gpt,
            ModelSpec::Denoiser { .. } => Family::Denoiser,
            ModelSpec::Unet { .. } => Family::Unet,
            ModelSpec::Cnn { .. } => Family::Cnn,
        }
    }
    pub fn dtype(&self) -> Dtype {
        match self {
            ModelSpec::Mlp(m) | ModelSpec::Denoiser { net: m, .. } => m.dtype,
            ModelSpec::Gpt { dtype, .. }
            | ModelSpec::Unet { dtype, .. }
            | ModelSpec::Cnn { dtype, .. } => *dtype,
        }
    }
    /// The norms' ε.
    pub fn norm_eps(&self) -> f64 {
        match self {
            ModelSpec::Mlp(m) | ModelSpec::Denoiser { net: m, .. } => m.norm_eps,
            ModelSpec::Gpt { norm_eps, .. }
            | ModelSpec::Unet { norm_eps, .. }
            | ModelSpec::Cnn { norm_eps, .. } => *norm_eps,
        }
    }
}

/// The flat `[model]` keys of a GPT: the MLP's defaults (as the first release wrote them, which
/// its run ids hash) with the model's `dtype` and `norm_eps`.
fn gpt_flat(dtype: Dtype, norm_eps: f64) -> MlpSpec {
    MlpSpec {
        dtype,
        norm_eps,
        ..MlpSpec::default()
    }
}

impl Serialize for ModelSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct WithGpt<'a> {
            #[serde(flatten)]
            flat: MlpSpec,
            gpt: &'a GptSpec,
        }
        #[derive(Serialize)]
        struct WithUnet<'a> {
            #[serde(flatten)]
            flat: MlpSpec,
            unet: &'a UnetSpec,
        }
        #[derive(Serialize)]
        struct WithCnn<'a> {
            #[serde(flatten)]
            flat: MlpSpec,
            cnn: &'a CnnSpec,
        }
        #[derive(Serialize)]
        struct WithDenoiser<'a> {
            #[serde(flatten)]
            net: &'a MlpSpec,
            denoiser: &'a DenoiserSpec,
        }
        match self {
            ModelSpec::Mlp(m) => m.serialize(s),
            ModelSpec::Denoiser { net, denoiser } => WithDenoiser { net, denoiser }.serialize(s),
            ModelSpec::Unet {
                unet,
                dtype,
                norm_eps,
            } => WithUnet {
                flat: gpt_flat(*dtype, *norm_eps),
                unet,
            }
            .serialize(s),
            ModelSpec::Cnn {
                cnn,
                dtype,
                norm_eps,
            } => WithCnn {
                flat: gpt_flat(*dtype, *norm_eps),
                cnn,
            }
            .serialize(s),
            ModelSpec::Gpt {
                gpt,
                dtype,
                norm_eps,
            } => WithGpt {
                flat: gpt_flat(*dtype, *norm_eps),
                gpt,
            }
            .serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    /// The flat keys go to [`MlpSpec`] (unknown ones are its errors, with their paths); a `gpt`
    /// table is taken out on the way and makes the model a GPT.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ModelSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a [model] table")
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ModelSpec, A::Error> {
                let (mut gpt, mut denoiser, mut unet, mut cnn, mut seen) =
                    (None, None, None, None, Vec::new());
                let flat = MlpSpec::deserialize(de::value::MapAccessDeserializer::new(TakeGpt {
                    inner: map,
                    gpt: &mut gpt,
                    denoiser: &mut denoiser,
                    unet: &mut unet,
                    cnn: &mut cnn,
                    seen: &mut seen,
                }))?;
                let sections = [
                    gpt.is_some(),
                    denoiser.is_some(),
                    unet.is_some(),
                    cnn.is_some(),
                ];
                if sections.iter().filter(|&&b| b).count() > 1 {
                    return Err(de::Error::custom(
                        "two of [model.gpt], [model.denoiser], [model.unet] and [model.cnn] \
                         together: a model is one of them",
                    ));
                }
                if let Some(denoiser) = denoiser {
                    return Ok(ModelSpec::Denoiser {
                        net: flat,
                        denoiser,
                    });
                }
                // A U-Net, like a GPT, takes only `dtype` and `norm_eps` from the flat keys.
                enum Other {
                    Gpt(GptSpec),
                    Unet(UnetSpec),
                    Cnn(CnnSpec),
                }
                let other = match (gpt, unet, cnn) {
                    (Some(g), _, _) => Other::Gpt(g),
                    (None, Some(u), _) => Other::Unet(u),
                    (None, None, Some(c)) => Other::Cnn(c),
                    (None, None, None) => return Ok(ModelSpec::Mlp(flat)),
                };
                // The MLP's own keys mean nothing to a transformer: refuse them, never ignore
                // them — except the form earlier versions stored (every key, at its default).
                let base = gpt_flat(flat.dtype, flat.norm_eps);
                let extra: Vec<String> = seen
                    .into_iter()
                    .filter(|k| k != "dtype" && k != "norm_eps")
                    .map(|k| format!("model.{k}"))
                    .collect();
                let all = serde_json::to_value(&base)
                    .ok()
                    .and_then(|v| v.as_object().map(|o| o.len()));
                // Stored by this version (every key) or by one before the later keys.
                let stored_form = flat == base
                    && (Some(extra.len() + 2) == all
                        || Some(extra.len() + 2 + LATER_MLP_KEYS) == all);
                if !extra.is_empty() && !stored_form {
                    let message = match other {
                        Other::Gpt(_) => format!("{NOT_FOR_GPT}{}", extra.join(", ")),
                        Other::Unet(_) => format!("{NOT_FOR_UNET}{}", extra.join(", ")),
                        Other::Cnn(_) => format!("{NOT_FOR_CNN}{}", extra.join(", ")),
                    };
                    return Err(de::Error::custom(message));
                }
                Ok(match other {
                    Other::Gpt(gpt) => ModelSpec::Gpt {
                        gpt,
                        dtype: flat.dtype,
                        norm_eps: flat.norm_eps,
                    },
                    Other::Unet(unet) => ModelSpec::Unet {
                        unet,
                        dtype: flat.dtype,
                        norm_eps: flat.norm_eps,
                    },
                    Other::Cnn(cnn) => ModelSpec::Cnn {
                        cnn,
                        dtype: flat.dtype,
                        norm_eps: flat.norm_eps,
                    },
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// How the refusal of MLP keys beside `[model.gpt]` starts (`classify` recognizes it).
const NOT_FOR_GPT: &str = "keys of the MLP beside [model.gpt]: ";
/// The same beside `[model.unet]`.
const NOT_FOR_UNET: &str = "keys of the MLP beside [model.unet]: ";
/// The same beside `[model.cnn]`.
const NOT_FOR_CNN: &str = "keys of the MLP beside [model.cnn]: ";

/// A `[model]` table's entries less `gpt` and `denoiser`, which go to their fields as they pass.
struct TakeGpt<'a, A> {
    inner: A,
    gpt: &'a mut Option<GptSpec>,
    denoiser: &'a mut Option<DenoiserSpec>,
    unet: &'a mut Option<UnetSpec>,
    cnn: &'a mut Option<CnnSpec>,
    /// The other keys, in file order.
    seen: &'a mut Vec<String>,
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for TakeGpt<'_, A> {
    type Error = A::Error;
    fn next_key_seed<K: de::DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        use serde::de::IntoDeserializer;
        while let Some(key) = self.inner.next_key::<String>()? {
            if key == "gpt" {
                *self.gpt = Some(self.inner.next_value()?);
                continue;
            }
            if key == "denoiser" {
                *self.denoiser = Some(self.inner.next_value()?);
                continue;
            }
            if key == "unet" {
                *self.unet = Some(self.inner.next_value()?);
                continue;
            }
            if key == "cnn" {
                *self.cnn = Some(self.inner.next_value()?);
                continue;
            }
            self.seen.push(key.clone());
            return seed.deserialize(key.into_deserializer()).map(Some);
        }
        Ok(None)
    }
    fn next_value_seed<V: de::DeserializeSeed<'de>>(
        &mut self,
        seed: V,
    ) -> Result<V::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// The multilayer perceptron (`[model]`, flat).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MlpSpec {
    /// Hidden width; 256 is the reference MLP's.
    #[serde(default = "d_width")]
    pub width: usize,
    /// Number of hidden layers; 3 is the reference MLP's (64→256→256→256→1).
    #[serde(default = "d_depth")]
    pub depth: usize,
    /// Linear layers carry biases, as `torch.nn.Linear` does by default.
    #[serde(default = "d_true")]
    pub bias: bool,
    /// tanh: bounded and smooth, the classic object of mean-field theory.
    #[serde(default = "d_activation")]
    pub activation: Activation,
    /// The biased form `a·f(x − b) + c`; the default (1, 0, 0, fixed) is the plain activation.
    #[serde(default)]
    pub act: BiasedActSpec,
    /// None: the activation as written. `self_normalizing` rescales and shifts it at
    /// initialization to `λ·(a·f(x − b) + c − μ)` with mean 0 and variance 1 under N(0, 1).
    #[serde(default = "d_calibrate")]
    pub calibrate: Calibrate,
    /// No normalization unless asked: the bare network is the baseline.
    #[serde(default = "d_norm")]
    pub norm: Norm,
    /// Before the activation, as in the BatchNorm paper.
    #[serde(default = "d_norm_position")]
    pub norm_position: NormPosition,
    /// 1e-5: `torch.nn.LayerNorm`/`BatchNorm1d`'s default.
    #[serde(default = "d_norm_eps")]
    pub norm_eps: f64,
    /// PyTorch's own `nn.Linear` default, so results compare with a plain PyTorch model.
    #[serde(default = "d_init")]
    pub init: Init,
    /// fan_in: preserves the forward signal, as `kaiming_normal_` does by default.
    #[serde(default = "d_fan_mode")]
    pub fan_mode: FanMode,
    /// 1: the scheme as published.
    #[serde(default = "d_one")]
    pub init_scale: f64,
    /// σ_w² = 1 (used by `init = "mean_field"`): the critical point of tanh at σ_b = 0.
    #[serde(default = "d_one")]
    pub sigma_w2: f64,
    /// σ_b² = 0 (used by `init = "mean_field"`).
    #[serde(default)]
    pub sigma_b2: f64,
    /// f32: the training precision; f64 is for gradient checks and theory comparisons.
    #[serde(default = "d_dtype")]
    pub dtype: Dtype,
    /// SP: PyTorch's defaults, nothing scaled with width (what every earlier run used).
    #[serde(default = "d_parametrization")]
    pub parametrization: crate::nn::parametrization::Parametrization,
    /// 256, the reference MLP's width: at the base width every parametrization is SP.
    #[serde(default = "d_base_width")]
    pub base_width: usize,
}

fn d_parametrization() -> crate::nn::parametrization::Parametrization {
    crate::nn::parametrization::Parametrization::Sp
}
fn d_base_width() -> usize {
    256
}

impl Default for MlpSpec {
    /// Every key at its serde default (the one place defaults live).
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

/// Calibration of the activation at initialization.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Calibrate {
    None,
    /// Mean 0 and variance 1 under a standard normal input (the NF-Net gain plus a shift).
    SelfNormalizing,
}

fn d_calibrate() -> Calibrate {
    Calibrate::None
}

/// `a·f(x − b) + c`: each of a, b, c fixed or learned, per layer or per neuron.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BiasedActSpec {
    #[serde(default = "ActParamSpec::one")]
    pub a: ActParamSpec,
    #[serde(default = "ActParamSpec::zero")]
    pub b: ActParamSpec,
    #[serde(default = "ActParamSpec::zero")]
    pub c: ActParamSpec,
}

impl Default for BiasedActSpec {
    /// Every key at its serde default (the one place defaults live).
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

impl BiasedActSpec {
    /// True when the form reduces to the plain activation (a = 1, b = 0, c = 0, all fixed).
    pub fn is_plain(&self) -> bool {
        self.a == ActParamSpec::one()
            && self.b == ActParamSpec::zero()
            && self.c == ActParamSpec::zero()
    }
}

/// Whether a parameter is trained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trainable {
    Fixed,
    Learned,
}

/// Whether a parameter is one scalar per layer or one value per neuron.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    Layer,
    Neuron,
}

/// One of a, b, c. In the file either a number (fixed, per layer) or a table
/// `{ init = 0.5, mode = "learned", per = "neuron" }`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ActParamSpec {
    pub init: f64,
    pub mode: Trainable,
    pub per: Granularity,
}

impl ActParamSpec {
    fn fixed(v: f64) -> Self {
        ActParamSpec {
            init: v,
            mode: Trainable::Fixed,
            per: Granularity::Layer,
        }
    }
    pub fn one() -> Self {
        Self::fixed(1.0)
    }
    pub fn zero() -> Self {
        Self::fixed(0.0)
    }
}

impl<'de> Deserialize<'de> for ActParamSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            init: f64,
            /// Fixed unless asked: a learned parameter is a different experiment.
            #[serde(default = "fixed")]
            mode: Trainable,
            /// One scalar per layer unless asked.
            #[serde(default = "layer")]
            per: Granularity,
        }
        fn fixed() -> Trainable {
            Trainable::Fixed
        }
        fn layer() -> Granularity {
            Granularity::Layer
        }
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ActParamSpec;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number or a table { init = …, mode = \"fixed\"|\"learned\", per = \"layer\"|\"neuron\" }")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ActParamSpec, E> {
                Ok(ActParamSpec::fixed(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ActParamSpec, E> {
                Ok(ActParamSpec::fixed(v as f64))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ActParamSpec, E> {
                Ok(ActParamSpec::fixed(v as f64))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ActParamSpec, A::Error> {
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(map))?;
                Ok(ActParamSpec {
                    init: t.init,
                    mode: t.mode,
                    per: t.per,
                })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimSpec {
    /// Adam: the default of modern practice and of the reference benchmark.
    #[serde(default = "d_optimizer")]
    pub optimizer: Optimizer,
    /// 1e-3: `torch.optim.Adam`'s default.
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// 0.9: the usual heavy-ball coefficient (used by `momentum` and `nesterov`).
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    /// (0.9, 0.999): `torch.optim.Adam`'s default.
    #[serde(default = "d_betas")]
    pub betas: [f64; 2],
    /// 1e-8: `torch.optim.Adam`'s default.
    #[serde(default = "d_eps")]
    pub eps: f64,
    /// Left out, it resolves to torch's default for the optimizer: 0.01 for AdamW, 0 otherwise.
    #[serde(default)]
    pub weight_decay: Option<f64>,
    /// Constant: nothing changes unless asked.
    #[serde(default = "d_schedule")]
    pub schedule: Schedule,
    /// No warm-up unless asked.
    #[serde(default)]
    pub warmup_steps: u64,
    /// Decay schedules end at this fraction of `lr`; 0 as in the cosine schedule of SGDR.
    #[serde(default)]
    pub final_lr_fraction: f64,
    /// Clip the global gradient norm to this value; no clipping when left out.
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
    /// Rescale all weights and biases of the linear layers to this total L2 norm after each step
    /// (the Omnigrok constraint, Liu et al. 2023); no constraint when left out.
    #[serde(default)]
    pub weight_norm: Option<f64>,
}

impl Default for OptimSpec {
    /// Every key at its serde default (the one place defaults live).
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

/// Mini-batch size, or `"full"` for full-batch gradient descent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchSize {
    Full,
    Size(usize),
}

impl Serialize for BatchSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            BatchSize::Full => s.serialize_str("full"),
            BatchSize::Size(n) => s.serialize_u64(*n as u64),
        }
    }
}

impl<'de> Deserialize<'de> for BatchSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = BatchSize;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a positive integer or \"full\"")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<BatchSize, E> {
                if v < 1 {
                    return Err(E::invalid_value(de::Unexpected::Signed(v), &self));
                }
                Ok(BatchSize::Size(v as usize))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<BatchSize, E> {
                self.visit_i64(v as i64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<BatchSize, E> {
                if v == "full" {
                    Ok(BatchSize::Full)
                } else {
                    Err(E::invalid_value(de::Unexpected::Str(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// The training loss. Left out, it follows the task: cross-entropy for classes, MSE otherwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// `torch.nn.MSELoss()` (mean over all elements).
    Mse,
    /// `torch.nn.CrossEntropyLoss()` (mean over the batch).
    CrossEntropy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSpec {
    /// 1000 steps: long enough to see a curve, short enough for a quick look.
    #[serde(default = "d_steps")]
    pub steps: u64,
    /// 128: the reference MLP's batch.
    #[serde(default = "d_batch")]
    pub batch_size: BatchSize,
    /// Resolved from the task when left out.
    #[serde(default)]
    pub loss: Option<LossKind>,
    /// Evaluate on the held-out set every 100 steps (and at the end).
    #[serde(default = "d_eval_every")]
    pub eval_every: u64,
    /// Stop early once the training loss falls to this value; never when left out.
    #[serde(default)]
    pub target_loss: Option<f64>,
    /// The run diverges when the loss exceeds this multiple of its first value (or is NaN/inf).
    /// 1e4: far above any healthy fluctuation.
    #[serde(default = "d_divergence")]
    pub divergence_factor: f64,
    /// One thread per run: many runs in parallel use the cores better than one wide run.
    #[serde(default = "d_threads")]
    pub threads: usize,
    /// Write a checkpoint every 1000 steps (0: never): a killed run loses at most that much
    /// work, and running it again resumes with bit-identical metrics.
    #[serde(default = "d_checkpoint_every")]
    pub checkpoint_every: u64,
}

impl Default for TrainSpec {
    /// Every key at its serde default (the one place defaults live).
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObserveSpec {
    /// Record observables every 10 steps (and at steps 0 and the last).
    #[serde(default = "d_log_every")]
    pub log_every: u64,
    /// Which observables to record; all of them when left out (the list is in README.md).
    #[serde(default)]
    pub observables: Option<Vec<String>>,
    /// Measure the sharpness (top Hessian eigenvalue of the batch loss) every this many steps;
    /// 0 (never) by default, since each measurement costs 2·`sharpness_iters` extra passes.
    #[serde(default)]
    pub sharpness_every: u64,
    /// Power iterations per sharpness measurement: 30 resolve the top eigenvalue to well under
    /// 1% when it is separated from the next by 20% or more.
    #[serde(default = "d_sharpness_iters")]
    pub sharpness_iters: usize,
}

impl Default for ObserveSpec {
    /// Every key at its serde default (the one place defaults live).
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    /// Write `weights_init.safetensors` and `weights_final.safetensors` to the run folder.
    #[serde(default)]
    pub save_weights: bool,
    /// Write `data.safetensors` (train.x, train.y, test.x, test.y) to the run folder.
    #[serde(default)]
    pub save_data: bool,
}

fn d_width() -> usize {
    256
}
fn d_depth() -> usize {
    3
}
fn d_true() -> bool {
    true
}
fn d_activation() -> Activation {
    Activation::Tanh
}
fn d_norm() -> Norm {
    Norm::None
}
fn d_norm_position() -> NormPosition {
    NormPosition::BeforeActivation
}
fn d_norm_eps() -> f64 {
    1e-5
}
fn d_init() -> Init {
    Init::Pytorch
}
fn d_fan_mode() -> FanMode {
    FanMode::FanIn
}
fn d_one() -> f64 {
    1.0
}
fn d_dtype() -> Dtype {
    Dtype::F32
}
fn d_optimizer() -> Optimizer {
    Optimizer::Adam
}
fn d_lr() -> f64 {
    1e-3
}
fn d_momentum() -> f64 {
    0.9
}
fn d_betas() -> [f64; 2] {
    [0.9, 0.999]
}
fn d_eps() -> f64 {
    1e-8
}
fn d_schedule() -> Schedule {
    Schedule::Constant
}
fn d_steps() -> u64 {
    1000
}
fn d_batch() -> BatchSize {
    BatchSize::Size(128)
}
fn d_eval_every() -> u64 {
    100
}
fn d_divergence() -> f64 {
    1e4
}
fn d_threads() -> usize {
    1
}
fn d_checkpoint_every() -> u64 {
    1000
}
fn d_sharpness_iters() -> usize {
    30
}
fn d_log_every() -> u64 {
    10
}

// ---------------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------------

/// A problem with an experiment file or an override. Always names the file and, where it can,
/// the line and the dotted key.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{path}: cannot read the experiment file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: TOML syntax error: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{location}: unknown key `{key}`{}", suggestion.as_ref().map(|s| format!(" (did you mean `{s}`?)")).unwrap_or_default())]
    UnknownKey {
        location: String,
        key: String,
        suggestion: Option<String>,
        valid: Vec<String>,
    },
    #[error("{location}: `{key}` = {value}: unknown value{}", suggestion.as_ref().map(|s| format!(" (did you mean \"{s}\"?)")).unwrap_or_default())]
    UnknownValue {
        location: String,
        key: String,
        value: String,
        suggestion: Option<String>,
        valid: Vec<String>,
    },
    #[error("{location}: `{key}` is missing")]
    MissingKey { location: String, key: String },
    #[error("{location}: `{key}` has the wrong type: {message}")]
    WrongType {
        location: String,
        key: String,
        message: String,
    },
    #[error("{location}: `{key}` {message}")]
    Invalid {
        location: String,
        key: String,
        message: String,
        hint: String,
    },
    #[error("--set {arg}: {message}")]
    BadOverride { arg: String, message: String },
}

impl SpecError {
    pub fn hints(&self) -> Vec<String> {
        match self {
            SpecError::Read { path, .. } => vec![format!(
                "check the path; experiment files live in examples/, e.g. `cloudchamber run examples/quickstart.toml` (looked for {})",
                path.display()
            )],
            SpecError::Syntax { .. } => vec!["see https://toml.io for the syntax; strings need quotes".into()],
            SpecError::UnknownKey { valid, .. } => vec![format!("valid keys here: {}", valid.join(", "))],
            SpecError::UnknownValue { valid, .. } => vec![format!("valid values: {}", valid.join(", "))],
            SpecError::MissingKey { key, .. } => vec![format!("add `{key}` to the experiment file (see the spec reference in README.md)")],
            SpecError::WrongType { .. } => vec!["see the spec reference in README.md for each key's type".into()],
            SpecError::Invalid { hint, .. } => vec![hint.clone()],
            SpecError::BadOverride { .. } => vec!["overrides look like `--set model.width=512` or `--set model.activation=\"relu\"`".into()],
        }
    }

    /// The dotted key the error is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            SpecError::UnknownKey { key, .. }
            | SpecError::UnknownValue { key, .. }
            | SpecError::MissingKey { key, .. }
            | SpecError::WrongType { key, .. }
            | SpecError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------------------------

/// A spec read from a file, with everything needed to report errors and to store it.
#[derive(Clone, Debug)]
pub struct LoadedSpec {
    pub spec: Spec,
    pub path: PathBuf,
    /// The experiment file's folder: relative data paths resolve against it.
    pub base_dir: PathBuf,
}

/// Reads, overrides, deserializes, resolves and validates an experiment file.
pub fn load(path: &Path, overrides: &[String]) -> Result<LoadedSpec, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let spec = parse(&text, path, overrides)?;
    let base_dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    Ok(LoadedSpec {
        spec,
        path: path.to_path_buf(),
        base_dir,
    })
}

/// [`load`] on text already read (`path` only names it in errors).
pub fn parse(text: &str, path: &Path, overrides: &[String]) -> Result<Spec, SpecError> {
    let table = parse_toml(text, path)?;
    let overrides = overrides
        .iter()
        .map(|arg| Override::from_arg(arg))
        .collect::<Result<Vec<_>, _>>()?;
    parse_table(table, text, path, &overrides)
}

/// The file's text as a TOML table; syntax errors name the file, line and column.
pub fn parse_toml(text: &str, path: &Path) -> Result<toml::Table, SpecError> {
    text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        SpecError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message: e.message().trim().to_string(),
        }
    })
}

/// Where an override came from: errors about its key point there instead of into the file.
#[derive(Clone, Debug, PartialEq)]
pub enum OverrideOrigin {
    /// `--set ARG` on the command line.
    Set(String),
    /// Anything else (a sweep point); the text is the location errors print.
    Other(String),
}

/// One dotted key set to a value before deserialization.
#[derive(Clone, Debug, PartialEq)]
pub struct Override {
    pub key: String,
    pub value: toml::Value,
    pub origin: OverrideOrigin,
}

impl Override {
    /// Parses `a.b.c=value` (value as TOML, or a plain string when it is not TOML).
    pub fn from_arg(arg: &str) -> Result<Override, SpecError> {
        let bad = |message: &str| SpecError::BadOverride {
            arg: clip(arg),
            message: message.to_string(),
        };
        let (key, raw) = arg
            .split_once('=')
            .ok_or_else(|| bad("expected KEY=VALUE"))?;
        let key = key.trim();
        if key.is_empty() || key.split('.').any(str::is_empty) {
            return Err(bad("the key must be a dotted path like model.width"));
        }
        let value: toml::Value = match format!("v = {raw}").parse::<toml::Table>() {
            Ok(mut t) => t
                .remove("v")
                .unwrap_or(toml::Value::String(raw.to_string())),
            Err(_) => toml::Value::String(raw.trim().to_string()),
        };
        Ok(Override {
            key: key.to_string(),
            value,
            origin: OverrideOrigin::Set(arg.to_string()),
        })
    }

    fn location(&self) -> String {
        match &self.origin {
            // A long value is quoted once, by the message, not again here.
            OverrideOrigin::Set(arg) if arg.chars().count() > QUOTE_MAX => {
                format!("--set {}=…", self.key)
            }
            OverrideOrigin::Set(arg) => format!("--set {arg}"),
            OverrideOrigin::Other(at) => at.clone(),
        }
    }

    /// Sets the dotted key in the table, creating sections on the way.
    fn apply(&self, table: &mut toml::Table) -> Result<(), SpecError> {
        let parts: Vec<&str> = self.key.split('.').collect();
        let (last, sections) = match parts.split_last() {
            Some(x) => x,
            None => return Err(self.error("the key must be a dotted path like model.width")),
        };
        let mut cur = table;
        for part in sections {
            let entry = cur
                .entry(part.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cur = match entry {
                toml::Value::Table(t) => t,
                _ => return Err(self.error(&format!("`{part}` is a value, not a section"))),
            };
        }
        cur.insert(last.to_string(), self.value.clone());
        Ok(())
    }

    fn error(&self, message: &str) -> SpecError {
        match &self.origin {
            OverrideOrigin::Set(arg) => SpecError::BadOverride {
                arg: clip(arg),
                message: message.to_string(),
            },
            OverrideOrigin::Other(at) => SpecError::Invalid {
                location: at.clone(),
                key: self.key.clone(),
                message: message.to_string(),
                hint: "a dotted key names a value inside the sections, like model.width".into(),
            },
        }
    }
}

/// [`parse`] on a table already parsed from `text` (which, with `path`, only locates errors),
/// with overrides already parsed. A table that declares a `[sweep]` is refused: it describes
/// many runs, and `cloudchamber sweep` expands it (after removing `sweep`).
pub fn parse_table(
    mut table: toml::Table,
    text: &str,
    path: &Path,
    overrides: &[Override],
) -> Result<Spec, SpecError> {
    one_task(&table, text, path)?;
    for o in overrides {
        // `--set task.moons.noise=…` on a teacher–student file would add a second task.
        if let (Some(kind), Some(toml::Value::Table(task))) = (
            o.key.strip_prefix("task.").and_then(|k| k.split_once('.')),
            table.get("task"),
        ) {
            if let Some(have) = task.keys().next().filter(|h| **h != kind.0) {
                return Err(o.error(&format!(
                    "the experiment's task is `task.{have}`, not `task.{}`: an override changes a key of that task, it cannot add a second one (e.g. `task.{have}.{}`)",
                    kind.0, kind.1
                )));
            }
        }
        o.apply(&mut table)?;
    }
    let locate_key = |key: &str| -> String {
        // The last override of a key wins, so it is the one to blame.
        if let Some(o) = overrides
            .iter()
            .rev()
            .find(|o| key == o.key || key.starts_with(&format!("{}.", o.key)))
        {
            return o.location();
        }
        match find_key_line(text, key) {
            Some(line) => format!("{}:{line}", path.display()),
            None => path.display().to_string(),
        }
    };
    if table.contains_key("sweep") {
        // `[sweep.axes]` alone has no `[sweep]` header: then the first line that opens it.
        let line = find_key_line(text, "sweep").or_else(|| {
            text.lines()
                .position(|l| l.trim_start().trim_start_matches('[').starts_with("sweep"))
                .map(|i| i + 1)
        });
        let location = match line {
            Some(line) if !overrides.iter().any(|o| o.key.starts_with("sweep")) => {
                format!("{}:{line}", path.display())
            }
            _ => locate_key("sweep"),
        };
        return Err(SpecError::Invalid {
            location,
            key: "sweep".into(),
            message: "declares a sweep (many runs); `run` runs one experiment".into(),
            hint: format!(
                "list the sweep's runs with `cloudchamber sweep {} --dry-run`",
                path.display()
            ),
        });
    }
    let mut spec: Spec = serde_path_to_error::deserialize(toml::Value::Table(table))
        .map_err(|e| classify(e, &locate_key))?;
    spec.resolve();
    spec.validate()
        .map_err(|(key, message, hint)| SpecError::Invalid {
            location: locate_key(&key),
            key,
            message,
            hint,
        })?;
    Ok(spec)
}

/// An experiment has one task: a second `[task.*]` section is refused by name, at its line
/// (serde alone would only say "wanted exactly 1 element").
fn one_task(table: &toml::Table, text: &str, path: &Path) -> Result<(), SpecError> {
    let Some(toml::Value::Table(task)) = table.get("task") else {
        return Ok(());
    };
    if task.len() < 2 {
        return Ok(());
    }
    let line = |kind: &str| find_key_line(text, &format!("task.{kind}")).unwrap_or(0);
    let mut kinds: Vec<&String> = task.keys().collect();
    kinds.sort_by_key(|k| line(k));
    let (first, second) = (kinds[0], kinds[1]);
    let at = line(second);
    Err(SpecError::Invalid {
        location: if at > 0 {
            format!("{}:{at}", path.display())
        } else {
            path.display().to_string()
        },
        key: format!("task.{second}"),
        message: format!(
            "is a second task (the file also has `[task.{first}]`); an experiment has exactly one"
        ),
        hint: "keep one [task.*] section (a sweep over tasks lists whole `task` tables in an axis)"
            .into(),
    })
}

/// Turns a serde error with its path into one of our structured errors.
fn classify(
    e: serde_path_to_error::Error<toml::de::Error>,
    locate: &dyn Fn(&str) -> String,
) -> SpecError {
    let path = e.path().to_string();
    let msg = e.inner().message().to_string();
    let backticked = |s: &str| -> Vec<String> {
        s.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_string)
            .collect()
    };
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        // "unknown field `widht`, expected one of `width`, `depth`"
        let names = backticked(rest);
        let key_name = names.first().cloned().unwrap_or_default();
        let valid: Vec<String> = names.into_iter().skip(1).collect();
        // serde_path_to_error's path ends at the unknown field itself.
        let key = if path.rsplit('.').next() == Some(key_name.as_str()) {
            path.clone()
        } else if path == "." || path.is_empty() {
            key_name.clone()
        } else {
            format!("{path}.{key_name}")
        };
        let mut valid = valid;
        // `[sweep]` is not a field of the spec, nor `[model.gpt]` one of the MLP's keys, but a
        // typo of either deserves the suggestion.
        if !key.contains('.') && !valid.iter().any(|v| v == "sweep") {
            valid.push("sweep".into());
        }
        if key.strip_prefix("model.").is_some_and(|k| !k.contains('.')) {
            valid.push("gpt".into());
        }
        return SpecError::UnknownKey {
            location: locate(&key),
            suggestion: nearest(&key_name, &valid),
            key,
            valid,
        };
    }
    if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let names = backticked(rest);
        let value = names.first().cloned().unwrap_or_default();
        let valid: Vec<String> = names.into_iter().skip(1).collect();
        // For the externally tagged `[task.X]` the variant is a key, not a value.
        if path == "task"
            || path.starts_with("task.") && path.matches('.').count() == 1 && path.ends_with(&value)
        {
            let key = format!("task.{value}");
            return SpecError::UnknownKey {
                location: locate(&key),
                suggestion: nearest(&value, &valid),
                key,
                valid,
            };
        }
        return SpecError::UnknownValue {
            location: locate(&path),
            value: format!("\"{}\"", clip(&value)),
            suggestion: also_known_as(&value, &valid).or_else(|| nearest(&value, &valid)),
            key: path,
            valid,
        };
    }
    if let Some(rest) = msg.strip_prefix("missing field ") {
        let field = backticked(rest).first().cloned().unwrap_or_default();
        let key = if path == "." || path.is_empty() {
            field
        } else {
            format!("{path}.{field}")
        };
        return SpecError::MissingKey {
            location: locate(&key),
            key,
        };
    }
    if let Some(keys) = msg.strip_prefix(NOT_FOR_GPT) {
        let key = keys.split(", ").next().unwrap_or("model").to_string();
        return SpecError::Invalid {
            location: locate(&key),
            message: format!("does not apply to a transformer (set beside [model.gpt]: {keys})"),
            key,
            hint: "remove it: with [model.gpt] only model.dtype and model.norm_eps apply, and the \
                   transformer's own keys go in [model.gpt]"
                .into(),
        };
    }
    if let Some(keys) = msg.strip_prefix(NOT_FOR_CNN) {
        let key = keys.split(", ").next().unwrap_or("model").to_string();
        return SpecError::Invalid {
            location: locate(&key),
            message: format!("does not apply to a CNN (set beside [model.cnn]: {keys})"),
            key,
            hint: "remove it: with [model.cnn] only model.dtype and model.norm_eps apply, and \
                   the CNN's own keys go in [model.cnn]"
                .into(),
        };
    }
    if let Some(keys) = msg.strip_prefix(NOT_FOR_UNET) {
        let key = keys.split(", ").next().unwrap_or("model").to_string();
        return SpecError::Invalid {
            location: locate(&key),
            message: format!("does not apply to a U-Net (set beside [model.unet]: {keys})"),
            key,
            hint: "remove it: with [model.unet] only model.dtype and model.norm_eps apply, and \
                   the U-Net's own keys go in [model.unet]"
                .into(),
        };
    }
    SpecError::WrongType {
        location: locate(&path),
        key: path,
        message: plain_types(&clip_words(&msg)),
    }
}

/// serde's Rust type names (`expected usize`) as a user reads them (`expected a whole number`).
fn plain_types(msg: &str) -> String {
    let mut out = msg.to_string();
    for (rust, plain) in [
        ("usize", "a whole number ≥ 0"),
        ("u64", "a whole number ≥ 0"),
        ("u32", "a whole number ≥ 0"),
        ("u16", "a whole number ≥ 0"),
        ("u8", "a whole number ≥ 0"),
        ("i64", "a whole number"),
        ("i32", "a whole number"),
        ("f64", "a number"),
        ("f32", "a number"),
    ] {
        out = out.replace(&format!("expected {rust}"), &format!("expected {plain}"));
    }
    out
}

/// Longest user text an error quotes (a value, an override): beyond it, the start and a count.
const QUOTE_MAX: usize = 60;

/// `s` as an error quotes it: whole when short, else its first [`QUOTE_MAX`] characters and how
/// many more there were (a 10 MB value gives a one-line error).
pub fn clip(s: &str) -> String {
    let n = s.chars().count();
    if n <= QUOTE_MAX {
        return s.to_string();
    }
    let head: String = s.chars().take(QUOTE_MAX).collect();
    format!("{head}… ({} more characters)", n - QUOTE_MAX)
}

/// [`clip`] on every whitespace-separated word of a message (serde's messages quote values).
fn clip_words(msg: &str) -> String {
    msg.split(' ').map(clip).collect::<Vec<_>>().join(" ")
}

/// Other names in use for the values we accept (papers and frameworks differ), when the valid
/// list holds ours: `swish` is `silu` (Ramachandran et al. 2017 named it swish).
fn also_known_as(got: &str, valid: &[String]) -> Option<String> {
    const ALIASES: &[(&str, &str)] = &[
        ("swish", "silu"),
        ("swish1", "silu"),
        ("gelu_new", "gelu_tanh"),
        ("gelu_approx", "gelu_tanh"),
        ("linear", "identity"),
        ("none", "identity"),
        ("lrelu", "leaky_relu"),
        ("logistic", "sigmoid"),
        ("layer_norm", "layernorm"),
        ("batch_norm", "batchnorm"),
        ("rms_norm", "rmsnorm"),
        ("ce", "cross_entropy"),
        ("l2", "mse"),
    ];
    let got = got.to_lowercase();
    ALIASES
        .iter()
        .find(|(a, ours)| *a == got && valid.iter().any(|v| v == ours))
        .map(|(_, ours)| ours.to_string())
}

/// The valid name closest to `got`, if it is close enough to be a plausible typo.
pub fn nearest(got: &str, valid: &[String]) -> Option<String> {
    valid
        .iter()
        .map(|v| (strsim::damerau_levenshtein(got, v), v))
        .filter(|(d, v)| *d <= 2.max(v.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, v)| v.clone())
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    (line, column)
}

/// The line where a dotted key is written, for files in the usual `[section]` / `key = v` style.
pub fn find_key_line(text: &str, key: &str) -> Option<usize> {
    let mut section = String::new();
    let mut best = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.starts_with('[') && !line.starts_with("[[") {
            section = line
                .trim_matches(|c| c == '[' || c == ']')
                .trim()
                .to_string();
            if section == key {
                best = Some(i + 1);
            }
            continue;
        }
        if let Some((k, _)) = line.split_once('=') {
            let k = k.trim().trim_matches('"');
            let full = if section.is_empty() {
                k.to_string()
            } else {
                format!("{section}.{k}")
            };
            if full == key {
                return Some(i + 1);
            }
            // An inline table `a = { init = … }` holds `a.init`.
            if key.starts_with(&format!("{full}.")) && best.is_none() {
                best = Some(i + 1);
            }
        }
    }
    best.or_else(|| {
        // Fall back to the enclosing section's header.
        let parent = key.rsplit_once('.')?.0;
        find_key_line(text, parent)
    })
}

// ---------------------------------------------------------------------------------------------
// Resolution, validation, identity
// ---------------------------------------------------------------------------------------------

type Invalid = (String, String, String);

fn invalid(key: &str, message: impl Into<String>, hint: impl Into<String>) -> Invalid {
    (key.to_string(), message.into(), hint.into())
}

/// [`invalid`] when `bad`.
fn reject(bad: bool, key: &str, message: impl Into<String>, hint: &str) -> Result<(), Invalid> {
    if bad {
        return Err(invalid(key, message, hint));
    }
    Ok(())
}

impl MlpSpec {
    /// Ranges and consistency of the MLP's keys.
    pub fn validate(&self) -> Result<(), Invalid> {
        let m = self;
        reject(
            m.width == 0 || m.width > 1 << 16,
            "model.width",
            format!("must be between 1 and 65536 (got {})", m.width),
            "e.g. model.width = 256",
        )?;
        reject(
            m.depth > 10_000,
            "model.depth",
            format!("must be at most 10000 (got {})", m.depth),
            "depth counts hidden layers",
        )?;
        for (k, v) in [
            ("model.init_scale", m.init_scale),
            ("model.sigma_w2", m.sigma_w2),
            ("model.sigma_b2", m.sigma_b2),
        ] {
            reject(
                !(v.is_finite() && v >= 0.0),
                k,
                format!("must be a finite number ≥ 0 (got {v})"),
                "variances and scales are non-negative",
            )?;
        }
        check_norm_eps(m.norm_eps)?;
        reject(
            m.base_width == 0 || m.base_width > 1 << 16,
            "model.base_width",
            format!("must be between 1 and 65536 (got {})", m.base_width),
            "the width at which every parametrization is SP, e.g. base_width = 64",
        )?;
        reject(
            m.calibrate == Calibrate::SelfNormalizing && m.act.a.init == 0.0,
            "model.calibrate",
            "needs a nonzero model.act.a (a constant activation has no variance to normalize)",
            "set model.act.a ≠ 0, or calibrate = \"none\"",
        )?;
        for (k, p) in [
            ("model.act.a", &m.act.a),
            ("model.act.b", &m.act.b),
            ("model.act.c", &m.act.c),
        ] {
            reject(
                !p.init.is_finite(),
                k,
                format!("must be finite (got {})", p.init),
                "give a number",
            )?;
        }
        Ok(())
    }
}

fn check_norm_eps(eps: f64) -> Result<(), Invalid> {
    reject(
        !(eps.is_finite() && eps > 0.0),
        "model.norm_eps",
        format!("must be > 0 (got {eps})"),
        "1e-5 is PyTorch's default",
    )
}

impl Spec {
    /// Fills every value that defaults from another (loss from the task, weight decay from the
    /// optimizer), so the stored spec says everything.
    pub fn resolve(&mut self) {
        if self.optim.weight_decay.is_none() {
            self.optim.weight_decay = Some(self.optim.optimizer.default_weight_decay());
        }
        if self.train.loss.is_none() {
            // A denoiser trains on EDM's weighted squared error whatever its data's labels.
            let denoiser = matches!(self.model, ModelSpec::Denoiser { .. });
            self.train.loss = Some(if self.task.is_classification() && !denoiser {
                LossKind::CrossEntropy
            } else {
                LossKind::Mse
            });
        }
        if self.observe.observables.is_none() {
            let all = crate::observe::defaults(self.model.family());
            self.observe.observables = Some(all.iter().map(|s| s.to_string()).collect());
        }
    }

    /// The checks that need the data itself, run once the task is built and before any model
    /// is: a file task's image shape against a conv net (a U-Net's poolings need the height and
    /// width to halve `depth` times; a CNN's stages must not pool the image away, and it needs
    /// images, not feature rows). Errors name the model key, so the CLI points at its line.
    pub fn check_data(&self, data: &Dataset) -> Result<(), TaskError> {
        let fail = |key: &str, msg: String, hint: String| {
            Err(TaskError::Shape {
                key: key.to_string(),
                msg,
                hint,
            })
        };
        match &self.model {
            ModelSpec::Unet { unet, .. } => {
                let Some(img) = data.image else {
                    return fail(
                        "model.unet",
                        format!("segments images, but task.{} yields none", self.task.kind()),
                        "use [task.shapes] or [task.images]".into(),
                    );
                };
                let step = 1usize << unet.depth;
                if !img.height.is_multiple_of(step) || !img.width.is_multiple_of(step) {
                    return fail(
                        "model.unet.depth",
                        format!(
                            "pools {} times, which needs the image height and width to be multiples of {step} (the images of task.{} are {}×{})",
                            unet.depth,
                            self.task.kind(),
                            img.height,
                            img.width
                        ),
                        format!(
                            "lower the depth, or crop or pad the images to multiples of {step}"
                        ),
                    );
                }
            }
            ModelSpec::Cnn { cnn, .. } => {
                let Some(img) = data.image else {
                    return fail(
                        format!("task.{}", self.task.kind()).as_str(),
                        format!(
                            "yields rows of {} features, not images: [model.cnn] needs images",
                            data.input_dim()
                        ),
                        "give IDX images of shape [n, h, w] or [n, c, h, w], or use an MLP".into(),
                    );
                };
                let stages = cnn.channels.len();
                if img.height >> stages == 0 || img.width >> stages == 0 {
                    return fail(
                        "model.cnn.channels",
                        format!(
                            "{stages} stages pool a {}×{} image away",
                            img.height, img.width
                        ),
                        "use fewer stages or larger images".into(),
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks ranges and consistency before any work. Returns (key, message, hint).
    pub fn validate(&self) -> Result<(), Invalid> {
        self.task.validate().map_err(|e| {
            let key = e.key().unwrap_or("task").to_string();
            // The error prints the key itself; the message after it is what to add.
            let text = e.to_string();
            let message = text
                .strip_prefix(&format!("{key}: "))
                .unwrap_or(&text)
                .to_string();
            (key, message, e.hints().join("; "))
        })?;
        let m = &self.model;
        // The model against the data it gets: feature rows or token windows.
        match (m, self.task.is_sequence()) {
            (ModelSpec::Gpt { gpt, norm_eps, .. }, true) => {
                gpt.validate()?;
                check_norm_eps(*norm_eps)?;
                // Prompts are regression (squared error); tokens are classified. A prompt model's
                // read-out has no token table to share.
                let prompts = matches!(self.task, TaskSpec::InContext(_));
                reject(
                    prompts && gpt.tying == crate::spec::gpt::Tying::Tied,
                    "model.gpt.tying",
                    "a prompt model has no token table to tie its read-out to",
                    "leave `tying` out (untied) for [task.in_context]",
                )?;
                reject(
                    self.train.loss == Some(LossKind::Mse) && !prompts,
                    "train.loss",
                    "a language model trains with cross_entropy",
                    "drop train.loss or set it to \"cross_entropy\"",
                )?;
            }
            (ModelSpec::Unet { unet, norm_eps, .. }, false) => {
                unet.validate()?;
                check_norm_eps(*norm_eps)?;
                let classes = match &self.task {
                    TaskSpec::Shapes(shapes) => {
                        reject(
                            shapes.target != crate::task::shapes::ShapesTarget::Mask,
                            "task.shapes.target",
                            "must be \"mask\" for a segmentation model",
                            "drop target (masks are the default), or use [model.cnn] to classify images",
                        )?;
                        let step = 1usize << unet.depth;
                        reject(
                            !shapes.size.is_multiple_of(step),
                            "model.unet.depth",
                            &format!(
                                "pools {} times, which needs the image size to be a multiple of {step} (task.shapes.size = {})",
                                unet.depth, shapes.size
                            ),
                            "lower the depth or pick a size that halves that often, e.g. size = 64",
                        )?;
                        shapes.classes
                    }
                    // The image size is known once the files are read (`check_data`).
                    TaskSpec::Images(images) => images.classes,
                    _ => {
                        return Err(invalid(
                            "model.unet",
                            format!("segments images (got task.{})", self.task.kind()),
                            "use [task.shapes] (see examples/unet-shapes.toml) or a folder of images and masks, [task.images]",
                        ))
                    }
                };
                reject(
                    classes != 2
                        && matches!(unet.loss, unet::SegLoss::Bce | unet::SegLoss::BceDice),
                    "model.unet.loss",
                    &format!("is binary, but the task has {classes} classes"),
                    "use loss = \"cross_entropy\" or \"dice\" for more than two classes",
                )?;
                // `resolve` writes the task's default (cross-entropy) into train.loss; anything
                // else was asked for, and a U-Net's loss is its own key.
                reject(
                    self.train.loss != Some(LossKind::CrossEntropy),
                    "train.loss",
                    "does not apply to a U-Net, whose loss is model.unet.loss",
                    "drop train.loss and set model.unet.loss",
                )?;
                reject(
                    unet.norm == unet::ChannelNorm::Batchnorm && self.train.batch_size == BatchSize::Size(1),
                    "train.batch_size",
                    "must be ≥ 2 with batchnorm (batch statistics need two samples)",
                    "raise the batch size or pick another norm",
                )?;
            }
            (ModelSpec::Unet { .. }, true) => {
                return Err(invalid(
                    "model.unet",
                    format!("segments images, not sequences (got task.{})", self.task.kind()),
                    "use [task.shapes] or [task.images]",
                ))
            }
            (ModelSpec::Cnn { cnn, norm_eps, .. }, false) => {
                cnn.validate()?;
                check_norm_eps(*norm_eps)?;
                match &self.task {
                    TaskSpec::Shapes(shapes) => {
                        reject(
                            shapes.target != crate::task::shapes::ShapesTarget::Kind,
                            "task.shapes.target",
                            "must be \"kind\" for a classifier (one label per image)",
                            "set target = \"kind\" and max_shapes = 1, or use [model.unet] for masks",
                        )?;
                        let stages = cnn.channels.len();
                        reject(
                            shapes.size >> stages == 0,
                            "model.cnn.channels",
                            &format!("{stages} stages pool a {0}×{0} image away", shapes.size),
                            "use fewer stages or larger images",
                        )?;
                    }
                    // The image shape is known once the files are read (`check_data`).
                    TaskSpec::Idx(_) => {}
                    TaskSpec::Images(_) => {
                        return Err(invalid(
                            "model.cnn",
                            "classifies whole images, but task.images labels every pixel",
                            "use [model.unet] for masks",
                        ))
                    }
                    _ => {
                        return Err(invalid(
                            "model.cnn",
                            format!("classifies images (got task.{})", self.task.kind()),
                            "use [task.shapes] with target = \"kind\" (see examples/cnn-shapes.toml) or MNIST-format images, [task.idx]",
                        ))
                    }
                }
                reject(
                    self.train.loss != Some(LossKind::CrossEntropy),
                    "train.loss",
                    "a classifier trains with cross_entropy",
                    "drop train.loss",
                )?;
                reject(
                    cnn.norm == unet::ChannelNorm::Batchnorm && self.train.batch_size == BatchSize::Size(1),
                    "train.batch_size",
                    "must be ≥ 2 with batchnorm (batch statistics need two samples)",
                    "raise the batch size or pick another norm",
                )?;
            }
            (ModelSpec::Cnn { .. }, true) => {
                return Err(invalid(
                    "model.cnn",
                    format!("classifies images, not sequences (got task.{})", self.task.kind()),
                    "use [task.shapes] with target = \"kind\", or [task.idx]",
                ))
            }
            (_, false) if matches!(self.task, TaskSpec::Shapes(_)) => {
                return Err(invalid(
                    "task.shapes",
                    "yields images, which need a conv net",
                    "add a [model.unet] section for masks (see examples/unet-shapes.toml) or [model.cnn] for labels (examples/cnn-shapes.toml)",
                ))
            }
            (_, false) if matches!(self.task, TaskSpec::Images(_)) => {
                return Err(invalid(
                    "task.images",
                    "yields images and masks, which need a segmentation net",
                    "add a [model.unet] section (see examples/unet-shapes.toml)",
                ))
            }
            (ModelSpec::Mlp(mlp), false) => {
                mlp.validate()?;
                reject(
                    mlp.norm == Norm::Batchnorm && self.train.batch_size == BatchSize::Size(1),
                    "train.batch_size",
                    "must be ≥ 2 with batchnorm (batch statistics need two samples)",
                    "raise the batch size or pick another norm",
                )?;
            }
            (ModelSpec::Denoiser { net, denoiser }, false) => {
                net.validate()?;
                denoiser.validate()?;
                reject(
                    net.norm == Norm::Batchnorm && self.train.batch_size == BatchSize::Size(1),
                    "train.batch_size",
                    "must be ≥ 2 with batchnorm (batch statistics need two samples)",
                    "raise the batch size or pick another norm",
                )?;
                reject(
                    self.train.loss != Some(LossKind::Mse),
                    "train.loss",
                    "a denoiser trains on EDM's weighted squared error",
                    "drop train.loss or set it to \"mse\"",
                )?;
            }
            (ModelSpec::Denoiser { .. }, true) => {
                return Err(invalid(
                    "model.denoiser",
                    format!(
                        "generates points, not sequences (got task.{})",
                        self.task.kind()
                    ),
                    "use a task of points: [task.gaussian_mixture], [task.moons], \
                     [task.spirals], [task.rings], [task.checkerboard], or a file task's inputs",
                ))
            }
            (ModelSpec::Gpt { .. }, false) => {
                return Err(invalid(
                    "model.gpt",
                    format!(
                        "needs a token-sequence task (got task.{})",
                        self.task.kind()
                    ),
                    "use [task.text], [task.markov], [task.pcfg], [task.modular_sequence], [task.repeated_tokens] or [task.in_context]",
                ))
            }
            (ModelSpec::Mlp(_), true) => {
                let (what, example) = match self.task {
                    TaskSpec::InContext(_) => ("in-context prompts", "in-context-linear.toml"),
                    _ => ("token sequences", "gpt-markov.toml"),
                };
                return Err(invalid(
                    &format!("task.{}", self.task.kind()),
                    &format!("yields {what}, which need a transformer"),
                    &format!("add a [model.gpt] section (see examples/{example})"),
                ));
            }
        }
        let o = &self.optim;
        reject(
            !(o.lr.is_finite() && o.lr > 0.0),
            "optim.lr",
            format!("must be > 0 (got {})", o.lr),
            "e.g. optim.lr = 1e-3",
        )?;
        reject(
            !(0.0..1.0).contains(&o.momentum),
            "optim.momentum",
            format!("must be in [0, 1) (got {})", o.momentum),
            "0.9 is usual",
        )?;
        for (i, b) in o.betas.iter().enumerate() {
            reject(
                !(0.0..1.0).contains(b),
                "optim.betas",
                format!("beta{} must be in [0, 1) (got {b})", i + 1),
                "(0.9, 0.999) is torch's default",
            )?;
        }
        reject(
            !(o.eps.is_finite() && o.eps > 0.0),
            "optim.eps",
            format!("must be > 0 (got {})", o.eps),
            "1e-8 is torch's default",
        )?;
        if let Some(wd) = o.weight_decay {
            reject(
                !(wd.is_finite() && wd >= 0.0),
                "optim.weight_decay",
                format!("must be ≥ 0 (got {wd})"),
                "0 turns it off",
            )?;
        }
        reject(
            !(0.0..=1.0).contains(&o.final_lr_fraction),
            "optim.final_lr_fraction",
            format!("must be in [0, 1] (got {})", o.final_lr_fraction),
            "0 decays to zero",
        )?;
        reject(
            o.warmup_steps > 0 && o.schedule == Schedule::Constant,
            "optim.warmup_steps",
            "needs a warm-up schedule (the constant schedule has none)",
            "set optim.schedule = \"warmup_cosine\" or \"warmup_linear\", or drop warmup_steps",
        )?;
        reject(
            o.warmup_steps > self.train.steps,
            "optim.warmup_steps",
            format!(
                "({}) exceeds train.steps ({})",
                o.warmup_steps, self.train.steps
            ),
            "shorten the warm-up",
        )?;
        for (k, v) in [
            ("optim.clip_grad_norm", o.clip_grad_norm),
            ("optim.weight_norm", o.weight_norm),
        ] {
            if let Some(v) = v {
                reject(
                    !(v.is_finite() && v > 0.0),
                    k,
                    format!("must be > 0 (got {v})"),
                    "leave it out to turn it off",
                )?;
            }
        }
        let t = &self.train;
        reject(
            t.steps == 0,
            "train.steps",
            "must be ≥ 1 (got 0)",
            "e.g. train.steps = 1000",
        )?;
        reject(
            t.eval_every == 0,
            "train.eval_every",
            "must be ≥ 1 (got 0)",
            "e.g. train.eval_every = 100",
        )?;
        reject(
            !(t.divergence_factor.is_finite() && t.divergence_factor > 1.0),
            "train.divergence_factor",
            format!("must be > 1 (got {})", t.divergence_factor),
            "1e4 is the default",
        )?;
        reject(
            t.threads == 0 || t.threads > 1024,
            "train.threads",
            format!("must be between 1 and 1024 (got {})", t.threads),
            "1 thread per run is the default",
        )?;
        if self.task.is_classification() && t.loss == Some(LossKind::Mse) {
            // Allowed: MSE on one-hot targets is a legitimate experiment.
        } else if !self.task.is_classification() && t.loss == Some(LossKind::CrossEntropy) {
            return Err(invalid(
                "train.loss",
                "cross_entropy needs a classification task",
                "use loss = \"mse\" for regression",
            ));
        }
        if self.observe.sharpness_every > 0 && !(1..=10_000).contains(&self.observe.sharpness_iters)
        {
            return Err(invalid(
                "observe.sharpness_iters",
                format!(
                    "must be between 1 and 10000 (got {})",
                    self.observe.sharpness_iters
                ),
                "30 is the default",
            ));
        }
        reject(
            self.observe.log_every == 0,
            "observe.log_every",
            "must be ≥ 1 (got 0)",
            "e.g. observe.log_every = 10",
        )?;
        if let Some(names) = &self.observe.observables {
            let valid: Vec<String> = crate::observe::valid(m.family())
                .iter()
                .map(|s| s.to_string())
                .collect();
            for n in names {
                if !valid.contains(n) {
                    let near = nearest(n, &valid)
                        .map(|s| format!(" (did you mean \"{s}\"?)"))
                        .unwrap_or_default();
                    return Err(invalid(
                        "observe.observables",
                        format!("has an unknown observable \"{n}\"{near}"),
                        format!("valid observables: {}", valid.join(", ")),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The fully resolved spec as TOML (stored with the run, readable by `run` again). A GPT's
    /// `[model]` shows only what applies to it (`dtype`, `norm_eps` and `[model.gpt]`).
    pub fn to_toml(&self) -> String {
        let rendered = match &self.model {
            ModelSpec::Mlp(_) | ModelSpec::Denoiser { .. } => toml::to_string(self),
            ModelSpec::Gpt { .. } | ModelSpec::Unet { .. } | ModelSpec::Cnn { .. } => {
                toml::Value::try_from(self).and_then(|mut v| {
                    if let Some(toml::Value::Table(m)) = v.get_mut("model") {
                        m.retain(|k, _| {
                            ["dtype", "norm_eps", "gpt", "unet", "cnn"].contains(&&k[..])
                        });
                    }
                    toml::to_string(&v)
                })
            }
        };
        rendered.unwrap_or_else(|e| format!("# could not render the spec as TOML: {e}\n"))
    }

    /// The resolved spec as canonical JSON (struct field order is fixed by the code).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// The run id: the first 16 hex digits of SHA-256 over the canonical JSON of the resolved
    /// spec, less the keys of [`LATER_KEYS`] that sit at their default. Same resolved spec ⇒
    /// same id; any change to any value ⇒ a new id; a key added later at the default that keeps
    /// the old behaviour ⇒ the old id.
    pub fn run_id(&self) -> String {
        let value = serde_json::to_value(self).unwrap_or_default();
        id_of(value, LATER_KEYS)
    }
}

/// A key added to the spec after run ids were first defined, with its default as JSON: the
/// value that reproduces the behaviour from before the key existed.
pub type LaterKey = (&'static str, fn() -> serde_json::Value);

/// Every key added since run ids were first defined. A run whose value of such a key equals the
/// default hashes as if the key did not exist, so adding a key (with a default that keeps the
/// old behaviour) changes no stored run's id. Append a new key here, with its dotted path.
pub const LATER_KEYS: &[LaterKey] = &[
    ("model.parametrization", || serde_json::json!("sp")),
    ("model.base_width", || serde_json::json!(256)),
    ("model.gpt.parametrization", || serde_json::json!("sp")),
    ("model.gpt.base_d_model", || serde_json::json!(128)),
    ("model.gpt.zero_readout", || serde_json::json!(false)),
    ("model.gpt.zero_query", || serde_json::json!(false)),
];

/// Keys of the flat `[model]` table added after the first release (the last entries of
/// [`MlpSpec`]): a GPT's stored spec from before them lacks them.
const LATER_MLP_KEYS: usize = 2;

/// The run id of a spec's JSON (object keys in struct order), ignoring the keys of `later` that
/// sit at their default.
pub fn id_of(mut value: serde_json::Value, later: &[LaterKey]) -> String {
    for (key, default) in later {
        let (parent, last) = match key.rsplit_once('.') {
            Some((p, l)) => (Some(p), l),
            None => (None, *key),
        };
        let mut node = Some(&mut value);
        for part in parent.into_iter().flat_map(|p| p.split('.')) {
            node = node.and_then(|n| n.get_mut(part));
        }
        if let Some(serde_json::Value::Object(map)) = node {
            if map.get(last) == Some(&default()) {
                // `shift_remove` keeps the order of the other keys (the hash depends on it).
                map.shift_remove(last);
            }
        }
    }
    let digest = Sha256::digest(value.to_string().as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}
