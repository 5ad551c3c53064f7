//! Claim tests: statements from the literature, checked on the engine.

use cloudchamber::engine::ops;
use cloudchamber::engine::Rng;
use cloudchamber::model::Mlp;
use cloudchamber::nn::activation::Activation;
use cloudchamber::nn::init::Init;
use cloudchamber::nn::norm::Mode;
use cloudchamber::spec::MlpSpec;

/// Pre-activation second moments `q^l = mean(z_l²)` of a deep bias-free ReLU net at
/// initialization, averaged over `seeds` independent initializations (mean-field theory predicts
/// the expectation over weights; at finite width `n` one draw fluctuates by `Var[log q^L] ≈ 5L/n`
/// (Hanin 2018), so a single net of width 1024 drifts ~50% over 50 layers while the average of 64
/// nets is within ~7%).
fn relu_q(init: Init, width: usize, depth: usize, rows: usize, seeds: u64) -> Vec<f64> {
    let spec = MlpSpec {
        width,
        depth,
        bias: false,
        activation: Activation::Relu,
        init,
        ..MlpSpec::default()
    };
    let mut q = vec![0.0; depth];
    for seed in 0..seeds {
        let mut m = Mlp::<f32>::new(&spec, width, 1, rows, &mut Rng::stream(seed, "claims/init"));
        let mut rng = Rng::stream(seed, "claims/x");
        let x: Vec<f32> = (0..rows * width).map(|_| rng.normal() as f32).collect();
        m.forward(&x, rows, Mode::Train);
        for (l, ql) in q.iter_mut().enumerate() {
            *ql += ops::sum_squares(&m.bufs[l].pre[..rows * width])
                / (rows * width) as f64
                / seeds as f64;
        }
    }
    q
}

/// He et al. 2015: with `Var(W) = 2/fan_in`, ReLU keeps the pre-activation second moment
/// constant through depth: over 50 layers it stays within 20% of the first layer's.
#[test]
fn he_init_keeps_relu_second_moment_constant_over_50_layers() {
    let q = relu_q(Init::HeNormal, 1024, 50, 4, 64);
    for (l, ql) in q.iter().enumerate() {
        assert!(
            (ql / q[0] - 1.0).abs() < 0.2,
            "layer {l}: q = {ql:.4}, q0 = {:.4}  (all: {q:?})",
            q[0]
        );
    }
    // The first layer sees unit-variance inputs: q0 = 2·E[x²] = 2.
    assert!((q[0] - 2.0).abs() < 0.05, "q0 = {}", q[0]);
}

/// Glorot & Bengio 2010 init (`Var(W) = 2/(fan_in + fan_out) = 1/width` here) loses half the
/// second moment per ReLU layer: `q^{l+1} = σ_w²·width·q^l/2 = q^l/2`.
#[test]
fn xavier_init_halves_relu_second_moment_per_layer() {
    let q = relu_q(Init::XavierNormal, 1024, 12, 4, 64);
    let ratios: Vec<f64> = q.windows(2).map(|w| w[1] / w[0]).collect();
    for (l, r) in ratios.iter().enumerate() {
        assert!(
            (r - 0.5).abs() < 0.05,
            "layer {l}→{}: ratio {r:.4} (all: {ratios:?})",
            l + 1
        );
    }
    // And the decay compounds: after 11 layers, 2^-11 of the first.
    assert!(
        (q[11] / q[0] * 2048.0 - 1.0).abs() < 0.2,
        "{}",
        q[11] / q[0] * 2048.0
    );
}

