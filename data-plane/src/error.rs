//! The data plane's one error type, rendered once at the edge as OpenAI-style JSON.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("Missing API key: send it as 'Authorization: Bearer <key>'.")]
    MissingKey,
    #[error("Invalid API key.")]
    InvalidKey,
    #[error("This API key has been revoked or has expired.")]
    ExpiredKey,
    #[error("Invalid token: {0}.")]
    InvalidToken(crate::auth::TokenRejection),
    #[error("This API key or token may not use model '{0}'.")]
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
    #[error("Request headers are larger than the limit of {0} bytes.")]
    HeadersTooLarge(usize),
    #[error("The gateway has no configuration yet; try again shortly.")]
    NotReady,
    #[error("The upstream provider '{0}' could not be reached.")]
    UpstreamUnreachable(String),
    #[error("The upstream provider '{0}' did not answer in time.")]
    UpstreamTimeout(String),
    #[error("The upstream provider '{0}' sent an invalid response.")]
    UpstreamInvalid(String),
    #[error("No target of the route '{route}' is available: each is failing or at capacity; try again shortly.")]
    NoHealthyTarget {
        route: String,
        /// Seconds until the first target is back, as `retry-after`.
        retry_after: Option<HeaderValue>,
    },
    #[error("The parameter '{param}' is not supported by provider kind {provider_kind}.")]
    Unsupported {
        param: String,
        provider_kind: String,
    },
    /// A rate limit (`quota: false`) or a quota or budget (`quota: true`).
    #[error("{message}")]
    LimitReached {
        message: String,
        quota: bool,
        /// A token limit rather than a request limit.
        tokens: bool,
        /// `retry-after` and `x-ratelimit-*`.
        headers: Box<axum::http::HeaderMap>,
    },
    #[error("Limits cannot be checked right now (their shared store is unreachable); try again shortly.")]
    LimitsUnavailable,
    #[error("No price is set for {0}, and a budget counts what this caller spends; an administrator must set one.")]
    PriceMissing(String),
    /// An error answer from the provider, classified.
    #[error("{}", .error.client_message(.provider))]
    Provider {
        provider: String,
        error: ProviderError,
    },
    /// The last error of a request that was tried more than once (retries,
    /// fallbacks), with every attempt, so an operator sees why each failed.
    #[error("{last}")]
    Attempted {
        last: Box<GatewayError>,
        attempts: Vec<FailedAttempt>,
    },
}

/// One failed try of a request on one target.
#[derive(Clone, Debug, serde::Serialize)]
pub struct FailedAttempt {
    pub provider: String,
    pub model: String,
    pub status: u16,
    /// The error's `code`.
    pub reason: &'static str,
    pub duration_ms: u64,
}

/// What kind of failure a provider reported, whatever its wire format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderErrorKind {
    BadRequest,
    ContextLengthExceeded,
    ContentFilter,
    /// The provider refused the gateway's credential: the operator's problem,
    /// not the client's, so not a 401 to the client.
    Authentication,
    NotFound,
    RateLimited,
    /// The provider account's quota or balance is spent.
    QuotaExhausted,
    Overloaded,
    Timeout,
    Server,
}

