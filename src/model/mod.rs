//! Whole models, each readable in one file, built from their config, behind one interface
//! ([`Model`]) that the one training loop, the observables, curvature and export all use.
//!
//! A new family is one file here implementing [`Model`], one variant of
//! [`crate::spec::ModelSpec`] and one arm in [`build`].

pub mod cnn;
pub mod denoiser;
pub mod gpt;
pub mod lanes;
pub mod mlp;
pub(crate) mod stage;
pub mod unet;

pub use cnn::Cnn;
pub use denoiser::Denoiser;
pub use gpt::Gpt;
pub use mlp::Mlp;
pub use unet::Unet;

use std::any::Any;

use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::nn::activation;
use crate::nn::loss::LossValue;
use crate::nn::norm::{self, Mode, Norm, NormCache, NormGrads, NormParams};
use crate::optim::Update;
use crate::spec::{BiasedActSpec, Granularity, LossKind, ModelSpec, Trainable};

/// One batch, as a model reads it.
#[derive(Clone, Copy, Debug)]
pub enum Batch<'a, F> {
    /// Feature rows: `x: [rows, input]`; `y: [rows, output]` targets (regression) or
    /// `[rows, 1]` class indices.
    Rows { x: &'a [F], y: &'a [F], rows: usize },
    /// Token windows: `x, y: [seqs, seq]` token ids, `y` the next tokens ([`IGNORE`] where a
    /// position is not trained on).
    Tokens {
        x: &'a [usize],
        y: &'a [usize],
        seqs: usize,
        seq: usize,
    },
    /// In-context regression prompts: `x: [seqs, points, dim]` points and `y: [seqs, points]`
    /// their values, which the model reads interleaved (`x_1, y_1, x_2, …`) and predicts.
    Prompts {
        x: &'a [F],
        y: &'a [F],
        seqs: usize,
        points: usize,
        dim: usize,
    },
    /// Noisy points for a denoiser: `x: [rows, dim]` perturbed from the clean `y: [rows, dim]`
    /// at the noise levels `sigma: [rows]`.
    Denoise {
        x: &'a [F],
        sigma: &'a [F],
        y: &'a [F],
        rows: usize,
        dim: usize,
    },
}

impl<'a, F: Copy> Batch<'a, F> {
    /// A conv net's images as `(x, y, rows)` of [`Batch::Rows`]; panics naming `model` on any
    /// other kind (the loop hands every model the kind its shape asks for).
    pub fn image_rows(&self, model: &str) -> (&'a [F], &'a [F], usize) {
        match *self {
            Batch::Rows { x, y, rows } => (x, y, rows),
            _ => panic!("{model}: images come as feature rows"),
        }
    }
}

pub use crate::nn::loss::IGNORE;

