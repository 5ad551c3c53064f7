//! In-context regression end to end: the baselines' rows in a run match their closed forms on
//! the run's own prompts, a small transformer learns to use its context (below averaging, near
//! least squares), training prompts are a function of the seed and the step (bit-identical runs,
//! the same batches after a resume), and the task's keys are checked.

use std::path::Path;

use cloudchamber::spec;
use cloudchamber::store::MetricRow;
use cloudchamber::train;

/// d = 3, prompts of 7 points, 4,000 steps of a three-layer model: 15 s (at 2,000 steps the
/// error past k = d is still 0.3, a plateau the model leaves later).
const ICL: &str = r#"
seed = 3
[task.in_context]
dim = 3
points = 7
n_test = 1000
ridge_lambdas = [0.5]
[model.gpt]
n_layer = 3
d_model = 32
n_head = 2
[optim]
optimizer = "adam"
lr = 1e-3
[train]
steps = 4000
batch_size = 64
eval_every = 2000
[observe]
log_every = 100
"#;

/// One training at a time in this file: the resume test raises the process-wide interrupt
/// flag, which would stop any run training beside it.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(text: &str, overrides: &[String]) -> (train::Outcome, Vec<MetricRow>) {
    let _one = one_at_a_time();
    let spec = spec::parse(text, Path::new("icl.toml"), overrides).unwrap();
    let data = spec.task.generate(spec.seed, Path::new(".")).unwrap();
    let mut rows: Vec<MetricRow> = Vec::new();
    let out = train::train(&spec, &data, &mut rows, None, false, &mut |_, _| {}).unwrap();
    (out, rows)
}

fn at(rows: &[MetricRow], step: u64, name: &str) -> f64 {
    rows.iter()
        .find(|r| r.step == step && r.name == name)
        .unwrap_or_else(|| panic!("no {name} at step {step}"))
        .value
}

