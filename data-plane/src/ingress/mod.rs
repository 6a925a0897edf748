//! The HTTP surface, and the one place the request path is assembled:
//! auth -> ingress (body) -> limits -> router -> provider -> usage.

mod models;
mod request;

use crate::error::GatewayError;
use crate::runtime::Live;
use crate::streaming::SseRelay;
use crate::usage::{Endpoint, TokenUsage, UsageDraft, UsageRecord, UsageSink};
use crate::{auth, providers, router};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt;
use metrics_exporter_prometheus::PrometheusHandle;
use request::ProxyRequest;
use shared::ids::UsageRecordId;
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
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
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

async fn chat_completions(State(state): State<AppState>, request: Request) -> Response {
    proxy(state, Endpoint::ChatCompletions, request).await
}

async fn embeddings(State(state): State<AppState>, request: Request) -> Response {
    proxy(state, Endpoint::Embeddings, request).await
}

async fn proxy(state: AppState, endpoint: Endpoint, request: Request) -> Response {
    let started = Instant::now();
    let span = tracing::info_span!(
        "request",
        endpoint = endpoint.as_str(),
        model = tracing::field::Empty
    );
    let response = handle(state, endpoint, request, started)
        .instrument(span)
        .await
        .unwrap_or_else(|error| {
            metrics::counter!("switchboard_request_errors_total", "code" => error.type_and_code().1).increment(1);
            error.into_response()
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
    let mut request = ProxyRequest::parse(endpoint, body)?;
    tracing::Span::current().record("model", request.model.as_str());

    // limits: rate limits, quotas and budgets arrive with their own issue.

    // router
    let target = router::select(&runtime, &key, &request.model)?;
    let provider = target.provider.clone();
    let upstream_body = request.upstream_body(&target.upstream_model);
    let draft = UsageDraft {
        sink: state.usage.clone(),
        started,
        record: UsageRecord {
            id: UsageRecordId::generate(),
            key_id: key.id.clone(),
            user_id: key.user_id.clone(),
            team_id: key.team_id.clone(),
            model: std::mem::take(&mut request.model),
            provider: provider.name.clone(),
            upstream_model: target.upstream_model.clone(),
            endpoint: endpoint.as_str().to_owned(),
            tokens: TokenUsage::default(),
            latency_ms: 0,
            status: 0,
            streamed: request.stream,
            created_at_ms: shared::time::now_ms(),
        },
    };
    drop(runtime);

    // provider
    let upstream = match providers::send(
        &state.http,
        &provider,
        endpoint,
        upstream_body,
        state.upstream_timeout,
    )
    .await
    {
        Ok(upstream) => upstream,
        Err(error) => {
            // usage: failed requests are recorded too, with no tokens.
            draft.finish(error.status().as_u16(), TokenUsage::default());
            return Err(error);
        }
    };

    // usage: from the stream's usage chunk, or the body's usage object.
    if request.stream {
        let relay = SseRelay::new(
            http_body_util::BodyDataStream::new(upstream.into_body()),
            !request.client_wants_usage,
            provider.name.clone(),
            draft,
        );
        let mut response = Response::new(Body::from_stream(relay));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        return Ok(response);
    }
    let remaining = state.upstream_timeout.saturating_sub(started.elapsed());
    let body = match tokio::time::timeout(remaining, upstream.into_body().collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) => {
            let error = providers::unreachable(&provider.name, &error);
            draft.finish(error.status().as_u16(), TokenUsage::default());
            return Err(error);
        }
        Err(_) => {
            let error = GatewayError::UpstreamTimeout(provider.name.clone());
            draft.finish(error.status().as_u16(), TokenUsage::default());
            return Err(error);
        }
    };
    draft.finish(200, request::usage_of(&body));
    let mut response = Response::new(Body::from(body));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
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
