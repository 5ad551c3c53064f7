//! `cloudchamber report`: a self-contained static HTML page for a run, or for a sweep an index
//! page plus one page per run (`runs/<id>.html`). Spec, summary table and figures (inline SVG, and
//! inline PNG for a segmentation run's images and masks); no script and no external request, so
//! it works offline and prints (A4) cleanly.

pub mod html;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use crate::plot::axis::pretty_value;
use crate::plot::figures::{self, RunData};
use crate::store::{RunRecord, RunStatus, Store};
use crate::Error;
use html::{esc, num};

fn generator() -> String {
    format!("cloudchamber {}", env!("CARGO_PKG_VERSION"))
}

fn status_badge(r: &RunRecord) -> String {
    let s = r.display_status();
    format!("<span class=\"badge {s}\">{s}</span>")
}

/// The HTML page of one run. `back` links to the sweep index that lists it.
pub fn run_page(
    store: &Store,
    run: &RunRecord,
    back: Option<(&str, &str)>,
) -> Result<String, Error> {
    let d = RunData::load(store, &run.id)?;
    let mut b = String::new();
    if let Some((href, label)) = back {
        let _ = writeln!(
            b,
            "<nav><a href=\"{}\">← {}</a></nav>",
            esc(href),
            esc(label)
        );
    }
    let _ = writeln!(
        b,
        "<header><div class=\"kind\">run report</div><h1>{} {}</h1><div class=\"meta\"><span>id <code>{}</code></span><span>{} steps</span><span>{}</span><span>started {}</span><span>cloudchamber {}</span></div></header>",
        esc(&run.name),
        status_badge(run),
        esc(&run.id),
        run.steps.map_or("—".into(), |s| s.to_string()),
        run.wall_seconds
            .map_or("—".into(), |w| format!("{w:.1} s of training")),
        esc(run.started_at.as_deref().unwrap_or(&run.created_at)),
        esc(&run.tool_version),
    );
    if let Some(step) = run.diverged_step {
        let _ = writeln!(
            b,
            "<p class=\"note\">Diverged at step {step}: the loss left the finite range; the curves stop there (× marks the last finite value).</p>"
        );
    }
    if let Some(m) = &run.message {
        let _ = writeln!(b, "<p class=\"note\">{}</p>", esc(m));
    }

    // Summary: each whole-network series' final value, and its best for losses and accuracies.
    b.push_str("<h2>Summary</h2>\n");
    let mut rows = Vec::new();
    for ((name, layer), s) in &d.series {
        // In-context curves (one series per number of examples) get their own table below.
        if layer.is_some() || name.starts_with("icl_") || name.starts_with("subtask_") {
            continue;
        }
        let Some(&(step, last)) = s.last() else {
            continue;
        };
        let finite = s.iter().filter(|p| p.1.is_finite());
        let best = if name.contains("loss") {
            finite.min_by(|a, b| a.1.total_cmp(&b.1))
        } else if name.contains("acc") {
            finite.max_by(|a, b| a.1.total_cmp(&b.1))
        } else {
            None
        };
        rows.push(vec![
            esc(name),
            num(last),
            format!("{step}"),
            best.map_or(String::new(), |p| num(p.1)),
            best.map_or(String::new(), |p| format!("{}", p.0)),
            s.len().to_string(),
        ]);
    }
    b.push_str(&html::table(
        &[
            "metric", "#final", "#at step", "#best", "#at step", "#samples",
        ],
        &rows,
    ));
    let per_layer: Vec<&String> = {
        let mut v: Vec<&String> = d
            .series
            .keys()
            .filter(|(_, l)| l.is_some())
            .map(|(n, _)| n)
            .collect();
        v.dedup();
        v
    };
    if !per_layer.is_empty() {
        let names: Vec<String> = per_layer.iter().map(|n| esc(n)).collect();
        let _ = writeln!(
            b,
            "<p class=\"note\">Per-layer observables recorded: {}. Export them with <code>cloudchamber export {}</code>.</p>",
            names.join(", "),
            esc(&run.id)
        );
    }

    icl_table(&d, &mut b);

    // Figures, each only when the run recorded what it needs.
    b.push_str("<h2>Figures</h2>\n");
    let mut any = false;
    let mut add =
        |fig: Option<crate::plot::Figure>, caption: &str, b: &mut String| -> Result<(), Error> {
            if let Some(f) = fig {
                b.push_str(&html::figure(&f, caption)?);
                any = true;
            }
            Ok(())
        };
    add(
        figures::loss_curves(&d, "Loss"),
        "<b>Loss.</b> Train loss on each logged batch, and the loss on the full train and test sets at each evaluation (log scale).",
        &mut b,
    )?;
    add(
        figures::accuracy_curves(&d, "Accuracy"),
        "<b>Accuracy</b> on the batch, the full train set and the test set.",
        &mut b,
    )?;
    add(
        figures::weight_norm_view(&d, "Weight norm and generalization"),
        "<b>Weight norm with test performance</b> (the grokking view): the total parameter norm ‖θ‖ (left axis) against test accuracy, or test loss for regression (right axis).",
        &mut b,
    )?;
    for (name, log, what) in [
        (
            "act_std",
            false,
            "standard deviation of each hidden layer's activations",
        ),
        (
            "preact_m2",
            true,
            "second moment E[z²] of each layer's pre-activations (the mean-field qˡ)",
        ),
        (
            "frac_saturated",
            false,
            "fraction of saturated units per layer",
        ),
    ] {
        add(
            figures::layer_heatmap(&d, name, log, &format!("{name} by layer and step")),
            &format!("<b>{name}</b>: {what}, layer × step."),
            &mut b,
        )?;
    }
    for (name, what) in [
        (
            "grad_norm",
            "gradient norm of each layer's weights (before clipping)",
        ),
        (
            "update_ratio",
            "size of each step's update relative to the weights",
        ),
    ] {
        add(
            figures::layer_lines(&d, name, true, &format!("{name} by layer")),
            &format!(
                "<b>{name}</b>: {what}, one line per layer (dark: input side, light: output side)."
            ),
            &mut b,
        )?;
    }
    for name in figures::LEARNED {
        add(
            figures::learned_param(&d, name, &format!("Learned {name}")),
            &format!("<b>Learned {name}</b> over training, mean over each layer's neurons (activation a·φ(x − b) + c; normalization α, weight, bias)."),
            &mut b,
        )?;
    }
    for (nearest, how) in [(false, "drawn at random"), (true, "chosen by retrieval")] {
        let title = format!("In-context error, exemplars {how}");
        add(
            figures::icl_error_vs_examples(&d, nearest, &title),
            &format!("<b>In-context regression, exemplars {how}.</b> Squared error of the prediction for a query, in units of the error of predicting 0 (÷ d; ÷ the sparsity for sparse functions, ÷ 1 for trees), against the number of in-context examples, on the same held-out prompts: the transformer at its last evaluation (band: 95% bootstrap interval over prompts) and each baseline (dashed), as in Garg et al. (2022), figure 2."),
            &mut b,
        )?;
    }
    add(
        figures::icl_error_over_training(&d, "In-context error over training"),
        "<b>In-context error over training</b>, one line per number of examples k (dark: none, light: the most), exemplars drawn at random.",
        &mut b,
    )?;
    let maps = attention_maps(store, &run.id);
    if !maps.is_empty() {
        b.push_str("<p class=\"note\">Attention of the trained transformer on the first held-out sample, one map per layer and head (row: query position, column: key; each row sums to 1 over the keys up to the query). The maps are in <code>attention.safetensors</code> in the run's folder.</p>\n");
    }
    for (fig, caption) in maps {
        add(Some(fig), &caption, &mut b)?;
    }
    for (what, word) in [("loss", "loss"), ("acc", "accuracy")] {
        add(
            figures::subtask_curves(&d, what, &format!("Subtask {word} by frequency")),
            &format!("<b>Subtasks (quanta, Michaud et al. 2023)</b>: each subtask's held-out {word} over training, one line per subtask, coloured by frequency (dark: the most frequent); the legend gives each subtask's share of the examples."),
            &mut b,
        )?;
    }
    add(
        figures::induction_view(&d, "Induction heads"),
        "<b>Induction heads</b> (Olsson et al. 2022): each head's prefix-matching score — its attention on the key just after an earlier occurrence of the query's token — one line per layer and head, against the next-token loss at the positions an induction head can predict (copyable) and at the rest (right axis). A circuit at another lag shows in <code>offset_match</code> instead (see the README).",
        &mut b,
    )?;
    generative_figures(store, &run.id, &d, &mut b, &mut add)?;
    add(
        figures::segmentation_overlap(&d),
        "<b>Overlap on held-out images</b>: Dice and IoU per foreground class at each evaluation (mean over images; an image where the class is absent from mask and prediction scores 1), beside the best single intensity threshold's Dice (dashed), chosen on the held-out images themselves. Pixel accuracy is the accuracy figure's test line.",
        &mut b,
    )?;
    b.push_str(&segmentation_images(store, run, &d));
    add(
        figures::theory_vs_measured(&d, "Mean-field theory vs measurement"),
        "<b>Signal propagation at initialization.</b> The mean-field recursion for qˡ (Poole et al. 2016), iterated from the measured input, against the measured pre-activation second moment.",
        &mut b,
    )?;
    if !any {
        b.push_str("<p class=\"note\">This run recorded no metrics yet.</p>\n");
    }

    b.push_str("<h2>Specification</h2>\n<p class=\"note\">The resolved experiment (every default filled in); running it again reproduces this run bit for bit.</p>\n");
    let _ = writeln!(b, "<pre>{}</pre>", esc(&run.spec_toml));
    Ok(html::page(
        &format!("{} — cloudchamber", run.name),
        &b,
        &generator(),
    ))
}

