//! Parity against an independent implementation: for a matrix of small f64 MLPs, train K steps
//! with the library (forward, loss, explicit backward, optimizer), write the initial weights, the
//! batches, the per-step losses, the first step's gradients and the final weights to one
//! safetensors file per case, and have `tests/parity/mlp_parity.py` redo the same training in JAX
//! (autodiff, and the `torch.optim` update rules written from PyTorch's documentation).
//!
//! Needs a Python with numpy, jax and safetensors: `$CLOUDCHAMBER_PYTHON`, else `.venv/bin/python`
//! in the crate root, else `python3`. Without them the test fails (it never skips silently):
//! `bash scripts/test` sets up `.venv`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use cloudchamber::engine::Rng;
use cloudchamber::model::Mlp;
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::loss;
use cloudchamber::nn::norm::{Mode, Norm, NormPosition};
use cloudchamber::nn::parametrization::Parametrization;
use cloudchamber::optim::{lr_at, Hyper, OptimState, Optimizer, Schedule};
use cloudchamber::spec::{ActParamSpec, BiasedActSpec, Granularity, LossKind, MlpSpec, Trainable};

mod common;
use common::parity::{check_with_jax, save, Tensor};

const IN: usize = 5;
const OUT: usize = 3;
const ROWS: usize = 12;
const STEPS: usize = 3;

struct Case {
    name: &'static str,
    spec: MlpSpec,
    loss: LossKind,
    optimizer: Optimizer,
    lr: f64,
    schedule: Schedule,
    /// `None`: torch's default for the optimizer (0.01 for AdamW, 0 otherwise).
    weight_decay: Option<f64>,
}

impl Case {
    fn new(
        name: &'static str,
        activation: Activation,
        loss: LossKind,
        optimizer: Optimizer,
        lr: f64,
    ) -> Self {
        Case {
            name,
            spec: MlpSpec {
                width: 7,
                depth: 2,
                activation,
                ..MlpSpec::default()
            },
            loss,
            optimizer,
            lr,
            schedule: Schedule::Constant,
            weight_decay: None,
        }
    }
    fn norm(mut self, norm: Norm, position: NormPosition) -> Self {
        self.spec.norm = norm;
        self.spec.norm_position = position;
        self
    }
    fn act(mut self, act: BiasedActSpec) -> Self {
        self.spec.act = act;
        self
    }
    fn wd(mut self, wd: f64) -> Self {
        self.weight_decay = Some(wd);
        self
    }
    fn schedule(mut self, s: Schedule) -> Self {
        self.schedule = s;
        self
    }
    fn no_bias(mut self) -> Self {
        self.spec.bias = false;
        self
    }
    /// A width parametrization at `base_width` (the cases' width is 7).
    fn param(mut self, p: Parametrization, base_width: usize) -> Self {
        self.spec.parametrization = p;
        self.spec.base_width = base_width;
        self
    }
}

fn learned(init: f64, per: Granularity) -> ActParamSpec {
    ActParamSpec {
        init,
        mode: Trainable::Learned,
        per,
    }
}

