//! `POST /v1/messages`: Anthropic's Messages API as an ingress, so the
//! `anthropic` SDK and tools built on it can use any provider. To Anthropic
//! a request goes as it came (see `attempt`); for any other provider it is
//! translated to the OpenAI form every adapter takes, and answers, streams
//! and errors are translated back into Anthropic's.

use crate::chat::{
    ChatChunk, ChatCompletion, ChatRequest, Content, FinishReason, ImageUrl, Message,
    NamedFunction, NamedToolChoice, Part, Role, Stop, StreamOptions, Tool, ToolCall, ToolChoice,
    ToolChoiceMode,
};
use crate::error::GatewayError;
use crate::providers::anthropic::{
    self as wire, AnthropicRole, AnthropicUsage, Block, ImageSource, MessagesRequest,
    MessagesResponse,
};
use crate::relay::translate::Egress;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use bytes::BytesMut;
use serde_json::{json, Value};
use shared::usage::TokenUsage;

pub fn parse(body: &[u8]) -> Result<MessagesRequest, GatewayError> {
    serde_json::from_slice(body)
        .map_err(|e| GatewayError::bad_request(format!("Invalid messages request: {e}"), None))
}

/// The client's headers that Anthropic reads (passed on to it, unread by others).
pub fn client_headers(headers: &HeaderMap) -> HeaderMap {
    wire::CLIENT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.clone();
            Some((axum::http::HeaderName::from_static(name), value))
        })
        .collect()
}

/// The Messages request as an OpenAI chat request, for a provider of
/// `provider_kind`: Anthropic's own fields it cannot honour are refused.
pub fn to_chat(request: MessagesRequest, provider_kind: &str) -> Result<ChatRequest, GatewayError> {
    let unsupported = |param: &str| GatewayError::Unsupported {
        param: param.to_owned(),
        provider_kind: provider_kind.to_owned(),
    };
    if let Some(name) = request.extra.keys().next() {
        return Err(unsupported(name));
    }
    if request.top_k.is_some() {
        return Err(unsupported("top_k"));
    }
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(Message::new(Role::System, system.text()));
    }
    for message in &request.messages {
        let blocks = message.content.blocks();
        match message.role {
            AnthropicRole::User => {
                let mut parts = Vec::new();
                for block in blocks {
                    match block {
                        Block::Text { text } => parts.push(Part::Text { text }),
                        Block::Image { source } => parts.push(Part::ImageUrl {
                            image_url: ImageUrl {
                                url: match source {
                                    ImageSource::Base64 { media_type, data } => {
                                        format!("data:{media_type};base64,{data}")
                                    }
                                    ImageSource::Url { url } => url,
                                },
                                detail: None,
                            },
                        }),
                        // Tool results are messages of their own in OpenAI's form.
                        Block::ToolResult {
                            tool_use_id,
                            content,
                            ..
                        } => {
                            let text = content
                                .map(|c| {
                                    c.blocks()
                                        .into_iter()
                                        .filter_map(|b| match b {
                                            Block::Text { text } => Some(text),
                                            _ => None,
                                        })
                                        .collect::<Vec<_>>()
                                        .join("")
                                })
                                .unwrap_or_default();
                            let mut result = Message::new(Role::Tool, text);
                            result.tool_call_id = Some(tool_use_id);
                            messages.push(result);
                        }
                        Block::ToolUse { .. } | Block::Thinking { .. } | Block::Other => {
                            return Err(GatewayError::bad_request(
                                "A user message may hold text, image and tool_result blocks only.",
                                Some("messages"),
                            ))
                        }
                    }
                }
                if !parts.is_empty() {
                    let mut user = Message::new(Role::User, String::new());
                    user.content = Some(Content::Parts(parts));
                    messages.push(user);
                }
            }
            AnthropicRole::Assistant => {
                let mut text = String::new();
                let mut calls = Vec::new();
                for block in blocks {
                    match block {
                        Block::Text { text: t } => text.push_str(&t),
                        Block::ToolUse { id, name, input } => {
                            calls.push(ToolCall::new(
                                id,
                                name,
                                crate::chat::arguments_string(&input),
                            ));
                        }
                        // Earlier thinking is the provider's own; it is not replayed.
                        Block::Thinking { .. } | Block::Other => {}
                        Block::Image { .. } | Block::ToolResult { .. } => {
                            return Err(GatewayError::bad_request(
                                "An assistant message may hold text and tool_use blocks only.",
                                Some("messages"),
                            ))
                        }
                    }
                }
                let mut assistant = Message::new(Role::Assistant, text);
                assistant.tool_calls = (!calls.is_empty()).then_some(calls);
                messages.push(assistant);
            }
        }
    }
    let tool_choice = request
        .tool_choice
        .as_ref()
        .map(|choice| match choice.kind.as_str() {
            "any" => ToolChoice::Mode(ToolChoiceMode::Required),
            "none" => ToolChoice::Mode(ToolChoiceMode::None),
            "tool" => ToolChoice::Named(NamedToolChoice {
                kind: "function".into(),
                function: NamedFunction {
                    name: choice.name.clone().unwrap_or_default(),
                },
            }),
            _ => ToolChoice::Mode(ToolChoiceMode::Auto),
        });
    let parallel = request
        .tool_choice
        .as_ref()
        .and_then(|c| c.disable_parallel_tool_use)
        .map(|disable| !disable);
    Ok(ChatRequest {
        model: request.model,
        messages,
        max_tokens: Some(request.max_tokens),
        temperature: request.temperature,
        top_p: request.top_p,
        stop: request.stop_sequences.map(Stop::Many),
        user: request
            .metadata
            .as_ref()
            .and_then(|m| m.get("user_id"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        tools: request.tools.map(|tools| {
            tools
                .into_iter()
                .map(|t| Tool {
                    kind: "function".into(),
                    function: crate::chat::FunctionDef {
                        name: t.name,
                        description: t.description,
                        parameters: Some(t.input_schema),
                        strict: None,
                    },
                })
                .collect()
        }),
        tool_choice,
        parallel_tool_calls: parallel,
        stream: request.stream,
        stream_options: request.stream.then_some(StreamOptions {
            include_usage: true,
        }),
        ..ChatRequest::default()
    })
}

fn message_id(id: &str) -> String {
    if id.starts_with("msg_") {
        id.to_owned()
    } else {
        format!("msg_{}", id.trim_start_matches("chatcmpl-"))
    }
}

/// An OpenAI answer as an Anthropic message.
pub fn render(completion: ChatCompletion, model: &str) -> MessagesResponse {
    let choice = completion.choices.into_iter().next();
    let mut content = Vec::new();
    let mut reason = FinishReason::Stop;
    if let Some(choice) = choice {
        reason = choice.finish_reason.unwrap_or(FinishReason::Stop);
        if let Some(thinking) = choice.message.reasoning_content.filter(|t| !t.is_empty()) {
            content.push(Block::Thinking {
                thinking,
                signature: None,
            });
        }
        if let Some(text) = choice.message.content.filter(|t| !t.is_empty()) {
            content.push(Block::Text { text });
        }
        for call in choice.message.tool_calls.unwrap_or_default() {
            content.push(Block::ToolUse {
                input: call.arguments_object(),
                id: wire::sanitize_tool_id(&call.id),
                name: call.function.name,
            });
        }
    }
    MessagesResponse {
        id: message_id(&completion.id),
        kind: "message".into(),
        role: "assistant".into(),
        model: model.to_owned(),
        content,
        stop_reason: Some(wire::stop_reason(reason).to_owned()),
        stop_sequence: None,
        usage: AnthropicUsage::from_openai(&completion.usage.unwrap_or_default()),
    }
}

/// Anthropic's error types by HTTP status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        504 => "timeout_error",
        _ => "api_error",
    }
}

