//! Google's Generative Language API: `x-goog-api-key` (or `?key=`), a bad key
//! answered 400 `API_KEY_INVALID`, roles `user`/`model` only, no
//! `additionalProperties` in function schemas, `alt=sse` streams of whole
//! responses separated by `\r\n\r\n` that end by closing, rate limits with
//! `google.rpc.RetryInfo` and no header, blocked prompts as `promptFeedback`.

use super::{
    broken_body, header, json_response, pieces, response, stream_body, Failure, Mock, Reply,
    Shared, Turn, Usage,
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
    Router::new().route("/{version}/models/{*call}", post(models))
}

fn error(status: StatusCode, grpc: &str, message: &str, details: Value) -> Response {
    json_response(
        status,
        &json!({"error": {"code": status.as_u16(), "message": message, "status": grpc, "details": details}}),
    )
}

fn bad_request(message: &str) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        message,
        json!([]),
    )
}

fn failure(failure: Failure) -> Response {
    match failure {
        Failure::Garbage => super::garbage(),
        Failure::RateLimited { .. } => error(StatusCode::TOO_MANY_REQUESTS, "RESOURCE_EXHAUSTED", "You exceeded your current quota.",
            json!([{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "7s"}])),
        Failure::Overloaded | Failure::Unavailable => error(StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE", "The model is overloaded. Please try again later.", json!([])),
        Failure::Unauthorized => bad_key(),
        Failure::ContextLength => bad_request("The input token count (1048577) exceeds the maximum number of tokens allowed (1048576)."),
        Failure::ContentFilter | Failure::Server | Failure::MidStream => error(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL", "An internal error has occurred.", json!([])),
    }
}

fn bad_key() -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "INVALID_ARGUMENT",
        "API key not valid. Please pass a valid API key.",
        json!([{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID", "domain": "googleapis.com"}]),
    )
}

fn has_key(value: &Value, name: &str) -> bool {
    match value {
        Value::Object(map) => map.contains_key(name) || map.values().any(|v| has_key(v, name)),
        Value::Array(items) => items.iter().any(|v| has_key(v, name)),
        _ => false,
    }
}

fn turn_of(request: &Value) -> Result<Turn, Response> {
    let mut turn = Turn::default();
    for part in request["systemInstruction"]["parts"]
        .as_array()
        .into_iter()
        .flatten()
    {
        turn.count(part["text"].as_str().unwrap_or_default());
    }
    let contents = request["contents"]
        .as_array()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| {
            bad_request("* GenerateContentRequest.contents: contents is not specified")
        })?;
    for content in contents {
        let role = content["role"].as_str().unwrap_or("user");
        if role != "user" && role != "model" {
            return Err(bad_request(&format!(
                "Please use a valid role: user, model. Got: {role}"
            )));
        }
        let parts = content["parts"]
            .as_array()
            .filter(|p| !p.is_empty())
            .ok_or_else(|| {
                bad_request(
                    "* GenerateContentRequest.contents.parts: contents.parts must not be empty.",
                )
            })?;
        let mut text = String::new();
        for part in parts {
            if let Some(t) = part["text"].as_str() {
                text.push_str(t);
            } else if part.get("inlineData").is_some() {
                turn.images += 1;
            } else if let Some(response) = part.get("functionResponse") {
                let result = response["response"].to_string();
                turn.count(&result);
                turn.tool_result = Some(result);
            }
        }
        turn.count(&text);
        if role == "user" && !text.is_empty() {
            turn.user_text = text;
            turn.tool_result = None;
        }
    }
    for tool in request["tools"].as_array().into_iter().flatten() {
        for declaration in tool["functionDeclarations"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if has_key(&declaration["parameters"], "additionalProperties") {
                return Err(bad_request(
                    "Invalid JSON payload received. Unknown name \"additionalProperties\"",
                ));
            }
            turn.tool_names
                .extend(declaration["name"].as_str().map(str::to_owned));
        }
    }
    Ok(turn)
}

fn usage_json(usage: Usage) -> Value {
    json!({"promptTokenCount": usage.prompt, "candidatesTokenCount": usage.completion, "totalTokenCount": usage.prompt + usage.completion})
}

async fn models(
    State(mock): Shared,
    Path((_version, call)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    let key = header(&headers, "x-goog-api-key");
    let key = if key.is_empty() {
        query.get("key").map(String::as_str).unwrap_or_default()
    } else {
        key
    };
    if key != mock.config.api_key {
        return bad_key();
    }
    let Some((model, method)) = call.split_once(':') else {
        return error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Method not found.",
            json!([]),
        );
    };
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return bad_request("Invalid JSON payload received.");
    };
    match method {
        "generateContent" => generate(&mock, &request, model, None),
        "streamGenerateContent" => generate(
            &mock,
            &request,
            model,
            Some(query.get("alt").is_some_and(|a| a == "sse")),
        ),
        "batchEmbedContents" => embed(&request),
        _ => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Method not found.",
            json!([]),
        ),
    }
}

