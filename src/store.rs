//! The embedded store: one SQLite file holding every run and its metrics.
//!
//! Durability model: the file is in WAL mode and every write (begin, a batch of
//! metrics, finish) is one IMMEDIATE transaction, so a `kill -9` at any moment
//! leaves the store consistent. A killed run keeps status `running`; readers see
//! that its owning process is gone and report it as `incomplete`.
//!
//! Schema (version 2):
//! - `meta(key, value)`: `schema_version`, and `created_at` of the store.
//! - `runs`: one row per run; `rid` is an internal integer key, `id` the public id.
//! - `metric_names(nid, name)`: metric names, stored once.
//! - `metric_values(rid, step, nid, layer, value)`: the samples, clustered by
//!   (run, step) so that each logged step appends to the end of the b-tree
//!   (clustering by series instead made appends 8x slower: every commit dirtied
//!   one page per series).
//!   `layer` is -1 for whole-network metrics (primary-key columns of a
//!   WITHOUT ROWID table cannot be NULL); `value` NULL means NaN (SQLite turns
//!   NaN into NULL anyway) and the column has no declared type so SQLite never
//!   rewrites a float as an integer (which would turn -0.0 into 0).
//! - `metric_last(rid, nid, layer, step, value)`: the latest sample of each
//!   series, kept up to date by `append_metrics`, so that listing runs with
//!   their final values does not scan every sample (added in version 2).
//! - view `metrics(run_id, step, layer, name, value)`: the tidy rows, for
//!   anyone querying the file with plain SQL.
//! - `sweeps`, `sweep_runs` (version 3): declared sweeps and their runs.
//! - `slurm_jobs`, `shard_imports` (version 4): submitted job arrays, and the
//!   digest of the shard each run executed elsewhere was imported from.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{params, Connection, ErrorCode, OpenFlags, OptionalExtension, TransactionBehavior};

/// The newest schema this build reads and writes.
pub const SCHEMA_VERSION: u32 = 4;

/// `MIGRATIONS[v]` upgrades a store from schema version `v` to `v + 1`
/// (version 0 is an empty file). Never edit a released entry; append a new one.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
INSERT INTO meta (key, value) VALUES ('created_at', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));
CREATE TABLE runs (
    rid           INTEGER PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    name          TEXT NOT NULL,
    status        TEXT NOT NULL,
    spec_json     TEXT NOT NULL,
    spec_toml     TEXT NOT NULL,
    created_at    TEXT NOT NULL,
    started_at    TEXT,
    ended_at      TEXT,
    wall_seconds  REAL,
    steps         INTEGER,
    diverged_step INTEGER,
    message       TEXT,
    tool_version  TEXT NOT NULL,
    pid           INTEGER,
    host          TEXT,
    proc_start    TEXT
);
CREATE INDEX runs_by_name ON runs (name);
CREATE TABLE metric_names (nid INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE);
CREATE TABLE metric_values (
    rid   INTEGER NOT NULL REFERENCES runs (rid) ON DELETE CASCADE,
    step  INTEGER NOT NULL,
    nid   INTEGER NOT NULL REFERENCES metric_names (nid),
    layer INTEGER NOT NULL,
    value,
    PRIMARY KEY (rid, step, nid, layer)
) WITHOUT ROWID;
CREATE VIEW metrics AS
    SELECT r.id AS run_id, v.step AS step, NULLIF(v.layer, -1) AS layer, n.name AS name, v.value AS value
    FROM metric_values v JOIN runs r ON r.rid = v.rid JOIN metric_names n ON n.nid = v.nid;
"#,
    r#"
CREATE TABLE metric_last (
    rid   INTEGER NOT NULL REFERENCES runs (rid) ON DELETE CASCADE,
    nid   INTEGER NOT NULL REFERENCES metric_names (nid),
    layer INTEGER NOT NULL,
    step  INTEGER NOT NULL,
    value,
    PRIMARY KEY (rid, nid, layer)
) WITHOUT ROWID;
-- The bare `value` column comes from the row holding MAX(step) (an SQLite guarantee).
INSERT INTO metric_last (rid, nid, layer, step, value)
    SELECT rid, nid, layer, MAX(step), value FROM metric_values GROUP BY rid, nid, layer;
"#,
    // Version 3: sweeps — a name, the declaring file's text, and its runs in expansion order
    // with their swept values (a JSON array of [dotted key, value as typed] pairs).
    r#"
CREATE TABLE sweeps (
    name       TEXT PRIMARY KEY,
    path       TEXT NOT NULL,
    text       TEXT NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE TABLE sweep_runs (
    sweep  TEXT NOT NULL REFERENCES sweeps (name) ON DELETE CASCADE,
    idx    INTEGER NOT NULL,
    run_id TEXT NOT NULL,
    vals   TEXT NOT NULL,
    PRIMARY KEY (sweep, idx)
) WITHOUT ROWID;
"#,
    // Version 4: cluster execution. One row per submitted Slurm job array (its indices and the
    // run each index stood for when submitted), and the shard each run was imported from (by
    // digest), which makes importing idempotent.
    r#"
CREATE TABLE slurm_jobs (
    job_id       TEXT PRIMARY KEY,
    sweep        TEXT NOT NULL,
    submitted_at TEXT NOT NULL,
    array        TEXT NOT NULL,
    runs         TEXT NOT NULL,
    script       TEXT NOT NULL
);
CREATE INDEX slurm_jobs_by_sweep ON slurm_jobs (sweep);
CREATE TABLE shard_imports (
    run_id      TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    imported_at TEXT NOT NULL
);
"#,
];

/// `file:` URI of `path` for SQLite (percent-encoding what a URI reserves), optionally with
/// `immutable=1`.
fn sqlite_uri(path: &Path, immutable: bool) -> String {
    let mut uri = String::from("file:");
    #[cfg(unix)]
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()).to_vec();
    #[cfg(not(unix))]
    let bytes = path.to_string_lossy().into_owned().into_bytes();
    for b in bytes {
        match b {
            b'%' | b'?' | b'#' | 0..=0x20 | 0x7f.. => uri.push_str(&format!("%{b:02X}")),
            _ => uri.push(b as char),
        }
    }
    if immutable {
        uri.push_str("?immutable=1");
    }
    uri
}

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{}: database error: {source}", path.display())]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("{} is not a SQLite database (or it is damaged)", path.display())]
    NotADatabase { path: PathBuf },
    #[error("{} is a SQLite database but not a cloudchamber store", path.display())]
    NotAStore { path: PathBuf },
    #[error("{} has schema version {found}, but this cloudchamber supports versions up to {supported}", path.display())]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{} has schema version {found}, older than this cloudchamber's {supported}, and is read-only here, so it cannot be upgraded", path.display())]
    OlderReadOnly {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("no run matches '{query}' in {}", path.display())]
    NotFound { path: PathBuf, query: String },
    #[error("'{query}' matches {} runs in {}: {}", matches.len(), path.display(), some_of(matches))]
    Ambiguous {
        path: PathBuf,
        query: String,
        matches: Vec<String>,
    },
    #[error("run '{id}' in {} is still running (pid {pid} on {host}); refusing to overwrite it", path.display())]
    RunActive {
        path: PathBuf,
        id: String,
        pid: u32,
        host: String,
    },
    #[error("{}: run '{run_id}' already has a value for {name}{} at step {step}", path.display(), layer.map(|l| format!(" (layer {l})")).unwrap_or_default())]
    DuplicateMetric {
        path: PathBuf,
        run_id: String,
        step: u64,
        layer: Option<u32>,
        name: String,
    },
    #[error("{}: {what}", path.display())]
    Invalid { path: PathBuf, what: String },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    /// One-line suggestions for the user; may be empty.
    pub fn hints(&self) -> Vec<String> {
        let h = |s: &str| vec![s.to_string()];
        match self {
            StoreError::Sqlite { path, source } => match source.sqlite_error_code() {
                Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                    h("another process is writing to the store; wait for it and retry")
                }
                Some(ErrorCode::ReadOnly | ErrorCode::CannotOpen | ErrorCode::PermissionDenied) => vec![format!(
                    "check that {} and its directory are writable (SQLite also creates -wal and -shm files beside it)",
                    path.display()
                )],
                Some(ErrorCode::DiskFull) => h("free some disk space and retry"),
                Some(ErrorCode::DatabaseCorrupt) => {
                    h("the file is damaged; restore a backup or try `sqlite3 FILE .recover`")
                }
                _ => vec![],
            },
            StoreError::NotADatabase { .. } | StoreError::NotAStore { .. } => {
                h("point cloudchamber at its own store file (the default is cloudchamber.db)")
            }
            StoreError::NewerSchema { found, .. } => vec![
                format!("upgrade cloudchamber to a release that knows schema version {found}"),
                "or use a different store file".to_string(),
            ],
            StoreError::OlderReadOnly { .. } => h("open it once where it is writable (any command upgrades it), or read it with the cloudchamber release that wrote it"),
            StoreError::NotFound { .. } => h("list the runs in the store to see their ids and names"),
            StoreError::Ambiguous { query, .. } => vec![
                "give the run's id, or a prefix of it that only one run has".into(),
                format!("`cloudchamber ls --name {query}` lists those runs with the values that tell them apart; `run --name` gives a run its own name"),
            ],
            StoreError::RunActive { .. } => h("wait for that run to finish or stop it, or use a new run id"),
            StoreError::DuplicateMetric { .. } => h("each (step, layer, name) may be recorded once per run"),
            StoreError::Invalid { .. } | StoreError::Io { .. } => vec![],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Completed,
    Diverged,
    Failed,
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Diverged => "diverged",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        }
    }

    pub fn parse(s: &str) -> Option<RunStatus> {
        [
            Self::Running,
            Self::Completed,
            Self::Diverged,
            Self::Failed,
            Self::Interrupted,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for RunStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug)]
pub struct RunRecord {
    pub id: String,
    pub name: String,
    pub status: RunStatus,
    pub spec_json: String,
    pub spec_toml: String,
    /// RFC3339 UTC, millisecond precision, e.g. `2025-01-31T12:00:00.123Z`.
    pub created_at: String,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub wall_seconds: Option<f64>,
    pub steps: Option<u64>,
    pub diverged_step: Option<u64>,
    pub message: Option<String>,
    pub tool_version: String,
    pub pid: Option<u32>,
    pub host: Option<String>,
    /// `<boot_id>/<start time>` of the owning process (Linux), so that a reused
    /// pid or a reboot is not mistaken for the run still being alive.
    pub proc_start: Option<String>,
}

impl RunRecord {
    /// A run still marked running whose process is gone: it was killed.
    pub fn is_incomplete(&self) -> bool {
        self.status == RunStatus::Running
            && !owner_alive(self.pid, self.host.as_deref(), self.proc_start.as_deref())
    }

