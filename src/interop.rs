//! Weights and data in and out as safetensors, in PyTorch conventions (Linear weight
//! `[out, in]`, names `layers.{i}.weight`), so a researcher can load them with
//! `safetensors.torch.load_file` and `model.load_state_dict`.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::engine::Float;
use crate::error::Error;
use crate::model::Param;
use crate::task::Dataset;

pub(crate) fn write(
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    path: &Path,
    metadata: Option<HashMap<String, String>>,
) -> Result<(), Error> {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            TensorView::new(*dtype, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(|e| Error::Safetensors {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
        })
        .collect::<Result<_, _>>()?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(Error::io(dir.to_path_buf()))?;
    }
    // Write to a temporary file and rename, so a killed run never leaves half a file.
    let tmp = path.with_extension("safetensors.tmp");
    safetensors::serialize_to_file(views, metadata, &tmp).map_err(|e| write_error(e, &tmp))?;
    std::fs::rename(&tmp, path).map_err(Error::io(path.to_path_buf()))
}

/// A failed safetensors write as the error it is: a full disk or a read-only folder is an I/O
/// failure, with an I/O hint; anything else is about the file's content.
fn write_error(e: safetensors::SafeTensorError, path: &Path) -> Error {
    match e {
        safetensors::SafeTensorError::IoError(source) => Error::Io {
            path: path.to_path_buf(),
            source,
        },
        e => Error::Safetensors {
            path: path.to_path_buf(),
            message: e.to_string(),
        },
    }
}

/// Saves every parameter (and BatchNorm running statistics) under its PyTorch name.
pub fn save_params<F: Float>(params: &[Param<F>], path: &Path) -> Result<(), Error> {
    let tensors = params
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                F::SAFETENSORS,
                p.shape.clone(),
                F::to_le_bytes_vec(&p.value),
            )
        })
        .collect();
    let meta = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (
            "producer".to_string(),
            format!("cloudchamber {}", env!("CARGO_PKG_VERSION")),
        ),
    ]);
    write(tensors, path, Some(meta))
}

/// Saves `train.x`, `train.y`, `test.x`, `test.y`: feature rows as f64 `[n, d]` (class targets
/// as int64 `[n]`, the dtype `torch.nn.CrossEntropyLoss` expects); token windows as int64
/// `[n, T]`, with untrained targets as −100 (`CrossEntropyLoss`'s default `ignore_index`).
pub fn save_dataset(data: &Dataset, path: &Path) -> Result<(), Error> {
    let classes = matches!(data.target, crate::task::Target::Classes { .. });
    let tokens = data.sequence.as_ref();
    // Targets without a loss are written as −100.
    let int64 = |a: &ndarray::Array2<f64>, is_y: bool| -> Vec<u8> {
        a.indexed_iter()
            .flat_map(|((_, t), &v)| {
                let trained = !is_y || tokens.is_none_or(|s| s.trained.at(t, a.ncols()));
                (if trained { v as i64 } else { -100 }).to_le_bytes()
            })
            .collect()
    };
    let mut tensors = Vec::new();
    for (name, a) in [
        ("train.x", &data.train_x),
        ("train.y", &data.train_y),
        ("test.x", &data.test_x),
        ("test.y", &data.test_y),
    ] {
        let is_y = name.ends_with(".y");
        if tokens.is_some() {
            let shape = vec![a.nrows(), a.ncols()];
            tensors.push((name.to_string(), Dtype::I64, shape, int64(a, is_y)));
        } else if is_y && classes {
            tensors.push((
                name.to_string(),
                Dtype::I64,
                vec![a.nrows()],
                int64(a, false),
            ));
        } else {
            let flat: Vec<f64> = a.iter().copied().collect();
            tensors.push((
                name.to_string(),
                Dtype::F64,
                vec![a.nrows(), a.ncols()],
                f64::to_le_bytes_vec(&flat),
            ));
        }
    }
    write(tensors, path, None)
}

/// Loads tensors as f64 by name (any float dtype), for tests and the parity check.
pub fn load_f64(path: &Path) -> Result<HashMap<String, (Vec<usize>, Vec<f64>)>, Error> {
    let bytes = std::fs::read(path).map_err(Error::io(path.to_path_buf()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| Error::Safetensors {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let data = match view.dtype() {
            Dtype::F32 => f32::from_le_bytes_slice(view.data())
                .into_iter()
                .map(|v| v as f64)
                .collect(),
            Dtype::F64 => f64::from_le_bytes_slice(view.data()),
            Dtype::I64 => view
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as f64)
                .collect(),
            other => {
                return Err(Error::Safetensors {
                    path: path.to_path_buf(),
                    message: format!(
                        "tensor `{name}` has dtype {other:?}; expected F32, F64 or I64"
                    ),
                });
            }
        };
        out.insert(name, (view.shape().to_vec(), data));
    }
    Ok(out)
}

/// Overwrites parameter values from a safetensors file (names and shapes must match).
pub fn load_params<F: Float>(params: &mut [Param<F>], path: &Path) -> Result<(), Error> {
    let mut tensors = load_f64(path)?;
    for p in params.iter_mut() {
        let (shape, data) = tensors.remove(&p.name).ok_or_else(|| Error::Safetensors {
            path: path.to_path_buf(),
            message: format!("missing tensor `{}`", p.name),
        })?;
        if shape != p.shape {
            return Err(Error::Safetensors {
                path: path.to_path_buf(),
                message: format!(
                    "tensor `{}` has shape {shape:?}, the model expects {:?}",
                    p.name, p.shape
                ),
            });
        }
        for (v, d) in p.value.iter_mut().zip(data) {
            *v = F::of(d);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// A write that fails for lack of space (issue 15, item 15) is an I/O error whose hint says
    /// to free space, not one about safetensors files. /dev/full fails every write with ENOSPC.
    #[test]
    fn a_full_disk_is_an_io_error_with_an_io_hint() {
        let enospc = std::fs::write("/dev/full", [0u8; 16]).unwrap_err();
        let e = super::write_error(
            safetensors::SafeTensorError::IoError(enospc),
            std::path::Path::new("runs/x/checkpoint.safetensors.tmp"),
        );
        assert!(matches!(e, crate::Error::Io { .. }), "{e:?}");
        assert!(e.hints()[0].contains("free some space"), "{:?}", e.hints());
    }
}
