//! Finite-difference gradient checks (f64) generated for every activation, every normalization in
//! both placements, and every learnable-parameter variant of the biased activation `a·f(x−b)+c`.
//! Each case compares the explicit backward pass with central differences on every parameter
//! element of a small MLP.

use cloudchamber::engine::Rng;
use cloudchamber::model::Mlp;
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::loss;
use cloudchamber::nn::norm::{Mode, Norm, NormPosition};
use cloudchamber::nn::parametrization::Parametrization;
use cloudchamber::spec::{ActParamSpec, BiasedActSpec, Granularity, LossKind, MlpSpec, Trainable};

const IN: usize = 5;
const OUT: usize = 3;
const ROWS: usize = 6;

struct Case {
    label: String,
    spec: MlpSpec,
    loss: LossKind,
}

fn data(loss: LossKind) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(42);
    let x: Vec<f64> = (0..ROWS * IN).map(|_| rng.normal()).collect();
    let y: Vec<f64> = match loss {
        LossKind::Mse => (0..ROWS * OUT).map(|_| rng.normal()).collect(),
        LossKind::CrossEntropy => (0..ROWS).map(|_| rng.below(OUT as u64) as f64).collect(),
    };
    (x, y)
}

fn loss_value(m: &mut Mlp<f64>, x: &[f64], y: &[f64], kind: LossKind) -> f64 {
    m.forward(x, ROWS, Mode::Train);
    loss::loss(kind, &m.output[..ROWS * OUT], y, ROWS, OUT, None).loss
}

/// Returns the worst relative error over all parameter elements.
fn check(case: &Case) -> Result<f64, String> {
    let mut m = Mlp::<f64>::new(&case.spec, IN, OUT, ROWS, &mut Rng::new(7));
    // Nudge every parameter off its special initial value (e.g. norm weights of exactly 1, a
    // shift of exactly 0) so that no gradient is zero by symmetry.
    let mut rng = Rng::new(3);
    for p in m.params.iter_mut().filter(|p| p.trainable) {
        for v in p.value.iter_mut() {
            *v += 0.1 * rng.normal();
        }
    }
    let (x, y) = data(case.loss);
    m.forward(&x, ROWS, Mode::Train);
    let l = loss::loss(
        case.loss,
        &m.output[..ROWS * OUT],
        &y,
        ROWS,
        OUT,
        Some(&mut m.d_output[..ROWS * OUT]),
    );
    assert!(l.loss.is_finite());
    m.backward(&x);
    let analytic: Vec<Vec<f64>> = m.params.iter().map(|p| p.grad.clone()).collect();
    let h = 1e-5;
    let mut worst: f64 = 0.0;
    for i in 0..m.params.len() {
        if !m.params[i].trainable {
            continue;
        }
        for j in 0..m.params[i].value.len() {
            let orig = m.params[i].value[j];
            m.params[i].value[j] = orig + h;
            let lp = loss_value(&mut m, &x, &y, case.loss);
            m.params[i].value[j] = orig - h;
            let lm = loss_value(&mut m, &x, &y, case.loss);
            m.params[i].value[j] = orig;
            let fd = (lp - lm) / (2.0 * h);
            let an = analytic[i][j];
            let err = (fd - an).abs() / (1e-4 + fd.abs().max(an.abs()));
            worst = worst.max(err);
            if err > 1e-5 {
                return Err(format!(
                    "{}: {}[{j}] analytic {an:.10e} vs finite difference {fd:.10e}",
                    case.label, m.params[i].name
                ));
            }
        }
    }
    Ok(worst)
}