fn cases() -> Vec<Case> {
    use Activation as A;
    use LossKind::{CrossEntropy as Ce, Mse};
    use NormPosition::{AfterActivation as After, BeforeActivation as Before};
    use Optimizer as O;
    use Parametrization as P;
    vec![
        Case::new("tanh mse adam", A::Tanh, Mse, O::Adam, 1e-2),
        // Width parametrizations away from their base width: μP's readout multiplier and every
        // per-tensor learning-rate factor (and weight decay ÷ it), under Adam-like and SGD-like
        // optimizers.
        Case::new("mup gelu ce adamw wd", A::Gelu, Ce, O::Adamw, 1e-2)
            .param(P::Mup, 2)
            .wd(0.1),
        Case::new("mup tanh mse sgd wd", A::Tanh, Mse, O::Sgd, 0.05)
            .param(P::Mup, 3)
            .wd(1e-2),
        Case::new(
            "mup silu mse momentum layernorm",
            A::Silu,
            Mse,
            O::Momentum,
            0.05,
        )
        .param(P::Mup, 14)
        .norm(Norm::Layernorm, Before),
        Case::new("ntk relu ce adam", A::Relu, Ce, O::Adam, 1e-2).param(P::Ntk, 2),
        // Mean field: the hidden layer's 1/√m multiplier and its own learning-rate factors.
        Case::new("mean_field gelu ce adam wd", A::Gelu, Ce, O::Adamw, 1e-2)
            .param(P::MeanField, 2)
            .wd(0.1),
        Case::new("mean_field tanh mse sgd", A::Tanh, Mse, O::Sgd, 0.05).param(P::MeanField, 3),
        Case::new("ntk tanh mse sgd", A::Tanh, Mse, O::Sgd, 0.1).param(P::Ntk, 3),
        Case::new(
            "sigmoid biased a,b,c per-layer mse adam",
            A::Sigmoid,
            Mse,
            O::Adam,
            1e-2,
        )
        .act(BiasedActSpec {
            a: learned(0.9, Granularity::Layer),
            b: learned(-0.2, Granularity::Layer),
            c: learned(0.1, Granularity::Layer),
        }),
        Case::new("relu ce sgd", A::Relu, Ce, O::Sgd, 0.1),
        Case::new("gelu mse momentum wd", A::Gelu, Mse, O::Momentum, 0.05).wd(1e-2),
        Case::new(
            "silu ce nesterov warmup-linear",
            A::Silu,
            Ce,
            O::Nesterov,
            0.05,
        )
        .schedule(Schedule::WarmupLinear),
        Case::new(
            "tanh biased abc per-neuron adamw",
            A::Tanh,
            Ce,
            O::Adamw,
            1e-2,
        )
        .act(BiasedActSpec {
            a: learned(1.2, Granularity::Neuron),
            b: learned(0.1, Granularity::Neuron),
            c: learned(-0.05, Granularity::Neuron),
        }),
        Case::new(
            "layernorm before leaky_relu adam",
            A::LeakyRelu,
            Mse,
            O::Adam,
            1e-2,
        )
        .norm(Norm::Layernorm, Before),
        Case::new(
            "rmsnorm after sigmoid momentum",
            A::Sigmoid,
            Ce,
            O::Momentum,
            0.1,
        )
        .norm(Norm::Rmsnorm, After),
        // SGD-family here: a Linear bias right before a BatchNorm has a zero gradient up to
        // rounding, and Adam would amplify that noise into ±lr steps on both sides.
        Case::new(
            "batchnorm before elu nesterov",
            A::Elu,
            Ce,
            O::Nesterov,
            0.05,
        )
        .norm(Norm::Batchnorm, Before),
        Case::new("batchnorm after gelu adam", A::Gelu, Mse, O::Adam, 1e-2)
            .norm(Norm::Batchnorm, After),
        Case::new(
            "dyt after gelu_tanh adamw",
            A::GeluTanh,
            Mse,
            O::Adamw,
            1e-2,
        )
        .norm(Norm::Dyt, After),
        Case::new("dyt before tanh sgd", A::Tanh, Ce, O::Sgd, 0.1).norm(Norm::Dyt, Before),
        Case::new("selu ce adam l2", A::Selu, Ce, O::Adam, 1e-2).wd(1e-2),
        Case::new(
            "softplus biased b per-layer sgd wd",
            A::Softplus,
            Mse,
            O::Sgd,
            0.05,
        )
        .act(BiasedActSpec {
            b: learned(0.3, Granularity::Layer),
            c: ActParamSpec {
                init: -0.2,
                mode: Trainable::Fixed,
                per: Granularity::Layer,
            },
            ..BiasedActSpec::default()
        })
        .wd(1e-2),
        Case::new(
            "identity no-bias mse sgd warmup-cosine",
            A::Identity,
            Mse,
            O::Sgd,
            0.1,
        )
        .no_bias()
        .schedule(Schedule::WarmupCosine),
        // c per neuron: a per-layer c would be a constant row shift, which the LayerNorm after it
        // removes (zero gradient up to rounding, which AdamW would amplify into ±lr steps).
        Case::new(
            "relu biased a per-layer c per-neuron layernorm after adamw wd",
            A::Relu,
            Ce,
            O::Adamw,
            1e-2,
        )
        .act(BiasedActSpec {
            a: learned(0.9, Granularity::Layer),
            c: learned(0.1, Granularity::Neuron),
            ..BiasedActSpec::default()
        })
        .norm(Norm::Layernorm, After)
        .wd(0.1),
    ]
}

fn opt_name(o: Optimizer) -> &'static str {
    match o {
        Optimizer::Sgd => "sgd",
        Optimizer::Momentum => "momentum",
        Optimizer::Nesterov => "nesterov",
        Optimizer::Adam => "adam",
        Optimizer::Adamw => "adamw",
    }
}

