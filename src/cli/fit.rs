//! `cloudchamber fit`: scaling laws with bootstrap uncertainty, from a CSV file, a sweep in the
//! store, or one run's learning curve.

use std::path::{Path, PathBuf};

use super::slow;
use cloudchamber::fit::{self, input, Estimate, Form, Options};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["csv", "sweep", "run"])))]
pub struct Args {
    /// Points from a CSV file (first line: column names).
    #[arg(long)]
    csv: Option<PathBuf>,
    /// Points from a sweep in the store: one per configuration (see --seeds).
    #[arg(long)]
    sweep: Option<String>,
    /// A learning curve from one run in the store: x is the step.
    #[arg(long)]
    run: Option<String>,
    /// power, chinchilla, learning_curve or broken_power.
    #[arg(long, default_value = "chinchilla")]
    form: String,
    /// N (model size), or x for one-input forms: a CSV column, or for a sweep `model.params`, a
    /// swept key or a spec key; products and quotients like `C/6/N` work too.
    #[arg(long, alias = "n")]
    x: Option<String>,
    /// The loss: a CSV column, or the metric of runs in the store (default test_loss).
    #[arg(long, alias = "metric")]
    y: Option<String>,
    /// D (training tokens or samples), for chinchilla: a column or key, or an expression such as
    /// `train.steps*train.batch_size`.
    #[arg(long, conflicts_with = "c")]
    d: Option<String>,
    /// CSV: column of training compute C, giving D = C / (6N), for chinchilla.
    #[arg(long)]
    c: Option<String>,
    /// Store: which value of each run's metric (final, best, step=K).
    #[arg(long, default_value = "final")]
    at: String,
    /// Sweep: one point per configuration (mean over seeds) or one per run.
    #[arg(long, value_enum, default_value = "mean")]
    seeds: input::Seeds,
    /// Run: leave out steps before this one (early transients; step 0 is always left out).
    #[arg(long, default_value_t = 1)]
    min_step: u64,
    /// Drop the K points with the highest loss before fitting.
    #[arg(long, default_value_t = 0, value_name = "K")]
    drop_highest: usize,
    /// Bootstrap resamples (0: none).
    #[arg(long, default_value_t = 1000)]
    bootstrap: usize,
    /// Bootstrap seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Huber δ on log residuals.
    #[arg(long, default_value_t = 1e-3)]
    delta: f64,
    /// Fix a parameter: NAME=VALUE with NAME one of E, A, B, alpha, beta, x_break, smoothness
    /// (repeatable).
    #[arg(long, value_name = "NAME=VALUE")]
    fix: Vec<String>,
    /// Chinchilla: report the compute-optimal N and D at this compute C (FLOP).
    #[arg(long, value_name = "C")]
    at_compute: Option<f64>,
    /// Worker threads for the grid starts and the bootstrap.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Also draw the fit to this file (.svg, or .png): points, the law and its 95% bootstrap
    /// band on log–log axes (chinchilla: measured against fitted loss).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
}

fn invalid(what: &str, message: String, hint: &str) -> Error {
    Error::Invalid {
        what: what.into(),
        message,
        hint: hint.into(),
    }
}

