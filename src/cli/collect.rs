//! `cloudchamber collect [SWEEP]`: imports the finished shards of runs executed elsewhere (a
//! cluster's jobs) into the store. Idempotent; `status` does it too.

use std::path::Path;

use cloudchamber::store::Store;
use cloudchamber::sweep::shard;
use cloudchamber::Error;

/// `[SWEEP]` (`status` takes the same argument).
#[derive(clap::Args, Debug)]
pub struct Args {
    /// A sweep name (every recorded sweep when left out).
    sweep: Option<String>,
}

impl Args {
    /// The sweep named, or every recorded sweep.
    pub(super) fn sweeps(self, store: &Store) -> Result<Vec<String>, Error> {
        Ok(match self.sweep {
            Some(n) => vec![n],
            None => store.sweeps()?,
        })
    }
}

pub fn run(store_path: &Path, a: Args) -> Result<(), Error> {
    let mut store = super::open_existing_writable(store_path)?;
    let names = a.sweeps(&store)?;
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
