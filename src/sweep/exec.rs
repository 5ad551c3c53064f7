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
use crate::engine::lanes::LANES;
use crate::error::Error;
use crate::runner::{self, Claim, Start};
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
                    Ok(trained(&out, p.run.resumed_from))
                }
            }
        }));
    match attempt {
        Ok(result) => ended(result),
        Err(panic) => End::Failed(panic_message(&*panic)),
    }
}

fn trained(out: &crate::train::Outcome, resumed_from: Option<u64>) -> End {
    End::Trained {
        status: out.status,
        steps: out.steps,
        seconds: out.wall_seconds,
        resumed_from,
    }
}

fn ended(result: Result<End, Error>) -> End {
    match result {
        Ok(end) => end,
        Err(Error::Store(StoreError::RunActive { pid, host, .. })) => End::Busy { pid, host },
        Err(e) => End::Failed(e.to_string()),
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    format!(
        "panic: {}",
        panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    )
}

/// Runs the points `ks` (one lockstep group, [`units`]) to their ends through one connection
/// to the store: they are prepared as [`run_one`] prepares one and claimed together
/// ([`runner::prepare_group`]), and those that train (fresh, or resuming from their
/// checkpoints) train together ([`runner::execute_group`]); finished ones are skipped, ones
/// another process owns are reported busy. After Ctrl-C nothing more is prepared or started.
pub fn run_group(store_path: &Path, sw: &Sweep, ks: &[usize]) -> Vec<(usize, End)> {
    let mut ends: Vec<(usize, End)> = Vec::with_capacity(ks.len());
    // Tiny models: their data and lane buffers on small pages (`hugepages::small_pages`).
    let attempt = crate::engine::hugepages::small_pages(|| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // One connection for the whole group: its runs claim, write and finish through it.
            let mut store = match crate::store::Store::open(store_path) {
                Ok(s) => s,
                Err(e) => {
                    let e = Error::from(e).to_string();
                    ends.extend(ks.iter().map(|&k| (k, End::Failed(e.clone()))));
                    return;
                }
            };
            let mut ready = Vec::new();
            // The group's runs are held at once: admitted against one reading of free memory.
            let mut budget = crate::train::MemoryBudget::read();
            let mut taken = Vec::with_capacity(ks.len());
            for &k in ks {
                if crate::interrupt::requested() {
                    ends.push((k, End::NotRun));
                    continue;
                }
                match sw.runs.get(k) {
                    Some(r) => taken.push((k, &r.spec)),
                    None => {
                        ends.push((k, End::Failed(format!("sweep {} has no run {k}", sw.name))))
                    }
                }
            }
            let specs: Vec<&crate::spec::Spec> = taken.iter().map(|&(_, spec)| spec).collect();
            let claims =
                runner::prepare_group(&mut store, &mut budget, &specs, &sw.base_dir, &sw.name);
            for ((k, _), claim) in taken.into_iter().zip(claims) {
                let claimed = claim.and_then(|claim| match claim {
                    Claim::Ready(c) => {
                        runner::record_overrides_in(&c.artifacts, &sw.overrides).map(|()| Ok(c))
                    }
                    Claim::Done(rec) => Ok(Err(End::Skipped(rec.status))),
                });
                match claimed {
                    Ok(Ok(c)) => ready.push((k, c)),
                    Ok(Err(end)) => ends.push((k, end)),
                    Err(e) => ends.push((k, ended(Err(e)))),
                }
            }
            let order: Vec<(usize, Option<u64>)> =
                ready.iter().map(|(k, c)| (*k, c.resumed_from)).collect();
            let group: Vec<_> = ready
                .into_iter()
                .map(|(k, c)| (c, &sw.runs[k].spec))
                .collect();
            let results = runner::execute_group(&mut store, &group);
            for ((k, resumed_from), out) in order.into_iter().zip(results) {
                ends.push((k, ended(out.map(|o| trained(&o, resumed_from)))));
            }
        }))
    });
    if let Err(panic) = attempt {
        let message = panic_message(&*panic);
        for &k in ks {
            if !ends.iter().any(|(e, _)| *e == k) {
                ends.push((k, End::Failed(message.clone())));
            }
        }
    }
    ends
}

