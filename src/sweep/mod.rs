//! Sweeps: one experiment file with a `[sweep]` section expands into many runs.
//!
//! Everything outside `[sweep]` is the base experiment (or, with `sweep.base`, another file is).
//! Each point of the product of the axes and zip groups (times the seeds) is the base table with
//! the point's keys set, resolved and validated like a single run's file. A sweep run's id is
//! therefore the id of the single run with the same settings. Every point is checked before any
//! work; an invalid point is reported with its values.
//!
//! The syntax is in [`declare`]. Running the runs: [`exec`] on this machine; [`slurm`] on a
//! cluster, each run writing its own [`shard`] that `collect` imports.

pub mod declare;
pub mod exec;
pub mod shard;
pub mod slurm;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::spec::{self, Override, OverrideOrigin, Spec, SpecError};

pub use declare::{Decl, Factor};

/// A declared sweep, expanded into its runs.
#[derive(Clone, Debug)]
pub struct Sweep {
    pub name: String,
    /// The file that declares the sweep.
    pub path: PathBuf,
    /// The base experiment's folder: relative data paths resolve against it.
    pub base_dir: PathBuf,
    pub decl: Decl,
    pub runs: Vec<SweepRun>,
    /// The `--set` overrides applied to the base experiment (recorded beside each run).
    pub overrides: Vec<String>,
}

/// One point of the sweep.
#[derive(Clone, Debug)]
pub struct SweepRun {
    /// Position in the expansion (the first factor varies slowest, seeds fastest).
    pub index: usize,
    /// The swept keys and their values at this point (`seed` last when seeds are swept).
    pub values: Vec<(String, toml::Value)>,
    pub spec: Spec,
    pub id: String,
}

impl SweepRun {
    /// `optim.lr=1e-3 model.width=128 seed=2`
    pub fn label(&self) -> String {
        label(&self.values)
    }
}

