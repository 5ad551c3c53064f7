//! The figures of a run and of a sweep, built from the store. Each returns `None` when the run
//! did not record what the figure needs (a figure of nothing is never drawn).

use std::collections::BTreeMap;

use super::axis::pretty_value;
use super::{Figure, Heatmap, LineChart, Series, SeriesColor, Stroke};
use crate::fit::{self, FitResult, Form};
use crate::store::{RunStatus, Store};
use crate::Error;

/// `(step, value)` series keyed by (metric name, layer).
pub type SeriesMap = BTreeMap<(String, Option<u32>), Vec<(f64, f64)>>;

/// Every sample of one run, by (name, layer), each series sorted by step.
pub struct RunData {
    pub series: SeriesMap,
}

impl RunData {
    pub fn load(store: &Store, run_id: &str) -> Result<RunData, Error> {
        let mut series = SeriesMap::new();
        store.for_each_metric(run_id, |m| {
            series
                .entry((m.name, m.layer))
                .or_default()
                .push((m.step as f64, m.value));
            Ok::<(), Error>(())
        })?;
        Ok(RunData { series })
    }

    pub fn get(&self, name: &str, layer: Option<u32>) -> Option<&[(f64, f64)]> {
        self.series
            .get(&(name.to_string(), layer))
            .map(Vec::as_slice)
            .filter(|s| !s.is_empty())
    }

    /// The layers that recorded `name`, in order.
    pub fn layers(&self, name: &str) -> Vec<u32> {
        self.series
            .keys()
            .filter(|(n, l)| n == name && l.is_some())
            .filter_map(|(_, l)| *l)
            .collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.series.keys().any(|(n, _)| n == name)
    }
}

fn line(label: &str, points: &[(f64, f64)], color: usize) -> Series {
    Series {
        label: label.into(),
        points: points.to_vec(),
        color: SeriesColor::Palette(color),
        ..Series::default()
    }
}

/// `train_{what}` (per logged batch), `train_eval_{what}` and `test_{what}` (at evaluations).
fn train_test_curves(d: &RunData, what: &str, y_log: bool, title: &str) -> Option<Figure> {
    let mut series = Vec::new();
    for (prefix, label, color) in [
        ("train", "train (batch)", 0),
        ("train_eval", "train (full set)", 2),
        ("test", "test", 1),
    ] {
        if let Some(p) = d.get(&format!("{prefix}_{what}"), None) {
            let mut s = line(label, p, color);
            // Markers on the (few) evaluations, not on the per-batch line.
            s.markers = p.len() <= 40 && prefix != "train";
            series.push(s);
        }
    }
    (!series.is_empty()).then(|| {
        Figure::Lines(LineChart {
            title: title.into(),
            x_label: "step".into(),
            y_label: if what == "acc" { "accuracy" } else { what }.into(),
            y_log,
            series,
            ..LineChart::default()
        })
    })
}

/// Train loss (per step), train-set and test loss (at evaluations), log y.
pub fn loss_curves(d: &RunData, title: &str) -> Option<Figure> {
    train_test_curves(d, "loss", true, title)
}

/// Train and test accuracy (classification tasks).
pub fn accuracy_curves(d: &RunData, title: &str) -> Option<Figure> {
    train_test_curves(d, "acc", false, title)
}

/// A per-layer observable as a layer × step heatmap.
pub fn layer_heatmap(d: &RunData, name: &str, log: bool, title: &str) -> Option<Figure> {
    let layers = d.layers(name);
    let first = d.get(name, layers.first().copied())?;
    let steps: Vec<f64> = first.iter().map(|p| p.0).collect();
    let values: Vec<Vec<f64>> = layers
        .iter()
        .map(|&l| {
            let s = d.get(name, Some(l)).unwrap_or(&[]);
            steps
                .iter()
                .map(|st| s.iter().find(|p| p.0 == *st).map_or(f64::NAN, |p| p.1))
                .collect()
        })
        .collect();
    Some(Figure::Heatmap(Heatmap {
        title: title.into(),
        x_label: "step".into(),
        y_label: "layer".into(),
        columns: steps.iter().map(|s| format!("{s}")).collect(),
        rows: layers.iter().map(|l| l.to_string()).collect(),
        values,
        color_label: name.into(),
        log_color: log,
        annotate: false,
    }))
}

