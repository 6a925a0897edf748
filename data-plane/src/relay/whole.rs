//! A streamed answer as one whole: what its events add up to, in the form
//! the same request unstreamed would have been answered with, and a whole
//! answer told as events again. Checks that must see an answer whole (a
//! plugin's response hook, a moderation service) see a stream this way.

use crate::chat::framing::Frame;
use crate::chat::{assemble, ChatChunk, ChatCompletion};
use crate::error::GatewayError;
use crate::relay::sse_data;
use crate::relay::translate::{replay as replay_chunks, Egress, OpenAiEgress};
use bytes::BytesMut;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The format of a stream, by the ingress it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Form {
    /// OpenAI's `chat.completion.chunk` events: whole, a `chat.completion`.
    Chat,
    /// Anthropic's Messages events: whole, a `message`.
    Messages,
    /// Any other stream (legacy completions, the Responses API): whole, the
    /// array of its events' JSON data; `done`: it ends with `data: [DONE]`.
    Events { done: bool },
}

/// The whole answer of a stream's events, as JSON; `None` when they hold
/// none of it (an error before the answer began).
pub fn assemble(form: Form, frames: &[Frame]) -> Option<Vec<u8>> {
    let data = frames
        .iter()
        .filter_map(|frame| serde_json::from_str::<Value>(&frame.data).ok());
    match form {
        Form::Chat => {
            let chunks = data.filter_map(|event| serde_json::from_value::<ChatChunk>(event).ok());
            serde_json::to_vec(&assemble::assemble(chunks)?).ok()
        }
        Form::Messages => serde_json::to_vec(&message(data)?).ok(),
        Form::Events { .. } => serde_json::to_vec(&data.collect::<Vec<_>>()).ok(),
    }
}

/// A whole answer (as `assemble` gives it, possibly rewritten) as the
/// events of its form.
pub fn replay(form: Form, answer: &[u8]) -> Result<BytesMut, GatewayError> {
    let invalid = |_| GatewayError::UpstreamInvalid("the rewritten answer".into());
    let mut out = BytesMut::new();
    match form {
        Form::Chat => {
            let answer: ChatCompletion = serde_json::from_slice(answer).map_err(invalid)?;
            let mut egress = OpenAiEgress::new(answer.usage.is_some());
            for chunk in replay_chunks(&answer) {
                egress.chunk(chunk, &mut out);
            }
            egress.end(answer.usage, &mut out);
        }
        Form::Messages => {
            let answer: Map<String, Value> = serde_json::from_slice(answer).map_err(invalid)?;
            for event in message_events(answer) {
                event_out(&mut out, &event);
            }
        }
        Form::Events { done } => {
            let events: Vec<Value> = serde_json::from_slice(answer).map_err(invalid)?;
            for event in &events {
                event_out(&mut out, event);
            }
            if done {
                out.extend_from_slice(b"data: [DONE]\n\n");
            }
        }
    }
    Ok(out)
}

/// One event as SSE: named by its `type` when it has one (as Anthropic's
/// and the Responses API's events are).
fn event_out(out: &mut BytesMut, event: &Value) {
    if let Some(name) = event.get("type").and_then(Value::as_str) {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\n");
    }
    sse_data(out, event);
}

/// The message Anthropic's events describe.
fn message(events: impl Iterator<Item = Value>) -> Option<Value> {
    let mut message: Option<Value> = None;
    let mut tool_input: BTreeMap<usize, String> = BTreeMap::new();
    for mut event in events {
        let index = event["index"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok());
        match event["type"].as_str() {
            Some("message_start") => message = Some(event["message"].take()),
            Some("content_block_start") => {
                let content = message.as_mut()?["content"].as_array_mut()?;
                content.push(event["content_block"].take());
            }
            Some("content_block_delta") => {
                let block = &mut message.as_mut()?["content"][index?];
                let delta = &event["delta"];
                let text = |field: &str| delta[field].as_str().unwrap_or_default();
                match delta["type"].as_str() {
                    Some("text_delta") => append(&mut block["text"], text("text")),
                    Some("thinking_delta") => append(&mut block["thinking"], text("thinking")),
                    Some("signature_delta") => block["signature"] = delta["signature"].clone(),
                    Some("input_json_delta") => tool_input
                        .entry(index?)
                        .or_default()
                        .push_str(text("partial_json")),
                    Some("citations_delta") => match block["citations"].as_array_mut() {
                        Some(citations) => citations.push(delta["citation"].clone()),
                        None => block["citations"] = json!([delta["citation"]]),
                    },
                    _ => {}
                }
            }
            Some("content_block_stop") => {
                if let Some(input) = tool_input.remove(&index?) {
                    let input = serde_json::from_str(&input).unwrap_or(Value::String(input));
                    message.as_mut()?["content"][index?]["input"] = input;
                }
            }
            Some("message_delta") => {
                let message = message.as_mut()?.as_object_mut()?;
                if let Some(Value::Object(delta)) = event.get_mut("delta").map(Value::take) {
                    message.extend(delta);
                }
                if let (Some(Value::Object(usage)), Some(Value::Object(into))) = (
                    event.get_mut("usage").map(Value::take),
                    message.get_mut("usage"),
                ) {
                    into.extend(usage);
                }
            }
            _ => {}
        }
    }
    message
}

