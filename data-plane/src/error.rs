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
    InvalidToken(TokenRejection),
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
    /// A route's guardrail refused the request (or its answer).
    #[error("{0}")]
    GuardrailRefused(String),
    /// A plugin failed (trap, fuel, memory, a bad verdict) and fails closed.
    #[error("The plugin '{0}' of this route or team failed.")]
    PluginFailed(String),
    /// The route's moderation service could not be asked, and it fails closed.
    #[error("The moderation service of this route did not answer; try again shortly.")]
    GuardrailUnavailable,
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

pub use shared::usage::FailedAttempt;

/// What an error kind decides: see `GatewayError::spec`.
struct Spec {
    status: StatusCode,
    /// OpenAI's error `type`.
    kind: &'static str,
    code: &'static str,
    retryable: bool,
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

    /// The one table: each kind of error's HTTP status, OpenAI `type` and
    /// `code` (the code doubles as a low-cardinality metric label; Anthropic's
    /// `type` follows from the status), and whether another attempt may succeed.
    fn spec(&self) -> Spec {
        use GatewayError as E;
        use StatusCode as S;
        let spec = |status, kind, code, retryable| Spec {
            status,
            kind,
            code,
            retryable,
        };
        match self {
            E::MissingKey | E::InvalidKey => spec(
                S::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_api_key",
                false,
            ),
            E::ExpiredKey => spec(
                S::UNAUTHORIZED,
                "invalid_request_error",
                "api_key_expired",
                false,
            ),
            E::InvalidToken(_) => spec(
                S::UNAUTHORIZED,
                "invalid_request_error",
                "invalid_token",
                false,
            ),
            E::ModelNotAllowed(_) => {
                spec(S::FORBIDDEN, "permission_error", "model_not_allowed", false)
            }
            E::ModelNotFound(_) => spec(
                S::NOT_FOUND,
                "invalid_request_error",
                "model_not_found",
                false,
            ),
            E::BadRequest { .. } => spec(
                S::BAD_REQUEST,
                "invalid_request_error",
                "invalid_request",
                false,
            ),
            E::UnknownEndpoint(_) => {
                spec(S::NOT_FOUND, "invalid_request_error", "unknown_url", false)
            }
            E::MethodNotAllowed => spec(
                S::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "method_not_allowed",
                false,
            ),
            E::BodyTooLarge(_) => spec(
                S::PAYLOAD_TOO_LARGE,
                "invalid_request_error",
                "request_too_large",
                false,
            ),
            E::HeadersTooLarge(_) => spec(
                S::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "invalid_request_error",
                "request_headers_too_large",
                false,
            ),
            E::NotReady => spec(S::SERVICE_UNAVAILABLE, "server_error", "not_ready", false),
            E::NoHealthyTarget { .. } => spec(
                S::SERVICE_UNAVAILABLE,
                "server_error",
                "no_healthy_target",
                false,
            ),
            E::UpstreamUnreachable(_) => spec(
                S::BAD_GATEWAY,
                "upstream_error",
                "upstream_unreachable",
                true,
            ),
            E::UpstreamTimeout(_) => spec(
                S::GATEWAY_TIMEOUT,
                "upstream_error",
                "upstream_timeout",
                true,
            ),
            E::UpstreamInvalid(_) => spec(
                S::BAD_GATEWAY,
                "upstream_error",
                "upstream_invalid_response",
                true,
            ),
            E::Unsupported { .. } => spec(
                S::BAD_REQUEST,
                "invalid_request_error",
                "unsupported_parameter",
                false,
            ),
            E::GuardrailRefused(_) => spec(
                S::BAD_REQUEST,
                "invalid_request_error",
                "guardrail_refused",
                false,
            ),
            E::PluginFailed(_) => spec(
                S::INTERNAL_SERVER_ERROR,
                "server_error",
                "plugin_failed",
                false,
            ),
            E::GuardrailUnavailable => spec(
                S::SERVICE_UNAVAILABLE,
                "server_error",
                "guardrail_unavailable",
                false,
            ),
            // As OpenAI answers: the type names what ran out.
            E::LimitReached { quota: true, .. } => spec(
                S::TOO_MANY_REQUESTS,
                "insufficient_quota",
                "insufficient_quota",
                false,
            ),
            E::LimitReached { tokens: true, .. } => {
                spec(S::TOO_MANY_REQUESTS, "tokens", "rate_limit_exceeded", false)
            }
            E::LimitReached { .. } => spec(
                S::TOO_MANY_REQUESTS,
                "requests",
                "rate_limit_exceeded",
                false,
            ),
            E::LimitsUnavailable => spec(
                S::SERVICE_UNAVAILABLE,
                "server_error",
                "limits_unavailable",
                false,
            ),
            E::PriceMissing(_) => spec(
                S::INTERNAL_SERVER_ERROR,
                "server_error",
                "price_missing",
                false,
            ),
            E::Provider { error, .. } => {
                let (kind, code) = error.kind.type_and_code();
                spec(error.kind.status(), kind, code, error.retryable())
            }
            // Already the request's final answer: not tried again.
            E::Attempted { last, .. } => Spec {
                retryable: false,
                ..last.spec()
            },
        }
    }

