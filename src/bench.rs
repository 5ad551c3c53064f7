//! The reference workload of the engine decision: one training step of a 64→256→256→256→1 tanh
//! MLP, batch 128, Adam (lr 1e-3), on teacher–student data — the same workload as
//! `torch_bench.py mlp` and `jax_bench.py` — timed against the GEMM ceiling: the same step's 11
//! GEMMs alone, on the same shapes, measured in the same process.

use std::time::Instant;

use crate::engine::ops::{self, Op};
use crate::engine::{Float, Rng};
use crate::model::{Batch, Mlp, Model};
use crate::nn::activation::Activation;
use crate::nn::loss;
use crate::nn::norm::Mode;
use crate::optim::{Hyper, OptimState, Optimizer};
use crate::spec::{LossKind, MlpSpec};

pub const DIMS: [usize; 5] = [64, 256, 256, 256, 1];
pub const BATCH: usize = 128;

/// Milliseconds of each timed step and of its phases (forward + loss, backward, optimizer),
/// and the first and last batch losses.
pub(crate) struct StepTimes {
    pub steps: Vec<f64>,
    pub phases: [Vec<f64>; 3],
    pub first_loss: f64,
    pub last_loss: f64,
}

/// Trains `model` for `warmup + steps` steps through the model interface, cycling `batches`,
/// and times the last `steps`, phase by phase.
pub(crate) fn time_steps<F: Float>(
    model: &mut dyn Model<F>,
    batches: &[Batch<'_, F>],
    opt: &mut OptimState<F>,
    hyper: &Hyper,
    warmup: usize,
    steps: usize,
) -> StepTimes {
    let mut t = StepTimes {
        steps: Vec::with_capacity(steps),
        phases: std::array::from_fn(|_| Vec::with_capacity(steps)),
        first_loss: f64::NAN,
        last_loss: f64::NAN,
    };
    for s in 0..warmup + steps {
        let batch = &batches[s % batches.len()];
        let t0 = Instant::now();
        // As training takes an unlogged step: no buffer only the observables read.
        model.lean();
        model.forward(batch, Mode::Train);
        let l = model.loss(batch, true);
        let t1 = Instant::now();
        // As training takes an unlogged step: each tensor updated as soon as its gradient is
        // final (the "backward" phase holds those updates; "optimizer" the rest).
        let mut up = opt.begin(hyper, 1e-3, true);
        model.backward_update(batch, &mut up);
        let t2 = Instant::now();
        up.finish(model.params_mut());
        let t3 = Instant::now();
        let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
        if s >= warmup {
            t.steps.push(ms(t0, t3));
            for (phase, (a, b)) in t.phases.iter_mut().zip([(t0, t1), (t1, t2), (t2, t3)]) {
                phase.push(ms(a, b));
            }
        }
        if s == 0 {
            t.first_loss = l.loss;
        }
        t.last_loss = l.loss;
    }
    t
}

#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Median milliseconds per training step.
    pub step_ms: f64,
    /// Median milliseconds of the step's 11 GEMMs alone.
    pub gemm_ms: f64,
    /// Median milliseconds of the 4 forward GEMMs alone (the other 7 are the backward's).
    pub gemm_forward_ms: f64,
    /// Medians of the step's phases: forward + loss, backward, optimizer.
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub optim_ms: f64,
    pub first_loss: f64,
    pub last_loss: f64,
    pub steps: usize,
}

