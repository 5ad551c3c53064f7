//! Data files: CSV, NPY, safetensors, MNIST-format IDX, and folders of PNG or NPY images with
//! their masks. Parsed here, without extra dependencies beyond `safetensors` and `png`; nothing
//! is ever downloaded.
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
//!
//! One file per format — [`csv`], [`npy`], [`safetensors`], [`idx`], [`images`] — each with its
//! spec, its parser and its tests; this file holds what they share: the target/split/subset
//! pipeline and the element types of binary arrays.

use std::path::{Path, PathBuf};

use ndarray::{Array2, Axis};
use serde::{Deserialize, Serialize};

use super::{
    counts, invalid, key, label_column, matrix, open_fraction, Dataset, Target, TaskError,
};
use crate::engine::rng::Rng;

pub mod csv;
pub mod idx;
pub mod images;
pub mod npy;
pub mod safetensors;

pub use self::csv::{Column, Columns, CsvSpec};
pub use self::idx::IdxSpec;
pub use self::images::{ImagesSpec, PixelScale};
pub use self::npy::NpySpec;
pub use self::safetensors::SafetensorsSpec;

/// What a file's targets are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileTask {
    Regression,
    Classification,
}

/// 25% held out when no test file is given: sklearn's `train_test_split` default.
pub const DEFAULT_TEST_FRACTION: f64 = 0.25;

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

/// Per part, each row's class index; the number of classes; the class names, if labels were
/// names.
type Classes = (Vec<Vec<usize>>, usize, Option<Vec<String>>);

/// Classification labels as class indices, with the number of classes.
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
        if given.is_none() && names.len() < 2 {
            let p = parts[0];
            return Err(TaskError::Label {
                key: p.y_key.clone(),
                path: p.y_path.clone(),
                msg: format!("every label is '{}': a single class", preview(&names)),
                hint: "set n_classes if the other classes are absent from this data, or check the target column".into(),
            });
        }
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
    // More classes than examples is almost surely a real-valued column read as labels.
    let rows: usize = out.iter().map(Vec::len).sum();
    if given.is_none() && n > rows {
        let p = parts[0];
        return Err(TaskError::Label {
            key: p.y_key.clone(),
            path: p.y_path.clone(),
            msg: format!("labels go up to {max}, which makes {n} classes for {rows} examples"),
            hint: "for real-valued targets set task = \"regression\"; if the classes really are that many, set n_classes".into(),
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

    let test = match (test, test_y) {
        (Some(t), Some(ty)) => Some((t.x, ty)),
        _ => None,
    };
    let [train_x, train_y, test_x, test_y] = split_and_subset(
        c.kind,
        seed,
        c.test_fraction,
        (c.n_train, c.n_test),
        (train.x, train_y),
        test,
    )?;

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
        (Target::Masks { n_classes }, _) => format!("{n_classes} classes per pixel"),
    };
    Ok(Dataset {
        sequence: None,
        subtasks: None,
        image: None,
        mixture: None,
        prompts: None,
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

/// Holds out a test set when there is none (a seeded shuffle, stream `"task/split"`, of
/// `test_fraction` of the rows; both sets keep file order), then keeps the `n_train` / `n_test`
/// subsets (streams `"task/subset_train"`, `"task/subset_test"`, nested in `n`): how every file
/// task splits and subsamples. Returns `[train_x, train_y, test_x, test_y]`.
fn split_and_subset(
    kind: &str,
    seed: u64,
    test_fraction: Option<f64>,
    (n_train, n_test): (Option<usize>, Option<usize>),
    (train_x, train_y): (Array2<f64>, Array2<f64>),
    test: Option<(Array2<f64>, Array2<f64>)>,
) -> Result<[Array2<f64>; 4], TaskError> {
    let (mut train_x, mut train_y, mut test_x, mut test_y) = match test {
        Some((tx, ty)) => (train_x, train_y, tx, ty),
        None => {
            let n = train_x.nrows();
            let f = test_fraction.unwrap_or(DEFAULT_TEST_FRACTION);
            if n < 2 {
                return Err(shape_err(
                    &key(kind, "test_fraction"),
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
                train_x.select(Axis(0), &tr),
                train_y.select(Axis(0), &tr),
                train_x.select(Axis(0), &te),
                train_y.select(Axis(0), &te),
            )
        }
    };

    for (field, want, x, y, label) in [
        (
            "n_train",
            n_train,
            &mut train_x,
            &mut train_y,
            "task/subset_train",
        ),
        (
            "n_test",
            n_test,
            &mut test_x,
            &mut test_y,
            "task/subset_test",
        ),
    ] {
        if let Some(m) = want {
            if m > x.nrows() {
                return Err(invalid(
                    key(kind, field),
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
    Ok([train_x, train_y, test_x, test_y])
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

/// A parse failure before the key and path are known: `(message, hint)`.
type Fail = (String, String);

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

#[cfg(test)]
pub(super) mod test_util {
    use std::path::Path;

    use crate::task::{Dataset, ImageInfo, TaskError, TaskSpec};

    pub fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    pub fn write(d: &Path, name: &str, bytes: impl AsRef<[u8]>) {
        std::fs::write(d.join(name), bytes).unwrap();
    }

    pub fn f64s(v: &[f64]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    pub fn gen(spec: TaskSpec, d: &Path) -> Result<Dataset, TaskError> {
        spec.generate(0, d)
    }

    /// The image shape a dataset of `channels × height × width` images records.
    pub fn image_shape(channels: usize, height: usize, width: usize) -> Option<ImageInfo> {
        Some(ImageInfo {
            channels,
            height,
            width,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion() {
        assert_eq!(f16_to_f64(0x3c00), 1.0);
        assert_eq!(f16_to_f64(0x3555), 0.333251953125);
        assert_eq!(f16_to_f64(0xfc00), f64::NEG_INFINITY);
        assert!(f16_to_f64(0x7e00).is_nan());
        assert_eq!(f16_to_f64(0x8000), 0.0);
    }
}
