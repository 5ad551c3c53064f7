//! `cloudchamber run FILE [--set key=value]…`

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use cloudchamber::runner::{self, Start};
use cloudchamber::spec;
use cloudchamber::store::Store;
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
    /// Check the spec and the data and print the run id and the memory estimate; train nothing.
    #[arg(long)]
    dry_run: bool,
    /// The run's name in `ls` and `show` (default: the file's name without .toml), e.g. to
    /// tell apart runs of one file with different `--set`.
    #[arg(long)]
    name: Option<String>,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    // Validate everything before any work: the spec, then (in `prepare`) the data.
    let loaded = spec::load(&a.file, &a.set)?;
    let spec = &loaded.spec;
    // A label: control characters in a file name are escaped before it is stored or shown.
    let name = match &a.name {
        Some(n) if n.trim().is_empty() => {
            return Err(Error::Invalid {
                what: "--name".into(),
                message: "is empty".into(),
                hint: "give the run a label, e.g. --name lr-sweep-1".into(),
            })
        }
        Some(n) => cloudchamber::names::shown(n),
        None => a
            .file
            .file_stem()
            .map(|s| cloudchamber::names::shown(&s.to_string_lossy()))
            .unwrap_or_default(),
    };
    if a.dry_run {
        let data = spec
            .task
            .generate(spec.seed, &loaded.base_dir)
            .map_err(|e| Error::from(e).located(&a.file))?;
        spec.check_data(&data)
            .map_err(|e| Error::from(e).located(&a.file))?;
        let m = cloudchamber::train::memory(spec, &data);
        let gib = cloudchamber::os::gib;
        println!("run {} ({name}): {}", spec.run_id(), data.description);
        println!(
            "model: {}",
            cloudchamber::train::describe_model(spec, &data)
        );
        println!(
            "memory: about {} (parameters and gradients {}, optimizer state {}, buffers and data {})",
            gib(m.total()),
            gib(m.params),
            gib(m.optimizer),
            gib(m.activations)
        );
        match cloudchamber::os::available_memory() {
            Some(free) => println!("available to this process: {}", gib(free)),
            None => println!("available to this process: unknown (not checked)"),
        }
        return Ok(());
    }
    let prepared = runner::prepare(store_path, spec, &loaded.base_dir, &name, a.force);
    let mut p = match prepared.map_err(|e| e.located(&a.file))? {
        Start::Done(prev) => {
            if !a.quiet {
                println!(
                    "run {} ({name}) is already in {} as {}; showing it (use --force to run again)",
                    prev.id,
                    store_path.display(),
                    prev.display_status()
                );
                super::inspect::print_summary(&Store::open(store_path)?, &prev)?;
            }
            return Ok(());
        }
        Start::Ready(p) => p,
    };
    runner::record_overrides(&p, &a.set)?;
    if !a.quiet {
        println!("run {} ({name}): {}", p.run.id, p.run.data.description);
        println!(
            "model: {}",
            cloudchamber::train::describe_model(spec, &p.run.data)
        );
        if let Some(step) = p.run.resumed_from {
            println!("resuming from the checkpoint at step {step}");
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
    let result = runner::execute(&mut p, spec, &mut progress);
    bar.finish_and_clear();
    let out = result?;
    if out.status == cloudchamber::store::RunStatus::Interrupted {
        return Err(Error::Interrupted {
            what: format!("run {}", p.run.id),
            hint: format!(
                "checkpointed before step {}; run the same command again to resume",
                out.steps
            ),
        });
    }
    if !a.quiet {
        let rec = p.store.resolve(&p.run.id)?;
        super::inspect::print_summary(&p.store, &rec)?;
        // The rate of this segment: the steps it took over the time it took.
        let steps = out.steps - p.run.resumed_from.unwrap_or(0);
        println!(
            "{:.0} steps/s, {} parameters; metrics in {}, artifacts in {}",
            steps as f64 / out.wall_seconds.max(1e-9),
            out.n_params,
            store_path.display(),
            p.run.artifacts.display()
        );
    }
    Ok(())
}
