//! `cloudchamber status [SWEEP]`: where a sweep stands (or every recorded sweep).

use std::path::Path;

use cloudchamber::store::RunStatus;
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A sweep name (every recorded sweep when left out).
    sweep: Option<String>,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let store = super::open_existing(store_path)?;
    let names = match a.sweep {
        Some(n) => vec![n],
        None => store.sweeps()?,
    };
    if names.is_empty() {
        println!("no sweeps in {}", store_path.display());
    }
    for name in names {
        let runs = store.sweep_runs(&name)?;
        let (mut done, mut diverged, mut failed, mut running, mut incomplete, mut pending) =
            (0, 0, 0, 0, 0, 0);
        let mut wall = 0.0;
        for (id, _) in &runs {
            match store.run(id)? {
                None => pending += 1,
                Some(r) => {
                    wall += r.wall_seconds.unwrap_or(0.0);
                    match r.status {
                        RunStatus::Completed => done += 1,
                        RunStatus::Diverged => diverged += 1,
                        RunStatus::Failed => failed += 1,
                        RunStatus::Running | RunStatus::Interrupted if r.is_incomplete() => {
                            incomplete += 1
                        }
                        RunStatus::Interrupted => incomplete += 1,
                        RunStatus::Running => running += 1,
                    }
                }
            }
        }
        println!(
            "sweep {name}: {} runs — {done} completed, {diverged} diverged, {failed} failed, {running} running, {incomplete} incomplete, {pending} pending; {wall:.1} s of training recorded",
            runs.len()
        );
        // Throughput over the span the finished runs took, and the time the rest would take at it.
        let (ended, span) = store.sweep_timing(&name)?;
        let left = pending + running + incomplete;
        if ended > 0 && span > 0.0 {
            let rate = ended as f64 / span;
            let eta = if left > 0 {
                format!(
                    "; about {:.0} s for the {left} left at that rate",
                    left as f64 / rate
                )
            } else {
                String::new()
            };
            println!(
                "  throughput {:.2} runs/s ({ended} runs in {span:.1} s){eta}",
                rate
            );
        }
    }
    Ok(())
}