/// The points `(x, d, y)` and a line saying where they came from.
fn points(
    store_path: &Path,
    a: &Args,
    form: Form,
) -> Result<(Vec<(f64, f64, f64)>, String), Error> {
    let chin = form.two_inputs();
    if !chin && (a.d.is_some() || a.c.is_some()) {
        return Err(invalid(
            "--d/--c",
            format!("form {} takes one input", a.form),
            "drop --d / --c",
        ));
    }
    if chin && a.d.is_none() && a.c.is_none() {
        return Err(invalid(
            "--d/--c",
            "chinchilla needs D: --d (or --c for a CSV column of compute)".into(),
            "e.g. --c \"Training FLOP\" or --d train.steps*train.batch_size",
        ));
    }
    let need_x = || {
        a.x.as_deref().ok_or_else(|| {
            invalid(
                "--x",
                "the input column or key is missing".into(),
                "e.g. --x model.params (sweep) or --x \"Model Size\" (CSV)",
            )
        })
    };
    if let Some(path) = &a.csv {
        let y = a
            .y
            .as_deref()
            .ok_or_else(|| invalid("--y", "the loss column is missing".into(), "e.g. --y Loss"))?;
        let mut cols = vec![need_x()?, y];
        // Chinchilla's D: a column (or expression), or a compute column C giving D = C/(6N).
        // One-input forms were refused --d/--c above.
        if let Some(d) = a.d.as_deref().or(a.c.as_deref()) {
            cols.push(d);
        }
        let (columns, skipped) = input::read_csv(path, &cols)?;
        let rows = (0..columns[0].len())
            .map(|i| {
                let x = columns[0][i];
                let d = match (columns.get(2), a.c.is_some()) {
                    (Some(c), true) => c[i] / (6.0 * x),
                    (Some(d), false) => d[i],
                    (None, _) => 0.0,
                };
                (x, d, columns[1][i])
            })
            .collect();
        return Ok((
            rows,
            format!(
                "{} ({skipped} rows skipped for empty fields)",
                path.display()
            ),
        ));
    }
    if a.c.is_some() {
        return Err(invalid(
            "--c",
            "--c reads a CSV column".into(),
            "for a sweep give D directly, e.g. --d train.steps*train.batch_size",
        ));
    }
    let store = super::open_existing(store_path)?;
    let metric = a.y.as_deref().unwrap_or("test_loss");
    super::known_metric(&store, "--y", metric)?;
    if let Some(run) = &a.run {
        let rec = store.resolve(run)?;
        let (x, y) = input::run_curve(&store, &rec.id, metric, a.min_step)?;
        let rows = x.into_iter().zip(y).map(|(x, y)| (x, 0.0, y)).collect();
        return Ok((
            rows,
            format!("run {} ({metric} against step)", &rec.id[..12]),
        ));
    }
    let sweep = a.sweep.as_deref().unwrap_or_default();
    let p = input::sweep_points(
        &store,
        &input::SweepQuery {
            sweep,
            metric,
            at: input::Pick::parse(&a.at)?,
            x: need_x()?,
            d: a.d.as_deref(),
            seeds: a.seeds,
        },
    )?;
    let source = format!(
        "sweep {sweep}: {metric} ({}) of {} runs, {}; {} diverged and {} unfinished left out",
        a.at,
        p.runs_used,
        match a.seeds {
            input::Seeds::Mean => "mean over seeds",
            input::Seeds::All => "every run",
        },
        p.diverged,
        p.missing
    );
    let rows = (0..p.y.len()).map(|i| (p.x[i], p.d[i], p.y[i])).collect();
    Ok((rows, source))
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let form = Form::parse(&a.form)?;
    let (mut rows, source) = points(store_path, &a, form)?;
    if a.drop_highest > 0 {
        if a.drop_highest >= rows.len() {
            return Err(invalid(
                "--drop-highest",
                format!("{} ≥ the {} points", a.drop_highest, rows.len()),
                "drop fewer",
            ));
        }
        rows.sort_by(|p, q| p.2.total_cmp(&q.2));
        rows.truncate(rows.len() - a.drop_highest);
    }
    let data = fit::Data {
        x: rows.iter().map(|r| r.0).collect(),
        d: if form.two_inputs() {
            rows.iter().map(|r| r.1).collect()
        } else {
            vec![]
        },
        y: rows.iter().map(|r| r.2).collect(),
    };
    let mut fixed = Vec::new();
    for f in &a.fix {
        let (name, v) = f.split_once('=').ok_or_else(|| {
            invalid(
                "--fix",
                format!("`{f}` is not NAME=VALUE"),
                "e.g. --fix E=1.69",
            )
        })?;
        let v: f64 = v.trim().parse().map_err(|_| {
            invalid(
                "--fix",
                format!("`{v}` is not a number"),
                "e.g. --fix alpha=0.34",
            )
        })?;
        fixed.push((name.trim().to_string(), v));
    }
    let opts = Options {
        delta: a.delta,
        fixed,
        bootstrap: a.bootstrap,
        seed: a.seed,
        threads: a.threads,
        at_compute: a.at_compute,
        ..Options::default()
    };
    let r = {
        let _slow = slow::Slow::start(format!(
            "fitting {} to {} points ({} bootstrap resamples)",
            a.form,
            data.y.len(),
            a.bootstrap
        ));
        fit::fit(form, &data, &opts)?
    };
    if let Some(path) = &a.plot {
        use cloudchamber::plot::{figures, Format};
        let format = match path.extension().and_then(|e| e.to_str()) {
            Some("png") => Format::Png,
            _ => Format::Svg,
        };
        let x_label = match (&a.run, &a.x) {
            (Some(_), _) => "step".to_string(),
            (None, Some(x)) => x.clone(),
            (None, None) => "x".to_string(),
        };
        let y_label = a.y.clone().unwrap_or_else(|| "test_loss".into());
        figures::fit_figure(form, &data, &r, &x_label, &y_label).save(path, format)?;
        eprintln!("wrote {}", path.display());
    }
    if a.json {
        let mut v = serde_json::to_value(&r).map_err(|e| invalid("json", e.to_string(), ""))?;
        v["source"] = source.into();
        v["points"] = (0..data.y.len())
            .map(|i| {
                let mut p = serde_json::json!({ "x": data.x[i], "y": data.y[i] });
                if form.two_inputs() {
                    p["d"] = data.d[i].into();
                }
                p
            })
            .collect::<Vec<_>>()
            .into();
        v["dropped"] = a.drop_highest.into();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| invalid("json", e.to_string(), ""))?
        );
        return Ok(());
    }
    println!("points: {source}");
    println!(
        "{} fit of {} points ({} highest-loss dropped); Huber δ={} loss={:.6e}",
        a.form, r.n_points, a.drop_highest, r.delta, r.loss
    );
    if r.bootstrap > 0 {
        println!(
            "bootstrap: {} resamples ({} failed), seed {}",
            r.bootstrap, r.bootstrap_failed, a.seed
        );
    }
    println!(
        "{:<16} {:>14} {:>12} {:>30}",
        "param", "estimate", "stderr", "95% CI"
    );
    let line = |e: &Estimate| {
        let se = e
            .stderr
            .map_or(if e.fixed { "fixed".into() } else { "-".into() }, |s| {
                format!("{s:.4e}")
            });
        let ci = e
            .ci95
            .map_or("-".into(), |[lo, hi]| format!("[{lo:.5e}, {hi:.5e}]"));
        // A parameter the data do not pin down is marked, and said why below the table.
        let mark = if e.identified == Some(false) {
            "  *"
        } else {
            ""
        };
        println!(
            "{:<16} {:>14.6e} {:>12} {:>30}{mark}",
            e.name, e.value, se, ci
        );
    };
    r.params.iter().for_each(line);
    if !r.derived.is_empty() {
        println!("derived (C = 6ND; N_opt = G (C/6)^a_exp, D_opt = G⁻¹ (C/6)^b_exp):");
        r.derived.iter().for_each(line);
    }
    let loose: Vec<&Estimate> = r
        .params
        .iter()
        .chain(&r.derived)
        .filter(|e| e.identified == Some(false))
        .collect();
    if !loose.is_empty() {
        println!("* not identified by these data (the estimate is not a measurement):");
        for e in loose {
            println!("    {}: {}", e.name, e.why.as_deref().unwrap_or(""));
        }
        println!("  more points, a wider range of x, or fixing a parameter (--fix NAME=VALUE) can identify it");
    }
    Ok(())
}
