//! Step 4 of the request path: rate limits, quotas and budgets, after the
//! router (a request's worst-case cost depends on where it may go).
//!
//! Each request becomes a list of checks (global, model, team, user, key
//! and key-per-model rate limits; quotas; budgets), admitted together or
//! refused together against counters: in-process, or in Redis when data
//! planes share them. Tokens and money are reserved at their worst case
//! (prompt estimate plus max_tokens, at the dearest target's price) and the
//! permit settles them to what the request really used.

pub mod counted;
pub mod counters;
pub mod estimate;
pub mod redis;

use crate::auth::holder::Holder;
use crate::auth::Caller;
use crate::error::GatewayError;
use crate::router::Plan;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use counters::LocalCounters;
use redis::RedisCounters;
use shared::limits::RateLimits;
use shared::money::{Currency, Micros, Prices};
use shared::time::now_ms;
use std::sync::Arc;

/// What a check counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meter {
    Rpm,
    Tpm,
    Tpd,
    MaxRequests,
    MaxTokens,
    Budget,
}

impl Meter {
    /// Rate limits drain over a window; quotas and budgets do not.
    fn window_ms(self) -> Option<i64> {
        match self {
            Meter::Rpm | Meter::Tpm => Some(60_000),
            Meter::Tpd => Some(86_400_000),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Meter::Rpm => "requests per minute",
            Meter::Tpm => "tokens per minute",
            Meter::Tpd => "tokens per day",
            Meter::MaxRequests => "request quota",
            Meter::MaxTokens => "token quota",
            Meter::Budget => "budget",
        }
    }

    fn counts_tokens(self) -> bool {
        matches!(self, Meter::Tpm | Meter::Tpd | Meter::MaxTokens)
    }

    /// An allowance that ends (429 insufficient_quota), not a rate (429 rate_limit_exceeded).
    fn is_quota(self) -> bool {
        matches!(self, Meter::MaxRequests | Meter::MaxTokens | Meter::Budget)
    }

    fn as_str(self) -> &'static str {
        match self {
            Meter::Rpm => "rpm",
            Meter::Tpm => "tpm",
            Meter::Tpd => "tpd",
            Meter::MaxRequests => "max_requests",
            Meter::MaxTokens => "max_tokens",
            Meter::Budget => "budget",
        }
    }
}

/// One limit a request must fit.
#[derive(Clone, Debug)]
pub struct Check {
    /// The counter's name, shared by every data plane.
    pub key: String,
    /// Whose limit, as messages name it: "key 0193...", "the cluster".
    pub scope: String,
    pub meter: Meter,
    pub limit: i64,
    /// What this request counts (reserved at its worst case).
    pub cost: i64,
    /// For totals: the control plane's count, below which none is believed.
    pub floor: i64,
    /// For totals: when their period ends and the counter with it.
    pub expires_ms: Option<i64>,
    /// For budgets: the currency the limit is in.
    pub currency: Option<Currency>,
}

impl Check {
    pub fn new(key: String, scope: String, meter: Meter, limit: i64, cost: i64) -> Self {
        Check {
            key,
            scope,
            meter,
            limit,
            cost,
            floor: 0,
            expires_ms: None,
            currency: None,
        }
    }

    pub fn window_ms(&self) -> Option<i64> {
        self.meter.window_ms()
    }

    fn limit_text(&self) -> String {
        match self.currency {
            Some(currency) => format!("{} {currency}", Micros(self.limit)),
            None => self.limit.to_string(),
        }
    }
}

/// What a counter says after a check.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outcome {
    pub remaining: i64,
    /// Until the counter is back to full (rates) or its period ends (totals).
    pub reset_ms: i64,
    /// For a refused check: how long until it would pass.
    pub retry_after_ms: i64,
}

#[derive(Debug)]
pub struct Verdict {
    /// The first check that did not pass; then none was counted.
    pub refused: Option<usize>,
    pub outcomes: Vec<Outcome>,
}

/// What to do when Redis cannot be asked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum FailMode {
    /// Admit by this data plane's own counters.
    Open,
    /// Refuse with 503.
    Closed,
}

impl FailMode {
    fn as_str(self) -> &'static str {
        match self {
            FailMode::Open => "open",
            FailMode::Closed => "closed",
        }
    }
}

