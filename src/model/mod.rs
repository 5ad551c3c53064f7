//! Whole models, each readable in one file, built from their config.

pub mod gpt;
pub mod mlp;

pub use gpt::Gpt;
pub use mlp::Mlp;

use crate::engine::Float;
use crate::nn::activation;
use crate::nn::norm::{self, Norm, NormCache, NormGrads, NormParams};

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

/// Indices into a model's parameter list of one norm's parameters (all `None` for
/// `norm = "none"`; BatchNorm's running statistics are the MLP's own business).
#[derive(Clone, Copy, Debug, Default)]
pub struct NormIdx {
    pub weight: Option<usize>,
    pub bias: Option<usize>,
    pub alpha: Option<usize>,
}

impl NormIdx {
    /// Appends the learned parameters `norm` has over `width` features to `params`, named
    /// `{name}.weight`, `{name}.bias`, `{name}.alpha` (inits as PyTorch's: weight 1, bias 0; DyT's
    /// α from [`norm::DYT_ALPHA_INIT`]).
    pub(crate) fn push<F: Float>(
        params: &mut Vec<Param<F>>,
        norm: Norm,
        name: &str,
        layer: usize,
        width: usize,
    ) -> NormIdx {
        let mut idx = NormIdx::default();
        if norm == Norm::None {
            return idx;
        }
        let mut push = |suffix: &str, shape: Vec<usize>, value: Vec<F>, role: Role| {
            let p = Param::new(format!("{name}.{suffix}"), shape, value, layer, role, true);
            params.push(p);
            Some(params.len() - 1)
        };
        idx.weight = push(
            "weight",
            vec![width],
            vec![F::one(); width],
            Role::NormWeight,
        );
        if norm.has_bias() {
            idx.bias = push("bias", vec![width], vec![F::zero(); width], Role::NormBias);
        }
        if norm.has_alpha() {
            idx.alpha = push(
                "alpha",
                vec![1],
                vec![F::of(norm::DYT_ALPHA_INIT)],
                Role::NormAlpha,
            );
        }
        idx
    }

    /// The norm's parameters, borrowed from `params`.
    pub(crate) fn params<F: Float>(self, params: &[Param<F>]) -> NormParams<'_, F> {
        NormParams {
            weight: self
                .weight
                .map(|i| params[i].value.as_slice())
                .unwrap_or(&[]),
            bias: self.bias.map(|i| params[i].value.as_slice()),
            alpha: self.alpha.map(|i| params[i].value[0]),
        }
    }

    /// The norm's backward pass over `x: [rows, width]`; `g`: `∂L/∂y` in, `∂L/∂x` out. Parameter
    /// gradients accumulate (moved out of `params` and back: a move, not an allocation).
    pub(crate) fn backward<F: Float>(
        self,
        norm: Norm,
        width: usize,
        params: &mut [Param<F>],
        x: &[F],
        g: &mut [F],
        cache: &NormCache<F>,
    ) {
        let take = |params: &mut [Param<F>], i: Option<usize>| {
            i.map(|i| std::mem::take(&mut params[i].grad))
        };
        let mut gw = take(params, self.weight).unwrap_or_default();
        let mut gb = take(params, self.bias);
        let mut galpha = self.alpha.map(|_| F::zero());
        {
            let np = self.params(params);
            let grads = NormGrads {
                weight: &mut gw,
                bias: gb.as_deref_mut(),
                alpha: galpha.as_mut(),
            };
            norm::backward(norm, width, x, g, &np, grads, cache);
        }
        if let Some(i) = self.weight {
            params[i].grad = gw;
        }
        if let (Some(i), Some(gb)) = (self.bias, gb) {
            params[i].grad = gb;
        }
        if let (Some(i), Some(ga)) = (self.alpha, galpha) {
            params[i].grad[0] += ga;
        }
    }
}

/// Copies a biased activation's `a, b, c` (the parameters at `idx`) into `abc`, one value per
/// column (a per-layer scalar fills its whole row): what the fused forward pass reads.
pub(crate) fn broadcast_act_params<F: Float>(
    params: &[Param<F>],
    idx: [usize; 3],
    abc: &mut [Vec<F>; 3],
) {
    for (k, &i) in idx.iter().enumerate() {
        let v = &params[i].value;
        if v.len() == 1 {
            abc[k].fill(v[0]);
        } else {
            abc[k].copy_from_slice(v);
        }
    }
}

/// Gradients of a biased activation's trainable `a, b, c` (the parameters at `idx`) from
/// `g = ∂L/∂h: [rows, width]`, the forward pass's `slope` and `fu = f(u − b)` (`None` when not
/// kept). `abc_grad` holds the per-column sums; a per-layer scalar gets their total.
pub(crate) fn act_params_backward<F: Float>(
    params: &mut [Param<F>],
    idx: [usize; 3],
    width: usize,
    g: &[F],
    slope: &[F],
    fu: Option<&[F]>,
    abc_grad: &mut [Vec<F>; 3],
) {
    for v in abc_grad.iter_mut() {
        v.fill(F::zero());
    }
    let learned = idx.map(|i| params[i].trainable);
    let [g_a, g_b, g_c] = &mut *abc_grad;
    activation::backward_params(
        width,
        g,
        slope,
        fu,
        learned[0].then_some(g_a.as_mut_slice()),
        learned[1].then_some(g_b.as_mut_slice()),
        learned[2].then_some(g_c.as_mut_slice()),
    );
    for k in 0..3 {
        let p = &mut params[idx[k]];
        if !p.trainable {
            continue;
        }
        if p.grad.len() == 1 {
            p.grad[0] = abc_grad[k].iter().copied().sum();
        } else {
            p.grad.copy_from_slice(&abc_grad[k]);
        }
    }
}
