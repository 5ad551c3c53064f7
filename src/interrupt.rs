//! Graceful stop on Ctrl-C (SIGINT): the handler only sets a flag; training loops check it at
//! each step, write a checkpoint and end the run as `interrupted`, and the sweep executor starts
//! no new run. A second Ctrl-C ends the process at once (the store stays consistent either way,
//! and the runs resume from their checkpoints).

use std::sync::atomic::{AtomicBool, Ordering};

static STOP: AtomicBool = AtomicBool::new(false);

/// Whether a stop was requested.
pub fn requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Asks every training loop of this process to stop at its next step.
pub fn request() {
    STOP.store(true, Ordering::Relaxed);
}

#[cfg(unix)]
extern "C" fn on_sigint(_: libc::c_int) {
    if STOP.swap(true, Ordering::Relaxed) {
        // Second Ctrl-C: leave now (async-signal-safe).
        // SAFETY: `_exit` is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// Installs the SIGINT handler (Unix; elsewhere Ctrl-C keeps its default effect).
pub fn install() {
    #[cfg(unix)]
    // SAFETY: the handler only touches an atomic and calls `_exit`, both async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
    }
}

/// Makes SIGTERM a graceful stop too (checkpoint, end as interrupted): a batch scheduler sends
/// it on cancellation, preemption and time limits, before SIGKILL.
pub fn install_sigterm() {
    #[cfg(unix)]
    // SAFETY: as in `install`.
    unsafe {
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
}