/// The counters, and what to do when the shared ones are out of reach.
pub struct Limiter {
    local: LocalCounters,
    /// The control plane's counts: floors under budgets and quotas.
    pub counted: counted::ControlPlaneCounts,
    redis: Option<Arc<RedisCounters>>,
    pub rates_on_redis_error: FailMode,
    pub quotas_on_redis_error: FailMode,
    /// Tokens reserved for an answer whose request sets no max_tokens.
    pub completion_reservation: i64,
    /// The fewest answer tokens a request without max_tokens is sent with
    /// when a quota or budget leaves less than the reservation.
    pub completion_floor: i64,
}

impl Limiter {
    pub fn new(redis: Option<Arc<RedisCounters>>) -> Self {
        Limiter {
            local: LocalCounters::default(),
            counted: counted::ControlPlaneCounts::default(),
            redis,
            rates_on_redis_error: FailMode::Open,
            quotas_on_redis_error: FailMode::Closed,
            completion_reservation: 4_096,
            completion_floor: 16,
        }
    }

    fn mode(&self, meter: Meter) -> FailMode {
        if meter.is_quota() {
            self.quotas_on_redis_error
        } else {
            self.rates_on_redis_error
        }
    }

    /// Admits or refuses the checks together. Answers the verdict and
    /// whether Redis counted it (settlement goes to the same place).
    async fn admit(&self, checks: &[Check]) -> Result<(Verdict, bool), GatewayError> {
        let Some(redis) = &self.redis else {
            return Ok((self.local.admit(checks, now_ms()), false));
        };
        match redis.admit(checks).await {
            Ok(verdict) => Ok((verdict, true)),
            Err(error) => {
                let closed = checks
                    .iter()
                    .any(|c| self.mode(c.meter) == FailMode::Closed);
                let mode = if closed {
                    FailMode::Closed
                } else {
                    FailMode::Open
                };
                metrics::counter!("switchboard_limits_redis_errors_total", "mode" => mode.as_str())
                    .increment(1);
                tracing::warn!(%error, mode = mode.as_str(), "Redis unavailable for limits");
                if closed {
                    return Err(GatewayError::LimitsUnavailable);
                }
                Ok((self.local.admit(checks, now_ms()), false))
            }
        }
    }

    fn settle(&self, adjustments: &[(Check, i64)], in_redis: bool) {
        if adjustments.is_empty() {
            return;
        }
        match &self.redis {
            Some(redis) if in_redis => redis.settle(adjustments),
            _ => {
                let now = now_ms();
                for (check, delta) in adjustments {
                    self.local.settle(check, *delta, now);
                }
            }
        }
    }

    /// Sends the settlements still gathered for Redis (once requests have finished).
    pub async fn flush(&self) {
        if let Some(redis) = &self.redis {
            redis.flush_settlements().await;
        }
    }

    /// Forgets idle in-process state; run now and then.
    pub fn sweep(&self) {
        self.local.sweep(now_ms());
    }
}

/// What the configuration says about limits, beyond each holder's own.
#[derive(Clone, Copy)]
pub struct Policy<'a> {
    pub global: &'a RateLimits,
    pub prices: &'a Prices,
}

impl Policy<'_> {
    fn is_empty(&self) -> bool {
        self.global.is_empty()
    }
}

/// A request's token use, as estimated before it is sent.
#[derive(Clone, Copy, Debug)]
pub struct TokenEstimate {
    pub prompt: i64,
    pub completion: i64,
}

impl TokenEstimate {
    pub fn total(self) -> i64 {
        self.prompt + self.completion
    }
}

/// An admitted request's reservations, settled when its usage is known. A
/// permit dropped unsettled gives every reservation back.
pub struct Permit {
    limiter: Arc<Limiter>,
    checks: Vec<Check>,
    in_redis: bool,
    headers: HeaderMap,
    /// The max_tokens the request is sent with, when it set none and a quota
    /// or budget left room for less than the usual reservation.
    pub capped_max_tokens: Option<u32>,
}

impl Permit {
    /// The `x-ratelimit-*` headers of the answer (taken: the answer has them).
    pub fn take_headers(&mut self) -> HeaderMap {
        std::mem::take(&mut self.headers)
    }

    /// Turns reservations into use: `tokens` used, costing `cost`; a failed
    /// request gives its quota request back.
    pub fn settle(mut self, tokens: i64, cost: Option<(Micros, Currency)>, succeeded: bool) {
        self.settle_now(tokens, cost, succeeded);
    }

