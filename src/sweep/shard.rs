//! Shards: how runs executed on other machines (a cluster's nodes) reach the store.
//!
//! SQLite with writers on several machines over a network filesystem is unsafe (its locks are
//! not reliable there), so a run executed by a cluster job never opens the store. It writes a
//! store of its own, `shards/<run id>/work.db` beside the store, with one writer (the job
//! running it) and its artifacts and checkpoint under `shards/<run id>/runs/<run id>/`. When
//! the run ends, the job copies that store compactly to a temporary name, renames the copy to
//! `run.db`, and only then writes the `done` marker (temporary name + rename) with the copy's
//! size and SHA-256. [`collect`] imports a run only when its marker exists and `run.db` matches
//! it, so a half-written shard is never read; and the store records each imported digest, so
//! collecting again, in any order, imports nothing twice. `status.json` beside them says what
//! the job is doing (running, interrupted, …) for `status`, without opening `work.db`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::exec::{self, End};
use super::Sweep;
use crate::checkpoint;
use crate::error::Error;
use crate::store::{Import, RunStatus, Store};

/// The folder beside the store that holds the shards.
pub const DIR: &str = "shards";
const WORK: &str = "work.db";
const FINAL: &str = "run.db";
const MARKER: &str = "done";
const PROGRESS: &str = "status.json";

/// `<store dir>/shards`.
pub fn dir(store_path: &Path) -> PathBuf {
    store_path.parent().unwrap_or(Path::new("")).join(DIR)
}

/// `<store dir>/shards/<run id>`: everything one run writes.
pub fn run_dir(store_path: &Path, run_id: &str) -> PathBuf {
    dir(store_path).join(run_id)
}

/// The store the job running `run_id` writes (its only writer).
pub fn work_store(store_path: &Path, run_id: &str) -> PathBuf {
    run_dir(store_path, run_id).join(WORK)
}

/// The `done` marker: the finished shard's identity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub run_id: String,
    pub status: RunStatus,
    pub bytes: u64,
    pub sha256: String,
}

/// What the job running a run last said about it (`status.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub run_id: String,
    pub status: RunStatus,
    /// `JOB_TASK` of the Slurm array element, when run by one.
    pub job: Option<String>,
    pub host: Option<String>,
    pub pid: u32,
    /// Steps done when it stopped (interrupted or finished).
    pub steps: Option<u64>,
    pub message: Option<String>,
}

/// Where one run's shard stands.
#[derive(Clone, Debug, PartialEq)]
pub enum State {
    /// No job has started it.
    Absent,
    /// Started, not finished (running now, or stopped: see the progress).
    Started(Option<Progress>),
    /// Finished and complete: `run.db` matches its marker.
    Done(Marker),
    /// A marker and a `run.db` that do not match (a rename still to come, or damage): ignored.
    Partial(String),
}

/// Looks at run `run_id`'s shard without opening any database.
pub fn inspect(store_path: &Path, run_id: &str) -> Result<State, Error> {
    let dir = run_dir(store_path, run_id);
    let marker_path = dir.join(MARKER);
    let text = match fs::read_to_string(&marker_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(if dir.exists() {
                State::Started(read_progress(&dir))
            } else {
                State::Absent
            });
        }
        Err(source) => {
            return Err(Error::Io {
                path: marker_path,
                source,
            })
        }
    };
    let marker: Marker = match serde_json::from_str(&text) {
        Ok(m) => m,
        Err(e) => return Ok(State::Partial(format!("unreadable done marker: {e}"))),
    };
    if marker.run_id != run_id {
        return Ok(State::Partial(format!(
            "the done marker names run {}",
            marker.run_id
        )));
    }
    match digest(&dir.join(FINAL)) {
        Ok((bytes, sha)) if bytes == marker.bytes && sha == marker.sha256 => {
            Ok(State::Done(marker))
        }
        Ok((bytes, _)) => Ok(State::Partial(format!(
            "{FINAL} ({bytes} bytes) does not match its done marker ({} bytes)",
            marker.bytes
        ))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok(State::Partial(format!("{FINAL} is missing")))
        }
        Err(source) => Err(Error::Io {
            path: dir.join(FINAL),
            source,
        }),
    }
}

