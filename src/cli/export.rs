//! `cloudchamber export [RUN…|--all|--sweep NAME] --format csv|parquet|tensorboard [-o PATH]`

use std::io::Write;
use std::path::{Path, PathBuf};

use cloudchamber::export::{self, ExportFormat};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Runs to export (ids, unique prefixes or names).
    runs: Vec<String>,
    /// Export every run in the store.
    #[arg(long)]
    all: bool,
    /// Export a recorded sweep's runs, with one column per swept key (csv, parquet).
    #[arg(long, value_name = "NAME")]
    sweep: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    format: ExportFormat,
    /// Output file (standard output when left out; required for parquet), or the directory
    /// for tensorboard (one subdirectory per run).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

fn stdout_err(source: std::io::Error) -> Error {
    Error::Io {
        path: "<stdout>".into(),
        source,
    }
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let store = super::open_existing(store_path)?;
    if a.format == ExportFormat::Tensorboard {
        return tensorboard(&store, a);
    }
    if let Some(name) = &a.sweep {
        if !a.runs.is_empty() || a.all {
            return Err(Error::Invalid {
                what: "export --sweep".into(),
                message: "exports one sweep, alone".into(),
                hint: "drop the run ids and --all".into(),
            });
        }
        let n = match (&a.output, a.format) {
            (Some(path), _) => {
                let mut f = std::fs::File::create(path).map_err(Error::io(path.clone()))?;
                export::export_sweep(&store, name, a.format, &mut f)?
            }
            (None, ExportFormat::Csv) => {
                let mut out = std::io::BufWriter::new(std::io::stdout());
                let n = export::export_sweep_csv(&store, name, &mut out)?;
                out.flush().map_err(stdout_err)?;
                n
            }
            (None, _) => return Err(needs_output("parquet", "metrics.parquet")),
        };
        if let Some(path) = &a.output {
            eprintln!("wrote {n} rows of sweep {name} to {}", path.display());
        }
        return Ok(());
    }
    let ids = run_ids(&store, &a)?;
    let n = match (&a.output, a.format) {
        (Some(path), _) => export::export_to_path(&store, &ids, a.format, path)?,
        (None, ExportFormat::Csv) => {
            let mut out = std::io::BufWriter::new(std::io::stdout());
            // A closed pipe (`export … | head`) is the reader's choice, not a failure.
            match export::export(&store, &ids, a.format, &mut out) {
                Err(e) if e.is_broken_pipe() => return Ok(()),
                other => other?,
            };
            match out.flush() {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
                other => other.map_err(stdout_err)?,
            }
            0
        }
        (None, _) => return Err(needs_output("parquet", "metrics.parquet")),
    };
    if let Some(path) = &a.output {
        eprintln!(
            "wrote {n} rows from {} run(s) to {}",
            ids.len(),
            path.display()
        );
    }
    Ok(())
}

fn needs_output(format: &str, example: &str) -> Error {
    Error::Invalid {
        what: "export".into(),
        message: format!("{format} needs an output path"),
        hint: format!("add `-o {example}`"),
    }
}

fn run_ids(store: &cloudchamber::store::Store, a: &Args) -> Result<Vec<String>, Error> {
    if a.all {
        Ok(store.runs()?.into_iter().map(|r| r.id).collect())
    } else if a.runs.is_empty() {
        Err(Error::Invalid {
            what: "export".into(),
            message: "name at least one run, or --all, or --sweep NAME".into(),
            hint: "`cloudchamber ls` lists the runs".into(),
        })
    } else {
        Ok(a.runs
            .iter()
            .map(|q| store.resolve(q).map(|r| r.id))
            .collect::<Result<_, _>>()?)
    }
}

/// TensorBoard: a directory of run directories.
fn tensorboard(store: &cloudchamber::store::Store, a: Args) -> Result<(), Error> {
    let Some(dir) = &a.output else {
        return Err(needs_output("tensorboard", "tb"));
    };
    let ids = match &a.sweep {
        Some(name) => export::sweep_columns(store, name)?.0,
        None => run_ids(store, &a)?,
    };
    let (dirs, n) = export::tensorboard::write(store, &ids, dir)?;
    eprintln!(
        "wrote {n} scalars from {} run(s) under {}; view with `tensorboard --logdir {}`",
        dirs.len(),
        dir.display(),
        dir.display()
    );
    Ok(())
}
