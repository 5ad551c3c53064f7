//! `[model.gpt]`: the decoder-only transformer's config (the model is `model::gpt`).

use serde::{Deserialize, Serialize};

use crate::nn::activation::Activation;
use crate::nn::norm::Norm;
use crate::spec::BiasedActSpec;

/// Where each block's norms sit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Placement {
    /// `x + f(norm(x))`, plus a final norm before the head (GPT-2).
    Pre,
    /// `norm(x + f(x))` (Vaswani et al. 2017); no final norm.
    Post,
}

/// How the model knows where a token is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Positions {
    /// A learned `[context, C]` table added to the token embedding (GPT-2).
    Learned,
    /// Rotary embeddings (Su et al. 2021, RoFormer): q and k of each head rotated pairwise by
    /// `t·θ_i`, `θ_i = 10000^(−2i/hd)`; no parameters.
    Rotary,
}

/// Whether the output head shares the token embedding's matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tying {
    /// A separate `[V, C]` head (the reference benchmark's).
    Untied,
    /// `W_head = wte` (Press & Wolf 2017; GPT-2).
    Tied,
}

/// Weight initialization of the transformer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GptInit {
    /// GPT-2 / nanoGPT: every linear weight and embedding `N(0, init_std²)`, biases 0, and the
    /// two residual projections (attention `c_proj`, MLP `c_proj`) scaled by `1/√(2·n_layer)`
    /// (Radford et al. 2019, §2.3).
    Gpt2,
    /// `torch.nn.Linear`'s default for linear layers (`U(±1/√fan_in)`, biases too) and
    /// `N(0, init_std²)` embeddings: what the reference benchmark script builds.
    Pytorch,
}

/// ROPE base frequency (Su et al. 2021).
pub const ROPE_BASE: f64 = 10000.0;

/// `[model.gpt]`: a decoder-only transformer instead of the MLP.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptSpec {
    /// 2 blocks: the reference tiny GPT of the benchmark.
    #[serde(default = "d_n_layer")]
    pub n_layer: usize,
    /// 128: the reference tiny GPT's width.
    #[serde(default = "d_d_model")]
    pub d_model: usize,
    /// 4 heads of 32: the reference tiny GPT's.
    #[serde(default = "d_n_head")]
    pub n_head: usize,
    /// MLP width; left out, 4·d_model (GPT-2's ratio).
    #[serde(default)]
    pub d_mlp: Option<usize>,
    /// GELU (exact erf form): GPT-2's and the benchmark's.
    #[serde(default = "d_activation")]
    pub activation: Activation,
    /// The biased form `a·f(x − b) + c` of the MLP activation; plain by default.
    #[serde(default)]
    pub act: BiasedActSpec,
    /// LayerNorm: GPT-2's (rmsnorm, dyt and none are the alternatives; batchnorm is refused).
    #[serde(default = "d_norm")]
    pub norm: Norm,
    /// Pre-norm: GPT-2's, stable without warm-up.
    #[serde(default = "d_placement")]
    pub placement: Placement,
    /// Learned absolute positions: GPT-2's.
    #[serde(default = "d_positions")]
    pub positions: Positions,
    /// Untied: the benchmark's (GPT-2 ties; set `tying = "tied"`).
    #[serde(default = "d_tying")]
    pub tying: Tying,
    /// GPT-2's scheme.
    #[serde(default = "d_init")]
    pub init: GptInit,
    /// 0.02: GPT-2's standard deviation for weights and embeddings.
    #[serde(default = "d_init_std")]
    pub init_std: f64,
    /// SP: GPT-2 as published, nothing scaled with width (what every earlier run used).
    #[serde(default = "d_parametrization")]
    pub parametrization: crate::nn::parametrization::Parametrization,
    /// 128, the reference tiny GPT's width: at `d_model = base_d_model` every parametrization is
    /// SP.
    #[serde(default = "d_base_d_model")]
    pub base_d_model: usize,
    /// Zero-initialized head (μP's recommended option, Tensor Programs V §D.2); off: drawn.
    #[serde(default)]
    pub zero_readout: bool,
    /// Zero-initialized query weights (Tensor Programs V §D.2); off: drawn.
    #[serde(default)]
    pub zero_query: bool,
}

