//! The `[sweep]` section: its syntax, checked key by key, and the values of each axis.
//!
//! ```toml
//! [sweep]
//! name = "lr-by-init"          # default: the file stem
//! seeds = 5                    # seeds 0..5 replace the top-level `seed`; or seeds = [0, 7, 42]
//! # base = "quickstart.toml"   # optional: the base experiment lives in another file
//!
//! [sweep.axes]                 # each axis is one factor of the product
//! "optim.lr" = { logspace = [1e-4, 1e-1, 4] }   # 1e-4, 1e-3, 1e-2, 1e-1 (ends are values)
//! "model.init_scale" = [0.5, 1.0, 2.0]          # a list of any TOML values
//! "model.width" = { linspace = [64, 256, 4] }   # integer ends give integers: 64, 128, 192, 256
//!
//! [[sweep.zip]]                # keys that move together: one factor, equal-length lists
//! "model.depth" = [2, 4, 8]
//! "train.steps" = [1000, 2000, 4000]
//! ```
//!
//! Ranges are `[start, stop, n]` with both ends included. `logspace` (alias `geomspace`) spaces
//! the values evenly in log scale between the ends themselves — unlike numpy's `logspace`, the
//! ends are values, not exponents — so they must be positive. With two integer ends the values
//! are rounded to integers, and a range that would repeat an integer is an error. Float values
//! are rounded to 15 significant digits, so a computed 1e-3 is the very f64 that `--set
//! optim.lr=1e-3` gives, and the two runs share their id.

use std::collections::HashSet;
use std::path::Path;

use crate::spec::{find_key_line, nearest, SpecError};

/// The keys `[sweep]` accepts.
const SWEEP_KEYS: [&str; 5] = ["name", "base", "seeds", "axes", "zip"];
/// The forms an axis given as a table may take.
const RANGE_KINDS: [&str; 3] = ["linspace", "logspace", "geomspace"];
/// More runs than this is almost surely a mistake (and would take long just to list).
pub const MAX_RUNS: usize = 100_000;

/// The `[sweep]` section, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Decl {
    pub name: Option<String>,
    /// A separate base experiment file, relative to the sweep file's folder.
    pub base: Option<String>,
    /// Axes, then zip groups, in the order written; each one is a factor of the product.
    pub factors: Vec<Factor>,
    /// The seeds (innermost factor), when the sweep sets them.
    pub seeds: Option<Vec<u64>>,
    /// The line of `seeds` (for errors about a seed).
    pub seeds_line: Option<usize>,
}

/// One factor of the product: a single axis, or a zip group of keys that move together.
#[derive(Clone, Debug, PartialEq)]
pub struct Factor {
    /// The dotted spec keys this factor sets.
    pub keys: Vec<String>,
    /// `points[i][k]`: the value of `keys[k]` at the factor's i-th point.
    pub points: Vec<Vec<toml::Value>>,
    /// How it was written, for the dry run: "list", "logspace", "zip".
    pub form: String,
    /// Where it was written.
    pub line: Option<usize>,
}

impl Factor {
    pub fn len(&self) -> usize {
        self.points.len()
    }
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

/// The location text of a line of the file (or just the file).
pub(crate) fn at(path: &Path, line: Option<usize>) -> String {
    match line {
        Some(l) => format!("{}:{l}", path.display()),
        None => path.display().to_string(),
    }
}

fn invalid(path: &Path, line: Option<usize>, key: &str, message: String, hint: &str) -> SpecError {
    SpecError::Invalid {
        location: at(path, line),
        key: key.to_string(),
        message,
        hint: hint.to_string(),
    }
}

fn type_name(v: &toml::Value) -> &'static str {
    v.type_str()
}

/// The line of the `i`-th `[[sweep.zip]]` header (find_key_line does not follow `[[…]]`).
fn zip_line(text: &str, i: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            let l = l.split('#').next().unwrap_or("").trim();
            l.starts_with("[[") && l.trim_matches(|c| c == '[' || c == ']').trim() == "sweep.zip"
        })
        .nth(i)
        .map(|(n, _)| n + 1)
        .or_else(|| find_key_line(text, "sweep.zip"))
}

