//! Mock provider servers, one per wire format, for tests on loopback. Each
//! reproduces its provider as `../shared/reference/provider-wire-formats.md`
//! describes it: paths, auth or signing checks, JSON shapes, stream framing
//! and ending, where usage appears, error bodies and statuses. They refuse
//! what the real provider refuses.
//!
//! They share one deterministic "model": it echoes the last user message,
//! calls the first tool when asked about the weather, reports tool results,
//! counts images, and fails on command: a user message containing
//! `FAIL <what>`, or an upstream model named `fail-<what>` (429, 429-<s>, 529, 503,
//! 401, 500, context, filter, midstream, garbage), gets that failure in the
//! provider's own format (`garbage`: a 500 whose body is not JSON). A request
//! whose model or text holds `sleep-<ms>` is answered that much later;
//! `slowfirst-<ms>` delays a stream's first event after its head. Tokens
//! are words in and words out; everything billed is summed at
//! `GET /_mock/stats` (with how many requests came over HTTP/2), and the last request (path, headers, body) is at
//! `GET /_mock/last`.

// Handlers answer refusals as ready responses; their size does not matter here.
#![allow(clippy::result_large_err)]

mod anthropic;
mod dashscope;
mod gemini;
mod hunyuan;
mod ollama;
pub mod openai;
mod qianfan;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};
use shared::provider_kind::{ProviderApi, ProviderKind};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a mock checks its callers against.
#[derive(Clone, Debug)]
pub struct MockConfig {
    pub kind: ProviderKind,
    pub api: ProviderApi,
    pub api_key: String,
    /// Baidu v1 Secret Key, Tencent SecretKey.
    pub secret_key: String,
    /// Tencent SecretId.
    pub secret_id: String,
    /// Gap between streamed events, so arrival can be observed.
    pub chunk_gap: Duration,
}

#[derive(Default)]
pub struct Stats {
    requests: AtomicI64,
    /// Requests that came over HTTP/2 (HTTPS with ALPN).
    http2_requests: AtomicI64,
    prompt_tokens: AtomicI64,
    completion_tokens: AtomicI64,
    last: Mutex<Value>,
    /// Access tokens handed out by a token exchange (Baidu v1).
    pub tokens: Mutex<Vec<String>>,
    /// Upstream models failing until told otherwise (`/_mock/outage`).
    outages: Mutex<std::collections::HashMap<String, String>>,
    /// Prompt prefixes cached (Anthropic's prompt caching), by hash.
    pub prompt_cache: Mutex<std::collections::HashSet<u64>>,
}

pub struct Mock {
    pub config: MockConfig,
    pub stats: Stats,
}

pub type Shared = State<Arc<Mock>>;

impl Mock {
    /// What the mock reports as usage is what it bills.
    pub fn bill(&self, usage: Usage) {
        self.stats
            .prompt_tokens
            .fetch_add(usage.prompt, Ordering::Relaxed);
        self.stats
            .completion_tokens
            .fetch_add(usage.completion, Ordering::Relaxed);
    }

    /// Keeps the request for `/_mock/last`, where tests check the translation.
    pub fn saw(&self, uri: &Uri, headers: &HeaderMap, body: &[u8]) {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let headers: serde_json::Map<String, Value> = headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), json!(v.to_str().unwrap_or_default())))
            .collect();
        let body = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| json!(String::from_utf8_lossy(body)));
        if let Ok(mut last) = self.stats.last.lock() {
            *last = json!({"uri": uri.to_string(), "headers": headers, "body": body});
        }
    }
}

/// The router for one provider API.
pub fn router(config: MockConfig) -> Router {
    let mock = Arc::new(Mock {
        config: config.clone(),
        stats: Stats::default(),
    });
    let api = match (config.kind, config.api) {
        (ProviderKind::Anthropic, _) => anthropic::routes(),
        (ProviderKind::Gemini, _) => gemini::routes(),
        (ProviderKind::Qianfan, ProviderApi::Native) => qianfan::routes(),
        (ProviderKind::Dashscope, ProviderApi::Native) => dashscope::routes(),
        (ProviderKind::Hunyuan, ProviderApi::Native) => hunyuan::routes(),
        (ProviderKind::Ollama, ProviderApi::Native) => ollama::routes(),
        (kind, _) => openai::routes(kind),
    };
    api.route("/_mock/stats", get(stats))
        .route("/_mock/last", get(last))
        .route(
            "/_mock/outage",
            axum::routing::put(start_outage).delete(end_outage),
        )
        .layer(axum::middleware::from_fn_with_state(
            mock.clone(),
            count_http2,
        ))
        .with_state(mock)
}

