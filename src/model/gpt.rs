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
//! target is a token (targets < 0 are ignored), averaged over those positions.

use serde::{Deserialize, Serialize};

use crate::engine::ops::{self, Op};
use crate::engine::{Float, Rng};
use crate::nn::activation::{self, Activation, BiasedParams};
use crate::nn::init::{self, FanMode, Init, InitParams};
use crate::nn::norm::{self, Mode, Norm, NormCache};
use crate::spec::{BiasedActSpec, Granularity, Trainable};

use super::{act_params_backward, broadcast_act_params, Param, Role};

// ---------------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------------

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
    fn default() -> Self {
        GptSpec {
            n_layer: d_n_layer(),
            d_model: d_d_model(),
            n_head: d_n_head(),
            d_mlp: None,
            activation: d_activation(),
            act: BiasedActSpec::default(),
            norm: d_norm(),
            placement: d_placement(),
            positions: d_positions(),
            tying: d_tying(),
            init: d_init(),
            init_std: d_init_std(),
        }
    }
}

impl GptSpec {
    pub fn mlp_width(&self) -> usize {
        self.d_mlp.unwrap_or(4 * self.d_model)
    }

    /// Ranges and consistency: `(key, message, hint)` with keys under `model.gpt.`.
    pub fn validate(&self) -> Result<(), (String, String, String)> {
        let bad = |k: &str, m: String, h: &str| Err((format!("model.gpt.{k}"), m, h.to_string()));
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

// ---------------------------------------------------------------------------------------------
// Parameters and buffers
// ---------------------------------------------------------------------------------------------

pub use super::NormIdx;

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
    /// `[BT, 3C]`.
    pub qkv: Vec<F>,
    /// Per head, rotated when positions are rotary: `[B, H, T, hd]`.
    pub q: Vec<F>,
    pub k: Vec<F>,
    pub v: Vec<F>,
    /// Attention probabilities `[B, H, T, T]` (zero above the diagonal).
    pub att: Vec<F>,
    /// Per-head outputs `[B, H, T, hd]`, then merged `[BT, C]`.
    pub yh: Vec<F>,
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

pub struct Gpt<F> {
    pub params: Vec<Param<F>>,
    pub dims: GptDims,
    pub spec: GptSpec,
    pub eps: F,
    pub wte: usize,
    pub wpe: Option<usize>,
    pub blocks: Vec<BlockIdx>,
    pub ln_f: NormIdx,
    /// The untied head; `None` when tied (the head is `wte`).
    pub head: Option<usize>,
    /// Residual stream entering block `l` (`l = n_layer`: leaving the last) `[BT, C]`.
    pub resid: Vec<Vec<F>>,
    pub bufs: Vec<BlockBuffers<F>>,
    /// Final norm output (the head's input) `[BT, C]`.
    pub xf: Vec<F>,
    pub cache_f: NormCache<F>,
    /// `[BT, V]`.
    pub logits: Vec<F>,
    pub d_logits: Vec<F>,
    /// Backward scratch: ∂L/∂(residual-width buffers), the MLP width, qkv; `g_att` holds
    /// ∂L/∂scores of every (sequence, head) so heads can run on separate threads.
    g: [Vec<F>; 3],
    g_m: Vec<F>,
    g_qkv: Vec<F>,
    /// dq, dk, dv, dy per head `[B, H, T, hd]`.
    g_heads: [Vec<F>; 4],
    g_att: Vec<F>,
    /// Rotary `cos(t·θ_i)`, `sin(t·θ_i)`: `[context, hd/2]`.
    rope: (Vec<F>, Vec<F>),
    /// Sequences and tokens per sequence of the last forward pass.
    pub batch: usize,
    pub seq: usize,
    capacity: usize,
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
        let cast = |v: Vec<f64>| v.into_iter().map(F::of).collect::<Vec<F>>();
        fn push<F: Float>(params: &mut Vec<Param<F>>, p: Param<F>) -> usize {
            params.push(p);
            params.len() - 1
        }
        let normal = |rng: &mut Rng, n: usize, s: f64| (0..n).map(|_| s * rng.normal()).collect();
        // A linear layer `[fan_out, fan_in]` + bias; `residual` marks GPT-2's scaled projections.
        let linear = |params: &mut Vec<Param<F>>,
                      name: &str,
                      layer: usize,
                      fan_out: usize,
                      fan_in: usize,
                      residual: bool,
                      rng: &mut Rng|
         -> (usize, usize) {
            let (w, b) = match spec.init {
                GptInit::Gpt2 => (
                    normal(
                        rng,
                        fan_out * fan_in,
                        if residual { resid_std } else { std },
                    ),
                    vec![0.0; fan_out],
                ),
                GptInit::Pytorch => {
                    let ip = InitParams {
                        init: Init::Pytorch,
                        fan_mode: FanMode::FanIn,
                        scale: 1.0,
                        sigma_w: 1.0,
                        sigma_b: 0.0,
                    };
                    init::linear(&ip, fan_out, fan_in, rng)
                }
            };
            let wi = push(
                params,
                Param::new(
                    format!("{name}.weight"),
                    vec![fan_out, fan_in],
                    cast(w),
                    layer,
                    Role::Weight,
                    true,
                ),
            );
            let bi = push(
                params,
                Param::new(
                    format!("{name}.bias"),
                    vec![fan_out],
                    cast(b),
                    layer,
                    Role::Bias,
                    true,
                ),
            );
            (wi, bi)
        };
        let norm_params = |params: &mut Vec<Param<F>>, name: &str, layer: usize| {
            NormIdx::push(params, spec.norm, name, layer, c)
        };

        // Embeddings (layer 0 in the tidy rows; the head counts as layer n_layer).
        let wte = push(
            &mut params,
            Param::new(
                "transformer.wte.weight".into(),
                vec![vocab, c],
                cast(normal(rng, vocab * c, std)),
                0,
                Role::Embedding,
                true,
            ),
        );
        let wpe = (spec.positions == Positions::Learned).then(|| {
            push(
                &mut params,
                Param::new(
                    "transformer.wpe.weight".into(),
                    vec![context, c],
                    cast(normal(rng, context * c, std)),
                    0,
                    Role::Embedding,
                    true,
                ),
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
                3 * c,
                c,
                false,
                rng,
            );
            let (proj_w, proj_b) = linear(
                &mut params,
                &format!("{pre}.attn.c_proj"),
                l,
                c,
                c,
                true,
                rng,
            );
            let ln_2 = norm_params(&mut params, &format!("{pre}.ln_2"), l);
            let (fc_w, fc_b) = linear(&mut params, &format!("{pre}.mlp.c_fc"), l, m, c, false, rng);
            let act = (!spec.act.is_plain()).then(|| {
                let mut idx = [0; 3];
                for (k, (name, role, ps)) in [
                    ("a", Role::ActA, &spec.act.a),
                    ("b", Role::ActB, &spec.act.b),
                    ("c", Role::ActC, &spec.act.c),
                ]
                .into_iter()
                .enumerate()
                {
                    let (n, shape) = match ps.per {
                        Granularity::Layer => (1, vec![]),
                        Granularity::Neuron => (m, vec![m]),
                    };
                    idx[k] = push(
                        &mut params,
                        Param::new(
                            format!("{pre}.mlp.act.{name}"),
                            shape,
                            vec![F::of(ps.init); n],
                            l,
                            role,
                            ps.mode == Trainable::Learned,
                        ),
                    );
                }
                idx
            });
            let (fc2_w, fc2_b) = linear(
                &mut params,
                &format!("{pre}.mlp.c_proj"),
                l,
                c,
                m,
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
        let head = (spec.tying == Tying::Untied).then(|| {
            let (w, _) = match spec.init {
                GptInit::Gpt2 => (normal(rng, vocab * c, std), ()),
                GptInit::Pytorch => {
                    let b = 1.0 / (c as f64).sqrt();
                    ((0..vocab * c).map(|_| rng.uniform_in(-b, b)).collect(), ())
                }
            };
            push(
                &mut params,
                Param::new(
                    "lm_head.weight".into(),
                    vec![vocab, c],
                    cast(w),
                    nl,
                    Role::Weight,
                    true,
                ),
            )
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
                q: z(bt * c),
                k: z(bt * c),
                v: z(bt * c),
                att: z(capacity * h * context * context),
                yh: z(bt * c),
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
        let half = hd / 2;
        let mut cos = z(context * half);
        let mut sin = z(context * half);
        if spec.positions == Positions::Rotary {
            for t in 0..context {
                for i in 0..half {
                    let theta = (t as f64) * ROPE_BASE.powf(-2.0 * i as f64 / hd as f64);
                    cos[t * half + i] = F::of(theta.cos());
                    sin[t * half + i] = F::of(theta.sin());
                }
            }
        }
        Gpt {
            params,
            dims,
            spec: spec.clone(),
            eps: F::of(eps),
            wte,
            wpe,
            blocks,
            ln_f,
            head,
            resid: (0..=nl).map(|_| z(bt * c)).collect(),
            bufs,
            xf: z(bt * c),
            cache_f: NormCache::new(spec.norm, bt, c),
            logits: z(bt * vocab),
            d_logits: z(bt * vocab),
            g: [z(bt * c), z(bt * c), z(bt * c)],
            g_m: z(bt * m),
            g_qkv: z(bt * 3 * c),
            g_heads: [z(bt * c), z(bt * c), z(bt * c), z(bt * c)],
            g_att: z(capacity * h * context * context),
            rope: (cos, sin),
            batch: 0,
            seq: 0,
            capacity,
        }
    }

    /// Trainable scalar count.
    pub fn n_params(&self) -> usize {
        self.params
            .iter()
            .filter(|p| p.trainable)
            .map(|p| p.value.len())
            .sum()
    }
    pub fn capacity(&self) -> usize {
        self.capacity
    }
    fn head_index(&self) -> usize {
        self.head.unwrap_or(self.wte)
    }

    /// Forward pass. `tokens: [B, T]` (ids `< vocab`, `T ≤ context`, `B ≤ capacity`) →
    /// [`Self::logits`] `[B·T, V]`. Norms always use their per-row statistics (`mode` only
    /// matters for batchnorm, which the spec refuses).
    pub fn forward(&mut self, tokens: &[usize], batch: usize, seq: usize) {
        assert!(
            batch <= self.capacity && seq <= self.dims.context && tokens.len() >= batch * seq,
            "gpt forward: batch exceeds capacity"
        );
        self.batch = batch;
        self.seq = seq;
        let GptDims {
            c, h, hd, m, vocab, ..
        } = self.dims;
        let bt = batch * seq;
        let n = bt * c;
        let pre = self.spec.placement == Placement::Pre;
        // Embedding: x₀ = wte[token] (+ wpe[t]).
        {
            let x0 = &mut self.resid[0];
            let wte = &self.params[self.wte].value;
            for (r, &tok) in tokens[..bt].iter().enumerate() {
                let row = &mut x0[r * c..(r + 1) * c];
                row.copy_from_slice(&wte[tok * c..(tok + 1) * c]);
                if let Some(pi) = self.wpe {
                    let t = r % seq;
                    let pos = &self.params[pi].value[t * c..(t + 1) * c];
                    for (x, &p) in row.iter_mut().zip(pos) {
                        *x += p;
                    }
                }
            }
        }
        for l in 0..self.dims.n_layer {
            let bi = self.blocks[l];
            let (before, after) = self.resid.split_at_mut(l + 1);
            let x = &before[l][..n];
            let x_out = &mut after[0][..n];
            let buf = &mut self.bufs[l];
            let params = &self.params;
            // Attention input: norm1(x) (pre) or x itself (post).
            if pre {
                norm_fwd(
                    self.spec.norm,
                    self.eps,
                    c,
                    params,
                    bi.ln_1,
                    x,
                    &mut buf.n1[..n],
                    &mut buf.cache1,
                );
            }
            let attn_in: &[F] = if pre { &buf.n1[..n] } else { x };
            // qkv = u·W_qkvᵀ + b.
            linear_fwd(
                attn_in,
                &params[bi.qkv_w].value,
                &params[bi.qkv_b].value,
                bt,
                3 * c,
                c,
                &mut buf.qkv[..bt * 3 * c],
            );
            split_heads(
                &buf.qkv[..bt * 3 * c],
                batch,
                seq,
                h,
                hd,
                self.spec.positions == Positions::Rotary,
                &self.rope,
                [&mut buf.q, &mut buf.k, &mut buf.v],
            );
            attention_fwd(buf, batch, seq, h, hd);
            merge_heads(&buf.yh, batch, seq, h, hd, &mut buf.y[..n]);
            // s1 = x + proj(y).
            buf.s1[..n].copy_from_slice(x);
            ops::gemm(
                Op::N,
                Op::T,
                bt,
                c,
                c,
                F::one(),
                &buf.y[..n],
                &params[bi.proj_w].value,
                F::one(),
                &mut buf.s1[..n],
            );
            add_bias(&mut buf.s1[..n], &params[bi.proj_b].value);
            // MLP input: norm2(s1) (pre) or n1 = norm1(s1) (post).
            if pre {
                norm_fwd(
                    self.spec.norm,
                    self.eps,
                    c,
                    params,
                    bi.ln_2,
                    &buf.s1[..n],
                    &mut buf.n2[..n],
                    &mut buf.cache2,
                );
            } else {
                norm_fwd(
                    self.spec.norm,
                    self.eps,
                    c,
                    params,
                    bi.ln_1,
                    &buf.s1[..n],
                    &mut buf.n1[..n],
                    &mut buf.cache1,
                );
            }
            let mlp_in: &[F] = if pre { &buf.n2[..n] } else { &buf.n1[..n] };
            linear_fwd(
                mlp_in,
                &params[bi.fc_w].value,
                &params[bi.fc_b].value,
                bt,
                m,
                c,
                &mut buf.pre[..bt * m],
            );
            // a·f(u − b) + c, with its slope.
            let biased = match bi.act {
                Some(idx) => {
                    broadcast_act_params(params, idx, &mut buf.abc);
                    true
                }
                None => false,
            };
            {
                let BlockBuffers {
                    pre: z,
                    act,
                    slope,
                    fu,
                    abc,
                    ..
                } = &mut *buf;
                let bp = biased.then(|| BiasedParams {
                    a: &abc[0],
                    b: &abc[1],
                    c: &abc[2],
                });
                let fu = (!fu.is_empty()).then(|| &mut fu[..bt * m]);
                activation::forward(
                    self.spec.activation,
                    m,
                    bp,
                    &z[..bt * m],
                    &mut act[..bt * m],
                    &mut slope[..bt * m],
                    fu,
                );
            }
            // s2 = base + fc2(act); x' = s2 (pre) or norm2(s2) (post).
            let mlp_base: &[F] = if pre { &buf.s1[..n] } else { &buf.n1[..n] };
            let s2: &mut [F] = if pre { &mut *x_out } else { &mut buf.s2[..n] };
            s2.copy_from_slice(mlp_base);
            ops::gemm(
                Op::N,
                Op::T,
                bt,
                c,
                m,
                F::one(),
                &buf.act[..bt * m],
                &params[bi.fc2_w].value,
                F::one(),
                s2,
            );
            add_bias(s2, &params[bi.fc2_b].value);
            if !pre {
                norm_fwd(
                    self.spec.norm,
                    self.eps,
                    c,
                    params,
                    bi.ln_2,
                    &buf.s2[..n],
                    x_out,
                    &mut buf.cache2,
                );
            }
        }
        // Head: logits = norm_f(x_L)·W_headᵀ.
        let xl = &self.resid[self.dims.n_layer][..n];
        if pre {
            norm_fwd(
                self.spec.norm,
                self.eps,
                c,
                &self.params,
                self.ln_f,
                xl,
                &mut self.xf[..n],
                &mut self.cache_f,
            );
        } else {
            self.xf[..n].copy_from_slice(xl);
        }
        ops::gemm(
            Op::N,
            Op::T,
            bt,
            vocab,
            c,
            F::one(),
            &self.xf[..n],
            &self.params[self.head_index()].value,
            F::zero(),
            &mut self.logits[..bt * vocab],
        );
    }

    /// Backward from [`Self::d_logits`] (set by [`cross_entropy`]) to every parameter gradient
    /// (overwritten). Needs the last forward's buffers and its `tokens`.
    pub fn backward(&mut self, tokens: &[usize]) {
        let GptDims {
            c, h, hd, m, vocab, ..
        } = self.dims;
        let (batch, seq) = (self.batch, self.seq);
        let bt = batch * seq;
        let n = bt * c;
        let pre = self.spec.placement == Placement::Pre;
        for p in self.params.iter_mut() {
            p.grad.fill(F::zero());
        }
        let head = self.head_index();
        let [ga, gb, gc] = &mut self.g;
        // Head: dW_head += dlogitsᵀ·xf; dxf = dlogits·W_head.
        let dl = &self.d_logits[..bt * vocab];
        ops::gemm(
            Op::T,
            Op::N,
            vocab,
            c,
            bt,
            F::one(),
            dl,
            &self.xf[..n],
            F::one(),
            &mut self.params[head].grad,
        );
        ops::gemm(
            Op::N,
            Op::N,
            bt,
            c,
            vocab,
            F::one(),
            dl,
            &self.params[head].value,
            F::zero(),
            &mut ga[..n],
        );
        // ga = ∂L/∂x_L.
        if pre {
            norm_bwd(
                self.spec.norm,
                c,
                &mut self.params,
                self.ln_f,
                &self.resid[self.dims.n_layer][..n],
                &mut ga[..n],
                &self.cache_f,
            );
        }
        for l in (0..self.dims.n_layer).rev() {
            let bi = self.blocks[l];
            let buf = &mut self.bufs[l];
            let x = &self.resid[l][..n];
            // ga = ∂L/∂x'. Post: through norm2 to ∂L/∂s2.
            if !pre {
                norm_bwd(
                    self.spec.norm,
                    c,
                    &mut self.params,
                    bi.ln_2,
                    &buf.s2[..n],
                    &mut ga[..n],
                    &buf.cache2,
                );
            }
            // ga = ∂L/∂s2: fc2.
            let params = &mut self.params;
            linear_bwd_params(
                params,
                bi.fc2_w,
                bi.fc2_b,
                &ga[..n],
                &buf.act[..bt * m],
                bt,
                c,
                m,
            );
            ops::gemm(
                Op::N,
                Op::N,
                bt,
                m,
                c,
                F::one(),
                &ga[..n],
                &params[bi.fc2_w].value,
                F::zero(),
                &mut self.g_m[..bt * m],
            );
            // Activation (its parameters first, while g_m is ∂L/∂h).
            let gm = &mut self.g_m[..bt * m];
            if let Some(idx) = bi.act {
                let BlockBuffers {
                    slope,
                    fu,
                    abc_grad,
                    ..
                } = &mut *buf;
                act_params_backward(
                    params,
                    idx,
                    m,
                    gm,
                    &slope[..bt * m],
                    (!fu.is_empty()).then(|| &fu[..bt * m]),
                    abc_grad,
                );
            }
            activation::backward_input(gm, &buf.slope[..bt * m]);
            // fc1: gb = ∂L/∂(mlp input).
            let mlp_in: &[F] = if pre { &buf.n2[..n] } else { &buf.n1[..n] };
            linear_bwd_params(params, bi.fc_w, bi.fc_b, gm, mlp_in, bt, m, c);
            ops::gemm(
                Op::N,
                Op::N,
                bt,
                c,
                m,
                F::one(),
                gm,
                &params[bi.fc_w].value,
                F::zero(),
                &mut gb[..n],
            );
            // ga ← ∂L/∂s1.
            if pre {
                // s2 = s1 + mlp(norm2(s1)).
                norm_bwd(
                    self.spec.norm,
                    c,
                    params,
                    bi.ln_2,
                    &buf.s1[..n],
                    &mut gb[..n],
                    &buf.cache2,
                );
                add_into(&mut ga[..n], &gb[..n]);
            } else {
                // s2 = n1 + mlp(n1), n1 = norm1(s1).
                add_into(&mut ga[..n], &gb[..n]);
                norm_bwd(
                    self.spec.norm,
                    c,
                    params,
                    bi.ln_1,
                    &buf.s1[..n],
                    &mut ga[..n],
                    &buf.cache1,
                );
            }
            // Attention projection: s1 = x + y·W_projᵀ + b.
            linear_bwd_params(
                params,
                bi.proj_w,
                bi.proj_b,
                &ga[..n],
                &buf.y[..n],
                bt,
                c,
                c,
            );
            ops::gemm(
                Op::N,
                Op::N,
                bt,
                c,
                c,
                F::one(),
                &ga[..n],
                &params[bi.proj_w].value,
                F::zero(),
                &mut gc[..n],
            );
            // gc = ∂L/∂y → per-head gradients → ∂L/∂qkv.
            split_plain(&gc[..n], batch, seq, h, hd, &mut self.g_heads[3]);
            attention_bwd(buf, batch, seq, h, hd, &mut self.g_heads, &mut self.g_att);
            merge_qkv_grads(
                &self.g_heads,
                batch,
                seq,
                h,
                hd,
                self.spec.positions == Positions::Rotary,
                &self.rope,
                &mut self.g_qkv[..bt * 3 * c],
            );
            let attn_in: &[F] = if pre { &buf.n1[..n] } else { x };
            linear_bwd_params(
                params,
                bi.qkv_w,
                bi.qkv_b,
                &self.g_qkv[..bt * 3 * c],
                attn_in,
                bt,
                3 * c,
                c,
            );
            ops::gemm(
                Op::N,
                Op::N,
                bt,
                c,
                3 * c,
                F::one(),
                &self.g_qkv[..bt * 3 * c],
                &params[bi.qkv_w].value,
                F::zero(),
                &mut gb[..n],
            );
            if pre {
                norm_bwd(
                    self.spec.norm,
                    c,
                    params,
                    bi.ln_1,
                    x,
                    &mut gb[..n],
                    &buf.cache1,
                );
            }
            // ga ← ∂L/∂x = ∂L/∂s1 (residual) + through attention.
            add_into(&mut ga[..n], &gb[..n]);
        }
        // Embeddings.
        let g0 = &ga[..n];
        {
            let gw = &mut self.params[self.wte].grad;
            for (r, &tok) in tokens[..bt].iter().enumerate() {
                add_into(&mut gw[tok * c..(tok + 1) * c], &g0[r * c..(r + 1) * c]);
            }
        }
        if let Some(pi) = self.wpe {
            let gp = &mut self.params[pi].grad;
            for r in 0..bt {
                let t = r % seq;
                add_into(&mut gp[t * c..(t + 1) * c], &g0[r * c..(r + 1) * c]);
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Loss
// ---------------------------------------------------------------------------------------------

/// A target that is not trained on (prompt tokens of a modular-arithmetic sequence).
pub const IGNORE: usize = usize::MAX;

/// Cross-entropy of one forward pass.
#[derive(Clone, Copy, Debug, Default)]
pub struct LmLoss {
    /// Mean over the counted positions (nats per token).
    pub loss: f64,
    /// Positions whose target is not [`IGNORE`].
    pub counted: usize,
    /// Of those, how many the argmax predicts.
    pub correct: usize,
}

/// `torch.nn.functional.cross_entropy(logits, targets, ignore_index)`: softmax over each row of
/// `logits: [rows, vocab]`, averaged over rows whose target is not [`IGNORE`]. Writes
/// `∂L/∂logits` into `grad` when given (zero on ignored rows).
pub fn cross_entropy<F: Float>(
    logits: &[F],
    targets: &[usize],
    rows: usize,
    vocab: usize,
    mut grad: Option<&mut [F]>,
) -> LmLoss {
    let counted = targets[..rows].iter().filter(|&&t| t != IGNORE).count();
    let inv = F::of(1.0 / counted.max(1) as f64);
    let (mut sum, mut correct) = (0.0f64, 0usize);
    for (r, &t) in targets[..rows].iter().enumerate() {
        let z = &logits[r * vocab..(r + 1) * vocab];
        if t == IGNORE {
            if let Some(g) = grad.as_deref_mut() {
                g[r * vocab..(r + 1) * vocab].fill(F::zero());
            }
            continue;
        }
        let (mut arg, mut max) = (0, z[0]);
        for (j, &v) in z.iter().enumerate() {
            if v > max {
                (arg, max) = (j, v);
            }
        }
        correct += (arg == t) as usize;
        match grad.as_deref_mut() {
            Some(g) => {
                let g = &mut g[r * vocab..(r + 1) * vocab];
                let mut s = F::zero();
                for (gv, &v) in g.iter_mut().zip(z) {
                    *gv = (v - max).exp_();
                    s += *gv;
                }
                sum += max.f64() + s.f64().ln() - z[t].f64();
                let k = inv / s;
                for gv in g.iter_mut() {
                    *gv *= k;
                }
                g[t] -= inv;
            }
            None => {
                let s: F = z.iter().map(|&v| (v - max).exp_()).sum();
                sum += max.f64() + s.f64().ln() - z[t].f64();
            }
        }
    }
    LmLoss {
        loss: sum / counted.max(1) as f64,
        counted,
        correct,
    }
}

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// `y = x·Wᵀ + b` for `x: [rows, fan_in]`, `W: [fan_out, fan_in]`.
fn linear_fwd<F: Float>(
    x: &[F],
    w: &[F],
    b: &[F],
    rows: usize,
    fan_out: usize,
    fan_in: usize,
    y: &mut [F],
) {
    ops::fill_rows(y, fan_out, Some(b));
    ops::gemm(
        Op::N,
        Op::T,
        rows,
        fan_out,
        fan_in,
        F::one(),
        x,
        w,
        F::one(),
        y,
    );
}

/// `dW += gᵀ·x`, `db += Σ_rows g`.
#[allow(clippy::too_many_arguments)]
fn linear_bwd_params<F: Float>(
    params: &mut [Param<F>],
    w: usize,
    b: usize,
    g: &[F],
    x: &[F],
    rows: usize,
    fan_out: usize,
    fan_in: usize,
) {
    ops::gemm(
        Op::T,
        Op::N,
        fan_out,
        fan_in,
        rows,
        F::one(),
        g,
        x,
        F::one(),
        &mut params[w].grad,
    );
    ops::add_column_sums(g, fan_out, &mut params[b].grad);
}

fn add_bias<F: Float>(y: &mut [F], b: &[F]) {
    for row in y.chunks_exact_mut(b.len()) {
        for (v, &bv) in row.iter_mut().zip(b) {
            *v += bv;
        }
    }
}

fn add_into<F: Float>(acc: &mut [F], x: &[F]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

#[allow(clippy::too_many_arguments)]
fn norm_fwd<F: Float>(
    norm: Norm,
    eps: F,
    width: usize,
    params: &[Param<F>],
    idx: NormIdx,
    x: &[F],
    y: &mut [F],
    cache: &mut NormCache<F>,
) {
    let np = idx.params(params);
    norm::forward(norm, Mode::Train, width, eps, x, y, &np, None, cache);
}

/// `g`: `∂L/∂y` in, `∂L/∂x` out (a no-op for `norm = "none"`); see [`NormIdx::backward`].
fn norm_bwd<F: Float>(
    norm: Norm,
    width: usize,
    params: &mut [Param<F>],
    idx: NormIdx,
    x: &[F],
    g: &mut [F],
    cache: &NormCache<F>,
) {
    if norm == Norm::None {
        return;
    }
    idx.backward(norm, width, params, x, g, cache);
}

/// Rotates the pairs `(x₂ᵢ, x₂ᵢ₊₁)` of one head row by `+t·θᵢ` (`inverse`: by `−t·θᵢ`, which is
/// the transpose, i.e. the backward pass).
#[inline]
fn rotate<F: Float>(x: &mut [F], cos: &[F], sin: &[F], inverse: bool) {
    for i in 0..cos.len() {
        let (c, s) = (cos[i], if inverse { -sin[i] } else { sin[i] });
        let (a, b) = (x[2 * i], x[2 * i + 1]);
        x[2 * i] = a * c - b * s;
        x[2 * i + 1] = a * s + b * c;
    }
}

/// `[BT, 3C]` → q, k, v `[B, H, T, hd]`, rotating q and k when positions are rotary.
#[allow(clippy::too_many_arguments)]
fn split_heads<F: Float>(
    qkv: &[F],
    batch: usize,
    seq: usize,
    h: usize,
    hd: usize,
    rotary: bool,
    rope: &(Vec<F>, Vec<F>),
    out: [&mut Vec<F>; 3],
) {
    let c = h * hd;
    let half = hd / 2;
    let [q, k, v] = out;
    for b in 0..batch {
        for t in 0..seq {
            let src = &qkv[(b * seq + t) * 3 * c..(b * seq + t + 1) * 3 * c];
            for head in 0..h {
                let dst = ((b * h + head) * seq + t) * hd;
                for (which, buf) in [&mut *q, &mut *k, &mut *v].into_iter().enumerate() {
                    let d = &mut buf[dst..dst + hd];
                    d.copy_from_slice(&src[which * c + head * hd..which * c + (head + 1) * hd]);
                    if rotary && which < 2 {
                        rotate(
                            d,
                            &rope.0[t * half..(t + 1) * half],
                            &rope.1[t * half..(t + 1) * half],
                            false,
                        );
                    }
                }
            }
        }
    }
}

/// `[B, H, T, hd]` → `[BT, C]`.
fn merge_heads<F: Float>(yh: &[F], batch: usize, seq: usize, h: usize, hd: usize, y: &mut [F]) {
    let c = h * hd;
    for b in 0..batch {
        for head in 0..h {
            for t in 0..seq {
                let src = ((b * h + head) * seq + t) * hd;
                let dst = (b * seq + t) * c + head * hd;
                y[dst..dst + hd].copy_from_slice(&yh[src..src + hd]);
            }
        }
    }
}

/// `[BT, C]` → `[B, H, T, hd]`.
fn split_plain<F: Float>(y: &[F], batch: usize, seq: usize, h: usize, hd: usize, out: &mut [F]) {
    let c = h * hd;
    for b in 0..batch {
        for head in 0..h {
            for t in 0..seq {
                let dst = ((b * h + head) * seq + t) * hd;
                let src = (b * seq + t) * c + head * hd;
                out[dst..dst + hd].copy_from_slice(&y[src..src + hd]);
            }
        }
    }
}

/// dq, dk, dv `[B, H, T, hd]` → `∂L/∂qkv` `[BT, 3C]`, undoing the rotation of q and k.
#[allow(clippy::too_many_arguments)]
fn merge_qkv_grads<F: Float>(
    g: &[Vec<F>; 4],
    batch: usize,
    seq: usize,
    h: usize,
    hd: usize,
    rotary: bool,
    rope: &(Vec<F>, Vec<F>),
    gqkv: &mut [F],
) {
    let c = h * hd;
    let half = hd / 2;
    for b in 0..batch {
        for t in 0..seq {
            let row = &mut gqkv[(b * seq + t) * 3 * c..(b * seq + t + 1) * 3 * c];
            for head in 0..h {
                let src = ((b * h + head) * seq + t) * hd;
                for (which, gh) in g[..3].iter().enumerate() {
                    let d = &mut row[which * c + head * hd..which * c + (head + 1) * hd];
                    d.copy_from_slice(&gh[src..src + hd]);
                    if rotary && which < 2 {
                        rotate(
                            d,
                            &rope.0[t * half..(t + 1) * half],
                            &rope.1[t * half..(t + 1) * half],
                            true,
                        );
                    }
                }
            }
        }
    }
}

/// Causal attention of every (sequence, head): `P = softmax(q·kᵀ/√hd + mask)` into `att`,
/// `yh = P·v`; records each head's largest logit. The (sequence, head) pairs are split over
/// [`ops::threads`] threads in contiguous blocks (each pair computed the same way whatever the
/// split: bit-identical for any thread count).
fn attention_fwd<F: Float>(
    buf: &mut BlockBuffers<F>,
    batch: usize,
    seq: usize,
    h: usize,
    hd: usize,
) {
    let (tt, th, nbh) = (seq * seq, seq * hd, batch * h);
    let BlockBuffers {
        q,
        k,
        v,
        att,
        yh,
        bh_max,
        logit_max,
        ..
    } = buf;
    let (q, k, v) = (&q[..nbh * th], &k[..nbh * th], &v[..nbh * th]);
    let threads = ops::threads().min(nbh).max(1);
    let per = nbh.div_ceil(threads);
    let work = att[..nbh * tt]
        .chunks_mut(per * tt)
        .zip(yh[..nbh * th].chunks_mut(per * th))
        .zip(bh_max[..nbh].chunks_mut(per))
        .enumerate();
    if threads == 1 {
        for (c, ((a, y), m)) in work {
            attend(c * per, a, y, m, q, k, v, seq, hd);
        }
    } else {
        std::thread::scope(|s| {
            for (c, ((a, y), m)) in work {
                s.spawn(move || attend(c * per, a, y, m, q, k, v, seq, hd));
            }
        });
    }
    logit_max.fill(F::neg_infinity());
    for (bh, &m) in bh_max[..nbh].iter().enumerate() {
        logit_max[bh % h] = logit_max[bh % h].max(m);
    }
}

/// [`attention_fwd`] for the pairs `first..first + max.len()`.
#[allow(clippy::too_many_arguments)]
fn attend<F: Float>(
    first: usize,
    att: &mut [F],
    yh: &mut [F],
    max: &mut [F],
    q: &[F],
    k: &[F],
    v: &[F],
    seq: usize,
    hd: usize,
) {
    let scale = F::of(1.0 / (hd as f64).sqrt());
    let (tt, th) = (seq * seq, seq * hd);
    for (i, ((p, y), lmax)) in att
        .chunks_exact_mut(tt)
        .zip(yh.chunks_exact_mut(th))
        .zip(max.iter_mut())
        .enumerate()
    {
        let r = (first + i) * th..(first + i + 1) * th;
        ops::gemm(
            Op::N,
            Op::T,
            seq,
            seq,
            hd,
            scale,
            &q[r.clone()],
            &k[r.clone()],
            F::zero(),
            p,
        );
        let mut m = F::neg_infinity();
        for i in 0..seq {
            let row = &mut p[i * seq..(i + 1) * seq];
            let (live, masked) = row.split_at_mut(i + 1);
            let mut mx = live[0];
            for &s in live.iter() {
                mx = mx.max(s);
            }
            m = m.max(mx);
            let mut sum = F::zero();
            for s in live.iter_mut() {
                *s = (*s - mx).exp_();
                sum += *s;
            }
            let inv = F::one() / sum;
            for s in live.iter_mut() {
                *s *= inv;
            }
            masked.fill(F::zero());
        }
        *lmax = m;
        ops::gemm(Op::N, Op::N, seq, hd, seq, F::one(), p, &v[r], F::zero(), y);
    }
}

/// Backward of [`attention_fwd`]: from dy (`g[3]`) to dq, dk, dv (`g[0..3]`), per head:
/// `dv = Pᵀ·dy`, `dP = dy·vᵀ`, `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dq = dS·k/√hd`,
/// `dk = dSᵀ·q/√hd`; split over threads like the forward pass.
fn attention_bwd<F: Float>(
    buf: &BlockBuffers<F>,
    batch: usize,
    seq: usize,
    h: usize,
    hd: usize,
    g: &mut [Vec<F>; 4],
    dp: &mut [F],
) {
    let (tt, th, nbh) = (seq * seq, seq * hd, batch * h);
    let [dq, dk, dv, dy] = g;
    let threads = ops::threads().min(nbh).max(1);
    let per = nbh.div_ceil(threads);
    let (att, q, k, v) = (
        &buf.att[..nbh * tt],
        &buf.q[..nbh * th],
        &buf.k[..nbh * th],
        &buf.v[..nbh * th],
    );
    let dy = &dy[..nbh * th];
    let work = dq[..nbh * th]
        .chunks_mut(per * th)
        .zip(dk[..nbh * th].chunks_mut(per * th))
        .zip(dv[..nbh * th].chunks_mut(per * th))
        .zip(dp[..nbh * tt].chunks_mut(per * tt))
        .enumerate();
    if threads == 1 {
        for (c, (((gq, gk), gv), p)) in work {
            attend_bwd(c * per, gq, gk, gv, p, att, q, k, v, dy, seq, hd);
        }
    } else {
        std::thread::scope(|s| {
            for (c, (((gq, gk), gv), p)) in work {
                s.spawn(move || attend_bwd(c * per, gq, gk, gv, p, att, q, k, v, dy, seq, hd));
            }
        });
    }
}

/// [`attention_bwd`] for the pairs `first..` covered by the gradient blocks.
#[allow(clippy::too_many_arguments)]
fn attend_bwd<F: Float>(
    first: usize,
    dq: &mut [F],
    dk: &mut [F],
    dv: &mut [F],
    dp: &mut [F],
    att: &[F],
    q: &[F],
    k: &[F],
    v: &[F],
    dy: &[F],
    seq: usize,
    hd: usize,
) {
    let scale = F::of(1.0 / (hd as f64).sqrt());
    let (tt, th) = (seq * seq, seq * hd);
    for (i, (((gq, gk), gv), dp)) in dq
        .chunks_exact_mut(th)
        .zip(dk.chunks_exact_mut(th))
        .zip(dv.chunks_exact_mut(th))
        .zip(dp.chunks_exact_mut(tt))
        .enumerate()
    {
        let bh = first + i;
        let r = bh * th..(bh + 1) * th;
        let p = &att[bh * tt..(bh + 1) * tt];
        let dyh = &dy[r.clone()];
        ops::gemm(Op::T, Op::N, seq, hd, seq, F::one(), p, dyh, F::zero(), gv);
        ops::gemm(
            Op::N,
            Op::T,
            seq,
            seq,
            hd,
            F::one(),
            dyh,
            &v[r.clone()],
            F::zero(),
            dp,
        );
        for i in 0..seq {
            let (pr, dr) = (&p[i * seq..(i + 1) * seq], &mut dp[i * seq..(i + 1) * seq]);
            let mut dot = F::zero();
            for j in 0..=i {
                dot += pr[j] * dr[j];
            }
            for j in 0..=i {
                dr[j] = pr[j] * (dr[j] - dot);
            }
            dr[i + 1..].fill(F::zero());
        }
        ops::gemm(
            Op::N,
            Op::N,
            seq,
            hd,
            seq,
            scale,
            dp,
            &k[r.clone()],
            F::zero(),
            gq,
        );
        ops::gemm(Op::T, Op::N, seq, hd, seq, scale, dp, &q[r], F::zero(), gk);
    }
}
