//! safetensors files: named tensors in one file, read with the `safetensors` crate. The default
//! names (`train.x`, `train.y`, `test.x`, `test.y`) are those of the lab's own dataset export.

use std::path::{Path, PathBuf};

use ndarray::Array2;

use serde::{Deserialize, Serialize};

use super::{
    assemble, parse_err, preview, to_matrix, validate_common, Common, Elem, FileTask, Labels,
    NdArray, Part,
};
use crate::task::{invalid, key, read_bytes, resolve, Dataset, TaskError};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::files::test_util::*;
    use crate::task::{matrix, Target, TaskSpec};

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
}
