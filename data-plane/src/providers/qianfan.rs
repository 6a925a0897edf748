//! Baidu Qianfan's native v1 API (ERNIE on wenxinworkshop). Credentials are
//! exchanged for an access token (cached, refreshed an hour before its 30 days
//! end); the model is a path segment; errors arrive as `error_code` in HTTP
//! 200 bodies; streams are `data:` events that end with `is_end: true` and no
//! `[DONE]`, with cumulative usage. `base_url`: `https://aip.baidubce.com`.
//! (Qianfan v2 is OpenAI-compatible and served by the `openai` adapter.)

use super::{
    classify, invalid_answer, json_body, json_frame, Adapter, Progress, StreamDecoder,
    UpstreamCall, UpstreamClient,
};
use crate::chat::framing::Frame;
use crate::chat::{
    new_id, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, EmbeddingsRequest,
    FinishReason, Role, ToolCall, Unsupported,
};
use crate::error::{GatewayError, ProviderError, ProviderErrorKind};
use axum::http::{HeaderMap, Method, StatusCode};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::provider_kind::ProviderKind;
use shared::usage::TokenUsage;
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Refresh this long before the token's stated expiry.
const REFRESH_MARGIN: Duration = Duration::from_secs(3600);
/// Baidu v1 rejects a temperature of 0; its range is (0, 1].
const MIN_TEMPERATURE: f64 = 0.01;

pub struct Qianfan {
    base_url: String,
    /// The API Key (OAuth client_id) and Secret Key (client_secret).
    client_id: String,
    client_secret: String,
    token: RwLock<Option<AccessToken>>,
    refreshing: tokio::sync::Mutex<()>,
}

struct AccessToken {
    value: String,
    refresh_at: Instant,
}

/// Model names as Baidu lists them, and the path segment each is served at.
const ENDPOINTS: &[(&str, &str)] = &[
    ("ernie-4.0-8k", "completions_pro"),
    ("ernie-3.5-8k", "completions"),
    ("ernie-speed-8k", "ernie_speed"),
    ("ernie-speed-128k", "ernie-speed-128k"),
    ("ernie-lite-8k-0308", "ernie-lite-8k"),
    ("ernie-tiny-8k", "ernie-tiny-8k"),
    ("ernie-bot-turbo", "eb-instant"),
];

/// A known model name becomes its path segment; anything else is taken to
/// be the segment itself (custom deployments have their own).
fn endpoint(model: &str) -> &str {
    let lower = model.to_ascii_lowercase();
    ENDPOINTS
        .iter()
        .find(|(name, _)| *name == lower)
        .map_or(model, |(_, path)| path)
}

impl Qianfan {
    pub fn new(base_url: String, api_key: &str, secret_key: &str) -> Self {
        Qianfan {
            base_url,
            client_id: api_key.to_owned(),
            client_secret: secret_key.to_owned(),
            token: RwLock::new(None),
            refreshing: tokio::sync::Mutex::new(()),
        }
    }

    fn current_token(&self) -> Option<String> {
        let token = self.token.read().ok()?;
        token
            .as_ref()
            .filter(|t| t.refresh_at > Instant::now())
            .map(|t| t.value.clone())
    }

    fn forget_token(&self) {
        if let Ok(mut token) = self.token.write() {
            *token = None;
        }
    }

