//! The HTTP surface, and the one place the request path is assembled:
//! auth -> ingress (body) -> limits -> router -> provider -> usage.
//!
//! Two ways through the provider step: OpenAI-format requests to providers
//! that speak OpenAI's format are spliced and relayed byte for byte; every
//! other pairing is translated through `chat`'s typed OpenAI form.

mod anthropic;
mod models;
mod request;

use crate::chat::stream::{replay, Egress, OpenAiEgress, TranslatedStream};
use crate::chat::{ChatRequest, EmbeddingsRequest};
use crate::error::GatewayError;
use crate::error::ProviderError;
use crate::providers::{provider_error, Adapter, UpstreamCall, UpstreamResponse};
use crate::runtime::{KeyEntry, Live, Provider};
use crate::streaming::SseRelay;
use crate::usage::{Endpoint, TokenUsage, UsageDraft, UsageRecord, UsageSink};
use crate::{auth, providers, router};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusHandle;
use request::ProxyRequest;
use shared::ids::UsageRecordId;
use shared::provider_kind::ProviderKind;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

#[derive(Clone)]
pub struct AppState {
    pub live: Live,
    pub http: providers::UpstreamClient,
    pub usage: UsageSink,
    pub metrics: PrometheusHandle,
    pub max_body_bytes: usize,
    pub upstream_timeout: Duration,
}

pub fn router(state: AppState) -> Router {
    let endpoint = |endpoint: Endpoint| {
        post(move |State(state): State<AppState>, request: Request| proxy(state, endpoint, request))
    };
    Router::new()
        .route("/v1/chat/completions", endpoint(Endpoint::ChatCompletions))
        .route("/v1/embeddings", endpoint(Endpoint::Embeddings))
        .route("/v1/completions", endpoint(Endpoint::Completions))
        .route("/v1/responses", endpoint(Endpoint::Responses))
        .route("/v1/messages", endpoint(Endpoint::Messages))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*model}", get(models::get))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move { s.metrics.render() }),
        )
        .fallback(|uri: axum::http::Uri| async move {
            GatewayError::UnknownEndpoint(uri.path().to_owned())
        })
        .method_not_allowed_fallback(|| async { GatewayError::MethodNotAllowed })
        .with_state(state)
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.live.load().as_ref() {
        Some(runtime) => (
            StatusCode::OK,
            format!("ready (config version {})", runtime.version),
        )
            .into_response(),
        None => (StatusCode::SERVICE_UNAVAILABLE, "no snapshot applied yet").into_response(),
    }
}

/// The path an OpenAI-format provider serves an endpoint at, below its base URL.
fn openai_path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages => "/chat/completions",
        Endpoint::Embeddings => "/embeddings",
        Endpoint::Completions => "/completions",
        Endpoint::Responses => "/responses",
    }
}

async fn proxy(state: AppState, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        "request",
        endpoint = endpoint.as_str(),
        model = tracing::field::Empty,
        provider = tracing::field::Empty
    );
    let response = handle(state, endpoint, request, started)
        .instrument(span)
        .await
        .unwrap_or_else(|error| {
            metrics::counter!("switchboard_request_errors_total", "code" => error.type_and_code().1).increment(1);
            match endpoint {
                Endpoint::Messages => anthropic::error_response(error),
                _ => error.into_response(),
            }
        });
    metrics::counter!(
        "switchboard_requests_total",
        "endpoint" => endpoint.as_str(),
        "status" => response.status().as_str().to_owned()
    )
    .increment(1);
    metrics::histogram!("switchboard_request_duration_seconds", "endpoint" => endpoint.as_str())
        .record(started.elapsed().as_secs_f64());
    response
}

/// What the router chose for a request, and the usage record it will end in.
/// Every failure on the way is recorded (with no tokens) before it is returned,
/// so failed requests are counted too.
struct Routed {
    provider: Arc<Provider>,
    upstream_model: String,
    started: Instant,
    /// Taken when the record is finished (or handed to a stream that will).
    draft: Option<UsageDraft>,
}

