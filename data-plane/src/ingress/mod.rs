//! The HTTP surface (step 1), and the one place the request path is
//! assembled, in this order: auth (before the body is read) -> the body ->
//! router -> limits -> provider -> usage.
//!
//! The provider step is `attempt` (one try on one target: OpenAI's format
//! passed through, any other translated; a stream goes through the one
//! `relay`) inside `retry` (strategy order, backoff, fallbacks, no retry once
//! an answer has begun); streams waiting long for their first token get
//! `keepalive` comments. Step 6, usage, is no call at the end: the usage
//! draft is recorded by whatever ends the request (an answer, the relay's
//! end, or its drop when the client goes away).

mod anthropic;
mod attempt;
mod cached;
mod keepalive;
mod models;
mod moderation;
mod request;
mod retry;
mod trace;

use crate::cache::{KeyParts, Lookup, Verdict, CACHE_HEADER};
use crate::chat::{ChatRequest, EmbeddingsRequest};
use crate::error::GatewayError;
use crate::guardrails::{Compiled, Stage};
use crate::limits::{self, Limiter};
use crate::relay::translate::{Egress, OpenAiEgress};
use crate::router::RoutingConfig;
use crate::runtime::{Live, Runtime};
use crate::usage::{CacheUse, PromptTokens, Refused};
use crate::usage::{Endpoint, TokenUsage, UsageDraft, UsageRecord, UsageSink};
use crate::{auth, providers, router};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use moderation::Moderation;
use request::ProxyRequest;
use shared::ids::UsageRecordId;
use shared::telemetry::TRACE;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tower::ServiceExt;
use tracing::Instrument;

#[derive(Clone)]
pub struct AppState {
    pub live: Live,
    pub http: providers::UpstreamClient,
    pub usage: UsageSink,
    pub limiter: Arc<Limiter>,
    pub cache: Arc<crate::cache::ResponseCache>,
    /// `None` when `/metrics` has its own listener.
    pub metrics: Option<PrometheusHandle>,
    pub max_body_bytes: usize,
    pub upstream_timeout: Duration,
    pub routing: Arc<RoutingConfig>,
    /// Set on SIGTERM: `/readyz` answers 503 and connections are closed
    /// after each answer, while requests are still served.
    pub draining: Arc<AtomicBool>,
}

/// The data plane's HTTP surface, one service for both listeners. The proxy
/// endpoints are found by a match on the path and called directly; the few
/// others (models, health, metrics, unknown paths) go through an axum router.
/// Every proxy request passing through axum's routing and middleware cost a
/// third of its allocations, each layer boxing and moving the request's
/// future (docs/benchmarks.md).
pub fn service(
    state: AppState,
) -> impl tower::Service<Request, Response = Response, Error = Infallible, Future: Send + 'static>
       + Clone
       + Send
       + 'static {
    let gateway = Arc::new(Gateway {
        others: others(state.clone()),
        state,
    });
    tower::service_fn(move |request: Request| {
        let gateway = gateway.clone();
        // Boxed: hyper keeps room for a connection's request future for as
        // long as the connection lives, idle or streaming, and this one is
        // some 11 KiB (inline, it doubled what an idle connection holds).
        Box::pin(async move { Ok(gateway.answer(request).await) })
    })
}

struct Gateway {
    state: AppState,
    others: Router,
}

/// Everything but the proxy endpoints.
fn others(state: AppState) -> Router {
    Router::new()
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*model}", get(models::get))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                match s.metrics {
                    Some(metrics) => Ok(metrics.render()),
                    None => Err(GatewayError::UnknownEndpoint("/metrics".into())),
                }
            }),
        )
        .fallback(|uri: axum::http::Uri| async move {
            GatewayError::UnknownEndpoint(uri.path().to_owned())
        })
        .method_not_allowed_fallback(|| async { GatewayError::MethodNotAllowed })
        .with_state(state)
}

