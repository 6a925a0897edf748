//! OpenAI's own events, passed on as they are: whole events as soon as they
//! are complete, the usage read from the stream's usage chunk (and that
//! chunk hidden when only we asked for it).

use super::sse_data;
use super::{Out, Stage};
use crate::error::GatewayError;
use crate::usage::TokenUsage;
use bytes::{Bytes, BytesMut};
use memchr::memmem;

pub struct Passthrough {
    pending: BytesMut,
    /// The client did not ask for usage; we did, for accounting, so its chunk is ours to drop.
    hide_usage_chunk: bool,
    usage: Option<TokenUsage>,
    began: bool,
    /// What was relayed, while no usage has been seen: what a tokenizer
    /// counts if the stream ends without it (bounded).
    relayed: BytesMut,
}

/// Most answer text kept for counting a stream that ends without usage.
const MAX_RELAYED: usize = 1 << 20;

impl Passthrough {
    pub fn new(hide_usage_chunk: bool) -> Self {
        Passthrough {
            pending: BytesMut::new(),
            hide_usage_chunk,
            usage: None,
            began: false,
            relayed: BytesMut::new(),
        }
    }

    /// Moves every complete event out of `pending`, keeping all but a hidden usage chunk.
    fn complete_events(&mut self, out: &mut Out) {
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end);
            if let Some(seen) = usage_in(&event) {
                self.usage = Some(seen.usage);
                if self.hide_usage_chunk && seen.usage_only {
                    continue;
                }
            }
            out.buffer().extend_from_slice(&event);
            self.began = true;
        }
    }
}

impl Stage for Passthrough {
    fn chunk(&mut self, chunk: Bytes, out: &mut Out) -> Result<(), GatewayError> {
        if self.usage.is_none() && self.relayed.len() < MAX_RELAYED {
            self.relayed.extend_from_slice(&chunk);
        }
        // Usually a chunk is whole events without usage: passed on as it is.
        if self.pending.is_empty() && chunk.ends_with(b"\n\n") && !has_usage_object(&chunk) {
            self.began = true;
            out.pass(chunk);
            return Ok(());
        }
        self.pending.extend_from_slice(&chunk);
        self.complete_events(out);
        Ok(())
    }

    fn end(&mut self, out: &mut Out) -> Result<(), GatewayError> {
        if !self.pending.is_empty() {
            out.buffer().extend_from_slice(&self.pending.split());
        }
        Ok(())
    }

    fn error_event(&mut self, error: &GatewayError, out: &mut BytesMut) {
        // Clients see an OpenAI-style error event and no [DONE].
        sse_data(out, &error.to_json());
    }

    fn began(&self) -> bool {
        self.began
    }

    fn usage(&self) -> Option<TokenUsage> {
        self.usage
    }

    fn streamed_text(&self) -> String {
        crate::limits::estimate::streamed_text(&self.relayed)
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

/// Parses an event only when it carries a usage object, which is at most once a stream.
fn usage_in(event: &[u8]) -> Option<SeenUsage> {
    if !has_usage_object(event) {
        return None;
    }
    let data = event
        .split(|b| *b == b'\n')
        .find_map(|line| line.strip_prefix(b"data:"))?;
    let chunk: ChunkUsage = serde_json::from_slice(data.trim_ascii()).ok()?;
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
            Box::new(Passthrough::new(true)),
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
