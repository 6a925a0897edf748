//! DashScope's native API: Bearer key (`InvalidApiKey` with 401), streams only
//! with `X-DashScope-SSE: enable`, raw `id:`/`event:result`/`:HTTP_STATUS/200`/
//! `data:` events with no space, cumulative usage, `finish_reason` the string
//! "null" mid-stream, whole-text-so-far chunks unless `incremental_output`,
//! and validation errors as `event:error` inside a 200 stream.

use super::{
    broken_body, header, json_response, pieces, response, stream_body, Failure, Mock, Reply,
    Shared, Turn,
};
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

const REQUEST_ID: &str = "d272255f-8c29-9b3f-8ef4-0b10e48cdf9e";

pub fn routes() -> Router<Arc<Mock>> {
    Router::new()
        .route(
            "/api/v1/services/aigc/text-generation/generation",
            post(generation),
        )
        .route(
            "/api/v1/services/embeddings/text-embedding/text-embedding",
            post(embedding),
        )
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"code": code, "message": message, "request_id": REQUEST_ID})
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = json_response(status, &error_body(code, message));
    if status == StatusCode::TOO_MANY_REQUESTS {
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from_static("7"));
    }
    response
}

/// What the real API reports for each failure: status, code, message.
fn failure_parts(failure: Failure) -> (StatusCode, &'static str, &'static str) {
    match failure {
        Failure::RateLimited { .. } => (
            StatusCode::TOO_MANY_REQUESTS,
            "Throttling.RateQuota",
            "Requests rate limit exceeded, please try again later.",
        ),
        Failure::Overloaded | Failure::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailable",
            "The service is overloaded.",
        ),
        Failure::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "InvalidApiKey",
            "Invalid API-key provided.",
        ),
        Failure::ContextLength => (
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Range of input length should be [1, 6000]",
        ),
        Failure::ContentFilter => (
            StatusCode::BAD_REQUEST,
            "DataInspectionFailed",
            "Input data may contain inappropriate content.",
        ),
        Failure::Server | Failure::MidStream | Failure::Garbage => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalError",
            "An internal error has occured, please try again later.",
        ),
    }
}

fn sse(id: usize, name: &str, status: u16, data: &Value) -> Bytes {
    Bytes::from(format!(
        "id:{id}\nevent:{name}\n:HTTP_STATUS/{status}\ndata:{data}\n\n"
    ))
}

