//! Tencent Hunyuan's native Cloud API 3.0 (`ChatCompletions`,
//! `GetEmbedding`): PascalCase JSON, every request signed with
//! TC3-HMAC-SHA256 over the exact body bytes, errors as `Response.Error` in
//! HTTP 200 bodies, streams of `data:` events ending with a `FinishReason`
//! and no `[DONE]`, cumulative usage. `base_url`:
//! `https://hunyuan.tencentcloudapi.com`; `settings.secret_id` and the
//! provider's `secret_key` sign. (The OpenAI-compatible endpoint is served by
//! the `openai` adapter.)

use super::{
    classify, invalid_answer, json_body, json_frame, secret_header, Adapter, Progress, Settings,
    StreamDecoder, UpstreamCall,
};
use crate::chat::framing::Frame;
use crate::chat::{
    new_id, AssistantMessage, ChatChunk, ChatCompletion, ChatRequest, EmbeddingsRequest,
    FinishReason, Part, Role, ToolCall, ToolChoice, ToolChoiceMode, Unsupported,
};
use crate::error::{GatewayError, ProviderError, ProviderErrorKind};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use shared::provider_kind::ProviderKind;
use shared::usage::TokenUsage;
use std::collections::HashMap;

const SERVICE: &str = "hunyuan";
const VERSION: &str = "2023-09-01";
const DEFAULT_REGION: &str = "ap-guangzhou";

pub struct Hunyuan {
    base_url: String,
    host: String,
    secret_id: String,
    secret_key: String,
    region: HeaderValue,
}

impl Hunyuan {
    pub fn new(base_url: String, secret_key: &str, settings: &Settings) -> Result<Self, String> {
        let host = base_url
            .parse::<axum::http::Uri>()
            .ok()
            .and_then(|u| u.authority().map(|a| a.to_string()))
            .ok_or_else(|| "base_url has no host".to_owned())?;
        Ok(Hunyuan {
            base_url,
            host,
            secret_id: settings.required("secret_id")?.to_owned(),
            secret_key: secret_key.to_owned(),
            region: HeaderValue::try_from(settings.get("region").unwrap_or(DEFAULT_REGION))
                .map_err(|_| "settings.region is not a header value".to_owned())?,
        })
    }

    fn call(&self, action: &'static str, body: &Value) -> Result<UpstreamCall, GatewayError> {
        // Signed bytes must be exactly the bytes sent: serialised once.
        let body = Bytes::from(
            serde_json::to_vec(body).map_err(|e| GatewayError::bad_request(e.to_string(), None))?,
        );
        let timestamp = shared::time::now_ms() / 1000;
        let authorization = sign(
            &self.secret_id,
            &self.secret_key,
            &self.host,
            timestamp,
            &body,
        );
        let authorization = secret_header(&authorization)
            .map_err(|_| GatewayError::UpstreamInvalid(self.host.clone()))?;
        Ok(UpstreamCall::json(format!("{}/", self.base_url), body)
            .header("authorization", authorization)
            .header("x-tc-action", HeaderValue::from_static(action))
            .header("x-tc-version", HeaderValue::from_static(VERSION))
            .header("x-tc-timestamp", HeaderValue::from(timestamp))
            .header("x-tc-region", self.region.clone()))
    }
}

