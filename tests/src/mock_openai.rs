//! A mock OpenAI upstream for tests and benchmarks, speaking OpenAI's wire
//! format on loopback: chat completions (plain and SSE, with `include_usage`
//! as OpenAI implements it), embeddings and models, with OpenAI-shaped errors.
//!
//! Token counts are deterministic (words in, words out) and every usage it
//! reports is summed at `GET /_mock/stats`, so tests can compare the
//! gateway's accounting with what the provider actually billed.
//!
//! Behaviour by model name, for failure tests:
//! - `mock-429`: rate limited, with `retry-after`.
//! - `mock-500`: server error in OpenAI's format.
//! - `mock-garbage`: a 500 whose body is not JSON.
//! - `mock-slow`: answers after 3 s.
//! - `mock-broken-stream`: a stream cut off after two chunks.
#![allow(clippy::print_stdout, clippy::result_large_err)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Parser, Clone)]
struct Args {
    /// Address to listen on; port 0 picks a free port, printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The API key clients must present; any other gets OpenAI's 401.
    #[arg(long, default_value = "sk-mock-upstream")]
    api_key: String,
    /// Delay before every answer.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Content chunks per streamed answer (the answer's words are spread over them).
    #[arg(long, default_value_t = 0)]
    chunks: usize,
    /// Gap between streamed chunks.
    #[arg(long, default_value_t = 0)]
    chunk_gap_ms: u64,
}

#[derive(Default)]
struct Stats {
    requests: AtomicI64,
    prompt_tokens: AtomicI64,
    completion_tokens: AtomicI64,
}

impl Stats {
    /// What the mock reports in a `usage` object is what it bills.
    fn bill(&self, prompt: i64, completion: i64) {
        self.prompt_tokens.fetch_add(prompt, Ordering::Relaxed);
        self.completion_tokens
            .fetch_add(completion, Ordering::Relaxed);
    }
}

struct Mock {
    args: Args,
    stats: Stats,
}

type Shared = State<Arc<Mock>>;

fn error(status: StatusCode, message: &str, kind: &str, code: &str) -> Response {
    let body = json!({"error": {"message": message, "type": kind, "param": null, "code": code}});
    (status, Json(body)).into_response()
}

fn authorized(mock: &Mock, headers: &HeaderMap) -> Result<(), Response> {
    let expected = format!("Bearer {}", mock.args.api_key);
    match headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        Some(value) if value == expected => Ok(()),
        _ => Err(error(
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys.",
            "invalid_request_error",
            "invalid_api_key",
        )),
    }
}

fn words(text: &str) -> i64 {
    text.split_whitespace().count() as i64
}

fn prompt_tokens(messages: &[Value]) -> i64 {
    messages
        .iter()
        .map(|m| match &m["content"] {
            Value::String(s) => words(s),
            Value::Array(parts) => parts
                .iter()
                .filter_map(|p| p["text"].as_str())
                .map(words)
                .sum(),
            _ => 0,
        })
        .sum::<i64>()
        .max(1)
}

fn reply_for(messages: &[Value]) -> String {
    let last = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or("");
    format!("Mock answer to: {last}")
}

async fn chat(State(mock): Shared, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(denied) = authorized(&mock, &headers) {
        return denied;
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "We could not parse the JSON body of your request.",
                "invalid_request_error",
                "invalid_json",
            )
        }
    };
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    let Some(messages) = request["messages"].as_array().cloned() else {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: 'messages'.",
            "invalid_request_error",
            "missing_required_parameter",
        );
    };
    if mock.args.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(mock.args.latency_ms)).await;
    }
    match model.as_str() {
        "mock-429" => {
            let mut response = error(
                StatusCode::TOO_MANY_REQUESTS,
                "Rate limit reached for requests per min (RPM): Limit 3, Used 3, Requested 1.",
                "requests",
                "rate_limit_exceeded",
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("7"));
            return response;
        }
        "mock-500" => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "The server had an error while processing your request.",
                "server_error",
                "server_error",
            )
        }
        "mock-garbage" => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                "<html>upstream exploded</html>",
            )
                .into_response()
        }
        "mock-slow" => tokio::time::sleep(Duration::from_secs(3)).await,
        _ => {}
    }
    let prompt = prompt_tokens(&messages);
    let reply = reply_for(&messages);
    let completion = words(&reply);
    mock.stats.requests.fetch_add(1, Ordering::Relaxed);
    let created = 1_727_000_000;
    let id = "chatcmpl-mock";
    if request["stream"] == true {
        let include_usage = request["stream_options"]["include_usage"] == true;
        return stream(
            mock,
            id,
            created,
            model,
            reply,
            prompt,
            completion,
            include_usage,
        );
    }
    mock.stats.bill(prompt, completion);
    Json(json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": "fp_mock", "service_tier": "default",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply, "refusal": null},
                     "logprobs": null, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
                  "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                  "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}
    }))
    .into_response()
}

