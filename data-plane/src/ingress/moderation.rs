//! Answers checked after the provider, by the guardrails (the route's, then
//! the team's) that see them: plugins' response and chunk hooks, and the
//! moderation service. A whole answer is checked before it is sent. A
//! stream is checked event by event as it passes, by plugins that say they
//! see chunks, and whole at its end by the rest: then it is held back until
//! they allowed it, so that nothing they would refuse reaches the client.
//! The usage is the provider's answer's, whatever they decide: it was paid
//! for.

use super::{AppState, Job};
use crate::chat::framing::{Frame, FrameDecoder, Framing};
use crate::error::GatewayError;
use crate::guardrails::{Compiled, Stage, StreamChecks};
use crate::providers::UpstreamClient;
use crate::relay::whole::{self, Form};
use crate::router;
use crate::usage::{CutShort, Endpoint};
use axum::body::{Body, BodyDataStream};
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// The guardrails that see a request's answer.
#[derive(Default)]
pub struct Moderation {
    route: String,
    services: Vec<Arc<Compiled>>,
}

impl Moderation {
    pub fn new(plan: &router::Plan, team: Option<&Arc<Compiled>>) -> Self {
        let route = &plan.routes[0];
        let services: Vec<_> = [route.guardrails.as_ref(), team]
            .into_iter()
            .flatten()
            .filter(|g| g.checks_answers())
            .cloned()
            .collect();
        if services.is_empty() {
            return Moderation::default();
        }
        Moderation {
            route: route.model.clone(),
            services,
        }
    }

    /// How a stream is checked, by all the guardrails together.
    fn stream_checks(&self) -> StreamChecks {
        let each = self.services.iter().map(|g| g.stream_checks());
        StreamChecks {
            per_event: each.clone().any(|checks| checks.per_event),
            at_end: each.clone().any(|checks| checks.at_end),
        }
    }

    /// A stream that may be ended by a check: how its usage learns why.
    pub fn cut_short(&self, stream: bool) -> Option<CutShort> {
        (stream && self.stream_checks().per_event).then(CutShort::default)
    }

    /// A whole answer, once the plugins that see answers (which may rewrite
    /// it) and the moderation services allowed it.
    pub async fn whole(
        self,
        state: &AppState,
        job: &Job,
        response: Response,
    ) -> Result<Response, GatewayError> {
        if self.services.is_empty() {
            return Ok(response);
        }
        let (mut parts, body) = response.into_parts();
        let mut answer = axum::body::to_bytes(body, usize::MAX)
            .await
            .map_err(|_| GatewayError::UpstreamInvalid(self.route.clone()))?;
        if let Some(rewritten) = self.checked(&state.http, job, &answer, false).await? {
            answer = rewritten.into();
            parts.headers.remove(axum::http::header::CONTENT_LENGTH);
        }
        Ok(Response::from_parts(parts, Body::from(answer)))
    }

    /// A streamed answer through the checks that see streams.
    pub fn stream(
        self,
        state: &AppState,
        job: Arc<Job>,
        cut_short: Option<CutShort>,
        response: Response,
    ) -> Response {
        let checks = self.stream_checks();
        if checks == StreamChecks::default() {
            return response;
        }
        let (parts, body) = response.into_parts();
        let checking = Checking {
            body: Some(body.into_data_stream()),
            frames: FrameDecoder::new(Framing::Sse),
            per_event: checks.per_event,
            held: checks.at_end.then(Vec::new),
            form: form(&job),
            job,
            http: state.http.clone(),
            moderation: self,
            cut_short,
            every: state.routing.stream_keepalive,
        };
        let body = futures_util::stream::unfold(checking, |mut checking| async move {
            let next = checking.next().await?;
            Some((next, checking))
        });
        Response::from_parts(parts, Body::from_stream(body))
    }

    /// A whole answer through each guardrails' plugins, then its moderation
    /// service; the answer to send in its place when one was rewritten.
    async fn checked(
        &self,
        http: &UpstreamClient,
        job: &Job,
        answer: &[u8],
        streamed: bool,
    ) -> Result<Option<Vec<u8>>, GatewayError> {
        let mut rewritten: Option<Vec<u8>> = None;
        for guardrails in &self.services {
            let current = rewritten.as_deref().unwrap_or(answer);
            if let Some(new) = guardrails.inspect_answer(current, streamed)? {
                rewritten = Some(new);
            }
            let stage = Stage::Answer {
                route: &self.route,
                request: job.request().body(),
                answer: rewritten.as_deref().unwrap_or(answer),
            };
            guardrails.moderate(http, stage).await?;
        }
        Ok(rewritten)
    }
}

