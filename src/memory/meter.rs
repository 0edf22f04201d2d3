//! A counting global allocator: the system allocator, plus the bytes live now and their peak
//! since the last [`reset_peak`]. The `vaezoo` binary (and the benchmarks, so that they time
//! what it runs) installs it with
//! `#[global_allocator] static ALLOC: MeteredAlloc = MeteredAlloc;`, and the memory check of
//! [`super`] measures a training step with it. Without it installed, [`live`] is `None` and
//! nothing is measured.
//!
//! The counters are two relaxed atomics: a few hundred allocations a training step add
//! nanoseconds each. Memory that a plugin library allocates with its own allocator is not
//! counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The system allocator, counting the bytes it hands out (see the module docs).
pub struct MeteredAlloc;

fn grew(bytes: usize) {
    let now = LIVE.fetch_add(bytes, Relaxed).wrapping_add(bytes);
    PEAK.fetch_max(now, Relaxed);
}

// SAFETY: every call is passed on to `System` unchanged; the counters only observe sizes.
unsafe impl GlobalAlloc for MeteredAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        LIVE.fetch_sub(layout.size(), Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Relaxed);
            grew(new_size);
        }
        p
    }
}

/// The heap bytes live now, or `None` where [`MeteredAlloc`] is not the global allocator
/// (nothing was counted: every Rust program has allocated by the time it asks).
pub fn live() -> Option<usize> {
    let now = LIVE.load(Relaxed);
    (now > 0).then_some(now)
}

/// Starts a new peak at the bytes live now.
pub fn reset_peak() {
    PEAK.store(LIVE.load(Relaxed), Relaxed);
}

/// The most heap bytes live at once since the last [`reset_peak`].
pub fn peak() -> usize {
    PEAK.load(Relaxed)
}
