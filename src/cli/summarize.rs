//! `cloudchamber summarize SWEEP --metric M [--at final|best|step=K] [--by k1,k2] [--format table|csv]`:
//! statistics over seeds for each configuration of a sweep.

use std::path::Path;

use cloudchamber::fit::input::Pick;
use cloudchamber::store::RunStatus;
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The sweep's name.
    sweep: String,
    /// A whole-network metric, e.g. test_loss, test_acc, train_loss.
    #[arg(long, default_value = "test_loss")]
    metric: String,
    /// Which value of each run: `final` (its last), `best` (the minimum for losses, else the
    /// maximum), or `step=K`.
    #[arg(long, default_value = "final")]
    at: String,
    /// The layer of a per-layer metric (e.g. `--metric q_ratio --layer 3`); whole-network
    /// metrics when left out.
    #[arg(long)]
    layer: Option<u32>,
    /// Group by these swept keys only (default: every swept key except the seed).
    #[arg(long, value_delimiter = ',')]
    by: Vec<String>,
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Output file (Parquet needs one; tables and CSV go to standard output otherwise).
    #[arg(long, short)]
    output: Option<std::path::PathBuf>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Format {
    Table,
    Csv,
    /// Needs `-o FILE`.
    Parquet,
}

/// Mean, sample standard deviation (n − 1), standard error, min, max of the values.
fn stats(v: &[f64]) -> (f64, f64, f64, f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    let std = if v.len() > 1 {
        (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    } else {
        f64::NAN
    };
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (mean, std, std / n.sqrt(), min, max)
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let bad = |message: String, hint: &str| Error::Invalid {
        what: "summarize".into(),
        message,
        hint: hint.into(),
    };
    let at = Pick::parse(&a.at)?;
    let store = super::open_existing(store_path)?;
    let runs = store.sweep_runs(&a.sweep)?;
    super::known_metric(&store, "--metric", &a.metric)?;
    let swept: Vec<String> = runs
        .first()
        .map(|(_, v)| v.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    for k in &a.by {
        if !swept.contains(k) {
            return Err(bad(
                format!("--by {k}: not a swept key of sweep {}", a.sweep),
                &format!("swept keys: {}", swept.join(", ")),
            ));
        }
    }
    let keys: Vec<String> = if a.by.is_empty() {
        swept.iter().filter(|k| *k != "seed").cloned().collect()
    } else {
        a.by.clone()
    };

    // Group → (values, diverged count, missing count), in first-seen order.
    let mut groups: Vec<(Vec<String>, Vec<f64>, usize, usize)> = Vec::new();
    for (id, vals) in &runs {
        let label: Vec<String> = keys
            .iter()
            .map(|k| {
                vals.iter()
                    .find(|(kk, _)| kk == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            })
            .collect();
        let gi = match groups.iter().position(|g| g.0 == label) {
            Some(i) => i,
            None => {
                groups.push((label, Vec::new(), 0, 0));
                groups.len() - 1
            }
        };
        let rec = store.run(id)?;
        match rec.map(|r| r.status) {
            Some(RunStatus::Diverged) => groups[gi].2 += 1,
            Some(RunStatus::Completed) => {
                let series = store.series(id, &a.metric, a.layer)?;
                match at.pick(&a.metric, &series) {
                    Some(v) => groups[gi].1.push(v),
                    None => groups[gi].3 += 1,
                }
            }
            _ => groups[gi].3 += 1,
        }
    }
    let header: Vec<String> = keys
        .iter()
        .cloned()
        .chain(
            [
                "n", "mean", "std", "stderr", "min", "max", "diverged", "missing",
            ]
            .map(String::from),
        )
        .collect();
    let rows: Vec<(Vec<String>, usize, [f64; 5], usize, usize)> = groups
        .iter()
        .map(|(label, vals, diverged, missing)| {
            let (mean, std, se, min, max) = if vals.is_empty() {
                (f64::NAN, f64::NAN, f64::NAN, f64::NAN, f64::NAN)
            } else {
                stats(vals)
            };
            (
                label.clone(),
                vals.len(),
                [mean, std, se, min, max],
                *diverged,
                *missing,
            )
        })
        .collect();
    if a.format == Format::Parquet {
        use cloudchamber::export::parquet::{write_table, TableColumn};
        let path = a.output.clone().ok_or_else(|| {
            bad(
                "parquet needs an output file".into(),
                "add `-o summary.parquet`",
            )
        })?;
        let mut columns: Vec<(String, TableColumn)> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                // Typed as the values are, so pandas sorts `optim.lr` as numbers.
                let values: Vec<&str> = rows.iter().map(|r| r.0[i].as_str()).collect();
                (k.clone(), TableColumn::typed(&values))
            })
            .collect();
        columns.push((
            "n".into(),
            TableColumn::I64(rows.iter().map(|r| r.1 as i64).collect()),
        ));
        for (j, name) in ["mean", "std", "stderr", "min", "max"].iter().enumerate() {
            columns.push((
                name.to_string(),
                TableColumn::F64(rows.iter().map(|r| r.2[j]).collect()),
            ));
        }
        columns.push((
            "diverged".into(),
            TableColumn::I64(rows.iter().map(|r| r.3 as i64).collect()),
        ));
        columns.push((
            "missing".into(),
            TableColumn::I64(rows.iter().map(|r| r.4 as i64).collect()),
        ));
        let mut f = std::fs::File::create(&path).map_err(Error::io(path.clone()))?;
        write_table(&mut f, &columns).map_err(|e| Error::Failed {
            what: path.display().to_string(),
            message: e.to_string(),
            hint: "check the disk and the path".into(),
        })?;
        eprintln!("wrote {} configurations to {}", rows.len(), path.display());
        return Ok(());
    }
    let mut text = String::new();
    let mut table: Vec<Vec<String>> = Vec::new();
    match a.format {
        Format::Table => {
            text.push_str(&format!(
                "sweep {}: {} ({}) over seeds\n",
                a.sweep, a.metric, a.at
            ));
            table.push(header.iter().map(|h| h.to_string()).collect());
        }
        _ => {
            text.push_str(&csv_row(&header));
            text.push('\n');
        }
    }
    for (label, n, s5, diverged, missing) in &rows {
        let mut cells: Vec<String> = label.clone();
        cells.push(n.to_string());
        for v in s5 {
            cells.push(if a.format == Format::Csv {
                format!("{v}")
            } else {
                format!("{v:.4e}")
            });
        }
        cells.push(diverged.to_string());
        cells.push(missing.to_string());
        match a.format {
            Format::Table => table.push(cells),
            _ => {
                text.push_str(&csv_row(&cells));
                text.push('\n');
            }
        }
    }
    // Each column as wide as its widest cell (a swept value prints whole, as it round-trips:
    // 9.48683298050514e-3), so the columns stay in line.
    text.push_str(&align(&table));
    match &a.output {
        Some(path) => std::fs::write(path, text).map_err(Error::io(path.clone()))?,
        None => print!("{text}"),
    }
    Ok(())
}

/// Right-aligned columns, each as wide as its widest cell, two spaces apart.
fn align(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|j| {
            rows.iter()
                .filter_map(|r| r.get(j))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

/// One CSV line, each field quoted when it needs it.
fn csv_row<S: AsRef<str>>(cells: &[S]) -> String {
    let quoted: Vec<_> = cells
        .iter()
        .map(|c| cloudchamber::export::csv::field(c.as_ref()))
        .collect();
    quoted.join(",")
}