/// The first line after `start` that sets `key` (quoted or bare), for `[[…]]` tables.
fn key_line_after(text: &str, start: Option<usize>, key: &str) -> Option<usize> {
    let start = start.unwrap_or(0);
    text.lines()
        .enumerate()
        .skip(start)
        .find(|(_, l)| {
            l.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches('"') == key)
        })
        .map(|(n, _)| n + 1)
}

/// Checks the `[sweep]` value of the file at `path` (whose text is `text`, for lines).
pub fn declare(sweep: &toml::Value, text: &str, path: &Path) -> Result<Decl, SpecError> {
    let line = |key: &str| find_key_line(text, key);
    let table = match sweep {
        toml::Value::Table(t) => t,
        other => {
            return Err(SpecError::WrongType {
                location: at(path, line("sweep")),
                key: "sweep".into(),
                message: format!("expected a table [sweep], found {}", type_name(other)),
            })
        }
    };
    let valid: Vec<String> = SWEEP_KEYS.iter().map(|s| s.to_string()).collect();
    for key in table.keys() {
        if !SWEEP_KEYS.contains(&key.as_str()) {
            let full = format!("sweep.{key}");
            return Err(SpecError::UnknownKey {
                location: at(path, line(&full)),
                suggestion: nearest(key, &valid),
                key: full,
                valid,
            });
        }
    }
    let string = |key: &str| -> Result<Option<String>, SpecError> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(s)) if s.chars().any(char::is_control) => {
                Err(SpecError::Invalid {
                    location: at(path, line(&format!("sweep.{key}"))),
                    key: format!("sweep.{key}"),
                    message: format!("holds a control character: {}", crate::names::shown(s)),
                    hint: "names are labels printed on terminals: letters, digits, spaces and \
                           punctuation"
                        .into(),
                })
            }
            Some(toml::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
            Some(other) => Err(SpecError::WrongType {
                location: at(path, line(&format!("sweep.{key}"))),
                key: format!("sweep.{key}"),
                message: format!("expected a non-empty string, found {other}"),
            }),
        }
    };
    let name = string("name")?;
    let base = string("base")?;

    let mut factors = Vec::new();
    match table.get("axes") {
        None => {}
        Some(toml::Value::Table(axes)) => {
            for (key, spec) in axes {
                let full = format!("sweep.axes.{key}");
                let l = line(&full);
                check_key(key, path, l, &full)?;
                let (values, form) = axis_values(spec, path, l, &full)?;
                factors.push(Factor {
                    keys: vec![key.clone()],
                    points: values.into_iter().map(|v| vec![v]).collect(),
                    form,
                    line: l,
                });
            }
        }
        Some(other) => {
            return Err(SpecError::WrongType {
                location: at(path, line("sweep.axes")),
                key: "sweep.axes".into(),
                message: format!(
                    "expected a table of axes (\"optim.lr\" = [1e-3, 1e-2]), found {}",
                    type_name(other)
                ),
            })
        }
    }
    // The table's keys come sorted; the order written in the file is the one to expand in.
    factors.sort_by_key(|f| f.line.unwrap_or(usize::MAX));
    let zips: &[toml::Value] = match table.get("zip") {
        None => &[],
        Some(toml::Value::Array(a)) => a,
        Some(other) => {
            return Err(SpecError::WrongType {
                location: at(path, line("sweep.zip")),
                key: "sweep.zip".into(),
                message: format!(
                    "expected zip groups written as [[sweep.zip]] tables, found {}",
                    type_name(other)
                ),
            })
        }
    };
    for (i, group) in zips.iter().enumerate() {
        let l = zip_line(text, i);
        let label = format!("sweep.zip[{i}]");
        let group = match group {
            toml::Value::Table(t) if !t.is_empty() => t,
            _ => {
                return Err(invalid(
                    path,
                    l,
                    &label,
                    "must be a table of keys with equal-length lists".into(),
                    "[[sweep.zip]] then lines like \"model.width\" = [64, 128]",
                ))
            }
        };
        let mut keys = Vec::new();
        let mut columns = Vec::new();
        // In the order written (the table's own order is sorted), for the listing.
        let mut entries: Vec<(&String, &toml::Value)> = group.iter().collect();
        entries.sort_by_key(|(k, _)| key_line_after(text, l, k).unwrap_or(usize::MAX));
        for (key, spec) in entries {
            let full = format!("{label}.{key}");
            check_key(key, path, l, &full)?;
            let (values, _) = axis_values(spec, path, l, &full)?;
            keys.push(key.clone());
            columns.push(values);
        }
        let n = columns[0].len();
        if columns.iter().any(|c| c.len() != n) {
            let lengths: Vec<String> = keys
                .iter()
                .zip(&columns)
                .map(|(k, c)| format!("{k} has {}", c.len()))
                .collect();
            return Err(invalid(
                path,
                l,
                &label,
                format!("zips lists of different lengths ({})", lengths.join(", ")),
                "keys in one [[sweep.zip]] move together, so their lists need one length; \
                 put independent keys in [sweep.axes]",
            ));
        }
        let points = (0..n)
            .map(|i| columns.iter().map(|c| c[i].clone()).collect())
            .collect();
        factors.push(Factor {
            keys,
            points,
            form: "zip".into(),
            line: l,
        });
    }

    let seeds_line = line("sweep.seeds");
    let seeds = match table.get("seeds") {
        None => None,
        Some(v) => Some(seed_list(v, path, seeds_line)?),
    };

    // A key set by two factors (or by a factor and inside another's table) has no single value.
    let mut all: Vec<(&str, Option<usize>)> = Vec::new();
    for f in &factors {
        for k in &f.keys {
            all.push((k, f.line));
        }
    }
    if seeds.is_some() {
        all.push(("seed", seeds_line));
    }
    for (i, (a, _)) in all.iter().enumerate() {
        for (b, lb) in &all[i + 1..] {
            let overlaps =
                a == b || b.starts_with(&format!("{a}.")) || a.starts_with(&format!("{b}."));
            if overlaps {
                let hint = if *a == "seed" || *b == "seed" {
                    "sweep seeds with `seeds` only (it replaces the top-level seed)"
                } else {
                    "sweep each key in one place; keys that move together go in one [[sweep.zip]]"
                };
                return Err(invalid(
                    path,
                    *lb,
                    b,
                    format!("is swept twice (also as `{a}`)"),
                    hint,
                ));
            }
        }
    }
    Ok(Decl {
        name,
        base,
        factors,
        seeds,
        seeds_line,
    })
}

