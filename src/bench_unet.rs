//! The U-Net's training step timed beside PyTorch eager (`benches/peers/torch_unet.py`): the same
//! network (depth 2, 16 → 32 → 64 channels, BatchNorm, ReLU, 2×2 up-convolutions, BCE + Dice),
//! the same 16 images of 64×64 and the same Adam, f32. The peer reads the weights and the batch
//! written here, so both start from the same numbers and report comparable losses.

use std::path::Path;
use std::time::Instant;

use safetensors::Dtype;

use crate::engine::{ops, Rng};
use crate::error::Error;
use crate::model::{Batch, Model, Unet};
use crate::nn::norm::Mode;
use crate::optim::{Hyper, OptimState, Optimizer};
use crate::spec::unet::{SegLoss, UnetSpec};

/// Images per step, their side, and the spec: the `unet-shapes` example's network.
pub const BATCH: usize = 16;
pub const SIZE: usize = 64;

pub fn spec() -> UnetSpec {
    UnetSpec {
        loss: SegLoss::BceDice,
        ..UnetSpec::default()
    }
}

/// Milliseconds per step: median, min, max; and the first and last losses.
pub struct UnetReport {
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    pub loss_first: f64,
    pub loss_last: f64,
    pub n_params: usize,
}

/// Times `steps` training steps after `warmup` on `threads` threads; with `save`, writes the
/// initial weights and the batch (`bench.x`, `bench.y`) there for the peer.
pub fn run(
    threads: usize,
    warmup: usize,
    steps: usize,
    save: Option<&Path>,
) -> Result<UnetReport, Error> {
    ops::with_threads(threads, || {
        let mut rng = Rng::new(0);
        let mut m = Unet::<f32>::new(&spec(), 1e-5, (1, SIZE, SIZE), 2, BATCH, &mut rng);
        let mut data = Rng::new(1);
        let x: Vec<f32> = (0..BATCH * SIZE * SIZE)
            .map(|_| data.normal() as f32)
            .collect();
        let y: Vec<f32> = (0..BATCH * SIZE * SIZE)
            .map(|_| data.below(2) as f32)
            .collect();
        if let Some(path) = save {
            let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = m
                .params()
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        Dtype::F32,
                        p.shape.clone(),
                        p.value.iter().flat_map(|v| v.to_le_bytes()).collect(),
                    )
                })
                .collect();
            let bytes = |v: &[f32]| v.iter().flat_map(|a| a.to_le_bytes()).collect::<Vec<u8>>();
            tensors.push((
                "bench.x".into(),
                Dtype::F32,
                vec![BATCH, 1, SIZE, SIZE],
                bytes(&x),
            ));
            tensors.push((
                "bench.y".into(),
                Dtype::F32,
                vec![BATCH, SIZE, SIZE],
                bytes(&y),
            ));
            crate::interop::write(tensors, path, None)?;
        }
        let hyper = Hyper {
            optimizer: Optimizer::Adam,
            momentum: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        };
        let mut opt = OptimState::new(m.params(), Optimizer::Adam);
        let batch = Batch::Rows {
            x: &x,
            y: &y,
            rows: BATCH,
        };
        let mut times = Vec::with_capacity(steps);
        let (mut first, mut last) = (f64::NAN, f64::NAN);
        for s in 0..warmup + steps {
            let t = Instant::now();
            m.forward(&batch, Mode::Train);
            let l = m.loss(&batch, true);
            m.backward(&batch);
            opt.step(m.params_mut(), &hyper, 1e-3);
            if s >= warmup {
                times.push(t.elapsed().as_secs_f64() * 1e3);
            }
            if s == 0 {
                first = l.loss;
            }
            last = l.loss;
        }
        times.sort_by(f64::total_cmp);
        let median = if times.is_empty() {
            f64::NAN
        } else {
            times[times.len() / 2]
        };
        Ok(UnetReport {
            median_ms: median,
            min_ms: times.first().copied().unwrap_or(f64::NAN),
            max_ms: times.last().copied().unwrap_or(f64::NAN),
            loss_first: first,
            loss_last: last,
            n_params: m.n_params(),
        })
    })
}