impl Gateway {
    /// What every answer gets, errors and streams included: an
    /// `x-request-id` (the client's, when it sent a usable one; else a new
    /// one), also on the request's log lines; a count by a bounded set of
    /// endpoint names (paths nobody routes are `unknown`); and while
    /// draining, a closed connection, so keep-alive clients (and load
    /// balancers' pools) reconnect to another data plane instead of reusing
    /// one that is about to stop listening.
    async fn answer(&self, request: Request) -> Response {
        let started = Instant::now();
        let path = request.uri().path();
        let endpoint = proxy_endpoint(path);
        let label = endpoint.map_or_else(|| other_label(path), Endpoint::as_str);
        let request_id = match request
            .headers()
            .get(REQUEST_ID)
            .filter(|v| usable_request_id(v.as_bytes()))
        {
            Some(theirs) => RequestId {
                header: theirs.clone(),
                record: UsageRecordId::generate(),
            },
            None => RequestId::generate(),
        };
        let span = tracing::info_span!("answer", request_id = ?request_id.header);
        let answered_as = request_id.header.clone();
        let mut response = async {
            if let Some(refused) = headers_too_large(&request) {
                return refused;
            }
            match endpoint {
                Some(endpoint) if request.method() == Method::POST => {
                    proxy(&self.state, endpoint, request, request_id).await
                }
                Some(_) => {
                    let mut refused = GatewayError::MethodNotAllowed.into_response();
                    refused
                        .headers_mut()
                        .insert(header::ALLOW, HeaderValue::from_static("POST"));
                    refused
                }
                None => match self.others.clone().oneshot(request).await {
                    Ok(response) => response,
                    Err(infallible) => match infallible {},
                },
            }
        }
        .instrument(span)
        .await;
        response.headers_mut().insert(REQUEST_ID, answered_as);
        if self.state.draining.load(Ordering::Relaxed) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        crate::meters::answered(label, response.status(), started.elapsed());
        response
    }
}

// Header names as constants: a name given as a string is parsed anew at
// every use.
const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The request's id, as its answer will carry it, and its usage record's id:
/// the same when the client sent none, so the control plane stores and
/// indexes it once.
struct RequestId {
    header: HeaderValue,
    record: UsageRecordId,
}

impl RequestId {
    fn generate() -> Self {
        let record = UsageRecordId::generate();
        // A UUID is always a valid header value.
        let header =
            HeaderValue::try_from(record.as_str()).unwrap_or(HeaderValue::from_static("unknown"));
        Self { header, record }
    }
}

/// On an answer whose request set no max_tokens and was sent with this many.
const MAX_TOKENS_CAPPED: HeaderName = HeaderName::from_static("x-switchboard-max-tokens-capped");

/// A client's request id is passed on if it is 1 to 128 visible ASCII characters.
fn usable_request_id(value: &[u8]) -> bool {
    (1..=128).contains(&value.len()) && value.iter().all(|b| b.is_ascii_graphic())
}

fn proxy_endpoint(path: &str) -> Option<Endpoint> {
    Some(match path {
        "/v1/chat/completions" => Endpoint::ChatCompletions,
        "/v1/embeddings" => Endpoint::Embeddings,
        "/v1/completions" => Endpoint::Completions,
        "/v1/responses" => Endpoint::Responses,
        "/v1/messages" => Endpoint::Messages,
        "/v1/messages/count_tokens" => Endpoint::CountTokens,
        _ => return None,
    })
}

/// The metrics label of a path that is not a proxy endpoint.
fn other_label(path: &str) -> &'static str {
    match path {
        "/v1/models" => "models",
        _ if path.starts_with("/v1/models/") => "models",
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        _ => "unknown",
    }
}

/// Larger request heads are refused (431) before any work is done for them.
const MAX_HEADER_BYTES: usize = 64 * 1024;

fn headers_too_large(request: &Request) -> Option<Response> {
    let size: usize = request
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    (size > MAX_HEADER_BYTES)
        .then(|| GatewayError::HeadersTooLarge(MAX_HEADER_BYTES).into_response())
}

