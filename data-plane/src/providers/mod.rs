//! Step 5 of the request path: speaking to the provider. One adapter per wire
//! format, each behind the `Adapter` trait, chosen by the provider's kind (and
//! its `api` setting) when a snapshot is applied.

pub mod anthropic;
pub mod body;
mod client;
mod connect;
mod dashscope;
mod gemini;
pub mod hunyuan;
mod ollama;
mod openai;
mod pool;
mod qianfan;

pub use client::{UpstreamClient, UpstreamResponse, UpstreamSettings};

use crate::chat::framing::{Frame, Framing};
use crate::chat::{ChatChunk, ChatCompletion, ChatRequest, ChunkBuilder, EmbeddingsRequest};
use crate::error::{Entity, GatewayError, InvalidConfig, ProviderError, ProviderErrorKind};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Full, Limited};
use serde_json::Value;
use shared::proto;
use shared::provider_kind::{ProviderApi, ProviderKind};
use shared::usage::TokenUsage;
use std::time::Duration;

/// Error bodies are small; a larger one is not an error object.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A request ready to send: the adapter has chosen URL, headers and body.
pub struct UpstreamCall {
    pub method: Method,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl UpstreamCall {
    pub fn json(uri: String, body: Bytes) -> Self {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        UpstreamCall {
            method: Method::POST,
            uri,
            headers,
            body,
        }
    }

    /// A cheap `GET` (a model list), for health checks.
    pub fn probe(uri: String) -> Self {
        UpstreamCall {
            method: Method::GET,
            uri,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }
}

/// One provider wire format. `model` is always the upstream model name.
pub trait Adapter: Send + Sync {
    fn kind(&self) -> ProviderKind;

    /// For OpenAI-format APIs: the request for `path` (`/chat/completions`,
    /// `/embeddings`, ...) carrying the client's own body bytes, spliced.
    fn passthrough(&self, _path: &str, _model: &str, _body: Bytes) -> Option<UpstreamCall> {
        None
    }

    /// For Anthropic's API: the request for `path` (`/messages`,
    /// `/messages/count_tokens`) carrying the client's own Anthropic body and
    /// its `anthropic-*` headers, untranslated.
    fn native_messages(
        &self,
        _path: &str,
        _body: Bytes,
        _client_headers: &HeaderMap,
    ) -> Option<UpstreamCall> {
        None
    }

    /// Fetches what a call needs beforehand (Baidu v1's access token).
    fn prepare<'a>(
        &'a self,
        _http: &'a UpstreamClient,
        _timeout: Duration,
    ) -> Option<BoxFuture<'a, Result<(), ProviderError>>> {
        None
    }

    fn chat_request(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<UpstreamCall, GatewayError>;

    /// A non-streaming answer; providers that report errors in a 200 body say so here.
    fn chat_response(&self, model: &str, body: &[u8]) -> Result<ChatCompletion, ProviderError>;

    fn stream_decoder(&self, model: &str) -> Box<dyn StreamDecoder>;

    fn embeddings_request(
        &self,
        _model: &str,
        _request: &EmbeddingsRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        Err(GatewayError::bad_request(
            format!("Provider kind {} offers no embeddings.", self.kind()),
            Some("model"),
        ))
    }

    /// Vectors and usage of an embeddings answer.
    fn embeddings_response(
        &self,
        _body: &[u8],
    ) -> Result<(Vec<Vec<f32>>, Option<TokenUsage>), ProviderError> {
        Err(invalid_answer())
    }

    /// A non-2xx answer, read from the provider's error format.
    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError;

    /// A cheap request that succeeds while the provider is up (its model
    /// list), for active health checks; `None` where there is none.
    fn health_probe(&self) -> Option<UpstreamCall> {
        None
    }
}

/// Turns a provider's stream messages into OpenAI chunks as they arrive.
pub trait StreamDecoder: Send {
    fn framing(&self) -> Framing {
        Framing::Sse
    }

    fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError>;

    fn progress(&self) -> &Progress;

    /// The latest usage: streams that report running totals replace it.
    fn usage(&self) -> Option<TokenUsage> {
        self.progress().usage
    }

    /// Whether the provider signalled the end of its answer; a stream that
    /// closes before that was cut off.
    fn finished(&self) -> bool {
        self.progress().finished
    }
}

/// What every stream decoder tracks: the chunks' id and model, whether the
/// opening role chunk went out, the latest usage, whether the answer ended.
pub struct Progress {
    pub builder: ChunkBuilder,
    started: bool,
    pub usage: Option<TokenUsage>,
    pub finished: bool,
}

impl Progress {
    pub fn new(model: &str) -> Self {
        Progress {
            builder: ChunkBuilder::new(crate::chat::new_id("chatcmpl-"), model.to_owned()),
            started: false,
            usage: None,
            finished: false,
        }
    }

