//! A persistent worker pool for the engine's data-parallel kernels.
//!
//! Spawning scoped threads costs tens of microseconds per call: over the ~100 GEMMs and
//! elementwise passes of a GPT step that is milliseconds. Here workers live for the process and
//! wait on their own mailbox (a pointer to the caller's closure), spinning briefly before they
//! park. Work is cut into fixed blocks — statically (`run`: task `t` of `n` always covers the
//! same block) or in contiguous shares whose leftovers idle threads take (`run_items`) — and
//! every block is computed the same way wherever it runs, so a kernel's result never depends on
//! the thread count or on which thread ran what (bit-identical, as the engine promises).

use std::cell::{Cell, UnsafeCell};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks: long enough to bridge the serial gaps
/// between kernels of one training step, short enough not to hold a core between steps.
const SPIN: Duration = Duration::from_micros(200);

type Task<'a> = dyn Fn(usize) + Sync + 'a;

/// A raw pointer (or a struct of them) handed to pool tasks that touch disjoint parts of its
/// buffer, or only read it.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr<T>(pub T);
// SAFETY: a `SendPtr` is only built (in `ops` and `sgemm`) around pointers into buffers that
// outlive the parallel region, whose tasks read them or write disjoint parts of them.
unsafe impl<T> Sync for SendPtr<T> {}
// SAFETY: as for `Sync`.
unsafe impl<T> Send for SendPtr<T> {}

impl<T: Copy> SendPtr<T> {
    /// The pointer. A method, so a closure captures the whole wrapper (a closure naming the
    /// field `.0` would capture the bare pointer, which may not cross threads).
    pub fn get(self) -> T {
        self.0
    }
}

struct Worker {
    /// The task closure and the index this worker runs; written by `run` only while `pending`
    /// is false, read by the worker only while it is true.
    job: UnsafeCell<Option<(*const Task<'static>, usize)>>,
    pending: AtomicBool,
    panicked: AtomicBool,
    sleeping: AtomicBool,
    thread: Thread,
}
// SAFETY: `job` is handed over through `pending` (release/acquire), see above; the other
// fields are atomics and a `Thread` handle.
unsafe impl Sync for Worker {}
// SAFETY: as for `Sync`.
unsafe impl Send for Worker {}

struct Pool {
    /// Locked by `run` for a whole region (so reused without copying).
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
        let since = Instant::now();
        let mut spins = 0u32;
        while !me.pending.load(Ordering::Acquire) {
            spins = spins.wrapping_add(1);
            // Reading the clock costs more than a spin: look every 64.
            if !spins.is_multiple_of(64) || since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            // Dekker handshake with `run`: announce sleep, re-check, then park.
            me.sleeping.store(true, Ordering::SeqCst);
            if !me.pending.load(Ordering::SeqCst) {
                std::thread::park();
            }
            me.sleeping.store(false, Ordering::SeqCst);
        }
        // SAFETY: `run` wrote the job before setting `pending` and keeps the closure alive
        // until we clear it below.
        let ok = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            // SAFETY: `pending` is set, so `run` is done writing `job` (see above).
            if let Some((task, index)) = unsafe { *me.job.get() } {
                // SAFETY: the closure lives until `run` sees `pending` cleared, after this call.
                unsafe { (*task)(index) }
            }
        }));
        if ok.is_err() {
            me.panicked.store(true, Ordering::Relaxed);
        }
        me.pending.store(false, Ordering::Release);
    }
}

/// Adds workers until there are `n`; false when the system refuses a thread.
fn grow(workers: &mut Vec<Arc<Worker>>, n: usize) -> bool {
    while workers.len() < n {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Worker>>();
        let spawned = std::thread::Builder::new()
            .name(format!("cc-pool-{}", workers.len() + 1))
            .spawn(move || {
                if let Ok(me) = rx.recv() {
                    worker_loop(me)
                }
            });
        let Ok(handle) = spawned else {
            return false;
        };
        let worker = Arc::new(Worker {
            job: UnsafeCell::new(None),
            pending: AtomicBool::new(false),
            panicked: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            thread: handle.thread().clone(),
        });
        let _ = tx.send(worker.clone());
        workers.push(worker);
    }
    true
}

