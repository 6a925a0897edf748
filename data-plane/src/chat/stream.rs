//! Streams that change format on the way: the provider's messages are
//! decoded into OpenAI chunks as they arrive and re-encoded for the client's
//! ingress (OpenAI SSE here, Anthropic events in `ingress::anthropic`). The
//! usage record is emitted when the stream is dropped, as in the passthrough
//! relay.

use super::framing::FrameDecoder;
use super::{ChatChunk, ChatCompletion, ChunkBuilder, Delta, FinishReason};
use crate::error::GatewayError;
use crate::providers::body::StreamFailure;
use crate::providers::{provider_error, unreachable, StreamDecoder};
use crate::usage::UsageDraft;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use shared::usage::TokenUsage;
use std::pin::Pin;
use std::task::{Context, Poll};

/// How chunks are written for one ingress format.
pub trait Egress: Send {
    fn chunk(&mut self, chunk: ChatChunk, out: &mut BytesMut);
    /// The provider finished; `usage` is its final count.
    fn end(&mut self, usage: Option<TokenUsage>, out: &mut BytesMut);
    /// The stream failed after it began: no normal ending follows.
    fn error(&mut self, error: &GatewayError, out: &mut BytesMut);
}

pub fn sse_data(out: &mut BytesMut, json: &impl serde::Serialize) {
    out.extend_from_slice(b"data: ");
    // Serialising our own types into memory cannot fail.
    let _ = serde_json::to_writer(bytes::BufMut::writer(&mut *out), json);
    out.extend_from_slice(b"\n\n");
}

/// OpenAI's `chat.completion.chunk` events and `[DONE]`.
pub struct OpenAiEgress {
    include_usage: bool,
    /// Id and model of the stream, for the usage chunk.
    last: Option<(String, i64, String)>,
}

impl OpenAiEgress {
    pub fn new(include_usage: bool) -> Self {
        OpenAiEgress {
            include_usage,
            last: None,
        }
    }
}

impl Egress for OpenAiEgress {
    fn chunk(&mut self, chunk: ChatChunk, out: &mut BytesMut) {
        if self.last.is_none() {
            self.last = Some((chunk.id.clone(), chunk.created, chunk.model.clone()));
        }
        sse_data(out, &chunk);
    }

