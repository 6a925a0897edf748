//! In-process counters: one data plane's view, with no external service. Rate
//! limits are leaky buckets (GCRA in its "meter" form: a level that drains at
//! the limit's rate and may not pass the limit); quotas and budgets are totals
//! that may not pass theirs. One lock over all, so a request's checks pass or
//! fail together.

use super::{Check, Outcome, Verdict};
use foldhash::HashMap;
use parking_lot::Mutex;

#[derive(Clone, Copy, Debug)]
enum State {
    /// A bucket's level (in requests or tokens) as of `at_ms`.
    Bucket { level: f64, at_ms: i64 },
    /// A quota's or budget's use so far; forgotten after `expires_ms`.
    Total { used: i64, expires_ms: Option<i64> },
}

#[derive(Default)]
pub struct LocalCounters {
    states: Mutex<HashMap<String, State>>,
}

/// A bucket's level at `now_ms`, drained at `limit` per `window_ms`.
fn drained(level: f64, at_ms: i64, now_ms: i64, limit: i64, window_ms: i64) -> f64 {
    let rate = limit as f64 / window_ms as f64;
    (level - (now_ms - at_ms).max(0) as f64 * rate).max(0.0)
}

/// What a check would find, and leave, at `now_ms`.
fn evaluate(check: &Check, state: Option<State>, now_ms: i64) -> (bool, Outcome, State) {
    match check.window_ms() {
        Some(window_ms) => {
            let level = match state {
                Some(State::Bucket { level, at_ms }) => {
                    drained(level, at_ms, now_ms, check.limit, window_ms)
                }
                _ => 0.0,
            };
            let rate = check.limit as f64 / window_ms as f64;
            let after = level + check.cost as f64;
            let allowed = after <= check.limit as f64;
            let kept = if allowed { after } else { level };
            let outcome = Outcome {
                remaining: (check.limit as f64 - kept).floor().max(0.0) as i64,
                reset_ms: (kept / rate).ceil() as i64,
                retry_after_ms: if allowed {
                    0
                } else {
                    ((after - check.limit as f64) / rate).ceil() as i64
                },
            };
            (
                allowed,
                outcome,
                State::Bucket {
                    level: kept,
                    at_ms: now_ms,
                },
            )
        }
        None => {
            let used = match state {
                Some(State::Total { used, expires_ms })
                    if expires_ms.is_none_or(|e| e > now_ms) =>
                {
                    used
                }
                _ => 0,
            }
            .max(check.floor);
            let allowed = used.saturating_add(check.cost) <= check.limit;
            let kept = if allowed { used + check.cost } else { used };
            let outcome = Outcome {
                remaining: (check.limit - kept).max(0),
                reset_ms: check.expires_ms.map_or(0, |e| (e - now_ms).max(0)),
                retry_after_ms: if allowed {
                    0
                } else {
                    check.expires_ms.map_or(0, |e| (e - now_ms).max(0))
                },
            };
            let state = State::Total {
                used: kept,
                expires_ms: check.expires_ms,
            };
            (allowed, outcome, state)
        }
    }
}

impl LocalCounters {
    /// Every check passes and is counted, or none is.
    pub fn admit(&self, checks: &[Check], now_ms: i64) -> Verdict {
        let mut states = self.states.lock();
        let mut refused = None;
        let mut outcomes = Vec::with_capacity(checks.len());
        let mut next = Vec::with_capacity(checks.len());
        for (i, check) in checks.iter().enumerate() {
            let (allowed, outcome, state) =
                evaluate(check, states.get(&check.key).copied(), now_ms);
            if !allowed && refused.is_none() {
                refused = Some(i);
            }
            outcomes.push(outcome);
            next.push(state);
        }
        if refused.is_none() {
            for (check, state) in checks.iter().zip(next) {
                states.insert(check.key.clone(), state);
            }
        }
        Verdict { refused, outcomes }
    }