/// A per-layer observable over steps, one line per layer (viridis from input to output).
pub fn layer_lines(d: &RunData, name: &str, log: bool, title: &str) -> Option<Figure> {
    let layers = d.layers(name);
    let n = layers.len();
    let series: Vec<Series> = layers
        .iter()
        .enumerate()
        .filter_map(|(i, &l)| {
            d.get(name, Some(l)).map(|p| Series {
                label: format!("layer {l}"),
                points: p.to_vec(),
                color: SeriesColor::Ordered(i, n),
                ..Series::default()
            })
        })
        .collect();
    (!series.is_empty()).then(|| {
        Figure::Lines(LineChart {
            title: title.into(),
            x_label: "step".into(),
            y_label: name.into(),
            y_log: log,
            series,
            ..LineChart::default()
        })
    })
}

/// The learned activation (a, b, c) and normalization (DyT α, LayerNorm weight/bias)
/// parameters a run records, in this order.
pub const LEARNED: [&str; 6] = [
    "act_a",
    "act_b",
    "act_c",
    "norm_alpha",
    "norm_weight",
    "norm_bias",
];

/// A learned parameter over time, one line per layer (the mean over the layer's neurons);
/// None unless it moved during training (a fixed parameter is one number, in the spec).
pub fn learned_param(d: &RunData, name: &str, title: &str) -> Option<Figure> {
    let moved = d.layers(name).iter().any(|&l| {
        d.get(name, Some(l))
            .is_some_and(|p| p.iter().any(|q| q.1 != p[0].1))
    });
    if !moved {
        return None;
    }
    let Some(Figure::Lines(mut chart)) = layer_lines(d, name, false, title) else {
        return None;
    };
    chart.y_label = format!("{name} (mean over the layer's neurons)");
    Some(Figure::Lines(chart))
}

/// Mean-field `q^l` (the `theory` observable, step 0) against the measured pre-activation second
/// moment `preact_m2` at the same step, by layer.
pub fn theory_vs_measured(d: &RunData, title: &str) -> Option<Figure> {
    let layers = d.layers("q_theory");
    if layers.is_empty() {
        return None;
    }
    let at0 = |name: &str, l: u32| -> f64 {
        d.get(name, Some(l))
            .and_then(|s| s.first())
            .map_or(f64::NAN, |p| p.1)
    };
    let theory: Vec<(f64, f64)> = layers
        .iter()
        .map(|&l| (l as f64, at0("q_theory", l)))
        .collect();
    let measured: Vec<(f64, f64)> = layers
        .iter()
        .map(|&l| (l as f64, at0("preact_m2", l)))
        .collect();
    Some(Figure::Lines(LineChart {
        title: title.into(),
        x_label: "layer".into(),
        x_integer: true,
        y_label: "q = E[z²] at initialization".into(),
        series: vec![
            Series {
                label: "mean-field theory".into(),
                points: theory,
                stroke: Stroke::Dashed,
                color: SeriesColor::Palette(6),
                ..Series::default()
            },
            Series {
                label: "measured".into(),
                points: measured,
                stroke: Stroke::Hidden,
                color: SeriesColor::Palette(1),
                ..Series::default()
            },
        ],
        ..LineChart::default()
    }))
}

/// The grokking view: total weight norm (left) with test accuracy, or test loss when the task
/// has none (right).
pub fn weight_norm_view(d: &RunData, title: &str) -> Option<Figure> {
    let norm = d.get("weight_norm", None)?;
    let (name, y2, y2_log) = if d.has("test_acc") {
        ("test_acc", "test accuracy", false)
    } else {
        ("test_loss", "test loss", true)
    };
    let other = d.get(name, None)?;
    Some(Figure::Lines(LineChart {
        title: title.into(),
        x_label: "step".into(),
        // Plain words: the PNG font has no ‖ or θ.
        y_label: "total weight norm".into(),
        y2_label: y2.into(),
        y2_log,
        series: vec![
            line("weight norm (left)", norm, 0),
            Series {
                secondary: true,
                ..line(&format!("{y2} (right)"), other, 1)
            },
        ],
        ..LineChart::default()
    }))
}