/// Trains one case for [`STEPS`] steps and writes its case file. `claimed_wd` replaces the weight
/// decay written to the description (only to show that a wrong description is caught).
fn run_case(case: &Case, seed: u64, dir: &Path, claimed_wd: Option<f64>) -> PathBuf {
    let mut m = Mlp::<f64>::new(&case.spec, IN, OUT, ROWS, &mut Rng::new(seed));
    let mut tensors: Vec<Tensor> = m
        .params
        .iter()
        .map(|p| (p.name.clone(), p.shape.clone(), p.value.clone()))
        .collect();

    let hyper = Hyper {
        optimizer: case.optimizer,
        momentum: 0.9,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: case
            .weight_decay
            .unwrap_or(case.optimizer.default_weight_decay()),
    };
    let mut opt = OptimState::new(&m.params, case.optimizer);
    let mut data = Rng::new(seed ^ 0x5eed);
    let mut losses = Vec::new();
    let mut lrs = Vec::new();
    for k in 0..STEPS {
        let x: Vec<f64> = (0..ROWS * IN).map(|_| data.normal()).collect();
        let (y, y_shape) = match case.loss {
            LossKind::Mse => (
                (0..ROWS * OUT).map(|_| data.normal()).collect::<Vec<_>>(),
                vec![ROWS, OUT],
            ),
            LossKind::CrossEntropy => (
                (0..ROWS).map(|_| data.below(OUT as u64) as f64).collect(),
                vec![ROWS],
            ),
        };
        let lr = lr_at(case.schedule, case.lr, 2, 0.1, k as u64, STEPS as u64);
        m.forward(&x, ROWS, Mode::Train);
        let l = loss::loss(
            case.loss,
            &m.output[..ROWS * OUT],
            &y,
            ROWS,
            OUT,
            Some(&mut m.d_output[..ROWS * OUT]),
        );
        m.backward(&x);
        if k == 0 {
            tensors.extend(m.params.iter().filter(|p| p.trainable).map(|p| {
                (
                    format!("rust.grad.{}", p.name),
                    p.shape.clone(),
                    p.grad.clone(),
                )
            }));
        }
        opt.step(&mut m.params, &hyper, lr);
        tensors.push((format!("batch.{k}.x"), vec![ROWS, IN], x));
        tensors.push((format!("batch.{k}.y"), y_shape, y));
        losses.push(l.loss);
        lrs.push(lr);
    }
    tensors.push(("rust.loss".into(), vec![STEPS], losses));
    tensors.extend(m.params.iter().map(|p| {
        (
            format!("rust.final.{}", p.name),
            p.shape.clone(),
            p.value.clone(),
        )
    }));

    let meta = serde_json::json!({
        "name": case.name,
        "depth": case.spec.depth,
        "activation": case.spec.activation.name(),
        "norm": case.spec.norm.name(),
        "norm_position": match case.spec.norm_position {
            NormPosition::BeforeActivation => "before_activation",
            NormPosition::AfterActivation => "after_activation",
        },
        "norm_eps": case.spec.norm_eps,
        "parametrization": case.spec.parametrization.name(),
        "width": case.spec.width,
        "base_width": case.spec.base_width,
        "loss": match case.loss { LossKind::Mse => "mse", LossKind::CrossEntropy => "cross_entropy" },
        "optimizer": {
            "kind": opt_name(case.optimizer),
            "momentum": hyper.momentum,
            "beta1": hyper.beta1,
            "beta2": hyper.beta2,
            "eps": hyper.eps,
            "weight_decay": claimed_wd.unwrap_or(hyper.weight_decay),
        },
        "steps": STEPS,
        "lr": lrs,
        "trainable": m.params.iter().filter(|p| p.trainable).map(|p| p.name.clone()).collect::<Vec<_>>(),
        "decay": m.params.iter().filter(|p| p.decay).map(|p| p.name.clone()).collect::<Vec<_>>(),
    });
    let file = dir.join(format!("case{seed:02}.safetensors"));
    save(
        &file,
        &tensors,
        HashMap::from([("case".to_string(), meta.to_string())]),
    );
    file
}

#[test]
fn mlp_training_matches_jax() {
    let dir = tempfile::tempdir().unwrap();
    let cases = cases();
    let files: Vec<PathBuf> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| run_case(c, i as u64 + 1, dir.path(), None))
        .collect();
    let (status, text) = check_with_jax("mlp_parity.py", &files);
    assert_eq!(status, Some(0), "JAX parity check failed:\n{text}");
    println!("{text}");
}

/// The check can fail: a description that differs from what Rust did (weight decay 0.01 applied,
/// 0 declared) is reported as a mismatch.
#[test]
fn a_wrong_description_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let case = Case::new(
        "gelu mse momentum wd (declared without weight decay)",
        Activation::Gelu,
        LossKind::Mse,
        Optimizer::Momentum,
        0.05,
    )
    .wd(1e-2);
    let file = run_case(&case, 99, dir.path(), Some(0.0));
    let (status, text) = check_with_jax("mlp_parity.py", &[file]);
    assert_eq!(status, Some(1), "expected a parity failure:\n{text}");
    assert!(
        text.contains("MISMATCH") && text.contains("PARITY FAILURE"),
        "{text}"
    );
}
