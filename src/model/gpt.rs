//! A decoder-only transformer (GPT), with explicit forward and backward passes over preallocated
//! named buffers — the same discipline as the MLP, in the llm.c layout.
//!
//! Shapes: `B` sequences of `T` tokens, `BT = B·T` rows, width `C = d_model`, `H` heads of
//! `hd = C/H`, MLP width `M = d_mlp`, vocabulary `V`. Every activation buffer is `[BT, ·]`
//! row-major (row `b·T + t`), except the per-head ones, `[B, H, T, ·]`.
//!
//! One block `l`, pre-norm (GPT-2, Radford et al. 2019):
//! ```text
//! n1 = norm1(x)                 s1 = x  + attn(n1)
//! n2 = norm2(s1)                x' = s1 + mlp(n2)
//! ```
//! post-norm (the original Transformer, Vaswani et al. 2017):
//! ```text
//! s1 = x + attn(x)              n1 = norm1(s1)
//! s2 = n1 + mlp(n1)             x' = norm2(s2)
//! ```
//! with `attn(u) = proj(concat_h softmax(q_h k_hᵀ/√hd + causal) v_h)`, `[q k v] = u·W_qkvᵀ + b`,
//! rotary position rotations of q and k when positions are rotary, and
//! `mlp(u) = fc2(a·f(fc1(u) − b) + c)` with any activation of the zoo in its biased form.
//! Input: `wte[token] (+ wpe[t] when positions are learned)`; output: `logits = norm_f(x_L)·W_headᵀ`
//! (`norm_f` only with pre-norm: post-norm blocks already end normalized), with `W_head = wte`
//! when the embedding is tied. No dropout (the lab trains at dropout 0, GPT-2's fine-tuning and
//! nanoGPT's small-data default). Loss: cross-entropy over the vocabulary at every position whose
//! target carries a loss (targets [`IGNORE`]d are not), averaged over those positions.
//!
//! The same blocks also read continuous prompts ([`Ends::Prompts`], in-context regression as in
//! Garg, Tsipras, Liang & Valiant 2022): a prompt of `K` points `(x_i, y_i)`, `x_i ∈ R^d`, becomes
//! the `T = 2K` vectors `z = (x_1, ỹ_1, x_2, ỹ_2, …)` with `ỹ_i = (y_i, 0, …, 0)`, read in by a
//! linear layer `z·W_inᵀ + b_in` (plus `wpe[t]`) in place of the token table; the read-out
//! `xf·W_outᵀ + b_out` gives one scalar per position, and the prediction of `y_i` is the one at
//! `x_i`'s position `2(i − 1)` (it sees the `i − 1` earlier pairs, not `y_i`). Loss: the squared error
//! averaged over the `B·K` predictions (Garg et al.'s `mean_squared_error`).

use std::any::Any;

use crate::engine::ops;
use crate::engine::{par, Float, Rng};
use crate::nn::activation::{self, BiasedParams};
use crate::nn::attention::{self, Rope};
use crate::nn::init::{self, InitParams};
use crate::nn::loss::LossValue;
pub use crate::nn::loss::{token_cross_entropy as cross_entropy, IGNORE};
use crate::nn::norm::{self, Mode, NormCache};
use crate::nn::parametrization::{Parametrization, Place};
use crate::nn::{embedding, linear};
pub use crate::spec::gpt::{GptInit, GptSpec, Placement, Positions, Tying, ROPE_BASE};
use crate::spec::Trainable;

use super::{
    act_params_backward, broadcast_act_params, push_act_params, push_linear, push_param,
    weight_grad, Batch, Model, Param, Role,
};
use crate::optim::Update;

// ---------------------------------------------------------------------------------------------
// Parameters and buffers
// ---------------------------------------------------------------------------------------------

pub use super::NormIdx;

/// The input end while the parameters are drawn (the output end is drawn last).
enum InputEnd {
    Wte(usize),
    /// `dim`, (read-in weight, bias).
    ReadIn(usize, (usize, usize)),
}

/// Indices into [`Gpt::params`] of one block.
#[derive(Clone, Copy, Debug)]
pub struct BlockIdx {
    pub ln_1: NormIdx,
    pub qkv_w: usize,
    pub qkv_b: usize,
    pub proj_w: usize,
    pub proj_b: usize,
    pub ln_2: NormIdx,
    pub fc_w: usize,
    pub fc_b: usize,
    /// a, b, c of the biased activation; `None` when it is plain.
    pub act: Option<[usize; 3]>,
    pub fc2_w: usize,
    pub fc2_b: usize,
}

/// The named activations of one block (capacity rows; the first `B·T` are valid).
#[derive(Clone, Debug, Default)]
pub struct BlockBuffers<F> {
    /// `norm1` output `[BT, C]`.
    pub n1: Vec<F>,
    /// After the attention residual `[BT, C]`.
    pub s1: Vec<F>,
    /// `norm2` output (pre-norm) `[BT, C]`.
    pub n2: Vec<F>,
    /// After the MLP residual, before `norm2` (post-norm) `[BT, C]`.
    pub s2: Vec<F>,
    pub cache1: NormCache<F>,
    pub cache2: NormCache<F>,
    /// `[BT, 3C]`: q, k, v side by side, head `i` in columns `i·hd..(i+1)·hd` of each; q and k
    /// rotated in place when positions are rotary. Attention reads its heads from here.
    pub qkv: Vec<F>,
    /// Attention probabilities `[B, H, T, T]` (zero above the diagonal).
    pub att: Vec<F>,
    /// Attention output, heads side by side `[BT, C]`.
    pub y: Vec<F>,
    /// Largest pre-softmax logit of each head in the last forward pass `[H]`.
    pub logit_max: Vec<F>,
    /// The same per (sequence, head) `[B·H]`.
    pub bh_max: Vec<F>,
    /// MLP pre-activation, activation and slope `[BT, M]`; `fu = f(u − b)` when `a` is learned.
    pub pre: Vec<F>,
    pub act: Vec<F>,
    pub slope: Vec<F>,
    pub fu: Vec<F>,
    pub abc: [Vec<F>; 3],
    pub abc_grad: [Vec<F>; 3],
}

/// The resolved shape of a model.
#[derive(Clone, Debug)]
pub struct GptDims {
    pub n_layer: usize,
    pub c: usize,
    pub h: usize,
    pub hd: usize,
    pub m: usize,
    pub vocab: usize,
    /// Longest sequence (size of the learned position table, of the rotary tables).
    pub context: usize,
}

/// What enters the residual stream and what leaves it (indices into [`Gpt::params`]).
#[derive(Clone, Copy, Debug)]
pub enum Ends {
    /// Token ids: `wte` `[V, C]` in; logits over the vocabulary out, through the untied `head`
    /// `[V, C]` or, when `None`, through `wte` (tied).
    Tokens { wte: usize, head: Option<usize> },
    /// Continuous prompts of `dim`-dimensional points: `read_in` (weight `[C, d]`, bias `[C]`)
    /// in, `read_out` (weight `[1, C]`, bias `[1]`) out.
    Prompts {
        dim: usize,
        read_in: (usize, usize),
        read_out: (usize, usize),
    },
}