    pub fn display_status(&self) -> &'static str {
        if self.is_incomplete() {
            "incomplete"
        } else {
            self.status.as_str()
        }
    }
}

/// A submitted Slurm job array (see `sweep::slurm`).
#[derive(Clone, Debug, PartialEq)]
pub struct SlurmJob {
    pub job_id: String,
    pub sweep: String,
    /// RFC3339 UTC, as stored.
    pub submitted_at: String,
    /// The `--array` indices, e.g. `0-3,7`.
    pub array: String,
    /// `(sweep index, run id)` of each element, as the sweep expanded at submission.
    pub runs: Vec<(usize, String)>,
    pub script: String,
}

/// What [`Store::import_run`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Import {
    Imported,
    /// This very shard (same digest) was imported before: nothing to do.
    AlreadyImported,
    /// The store holds the run from a run made here (finished, or still running): kept.
    Kept,
}

#[derive(Clone, Debug, PartialEq)]
pub struct MetricRow {
    pub step: u64,
    /// `None` for whole-network metrics.
    pub layer: Option<u32>,
    pub name: String,
    pub value: f64,
}

/// What [`Store::start_run`] keeps of a run the store already holds.
#[derive(Clone, Copy)]
struct Start {
    /// Metrics of steps before this stay (a resumed run); `None`: all go.
    keep_before: Option<u64>,
    /// A finished run is left as it is and returned (a sweep's claim) instead of restarted.
    keep_finished: bool,
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
    gate: std::sync::Arc<Gate>,
    /// Metric name ids this connection has seen committed (a name's id never changes: names
    /// are only ever added), so a flush skips two statements per name it has met before.
    nids: HashMap<String, i64>,
    /// The open batch's turn at the gate ([`Store::begin_batch`]); `None` outside a batch.
    batch: Option<Turn>,
}

const RUN_COLUMNS: &str =
    "id, name, status, spec_json, spec_toml, created_at, started_at, ended_at, \
     wall_seconds, steps, diverged_step, message, tool_version, pid, host, proc_start";

/// Rows per multi-row `INSERT` of samples ([`Store::append_metrics`]): 320 bound values, far
/// below SQLite's limit (32,766), and a logged step of a small MLP (about 30 rows) fits one.
const INSERT_CHUNK: usize = 64;

/// [`insert_values_sql`] of 1, 2, 4, …, [`INSERT_CHUNK`] rows, built once (formatting one
/// for each chunk cost as much as a tenth of the inserts).
fn insert_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        (0..=INSERT_CHUNK.ilog2())
            .map(|i| insert_values_sql(1 << i))
            .collect()
    });
    debug_assert!(n.is_power_of_two() && n <= INSERT_CHUNK);
    &all[n.ilog2() as usize]
}

/// `INSERT` of `n` samples: `(rid, nid, layer, step, value)` × `n`, numbered parameters.
fn insert_values_sql(n: usize) -> String {
    let mut sql = String::from("INSERT INTO metric_values (rid, nid, layer, step, value) VALUES ");
    for i in 0..n {
        let p = 5 * i;
        if i > 0 {
            sql.push(',');
        }
        sql.push_str(&format!(
            "(?{}, ?{}, ?{}, ?{}, ?{})",
            p + 1,
            p + 2,
            p + 3,
            p + 4,
            p + 5
        ));
    }
    sql
}

