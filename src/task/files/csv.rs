//! CSV files: one row per example, numeric input columns, target column(s) chosen by name or
//! index. Quoted fields are understood (RFC 4180, without line breaks inside quotes); a UTF-8
//! byte-order mark is skipped; blank lines are ignored. Classification labels may be integers or
//! names.

use std::borrow::Cow;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    assemble, parse_err, preview, shape_err, validate_common, Common, FileTask, Labels, Part,
};
use crate::task::{invalid, key, matrix, read_bytes, resolve, Dataset, TaskError};

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
                    FileTask::Classification if fields[j].is_empty() => {
                        return Err(TaskError::Label {
                            key: key("csv", "target"),
                            path: path.clone(),
                            msg: format!("line {line_no}: the label is missing"),
                            hint: "drop unlabelled rows before training".into(),
                        });
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::files::test_util::*;
    use crate::task::{Target, TaskSpec};

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
        // Inferred: 4 classes for 2 examples looks like a regression column.
        let err = gen(
            TaskSpec::Csv(csv_spec("range.csv", FileTask::Classification)),
            d.path(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TaskError::Label { msg, .. } if msg.contains("4 classes for 2 examples")),
            "{err}"
        );
        write(d.path(), "one.csv", "a,y\n1,cat\n2,cat\n");
        let err = gen(
            TaskSpec::Csv(csv_spec("one.csv", FileTask::Classification)),
            d.path(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TaskError::Label { msg, .. } if msg.contains("single class")),
            "{err}"
        );
        write(d.path(), "unlabelled.csv", "a,y\n1,cat\n2,\n");
        let err = gen(
            TaskSpec::Csv(csv_spec("unlabelled.csv", FileTask::Classification)),
            d.path(),
        )
        .unwrap_err();
        assert!(
            matches!(&err, TaskError::Label { msg, .. } if msg == "line 3: the label is missing"),
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
    }
}