/// What a model reads: token ids over a vocabulary, or prompts of points in `dim` dimensions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    Tokens { vocab: usize },
    Prompts { dim: usize },
}

pub struct Gpt<F> {
    pub params: Vec<Param<F>>,
    /// `vocab` is the head's output width: the vocabulary, or 1 for prompts.
    pub dims: GptDims,
    pub spec: GptSpec,
    pub eps: F,
    pub ends: Ends,
    pub wpe: Option<usize>,
    pub blocks: Vec<BlockIdx>,
    pub ln_f: NormIdx,
    /// Prompts only: the interleaved input vectors `z` `[BT, d]` (empty for tokens).
    pub z: Vec<F>,
    /// Residual stream entering block `l` (`l = n_layer`: leaving the last) `[BT, C]`.
    pub resid: Vec<Vec<F>>,
    pub bufs: Vec<BlockBuffers<F>>,
    /// Final norm output (the head's input) `[BT, C]`.
    pub xf: Vec<F>,
    pub cache_f: NormCache<F>,
    /// `[BT, V]` (prompts: `[BT, 1]`, the read-out at every position).
    pub logits: Vec<F>,
    pub d_logits: Vec<F>,
    /// Backward scratch: ∂L/∂(residual-width buffers), the MLP width, qkv; `g_att` holds
    /// ∂L/∂scores of every (sequence, head) so sequences can run on separate threads.
    g: [Vec<F>; 3],
    g_m: Vec<F>,
    g_qkv: Vec<F>,
    g_att: Vec<F>,
    /// Per-row-block partial sums (norm and bias gradients): `[blocks, max(2C + 1, 3C, M)]`.
    partial: Vec<F>,
    /// Per-row-block column sums of the residual stream's gradient (pre-norm: the next linear
    /// layer's bias gradient, summed as the norm's backward adds onto the stream) `[blocks, C]`.
    stream_sums: Vec<F>,
    /// Rotary tables (empty unless positions are rotary).
    rope: Rope<F>,
    /// The attention logits' scale: `1/√hd` (SP, NTK), `√hd_base/hd` (μP).
    pub att_scale: F,
    /// The head's (or read-out's) forward multiplier: μP's `1/m`, 1 otherwise.
    pub out_mult: F,
    /// The blocks' matrices' forward multiplier: mean field's `1/√m`, 1 otherwise.
    pub hidden_mult: F,
    /// Sequences and tokens per sequence of the last forward pass.
    pub batch: usize,
    pub seq: usize,
    capacity: usize,
}

/// Where a GPT parameter sits, for the width parametrization: embeddings and the read-in are
/// input weights (fan-in fixed), the blocks' matrices hidden weights, the head and read-out the
/// readout.
fn gpt_place(name: &str, len: usize) -> Place {
    let vector = if len > 1 {
        Place::WidthVector
    } else {
        Place::Scalar
    };
    if name == "transformer.wte.weight"
        || name == "transformer.wpe.weight"
        || name == "read_in.weight"
    {
        Place::InputWeight
    } else if name == "read_in.bias" {
        Place::HiddenBias {
            fan_in_is_width: false,
        }
    } else if name == "lm_head.weight" || name == "read_out.weight" {
        Place::OutputWeight
    } else if name == "read_out.bias" {
        Place::OutputBias
    } else if name.ends_with("c_attn.weight")
        || name.ends_with("c_proj.weight")
        || name.ends_with("c_fc.weight")
    {
        Place::HiddenWeight
    } else if name.ends_with("c_attn.bias")
        || name.ends_with("c_proj.bias")
        || name.ends_with("c_fc.bias")
    {
        Place::HiddenBias {
            fan_in_is_width: true,
        }
    } else {
        vector
    }
}

impl<F: Float> Gpt<F> {
    /// Builds the model, drawing weights from `rng`, with buffers for up to `capacity` sequences
    /// of up to `context` tokens over a vocabulary of `vocab`.
    pub fn new(
        spec: &GptSpec,
        eps: f64,
        vocab: usize,
        context: usize,
        capacity: usize,
        rng: &mut Rng,
    ) -> Self {
        Gpt::with_input(spec, eps, Input::Tokens { vocab }, context, capacity, rng)
    }

    /// Builds the in-context regression model for prompts of up to `points` points in `dim`
    /// dimensions (context `2·points`), with buffers for `capacity` prompts.
    pub fn new_prompts(
        spec: &GptSpec,
        eps: f64,
        dim: usize,
        points: usize,
        capacity: usize,
        rng: &mut Rng,
    ) -> Self {
        let input = Input::Prompts { dim };
        Gpt::with_input(spec, eps, input, 2 * points, capacity, rng)
    }