/// The first sample of `chunk` (`(nid, layer, step, value)` of run `rid`) whose key is already
/// stored or repeats an earlier one of the chunk: the row a failed multi-row `INSERT` refused.
fn duplicate_in(
    tx: &Connection,
    rid: i64,
    chunk: &[(i64, i64, i64, Option<f64>)],
) -> rusqlite::Result<Option<usize>> {
    let mut stored = tx.prepare_cached(
        "SELECT 1 FROM metric_values WHERE rid = ?1 AND step = ?2 AND nid = ?3 AND layer = ?4",
    )?;
    for (i, &(nid, layer, step, _)) in chunk.iter().enumerate() {
        let again = chunk[..i]
            .iter()
            .any(|&(n, l, s, _)| (n, l, s) == (nid, layer, step));
        if again || stored.exists(params![rid, step, nid, layer])? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

/// How long a writer waits for another's write lock before the store reports it busy.
const LOCK_PATIENCE: Duration = Duration::from_secs(10);

/// The busy handler: called with the number of times this lock has been waited for, it sleeps
/// and returns `true` to try again, until [`LOCK_PATIENCE`] has passed. SQLite's own handler
/// (`busy_timeout`) sleeps 1, 2, 5, 10, 15, 20, 25… ms, while a sweep worker holds the lock for
/// well under a millisecond: with two workers recording tiny runs, those sleeps were most of
/// the tiny-run sweep's wall time. So wait 50 µs, doubling to at most 2 ms.
fn wait_for_lock(count: i32) -> bool {
    match lock_nap(count) {
        Some(nap) => {
            std::thread::sleep(nap);
            true
        }
        None => false,
    }
}

/// The nap before try `count + 1` at a lock, or `None` once [`LOCK_PATIENCE`] has been slept.
fn lock_nap(count: i32) -> Option<Duration> {
    let count = count.max(0) as u32;
    let nap = |n: u32| Duration::from_micros(50u64 << n.min(6)).min(Duration::from_millis(2));
    // Time already slept: the doubling naps, then 2 ms each.
    let slept: Duration = (0..count.min(6)).map(nap).sum::<Duration>()
        + Duration::from_millis(2) * count.saturating_sub(6);
    (slept < LOCK_PATIENCE).then(|| nap(count))
}

/// The writers of one store file in this process, queued: a sweep's workers write through
/// their own connections, and SQLite's lock makes a waiting one poll ([`wait_for_lock`]), each
/// nap overshooting a lock held for well under a millisecond. Through the gate a writer waits
/// on a condition variable and starts the moment the other is done (`perf trace` of the
/// tiny-run sweep, 2 workers, Zen 5: 64 naps and 54 ms asleep in all before, 0 and 46 ms of
/// waiting after). Other processes still meet SQLite's lock and the busy handler.
struct Gate {
    held: std::sync::Mutex<bool>,
    free: std::sync::Condvar,
}

/// A turn at a [`Gate`], given back on drop (`None`: the wait outlasted [`LOCK_PATIENCE`], so
/// SQLite's own lock decides, as without the gate: a writer can so wait that long twice). A
/// gate lives as long as the process, one per store file it wrote.
struct Turn(Option<std::sync::Arc<Gate>>);

impl Gate {
    /// The gate of the store file at `path`, shared by every connection to it in this process.
    fn of(path: &Path) -> std::sync::Arc<Gate> {
        use std::sync::{Arc, Mutex, OnceLock, PoisonError};
        static GATES: OnceLock<Mutex<HashMap<PathBuf, Arc<Gate>>>> = OnceLock::new();
        let key = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let mut gates = GATES
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        gates
            .entry(key)
            .or_insert_with(|| {
                Arc::new(Gate {
                    held: Mutex::new(false),
                    free: std::sync::Condvar::new(),
                })
            })
            .clone()
    }

    fn enter(self: &std::sync::Arc<Gate>) -> Turn {
        use std::sync::PoisonError;
        let deadline = std::time::Instant::now() + LOCK_PATIENCE;
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        while *held {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Turn(None);
            }
            held = self
                .free
                .wait_timeout(held, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *held = true;
        Turn(Some(self.clone()))
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        if let Some(g) = &self.0 {
            *g.held
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = false;
            g.free.notify_one();
        }
    }
}

/// A write transaction with its turn at the store's [`Gate`] (the transaction ends first); in
/// a batch ([`Store::begin_batch`]), a savepoint of the batch's transaction, whose turn the
/// batch holds.
struct WriteTx<'c> {
    scope: Scope<'c>,
    _turn: Option<Turn>,
}

enum Scope<'c> {
    Tx(rusqlite::Transaction<'c>),
    Savepoint(rusqlite::Savepoint<'c>),
}

impl std::ops::Deref for WriteTx<'_> {
    type Target = Connection;
    fn deref(&self) -> &Connection {
        match &self.scope {
            Scope::Tx(tx) => tx,
            Scope::Savepoint(sp) => sp,
        }
    }
}

impl WriteTx<'_> {
    fn commit(self) -> rusqlite::Result<()> {
        let WriteTx { scope, _turn } = self;
        match scope {
            Scope::Tx(tx) => tx.commit(),
            Scope::Savepoint(sp) => sp.commit(),
        }
    }
}

impl Store {
    /// Opens (creating if missing) the store at `path` and migrates it to the current schema.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| StoreError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let conn = Connection::open(path).map_err(|e| sql_err(path, e))?;
        // Read the version before changing anything, so a foreign file is left untouched.
        let (mut store, found) = Store::checked(conn, path)?;
        // A store that cannot switch to WAL (read-only copy, odd filesystem) still works
        // with the rollback journal, which is just as crash-safe; so ignore a failure here.
        let _ = store
            .conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get::<_, String>(0));
        // NORMAL is crash-safe in WAL mode: a killed process never loses a committed
        // transaction; only a power cut can drop the last few commits.
        store
            .conn
            .execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(|e| store.err(e))?;
        if found < SCHEMA_VERSION {
            store.migrate()?;
        }
        Ok(store)
    }

    /// A store over `conn` with its busy timeout, and the schema version it holds; a version
    /// newer than this build's is refused (both ways of opening share this).
    fn checked(conn: Connection, path: &Path) -> Result<(Store, u32), StoreError> {
        let store = Store {
            conn,
            path: path.to_path_buf(),
            gate: Gate::of(path),
            nids: HashMap::new(),
            batch: None,
        };
        store
            .conn
            .busy_handler(Some(wait_for_lock))
            .map_err(|e| store.err(e))?;
        // rusqlite keeps 16 statements; the store's queries and the multi-row inserts' shapes
        // (`insert_values_sql`) are more, and a statement evicted is parsed again.
        store.conn.set_prepared_statement_cache_capacity(64);
        let found = store.schema_version()?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: store.path.clone(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok((store, found))
    }

    /// Opens an existing store for reading only, as every command that only reads results
    /// does: nothing in the file or its folder changes, so archived results on a read-only
    /// folder or mount stay readable. A WAL store whose folder is read-only cannot get its
    /// shared-memory file, so it is then read as immutable (nothing can write it there).
    pub fn open_read_only(path: &Path) -> Result<Store, StoreError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
            | OpenFlags::SQLITE_OPEN_URI
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        // The first read (the version) is where a missing shared-memory file shows.
        let open = |target: &str| {
            let conn = Connection::open_with_flags(target, flags).map_err(|e| sql_err(path, e))?;
            Store::checked(conn, path)
        };
        // Immutable only when SQLite cannot open the file for want of write access to its
        // folder (a WAL store's shared-memory file); any other error (busy, damaged) is raised,
        // never read around: immutable mode ignores the WAL.
        let cannot_open = |e: &StoreError| {
            matches!(e, StoreError::Sqlite { source, .. }
                if matches!(source.sqlite_error_code(), Some(ErrorCode::CannotOpen | ErrorCode::ReadOnly)))
        };
        let (store, found) = match open(&sqlite_uri(path, false)) {
            Err(e) if cannot_open(&e) => open(&sqlite_uri(path, true))?,
            other => other?,
        };
        if found < SCHEMA_VERSION {
            // An older store is upgraded where it is writable, as any command would.
            drop(store);
            return Store::open(path).map_err(|_| StoreError::OlderReadOnly {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `<dir of store file>/runs/<run_id>`; not created here.
    pub fn artifacts_dir(&self, run_id: &str) -> PathBuf {
        let dir = self.path.parent().unwrap_or(Path::new(""));
        dir.join("runs").join(run_id)
    }

    /// The error for a run that another live process is training (checked before anything of
    /// the run is touched).
    pub fn refuse_live(path: &Path, rec: &RunRecord) -> Result<(), StoreError> {
        if rec.status == RunStatus::Running
            && rec.pid != Some(std::process::id())
            && !rec.is_incomplete()
        {
            return Err(StoreError::RunActive {
                path: path.to_path_buf(),
                id: rec.id.clone(),
                pid: rec.pid.unwrap_or(0),
                host: rec.host.clone().unwrap_or_else(|| "unknown host".into()),
            });
        }
        Ok(())
    }

    /// Starts (or restarts, discarding old metrics) run `id`, owned by this process.
    pub fn begin_run(
        &mut self,
        id: &str,
        name: &str,
        spec_json: &str,
        spec_toml: &str,
        tool_version: &str,
    ) -> Result<(), StoreError> {
        let how = Start {
            keep_before: None,
            keep_finished: false,
        };
        self.start_run(id, name, spec_json, spec_toml, tool_version, how)
            .map(drop)
    }

    /// Like [`Store::begin_run`] for a run resumed from a checkpoint taken before `step`: the
    /// metrics of earlier steps stay, those of `step` and later (written after the checkpoint,
    /// before the run was killed) are dropped, in one transaction.
    pub fn resume_run(
        &mut self,
        id: &str,
        name: &str,
        spec_json: &str,
        spec_toml: &str,
        tool_version: &str,
        step: u64,
    ) -> Result<(), StoreError> {
        self.start_run(
            id,
            name,
            spec_json,
            spec_toml,
            tool_version,
            Start {
                keep_before: Some(step),
                keep_finished: false,
            },
        )
        .map(drop)
    }

    /// A sweep's claim: [`Store::begin_run`], or [`Store::resume_run`] from `resume_from`,
    /// unless the run is found finished (`completed` or `diverged`) inside the same transaction:
    /// then nothing changes and its record comes back. Another process may have finished the
    /// run between the caller's look and this write; restarting it would train it twice.
    pub fn claim_run(
        &mut self,
        id: &str,
        name: &str,
        spec_json: &str,
        spec_toml: &str,
        tool_version: &str,
        resume_from: Option<u64>,
    ) -> Result<Option<RunRecord>, StoreError> {
        self.start_run(
            id,
            name,
            spec_json,
            spec_toml,
            tool_version,
            Start {
                keep_before: resume_from,
                keep_finished: true,
            },
        )
    }

    fn start_run(
        &mut self,
        id: &str,
        name: &str,
        spec_json: &str,
        spec_toml: &str,
        tool_version: &str,
        how: Start,
    ) -> Result<Option<RunRecord>, StoreError> {
        let Start {
            keep_before,
            keep_finished,
        } = how;
        // Ids become directory names under runs/, so keep them to a safe alphabet.
        let id_ok = !id.is_empty()
            && id.len() <= 128
            && !id.starts_with('.')
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !id_ok {
            return Err(self.invalid(format!(
                "run id '{id}' must be 1-128 characters of A-Z a-z 0-9 . _ - and not start with '.'"
            )));
        }
        let pid = std::process::id();
        // This process's own: read once per pid (three procfs files a run before; a forked
        // child reads its own).
        type Own = (u32, Option<String>, Option<String>);
        static OWN: std::sync::Mutex<Option<Own>> = std::sync::Mutex::new(None);
        let (host, proc_start) = {
            let mut own = OWN
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match own.as_ref() {
                Some((p, h, s)) if *p == pid => (h.clone(), s.clone()),
                _ => {
                    let (h, s) = (hostname(), proc_identity(pid));
                    *own = Some((pid, h.clone(), s.clone()));
                    (h, s)
                }
            }
        };
        let path = self.path.clone();
        let tx = self.write_tx()?;
        let old = tx
            .query_row(
                &format!("SELECT rid, {RUN_COLUMNS} FROM runs WHERE id = ?1"),
                [id],
                |r| Ok((r.get::<_, i64>(0)?, read_run(r, 1))),
            )
            .optional()
            .map_err(|e| sql_err(&path, e))?;
        match old {
            Some((rid, old)) => {
                let old =
                    old.map_err(|e| sql_err(&path, e))?
                        .map_err(|what| StoreError::Invalid {
                            path: path.clone(),
                            what,
                        })?;
                if keep_finished && matches!(old.status, RunStatus::Completed | RunStatus::Diverged)
                {
                    // Dropping the transaction rolls back nothing: nothing was written.
                    return Ok(Some(old));
                }
                Store::refuse_live(&path, &old)?;
                let delete = match keep_before {
                    None => format!(
                        "DELETE FROM metric_values WHERE rid = {rid}; DELETE FROM metric_last WHERE rid = {rid};"
                    ),
                    // The bare `value` comes from the row holding MAX(step) (an SQLite guarantee).
                    Some(step) => format!(
                        "DELETE FROM metric_values WHERE rid = {rid} AND step >= {step};
                         DELETE FROM metric_last WHERE rid = {rid};
                         INSERT INTO metric_last (rid, nid, layer, step, value)
                             SELECT rid, nid, layer, MAX(step), value FROM metric_values
                             WHERE rid = {rid} GROUP BY rid, nid, layer;"
                    ),
                };
                tx.execute_batch(&delete).map_err(|e| sql_err(&path, e))?;
                tx.execute(
                    &format!(
                        "UPDATE runs SET name = ?2, status = 'running', spec_json = ?3, spec_toml = ?4,
                         started_at = {NOW}, ended_at = NULL,
                         wall_seconds = CASE WHEN ?9 THEN wall_seconds ELSE NULL END, steps = NULL,
                         diverged_step = NULL, message = NULL, tool_version = ?5, pid = ?6, host = ?7,
                         proc_start = ?8 WHERE rid = ?1"
                    ),
                    // A resumed run keeps the wall time of its earlier segments.
                    params![
                        rid,
                        name,
                        spec_json,
                        spec_toml,
                        tool_version,
                        pid,
                        host,
                        proc_start,
                        keep_before.is_some()
                    ],
                )
                .map_err(|e| sql_err(&path, e))?;
            }
            None => {
                tx.execute(
                    &format!(
                        "INSERT INTO runs (id, name, status, spec_json, spec_toml, created_at, started_at,
                         tool_version, pid, host, proc_start)
                         VALUES (?1, ?2, 'running', ?3, ?4, {NOW}, {NOW}, ?5, ?6, ?7, ?8)"
                    ),
                    params![id, name, spec_json, spec_toml, tool_version, pid, host, proc_start],
                )
                .map_err(|e| sql_err(&path, e))?;
            }
        }
        tx.commit().map_err(|e| sql_err(&path, e))?;
        Ok(None)
    }

    /// Appends a batch of samples to run `run_id` in one transaction: all or nothing.
    pub fn append_metrics(&mut self, run_id: &str, rows: &[MetricRow]) -> Result<(), StoreError> {
        let path = self.path.clone();
        // No rows: no write transaction (a run its group flushed just before its checkpoint),
        // only the look that the run is there.
        if rows.is_empty() {
            let known = self
                .conn
                .prepare_cached("SELECT 1 FROM runs WHERE id = ?1")
                .and_then(|mut q| q.exists([run_id]))
                .map_err(|e| sql_err(&path, e))?;
            return match known {
                true => Ok(()),
                false => Err(StoreError::NotFound {
                    path,
                    query: run_id.to_string(),
                }),
            };
        }
        let e = |e| sql_err(&path, e);
        // The ids known from earlier commits; those this transaction finds join them once it
        // commits (an error drops the cache, which only costs the lookups again).
        let known = std::mem::take(&mut self.nids);
        let mut found: Vec<(String, i64)> = Vec::new();
        let tx = self.write_tx()?;
        let rid: i64 = tx
            .query_row("SELECT rid FROM runs WHERE id = ?1", [run_id], |r| r.get(0))
            .optional()
            .map_err(e)?
            .ok_or_else(|| StoreError::NotFound {
                path: path.clone(),
                query: run_id.to_string(),
            })?;
        {
            let mut add_name = tx
                .prepare_cached("INSERT OR IGNORE INTO metric_names (name) VALUES (?1)")
                .map_err(e)?;
            let mut get_nid = tx
                .prepare_cached("SELECT nid FROM metric_names WHERE name = ?1")
                .map_err(e)?;
            let mut upsert_last = tx
                .prepare_cached(
                    "INSERT INTO metric_last (rid, nid, layer, step, value) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT (rid, nid, layer) DO UPDATE SET step = excluded.step, value = excluded.value
                     WHERE excluded.step > metric_last.step",
                )
                .map_err(e)?;
            // Ids found in this transaction, kept for it alone until it commits, so a rollback
            // cannot leave a stale id behind.
            let mut nids: HashMap<&str, i64> = HashMap::new();
            // The batch's latest sample per series, written to metric_last once at the end.
            let mut last: HashMap<(i64, i64), (i64, Option<f64>)> = HashMap::new();
            let mut values: Vec<(i64, i64, i64, Option<f64>)> = Vec::with_capacity(rows.len());
            for row in rows {
                let nid = match known.get(&row.name).or_else(|| nids.get(row.name.as_str())) {
                    Some(&nid) => nid,
                    None => {
                        add_name.execute([&row.name]).map_err(e)?;
                        let nid: i64 = get_nid.query_row([&row.name], |r| r.get(0)).map_err(e)?;
                        nids.insert(&row.name, nid);
                        found.push((row.name.clone(), nid));
                        nid
                    }
                };
                let step = i64::try_from(row.step).map_err(|_| StoreError::Invalid {
                    path: path.clone(),
                    what: format!(
                        "step {} of {} is beyond the store's range (2^63 - 1)",
                        row.step, row.name
                    ),
                })?;
                let layer = row.layer.map_or(-1, i64::from);
                let value = (!row.value.is_nan()).then_some(row.value);
                values.push((nid, layer, step, value));
                let latest = last.entry((nid, layer)).or_insert((step, value));
                if step > latest.0 {
                    *latest = (step, value);
                }
            }
            // Many rows per INSERT: a statement's fixed cost (step, reset, the bindings' calls)
            // was most of a row's. Chunks of 64, 32, …, 1 rows, so at most seven statements.
            let mut at = 0;
            while at < values.len() {
                let left = values.len() - at;
                let n = INSERT_CHUNK.min(1 << left.ilog2());
                let chunk = &values[at..at + n];
                let mut insert = tx.prepare_cached(insert_sql(n)).map_err(e)?;
                for (i, &(nid, layer, step, value)) in chunk.iter().enumerate() {
                    let p = 5 * i;
                    insert.raw_bind_parameter(p + 1, rid).map_err(e)?;
                    insert.raw_bind_parameter(p + 2, nid).map_err(e)?;
                    insert.raw_bind_parameter(p + 3, layer).map_err(e)?;
                    insert.raw_bind_parameter(p + 4, step).map_err(e)?;
                    insert.raw_bind_parameter(p + 5, value).map_err(e)?;
                }
                if let Err(err) = insert.raw_execute() {
                    return Err(match err.sqlite_error_code() {
                        // Which row: the first of the chunk already stored (or repeated in it).
                        Some(ErrorCode::ConstraintViolation) => {
                            match duplicate_in(&tx, rid, chunk).map_err(e)? {
                                Some(dup) => StoreError::DuplicateMetric {
                                    path: path.clone(),
                                    run_id: run_id.to_string(),
                                    step: rows[at + dup].step,
                                    layer: rows[at + dup].layer,
                                    name: rows[at + dup].name.clone(),
                                },
                                None => sql_err(&path, err),
                            }
                        }
                        _ => sql_err(&path, err),
                    });
                }
                at += n;
            }
            for ((nid, layer), (step, value)) in last {
                upsert_last
                    .execute(params![rid, nid, layer, step, value])
                    .map_err(e)?;
            }
        }
        tx.commit().map_err(e)?;
        self.nids = known;
        self.nids.extend(found);
        Ok(())
    }

    /// Records the final status of run `id`.
    pub fn finish_run(
        &mut self,
        id: &str,
        status: RunStatus,
        steps: u64,
        wall_seconds: f64,
        diverged_step: Option<u64>,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        if status == RunStatus::Running {
            return Err(self.invalid(format!(
                "finish_run('{id}') needs a final status, not 'running'"
            )));
        }
        let to_i64 = |v: u64| {
            i64::try_from(v).map_err(|_| self.invalid(format!("step count {v} is out of range")))
        };
        let steps = to_i64(steps)?;
        let diverged_step = diverged_step.map(to_i64).transpose()?;
        let _turn = self.turn();
        let changed = self
            .conn
            .execute(
                &format!(
                    "UPDATE runs SET status = ?2, ended_at = {NOW}, steps = ?3,
                     wall_seconds = COALESCE(wall_seconds, 0) + ?4,
                     diverged_step = ?5, message = ?6 WHERE id = ?1"
                ),
                params![
                    id,
                    status.as_str(),
                    steps,
                    wall_seconds,
                    diverged_step,
                    message
                ],
            )
            .map_err(|e| self.err(e))?;
        if changed == 0 {
            return Err(StoreError::NotFound {
                path: self.path.clone(),
                query: id.to_string(),
            });
        }
        Ok(())
    }

    /// Records (or replaces) a sweep's declaration and its runs, in one transaction.
    /// `runs` holds `(run id, swept values as "key" → "value" pairs)` in expansion order.
    pub fn record_sweep(
        &mut self,
        name: &str,
        path: &str,
        text: &str,
        runs: &[(String, Vec<(String, String)>)],
    ) -> Result<(), StoreError> {
        let p = self.path.clone();
        let tx = self.write_tx()?;
        tx.execute(
            &format!(
                "INSERT INTO sweeps (name, path, text, created_at, updated_at) VALUES (?1, ?2, ?3, {NOW}, {NOW})
                 ON CONFLICT (name) DO UPDATE SET path = excluded.path, text = excluded.text, updated_at = excluded.updated_at"
            ),
            params![name, path, text],
        )
        .map_err(|e| sql_err(&p, e))?;
        tx.execute("DELETE FROM sweep_runs WHERE sweep = ?1", [name])
            .map_err(|e| sql_err(&p, e))?;
        {
            let mut ins = tx
                .prepare_cached(
                    "INSERT INTO sweep_runs (sweep, idx, run_id, vals) VALUES (?1, ?2, ?3, ?4)",
                )
                .map_err(|e| sql_err(&p, e))?;
            for (i, (id, vals)) in runs.iter().enumerate() {
                // An array of [key, value] pairs keeps the declaration's order.
                let json = serde_json::to_string(vals).unwrap_or_else(|_| "[]".into());
                ins.execute(params![name, i as i64, id, json])
                    .map_err(|e| sql_err(&p, e))?;
            }
        }
        tx.commit().map_err(|e| sql_err(&p, e))
    }

    /// The runs of a recorded sweep: `(run id, swept values)` in expansion order; `NotFound` for
    /// an unknown sweep.
    pub fn sweep_runs(
        &self,
        name: &str,
    ) -> Result<Vec<(String, Vec<(String, String)>)>, StoreError> {
        let known: Option<String> = self
            .conn
            .query_row("SELECT name FROM sweeps WHERE name = ?1", [name], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| self.err(e))?;
        if known.is_none() {
            return Err(StoreError::NotFound {
                path: self.path.clone(),
                query: format!("sweep {name}"),
            });
        }
        let mut stmt = self
            .conn
            .prepare_cached("SELECT run_id, vals FROM sweep_runs WHERE sweep = ?1 ORDER BY idx")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([name], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, json) = row.map_err(|e| self.err(e))?;
            let vals: Vec<(String, String)> =
                serde_json::from_str(&json).map_err(|e| StoreError::Invalid {
                    path: self.path.clone(),
                    what: format!("sweep {name}: bad values {json}: {e}"),
                })?;
            out.push((id, vals));
        }
        Ok(out)
    }

    /// For a sweep's runs that have ended: how many, and the seconds from the first start to
    /// the last end (SQLite's `julianday` on the stored UTC timestamps).
    pub fn sweep_timing(&self, name: &str) -> Result<(u64, f64), StoreError> {
        self.conn
            .query_row(
                "SELECT COUNT(r.ended_at), (julianday(MAX(r.ended_at)) - julianday(MIN(r.started_at))) * 86400.0
                 FROM sweep_runs s JOIN runs r ON r.id = s.run_id WHERE s.sweep = ?1 AND r.ended_at IS NOT NULL",
                [name],
                |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Option<f64>>(1)?.unwrap_or(0.0))),
            )
            .map_err(|e| self.err(e))
    }

    /// Names of the recorded sweeps, newest first.
    pub fn sweeps(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM sweeps ORDER BY updated_at DESC")
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.err(e))
    }

    /// Records a submitted Slurm job array: its id, the `--array` indices, the run each index
    /// stood for, and the batch script.
    pub fn record_slurm_job(&mut self, job: &SlurmJob) -> Result<(), StoreError> {
        let runs = serde_json::to_string(&job.runs).unwrap_or_else(|_| "[]".into());
        let _turn = self.turn();
        self.conn
            .execute(
                &format!(
                    "INSERT INTO slurm_jobs (job_id, sweep, submitted_at, array, runs, script)
                     VALUES (?1, ?2, {NOW}, ?3, ?4, ?5)
                     ON CONFLICT (job_id) DO UPDATE SET sweep = excluded.sweep, array = excluded.array,
                     runs = excluded.runs, script = excluded.script"
                ),
                params![job.job_id, job.sweep, job.array, runs, job.script],
            )
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The Slurm job arrays submitted for a sweep, oldest first (`submitted_at` as stored).
    pub fn slurm_jobs(&self, sweep: &str) -> Result<Vec<SlurmJob>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT job_id, sweep, submitted_at, array, runs, script FROM slurm_jobs
                 WHERE sweep = ?1 ORDER BY submitted_at, rowid",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([sweep], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, String>(4)?,
                    r.get::<_, String>(5)?,
                ))
            })
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for row in rows {
            let (job_id, sweep, submitted_at, array, runs, script) =
                row.map_err(|e| self.err(e))?;
            let runs = serde_json::from_str(&runs)
                .map_err(|e| self.invalid(format!("slurm job {job_id}: bad runs {runs}: {e}")))?;
            out.push(SlurmJob {
                job_id,
                sweep,
                submitted_at,
                array,
                runs,
                script,
            });
        }
        Ok(out)
    }

    /// Marks run `id` `interrupted` if it is `running` but its owner cannot be alive: a process
    /// of this machine that is gone, or one on another machine (the caller knows from the
    /// scheduler that the element which ran it has ended). It then resumes like any
    /// interrupted run. Returns whether it changed anything.
    pub fn release_run(&mut self, id: &str) -> Result<bool, StoreError> {
        let Some(r) = self.run(id)? else {
            return Ok(false);
        };
        let elsewhere = r.host.is_some() && r.host != hostname();
        if r.status != RunStatus::Running || !(elsewhere || r.is_incomplete()) {
            return Ok(false);
        }
        let _turn = self.turn();
        self.conn
            .execute(
                "UPDATE runs SET status = 'interrupted', message = 'its process ended without finishing'
                 WHERE id = ?1 AND status = 'running'",
                [id],
            )
            .map_err(|e| self.err(e))?;
        Ok(true)
    }

    /// Writes a compact, self-contained copy of the whole store to `dest` (no WAL beside it;
    /// `dest` must not exist).
    pub fn snapshot(&self, dest: &Path) -> Result<(), StoreError> {
        let Some(dest_str) = dest.to_str() else {
            return Err(self.invalid(format!("{} is not valid UTF-8", dest.display())));
        };
        self.conn
            .execute("VACUUM INTO ?1", [dest_str])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Imports run `run_id` from `shard` (another store file, read only, whose bytes have
    /// digest `digest`): the run's row and all its samples, replacing what this store held for
    /// it, in one transaction. Idempotent: a shard whose digest was already imported is not read
    /// again. A run this store holds finished that did not come from a shard (it ran here) is
    /// kept as it is, and so is one running here now.
    pub fn import_run(
        &mut self,
        shard: &Path,
        run_id: &str,
        digest: &str,
    ) -> Result<Import, StoreError> {
        let imported: Option<String> = self
            .conn
            .query_row(
                "SELECT digest FROM shard_imports WHERE run_id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        if imported.as_deref() == Some(digest) {
            return Ok(Import::AlreadyImported);
        }
        if imported.is_none() {
            if let Some(r) = self.run(run_id)? {
                let live = r.status == RunStatus::Running && !r.is_incomplete();
                if live || matches!(r.status, RunStatus::Completed | RunStatus::Diverged) {
                    return Ok(Import::Kept);
                }
            }
        }
        let Some(shard_str) = shard.to_str() else {
            return Err(self.invalid(format!("{} is not valid UTF-8", shard.display())));
        };
        self.conn
            .execute("ATTACH DATABASE ?1 AS shard", [shard_str])
            .map_err(|e| sql_err(shard, e))?;
        let result = self.import_attached(shard, run_id, digest);
        // Detach even when the import failed, so the connection stays usable.
        let detached = self
            .conn
            .execute("DETACH DATABASE shard", [])
            .map_err(|e| self.err(e));
        result.and_then(|import| detached.map(|_| import))
    }

    fn import_attached(
        &mut self,
        shard: &Path,
        run_id: &str,
        digest: &str,
    ) -> Result<Import, StoreError> {
        let path = self.path.clone();
        let e = |e| sql_err(&path, e);
        let tx = self.write_tx()?;
        let version: Option<String> = tx
            .query_row(
                "SELECT value FROM shard.meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| sql_err(shard, e))?;
        match version.and_then(|v| v.parse::<u32>().ok()) {
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StoreError::NewerSchema {
                    path: shard.to_path_buf(),
                    found: v,
                    supported: SCHEMA_VERSION,
                })
            }
            Some(_) => {}
            None => {
                return Err(StoreError::NotAStore {
                    path: shard.to_path_buf(),
                })
            }
        }
        let shard_rid: Option<i64> = tx
            .query_row("SELECT rid FROM shard.runs WHERE id = ?1", [run_id], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| sql_err(shard, e))?;
        let Some(shard_rid) = shard_rid else {
            return Err(StoreError::NotFound {
                path: shard.to_path_buf(),
                query: run_id.to_string(),
            });
        };
        let updates = RUN_COLUMNS
            .split(',')
            .map(str::trim)
            .filter(|c| *c != "id")
            .map(|c| format!("{c} = excluded.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        tx.execute(
            &format!(
                "INSERT INTO main.runs ({RUN_COLUMNS}) SELECT {RUN_COLUMNS} FROM shard.runs WHERE rid = ?1
                 ON CONFLICT (id) DO UPDATE SET {updates}"
            ),
            [shard_rid],
        )
        .map_err(e)?;
        let rid: i64 = tx
            .query_row("SELECT rid FROM main.runs WHERE id = ?1", [run_id], |r| {
                r.get(0)
            })
            .map_err(e)?;
        // Samples are copied as stored (REAL bits, NULL for NaN); names map by text. metric_last
        // is rebuilt from the samples, as migration 2 does (the bare `value` comes from the row
        // holding MAX(step), an SQLite guarantee).
        tx.execute_batch(&format!(
            "DELETE FROM main.metric_values WHERE rid = {rid};
             DELETE FROM main.metric_last WHERE rid = {rid};
             INSERT OR IGNORE INTO main.metric_names (name) SELECT name FROM shard.metric_names;
             INSERT INTO main.metric_values (rid, step, nid, layer, value)
                 SELECT {rid}, v.step, m.nid, v.layer, v.value FROM shard.metric_values v
                 JOIN shard.metric_names s ON s.nid = v.nid JOIN main.metric_names m ON m.name = s.name
                 WHERE v.rid = {shard_rid};
             INSERT INTO main.metric_last (rid, nid, layer, step, value)
                 SELECT rid, nid, layer, MAX(step), value FROM main.metric_values
                 WHERE rid = {rid} GROUP BY rid, nid, layer;"
        ))
        .map_err(e)?;
        tx.execute(
            &format!(
                "INSERT INTO shard_imports (run_id, digest, imported_at) VALUES (?1, ?2, {NOW})
                 ON CONFLICT (run_id) DO UPDATE SET digest = excluded.digest, imported_at = excluded.imported_at"
            ),
            params![run_id, digest],
        )
        .map_err(e)?;
        tx.commit().map_err(e)?;
        Ok(Import::Imported)
    }

    pub fn run(&self, id: &str) -> Result<Option<RunRecord>, StoreError> {
        let mut runs = self.query_runs("WHERE id = ?1", [id])?;
        Ok(runs.pop())
    }

    /// Finds a run by exact id, else by unique id prefix or exact name.
    /// A query that fits several runs is an error rather than a guess.
    pub fn resolve(&self, query: &str) -> Result<RunRecord, StoreError> {
        if query.is_empty() {
            return Err(StoreError::NotFound {
                path: self.path.clone(),
                query: String::new(),
            });
        }
        if let Some(run) = self.run(query)? {
            return Ok(run);
        }
        // substr rather than LIKE, so that '%' and '_' in a query are not wildcards.
        let mut found =
            self.query_runs("WHERE substr(id, 1, length(?1)) = ?1 OR name = ?1", [query])?;
        match found.len() {
            0 => Err(StoreError::NotFound {
                path: self.path.clone(),
                query: query.to_string(),
            }),
            1 => Ok(found.remove(0)),
            _ => Err(StoreError::Ambiguous {
                path: self.path.clone(),
                query: query.to_string(),
                matches: found.into_iter().map(|r| r.id).collect(),
            }),
        }
    }

    /// All runs, newest first.
    pub fn runs(&self) -> Result<Vec<RunRecord>, StoreError> {
        self.query_runs("", [])
    }

    /// All samples of a run, ordered by step, name, layer.
    pub fn metrics(&self, run_id: &str) -> Result<Vec<MetricRow>, StoreError> {
        let mut out = Vec::new();
        self.for_each_metric(run_id, |row| {
            out.push(row);
            Ok::<(), StoreError>(())
        })?;
        Ok(out)
    }

    /// Streams the samples of a run, in the order of [`Store::metrics`], without
    /// holding them all in memory.
    pub fn for_each_metric<E: From<StoreError>>(
        &self,
        run_id: &str,
        mut f: impl FnMut(MetricRow) -> Result<(), E>,
    ) -> Result<(), E> {
        let rid = self.rid(run_id)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT v.step, v.layer, n.name, v.value FROM metric_values v
                 JOIN metric_names n ON n.nid = v.nid WHERE v.rid = ?1 ORDER BY v.step, n.name, v.layer",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([rid]).map_err(|e| self.err(e))?;
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            f(self.metric_row(r)?)?;
        }
        Ok(())
    }

    /// Every metric name any run of the store recorded, sorted.
    pub fn metric_names(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT name FROM metric_names ORDER BY name")
            .map_err(|e| self.err(e))?;
        let names = stmt
            .query_map([], |r| r.get::<_, String>(0))
            .map_err(|e| self.err(e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.err(e))?;
        Ok(names)
    }

    /// For each (name, layer), the value at the last step it was recorded; ordered by name, layer.
    pub fn last_values(&self, run_id: &str) -> Result<Vec<MetricRow>, StoreError> {
        let rid = self.rid(run_id)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT l.step, l.layer, n.name, l.value FROM metric_last l
                 JOIN metric_names n ON n.nid = l.nid WHERE l.rid = ?1 ORDER BY n.name, l.layer",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt.query([rid]).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            out.push(self.metric_row(r)?);
        }
        Ok(out)
    }

    /// `(step, value)` of one series, by step; empty if the run never recorded it.
    pub fn series(
        &self,
        run_id: &str,
        name: &str,
        layer: Option<u32>,
    ) -> Result<Vec<(u64, f64)>, StoreError> {
        let rid = self.rid(run_id)?;
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT v.step, v.value FROM metric_values v
                 WHERE v.rid = ?1 AND v.nid = (SELECT nid FROM metric_names WHERE name = ?2) AND v.layer = ?3
                 ORDER BY v.step",
            )
            .map_err(|e| self.err(e))?;
        let mut rows = stmt
            .query(params![rid, name, layer.map_or(-1, i64::from)])
            .map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            let step = self.step(r.get(0).map_err(|e| self.err(e))?)?;
            let value: Option<f64> = r.get(1).map_err(|e| self.err(e))?;
            out.push((step, value.unwrap_or(f64::NAN)));
        }
        Ok(out)
    }

    // ---- internals ----

    fn err(&self, e: rusqlite::Error) -> StoreError {
        sql_err(&self.path, e)
    }

    fn invalid(&self, what: String) -> StoreError {
        StoreError::Invalid {
            path: self.path.clone(),
            what,
        }
    }

    /// 0 for an empty file; errors for files that are not cloudchamber stores.
    fn schema_version(&self) -> Result<u32, StoreError> {
        let tables: i64 = self
            .conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        if tables == 0 {
            return Ok(0);
        }
        let has_meta: i64 = self
            .conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.err(e))?;
        if has_meta == 0 {
            return Err(StoreError::NotAStore {
                path: self.path.clone(),
            });
        }
        let v: Option<String> = self
            .conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err(e))?;
        v.and_then(|v| v.parse().ok())
            .ok_or_else(|| StoreError::NotAStore {
                path: self.path.clone(),
            })
    }

    /// A transaction that takes the write lock when it begins (`BEGIN IMMEDIATE`), so writers
    /// queue on the busy timeout instead of failing to upgrade a read lock. In a batch, a
    /// savepoint: it commits or rolls back alone, but is kept only when the batch commits.
    fn write_tx(&mut self) -> Result<WriteTx<'_>, StoreError> {
        let path = &self.path;
        if self.batch.is_some() {
            let sp = self.conn.savepoint().map_err(|e| sql_err(path, e))?;
            return Ok(WriteTx {
                scope: Scope::Savepoint(sp),
                _turn: None,
            });
        }
        let turn = self.gate.enter();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| sql_err(path, e))?;
        Ok(WriteTx {
            scope: Scope::Tx(tx),
            _turn: Some(turn),
        })
    }

    /// A turn at the gate for one write statement; none in a batch, which holds its own.
    fn turn(&self) -> Option<Turn> {
        self.batch.is_none().then(|| self.gate.enter())
    }

    /// Opens a batch: every write until [`Store::end_batch`] goes into one transaction (each
    /// as a savepoint in it, so one that fails still rolls back alone), which holds the write
    /// lock throughout. One commit, one handover of the lock and one write of the pages the
    /// writes share, where separate transactions took one each: a lockstep group's 16 runs
    /// end with 16 flushes of their rows and 16 final statuses (README: Sweeps). Until it
    /// commits nothing is durable or visible to other connections: a process killed inside
    /// loses every write of the batch, so batch only writes whose loss leaves the store as a
    /// crash just before the batch would (no file outside the store may depend on them). A
    /// batch already open stays open.
    pub fn begin_batch(&mut self) -> Result<(), StoreError> {
        if self.batch.is_some() {
            return Ok(());
        }
        let turn = self.gate.enter();
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(|e| self.err(e))?;
        self.batch = Some(turn);
        Ok(())
    }

    /// Commits the open batch (none open: nothing to do). On failure every write of the batch
    /// is rolled back, and the error says so.
    pub fn end_batch(&mut self) -> Result<(), StoreError> {
        let Some(turn) = self.batch.take() else {
            return Ok(());
        };
        let committed = self.conn.execute_batch("COMMIT");
        if committed.is_err() {
            // Name ids first seen in the batch were kept as committed: forget them all.
            self.nids.clear();
            if !self.conn.is_autocommit() {
                let _ = self.conn.execute_batch("ROLLBACK");
            }
        }
        drop(turn);
        committed.map_err(|e| self.err(e))
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        let path = self.path.clone();
        let tx = self.write_tx()?;
        // Re-read under the write lock: another process may have migrated meanwhile.
        let has_meta: i64 = tx
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
                [],
                |r| r.get(0),
            )
            .map_err(|e| sql_err(&path, e))?;
        let mut version: u32 = if has_meta == 0 {
            0
        } else {
            tx.query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get::<_, String>(0),
            )
            .map_err(|e| sql_err(&path, e))?
            .parse()
            .map_err(|_| StoreError::NotAStore { path: path.clone() })?
        };
        while version < SCHEMA_VERSION {
            tx.execute_batch(MIGRATIONS[version as usize])
                .map_err(|e| sql_err(&path, e))?;
            version += 1;
        }
        tx.execute(
            "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [version.to_string()],
        )
        .map_err(|e| sql_err(&path, e))?;
        tx.commit().map_err(|e| sql_err(&path, e))
    }

    fn rid(&self, run_id: &str) -> Result<i64, StoreError> {
        self.conn
            .query_row("SELECT rid FROM runs WHERE id = ?1", [run_id], |r| r.get(0))
            .optional()
            .map_err(|e| self.err(e))?
            .ok_or_else(|| StoreError::NotFound {
                path: self.path.clone(),
                query: run_id.to_string(),
            })
    }

    fn query_runs(
        &self,
        filter: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<RunRecord>, StoreError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs {filter} ORDER BY coalesce(started_at, created_at) DESC, rid DESC"
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(|e| self.err(e))?;
        let mut rows = stmt.query(args).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().map_err(|e| self.err(e))? {
            out.push(
                read_run(r, 0)
                    .map_err(|e| self.err(e))?
                    .map_err(|what| self.invalid(what))?,
            );
        }
        Ok(out)
    }

    fn step(&self, v: i64) -> Result<u64, StoreError> {
        u64::try_from(v).map_err(|_| self.invalid(format!("negative step {v} in the store")))
    }

    fn metric_row(&self, r: &rusqlite::Row<'_>) -> Result<MetricRow, StoreError> {
        let e = |e| self.err(e);
        let layer: i64 = r.get(1).map_err(e)?;
        let value: Option<f64> = r.get(3).map_err(e)?;
        Ok(MetricRow {
            step: self.step(r.get(0).map_err(e)?)?,
            layer: if layer == -1 {
                None
            } else {
                Some(
                    u32::try_from(layer)
                        .map_err(|_| self.invalid(format!("bad layer {layer} in the store")))?,
                )
            },
            name: r.get(2).map_err(e)?,
            value: value.unwrap_or(f64::NAN),
        })
    }
}

