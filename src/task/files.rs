//! Data files: CSV, NPY, safetensors and MNIST-format IDX. Parsed here, without extra
//! dependencies beyond `safetensors`; nothing is ever downloaded.
//!
//! Shared conventions:
//! - paths resolve against the experiment file's folder;
//! - inputs of shape `[n]` become `[n, 1]`, and `[n, d₁, d₂, …]` is flattened (C order) to
//!   `[n, d₁·d₂·…]`; regression targets likewise;
//! - classification labels are one value per row (`[n]` or `[n, 1]`) and must be integers in
//!   `0..n_classes`; `n_classes` is given, or inferred as `max label + 1` over train and test.
//!   CSV labels may also be names (`setosa`), numbered in sorted order over train and test;
//! - without a test file, a seeded shuffle (stream `"task/split"`) holds out `test_fraction` of
//!   the rows (default 25%, sklearn's `train_test_split` default); both sets keep file order;
//! - `n_train` / `n_test` keep a seeded random subset of rows (streams `"task/subset_train"`,
//!   `"task/subset_test"`), in file order. Subsets are nested: a smaller `n` keeps a subset of
//!   the rows a larger one keeps — what a data-scaling sweep needs;
//! - non-finite values (NaN, ±inf) in inputs or targets are errors, not silently trained on.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use super::{
    counts, invalid, key, label_column, matrix, open_fraction, read_bytes, resolve, Dataset,
    Target, TaskError,
};
use crate::engine::rng::Rng;

// ----- spec types -----------------------------------------------------------------------------

/// What a file's targets are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileTask {
    Regression,
    Classification,
}

/// A CSV column: a 0-based index (negative counts from the end, `-1` is the last column) or a
/// header name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Column {
    Index(i64),
    Name(String),
}

/// One column or a list of them: `target = "y"`, `target = -1`, `target = ["y1", "y2"]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Columns(pub Vec<Column>);

impl Serialize for Column {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Column::Index(i) => s.serialize_i64(*i),
            Column::Name(n) => s.serialize_str(n),
        }
    }
}

impl Serialize for Columns {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => one.serialize(s),
            many => many.serialize(s),
        }
    }
}

/// Accepts an integer, a string, or a list of them (a hand-written visitor rather than an
/// untagged enum, so a wrong value gets a precise message).
struct ColumnVisitor;

impl<'de> serde::de::Visitor<'de> for ColumnVisitor {
    type Value = Columns;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a column index (0-based; negative counts from the end), a column name, or a list of them")
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Columns, E> {
        Ok(Columns(vec![Column::Index(v)]))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Columns, E> {
        let i =
            i64::try_from(v).map_err(|_| E::custom(format!("column index {v} is too large")))?;
        Ok(Columns(vec![Column::Index(i)]))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Columns, E> {
        Ok(Columns(vec![Column::Name(v.to_string())]))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Columns, A::Error> {
        let mut out = Vec::new();
        while let Some(Columns(one)) = seq.next_element::<OneColumn>()?.map(|c| c.0) {
            out.extend(one);
        }
        Ok(Columns(out))
    }
}

/// A list element: a single index or name (no nested lists).
struct OneColumn(Columns);

impl<'de> Deserialize<'de> for OneColumn {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = OneColumn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a column index or a column name")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<OneColumn, E> {
                ColumnVisitor.visit_i64(v).map(OneColumn)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<OneColumn, E> {
                ColumnVisitor.visit_u64(v).map(OneColumn)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<OneColumn, E> {
                ColumnVisitor.visit_str(v).map(OneColumn)
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Deserialize<'de> for Columns {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ColumnVisitor)
    }
}

/// 25% held out when no test file is given: sklearn's `train_test_split` default.
pub const DEFAULT_TEST_FRACTION: f64 = 0.25;

/// `[task.csv]`: one row per example, numeric feature columns, target column(s).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvSpec {
    pub path: PathBuf,
    /// A separate test file with the same columns; otherwise `test_fraction` of `path` is held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_path: Option<PathBuf>,
    /// Fraction of rows held out for testing when there is no `test_path` (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    pub task: FileTask,
    /// The target column(s); classification takes exactly one.
    #[serde(default = "default_target")]
    pub target: Columns,
    /// The input columns; default: every column that is not a target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Columns>,
    /// Whether the first non-blank line names the columns.
    #[serde(default = "default_header")]
    pub header: bool,
    #[serde(default = "default_delimiter")]
    pub delimiter: char,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_test: Option<usize>,
}

/// The last column: the usual layout of tabular data sets (e.g. the UCI repository's).
fn default_target() -> Columns {
    Columns(vec![Column::Index(-1)])
}
/// A header line: pandas' `to_csv` and most exports write one.
fn default_header() -> bool {
    true
}
/// Comma: the C in CSV (use `"\t"` for TSV, `";"` for European exports).
fn default_delimiter() -> char {
    ','
}

/// `[task.npy]`: NumPy `.npy` arrays (format v1–v3, little-endian, C order).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NpySpec {
    pub train_x: PathBuf,
    pub train_y: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_x: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_y: Option<PathBuf>,
    /// Held-out fraction when there are no test arrays (default 0.25).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    pub task: FileTask,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_test: Option<usize>,
}

/// `[task.safetensors]`: named tensors in one `.safetensors` file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafetensorsSpec {
    pub path: PathBuf,
    #[serde(default = "default_train_x")]
    pub train_x: String,
    #[serde(default = "default_train_y")]
    pub train_y: String,
    #[serde(default = "default_test_x")]
    pub test_x: String,
    #[serde(default = "default_test_y")]
    pub test_y: String,
    /// When set, the train tensors are split and the test tensors are not read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_fraction: Option<f64>,
    pub task: FileTask,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_test: Option<usize>,
}

/// "train.x": the name the lab's own dataset export uses, so exported data reloads as is.
fn default_train_x() -> String {
    "train.x".into()
}
/// "train.y": as the lab exports it.
fn default_train_y() -> String {
    "train.y".into()
}
/// "test.x": as the lab exports it.
fn default_test_x() -> String {
    "test.x".into()
}
/// "test.y": as the lab exports it.
fn default_test_y() -> String {
    "test.y".into()
}

/// `[task.idx]`: MNIST-format IDX files (uncompressed, unsigned-byte data). Images are flattened
/// and pixels scaled to `[0, 1]` (divided by 255); labels are classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdxSpec {
    /// Folder holding the four files (relative to the experiment file).
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    #[serde(default = "default_train_images")]
    pub train_images: PathBuf,
    #[serde(default = "default_train_labels")]
    pub train_labels: PathBuf,
    #[serde(default = "default_test_images")]
    pub test_images: PathBuf,
    #[serde(default = "default_test_labels")]
    pub test_labels: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_classes: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_train: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_test: Option<usize>,
}

/// The experiment file's own folder.
fn default_dir() -> PathBuf {
    PathBuf::from(".")
}
/// The four defaults are the names MNIST and Fashion-MNIST ship with (after gunzip).
fn default_train_images() -> PathBuf {
    "train-images-idx3-ubyte".into()
}
/// MNIST's name.
fn default_train_labels() -> PathBuf {
    "train-labels-idx1-ubyte".into()
}
/// MNIST's name.
fn default_test_images() -> PathBuf {
    "t10k-images-idx3-ubyte".into()
}
/// MNIST's name.
fn default_test_labels() -> PathBuf {
    "t10k-labels-idx1-ubyte".into()
}

// ----- the shared pipeline: validate labels, split, subsample ----------------------------------

/// Options every file task shares.
struct Common<'a> {
    kind: &'static str,
    task: FileTask,
    n_classes: Option<usize>,
    test_fraction: Option<f64>,
    n_train: Option<usize>,
    n_test: Option<usize>,
    /// Names the data in the description, e.g. `data/iris.csv`.
    source: &'a str,
}

/// Targets as read: numbers, or (CSV classification only) raw strings decided on later.
enum Labels {
    Numbers(Array2<f64>),
    Raw(Vec<String>),
}

/// One file's worth (train or test) of inputs and targets.
struct Part {
    x: Array2<f64>,
    y: Labels,
    x_key: String,
    x_path: PathBuf,
    y_key: String,
    y_path: PathBuf,
    /// CSV line of each row, for messages; empty for binary formats (0-based row indices).
    lines: Vec<usize>,
}

impl Part {
    fn n(&self) -> usize {
        self.x.nrows()
    }
    fn at(&self, row: usize) -> String {
        match self.lines.get(row) {
            Some(line) => format!("line {line}"),
            None => format!("row {row} (0-based)"),
        }
    }
    fn y_rows(&self) -> usize {
        match &self.y {
            Labels::Numbers(a) => a.nrows(),
            Labels::Raw(v) => v.len(),
        }
    }
}

fn parse_err(key: &str, path: &Path, msg: impl Into<String>, hint: impl Into<String>) -> TaskError {
    TaskError::Parse {
        key: key.to_string(),
        path: path.to_path_buf(),
        msg: msg.into(),
        hint: hint.into(),
    }
}

fn shape_err(key: &str, msg: impl Into<String>, hint: impl Into<String>) -> TaskError {
    TaskError::Shape {
        key: key.to_string(),
        msg: msg.into(),
        hint: hint.into(),
    }
}

fn check_finite(a: &Array2<f64>, part: &Part, key: &str, path: &Path) -> Result<(), TaskError> {
    if let Some(i) = a.iter().position(|v| !v.is_finite()) {
        let (r, c) = (i / a.ncols().max(1), i % a.ncols().max(1));
        return Err(parse_err(
            key,
            path,
            format!(
                "{}, column {c}: {} is not a finite number",
                part.at(r),
                a[[r, c]]
            ),
            "impute or drop missing values before training (NaN and ±inf are not allowed)",
        ));
    }
    Ok(())
}

/// Classification labels as class indices, with the number of classes.
/// Per part, the class index of each row; the number of classes; the class names if labels were names.
type Classes = (Vec<Vec<usize>>, usize, Option<Vec<String>>);