    /// Builds the model for `input` (`context`: the longest sequence, `2·points` for prompts),
    /// drawing the parameters in their order in [`Gpt::params`].
    pub fn with_input(
        spec: &GptSpec,
        eps: f64,
        input: Input,
        context: usize,
        capacity: usize,
        rng: &mut Rng,
    ) -> Self {
        let vocab = match input {
            Input::Tokens { vocab } => vocab,
            Input::Prompts { .. } => 1,
        };
        let (c, h, m, nl) = (spec.d_model, spec.n_head, spec.mlp_width(), spec.n_layer);
        let hd = c / h;
        let dims = GptDims {
            n_layer: nl,
            c,
            h,
            hd,
            m,
            vocab,
            context,
        };
        let mut params: Vec<Param<F>> = Vec::new();
        let std = spec.init_std;
        let resid_std = std / (2.0 * nl as f64).sqrt();
        let normal = |rng: &mut Rng, n: usize, s: f64| (0..n).map(|_| s * rng.normal()).collect();
        // A linear layer `[fan_out, fan_in]` + bias; `residual` marks GPT-2's scaled projections.
        let linear = |params: &mut Vec<Param<F>>,
                      name: &str,
                      layer: usize,
                      (fan_out, fan_in): (usize, usize),
                      residual: bool,
                      rng: &mut Rng|
         -> (usize, usize) {
            let (w, b) = match spec.init {
                GptInit::Gpt2 => {
                    let s = if residual { resid_std } else { std };
                    (normal(rng, fan_out * fan_in, s), vec![0.0; fan_out])
                }
                // torch.nn.Linear's default.
                GptInit::Pytorch => init::linear(&InitParams::PYTORCH, fan_out, fan_in, rng),
            };
            let (wi, bi) = push_linear(params, name, layer, (fan_out, fan_in), (w, Some(b)));
            (wi, bi.expect("a bias was given"))
        };
        let norm_params = |params: &mut Vec<Param<F>>, name: &str, layer: usize| {
            NormIdx::push(params, spec.norm, name, layer, c)
        };

        // Embeddings (layer 0 in the tidy rows; the head counts as layer n_layer). The read-in
        // and read-out are torch.nn.Linear layers at its default init, as Garg et al.'s
        // `_read_in` and `_read_out` are (GPT-2's init covers their backbone only).
        let emb = (0, Role::Embedding);
        let input_end = match input {
            Input::Tokens { vocab } => {
                let table = normal(rng, vocab * c, std);
                let name = "transformer.wte.weight".into();
                InputEnd::Wte(push_param(&mut params, name, vec![vocab, c], table, emb))
            }
            Input::Prompts { dim } => {
                let (w, b) = init::linear(&InitParams::PYTORCH, c, dim, rng);
                let wi = push_param(&mut params, "read_in.weight".into(), vec![c, dim], w, emb);
                let bias = (0, Role::Bias);
                let bi = push_param(&mut params, "read_in.bias".into(), vec![c], b, bias);
                InputEnd::ReadIn(dim, (wi, bi))
            }
        };
        let wpe = (spec.positions == Positions::Learned).then(|| {
            let table = normal(rng, context * c, std);
            push_param(
                &mut params,
                "transformer.wpe.weight".into(),
                vec![context, c],
                table,
                emb,
            )
        });
        let mut blocks = Vec::with_capacity(nl);
        for l in 0..nl {
            let pre = format!("transformer.h.{l}");
            let ln_1 = norm_params(&mut params, &format!("{pre}.ln_1"), l);
            let (qkv_w, qkv_b) = linear(
                &mut params,
                &format!("{pre}.attn.c_attn"),
                l,
                (3 * c, c),
                false,
                rng,
            );
            let (proj_w, proj_b) = linear(
                &mut params,
                &format!("{pre}.attn.c_proj"),
                l,
                (c, c),
                true,
                rng,
            );
            let ln_2 = norm_params(&mut params, &format!("{pre}.ln_2"), l);
            let (fc_w, fc_b) = linear(
                &mut params,
                &format!("{pre}.mlp.c_fc"),
                l,
                (m, c),
                false,
                rng,
            );
            let act = push_act_params(&mut params, &spec.act, &format!("{pre}.mlp.act"), l, m);
            let (fc2_w, fc2_b) = linear(
                &mut params,
                &format!("{pre}.mlp.c_proj"),
                l,
                (c, m),
                true,
                rng,
            );
            blocks.push(BlockIdx {
                ln_1,
                qkv_w,
                qkv_b,
                proj_w,
                proj_b,
                ln_2,
                fc_w,
                fc_b,
                act,
                fc2_w,
                fc2_b,
            });
        }
        let ln_f = if spec.placement == Placement::Pre {
            norm_params(&mut params, "transformer.ln_f", nl)
        } else {
            NormIdx::default()
        };
        let ends = match input_end {
            InputEnd::Wte(wte) => {
                let head = (spec.tying == Tying::Untied).then(|| {
                    let w = match spec.init {
                        GptInit::Gpt2 => normal(rng, vocab * c, std),
                        // torch.nn.Linear's default for a bias-free layer.
                        GptInit::Pytorch => {
                            let b = 1.0 / (c as f64).sqrt();
                            (0..vocab * c).map(|_| rng.uniform_in(-b, b)).collect()
                        }
                    };
                    push_param(
                        &mut params,
                        "lm_head.weight".into(),
                        vec![vocab, c],
                        w,
                        (nl, Role::Weight),
                    )
                });
                Ends::Tokens { wte, head }
            }
            InputEnd::ReadIn(dim, read_in) => {
                let (w, b) = init::linear(&InitParams::PYTORCH, 1, c, rng);
                let (wo, bo) = push_linear(&mut params, "read_out", nl, (1, c), (w, Some(b)));
                Ends::Prompts {
                    dim,
                    read_in,
                    read_out: (wo, bo.expect("a bias was given")),
                }
            }
        };

        // The width parametrization: initial values and learning rates scaled by place, after
        // drawing (SP: every factor 1, the model drawn exactly as before).
        let par = spec.parametrization;
        let mw = c as f64 / spec.base_d_model as f64;
        for p in params.iter_mut().filter(|p| p.trainable) {
            let place = gpt_place(&p.name, p.value.len());
            let mut s = par.scales(place, mw);
            // GPT-2's init draws a fixed std whatever the width; the rules assume variance ∝
            // 1/fan-in, so under another parametrization the matrices drawn that way get
            // ×1/√m (equal at the base width).
            if par != Parametrization::Sp
                && spec.init == GptInit::Gpt2
                && matches!(place, Place::HiddenWeight | Place::OutputWeight)
            {
                s.init /= mw.sqrt();
            }
            if s.init != 1.0 {
                for v in p.value.iter_mut() {
                    *v = F::of(v.f64() * s.init);
                }
            }
            p.lr_mult = super::LrMult {
                adam: s.lr_adam,
                sgd: s.lr_sgd,
            };
            // A tied head is the token table: zeroing it would zero the embedding too, so
            // `zero_readout` applies to an untied head (and the read-out) only.
            if spec.zero_readout && place == Place::OutputWeight {
                p.value.fill(F::zero());
            }
            // The query block: the first C rows of each c_attn weight `[3C, C]`.
            if spec.zero_query && p.name.ends_with(".attn.c_attn.weight") {
                p.value[..c * c].fill(F::zero());
            }
        }
        let out_mult = F::of(par.output_multiplier(mw));
        let hidden_mult = F::of(par.hidden_multiplier(mw));
        let att_scale = F::of(if par.attention_one_over_d() {
            (spec.base_d_model as f64 / h as f64).sqrt() / hd as f64
        } else {
            attention::default_scale(hd)
        });

        // Buffers, sized once.
        let bt = capacity * context;
        let z = |n: usize| vec![F::zero(); n];
        let learned_a = !spec.act.is_plain() && spec.act.a.mode == Trainable::Learned;
        let bufs = (0..nl)
            .map(|_| BlockBuffers {
                n1: z(bt * c),
                s1: z(bt * c),
                n2: z(bt * c),
                s2: z(bt * c),
                cache1: NormCache::new(spec.norm, bt, c),
                cache2: NormCache::new(spec.norm, bt, c),
                qkv: z(bt * 3 * c),
                att: z(capacity * h * context * context),
                y: z(bt * c),
                logit_max: z(h),
                bh_max: z(capacity * h),
                pre: z(bt * m),
                act: z(bt * m),
                slope: z(bt * m),
                fu: z(if learned_a { bt * m } else { 0 }),
                abc: [z(m), z(m), z(m)],
                abc_grad: [z(m), z(m), z(m)],
            })
            .collect();
        let rotary = spec.positions == Positions::Rotary;
        let rope = Rope::new(if rotary { context } else { 0 }, hd, ROPE_BASE);
        let z_len = match ends {
            Ends::Prompts { dim, .. } => bt * dim,
            Ends::Tokens { .. } => 0,
        };
        Gpt {
            params,
            dims,
            spec: spec.clone(),
            eps: F::of(eps),
            ends,
            wpe,
            blocks,
            ln_f,
            z: z(z_len),
            resid: (0..=nl).map(|_| z(bt * c)).collect(),
            bufs,
            xf: z(bt * c),
            cache_f: NormCache::new(spec.norm, bt, c),
            logits: z(bt * vocab),
            d_logits: z(bt * vocab),
            g: [z(bt * c), z(bt * c), z(bt * c)],
            g_m: z(bt * m),
            g_qkv: z(bt * 3 * c),
            g_att: z(capacity * h * context * context),
            partial: z(norm::partial_len(bt, c).max(bt.div_ceil(ops::ROW_BLOCK) * (3 * c).max(m))),
            stream_sums: z(bt.div_ceil(ops::ROW_BLOCK) * c),
            rope,
            att_scale,
            out_mult,
            hidden_mult,
            batch: 0,
            seq: 0,
            capacity,
        }
    }