async fn ready(State(state): State<AppState>) -> Response {
    if state.draining.load(Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match state.live.load().as_ref() {
        Some(runtime) => (
            StatusCode::OK,
            format!("ready (config version {})", runtime.version),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no snapshot applied yet").into_response(),
    }
}

async fn proxy(
    state: &AppState,
    endpoint: Endpoint,
    request: Request,
    request_id: RequestId,
) -> Response {
    use tracing::field::Empty;
    let started = Instant::now();
    // On log lines and, when traces are exported, the trace's server span
    // (OpenTelemetry's GenAI conventions name the attributes).
    let span = tracing::info_span!(
        target: TRACE,
        "request",
        otel.name = endpoint.gen_ai_operation(),
        otel.kind = "server",
        otel.status_code = Empty,
        endpoint = endpoint.as_str(),
        gen_ai.operation.name = endpoint.gen_ai_operation(),
        gen_ai.request.model = Empty,
        gen_ai.system = Empty,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        provider = Empty,
        http.response.status_code = Empty,
        trace_id = Empty,
    );
    let trace = trace::continue_trace(&span, request.headers());
    let response = handle(state, endpoint, request, request_id, started, trace)
        .instrument(span.clone())
        .await
        .unwrap_or_else(|error| {
            metrics::counter!("switchboard_request_errors_total", "code" => error.type_and_code().1).increment(1);
            match endpoint {
                Endpoint::Messages | Endpoint::CountTokens => anthropic::error_response(error),
                _ => error.into_response(),
            }
        });
    let status = response.status();
    // i64: the OpenTelemetry layer reads unsigned fields as text.
    span.record("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.record("otel.status_code", "error");
    }
    // An access log line at debug, with the request span's fields (its trace id among them).
    span.in_scope(|| tracing::debug!(status = status.as_u16(), "answered"));
    response
}

/// What a request asks, in the forms its attempts may need. One per
/// request, behind an `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub enum Job {
    /// An OpenAI-format request: spliced for OpenAI-format providers, read
    /// into types (once, when first needed) for the others.
    OpenAi {
        endpoint: Endpoint,
        request: ProxyRequest,
        chat: OnceLock<ChatRequest>,
        embeddings: OnceLock<EmbeddingsRequest>,
    },
    /// An Anthropic Messages (or count_tokens) request: sent as it is to
    /// Anthropic, read into OpenAI's typed form (once, when first needed)
    /// for the others.
    Messages {
        endpoint: Endpoint,
        request: ProxyRequest,
        chat: OnceLock<ChatRequest>,
        /// The client's `anthropic-version` and `anthropic-beta`.
        client_headers: axum::http::HeaderMap,
    },
}

impl Job {
    fn request(&self) -> &ProxyRequest {
        match self {
            Job::OpenAi { request, .. } | Job::Messages { request, .. } => request,
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        match self {
            Job::OpenAi { endpoint, .. } | Job::Messages { endpoint, .. } => *endpoint,
        }
    }

    pub fn stream(&self) -> bool {
        self.request().stream
    }

    /// `gen_ai.operation.name` of the request.
    pub fn operation(&self) -> &'static str {
        self.endpoint().gen_ai_operation()
    }

    /// The model the client asked for.
    fn model(&self) -> &str {
        &self.request().model
    }

    /// How a translated answer is written back.
    pub fn egress(&self) -> Box<dyn Egress> {
        match self {
            Job::OpenAi { request, .. } => Box::new(OpenAiEgress::new(request.client_wants_usage)),
            Job::Messages { request, .. } => {
                Box::new(anthropic::AnthropicEgress::new(request.model.clone()))
            }
        }
    }

    /// The most tokens the answer may have, if the request says
    /// (embeddings and token counts have no answer text).
    fn max_tokens(&self) -> Option<u32> {
        match self.endpoint() {
            Endpoint::Embeddings | Endpoint::CountTokens => Some(0),
            _ => self.request().max_tokens,
        }
    }

    /// Sends the request with at most `cap` answer tokens: it set none, and
    /// a quota or budget has room for fewer than the usual reservation.
    fn cap_max_tokens(&mut self, cap: u32) {
        match self {
            Job::OpenAi { request, .. } | Job::Messages { request, .. } => {
                request.cap_max_tokens(cap)
            }
        }
    }

    /// An error as an event of this ingress's stream format.
    pub fn error_event(&self, error: &GatewayError) -> bytes::Bytes {
        let mut out = bytes::BytesMut::new();
        self.egress().error(error, &mut out);
        out.freeze()
    }
}

async fn handle(
    state: &AppState,
    endpoint: Endpoint,
    request: Request,
    request_id: RequestId,
    started: Instant,
    trace: trace::ClientTrace,
) -> Result<Response, GatewayError> {
    // auth: against the snapshot, never the database; before the body is read,
    // so unauthenticated callers cost nothing.
    let (parts, body) = request.into_parts();
    let caller = trace
        .step(|| tracing::debug_span!(target: TRACE, "auth"))
        .in_scope(|| {
            let runtime = state.live.load_full().ok_or(GatewayError::NotReady)?;
            let caller = auth::authenticate(runtime.directory(), &parts.headers)?;
            Ok((runtime, caller))
        });
    let (runtime, caller) = match caller {
        Ok(admitted) => admitted,
        Err(error) => {
            request::discard_body(body);
            return Err(refused(state, None, error));
        }
    };
    let admitted = admit(
        state,
        &runtime,
        &caller,
        endpoint,
        &parts.headers,
        body,
        &trace,
    )
    .await
    .map_err(|e| refused(state, Some(&caller), e))?;
    let Admitted {
        job,
        plan,
        permit,
        mut rate_headers,
    } = admitted;
    let moderation = Moderation::new(&plan, caller.team_guardrails.as_ref());
    // cache: consulted after limits (a hit is a request like any other).
    let cached = consult_cache(state, &runtime, &plan, &caller, &job, &parts.headers)
        .instrument(trace.step(|| tracing::debug_span!(target: TRACE, "cache")))
        .await;
    let prices = runtime.routes().prices.clone();
    drop(runtime);
    let stream = job.stream();
    let model = job.model().to_owned();
    let mut draft = UsageDraft {
        sink: state.usage.clone(),
        started,
        permit,
        prices,
        prompt: Some(job.clone()),
        meters: None,
        in_flight: Some(crate::meters::InFlight::start(stream)),
        span: tracing::Span::current(),
        traced: trace.sampled,
        finished: false,
        record: UsageRecord {
            id: request_id.record,
            key_id: caller.key_id,
            jwt: caller.jwt,
            user_id: caller.user_id,
            team_id: caller.team_id,
            model,
            provider: String::new(),
            upstream_model: String::new(),
            endpoint: endpoint.as_str().to_owned(),
            tokens: TokenUsage::default(),
            latency_ms: 0,
            status: 0,
            streamed: stream,
            created_at_ms: shared::time::now_ms(),
            variant: plan.variant.clone(),
            cost: shared::money::Micros::ZERO,
            currency: shared::money::Currency::default(),
            estimated: false,
            failed_attempts: Vec::new(),
            request_id: request_id.header.to_str().ok().map(str::to_owned),
            trace_id: trace.trace_id.clone(),
            ttft_ms: None,
            cache_hit: false,
            cost_saved: shared::money::Micros::ZERO,
        },
        cache: CacheUse::None,
        cut_short: moderation.cut_short(stream),
    };
    if let Some((verdict, route)) = cached {
        rate_headers
            .get_or_insert_with(Default::default)
            .insert(CACHE_HEADER, verdict.header());
        match verdict {
            Verdict::Hit(entry) => {
                let include_usage = match job.as_ref() {
                    Job::OpenAi { request, .. } => request.client_wants_usage,
                    Job::Messages { .. } => false,
                };
                let response =
                    cached::answer(&entry, stream, include_usage, draft, route.bill_hits)?;
                let mut response = match stream {
                    true => moderation.stream(state, job, None, response),
                    false => moderation.whole(state, &job, response).await?,
                };
                response
                    .headers_mut()
                    .extend(rate_headers.unwrap_or_default());
                return Ok(response);
            }
            Verdict::Miss(fill) => draft.cache = CacheUse::Fill(fill),
            Verdict::Bypass => {}
        }
    }

    // provider, with retries and fallbacks; usage is recorded on the way.
    let cut_short = draft.cut_short.clone();
    let work = retry::run(state.clone(), plan, job.clone(), draft, trace).in_current_span();
    let mut response = if stream {
        let response =
            keepalive::respond(work, state.routing.stream_keepalive, job.clone()).await?;
        moderation.stream(state, job, cut_short, response)
    } else {
        let response = work.await?;
        moderation.whole(state, &job, response).await?
    };
    if let Some(headers) = rate_headers {
        response.headers_mut().extend(headers);
    }
    Ok(response)
}

/// A route's guardrails on a request: its prompt checked (and personal data
/// masked in what is sent on), and its moderation service asked.
async fn guard(
    state: &AppState,
    guardrails: &Compiled,
    route: &str,
    job: &mut Job,
) -> Result<(), GatewayError> {
    let endpoint = job.endpoint();
    let request = match job {
        Job::OpenAi { request, .. } | Job::Messages { request, .. } => request,
    };
    if let Some(masked) = guardrails.inspect(request.body())? {
        *request = ProxyRequest::parse(endpoint, masked.into())?;
    }
    let stage = Stage::Request {
        route,
        request: request.body(),
    };
    guardrails.moderate(&state.http, stage).await
}

/// The cache's verdict on a request whose route caches answers of its endpoint.
async fn consult_cache(
    state: &AppState,
    runtime: &Runtime,
    plan: &router::Plan,
    caller: &auth::Caller,
    job: &Job,
    headers: &axum::http::HeaderMap,
) -> Option<(Verdict, shared::cache::RouteCache)> {
    let route = &plan.routes[0];
    let settings = route.cache.clone()?;
    let Job::OpenAi {
        endpoint, request, ..
    } = job
    else {
        return None;
    };
    if !crate::cache::serves(*endpoint) {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(request.body()).ok()?;
    let lookup = Lookup {
        key: KeyParts {
            route: &route.model,
            endpoint: *endpoint,
            scope: settings.scope,
            caller,
            purges: &runtime.routes().cache_purges,
            request: &body,
        },
        stream: request.stream,
        headers,
    };
    Some((state.cache.consult(&settings, lookup).await, settings))
}

/// Refusals before admission are counted per caller and kind, not recorded.
fn refused(state: &AppState, caller: Option<&auth::Caller>, error: GatewayError) -> GatewayError {
    let who = caller.map_or_else(Refused::default, |c| Refused {
        key_id: c.key_id.clone(),
        user_id: c.user_id.clone(),
        team_id: c.team_id.clone(),
    });
    state.usage.refused(who, error.type_and_code().1);
    error
}

/// A request let in: what it asks, where it may go, what it reserved.
struct Admitted {
    job: Arc<Job>,
    plan: router::Plan,
    permit: Option<limits::Permit>,
    rate_headers: Option<axum::http::HeaderMap>,
}

/// The steps between auth and the provider, any of which may refuse.
async fn admit(
    state: &AppState,
    runtime: &Runtime,
    caller: &auth::Caller,
    endpoint: Endpoint,
    headers: &axum::http::HeaderMap,
    body: Body,
    trace: &trace::ClientTrace,
) -> Result<Admitted, GatewayError> {
    // ingress: a bounded body, parsed just enough to route it.
    let body = request::read_body(body, state.max_body_bytes).await?;
    let mut job = match endpoint {
        Endpoint::Messages | Endpoint::CountTokens => Job::Messages {
            endpoint,
            request: ProxyRequest::parse(endpoint, body)?,
            chat: OnceLock::new(),
            client_headers: anthropic::client_headers(headers),
        },
        _ => Job::OpenAi {
            endpoint,
            request: ProxyRequest::parse(endpoint, body)?,
            chat: OnceLock::new(),
            embeddings: OnceLock::new(),
        },
    };
    let model = job.model();
    check_model_name(model)?;
    let request_span = tracing::Span::current();
    request_span.record("gen_ai.request.model", model);
    if trace.sampled {
        let name = format!("{} {model}", endpoint.gen_ai_operation());
        shared::telemetry::rename(&request_span, name);
    }

    // router: the route (after an A/B split) and its fallbacks: what a
    // request may cost depends on where it may go.
    let plan = trace
        .step(|| tracing::debug_span!(target: TRACE, "route"))
        .in_scope(|| router::plan(runtime.routes(), caller, model, caller.sticky_id()))?;

    // limits: rate limits, quotas and budgets, reserved at the worst case.
    let mut permit = limits::admit(
        &state.limiter,
        runtime.policy(),
        caller,
        model,
        &plan,
        job.max_tokens(),
        || job.prompt_tokens(),
    )
    .instrument(trace.step(|| tracing::debug_span!(target: TRACE, "limits")))
    .await?;

    // guardrails, the route's then the team's: on what the provider would be
    // sent, before the cache sees it.
    let route = &plan.routes[0];
    for guardrails in [&route.guardrails, &caller.team_guardrails]
        .into_iter()
        .flatten()
    {
        guard(state, guardrails, &route.model, &mut job)
            .instrument(trace.step(|| tracing::debug_span!(target: TRACE, "guardrails")))
            .await?;
    }
    let mut rate_headers = permit.as_mut().map(limits::Permit::take_headers);
    if let Some(cap) = permit.as_ref().and_then(|p| p.capped_max_tokens) {
        job.cap_max_tokens(cap);
        rate_headers
            .get_or_insert_with(Default::default)
            .insert(MAX_TOKENS_CAPPED, HeaderValue::from(cap));
    }
    Ok(Admitted {
        job: Arc::new(job),
        plan,
        permit,
        rate_headers,
    })
}

impl PromptTokens for Job {
    fn prompt_tokens(&self) -> i64 {
        serde_json::from_slice(self.request().body())
            .map_or(0, |r| limits::estimate::prompt_tokens(&r))
    }
}

/// Route names are at most 128 characters: a longer name names nothing, and
/// is not echoed back in an error or written to a log.
const MAX_MODEL_NAME_BYTES: usize = 512;

pub fn check_model_name(model: &str) -> Result<(), GatewayError> {
    if model.len() > MAX_MODEL_NAME_BYTES {
        return Err(GatewayError::bad_request(
            format!("'model' is longer than {MAX_MODEL_NAME_BYTES} bytes."),
            Some("model"),
        ));
    }
    Ok(())
}

/// The request parsers, for the fuzz targets.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_parse(endpoint: Endpoint, body: bytes::Bytes) -> Result<ProxyRequest, GatewayError> {
    ProxyRequest::parse(endpoint, body)
}

#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_messages(body: &[u8]) -> Result<crate::chat::ChatRequest, GatewayError> {
    anthropic::to_chat(anthropic::parse(body)?, "fuzz")
}