/// Olsson et al. 2022: induction heads form in a sudden phase change, at the same steps as the
/// loss on the copyable positions falls. `examples/induction-heads.toml` (one rotary head per
/// layer), trained 800 of its 3,000 steps: before step 300 the layer-1 head's prefix-matching
/// score is below 0.2 and the copyable positions' loss above 3.5 nats (ln 64 = 4.16); by step
/// 700 the score is above 0.6 and that loss below 1.5, with the layer-0 head looking one token
/// back and the layer-1 head copying (copying score > 0.8); the other positions' loss stays above
/// 4 (nothing there can be predicted). Measured on this machine: 0.15 → 0.72 between steps 400
/// and 500, loss 3.53 → 2.15; copying scores 0.96 (layer 1) and −0.74 (layer 0) at step 600.
#[test]
fn an_induction_head_forms_as_the_copyable_loss_falls() {
    use std::path::Path;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/induction-heads.toml");
    let over = [
        "train.steps=800".to_string(),
        "train.eval_every=400".to_string(),
    ];
    let spec = cloudchamber::spec::load(&path, &over).unwrap().spec;
    let data = spec.task.generate(spec.seed, Path::new(".")).unwrap();
    let mut rows: Vec<cloudchamber::store::MetricRow> = Vec::new();
    cloudchamber::train::train(&spec, &data, &mut rows, None, false, &mut |_, _| {}).unwrap();
    let at = |step: u64, name: &str, layer: Option<u32>| {
        rows.iter()
            .find(|r| r.step == step && r.name == name && r.layer == layer)
            .unwrap_or_else(|| panic!("no {name} at {step}"))
            .value
    };
    for step in [0, 100, 200, 275] {
        let pm = at(step, "prefix_match_h0", Some(1));
        let loss = at(step, "loss_induction", None);
        assert!(
            pm < 0.2 && loss > 3.5,
            "step {step}: prefix match {pm}, loss {loss}"
        );
    }
    for step in [700, 775] {
        let pm = at(step, "prefix_match_h0", Some(1));
        let loss = at(step, "loss_induction", None);
        assert!(
            pm > 0.6 && loss < 1.5,
            "step {step}: prefix match {pm}, loss {loss}"
        );
        assert_eq!(at(step, "lookback_h0", Some(0)), 1.0, "step {step}");
        // The induction head copies: its OV circuit's eigenvalues are positive (Elhage et al.
        // 2021's copying score, 0.96 here), the previous-token head's are not.
        assert!(at(step, "copying_h0", Some(1)) > 0.8, "step {step}");
        assert!(at(step, "copying_h0", Some(0)) < 0.0, "step {step}");
        assert!(at(step, "loss_other", None) > 4.0);
    }
}

/// Michaud et al. 2023 (the quantization model): subtasks ("quanta") are learned in order of
/// frequency. `examples/multitask-sparse-parity.toml` (20 subtasks, Zipf exponent 1.4): the step
/// at which each subtask's held-out accuracy first reaches 0.9 rises with its frequency rank —
/// a Spearman correlation above 0.9 over the subtasks learned, of which there are at least 15.
/// Measured on this machine (first steps by rank): 500, 1500, 2500, 4000, 6000, 7500, 6500,
/// 10000, 11000, 9500, 16500, 16500, 18000, 16500, 21500, 23500, —, 35500, —, 35000.
#[test]
fn quanta_are_learned_in_order_of_frequency() {
    use std::path::Path;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multitask-sparse-parity.toml");
    let spec = cloudchamber::spec::load(&path, &[]).unwrap().spec;
    let data = spec.task.generate(spec.seed, Path::new(".")).unwrap();
    let mut rows: Vec<cloudchamber::store::MetricRow> = Vec::new();
    cloudchamber::train::train(&spec, &data, &mut rows, None, false, &mut |_, _| {}).unwrap();
    let series = |name: &str| -> Vec<(u64, f64)> {
        rows.iter()
            .filter(|r| r.name == name)
            .map(|r| (r.step, r.value))
            .collect()
    };
    // Subtask t is the t-th most frequent (the task draws subtask t with probability ∝ (t+1)^−α).
    let freq: Vec<f64> = (0..20)
        .map(|t| series(&format!("subtask_freq_{t}"))[0].1)
        .collect();
    assert!(freq.windows(2).all(|w| w[0] > w[1]), "{freq:?}");
    let learned: Vec<(f64, f64)> = (0..20)
        .filter_map(|t| {
            series(&format!("subtask_acc_{t}"))
                .iter()
                .find(|p| p.1 >= 0.9)
                .map(|p| (t as f64, p.0 as f64))
        })
        .collect();
    assert!(learned.len() >= 15, "{learned:?}");
    let rho = spearman(&learned);
    assert!(rho > 0.9, "Spearman {rho}: {learned:?}");
}

/// Spearman's rank correlation of `(x, y)` pairs (average ranks for ties).
fn spearman(pairs: &[(f64, f64)]) -> f64 {
    let ranks = |v: Vec<f64>| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let rx = ranks(pairs.iter().map(|p| p.0).collect());
    let ry = ranks(pairs.iter().map(|p| p.1).collect());
    let n = rx.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt()
}