    /// Forward pass. `tokens: [B, T]` (ids `< vocab`, `T ≤ context`, `B ≤ capacity`) →
    /// [`Self::logits`] `[B·T, V]`. Norms always use their per-row statistics (`mode` only
    /// matters for batchnorm, which the spec refuses).
    pub fn forward(&mut self, tokens: &[usize], batch: usize, seq: usize) {
        let Ends::Tokens { wte, .. } = self.ends else {
            panic!("gpt forward: this model reads prompts, not tokens")
        };
        self.start(batch, seq, tokens.len() >= batch * seq);
        let (bt, c) = (batch * seq, self.dims.c);
        // x₀ = wte[token] (+ wpe[t]).
        let p = &self.params;
        let wpe = self.wpe.map(|i| p[i].value.as_slice());
        let x0 = &mut self.resid[0][..bt * c];
        embedding::forward(&tokens[..bt], &p[wte].value, wpe, seq, c, x0);
        self.forward_blocks();
    }

    /// Forward pass over prompts. `x: [B, K, d]` points, `y: [B, K]` their values (`K ≤
    /// points`, `B ≤ capacity`) → [`Self::logits`] `[B·2K, 1]`, the prediction of point `i`'s
    /// value (0-based, from the `i` pairs before it) at row `b·2K + 2i` ([`Self::predictions`]).
    pub fn forward_prompts(&mut self, x: &[F], y: &[F], batch: usize, points: usize) {
        let Ends::Prompts { dim, read_in, .. } = self.ends else {
            panic!("gpt forward_prompts: this model reads tokens, not prompts")
        };
        let seq = 2 * points;
        let fits = x.len() >= batch * points * dim && y.len() >= batch * points;
        self.start(batch, seq, fits);
        let (bt, c) = (batch * seq, self.dims.c);
        // z = (x_1, (y_1, 0, …), x_2, …); x₀ = z·W_inᵀ + b_in (+ wpe[t]).
        let z = &mut self.z[..bt * dim];
        z.fill(F::zero());
        for (r, zr) in z.chunks_exact_mut(2 * dim).enumerate() {
            zr[..dim].copy_from_slice(&x[r * dim..(r + 1) * dim]);
            zr[dim] = y[r];
        }
        let p = &self.params;
        let x0 = &mut self.resid[0][..bt * c];
        let (w, b) = (&p[read_in.0].value, &p[read_in.1].value);
        linear::forward(z, w, b, (bt, c, dim), F::zero(), x0);
        if let Some(i) = self.wpe {
            embedding::add_positions(&p[i].value, seq, c, x0);
        }
        self.forward_blocks();
    }

