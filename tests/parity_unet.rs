//! Parity of the U-Net against an independent implementation: small f64 U-Nets (every channel
//! norm, every upsampling mode, every segmentation loss, the learned biased activation) train
//! K steps with the library (forward, loss, explicit backward, AdamW with weight decay, BatchNorm
//! running statistics); the initial weights, batches, per-step losses, first-step gradients and
//! final weights go to one safetensors file per case, and `tests/parity/conv_parity.py` redoes
//! the training in JAX (`lax.conv_general_dilated`, autodiff, `torch.optim.AdamW` written from
//! PyTorch's documentation). After training, the model also runs in evaluation mode (BatchNorm
//! normalizing by its running statistics) on a held-out batch; its logits and loss are checked
//! against JAX's evaluation forward from the exported final weights and running statistics, and
//! the running statistics against PyTorch's update rule recomputed from the training batches.
//!
//! Needs a Python with numpy, jax and safetensors (see `tests/common/parity.rs`).
//! `CLOUDCHAMBER_PARITY_DIR=dir` keeps the case files there.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cloudchamber::engine::Rng;
use cloudchamber::model::{Batch, Cnn, Model, Unet};
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::norm::Mode;
use cloudchamber::optim::{Hyper, OptimState, Optimizer};
use cloudchamber::spec::unet::{ChannelNorm, SegLoss, UnetSpec, Upsampling};
use cloudchamber::spec::{ActParamSpec, BiasedActSpec, Granularity, Trainable};

mod common;
use common::parity::{check_with_jax, save, Tensor};

