//! Anthropic's Messages API: `x-api-key` (or Bearer) and `anthropic-version`
//! required, `max_tokens` required, no `system` role in `messages`, named SSE
//! events ending with `message_stop`, cumulative `output_tokens` in
//! `message_delta`, overload reported in-stream as `event: error`. Extended
//! thinking answers with a signed thinking block first; prompt caching
//! writes the prefix up to the last `cache_control` on first sight and reads
//! it after; `/v1/messages/count_tokens` counts the prompt.

use super::{
    broken_body, header, json_response, pieces, response, stream_body, Failure, Mock, Reply,
    Shared, Turn, Usage,
};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Mock>> {
    Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
}

/// What a signed thinking block carries (opaque to clients, checked by Anthropic).
const SIGNATURE: &str = "EqQBCgIYAhIM1gbcDa9GJwZA2b3hGgxBdjrkzLoky3dl1pkiMOYds";

/// Anthropic's cache prefix: tools, then system, then messages, up to and
/// including the last block marked `cache_control`. Its words and a hash of it.
fn cache_prefix(request: &Value) -> Option<(i64, u64)> {
    use std::hash::{Hash, Hasher};
    let mut blocks: Vec<&Value> = Vec::new();
    blocks.extend(request["tools"].as_array().into_iter().flatten());
    blocks.extend(request["system"].as_array().into_iter().flatten());
    for message in request["messages"].as_array().into_iter().flatten() {
        match &message["content"] {
            Value::Array(content) => blocks.extend(content),
            other => blocks.push(other),
        }
    }
    let last = blocks
        .iter()
        .rposition(|b| b.get("cache_control").is_some())?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    let mut words = 0;
    for block in &blocks[..=last] {
        block.to_string().hash(&mut hasher);
        words += super::words(block["text"].as_str().unwrap_or_default());
    }
    if let Value::String(system) = &request["system"] {
        system.hash(&mut hasher);
        words += super::words(system);
    }
    Some((words, hasher.finish()))
}

/// Usage split as Anthropic reports it: `input_tokens` is what was neither
/// read from nor written to the cache.
fn usage_json(mock: &Mock, request: &Value, usage: Usage, output: i64) -> Value {
    let (mut written, mut read) = (0, 0);
    if let Some((words, hash)) = cache_prefix(request) {
        let words = words.min(usage.prompt);
        let new = mock
            .stats
            .prompt_cache
            .lock()
            .is_ok_and(|mut cache| cache.insert(hash));
        if new {
            written = words;
        } else {
            read = words;
        }
    }
    json!({"input_tokens": usage.prompt - written - read, "output_tokens": output,
        "cache_creation_input_tokens": written, "cache_read_input_tokens": read})
}

/// The thinking an answer opens with, when the request enabled it.
fn thinking_of(request: &Value, turn: &Turn) -> Result<Option<String>, Response> {
    let thinking = &request["thinking"];
    if thinking.is_null() || thinking["type"] == "disabled" {
        return Ok(None);
    }
    let budget = thinking["budget_tokens"].as_u64().unwrap_or(0);
    if thinking["type"] != "enabled" || budget < 1024 {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
        ));
    }
    if budget >= request["max_tokens"].as_u64().unwrap_or(0) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "`max_tokens` must be greater than `thinking.budget_tokens`",
        ));
    }
    Ok(Some(format!(
        "The user wrote {} words; answer plainly.",
        super::words(&turn.user_text)
    )))
}

/// Checks every request makes: credentials, version, a JSON body.
fn admitted(mock: &Mock, headers: &HeaderMap, body: &[u8]) -> Result<Value, Response> {
    let key = &mock.config.api_key;
    let bearer = format!("Bearer {key}");
    if header(headers, "x-api-key") != key && header(headers, "authorization") != bearer {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        ));
    }
    if header(headers, "anthropic-version").is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        ));
    }
    serde_json::from_slice::<Value>(body).map_err(|_| {
        error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "There was an issue with your request body: invalid JSON",
        )
    })
}

async fn count_tokens(State(mock): Shared, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    mock.saw(&uri, &headers, &body);
    let request = match admitted(&mock, &headers, &body) {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    match turn_of(&request) {
        Ok(turn) => json_response(
            StatusCode::OK,
            &json!({"input_tokens": turn.prompt_words.max(1)}),
        ),
        Err(refused) => refused,
    }
}

fn error(status: StatusCode, kind: &str, message: &str) -> Response {
    let mut response = json_response(
        status,
        &json!({"type": "error", "error": {"type": kind, "message": message}, "request_id": "req_mock"}),
    );
    if matches!(status.as_u16(), 429 | 529) {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("7"));
    }
    response
}

fn failure(failure: Failure) -> Response {
    match failure {
        Failure::Garbage => super::garbage(),
        Failure::RateLimited { .. } => error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
        ),
        Failure::Overloaded | Failure::Unavailable => error(
            StatusCode::from_u16(529).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
            "overloaded_error",
            "Overloaded",
        ),
        Failure::Unauthorized => error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        ),
        Failure::ContextLength => error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "prompt is too long: 215000 tokens > 200000 maximum",
        ),
        Failure::ContentFilter | Failure::Server | Failure::MidStream => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            "Internal server error",
        ),
    }
}

