//! One try of a request on one target: the call written for the target's
//! provider (OpenAI's format spliced through, any other translated), sent,
//! and answered up to its first token. A failure leaves the usage draft with
//! the caller, who may try again; a success has recorded it, or handed it to
//! the stream that will.

use super::trace::ClientTrace;
use super::{anthropic, json_response, sse_response, Job};
use crate::cache::Fill;
use crate::chat::{ChatRequest, EmbeddingsRequest};
use crate::error::GatewayError;
use crate::limits::estimate;
use crate::providers::anthropic::StreamUsage;
use crate::providers::body::UpstreamBody;
use crate::providers::{self, provider_error, UpstreamCall, UpstreamResponse};
use crate::relay::passthrough::{Dialect, Passthrough};
use crate::relay::translate::{replay, Translate};
use crate::relay::{Relay, Stage};
use crate::router::table::{Route, Target};
use crate::usage::{Endpoint, TokenUsage, UsageDraft};
use axum::body::Body;
use axum::http::header;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http_body_util::BodyExt;
use shared::provider_kind::ProviderKind;
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

pub struct Answered {
    pub response: Response,
    /// To the first token of a stream, or the whole of an answer.
    pub latency: Duration,
    pub tokens: u64,
}

/// What the request needs from this provider.
enum Call {
    /// The client's own format, spliced through.
    Passthrough {
        call: UpstreamCall,
        native: Native,
    },
    Chat(UpstreamCall),
    Embeddings(UpstreamCall),
    /// A token count no provider call gives: the gateway's own estimate.
    Counted(i64),
}

/// Whose format a spliced request is in.
#[derive(Clone, Copy)]
enum Native {
    /// OpenAI's, to an OpenAI-format provider; `hide_usage`: the stream's
    /// usage chunk was asked for by us, not the client.
    OpenAi { hide_usage: bool },
    /// Anthropic's, to Anthropic.
    Anthropic,
}

fn path(endpoint: Endpoint) -> &'static str {
    match endpoint {
        Endpoint::ChatCompletions | Endpoint::Messages | Endpoint::CountTokens => {
            "/chat/completions"
        }
        Endpoint::Embeddings => "/embeddings",
        Endpoint::Completions => "/completions",
        Endpoint::Responses => "/responses",
    }
}

/// A request read into types once, on the first attempt that needs it.
fn parsed<T>(
    cell: &OnceLock<T>,
    parse: impl FnOnce() -> Result<T, GatewayError>,
) -> Result<&T, GatewayError> {
    if cell.get().is_none() {
        let _ = cell.set(parse()?);
    }
    cell.get()
        .ok_or_else(|| GatewayError::bad_request("The request could not be read.", None))
}

/// The request in OpenAI's typed form, for a provider of `kind`.
fn chat_of(job: &Job, kind: ProviderKind) -> Result<&ChatRequest, GatewayError> {
    let (request, chat) = match job {
        Job::OpenAi { request, chat, .. } | Job::Messages { request, chat, .. } => (request, chat),
    };
    parsed(chat, || {
        let mut chat = match job {
            Job::OpenAi { .. } => ChatRequest::parse(request.body())?,
            Job::Messages { .. } => {
                anthropic::to_chat(anthropic::parse(request.body())?, kind.as_str())?
            }
        };
        chat.max_tokens = request.max_tokens_cap().or(chat.max_tokens);
        Ok(chat)
    })
}

fn embeddings_of(job: &Job) -> Result<&EmbeddingsRequest, GatewayError> {
    match job {
        Job::OpenAi {
            request,
            embeddings,
            ..
        } => parsed(embeddings, || EmbeddingsRequest::parse(request.body())),
        Job::Messages { .. } => Err(GatewayError::bad_request(
            "Not an embeddings request.",
            None,
        )),
    }
}

fn write_call(target: &Target, job: &Job) -> Result<Call, GatewayError> {
    let adapter = &target.provider.adapter;
    let model = &target.upstream_model;
    let kind = adapter.kind();
    match job {
        Job::OpenAi {
            endpoint, request, ..
        } => {
            let endpoint = *endpoint;
            if matches!(endpoint, Endpoint::Completions | Endpoint::Responses)
                && !kind.serves_completions_and_responses()
            {
                return Err(GatewayError::bad_request(
                    format!("{} is served only by providers of kind openai, azure_openai and openai_compatible; this model's provider is {kind}.", path(endpoint).trim_start_matches('/')),
                    Some("model"),
                ));
            }
            if endpoint == Endpoint::Embeddings && !kind.offers_embeddings() {
                return Err(GatewayError::bad_request(
                    format!("Provider kind {kind} offers no embeddings."),
                    Some("model"),
                ));
            }
            if let Some(call) =
                adapter.passthrough(path(endpoint), model, request.upstream_body(model))
            {
                // The Responses API's usage event is the client's own: never hidden.
                let hide_usage = request.stream
                    && !request.client_wants_usage
                    && endpoint != Endpoint::Responses;
                return Ok(Call::Passthrough {
                    call,
                    native: Native::OpenAi { hide_usage },
                });
            }
            if endpoint == Endpoint::Embeddings {
                return Ok(Call::Embeddings(
                    adapter.embeddings_request(model, embeddings_of(job)?)?,
                ));
            }
            Ok(Call::Chat(
                adapter.chat_request(model, chat_of(job, kind)?)?,
            ))
        }
        Job::Messages {
            endpoint,
            request,
            client_headers,
            ..
        } => {
            let path = match endpoint {
                Endpoint::CountTokens => "/messages/count_tokens",
                _ => "/messages",
            };
            if let Some(call) =
                adapter.native_messages(path, request.upstream_body(model), client_headers)
            {
                return Ok(Call::Passthrough {
                    call,
                    native: Native::Anthropic,
                });
            }
            if *endpoint == Endpoint::CountTokens {
                use crate::usage::PromptTokens;
                return Ok(Call::Counted(job.prompt_tokens()));
            }
            Ok(Call::Chat(
                adapter.chat_request(model, chat_of(job, kind)?)?,
            ))
        }
    }
}

