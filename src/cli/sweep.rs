//! `cloudchamber sweep FILE [--set key=value]… --dry-run`

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cloudchamber::store::{RunStatus, Store};

use cloudchamber::sweep::exec::{self, End, Executor, Local};
use cloudchamber::sweep::{self, format_value, Sweep};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file with a [sweep] section (TOML).
    file: PathBuf,
    /// Override a key of the base experiment, e.g. `--set train.steps=500` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// List every run (id and swept values) and the count; run nothing.
    #[arg(long)]
    dry_run: bool,
    /// Runs trained at once, each on one thread (default: the number of cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Run only run K of the sweep (as a cluster job array element would).
    #[arg(long, value_name = "K")]
    index: Option<usize>,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    // Expanding validates every point, so a bad sweep fails here, before any work.
    let sw = sweep::load(&a.file, &a.set)?;
    if !a.dry_run {
        return execute(store_path, &sw, a.workers, a.index);
    }
    println!("sweep {} ({})", sw.name, sw.path.display());
    if sw.decl.factors.is_empty() && sw.decl.seeds.is_none() {
        println!("no axes: one run");
    }
    let width = sw
        .decl
        .factors
        .iter()
        .map(|f| f.keys.join(" + ").len())
        .chain(sw.decl.seeds.as_ref().map(|_| 4))
        .max()
        .unwrap_or(0);
    for f in &sw.decl.factors {
        let points: Vec<String> = f
            .points
            .iter()
            .map(|p| {
                let vs: Vec<String> = p.iter().map(format_value).collect();
                if vs.len() == 1 {
                    vs[0].clone()
                } else {
                    format!("({})", vs.join(", "))
                }
            })
            .collect();
        println!(
            "  {:width$}  {}  ({}, {})",
            f.keys.join(" + "),
            points.join(" "),
            f.form,
            f.len()
        );
    }
    if let Some(seeds) = &sw.decl.seeds {
        let s: Vec<String> = seeds.iter().map(u64::to_string).collect();
        println!("  {:width$}  {}  ({})", "seed", s.join(" "), seeds.len());
    }
    let digits = (sw.runs.len().max(1) - 1).to_string().len();
    for r in &sw.runs {
        println!("{:>digits$}  {}  {}", r.index, r.id, r.label());
    }
    println!(
        "{} run{} (dry run: nothing was run)",
        sw.runs.len(),
        if sw.runs.len() == 1 { "" } else { "s" }
    );
    Ok(())
}

/// Runs every run of the sweep that the store does not hold finished, `workers` at a time (or
/// only run `index`). A failing or diverging run never stops the others; a killed sweep run
/// again skips what finished and resumes what was interrupted from its checkpoint.
fn execute(
    store_path: &Path,
    sw: &Sweep,
    workers: Option<usize>,
    index: Option<usize>,
) -> Result<(), Error> {
    let n = sw.runs.len();
    if let Some(k) = index {
        if k >= n {
            return Err(Error::Invalid {
                what: format!("--index {k}"),
                message: format!(
                    "sweep {} has {n} runs (0 … {})",
                    sw.name,
                    n.saturating_sub(1)
                ),
                hint: "`--dry-run` lists them".into(),
            });
        }
    }
    // Record the declaration and its runs first, so `status` and `summarize` know the sweep
    // even while (or if) it is interrupted.
    {
        let text = std::fs::read_to_string(&sw.path).map_err(|source| Error::Io {
            path: sw.path.clone(),
            source,
        })?;
        let runs: Vec<(String, Vec<(String, String)>)> = sw
            .runs
            .iter()
            .map(|r| {
                (
                    r.id.clone(),
                    r.values
                        .iter()
                        .map(|(k, v)| (k.clone(), format_value(v)))
                        .collect(),
                )
            })
            .collect();
        Store::open(store_path)?.record_sweep(
            &sw.name,
            &sw.path.display().to_string(),
            &text,
            &runs,
        )?;
    }
    let ends: Vec<End> = match index {
        Some(k) => {
            let end = exec::run_one(store_path, sw, k);
            println!("{}", describe(k, &sw.runs[k].id, &end, &sw.runs[k].label()));
            vec![end]
        }
        None => {
            let cores = std::thread::available_parallelism()
                .map(|c| c.get())
                .unwrap_or(1);
            let workers = workers.unwrap_or(cores).clamp(1, n.max(1));
            println!(
                "sweep {}: {n} run{} on {workers} worker{}",
                sw.name,
                if n == 1 { "" } else { "s" },
                if workers == 1 { "" } else { "s" }
            );
            let bar = ProgressBar::with_draw_target(Some(n as u64), ProgressDrawTarget::hidden());
            if std::io::stderr().is_terminal() {
                bar.set_draw_target(ProgressDrawTarget::stderr());
            }
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} runs  eta {eta}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let report = |k: usize, end: &End| {
                let line = describe(k, &sw.runs[k].id, end, &sw.runs[k].label());
                bar.suspend(|| println!("{line}"));
                bar.inc(1);
            };
            let ends = Local { workers }.execute(store_path, sw, &report);
            bar.finish_and_clear();
            ends
        }
    };
    let count = |f: &dyn Fn(&End) -> bool| ends.iter().filter(|e| f(e)).count();
    let failed = count(&|e| matches!(e, End::Failed(_)));
    let diverged = count(&|e| {
        matches!(
            e,
            End::Trained {
                status: RunStatus::Diverged,
                ..
            } | End::Skipped(RunStatus::Diverged)
        )
    });
    let skipped = count(&|e| matches!(e, End::Skipped(_)));
    let stopped = count(&|e| {
        matches!(
            e,
            End::NotRun
                | End::Trained {
                    status: RunStatus::Interrupted,
                    ..
                }
        )
    });
    let m = ends.len();
    println!(
        "{m} run{}: {} completed, {diverged} diverged, {failed} failed ({skipped} were already in {})",
        if m == 1 { "" } else { "s" },
        m - failed - diverged - stopped,
        store_path.display()
    );
    if stopped > 0 {
        return Err(Error::Interrupted {
            what: format!("sweep {}", sw.name),
            hint: format!("{stopped} runs interrupted or not started; run the same command again to continue (runs resume from their checkpoints)"),
        });
    }
    if failed > 0 {
        return Err(Error::Failed {
            what: format!("sweep {}", sw.name),
            message: format!("{failed} of {m} runs failed"),
            hint:
                "the lines marked `failed` above say why; run the sweep again to retry only those"
                    .into(),
        });
    }
    Ok(())
}

fn describe(i: usize, id: &str, end: &End, label: &str) -> String {
    let what = match end {
        End::Skipped(s) => format!("{} (already in the store)", s.as_str()),
        End::Trained {
            status,
            steps,
            seconds,
            resumed_from,
        } => {
            let resumed = resumed_from
                .map(|s| format!(", resumed from step {s}"))
                .unwrap_or_default();
            format!(
                "{} in {steps} steps, {seconds:.2} s{resumed}",
                status.as_str()
            )
        }
        End::Failed(m) => format!("failed: {m}"),
        End::NotRun => "not started".into(),
    };
    format!("{i:>4}  {id}  {label}  {what}")
}
