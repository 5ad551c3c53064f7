//! The U-Net's own observables, per conv → norm → activation stage (`layer` = the stage's
//! index in forward order: `enc.0.act1`, `enc.0.act2`, `enc.1.act1`, …, then the decoder from
//! the coarsest level), over the step's batch.

use crate::engine::ops;
use crate::engine::Float;
use crate::model::Unet;
use crate::store::MetricRow;

use super::{row, Ctx, Observable};

fn unet<'a, F: Float>(c: &Ctx<'a, F>) -> &'a Unet<F> {
    c.model
        .as_any()
        .downcast_ref::<Unet<F>>()
        .expect("registered for the U-Net only")
}

/// Per stage: `act_mean`, `act_std`, `act_abs` of its output (the rows the MLP's `act` writes,
/// same meaning); `chan_mean_spread`, the standard deviation over channels of each channel's
/// mean (how far the channels drift apart, which BatchNorm resets and group and layer norms do
/// not); and for activations with an inactive region (the ReLU family: dead; tanh, sigmoid:
/// saturated) `dead_channels` / `saturated_channels`, the fraction of channels inactive at every
/// pixel of every image (the channel analogue of `dead_units`).
pub(super) struct Channels;
impl<F: Float> Observable<F> for Channels {
    fn name(&self) -> &'static str {
        "channels"
    }
    fn observe(&self, c: &Ctx<'_, F>, out: &mut Vec<MetricRow>) {
        let m = unet(c);
        let act = m.activation();
        for (l, (_, h, ch, plane)) in m.stages().into_iter().enumerate() {
            if h.is_empty() {
                continue;
            }
            let moments = ops::moments(h);
            out.push(row(c.step, Some(l), "act_mean", moments.mean));
            out.push(row(c.step, Some(l), "act_std", moments.std));
            out.push(row(c.step, Some(l), "act_abs", moments.mean_abs));
            let n = h.len() / (ch * plane);
            let chan_means: Vec<f64> = (0..ch)
                .map(|k| {
                    (0..n)
                        .map(|i| {
                            h[(i * ch + k) * plane..(i * ch + k + 1) * plane]
                                .iter()
                                .map(|v| v.f64())
                                .sum::<f64>()
                        })
                        .sum::<f64>()
                        / (n * plane) as f64
                })
                .collect();
            let mu = chan_means.iter().sum::<f64>() / ch as f64;
            let spread =
                (chan_means.iter().map(|v| (v - mu) * (v - mu)).sum::<f64>() / ch as f64).sqrt();
            out.push(row(c.step, Some(l), "chan_mean_spread", spread));
            if let Some(kind) = act.inactive_kind() {
                let inactive = (0..ch)
                    .filter(|&k| {
                        (0..n).all(|i| {
                            h[(i * ch + k) * plane..(i * ch + k + 1) * plane]
                                .iter()
                                .all(|v| act.is_inactive(v.f64()))
                        })
                    })
                    .count();
                let name = match kind {
                    crate::nn::activation::InactiveKind::Dead => "dead_channels",
                    crate::nn::activation::InactiveKind::Saturated => "saturated_channels",
                };
                out.push(row(c.step, Some(l), name, inactive as f64 / ch as f64));
            }
        }
    }
}
