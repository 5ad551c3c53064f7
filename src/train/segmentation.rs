//! What the loop adds for segmentation: overlap scores per class on the held-out images at each
//! evaluation, a baseline to read them against, and the final predictions for the report.
//!
//! Rows (foreground classes `k = 1 … K−1`; class 0 is the background):
//! - `dice_{k}`, `iou_{k}` at every evaluation: Dice `2TP/(2TP + FP + FN)` and IoU `TP/(TP + FP
//!   + FN)` of class `k` in each held-out image, averaged over images. An image where class `k`
//!   is absent from both the mask and the prediction scores 1 (nothing to find, nothing
//!   found); absent from the mask but predicted, 0. `dice` and `iou`: their mean over the
//!   foreground classes. Pixel accuracy is `test_acc`.
//! - At step 0, for two classes: `threshold_dice`, `threshold_iou` and `threshold_value`, the
//!   best single intensity threshold (pixels above it — or below, whichever scores higher —
//!   called foreground), chosen on the held-out images themselves among 128 quantiles of their
//!   mean-over-channels intensity: a baseline as favourable to thresholding as it can be.
//!
//! `segmentation.safetensors` (artifacts) holds the first held-out images (`images` `[m, c, h,
//! w]`), their masks and the trained model's predicted classes (`masks`, `predictions` `[m, h,
//! w]`) for the report's side-by-side figure.

use std::path::Path;

use safetensors::Dtype;

use crate::engine::Float;
use crate::error::Error;
use crate::model::{Batch, Model};
use crate::nn::norm::Mode;
use crate::nn::seg_loss;
use crate::store::MetricRow;
use crate::task::{Dataset, Target};

use super::data::Split;
use super::metric;

/// The artifact's file name.
pub const FILE: &str = "segmentation.safetensors";
/// Held-out images kept for the report's figure.
const SHOWN: usize = 8;

pub(crate) struct SegmentationReport {
    classes: usize,
    channels: usize,
    plane: usize,
    /// The last evaluation's predicted classes of the first [`SHOWN`] held-out images.
    shown: Vec<u8>,
}

/// Per-image overlap counts of one class.
#[derive(Clone, Copy, Default)]
struct Counts {
    tp: usize,
    fp: usize,
    fn_: usize,
}

impl Counts {
    /// (Dice, IoU) with the empty-mask convention of the module doc.
    fn scores(self) -> (f64, f64) {
        let den = 2 * self.tp + self.fp + self.fn_;
        if den == 0 {
            return (1.0, 1.0);
        }
        (
            2.0 * self.tp as f64 / den as f64,
            self.tp as f64 / (self.tp + self.fp + self.fn_) as f64,
        )
    }
}

impl SegmentationReport {
    pub(crate) fn new(data: &Dataset) -> Option<Self> {
        let (Target::Masks { n_classes }, Some(img)) = (data.target, data.image) else {
            return None;
        };
        Some(SegmentationReport {
            classes: n_classes,
            channels: img.channels,
            plane: img.height * img.width,
            shown: Vec::new(),
        })
    }

    /// Step 0: the intensity-threshold baseline (two classes).
    pub(crate) fn start(&self, data: &Dataset, rows: &mut Vec<MetricRow>) {
        if self.classes != 2 || data.n_test() == 0 {
            return;
        }
        let (n, c, p) = (data.n_test(), self.channels, self.plane);
        let x = data.test_x.as_slice().expect("datasets are contiguous");
        let y = data.test_y.as_slice().expect("datasets are contiguous");
        let intensity: Vec<f64> = (0..n * p)
            .map(|j| {
                let (i, q) = (j / p, j % p);
                (0..c).map(|ch| x[(i * c + ch) * p + q]).sum::<f64>() / c as f64
            })
            .collect();
        let mut sorted = intensity.clone();
        sorted.sort_by(f64::total_cmp);
        let mut best = (f64::NEG_INFINITY, 0.0, 0.0);
        for k in 1..128 {
            let t = sorted[k * (sorted.len() - 1) / 128];
            for above in [true, false] {
                let (mut dice, mut iou) = (0.0, 0.0);
                for i in 0..n {
                    let mut cnt = Counts::default();
                    for q in 0..p {
                        let pred = (intensity[i * p + q] > t) == above;
                        let truth = y[i * p + q] >= 0.5;
                        match (pred, truth) {
                            (true, true) => cnt.tp += 1,
                            (true, false) => cnt.fp += 1,
                            (false, true) => cnt.fn_ += 1,
                            (false, false) => {}
                        }
                    }
                    let (d, j) = cnt.scores();
                    dice += d;
                    iou += j;
                }
                if dice / n as f64 > best.0 {
                    best = (dice / n as f64, iou / n as f64, t);
                }
            }
        }
        rows.push(metric(0, "threshold_dice", best.0));
        rows.push(metric(0, "threshold_iou", best.1));
        rows.push(metric(0, "threshold_value", best.2));
    }

