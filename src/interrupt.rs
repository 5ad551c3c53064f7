//! Graceful stop on Ctrl-C (SIGINT) and SIGTERM (`kill`, a scheduler's cancellation, preemption
//! or time limit): the handler only sets a flag; training loops check it at each step, write a
//! checkpoint and end the run as `interrupted`, and the sweep executor starts no new run. A
//! second signal ends the process at once (the store stays consistent either way, and the runs
//! resume from their checkpoints). The process exits with 128 + the signal, as a shell reports.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);
/// The signal that asked for the stop (SIGINT when the request came from elsewhere).
static SIGNAL: AtomicI32 = AtomicI32::new(2);

/// The exit code of a stopped process: 128 + the signal (130 for Ctrl-C, 143 for SIGTERM).
pub fn exit_code() -> u8 {
    (128 + SIGNAL.load(Ordering::Relaxed)).clamp(0, 255) as u8
}

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Asks every training loop of this process to stop at its next step.
pub fn request() {
    STOP.store(true, Ordering::Relaxed);
}

/// Clears a stop request once it has been honoured, for a process that goes on after it (the
/// Python module: a notebook kernel interrupted once keeps running cells). The CLI exits
/// instead.
pub fn reset() {
    STOP.store(false, Ordering::Relaxed);
    SIGNAL.store(2, Ordering::Relaxed);
}

#[cfg(unix)]
extern "C" fn on_signal(sig: libc::c_int) {
    if STOP.swap(true, Ordering::Relaxed) {
        // The second signal: leave now.
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(128 + sig) };
    }
    SIGNAL.store(sig, Ordering::Relaxed);
}

/// Installs the SIGINT and SIGTERM handlers (Unix; elsewhere the signals keep their default
/// effect).
pub fn install() {
    #[cfg(unix)]
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only touches atomics and calls `_exit`, all async-signal-safe.
        unsafe {
            libc::signal(sig, on_signal as *const () as libc::sighandler_t);
        }
    }
}
