//! `cloudchamber::fit`: exact recovery on noise-free data, fixed parameters, bootstrap coverage.

use cloudchamber::engine::Rng;
use cloudchamber::fit::{fit, Data, Form, Grid, Options};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / b.abs()
}

fn power_data(e: f64, a: f64, alpha: f64, noise: f64, rng: &mut Rng) -> Data {
    let x: Vec<f64> = (0..24)
        .map(|i| 10f64.powf(3.0 + 6.0 * i as f64 / 23.0))
        .collect();
    let y = x
        .iter()
        .map(|x| (e + a * x.powf(-alpha)) * (noise * rng.normal()).exp())
        .collect();
    Data { x, d: vec![], y }
}

fn chin_data(p: [f64; 5], noise: f64, rng: &mut Rng) -> Data {
    let [e, a, b, al, be] = p;
    let (mut x, mut d, mut y) = (vec![], vec![], vec![]);
    for i in 0..6 {
        for j in 0..6 {
            let n = 10f64.powf(7.0 + 3.0 * i as f64 / 5.0);
            let dd = 10f64.powf(9.0 + 3.0 * j as f64 / 5.0);
            x.push(n);
            d.push(dd);
            y.push((e + a / n.powf(al) + b / dd.powf(be)) * (noise * rng.normal()).exp());
        }
    }
    Data { x, d, y }
}

fn no_boot() -> Options {
    Options {
        bootstrap: 0,
        ..Options::default()
    }
}

#[test]
fn power_recovers_noise_free_parameters() {
    let mut rng = Rng::new(1);
    let data = power_data(1.7, 400.0, 0.34, 0.0, &mut rng);
    let r = fit(Form::Power, &data, &no_boot()).unwrap();
    for (name, truth) in [("E", 1.7), ("A", 400.0), ("alpha", 0.34)] {
        let v = r.get(name).unwrap();
        assert!(rel(v, truth) < 1e-6, "{name}: {v} vs {truth} ({r:?})");
    }
    let lc = fit(Form::LearningCurve, &data, &no_boot()).unwrap();
    assert!(rel(lc.get("alpha").unwrap(), 0.34) < 1e-6);
}

#[test]
fn chinchilla_recovers_noise_free_parameters_and_derived() {
    let truth = [1.69, 406.4, 410.7, 0.34, 0.28];
    let mut rng = Rng::new(2);
    let data = chin_data(truth, 0.0, &mut rng);
    let opts = Options {
        bootstrap: 0,
        at_compute: Some(1e24),
        ..Options::default()
    };
    let r = fit(Form::Chinchilla, &data, &opts).unwrap();
    for (name, t) in ["E", "A", "B", "alpha", "beta"].iter().zip(truth) {
        let v = r.get(name).unwrap();
        assert!(rel(v, t) < 1e-6, "{name}: {v} vs {t} ({r:?})");
    }
    let [_, a, b, al, be] = truth;
    let g = (al * a / (be * b)).powf(1.0 / (al + be));
    let n_opt = g * (1e24f64 / 6.0).powf(be / (al + be));
    let d_opt = (1e24f64 / 6.0).powf(al / (al + be)) / g;
    assert!(rel(r.get("G").unwrap(), g) < 1e-5);
    assert!(rel(r.get("N_opt").unwrap(), n_opt) < 1e-5);
    assert!(rel(r.get("D_opt").unwrap(), d_opt) < 1e-5);
    assert!(rel(r.get("tokens_per_param").unwrap(), d_opt / n_opt) < 1e-5);
    // C = 6 N D at the optimum.
    assert!(rel(6.0 * n_opt * d_opt, 1e24) < 1e-9);
}

