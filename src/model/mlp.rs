//! The multilayer perceptron, with explicit forward and backward passes over preallocated buffers.
//!
//! Layer `l < depth` (hidden): `z = x·Wᵀ + b` → [norm] → `h = a·f(z − b_act) + c` → [norm];
//! layer `depth` (output): `y = h·Wᵀ + b`. Norm placement is `norm_position`. Every intermediate
//! is a named buffer ([`HiddenBuffers`]) that observables read for free; nothing is allocated
//! inside a step.

use crate::engine::ops;
use crate::engine::{Float, Rng};
use crate::nn::activation::{self, Activation, BiasedParams};
use crate::nn::init::{self, InitParams};
use crate::nn::linear;
use crate::nn::loss::{self, LossValue};
use crate::nn::norm::{self, Mode, Norm, NormCache, NormPosition};
use crate::nn::parametrization::Place;
use crate::optim::Update;
use crate::spec::{LossKind, MlpSpec, Trainable};
use std::any::Any;

use super::{
    act_params_backward, broadcast_act_params, push_act_params, push_linear, push_param,
    weight_grad, Batch, Model, NormIdx, Param, Role,
};

/// Indices into [`Mlp::params`] for one hidden layer.
#[derive(Clone, Debug, Default)]
pub struct HiddenParams {
    pub weight: usize,
    pub bias: Option<usize>,
    /// a, b, c of the biased form; `None` when the activation is plain.
    pub act: Option<[usize; 3]>,
    pub norm: NormIdx,
    pub running: Option<[usize; 2]>,
}

/// The named activations of one hidden layer, each `[rows, width]` (only the first `rows` rows
/// of the capacity are valid after a forward pass).
#[derive(Clone, Debug, Default)]
pub struct HiddenBuffers<F> {
    /// Pre-activation `z = x·Wᵀ + b` (the mean-field theory's `h^l`).
    pub pre: Vec<F>,
    /// `norm(z)` when the norm sits before the activation.
    pub normed: Vec<F>,
    /// The activation's output `a·f(u − b) + c`.
    pub act: Vec<F>,
    /// `norm(act)` when the norm sits after the activation.
    pub post: Vec<F>,
    /// `∂act/∂u = a·f′(u − b)`, kept for the backward pass.
    pub slope: Vec<F>,
    /// `f(u − b)`, kept only when `a` is learned.
    pub fu: Vec<F>,
    pub cache: NormCache<F>,
    /// a, b, c broadcast to the width, and their per-column gradients.
    pub abc: [Vec<F>; 3],
    pub abc_grad: [Vec<F>; 3],
}

pub struct Mlp<F> {
    pub params: Vec<Param<F>>,
    pub hidden: Vec<HiddenParams>,
    pub out_weight: usize,
    pub out_bias: Option<usize>,
    /// `[input, width, …, width, output]`.
    pub dims: Vec<usize>,
    pub activation: Activation,
    pub act_spec: crate::spec::BiasedActSpec,
    pub norm: Norm,
    pub norm_position: NormPosition,
    pub eps: F,
    /// Plain activation whose slope the backward pass derives from the output (no slope buffer).
    slope_from_output: bool,
    /// The next forward pass leaves out the buffers only observables read ([`Model::lean`]):
    /// a fused tanh layer's pre-activation. Cleared by that pass.
    lean: bool,
    pub bufs: Vec<HiddenBuffers<F>>,
    /// Network output `[rows, output]`.
    pub output: Vec<F>,
    /// `∂L/∂output`, filled by the loss.
    pub d_output: Vec<F>,
    /// Ping-pong gradient buffers `[capacity, max width]`.
    grad: [Vec<F>; 2],
    /// Per-row-block partial sums of the norms' parameter gradients.
    partial: Vec<F>,
    /// Rows in the last forward pass.
    pub rows: usize,
    capacity: usize,
    /// How the weights were drawn (the mean-field prediction needs σ_w², σ_b²).
    pub init: InitParams,
    /// The training loss ([`Mlp::with_loss`]; MSE until set).
    pub loss: LossKind,
    /// The factor on the output layer's input (μP's 1/m; 1 otherwise).
    pub out_mult: F,
    /// The hidden (width × width) layers' forward multiplier: mean field's `1/√m`, 1 otherwise.
    pub hidden_mult: F,
}

