//! The data plane's metrics catalogue: every metric's name, type and help
//! text (docs/observability.md lists them), and the handles of the
//! per-target metrics. A target's handles are registered once, when its
//! route is built from a snapshot, so the request path only adds to atomics:
//! no label strings are built or looked up per request.
//!
//! Labels stay bounded: `model` is a configured route (never what a client
//! typed), `provider` a configured provider, `upstream_model` a route
//! target's model. No key, user or team ids.

use metrics::{counter, gauge, histogram, Unit};
use metrics::{Counter, Gauge, Histogram};
use shared::usage::TokenUsage;
use std::cell::RefCell;
use std::sync::LazyLock;
use std::time::Duration;

/// Registers the help text of every metric the data plane exports.
pub fn describe() {
    use Unit::{Bytes, Count, Seconds};
    let counters = [
        ("switchboard_requests_total", Count, "HTTP answers of the public listener, by endpoint and status (refusals included)."),
        ("switchboard_request_errors_total", Count, "Requests answered with an error, by the gateway's error code."),
        ("switchboard_model_requests_total", Count, "Admitted requests by route (model), provider and status class (2xx, 4xx, 5xx; 499: the client left)."),
        ("switchboard_model_tokens_total", Count, "Tokens by route, provider and kind: input, output, cached (input read from a prompt cache), reasoning."),
        ("switchboard_model_cost_micros_total", Count, "Cost in millionths of the currency, by route, provider and currency (the snapshot's prices)."),
        ("switchboard_upstream_attempts_total", Count, "Calls to providers by route, provider, upstream model, result (ok, error) and attempt (first, retry)."),
        ("switchboard_target_ejections_total", Count, "Times a circuit breaker took a target out of rotation."),
        ("switchboard_retry_budget_exhausted_total", Count, "Retries not made because the route's retry budget was spent."),
        ("switchboard_limit_refusals_total", Count, "Requests refused by a rate limit, quota or budget, by meter."),
        ("switchboard_limits_redis_errors_total", Count, "Limit checks that could not reach Redis, by the failure mode applied."),
        ("switchboard_limits_settle_failures_total", Count, "Counters whose gathered settlements could not be sent to Redis (their reservations stand)."),
        ("switchboard_stream_keepalives_total", Count, "SSE comment keepalives sent while streams waited for a first token."),
        ("switchboard_health_checks_total", Count, "Active health probes of providers, by provider and result."),
        ("switchboard_config_received_bytes_total", Bytes, "Config bytes received from the control plane, by kind (snapshot, delta, counters)."),
        ("switchboard_config_rejected_total", Count, "Config updates this data plane refused to apply, by kind."),
        ("switchboard_usage_records_sent_total", Count, "Usage records delivered to the control plane."),
        ("switchboard_usage_send_failures_total", Count, "Usage batches the control plane did not take (they are retried from the spool)."),
        ("switchboard_usage_queue_full_total", Count, "Usage records that waited for room in the in-memory queue."),
        ("switchboard_usage_journal_failures_total", Count, "Usage batches kept in memory because the spool journal could not be written."),
        ("switchboard_usage_lost_total", Count, "Usage records lost (the queue was closed). Should stay 0."),
        ("switchboard_cache_requests_total", Count, "Requests to routes that cache, by result: hit, miss (answered by the provider and stored), bypass (neither read nor stored)."),
        ("switchboard_cache_stored_bytes_total", Bytes, "Bytes of answers stored in the response cache."),
        ("switchboard_plugin_calls_total", Count, "Plugin hook calls, by plugin, hook (request, response, chunk) and result: continue, rewrite, reject, or a failure (out_of_fuel, trap, memory, abi, error)."),
        ("switchboard_guardrail_actions_total", Count, "What guardrails did, by guardrail (pii, deny, max_prompt_tokens, webhook) and action (mask, refuse, allow, fail_open, fail_closed)."),
        ("switchboard_cache_errors_total", Count, "Response-cache calls to Redis that failed, by operation (get, set); a failed get is a miss."),
    ];
    let from_zero = [
        "switchboard_target_ejections_total",
        "switchboard_retry_budget_exhausted_total",
        "switchboard_limits_settle_failures_total",
        "switchboard_stream_keepalives_total",
        "switchboard_usage_records_sent_total",
        "switchboard_usage_send_failures_total",
        "switchboard_usage_queue_full_total",
        "switchboard_usage_journal_failures_total",
        "switchboard_usage_lost_total",
    ];
    for kind in ["snapshot", "delta"] {
        counter!("switchboard_config_rejected_total", "kind" => kind).increment(0);
    }
    let gauges = [
        ("switchboard_requests_in_flight", Count, "Admitted requests not yet finished, streams included."),
        ("switchboard_streams_in_flight", Count, "Streamed answers being relayed."),
        ("switchboard_breaker_open", Count, "1 while a route target is out of rotation (breaker open, or set aside after retry-after), by route, provider and upstream model."),
        ("switchboard_config_version", Count, "Version of the config applied."),
        ("switchboard_config_applied_timestamp_seconds", Seconds, "When the config applied last was applied (Unix time)."),
        ("switchboard_config_keys", Count, "API keys in the config applied."),
        ("switchboard_usage_spool_batches", Count, "Usage batches in the spool waiting for the control plane."),
        ("switchboard_usage_spool_oldest_seconds", Seconds, "Age of the oldest usage batch waiting in the spool (0 when empty)."),
        ("switchboard_cache_memory_bytes", Bytes, "Bytes the in-memory response cache holds (about; with the memory backend)."),
    ];
    let histograms = [
        ("switchboard_request_duration_seconds", "Time to answer, by endpoint: to the last byte of a whole answer, to the start of a stream."),
        ("switchboard_model_request_duration_seconds", "Admitted requests from arrival to their last token (streams to their end), by route and provider."),
        ("switchboard_time_to_first_token_seconds", "Streams: from arrival to the first token sent, by route and provider."),
        ("switchboard_upstream_duration_seconds", "One provider call to its answer (a stream's first token), by route, provider, upstream model and result."),
        ("switchboard_config_apply_seconds", "Time to apply a config update, by kind."),
        ("switchboard_config_save_seconds", "Time to write the applied config to the state dir."),
    ];
    shared::metrics::describe(&counters, &gauges, &histograms, &from_zero);
}

