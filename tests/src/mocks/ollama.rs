//! Ollama's native API: `/api/chat` with `stream` defaulting to true, NDJSON
//! lines ending with `"done": true` (usage as `prompt_eval_count` and
//! `eval_count`), tool-call arguments as objects, errors as
//! `{"error": "text"}`, `/api/embed`.

use super::{
    broken_body, json_response, pieces, response, stream_body, Failure, Mock, Reply, Shared, Turn,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use std::sync::Arc;

pub fn routes() -> Router<Arc<Mock>> {
    Router::new()
        .route("/api/chat", post(chat))
        .route("/api/embed", post(embed))
}

fn error(status: StatusCode, message: &str) -> Response {
    json_response(status, &json!({ "error": message }))
}

fn failure(failure: Failure) -> Response {
    match failure {
        Failure::Garbage => super::garbage(),
        Failure::RateLimited { .. } => error(
            StatusCode::TOO_MANY_REQUESTS,
            "server busy, please try again. maximum pending requests exceeded",
        ),
        Failure::Overloaded | Failure::Unavailable => {
            error(StatusCode::SERVICE_UNAVAILABLE, "server overloaded")
        }
        Failure::Unauthorized => error(StatusCode::UNAUTHORIZED, "unauthorized"),
        Failure::ContextLength => error(
            StatusCode::BAD_REQUEST,
            "the input length exceeds the maximum context length",
        ),
        Failure::ContentFilter | Failure::Server | Failure::MidStream => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "llama runner process has terminated",
        ),
    }
}

async fn chat(State(mock): Shared, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid character looking for beginning of value",
        );
    };
    let Some(model) = request["model"].as_str().filter(|m| !m.is_empty()) else {
        return error(StatusCode::BAD_REQUEST, "model is required");
    };
    if model.starts_with("missing") {
        return error(
            StatusCode::NOT_FOUND,
            &format!("model \"{model}\" not found, try pulling it first"),
        );
    }
    let mut turn = Turn {
        model: model.to_owned(),
        ..Turn::default()
    };
    for message in request["messages"].as_array().into_iter().flatten() {
        let text = message["content"].as_str().unwrap_or_default().to_owned();
        turn.images += message["images"].as_array().map_or(0, Vec::len);
        turn.message(message["role"].as_str().unwrap_or_default(), text);
    }
    turn.tool_names = super::tool_names(&request["tools"]);
    let reply = Reply::to(&turn);
    let usage = reply.usage(&turn);
    let line = |message: Value, done: bool| {
        let mut line = json!({"model": model, "created_at": "2024-07-22T20:33:28.123648Z", "message": message, "done": done});
        if done {
            line["done_reason"] = json!("stop");
            line["total_duration"] = json!(4883583458u64);
            line["prompt_eval_count"] = json!(usage.prompt);
            line["eval_count"] = json!(usage.completion);
        }
        line
    };
    let mut lines = Vec::new();
    match &reply {
        Reply::Fail(Failure::MidStream) => {
            let partial = Bytes::from(format!(
                "{}\n",
                line(json!({"role": "assistant", "content": "Partial"}), false)
            ));
            return response(
                StatusCode::OK,
                "application/x-ndjson",
                broken_body(vec![partial]),
            );
        }
        Reply::Fail(failure) => return self::failure(*failure),
        Reply::Text(text) => {
            for piece in pieces(text) {
                lines.push(line(json!({"role": "assistant", "content": piece}), false));
            }
            lines.push(line(json!({"role": "assistant", "content": ""}), true));
        }
        Reply::ToolCall { name, arguments } => {
            lines.push(line(json!({"role": "assistant", "content": "", "tool_calls": [{"function": {"name": name, "arguments": arguments}}]}), false));
            lines.push(line(json!({"role": "assistant", "content": ""}), true));
        }
    }
    mock.bill(usage);
    // `stream` is true unless the request says false.
    if request["stream"] == false {
        let text: String = lines
            .iter()
            .filter_map(|l| l["message"]["content"].as_str())
            .collect();
        let mut whole = lines.pop().unwrap_or_default();
        whole["message"]["content"] = json!(text);
        if let Some(calls) = lines.iter().find_map(|l| l["message"].get("tool_calls")) {
            whole["message"]["tool_calls"] = calls.clone();
        }
        return json_response(StatusCode::OK, &whole);
    }
    let items = lines
        .into_iter()
        .map(|l| Bytes::from(format!("{l}\n")))
        .collect();
    response(
        StatusCode::OK,
        "application/x-ndjson",
        stream_body(items, mock.config.chunk_gap),
    )
}

async fn embed(State(mock): Shared, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "invalid request");
    };
    let texts = super::openai::inputs(&request["input"]);
    let dimensions = request["dimensions"].as_u64().unwrap_or(8) as usize;
    let tokens: i64 = texts.iter().map(|t| super::words(t)).sum();
    mock.bill(super::Usage {
        prompt: tokens,
        completion: 0,
    });
    let embeddings: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| super::openai::vector(t, dimensions))
        .collect();
    json_response(
        StatusCode::OK,
        &json!({"model": request["model"], "embeddings": embeddings, "prompt_eval_count": tokens}),
    )
}
