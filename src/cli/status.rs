//! `cloudchamber status [SWEEP]`: where a sweep stands (or every recorded sweep). Runs executed
//! elsewhere are collected from their shards first; a sweep sent to Slurm also shows its
//! queued and running elements, and why each unfinished run is not running.

use std::path::Path;

use cloudchamber::store::{RunStatus, Store};
use cloudchamber::sweep::{shard, slurm};
use cloudchamber::Error;

pub use super::collect::Args;

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    // Shards from cluster jobs are collected into the store first, which writes it.
    let mut store = if shard::dir(store_path).exists() {
        super::open_existing_writable(store_path)?
    } else {
        super::open_existing(store_path)?
    };
    let names = a.sweeps(&store)?;
    if names.is_empty() {
        println!("no sweeps in {}", store_path.display());
    }
    for name in names {
        if shard::dir(store_path).exists() {
            let c = shard::collect_sweep(&mut store, &name)?;
            if !c.imported.is_empty() {
                println!(
                    "collected {} run{} from {}",
                    c.imported.len(),
                    if c.imported.len() == 1 { "" } else { "s" },
                    shard::dir(store_path).display()
                );
            }
            super::collect::print_partial(&c);
        }
        let runs = store.sweep_runs(&name)?;
        let (mut done, mut diverged, mut failed, mut running, mut incomplete, mut pending) =
            (0, 0, 0, 0, 0, 0);
        let mut interrupted = 0;
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
                        RunStatus::Running if r.is_incomplete() => incomplete += 1,
                        RunStatus::Interrupted => interrupted += 1,
                        RunStatus::Running => running += 1,
                    }
                }
            }
        }
        println!(
            "sweep {name}: {} runs — {done} completed, {diverged} diverged, {failed} failed, {running} running, {incomplete} incomplete, {pending} pending, {interrupted} interrupted; {wall:.1} s of training recorded",
            runs.len()
        );
        // Throughput over the span the finished runs took, and the time the rest would take at it.
        let (ended, span) = store.sweep_timing(&name)?;
        let left = pending + running + incomplete + interrupted;
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
        slurm_states(&store, store_path, &name, &runs)?;
    }
    Ok(())
}

/// For a sweep sent to Slurm: each queued or running element, and for each unfinished run that
/// Slurm no longer runs, how its last element ended (while Slurm remembers) and what its shard
/// says.
fn slurm_states(
    store: &Store,
    store_path: &Path,
    name: &str,
    runs: &[(String, Vec<(String, String)>)],
) -> Result<(), Error> {
    let jobs = store.slurm_jobs(name)?;
    if jobs.is_empty() {
        return Ok(());
    }
    let label = |id: &str| {
        runs.iter()
            .find(|(r, _)| r == id)
            .map(|(_, vals)| {
                vals.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    };
    let live = match slurm::live_runs(&jobs) {
        Ok(l) => l,
        Err(e) => {
            println!("  slurm: cannot ask Slurm ({e})");
            return Ok(());
        }
    };
    let queued = live.iter().filter(|(t, _)| t.state == "PENDING").count();
    let job_ids: Vec<&str> = jobs.iter().map(|j| j.job_id.as_str()).collect();
    println!(
        "  slurm: job{} {}; {} running, {queued} queued",
        if jobs.len() == 1 { "" } else { "s" },
        job_ids.join(", "),
        live.len() - queued
    );
    for (t, id) in &live {
        let why = if t.state == "PENDING" {
            format!(" ({})", t.detail)
        } else {
            String::new()
        };
        println!("    {}  {}{why}  {id}  {}", t.name(), t.state, label(id));
    }
    // Unfinished runs that Slurm does not run: the latest element that had each.
    let mut ended_cache: Vec<(String, Vec<slurm::Task>)> = Vec::new();
    for (id, _) in runs {
        let finished = store
            .run(id)?
            .is_some_and(|r| matches!(r.status, RunStatus::Completed | RunStatus::Diverged));
        if finished || live.iter().any(|(_, l)| l == id) {
            continue;
        }
        let Some((job, k)) = jobs.iter().rev().find_map(|j| {
            j.runs
                .iter()
                .find(|(_, r)| r == id)
                .map(|(k, _)| (j.job_id.clone(), *k))
        }) else {
            continue; // never submitted
        };
        if !ended_cache.iter().any(|(j, _)| *j == job) {
            ended_cache.push((job.clone(), slurm::ended(&job)));
        }
        let slurm_says = ended_cache
            .iter()
            .find(|(j, _)| *j == job)
            .and_then(|(_, ts)| ts.iter().find(|t| t.index == k))
            .map(|t| format!("{} ({})", t.state, t.detail))
            .unwrap_or_else(|| "left the queue".into());
        let shard_says = match shard::inspect(store_path, id)? {
            shard::State::Absent => "never started".to_string(),
            shard::State::Partial(why) => format!("shard incomplete: {why}"),
            shard::State::Done(m) => format!("{}", m.status),
            shard::State::Started(None) => "started, no done marker".to_string(),
            shard::State::Started(Some(p)) => match p.status {
                RunStatus::Running => format!(
                    "no done marker: its job ended while it ran (on {})",
                    p.host.as_deref().unwrap_or("?")
                ),
                RunStatus::Interrupted => format!(
                    "interrupted after {} steps, checkpointed",
                    p.steps.map_or("?".into(), |s| s.to_string())
                ),
                other => format!(
                    "{other}{}",
                    p.message.map(|m| format!(": {m}")).unwrap_or_default()
                ),
            },
        };
        println!(
            "    {job}_{k}  {slurm_says}  {id}  {}: {shard_says}",
            label(id)
        );
    }
    Ok(())
}