/// A swept key must be a dotted path into the spec (its names are checked when a run resolves).
fn check_key(key: &str, path: &Path, line: Option<usize>, full: &str) -> Result<(), SpecError> {
    if key.trim().is_empty() || key.split('.').any(|p| p.trim().is_empty() || p != p.trim()) {
        return Err(invalid(
            path,
            line,
            full,
            format!("`{key}` is not a dotted key"),
            "axis keys are dotted paths into the experiment, quoted: \"optim.lr\" = [1e-3, 1e-2]",
        ));
    }
    if key == "sweep" || key.starts_with("sweep.") {
        return Err(invalid(
            path,
            line,
            full,
            "cannot sweep the sweep itself".into(),
            "axes are keys of the experiment, like \"optim.lr\"",
        ));
    }
    Ok(())
}

/// `seeds = N` (0..N) or `seeds = [a, b, …]` (distinct, ≥ 0).
fn seed_list(v: &toml::Value, path: &Path, line: Option<usize>) -> Result<Vec<u64>, SpecError> {
    let bad = |message: String| {
        invalid(
            path,
            line,
            "sweep.seeds",
            message,
            "seeds = 5 runs seeds 0..5; seeds = [0, 7, 42] runs those",
        )
    };
    match v {
        toml::Value::Integer(n) if (1..=MAX_RUNS as i64).contains(n) => {
            Ok((0..*n as u64).collect())
        }
        toml::Value::Integer(n) => Err(bad(format!("must be between 1 and {MAX_RUNS} (got {n})"))),
        toml::Value::Array(a) if !a.is_empty() => {
            let mut seen = HashSet::new();
            let mut out = Vec::with_capacity(a.len());
            for s in a {
                match s {
                    toml::Value::Integer(n) if *n >= 0 => {
                        if !seen.insert(*n) {
                            return Err(bad(format!("lists seed {n} twice")));
                        }
                        out.push(*n as u64);
                    }
                    other => return Err(bad(format!("has {other}, not an integer ≥ 0"))),
                }
            }
            Ok(out)
        }
        other => Err(bad(format!(
            "must be a count or a non-empty list of seeds (got {other})"
        ))),
    }
}

