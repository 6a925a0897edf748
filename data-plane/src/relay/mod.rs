//! The one stream relay: a provider's stream to the client, chunk by chunk
//! as it arrives, through a `Stage` that either passes OpenAI's events on
//! (`passthrough`) or translates the provider's messages (`translate`).
//!
//! The relay owns what every stream must settle whatever ends it: the usage
//! draft (recorded when the relay is dropped: at the end, or when the client
//! goes away mid-stream, as 499), the target's in-flight mark, and the rule
//! that an error before the answer began is answered as an HTTP error (the
//! caller may still try another target) while one after it is an error event.

pub mod passthrough;
pub mod translate;
pub mod whole;

use crate::error::GatewayError;
use crate::providers::body::StreamFailure;
use crate::router::health::InFlight;
use crate::usage::{CacheUse, CutShort, TokenUsage, UsageDraft, CLIENT_CLOSED};
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use std::pin::Pin;
use std::task::{Context, Poll};

/// What a relay does to the bytes between provider and client.
pub trait Stage: Send {
    /// One chunk of the provider's stream: what it gives the client goes to
    /// `out` (possibly nothing yet, when no event is complete).
    fn chunk(&mut self, chunk: Bytes, out: &mut Out) -> Result<(), GatewayError>;
    /// The provider's stream ended: the rest of the answer, or why it is incomplete.
    fn end(&mut self, out: &mut Out) -> Result<(), GatewayError>;
    /// The error event that ends a stream which has begun.
    fn error_event(&mut self, error: &GatewayError, out: &mut BytesMut);
    /// Whether the output so far holds any of the answer. Output before that
    /// (a role, a `message_start`) is held back, so that an error right
    /// after it is still answered as an HTTP error.
    fn began(&self) -> bool;
    /// The provider's count, once it said.
    fn usage(&self) -> Option<TokenUsage>;
    /// The answer's text so far: counted when the stream ends without usage.
    fn streamed_text(&self) -> &str;
}

/// One server-sent event of JSON.
pub fn sse_data(out: &mut BytesMut, json: &impl serde::Serialize) {
    out.extend_from_slice(b"data: ");
    // Serialising our own types into memory cannot fail.
    let _ = serde_json::to_writer(bytes::BufMut::writer(&mut *out), json);
    out.extend_from_slice(b"\n\n");
}

/// What one step gives the client: usually a chunk passed on whole.
#[derive(Default)]
pub struct Out {
    whole: Option<Bytes>,
    written: BytesMut,
}

impl Out {
    /// A chunk for the client as it is, not copied.
    pub fn pass(&mut self, chunk: Bytes) {
        match self.whole.take() {
            None if self.written.is_empty() => self.whole = Some(chunk),
            whole => {
                self.written.extend_from_slice(&whole.unwrap_or_default());
                self.written.extend_from_slice(&chunk);
            }
        }
    }

    /// Room to write events into.
    pub fn buffer(&mut self) -> &mut BytesMut {
        if let Some(whole) = self.whole.take() {
            self.written.extend_from_slice(&whole);
        }
        &mut self.written
    }

    fn is_empty(&self) -> bool {
        self.whole.is_none() && self.written.is_empty()
    }

    fn take(&mut self) -> Bytes {
        self.whole
            .take()
            .unwrap_or_else(|| self.written.split().freeze())
    }

    fn clear(&mut self) {
        self.whole = None;
        self.written.clear();
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    Ended { status: u16 },
}

pub struct Relay<S> {
    upstream: S,
    stage: Box<dyn Stage>,
    provider: String,
    state: State,
    sent_any: bool,
    /// Output before the answer began.
    held: BytesMut,
    /// An error before anything was sent: answered as an HTTP error instead.
    early_failure: Option<GatewayError>,
    draft: Option<UsageDraft>,
    /// The target counts the stream as in flight until it ends.
    _in_flight: Option<InFlight>,
}

impl<S> Relay<S> {
    pub fn new(
        upstream: S,
        stage: Box<dyn Stage>,
        provider: String,
        draft: UsageDraft,
        in_flight: Option<InFlight>,
    ) -> Self {
        Relay {
            upstream,
            stage,
            provider,
            state: State::Streaming,
            sent_any: false,
            held: BytesMut::new(),
            early_failure: None,
            draft: Some(draft),
            _in_flight: in_flight,
        }
    }

    /// The error that ended the stream before its first byte, if one did.
    pub fn take_early_failure(&mut self) -> Option<GatewayError> {
        self.early_failure.take()
    }

    /// The stream's first token went out: its time since arrival is recorded.
    pub fn first_token_sent(&mut self) {
        if let Some(draft) = &mut self.draft {
            let ms = draft.started.elapsed().as_millis();
            draft.record.ttft_ms = Some(i64::try_from(ms).unwrap_or(i64::MAX));
        }
    }

    /// The usage draft back, for another attempt (none is recorded then).
    pub fn take_draft(&mut self) -> Option<UsageDraft> {
        self.draft.take()
    }

