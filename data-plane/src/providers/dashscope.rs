//! Alibaba DashScope's native text-generation API (Qwen):
//! `/api/v1/services/aigc/text-generation/generation`, streaming with
//! `X-DashScope-SSE: enable` as `data:` events (no space, no `[DONE]`) whose
//! usage is cumulative; validation errors arrive as `event:error` inside a 200
//! stream. `base_url` is the host root, e.g. `https://dashscope.aliyuncs.com`.

use super::Progress;
use super::{
    classify, invalid_answer, json_body, json_frame, secret_header, text_at, Adapter,
    StreamDecoder, UpstreamCall,
};
use crate::chat::framing::Frame;
use crate::chat::{
    new_id, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, EmbeddingsRequest,
    FinishReason, Role, ToolCall, Unsupported,
};
use crate::error::{GatewayError, ProviderError, ProviderErrorKind};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use shared::provider_kind::ProviderKind;
use shared::usage::TokenUsage;
use std::collections::HashSet;

const GENERATION: &str = "/api/v1/services/aigc/text-generation/generation";
const EMBEDDING: &str = "/api/v1/services/embeddings/text-embedding/text-embedding";
/// DashScope's top_p must be strictly below 1.
const MAX_TOP_P: f64 = 0.9999;

pub struct DashScope {
    base_url: String,
    authorization: HeaderValue,
}

impl DashScope {
    pub fn new(base_url: String, api_key: &str) -> Result<Self, String> {
        Ok(DashScope {
            base_url,
            authorization: secret_header(&format!("Bearer {api_key}"))?,
        })
    }

    fn call(&self, path: &str, body: &Value) -> Result<UpstreamCall, GatewayError> {
        let body =
            serde_json::to_vec(body).map_err(|e| GatewayError::bad_request(e.to_string(), None))?;
        Ok(
            UpstreamCall::json(format!("{}{path}", self.base_url), Bytes::from(body))
                .header(header::AUTHORIZATION.as_str(), self.authorization.clone()),
        )
    }
}

fn translate(model: &str, request: &ChatRequest) -> Result<Value, GatewayError> {
    // Images go to the separate multimodal API; frequency_penalty has no peer.
    request.refuse("dashscope (native)", &[Unsupported::Images])?;
    if request.frequency_penalty.is_some() {
        return Err(GatewayError::Unsupported {
            param: "frequency_penalty".into(),
            provider_kind: "dashscope (native)".into(),
        });
    }
    let messages: Vec<Value> = request
        .messages
        .iter()
        .map(|m| {
            let role = match m.role {
                Role::System | Role::Developer => "system",
                Role::User => "user",
                Role::Assistant => "assistant",
                Role::Tool => "tool",
            };
            let mut out = json!({"role": role, "content": m.text()});
            if let Some(calls) = &m.tool_calls {
                out["tool_calls"] = json!(calls);
            }
            if let Some(id) = &m.tool_call_id {
                out["tool_call_id"] = json!(id);
            }
            out
        })
        .collect();
    let mut parameters = Map::new();
    parameters.insert("result_format".into(), json!("message"));
    if request.stream {
        // Otherwise every event repeats the whole text so far.
        parameters.insert("incremental_output".into(), json!(true));
    }
    let mut set = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            parameters.insert(key.to_owned(), value);
        }
    };
    set("max_tokens", request.max_output_tokens().map(Value::from));
    set("temperature", request.temperature.map(Value::from));
    set(
        "top_p",
        request.top_p.map(|p| Value::from(p.min(MAX_TOP_P))),
    );
    set("seed", request.seed.map(Value::from));
    set(
        "presence_penalty",
        request.presence_penalty.map(Value::from),
    );
    set("n", request.n.map(Value::from));
    let stop = request.stop_sequences();
    set("stop", (!stop.is_empty()).then(|| json!(stop)));
    set("tools", request.tools.as_ref().map(|t| json!(t)));
    set(
        "tool_choice",
        request.tool_choice.as_ref().map(|c| json!(c)),
    );
    set(
        "parallel_tool_calls",
        request.parallel_tool_calls.map(Value::from),
    );
    if let Some(format) = request
        .response_format
        .as_ref()
        .filter(|f| f.kind != "text")
    {
        set("response_format", Some(json!({"type": "json_object"})));
        if format.kind == "json_schema" {
            return Err(GatewayError::Unsupported {
                param: "response_format.json_schema".into(),
                provider_kind: "dashscope (native); use json_object".into(),
            });
        }
    }
    Ok(json!({"model": model, "input": {"messages": messages}, "parameters": parameters}))
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    output: Option<Output>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
struct Output {
    #[serde(default)]
    choices: Vec<OutputChoice>,
}

