//! A provider's events in the client's own format, passed on as they are:
//! whole events as soon as they are complete, the usage read on the way.
//! OpenAI's usage comes in one chunk (hidden when only we asked for it);
//! Anthropic's as running totals in `message_start` and `message_delta`.

use super::translate::Egress;
use super::{Out, Stage};
use crate::error::GatewayError;
use crate::limits::estimate::StreamedText;
use crate::providers::anthropic::{StreamUsage, UsageEvent};
use crate::usage::TokenUsage;
use bytes::{Bytes, BytesMut};
use memchr::memmem;

/// Whose events pass.
pub enum Dialect {
    /// `hide_usage_chunk`: the client did not ask for usage; we did, for
    /// accounting, so its chunk is ours to drop.
    OpenAi {
        hide_usage_chunk: bool,
    },
    Anthropic(StreamUsage),
}

pub struct Passthrough {
    pending: BytesMut,
    dialect: Dialect,
    usage: Option<TokenUsage>,
    began: bool,
    /// The answer's text, while no usage has been seen: counted if the
    /// stream ends without it.
    text: StreamedText,
    /// Writes the error event that ends a stream in the client's format.
    errors: Box<dyn Egress>,
}

impl Passthrough {
    pub fn new(dialect: Dialect, errors: Box<dyn Egress>) -> Self {
        Passthrough {
            pending: BytesMut::new(),
            dialect,
            usage: None,
            began: false,
            text: StreamedText::default(),
            errors,
        }
    }

    /// Whole events' text, until the usage is known.
    fn read_text(&mut self, events: &[u8]) {
        if self.usage.is_none() {
            self.text.push_events(events);
        }
    }

    /// Moves every complete event out of `pending`, keeping all but a hidden usage chunk.
    fn complete_events(&mut self, out: &mut Out) {
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end);
            self.read_text(&event);
            match &mut self.dialect {
                Dialect::OpenAi { hide_usage_chunk } => {
                    if let Some(seen) = usage_in(&event) {
                        self.usage = Some(seen.usage);
                        if *hide_usage_chunk && seen.usage_only {
                            continue;
                        }
                    }
                    self.began = true;
                }
                Dialect::Anthropic(tokens) => {
                    if has_usage_object(&event) {
                        match data_of(&event).and_then(|d| serde_json::from_slice(d).ok()) {
                            Some(UsageEvent::MessageStart { message }) => {
                                tokens.start(message.usage)
                            }
                            Some(UsageEvent::MessageDelta { usage: Some(usage) }) => {
                                tokens.delta(usage)
                            }
                            _ => {}
                        }
                        self.usage = Some(tokens.total());
                    }
                    // Until content begins (after `message_start` and pings),
                    // a failure may still be answered as an HTTP error.
                    self.began |= !is_anthropic_preamble(&event);
                }
            }
            out.buffer().extend_from_slice(&event);
        }
    }
}

fn is_anthropic_preamble(event: &[u8]) -> bool {
    [&b"event: message_start"[..], b"event: ping"]
        .iter()
        .any(|name| event.starts_with(name))
}

impl Stage for Passthrough {
    fn chunk(&mut self, chunk: Bytes, out: &mut Out) -> Result<(), GatewayError> {
        // Usually a chunk is whole events without usage: passed on as it is.
        let dialect_knows = self.began || matches!(self.dialect, Dialect::OpenAi { .. });
        if dialect_knows
            && self.pending.is_empty()
            && chunk.ends_with(b"\n\n")
            && !has_usage_object(&chunk)
        {
            self.began = true;
            self.read_text(&chunk);
            out.pass(chunk);
            return Ok(());
        }
        self.pending.extend_from_slice(&chunk);
        self.complete_events(out);
        Ok(())
    }

    fn end(&mut self, out: &mut Out) -> Result<(), GatewayError> {
        if !self.pending.is_empty() {
            let rest = self.pending.split();
            self.read_text(&rest);
            out.buffer().extend_from_slice(&rest);
        }
        Ok(())
    }

    fn error_event(&mut self, error: &GatewayError, out: &mut BytesMut) {
        self.errors.error(error, out);
    }

    fn began(&self) -> bool {
        self.began
    }

    fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    fn streamed_text(&self) -> &str {
        self.text.as_str()
    }
}

/// End (exclusive) of the first complete event: after `\n\n` or `\r\n\r\n`.
fn event_end(buffer: &[u8]) -> Option<usize> {
    let lf = memmem::find(buffer, b"\n\n").map(|i| i + 2);
    let crlf = memmem::find(buffer, b"\r\n\r\n").map(|i| i + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

struct SeenUsage {
    usage: TokenUsage,
    /// OpenAI's final usage chunk has `choices: []`.
    usage_only: bool,
}

#[derive(serde::Deserialize)]
struct ChunkUsage {
    usage: Option<TokenUsage>,
    #[serde(default)]
    choices: Vec<serde::de::IgnoredAny>,
    /// The Responses API's `response.completed` event nests its usage.
    #[serde(default)]
    response: Option<NestedUsage>,
}

#[derive(serde::Deserialize)]
struct NestedUsage {
    usage: Option<TokenUsage>,
}

const USAGE_FIELD: &[u8] = b"\"usage\"";

/// Whether `bytes` hold a `"usage": {..}` object, not just `"usage": null`.
fn has_usage_object(bytes: &[u8]) -> bool {
    memmem::find_iter(bytes, USAGE_FIELD).any(|at| {
        bytes[at + USAGE_FIELD.len()..]
            .iter()
            .find(|b| !matches!(b, b' ' | b':' | b'\t'))
            == Some(&b'{')
    })
}

/// The JSON of an event's (first) `data:` line.
fn data_of(event: &[u8]) -> Option<&[u8]> {
    event
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"data:"))
        .map(<[u8]>::trim_ascii)
}

