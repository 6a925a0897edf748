//! OpenAI's chat completions and embeddings wire format, spoken by OpenAI and
//! by every OpenAI-compatible server. Requests pass through unchanged but for
//! the model name; errors in OpenAI's format are passed on as they came.

use crate::error::GatewayError;
use crate::runtime::Provider;
use crate::usage::Endpoint;
use axum::http::{header, HeaderValue, StatusCode};
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
    http: &reqwest::Client,
    provider: &Provider,
    endpoint: Endpoint,
    body: Vec<u8>,
    first_byte_timeout: Duration,
) -> Result<reqwest::Response, GatewayError> {
    let url = format!("{}{}", provider.base_url, path(endpoint));
    let mut request = http
        .post(url)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(body);
    if let Some(authorization) = &provider.authorization {
        request = request.header(header::AUTHORIZATION, authorization.clone());
    }
    let response = match tokio::time::timeout(first_byte_timeout, request.send()).await {
        Err(_) => return Err(GatewayError::UpstreamTimeout(provider.name.clone())),
        Ok(Err(error)) => return Err(transport_error(provider, &error)),
        Ok(Ok(response)) => response,
    };
    if response.status().is_success() {
        return Ok(response);
    }
    Err(error_response(provider, response).await)
}

pub fn transport_error(provider: &Provider, error: &reqwest::Error) -> GatewayError {
    // The URL is the operator's own config and carries no credential: fine for the log.
    tracing::warn!(provider = %provider.name, error = %error, "upstream request failed");
    if error.is_timeout() {
        GatewayError::UpstreamTimeout(provider.name.clone())
    } else {
        GatewayError::UpstreamUnreachable(provider.name.clone())
    }
}

/// An upstream error in OpenAI's shape is passed on with its status; anything
/// else becomes a gateway error that does not echo the upstream's body.
async fn error_response(provider: &Provider, response: reqwest::Response) -> GatewayError {
    let status =
        StatusCode::from_u16(response.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let retry_after = response
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let body = match read_limited(response, MAX_ERROR_BODY).await {
        Some(body) => body,
        None => return GatewayError::UpstreamInvalid(provider.name.clone()),
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

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Option<bytes::Bytes> {
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.ok()? {
        if body.len() + chunk.len() > limit {
            return None;
        }
        body.extend_from_slice(&chunk);
    }
    Some(body.freeze())
}