    fn settle_now(&mut self, tokens: i64, cost: Option<(Micros, Currency)>, succeeded: bool) {
        let adjustments: Vec<(Check, i64)> = std::mem::take(&mut self.checks)
            .into_iter()
            .filter_map(|check| {
                let used = match check.meter {
                    Meter::Rpm => return None,
                    Meter::MaxRequests => i64::from(succeeded),
                    Meter::Tpm | Meter::Tpd | Meter::MaxTokens => tokens,
                    Meter::Budget => match cost {
                        Some((cost, currency)) if Some(currency) == check.currency => cost.0,
                        _ => 0,
                    },
                };
                let delta = used - check.cost;
                (delta != 0).then_some((check, delta))
            })
            .collect();
        self.limiter.settle(&adjustments, self.in_redis);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.checks.is_empty() {
            self.settle_now(0, None, false);
        }
    }
}

/// Every limit the request falls under, admitted together.
/// `model` is the name the client asked for (holders' per-model limits name
/// models as their `models` lists do); the route's own limits are those of
/// the route serving it. `None` when nothing limits this caller and model.
pub async fn admit(
    limiter: &Arc<Limiter>,
    policy: Policy<'_>,
    caller: &Caller,
    model: &str,
    plan: &Plan,
    max_tokens: Option<u32>,
    estimate: impl FnOnce() -> i64,
) -> Result<Option<Permit>, GatewayError> {
    let Some(route) = plan.routes.first() else {
        return Ok(None);
    };
    if caller.holders.is_empty() && policy.is_empty() && route.limits.is_empty() {
        return Ok(None);
    }
    let mut builder = Builder::default();
    builder.rates("global", "the cluster", policy.global);
    builder.rates(
        &format!("model:{}", route.model),
        &format!("model {}", route.model),
        &route.limits,
    );
    let now = now_ms();
    for holder in &caller.holders {
        builder.holder(holder, model, &limiter.counted, now);
    }
    if builder.checks.is_empty() {
        return Ok(None);
    }
    // Tokens and money are only estimated when a check counts them.
    let mut checks = builder.checks;
    // Where the worst case goes: set per attempt, as the answer's cap shrinks.
    let pending: Vec<(usize, i64)> = checks
        .iter()
        .enumerate()
        .filter(|(_, c)| c.cost < 0)
        .map(|(i, c)| (i, c.cost))
        .collect();
    let prompt = if !pending.is_empty() { estimate() } else { 0 };
    let mut completion = max_tokens.map_or(limiter.completion_reservation, i64::from);
    let mut capped_max_tokens = None;
    loop {
        let tokens = TokenEstimate { prompt, completion };
        price(&mut checks, &pending, plan, policy.prices, tokens)?;
        let (verdict, in_redis) = limiter.admit(&checks).await?;
        let headers = rate_headers(&checks, &verdict);
        let Some(i) = verdict.refused else {
            return Ok(Some(Permit {
                limiter: limiter.clone(),
                checks,
                in_redis,
                headers,
                capped_max_tokens,
            }));
        };
        let (check, outcome) = (&checks[i], &verdict.outcomes[i]);
        // A request that set no max_tokens is sent with the answer length
        // that fits what remains, rather than refused for a length it never asked.
        let mut cappable = false;
        if max_tokens.is_none() {
            let fits = completion_that_fits(check, outcome, plan, policy.prices, prompt)?;
            cappable = fits.is_some();
            if let Some(fits) = fits.filter(|f| (limiter.completion_floor..completion).contains(f))
            {
                completion = fits;
                capped_max_tokens = u32::try_from(fits).ok();
                continue;
            }
        }
        metrics::counter!("switchboard_limit_refusals_total", "meter" => check.meter.as_str())
            .increment(1);
        return Err(refusal(check, outcome, headers, cappable));
    }
}

/// Fills in the request's worst case where the checks count it: tokens,
/// and money at the dearest target it may be sent to.
fn price(
    checks: &mut [Check],
    pending: &[(usize, i64)],
    plan: &Plan,
    prices: &Prices,
    tokens: TokenEstimate,
) -> Result<(), GatewayError> {
    for &(i, what) in pending {
        let check = &mut checks[i];
        check.cost = match what {
            MONEY_PENDING => worst_cost(plan, prices, check.currency, tokens)?.0,
            _ => tokens.total(),
        };
    }
    Ok(())
}

fn worst_cost(
    plan: &Plan,
    prices: &Prices,
    currency: Option<Currency>,
    tokens: TokenEstimate,
) -> Result<Micros, GatewayError> {
    let mut worst = Micros::ZERO;
    for target in plan.targets() {
        let name = &target.provider.name;
        let price = prices
            .get(name, &target.upstream_model)
            .filter(|p| Some(p.currency) == currency)
            .ok_or_else(|| {
                GatewayError::PriceMissing(format!("{name}/{}", target.upstream_model))
            })?;
        worst = worst.max(price.worst_case(tokens.prompt, tokens.completion));
    }
    Ok(worst)
}

