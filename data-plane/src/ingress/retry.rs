//! The provider step's loop: the route's targets in its strategy's order,
//! retries with exponential backoff and jitter (never sooner than a target's
//! `retry-after`, never past the deadline, within the route's retry budget),
//! then the fallback routes; the special fallbacks for over-long input and
//! content refusals. Nothing is retried once an answer has begun: an attempt
//! returns only after its first token, and from then on it is the answer.

use super::attempt;
use super::trace::ClientTrace;
use super::{AppState, Job};
use crate::error::{FailedAttempt, GatewayError, ProviderErrorKind};
use crate::router::health::{parse_retry_after, Outcome};
use crate::router::table::{RetryPolicy, Route, ServedBy, Target};
use crate::router::{self, Plan};
use crate::usage::UsageDraft;
use axum::http::{HeaderName, HeaderValue};
use axum::response::Response;
use rand::Rng;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// One try's span in a trace: the provider call, named as the GenAI
/// conventions name a client span.
fn upstream_span(target: &Target, attempt: u32, operation: &'static str) -> tracing::Span {
    use tracing::field::Empty;
    let span = tracing::debug_span!(
        target: shared::telemetry::TRACE,
        "upstream",
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = operation,
        gen_ai.system = target.provider.adapter.kind().gen_ai_system(),
        gen_ai.request.model = target.upstream_model.as_str(),
        provider = target.provider.name.as_str(),
        switchboard.attempt = i64::from(attempt),
        http.response.status_code = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() {
        let name = format!("{operation} {}", target.upstream_model);
        shared::telemetry::rename(&span, name);
    }
    span
}

/// An attempt's outcome on its span, and the answering model on the request's.
fn traced_outcome(
    upstream: &tracing::Span,
    request: &tracing::Span,
    target: &Target,
    result: &Result<attempt::Answered, GatewayError>,
) {
    match result {
        Ok(_) => {
            upstream.record("http.response.status_code", 200);
            request.record("gen_ai.response.model", target.upstream_model.as_str());
        }
        Err(error) => {
            let status = i64::from(error.status().as_u16());
            upstream
                .record("http.response.status_code", status)
                .record("error.type", error.type_and_code().1)
                .record("otel.status_code", "error");
        }
    }
}

/// Longest wait between two attempts, whatever the backoff or `retry-after` says.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub async fn run(
    state: AppState,
    plan: Plan,
    job: Arc<Job>,
    draft: UsageDraft,
    trace: ClientTrace,
) -> Result<Response, GatewayError> {
    let request_span = tracing::Span::current();
    let started = Instant::from_std(draft.started);
    let mut slot = Some(draft);
    let primary = plan.routes[0].clone();
    primary.state.budget.request();
    // Streams are bounded only when the route says so; whole answers by the default too.
    let total = primary
        .timeouts
        .total
        .or((!job.stream()).then_some(state.upstream_timeout));
    let deadline = total.map(|t| started + t);
    let mut queue: VecDeque<Arc<Route>> = plan.routes.into();
    let mut special = [plan.context_fallback, plan.content_fallback];
    let mut attempts = 0u32;
    let mut failed: Vec<FailedAttempt> = Vec::new();
    let mut last_error: Option<GatewayError> = None;

    while let Some(route) = queue.pop_front() {
        let order = router::order(&route);
        if order.is_empty() {
            last_error.get_or_insert_with(|| no_healthy_target(&route));
            continue;
        }
        let policy = route.retry.unwrap_or(RetryPolicy {
            max_attempts: state.routing.max_attempts,
            backoff: state.routing.backoff,
        });
        for n in 0..policy.max_attempts as usize {
            let index = order[n % order.len()];
            let target = &route.targets[index];
            // Half-open: one probe at a time; the others go on to the next target.
            if !target.health.admits() {
                continue;
            }
            if attempts > 0 && !primary.state.budget.try_retry(state.routing.retry_budget) {
                metrics::counter!("switchboard_retry_budget_exhausted_total").increment(1);
                return Err(finish_failed(&mut slot, last_error, failed));
            }
            attempts += 1;
            let tried = Instant::now();
            let kind = target.provider.adapter.kind();
            request_span
                .record("provider", target.provider.name.as_str())
                .record("gen_ai.system", kind.gen_ai_system());
            let upstream = trace.step(|| upstream_span(target, attempts, job.operation()));
            let result = attempt::one(&state, &route, target, &job, &mut slot, deadline, &trace)
                .instrument(upstream.clone())
                .await;
            traced_outcome(&upstream, &request_span, target, &result);
            let outcome = match &result {
                Ok(answered) => Outcome::Success {
                    latency: answered.latency,
                    tokens: answered.tokens,
                },
                Err(error) => Outcome::failure(error),
            };
            target.health.record(outcome, &state.routing.breaker);
            target
                .meters
                .attempt(result.is_ok(), attempts > 1, tried.elapsed());
            if result.is_ok() && job.stream() {
                target.meters.first_token(started.elapsed());
            }
            let error = match result {
                Ok(answered) => {
                    return Ok(with_headers(answered.response, &target.served_by, attempts));
                }
                Err(error) => error,
            };
            tracing::info!(attempt = attempts, provider = %target.provider.name, code = error.type_and_code().1, "attempt failed");
            let attempt = FailedAttempt {
                provider: target.provider.name.clone(),
                model: target.upstream_model.clone(),
                status: error.status().as_u16(),
                reason: error.type_and_code().1.to_owned(),
                duration_ms: u64::try_from(tried.elapsed().as_millis()).unwrap_or(u64::MAX),
            };
            // The record of whichever attempt ends the request lists those before it.
            if let Some(draft) = slot.as_mut() {
                draft.record.failed_attempts.push(attempt.clone());
            }
            failed.push(attempt);
            // A refusal another model may not make: its special fallback, at most once.
            let special_index = match &error {
                GatewayError::Provider { error: e, .. }
                    if e.kind == ProviderErrorKind::ContextLengthExceeded =>
                {
                    Some(0)
                }
                GatewayError::Provider { error: e, .. }
                    if e.kind == ProviderErrorKind::ContentFilter =>
                {
                    Some(1)
                }
                _ => None,
            };
            if let Some(fallback) = special_index.and_then(|i| special[i].take()) {
                queue.clear();
                queue.push_back(fallback);
                last_error = Some(error);
                break;
            }
            if !error.retryable() {
                return Err(finish_failed(&mut slot, Some(error), failed));
            }
            let retry_after = error.retry_after().and_then(parse_retry_after);
            last_error = Some(error);
            if n + 1 == policy.max_attempts as usize {
                break;
            }
            // Backoff only before trying the same target again; another target is tried at once.
            let same_next = order[(n + 1) % order.len()] == index;
            let wait = if same_next {
                backoff(policy.backoff, n as u32).max(retry_after.unwrap_or_default())
            } else {
                Duration::ZERO
            };
            if deadline.is_some_and(|d| Instant::now() + wait >= d) {
                // No time to wait here: a fallback route may still answer at once.
                break;
            }
            tokio::time::sleep(wait.min(MAX_BACKOFF)).await;
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    Err(finish_failed(&mut slot, last_error, failed))
}

/// Every target is ejected or at capacity: answered at once, saying when to
/// come back, instead of hammering a provider that is down.
fn no_healthy_target(route: &Route) -> GatewayError {
    let back_at = route
        .targets
        .iter()
        .filter_map(|t| t.health.ejected_until_ms())
        .min();
    let seconds = back_at.map(|at| ((at - shared::time::now_ms()).max(0) / 1000 + 1).to_string());
    GatewayError::NoHealthyTarget {
        route: route.model.clone(),
        retry_after: seconds.and_then(|s| HeaderValue::try_from(s).ok()),
    }
}

/// Exponential with full jitter: uniform in [base * 2^n / 2, base * 2^n].
fn backoff(base: Duration, attempt: u32) -> Duration {
    let ceiling = base.saturating_mul(1 << attempt.min(10)).min(MAX_BACKOFF);
    let half = ceiling / 2;
    half + half.mul_f64(rand::thread_rng().gen_range(0.0..=1.0))
}

/// Every attempt failed: the request's usage record carries the last
/// error; the answer (and the log line) lists every attempt when there was
/// more than one.
fn finish_failed(
    slot: &mut Option<UsageDraft>,
    error: Option<GatewayError>,
    attempts: Vec<FailedAttempt>,
) -> GatewayError {
    let error = error.unwrap_or_else(|| GatewayError::NoHealthyTarget {
        route: String::new(),
        retry_after: None,
    });
    if let Some(draft) = slot.take() {
        draft.finish(error.status().as_u16(), None, None);
    }
    if attempts.len() < 2 {
        return error;
    }
    tracing::warn!(attempts = ?attempts, "request failed after every attempt");
    GatewayError::Attempted {
        last: Box::new(error),
        attempts,
    }
}

/// Which target served, after how many attempts (0: the response cache did).
pub(super) fn with_headers(
    mut response: Response,
    served_by: &ServedBy,
    attempts: u32,
) -> Response {
    const PROVIDER: HeaderName = HeaderName::from_static("x-switchboard-provider");
    const MODEL: HeaderName = HeaderName::from_static("x-switchboard-model");
    const ATTEMPTS: HeaderName = HeaderName::from_static("x-switchboard-attempts");
    // A count written from an integer is a new allocation; the usual ones need none.
    const FEW: [&str; 4] = ["0", "1", "2", "3"];
    let headers = response.headers_mut();
    for (name, value) in [(PROVIDER, &served_by.provider), (MODEL, &served_by.model)] {
        if let Some(value) = value {
            headers.insert(name, value.clone());
        }
    }
    let attempts = match FEW.get(attempts as usize) {
        Some(few) => HeaderValue::from_static(few),
        None => HeaderValue::from(attempts),
    };
    headers.insert(ATTEMPTS, attempts);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter() {
        let base = Duration::from_millis(100);
        for attempt in 0..4 {
            let wait = backoff(base, attempt);
            let ceiling = base * (1 << attempt);
            assert!(
                wait >= ceiling / 2 && wait <= ceiling,
                "{wait:?} for attempt {attempt}"
            );
        }
        assert!(backoff(base, 30) <= MAX_BACKOFF);
    }
}