impl<F: Float> Mlp<F> {
    /// Builds the model from its config, drawing weights from `rng`, with buffers for up to
    /// `capacity` rows per pass.
    pub fn new(
        spec: &MlpSpec,
        input: usize,
        output: usize,
        capacity: usize,
        rng: &mut Rng,
    ) -> Self {
        let mut dims = vec![input];
        dims.extend(std::iter::repeat_n(spec.width, spec.depth));
        dims.push(output);
        let ip = InitParams {
            init: spec.init,
            fan_mode: spec.fan_mode,
            scale: spec.init_scale,
            sigma_w: spec.sigma_w2.sqrt(),
            sigma_b: spec.sigma_b2.sqrt(),
        };
        let mut params: Vec<Param<F>> = Vec::new();
        let linear =
            |params: &mut Vec<Param<F>>, l: usize, fan_in: usize, fan_out: usize, rng: &mut Rng| {
                let (w, b) = init::linear(&ip, fan_out, fan_in, rng);
                let b = spec.bias.then_some(b);
                push_linear(params, &format!("layers.{l}"), l, (fan_out, fan_in), (w, b))
            };
        let mut hidden = Vec::new();
        // Calibration rewrites a and c once, here: φ = λ·(a·f(x − b) + c − μ).
        let act_spec = calibrated(spec);
        let spec = &MlpSpec {
            act: act_spec,
            ..spec.clone()
        };
        let plain = spec.act.is_plain();
        let slope_from_output = plain && spec.activation.slope_from_output();
        for l in 0..spec.depth {
            let (fan_in, width) = (dims[l], dims[l + 1]);
            let (weight, bias) = linear(&mut params, l, fan_in, width, rng);
            let mut hp = HiddenParams {
                weight,
                bias,
                ..Default::default()
            };
            hp.act = push_act_params(&mut params, &spec.act, &format!("layers.{l}.act"), l, width);
            if spec.norm != Norm::None {
                hp.norm = NormIdx::push(
                    &mut params,
                    spec.norm,
                    &format!("layers.{l}.norm"),
                    l,
                    width,
                );
                if spec.norm.has_running_stats() {
                    // State, not trained: BatchNorm1d's running_mean 0 and running_var 1.
                    let stats = [
                        ("running_mean", Role::RunningMean, 0.0),
                        ("running_var", Role::RunningVar, 1.0),
                    ];
                    hp.running = Some(stats.map(|(name, role, init)| {
                        let name = format!("layers.{l}.norm.{name}");
                        let i = push_param(
                            &mut params,
                            name,
                            vec![width],
                            vec![init; width],
                            (l, role),
                        );
                        params[i].trainable = false;
                        i
                    }));
                }
            }
            hidden.push(hp);
        }
        let (out_weight, out_bias) = linear(&mut params, spec.depth, dims[spec.depth], output, rng);
        // The width parametrization: initial values and learning rates scaled by place, after
        // drawing (so SP, all factors 1, draws and holds exactly what it always did).
        let m = if spec.depth == 0 {
            1.0
        } else {
            spec.width as f64 / spec.base_width as f64
        };
        for p in params.iter_mut().filter(|p| p.trainable) {
            let s = spec.parametrization.scales(place(p, spec.depth), m);
            if s.init != 1.0 {
                for v in p.value.iter_mut() {
                    *v = F::of(v.f64() * s.init);
                }
            }
            p.lr_mult = super::LrMult {
                adam: s.lr_adam,
                sgd: s.lr_sgd,
            };
        }
        let out_mult = F::of(spec.parametrization.output_multiplier(m));
        let hidden_mult = F::of(spec.parametrization.hidden_multiplier(m));

        let max_width = dims.iter().copied().max().unwrap_or(1);
        let zeros = |n: usize| vec![F::zero(); n];
        let bufs = (0..spec.depth)
            .map(|_| {
                let w = spec.width;
                let n = capacity * w;
                let pre_norm =
                    spec.norm != Norm::None && spec.norm_position == NormPosition::BeforeActivation;
                let post_norm =
                    spec.norm != Norm::None && spec.norm_position == NormPosition::AfterActivation;
                HiddenBuffers {
                    pre: zeros(n),
                    normed: zeros(if pre_norm { n } else { 0 }),
                    act: zeros(n),
                    post: zeros(if post_norm { n } else { 0 }),
                    slope: zeros(if slope_from_output { 0 } else { n }),
                    fu: zeros(if !plain && spec.act.a.mode == Trainable::Learned {
                        n
                    } else {
                        0
                    }),
                    cache: NormCache::new(spec.norm, capacity, w),
                    abc: [zeros(w), zeros(w), zeros(w)],
                    abc_grad: [zeros(w), zeros(w), zeros(w)],
                }
            })
            .collect();
        Mlp {
            params,
            hidden,
            out_weight,
            out_bias,
            dims,
            activation: spec.activation,
            act_spec: spec.act.clone(),
            norm: spec.norm,
            norm_position: spec.norm_position,
            eps: F::of(spec.norm_eps),
            slope_from_output,
            lean: false,
            bufs,
            output: zeros(capacity * output),
            d_output: zeros(capacity * output),
            grad: [zeros(capacity * max_width), zeros(capacity * max_width)],
            partial: zeros(norm::partial_len(capacity, max_width)),
            rows: 0,
            capacity,
            init: ip,
            loss: LossKind::Mse,
            out_mult,
            hidden_mult,
        }
    }

