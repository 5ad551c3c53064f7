//! Coordinate checks (Yang et al. 2022, "Tensor Programs V", §D and Figure 5): train the same
//! MLP at a ladder of widths for a few steps and compare each layer's coordinate size — the mean
//! |value| of its output, `act_abs` — across widths. The log–log slope of that size against
//! width, per layer and step, says how the parametrization scales: under μP every slope stays
//! near 0; under SP with Adam the later layers' grow with width.
//!
//! Theory beside measurement: an Adam step moves each weight entry by about its learning rate
//! η′ (entrywise-normalized), aligned with the layer's input, so a layer with fan-in `n` changes
//! its output by `~η′·n` (SGD: by `η′·g·|x|²`, `g` the backpropagated gradient). The last hidden
//! layer's change is moreover aligned with the readout's weights (its gradient is `W_outᵀ·g`),
//! so the readout reads it as a sum of `n` same-signed terms: under SP with Adam the readout
//! changes like `n^1.5`, not `n`. With the parametrization's factors
//! ([`crate::nn::parametrization`]) this gives each layer's exponent
//! ([`predicted_update_exponent`]: the hidden layers' from their own update, a lower bound once
//! earlier layers' changes propagate); the activation is its initial size (exponent 0) plus
//! that change.

use crate::error::Error;
use crate::nn::parametrization::Parametrization;
use crate::spec::{ModelSpec, Spec};
use crate::store::MetricRow;
use crate::task::Dataset;

/// The measured sizes and their slopes.
#[derive(Clone, Debug)]
pub struct CoordCheck {
    pub widths: Vec<usize>,
    pub seeds: usize,
    /// Hidden layers; the readout is layer `depth`.
    pub depth: usize,
    /// `abs[t][l][w]`: mean over seeds of `act_abs` of layer `l` at width `widths[w]` in the
    /// forward pass of step `t` (after `t` updates).
    pub abs: Vec<Vec<Vec<f64>>>,
    /// `slope[t][l]`: least-squares slope of ln `abs` against ln width.
    pub slope: Vec<Vec<f64>>,
    /// Per layer: the predicted width exponent of the layer's change after an update.
    pub predicted: Vec<f64>,
    pub parametrization: Parametrization,
    pub adam: bool,
}

/// The width exponent of layer `l`'s change after an update, for `depth` hidden layers
/// (layer `depth` the readout), under `p` with an Adam-like (`adam`) or SGD-like optimizer
/// (derivation in the module doc): Adam — SP (0, 1, …, 1, readout 1.5), NTK (0, ½, …, ½,
/// readout 1), μP (0, …, 0); SGD — SP (−½, ½, …, ½, readout 1), NTK (−½, …, −½, readout 0),
/// μP and mean field (0, …, 0).
pub fn predicted_update_exponent(p: Parametrization, adam: bool, l: usize, depth: usize) -> f64 {
    let (input, hidden, output) = match (p, adam) {
        (Parametrization::Sp, true) => (0.0, 1.0, 1.5),
        (Parametrization::Ntk, true) => (0.0, 0.5, 1.0),
        (Parametrization::Sp, false) => (-0.5, 0.5, 1.0),
        (Parametrization::Ntk, false) => (-0.5, -0.5, 0.0),
        // Mean field is μP in other coordinates (same function, same updates).
        (Parametrization::Mup | Parametrization::MeanField, _) => (0.0, 0.0, 0.0),
    };
    if l == depth {
        output
    } else if l == 0 {
        input
    } else {
        hidden
    }
}

/// Least-squares slope of `ln y` against `ln x`.
pub fn log_slope(x: &[f64], y: &[f64]) -> f64 {
    let lx: Vec<f64> = x.iter().map(|v| v.ln()).collect();
    let ly: Vec<f64> = y.iter().map(|v| v.ln()).collect();
    let n = lx.len() as f64;
    let (mx, my) = (lx.iter().sum::<f64>() / n, ly.iter().sum::<f64>() / n);
    let cov: f64 = lx.iter().zip(&ly).map(|(a, b)| (a - mx) * (b - my)).sum();
    let var: f64 = lx.iter().map(|a| (a - mx) * (a - mx)).sum();
    cov / var
}

