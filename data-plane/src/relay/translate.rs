//! Streams that change format on the way: the provider's messages are
//! decoded into OpenAI chunks as they arrive and written for the client's
//! ingress by an `Egress` (OpenAI's events here, Anthropic's in
//! `ingress::anthropic`).

use super::{sse_data, Out, Stage};
use crate::chat::framing::{Frame, FrameDecoder};
use crate::chat::{ChatChunk, ChatCompletion, ChunkBuilder, Delta, FinishReason};
use crate::error::GatewayError;
use crate::limits::estimate::StreamedText;
use crate::providers::{provider_error, unreachable, StreamDecoder};
use crate::usage::TokenUsage;
use bytes::{Bytes, BytesMut};

/// How chunks are written for one ingress format.
pub trait Egress: Send {
    fn chunk(&mut self, chunk: ChatChunk, out: &mut BytesMut);
    /// The provider finished; `usage` is its final count.
    fn end(&mut self, usage: Option<TokenUsage>, out: &mut BytesMut);
    /// The stream failed after it began: no normal ending follows.
    fn error(&mut self, error: &GatewayError, out: &mut BytesMut);
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

pub struct Translate {
    frames: FrameDecoder,
    decoder: Box<dyn StreamDecoder>,
    egress: Box<dyn Egress>,
    provider: String,
    began: bool,
    /// The answer's text so far, counted if the stream ends without usage.
    text: StreamedText,
}

impl Translate {
    pub fn new(decoder: Box<dyn StreamDecoder>, egress: Box<dyn Egress>, provider: String) -> Self {
        Translate {
            frames: FrameDecoder::new(decoder.framing()),
            decoder,
            egress,
            provider,
            began: false,
            text: StreamedText::default(),
        }
    }

    fn decode(&mut self, frames: Vec<Frame>, out: &mut BytesMut) -> Result<(), GatewayError> {
        let mut chunks = Vec::new();
        for frame in frames {
            let decoded = self.decoder.decode(frame, &mut chunks);
            for chunk in chunks.drain(..) {
                self.began |= !is_preamble(&chunk);
                for choice in &chunk.choices {
                    self.text
                        .push(choice.delta.content.as_deref().unwrap_or_default());
                }
                self.egress.chunk(chunk, out);
            }
            decoded.map_err(|error| provider_error(&self.provider, error))?;
        }
        Ok(())
    }
}

impl Stage for Translate {
    fn chunk(&mut self, chunk: Bytes, out: &mut Out) -> Result<(), GatewayError> {
        let mut frames = Vec::new();
        self.frames.push(&chunk, &mut frames);
        self.decode(frames, out.buffer())
    }

    fn end(&mut self, out: &mut Out) -> Result<(), GatewayError> {
        let mut frames = Vec::new();
        self.frames.finish(&mut frames);
        let out = out.buffer();
        self.decode(frames, out)?;
        if !self.decoder.finished() {
            return Err(unreachable(
                &self.provider,
                &"the stream ended before the provider finished its answer",
            ));
        }
        self.egress.end(self.decoder.usage(), out);
        Ok(())
    }

    fn error_event(&mut self, error: &GatewayError, out: &mut BytesMut) {
        self.egress.error(error, out);
    }

    fn began(&self) -> bool {
        self.began
    }

    fn usage(&self) -> Option<TokenUsage> {
        self.decoder.usage()
    }

    fn streamed_text(&self) -> &str {
        self.text.as_str()
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
            reasoning_content: choice.message.reasoning_content.clone(),
            ..Delta::default()
        };
        if let Some(calls) = &choice.message.tool_calls {
            delta.tool_calls = Some(
                calls
                    .iter()
                    .enumerate()
                    .map(|(index, call)| crate::chat::ToolCallDelta {
                        index: index as u32,
                        id: Some(call.id.clone()),
                        kind: Some(call.kind.clone()),
                        function: crate::chat::FunctionDelta {
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
    use crate::relay::Relay;
    use crate::usage::UsageDraft;
    use futures_util::{Stream, StreamExt};

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
        Relay<impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin>,
        crate::usage::UsageQueue,
    ) {
        let (draft, queue) = UsageDraft::for_test();
        let upstream =
            futures_util::stream::iter(lines.iter().map(|l| Ok(Bytes::from_static(l.as_bytes()))));
        let egress = Box::new(OpenAiEgress::new(true));
        let decoder = Box::new(Echo {
            progress: echo_progress(),
        });
        let stage = Box::new(Translate::new(decoder, egress, "p".into()));
        (Relay::new(upstream, stage, "p".into(), draft, None), queue)
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