    /// The model trained with `loss`.
    pub fn with_loss(mut self, loss: LossKind) -> Self {
        self.loss = loss;
        self
    }

    pub fn depth(&self) -> usize {
        self.hidden.len()
    }
    pub fn input_dim(&self) -> usize {
        self.dims[0]
    }
    pub fn output_dim(&self) -> usize {
        self.dims[self.dims.len() - 1]
    }

    fn pre_norm(&self) -> bool {
        self.norm != Norm::None && self.norm_position == NormPosition::BeforeActivation
    }
    fn post_norm(&self) -> bool {
        self.norm != Norm::None && self.norm_position == NormPosition::AfterActivation
    }

    /// The output buffer of hidden layer `l` (`[rows, width]`).
    pub fn layer_output(&self, l: usize) -> &[F] {
        let b = &self.bufs[l];
        let n = self.rows * self.dims[l + 1];
        if self.post_norm() {
            &b.post[..n]
        } else {
            &b.act[..n]
        }
    }

    /// The activation function's input of hidden layer `l`: `norm(z)` or `z`.
    pub fn act_input(&self, l: usize) -> &[F] {
        let b = &self.bufs[l];
        let n = self.rows * self.dims[l + 1];
        if self.pre_norm() {
            &b.normed[..n]
        } else {
            &b.pre[..n]
        }
    }

    /// Forward pass. `x: [rows, input]` → [`Self::output`] `[rows, output]`; `rows ≤ capacity`.
    pub fn forward(&mut self, x: &[F], rows: usize, mode: Mode) {
        assert!(
            rows <= self.capacity && x.len() >= rows * self.dims[0],
            "forward: batch exceeds capacity"
        );
        self.rows = rows;
        // A lean pass (one step's, asked for by the trainer) keeps no pre-activation it can skip.
        let keep_pre = !std::mem::take(&mut self.lean);
        let (pre_norm, post_norm) = (self.pre_norm(), self.post_norm());
        for l in 0..self.depth() {
            let (in_dim, width) = (self.dims[l], self.dims[l + 1]);
            let n = rows * width;
            let (done, rest) = self.bufs.split_at_mut(l);
            let buf = &mut rest[0];
            let input = layer_input(x, done.last(), rows * in_dim, post_norm);
            let hp = &self.hidden[l];
            // Linear: z = x·Wᵀ + b.
            // Only the value is needed when the backward pass derives the slope from the output,
            // or when there is no backward pass (eval mode) and the activation is plain.
            let value_only = self.slope_from_output || (mode == Mode::Eval && hp.act.is_none());
            // With a plain activation straight after the linear map, the bias is added in the
            // activation's pass (one memory pass fewer); otherwise the GEMM accumulates onto it.
            let fuse_bias = value_only && !pre_norm;
            // The input layer's fan-in is fixed: only width × width layers get the multiplier.
            let a = if l == 0 { F::one() } else { self.hidden_mult };
            // A plain tanh straight after the map: where the engine can, its GEMM's epilogue adds
            // the bias and stores the tanh too (the same bits, one pass over memory fewer).
            if fuse_bias && self.activation == Activation::Tanh && !post_norm {
                let HiddenBuffers { pre, act, .. } = buf;
                let w = &self.params[hp.weight].value;
                let bias = hp.bias.map(|i| self.params[i].value.as_slice());
                let dims = (rows, width, in_dim);
                let z = (&mut pre[..n], keep_pre);
                if linear::forward_tanh(input, w, dims, a, bias, z, &mut act[..n]) {
                    continue;
                }
            }
            if !fuse_bias {
                let bias = hp.bias.map(|i| self.params[i].value.as_slice());
                ops::fill_rows(&mut buf.pre[..n], width, bias);
            }
            let beta = if fuse_bias { F::zero() } else { F::one() };
            let w = &self.params[hp.weight].value;
            linear::forward_scaled(input, w, (rows, width, in_dim), a, beta, &mut buf.pre[..n]);
            // Norm before the activation.
            if pre_norm {
                norm_forward(
                    self.norm,
                    mode,
                    width,
                    self.eps,
                    &mut self.params,
                    hp,
                    &buf.pre[..n],
                    &mut buf.normed[..n],
                    &mut buf.cache,
                );
            }
            // Activation a·f(u − b) + c, fused with its slope.
            let biased = match hp.act {
                Some(idx) => {
                    broadcast_act_params(&self.params, idx, &mut buf.abc);
                    true
                }
                None => false,
            };
            let HiddenBuffers {
                pre,
                normed,
                act,
                slope,
                fu,
                abc,
                ..
            } = buf;
            if fuse_bias {
                let bias = hp.bias.map(|i| self.params[i].value.as_slice());
                activation::forward_bias_value_only(
                    self.activation,
                    width,
                    bias,
                    &mut pre[..n],
                    &mut act[..n],
                );
            } else if value_only {
                let u: &[F] = if pre_norm { &normed[..n] } else { &pre[..n] };
                activation::forward_value_only(self.activation, u, &mut act[..n]);
            } else {
                let u: &[F] = if pre_norm { &normed[..n] } else { &pre[..n] };
                let params = biased.then(|| BiasedParams {
                    a: &abc[0],
                    b: &abc[1],
                    c: &abc[2],
                });
                let fu = if fu.is_empty() {
                    None
                } else {
                    Some(&mut fu[..n])
                };
                activation::forward(
                    self.activation,
                    width,
                    params,
                    u,
                    &mut act[..n],
                    &mut slope[..n],
                    fu,
                );
            }
            // Norm after the activation.
            if post_norm {
                norm_forward(
                    self.norm,
                    mode,
                    width,
                    self.eps,
                    &mut self.params,
                    hp,
                    &buf.act[..n],
                    &mut buf.post[..n],
                    &mut buf.cache,
                );
            }
        }
        // Output layer.
        let (in_dim, out_dim) = (self.dims[self.depth()], self.output_dim());
        let input = layer_input(x, self.bufs.last(), rows * in_dim, post_norm);
        let bias = self.out_bias.map(|i| self.params[i].value.as_slice());
        ops::fill_rows(&mut self.output[..rows * out_dim], out_dim, bias);
        let (w, dims) = (&self.params[self.out_weight].value, (rows, out_dim, in_dim));
        let out = &mut self.output[..rows * out_dim];
        linear::forward_scaled(input, w, dims, self.out_mult, F::one(), out);
    }

