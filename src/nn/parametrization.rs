//! Width parametrizations: how initialization, a layer's forward multiplier and its learning
//! rate scale with width, relative to a base width at which they all coincide with the standard
//! parametrization (Yang & Hu 2021, "Tensor Programs IV"; Yang et al. 2022, "Tensor Programs V",
//! Tables 3 and 8, and the `mup` package's `MuReadout`, `MuAdam` and `MuSGD`).
//!
//! With `m = width / base_width`, per tensor of an MLP (input layer: fan-in fixed, fan-out
//! width; hidden: width × width; output: fan-in width, fan-out fixed):
//!
//! | tensor | SP | NTK | μP | mean field |
//! | --- | --- | --- | --- | --- |
//! | input weight | — | — | LR ×m (SGD) | as μP |
//! | hidden weight | — | LR ×1/√m (Adam), ×1/m (SGD) | LR ×1/m (Adam) | init ×√m, forward ×1/√m, LR ×1/√m (Adam), ×m (SGD) |
//! | output weight | — | LR ×1/√m (Adam), ×1/m (SGD) | forward ×1/m, init ×√m, LR ×m (SGD) | as μP |
//! | width-sized vectors (biases, norm and activation parameters of hidden layers) | — | — | LR ×m (SGD); hidden biases init ×√m | as μP |
//! | output bias, per-layer scalars | — | — | — (output bias init ×√m) | as μP |
//!
//! (— : as SP.) μP's output multiplier with the init ×√m is `MuReadout`'s form (effective init
//! variance ∝ 1/width², Table 3's `1/fan_in²`); its learning rates are `MuAdam`'s (matrix-like
//! tensors ÷m) and `MuSGD`'s (vector-like ×m, matrix-like ÷ fan-in/fan-out ratio); weight decay
//! scales inversely to the learning rate, so `lr·wd` is unchanged. NTK (Jacot et al. 2018) is
//! SP's initialization with the weights read through `1/√fan_in`, which leaves SP's forward pass
//! and scales the effective learning rate of every layer whose fan-in is the width by `1/m`
//! under SGD and `1/√m` under Adam (an entrywise-normalized step of size η moves the effective
//! weight by η/√fan_in).
//!
//! Mean field (Mei, Montanari & Nguyen 2018 and Chizat & Bach 2018 for one hidden layer; Geiger,
//! Spigler, Jacot & Wyart 2020, "Disentangling feature and lazy training in deep neural
//! networks", for deep ones) stores every weight with width-independent entries and puts the
//! width into forward multipliers — `1/√fan_in` on hidden layers, `1/fan_in` on the readout —
//! with SGD's learning rate ×width. Relative to SP at the base width that is the table's column:
//! hidden weights drawn ×√m and read ×1/√m (the same function at initialization), SGD's rate ×m
//! everywhere. Tensor Programs IV (§3 and its abc-symmetry `(a, b, c) → (a + θ, b − θ, c − 2θ)`)
//! shows this is μP in other coordinates: under SGD the two train the same function step for
//! step (tested). Adam's symmetry is `c − θ`, which gives the hidden weights' Adam rate 1/√m.
//! With one hidden layer there is no hidden weight and the two coincide exactly.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parametrization {
    /// The standard parametrization: PyTorch's defaults, nothing scaled with width.
    Sp,
    /// The neural-tangent parametrization (Jacot et al. 2018): lazy training as width grows.
    Ntk,
    /// The maximal-update parametrization (Yang & Hu 2021): every layer's features move by
    /// Θ(1) whatever the width, so the best learning rate transfers.
    Mup,
    /// The mean-field parametrization: width-independent weights, width in the forward
    /// multipliers (`1/√n` hidden, `1/n` readout); μP up to an abc-symmetry.
    MeanField,
}

/// Where a tensor sits, for the rules above.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    InputWeight,
    HiddenWeight,
    OutputWeight,
    /// A hidden layer's bias (fan-in = width unless it is the first layer).
    HiddenBias {
        fan_in_is_width: bool,
    },
    /// A width-sized vector other than a bias: norm weights, per-neuron activation parameters.
    WidthVector,
    OutputBias,
    /// Per-layer scalars.
    Scalar,
}

