//! What the parity tests share: case files in safetensors and the independent JAX script that
//! checks them (`tests/parity/*.py`), run by a Python that has numpy, jax and safetensors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use safetensors::tensor::{Dtype, TensorView};

/// `(name, shape, f64 values)`.
pub type Tensor = (String, Vec<usize>, Vec<f64>);

pub fn save(path: &Path, tensors: &[Tensor], metadata: HashMap<String, String>) {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((name, shape, _), b)| {
            (
                name.clone(),
                TensorView::new(Dtype::F64, shape.clone(), b).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, Some(metadata), path).unwrap();
}

fn python() -> String {
    if let Ok(p) = std::env::var("CLOUDCHAMBER_PYTHON") {
        if !p.is_empty() {
            return p;
        }
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.exists() {
        return venv.to_string_lossy().into_owned();
    }
    "python3".into()
}

const INSTALL: &str =
    "the parity test needs a Python with numpy, jax and safetensors: run `bash scripts/test` \
    (it sets up .venv), or `python3 -m venv .venv && .venv/bin/pip install numpy jax safetensors`, \
    or point $CLOUDCHAMBER_PYTHON at such an interpreter";

/// Runs the JAX script `tests/parity/{script}` on `files`: its exit status and its whole output. Panics (never skips)
/// when the interpreter or its packages are missing.
pub fn check_with_jax(script: &str, files: &[PathBuf]) -> (Option<i32>, String) {
    let py = python();
    let probe = Command::new(&py)
        .args(["-c", "import numpy, jax, safetensors"])
        .output();
    match probe {
        Err(e) => panic!("cannot run Python interpreter `{py}`: {e}\n{INSTALL}"),
        Ok(o) if !o.status.success() => {
            let err = String::from_utf8_lossy(&o.stderr);
            panic!(
                "`{py}` lacks a parity dependency ({}): {INSTALL}",
                err.trim().lines().last().unwrap_or("import failed")
            )
        }
        Ok(_) => {}
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/parity")
        .join(script);
    let out = Command::new(&py)
        .arg(&script)
        .args(files)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{py}`: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}