impl ProviderErrorKind {
    /// Whether trying again (later, or on another target) may succeed.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            ProviderErrorKind::RateLimited
                | ProviderErrorKind::Overloaded
                | ProviderErrorKind::Timeout
                | ProviderErrorKind::Server
        )
    }

    /// The usual kind for an HTTP status, when a body says nothing finer.
    pub fn from_status(status: StatusCode) -> Self {
        match status.as_u16() {
            401 | 403 => ProviderErrorKind::Authentication,
            402 => ProviderErrorKind::QuotaExhausted,
            404 => ProviderErrorKind::NotFound,
            408 | 504 => ProviderErrorKind::Timeout,
            413 => ProviderErrorKind::ContextLengthExceeded,
            429 => ProviderErrorKind::RateLimited,
            503 | 529 => ProviderErrorKind::Overloaded,
            400..=499 => ProviderErrorKind::BadRequest,
            _ => ProviderErrorKind::Server,
        }
    }

    fn status(self) -> StatusCode {
        match self {
            ProviderErrorKind::BadRequest
            | ProviderErrorKind::ContextLengthExceeded
            | ProviderErrorKind::ContentFilter => StatusCode::BAD_REQUEST,
            ProviderErrorKind::NotFound => StatusCode::NOT_FOUND,
            ProviderErrorKind::RateLimited | ProviderErrorKind::QuotaExhausted => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ProviderErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ProviderErrorKind::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ProviderErrorKind::Authentication | ProviderErrorKind::Server => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    fn type_and_code(self) -> (&'static str, &'static str) {
        match self {
            ProviderErrorKind::BadRequest => ("invalid_request_error", "invalid_request"),
            ProviderErrorKind::ContextLengthExceeded => {
                ("invalid_request_error", "context_length_exceeded")
            }
            ProviderErrorKind::ContentFilter => ("invalid_request_error", "content_filter"),
            ProviderErrorKind::NotFound => ("invalid_request_error", "model_not_found"),
            ProviderErrorKind::Authentication => ("upstream_error", "upstream_auth_failed"),
            ProviderErrorKind::RateLimited => ("rate_limit_error", "rate_limit_exceeded"),
            ProviderErrorKind::QuotaExhausted => ("insufficient_quota", "insufficient_quota"),
            ProviderErrorKind::Overloaded => ("server_error", "overloaded"),
            ProviderErrorKind::Timeout => ("upstream_error", "upstream_timeout"),
            ProviderErrorKind::Server => ("server_error", "upstream_error"),
        }
    }
}

/// A provider's error answer, read from whichever format it came in.
#[derive(Clone, Debug)]
pub struct ProviderError {
    pub kind: ProviderErrorKind,
    /// The provider's own words; never shown for authentication failures,
    /// whose messages may quote part of the credential.
    pub message: String,
    pub param: Option<String>,
    pub retry_after: Option<HeaderValue>,
}

impl ProviderError {
    pub fn new(kind: ProviderErrorKind, message: impl Into<String>) -> Self {
        ProviderError {
            kind,
            message: message.into(),
            param: None,
            retry_after: None,
        }
    }

    /// `retry-after` passed on from the provider's answer.
    pub fn with_retry_after(mut self, headers: &axum::http::HeaderMap) -> Self {
        self.retry_after = headers.get(header::RETRY_AFTER).cloned();
        self
    }

    pub fn retryable(&self) -> bool {
        self.kind.retryable()
    }

    fn client_message(&self, provider: &str) -> String {
        match self.kind {
            ProviderErrorKind::Authentication => {
                format!("The upstream provider '{provider}' refused the gateway's credentials.")
            }
            _ if self.message.is_empty() => {
                format!("The upstream provider '{provider}' answered with an error.")
            }
            _ => self.message.clone(),
        }
    }
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
            GatewayError::MissingKey
            | GatewayError::InvalidKey
            | GatewayError::ExpiredKey
            | GatewayError::InvalidToken(_) => StatusCode::UNAUTHORIZED,
            GatewayError::ModelNotAllowed(_) => StatusCode::FORBIDDEN,
            GatewayError::ModelNotFound(_) | GatewayError::UnknownEndpoint(_) => {
                StatusCode::NOT_FOUND
            }
            GatewayError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            GatewayError::BodyTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::NotReady | GatewayError::NoHealthyTarget { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            GatewayError::UpstreamUnreachable(_) | GatewayError::UpstreamInvalid(_) => {
                StatusCode::BAD_GATEWAY
            }
            GatewayError::UpstreamTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unsupported { .. } => StatusCode::BAD_REQUEST,
            GatewayError::LimitReached { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::LimitsUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::PriceMissing(_) => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::Provider { error, .. } => error.kind.status(),
            GatewayError::Attempted { last, .. } => last.status(),
        }
    }

    /// OpenAI's `type` and `code`; `code` doubles as a low-cardinality metric label.
    pub fn type_and_code(&self) -> (&'static str, &'static str) {
        match self {
            GatewayError::MissingKey | GatewayError::InvalidKey => {
                ("invalid_request_error", "invalid_api_key")
            }
            GatewayError::ExpiredKey => ("invalid_request_error", "api_key_expired"),
            GatewayError::InvalidToken(_) => ("invalid_request_error", "invalid_token"),
            GatewayError::ModelNotAllowed(_) => ("permission_error", "model_not_allowed"),
            GatewayError::ModelNotFound(_) => ("invalid_request_error", "model_not_found"),
            GatewayError::BadRequest { .. } => ("invalid_request_error", "invalid_request"),
            GatewayError::UnknownEndpoint(_) => ("invalid_request_error", "unknown_url"),
            GatewayError::MethodNotAllowed => ("invalid_request_error", "method_not_allowed"),
            GatewayError::BodyTooLarge(_) => ("invalid_request_error", "request_too_large"),
            GatewayError::HeadersTooLarge(_) => {
                ("invalid_request_error", "request_headers_too_large")
            }
            GatewayError::NotReady => ("server_error", "not_ready"),
            GatewayError::NoHealthyTarget { .. } => ("server_error", "no_healthy_target"),
            GatewayError::UpstreamUnreachable(_) => ("upstream_error", "upstream_unreachable"),
            GatewayError::UpstreamTimeout(_) => ("upstream_error", "upstream_timeout"),
            GatewayError::UpstreamInvalid(_) => ("upstream_error", "upstream_invalid_response"),
            GatewayError::Unsupported { .. } => ("invalid_request_error", "unsupported_parameter"),
            // As OpenAI answers: the type names what ran out.
            GatewayError::LimitReached { quota: true, .. } => {
                ("insufficient_quota", "insufficient_quota")
            }
            GatewayError::LimitReached { tokens: true, .. } => ("tokens", "rate_limit_exceeded"),
            GatewayError::LimitReached { .. } => ("requests", "rate_limit_exceeded"),
            GatewayError::LimitsUnavailable => ("server_error", "limits_unavailable"),
            GatewayError::PriceMissing(_) => ("server_error", "price_missing"),
            GatewayError::Provider { error, .. } => error.kind.type_and_code(),
            GatewayError::Attempted { last, .. } => last.type_and_code(),
        }
    }

    /// Whether another attempt may succeed (for the routing work).
    pub fn retryable(&self) -> bool {
        match self {
            GatewayError::UpstreamUnreachable(_)
            | GatewayError::UpstreamTimeout(_)
            | GatewayError::UpstreamInvalid(_) => true,
            GatewayError::Provider { error, .. } => error.retryable(),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<&HeaderValue> {
        match self {
            GatewayError::Provider { error, .. } => error.retry_after.as_ref(),
            GatewayError::NoHealthyTarget { retry_after, .. } => retry_after.as_ref(),
            GatewayError::Attempted { last, .. } => last.retry_after(),
            _ => None,
        }
    }

    /// Every attempt of a request tried more than once, as error bodies list them.
    pub fn attempts_json(&self) -> Option<serde_json::Value> {
        match self {
            GatewayError::Attempted { attempts, .. } => serde_json::to_value(attempts).ok(),
            _ => None,
        }
    }

    /// The OpenAI error object, for bodies and for error events in streams.
    pub fn to_json(&self) -> serde_json::Value {
        if let GatewayError::Attempted { last, .. } = self {
            let mut body = last.to_json();
            body["error"]["attempts"] = self.attempts_json().unwrap_or_default();
            return body;
        }
        let (kind, code) = self.type_and_code();
        let param = match self {
            GatewayError::BadRequest { param, .. } => *param,
            GatewayError::ModelNotAllowed(_) | GatewayError::ModelNotFound(_) => Some("model"),
            GatewayError::Unsupported { param, .. } => Some(param.as_str()),
            GatewayError::Provider { error, .. } => error.param.as_deref(),
            _ => None,
        };
        json!({"error": {"message": self.to_string(), "type": kind, "param": param, "code": code}})
    }
}

impl GatewayError {
    /// The error's status and `retry-after` with a body in some API's error
    /// format (OpenAI's here, Anthropic's on `/v1/messages`).
    pub fn response_with(&self, body: serde_json::Value) -> Response {
        let mut response = (self.status(), body.to_string()).into_response();
        if let GatewayError::LimitReached { headers, .. } = self {
            response.headers_mut().extend(headers.as_ref().clone());
        }
        if let Some(value) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, value.clone());
        }
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl IntoResponse for GatewayError {
    fn into_response(self) -> Response {
        self.response_with(self.to_json())
    }
}