fn label(values: &[(String, toml::Value)]) -> String {
    values
        .iter()
        .map(|(k, v)| format!("{k}={}", format_value(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A value the way one would type it after `--set KEY=`: 1e-3 rather than 0.001, bare words.
/// (Display only: the value itself is what the run uses.)
pub fn format_value(v: &toml::Value) -> String {
    match v {
        toml::Value::Float(x) => {
            let a = x.abs();
            if a != 0.0 && !(1e-2..1e5).contains(&a) {
                format!("{x:e}")
            } else {
                format!("{x}")
            }
        }
        toml::Value::String(s)
            if !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') =>
        {
            s.clone()
        }
        toml::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(format_value).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

/// Records the sweep's declaration (its file's text) and its runs with their swept values in
/// the store, so `status`, `summarize` and `export --sweep` know the sweep even while (or if) it
/// is interrupted. Returns the run ids the sweep of that name listed before (empty for a new
/// sweep): a caller says so when they differ, as the sweep is redefined.
pub fn record(store: &mut crate::store::Store, sw: &Sweep) -> Result<Vec<String>, crate::Error> {
    let before: Vec<String> = store
        .sweep_runs(&sw.name)
        .map(|runs| runs.into_iter().map(|(id, _)| id).collect())
        .unwrap_or_default();
    let text = std::fs::read_to_string(&sw.path).map_err(crate::Error::io(sw.path.clone()))?;
    let runs: Vec<(String, Vec<(String, String)>)> = sw
        .runs
        .iter()
        .map(|r| {
            (
                r.id.clone(),
                r.values
                    .iter()
                    .map(|(k, v)| (k.clone(), format_value(v)))
                    .collect(),
            )
        })
        .collect();
    store.record_sweep(&sw.name, &sw.path.display().to_string(), &text, &runs)?;
    Ok(before)
}

/// Reads the sweep file and expands it (with `--set` overrides applied to the base experiment).
pub fn load(path: &Path, overrides: &[String]) -> Result<Sweep, SpecError> {
    let text = std::fs::read_to_string(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    expand(&text, path, overrides)
}

/// [`load`] on text already read (`path` names it in errors and resolves `sweep.base`).
pub fn expand(text: &str, path: &Path, overrides: &[String]) -> Result<Sweep, SpecError> {
    let mut table = spec::parse_toml(text, path)?;
    let sweep = table.remove("sweep").ok_or_else(|| SpecError::Invalid {
        location: path.display().to_string(),
        key: "sweep".into(),
        message: "is missing: this file declares one run, not a sweep".into(),
        hint: format!(
            "run it with `cloudchamber run {}`, or add a [sweep] section (README.md, Sweeps)",
            path.display()
        ),
    })?;
    let decl = declare::declare(&sweep, text, path)?;
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();

    // With `base`, the experiment is another file: its errors name that file.
    let (base_table, base_text, base_path) = match &decl.base {
        None => (table, text.to_string(), path.to_path_buf()),
        Some(base) => {
            if let Some(key) = table.keys().next() {
                return Err(SpecError::Invalid {
                    location: declare::at(path, spec::find_key_line(text, key)),
                    key: key.clone(),
                    message: format!("is set beside `sweep.base = \"{base}\"`"),
                    hint: "a sweep file with a base holds only [sweep]; sweep the key, or change \
                           the base file"
                        .into(),
                });
            }
            let base_path = dir.join(base);
            let base_text =
                std::fs::read_to_string(&base_path).map_err(|source| SpecError::Read {
                    path: base_path.clone(),
                    source,
                })?;
            let base_table = spec::parse_toml(&base_text, &base_path)?;
            if base_table.contains_key("sweep") {
                return Err(SpecError::Invalid {
                    location: declare::at(path, spec::find_key_line(text, "sweep.base")),
                    key: "sweep.base".into(),
                    message: format!(
                        "names {}, which declares a sweep itself",
                        base_path.display()
                    ),
                    hint: "the base must be a single-run experiment file".into(),
                });
            }
            (base_table, base_text, base_path)
        }
    };
    let base_dir = base_path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();

    let swept: Vec<&str> = decl
        .factors
        .iter()
        .flat_map(|f| f.keys.iter().map(String::as_str))
        .chain(decl.seeds.as_ref().map(|_| "seed"))
        .collect();
    let mut set = Vec::new();
    for arg in overrides {
        let o = Override::from_arg(arg)?;
        let bad = |message: String| SpecError::BadOverride {
            arg: arg.clone(),
            message,
        };
        if o.key == "sweep" || o.key.starts_with("sweep.") {
            return Err(bad(
                "--set changes the base experiment; edit [sweep] in the file".into(),
            ));
        }
        if let Some(k) = swept.iter().find(|k| {
            **k == o.key
                || o.key.starts_with(&format!("{k}."))
                || k.starts_with(&format!("{}.", o.key))
        }) {
            return Err(bad(format!(
                "`{k}` is swept, so the sweep would overwrite it"
            )));
        }
        set.push(o);
    }

    let count = decl
        .factors
        .iter()
        .map(Factor::len)
        .chain(decl.seeds.as_ref().map(Vec::len))
        .try_fold(1usize, |acc, n| acc.checked_mul(n))
        .filter(|n| *n <= declare::MAX_RUNS);
    let count = count.ok_or_else(|| SpecError::Invalid {
        location: declare::at(path, spec::find_key_line(text, "sweep")),
        key: "sweep".into(),
        message: format!("expands to more than {} runs", declare::MAX_RUNS),
        hint: "fewer values per axis, or zip keys that move together".into(),
    })?;

    let name = decl.name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| crate::names::shown(&s.to_string_lossy()))
            .unwrap_or_else(|| "sweep".into())
    });
    // Each factor's sizes, seeds last: the index is a mixed-radix number, seeds fastest.
    let mut sizes: Vec<usize> = decl.factors.iter().map(Factor::len).collect();
    if let Some(s) = &decl.seeds {
        sizes.push(s.len());
    }
    let mut runs = Vec::with_capacity(count);
    let mut ids: HashMap<String, usize> = HashMap::new();
    for index in 0..count {
        let mut digits = vec![0; sizes.len()];
        let mut rest = index;
        for (d, n) in digits.iter_mut().zip(&sizes).rev() {
            *d = rest % n;
            rest /= n;
        }
        let mut values = Vec::new();
        let mut lines = Vec::new();
        for (f, &d) in decl.factors.iter().zip(&digits) {
            for (k, v) in f.keys.iter().zip(&f.points[d]) {
                values.push((k.clone(), v.clone()));
                lines.push(f.line);
            }
        }
        if let Some(seeds) = &decl.seeds {
            let seed = seeds[digits[sizes.len() - 1]];
            values.push(("seed".into(), toml::Value::Integer(seed as i64)));
            lines.push(decl.seeds_line);
        }
        let here = label(&values);
        let mut all = set.clone();
        all.extend(values.iter().zip(&lines).map(|((k, v), l)| Override {
            key: k.clone(),
            value: v.clone(),
            origin: OverrideOrigin::Other(declare::at(path, *l)),
        }));
        let spec = spec::parse_table(base_table.clone(), &base_text, &base_path, &all)
            .map_err(|e| in_run(e, index, &here))?;
        let id = spec.run_id();
        if let Some(first) = ids.insert(id.clone(), index) {
            return Err(SpecError::Invalid {
                location: declare::at(path, spec::find_key_line(text, "sweep")),
                key: "sweep".into(),
                message: format!(
                    "runs {first} ({}) and {index} ({here}) are the same run {id}",
                    runs.get(first).map(SweepRun::label).unwrap_or_default()
                ),
                hint: "two points resolve to one spec (e.g. a value that equals the default \
                       written two ways); drop one of the values"
                    .into(),
            });
        }
        runs.push(SweepRun {
            index,
            values,
            spec,
            id,
        });
    }
    Ok(Sweep {
        name,
        path: path.to_path_buf(),
        base_dir,
        decl,
        runs,
        overrides: overrides.to_vec(),
    })
}

/// Says which point of the sweep an error is about (its index and values).
fn in_run(mut e: SpecError, index: usize, values: &str) -> SpecError {
    let point = if values.is_empty() {
        format!(" (sweep run {index})")
    } else {
        format!(" (sweep run {index}: {values})")
    };
    match &mut e {
        SpecError::UnknownKey { location, .. }
        | SpecError::UnknownValue { location, .. }
        | SpecError::MissingKey { location, .. }
        | SpecError::WrongType { location, .. }
        | SpecError::Invalid { location, .. } => location.push_str(&point),
        _ => {}
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
seed = 3
[task.teacher_student]
input_dim = 8
n_train = 64
n_test = 32
[model]
width = 16
depth = 2
[train]
steps = 20
batch_size = 32
eval_every = 10
"#;

    fn sweep(decl: &str) -> Result<Sweep, SpecError> {
        expand(&format!("{BASE}{decl}"), Path::new("dir/s.toml"), &[])
    }

    #[test]
    fn product_of_axes_zips_and_seeds() {
        let sw = sweep(
            r#"
[sweep]
seeds = 2
[sweep.axes]
"optim.lr" = { logspace = [1e-4, 1e-1, 4] }
"model.activation" = ["tanh", "relu", "gelu"]
[[sweep.zip]]
"model.width" = [8, 16]
"train.steps" = [10, 40]
"#,
        )
        .unwrap();
        assert_eq!(sw.name, "s");
        assert_eq!(sw.base_dir, Path::new("dir"));
        assert_eq!(sw.runs.len(), 4 * 3 * 2 * 2);
        // Declaration order, seeds fastest.
        let r = &sw.runs[5];
        assert_eq!(
            r.label(),
            "optim.lr=1e-4 model.activation=relu model.width=8 train.steps=10 seed=1"
        );
        assert_eq!(r.spec.optim.lr, 1e-4);
        let spec::ModelSpec::Mlp(m) = &r.spec.model else {
            panic!("an MLP")
        };
        assert_eq!(m.width, 8);
        assert_eq!(r.spec.train.steps, 10);
        assert_eq!(r.spec.seed, 1);
        // Every id is the id of the single run with the same settings.
        for r in &sw.runs {
            let sets: Vec<String> = r.values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let single = spec::parse(BASE, Path::new("b.toml"), &sets).unwrap();
            assert_eq!(single.run_id(), r.id, "{}", r.label());
        }
    }

    #[test]
    fn no_axes_is_the_base_run_and_tables_are_values() {
        let sw = sweep("[sweep]\nname = \"one\"\n").unwrap();
        assert_eq!(sw.name, "one");
        assert_eq!(sw.runs.len(), 1);
        let base = spec::parse(BASE, Path::new("b.toml"), &[]).unwrap();
        assert_eq!(sw.runs[0].id, base.run_id());
        let sw =
            sweep("[sweep.axes]\n\"model.act.b\" = [0.5, { init = 0.5, mode = \"learned\" }]\n")
                .unwrap();
        assert_eq!(sw.runs.len(), 2);
        let spec::ModelSpec::Mlp(m) = &sw.runs[1].spec.model else {
            panic!("an MLP")
        };
        assert_eq!(m.act.b.mode, spec::Trainable::Learned);
    }

    #[test]
    fn expansion_errors() {
        let e = sweep("[sweep.axes]\n\"model.widht\" = [8, 16]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("dir/s.toml:15 (sweep run 0: model.widht=8): unknown key `model.widht` (did you mean `width`?)"),
            "{e}"
        );
        let e = sweep("[sweep.axes]\n\"model.width\" = [8, 0]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("sweep run 1: model.width=0") && e.contains("`model.width` must be"),
            "{e}"
        );
        let e = sweep("[sweep.axes]\n\"model.width\" = [16, 16]\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("runs 0 (model.width=16) and 1 (model.width=16) are the same run"),
            "{e}"
        );
        let e = expand(BASE, Path::new("b.toml"), &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("`sweep` is missing"), "{e}");
        let e = expand(
            &format!("{BASE}[sweep.axes]\n\"model.width\" = [8, 16]\n"),
            Path::new("s.toml"),
            &["model.width=4".into()],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("`model.width` is swept"), "{e}");
    }

    #[test]
    fn values_print_as_typed() {
        assert_eq!(format_value(&1e-3.into()), "1e-3");
        assert_eq!(format_value(&7.5e-4.into()), "7.5e-4");
        assert_eq!(format_value(&2.0.into()), "2");
        assert_eq!(format_value(&0.5.into()), "0.5");
        assert_eq!(format_value(&"relu".into()), "relu");
        assert_eq!(format_value(&"a b".into()), "\"a b\"");
    }
}
