//! Sampling speed of the PFGM++/diffusion denoiser: EDM's Heun sampler (18 steps, 35 network
//! calls) generating a batch of samples with a reference denoiser, in samples per second, beside
//! the same network and sampler in PyTorch (`benches/peers/torch_heun.py`), which reads the very
//! weights and prior draws written here and reports how far its samples are from ours.

use std::path::Path;
use std::time::Instant;

use crate::engine::{ops, Rng};
use crate::error::Error;
use crate::generative::{sampler, Kernel};
use crate::model::{self, Shape};
use crate::nn::activation::Activation;
use crate::spec::denoiser::AugDim;
use crate::spec::{DenoiserSpec, LossKind, MlpSpec, ModelSpec};

/// A reference denoiser: data dimension, hidden width, hidden layers, samples per run.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    pub name: &'static str,
    pub dim: usize,
    pub width: usize,
    pub depth: usize,
    pub samples: usize,
}

/// The two examples' networks: the 2-D toy (`examples/pfgm-moons.toml`) and the 1000-dimensional
/// mixture (`examples/pfgm-gmm-1000d.toml`).
pub const PRESETS: [Preset; 2] = [
    Preset {
        name: "2-D toy",
        dim: 2,
        width: 128,
        depth: 3,
        samples: 4096,
    },
    Preset {
        name: "N = 1000 mixture",
        dim: 1000,
        width: 1024,
        depth: 2,
        samples: 512,
    },
];

pub struct SamplerReport {
    /// Median seconds per sampling run.
    pub seconds: f64,
    pub samples_per_s: f64,
    pub calls: usize,
    pub n_params: usize,
}

/// The preset's spec: SiLU MLP, 32 Fourier features, D = 128, EDM's default sampler.
pub fn spec(p: &Preset) -> (MlpSpec, DenoiserSpec) {
    (
        MlpSpec {
            width: p.width,
            depth: p.depth,
            activation: Activation::Silu,
            ..MlpSpec::default()
        },
        DenoiserSpec {
            aug_dim: AugDim::Finite(128.0),
            ..DenoiserSpec::default()
        },
    )
}

/// Times `repeat` sampling runs of the preset on `threads` GEMM threads, after one untimed run.
/// With `export`, writes the weights, the prior draws and the samples there (for the peer).
pub fn run(
    p: &Preset,
    threads: usize,
    repeat: usize,
    export: Option<&Path>,
) -> Result<SamplerReport, Error> {
    let (net, den) = spec(p);
    let mspec = ModelSpec::Denoiser {
        net,
        denoiser: den.clone(),
    };
    let shape = Shape::Rows {
        input: p.dim,
        output: p.dim,
    };
    // One pass holds every sample: what a sampler would allocate.
    let mut m = model::build::<f32>(&mspec, shape, LossKind::Mse, p.samples, &mut Rng::new(0))?;
    let kernel = Kernel::new(&den, p.dim);
    let mut prior = vec![0.0; p.samples * p.dim];
    let mut rng = Rng::new(1);
    for row in prior.chunks_exact_mut(p.dim) {
        kernel.prior(den.sampler.sigma_max, row, &mut rng);
    }
    let sigmas = sampler::schedule(&den.sampler);
    let mut x = prior.clone();
    let mut times = Vec::new();
    ops::with_threads(threads, || {
        for r in 0..=repeat {
            x.copy_from_slice(&prior);
            let mut keep = Vec::new();
            let start = Instant::now();
            let mut den_fn = |x: &[f64], s: f64, out: &mut [f64]| {
                m.denoise(x, s, out);
            };
            sampler::sample(
                &den.sampler,
                &sigmas,
                p.dim,
                &mut x,
                &mut den_fn,
                &mut Rng::new(2),
                0,
                &mut keep,
            );
            if r > 0 {
                times.push(start.elapsed().as_secs_f64());
            }
        }
    });
    times.sort_by(f64::total_cmp);
    let seconds = times[times.len() / 2];
    if let Some(path) = export {
        let mut params = m.params().to_vec();
        let f64s = |v: &[f64]| -> Vec<f32> { v.iter().map(|&a| a as f32).collect() };
        params.push(crate::model::Param::new(
            "bench.prior".into(),
            vec![p.samples, p.dim],
            f64s(&prior),
            0,
            crate::model::Role::Fixed,
            false,
        ));
        params.push(crate::model::Param::new(
            "bench.samples".into(),
            vec![p.samples, p.dim],
            f64s(&x),
            0,
            crate::model::Role::Fixed,
            false,
        ));
        crate::interop::save_params(&params, path)?;
    }
    Ok(SamplerReport {
        seconds,
        samples_per_s: p.samples as f64 / seconds,
        calls: sampler::calls(&den.sampler),
        n_params: m.n_params(),
    })
}
