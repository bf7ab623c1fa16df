//! Heap memory handed back to the OS after a burst of requests.
//!
//! glibc's malloc keeps what is freed in its per-thread arenas and, on its own, returns only the
//! top of the main heap. A burst of connections allocates buffers on whichever worker thread
//! serves each, so after 1,000 concurrent connections the server's RSS stayed about 60 MiB above
//! idle for good (29 MiB idle, 89 MiB after, measured by the load test in
//! `tests/api/hardening.rs`). `malloc_trim(0)` releases the free pages of every arena; every few
//! seconds it costs next to nothing when there is nothing to release.

use std::time::Duration;

/// How often free heap pages are handed back.
pub const TRIM_PERIOD: Duration = Duration::from_secs(5);

/// Hands free heap pages back to the OS every [`TRIM_PERIOD`] on the current tokio runtime, for
/// as long as it runs. Does nothing where the C library is not glibc (others trim themselves or
/// have no `malloc_trim`).
pub fn spawn_trimmer() {
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