pub async fn one(
    state: &super::AppState,
    route: &Route,
    target: &Target,
    job: &Job,
    slot: &mut Option<UsageDraft>,
    deadline: Option<Instant>,
    trace: &ClientTrace,
) -> Result<Answered, GatewayError> {
    let provider = &target.provider;
    let model = &target.upstream_model;
    if let Some(draft) = slot.as_mut() {
        draft.record.provider.clone_from(&provider.name);
        draft.record.upstream_model.clone_from(model);
        draft.meters = Some(target.meters.clone());
    }
    let started = Instant::now();
    let first_token = route
        .timeouts
        .first_token
        .unwrap_or(state.routing.first_token_timeout);
    let first_deadline = deadline.map_or(started + first_token, |d| d.min(started + first_token));
    let in_flight = target.health.start();

    if let Some(prepare) = provider
        .adapter
        .prepare(&state.http, first_deadline - Instant::now())
    {
        prepare
            .await
            .map_err(|e| provider_error(&provider.name, e))?;
    }
    let (native, mut call) = match write_call(target, job)? {
        Call::Passthrough { call, native } => (Some(native), call),
        Call::Chat(call) | Call::Embeddings(call) => (None, call),
        Call::Counted(input_tokens) => {
            // Counting is free: the record shows the request, not tokens.
            let usage = finish(slot, Some(TokenUsage::default()), String::new);
            let body = serde_json::json!({ "input_tokens": input_tokens }).to_string();
            return Ok(answered(json_response(body), started, usage));
        }
    };
    trace.inject(&mut call.headers);
    let embeddings = matches!(
        job,
        Job::OpenAi {
            endpoint: Endpoint::Embeddings,
            ..
        }
    );
    let timeout = first_deadline.saturating_duration_since(Instant::now());
    let upstream = providers::send(
        &state.http,
        &provider.name,
        provider.adapter.as_ref(),
        call,
        timeout,
        route.timeouts.connect,
    )
    .await?;
    let body_deadline = deadline.or(Some(first_deadline));
    let stream = job.stream();

    // A stream goes through the relay: OpenAI's events as they are, or
    // translated (unless the provider answered it with one JSON body).
    let is_json = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let stage: Option<Box<dyn Stage>> = match native {
        Some(native) if stream => {
            let dialect = match native {
                Native::OpenAi { hide_usage } => Dialect::OpenAi {
                    hide_usage_chunk: hide_usage,
                },
                Native::Anthropic => Dialect::Anthropic(StreamUsage::default()),
            };
            Some(Box::new(Passthrough::new(dialect, job.egress())))
        }
        None if stream && !embeddings && !is_json => {
            let decoder = provider.adapter.stream_decoder(model);
            let egress = job.egress();
            Some(Box::new(Translate::new(
                decoder,
                egress,
                provider.name.clone(),
            )))
        }
        _ => None,
    };
    if let Some(stage) = stage {
        let body = UpstreamBody::new(upstream, route.timeouts.idle, deadline);
        let name = provider.name.clone();
        let relay = Relay::new(body, stage, name, take(slot)?, Some(in_flight));
        return first_token_then(relay, first_deadline, slot, started, &provider.name).await;
    }
    if let Some(native) = native {
        let body = read_answer(upstream, body_deadline, &provider.name).await?;
        let reported = match native {
            Native::OpenAi { .. } => super::request::usage_of(&body),
            Native::Anthropic if job.endpoint() == Endpoint::CountTokens => {
                Some(TokenUsage::default())
            }
            Native::Anthropic => providers::anthropic::usage_of(&body),
        };
        let fill = take_fill(slot);
        let usage = finish(slot, reported, || estimate::answer_text(&body));
        store(fill, &body, usage, target);
        return Ok(answered(json_response(body), started, usage));
    }
    if embeddings {
        let body = read_answer(upstream, body_deadline, &provider.name).await?;
        let (vectors, usage) = provider
            .adapter
            .embeddings_response(&body)
            .map_err(|e| provider_error(&provider.name, e))?;
        let fill = take_fill(slot);
        // No answer text to count: an estimate is of the input alone.
        let usage = finish(slot, usage, String::new);
        let answer = embeddings_of(job)?.answer(vectors, usage).to_string();
        store(fill, answer.as_bytes(), usage, target);
        return Ok(answered(json_response(answer), started, usage));
    }
    // A whole answer; also how Baidu and Tencent answer a stream request that failed.
    let body = read_answer(upstream, body_deadline, &provider.name).await?;
    let completion = provider
        .adapter
        .chat_response(model, &body)
        .map_err(|e| provider_error(&provider.name, e))?;
    let fill = take_fill(slot);
    let usage = finish(slot, completion.usage, || {
        serde_json::to_vec(&completion)
            .map(|answer| estimate::answer_text(&answer))
            .unwrap_or_default()
    });
    if let (Some(fill), Job::OpenAi { .. }) = (fill, job) {
        let mut whole = completion.clone();
        whole.usage = Some(usage);
        if let Ok(json) = serde_json::to_vec(&whole) {
            store(Some(fill), &json, usage, target);
        }
    }
    if stream {
        let mut egress = job.egress();
        let mut out = BytesMut::new();
        for chunk in replay(&completion) {
            egress.chunk(chunk, &mut out);
        }
        egress.end(completion.usage, &mut out);
        return Ok(answered(
            sse_response(Body::from(out.freeze())),
            started,
            usage,
        ));
    }
    let body = match job {
        Job::Messages { request, .. } => {
            serde_json::to_vec(&anthropic::render(completion, &request.model))
        }
        Job::OpenAi { .. } => serde_json::to_vec(&completion),
    }
    .map_err(|_| GatewayError::UpstreamInvalid(provider.name.clone()))?;
    Ok(answered(json_response(body), started, usage))
}

