//! One run's lifecycle against the store: skip it if finished, resume it from its checkpoint if
//! it was interrupted, else start it; train; record how it ended. `cloudchamber run` and the
//! sweep executor both go through here, so a run means the same thing in either.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::checkpoint;
use crate::error::Error;
use crate::spec::Spec;
use crate::store::{MetricRow, RunRecord, RunStatus, Store};
use crate::task::Dataset;
use crate::train::{self, MetricSink, Outcome, ProgressFn};

/// A run ready to train: its row in the store says `running`.
pub struct Prepared {
    pub store: Store,
    pub run: Claimed,
}

/// What [`prepare`] found.
pub enum Start {
    /// The store already holds this run, finished (`completed` or `diverged`).
    Done(Box<RunRecord>),
    Ready(Box<Prepared>),
}

struct StoreSink<'a> {
    store: &'a mut Store,
    id: &'a str,
}

impl MetricSink for StoreSink<'_> {
    fn write(&mut self, rows: &[MetricRow]) -> Result<(), Error> {
        Ok(self.store.append_metrics(self.id, rows)?)
    }
}

/// Generates the data, then opens the store and claims the run (skipping a finished one unless
/// `force`, resuming an interrupted one from its checkpoint).
pub fn prepare(
    store_path: &Path,
    spec: &Spec,
    base_dir: &Path,
    name: &str,
    force: bool,
) -> Result<Start, Error> {
    let data = checked_data(spec, base_dir, &mut train::MemoryBudget::read())?;
    let mut store = Store::open(store_path)?;
    Ok(match claim(&mut store, spec, data, name, force)? {
        Claim::Done(rec) => Start::Done(rec),
        Claim::Ready(run) => Start::Ready(Box::new(Prepared { store, run })),
    })
}

/// A run claimed in a store (for a lockstep group, the one connection its runs share).
pub struct Claimed {
    pub id: String,
    pub artifacts: PathBuf,
    pub data: Dataset,
    /// The checkpoint step it resumes from, if any.
    pub resumed_from: Option<u64>,
}

/// What [`prepare_group`] found for a run.
pub enum Claim {
    /// The store already holds this run, finished (`completed` or `diverged`).
    Done(Box<RunRecord>),
    Ready(Claimed),
}

/// What [`prepare_group`] found for each run, in the order given.
pub type GroupClaims = Vec<Result<Claim, Error>>;

/// [`prepare`] for a lockstep group's runs, in one open store: they share the connection, so
/// each skips opening the file, reading its schema and preparing its statements again; and one
/// memory budget, so each must fit beside the runs before it. Every run's data comes first,
/// then every claim in one transaction (one handover of the write lock, where a claim each had
/// the group's runs and another worker's queue for it in turn), then the runs' folders, as a
/// run alone records itself before its folder. A batch that does not commit fails them all;
/// none is then recorded.
pub fn prepare_group(
    store: &mut Store,
    budget: &mut train::MemoryBudget,
    specs: &[&Spec],
    base_dir: &Path,
    name: &str,
) -> GroupClaims {
    let data: Vec<Result<Dataset, Error>> = specs
        .iter()
        .map(|spec| checked_data(spec, base_dir, budget))
        .collect();
    let batched = data.iter().filter(|d| d.is_ok()).count() > 1 && store.begin_batch().is_ok();
    let recorded: Vec<Result<(Record, Dataset), Error>> = specs
        .iter()
        .zip(data)
        .map(|(spec, data)| {
            let data = data?;
            Ok((claim_record(store, spec, name, false)?, data))
        })
        .collect();
    if batched {
        if let Err(e) = store.end_batch() {
            // A run found finished was only read: it stays skipped.
            return recorded
                .into_iter()
                .map(|r| match r? {
                    (Record::Done(rec), _) => Ok(Claim::Done(rec)),
                    (Record::Ready(_), _) => Err(Error::batch_lost("the run's claim", &e)),
                })
                .collect();
        }
    }
    recorded
        .into_iter()
        .map(|r| {
            let (record, data) = r?;
            Ok(match record {
                Record::Done(rec) => Claim::Done(rec),
                Record::Ready(r) => Claim::Ready(open_folder(r, data)?),
            })
        })
        .collect()
}

