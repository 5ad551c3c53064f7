//! `cloudchamber run FILE [--set key=value]…`

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cloudchamber::checkpoint;
use cloudchamber::spec;
use cloudchamber::store::{MetricRow, RunStatus, Store};
use cloudchamber::train::{self, MetricSink};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (TOML).
    file: PathBuf,
    /// Override a key of the file, e.g. `--set model.width=512` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Run again even if the store holds a finished run of this exact spec.
    #[arg(long)]
    force: bool,
    /// Print nothing but errors.
    #[arg(long, short)]
    quiet: bool,
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

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    // Validate everything before any work: the spec, then the data.
    let loaded = spec::load(&a.file, &a.set)?;
    let spec = &loaded.spec;
    let data = spec.task.generate(spec.seed, &loaded.base_dir)?;
    let id = spec.run_id();
    let name = a
        .file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();

    let mut store = Store::open(store_path)?;
    let prev = store.run(&id)?;
    if let Some(prev) = &prev {
        if !a.force && matches!(prev.status, RunStatus::Completed | RunStatus::Diverged) {
            if !a.quiet {
                println!("run {id} ({name}) is already in {} as {}; showing it (use --force to run again)", store_path.display(), prev.display_status());
                super::inspect::print_summary(&store, prev)?;
            }
            return Ok(());
        }
    }
    let artifacts = store.artifacts_dir(&id);
    std::fs::create_dir_all(&artifacts).map_err(|source| Error::Io {
        path: artifacts.clone(),
        source,
    })?;
    std::fs::write(artifacts.join("spec.toml"), spec.to_toml()).map_err(|source| Error::Io {
        path: artifacts.join("spec.toml"),
        source,
    })?;
    // An unfinished run of this spec with a checkpoint resumes from it; anything else starts
    // from step 0 (and a stale checkpoint goes).
    let ckpt_path = artifacts.join(checkpoint::FILE);
    let ckpt = if a.force || prev.is_none() {
        None
    } else {
        checkpoint::peek(&ckpt_path)?.filter(|s| s.run_id == id)
    };
    let version = env!("CARGO_PKG_VERSION");
    match &ckpt {
        Some(st) => store.resume_run(
            &id,
            &name,
            &spec.to_json(),
            &spec.to_toml(),
            version,
            st.step,
        )?,
        None => {
            if ckpt_path.exists() {
                std::fs::remove_file(&ckpt_path).map_err(|source| Error::Io {
                    path: ckpt_path.clone(),
                    source,
                })?;
            }
            store.begin_run(&id, &name, &spec.to_json(), &spec.to_toml(), version)?
        }
    }
    if !a.quiet {
        println!("run {id} ({name}): {}", data.description);
        if let Some(st) = &ckpt {
            println!("resuming from the checkpoint at step {}", st.step);
        }
    }

    // A bar only for runs longer than a second, and only on a terminal.
    let bar = ProgressBar::with_draw_target(Some(spec.train.steps), ProgressDrawTarget::hidden());
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  {per_sec}  eta {eta}  loss {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let show_bar = !a.quiet && std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut shown = false;
    let mut progress = |step: u64, loss: f64| {
        if show_bar && !shown && started.elapsed() > Duration::from_secs(1) {
            bar.set_draw_target(ProgressDrawTarget::stderr());
            shown = true;
        }
        if step.is_multiple_of(16) || shown {
            bar.set_position(step);
            bar.set_message(format!("{loss:.4e}"));
        }
    };

    let mut sink = StoreSink {
        store: &mut store,
        id: &id,
    };
    let result = train::train(
        spec,
        &data,
        &mut sink,
        Some(&artifacts),
        ckpt.is_some(),
        &mut progress,
    );
    bar.finish_and_clear();
    match result {
        Ok(out) => {
            store.finish_run(
                &id,
                out.status,
                out.steps,
                out.wall_seconds,
                out.diverged_step,
                out.message.as_deref(),
            )?;
            if !a.quiet {
                let rec = store.resolve(&id)?;
                super::inspect::print_summary(&store, &rec)?;
                println!(
                    "{:.0} steps/s, {} parameters; metrics in {}, artifacts in {}",
                    out.steps_per_second(),
                    out.n_params,
                    store_path.display(),
                    artifacts.display()
                );
            }
            Ok(())
        }
        Err(e) => {
            // Record the failure; the original error is the one to report.
            let _ = store.finish_run(
                &id,
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
