//! `cloudchamber coordcheck FILE [--widths …] [--steps S] [--seeds K] [-o DIR]`: a coordinate
//! check of an MLP experiment over a ladder of widths, its slopes printed beside the
//! parametrization's predicted exponents, and written to `DIR/coordcheck.csv` and
//! `DIR/index.html` (one figure per step: mean |activation| per layer against width).

use std::fmt::Write as _;
use std::path::PathBuf;

use cloudchamber::coordcheck;
use cloudchamber::plot::{Figure, LineChart, Series, SeriesColor};
use cloudchamber::report::html;
use cloudchamber::spec;
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file (an MLP).
    file: PathBuf,
    /// Override a key of the file, e.g. `--set model.parametrization=mup` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// The widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 128, 256, 512, 1024])]
    widths: Vec<usize>,
    /// Updates to follow (the forward pass of step t sees t updates).
    #[arg(long, default_value_t = 4)]
    steps: u64,
    /// Seeds averaged at each width.
    #[arg(long, default_value_t = 3, value_parser = super::positive)]
    seeds: usize,
    /// Output folder (default `coordcheck-<file name>`).
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<(), Error> {
    if a.widths.len() < 2 || a.widths.iter().any(|&w| w == 0) {
        return Err(Error::Invalid {
            what: "--widths".into(),
            message: "needs at least two widths, each ≥ 1".into(),
            hint: "e.g. --widths 64,128,256,512,1024".into(),
        });
    }
    let loaded = spec::load(&a.file, &a.set)?;
    let spec = &loaded.spec;
    let base = loaded.base_dir.clone();
    let data = |seed: u64| -> Result<cloudchamber::task::Dataset, Error> {
        spec.task
            .generate(seed, &base)
            .map_err(|e| Error::from(e).located(&a.file))
    };
    let c = coordcheck::run(spec, &a.widths, a.steps, a.seeds, &data)?;
    println!("cpu: {}", cloudchamber::os::cpu_description());
    println!(
        "coordinate check: {} ({}), {} optimizer, widths {:?}, {} seed(s), {} update(s)",
        a.file.display(),
        c.parametrization.name(),
        if c.adam { "Adam-like" } else { "SGD-like" },
        c.widths,
        c.seeds,
        a.steps
    );
    println!("log–log slope of mean |activation| against width, per layer (readout last):");
    let mut head = String::from("  step");
    for l in 0..=c.depth {
        let _ = write!(
            head,
            "  {:>9}",
            if l == c.depth {
                "readout".to_string()
            } else {
                format!("layer {l}")
            }
        );
    }
    println!("{head}");
    for (t, row) in c.slope.iter().enumerate() {
        let mut line = format!("  {t:>4}");
        for s in row {
            let _ = write!(line, "  {s:>9.3}");
        }
        println!("{line}");
    }
    let mut line = String::from("  pred");
    for p in &c.predicted {
        let _ = write!(line, "  {p:>9.2}");
    }
    println!("{line}   (exponent of each layer's change after an update, from the rules)");

    let dir = a.output.clone().unwrap_or_else(|| {
        let stem = a
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        PathBuf::from(format!(
            "coordcheck-{}",
            cloudchamber::names::component(&stem)
        ))
    });
    std::fs::create_dir_all(&dir).map_err(Error::io(dir.clone()))?;
    let mut csv = String::from("step,layer,width,act_abs,slope,predicted_update_exponent\n");
    for (t, layers) in c.abs.iter().enumerate() {
        for (l, ys) in layers.iter().enumerate() {
            for (w, y) in c.widths.iter().zip(ys) {
                let _ = writeln!(csv, "{t},{l},{w},{y},{},{}", c.slope[t][l], c.predicted[l]);
            }
        }
    }
    let path = dir.join("coordcheck.csv");
    std::fs::write(&path, csv).map_err(Error::io(path.clone()))?;
    let mut body = format!(
        "<header><div class=\"kind\">coordinate check</div><h1>{}</h1><div class=\"meta\"><span>{}</span><span>widths {:?}</span><span>{} seeds</span></div></header>\n",
        html::esc(&a.file.display().to_string()),
        c.parametrization.name(),
        c.widths,
        c.seeds
    );
    for t in 0..c.abs.len() {
        let n = c.depth + 1;
        let series = (0..n)
            .map(|l| Series {
                label: if l == c.depth {
                    format!("readout (slope {:.2})", c.slope[t][l])
                } else {
                    format!("layer {l} (slope {:.2})", c.slope[t][l])
                },
                points: c
                    .widths
                    .iter()
                    .zip(&c.abs[t][l])
                    .map(|(&w, &y)| (w as f64, y))
                    .collect(),
                markers: true,
                color: SeriesColor::Ordered(l, n),
                ..Series::default()
            })
            .collect();
        let fig = Figure::Lines(LineChart {
            title: format!("Step {t}: mean |activation| against width"),
            x_label: "width".into(),
            y_label: "mean |activation| (mean over seeds)".into(),
            x_log: true,
            y_log: true,
            series,
            ..LineChart::default()
        });
        body.push_str(&html::figure(&fig, &format!("<b>Step {t}</b> (after {t} update{}): one line per layer, dark: input side, light: readout.", if t == 1 { "" } else { "s" }))?);
    }
    let page = html::page(
        "coordinate check — cloudchamber",
        &body,
        &format!("cloudchamber {}", env!("CARGO_PKG_VERSION")),
    );
    let index = dir.join("index.html");
    std::fs::write(&index, page).map_err(Error::io(index.clone()))?;
    println!("wrote {} and {}", path.display(), index.display());
    Ok(())
}
