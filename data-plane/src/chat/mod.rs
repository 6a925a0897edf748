//! OpenAI's chat completions format as typed values: the common language
//! every adapter translates to and from. Requests to OpenAI-compatible
//! providers bypass it (their bytes are spliced, not re-encoded); it is used
//! whenever a request or an answer must change format.

pub mod assemble;
pub mod framing;

use crate::error::GatewayError;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use shared::usage::TokenUsage;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<Message>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_completion_tokens: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop: Option<Stop>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub presence_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frequency_penalty: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_format: Option<ResponseFormat>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tools: Option<Vec<Tool>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<ToolChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_tool_calls: Option<bool>,
    #[serde(default)]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_options: Option<StreamOptions>,
    /// Every other parameter: checked against what the provider can do.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Parameters that change nothing a provider computes: accepted everywhere.
const HARMLESS_EXTRAS: &[&str] = &["metadata", "store", "service_tier"];

impl ChatRequest {
    pub fn parse(body: &[u8]) -> Result<Self, GatewayError> {
        let request: ChatRequest = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_request(format!("Invalid chat completions request: {e}"), None)
        })?;
        if request.messages.is_empty() {
            return Err(GatewayError::bad_request(
                "'messages' must contain at least one message.",
                Some("messages"),
            ));
        }
        Ok(request)
    }

    /// `max_completion_tokens` wins over the deprecated `max_tokens`.
    pub fn max_output_tokens(&self) -> Option<u32> {
        self.max_completion_tokens.or(self.max_tokens)
    }

    pub fn wants_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .is_some_and(|o| o.include_usage)
    }

    pub fn stop_sequences(&self) -> Vec<String> {
        match &self.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        }
    }

    /// The system and developer messages, joined: providers that take the
    /// system prompt apart from the turns get all of it, not just the first.
    pub fn system_prompt(&self) -> Option<String> {
        let parts: Vec<String> = self
            .messages
            .iter()
            .filter(|m| matches!(m.role, Role::System | Role::Developer))
            .map(|m| m.text())
            .collect();
        (!parts.is_empty()).then(|| parts.join("\n\n"))
    }

    /// Refuses the parameters a provider cannot honour, naming the first one,
    /// instead of dropping it silently. `unsupported` lists the typed ones.
    pub fn refuse(
        &self,
        provider_kind: &str,
        unsupported: &[Unsupported],
    ) -> Result<(), GatewayError> {
        let refuse = |param: &str| {
            Err(GatewayError::Unsupported {
                param: param.to_owned(),
                provider_kind: provider_kind.to_owned(),
            })
        };
        if let Some(name) = self
            .extra
            .keys()
            .find(|k| !HARMLESS_EXTRAS.contains(&k.as_str()))
        {
            return refuse(name);
        }
        for what in unsupported {
            let used = match what {
                Unsupported::N => self.n.is_some_and(|n| n > 1),
                Unsupported::Tools => self.tools.as_ref().is_some_and(|t| !t.is_empty()),
                Unsupported::Images => self.messages.iter().any(Message::has_image),
                Unsupported::ResponseFormat => self
                    .response_format
                    .as_ref()
                    .is_some_and(|f| f.kind != "text"),
                Unsupported::Seed => self.seed.is_some(),
                Unsupported::Penalties => {
                    self.presence_penalty.is_some() || self.frequency_penalty.is_some()
                }
                Unsupported::MaxTokens => self.max_output_tokens().is_some(),
                Unsupported::Stop => self.stop.is_some(),
            };
            if used {
                return refuse(what.param());
            }
        }
        Ok(())
    }
}

/// A typed parameter some provider cannot honour.
#[derive(Clone, Copy, Debug)]
pub enum Unsupported {
    N,
    Tools,
    Images,
    ResponseFormat,
    Seed,
    Penalties,
    MaxTokens,
    Stop,
}

