//! A global allocator that backs large allocations with transparent huge pages (2 MiB).
//!
//! Why: a training step sweeps buffers of several MiB (activations, their gradients, packed
//! GEMM operands), and GEMMs read some of them down columns, a row apart. With 4 KiB pages that
//! is a TLB miss every few accesses, and in a virtual machine each miss walks two page tables
//! (guest and host). Measured on the development machine (a KVM guest): with this allocator
//! (then from 2 MiB on) the reference tiny GPT step ran 12–20% faster in each of 6 paired runs.
//!
//! How: an allocation of at least 256 KiB is aligned to 2 MiB and its 2 MiB pages are advised
//! `MADV_HUGEPAGE` before anything touches it, so that the kernel maps them with huge pages
//! when its THP mode is `madvise` (the common default) or `always`. Smaller allocations go
//! to the system allocator (from 4 KiB on with at least 64-byte alignment: [`system_layout`]). The price is memory: a block between 256 KiB and 2 MiB
//! occupies a whole 2 MiB page (the tiny GPT's 1 MiB activation buffers, its 256 KiB weight
//! matrices and their Adam moments all qualify; on the development machine, lowering the
//! threshold from 2 MiB to 1 MiB and then to 256 KiB each made the step faster again, 5 of 6
//! paired runs each time). Where the kernel cannot or will not give huge pages the advice is
//! ignored; results never depend on it, only speed.
//!
//! Freed large blocks are kept for reuse (up to [`KEEP_BYTES`]): a sweep of tiny runs builds
//! and drops the same few data and evaluation buffers for every run, and a block returned to
//! the kernel comes back as fresh pages, each faulted in and zeroed again — in a virtual machine
//! an exit to the host per page. Measured on the development machine (a KVM guest, AMD Zen 5):
//! the 64-run tiny sweep took 20,300 page faults and 0.18–0.23 s of kernel time (of 1.2 s of
//! CPU) without the cache, 11,000 and 0.08–0.12 s with it; what is left is the first group on
//! each worker, which meets fresh memory whatever the allocator does.
//!
//! Tiny models are the exception ([`small_pages`]): a lockstep group's buffers and its runs'
//! data are read in order, so huge pages bring them nothing, and a fresh one costs a whole
//! 2 MiB of zeroing for a block of, say, 640 KiB — in a virtual machine, memory the host has
//! never backed, faulted in there too. Measured on the development machine (a KVM guest, AMD
//! Zen 5): the 64-run tiny sweep took 0.42 s with a group's blocks on small pages against
//! 0.47 s on huge ones (medians of 15 interleaved runs; 0.44 s with no huge pages below 2 MiB
//! for every model).
//!
//! The `cloudchamber` binary installs it (`#[global_allocator]` in `main.rs`).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Mutex;

/// The huge-page size (x86-64).
const HUGE: usize = 2 << 20;
/// Allocations from this size on get huge pages.
const THRESHOLD: usize = 256 << 10;

/// Large sizes are rounded up to this grain, so that blocks of nearly one size share a class.
const GRAIN: usize = 64 << 10;
/// At most this many bytes of freed large blocks are kept.
const KEEP_BYTES: usize = 128 << 20;
/// At most this many freed large blocks are kept.
const KEEP_BLOCKS: usize = 128;

/// See the module documentation.
pub struct HugePageAlloc;

thread_local! {
    /// Whether this thread's large blocks are advised against huge pages ([`small_pages`]).
    static SMALL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's new large blocks on small pages (advised `MADV_NOHUGEPAGE`,
/// kept blocks re-advised): for tiny models, whose buffers are read in order (see the module
/// documentation). Blocks keep their size classes and alignment, so a block allocated inside
/// may be freed or reused outside, and the other way round.
pub fn small_pages<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            SMALL.with(|s| s.set(self.0));
        }
    }
    let _restore = Restore(SMALL.with(|s| s.replace(true)));
    f()
}

/// Whether this thread wants huge pages for its large blocks now.
fn want_huge() -> bool {
    // A thread being torn down has no flag left: the default.
    !SMALL.try_with(Cell::get).unwrap_or(false)
}

/// A freed large block: its address and its system layout.
type Block = (usize, Layout);

