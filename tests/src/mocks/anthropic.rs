//! Anthropic's Messages API: `x-api-key` (or Bearer) and `anthropic-version`
//! required, `max_tokens` required, no `system` role in `messages`, named SSE
//! events ending with `message_stop`, cumulative `output_tokens` in
//! `message_delta`, overload reported in-stream as `event: error`.

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
    Router::new().route("/v1/messages", post(messages))
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
    let key = &mock.config.api_key;
    let bearer = format!("Bearer {key}");
    if header(&headers, "x-api-key") != key && header(&headers, "authorization") != bearer {
        return error(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid x-api-key",
        );
    }
    if header(&headers, "anthropic-version").is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "anthropic-version: header is required",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "There was an issue with your request body: invalid JSON",
        );
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
    let turn = match turn_of(&request) {
        Ok(turn) => turn,
        Err(refused) => return refused,
    };
    let reply = Reply::to(&turn);
    let usage = reply.usage(&turn);
    let model = request["model"].as_str().unwrap_or_default().to_owned();
    if request["stream"] == true {
        return stream(&mock, &reply, usage, &model);
    }
    let (content, stop_reason) = match &reply {
        Reply::Fail(Failure::ContentFilter) => (json!([]), "refusal"),
        Reply::Fail(failure) => return self::failure(*failure),
        Reply::Text(text) => (json!([{"type": "text", "text": text}]), "end_turn"),
        Reply::ToolCall { name, arguments } => (
            json!([{"type": "text", "text": "Let me check."}, {"type": "tool_use", "id": "toolu_01A09q90qw90lq917835lq9", "name": name, "input": arguments}]),
            "tool_use",
        ),
    };
    mock.bill(usage);
    json_response(
        StatusCode::OK,
        &json!({"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant", "model": model,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": usage.prompt, "output_tokens": usage.completion, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}}),
    )
}

fn stream(mock: &Mock, reply: &Reply, usage: Usage, model: &str) -> Response {
    let event = |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
    let start = event(
        "message_start",
        json!({"type": "message_start", "message": {"id": "msg_01XFDUDYJgAACzvnptvVoYEL", "type": "message", "role": "assistant",
        "content": [], "model": model, "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": usage.prompt, "output_tokens": 1}}}),
    );
    let mut events = vec![start, event("ping", json!({"type": "ping"}))];
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
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Partial"}})));
            return response(StatusCode::OK, "text/event-stream", broken_body(events));
        }
        Reply::Fail(failure) => return self::failure(*failure),
        Reply::Text(text) => {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})));
            for piece in pieces(text) {
                events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}})));
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
            ));
            "end_turn"
        }
        Reply::ToolCall { name, arguments } => {
            events.push(event("content_block_start", json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "toolu_01T1", "name": name, "input": {}}})));
            let arguments = arguments.to_string();
            let (head, tail) = arguments.split_at(arguments.len() / 2);
            for fragment in [head, tail] {
                events.push(event("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": fragment}})));
            }
            events.push(event(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": 0}),
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
