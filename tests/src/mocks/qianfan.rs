//! Baidu Qianfan's native v1 API: the OAuth token exchange, the model as a
//! path segment, `access_token` in the query, errors as `error_code` in HTTP
//! 200 bodies (a stream's error is a plain JSON body), strict alternation with
//! an odd number of messages, temperature in (0, 1], `data:` events ending
//! with `is_end: true` and no `[DONE]`, cumulative usage.

use super::{
    broken_body, json_response, pieces, response, stream_body, Failure, Mock, Reply, Shared, Turn,
};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

pub fn routes() -> Router<Arc<Mock>> {
    Router::new()
        .route("/oauth/2.0/token", post(token))
        .route(
            "/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/{endpoint}",
            post(chat),
        )
        .route(
            "/rpc/2.0/ai_custom/v1/wenxinworkshop/embeddings/{model}",
            post(embeddings),
        )
}

/// Baidu answers failures with HTTP 200 and a code in the body.
fn error(code: i64, message: &str) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"error_code": code, "error_msg": message}),
    )
}

fn failure(failure: Failure) -> Response {
    match failure {
        Failure::Garbage => super::garbage(),
        Failure::RateLimited { .. } => error(18, "Open api qps request limit reached"),
        Failure::Overloaded | Failure::Unavailable => {
            error(336100, "system is busy, please try again later")
        }
        Failure::Unauthorized => error(110, "Access token invalid or no longer valid"),
        Failure::ContextLength => error(336007, "the max length of current question is 4800"),
        Failure::ContentFilter => error(336003, "sensitive content detected"),
        Failure::Server | Failure::MidStream => error(336000, "Internal error"),
    }
}

async fn token(
    State(mock): Shared,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    mock.saw(&uri, &headers, b"");
    let config = &mock.config;
    let valid = query
        .get("grant_type")
        .is_some_and(|g| g == "client_credentials")
        && query.get("client_id") == Some(&config.api_key)
        && query.get("client_secret") == Some(&config.secret_key);
    if !valid {
        return json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_client", "error_description": "unknown client id"}),
        );
    }
    let token = format!("24.{}", uuid::Uuid::new_v4().simple());
    if let Ok(mut tokens) = mock.stats.tokens.lock() {
        tokens.push(token.clone());
    }
    json_response(
        StatusCode::OK,
        &json!({"refresh_token": "25.r", "expires_in": 2592000, "session_key": "s", "access_token": token, "scope": "public", "session_secret": "x"}),
    )
}

fn token_valid(mock: &Mock, query: &HashMap<String, String>) -> bool {
    let Some(token) = query.get("access_token") else {
        return false;
    };
    mock.stats
        .tokens
        .lock()
        .is_ok_and(|tokens| tokens.contains(token))
}

async fn chat(
    State(mock): Shared,
    Path(endpoint): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    if !token_valid(&mock, &query) {
        return error(110, "Access token invalid or no longer valid");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(336001, "Invalid Argument: invalid json");
    };
    if request.get("model").is_some() {
        return error(336001, "Invalid Argument: unknown field model");
    }
    if request["temperature"]
        .as_f64()
        .is_some_and(|t| t <= 0.0 || t > 1.0)
    {
        return error(336003, "Invalid Argument: temperature range is (0, 1.0]");
    }
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    let alternating = messages.iter().enumerate().all(|(i, m)| {
        let role = m["role"].as_str().unwrap_or_default();
        if i % 2 == 0 {
            role == "user" || role == "function"
        } else {
            role == "assistant"
        }
    });
    if messages.len() % 2 == 0 || !alternating {
        return error(336006, "the length of messages must be an odd number, and the roles must alternate user/assistant");
    }
    let mut turn = Turn {
        model: endpoint.clone(),
        ..Turn::default()
    };
    turn.count(request["system"].as_str().unwrap_or_default());
    for message in &messages {
        let text = message["content"].as_str().unwrap_or_default().to_owned();
        // An assistant turn that called a function may leave its content empty.
        if text.is_empty() && message.get("function_call").is_none() {
            return error(336003, "Invalid Argument: message content can not be empty");
        }
        turn.message(message["role"].as_str().unwrap_or_default(), text);
    }
    turn.tool_names = request["functions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f["name"].as_str().map(str::to_owned))
        .collect();
    let reply = Reply::to(&turn);
    let usage = reply.usage(&turn);
    let stream = request["stream"] == true;
    let answer = |sentence: usize, result: &str, end: bool, completion: i64| {
        json!({"id": "as-bcmt5ct4iy", "object": "chat.completion", "created": 1680167072, "sentence_id": sentence, "is_end": end, "is_truncated": false,
            "result": result, "need_clear_history": false, "finish_reason": "normal",
            "usage": {"prompt_tokens": usage.prompt, "completion_tokens": completion, "total_tokens": usage.prompt + completion}})
    };
    match &reply {
        Reply::Fail(Failure::MidStream) if stream => {
            // What the partial event reported is billed.
            mock.bill(super::Usage {
                prompt: usage.prompt,
                completion: 1,
            });
            let partial = Bytes::from(format!("data: {}\n\n", answer(0, "Partial", false, 1)));
            return response(
                StatusCode::OK,
                "text/event-stream",
                broken_body(vec![partial]),
            );
        }
        // A stream request that fails is answered with a plain JSON body.
        Reply::Fail(failure) => return self::failure(*failure),
        _ => {}
    }
    mock.bill(usage);
    match (&reply, stream) {
        (Reply::ToolCall { name, arguments }, _) => {
            let mut whole = answer(0, "", true, usage.completion);
            whole["finish_reason"] = json!("function_call");
            whole["function_call"] = json!({"name": name, "arguments": arguments.to_string(), "thoughts": "I should look it up."});
            if stream {
                response(
                    StatusCode::OK,
                    "text/event-stream",
                    Bytes::from(format!("data: {whole}\n\n")),
                )
            } else {
                json_response(StatusCode::OK, &whole)
            }
        }
        (Reply::Text(text), false) => {
            let mut whole = answer(0, text, true, usage.completion);
            if let Some(fields) = whole.as_object_mut() {
                fields.remove("sentence_id");
                fields.remove("is_end");
            }
            json_response(StatusCode::OK, &whole)
        }
        (Reply::Text(text), true) => {
            let pieces = pieces(text);
            let last = pieces.len() - 1;
            let events = pieces
                .iter()
                .enumerate()
                .map(|(i, piece)| {
                    let completion = if i == last {
                        usage.completion
                    } else {
                        i as i64 + 1
                    };
                    Bytes::from(format!(
                        "data: {}\n\n",
                        answer(i, piece, i == last, completion)
                    ))
                })
                .collect();
            response(
                StatusCode::OK,
                "text/event-stream",
                stream_body(events, mock.config.chunk_gap),
            )
        }
        (Reply::Fail(_), _) => failure(Failure::Server),
    }
}

async fn embeddings(
    State(mock): Shared,
    Path(_model): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    if !token_valid(&mock, &query) {
        return error(110, "Access token invalid or no longer valid");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(336001, "Invalid Argument: invalid json");
    };
    let texts = super::openai::inputs(&request["input"]);
    let tokens: i64 = texts.iter().map(|t| super::words(t)).sum();
    mock.bill(super::Usage {
        prompt: tokens,
        completion: 0,
    });
    let data: Vec<Value> = texts.iter().enumerate().map(|(i, t)| json!({"object": "embedding", "embedding": super::openai::vector(t, 8), "index": i})).collect();
    json_response(
        StatusCode::OK,
        &json!({"id": "as-emb", "object": "embedding_list", "created": 1, "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}),
    )
}