/// One route target's metrics, registered when the route is built.
#[derive(Debug)]
pub struct TargetMeters {
    /// 2xx, 4xx, 499, 5xx.
    requests: [Counter; 4],
    input: Counter,
    output: Counter,
    cached: Counter,
    reasoning: Counter,
    cost_micros: Counter,
    duration: Histogram,
    first_token: Histogram,
    upstream_ok: Histogram,
    upstream_error: Histogram,
    attempts: [[Counter; 2]; 2],
    pub breaker_open: Gauge,
}

const STATUS_CLASSES: [&str; 4] = ["2xx", "4xx", "499", "5xx"];

impl TargetMeters {
    pub fn register(route: &str, provider: &str, upstream_model: &str, currency: &str) -> Self {
        let route_labels = [("model", route), ("provider", provider)];
        let target_labels = [
            ("model", route),
            ("provider", provider),
            ("upstream_model", upstream_model),
        ];
        let route = |more: &[(&'static str, &str)]| labels(&route_labels, more);
        let target = |more: &[(&'static str, &str)]| labels(&target_labels, more);
        let tokens = |kind| counter!("switchboard_model_tokens_total", &route(&[("kind", kind)]));
        let upstream = |result| {
            histogram!(
                "switchboard_upstream_duration_seconds",
                &target(&[("result", result)])
            )
        };
        let attempt = |result, attempt| {
            let labels = target(&[("result", result), ("attempt", attempt)]);
            counter!("switchboard_upstream_attempts_total", &labels)
        };
        Self {
            requests: STATUS_CLASSES.map(|class| {
                counter!(
                    "switchboard_model_requests_total",
                    &route(&[("status_class", class)])
                )
            }),
            input: tokens("input"),
            output: tokens("output"),
            cached: tokens("cached"),
            reasoning: tokens("reasoning"),
            cost_micros: counter!(
                "switchboard_model_cost_micros_total",
                &route(&[("currency", currency)])
            ),
            duration: histogram!("switchboard_model_request_duration_seconds", &route(&[])),
            first_token: histogram!("switchboard_time_to_first_token_seconds", &route(&[])),
            upstream_ok: upstream("ok"),
            upstream_error: upstream("error"),
            attempts: [
                [attempt("ok", "first"), attempt("ok", "retry")],
                [attempt("error", "first"), attempt("error", "retry")],
            ],
            breaker_open: gauge!("switchboard_breaker_open", &target(&[])),
        }
    }

    /// A finished request: its status, tokens, cost and duration.
    pub fn finished(&self, status: u16, tokens: &TokenUsage, cost_micros: i64, took: Duration) {
        let class = match status {
            499 => 2,
            500.. => 3,
            400.. => 1,
            _ => 0,
        };
        self.requests[class].increment(1);
        let add = |counter: &Counter, n: i64| {
            if n > 0 {
                counter.increment(n.unsigned_abs());
            }
        };
        add(&self.input, tokens.prompt_tokens);
        add(&self.output, tokens.completion_tokens);
        add(&self.cached, tokens.cached_tokens);
        add(&self.reasoning, tokens.reasoning_tokens);
        add(&self.cost_micros, cost_micros);
        self.duration.record(took);
    }

    /// One provider call: how it ended and how long it took.
    pub fn attempt(&self, ok: bool, retry: bool, took: Duration) {
        self.attempts[usize::from(!ok)][usize::from(retry)].increment(1);
        if ok {
            self.upstream_ok.record(took);
        } else {
            self.upstream_error.record(took);
        }
    }

    pub fn first_token(&self, after: Duration) {
        self.first_token.record(after);
    }
}

/// Owned labels: a base set and more.
fn labels(
    base: &[(&'static str, &str)],
    more: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    base.iter()
        .chain(more)
        .map(|(name, value)| (*name, (*value).to_owned()))
        .collect()
}

/// Admitted requests in flight; one per request, dropped when it ends.
pub struct InFlight {
    stream: bool,
}

/// Their handles, taken once (after the recorder is installed: at the
/// first request), not looked up in the registry per request.
static REQUESTS_IN_FLIGHT: LazyLock<Gauge> =
    LazyLock::new(|| gauge!("switchboard_requests_in_flight"));
static STREAMS_IN_FLIGHT: LazyLock<Gauge> =
    LazyLock::new(|| gauge!("switchboard_streams_in_flight"));

impl InFlight {
    pub fn start(stream: bool) -> Self {
        REQUESTS_IN_FLIGHT.increment(1.0);
        if stream {
            STREAMS_IN_FLIGHT.increment(1.0);
        }
        Self { stream }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        REQUESTS_IN_FLIGHT.decrement(1.0);
        if self.stream {
            STREAMS_IN_FLIGHT.decrement(1.0);
        }
    }
}

/// Every answer's count by endpoint and status, and its duration by
/// endpoint. Both label sets are bounded (endpoint names are static, a
/// status is a number), so each worker thread keeps the handles it has
/// used: the registry (a key built, hashed and looked up under a lock) is
/// consulted once per label set and thread, not per answer.
pub fn answered(endpoint: &'static str, status: axum::http::StatusCode, took: Duration) {
    type ByEndpointAndStatus = foldhash::HashMap<(&'static str, u16), (Counter, Histogram)>;
    thread_local! {
        static HANDLES: RefCell<ByEndpointAndStatus> = RefCell::new(ByEndpointAndStatus::default());
    }
    HANDLES.with_borrow_mut(|handles| {
        let (count, duration) = handles
            .entry((endpoint, status.as_u16()))
            .or_insert_with(|| {
                (
                    counter!("switchboard_requests_total", "endpoint" => endpoint, "status" => status.as_str().to_owned()),
                    histogram!("switchboard_request_duration_seconds", "endpoint" => endpoint),
                )
            });
        count.increment(1);
        duration.record(took);
    });
}
