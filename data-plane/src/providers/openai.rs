//! OpenAI's chat completions and embeddings wire format, spoken by OpenAI,
//! Azure OpenAI and every OpenAI-compatible API (DeepSeek, vLLM, Ark, Qianfan
//! v2, DashScope compatible mode, Hunyuan's and Ollama's `/v1`). Requests
//! from OpenAI clients take the passthrough path: their bytes are forwarded
//! with only the model spliced; typed translation is for other ingresses.

use super::Progress;
use super::{
    classify, invalid_answer, json_body, json_frame, secret_header, text_at, Adapter, Settings,
    StreamDecoder, UpstreamCall,
};
use crate::chat::framing::Frame;
use crate::chat::{ChatChunk, ChatCompletion, ChatRequest, StreamOptions};
use crate::error::{GatewayError, ProviderError};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use bytes::Bytes;
use serde_json::Value;
use shared::provider_kind::ProviderKind;

pub struct OpenAi {
    kind: ProviderKind,
    base_url: String,
    /// `Authorization: Bearer ..`, or Azure's `api-key`.
    credential: Option<(header::HeaderName, HeaderValue)>,
    azure: Option<Azure>,
}

struct Azure {
    api_version: String,
    /// Defaults to the route target's model name.
    deployment: Option<String>,
}

impl OpenAi {
    pub fn new(
        kind: ProviderKind,
        base_url: String,
        api_key: &str,
        settings: &Settings,
    ) -> Result<Self, String> {
        let azure = (kind == ProviderKind::AzureOpenai)
            .then(|| {
                Ok::<_, String>(Azure {
                    api_version: settings.required("api_version")?.to_owned(),
                    deployment: settings.get("deployment").map(str::to_owned),
                })
            })
            .transpose()?;
        let credential = match api_key {
            "" => None,
            key if azure.is_some() => Some((
                header::HeaderName::from_static("api-key"),
                secret_header(key)?,
            )),
            key => Some((
                header::AUTHORIZATION,
                secret_header(&format!("Bearer {key}"))?,
            )),
        };
        Ok(OpenAi {
            kind,
            base_url,
            credential,
            azure,
        })
    }

    fn call(&self, path: &str, model: &str, body: Bytes) -> UpstreamCall {
        let mut call = UpstreamCall::json(self.uri(path, model), body);
        if let Some((name, value)) = &self.credential {
            call.headers.insert(name.clone(), value.clone());
        }
        call
    }

    fn uri(&self, path: &str, model: &str) -> String {
        match &self.azure {
            Some(azure) => format!(
                "{}/openai/deployments/{}{path}?api-version={}",
                self.base_url,
                azure.deployment.as_deref().unwrap_or(model),
                azure.api_version
            ),
            None => format!("{}{path}", self.base_url),
        }
    }
}

impl Adapter for OpenAi {
    fn kind(&self) -> ProviderKind {
        self.kind
    }

    fn passthrough(&self, path: &str, model: &str, body: Bytes) -> Option<UpstreamCall> {
        Some(self.call(path, model, body))
    }

    fn chat_request(
        &self,
        model: &str,
        request: &ChatRequest,
    ) -> Result<UpstreamCall, GatewayError> {
        let mut request = request.clone();
        model.clone_into(&mut request.model);
        if request.stream {
            // Usage is needed for accounting; the egress hides it if unasked.
            request.stream_options = Some(StreamOptions {
                include_usage: true,
            });
        }
        let body = serde_json::to_vec(&request)
            .map_err(|e| GatewayError::bad_request(e.to_string(), None))?;
        Ok(self.call("/chat/completions", model, Bytes::from(body)))
    }

    fn chat_response(&self, _model: &str, body: &[u8]) -> Result<ChatCompletion, ProviderError> {
        let value: Value = json_body(body)?;
        if value.get("error").is_some() {
            return Err(read_error(StatusCode::OK, &value));
        }
        serde_json::from_value(value).map_err(|_| invalid_answer())
    }

    fn stream_decoder(&self, _model: &str) -> Box<dyn StreamDecoder> {
        Box::new(OpenAiStream::default())
    }

    fn error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ProviderError {
        let value: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        read_error(status, &value).with_retry_after(headers)
    }

    fn health_probe(&self) -> Option<UpstreamCall> {
        let uri = match &self.azure {
            Some(azure) => format!(
                "{}/openai/models?api-version={}",
                self.base_url, azure.api_version
            ),
            None => format!("{}/models", self.base_url),
        };
        let mut call = UpstreamCall::probe(uri);
        if let Some((name, value)) = &self.credential {
            call.headers.insert(name.clone(), value.clone());
        }
        Some(call)
    }
}

/// OpenAI's error object and the shapes compatible servers send instead:
/// vLLM's flat `{"object":"error",..}`, Azure's string codes and
/// `innererror`, Ollama's `{"error":"text"}`.
fn read_error(status: StatusCode, value: &Value) -> ProviderError {
    let error = match value.get("error") {
        Some(Value::String(message)) => &serde_json::json!({ "message": message }),
        Some(error @ Value::Object(_)) => error,
        _ => value,
    };
    let message = text_at(error, "/message");
    let codes = [
        text_at(error, "/code"),
        text_at(error, "/type"),
        text_at(error, "/innererror/code"),
    ];
    let codes: Vec<&str> = codes.iter().map(String::as_str).collect();
    let mut found = ProviderError::new(classify(status, &codes, &message), message);
    found.param = error
        .get("param")
        .and_then(Value::as_str)
        .map(str::to_owned);
    found
}

