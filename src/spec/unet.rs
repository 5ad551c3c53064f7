//! `[model.unet]`: the U-Net's config (the model is `model::unet`; Ronneberger, Fischer & Brox
//! 2015, "U-Net: Convolutional Networks for Biomedical Image Segmentation").

use serde::{Deserialize, Serialize};

use crate::nn::activation::Activation;
use crate::nn::init::{FanMode, Init};
use crate::spec::BiasedActSpec;

/// A normalization over channels (`nn::channel`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelNorm {
    None,
    /// `torch.nn.BatchNorm2d`.
    Batchnorm,
    /// `torch.nn.GroupNorm` with `groups` groups (Wu & He 2018).
    Groupnorm,
    /// Layer norm over the channels at each pixel (ConvNeXt's channels-first LayerNorm).
    Layernorm,
}

impl ChannelNorm {
    pub fn name(self) -> &'static str {
        match self {
            ChannelNorm::None => "none",
            ChannelNorm::Batchnorm => "batchnorm",
            ChannelNorm::Groupnorm => "groupnorm",
            ChannelNorm::Layernorm => "layernorm",
        }
    }
}

/// How the decoder doubles the resolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Upsampling {
    /// A 2×2 transposed convolution with stride 2 (the U-Net paper's "up-convolution").
    Transposed,
    /// Nearest-neighbour ×2, then a 1×1 convolution halving the channels.
    Nearest,
    /// Bilinear ×2 (`align_corners=False`), then a 1×1 convolution.
    Bilinear,
}

/// The segmentation loss, which also sets the head: `cross_entropy` reads one logit per class
/// (softmax), the binary losses one logit per pixel (sigmoid, foreground = class 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SegLoss {
    /// Per-pixel softmax cross-entropy, mean over pixels (`torch.nn.functional.cross_entropy`).
    CrossEntropy,
    /// Per-pixel binary cross-entropy on logits, mean over pixels (two classes only).
    Bce,
    /// Soft Dice loss `1 − (2Σpy + 1)/(Σp + Σy + 1)` over the batch (Milletari et al. 2016,
    /// V-Net, with +1 smoothing); with more than two classes, softmax and the mean over the
    /// foreground classes.
    Dice,
    /// `bce + dice_weight · dice` (two classes only).
    BceDice,
}

impl SegLoss {
    /// Logits per pixel for `classes` classes.
    pub fn channels(self, classes: usize) -> usize {
        match self {
            SegLoss::CrossEntropy => classes,
            SegLoss::Dice if classes > 2 => classes,
            SegLoss::Bce | SegLoss::Dice | SegLoss::BceDice => 1,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SegLoss::CrossEntropy => "cross_entropy",
            SegLoss::Bce => "bce",
            SegLoss::Dice => "dice",
            SegLoss::BceDice => "bce_dice",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnetSpec {
    /// Poolings between the finest and the coarsest level; 2 keeps 64×64 images fast on a CPU
    /// (the paper has 4).
    #[serde(default = "d_depth")]
    pub depth: usize,
    /// Channels at the finest level; 16 is a small U-Net (the paper has 64).
    #[serde(default = "d_base_channels")]
    pub base_channels: usize,
    /// Channels multiply by this at each pooling; 2 as in the paper.
    #[serde(default = "d_channel_mult")]
    pub channel_mult: usize,
    /// BatchNorm after each convolution, the common modern U-Net (the paper predates it).
    #[serde(default = "d_norm")]
    pub norm: ChannelNorm,
    /// Group norm's groups: 8, or the largest divisor of a level's channels below it.
    #[serde(default = "d_groups")]
    pub groups: usize,
    /// ReLU, as in the paper.
    #[serde(default = "d_activation")]
    pub activation: Activation,
    /// The biased form `a·f(x − b) + c` (`per = "neuron"` is per channel); plain by default.
    #[serde(default)]
    pub act: BiasedActSpec,
    /// The paper's 2×2 up-convolution.
    #[serde(default = "d_upsampling")]
    pub upsampling: Upsampling,
    /// PyTorch's default for convolutions (`U(±1/√fan_in)`, fan_in = c_in·k²).
    #[serde(default = "d_init")]
    pub init: Init,
    /// Fan for the He schemes: fan_in = c_in·k², fan_out = c_out·k².
    #[serde(default = "d_fan_mode")]
    pub fan_mode: FanMode,
    /// Cross-entropy works for any number of classes.
    #[serde(default = "d_loss")]
    pub loss: SegLoss,
    /// Weight of the Dice term in `bce_dice`: 1, the plain sum.
    #[serde(default = "d_dice_weight")]
    pub dice_weight: f64,
}

fn d_depth() -> usize {
    2
}
fn d_base_channels() -> usize {
    16
}
fn d_channel_mult() -> usize {
    2
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
fn d_upsampling() -> Upsampling {
    Upsampling::Transposed
}
fn d_init() -> Init {
    Init::Pytorch
}
fn d_fan_mode() -> FanMode {
    FanMode::FanIn
}
fn d_loss() -> SegLoss {
    SegLoss::CrossEntropy
}
fn d_dice_weight() -> f64 {
    1.0
}

impl Default for UnetSpec {
    fn default() -> Self {
        crate::spec::all_defaults()
    }
}

impl UnetSpec {
    /// Channels at level `l`.
    pub fn channels(&self, l: usize) -> usize {
        self.base_channels * self.channel_mult.pow(l as u32)
    }

    /// Group norm's groups for `c` channels: the largest divisor of `c` not above `groups`.
    pub fn groups_for(&self, c: usize) -> usize {
        (1..=self.groups.min(c))
            .rev()
            .find(|&g| c.is_multiple_of(g))
            .unwrap_or(1)
    }

    /// Ranges: `(key, message, hint)` with keys under `model.unet.`.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |k: &str, m: String, h: &str| Err((format!("model.unet.{k}"), m, h.to_string()));
        if self.depth > 6 {
            return bad(
                "depth",
                format!("must be at most 6 (got {})", self.depth),
                "e.g. depth = 2",
            );
        }
        if self.base_channels == 0 || self.base_channels > 1024 {
            return bad(
                "base_channels",
                format!("must be between 1 and 1024 (got {})", self.base_channels),
                "e.g. base_channels = 16",
            );
        }
        if self.channel_mult == 0 || self.channels(self.depth) > 1 << 14 {
            return bad(
                "channel_mult",
                format!(
                    "gives {} channels at the coarsest level (at most 16384, at least 1)",
                    self.base_channels
                        .saturating_mul(self.channel_mult.saturating_pow(self.depth as u32))
                ),
                "e.g. channel_mult = 2",
            );
        }
        if self.groups == 0 {
            return bad("groups", "must be at least 1".into(), "e.g. groups = 8");
        }
        if !(self.dice_weight.is_finite() && self.dice_weight >= 0.0) {
            return bad(
                "dice_weight",
                format!("must be finite and ≥ 0 (got {})", self.dice_weight),
                "e.g. dice_weight = 1",
            );
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
