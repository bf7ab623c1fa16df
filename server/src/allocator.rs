//! The server's heap: mimalloc, set up to hand memory it no longer uses back to the OS.
//!
//! A panel page of 100 rows builds and drops about 40,000 small objects. glibc's malloc served
//! most of them from its slow paths (its per-thread cache keeps 7 blocks of each size), a
//! quarter of the page's CPU time; with mimalloc the page costs about 25 % less CPU (2.4 → 1.8 ms,
//! measured on the 2-core machine of `BENCHMARKS.md`).
//!
//! Left to its defaults on Linux, mimalloc commits each arena whole and purges freed pages by
//! resetting them, which the kernel reclaims only under memory pressure: the server sat at
//! 28 MiB idle instead of 14. [`Heap`] first tells it to commit arenas as they are used, so a
//! purge decommits and RSS follows use, and to purge freed pages after [`PURGE_DELAY`].
//!
//! mimalloc purges when it is called, though, and each thread's heap keeps its emptied pages: a
//! server gone quiet after a burst of connections kept 20 MiB more than before it. So each
//! runtime worker, when it runs out of work, releases what its heap holds, at most once per
//! [`PURGE_DELAY`] ([`release_when_idle`]), and RSS returns close to idle within seconds (the
//! load test in `tests/api/hardening.rs` checks it).

use libmimalloc_sys::{mi_collect, mi_option_set, mi_option_t};
use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::Once;
use std::time::{Duration, Instant};

/// How long freed pages stay with the allocator before they go back to the OS.
pub const PURGE_DELAY: Duration = Duration::from_secs(1);

// mimalloc's option numbers (`mi_option_e` in mimalloc.h of the mimalloc 3 that
// libmimalloc-sys 0.1.49 builds; Cargo.toml pins that version). libmimalloc-sys exports
// constants for a few options only.
/// `mi_option_arena_eager_commit`: 0 commits arenas as they are used.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
/// `mi_option_purge_delay`, in milliseconds.
const PURGE_DELAY_OPTION: mi_option_t = 15;

/// The global allocator of the `backend-monitor` binary: mimalloc, with its options set before
/// its first allocation.
pub struct Heap;

static CONFIGURED: Once = Once::new();

/// Sets mimalloc's options, once, before anything is allocated (its first arena is reserved by
/// the first allocation, with the options in force then).
#[inline]
fn configure() {
    CONFIGURED.call_once(|| {
        // SAFETY: `mi_option_set` stores a number in mimalloc's option table; it allocates
        // nothing, and runs once, before the first allocation, so before any other thread.
        unsafe {
            mi_option_set(ARENA_EAGER_COMMIT, 0);
            mi_option_set(PURGE_DELAY_OPTION, PURGE_DELAY.as_millis() as _);
        }
    });
}

// SAFETY: every method forwards to mimalloc's, which upholds `GlobalAlloc`'s contract; blocks
// are only ever freed or resized by the allocator that made them, since `Heap` is the only
// global allocator of the binary.
unsafe impl GlobalAlloc for Heap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        configure();
        // SAFETY: the caller's guarantees on `layout` are passed on.
        unsafe { MiMalloc.alloc(layout) }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        configure();
        // SAFETY: as for `alloc`.
        unsafe { MiMalloc.alloc_zeroed(layout) }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from this allocator with `layout` (the caller's guarantee).
        unsafe { MiMalloc.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is valid for `layout` (the caller's
        // guarantee).
        unsafe { MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Hands the calling thread's free heap pages, and every purge due, back to the OS, unless it
/// did so less than [`PURGE_DELAY`] ago. For tokio's `on_thread_park`: a worker calls it each
/// time it runs out of work, which under load is often, so the delay bounds the cost.
pub fn release_when_idle() {
    thread_local! {
        static LAST_RELEASE: Cell<Option<Instant>> = const { Cell::new(None) };
    }
    LAST_RELEASE.with(|last| {
        let now = Instant::now();
        if last
            .get()
            .is_some_and(|at| now.duration_since(at) < PURGE_DELAY)
        {
            return;
        }
        last.set(Some(now));
        // SAFETY: `mi_collect` works on the calling thread's heap and mimalloc's shared arenas
        // under their own synchronisation; any thread may call it at any time.
        unsafe { mi_collect(true) };
    });
}