/// OpenAI chunks, decoded for ingresses of another format.
pub struct OpenAiStream {
    progress: Progress,
}

impl Default for OpenAiStream {
    fn default() -> Self {
        OpenAiStream {
            progress: Progress::new(""),
        }
    }
}

impl StreamDecoder for OpenAiStream {
    fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
        if frame.data.trim() == "[DONE]" {
            self.progress.finished = true;
            return Ok(());
        }
        let value: Value = json_frame(&frame)?;
        if value.get("error").is_some() {
            return Err(read_error(StatusCode::OK, &value));
        }
        let chunk: ChatChunk = serde_json::from_value(value).map_err(|_| invalid_answer())?;
        if let Some(usage) = chunk.usage {
            self.progress.usage = Some(usage);
        }
        // Usage-only chunks (and Azure's filter-results chunk) carry no choice.
        if !chunk.choices.is_empty() {
            out.push(ChatChunk {
                usage: None,
                ..chunk
            });
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
    use crate::error::ProviderErrorKind;

    fn error(status: u16, body: &str) -> ProviderError {
        let adapter = OpenAi::new(
            ProviderKind::Openai,
            "http://x/v1".into(),
            "k",
            &Settings(&Default::default()),
        )
        .expect("adapter");
        adapter.error(
            StatusCode::from_u16(status).expect("status"),
            &HeaderMap::new(),
            body.as_bytes(),
        )
    }

    #[test]
    fn reads_every_compatible_error_shape() {
        let e = error(
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        );
        assert_eq!(
            (e.kind, e.param.as_deref()),
            (ProviderErrorKind::ContextLengthExceeded, Some("messages"))
        );
        let e = error(
            400,
            r#"{"object":"error","message":"bad temperature","type":"BadRequestError","param":null,"code":400}"#,
        );
        assert_eq!(
            (e.kind, e.message.as_str()),
            (ProviderErrorKind::BadRequest, "bad temperature")
        );
        let e = error(
            429,
            r#"{"error":{"code":"429","message":"Requests have exceeded token rate limit. Please retry after 33 seconds."}}"#,
        );
        assert_eq!(e.kind, ProviderErrorKind::RateLimited);
        let e = error(
            400,
            r#"{"error":{"code":"content_filter","param":"prompt","innererror":{"code":"ResponsibleAIPolicyViolation"}}}"#,
        );
        assert_eq!(e.kind, ProviderErrorKind::ContentFilter);
        let e = error(
            404,
            r#"{"error":"model \"x\" not found, try pulling it first"}"#,
        );
        assert_eq!(e.kind, ProviderErrorKind::NotFound);
        let e = error(
            429,
            r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
        );
        assert!(!e.retryable());
        let e = error(
            402,
            r#"{"error":{"message":"Insufficient Balance","type":"unknown_error"}}"#,
        );
        assert_eq!(e.kind, ProviderErrorKind::QuotaExhausted);
        let e = error(503, "<html>busy</html>");
        assert_eq!(e.kind, ProviderErrorKind::Overloaded);
    }

    #[test]
    fn azure_puts_deployment_and_version_in_the_url_and_the_key_in_api_key() {
        let settings: std::collections::HashMap<String, String> =
            [("api_version".to_owned(), "2024-10-21".to_owned())].into();
        let adapter = OpenAi::new(
            ProviderKind::AzureOpenai,
            "https://r.openai.azure.com".into(),
            "k1",
            &Settings(&settings),
        )
        .expect("adapter");
        let call = adapter
            .passthrough("/chat/completions", "gpt4o", Bytes::new())
            .expect("call");
        assert_eq!(call.uri, "https://r.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21");
        assert_eq!(
            call.headers.get("api-key").map(HeaderValue::as_bytes),
            Some(&b"k1"[..])
        );
        assert!(call.headers.get(header::AUTHORIZATION).is_none());
    }

    #[test]
    fn decodes_chunks_skipping_choiceless_ones() {
        let mut decoder = OpenAiStream::default();
        let mut out = Vec::new();
        let frame = |data: &str| Frame {
            event: None,
            data: data.to_owned(),
        };
        decoder
            .decode(
                frame(r#"{"id":"a","choices":[],"prompt_filter_results":[]}"#),
                &mut out,
            )
            .expect("ok");
        decoder.decode(frame(r#"{"id":"a","choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}],"usage":null}"#), &mut out).expect("ok");
        decoder.decode(frame(r#"{"id":"a","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4,"prompt_tokens_details":{"cached_tokens":2}}}"#), &mut out).expect("ok");
        assert!(!decoder.finished());
        decoder.decode(frame("[DONE]"), &mut out).expect("ok");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].choices[0].delta.content.as_deref(), Some("Hi"));
        assert_eq!(
            decoder.usage().map(|u| (u.total_tokens, u.cached_tokens)),
            Some((4, 2))
        );
        assert!(decoder.finished());
        let failed = decoder.decode(
            frame(r#"{"error":{"message":"Overloaded","type":"overloaded_error"}}"#),
            &mut out,
        );
        assert!(failed.expect_err("error").retryable());
    }
}
