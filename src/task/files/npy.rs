//! NumPy `.npy` files (format versions 1.0–3.0), parsed here: little-endian bool, integer and
//! float (f2, f4, f8) dtypes in C order. Big-endian, Fortran-order, structured and object
//! arrays are refused with a hint saying how to re-save them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{
    assemble, element_count, parse_err, to_matrix, validate_common, Common, Elem, Fail, FileTask,
    Labels, NdArray, Part,
};
use crate::task::{invalid, key, read_bytes, resolve, Dataset, TaskError};

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

const NPY_SAVE_HINT: &str =
    "save a plain numeric array: np.save(path, np.ascontiguousarray(a, dtype='<f8'))";

/// Parses NPY bytes (format v1–v3). Errors are `(message, hint)`.
fn parse_npy(b: &[u8]) -> Result<NdArray, Fail> {
    parse_npy_typed(b).map(|(a, _)| a)
}

/// [`parse_npy`], with the element type the file stored (the images task scales 8- and 16-bit
/// pixels by it).
pub(super) fn parse_npy_typed(b: &[u8]) -> Result<(NdArray, Elem), Fail> {
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
    Ok((
        NdArray {
            shape,
            data: elem.decode(data),
        },
        elem,
    ))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::files::test_util::*;
    use crate::task::{matrix, Target, TaskSpec};

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
    fn spec_validation() {
        let spec = || NpySpec {
            train_x: "x".into(),
            train_y: "y".into(),
            test_x: None,
            test_y: None,
            test_fraction: None,
            task: FileTask::Regression,
            n_classes: None,
            n_train: None,
            n_test: None,
        };
        let cases = [
            (
                NpySpec {
                    test_x: Some("tx".into()),
                    ..spec()
                },
                "task.npy.test_y",
            ),
            (
                NpySpec {
                    test_y: Some("ty".into()),
                    ..spec()
                },
                "task.npy.test_x",
            ),
            (
                NpySpec {
                    test_x: Some("tx".into()),
                    test_y: Some("ty".into()),
                    test_fraction: Some(0.2),
                    ..spec()
                },
                "task.npy.test_fraction",
            ),
            (
                NpySpec {
                    test_fraction: Some(0.0),
                    ..spec()
                },
                "task.npy.test_fraction",
            ),
            (
                NpySpec {
                    n_classes: Some(2),
                    ..spec()
                },
                "task.npy.n_classes",
            ),
        ];
        for (s, key) in cases {
            let err = TaskSpec::Npy(s).validate().unwrap_err();
            assert!(matches!(err, TaskError::Invalid { .. }), "{err:?}");
            assert_eq!(err.key(), Some(key), "{err}");
        }
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
}
