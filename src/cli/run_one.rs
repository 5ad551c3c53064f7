//! `cloudchamber run-one FILE --index K`: run K of a sweep, as one element of a cluster job
//! array runs it — into its own shard beside the store, never the store itself (see
//! `sweep::shard`). `sweep --executor slurm` writes the job script that calls this.

use std::path::{Path, PathBuf};

use cloudchamber::store::RunStatus;
use cloudchamber::sweep::exec::End;
use cloudchamber::sweep::{self, shard};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file with a [sweep] section (TOML).
    file: PathBuf,
    /// The run's index in the sweep (`--dry-run` lists them).
    #[arg(long, value_name = "K")]
    index: usize,
    /// Refuse to run unless run K has this id (the sweep file may have changed since the job
    /// was submitted).
    #[arg(long, value_name = "ID")]
    expect_id: Option<String>,
    /// Override a key of the base experiment, as given to `sweep` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let sw = sweep::load(&a.file, &a.set)?;
    let n = sw.runs.len();
    let Some(r) = sw.runs.get(a.index) else {
        return Err(Error::Invalid {
            what: format!("--index {}", a.index),
            message: format!(
                "sweep {} has {n} runs (0 … {})",
                sw.name,
                n.saturating_sub(1)
            ),
            hint: "`cloudchamber sweep FILE --dry-run` lists them".into(),
        });
    };
    if let Some(want) = &a.expect_id {
        if *want != r.id {
            return Err(Error::Invalid {
                what: a.file.display().to_string(),
                message: format!(
                    "run {} of sweep {} is now {}, not {want}: the file changed since submission",
                    a.index, sw.name, r.id
                ),
                hint: "cancel the sweep's jobs (`cloudchamber cancel NAME`) and submit it again"
                    .into(),
            });
        }
    }
    let job = match (
        std::env::var("SLURM_ARRAY_JOB_ID"),
        std::env::var("SLURM_ARRAY_TASK_ID"),
    ) {
        (Ok(j), Ok(t)) => Some(format!("{j}_{t}")),
        _ => None,
    };
    let end = shard::run(store_path, &sw, a.index, job)?;
    match &end {
        End::Skipped(status) => println!(
            "{:>4}  {}  {}  {status} (its shard is already done)",
            a.index,
            r.id,
            r.label()
        ),
        _ => println!(
            "{}",
            super::sweep::describe(a.index, &r.id, &end, &r.label())
        ),
    }
    match end {
        End::Skipped(_)
        | End::Trained {
            status: RunStatus::Completed | RunStatus::Diverged,
            ..
        } => Ok(()),
        End::Trained {
            status: RunStatus::Interrupted,
            ..
        }
        | End::NotRun => Err(Error::Interrupted {
            what: format!("run {} of sweep {}", a.index, sw.name),
            hint: "it checkpointed; the next attempt resumes from there".into(),
        }),
        End::Trained { status, .. } => Err(Error::Failed {
            what: format!("run {} of sweep {}", a.index, sw.name),
            message: format!("ended {status}"),
            hint: format!(
                "its store is {}",
                shard::work_store(store_path, &r.id).display()
            ),
        }),
        End::Busy { pid, host } => Err(Error::Failed {
            what: format!("run {} of sweep {}", a.index, sw.name),
            message: format!("another process (pid {pid} on {host}) trains it"),
            hint: "one job per run: cancel the duplicate submission".into(),
        }),
        End::Failed(m) => Err(Error::Failed {
            what: format!("run {} of sweep {}", a.index, sw.name),
            message: m,
            hint: "the run's shard records the failure; `cloudchamber status` shows it".into(),
        }),
    }
}