/// PFGM++'s high-dimensional toy (the check): two Gaussians on a random 10-plane of
/// R^1000, a denoiser trained on the D = 100 kernel for 1,500 steps of
/// `examples/pfgm-gmm-1000d.toml`, then sampled with EDM's Heun sampler: the samples' unbiased
/// MMD² to held-out data is below a tenth of the prior's (nothing learned), and their energy
/// distance below a thousandth of the prior's; the ideal denoiser's samples sit at the
/// estimator's floor. Measured on this machine (seed 0): sample MMD² 0.0107 (biased) against
/// the prior's 0.294; energy 0.0116 against 1487; ideal 0.0021 (biased), 0.0001 (energy).
#[test]
fn pfgm_denoiser_samples_far_closer_to_data_than_the_prior() {
    use std::path::Path;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/pfgm-gmm-1000d.toml");
    let over = [
        "train.steps=1500".to_string(),
        "train.eval_every=1500".to_string(),
        "train.threads=2".to_string(),
    ];
    let spec = cloudchamber::spec::load(&path, &over).unwrap().spec;
    let data = spec.task.generate(spec.seed, Path::new(".")).unwrap();
    let mut rows: Vec<cloudchamber::store::MetricRow> = Vec::new();
    cloudchamber::train::train(&spec, &data, &mut rows, None, false, &mut |_, _| {}).unwrap();
    let at = |step: u64, name: &str| {
        rows.iter()
            .find(|r| r.step == step && r.name == name)
            .unwrap_or_else(|| panic!("no {name} at {step}"))
            .value
    };
    let (model, prior) = (at(1500, "sample_mmd_unbiased"), at(0, "prior_mmd_unbiased"));
    assert!(model < prior / 10.0, "MMD² {model} vs the prior's {prior}");
    let (e_model, e_prior) = (at(1500, "sample_energy"), at(0, "prior_energy"));
    assert!(e_model < e_prior / 1000.0, "energy {e_model} vs {e_prior}");
    // The perfect network: at the floor, and the trained one above it.
    let ideal = at(0, "ideal_mmd_unbiased");
    assert!(
        ideal.abs() < 2e-3 && model > ideal,
        "ideal {ideal}, model {model}"
    );
    assert!(
        at(0, "sample_mmd_unbiased") > prior / 2.0,
        "the untrained network is no better than the prior"
    );
}

/// Yang et al. 2022 (Tensor Programs V, Figure 5): a coordinate check. `examples/
/// mup-coordcheck.toml` (depth-3 ReLU MLP, Adam at 0.01) at widths 64 … 512, 8 seeds (the
/// readout at initialization is its random bias, which 3 seeds average too little): after one
/// update, under SP the readout's mean |activation| grows with width (log–log slope > 1; measured
/// 1.89 over 64 … 1024), under μP every layer's slope stays within ±0.15 at every step (measured
/// within ±0.1), and at initialization SP's hidden layers are flat too.
#[test]
fn mup_keeps_coordinates_width_independent_and_sp_does_not() {
    use cloudchamber::nn::parametrization::Parametrization;
    use std::path::Path;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mup-coordcheck.toml");
    let check = |p: &str| {
        let over = [format!("model.parametrization={p}")];
        let loaded = cloudchamber::spec::load(&path, &over).unwrap();
        let spec = loaded.spec.clone();
        let data = |seed: u64| Ok(spec.task.generate(seed, &loaded.base_dir).unwrap());
        cloudchamber::coordcheck::run(&spec, &[64, 128, 256, 512], 3, 8, &data).unwrap()
    };
    let sp = check("sp");
    let mup = check("mup");
    assert_eq!(mup.parametrization, Parametrization::Mup);
    let readout = sp.depth;
    assert!(
        sp.slope[1][readout] > 1.0,
        "SP readout slope {:?}",
        sp.slope[1]
    );
    for (t, row) in mup.slope.iter().enumerate() {
        for (l, s) in row.iter().enumerate() {
            assert!(s.abs() < 0.15, "μP step {t} layer {l}: slope {s} ({row:?})");
        }
    }
    // At initialization SP's hidden layers are width-independent too (its readout is not
    // quite: the bias, drawn from U(±1/√width), shrinks; measured −0.19).
    for s in &sp.slope[0][..readout] {
        assert!(s.abs() < 0.15, "SP at initialization: {:?}", sp.slope[0]);
    }
}