fn read_progress(dir: &Path) -> Option<Progress> {
    let text = fs::read_to_string(dir.join(PROGRESS)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Size and SHA-256 (hex) of a file.
fn digest(path: &Path) -> std::io::Result<(u64, String)> {
    let mut f = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut bytes = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        bytes += n as u64;
    }
    let sha = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    Ok((bytes, sha))
}

/// Writes `bytes` to `path` so that readers see the old file or the whole new one: a temporary
/// name, flushed to disk, then renamed over; the folder is synced so the rename lasts.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let tmp = temp_name(path);
    {
        let mut f = fs::File::create(&tmp).map_err(Error::io(&tmp))?;
        f.write_all(bytes).map_err(Error::io(&tmp))?;
        f.sync_all().map_err(Error::io(&tmp))?;
    }
    fs::rename(&tmp, path).map_err(Error::io(path))?;
    sync_dir(path);
    Ok(())
}

/// `NAME.tmp-<pid>` beside `path`: unique per writer, never mistaken for the real file.
fn temp_name(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!("{name}.tmp-{}", std::process::id()))
}

/// Best effort: some filesystems cannot sync a folder, and the rename itself is still atomic.
fn sync_dir(path: &Path) {
    if let Some(dir) = path.parent() {
        if let Ok(d) = fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
}

fn write_progress(dir: &Path, p: &Progress) -> Result<(), Error> {
    let json = serde_json::to_vec_pretty(p).unwrap_or_default();
    write_atomic(&dir.join(PROGRESS), &json)
}

/// Publishes run `run_id`'s finished shard: a compact copy of its work store under a temporary
/// name, renamed to `run.db`, then the marker. A reader sees no marker, or a marker whose
/// `run.db` is complete (or, while a re-run replaces a failed shard, a mismatch it ignores).
pub fn publish(store_path: &Path, run_id: &str) -> Result<Marker, Error> {
    let dir = run_dir(store_path, run_id);
    let work = Store::open(&work_store(store_path, run_id))?;
    let status = match work.run(run_id)? {
        Some(r) if !matches!(r.status, RunStatus::Running | RunStatus::Interrupted) => r.status,
        other => {
            return Err(Error::Invalid {
                what: work_store(store_path, run_id).display().to_string(),
                message: format!(
                    "run {run_id} is {}, not finished: nothing to publish",
                    other.map_or("absent", |r| r.status.as_str())
                ),
                hint: "publish a shard only after its run ends".into(),
            })
        }
    };
    let final_path = dir.join(FINAL);
    let tmp = temp_name(&final_path);
    if tmp.exists() {
        fs::remove_file(&tmp).map_err(Error::io(&tmp))?;
    }
    work.snapshot(&tmp)?;
    drop(work);
    fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(Error::io(&tmp))?;
    let (bytes, sha256) = digest(&tmp).map_err(Error::io(&tmp))?;
    fs::rename(&tmp, &final_path).map_err(Error::io(&final_path))?;
    sync_dir(&final_path);
    let marker = Marker {
        run_id: run_id.to_string(),
        status,
        bytes,
        sha256,
    };
    let json = serde_json::to_vec_pretty(&marker).unwrap_or_default();
    write_atomic(&dir.join(MARKER), &json)?;
    Ok(marker)
}

/// Runs point `k` of the sweep as a cluster job does: in its shard (never the store), resuming
/// from the shard's checkpoint, and publishing the shard when the run ends (completed,
/// diverged or failed). A run whose shard is already done (completed or diverged) is skipped.
/// `job` is the scheduler's name for this attempt (`JOB_TASK`), recorded in `status.json`.
pub fn run(store_path: &Path, sw: &Sweep, k: usize, job: Option<String>) -> Result<End, Error> {
    let Some(r) = sw.runs.get(k) else {
        return Ok(exec::run_one(store_path, sw, k)); // the same "no run k" message
    };
    let id = r.id.as_str();
    if let State::Done(m) = inspect(store_path, id)? {
        if matches!(m.status, RunStatus::Completed | RunStatus::Diverged) {
            return Ok(End::Skipped(m.status));
        }
    }
    let dir = run_dir(store_path, id);
    fs::create_dir_all(&dir).map_err(Error::io(&dir))?;
    let work = work_store(store_path, id);
    if work.exists() {
        // The scheduler runs one job per run at a time: a `running` row left by an earlier
        // attempt (killed, preempted, requeued elsewhere) is stale.
        Store::open(&work)?.release_run(id)?;
    }
    let mut progress = Progress {
        run_id: id.to_string(),
        status: RunStatus::Running,
        job,
        host: node_name(),
        pid: std::process::id(),
        steps: None,
        message: None,
    };
    write_progress(&dir, &progress)?;
    let end = exec::run_one(&work, sw, k);
    let recorded = Store::open(&work)?.run(id)?;
    let (status, steps, message) = match &end {
        End::Trained { status, steps, .. } => (*status, Some(*steps), None),
        End::Skipped(status) => (*status, recorded.as_ref().and_then(|r| r.steps), None),
        End::Failed(m) => (RunStatus::Failed, None, Some(m.clone())),
        // The work store was released above: another owner means two jobs for one run.
        End::Busy { pid, host } => (
            RunStatus::Failed,
            None,
            Some(format!(
                "another process (pid {pid} on {host}) trains this run's shard"
            )),
        ),
        End::NotRun => (RunStatus::Interrupted, None, None),
    };
    progress.status = status;
    progress.steps = steps;
    progress.message = message.or_else(|| recorded.as_ref().and_then(|r| r.message.clone()));
    // A run that ended (even failed) is published; an interrupted one keeps its checkpoint for
    // the next attempt. A failure before the run reached its store has nothing to publish.
    let ended = recorded
        .as_ref()
        .is_some_and(|r| !matches!(r.status, RunStatus::Running | RunStatus::Interrupted));
    if ended {
        publish(store_path, id)?;
    }
    write_progress(&dir, &progress)?;
    Ok(end)
}

/// The node's name: Slurm's, else the kernel's.
fn node_name() -> Option<String> {
    std::env::var("SLURMD_NODENAME")
        .ok()
        .or_else(|| {
            fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|s| s.trim().to_string())
        })
        .filter(|h| !h.is_empty())
}