#[derive(Deserialize)]
struct OutputChoice {
    /// The string "null" mid-stream, not JSON null.
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    message: OutputMessage,
}

#[derive(Deserialize, Default)]
struct OutputMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<StreamToolCall>,
}

#[derive(Deserialize, Clone)]
struct StreamToolCall {
    #[serde(default)]
    index: Option<u32>,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: StreamFunction,
}

#[derive(Deserialize, Clone, Default)]
struct StreamFunction {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    input_tokens: i64,
    #[serde(default)]
    output_tokens: i64,
    #[serde(default)]
    prompt_tokens_details: Option<Value>,
}

impl Usage {
    fn to_openai(&self) -> TokenUsage {
        TokenUsage {
            cached_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.get("cached_tokens"))
                .and_then(Value::as_i64)
                .unwrap_or(0),
            ..TokenUsage::new(self.input_tokens, self.output_tokens)
        }
    }
}

/// `finish_reason` "stop" while tool calls are present means a tool call.
fn finish_reason(reason: &str, called_tools: bool) -> Option<FinishReason> {
    match reason {
        "null" | "" => None,
        "length" => Some(FinishReason::Length),
        "tool_calls" => Some(FinishReason::ToolCalls),
        _ if called_tools => Some(FinishReason::ToolCalls),
        "content_filter" | "sensitive" => Some(FinishReason::ContentFilter),
        _ => Some(FinishReason::Stop),
    }
}

/// `{"code":..,"message":..}`, as a body or an `event:error`.
fn read_error(status: StatusCode, code: &str, message: &str) -> ProviderError {
    let kind = match code {
        "InvalidApiKey" => ProviderErrorKind::Authentication,
        // Transient despite the quota wording.
        code if code.starts_with("Throttling") => ProviderErrorKind::RateLimited,
        "Arrearage" => ProviderErrorKind::QuotaExhausted,
        "DataInspectionFailed" => ProviderErrorKind::ContentFilter,
        "InvalidParameter" if message.contains("Range of input length") => {
            ProviderErrorKind::ContextLengthExceeded
        }
        "InternalError" => ProviderErrorKind::Server,
        c if c.starts_with("InvalidParameter") || c.starts_with("MissingParameter") => {
            ProviderErrorKind::BadRequest
        }
        _ => classify(status, &[code], message),
    };
    ProviderError::new(kind, message)
}

