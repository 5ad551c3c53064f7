//! `cloudchamber collect [SWEEP]`: imports the finished shards of runs executed elsewhere (a
//! cluster's jobs) into the store. Idempotent; `status` does it too.

use std::path::Path;

use cloudchamber::sweep::shard;
use cloudchamber::Error;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// A sweep name (every recorded sweep when left out).
    sweep: Option<String>,
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let mut store = super::open_existing(store_path)?;
    let names = match a.sweep {
        Some(n) => vec![n],
        None => store.sweeps()?,
    };
    for name in names {
        let c = shard::collect_sweep(&mut store, &name)?;
        println!(
            "sweep {name}: imported {} run{} from {} ({} imported before, {} kept from runs made here)",
            c.imported.len(),
            if c.imported.len() == 1 { "" } else { "s" },
            shard::dir(store_path).display(),
            c.already,
            c.kept
        );
        print_partial(&c);
    }
    Ok(())
}

/// One line per shard left out because it is not complete.
pub(super) fn print_partial(c: &shard::Collected) {
    for (id, why) in &c.partial {
        println!("  shard of run {id} left out until complete: {why}");
    }
}
