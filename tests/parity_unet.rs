//! Parity of the U-Net against an independent implementation: small f64 U-Nets (every channel
//! norm, every upsampling mode, every segmentation loss, the learned biased activation) train
//! K steps with the library (forward, loss, explicit backward, AdamW with weight decay, BatchNorm
//! running statistics); the initial weights, batches, per-step losses, first-step gradients and
//! final weights go to one safetensors file per case, and `tests/parity/conv_parity.py` redoes
//! the training in JAX (`lax.conv_general_dilated`, autodiff, `torch.optim.AdamW` written from
//! PyTorch's documentation).
//!
//! Needs a Python with numpy, jax and safetensors (see `tests/common/parity.rs`).
//! `CLOUDCHAMBER_PARITY_DIR=dir` keeps the case files there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cloudchamber::engine::Rng;
use cloudchamber::model::{Batch, Model, Unet};
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::norm::Mode;
use cloudchamber::optim::{Hyper, OptimState, Optimizer};
use cloudchamber::spec::unet::{ChannelNorm, SegLoss, UnetSpec, Upsampling};
use cloudchamber::spec::{ActParamSpec, BiasedActSpec, Granularity, Trainable};

mod common;
use common::parity::{check_with_jax, save, Tensor};

const BATCH: usize = 2;
const STEPS: usize = 3;
const LR: f64 = 1e-2;
const WEIGHT_DECAY: f64 = 0.1;

struct Case {
    spec: UnetSpec,
    in_ch: usize,
    size: (usize, usize),
    classes: usize,
    eps: f64,
}

fn cases() -> Vec<Case> {
    // Three channels at the top: a layer norm over two channels is a step function (see
    // `conv_parity.py`'s notes).
    let base = UnetSpec {
        depth: 2,
        base_channels: 3,
        channel_mult: 2,
        groups: 3,
        activation: Activation::Tanh,
        ..UnetSpec::default()
    };
    let case = |spec: UnetSpec, in_ch: usize, size: (usize, usize), classes: usize| Case {
        spec,
        in_ch,
        size,
        classes,
        eps: 1e-5,
    };
    let learned = |init: f64, per: Granularity| ActParamSpec {
        init,
        mode: Trainable::Learned,
        per,
    };
    let fixed = |init: f64| ActParamSpec {
        init,
        mode: Trainable::Fixed,
        per: Granularity::Layer,
    };
    vec![
        case(
            UnetSpec {
                norm: ChannelNorm::Batchnorm,
                ..base.clone()
            },
            2,
            (8, 8),
            3,
        ),
        case(
            UnetSpec {
                norm: ChannelNorm::Groupnorm,
                upsampling: Upsampling::Nearest,
                ..base.clone()
            },
            1,
            (8, 4),
            3,
        ),
        case(
            UnetSpec {
                norm: ChannelNorm::Layernorm,
                upsampling: Upsampling::Bilinear,
                ..base.clone()
            },
            1,
            (4, 8),
            2,
        ),
        case(
            UnetSpec {
                norm: ChannelNorm::None,
                loss: SegLoss::Bce,
                activation: Activation::Gelu,
                ..base.clone()
            },
            1,
            (8, 8),
            2,
        ),
        case(
            UnetSpec {
                loss: SegLoss::Dice,
                depth: 1,
                ..base.clone()
            },
            1,
            (6, 6),
            2,
        ),
        case(
            UnetSpec {
                loss: SegLoss::Dice,
                ..base.clone()
            },
            1,
            (4, 4),
            3,
        ),
        case(
            UnetSpec {
                loss: SegLoss::BceDice,
                dice_weight: 0.5,
                upsampling: Upsampling::Bilinear,
                activation: Activation::Silu,
                act: BiasedActSpec {
                    a: learned(1.1, Granularity::Neuron),
                    b: learned(0.1, Granularity::Layer),
                    c: fixed(0.05),
                },
                ..base.clone()
            },
            1,
            (8, 8),
            2,
        ),
        case(
            UnetSpec {
                depth: 0,
                ..base.clone()
            },
            1,
            (5, 7),
            2,
        ),
    ]
}

