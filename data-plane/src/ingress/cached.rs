//! Answering from the response cache: the stored answer as the request
//! asks for it, and its usage recorded as a cache hit.

use super::{json_response, sse_response};
use crate::cache::Entry;
use crate::chat::ChatCompletion;
use crate::error::GatewayError;
use crate::relay::translate::{replay, Egress, OpenAiEgress};
use crate::router::table::ServedBy;
use crate::usage::{CacheUse, UsageDraft};
use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};

/// The stored JSON, or (for a stream) the stored answer replayed as
/// OpenAI's events, with a usage chunk when the client asked for one.
pub fn answer(
    entry: &Entry,
    stream: bool,
    include_usage: bool,
    mut draft: UsageDraft,
    billed: bool,
) -> Result<Response, GatewayError> {
    let response = if stream {
        let stored: ChatCompletion = serde_json::from_str(&entry.body)
            .map_err(|_| GatewayError::UpstreamInvalid("response cache".into()))?;
        sse_response(Body::from(events(&stored, entry, include_usage)))
    } else {
        json_response(entry.body.clone())
    };
    draft.record.provider.clone_from(&entry.provider);
    draft
        .record
        .upstream_model
        .clone_from(&entry.upstream_model);
    draft.cache = CacheUse::Hit { billed };
    draft.finish(200, Some(entry.usage), None);
    let served_by = ServedBy::new(&entry.provider, &entry.upstream_model);
    Ok(super::retry::with_headers(response, &served_by, 0))
}

fn events(stored: &ChatCompletion, entry: &Entry, include_usage: bool) -> Bytes {
    let mut egress = OpenAiEgress::new(include_usage);
    let mut out = BytesMut::new();
    for chunk in replay(stored) {
        egress.chunk(chunk, &mut out);
    }
    egress.end(Some(entry.usage), &mut out);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::assemble;
    use shared::usage::TokenUsage;

    #[test]
    fn a_replayed_answer_assembles_back_into_itself() {
        let body = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt",
            "choices":[{"index":0,"message":{"role":"assistant","content":"Hi","tool_calls":[
              {"id":"call_1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},
              "finish_reason":"tool_calls"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#;
        let stored: ChatCompletion = serde_json::from_str(body).expect("an answer");
        let entry: Entry = serde_json::from_value(serde_json::json!({
            "body": body, "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
            "provider": "p", "upstream_model": "u", "ttl_ms": 1000}))
        .expect("an entry");
        let events = events(&stored, &entry, true);
        let again = assemble::from_events(&events).expect("an answer");
        assert_eq!(
            serde_json::to_value(&again.choices).expect("json"),
            serde_json::to_value(&stored.choices).expect("json")
        );
        assert_eq!(again.usage, Some(TokenUsage::new(1, 2)));
        assert!(events.ends_with(b"data: [DONE]\n\n"));
    }
}
