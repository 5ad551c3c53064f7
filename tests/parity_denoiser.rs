//! Parity of the PFGM++/diffusion denoiser against an independent implementation: for a few
//! tiny f64 denoisers (Fourier and positional noise features, several activations, a
//! pre-activation LayerNorm), one training step on a fixed batch of PFGM++ perturbations — the
//! EDM-preconditioned forward pass, the EDM-weighted loss, the explicit backward pass and an Adam
//! update — is redone by `tests/parity/denoiser_parity.py` in JAX (autodiff, f64) from the
//! exported initial weights and batch. The loss, every gradient and every updated parameter
//! must agree.
//!
//! Needs a Python with numpy, jax and safetensors (see `tests/common/parity.rs`).

use std::collections::HashMap;

use cloudchamber::engine::Rng;
use cloudchamber::generative::Kernel;
use cloudchamber::model::{self, Batch, Shape};
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::norm::{Mode, Norm};
use cloudchamber::optim::{Hyper, OptimState, Optimizer};
use cloudchamber::spec::denoiser::{AugDim, NoiseEmbedding};
use cloudchamber::spec::{DenoiserSpec, LossKind, MlpSpec, ModelSpec};

mod common;
use common::parity::{check_with_jax, save, Tensor};

const N: usize = 4;
const ROWS: usize = 8;
const LR: f64 = 1e-2;

fn case(
    dir: &std::path::Path,
    label: &str,
    activation: Activation,
    norm: Norm,
    embedding: NoiseEmbedding,
    aug: AugDim,
) -> std::path::PathBuf {
    let net = MlpSpec {
        width: 16,
        depth: 2,
        activation,
        norm,
        ..MlpSpec::default()
    };
    let den = DenoiserSpec {
        aug_dim: aug,
        embedding,
        embed_dim: 8,
        fourier_scale: 2.0,
        sigma_data: 0.5,
        ..DenoiserSpec::default()
    };
    let spec = ModelSpec::Denoiser {
        net,
        denoiser: den.clone(),
    };
    let shape = Shape::Rows {
        input: N,
        output: N,
    };
    let mut m = model::build::<f64>(&spec, shape, LossKind::Mse, ROWS, &mut Rng::new(5)).unwrap();
    // A batch of the run's own perturbations: clean points, levels from EDM's log-normal, the
    // PFGM++ kernel at D.
    let kernel = Kernel::new(&den, N);
    let mut rng = Rng::new(17);
    let y: Vec<f64> = (0..ROWS * N).map(|_| 0.6 * rng.normal()).collect();
    let mut x = vec![0.0; ROWS * N];
    let mut sigma = vec![0.0; ROWS];
    for r in 0..ROWS {
        sigma[r] = kernel.draw_sigma(&mut rng);
        kernel.perturb(
            sigma[r],
            &y[r * N..(r + 1) * N],
            &mut x[r * N..(r + 1) * N],
            &mut rng,
        );
    }
    let mut tensors: Vec<Tensor> = m
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone(), p.value.clone()))
        .collect();
    let b = Batch::Denoise {
        x: &x,
        sigma: &sigma,
        y: &y,
        rows: ROWS,
        dim: N,
    };
    m.forward(&b, Mode::Train);
    let loss = m.loss(&b, true).loss;
    m.backward(&b);
    for p in m.params().iter().filter(|p| p.trainable) {
        tensors.push((
            format!("rust.grad.{}", p.name),
            p.shape.clone(),
            p.grad.clone(),
        ));
    }
    let mut opt = OptimState::new(m.params(), Optimizer::Adam);
    let h = Hyper {
        optimizer: Optimizer::Adam,
        momentum: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    };
    opt.step(m.params_mut(), &h, LR);
    for p in m.params() {
        tensors.push((
            format!("rust.final.{}", p.name),
            p.shape.clone(),
            p.value.clone(),
        ));
    }
    tensors.push(("batch.x".into(), vec![ROWS, N], x));
    tensors.push(("batch.sigma".into(), vec![ROWS], sigma));
    tensors.push(("batch.y".into(), vec![ROWS, N], y));
    tensors.push(("rust.loss".into(), vec![1], vec![loss]));
    let meta = serde_json::json!({
        "label": label,
        "activation": serde_json::to_value(activation).unwrap(),
        "norm": serde_json::to_value(norm).unwrap(),
        "norm_eps": 1e-5,
        "depth": 2,
        "embedding": serde_json::to_value(embedding).unwrap(),
        "sigma_data": 0.5,
        "lr": LR,
    });
    let path = dir.join(format!("{}.safetensors", label.replace(' ', "_")));
    save(
        &path,
        &tensors,
        HashMap::from([("case".to_string(), meta.to_string())]),
    );
    path
}

#[test]
fn denoiser_step_matches_jax() {
    let keep = std::env::var("CLOUDCHAMBER_PARITY_DIR").ok();
    let tmp = tempfile::tempdir().unwrap();
    let dir = keep
        .as_deref()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).unwrap();
    let files = vec![
        case(
            &dir,
            "silu fourier D128",
            Activation::Silu,
            Norm::None,
            NoiseEmbedding::Fourier,
            AugDim::Finite(128.0),
        ),
        case(
            &dir,
            "tanh positional Dinf",
            Activation::Tanh,
            Norm::None,
            NoiseEmbedding::Positional,
            AugDim::Infinite,
        ),
        case(
            &dir,
            "gelu layernorm D1",
            Activation::Gelu,
            Norm::Layernorm,
            NoiseEmbedding::Fourier,
            AugDim::Finite(1.0),
        ),
    ];
    let (code, out) = check_with_jax("denoiser_parity.py", &files);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("3 case(s) agree"), "{out}");
}