/// The most answer tokens a refused token quota or budget still has room
/// for after the prompt; `None` for any other limit.
fn completion_that_fits(
    check: &Check,
    outcome: &Outcome,
    plan: &Plan,
    prices: &Prices,
    prompt: i64,
) -> Result<Option<i64>, GatewayError> {
    let remaining = outcome.remaining;
    match check.meter {
        Meter::MaxTokens => Ok(Some(remaining - prompt)),
        Meter::Budget => {
            // Costs grow with the answer: the longest that fits, by bisection.
            let cost = |completion| {
                worst_cost(
                    plan,
                    prices,
                    check.currency,
                    TokenEstimate { prompt, completion },
                )
            };
            if cost(0)?.0 > remaining {
                return Ok(Some(-1));
            }
            let (mut fits, mut too_long) = (0, i64::from(u32::MAX));
            while too_long - fits > 1 {
                let middle = fits + (too_long - fits) / 2;
                if cost(middle)?.0 <= remaining {
                    fits = middle;
                } else {
                    too_long = middle;
                }
            }
            Ok(Some(fits))
        }
        _ => Ok(None),
    }
}

#[derive(Default)]
struct Builder {
    checks: Vec<Check>,
}

const TOKENS_PENDING: i64 = -1;
const MONEY_PENDING: i64 = -2;

impl Builder {
    fn rates(&mut self, key: &str, scope: &str, rates: &RateLimits) {
        for (meter, limit) in [
            (Meter::Rpm, rates.rpm),
            (Meter::Tpm, rates.tpm),
            (Meter::Tpd, rates.tpd),
        ] {
            let Some(limit) = limit else { continue };
            let cost = if meter == Meter::Rpm {
                1
            } else {
                TOKENS_PENDING
            };
            let limit = i64::try_from(limit).unwrap_or(i64::MAX);
            self.checks.push(Check::new(
                format!("rl:{key}:{}", meter.as_str()),
                scope.to_owned(),
                meter,
                limit,
                cost,
            ));
        }
    }

    fn holder(
        &mut self,
        holder: &Holder,
        model: &str,
        counts: &counted::ControlPlaneCounts,
        now: i64,
    ) {
        let kind = holder.kind.as_str();
        let key = format!("{kind}:{}", holder.id);
        let scope = format!("{kind} {}", holder.id);
        let limits = &holder.allowance.limits;
        self.rates(&key, &scope, &limits.rate());
        if let Some(rates) = limits.models.get(model) {
            self.rates(
                &format!("{key}:model:{model}"),
                &format!("{scope} on model {model}"),
                rates,
            );
        }
        let counted = counts.get(&holder.kind.holder(&holder.id));
        for (meter, limit, floor) in [
            (
                Meter::MaxRequests,
                limits.max_requests,
                counted.map_or(0, |s| s.requests),
            ),
            (
                Meter::MaxTokens,
                limits.max_tokens,
                counted.map_or(0, |s| s.tokens),
            ),
        ] {
            let Some(limit) = limit else { continue };
            let cost = if meter == Meter::MaxRequests {
                1
            } else {
                TOKENS_PENDING
            };
            self.checks.push(Check {
                floor,
                ..Check::new(
                    format!("quota:{key}:{}", meter.as_str()),
                    scope.clone(),
                    meter,
                    i64::try_from(limit).unwrap_or(i64::MAX),
                    cost,
                )
            });
        }
        if let Some(budget) = &holder.allowance.budget {
            let start = budget.period.start(now);
            // The control plane's count stands only for the period it counted.
            let floor = counted
                .filter(|s| s.period_start_ms == start)
                .map_or(0, |s| s.spent_micros);
            self.checks.push(Check {
                floor,
                expires_ms: budget.period.end(now),
                currency: Some(budget.currency),
                ..Check::new(
                    format!("budget:{key}:{start}"),
                    scope,
                    Meter::Budget,
                    budget.amount.0,
                    MONEY_PENDING,
                )
            });
        }
    }
}