/// Freed large blocks, and their bytes. A plain mutex: it never allocates, and nothing under
/// it can panic.
struct Kept {
    blocks: [Option<Block>; KEEP_BLOCKS],
    bytes: usize,
    /// The next slot to evict when full (round robin).
    evict: usize,
}

static KEPT: Mutex<Kept> = Mutex::new(Kept {
    blocks: [None; KEEP_BLOCKS],
    bytes: 0,
    evict: 0,
});

/// Allocations from this size on (below [`THRESHOLD`]) start on a cache line.
const LINE_FROM: usize = 4 << 10;
/// A cache line (x86-64).
const LINE: usize = 64;

/// Whether `layout` is in the huge class (its blocks are advised and kept for reuse).
fn huge(layout: Layout) -> bool {
    layout.size() >= THRESHOLD
}

/// The layout actually requested from the system for `layout`: huge blocks 2 MiB-aligned, and
/// blocks from 4 KiB on at least 64-byte aligned. Why the latter: the lockstep lanes read
/// 64-byte elements (`[f32; 16]`, whose own alignment is 4) half or whole per load, and at the
/// system allocator's 16-byte alignment most of those loads straddle two cache lines (on a Zen
/// 3, a width-16 layer's lanes GEMM ran at 30–36 GFLOP/s so, 44–49 aligned). The lanes' own
/// tensors are now [`crate::engine::lanes::LaneBuf`]s, aligned under any allocator (and below
/// 4 KiB).
fn system_layout(layout: Layout) -> Layout {
    if !huge(layout) {
        if layout.size() >= LINE_FROM && layout.align() < LINE {
            return Layout::from_size_align(layout.size(), LINE).unwrap_or(layout);
        }
        return layout;
    }
    // Raising a power-of-two alignment to 2 MiB stays valid unless the size overflows when
    // rounded, which `from_size_align` reports; keep the original then.
    let size = layout.size().checked_next_multiple_of(GRAIN);
    size.and_then(|s| Layout::from_size_align(s, layout.align().max(HUGE)).ok())
        .unwrap_or(layout)
}

/// A kept block of exactly `sys`, taken out of the cache.
fn take_kept(sys: Layout) -> Option<*mut u8> {
    let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
    let slot = kept
        .blocks
        .iter_mut()
        .find(|b| b.is_some_and(|(_, l)| l == sys))?;
    let (addr, _) = slot.take()?;
    kept.bytes -= sys.size();
    Some(addr as *mut u8)
}

/// Keeps a freed block of `sys` (from the system, advised), returning the blocks it evicts
/// to the system; a block larger than the whole budget goes straight back.
///
/// # Safety
/// `ptr` heads a live block the system allocated with `sys`, which the caller gives up.
unsafe fn keep(ptr: *mut u8, sys: Layout) {
    let mut evicted: [Option<Block>; KEEP_BLOCKS] = [None; KEEP_BLOCKS];
    let mut kept_it = false;
    if sys.size() <= KEEP_BYTES {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        let mut n = 0;
        while kept.bytes + sys.size() > KEEP_BYTES || kept.blocks.iter().all(Option::is_some) {
            let i = kept.evict;
            kept.evict = (i + 1) % KEEP_BLOCKS;
            if let Some((addr, l)) = kept.blocks[i].take() {
                kept.bytes -= l.size();
                evicted[n] = Some((addr, l));
                n += 1;
            }
        }
        if let Some(slot) = kept.blocks.iter_mut().find(|b| b.is_none()) {
            *slot = Some((ptr as usize, sys));
            kept.bytes += sys.size();
            kept_it = true;
        }
    }
    // Outside the lock: the system's free may take its own.
    for (addr, l) in evicted.into_iter().flatten() {
        // SAFETY: a kept block came from the system with layout `l`, and nothing else holds it.
        unsafe { System.dealloc(addr as *mut u8, l) };
    }
    if !kept_it {
        // SAFETY: the caller's block, with its system layout.
        unsafe { System.dealloc(ptr, sys) };
    }
}

