//! Whole models, each readable in one file, built from their config.

pub mod gpt;
pub mod mlp;

pub use gpt::Gpt;
pub use mlp::Mlp;

/// What a parameter is, for optimizers (weight decay), observables and export names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Weight,
    /// A token or position embedding table (decayed like a weight, as in nanoGPT).
    Embedding,
    Bias,
    ActA,
    ActB,
    ActC,
    NormWeight,
    NormBias,
    NormAlpha,
    /// BatchNorm running statistics: state, not trained, but saved with the weights.
    RunningMean,
    RunningVar,
}

/// One named tensor of a model: its value, its gradient and what it is.
#[derive(Clone, Debug)]
pub struct Param<F> {
    /// PyTorch-convention name, e.g. `layers.0.weight`, `layers.1.act.a`, `layers.2.norm.alpha`.
    pub name: String,
    /// Shape, PyTorch convention (Linear weight `[out, in]`).
    pub shape: Vec<usize>,
    pub value: Vec<F>,
    pub grad: Vec<F>,
    /// The layer it belongs to (the output layer is the last).
    pub layer: usize,
    pub role: Role,
    /// Updated by the optimizer.
    pub trainable: bool,
    /// Subject to weight decay and the weight-norm constraint (linear weights and biases).
    pub decay: bool,
}

impl<F: crate::engine::Float> Param<F> {
    pub fn new(
        name: String,
        shape: Vec<usize>,
        value: Vec<F>,
        layer: usize,
        role: Role,
        trainable: bool,
    ) -> Self {
        let grad = vec![F::zero(); value.len()];
        let decay = matches!(role, Role::Weight | Role::Bias | Role::Embedding);
        Param {
            name,
            shape,
            value,
            grad,
            layer,
            role,
            trainable,
            decay,
        }
    }
}