fn error_json(error: &GatewayError) -> Value {
    let mut body = json!({"type": "error", "error": {"type": error_type(error.status()), "message": error.to_string()}});
    if let Some(attempts) = error.attempts_json() {
        body["error"]["attempts"] = attempts;
    }
    body
}

/// The error answer in Anthropic's format, with the same status and `retry-after`.
pub fn error_response(error: GatewayError) -> Response {
    error.response_with(error_json(&error))
}

fn event(out: &mut BytesMut, name: &str, data: &Value) {
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\n");
    crate::relay::sse_data(out, data);
}

#[derive(PartialEq, Eq)]
enum OpenBlock {
    None,
    Text,
    Thinking,
    Tool(u32),
}

/// OpenAI chunks as Anthropic's event sequence: message_start, content
/// blocks (start, deltas, stop), message_delta with the stop reason and
/// usage, message_stop.
pub struct AnthropicEgress {
    model: String,
    started: bool,
    block: OpenBlock,
    next_index: u32,
    stop_reason: Option<FinishReason>,
}

impl AnthropicEgress {
    pub fn new(model: String) -> Self {
        AnthropicEgress {
            model,
            started: false,
            block: OpenBlock::None,
            next_index: 0,
            stop_reason: None,
        }
    }

    fn close_block(&mut self, out: &mut BytesMut) {
        if self.block != OpenBlock::None {
            event(
                out,
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": self.next_index - 1}),
            );
            self.block = OpenBlock::None;
        }
    }

    fn open_block(&mut self, block: OpenBlock, content_block: Value, out: &mut BytesMut) {
        self.close_block(out);
        event(
            out,
            "content_block_start",
            &json!({"type": "content_block_start", "index": self.next_index, "content_block": content_block}),
        );
        self.next_index += 1;
        self.block = block;
    }

    fn delta(&self, delta: Value, out: &mut BytesMut) {
        event(
            out,
            "content_block_delta",
            &json!({"type": "content_block_delta", "index": self.next_index - 1, "delta": delta}),
        );
    }
}

