//! `cloudchamber fit`: scaling laws with bootstrap uncertainty, from a CSV file.

use std::path::PathBuf;

use cloudchamber::fit::{self, Estimate, Form, Options};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The CSV file (first line: column names).
    #[arg(long)]
    csv: PathBuf,
    /// power, chinchilla or learning_curve.
    #[arg(long, default_value = "chinchilla")]
    form: String,
    /// Column of N (model size), or of x / the step t for power and learning_curve.
    #[arg(long, alias = "x")]
    n: String,
    /// Column of the loss.
    #[arg(long)]
    y: String,
    /// Column of D (training tokens), for chinchilla.
    #[arg(long, conflicts_with = "c")]
    d: Option<String>,
    /// Column of training compute C; D = C / (6N), for chinchilla.
    #[arg(long)]
    c: Option<String>,
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
    /// Fix a parameter: NAME=VALUE with NAME one of E, A, B, alpha, beta (repeatable).
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
}

fn invalid(what: &str, message: String, hint: &str) -> Error {
    Error::Invalid {
        what: what.into(),
        message,
        hint: hint.into(),
    }
}

pub fn run(a: Args) -> Result<(), Error> {
    let form = Form::parse(&a.form)?;
    let mut cols = vec![a.n.as_str(), a.y.as_str()];
    if form == Form::Chinchilla {
        match (&a.d, &a.c) {
            (Some(d), None) => cols.push(d),
            (None, Some(c)) => cols.push(c),
            _ => {
                return Err(invalid(
                    "--d/--c",
                    "chinchilla needs one of --d or --c".into(),
                    "e.g. --c \"Training FLOP\"",
                ))
            }
        }
    } else if a.d.is_some() || a.c.is_some() {
        return Err(invalid(
            "--d/--c",
            format!("form {} takes one input column", a.form),
            "drop --d / --c",
        ));
    }
    let (columns, skipped) = fit::read_csv_columns(&a.csv, &cols)?;
    let mut rows: Vec<(f64, f64, f64)> = (0..columns[0].len())
        .map(|i| {
            let x = columns[0][i];
            let d = match (form, &a.c) {
                (Form::Chinchilla, Some(_)) => columns[2][i] / (6.0 * x),
                (Form::Chinchilla, None) => columns[2][i],
                _ => 0.0,
            };
            (x, d, columns[1][i])
        })
        .collect();
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
        d: if form == Form::Chinchilla {
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
    let r = fit::fit(form, &data, &opts)?;
    if a.json {
        let mut v = serde_json::to_value(&r).map_err(|e| invalid("json", e.to_string(), ""))?;
        v["skipped_rows"] = skipped.into();
        v["dropped"] = a.drop_highest.into();
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| invalid("json", e.to_string(), ""))?
        );
        return Ok(());
    }
    println!(
        "{} fit of {} points ({} rows skipped for empty fields, {} highest-loss dropped); Huber δ={} loss={:.6e}",
        a.form, r.n_points, skipped, a.drop_highest, r.delta, r.loss
    );
    if r.bootstrap > 0 {
        println!(
            "bootstrap: {} resamples ({} failed), seed {}",
            r.bootstrap, r.bootstrap_failed, a.seed
        );
    }
    println!(
        "{:<8} {:>14} {:>12} {:>30}",
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
        println!("{:<8} {:>14.6e} {:>12} {:>30}", e.name, e.value, se, ci);
    };
    r.params.iter().for_each(line);
    if !r.derived.is_empty() {
        println!("derived (C = 6ND; N_opt = G (C/6)^a_exp, D_opt = G⁻¹ (C/6)^b_exp):");
        r.derived.iter().for_each(line);
    }
    Ok(())
}