/// Advises huge pages (or, under [`small_pages`], none) for the 2 MiB pages that
/// `[ptr, ptr + len)` touches; `ptr` is 2 MiB-aligned. The advice covers whole pages (a partial
/// one would split the mapping and get none); past `len` it reaches only the slack of the same
/// over-aligned system block, and advice never changes contents.
unsafe fn advise(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    // SAFETY: the range is one live allocation of ours; the advice changes no contents.
    unsafe {
        let advice = if want_huge() {
            libc::MADV_HUGEPAGE
        } else {
            libc::MADV_NOHUGEPAGE
        };
        libc::madvise(ptr.cast(), len.next_multiple_of(HUGE), advice);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

// SAFETY: every block comes from `System` with a layout at least as strict as the caller's
// (`system_layout` only raises the alignment of blocks from 4 KiB on and rounds the size of
// huge ones up), so it
// is valid for the caller's layout; a kept block is handed out again only for the very system
// layout it was allocated with, and whatever goes back to `System` (freed or evicted) goes
// with the layout it was allocated with.
unsafe impl GlobalAlloc for HugePageAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let sys = system_layout(layout);
        if huge(layout) {
            if let Some(ptr) = take_kept(sys) {
                // Advised again: it may have been kept under the other mode ([`small_pages`]).
                // SAFETY: `ptr` heads a kept block of `sys.size() ≥ layout.size()` bytes.
                unsafe { advise(ptr, layout.size()) };
                return ptr;
            }
        }
        // SAFETY: forwarding a valid, non-zero-sized layout.
        let ptr = unsafe { System.alloc(sys) };
        if !ptr.is_null() && huge(layout) {
            // SAFETY: `ptr` heads a fresh block of at least `layout.size()` bytes.
            unsafe { advise(ptr, layout.size()) };
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let sys = system_layout(layout);
        if !huge(layout) {
            // SAFETY: forwarding a valid layout.
            return unsafe { System.alloc_zeroed(sys) };
        }
        // Advise first, then zero: the zeroing is the first touch, so it faults huge pages in.
        // SAFETY: `alloc` returns `layout.size()` writable bytes or null.
        unsafe {
            let ptr = self.alloc(layout);
            if !ptr.is_null() {
                std::ptr::write_bytes(ptr, 0, layout.size());
            }
            ptr
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let sys = system_layout(layout);
        // SAFETY: `ptr` came from `alloc` with this layout, hence from the system with
        // `system_layout(layout)` (kept blocks included: they are kept by that layout).
        unsafe {
            if huge(layout) {
                keep(ptr, sys)
            } else {
                System.dealloc(ptr, sys)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let (old_sys, new_sys) = (system_layout(layout), system_layout(new_layout));
        if old_sys == layout && new_sys == new_layout {
            // SAFETY: both layouts go to the system as they are: its own realloc applies.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        if huge(layout) && old_sys == new_sys {
            // The same size class: the block already holds `new_size` bytes.
            return ptr;
        }
        // Crossing into, within or out of the huge or the line-aligned class: a fresh block.
        // SAFETY: `new_layout` is valid; both blocks are live for the copy.
        unsafe {
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Small and huge blocks keep their contents through realloc across the threshold, come
    /// back aligned as asked (huge ones to 2 MiB), and zeroed blocks are zero.
    #[test]
    fn allocations_round_trip_across_the_threshold() {
        let a = HugePageAlloc;
        // SAFETY: each block is used within its layout and freed once, with its layout.
        unsafe {
            let small = Layout::from_size_align(1000, 8).unwrap();
            let p = a.alloc(small);
            assert!(!p.is_null() && (p as usize).is_multiple_of(8));
            for i in 0..1000 {
                *p.add(i) = (i % 251) as u8;
            }
            let q = a.realloc(p, small, 3 * HUGE);
            assert!(!q.is_null() && (q as usize).is_multiple_of(HUGE));
            assert!((0..1000).all(|i| *q.add(i) == (i % 251) as u8));
            let big = Layout::from_size_align(3 * HUGE, 8).unwrap();
            let r = a.realloc(q, big, 500);
            assert!(!r.is_null());
            assert!((0..500).all(|i| *r.add(i) == (i % 251) as u8));
            a.dealloc(r, Layout::from_size_align(500, 8).unwrap());

            for size in [THRESHOLD, 300_000, HUGE + 12345] {
                let z = Layout::from_size_align(size, 64).unwrap();
                let p = a.alloc_zeroed(z);
                assert!(!p.is_null() && (p as usize).is_multiple_of(HUGE));
                assert!((0..size).step_by(4093).all(|i| *p.add(i) == 0));
                a.dealloc(p, z);
            }
        }
    }

    /// A freed large block is kept and handed out again for the same size class (zeroed when
    /// asked), and a block beyond the budget goes straight back to the system.
    #[test]
    fn freed_large_blocks_are_reused() {
        let a = HugePageAlloc;
        // A size no other test uses, so a parallel test cannot take the kept block.
        let layout = Layout::from_size_align(5 * HUGE + 777, 16).unwrap();
        // SAFETY: each block is used within its layout and freed once, with its layout.
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            std::ptr::write_bytes(p, 0xAB, layout.size());
            a.dealloc(p, layout);
            // Within the same 64 KiB grain: the same class.
            let near = Layout::from_size_align(5 * HUGE + 1000, 16).unwrap();
            let q = a.alloc_zeroed(near);
            assert_eq!(q, p, "the kept block comes back");
            assert!((0..near.size()).step_by(997).all(|i| *q.add(i) == 0));
            a.dealloc(q, near);
            let again = a.alloc(layout);
            assert_eq!(again, p);
            // Growing within the size class keeps the block (and its contents).
            *again = 7;
            let grown = a.realloc(again, layout, layout.size() + 100);
            assert_eq!((grown, *grown), (p, 7));
            a.dealloc(
                grown,
                Layout::from_size_align(layout.size() + 100, 16).unwrap(),
            );

            let huge = Layout::from_size_align(KEEP_BYTES + HUGE, 16).unwrap();
            let h = a.alloc(huge);
            assert!(!h.is_null());
            a.dealloc(h, huge);
            let kept = KEPT.lock().unwrap();
            assert!(kept.bytes <= KEEP_BYTES);
            assert!(kept
                .blocks
                .iter()
                .flatten()
                .all(|&(addr, _)| addr != h as usize));
        }
    }

    /// A block allocated under `small_pages` is a block of its size class like any other: freed
    /// outside the scope, it comes back (aligned, contents intact until reused) inside it, and
    /// the scope's mode ends with it, a panic included.
    #[test]
    fn small_page_blocks_share_the_size_classes() {
        let a = HugePageAlloc;
        // A size no other test uses.
        let layout = Layout::from_size_align(3 * HUGE + 4321, 32).unwrap();
        // SAFETY: each block is used within its layout and freed once, with its layout.
        unsafe {
            let p = small_pages(|| {
                assert!(!want_huge());
                let p = a.alloc(layout);
                assert!(!p.is_null() && (p as usize).is_multiple_of(HUGE));
                std::ptr::write_bytes(p, 7, layout.size());
                p
            });
            assert!(want_huge());
            a.dealloc(p, layout);
            let q = small_pages(|| a.alloc_zeroed(layout));
            assert!(!q.is_null() && (q as usize).is_multiple_of(HUGE));
            assert!((0..layout.size()).step_by(4099).all(|i| *q.add(i) == 0));
            a.dealloc(q, layout);
        }
        let caught = std::panic::catch_unwind(|| small_pages(|| panic!("inside")));
        assert!(caught.is_err() && want_huge());
    }

    /// A block from the threshold on carries the kernel's huge-page advice (`hg` among its
    /// mapping's `VmFlags`). Linux with THP built in only.
    #[test]
    fn large_blocks_are_advised_huge_pages() {
        if !std::path::Path::new("/sys/kernel/mm/transparent_hugepage").exists() {
            return;
        }
        let flags_at = |addr: usize| -> String {
            let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
            let mut inside = false;
            for line in smaps.lines() {
                let range = line.split_whitespace().next().unwrap_or("");
                if let Some((lo, hi)) = range.split_once('-') {
                    if let (Ok(lo), Ok(hi)) =
                        (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                    {
                        inside = (lo..hi).contains(&addr);
                        continue;
                    }
                }
                if inside {
                    if let Some(flags) = line.strip_prefix("VmFlags:") {
                        return flags.to_string();
                    }
                }
            }
            panic!("no mapping holds {addr:#x}");
        };
        let a = HugePageAlloc;
        // SAFETY: the block is allocated, inspected by address only, and freed with its layout.
        unsafe {
            let big = Layout::from_size_align(THRESHOLD, 8).unwrap();
            let p = a.alloc(big);
            let flags = flags_at(p as usize);
            a.dealloc(p, big);
            assert!(flags.split_whitespace().any(|f| f == "hg"), "{flags}");
        }
    }
}
