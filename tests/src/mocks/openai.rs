//! OpenAI's wire format and the compatible APIs' variants: Azure (deployment
//! path, `api-version`, `api-key`, a first stream chunk with no choices),
//! DeepSeek (blank lines before JSON, `: keep-alive` comments), vLLM (flat
//! error objects), Ark, Qianfan v2, DashScope compatible mode, Hunyuan's and
//! Ollama's `/v1`.

use super::{
    broken_body, header, json_response, pieces, response, stream_body, Failure, Mock, Reply,
    Shared, Turn, Usage,
};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use shared::provider_kind::ProviderKind;
use std::collections::HashMap;
use std::sync::Arc;

pub fn routes(kind: ProviderKind) -> Router<Arc<Mock>> {
    let prefix = match kind {
        ProviderKind::AzureOpenai => "/openai/deployments/{deployment}",
        ProviderKind::Qianfan => "/v2",
        ProviderKind::Ark => "/api/v3",
        ProviderKind::Dashscope => "/compatible-mode/v1",
        _ => "/v1",
    };
    let mut router = Router::new()
        .route(&format!("{prefix}/chat/completions"), post(chat))
        .route(&format!("{prefix}/embeddings"), post(embeddings))
        .route(&format!("{prefix}/completions"), post(completions))
        .route(&format!("{prefix}/responses"), post(responses));
    if kind == ProviderKind::Deepseek {
        // DeepSeek serves its API at the root as well as under /v1.
        router = router.route("/chat/completions", post(chat));
    }
    if kind != ProviderKind::AzureOpenai {
        router = router.route(&format!("{prefix}/models"), get(models));
    }
    router
}

fn error_body(
    kind: ProviderKind,
    status: StatusCode,
    message: &str,
    kind_name: &str,
    code: &str,
) -> Value {
    match kind {
        ProviderKind::Vllm => {
            json!({"object": "error", "message": message, "type": "BadRequestError", "param": null, "code": status.as_u16()})
        }
        ProviderKind::AzureOpenai => {
            json!({"error": {"code": status.as_u16().to_string(), "message": message}})
        }
        ProviderKind::Ark => {
            json!({"error": {"code": code, "message": format!("{message} Request id: 0217"), "param": "", "type": status.canonical_reason().unwrap_or_default()}})
        }
        ProviderKind::Dashscope => {
            json!({"error": {"code": code, "message": message, "param": null, "type": kind_name}, "request_id": "81a373d6"})
        }
        _ => json!({"error": {"message": message, "type": kind_name, "param": null, "code": code}}),
    }
}

fn error(
    kind: ProviderKind,
    status: StatusCode,
    message: &str,
    kind_name: &str,
    code: &str,
) -> Response {
    let mut response = json_response(status, &error_body(kind, status, message, kind_name, code));
    if matches!(status.as_u16(), 429 | 503 | 529) {
        response
            .headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("7"));
    }
    response
}

fn failure(kind: ProviderKind, failure: Failure) -> Response {
    match failure {
        Failure::Garbage => super::garbage(),
        Failure::RateLimited { retry_after_s } => {
            let mut response = error(kind, StatusCode::TOO_MANY_REQUESTS, &format!("Rate limit reached for requests. Please try again in {retry_after_s}s."), "requests", "rate_limit_exceeded");
            response.headers_mut().insert("retry-after", retry_after_s.into());
            response
        }
        Failure::Overloaded | Failure::Unavailable => error(kind, StatusCode::SERVICE_UNAVAILABLE, "That model is currently overloaded with other requests.", "server_error", "overloaded"),
        Failure::Unauthorized => unauthorized(kind),
        Failure::ContextLength => error(kind, StatusCode::BAD_REQUEST, "This model's maximum context length is 8192 tokens. However, your messages resulted in 8227 tokens.", "invalid_request_error", "context_length_exceeded"),
        Failure::ContentFilter => error(kind, StatusCode::BAD_REQUEST, "The response was filtered due to the prompt triggering content management policy.", "invalid_request_error", "content_filter"),
        Failure::Server | Failure::MidStream => error(kind, StatusCode::INTERNAL_SERVER_ERROR, "The server had an error while processing your request.", "server_error", "server_error"),
    }
}