fn d_parametrization() -> crate::nn::parametrization::Parametrization {
    crate::nn::parametrization::Parametrization::Sp
}
fn d_base_d_model() -> usize {
    128
}

fn d_n_layer() -> usize {
    2
}
fn d_d_model() -> usize {
    128
}
fn d_n_head() -> usize {
    4
}
fn d_activation() -> Activation {
    Activation::Gelu
}
fn d_norm() -> Norm {
    Norm::Layernorm
}
fn d_placement() -> Placement {
    Placement::Pre
}
fn d_positions() -> Positions {
    Positions::Learned
}
fn d_tying() -> Tying {
    Tying::Untied
}
fn d_init() -> GptInit {
    GptInit::Gpt2
}
fn d_init_std() -> f64 {
    0.02
}

impl Default for GptSpec {
    /// Every key at its serde default (the one place defaults live).
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

impl GptSpec {
    pub fn mlp_width(&self) -> usize {
        self.d_mlp.unwrap_or(4 * self.d_model)
    }

    /// Ranges and consistency: `(key, message, hint)` with keys under `model.gpt.`.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |k: &str, m: String, h: &str| Err((format!("model.gpt.{k}"), m, h.to_string()));
        if self.base_d_model == 0 || self.base_d_model > 1 << 14 {
            return bad(
                "base_d_model",
                format!("must be between 1 and 16384 (got {})", self.base_d_model),
                "the width at which every parametrization is SP, e.g. base_d_model = 64",
            );
        }
        if self.zero_readout && self.tying == Tying::Tied {
            return bad(
                "zero_readout",
                "a tied head is the token table: zeroing it would zero the embeddings".into(),
                "untie the head (tying = \"untied\") or drop zero_readout",
            );
        }
        if self.parametrization != crate::nn::parametrization::Parametrization::Sp
            && !self.base_d_model.is_multiple_of(self.n_head.max(1))
        {
            return bad(
                "base_d_model",
                format!(
                    "must be a multiple of n_head = {} (got {}): μP's attention scale uses the \
                     base head width",
                    self.n_head, self.base_d_model
                ),
                "e.g. base_d_model = 64 with n_head = 4",
            );
        }
        if self.n_layer == 0 || self.n_layer > 1024 {
            return bad(
                "n_layer",
                format!("must be between 1 and 1024 (got {})", self.n_layer),
                "e.g. n_layer = 2",
            );
        }
        if self.d_model == 0 || self.d_model > 1 << 14 {
            return bad(
                "d_model",
                format!("must be between 1 and 16384 (got {})", self.d_model),
                "e.g. d_model = 128",
            );
        }
        if self.n_head == 0 || !self.d_model.is_multiple_of(self.n_head) {
            return bad(
                "n_head",
                format!(
                    "must divide d_model = {} (got {})",
                    self.d_model, self.n_head
                ),
                "e.g. d_model = 128 with n_head = 4",
            );
        }
        if self.positions == Positions::Rotary && !(self.d_model / self.n_head).is_multiple_of(2) {
            return bad(
                "positions",
                format!(
                    "rotary needs an even head width (d_model/n_head = {})",
                    self.d_model / self.n_head
                ),
                "change n_head or d_model, or use positions = \"learned\"",
            );
        }
        if self.mlp_width() == 0 || self.mlp_width() > 1 << 16 {
            return bad(
                "d_mlp",
                format!("must be between 1 and 65536 (got {})", self.mlp_width()),
                "leave it out for 4·d_model",
            );
        }
        if self.norm == Norm::Batchnorm {
            return bad(
                "norm",
                "batchnorm mixes positions and sequences, which leaks future tokens in a causal model".into(),
                "use \"layernorm\", \"rmsnorm\", \"dyt\" or \"none\"",
            );
        }
        if !(self.init_std.is_finite() && self.init_std > 0.0) {
            return bad(
                "init_std",
                format!("must be > 0 (got {})", self.init_std),
                "0.02 is GPT-2's",
            );
        }
        for (k, p) in [
            ("act.a", &self.act.a),
            ("act.b", &self.act.b),
            ("act.c", &self.act.c),
        ] {
            if !p.init.is_finite() {
                return bad(
                    k,
                    format!("must be finite (got {})", p.init),
                    "give a number",
                );
            }
        }
        Ok(())
    }
}
