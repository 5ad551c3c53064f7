//! `cloudchamber sweep FILE [--set key=value]… --dry-run`

use std::path::PathBuf;

use cloudchamber::sweep::{self, format_value};
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The experiment file with a [sweep] section (TOML).
    file: PathBuf,
    /// Override a key of the base experiment, e.g. `--set train.steps=500` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// List every run (id and swept values) and the count; run nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(a: Args) -> Result<(), Error> {
    // Expanding validates every point, so a bad sweep fails here, before any work.
    let sw = sweep::load(&a.file, &a.set)?;
    if !a.dry_run {
        return Err(Error::Invalid {
            what: format!("sweep {}", a.file.display()),
            message: format!(
                "running a sweep is not implemented yet ({} runs declared; nothing was run)",
                sw.runs.len()
            ),
            hint: format!(
                "`cloudchamber sweep {} --dry-run` lists the runs; each one can be run alone with \
                 `cloudchamber run` and the same --set values",
                a.file.display()
            ),
        });
    }
    println!("sweep {} ({})", sw.name, sw.path.display());
    if sw.decl.factors.is_empty() && sw.decl.seeds.is_none() {
        println!("no axes: one run");
    }
    let width = sw
        .decl
        .factors
        .iter()
        .map(|f| f.keys.join(" + ").len())
        .chain(sw.decl.seeds.as_ref().map(|_| 4))
        .max()
        .unwrap_or(0);
    for f in &sw.decl.factors {
        let points: Vec<String> = f
            .points
            .iter()
            .map(|p| {
                let vs: Vec<String> = p.iter().map(format_value).collect();
                if vs.len() == 1 {
                    vs[0].clone()
                } else {
                    format!("({})", vs.join(", "))
                }
            })
            .collect();
        println!(
            "  {:width$}  {}  ({}, {})",
            f.keys.join(" + "),
            points.join(" "),
            f.form,
            f.len()
        );
    }
    if let Some(seeds) = &sw.decl.seeds {
        let s: Vec<String> = seeds.iter().map(u64::to_string).collect();
        println!("  {:width$}  {}  ({})", "seed", s.join(" "), seeds.len());
    }
    let digits = (sw.runs.len().max(1) - 1).to_string().len();
    for r in &sw.runs {
        println!("{:>digits$}  {}  {}", r.index, r.id, r.label());
    }
    println!(
        "{} run{} (dry run: nothing was run)",
        sw.runs.len(),
        if sw.runs.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