pub fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    const NO_PROXY_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");
    headers.insert(NO_PROXY_BUFFERING, HeaderValue::from_static("no"));
    response
}

pub fn json_response(body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use arc_swap::ArcSwapOption;
    use shared::keys::KeyHash;
    use shared::proto;
    use std::sync::Arc;
    use tower::ServiceExt;

    fn app(
        snapshot: Option<proto::Snapshot>,
    ) -> impl tower::Service<Request, Response = Response, Error = Infallible> {
        let live: Live = Arc::new(ArcSwapOption::empty());
        if let Some(snapshot) = snapshot {
            live.store(Some(Arc::new(Runtime::try_from(snapshot).expect("valid"))));
        }
        let (usage, _receiver) = UsageSink::channel(16, 4);
        service(AppState {
            live,
            http: providers::UpstreamClient::new(providers::UpstreamSettings {
                connect_timeout: Duration::from_secs(1),
                idle_timeout: Duration::from_secs(90),
                http2_connections: 1,
                allow_link_local: false,
                roots: Arc::new(rustls::RootCertStore::empty()),
            }),
            usage,
            limiter: Arc::new(Limiter::new(None)),
            cache: Arc::new(crate::cache::ResponseCache::in_memory(1 << 20)),
            metrics: Some(
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .build_recorder()
                    .handle(),
            ),
            max_body_bytes: 1024,
            upstream_timeout: Duration::from_secs(1),
            routing: Arc::new(crate::router::RoutingConfig::default()),
            draining: Default::default(),
        })
    }

    fn test_key() -> &'static str {
        static KEY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        KEY.get_or_init(|| shared::keys::ApiKeySecret::generate().expose().to_owned())
    }

    fn snapshot() -> proto::Snapshot {
        proto::Snapshot {
            version: 1,
            providers: vec![proto::SnapshotProvider {
                name: "p".into(),
                kind: "openai".into(),
                base_url: "http://127.0.0.1:9/v1".into(),
                ..Default::default()
            }],
            routes: vec![proto::Route {
                model: "m".into(),
                targets: vec![proto::RouteTarget {
                    provider: "p".into(),
                    model: "u".into(),
                    weight: 1,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            keys: vec![proto::SnapshotKey {
                id: "k".into(),
                key_hash: KeyHash::of(test_key()).as_bytes().to_vec(),
                models: vec!["other".into()],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    async fn call(
        app: impl tower::Service<Request, Response = Response, Error = Infallible>,
        key: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut request =
            Request::post("/v1/chat/completions").header("content-type", "application/json");
        if let Some(key) = key {
            request = request.header("authorization", format!("Bearer {key}"));
        }
        let response = app
            .oneshot(request.body(Body::from(body.to_owned())).expect("request"))
            .await
            .expect("infallible");
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        (
            status,
            serde_json::from_slice(&bytes).expect("json error body"),
        )
    }

    #[tokio::test]
    async fn answers_each_refusal_in_openai_format() {
        let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let (status, body) = call(app(None), Some(test_key()), chat).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("not_ready"))
        );
        let (status, body) = call(app(Some(snapshot())), None, chat).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_api_key"))
        );
        let (status, _) = call(app(Some(snapshot())), Some("sk-sb-wrong"), chat).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let unknown_key = shared::keys::ApiKeySecret::generate();
        let (status, _) = call(app(Some(snapshot())), Some(unknown_key.expose()), chat).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = call(app(Some(snapshot())), Some(test_key()), chat).await;
        assert_eq!(
            (status, body["error"]["param"].as_str()),
            (StatusCode::FORBIDDEN, Some("model"))
        );
        let unknown = r#"{"model":"nope","messages":[{"role":"user","content":"hi"}]}"#;
        let (status, _) = call(app(Some(snapshot())), Some(test_key()), unknown).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, body) = call(app(Some(snapshot())), Some(test_key()), &"x".repeat(2048)).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (StatusCode::PAYLOAD_TOO_LARGE, Some("request_too_large"))
        );
        let (status, _) = call(app(Some(snapshot())), Some(test_key()), "{oops").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn proxy_paths_take_post_only_and_other_paths_go_through_the_router() {
        let answer =
            |request: Request| async { app(None).oneshot(request).await.expect("infallible") };
        let get = |path: &str| Request::get(path).body(Body::empty()).expect("request");
        let response = answer(get("/v1/chat/completions")).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "POST");
        assert!(response.headers().contains_key(REQUEST_ID));

        let response = answer(get("/healthz")).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().contains_key(REQUEST_ID));

        let response = answer(get("/v1/nothing")).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let mine = Request::post("/healthz")
            .header(REQUEST_ID, "mine-1")
            .body(Body::empty())
            .expect("request");
        let response = answer(mine).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[REQUEST_ID], "mine-1");
    }
}