    async fn refresh(&self, http: &UpstreamClient, timeout: Duration) -> Result<(), ProviderError> {
        // One refresh at a time; those that waited find the new token.
        let _single_flight = self.refreshing.lock().await;
        if self.current_token().is_some() {
            return Ok(());
        }
        let uri = format!(
            "{}/oauth/2.0/token?grant_type=client_credentials&client_id={}&client_secret={}",
            self.base_url,
            urlencode(&self.client_id),
            urlencode(&self.client_secret)
        );
        let request = hyper::Request::builder()
            .method(Method::POST)
            .uri(uri)
            .body(http_body_util::Full::new(Bytes::new()))
            .map_err(|_| invalid_answer())?;
        let unreachable = || {
            ProviderError::new(
                ProviderErrorKind::Server,
                "The access-token exchange failed.",
            )
        };
        let response = tokio::time::timeout(timeout, http.send(request, None))
            .await
            .map_err(|_| {
                ProviderError::new(
                    ProviderErrorKind::Timeout,
                    "The access-token exchange timed out.",
                )
            })?
            .map_err(|_| unreachable())?;
        let body = super::read_limited(response, 64 * 1024)
            .await
            .ok_or_else(unreachable)?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            access_token: Option<String>,
            #[serde(default)]
            expires_in: u64,
        }
        let answer: TokenAnswer = json_body(&body)?;
        let Some(value) = answer.access_token else {
            // {"error":"invalid_client",..}: the credentials were refused.
            return Err(ProviderError::new(
                ProviderErrorKind::Authentication,
                String::new(),
            ));
        };
        let lifetime = Duration::from_secs(answer.expires_in).saturating_sub(REFRESH_MARGIN);
        if let Ok(mut token) = self.token.write() {
            *token = Some(AccessToken {
                value,
                refresh_at: Instant::now() + lifetime.max(Duration::from_secs(60)),
            });
        }
        Ok(())
    }

    fn call(&self, path: String, body: &Value) -> Result<UpstreamCall, GatewayError> {
        let token = self
            .current_token()
            .ok_or_else(|| GatewayError::UpstreamInvalid("qianfan access token".into()))?;
        let body =
            serde_json::to_vec(body).map_err(|e| GatewayError::bad_request(e.to_string(), None))?;
        Ok(UpstreamCall::json(
            format!(
                "{}/rpc/2.0/ai_custom/v1/wenxinworkshop/{path}?access_token={}",
                self.base_url,
                urlencode(&token)
            ),
            Bytes::from(body),
        ))
    }

    /// A token Baidu calls invalid is dropped, so the next call fetches another.
    fn read_error(&self, code: i64, message: &str) -> ProviderError {
        if matches!(code, 110 | 111) {
            self.forget_token();
        }
        read_error(code, message)
    }
}

/// `{"error_code":..,"error_msg":..}`, in a 200 body or a stream event.
fn read_error(code: i64, message: &str) -> ProviderError {
    let kind = match code {
        _ if message.contains("max length") => ProviderErrorKind::ContextLengthExceeded,
        6 | 13 | 14 | 110 | 111 => ProviderErrorKind::Authentication,
        4 | 18 => ProviderErrorKind::RateLimited,
        17 | 19 => ProviderErrorKind::QuotaExhausted,
        336100 => ProviderErrorKind::Overloaded,
        1 | 2 | 336000 => ProviderErrorKind::Server,
        _ => classify(StatusCode::BAD_REQUEST, &[], message),
    };
    ProviderError::new(kind, message)
}

/// Query values: the few characters a token or key may hold that a URL cannot.
fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn translate(request: &ChatRequest) -> Result<Value, GatewayError> {
    request.refuse(
        "qianfan (v1)",
        &[
            Unsupported::N,
            Unsupported::Images,
            Unsupported::ResponseFormat,
            Unsupported::Seed,
            Unsupported::Penalties,
        ],
    )?;
    let mut messages: Vec<Value> = Vec::new();
    for message in &request.messages {
        let (role, mut out) = match message.role {
            Role::System | Role::Developer => continue,
            Role::User => ("user", json!({"role": "user", "content": message.text()})),
            Role::Assistant => {
                let mut out = json!({"role": "assistant", "content": message.text()});
                if let Some(call) = message.tool_calls().first() {
                    out["function_call"] =
                        json!({"name": call.function.name, "arguments": call.function.arguments});
                }
                ("assistant", out)
            }
            Role::Tool => {
                let name = message.name.clone().or_else(|| {
                    let id = message.tool_call_id.as_deref()?;
                    request
                        .messages
                        .iter()
                        .flat_map(|m| m.tool_calls())
                        .find(|c| c.id == id)
                        .map(|c| c.function.name.clone())
                });
                (
                    "function",
                    json!({"role": "function", "name": name, "content": message.text()}),
                )
            }
        };
        // Baidu wants strictly alternating turns: same-role neighbours merge.
        match messages.last_mut() {
            Some(last) if last["role"] == role && role != "function" => {
                let joined = format!(
                    "{}\n{}",
                    last["content"].as_str().unwrap_or_default(),
                    out["content"].as_str().unwrap_or_default()
                );
                last["content"] = json!(joined);
            }
            _ => {
                if out["content"] == "" && role == "assistant" && out.get("function_call").is_none()
                {
                    out["content"] = json!(" ");
                }
                messages.push(out);
            }
        }
    }
    if messages.len().is_multiple_of(2) || messages.first().is_none_or(|m| m["role"] != "user") {
        return Err(GatewayError::bad_request(
            "Provider kind qianfan (v1) needs turns that alternate user/assistant, starting and ending with a user message.",
            Some("messages"),
        ));
    }
    let mut body = json!({"messages": messages, "stream": request.stream});
    if let Some(system) = request.system_prompt() {
        body["system"] = json!(system);
    }
    if let Some(t) = request.temperature {
        body["temperature"] = json!(t.clamp(MIN_TEMPERATURE, 1.0));
    }
    if let Some(p) = request.top_p {
        body["top_p"] = json!(p);
    }
    if let Some(n) = request.max_output_tokens() {
        body["max_output_tokens"] = json!(n);
    }
    let stop = request.stop_sequences();
    if !stop.is_empty() {
        body["stop"] = json!(stop);
    }
    if let Some(user) = &request.user {
        body["user_id"] = json!(user);
    }
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        body["functions"] = tools
            .iter()
            .map(|t| json!({"name": t.function.name, "description": t.function.description.clone().unwrap_or_default(), "parameters": t.function.parameters_or_empty()}))
            .collect();
    }
    Ok(body)
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    result: String,
    #[serde(default)]
    is_end: bool,
    #[serde(default)]
    finish_reason: Option<String>,
    #[serde(default)]
    function_call: Option<FunctionCall>,
    #[serde(default)]
    usage: Option<TokenUsage>,
    #[serde(default)]
    error_code: Option<i64>,
    #[serde(default)]
    error_msg: Option<String>,
}

