//! Google's Generative Language API (Gemini): `models/{model}:generateContent`
//! and `:streamGenerateContent?alt=sse`, `batchEmbedContents` for embeddings.
//! `base_url` includes the version, e.g. `https://generativelanguage.googleapis.com/v1beta`.

use super::Progress;
use super::{
    classify, invalid_answer, json_body, json_frame, secret_header, text_at, Adapter,
    StreamDecoder, UpstreamCall,
};
use crate::chat::framing::Frame;
use crate::chat::{
    arguments_string, new_id, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, Choice,
    EmbeddingsRequest, FinishReason, Part, Role, ToolCall, ToolChoice, ToolChoiceMode,
};
use crate::error::{GatewayError, ProviderError, ProviderErrorKind};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shared::provider_kind::ProviderKind;
use shared::usage::TokenUsage;
use std::collections::HashMap;

pub struct Gemini {
    base_url: String,
    api_key: HeaderValue,
}

impl Gemini {
    pub fn new(base_url: String, api_key: &str) -> Result<Self, String> {
        Ok(Gemini {
            base_url,
            api_key: secret_header(api_key)?,
        })
    }

    fn call(&self, model: &str, method: &str, body: &Value) -> Result<UpstreamCall, GatewayError> {
        let body =
            serde_json::to_vec(body).map_err(|e| GatewayError::bad_request(e.to_string(), None))?;
        Ok(UpstreamCall::json(
            format!("{}/models/{model}:{method}", self.base_url),
            Bytes::from(body),
        )
        .header("x-goog-api-key", self.api_key.clone()))
    }
}

/// Gemini takes an OpenAPI subset: keys JSON Schema has and it lacks are refused.
fn clean_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        "additionalProperties" | "$schema" | "strict" | "$id" | "$defs" | "title"
                    )
                })
                .map(|(k, v)| (k.clone(), clean_schema(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(clean_schema).collect()),
        other => other.clone(),
    }
}

