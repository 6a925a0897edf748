//! Ollama's native API: `/api/chat` streaming NDJSON (no SSE, no `[DONE]`;
//! the last line has `"done": true`) and `/api/embed`. `base_url` is the
//! server root, e.g. `http://localhost:11434`.

use super::{
    classify, json_body, json_frame, secret_header, text_at, Adapter, Progress, StreamDecoder,
    UpstreamCall,
};
use crate::chat::framing::{Frame, Framing};
use crate::chat::{
    arguments_string, new_id, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest,
    EmbeddingsRequest, FinishReason, Part, Role, ToolCall, Unsupported,
};
use crate::error::{GatewayError, ProviderError, ProviderErrorKind};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shared::provider_kind::ProviderKind;
use shared::usage::TokenUsage;
use std::collections::HashMap;

pub struct Ollama {
    base_url: String,
    /// Ollama has no auth; a key is sent for servers behind an auth proxy.
    authorization: Option<HeaderValue>,
}

impl Ollama {
    pub fn new(base_url: String, api_key: &str) -> Result<Self, String> {
        let authorization = match api_key {
            "" => None,
            key => Some(secret_header(&format!("Bearer {key}"))?),
        };
        Ok(Ollama {
            base_url,
            authorization,
        })
    }

    fn call(&self, path: &str, body: &Value) -> Result<UpstreamCall, GatewayError> {
        let body =
            serde_json::to_vec(body).map_err(|e| GatewayError::bad_request(e.to_string(), None))?;
        let mut call = UpstreamCall::json(format!("{}{path}", self.base_url), Bytes::from(body));
        if let Some(value) = &self.authorization {
            call.headers.insert(header::AUTHORIZATION, value.clone());
        }
        Ok(call)
    }
}

fn translate(model: &str, request: &ChatRequest) -> Result<Value, GatewayError> {
    request.refuse("ollama", &[Unsupported::N])?;
    let names: HashMap<&str, &str> = request
        .messages
        .iter()
        .flat_map(|m| m.tool_calls())
        .map(|c| (c.id.as_str(), c.function.name.as_str()))
        .collect();
    let mut messages = Vec::new();
    for message in &request.messages {
        let role = match message.role {
            Role::System | Role::Developer => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let mut out = json!({"role": role, "content": message.text()});
        let images = message
            .parts()
            .into_iter()
            .filter_map(|p| match p {
                Part::ImageUrl { image_url } => Some(image_url),
                Part::Text { .. } => None,
            })
            .map(|image| image.require_inline("ollama").map(|i| i.base64.to_owned()))
            .collect::<Result<Vec<_>, _>>()?;
        if !images.is_empty() {
            out["images"] = json!(images);
        }
        if !message.tool_calls().is_empty() {
            out["tool_calls"] = message
                .tool_calls()
                .iter()
                .map(|c| json!({"function": {"name": c.function.name, "arguments": c.arguments_object()}}))
                .collect();
        }
        if let Some(name) = message.tool_call_id.as_deref().and_then(|id| names.get(id)) {
            out["tool_name"] = json!(name);
        }
        messages.push(out);
    }
    let mut options = Map::new();
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            options.insert(key.to_owned(), value);
        }
    };
    set("temperature", request.temperature.map(Value::from));
    set("top_p", request.top_p.map(Value::from));
    set("num_predict", request.max_output_tokens().map(Value::from));
    set("seed", request.seed.map(Value::from));
    set(
        "presence_penalty",
        request.presence_penalty.map(Value::from),
    );
    set(
        "frequency_penalty",
        request.frequency_penalty.map(Value::from),
    );
    let stop = request.stop_sequences();
    set("stop", (!stop.is_empty()).then(|| json!(stop)));
    // `stream` defaults to true in Ollama: always said explicitly.
    let mut body = json!({"model": model, "messages": messages, "stream": request.stream});
    if !options.is_empty() {
        body["options"] = Value::Object(options);
    }
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        body["tools"] = json!(tools);
    }
    if let Some(format) = &request.response_format {
        match (format.kind.as_str(), format.schema()) {
            ("json_schema", Some(schema)) => body["format"] = schema.clone(),
            ("json_object" | "json_schema", _) => body["format"] = json!("json"),
            _ => {}
        }
    }
    Ok(body)
}

