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

use crate::engine::ops::{self, Op, Shards};
use crate::engine::pool::SendPtr;
use crate::engine::{Float, Rng};
use crate::nn::activation::{self, BiasedParams};
use crate::nn::init::{self, FanMode, Init, InitParams};
use crate::nn::loss::LossValue;
use crate::nn::norm::{self, Mode, Norm, NormCache, NormGrads};
use std::any::Any;
use crate::spec::{Granularity, Trainable};
pub use crate::nn::loss::{token_cross_entropy as cross_entropy, IGNORE};
pub use crate::spec::gpt::{GptInit, GptSpec, Placement, Positions, Tying, ROPE_BASE};

use super::{act_params_backward, broadcast_act_params, Batch, Model, Param, Role};

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
    /// ∂L/∂scores of every (sequence, head) so sequences can run on separate threads.
    g: [Vec<F>; 3],
    g_m: Vec<F>,
    g_qkv: Vec<F>,
    g_att: Vec<F>,
    /// Per-row-block partial sums (norm and bias gradients): `[blocks, max(2C + 1, 3C, M)]`.
    partial: Vec<F>,
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
            g_att: z(capacity * h * context * context),
            partial: z(bt.div_ceil(ops::ROW_BLOCK) * (2 * c + 1).max(3 * c).max(m)),
            rope: (cos, sin),
            batch: 0,
            seq: 0,
            capacity,
        }
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
            let x0 = Shards::new(&mut self.resid[0][..n]);
            let wte = &self.params[self.wte].value;
            let wpe = self.wpe.map(|pi| &self.params[pi].value);
            ops::for_row_blocks(bt, &|_, rows| {
                for r in rows {
                    // SAFETY: row blocks are disjoint.
                    let row = unsafe { x0.get(r * c..(r + 1) * c) };
                    let tok = tokens[r];
                    row.copy_from_slice(&wte[tok * c..(tok + 1) * c]);
                    if let Some(wpe) = wpe {
                        let t = r % seq;
                        for (x, &p) in row.iter_mut().zip(&wpe[t * c..(t + 1) * c]) {
                            *x += p;
                        }
                    }
                }
            });
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
            linear_into(
                attn_in,
                &params[bi.qkv_w].value,
                &params[bi.qkv_b].value,
                (bt, 3 * c, c),
                F::zero(),
                &mut buf.qkv[..bt * 3 * c],
            );
            let rotary = (self.spec.positions == Positions::Rotary).then_some(&self.rope);
            attention_fwd(buf, batch, seq, h, hd, rotary);
            // s1 = x + proj(y) + b.
            buf.s1[..n].copy_from_slice(x);
            linear_into(
                &buf.y[..n],
                &params[bi.proj_w].value,
                &params[bi.proj_b].value,
                (bt, c, c),
                F::one(),
                &mut buf.s1[..n],
            );
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
            linear_into(
                mlp_in,
                &params[bi.fc_w].value,
                &params[bi.fc_b].value,
                (bt, m, c),
                F::zero(),
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
                let with_fu = !fu.is_empty();
                let (acts, slopes) = (Shards::new(&mut act[..bt * m]), Shards::new(&mut slope[..]));
                let fus = Shards::new(&mut fu[..]);
                let activation = self.spec.activation;
                ops::for_row_blocks(bt, &|_, r| {
                    let e = r.start * m..r.end * m;
                    let bp = bp.as_ref().map(|p| BiasedParams {
                        a: p.a,
                        b: p.b,
                        c: p.c,
                    });
                    // SAFETY: row blocks are disjoint.
                    unsafe {
                        activation::forward(
                            activation,
                            m,
                            bp,
                            &z[e.clone()],
                            acts.get(e.clone()),
                            slopes.get(e.clone()),
                            with_fu.then(|| fus.get(e)),
                        )
                    };
                });
            }
            // s2 = base + fc2(act); x' = s2 (pre) or norm2(s2) (post).
            let mlp_base: &[F] = if pre { &buf.s1[..n] } else { &buf.n1[..n] };
            let s2: &mut [F] = if pre { &mut *x_out } else { &mut buf.s2[..n] };
            s2.copy_from_slice(mlp_base);
            linear_into(
                &buf.act[..bt * m],
                &params[bi.fc2_w].value,
                &params[bi.fc2_b].value,
                (bt, c, m),
                F::one(),
                s2,
            );
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
        // Zeroed in parallel, one parameter per item (1.7 MB for the reference model: serial, the
        // other thread would idle through it).
        let params_ptr = SendPtr(self.params.as_mut_ptr());
        crate::engine::pool::run_items(self.params.len(), ops::threads(), &|i| {
            // SAFETY: item i touches only parameter i, which `self.params` owns.
            unsafe { (*params_ptr.get().add(i)).grad.fill(F::zero()) }
        });
        // Per-block partial sums of the row-parallel reductions (sized once in `new`).
        let mut partial = std::mem::take(&mut self.partial);
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
                &mut partial,
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
                    &mut partial,
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
                &mut partial,
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
            {
                let (gms, slope) = (Shards::new(&mut gm[..]), &buf.slope[..bt * m]);
                ops::for_row_blocks(bt, &|_, r| {
                    let e = r.start * m..r.end * m;
                    // SAFETY: row blocks are disjoint.
                    activation::backward_input(unsafe { gms.get(e.clone()) }, &slope[e]);
                });
            }
            // fc1: gb = ∂L/∂(mlp input).
            let mlp_in: &[F] = if pre { &buf.n2[..n] } else { &buf.n1[..n] };
            linear_bwd_params(&mut partial, params, bi.fc_w, bi.fc_b, gm, mlp_in, bt, m, c);
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
                    &mut partial,
                    self.spec.norm,
                    c,
                    params,
                    bi.ln_2,
                    &buf.s1[..n],
                    &mut gb[..n],
                    &buf.cache2,
                );
                ops::add_assign(&mut ga[..n], &gb[..n], c);
            } else {
                // s2 = n1 + mlp(n1), n1 = norm1(s1).
                ops::add_assign(&mut ga[..n], &gb[..n], c);
                norm_bwd(
                    &mut partial,
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
                &mut partial,
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
            // gc = ∂L/∂y → ∂L/∂qkv.
            let rotary = (self.spec.positions == Positions::Rotary).then_some(&self.rope);
            attention_bwd(
                buf,
                batch,
                seq,
                h,
                hd,
                rotary,
                &gc[..n],
                &mut self.g_qkv[..bt * 3 * c],
                &mut self.g_att,
            );
            let attn_in: &[F] = if pre { &buf.n1[..n] } else { x };
            linear_bwd_params(
                &mut partial,
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
                    &mut partial,
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
            ops::add_assign(&mut ga[..n], &gb[..n], c);
        }
        // Embeddings: each of a fixed number of items owns a block of token ids (of positions)
        // and adds their rows of g0 in row order, the same sums as one serial pass, whatever
        // the thread count. Every item scans all the tokens, so there are few items.
        const ITEMS: usize = 8;
        let g0 = &ga[..n];
        {
            let gw = Shards::new(&mut self.params[self.wte].grad[..]);
            let per = vocab.div_ceil(ITEMS);
            crate::engine::pool::run_items(ITEMS, ops::threads(), &|blk| {
                let ids = blk * per..((blk + 1) * per).min(vocab);
                for (r, &tok) in tokens[..bt].iter().enumerate() {
                    if ids.contains(&tok) {
                        // SAFETY: token `tok`'s row belongs to this item only.
                        let row = unsafe { gw.get(tok * c..(tok + 1) * c) };
                        add_into(row, &g0[r * c..(r + 1) * c]);
                    }
                }
            });
        }
        if let Some(pi) = self.wpe {
            let gp = Shards::new(&mut self.params[pi].grad[..]);
            let per = seq.div_ceil(ITEMS);
            crate::engine::pool::run_items(ITEMS, ops::threads(), &|blk| {
                for t in blk * per..((blk + 1) * per).min(seq) {
                    // SAFETY: position `t`'s row belongs to this item only.
                    let row = unsafe { gp.get(t * c..(t + 1) * c) };
                    for b in 0..batch {
                        let r = b * seq + t;
                        add_into(row, &g0[r * c..(r + 1) * c]);
                    }
                }
            });
        }
        self.partial = partial;
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
    /// `Tokens { x: [B, T], .. }` → [`Gpt::logits`] `[B·T, V]` (norms are per row: `mode` does
    /// not matter).
    fn forward(&mut self, batch: &Batch<'_, F>, _mode: Mode) {
        let Batch::Tokens { x, seqs, seq, .. } = *batch else {
            unreachable!("model::build pairs a GPT with token windows")
        };
        Gpt::forward(self, x, seqs, seq);
    }
    /// Cross-entropy of the next token at every position whose target is not [`IGNORE`].
    fn loss(&mut self, batch: &Batch<'_, F>, grad: bool) -> LossValue {
        let Batch::Tokens { y, seqs, seq, .. } = *batch else {
            unreachable!("model::build pairs a GPT with token windows")
        };
        let rows = seqs * seq;
        let vocab = self.dims.vocab;
        let g = grad.then_some(&mut self.d_logits[..rows * vocab]);
        cross_entropy(&self.logits[..rows * vocab], y, rows, vocab, g)
    }
    fn backward(&mut self, batch: &Batch<'_, F>) {
        let Batch::Tokens { x, .. } = *batch else {
            unreachable!("model::build pairs a GPT with token windows")
        };
        Gpt::backward(self, x);
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    /// Samples one token at a time at temperature 1 (the prompt and what was drawn so far are
    /// the context of each next token), up to the model's context length.
    fn generate(&mut self, prompt: &[usize], len: usize, rng: &mut Rng) -> Option<Vec<usize>> {
        let (vocab, t) = (self.dims.vocab, self.dims.context);
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

// ---------------------------------------------------------------------------------------------
// Kernels
// ---------------------------------------------------------------------------------------------

/// `y ← x·Wᵀ + b + β·y` for `x: [rows, fan_in]`, `W: [fan_out, fan_in]`: β = 0 for a layer's
/// output, 1 for a residual branch added onto its stream (the bias rides in the GEMM).
fn linear_into<F: Float>(
    x: &[F],
    w: &[F],
    b: &[F],
    (rows, fan_out, fan_in): (usize, usize, usize),
    beta: F,
    y: &mut [F],
) {
    ops::gemm_ex(
        Op::N,
        Op::T,
        rows,
        fan_out,
        fan_in,
        F::one(),
        (x, fan_in),
        (w, fan_in),
        beta,
        (y, fan_out),
        Some(b),
    );
}

/// `dW += gᵀ·x`, `db += Σ_rows g`.
#[allow(clippy::too_many_arguments)]
fn linear_bwd_params<F: Float>(
    partial: &mut [F],
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
    ops::add_column_sums_par(g, fan_out, &mut params[b].grad, partial);
}

fn add_into<F: Float>(acc: &mut [F], x: &[F]) {
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
}

/// The row-local norm over `x: [rows, width]`, in row blocks over the pool.
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
    let rows = x.len() / width;
    let per_row = matches!(norm, Norm::Layernorm | Norm::Rmsnorm);
    let per_elem = norm == Norm::Dyt;
    let (ys, means, rstds, ts) = (
        Shards::new(y),
        Shards::new(&mut cache.mean[..]),
        Shards::new(&mut cache.rstd[..]),
        Shards::new(&mut cache.t[..]),
    );
    ops::for_row_blocks(rows, &|_, r| {
        let e = r.start * width..r.end * width;
        let stats = if per_row { r.clone() } else { 0..0 };
        // SAFETY: row blocks are disjoint.
        unsafe {
            norm::rows_forward(
                norm,
                width,
                eps,
                &x[e.clone()],
                ys.get(e.clone()),
                &np,
                means.get(stats.clone()),
                rstds.get(stats),
                ts.get(if per_elem { e } else { 0..0 }),
            )
        }
    });
}

/// `g`: `∂L/∂y` in, `∂L/∂x` out (a no-op for `norm = "none"`). Row blocks run over the pool;
/// each block's parameter gradients are summed on their own, then added in block order (the
/// same sums for any thread count).
#[allow(clippy::too_many_arguments)]
fn norm_bwd<F: Float>(
    partial: &mut [F],
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
    let rows = x.len() / width;
    let blocks = rows.div_ceil(ops::ROW_BLOCK);
    // Per block: ∂w [width], ∂b [width], ∂α [1].
    let stride = 2 * width + 1;
    let partial = &mut partial[..blocks * stride];
    partial.fill(F::zero());
    {
        let np = idx.params(params);
        let per_row = matches!(norm, Norm::Layernorm | Norm::Rmsnorm);
        let (gs, parts) = (Shards::new(g), Shards::new(&mut partial[..]));
        ops::for_row_blocks(rows, &|blk, r| {
            let e = r.start * width..r.end * width;
            let stats = if per_row { r.clone() } else { 0..0 };
            let t = if norm == Norm::Dyt { e.clone() } else { 0..0 };
            // SAFETY: row blocks, and their partial rows, are disjoint.
            let (part, gr) = unsafe {
                (
                    parts.get(blk * stride..(blk + 1) * stride),
                    gs.get(e.clone()),
                )
            };
            let (gw, rest) = part.split_at_mut(width);
            let (gb, ga) = rest.split_at_mut(width);
            let grads = NormGrads {
                weight: gw,
                bias: norm.has_bias().then_some(gb),
                alpha: norm.has_alpha().then(|| &mut ga[0]),
            };
            norm::rows_backward(
                norm,
                width,
                &x[e],
                gr,
                &np,
                grads,
                &cache.mean[stats.clone()],
                &cache.rstd[stats],
                &cache.t[t],
            );
        });
    }
    for part in partial.chunks_exact(stride) {
        if let Some(i) = idx.weight {
            add_into(&mut params[i].grad, &part[..width]);
        }
        if let Some(i) = idx.bias {
            add_into(&mut params[i].grad, &part[width..2 * width]);
        }
        if let Some(i) = idx.alpha {
            params[i].grad[0] += part[2 * width];
        }
    }
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

/// Causal attention, read straight out of the fused projection: for every sequence `b` and
/// head, with `q, k, v` the head's `[T, hd]` column blocks of `qkv: [BT, 3C]` (row stride 3C),
/// `P = softmax(q·kᵀ/√hd + mask)` into `att: [B, H, T, T]` and `y = P·v` into the head's
/// columns of `y: [BT, C]`; records each head's largest logit. With rotary positions q and k
/// are rotated in place first. Sequences go to pool threads as they come free (each computed the
/// same way whichever thread runs it: bit-identical for any thread count).
fn attention_fwd<F: Float>(
    buf: &mut BlockBuffers<F>,
    batch: usize,
    seq: usize,
    h: usize,
    hd: usize,
    rotary: Option<&(Vec<F>, Vec<F>)>,
) {
    let c = h * hd;
    let tt = seq * seq;
    let BlockBuffers {
        qkv,
        att,
        y,
        bh_max,
        logit_max,
        ..
    } = buf;
    let scale = F::of(1.0 / (hd as f64).sqrt());
    let (qkvs, atts, ys, maxes) = (
        Shards::new(&mut qkv[..batch * seq * 3 * c]),
        Shards::new(&mut att[..batch * h * tt]),
        Shards::new(&mut y[..batch * seq * c]),
        Shards::new(&mut bh_max[..batch * h]),
    );
    crate::engine::pool::run_items(batch, ops::threads(), &|b| {
        // SAFETY: each sequence's rows (and its heads' blocks) belong to one task.
        let (qkv, att, y, maxes) = unsafe {
            (
                qkvs.get(b * seq * 3 * c..(b + 1) * seq * 3 * c),
                atts.get(b * h * tt..(b + 1) * h * tt),
                ys.get(b * seq * c..(b + 1) * seq * c),
                maxes.get(b * h..(b + 1) * h),
            )
        };
        if let Some(rope) = rotary {
            rotate_qk(qkv, seq, h, hd, rope, false);
        }
        let qkv: &[F] = qkv;
        for head in 0..h {
            let p = &mut att[head * tt..(head + 1) * tt];
            let (q, k, v) = (
                &qkv[head * hd..],
                &qkv[c + head * hd..],
                &qkv[2 * c + head * hd..],
            );
            ops::gemm_ex(
                Op::N,
                Op::T,
                seq,
                seq,
                hd,
                scale,
                (q, 3 * c),
                (k, 3 * c),
                F::zero(),
                (&mut p[..], seq),
                None,
            );
            maxes[head] = causal_softmax(p, seq);
            ops::gemm_ex(
                Op::N,
                Op::N,
                seq,
                hd,
                seq,
                F::one(),
                (&p[..], seq),
                (v, 3 * c),
                F::zero(),
                (&mut y[head * hd..], c),
                None,
            );
        }
    });
    logit_max.fill(F::neg_infinity());
    for (bh, &m) in bh_max[..batch * h].iter().enumerate() {
        logit_max[bh % h] = logit_max[bh % h].max(m);
    }
}

/// Row-wise softmax of the lower triangle of `p: [T, T]` (zero above the diagonal), in place;
/// returns the largest logit.
fn causal_softmax<F: Float>(p: &mut [F], seq: usize) -> F {
    let mut m = F::neg_infinity();
    for i in 0..seq {
        let row = &mut p[i * seq..(i + 1) * seq];
        let (live, masked) = row.split_at_mut(i + 1);
        // Separate passes, so each vectorizes (the reductions run over fixed lanes).
        let mx = ops::max(live);
        m = m.max(mx);
        for s in live.iter_mut() {
            *s = (*s - mx).exp_();
        }
        let inv = F::one() / ops::sum(live);
        for s in live.iter_mut() {
            *s *= inv;
        }
        masked.fill(F::zero());
    }
    m
}

/// Rotates (`inverse`: un-rotates, the backward pass) the q and k blocks of one sequence's rows
/// of a `[T, 3C]` buffer.
fn rotate_qk<F: Float>(
    rows: &mut [F],
    seq: usize,
    h: usize,
    hd: usize,
    rope: &(Vec<F>, Vec<F>),
    inverse: bool,
) {
    let (c, half) = (h * hd, hd / 2);
    for t in 0..seq {
        let row = &mut rows[t * 3 * c..(t + 1) * 3 * c];
        let (cos, sin) = (
            &rope.0[t * half..(t + 1) * half],
            &rope.1[t * half..(t + 1) * half],
        );
        for head in 0..2 * h {
            rotate(&mut row[head * hd..(head + 1) * hd], cos, sin, inverse);
        }
    }
}

/// Backward of [`attention_fwd`]: from `dy = ∂L/∂y: [BT, C]` to `dqkv = ∂L/∂qkv: [BT, 3C]`
/// (un-rotated back to the projection's output), per head: `dv = Pᵀ·dy`, `dP = dy·vᵀ`,
/// `dS = P ⊙ (dP − rowsum(P ⊙ dP))`, `dq = dS·k/√hd`, `dk = dSᵀ·q/√hd`; `dp: [B, H, T, T]` is
/// scratch. Split over sequences like the forward pass.
#[allow(clippy::too_many_arguments)]
fn attention_bwd<F: Float>(
    buf: &BlockBuffers<F>,
    batch: usize,
    seq: usize,
    h: usize,
    hd: usize,
    rotary: Option<&(Vec<F>, Vec<F>)>,
    dy: &[F],
    dqkv: &mut [F],
    dp: &mut [F],
) {
    let c = h * hd;
    let tt = seq * seq;
    let scale = F::of(1.0 / (hd as f64).sqrt());
    let (dqkvs, dps) = (
        Shards::new(&mut dqkv[..batch * seq * 3 * c]),
        Shards::new(&mut dp[..batch * h * tt]),
    );
    crate::engine::pool::run_items(batch, ops::threads(), &|b| {
        // SAFETY: each sequence's rows belong to one task.
        let (g, dp) = unsafe {
            (
                dqkvs.get(b * seq * 3 * c..(b + 1) * seq * 3 * c),
                dps.get(b * h * tt..(b + 1) * h * tt),
            )
        };
        let qkv = &buf.qkv[b * seq * 3 * c..(b + 1) * seq * 3 * c];
        let att = &buf.att[b * h * tt..(b + 1) * h * tt];
        let dy = &dy[b * seq * c..(b + 1) * seq * c];
        for head in 0..h {
            let (q, k, v) = (
                &qkv[head * hd..],
                &qkv[c + head * hd..],
                &qkv[2 * c + head * hd..],
            );
            let (p, dp, dyh) = (
                &att[head * tt..(head + 1) * tt],
                &mut dp[head * tt..(head + 1) * tt],
                &dy[head * hd..],
            );
            let gemm = |ta, tb, n, k_, alpha, a, b, out: (&mut [F], usize)| {
                ops::gemm_ex(ta, tb, seq, n, k_, alpha, a, b, F::zero(), out, None)
            };
            gemm(
                Op::T,
                Op::N,
                hd,
                seq,
                F::one(),
                (p, seq),
                (dyh, c),
                (&mut g[2 * c + head * hd..], 3 * c),
            );
            gemm(
                Op::N,
                Op::T,
                seq,
                hd,
                F::one(),
                (dyh, c),
                (v, 3 * c),
                (&mut dp[..], seq),
            );
            for i in 0..seq {
                let (pr, dr) = (&p[i * seq..(i + 1) * seq], &mut dp[i * seq..(i + 1) * seq]);
                let dot = ops::dot(&pr[..=i], &dr[..=i]);
                for j in 0..=i {
                    dr[j] = pr[j] * (dr[j] - dot);
                }
                dr[i + 1..].fill(F::zero());
            }
            gemm(
                Op::N,
                Op::N,
                hd,
                seq,
                scale,
                (&dp[..], seq),
                (k, 3 * c),
                (&mut g[head * hd..], 3 * c),
            );
            gemm(
                Op::T,
                Op::N,
                hd,
                seq,
                scale,
                (&dp[..], seq),
                (q, 3 * c),
                (&mut g[c + head * hd..], 3 * c),
            );
        }
        if let Some(rope) = rotary {
            rotate_qk(g, seq, h, hd, rope, true);
        }
    });
}