/// The run's data, refused (too large for `budget`, or unlike the model) before the store or
/// the run's folder is touched.
fn checked_data(
    spec: &Spec,
    base_dir: &Path,
    budget: &mut train::MemoryBudget,
) -> Result<Dataset, Error> {
    let data = spec.task.generate(spec.seed, base_dir)?;
    spec.check_data(&data)?;
    budget.admit(spec, &data)?;
    Ok(data)
}

/// Claims the run in `store`: skips a finished one unless `force`, resumes an interrupted one
/// from its checkpoint, else starts it. The first look is outside the store's write lock; the
/// claim itself ([`Store::claim_run`]) looks again inside it, so a run another process
/// finished in between is skipped, not trained twice.
fn claim(
    store: &mut Store,
    spec: &Spec,
    data: Dataset,
    name: &str,
    force: bool,
) -> Result<Claim, Error> {
    Ok(match claim_record(store, spec, name, force)? {
        Record::Done(rec) => Claim::Done(rec),
        Record::Ready(r) => Claim::Ready(open_folder(r, data)?),
    })
}

/// A run's claim in the store ([`claim_record`]), before its folder ([`open_folder`]).
enum Record {
    Done(Box<RunRecord>),
    Ready(Recorded),
}

/// A run recorded as started, and what its folder needs.
struct Recorded {
    id: String,
    artifacts: PathBuf,
    toml: String,
    /// The checkpoint it resumes from (`None`: it starts afresh, and any other goes).
    resumed_from: Option<u64>,
}

/// [`claim`]'s part in the store.
fn claim_record(store: &mut Store, spec: &Spec, name: &str, force: bool) -> Result<Record, Error> {
    let id = spec.run_id();
    let prev = store.run(&id)?;
    if let Some(prev) = &prev {
        if !force && matches!(prev.status, RunStatus::Completed | RunStatus::Diverged) {
            return Ok(Record::Done(Box::new(prev.clone())));
        }
        // Another live process trains it: refuse before touching its folder or checkpoint.
        Store::refuse_live(store.path(), prev)?;
    }
    let artifacts = store.artifacts_dir(&id);
    // An unfinished run of this spec with a checkpoint resumes from it; anything else starts
    // from step 0 (and a stale checkpoint goes).
    let ckpt_path = artifacts.join(checkpoint::FILE);
    let ckpt = if force || prev.is_none() {
        None
    } else {
        checkpoint::peek(&ckpt_path)?.filter(|s| s.run_id == id)
    };
    let version = env!("CARGO_PKG_VERSION");
    let (json, toml) = (spec.to_json(), spec.to_toml());
    if force {
        store.begin_run(&id, name, &json, &toml, version)?;
    } else if let Some(done) = store.claim_run(
        &id,
        name,
        &json,
        &toml,
        version,
        ckpt.as_ref().map(|s| s.step),
    )? {
        // Another process finished it since `prev` was read (two sweeps of one file at once).
        return Ok(Record::Done(Box::new(done)));
    }
    Ok(Record::Ready(Recorded {
        id,
        artifacts,
        toml,
        resumed_from: ckpt.map(|s| s.step),
    }))
}

/// [`claim`]'s part in the run's folder, once the run is recorded (a refused or failed claim
/// leaves no orphan).
fn open_folder(r: Recorded, data: Dataset) -> Result<Claimed, Error> {
    let Recorded {
        id,
        artifacts,
        toml,
        resumed_from,
    } = r;
    std::fs::create_dir_all(&artifacts).map_err(Error::io(artifacts.clone()))?;
    let spec_path = artifacts.join("spec.toml");
    std::fs::write(&spec_path, &toml).map_err(Error::io(spec_path))?;
    let ckpt_path = artifacts.join(checkpoint::FILE);
    if resumed_from.is_none() && ckpt_path.exists() {
        // A stale checkpoint (another run's, or one --force discards) goes.
        std::fs::remove_file(&ckpt_path).map_err(Error::io(ckpt_path.clone()))?;
    }
    Ok(Claimed {
        id,
        artifacts,
        data,
        resumed_from,
    })
}

/// The file in a run's folder that lists the overrides it was started with (`--set`, Python's
/// `overrides=`), one `key=value` a line: what `ls` shows as how the run differs from its file.
pub const OVERRIDES_FILE: &str = "overrides.txt";