/// What the rules give one tensor: a factor on its initial values and on its learning rate
/// (for Adam-like and SGD-like optimizers).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scales {
    pub init: f64,
    pub lr_adam: f64,
    pub lr_sgd: f64,
}

const ONE: Scales = Scales {
    init: 1.0,
    lr_adam: 1.0,
    lr_sgd: 1.0,
};

impl Parametrization {
    /// The rules for a tensor at `place`, at width multiplier `m`.
    pub fn scales(self, place: Place, m: f64) -> Scales {
        use Place::*;
        match self {
            Parametrization::Sp => ONE,
            Parametrization::Ntk => match place {
                HiddenWeight | OutputWeight => Scales {
                    init: 1.0,
                    lr_adam: 1.0 / m.sqrt(),
                    lr_sgd: 1.0 / m,
                },
                _ => ONE,
            },
            Parametrization::MeanField => match place {
                HiddenWeight => Scales {
                    init: m.sqrt(),
                    lr_adam: 1.0 / m.sqrt(),
                    lr_sgd: m,
                },
                _ => Parametrization::Mup.scales(place, m),
            },
            Parametrization::Mup => match place {
                InputWeight => Scales { lr_sgd: m, ..ONE },
                HiddenWeight => Scales {
                    lr_adam: 1.0 / m,
                    ..ONE
                },
                OutputWeight => Scales {
                    init: m.sqrt(),
                    lr_adam: 1.0,
                    lr_sgd: m,
                },
                HiddenBias { fan_in_is_width } => Scales {
                    init: if fan_in_is_width { m.sqrt() } else { 1.0 },
                    lr_adam: 1.0,
                    lr_sgd: m,
                },
                WidthVector => Scales { lr_sgd: m, ..ONE },
                OutputBias => Scales {
                    init: m.sqrt(),
                    ..ONE
                },
                Scalar => ONE,
            },
        }
    }

    /// The factor on the output layer's input (μP's and mean field's `1/m`; 1 otherwise).
    pub fn output_multiplier(self, m: f64) -> f64 {
        match self {
            Parametrization::Mup | Parametrization::MeanField => 1.0 / m,
            Parametrization::Sp | Parametrization::Ntk => 1.0,
        }
    }

    /// The forward multiplier of hidden (width × width) weights: mean field's `1/√m`, 1
    /// otherwise.
    pub fn hidden_multiplier(self, m: f64) -> f64 {
        match self {
            Parametrization::MeanField => 1.0 / m.sqrt(),
            Parametrization::Sp | Parametrization::Ntk | Parametrization::Mup => 1.0,
        }
    }

    /// Whether attention logits are scaled by `1/d_head` (μP's rule, Tensor Programs V §4)
    /// rather than `1/√d_head`.
    pub fn attention_one_over_d(self) -> bool {
        match self {
            Parametrization::Mup | Parametrization::MeanField => true,
            Parametrization::Sp | Parametrization::Ntk => false,
        }
    }

    /// The name in the experiment file.
    pub fn name(self) -> &'static str {
        match self {
            Parametrization::Sp => "sp",
            Parametrization::Ntk => "ntk",
            Parametrization::Mup => "mup",
            Parametrization::MeanField => "mean_field",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// At the base width (m = 1) every parametrization is SP.
    #[test]
    fn every_parametrization_is_sp_at_the_base_width() {
        let places = [
            Place::InputWeight,
            Place::HiddenWeight,
            Place::OutputWeight,
            Place::HiddenBias {
                fan_in_is_width: true,
            },
            Place::WidthVector,
            Place::OutputBias,
            Place::Scalar,
        ];
        for p in [
            Parametrization::Sp,
            Parametrization::Ntk,
            Parametrization::Mup,
            Parametrization::MeanField,
        ] {
            assert_eq!(p.output_multiplier(1.0), 1.0);
            assert_eq!(p.hidden_multiplier(1.0), 1.0);
            for place in places {
                assert_eq!(p.scales(place, 1.0), ONE, "{p:?} {place:?}");
            }
        }
    }
}
