//! Parity of the GPT against an independent implementation: for a covering set of tiny f64
//! GPTs (every norm in both placements, learned and rotary positions, tied and untied heads, a
//! few activations and the biased form, and the continuous-input variant that reads in-context
//! regression prompts), train K steps with the library (forward,
//! cross-entropy with ignored targets, explicit backward, AdamW with weight decay), write the
//! initial weights, the batches, the per-step losses, the first step's gradients and the final
//! weights to one safetensors file per case, and have `tests/parity/gpt_parity.py` redo the same
//! training in JAX (autodiff, and `torch.optim.AdamW` written from PyTorch's documentation).
//!
//! Needs a Python with numpy, jax and safetensors: `$CLOUDCHAMBER_PYTHON`, else `.venv/bin/python`
//! in the crate root, else `python3`. Without them the test fails (it never skips silently):
//! `bash scripts/test` sets up `.venv`. `CLOUDCHAMBER_PARITY_DIR=dir` keeps the case files there
//! (to rerun the script on them by hand).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cloudchamber::engine::Rng;
use cloudchamber::model::gpt::{
    self, Gpt, GptInit, GptSpec, Placement, Positions, Tying, IGNORE, ROPE_BASE,
};
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::norm::Norm;
use cloudchamber::nn::parametrization::Parametrization;
use cloudchamber::optim::{Hyper, OptimState, Optimizer};
use cloudchamber::spec::{ActParamSpec, BiasedActSpec, Granularity, Trainable};

mod common;
use common::parity::{check_with_jax, save, Tensor};

const VOCAB: usize = 7;
const SEQ: usize = 5;
const BATCH: usize = 3;
const STEPS: usize = 3;
const NORM_EPS: f64 = 1e-5;
const LR: f64 = 1e-2;
const WEIGHT_DECAY: f64 = 0.1;

fn spec(
    norm: Norm,
    placement: Placement,
    positions: Positions,
    tying: Tying,
    activation: Activation,
) -> GptSpec {
    GptSpec {
        n_layer: 2,
        d_model: 8,
        n_head: 2,
        d_mlp: Some(12),
        activation,
        norm,
        placement,
        positions,
        tying,
        // Larger than GPT-2's 0.02 so that attention is far from uniform and every path matters.
        init_std: 0.5,
        ..GptSpec::default()
    }
}

/// Each norm in each placement; positions and tying alternate so both values of each occur with
/// both placements.
fn cases() -> Vec<GptSpec> {
    use Activation as A;
    use Norm::{Dyt, Layernorm as Ln, None as NoNorm, Rmsnorm as Rms};
    use Placement::{Post, Pre};
    use Positions::{Learned, Rotary};
    use Tying::{Tied, Untied};
    let learned = |init: f64, per: Granularity| ActParamSpec {
        init,
        mode: Trainable::Learned,
        per,
    };
    vec![
        spec(Ln, Pre, Learned, Untied, A::Gelu),
        spec(Ln, Post, Rotary, Tied, A::Gelu),
        spec(Rms, Pre, Rotary, Untied, A::Silu),
        spec(Rms, Post, Learned, Tied, A::GeluTanh),
        spec(Dyt, Pre, Learned, Tied, A::Gelu),
        spec(Dyt, Post, Rotary, Untied, A::Tanh),
        spec(NoNorm, Pre, Rotary, Tied, A::Relu),
        spec(NoNorm, Post, Learned, Untied, A::Gelu),
        GptSpec {
            act: BiasedActSpec {
                a: learned(1.2, Granularity::Neuron),
                b: learned(0.3, Granularity::Layer),
                c: learned(-0.1, Granularity::Neuron),
            },
            ..spec(Ln, Pre, Rotary, Tied, A::Gelu)
        },
        GptSpec {
            init: GptInit::Pytorch,
            ..spec(Rms, Pre, Learned, Untied, A::Softplus)
        },
        // Width parametrizations away from their base width: μP's 1/d attention scale, 1/m
        // head multiplier and per-tensor learning rates (weight decay ÷ them), with and without
        // a zero-initialized head and queries; NTK's learning rates.
        GptSpec {
            parametrization: Parametrization::Mup,
            base_d_model: 4,
            ..spec(Ln, Pre, Learned, Untied, A::Gelu)
        },
        GptSpec {
            parametrization: Parametrization::Mup,
            base_d_model: 16,
            zero_query: true,
            ..spec(Rms, Pre, Rotary, Tied, A::Silu)
        },
        GptSpec {
            parametrization: Parametrization::Mup,
            base_d_model: 2,
            zero_readout: true,
            init: GptInit::Pytorch,
            ..spec(Ln, Post, Rotary, Untied, A::Gelu)
        },
        GptSpec {
            parametrization: Parametrization::Ntk,
            base_d_model: 4,
            ..spec(Ln, Pre, Learned, Untied, A::Gelu)
        },
        // Mean field: the blocks' matrices read through 1/√m, with their own Adam rates.
        GptSpec {
            parametrization: Parametrization::MeanField,
            base_d_model: 2,
            ..spec(Rms, Pre, Rotary, Untied, A::Gelu)
        },
    ]
}