#[derive(Deserialize)]
struct ChatLine {
    #[serde(default)]
    model: String,
    #[serde(default)]
    message: Option<LineMessage>,
    #[serde(default)]
    done: bool,
    #[serde(default)]
    done_reason: Option<String>,
    /// Absent when the prompt was cached.
    #[serde(default)]
    prompt_eval_count: i64,
    #[serde(default)]
    eval_count: i64,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize, Default)]
struct LineMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    thinking: Option<String>,
    #[serde(default)]
    tool_calls: Vec<LineToolCall>,
}

#[derive(Deserialize)]
struct LineToolCall {
    #[serde(default)]
    id: Option<String>,
    function: LineFunction,
}

#[derive(Deserialize)]
struct LineFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

impl LineToolCall {
    fn into_tool_call(self) -> ToolCall {
        ToolCall::new(
            self.id.unwrap_or_else(|| new_id("call_")),
            self.function.name,
            arguments_string(&self.function.arguments),
        )
    }
}

fn finish_reason(done_reason: Option<&str>, called_tools: bool) -> FinishReason {
    match done_reason {
        _ if called_tools => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        _ => FinishReason::Stop,
    }
}

fn line_error(message: String) -> ProviderError {
    let kind = if message.contains("not found") {
        ProviderErrorKind::NotFound
    } else {
        classify(StatusCode::INTERNAL_SERVER_ERROR, &[], &message)
    };
    ProviderError::new(kind, message)
}

impl Adapter for Ollama {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Ollama
    }

    fn chat_request(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        self.call("/api/chat", &translate(model, request)?)
    }

    fn chat_response(&self, model: &str, body: &[u8]) -> Result<ChatCompletion, ProviderError> {
        let line: ChatLine = json_body(body)?;
        if let Some(error) = line.error {
            return Err(line_error(error));
        }
        let message = line.message.unwrap_or_default();
        let calls: Vec<ToolCall> = message
            .tool_calls
            .into_iter()
            .map(LineToolCall::into_tool_call)
            .collect();
        let reason = finish_reason(line.done_reason.as_deref(), !calls.is_empty());
        let mut answer = AssistantMessage::new(message.content, calls);
        answer.reasoning_content = message.thinking.filter(|t| !t.is_empty());
        Ok(ChatCompletion::single(
            new_id("chatcmpl-"),
            if line.model.is_empty() {
                model
            } else {
                &line.model
            },
            answer,
            Some(reason),
            Some(TokenUsage::new(line.prompt_eval_count, line.eval_count)),
        ))
    }

    fn stream_decoder(&self, model: &str) -> Box<dyn StreamDecoder> {
        Box::new(OllamaStream {
            progress: Progress::new(model),
            tools: 0,
        })
    }

    fn embeddings_request(
        &self,
        model: &str,
        request: &EmbeddingsRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        let mut body = json!({"model": model, "input": request.texts("ollama")?});
        if let Some(dimensions) = request.dimensions {
            body["dimensions"] = json!(dimensions);
        }
        self.call("/api/embed", &body)
    }

    fn embeddings_response(
        &self,
        body: &[u8],
    ) -> Result<(Vec<Vec<f32>>, Option<TokenUsage>), ProviderError> {
        #[derive(Deserialize)]
        struct Embed {
            embeddings: Vec<Vec<f32>>,
            #[serde(default)]
            prompt_eval_count: Option<i64>,
        }
        let answer: Embed = json_body(body)?;
        Ok((
            answer.embeddings,
            answer.prompt_eval_count.map(|n| TokenUsage::new(n, 0)),
        ))
    }

    fn health_probe(&self) -> Option<UpstreamCall> {
        let mut call = UpstreamCall::probe(format!("{}/api/tags", self.base_url));
        if let Some(value) = &self.authorization {
            call.headers.insert(header::AUTHORIZATION, value.clone());
        }
        Some(call)
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let message = text_at(&value, "/error");
        let mut error = line_error(message);
        if error.kind != ProviderErrorKind::NotFound {
            error.kind = classify(status, &[], &error.message);
        }
        error.with_retry_after(headers)
    }
}