#[derive(Deserialize)]
struct FunctionCall {
    name: String,
    #[serde(default)]
    arguments: String,
}

fn finish_reason(reason: Option<&str>, called: bool) -> FinishReason {
    match reason {
        _ if called => FinishReason::ToolCalls,
        Some("length") => FinishReason::Length,
        Some("content_filter") => FinishReason::ContentFilter,
        Some("function_call") => FinishReason::ToolCalls,
        _ => FinishReason::Stop,
    }
}

impl Adapter for Qianfan {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Qianfan
    }

    fn prepare<'a>(
        &'a self,
        http: &'a UpstreamClient,
        timeout: Duration,
    ) -> Option<BoxFuture<'a, Result<(), ProviderError>>> {
        if self.current_token().is_some() {
            return None;
        }
        Some(Box::pin(self.refresh(http, timeout)))
    }

    fn chat_request(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        self.call(format!("chat/{}", endpoint(model)), &translate(request)?)
    }

    fn chat_response(&self, model: &str, body: &[u8]) -> Result<ChatCompletion, ProviderError> {
        let answer: Answer = json_body(body)?;
        if let Some(code) = answer.error_code {
            return Err(self.read_error(code, answer.error_msg.as_deref().unwrap_or_default()));
        }
        let calls: Vec<ToolCall> = answer
            .function_call
            .map(|c| ToolCall::new(new_id("call_"), c.name, c.arguments))
            .into_iter()
            .collect();
        let reason = finish_reason(answer.finish_reason.as_deref(), !calls.is_empty());
        Ok(ChatCompletion::single(
            answer.id.unwrap_or_else(|| new_id("chatcmpl-")),
            model,
            AssistantMessage::new(answer.result, calls),
            Some(reason),
            answer.usage,
        ))
    }

    fn stream_decoder(&self, model: &str) -> Box<dyn StreamDecoder> {
        Box::new(QianfanStream {
            progress: Progress::new(model),
        })
    }

    fn embeddings_request(
        &self,
        model: &str,
        request: &EmbeddingsRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        self.call(
            format!("embeddings/{model}"),
            &json!({"input": request.texts("qianfan")?}),
        )
    }

    fn embeddings_response(
        &self,
        body: &[u8],
    ) -> Result<(Vec<Vec<f32>>, Option<TokenUsage>), ProviderError> {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(default)]
            data: Vec<Embedding>,
            #[serde(default)]
            usage: Option<TokenUsage>,
            #[serde(default)]
            error_code: Option<i64>,
            #[serde(default)]
            error_msg: Option<String>,
        }
        #[derive(Deserialize)]
        struct Embedding {
            embedding: Vec<f32>,
        }
        let answer: Answer = json_body(body)?;
        if let Some(code) = answer.error_code {
            return Err(self.read_error(code, answer.error_msg.as_deref().unwrap_or_default()));
        }
        Ok((
            answer.data.into_iter().map(|e| e.embedding).collect(),
            answer.usage,
        ))
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        match value.get("error_code").and_then(Value::as_i64) {
            Some(code) => self.read_error(code, value["error_msg"].as_str().unwrap_or_default()),
            None => ProviderError::new(ProviderErrorKind::from_status(status), String::new()),
        }
        .with_retry_after(headers)
    }
}