async fn generation(State(mock): Shared, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    if header(&headers, "authorization") != format!("Bearer {}", mock.config.api_key) {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidApiKey",
            "Invalid API-key provided.",
        );
    }
    let stream = header(&headers, "x-dashscope-sse") == "enable";
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Request body is not valid JSON",
        );
    };
    let parameters = &request["parameters"];
    let validation = |message: &str| {
        if stream {
            let event = sse(1, "error", 400, &error_body("InvalidParameter", message));
            response(
                StatusCode::OK,
                "text/event-stream",
                Bytes::from(event.to_vec()),
            )
        } else {
            error(StatusCode::BAD_REQUEST, "InvalidParameter", message)
        }
    };
    if parameters["top_p"].as_f64().is_some_and(|p| p >= 1.0) {
        return validation("Range of top_p should be (0.0, 1.0)");
    }
    let mut turn = Turn {
        model: request["model"].as_str().unwrap_or_default().to_owned(),
        ..Turn::default()
    };
    for message in request["input"]["messages"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let role = message["role"].as_str().unwrap_or_default();
        let text = message["content"].as_str().unwrap_or_default().to_owned();
        if !matches!(role, "system" | "user" | "assistant" | "tool")
            || (role == "user" && text.is_empty())
        {
            return validation(
                "Role must be user or assistant and Content length must be greater than 0",
            );
        }
        turn.message(role, text);
    }
    turn.tool_names = super::tool_names(&parameters["tools"]);
    let reply = Reply::to(&turn);
    let usage = reply.usage(&turn);
    let message_format = parameters["result_format"] == "message";
    let incremental = parameters["incremental_output"] == true;
    let answer = |content: &str, tool_calls: Option<Value>, finish: &str, completion: i64| {
        let mut message = json!({"role": "assistant", "content": content});
        if let Some(calls) = tool_calls {
            message["tool_calls"] = calls;
        }
        let output = if message_format {
            json!({"choices": [{"finish_reason": finish, "message": message}]})
        } else {
            json!({"text": content, "finish_reason": finish})
        };
        json!({"output": output, "usage": {"total_tokens": usage.prompt + completion, "input_tokens": usage.prompt, "output_tokens": completion}, "request_id": REQUEST_ID})
    };
    let tool_calls = |name: &str, arguments: &Value| json!([{"function": {"name": name, "arguments": arguments.to_string()}, "index": 0, "id": "call_cec4c19d27624537b583af", "type": "function"}]);
    match &reply {
        Reply::Fail(Failure::MidStream) if stream => {
            // What the partial event reported is billed.
            mock.bill(super::Usage {
                prompt: usage.prompt,
                completion: 1,
            });
            return response(
                StatusCode::OK,
                "text/event-stream",
                broken_body(vec![sse(
                    1,
                    "result",
                    200,
                    &answer("Partial", None, "null", 1),
                )]),
            );
        }
        Reply::Fail(Failure::Garbage) => return super::garbage(),
        Reply::Fail(failure) => {
            let (status, code, message) = failure_parts(*failure);
            return if stream && status == StatusCode::BAD_REQUEST {
                validation(message)
            } else {
                error(status, code, message)
            };
        }
        _ => {}
    }
    mock.bill(usage);
    if !stream {
        return json_response(
            StatusCode::OK,
            &match &reply {
                Reply::ToolCall { name, arguments } => answer(
                    "",
                    Some(tool_calls(name, arguments)),
                    "stop",
                    usage.completion,
                ),
                Reply::Text(text) => answer(text, None, "stop", usage.completion),
                Reply::Fail(_) => Value::Null,
            },
        );
    }
    let mut events = Vec::new();
    match &reply {
        Reply::Text(text) => {
            let mut so_far = String::new();
            let pieces = pieces(text);
            for (i, piece) in pieces.iter().enumerate() {
                so_far.push_str(piece);
                let content = if incremental {
                    piece.as_str()
                } else {
                    so_far.as_str()
                };
                events.push(sse(
                    i + 1,
                    "result",
                    200,
                    &answer(content, None, "null", i as i64 + 1),
                ));
            }
            let last = if incremental { "" } else { so_far.as_str() };
            events.push(sse(
                pieces.len() + 1,
                "result",
                200,
                &answer(last, None, "stop", usage.completion),
            ));
        }
        Reply::ToolCall { name, arguments } => {
            events.push(sse(
                1,
                "result",
                200,
                &answer("", Some(tool_calls(name, arguments)), "null", 3),
            ));
            events.push(sse(
                2,
                "result",
                200,
                &answer("", None, "tool_calls", usage.completion),
            ));
        }
        Reply::Fail(_) => {}
    }
    response(
        StatusCode::OK,
        "text/event-stream",
        stream_body(events, mock.config.chunk_gap),
    )
}

async fn embedding(State(mock): Shared, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    if header(&headers, "authorization") != format!("Bearer {}", mock.config.api_key) {
        return error(
            StatusCode::UNAUTHORIZED,
            "InvalidApiKey",
            "Invalid API-key provided.",
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "Request body is not valid JSON",
        );
    };
    let texts = super::openai::inputs(&request["input"]["texts"]);
    let dimensions = request["parameters"]["dimension"].as_u64().unwrap_or(8) as usize;
    let tokens: i64 = texts.iter().map(|t| super::words(t)).sum();
    mock.bill(super::Usage {
        prompt: tokens,
        completion: 0,
    });
    // Answered in reverse order: text_index says which input each is for.
    let embeddings: Vec<Value> = texts
        .iter()
        .enumerate()
        .rev()
        .map(|(i, t)| json!({"embedding": super::openai::vector(t, dimensions), "text_index": i}))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"output": {"embeddings": embeddings}, "usage": {"total_tokens": tokens}, "request_id": REQUEST_ID}),
    )
}