struct OllamaStream {
    progress: Progress,
    tools: u32,
}

impl StreamDecoder for OllamaStream {
    fn framing(&self) -> Framing {
        Framing::Ndjson
    }

    fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        let line: ChatLine = json_frame(&frame)?;
        if let Some(error) = line.error {
            return Err(line_error(error));
        }
        self.progress.start(None, out);
        let message = line.message.unwrap_or_default();
        if let Some(thinking) = message.thinking.filter(|t| !t.is_empty()) {
            out.push(self.progress.builder.reasoning(thinking));
        }
        if !message.content.is_empty() {
            out.push(self.progress.builder.text(message.content));
        }
        for call in message.tool_calls {
            let call = call.into_tool_call();
            self.progress.tool_call(self.tools, call, out);
            self.tools += 1;
        }
        if line.done {
            self.progress.usage = Some(TokenUsage::new(line.prompt_eval_count, line.eval_count));
            let reason = finish_reason(line.done_reason.as_deref(), self.tools > 0);
            self.progress.finish(reason, out);
        }
        Ok(())
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }
}

#[cfg(test)]
mod golden {
    use super::*;

    #[test]
    fn translates_request_answer_and_ndjson_stream() {
        let adapter = Ollama::new("http://127.0.0.1:11434".into(), "").expect("adapter");
        let request = ChatRequest::parse(br#"{"model":"pub","messages":[{"role":"user","content":[{"type":"text","text":"What is this?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,QUJD"}}]}],
            "max_tokens":20,"temperature":0.5,"response_format":{"type":"json_object"}}"#).expect("valid");
        let call = adapter
            .chat_request("llama3.2", &request)
            .expect("translated");
        assert_eq!(call.uri, "http://127.0.0.1:11434/api/chat");
        assert!(call.headers.get(header::AUTHORIZATION).is_none());
        let body: Value = serde_json::from_slice(&call.body).expect("json");
        assert_eq!(
            body,
            json!({"model": "llama3.2", "stream": false, "format": "json",
            "messages": [{"role": "user", "content": "What is this?", "images": ["QUJD"]}],
            "options": {"temperature": 0.5, "num_predict": 20}})
        );

        let answer = adapter.chat_response("llama3.2", br#"{"model":"llama3.2","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{"a":1}}}]},"done":true,"done_reason":"stop","eval_count":7}"#).expect("answer");
        let answer = serde_json::to_value(answer).expect("json");
        assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            answer["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"a":1}"#
        );
        assert_eq!(
            answer["usage"]["prompt_tokens"], 0,
            "an absent prompt_eval_count is zero"
        );

        let mut decoder = adapter.stream_decoder("llama3.2");
        let mut chunks = Vec::new();
        let frame = |data: &str| Frame {
            event: None,
            data: data.to_owned(),
        };
        decoder.decode(frame(r#"{"model":"llama3.2","message":{"role":"assistant","content":"The"},"done":false}"#), &mut chunks).expect("ok");
        decoder.decode(frame(r#"{"model":"llama3.2","message":{"role":"assistant","content":""},"done":true,"done_reason":"length","prompt_eval_count":26,"eval_count":259}"#), &mut chunks).expect("ok");
        assert!(decoder.finished());
        assert_eq!(
            chunks.last().and_then(|c| c.choices[0].finish_reason),
            Some(FinishReason::Length)
        );
        assert_eq!(decoder.usage().map(|u| u.total_tokens), Some(285));
        let failed = decoder.decode(
            frame(r#"{"error":"model \"x\" not found, try pulling it first"}"#),
            &mut chunks,
        );
        assert_eq!(failed.expect_err("error").kind, ProviderErrorKind::NotFound);
    }
}