fn classes(parts: &[&Part], given: Option<usize>) -> Result<Classes, TaskError> {
    let raw_all_numeric = parts.iter().all(|p| match &p.y {
        Labels::Raw(v) => v.iter().all(|s| s.parse::<f64>().is_ok()),
        Labels::Numbers(_) => true,
    });
    if !raw_all_numeric {
        // Named classes, numbered in sorted order over train and test so both agree.
        let mut names: Vec<String> = parts
            .iter()
            .flat_map(|p| match &p.y {
                Labels::Raw(v) => v.clone(),
                Labels::Numbers(_) => vec![],
            })
            .collect();
        names.sort();
        names.dedup();
        if let Some(n) = given {
            if names.len() > n {
                let p = parts[0];
                return Err(TaskError::Label {
                    key: p.y_key.clone(),
                    path: p.y_path.clone(),
                    msg: format!("{} distinct class names but n_classes = {n}", names.len()),
                    hint: format!("classes found: {}", preview(&names)),
                });
            }
        }
        let index = |s: &String| names.binary_search(s).unwrap_or(0);
        let out = parts
            .iter()
            .map(|p| match &p.y {
                Labels::Raw(v) => v.iter().map(index).collect(),
                Labels::Numbers(_) => vec![],
            })
            .collect();
        let n = given.unwrap_or(names.len());
        return Ok((out, n, Some(names)));
    }
    let mut out = Vec::with_capacity(parts.len());
    let mut max = 0usize;
    for p in parts {
        let values: Vec<f64> = match &p.y {
            Labels::Raw(v) => v
                .iter()
                .map(|s| s.parse::<f64>().unwrap_or(f64::NAN))
                .collect(),
            Labels::Numbers(a) => {
                if a.ncols() != 1 {
                    return Err(shape_err(
                        &p.y_key,
                        format!("class labels must be one value per row, shape [n] or [n, 1] (got [{}, {}])", a.nrows(), a.ncols()),
                        "for one-hot labels store the class index instead (y.argmax(1)); for several targets use task = \"regression\"",
                    ));
                }
                a.iter().copied().collect()
            }
        };
        let mut labels = Vec::with_capacity(values.len());
        for (row, &v) in values.iter().enumerate() {
            // 2⁵³: past it f64 no longer holds every integer.
            let integer =
                v.is_finite() && v >= 0.0 && v.fract() == 0.0 && v < 9.007_199_254_740_992e15;
            if !integer || given.is_some_and(|n| v >= n as f64) {
                let range = given.map_or("a non-negative integer".to_string(), |n| {
                    format!("a class index in 0..{n}")
                });
                return Err(TaskError::Label {
                    key: p.y_key.clone(),
                    path: p.y_path.clone(),
                    msg: format!("{}: label {v} is not {range}", p.at(row)),
                    hint: match given {
                        Some(_) => "labels must be integers 0..n_classes−1: fix the label or raise n_classes".into(),
                        None => "class labels must be non-negative integers; for real-valued targets set task = \"regression\"".into(),
                    },
                });
            }
            max = max.max(v as usize);
            labels.push(v as usize);
        }
        out.push(labels);
    }
    let n = given.unwrap_or(max + 1);
    if n < 2 {
        let p = parts[0];
        return Err(TaskError::Label {
            key: p.y_key.clone(),
            path: p.y_path.clone(),
            msg: "every label is 0: a single class".into(),
            hint: "set n_classes if the other classes are absent from this data, or check the target column".into(),
        });
    }
    Ok((out, n, None))
}

fn preview(names: &[String]) -> String {
    let shown: Vec<&str> = names.iter().take(12).map(String::as_str).collect();
    let more = if names.len() > 12 {
        format!(", … ({} in all)", names.len())
    } else {
        String::new()
    };
    format!("{}{more}", shown.join(", "))
}

/// Sorted first `m` entries of a seeded permutation of `0..n`: a random subset, nested in `m`.
fn subset(seed: u64, label: &str, n: usize, m: usize) -> Vec<usize> {
    let mut idx = Rng::stream(seed, label).permutation(n);
    idx.truncate(m);
    idx.sort_unstable();
    idx
}