/// What [`collect`] found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Collected {
    /// Runs imported now.
    pub imported: Vec<String>,
    /// Shards imported before (same digest).
    pub already: usize,
    /// Runs the store holds from a run made here, kept.
    pub kept: usize,
    /// Shards with a marker that does not match their `run.db` (ignored): `(run id, why)`.
    pub partial: Vec<(String, String)>,
}

/// Imports every done shard of `run_ids` into the store (see the module notes), and copies each
/// imported run's artifacts (spec, weights; not its checkpoint) to the store's `runs/` folder.
pub fn collect(store: &mut Store, run_ids: &[String]) -> Result<Collected, Error> {
    let store_path = store.path().to_path_buf();
    let mut out = Collected::default();
    for id in run_ids {
        match inspect(&store_path, id)? {
            State::Done(m) => {
                let shard = run_dir(&store_path, id).join(FINAL);
                match store.import_run(&shard, id, &m.sha256)? {
                    Import::Imported => {
                        copy_artifacts(&store_path, store.artifacts_dir(id), id)?;
                        out.imported.push(id.clone());
                    }
                    Import::AlreadyImported => out.already += 1,
                    Import::Kept => out.kept += 1,
                }
            }
            State::Partial(why) => out.partial.push((id.clone(), why)),
            State::Absent | State::Started(_) => {}
        }
    }
    Ok(out)
}

/// [`collect`] over every run of a recorded sweep.
pub fn collect_sweep(store: &mut Store, sweep: &str) -> Result<Collected, Error> {
    let ids: Vec<String> = store
        .sweep_runs(sweep)?
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    collect(store, &ids)
}