async fn count_http2(
    State(mock): Shared,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.version() == axum::http::Version::HTTP_2 {
        mock.stats.http2_requests.fetch_add(1, Ordering::Relaxed);
    }
    next.run(request).await
}

async fn stats(State(mock): Shared) -> Json<Value> {
    let s = &mock.stats;
    let (prompt, completion) = (
        s.prompt_tokens.load(Ordering::Relaxed),
        s.completion_tokens.load(Ordering::Relaxed),
    );
    Json(json!({
        "requests": s.requests.load(Ordering::Relaxed),
        "http2_requests": s.http2_requests.load(Ordering::Relaxed),
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "token_exchanges": s.tokens.lock().map(|t| t.len()).unwrap_or_default(),
    }))
}

/// `PUT /_mock/outage {"model": "m", "failure": "500"}`: requests for that
/// upstream model (`"*"`: every request, the model list too) fail so (a
/// failure name as after `FAIL `) until the outage is deleted
/// (`DELETE /_mock/outage {"model": "m"}`).
async fn start_outage(State(mock): Shared, Json(body): Json<Value>) -> axum::http::StatusCode {
    let (Some(model), Some(failure)) = (body["model"].as_str(), body["failure"].as_str()) else {
        return axum::http::StatusCode::BAD_REQUEST;
    };
    if let Ok(mut outages) = mock.stats.outages.lock() {
        outages.insert(model.to_owned(), failure.to_owned());
    }
    axum::http::StatusCode::NO_CONTENT
}

async fn end_outage(State(mock): Shared, Json(body): Json<Value>) -> axum::http::StatusCode {
    if let (Some(model), Ok(mut outages)) = (body["model"].as_str(), mock.stats.outages.lock()) {
        outages.remove(model);
    }
    axum::http::StatusCode::NO_CONTENT
}

impl Mock {
    /// The failure an outage imposes on this turn's model, as a `fail-` name.
    pub fn outage_for(&self, turn: &mut Turn) {
        if let Some(failure) = self.outage(&turn.model) {
            turn.model = format!("fail-{failure}");
        }
    }

    /// The failure set for a model, or for every model (`"*"`).
    pub fn outage(&self, model: &str) -> Option<String> {
        let outages = self.stats.outages.lock().ok()?;
        outages.get(model).or_else(|| outages.get("*")).cloned()
    }
}

async fn last(State(mock): Shared) -> Json<Value> {
    Json(
        mock.stats
            .last
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default(),
    )
}

// ---- the shared "model"

/// A conversation as every mock reads it from its own request format.
#[derive(Default)]
pub struct Turn {
    /// The upstream model asked for, where the format names it.
    pub model: String,
    pub user_text: String,
    pub tool_result: Option<String>,
    pub tool_names: Vec<String>,
    pub images: usize,
    /// Words of every message, system prompt included.
    pub prompt_words: i64,
}

impl Turn {
    pub fn count(&mut self, text: &str) {
        self.prompt_words += words(text);
    }

    /// One message of the conversation, by its role in the provider's
    /// terms: counted, and kept when it is the user's latest turn or a
    /// tool's answer (`tool`, Baidu's `function`) to it.
    pub fn message(&mut self, role: &str, text: String) {
        self.count(&text);
        match role {
            "user" => {
                self.user_text = text;
                self.tool_result = None;
            }
            "tool" | "function" => self.tool_result = Some(text),
            _ => {}
        }
    }
}

/// The names of OpenAI-style tools (`[{"function": {"name": ..}}]`).
pub fn tool_names(tools: &Value) -> Vec<String> {
    tools
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// A 429; OpenAI's format says when to come back (`429-<seconds>`; 7 by default).
    RateLimited {
        retry_after_s: u32,
    },
    Overloaded,
    Unavailable,
    Unauthorized,
    Server,
    ContextLength,
    ContentFilter,
    /// A stream that stops after its first words, without its ending.
    MidStream,
    /// A 500 whose body is not JSON, as a proxy in front of a provider sends.
    Garbage,
}

pub enum Reply {
    Text(String),
    ToolCall { name: String, arguments: Value },
    Fail(Failure),
}

#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    pub prompt: i64,
    pub completion: i64,
}

pub fn words(text: &str) -> i64 {
    text.split_whitespace().count() as i64
}