impl Routed {
    fn check<T>(&mut self, result: Result<T, GatewayError>) -> Result<T, GatewayError> {
        result.inspect_err(|error| self.finish(error.status().as_u16(), TokenUsage::default()))
    }

    fn refuse<T>(mut self, error: GatewayError) -> Result<T, GatewayError> {
        self.check(Err(error))
    }

    fn finish(&mut self, status: u16, tokens: TokenUsage) {
        if let Some(draft) = self.draft.take() {
            draft.finish(status, tokens);
        }
    }

    fn take_draft(&mut self) -> Result<UsageDraft, GatewayError> {
        self.draft
            .take()
            .ok_or_else(|| GatewayError::UpstreamInvalid(self.provider.name.clone()))
    }

    fn provider_error<T>(&mut self, result: Result<T, ProviderError>) -> Result<T, GatewayError> {
        let result = result.map_err(|e| provider_error(&self.provider.name, e));
        self.check(result)
    }

    async fn send(
        &mut self,
        state: &AppState,
        call: UpstreamCall,
    ) -> Result<UpstreamResponse, GatewayError> {
        let sent = providers::send(&state.http, &self.provider, call, state.upstream_timeout).await;
        self.check(sent)
    }

    /// A translated call: what the adapter needs first (Baidu's token), the
    /// request it writes, and the send.
    async fn call(
        &mut self,
        state: &AppState,
        request: impl FnOnce(&dyn Adapter, &str) -> Result<UpstreamCall, GatewayError>,
    ) -> Result<UpstreamResponse, GatewayError> {
        let provider = self.provider.clone();
        if let Some(prepare) = provider
            .adapter
            .prepare(&state.http, state.upstream_timeout)
        {
            self.provider_error(prepare.await)?;
        }
        let call = self.check(request(provider.adapter.as_ref(), &self.upstream_model))?;
        self.send(state, call).await
    }

    /// A whole answer, within what is left of the request's time.
    async fn read_answer(
        &mut self,
        state: &AppState,
        upstream: UpstreamResponse,
    ) -> Result<Bytes, GatewayError> {
        let remaining = state
            .upstream_timeout
            .saturating_sub(self.started.elapsed());
        let read = match tokio::time::timeout(remaining, upstream.into_body().collect()).await {
            Ok(Ok(body)) => Ok(body.to_bytes()),
            Ok(Err(error)) => Err(providers::unreachable(&self.provider.name, &error)),
            Err(_) => Err(GatewayError::UpstreamTimeout(self.provider.name.clone())),
        };
        self.check(read)
    }
}

async fn handle(
    state: AppState,
    endpoint: Endpoint,
    request: Request,
    started: Instant,
) -> Result<Response, GatewayError> {
    // auth: against the snapshot, never the database; before the body is read,
    // so unauthenticated callers cost nothing.
    let (parts, body) = request.into_parts();
    let runtime = state.live.load_full().ok_or(GatewayError::NotReady)?;
    let key = auth::authenticate(&runtime, &parts.headers)?;

    // ingress: a bounded body, parsed just enough to route it.
    let body = request::read_body(body, state.max_body_bytes).await?;
    if endpoint == Endpoint::Messages {
        let chat = anthropic::to_chat(anthropic::parse(&body)?)?;
        let public_model = chat.model.clone();
        let routed = route(
            &state,
            &runtime,
            &key,
            endpoint,
            &chat.model,
            chat.stream,
            started,
        )?;
        drop(runtime);
        return translated_chat(&state, routed, chat, Format::Anthropic(public_model)).await;
    }
    let request = ProxyRequest::parse(endpoint, body)?;

    // limits: rate limits, quotas and budgets arrive with their own issue.

    // router
    let mut routed = route(
        &state,
        &runtime,
        &key,
        endpoint,
        &request.model,
        request.stream,
        started,
    )?;
    drop(runtime);

    // provider: OpenAI's format passes through; any other is translated.
    let kind = routed.provider.adapter.kind();
    if matches!(endpoint, Endpoint::Completions | Endpoint::Responses)
        && !matches!(
            kind,
            ProviderKind::Openai | ProviderKind::AzureOpenai | ProviderKind::OpenaiCompatible
        )
    {
        return routed.refuse(GatewayError::bad_request(
            format!("/v1/{} is served only by providers of kind openai, azure_openai and openai_compatible; this model's provider is {kind}.", openai_path(endpoint).trim_start_matches('/')),
            Some("model"),
        ));
    }
    if endpoint == Endpoint::Embeddings && !kind.offers_embeddings() {
        return routed.refuse(GatewayError::bad_request(
            format!("Provider kind {kind} offers no embeddings."),
            Some("model"),
        ));
    }
    let body = request.upstream_body(&routed.upstream_model);
    if let Some(call) =
        routed
            .provider
            .adapter
            .passthrough(openai_path(endpoint), &routed.upstream_model, body)
    {
        // The Responses API's usage event is the client's own: never hidden.
        let hide_usage =
            request.stream && !request.client_wants_usage && endpoint != Endpoint::Responses;
        return relay(&state, routed, call, request.stream, hide_usage).await;
    }
    match endpoint {
        Endpoint::Embeddings => {
            let embeddings = routed.check(EmbeddingsRequest::parse(request.body()))?;
            translated_embeddings(&state, routed, embeddings).await
        }
        _ => {
            let chat = routed.check(ChatRequest::parse(request.body()))?;
            let include_usage = chat.wants_usage();
            translated_chat(&state, routed, chat, Format::OpenAi { include_usage }).await
        }
    }
}

