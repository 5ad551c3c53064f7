//! The `cloudchamber` binary: parse → run → exit code. Errors are printed once, with hints.

mod cli;

use std::process::ExitCode;

use clap::Parser;

/// Large buffers on 2 MiB pages (fewer TLB misses; see `engine::hugepages`).
#[global_allocator]
static ALLOC: cloudchamber::engine::hugepages::HugePageAlloc =
    cloudchamber::engine::hugepages::HugePageAlloc;

fn main() -> ExitCode {
    // Die quietly on a closed pipe (`cloudchamber ls | head`), as Unix tools do, instead of
    // panicking in `println!`.
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of one signal before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    cloudchamber::interrupt::install();
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            for hint in e.hints() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(e.exit_code())
        }
    }
}
