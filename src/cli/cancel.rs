//! `cloudchamber cancel SWEEP`: cancels the sweep's Slurm jobs (`scancel`), and nothing else.

use std::path::Path;

use cloudchamber::sweep::slurm;
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The sweep whose jobs to cancel.
    sweep: String,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let store = super::open_existing_writable(store_path)?;
    store.sweep_runs(&a.sweep)?; // an unknown sweep is an error, not "nothing to cancel"
    let jobs = store.slurm_jobs(&a.sweep)?;
    let live = slurm::live_runs(&jobs)?;
    let mut ids: Vec<String> = live.iter().map(|(t, _)| t.job_id.clone()).collect();
    ids.sort();
    ids.dedup();
    if ids.is_empty() {
        println!(
            "sweep {}: nothing to cancel ({} job{} submitted, none queued or running)",
            a.sweep,
            jobs.len(),
            if jobs.len() == 1 { "" } else { "s" }
        );
        return Ok(());
    }
    slurm::cancel(&ids)?;
    let queued = live.iter().filter(|(t, _)| t.state == "PENDING").count();
    println!(
        "sweep {}: cancelled job{} {} ({} running, {queued} queued)",
        a.sweep,
        if ids.len() == 1 { "" } else { "s" },
        ids.join(", "),
        live.len() - queued
    );
    println!("  running runs checkpoint and stop; the same `sweep … --executor slurm` command resubmits what is unfinished");
    Ok(())
}