    /// The predictions of the last [`Self::forward_prompts`]: `[B, K]`, `y_i`'s at `x_i`'s
    /// position.
    pub fn predictions(&self) -> impl Iterator<Item = F> + '_ {
        let bt = self.batch * self.seq;
        self.logits[..bt].iter().step_by(2).copied()
    }

    /// Checks a batch's size and records it for the passes that follow.
    fn start(&mut self, batch: usize, seq: usize, data_fits: bool) {
        assert!(
            batch <= self.capacity && seq <= self.dims.context && data_fits,
            "gpt forward: batch exceeds capacity"
        );
        self.batch = batch;
        self.seq = seq;
    }

    /// The blocks and the head, from the residual stream's start `resid[0]` to `logits`.
    fn forward_blocks(&mut self) {
        let (batch, seq) = (self.batch, self.seq);
        let GptDims {
            c, h, hd, m, vocab, ..
        } = self.dims;
        let (bt, n) = (batch * seq, batch * seq * c);
        let (pre, norm, eps) = (
            self.spec.placement == Placement::Pre,
            self.spec.norm,
            self.eps,
        );
        let rope = (self.spec.positions == Positions::Rotary).then_some(&self.rope);
        let p = &self.params;
        for l in 0..self.dims.n_layer {
            let bi = self.blocks[l];
            let (done, rest) = self.resid.split_at_mut(l + 1);
            let (x, x_out) = (&done[l][..n], &mut rest[0][..n]);
            let b = &mut self.bufs[l];
            // Attention on u = norm1(x) (pre) or x (post): s1 = x + proj(attn(u·W_qkvᵀ + b)).
            if pre {
                bi.ln_1
                    .forward(norm, eps, c, p, x, &mut b.n1[..n], &mut b.cache1);
            }
            let u = if pre { &b.n1[..n] } else { x };
            let (w, bias) = (&p[bi.qkv_w].value, &p[bi.qkv_b].value);
            let a = self.hidden_mult;
            linear::forward_mult(
                u,
                w,
                bias,
                (bt, 3 * c, c),
                a,
                F::zero(),
                &mut b.qkv[..bt * 3 * c],
            );
            let heads = attention::Buffers {
                qkv: &mut b.qkv,
                att: &mut b.att,
                y: &mut b.y,
                bh_max: &mut b.bh_max,
                logit_max: &mut b.logit_max,
            };
            attention::forward(heads, batch, seq, h, hd, rope, self.att_scale);
            let (w, bias) = (&p[bi.proj_w].value, &p[bi.proj_b].value);
            let s1 = &mut b.s1[..n];
            linear::forward_onto(&b.y[..n], w, bias, (bt, c, c), a, x, s1);
            // MLP on v = norm2(s1) (pre) or n1 = norm1(s1) (post): fc1, then a·f(u − b) + c.
            if pre {
                bi.ln_2
                    .forward(norm, eps, c, p, &b.s1[..n], &mut b.n2[..n], &mut b.cache2);
            } else {
                bi.ln_1
                    .forward(norm, eps, c, p, &b.s1[..n], &mut b.n1[..n], &mut b.cache1);
            }
            let v = if pre { &b.n2[..n] } else { &b.n1[..n] };
            let (w, bias) = (&p[bi.fc_w].value, &p[bi.fc_b].value);
            let pre_act = &mut b.pre[..bt * m];
            linear::forward_mult(v, w, bias, (bt, m, c), a, F::zero(), pre_act);
            activation_forward(self.spec.activation, p, bi.act, b, bt, m);
            // s2 = base + fc2(act); x' = s2 (pre) or norm2(s2) (post).
            let base = if pre { &b.s1[..n] } else { &b.n1[..n] };
            let s2: &mut [F] = if pre { &mut *x_out } else { &mut b.s2[..n] };
            let (w, bias) = (&p[bi.fc2_w].value, &p[bi.fc2_b].value);
            linear::forward_onto(&b.act[..bt * m], w, bias, (bt, c, m), a, base, s2);
            if !pre {
                bi.ln_2
                    .forward(norm, eps, c, p, &b.s2[..n], x_out, &mut b.cache2);
            }
        }
        // Head: logits = norm_f(x_L)·W_headᵀ.
        let xl = &self.resid[self.dims.n_layer][..n];
        if pre {
            self.ln_f
                .forward(norm, eps, c, p, xl, &mut self.xf[..n], &mut self.cache_f);
        } else {
            self.xf[..n].copy_from_slice(xl);
        }
        let logits = &mut self.logits[..bt * vocab];
        match self.ends {
            Ends::Tokens { wte, head } => {
                let w_head = &p[head.unwrap_or(wte)].value;
                let dims = (bt, vocab, c);
                linear::forward_scaled(
                    &self.xf[..n],
                    w_head,
                    dims,
                    self.out_mult,
                    F::zero(),
                    logits,
                );
            }
            Ends::Prompts { read_out, .. } => {
                let (w, b) = (&p[read_out.0].value, &p[read_out.1].value);
                if self.out_mult == F::one() {
                    linear::forward(&self.xf[..n], w, b, (bt, 1, c), F::zero(), logits);
                } else {
                    // μP's read-out multiplier on the matrix product, not the bias.
                    ops::fill_rows(logits, 1, Some(b));
                    linear::forward_scaled(
                        &self.xf[..n],
                        w,
                        (bt, 1, c),
                        self.out_mult,
                        F::one(),
                        logits,
                    );
                }
            }
        }
    }

    /// Backward from [`Self::d_logits`] (set by the loss) to every parameter gradient
    /// (overwritten). Needs the last forward's buffers and its `tokens` (for prompts:
    /// [`Self::backward_prompts`]).
    pub fn backward(&mut self, tokens: &[usize]) {
        self.backward_with(tokens, None);
    }

    /// [`Self::backward`], and with `up`, each linear weight's optimizer step in its gradient
    /// GEMM's epilogue where the engine can (after the layer's input gradient, the last reader
    /// of the weight): its gradient is then left unspecified ([`Update::fused`]).
    pub fn backward_with(&mut self, tokens: &[usize], up: Option<&mut Update<'_, F>>) {
        let Ends::Tokens { wte, .. } = self.ends else {
            panic!("gpt backward: this model reads prompts, not tokens")
        };
        self.backward_blocks(up);
        // Embeddings (a tied head's gradient is already in wte's).
        let (bt, c) = (self.batch * self.seq, self.dims.c);
        let params = &mut self.params;
        let (wte, wpe) = match self.wpe {
            Some(i) => {
                let (te, pe) = pair_mut(params, wte, i);
                (&mut te.grad, Some(&mut pe.grad[..]))
            }
            None => (&mut params[wte].grad, None),
        };
        let g = &self.g[0][..bt * c];
        embedding::backward(&tokens[..bt], g, wte, wpe, self.seq, c);
    }

    /// Backward of [`Self::forward_prompts`] from [`Self::d_logits`] to every parameter
    /// gradient (overwritten).
    pub fn backward_prompts(&mut self) {
        let Ends::Prompts { dim, read_in, .. } = self.ends else {
            panic!("gpt backward_prompts: this model reads tokens, not prompts")
        };
        self.backward_blocks(None);
        let (bt, c) = (self.batch * self.seq, self.dims.c);
        let g = &self.g[0][..bt * c];
        let (pw, pb) = pair_mut(&mut self.params, read_in.0, read_in.1);
        let z = &self.z[..bt * dim];
        let partial = &mut self.partial;
        linear::backward_params(
            g,
            z,
            (bt, c, dim),
            &mut pw.grad,
            Some(&mut pb.grad),
            partial,
        );
        if let Some(i) = self.wpe {
            embedding::backward_positions(g, &mut self.params[i].grad, self.seq, c);
        }
    }

    /// Backward through the head and the blocks, zeroing the gradients that accumulate first
    /// (every one but the linear weights'): leaves `∂L/∂resid[0]` in `g[0]`.
    fn backward_blocks(&mut self, mut up: Option<&mut Update<'_, F>>) {
        let GptDims {
            c, h, hd, m, vocab, ..
        } = self.dims;
        let (batch, seq) = (self.batch, self.seq);
        let (bt, n) = (batch * seq, batch * seq * c);
        let blocks = bt.div_ceil(ops::ROW_BLOCK);
        let (pre, norm) = (self.spec.placement == Placement::Pre, self.spec.norm);
        let rope = (self.spec.positions == Positions::Rotary).then_some(&self.rope);
        // Zeroed in parallel, one parameter per item (serial, the other thread would idle
        // through it). Norms, activations and embeddings accumulate; the linear weights'
        // gradients are written whole by their GEMMs (β = 0), or never (fused updates).
        par::for_each_mut(&mut self.params, |p| {
            if p.role != Role::Weight {
                p.grad.fill(F::zero())
            }
        });
        let partial = &mut self.partial;
        let params = &mut self.params;
        let [ga, gb, gc] = &mut self.g;
        // Head: dW_head = dlogitsᵀ·xf (and the read-out's bias); ga = dlogits·W_head = ∂L/∂xf.
        let dl = &self.d_logits[..bt * vocab];
        let dims = (bt, vocab, c);
        let xf = &self.xf[..n];
        // The head's forward multiplier (μP's 1/m; 1 otherwise) scales its weight's gradient
        // and the gradient it passes back, not its bias's.
        let a = self.out_mult;
        let hm = self.hidden_mult;
        match self.ends {
            Ends::Tokens { wte, head } => {
                let w = head.unwrap_or(wte);
                linear::backward_input_scaled(dl, &params[w].value, dims, a, &mut ga[..n]);
                // A tied head's gradient is the token table's, complete only after the
                // embedding's backward: its step waits for the optimizer's pass.
                let up = if head.is_some() {
                    up.as_deref_mut()
                } else {
                    None
                };
                weight_grad(dl, xf, dims, a, (w, params), up);
            }
            Ends::Prompts { read_out, .. } => {
                let (pw, pb) = pair_mut(params, read_out.0, read_out.1);
                linear::backward_input_scaled(dl, &pw.value, dims, a, &mut ga[..n]);
                linear::backward_weight_scaled(dl, xf, dims, a, &mut pw.grad);
                ops::column_sums_par(dl, dims.1, &mut pb.grad, partial);
            }
        }
        // ga = ∂L/∂x_L.
        if pre {
            let x = &self.resid[self.dims.n_layer][..n];
            self.ln_f
                .backward(norm, c, params, x, &mut ga[..n], &self.cache_f, partial);
        }
        for l in (0..self.dims.n_layer).rev() {
            let bi = self.blocks[l];
            let b = &mut self.bufs[l];
            let x = &self.resid[l][..n];
            // ga = ∂L/∂x'. Post: through norm2 to ∂L/∂s2.
            if !pre {
                bi.ln_2.backward(
                    norm,
                    c,
                    params,
                    &b.s2[..n],
                    &mut ga[..n],
                    &b.cache2,
                    partial,
                );
            }
            // ga = ∂L/∂s2: fc2 to g_m = ∂L/∂act, then through the activation to ∂L/∂pre.
            let gm = &mut self.g_m[..bt * m];
            let fc2 = (bi.fc2_w, bi.fc2_b);
            let (act, dims) = (&b.act[..bt * m], (bt, c, m));
            // Pre-norm below the last block: fc2's bias gradient was summed as the next block's
            // norm1 backward added onto the stream.
            if pre && l + 1 < self.dims.n_layer {
                linear_backward_summed(
                    params,
                    fc2.0,
                    &ga[..n],
                    act,
                    dims,
                    hm,
                    gm,
                    up.as_deref_mut(),
                );
            } else {
                linear_backward(
                    params,
                    fc2,
                    &ga[..n],
                    act,
                    dims,
                    hm,
                    gm,
                    partial,
                    up.as_deref_mut(),
                );
            }
            // Through the activation, fc's bias gradient summed in the same row blocks.
            activation_backward(params, bi.act, b, gm, bt, m, partial);
            let fc_b = &mut params[bi.fc_b].grad;
            fc_b.fill(F::zero());
            ops::add_column_sums(&partial[..bt.div_ceil(ops::ROW_BLOCK) * m], m, fc_b);
            // fc1: gb = ∂L/∂(MLP input).
            let v = if pre { &b.n2[..n] } else { &b.n1[..n] };
            let dims = (bt, m, c);
            linear_backward_summed(
                params,
                bi.fc_w,
                gm,
                v,
                dims,
                hm,
                &mut gb[..n],
                up.as_deref_mut(),
            );
            // ga ← ∂L/∂s1.
            let sums = &mut self.stream_sums;
            if pre {
                // s2 = s1 + mlp(norm2(s1)); the projection's bias gradient is Σ_rows ∂L/∂s1.
                bi.ln_2.backward_add(
                    norm,
                    c,
                    params,
                    (&b.s1[..n], &mut gb[..n]),
                    &b.cache2,
                    partial,
                    (&mut ga[..n], sums),
                );
                sum_blocks(&sums[..blocks * c], c, &mut params[bi.proj_b].grad);
            } else {
                // s2 = n1 + mlp(n1), n1 = norm1(s1).
                ops::add_assign(&mut ga[..n], &gb[..n], c);
                bi.ln_1.backward(
                    norm,
                    c,
                    params,
                    &b.s1[..n],
                    &mut ga[..n],
                    &b.cache1,
                    partial,
                );
            }
            // Attention projection (s1 = x + y·W_projᵀ + b): gc = ∂L/∂y, then ∂L/∂qkv.
            let proj = (bi.proj_w, bi.proj_b);
            let (y, dims) = (&b.y[..n], (bt, c, c));
            if pre {
                linear_backward_summed(
                    params,
                    proj.0,
                    &ga[..n],
                    y,
                    dims,
                    hm,
                    &mut gc[..n],
                    up.as_deref_mut(),
                );
            } else {
                linear_backward(
                    params,
                    proj,
                    &ga[..n],
                    y,
                    dims,
                    hm,
                    &mut gc[..n],
                    partial,
                    up.as_deref_mut(),
                );
            }
            let g_qkv = &mut self.g_qkv[..bt * 3 * c];
            let heads = (&b.qkv[..], &b.att[..]);
            attention::backward(
                heads,
                batch,
                seq,
                h,
                hd,
                rope,
                self.att_scale,
                &gc[..n],
                g_qkv,
                &mut self.g_att,
            );
            // qkv: gb = ∂L/∂u, through norm1 (pre) to ∂L/∂x.
            let u = if pre { &b.n1[..n] } else { x };
            let qkv = (bi.qkv_w, bi.qkv_b);
            let dims = (bt, 3 * c, c);
            linear_backward(
                params,
                qkv,
                g_qkv,
                u,
                dims,
                hm,
                &mut gb[..n],
                partial,
                up.as_deref_mut(),
            );
            // ga ← ∂L/∂x = ∂L/∂s1 (residual) + through attention; pre-norm: its column sums
            // are the bias gradient of the block below's fc2.
            if pre {
                let sums = &mut self.stream_sums;
                let acc = (&mut ga[..n], &mut sums[..]);
                let cache = &b.cache1;
                bi.ln_1
                    .backward_add(norm, c, params, (x, &mut gb[..n]), cache, partial, acc);
                if l > 0 {
                    let fc2_b = &mut params[self.blocks[l - 1].fc2_b].grad;
                    sum_blocks(&sums[..blocks * c], c, fc2_b);
                }
            } else {
                ops::add_assign(&mut ga[..n], &gb[..n], c);
            }
        }
    }
}