struct QianfanStream {
    progress: Progress,
}

impl StreamDecoder for QianfanStream {
    fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        let answer: Answer = json_frame(&frame)?;
        if let Some(code) = answer.error_code {
            return Err(read_error(
                code,
                answer.error_msg.as_deref().unwrap_or_default(),
            ));
        }
        self.progress.start(answer.id.as_deref(), out);
        if let Some(usage) = answer.usage {
            self.progress.usage = Some(usage);
        }
        if !answer.result.is_empty() {
            out.push(self.progress.builder.text(answer.result));
        }
        let called = answer.function_call.is_some();
        if let Some(call) = answer.function_call {
            let call = ToolCall::new(new_id("call_"), call.name, call.arguments);
            self.progress.tool_call(0, call, out);
        }
        if answer.is_end {
            let reason = finish_reason(answer.finish_reason.as_deref(), called);
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

    fn adapter() -> Qianfan {
        let adapter = Qianfan::new("https://aip.baidubce.com".into(), "ak", "sk");
        if let Ok(mut token) = adapter.token.write() {
            *token = Some(AccessToken {
                value: "24.tok".into(),
                refresh_at: Instant::now() + Duration::from_secs(60),
            });
        }
        adapter
    }

    #[test]
    fn translates_the_request_with_the_model_in_the_path() {
        let request = ChatRequest::parse(br#"{"model":"pub","messages":[{"role":"system","content":"You help."},{"role":"user","content":"a"},{"role":"user","content":"b"}],"temperature":0,"max_tokens":30}"#).expect("valid");
        let call = adapter()
            .chat_request("ERNIE-4.0-8K", &request)
            .expect("translated");
        assert_eq!(call.uri, "https://aip.baidubce.com/rpc/2.0/ai_custom/v1/wenxinworkshop/chat/completions_pro?access_token=24.tok");
        let body: Value = serde_json::from_slice(&call.body).expect("json");
        assert_eq!(
            body,
            json!({"messages": [{"role": "user", "content": "a\nb"}], "stream": false, "system": "You help.", "temperature": 0.01, "max_output_tokens": 30})
        );
        let even = ChatRequest::parse(br#"{"model":"m","messages":[{"role":"user","content":"a"},{"role":"assistant","content":"b"}]}"#).expect("valid");
        assert!(adapter().chat_request("ernie-speed-8k", &even).is_err());
    }

    #[test]
    fn reads_errors_in_200_bodies_and_streams_ending_with_is_end() {
        let error = adapter()
            .chat_response(
                "m",
                br#"{"error_code":110,"error_msg":"Access token invalid or no longer valid"}"#,
            )
            .expect_err("error");
        assert_eq!(error.kind, ProviderErrorKind::Authentication);
        let error = adapter()
            .chat_response(
                "m",
                br#"{"error_code":18,"error_msg":"Open api qps request limit reached"}"#,
            )
            .expect_err("error");
        assert!(error.retryable());
        let answer = serde_json::to_value(adapter().chat_response("m", r#"{"id":"as-1","object":"chat.completion","created":1,"result":"你好！","is_truncated":false,"finish_reason":"normal","usage":{"prompt_tokens":2,"completion_tokens":9,"total_tokens":11}}"#.as_bytes()).expect("answer")).expect("json");
        assert_eq!(
            (
                answer["choices"][0]["message"]["content"].as_str(),
                answer["usage"]["total_tokens"].as_i64()
            ),
            (Some("你好！"), Some(11))
        );

        let mut decoder = adapter().stream_decoder("m");
        let mut chunks = Vec::new();
        let frame = |data: &str| Frame {
            event: None,
            data: data.to_owned(),
        };
        decoder.decode(frame(r#"{"id":"as-2","sentence_id":0,"is_end":false,"result":"你好，","usage":{"prompt_tokens":2,"completion_tokens":3,"total_tokens":5}}"#), &mut chunks).expect("ok");
        decoder.decode(frame(r#"{"id":"as-2","sentence_id":1,"is_end":true,"result":"世界","finish_reason":"normal","usage":{"prompt_tokens":2,"completion_tokens":6,"total_tokens":8}}"#), &mut chunks).expect("ok");
        assert!(decoder.finished());
        assert_eq!(decoder.usage().map(|u| u.total_tokens), Some(8));
        assert_eq!(
            chunks.last().and_then(|c| c.choices[0].finish_reason),
            Some(FinishReason::Stop)
        );
    }
}
