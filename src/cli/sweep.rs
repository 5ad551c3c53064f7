//! `cloudchamber sweep FILE [--set key=value]… [--dry-run] [--executor local|slurm]`

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cloudchamber::store::{RunStatus, Store};

use cloudchamber::sweep::exec::{self, End, Executor, Local};
use cloudchamber::sweep::{self, format_value, shard, slurm, Sweep};
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
    #[arg(long, value_parser = super::positive)]
    workers: Option<usize>,
    /// Train every run alone, one per worker: no lockstep groups (by default the seeds of a
    /// small MLP train together in SIMD lanes, with the same results; README: Lockstep).
    #[arg(long)]
    no_lockstep: bool,
    /// Run only run K of the sweep (as a cluster job array element would).
    #[arg(long, value_name = "K")]
    index: Option<usize>,
    /// Where the runs execute: this machine, or a Slurm cluster (one job array; see
    /// README.md, Running on a cluster).
    #[arg(long, value_enum, default_value_t = ExecutorKind::Local)]
    executor: ExecutorKind,
    #[command(flatten)]
    slurm: SlurmArgs,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum ExecutorKind {
    Local,
    Slurm,
}

/// Options of `--executor slurm`, passed on to `sbatch`.
#[derive(clap::Args, Debug, Default)]
#[command(next_help_heading = "Slurm (with --executor slurm)")]
struct SlurmArgs {
    /// sbatch --partition.
    #[arg(long, value_name = "P")]
    partition: Option<String>,
    /// Time limit per run (sbatch --time, e.g. 30:00); at the limit a run checkpoints and a
    /// later submission resumes it.
    #[arg(long, value_name = "T")]
    time: Option<String>,
    /// Cores per run (default: the largest train.threads of the runs).
    #[arg(long, value_name = "C")]
    cpus_per_task: Option<usize>,
    /// Memory per run (sbatch --mem, e.g. 2G).
    #[arg(long, value_name = "M")]
    mem: Option<String>,
    /// At most K runs at once (--array=…%K).
    #[arg(long, value_name = "K")]
    array_parallelism: Option<usize>,
    /// Let Slurm requeue a preempted run or one whose node failed; it resumes from its checkpoint.
    #[arg(long)]
    requeue: bool,
    /// Any other sbatch option, e.g. `--sbatch-arg=--account=lab` (repeatable).
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_arg: Vec<String>,
}