    /// Corrects what admission counted by `delta` (the real use less the reserved).
    pub fn settle(&self, check: &Check, delta: i64, now_ms: i64) {
        let mut states = self.states.lock();
        let Some(state) = states.get_mut(&check.key) else {
            return;
        };
        match (state, check.window_ms()) {
            (State::Bucket { level, at_ms }, Some(window_ms)) => {
                let now_level = drained(*level, *at_ms, now_ms, check.limit, window_ms);
                *level = (now_level + delta as f64).max(0.0);
                *at_ms = now_ms;
            }
            (State::Total { used, .. }, None) => *used = (*used + delta).max(0),
            _ => {}
        }
    }

    /// Drops buckets untouched for a day (the longest window: they are empty
    /// by then) and totals whose period has ended.
    pub fn sweep(&self, now_ms: i64) {
        const LONGEST_WINDOW_MS: i64 = 86_400_000;
        self.states.lock().retain(|_, state| match state {
            State::Bucket { at_ms, .. } => now_ms - *at_ms < LONGEST_WINDOW_MS,
            State::Total { expires_ms, .. } => expires_ms.is_none_or(|e| e > now_ms),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::Meter;

    fn rpm(limit: i64) -> Check {
        Check::new("rl:key:k:rpm".into(), "key k".into(), Meter::Rpm, limit, 1)
    }

    #[test]
    fn a_bucket_admits_its_limit_then_one_per_interval() {
        let counters = LocalCounters::default();
        let t0 = 1_000_000;
        let admitted = (0..250)
            .filter(|_| counters.admit(&[rpm(100)], t0).refused.is_none())
            .count();
        assert_eq!(admitted, 100);
        let refused = counters.admit(&[rpm(100)], t0);
        assert_eq!(refused.refused, Some(0));
        assert_eq!(refused.outcomes[0].retry_after_ms, 600);
        // 600 ms later one more fits (100 per minute), and only one.
        assert!(counters.admit(&[rpm(100)], t0 + 600).refused.is_none());
        assert!(counters.admit(&[rpm(100)], t0 + 600).refused.is_some());
        // A minute later the bucket is empty again.
        let verdict = counters.admit(&[rpm(100)], t0 + 61_000);
        assert_eq!(verdict.outcomes[0].remaining, 99);
    }

    #[test]
    fn checks_pass_or_fail_together() {
        let counters = LocalCounters::default();
        let key = Check::new("a".into(), "key".into(), Meter::Rpm, 10, 1);
        let team = Check::new("b".into(), "team".into(), Meter::Rpm, 1, 1);
        assert!(counters
            .admit(&[key.clone(), team.clone()], 0)
            .refused
            .is_none());
        assert_eq!(counters.admit(&[key.clone(), team], 0).refused, Some(1));
        // The refused request did not use the key's allowance.
        assert_eq!(counters.admit(&[key], 0).outcomes[0].remaining, 8);
    }

    #[test]
    fn totals_reserve_settle_and_reset_with_their_period() {
        let counters = LocalCounters::default();
        let budget = |cost: i64| Check {
            floor: 0,
            expires_ms: Some(86_400_000),
            ..Check::new(
                "budget:key:k:0".into(),
                "key k".into(),
                Meter::Budget,
                250,
                cost,
            )
        };
        // Reserve 100 (the worst case), settle to 60 used.
        assert!(counters.admit(&[budget(100)], 0).refused.is_none());
        counters.settle(&budget(100), -40, 1);
        assert!(counters.admit(&[budget(100)], 2).refused.is_none());
        let verdict = counters.admit(&[budget(100)], 3);
        assert_eq!(verdict.refused, Some(0));
        assert_eq!(verdict.outcomes[0].remaining, 90);
        // The next period starts with nothing used (its counter is another key
        // too; an expired one never counts).
        assert!(counters.admit(&[budget(100)], 86_400_000).refused.is_none());
        // The control plane's count is a floor.
        let floored = Check {
            floor: 200,
            ..budget(100)
        };
        assert!(counters.admit(&[floored], 86_400_001).refused.is_some());
    }
}