/// The values of one axis and the form it was written in.
fn axis_values(
    v: &toml::Value,
    path: &Path,
    line: Option<usize>,
    key: &str,
) -> Result<(Vec<toml::Value>, String), SpecError> {
    let hint = "an axis is a list of values, or { linspace = [start, stop, n] }, \
                { logspace = [start, stop, n] } or { geomspace = [start, stop, n] }";
    match v {
        toml::Value::Array(a) if !a.is_empty() => Ok((a.clone(), "list".into())),
        toml::Value::Array(_) => Err(invalid(path, line, key, "is an empty list".into(), hint)),
        toml::Value::Table(t) => {
            let valid: Vec<String> = RANGE_KINDS.iter().map(|s| s.to_string()).collect();
            let mut kinds = t.keys();
            let kind = match (kinds.next(), kinds.next()) {
                (Some(k), None) => k,
                _ => {
                    return Err(invalid(
                        path,
                        line,
                        key,
                        "must name exactly one range (linspace, logspace or geomspace)".into(),
                        hint,
                    ))
                }
            };
            if !RANGE_KINDS.contains(&kind.as_str()) {
                return Err(SpecError::UnknownKey {
                    location: at(path, line),
                    suggestion: nearest(kind, &valid),
                    key: format!("{key}.{kind}"),
                    valid,
                });
            }
            let args = match &t[kind] {
                toml::Value::Array(a) if a.len() == 3 => a,
                other => {
                    return Err(invalid(
                        path,
                        line,
                        key,
                        format!("{kind} needs [start, stop, n] (got {other})"),
                        hint,
                    ))
                }
            };
            let values = range(kind, &args[0], &args[1], &args[2])
                .map_err(|(message, h)| invalid(path, line, key, message, &h))?;
            Ok((values, kind.clone()))
        }
        other => Err(invalid(
            path,
            line,
            key,
            format!("is a single value ({other}), not an axis"),
            "write a list (\"model.width\" = [64, 128]); a fixed value belongs in the experiment \
             itself or in --set",
        )),
    }
}

/// Rounds to 15 significant digits: a computed value lands on the f64 of its decimal literal.
fn snap(x: f64) -> f64 {
    format!("{x:.14e}").parse().unwrap_or(x)
}