/// Runs `task(0) … task(n − 1)`, task 0 on the calling thread and the others on pool workers,
/// and returns when all are done. Inside another task, while another thread holds the pool, or
/// if no worker thread can be started, the tasks run inline in order (same results: each
/// task's work does not depend on where it runs).
pub fn run(n: usize, task: &(dyn Fn(usize) + Sync)) {
    if n <= 1 || IN_TASK.with(|t| t.get()) {
        (0..n).for_each(task);
        return;
    }
    let p = pool();
    // A region that panicked poisons the lock; the pool itself is intact (every worker was
    // waited for), so a poisoned lock still counts as acquired.
    let _region = match p.busy.try_lock() {
        Ok(g) => g,
        Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
        Err(std::sync::TryLockError::WouldBlock) => {
            (0..n).for_each(task);
            return;
        }
    };
    let mut workers = p.workers.lock().unwrap_or_else(|e| e.into_inner());
    if !grow(&mut workers, n - 1) {
        (0..n).for_each(task);
        return;
    }
    let workers = &workers[..n - 1];
    // SAFETY (lifetime erasure): every job is finished — its `pending` cleared — before this
    // function returns, so no worker touches `task` after the borrow ends.
    let task_static: *const Task<'static> =
        // SAFETY: see the lifetime erasure note above.
        unsafe { std::mem::transmute::<*const Task<'_>, *const Task<'static>>(task) };
    for (i, w) in workers.iter().enumerate() {
        // SAFETY: the worker is idle (`pending` false), so it does not read `job` now.
        unsafe { *w.job.get() = Some((task_static, i + 1)) };
        w.pending.store(true, Ordering::SeqCst);
        if w.sleeping.load(Ordering::SeqCst) {
            w.thread.unpark();
        }
    }
    let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        IN_TASK.with(|t| t.set(true));
        task(0);
    }));
    IN_TASK.with(|t| t.set(false));
    for w in workers {
        while w.pending.load(Ordering::Acquire) {
            std::hint::spin_loop();
        }
    }
    if let Err(e) = mine {
        std::panic::resume_unwind(e);
    }
    // Every flag is cleared (not just the first), so the next region starts clean.
    let panicked = workers.iter().fold(false, |any, w| {
        w.panicked.swap(false, Ordering::Relaxed) | any
    });
    if panicked {
        panic!("a pool task panicked");
    }
}

/// Runs `item(0) … item(items − 1)` on up to `threads` threads (the caller and pool workers).
/// Thread `t` of `n` starts on the `t`-th contiguous share of the items and takes them in
/// order; a thread whose share is done takes the next unclaimed items of the others'. The load
/// balances itself — a core slowed by another tenant of a shared machine takes fewer items
/// instead of stalling the others — and results stay bit-identical, because (as every caller
/// ensures) what `item(i)` computes does not depend on which thread runs it. Contiguous shares,
/// not one shared counter: consecutive passes over one buffer (a norm, then the GEMM reading
/// its output) find their rows in the core's own L2, where a shared counter dealt the rows out
/// alternately.
pub fn run_items(items: usize, threads: usize, item: &(dyn Fn(usize) + Sync)) {
    /// One share's next unclaimed item, on a cache line of its own.
    #[repr(align(64))]
    struct Cursor(AtomicUsize);
    const MAX: usize = 16;
    let n = threads.min(items).max(1);
    if n > MAX {
        let next = AtomicUsize::new(0);
        return run(n, &|_| loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            if i >= items {
                break;
            }
            item(i);
        });
    }
    let share = split(items, n, 1);
    let cursors: [Cursor; MAX] = std::array::from_fn(|t| Cursor(AtomicUsize::new(share(t).start)));
    run(n, &|t| {
        for u in (t..n).chain(0..t) {
            let end = share(u).end;
            loop {
                let i = cursors[u].0.fetch_add(1, Ordering::Relaxed);
                if i >= end {
                    break;
                }
                item(i);
            }
        }
    });
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
    fn run_items_runs_every_item_once() {
        // 40 items on 17 threads: past the shares' cursors, one shared counter.
        for (items, threads) in [(0, 2), (1, 2), (7, 2), (50, 3), (5, 1), (40, 17)] {
            let hits: Vec<AtomicUsize> = (0..items).map(|_| AtomicUsize::new(0)).collect();
            run_items(items, threads, &|i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
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
