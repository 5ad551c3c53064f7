//! The figures of a generative (denoiser) run: samples beside data, sampling trajectories, the
//! loss and the excess over the ideal denoiser per noise level over training, and sample quality
//! over training against the prior, data and ideal-denoiser references (`train::generative`
//! records them; `samples.safetensors` holds the points).

use std::collections::HashMap;

use super::figures::{final_value, mean_stderr, Config, RunData};
use super::{Figure, LineChart, Series, SeriesColor, Stroke};
use crate::store::Store;
use crate::Error;

/// Points `[rows, n]` as plotted: the two coordinates of 2-D data, else the projections on the
/// reference data's two leading principal axes.
pub struct Projection {
    pub axes: Option<[Vec<f64>; 2]>,
    pub mean: Vec<f64>,
    pub n: usize,
}

impl Projection {
    /// From the reference data (`[rows, n]`): identity for n ≤ 2, PCA otherwise (power
    /// iteration with deflation on the covariance, which only `Xᵀ(Xv)` products touch).
    pub fn fit(data: &[f64], n: usize) -> Self {
        let rows = (data.len() / n.max(1)).max(1);
        let mut mean = vec![0.0; n];
        for r in data.chunks_exact(n) {
            for (m, v) in mean.iter_mut().zip(r) {
                *m += v / rows as f64;
            }
        }
        if n <= 2 {
            return Projection {
                axes: None,
                mean,
                n,
            };
        }
        let cov_times = |v: &[f64]| -> Vec<f64> {
            let mut out = vec![0.0; n];
            for r in data.chunks_exact(n) {
                let c: f64 = r
                    .iter()
                    .zip(&mean)
                    .zip(v)
                    .map(|((a, m), b)| (a - m) * b)
                    .sum();
                for ((o, a), m) in out.iter_mut().zip(r).zip(&mean) {
                    *o += c * (a - m);
                }
            }
            out
        };
        let mut axes: Vec<Vec<f64>> = Vec::new();
        for k in 0..2 {
            let mut v: Vec<f64> = (0..n)
                .map(|i| ((i * 7 + k * 13 + 1) as f64).sin())
                .collect();
            for _ in 0..100 {
                let mut w = cov_times(&v);
                for a in &axes {
                    let d: f64 = w.iter().zip(a).map(|(x, y)| x * y).sum();
                    for (x, y) in w.iter_mut().zip(a) {
                        *x -= d * y;
                    }
                }
                let norm = w
                    .iter()
                    .map(|x| x * x)
                    .sum::<f64>()
                    .sqrt()
                    .max(f64::MIN_POSITIVE);
                v = w.into_iter().map(|x| x / norm).collect();
            }
            axes.push(v);
        }
        let [a, b] = [axes[0].clone(), axes[1].clone()];
        Projection {
            axes: Some([a, b]),
            mean,
            n,
        }
    }

    pub fn point(&self, r: &[f64]) -> (f64, f64) {
        match &self.axes {
            None => (r[0], if self.n > 1 { r[1] } else { 0.0 }),
            Some([a, b]) => {
                let dot = |ax: &[f64]| -> f64 {
                    r.iter()
                        .zip(&self.mean)
                        .zip(ax)
                        .map(|((x, m), w)| (x - m) * w)
                        .sum()
                };
                (dot(a), dot(b))
            }
        }
    }

    fn labels(&self) -> (&'static str, &'static str) {
        match self.axes {
            None => ("x₁", "x₂"),
            Some(_) => ("principal axis 1 of the data", "principal axis 2"),
        }
    }
}

type Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

fn dots(label: &str, pts: Vec<(f64, f64)>, color: usize) -> Series {
    Series {
        label: label.into(),
        points: pts,
        stroke: Stroke::Dots,
        color: SeriesColor::Palette(color),
        ..Series::default()
    }
}

/// Held-out data, the trained model's samples and the ideal denoiser's, side by side in one
/// scatter (the same projection for all).
pub fn samples_scatter(t: &Tensors) -> Option<Figure> {
    let (shape, data) = t.get("reference")?;
    let n = *shape.get(1)?;
    let proj = Projection::fit(data, n);
    let pts = |v: &[f64]| -> Vec<(f64, f64)> { v.chunks_exact(n).map(|r| proj.point(r)).collect() };
    let mut series = vec![dots("held-out data", pts(data), 6)];
    if let Some((_, s)) = t.get("samples") {
        series.push(dots("trained denoiser's samples", pts(s), 0));
    }
    if let Some((_, s)) = t.get("ideal") {
        series.push(dots("ideal denoiser's samples", pts(s), 1));
    }
    let (xl, yl) = proj.labels();
    Some(Figure::Lines(LineChart {
        title: "Samples beside data".into(),
        x_label: xl.into(),
        y_label: yl.into(),
        series,
        ..LineChart::default()
    }))
}

