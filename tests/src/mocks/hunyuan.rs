//! Tencent Cloud API 3.0 for Hunyuan: `POST /` with `X-TC-Action`,
//! `X-TC-Version`, `X-TC-Timestamp` and a TC3-HMAC-SHA256 `Authorization`
//! checked against the exact body bytes and the `Host` header; unknown
//! parameters refused (there is no max-tokens field); errors as
//! `Response.Error` in HTTP 200 bodies, also for stream requests; streams of
//! unwrapped `data:` events that end with `FinishReason` and no `[DONE]`.

use super::{
    broken_body, header, json_response, pieces, response, stream_body, Failure, Mock, Reply,
    Shared, Turn,
};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use bytes::Bytes;
use data_plane::providers::hunyuan::sign;
use serde_json::{json, Value};
use std::sync::Arc;

const REQUEST_ID: &str = "5d4e0f3a-9b1c-4f5e-8a7d-2c3b4a5d6e7f";
const NOTE: &str = "以上内容为AI生成，不代表开发者立场，请勿删除或修改本标记";
const CHAT_PARAMETERS: &[&str] = &[
    "Model",
    "Messages",
    "Stream",
    "StreamModeration",
    "TopP",
    "Temperature",
    "EnableEnhancement",
    "Tools",
    "ToolChoice",
    "CustomTool",
    "SearchInfo",
    "Citation",
    "EnableSpeedSearch",
    "EnableMultimedia",
    "EnableDeepSearch",
    "Seed",
    "Stop",
    "EnableRecommendedQuestions",
];

pub fn routes() -> Router<Arc<Mock>> {
    Router::new().route("/", post(action))
}

/// Tencent reports every failure with HTTP 200.
fn error(code: &str, message: &str) -> Response {
    json_response(
        StatusCode::OK,
        &json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": REQUEST_ID}}),
    )
}

fn failure(failure: Failure) -> Response {
    match failure {
        Failure::Garbage => super::garbage(),
        Failure::RateLimited { .. } => error(
            "RequestLimitExceeded",
            "Your current request frequency exceeds the limit.",
        ),
        Failure::Overloaded | Failure::Unavailable => error(
            "FailedOperation.EngineServerError",
            "The engine is overloaded.",
        ),
        Failure::Unauthorized => error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated.",
        ),
        Failure::ContextLength => error(
            "InvalidParameterValue",
            "unreachable: over-long input is truncated",
        ),
        Failure::ContentFilter => error(
            "OperationDenied.TextIllegalDetected",
            "Text contains illegal content.",
        ),
        Failure::Server | Failure::MidStream => {
            error("FailedOperation.EngineServerError", "Engine server error.")
        }
    }
}

fn verify(mock: &Mock, headers: &HeaderMap, body: &[u8]) -> Result<(), Response> {
    if header(headers, "x-tc-version") != "2023-09-01" {
        return Err(error(
            "InvalidParameter",
            "X-TC-Version is missing or unsupported.",
        ));
    }
    if header(headers, "content-type") != "application/json" {
        return Err(error(
            "InvalidParameter",
            "Content-Type must be application/json.",
        ));
    }
    let Ok(timestamp) = header(headers, "x-tc-timestamp").parse::<i64>() else {
        return Err(error(
            "MissingParameter",
            "The request is missing a required parameter `X-TC-Timestamp`.",
        ));
    };
    if (shared::time::now_ms() / 1000 - timestamp).abs() > 300 {
        return Err(error("AuthFailure.SignatureExpire", "Signature expired."));
    }
    let authorization = header(headers, "authorization");
    let presented_id = authorization
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').next())
        .unwrap_or_default();
    if presented_id != mock.config.secret_id {
        return Err(error(
            "AuthFailure.SecretIdNotFound",
            "The SecretId is not found.",
        ));
    }
    let expected = sign(
        &mock.config.secret_id,
        &mock.config.secret_key,
        header(headers, "host"),
        timestamp,
        body,
    );
    if authorization != expected {
        return Err(error(
            "AuthFailure.SignatureFailure",
            "The provided credentials could not be validated.",
        ));
    }
    Ok(())
}

async fn action(State(mock): Shared, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    mock.saw(&uri, &headers, &body);
    super::pace(&body).await;
    if let Err(refused) = verify(&mock, &headers, &body) {
        return refused;
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error("InvalidParameter", "The request body is not valid JSON.");
    };
    match header(&headers, "x-tc-action") {
        "ChatCompletions" => chat(&mock, &request),
        "GetEmbedding" => embedding(&mock, &request),
        other => error(
            "InvalidAction",
            &format!("The action `{other}` does not exist."),
        ),
    }
}