fn generate(mock: &Mock, request: &Value, model: &str, stream: Option<bool>) -> Response {
    let turn = match turn_of(request) {
        Ok(turn) => Turn {
            model: model.to_owned(),
            ..turn
        },
        Err(refused) => return refused,
    };
    let reply = Reply::to(&turn);
    let usage = reply.usage(&turn);
    let whole = |candidates: Value, usage: Value| json!({"candidates": candidates, "usageMetadata": usage, "modelVersion": model, "responseId": "tTCwacuEBMvnitYP06qsgQY"});
    let candidate = |parts: Value, finish: Option<&str>| {
        let mut c = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(finish) = finish {
            c["finishReason"] = json!(finish);
        }
        c
    };
    let mut answers: Vec<Value> = Vec::new();
    match &reply {
        Reply::Fail(Failure::ContentFilter) => {
            answers.push(json!({"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": {"promptTokenCount": usage.prompt, "totalTokenCount": usage.prompt}}));
        }
        Reply::Fail(Failure::MidStream) if stream.is_some() => {
            // What the partial event reported is billed.
            mock.bill(Usage {
                prompt: usage.prompt,
                completion: 0,
            });
            let first = whole(
                json!([candidate(json!([{"text": "Partial"}]), None)]),
                json!({"promptTokenCount": usage.prompt}),
            );
            return response(
                StatusCode::OK,
                "text/event-stream",
                broken_body(vec![Bytes::from(format!("data: {first}\r\n\r\n"))]),
            );
        }
        Reply::Fail(failure) => return self::failure(*failure),
        Reply::Text(text) if stream.is_some() => {
            let pieces = pieces(text);
            let last = pieces.len() - 1;
            for (i, piece) in pieces.into_iter().enumerate() {
                // Early chunks carry partial usage; the last the full counts.
                let (finish, usage) = if i == last {
                    (Some("STOP"), usage_json(usage))
                } else {
                    (None, json!({"promptTokenCount": usage.prompt}))
                };
                answers.push(whole(
                    json!([candidate(json!([{"text": piece}]), finish)]),
                    usage,
                ));
            }
        }
        Reply::Text(text) => answers.push(whole(
            json!([candidate(json!([{"text": text}]), Some("STOP"))]),
            usage_json(usage),
        )),
        Reply::ToolCall { name, arguments } => {
            answers.push(whole(
                json!([candidate(
                    json!([{"functionCall": {"name": name, "args": arguments}}]),
                    Some("STOP")
                )]),
                usage_json(usage),
            ));
        }
    }
    mock.bill(usage);
    match stream {
        None => json_response(StatusCode::OK, &answers[0]),
        Some(true) => {
            let events = answers
                .into_iter()
                .map(|a| Bytes::from(format!("data: {a}\r\n\r\n")))
                .collect();
            response(
                StatusCode::OK,
                "text/event-stream",
                stream_body(events, mock.config.chunk_gap),
            )
        }
        // Without alt=sse the stream is one JSON array, sent piece by piece.
        Some(false) => {
            let mut items: Vec<Bytes> = vec![Bytes::from_static(b"[")];
            for (i, answer) in answers.into_iter().enumerate() {
                items.push(Bytes::from(format!(
                    "{}{answer}",
                    if i > 0 { ",\r\n" } else { "" }
                )));
            }
            items.push(Bytes::from_static(b"]"));
            response(
                StatusCode::OK,
                "application/json",
                stream_body(items, mock.config.chunk_gap),
            )
        }
    }
}

fn embed(request: &Value) -> Response {
    let requests = request["requests"].as_array().cloned().unwrap_or_default();
    if requests.is_empty() {
        return bad_request("* BatchEmbedContentsRequest.requests: requests must not be empty");
    }
    let embeddings: Vec<Value> = requests
        .iter()
        .map(|r| {
            let text = r["content"]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default();
            let dimensions = r["outputDimensionality"].as_u64().unwrap_or(8) as usize;
            json!({"values": super::openai::vector(text, dimensions)})
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "embeddings": embeddings }))
}
