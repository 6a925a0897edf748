//! The REST admin API under `/api/v1`, plus health and metrics.

mod handlers;
pub mod openapi;

use crate::api::auth::BearerToken;
use crate::audit::AuditContext;
use crate::error::Error;
use crate::service::Admin;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::HeaderValue;
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use tracing::Instrument;

#[derive(Clone)]
pub struct RestState {
    pub admin: Admin,
    pub admin_token: BearerToken,
    /// `None` when `/metrics` has its own listener.
    pub metrics: Option<PrometheusHandle>,
    /// Set on SIGTERM: `/readyz` answers 503 while the replica still serves.
    pub draining: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Console sign-in through the identity provider, when configured.
    pub oidc: Option<std::sync::Arc<crate::api::oidc::Oidc>>,
}

pub fn router(state: RestState) -> Router {
    let api = handlers::routes()
        .route_layer(middleware::from_fn_with_state(state.clone(), require_admin))
        .fallback(|| async { Error::NotFound("API route".into()) });
    Router::new()
        .route("/", get(root))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route(
            "/metrics",
            get(|State(s): State<RestState>| async move {
                match s.metrics {
                    Some(metrics) => Ok(metrics.render()),
                    None => Err(Error::NotFound("route".into())),
                }
            }),
        )
        .nest(openapi::PREFIX, api)
        .merge(openapi::routes())
        .merge(crate::api::console::routes())
        .merge(crate::api::oidc::routes(state.oidc.clone()))
        .with_state(state)
}

/// What a newcomer finds at the control plane's address: where everything is.
async fn root() -> Json<serde_json::Value> {
    Json(json!({
        "service": "Switchboard control plane",
        "version": shared::SOFTWARE_VERSION,
        "admin_api": "/api/v1 (Authorization: Bearer <admin token>)",
        "openapi": "/api/v1/openapi.json",
        "api_reference": "/api/docs",
        "console": "/ui/",
        "cluster": "/api/v1/cluster",
        "health": "/healthz",
        "ready": "/readyz",
        "metrics": "/metrics",
        "grpc": "switchboard.v1.AdminService on the gRPC port (server reflection on)",
    }))
}

async fn ready(State(state): State<RestState>) -> Response {
    if state.draining.load(std::sync::atomic::Ordering::Relaxed) {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining").into_response();
    }
    match state.admin.store().ping().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable").into_response(),
    }
}

/// Every admin call: a span (in the caller's trace, when traces are
/// exported) named by its route, never by the ids in its path.
async fn require_admin(State(state): State<RestState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or("", |p| p.as_str());
    let span =
        shared::telemetry::admin_span(&format!("{} {route}", request.method()), request.headers());
    let response = authorized(state, request, next)
        .instrument(span.clone())
        .await;
    // i64: the OpenTelemetry layer reads unsigned fields as text.
    span.record("status", i64::from(response.status().as_u16()));
    if response.status().is_server_error() {
        span.record("otel.status_code", "error");
    }
    response
}

async fn authorized(state: RestState, request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = match state.admin.authenticate(&state.admin_token, header).await {
        Ok(principal) => principal,
        Err(error) => return error.into_response(),
    };
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok());
    let context = AuditContext::new(principal, request_id);
    let id = HeaderValue::try_from(context.request_id.as_str()).ok();
    let mut response = crate::audit::scope(context, next.run(request)).await;
    if let Some(id) = id {
        response.headers_mut().insert("x-request-id", id);
    }
    response
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let (status, _, code) = self.kind().codes();
        (
            status,
            Json(json!({"error": {"message": self.to_string(), "code": code}})),
        )
            .into_response()
    }
}

/// A JSON body whose rejections are answered in the API's error format.
pub struct Body<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        match Json::<T>::from_request(request, state).await {
            Ok(Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(json_error(rejection)),
        }
    }
}

fn json_error(rejection: JsonRejection) -> Error {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            Error::invalid("expected a JSON body with content-type: application/json")
        }
        other => Error::invalid(other.body_text()),
    }
}

/// Query parameters whose rejections are answered in the API's error format.
pub struct Params<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Error;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Error> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Params(q.0))
            .map_err(|r: QueryRejection| Error::invalid(r.body_text()))
    }
}
