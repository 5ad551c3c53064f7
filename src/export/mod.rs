//! Exports of the tidy metric rows `run_id,step,layer,name,value` to CSV or Parquet.
//!
//! Rows are streamed one run at a time (ordered by step, name, layer within a run),
//! so an export never holds a whole store in memory.

pub mod csv;
pub mod parquet;
pub mod tensorboard;

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::store::{Store, StoreError};

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    Csv,
    Parquet,
    /// TensorBoard event files, one directory per run (needs `-o DIR`).
    Tensorboard,
}

impl ExportFormat {
    pub fn extension(self) -> &'static str {
        match self {
            ExportFormat::Csv => "csv",
            ExportFormat::Parquet => "parquet",
            ExportFormat::Tensorboard => "tfevents",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot write {dest}: {source}")]
    Io {
        dest: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot write Parquet to {dest}: {source}")]
    Parquet {
        dest: String,
        #[source]
        source: ::parquet::errors::ParquetError,
    },
    #[error("{format} export writes a directory, not a single stream")]
    NotAStream { format: &'static str },
}

impl ExportError {
    pub fn hints(&self) -> Vec<String> {
        match self {
            ExportError::Store(e) => e.hints(),
            ExportError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                vec!["choose an output path in a directory you can write to".to_string()]
            }
            ExportError::NotAStream { .. } => {
                vec!["add `-o DIR`: one directory per run is written under it".to_string()]
            }
            _ => vec![],
        }
    }

    /// True when the reader of a pipe went away (e.g. `| head`), which a CLI
    /// usually treats as a normal end rather than an error.
    pub fn is_broken_pipe(&self) -> bool {
        matches!(self, ExportError::Io { source, .. } if source.kind() == io::ErrorKind::BrokenPipe)
    }
}

/// Writes the metrics of `run_ids` (in that order) to `out`; returns the number of rows.
/// Every id must exist; this is checked before anything is written.
///
/// `out` must be `Send` because the Parquet writer requires it (`File`, `Vec<u8>`
/// and `io::stdout()` all are).
/// `(run ids, swept keys, each run's values in key order)`.
pub type SweepColumns = (Vec<String>, Vec<String>, Vec<Vec<String>>);

/// A recorded sweep's runs with their swept values and how each run ended: `(run ids, swept
/// keys then "status", values per run)`, runs not trained yet left out (they have no rows).
/// The status column (completed, diverged, failed, interrupted, running) lets an analysis
/// drop diverged runs before averaging.
pub fn sweep_columns(store: &Store, sweep: &str) -> Result<SweepColumns, ExportError> {
    let runs = store.sweep_runs(sweep)?;
    let mut keys: Vec<String> = runs
        .first()
        .map(|(_, v)| v.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    keys.push(STATUS_COLUMN.into());
    let mut ids = Vec::new();
    let mut vals = Vec::new();
    for (id, v) in runs {
        if let Some(rec) = store.run(&id)? {
            let mut row: Vec<String> = v.into_iter().map(|(_, v)| v).collect();
            row.push(rec.display_status().into());
            ids.push(id);
            vals.push(row);
        }
    }
    Ok((ids, keys, vals))
}

/// The column of a sweep export that says how each run ended.
pub const STATUS_COLUMN: &str = "status";

/// A recorded sweep's metrics as CSV or Parquet, with one column per swept key after `run_id`
/// (tidy rows that pandas can group by configuration directly).
pub fn export_sweep(
    store: &Store,
    sweep: &str,
    format: ExportFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64, ExportError> {
    let (ids, keys, vals) = sweep_columns(store, sweep)?;
    match format {
        ExportFormat::Csv => csv::write_with(store, &ids, &keys, &vals, out, "<stdout>"),
        ExportFormat::Parquet => parquet::write_with(store, &ids, &keys, &vals, out, "the output"),
        ExportFormat::Tensorboard => Err(ExportError::NotAStream {
            format: "tensorboard",
        }),
    }
}

/// The CSV form of [`export_sweep`].
pub fn export_sweep_csv(
    store: &Store,
    sweep: &str,
    out: &mut (dyn Write + Send),
) -> Result<u64, ExportError> {
    export_sweep(store, sweep, ExportFormat::Csv, out)
}

pub fn export(
    store: &Store,
    run_ids: &[String],
    format: ExportFormat,
    out: &mut (dyn Write + Send),
) -> Result<u64, ExportError> {
    export_named(store, run_ids, format, out, "the output")
}

/// Like [`export`], into the file `path`. The data goes to a temporary file beside
/// it that is renamed over `path` only once complete, so a failed or interrupted
/// export never leaves a truncated file (or destroys an older one).
pub fn export_to_path(
    store: &Store,
    run_ids: &[String],
    format: ExportFormat,
    path: &Path,
) -> Result<u64, ExportError> {
    let dest = path.display().to_string();
    let io_err = |source| ExportError::Io {
        dest: dest.clone(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or(path.as_os_str()).to_os_string();
    tmp_name.push(format!(".partial-{}", std::process::id()));
    let tmp = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(io_err)?;
        let rows = export_named(store, run_ids, format, &mut file, &dest)?;
        file.sync_all().map_err(io_err)?;
        fs::rename(&tmp, path).map_err(io_err)?;
        Ok(rows)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn export_named(
    store: &Store,
    run_ids: &[String],
    format: ExportFormat,
    out: &mut (dyn Write + Send),
    dest: &str,
) -> Result<u64, ExportError> {
    for id in run_ids {
        if store.run(id)?.is_none() {
            let path: PathBuf = store.path().to_path_buf();
            return Err(StoreError::NotFound {
                path,
                query: id.clone(),
            }
            .into());
        }
    }
    match format {
        ExportFormat::Csv => csv::write(store, run_ids, out, dest),
        ExportFormat::Parquet => parquet::write(store, run_ids, out, dest),
        ExportFormat::Tensorboard => Err(ExportError::NotAStream {
            format: "tensorboard",
        }),
    }
}