    pub fn status(&self) -> StatusCode {
        self.spec().status
    }

    /// OpenAI's `type` and `code`; `code` doubles as a low-cardinality metric label.
    pub fn type_and_code(&self) -> (&'static str, &'static str) {
        let spec = self.spec();
        (spec.kind, spec.code)
    }

    /// Whether another attempt may succeed (for the routing work).
    pub fn retryable(&self) -> bool {
        self.spec().retryable
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

/// Why a token was refused, in general terms: never the token or its claims.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenRejection {
    Malformed,
    UntrustedIssuer,
    AlgorithmNotAllowed,
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongAudience,
    MissingClaim,
    UnknownSubject,
    UnknownTeam,
    BadModelsClaim,
}

impl std::fmt::Display for TokenRejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TokenRejection::Malformed => {
                "the token is malformed or its header names an algorithm that is not accepted"
            }
            TokenRejection::UntrustedIssuer => "the token's issuer is not trusted",
            TokenRejection::AlgorithmNotAllowed => {
                "the token's algorithm is not allowed for its issuer"
            }
            TokenRejection::UnknownKey => "the token's signing key is not one of its issuer's keys",
            TokenRejection::BadSignature => "the token's signature does not verify",
            TokenRejection::Expired => "the token has expired",
            TokenRejection::NotYetValid => "the token is not valid yet",
            TokenRejection::WrongAudience => "the token's audience is not accepted",
            TokenRejection::MissingClaim => {
                "the token lacks a required claim (exp, iss, aud or the user claim)"
            }
            TokenRejection::UnknownSubject => "no user is registered for the token's subject",
            TokenRejection::UnknownTeam => "the token names a team this gateway does not know",
            TokenRejection::BadModelsClaim => {
                "the token's models claim is not a list of model names"
            }
        })
    }
}

/// Why a snapshot or delta was refused, naming what in it is wrong; the
/// previous version keeps serving, and the reason goes back to the control
/// plane as a NACK.
#[derive(Debug, thiserror::Error)]
pub enum InvalidConfig {
    #[error("{entity} {name:?}: {reason}")]
    Entry {
        entity: Entity,
        name: String,
        reason: String,
    },
    #[error("route {route:?} sends traffic to route {target:?}, which does not exist")]
    UnknownRoute { route: String, target: String },
    #[error("prices: {0}")]
    Prices(String),
    #[error("the {what} does not decode: {reason}")]
    Undecodable { what: &'static str, reason: String },
    #[error("applying the config panicked: {0}")]
    Panicked(String),
    #[error("a delta from version {from} does not follow the applied version {applied}")]
    OutOfOrder { from: i64, applied: i64 },
}

/// What a snapshot entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    Provider,
    Route,
    Key,
    User,
    Team,
    JwtIssuer,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Provider => "provider",
            Entity::Route => "route",
            Entity::Key => "key",
            Entity::User => "user",
            Entity::Team => "team",
            Entity::JwtIssuer => "JWT issuer",
        })
    }
}

impl Entity {
    /// The entry `name` of this kind is refused for `reason`.
    pub fn invalid(self, name: impl Into<String>, reason: impl std::fmt::Display) -> InvalidConfig {
        InvalidConfig::Entry {
            entity: self,
            name: name.into(),
            reason: reason.to_string(),
        }
    }
}
