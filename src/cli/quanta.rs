//! `cloudchamber quanta --sweep NAME [--x KEY]`: the quantization model of scaling beside a
//! multitask-sparse-parity sweep. Per run: the held-out loss, and how many quanta (subtasks)
//! it has learned; then the measured exponents of loss and of learned quanta against x, beside
//! the exponents the model predicts from the Zipf exponent (asymptotic) and from the measured
//! range of learned quanta with this many subtasks (see `cloudchamber::theory::quanta`).
//! Without `--sweep`: the predictions for `--n-tasks`, `--zipf` over `--learned LO:HI`.

use std::path::Path;

use cloudchamber::coordcheck::log_slope;
use cloudchamber::fit::input::{run_quantity, Pick};
use cloudchamber::store::{RunStatus, Store};
use cloudchamber::theory::quanta::Quanta;
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A sweep of multitask sparse parity in the store.
    #[arg(long)]
    sweep: Option<String>,
    /// The swept quantity: `model.params`, a swept key or a spec key.
    #[arg(long, default_value = "model.params")]
    x: String,
    /// Which evaluation of each run: `best` (its lowest test loss; early stopping, as the
    /// paper's data-scaling runs) or `final`.
    #[arg(long, default_value = "best")]
    at: String,
    /// A subtask counts as learned at this held-out accuracy or above.
    #[arg(long, default_value_t = 0.9)]
    acc: f64,
    /// Subtasks with fewer held-out examples are not counted (their accuracy is noise).
    #[arg(long, default_value_t = 20)]
    min_count: usize,
    /// Without a sweep: the number of subtasks.
    #[arg(long, default_value_t = 500)]
    n_tasks: usize,
    /// Without a sweep: the Zipf exponent α + 1 of their frequencies.
    #[arg(long, default_value_t = 1.4)]
    zipf: f64,
    /// Without a sweep: the range of learned quanta, LO:HI.
    #[arg(long, default_value = "2:30")]
    learned: String,
}

fn invalid(what: &str, message: String, hint: &str) -> Error {
    Error::Invalid {
        what: what.into(),
        message,
        hint: hint.into(),
    }
}