    /// The role chunk, once, under the provider's own answer id if it has one.
    pub fn start(&mut self, id: Option<&str>, out: &mut Vec<ChatChunk>) {
        if self.started {
            return;
        }
        if let Some(id) = id {
            self.builder.set_id(id);
        }
        out.push(self.builder.role());
        self.started = true;
    }

    /// A tool call that arrives whole: its opening delta and all its arguments.
    pub fn tool_call(&self, index: u32, call: crate::chat::ToolCall, out: &mut Vec<ChatChunk>) {
        out.push(
            self.builder
                .tool_call_start(index, call.id, call.function.name),
        );
        out.push(self.builder.tool_arguments(index, call.function.arguments));
    }

    pub fn finish(&mut self, reason: crate::chat::FinishReason, out: &mut Vec<ChatChunk>) {
        out.push(self.builder.finish(reason));
        self.finished = true;
    }
}

/// Builds the adapter for a provider of a snapshot.
pub fn adapter(p: &proto::SnapshotProvider) -> Result<Box<dyn Adapter>, InvalidConfig> {
    build_adapter(p).map_err(|reason| Entity::Provider.invalid(&p.name, reason))
}

fn build_adapter(p: &proto::SnapshotProvider) -> Result<Box<dyn Adapter>, String> {
    let kind: ProviderKind = p.kind.parse().map_err(|e| format!("{e}"))?;
    if !(p.base_url.starts_with("http://") || p.base_url.starts_with("https://")) {
        return Err("base_url is not an http(s) URL".to_owned());
    }
    let settings = Settings(&p.settings);
    let api = match settings.get("api") {
        Some(api) => api.parse::<ProviderApi>()?,
        None => ProviderApi::default(),
    };
    let base_url = p.base_url.trim_end_matches('/').to_owned();
    Ok(match (kind, api) {
        (ProviderKind::Anthropic, _) => {
            Box::new(anthropic::Anthropic::new(base_url, &p.api_key, &settings)?)
        }
        (ProviderKind::Gemini, _) => Box::new(gemini::Gemini::new(base_url, &p.api_key)?),
        (ProviderKind::Qianfan, ProviderApi::Native) => {
            Box::new(qianfan::Qianfan::new(base_url, &p.api_key, &p.secret_key))
        }
        (ProviderKind::Dashscope, ProviderApi::Native) => {
            Box::new(dashscope::DashScope::new(base_url, &p.api_key)?)
        }
        (ProviderKind::Hunyuan, ProviderApi::Native) => {
            Box::new(hunyuan::Hunyuan::new(base_url, &p.secret_key, &settings)?)
        }
        (ProviderKind::Ollama, ProviderApi::Native) => {
            Box::new(ollama::Ollama::new(base_url, &p.api_key)?)
        }
        (kind, _) => Box::new(openai::OpenAi::new(kind, base_url, &p.api_key, &settings)?),
    })
}

/// A provider's settings map, read by name.
pub struct Settings<'a>(&'a std::collections::HashMap<String, String>);

impl Settings<'_> {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .get(name)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("settings.{name} is required"))
    }
}

/// A credential as a header value, marked sensitive so it is never logged.
pub fn secret_header(value: &str) -> Result<HeaderValue, String> {
    let mut value = HeaderValue::try_from(value)
        .map_err(|_| "credential is not a valid header value".to_owned())?;
    value.set_sensitive(true);
    Ok(value)
}

/// The provider could not be reached, or broke off mid-answer. The error is
/// the transport's own (the URL is operator config, with no credential), so
/// it is logged; the client is told only which provider failed.
pub fn unreachable(provider: &str, error: &dyn std::fmt::Display) -> GatewayError {
    tracing::warn!(provider, %error, "upstream unreachable or broke off");
    GatewayError::UpstreamUnreachable(provider.to_owned())
}

/// An answer that is not what the provider's format promises.
pub fn invalid_answer() -> ProviderError {
    ProviderError::new(
        ProviderErrorKind::Server,
        "The upstream provider sent an invalid response.",
    )
}