/// Least squares: `1 − k/d` below `d` examples and 0 from `d` on; averaging `(d + 1)/k`
/// (theory::icl's module comment derives both). Each closed form lies inside the run's 95%
/// bootstrap interval over its 1,000 prompts (least squares past `d`: 0 up to rounding).
#[test]
fn baseline_rows_match_their_closed_forms_and_the_model_learns_in_context() {
    let (out, rows) = run(ICL, &[]);
    assert_eq!(out.status, cloudchamber::store::RunStatus::Completed);
    let d = 3.0;
    for k in 0..7usize {
        let ls = at(&rows, 0, &format!("icl_least_squares_k{k}"));
        let want = if (k as f64) < d {
            1.0 - k as f64 / d
        } else {
            0.0
        };
        let (lo, hi) = (
            at(&rows, 0, &format!("icl_least_squares_k{k}_lo")),
            at(&rows, 0, &format!("icl_least_squares_k{k}_hi")),
        );
        assert!(
            (lo <= want && want <= hi) || (ls - want).abs() < 1e-6,
            "least squares k={k}: {ls} [{lo}, {hi}] vs {want}"
        );
        if k > 0 {
            let name = format!("icl_averaging_k{k}");
            let avg = at(&rows, 0, &name);
            let (lo, hi) = (
                at(&rows, 0, &format!("{name}_lo")),
                at(&rows, 0, &format!("{name}_hi")),
            );
            let want = (d + 1.0) / k as f64;
            assert!(
                lo <= want && want <= hi,
                "averaging k={k}: {avg} [{lo}, {hi}] vs {want}"
            );
        }
    }
    // The model: no better than chance with no examples, and with k ≥ d examples far below
    // averaging and within a small distance of least squares' 0.
    let last = out.steps;
    let e0 = at(&rows, last, "icl_error_k0");
    assert!((0.8..1.25).contains(&e0), "k = 0: {e0}");
    for k in 3..7usize {
        let e = at(&rows, last, &format!("icl_error_k{k}"));
        let avg = at(&rows, 0, &format!("icl_averaging_k{k}"));
        assert!(
            e < 0.25 * avg && e < 0.3,
            "k={k}: model {e} vs averaging {avg}"
        );
    }
    // Ridge (λ = 0.5) once k ≥ d: biased towards 0, so above least squares' 0, below averaging,
    // and falling as examples outweigh the penalty.
    let ridge: Vec<f64> = (3..7)
        .map(|k| at(&rows, 0, &format!("icl_ridge_0.5_k{k}")))
        .collect();
    for (k, r) in (3..7usize).zip(&ridge) {
        let avg = at(&rows, 0, &format!("icl_averaging_k{k}"));
        assert!(
            *r > 1e-6 && *r < 0.5 * avg,
            "ridge k={k}: {r} (averaging {avg})"
        );
    }
    assert!(ridge.windows(2).all(|w| w[1] < w[0]), "{ridge:?}");
    // Retrieval-chosen exemplars are scored too, for the model and the baselines.
    assert!(rows
        .iter()
        .any(|r| r.name == "icl_error_nearest_k3" && r.step == last));
    assert!(rows
        .iter()
        .any(|r| r.name == "icl_least_squares_nearest_k3" && r.step == 0));
    println!(
        "model at step {last}: {}",
        (0..7)
            .map(|k| format!("{:.3}", at(&rows, last, &format!("icl_error_k{k}"))))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Fresh training prompts come from the seed and the step: two runs are bit-identical, a
/// curriculum changes the batches, and the seed does.
#[test]
fn fresh_prompts_are_reproducible() {
    let short = [
        "train.steps=60".to_string(),
        "train.eval_every=30".to_string(),
    ];
    let (_, a) = run(ICL, &short);
    let (_, b) = run(ICL, &short);
    let bits = |rows: &[MetricRow]| -> Vec<(u64, String, u64)> {
        rows.iter()
            .map(|r| (r.step, r.name.clone(), r.value.to_bits()))
            .collect()
    };
    assert_eq!(bits(&a), bits(&b));
    let loss = |rows: &[MetricRow]| at(rows, 59, "train_loss");
    let mut seed = short.to_vec();
    seed.push("seed=4".into());
    assert_ne!(loss(&a), loss(&run(ICL, &seed).1));
    let curriculum = ICL.replace(
        "[model.gpt]",
        "[task.in_context.curriculum]\ndims_start = 1\npoints_start = 2\ninterval = 1000\n[model.gpt]",
    );
    let (_, c) = run(&curriculum, &short);
    assert_ne!(loss(&a), loss(&c));
}

/// Keys are checked with the key named: a sparse class sparser than its dimension, a penalty
/// listed twice (its rows would collide), a retrieval pool past the bound, a tied read-out, a
/// classification loss.
#[test]
fn bad_keys_are_named() {
    let err = |text: &str, over: &[&str]| {
        let over: Vec<String> = over.iter().map(|s| s.to_string()).collect();
        match spec::parse(text, Path::new("icl.toml"), &over) {
            Err(e) => e.to_string(),
            Ok(s) => {
                let _one = one_at_a_time();
                let data = s.task.generate(s.seed, Path::new(".")).unwrap();
                let mut rows: Vec<MetricRow> = Vec::new();
                train::train(&s, &data, &mut rows, None, false, &mut |_, _| {})
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_default()
            }
        }
    };
    let e = err(
        ICL,
        &[
            "task.in_context.function=\"sparse_linear\"",
            "task.in_context.sparsity=5",
        ],
    );
    assert!(e.contains("task.in_context.sparsity"), "{e}");
    let e = err(ICL, &["task.in_context.ridge_lambdas=[0.1, 0.10]"]);
    assert!(
        e.contains("task.in_context.ridge_lambdas") && e.contains("twice"),
        "{e}"
    );
    let e = err(ICL, &["task.in_context.pool=1000000"]);
    assert!(e.contains("task.in_context.pool"), "{e}");
    let e = err(ICL, &["model.gpt.tying=\"tied\""]);
    assert!(e.contains("model.gpt.tying"), "{e}");
    let e = err(ICL, &["train.loss=\"cross_entropy\""]);
    assert!(e.contains("train.loss"), "{e}");
    // An MLP cannot read prompts: the error names the task and what it yields.
    let mlp = ICL.replace("[model.gpt]\nn_layer = 3\nd_model = 32\nn_head = 2\n", "");
    let e = err(&mlp, &[]);
    assert!(
        e.contains("task.in_context") && e.contains("in-context prompts"),
        "{e}"
    );
}

/// A run stopped mid-way (the interrupt flag raised from the progress callback at step 37) and
/// resumed from its checkpoint ends bit-identical to an uninterrupted run: the fresh prompts of
/// each step do not depend on what came before. (The only test in this file that raises the
/// process-wide flag.)
#[test]
fn a_resumed_run_draws_the_same_prompts() {
    let _one = one_at_a_time();
    let over = [
        "train.steps=80".to_string(),
        "train.eval_every=40".to_string(),
    ];
    let spec = spec::parse(ICL, Path::new("icl.toml"), &over).unwrap();
    let data = spec.task.generate(spec.seed, Path::new(".")).unwrap();
    let bits = |rows: &[MetricRow]| -> Vec<(u64, String, u64)> {
        let mut v: Vec<_> = rows
            .iter()
            .map(|r| (r.step, r.name.clone(), r.value.to_bits()))
            .collect();
        v.sort();
        v
    };
    let mut whole: Vec<MetricRow> = Vec::new();
    train::train(&spec, &data, &mut whole, None, false, &mut |_, _| {}).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut cut: Vec<MetricRow> = Vec::new();
    let first = train::train(
        &spec,
        &data,
        &mut cut,
        Some(dir.path()),
        false,
        &mut |s, _| {
            if s == 37 {
                cloudchamber::interrupt::request();
            }
        },
    )
    .unwrap();
    cloudchamber::interrupt::reset();
    assert_eq!(first.status, cloudchamber::store::RunStatus::Interrupted);
    assert_eq!(first.steps, 37);
    let second = train::train(
        &spec,
        &data,
        &mut cut,
        Some(dir.path()),
        true,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(second.status, cloudchamber::store::RunStatus::Completed);
    assert_eq!(bits(&whole), bits(&cut));
}