/// The same coordinate check for a GPT (`examples/mup-coordcheck-gpt.toml`, d_model 32 … 256,
/// 4 heads, 2 layers, Adam at 0.01, 3 seeds). Under SP (GPT-2's fixed-std init) every block's
/// output grows with width, already at initialization (slope ≈ ½: each block's matrices keep
/// std 0.02 as fan-in grows) and faster after updates (measured 1.0–2.1 over steps 1–4). Under
/// μP the blocks stay flat (|slope| < 0.25; measured ≤ 0.17) and the logits start at μP's
/// predicted n^(−½) (its readout has variance ∝ 1/width²; measured −0.49) and are flat after a
/// few updates (measured −0.04 at step 4).
#[test]
fn mup_keeps_a_gpts_coordinates_width_independent() {
    use std::path::Path;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mup-coordcheck-gpt.toml");
    let check = |p: &str| {
        let over = [format!("model.gpt.parametrization={p}")];
        let loaded = cloudchamber::spec::load(&path, &over).unwrap();
        let spec = loaded.spec.clone();
        let data = |seed: u64| Ok(spec.task.generate(seed, &loaded.base_dir).unwrap());
        cloudchamber::coordcheck::run(&spec, &[32, 64, 128, 256], 4, 3, &data).unwrap()
    };
    let (sp, mup) = (check("sp"), check("mup"));
    let readout = sp.depth;
    for t in 1..=4 {
        for l in 0..readout {
            assert!(
                sp.slope[t][l] > 0.8,
                "SP step {t} block {l}: {:?}",
                sp.slope[t]
            );
            assert!(
                mup.slope[t][l].abs() < 0.25,
                "μP step {t} block {l}: {:?}",
                mup.slope[t]
            );
        }
    }
    assert!(
        (mup.slope[0][readout] + 0.5).abs() < 0.15,
        "{:?}",
        mup.slope[0]
    );
    assert!(mup.slope[4][readout].abs() < 0.15, "{:?}", mup.slope[4]);
}

/// Yang & Hu 2021 (Tensor Programs IV, §3): the mean-field parametrization (width-independent
/// weights, `1/√n` hidden and `1/n` readout multipliers, SGD's rate ×n) is μP in other
/// coordinates — the abc-symmetry `(a, b, c) → (a + θ, b − θ, c − 2θ)` (SGD), `c − θ` (Adam).
/// The same depth-3 ReLU MLP at width 512 (base 64, m = 8) under both trains the same function:
/// training losses agree to rounding under SGD, and up to Adam's ε (a different gradient scale
/// meets the same ε) under Adam. Measured worst relative differences over 30 steps (f32): SGD
/// 1.8·10⁻⁸, Adam (ε = 10⁻¹²) 2.2·10⁻⁴; NTK against μP, a different limit: 2.4·10⁻² and 2.0.
#[test]
fn mean_field_trains_the_same_function_as_mup() {
    use std::path::Path;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mup-coordcheck.toml");
    let losses = |par: &str, optimizer: &str, lr: &str| {
        let over = [
            format!("model.parametrization={par}"),
            format!("optim.optimizer={optimizer}"),
            format!("optim.lr={lr}"),
            "model.width=512".to_string(),
            "train.steps=30".to_string(),
            "observe.log_every=1".to_string(),
            // Adam's ε meets gradients of a different scale in the two coordinates; small, it
            // leaves the symmetry (measured at ε = 10⁻⁸: 5.6·10⁻³, 10⁻¹⁶: 5·10⁻⁵).
            "optim.eps=1e-12".to_string(),
        ];
        let loaded = cloudchamber::spec::load(&path, &over).unwrap();
        let data = loaded.spec.task.generate(0, &loaded.base_dir).unwrap();
        let mut rows: Vec<cloudchamber::store::MetricRow> = Vec::new();
        cloudchamber::train::train(&loaded.spec, &data, &mut rows, None, false, &mut |_, _| {})
            .unwrap();
        let v: Vec<f64> = rows
            .iter()
            .filter(|r| r.name == "train_loss")
            .map(|r| r.value)
            .collect();
        assert_eq!(v.len(), 30, "{par} {optimizer}");
        v
    };
    let worst = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs() / y.abs())
            .fold(0.0, f64::max)
    };
    for (optimizer, lr, tol) in [("sgd", "0.05", 1e-6), ("adam", "0.01", 1e-3)] {
        let (mf, mup, ntk) = (
            losses("mean_field", optimizer, lr),
            losses("mup", optimizer, lr),
            losses("ntk", optimizer, lr),
        );
        let (same, other) = (worst(&mf, &mup), worst(&ntk, &mup));
        eprintln!("{optimizer}: mean field vs μP {same:.1e}, NTK vs μP {other:.1e}");
        assert!(same < tol, "{optimizer}: mean field vs μP {same:.2e}");
        assert!(
            other > 50.0 * same,
            "{optimizer}: NTK vs μP only {other:.2e}"
        );
        assert!(mup[29] < mup[0], "{optimizer}: μP did not train: {mup:?}");
    }
}