/// `linspace`/`logspace`/`geomspace` over `[start, stop, n]`, ends included.
/// Errors are (message, hint).
pub fn range(
    kind: &str,
    start: &toml::Value,
    stop: &toml::Value,
    n: &toml::Value,
) -> Result<Vec<toml::Value>, (String, String)> {
    let num = |v: &toml::Value, what: &str| -> Result<f64, (String, String)> {
        match v {
            toml::Value::Integer(i) => Ok(*i as f64),
            toml::Value::Float(f) if f.is_finite() => Ok(*f),
            other => Err((
                format!("{kind}: {what} must be a finite number (got {other})"),
                format!("{kind} = [start, stop, n]"),
            )),
        }
    };
    let a = num(start, "start")?;
    let b = num(stop, "stop")?;
    let n = match n {
        toml::Value::Integer(n) if (2..=MAX_RUNS as i64).contains(n) => *n as usize,
        other => {
            return Err((
                format!("{kind}: n must be an integer between 2 and {MAX_RUNS} (got {other})"),
                "n counts the values, both ends included; for one value write a list".into(),
            ))
        }
    };
    let log = kind != "linspace";
    if log && !(a > 0.0 && b > 0.0) {
        return Err((
            format!("{kind}: the ends must be > 0 (got {a} and {b})"),
            "the ends are the values themselves, not exponents: logspace = [1e-4, 1e-1, 4] \
             gives 1e-4, 1e-3, 1e-2, 1e-1"
                .into(),
        ));
    }
    let last = (n - 1) as f64;
    let xs: Vec<f64> = (0..n)
        .map(|i| {
            // The ends are exact; interior points follow numpy's formulas.
            if i == 0 {
                a
            } else if i == n - 1 {
                b
            } else if log {
                let (la, lb) = (a.log10(), b.log10());
                snap(10f64.powf(la + (lb - la) * i as f64 / last))
            } else {
                snap(a + (b - a) * i as f64 / last)
            }
        })
        .collect();
    let ints = matches!(start, toml::Value::Integer(_)) && matches!(stop, toml::Value::Integer(_));
    if !ints {
        return Ok(xs.into_iter().map(toml::Value::Float).collect());
    }
    let rounded: Vec<i64> = xs.iter().map(|x| x.round() as i64).collect();
    if rounded.windows(2).any(|w| w[0] == w[1]) {
        let shown: Vec<String> = rounded.iter().map(i64::to_string).collect();
        return Err((
            format!(
                "{kind} over integers repeats a value ({})",
                shown.join(", ")
            ),
            "use fewer points, or float ends (e.g. 0.0) for float values".into(),
        ));
    }
    Ok(rounded.into_iter().map(toml::Value::Integer).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn floats(v: &[toml::Value]) -> Vec<f64> {
        v.iter()
            .map(|x| match x {
                toml::Value::Float(f) => *f,
                other => panic!("not a float: {other}"),
            })
            .collect()
    }

    fn r(kind: &str, a: toml::Value, b: toml::Value, n: i64) -> Vec<toml::Value> {
        range(kind, &a, &b, &toml::Value::Integer(n)).unwrap()
    }

    #[test]
    fn logspace_hits_the_decades() {
        let v = floats(&r("logspace", 1e-4.into(), 1e-1.into(), 4));
        let want = [1e-4, 1e-3, 1e-2, 1e-1];
        assert_eq!(v.len(), 4);
        for (x, w) in v.iter().zip(want) {
            assert!(((x - w) / w).abs() <= 1e-15, "{x} vs {w}");
        }
        // Snapped to the literal, so the id matches `--set optim.lr=1e-3`.
        assert_eq!(v, want);
        assert_eq!(floats(&r("geomspace", 1e-4.into(), 1e-1.into(), 4)), want);
    }

    #[test]
    fn linspace_floats_are_the_literals() {
        let v = floats(&r("linspace", 0.0.into(), 1.0.into(), 11));
        let want: Vec<f64> = (0..=10)
            .map(|i| format!("0.{i}").parse().unwrap())
            .collect();
        assert_eq!(&v[..10], &want[..10]);
        assert_eq!(v[10], 1.0);
        assert_eq!(v[3], 0.3); // not 0.30000000000000004
    }

    #[test]
    fn integer_ends_give_integers() {
        let v = r("linspace", 64.into(), 256.into(), 4);
        assert_eq!(v, vec![64.into(), 128.into(), 192.into(), 256.into()]);
        let v = r("logspace", 64.into(), 1024.into(), 5);
        assert_eq!(
            v,
            vec![64.into(), 128.into(), 256.into(), 512.into(), 1024.into()]
        );
        let e = range("linspace", &0.into(), &2.into(), &5.into()).unwrap_err();
        assert!(e.0.contains("repeats"), "{e:?}");
        // A float end keeps floats.
        let v = floats(&r("linspace", 0.into(), 2.0.into(), 5));
        assert_eq!(v, [0.0, 0.5, 1.0, 1.5, 2.0]);
    }

    #[test]
    fn bad_ranges_are_explained() {
        let e = range("logspace", &(-4).into(), &(-1).into(), &4.into()).unwrap_err();
        assert!(e.1.contains("not exponents"), "{e:?}");
        let e = range("linspace", &0.into(), &1.into(), &1.into()).unwrap_err();
        assert!(e.0.contains("n must be"), "{e:?}");
        let e = range("linspace", &"a".into(), &1.into(), &3.into()).unwrap_err();
        assert!(e.0.contains("start"), "{e:?}");
    }

    fn decl(text: &str) -> Result<Decl, SpecError> {
        let mut t: toml::Table = text.parse().unwrap();
        let s = t.remove("sweep").unwrap();
        declare(&s, text, Path::new("s.toml"))
    }

    #[test]
    fn axes_zips_and_seeds() {
        let d = decl(
            r#"
[sweep]
name = "x"
seeds = [0, 7, 42]
[sweep.axes]
"optim.lr" = { logspace = [1e-4, 1e-1, 4] }
"model.activation" = ["tanh", "relu"]
[[sweep.zip]]
"model.width" = [64, 128, 256]
"train.steps" = [10, 20, 30]
"#,
        )
        .unwrap();
        assert_eq!(d.name.as_deref(), Some("x"));
        assert_eq!(d.seeds, Some(vec![0, 7, 42]));
        assert_eq!(d.factors.len(), 3);
        let zip = &d.factors[2];
        assert_eq!(zip.keys, ["model.width", "train.steps"]);
        assert_eq!(zip.points[1], vec![128.into(), 20.into()]);
        assert_eq!(zip.line, Some(8));
        assert_eq!(
            decl("[sweep]\nseeds = 3\n").unwrap().seeds,
            Some(vec![0, 1, 2])
        );
    }

    fn err(text: &str) -> String {
        decl(text).unwrap_err().to_string()
    }

    #[test]
    fn declaration_errors_name_file_line_and_key() {
        let e = err("[sweep]\nseeds = 3\nnmae = \"x\"\n");
        assert!(
            e.starts_with("s.toml:3: unknown key `sweep.nmae` (did you mean `name`?)"),
            "{e}"
        );
        let e = err("[sweep.axes]\n\"optim.lr\" = { logspce = [1e-4, 1e-1, 4] }\n");
        assert!(
            e.starts_with("s.toml:2: unknown key `sweep.axes.optim.lr.logspce`"),
            "{e}"
        );
        assert!(e.contains("logspace"), "{e}");
        let e = err("[sweep.axes]\n\"optim.lr\" = 1e-3\n");
        assert!(e.contains("not an axis"), "{e}");
        let e = err("[sweep]\n[[sweep.zip]]\na = [1, 2]\nb = [1, 2, 3]\n");
        assert!(
            e.starts_with(
                "s.toml:2: `sweep.zip[0]` zips lists of different lengths (a has 2, b has 3)"
            ),
            "{e}"
        );
        let e = err("[sweep]\nseeds = 2\n[sweep.axes]\nseed = [1, 2]\n");
        assert!(e.contains("swept twice"), "{e}");
        let e = err("[sweep.axes]\n\"model.act\" = [{ b = 1.0 }]\n\"model.act.b\" = [1.0]\n");
        assert!(e.contains("swept twice"), "{e}");
        let e = err("[sweep]\nseeds = [1, 1]\n");
        assert!(e.contains("seed 1 twice"), "{e}");
        let e = err("[sweep.axes]\n\"model..width\" = [1]\n");
        assert!(e.contains("not a dotted key"), "{e}");
    }
}
