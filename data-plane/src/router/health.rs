//! What a data plane knows of each target's health, kept in atomics so the
//! request path never locks: requests in flight, a moving average of latency,
//! this minute's load against the target's capacity, and a circuit breaker.
//! A target's state outlives snapshot swaps for as long as the target exists.

use crate::error::{GatewayError, ProviderErrorKind};
use shared::time::now_ms;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

/// When a target is ejected, and for how long.
#[derive(Clone, Copy, Debug)]
pub struct BreakerConfig {
    /// Consecutive failures that eject a target.
    pub consecutive_failures: u32,
    /// Failure share within `window` that ejects a target...
    pub error_rate: f64,
    /// ...once the window holds at least this many requests.
    pub min_requests: u32,
    pub window: Duration,
    /// First ejection; doubled on each repeated ejection, up to `max_cooldown`.
    pub cooldown: Duration,
    pub max_cooldown: Duration,
    /// Longest a provider's `retry-after` sets a target aside; zero: never.
    pub max_retry_after: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            consecutive_failures: 5,
            error_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
            max_cooldown: Duration::from_secs(300),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

/// Weight of the newest sample in the latency average.
const EWMA_ALPHA: f64 = 0.3;
/// The longest `retry-after` read; longer ones are daily quotas, not waits.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

#[derive(Default, Debug)]
pub struct TargetState {
    in_flight: AtomicU32,
    /// Microseconds; 0 until measured.
    latency_us: AtomicU64,
    consecutive_failures: AtomicU32,
    window_start_ms: AtomicI64,
    window_requests: AtomicU32,
    window_failures: AtomicU32,
    /// Unix ms until which the target is skipped; 0 when closed.
    ejected_until_ms: AtomicI64,
    /// Unix ms until which the target is set aside because it asked to be
    /// (`retry-after`): not broken, so no probe follows.
    set_aside_until_ms: AtomicI64,
    /// Ejections in a row, for the growing cooldown.
    ejections: AtomicU32,
    /// Half-open: one probe at a time.
    probing: AtomicBool,
    minute: AtomicI64,
    minute_requests: AtomicU32,
    minute_tokens: AtomicU64,
}

/// Held while a request is in flight on a target (a stream: until it ends).
pub struct InFlight(Arc<TargetState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

/// How an attempt ended, as far as the target's health goes.
#[derive(Clone, Copy, Debug)]
pub enum Outcome {
    Success {
        latency: Duration,
        tokens: u64,
    },
    Failure {
        retry_after: Option<Duration>,
    },
    /// The request's own fault (bad input, refused parameter): no verdict on the target.
    Neutral,
}

impl Outcome {
    /// A failed attempt: held against the target when it says something
    /// about it, with the `retry-after` it asked for.
    pub fn failure(error: &GatewayError) -> Outcome {
        if counts_against_target(error) {
            Outcome::Failure {
                retry_after: error.retry_after().and_then(parse_retry_after),
            }
        } else {
            Outcome::Neutral
        }
    }
}

/// Failures that say something about the target, not about the request.
pub fn counts_against_target(error: &GatewayError) -> bool {
    match error {
        GatewayError::Provider { error, .. } => {
            error.retryable() || error.kind == ProviderErrorKind::Authentication
        }
        GatewayError::UpstreamUnreachable(_)
        | GatewayError::UpstreamTimeout(_)
        | GatewayError::UpstreamInvalid(_) => true,
        _ => false,
    }
}

/// `retry-after` in seconds (the HTTP-date form is not worth a target's cooldown).
pub fn parse_retry_after(value: &axum::http::HeaderValue) -> Option<Duration> {
    let seconds: f64 = value.to_str().ok()?.trim().parse().ok()?;
    (seconds > 0.0).then(|| Duration::from_secs_f64(seconds).min(MAX_RETRY_AFTER))
}

impl TargetState {
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Relaxed);
        let minute = now_ms() / 60_000;
        // Read first: every request on every worker touches this state, and
        // a write only once a minute keeps the cache line shared.
        if self.minute.load(Relaxed) != minute && self.minute.swap(minute, Relaxed) != minute {
            self.minute_requests.store(0, Relaxed);
            self.minute_tokens.store(0, Relaxed);
        }
        self.minute_requests.fetch_add(1, Relaxed);
        InFlight(self.clone())
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Microseconds; 0 while unmeasured, so new targets are tried first.
    pub fn latency_us(&self) -> u64 {
        self.latency_us.load(Relaxed)
    }

    /// Whether this minute's requests or tokens reached the target's capacity.
    pub fn saturated(&self, rpm: Option<u32>, tpm: Option<u32>) -> bool {
        if self.minute.load(Relaxed) != now_ms() / 60_000 {
            return false;
        }
        rpm.is_some_and(|rpm| self.minute_requests.load(Relaxed) >= rpm)
            || tpm.is_some_and(|tpm| self.minute_tokens.load(Relaxed) >= u64::from(tpm))
    }

    pub fn add_tokens(&self, tokens: u64) {
        self.minute_tokens.fetch_add(tokens, Relaxed);
    }

    /// Whether the target may take a request now: closed, or half-open and
    /// this caller won the single probe.
    pub fn admits(&self) -> bool {
        if now_ms() < self.set_aside_until_ms.load(Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Relaxed);
        if until == 0 {
            return true;
        }
        if now_ms() < until {
            return false;
        }
        self.probing
            .compare_exchange(false, true, Relaxed, Relaxed)
            .is_ok()
    }

    /// Whether the target is out of rotation: set aside, open, or half-open
    /// with its probe taken.
    pub fn ejected(&self) -> bool {
        let now = now_ms();
        let until = self.ejected_until_ms.load(Relaxed);
        now < self.set_aside_until_ms.load(Relaxed)
            || (until != 0 && (now < until || self.probing.load(Relaxed)))
    }

    /// Until when it is out of rotation (Unix ms), if it is.
    pub fn ejected_until_ms(&self) -> Option<i64> {
        let until = self
            .ejected_until_ms
            .load(Relaxed)
            .max(self.set_aside_until_ms.load(Relaxed));
        (until > now_ms()).then_some(until)
    }

    pub fn record(&self, outcome: Outcome, config: &BreakerConfig) {
        let now = now_ms();
        self.roll_window(now, config);
        self.window_requests.fetch_add(1, Relaxed);
        match outcome {
            Outcome::Success { latency, tokens } => {
                if tokens > 0 {
                    self.add_tokens(tokens);
                }
                // Zero: a health probe, whose timing is not a request's.
                if !latency.is_zero() {
                    self.observe_latency(latency);
                }
                // Written only when they change: the healthy path only reads.
                if self.consecutive_failures.load(Relaxed) != 0 {
                    self.consecutive_failures.store(0, Relaxed);
                }
                if self.ejected_until_ms.load(Relaxed) != 0
                    && self.ejected_until_ms.swap(0, Relaxed) != 0
                {
                    // A successful probe closes the breaker.
                    self.ejections.store(0, Relaxed);
                }
                if self.probing.load(Relaxed) {
                    self.probing.store(false, Relaxed);
                }
            }
            // A target that says when to come back is busy, not broken: it
            // is set aside for exactly that long (capped), and the breaker
            // (its counts, a probe's verdict, its cooldown) is left out of it.
            Outcome::Failure {
                retry_after: Some(wait),
            } if !wait.is_zero() => {
                let wait = wait.min(config.max_retry_after);
                let until = now + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX);
                self.set_aside_until_ms.fetch_max(until, Relaxed);
                if self.probing.swap(false, Relaxed) {
                    // The probe reached a live provider: the breaker closes.
                    self.ejected_until_ms.store(0, Relaxed);
                }
            }
            Outcome::Failure { .. } => {
                self.window_failures.fetch_add(1, Relaxed);
                let consecutive = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
                let was_probe = self.probing.swap(false, Relaxed);
                let requests = self.window_requests.load(Relaxed);
                let failures = self.window_failures.load(Relaxed);
                let rate_tripped = requests >= config.min_requests
                    && f64::from(failures) >= config.error_rate * f64::from(requests);
                if was_probe || consecutive >= config.consecutive_failures || rate_tripped {
                    self.eject(now, config);
                }
            }
            Outcome::Neutral => {
                self.probing.store(false, Relaxed);
            }
        }
    }