/// The first few items of a list, for an error message that stays one line.
fn some_of(items: &[String]) -> String {
    const SHOWN: usize = 8;
    let mut out = items[..items.len().min(SHOWN)].join(", ");
    if items.len() > SHOWN {
        out.push_str(&format!(", and {} more", items.len() - SHOWN));
    }
    out
}

fn sql_err(path: &Path, e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) => StoreError::NotADatabase {
            path: path.to_path_buf(),
        },
        _ => StoreError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Reads `RUN_COLUMNS` starting at column `at`. The outer error is SQLite's, the
/// inner one a value this build does not understand.
fn read_run(r: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<Result<RunRecord, String>> {
    let status: String = r.get(at + 2)?;
    let Some(status) = RunStatus::parse(&status) else {
        return Ok(Err(format!("unknown run status '{status}'")));
    };
    let count = |i: usize| -> rusqlite::Result<Result<Option<u64>, String>> {
        let v: Option<i64> = r.get(at + i)?;
        Ok(
            v.map(|v| u64::try_from(v).map_err(|_| format!("negative count {v}")))
                .transpose(),
        )
    };
    let steps = match count(9)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let diverged_step = match count(10)? {
        Ok(v) => v,
        Err(e) => return Ok(Err(e)),
    };
    let pid: Option<i64> = r.get(at + 13)?;
    Ok(Ok(RunRecord {
        id: r.get(at)?,
        name: r.get(at + 1)?,
        status,
        spec_json: r.get(at + 3)?,
        spec_toml: r.get(at + 4)?,
        created_at: r.get(at + 5)?,
        started_at: r.get(at + 6)?,
        ended_at: r.get(at + 7)?,
        wall_seconds: r.get(at + 8)?,
        steps,
        diverged_step,
        message: r.get(at + 11)?,
        tool_version: r.get(at + 12)?,
        pid: pid.and_then(|p| u32::try_from(p).ok()),
        host: r.get(at + 14)?,
        proc_start: r.get(at + 15)?,
    }))
}

fn hostname() -> Option<String> {
    let from_file = |p: &str| fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::env::var("COMPUTERNAME").ok())
        .filter(|h| !h.is_empty())
}

