//! Checkpoints: everything a run needs to continue exactly where it stopped — parameters (with
//! BatchNorm's running statistics), optimizer moments and step count, the batch order, the RNG
//! that draws the next order, and the loss the divergence test compares against — in one
//! safetensors file written atomically (temporary file + rename). Resuming from it gives
//! bit-identical metrics to a run that was never interrupted.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};

use crate::engine::{Float, Rng};
use crate::error::Error;
use crate::model::Param;
use crate::optim::OptimState;

pub const FILE: &str = "checkpoint.safetensors";

/// The scalar state, stored as the file's JSON metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// The run the checkpoint belongs to (a spec change means a new run, never a resume).
    pub run_id: String,
    /// The next step to run.
    pub step: u64,
    pub optim_t: u64,
    pub cursor: usize,
    pub order_rng: Rng,
    /// Bits of the first batch loss (exact round trip through JSON).
    pub initial_loss_bits: Option<u64>,
    pub last_eval: Option<u64>,
}

fn err(path: &Path, message: impl Into<String>) -> Error {
    Error::Safetensors {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

/// Writes the checkpoint (replacing any earlier one only once the new one is complete).
pub fn save<F: Float>(
    path: &Path,
    state: &State,
    params: &[Param<F>],
    opt: &OptimState<F>,
    order: &[usize],
) -> Result<(), Error> {
    let mut tensors = Vec::new();
    for (i, p) in params.iter().enumerate() {
        tensors.push((
            format!("param.{}", p.name),
            F::SAFETENSORS,
            vec![p.value.len()],
            F::to_le_bytes_vec(&p.value),
        ));
        if let Some(m) = opt.m.get(i) {
            tensors.push((
                format!("optim.m.{}", p.name),
                F::SAFETENSORS,
                vec![m.len()],
                F::to_le_bytes_vec(m),
            ));
        }
        if let Some(v) = opt.v.get(i) {
            tensors.push((
                format!("optim.v.{}", p.name),
                F::SAFETENSORS,
                vec![v.len()],
                F::to_le_bytes_vec(v),
            ));
        }
    }
    let order_bytes = order
        .iter()
        .flat_map(|&i| (i as i64).to_le_bytes())
        .collect();
    tensors.push((
        "state.order".to_string(),
        Dtype::I64,
        vec![order.len()],
        order_bytes,
    ));
    let json = serde_json::to_string(state).map_err(|e| err(path, e.to_string()))?;
    crate::interop::write(
        tensors,
        path,
        Some(HashMap::from([("state".to_string(), json)])),
    )
}

/// Reads only the scalar state (to decide whether and from where to resume).
pub fn peek(path: &Path) -> Result<Option<State>, Error> {
    if !path.exists() {
        return Ok(None);
    }
    let bytes = std::fs::read(path).map_err(Error::io(path.to_path_buf()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).map_err(|e| err(path, e.to_string()))?;
    let json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("state"))
        .ok_or_else(|| err(path, "no checkpoint state in the metadata"))?;
    serde_json::from_str(json)
        .map(Some)
        .map_err(|e| err(path, format!("bad checkpoint state: {e}")))
}

/// Restores parameters, optimizer state and the batch order; returns the scalar state.
pub fn load<F: Float>(
    path: &Path,
    params: &mut [Param<F>],
    opt: &mut OptimState<F>,
    order: &mut Vec<usize>,
) -> Result<State, Error> {
    let state = peek(path)?.ok_or_else(|| err(path, "missing checkpoint"))?;
    let bytes = std::fs::read(path).map_err(Error::io(path.to_path_buf()))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| err(path, e.to_string()))?;
    let read = |name: &str, n: usize| -> Result<Vec<F>, Error> {
        let t = st
            .tensor(name)
            .map_err(|_| err(path, format!("missing tensor `{name}`")))?;
        if t.dtype() != F::SAFETENSORS || t.shape() != [n] {
            return Err(err(
                path,
                format!(
                    "tensor `{name}` has dtype {:?} shape {:?}, expected {:?} [{n}]",
                    t.dtype(),
                    t.shape(),
                    F::SAFETENSORS
                ),
            ));
        }
        Ok(F::from_le_bytes_slice(t.data()))
    };
    for (i, p) in params.iter_mut().enumerate() {
        p.value = read(&format!("param.{}", p.name), p.value.len())?;
        if let Some(m) = opt.m.get_mut(i) {
            *m = read(&format!("optim.m.{}", p.name), m.len())?;
        }
        if let Some(v) = opt.v.get_mut(i) {
            *v = read(&format!("optim.v.{}", p.name), v.len())?;
        }
    }
    opt.t = state.optim_t;
    let t = st
        .tensor("state.order")
        .map_err(|_| err(path, "missing tensor `state.order`"))?;
    let restored: Vec<usize> = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap_or([0; 8])) as usize)
        .collect();
    if restored.len() != order.len() {
        return Err(err(
            path,
            format!(
                "the batch order has {} entries, the data {}",
                restored.len(),
                order.len()
            ),
        ));
    }
    *order = restored;
    Ok(state)
}