/// Runs the check: `spec` (an MLP, or a GPT whose `d_model` takes the widths) at each of `widths`, `seeds` seeds from `spec.seed`, for
/// `steps` updates, recording `act_abs` at steps `0..=steps`. `data(seed)` gives the data.
pub fn run(
    spec: &Spec,
    widths: &[usize],
    steps: u64,
    seeds: usize,
    data: &dyn Fn(u64) -> Result<Dataset, Error>,
) -> Result<CoordCheck, Error> {
    // The MLP's hidden width, or the transformer's d_model; the observable that records
    // `act_abs` for that family.
    let (depth, par, observable, first_is_input) = match &spec.model {
        ModelSpec::Mlp(m) => (m.depth, m.parametrization, "act", true),
        ModelSpec::Gpt { gpt, .. } => (gpt.n_layer, gpt.parametrization, "resid_norm", false),
        ModelSpec::Denoiser { .. } | ModelSpec::Unet { .. } | ModelSpec::Cnn { .. } => {
            return Err(Error::Invalid {
                what: "coordcheck".into(),
                message: "coordinate checks take an MLP or a GPT experiment".into(),
                hint: "e.g. examples/mup-coordcheck.toml or examples/mup-coordcheck-gpt.toml"
                    .into(),
            })
        }
    };
    let steps_n = steps as usize;
    let mut abs = vec![vec![vec![0.0; widths.len()]; depth + 1]; steps_n + 1];
    for s in 0..seeds {
        let seed = spec.seed + s as u64;
        let d = data(seed)?;
        for (wi, &w) in widths.iter().enumerate() {
            let mut sp = spec.clone();
            sp.seed = seed;
            match &mut sp.model {
                ModelSpec::Mlp(m) => m.width = w,
                ModelSpec::Gpt { gpt, .. } => gpt.d_model = w,
                ModelSpec::Denoiser { .. } | ModelSpec::Unet { .. } | ModelSpec::Cnn { .. } => {}
            }
            // One more step than updates: the forward of step t sees t updates.
            sp.train.steps = steps + 1;
            sp.train.eval_every = steps + 1;
            sp.train.target_loss = None;
            sp.observe.log_every = 1;
            sp.observe.sharpness_every = 0;
            sp.observe.observables = Some(vec![observable.to_string()]);
            sp.output.save_weights = false;
            sp.output.save_data = false;
            let mut rows: Vec<MetricRow> = Vec::new();
            crate::train::train(&sp, &d, &mut rows, None, false, &mut |_, _| {})?;
            for r in rows.iter().filter(|r| r.name == "act_abs") {
                let (t, l) = (r.step as usize, r.layer.unwrap_or(0) as usize);
                if t <= steps_n && l <= depth {
                    abs[t][l][wi] += r.value / seeds as f64;
                }
            }
        }
    }
    let xs: Vec<f64> = widths.iter().map(|&w| w as f64).collect();
    let slope = abs
        .iter()
        .map(|layers| layers.iter().map(|ys| log_slope(&xs, ys)).collect())
        .collect();
    let adam = matches!(
        spec.optim.optimizer,
        crate::optim::Optimizer::Adam | crate::optim::Optimizer::Adamw
    );
    // A GPT's first reported layer is a block (its embedding is not reported): every block is
    // a hidden layer of the rules.
    let predicted = (0..=depth)
        .map(|l| {
            if first_is_input || l == depth {
                predicted_update_exponent(par, adam, l, depth)
            } else {
                predicted_update_exponent(par, adam, 1, usize::MAX)
            }
        })
        .collect();
    Ok(CoordCheck {
        widths: widths.to_vec(),
        seeds,
        depth,
        abs,
        slope,
        predicted,
        parametrization: par,
        adam,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_slope_recovers_a_power() {
        let x = [64.0, 128.0, 256.0, 512.0];
        let y: Vec<f64> = x.iter().map(|v: &f64| 3.0 * v.powf(0.5)).collect();
        assert!((log_slope(&x, &y) - 0.5).abs() < 1e-12);
    }
}