impl Adapter for DashScope {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Dashscope
    }

    fn chat_request(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        let call = self.call(GENERATION, &translate(model, request)?)?;
        Ok(if request.stream {
            call.header("x-dashscope-sse", HeaderValue::from_static("enable"))
                .header(
                    header::ACCEPT.as_str(),
                    HeaderValue::from_static("text/event-stream"),
                )
        } else {
            call
        })
    }

    fn chat_response(&self, model: &str, body: &[u8]) -> Result<ChatCompletion, ProviderError> {
        let answer: Answer = json_body(body)?;
        if let Some(code) = &answer.code {
            return Err(read_error(
                StatusCode::OK,
                code,
                answer.message.as_deref().unwrap_or_default(),
            ));
        }
        let mut completion = ChatCompletion::single(
            answer.request_id.unwrap_or_else(|| new_id("chatcmpl-")),
            model,
            AssistantMessage::default(),
            None,
            answer.usage.map(|u| u.to_openai()),
        );
        completion.choices = answer
            .output
            .ok_or_else(invalid_answer)?
            .choices
            .into_iter()
            .enumerate()
            .map(|(index, choice)| {
                let calls: Vec<ToolCall> = choice
                    .message
                    .tool_calls
                    .into_iter()
                    .map(|c| {
                        ToolCall::new(
                            c.id.unwrap_or_else(|| new_id("call_")),
                            c.function.name.unwrap_or_default(),
                            c.function.arguments.unwrap_or_default(),
                        )
                    })
                    .collect();
                let reason = finish_reason(
                    choice.finish_reason.as_deref().unwrap_or("stop"),
                    !calls.is_empty(),
                );
                let mut message = AssistantMessage::new(choice.message.content, calls);
                message.reasoning_content =
                    choice.message.reasoning_content.filter(|r| !r.is_empty());
                crate::chat::Choice {
                    index: index as u32,
                    message,
                    finish_reason: reason,
                }
            })
            .collect();
        Ok(completion)
    }

    fn stream_decoder(&self, model: &str) -> Box<dyn StreamDecoder> {
        Box::new(DashScopeStream {
            progress: Progress::new(model),
            tools_seen: HashSet::new(),
        })
    }

    fn embeddings_request(
        &self,
        model: &str,
        request: &EmbeddingsRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        let mut body = json!({"model": model, "input": {"texts": request.texts("dashscope")?}});
        if let Some(dimensions) = request.dimensions {
            body["parameters"] = json!({ "dimension": dimensions });
        }
        self.call(EMBEDDING, &body)
    }

    fn embeddings_response(
        &self,
        body: &[u8],
    ) -> Result<(Vec<Vec<f32>>, Option<TokenUsage>), ProviderError> {
        #[derive(Deserialize)]
        struct Answer {
            output: EmbeddingOutput,
            #[serde(default)]
            usage: Option<Value>,
        }
        #[derive(Deserialize)]
        struct EmbeddingOutput {
            embeddings: Vec<Embedding>,
        }
        #[derive(Deserialize)]
        struct Embedding {
            embedding: Vec<f32>,
            text_index: usize,
        }
        let mut answer: Answer = json_body(body)?;
        answer.output.embeddings.sort_by_key(|e| e.text_index);
        let tokens = answer
            .usage
            .as_ref()
            .and_then(|u| u.get("total_tokens"))
            .and_then(Value::as_i64);
        Ok((
            answer
                .output
                .embeddings
                .into_iter()
                .map(|e| e.embedding)
                .collect(),
            tokens.map(|n| TokenUsage::new(n, 0)),
        ))
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        read_error(
            status,
            &text_at(&value, "/code"),
            &text_at(&value, "/message"),
        )
        .with_retry_after(headers)
    }
}

struct DashScopeStream {
    progress: Progress,
    /// Tool-call indexes already announced with their id and name.
    tools_seen: HashSet<u32>,
}