/// Validates targets, splits off a test set if there is none, subsamples, and builds the Dataset.
fn assemble(c: &Common, seed: u64, train: Part, test: Option<Part>) -> Result<Dataset, TaskError> {
    for p in std::iter::once(&train).chain(test.as_ref()) {
        if p.y_rows() != p.n() {
            return Err(shape_err(
                &p.y_key,
                format!("{} target rows for {} input rows", p.y_rows(), p.n()),
                format!(
                    "inputs come from {} and targets from {}: they must have one row per example",
                    p.x_path.display(),
                    p.y_path.display()
                ),
            ));
        }
        check_finite(&p.x, p, &p.x_key, &p.x_path)?;
        if let Labels::Numbers(y) = &p.y {
            check_finite(y, p, &p.y_key, &p.y_path)?;
        }
    }
    if let Some(t) = &test {
        if t.x.ncols() != train.x.ncols() {
            return Err(shape_err(
                &t.x_key,
                format!(
                    "test inputs have {} features but train inputs have {}",
                    t.x.ncols(),
                    train.x.ncols()
                ),
                "train and test must have the same columns",
            ));
        }
    }

    // Targets as [n, out] arrays plus the Target.
    let parts: Vec<&Part> = std::iter::once(&train).chain(test.as_ref()).collect();
    let (mut ys, target, class_names) = match c.task {
        FileTask::Regression => {
            let mut ys = Vec::new();
            for p in &parts {
                match &p.y {
                    Labels::Numbers(a) => ys.push(a.clone()),
                    // CSV regression targets are parsed as numbers at read time.
                    Labels::Raw(_) => unreachable!("regression targets are numeric"),
                }
            }
            let out_dim = ys[0].ncols();
            if ys.len() == 2 && ys[1].ncols() != out_dim {
                return Err(shape_err(
                    &parts[1].y_key,
                    format!(
                        "test targets have {} columns but train targets have {out_dim}",
                        ys[1].ncols()
                    ),
                    "train and test must have the same target columns",
                ));
            }
            (ys, Target::Regression { out_dim }, None)
        }
        FileTask::Classification => {
            let (labels, n_classes, names) = classes(&parts, c.n_classes)?;
            (
                labels.iter().map(|l| label_column(l)).collect(),
                Target::Classes { n_classes },
                names,
            )
        }
    };
    let test_y = if ys.len() == 2 { ys.pop() } else { None };
    let train_y = ys.pop().unwrap_or_else(|| Array2::zeros((0, 1)));

    let (mut train_x, mut train_y, mut test_x, mut test_y) = match (test, test_y) {
        (Some(t), Some(ty)) => (train.x, train_y, t.x, ty),
        _ => {
            let n = train.n();
            let f = c.test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
            if n < 2 {
                return Err(shape_err(
                    &key(c.kind, "test_fraction"),
                    format!("cannot split {n} row into train and test"),
                    "give a separate test set, or more data",
                ));
            }
            let n_test = ((n as f64 * f).round() as usize).clamp(1, n - 1);
            let perm = Rng::stream(seed, "task/split").permutation(n);
            let (mut te, mut tr) = (perm[..n_test].to_vec(), perm[n_test..].to_vec());
            te.sort_unstable();
            tr.sort_unstable();
            (
                train.x.select(Axis(0), &tr),
                train_y.select(Axis(0), &tr),
                train.x.select(Axis(0), &te),
                train_y.select(Axis(0), &te),
            )
        }
    };

    for (field, want, x, y, label) in [
        (
            "n_train",
            c.n_train,
            &mut train_x,
            &mut train_y,
            "task/subset_train",
        ),
        (
            "n_test",
            c.n_test,
            &mut test_x,
            &mut test_y,
            "task/subset_test",
        ),
    ] {
        if let Some(m) = want {
            if m > x.nrows() {
                return Err(invalid(
                    key(c.kind, field),
                    format!(
                        "asks for {m} rows but the {} set has {}",
                        &field[2..],
                        x.nrows()
                    ),
                    "lower it, or leave it out to use every row",
                ));
            }
            let idx = subset(seed, label, x.nrows(), m);
            *x = x.select(Axis(0), &idx);
            *y = y.select(Axis(0), &idx);
        }
    }

    let what = match (target, &class_names) {
        (Target::Regression { out_dim }, _) => format!(
            "regression, {out_dim} target{}",
            if out_dim == 1 { "" } else { "s" }
        ),
        (Target::Classes { n_classes }, Some(names)) if names.len() <= 10 => format!(
            "{n_classes} classes ({})",
            names
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{s}={i}"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        (Target::Classes { n_classes }, _) => format!("{n_classes} classes"),
    };
    Ok(Dataset {
        description: format!(
            "{} {}: {what}, {} inputs: {}",
            c.kind,
            c.source,
            train_x.ncols(),
            counts(train_x.nrows(), test_x.nrows())
        ),
        train_x,
        train_y,
        test_x,
        test_y,
        target,
    })
}

/// Checks shared by every file spec.
fn validate_common(
    kind: &str,
    task: FileTask,
    n_classes: Option<usize>,
    test_fraction: Option<f64>,
    n_train: Option<usize>,
    n_test: Option<usize>,
) -> Result<(), TaskError> {
    if let Some(f) = test_fraction {
        open_fraction(
            key(kind, "test_fraction"),
            f,
            "the share of rows held out for testing, e.g. 0.25",
        )?;
    }
    match (task, n_classes) {
        (FileTask::Regression, Some(_)) => {
            return Err(invalid(
                key(kind, "n_classes"),
                "only applies to classification",
                "remove it, or set task = \"classification\"",
            ))
        }
        (FileTask::Classification, Some(n)) if n < 2 => {
            return Err(invalid(
                key(kind, "n_classes"),
                format!("must be ≥ 2 (got {n})"),
                "leave it out to infer it as max label + 1",
            ))
        }
        _ => {}
    }
    for (field, v) in [("n_train", n_train), ("n_test", n_test)] {
        if v == Some(0) {
            return Err(invalid(
                key(kind, field),
                "must be ≥ 1 (got 0)",
                "leave it out to use every row",
            ));
        }
    }
    Ok(())
}

// ----- CSV ------------------------------------------------------------------------------------

/// Splits one CSV record. Quoted fields (`"a, b"`, `""` for a quote) are understood; a quoted
/// field may not span lines. Fields are trimmed.
fn split_record(line: &str, delim: char) -> Result<Vec<Cow<'_, str>>, String> {
    if !line.contains('"') {
        return Ok(line.split(delim).map(|f| Cow::Borrowed(f.trim())).collect());
    }
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut in_quotes = false;
    while let Some(ch) = chars.next() {
        if in_quotes {
            if ch == '"' {
                if chars.peek() == Some(&'"') {
                    cur.push('"');
                    chars.next();
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(ch);
            }
        } else if ch == '"' && cur.trim().is_empty() {
            cur.clear();
            in_quotes = true;
        } else if ch == delim {
            fields.push(Cow::Owned(cur.trim().to_string()));
            cur.clear();
        } else {
            cur.push(ch);
        }
    }
    if in_quotes {
        return Err(
            "unterminated quoted field (quoted fields spanning lines are not supported)".into(),
        );
    }
    fields.push(Cow::Owned(cur.trim().to_string()));
    Ok(fields)
}

/// Column indices for a selection, resolved against the header (if any) and the column count.
fn resolve_columns(
    k: &str,
    sel: &Columns,
    names: Option<&[String]>,
    ncols: usize,
    path: &Path,
) -> Result<Vec<usize>, TaskError> {
    let mut out = Vec::with_capacity(sel.0.len());
    for col in &sel.0 {
        let i = match col {
            Column::Index(i) => {
                let j = if *i < 0 { ncols as i64 + i } else { *i };
                if j < 0 || j >= ncols as i64 {
                    return Err(invalid(
                        k,
                        format!("column {i} is out of range: {} has {ncols} columns", path.display()),
                        "indices are 0-based; negative ones count from the end (-1 is the last column)",
                    ));
                }
                j as usize
            }
            Column::Name(n) => {
                let Some(names) = names else {
                    return Err(invalid(
                        k,
                        format!("column '{n}' named, but header = false"),
                        "name columns by index, or set header = true",
                    ));
                };
                names.iter().position(|h| h == n).ok_or_else(|| {
                    invalid(
                        k,
                        format!("no column named '{n}' in {}", path.display()),
                        format!("the columns are: {}", preview(names)),
                    )
                })?
            }
        };
        if out.contains(&i) {
            return Err(invalid(
                k,
                format!("column {i} is selected twice"),
                "list each column once",
            ));
        }
        out.push(i);
    }
    Ok(out)
}

/// The header and column layout of the train file, which the test file must repeat.
struct CsvLayout {
    names: Option<Vec<String>>,
    ncols: usize,
    features: Vec<usize>,
    targets: Vec<usize>,
}

impl CsvSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        let k = |f: &str| key("csv", f);
        validate_common(
            "csv",
            self.task,
            self.n_classes,
            self.test_fraction,
            self.n_train,
            self.n_test,
        )?;
        if self.test_path.is_some() && self.test_fraction.is_some() {
            return Err(invalid(
                k("test_fraction"),
                "given together with test_path",
                "use either a separate test file or a held-out fraction",
            ));
        }
        if self.target.0.is_empty() {
            return Err(invalid(
                k("target"),
                "selects no column",
                "name the target column, e.g. target = \"label\" or target = -1",
            ));
        }
        if self.task == FileTask::Classification && self.target.0.len() != 1 {
            return Err(invalid(
                k("target"),
                format!(
                    "classification takes one label column (got {})",
                    self.target.0.len()
                ),
                "use task = \"regression\" for several targets",
            ));
        }
        if let Some(f) = &self.features {
            if f.0.is_empty() {
                return Err(invalid(
                    k("features"),
                    "selects no column",
                    "leave it out to use every non-target column",
                ));
            }
        }
        if !self.header {
            for (field, sel) in [
                ("target", Some(&self.target)),
                ("features", self.features.as_ref()),
            ] {
                if let Some(Column::Name(n)) =
                    sel.and_then(|s| s.0.iter().find(|c| matches!(c, Column::Name(_))))
                {
                    return Err(invalid(
                        k(field),
                        format!("column '{n}' named, but header = false"),
                        "name columns by index, or set header = true",
                    ));
                }
            }
        }
        if matches!(self.delimiter, '"' | '\n' | '\r') {
            return Err(invalid(
                k("delimiter"),
                format!("{:?} cannot separate fields", self.delimiter),
                "use \",\", \"\\t\" or \";\"",
            ));
        }
        Ok(())
    }

    fn split<'l>(
        &self,
        file_key: &str,
        path: &Path,
        line_no: usize,
        line: &'l str,
    ) -> Result<Vec<Cow<'l, str>>, TaskError> {
        split_record(line, self.delimiter).map_err(|m| {
            parse_err(
                file_key,
                path,
                format!("line {line_no}: {m}"),
                "fix the quoting on that line",
            )
        })
    }

    /// Reads one file. `layout` is the train file's, which a test file must match.
    fn read(
        &self,
        base_dir: &Path,
        file_key: &str,
        written: &Path,
        layout: Option<&CsvLayout>,
    ) -> Result<(Part, CsvLayout), TaskError> {
        let bytes = read_bytes(file_key, base_dir, written)?;
        let path = resolve(base_dir, written);
        let text = String::from_utf8(bytes).map_err(|e| {
            parse_err(
                file_key,
                &path,
                format!(
                    "not UTF-8 text (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
                "re-save the file as UTF-8",
            )
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text); // Excel's byte-order mark
        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim().is_empty());
        let split = |line_no: usize, line| self.split(file_key, &path, line_no, line);
        let no_rows = || {
            parse_err(
                file_key,
                &path,
                "no data rows",
                "the file is empty or holds only a header",
            )
        };

        // Header (or the first row's width) fixes the layout.
        let mut first_row = None;
        let (names, ncols) = if self.header {
            let (n, l) = lines.next().ok_or_else(no_rows)?;
            let names: Vec<String> = split(n, l)?.into_iter().map(Cow::into_owned).collect();
            let len = names.len();
            (Some(names), len)
        } else {
            let (n, l) = lines.next().ok_or_else(no_rows)?;
            let fields = split(n, l)?.len();
            first_row = Some((n, l));
            (None, fields)
        };
        let layout = match layout {
            Some(train) => {
                if train.names != names || train.ncols != ncols {
                    let (a, b) = match (&train.names, &names) {
                        (Some(a), Some(b)) => (preview(a), preview(b)),
                        _ => (
                            format!("{} columns", train.ncols),
                            format!("{ncols} columns"),
                        ),
                    };
                    return Err(shape_err(
                        file_key,
                        format!("the test file's columns ({b}) differ from the train file's ({a})"),
                        "train and test files must have the same columns in the same order",
                    ));
                }
                CsvLayout {
                    names,
                    ncols,
                    features: train.features.clone(),
                    targets: train.targets.clone(),
                }
            }
            None => {
                let targets = resolve_columns(
                    &key("csv", "target"),
                    &self.target,
                    names.as_deref(),
                    ncols,
                    &path,
                )?;
                let features = match &self.features {
                    Some(sel) => {
                        let f = resolve_columns(
                            &key("csv", "features"),
                            sel,
                            names.as_deref(),
                            ncols,
                            &path,
                        )?;
                        if let Some(j) = f.iter().find(|j| targets.contains(j)) {
                            return Err(invalid(
                                key("csv", "features"),
                                format!("column {j} is also a target"),
                                "a column cannot be both input and target",
                            ));
                        }
                        f
                    }
                    None => (0..ncols).filter(|j| !targets.contains(j)).collect(),
                };
                if features.is_empty() {
                    return Err(invalid(
                        key("csv", "features"),
                        format!(
                            "no input columns left: {} has {ncols} column(s), all targets",
                            path.display()
                        ),
                        "check the delimiter and the target selection",
                    ));
                }
                CsvLayout {
                    names,
                    ncols,
                    features,
                    targets,
                }
            }
        };

        let col_name = |j: usize| match &layout.names {
            Some(n) => format!("column '{}'", n[j]),
            None => format!("column {j}"),
        };
        let number = |line_no: usize, j: usize, s: &str| -> Result<f64, TaskError> {
            match s.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(v),
                _ => Err(parse_err(
                    file_key,
                    &path,
                    format!(
                        "line {line_no}, {}: cannot read '{s}' as a finite number",
                        col_name(j)
                    ),
                    if s.is_empty() {
                        "missing values are not supported: impute or drop those rows"
                    } else {
                        "input and regression-target columns must be numeric"
                    },
                )),
            }
        };
        let (mut x, mut y_num, mut y_raw, mut line_nos) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (line_no, line) in first_row.into_iter().chain(lines) {
            let fields = split(line_no, line)?;
            if fields.len() != ncols {
                return Err(parse_err(
                    file_key,
                    &path,
                    format!("line {line_no} has {} fields, expected {ncols}", fields.len()),
                    format!("every row needs as many fields as the {}; check for a stray delimiter ({:?}) or an unquoted one inside a field", if self.header { "header" } else { "first row" }, self.delimiter),
                ));
            }
            for &j in &layout.features {
                x.push(number(line_no, j, &fields[j])?);
            }
            for &j in &layout.targets {
                match self.task {
                    FileTask::Regression => y_num.push(number(line_no, j, &fields[j])?),
                    FileTask::Classification => y_raw.push(fields[j].to_string()),
                }
            }
            line_nos.push(line_no);
        }
        let n = line_nos.len();
        if n == 0 {
            return Err(no_rows());
        }
        let y = match self.task {
            FileTask::Regression => Labels::Numbers(matrix(n, layout.targets.len(), y_num)),
            FileTask::Classification => Labels::Raw(y_raw),
        };
        let part = Part {
            x: matrix(n, layout.features.len(), x),
            y,
            x_key: file_key.to_string(),
            x_path: path.clone(),
            y_key: key("csv", "target"),
            y_path: path,
            lines: line_nos,
        };
        Ok((part, layout))
    }

    pub(crate) fn load(&self, seed: u64, base_dir: &Path) -> Result<Dataset, TaskError> {
        let (train, layout) = self.read(base_dir, &key("csv", "path"), &self.path, None)?;
        let test = match &self.test_path {
            Some(p) => Some(
                self.read(base_dir, &key("csv", "test_path"), p, Some(&layout))?
                    .0,
            ),
            None => None,
        };
        let source = self.path.display().to_string();
        let common = Common {
            kind: "csv",
            task: self.task,
            n_classes: self.n_classes,
            test_fraction: self.test_fraction,
            n_train: self.n_train,
            n_test: self.n_test,
            source: &source,
        };
        assemble(&common, seed, train, test)
    }
}