fn base() -> MlpSpec {
    MlpSpec {
        width: 4,
        depth: 2,
        ..MlpSpec::default()
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
    let mut cases = Vec::new();
    // Every activation, plain, with both losses.
    for act in Activation::ALL {
        for loss in [LossKind::Mse, LossKind::CrossEntropy] {
            cases.push(Case {
                label: format!("{} {loss:?}", act.name()),
                spec: MlpSpec {
                    activation: act,
                    ..base()
                },
                loss,
            });
        }
    }
    // Every activation in the biased form, each of a, b, c learned alone and all together,
    // per layer and per neuron.
    for act in Activation::ALL {
        for per in [Granularity::Layer, Granularity::Neuron] {
            let variants: [(&str, BiasedActSpec); 4] = [
                (
                    "a",
                    BiasedActSpec {
                        a: learned(1.3, per),
                        ..BiasedActSpec::default()
                    },
                ),
                (
                    "b",
                    BiasedActSpec {
                        b: learned(0.2, per),
                        ..BiasedActSpec::default()
                    },
                ),
                (
                    "c",
                    BiasedActSpec {
                        c: learned(-0.1, per),
                        ..BiasedActSpec::default()
                    },
                ),
                (
                    "abc",
                    BiasedActSpec {
                        a: learned(0.8, per),
                        b: learned(-0.3, per),
                        c: learned(0.4, per),
                    },
                ),
            ];
            for (which, act_spec) in variants {
                cases.push(Case {
                    label: format!("{} learned {which} per {per:?}", act.name()),
                    spec: MlpSpec {
                        activation: act,
                        act: act_spec,
                        ..base()
                    },
                    loss: LossKind::Mse,
                });
            }
        }
        // Fixed (not learned) non-trivial a, b, c still shape the input gradient.
        let fixed = BiasedActSpec {
            a: ActParamSpec {
                init: 1.5,
                mode: Trainable::Fixed,
                per: Granularity::Layer,
            },
            b: ActParamSpec {
                init: 0.3,
                mode: Trainable::Fixed,
                per: Granularity::Neuron,
            },
            c: ActParamSpec {
                init: -0.2,
                mode: Trainable::Fixed,
                per: Granularity::Layer,
            },
        };
        cases.push(Case {
            label: format!("{} fixed abc", act.name()),
            spec: MlpSpec {
                activation: act,
                act: fixed,
                ..base()
            },
            loss: LossKind::Mse,
        });
    }
    // Every width parametrization away from its base width (m = 4 and m = 1/2: μP's readout
    // multiplier and rescaled inits change the forward and backward passes), with both losses
    // and with a norm.
    for par in [
        Parametrization::Sp,
        Parametrization::Ntk,
        Parametrization::Mup,
        Parametrization::MeanField,
    ] {
        for (base_width, loss) in [(1, LossKind::Mse), (8, LossKind::CrossEntropy)] {
            cases.push(Case {
                label: format!("{} base width {base_width} {loss:?}", par.name()),
                spec: MlpSpec {
                    parametrization: par,
                    base_width,
                    activation: Activation::Gelu,
                    ..base()
                },
                loss,
            });
        }
        cases.push(Case {
            label: format!("{} layernorm", par.name()),
            spec: MlpSpec {
                parametrization: par,
                base_width: 2,
                norm: Norm::Layernorm,
                ..base()
            },
            loss: LossKind::Mse,
        });
    }
    // Every normalization in both placements, with a smooth and a kinked activation, and
    // together with a learned biased activation.
    for norm in [Norm::Layernorm, Norm::Rmsnorm, Norm::Batchnorm, Norm::Dyt] {
        for pos in [
            NormPosition::BeforeActivation,
            NormPosition::AfterActivation,
        ] {
            for act in [Activation::Tanh, Activation::Relu, Activation::Gelu] {
                cases.push(Case {
                    label: format!("{} {pos:?} {}", norm.name(), act.name()),
                    spec: MlpSpec {
                        activation: act,
                        norm,
                        norm_position: pos,
                        ..base()
                    },
                    loss: LossKind::CrossEntropy,
                });
            }
            cases.push(Case {
                label: format!("{} {pos:?} biased silu", norm.name()),
                spec: MlpSpec {
                    activation: Activation::Silu,
                    norm,
                    norm_position: pos,
                    act: BiasedActSpec {
                        a: learned(1.1, Granularity::Neuron),
                        b: learned(0.1, Granularity::Layer),
                        c: learned(0.05, Granularity::Neuron),
                    },
                    ..base()
                },
                loss: LossKind::Mse,
            });
        }
    }
    // No biases; a single hidden layer; no hidden layer at all (linear model).
    cases.push(Case {
        label: "no bias".into(),
        spec: MlpSpec {
            bias: false,
            ..base()
        },
        loss: LossKind::Mse,
    });
    cases.push(Case {
        label: "depth 1".into(),
        spec: MlpSpec { depth: 1, ..base() },
        loss: LossKind::CrossEntropy,
    });
    cases.push(Case {
        label: "depth 0".into(),
        spec: MlpSpec { depth: 0, ..base() },
        loss: LossKind::Mse,
    });
    // MSE on class targets (one-hot).
    cases.push(Case {
        label: "mse on classes".into(),
        spec: base(),
        loss: LossKind::Mse,
    });
    cases
}

#[test]
fn every_variant_matches_finite_differences() {
    let cases = cases();
    assert!(
        cases.len() > 120,
        "expected the full matrix of variants, got {}",
        cases.len()
    );
    let mut failures = Vec::new();
    let mut worst: f64 = 0.0;
    for case in &cases {
        match check(case) {
            Ok(w) => worst = worst.max(w),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    eprintln!(
        "{} variants checked, worst relative error {worst:.2e}",
        cases.len()
    );
}

/// The check itself can fail: a deliberately wrong gradient is caught.
#[test]
fn a_wrong_gradient_is_caught() {
    let case = Case {
        label: "tanh".into(),
        spec: base(),
        loss: LossKind::Mse,
    };
    let mut m = Mlp::<f64>::new(&case.spec, IN, OUT, ROWS, &mut Rng::new(7));
    let (x, y) = data(LossKind::Mse);
    m.forward(&x, ROWS, Mode::Train);
    loss::loss(
        LossKind::Mse,
        &m.output[..ROWS * OUT],
        &y,
        ROWS,
        OUT,
        Some(&mut m.d_output[..ROWS * OUT]),
    );
    m.backward(&x);
    let g = m.params[0].grad[0];
    let h = 1e-5;
    let orig = m.params[0].value[0];
    m.params[0].value[0] = orig + h;
    let lp = loss_value(&mut m, &x, &y, LossKind::Mse);
    m.params[0].value[0] = orig - h;
    let lm = loss_value(&mut m, &x, &y, LossKind::Mse);
    let fd = (lp - lm) / (2.0 * h);
    assert!((fd - g).abs() < 1e-8);
    assert!(
        (fd - 1.01 * g).abs() > 1e-8 * fd.abs().max(1e-3),
        "a 1% error must be visible"
    );
}
