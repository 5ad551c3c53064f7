//! `cloudchamber plot RUN|--sweep NAME --figure KIND [--metric M] --format svg|png -o FILE`:
//! one figure to a file, for papers.

use std::path::{Path, PathBuf};

use cloudchamber::plot::figures::{self, RunData};
use cloudchamber::plot::{Figure, Format};
use cloudchamber::Error;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq)]
enum Kind {
    /// Train and test loss over steps (run).
    Loss,
    /// Train and test accuracy over steps (run).
    Accuracy,
    /// A per-layer observable (--metric, default act_std) as a layer × step heatmap (run).
    Heatmap,
    /// A per-layer observable (--metric, default act_std), one line per layer (run).
    Layers,
    /// A learned activation or normalization parameter over time, per layer (--metric, e.g.
    /// act_a; default the first that moved) (run).
    Params,
    /// Mean-field qˡ against the measured pre-activation second moment (run).
    Theory,
    /// Weight norm with test accuracy (or loss): the grokking view (run).
    WeightNorm,
    /// --metric over steps per configuration, mean ± stderr over seeds (sweep).
    Seeds,
    /// Final --metric over two swept keys, diverged cells marked (sweep).
    Phase,
    /// Final --metric against one numeric swept key, with a power-law fit and band (sweep).
    Scaling,
}

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The run (id, unique prefix or name); leave out with --sweep.
    run: Option<String>,
    /// A recorded sweep, for the seeds, phase and scaling figures.
    #[arg(long, value_name = "NAME")]
    sweep: Option<String>,
    #[arg(long, value_enum)]
    figure: Kind,
    /// The metric: per-layer for heatmap/layers (default act_std), whole-network for the
    /// sweep figures (default test_loss).
    #[arg(long)]
    metric: Option<String>,
    /// Log scale for the heatmap colours or the layer lines.
    #[arg(long)]
    log: bool,
    /// svg (vector, text left to the viewer's fonts) or png (2× size, embedded font).
    #[arg(long, value_enum)]
    format: Option<Format>,
    /// Output file; the format follows its extension unless --format is given.
    #[arg(long, short)]
    output: PathBuf,
}

fn invalid(what: &str, message: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Invalid {
        what: what.into(),
        message: message.into(),
        hint: hint.into(),
    }
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let store = super::open_existing(store_path)?;
    if let Some(m) = &a.metric {
        super::known_metric(&store, "--metric", m)?;
    }
    let format = match (a.format, a.output.extension().and_then(|e| e.to_str())) {
        (Some(f), _) => f,
        (None, Some("png")) => Format::Png,
        (None, Some("svg")) => Format::Svg,
        (None, _) => {
            return Err(invalid(
                &a.output.display().to_string(),
                "cannot tell the format from the extension",
                "name the file .svg or .png, or pass --format svg|png",
            ))
        }
    };
    let sweep_kind = matches!(a.figure, Kind::Seeds | Kind::Phase | Kind::Scaling);
    let figure: Option<Figure> = if sweep_kind {
        let Some(name) = &a.sweep else {
            return Err(invalid(
                "--figure",
                format!("{:?} is a sweep figure", a.figure).to_lowercase(),
                "add --sweep NAME (`cloudchamber status` lists the sweeps)",
            ));
        };
        let metric = a.metric.as_deref().unwrap_or("test_loss");
        let configs = figures::configs(&store, name)?;
        match a.figure {
            Kind::Seeds => figures::seed_curves(&store, &configs, metric, name)?,
            Kind::Phase => figures::phase_diagram(&store, &configs, metric, name)?,
            _ => figures::scaling(&store, name, &configs, metric, name)?.map(|s| s.figure),
        }
    } else {
        let Some(q) = &a.run else {
            return Err(invalid(
                "plot",
                "name a run",
                "`cloudchamber ls` lists the runs",
            ));
        };
        let run = store.resolve(q)?;
        let d = RunData::load(&store, &run.id)?;
        let metric = a.metric.as_deref().unwrap_or("act_std");
        let title = format!("{} — {}", run.name, metric);
        match a.figure {
            Kind::Loss => figures::loss_curves(&d, &run.name),
            Kind::Accuracy => figures::accuracy_curves(&d, &run.name),
            Kind::Heatmap => figures::layer_heatmap(&d, metric, a.log, &title),
            Kind::Layers => figures::layer_lines(&d, metric, a.log, &title),
            Kind::Params => {
                // The named parameter, else the first learned one that moved.
                let names: Vec<&str> = match a.metric.as_deref() {
                    Some(m) => vec![m],
                    None => figures::LEARNED.to_vec(),
                };
                names
                    .into_iter()
                    .find_map(|n| figures::learned_param(&d, n, &format!("{} — {n}", run.name)))
            }
            Kind::Theory => figures::theory_vs_measured(&d, &run.name),
            _ => figures::weight_norm_view(&d, &run.name),
        }
    };
    let Some(figure) = figure else {
        return Err(invalid(
            "plot",
            format!(
                "nothing to draw: the {} figure needs metrics this {} did not record",
                format!("{:?}", a.figure).to_lowercase(),
                if sweep_kind { "sweep" } else { "run" }
            ),
            "check the names with `cloudchamber show RUN`; phase needs two swept keys, scaling one numeric key",
        ));
    };
    figure.save(&a.output, format)?;
    eprintln!("wrote {}", a.output.display());
    Ok(())
}