/// Records the overrides a run was started with beside its artifacts (none: no file).
pub fn record_overrides(p: &Prepared, overrides: &[String]) -> Result<(), Error> {
    record_overrides_in(&p.run.artifacts, overrides)
}

/// [`record_overrides`] in the run folder `artifacts`.
pub fn record_overrides_in(artifacts: &Path, overrides: &[String]) -> Result<(), Error> {
    if overrides.is_empty() {
        return Ok(());
    }
    let path = artifacts.join(OVERRIDES_FILE);
    let text: String = overrides.iter().map(|o| format!("{o}\n")).collect();
    std::fs::write(&path, text).map_err(Error::io(path))
}

/// Trains a prepared run and records how it ended (a failure is recorded as `failed` with its
/// message, then returned).
pub fn execute(p: &mut Prepared, spec: &Spec, progress: ProgressFn<'_>) -> Result<Outcome, Error> {
    let started = Instant::now();
    let Prepared {
        store,
        run:
            Claimed {
                id,
                artifacts,
                data,
                resumed_from,
            },
    } = p;
    let mut sink = StoreSink { store, id };
    let result = train::train(
        spec,
        data,
        &mut sink,
        Some(artifacts),
        resumed_from.is_some(),
        progress,
    );
    record_end(store, id, result, started)
}

/// Records how a run ended (a failure as `failed` with its message; the original error is
/// the one returned).
fn record_end(
    store: &mut Store,
    id: &str,
    result: Result<Outcome, Error>,
    started: Instant,
) -> Result<Outcome, Error> {
    match result {
        Ok(out) => {
            store.finish_run(
                id,
                out.status,
                out.steps,
                out.wall_seconds,
                out.diverged_step,
                out.message.as_deref(),
            )?;
            Ok(out)
        }
        Err(e) => {
            // Record the failure; the original error is the one to report.
            let _ = store.finish_run(
                id,
                RunStatus::Failed,
                0,
                started.elapsed().as_secs_f64(),
                None,
                Some(&e.to_string()),
            );
            Err(e)
        }
    }
}

/// Trains claimed runs of one lockstep group together (fresh, or resuming from checkpoints of
/// the same step) ([`train::lockstep`]), every run's rows through the group's one connection,
/// and records how each ended, as [`execute`] does for one.
pub fn execute_group(store: &mut Store, group: &[(Claimed, &Spec)]) -> Vec<Result<Outcome, Error>> {
    let started = Instant::now();
    let shared = RefCell::new(store);
    let mut sinks: Vec<SharedSink<'_, '_>> = group
        .iter()
        .map(|(c, _)| SharedSink {
            store: &shared,
            id: &c.id,
        })
        .collect();
    let members = sinks
        .iter_mut()
        .zip(group)
        .map(|(sink, (c, spec))| train::lockstep::Member {
            spec,
            data: &c.data,
            sink,
            artifacts: Some(c.artifacts.as_path()),
            resume: c.resumed_from.is_some(),
        })
        .collect();
    let results = train::lockstep::train_group(members);
    drop(sinks);
    let store = shared.into_inner();
    // The runs' final statuses in one transaction (a batch that does not open: one each).
    // Lost together, they leave the runs as a crash here would: `running`, to train again.
    let batched = store.begin_batch().is_ok();
    let ends: Vec<Result<Outcome, Error>> = group
        .iter()
        .zip(results)
        .map(|((c, _), result)| record_end(store, &c.id, result, started))
        .collect();
    match (batched, store.end_batch()) {
        (true, Err(e)) => ends
            .iter()
            .map(|_| Err(Error::batch_lost("the run's final status", &e)))
            .collect(),
        _ => ends,
    }
}

/// One run's rows into a store its group shares (each write borrows it for its transaction).
struct SharedSink<'a, 's> {
    store: &'a RefCell<&'s mut Store>,
    id: &'a str,
}

impl MetricSink for SharedSink<'_, '_> {
    fn write(&mut self, rows: &[MetricRow]) -> Result<(), Error> {
        Ok(self.store.borrow_mut().append_metrics(self.id, rows)?)
    }

    fn begin_batch(&mut self) -> Result<(), Error> {
        Ok(self.store.borrow_mut().begin_batch()?)
    }

    fn end_batch(&mut self) -> Result<(), Error> {
        Ok(self.store.borrow_mut().end_batch()?)
    }
}
