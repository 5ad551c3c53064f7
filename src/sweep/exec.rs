//! Executing a sweep. A run is addressable as "run k of sweep S" ([`run_one`]), so any executor
//! — the local one here, a Slurm job array ([`super::slurm`]) — only decides *where* each k
//! runs; the store and the checkpoints make every run idempotent (finished runs are skipped,
//! interrupted ones resume).

use std::collections::VecDeque;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::Sweep;
use crate::error::Error;
use crate::runner::{self, Start};
use crate::store::{RunStatus, StoreError};

/// How often a run another process trains is looked at again: its owner's end shows in the
/// store at once, so this only bounds the wait after it.
const POLL: Duration = Duration::from_millis(200);

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
    /// Another live process (e.g. the same sweep started twice) trains it now: left to that
    /// process and looked at again later, never reported as failed.
    Busy {
        pid: u32,
        host: String,
    },
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
                    runner::record_overrides(&p, &sw.overrides)?;
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
        Ok(Err(Error::Store(StoreError::RunActive { pid, host, .. }))) => End::Busy { pid, host },
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

/// Whether another live process still owns run `k` (a cheap look at the store, so a wait does
/// not regenerate the run's data at every poll).
fn owned_elsewhere(store_path: &Path, sw: &Sweep, k: usize) -> bool {
    let Some(r) = sw.runs.get(k) else {
        return false;
    };
    crate::store::Store::open_read_only(store_path)
        .ok()
        .and_then(|s| s.run(&r.id).ok().flatten())
        .is_some_and(|rec| crate::store::Store::refuse_live(store_path, &rec).is_err())
}

/// [`run_one`], waiting while another live process trains the run: `report` hears the first
/// [`End::Busy`] (to say so), then the run is looked at again until its owner ends it (then it
/// is skipped as finished, or resumed here if the owner stopped). Ctrl-C ends the wait with
/// [`End::NotRun`].
pub fn run_one_waiting(
    store_path: &Path,
    sw: &Sweep,
    k: usize,
    report: &(dyn Fn(usize, &End) + Sync),
) -> End {
    let mut told = false;
    loop {
        let end = run_one(store_path, sw, k);
        if !matches!(end, End::Busy { .. }) {
            return end;
        }
        if !told {
            report(k, &end);
            told = true;
        }
        loop {
            std::thread::sleep(POLL);
            if crate::interrupt::requested() {
                return End::NotRun;
            }
            if !owned_elsewhere(store_path, sw, k) {
                break;
            }
        }
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
    /// Runs another process trains ([`End::Busy`]) are reported once, set aside, and looked
    /// at again once every other run has been taken, so a worker never idles behind one.
    fn execute(
        &self,
        store_path: &Path,
        sw: &Sweep,
        report: &(dyn Fn(usize, &End) + Sync),
    ) -> Vec<End> {
        let n = sw.runs.len();
        let next = AtomicUsize::new(0);
        let ends: Mutex<Vec<Option<End>>> = Mutex::new(vec![None; n]);
        let waiting: Mutex<VecDeque<usize>> = Mutex::new(VecDeque::new());
        std::thread::scope(|scope| {
            for _ in 0..self.workers.clamp(1, n.max(1)) {
                scope.spawn(|| loop {
                    // After Ctrl-C, start nothing new (running runs checkpoint and stop).
                    if crate::interrupt::requested() {
                        break;
                    }
                    let k = next.fetch_add(1, Ordering::SeqCst);
                    let first = k < n;
                    let (k, end) = if first {
                        (k, run_one(store_path, sw, k))
                    } else {
                        // Every run taken: look again at one another process had.
                        let Some(k) = waiting.lock().ok().and_then(|mut w| w.pop_front()) else {
                            break;
                        };
                        std::thread::sleep(POLL);
                        if owned_elsewhere(store_path, sw, k) {
                            if let Ok(mut w) = waiting.lock() {
                                w.push_back(k);
                            }
                            continue;
                        }
                        (k, run_one(store_path, sw, k))
                    };
                    if matches!(end, End::Busy { .. }) {
                        if first {
                            report(k, &end);
                        }
                        if let Ok(mut w) = waiting.lock() {
                            w.push_back(k);
                        }
                        continue;
                    }
                    report(k, &end);
                    if let Ok(mut e) = ends.lock() {
                        e[k] = Some(end);
                    }
                });
            }
        });
        let ends = ends.into_inner().unwrap_or_default();
        // A run without an end was never started (or still belonged to another process) when
        // the sweep was interrupted.
        ends.into_iter().map(|e| e.unwrap_or(End::NotRun)).collect()
    }
}