    fn eject(&self, now: i64, config: &BreakerConfig) {
        let ejections = self.ejections.fetch_add(1, Relaxed).min(16);
        let cooldown = config
            .cooldown
            .saturating_mul(1 << ejections)
            .min(config.max_cooldown);
        let until = now + i64::try_from(cooldown.as_millis()).unwrap_or(i64::MAX);
        self.ejected_until_ms.store(until, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.window_requests.store(0, Relaxed);
        self.window_failures.store(0, Relaxed);
        tracing::warn!(cooldown_ms = cooldown.as_millis() as u64, "target ejected");
        metrics::counter!("switchboard_target_ejections_total").increment(1);
    }

    fn roll_window(&self, now: i64, config: &BreakerConfig) {
        let start = self.window_start_ms.load(Relaxed);
        let window = i64::try_from(config.window.as_millis()).unwrap_or(i64::MAX);
        if now - start >= window
            && self
                .window_start_ms
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_ok()
        {
            self.window_requests.store(0, Relaxed);
            self.window_failures.store(0, Relaxed);
        }
    }

    fn observe_latency(&self, latency: Duration) {
        let sample = latency.as_micros().max(1) as u64;
        let _ = self.latency_us.fetch_update(Relaxed, Relaxed, |old| {
            Some(if old == 0 {
                sample
            } else {
                (EWMA_ALPHA * sample as f64 + (1.0 - EWMA_ALPHA) * old as f64) as u64
            })
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure() -> Outcome {
        Outcome::Failure { retry_after: None }
    }

    #[test]
    fn a_retry_after_sets_the_target_aside_for_that_long_and_never_ejects_it() {
        let state = TargetState::default();
        let config = BreakerConfig {
            consecutive_failures: 2,
            max_retry_after: Duration::from_millis(150),
            ..BreakerConfig::default()
        };
        let asked = Outcome::Failure {
            retry_after: Some(Duration::from_secs(1)),
        };
        for _ in 0..5 {
            state.record(asked, &config);
        }
        assert!(state.ejected() && !state.admits(), "set aside");
        let back = state.ejected_until_ms().expect("until") - now_ms();
        assert!(back <= 150, "as long as asked, capped: {back} ms");
        std::thread::sleep(Duration::from_millis(170));
        assert!(
            state.admits() && state.admits(),
            "back without a probe or a cooldown"
        );
        assert_eq!(state.ejections.load(Relaxed), 0);
    }

    #[test]
    fn ejects_after_consecutive_failures_and_half_opens_with_one_probe() {
        let config = BreakerConfig {
            consecutive_failures: 3,
            cooldown: Duration::from_millis(50),
            ..BreakerConfig::default()
        };
        let state = TargetState::default();
        for _ in 0..2 {
            state.record(failure(), &config);
        }
        assert!(state.admits());
        state.record(failure(), &config);
        assert!(!state.admits() && state.ejected());
        std::thread::sleep(Duration::from_millis(60));
        assert!(state.admits(), "half-open: one probe");
        assert!(!state.admits(), "only one probe at a time");
        state.record(failure(), &config);
        assert!(state.ejected(), "a failed probe ejects again");
        std::thread::sleep(Duration::from_millis(60));
        assert!(state.ejected(), "for longer: the cooldown doubled");
        std::thread::sleep(Duration::from_millis(50));
        assert!(state.admits());
        state.record(
            Outcome::Success {
                latency: Duration::from_millis(5),
                tokens: 0,
            },
            &config,
        );
        assert!(state.admits() && state.admits(), "closed again");
    }

    #[test]
    fn ejects_on_error_rate_and_tracks_latency_and_capacity() {
        let config = BreakerConfig {
            consecutive_failures: 100,
            min_requests: 4,
            ..BreakerConfig::default()
        };
        let state = Arc::new(TargetState::default());
        let _a = state.start();
        let _b = state.start();
        let ok = || Outcome::Success {
            latency: Duration::from_millis(10),
            tokens: 10,
        };
        state.record(ok(), &config);
        state.record(failure(), &config);
        state.record(ok(), &config);
        assert!(!state.ejected());
        state.record(failure(), &config);
        assert!(state.ejected(), "2 of 4 failed");
        assert_eq!(state.latency_us(), 10_000);
        assert_eq!(state.in_flight(), 2);
        assert!(state.saturated(Some(2), None) && !state.saturated(Some(3), None));
        assert!(state.saturated(None, Some(20)));
    }
}