fn translate(request: &ChatRequest) -> Result<Value, GatewayError> {
    request.refuse("gemini", &[])?;
    // Gemini answers tool results by function name, not by call id.
    let names: HashMap<&str, &str> = request
        .messages
        .iter()
        .flat_map(|m| m.tool_calls())
        .map(|c| (c.id.as_str(), c.function.name.as_str()))
        .collect();
    let mut contents: Vec<(&str, Vec<Value>)> = Vec::new();
    for message in &request.messages {
        let (role, parts) = match message.role {
            Role::System | Role::Developer => continue,
            Role::User => {
                let mut parts = Vec::new();
                for part in message.parts() {
                    match part {
                        Part::Text { text } if text.is_empty() => {}
                        Part::Text { text } => parts.push(json!({ "text": text })),
                        Part::ImageUrl { image_url } => {
                            let image = image_url.require_inline("gemini")?;
                            parts.push(json!({"inlineData": {"mimeType": image.media_type, "data": image.base64}}));
                        }
                    }
                }
                ("user", parts)
            }
            Role::Assistant => {
                let mut parts = Vec::new();
                let text = message.text();
                if !text.is_empty() {
                    parts.push(json!({ "text": text }));
                }
                for call in message.tool_calls() {
                    parts.push(json!({"functionCall": {"name": call.function.name, "args": call.arguments_object()}}));
                }
                ("model", parts)
            }
            Role::Tool => {
                let id = message.tool_call_id.as_deref().unwrap_or_default();
                let name = names.get(id).copied().or(message.name.as_deref()).ok_or_else(|| {
                    GatewayError::bad_request(
                        format!("Tool result {id:?} answers no tool call of an earlier assistant message."),
                        Some("messages[].tool_call_id"),
                    )
                })?;
                let text = message.text();
                let response = match serde_json::from_str::<Value>(&text) {
                    Ok(object @ Value::Object(_)) => object,
                    _ => json!({ "content": text }),
                };
                (
                    "user",
                    vec![json!({"functionResponse": {"name": name, "response": response}})],
                )
            }
        };
        if parts.is_empty() {
            continue;
        }
        match contents.last_mut() {
            Some((last, existing)) if *last == role => existing.extend(parts),
            _ => contents.push((role, parts)),
        }
    }
    let mut body = Map::new();
    if let Some(system) = request.system_prompt() {
        body.insert(
            "systemInstruction".into(),
            json!({"parts": [{"text": system}]}),
        );
    }
    body.insert(
        "contents".into(),
        contents
            .into_iter()
            .map(|(role, parts)| json!({"role": role, "parts": parts}))
            .collect(),
    );
    let mut config = Map::new();
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            config.insert(key.to_owned(), value);
        }
    };
    set("temperature", request.temperature.map(Value::from));
    set("topP", request.top_p.map(Value::from));
    set(
        "maxOutputTokens",
        request.max_output_tokens().map(Value::from),
    );
    set("candidateCount", request.n.map(Value::from));
    set("seed", request.seed.map(Value::from));
    set("presencePenalty", request.presence_penalty.map(Value::from));
    set(
        "frequencyPenalty",
        request.frequency_penalty.map(Value::from),
    );
    let stop = request.stop_sequences();
    set("stopSequences", (!stop.is_empty()).then(|| json!(stop)));
    if let Some(format) = &request.response_format {
        match format.kind.as_str() {
            "json_object" => set("responseMimeType", Some(json!("application/json"))),
            "json_schema" => {
                set("responseMimeType", Some(json!("application/json")));
                set("responseSchema", format.schema().map(clean_schema));
            }
            _ => {}
        }
    }
    if !config.is_empty() {
        body.insert("generationConfig".into(), Value::Object(config));
    }
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        let declarations: Vec<Value> = tools
            .iter()
            .map(|t| {
                let mut declaration = json!({"name": t.function.name, "parameters": clean_schema(&t.function.parameters_or_empty())});
                if let Some(description) = &t.function.description {
                    declaration["description"] = json!(description);
                }
                declaration
            })
            .collect();
        body.insert(
            "tools".into(),
            json!([{ "functionDeclarations": declarations }]),
        );
    }
    if let Some(choice) = &request.tool_choice {
        let config = match choice {
            ToolChoice::Mode(ToolChoiceMode::Auto) => json!({"mode": "AUTO"}),
            ToolChoice::Mode(ToolChoiceMode::None) => json!({"mode": "NONE"}),
            ToolChoice::Mode(ToolChoiceMode::Required) => json!({"mode": "ANY"}),
            ToolChoice::Named(named) => {
                json!({"mode": "ANY", "allowedFunctionNames": [named.function.name]})
            }
        };
        body.insert(
            "toolConfig".into(),
            json!({ "functionCallingConfig": config }),
        );
    }
    Ok(Value::Object(body))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    candidates: Vec<Candidate>,
    #[serde(default)]
    usage_metadata: Option<UsageMetadata>,
    #[serde(default)]
    model_version: Option<String>,
    #[serde(default)]
    response_id: Option<String>,
    #[serde(default)]
    prompt_feedback: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Candidate {
    #[serde(default)]
    content: Option<Content>,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    index: u32,
}

