//! Memory a surge of connections leaves behind, given back to the system.
//!
//! glibc's allocator keeps what the program frees for reuse and returns only
//! the free top of each heap by itself: after thousands of connections close,
//! the pages their buffers used stay resident, scattered between allocations
//! that still live (docs/benchmarks.md). `malloc_trim` returns every whole
//! free page. It walks and locks each arena, so it runs only when the
//! workers' tasks (about one per connection) have fallen well below their
//! peak, never under steady load.

use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Tasks gone since the peak before a trim is worth its walk: each held a
/// connection's buffers (15 KiB or more), so some 16 MiB at least.
const SURGE_TASKS: usize = 1024;

/// Watches the workers' runtimes until `stop`.
pub async fn give_back_after_surges(workers: Vec<Handle>, stop: CancellationToken) {
    let alive = || -> usize {
        workers
            .iter()
            .map(|worker| worker.metrics().num_alive_tasks())
            .sum()
    };
    let mut check = tokio::time::interval(CHECK_EVERY);
    check.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut peak = 0;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = check.tick() => {}
        }
        let now = alive();
        peak = peak.max(now);
        if peak - now < SURGE_TASKS {
            continue;
        }
        let started = Instant::now();
        // Off the runtime's threads: the walk takes milliseconds on a large heap.
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(
            released,
            tasks_gone = peak - now,
            took_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "freed memory given back"
        );
        peak = now;
    }
}

/// Whether the allocator gave pages back.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers and glibc serialises it with every
    // other allocator call; it changes only which free pages stay resident.
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Other allocators (musl's, for one) return freed memory themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