fn route(
    state: &AppState,
    runtime: &crate::runtime::Runtime,
    key: &KeyEntry,
    endpoint: Endpoint,
    model: &str,
    stream: bool,
    started: Instant,
) -> Result<Routed, GatewayError> {
    tracing::Span::current().record("model", model);
    let target = router::select(runtime, key, model)?;
    tracing::Span::current().record("provider", target.provider.name.as_str());
    let draft = UsageDraft {
        sink: state.usage.clone(),
        started,
        record: UsageRecord {
            id: UsageRecordId::generate(),
            key_id: key.id.clone(),
            user_id: key.user_id.clone(),
            team_id: key.team_id.clone(),
            model: model.to_owned(),
            provider: target.provider.name.clone(),
            upstream_model: target.upstream_model.clone(),
            endpoint: endpoint.as_str().to_owned(),
            tokens: TokenUsage::default(),
            latency_ms: 0,
            status: 0,
            streamed: stream,
            created_at_ms: shared::time::now_ms(),
        },
    };
    Ok(Routed {
        provider: target.provider.clone(),
        upstream_model: target.upstream_model.clone(),
        started,
        draft: Some(draft),
    })
}

fn sse_response(body: Body) -> Response {
    let mut response = Response::new(body);
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn json_response(body: impl Into<Body>) -> Response {
    let mut response = Response::new(body.into());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// The passthrough: the provider's bytes go to the client as they came.
async fn relay(
    state: &AppState,
    mut routed: Routed,
    call: UpstreamCall,
    stream: bool,
    hide_usage: bool,
) -> Result<Response, GatewayError> {
    let upstream = routed.send(state, call).await?;
    // usage: from the stream's usage chunk, or the body's usage object.
    if stream {
        let relay = SseRelay::new(
            http_body_util::BodyDataStream::new(upstream.into_body()),
            hide_usage,
            routed.provider.name.clone(),
            routed.take_draft()?,
        );
        return Ok(sse_response(Body::from_stream(relay)));
    }
    let body = routed.read_answer(state, upstream).await?;
    routed.finish(200, request::usage_of(&body));
    Ok(json_response(body))
}

/// Which format a translated answer goes back in.
enum Format {
    OpenAi {
        include_usage: bool,
    },
    /// Anthropic's, naming the model the client asked for.
    Anthropic(String),
}

impl Format {
    fn egress(&self) -> Box<dyn Egress> {
        match self {
            Format::OpenAi { include_usage } => Box::new(OpenAiEgress::new(*include_usage)),
            Format::Anthropic(model) => Box::new(anthropic::AnthropicEgress::new(model.clone())),
        }
    }
}

/// A chat request through an adapter that translates it.
async fn translated_chat(
    state: &AppState,
    mut routed: Routed,
    chat: ChatRequest,
    format: Format,
) -> Result<Response, GatewayError> {
    let upstream = routed
        .call(state, |adapter, model| adapter.chat_request(model, &chat))
        .await?;
    let provider = routed.provider.clone();
    let model = routed.upstream_model.clone();
    let is_json = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if chat.stream && !is_json {
        let mut stream = TranslatedStream::new(
            http_body_util::BodyDataStream::new(upstream.into_body()),
            provider.adapter.stream_decoder(&model),
            format.egress(),
            provider.name.clone(),
            routed.take_draft()?,
        );
        // Errors some providers put at the head of a 200 stream become HTTP
        // errors; the wait for that first content is bounded like the rest.
        let remaining = state
            .upstream_timeout
            .saturating_sub(routed.started.elapsed());
        let Ok(first) = tokio::time::timeout(remaining, stream.next()).await else {
            let error = GatewayError::UpstreamTimeout(provider.name.clone());
            stream.abandon(&error);
            return Err(error);
        };
        if let Some(error) = stream.take_early_failure() {
            return Err(error);
        }
        return Ok(sse_response(Body::from_stream(
            futures_util::stream::iter(first).chain(stream),
        )));
    }
    // A whole answer; also how Baidu and Tencent answer a stream request that failed.
    let body = routed.read_answer(state, upstream).await?;
    let completion = routed.provider_error(provider.adapter.chat_response(&model, &body))?;
    routed.finish(200, completion.usage.unwrap_or_default());
    if chat.stream {
        let mut egress = format.egress();
        let mut out = BytesMut::new();
        for chunk in replay(&completion) {
            egress.chunk(chunk, &mut out);
        }
        egress.end(completion.usage, &mut out);
        return Ok(sse_response(Body::from(out.freeze())));
    }
    let body = match format {
        Format::OpenAi { .. } => serde_json::to_vec(&completion),
        Format::Anthropic(model) => serde_json::to_vec(&anthropic::render(completion, &model)),
    }
    .map_err(|_| GatewayError::UpstreamInvalid(provider.name.clone()))?;
    Ok(json_response(body))
}

async fn translated_embeddings(
    state: &AppState,
    mut routed: Routed,
    request: EmbeddingsRequest,
) -> Result<Response, GatewayError> {
    let upstream = routed
        .call(state, |adapter, model| {
            adapter.embeddings_request(model, &request)
        })
        .await?;
    let body = routed.read_answer(state, upstream).await?;
    let provider = routed.provider.clone();
    let (vectors, usage) = routed.provider_error(provider.adapter.embeddings_response(&body))?;
    routed.finish(200, usage);
    Ok(json_response(request.answer(vectors, usage).to_string()))
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

    fn app(snapshot: Option<proto::Snapshot>) -> Router {
        let live: Live = Arc::new(ArcSwapOption::empty());
        if let Some(snapshot) = snapshot {
            live.store(Some(Arc::new(Runtime::try_from(snapshot).expect("valid"))));
        }
        let (usage, _receiver) = UsageSink::channel(16, 4);
        router(AppState {
            live,
            http: providers::UpstreamClient::new(Duration::from_secs(1), 1),
            usage,
            metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle(),
            max_body_bytes: 1024,
            upstream_timeout: Duration::from_secs(1),
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
            routes: vec![proto::SnapshotRoute {
                model: "m".into(),
                targets: vec![proto::SnapshotRouteTarget {
                    provider: "p".into(),
                    model: "u".into(),
                    weight: 1,
                }],
            }],
            keys: vec![proto::SnapshotKey {
                id: "k".into(),
                key_hash: KeyHash::of(test_key()).as_bytes().to_vec(),
                models: vec!["other".into()],
                ..Default::default()
            }],
            created_at_ms: 0,
        }
    }

    async fn call(app: Router, key: Option<&str>, body: &str) -> (StatusCode, serde_json::Value) {
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
}