fn chat(mock: &Mock, request: &Value) -> Response {
    if let Some(unknown) = request
        .as_object()
        .and_then(|o| o.keys().find(|k| !CHAT_PARAMETERS.contains(&k.as_str())))
    {
        return error(
            "UnknownParameter",
            &format!("The parameter `{unknown}` is not recognized."),
        );
    }
    let messages = request["Messages"].as_array().cloned().unwrap_or_default();
    if messages.is_empty() || messages.len() > 40 {
        return error(
            "InvalidParameterValue.Messages",
            "Messages must hold 1 to 40 messages.",
        );
    }
    let mut turn = Turn {
        model: request["Model"].as_str().unwrap_or_default().to_owned(),
        ..Turn::default()
    };
    for (i, message) in messages.iter().enumerate() {
        let role = message["Role"].as_str().unwrap_or_default();
        if role == "system" && i != 0 {
            return error(
                "InvalidParameter",
                "The system message may only come first.",
            );
        }
        let text = match message["Content"].as_str() {
            Some(text) => text.to_owned(),
            None => {
                let contents = message["Contents"].as_array().cloned().unwrap_or_default();
                turn.images += contents.iter().filter(|c| c["Type"] == "image_url").count();
                contents.iter().filter_map(|c| c["Text"].as_str()).collect()
            }
        };
        turn.message(role, text);
    }
    for tool in request["Tools"].as_array().into_iter().flatten() {
        if !tool["Function"]["Parameters"].is_string() {
            return error(
                "InvalidParameter",
                "Tools.Function.Parameters must be a JSON string.",
            );
        }
        turn.tool_names
            .extend(tool["Function"]["Name"].as_str().map(str::to_owned));
    }
    let reply = match Reply::to(&turn) {
        // Tencent truncates the earliest content of an over-long input instead of failing.
        Reply::Fail(Failure::ContextLength) => Reply::Text(format!("Echo: {}", turn.user_text)),
        reply => reply,
    };
    let usage = reply.usage(&turn);
    let usage_of = |completion: i64| json!({"PromptTokens": usage.prompt, "CompletionTokens": completion, "TotalTokens": usage.prompt + completion});
    let tool_calls = |name: &str, arguments: &Value| json!([{"Id": "call_hy01", "Type": "function", "Function": {"Name": name, "Arguments": arguments.to_string()}}]);
    let stream = request["Stream"] == true;
    let event = |delta: Value, finish: &str, completion: i64| {
        Bytes::from(format!(
            "data: {}\n\n",
            json!({"Note": NOTE, "Choices": [{"Index": 0, "Delta": delta, "FinishReason": finish}], "Created": 1715000000, "Id": REQUEST_ID, "Usage": usage_of(completion)})
        ))
    };
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
                broken_body(vec![event(
                    json!({"Role": "assistant", "Content": "Partial"}),
                    "",
                    1,
                )]),
            );
        }
        Reply::Fail(failure) => return self::failure(*failure),
        _ => {}
    }
    mock.bill(usage);
    if !stream {
        let (message, finish) = match &reply {
            Reply::ToolCall { name, arguments } => (
                json!({"Role": "assistant", "Content": "", "ToolCalls": tool_calls(name, arguments)}),
                "tool_calls",
            ),
            Reply::Text(text) => (json!({"Role": "assistant", "Content": text}), "stop"),
            Reply::Fail(_) => (Value::Null, ""),
        };
        return json_response(
            StatusCode::OK,
            &json!({"Response": {"RequestId": REQUEST_ID, "Note": NOTE, "Id": REQUEST_ID, "Created": 1715000000,
            "Choices": [{"Index": 0, "FinishReason": finish, "Message": message}], "Usage": usage_of(usage.completion)}}),
        );
    }
    let mut events = Vec::new();
    match &reply {
        Reply::Text(text) => {
            for (i, piece) in pieces(text).into_iter().enumerate() {
                events.push(event(
                    json!({"Role": "assistant", "Content": piece}),
                    "",
                    i as i64 + 1,
                ));
            }
            events.push(event(
                json!({"Role": "assistant", "Content": ""}),
                "stop",
                usage.completion,
            ));
        }
        Reply::ToolCall { name, arguments } => {
            events.push(event(json!({"Role": "assistant", "Content": "", "ToolCalls": tool_calls(name, arguments)}), "", 3));
            events.push(event(
                json!({"Role": "assistant", "Content": ""}),
                "tool_calls",
                usage.completion,
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

fn embedding(mock: &Mock, request: &Value) -> Response {
    let texts = super::openai::inputs(&request["InputList"]);
    if texts.is_empty() {
        return error(
            "MissingParameter",
            "The request is missing a required parameter `InputList`.",
        );
    }
    let tokens: i64 = texts.iter().map(|t| super::words(t)).sum();
    mock.bill(super::Usage {
        prompt: tokens,
        completion: 0,
    });
    let data: Vec<Value> = texts.iter().enumerate().map(|(i, t)| json!({"Embedding": super::openai::vector(t, 8), "Index": i, "Object": "embedding"})).collect();
    json_response(
        StatusCode::OK,
        &json!({"Response": {"Data": data, "Usage": {"PromptTokens": tokens, "TotalTokens": tokens}, "RequestId": REQUEST_ID}}),
    )
}