// ----- binary arrays: element types shared by NPY and safetensors ------------------------------

/// A little-endian element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Elem {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    BF16,
    F32,
    F64,
}

impl Elem {
    fn size(self) -> usize {
        match self {
            Elem::Bool | Elem::U8 | Elem::I8 => 1,
            Elem::U16 | Elem::I16 | Elem::F16 | Elem::BF16 => 2,
            Elem::U32 | Elem::I32 | Elem::F32 => 4,
            Elem::U64 | Elem::I64 | Elem::F64 => 8,
        }
    }

    /// Little-endian bytes to f64 (64-bit integers above 2⁵³ round to the nearest f64).
    fn decode(self, bytes: &[u8]) -> Vec<f64> {
        fn le<const N: usize>(c: &[u8]) -> [u8; N] {
            let mut a = [0u8; N];
            a.copy_from_slice(c);
            a
        }
        let chunks = bytes.chunks_exact(self.size());
        match self {
            Elem::Bool => chunks.map(|c| if c[0] != 0 { 1.0 } else { 0.0 }).collect(),
            Elem::U8 => chunks.map(|c| c[0] as f64).collect(),
            Elem::I8 => chunks.map(|c| c[0] as i8 as f64).collect(),
            Elem::U16 => chunks.map(|c| u16::from_le_bytes(le(c)) as f64).collect(),
            Elem::I16 => chunks.map(|c| i16::from_le_bytes(le(c)) as f64).collect(),
            Elem::U32 => chunks.map(|c| u32::from_le_bytes(le(c)) as f64).collect(),
            Elem::I32 => chunks.map(|c| i32::from_le_bytes(le(c)) as f64).collect(),
            Elem::U64 => chunks.map(|c| u64::from_le_bytes(le(c)) as f64).collect(),
            Elem::I64 => chunks.map(|c| i64::from_le_bytes(le(c)) as f64).collect(),
            Elem::F16 => chunks
                .map(|c| f16_to_f64(u16::from_le_bytes(le(c))))
                .collect(),
            Elem::BF16 => chunks
                .map(|c| f32::from_bits((u16::from_le_bytes(le(c)) as u32) << 16) as f64)
                .collect(),
            Elem::F32 => chunks.map(|c| f32::from_le_bytes(le(c)) as f64).collect(),
            Elem::F64 => chunks.map(|c| f64::from_le_bytes(le(c))).collect(),
        }
    }
}

/// IEEE 754 binary16 to f64.
fn f16_to_f64(h: u16) -> f64 {
    let sign = if h & 0x8000 != 0 { -1.0 } else { 1.0 };
    let exp = ((h >> 10) & 0x1f) as i32;
    let frac = (h & 0x3ff) as f64;
    match exp {
        0 => sign * frac * 2f64.powi(-24), // subnormal
        31 if frac == 0.0 => sign * f64::INFINITY,
        31 => f64::NAN,
        e => sign * (1.0 + frac / 1024.0) * 2f64.powi(e - 15),
    }
}

/// An n-d array read from a file.
struct NdArray {
    shape: Vec<usize>,
    data: Vec<f64>,
}

/// `[n, …]` to `[n, d]` (trailing dimensions flattened in C order; `[n]` becomes `[n, 1]`).
fn to_matrix(a: NdArray, key: &str, path: &Path) -> Result<Array2<f64>, TaskError> {
    let Some((&n, rest)) = a.shape.split_first() else {
        return Err(parse_err(
            key,
            path,
            "holds a 0-d array (a scalar)",
            "store one row per example: shape [n] or [n, features]",
        ));
    };
    let d: usize = rest.iter().product();
    if n == 0 || d == 0 {
        return Err(parse_err(
            key,
            path,
            format!("holds an empty array of shape {:?}", a.shape),
            "the array needs at least one row and one column",
        ));
    }
    Ok(matrix(n, d, a.data))
}

/// The element count of a shape, or `None` on overflow (a corrupt header).
fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

// ----- NPY ------------------------------------------------------------------------------------

