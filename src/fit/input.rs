//! Where the points of a fit come from: a CSV file, a sweep in the store, or one run's curve.
//!
//! Inputs may be simple derived quantities: a product or quotient of columns (or keys) and
//! numbers, e.g. `C/6/N` for D = C/(6N), or `train.steps*train.batch_size` for samples seen.

use std::path::Path;

use crate::store::{RunStatus, Store};
use crate::Error;

fn invalid(what: &str, message: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.into(),
        message: message.into(),
        hint: hint.into(),
    }
}

/// A product/quotient of named quantities and numbers: `a`, `a*b`, `C/6/N`.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    /// `(divide?, term)` in order; the first term is never divided.
    terms: Vec<(bool, Term)>,
}

#[derive(Clone, Debug, PartialEq)]
enum Term {
    Number(f64),
    Name(String),
}

impl Expr {
    /// Parses `text`; a text that is itself a known name (`is_name`) is one term, so that column
    /// names containing `*` or `/` still work.
    pub fn parse(text: &str, is_name: impl Fn(&str) -> bool) -> Result<Expr, Error> {
        let text = text.trim();
        if is_name(text) {
            return Ok(Expr {
                terms: vec![(false, Term::Name(text.to_string()))],
            });
        }
        let mut terms = Vec::new();
        let mut divide = false;
        let mut cur = String::new();
        let mut push = |divide: bool, cur: &mut String| -> Result<(), Error> {
            let t = cur.trim();
            if t.is_empty() {
                return Err(invalid(
                    text,
                    "an empty term",
                    "write names and numbers joined by * and /, e.g. C/6/N",
                ));
            }
            terms.push((
                divide,
                match t.parse::<f64>() {
                    Ok(v) => Term::Number(v),
                    Err(_) => Term::Name(t.to_string()),
                },
            ));
            cur.clear();
            Ok(())
        };
        for c in text.chars() {
            match c {
                '*' | '/' => {
                    push(divide, &mut cur)?;
                    divide = c == '/';
                }
                _ => cur.push(c),
            }
        }
        push(divide, &mut cur)?;
        Ok(Expr { terms })
    }

    /// The names it reads.
    pub fn names(&self) -> Vec<&str> {
        self.terms
            .iter()
            .filter_map(|(_, t)| match t {
                Term::Name(n) => Some(n.as_str()),
                Term::Number(_) => None,
            })
            .collect()
    }

    /// Evaluates with `value(name)`.
    pub fn eval(&self, mut value: impl FnMut(&str) -> Result<f64, Error>) -> Result<f64, Error> {
        let mut acc = 1.0;
        for (divide, t) in &self.terms {
            let v = match t {
                Term::Number(v) => *v,
                Term::Name(n) => value(n)?,
            };
            if *divide {
                acc /= v;
            } else {
                acc *= v;
            }
        }
        Ok(acc)
    }
}

fn split_csv_line(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut inq = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if inq && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => inq = !inq,
            ',' if !inq => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).collect()
}