/// `out = Σ_blocks sums[block]` (`sums`: `[blocks, width]` in block order), the reduction
/// [`ops::column_sums_par`] ends with.
fn sum_blocks<F: Float>(sums: &[F], width: usize, out: &mut [F]) {
    out.fill(F::zero());
    ops::add_column_sums(sums, width, out);
}

/// `(parameters, buffer values)` of the GPT [`Gpt::new`] builds, counted from its spec
/// (saturating: a spec far past any machine still gets a number).
pub(super) fn elements(
    spec: &GptSpec,
    vocab: usize,
    context: usize,
    capacity: usize,
) -> (u64, u64) {
    let mul = |a: usize, b: usize| (a as u64).saturating_mul(b as u64);
    let (c, m, h, nl) = (
        spec.d_model,
        spec.mlp_width(),
        spec.n_head,
        spec.n_layer as u64,
    );
    // Per block: q/k/v, projection, fc and fc2 with biases, two norms, a, b, c; the tables and
    // the head.
    let block = mul(c, 4 * c + 2 * m)
        .saturating_add(mul(c, 9))
        .saturating_add(mul(m, 4))
        .saturating_add(2);
    let params = block
        .saturating_mul(nl)
        .saturating_add(mul(vocab, c).saturating_mul(2))
        .saturating_add(mul(context, c))
        .saturating_add(mul(c, 2));
    // Per block: n1, s1, n2, s2, y, caches and q|k|v (`[BT, ·]`: 10·C), pre, act, slope, f
    // (4·M), attention probabilities `[B, H, T, T]`; the residual streams, head input,
    // logits and their gradient, and the backward scratch (6·C + M and another [B, H, T, T]).
    let bt = mul(capacity, context);
    let att = mul(capacity, h).saturating_mul(mul(context, context));
    let per_block = bt
        .saturating_mul(10 * c as u64 + 4 * m as u64)
        .saturating_add(att);
    let buffers = per_block
        .saturating_mul(nl)
        .saturating_add(bt.saturating_mul((nl + 2).saturating_mul(c as u64)))
        .saturating_add(bt.saturating_mul(2 * vocab as u64))
        .saturating_add(bt.saturating_mul(6 * c as u64 + m as u64))
        .saturating_add(att);
    (params, buffers)
}

