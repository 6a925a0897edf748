//! The data plane's one error type, rendered once at the edge as OpenAI-style JSON.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Missing API key: send it as 'Authorization: Bearer <key>'.")]
    MissingKey,
    #[error("Invalid API key.")]
    InvalidKey,
    #[error("This API key has been revoked or has expired.")]
    ExpiredKey,
    #[error("This API key may not use model '{0}'.")]
    ModelNotAllowed(String),
    #[error("The model '{0}' does not exist.")]
    ModelNotFound(String),
    #[error("{message}")]
    BadRequest {
        message: String,
        param: Option<&'static str>,
    },
    #[error("Unknown endpoint {0}; see /v1/models for what this gateway serves.")]
    UnknownEndpoint(String),
    #[error("Method not allowed on this endpoint.")]
    MethodNotAllowed,
    #[error("Request body is larger than the limit of {0} bytes.")]
    BodyTooLarge(usize),
    #[error("The gateway has no configuration yet; try again shortly.")]
    NotReady,
    #[error("The upstream provider '{0}' could not be reached.")]
    UpstreamUnreachable(String),
    #[error("The upstream provider '{0}' did not answer in time.")]
    UpstreamTimeout(String),
    #[error("The upstream provider '{0}' sent an invalid response.")]
    UpstreamInvalid(String),
    /// An error answer from the provider, already in OpenAI's format: passed on as is.
    #[error("upstream answered {status}")]
    Upstream {
        status: StatusCode,
        body: Bytes,
        retry_after: Option<HeaderValue>,
    },
}

impl GatewayError {
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        GatewayError::BadRequest {
            message: message.into(),
            param,
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey | GatewayError::ExpiredKey => {
                StatusCode::UNAUTHORIZED
            }
            GatewayError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound(_) | GatewayError::UnknownEndpoint(_) => {
                StatusCode::NOT_FOUND
            }
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamInvalid(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Upstream { status, .. } => *status,
        }
    }

    /// OpenAI's `type` and `code`; `code` doubles as a low-cardinality metric label.
    pub fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey => {
                ("invalid_request_error", "invalid_api_key")
            }
            GatewayError::ExpiredKey => ("invalid_request_error", "api_key_expired"),
            GatewayError::ModelNotAllowed(_) => ("permission_error", "model_not_allowed"),
            GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::BadRequest { .. } => ("invalid_request_error", "invalid_request"),
            GatewayError::UnknownEndpoint(_) => ("invalid_request_error", "unknown_url"),
            GatewayError::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            GatewayError::BodyTooLarge(_) => ("invalid_request_error", "request_too_large"),
            GatewayError::NotReady => ("server_error", "not_ready"),
            GatewayError::UpstreamUnreachable(_) => ("upstream_error", "upstream_unreachable"),
            GatewayError::UpstreamTimeout(_) => ("upstream_error", "upstream_timeout"),
            GatewayError::UpstreamInvalid(_) => ("upstream_error", "upstream_invalid_response"),
            GatewayError::Upstream { .. } => ("upstream_error", "upstream_error"),
        }
    }

    /// The OpenAI error object, for bodies and for error events in streams.
    pub fn to_json(&self) -> serde_json::Value {
        let (kind, code) = self.type_and_code();
        let param = match self {
            GatewayError::BadRequest { param, .. } => *param,
            GatewayError::ModelNotAllowed(_) | GatewayError::ModelNotFound(_) => Some("model"),
            _ => None,
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        let status = self.status();
        let mut response = match self {
            GatewayError::Upstream {
                body, retry_after, ..
            } => {
                let mut response = (status, body).into_response();
                if let Some(value) = retry_after {
                    response.headers_mut().insert(header::RETRY_AFTER, value);
                }
                response
            }
            other => (status, other.to_json().to_string()).into_response(),
        };
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}