/// Reads one value per row for each expression over the CSV's columns (see [`Expr`]). Rows where
/// a needed field is empty are skipped; returns the values and the number of skipped rows.
pub fn read_csv(path: &Path, exprs: &[&str]) -> Result<(Vec<Vec<f64>>, usize), Error> {
    let what = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        invalid(
            &what,
            format!("cannot read: {e}"),
            "give a readable CSV file",
        )
    })?;
    let mut lines = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty());
    let header = match lines.next() {
        Some((_, h)) => split_csv_line(h.trim_start_matches('\u{feff}')),
        None => {
            return Err(invalid(
                &what,
                "empty file",
                "the first line must name the columns",
            ))
        }
    };
    let parsed: Vec<Expr> = exprs
        .iter()
        .map(|e| Expr::parse(e, |n| header.iter().any(|h| h == n)))
        .collect::<Result<_, _>>()?;
    for e in &parsed {
        for name in e.names() {
            if !header.iter().any(|h| h == name) {
                return Err(invalid(
                    &what,
                    format!("no column `{name}`"),
                    format!("columns: {}", header.join(", ")),
                ));
            }
        }
    }
    let mut out = vec![Vec::new(); exprs.len()];
    let mut skipped = 0;
    'rows: for (ln, line) in lines {
        let fields = split_csv_line(line);
        let mut row = Vec::with_capacity(parsed.len());
        for e in &parsed {
            let mut empty = false;
            let v = e.eval(|name| {
                let i = header.iter().position(|h| h == name).unwrap_or(usize::MAX);
                let s = fields.get(i).map(|s| s.as_str()).unwrap_or("");
                if s.is_empty() {
                    empty = true;
                    return Ok(f64::NAN);
                }
                s.parse().map_err(|_| {
                    invalid(
                        &format!("{what}:{}", ln + 1),
                        format!("column `{name}`: `{s}` is not a number"),
                        "numbers like 1.5e9",
                    )
                })
            })?;
            if empty {
                skipped += 1;
                continue 'rows;
            }
            row.push(v);
        }
        for (col, v) in out.iter_mut().zip(row) {
            col.push(v);
        }
    }
    Ok((out, skipped))
}

/// Which value of a run's metric series is its result.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pick {
    /// The last recorded value.
    Final,
    /// The minimum for losses (names containing `loss`), else the maximum.
    Best,
    /// The value at step K.
    Step(u64),
}

impl Pick {
    pub fn parse(s: &str) -> Result<Pick, Error> {
        match s {
            "final" => Ok(Pick::Final),
            "best" => Ok(Pick::Best),
            _ => match s.strip_prefix("step=").and_then(|k| k.parse().ok()) {
                Some(k) => Ok(Pick::Step(k)),
                None => Err(invalid(
                    "--at",
                    format!("`{s}`: expected final, best or step=K"),
                    "e.g. --at step=500",
                )),
            },
        }
    }

    pub fn pick(self, metric: &str, series: &[(u64, f64)]) -> Option<f64> {
        let lower_is_better = metric.contains("loss");
        match self {
            Pick::Final => series.last().map(|s| s.1),
            Pick::Best => series
                .iter()
                .map(|s| s.1)
                .filter(|v| !v.is_nan())
                .reduce(|x, y| if (y < x) == lower_is_better { y } else { x }),
            Pick::Step(k) => series.iter().find(|s| s.0 == k).map(|s| s.1),
        }
    }
}

/// How the seeds of one configuration become points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Seeds {
    /// One point per configuration: the mean over its seeds.
    Mean,
    /// One point per run.
    All,
}

/// What to read from a sweep.
pub struct SweepQuery<'a> {
    pub sweep: &'a str,
    pub metric: &'a str,
    pub at: Pick,
    /// The x quantity (N, or the one input of a one-input form).
    pub x: &'a str,
    /// D, for chinchilla.
    pub d: Option<&'a str>,
    pub seeds: Seeds,
}

/// Points read from the store, and what was left out.
#[derive(Clone, Debug, Default)]
pub struct StorePoints {
    pub x: Vec<f64>,
    pub d: Vec<f64>,
    pub y: Vec<f64>,
    /// Runs whose value entered a point.
    pub runs_used: usize,
    /// Runs left out because they diverged.
    pub diverged: usize,
    /// Runs left out because they have not completed or lack the metric at `at`.
    pub missing: usize,
}