#[derive(Deserialize)]
struct Content {
    #[serde(default)]
    parts: Vec<ResponsePart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponsePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: bool,
    #[serde(default)]
    function_call: Option<FunctionCall>,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    #[serde(default)]
    args: Value,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UsageMetadata {
    #[serde(default)]
    prompt_token_count: i64,
    #[serde(default)]
    candidates_token_count: i64,
    #[serde(default)]
    thoughts_token_count: i64,
    #[serde(default)]
    cached_content_token_count: i64,
}

impl UsageMetadata {
    /// Thinking is output the caller pays for.
    fn to_openai(&self) -> TokenUsage {
        TokenUsage {
            cached_tokens: self.cached_content_token_count,
            reasoning_tokens: self.thoughts_token_count,
            ..TokenUsage::new(
                self.prompt_token_count,
                self.candidates_token_count + self.thoughts_token_count,
            )
        }
    }
}

fn finish_reason(reason: &str, called_tools: bool) -> FinishReason {
    match reason {
        "MAX_TOKENS" => FinishReason::Length,
        "SAFETY" | "RECITATION" | "BLOCKLIST" | "PROHIBITED_CONTENT" | "SPII" | "IMAGE_SAFETY" => {
            FinishReason::ContentFilter
        }
        _ if called_tools => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

/// Gemini's calls have no id: one is made up, and the name maps results back.
fn tool_call(call: FunctionCall) -> ToolCall {
    ToolCall::new(new_id("call_"), call.name, arguments_string(&call.args))
}

impl Adapter for Gemini {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Gemini
    }

    fn chat_request(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        let body = translate(request)?;
        if request.stream {
            let mut call = self.call(model, "streamGenerateContent", &body)?;
            call.uri.push_str("?alt=sse");
            Ok(call)
        } else {
            self.call(model, "generateContent", &body)
        }
    }

    fn chat_response(&self, model: &str, body: &[u8]) -> Result<ChatCompletion, ProviderError> {
        let response: Response = json_body(body)?;
        let mut choices = Vec::new();
        for candidate in response.candidates {
            let mut text = String::new();
            let mut thinking = String::new();
            let mut calls = Vec::new();
            for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                match (part.text, part.function_call) {
                    (Some(t), _) if part.thought => thinking.push_str(&t),
                    (Some(t), _) => text.push_str(&t),
                    (None, Some(call)) => calls.push(tool_call(call)),
                    (None, None) => {}
                }
            }
            let reason = finish_reason(
                candidate.finish_reason.as_deref().unwrap_or("STOP"),
                !calls.is_empty(),
            );
            let mut message = AssistantMessage::new(text, calls);
            message.reasoning_content = (!thinking.is_empty()).then_some(thinking);
            choices.push(Choice {
                index: candidate.index,
                message,
                finish_reason: Some(reason),
            });
        }
        if choices.is_empty() && response.prompt_feedback.is_some() {
            // The prompt itself was blocked: no candidate, only feedback.
            choices.push(Choice {
                index: 0,
                message: AssistantMessage::new(String::new(), Vec::new()),
                finish_reason: Some(FinishReason::ContentFilter),
            });
        }
        let mut completion = ChatCompletion::single(
            response.response_id.unwrap_or_else(|| new_id("chatcmpl-")),
            response.model_version.as_deref().unwrap_or(model),
            AssistantMessage::default(),
            None,
            response.usage_metadata.map(|u| u.to_openai()),
        );
        completion.choices = choices;
        Ok(completion)
    }

    fn stream_decoder(&self, model: &str) -> Box<dyn StreamDecoder> {
        Box::new(GeminiStream {
            progress: Progress::new(model),
            tools: 0,
        })
    }

    fn embeddings_request(
        &self,
        model: &str,
        request: &EmbeddingsRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        let requests: Vec<Value> = request
            .texts("gemini")?
            .into_iter()
            .map(|text| {
                let mut one = json!({"model": format!("models/{model}"), "content": {"parts": [{"text": text}]}});
                if let Some(dimensions) = request.dimensions {
                    one["outputDimensionality"] = json!(dimensions);
                }
                one
            })
            .collect();
        self.call(
            model,
            "batchEmbedContents",
            &json!({ "requests": requests }),
        )
    }

    fn embeddings_response(
        &self,
        body: &[u8],
    ) -> Result<(Vec<Vec<f32>>, Option<TokenUsage>), ProviderError> {
        #[derive(Deserialize)]
        struct Embeddings {
            embeddings: Vec<Embedding>,
        }
        #[derive(Deserialize)]
        struct Embedding {
            values: Vec<f32>,
        }
        let answer: Embeddings = json_body(body)?;
        // Gemini reports no usage for embeddings: the gateway estimates it.
        Ok((
            answer.embeddings.into_iter().map(|e| e.values).collect(),
            None,
        ))
    }

    fn health_probe(&self) -> Option<UpstreamCall> {
        Some(
            UpstreamCall::probe(format!("{}/models", self.base_url))
                .header("x-goog-api-key", self.api_key.clone()),
        )
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let grpc_status = text_at(&value, "/error/status");
        let message = text_at(&value, "/error/message");
        let details = value
            .pointer("/error/details")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let reason = details
            .iter()
            .find_map(|d| d.get("reason").and_then(Value::as_str))
            .unwrap_or_default();
        let kind = match (grpc_status.as_str(), reason) {
            // Gemini says "bad key" with 400 INVALID_ARGUMENT, not 401.
            (_, "API_KEY_INVALID") | ("UNAUTHENTICATED" | "PERMISSION_DENIED", _) => {
                ProviderErrorKind::Authentication
            }
            ("RESOURCE_EXHAUSTED", _) => ProviderErrorKind::RateLimited,
            ("UNAVAILABLE", _) => ProviderErrorKind::Overloaded,
            ("DEADLINE_EXCEEDED", _) => ProviderErrorKind::Timeout,
            ("NOT_FOUND", _) => ProviderErrorKind::NotFound,
            ("INVALID_ARGUMENT", _) if message.contains("exceeds the maximum number of tokens") => {
                ProviderErrorKind::ContextLengthExceeded
            }
            _ => classify(status, &[&grpc_status], &message),
        };
        let mut error = ProviderError::new(kind, message).with_retry_after(headers);
        // Gemini sends its delay as google.rpc.RetryInfo, not a header.
        if error.retry_after.is_none() {
            let delay = details
                .iter()
                .find_map(|d| d.get("retryDelay").and_then(Value::as_str));
            if let Some(seconds) = delay
                .and_then(|d| d.strip_suffix('s'))
                .and_then(|s| s.parse::<f64>().ok())
            {
                error.retry_after =
                    HeaderValue::try_from(format!("{}", seconds.ceil() as u64)).ok();
            }
        }
        error
    }
}

/// Every event is a whole response whose text parts are increments; only the
/// last has the finish reason and the full usage; the server then closes.
struct GeminiStream {
    progress: Progress,
    tools: u32,
}

impl StreamDecoder for GeminiStream {
    fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        let value: Value = json_frame(&frame)?;
        if value.get("error").is_some() {
            return Err(self_error(&value));
        }
        let response: Response = serde_json::from_value(value).map_err(|_| invalid_answer())?;
        self.progress.start(response.response_id.as_deref(), out);
        if let Some(usage) = &response.usage_metadata {
            self.progress.usage = Some(usage.to_openai());
        }
        if response.candidates.is_empty() && response.prompt_feedback.is_some() {
            self.progress.finish(FinishReason::ContentFilter, out);
        }
        for candidate in response.candidates {
            // With candidateCount > 1, each candidate is its own choice.
            let first = out.len();
            for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
                match (part.text, part.function_call) {
                    (Some(t), _) if part.thought => out.push(self.progress.builder.reasoning(t)),
                    (Some(t), _) if !t.is_empty() => out.push(self.progress.builder.text(t)),
                    (_, Some(call)) => {
                        let call = tool_call(call);
                        self.progress.tool_call(self.tools, call, out);
                        self.tools += 1;
                    }
                    _ => {}
                }
            }
            if let Some(reason) = candidate.finish_reason {
                self.progress
                    .finish(finish_reason(&reason, self.tools > 0), out);
            }
            for chunk in &mut out[first..] {
                chunk
                    .choices
                    .iter_mut()
                    .for_each(|c| c.index = candidate.index);
            }
        }
        Ok(())
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }
}

