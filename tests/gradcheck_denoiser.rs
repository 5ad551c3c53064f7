//! Finite-difference gradient checks (f64) of the PFGM++/diffusion denoiser: the MLP network
//! behind EDM's preconditioning and a noise embedding, through the model interface (forward,
//! EDM-weighted loss, backward), on every trainable parameter, at noise levels from 10⁻³ to 80
//! (where c_skip, c_out and c_in differ by orders of magnitude).

use cloudchamber::engine::Rng;
use cloudchamber::model::{self, Batch, Model, Shape};
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::norm::{Mode, Norm, NormPosition};
use cloudchamber::spec::denoiser::{AugDim, NoiseEmbedding};
use cloudchamber::spec::{
    ActParamSpec, BiasedActSpec, DenoiserSpec, Granularity, LossKind, MlpSpec, ModelSpec, Trainable,
};

const N: usize = 3;
const ROWS: usize = 6;

fn loss_of(m: &mut dyn Model<f64>, b: &Batch<'_, f64>) -> f64 {
    m.forward(b, Mode::Train);
    m.loss(b, false).loss
}

fn check(label: &str, net: MlpSpec, den: DenoiserSpec) {
    let spec = ModelSpec::Denoiser { net, denoiser: den };
    let shape = Shape::Rows {
        input: N,
        output: N,
    };
    let mut m = model::build::<f64>(&spec, shape, LossKind::Mse, ROWS, &mut Rng::new(7)).unwrap();
    let mut rng = Rng::new(3);
    for p in m.params_mut().iter_mut().filter(|p| p.trainable) {
        for v in p.value.iter_mut() {
            *v += 0.1 * rng.normal();
        }
    }
    let y: Vec<f64> = (0..ROWS * N).map(|_| 0.5 * rng.normal()).collect();
    let sigma = [1e-3, 0.02, 0.3, 1.0, 5.0, 80.0];
    let x: Vec<f64> = (0..ROWS * N)
        .map(|i| y[i] + sigma[i / N] * rng.normal())
        .collect();
    let b = Batch::Denoise {
        x: &x,
        sigma: &sigma,
        y: &y,
        rows: ROWS,
        dim: N,
    };
    m.forward(&b, Mode::Train);
    let l = m.loss(&b, true);
    assert!(l.loss.is_finite(), "{label}");
    m.backward(&b);
    let analytic: Vec<Vec<f64>> = m.params().iter().map(|p| p.grad.clone()).collect();
    let h = 1e-6;
    let mut checked = 0;
    for i in 0..m.params().len() {
        if !m.params()[i].trainable {
            continue;
        }
        for j in 0..m.params()[i].value.len() {
            let orig = m.params()[i].value[j];
            m.params_mut()[i].value[j] = orig + h;
            let lp = loss_of(&mut *m, &b);
            m.params_mut()[i].value[j] = orig - h;
            let lm = loss_of(&mut *m, &b);
            m.params_mut()[i].value[j] = orig;
            let fd = (lp - lm) / (2.0 * h);
            let an = analytic[i][j];
            // The MLP checks' floor: FD noise is ~1e-10 on a loss of order 1.
            let err = (fd - an).abs() / (1e-4 + fd.abs().max(an.abs()));
            assert!(
                err < 1e-5,
                "{label}: {}[{j}]: backward {an:e}, finite difference {fd:e} (rel. error {err:e})",
                m.params()[i].name
            );
            checked += 1;
        }
    }
    assert!(checked > 50, "{label}: {checked}");
}

fn net(activation: Activation) -> MlpSpec {
    MlpSpec {
        width: 8,
        depth: 2,
        activation,
        ..MlpSpec::default()
    }
}

fn den(embedding: NoiseEmbedding, aug: AugDim) -> DenoiserSpec {
    DenoiserSpec {
        embedding,
        embed_dim: 6,
        fourier_scale: 1.0,
        aug_dim: aug,
        sigma_data: 0.5,
        ..DenoiserSpec::default()
    }
}

#[test]
fn denoiser_gradients_match_finite_differences() {
    for act in [
        Activation::Silu,
        Activation::Tanh,
        Activation::Gelu,
        Activation::Softplus,
    ] {
        check(
            &format!("{act:?}, fourier"),
            net(act),
            den(NoiseEmbedding::Fourier, AugDim::Finite(128.0)),
        );
    }
    check(
        "silu, positional, D = inf",
        net(Activation::Silu),
        den(NoiseEmbedding::Positional, AugDim::Infinite),
    );
    for (norm, pos) in [
        (Norm::Layernorm, NormPosition::BeforeActivation),
        (Norm::Rmsnorm, NormPosition::AfterActivation),
        (Norm::Dyt, NormPosition::BeforeActivation),
    ] {
        check(
            &format!("{norm:?} {pos:?}"),
            MlpSpec {
                norm,
                norm_position: pos,
                ..net(Activation::Silu)
            },
            den(NoiseEmbedding::Fourier, AugDim::Finite(4.0)),
        );
    }
    let learned = |init: f64| ActParamSpec {
        init,
        mode: Trainable::Learned,
        per: Granularity::Neuron,
    };
    check(
        "learned a·f(x − b) + c per neuron",
        MlpSpec {
            act: BiasedActSpec {
                a: learned(1.2),
                b: learned(0.3),
                c: learned(-0.1),
            },
            ..net(Activation::Tanh)
        },
        den(NoiseEmbedding::Fourier, AugDim::Finite(1.0)),
    );
}

/// The loss is EDM's λ(σ)·‖D − y‖² (mean over rows and coordinates), computed independently
/// here from the model's own denoised output.
#[test]
fn loss_is_the_edm_weighted_squared_error() {
    let spec = ModelSpec::Denoiser {
        net: net(Activation::Silu),
        denoiser: den(NoiseEmbedding::Fourier, AugDim::Finite(16.0)),
    };
    let shape = Shape::Rows {
        input: N,
        output: N,
    };
    let mut m = model::build::<f64>(&spec, shape, LossKind::Mse, ROWS, &mut Rng::new(1)).unwrap();
    let mut rng = Rng::new(2);
    let y: Vec<f64> = (0..ROWS * N).map(|_| rng.normal()).collect();
    let sigma = [0.01, 0.1, 0.5, 1.0, 3.0, 30.0];
    let x: Vec<f64> = (0..ROWS * N)
        .map(|i| y[i] + sigma[i / N] * rng.normal())
        .collect();
    let b = Batch::Denoise {
        x: &x,
        sigma: &sigma,
        y: &y,
        rows: ROWS,
        dim: N,
    };
    m.forward(&b, Mode::Eval);
    let got = m.loss(&b, false).loss;
    let mut d = vec![0.0; N];
    let mut want = 0.0;
    for r in 0..ROWS {
        m.denoise(&x[r * N..(r + 1) * N], sigma[r], &mut d);
        let (s, sd) = (sigma[r], 0.5);
        let lambda = (s * s + sd * sd) / (s * sd * s * sd);
        want += lambda
            * d.iter()
                .zip(&y[r * N..])
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f64>();
    }
    want /= (ROWS * N) as f64;
    assert!((got - want).abs() < 1e-9 * want, "{got} vs {want}");
}
