//! Long work is never silent: a step that takes over a second says what it is doing on
//! stderr (a spinner with the elapsed time on a terminal, one plain line otherwise), so stdout
//! stays clean for pipes (`fit … | tee`, `summarize … > table.txt`).

use std::io::IsTerminal;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The silence allowed before a step is announced.
const QUIET: Duration = Duration::from_secs(1);

/// A step in progress; announced if it is still running after [`QUIET`], and its time said
/// when it ends (on drop).
pub struct Slow {
    what: String,
    start: Instant,
    done: Arc<(Mutex<bool>, Condvar)>,
    watcher: Option<JoinHandle<bool>>,
}

impl Slow {
    pub fn start(what: impl Into<String>) -> Slow {
        let what = what.into();
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let watcher = {
            let (what, done) = (what.clone(), done.clone());
            std::thread::spawn(move || watch(&what, &done))
        };
        Slow {
            what,
            start: Instant::now(),
            done,
            watcher: Some(watcher),
        }
    }
}

/// Waits out the quiet second, then shows the step until it is done; returns whether it
/// was announced.
fn watch(what: &str, done: &(Mutex<bool>, Condvar)) -> bool {
    let (lock, cvar) = done;
    let Ok(guard) = lock.lock() else {
        return false;
    };
    let Ok((guard, timeout)) = cvar.wait_timeout_while(guard, QUIET, |d| !*d) else {
        return false;
    };
    if !timeout.timed_out() {
        return false;
    }
    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{spinner} {msg} {elapsed}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.set_message(what.to_string());
        bar.enable_steady_tick(Duration::from_millis(120));
        Some(bar)
    } else {
        eprintln!("{what}…");
        None
    };
    // The guard is released at once: only the wake-up matters here.
    drop(cvar.wait_while(guard, |d| !*d));
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    true
}

impl Drop for Slow {
    fn drop(&mut self) {
        let (lock, cvar) = &*self.done;
        if let Ok(mut d) = lock.lock() {
            *d = true;
        }
        cvar.notify_all();
        let announced = self
            .watcher
            .take()
            .is_some_and(|w| w.join().unwrap_or(false));
        if announced {
            eprintln!("{}: {:.1} s", self.what, self.start.elapsed().as_secs_f64());
        }
    }
}