impl<F> Batch<'_, F> {
    /// Samples in the batch: rows, or sequences.
    pub fn len(&self) -> usize {
        match self {
            Batch::Rows { rows, .. } | Batch::Denoise { rows, .. } => *rows,
            Batch::Tokens { seqs, .. } | Batch::Prompts { seqs, .. } => *seqs,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the data looks like to a model: its width or its vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    Rows {
        input: usize,
        output: usize,
    },
    Tokens {
        vocab: usize,
        context: usize,
    },
    /// Prompts of up to `points` points in `dim` dimensions.
    Prompts {
        dim: usize,
        points: usize,
    },
    /// Images `[channels, height, width]` (as feature rows), labelled with one of `classes`
    /// classes per pixel (`dense`, segmentation) or per image.
    Images {
        channels: usize,
        height: usize,
        width: usize,
        classes: usize,
        dense: bool,
    },
}

/// A trainable model: named parameters, a forward pass over a batch into named buffers, the
/// loss and its gradient, and a backward pass to every parameter gradient.
pub trait Model<F: Float> {
    /// Every parameter tensor (values, gradients, roles), in a fixed order: what the optimizer,
    /// checkpoints, safetensors export and the observables go through.
    fn params(&self) -> &[Param<F>];
    fn params_mut(&mut self) -> &mut [Param<F>];
    /// Samples (rows or sequences) one pass holds.
    fn capacity(&self) -> usize;
    /// Forward pass over `batch` (at most [`Model::capacity`] samples) into the model's buffers.
    fn forward(&mut self, batch: &Batch<'_, F>, mode: Mode);
    /// The next [`Model::forward`] only (then every buffer again) may leave out what no later
    /// pass reads but the observables do (the MLP: a fused tanh layer's pre-activation), for a
    /// training step that is not logged. By default, nothing is left out.
    fn lean(&mut self) {}
    /// The loss of the last forward pass against `batch`'s targets; with `grad`, also seeds the
    /// output gradient for [`Model::backward`].
    fn loss(&mut self, batch: &Batch<'_, F>, grad: bool) -> LossValue;
    /// Backward pass from the seeded output gradient: overwrites every parameter gradient.
    /// Needs the last forward pass (train mode) over the same batch.
    fn backward(&mut self, batch: &Batch<'_, F>);
    /// [`Model::backward`], taking the optimizer's step `up` on each tensor as soon as its
    /// gradient is final where the family does so (a weight's in its gradient GEMM's epilogue);
    /// the caller's [`Update::finish`] updates the rest. By default, the backward alone. The
    /// gradients of tensors updated that way are left unspecified ([`Update::fused`]): a step
    /// whose gradients something reads (observables, clipping, sharpness) takes
    /// [`Model::backward`].
    fn backward_update(&mut self, batch: &Batch<'_, F>, up: &mut Update<'_, F>) {
        let _ = up;
        self.backward(batch);
    }
    /// The concrete model, for observables that read one family's own buffers.
    fn as_any(&self) -> &dyn Any;
    /// [`Model::as_any`], to fill one family's buffers (the lockstep lanes hand a logged step
    /// to each run's own model: [`crate::model::lanes::LaneMlp::export`]).
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// A sequence of up to `len` tokens (capped at the model's context) that starts with
    /// `prompt` (not empty) and continues it at temperature 1 (language models only).
    fn generate(&mut self, _prompt: &[usize], _len: usize, _rng: &mut Rng) -> Option<Vec<usize>> {
        None
    }
    /// `D(x, σ)` of a denoiser for the rows of `x` (f64, any count) into `out`, in eval mode;
    /// `false` for a model that is not one.
    fn denoise(&mut self, _x: &[f64], _sigma: f64, _out: &mut [f64]) -> bool {
        false
    }
    /// A segmentation model's last forward pass: its logits `[n, channels, plane]`, the
    /// channels per pixel (1: one binary logit) and the pixels per image; `None` otherwise.
    fn segmentation(&self) -> Option<(&[F], usize, usize)> {
        None
    }
    /// Trainable scalar count.
    fn n_params(&self) -> usize {
        self.params()
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.value.len())
            .sum()
    }
}

/// Builds the model `spec` describes for data of `shape`, with buffers for `capacity` samples,
/// drawing its initial weights from `rng`. `loss` is the training loss of a feature-row model.
/// The trained model in one line, for the run's header beside the data's (so a teacher–student
/// run shows the student, labelled, next to its teacher): `MLP 64→[256 tanh]×3→1, pytorch
/// init` or `GPT 2 layers, d_model 64, 4 heads, rotary positions, tied embeddings`.
pub fn describe(spec: &ModelSpec, shape: Shape) -> String {
    // Enum values as the experiment file spells them.
    let word = |v: serde_json::Value| v.as_str().unwrap_or("?").to_string();
    // The transformer's blocks, whatever it reads.
    let trunk = |gpt: &gpt::GptSpec| {
        format!(
            "GPT {} layer{}, d_model {}, {} head{}, {}, {} positions",
            gpt.n_layer,
            if gpt.n_layer == 1 { "" } else { "s" },
            gpt.d_model,
            gpt.n_head,
            if gpt.n_head == 1 { "" } else { "s" },
            gpt.activation.name(),
            word(serde_json::json!(gpt.positions)),
        )
    };
    match (spec, shape) {
        (ModelSpec::Mlp(s), Shape::Rows { input, output }) => {
            let norm = match s.norm {
                crate::nn::norm::Norm::None => String::new(),
                n => format!(", {}", n.name()),
            };
            format!(
                "MLP {input}→[{} {}]×{}→{output}{norm}, {} init",
                s.width,
                s.activation.name(),
                s.depth,
                word(serde_json::json!(s.init)),
            )
        }
        (ModelSpec::Gpt { gpt, .. }, Shape::Tokens { vocab, context }) => format!(
            "{}, {} embeddings, vocabulary {vocab}, context {context}",
            trunk(gpt),
            word(serde_json::json!(gpt.tying)),
        ),
        (ModelSpec::Gpt { gpt, .. }, Shape::Prompts { dim, points }) => format!(
            "{}, on prompts of up to {points} points in {dim} dimensions",
            trunk(gpt)
        ),
        (ModelSpec::Denoiser { net, denoiser }, Shape::Rows { input, .. }) => {
            let norm = match net.norm {
                crate::nn::norm::Norm::None => String::new(),
                n => format!(", {}", n.name()),
            };
            format!(
                "denoiser D(x, σ), PFGM++ D = {}: MLP {}+{}→[{} {}]×{}→{input}{norm}, {} noise \
                 features, EDM preconditioning σ_data = {}",
                denoiser.aug_dim.label(),
                input,
                denoiser.embed_dim,
                net.width,
                net.activation.name(),
                net.depth,
                word(serde_json::json!(denoiser.embedding)),
                denoiser.sigma_data,
            )
        }
        (
            ModelSpec::Cnn { cnn, .. },
            Shape::Images {
                channels,
                height,
                width,
                classes,
                dense: false,
            },
        ) => format!(
            "CNN channels {:?}, {} pooling, {} norm, {}, global average pool, linear head, on {channels}×{height}×{width} images of {classes} classes",
            cnn.channels,
            word(serde_json::json!(cnn.pool)),
            cnn.norm.name(),
            cnn.activation.name(),
        ),
        (
            ModelSpec::Unet { unet, .. },
            Shape::Images {
                channels,
                height,
                width,
                classes,
                dense: true,
            },
        ) => {
            let chans: Vec<String> = (0..=unet.depth)
                .map(|l| unet.channels(l).to_string())
                .collect();
            format!(
                "U-Net depth {}, channels {}, {} norm, {}, {} upsampling, {} loss, on {channels}×{height}×{width} images of {classes} classes",
                unet.depth,
                chans.join("→"),
                unet.norm.name(),
                unet.activation.name(),
                word(serde_json::json!(unet.upsampling)),
                unet.loss.name(),
            )
        }
        _ => "a model that does not fit this data".into(),
    }
}

pub fn build<F: Float>(
    spec: &ModelSpec,
    shape: Shape,
    loss: LossKind,
    capacity: usize,
    rng: &mut Rng,
) -> Result<Box<dyn Model<F>>, Error> {
    Ok(match (spec, shape) {
        (ModelSpec::Mlp(s), Shape::Rows { input, output }) => {
            Box::new(Mlp::new(s, input, output, capacity, rng).with_loss(loss))
        }
        (ModelSpec::Gpt { gpt, norm_eps, .. }, Shape::Tokens { vocab, context }) => {
            Box::new(Gpt::new(gpt, *norm_eps, vocab, context, capacity, rng))
        }
        (ModelSpec::Gpt { gpt, norm_eps, .. }, Shape::Prompts { dim, points }) => {
            // `Spec::validate` refuses a tied read-out before a run starts; a prompt model's
            // read-out is its own whatever `tying` says.
            Box::new(Gpt::new_prompts(gpt, *norm_eps, dim, points, capacity, rng))
        }
        (ModelSpec::Denoiser { net, denoiser }, Shape::Rows { input, .. }) => {
            Box::new(Denoiser::new(net, denoiser, input, capacity, rng))
        }
        (
            ModelSpec::Cnn { cnn, norm_eps, .. },
            Shape::Images {
                channels,
                height,
                width,
                classes,
                dense: false,
            },
        ) => Box::new(Cnn::new(
            cnn,
            *norm_eps,
            (channels, height, width),
            classes,
            capacity,
            rng,
        )),
        (ModelSpec::Cnn { .. }, _) => {
            return Err(mismatch(
                "no labelled images; [model.cnn] classifies images ([task.shapes] with target = \"kind\", or [task.idx])",
            ))
        }
        (
            ModelSpec::Unet { unet, norm_eps, .. },
            Shape::Images {
                channels,
                height,
                width,
                classes,
                dense: true,
            },
        ) => Box::new(Unet::new(
            unet,
            *norm_eps,
            (channels, height, width),
            classes,
            capacity,
            rng,
        )),
        (ModelSpec::Unet { .. }, _) => {
            return Err(mismatch(
                "no images; [model.unet] segments images ([task.shapes] or [task.images])",
            ))
        }
        (_, Shape::Images { .. }) => {
            return Err(mismatch(
                "images, which need a conv net ([model.unet] for masks, [model.cnn] for labels)",
            ))
        }
        (ModelSpec::Denoiser { .. }, _) => {
            return Err(mismatch(
                "sequences; [model.denoiser] generates points (feature rows)",
            ))
        }
        (ModelSpec::Mlp(_), Shape::Tokens { .. }) => {
            return Err(mismatch(
                "token windows, which need a transformer ([model.gpt])",
            ))
        }
        (ModelSpec::Mlp(_), Shape::Prompts { .. }) => {
            return Err(mismatch(
                "in-context prompts, which need a transformer ([model.gpt])",
            ))
        }
        (ModelSpec::Gpt { .. }, Shape::Rows { .. }) => {
            return Err(mismatch(
                "feature rows; [model.gpt] needs a token-sequence task",
            ))
        }
    })
}

fn mismatch(what: &str) -> Error {
    Error::Invalid {
        what: "task".into(),
        message: format!("the task yields {what}"),
        hint: "pair [model.gpt] with [task.text], [task.markov], [task.pcfg], \
               [task.modular_sequence], [task.repeated_tokens] or [task.in_context], and the MLP \
               with any other task"
            .into(),
    }
}

/// What a parameter is. The role alone decides how the parameter is treated, for every model:
/// weight decay and the weight-norm constraint apply to [`Role::decays`] roles (linear weights
/// including an LM head, linear biases, embedding tables), never to norm or activation
/// parameters; clipping and the optimizer touch every trainable parameter; export writes all.
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
    /// A fixed tensor the model computes with (a denoiser's noise-embedding frequencies): saved
    /// with the weights, never trained.
    Fixed,
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
    /// Subject to weight decay and the weight-norm constraint: [`Role::decays`].
    pub decay: bool,
    /// The parametrization's factor on this tensor's learning rate, for Adam-like and SGD-like
    /// optimizers ([`crate::nn::parametrization`]; 1 under SP). Weight decay is divided by it,
    /// so the decay per step is unchanged.
    pub lr_mult: LrMult,
}

/// A tensor's learning-rate factors.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrMult {
    pub adam: f64,
    pub sgd: f64,
}

impl Default for LrMult {
    fn default() -> Self {
        LrMult {
            adam: 1.0,
            sgd: 1.0,
        }
    }
}

impl Role {
    /// Subject to weight decay and the weight-norm constraint: linear weights (including a
    /// language model's head), linear biases and embedding tables (as nanoGPT decays them).
    pub fn decays(self) -> bool {
        matches!(self, Role::Weight | Role::Bias | Role::Embedding)
    }
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
        let decay = role.decays();
        Param {
            name,
            shape,
            value,
            grad,
            layer,
            role,
            trainable,
            decay,
            lr_mult: LrMult::default(),
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

    /// A row norm's forward pass over `x: [rows, width]` into `y` (row blocks over the pool).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn forward<F: Float>(
        self,
        norm: Norm,
        eps: F,
        width: usize,
        params: &[Param<F>],
        x: &[F],
        y: &mut [F],
        cache: &mut NormCache<F>,
    ) {
        let np = self.params(params);
        norm::forward(norm, Mode::Train, width, eps, x, y, &np, None, cache);
    }

    /// The norm's backward pass over `x: [rows, width]`; `g`: `∂L/∂y` in, `∂L/∂x` out. Parameter
    /// gradients accumulate (moved out of `params` and back: a move, not an allocation);
    /// `partial` is [`norm::backward`]'s scratch.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward<F: Float>(
        self,
        norm: Norm,
        width: usize,
        params: &mut [Param<F>],
        x: &[F],
        g: &mut [F],
        cache: &NormCache<F>,
        partial: &mut [F],
    ) {
        self.backward_with(params, |np, grads| {
            norm::backward(norm, width, x, g, np, grads, cache, partial)
        });
    }

    /// [`NormIdx::backward`], then `acc += ∂L/∂x` and each row block's column sums of the new
    /// `acc` into `sums` ([`norm::backward_add`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_add<F: Float>(
        self,
        norm: Norm,
        width: usize,
        params: &mut [Param<F>],
        (x, g): (&[F], &mut [F]),
        cache: &NormCache<F>,
        partial: &mut [F],
        (acc, sums): (&mut [F], &mut [F]),
    ) {
        self.backward_with(params, |np, grads| {
            norm::backward_add(norm, width, x, g, np, grads, (cache, partial), acc, sums)
        });
    }

    /// Runs `pass` on the norm's parameters and its gradients (moved out of `params` and back:
    /// a move, not an allocation), the alpha's added onto its gradient.
    fn backward_with<F: Float>(
        self,
        params: &mut [Param<F>],
        pass: impl FnOnce(&NormParams<'_, F>, NormGrads<'_, F>),
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
            pass(&np, grads);
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

/// A linear layer's weight gradient into tensor `i` of `params`, with its optimizer step fused
/// in when `up` is given (and the engine can). Its input gradient, which reads the weight,
/// must be taken first.
pub(crate) fn weight_grad<F: Float>(
    g: &[F],
    x: &[F],
    dims: crate::nn::linear::Dims,
    alpha: F,
    (i, params): (usize, &mut [Param<F>]),
    up: Option<&mut Update<'_, F>>,
) {
    use crate::nn::linear;
    match up {
        Some(up) => linear::backward_weight_update(g, x, dims, alpha, (i, &mut params[i]), up),
        None => linear::backward_weight_scaled(g, x, dims, alpha, &mut params[i].grad),
    }
}

/// Appends a trainable parameter drawn in f64 to `params`; returns its index.
pub(crate) fn push_param<F: Float>(
    params: &mut Vec<Param<F>>,
    name: String,
    shape: Vec<usize>,
    value: Vec<f64>,
    (layer, role): (usize, Role),
) -> usize {
    let value = value.into_iter().map(F::of).collect();
    params.push(Param::new(name, shape, value, layer, role, true));
    params.len() - 1
}

/// Appends a linear layer `{name}.weight` `[fan_out, fan_in]` and, when `b` is given,
/// `{name}.bias` `[fan_out]`, with the initial values `w`, `b`; returns their indices.
pub(crate) fn push_linear<F: Float>(
    params: &mut Vec<Param<F>>,
    name: &str,
    layer: usize,
    (fan_out, fan_in): (usize, usize),
    (w, b): (Vec<f64>, Option<Vec<f64>>),
) -> (usize, Option<usize>) {
    let shape = vec![fan_out, fan_in];
    let wi = push_param(
        params,
        format!("{name}.weight"),
        shape,
        w,
        (layer, Role::Weight),
    );
    let bi = b.map(|b| {
        push_param(
            params,
            format!("{name}.bias"),
            vec![fan_out],
            b,
            (layer, Role::Bias),
        )
    });
    (wi, bi)
}

/// Appends a biased activation's `a, b, c` over `width` units to `params` as `{name}.a` … (one
/// scalar per layer, or one per unit; trained when learned), unless the form is plain; returns
/// their indices.
pub(crate) fn push_act_params<F: Float>(
    params: &mut Vec<Param<F>>,
    act: &BiasedActSpec,
    name: &str,
    layer: usize,
    width: usize,
) -> Option<[usize; 3]> {
    if act.is_plain() {
        return None;
    }
    let abc = [
        ("a", Role::ActA, &act.a),
        ("b", Role::ActB, &act.b),
        ("c", Role::ActC, &act.c),
    ];
    Some(abc.map(|(suffix, role, ps)| {
        let (n, shape) = match ps.per {
            Granularity::Layer => (1, vec![]),
            Granularity::Neuron => (width, vec![width]),
        };
        let value = vec![F::of(ps.init); n];
        let trainable = ps.mode == Trainable::Learned;
        let p = Param::new(
            format!("{name}.{suffix}"),
            shape,
            value,
            layer,
            role,
            trainable,
        );
        params.push(p);
        params.len() - 1
    }))
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

/// What a run will hold in memory, estimated from its spec before anything is allocated
/// (bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Memory {
    /// Parameter values and gradients.
    pub params: u64,
    /// Optimizer state and the loop's pre-update snapshot of the parameters.
    pub optimizer: u64,
    /// Activation buffers, their gradients and the batch.
    pub activations: u64,
}

impl Memory {
    pub fn total(&self) -> u64 {
        self.params
            .saturating_add(self.optimizer)
            .saturating_add(self.activations)
    }
}

/// The memory the model `spec` describes needs on data of `shape`, with `capacity` samples per
/// pass, trained with `optimizer_slots` values of state per parameter, in `elem` bytes per
/// value. An upper estimate: every buffer a variant may keep is counted.
pub fn memory(
    spec: &ModelSpec,
    shape: Shape,
    capacity: usize,
    optimizer_slots: u64,
    elem: u64,
) -> Memory {
    let (params, buffers) = match (spec, shape) {
        (ModelSpec::Mlp(s), Shape::Rows { input, output }) => {
            mlp::elements(s, input, output, capacity)
        }
        (ModelSpec::Gpt { gpt, .. }, Shape::Tokens { vocab, context }) => {
            gpt::elements(gpt, vocab, context, capacity)
        }
        (ModelSpec::Denoiser { net, denoiser }, Shape::Rows { input, .. }) => {
            denoiser::elements(net, denoiser, input, capacity)
        }
        // The read-in and read-out count like two tables of `dim + 1` rows (weights and a bias,
        // an upper bound for the read-out's one row), plus the interleaved input `[BT, dim]`.
        (ModelSpec::Gpt { gpt, .. }, Shape::Prompts { dim, points }) => {
            let (p, b) = gpt::elements(gpt, dim.saturating_add(1), 2 * points, capacity);
            let z = (capacity as u64).saturating_mul(2 * points as u64 * dim as u64);
            (p, b.saturating_add(z))
        }
        (
            ModelSpec::Unet { unet, .. },
            Shape::Images {
                channels,
                height,
                width,
                classes,
                dense: true,
            },
        ) => Unet::<f32>::elements(unet, (channels, height, width), classes, capacity),
        (
            ModelSpec::Cnn { cnn, .. },
            Shape::Images {
                channels,
                height,
                width,
                classes,
                dense: false,
            },
        ) => cnn::elements(cnn, (channels, height, width), classes, capacity),
        // `build` refuses the pair before anything is allocated.
        _ => (0, 0),
    };
    Memory {
        params: params.saturating_mul(2 * elem),
        optimizer: params.saturating_mul((optimizer_slots + 1) * elem),
        activations: buffers.saturating_mul(elem),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{GptSpec, MlpSpec};

    /// The estimate's parameter part bounds the built model's parameters from above, within a
    /// factor of 2 (it counts every optional activation and norm parameter).
    #[test]
    fn memory_estimate_bounds_the_parameters() {
        let mlp = ModelSpec::Mlp(MlpSpec {
            width: 64,
            depth: 3,
            ..MlpSpec::default()
        });
        let gpt = ModelSpec::Gpt {
            gpt: GptSpec {
                n_layer: 2,
                d_model: 32,
                n_head: 4,
                ..GptSpec::default()
            },
            dtype: crate::spec::Dtype::F32,
            norm_eps: 1e-5,
        };
        let cases = [
            (
                mlp,
                Shape::Rows {
                    input: 10,
                    output: 3,
                },
            ),
            (
                gpt,
                Shape::Tokens {
                    vocab: 20,
                    context: 16,
                },
            ),
        ];
        for (spec, shape) in cases {
            let m =
                build::<f32>(&spec, shape, LossKind::CrossEntropy, 8, &mut Rng::new(1)).unwrap();
            let actual: u64 = m
                .params()
                .iter()
                .map(|p| 2 * 4 * p.value.len() as u64)
                .sum();
            let est = memory(&spec, shape, 8, 2, 4);
            assert!(
                actual <= est.params && est.params <= 2 * actual,
                "{actual} vs {est:?}"
            );
            assert_eq!(
                est.optimizer,
                est.params / 2 * 3,
                "Adam's two moments and the snapshot"
            );
            assert!(est.activations > 0);
        }
    }
}