    /// After an evaluation at `step`: Dice and IoU per foreground class over the held-out
    /// images (eval mode, in chunks of the model's capacity).
    pub(crate) fn after_eval<F: Float>(
        &mut self,
        step: u64,
        model: &mut dyn Model<F>,
        test: &Split<F>,
        rows: &mut Vec<MetricRow>,
    ) {
        let (n, cap, k) = (test.len(), model.capacity(), self.classes);
        if n == 0 {
            return;
        }
        let (mut dice, mut iou) = (vec![0.0; k], vec![0.0; k]);
        self.shown.clear();
        let mut start = 0;
        while start < n {
            let b = cap.min(n - start);
            let batch = test.slice(start, b);
            model.forward(&batch, Mode::Eval);
            let Batch::Rows { y, .. } = batch else { return };
            let Some((z, ch, plane)) = model.segmentation() else {
                return;
            };
            for i in 0..b {
                let mut counts = vec![Counts::default(); k];
                for q in 0..plane {
                    let pred = seg_loss::predicted(ch, plane, z, i, q);
                    let truth = y[i * plane + q].f64() as usize;
                    if start + i < SHOWN {
                        self.shown.push(pred as u8);
                    }
                    if pred == truth {
                        counts[pred].tp += 1;
                    } else {
                        if pred < k {
                            counts[pred].fp += 1;
                        }
                        if truth < k {
                            counts[truth].fn_ += 1;
                        }
                    }
                }
                for c in 1..k {
                    let (d, j) = counts[c].scores();
                    dice[c] += d;
                    iou[c] += j;
                }
            }
            start += b;
        }
        let (mut md, mut mi) = (0.0, 0.0);
        for c in 1..k {
            let (d, j) = (dice[c] / n as f64, iou[c] / n as f64);
            rows.push(metric(step, &format!("dice_{c}"), d));
            rows.push(metric(step, &format!("iou_{c}"), j));
            md += d;
            mi += j;
        }
        rows.push(metric(step, "dice", md / (k - 1) as f64));
        rows.push(metric(step, "iou", mi / (k - 1) as f64));
    }

    /// Writes the first held-out images, their masks and the last evaluation's predictions.
    pub(crate) fn save(&self, data: &Dataset, path: &Path) -> Result<(), Error> {
        let m = SHOWN.min(data.n_test());
        let img = data.image.expect("a segmentation dataset has images");
        let x = data.test_x.as_slice().expect("datasets are contiguous");
        let y = data.test_y.as_slice().expect("datasets are contiguous");
        let (c, p) = (img.channels, self.plane);
        let bytes =
            |v: &[f64]| -> Vec<u8> { v.iter().flat_map(|a| (*a as f32).to_le_bytes()).collect() };
        let pred: Vec<f64> = self.shown.iter().take(m * p).map(|&v| v as f64).collect();
        let tensors = vec![
            (
                "images".to_string(),
                Dtype::F32,
                vec![m, c, img.height, img.width],
                bytes(&x[..m * c * p]),
            ),
            (
                "masks".to_string(),
                Dtype::F32,
                vec![m, img.height, img.width],
                bytes(&y[..m * p]),
            ),
            (
                "predictions".to_string(),
                Dtype::F32,
                vec![pred.len() / p.max(1), img.height, img.width],
                bytes(&pred),
            ),
        ];
        crate::interop::write(tensors, path, None)
    }
}