#[test]
fn fixed_parameter_stays_fixed() {
    let mut rng = Rng::new(3);
    let data = power_data(1.7, 400.0, 0.34, 0.02, &mut rng);
    let opts = Options {
        bootstrap: 20,
        fixed: vec![("alpha".into(), 0.3)],
        ..Options::default()
    };
    let r = fit(Form::Power, &data, &opts).unwrap();
    let alpha = r.params.iter().find(|e| e.name == "alpha").unwrap();
    assert_eq!(alpha.value, 0.3);
    assert!(alpha.fixed && alpha.stderr.is_none());
    assert!(r
        .params
        .iter()
        .find(|e| e.name == "E")
        .unwrap()
        .stderr
        .is_some());

    let truth = [1.69, 406.4, 410.7, 0.34, 0.28];
    let data = chin_data(truth, 0.0, &mut rng);
    let opts = Options {
        bootstrap: 0,
        fixed: vec![("E".into(), 1.69)],
        ..Options::default()
    };
    let r = fit(Form::Chinchilla, &data, &opts).unwrap();
    assert!(rel(r.get("E").unwrap(), 1.69) < 1e-15);
    assert!(rel(r.get("alpha").unwrap(), 0.34) < 1e-6);
}

/// Fit uncertainty that means nothing is flagged (issue 15, item 21): on a flat loss (no
/// power law in it) the amplitude and exponent are not identified, each with its reason;
/// on a clean power law over three decades every parameter is.
#[test]
fn unidentified_parameters_are_flagged() {
    let flat = Data {
        x: vec![10.0, 20.0, 40.0, 80.0],
        d: vec![],
        y: vec![1.0, 1.01, 0.99, 1.0],
    };
    let opts = Options {
        bootstrap: 300,
        ..Options::default()
    };
    let r = fit(Form::Power, &flat, &opts).unwrap();
    let loose: Vec<&str> = r
        .params
        .iter()
        .filter(|e| e.identified == Some(false))
        .map(|e| e.name.as_str())
        .collect();
    assert!(
        loose.contains(&"alpha") && loose.contains(&"A"),
        "{:?}",
        r.params
    );
    assert!(r
        .params
        .iter()
        .all(|e| e.identified == Some(e.why.is_none())));
    let json = serde_json::to_value(&r).unwrap();
    assert_eq!(json["params"][2]["identified"], serde_json::json!(false));
    let mut rng = Rng::new(4);
    let clean = power_data(1.5, 3.0, 0.4, 0.002, &mut rng);
    let r = fit(Form::Power, &clean, &opts).unwrap();
    assert!(
        r.params.iter().all(|e| e.identified == Some(true)),
        "{:?}",
        r.params
    );
    // Without a bootstrap there is nothing to judge by.
    let r = fit(Form::Power, &clean, &no_boot()).unwrap();
    assert!(r.params.iter().all(|e| e.identified.is_none()));
}

#[test]
fn bad_input_is_invalid() {
    let data = Data {
        x: vec![1.0, 2.0, -3.0],
        d: vec![],
        y: vec![1.0, 1.0, 1.0],
    };
    let err = fit(Form::Power, &data, &no_boot()).unwrap_err();
    assert!(
        matches!(err, cloudchamber::Error::Invalid { .. }),
        "{err:?}"
    );
    assert_eq!(err.exit_code(), 2);
    let data = Data {
        x: vec![1.0, 2.0, 3.0, 4.0],
        d: vec![],
        y: vec![1.0, 1.0, 1.0, 1.0],
    };
    let opts = Options {
        fixed: vec![("beta".into(), 1.0)],
        ..no_boot()
    };
    assert!(matches!(
        fit(Form::Power, &data, &opts),
        Err(cloudchamber::Error::Invalid { .. })
    ));
}

fn broken_data(p: [f64; 6], noise: f64, rng: &mut Rng) -> Data {
    let [e, a, al, be, xb, s] = p;
    let x: Vec<f64> = (0..40)
        .map(|i| 10f64.powf(1.0 + 6.0 * i as f64 / 39.0))
        .collect();
    let y = x
        .iter()
        .map(|x| {
            let bend = (1.0 + (x / xb).powf(1.0 / s)).powf(-(be - al) * s);
            (e + a * x.powf(-al) * bend) * (noise * rng.normal()).exp()
        })
        .collect();
    Data { x, d: vec![], y }
}