    fn fail(&mut self, error: GatewayError, out: &mut Out) {
        self.state = State::Ended {
            status: error.status().as_u16(),
        };
        if self.sent_any || self.stage.began() {
            self.stage.error_event(&error, out.buffer());
        } else {
            self.early_failure = Some(error);
            self.held.clear();
            out.clear();
        }
    }
}

impl<S, E> Stream for Relay<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: StreamFailure,
{
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.state != State::Streaming {
                return Poll::Ready(None);
            }
            let mut out = Out::default();
            let step = match Pin::new(&mut this.upstream).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => this.stage.chunk(chunk, &mut out),
                Poll::Ready(Some(Err(error))) => Err(error.to_gateway_error(&this.provider)),
                Poll::Ready(None) => this.stage.end(&mut out).map(|()| {
                    this.state = State::Ended { status: 200 };
                }),
            };
            if let Err(error) = step {
                this.fail(error, &mut out);
            }
            if this.state == State::Streaming && !this.sent_any && !this.stage.began() {
                if !out.is_empty() {
                    this.held.extend_from_slice(&out.take());
                }
                continue;
            }
            let bytes = if this.held.is_empty() {
                out.take()
            } else {
                this.held.extend_from_slice(&out.take());
                this.held.split().freeze()
            };
            if !bytes.is_empty() {
                this.sent_any = true;
                if let Some(CacheUse::Fill(fill)) = this.draft.as_mut().map(|d| &mut d.cache) {
                    fill.record(&bytes);
                }
                return Poll::Ready(Some(Ok(bytes)));
            }
        }
    }
}

impl<S> Drop for Relay<S> {
    fn drop(&mut self) {
        let Some(mut draft) = self.draft.take() else {
            return;
        };
        let fill = draft.take_fill();
        let upstream_model = draft.record.upstream_model.clone();
        let status = match self.state {
            State::Ended { status } => status,
            State::Streaming => draft
                .cut_short
                .as_ref()
                .and_then(CutShort::status)
                .unwrap_or(CLIENT_CLOSED),
        };
        let usage = self.stage.usage();
        // A stream cut before its usage is counted from what was sent.
        let output = (usage.is_none() && (self.sent_any || self.stage.began()))
            .then(|| self.stage.streamed_text());
        let tokens = draft.finish(status, usage, output);
        // Only a whole, successful answer is stored.
        if let (200, Some(fill)) = (status, fill) {
            fill.store(None, tokens, &self.provider, &upstream_model);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[test]
    fn out_passes_a_lone_chunk_without_copying_it() {
        let chunk = Bytes::from_static(b"data: x\n\n");
        let mut out = Out::default();
        out.pass(chunk.clone());
        assert_eq!(out.take().as_ptr(), chunk.as_ptr());
        out.pass(chunk.clone());
        out.buffer().extend_from_slice(b"data: y\n\n");
        out.pass(chunk);
        assert_eq!(&out.take()[..], b"data: x\n\ndata: y\n\ndata: x\n\n");
    }

    /// Passes chunks on; the answer begins with a chunk other than "role".
    struct Plain {
        began: bool,
    }

    impl Stage for Plain {
        fn chunk(&mut self, chunk: Bytes, out: &mut Out) -> Result<(), GatewayError> {
            if &chunk[..] == b"fail" {
                return Err(GatewayError::UpstreamInvalid("p".into()));
            }
            self.began |= &chunk[..] != b"role";
            out.pass(chunk);
            Ok(())
        }
        fn end(&mut self, _: &mut Out) -> Result<(), GatewayError> {
            Ok(())
        }
        fn error_event(&mut self, _: &GatewayError, out: &mut BytesMut) {
            out.extend_from_slice(b"error");
        }
        fn began(&self) -> bool {
            self.began
        }
        fn usage(&self) -> Option<TokenUsage> {
            None
        }
        fn streamed_text(&self) -> &str {
            "some text"
        }
    }

    fn relay(
        chunks: &'static [&'static [u8]],
    ) -> (
        Relay<impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin>,
        crate::usage::UsageQueue,
    ) {
        let (draft, queue) = UsageDraft::for_test();
        let upstream = futures_util::stream::iter(
            chunks
                .iter()
                .map(|c| Ok::<_, std::io::Error>(Bytes::from_static(c))),
        );
        let relay = Relay::new(
            upstream,
            Box::new(Plain { began: false }),
            "p".into(),
            draft,
            None,
        );
        (relay, queue)
    }

    #[tokio::test]
    async fn holds_the_opening_back_until_the_answer_begins() {
        let (mut relay, mut queue) = relay(&[b"role", b"text", b"fail"]);
        assert_eq!(
            &relay.next().await.expect("some").expect("ok")[..],
            b"roletext"
        );
        assert_eq!(
            &relay.next().await.expect("some").expect("ok")[..],
            b"error"
        );
        assert!(relay.next().await.is_none());
        assert!(relay.take_early_failure().is_none());
        drop(relay);
        let record = queue.receiver.recv().await.expect("recorded");
        assert_eq!(record.status, 502);
        assert!(record.estimated, "counted from the text sent");
    }

    #[tokio::test]
    async fn an_error_before_the_answer_began_is_left_for_an_http_answer() {
        let (mut relay, mut queue) = relay(&[b"role", b"fail"]);
        assert!(relay.next().await.is_none());
        assert!(relay.take_early_failure().is_some());
        drop(relay);
        let record = queue.receiver.recv().await.expect("recorded");
        assert_eq!((record.status, record.estimated), (502, false));
    }

    #[tokio::test]
    async fn a_client_gone_mid_stream_is_recorded_as_499() {
        let (mut relay, mut queue) = relay(&[b"text", b"more"]);
        assert!(relay.next().await.is_some());
        drop(relay);
        let record = queue.receiver.recv().await.expect("recorded");
        assert_eq!(record.status, CLIENT_CLOSED);
    }
}
