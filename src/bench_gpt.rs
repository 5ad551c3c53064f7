//! The reference tiny GPT of the peer scripts (`torch_bench.py gpt`): 2 pre-norm layers,
//! d_model 128, 4 heads, context 64, vocabulary 65, batch 32, GELU MLP ×4, untied head, AdamW
//! (lr 1e-3, weight decay 0.01), uniform random tokens — 421,632 parameters. One training step
//! is forward + cross-entropy + backward + AdamW, timed phase by phase.

use crate::bench::time_steps;
use crate::engine::{ops, Rng};
use crate::model::gpt::{Gpt, GptInit, GptSpec};
use crate::model::{Batch, Model};
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
