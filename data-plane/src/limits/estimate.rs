//! Token counts by tokenizer, for reservations before a request is sent and
//! for usage a provider did not report. One encoding (o200k_base) for every
//! model: an estimate, marked as such on the usage record.

use serde_json::Value;
use std::sync::{Once, OnceLock};
use tiktoken_rs::CoreBPE;

/// Tokens a chat format adds per message (role, separators).
const PER_MESSAGE: i64 = 3;

/// Longer text is estimated by its characters: a tokenizer's time grows with
/// the text, and this runs on the request path.
const MAX_TOKENIZED_BYTES: usize = 16 * 1024;

/// Set once the encoding is loaded, which takes a moment of CPU: it is
/// loaded on a thread of its own the first time a count is asked for (so a
/// gateway that never counts never pays), and until then nothing waits.
static ENCODING: OnceLock<&'static CoreBPE> = OnceLock::new();
static LOADING: Once = Once::new();

/// Loads the encoding, waiting for it.
pub fn load() {
    let _ = ENCODING.set(tiktoken_rs::o200k_base_singleton());
}

pub fn count(text: &str) -> i64 {
    match ENCODING.get() {
        Some(encoding) if text.len() <= MAX_TOKENIZED_BYTES => {
            i64::try_from(encoding.encode_ordinary(text).len()).unwrap_or(i64::MAX)
        }
        Some(_) => by_characters(text),
        None => {
            LOADING.call_once(|| {
                std::thread::spawn(load);
            });
            by_characters(text)
        }
    }
}

/// About four characters a token in alphabetic scripts, one in CJK ones.
fn by_characters(text: &str) -> i64 {
    let (narrow, wide) = text.chars().fold((0i64, 0i64), |(narrow, wide), c| {
        if (c as u32) < 0x2E80 {
            (narrow + 1, wide)
        } else {
            (narrow, wide + 1)
        }
    });
    (narrow + 3) / 4 + wide
}

/// The tokens of a request's prompt: the text of its messages (or input, or
/// prompt), with a few per message for the chat format.
pub fn prompt_tokens(request: &Value) -> i64 {
    let mut text = String::new();
    let mut messages = 0;
    for field in ["messages", "input", "prompt", "instructions", "system"] {
        if let Some(value) = request.get(field) {
            if let Value::Array(items) = value {
                messages += items.len() as i64;
            }
            collect_text(value, &mut text);
        }
    }
    count(&text) + messages * PER_MESSAGE
}

/// Strings a model reads: content and text, not roles, ids or image data.
fn collect_text(value: &Value, out: &mut String) {
    match value {
        Value::String(s) => {
            out.push_str(s);
            out.push('\n');
        }
        Value::Array(items) => items.iter().for_each(|v| collect_text(v, out)),
        Value::Object(fields) => {
            for (name, value) in fields {
                let read = matches!(
                    name.as_str(),
                    "content" | "text" | "input" | "arguments" | "name" | "description"
                ) || (value.is_object() && name != "image_url");
                if read {
                    collect_text(value, out);
                }
            }
        }
        _ => {}
    }
}

/// The text of a whole answer: OpenAI's choices, Anthropic's content, the
/// Responses API's output.
pub fn answer_text(answer: &[u8]) -> String {
    let mut text = String::new();
    if let Ok(answer) = serde_json::from_slice::<Value>(answer) {
        for field in ["choices", "content", "output"] {
            if let Some(value) = answer.get(field) {
                collect_text(value, &mut text);
            }
        }
    }
    text
}

/// The text of streamed OpenAI-format events (`data: {...}`): their deltas'
/// content, for counting an answer whose usage never came.
pub fn streamed_text(events: &[u8]) -> String {
    let mut text = String::new();
    for line in events.split(|b| *b == b'\n') {
        let Some(data) = line.strip_prefix(b"data: ") else {
            continue;
        };
        let Ok(event) = serde_json::from_slice::<Value>(data) else {
            continue;
        };
        if let Some(choices) = event.get("choices").and_then(Value::as_array) {
            for choice in choices {
                for field in ["delta", "message"] {
                    if let Some(delta) = choice.get(field) {
                        collect_text(delta, &mut text);
                    }
                }
                if let Some(Value::String(t)) = choice.get("text") {
                    text.push_str(t);
                }
            }
        }
        // The Responses API's deltas.
        if let Some(Value::String(delta)) = event.get("delta") {
            text.push_str(delta);
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_what_the_model_reads() {
        load();
        assert_eq!(count("hello world"), 2);
        let chat = json!({"model": "m", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "hello world"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]}
        ]});
        // "Be brief." is 3 tokens, "hello world" 2, plus 3 per message (and newlines).
        let tokens = prompt_tokens(&chat);
        assert!((11..=14).contains(&tokens), "{tokens}");
        let embeddings = json!({"model": "m", "input": ["one two", "three"]});
        assert!(prompt_tokens(&embeddings) >= 3);
    }

    #[test]
    fn long_text_is_counted_by_characters() {
        load();
        let long = "word ".repeat(20_000);
        assert_eq!(count(&long), 25_000);
        assert_eq!(by_characters("你好世界"), 4);
    }

    #[test]
    fn reads_the_text_of_a_cut_stream() {
        let events =
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\n";
        assert_eq!(streamed_text(events).replace('\n', ""), "Hello there");
    }
}
