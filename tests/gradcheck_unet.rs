//! Finite-difference gradient checks of the U-Net (f64): every trainable parameter's analytic
//! gradient against five-point central differences of the training loss, over every norm, every
//! upsampling mode, every segmentation loss, odd image sizes where the pooling allows, and the
//! learned biased activation per channel and per layer.

use cloudchamber::engine::Rng;
use cloudchamber::model::{Batch, Model, Unet};
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::norm::Mode;
use cloudchamber::spec::unet::{ChannelNorm, SegLoss, UnetSpec, Upsampling};
use cloudchamber::spec::{ActParamSpec, BiasedActSpec, Granularity, Trainable};

/// The five-point stencil's step: truncation O(H⁴), rounding O(ε/H); small, so that a max
/// pool rarely switches its maximum within the stencil.
const H: f64 = 1e-5;
const TOL: f64 = 2e-6;

struct Case {
    label: String,
    spec: UnetSpec,
    in_ch: usize,
    size: (usize, usize),
    classes: usize,
    eps: f64,
}

fn learned(init: f64, per: Granularity) -> ActParamSpec {
    ActParamSpec {
        init,
        mode: Trainable::Learned,
        per,
    }
}

fn cases() -> Vec<Case> {
    let base = UnetSpec {
        depth: 2,
        base_channels: 2,
        channel_mult: 2,
        activation: Activation::Tanh,
        ..UnetSpec::default()
    };
    let mut v = Vec::new();
    for norm in [
        ChannelNorm::None,
        ChannelNorm::Batchnorm,
        ChannelNorm::Groupnorm,
        ChannelNorm::Layernorm,
    ] {
        for up in [
            Upsampling::Transposed,
            Upsampling::Nearest,
            Upsampling::Bilinear,
        ] {
            v.push(Case {
                label: format!("{} {up:?}", norm.name()),
                // Three channels at the top level: a layer norm over two channels is ±1 almost
                // everywhere (a step), which finite differences cannot follow.
                spec: UnetSpec {
                    norm,
                    upsampling: up,
                    groups: 2,
                    base_channels: 3,
                    ..base.clone()
                },
                in_ch: 2,
                size: (8, 12),
                classes: 3,
                // A layer norm over a few channels is steep where they nearly agree (slope up to
                // 1/√ε); a larger ε keeps the stencil's truncation error small there.
                eps: if norm == ChannelNorm::Layernorm {
                    1e-2
                } else {
                    1e-5
                },
            });
        }
    }
    for loss in [SegLoss::Bce, SegLoss::Dice, SegLoss::BceDice] {
        v.push(Case {
            label: format!("{} binary", loss.name()),
            spec: UnetSpec {
                loss,
                dice_weight: 0.5,
                ..base.clone()
            },
            in_ch: 1,
            size: (8, 8),
            classes: 2,
            eps: 1e-5,
        });
    }
    v.push(Case {
        label: "dice three classes".into(),
        spec: UnetSpec {
            loss: SegLoss::Dice,
            ..base.clone()
        },
        in_ch: 1,
        size: (4, 8),
        classes: 3,
        eps: 1e-5,
    });
    for per in [Granularity::Neuron, Granularity::Layer] {
        v.push(Case {
            label: format!("learned a·f(x − b) + c per {per:?}, gelu, groupnorm"),
            spec: UnetSpec {
                activation: Activation::Gelu,
                norm: ChannelNorm::Groupnorm,
                groups: 2,
                act: BiasedActSpec {
                    a: learned(1.2, per),
                    b: learned(0.1, per),
                    c: learned(-0.05, per),
                },
                ..base.clone()
            },
            in_ch: 1,
            size: (8, 4),
            classes: 2,
            eps: 1e-5,
        });
    }
    v.push(Case {
        // 6×10 pools to 3×5: odd sizes at the coarse level. (ReLU's kink is left to the
        // activation's own tests: with thousands of pre-activations some always sit within a
        // stencil's width of 0.)
        label: "depth 1, 6×10 → 3×5, silu, he_normal".into(),
        spec: UnetSpec {
            depth: 1,
            activation: Activation::Silu,
            init: cloudchamber::nn::init::Init::HeNormal,
            ..base.clone()
        },
        in_ch: 1,
        size: (6, 10),
        classes: 2,
        eps: 1e-5,
    });
    v.push(Case {
        label: "depth 0 (no pooling), 5×7".into(),
        spec: UnetSpec {
            depth: 0,
            ..base.clone()
        },
        in_ch: 1,
        size: (5, 7),
        classes: 2,
        eps: 1e-5,
    });
    v
}

fn data(c: &Case, n: usize, rng: &mut Rng) -> (Vec<f64>, Vec<f64>) {
    let (h, w) = c.size;
    let x = (0..n * c.in_ch * h * w).map(|_| rng.normal()).collect();
    let y = (0..n * h * w)
        .map(|_| rng.below(c.classes as u64) as f64)
        .collect();
    (x, y)
}

