//! `cloudchamber::fit`: exact recovery on noise-free data, fixed parameters, bootstrap coverage.

use cloudchamber::engine::Rng;
use cloudchamber::fit::{fit, Data, Form, Options};

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

#[test]
fn bootstrap_interval_covers_truth_in_most_trials() {
    let mut covered = 0;
    let trials = 20;
    for t in 0..trials {
        let mut rng = Rng::stream(t, "fit-test-noise");
        let data = power_data(1.7, 400.0, 0.34, 0.01, &mut rng);
        let opts = Options {
            bootstrap: 100,
            seed: t,
            ..Options::default()
        };
        let r = fit(Form::Power, &data, &opts).unwrap();
        let alpha = r.params.iter().find(|e| e.name == "alpha").unwrap();
        let [lo, hi] = alpha.ci95.unwrap();
        assert!(alpha.stderr.unwrap() > 0.0);
        if lo <= 0.34 && 0.34 <= hi {
            covered += 1;
        }
    }
    assert!(covered >= 14, "covered {covered}/{trials}");
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
