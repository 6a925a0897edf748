//! A team's own moderation service, asked over HTTP: the gateway POSTs
//! `{"stage":"request","route":..,"request":<the body>}` (and, for whole
//! answers when the route asks, `{"stage":"answer",..,"answer":<the answer>}`)
//! and reads `{"allow": true}` or `{"allow": false, "message": ".."}`.
//! Anything else, or no answer within the timeout, is a failure: the
//! request passes (fail open) or is refused with 503 (fail closed).

use crate::error::GatewayError;
use crate::providers::{read_limited, UpstreamClient};
use axum::http::{header, HeaderValue, Method};
use bytes::{BufMut, Bytes, BytesMut};
use http_body_util::Full;
use shared::guardrails::GuardrailWebhook;
use std::time::Duration;

/// What the service is asked about. Bodies are the JSON the gateway read or
/// will answer with.
pub enum Stage<'a> {
    Request {
        route: &'a str,
        request: &'a [u8],
    },
    Answer {
        route: &'a str,
        request: &'a [u8],
        answer: &'a [u8],
    },
}

#[derive(serde::Deserialize)]
struct Verdict {
    allow: bool,
    #[serde(default)]
    message: Option<String>,
}

/// The most of a verdict that is read.
const MAX_VERDICT_BYTES: usize = 64 * 1024;

pub async fn ask(
    http: &UpstreamClient,
    hook: &GuardrailWebhook,
    stage: Stage<'_>,
) -> Result<(), GatewayError> {
    let timeout = Duration::from_millis(u64::from(hook.timeout_ms));
    let verdict = tokio::time::timeout(timeout, call(http, hook, payload(&stage))).await;
    match verdict {
        Ok(Some(Verdict { allow: true, .. })) => {
            super::counted("webhook", "allow");
            Ok(())
        }
        Ok(Some(Verdict {
            allow: false,
            message,
        })) => Err(super::refused(
            "webhook",
            message.filter(|m| !m.trim().is_empty()).unwrap_or_else(|| {
                "The request was refused by this route's moderation service.".into()
            }),
        )),
        Ok(None) | Err(_) if hook.fail_open => {
            super::counted("webhook", "fail_open");
            Ok(())
        }
        Ok(None) | Err(_) => {
            super::counted("webhook", "fail_closed");
            Err(GatewayError::GuardrailUnavailable)
        }
    }
}

/// The bodies are embedded as they are: valid JSON, not re-encoded.
fn payload(stage: &Stage) -> Bytes {
    let mut out = BytesMut::with_capacity(256);
    let field = |out: &mut BytesMut, name: &str, json: &[u8]| {
        out.put_slice(b",\"");
        out.put_slice(name.as_bytes());
        out.put_slice(b"\":");
        out.put_slice(json);
    };
    let (name, route) = match stage {
        Stage::Request { route, .. } => ("request", route),
        Stage::Answer { route, .. } => ("answer", route),
    };
    out.put_slice(b"{\"stage\":\"");
    out.put_slice(name.as_bytes());
    out.put_slice(b"\"");
    let route = serde_json::to_vec(route).unwrap_or_default();
    field(&mut out, "route", &route);
    match stage {
        Stage::Request { request, .. } => field(&mut out, "request", request),
        Stage::Answer {
            request, answer, ..
        } => {
            field(&mut out, "request", request);
            field(&mut out, "answer", answer);
        }
    }
    out.put_slice(b"}");
    out.freeze()
}

async fn call(http: &UpstreamClient, hook: &GuardrailWebhook, payload: Bytes) -> Option<Verdict> {
    let request = hyper::Request::builder()
        .method(Method::POST)
        .uri(&hook.url)
        .header(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )
        .body(Full::new(payload))
        .ok()?;
    let response = http.send(request, None).await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let body = read_limited(response, MAX_VERDICT_BYTES).await?;
    serde_json::from_slice(&body).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_embeds_the_bodies_as_json() {
        let payload = payload(&Stage::Answer {
            route: "chat",
            request: br#"{"messages":[]}"#,
            answer: br#"{"choices":[]}"#,
        });
        let value: serde_json::Value = serde_json::from_slice(&payload).expect("json");
        assert_eq!(
            value,
            serde_json::json!({"stage": "answer", "route": "chat", "request": {"messages": []}, "answer": {"choices": []}})
        );
    }
}
