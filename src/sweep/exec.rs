//! Executing a sweep. A run is addressable as "run k of sweep S" ([`run_one`]), so any executor
//! — the local one here, a Slurm job array ([`super::slurm`]) — only decides *where* each k
//! runs; the store and the checkpoints make every run idempotent (finished runs are skipped,
//! interrupted ones resume).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use super::Sweep;
use crate::error::Error;
use crate::runner::{self, Start};
use crate::store::RunStatus;

/// How one run of a sweep ended.
#[derive(Clone, Debug)]
pub enum End {
    /// Already in the store, finished.
    Skipped(RunStatus),
    /// Trained now (from step 0, or from its checkpoint).
    Trained {
        status: RunStatus,
        steps: u64,
        seconds: f64,
        resumed_from: Option<u64>,
    },
    Failed(String),
    /// Not started: the sweep was interrupted first.
    NotRun,
}

/// Runs point `k` of the sweep to its end (or skips it when the store holds it finished). Errors
/// and panics become [`End::Failed`], so one run never takes others down.
pub fn run_one(store_path: &Path, sw: &Sweep, k: usize) -> End {
    let Some(r) = sw.runs.get(k) else {
        return End::Failed(format!(
            "sweep {} has {} runs; there is no run {k}",
            sw.name,
            sw.runs.len()
        ));
    };
    let attempt =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<End, Error> {
            match runner::prepare(store_path, &r.spec, &sw.base_dir, &sw.name, false)? {
                Start::Done(rec) => Ok(End::Skipped(rec.status)),
                Start::Ready(mut p) => {
                    let out = runner::execute(&mut p, &r.spec, &mut |_, _| {})?;
                    Ok(End::Trained {
                        status: out.status,
                        steps: out.steps,
                        seconds: out.wall_seconds,
                        resumed_from: p.resumed_from,
                    })
                }
            }
        }));
    match attempt {
        Ok(Ok(end)) => end,
        Ok(Err(e)) => End::Failed(e.to_string()),
        Err(panic) => End::Failed(format!(
            "panic: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

/// Where the runs of a sweep execute.
pub trait Executor {
    /// Runs every point (each through [`run_one`]), calling `report(k, end)` as each finishes;
    /// returns the ends in sweep order.
    fn execute(
        &self,
        store_path: &Path,
        sw: &Sweep,
        report: &(dyn Fn(usize, &End) + Sync),
    ) -> Vec<End>;
}

/// This machine: `workers` threads, each taking the next unstarted run; every run is
/// single-threaded (its own `train.threads`).
pub struct Local {
    pub workers: usize,
}

impl Executor for Local {
    fn execute(
        &self,
        store_path: &Path,
        sw: &Sweep,
        report: &(dyn Fn(usize, &End) + Sync),
    ) -> Vec<End> {
        let n = sw.runs.len();
        let next = AtomicUsize::new(0);
        let ends: Mutex<Vec<Option<End>>> = Mutex::new(vec![None; n]);
        std::thread::scope(|scope| {
            for _ in 0..self.workers.clamp(1, n.max(1)) {
                scope.spawn(|| loop {
                    // After Ctrl-C, start nothing new (running runs checkpoint and stop).
                    if crate::interrupt::requested() {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    if k >= n {
                        break;
                    }
                    let end = run_one(store_path, sw, k);
                    report(k, &end);
                    if let Ok(mut e) = ends.lock() {
                        e[k] = Some(end);
                    }
                });
            }
        });
        let ends = ends.into_inner().unwrap_or_default();
        ends.into_iter()
            .map(|e| e.unwrap_or_else(|| End::Failed("not run".into())))
            .collect()
    }
}