fn answered(response: Response, started: Instant, usage: TokenUsage) -> Answered {
    Answered {
        response,
        latency: started.elapsed(),
        tokens: u64::try_from(usage.total_tokens).unwrap_or(0),
    }
}

fn take(slot: &mut Option<UsageDraft>) -> Result<UsageDraft, GatewayError> {
    slot.take()
        .ok_or_else(|| GatewayError::UpstreamInvalid("usage draft already taken".into()))
}

/// The response cache's fill of a miss, taken before its draft is finished.
fn take_fill(slot: &mut Option<UsageDraft>) -> Option<Fill> {
    slot.as_mut()?.take_fill()
}

/// Stores a successful whole answer for the cache, when it asked for it.
fn store(fill: Option<Fill>, body: &[u8], usage: TokenUsage, target: &Target) {
    if let Some(fill) = fill {
        fill.store(
            Some(body),
            usage,
            &target.provider.name,
            &target.upstream_model,
        );
    }
}

/// Records an answer's usage: as reported, or counted from `answer` (its
/// text) when the provider reported none. Answers the usage recorded.
fn finish(
    slot: &mut Option<UsageDraft>,
    usage: Option<TokenUsage>,
    answer: impl FnOnce() -> String,
) -> TokenUsage {
    let Some(draft) = slot.take() else {
        return usage.unwrap_or_default();
    };
    match usage {
        Some(usage) => draft.finish(200, Some(usage), None),
        None => draft.finish(200, None, Some(&answer())),
    }
}

/// A whole answer, before the deadline.
async fn read_answer(
    upstream: UpstreamResponse,
    deadline: Option<Instant>,
    provider: &str,
) -> Result<Bytes, GatewayError> {
    let collect = upstream.into_body().collect();
    let read = match deadline {
        Some(at) => tokio::time::timeout_at(at, collect).await,
        None => Ok(collect.await),
    };
    match read {
        Ok(Ok(body)) => Ok(body.to_bytes()),
        Ok(Err(error)) => Err(providers::unreachable(provider, &error)),
        Err(_) => Err(GatewayError::UpstreamTimeout(provider.to_owned())),
    }
}

/// A relayed stream, committed to the client only once its first content
/// came: a failure or a timeout before that leaves the attempt retryable and
/// gives the usage draft back.
async fn first_token_then(
    mut relay: Relay<UpstreamBody>,
    first_deadline: Instant,
    slot: &mut Option<UsageDraft>,
    started: Instant,
    provider: &str,
) -> Result<Answered, GatewayError> {
    let first = match tokio::time::timeout_at(first_deadline, relay.next()).await {
        Ok(first) => first,
        Err(_) => {
            *slot = relay.take_draft();
            return Err(GatewayError::UpstreamTimeout(provider.to_owned()));
        }
    };
    if let Some(error) = relay.take_early_failure() {
        *slot = relay.take_draft();
        return Err(error);
    }
    let latency = started.elapsed();
    relay.first_token_sent();
    let body = futures_util::stream::iter(first).chain(relay);
    Ok(Answered {
        response: sse_response(Body::from_stream(body)),
        latency,
        tokens: 0,
    })
}