impl Unsupported {
    fn param(self) -> &'static str {
        match self {
            Unsupported::N => "n",
            Unsupported::Tools => "tools",
            Unsupported::Images => "messages[].content[].image_url",
            Unsupported::ResponseFormat => "response_format",
            Unsupported::Seed => "seed",
            Unsupported::Penalties => "frequency_penalty",
            Unsupported::MaxTokens => "max_tokens",
            Unsupported::Stop => "stop",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ResponseFormat {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub json_schema: Option<Value>,
}

impl ResponseFormat {
    /// The JSON schema of a `json_schema` format, if any.
    pub fn schema(&self) -> Option<&Value> {
        self.json_schema.as_ref().and_then(|s| s.get("schema"))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    Developer,
    User,
    Assistant,
    Tool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Message {
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Content>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl Message {
    pub fn new(role: Role, text: impl Into<String>) -> Self {
        Message {
            role,
            content: Some(Content::Text(text.into())),
            name: None,
            tool_calls: None,
            tool_call_id: None,
        }
    }

    /// The message's text parts, joined; images are left out.
    pub fn text(&self) -> String {
        match &self.content {
            None => String::new(),
            Some(Content::Text(text)) => text.clone(),
            Some(Content::Parts(parts)) => parts
                .iter()
                .filter_map(|p| match p {
                    Part::Text { text } => Some(text.as_str()),
                    Part::ImageUrl { .. } => None,
                })
                .collect::<Vec<_>>()
                .join(""),
        }
    }

    pub fn parts(&self) -> Vec<Part> {
        match &self.content {
            None => Vec::new(),
            Some(Content::Text(text)) => vec![Part::Text { text: text.clone() }],
            Some(Content::Parts(parts)) => parts.clone(),
        }
    }

    fn has_image(&self) -> bool {
        matches!(&self.content, Some(Content::Parts(parts)) if parts.iter().any(|p| matches!(p, Part::ImageUrl { .. })))
    }

    pub fn tool_calls(&self) -> &[ToolCall] {
        self.tool_calls.as_deref().unwrap_or_default()
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Part {
    Text { text: String },
    ImageUrl { image_url: ImageUrl },
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ImageUrl {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// An image as providers that want the bytes take it.
pub struct InlineImage<'a> {
    pub media_type: &'a str,
    pub base64: &'a str,
}

impl ImageUrl {
    /// A `data:<type>;base64,<data>` URL split into its parts.
    pub fn inline(&self) -> Option<InlineImage<'_>> {
        let rest = self.url.strip_prefix("data:")?;
        let (media_type, data) = rest.split_once(";base64,")?;
        Some(InlineImage {
            media_type,
            base64: data,
        })
    }

    /// Providers that accept only inline images refuse remote ones clearly:
    /// the gateway does not fetch caller-chosen URLs.
    pub fn require_inline(&self, provider_kind: &str) -> Result<InlineImage<'_>, GatewayError> {
        self.inline().ok_or_else(|| {
            GatewayError::bad_request(
                format!("Provider kind {provider_kind} takes images only as data: URLs (data:image/png;base64,...); remote image URLs are not fetched by the gateway."),
                Some("messages[].content[].image_url.url"),
            )
        })
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

impl ToolCall {
    pub fn new(id: String, name: String, arguments: String) -> Self {
        ToolCall {
            id,
            kind: function_type(),
            function: FunctionCall { name, arguments },
        }
    }

    /// The arguments as a JSON object, for providers that take objects;
    /// empty or invalid JSON becomes `{}`.
    pub fn arguments_object(&self) -> Value {
        match serde_json::from_str::<Value>(&self.function.arguments) {
            Ok(value @ Value::Object(_)) => value,
            _ => Value::Object(Map::new()),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
pub struct FunctionCall {
    pub name: String,
    /// A JSON-encoded string, as OpenAI sends it.
    #[serde(default)]
    pub arguments: String,
}

/// Serialises an arguments object as OpenAI's string; empty is `"{}"`, never `""`.
pub fn arguments_string(value: &Value) -> String {
    match value {
        Value::Null => "{}".to_owned(),
        Value::String(s) if s.is_empty() => "{}".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Tool {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionDef,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct FunctionDef {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parameters: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict: Option<bool>,
}

impl FunctionDef {
    pub fn parameters_or_empty(&self) -> Value {
        self.parameters
            .clone()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}))
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(untagged)]
pub enum ToolChoice {
    Mode(ToolChoiceMode),
    Named(NamedToolChoice),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ToolChoiceMode {
    None,
    Auto,
    Required,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct NamedToolChoice {
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: NamedFunction,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct NamedFunction {
    pub name: String,
}

// ---- answers

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    ContentFilter,
    FunctionCall,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ChatCompletion {
    pub id: String,
    #[serde(default = "completion_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
}

fn completion_object() -> String {
    "chat.completion".to_owned()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Choice {
    #[serde(default)]
    pub index: u32,
    pub message: AssistantMessage,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct AssistantMessage {
    #[serde(default = "assistant_role")]
    pub role: String,
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
}

fn assistant_role() -> String {
    "assistant".to_owned()
}

impl ChatCompletion {
    /// One choice, as most providers answer.
    pub fn single(
        id: String,
        model: &str,
        message: AssistantMessage,
        finish_reason: Option<FinishReason>,
        usage: Option<TokenUsage>,
    ) -> Self {
        ChatCompletion {
            id,
            object: completion_object(),
            created: shared::time::now_ms() / 1000,
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message,
                finish_reason,
            }],
            usage,
        }
    }
}

impl AssistantMessage {
    pub fn new(content: String, tool_calls: Vec<ToolCall>) -> Self {
        AssistantMessage {
            role: assistant_role(),
            content: (!content.is_empty() || tool_calls.is_empty()).then_some(content),
            tool_calls: (!tool_calls.is_empty()).then_some(tool_calls),
            reasoning_content: None,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct ChatChunk {
    pub id: String,
    #[serde(default = "chunk_object")]
    pub object: String,
    #[serde(default)]
    pub created: i64,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
}

fn chunk_object() -> String {
    "chat.completion.chunk".to_owned()
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ChunkChoice {
    #[serde(default)]
    pub index: u32,
    #[serde(default)]
    pub delta: Delta,
    #[serde(default)]
    pub finish_reason: Option<FinishReason>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct ToolCallDelta {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(rename = "type", default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub function: FunctionDelta,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
pub struct FunctionDelta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<String>,
}

/// Builds a stream's chunks with one id, creation time and model, as OpenAI's do.
pub struct ChunkBuilder {
    id: String,
    created: i64,
    model: String,
}

impl ChunkBuilder {
    pub fn new(id: String, model: String) -> Self {
        ChunkBuilder {
            id,
            created: shared::time::now_ms() / 1000,
            model,
        }
    }

    pub fn set_id(&mut self, id: impl Into<String>) {
        self.id = id.into();
    }

    pub fn chunk(&self, delta: Delta, finish_reason: Option<FinishReason>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: chunk_object(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
            }],
            usage: None,
        }
    }

    pub fn role(&self) -> ChatChunk {
        self.chunk(
            Delta {
                role: Some(assistant_role()),
                content: Some(String::new()),
                ..Delta::default()
            },
            None,
        )
    }

    pub fn text(&self, text: String) -> ChatChunk {
        self.chunk(
            Delta {
                content: Some(text),
                ..Delta::default()
            },
            None,
        )
    }

    pub fn reasoning(&self, text: String) -> ChatChunk {
        self.chunk(
            Delta {
                reasoning_content: Some(text),
                ..Delta::default()
            },
            None,
        )
    }

    /// The first delta of a tool call carries its id and name.
    pub fn tool_call_start(&self, index: u32, id: String, name: String) -> ChatChunk {
        self.tool_delta(ToolCallDelta {
            index,
            id: Some(id),
            kind: Some(function_type()),
            function: FunctionDelta {
                name: Some(name),
                arguments: Some(String::new()),
            },
        })
    }

    pub fn tool_arguments(&self, index: u32, fragment: String) -> ChatChunk {
        self.tool_delta(ToolCallDelta {
            index,
            function: FunctionDelta {
                name: None,
                arguments: Some(fragment),
            },
            ..ToolCallDelta::default()
        })
    }

    fn tool_delta(&self, call: ToolCallDelta) -> ChatChunk {
        self.chunk(
            Delta {
                tool_calls: Some(vec![call]),
                ..Delta::default()
            },
            None,
        )
    }

    pub fn finish(&self, reason: FinishReason) -> ChatChunk {
        self.chunk(Delta::default(), Some(reason))
    }

    pub fn usage(&self, usage: TokenUsage) -> ChatChunk {
        ChatChunk {
            choices: Vec::new(),
            usage: Some(usage),
            ..self.chunk(Delta::default(), None)
        }
    }
}

/// A fresh id for answers whose provider gives none usable.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::new_v4().simple())
}

// ---- embeddings

#[derive(Clone, Debug, Deserialize)]
pub struct EmbeddingsRequest {
    pub model: String,
    pub input: EmbeddingInput,
    #[serde(default)]
    pub encoding_format: Option<String>,
    #[serde(default)]
    pub dimensions: Option<u32>,
    #[serde(default)]
    pub user: Option<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum EmbeddingInput {
    One(String),
    Many(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

impl EmbeddingsRequest {
    pub fn parse(body: &[u8]) -> Result<Self, GatewayError> {
        serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_request(format!("Invalid embeddings request: {e}"), Some("input"))
        })
    }

    /// The texts to embed; token-id input is OpenAI's own and refused elsewhere.
    pub fn texts(&self, provider_kind: &str) -> Result<Vec<String>, GatewayError> {
        match &self.input {
            EmbeddingInput::One(text) => Ok(vec![text.clone()]),
            EmbeddingInput::Many(texts) => Ok(texts.clone()),
            EmbeddingInput::Tokens(_) | EmbeddingInput::TokenLists(_) => {
                Err(GatewayError::Unsupported {
                    param: "input".to_owned(),
                    provider_kind: format!("{provider_kind} (token-id input)"),
                })
            }
        }
    }

    /// OpenAI's answer shape, with vectors as floats or (as the OpenAI SDK
    /// asks by default) base64 of little-endian f32s.
    pub fn answer(&self, vectors: Vec<Vec<f32>>, usage: TokenUsage) -> Value {
        use base64::Engine;
        let base64 = self.encoding_format.as_deref() == Some("base64");
        let data: Vec<Value> = vectors
            .into_iter()
            .enumerate()
            .map(|(index, vector)| {
                let embedding = if base64 {
                    let bytes: Vec<u8> = vector.iter().flat_map(|f| f.to_le_bytes()).collect();
                    Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
                } else {
                    serde_json::json!(vector)
                };
                serde_json::json!({"object": "embedding", "index": index, "embedding": embedding})
            })
            .collect();
        serde_json::json!({
            "object": "list",
            "data": data,
            "model": self.model,
            "usage": {"prompt_tokens": usage.prompt_tokens, "total_tokens": usage.total_tokens},
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_openai_request_and_refuses_what_a_provider_cannot_do() {
        let request = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"system","content":"a"},{"role":"developer","content":"b"},
            {"role":"user","content":[{"type":"text","text":"hi"},{"type":"image_url","image_url":{"url":"data:image/png;base64,AAAA"}}]}],
            "stop":"END","max_tokens":5,"max_completion_tokens":7,"logit_bias":{"1":2},"metadata":{}}"#,
        )
        .expect("valid");
        assert_eq!(request.system_prompt().as_deref(), Some("a\n\nb"));
        assert_eq!(request.max_output_tokens(), Some(7));
        assert_eq!(request.stop_sequences(), vec!["END"]);
        let refused = request.refuse("gemini", &[]).expect_err("logit_bias");
        assert!(refused.to_string().contains("logit_bias"));
        let mut request = request;
        request.extra.remove("logit_bias");
        assert!(request.refuse("gemini", &[Unsupported::Tools]).is_ok());
        let refused = request
            .refuse("x", &[Unsupported::Images])
            .expect_err("images");
        assert!(
            matches!(refused, GatewayError::Unsupported { ref param, .. } if param.contains("image_url"))
        );
        assert!(ChatRequest::parse(br#"{"model":"m","messages":[]}"#).is_err());
        assert!(ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#
        )
        .is_err());
    }

    #[test]
    fn embeddings_answer_in_base64_as_the_sdk_asks() {
        let request: EmbeddingsRequest =
            serde_json::from_str(r#"{"model":"e","input":"x","encoding_format":"base64"}"#)
                .expect("valid");
        let answer = request.answer(vec![vec![1.0, -2.5]], TokenUsage::new(3, 0));
        assert_eq!(answer["data"][0]["embedding"], "AACAPwAAIMA=");
        assert_eq!(answer["usage"]["prompt_tokens"], 3);
    }
}
