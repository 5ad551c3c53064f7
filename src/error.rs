//! The library's one error type. Each variant names the file or key involved; [`Error::hints`]
//! gives the "how to fix" lines the CLI prints under it, and [`Error::exit_code`] separates bad
//! input (2) from failures (1).

use std::path::PathBuf;

use crate::export::ExportError;
use crate::spec::SpecError;
use crate::store::StoreError;
use crate::task::TaskError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: safetensors: {message}")]
    Safetensors { path: PathBuf, message: String },
    #[error("{what}: {message}")]
    Invalid {
        what: String,
        message: String,
        hint: String,
    },
    /// Stopped by Ctrl-C or SIGTERM after checkpointing; exit code 128 + the signal (130, 143).
    #[error("{what}: interrupted")]
    Interrupted { what: String, hint: String },
    /// An error about a key of the experiment file, with where that key is written
    /// (`file.toml:7`), as the spec's own errors are.
    #[error("{location}: {source}")]
    Located {
        location: String,
        source: Box<Error>,
    },
    /// Work that ran and failed (e.g. some runs of a sweep); exit code 1.
    #[error("{what}: {message}")]
    Failed {
        what: String,
        message: String,
        hint: String,
    },
}

/// What to do about an I/O failure, by its kind.
fn io_hint(e: &std::io::Error) -> &'static str {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "check that the path exists",
        K::PermissionDenied => "check the permissions of the path and its folder",
        K::StorageFull | K::QuotaExceeded => {
            "free some space on that disk (or raise the quota) and run it again: runs resume from their last checkpoint"
        }
        K::ReadOnlyFilesystem => "that folder is on a read-only file system; pass --store PATH on a writable one",
        K::IsADirectory => "the path names a folder, not a file",
        _ => "check that the path exists and is writable",
    }
}

impl Error {
    /// A run's writes that a store batch lost when it failed to commit (`what`: which writes;
    /// one error per run, the batch's error `e` in each).
    pub fn batch_lost(what: &str, e: &dyn std::fmt::Display) -> Error {
        Error::Failed {
            what: what.to_string(),
            message: format!("not stored, the transaction failed: {e}"),
            hint: "run the sweep again: its runs train again from their last checkpoint".into(),
        }
    }

    /// `map_err(Error::io(path))`: an I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    /// A data error (a task's file, say) located at the line of the experiment file that
    /// sets its key; any other error as it is.
    pub fn located(self, file: &std::path::Path) -> Error {
        let Error::Task(t) = &self else {
            return self;
        };
        let Some(key) = t.key() else {
            return self;
        };
        let line = std::fs::read_to_string(file)
            .ok()
            .and_then(|text| crate::spec::find_key_line(&text, key));
        Error::Located {
            location: match line {
                Some(l) => format!("{}:{l}", file.display()),
                None => file.display().to_string(),
            },
            source: Box::new(self),
        }
    }

    pub fn hints(&self) -> Vec<String> {
        match self {
            Error::Spec(e) => e.hints(),
            Error::Task(e) => e.hints(),
            Error::Store(e) => e.hints(),
            Error::Export(e) => e.hints(),
            Error::Io { source, .. } => vec![io_hint(source).into()],
            Error::Safetensors { .. } => vec!["the file must be a safetensors file written by cloudchamber or `safetensors.torch.save_file`".into()],
            Error::Invalid { hint, .. } | Error::Failed { hint, .. } | Error::Interrupted { hint, .. } => vec![hint.clone()],
            Error::Located { source, .. } => source.hints(),
        }
    }

    /// 2 for bad input (spec, task, unknown run), 1 for failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spec(_) | Error::Task(_) | Error::Invalid { .. } => 2,
            Error::Interrupted { .. } => crate::interrupt::exit_code(),
            Error::Located { source, .. } => source.exit_code(),
            Error::Store(StoreError::NotFound { .. } | StoreError::Ambiguous { .. }) => 2,
            _ => 1,
        }
    }
}