fn unauthorized(kind: ProviderKind) -> Response {
    error(
        kind,
        StatusCode::UNAUTHORIZED,
        "Incorrect API key provided: sk-...mock.",
        "invalid_request_error",
        "invalid_api_key",
    )
}

/// Bearer auth; Azure's `api-key` and `api-version`; none for servers started without a key.
fn check(
    mock: &Mock,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
) -> Result<(), Response> {
    let config = &mock.config;
    if config.kind == ProviderKind::AzureOpenai {
        if !query.contains_key("api-version") {
            return Err(json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": {"code": "404", "message": "Resource not found"}}),
            ));
        }
        if header(headers, "api-key") != config.api_key {
            return Err(json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": {"code": "401", "message": "Access denied due to invalid subscription key or wrong API endpoint."}}),
            ));
        }
        return Ok(());
    }
    if config.api_key.is_empty()
        || header(headers, "authorization") == format!("Bearer {}", config.api_key)
    {
        Ok(())
    } else {
        Err(unauthorized(config.kind))
    }
}

fn text_of(content: &Value, turn: &mut Turn) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| {
                if p["type"] == "image_url" {
                    turn.images += 1;
                }
                p["text"].as_str()
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn turn_of(body: &Value) -> Turn {
    let mut turn = Turn {
        model: body["model"].as_str().unwrap_or_default().to_owned(),
        ..Turn::default()
    };
    for message in body["messages"].as_array().into_iter().flatten() {
        let text = text_of(&message["content"], &mut turn);
        turn.message(message["role"].as_str().unwrap_or_default(), text);
    }
    turn.tool_names = super::tool_names(&body["tools"]);
    turn
}

fn usage_json(usage: Usage) -> Value {
    json!({"prompt_tokens": usage.prompt, "completion_tokens": usage.completion, "total_tokens": usage.prompt + usage.completion,
        "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}})
}

/// What every endpoint does first: record, pace, check the caller, read the JSON.
async fn admit(
    mock: &Mock,
    uri: &Uri,
    query: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Value, Response> {
    mock.saw(uri, headers, body);
    super::pace(body).await;
    check(mock, headers, query)?;
    parse(body, mock.config.kind)
}

fn parse(body: &Bytes, kind: ProviderKind) -> Result<Value, Response> {
    serde_json::from_slice(body).map_err(|_| {
        error(
            kind,
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            "invalid_request_error",
            "invalid_json",
        )
    })
}

async fn chat(
    State(mock): Shared,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match admit(&mock, &uri, &query, &headers, &body).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let kind = mock.config.kind;
    let Some(model) = request["model"]
        .as_str()
        .map(str::to_owned)
        .or_else(|| (kind == ProviderKind::AzureOpenai).then(String::new))
    else {
        return error(
            kind,
            StatusCode::BAD_REQUEST,
            "you must provide a model parameter",
            "invalid_request_error",
            "missing_model",
        );
    };
    let mut turn = turn_of(&request);
    mock.outage_for(&mut turn);
    let reply = Reply::to(&turn);
    let usage = reply.usage(&turn);
    let model = if kind == ProviderKind::AzureOpenai {
        "gpt-4o-2024-08-06".to_owned()
    } else {
        model
    };
    let id = "chatcmpl-mock1";
    if request["stream"] == true {
        let include_usage = request["stream_options"]["include_usage"] == true;
        return stream_chat(&mock, &reply, usage, &model, id, include_usage);
    }
    let message = match &reply {
        Reply::Fail(failure) => return self::failure(kind, *failure),
        Reply::Text(text) => json!({"role": "assistant", "content": text, "refusal": null}),
        Reply::ToolCall { name, arguments } => {
            json!({"role": "assistant", "content": null, "refusal": null,
            "tool_calls": [{"id": "call_Yx8k2", "type": "function", "function": {"name": name, "arguments": arguments.to_string()}}]})
        }
    };
    let finish = if matches!(reply, Reply::ToolCall { .. }) {
        "tool_calls"
    } else {
        "stop"
    };
    mock.bill(usage);
    let answer = json!({"id": id, "object": "chat.completion", "created": 1727000000, "model": model, "system_fingerprint": "fp_mock",
        "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": finish}], "usage": usage_json(usage)});
    // DeepSeek sends blank keep-alive lines before the JSON while it is busy.
    let prefix = if kind == ProviderKind::Deepseek {
        "\n\n"
    } else {
        ""
    };
    response(
        StatusCode::OK,
        "application/json",
        format!("{prefix}{answer}"),
    )
}

fn stream_chat(
    mock: &Mock,
    reply: &Reply,
    usage: Usage,
    model: &str,
    id: &str,
    include_usage: bool,
) -> Response {
    let kind = mock.config.kind;
    let mut events: Vec<Bytes> = Vec::new();
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut chunk = json!({"id": id, "object": "chat.completion.chunk", "created": 1727000000, "model": model, "system_fingerprint": "fp_mock", "choices": choices});
        if include_usage {
            chunk["usage"] = usage.unwrap_or(Value::Null);
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let delta = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]);
    if kind == ProviderKind::Deepseek {
        events.push(Bytes::from_static(b": keep-alive\n\n"));
    }
    if kind == ProviderKind::AzureOpenai {
        events.push(Bytes::from(format!("data: {}\n\n", json!({"choices": [], "created": 0, "id": "", "model": "", "object": "", "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}]}))));
    }
    let finish = match reply {
        Reply::Fail(Failure::MidStream) => {
            events.push(chunk(
                delta(json!({"role": "assistant", "content": ""}), Value::Null),
                None,
            ));
            events.push(chunk(
                delta(json!({"content": "Partial"}), Value::Null),
                None,
            ));
            return response(StatusCode::OK, "text/event-stream", broken_body(events));
        }
        Reply::Fail(failure) => return self::failure(kind, *failure),
        Reply::Text(text) => {
            events.push(chunk(
                delta(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    Value::Null,
                ),
                None,
            ));
            for piece in pieces(text) {
                events.push(chunk(delta(json!({"content": piece}), Value::Null), None));
            }
            "stop"
        }
        Reply::ToolCall { name, arguments } => {
            events.push(chunk(delta(json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0, "id": "call_Yx8k2", "type": "function", "function": {"name": name, "arguments": ""}}]}), Value::Null), None));
            let arguments = arguments.to_string();
            let (head, tail) = arguments.split_at(arguments.len() / 2);
            for fragment in [head, tail] {
                events.push(chunk(
                    delta(
                        json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                        Value::Null,
                    ),
                    None,
                ));
            }
            "tool_calls"
        }
    };
    events.push(chunk(delta(json!({}), json!(finish)), None));
    if include_usage {
        events.push(chunk(json!([]), Some(usage_json(usage))));
        mock.bill(usage);
    }
    events.push(Bytes::from_static(b"data: [DONE]\n\n"));
    response(
        StatusCode::OK,
        "text/event-stream",
        stream_body(events, mock.config.chunk_gap),
    )
}

/// Deterministic vectors: the same text always maps to the same one.
pub fn vector(text: &str, dimensions: usize) -> Vec<f32> {
    let seed = text
        .bytes()
        .fold(7u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    (0..dimensions)
        .map(|i| ((seed.wrapping_add((i as u32).wrapping_mul(2654435761)) % 1000) as f32) / 1000.0)
        .collect()
}

pub fn inputs(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

async fn embeddings(
    State(mock): Shared,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match admit(&mock, &uri, &query, &headers, &body).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let kind = mock.config.kind;
    let texts = inputs(&request["input"]);
    if texts.is_empty() {
        return error(
            kind,
            StatusCode::BAD_REQUEST,
            "'input' is a required property",
            "invalid_request_error",
            "invalid_input",
        );
    }
    let dimensions = request["dimensions"].as_u64().unwrap_or(8) as usize;
    let base64 = request["encoding_format"] == "base64";
    let data: Vec<Value> = texts
        .iter()
        .enumerate()
        .map(|(index, text)| {
            let vector = vector(text, dimensions);
            let embedding = if base64 {
                use base64::Engine;
                json!(base64::engine::general_purpose::STANDARD.encode(
                    vector
                        .iter()
                        .flat_map(|f| f.to_le_bytes())
                        .collect::<Vec<u8>>()
                ))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    let tokens: i64 = texts.iter().map(|t| super::words(t)).sum();
    mock.bill(Usage {
        prompt: tokens,
        completion: 0,
    });
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": data, "model": request["model"], "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}

async fn completions(
    State(mock): Shared,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match admit(&mock, &uri, &query, &headers, &body).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let prompt = inputs(&request["prompt"]).join(" ");
    let text = format!(" Echo: {prompt}");
    let usage = Usage {
        prompt: super::words(&prompt).max(1),
        completion: super::words(&text),
    };
    let model = request["model"].clone();
    if request["stream"] == true {
        let include_usage = request["stream_options"]["include_usage"] == true;
        let mut events: Vec<Bytes> = pieces(&text)
            .into_iter()
            .map(|piece| Bytes::from(format!("data: {}\n\n", json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model, "choices": [{"text": piece, "index": 0, "logprobs": null, "finish_reason": null}]}))))
            .collect();
        events.push(Bytes::from(format!("data: {}\n\n", json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model, "choices": [{"text": "", "index": 0, "logprobs": null, "finish_reason": "stop"}]}))));
        if include_usage {
            mock.bill(usage);
            events.push(Bytes::from(format!("data: {}\n\n", json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model, "choices": [], "usage": usage_json(usage)}))));
        }
        events.push(Bytes::from_static(b"data: [DONE]\n\n"));
        return response(
            StatusCode::OK,
            "text/event-stream",
            stream_body(events, mock.config.chunk_gap),
        );
    }
    mock.bill(usage);
    json_response(
        StatusCode::OK,
        &json!({"id": "cmpl-mock", "object": "text_completion", "created": 1, "model": model,
        "choices": [{"text": text, "index": 0, "logprobs": null, "finish_reason": "stop"}], "usage": usage_json(usage)}),
    )
}

async fn responses(
    State(mock): Shared,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request = match admit(&mock, &uri, &query, &headers, &body).await {
        Ok(request) => request,
        Err(refused) => return refused,
    };
    let input = match &request["input"] {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let text = format!("Echo: {input}");
    let usage = Usage {
        prompt: super::words(&input).max(1),
        completion: super::words(&text),
    };
    mock.bill(usage);
    let usage_json = json!({"input_tokens": usage.prompt, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": usage.completion,
        "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": usage.prompt + usage.completion});
    let message = json!({"type": "message", "id": "msg_mock", "status": "completed", "role": "assistant", "content": [{"type": "output_text", "text": text, "annotations": []}]});
    let answer = |status: &str, output: Value, usage: Value| {
        json!({"id": "resp_mock", "object": "response", "created_at": 1, "status": status,
        "model": request["model"], "output": output, "parallel_tool_calls": true, "tool_choice": "auto", "tools": [], "usage": usage})
    };
    if request["stream"] == true {
        let event =
            |name: &str, data: Value| Bytes::from(format!("event: {name}\ndata: {data}\n\n"));
        let mut events = vec![event(
            "response.created",
            json!({"type": "response.created", "sequence_number": 0, "response": answer("in_progress", json!([]), Value::Null)}),
        )];
        for (i, piece) in pieces(&text).into_iter().enumerate() {
            events.push(event("response.output_text.delta", json!({"type": "response.output_text.delta", "sequence_number": i + 1, "item_id": "msg_mock", "output_index": 0, "content_index": 0, "delta": piece})));
        }
        events.push(event("response.completed", json!({"type": "response.completed", "sequence_number": 99, "response": answer("completed", json!([message]), usage_json)})));
        return response(
            StatusCode::OK,
            "text/event-stream",
            stream_body(events, mock.config.chunk_gap),
        );
    }
    json_response(
        StatusCode::OK,
        &answer("completed", json!([message]), usage_json),
    )
}

async fn models(State(mock): Shared, headers: HeaderMap) -> Response {
    if let Err(refused) = check(&mock, &headers, &HashMap::new()) {
        return refused;
    }
    if mock.outage("*").is_some() {
        return failure(mock.config.kind, Failure::Server);
    }
    json_response(
        StatusCode::OK,
        &json!({"object": "list", "data": [{"id": "mock-model", "object": "model", "created": 1721172741, "owned_by": "system"}]}),
    )
}