fn hmac(key: &[u8], message: &str) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(message.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The TC3-HMAC-SHA256 `Authorization` value, signing content-type and host
/// as the official SDKs do.
pub fn sign(secret_id: &str, secret_key: &str, host: &str, timestamp: i64, body: &[u8]) -> String {
    let date = chrono::DateTime::from_timestamp(timestamp, 0)
        .unwrap_or_default()
        .format("%Y-%m-%d")
        .to_string();
    let canonical = format!(
        "POST\n/\n\ncontent-type:application/json\nhost:{host}\n\ncontent-type;host\n{}",
        hex::encode(Sha256::digest(body))
    );
    let scope = format!("{date}/{SERVICE}/tc3_request");
    let to_sign = format!(
        "TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), &date);
    let k_service = hmac(&k_date, SERVICE);
    let k_signing = hmac(&k_service, "tc3_request");
    let signature = hex::encode(hmac(&k_signing, &to_sign));
    format!("TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders=content-type;host, Signature={signature}")
}

fn translate(model: &str, request: &ChatRequest) -> Result<Value, GatewayError> {
    // The native API has no max-tokens field (api "openai" has one).
    request.refuse(
        "hunyuan (native)",
        &[
            Unsupported::N,
            Unsupported::ResponseFormat,
            Unsupported::Penalties,
            Unsupported::MaxTokens,
        ],
    )?;
    let mut messages = Vec::new();
    // Hunyuan takes one system message, first.
    if let Some(system) = request.system_prompt() {
        messages.push(json!({"Role": "system", "Content": system}));
    }
    for message in &request.messages {
        let role = match message.role {
            Role::System | Role::Developer => continue,
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        };
        let mut out = json!({ "Role": role });
        let parts = message.parts();
        if parts.iter().any(|p| matches!(p, Part::ImageUrl { .. })) {
            out["Contents"] = parts
                .iter()
                .map(|p| match p {
                    Part::Text { text } => json!({"Type": "text", "Text": text}),
                    Part::ImageUrl { image_url } => {
                        json!({"Type": "image_url", "ImageUrl": {"Url": image_url.url}})
                    }
                })
                .collect();
        } else {
            out["Content"] = json!(message.text());
        }
        if !message.tool_calls().is_empty() {
            out["ToolCalls"] = message
                .tool_calls()
                .iter()
                .map(|c| json!({"Id": c.id, "Type": "function", "Function": {"Name": c.function.name, "Arguments": c.function.arguments}}))
                .collect();
        }
        if let Some(id) = &message.tool_call_id {
            out["ToolCallId"] = json!(id);
        }
        messages.push(out);
    }
    let mut body = json!({"Model": model, "Messages": messages, "Stream": request.stream});
    if let Some(t) = request.temperature {
        body["Temperature"] = json!(t);
    }
    if let Some(p) = request.top_p {
        body["TopP"] = json!(p);
    }
    if let Some(seed) = request.seed {
        body["Seed"] = json!(seed);
    }
    let stop = request.stop_sequences();
    if !stop.is_empty() {
        body["Stop"] = json!(stop);
    }
    if let Some(tools) = request.tools.as_ref().filter(|t| !t.is_empty()) {
        body["Tools"] = tools
            .iter()
            .map(|t| json!({"Type": "function", "Function": {"Name": t.function.name, "Description": t.function.description.clone().unwrap_or_default(), "Parameters": t.function.parameters_or_empty().to_string()}}))
            .collect();
    }
    match &request.tool_choice {
        None => {}
        Some(ToolChoice::Mode(ToolChoiceMode::None)) => body["ToolChoice"] = json!("none"),
        Some(ToolChoice::Mode(ToolChoiceMode::Auto)) => body["ToolChoice"] = json!("auto"),
        Some(ToolChoice::Mode(ToolChoiceMode::Required)) => {
            return Err(GatewayError::Unsupported {
                param: "tool_choice".into(),
                provider_kind: "hunyuan (native), as \"required\"".into(),
            })
        }
        Some(ToolChoice::Named(named)) => {
            body["ToolChoice"] = json!("custom");
            body["CustomTool"] =
                json!({"Type": "function", "Function": {"Name": named.function.name}});
        }
    }
    Ok(body)
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    choices: Vec<AnswerChoice>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<CloudError>,
    #[serde(default)]
    error_msg: Option<StreamErrorMsg>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AnswerChoice {
    #[serde(default)]
    finish_reason: String,
    #[serde(default)]
    message: Option<AnswerMessage>,
    #[serde(default)]
    delta: Option<AnswerMessage>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct AnswerMessage {
    #[serde(default)]
    content: String,
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    tool_calls: Vec<HunyuanToolCall>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HunyuanToolCall {
    #[serde(default)]
    id: String,
    function: HunyuanFunction,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HunyuanFunction {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arguments: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Usage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CloudError {
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct StreamErrorMsg {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    msg: String,
}

fn read_error(code: &str, message: &str) -> ProviderError {
    let kind = match code {
        c if c.starts_with("AuthFailure") => ProviderErrorKind::Authentication,
        "RequestLimitExceeded" | "LimitExceeded" | "FailedOperation.EngineServerLimitExceeded" => {
            ProviderErrorKind::RateLimited
        }
        "FailedOperation.EngineRequestTimeout" => ProviderErrorKind::Timeout,
        "FailedOperation.EngineServerError" | "InternalError" => ProviderErrorKind::Server,
        c if c.starts_with("OperationDenied") => ProviderErrorKind::ContentFilter,
        c if c.starts_with("ResourceUnavailable") || c == "FailedOperation.ServiceNotActivated" => {
            ProviderErrorKind::QuotaExhausted
        }
        c if c.starts_with("InvalidParameter") || c.starts_with("MissingParameter") => {
            ProviderErrorKind::BadRequest
        }
        c => classify(StatusCode::INTERNAL_SERVER_ERROR, &[c], message),
    };
    ProviderError::new(kind, message)
}

fn finish_reason(reason: &str, called: bool) -> Option<FinishReason> {
    match reason {
        "" => None,
        "sensitive" => Some(FinishReason::ContentFilter),
        "length" => Some(FinishReason::Length),
        "tool_calls" => Some(FinishReason::ToolCalls),
        _ if called => Some(FinishReason::ToolCalls),
        _ => Some(FinishReason::Stop),
    }
}

/// The native API wraps answers in `Response`; stream events are bare.
fn unwrap_response(value: Value) -> Value {
    match value {
        Value::Object(mut map) if map.contains_key("Response") => {
            map.remove("Response").unwrap_or_default()
        }
        other => other,
    }
}

impl Adapter for Hunyuan {
    fn kind(&self) -> ProviderKind {
        ProviderKind::Hunyuan
    }

    fn chat_request(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        self.call("ChatCompletions", &translate(model, request)?)
    }

    fn chat_response(&self, model: &str, body: &[u8]) -> Result<ChatCompletion, ProviderError> {
        let answer: Answer = serde_json::from_value(unwrap_response(json_body(body)?))
            .map_err(|_| invalid_answer())?;
        if let Some(error) = answer.error {
            return Err(read_error(&error.code, &error.message));
        }
        let choice = answer
            .choices
            .into_iter()
            .next()
            .ok_or_else(invalid_answer)?;
        let message = choice.message.unwrap_or_default();
        let calls: Vec<ToolCall> = message
            .tool_calls
            .into_iter()
            .map(|c| ToolCall::new(c.id, c.function.name, c.function.arguments))
            .collect();
        let reason =
            finish_reason(&choice.finish_reason, !calls.is_empty()).unwrap_or(FinishReason::Stop);
        let mut reply = AssistantMessage::new(message.content, calls);
        reply.reasoning_content = message.reasoning_content.filter(|r| !r.is_empty());
        Ok(ChatCompletion::single(
            answer.id.unwrap_or_else(|| new_id("chatcmpl-")),
            model,
            reply,
            Some(reason),
            answer
                .usage
                .map(|u| TokenUsage::new(u.prompt_tokens, u.completion_tokens)),
        ))
    }

    fn stream_decoder(&self, model: &str) -> Box<dyn StreamDecoder> {
        Box::new(HunyuanStream {
            progress: Progress::new(model),
            tools: HashMap::new(),
        })
    }

    fn embeddings_request(
        &self,
        _model: &str,
        request: &EmbeddingsRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        self.call(
            "GetEmbedding",
            &json!({ "InputList": request.texts("hunyuan")? }),
        )
    }

    fn embeddings_response(
        &self,
        body: &[u8],
    ) -> Result<(Vec<Vec<f32>>, Option<TokenUsage>), ProviderError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Answer {
            #[serde(default)]
            data: Vec<Embedding>,
            #[serde(default)]
            usage: Option<Usage>,
            #[serde(default)]
            error: Option<CloudError>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Embedding {
            embedding: Vec<f32>,
        }
        let answer: Answer = serde_json::from_value(unwrap_response(json_body(body)?))
            .map_err(|_| invalid_answer())?;
        if let Some(error) = answer.error {
            return Err(read_error(&error.code, &error.message));
        }
        let usage = answer.usage.map(|u| TokenUsage::new(u.prompt_tokens, 0));
        Ok((
            answer.data.into_iter().map(|e| e.embedding).collect(),
            usage,
        ))
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let value = unwrap_response(serde_json::from_slice(body).unwrap_or(Value::Null));
        let code = super::text_at(&value, "/Error/Code");
        let error = if code.is_empty() {
            ProviderError::new(ProviderErrorKind::from_status(status), String::new())
        } else {
            read_error(&code, &super::text_at(&value, "/Error/Message"))
        };
        error.with_retry_after(headers)
    }
}

struct HunyuanStream {
    progress: Progress,
    /// Tool calls are merged by id; each gets an OpenAI index.
    tools: HashMap<String, u32>,
}

impl StreamDecoder for HunyuanStream {
    fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        let answer: Answer = serde_json::from_value(unwrap_response(json_frame(&frame)?))
            .map_err(|_| invalid_answer())?;
        if let Some(error) = answer.error {
            return Err(read_error(&error.code, &error.message));
        }
        if let Some(error) = answer.error_msg.filter(|e| e.code != 0) {
            let kind = if error.code == 4001 {
                ProviderErrorKind::Timeout
            } else {
                ProviderErrorKind::Server
            };
            return Err(ProviderError::new(kind, error.msg));
        }
        self.progress.start(answer.id.as_deref(), out);
        if let Some(usage) = answer.usage {
            self.progress.usage = Some(TokenUsage::new(
                usage.prompt_tokens,
                usage.completion_tokens,
            ));
        }
        for choice in answer.choices {
            let delta = choice.delta.unwrap_or_default();
            if let Some(reasoning) = delta.reasoning_content.filter(|r| !r.is_empty()) {
                out.push(self.progress.builder.reasoning(reasoning));
            }
            if !delta.content.is_empty() {
                out.push(self.progress.builder.text(delta.content));
            }
            for call in delta.tool_calls {
                let next = self.tools.len() as u32;
                let index = match self.tools.get(&call.id) {
                    Some(index) => *index,
                    None => {
                        self.tools.insert(call.id.clone(), next);
                        out.push(self.progress.builder.tool_call_start(
                            next,
                            call.id,
                            call.function.name,
                        ));
                        next
                    }
                };
                if !call.function.arguments.is_empty() {
                    out.push(
                        self.progress
                            .builder
                            .tool_arguments(index, call.function.arguments),
                    );
                }
            }
            if let Some(reason) = finish_reason(&choice.finish_reason, !self.tools.is_empty()) {
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

    fn adapter() -> Hunyuan {
        let settings: HashMap<String, String> = [(
            "secret_id".to_owned(),
            "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE".to_owned(),
        )]
        .into();
        Hunyuan::new(
            "https://hunyuan.tencentcloudapi.com".into(),
            "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            &Settings(&settings),
        )
        .expect("adapter")
    }

    #[test]
    fn signs_as_tencent_cloud_documents() {
        // The expected signature was computed apart from this code, with
        // Python's hmac and hashlib following Tencent's TC3 steps.
        let auth = sign(
            "AKID",
            "secret",
            "hunyuan.tencentcloudapi.com",
            1_700_000_000,
            b"{}",
        );
        assert_eq!(auth, "TC3-HMAC-SHA256 Credential=AKID/2023-11-14/hunyuan/tc3_request, SignedHeaders=content-type;host, \
            Signature=565c8e33ea58c5441ce13a6160f2f5cec53cb06fcee49a6a780fd4bff279ea26");
        assert_ne!(
            auth,
            sign(
                "AKID",
                "secret",
                "hunyuan.tencentcloudapi.com",
                1_700_000_000,
                b"{ }"
            ),
            "the body is signed"
        );
    }

    #[test]
    fn translates_request_and_refuses_max_tokens() {
        let request = ChatRequest::parse(br#"{"model":"pub","messages":[{"role":"user","content":"hi"},{"role":"system","content":"s"}],"stop":["END"],"tool_choice":"auto","tools":[{"type":"function","function":{"name":"f"}}]}"#).expect("valid");
        let call = adapter()
            .chat_request("hunyuan-turbos-latest", &request)
            .expect("translated");
        assert_eq!(call.headers["x-tc-action"], "ChatCompletions");
        assert!(call.headers["authorization"]
            .to_str()
            .expect("ascii")
            .contains("Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/"));
        let body: Value = serde_json::from_slice(&call.body).expect("json");
        assert_eq!(
            body,
            json!({"Model": "hunyuan-turbos-latest", "Stream": false, "Stop": ["END"], "ToolChoice": "auto",
            "Messages": [{"Role": "system", "Content": "s"}, {"Role": "user", "Content": "hi"}],
            "Tools": [{"Type": "function", "Function": {"Name": "f", "Description": "", "Parameters": "{\"properties\":{},\"type\":\"object\"}"}}]})
        );
        let capped = ChatRequest::parse(
            br#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":5}"#,
        )
        .expect("valid");
        assert!(
            matches!(adapter().chat_request("h", &capped), Err(GatewayError::Unsupported { ref param, .. }) if param == "max_tokens")
        );
    }

    #[test]
    fn reads_errors_in_200_bodies_and_streams() {
        let error = adapter().chat_response("h", br#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"bad"},"RequestId":"r"}}"#).expect_err("error");
        assert_eq!(error.kind, ProviderErrorKind::Authentication);
        let limited = adapter().chat_response("h", br#"{"Response":{"Error":{"Code":"RequestLimitExceeded","Message":"slow down"},"RequestId":"r"}}"#).expect_err("error");
        assert!(limited.retryable());
        let mut decoder = adapter().stream_decoder("h");
        let mut chunks = Vec::new();
        let frame = |data: &str| Frame {
            event: None,
            data: data.to_owned(),
        };
        decoder.decode(frame(r#"{"Note":"n","Choices":[{"Index":0,"Delta":{"Role":"assistant","Content":"Hi"},"FinishReason":""}],"Created":1,"Id":"i1","Usage":{"PromptTokens":8,"CompletionTokens":1,"TotalTokens":9}}"#), &mut chunks).expect("ok");
        decoder.decode(frame(r#"{"Choices":[{"Index":0,"Delta":{"Role":"assistant","Content":""},"FinishReason":"sensitive"}],"Id":"i1","Usage":{"PromptTokens":8,"CompletionTokens":3,"TotalTokens":11}}"#), &mut chunks).expect("ok");
        assert!(decoder.finished());
        assert_eq!(
            chunks.last().and_then(|c| c.choices[0].finish_reason),
            Some(FinishReason::ContentFilter)
        );
        assert_eq!(decoder.usage().map(|u| u.total_tokens), Some(11));
    }
}