fn copy_artifacts(store_path: &Path, to: PathBuf, id: &str) -> Result<(), Error> {
    let from = run_dir(store_path, id).join("runs").join(id);
    let Ok(entries) = fs::read_dir(&from) else {
        return Ok(()); // no artifacts
    };
    fs::create_dir_all(&to).map_err(Error::io(&to))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(&from))?;
        let name = entry.file_name();
        if name == checkpoint::FILE || !entry.path().is_file() {
            continue;
        }
        let dest = to.join(&name);
        fs::copy(entry.path(), &dest).map_err(Error::io(&dest))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MetricRow;

    /// A store with one finished run, as a job's work store would be.
    fn finished_work_store(store_path: &Path, id: &str, values: &[f64]) {
        let dir = run_dir(store_path, id);
        fs::create_dir_all(&dir).unwrap();
        let mut s = Store::open(&dir.join(WORK)).unwrap();
        s.begin_run(id, "sw", "{}", "", "test").unwrap();
        let rows: Vec<MetricRow> = values
            .iter()
            .enumerate()
            .map(|(i, &v)| MetricRow {
                step: i as u64,
                layer: (i % 2 == 0).then_some(0),
                name: "loss".into(),
                value: v,
            })
            .collect();
        s.append_metrics(id, &rows).unwrap();
        s.finish_run(
            id,
            RunStatus::Completed,
            values.len() as u64,
            1.5,
            None,
            None,
        )
        .unwrap();
    }

    fn bits(rows: &[MetricRow]) -> Vec<(u64, Option<u32>, String, u64)> {
        rows.iter()
            .map(|r| (r.step, r.layer, r.name.clone(), r.value.to_bits()))
            .collect()
    }

    /// Any order, any number of times: each run once, its samples bit for bit; a shard whose
    /// marker is missing or does not match is never read.
    #[test]
    fn collect_is_idempotent_in_any_order_and_ignores_partial_shards() {
        let tmp = tempfile::tempdir().unwrap();
        let store_path = tmp.path().join("main.db");
        let a = [0.5, -0.0, f64::NAN, 1e-300, 3.0];
        let b = [2.0, 1.0];
        finished_work_store(&store_path, "run-a", &a);
        finished_work_store(&store_path, "run-b", &b);
        let ids = vec!["run-b".to_string(), "run-a".to_string()];
        let mut store = Store::open(&store_path).unwrap();

        // Nothing is published yet: nothing to import.
        assert_eq!(inspect(&store_path, "run-a").unwrap(), State::Started(None));
        assert_eq!(inspect(&store_path, "run-c").unwrap(), State::Absent);
        assert_eq!(collect(&mut store, &ids).unwrap(), Collected::default());

        // b publishes first; a's run.db is there but cut short, and it has no marker.
        publish(&store_path, "run-b").unwrap();
        let marker_a = publish(&store_path, "run-a").unwrap();
        let dir_a = run_dir(&store_path, "run-a");
        let whole = fs::read(dir_a.join(FINAL)).unwrap();
        fs::remove_file(dir_a.join(MARKER)).unwrap();
        fs::write(dir_a.join(FINAL), &whole[..whole.len() / 2]).unwrap();
        let c = collect(&mut store, &ids).unwrap();
        assert_eq!(c.imported, vec!["run-b"]);
        assert!(store.run("run-a").unwrap().is_none());

        // A marker whose run.db is still the half-written one: ignored, named as partial.
        fs::write(dir_a.join(MARKER), serde_json::to_vec(&marker_a).unwrap()).unwrap();
        let c = collect(&mut store, &ids).unwrap();
        assert!(c.imported.is_empty() && c.already == 1, "{c:?}");
        assert_eq!(c.partial.len(), 1);
        assert!(c.partial[0].1.contains("does not match"), "{c:?}");
        assert!(store.run("run-a").unwrap().is_none());

        // The complete file arrives: imported once, bit for bit, however often we collect.
        fs::write(dir_a.join(FINAL), &whole).unwrap();
        for round in 0..3 {
            let c = collect(&mut store, &ids).unwrap();
            if round == 0 {
                assert_eq!(c.imported, vec!["run-a"]);
            } else {
                assert!(c.imported.is_empty() && c.already == 2, "{c:?}");
            }
        }
        let work = Store::open(&work_store(&store_path, "run-a")).unwrap();
        assert_eq!(
            bits(&store.metrics("run-a").unwrap()),
            bits(&work.metrics("run-a").unwrap())
        );
        assert_eq!(
            bits(&store.last_values("run-a").unwrap()),
            bits(&work.last_values("run-a").unwrap())
        );
        assert_eq!(store.runs().unwrap().len(), 2);
        let r = store.run("run-a").unwrap().unwrap();
        assert_eq!(
            (r.status, r.steps, r.wall_seconds),
            (RunStatus::Completed, Some(5), Some(1.5))
        );
    }

    /// A run finished in the store itself (run here) is not replaced by a shard of it.
    #[test]
    fn a_run_made_here_is_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let store_path = tmp.path().join("main.db");
        finished_work_store(&store_path, "r", &[1.0, 2.0]);
        publish(&store_path, "r").unwrap();
        let mut store = Store::open(&store_path).unwrap();
        store.begin_run("r", "here", "{}", "", "test").unwrap();
        store
            .append_metrics(
                "r",
                &[MetricRow {
                    step: 0,
                    layer: None,
                    name: "loss".into(),
                    value: 9.0,
                }],
            )
            .unwrap();
        store
            .finish_run("r", RunStatus::Completed, 1, 0.1, None, None)
            .unwrap();
        let c = collect(&mut store, &["r".to_string()]).unwrap();
        assert_eq!(c.kept, 1);
        assert_eq!(store.series("r", "loss", None).unwrap(), vec![(0, 9.0)]);
    }

    #[test]
    fn publishing_an_unfinished_run_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let store_path = tmp.path().join("main.db");
        let dir = run_dir(&store_path, "r");
        fs::create_dir_all(&dir).unwrap();
        let mut s = Store::open(&dir.join(WORK)).unwrap();
        s.begin_run("r", "sw", "{}", "", "test").unwrap();
        let e = publish(&store_path, "r").unwrap_err().to_string();
        assert!(e.contains("run r is running, not finished"), "{e}");
        assert!(!dir.join(MARKER).exists() && !dir.join(FINAL).exists());
    }
}
