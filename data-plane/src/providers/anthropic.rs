//! Anthropic's Messages API (`POST /v1/messages`). The wire types here serve
//! both directions: this adapter (OpenAI request -> Anthropic provider) and
//! the `/v1/messages` ingress (Anthropic client -> any provider).

use super::Progress;
use super::{
    classify, invalid_answer, json_body, json_frame, secret_header, text_at, Adapter, Settings,
    StreamDecoder, UpstreamCall,
};
use crate::chat::framing::Frame;
use crate::chat::{
    arguments_string, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, FinishReason, Part,
    Role, ToolCall, ToolChoice, ToolChoiceMode, Unsupported,
};
use crate::error::{GatewayError, ProviderError, ProviderErrorKind};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::provider_kind::ProviderKind;
use shared::usage::TokenUsage;
use std::collections::HashMap;

const DEFAULT_VERSION: &str = "2023-06-01";
/// The headers of a client of Anthropic's API passed on to Anthropic.
pub const CLIENT_HEADERS: [&str; 2] = ["anthropic-version", "anthropic-beta"];
/// Anthropic requires max_tokens; OpenAI clients often leave it out.
const DEFAULT_MAX_TOKENS: u32 = 4096;

// ---- wire types

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MessagesRequest {
    pub model: String,
    pub max_tokens: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub system: Option<SystemPrompt>,
    pub messages: Vec<AnthropicMessage>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_sequences: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<AnthropicTool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<AnthropicToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum SystemPrompt {
    Text(String),
    Blocks(Vec<Block>),
}

impl SystemPrompt {
    pub fn text(&self) -> String {
        match self {
            SystemPrompt::Text(text) => text.clone(),
            SystemPrompt::Blocks(blocks) => blocks
                .iter()
                .filter_map(|b| match b {
                    Block::Text { text } => Some(text.as_str()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AnthropicRole {
    User,
    Assistant,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AnthropicMessage {
    pub role: AnthropicRole,
    pub content: AnthropicContent,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum AnthropicContent {
    Text(String),
    Blocks(Vec<Block>),
}

impl AnthropicContent {
    pub fn blocks(&self) -> Vec<Block> {
        match self {
            AnthropicContent::Text(text) => vec![Block::Text { text: text.clone() }],
            AnthropicContent::Blocks(blocks) => blocks.clone(),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    Text {
        text: String,
    },
    Image {
        source: ImageSource,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    ToolResult {
        tool_use_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        content: Option<AnthropicContent>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
    },
    Thinking {
        thinking: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        signature: Option<String>,
    },
    /// Block types the gateway does not translate (server tools, documents).
    #[serde(other)]
    Other,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ImageSource {
    Base64 { media_type: String, data: String },
    Url { url: String },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AnthropicTool {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default)]
    pub input_schema: Value,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct AnthropicToolChoice {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_parallel_tool_use: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct AnthropicUsage {
    #[serde(default)]
    pub input_tokens: i64,
    #[serde(default)]
    pub output_tokens: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<i64>,
}

impl AnthropicUsage {
    /// Anthropic counts cache reads and writes apart from `input_tokens`;
    /// OpenAI's prompt tokens include them.
    pub fn to_openai(&self) -> TokenUsage {
        let cached = self.cache_read_input_tokens.unwrap_or(0);
        let written = self.cache_creation_input_tokens.unwrap_or(0);
        TokenUsage {
            cached_tokens: cached,
            cache_write_tokens: written,
            ..TokenUsage::new(self.input_tokens + written + cached, self.output_tokens)
        }
    }

    pub fn from_openai(usage: &TokenUsage) -> Self {
        AnthropicUsage {
            input_tokens: usage.prompt_tokens - usage.cached_tokens - usage.cache_write_tokens,
            output_tokens: usage.completion_tokens,
            cache_creation_input_tokens: (usage.cache_write_tokens > 0)
                .then_some(usage.cache_write_tokens),
            cache_read_input_tokens: (usage.cached_tokens > 0).then_some(usage.cached_tokens),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct MessagesResponse {
    pub id: String,
    #[serde(rename = "type", default = "message_type")]
    pub kind: String,
    #[serde(default = "assistant")]
    pub role: String,
    #[serde(default)]
    pub model: String,
    pub content: Vec<Block>,
    #[serde(default)]
    pub stop_reason: Option<String>,
    #[serde(default)]
    pub stop_sequence: Option<String>,
    #[serde(default)]
    pub usage: AnthropicUsage,
}

fn message_type() -> String {
    "message".to_owned()
}

fn assistant() -> String {
    "assistant".to_owned()
}

pub fn finish_reason(stop_reason: &str) -> FinishReason {
    match stop_reason {
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        "refusal" => FinishReason::ContentFilter,
        _ => FinishReason::Stop,
    }
}

pub fn stop_reason(finish_reason: FinishReason) -> &'static str {
    match finish_reason {
        FinishReason::Length => "max_tokens",
        FinishReason::ToolCalls | FinishReason::FunctionCall => "tool_use",
        FinishReason::ContentFilter => "refusal",
        FinishReason::Stop => "end_turn",
    }
}

/// Anthropic accepts tool ids matching `^[a-zA-Z0-9_-]+$` only.
pub fn sanitize_tool_id(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

// ---- the adapter

pub struct Anthropic {
    base_url: String,
    api_key: HeaderValue,
    version: HeaderValue,
    default_max_tokens: u32,
}

impl Anthropic {
    pub fn new(base_url: String, api_key: &str, settings: &Settings) -> Result<Self, String> {
        let default_max_tokens = match settings.get("default_max_tokens") {
            Some(n) => n
                .parse()
                .map_err(|_| "settings.default_max_tokens is not a number".to_owned())?,
            None => DEFAULT_MAX_TOKENS,
        };
        Ok(Anthropic {
            base_url,
            api_key: secret_header(api_key)?,
            version: HeaderValue::try_from(
                settings.get("anthropic_version").unwrap_or(DEFAULT_VERSION),
            )
            .map_err(|_| "settings.anthropic_version is not a header value".to_owned())?,
            default_max_tokens,
        })
    }

    fn translate(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<MessagesRequest, GatewayError> {
        request.refuse(
            "anthropic",
            &[
                Unsupported::N,
                Unsupported::ResponseFormat,
                Unsupported::Seed,
                Unsupported::Penalties,
            ],
        )?;
        let mut messages: Vec<AnthropicMessage> = Vec::new();
        for message in &request.messages {
            let (role, blocks) = match message.role {
                Role::System | Role::Developer => continue,
                Role::User => (AnthropicRole::User, user_blocks(message.parts())?),
                Role::Assistant => {
                    let mut blocks = Vec::new();
                    let text = message.text();
                    if !text.is_empty() {
                        blocks.push(Block::Text { text });
                    }
                    blocks.extend(message.tool_calls().iter().map(|call| Block::ToolUse {
                        id: sanitize_tool_id(&call.id),
                        name: call.function.name.clone(),
                        input: call.arguments_object(),
                    }));
                    (AnthropicRole::Assistant, blocks)
                }
                Role::Tool => (
                    AnthropicRole::User,
                    vec![Block::ToolResult {
                        tool_use_id: sanitize_tool_id(
                            message.tool_call_id.as_deref().unwrap_or_default(),
                        ),
                        content: Some(AnthropicContent::Text(message.text())),
                        is_error: None,
                    }],
                ),
            };
            if blocks.is_empty() {
                continue;
            }
            // Anthropic wants alternating turns: consecutive ones are merged.
            match messages.last_mut() {
                Some(last) if last.role == role => {
                    if let AnthropicContent::Blocks(existing) = &mut last.content {
                        existing.extend(blocks);
                    }
                }
                _ => messages.push(AnthropicMessage {
                    role,
                    content: AnthropicContent::Blocks(blocks),
                }),
            }
        }
        let tools = request.tools.as_ref().map(|tools| {
            tools
                .iter()
                .map(|t| AnthropicTool {
                    name: t.function.name.clone(),
                    description: t.function.description.clone(),
                    input_schema: t.function.parameters_or_empty(),
                })
                .collect::<Vec<_>>()
        });
        let mut tool_choice = request.tool_choice.as_ref().map(|choice| match choice {
            ToolChoice::Mode(mode) => AnthropicToolChoice {
                kind: match mode {
                    ToolChoiceMode::None => "none",
                    ToolChoiceMode::Auto => "auto",
                    ToolChoiceMode::Required => "any",
                }
                .to_owned(),
                name: None,
                disable_parallel_tool_use: None,
            },
            ToolChoice::Named(named) => AnthropicToolChoice {
                kind: "tool".to_owned(),
                name: Some(named.function.name.clone()),
                disable_parallel_tool_use: None,
            },
        });
        if request.parallel_tool_calls == Some(false) && tools.is_some() {
            let choice = tool_choice.get_or_insert_with(|| AnthropicToolChoice {
                kind: "auto".to_owned(),
                name: None,
                disable_parallel_tool_use: None,
            });
            choice.disable_parallel_tool_use = Some(true);
        }
        let stop = request.stop_sequences();
        Ok(MessagesRequest {
            model: model.to_owned(),
            max_tokens: request
                .max_output_tokens()
                .unwrap_or(self.default_max_tokens),
            system: request.system_prompt().map(SystemPrompt::Text),
            messages,
            // OpenAI's temperature runs to 2, Anthropic's to 1.
            temperature: request.temperature.map(|t| t.clamp(0.0, 1.0)),
            top_p: request.top_p,
            top_k: None,
            stop_sequences: (!stop.is_empty()).then_some(stop),
            stream: request.stream,
            tools,
            tool_choice,
            metadata: request
                .user
                .as_ref()
                .map(|user| serde_json::json!({ "user_id": user })),
            extra: Map::new(),
        })
    }
}

fn user_blocks(parts: Vec<Part>) -> Result<Vec<Block>, GatewayError> {
    parts
        .into_iter()
        .filter(|p| !matches!(p, Part::Text { text } if text.is_empty()))
        .map(|part| {
            Ok(match part {
                Part::Text { text } => Block::Text { text },
                Part::ImageUrl { image_url } => Block::Image {
                    source: match image_url.inline() {
                        Some(inline) => ImageSource::Base64 {
                            media_type: inline.media_type.to_owned(),
                            data: inline.base64.to_owned(),
                        },
                        None => ImageSource::Url {
                            url: image_url.url.clone(),
                        },
                    },
                },
            })
        })
        .collect()
}

impl Adapter for Anthropic {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Anthropic
    }

    fn chat_request(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        let body = serde_json::to_vec(&self.translate(model, request)?)
            .map_err(|e| GatewayError::bad_request(e.to_string(), None))?;
        Ok(
            UpstreamCall::json(format!("{}/v1/messages", self.base_url), Bytes::from(body))
                .header("x-api-key", self.api_key.clone())
                .header("anthropic-version", self.version.clone()),
        )
    }

    fn native_messages(
        &self,
        path: &str,
        body: Bytes,
        client_headers: &HeaderMap,
    ) -> Option<UpstreamCall> {
        let mut call = UpstreamCall::json(format!("{}/v1{path}", self.base_url), body)
            .header("x-api-key", self.api_key.clone())
            .header("anthropic-version", self.version.clone());
        // The client's version and beta features win: they shape the answer it reads.
        for name in CLIENT_HEADERS {
            if let Some(value) = client_headers.get(name) {
                call.headers.insert(name, value.clone());
            }
        }
        Some(call)
    }

    fn chat_response(&self, _model: &str, body: &[u8]) -> Result<ChatCompletion, ProviderError> {
        let response: MessagesResponse = json_body(body)?;
        let mut text = String::new();
        let mut thinking = String::new();
        let mut tool_calls = Vec::new();
        for block in response.content {
            match block {
                Block::Text { text: t } => text.push_str(&t),
                Block::Thinking { thinking: t, .. } => thinking.push_str(&t),
                Block::ToolUse { id, name, input } => {
                    tool_calls.push(ToolCall::new(id, name, arguments_string(&input)))
                }
                _ => {}
            }
        }
        let mut message = AssistantMessage::new(text, tool_calls);
        message.reasoning_content = (!thinking.is_empty()).then_some(thinking);
        Ok(ChatCompletion::single(
            response.id,
            &response.model,
            message,
            Some(finish_reason(
                response.stop_reason.as_deref().unwrap_or("end_turn"),
            )),
            Some(response.usage.to_openai()),
        ))
    }

    fn stream_decoder(&self, model: &str) -> Box<dyn StreamDecoder> {
        Box::new(AnthropicStream {
            progress: Progress::new(model),
            tool_index: HashMap::new(),
            tokens: StreamUsage::default(),
        })
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        read_error(status, &value).with_retry_after(headers)
    }

    fn health_probe(&self) -> Option<UpstreamCall> {
        Some(
            UpstreamCall::probe(format!("{}/v1/models", self.base_url))
                .header("x-api-key", self.api_key.clone())
                .header("anthropic-version", self.version.clone()),
        )
    }
}

/// `{"type":"error","error":{"type":..,"message":..}}`, as a body or an event.
fn read_error(status: StatusCode, value: &Value) -> ProviderError {
    let kind_name = text_at(value, "/error/type");
    let message = text_at(value, "/error/message");
    let kind = match kind_name.as_str() {
        "authentication_error" | "permission_error" => ProviderErrorKind::Authentication,
        "billing_error" => ProviderErrorKind::QuotaExhausted,
        "not_found_error" => ProviderErrorKind::NotFound,
        "rate_limit_error" => ProviderErrorKind::RateLimited,
        "overloaded_error" => ProviderErrorKind::Overloaded,
        "timeout_error" => ProviderErrorKind::Timeout,
        "api_error" => ProviderErrorKind::Server,
        _ => classify(status, &[&kind_name], &message),
    };
    ProviderError::new(kind, message)
}

/// The usage of a whole answer (`None` when it has none).
pub fn usage_of(body: &[u8]) -> Option<TokenUsage> {
    let usage = crate::json_scan::top_level_value(body, b"usage")?;
    serde_json::from_slice::<AnthropicUsage>(usage)
        .ok()
        .map(|u| u.to_openai())
}

/// A stream's usage, read as running totals: input (and cache reads and
/// writes) from `message_start`, cumulative output from the last
/// `message_delta`, which may repeat the input counts.
#[derive(Default)]
pub struct StreamUsage {
    input: AnthropicUsage,
    output_tokens: Option<i64>,
}

impl StreamUsage {
    pub fn start(&mut self, usage: AnthropicUsage) {
        self.input = usage;
    }

    pub fn delta(&mut self, usage: AnthropicUsage) {
        // Cumulative: replaces, never adds to, what came before.
        self.output_tokens = Some(usage.output_tokens);
        if usage.input_tokens > 0 {
            self.input.input_tokens = usage.input_tokens;
        }
        if usage.cache_creation_input_tokens.is_some() {
            self.input.cache_creation_input_tokens = usage.cache_creation_input_tokens;
        }
        if usage.cache_read_input_tokens.is_some() {
            self.input.cache_read_input_tokens = usage.cache_read_input_tokens;
        }
    }

    pub fn total(&self) -> TokenUsage {
        let mut usage = self.input.clone();
        usage.output_tokens = self.output_tokens.unwrap_or(self.input.output_tokens);
        usage.to_openai()
    }
}

/// An event of a stream, as far as usage is concerned.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum UsageEvent {
    MessageStart {
        message: UsageOf,
    },
    MessageDelta {
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
pub struct UsageOf {
    #[serde(default)]
    pub usage: AnthropicUsage,
}

/// Anthropic's named events as OpenAI chunks.
struct AnthropicStream {
    /// Its usage stays unset: `usage()` reads `tokens`.
    progress: Progress,
    /// Content-block index -> OpenAI tool-call index.
    tool_index: HashMap<u64, u32>,
    tokens: StreamUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Event {
    MessageStart {
        message: StartMessage,
    },
    ContentBlockStart {
        index: u64,
        content_block: Block,
    },
    ContentBlockDelta {
        index: u64,
        delta: BlockDelta,
    },
    ContentBlockStop {},
    MessageDelta {
        delta: MessageDeltaBody,
        #[serde(default)]
        usage: Option<AnthropicUsage>,
    },
    MessageStop {},
    Ping {},
    Error {},
}

#[derive(Deserialize)]
struct StartMessage {
    id: String,
    #[serde(default)]
    usage: AnthropicUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum BlockDelta {
    TextDelta {
        text: String,
    },
    InputJsonDelta {
        partial_json: String,
    },
    ThinkingDelta {
        thinking: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Deserialize)]
struct MessageDeltaBody {
    #[serde(default)]
    stop_reason: Option<String>,
}

impl StreamDecoder for AnthropicStream {
    fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        if frame.event.as_deref() == Some("error") {
            let value: Value = json_frame(&frame)?;
            return Err(read_error(StatusCode::OK, &value));
        }
        let event: Event = json_frame(&frame)?;
        match event {
            Event::MessageStart { message } => {
                self.progress.start(Some(&message.id), out);
                self.tokens.start(message.usage);
            }
            Event::ContentBlockStart {
                index,
                content_block: Block::ToolUse { id, name, .. },
            } => {
                let tool = self.tool_index.len() as u32;
                self.tool_index.insert(index, tool);
                out.push(self.progress.builder.tool_call_start(tool, id, name));
            }
            Event::ContentBlockStart {
                content_block: Block::Text { text },
                ..
            } if !text.is_empty() => {
                out.push(self.progress.builder.text(text));
            }
            Event::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } => out.push(self.progress.builder.text(text)),
                BlockDelta::ThinkingDelta { thinking } => {
                    out.push(self.progress.builder.reasoning(thinking))
                }
                BlockDelta::InputJsonDelta { partial_json } => {
                    let tool = self
                        .tool_index
                        .get(&index)
                        .copied()
                        .ok_or_else(invalid_answer)?;
                    out.push(self.progress.builder.tool_arguments(tool, partial_json));
                }
                BlockDelta::Other => {}
            },
            Event::MessageDelta { delta, usage } => {
                if let Some(usage) = usage {
                    self.tokens.delta(usage);
                }
                if let Some(reason) = delta.stop_reason {
                    out.push(self.progress.builder.finish(finish_reason(&reason)));
                }
            }
            Event::MessageStop {} => self.progress.finished = true,
            Event::ContentBlockStart { .. }
            | Event::ContentBlockStop {}
            | Event::Ping {}
            | Event::Error {} => {}
        }
        Ok(())
    }

    fn usage(&self) -> Option<TokenUsage> {
        Some(self.tokens.total())
    }

    fn progress(&self) -> &Progress {
        &self.progress
    }
}

#[cfg(test)]
mod golden {
    use super::*;
    use crate::chat::framing::{FrameDecoder, Framing};

    fn adapter() -> Anthropic {
        Anthropic::new(
            "https://api.anthropic.com".into(),
            "sk-ant",
            &Settings(&Default::default()),
        )
        .expect("adapter")
    }

    #[test]
    fn translates_the_request() {
        let request = ChatRequest::parse(br#"{"model":"pub","messages":[
            {"role":"system","content":"Be terse."},
            {"role":"user","content":[{"type":"text","text":"Weather?"},{"type":"image_url","image_url":{"url":"data:image/png;base64,iVBO"}}]},
            {"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Paris\"}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"20C"},
            {"role":"user","content":"thanks"}],
            "temperature":1.5,"stop":"END","tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],
            "tool_choice":"required","parallel_tool_calls":false}"#).expect("valid");
        let call = adapter()
            .chat_request("claude-x", &request)
            .expect("translated");
        assert_eq!(call.uri, "https://api.anthropic.com/v1/messages");
        assert_eq!(call.headers["anthropic-version"], "2023-06-01");
        let body: Value = serde_json::from_slice(&call.body).expect("json");
        assert_eq!(
            body,
            serde_json::json!({
            "model": "claude-x", "max_tokens": 4096, "system": "Be terse.",
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}]},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "call_1", "content": "20C"}, {"type": "text", "text": "thanks"}]}],
            "temperature": 1.0, "stop_sequences": ["END"],
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true}})
        );
        let n2 = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"n":2}"#,
        )
        .expect("valid");
        assert!(
            matches!(adapter().chat_request("c", &n2), Err(GatewayError::Unsupported { ref param, .. }) if param == "n")
        );
    }

    #[test]
    fn translates_the_answer() {
        let body = br#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-x",
            "content":[{"type":"text","text":"Let me check."},{"type":"tool_use","id":"toolu_1","name":"get_weather","input":{"city":"Paris"}}],
            "stop_reason":"tool_use","stop_sequence":null,
            "usage":{"input_tokens":400,"output_tokens":57,"cache_creation_input_tokens":2,"cache_read_input_tokens":10}}"#;
        let answer = adapter().chat_response("claude-x", body).expect("answer");
        let value = serde_json::to_value(&answer).expect("json");
        assert_eq!(value["choices"][0]["message"]["content"], "Let me check.");
        assert_eq!(
            value["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"],
            r#"{"city":"Paris"}"#
        );
        assert_eq!(value["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            value["usage"],
            serde_json::json!({"prompt_tokens": 412, "completion_tokens": 57, "total_tokens": 469, "prompt_tokens_details": {"cached_tokens": 10}})
        );
    }

    #[test]
    fn translates_the_stream_reading_usage_as_running_totals() {
        let wire = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"c\",\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
            event: ping\ndata: {\"type\":\"ping\"}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hello\"}}\n\n\
            event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
            event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"get_weather\",\"input\":{}}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Par\"}}\n\n\
            event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"is\\\"}\"}}\n\n\
            event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":89}}\n\n\
            event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let mut frames = Vec::new();
        let mut framer = FrameDecoder::new(Framing::Sse);
        framer.push(wire.as_bytes(), &mut frames);
        let mut decoder = adapter().stream_decoder("c");
        let mut chunks = Vec::new();
        for frame in frames {
            decoder.decode(frame, &mut chunks).expect("decoded");
        }
        let deltas: Vec<Value> = chunks
            .iter()
            .map(|c| serde_json::to_value(&c.choices[0]).expect("json"))
            .collect();
        assert_eq!(chunks[0].id, "msg_1");
        assert_eq!(deltas[1]["delta"]["content"], "Hello");
        assert_eq!(deltas[2]["delta"]["tool_calls"][0]["id"], "toolu_1");
        assert_eq!(
            deltas[3]["delta"]["tool_calls"][0]["function"]["arguments"],
            "{\"city\": \"Par"
        );
        assert_eq!(deltas[5]["finish_reason"], "tool_calls");
        assert!(decoder.finished());
        assert_eq!(
            decoder
                .usage()
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((25, 89))
        );
    }

    #[test]
    fn maps_errors_with_their_retryability() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("7"));
        let overloaded = adapter().error(StatusCode::from_u16(529).expect("status"), &headers,
            br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"},"request_id":"req_1"}"#);
        assert_eq!(overloaded.kind, ProviderErrorKind::Overloaded);
        assert!(overloaded.retryable());
        assert_eq!(
            overloaded.retry_after.as_ref().map(HeaderValue::as_bytes),
            Some(&b"7"[..])
        );
        let long = adapter().error(StatusCode::BAD_REQUEST, &HeaderMap::new(),
            br#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215000 tokens > 200000 maximum"}}"#);
        assert_eq!(long.kind, ProviderErrorKind::ContextLengthExceeded);
        let billing = adapter().error(
            StatusCode::PAYMENT_REQUIRED,
            &HeaderMap::new(),
            br#"{"type":"error","error":{"type":"billing_error","message":"credit"}}"#,
        );
        assert!(!billing.retryable());
    }
}