/// The largest relative error between `m`'s analytic gradients (of its last backward pass) and
/// five-point differences of its training loss on `batch`, over the elements `picks(len)` of
/// each trainable tensor; with where it occurred.
fn worst_error(
    m: &mut dyn Model<f64>,
    batch: &Batch<'_, f64>,
    picks: impl Fn(usize) -> Vec<usize>,
) -> (f64, String) {
    let grads: Vec<Vec<f64>> = m.params().iter().map(|p| p.grad.clone()).collect();
    let mut worst = (0.0f64, String::new());
    for (pi, g) in grads.iter().enumerate() {
        if !m.params()[pi].trainable {
            continue;
        }
        for i in picks(g.len()) {
            let orig = m.params()[pi].value[i];
            let mut loss_at = |v: f64| {
                m.params_mut()[pi].value[i] = v;
                m.forward(batch, Mode::Train);
                m.loss(batch, false).loss
            };
            let fd = (8.0 * (loss_at(orig + H) - loss_at(orig - H))
                - (loss_at(orig + 2.0 * H) - loss_at(orig - 2.0 * H)))
                / (12.0 * H);
            m.params_mut()[pi].value[i] = orig;
            let err = (fd - g[i]).abs() / (1e-3 + fd.abs().max(g[i].abs()));
            if err > worst.0 {
                worst = (
                    err,
                    format!("{}[{i}]: analytic {} vs {fd}", m.params()[pi].name, g[i]),
                );
            }
        }
    }
    worst
}

#[test]
fn unet_gradients_match_finite_differences() {
    let n = 3;
    for c in cases() {
        let mut rng = Rng::new(1);
        let (h, w) = c.size;
        let mut m = Unet::<f64>::new(&c.spec, c.eps, (c.in_ch, h, w), c.classes, n, &mut rng);
        // Move the norms and biases off their initial values so every path matters.
        for p in m.params_mut().iter_mut().filter(|p| p.trainable) {
            for v in p.value.iter_mut() {
                *v += 0.1 * rng.normal();
            }
        }
        let (x, y) = data(&c, n, &mut rng);
        let batch = Batch::Rows {
            x: &x,
            y: &y,
            rows: n,
        };
        m.forward(&batch, Mode::Train);
        m.loss(&batch, true);
        m.backward(&batch);
        // Every element of small tensors; a spread of 12 from larger ones.
        let worst = worst_error(&mut m, &batch, |len| {
            if len <= 24 {
                (0..len).collect()
            } else {
                (0..12).map(|k| k * len / 12 + k % 3).collect()
            }
        });
        eprintln!(
            "{}: worst relative error {:.1e} ({})",
            c.label, worst.0, worst.1
        );
        assert!(worst.0 < TOL, "{}: {:.2e} at {}", c.label, worst.0, worst.1);
    }
}

/// The CNN classifier: every parameter against five-point differences, over every norm, both
/// pools, odd sizes (7×9 pools to 3×4, then 1×2) and the learned biased activation.
#[test]
fn cnn_gradients_match_finite_differences() {
    use cloudchamber::model::Cnn;
    use cloudchamber::spec::cnn::{CnnSpec, PoolKind};
    let n = 3;
    let mut cases = Vec::new();
    for norm in [
        ChannelNorm::None,
        ChannelNorm::Batchnorm,
        ChannelNorm::Groupnorm,
        ChannelNorm::Layernorm,
    ] {
        for pool in [PoolKind::Max, PoolKind::Avg] {
            cases.push(CnnSpec {
                channels: vec![3, 4],
                pool,
                norm,
                groups: 2,
                activation: Activation::Tanh,
                ..CnnSpec::default()
            });
        }
    }
    cases.push(CnnSpec {
        channels: vec![3, 4],
        activation: Activation::Silu,
        norm: ChannelNorm::Groupnorm,
        act: BiasedActSpec {
            a: learned(1.2, Granularity::Neuron),
            b: learned(0.1, Granularity::Layer),
            c: learned(-0.05, Granularity::Neuron),
        },
        ..CnnSpec::default()
    });
    for spec in cases {
        let mut rng = Rng::new(2);
        let (in_ch, h, w, classes) = (2, 7, 9, 3);
        let eps = if spec.norm == ChannelNorm::Layernorm {
            1e-2
        } else {
            1e-5
        };
        let mut m = Cnn::<f64>::new(&spec, eps, (in_ch, h, w), classes, n, &mut rng);
        for p in m.params_mut().iter_mut().filter(|p| p.trainable) {
            for v in p.value.iter_mut() {
                *v += 0.1 * rng.normal();
            }
        }
        let x: Vec<f64> = (0..n * in_ch * h * w).map(|_| rng.normal()).collect();
        let y: Vec<f64> = (0..n).map(|_| rng.below(classes as u64) as f64).collect();
        let batch = Batch::Rows {
            x: &x,
            y: &y,
            rows: n,
        };
        m.forward(&batch, Mode::Train);
        m.loss(&batch, true);
        m.backward(&batch);
        let worst = worst_error(&mut m, &batch, |len| (0..len).collect());
        let label = format!("{} {:?} {:?}", spec.norm.name(), spec.pool, spec.activation);
        eprintln!(
            "cnn {label}: worst relative error {:.1e} ({})",
            worst.0, worst.1
        );
        assert!(worst.0 < TOL, "cnn {label}: {:.2e} at {}", worst.0, worst.1);
    }
}