fn self_error(value: &Value) -> ProviderError {
    let message = text_at(value, "/error/message");
    ProviderError::new(
        classify(
            StatusCode::OK,
            &[&text_at(value, "/error/status")],
            &message,
        ),
        message,
    )
}

#[cfg(test)]
mod golden {
    use super::*;

    fn adapter() -> Gemini {
        Gemini::new(
            "https://generativelanguage.googleapis.com/v1beta".into(),
            "g-key",
        )
        .expect("adapter")
    }

    #[test]
    fn translates_the_request() {
        let request = ChatRequest::parse(br#"{"model":"pub","stream":true,"messages":[
            {"role":"system","content":"Be terse."},
            {"role":"user","content":"Weather?"},
            {"role":"assistant","tool_calls":[{"id":"call_9","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"call_9","content":"{\"temp_c\":20}"}],
            "max_completion_tokens":64,"stop":["END"],"response_format":{"type":"json_object"},
            "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","additionalProperties":false,"properties":{"city":{"type":"string"}}},"strict":true}}],
            "tool_choice":{"type":"function","function":{"name":"get_weather"}}}"#).expect("valid");
        let call = adapter()
            .chat_request("gemini-2.0-flash", &request)
            .expect("translated");
        assert_eq!(call.uri, "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse");
        assert_eq!(call.headers["x-goog-api-key"], "g-key");
        let body: Value = serde_json::from_slice(&call.body).expect("json");
        assert_eq!(
            body,
            json!({
            "systemInstruction": {"parts": [{"text": "Be terse."}]},
            "contents": [
                {"role": "user", "parts": [{"text": "Weather?"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp_c": 20}}}]}],
            "generationConfig": {"maxOutputTokens": 64, "stopSequences": ["END"], "responseMimeType": "application/json"},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}}})
        );
        let remote = ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"https://example.com/a.png"}}]}]}"#).expect("valid");
        assert!(adapter().chat_request("g", &remote).is_err());
    }

    #[test]
    fn translates_answers_and_streams() {
        let body = br#"{"candidates":[{"content":{"role":"model","parts":[{"text":"It is "},{"text":"20C."}]},"finishReason":"STOP","index":0}],
            "usageMetadata":{"promptTokenCount":11,"candidatesTokenCount":9,"totalTokenCount":24,"thoughtsTokenCount":4},"modelVersion":"gemini-2.0-flash","responseId":"r1"}"#;
        let answer = serde_json::to_value(adapter().chat_response("g", body).expect("answer"))
            .expect("json");
        assert_eq!(answer["choices"][0]["message"]["content"], "It is 20C.");
        assert_eq!(answer["usage"]["completion_tokens"], 13);
        assert_eq!(
            answer["usage"]["completion_tokens_details"]["reasoning_tokens"],
            4
        );

        let mut decoder = adapter().stream_decoder("g");
        let mut chunks = Vec::new();
        let frame = |data: &str| Frame {
            event: None,
            data: data.to_owned(),
        };
        decoder.decode(frame(r#"{"candidates":[{"content":{"role":"model","parts":[{"text":"Hel"}]}}],"usageMetadata":{"promptTokenCount":3},"responseId":"r2"}"#), &mut chunks).expect("ok");
        assert!(!decoder.finished());
        decoder.decode(frame(r#"{"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"name":"f","args":{}}}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":5,"totalTokenCount":8}}"#), &mut chunks).expect("ok");
        assert!(decoder.finished());
        let last = serde_json::to_value(chunks.last().expect("chunk")).expect("json");
        assert_eq!(last["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            chunks[3].choices[0]
                .delta
                .tool_calls
                .as_ref()
                .expect("calls")[0]
                .function
                .arguments
                .as_deref(),
            Some("{}")
        );
        assert_eq!(decoder.usage().map(|u| u.total_tokens), Some(8));
    }

    #[test]
    fn maps_errors_including_the_400_bad_key() {
        let bad_key = adapter().error(StatusCode::BAD_REQUEST, &HeaderMap::new(), br#"{"error":{"code":400,"message":"API key not valid.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID"}]}}"#);
        assert_eq!(bad_key.kind, ProviderErrorKind::Authentication);
        let limited = adapter().error(StatusCode::TOO_MANY_REQUESTS, &HeaderMap::new(), br#"{"error":{"code":429,"message":"Quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"26s"}]}}"#);
        assert_eq!(
            (
                limited.kind,
                limited.retry_after.as_ref().map(HeaderValue::as_bytes)
            ),
            (ProviderErrorKind::RateLimited, Some(&b"26"[..]))
        );
    }
}
