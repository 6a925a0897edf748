//! Token counts by tokenizer, for reservations before a request is sent and
//! for usage a provider did not report. One encoding (o200k_base) for every
//! model: an estimate, marked as such on the usage record.

use crate::json_scan::{skip_space, string_end};
use bpe_openai::Tokenizer;
use serde_json::Value;
use std::sync::{Once, OnceLock};

/// Tokens a chat format adds per message (role, separators).
const PER_MESSAGE: i64 = 3;

/// Longer text is estimated by its characters: a tokenizer's time grows with
/// the text, and this runs on the request path.
const MAX_TOKENIZED_BYTES: usize = 16 * 1024;

/// Set once the encoding is loaded, which takes a moment of CPU: it is
/// loaded on a thread of its own the first time a count is asked for (so a
/// gateway that never counts never pays), and until then nothing waits.
static ENCODING: OnceLock<&'static Tokenizer> = OnceLock::new();
static LOADING: Once = Once::new();

/// Loads the encoding, waiting for it. GitHub's `bpe-openai` counts the
/// same tokens as OpenAI's tiktoken (2,000 random texts and the usual hard
/// cases agreed) 6-7 times faster: 0.2 against 1.4 us for a short prompt,
/// 65 against 401 us for 4 KB (docs/benchmarks.md).
pub fn load() {
    let _ = ENCODING.set(bpe_openai::o200k_base());
}

pub fn count(text: &str) -> i64 {
    match ENCODING.get() {
        Some(encoding) if text.len() <= MAX_TOKENIZED_BYTES => {
            i64::try_from(encoding.count(text)).unwrap_or(i64::MAX)
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

/// Most answer text kept for counting a stream that ends without usage:
/// past `MAX_TOKENIZED_BYTES` it is counted by its characters anyway.
const MAX_STREAMED_TEXT: usize = 1 << 20;

/// Fields whose string values are what the model wrote, in any provider's
/// streamed events (OpenAI's chat and Responses deltas, Anthropic's).
const TEXT_FIELDS: [&[u8]; 7] = [
    b"content",
    b"text",
    b"arguments",
    b"delta",
    b"reasoning_content",
    b"refusal",
    b"partial_json",
];

/// The text of an answer being streamed, kept (bounded) for counting it if
/// its usage never comes. Only the text: the events around it are several
/// times its size, and a stream holds this until it ends.
#[derive(Default)]
pub struct StreamedText(String);

impl StreamedText {
    pub fn push(&mut self, piece: &str) {
        if self.0.len() < MAX_STREAMED_TEXT {
            self.0.push_str(piece);
        }
    }

    /// The text fields' string values in the `data:` lines of whole
    /// server-sent events. A scan for the fields rather than a parse: it
    /// runs for every event of every stream whose usage has not come yet.
    pub fn push_events(&mut self, events: &[u8]) {
        for line in events.split(|b| *b == b'\n') {
            if let Some(data) = line.strip_prefix(b"data:") {
                self.push_text_fields(data);
            }
        }
    }

    /// Walks the JSON string by string (so that quotes inside strings are
    /// never mistaken for their ends), keeping the string values of text
    /// fields at any depth.
    fn push_text_fields(&mut self, json: &[u8]) {
        let mut at = 0;
        while let Some(open) = memchr::memchr(b'"', &json[at..]) {
            let start = at + open + 1;
            let Some(end) = string_end(json, start) else {
                return;
            };
            at = end + 1;
            let after = skip_space(json, at);
            if json.get(after) != Some(&b':') || !TEXT_FIELDS.contains(&&json[start..end]) {
                continue;
            }
            let value = skip_space(json, after + 1);
            if json.get(value) != Some(&b'"') {
                continue;
            }
            let Some(value_end) = string_end(json, value + 1) else {
                return;
            };
            at = value_end + 1;
            let inner = &json[value + 1..value_end];
            if memchr::memchr(b'\\', inner).is_none() {
                if let Ok(plain) = std::str::from_utf8(inner) {
                    self.push(plain);
                }
            } else if let Ok(text) = serde_json::from_slice::<String>(&json[value..=value_end]) {
                self.push(&text);
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
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

    fn streamed(events: &[u8]) -> String {
        let mut text = StreamedText::default();
        text.push_events(events);
        text.as_str().to_owned()
    }

    #[test]
    fn reads_the_text_of_a_cut_stream() {
        let events =
            b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\":\"Hello\"}}]}\n\n\
            data: {\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\n";
        assert_eq!(streamed(events), "Hello there");
    }

    #[test]
    fn reads_text_fields_whatever_their_spacing_escapes_and_depth() {
        let events = concat!(
            ": keep-alive \"\n\n",
            "data: {\"id\": \"content\", \"choices\": [{\"delta\": {\"content\": \"say \\\"hi\\\"\\n\"}}]}\n\n",
            "data:{\"choices\":[{\"delta\":{\"tool_calls\":[{\"function\":{\"arguments\":\"{\\\"a\\\":1}\"}}]}}]}\n\n",
            "data: {\"type\":\"response.output_text.delta\",\"delta\":\"日本\"}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":null,\"refusal\":\"no\"}}],\"model\":\"text\"}\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"cut",
        );
        assert_eq!(streamed(events.as_bytes()), "say \"hi\"\n{\"a\":1}日本no");
    }

    #[test]
    fn keeps_at_most_the_bound() {
        let mut text = StreamedText::default();
        let piece = "x".repeat(64 * 1024);
        for _ in 0..20 {
            text.push(&piece);
        }
        assert!(text.as_str().len() <= MAX_STREAMED_TEXT + piece.len());
    }
}