/// The MLP's activation `a·f(u − b) + c` of `b.pre` into `b.act`, with its slope (and `f(u − b)`
/// when `a` is learned), in row blocks over the pool.
fn activation_forward<F: Float>(
    activation: crate::nn::activation::Activation,
    params: &[Param<F>],
    act_idx: Option<[usize; 3]>,
    b: &mut BlockBuffers<F>,
    bt: usize,
    m: usize,
) {
    if let Some(idx) = act_idx {
        broadcast_act_params(params, idx, &mut b.abc);
    }
    let BlockBuffers {
        pre,
        act,
        slope,
        fu,
        abc,
        ..
    } = b;
    let with_fu = !fu.is_empty();
    let parts = (
        par::rows(&mut act[..bt * m], m),
        par::rows(&mut slope[..bt * m], m),
        par::rows(&mut fu[..], if with_fu { m } else { 0 }),
    );
    par::for_row_blocks(bt, parts, |_, r, (act, slope, fu)| {
        let bp = act_idx.map(|_| BiasedParams {
            a: &abc[0],
            b: &abc[1],
            c: &abc[2],
        });
        let u = &pre[r.start * m..r.end * m];
        activation::forward(activation, m, bp, u, act, slope, with_fu.then_some(fu));
    });
}

/// Backward of [`activation_forward`]: `g = ∂L/∂act` in, `∂L/∂pre` out; the gradients of a
/// trainable a, b, c first (they need `∂L/∂act`). Each row block's column sums of `∂L/∂pre`
/// (fc's bias gradient, once the blocks are added in order) into its slot of `partial`
/// (`[blocks, m]`), while the block is in cache: the sums [`ops::column_sums_par`] makes, without
/// reading the 4 MB gradient again (0.1 ms a layer of the reference GPT).
fn activation_backward<F: Float>(
    params: &mut [Param<F>],
    act_idx: Option<[usize; 3]>,
    b: &mut BlockBuffers<F>,
    g: &mut [F],
    bt: usize,
    m: usize,
    partial: &mut [F],
) {
    if let Some(idx) = act_idx {
        let fu = (!b.fu.is_empty()).then(|| &b.fu[..bt * m]);
        act_params_backward(params, idx, m, g, &b.slope[..bt * m], fu, &mut b.abc_grad);
    }
    let slope = &b.slope[..bt * m];
    let partial = &mut partial[..bt.div_ceil(ops::ROW_BLOCK) * m];
    let parts = (par::rows(g, m), par::slot(partial, m));
    par::for_row_blocks(bt, parts, |_, r, (g, part)| {
        activation::backward_input(g, &slope[r.start * m..r.end * m]);
        part.fill(F::zero());
        ops::add_column_sums(g, m, part);
    });
}

/// Backward of the linear layer `(weight, bias)` of `params`: its parameter gradients
/// (overwritten) and `dx = ∂L/∂x`, from `g = ∂L/∂y`.
#[allow(clippy::too_many_arguments)]
fn linear_backward<F: Float>(
    params: &mut [Param<F>],
    (w, b): (usize, usize),
    g: &[F],
    x: &[F],
    dims: linear::Dims,
    mult: F,
    dx: &mut [F],
    partial: &mut [F],
    up: Option<&mut Update<'_, F>>,
) {
    ops::column_sums_par(g, dims.1, &mut params[b].grad, partial);
    linear_backward_summed(params, w, g, x, dims, mult, dx, up);
}

/// [`linear_backward`] of a layer whose bias gradient is already summed: `dx`, then the
/// weight's gradient (and with `up` its optimizer step, [`weight_grad`]).
#[allow(clippy::too_many_arguments)]
fn linear_backward_summed<F: Float>(
    params: &mut [Param<F>],
    w: usize,
    g: &[F],
    x: &[F],
    dims: linear::Dims,
    mult: F,
    dx: &mut [F],
    up: Option<&mut Update<'_, F>>,
) {
    linear::backward_input_scaled(g, &params[w].value, dims, mult, dx);
    weight_grad(g, x, dims, mult, (w, params), up);
}

/// The prompt loss: `out: [B·2K]` read-outs (the prediction of `y_i` at even rows), `y: [B·K]`
/// targets; the mean squared error over the `B·K` predictions, and with `grad` its gradient
/// `2(ŷ − y)/(B·K)` at even rows and 0 at odd ones.
pub fn prompt_mse<F: Float>(out: &[F], y: &[F], grad: Option<&mut [F]>) -> LossValue {
    let n = y.len();
    let inv = 1.0 / n.max(1) as f64;
    let mut sum = 0.0;
    for (pair, &t) in out.chunks_exact(2).zip(y) {
        let d = pair[0].f64() - t.f64();
        sum += d * d;
    }
    if let Some(g) = grad {
        for (pair, (o, &t)) in g.chunks_exact_mut(2).zip(out.chunks_exact(2).zip(y)) {
            pair[0] = F::of(2.0 * (o[0].f64() - t.f64()) * inv);
            pair[1] = F::zero();
        }
    }
    LossValue {
        loss: sum * inv,
        correct: None,
        counted: n,
    }
}

/// Two distinct elements of `v`, both mutable.
fn pair_mut<T>(v: &mut [T], i: usize, j: usize) -> (&mut T, &mut T) {
    assert_ne!(i, j, "pair_mut needs two distinct elements");
    if i < j {
        let (a, b) = v.split_at_mut(j);
        (&mut a[i], &mut b[0])
    } else {
        let (a, b) = v.split_at_mut(i);
        (&mut b[0], &mut a[j])
    }
}

