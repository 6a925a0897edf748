//! Reading and checking a client's request body: only the fields routing
//! needs are interpreted; everything else passes to the provider untouched.

use crate::error::GatewayError;
use crate::usage::{Endpoint, TokenUsage};
use axum::body::Body;
use axum::body::HttpBody as _;
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::ops::Range;

/// The body, copied into an allocation of its own. hyper hands a body that
/// came with its head as a slice of the connection's 8 KiB read buffer, and
/// the request is kept until its answer ends (to count its prompt should the
/// provider not): a stream would pin that buffer for its whole length while
/// hyper reads into another (docs/benchmarks.md).
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, GatewayError> {
    let mut body = Limited::new(body, limit);
    // The declared length, within the limit: a client's claim allocates no more.
    let declared = body.size_hint().lower().min(limit as u64);
    let mut out = BytesMut::with_capacity(usize::try_from(declared).unwrap_or(limit));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|error| {
            if error.downcast_ref::<LengthLimitError>().is_some() {
                GatewayError::BodyTooLarge(limit)
            } else {
                GatewayError::bad_request("The request body could not be read.", None)
            }
        })?;
        if let Some(data) = frame.data_ref() {
            out.extend_from_slice(data);
        }
    }
    Ok(out.freeze())
}

/// What a refused request's unread body may still cost: this much, this long.
const DISCARD_BYTES: usize = 64 * 1024;
const DISCARD_TIME: std::time::Duration = std::time::Duration::from_secs(5);

/// For a request answered before its body was read (refused at auth): reads
/// the body and drops it, in the background and within a small bound, as
/// nginx does. Dropping it unread would make HTTP/2 reset the stream while
/// the client is still uploading, which clients such as curl report as a
/// failure although the answer arrived.
pub fn discard_body(body: Body) {
    tokio::spawn(async move {
        let drained = Limited::new(body, DISCARD_BYTES).collect();
        let _ = tokio::time::timeout(DISCARD_TIME, drained).await;
    });
}

/// serde_json's own limit for typed values; raw values are read without one,
/// and a provider should not be sent what no JSON parser would read.
const MAX_JSON_DEPTH: usize = 128;