impl Reply {
    pub fn to(turn: &Turn) -> Reply {
        let command = turn
            .user_text
            .split("FAIL ")
            .nth(1)
            .or_else(|| turn.model.strip_prefix("fail-"));
        if let Some(what) = command {
            let what = what.split_whitespace().next().unwrap_or_default();
            return Reply::Fail(match what {
                "garbage" => Failure::Garbage,
                "429" => Failure::RateLimited { retry_after_s: 7 },
                _ if what.starts_with("429-") => Failure::RateLimited {
                    retry_after_s: what[4..].parse().unwrap_or(7),
                },
                "529" => Failure::Overloaded,
                "503" => Failure::Unavailable,
                "401" => Failure::Unauthorized,
                "context" => Failure::ContextLength,
                "filter" => Failure::ContentFilter,
                "midstream" => Failure::MidStream,
                _ => Failure::Server,
            });
        }
        if let Some(result) = &turn.tool_result {
            return Reply::Text(format!("The tool answered: {result}"));
        }
        if let (Some(name), true) = (
            turn.tool_names.first(),
            turn.user_text.to_lowercase().contains("weather"),
        ) {
            return Reply::ToolCall {
                name: name.clone(),
                arguments: json!({"city": "Paris"}),
            };
        }
        if turn.images > 0 {
            return Reply::Text(format!("I see {} image(s).", turn.images));
        }
        Reply::Text(format!("Echo: {}", turn.user_text))
    }

    pub fn usage(&self, turn: &Turn) -> Usage {
        Usage {
            prompt: turn.prompt_words.max(1),
            completion: match self {
                Reply::Text(text) => words(text),
                Reply::ToolCall { .. } => 5,
                Reply::Fail(_) => 0,
            },
        }
    }
}

/// Waits as long as a `sleep-<ms>` in the request asks, before answering.
pub async fn pace(body: &[u8]) {
    if let Some(wait) = millis_after(&String::from_utf8_lossy(body), "sleep-") {
        tokio::time::sleep(wait).await;
    }
}

/// A 500 whose body is not JSON.
pub fn garbage() -> Response {
    response(
        axum::http::StatusCode::INTERNAL_SERVER_ERROR,
        "text/html",
        "<html>upstream exploded</html>",
    )
}

/// The answer's text in stream increments: word by word, spaces kept.
pub fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for (i, word) in text.split(' ').enumerate() {
        out.push(if i == 0 {
            word.to_owned()
        } else {
            format!(" {word}")
        });
    }
    out
}

/// A streamed body: each item is written as its own chunk, `gap` apart. A
/// stream whose model or answer holds `slowfirst-<ms>` sends its head at
/// once and its first event that much later (a slow first token).
pub fn stream_body(items: Vec<Bytes>, gap: Duration) -> Body {
    let first_gap = items
        .iter()
        .find_map(|item| millis_after(&String::from_utf8_lossy(item), "slowfirst-"))
        .unwrap_or_default();
    let stream = futures_util::stream::unfold(
        (items.into_iter(), true),
        move |(mut items, first)| async move {
            let item = items.next()?;
            let wait = if first { first_gap } else { gap };
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Some((Ok::<_, std::io::Error>(item), (items, false)))
        },
    );
    Body::from_stream(stream)
}

/// The milliseconds written after `marker` in `text`, if any.
fn millis_after(text: &str, marker: &str) -> Option<Duration> {
    let digits = text
        .split(marker)
        .nth(1)?
        .split(|c: char| !c.is_ascii_digit())
        .next()?;
    digits.parse().ok().map(Duration::from_millis)
}

/// A stream cut off mid-way: what was sent reaches the client, then the
/// connection drops without the ending.
pub fn broken_body(items: Vec<Bytes>) -> Body {
    let cut = futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(std::io::Error::other("mock: connection cut mid-stream"))
    });
    let stream =
        futures_util::stream::iter(items.into_iter().map(Ok::<_, std::io::Error>)).chain(cut);
    Body::from_stream(stream)
}

use futures_util::StreamExt;

pub fn response(
    status: axum::http::StatusCode,
    content_type: &'static str,
    body: impl Into<Body>,
) -> Response {
    let mut response = Response::new(body.into());
    *response.status_mut() = status;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static(content_type),
    );
    response
}

pub fn json_response(status: axum::http::StatusCode, body: &Value) -> Response {
    response(status, "application/json", body.to_string())
}

/// A header's value, or "".
pub fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}
