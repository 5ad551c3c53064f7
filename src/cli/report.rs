//! `cloudchamber report RUN|SWEEP [-o DIR] [--metric M]`: a static, self-contained HTML report.

use std::path::{Path, PathBuf};

use cloudchamber::report::{self, Target};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A sweep name, or a run (id, unique prefix or name).
    target: String,
    /// Output directory (default `report-<name>`); the entry page is `index.html` in it.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// The whole-network metric a sweep's figures and table compare.
    #[arg(long, default_value = "test_loss")]
    metric: String,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let store = super::open_existing(store_path)?;
    let target = report::target(&store, &a.target)?;
    let dir = a.output.clone().unwrap_or_else(|| {
        let name = match &target {
            Target::Run(r) => r.name.clone(),
            Target::Sweep(s) => s.clone(),
        };
        PathBuf::from(format!("report-{}", cloudchamber::names::component(&name)))
    });
    let (index, pages) = {
        let _slow = super::slow::Slow::start(format!("writing the report into {}", dir.display()));
        report::write_report(&store, &target, &dir, &a.metric)?
    };
    if let Target::Run(r) = &target {
        if !report::finished(r) {
            eprintln!(
                "note: run {} is {}; the report is a snapshot",
                r.id,
                r.display_status()
            );
        }
    }
    eprintln!(
        "wrote {} ({pages} page{})",
        index.display(),
        if pages == 1 { "" } else { "s" }
    );
    Ok(())
}