/// One configuration of a sweep: its label and the ids of its seeds' runs.
#[derive(Clone, Debug)]
pub struct Config {
    pub label: String,
    /// Swept key → value, without the seed.
    pub values: Vec<(String, String)>,
    pub runs: Vec<String>,
}

/// The configurations of a sweep in expansion order, seeds grouped.
pub fn configs(store: &Store, sweep: &str) -> Result<Vec<Config>, Error> {
    let mut out: Vec<Config> = Vec::new();
    for (id, vals) in store.sweep_runs(sweep)? {
        let values: Vec<(String, String)> = vals.into_iter().filter(|(k, _)| k != "seed").collect();
        match out.iter_mut().find(|c| c.values == values) {
            Some(c) => c.runs.push(id),
            None => out.push(Config {
                label: values
                    .iter()
                    .map(|(k, v)| format!("{}={}", short_key(k), pretty_value(v)))
                    .collect::<Vec<_>>()
                    .join(", "),
                values,
                runs: vec![id],
            }),
        }
    }
    Ok(out)
}

/// `optim.lr` → `lr`.
pub fn short_key(k: &str) -> &str {
    k.rsplit('.').next().unwrap_or(k)
}

/// A run's final value of a whole-network metric; NaN for a diverged run (its last value is
/// the blow-up, not a result) or one that never recorded it.
pub fn final_value(store: &Store, run_id: &str, metric: &str) -> Result<f64, Error> {
    match store.run(run_id)? {
        None => return Ok(f64::NAN),
        Some(r) if r.status == RunStatus::Diverged => return Ok(f64::NAN),
        Some(_) => {}
    }
    Ok(store
        .last_values(run_id)?
        .into_iter()
        .find(|m| m.name == metric && m.layer.is_none())
        .map_or(f64::NAN, |m| m.value))
}