impl SlurmArgs {
    /// The first option given, for the error that says it needs `--executor slurm`.
    fn first_given(&self) -> Option<&'static str> {
        [
            ("--partition", self.partition.is_some()),
            ("--time", self.time.is_some()),
            ("--cpus-per-task", self.cpus_per_task.is_some()),
            ("--mem", self.mem.is_some()),
            ("--array-parallelism", self.array_parallelism.is_some()),
            ("--requeue", self.requeue),
            ("--sbatch-arg", !self.sbatch_arg.is_empty()),
        ]
        .into_iter()
        .find_map(|(name, given)| given.then_some(name))
    }
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    // Expanding validates every point, so a bad sweep fails here, before any work.
    let sw = sweep::load(&a.file, &a.set)?;
    let misplaced = match a.executor {
        ExecutorKind::Local => a.slurm.first_given(),
        ExecutorKind::Slurm if a.workers.is_some() => Some("--workers"),
        ExecutorKind::Slurm if a.index.is_some() => Some("--index"),
        ExecutorKind::Slurm => None,
    };
    if let Some(flag) = misplaced {
        let (message, hint) = match a.executor {
            ExecutorKind::Local => (
                "is an option of the Slurm executor",
                "add `--executor slurm`, or drop it",
            ),
            ExecutorKind::Slurm => (
                "is an option of the local executor",
                "Slurm runs each run as one array element; use --array-parallelism K to limit how many run at once",
            ),
        };
        return Err(Error::Invalid {
            what: flag.into(),
            message: message.into(),
            hint: hint.into(),
        });
    }
    if !a.dry_run {
        return match a.executor {
            ExecutorKind::Local => execute(store_path, &sw, a.workers, a.index, !a.no_lockstep),
            ExecutorKind::Slurm => submit(store_path, &sw, &a.set, a.slurm),
        };
    }
    let path = cloudchamber::names::shown(&sw.path.display().to_string());
    println!("sweep {} ({path})", sw.name);
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
    // `key=value` cells padded to the widest of their column, so the values line up.
    let cells: Vec<Vec<String>> = sw
        .runs
        .iter()
        .map(|r| {
            r.values
                .iter()
                .map(|(k, v)| format!("{k}={}", format_value(v)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..cells.iter().map(Vec::len).max().unwrap_or(0))
        .map(|j| {
            cells
                .iter()
                .filter_map(|c| c.get(j))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for (r, c) in sw.runs.iter().zip(&cells) {
        let label: Vec<String> = c
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:w$}"))
            .collect();
        let label = cloudchamber::names::shown(label.join("  ").trim_end());
        println!("{:>digits$}  {}  {label}", r.index, r.id);
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
    lockstep: bool,
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
    record(&mut Store::open(store_path)?, sw)?;
    let ends: Vec<End> = match index {
        Some(k) => {
            let say = |k: usize, end: &End| {
                println!("{}", describe(k, &sw.runs[k].id, end, &sw.runs[k].label()));
            };
            let end = exec::run_one_waiting(store_path, sw, k, &say);
            say(k, &end);
            vec![end]
        }
        None => {
            let cores = std::thread::available_parallelism()
                .map(|c| c.get())
                .unwrap_or(1);
            let workers = workers.unwrap_or(cores).clamp(1, n.max(1));
            let groups: Vec<usize> = exec::units(sw, lockstep)
                .iter()
                .map(Vec::len)
                .filter(|&k| k > 1)
                .collect();
            let grouped = if groups.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} of them in {} lockstep group{}",
                    groups.iter().sum::<usize>(),
                    groups.len(),
                    if groups.len() == 1 { "" } else { "s" }
                )
            };
            println!(
                "sweep {}: {n} run{} on {workers} worker{}{grouped}",
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
                // A run another process trains is only announced; it counts when it ends.
                if !matches!(end, End::Busy { .. }) {
                    bar.inc(1);
                }
            };
            let ends = Local { workers, lockstep }.execute(store_path, sw, &report);
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
    let interrupted = count(&|e| {
        matches!(
            e,
            End::Trained {
                status: RunStatus::Interrupted,
                ..
            }
        )
    });
    let not_started = count(&|e| matches!(e, End::NotRun | End::Busy { .. }));
    let m = ends.len();
    let stopped = interrupted + not_started;
    let mut line = format!(
        "{m} run{}: {} completed, {diverged} diverged, {failed} failed",
        if m == 1 { "" } else { "s" },
        m - failed - diverged - stopped,
    );
    if stopped > 0 {
        line += &format!(", {interrupted} interrupted, {not_started} not started");
    }
    println!(
        "{line} ({skipped} were already in {})",
        store_path.display()
    );
    // Ctrl-C or SIGTERM ends the sweep as interrupted (128 + the signal) whatever else
    // happened, so a script can tell a stop from a failure.
    if stopped > 0 || cloudchamber::interrupt::requested() {
        return Err(Error::Interrupted {
            what: format!("sweep {}", sw.name),
            hint: format!("{interrupted} runs interrupted and {not_started} not started; run the same command again to continue (runs resume from their checkpoints){}",
                if failed > 0 { format!("; {failed} failed (the lines marked `failed` above say why)") } else { String::new() }),
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

/// Records the sweep's declaration and its runs in the store ([`sweep::record`]). A sweep of
/// that name recorded with other runs (the same file with other `--set`, or an edited file) is
/// redefined, and that is said on stderr: its earlier runs stay in the store, but `status`,
/// `summarize` and `export --sweep` follow the new list.
fn record(store: &mut Store, sw: &Sweep) -> Result<(), Error> {
    let before = sweep::record(store, sw)?;
    if !before.is_empty() {
        let now: std::collections::HashSet<&str> = sw.runs.iter().map(|r| r.id.as_str()).collect();
        let common = before.iter().filter(|id| now.contains(id.as_str())).count();
        if common != before.len() || common != now.len() {
            eprintln!(
                "note: sweep {} was recorded before with {} run{}, {common} of them among these {}; it now lists these. \
                 The earlier runs stay in the store (`cloudchamber ls --name {}`); give the sweep another \
                 [sweep] name to keep both lists",
                sw.name,
                before.len(),
                if before.len() == 1 { "" } else { "s" },
                now.len(),
                sw.name
            );
        }
    }
    Ok(())
}

/// `--executor slurm`: collects what earlier submissions finished, then submits one job array
/// over the runs that are neither finished in the store nor queued or running in Slurm (so
/// running the same command again resubmits exactly what was lost: cancelled, preempted, failed
/// or killed runs, which resume from their checkpoints).
fn submit(store_path: &Path, sw: &Sweep, overrides: &[String], a: SlurmArgs) -> Result<(), Error> {
    let mut store = Store::open(store_path)?;
    record(&mut store, sw)?;
    let ids: Vec<String> = sw.runs.iter().map(|r| r.id.clone()).collect();
    let collected = shard::collect(&mut store, &ids)?;
    if !collected.imported.is_empty() {
        println!(
            "collected {} finished run{} from {}",
            collected.imported.len(),
            if collected.imported.len() == 1 {
                ""
            } else {
                "s"
            },
            shard::dir(store_path).display()
        );
    }
    // Runs queued or running in any job of this store, whatever sweep submitted it: a run
    // shared by two sweeps must never have two jobs writing its shard at once.
    let mut recorded = Vec::new();
    for name in store.sweeps()? {
        recorded.extend(store.slurm_jobs(&name)?);
    }
    let live = slurm::live_runs(&recorded)?;
    let live_ids: std::collections::HashSet<&str> =
        live.iter().map(|(_, id)| id.as_str()).collect();
    let (mut finished, mut in_slurm) = (0, 0);
    let mut todo = Vec::new();
    for r in &sw.runs {
        let done = store
            .run(&r.id)?
            .is_some_and(|rec| matches!(rec.status, RunStatus::Completed | RunStatus::Diverged));
        if done {
            finished += 1;
        } else if live_ids.contains(r.id.as_str()) {
            in_slurm += 1;
        } else {
            todo.push(r.index);
        }
    }
    if todo.is_empty() {
        println!(
            "sweep {}: nothing to submit ({finished} finished, {in_slurm} queued or running in Slurm)",
            sw.name
        );
        return Ok(());
    }
    let opts = slurm::Options {
        partition: a.partition,
        time: a.time,
        cpus_per_task: a.cpus_per_task,
        mem: a.mem,
        array_parallelism: a.array_parallelism,
        requeue: a.requeue,
        sbatch_args: a.sbatch_arg,
    };
    let job = slurm::submit(&mut store, sw, overrides, &opts, &todo)?;
    println!(
        "sweep {}: submitted job {} (--array={}): {} run{} ({finished} finished, {in_slurm} queued or running)",
        sw.name,
        job.job_id,
        job.array,
        todo.len(),
        if todo.len() == 1 { "" } else { "s" },
    );
    println!(
        "  follow it with `cloudchamber status {}`; `cloudchamber cancel {}` stops it",
        sw.name, sw.name
    );
    Ok(())
}

pub(super) fn describe(i: usize, id: &str, end: &End, label: &str) -> String {
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
        End::Busy { pid, host } => {
            format!("running in another process (pid {pid} on {host}); waiting for it to end")
        }
        End::NotRun => "not started".into(),
    };
    format!("{i:>4}  {id}  {label}  {what}")
}
