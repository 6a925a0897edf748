//! Relays an upstream SSE stream to the client event by event, as each event
//! completes, while reading usage from the stream's usage chunk. The record is
//! emitted when the relay is dropped: at the end of the stream, or when the
//! client goes away mid-stream.

use crate::error::GatewayError;
use crate::providers::body::StreamFailure;
use crate::usage::{TokenUsage, UsageDraft};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use memchr::memmem;
use std::pin::Pin;
use std::task::{Context, Poll};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Streaming,
    Completed,
    UpstreamFailed { status: u16 },
}

pub struct SseRelay<S> {
    upstream: S,
    pending: BytesMut,
    /// The client did not ask for usage; we did, for accounting, so its chunk is ours to drop.
    hide_usage_chunk: bool,
    usage: Option<TokenUsage>,
    provider: String,
    outcome: Outcome,
    sent_any: bool,
    /// A failure before anything was sent: the caller may still retry.
    early_failure: Option<GatewayError>,
    draft: Option<UsageDraft>,
    /// What was relayed, while no usage has been seen: what a tokenizer
    /// counts if the stream ends without it (bounded).
    relayed: BytesMut,
}

/// Most answer text kept for counting a stream that ends without usage.
const MAX_RELAYED: usize = 1 << 20;

impl<S> SseRelay<S> {
    /// The error that ended the stream before its first byte, if one did.
    pub fn take_early_failure(&mut self) -> Option<GatewayError> {
        self.early_failure.take()
    }

    /// The usage draft back, for another attempt (none is recorded then).
    pub fn take_draft(&mut self) -> Option<UsageDraft> {
        self.draft.take()
    }

    pub fn new(upstream: S, hide_usage_chunk: bool, provider: String, draft: UsageDraft) -> Self {
        Self {
            upstream,
            pending: BytesMut::new(),
            hide_usage_chunk,
            usage: None,
            provider,
            outcome: Outcome::Streaming,
            sent_any: false,
            early_failure: None,
            draft: Some(draft),
            relayed: BytesMut::new(),
        }
    }

    /// Moves every complete event out of `pending`, keeping all but a hidden usage chunk.
    fn complete_events(&mut self) -> Bytes {
        let mut out = BytesMut::new();
        while let Some(end) = event_end(&self.pending) {
            let event = self.pending.split_to(end);
            if let Some(seen) = usage_in(&event) {
                self.usage = Some(seen.usage);
                if self.hide_usage_chunk && seen.usage_only {
                    continue;
                }
            }
            out.extend_from_slice(&event);
        }
        out.freeze()
    }
}

impl<S, E> Stream for SseRelay<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: StreamFailure,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.outcome != Outcome::Streaming {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.upstream).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    // Usually a chunk is whole events without usage: passed on as it is.
                    if this.usage.is_none() && this.relayed.len() < MAX_RELAYED {
                        this.relayed.extend_from_slice(&chunk);
                    }
                    if this.pending.is_empty()
                        && chunk.ends_with(b"\n\n")
                        && !has_usage_object(&chunk)
                    {
                        this.sent_any = true;
                        return Poll::Ready(Some(Ok(chunk)));
                    }
                    this.pending.extend_from_slice(&chunk);
                    let events = this.complete_events();
                    if !events.is_empty() {
                        this.sent_any = true;
                        return Poll::Ready(Some(Ok(events)));
                    }
                }
                Poll::Ready(Some(Err(error))) => {
                    let error = error.to_gateway_error(&this.provider);
                    this.outcome = Outcome::UpstreamFailed {
                        status: error.status().as_u16(),
                    };
                    if !this.sent_any {
                        this.early_failure = Some(error);
                        return Poll::Ready(None);
                    }
                    // Clients see an OpenAI-style error event and no [DONE].
                    let error = error.to_json();
                    return Poll::Ready(Some(Ok(Bytes::from(format!("data: {error}\n\n")))));
                }
                Poll::Ready(None) => {
                    this.outcome = Outcome::Completed;
                    let rest = this.pending.split().freeze();
                    return Poll::Ready((!rest.is_empty()).then_some(Ok(rest)));
                }
            }
        }
    }
}

impl<S> Drop for SseRelay<S> {
    fn drop(&mut self) {
        let Some(draft) = self.draft.take() else {
            return;
        };
        let status = match self.outcome {
            Outcome::Completed => 200,
            Outcome::UpstreamFailed { status } => status,
            Outcome::Streaming => crate::usage::CLIENT_CLOSED,
        };
        // A stream cut before its usage is counted from what was relayed.
        let output = match self.usage {
            Some(_) => None,
            None => self
                .sent_any
                .then(|| crate::limits::estimate::streamed_text(&self.relayed)),
        };
        draft.finish(status, self.usage, output.as_deref());
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
    use futures_util::StreamExt;

    fn relay(
        chunks: Vec<&'static [u8]>,
    ) -> (
        SseRelay<impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin>,
        crate::usage::UsageQueue,
    ) {
        let (draft, queue) = UsageDraft::for_test();
        let upstream = futures_util::stream::iter(
            chunks
                .into_iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        (SseRelay::new(upstream, true, "p".into(), draft), queue)
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
