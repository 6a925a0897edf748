//! Reading and checking a client's request body: only the fields routing
//! needs are interpreted; everything else passes to the provider untouched.

use crate::error::GatewayError;
use crate::usage::{Endpoint, TokenUsage};
use axum::body::Body;
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::{Map, Value};

pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => {
            Err(GatewayError::BodyTooLarge(limit))
        }
        Err(_) => Err(GatewayError::bad_request(
            "The request body could not be read.",
            None,
        )),
    }
}

pub struct ProxyRequest {
    pub model: String,
    pub stream: bool,
    /// Whether the client itself asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    fields: Map<String, Value>,
}

impl ProxyRequest {
    pub fn parse(endpoint: Endpoint, body: &[u8]) -> Result<Self, GatewayError> {
        if body.is_empty() {
            return Err(GatewayError::bad_request(
                "The request body is empty; expected a JSON object.",
                None,
            ));
        }
        let fields: Map<String, Value> = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_request(
                format!("The request body is not a valid JSON object: {e}"),
                None,
            )
        })?;
        let model = match fields.get("model") {
            Some(Value::String(model)) if !model.is_empty() => model.clone(),
            Some(_) => {
                return Err(GatewayError::bad_request(
                    "'model' must be a non-empty string.",
                    Some("model"),
                ))
            }
            None => {
                return Err(GatewayError::bad_request(
                    "Missing required parameter: 'model'.",
                    Some("model"),
                ))
            }
        };
        let stream = match fields.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(stream)) => *stream,
            Some(_) => {
                return Err(GatewayError::bad_request(
                    "'stream' must be a boolean.",
                    Some("stream"),
                ))
            }
        };
        match endpoint {
            Endpoint::ChatCompletions => match fields.get("messages") {
                Some(Value::Array(messages)) if !messages.is_empty() => {}
                Some(Value::Array(_)) => {
                    return Err(GatewayError::bad_request(
                        "'messages' must not be empty.",
                        Some("messages"),
                    ))
                }
                Some(_) => {
                    return Err(GatewayError::bad_request(
                        "'messages' must be an array.",
                        Some("messages"),
                    ))
                }
                None => {
                    return Err(GatewayError::bad_request(
                        "Missing required parameter: 'messages'.",
                        Some("messages"),
                    ))
                }
            },
            Endpoint::Embeddings => {
                if stream {
                    return Err(GatewayError::bad_request(
                        "Embeddings cannot be streamed.",
                        Some("stream"),
                    ));
                }
                match fields.get("input") {
                    Some(Value::String(_)) | Some(Value::Array(_)) => {}
                    Some(_) => {
                        return Err(GatewayError::bad_request(
                            "'input' must be a string or an array.",
                            Some("input"),
                        ))
                    }
                    None => {
                        return Err(GatewayError::bad_request(
                            "Missing required parameter: 'input'.",
                            Some("input"),
                        ))
                    }
                }
            }
        }
        let client_wants_usage = fields
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        if fields
            .get("stream_options")
            .is_some_and(|o| !o.is_object() && !o.is_null())
        {
            return Err(GatewayError::bad_request(
                "'stream_options' must be an object.",
                Some("stream_options"),
            ));
        }
        Ok(Self {
            model,
            stream,
            client_wants_usage,
            fields,
        })
    }

    /// The body for the provider: the upstream model name, and for streams a
    /// request for the usage chunk, which accounting needs.
    pub fn upstream_body(&mut self, upstream_model: &str) -> Result<Vec<u8>, GatewayError> {
        self.fields
            .insert("model".into(), Value::String(upstream_model.to_owned()));
        if self.stream {
            let options = self
                .fields
                .entry("stream_options")
                .or_insert_with(|| Value::Object(Map::new()));
            if let Value::Null = options {
                *options = Value::Object(Map::new());
            }
            if let Value::Object(options) = options {
                options.insert("include_usage".into(), Value::Bool(true));
            }
        }
        serde_json::to_vec(&self.fields)
            .map_err(|_| GatewayError::bad_request("The request could not be re-encoded.", None))
    }
}

/// The `usage` object of a non-streaming answer; zeros when absent.
pub fn usage_of(body: &[u8]) -> TokenUsage {
    #[derive(serde::Deserialize)]
    struct WithUsage {
        usage: Option<TokenUsage>,
    }
    serde_json::from_slice::<WithUsage>(body)
        .ok()
        .and_then(|b| b.usage)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<ProxyRequest, GatewayError> {
        ProxyRequest::parse(Endpoint::ChatCompletions, body.as_bytes())
    }

    fn param(result: Result<ProxyRequest, GatewayError>) -> Option<&'static str> {
        match result {
            Err(GatewayError::BadRequest { param, .. }) => param,
            _ => Some("<not a bad request>"),
        }
    }

    #[test]
    fn refuses_malformed_requests_naming_the_parameter() {
        assert_eq!(param(chat("{")), None);
        assert_eq!(param(chat("[]")), None);
        assert_eq!(
            param(chat(r#"{"messages":[{"role":"user","content":"x"}]}"#)),
            Some("model")
        );
        assert_eq!(param(chat(r#"{"model":"m"}"#)), Some("messages"));
        assert_eq!(
            param(chat(r#"{"model":"m","messages":[]}"#)),
            Some("messages")
        );
        assert_eq!(
            param(chat(r#"{"model":"m","messages":[{}],"stream":"yes"}"#)),
            Some("stream")
        );
        let embed = ProxyRequest::parse(Endpoint::Embeddings, br#"{"model":"e"}"#);
        assert_eq!(param(embed), Some("input"));
    }

    #[test]
    fn rewrites_model_and_asks_for_stream_usage() {
        let mut request = chat(r#"{"model":"public","messages":[{"role":"user","content":"x"}],"stream":true,"temperature":0.2}"#)
            .expect("valid");
        assert!(request.stream && !request.client_wants_usage);
        let body: Value =
            serde_json::from_slice(&request.upstream_body("upstream-1").expect("encodes"))
                .expect("json");
        assert_eq!(body["model"], "upstream-1");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["temperature"], 0.2);
    }

    #[test]
    fn reads_usage_of_answers() {
        let body =
            br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        assert_eq!(
            usage_of(body),
            TokenUsage {
                prompt_tokens: 3,
                completion_tokens: 4,
                total_tokens: 7
            }
        );
        assert_eq!(usage_of(b"{}"), TokenUsage::default());
    }
}