fn turn_of(request: &Value) -> Result<Turn, Response> {
    let mut turn = Turn {
        model: request["model"].as_str().unwrap_or_default().to_owned(),
        ..Turn::default()
    };
    match &request["system"] {
        Value::String(s) => turn.count(s),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .for_each(|t| turn.count(t)),
        _ => {}
    }
    for message in request["messages"].as_array().into_iter().flatten() {
        let role = message["role"].as_str().unwrap_or_default();
        if role != "user" && role != "assistant" {
            return Err(error(StatusCode::BAD_REQUEST, "invalid_request_error", &format!("messages: Unexpected role \"{role}\". Allowed roles are \"user\" or \"assistant\"")));
        }
        let blocks = match &message["content"] {
            Value::String(s) => vec![json!({"type": "text", "text": s})],
            Value::Array(blocks) => blocks.clone(),
            _ => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "messages: content must be a string or a list of blocks",
                ))
            }
        };
        let mut text = String::new();
        for block in &blocks {
            match block["type"].as_str() {
                Some("text") => {
                    let t = block["text"].as_str().unwrap_or_default();
                    if t.is_empty() {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            "invalid_request_error",
                            "messages: text content blocks must be non-empty",
                        ));
                    }
                    text.push_str(t);
                }
                Some("image") => turn.images += 1,
                Some("tool_result") => {
                    let result = match &block["content"] {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    turn.count(&result);
                    turn.tool_result = Some(result);
                }
                Some("tool_use") if !block["input"].is_object() => {
                    return Err(error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        "tool_use.input: Input should be an object",
                    ));
                }
                _ => {}
            }
        }
        turn.count(&text);
        if role == "user" && !text.is_empty() {
            turn.user_text = text;
            if !blocks.iter().any(|b| b["type"] == "tool_result") {
                turn.tool_result = None;
            }
        }
    }
    turn.tool_names = request["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    Ok(turn)
}

async fn messages(State(mock): Shared, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    let request = match admitted(&mock, &headers, &body) {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    if !request["max_tokens"].is_u64() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "max_tokens: Field required",
        );
    }
    if request["temperature"]
        .as_f64()
        .is_some_and(|t| !(0.0..=1.0).contains(&t))
    {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "temperature: range: 0..1",
        );
    }
    if !request["top_k"].is_null() && !request["top_k"].is_u64() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "top_k: Input should be a valid integer",
        );
    }
    let turn = match turn_of(&request) {
        Ok(turn) => turn,
        Err(refused) => return refused,
    };
    let thinking = match thinking_of(&request, &turn) {
        Ok(thinking) => thinking,
        Err(refused) => return refused,
    };
    let reply = Reply::to(&turn);
    let mut usage = reply.usage(&turn);
    usage.completion += thinking.as_deref().map_or(0, super::words);
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    if request["stream"] == true {
        return stream(&mock, &request, &reply, thinking, usage, &model);
    }
    let (mut content, stop_reason) = match &reply {
        Reply::Fail(Failure::ContentFilter) => (vec![], "refusal"),
        Reply::Fail(failure) => return self::failure(*failure),
        Reply::Text(text) => (vec![json!({"type": "text", "text": text})], "end_turn"),
        Reply::ToolCall { name, arguments } => (
            vec![
                json!({"type": "text", "text": "Let me check."}),
                json!({"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": name, "input": arguments}),
            ],
            "tool_use",
        ),
    };
    if let Some(thinking) = thinking {
        content.insert(
            0,
            json!({"type": "thinking", "thinking": thinking, "signature": SIGNATURE}),
        );
    }
    mock.bill(usage);
    json_response(
        StatusCode::OK,
        &json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": usage_json(&mock, &request, usage, usage.completion)}),
    )
}

fn stream(
    mock: &Mock,
    request: &Value,
    reply: &Reply,
    thinking: Option<String>,
    usage: Usage,
    model: &str,
) -> Response {
    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let start = event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": usage_json(mock, request, usage, 1)}}),
    );
    let mut events = vec![start, event("ping", json!({"type": "ping"}))];
    // Content blocks after a thinking block start at index 1.
    let first = usize::from(thinking.is_some());
    if let Some(thinking) = thinking {
        events.push(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}})));
        for piece in pieces(&thinking) {
            events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": piece}})));
        }
        events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": SIGNATURE}})));
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ));
    }
    let stop_reason = match reply {
        Reply::Fail(Failure::Overloaded) => {
            events.push(event("error", json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})));
            return response(
                StatusCode::OK,
                "text/event-stream",
                stream_body(events, mock.config.chunk_gap),
            );
        }
        Reply::Fail(Failure::MidStream) => {
            mock.bill(Usage {
                prompt: usage.prompt,
                completion: 1,
            });
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": first, "content_block": {"type": "text", "text": ""}})));
            events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": first, "delta": {"type": "text_delta", "text": "Partial"}})));
            return response(StatusCode::OK, "text/event-stream", broken_body(events));
        }
        Reply::Fail(failure) => return self::failure(*failure),
        Reply::Text(text) => {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": first, "content_block": {"type": "text", "text": ""}})));
            for piece in pieces(text) {
                events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": first, "delta": {"type": "text_delta", "text": piece}})));
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": first}),
            ));
            "end_turn"
        }
        Reply::ToolCall { name, arguments } => {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": first, "content_block": {"type": "tool_use", "id": "toolu_01T1", "name": name, "input": {}}})));
            let arguments = arguments.to_string();
            let (head, tail) = arguments.split_at(arguments.len() / 2);
            for fragment in [head, tail] {
                events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": first, "delta": {"type": "input_json_delta", "partial_json": fragment}})));
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": first}),
            ));
            "tool_use"
        }
    };
    events.push(event("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": usage.completion}})));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    mock.bill(usage);
    response(
        StatusCode::OK,
        "text/event-stream",
        stream_body(events, mock.config.chunk_gap),
    )
}