/// Mean and standard error of the mean (n − 1); stderr 0 for one value.
pub fn mean_stderr(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().sum::<f64>() / n;
    if v.len() < 2 {
        return (mean, 0.0);
    }
    let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

/// At most `k` configurations spread over the ranking by final `metric` (mean over seeds):
/// the best, the worst and evenly spaced ones between, in ranking order.
pub fn spread(
    store: &Store,
    configs: &[Config],
    metric: &str,
    k: usize,
) -> Result<Vec<Config>, Error> {
    if configs.len() <= k {
        return Ok(configs.to_vec());
    }
    let mut ranked: Vec<(f64, &Config)> = Vec::new();
    for c in configs {
        let v: Vec<f64> = c
            .runs
            .iter()
            .map(|id| final_value(store, id, metric))
            .collect::<Result<_, _>>()?;
        let m = mean_stderr(&v).0;
        // Configurations where a seed diverged have no final value to rank by: left out.
        if m.is_finite() {
            ranked.push((m, c));
        }
    }
    if ranked.len() <= k {
        return Ok(ranked.into_iter().map(|(_, c)| c.clone()).collect());
    }
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut picks: Vec<usize> = (0..k)
        .map(|i| (i as f64 * (ranked.len() - 1) as f64 / (k - 1).max(1) as f64).round() as usize)
        .collect();
    picks.dedup();
    Ok(picks.into_iter().map(|i| ranked[i].1.clone()).collect())
}

/// A metric over steps for configurations with seeds: mean line and ±stderr band each (steps
/// every seed recorded; a diverged seed ends its configuration's line).
pub fn seed_curves(
    store: &Store,
    configs: &[Config],
    metric: &str,
    title: &str,
) -> Result<Option<Figure>, Error> {
    let configs = &spread(store, configs, metric, 8)?;
    let mut series = Vec::new();
    for (i, c) in configs.iter().enumerate() {
        let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
        let mut present = 0;
        for id in &c.runs {
            if store.run(id)?.is_none() {
                continue;
            }
            present += 1;
            for (step, v) in store.series(id, metric, None)? {
                by_step.entry(step).or_default().push(v);
            }
        }
        let mut points = Vec::new();
        let mut band = Vec::new();
        for (step, vals) in by_step.into_iter().filter(|(_, v)| v.len() == present) {
            let (m, se) = mean_stderr(&vals);
            points.push((step as f64, m));
            if present > 1 {
                band.push((step as f64, m - se, m + se));
            }
        }
        if points.is_empty() {
            continue;
        }
        series.push(Series {
            label: format!("{} (n={present})", c.label),
            points,
            band,
            color: if configs.len() <= 8 {
                SeriesColor::Palette(i)
            } else {
                SeriesColor::Ordered(i, configs.len())
            },
            ..Series::default()
        });
    }
    Ok((!series.is_empty()).then(|| {
        Figure::Lines(LineChart {
            title: title.into(),
            x_label: "step".into(),
            y_label: format!("{metric} (mean ± stderr over seeds)"),
            y_log: metric.contains("loss"),
            series,
            ..LineChart::default()
        })
    }))
}

/// Two swept keys → a heatmap of the final metric (mean over seeds); a cell where any seed
/// diverged is marked instead of averaged.
pub fn phase_diagram(
    store: &Store,
    configs: &[Config],
    metric: &str,
    title: &str,
) -> Result<Option<Figure>, Error> {
    let Some(first) = configs.first() else {
        return Ok(None);
    };
    if first.values.len() != 2 {
        return Ok(None);
    }
    let (kx, ky) = (first.values[0].0.clone(), first.values[1].0.clone());
    let mut xs: Vec<String> = Vec::new();
    let mut ys: Vec<String> = Vec::new();
    for c in configs {
        if !xs.contains(&c.values[0].1) {
            xs.push(c.values[0].1.clone());
        }
        if !ys.contains(&c.values[1].1) {
            ys.push(c.values[1].1.clone());
        }
    }
    let mut values = vec![vec![f64::NAN; xs.len()]; ys.len()];
    for c in configs {
        let finals: Vec<f64> = c
            .runs
            .iter()
            .map(|id| final_value(store, id, metric))
            .collect::<Result<_, _>>()?;
        let x = xs.iter().position(|v| *v == c.values[0].1).unwrap_or(0);
        let y = ys.iter().position(|v| *v == c.values[1].1).unwrap_or(0);
        values[y][x] = if finals.iter().all(|v| v.is_finite()) {
            mean_stderr(&finals).0
        } else {
            f64::NAN
        };
    }
    Ok(Some(Figure::Heatmap(Heatmap {
        title: title.into(),
        x_label: kx,
        y_label: ky,
        columns: xs.iter().map(|v| pretty_value(v)).collect(),
        rows: ys.iter().map(|v| pretty_value(v)).collect(),
        values,
        color_label: format!("final {metric}   (× = a seed diverged)"),
        log_color: metric.contains("loss"),
        annotate: true,
    })))
}

/// The x quantity of a sweep's scaling figure and fit, with its axis label: the parameter
/// count (`model.params`, what `cloudchamber fit` defaults to) when the runs recorded it, else
/// the swept key itself.
pub struct ScalingFit {
    pub figure: Figure,
    pub fit: FitResult,
    /// `model.params` or the swept key: what to pass as `fit --x` for the same numbers.
    pub x: String,
    /// Seed means entering the fit (one point per configuration).
    pub points: usize,
}

/// The scaling figure of a sweep over one numeric key: the final `metric` against the number
/// of parameters, one point per configuration (the mean over its seeds; diverged runs left
/// out), with the power law E + A·x^(−α) and its 95% bootstrap band. The points and the fit
/// are exactly `cloudchamber fit --sweep NAME --form power --x model.params` (same reader,
/// same options), so the report and `fit` agree; `None` for other sweeps.
pub fn scaling(
    store: &Store,
    sweep: &str,
    configs: &[Config],
    metric: &str,
    title: &str,
) -> Result<Option<ScalingFit>, Error> {
    if configs.len() < 3 || configs.iter().any(|c| c.values.len() != 1) {
        return Ok(None);
    }
    let key = configs[0].values[0].0.clone();
    // PFGM++'s D is a physical parameter, not a scale: its own figure (`versus_d`) shows it.
    if key == super::generative::AUG_DIM_KEY {
        return Ok(None);
    }
    if configs
        .iter()
        .any(|c| c.values[0].1.parse::<f64>().is_err())
    {
        return Ok(None);
    }
    let query = |x: &'static str, key: &str| -> Result<fit::input::StorePoints, Error> {
        let x = if x.is_empty() { key } else { x };
        fit::input::sweep_points(
            store,
            &fit::input::SweepQuery {
                sweep,
                metric,
                at: fit::input::Pick::Final,
                x,
                d: None,
                seeds: fit::input::Seeds::Mean,
            },
        )
    };
    let distinct = |xs: &[f64]| {
        let mut v: Vec<f64> = xs
            .iter()
            .copied()
            .filter(|x| x.is_finite() && *x > 0.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v.dedup();
        v.len()
    };
    // Parameters when the swept key changes them (width, depth); else the swept key itself (a
    // sweep over data, steps or learning rate keeps the parameter count fixed).
    let (points, x_name, x_label) = match query("model.params", &key) {
        Ok(p) if distinct(&p.x) >= 3 => (
            p,
            "model.params".to_string(),
            "parameters (model.params)".to_string(),
        ),
        _ => match query("", &key) {
            Ok(p) => (p, key.clone(), key.clone()),
            Err(_) => return Ok(None),
        },
    };
    let mut data = fit::Data::default();
    for (x, y) in points.x.iter().zip(&points.y) {
        if x.is_finite() && y.is_finite() && *x > 0.0 && *y > 0.0 {
            data.x.push(*x);
            data.y.push(*y);
        }
    }
    if distinct(&data.x) < 3 {
        return Ok(None);
    }
    // `fit`'s own defaults (grid, Huber δ, 1000 resamples, seed 0): the same numbers.
    let Ok(result) = fit::fit(Form::Power, &data, &fit::Options::default()) else {
        return Ok(None);
    };
    let (e, a, alpha) = (
        result.get("E").unwrap_or(f64::NAN),
        result.get("A").unwrap_or(f64::NAN),
        result.get("alpha").unwrap_or(f64::NAN),
    );
    let (curve, band) = law_with_band(Form::Power, &data.x, &result, 60);
    let figure = Figure::Lines(LineChart {
        title: title.into(),
        x_label: x_label.clone(),
        y_label: format!("final {metric} (mean over seeds)"),
        x_log: true,
        y_log: true,
        series: vec![
            Series {
                label: format!(
                    "fit {} + {}·x^(−{})  (95% bootstrap band)",
                    super::axis::format_number(e),
                    super::axis::format_number(a),
                    super::axis::format_number(alpha)
                ),
                points: curve,
                band,
                color: SeriesColor::Palette(0),
                ..Series::default()
            },
            Series {
                label: format!("configurations ({key}), seed means"),
                points: data.x.iter().copied().zip(data.y.iter().copied()).collect(),
                stroke: Stroke::Hidden,
                color: SeriesColor::Palette(1),
                ..Series::default()
            },
        ],
        ..LineChart::default()
    });
    Ok(Some(ScalingFit {
        figure,
        fit: result,
        x: x_name,
        points: data.x.len(),
    }))
}

/// The figure of a fit (`cloudchamber fit --plot`): for one-input forms the points, the fitted
/// law and its 95% bootstrap band on log–log axes; for `chinchilla` (two inputs) each point's
/// measured loss against the fitted one, beside the line y = x.
pub fn fit_figure(
    form: Form,
    data: &fit::Data,
    r: &FitResult,
    x_label: &str,
    y_label: &str,
) -> Figure {
    let p = r.natural_params();
    let title = format!("{} fit of {} points", form.name(), data.y.len());
    if form.two_inputs() {
        let pred: Vec<(f64, f64)> = data
            .x
            .iter()
            .zip(&data.d)
            .zip(&data.y)
            .map(|((x, d), y)| (fit::law(form, &p, *x, *d), *y))
            .collect();
        let (lo, hi) = pred
            .iter()
            .flat_map(|(a, b)| [*a, *b])
            .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(v), h.max(v)));
        return Figure::Lines(LineChart {
            title,
            x_label: format!("fitted {y_label}"),
            y_label: format!("measured {y_label}"),
            // Losses near E span well under a decade: linear axes show the scatter.
            x_log: false,
            y_log: false,
            series: vec![
                Series {
                    label: "y = x".into(),
                    points: vec![(lo, lo), (hi, hi)],
                    stroke: Stroke::Dashed,
                    color: SeriesColor::Palette(0),
                    ..Series::default()
                },
                Series {
                    label: "points".into(),
                    points: sorted(pred),
                    stroke: Stroke::Hidden,
                    color: SeriesColor::Palette(1),
                    ..Series::default()
                },
            ],
            ..LineChart::default()
        });
    }
    let (curve, band) = law_with_band(form, &data.x, r, 80);
    let label = r
        .params
        .iter()
        .map(|e| format!("{} = {}", e.name, super::axis::format_number(e.value)))
        .collect::<Vec<_>>()
        .join(", ");
    Figure::Lines(LineChart {
        title,
        x_label: x_label.into(),
        y_label: y_label.into(),
        x_log: true,
        y_log: true,
        series: vec![
            Series {
                label: if band.is_empty() {
                    format!("fit: {label}")
                } else {
                    format!("fit: {label} (95% bootstrap band)")
                },
                points: curve,
                band,
                color: SeriesColor::Palette(0),
                ..Series::default()
            },
            Series {
                label: "points".into(),
                points: sorted(data.x.iter().copied().zip(data.y.iter().copied()).collect()),
                stroke: Stroke::Hidden,
                color: SeriesColor::Palette(1),
                ..Series::default()
            },
        ],
        ..LineChart::default()
    })
}