/// The f32 path — on an AVX-512 CPU the direct convolution kernels wherever output rows are a
/// multiple of 16 pixels, im2col elsewhere — gives the f64 path's loss and gradients to f32
/// rounding, on the same (f32-representable) weights and batch: a U-Net on 32×32 images (levels
/// of 32, 16 and 8 pixels: both kernels in one network) for every upsampling mode, and a CNN.
#[test]
fn f32_kernels_give_the_f64_gradients() {
    use cloudchamber::model::Cnn;
    use cloudchamber::spec::cnn::CnnSpec;
    let n = 2;
    let (in_ch, h, w) = (2, 32, 32);
    let mut rng = Rng::new(5);
    let x: Vec<f64> = (0..n * in_ch * h * w)
        .map(|_| rng.normal() as f32 as f64)
        .collect();
    let y2: Vec<f64> = (0..n * h * w).map(|_| rng.below(2) as f64).collect();
    let labels: Vec<f64> = (0..n).map(|_| rng.below(3) as f64).collect();
    // Relative error of the f32 model's loss and of each gradient tensor (as a vector).
    fn compare(
        label: &str,
        m64: &mut dyn Model<f64>,
        m32: &mut dyn Model<f32>,
        x: &[f64],
        y: &[f64],
        n: usize,
    ) {
        for (p32, p64) in m32.params_mut().iter_mut().zip(m64.params_mut().iter_mut()) {
            for (a, b) in p32.value.iter_mut().zip(p64.value.iter_mut()) {
                *b = *b as f32 as f64;
                *a = *b as f32;
            }
        }
        let (x32, y32): (Vec<f32>, Vec<f32>) = (
            x.iter().map(|&v| v as f32).collect(),
            y.iter().map(|&v| v as f32).collect(),
        );
        let b64 = Batch::Rows { x, y, rows: n };
        let b32 = Batch::Rows {
            x: &x32,
            y: &y32,
            rows: n,
        };
        m64.forward(&b64, Mode::Train);
        let l64 = m64.loss(&b64, true).loss;
        m64.backward(&b64);
        m32.forward(&b32, Mode::Train);
        let l32 = m32.loss(&b32, true).loss;
        m32.backward(&b32);
        assert!(
            (l32 - l64).abs() < 1e-5 * l64.abs().max(1.0),
            "{label}: loss {l32} vs {l64}"
        );
        // A tensor whose gradient vanishes in exact arithmetic (a convolution's bias before a
        // batch norm) is compared against a thousandth of the whole gradient's norm.
        let total: f64 = m64
            .params()
            .iter()
            .filter(|p| p.trainable)
            .flat_map(|p| p.grad.iter())
            .map(|g| g * g)
            .sum::<f64>()
            .sqrt();
        let mut worst = (0.0f64, String::new());
        for (p32, p64) in m32.params().iter().zip(m64.params()) {
            if !p64.trainable {
                continue;
            }
            let diff: f64 = p32
                .grad
                .iter()
                .zip(&p64.grad)
                .map(|(&a, &b)| (a as f64 - b).powi(2))
                .sum::<f64>()
                .sqrt();
            let norm: f64 = p64.grad.iter().map(|b| b * b).sum::<f64>().sqrt();
            let err = diff / norm.max(1e-3 * total);
            if err > worst.0 {
                worst = (err, p64.name.clone());
            }
        }
        eprintln!(
            "{label}: loss {l32} vs {l64}, worst gradient error {:.1e} ({})",
            worst.0, worst.1
        );
        assert!(worst.0 < 1e-4, "{label}: {:.2e} at {}", worst.0, worst.1);
    }
    for up in [
        Upsampling::Transposed,
        Upsampling::Nearest,
        Upsampling::Bilinear,
    ] {
        let spec = UnetSpec {
            depth: 2,
            base_channels: 4,
            activation: Activation::Tanh,
            norm: ChannelNorm::Batchnorm,
            upsampling: up,
            loss: SegLoss::BceDice,
            ..UnetSpec::default()
        };
        let mut m64 = Unet::<f64>::new(&spec, 1e-5, (in_ch, h, w), 2, n, &mut Rng::new(1));
        let mut m32 = Unet::<f32>::new(&spec, 1e-5, (in_ch, h, w), 2, n, &mut Rng::new(1));
        compare(&format!("unet {up:?}"), &mut m64, &mut m32, &x, &y2, n);
    }
    let spec = CnnSpec {
        channels: vec![4, 8],
        activation: Activation::Tanh,
        norm: ChannelNorm::Groupnorm,
        groups: 2,
        ..CnnSpec::default()
    };
    let mut m64 = Cnn::<f64>::new(&spec, 1e-5, (in_ch, h, w), 3, n, &mut Rng::new(2));
    let mut m32 = Cnn::<f32>::new(&spec, 1e-5, (in_ch, h, w), 3, n, &mut Rng::new(2));
    compare("cnn", &mut m64, &mut m32, &x, &labels, n);
}