const BATCH: usize = 2;
const STEPS: usize = 3;
/// Steps of the evaluation-mode cases: the running statistics 1 − 0.9^12 = 72% of the way
/// from their initial 0 and 1 to the batches'.
const EVAL_STEPS: usize = 12;
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
/// biases of 0 hide mistakes), trains `steps` AdamW steps on random batches (normal images of
/// `x_shape`, targets of `y_shape` drawn below `classes`), then runs the trained model once in
/// `eval_mode` (`Mode::Eval` for the check; `Mode::Train`, batch statistics, to show that the
/// check tells them apart) on a held-out batch drawn the same way, and writes the case file:
/// initial weights, batches, losses, first-step gradients, final weights (BatchNorm's running
/// statistics included), the held-out batch with the logits and loss of that pass, and `meta`
/// completed with the optimizer, the decayed and trained tensors, BatchNorm's momentum and the
/// step count.
fn record(
    m: &mut dyn Model<f64>,
    seed: u64,
    (x_shape, y_shape, classes): (Vec<usize>, Vec<usize>, usize),
    mut meta: serde_json::Value,
    file: PathBuf,
    (steps, eval_mode): (usize, Mode),
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
    for k in 0..steps {
        let (x, y) = random_batch(&mut data, &x_shape, &y_shape, classes);
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
    tensors.push(("rust.loss".into(), vec![steps], losses));
    tensors.extend(m.params().iter().map(|p| {
        (
            format!("rust.final.{}", p.name),
            p.shape.clone(),
            p.value.clone(),
        )
    }));
    // BatchNorm's running statistics are state, exported with the weights, never trained.
    let is_state = |n: &str| n.ends_with(".running_mean") || n.ends_with(".running_var");
    for p in m.params().iter().filter(|p| is_state(p.name.as_str())) {
        assert!(
            !p.trainable,
            "`{}` is state, not a trained parameter",
            p.name
        );
    }

    // The trained model on a held-out batch, in `eval_mode`.
    let (x, y) = random_batch(&mut data, &x_shape, &y_shape, classes);
    let batch = Batch::Rows {
        x: &x,
        y: &y,
        rows: BATCH,
    };
    let before: Vec<Vec<f64>> = m.params().iter().map(|p| p.value.clone()).collect();
    m.forward(&batch, eval_mode);
    let eval_loss = m.loss(&batch, false).loss;
    let (logit_shape, logits) = if let Some((z, channels, _)) = m.segmentation() {
        (vec![BATCH, channels, x_shape[2], x_shape[3]], z.to_vec())
    } else {
        let cnn = m
            .as_any()
            .downcast_ref::<Cnn<f64>>()
            .expect("a U-Net or a CNN");
        (vec![BATCH, classes], cnn.logits[..BATCH * classes].to_vec())
    };
    assert_eq!(logits.len(), logit_shape.iter().product::<usize>());
    if eval_mode == Mode::Eval {
        // Evaluation reads the running statistics and changes nothing.
        for (p, v) in m.params().iter().zip(&before) {
            assert!(p.value == *v, "an evaluation pass changed `{}`", p.name);
        }
    }
    tensors.push(("eval.x".into(), x_shape.clone(), x));
    tensors.push(("eval.y".into(), y_shape.clone(), y));
    tensors.push(("rust.eval.logits".into(), logit_shape, logits));
    tensors.push(("rust.eval.loss".into(), vec![1], vec![eval_loss]));
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
        "steps": steps,
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

/// A batch drawn from `data`: normal images of `x_shape`, then targets of `y_shape` below
/// `classes`, so training and held-out batches come from one stream.
fn random_batch(
    data: &mut Rng,
    x_shape: &[usize],
    y_shape: &[usize],
    classes: usize,
) -> (Vec<f64>, Vec<f64>) {
    let x = (0..x_shape.iter().product::<usize>())
        .map(|_| data.normal())
        .collect();
    let y = (0..y_shape.iter().product::<usize>())
        .map(|_| data.below(classes as u64) as f64)
        .collect();
    (x, y)
}

/// Trains one U-Net case for `steps` steps and writes its case file (`declared_upsampling`:
/// what the description claims instead, to show that the check can fail).
fn run_case(
    c: &Case,
    seed: u64,
    steps: usize,
    dir: &Path,
    declared_upsampling: Option<Upsampling>,
) -> PathBuf {
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
        (steps, Mode::Eval),
    )
}

/// The first of [`cases`] whose spec has `property`; `what` names it when none has.
fn case_with(property: impl Fn(&UnetSpec) -> bool, what: &str) -> Case {
    cases().into_iter().find(|c| property(&c.spec)).expect(what)
}

/// Writes the case files with `write` (into a temporary folder, or `$CLOUDCHAMBER_PARITY_DIR`
/// to keep them) and checks them with `conv_parity.py`, which must pass: its output.
fn jax_passes(write: impl FnOnce(&Path) -> Vec<PathBuf>) -> String {
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("CLOUDCHAMBER_PARITY_DIR").map(PathBuf::from);
    let files = write(keep.as_deref().unwrap_or(tmp.path()));
    let (status, text) = check_with_jax("conv_parity.py", &files);
    assert_eq!(status, Some(0), "JAX parity check failed:\n{text}");
    text
}

/// Writes one case file with `write` into a temporary folder and checks it with
/// `conv_parity.py`, which must report a mismatch: its output.
fn jax_catches(write: impl FnOnce(&Path) -> PathBuf) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = write(dir.path());
    let (status, text) = check_with_jax("conv_parity.py", &[file]);
    assert_eq!(status, Some(1), "expected a mismatch:\n{text}");
    assert!(text.contains("MISMATCH"), "{text}");
    text
}

#[test]
fn unet_training_matches_jax() {
    let text = jax_passes(|dir| {
        cases()
            .iter()
            .enumerate()
            .map(|(i, c)| run_case(c, i as u64 + 1, STEPS, dir, None))
            .collect()
    });
    println!("{text}");
}

/// The check can fail: a bilinear U-Net declared nearest is reported as a mismatch.
#[test]
fn a_wrong_description_is_caught() {
    let c = case_with(|s| s.upsampling == Upsampling::Bilinear, "a bilinear case");
    jax_catches(|dir| run_case(&c, 99, STEPS, dir, Some(Upsampling::Nearest)));
}