/// A one-input law on `n + 1` log-spaced points over the range of `xs`: the fitted curve, and
/// the 2.5–97.5% band of the bootstrap fits (left out where fewer than 10 are finite).
#[allow(clippy::type_complexity)]
fn law_with_band(
    form: Form,
    xs: &[f64],
    r: &FitResult,
    n: usize,
) -> (Vec<(f64, f64)>, Vec<(f64, f64, f64)>) {
    let (lo, hi) = xs
        .iter()
        .fold((f64::INFINITY, 0.0f64), |(l, h), &x| (l.min(x), h.max(x)));
    let grid: Vec<f64> = (0..=n)
        .map(|i| 10f64.powf(lo.log10() + (hi.log10() - lo.log10()) * i as f64 / n as f64))
        .collect();
    let p = r.natural_params();
    let curve = grid
        .iter()
        .map(|&x| (x, fit::law(form, &p, x, 0.0)))
        .collect();
    let band = grid
        .iter()
        .filter_map(|&x| {
            let mut v: Vec<f64> = r
                .samples
                .iter()
                .map(|s| fit::law(form, s, x, 0.0))
                .filter(|v| v.is_finite())
                .collect();
            if v.len() < 10 {
                return None;
            }
            v.sort_by(f64::total_cmp);
            let q = |f: f64| v[((v.len() - 1) as f64 * f).round() as usize];
            Some((x, q(0.025), q(0.975)))
        })
        .collect();
    (curve, band)
}