/// One run's point.
struct Point {
    x: f64,
    loss: f64,
    step: u64,
    learned: usize,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let Some(sweep) = &a.sweep else {
        let (lo, hi) = parse_range(&a.learned)?;
        let q = Quanta::zipf(a.n_tasks, a.zipf);
        if hi >= a.n_tasks {
            return Err(invalid(
                "--learned",
                format!("{hi} quanta of {} subtasks", a.n_tasks),
                "HI must be below --n-tasks",
            ));
        }
        print_predictions(&q, lo, hi, None);
        return Ok(());
    };
    let pick = match a.at.as_str() {
        "best" => Pick::Best,
        "final" => Pick::Final,
        other => {
            return Err(invalid(
                "--at",
                format!("`{other}`"),
                "expected best or final",
            ))
        }
    };
    let store = super::open_existing(store_path)?;
    let runs = store.sweep_runs(sweep)?;
    let mut task: Option<(usize, f64)> = None;
    let mut points = Vec::new();
    let mut left_out = 0;
    for (id, swept) in &runs {
        let Some(rec) = store.run(id)? else {
            left_out += 1;
            continue;
        };
        if rec.status != RunStatus::Completed {
            left_out += 1;
            continue;
        }
        let spec: serde_json::Value = serde_json::from_str(&rec.spec_json).map_err(|e| {
            invalid(
                id,
                format!("stored spec is not JSON: {e}"),
                "the store may be damaged",
            )
        })?;
        let Some(mt) = spec.pointer("/task/multitask_sparse_parity") else {
            return Err(invalid(
                sweep,
                format!("run {} is not multitask sparse parity", &id[..12]),
                "the quanta model reads a [task.multitask_sparse_parity] sweep",
            ));
        };
        let n_tasks = mt["n_tasks"].as_u64().unwrap_or(0) as usize;
        let zipf = mt["zipf_exponent"].as_f64().unwrap_or(f64::NAN);
        match task {
            None => task = Some((n_tasks, zipf)),
            Some(t) if t != (n_tasks, zipf) => {
                return Err(invalid(
                    sweep,
                    "its runs differ in n_tasks or zipf_exponent".into(),
                    "compare sweeps over one set of subtask frequencies",
                ))
            }
            Some(_) => {}
        }
        let x = run_quantity(&store, id, swept, &spec, &a.x)?;
        let series = store.series(id, "test_loss", None)?;
        let chosen = match pick {
            Pick::Best => series
                .iter()
                .filter(|p| p.1.is_finite())
                .min_by(|p, q| p.1.total_cmp(&q.1))
                .copied(),
            _ => series.last().copied(),
        };
        let Some((step, loss)) = chosen else {
            left_out += 1;
            continue;
        };
        let learned = learned_at(&store, id, n_tasks, step, a.acc, a.min_count)?;
        points.push(Point {
            x,
            loss,
            step,
            learned,
        });
    }
    let Some((n_tasks, zipf)) = task else {
        return Err(invalid(
            sweep,
            "no completed runs".into(),
            "run the sweep first (cloudchamber sweep FILE)",
        ));
    };
    if points.len() < 2 {
        return Err(invalid(
            sweep,
            format!("{} completed run(s): a slope needs two", points.len()),
            "run more of the sweep",
        ));
    }
    points.sort_by(|p, q| p.x.total_cmp(&q.x));
    let q = Quanta::zipf(n_tasks, zipf);
    println!(
        "quanta model (Michaud et al. 2023) beside sweep {sweep}: {n_tasks} subtasks, Zipf exponent {zipf}; {} runs ({left_out} left out: not completed)",
        points.len()
    );
    println!(
        "learned: held-out accuracy ≥ {} on a subtask with ≥ {} held-out examples; L(n) = ln 2 · Σ_(k>n) p_k",
        a.acc, a.min_count
    );
    println!(
        "{:>14}  {:>12}  {:>8}  {:>8}  {:>10}",
        a.x,
        format!("test_loss ({})", a.at),
        "step",
        "learned",
        "L(learned)"
    );
    for p in &points {
        println!(
            "{:>14}  {:>12.5}  {:>8}  {:>8}  {:>10.5}",
            fmt_x(p.x),
            p.loss,
            p.step,
            p.learned,
            q.loss(p.learned)
        );
    }
    let xs: Vec<f64> = points.iter().map(|p| p.x).collect();
    let losses: Vec<f64> = points.iter().map(|p| p.loss).collect();
    let measured = -log_slope(&xs, &losses);
    println!("measured: test loss ∝ x^−{measured:.3} (log–log least squares over the runs; `cloudchamber fit --sweep {sweep} --form power --x {} --at {}` gives its interval)", a.x, a.at);
    let counted: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.learned > 0)
        .map(|p| (p.x, p.learned as f64))
        .collect();
    let s = if counted.len() >= 2 && counted.iter().any(|c| c.1 != counted[0].1) {
        let (cx, cn): (Vec<f64>, Vec<f64>) = counted.iter().copied().unzip();
        let s = log_slope(&cx, &cn);
        println!("measured: learned quanta ∝ x^{s:.3}");
        Some(s)
    } else {
        println!("measured: learned quanta do not vary over the runs: no slope");
        None
    };
    let lo = points.iter().map(|p| p.learned).min().unwrap_or(0).max(1);
    // All learned is loss 0, off a log scale: the range stops one short.
    let hi = points
        .iter()
        .map(|p| p.learned)
        .max()
        .unwrap_or(0)
        .min(n_tasks - 1);
    if lo < hi {
        print_predictions(&q, lo, hi, s);
    } else {
        println!(
            "predicted: asymptotic α = {:.3} (loss against parameters), α/(α+1) = {:.3} (against data); the learned range is too narrow for a finite-T prediction",
            q.params_exponent(),
            q.data_exponent()
        );
    }
    Ok(())
}

/// The number of learned subtasks of run `id` at `step`.
fn learned_at(
    store: &Store,
    id: &str,
    n_tasks: usize,
    step: u64,
    acc: f64,
    min_count: usize,
) -> Result<usize, Error> {
    let mut n = 0;
    for t in 0..n_tasks {
        let count = store
            .series(id, &format!("subtask_count_{t}"), None)?
            .first()
            .map_or(0.0, |p| p.1);
        if count < min_count as f64 {
            continue;
        }
        let a = store
            .series(id, &format!("subtask_acc_{t}"), None)?
            .iter()
            .find(|p| p.0 == step)
            .map_or(0.0, |p| p.1);
        if a >= acc {
            n += 1;
        }
    }
    Ok(n)
}

fn print_predictions(q: &Quanta, lo: usize, hi: usize, s: Option<f64>) {
    println!(
        "predicted (asymptotic, infinitely many quanta): loss ∝ N^−{:.3} if learned quanta ∝ N (parameters); ∝ D^−{:.3} if a quantum needs a fixed number of examples (data)",
        q.params_exponent(),
        q.data_exponent()
    );
    let e = q.effective_exponent(lo, hi);
    println!(
        "predicted over {lo} … {hi} learned quanta of {}: loss ∝ n^−{e:.3} (the cut at {} steepens the tail)",
        q.p.len(),
        q.p.len()
    );
    if let Some(s) = s {
        println!(
            "predicted from the measured learned quanta: loss ∝ x^−{:.3} ({e:.3} × {s:.3})",
            e * s
        );
    }
}

fn parse_range(text: &str) -> Result<(usize, usize), Error> {
    let bad = || {
        invalid(
            "--learned",
            format!("`{text}`"),
            "expected LO:HI with 1 ≤ LO < HI, e.g. 2:30",
        )
    };
    let (a, b) = text.split_once(':').ok_or_else(bad)?;
    let (lo, hi): (usize, usize) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if lo < 1 || lo >= hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

fn fmt_x(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        format!("{x:.4e}")
    }
}
