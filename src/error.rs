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
    /// Work that ran and failed (e.g. some runs of a sweep); exit code 1.
    #[error("{what}: {message}")]
    Failed {
        what: String,
        message: String,
        hint: String,
    },
}

impl Error {
    /// `map_err(Error::io(path))`: an I/O failure on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }

    pub fn hints(&self) -> Vec<String> {
        match self {
            Error::Spec(e) => e.hints(),
            Error::Task(e) => e.hints(),
            Error::Store(e) => e.hints(),
            Error::Export(e) => e.hints(),
            Error::Io { .. } => vec!["check that the path exists and is writable".into()],
            Error::Safetensors { .. } => vec!["the file must be a safetensors file written by cloudchamber or `safetensors.torch.save_file`".into()],
            Error::Invalid { hint, .. } | Error::Failed { hint, .. } | Error::Interrupted { hint, .. } => vec![hint.clone()],
        }
    }

    /// 2 for bad input (spec, task, unknown run), 1 for failures.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Spec(_) | Error::Task(_) | Error::Invalid { .. } => 2,
            Error::Interrupted { .. } => crate::interrupt::exit_code(),
            Error::Store(StoreError::NotFound { .. } | StoreError::Ambiguous { .. }) => 2,
            _ => 1,
        }
    }
}