/// The continuous-input variant (in-context regression): both placements, both kinds of
/// positions.
fn prompt_cases() -> Vec<GptSpec> {
    use Norm::{Layernorm as Ln, Rmsnorm as Rms};
    vec![
        spec(
            Ln,
            Placement::Pre,
            Positions::Learned,
            Tying::Untied,
            Activation::Gelu,
        ),
        spec(
            Rms,
            Placement::Post,
            Positions::Rotary,
            Tying::Untied,
            Activation::Relu,
        ),
        GptSpec {
            parametrization: Parametrization::Mup,
            base_d_model: 4,
            ..spec(
                Ln,
                Placement::Pre,
                Positions::Rotary,
                Tying::Untied,
                Activation::Gelu,
            )
        },
    ]
}

/// What the description claims differently from what Rust did (only to show that the check can
/// fail).
#[derive(Clone, Copy)]
enum Lie {
    None,
    /// The common "no decay on biases" rule, while Rust decays them.
    NoDecayOnBiases,
    Placement(Placement),
}

fn name(s: &GptSpec) -> String {
    let placement = placement_name(s.placement);
    let positions = positions_name(s.positions);
    let tying = tying_name(s.tying);
    let mut n = format!(
        "{} {placement}-norm, {positions}, {tying}, {}",
        s.norm.name(),
        s.activation.name()
    );
    if s.parametrization != Parametrization::Sp {
        n += &format!(" {} (base {})", s.parametrization.name(), s.base_d_model);
    }
    if !s.act.is_plain() {
        n += " biased a,b,c";
    }
    if s.init == GptInit::Pytorch {
        n += ", pytorch init";
    }
    n
}

fn placement_name(p: Placement) -> &'static str {
    match p {
        Placement::Pre => "pre",
        Placement::Post => "post",
    }
}

fn positions_name(p: Positions) -> &'static str {
    match p {
        Positions::Learned => "learned",
        Positions::Rotary => "rotary",
    }
}

fn tying_name(t: Tying) -> &'static str {
    match t {
        Tying::Untied => "untied",
        Tying::Tied => "tied",
    }
}

/// In-context regression prompts of this many points in this many dimensions.
const POINTS: usize = 4;
const DIM: usize = 3;

/// What a case's model reads.
#[derive(Clone, Copy, PartialEq)]
enum Reads {
    Tokens,
    /// Prompts of [`POINTS`] points in [`DIM`] dimensions (the continuous-input variant).
    Prompts,
}

/// Trains one case for [`STEPS`] steps and writes its case file.
fn run_case(spec: &GptSpec, seed: u64, dir: &Path, lie: Lie) -> PathBuf {
    run_case_reading(spec, seed, dir, lie, Reads::Tokens)
}