fn sorted(mut v: Vec<(f64, f64)>) -> Vec<(f64, f64)> {
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    v
}

/// One in-context curve: `(k, value)` points and `(k, lo, hi)` intervals.
pub type IclCurve = (Vec<(f64, f64)>, Vec<(f64, f64, f64)>);

/// The in-context curves a run recorded (`icl_{who}{exemplars}_k{k}`, see `train::in_context`):
/// for each `who` (`error` for the model, or a baseline), the `(k, value at the last step)`
/// points and their `(k, lo, hi)` interval. `nearest` picks the retrieval-chosen exemplars.
pub fn icl_curves(d: &RunData, nearest: bool) -> BTreeMap<String, IclCurve> {
    let mut out: BTreeMap<String, IclCurve> = BTreeMap::new();
    let last = |name: &str| d.get(name, None).and_then(|s| s.last()).map(|p| p.1);
    for (name, layer) in d.series.keys() {
        let Some(rest) = name.strip_prefix("icl_") else {
            continue;
        };
        let Some((who, k)) = rest.rsplit_once("_k") else {
            continue;
        };
        let Ok(k) = k.parse::<usize>() else {
            continue;
        };
        let who = match (who.strip_suffix("_nearest"), nearest) {
            (Some(w), true) => w,
            (None, false) => who,
            _ => continue,
        };
        if layer.is_some() {
            continue;
        }
        let (Some(v), lo, hi) = (
            last(name),
            last(&format!("{name}_lo")),
            last(&format!("{name}_hi")),
        ) else {
            continue;
        };
        let e = out.entry(who.to_string()).or_default();
        e.0.push((k as f64, v));
        if let (Some(lo), Some(hi)) = (lo, hi) {
            e.1.push((k as f64, lo, hi));
        }
    }
    for (points, band) in out.values_mut() {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        band.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    out
}

/// Garg et al.'s figure: normalized squared error against the number of in-context examples,
/// the trained model (at its last evaluation, solid, with its 95% bootstrap band) beside every
/// baseline on the same prompts (dashed).
pub fn icl_error_vs_examples(d: &RunData, nearest: bool, title: &str) -> Option<Figure> {
    let curves = icl_curves(d, nearest);
    let (model, band) = curves.get("error")?;
    let mut series = vec![Series {
        label: "transformer".into(),
        points: model.clone(),
        band: band.clone(),
        markers: true,
        color: SeriesColor::Palette(0),
        ..Series::default()
    }];
    // A baseline far above the model (averaging with one example, least squares at its
    // interpolation peak k = d on nonlinear classes) would flatten every other curve: points
    // above 3× the model's worst are left out (the line breaks there), and the legend says so.
    let cap = 3.0 * model.iter().map(|p| p.1).fold(0.0, f64::max);
    for (i, (who, (points, _))) in curves.iter().filter(|(w, _)| *w != "error").enumerate() {
        let clipped = points.iter().any(|p| p.1 > cap);
        let label = who.replace('_', " ");
        series.push(Series {
            label: if clipped {
                format!("{label} (off the chart above {cap:.2})")
            } else {
                label
            },
            // Trailing points off the chart are dropped, interior ones break the line (a line
            // ending in non-finite values would be drawn as diverged).
            points: {
                let keep = points.iter().rposition(|p| p.1 <= cap).map_or(0, |i| i + 1);
                points[..keep]
                    .iter()
                    .map(|&(k, v)| (k, if v > cap { f64::NAN } else { v }))
                    .collect()
            },
            stroke: Stroke::Dashed,
            color: SeriesColor::Palette(i + 1),
            ..Series::default()
        });
    }
    Some(Figure::Lines(LineChart {
        title: title.into(),
        x_label: "in-context examples".into(),
        x_integer: true,
        y_label: "normalized squared error".into(),
        series,
        ..LineChart::default()
    }))
}

/// The model's in-context error over training, one line per number of examples `k` (viridis
/// from none to the most).
pub fn icl_error_over_training(d: &RunData, title: &str) -> Option<Figure> {
    let mut ks: Vec<usize> = d
        .series
        .keys()
        .filter_map(|(n, _)| n.strip_prefix("icl_error_k")?.parse().ok())
        .collect();
    ks.sort_unstable();
    let n = ks.len();
    let series: Vec<Series> = ks
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            d.get(&format!("icl_error_k{k}"), None).map(|p| Series {
                label: format!("k = {k}"),
                points: p.to_vec(),
                markers: p.len() <= 40,
                color: SeriesColor::Ordered(i, n),
                ..Series::default()
            })
        })
        .collect();
    (!series.is_empty()).then(|| {
        Figure::Lines(LineChart {
            title: title.into(),
            x_label: "step".into(),
            y_label: "normalized squared error".into(),
            y_log: true,
            series,
            ..LineChart::default()
        })
    })
}

