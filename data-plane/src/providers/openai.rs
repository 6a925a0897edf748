//! OpenAI's chat completions and embeddings wire format, spoken by OpenAI and
//! by every OpenAI-compatible server. Requests pass through unchanged but for
//! the model name; errors in OpenAI's format are passed on as they came.

use super::client::{UpstreamClient, UpstreamResponse};
use crate::error::GatewayError;
use crate::runtime::Provider;
use crate::usage::Endpoint;
use axum::http::{header, HeaderValue, Method};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use std::time::Duration;

/// Error bodies are small; a larger one is not an OpenAI error object.
const MAX_ERROR_BODY: usize = 64 * 1024;

fn path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions => "/chat/completions",
        Endpoint::Embeddings => "/embeddings",
    }
}

pub async fn send(
    http: &UpstreamClient,
    provider: &Provider,
    endpoint: Endpoint,
    body: Bytes,
    first_byte_timeout: Duration,
) -> Result<UpstreamResponse, GatewayError> {
    let mut request = hyper::Request::builder()
        .method(Method::POST)
        .uri(format!("{}{}", provider.base_url, path(endpoint)))
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    if let Some(authorization) = &provider.authorization {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let request = request
        .body(Full::new(body))
        .map_err(|_| GatewayError::UpstreamInvalid(provider.name.clone()))?;
    let response = match tokio::time::timeout(first_byte_timeout, http.send(request)).await {
        Err(_) => return Err(GatewayError::UpstreamTimeout(provider.name.clone())),
        Ok(Err(error)) => return Err(super::unreachable(&provider.name, &error)),
        Ok(Ok(response)) => response,
    };
    if response.status().is_success() {
        return Ok(response);
    }
    Err(error_response(provider, response).await)
}

/// An upstream error in OpenAI's shape is passed on with its status; anything
/// else becomes a gateway error that does not echo the upstream's body.
async fn error_response(provider: &Provider, response: UpstreamResponse) -> GatewayError {
    let status = response.status();
    let retry_after = response.headers().get(header::RETRY_AFTER).cloned();
    let body = match Limited::new(response.into_body(), MAX_ERROR_BODY)
        .collect()
        .await
    {
        Ok(body) => body.to_bytes(),
        Err(_) => return GatewayError::UpstreamInvalid(provider.name.clone()),
    };
    let is_openai_error = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v.get("error").is_some_and(serde_json::Value::is_object));
    tracing::info!(provider = %provider.name, status = status.as_u16(), "upstream answered with an error");
    if is_openai_error {
        GatewayError::Upstream {
            status,
            body,
            retry_after,
        }
    } else {
        GatewayError::UpstreamInvalid(provider.name.clone())
    }
}
