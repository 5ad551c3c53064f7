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

#[derive(clap::Args, Debug)]
pub struct LsArgs {
    /// Only the runs of this sweep.
    #[arg(long)]
    sweep: Option<String>,
    /// Only runs with this status (completed, diverged, failed, interrupted, running,
    /// incomplete).
    #[arg(long)]
    status: Option<String>,
    /// Only runs with this name.
    #[arg(long)]
    name: Option<String>,
    /// Only the N most recently started runs.
    #[arg(short = 'n', value_name = "N")]
    last: Option<usize>,
}

pub fn ls(path: &Path, a: LsArgs) -> Result<(), Error> {
    let store = super::open_existing(path)?;
    let all = store.runs()?;
    // How each run differs from its experiment file: a sweep run's swept values, else the
    // overrides it was started with (recorded beside it), else — for runs recorded before
    // overrides were — the values that tell it apart from other runs of its name.
    let mut set: std::collections::HashMap<String, Vec<String>> = Default::default();
    for r in &all {
        let path = store
            .artifacts_dir(&r.id)
            .join(cloudchamber::runner::OVERRIDES_FILE);
        if let Ok(text) = std::fs::read_to_string(&path) {
            set.insert(
                r.id.clone(),
                text.lines()
                    .filter(|l| !l.is_empty())
                    .map(String::from)
                    .collect(),
            );
        }
    }
    for sweep in store.sweeps()? {
        for (id, values) in store.sweep_runs(&sweep)? {
            let entry = set.entry(id).or_default();
            for (k, v) in values {
                let kv = format!("{k}={v}");
                if !entry.contains(&kv) {
                    entry.push(kv);
                }
            }
        }
    }
    let mut differs = differing_values(&all);
    for (id, values) in set {
        differs.insert(id, cloudchamber::names::shown(&values.join(" ")));
    }
    let statuses = [
        "completed",
        "diverged",
        "failed",
        "interrupted",
        "running",
        "incomplete",
    ];
    if let Some(s) = &a.status {
        if !statuses.contains(&s.as_str()) {
            return Err(Error::Invalid {
                what: format!("--status {}", cloudchamber::names::shown(s)),
                message: "is not a run status".into(),
                hint: format!("one of: {}", statuses.join(", ")),
            });
        }
    }
    let in_sweep: Option<std::collections::HashSet<String>> = match &a.sweep {
        Some(name) => Some(
            store
                .sweep_runs(name)?
                .into_iter()
                .map(|(id, _)| id)
                .collect(),
        ),
        None => None,
    };
    let mut runs: Vec<&RunRecord> = all
        .iter()
        .filter(|r| in_sweep.as_ref().is_none_or(|ids| ids.contains(&r.id)))
        .filter(|r| a.status.as_deref().is_none_or(|s| r.display_status() == s))
        .filter(|r| a.name.as_deref().is_none_or(|n| r.name == n))
        .collect();
    if let Some(n) = a.last {
        runs.sort_by(|x, y| x.started_at.cmp(&y.started_at));
        let skip = runs.len().saturating_sub(n);
        runs.drain(..skip);
    }
    if runs.is_empty() {
        println!("no runs in {} match", path.display());
        return Ok(());
    }
    println!(
        "{:<16}  {:<24}  {:<11}  {:>7}  {:>9}  {:>11}  {:<20}  differs",
        "id", "name", "status", "steps", "wall s", "test_loss", "started"
    );
    for r in runs {
        let test = store
            .last_values(&r.id)?
            .into_iter()
            .find(|m| m.name == "test_loss" && m.layer.is_none())
            .map(|m| format!("{:.4e}", m.value))
            .unwrap_or_else(|| "-".into());
        let line = format!(
            "{:<16}  {:<24}  {:<11}  {:>7}  {:>9}  {:>11}  {:<20}  {}",
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
            differs.get(&r.id).map(String::as_str).unwrap_or(""),
        );
        println!("{}", line.trim_end());
    }
    Ok(())
}

/// For each run that shares its name with runs of other specs (one file run with different
/// `--set`, the runs of a sweep), the values of the keys in which the specs of that name
/// differ, as `key=value` (`optim.lr=0.01 seed=2`); nothing for a name with one spec.
fn differing_values(runs: &[RunRecord]) -> std::collections::HashMap<String, String> {
    let mut by_name: std::collections::BTreeMap<&str, Vec<(&str, Vec<(String, String)>)>> =
        Default::default();
    for r in runs {
        let spec: serde_json::Value = serde_json::from_str(&r.spec_json).unwrap_or_default();
        let mut leaves = Vec::new();
        flatten("", &spec, &mut leaves);
        by_name.entry(&r.name).or_default().push((&r.id, leaves));
    }
    let mut out = std::collections::HashMap::new();
    for group in by_name.values().filter(|g| g.len() > 1) {
        let keys: std::collections::BTreeSet<&String> = group
            .iter()
            .flat_map(|(_, l)| l.iter().map(|(k, _)| k))
            .collect();
        let value = |leaves: &[(String, String)], k: &str| {
            leaves
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_else(|| "-".into())
        };
        // Keys in spec order (the first run's), then any only others have.
        let mut differ: Vec<&String> = group[0]
            .1
            .iter()
            .map(|(k, _)| k)
            .chain(keys.iter().copied())
            .filter(|k| {
                let first = value(&group[0].1, k);
                group.iter().any(|(_, l)| value(l, k) != first)
            })
            .collect();
        let mut seen = std::collections::HashSet::new();
        differ.retain(|k| seen.insert(*k));
        for (id, leaves) in group {
            let text: Vec<String> = differ
                .iter()
                .map(|k| format!("{k}={}", value(leaves, k)))
                .collect();
            out.insert(id.to_string(), cloudchamber::names::shown(&text.join(" ")));
        }
    }
    out
}

/// The leaves of a JSON value as (dotted key, value) pairs, in order.
fn flatten(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        serde_json::Value::String(s) => out.push((prefix.to_string(), s.clone())),
        other => out.push((prefix.to_string(), other.to_string())),
    }
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
    // Whole names (never cut), the table split into blocks of columns that fit the terminal
    // (120 columns when the output is not one and $COLUMNS is unset), each block with its
    // layer column.
    let width = cloudchamber::os::terminal_width().unwrap_or(120).max(40);
    let cells: Vec<(&str, Vec<String>)> = names
        .iter()
        .map(|n| {
            let col = (0..=layers)
                .map(
                    |l| match last.iter().find(|m| m.layer == Some(l) && m.name == *n) {
                        Some(m) => format!("{:.4e}", m.value),
                        None => "-".into(),
                    },
                )
                .collect();
            (*n, col)
        })
        .collect();
    let col_width = |(n, col): &(&str, Vec<String>)| {
        col.iter()
            .map(String::len)
            .chain([n.chars().count()])
            .max()
            .unwrap_or(0)
    };
    let mut start = 0;
    while start < cells.len() {
        let mut used = 2 + 5;
        let mut end = start;
        while end < cells.len() && (end == start || used + 2 + col_width(&cells[end]) <= width) {
            used += 2 + col_width(&cells[end]);
            end += 1;
        }
        if start > 0 {
            println!();
        }
        let block = &cells[start..end];
        let mut line = format!("  {:<5}", "layer");
        for c in block {
            line += &format!("  {:>w$}", c.0, w = col_width(c));
        }
        println!("{line}");
        for l in 0..=layers {
            let mut line = format!("  {l:<5}");
            for c in block {
                line += &format!("  {:>w$}", c.1[l as usize], w = col_width(c));
            }
            println!("{line}");
        }
        start = end;
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