const BROKEN: [f64; 6] = [0.5, 5.0, 0.2, 0.6, 1e4, 0.5];
const BROKEN_NAMES: [&str; 6] = ["E", "A", "alpha", "beta", "x_break", "smoothness"];

#[test]
fn broken_power_recovers_noise_free_parameters() {
    let mut rng = Rng::new(4);
    let data = broken_data(BROKEN, 0.0, &mut rng);
    let r = fit(Form::BrokenPower, &data, &no_boot()).unwrap();
    for (name, t) in BROKEN_NAMES.iter().zip(BROKEN) {
        let v = r.get(name).unwrap();
        assert!(rel(v, t) < 1e-6, "{name}: {v} vs {t} ({r:?})");
    }
    // The fitted law reproduces the points.
    let mut p = [0.0; 7];
    for (k, name) in ["E", "A", "B", "alpha", "beta", "x_break", "smoothness"]
        .iter()
        .enumerate()
    {
        p[k] = r.get(name).unwrap_or(0.0);
    }
    for (x, y) in data.x.iter().zip(&data.y) {
        let l = cloudchamber::fit::law(Form::BrokenPower, &p, *x, 0.0);
        assert!(rel(l, *y) < 1e-6, "{x}: {l} vs {y}");
    }
    // Fixing the bend width leaves the rest recoverable.
    let opts = Options {
        fixed: vec![("smoothness".into(), 0.5)],
        ..no_boot()
    };
    let r = fit(Form::BrokenPower, &data, &opts).unwrap();
    assert_eq!(r.get("smoothness"), Some(0.5));
    assert!(rel(r.get("x_break").unwrap(), 1e4) < 1e-6, "{r:?}");
}

/// A smaller starting grid for the repeated trials: the noise is small, so the optimum's basin
/// is found from a few starts (the default grid's 4,500 starts are tested for exact recovery).
fn coarse_grid() -> Grid {
    Grid {
        alpha: vec![0.25, 1.0],
        beta: vec![0.25, 1.0],
        e: vec![-0.5, 0.5],
        a: vec![0.0, 5.0, 10.0],
        b: vec![0.0, 5.0, 10.0],
        break_quantiles: vec![0.3, 0.7],
        smoothness: vec![0.3, 1.0],
    }
}

/// Fraction of noisy trials whose 95% interval holds the truth, per parameter.
fn coverage(
    form: Form,
    truth: &[(&str, f64)],
    trials: u64,
    make: impl Fn(&mut Rng) -> Data,
) -> Vec<f64> {
    let mut hits = vec![0usize; truth.len()];
    for t in 0..trials {
        let mut rng = Rng::stream(t, "fit-test-noise");
        let data = make(&mut rng);
        let opts = Options {
            bootstrap: 200,
            seed: t,
            grid: coarse_grid(),
            ..Options::default()
        };
        let r = fit(form, &data, &opts).unwrap();
        for (k, (name, v)) in truth.iter().enumerate() {
            let e = r.params.iter().find(|e| e.name == *name).unwrap();
            let [lo, hi] = e.ci95.unwrap();
            if lo <= *v && *v <= hi {
                hits[k] += 1;
            }
        }
    }
    hits.iter().map(|h| *h as f64 / trials as f64).collect()
}