/// The induction phase change: each head's prefix-matching score (left axis, one line per
/// layer and head) against the next-token loss at the positions an induction head can predict
/// and at the rest (right axis).
pub fn induction_view(d: &RunData, title: &str) -> Option<Figure> {
    let ind = d.get("loss_induction", None)?;
    let mut heads: Vec<(u32, String)> = d
        .series
        .keys()
        .filter(|(n, l)| n.starts_with("prefix_match_h") && l.is_some())
        .map(|(n, l)| (l.unwrap_or(0), n.clone()))
        .collect();
    heads.sort();
    let n = heads.len();
    let mut series: Vec<Series> = heads
        .iter()
        .enumerate()
        .filter_map(|(i, (l, name))| {
            d.get(name, Some(*l)).map(|p| Series {
                label: format!("layer {l} head {} (left)", &name["prefix_match_h".len()..]),
                points: p.to_vec(),
                color: SeriesColor::Ordered(i, n),
                ..Series::default()
            })
        })
        .collect();
    series.push(Series {
        secondary: true,
        stroke: Stroke::Dashed,
        ..line("loss, copyable positions (right)", ind, 1)
    });
    if let Some(other) = d.get("loss_other", None) {
        series.push(Series {
            secondary: true,
            stroke: Stroke::Dashed,
            ..line("loss, other positions (right)", other, 6)
        });
    }
    Some(Figure::Lines(LineChart {
        title: title.into(),
        x_label: "step".into(),
        y_label: "prefix-matching score".into(),
        y2_label: "next-token loss (nats)".into(),
        series,
        ..LineChart::default()
    }))
}