impl<F: Float> Model<F> for Gpt<F> {
    fn params(&self) -> &[Param<F>] {
        &self.params
    }
    fn params_mut(&mut self) -> &mut [Param<F>] {
        &mut self.params
    }
    fn capacity(&self) -> usize {
        self.capacity
    }
    /// `Tokens { x: [B, T], .. }` → [`Gpt::logits`] `[B·T, V]`; `Prompts { x: [B, K, d], y:
    /// [B, K], .. }` → `[B·2K, 1]` (norms are per row: `mode` does not matter).
    fn forward(&mut self, batch: &Batch<'_, F>, _mode: Mode) {
        match *batch {
            Batch::Tokens { x, seqs, seq, .. } => Gpt::forward(self, x, seqs, seq),
            Batch::Prompts {
                x, y, seqs, points, ..
            } => Gpt::forward_prompts(self, x, y, seqs, points),
            Batch::Rows { .. } | Batch::Denoise { .. } => {
                unreachable!("model::build pairs a GPT with sequences")
            }
        }
    }
    /// Tokens: cross-entropy of the next token at every position whose target is not
    /// [`IGNORE`]. Prompts: the squared error of every prediction, averaged.
    fn loss(&mut self, batch: &Batch<'_, F>, grad: bool) -> LossValue {
        match *batch {
            Batch::Tokens { y, seqs, seq, .. } => {
                let rows = seqs * seq;
                let vocab = self.dims.vocab;
                let g = grad.then_some(&mut self.d_logits[..rows * vocab]);
                cross_entropy(&self.logits[..rows * vocab], y, rows, vocab, g)
            }
            Batch::Prompts {
                y, seqs, points, ..
            } => {
                let rows = seqs * 2 * points;
                let g = grad.then_some(&mut self.d_logits[..rows]);
                prompt_mse(&self.logits[..rows], &y[..seqs * points], g)
            }
            Batch::Rows { .. } | Batch::Denoise { .. } => {
                unreachable!("model::build pairs a GPT with sequences")
            }
        }
    }
    fn backward(&mut self, batch: &Batch<'_, F>) {
        match *batch {
            Batch::Tokens { x, .. } => Gpt::backward(self, x),
            Batch::Prompts { .. } => Gpt::backward_prompts(self),
            Batch::Rows { .. } | Batch::Denoise { .. } => {
                unreachable!("model::build pairs a GPT with sequences")
            }
        }
    }
    /// Tokens: [`Gpt::backward_with`] (prompts: the plain backward pass).
    fn backward_update(&mut self, batch: &Batch<'_, F>, up: &mut Update<'_, F>) {
        match *batch {
            Batch::Tokens { x, .. } => Gpt::backward_with(self, x, Some(up)),
            _ => Model::backward(self, batch),
        }
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
    /// Samples one token at a time at temperature 1 (the prompt and what was drawn so far are
    /// the context of each next token), up to the model's context length.
    fn generate(&mut self, prompt: &[usize], len: usize, rng: &mut Rng) -> Option<Vec<usize>> {
        let (vocab, t) = (self.dims.vocab, self.dims.context);
        if prompt.is_empty() || matches!(self.ends, Ends::Prompts { .. }) {
            return None;
        }
        let mut toks = prompt.to_vec();
        let mut p = vec![0.0f64; vocab];
        while toks.len() < len.min(t) {
            let n = toks.len();
            Gpt::forward(self, &toks, 1, n);
            let z = &self.logits[(n - 1) * vocab..n * vocab];
            let max = z.iter().fold(f64::NEG_INFINITY, |a, v| a.max(v.f64()));
            let mut s = 0.0;
            for (pv, v) in p.iter_mut().zip(z) {
                *pv = (v.f64() - max).exp();
                s += *pv;
            }
            let u = rng.uniform() * s;
            let mut acc = 0.0;
            let mut next = vocab - 1;
            for (j, &pv) in p.iter().enumerate() {
                acc += pv;
                if u < acc {
                    next = j;
                    break;
                }
            }
            toks.push(next);
        }
        Some(toks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::norm::Norm;
    use crate::optim::{Hyper, OptimState, Optimizer};

    fn bits<F: Float>(x: &[F]) -> Vec<u64> {
        x.iter().map(|v| v.f64().to_bits()).collect()
    }

    /// Training with each linear weight updated in its gradient GEMM (where the engine fuses
    /// Adam's step) against the backward pass then the whole step: every parameter and moment
    /// agrees bit for bit over four steps, with an untied head (stepped in its GEMM) and a
    /// tied one (stepped after the embedding's gradient joins it), pre- and post-norm, Adam and
    /// AdamW, f32 and f64. The shapes reach the fused path (d_model 64, 128 rows). A weight
    /// updated before its input gradient was taken would show here.
    #[test]
    fn eager_updates_match_the_whole_step() {
        let cases = [
            (
                Norm::Layernorm,
                Placement::Pre,
                Tying::Untied,
                Optimizer::Adamw,
            ),
            (Norm::Rmsnorm, Placement::Post, Tying::Tied, Optimizer::Adam),
            (
                Norm::Layernorm,
                Placement::Pre,
                Tying::Tied,
                Optimizer::Adam,
            ),
        ];
        let (vocab, seqs, seq) = (11, 8, 16);
        let mut rng = Rng::stream(7, "gpt-eager");
        let tokens: Vec<usize> = (0..seqs * (seq + 1))
            .map(|_| rng.below(vocab as u64) as usize)
            .collect();
        let x: Vec<usize> = (0..seqs)
            .flat_map(|s| tokens[s * (seq + 1)..s * (seq + 1) + seq].to_vec())
            .collect();
        let y: Vec<usize> = (0..seqs)
            .flat_map(|s| tokens[s * (seq + 1) + 1..(s + 1) * (seq + 1)].to_vec())
            .collect();
        for (norm, placement, tying, optimizer) in cases {
            let spec = GptSpec {
                n_layer: 2,
                d_model: 64,
                n_head: 4,
                norm,
                placement,
                tying,
                ..GptSpec::default()
            };
            let h = Hyper {
                optimizer,
                momentum: 0.9,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            };
            fn run<F: Float>(
                spec: &GptSpec,
                h: &Hyper,
                (x, y, vocab, seqs, seq): (&[usize], &[usize], usize, usize, usize),
                eager: bool,
            ) -> (Vec<Vec<u64>>, Vec<Vec<u64>>) {
                let mut rng = Rng::stream(1, "init");
                let mut m = Gpt::<F>::new(spec, 1e-5, vocab, seq, seqs, &mut rng);
                let mut opt = OptimState::new(&m.params, h.optimizer);
                let batch = Batch::Tokens { x, y, seqs, seq };
                for _ in 0..4 {
                    Model::forward(&mut m, &batch, Mode::Train);
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
            let data = (&x[..], &y[..], vocab, seqs, seq);
            let ctx = format!("{norm:?} {placement:?} {tying:?} {optimizer:?}");
            let (eager, whole) = (
                run::<f32>(&spec, &h, data, true),
                run::<f32>(&spec, &h, data, false),
            );
            assert_eq!(eager, whole, "{ctx} f32");
            // The steps moved the weights (the comparison is not of two untouched models).
            let init = Gpt::<f32>::new(&spec, 1e-5, vocab, seq, seqs, &mut Rng::stream(1, "init"));
            assert_ne!(
                eager.0[1],
                bits(&init.params[1].value),
                "{ctx}: weights moved"
            );
            let (eager, whole) = (
                run::<f64>(&spec, &h, data, true),
                run::<f64>(&spec, &h, data, false),
            );
            assert_eq!(eager, whole, "{ctx} f64");
        }
    }
}