impl Egress for AnthropicEgress {
    fn chunk(&mut self, chunk: ChatChunk, out: &mut BytesMut) {
        if !self.started {
            self.started = true;
            event(
                out,
                "message_start",
                &json!({"type": "message_start", "message": {
                "id": message_id(&chunk.id), "type": "message", "role": "assistant", "content": [],
                "model": self.model, "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0}}}),
            );
        }
        for choice in chunk.choices.into_iter().filter(|c| c.index == 0) {
            let delta = choice.delta;
            if let Some(thinking) = delta.reasoning_content.filter(|t| !t.is_empty()) {
                if self.block != OpenBlock::Thinking {
                    self.open_block(
                        OpenBlock::Thinking,
                        json!({"type": "thinking", "thinking": ""}),
                        out,
                    );
                }
                self.delta(json!({"type": "thinking_delta", "thinking": thinking}), out);
            }
            if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                if self.block != OpenBlock::Text {
                    self.open_block(OpenBlock::Text, json!({"type": "text", "text": ""}), out);
                }
                self.delta(json!({"type": "text_delta", "text": text}), out);
            }
            for call in delta.tool_calls.unwrap_or_default() {
                if let Some(id) = call.id {
                    let block = json!({"type": "tool_use", "id": wire::sanitize_tool_id(&id),
                        "name": call.function.name.clone().unwrap_or_default(), "input": {}});
                    self.open_block(OpenBlock::Tool(call.index), block, out);
                }
                let fragment = call.function.arguments.unwrap_or_default();
                if !fragment.is_empty() && self.block == OpenBlock::Tool(call.index) {
                    self.delta(
                        json!({"type": "input_json_delta", "partial_json": fragment}),
                        out,
                    );
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.stop_reason = Some(reason);
            }
        }
    }

    fn end(&mut self, usage: Option<TokenUsage>, out: &mut BytesMut) {
        self.close_block(out);
        let usage = AnthropicUsage::from_openai(&usage.unwrap_or_default());
        event(
            out,
            "message_delta",
            &json!({"type": "message_delta",
            "delta": {"stop_reason": wire::stop_reason(self.stop_reason.unwrap_or(FinishReason::Stop)), "stop_sequence": null},
            "usage": usage}),
        );
        event(out, "message_stop", &json!({"type": "message_stop"}));
    }

    fn error(&mut self, error: &GatewayError, out: &mut BytesMut) {
        event(out, "error", &error_json(error));
    }
}

#[cfg(test)]
mod golden {
    use super::*;
    use crate::chat::ChunkBuilder;

    #[test]
    fn translates_a_messages_request() {
        let request = parse(br#"{"model":"claude","max_tokens":100,"system":[{"type":"text","text":"Be terse."}],
            "messages":[{"role":"user","content":"Weather?"},
              {"role":"assistant","content":[{"type":"text","text":"Checking."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}]},
              {"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":"20C"},{"type":"text","text":"And?"}]}],
            "tools":[{"name":"get_weather","input_schema":{"type":"object"}}],"tool_choice":{"type":"any","disable_parallel_tool_use":true},"stream":true}"#).expect("valid");
        let chat =
            serde_json::to_value(to_chat(request, "openai").expect("translated")).expect("json");
        assert_eq!(
            chat,
            json!({"model": "claude", "max_tokens": 100, "stream": true, "stream_options": {"include_usage": true},
            "messages": [
                {"role": "system", "content": "Be terse."},
                {"role": "user", "content": [{"type": "text", "text": "Weather?"}]},
                {"role": "assistant", "content": "Checking.", "tool_calls": [{"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
                {"role": "tool", "content": "20C", "tool_call_id": "toolu_1"},
                {"role": "user", "content": [{"type": "text", "text": "And?"}]}],
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "tool_choice": "required", "parallel_tool_calls": false})
        );
    }

    #[test]
    fn streams_anthropic_events_from_openai_chunks() {
        let builder = ChunkBuilder::new("chatcmpl-1".into(), "gpt".into());
        let mut egress = AnthropicEgress::new("claude".into());
        let mut out = BytesMut::new();
        for chunk in [
            builder.role(),
            builder.text("Hi".into()),
            builder.tool_call_start(0, "call_1".into(), "f".into()),
            builder.tool_arguments(0, "{\"a\":1}".into()),
            builder.finish(FinishReason::ToolCalls),
        ] {
            egress.chunk(chunk, &mut out);
        }
        egress.end(Some(TokenUsage::new(5, 7)), &mut out);
        let text = String::from_utf8(out.to_vec()).expect("utf8");
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("event: "))
            .collect();
        assert_eq!(
            names,
            [
                "message_start",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "content_block_start",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        assert!(
            text.contains(r#""stop_reason":"tool_use""#) && text.contains(r#""output_tokens":7"#),
            "{text}"
        );
    }

    #[test]
    fn errors_take_anthropics_shape() {
        let response = error_response(GatewayError::MissingKey);
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            error_json(&GatewayError::MissingKey)["error"]["type"],
            "authentication_error"
        );
    }
}
