//! Subcommands, one file each. Only this layer prints to the terminal.

mod bench;
mod cancel;
mod collect;
mod coordcheck;
mod export;
mod fit;
mod inspect;
mod plot;
mod quanta;
mod report;
mod run;
mod run_one;
mod slow;
mod status;
mod summarize;
mod sweep;
mod theory;
mod watch;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use cloudchamber::Error;

#[derive(Parser, Debug)]
#[command(
    name = "cloudchamber",
    version,
    about = "A laboratory for the physics of AI: train, observe, store."
)]
pub struct Cli {
    /// The store (an SQLite file); artifacts go to `runs/` beside it.
    #[arg(long, global = true, default_value = "cloudchamber.db")]
    store: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one experiment file.
    Run(run::Args),
    /// Expand a sweep (an experiment file with a [sweep] section); `--dry-run` lists its runs.
    Sweep(sweep::Args),
    /// Where a sweep stands: completed, diverged, failed, running, incomplete, pending.
    Status(status::Args),
    /// Statistics over seeds for each configuration of a sweep.
    Summarize(summarize::Args),
    /// List the runs in the store (filters: --sweep, --status, --name, -n).
    Ls(inspect::LsArgs),
    /// Show one run: its spec, status and final metrics.
    Show(inspect::ShowArgs),
    /// Export metrics as tidy rows (run_id, step, layer, name, value).
    Export(export::Args),
    /// Time the reference MLP step against the GEMM ceiling measured in the same process.
    Bench(bench::Args),
    /// Coordinate check: each layer's mean |activation| against width over the first steps,
    /// with its log–log slope beside the parametrization's predicted exponent.
    Coordcheck(coordcheck::Args),
    /// Mean-field theory: q*, c*, χ₁, depth scales, critical line, or a phase diagram.
    Theory(theory::Args),
    /// Self-normalizing shift and scale of an activation (and SELU's α, λ for `elu`).
    Calibrate(theory::CalibrateArgs),
    /// In-context regression: each baseline's error against the number of in-context examples
    /// (least squares, ridge, averaging, nearest neighbours, LASSO), with bootstrap intervals.
    Baselines(theory::BaselinesArgs),
    /// The quantization model of scaling beside a multitask-sparse-parity sweep: learned quanta
    /// per run, measured exponents, and the exponents predicted from the Zipf exponent.
    Quanta(quanta::Args),
    /// Fit a scaling law (power, chinchilla, learning_curve, broken_power) with bootstrap
    /// uncertainty, from a CSV file, a sweep or a run.
    Fit(fit::Args),
    /// Run K of a sweep into its own shard beside the store (what a cluster job runs).
    RunOne(run_one::Args),
    /// Import the finished shards of runs executed on a cluster into the store.
    Collect(collect::Args),
    /// Cancel a sweep's Slurm jobs (scancel), and only those.
    Cancel(cancel::Args),
    /// One figure (loss, heatmap, phase diagram, scaling…) to an SVG or PNG file.
    Plot(plot::Args),
    /// A self-contained HTML report (spec, summary, figures) of a run or a sweep.
    Report(report::Args),
    /// A live terminal view of a sweep: counts, latest losses, a sparkline per run.
    Watch(watch::Args),
}

pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Run(a) => run::run(&cli.store, a),
        Command::Sweep(a) => sweep::run(&cli.store, a),
        Command::Status(a) => status::run(&cli.store, a),
        Command::Summarize(a) => summarize::run(&cli.store, a),
        Command::Ls(a) => inspect::ls(&cli.store, a),
        Command::Show(a) => inspect::show(&cli.store, a),
        Command::Export(a) => export::run(&cli.store, a),
        Command::Bench(a) => bench::run(a),
        Command::Coordcheck(a) => coordcheck::run(a),
        Command::Theory(a) => theory::run(a),
        Command::Calibrate(a) => theory::calibrate(a),
        Command::Baselines(a) => theory::baselines(a),
        Command::Quanta(a) => quanta::run(&cli.store, a),
        Command::Fit(a) => fit::run(&cli.store, a),
        Command::RunOne(a) => run_one::run(&cli.store, a),
        Command::Collect(a) => collect::run(&cli.store, a),
        Command::Cancel(a) => cancel::run(&cli.store, a),
        Command::Plot(a) => plot::run(&cli.store, a),
        Command::Report(a) => report::run(&cli.store, a),
        Command::Watch(a) => watch::run(&cli.store, a),
    }
}

/// Opens the store of a command that only reads results, read-only (so a store on a read-only
/// folder or mount stays readable): a missing file is bad input (nothing to read), not a new
/// empty store.
fn open_existing(path: &std::path::Path) -> Result<cloudchamber::store::Store, Error> {
    must_exist(path)?;
    Ok(cloudchamber::store::Store::open_read_only(path)?)
}

/// Like [`open_existing`], for a command that also writes (collects shards, records a
/// cancellation).
fn open_existing_writable(path: &std::path::Path) -> Result<cloudchamber::store::Store, Error> {
    must_exist(path)?;
    Ok(cloudchamber::store::Store::open(path)?)
}

fn must_exist(path: &std::path::Path) -> Result<(), Error> {
    if !path.exists() {
        return Err(Error::Invalid {
            what: path.display().to_string(),
            message: "no store here".into(),
            hint: "run an experiment first (`cloudchamber run examples/quickstart.toml`) or pass --store PATH".into(),
        });
    }
    Ok(())
}

/// Refuses a metric name no run of the store recorded (`--metric act_sdt`), with the nearest
/// recorded one, instead of an empty table or figure.
fn known_metric(store: &cloudchamber::store::Store, flag: &str, metric: &str) -> Result<(), Error> {
    let names = store.metric_names()?;
    if names.is_empty() || names.iter().any(|n| n == metric) {
        return Ok(());
    }
    let nearest = cloudchamber::spec::nearest(metric, &names);
    Err(Error::Invalid {
        what: format!(
            "{flag} {}",
            cloudchamber::names::shown(&cloudchamber::spec::clip(metric))
        ),
        message: format!(
            "no run in {} recorded this metric{}",
            store.path().display(),
            nearest
                .map(|n| format!(" (did you mean `{n}`?)"))
                .unwrap_or_default()
        ),
        hint: format!("recorded metrics: {}", names.join(", ")),
    })
}

/// A count that must be at least 1 (`--workers`): 0 is refused, not quietly taken as 1.
fn positive(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{e} (a whole number ≥ 1)")),
    }
}