/// Parses an event only when it carries a usage object, which is at most once a stream.
fn usage_in(event: &[u8]) -> Option<SeenUsage> {
    if !has_usage_object(event) {
        return None;
    }
    let chunk: ChunkUsage = serde_json::from_slice(data_of(event)?).ok()?;
    let usage_only = chunk.choices.is_empty() && chunk.response.is_none();
    Some(SeenUsage {
        usage: chunk.usage.or(chunk.response.and_then(|r| r.usage))?,
        usage_only,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::Relay;
    use crate::usage::UsageDraft;
    use futures_util::{Stream, StreamExt};

    fn relay(
        chunks: Vec<&'static [u8]>,
    ) -> (
        Relay<impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin>,
        crate::usage::UsageQueue,
    ) {
        let (draft, queue) = UsageDraft::for_test();
        let upstream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        let relay = Relay::new(
            upstream,
            Box::new(Passthrough::new(
                Dialect::OpenAi {
                    hide_usage_chunk: true,
                },
                Box::new(crate::relay::translate::OpenAiEgress::new(false)),
            )),
            "p".into(),
            draft,
            None,
        );
        (relay, queue)
    }

    #[tokio::test]
    async fn relays_whole_events_untouched_and_hides_only_the_usage_chunk() {
        let whole: &'static [u8] = b"data: {\"choices\":[{\"delta\":{}}],\"usage\":null}\n\n";
        let (mut relay, mut queue) = relay(vec![
            whole,
            b"data: {\"choices\":[{\"del",
            b"ta\":{}}]}\n\n",
            b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":2,\"completion_tokens\":3,\"total_tokens\":5}}\n\ndata: [DONE]\n\n",
        ]);
        let first = relay.next().await.expect("event").expect("ok");
        assert_eq!(
            first.as_ptr(),
            whole.as_ptr(),
            "a whole event is not copied"
        );
        let second = relay.next().await.expect("event").expect("ok");
        assert_eq!(&second[..], b"data: {\"choices\":[{\"delta\":{}}]}\n\n");
        let last = relay.next().await.expect("event").expect("ok");
        assert_eq!(&last[..], b"data: [DONE]\n\n");
        assert!(relay.next().await.is_none());
        drop(relay);
        let record = queue.receiver.recv().await.expect("usage recorded");
        assert_eq!((record.status, record.tokens.total_tokens), (200, 5));
    }

    #[tokio::test]
    async fn relays_anthropic_events_reading_cache_usage_as_running_totals() {
        let (draft, mut queue) = UsageDraft::for_test();
        let events: Vec<&'static [u8]> = vec![
            b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":4,\"output_tokens\":1,\"cache_creation_input_tokens\":10,\"cache_read_input_tokens\":20}}}\n\n",
            b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"EqQB\"}}\n\n",
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{},\"usage\":{\"output_tokens\":7}}\n\n",
        ];
        let upstream = futures_util::stream::iter(
            events
                .iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        let stage = Passthrough::new(
            Dialect::Anthropic(StreamUsage::default()),
            Box::new(crate::relay::translate::OpenAiEgress::new(false)),
        );
        let mut relay = Relay::new(upstream, Box::new(stage), "p".into(), draft, None);
        let mut relayed = Vec::new();
        while let Some(chunk) = relay.next().await {
            relayed.extend_from_slice(&chunk.expect("ok"));
        }
        assert_eq!(relayed, events.concat(), "every event, byte for byte");
        drop(relay);
        let record = queue.receiver.recv().await.expect("usage recorded");
        let tokens = record.tokens;
        assert_eq!(
            (
                tokens.prompt_tokens,
                tokens.cached_tokens,
                tokens.cache_write_tokens
            ),
            (34, 20, 10)
        );
        assert_eq!((tokens.completion_tokens, tokens.total_tokens), (7, 41));
    }

    #[tokio::test]
    async fn a_stream_without_usage_is_counted_from_its_text_not_its_events() {
        let (mut relay, mut queue) = relay(vec![
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"content\":\"Hello\"}}]}\n\n",
            b"data: {\"id\":\"c\",\"choices\":[{\"delta\":{\"con",
            b"tent\":\" there\"}}]}\n\ndata: [DONE]\n\n",
        ]);
        while relay.next().await.is_some() {}
        assert_eq!(relay.stage.streamed_text(), "Hello there");
        drop(relay);
        let record = queue.receiver.recv().await.expect("usage recorded");
        assert!(record.estimated);
        assert_eq!(
            record.tokens.completion_tokens,
            crate::limits::estimate::count("Hello there")
        );
    }

    #[test]
    fn finds_event_boundaries() {
        assert_eq!(event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(event_end(b"data: a\n"), None);
    }

    #[test]
    fn reads_usage_only_from_usage_chunks() {
        let null = br#"data: {"choices":[{"delta":{"content":"hi"}}],"usage":null}"#;
        assert!(usage_in(null).is_none());
        let final_chunk =
            br#"data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}}"#;
        let seen = usage_in(final_chunk).expect("usage");
        assert!(seen.usage_only);
        assert_eq!(seen.usage, TokenUsage::new(9, 2));
        let spaced = b"data:{\"choices\":[{}], \"usage\": {\"prompt_tokens\":1}}\n\n";
        let seen = usage_in(spaced).expect("usage");
        assert!(!seen.usage_only);
        assert_eq!(seen.usage.prompt_tokens, 1);
    }
}
