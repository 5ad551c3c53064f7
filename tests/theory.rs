//! Theory beside measurement: the mean-field length map (Poole et al. 2016, eq. 3) against the
//! measured pre-activation second moments of a wide, deep tanh MLP at initialization.

use std::time::Instant;

use cloudchamber::engine::{ops, Rng};
use cloudchamber::model::Mlp;
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::init::Init;
use cloudchamber::nn::norm::Mode;
use cloudchamber::spec::MlpSpec;
use cloudchamber::theory::meanfield::{MeanField, Phase, Phi};

const WIDTH: usize = 1000;
const INPUT: usize = 256;
const DEPTH: usize = 30;
const ROWS: usize = 64;

/// Measured `q^l = mean(z_l²)` per hidden layer, averaged over `seeds` initializations of a
/// `mean_field` tanh net (every layer, the input layer too: `W ~ N(0, σ_w²/fan_in)`,
/// `b ~ N(0, σ_b²)`), on one fixed input batch; and that batch's `mean(x²)`.
///
/// Why average: mean-field theory predicts the expectation over the weights. One draw of a
/// width-`n` layer scatters `mean(z²)` by `√(2/n) ≈ 4.5%` at n = 1000 when the rows are
/// correlated (ordered phase: `c* = 1`, so all 64 rows see nearly the same weights), which is
/// the whole 5% budget; 8 draws bring it to ~1.6%.
fn measured_q(w2: f64, b2: f64, seeds: u64) -> (Vec<f64>, f64) {
    let spec = MlpSpec {
        width: WIDTH,
        depth: DEPTH,
        bias: true,
        activation: Activation::Tanh,
        init: Init::MeanField,
        sigma_w2: w2,
        sigma_b2: b2,
        ..MlpSpec::default()
    };
    let mut rng = Rng::stream(0, "theory/x");
    let x: Vec<f64> = (0..ROWS * INPUT).map(|_| rng.normal()).collect();
    let mean_x2 = ops::sum_squares(&x) / x.len() as f64;
    let mut q = vec![0.0; DEPTH];
    for seed in 0..seeds {
        let mut m = Mlp::<f64>::new(&spec, INPUT, 1, ROWS, &mut Rng::stream(seed, "theory/init"));
        m.forward(&x, ROWS, Mode::Train);
        for (l, ql) in q.iter_mut().enumerate() {
            *ql += ops::sum_squares(&m.bufs[l].pre[..ROWS * WIDTH])
                / (ROWS * WIDTH) as f64
                / seeds as f64;
        }
    }
    (q, mean_x2)
}

/// Poole et al. 2016: on both sides of the order-to-chaos transition, the measured `q^l` follows
/// the iterated length map `q^l = σ_w² E[tanh(√q^{l−1} z)²] + σ_b²` from the measured first
/// layer's prediction `q^0 = σ_w²·mean(x²) + σ_b²`, within 5% at every one of 30 layers.
#[test]
fn tanh_second_moments_follow_the_length_map_on_both_sides_of_criticality() {
    let t0 = Instant::now();
    for (w2, b2, phase) in [(0.8, 0.05, Phase::Ordered), (2.0, 0.05, Phase::Chaotic)] {
        let mf = MeanField::new(Phi::plain(Activation::Tanh), w2, b2).unwrap();
        // The two points really lie on the two sides of the critical line.
        assert_eq!(mf.analyze().phase, phase, "σ_w²={w2}");
        let (q, mean_x2) = measured_q(w2, b2, 8);
        let want = mf.q_sequence(w2 * mean_x2 + b2, DEPTH - 1);
        for (l, (got, want)) in q.iter().zip(&want).enumerate() {
            assert!(
                (got / want - 1.0).abs() < 0.05,
                "σ_w²={w2} layer {l}: measured {got:.5}, predicted {want:.5}\nmeasured {q:?}\npredicted {want:?}"
            );
        }
        let dev: Vec<String> = q
            .iter()
            .zip(&want)
            .map(|(g, w)| format!("{:+.3}", g / w - 1.0))
            .collect();
        eprintln!("σ_w²={w2}: deviations {}", dev.join(" "));
        eprintln!(
            "σ_w²={w2}: max rel. dev {:.4}",
            q.iter()
                .zip(&want)
                .map(|(g, w)| (g / w - 1.0).abs())
                .fold(0.0, f64::max)
        );
    }
    // Runtime budget: the test must stay well under 20 s in `cargo test --release`.
    eprintln!("elapsed {:.2} s", t0.elapsed().as_secs_f64());
}