/// `<boot_id>/<start time in clock ticks>` of a live process, from Linux procfs.
fn proc_identity(pid: u32) -> Option<String> {
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; starttime is field 22 overall.
    let rest = &stat[stat.rfind(')')? + 1..];
    let start = rest.split_whitespace().nth(19)?;
    Some(format!("{}/{}", boot.trim(), start))
}

/// Whether the process that owns a run may still be running. Errs on the side of
/// "alive" whenever it cannot tell (another host, no procfs).
fn owner_alive(pid: Option<u32>, host: Option<&str>, proc_start: Option<&str>) -> bool {
    let Some(pid) = pid else { return true };
    if let Some(host) = host {
        if hostname().as_deref() != Some(host) {
            return true;
        }
    }
    if !Path::new("/proc/self/stat").exists() {
        return true;
    }
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next());
    if matches!(state, Some("Z" | "X")) {
        return false; // killed, waiting to be reaped
    }
    // A different start time means the pid was reused (or the machine rebooted).
    match proc_start {
        Some(recorded) => proc_identity(pid).as_deref() == Some(recorded),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_store_is_retried_in_short_naps_for_ten_seconds() {
        let naps: Vec<Duration> = (0..).map_while(lock_nap).collect();
        assert_eq!(naps[0], Duration::from_micros(50));
        assert_eq!(naps[1], Duration::from_micros(100));
        assert!(naps.iter().all(|&n| n <= Duration::from_millis(2)));
        let total: Duration = naps.iter().sum();
        assert!(total >= LOCK_PATIENCE && total < LOCK_PATIENCE + Duration::from_millis(2));
    }

    /// Two connections of one process writing at once take turns at the gate: every row of
    /// both lands, no write meets SQLite's lock (not one nap), and a writer that waits starts
    /// when the other's transaction ends.
    #[test]
    fn writers_in_one_process_take_turns_at_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cc.db");
        let mut s = Store::open(&path).unwrap();
        for id in ["a", "b"] {
            s.begin_run(id, id, "{}", "", "0.1").unwrap();
        }
        let writers: Vec<_> = ["a", "b"]
            .into_iter()
            .map(|id| {
                let path = path.clone();
                std::thread::spawn(move || {
                    let mut s = Store::open(&path).unwrap();
                    // A handler that fails at once: any wait on SQLite's lock is an error.
                    s.conn.busy_handler(Some(|_| false)).unwrap();
                    for step in 0..200 {
                        s.append_metrics(id, &[row(step, None, "loss", step as f64)])
                            .unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        for id in ["a", "b"] {
            let n: i64 = s
                .conn
                .query_row(
                    "SELECT count(*) FROM metric_values JOIN runs USING (rid) WHERE id = ?1",
                    [id],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 200, "run {id}");
        }
    }

    fn row(step: u64, layer: Option<u32>, name: &str, value: f64) -> MetricRow {
        MetricRow {
            step,
            layer,
            name: name.to_string(),
            value,
        }
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(&dir.path().join("cc.db")).unwrap();
        (dir, s)
    }

    #[test]
    fn creates_schema_and_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cc.db");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "").unwrap(); // an empty file is schema version 0
        {
            let mut s = Store::open(&path).unwrap();
            s.begin_run("r1", "first", "{}", "", "0.1").unwrap();
            let mode: String = s
                .conn
                .query_row("PRAGMA journal_mode", [], |r| r.get(0))
                .unwrap();
            assert_eq!(mode, "wal");
        }
        let s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(s.runs().unwrap().len(), 1);
        assert_eq!(s.artifacts_dir("r1"), dir.path().join("sub/runs/r1"));
    }

    #[test]
    fn refuses_newer_schema_and_foreign_files() {
        let (dir, s) = store();
        s.conn
            .execute(
                "UPDATE meta SET value = '99' WHERE key = 'schema_version'",
                [],
            )
            .unwrap();
        drop(s);
        let err = Store::open(&dir.path().join("cc.db")).err().unwrap();
        assert!(
            matches!(
                err,
                StoreError::NewerSchema {
                    found: 99,
                    supported: SCHEMA_VERSION,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("cc.db"), "{err}");
        assert!(!err.hints().is_empty());

        let junk = dir.path().join("junk.db");
        fs::write(&junk, vec![b'x'; 4096]).unwrap();
        let err = Store::open(&junk).err().unwrap();
        assert!(matches!(err, StoreError::NotADatabase { .. }), "{err}");

        let other = dir.path().join("other.db");
        Connection::open(&other)
            .unwrap()
            .execute_batch("CREATE TABLE t (x)")
            .unwrap();
        let err = Store::open(&other).err().unwrap();
        assert!(matches!(err, StoreError::NotAStore { .. }), "{err}");
        // The foreign file was not switched to WAL or otherwise touched.
        let mode: String = Connection::open(&other)
            .unwrap()
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "delete");
    }

    #[test]
    fn round_trip() {
        let (_dir, mut s) = store();
        s.begin_run("abc123", "mlp", r#"{"lr":0.1}"#, "lr = 0.1\n", "0.1.0")
            .unwrap();
        let r = s.run("abc123").unwrap().unwrap();
        assert_eq!(r.status, RunStatus::Running);
        assert_eq!(r.pid, Some(std::process::id()));
        assert!(!r.is_incomplete(), "our own run is alive");
        assert_eq!(r.display_status(), "running");
        assert!(
            r.created_at.ends_with('Z') && r.created_at.len() == 24,
            "{}",
            r.created_at
        );

        s.append_metrics(
            "abc123",
            &[
                row(0, None, "loss", 2.5),
                row(0, Some(1), "wnorm", 1.0),
                row(0, Some(0), "wnorm", 0.5),
            ],
        )
        .unwrap();
        s.append_metrics(
            "abc123",
            &[row(10, None, "loss", 1.25), row(10, Some(0), "wnorm", 0.75)],
        )
        .unwrap();
        s.finish_run("abc123", RunStatus::Completed, 11, 3.5, None, Some("ok"))
            .unwrap();

        let r = s.run("abc123").unwrap().unwrap();
        assert_eq!(
            (r.status, r.steps, r.wall_seconds, r.message.as_deref()),
            (RunStatus::Completed, Some(11), Some(3.5), Some("ok"))
        );
        assert!(r.ended_at.is_some());
        assert_eq!(r.spec_json, r#"{"lr":0.1}"#);
        assert_eq!(r.spec_toml, "lr = 0.1\n");
        assert_eq!(r.tool_version, "0.1.0");
        assert_eq!(
            s.metrics("abc123").unwrap(),
            vec![
                row(0, None, "loss", 2.5),
                row(0, Some(0), "wnorm", 0.5),
                row(0, Some(1), "wnorm", 1.0),
                row(10, None, "loss", 1.25),
                row(10, Some(0), "wnorm", 0.75),
            ]
        );
        assert_eq!(
            s.last_values("abc123").unwrap(),
            vec![
                row(10, None, "loss", 1.25),
                row(10, Some(0), "wnorm", 0.75),
                row(0, Some(1), "wnorm", 1.0)
            ]
        );
        assert_eq!(
            s.series("abc123", "wnorm", Some(0)).unwrap(),
            vec![(0, 0.5), (10, 0.75)]
        );
        assert_eq!(s.series("abc123", "nope", None).unwrap(), vec![]);
        // The tidy view for plain-SQL users.
        let n: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM metrics WHERE run_id = 'abc123' AND layer IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 2);

        assert!(matches!(
            s.append_metrics("nope", &[]),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.finish_run("nope", RunStatus::Failed, 0, 0.0, None, None),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.metrics("nope"),
            Err(StoreError::NotFound { .. })
        ));
        assert!(matches!(
            s.begin_run("../x", "n", "", "", ""),
            Err(StoreError::Invalid { .. })
        ));
    }

    #[test]
    fn multi_row_inserts_keep_order_and_name_the_duplicate() {
        let (_dir, mut s) = store();
        s.begin_run("r", "n", "", "", "").unwrap();
        // 100 rows: chunks of 64, 32 and 4.
        let batch: Vec<MetricRow> = (0..100)
            .map(|i| row(i, Some((i % 3) as u32), "loss", i as f64 * 0.5))
            .collect();
        s.append_metrics("r", &batch).unwrap();
        let mut got = s.metrics("r").unwrap();
        got.sort_by_key(|r| r.step);
        assert_eq!(got, batch);
        // A repeat inside one chunk, and a row already stored, in a later chunk.
        for (dup, at) in [
            (row(101, None, "x", 0.0), 101),
            (row(7, Some(1), "loss", 3.0), 7),
        ] {
            let mut more: Vec<MetricRow> = (100..170).map(|i| row(i, None, "x", 1.0)).collect();
            more.insert(66, dup);
            let err = s.append_metrics("r", &more);
            assert!(
                matches!(&err, Err(StoreError::DuplicateMetric { step, .. }) if *step == at),
                "{err:?}"
            );
            assert_eq!(s.metrics("r").unwrap().len(), 100);
        }
    }

    #[test]
    fn failed_batch_leaves_nothing_behind() {
        let (_dir, mut s) = store();
        s.begin_run("r", "n", "", "", "").unwrap();
        s.append_metrics("r", &[row(1, None, "loss", 1.0)]).unwrap();
        let err = s.append_metrics(
            "r",
            &[
                row(2, None, "loss", 2.0),
                row(1, None, "fresh", 0.0),
                row(1, None, "loss", 9.0),
            ],
        );
        assert!(
            matches!(err, Err(StoreError::DuplicateMetric { step: 1, .. })),
            "{err:?}"
        );
        assert_eq!(s.metrics("r").unwrap(), vec![row(1, None, "loss", 1.0)]);
        assert_eq!(s.last_values("r").unwrap(), vec![row(1, None, "loss", 1.0)]);
        // The rolled-back name must not break later batches.
        s.append_metrics("r", &[row(2, None, "fresh", 3.0)])
            .unwrap();
        assert_eq!(s.series("r", "fresh", None).unwrap(), vec![(2, 3.0)]);
    }

    /// A batch: its writes are savepoints of one transaction (a failed one rolls back alone),
    /// invisible to another connection until the batch commits, and all lost with a process
    /// that never commits it.
    #[test]
    fn writes_in_a_batch_commit_together() {
        let (dir, mut s) = store();
        let path = dir.path().join("cc.db");
        for id in ["a", "b"] {
            s.begin_run(id, "n", "", "", "").unwrap();
        }
        s.begin_batch().unwrap();
        s.begin_batch().unwrap(); // already open: stays open
        s.append_metrics("a", &[row(1, None, "loss", 1.0)]).unwrap();
        let err = s.append_metrics(
            "b",
            &[row(1, None, "fresh", 2.0), row(1, None, "fresh", 3.0)],
        );
        assert!(
            matches!(err, Err(StoreError::DuplicateMetric { .. })),
            "{err:?}"
        );
        s.append_metrics("b", &[row(1, None, "loss", 4.0)]).unwrap();
        s.append_metrics("b", &[]).unwrap();
        // A statement of its own (the gate's turn is the batch's: no wait for itself).
        s.finish_run("a", RunStatus::Completed, 1, 0.5, None, None)
            .unwrap();
        let other = Store::open(&path).unwrap();
        assert!(other.metrics("a").unwrap().is_empty());
        assert_eq!(other.run("a").unwrap().unwrap().status, RunStatus::Running);
        s.end_batch().unwrap();
        s.end_batch().unwrap(); // none open: nothing to do
        assert_eq!(other.metrics("a").unwrap(), vec![row(1, None, "loss", 1.0)]);
        assert_eq!(other.metrics("b").unwrap(), vec![row(1, None, "loss", 4.0)]);
        assert_eq!(
            other.run("a").unwrap().unwrap().status,
            RunStatus::Completed
        );
        // The name the failed write brought was rolled back with it, and is found again.
        s.append_metrics("b", &[row(2, None, "fresh", 5.0)])
            .unwrap();
        assert_eq!(other.series("b", "fresh", None).unwrap(), vec![(2, 5.0)]);
        // Never committed: gone with the connection.
        s.begin_batch().unwrap();
        s.append_metrics("b", &[row(3, None, "loss", 6.0)]).unwrap();
        drop(s);
        let s = Store::open(&path).unwrap();
        assert_eq!(s.metrics("b").unwrap().len(), 2);
        assert_eq!(s.series("b", "loss", None).unwrap(), vec![(1, 4.0)]);
    }

    #[test]
    fn begin_run_resets_existing() {
        let (_dir, mut s) = store();
        s.begin_run("r", "old", "{}", "", "0.1").unwrap();
        s.append_metrics("r", &[row(0, None, "loss", 1.0)]).unwrap();
        s.finish_run("r", RunStatus::Diverged, 5, 1.0, Some(4), Some("nan"))
            .unwrap();
        s.begin_run("r", "new", "{\"a\":1}", "", "0.2").unwrap();
        let r = s.run("r").unwrap().unwrap();
        assert_eq!(
            (
                r.name.as_str(),
                r.status,
                r.steps,
                r.diverged_step,
                r.message
            ),
            ("new", RunStatus::Running, None, None, None)
        );
        assert_eq!(r.tool_version, "0.2");
        assert!(s.metrics("r").unwrap().is_empty());
        assert!(s.last_values("r").unwrap().is_empty());
        assert_eq!(s.runs().unwrap().len(), 1);
    }

    /// Two sweeps of one file at once: one process looks at a run, the other finishes it, then
    /// the first claims it. The claim must find the finished run inside its own transaction and
    /// leave it (it once reset it and trained it again: 10 runs trained of 9 in
    /// `tests/sweep.rs`'s two-sweeps test).
    #[test]
    fn a_claim_leaves_a_run_another_connection_finished_after_the_look() {
        let (_dir, mut a) = store();
        let mut b = Store::open(a.path()).unwrap();
        assert!(a.run("r").unwrap().is_none(), "a looks: nothing yet");
        assert!(b
            .claim_run("r", "n", "{}", "", "t", None)
            .unwrap()
            .is_none());
        // A resumed claim from step 5 would drop the row of step 7.
        let rows = [row(0, None, "loss", 1.0), row(7, None, "loss", 0.5)];
        b.append_metrics("r", &rows).unwrap();
        b.finish_run("r", RunStatus::Completed, 10, 1.0, None, None)
            .unwrap();
        for resume_from in [None, Some(5)] {
            let done = a
                .claim_run("r", "n", "{}", "", "t", resume_from)
                .unwrap()
                .expect("the finished run comes back");
            assert_eq!((done.status, done.steps), (RunStatus::Completed, Some(10)));
        }
        assert_eq!(a.metrics("r").unwrap(), rows.to_vec());
        // A diverged run is finished too; an interrupted one is claimed.
        b.finish_run("r", RunStatus::Diverged, 3, 1.0, Some(3), Some("nan"))
            .unwrap();
        assert!(a
            .claim_run("r", "n", "{}", "", "t", None)
            .unwrap()
            .is_some());
        b.finish_run("r", RunStatus::Interrupted, 3, 1.0, None, None)
            .unwrap();
        assert!(a
            .claim_run("r", "n", "{}", "", "t", Some(0))
            .unwrap()
            .is_none());
        assert_eq!(a.run("r").unwrap().unwrap().status, RunStatus::Running);
        // `--force` restarts a finished run: begin_run still resets it.
        a.finish_run("r", RunStatus::Completed, 10, 1.0, None, None)
            .unwrap();
        a.begin_run("r", "n", "{}", "", "t").unwrap();
        assert!(a.metrics("r").unwrap().is_empty());
    }

    #[test]
    fn begin_run_refuses_a_live_run_of_another_process() {
        let (_dir, mut s) = store();
        s.begin_run("r", "n", "", "", "").unwrap();
        // Pretend pid 1 (always alive) owns it.
        let start = proc_identity(1);
        s.conn
            .execute("UPDATE runs SET pid = 1, proc_start = ?1", [start])
            .unwrap();
        let err = s.begin_run("r", "n", "", "", "").err().unwrap();
        assert!(matches!(err, StoreError::RunActive { pid: 1, .. }), "{err}");
    }

    /// A resumed run's wall time is the sum of its segments; a run started again from step 0
    /// starts its clock again.
    #[test]
    fn wall_time_sums_the_segments_of_a_resumed_run() {
        let (_dir, mut s) = store();
        s.begin_run("r", "n", "", "", "").unwrap();
        s.finish_run("r", RunStatus::Interrupted, 100, 2.0, None, None)
            .unwrap();
        s.resume_run("r", "n", "", "", "", 100).unwrap();
        s.finish_run("r", RunStatus::Interrupted, 200, 3.0, None, None)
            .unwrap();
        s.resume_run("r", "n", "", "", "", 200).unwrap();
        s.finish_run("r", RunStatus::Completed, 300, 0.5, None, None)
            .unwrap();
        assert_eq!(s.run("r").unwrap().unwrap().wall_seconds, Some(5.5));
        s.begin_run("r", "n", "", "", "").unwrap();
        s.finish_run("r", RunStatus::Completed, 300, 1.25, None, None)
            .unwrap();
        assert_eq!(s.run("r").unwrap().unwrap().wall_seconds, Some(1.25));
    }

    #[test]
    fn resolve_by_prefix_and_name() {
        let (_dir, mut s) = store();
        for (id, name) in [("a1b2", "alpha"), ("a1c3", "beta"), ("ff00", "beta")] {
            s.begin_run(id, name, "", "", "").unwrap();
        }
        assert_eq!(s.resolve("a1b2").unwrap().id, "a1b2");
        assert_eq!(s.resolve("a1c").unwrap().id, "a1c3");
        assert_eq!(s.resolve("alpha").unwrap().id, "a1b2");
        match s.resolve("a1").err().unwrap() {
            StoreError::Ambiguous { mut matches, .. } => {
                matches.sort();
                assert_eq!(matches, vec!["a1b2", "a1c3"]);
            }
            e => panic!("{e}"),
        }
        assert!(matches!(
            s.resolve("beta"),
            Err(StoreError::Ambiguous { .. })
        ));
        assert!(matches!(s.resolve("zz"), Err(StoreError::NotFound { .. })));
        assert!(matches!(s.resolve("%"), Err(StoreError::NotFound { .. })));
        assert!(matches!(s.resolve(""), Err(StoreError::NotFound { .. })));
        // Newest first.
        let ids: Vec<String> = s.runs().unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(ids, vec!["ff00", "a1c3", "a1b2"]);
    }

    #[test]
    fn killed_run_is_incomplete() {
        let (_dir, mut s) = store();
        s.begin_run("k", "killed", "", "", "").unwrap();
        s.conn
            .execute("UPDATE runs SET pid = ?1", [u32::MAX - 1])
            .unwrap();
        let r = s.run("k").unwrap().unwrap();
        assert!(r.is_incomplete());
        assert_eq!(r.display_status(), "incomplete");
        // A live pid whose start time differs is a reused pid: also incomplete.
        s.conn
            .execute("UPDATE runs SET pid = 1, proc_start = 'other-boot/1'", [])
            .unwrap();
        assert!(s.run("k").unwrap().unwrap().is_incomplete());
        // A finished run is never incomplete, whatever its pid.
        s.finish_run("k", RunStatus::Failed, 0, 0.0, None, Some("boom"))
            .unwrap();
        assert_eq!(s.run("k").unwrap().unwrap().display_status(), "failed");
        // And an incomplete run may be restarted.
        s.conn
            .execute(
                "UPDATE runs SET status = 'running', pid = ?1",
                [u32::MAX - 1],
            )
            .unwrap();
        s.begin_run("k", "again", "", "", "").unwrap();
    }

    /// Real `kill -9` of a process in the middle of writing: the store must stay
    /// intact, hold only whole batches, and show the run as incomplete.
    #[test]
    #[cfg(target_os = "linux")]
    fn kill_9_leaves_store_consistent() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("cc.db");
        // The child is this test binary running the ignored writer test below.
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "kill_9_writer_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("CC_KILL9_DB", &db)
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "writer child made no progress"
            );
            std::thread::sleep(Duration::from_millis(20));
            let Ok(s) = Store::open(&db) else { continue };
            if s.run("victim").ok().flatten().is_some()
                && s.metrics("victim").map_or(0, |m| m.len()) >= 3 * KILL9_BATCH
            {
                break;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let s = Store::open(&db).unwrap();
        let check: String = s
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
        let r = s.run("victim").unwrap().unwrap();
        assert!(r.is_incomplete(), "{r:?}");
        let n = s.metrics("victim").unwrap().len();
        assert!(
            n > 0 && n.is_multiple_of(KILL9_BATCH),
            "{n} rows is not a whole number of batches"
        );
    }

    const KILL9_BATCH: usize = 50;

    #[test]
    #[ignore = "helper process for kill_9_leaves_store_consistent"]
    fn kill_9_writer_child() {
        let Some(db) = std::env::var_os("CC_KILL9_DB") else {
            return;
        };
        let mut s = Store::open(Path::new(&db)).unwrap();
        s.begin_run("victim", "victim", "", "", "").unwrap();
        for step in 0.. {
            let rows: Vec<MetricRow> = (0..KILL9_BATCH as u32)
                .map(|l| row(step, Some(l), "x", step as f64))
                .collect();
            s.append_metrics("victim", &rows).unwrap();
        }
    }

    #[test]
    fn migrates_a_version_1_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v1.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(MIGRATIONS[0]).unwrap();
        c.execute_batch(
            "INSERT INTO meta VALUES ('schema_version', '1');
             INSERT INTO runs (rid, id, name, status, spec_json, spec_toml, created_at, tool_version)
                 VALUES (1, 'old', 'old', 'completed', '{}', '', '2024-01-01T00:00:00.000Z', '0.0.1');
             INSERT INTO metric_names VALUES (1, 'loss'), (2, 'w');
             INSERT INTO metric_values VALUES (1, 0, 1, -1, 3.0), (1, 5, 1, -1, 2.0), (1, 9, 1, -1, NULL),
                 (1, 0, 2, 0, 1.0), (1, 5, 2, 0, 7.0);",
        )
        .unwrap();
        drop(c);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        let last = s.last_values("old").unwrap();
        assert_eq!(last.len(), 2);
        assert_eq!((last[0].step, last[0].name.as_str()), (9, "loss"));
        assert!(last[0].value.is_nan());
        assert_eq!(last[1], row(5, Some(0), "w", 7.0));
        // And the migrated store keeps working.
        s.begin_run("new", "new", "", "", "").unwrap();
        s.append_metrics("new", &[row(1, None, "loss", 0.5)])
            .unwrap();
        assert_eq!(
            s.last_values("new").unwrap(),
            vec![row(1, None, "loss", 0.5)]
        );
    }

    /// A version 3 store (sweeps, no cluster tables) opens, keeps its runs and sweeps, and
    /// records jobs afterwards.
    #[test]
    fn migrates_a_version_3_store() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        let c = Connection::open(&path).unwrap();
        for m in &MIGRATIONS[..3] {
            c.execute_batch(m).unwrap();
        }
        c.execute_batch(
            "INSERT INTO meta VALUES ('schema_version', '3');
             INSERT INTO runs (rid, id, name, status, spec_json, spec_toml, created_at, tool_version)
                 VALUES (1, 'old', 'sw', 'completed', '{}', '', '2024-01-01T00:00:00.000Z', '0.0.1');
             INSERT INTO sweeps VALUES ('sw', 's.toml', '[sweep]', '2024-01-01T00:00:00.000Z', '2024-01-01T00:00:00.000Z');
             INSERT INTO sweep_runs VALUES ('sw', 0, 'old', '[[\"seed\",\"0\"]]');",
        )
        .unwrap();
        drop(c);
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), 4);
        assert_eq!(s.run("old").unwrap().unwrap().status, RunStatus::Completed);
        assert_eq!(
            s.sweep_runs("sw").unwrap(),
            vec![(
                "old".to_string(),
                vec![("seed".to_string(), "0".to_string())]
            )]
        );
        assert!(s.slurm_jobs("sw").unwrap().is_empty());
        let job = SlurmJob {
            job_id: "42".into(),
            sweep: "sw".into(),
            submitted_at: String::new(),
            array: "0,3%2".into(),
            runs: vec![(0, "old".into()), (3, "new".into())],
            script: "#!/bin/bash\n".into(),
        };
        s.record_slurm_job(&job).unwrap();
        let back = s.slurm_jobs("sw").unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].submitted_at.ends_with('Z'));
        assert_eq!(
            SlurmJob {
                submitted_at: String::new(),
                ..back[0].clone()
            },
            job
        );
    }

    /// A `running` run whose owner is gone, or on another machine, becomes `interrupted`; one
    /// owned by a live process here stays.
    #[test]
    fn release_run_frees_only_runs_whose_owner_cannot_be_alive() {
        let (_dir, mut s) = store();
        s.begin_run("mine", "n", "", "", "").unwrap();
        assert!(!s.release_run("mine").unwrap());
        s.begin_run("gone", "n", "", "", "").unwrap();
        s.conn
            .execute("UPDATE runs SET pid = ?1 WHERE id = 'gone'", [u32::MAX - 1])
            .unwrap();
        s.begin_run("far", "n", "", "", "").unwrap();
        s.conn
            .execute("UPDATE runs SET host = 'another-node' WHERE id = 'far'", [])
            .unwrap();
        assert!(s.release_run("gone").unwrap());
        assert!(s.release_run("far").unwrap());
        assert!(!s.release_run("absent").unwrap());
        for (id, want) in [
            ("mine", RunStatus::Running),
            ("gone", RunStatus::Interrupted),
            ("far", RunStatus::Interrupted),
        ] {
            assert_eq!(s.run(id).unwrap().unwrap().status, want, "{id}");
        }
        // Released runs start again (here: from a checkpoint before step 0).
        s.resume_run("far", "n", "", "", "", 0).unwrap();
    }

    #[test]
    fn special_floats_survive() {
        let (_dir, mut s) = store();
        s.begin_run("f", "floats", "", "", "").unwrap();
        let vals = [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            -0.0,
            5e-324,
            f64::MAX,
            0.1,
            1e300,
            3.0,
        ];
        let rows: Vec<MetricRow> = vals
            .iter()
            .enumerate()
            .map(|(i, &v)| row(i as u64, None, "x", v))
            .collect();
        s.append_metrics("f", &rows).unwrap();
        let back = s.series("f", "x", None).unwrap();
        assert_eq!(back.len(), vals.len());
        for ((_, got), want) in back.iter().zip(vals) {
            assert!(
                got.is_nan() && want.is_nan() || got.to_bits() == want.to_bits(),
                "{got} vs {want}"
            );
        }
        assert!(s.last_values("f").unwrap()[0].value == 3.0);
    }
}
