//! The trained transformer's attention on one chosen input, kept with the run: what each head
//! looks at, for the report's attention maps and for analysis in Python.
//!
//! `attention.safetensors` in the run's folder holds `layer.{l}` `[H, T, T]` (f64; row `i` is
//! query `i`'s attention over keys `0..=i`) for the first held-out sample, and the sample itself:
//! `tokens` `[T]` for token tasks, or `x` `[K, d]` and `y` `[K]` for in-context prompts (the
//! model's sequence is then `x_1, y_1, x_2, …`, `T = 2K`).

use std::path::Path;

use safetensors::tensor::Dtype;

use crate::engine::Float;
use crate::error::Error;
use crate::interop;
use crate::model::{Batch, Gpt, Model};
use crate::nn::norm::Mode;

use super::data::Split;

/// The file's name in the run's folder.
pub const FILE: &str = "attention.safetensors";

/// Runs the model on the first sample of `test` and writes its attention to `path` (nothing for
/// a model without attention, or an empty split).
pub(crate) fn save<F: Float>(
    model: &mut dyn Model<F>,
    test: &Split<F>,
    path: &Path,
) -> Result<(), Error> {
    if test.len() == 0 || model.as_any().downcast_ref::<Gpt<F>>().is_none() {
        return Ok(());
    }
    let batch = test.slice(0, 1);
    model.forward(&batch, Mode::Eval);
    let Some(gpt) = model.as_any().downcast_ref::<Gpt<F>>() else {
        return Ok(());
    };
    let (t, h) = (gpt.seq, gpt.dims.h);
    let f64s =
        |v: &mut dyn Iterator<Item = f64>| -> Vec<u8> { v.flat_map(|x| x.to_le_bytes()).collect() };
    let mut tensors = Vec::new();
    for (l, b) in gpt.bufs.iter().enumerate() {
        let att = &b.att[..h * t * t];
        let bytes = f64s(&mut att.iter().map(|v| v.f64()));
        tensors.push((format!("layer.{l}"), Dtype::F64, vec![h, t, t], bytes));
    }
    match batch {
        Batch::Tokens { x, .. } => {
            let bytes = x[..t]
                .iter()
                .flat_map(|&v| (v as i64).to_le_bytes())
                .collect();
            tensors.push(("tokens".into(), Dtype::I64, vec![t], bytes));
        }
        Batch::Prompts {
            x, y, points, dim, ..
        } => {
            let bx = f64s(&mut x[..points * dim].iter().map(|v| v.f64()));
            tensors.push(("x".into(), Dtype::F64, vec![points, dim], bx));
            let by = f64s(&mut y[..points].iter().map(|v| v.f64()));
            tensors.push(("y".into(), Dtype::F64, vec![points], by));
        }
        Batch::Rows { .. } | Batch::Denoise { .. } => {}
    }
    interop::write(tensors, path, None)
}