/// The units a local sweep hands its workers: with `lockstep`, the runs that may train together
/// ([`crate::train::lockstep::group_key`]) in groups of up to [`LANES`] (a point's seeds split
/// evenly over as few groups as hold them), each group where its first run stands — where the
/// group is large enough to gain ([`lockstep_gains`]); every other run alone.
pub fn units(sw: &Sweep, lockstep: bool) -> Vec<Vec<usize>> {
    use std::collections::HashMap;
    // The lanes reproduce the engine's kernels (AVX-512, or AVX2 with FMA): elsewhere every run
    // trains alone.
    let lockstep = lockstep && crate::engine::sgemm::available();
    let keys: Vec<Option<String>> = sw
        .runs
        .iter()
        .map(|r| {
            lockstep
                .then(|| crate::train::lockstep::group_key(&r.spec))
                .flatten()
        })
        .collect();
    let mut members: HashMap<&str, Vec<usize>> = HashMap::new();
    for (k, key) in keys.iter().enumerate() {
        if let Some(key) = key {
            members.entry(key.as_str()).or_default().push(k);
        }
    }
    // Each run's unit: its group's, or its own.
    let mut unit_of: Vec<Option<usize>> = vec![None; sw.runs.len()];
    let mut units: Vec<Vec<usize>> = Vec::new();
    for (k, key) in keys.iter().enumerate() {
        if unit_of[k].is_some() {
            continue;
        }
        let group = key.as_deref().and_then(|key| members.get(key));
        let Some(group) = group.filter(|g| g.len() > 1) else {
            unit_of[k] = Some(units.len());
            units.push(vec![k]);
            continue;
        };
        let chunks = group.len().div_ceil(LANES);
        let size = group.len().div_ceil(chunks);
        for chunk in group.chunks(size) {
            if lockstep_gains(&sw.runs[chunk[0]].spec, chunk.len()) {
                for &m in chunk {
                    unit_of[m] = Some(units.len());
                }
                units.push(chunk.to_vec());
            } else {
                for &m in chunk {
                    unit_of[m] = Some(units.len());
                    units.push(vec![m]);
                }
            }
        }
    }
    units
}

/// Whether `k` runs of `spec` train faster together in lanes than one after another: a group
/// costs about what [`LANES`] models cost in lanes whatever `k`, so it gains when `k` exceeds
/// `LANES · lanes/alone`, the per-model-step ratio `cloudchamber bench --lanes` measures
/// ([`LANES_OVER_ALONE`], or [`LANES_OVER_ALONE_AVX2`] on a CPU whose kernels are AVX2;
/// interpolated over the hidden width; wider than the table: never).
pub fn lockstep_gains(spec: &crate::spec::Spec, k: usize) -> bool {
    let crate::spec::ModelSpec::Mlp(m) = &spec.model else {
        return false;
    };
    use crate::engine::sgemm::{isa, Isa};
    let table: &[(usize, f64)] = match isa() {
        Some(Isa::Avx512) => &LANES_OVER_ALONE,
        Some(Isa::Avx2) => &LANES_OVER_ALONE_AVX2,
        None => return false,
    };
    let Some(hi) = table.iter().position(|&(w, _)| w >= m.width) else {
        return false;
    };
    // The larger ratio of the two measured widths around this one (the cautious side).
    let ratio = match hi {
        0 => table[0].1,
        i => table[i].1.max(table[i - 1].1),
    };
    ratio < 1.0 && k as f64 >= LANES as f64 * ratio
}

/// Per-model-step time of 16 tiny MLPs (`8 → w → w → 1` tanh, batch 64, Adam) in lockstep
/// lanes over their time one at a time, by hidden width `w`: the larger of two
/// `cloudchamber bench --lanes` runs on the development machine (2-core Xeon, AVX-512,
/// 2026-12-02; README: Lockstep). Wider than 32 they lose.
pub const LANES_OVER_ALONE: [(usize, f64); 7] = [
    (2, 0.17),
    (4, 0.18),
    (8, 0.41),
    (16, 0.53),
    (32, 0.99),
    (64, 1.23),
    (128, 1.40),
];

/// [`LANES_OVER_ALONE`] for CPUs whose kernels are AVX2 (two ymm halves per lane vector, half
/// the FMA width): the larger of two `cloudchamber bench --lanes` runs on an AMD EPYC (Zen 3,
/// AVX2, 2 cores; 2026-12-03; README: Lockstep). Wider than 32 they lose.
pub const LANES_OVER_ALONE_AVX2: [(usize, f64); 7] = [
    (2, 0.14),
    (4, 0.18),
    (8, 0.32),
    (16, 0.50),
    (32, 0.72),
    (64, 1.01),
    (128, 1.19),
];

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
    /// Train the seeds of small MLPs together in SIMD lanes ([`units`]).
    pub lockstep: bool,
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
        let units = units(sw, self.lockstep);
        let next = AtomicUsize::new(0);
        let ends: Mutex<Vec<Option<End>>> = Mutex::new(vec![None; n]);
        let waiting: Mutex<VecDeque<usize>> = Mutex::new(VecDeque::new());
        std::thread::scope(|scope| {
            for _ in 0..self.workers.clamp(1, units.len().max(1)) {
                scope.spawn(|| loop {
                    // After Ctrl-C, start nothing new (running runs checkpoint and stop).
                    if crate::interrupt::requested() {
                        break;
                    }
                    let u = next.fetch_add(1, Ordering::SeqCst);
                    let first = u < units.len();
                    let done = if first {
                        match units[u].as_slice() {
                            &[k] => vec![(k, run_one(store_path, sw, k))],
                            ks => run_group(store_path, sw, ks),
                        }
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
                        vec![(k, run_one(store_path, sw, k))]
                    };
                    for (k, end) in done {
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