    /// Backward pass from [`Self::d_output`] (set by the loss) to every parameter gradient.
    /// Gradients are overwritten, not accumulated. Needs the last forward's buffers (train mode).
    pub fn backward(&mut self, x: &[F]) {
        self.backward_with(x, None);
    }

    /// [`Self::backward`], and with `up`, each layer's optimizer step as soon as its input
    /// gradient is out (nothing after reads its parameters): the weights' in their gradient
    /// GEMMs' epilogues where the engine can ([`linear::backward_weight_update`]).
    pub fn backward_with(&mut self, x: &[F], mut up: Option<&mut Update<'_, F>>) {
        let rows = self.rows;
        let (pre_norm, post_norm) = (self.pre_norm(), self.post_norm());
        // Weight gradients are written whole by their GEMM (β = 0); the rest accumulate.
        for p in self.params.iter_mut().filter(|p| p.role != Role::Weight) {
            p.grad.fill(F::zero());
        }
        let depth = self.depth();
        // A plain tanh's slope (from its output) joins the epilogue of the GEMM that brings its
        // gradient in, where the engine can; `slope_in` says the gradient arrived with it.
        let tanh_in = self.slope_from_output && self.activation == Activation::Tanh && !post_norm;
        let mut slope_in = false;
        // Output layer: dW = gᵀ·h, db = Σ_rows g, dh = g·W.
        {
            let (in_dim, out_dim) = (self.dims[depth], self.output_dim());
            let input = layer_input(x, self.bufs.last(), rows * in_dim, post_norm);
            let g = &self.d_output[..rows * out_dim];
            let dims = (rows, out_dim, in_dim);
            let (wi, a) = (self.out_weight, self.out_mult);
            // ∂L/∂x first: after it, an eager step may change W.
            if depth > 0 {
                let dx = &mut self.grad[0][..rows * in_dim];
                let w = &self.params[wi].value;
                let h = &self.bufs[depth - 1].act[..rows * in_dim];
                slope_in = tanh_in && linear::backward_input_tanh(g, w, dims, a, h, dx);
                if !slope_in {
                    linear::backward_input_scaled(g, w, dims, a, dx);
                }
            }
            weight_grad(g, input, dims, a, (wi, &mut self.params), up.as_deref_mut());
            if let Some(bi) = self.out_bias {
                ops::column_sums_by_columns(g, out_dim, &mut self.params[bi].grad);
            }
            if let Some(up) = up.as_deref_mut() {
                up.layer(&mut self.params, depth);
            }
        }
        for l in (0..depth).rev() {
            let (in_dim, width) = (self.dims[l], self.dims[l + 1]);
            let n = rows * width;
            let hp = self.hidden[l].clone();
            let [g_buf, next_buf] = &mut self.grad;
            let g = &mut g_buf[..n];
            let (done, rest) = self.bufs.split_at_mut(l);
            let buf = &mut rest[0];
            if post_norm {
                hp.norm.backward(
                    self.norm,
                    width,
                    &mut self.params,
                    &buf.act[..n],
                    g,
                    &buf.cache,
                    &mut self.partial,
                );
            }
            // Activation: parameter gradients first (they need ∂L/∂h), then ∂L/∂u = ∂L/∂h · slope.
            if let Some(idx) = hp.act {
                let HiddenBuffers {
                    slope,
                    fu,
                    abc_grad,
                    ..
                } = buf;
                let fu_opt = if fu.is_empty() { None } else { Some(&fu[..n]) };
                act_params_backward(
                    &mut self.params,
                    idx,
                    width,
                    g,
                    &slope[..n],
                    fu_opt,
                    abc_grad,
                );
            }
            if self.slope_from_output {
                if !slope_in {
                    activation::backward_from_output(self.activation, g, &buf.act[..n]);
                }
            } else {
                activation::backward_input(g, &buf.slope[..n]);
            }
            if pre_norm {
                hp.norm.backward(
                    self.norm,
                    width,
                    &mut self.params,
                    &buf.pre[..n],
                    g,
                    &buf.cache,
                    &mut self.partial,
                );
            }
            // Linear: dW = gᵀ·x, db = Σ_rows g, dx = g·W.
            let input = layer_input(x, done.last(), rows * in_dim, post_norm);
            let dims = (rows, width, in_dim);
            // The input layer's fan-in is fixed: only width × width layers get the multiplier.
            let a = if l == 0 { F::one() } else { self.hidden_mult };
            // ∂L/∂x first: after it, an eager step may change W.
            if l > 0 {
                let w = &self.params[hp.weight].value;
                let dx = &mut next_buf[..rows * in_dim];
                let h = &done[l - 1].act[..rows * in_dim];
                slope_in = tanh_in && linear::backward_input_tanh(g, w, dims, a, h, dx);
                if !slope_in {
                    linear::backward_input_scaled(g, w, dims, a, dx);
                }
            }
            weight_grad(
                g,
                input,
                dims,
                a,
                (hp.weight, &mut self.params),
                up.as_deref_mut(),
            );
            if let Some(bi) = hp.bias {
                ops::column_sums_by_columns(g, width, &mut self.params[bi].grad);
            }
            if let Some(up) = up.as_deref_mut() {
                up.layer(&mut self.params, l);
            }
            if l > 0 {
                self.grad.swap(0, 1);
            }
        }
    }
}