/// The issue's bar: the truth inside the 95% interval in ≥ 90% of repeated noisy trials (1% log
/// noise, 40 trials, fixed seeds), for every free parameter of every form. Measured when written:
/// power [0.975, 0.95, 0.925], chinchilla [1.0, 1.0, 0.975, 0.975, 0.975], broken_power [0.975,
/// 0.925, 0.925, 0.95, 1.0, 0.95].
#[test]
fn bootstrap_intervals_cover_the_truth_in_90_percent_of_trials() {
    let trials = 40;
    let check = |form: Form, names: &[&str], c: Vec<f64>| {
        for (name, c) in names.iter().zip(&c) {
            assert!(*c >= 0.9, "{form:?} {name}: coverage {c} ({c:?})");
        }
    };
    let names = ["E", "A", "alpha"];
    let t: Vec<(&str, f64)> = names.iter().copied().zip([1.7, 400.0, 0.34]).collect();
    for form in [Form::Power, Form::LearningCurve] {
        let c = coverage(form, &t, trials, |r| power_data(1.7, 400.0, 0.34, 0.01, r));
        check(form, &names, c);
    }
    let truth = [1.69, 406.4, 410.7, 0.34, 0.28];
    let names = ["E", "A", "B", "alpha", "beta"];
    let t: Vec<(&str, f64)> = names.iter().copied().zip(truth).collect();
    let c = coverage(Form::Chinchilla, &t, trials, |r| chin_data(truth, 0.01, r));
    check(Form::Chinchilla, &names, c);
    let t: Vec<(&str, f64)> = BROKEN_NAMES.iter().copied().zip(BROKEN).collect();
    let c = coverage(Form::BrokenPower, &t, trials, |r| {
        broken_data(BROKEN, 0.01, r)
    });
    check(Form::BrokenPower, &BROKEN_NAMES, c);
}

mod cli {
    use std::path::Path;
    use std::process::{Command, Output};

    fn run_in(dir: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_cloudchamber"))
            .current_dir(dir)
            .args(args)
            .output()
            .expect("binary runs")
    }