fn run_case_reading(spec: &GptSpec, seed: u64, dir: &Path, lie: Lie, reads: Reads) -> PathBuf {
    let mut rng = Rng::new(seed);
    let mut m = match reads {
        Reads::Tokens => Gpt::<f64>::new(spec, NORM_EPS, VOCAB, SEQ, BATCH, &mut rng),
        Reads::Prompts => Gpt::<f64>::new_prompts(spec, NORM_EPS, DIM, POINTS, BATCH, &mut rng),
    };
    // Every parameter nudged off its initial value: norm weights of exactly 1 and biases of
    // exactly 0 would hide mistakes (a bias wrongly left out of weight decay, say).
    let mut nudge = Rng::new(seed ^ 0x9d9e);
    for p in m.params.iter_mut().filter(|p| p.trainable) {
        for v in p.value.iter_mut() {
            *v += 0.2 * nudge.normal();
        }
    }
    let mut tensors: Vec<Tensor> = m
        .params
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
    let mut opt = OptimState::new(&m.params, Optimizer::Adamw);
    let mut data = Rng::new(seed ^ 0x5eed);
    let mut losses = Vec::new();
    let n = BATCH * SEQ;
    let as_f64 = |ids: &[usize]| -> Vec<f64> {
        ids.iter()
            .map(|&t| if t == IGNORE { -1.0 } else { t as f64 })
            .collect()
    };
    for k in 0..STEPS {
        if reads == Reads::Prompts {
            let x: Vec<f64> = (0..BATCH * POINTS * DIM).map(|_| data.normal()).collect();
            let y: Vec<f64> = (0..BATCH * POINTS).map(|_| data.normal()).collect();
            m.forward_prompts(&x, &y, BATCH, POINTS);
            let rows = BATCH * 2 * POINTS;
            let l = gpt::prompt_mse(&m.logits[..rows], &y, Some(&mut m.d_logits[..rows]));
            m.backward_prompts();
            if k == 0 {
                tensors.extend(m.params.iter().filter(|p| p.trainable).map(|p| {
                    let name = format!("rust.grad.{}", p.name);
                    (name, p.shape.clone(), p.grad.clone())
                }));
            }
            opt.step(&mut m.params, &hyper, LR);
            tensors.push((format!("batch.{k}.x"), vec![BATCH, POINTS, DIM], x));
            tensors.push((format!("batch.{k}.y"), vec![BATCH, POINTS], y));
            losses.push(l.loss);
            continue;
        }
        let tokens: Vec<usize> = (0..n).map(|_| data.below(VOCAB as u64) as usize).collect();
        // About one target in four is not trained on (a prompt position).
        let targets: Vec<usize> = (0..n)
            .map(|_| match data.below(4 * VOCAB as u64) as usize {
                t if t < VOCAB => IGNORE,
                t => t % VOCAB,
            })
            .collect();
        m.forward(&tokens, BATCH, SEQ);
        let l = gpt::cross_entropy(&m.logits, &targets, n, VOCAB, Some(&mut m.d_logits));
        assert!(l.counted > 0 && l.loss.is_finite());
        m.backward(&tokens);
        if k == 0 {
            tensors.extend(m.params.iter().filter(|p| p.trainable).map(|p| {
                (
                    format!("rust.grad.{}", p.name),
                    p.shape.clone(),
                    p.grad.clone(),
                )
            }));
        }
        opt.step(&mut m.params, &hyper, LR);
        tensors.push((
            format!("batch.{k}.tokens"),
            vec![BATCH, SEQ],
            as_f64(&tokens),
        ));
        tensors.push((
            format!("batch.{k}.targets"),
            vec![BATCH, SEQ],
            as_f64(&targets),
        ));
        losses.push(l.loss);
    }
    tensors.push(("rust.loss".into(), vec![STEPS], losses));
    tensors.extend(m.params.iter().map(|p| {
        (
            format!("rust.final.{}", p.name),
            p.shape.clone(),
            p.value.clone(),
        )
    }));

    let decay = m
        .params
        .iter()
        .filter(|p| p.decay)
        .filter(|p| !(matches!(lie, Lie::NoDecayOnBiases) && p.name.ends_with(".bias")))
        .map(|p| p.name.clone())
        .collect::<Vec<_>>();
    let placement = match lie {
        Lie::Placement(p) => p,
        _ => spec.placement,
    };
    let claim = match lie {
        Lie::None => String::new(),
        Lie::NoDecayOnBiases => " (declared: no weight decay on biases)".into(),
        Lie::Placement(p) => format!(" (declared: {}-norm)", placement_name(p)),
    };
    let (input, vocab, context, what) = match reads {
        Reads::Tokens => ("tokens", VOCAB, SEQ, ""),
        Reads::Prompts => ("prompts", 1, 2 * POINTS, ", prompts"),
    };
    let meta = serde_json::json!({
        "name": name(spec) + what + &claim,
        "input": input,
        "dim": DIM,
        "points": POINTS,
        "n_layer": spec.n_layer,
        "d_model": spec.d_model,
        "n_head": spec.n_head,
        "d_mlp": spec.mlp_width(),
        "vocab": vocab,
        "context": context,
        "activation": spec.activation.name(),
        "norm": spec.norm.name(),
        "norm_eps": NORM_EPS,
        "placement": placement_name(placement),
        "positions": positions_name(spec.positions),
        "rope_base": ROPE_BASE,
        "tying": tying_name(spec.tying),
        "parametrization": spec.parametrization.name(),
        "base_d_model": spec.base_d_model,
        "optimizer": {
            "kind": "adamw",
            "beta1": hyper.beta1,
            "beta2": hyper.beta2,
            "eps": hyper.eps,
            "weight_decay": hyper.weight_decay,
        },
        "steps": STEPS,
        "lr": vec![LR; STEPS],
        "trainable": m.params.iter().filter(|p| p.trainable).map(|p| p.name.clone()).collect::<Vec<_>>(),
        "decay": decay,
    });
    let file = dir.join(format!("gpt{seed:02}.safetensors"));
    save(
        &file,
        &tensors,
        HashMap::from([("case".to_string(), meta.to_string())]),
    );
    file
}