/// A tiny reader for the NPY header, a Python dict literal such as
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`.
struct PyLit<'a> {
    s: &'a [u8],
    i: usize,
}

enum PyValue {
    Str(String),
    Bool(bool),
    Tuple(Vec<usize>),
    Other,
}

impl<'a> PyLit<'a> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.s.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn string(&mut self) -> Option<String> {
        self.ws();
        let q = *self.s.get(self.i)?;
        if q != b'\'' && q != b'"' {
            return None;
        }
        let start = self.i + 1;
        let end = start + self.s[start..].iter().position(|&c| c == q)?;
        self.i = end + 1;
        Some(String::from_utf8_lossy(&self.s[start..end]).into_owned())
    }
    fn value(&mut self) -> Option<PyValue> {
        self.ws();
        match *self.s.get(self.i)? {
            b'\'' | b'"' => self.string().map(PyValue::Str),
            b'(' => {
                self.i += 1;
                let mut dims = Vec::new();
                loop {
                    if self.eat(b')') {
                        return Some(PyValue::Tuple(dims));
                    }
                    self.ws();
                    let start = self.i;
                    while self.i < self.s.len() && self.s[self.i].is_ascii_digit() {
                        self.i += 1;
                    }
                    dims.push(
                        std::str::from_utf8(&self.s[start..self.i])
                            .ok()?
                            .parse()
                            .ok()?,
                    );
                    self.eat(b'L'); // Python 2 longs: (3L, 4L)
                    if !self.eat(b',') && !self.eat(b')') {
                        return None;
                    }
                    if self.s.get(self.i - 1) == Some(&b')') {
                        return Some(PyValue::Tuple(dims));
                    }
                }
            }
            _ if self.s[self.i..].starts_with(b"True") => {
                self.i += 4;
                Some(PyValue::Bool(true))
            }
            _ if self.s[self.i..].starts_with(b"False") => {
                self.i += 5;
                Some(PyValue::Bool(false))
            }
            b'[' => {
                // A structured dtype's field list: skip to the matching bracket.
                let mut depth = 0;
                while let Some(&c) = self.s.get(self.i) {
                    self.i += 1;
                    match c {
                        b'[' => depth += 1,
                        b']' if depth == 1 => return Some(PyValue::Other),
                        b']' => depth -= 1,
                        _ => {}
                    }
                }
                None
            }
            _ => None,
        }
    }
}

/// A parse failure before the key and path are known: `(message, hint)`.
type Fail = (String, String);

const NPY_SAVE_HINT: &str =
    "save a plain numeric array: np.save(path, np.ascontiguousarray(a, dtype='<f8'))";

/// Parses NPY bytes (format v1–v3). Errors are `(message, hint)`.
fn parse_npy(b: &[u8]) -> Result<NdArray, Fail> {
    let err = |m: String, h: &str| Err((m, h.to_string()));
    if b.len() < 10 || &b[..6] != b"\x93NUMPY" {
        return err(
            "not an NPY file (missing the \\x93NUMPY magic string)".into(),
            "write it with numpy.save; .npz archives must be unpacked first",
        );
    }
    let (major, minor) = (b[6], b[7]);
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([b[8], b[9]]) as usize, 10),
        2 | 3 if b.len() >= 12 => (u32::from_le_bytes([b[8], b[9], b[10], b[11]]) as usize, 12),
        _ => {
            return err(
                format!("unsupported NPY format version {major}.{minor}"),
                "versions 1.0–3.0 are read; re-save with numpy.save",
            )
        }
    };
    let Some(header) = b.get(start..start + header_len) else {
        return err(
            format!(
                "truncated header: {header_len} bytes announced, {} present",
                b.len().saturating_sub(start)
            ),
            NPY_SAVE_HINT,
        );
    };
    let bad_header = |why: &str| {
        err(
            format!(
                "malformed header ({why}): {}",
                String::from_utf8_lossy(header).trim()
            ),
            NPY_SAVE_HINT,
        )
    };
    let mut p = PyLit { s: header, i: 0 };
    if !p.eat(b'{') {
        return bad_header("expected a dict");
    }
    let (mut descr, mut fortran, mut shape) = (None, None, None);
    while !p.eat(b'}') {
        let Some(k) = p.string() else {
            return bad_header("expected a key");
        };
        if !p.eat(b':') {
            return bad_header("expected ':'");
        }
        match (k.as_str(), p.value()) {
            ("descr", Some(PyValue::Str(s))) => descr = Some(s),
            ("descr", Some(PyValue::Other)) => {
                return err(
                    "structured dtype (record array) is not supported".into(),
                    "save each field as its own plain numeric array",
                );
            }
            ("fortran_order", Some(PyValue::Bool(f))) => fortran = Some(f),
            ("shape", Some(PyValue::Tuple(s))) => shape = Some(s),
            (_, Some(_)) => {} // unknown keys are allowed by the format
            (k, None) => return bad_header(&format!("cannot read the value of '{k}'")),
        }
        if !p.eat(b',') && !p.eat(b'}') {
            return bad_header("expected ',' or '}'");
        }
        if p.s.get(p.i - 1) == Some(&b'}') {
            break;
        }
    }
    let (Some(descr), Some(fortran), Some(shape)) = (descr, fortran, shape) else {
        return bad_header("it needs 'descr', 'fortran_order' and 'shape'");
    };
    if fortran {
        return err(
            "array is stored in Fortran (column-major) order".into(),
            "save a C-ordered copy: np.save(path, np.ascontiguousarray(a))",
        );
    }
    let elem = match descr.as_str() {
        "|b1" => Elem::Bool,
        "|u1" | "<u1" => Elem::U8,
        "|i1" | "<i1" => Elem::I8,
        "<u2" => Elem::U16,
        "<u4" => Elem::U32,
        "<u8" => Elem::U64,
        "<i2" => Elem::I16,
        "<i4" => Elem::I32,
        "<i8" => Elem::I64,
        "<f2" => Elem::F16,
        "<f4" => Elem::F32,
        "<f8" => Elem::F64,
        d if d.starts_with('>') => {
            return err(
                format!("big-endian dtype '{d}' is not supported"),
                "convert to little-endian: np.save(path, a.astype(a.dtype.newbyteorder('<')))",
            );
        }
        d if d.contains('O') => {
            return err(
                "object array (pickled Python objects) is not supported".into(),
                NPY_SAVE_HINT,
            )
        }
        d => {
            return err(
                format!("dtype '{d}' is not supported (bool, integers, f2, f4 and f8 are)"),
                NPY_SAVE_HINT,
            )
        }
    };
    let Some(n) = element_count(&shape) else {
        return bad_header("the shape overflows");
    };
    let data = &b[start + header_len..];
    let want = n.saturating_mul(elem.size());
    if data.len() != want {
        let what = if data.len() < want {
            "truncated"
        } else {
            "trailing bytes"
        };
        return err(
            format!(
                "{what}: shape {shape:?} of '{descr}' needs {want} data bytes, found {}",
                data.len()
            ),
            "the file is damaged or was not written by numpy.save",
        );
    }
    Ok(NdArray {
        shape,
        data: elem.decode(data),
    })
}

fn read_npy(k: &str, base_dir: &Path, written: &Path) -> Result<(NdArray, PathBuf), TaskError> {
    let bytes = read_bytes(k, base_dir, written)?;
    let path = resolve(base_dir, written);
    let a = parse_npy(&bytes).map_err(|(m, h)| parse_err(k, &path, m, h))?;
    Ok((a, path))
}

impl NpySpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        validate_common(
            "npy",
            self.task,
            self.n_classes,
            self.test_fraction,
            self.n_train,
            self.n_test,
        )?;
        match (&self.test_x, &self.test_y) {
            (Some(_), None) => {
                return Err(invalid(
                    key("npy", "test_y"),
                    "missing: test_x is given",
                    "give both test arrays, or neither",
                ))
            }
            (None, Some(_)) => {
                return Err(invalid(
                    key("npy", "test_x"),
                    "missing: test_y is given",
                    "give both test arrays, or neither",
                ))
            }
            (Some(_), Some(_)) if self.test_fraction.is_some() => {
                return Err(invalid(
                    key("npy", "test_fraction"),
                    "given together with test_x/test_y",
                    "use either separate test arrays or a held-out fraction",
                ))
            }
            _ => {}
        }
        Ok(())
    }

    fn part(&self, base_dir: &Path, x: (&str, &Path), y: (&str, &Path)) -> Result<Part, TaskError> {
        let (xk, yk) = (key("npy", x.0), key("npy", y.0));
        let (xa, x_path) = read_npy(&xk, base_dir, x.1)?;
        let (ya, y_path) = read_npy(&yk, base_dir, y.1)?;
        Ok(Part {
            x: to_matrix(xa, &xk, &x_path)?,
            y: Labels::Numbers(to_matrix(ya, &yk, &y_path)?),
            x_key: xk,
            x_path,
            y_key: yk,
            y_path,
            lines: vec![],
        })
    }

    pub(crate) fn load(&self, seed: u64, base_dir: &Path) -> Result<Dataset, TaskError> {
        let train = self.part(
            base_dir,
            ("train_x", &self.train_x),
            ("train_y", &self.train_y),
        )?;
        let test = match (&self.test_x, &self.test_y) {
            (Some(x), Some(y)) => Some(self.part(base_dir, ("test_x", x), ("test_y", y))?),
            _ => None,
        };
        let source = self.train_x.display().to_string();
        let common = Common {
            kind: "npy",
            task: self.task,
            n_classes: self.n_classes,
            test_fraction: self.test_fraction,
            n_train: self.n_train,
            n_test: self.n_test,
            source: &source,
        };
        assemble(&common, seed, train, test)
    }
}

// ----- safetensors ----------------------------------------------------------------------------

impl SafetensorsSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        validate_common(
            "safetensors",
            self.task,
            self.n_classes,
            self.test_fraction,
            self.n_train,
            self.n_test,
        )?;
        for (field, name) in [
            ("train_x", &self.train_x),
            ("train_y", &self.train_y),
            ("test_x", &self.test_x),
            ("test_y", &self.test_y),
        ] {
            if name.is_empty() {
                return Err(invalid(
                    key("safetensors", field),
                    "is empty",
                    "name a tensor in the file",
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn load(&self, seed: u64, base_dir: &Path) -> Result<Dataset, TaskError> {
        let file_key = key("safetensors", "path");
        let bytes = read_bytes(&file_key, base_dir, &self.path)?;
        let path = resolve(base_dir, &self.path);
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            parse_err(
                &file_key,
                &path,
                format!("not a valid safetensors file: {e}"),
                "write it with safetensors' save_file (or the lab's dataset export)",
            )
        })?;
        let tensor = |field: &str, name: &str| -> Result<Array2<f64>, TaskError> {
            let k = key("safetensors", field);
            let view = st.tensor(name).map_err(|_| {
                let mut names = st
                    .names()
                    .into_iter()
                    .map(str::to_string)
                    .collect::<Vec<_>>();
                names.sort();
                let mut hint = format!("the file holds: {}", preview(&names));
                if field.starts_with("test") {
                    hint.push_str(
                        "\nset test_fraction to hold out part of the training tensors instead",
                    );
                }
                parse_err(&k, &path, format!("no tensor named '{name}'"), hint)
            })?;
            use safetensors::Dtype as D;
            let elem = match view.dtype() {
                D::BOOL => Elem::Bool,
                D::U8 => Elem::U8,
                D::I8 => Elem::I8,
                D::U16 => Elem::U16,
                D::I16 => Elem::I16,
                D::U32 => Elem::U32,
                D::I32 => Elem::I32,
                D::U64 => Elem::U64,
                D::I64 => Elem::I64,
                D::F16 => Elem::F16,
                D::BF16 => Elem::BF16,
                D::F32 => Elem::F32,
                D::F64 => Elem::F64,
                other => {
                    return Err(parse_err(
                        &k,
                        &path,
                        format!("tensor '{name}' has unsupported dtype {other:?}"),
                        "store it as F32, F64, BF16, F16, an integer type or BOOL",
                    ));
                }
            };
            let shape = view.shape().to_vec();
            // The crate checks data length against shape × dtype when it deserializes.
            to_matrix(
                NdArray {
                    data: elem.decode(view.data()),
                    shape,
                },
                &k,
                &path,
            )
        };
        let part = |xf: &str, xn: &str, yf: &str, yn: &str| -> Result<Part, TaskError> {
            Ok(Part {
                x: tensor(xf, xn)?,
                y: Labels::Numbers(tensor(yf, yn)?),
                x_key: key("safetensors", xf),
                x_path: path.clone(),
                y_key: key("safetensors", yf),
                y_path: path.clone(),
                lines: vec![],
            })
        };
        let train = part("train_x", &self.train_x, "train_y", &self.train_y)?;
        let test = match self.test_fraction {
            Some(_) => None,
            None => Some(part("test_x", &self.test_x, "test_y", &self.test_y)?),
        };
        let source = self.path.display().to_string();
        let common = Common {
            kind: "safetensors",
            task: self.task,
            n_classes: self.n_classes,
            test_fraction: self.test_fraction,
            n_train: self.n_train,
            n_test: self.n_test,
            source: &source,
        };
        assemble(&common, seed, train, test)
    }
}

// ----- IDX (MNIST format) ---------------------------------------------------------------------

/// Parses an IDX file with unsigned-byte data: `[0, 0, 0x08, ndim]`, `ndim` big-endian u32
/// sizes, then the bytes (LeCun et al., the MNIST database's file format). `images` asks for
/// ≥ 2 dimensions (magic 0x00000803 for MNIST), otherwise exactly 1 (0x00000801).
fn parse_idx<'a>(b: &'a [u8], images: bool, path: &Path) -> Result<(Vec<usize>, &'a [u8]), Fail> {
    let want = if images {
        "0x00000803 (u8 images)"
    } else {
        "0x00000801 (u8 labels)"
    };
    if b.starts_with(&[0x1f, 0x8b]) {
        return Err((
            "is gzip-compressed".into(),
            format!(
                "decompress it first: gunzip -k '{}' (the .gz suffix may be missing)",
                path.display()
            ),
        ));
    }
    if b.len() < 4 {
        return Err((
            format!("too short for an IDX header ({} bytes)", b.len()),
            "an IDX file starts with a 4-byte magic number".into(),
        ));
    }
    let magic = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    if b[0] != 0 || b[1] != 0 {
        return Err((
            format!("not an IDX file: magic number 0x{magic:08x}, expected {want}"),
            "IDX files start with two zero bytes".into(),
        ));
    }
    if b[2] != 0x08 {
        let kind = match b[2] {
            0x09 => "i8",
            0x0b => "i16",
            0x0c => "i32",
            0x0d => "f32",
            0x0e => "f64",
            _ => "unknown",
        };
        return Err((
            format!(
                "element type 0x{:02x} ({kind}): only unsigned bytes (0x08) are read",
                b[2]
            ),
            "MNIST-format files hold u8 pixels and labels".into(),
        ));
    }
    let ndim = b[3] as usize;
    if (images && ndim < 2) || (!images && ndim != 1) {
        let swapped = if images == (ndim == 1) {
            " — are the images and labels files swapped?"
        } else {
            ""
        };
        return Err((
            format!("magic number 0x{magic:08x}, expected {want}{swapped}"),
            "check which file each key names".into(),
        ));
    }
    let header = 4 + 4 * ndim;
    if b.len() < header {
        return Err((
            format!(
                "truncated header: {ndim} dimensions announced, file is {} bytes",
                b.len()
            ),
            "the file is damaged; download and decompress it again".into(),
        ));
    }
    let dims: Vec<usize> = b[4..header]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let n = element_count(&dims).unwrap_or(usize::MAX);
    let data = &b[header..];
    if data.len() != n {
        let what = if data.len() < n {
            "truncated"
        } else {
            "trailing bytes"
        };
        return Err((
            format!(
                "{what}: dimensions {dims:?} need {n} data bytes, found {}",
                data.len()
            ),
            "the file is damaged; download and decompress it again".into(),
        ));
    }
    Ok((dims, data))
}

impl IdxSpec {
    pub fn validate(&self) -> Result<(), TaskError> {
        validate_common(
            "idx",
            FileTask::Classification,
            self.n_classes,
            None,
            self.n_train,
            self.n_test,
        )
    }

    fn read(
        &self,
        base_dir: &Path,
        field: &str,
        file: &Path,
        images: bool,
    ) -> Result<(Vec<usize>, Vec<u8>, PathBuf), TaskError> {
        let k = key("idx", field);
        let written = self.dir.join(file);
        let bytes = read_bytes(&k, base_dir, &written)?;
        let path = resolve(base_dir, &written);
        let (dims, data) =
            parse_idx(&bytes, images, &path).map_err(|(m, h)| parse_err(&k, &path, m, h))?;
        Ok((dims, data.to_vec(), path))
    }

    fn part(
        &self,
        base_dir: &Path,
        split: &str,
        images: &Path,
        labels: &Path,
    ) -> Result<(Part, Vec<usize>), TaskError> {
        let (xf, yf) = (format!("{split}_images"), format!("{split}_labels"));
        let (dims, pixels, x_path) = self.read(base_dir, &xf, images, true)?;
        let (ldims, labels, y_path) = self.read(base_dir, &yf, labels, false)?;
        if ldims[0] != dims[0] {
            return Err(shape_err(
                &key("idx", &yf),
                format!("{} labels for {} images", ldims[0], dims[0]),
                "the images and labels files must come from the same split",
            ));
        }
        let d: usize = dims[1..].iter().product();
        if dims[0] == 0 || d == 0 {
            return Err(parse_err(
                &key("idx", &xf),
                &x_path,
                format!("empty image array, dimensions {dims:?}"),
                "the file holds no images",
            ));
        }
        // Pixels scaled to [0, 1], the usual MNIST preprocessing.
        let x = matrix(
            dims[0],
            d,
            pixels.iter().map(|&v| v as f64 / 255.0).collect(),
        );
        let y = matrix(dims[0], 1, labels.iter().map(|&v| v as f64).collect());
        let part = Part {
            x,
            y: Labels::Numbers(y),
            x_key: key("idx", &xf),
            x_path,
            y_key: key("idx", &yf),
            y_path,
            lines: vec![],
        };
        Ok((part, dims[1..].to_vec()))
    }

    pub(crate) fn load(&self, seed: u64, base_dir: &Path) -> Result<Dataset, TaskError> {
        let (train, image_dims) =
            self.part(base_dir, "train", &self.train_images, &self.train_labels)?;
        let (test, _) = self.part(base_dir, "test", &self.test_images, &self.test_labels)?;
        let dims = image_dims
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("×");
        let source = format!("{} ({dims} images, pixels/255)", self.dir.display());
        let common = Common {
            kind: "idx",
            task: FileTask::Classification,
            n_classes: self.n_classes,
            test_fraction: None,
            n_train: self.n_train,
            n_test: self.n_test,
            source: &source,
        };
        assemble(&common, seed, train, Some(test))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::TaskSpec;
    use std::fs;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    fn write(d: &Path, name: &str, bytes: impl AsRef<[u8]>) {
        fs::write(d.join(name), bytes).unwrap();
    }

    /// NPY bytes as numpy.save writes them: magic, version, header padded so data starts at a
    /// multiple of 64, then little-endian data.
    fn npy(descr: &str, shape: &[usize], data: &[u8], version: u8) -> Vec<u8> {
        let shape_s = match shape {
            [n] => format!("({n},)"),
            s => format!(
                "({})",
                s.iter()
                    .map(|d| d.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_s}, }}");
        let pre = if version == 1 { 10 } else { 12 };
        while (pre + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY".to_vec();
        out.extend([version, 0]);
        if version == 1 {
            out.extend((header.len() as u16).to_le_bytes());
        } else {
            out.extend((header.len() as u32).to_le_bytes());
        }
        out.extend(header.as_bytes());
        out.extend(data);
        out
    }

    fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn idx(magic_ndim: u8, dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut out = vec![0, 0, 0x08, magic_ndim];
        for d in dims {
            out.extend(d.to_be_bytes());
        }
        out.extend(data);
        out
    }

    fn csv_spec(path: &str, task: FileTask) -> CsvSpec {
        CsvSpec {
            path: path.into(),
            test_path: None,
            test_fraction: None,
            task,
            target: default_target(),
            features: None,
            header: true,
            delimiter: ',',
            n_classes: None,
            n_train: None,
            n_test: None,
        }
    }

    fn gen(spec: TaskSpec, d: &Path) -> Result<Dataset, TaskError> {
        spec.generate(0, d)
    }

    // ----- CSV -----

    #[test]
    fn csv_round_trip_with_test_file_names_and_quotes() {
        let d = dir();
        write(d.path(), "train.csv", "\u{feff}a,\"b, quoted\",species\n1,2.5,setosa\n\n-3,4e-1,\"virginica\"\r\n5,6,versicolor\n");
        write(
            d.path(),
            "test.csv",
            "a,\"b, quoted\",species\n7,8,setosa\n",
        );
        let spec = CsvSpec {
            test_path: Some("test.csv".into()),
            target: Columns(vec![Column::Name("species".into())]),
            ..csv_spec("train.csv", FileTask::Classification)
        };
        let ds = gen(TaskSpec::Csv(spec), d.path()).unwrap();
        assert_eq!(
            ds.train_x,
            ndarray::array![[1.0, 2.5], [-3.0, 0.4], [5.0, 6.0]]
        );
        // Names numbered in sorted order: setosa 0, versicolor 1, virginica 2.
        assert_eq!(ds.train_y, ndarray::array![[0.0], [2.0], [1.0]]);
        assert_eq!(ds.test_x, ndarray::array![[7.0, 8.0]]);
        assert_eq!(ds.test_y, ndarray::array![[0.0]]);
        assert_eq!(ds.target, Target::Classes { n_classes: 3 });
        assert_eq!(ds.description, "csv train.csv: 3 classes (setosa=0, versicolor=1, virginica=2), 2 inputs: 3 train / 1 test");
    }

    #[test]
    fn csv_regression_by_index_without_header_and_seeded_split() {
        let d = dir();
        let rows: String = (0..20)
            .map(|i| format!("{i};{};{}\n", i * 2, i as f64 * 0.5))
            .collect();
        write(d.path(), "r.csv", &rows);
        let spec = CsvSpec {
            header: false,
            delimiter: ';',
            target: Columns(vec![Column::Index(1), Column::Index(-1)]),
            test_fraction: Some(0.3),
            ..csv_spec("r.csv", FileTask::Regression)
        };
        let ds = gen(TaskSpec::Csv(spec.clone()), d.path()).unwrap();
        assert_eq!(
            (ds.n_train(), ds.n_test(), ds.input_dim(), ds.output_dim()),
            (14, 6, 1, 2)
        );
        // Every row lands in exactly one set, targets stay with their inputs, file order kept.
        let mut all: Vec<f64> = ds.train_x.iter().chain(ds.test_x.iter()).copied().collect();
        all.sort_by(f64::total_cmp);
        assert_eq!(all, (0..20).map(|i| i as f64).collect::<Vec<_>>());
        for (x, y) in [(&ds.train_x, &ds.train_y), (&ds.test_x, &ds.test_y)] {
            for (xi, yi) in x.column(0).iter().zip(y.rows()) {
                assert_eq!((yi[0], yi[1]), (xi * 2.0, xi * 0.5));
            }
            assert!(x.column(0).windows(2).into_iter().all(|w| w[0] < w[1]));
        }
        assert_eq!(gen(TaskSpec::Csv(spec.clone()), d.path()).unwrap(), ds);
        assert_ne!(
            TaskSpec::Csv(spec).generate(1, d.path()).unwrap().test_x,
            ds.test_x
        );
    }

    #[test]
    fn csv_errors() {
        let d = dir();
        write(d.path(), "bad_cols.csv", "a,b,y\n1,2,0\n3,4\n");
        let err = gen(
            TaskSpec::Csv(csv_spec("bad_cols.csv", FileTask::Classification)),
            d.path(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TaskError::Parse { msg, .. } if msg == "line 3 has 2 fields, expected 3"),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.csv.path"));

        write(d.path(), "nan.csv", "a,y\n1,0\n,1\n");
        let err = gen(
            TaskSpec::Csv(csv_spec("nan.csv", FileTask::Classification)),
            d.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("line 3, column 'a'"), "{err}");
        assert!(
            err.hints()[0].contains("missing values"),
            "{:?}",
            err.hints()
        );

        write(d.path(), "labels.csv", "a,y\n1,0\n2,1.5\n");
        let err = gen(
            TaskSpec::Csv(csv_spec("labels.csv", FileTask::Classification)),
            d.path(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TaskError::Label { msg, .. } if msg.contains("line 3") && msg.contains("1.5")),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.csv.target"));

        write(d.path(), "range.csv", "a,y\n1,0\n2,3\n");
        let spec = CsvSpec {
            n_classes: Some(3),
            ..csv_spec("range.csv", FileTask::Classification)
        };
        let err = gen(TaskSpec::Csv(spec), d.path()).unwrap_err();
        assert!(
            matches!(&err, TaskError::Label { msg, .. } if msg.contains("0..3")),
            "{err}"
        );

        let spec = CsvSpec {
            target: Columns(vec![Column::Name("z".into())]),
            ..csv_spec("range.csv", FileTask::Regression)
        };
        let err = gen(TaskSpec::Csv(spec), d.path()).unwrap_err();
        assert_eq!(err.key(), Some("task.csv.target"));
        assert!(err.hints()[0].contains("a, y"), "{:?}", err.hints());

        write(d.path(), "other.csv", "a,b\n1,2\n");
        let spec = CsvSpec {
            test_path: Some("other.csv".into()),
            ..csv_spec("range.csv", FileTask::Regression)
        };
        let err = gen(TaskSpec::Csv(spec), d.path()).unwrap_err();
        assert!(matches!(err, TaskError::Shape { .. }), "{err:?}");
        assert_eq!(err.key(), Some("task.csv.test_path"));

        write(d.path(), "quote.csv", "a,y\n\"1,0\n");
        let err = gen(
            TaskSpec::Csv(csv_spec("quote.csv", FileTask::Regression)),
            d.path(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("unterminated"), "{err}");
    }

    #[test]
    fn missing_file_names_the_key_and_the_resolved_path() {
        let d = dir();
        let err = gen(
            TaskSpec::Csv(csv_spec("nope.csv", FileTask::Regression)),
            d.path(),
        )
        .unwrap_err();
        let TaskError::MissingFile { key, path, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(key, "task.csv.path");
        assert_eq!(path, &d.path().join("nope.csv"));
        assert!(
            err.hints()[0].contains("experiment file's folder"),
            "{:?}",
            err.hints()
        );
    }

    #[test]
    fn spec_validation() {
        let check = |spec: TaskSpec, key: &str| {
            let err = spec.validate().unwrap_err();
            assert!(matches!(err, TaskError::Invalid { .. }), "{err:?}");
            assert_eq!(err.key(), Some(key), "{err}");
        };
        let c = || csv_spec("d.csv", FileTask::Classification);
        check(
            TaskSpec::Csv(CsvSpec {
                test_fraction: Some(1.5),
                ..c()
            }),
            "task.csv.test_fraction",
        );
        check(
            TaskSpec::Csv(CsvSpec {
                test_fraction: Some(0.2),
                test_path: Some("t.csv".into()),
                ..c()
            }),
            "task.csv.test_fraction",
        );
        check(
            TaskSpec::Csv(CsvSpec {
                target: Columns(vec![Column::Index(0), Column::Index(1)]),
                ..c()
            }),
            "task.csv.target",
        );
        check(
            TaskSpec::Csv(CsvSpec {
                header: false,
                target: Columns(vec![Column::Name("y".into())]),
                ..c()
            }),
            "task.csv.target",
        );
        check(
            TaskSpec::Csv(CsvSpec {
                n_classes: Some(1),
                ..c()
            }),
            "task.csv.n_classes",
        );
        check(
            TaskSpec::Csv(CsvSpec {
                n_classes: Some(3),
                ..csv_spec("d.csv", FileTask::Regression)
            }),
            "task.csv.n_classes",
        );
        check(
            TaskSpec::Csv(CsvSpec {
                n_train: Some(0),
                ..c()
            }),
            "task.csv.n_train",
        );
        let n = NpySpec {
            train_x: "x".into(),
            train_y: "y".into(),
            test_x: Some("tx".into()),
            test_y: None,
            test_fraction: None,
            task: FileTask::Regression,
            n_classes: None,
            n_train: None,
            n_test: None,
        };
        check(TaskSpec::Npy(n), "task.npy.test_y");
    }

    // ----- NPY -----

    #[test]
    fn npy_round_trip_all_dtypes_and_versions() {
        let d = dir();
        let x: Vec<f64> = (0..12).map(|i| i as f64 * 0.25 - 1.0).collect();
        write(d.path(), "x.npy", npy("<f8", &[4, 3], &f64s(&x), 1));
        let x32: Vec<u8> = x.iter().flat_map(|&v| (v as f32).to_le_bytes()).collect();
        write(d.path(), "x32.npy", npy("<f4", &[4, 3], &x32, 2));
        write(
            d.path(),
            "x3d.npy",
            npy(
                "|u1",
                &[4, 3, 1],
                &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 255],
                3,
            ),
        );
        write(
            d.path(),
            "y.npy",
            npy(
                "<i8",
                &[4],
                &[0i64, 2, 1, 2]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<_>>(),
                1,
            ),
        );
        write(d.path(), "yb.npy", npy("|b1", &[4], &[0, 1, 1, 0], 1));
        write(
            d.path(),
            "yi2.npy",
            npy(
                "<i2",
                &[4, 1],
                &[1i16, 0, 1, 1]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<_>>(),
                1,
            ),
        );
        write(
            d.path(),
            "yh.npy",
            npy(
                "<f2",
                &[4],
                &[0x3c00u16, 0xc000, 0x0001, 0x7bff]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect::<Vec<_>>(),
                1,
            ),
        );
        let spec = |x: &str, y: &str, task| NpySpec {
            train_x: x.into(),
            train_y: y.into(),
            test_x: Some(x.into()),
            test_y: Some(y.into()),
            test_fraction: None,
            task,
            n_classes: None,
            n_train: None,
            n_test: None,
        };
        let ds = gen(
            TaskSpec::Npy(spec("x.npy", "y.npy", FileTask::Classification)),
            d.path(),
        )
        .unwrap();
        assert_eq!(ds.train_x, matrix(4, 3, x.clone()));
        assert_eq!(ds.train_y, ndarray::array![[0.0], [2.0], [1.0], [2.0]]);
        assert_eq!(ds.target, Target::Classes { n_classes: 3 });
        let ds = gen(
            TaskSpec::Npy(spec("x32.npy", "yb.npy", FileTask::Classification)),
            d.path(),
        )
        .unwrap();
        assert_eq!(
            ds.train_x,
            matrix(4, 3, x.clone()),
            "these values are exact in f32"
        );
        assert_eq!(ds.train_y.column(0).to_vec(), vec![0.0, 1.0, 1.0, 0.0]);
        let ds = gen(
            TaskSpec::Npy(spec("x3d.npy", "yi2.npy", FileTask::Regression)),
            d.path(),
        )
        .unwrap();
        assert_eq!(ds.train_x.dim(), (4, 3));
        assert_eq!(ds.train_x[[3, 2]], 255.0);
        assert_eq!(ds.train_y.column(0).to_vec(), vec![1.0, 0.0, 1.0, 1.0]);
        let ds = gen(
            TaskSpec::Npy(spec("x.npy", "yh.npy", FileTask::Regression)),
            d.path(),
        )
        .unwrap();
        assert_eq!(
            ds.train_y.column(0).to_vec(),
            vec![1.0, -2.0, 2f64.powi(-24), 65504.0]
        );
    }

    /// `bytes` with the first `from` replaced by `to`.
    fn replace(bytes: &[u8], from: &str, to: &str) -> Vec<u8> {
        let i = bytes
            .windows(from.len())
            .position(|w| w == from.as_bytes())
            .unwrap();
        [&bytes[..i], to.as_bytes(), &bytes[i + from.len()..]].concat()
    }

    #[test]
    fn npy_rejections() {
        let ok = npy("<f8", &[2], &f64s(&[1.0, 2.0]), 1);
        assert!(parse_npy(&ok).is_ok());
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"PK\x03\x04 not npy at all".to_vec(), "not an NPY file"),
            (npy(">f8", &[2], &f64s(&[1.0, 2.0]), 1), "big-endian"),
            (npy("<c16", &[1], &[0; 16], 1), "dtype '<c16'"),
            (npy("<f8", &[3], &f64s(&[1.0, 2.0]), 1), "truncated"),
            (npy("<f8", &[1], &f64s(&[1.0, 2.0]), 1), "trailing bytes"),
            (replace(&ok, "False", "True "), "Fortran"),
            (replace(&ok, "'shape'", "'shapf'"), "malformed header"),
            (replace(&ok, "(2,)", "(2x)"), "malformed header"),
            (replace(&ok, "'<f8'", "[('a', '<f8')]"), "structured dtype"),
        ];
        for (bytes, want) in cases {
            let (msg, hint) = parse_npy(&bytes)
                .err()
                .unwrap_or_else(|| panic!("accepted: {want}"));
            assert!(msg.contains(want), "{msg} (want {want})");
            assert!(!hint.is_empty());
        }
        // Through the loader: a Parse error naming the key and the file.
        let d = dir();
        write(d.path(), "x.npy", npy(">f8", &[2], &f64s(&[1.0, 2.0]), 1));
        write(d.path(), "y.npy", &ok);
        let spec = NpySpec {
            train_x: "x.npy".into(),
            train_y: "y.npy".into(),
            test_x: None,
            test_y: None,
            test_fraction: None,
            task: FileTask::Regression,
            n_classes: None,
            n_train: None,
            n_test: None,
        };
        let err = gen(TaskSpec::Npy(spec), d.path()).unwrap_err();
        let TaskError::Parse { key, path, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(
            (key.as_str(), path),
            ("task.npy.train_x", &d.path().join("x.npy"))
        );
    }

    #[test]
    fn npy_shape_mismatch_and_nan() {
        let d = dir();
        write(
            d.path(),
            "x.npy",
            npy("<f8", &[3], &f64s(&[1.0, 2.0, f64::NAN]), 1),
        );
        write(d.path(), "y2.npy", npy("<f8", &[2], &f64s(&[1.0, 2.0]), 1));
        write(
            d.path(),
            "y3.npy",
            npy("<f8", &[3], &f64s(&[1.0, 2.0, 3.0]), 1),
        );
        let spec = |y: &str| NpySpec {
            train_x: "x.npy".into(),
            train_y: y.into(),
            test_x: None,
            test_y: None,
            test_fraction: None,
            task: FileTask::Regression,
            n_classes: None,
            n_train: None,
            n_test: None,
        };
        let err = gen(TaskSpec::Npy(spec("y2.npy")), d.path()).unwrap_err();
        assert!(
            matches!(err, TaskError::Shape { .. }) && err.key() == Some("task.npy.train_y"),
            "{err:?}"
        );
        let err = gen(TaskSpec::Npy(spec("y3.npy")), d.path()).unwrap_err();
        assert!(
            err.to_string().contains("row 2 (0-based)") && err.key() == Some("task.npy.train_x"),
            "{err}"
        );
    }

    // ----- safetensors -----

    fn st_file(tensors: Vec<(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)>) -> Vec<u8> {
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, dt, s, b)| {
                (
                    n.to_string(),
                    safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap(),
                )
            })
            .collect();
        safetensors::serialize(views, None).unwrap()
    }

    #[test]
    fn safetensors_round_trip_default_names() {
        use safetensors::Dtype as D;
        let d = dir();
        let x: Vec<f32> = (0..10).map(|i| i as f32 / 4.0).collect();
        let bytes = st_file(vec![
            (
                "train.x",
                D::F32,
                vec![5, 2],
                x.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            (
                "train.y",
                D::I64,
                vec![5],
                [0i64, 1, 2, 1, 0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            ("test.x", D::F64, vec![1, 2], f64s(&[9.0, 9.5])),
            ("test.y", D::U8, vec![1, 1], vec![2]),
        ]);
        write(d.path(), "data.safetensors", bytes);
        let spec = SafetensorsSpec {
            path: "data.safetensors".into(),
            train_x: default_train_x(),
            train_y: default_train_y(),
            test_x: default_test_x(),
            test_y: default_test_y(),
            test_fraction: None,
            task: FileTask::Classification,
            n_classes: Some(4),
            n_train: None,
            n_test: None,
        };
        let ds = gen(TaskSpec::Safetensors(spec.clone()), d.path()).unwrap();
        assert_eq!(
            ds.train_x,
            matrix(5, 2, x.iter().map(|&v| v as f64).collect())
        );
        assert_eq!(ds.train_y.column(0).to_vec(), vec![0.0, 1.0, 2.0, 1.0, 0.0]);
        assert_eq!(ds.test_x, ndarray::array![[9.0, 9.5]]);
        assert_eq!(ds.test_y, ndarray::array![[2.0]]);
        assert_eq!(ds.target, Target::Classes { n_classes: 4 });

        // Without test tensors: an error that suggests test_fraction, which then works.
        let bytes = st_file(vec![
            (
                "inputs",
                D::BF16,
                vec![4, 1],
                [0x3f80u16, 0x4000, 0xbf80, 0x0000]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
            ("targets", D::F64, vec![4, 1], f64s(&[1.0, 2.0, 3.0, 4.0])),
        ]);
        write(d.path(), "plain.safetensors", bytes);
        let spec = SafetensorsSpec {
            path: "plain.safetensors".into(),
            train_x: "inputs".into(),
            train_y: "targets".into(),
            task: FileTask::Regression,
            n_classes: None,
            ..spec
        };
        let err = gen(TaskSpec::Safetensors(spec.clone()), d.path()).unwrap_err();
        assert!(
            matches!(&err, TaskError::Parse { msg, .. } if msg == "no tensor named 'test.x'"),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.safetensors.test_x"));
        assert!(
            err.hints().iter().any(|h| h.contains("inputs, targets"))
                && err.hints().iter().any(|h| h.contains("test_fraction"))
        );
        let ds = gen(
            TaskSpec::Safetensors(SafetensorsSpec {
                test_fraction: Some(0.25),
                ..spec
            }),
            d.path(),
        )
        .unwrap();
        assert_eq!((ds.n_train(), ds.n_test()), (3, 1));
        let mut xs: Vec<f64> = ds.train_x.iter().chain(ds.test_x.iter()).copied().collect();
        xs.sort_by(f64::total_cmp);
        assert_eq!(xs, vec![-1.0, 0.0, 1.0, 2.0]);
    }

    #[test]
    fn safetensors_malformed() {
        let d = dir();
        write(
            d.path(),
            "junk.safetensors",
            b"\xff\xff\xff\xff\xff\xff\xff\x7fnot json",
        );
        let spec = SafetensorsSpec {
            path: "junk.safetensors".into(),
            train_x: default_train_x(),
            train_y: default_train_y(),
            test_x: default_test_x(),
            test_y: default_test_y(),
            test_fraction: None,
            task: FileTask::Regression,
            n_classes: None,
            n_train: None,
            n_test: None,
        };
        let err = gen(TaskSpec::Safetensors(spec), d.path()).unwrap_err();
        assert!(
            matches!(err, TaskError::Parse { .. }) && err.key() == Some("task.safetensors.path"),
            "{err:?}"
        );
    }

    // ----- IDX -----

    fn mnist_dir(n_train: u32, n_test: u32) -> tempfile::TempDir {
        let d = dir();
        let images = |n: u32| {
            idx(
                3,
                &[n, 2, 3],
                &(0..n * 6).map(|i| (i * 37 % 256) as u8).collect::<Vec<_>>(),
            )
        };
        let labels = |n: u32| idx(1, &[n], &(0..n).map(|i| (i % 10) as u8).collect::<Vec<_>>());
        write(d.path(), "train-images-idx3-ubyte", images(n_train));
        write(d.path(), "train-labels-idx1-ubyte", labels(n_train));
        write(d.path(), "t10k-images-idx3-ubyte", images(n_test));
        write(d.path(), "t10k-labels-idx1-ubyte", labels(n_test));
        d
    }

    fn idx_spec() -> IdxSpec {
        IdxSpec {
            dir: default_dir(),
            train_images: default_train_images(),
            train_labels: default_train_labels(),
            test_images: default_test_images(),
            test_labels: default_test_labels(),
            n_classes: None,
            n_train: None,
            n_test: None,
        }
    }

    #[test]
    fn idx_round_trip_scaling_and_nested_subsets() {
        let d = mnist_dir(40, 12);
        let ds = gen(TaskSpec::Idx(idx_spec()), d.path()).unwrap();
        assert_eq!(
            (ds.n_train(), ds.n_test(), ds.input_dim(), ds.output_dim()),
            (40, 12, 6, 10)
        );
        for (r, row) in ds.train_x.rows().into_iter().enumerate() {
            for (c, &v) in row.iter().enumerate() {
                assert_eq!(v, ((r * 6 + c) * 37 % 256) as f64 / 255.0);
            }
            assert_eq!(ds.train_y[[r, 0]], (r % 10) as f64);
        }
        assert_eq!(
            ds.description,
            "idx . (2×3 images, pixels/255): 10 classes, 6 inputs: 40 train / 12 test"
        );

        // n_train keeps a seeded subset in file order; a smaller one is nested in a larger one.
        let take = |n| {
            gen(
                TaskSpec::Idx(IdxSpec {
                    n_train: Some(n),
                    ..idx_spec()
                }),
                d.path(),
            )
            .unwrap()
        };
        let (small, big) = (take(10), take(25));
        assert_eq!(small.n_train(), 10);
        let rows = |ds: &Dataset| {
            ds.train_x
                .rows()
                .into_iter()
                .map(|r| r.to_vec())
                .collect::<Vec<_>>()
        };
        let big_rows = rows(&big);
        assert!(rows(&small).iter().all(|r| big_rows.contains(r)));
        let err = gen(
            TaskSpec::Idx(IdxSpec {
                n_test: Some(13),
                ..idx_spec()
            }),
            d.path(),
        )
        .unwrap_err();
        assert_eq!(err.key(), Some("task.idx.n_test"));
    }

    #[test]
    fn idx_errors() {
        let d = mnist_dir(5, 5);
        let p = d.path();
        // Swapped files.
        let spec = IdxSpec {
            train_images: default_train_labels(),
            train_labels: default_train_images(),
            ..idx_spec()
        };
        let err = gen(TaskSpec::Idx(spec), p).unwrap_err();
        assert!(
            matches!(&err, TaskError::Parse { msg, .. } if msg.contains("0x00000801") && msg.contains("swapped")),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.idx.train_images"));
        // Wrong magic.
        write(
            p,
            "t10k-labels-idx1-ubyte",
            [8u8, 8, 8, 1, 0, 0, 0, 5, 1, 2, 3, 4, 5],
        );
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(
            matches!(&err, TaskError::Parse { msg, .. } if msg.contains("magic number 0x08080801")),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.idx.test_labels"));
        // Gzipped: a hint to gunzip.
        write(p, "t10k-labels-idx1-ubyte", [0x1f, 0x8b, 8, 0, 0, 0]);
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(err.hints()[0].contains("gunzip"), "{:?}", err.hints());
        // Missing, with a .gz next to it.
        fs::rename(
            p.join("t10k-labels-idx1-ubyte"),
            p.join("t10k-labels-idx1-ubyte.gz"),
        )
        .unwrap();
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(matches!(err, TaskError::MissingFile { .. }), "{err:?}");
        assert!(
            err.hints().iter().any(|h| h.contains("gunzip")),
            "{:?}",
            err.hints()
        );
        // Count mismatch and label range.
        write(p, "t10k-labels-idx1-ubyte", idx(1, &[4], &[1, 2, 3, 4]));
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(
            matches!(err, TaskError::Shape { .. }) && err.key() == Some("task.idx.test_labels"),
            "{err:?}"
        );
        write(p, "t10k-labels-idx1-ubyte", idx(1, &[5], &[1, 2, 3, 4, 12]));
        let err = gen(
            TaskSpec::Idx(IdxSpec {
                n_classes: Some(10),
                ..idx_spec()
            }),
            p,
        )
        .unwrap_err();
        assert!(
            matches!(&err, TaskError::Label { msg, .. } if msg.contains("row 4") && msg.contains("label 12")),
            "{err}"
        );
        assert_eq!(err.key(), Some("task.idx.test_labels"));
        // Truncated data.
        write(p, "t10k-labels-idx1-ubyte", idx(1, &[5], &[1, 2]));
        let err = gen(TaskSpec::Idx(idx_spec()), p).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0x3555), 0.333251953125);
        assert_eq!(f16_to_f64(0xfc00), f64::NEG_INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
        assert_eq!(f16_to_f64(0x8000), 0.0);
    }
}
