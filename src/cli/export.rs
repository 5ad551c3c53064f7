//! `cloudchamber export [RUN…|--all] --format csv|parquet [-o FILE]`

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
    /// Export a recorded sweep's runs as CSV with one column per swept key.
    #[arg(long, value_name = "NAME")]
    sweep: Option<String>,
    #[arg(long, value_enum, default_value = "csv")]
    format: ExportFormat,
    /// Output file (standard output when left out; required for parquet).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let store = super::open_existing(store_path)?;
    if let Some(name) = &a.sweep {
        if a.format != ExportFormat::Csv || !a.runs.is_empty() || a.all {
            return Err(Error::Invalid {
                what: "export --sweep".into(),
                message: "exports one sweep as CSV, alone".into(),
                hint: "drop run ids, --all and --format parquet".into(),
            });
        }
        let n = match &a.output {
            Some(path) => {
                let mut f = std::fs::File::create(path).map_err(|source| Error::Io {
                    path: path.clone(),
                    source,
                })?;
                export::export_sweep_csv(&store, name, &mut f)?
            }
            None => {
                let mut out = std::io::BufWriter::new(std::io::stdout());
                let n = export::export_sweep_csv(&store, name, &mut out)?;
                out.flush().map_err(|source| Error::Io {
                    path: "<stdout>".into(),
                    source,
                })?;
                n
            }
        };
        if let Some(path) = &a.output {
            eprintln!("wrote {n} rows of sweep {name} to {}", path.display());
        }
        return Ok(());
    }
    let ids: Vec<String> = if a.all {
        store.runs()?.into_iter().map(|r| r.id).collect()
    } else if a.runs.is_empty() {
        return Err(Error::Invalid {
            what: "export".into(),
            message: "name at least one run, or --all".into(),
            hint: "`cloudchamber ls` lists the runs".into(),
        });
    } else {
        a.runs
            .iter()
            .map(|q| store.resolve(q).map(|r| r.id))
            .collect::<Result<_, _>>()?
    };
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
                other => other.map_err(|source| Error::Io {
                    path: "<stdout>".into(),
                    source,
                })?,
            }
            0
        }
        (None, ExportFormat::Parquet) => {
            return Err(Error::Invalid {
                what: "export".into(),
                message: "parquet needs an output file".into(),
                hint: "add `-o metrics.parquet`".into(),
            });
        }
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
