//! `[model.cnn]`: a plain convolutional classifier's config (the model is `model::cnn`):
//! stages of conv 3×3 → norm → activation → 2×2 pool, global average pooling, a linear head.

use serde::{Deserialize, Serialize};

use crate::nn::activation::Activation;
use crate::nn::init::{FanMode, Init};
use crate::spec::unet::ChannelNorm;
use crate::spec::BiasedActSpec;

/// The pooling after each stage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolKind {
    /// `torch.nn.MaxPool2d(2)`.
    Max,
    /// `torch.nn.AvgPool2d(2)`.
    Avg,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CnnSpec {
    /// Channels of each stage; two stages of 16 and 32 are a small LeNet-sized net.
    #[serde(default = "d_channels")]
    pub channels: Vec<usize>,
    /// Max pooling, as in most classifiers.
    #[serde(default = "d_pool")]
    pub pool: PoolKind,
    /// BatchNorm after each convolution.
    #[serde(default = "d_norm")]
    pub norm: ChannelNorm,
    /// Group norm's groups (the largest divisor of a stage's channels not above it).
    #[serde(default = "d_groups")]
    pub groups: usize,
    /// ReLU.
    #[serde(default = "d_activation")]
    pub activation: Activation,
    /// The biased form `a·f(x − b) + c` (`per = "neuron"` is per channel); plain by default.
    #[serde(default)]
    pub act: BiasedActSpec,
    /// PyTorch's default (`U(±1/√fan_in)`, fan_in = c_in·k²).
    #[serde(default = "d_init")]
    pub init: Init,
    /// Fan for the He schemes.
    #[serde(default = "d_fan_mode")]
    pub fan_mode: FanMode,
}

fn d_channels() -> Vec<usize> {
    vec![16, 32]
}
fn d_pool() -> PoolKind {
    PoolKind::Max
}
fn d_norm() -> ChannelNorm {
    ChannelNorm::Batchnorm
}
fn d_groups() -> usize {
    8
}
fn d_activation() -> Activation {
    Activation::Relu
}
fn d_init() -> Init {
    Init::Pytorch
}
fn d_fan_mode() -> FanMode {
    FanMode::FanIn
}

impl Default for CnnSpec {
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

impl CnnSpec {
    /// Group norm's groups for `c` channels.
    pub fn groups_for(&self, c: usize) -> usize {
        (1..=self.groups.min(c))
            .rev()
            .find(|&g| c.is_multiple_of(g))
            .unwrap_or(1)
    }

    /// Ranges: `(key, message, hint)` with keys under `model.cnn.`.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |k: &str, m: String, h: &str| Err((format!("model.cnn.{k}"), m, h.to_string()));
        if self.channels.is_empty() || self.channels.len() > 8 {
            return bad(
                "channels",
                format!("needs 1 to 8 stages (got {})", self.channels.len()),
                "e.g. channels = [16, 32]",
            );
        }
        if let Some(&c) = self.channels.iter().find(|&&c| c == 0 || c > 4096) {
            return bad(
                "channels",
                format!("each stage needs 1 to 4096 channels (got {c})"),
                "e.g. channels = [16, 32]",
            );
        }
        if self.groups == 0 {
            return bad("groups", "must be at least 1".into(), "e.g. groups = 8");
        }
        if matches!(self.init, Init::Orthogonal | Init::MeanField) {
            return bad(
                "init",
                format!("{:?} is not defined for convolutions here", self.init),
                "use pytorch, he_normal, he_uniform, xavier_normal, xavier_uniform, lecun_normal or lecun_uniform",
            );
        }
        Ok(())
    }
}