/// OpenAI's headers (limit, remaining, reset) for request and for token rates.
const RATE_HEADERS: [(bool, [HeaderName; 3]); 2] = [
    (
        false,
        [
            HeaderName::from_static("x-ratelimit-limit-requests"),
            HeaderName::from_static("x-ratelimit-remaining-requests"),
            HeaderName::from_static("x-ratelimit-reset-requests"),
        ],
    ),
    (
        true,
        [
            HeaderName::from_static("x-ratelimit-limit-tokens"),
            HeaderName::from_static("x-ratelimit-remaining-tokens"),
            HeaderName::from_static("x-ratelimit-reset-tokens"),
        ],
    ),
];

/// OpenAI's headers, from the tightest request and token rate limits.
fn rate_headers(checks: &[Check], verdict: &Verdict) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (tokens, [limit, remaining, reset]) in RATE_HEADERS {
        let tightest = checks
            .iter()
            .zip(&verdict.outcomes)
            .filter(|(c, _)| c.window_ms().is_some() && c.meter.counts_tokens() == tokens)
            .min_by_key(|(_, o)| o.remaining);
        let Some((check, outcome)) = tightest else {
            continue;
        };
        headers.insert(limit, HeaderValue::from(check.limit));
        headers.insert(remaining, HeaderValue::from(outcome.remaining));
        if let Ok(value) = HeaderValue::try_from(duration_text(outcome.reset_ms)) {
            headers.insert(reset, value);
        }
    }
    headers
}

/// As OpenAI writes durations: "1s", "6m0s", "20ms".
fn duration_text(ms: i64) -> String {
    let ms = ms.max(0);
    if ms < 1_000 {
        return format!("{ms}ms");
    }
    let seconds = ms as f64 / 1000.0;
    if seconds < 60.0 {
        return format!("{}s", (seconds * 1000.0).round() / 1000.0);
    }
    let total = (ms + 999) / 1000;
    let (hours, minutes, seconds) = (total / 3600, total % 3600 / 60, total % 60);
    if hours > 0 {
        format!("{hours}h{minutes}m{seconds}s")
    } else {
        format!("{minutes}m{seconds}s")
    }
}

/// `capped`: the request set no max_tokens and was too large even capped.
fn refusal(check: &Check, outcome: &Outcome, mut headers: HeaderMap, capped: bool) -> GatewayError {
    let wait_ms = outcome.retry_after_ms.max(0);
    let message = if check.meter.is_quota() {
        let ends = match check.expires_ms {
            Some(_) => format!(" It renews in {}.", duration_text(wait_ms)),
            None => String::new(),
        };
        if check.cost > check.limit && !(capped && outcome.remaining > 0) {
            format!(
                "This request could cost more than the whole {} of {} ({}).{ends}",
                check.meter.label(),
                check.scope,
                check.limit_text()
            )
        } else if outcome.remaining > 0 {
            // Not used up: what this request may cost at worst does not fit.
            let remaining = match check.currency {
                Some(currency) => format!("{} {currency}", Micros(outcome.remaining)),
                None => outcome.remaining.to_string(),
            };
            let advice = if capped {
                "too little is left for an answer"
            } else {
                "set max_tokens lower to fit it"
            };
            format!(
                "The request's worst case exceeds what remains of the {} of {} ({remaining} of {}); \
                 {advice}.{ends}",
                check.meter.label(),
                check.scope,
                check.limit_text()
            )
        } else {
            format!(
                "The {} of {} ({}) is used up.{ends}",
                check.meter.label(),
                check.scope,
                check.limit_text()
            )
        }
    } else if check.cost > check.limit {
        format!(
            "This request needs {} of the {} of {}: more than its limit of {}.",
            check.cost,
            check.meter.label(),
            check.scope,
            check.limit
        )
    } else {
        format!(
            "Rate limit reached for {} on {}: limit {}. Please try again in {}.",
            check.scope,
            check.meter.label(),
            check.limit,
            duration_text(wait_ms)
        )
    };
    if wait_ms > 0 {
        let seconds = (wait_ms + 999) / 1000;
        if let Ok(value) = HeaderValue::try_from(seconds.to_string()) {
            headers.insert(axum::http::header::RETRY_AFTER, value);
        }
        if let Ok(value) = HeaderValue::try_from(wait_ms.to_string()) {
            headers.insert("retry-after-ms", value);
        }
    }
    GatewayError::LimitReached {
        message,
        quota: check.meter.is_quota(),
        tokens: check.meter.counts_tokens(),
        headers: Box::new(headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_openais() {
        assert_eq!(duration_text(20), "20ms");
        assert_eq!(duration_text(1_500), "1.5s");
        assert_eq!(duration_text(360_000), "6m0s");
        assert_eq!(duration_text(3_661_000), "1h1m1s");
    }
}
