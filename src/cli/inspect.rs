//! `cloudchamber ls` and `cloudchamber show RUN`.

use std::path::Path;

use cloudchamber::store::{RunRecord, Store};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct ShowArgs {
    /// Run id (or a unique prefix of it, or the run's name).
    run: String,
    /// Also print the fully resolved spec.
    #[arg(long)]
    spec: bool,
}

pub fn ls(path: &Path) -> Result<(), Error> {
    let store = super::open_existing(path)?;
    let runs = store.runs()?;
    if runs.is_empty() {
        println!("no runs in {}", path.display());
        return Ok(());
    }
    println!(
        "{:<16}  {:<24}  {:<11}  {:>7}  {:>9}  {:>11}  {:<20}",
        "id", "name", "status", "steps", "wall s", "test_loss", "started"
    );
    for r in runs {
        let test = store
            .last_values(&r.id)?
            .into_iter()
            .find(|m| m.name == "test_loss" && m.layer.is_none())
            .map(|m| format!("{:.4e}", m.value))
            .unwrap_or_else(|| "-".into());
        println!(
            "{:<16}  {:<24}  {:<11}  {:>7}  {:>9}  {:>11}  {:<20}",
            r.id,
            truncate(&r.name, 24),
            r.display_status(),
            r.steps.map(|s| s.to_string()).unwrap_or_else(|| "-".into()),
            r.wall_seconds
                .map(|s| format!("{s:.2}"))
                .unwrap_or_else(|| "-".into()),
            test,
            r.started_at
                .as_deref()
                .unwrap_or("-")
                .get(..19)
                .unwrap_or("-"),
        );
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        s.chars().take(n - 1).chain(std::iter::once('…')).collect()
    }
}

pub fn show(path: &Path, a: ShowArgs) -> Result<(), Error> {
    let store = super::open_existing(path)?;
    let rec = store.resolve(&a.run)?;
    if a.spec {
        println!("# resolved spec of run {}\n{}", rec.id, rec.spec_toml);
    }
    print_summary(&store, &rec)?;
    print_layers(&store, &rec)
}

/// Final per-layer values of the observables that have them, one row per layer.
fn print_layers(store: &Store, rec: &RunRecord) -> Result<(), Error> {
    let last = store.last_values(&rec.id)?;
    let mut names: Vec<&str> = Vec::new();
    for m in last.iter().filter(|m| m.layer.is_some()) {
        if !names.contains(&m.name.as_str()) {
            names.push(&m.name);
        }
    }
    if names.is_empty() {
        return Ok(());
    }
    let layers = last.iter().filter_map(|m| m.layer).max().unwrap_or(0);
    println!("  per layer, at each observable's last logged step:");
    print!("  {:<5}", "layer");
    for n in &names {
        print!(" {:>14}", truncate(n, 14));
    }
    println!();
    for l in 0..=layers {
        print!("  {l:<5}");
        for n in &names {
            match last.iter().find(|m| m.layer == Some(l) && m.name == *n) {
                Some(m) => print!(" {:>14}", format!("{:.4e}", m.value)),
                None => print!(" {:>14}", "-"),
            }
        }
        println!();
    }
    Ok(())
}

/// The end-of-run table: status, then the final value of each global metric.
pub fn print_summary(store: &Store, rec: &RunRecord) -> Result<(), Error> {
    println!(
        "run {}  {}  {}  steps {}  wall {}",
        rec.id,
        rec.name,
        rec.display_status(),
        rec.steps
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        rec.wall_seconds
            .map(|s| format!("{s:.2} s"))
            .unwrap_or_else(|| "-".into())
    );
    if let Some(m) = &rec.message {
        println!("  note: {m}");
    }
    let last = store.last_values(&rec.id)?;
    let order = [
        "train_loss",
        "train_acc",
        "train_eval_loss",
        "train_eval_acc",
        "test_loss",
        "test_acc",
    ];
    println!("  {:<16} {:>14} {:>8}", "metric", "final", "step");
    for name in order {
        if let Some(m) = last.iter().find(|m| m.name == name && m.layer.is_none()) {
            println!(
                "  {:<16} {:>14} {:>8}",
                name,
                format!("{:.6e}", m.value),
                m.step
            );
        }
    }
    Ok(())
}