/// The quanta view (Michaud et al. 2023): each subtask's held-out `what` (`loss` or `acc`) over
/// training, one line per subtask coloured by its frequency rank (dark: the most frequent).
pub fn subtask_curves(d: &RunData, what: &str, title: &str) -> Option<Figure> {
    let freq = |t: usize| {
        d.get(&format!("subtask_freq_{t}"), None)
            .and_then(|s| s.first())
            .map(|p| p.1)
    };
    let mut tasks: Vec<(usize, f64)> = (0..).map_while(|t| freq(t).map(|f| (t, f))).collect();
    if tasks.is_empty() {
        return None;
    }
    tasks.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let n = tasks.len();
    let series: Vec<Series> = tasks
        .iter()
        .enumerate()
        .filter_map(|(rank, &(t, f))| {
            d.get(&format!("subtask_{what}_{t}"), None).map(|p| Series {
                // A legend of every subtask would cover the chart: the most frequent few and the
                // rarest name the colour scale.
                label: if rank < 4 || rank + 1 == n {
                    format!("subtask {t} ({:.1}%)", 100.0 * f)
                } else {
                    String::new()
                },
                points: p.to_vec(),
                color: SeriesColor::Ordered(rank, n),
                ..Series::default()
            })
        })
        .collect();
    (!series.is_empty()).then(|| {
        Figure::Lines(LineChart {
            title: title.into(),
            x_label: "step".into(),
            y_label: format!("held-out {}", if what == "acc" { "accuracy" } else { what }),
            y_log: what == "loss",
            series,
            ..LineChart::default()
        })
    })
}

/// A segmentation run's overlap over training: `dice_{k}` and `iou_{k}` per foreground class,
/// and the threshold baseline's Dice (`threshold_dice`, recorded at step 0) as a dashed level
/// across the evaluations; `None` for other runs.
pub fn segmentation_overlap(d: &RunData) -> Option<Figure> {
    if !d.has("dice") {
        return None;
    }
    let mut series = Vec::new();
    let mut k = 1;
    let mut steps: Vec<f64> = Vec::new();
    while let Some(p) = d.get(&format!("dice_{k}"), None) {
        let mut s = line(&format!("Dice, class {k}"), p, 2 * (k - 1));
        s.markers = p.len() <= 40;
        series.push(s);
        if let Some(q) = d.get(&format!("iou_{k}"), None) {
            let mut s = line(&format!("IoU, class {k}"), q, 2 * (k - 1) + 1);
            s.markers = q.len() <= 40;
            series.push(s);
        }
        steps = p.iter().map(|x| x.0).collect();
        k += 1;
    }
    if let (Some(t), Some((&first, &last))) = (
        d.get("threshold_dice", None),
        steps.first().zip(steps.last()),
    ) {
        if let Some(&(_, v)) = t.first() {
            let mut s = line(
                "best intensity threshold, Dice",
                &[(first, v), (last, v)],
                7,
            );
            s.stroke = crate::plot::Stroke::Dashed;
            series.push(s);
        }
    }
    Some(Figure::Lines(LineChart {
        title: "Held-out overlap".into(),
        x_label: "step".into(),
        y_label: "Dice, IoU".into(),
        series,
        ..LineChart::default()
    }))
}