/// The value of a named quantity for one run: `model.params` (its parameter count, recorded at
/// step 0 as `n_params`), a swept key, or any numeric key of its resolved spec.
pub fn run_quantity(
    store: &Store,
    run_id: &str,
    swept: &[(String, String)],
    spec: &serde_json::Value,
    name: &str,
) -> Result<f64, Error> {
    if name == "model.params" {
        let s = store.series(run_id, "n_params", None)?;
        return s.first().map(|p| p.1).ok_or_else(|| {
            invalid(
                "model.params",
                format!(
                    "run {} has no recorded parameter count",
                    &run_id[..12.min(run_id.len())]
                ),
                "runs record `n_params` at step 0 since this version; rerun the sweep",
            )
        });
    }
    if let Some((_, v)) = swept.iter().find(|(k, _)| k == name) {
        return v.parse().map_err(|_| {
            invalid(
                name,
                format!("swept value `{v}` is not a number"),
                "fit needs numeric inputs",
            )
        });
    }
    let mut node = spec;
    for part in name.split('.') {
        node = match node.get(part) {
            Some(n) => n,
            None => {
                return Err(invalid(
                    name,
                    "not a swept key, a spec key or `model.params`",
                    "e.g. --x model.params, --x model.width, --d train.steps*train.batch_size",
                ))
            }
        };
    }
    node.as_f64().ok_or_else(|| {
        invalid(
            name,
            format!("spec value {node} is not a number"),
            "fit needs numeric inputs",
        )
    })
}

/// Points from a sweep's runs: one per configuration (seed means) or one per run.
pub fn sweep_points(store: &Store, q: &SweepQuery) -> Result<StorePoints, Error> {
    let runs = store.sweep_runs(q.sweep)?;
    let x_expr = Expr::parse(q.x, |_| false)?;
    let d_expr = q.d.map(|d| Expr::parse(d, |_| false)).transpose()?;
    let mut out = StorePoints::default();
    // Configuration label → (x, d, values), in first-seen order.
    let mut groups: Vec<(Vec<(String, String)>, f64, f64, Vec<f64>)> = Vec::new();
    for (id, swept) in &runs {
        let rec = match store.run(id)? {
            Some(r) => r,
            None => {
                out.missing += 1;
                continue;
            }
        };
        match rec.status {
            RunStatus::Completed => {}
            RunStatus::Diverged => {
                out.diverged += 1;
                continue;
            }
            _ => {
                out.missing += 1;
                continue;
            }
        }
        let series = store.series(id, q.metric, None)?;
        let Some(y) = q.at.pick(q.metric, &series) else {
            out.missing += 1;
            continue;
        };
        let spec: serde_json::Value = serde_json::from_str(&rec.spec_json).map_err(|e| {
            invalid(
                id,
                format!("stored spec is not JSON: {e}"),
                "the store may be damaged",
            )
        })?;
        let x = x_expr.eval(|n| run_quantity(store, id, swept, &spec, n))?;
        let d = match &d_expr {
            Some(e) => e.eval(|n| run_quantity(store, id, swept, &spec, n))?,
            None => 0.0,
        };
        out.runs_used += 1;
        let label: Vec<(String, String)> =
            swept.iter().filter(|(k, _)| k != "seed").cloned().collect();
        match groups
            .iter_mut()
            .find(|g| q.seeds == Seeds::Mean && g.0 == label)
        {
            Some(g) => g.3.push(y),
            None => groups.push((label, x, d, vec![y])),
        }
    }
    for (_, x, d, ys) in groups {
        out.x.push(x);
        out.d.push(d);
        out.y.push(ys.iter().sum::<f64>() / ys.len() as f64);
    }
    Ok(out)
}

/// A learning curve from one run: `(step, value)` of `metric` for steps ≥ `min_step` (step 0
/// has no logarithm).
pub fn run_curve(
    store: &Store,
    run_id: &str,
    metric: &str,
    min_step: u64,
) -> Result<(Vec<f64>, Vec<f64>), Error> {
    let series = store.series(run_id, metric, None)?;
    if series.is_empty() {
        return Err(invalid(
            metric,
            format!("run {run_id} has no metric `{metric}`"),
            "`cloudchamber show RUN` lists its metrics",
        ));
    }
    Ok(series
        .into_iter()
        .filter(|(s, _)| *s >= min_step.max(1))
        .map(|(s, v)| (s as f64, v))
        .unzip())
}