#[test]
fn gpt_training_matches_jax() {
    let tmp = tempfile::tempdir().unwrap();
    let keep = std::env::var_os("CLOUDCHAMBER_PARITY_DIR").map(PathBuf::from);
    let dir = keep.as_deref().unwrap_or(tmp.path());
    let files: Vec<PathBuf> = cases()
        .iter()
        .enumerate()
        .map(|(i, s)| run_case(s, i as u64 + 1, dir, Lie::None))
        .chain(
            prompt_cases()
                .iter()
                .enumerate()
                .map(|(i, s)| run_case_reading(s, 50 + i as u64, dir, Lie::None, Reads::Prompts)),
        )
        .collect();
    let (status, text) = check_with_jax("gpt_parity.py", &files);
    assert_eq!(status, Some(0), "JAX parity check failed:\n{text}");
    println!("{text}");
}

/// The check can fail: descriptions that differ from what Rust did (biases declared free of
/// weight decay; a pre-norm model declared post-norm) are reported as mismatches.
#[test]
fn a_wrong_description_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let s = spec(
        Norm::Layernorm,
        Placement::Pre,
        Positions::Learned,
        Tying::Untied,
        Activation::Gelu,
    );
    let files: Vec<PathBuf> = [Lie::NoDecayOnBiases, Lie::Placement(Placement::Post)]
        .into_iter()
        .enumerate()
        .map(|(i, lie)| run_case(&s, 90 + i as u64, dir.path(), lie))
        .collect();
    let (status, text) = check_with_jax("gpt_parity.py", &files);
    assert_eq!(status, Some(1), "expected a parity failure:\n{text}");
    assert!(text.contains("PARITY FAILURE: 2 of 2 cases"), "{text}");
    println!("{text}");
}