/// A denoiser run's figures: sample quality over training, samples beside data, trajectories,
/// and the loss and excess error per noise level.
fn generative_figures(
    store: &Store,
    run_id: &str,
    d: &RunData,
    b: &mut String,
    add: &mut dyn FnMut(Option<crate::plot::Figure>, &str, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    use crate::plot::generative as g;
    if !d.has("sample_mmd") {
        return Ok(());
    }
    for (metric, what) in [
        ("mmd", "MMD² (biased estimate) with Gaussian kernels at the listed bandwidths × the held-out data's mean squared distance"),
        ("swd", "sliced Wasserstein-2 distance"),
        ("energy", "energy distance"),
    ] {
        add(
            g::quality_over_training(d, metric),
            &format!("<b>Sample quality over training</b>: the {what} between the trained denoiser's samples and held-out data, beside the same metric for draws from the prior (nothing learned), for the ideal denoiser's samples (the perfect network, Gaussian mixtures only) and for training points (the estimator's own floor)."),
            b,
        )?;
    }
    let t = crate::interop::load_f64(
        &store
            .artifacts_dir(run_id)
            .join(crate::train::generative::FILE),
    )
    .ok();
    if let Some(t) = &t {
        add(
            g::samples_scatter(t),
            "<b>Samples beside data</b>: the last evaluation's samples, the ideal denoiser's (when the data is a known mixture) and held-out points; beyond two dimensions, projected on the held-out data's two leading principal axes. The points are in <code>samples.safetensors</code>.",
            b,
        )?;
        for which in ["samples", "ideal"] {
            add(
                g::trajectories(t, which),
                &format!("<b>Sampling trajectories</b> of the {} through the sampler's noise levels, projected as above.", if which == "ideal" { "ideal denoiser" } else { "trained denoiser" }),
                b,
            )?;
        }
    }
    add(
        g::per_sigma(d, "sigma_loss", "Loss per noise level", "EDM-weighted loss"),
        "<b>Loss per noise level over training</b>: EDM's weighted loss λ(σ)‖D − y‖²/N on held-out points perturbed at each level, one line per evaluation (dark: early, light: late), and the ideal denoiser's (dashed).",
        b,
    )?;
    add(
        g::per_sigma(d, "sigma_excess", "Excess over the ideal denoiser", "λ(σ)‖D_θ − D*‖²/N"),
        "<b>Excess error over the ideal denoiser</b> per noise level, one line per evaluation: how far the learned denoiser is from the exact posterior mean E[y | x̃] (Gaussian mixtures only).",
        b,
    )?;
    Ok(())
}

/// The held-out images a run's page shows (the file keeps up to eight).
const SEGMENTATION_ROWS: usize = 4;

/// A segmentation run's first held-out images beside their true mask, the trained model's
/// predicted mask and its errors, as one inline PNG; when the artifact is missing or malformed,
/// a note that says so instead. Nothing for a run that is no segmentation (no `dice` rows).
fn segmentation_images(store: &Store, run: &RunRecord, d: &RunData) -> String {
    use crate::plot::images::{self, Column, Panels, CLASS_COLOR_NAMES};
    let Some(dice) = d.get("dice", None) else {
        return String::new();
    };
    let skip = |why: String| {
        format!("<p class=\"note\">No figure of held-out images and predictions: {why}.</p>\n")
    };
    let file = format!("<code>{}</code>", crate::train::SEGMENTATION_FILE);
    let path = store
        .artifacts_dir(&run.id)
        .join(crate::train::SEGMENTATION_FILE);
    if !path.exists() {
        let why = if finished(run) {
            String::new()
        } else {
            format!(", and this run is {}", run.display_status())
        };
        return skip(format!(
            "the run's folder has no {file} (the training loop writes it when training ends{why})"
        ));
    }
    let tensors = match crate::interop::load_f64(&path) {
        Ok(t) => t,
        Err(e) => {
            // Not the whole error: it names the file by its absolute path on this machine.
            let message = match &e {
                Error::Safetensors { message, .. } => message.clone(),
                Error::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            return skip(format!("{file} could not be read ({})", esc(&message)));
        }
    };
    let p = match Panels::from_tensors(&tensors) {
        Ok(p) => p,
        Err(why) => return skip(format!("{file} is malformed: {}", esc(&why))),
    };
    // The run's classes: one per recorded `dice_{k}`, plus the background.
    let recorded = (1usize..)
        .take_while(|k| d.has(&format!("dice_{k}")))
        .count();
    let classes = if recorded > 0 {
        recorded + 1
    } else {
        p.classes_seen()
    };
    let columns = [
        Column::Image,
        Column::Mask,
        Column::Prediction,
        Column::Errors,
    ];
    let rgb = images::compose(&p, classes, SEGMENTATION_ROWS, &columns);
    let png = match images::encode_png(&rgb) {
        Ok(png) => png,
        Err(why) => return skip(format!("the PNG could not be encoded ({})", esc(&why))),
    };

    let rows = SEGMENTATION_ROWS.min(p.count);
    let (up, down) = images::zoom(p.height, p.width);
    let size = if up > 1 {
        format!("{}×{} pixels, shown ×{up}", p.height, p.width)
    } else if down > 1 {
        format!(
            "{}×{} pixels, shown at 1/{down} (one pixel in {down})",
            p.height, p.width
        )
    } else {
        format!("{}×{} pixels", p.height, p.width)
    };
    let input = match p.channels {
        1 => "grey".to_string(),
        3 => "RGB".to_string(),
        c => format!("the mean of its {c} channels in grey"),
    };
    let masks = if classes <= 2 {
        "background black, foreground white".to_string()
    } else {
        let each: Vec<String> = (1..classes)
            .map(|k| {
                format!(
                    "{k} {}",
                    CLASS_COLOR_NAMES[(k - 1) % CLASS_COLOR_NAMES.len()]
                )
            })
            .collect();
        format!("background black, class {}", each.join(", "))
    };
    let wrong = if classes > 2 {
        ", yellow: another foreground class"
    } else {
        ""
    };
    let at = dice
        .last()
        .map_or(String::new(), |&(step, _)| format!(", at step {step}"));
    let dice_rows: Vec<String> = p.dice_per_image(classes)[..rows]
        .iter()
        .map(|&v| num(v))
        .collect();
    let invalid = p.invalid_labels(classes);
    let invalid = if invalid > 0 {
        format!(" Magenta marks the {invalid} mask or prediction pixels whose label is none of the classes 0…{}.", classes - 1)
    } else {
        String::new()
    };
    let caption = format!(
        "<b>Held-out images and predictions</b>: the first {rows} held-out images (of the {} in {file}; {size}), each min–max scaled on its own ({input}), beside its true mask, the trained model's predicted mask (the last evaluation{at}: the argmax over the class logits, or probability > 0.5 for a single-logit binary loss) and the errors (vermillion: false positive, foreground predicted on the background; sky blue: false negative, foreground missed{wrong}; grey: correct foreground; black: correct background). Masks: {masks}. Dice of each row, top to bottom (mean over the foreground classes, as in the overlap figure): {}.{invalid}",
        p.stored,
        dice_rows.join(", "),
    );
    let headings: Vec<&str> = columns.iter().map(|c| c.heading()).collect();
    html::raster_figure(
        &png,
        (rgb.width, rgb.height),
        &headings,
        images::GAP,
        &format!(
            "The first {rows} held-out images of run {}, their true masks, the predicted masks and the errors",
            run.name
        ),
        &caption,
    )
}

/// The most attention maps a page shows (the first layers' heads first): a large model's every
/// head would bury the rest of the page; all of them stay in the file.
const MAX_MAPS: usize = 16;

/// Heatmaps of the attention the run saved (`train::attention`), labelled with the sample's
/// tokens (through the run's `vocab.json`) or its prompt positions; none when there is no file.
fn attention_maps(store: &Store, run_id: &str) -> Vec<(crate::plot::Figure, String)> {
    let dir = store.artifacts_dir(run_id);
    let Ok(t) = crate::interop::load_f64(&dir.join(crate::train::attention::FILE)) else {
        return Vec::new();
    };
    let labels: Vec<String> = if let Some((_, tokens)) = t.get("tokens") {
        let vocab: Vec<String> = fs::read_to_string(dir.join("vocab.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        tokens
            .iter()
            .enumerate()
            .map(|(i, &v)| {
                let tok = vocab
                    .get(v as usize)
                    .cloned()
                    .unwrap_or_else(|| format!("{v}"));
                format!("{i}:{tok}")
            })
            .collect()
    } else if let Some((shape, _)) = t.get("y") {
        (0..shape.first().copied().unwrap_or(0))
            .flat_map(|i| [format!("x{}", i + 1), format!("y{}", i + 1)])
            .collect()
    } else {
        Vec::new()
    };
    let mut out = Vec::new();
    for l in 0.. {
        let Some((shape, values)) = t.get(&format!("layer.{l}")) else {
            break;
        };
        let &[heads, n, _] = shape.as_slice() else {
            break;
        };
        let labels: Vec<String> = if labels.len() == n {
            labels.clone()
        } else {
            (0..n).map(|i| i.to_string()).collect()
        };
        for h in 0..heads {
            if out.len() == MAX_MAPS {
                return out;
            }
            let rows = (0..n)
                .map(|i| values[(h * n + i) * n..(h * n + i + 1) * n].to_vec())
                .collect();
            let fig = crate::plot::Figure::Heatmap(crate::plot::Heatmap {
                title: format!("Attention, layer {l} head {h}"),
                x_label: "key".into(),
                y_label: "query".into(),
                columns: labels.clone(),
                rows: labels.clone(),
                values: rows,
                color_label: "attention".into(),
                log_color: false,
                annotate: false,
            });
            let caption =
                format!("<b>Attention of layer {l}, head {h}</b> on the first held-out sample.");
            out.push((fig, caption));
        }
    }
    out
}

/// The in-context error at each number of examples (the last evaluation's, with its 95%
/// bootstrap interval) for the model and every baseline, random and retrieval-chosen exemplars
/// side by side; nothing when the run recorded none.
fn icl_table(d: &RunData, b: &mut String) {
    let random = figures::icl_curves(d, false);
    if random.is_empty() {
        return;
    }
    let nearest = figures::icl_curves(d, true);
    let mut header = vec!["#k".to_string()];
    let mut cols = Vec::new();
    for (label, curves) in [("random", &random), ("retrieval", &nearest)] {
        // The model first, then the baselines in name order.
        let mut who: Vec<&String> = curves.keys().collect();
        who.sort_by_key(|w| (w.as_str() != "error", w.as_str()));
        for w in who {
            let name = if w == "error" { "transformer" } else { w };
            header.push(format!("#{} ({label})", name.replace('_', " ")));
            cols.push(&curves[w]);
        }
    }
    let ks: Vec<f64> = random
        .get("error")
        .or_else(|| random.values().next())
        .map(|c| c.0.iter().map(|p| p.0).collect())
        .unwrap_or_default();
    let rows: Vec<Vec<String>> = ks
        .iter()
        .map(|&k| {
            let mut row = vec![format!("{k}")];
            for (points, band) in &cols {
                let v = points.iter().find(|p| p.0 == k).map(|p| p.1);
                let ci = band.iter().find(|p| p.0 == k);
                row.push(match (v, ci) {
                    (Some(v), Some(&(_, lo, hi))) => {
                        format!("{} [{}, {}]", num(v), num(lo), num(hi))
                    }
                    (Some(v), None) => num(v),
                    _ => String::new(),
                });
            }
            row
        })
        .collect();
    b.push_str("<h2>In-context regression</h2>\n<p class=\"note\">Squared error (in units of the error of predicting 0: ÷ d, ÷ the sparsity for sparse functions, ÷ 1 for trees) against the number of in-context examples k, on the same held-out prompts for the transformer (its last evaluation) and every baseline, with 95% bootstrap intervals over prompts.</p>\n");
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    b.push_str(&html::table(&header, &rows));
}

/// The sweep's index page: status counts, sweep figures and the configuration table with links
/// to `runs/<id>.html`.
pub fn sweep_page(store: &Store, sweep: &str, metric: &str) -> Result<String, Error> {
    let configs = figures::configs(store, sweep)?;
    let mut counts: Vec<(&'static str, usize)> = Vec::new();
    let mut total = 0;
    for c in &configs {
        for id in &c.runs {
            total += 1;
            let s = store.run(id)?.map_or("pending", |r| r.display_status());
            match counts.iter_mut().find(|(k, _)| *k == s) {
                Some(e) => e.1 += 1,
                None => counts.push((s, 1)),
            }
        }
    }
    let mut b = String::new();
    let keys: Vec<String> = configs
        .first()
        .map(|c| c.values.iter().map(|(k, _)| k.clone()).collect())
        .unwrap_or_default();
    let seeds = configs.iter().map(|c| c.runs.len()).max().unwrap_or(0);
    let _ = writeln!(
        b,
        "<header><div class=\"kind\">sweep report</div><h1>{}</h1><div class=\"meta\"><span>{} configurations × up to {seeds} seeds = {total} runs</span><span>swept: {}</span><span>{}</span></div></header>",
        esc(sweep),
        configs.len(),
        esc(&keys.join(", ")),
        counts
            .iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect::<Vec<_>>()
            .join(", "),
    );

    b.push_str("<h2>Figures</h2>\n");
    if let Some(f) = figures::phase_diagram(
        store,
        &configs,
        metric,
        &format!("Phase diagram: final {metric}"),
    )? {
        b.push_str(&html::figure(
            &f,
            &format!("<b>Phase diagram.</b> Final {} (mean over seeds) for each pair of swept values; a grey cell with × is a configuration where at least one seed diverged.", esc(metric)),
        )?);
    }
    if let Some(f) = crate::plot::generative::versus_d(store, &configs, metric)? {
        b.push_str(&html::figure(
            &f,
            &format!("<b>{} against PFGM++'s augmented dimension D</b>: the mean over seeds (band: ± one standard error) of each configuration's final value, one line per value of the other swept keys. Small D is Poisson-flow-like (heavy-tailed perturbations), D = ∞ is diffusion.", esc(metric)),
        )?);
    }
    if let Some(s) = figures::scaling(
        store,
        sweep,
        &configs,
        metric,
        &format!("Scaling of final {metric}"),
    )? {
        let fit = &s.fit;
        b.push_str(&html::figure(
            &s.figure,
            &format!("<b>Scaling.</b> Final {} against <code>{}</code> (log–log), one point per configuration (the mean over its seeds; diverged runs left out, {} points), with the power law E + A·x<sup>−α</sup> fitted by Huber loss in log space and its 95% bootstrap band ({} resamples): the same points and fit as <code>cloudchamber fit --sweep {} --form power --x {}</code>.", esc(metric), esc(&s.x), s.points, fit.bootstrap, esc(sweep), esc(&s.x)),
        )?);
        let rows: Vec<Vec<String>> = fit
            .params
            .iter()
            .map(|e| {
                vec![
                    esc(&e.name),
                    num(e.value),
                    e.stderr.map_or("—".into(), num),
                    e.ci95
                        .map_or("—".into(), |c| format!("[{}, {}]", num(c[0]), num(c[1]))),
                    match (e.identified, e.why.as_deref()) {
                        (Some(false), Some(w)) => format!("no: {}", esc(w)),
                        (Some(_), _) => "yes".into(),
                        (None, _) => "—".into(),
                    },
                ]
            })
            .collect();
        b.push_str(&html::table(
            &[
                "parameter",
                "#estimate",
                "#bootstrap stderr",
                "#95% interval",
                "identified by the data",
            ],
            &rows,
        ));
    }
    if let Some(f) =
        figures::seed_curves(store, &configs, metric, &format!("{metric} over training"))?
    {
        let note = if configs.len() > 8 {
            " Eight configurations spread over the ranking by final value (best to worst) are shown."
        } else {
            ""
        };
        b.push_str(&html::figure(
            &f,
            &format!("<b>Training curves.</b> {} per configuration: mean over seeds with a ±1 standard error band.{note}", esc(metric)),
        )?);
    }

    b.push_str("<h2>Configurations</h2>\n");
    let mut head: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    head.extend([
        format!("#final {metric}"),
        "#± stderr".into(),
        "#seeds".into(),
        "runs".into(),
    ]);
    let head_refs: Vec<&str> = head.iter().map(String::as_str).collect();
    let mut rows = Vec::new();
    for c in &configs {
        let mut finals = Vec::new();
        let mut links = Vec::new();
        for id in &c.runs {
            let run = store.run(id)?;
            let v = figures::final_value(store, id, metric)?;
            if v.is_finite() {
                finals.push(v);
            }
            let short = &id[..id.len().min(8)];
            links.push(match &run {
                Some(r) => format!(
                    "<a href=\"runs/{}.html\">{}</a>&nbsp;<span class=\"badge {}\">{}</span>",
                    esc(id),
                    esc(short),
                    r.display_status(),
                    r.display_status()
                ),
                None => format!(
                    "{}&nbsp;<span class=\"badge pending\">pending</span>",
                    esc(short)
                ),
            });
        }
        let (m, se) = if finals.is_empty() {
            (f64::NAN, f64::NAN)
        } else {
            figures::mean_stderr(&finals)
        };
        let mut row: Vec<String> = c
            .values
            .iter()
            .map(|(_, v)| {
                format!(
                    "<span title=\"{}\">{}</span>",
                    esc(v),
                    esc(&pretty_value(v))
                )
            })
            .collect();
        row.extend([
            num(m),
            if finals.len() > 1 {
                num(se)
            } else {
                "—".into()
            },
            format!("{}/{}", finals.len(), c.runs.len()),
            links.join(" "),
        ]);
        rows.push(row);
    }
    b.push_str(&html::table(&head_refs, &rows));
    let _ = writeln!(
        b,
        "<p class=\"note\">Final {} averages the seeds that ended with a finite value (diverged runs are counted in “seeds” as missing). Export every sample with <code>cloudchamber export --sweep {} --format parquet -o {}.parquet</code>.</p>",
        esc(metric),
        esc(sweep),
        esc(sweep)
    );
    Ok(html::page(
        &format!("{sweep} — cloudchamber sweep"),
        &b,
        &generator(),
    ))
}

/// What a report covers.
pub enum Target {
    Run(Box<RunRecord>),
    Sweep(String),
}

/// Resolves `query` to a sweep (by exact name) or else a run.
pub fn target(store: &Store, query: &str) -> Result<Target, Error> {
    if store.sweeps()?.iter().any(|s| s == query) {
        return Ok(Target::Sweep(query.to_string()));
    }
    Ok(Target::Run(Box::new(store.resolve(query)?)))
}

fn write(path: &Path, text: &str) -> Result<(), Error> {
    fs::write(path, text).map_err(Error::io(path.to_path_buf()))
}

/// Writes the report into `dir` (created if needed); returns the path of its entry page
/// (`index.html`) and the number of pages written.
pub fn write_report(
    store: &Store,
    target: &Target,
    dir: &Path,
    metric: &str,
) -> Result<(PathBuf, usize), Error> {
    fs::create_dir_all(dir).map_err(Error::io(dir.to_path_buf()))?;
    let index = dir.join("index.html");
    match target {
        Target::Run(run) => {
            write(&index, &run_page(store, run, None)?)?;
            Ok((index, 1))
        }
        Target::Sweep(name) => {
            let runs_dir = dir.join("runs");
            fs::create_dir_all(&runs_dir).map_err(Error::io(runs_dir.clone()))?;
            let mut pages = 1;
            for (id, _) in store.sweep_runs(name)? {
                if let Some(run) = store.run(&id)? {
                    let back = format!("sweep {name}");
                    write(
                        &runs_dir.join(format!("{id}.html")),
                        &run_page(store, &run, Some(("../index.html", &back)))?,
                    )?;
                    pages += 1;
                }
            }
            write(&index, &sweep_page(store, name, metric)?)?;
            Ok((index, pages))
        }
    }
}

/// Whether a run ended (a report of a running run is a snapshot).
pub fn finished(r: &RunRecord) -> bool {
    matches!(
        r.status,
        RunStatus::Completed | RunStatus::Diverged | RunStatus::Failed
    )
}