    fn end(&mut self, usage: Option<TokenUsage>, out: &mut BytesMut) {
        if let (true, Some(usage)) = (self.include_usage, usage) {
            let (id, created, model) = self.last.take().unwrap_or_default();
            let mut chunk = ChunkBuilder::new(id, model).usage(usage);
            chunk.created = created;
            sse_data(out, &chunk);
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
    }

    fn error(&mut self, error: &GatewayError, out: &mut BytesMut) {
        sse_data(out, &error.to_json());
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Streaming,
    Done { status: u16 },
}

/// Most answer text kept for counting a stream that ends without usage.
const MAX_COUNTED_TEXT: usize = 1 << 20;

pub struct TranslatedStream<S> {
    upstream: S,
    frames: FrameDecoder,
    decoder: Box<dyn StreamDecoder>,
    egress: Box<dyn Egress>,
    provider: String,
    state: State,
    sent_any: bool,
    /// Output before the first content (role, message_start) is held back:
    /// an error that follows it is still answered as an HTTP error.
    held: BytesMut,
    substantive: bool,
    /// An error before anything was sent: answered as an HTTP error instead.
    early_failure: Option<GatewayError>,
    draft: Option<UsageDraft>,
    /// The answer's text so far, counted if the stream ends without usage.
    text: String,
}

impl<S> TranslatedStream<S> {
    pub fn new(
        upstream: S,
        decoder: Box<dyn StreamDecoder>,
        egress: Box<dyn Egress>,
        provider: String,
        draft: UsageDraft,
    ) -> Self {
        TranslatedStream {
            upstream,
            frames: FrameDecoder::new(decoder.framing()),
            decoder,
            egress,
            provider,
            state: State::Streaming,
            sent_any: false,
            held: BytesMut::new(),
            substantive: false,
            text: String::new(),
            early_failure: None,
            draft: Some(draft),
        }
    }

    /// The error that ended the stream before its first byte, if one did.
    pub fn take_early_failure(&mut self) -> Option<GatewayError> {
        self.early_failure.take()
    }

    /// The usage draft back, for another attempt (none is recorded then).
    pub fn take_draft(&mut self) -> Option<UsageDraft> {
        self.draft.take()
    }

    /// Gives up before the first byte (the provider took too long): the
    /// usage record gets the error's status, not "client went away".
    pub fn abandon(&mut self, error: &GatewayError) {
        self.state = State::Done {
            status: error.status().as_u16(),
        };
    }

    fn fail(&mut self, error: GatewayError, out: &mut BytesMut) {
        self.state = State::Done {
            status: error.status().as_u16(),
        };
        if self.sent_any || self.substantive {
            self.egress.error(&error, out);
        } else {
            self.early_failure = Some(error);
            self.held.clear();
            out.clear();
        }
    }

    fn feed(&mut self, bytes: &[u8], out: &mut BytesMut) {
        let mut frames = Vec::new();
        self.frames.push(bytes, &mut frames);
        self.decode(frames, out);
    }

    fn decode(&mut self, frames: Vec<super::framing::Frame>, out: &mut BytesMut) {
        let mut chunks = Vec::new();
        for frame in frames {
            let decoded = self.decoder.decode(frame, &mut chunks);
            for chunk in chunks.drain(..) {
                self.substantive |= !is_preamble(&chunk);
                if self.text.len() < MAX_COUNTED_TEXT {
                    for choice in &chunk.choices {
                        self.text
                            .push_str(choice.delta.content.as_deref().unwrap_or_default());
                    }
                }
                self.egress.chunk(chunk, out);
            }
            if let Err(error) = decoded {
                let error = provider_error(&self.provider, error);
                self.fail(error, out);
                return;
            }
        }
    }

    fn upstream_ended(&mut self, out: &mut BytesMut) {
        let mut frames = Vec::new();
        self.frames.finish(&mut frames);
        self.decode(frames, out);
        if self.state != State::Streaming {
            return;
        }
        if self.decoder.finished() {
            self.egress.end(self.decoder.usage(), out);
            self.state = State::Done { status: 200 };
        } else {
            let error = unreachable(
                &self.provider,
                &"the stream ended before the provider finished its answer",
            );
            self.fail(error, out);
        }
    }
}

impl<S, E> Stream for TranslatedStream<S>
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
            let mut out = BytesMut::new();
            match Pin::new(&mut this.upstream).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(bytes))) => this.feed(&bytes, &mut out),
                Poll::Ready(Some(Err(error))) => {
                    let error = error.to_gateway_error(&this.provider);
                    this.fail(error, &mut out);
                }
                Poll::Ready(None) => this.upstream_ended(&mut out),
            }
            if this.state == State::Streaming && !this.sent_any && !this.substantive {
                this.held.extend_from_slice(&out);
                continue;
            }
            if !this.held.is_empty() {
                let mut all = std::mem::take(&mut this.held);
                all.extend_from_slice(&out);
                out = all;
            }
            if !out.is_empty() {
                this.sent_any = true;
                return Poll::Ready(Some(Ok(out.freeze())));
            }
        }
    }
}

impl<S> Drop for TranslatedStream<S> {
    fn drop(&mut self) {
        let Some(draft) = self.draft.take() else {
            return;
        };
        let status = match self.state {
            State::Done { status } => status,
            State::Streaming => crate::usage::CLIENT_CLOSED,
        };
        // A stream cut before its usage is counted from what was sent.
        let output = (self.sent_any || self.substantive).then_some(self.text.as_str());
        draft.finish(status, self.decoder.usage(), output);
    }
}

/// A chunk that only opens the answer (its role), with nothing of it yet.
fn is_preamble(chunk: &ChatChunk) -> bool {
    chunk.choices.iter().all(|c| {
        c.finish_reason.is_none()
            && c.delta.content.as_deref().is_none_or(str::is_empty)
            && c.delta.tool_calls.is_none()
            && c.delta.reasoning_content.is_none()
    }) && chunk.usage.is_none()
}