fn form(job: &Job) -> Form {
    match job.endpoint() {
        Endpoint::ChatCompletions => Form::Chat,
        Endpoint::Messages => Form::Messages,
        Endpoint::Completions => Form::Events { done: true },
        _ => Form::Events { done: false },
    }
}

struct Checking {
    /// The stream from the relay; dropped (the provider's stream cancelled)
    /// when a check ends the stream early.
    body: Option<BodyDataStream>,
    frames: FrameDecoder,
    per_event: bool,
    /// The events so far, when the whole answer is checked at the end.
    held: Option<Vec<Frame>>,
    form: Form,
    job: Arc<Job>,
    http: UpstreamClient,
    moderation: Moderation,
    cut_short: Option<CutShort>,
    /// While nothing is sent (a held answer), a comment this often keeps
    /// proxies from cutting the idle connection.
    every: Duration,
}

impl Checking {
    async fn next(&mut self) -> Option<Result<Bytes, axum::Error>> {
        loop {
            let body = self.body.as_mut()?;
            let mut frames = Vec::new();
            let ended = match tokio::time::timeout(self.every, body.next()).await {
                Err(_idle) => return Some(Ok(Bytes::from_static(super::keepalive::COMMENT))),
                Ok(Some(Err(error))) => return Some(Err(error)),
                Ok(Some(Ok(chunk))) => {
                    self.frames.push(&chunk, &mut frames);
                    false
                }
                Ok(None) => {
                    self.frames.finish(&mut frames);
                    true
                }
            };
            let mut out = BytesMut::new();
            let mut checked = self.events(frames, &mut out);
            if ended && checked.is_ok() {
                self.body = None;
                checked = self.release(&mut out).await;
            }
            if let Err(error) = checked {
                self.fail(&error, &mut out);
            }
            if !out.is_empty() {
                return Some(Ok(out.freeze()));
            }
        }
    }

    /// Events through the chunk hooks, then to the client or held.
    fn events(&mut self, frames: Vec<Frame>, out: &mut BytesMut) -> Result<(), GatewayError> {
        for mut frame in frames {
            if self.per_event && frame.data.trim_start().starts_with('{') {
                for guardrails in &self.moderation.services {
                    if let Some(data) = guardrails.inspect_event(frame.data.as_bytes())? {
                        frame.data = String::from_utf8(data).map_err(|_| {
                            GatewayError::GuardrailRefused(
                                "A plugin rewrote a streamed event into text that is not UTF-8."
                                    .into(),
                            )
                        })?;
                    }
                }
                // An event rewritten to nothing is left out.
                if frame.data.is_empty() {
                    continue;
                }
            }
            match &mut self.held {
                Some(held) => held.push(frame),
                None => frame_out(out, &frame),
            }
        }
        Ok(())
    }

    /// The stream ended: a held answer checked whole, then sent as it came
    /// or as the checks rewrote it.
    async fn release(&mut self, out: &mut BytesMut) -> Result<(), GatewayError> {
        let Some(held) = self.held.take() else {
            return Ok(());
        };
        let rewritten = match whole::assemble(self.form, &held) {
            Some(answer) => {
                self.moderation
                    .checked(&self.http, &self.job, &answer, true)
                    .await?
            }
            None => None,
        };
        match rewritten {
            Some(answer) => out.extend_from_slice(&whole::replay(self.form, &answer)?),
            None => held.iter().for_each(|frame| frame_out(out, frame)),
        }
        Ok(())
    }

    /// A check refused (or failed on) the answer: an error event ends the
    /// stream, and nothing held is sent.
    fn fail(&mut self, error: &GatewayError, out: &mut BytesMut) {
        if let Some(cut) = &self.cut_short {
            cut.set(error.status().as_u16());
        }
        self.held = None;
        self.body = None;
        out.extend_from_slice(&self.job.error_event(error));
    }
}

/// One event as SSE, as it was named.
fn frame_out(out: &mut BytesMut, frame: &Frame) {
    if let Some(event) = &frame.event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(event.as_bytes());
        out.extend_from_slice(b"\n");
    }
    for line in frame.data.split('\n') {
        out.extend_from_slice(b"data: ");
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\n");
    }
    out.extend_from_slice(b"\n");
}