/// The kept sampling trajectories (`samples_trajectory` `[levels, T, n]`) from the level where
/// they reach the data's scale down to σ = 0, projected, over the data.
pub fn trajectories(t: &Tensors, which: &str) -> Option<Figure> {
    let (shape, data) = t.get("reference")?;
    let n = *shape.get(1)?;
    let (tshape, traj) = t.get(&format!("{which}_trajectory"))?;
    let (_, sigmas) = t.get("sigmas")?;
    let &[levels, k, _] = tshape.as_slice() else {
        return None;
    };
    let proj = Projection::fit(data, n);
    // Start where σ is within 3× the data's spread: the prior's far tail would dwarf the rest.
    let spread = {
        let (a, b): (Vec<f64>, Vec<f64>) = data.chunks_exact(n).map(|r| proj.point(r)).unzip();
        let sd = |v: &[f64]| {
            let m = v.iter().sum::<f64>() / v.len().max(1) as f64;
            (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len().max(1) as f64).sqrt()
        };
        sd(&a).max(sd(&b))
    };
    let first = sigmas.iter().position(|&s| s <= 3.0 * spread).unwrap_or(0);
    let mut series = vec![dots(
        "held-out data",
        data.chunks_exact(n)
            .take(500)
            .map(|r| proj.point(r))
            .collect(),
        6,
    )];
    for j in 0..k {
        let pts: Vec<(f64, f64)> = (first..levels)
            .map(|l| proj.point(&traj[(l * k + j) * n..(l * k + j + 1) * n]))
            .collect();
        series.push(Series {
            label: if j == 0 {
                "trajectories (dot: σ = 0)".into()
            } else {
                String::new()
            },
            points: pts.clone(),
            color: SeriesColor::Palette(0),
            ..Series::default()
        });
        if let Some(&end) = pts.last() {
            series.push(Series {
                points: vec![end],
                stroke: Stroke::Hidden,
                color: SeriesColor::Palette(3),
                ..Series::default()
            });
        }
    }
    let (xl, yl) = proj.labels();
    Some(Figure::Lines(LineChart {
        title: format!(
            "Sampling trajectories ({which}), from σ = {}",
            super::axis::pretty_value(&sigmas.get(first).copied().unwrap_or(f64::NAN).to_string())
        ),
        x_label: xl.into(),
        y_label: yl.into(),
        series,
        ..LineChart::default()
    }))
}

/// The levels `sigma_level_l{l}` in order.
fn levels(d: &RunData) -> Vec<(usize, f64)> {
    let mut out: Vec<(usize, f64)> = d
        .series
        .keys()
        .filter_map(|(n, _)| n.strip_prefix("sigma_level_l")?.parse().ok())
        .filter_map(|l: usize| Some((l, d.get(&format!("sigma_level_l{l}"), None)?[0].1)))
        .collect();
    out.sort_by_key(|p| p.0);
    out
}

/// `name_l{l}` against σ at each evaluation (one line per evaluation, dark: early, light: late),
/// with the ideal denoiser's loss (dashed) when known.
pub fn per_sigma(d: &RunData, name: &str, title: &str, y_label: &str) -> Option<Figure> {
    let lv = levels(d);
    if lv.is_empty() {
        return None;
    }
    let steps: Vec<f64> = d
        .get(&format!("{name}_l0"), None)?
        .iter()
        .map(|p| p.0)
        .collect();
    let ne = steps.len();
    let mut series: Vec<Series> = steps
        .iter()
        .enumerate()
        .map(|(i, &step)| Series {
            label: if i == 0 || i + 1 == ne {
                format!("step {step}")
            } else {
                String::new()
            },
            points: lv
                .iter()
                .filter_map(|&(l, s)| {
                    let v = d.get(&format!("{name}_l{l}"), None)?;
                    v.iter().find(|p| p.0 == step).map(|p| (s, p.1))
                })
                .collect(),
            markers: true,
            color: SeriesColor::Ordered(i, ne),
            ..Series::default()
        })
        .collect();
    if name == "sigma_loss" {
        let ideal: Vec<(f64, f64)> = lv
            .iter()
            .filter_map(|&(l, s)| Some((s, d.get(&format!("sigma_ideal_l{l}"), None)?[0].1)))
            .collect();
        if !ideal.is_empty() {
            series.push(Series {
                label: "ideal denoiser".into(),
                points: ideal,
                stroke: Stroke::Dashed,
                color: SeriesColor::Palette(1),
                ..Series::default()
            });
        }
    }
    Some(Figure::Lines(LineChart {
        title: title.into(),
        x_label: "noise level σ".into(),
        y_label: y_label.into(),
        x_log: true,
        y_log: true,
        series,
        ..LineChart::default()
    }))
}

