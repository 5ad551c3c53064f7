//! A persistent worker pool for the engine's data-parallel kernels.
//!
//! Spawning scoped threads costs tens of microseconds per call: over the ~100 GEMMs and
//! elementwise passes of a GPT step that is milliseconds. Here workers live for the process and
//! wait on their own mailbox (a pointer to the caller's closure), spinning briefly before they
//! park. Work is split statically — task `t` of `n` always covers the same block — so a
//! kernel's result never depends on which thread ran which task (bit-identical for any thread
//! count, as the engine promises).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks: long enough to bridge the serial gaps
/// between kernels of one training step, short enough not to hold a core between steps.
const SPIN: Duration = Duration::from_micros(200);

type Task<'a> = dyn Fn(usize) + Sync + 'a;

/// What a worker is handed: the task closure and its index.
struct Job {
    task: *const Task<'static>,
    index: usize,
    panicked: AtomicBool,
}

struct Worker {
    mailbox: AtomicPtr<Job>,
    sleeping: AtomicBool,
    thread: Thread,
}

struct Pool {
    workers: Mutex<Vec<Arc<Worker>>>,
    /// One parallel region at a time; a second caller runs its tasks inline.
    busy: Mutex<()>,
}

thread_local! {
    /// Set inside a task: nested regions run inline instead of waiting on busy workers.
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| Pool {
        workers: Mutex::new(Vec::new()),
        busy: Mutex::new(()),
    })
}

fn worker_loop(me: Arc<Worker>) {
    IN_TASK.with(|t| t.set(true));
    loop {
        let mut idle_since = None;
        let job = loop {
            let p = me.mailbox.load(Ordering::Acquire);
            if !p.is_null() {
                break p;
            }
            let since = *idle_since.get_or_insert_with(Instant::now);
            if since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            // Dekker handshake with `run`: announce sleep, re-check, then park.
            me.sleeping.store(true, Ordering::SeqCst);
            if me.mailbox.load(Ordering::SeqCst).is_null() {
                std::thread::park();
            }
            me.sleeping.store(false, Ordering::SeqCst);
            idle_since = None;
        };
        // SAFETY: `run` keeps the job (and the closure it points to) alive until we clear the
        // mailbox below.
        let job = unsafe { &*job };
        let task = unsafe { &*job.task };
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task(job.index)));
        if ok.is_err() {
            job.panicked.store(true, Ordering::Relaxed);
        }
        me.mailbox.store(std::ptr::null_mut(), Ordering::Release);
    }
}

/// Runs `task(0) … task(n − 1)`, task 0 on the calling thread and the others on pool workers,
/// and returns when all are done. Inside another task, or while another thread holds the pool,
/// the tasks run inline in order (same results: each task's work does not depend on where it
/// runs).
pub fn run(n: usize, task: &(dyn Fn(usize) + Sync)) {
    if n <= 1 || IN_TASK.with(|t| t.get()) {
        (0..n).for_each(task);
        return;
    }
    let p = pool();
    let Ok(_region) = p.busy.try_lock() else {
        (0..n).for_each(task);
        return;
    };
    let workers: Vec<Arc<Worker>> = {
        let mut ws = p.workers.lock().unwrap_or_else(|e| e.into_inner());
        while ws.len() < n - 1 {
            let (tx, rx) = std::sync::mpsc::channel::<Arc<Worker>>();
            let handle = std::thread::Builder::new()
                .name(format!("cc-pool-{}", ws.len() + 1))
                .spawn(move || {
                    if let Ok(me) = rx.recv() {
                        worker_loop(me)
                    }
                })
                .expect("spawning a pool worker thread");
            let worker = Arc::new(Worker {
                mailbox: AtomicPtr::new(std::ptr::null_mut()),
                sleeping: AtomicBool::new(false),
                thread: handle.thread().clone(),
            });
            let _ = tx.send(worker.clone());
            ws.push(worker);
        }
        ws[..n - 1].to_vec()
    };
    // SAFETY (lifetime erasure): every job is finished — its mailbox cleared — before this
    // function returns, so no worker touches `task` after the borrow ends.
    let task_static: *const Task<'static> =
        unsafe { std::mem::transmute::<*const Task<'_>, *const Task<'static>>(task) };
    let jobs: Vec<Job> = (1..n)
        .map(|index| Job {
            task: task_static,
            index,
            panicked: AtomicBool::new(false),
        })
        .collect();
    for (w, job) in workers.iter().zip(&jobs) {
        w.mailbox
            .store(job as *const Job as *mut Job, Ordering::SeqCst);
        if w.sleeping.load(Ordering::SeqCst) {
            w.thread.unpark();
        }
    }
    let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        IN_TASK.with(|t| t.set(true));
        task(0);
    }));
    IN_TASK.with(|t| t.set(false));
    for w in &workers {
        while !w.mailbox.load(Ordering::Acquire).is_null() {
            std::hint::spin_loop();
        }
    }
    if let Err(e) = mine {
        std::panic::resume_unwind(e);
    }
    if jobs.iter().any(|j| j.panicked.load(Ordering::Relaxed)) {
        panic!("a pool task panicked");
    }
}

/// Splits `0..len` into `parts` contiguous ranges whose starts are multiples of `align` (the
/// last takes the rest); empty ranges are possible when `len` is small.
pub fn split(len: usize, parts: usize, align: usize) -> impl Fn(usize) -> std::ops::Range<usize> {
    let per = len.div_ceil(parts.max(1)).div_ceil(align.max(1)) * align.max(1);
    move |t| (t * per).min(len)..((t + 1) * per).min(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_task_runs_once_and_nested_regions_run_inline() {
        for n in [1, 2, 3, 5] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let nested = AtomicUsize::new(0);
            for _ in 0..50 {
                run(n, &|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                    run(2, &|_| {
                        nested.fetch_add(1, Ordering::Relaxed);
                    });
                });
            }
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 50));
            assert_eq!(nested.load(Ordering::Relaxed), 100 * n);
        }
    }

    #[test]
    fn split_covers_the_range_in_aligned_blocks() {
        let r = split(203, 3, 12);
        assert_eq!((r(0), r(1), r(2)), (0..72, 72..144, 144..203));
        let r = split(5, 4, 12);
        assert_eq!((r(0), r(1)), (0..5, 5..5));
    }
}