impl BenchReport {
    /// The share of the GEMM ceiling the whole step reaches (1 = the step costs only its GEMMs).
    pub fn ceiling_share(&self) -> f64 {
        self.gemm_ms / self.step_ms
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs[xs.len() / 2]
}

/// Teacher–student batches as in the peer scripts: `y = tanh(x·T₁)·T₂`, `T₁ ~ N(0,1)/8`,
/// `T₂ ~ N(0,1)/16`, 32 batches of `x ~ N(0, 1)`.
fn data<F: Float>() -> Vec<(Vec<F>, Vec<F>)> {
    let mut rng = Rng::stream(0, "bench/data");
    let t1: Vec<f64> = (0..64 * 256).map(|_| rng.normal() / 8.0).collect();
    let t2: Vec<f64> = (0..256).map(|_| rng.normal() / 16.0).collect();
    (0..32)
        .map(|_| {
            let x: Vec<f64> = (0..BATCH * 64).map(|_| rng.normal()).collect();
            let y: Vec<f64> = (0..BATCH)
                .map(|r| {
                    (0..256)
                        .map(|j| {
                            (0..64)
                                .map(|k| x[r * 64 + k] * t1[k * 256 + j])
                                .sum::<f64>()
                                .tanh()
                                * t2[j]
                        })
                        .sum()
                })
                .collect();
            (
                x.into_iter().map(F::of).collect(),
                y.into_iter().map(F::of).collect(),
            )
        })
        .collect()
}

/// Runs `warmup + steps` training steps and as many GEMM-only repetitions.
pub fn reference_mlp<F: Float>(warmup: usize, steps: usize) -> BenchReport {
    let spec = MlpSpec {
        width: 256,
        depth: 3,
        activation: Activation::Tanh,
        ..MlpSpec::default()
    };
    let mut model =
        Mlp::<F>::new(&spec, 64, 1, BATCH, &mut Rng::stream(1, "init")).with_loss(LossKind::Mse);
    let mut opt = OptimState::new(&model.params, Optimizer::Adam);
    let hyper = Hyper {
        optimizer: Optimizer::Adam,
        momentum: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let batches = data::<F>();
    let batches: Vec<Batch<'_, F>> = batches
        .iter()
        .map(|(x, y)| Batch::Rows { x, y, rows: BATCH })
        .collect();
    // The GEMM ceiling: the 11 GEMMs of the step with the model's exact operand layouts.
    let mut rng = Rng::new(9);
    let mut buf = |n: usize| (0..n).map(|_| F::of(rng.normal())).collect::<Vec<F>>();
    let ws: Vec<Vec<F>> = (0..4).map(|l| buf(DIMS[l] * DIMS[l + 1])).collect();
    let acts: Vec<Vec<F>> = (0..5).map(|l| buf(BATCH * DIMS[l])).collect();
    let mut outs: Vec<Vec<F>> = (0..5).map(|l| buf(BATCH * DIMS[l])).collect();
    let mut dws: Vec<Vec<F>> = (0..4).map(|l| buf(DIMS[l] * DIMS[l + 1])).collect();
    let mut dxs: Vec<Vec<F>> = (0..4).map(|l| buf(BATCH * DIMS[l])).collect();
    let mut gemm_times = Vec::with_capacity(steps);
    let mut gemm_fwd = Vec::with_capacity(steps);
    let mut gemm_set = |record: bool| {
        let t0 = Instant::now();
        for l in 0..4 {
            let (i, o) = (DIMS[l], DIMS[l + 1]);
            ops::gemm(
                Op::N,
                Op::T,
                BATCH,
                o,
                i,
                F::one(),
                &acts[l],
                &ws[l],
                F::one(),
                &mut outs[l + 1],
            );
        }
        let tf = t0.elapsed().as_secs_f64() * 1e3;
        for l in (0..4).rev() {
            let (i, o) = (DIMS[l], DIMS[l + 1]);
            ops::gemm(
                Op::T,
                Op::N,
                o,
                i,
                BATCH,
                F::one(),
                &outs[l + 1],
                &acts[l],
                F::zero(),
                &mut dws[l],
            );
            if l > 0 {
                ops::gemm(
                    Op::N,
                    Op::N,
                    BATCH,
                    i,
                    o,
                    F::one(),
                    &outs[l + 1],
                    &ws[l],
                    F::zero(),
                    &mut dxs[l],
                );
            }
        }
        let dt = t0.elapsed().as_secs_f64() * 1e3;
        if record {
            gemm_times.push(dt);
            gemm_fwd.push(tf);
        }
    };
    // Steps and GEMM sets in alternating blocks (each block after its own short warm-up), so
    // a neighbour's load that comes and goes during the run weighs on both alike.
    const BLOCK: usize = 25;
    let mut t = time_steps(&mut model, &batches, &mut opt, &hyper, warmup, 0);
    for _ in 0..warmup {
        gemm_set(false);
    }
    let mut done = 0;
    while done < steps {
        let n = BLOCK.min(steps - done);
        let b = time_steps(
            &mut model,
            &batches[done % batches.len()..],
            &mut opt,
            &hyper,
            3,
            n,
        );
        t.steps.extend(b.steps);
        for (all, part) in t.phases.iter_mut().zip(b.phases) {
            all.extend(part);
        }
        t.last_loss = b.last_loss;
        for i in 0..3 + n {
            gemm_set(i >= 3);
        }
        done += n;
    }
    let [f, b, o] = t.phases;
    BenchReport {
        step_ms: median(t.steps),
        gemm_ms: median(gemm_times),
        gemm_forward_ms: median(gemm_fwd),
        forward_ms: median(f),
        backward_ms: median(b),
        optim_ms: median(o),
        first_loss: t.first_loss,
        last_loss: t.last_loss,
        steps,
    }
}

/// Lockstep lanes against runs alone, for the tiny MLPs sweeps are made of: `8 → w → w → 1`
/// tanh, batch 64, Adam, f32, at each hidden width `w`. Microseconds per model-step (forward,
/// loss, backward, update), one thread, medians of `repeats` timings of `steps` steps.
#[derive(Clone, Debug)]
pub struct LanesRow {
    pub width: usize,
    pub n_params: usize,
    pub alone_us: f64,
    pub lanes_us: f64,
}

pub fn lanes(widths: &[usize], steps: usize, repeats: usize) -> Vec<LanesRow> {
    use crate::engine::lanes::LANES;
    use crate::model::lanes::LaneMlp;
    const IN: usize = 8;
    const ROWS: usize = 64;
    let hyper = Hyper {
        optimizer: Optimizer::Adam,
        momentum: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    let mut rng = Rng::stream(0, "bench/lanes");
    // 8 batches per model, cycled.
    let batches: Vec<Vec<(Vec<f32>, Vec<f32>)>> = (0..LANES)
        .map(|_| {
            (0..8)
                .map(|_| {
                    let x: Vec<f32> = (0..ROWS * IN).map(|_| rng.normal() as f32).collect();
                    let y: Vec<f32> = (0..ROWS).map(|_| rng.normal() as f32 * 0.3).collect();
                    (x, y)
                })
                .collect()
        })
        .collect();
    widths
        .iter()
        .map(|&width| {
            let spec = MlpSpec {
                width,
                depth: 2,
                activation: Activation::Tanh,
                ..MlpSpec::default()
            };
            let mut models: Vec<(Mlp<f32>, OptimState<f32>)> = (0..LANES as u64)
                .map(|s| {
                    let m = Mlp::<f32>::new(&spec, IN, 1, ROWS, &mut Rng::stream(s, "init"));
                    let o = OptimState::new(&m.params, Optimizer::Adam);
                    (m, o)
                })
                .collect();
            let n_params = models[0].0.params.iter().map(|p| p.value.len()).sum();
            let mut lanes = LaneMlp::new(&models[0].0, ROWS, 1, Optimizer::Adam);
            for (l, (m, o)) in models.iter().enumerate() {
                lanes.load(l, &m.params, o);
            }
            let alone_step = |(m, o): &mut (Mlp<f32>, OptimState<f32>), s: usize| {
                let (x, y) = &batches[0][s % 8];
                m.forward(x, ROWS, Mode::Train);
                let k = ROWS;
                loss::loss(
                    LossKind::Mse,
                    &m.output[..k],
                    y,
                    k,
                    1,
                    Some(&mut m.d_output[..k]),
                );
                m.backward(x);
                o.step(&mut m.params, &hyper, 1e-3);
            };
            let mut alone = Vec::with_capacity(repeats);
            let mut lane = Vec::with_capacity(repeats);
            for r in 0..repeats + 1 {
                // Interleaved, so a noisy neighbour slows both alike; the first round warms up.
                let t = Instant::now();
                for s in 0..steps {
                    alone_step(&mut models[0], s);
                }
                let a = t.elapsed().as_secs_f64() * 1e6 / steps as f64;
                let t = Instant::now();
                let group_steps = steps.div_ceil(LANES).max(1);
                for s in 0..group_steps {
                    let views: Vec<Option<(&[f32], &[f32])>> = batches
                        .iter()
                        .map(|b| Some((b[s % 8].0.as_slice(), b[s % 8].1.as_slice())))
                        .collect();
                    lanes.set_batches(&views, ROWS);
                    lanes.forward();
                    lanes.loss();
                    lanes.backward();
                    lanes.step(&[hyper], &[1e-3]);
                }
                let l = t.elapsed().as_secs_f64() * 1e6 / (group_steps * LANES) as f64;
                if r > 0 {
                    alone.push(a);
                    lane.push(l);
                }
            }
            LanesRow {
                width,
                n_params,
                alone_us: median(alone),
                lanes_us: median(lane),
            }
        })
        .collect()
}