pub fn provider_error(provider: &str, error: ProviderError) -> GatewayError {
    tracing::info!(provider, kind = ?error.kind, retryable = error.retryable(), "upstream answered with an error");
    GatewayError::Provider {
        provider: provider.to_owned(),
        error,
    }
}

/// Sends a call; answers with the upstream's response if it succeeded, or
/// the upstream's error read by its adapter.
pub async fn send(
    http: &UpstreamClient,
    provider: &str,
    adapter: &dyn Adapter,
    call: UpstreamCall,
    first_byte_timeout: Duration,
    connect_timeout: Option<Duration>,
) -> Result<UpstreamResponse, GatewayError> {
    let mut request = hyper::Request::builder().method(call.method).uri(call.uri);
    if let Some(headers) = request.headers_mut() {
        *headers = call.headers;
    }
    let request = request
        .body(Full::new(call.body))
        .map_err(|_| GatewayError::UpstreamInvalid(provider.to_owned()))?;
    let response =
        match tokio::time::timeout(first_byte_timeout, http.send(request, connect_timeout)).await {
            Err(_) => return Err(GatewayError::UpstreamTimeout(provider.to_owned())),
            Ok(Err(error)) => return Err(unreachable(provider, &error)),
            Ok(Ok(response)) => response,
        };
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_limited(response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    Err(provider_error(
        provider,
        adapter.error(status, &headers, &body),
    ))
}

/// Reads a whole (small) body; `None` if it breaks off or is too large.
pub async fn read_limited(response: UpstreamResponse, limit: usize) -> Option<Bytes> {
    Limited::new(response.into_body(), limit)
        .collect()
        .await
        .ok()
        .map(|b| b.to_bytes())
}

/// What most formats' error words and codes mean, checked before the status:
/// providers disagree on statuses far more than on words.
pub fn classify(status: StatusCode, codes: &[&str], message: &str) -> ProviderErrorKind {
    let has = |needle: &str| {
        codes
            .iter()
            .any(|c| c.to_ascii_lowercase().contains(needle))
    };
    let message = message.to_ascii_lowercase();
    if has("context_length")
        || message.contains("maximum context length")
        || message.contains("prompt is too long")
    {
        return ProviderErrorKind::ContextLengthExceeded;
    }
    if has("content_filter") || has("sensitive") || has("responsibleai") || has("datainspection") {
        return ProviderErrorKind::ContentFilter;
    }
    if has("insufficient_quota") || has("billing") || has("arrear") || has("balance") {
        return ProviderErrorKind::QuotaExhausted;
    }
    if has("rate_limit") || has("throttling") || has("ratelimit") || has("toomanyrequests") {
        return ProviderErrorKind::RateLimited;
    }
    if has("overloaded") {
        return ProviderErrorKind::Overloaded;
    }
    if has("authentication")
        || has("invalid_api_key")
        || has("invalidapikey")
        || has("unauthorized")
    {
        return ProviderErrorKind::Authentication;
    }
    ProviderErrorKind::from_status(status)
}

/// A JSON body's `path` as a string, for error fields that may be strings or numbers.
pub fn text_at(value: &Value, pointer: &str) -> String {
    match value.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// Streams read as running totals report usage on every message; the last wins.
pub fn json_frame<T: serde::de::DeserializeOwned>(frame: &Frame) -> Result<T, ProviderError> {
    serde_json::from_str(frame.data.trim()).map_err(|_| invalid_answer())
}

/// Parses a JSON answer body, ignoring leading whitespace (DeepSeek sends
/// blank keep-alive lines before the JSON).
pub fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ProviderError> {
    serde_json::from_slice(body.trim_ascii_start()).map_err(|_| invalid_answer())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_by_words_before_status() {
        let bad = StatusCode::BAD_REQUEST;
        assert_eq!(
            classify(bad, &["context_length_exceeded"], ""),
            ProviderErrorKind::ContextLengthExceeded
        );
        assert_eq!(
            classify(
                bad,
                &[],
                "prompt is too long: 215000 tokens > 200000 maximum"
            ),
            ProviderErrorKind::ContextLengthExceeded
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &["insufficient_quota"], ""),
            ProviderErrorKind::QuotaExhausted
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &["Throttling.RateQuota"], ""),
            ProviderErrorKind::RateLimited
        );
        assert_eq!(
            classify(StatusCode::from_u16(529).expect("status"), &[], ""),
            ProviderErrorKind::Overloaded
        );
        assert!(!ProviderErrorKind::QuotaExhausted.retryable());
        assert!(ProviderErrorKind::Overloaded.retryable());
    }
}