/// A whole answer told as a stream, for providers that answer a stream
/// request with one JSON body.
pub fn replay(completion: &ChatCompletion) -> Vec<ChatChunk> {
    let builder = ChunkBuilder::new(completion.id.clone(), completion.model.clone());
    let mut chunks = vec![builder.role()];
    for choice in &completion.choices {
        let mut delta = Delta {
            content: choice.message.content.clone(),
            ..Delta::default()
        };
        if let Some(calls) = &choice.message.tool_calls {
            delta.tool_calls = Some(
                calls
                    .iter()
                    .enumerate()
                    .map(|(index, call)| super::ToolCallDelta {
                        index: index as u32,
                        id: Some(call.id.clone()),
                        kind: Some(call.kind.clone()),
                        function: super::FunctionDelta {
                            name: Some(call.function.name.clone()),
                            arguments: Some(call.function.arguments.clone()),
                        },
                    })
                    .collect(),
            );
        }
        chunks.push(builder.chunk(delta, None));
        chunks.push(builder.finish(choice.finish_reason.unwrap_or(FinishReason::Stop)));
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chat::framing::{Frame, Framing};
    use crate::error::ProviderError;
    use futures_util::StreamExt;

    /// Emits one text chunk per frame; finishes on "end"; fails on "fail".
    struct Echo {
        progress: crate::providers::Progress,
    }

    impl StreamDecoder for Echo {
        fn framing(&self) -> Framing {
            Framing::Ndjson
        }

        fn decode(&mut self, frame: Frame, out: &mut Vec<ChatChunk>) -> Result<(), ProviderError> {
            match frame.data.as_str() {
                "end" => self.progress.finished = true,
                "fail" => return Err(crate::providers::invalid_answer()),
                text => out.push(ChunkBuilder::new("c".into(), "m".into()).text(text.to_owned())),
            }
            Ok(())
        }

        fn progress(&self) -> &crate::providers::Progress {
            &self.progress
        }
    }

    fn echo_progress() -> crate::providers::Progress {
        let mut progress = crate::providers::Progress::new("m");
        progress.usage = Some(TokenUsage::new(1, 2));
        progress
    }

    fn stream(
        lines: &'static [&'static str],
    ) -> (
        TranslatedStream<impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin>,
        crate::usage::UsageQueue,
    ) {
        let (draft, queue) = UsageDraft::for_test();
        let upstream =
            futures_util::stream::iter(lines.iter().map(|l| Ok(Bytes::from_static(l.as_bytes()))));
        let egress = Box::new(OpenAiEgress::new(true));
        (
            TranslatedStream::new(
                upstream,
                Box::new(Echo {
                    progress: echo_progress(),
                }),
                egress,
                "p".into(),
                draft,
            ),
            queue,
        )
    }

    async fn collect(mut s: impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin) -> String {
        let mut text = String::new();
        while let Some(Ok(bytes)) = s.next().await {
            text.push_str(std::str::from_utf8(&bytes).expect("utf8"));
        }
        text
    }

    #[tokio::test]
    async fn ends_with_usage_and_done_only_when_the_provider_finished() {
        let (s, mut queue) = stream(&["hi\n", "end\n"]);
        let text = collect(s).await;
        assert!(text.contains(r#""content":"hi""#));
        assert!(
            text.contains(r#""choices":[],"#) && text.ends_with("data: [DONE]\n\n"),
            "{text}"
        );
        assert_eq!(
            queue
                .receiver
                .recv()
                .await
                .map(|r| (r.status, r.tokens.total_tokens)),
            Some((200, 3))
        );

        let (s, mut queue) = stream(&["hi\n"]);
        let text = collect(s).await;
        assert!(
            text.contains("upstream_unreachable") && !text.contains("[DONE]"),
            "{text}"
        );
        assert_eq!(queue.receiver.recv().await.map(|r| r.status), Some(502));
    }

    #[tokio::test]
    async fn an_error_before_the_first_byte_is_kept_for_an_http_answer() {
        let (mut s, mut queue) = stream(&["fail\n"]);
        assert!(s.next().await.is_none());
        assert!(s.take_early_failure().is_some());
        drop(s);
        assert_eq!(queue.receiver.recv().await.map(|r| r.status), Some(502));
    }
}