/// Trains one CNN classifier case (2-channel 7×9 images, 3 classes) for `steps` steps and
/// writes its case file; `eval_mode` is the mode of the held-out pass (`Mode::Train` only to
/// show that the check catches an evaluation with batch statistics).
fn run_cnn_case(
    spec: &cloudchamber::spec::cnn::CnnSpec,
    seed: u64,
    steps: usize,
    dir: &Path,
    eval_mode: Mode,
) -> PathBuf {
    let (in_ch, h, w, classes) = (2, 7, 9, 3);
    let mut rng = Rng::new(seed);
    let mut m = Cnn::<f64>::new(spec, 1e-5, (in_ch, h, w), classes, BATCH, &mut rng);
    let word = |v: serde_json::Value| v.as_str().unwrap_or("?").to_string();
    let declared = if eval_mode == Mode::Eval {
        ""
    } else {
        " (held-out pass with batch statistics)"
    };
    let meta = serde_json::json!({
        "label": format!("cnn {:?} {} {} {}{declared}", spec.channels, word(serde_json::json!(spec.pool)), spec.norm.name(), spec.activation.name()),
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
    record(
        &mut m,
        seed,
        shapes,
        meta,
        dir.join(format!("cnn{seed:02}.safetensors")),
        (steps, eval_mode),
    )
}

/// The CNN with BatchNorm (the first of [`cnn_specs`]).
fn cnn_batchnorm() -> cloudchamber::spec::cnn::CnnSpec {
    cnn_specs()
        .into_iter()
        .find(|s| s.norm == ChannelNorm::Batchnorm)
        .expect("a batchnorm CNN")
}

/// Every norm, both pools, the learned biased activation.
fn cnn_specs() -> Vec<cloudchamber::spec::cnn::CnnSpec> {
    use cloudchamber::spec::cnn::{CnnSpec, PoolKind};
    let learned = |init: f64, per: Granularity| ActParamSpec {
        init,
        mode: Trainable::Learned,
        per,
    };
    vec![
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
    ]
}

/// The CNN classifier against the same JAX script (`model = "cnn"`): every norm, both pools,
/// the learned biased activation, odd image sizes; training, then evaluation mode.
#[test]
fn cnn_training_matches_jax() {
    let text = jax_passes(|dir| {
        cnn_specs()
            .iter()
            .enumerate()
            .map(|(ci, spec)| run_cnn_case(spec, 40 + ci as u64, STEPS, dir, Mode::Eval))
            .collect()
    });
    println!("{text}");
}

/// Evaluation mode on its own: the BatchNorm CNN and the BatchNorm U-Net, trained longer
/// ([`EVAL_STEPS`] steps each), then evaluated with their running statistics. The script
/// checks the eval logits and loss against JAX's eval forward of the exported weights and
/// running statistics, and the running statistics against PyTorch's rule (from 0 and 1,
/// momentum 0.1, unbiased variance) recomputed from the training batches.
#[test]
fn batchnorm_eval_mode_matches_jax() {
    let unet = case_with(|s| s.norm == ChannelNorm::Batchnorm, "a batchnorm U-Net");
    let text = jax_passes(|dir| {
        vec![
            run_cnn_case(&cnn_batchnorm(), 70, EVAL_STEPS, dir, Mode::Eval),
            run_case(&unet, 71, EVAL_STEPS, dir, None),
        ]
    });
    for needle in ["eval logits", "torch rule", "running statistics"] {
        assert!(text.contains(needle), "no `{needle}` row:\n{text}");
    }
    println!("{text}");
}

/// The eval check can fail: held-out logits computed with batch statistics (train mode)
/// instead of the running ones are reported as a mismatch.
#[test]
fn an_eval_pass_with_batch_statistics_is_caught() {
    let text = jax_catches(|dir| run_cnn_case(&cnn_batchnorm(), 72, STEPS, dir, Mode::Train));
    assert!(text.contains("eval logits"), "{text}");
}