/// `sample_{metric}` over training, with the prior's, the held-out data's and the ideal
/// denoiser's scores as flat references.
pub fn quality_over_training(d: &RunData, metric: &str) -> Option<Figure> {
    let s = d.get(&format!("sample_{metric}"), None)?;
    let (x0, x1) = (s.first()?.0, s.last()?.0.max(s.first()?.0 + 1.0));
    let mut series = vec![Series {
        label: "trained denoiser's samples".into(),
        points: s.to_vec(),
        markers: true,
        color: SeriesColor::Palette(0),
        ..Series::default()
    }];
    for (who, label, color) in [
        ("prior", "prior (nothing learned)", 3),
        ("ideal", "ideal denoiser", 1),
        ("data", "training data (estimator floor)", 6),
    ] {
        if let Some(v) = d.get(&format!("{who}_{metric}"), None) {
            series.push(Series {
                label: label.into(),
                points: vec![(x0, v[0].1), (x1, v[0].1)],
                stroke: Stroke::Dashed,
                color: SeriesColor::Palette(color),
                ..Series::default()
            });
        }
    }
    // Log scale when the model's scores are positive; a reference estimate ≤ 0 (an unbiased
    // estimator at its floor) is then left out.
    let log = series[0]
        .points
        .iter()
        .all(|p| !p.1.is_finite() || p.1 > 0.0);
    if log {
        series.retain(|s| s.points.iter().all(|p| !p.1.is_finite() || p.1 > 0.0));
    }
    Some(Figure::Lines(LineChart {
        title: format!("Sample quality: {metric}"),
        x_label: "step".into(),
        y_label: metric.into(),
        y_log: log,
        series,
        ..LineChart::default()
    }))
}

/// The swept key that is PFGM++'s augmented dimension.
pub const AUG_DIM_KEY: &str = "model.denoiser.aug_dim";

/// Final `metric` against D for a sweep over `model.denoiser.aug_dim` alone (others may vary
/// too: one line per value of the rest), mean ± stderr over seeds, log D; D = ∞ (diffusion) is
/// drawn past the largest finite D and named in the legend. `None` unless D is swept.
pub fn versus_d(store: &Store, configs: &[Config], metric: &str) -> Result<Option<Figure>, Error> {
    let Some(k) = configs
        .first()
        .and_then(|c| c.values.iter().position(|(key, _)| key == AUG_DIM_KEY))
    else {
        return Ok(None);
    };
    let d_of = |c: &Config| -> f64 { c.values[k].1.parse::<f64>().unwrap_or(f64::NAN) };
    let max_finite = configs
        .iter()
        .map(d_of)
        .filter(|d| d.is_finite())
        .fold(f64::NAN, f64::max);
    if !max_finite.is_finite() {
        return Ok(None);
    }
    let inf_at = 4.0 * max_finite;
    // One line per combination of the other swept values.
    // (label, [(D, mean, stderr)]).
    type Line = (String, Vec<(f64, f64, f64)>);
    let mut lines: Vec<Line> = Vec::new();
    for c in configs {
        let rest: Vec<String> = c
            .values
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != k)
            .map(|(_, (key, v))| format!("{}={v}", super::figures::short_key(key)))
            .collect();
        let label = if rest.is_empty() {
            metric.to_string()
        } else {
            rest.join(", ")
        };
        let mut vals = Vec::new();
        for id in &c.runs {
            let v = final_value(store, id, metric)?;
            if v.is_finite() {
                vals.push(v);
            }
        }
        if vals.is_empty() {
            continue;
        }
        let (m, se) = mean_stderr(&vals);
        let d = d_of(c);
        let x = if d.is_infinite() { inf_at } else { d };
        match lines.iter_mut().find(|l| l.0 == label) {
            Some(l) => l.1.push((x, m, se)),
            None => lines.push((label, vec![(x, m, se)])),
        }
    }
    let n = lines.len();
    let series: Vec<Series> = lines
        .into_iter()
        .enumerate()
        .map(|(i, (label, mut pts))| {
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label,
                points: pts.iter().map(|p| (p.0, p.1)).collect(),
                band: pts.iter().map(|p| (p.0, p.1 - p.2, p.1 + p.2)).collect(),
                markers: true,
                color: if n > 1 {
                    SeriesColor::Ordered(i, n)
                } else {
                    SeriesColor::Palette(0)
                },
                ..Series::default()
            }
        })
        .collect();
    let log = series.iter().all(|s| s.points.iter().all(|p| p.1 > 0.0));
    Ok(Some(Figure::Lines(LineChart {
        title: format!("Final {metric} against D"),
        x_label: format!(
            "augmented dimension D (D = ∞, diffusion, drawn at {})",
            super::axis::format_number(inf_at)
        ),
        y_label: format!("final {metric} (mean ± stderr over seeds)"),
        x_log: true,
        y_log: log,
        series,
        ..LineChart::default()
    })))
}