#[allow(clippy::too_many_arguments)]
fn stream(
    mock: Arc<Mock>,
    id: &'static str,
    created: i64,
    model: String,
    reply: String,
    prompt: i64,
    completion: i64,
    include_usage: bool,
) -> Response {
    let usage_null = if include_usage {
        json!({"usage": null})
    } else {
        json!({})
    };
    let chunk = |delta: Value, finish: Value| {
        let mut c = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
            "system_fingerprint": "fp_mock",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]});
        if let (Some(obj), Some(extra)) = (c.as_object_mut(), usage_null.as_object()) {
            obj.extend(extra.clone());
        }
        format!("data: {c}\n\n")
    };
    let pieces: Vec<String> = {
        let words: Vec<&str> = reply.split_inclusive(' ').collect();
        let n = if mock.args.chunks > 0 {
            mock.args.chunks
        } else {
            words.len().max(1)
        };
        let per = words.len().div_ceil(n).max(1);
        let mut pieces: Vec<String> = words.chunks(per).map(|c| c.concat()).collect();
        pieces.resize(n.max(pieces.len()), String::new());
        pieces
    };
    let mut events = vec![chunk(
        json!({"role": "assistant", "content": "", "refusal": null}),
        Value::Null,
    )];
    events.extend(
        pieces
            .iter()
            .map(|p| chunk(json!({"content": p}), Value::Null)),
    );
    let broken = model == "mock-broken-stream";
    if !broken {
        events.push(chunk(json!({}), json!("stop")));
        if include_usage {
            let usage = json!({"id": id, "object": "chat.completion.chunk", "created": created, "model": model,
                "system_fingerprint": "fp_mock", "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}});
            events.push(format!("data: {usage}\n\n"));
            mock.stats.bill(prompt, completion);
        }
        events.push("data: [DONE]\n\n".to_owned());
    } else {
        events.truncate(3);
    }
    let gap = Duration::from_millis(mock.args.chunk_gap_ms);
    let body = futures_util::stream::unfold(
        (events.into_iter(), true, broken),
        move |(mut rest, first, broken)| async move {
            match rest.next() {
                Some(event) => {
                    if !first && !gap.is_zero() {
                        tokio::time::sleep(gap).await;
                    }
                    Some((
                        Ok::<_, std::io::Error>(Bytes::from(event)),
                        (rest, false, broken),
                    ))
                }
                None if broken => Some((
                    Err(std::io::Error::other("connection reset")),
                    (rest, false, false),
                )),
                None => None,
            }
        },
    );
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn embeddings(
    State(mock): Shared,
    headers: HeaderMap,
    Json(request): Json<Value>,
) -> Response {
    if let Err(denied) = authorized(&mock, &headers) {
        return denied;
    }
    let inputs: Vec<String> = match &request["input"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "'input' is required",
                "invalid_request_error",
                "missing_required_parameter",
            )
        }
    };
    let prompt: i64 = inputs.iter().map(|s| words(s).max(1)).sum();
    mock.stats.requests.fetch_add(1, Ordering::Relaxed);
    mock.stats.bill(prompt, 0);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let seed = text.len() as f64;
            json!({"object": "embedding", "index": i, "embedding": [seed / 100.0, -0.5, 0.25, i as f64]})
        })
        .collect();
    Json(
        json!({"object": "list", "data": data, "model": request["model"],
                "usage": {"prompt_tokens": prompt, "total_tokens": prompt}}),
    )
    .into_response()
}

async fn models(State(mock): Shared, headers: HeaderMap) -> Response {
    if let Err(denied) = authorized(&mock, &headers) {
        return denied;
    }
    Json(json!({"object": "list", "data": [{"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]}))
        .into_response()
}

async fn stats(State(mock): Shared) -> Json<Value> {
    let prompt = mock.stats.prompt_tokens.load(Ordering::Relaxed);
    let completion = mock.stats.completion_tokens.load(Ordering::Relaxed);
    Json(
        json!({"requests": mock.stats.requests.load(Ordering::Relaxed), "prompt_tokens": prompt,
                "completion_tokens": completion, "total_tokens": prompt + completion}),
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let mock = Arc::new(Mock {
        args,
        stats: Stats::default(),
    });
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/_mock/stats", get(stats))
        .with_state(mock);
    // Streams are small writes apart in time: without TCP_NODELAY, Nagle holds them.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await
}