/// Nudges `m`'s trainable parameters off their initial values (norm weights of exactly 1 and
/// biases of 0 hide mistakes), trains [`STEPS`] AdamW steps on random batches (normal images of
/// `x_shape`, targets of `y_shape` drawn below `classes`) and writes the case file: initial
/// weights, batches, losses, first-step gradients, final weights, and `meta` completed with the
/// optimizer, the decayed and trained tensors, BatchNorm's momentum and the step count.
fn record(
    m: &mut dyn Model<f64>,
    seed: u64,
    (x_shape, y_shape, classes): (Vec<usize>, Vec<usize>, usize),
    mut meta: serde_json::Value,
    file: PathBuf,
) -> PathBuf {
    let mut nudge = Rng::new(seed ^ 0x9d9e);
    for p in m.params_mut().iter_mut().filter(|p| p.trainable) {
        for v in p.value.iter_mut() {
            *v += 0.2 * nudge.normal();
        }
    }
    let mut tensors: Vec<Tensor> = m
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone(), p.value.clone()))
        .collect();
    let hyper = Hyper {
        optimizer: Optimizer::Adamw,
        momentum: 0.0,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: WEIGHT_DECAY,
    };
    let mut opt = OptimState::new(m.params(), Optimizer::Adamw);
    let mut data = Rng::new(seed ^ 0x5eed);
    let mut losses = Vec::new();
    for k in 0..STEPS {
        let x: Vec<f64> = (0..x_shape.iter().product::<usize>())
            .map(|_| data.normal())
            .collect();
        let y: Vec<f64> = (0..y_shape.iter().product::<usize>())
            .map(|_| data.below(classes as u64) as f64)
            .collect();
        let batch = Batch::Rows {
            x: &x,
            y: &y,
            rows: BATCH,
        };
        m.forward(&batch, Mode::Train);
        let l = m.loss(&batch, true);
        m.backward(&batch);
        if k == 0 {
            tensors.extend(m.params().iter().filter(|p| p.trainable).map(|p| {
                (
                    format!("rust.grad.{}", p.name),
                    p.shape.clone(),
                    p.grad.clone(),
                )
            }));
        }
        opt.step(m.params_mut(), &hyper, LR);
        tensors.push((format!("batch.{k}.x"), x_shape.clone(), x));
        tensors.push((format!("batch.{k}.y"), y_shape.clone(), y));
        losses.push(l.loss);
    }
    tensors.push(("rust.loss".into(), vec![STEPS], losses));
    tensors.extend(m.params().iter().map(|p| {
        (
            format!("rust.final.{}", p.name),
            p.shape.clone(),
            p.value.clone(),
        )
    }));
    let names = |keep: &dyn Fn(&cloudchamber::model::Param<f64>) -> bool| {
        m.params()
            .iter()
            .filter(|p| keep(p))
            .map(|p| p.name.clone())
            .collect::<Vec<_>>()
    };
    let extra = serde_json::json!({
        "optimizer": {
            "kind": "adamw",
            "lr": LR,
            "beta1": hyper.beta1,
            "beta2": hyper.beta2,
            "eps": hyper.eps,
            "weight_decay": hyper.weight_decay,
        },
        "decay": names(&|p| p.decay && p.trainable),
        "trainable": names(&|p| p.trainable),
        "momentum": cloudchamber::nn::channel::MOMENTUM,
        "steps": STEPS,
    });
    if let (Some(meta), Some(extra)) = (meta.as_object_mut(), extra.as_object()) {
        meta.extend(extra.clone());
    }
    save(
        &file,
        &tensors,
        HashMap::from([("case".to_string(), meta.to_string())]),
    );
    file
}

/// Trains one U-Net case and writes its case file (`declared_upsampling`: what the
/// description claims instead, to show that the check can fail).
fn run_case(c: &Case, seed: u64, dir: &Path, declared_upsampling: Option<Upsampling>) -> PathBuf {
    let mut rng = Rng::new(seed);
    let (h, w) = c.size;
    let mut m = Unet::<f64>::new(&c.spec, c.eps, (c.in_ch, h, w), c.classes, BATCH, &mut rng);
    let out_classes = if c.spec.loss.channels(c.classes) == 1 {
        2
    } else {
        c.classes
    };
    let up = declared_upsampling.unwrap_or(c.spec.upsampling);
    let word = |v: serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let label = format!(
        "unet depth {} base {} {} {} {} {} {}×{}{}",
        c.spec.depth,
        c.spec.base_channels,
        c.spec.norm.name(),
        word(serde_json::json!(c.spec.upsampling)),
        c.spec.loss.name(),
        c.spec.activation.name(),
        h,
        w,
        if c.spec.act.is_plain() {
            ""
        } else {
            " biased a,b,c"
        }
    ) + &declared_upsampling
        .map(|u| format!(" (declared: {})", word(serde_json::json!(u))))
        .unwrap_or_default();
    let meta = serde_json::json!({
        "label": label,
        "model": "unet",
        "depth": c.spec.depth,
        "base_channels": c.spec.base_channels,
        "channel_mult": c.spec.channel_mult,
        "upsampling": word(serde_json::json!(up)),
        "in_channels": c.in_ch,
        "out_channels": c.spec.loss.channels(c.classes),
        "loss": c.spec.loss.name(),
        "dice_weight": c.spec.dice_weight,
        "norm": c.spec.norm.name(),
        "norm_eps": c.eps,
        "groups": c.spec.groups_for(c.spec.base_channels),
        "activation": c.spec.activation.name(),
        "act": !c.spec.act.is_plain(),
    });
    let shapes = (vec![BATCH, c.in_ch, h, w], vec![BATCH, h, w], out_classes);
    record(
        &mut m,
        seed,
        shapes,
        meta,
        dir.join(format!("unet{seed:02}.safetensors")),
    )
}