fn append(slot: &mut Value, text: &str) {
    match slot {
        Value::String(so_far) => so_far.push_str(text),
        _ => *slot = Value::String(text.to_owned()),
    }
}

/// A message told as Anthropic's events: each block opened empty, given
/// whole in one delta, closed.
fn message_events(mut message: Map<String, Value>) -> Vec<Value> {
    let content = match message.insert("content".into(), json!([])) {
        Some(Value::Array(content)) => content,
        _ => Vec::new(),
    };
    let stop = json!({
        "stop_reason": message.insert("stop_reason".into(), Value::Null),
        "stop_sequence": message.insert("stop_sequence".into(), Value::Null),
    });
    let usage = message.get("usage").cloned().unwrap_or_else(|| json!({}));
    let mut events = vec![json!({"type": "message_start", "message": message})];
    for (index, mut block) in content.into_iter().enumerate() {
        // Where a block's content is, what it starts as, and the delta that carries it.
        let streamed = match block["type"].as_str() {
            Some("text") => Some(("text", json!(""), "text_delta", "text")),
            Some("thinking") => Some(("thinking", json!(""), "thinking_delta", "thinking")),
            Some("tool_use" | "server_tool_use") => {
                Some(("input", json!({}), "input_json_delta", "partial_json"))
            }
            _ => None,
        };
        let mut deltas = Vec::new();
        if let Some((field, empty, delta, name)) = streamed {
            if let Some(whole) = block.get_mut(field).map(|v| std::mem::replace(v, empty)) {
                let whole = match whole {
                    Value::String(text) => text,
                    other => other.to_string(),
                };
                deltas.push(json!({"type": delta, name: whole}));
            }
        }
        if let Some(signature) = block.as_object_mut().and_then(|b| b.remove("signature")) {
            deltas.push(json!({"type": "signature_delta", "signature": signature}));
        }
        events.push(json!({"type": "content_block_start", "index": index, "content_block": block}));
        for delta in deltas {
            events.push(json!({"type": "content_block_delta", "index": index, "delta": delta}));
        }
        events.push(json!({"type": "content_block_stop", "index": index}));
    }
    events.push(json!({"type": "message_delta", "delta": stop, "usage": usage}));
    events.push(json!({"type": "message_stop"}));
    events
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::framing::{FrameDecoder, Framing};

    fn frames(events: &[u8]) -> Vec<Frame> {
        let mut decoder = FrameDecoder::new(Framing::Sse);
        let mut frames = Vec::new();
        decoder.push(events, &mut frames);
        decoder.finish(&mut frames);
        frames
    }

    #[test]
    fn an_anthropic_stream_assembles_into_its_message_and_replays_into_it_again() {
        let stream = br#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":5,"output_tokens":1}}}

event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":"","signature":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me "}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"think."}}

event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"signature_delta","signature":"sig=="}}

event: content_block_stop
data: {"type":"content_block_stop","index":0}

event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}

event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hi"}}

event: content_block_stop
data: {"type":"content_block_stop","index":1}

event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"toolu_1","name":"f","input":{}}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"a\":"}}

event: content_block_delta
data: {"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"1}"}}

event: content_block_stop
data: {"type":"content_block_stop","index":2}

event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"output_tokens":9}}

event: message_stop
data: {"type":"message_stop"}

"#;
        let whole = assemble(Form::Messages, &frames(stream)).expect("a message");
        let message: Value = serde_json::from_slice(&whole).expect("json");
        assert_eq!(
            message["content"],
            json!([{"type": "thinking", "thinking": "Let me think.", "signature": "sig=="},
                   {"type": "text", "text": "Hi"},
                   {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}])
        );
        assert_eq!(message["stop_reason"], "tool_use");
        assert_eq!(
            message["usage"],
            json!({"input_tokens": 5, "output_tokens": 9})
        );
        let replayed = replay(Form::Messages, &whole).expect("events");
        let again = assemble(Form::Messages, &frames(&replayed)).expect("a message");
        assert_eq!(
            serde_json::from_slice::<Value>(&again).expect("json"),
            message
        );
        let text = String::from_utf8_lossy(&replayed);
        assert!(text.starts_with("event: message_start\ndata: "), "{text}");
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }

    #[test]
    fn other_streams_are_whole_as_their_events() {
        let stream = b"data: {\"id\":\"c\",\"choices\":[{\"text\":\"a\"}]}\n\ndata: {\"id\":\"c\",\"choices\":[{\"text\":\"b\"}]}\n\ndata: [DONE]\n\n";
        let form = Form::Events { done: true };
        let whole = assemble(form, &frames(stream)).expect("events");
        assert_eq!(
            serde_json::from_slice::<Value>(&whole).expect("json"),
            json!([{"id": "c", "choices": [{"text": "a"}]}, {"id": "c", "choices": [{"text": "b"}]}])
        );
        let replayed = replay(form, &whole).expect("events");
        assert_eq!(assemble(form, &frames(&replayed)), Some(whole));
        assert!(replayed.ends_with(b"}\n\ndata: [DONE]\n\n"));
        assert!(assemble(Form::Chat, &frames(b"data: [DONE]\n\n")).is_none());
    }
}