    fn ok(o: &Output) -> String {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    const WIDTHS: &str = r#"seed = 0

[task.teacher_student]
input_dim = 8
n_train = 256
n_test = 128

[model]
width = 4
depth = 1

[optim]
optimizer = "adam"
lr = 1e-2

[train]
steps = 60
batch_size = 64
eval_every = 20

[observe]
log_every = 20

[sweep]
name = "widths"
seeds = 2

[sweep.axes]
"model.width" = [4, 8, 16, 32, 64]
"#;

    /// `fit --sweep` reads one point per width: x = the recorded parameter count (10w + 1 for
    /// 8 → w → 1), y = the seed mean of the final test loss (as `summarize` computes it).
    #[test]
    fn fit_reads_points_from_a_sweep_and_a_run() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.toml"), WIDTHS).unwrap();
        ok(&run_in(dir.path(), &["sweep", "s.toml"]));
        let summary = ok(&run_in(
            dir.path(),
            &[
                "summarize",
                "widths",
                "--metric",
                "test_loss",
                "--format",
                "csv",
            ],
        ));
        let means: Vec<(f64, f64)> = summary
            .lines()
            .skip(1)
            .map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                (f[0].parse().unwrap(), f[2].parse().unwrap())
            })
            .collect();
        assert_eq!(means.len(), 5);
        let fit = |extra: &[&str]| -> serde_json::Value {
            let mut args = vec![
                "fit",
                "--sweep",
                "widths",
                "--form",
                "power",
                "--metric",
                "test_loss",
                "--bootstrap",
                "50",
                "--json",
            ];
            args.extend_from_slice(extra);
            serde_json::from_str(&ok(&run_in(dir.path(), &args))).unwrap()
        };
        let v = fit(&["--x", "model.params"]);
        let points = v["points"].as_array().unwrap();
        assert_eq!(points.len(), 5);
        for (p, (w, mean)) in points.iter().zip(&means) {
            assert_eq!(p["x"].as_f64().unwrap(), 10.0 * w + 1.0);
            let y = p["y"].as_f64().unwrap();
            assert!((y - mean).abs() <= 1e-15 * mean, "{y} vs {mean}");
        }
        assert!(v["loss"].as_f64().unwrap().is_finite());
        assert!(v["source"].as_str().unwrap().contains("10 runs"), "{v}");
        // The figure: the law with its band, and the points.
        let svg = dir.path().join("fit.svg");
        fit(&["--x", "model.params", "--plot", svg.to_str().unwrap()]);
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.starts_with("<svg"), "{}", &text[..100.min(text.len())]);
        assert!(text.contains("95% bootstrap band") && text.contains("model.params"));
        // Every run as a point; an expression of keys as x.
        let v = fit(&["--seeds", "all", "--x", "model.width*2"]);
        let xs: Vec<f64> = v["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["x"].as_f64().unwrap())
            .collect();
        assert_eq!(
            xs,
            [8.0, 8.0, 16.0, 16.0, 32.0, 32.0, 64.0, 64.0, 128.0, 128.0]
        );

        // One run's learning curve: test_loss at steps 20, 40, 59 (the last step is evaluated).
        let store = cloudchamber::store::Store::open(&dir.path().join("cloudchamber.db")).unwrap();
        let id = store.sweep_runs("widths").unwrap()[0].0.clone();
        let series = store.series(&id, "test_loss", None).unwrap();
        let o = run_in(
            dir.path(),
            &[
                "fit",
                "--run",
                &id[..10],
                "--form",
                "learning_curve",
                "--fix",
                "E=0",
                "--bootstrap",
                "0",
                "--json",
            ],
        );
        let v: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
        let pts = v["points"].as_array().unwrap();
        assert_eq!(pts.len(), series.len() - 1);
        assert_eq!(pts[0]["x"].as_f64().unwrap(), series[1].0 as f64);
        assert_eq!(pts[0]["y"].as_f64().unwrap(), series[1].1);

        // A key that is nowhere: one line and a hint, exit 2.
        let o = run_in(
            dir.path(),
            &[
                "fit",
                "--sweep",
                "widths",
                "--form",
                "power",
                "--x",
                "model.widht",
            ],
        );
        assert_eq!(o.status.code(), Some(2));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(e.starts_with("error: model.widht: not a swept key"), "{e}");
        assert!(e.contains("hint:"), "{e}");
    }

    /// Bad CSV input: a missing column, a non-positive value, too few points.
    /// Long work is not silent (issue 15, item 23): the Chinchilla fit of the shipped points
    /// (over a second here, 1000 resamples) says so on stderr while stdout, piped, holds only
    /// the result.
    #[test]
    fn a_slow_fit_says_so_on_stderr_and_keeps_stdout_clean() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let csv = root.join("examples/data/chinchilla.csv");
        let o = run_in(
            root,
            &[
                "fit",
                "--csv",
                csv.to_str().unwrap(),
                "--form",
                "chinchilla",
                "--x",
                "Model Size",
                "--c",
                "Training FLOP",
                "--y",
                "loss",
                "--drop-highest",
                "5",
            ],
        );
        let out = ok(&o);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("fitting chinchilla to 240 points (1000 bootstrap resamples)…"),
            "{err}"
        );
        assert!(err.contains("(1000 bootstrap resamples): "), "{err}");
        assert!(!out.contains("fitting"), "{out}");
        assert!(out.starts_with("points: "), "{out}");
    }

    #[test]
    fn bad_csv_input_is_one_line_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.csv"), "N,L\n1e6,3.1\n1e7,2.5\n1e8,0\n").unwrap();
        std::fs::write(dir.path().join("q.csv"), "N,L\n1e6,3.1\n1e7,2.5\n").unwrap();
        let cases: [(&[&str], &str); 3] = [
            (
                &["--x", "N", "--y", "Loss"],
                "error: p.csv: no column `Loss`",
            ),
            (
                &["--x", "N", "--y", "L"],
                "error: data: column y has a value 0",
            ),
            (
                &["--csv", "q.csv", "--x", "N", "--y", "L"],
                "error: data: 2 points for 3 free parameters",
            ),
        ];
        for (args, want) in cases {
            let mut all = vec!["fit", "--form", "power"];
            all.extend_from_slice(args);
            if !args.contains(&"--csv") {
                all.extend(["--csv", "p.csv"]);
            }
            let o = run_in(dir.path(), &all);
            assert_eq!(o.status.code(), Some(2), "{args:?}");
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.starts_with(want), "{args:?}: {e}");
            assert_eq!(
                e.lines().filter(|l| l.starts_with("error")).count(),
                1,
                "{e}"
            );
            assert!(e.contains("hint:"), "{e}");
        }
    }
}
