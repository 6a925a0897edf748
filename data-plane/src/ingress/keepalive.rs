//! A stream whose first token is slow: after `every`, the client gets the
//! response head and an SSE comment, and another each `every`, so proxies
//! and load balancers do not cut an idle connection. The attempts go on
//! behind it (a comment is not an answer: retries are still allowed); their
//! stream follows, or an error event in the ingress's format.

use super::{sse_response, Job};
use crate::error::GatewayError;
use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub(super) const COMMENT: &[u8] = b": keepalive\n\n";

type Work = Pin<Box<dyn Future<Output = Result<Response, GatewayError>> + Send>>;

pub async fn respond(
    work: impl Future<Output = Result<Response, GatewayError>> + Send + 'static,
    every: Duration,
    job: Arc<Job>,
) -> Result<Response, GatewayError> {
    let mut work: Work = Box::pin(work);
    match tokio::time::timeout(every, &mut work).await {
        Ok(answered) => answered,
        Err(_) => {
            metrics::counter!("switchboard_stream_keepalives_total").increment(1);
            Ok(sse_response(Body::from_stream(kept_alive(
                work, every, job,
            ))))
        }
    }
}

enum State {
    Waiting(Work, tokio::time::Interval, Arc<Job>),
    Relaying(axum::body::BodyDataStream),
    Done,
}

fn kept_alive(
    work: Work,
    every: Duration,
    job: Arc<Job>,
) -> impl Stream<Item = Result<Bytes, axum::Error>> {
    let interval = tokio::time::interval_at(tokio::time::Instant::now(), every);
    futures_util::stream::unfold(State::Waiting(work, interval, job), |state| async move {
        match state {
            State::Waiting(mut work, mut interval, job) => tokio::select! {
                answered = &mut work => match answered {
                    Ok(response) => {
                        let mut body = response.into_body().into_data_stream();
                        let first = body.next().await?;
                        Some((first, State::Relaying(body)))
                    }
                    Err(error) => Some((Ok(job.error_event(&error)), State::Done)),
                },
                _ = interval.tick() => Some((Ok(Bytes::from_static(COMMENT)), State::Waiting(work, interval, job))),
            },
            State::Relaying(mut body) => {
                let next = body.next().await?;
                Some((next, State::Relaying(body)))
            }
            State::Done => None,
        }
    })
}
