//! Heap memory handed back to the OS after a burst of requests.
//!
//! glibc's malloc keeps what is freed in its per-thread arenas and, on its own, returns only the
//! top of the main heap. A burst of connections allocates buffers on whichever worker thread
//! serves each, so after 1,000 concurrent connections the server's RSS stayed about 60 MiB above
//! idle for good (29 MiB idle, 89 MiB after, measured by the load test in
//! `tests/api/hardening.rs`). `malloc_trim(0)` releases the free pages of every arena; every few
//! seconds it costs next to nothing when there is nothing to release.
//!
//! Since the trimmer returns free pages anyway, malloc need not do it on every `free`: by default
//! glibc serves blocks over 128 KiB (growing with use) with `mmap` and gives the top of a heap
//! back as soon as it is free, so each gzip-compressed answer (the compressor's state is about
//! 300 KiB, allocated and freed per response) faulted its pages in afresh: a third of the time
//! of `/api/backends` with 100 models went to page faults and zeroing. With the thresholds
//! below that memory is reused from one answer to the next, and whatever stays free is still
//! returned within [`TRIM_PERIOD`].

use std::time::Duration;

/// How often free heap pages are handed back.
pub const TRIM_PERIOD: Duration = Duration::from_secs(5);

/// Blocks up to this size come from the heap (reused) rather than from their own `mmap`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: nix::libc::c_int = 512 * 1024;

/// Free memory at the top of a heap up to this size is kept for the next allocation rather
/// than given back at once (the trimmer gives it back).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: nix::libc::c_int = 2 * 1024 * 1024;

/// Hands free heap pages back to the OS every [`TRIM_PERIOD`] on the current tokio runtime, for
/// as long as it runs, and lets malloc keep freed memory in between (see the module's notes).
/// Does nothing where the C library is not glibc (others trim themselves or have no
/// `malloc_trim`).
pub fn spawn_trimmer() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `mallopt` only sets malloc's parameters, under its own lock; both values are
    // within what glibc accepts (it answers 0 and changes nothing otherwise).
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
        nix::libc::mallopt(nix::libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    tokio::spawn(async {
        let mut ticker = tokio::time::interval(TRIM_PERIOD);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            // SAFETY: `malloc_trim` has no preconditions; it works on malloc's own arenas under
            // their locks, so it is safe to call from any thread at any time.
            unsafe {
                nix::libc::malloc_trim(0);
            }
        }
    });
}
