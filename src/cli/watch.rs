//! `cloudchamber watch [SWEEP] [--interval S] [--once]`: a terminal view of a sweep that
//! refreshes while it runs: counts by status, and per running (or latest) run its step, latest
//! losses and a sparkline of its train loss. Ends by itself when nothing is left to run, and
//! cleanly on Ctrl-C.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use cloudchamber::store::{RunStatus, Store};
use cloudchamber::{interrupt, Error};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The sweep (the most recently recorded one when left out).
    sweep: Option<String>,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
    /// Print one view and exit (scripts, tests).
    #[arg(long)]
    once: bool,
    /// Runs listed at most (running ones first, then the latest to finish).
    #[arg(long, default_value_t = 12)]
    rows: usize,
}

/// Eight-level bars for a series: log-scaled when every value is positive (losses span
/// decades); `×` marks a non-finite value (divergence).
pub fn sparkline(values: &[f64], width: usize) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &values[values.len().saturating_sub(width)..];
    let log = tail.iter().filter(|v| v.is_finite()).all(|v| *v > 0.0);
    let f = |v: f64| if log { v.log10() } else { v };
    let finite: Vec<f64> = tail
        .iter()
        .filter(|v| v.is_finite())
        .map(|v| f(*v))
        .collect();
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    tail.iter()
        .map(|&v| {
            if !v.is_finite() {
                '×'
            } else if hi > lo {
                let t = (f(v) - lo) / (hi - lo);
                BARS[((t * 7.0).round() as usize).min(7)]
            } else {
                BARS[3]
            }
        })
        .collect()
}

fn last(series: &[(u64, f64)]) -> String {
    series
        .last()
        .map_or("—".into(), |(_, v)| format!("{v:.4e}"))
}

/// One frame of the view, and whether the sweep has nothing left to run.
fn frame(store: &Store, sweep: &str, rows: usize) -> Result<(String, bool), Error> {
    let runs = store.sweep_runs(sweep)?;
    let mut counts = [0usize; 6]; // completed, diverged, failed, running, incomplete, pending
    let mut listed = Vec::new();
    for (id, vals) in &runs {
        let label: String = vals
            .iter()
            .map(|(k, v)| format!("{}={v}", k.rsplit('.').next().unwrap_or(k)))
            .collect::<Vec<_>>()
            .join(" ");
        match store.run(id)? {
            None => counts[5] += 1,
            Some(r) => {
                let running = r.status == RunStatus::Running && !r.is_incomplete();
                let slot = match r.status {
                    RunStatus::Completed => 0,
                    RunStatus::Diverged => 1,
                    RunStatus::Failed => 2,
                    _ if running => 3,
                    _ => 4,
                };
                counts[slot] += 1;
                listed.push((running, r.ended_at.clone().unwrap_or_default(), r, label));
            }
        }
    }
    // Running runs first, then the most recently ended.
    listed.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    let mut out = format!(
        "sweep {sweep}: {} runs — {} completed, {} diverged, {} failed, {} running, {} incomplete, {} pending\n\n",
        runs.len(),
        counts[0],
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        counts[5]
    );
    out.push_str(&format!(
        "{:<10} {:<10} {:>11} {:>12} {:>12}  {:<32} {}\n",
        "run", "status", "step", "train_loss", "test_loss", "train_loss (last 32)", "config"
    ));
    for (_, _, r, label) in listed.iter().take(rows) {
        let train = store.series(&r.id, "train_loss", None)?;
        let test = store.series(&r.id, "test_loss", None)?;
        let total: Option<u64> = serde_json::from_str::<serde_json::Value>(&r.spec_json)
            .ok()
            .and_then(|v| v["train"]["steps"].as_u64());
        let step = train.last().map_or(0, |p| p.0);
        let values: Vec<f64> = train.iter().map(|p| p.1).collect();
        out.push_str(&format!(
            "{:<10} {:<10} {:>11} {:>12} {:>12}  {:<32} {}\n",
            &r.id[..r.id.len().min(8)],
            r.display_status(),
            match total {
                Some(t) => format!("{step}/{t}"),
                None => step.to_string(),
            },
            last(&train),
            last(&test),
            sparkline(&values, 32),
            label
        ));
    }
    if listed.len() > rows {
        out.push_str(&format!("… and {} more\n", listed.len() - rows));
    }
    let finished = counts[3] == 0 && counts[5] == 0 && counts[4] == 0 && !runs.is_empty();
    Ok((out, finished))
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let store = super::open_existing(store_path)?;
    let sweep = match a.sweep {
        Some(s) => s,
        None => store
            .sweeps()?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Invalid {
                what: store_path.display().to_string(),
                message: "no sweeps recorded here".into(),
                hint: "start one with `cloudchamber sweep FILE.toml`, or pass --store".into(),
            })?,
    };
    if !(a.interval > 0.0 && a.interval.is_finite()) {
        return Err(Error::Invalid {
            what: "--interval".into(),
            message: format!("{} is not a positive number of seconds", a.interval),
            hint: "e.g. --interval 2".into(),
        });
    }
    let tty = std::io::stdout().is_terminal() && !a.once;
    interrupt::install();
    let stdout_err = |source| Error::Io {
        path: "<stdout>".into(),
        source,
    };
    loop {
        let (text, finished) = frame(&store, &sweep, a.rows)?;
        let mut out = std::io::stdout().lock();
        if tty {
            // Home and clear, then the frame: a redraw without scrolling.
            write!(out, "\x1b[H\x1b[2J").map_err(stdout_err)?;
        }
        write!(out, "{text}").map_err(stdout_err)?;
        out.flush().map_err(stdout_err)?;
        drop(out);
        if a.once {
            return Ok(());
        }
        if finished {
            println!("\nsweep {sweep} has finished.");
            return Ok(());
        }
        // Sleep in short slices so that Ctrl-C ends the view at once.
        let until = Instant::now() + Duration::from_secs_f64(a.interval);
        while Instant::now() < until {
            if interrupt::requested() {
                println!("\nstopped watching (the sweep itself is not affected).");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sparkline;

    #[test]
    fn sparkline_is_log_scaled_and_marks_divergence() {
        // Decades 1, 0.1, 0.01, 0.001 are evenly spaced in log: lowest, ~1/3, ~2/3 and top bars.
        assert_eq!(sparkline(&[1.0, 0.1, 0.01, 0.001], 10), "█▆▃▁");
        assert_eq!(sparkline(&[1.0, f64::NAN], 10), "▄×");
        assert_eq!(sparkline(&[3.0, 2.0, 1.0], 2), "█▁");
    }
}
