//! The reference tiny GPT of the peer scripts (`torch_bench.py gpt`): 2 pre-norm layers,
//! d_model 128, 4 heads, context 64, vocabulary 65, batch 32, GELU MLP ×4, untied head, AdamW
//! (lr 1e-3, weight decay 0.01), uniform random tokens — 421,632 parameters. One training step
//! is forward + cross-entropy + backward + AdamW, timed phase by phase.

use std::time::Instant;

use crate::bench::time_steps;
use crate::engine::{ops, Rng};
use crate::model::gpt::{Gpt, GptInit, GptSpec};
use crate::model::{Batch, Model};
use crate::nn::attention;
use crate::optim::{Hyper, OptimState, Optimizer};

pub const VOCAB: usize = 65;
pub const CONTEXT: usize = 64;
pub const BATCH: usize = 32;

#[derive(Clone, Debug)]
pub struct GptBenchReport {
    /// Median milliseconds per training step, and of its phases.
    pub step_ms: f64,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optim_ms: f64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub n_params: usize,
    pub steps: usize,
    pub threads: usize,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// The reference model's spec (the benchmark script's architecture and torch's inits).
pub fn reference_spec() -> GptSpec {
    GptSpec {
        init: GptInit::Pytorch,
        ..GptSpec::default()
    }
}

/// The reference model's head width (`d_model / n_head`), which picks its attention kernel.
pub fn head_width() -> usize {
    let spec = reference_spec();
    spec.d_model / spec.n_head
}

/// One layer's attention of the reference model alone, per kernel: best milliseconds of the
/// forward and of the backward pass.
#[derive(Clone, Debug)]
pub struct AttentionTimes {
    pub kernel: attention::Kernel,
    pub forward_ms: f64,
    pub backward_ms: f64,
}

/// Times one layer's attention (the reference shapes, no rotary positions) on the fused kernels
/// (where this CPU runs them) and on the GEMM path, `rounds` interleaved rounds on `threads`
/// threads, best of each: the two kernels' ratio on this machine, beside the step.
pub fn attention_alone(rounds: usize, threads: usize) -> Vec<AttentionTimes> {
    let spec = reference_spec();
    let (h, hd) = (spec.n_head, head_width());
    let (b, t, c) = (BATCH, CONTEXT, spec.d_model);
    let mut rng = Rng::stream(3, "bench/gpt/attention");
    let mut normal = |n: usize| -> Vec<f32> { (0..n).map(|_| rng.normal() as f32).collect() };
    let (mut qkv, dy) = (normal(b * t * 3 * c), normal(b * t * c));
    let (mut att, mut y) = (vec![0.0; b * h * t * t], vec![0.0; b * t * c]);
    let (mut bh_max, mut logit_max) = (vec![0.0; b * h], vec![0.0; h]);
    let (mut g, mut dp) = (vec![0.0; b * t * 3 * c], vec![0.0; b * h * t * t]);
    let scale = attention::default_scale(hd) as f32;
    let mut kernels = vec![attention::Kernel::Gemm];
    if attention::Kernel::best::<f32>(hd) == attention::Kernel::Fused {
        kernels.insert(0, attention::Kernel::Fused);
    }
    let mut best: Vec<AttentionTimes> = kernels
        .iter()
        .map(|&kernel| AttentionTimes {
            kernel,
            forward_ms: f64::INFINITY,
            backward_ms: f64::INFINITY,
        })
        .collect();
    ops::with_threads(threads, || {
        for _ in 0..rounds {
            for r in best.iter_mut() {
                let t0 = Instant::now();
                let buf = attention::Buffers {
                    qkv: &mut qkv,
                    att: &mut att,
                    y: &mut y,
                    bh_max: &mut bh_max,
                    logit_max: &mut logit_max,
                };
                attention::forward_with(r.kernel, buf, b, t, h, hd, None, scale);
                let t1 = Instant::now();
                let heads = (&qkv[..], &att[..]);
                attention::backward_with(
                    r.kernel, heads, b, t, h, hd, None, scale, &dy, &mut g, &mut dp,
                );
                let t2 = Instant::now();
                r.forward_ms = r.forward_ms.min((t1 - t0).as_secs_f64() * 1e3);
                r.backward_ms = r.backward_ms.min((t2 - t1).as_secs_f64() * 1e3);
            }
        }
    });
    best
}

/// Runs `warmup + steps` steps on 16 fixed random batches (as the script does), GEMMs split
/// over `threads` threads.
pub fn reference_gpt(warmup: usize, steps: usize, threads: usize) -> GptBenchReport {
    let mut rng = Rng::stream(1234, "bench/gpt/data");
    let batches: Vec<(Vec<usize>, Vec<usize>)> = (0..16)
        .map(|_| {
            let t: Vec<usize> = (0..BATCH * (CONTEXT + 1))
                .map(|_| rng.below(VOCAB as u64) as usize)
                .collect();
            let row = |b: usize, o: usize| {
                t[b * (CONTEXT + 1) + o..b * (CONTEXT + 1) + o + CONTEXT].to_vec()
            };
            (
                (0..BATCH).flat_map(|b| row(b, 0)).collect(),
                (0..BATCH).flat_map(|b| row(b, 1)).collect(),
            )
        })
        .collect();
    let spec = reference_spec();
    let mut model = Gpt::<f32>::new(
        &spec,
        1e-5,
        VOCAB,
        CONTEXT,
        BATCH,
        &mut Rng::stream(1, "bench/gpt/init"),
    );
    let mut opt = OptimState::new(&model.params, Optimizer::Adamw);
    let hyper = Hyper {
        optimizer: Optimizer::Adamw,
        momentum: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.01,
    };
    let batches: Vec<Batch<'_, f32>> = batches
        .iter()
        .map(|(x, y)| Batch::Tokens {
            x,
            y,
            seqs: BATCH,
            seq: CONTEXT,
        })
        .collect();
    let t = ops::with_threads(threads, || {
        time_steps(&mut model, &batches, &mut opt, &hyper, warmup, steps)
    });
    let [fwd, bwd, upd] = t.phases;
    GptBenchReport {
        step_ms: median(t.steps),
        forward_ms: median(fwd),
        backward_ms: median(bwd),
        optim_ms: median(upd),
        first_loss: t.first_loss,
        last_loss: t.last_loss,
        n_params: model.n_params(),
        steps,
        threads,
    }
}