/// `model.calibrate = "self_normalizing"`: the first layer's activations of a wide net fed
/// standard-normal pre-activations have mean ≈ 0 and variance ≈ 1 (here GELU, whose plain
/// Gaussian mean is 1/(2√π) = 0.282 and variance 0.346, by quadrature in Python).
#[test]
fn self_normalizing_calibration_in_a_model() {
    use cloudchamber::engine::{ops, Rng};
    use cloudchamber::model::Mlp;
    use cloudchamber::nn::activation::Activation;
    use cloudchamber::nn::init::Init;
    use cloudchamber::nn::norm::Mode;
    use cloudchamber::spec::{Calibrate, MlpSpec};
    for calibrate in [Calibrate::None, Calibrate::SelfNormalizing] {
        let spec = MlpSpec {
            width: 2000,
            depth: 1,
            bias: false,
            activation: Activation::Gelu,
            init: Init::MeanField,
            sigma_w2: 1.0,
            calibrate,
            ..MlpSpec::default()
        };
        let mut m = Mlp::<f64>::new(&spec, 500, 1, 64, &mut Rng::new(1));
        let mut rng = Rng::new(2);
        let x: Vec<f64> = (0..64 * 500).map(|_| rng.normal()).collect();
        m.forward(&x, 64, Mode::Train);
        let (mean, std) = ops::mean_std(m.layer_output(0));
        if calibrate == Calibrate::SelfNormalizing {
            assert!(
                mean.abs() < 0.02 && (std - 1.0).abs() < 0.02,
                "calibrated: mean {mean}, std {std}"
            );
        } else {
            assert!(
                (mean - 0.282).abs() < 0.02 && (std - 0.3456f64.sqrt()).abs() < 0.02,
                "plain: mean {mean}, std {std}"
            );
        }
    }
}

fn cli(args: &[&str]) -> String {
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
        .args(args)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout).unwrap()
}

/// Theory at criticality (issue 15, item 20): relu at σ_w² = 2, σ_b² = 0 keeps every q, so q*
/// is the q⁰ it keeps and every depth scale is infinite (never ±4503599627370495); tanh's
/// calibration mean is 0, not −1e-16; `calibrate` takes the biased form; the phase diagram is
/// a grid.
#[test]
fn theory_prints_criticality_as_it_is() {
    let out = cli(&[
        "theory",
        "--activation",
        "relu",
        "--sigma-w2",
        "2",
        "--q0",
        "3",
    ]);
    let field = |name: &str| {
        out.lines()
            .find(|l| l.starts_with(name))
            .map(|l| l[name.len()..].trim().to_string())
            .unwrap()
    };
    assert!(field("q* ").starts_with("3.0000000000"), "{out}");
    for xi in ["xi_q ", "xi_c ", "xi_grad "] {
        assert_eq!(field(xi), "inf", "{out}");
    }
    assert_eq!(field("phase "), "critical");
    let cal = cli(&["calibrate", "tanh"]);
    assert!(cal.contains("\nmu       0.0000000000000000\n"), "{cal}");
    // The biased form: μ of 1·relu(z − 0.5) + 0.1 = φ(0.5) − 0.5·Φ(−0.5) + 0.1 (truncated normal).
    let cal = cli(&["calibrate", "relu", "--b", "0.5", "--c", "0.1"]);
    let mu: f64 = cal
        .lines()
        .find(|l| l.starts_with("mu "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();
    let pdf = (-0.125f64).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let want = pdf - 0.5 * 0.308_537_538_725_986_9 + 0.1;
    assert!((mu - want).abs() < 1e-12, "{mu} vs {want}");
    let grid = cli(&[
        "theory",
        "--phase-diagram",
        "--sigma-w2",
        "0.5:4:8",
        "--sigma-b2",
        "0:0.5:6",
    ]);
    // A header, a column line, then 6 rows of 8 cells and the critical σ_w².
    assert_eq!(grid.lines().count(), 8, "{grid}");
    assert!(grid.lines().nth(2).unwrap().contains("1.000="), "{grid}");
    assert_eq!(
        grid.lines().nth(3).unwrap().split_whitespace().count(),
        10,
        "{grid}"
    );
}