impl StreamDecoder for DashScopeStream {
    fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        let answer: Answer = json_frame(&frame)?;
        if frame.event.as_deref() == Some("error")
            || answer.code.as_deref().is_some_and(|c| !c.is_empty())
        {
            return Err(read_error(
                StatusCode::OK,
                answer.code.as_deref().unwrap_or_default(),
                answer.message.as_deref().unwrap_or_default(),
            ));
        }
        self.progress.start(answer.request_id.as_deref(), out);
        if let Some(usage) = &answer.usage {
            // Cumulative: the latest replaces the earlier.
            self.progress.usage = Some(usage.to_openai());
        }
        for choice in answer.output.map(|o| o.choices).unwrap_or_default() {
            let message = choice.message;
            if let Some(reasoning) = message.reasoning_content.filter(|r| !r.is_empty()) {
                out.push(self.progress.builder.reasoning(reasoning));
            }
            if !message.content.is_empty() {
                out.push(self.progress.builder.text(message.content));
            }
            for (position, call) in message.tool_calls.into_iter().enumerate() {
                let index = call.index.unwrap_or(position as u32);
                let arguments = call.function.arguments.unwrap_or_default();
                if self.tools_seen.insert(index) {
                    out.push(self.progress.builder.tool_call_start(
                        index,
                        call.id.unwrap_or_else(|| new_id("call_")),
                        call.function.name.unwrap_or_default(),
                    ));
                }
                if !arguments.is_empty() {
                    out.push(self.progress.builder.tool_arguments(index, arguments));
                }
            }
            if let Some(reason) = finish_reason(
                choice.finish_reason.as_deref().unwrap_or("null"),
                !self.tools_seen.is_empty(),
            ) {
                self.progress.finish(reason, out);
            }
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
    use crate::chat::framing::{FrameDecoder, Framing};

    fn adapter() -> DashScope {
        DashScope::new("https://dashscope.aliyuncs.com".into(), "sk-ds").expect("adapter")
    }

    #[test]
    fn translates_the_request() {
        let request = ChatRequest::parse(br#"{"model":"pub","stream":true,"messages":[{"role":"system","content":"s"},{"role":"user","content":"hi"}],"top_p":1,"max_tokens":9}"#).expect("valid");
        let call = adapter()
            .chat_request("qwen-max", &request)
            .expect("translated");
        assert_eq!(
            call.uri,
            "https://dashscope.aliyuncs.com/api/v1/services/aigc/text-generation/generation"
        );
        assert_eq!(call.headers["x-dashscope-sse"], "enable");
        let body: Value = serde_json::from_slice(&call.body).expect("json");
        assert_eq!(
            body,
            json!({"model": "qwen-max",
            "input": {"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "hi"}]},
            "parameters": {"result_format": "message", "incremental_output": true, "max_tokens": 9, "top_p": 0.9999}})
        );
    }

    #[test]
    fn translates_the_raw_stream_and_its_in_stream_error() {
        let wire = "id:1\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"choices\":[{\"message\":{\"content\":\"1\",\"role\":\"assistant\"},\"finish_reason\":\"null\"}]},\"usage\":{\"total_tokens\":9,\"input_tokens\":8,\"output_tokens\":1},\"request_id\":\"d27\"}\n\n\
            id:2\nevent:result\n:HTTP_STATUS/200\ndata:{\"output\":{\"choices\":[{\"message\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":\"stop\"}]},\"usage\":{\"total_tokens\":48,\"input_tokens\":8,\"output_tokens\":40},\"request_id\":\"d27\"}\n\n";
        let mut frames = Vec::new();
        FrameDecoder::new(Framing::Sse).push(wire.as_bytes(), &mut frames);
        let mut decoder = adapter().stream_decoder("qwen-max");
        let mut chunks = Vec::new();
        for frame in frames {
            decoder.decode(frame, &mut chunks).expect("ok");
        }
        assert_eq!(
            chunks
                .iter()
                .filter_map(|c| c.choices[0].delta.content.clone())
                .collect::<String>(),
            "1"
        );
        assert!(decoder.finished());
        assert_eq!(
            decoder
                .usage()
                .map(|u| (u.prompt_tokens, u.completion_tokens)),
            Some((8, 40)),
            "running totals, not summed"
        );

        let error = Frame { event: Some("error".into()), data: r#"{"code":"InvalidParameter","message":"Role must be user or assistant","request_id":"x"}"#.into() };
        let failed = adapter()
            .stream_decoder("q")
            .decode(error, &mut chunks)
            .expect_err("error");
        assert_eq!(failed.kind, ProviderErrorKind::BadRequest);
    }

    #[test]
    fn reads_tool_calls_under_a_stop_reason_and_errors() {
        let body = br#"{"output":{"choices":[{"finish_reason":"stop","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"get_current_weather","arguments":"{\"location\": \"Hangzhou\"}"},"index":0,"id":"call_cec4","type":"function"}]}}]},"usage":{"total_tokens":219,"output_tokens":8,"input_tokens":211},"request_id":"6730"}"#;
        let answer = serde_json::to_value(adapter().chat_response("q", body).expect("answer"))
            .expect("json");
        assert_eq!(answer["choices"][0]["finish_reason"], "tool_calls");
        assert_eq!(
            answer["choices"][0]["message"]["tool_calls"][0]["id"],
            "call_cec4"
        );
        let e = adapter().error(
            StatusCode::UNAUTHORIZED,
            &HeaderMap::new(),
            br#"{"code":"InvalidApiKey","message":"Invalid API-key provided.","request_id":"a1"}"#,
        );
        assert_eq!(e.kind, ProviderErrorKind::Authentication);
        let e = adapter().error(
            StatusCode::TOO_MANY_REQUESTS,
            &HeaderMap::new(),
            br#"{"code":"Throttling.AllocationQuota","message":"quota"}"#,
        );
        assert!(e.retryable());
    }
}