#[test]
fn unet_training_matches_jax() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("CLOUDCHAMBER_PARITY_DIR").map(PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp.path());
    let files: Vec<PathBuf> = cases()
        .iter()
        .enumerate()
        .map(|(i, c)| run_case(c, i as u64 + 1, dir, None))
        .collect();
    let (status, text) = check_with_jax("conv_parity.py", &files);
    assert_eq!(status, Some(0), "JAX parity check failed:\n{text}");
    println!("{text}");
}

/// The check can fail: a bilinear U-Net declared nearest is reported as a mismatch.
#[test]
fn a_wrong_description_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let c = cases()
        .into_iter()
        .find(|c| c.spec.upsampling == Upsampling::Bilinear)
        .expect("a bilinear case");
    let file = run_case(&c, 99, dir.path(), Some(Upsampling::Nearest));
    let (status, text) = check_with_jax("conv_parity.py", &[file]);
    assert_eq!(status, Some(1), "expected a mismatch:\n{text}");
    assert!(text.contains("MISMATCH"), "{text}");
}

/// The CNN classifier against the same JAX script (`model = "cnn"`): every norm, both pools,
/// the learned biased activation, odd image sizes.
#[test]
fn cnn_training_matches_jax() {
    use cloudchamber::model::Cnn;
    use cloudchamber::spec::cnn::{CnnSpec, PoolKind};
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("CLOUDCHAMBER_PARITY_DIR").map(PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp.path());
    let learned = |init: f64, per: Granularity| ActParamSpec {
        init,
        mode: Trainable::Learned,
        per,
    };
    let specs = [
        CnnSpec {
            channels: vec![3, 4],
            pool: PoolKind::Max,
            norm: ChannelNorm::Batchnorm,
            activation: Activation::Tanh,
            ..CnnSpec::default()
        },
        CnnSpec {
            channels: vec![4, 4],
            pool: PoolKind::Avg,
            norm: ChannelNorm::Groupnorm,
            groups: 2,
            activation: Activation::Gelu,
            ..CnnSpec::default()
        },
        CnnSpec {
            channels: vec![3],
            pool: PoolKind::Max,
            norm: ChannelNorm::Layernorm,
            activation: Activation::Silu,
            ..CnnSpec::default()
        },
        CnnSpec {
            channels: vec![3, 6],
            pool: PoolKind::Max,
            norm: ChannelNorm::None,
            activation: Activation::Tanh,
            act: BiasedActSpec {
                a: learned(1.1, Granularity::Neuron),
                b: learned(0.1, Granularity::Layer),
                c: learned(0.0, Granularity::Neuron),
            },
            ..CnnSpec::default()
        },
    ];
    let (in_ch, h, w, classes) = (2, 7, 9, 3);
    let mut files = Vec::new();
    for (ci, spec) in specs.iter().enumerate() {
        let seed = 40 + ci as u64;
        let mut rng = Rng::new(seed);
        let mut m = Cnn::<f64>::new(spec, 1e-5, (in_ch, h, w), classes, BATCH, &mut rng);
        let word = |v: serde_json::Value| v.as_str().unwrap_or("?").to_string();
        let meta = serde_json::json!({
            "label": format!("cnn {:?} {} {} {}", spec.channels, word(serde_json::json!(spec.pool)), spec.norm.name(), spec.activation.name()),
            "model": "cnn",
            "channels": spec.channels,
            "pool": word(serde_json::json!(spec.pool)),
            "in_channels": in_ch,
            "classes": classes,
            "loss": "cross_entropy",
            "norm": spec.norm.name(),
            "norm_eps": 1e-5,
            "groups": spec.groups_for(spec.channels[0]),
            "activation": spec.activation.name(),
            "act": !spec.act.is_plain(),
        });
        let shapes = (vec![BATCH, in_ch, h, w], vec![BATCH], classes);
        let file = record(
            &mut m,
            seed,
            shapes,
            meta,
            dir.join(format!("cnn{seed:02}.safetensors")),
        );
        files.push(file);
    }
    let (status, text) = check_with_jax("conv_parity.py", &files);
    assert_eq!(status, Some(0), "JAX parity check failed:\n{text}");
    println!("{text}");
}