impl<F: Float> Model<F> for Mlp<F> {
    fn params(&self) -> &[Param<F>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<F>] {
        &mut self.params
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    fn lean(&mut self) {
        self.lean = true;
    }
    /// `Rows { x: [rows, input], .. }` → [`Mlp::output`] `[rows, output]`.
    fn forward(&mut self, batch: &Batch<'_, F>, mode: Mode) {
        let Batch::Rows { x, rows, .. } = *batch else {
            unreachable!("model::build pairs an MLP with feature rows")
        };
        Mlp::forward(self, x, rows, mode);
    }
    /// [`Mlp::loss`] of [`Mlp::output`] against the rows' targets.
    fn loss(&mut self, batch: &Batch<'_, F>, grad: bool) -> LossValue {
        let Batch::Rows { y, rows, .. } = *batch else {
            unreachable!("model::build pairs an MLP with feature rows")
        };
        let k = self.output_dim();
        let g = grad.then_some(&mut self.d_output[..rows * k]);
        loss::loss(self.loss, &self.output[..rows * k], y, rows, k, g)
    }
    fn backward(&mut self, batch: &Batch<'_, F>) {
        let Batch::Rows { x, .. } = *batch else {
            unreachable!("model::build pairs an MLP with feature rows")
        };
        Mlp::backward(self, x);
    }
    fn backward_update(&mut self, batch: &Batch<'_, F>, up: &mut Update<'_, F>) {
        let Batch::Rows { x, .. } = *batch else {
            unreachable!("model::build pairs an MLP with feature rows")
        };
        self.backward_with(x, Some(up));
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

/// Where a parameter sits, for the width parametrization.
fn place<F>(p: &Param<F>, depth: usize) -> Place {
    let vector = |p: &Param<F>| {
        if p.value.len() > 1 {
            Place::WidthVector
        } else {
            Place::Scalar
        }
    };
    match p.role {
        Role::Weight if p.layer == 0 && depth > 0 => Place::InputWeight,
        Role::Weight if p.layer < depth => Place::HiddenWeight,
        Role::Weight => Place::OutputWeight,
        Role::Bias if p.layer < depth => Place::HiddenBias {
            fan_in_is_width: p.layer > 0,
        },
        Role::Bias => Place::OutputBias,
        Role::ActA | Role::ActB | Role::ActC | Role::NormWeight | Role::NormBias => vector(p),
        _ => Place::Scalar,
    }
}

/// `(parameters, buffer values)` of the MLP [`Mlp::new`] builds, counted from its spec
/// (saturating: a spec far past any machine still gets a number).
pub(super) fn elements(spec: &MlpSpec, input: usize, output: usize, capacity: usize) -> (u64, u64) {
    let mul = |a: usize, b: usize| (a as u64).saturating_mul(b as u64);
    let (w, depth) = (spec.width, spec.depth);
    let widths = std::iter::once(input).chain(std::iter::repeat_n(w, depth));
    let outs = std::iter::repeat_n(w, depth).chain(std::iter::once(output));
    // Weights and biases, then per hidden layer up to 3·width activation parameters and a norm's
    // weight, bias, α and running statistics.
    let linear: u64 = widths
        .zip(outs)
        .map(|(i, o)| mul(i, o).saturating_add(o as u64))
        .sum();
    let per_layer = mul(w, 7).saturating_add(1);
    let params = linear.saturating_add(per_layer.saturating_mul(depth as u64));
    // Per hidden layer: pre, normed, act, post, slope, f(u − b) and a norm's cache (`[cap, w]`
    // for DyT); the two gradient buffers; output and its gradient.
    let max_width = input.max(w).max(output);
    let buffers = mul(capacity, w)
        .saturating_mul(7)
        .saturating_mul(depth as u64)
        .saturating_add(mul(capacity, max_width).saturating_mul(2))
        .saturating_add(mul(capacity, output).saturating_mul(2))
        .saturating_add(mul(capacity.div_ceil(ops::ROW_BLOCK), 2 * max_width + 1));
    (params, buffers)
}

/// The input of layer `l`: the data for the first layer, else the previous layer's output.
fn layer_input<'a, F>(
    x: &'a [F],
    prev: Option<&'a HiddenBuffers<F>>,
    n: usize,
    post_norm: bool,
) -> &'a [F] {
    match prev {
        None => &x[..n],
        Some(p) if post_norm => &p.post[..n],
        Some(p) => &p.act[..n],
    }
}

/// A norm's forward pass, with BatchNorm's running statistics moved out and back.
#[allow(clippy::too_many_arguments)]
fn norm_forward<F: Float>(
    norm: Norm,
    mode: Mode,
    width: usize,
    eps: F,
    params: &mut [Param<F>],
    hp: &HiddenParams,
    x: &[F],
    y: &mut [F],
    cache: &mut NormCache<F>,
) {
    let mut running = take_running(params, hp);
    let np = hp.norm.params(params);
    let stats = running
        .as_mut()
        .map(|(m, v)| (m.as_mut_slice(), v.as_mut_slice()));
    norm::forward(norm, mode, width, eps, x, y, &np, stats, cache);
    put_running(params, hp, running);
}

/// The activation parameters after `model.calibrate` (the spec's own when it is `none`).
fn calibrated(spec: &MlpSpec) -> crate::spec::BiasedActSpec {
    let mut act = spec.act.clone();
    if spec.calibrate == crate::spec::Calibrate::SelfNormalizing {
        let phi = crate::theory::meanfield::Phi {
            act: spec.activation,
            a: act.a.init,
            b: act.b.init,
            c: act.c.init,
        };
        // Validation rejects a = 0, the one case without a calibration.
        if let Ok(cal) = crate::theory::calibrate::self_normalize(phi) {
            act.a.init *= cal.lambda;
            act.c.init = cal.lambda * (act.c.init - cal.mean);
        }
    }
    act
}

/// BatchNorm running statistics moved out of the parameter list for the duration of a forward
/// pass (a move, not an allocation), so the norm can read its weights while updating them.
fn take_running<F: Float>(params: &mut [Param<F>], hp: &HiddenParams) -> Option<(Vec<F>, Vec<F>)> {
    let [m, v] = hp.running?;
    Some((
        std::mem::take(&mut params[m].value),
        std::mem::take(&mut params[v].value),
    ))
}

fn put_running<F: Float>(
    params: &mut [Param<F>],
    hp: &HiddenParams,
    running: Option<(Vec<F>, Vec<F>)>,
) {
    if let (Some([m, v]), Some((mean, var))) = (hp.running, running) {
        params[m].value = mean;
        params[v].value = var;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::{Hyper, OptimState, Optimizer};
    use crate::spec::{ActParamSpec, Granularity};

    fn bits<F: Float>(x: &[F]) -> Vec<u64> {
        x.iter().map(|v| v.f64().to_bits()).collect()
    }

    /// The f32 gradients, with every fused epilogue the engine has (a tanh layer's bias and
    /// tanh, the slope in the input gradient's GEMM), against the same network in f64 (no
    /// fusion: f64 takes the plain passes): close to f32's rounding, with and without biases and
    /// with a norm before the activation. A term dropped or applied at the wrong point would be
    /// off by far more (a bias gradient summed before the norm's backward was off by 46%).
    #[test]
    fn fused_f32_gradients_match_f64() {
        for (norm, bias) in [
            (Norm::None, true),
            (Norm::None, false),
            (Norm::Layernorm, true),
        ] {
            let spec = MlpSpec {
                width: 96,
                depth: 3,
                activation: Activation::Tanh,
                norm,
                bias,
                ..MlpSpec::default()
            };
            let (rows, input, output) = (64, 24, 2);
            let mut rng = Rng::stream(9, "fused");
            let x: Vec<f64> = (0..rows * input).map(|_| rng.normal()).collect();
            let y: Vec<f64> = (0..rows * output).map(|_| rng.normal()).collect();
            fn grads<F: Float>(
                spec: &MlpSpec,
                (x, y, input, output, rows): (&[f64], &[f64], usize, usize, usize),
            ) -> Vec<Vec<f64>> {
                let mut m = Mlp::<F>::new(spec, input, output, rows, &mut Rng::stream(2, "init"))
                    .with_loss(LossKind::Mse);
                let x: Vec<F> = x.iter().map(|&v| F::of(v)).collect();
                let y: Vec<F> = y.iter().map(|&v| F::of(v)).collect();
                let batch = Batch::Rows { x: &x, y: &y, rows };
                m.forward(&x, rows, Mode::Train);
                Model::loss(&mut m, &batch, true);
                Model::backward(&mut m, &batch);
                m.params
                    .iter()
                    .map(|p| p.grad.iter().map(|g| g.f64()).collect())
                    .collect()
            }
            let data = (&x[..], &y[..], input, output, rows);
            let (g32, g64) = (grads::<f32>(&spec, data), grads::<f64>(&spec, data));
            for (i, (a, b)) in g32.iter().zip(&g64).enumerate() {
                let scale = b.iter().fold(0.0f64, |m, v| m.max(v.abs()));
                let err = a
                    .iter()
                    .zip(b)
                    .fold(0.0f64, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    scale > 0.0,
                    "{norm:?} bias {bias}: tensor {i} has no gradient"
                );
                assert!(
                    err <= 1e-4 * scale,
                    "{norm:?} bias {bias}: tensor {i}: max error {err:e} of {scale:e}"
                );
            }
        }
    }

    /// Lean forward passes ([`Model::lean`], an unlogged training step's) change no result: the
    /// same parameters, bit for bit, after steps taken with and without them; the pre-activation
    /// is left out only by the lean pass (where the engine fuses the tanh), and the next full
    /// pass writes it again.
    #[test]
    fn lean_passes_change_no_result() {
        let spec = MlpSpec {
            width: 128,
            depth: 2,
            activation: Activation::Tanh,
            ..MlpSpec::default()
        };
        let h = Hyper {
            optimizer: Optimizer::Adam,
            momentum: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        // Shapes the engine fuses (not its small path).
        let (rows, input) = (128, 64);
        let mut rng = Rng::stream(3, "lean");
        let x: Vec<f32> = (0..rows * input).map(|_| rng.normal() as f32).collect();
        let y: Vec<f32> = (0..rows).map(|_| rng.normal() as f32).collect();
        let batch = Batch::Rows { x: &x, y: &y, rows };
        let new = || {
            let m = Mlp::<f32>::new(&spec, input, 1, rows, &mut Rng::stream(1, "init"))
                .with_loss(LossKind::Mse);
            let opt = OptimState::new(&m.params, h.optimizer);
            (m, opt)
        };
        let ((mut full, mut of), (mut lean, mut ol)) = (new(), new());
        for _ in 0..5 {
            for (m, opt, is_lean) in [(&mut full, &mut of, false), (&mut lean, &mut ol, true)] {
                if is_lean {
                    Model::lean(m);
                }
                Model::forward(m, &batch, Mode::Train);
                Model::loss(m, &batch, true);
                let mut up = opt.begin(&h, 3e-3, true);
                Model::backward_update(m, &batch, &mut up);
                up.finish(&mut m.params);
            }
        }
        for (a, b) in full.params.iter().zip(&lean.params) {
            assert_eq!(bits(&a.value), bits(&b.value), "parameters");
        }
        assert_eq!(bits(&full.output), bits(&lean.output), "outputs");
        let n = rows * 128;
        let fused = crate::engine::sgemm::available();
        // The lean model's pre-activations are still its first (full) pass's.
        for l in 0..2 {
            let same = bits(&full.bufs[l].pre[..n]) == bits(&lean.bufs[l].pre[..n]);
            assert_eq!(
                same, !fused,
                "layer {l}: pre-activation left out only where fused"
            );
        }
        // One full pass each: the same pre-activations again.
        for m in [&mut full, &mut lean] {
            Model::forward(m, &batch, Mode::Train);
        }
        for l in 0..2 {
            assert_eq!(bits(&full.bufs[l].pre[..n]), bits(&lean.bufs[l].pre[..n]));
        }
    }

    /// Training with each layer updated during the backward pass (the weights' Adam steps in
    /// their GEMM epilogues, where the engine fuses them) against the backward pass then the
    /// whole step: every parameter and moment agrees bit for bit, step after step, with norms
    /// and learned activation parameters in the layers, in f32 and f64. A parameter updated
    /// before the backward pass last reads it (a misassigned layer) would show here.
    #[test]
    fn eager_updates_match_the_whole_step() {
        let learned = ActParamSpec {
            init: 0.1,
            mode: Trainable::Learned,
            per: Granularity::Neuron,
        };
        let cases = [
            (Activation::Tanh, Norm::None, Optimizer::Adam, 96, 3, 20, 2),
            (
                Activation::Relu,
                Norm::Layernorm,
                Optimizer::Adamw,
                80,
                2,
                7,
                3,
            ),
            (
                Activation::Gelu,
                Norm::Rmsnorm,
                Optimizer::Momentum,
                72,
                2,
                9,
                1,
            ),
            // 142 tensors: past any fixed-size record of what was updated.
            (Activation::Tanh, Norm::None, Optimizer::Adam, 8, 70, 3, 1),
        ];
        for (act, norm, optimizer, width, depth, input, output) in cases {
            let mut spec = MlpSpec {
                width,
                depth,
                activation: act,
                norm,
                ..MlpSpec::default()
            };
            if norm != Norm::None {
                spec.act.b = learned.clone();
            }
            let h = Hyper {
                optimizer,
                momentum: 0.9,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            };
            let rows = 64;
            let mut rng = Rng::stream(5, "eager");
            let x: Vec<f64> = (0..rows * input).map(|_| rng.normal()).collect();
            let y: Vec<f64> = (0..rows * output).map(|_| rng.normal()).collect();
            fn run<F: Float>(
                spec: &MlpSpec,
                h: &Hyper,
                (x, y, input, output, rows): (&[f64], &[f64], usize, usize, usize),
                eager: bool,
            ) -> (Vec<Vec<u64>>, Vec<Vec<u64>>) {
                let mut m = Mlp::<F>::new(spec, input, output, rows, &mut Rng::stream(1, "init"))
                    .with_loss(LossKind::Mse);
                let mut opt = OptimState::new(&m.params, h.optimizer);
                let x: Vec<F> = x.iter().map(|&v| F::of(v)).collect();
                let y: Vec<F> = y.iter().map(|&v| F::of(v)).collect();
                let batch = Batch::Rows { x: &x, y: &y, rows };
                for _ in 0..4 {
                    m.forward(&x, rows, Mode::Train);
                    Model::loss(&mut m, &batch, true);
                    if eager {
                        let mut up = opt.begin(h, 3e-3, true);
                        Model::backward_update(&mut m, &batch, &mut up);
                        up.finish(&mut m.params);
                    } else {
                        Model::backward(&mut m, &batch);
                        opt.step(&mut m.params, h, 3e-3);
                    }
                }
                let p = m.params.iter().map(|p| bits(&p.value)).collect();
                let s = opt.m.iter().chain(&opt.v).map(|s| bits(s)).collect();
                (p, s)
            }
            let data = (&x[..], &y[..], input, output, rows);
            let ctx = format!("{act:?} {norm:?} {optimizer:?}");
            assert_eq!(
                run::<f32>(&spec, &h, data, true),
                run::<f32>(&spec, &h, data, false),
                "{ctx} f32"
            );
            assert_eq!(
                run::<f64>(&spec, &h, data, true),
                run::<f64>(&spec, &h, data, false),
                "{ctx} f64"
            );
        }
    }
}