/// Whether arrays and objects nest deeper than `limit` (strings skipped).
fn nests_deeper_than(body: &[u8], limit: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &byte in body {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

pub struct ProxyRequest {
    pub model: String,
    pub stream: bool,
    /// Whether the client itself asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
    /// The most tokens the answer may have, if the request says.
    pub max_tokens: Option<u32>,
    ask_stream_usage: bool,
    /// The answer's token cap set by the gateway, for a request that set none.
    max_tokens_cap: Option<u32>,
    /// How this endpoint names the answer's token cap.
    max_tokens_field: &'static str,
    body: Bytes,
    /// Where the `model` value and the `stream_options` value sit in `body`.
    model_span: Range<usize>,
    stream_options_span: Option<Range<usize>>,
}

/// The fields the gateway reads. Values stay raw slices of the body, so
/// checking a request allocates nothing for the messages it carries. An
/// explicit `null` is kept (as `Some("null")`): its place in the body matters.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default, deserialize_with = "present")]
    model: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    stream_options: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    messages: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    input: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    prompt: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_completion_tokens: Option<&'a RawValue>,
    #[serde(borrow, default, deserialize_with = "present")]
    max_output_tokens: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(d).map(Some)
}

impl ProxyRequest {
    pub fn parse(endpoint: Endpoint, body: Bytes) -> Result<Self, GatewayError> {
        if body.is_empty() {
            return Err(GatewayError::bad_request(
                "The request body is empty; expected a JSON object.",
                None,
            ));
        }
        // Checked first: serde would also read a JSON array into the struct.
        if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(GatewayError::bad_request(
                "The request body must be a JSON object.",
                None,
            ));
        }
        if nests_deeper_than(&body, MAX_JSON_DEPTH) {
            return Err(GatewayError::bad_request(
                format!("The request body nests JSON deeper than {MAX_JSON_DEPTH} levels."),
                None,
            ));
        }
        let fields: Fields = serde_json::from_slice(&body).map_err(|e| {
            GatewayError::bad_request(
                format!("The request body is not a valid JSON object: {e}"),
                None,
            )
        })?;
        let Some(raw_model) = fields.model else {
            return Err(GatewayError::bad_request(
                "Missing required parameter: 'model'.",
                Some("model"),
            ));
        };
        let model = match serde_json::from_str::<String>(raw_model.get()) {
            Ok(model) if !model.is_empty() => model,
            _ => {
                return Err(GatewayError::bad_request(
                    "'model' must be a non-empty string.",
                    Some("model"),
                ))
            }
        };
        let stream = match fields.stream.map(RawValue::get) {
            None | Some("null") | Some("false") => false,
            Some("true") => true,
            Some(_) => {
                return Err(GatewayError::bad_request(
                    "'stream' must be a boolean.",
                    Some("stream"),
                ))
            }
        };
        match endpoint {
            Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => {
                match fields.messages.map(json_kind) {
                    Some(JsonKind::Array { empty: false }) => {}
                    Some(JsonKind::Array { empty: true }) => {
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
                }
            }
            Endpoint::Completions => required_text_or_array(fields.prompt, "prompt")?,
            Endpoint::Responses => required_text_or_array(fields.input, "input")?,
            Endpoint::Embeddings => {
                if stream {
                    return Err(GatewayError::bad_request(
                        "Embeddings cannot be streamed.",
                        Some("stream"),
                    ));
                }
                required_text_or_array(fields.input, "input")?;
            }
        }
        let client_wants_usage = match fields.stream_options.map(|raw| (raw, json_kind(raw))) {
            None | Some((_, JsonKind::Null)) => false,
            Some((raw, JsonKind::Object)) => {
                #[derive(Deserialize)]
                struct StreamOptions {
                    include_usage: Option<bool>,
                }
                serde_json::from_str::<StreamOptions>(raw.get())
                    .map_err(|_| {
                        GatewayError::bad_request(
                            "'stream_options.include_usage' must be a boolean.",
                            Some("stream_options"),
                        )
                    })?
                    .include_usage
                    .unwrap_or(false)
            }
            Some(_) => {
                return Err(GatewayError::bad_request(
                    "'stream_options' must be an object.",
                    Some("stream_options"),
                ))
            }
        };
        // The newer names win; a bad value is the provider's to refuse.
        let max_tokens = [
            fields.max_completion_tokens,
            fields.max_output_tokens,
            fields.max_tokens,
        ]
        .into_iter()
        .flatten()
        .find_map(|raw| serde_json::from_str::<u32>(raw.get()).ok());
        let model_span = span_in(&body, raw_model);
        let stream_options_span = fields.stream_options.map(|raw| span_in(&body, raw));
        Ok(Self {
            // The Responses API and Anthropic report usage in their streams unasked.
            ask_stream_usage: matches!(endpoint, Endpoint::ChatCompletions | Endpoint::Completions),
            max_tokens_cap: None,
            max_tokens_field: match endpoint {
                Endpoint::Responses => "max_output_tokens",
                _ => "max_tokens",
            },
            model,
            stream,
            client_wants_usage,
            max_tokens,
            model_span,
            stream_options_span,
            body,
        })
    }

    /// The client's bytes as they came.
    pub fn body(&self) -> &[u8] {
        &self.body
    }

    pub fn max_tokens_cap(&self) -> Option<u32> {
        self.max_tokens_cap
    }

    /// The provider is asked for at most `cap` answer tokens (the request set none).
    pub fn cap_max_tokens(&mut self, cap: u32) {
        self.max_tokens_cap = Some(cap);
        self.max_tokens = Some(cap);
    }

    /// The body for the provider: the client's bytes with the upstream model
    /// name spliced in and, for streams, `include_usage` asked for, which
    /// accounting needs. Nothing else is re-encoded.
    pub fn upstream_body(&self, upstream_model: &str) -> Bytes {
        let mut edits: Vec<(Range<usize>, Vec<u8>)> = Vec::with_capacity(3);
        // After the object's opening brace; the body starts with it.
        let brace = self
            .body
            .iter()
            .position(|b| *b == b'{')
            .map_or(0, |at| at + 1);
        if let Some(cap) = self.max_tokens_cap {
            let field = format!("\"{}\":{cap},", self.max_tokens_field);
            edits.push((brace..brace, field.into_bytes()));
        }
        let model = serde_json::to_vec(upstream_model).unwrap_or_default();
        if self.body[self.model_span.clone()] != model[..] {
            edits.push((self.model_span.clone(), model));
        }
        if self.stream && self.ask_stream_usage && !self.client_wants_usage {
            match &self.stream_options_span {
                Some(span) => edits.push((span.clone(), self.stream_options_with_usage(span))),
                None => {
                    edits.push((
                        brace..brace,
                        br#""stream_options":{"include_usage":true},"#.to_vec(),
                    ));
                }
            }
        }
        if edits.is_empty() {
            return self.body.clone();
        }
        edits.sort_by_key(|(span, _)| span.start);
        let mut out = BytesMut::with_capacity(self.body.len() + 64);
        let mut at = 0;
        for (span, replacement) in edits {
            out.extend_from_slice(&self.body[at..span.start]);
            out.extend_from_slice(&replacement);
            at = span.end;
        }
        out.extend_from_slice(&self.body[at..]);
        out.freeze()
    }

    /// The client's `stream_options` (an object or null), with `include_usage` set.
    fn stream_options_with_usage(&self, span: &Range<usize>) -> Vec<u8> {
        let mut options: Map<String, Value> =
            serde_json::from_slice(&self.body[span.clone()]).unwrap_or_default();
        options.insert("include_usage".into(), Value::Bool(true));
        serde_json::to_vec(&options).unwrap_or_else(|_| br#"{"include_usage":true}"#.to_vec())
    }
}

fn required_text_or_array(
    value: Option<&RawValue>,
    name: &'static str,
) -> Result<(), GatewayError> {
    match value.map(json_kind) {
        Some(JsonKind::String | JsonKind::Array { .. }) => Ok(()),
        Some(_) => Err(GatewayError::bad_request(
            format!("'{name}' must be a string or an array."),
            Some(name),
        )),
        None => Err(GatewayError::bad_request(
            format!("Missing required parameter: '{name}'."),
            Some(name),
        )),
    }
}

enum JsonKind {
    Null,
    String,
    Array { empty: bool },
    Object,
    Other,
}

/// The kind of a raw JSON value, which serde has already checked is well formed.
fn json_kind(raw: &RawValue) -> JsonKind {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => JsonKind::Null,
        Some(b'"') => JsonKind::String,
        Some(b'[') => JsonKind::Array {
            empty: text[1..].trim_start().starts_with(']'),
        },
        Some(b'{') => JsonKind::Object,
        _ => JsonKind::Other,
    }
}

/// Where a borrowed raw value lies within the body it was parsed from.
fn span_in(body: &[u8], raw: &RawValue) -> Range<usize> {
    let start = raw.get().as_ptr() as usize - body.as_ptr() as usize;
    start..start + raw.get().len()
}

/// The `usage` object of a non-streaming answer; zeros when absent.
pub fn usage_of(body: &[u8]) -> Option<TokenUsage> {
    serde_json::from_slice(crate::json_scan::top_level_value(body, b"usage")?).ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn nesting_is_measured_outside_strings() {
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(!super::nests_deeper_than(deep(128).as_bytes(), 128));
        assert!(super::nests_deeper_than(deep(129).as_bytes(), 128));
        let quoted = format!(r#"{{"a": "{}\" [[", "b": [1]}}"#, "[".repeat(500));
        assert!(!super::nests_deeper_than(quoted.as_bytes(), 2));
    }

    use super::*;

    fn chat(body: &str) -> Result<ProxyRequest, GatewayError> {
        ProxyRequest::parse(Endpoint::ChatCompletions, Bytes::from(body.to_owned()))
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
        let embed = ProxyRequest::parse(
            Endpoint::Embeddings,
            Bytes::from_static(br#"{"model":"e"}"#),
        );
        assert_eq!(param(embed), Some("input"));
    }

    #[test]
    fn rewrites_model_and_asks_for_stream_usage() {
        let request = chat(r#"{"model":"public","messages":[{"role":"user","content":"x"}],"stream":true,"temperature":0.2}"#)
            .expect("valid");
        assert!(request.stream && !request.client_wants_usage);
        let body: Value =
            serde_json::from_slice(&request.upstream_body("upstream-1")).expect("json");
        assert_eq!(body["model"], "upstream-1");
        assert_eq!(body["stream_options"]["include_usage"], true);
        assert_eq!(body["temperature"], 0.2);
    }

    #[test]
    fn forwards_the_client_bytes_with_only_the_model_spliced() {
        let original = r#" { "model" : "public", "messages":[{"role":"user","content":"caf\u00e9 \"x\""}], "n": 1.50 }"#;
        let request = chat(original).expect("valid");
        let upstream = request.upstream_body("up/stream");
        assert_eq!(
            std::str::from_utf8(&upstream).expect("utf8"),
            original.replace(r#""public""#, r#""up/stream""#)
        );
        assert_eq!(request.upstream_body("public"), original.as_bytes());
    }

    #[test]
    fn asks_for_stream_usage_keeping_the_client_options() {
        let with = |options: &str| {
            let body = format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"stream":true{options}}}"#
            );
            let request = chat(&body).expect("valid");
            let upstream: Value =
                serde_json::from_slice(&request.upstream_body("u")).expect("json");
            (
                request.client_wants_usage,
                upstream["stream_options"].clone(),
            )
        };
        assert_eq!(
            with(""),
            (false, serde_json::json!({"include_usage": true}))
        );
        assert_eq!(
            with(r#","stream_options":null"#),
            (false, serde_json::json!({"include_usage": true}))
        );
        assert_eq!(
            with(r#","stream_options":{"include_usage":false,"x":1}"#),
            (false, serde_json::json!({"include_usage": true, "x": 1}))
        );
        assert_eq!(
            with(r#","stream_options":{"include_usage":true}"#),
            (true, serde_json::json!({"include_usage": true}))
        );
    }

    #[test]
    fn refuses_what_splicing_cannot_trust() {
        assert_eq!(param(chat(r#"["m",true]"#)), None);
        assert_eq!(
            param(chat(r#"{"model":"a","model":"b","messages":[{}]}"#)),
            None
        );
        assert_eq!(
            param(chat(r#"{"model":"m","messages":[ ]}"#)),
            Some("messages")
        );
        assert_eq!(
            param(chat(
                r#"{"model":"m","messages":[{}],"stream_options":{"include_usage":1}}"#
            )),
            Some("stream_options")
        );
    }

    #[test]
    fn reads_usage_of_answers() {
        let body =
            br#"{"id":"x","usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#;
        assert_eq!(usage_of(body), Some(TokenUsage::new(3, 4)));
        assert_eq!(usage_of(b"{}"), None);
    }
}
