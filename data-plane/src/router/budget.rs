//! A route's retry budget: retries (and fallbacks) may add at most a share
//! of the route's recent requests, so a failing provider is not hit with a
//! multiple of the traffic. Lock-free: a few atomics per route.

use shared::time::now_ms;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering::Relaxed};

const WINDOW_MS: i64 = 10_000;
/// Retries allowed in a window however little traffic there was.
const MIN_RETRIES: u32 = 10;

#[derive(Debug, Default)]
pub struct RetryBudget {
    window_start_ms: AtomicI64,
    requests: AtomicU32,
    retries: AtomicU32,
}

impl RetryBudget {
    pub fn request(&self) {
        self.roll();
        self.requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget, if `ratio` of the window's requests allows it.
    pub fn try_retry(&self, ratio: f64) -> bool {
        self.roll();
        let allowed = MIN_RETRIES.max((f64::from(self.requests.load(Relaxed)) * ratio) as u32);
        self.retries
            .fetch_update(Relaxed, Relaxed, |used| {
                (used < allowed).then_some(used + 1)
            })
            .is_ok()
    }

    fn roll(&self) {
        let now = now_ms();
        let start = self.window_start_ms.load(Relaxed);
        if now - start >= WINDOW_MS
            && self
                .window_start_ms
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.requests.store(0, Relaxed);
            self.retries.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_share_of_requests_with_a_floor() {
        let budget = RetryBudget::default();
        for _ in 0..100 {
            budget.request();
        }
        let granted = (0..100).filter(|_| budget.try_retry(0.2)).count();
        assert_eq!(granted, 20);
        let quiet = RetryBudget::default();
        assert_eq!((0..50).filter(|_| quiet.try_retry(0.2)).count(), 10);
    }
}
