//! A provider's response body as the relay reads it: bounded by the route's
//! idle timeout (gap between chunks) and the request's deadline.

use super::UpstreamResponse;
use crate::error::GatewayError;
use bytes::Bytes;
use futures_util::Stream;
use http_body_util::BodyDataStream;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("no data from the provider within the timeout")]
    TimedOut,
    #[error("{0}")]
    Transport(#[from] hyper::Error),
}

/// How a stream relay reports an upstream failure to its client.
pub trait StreamFailure: std::fmt::Display + Sized {
    fn to_gateway_error(&self, provider: &str) -> GatewayError {
        super::unreachable(provider, self)
    }
}

impl StreamFailure for BodyError {
    fn to_gateway_error(&self, provider: &str) -> GatewayError {
        match self {
            BodyError::TimedOut => GatewayError::UpstreamTimeout(provider.to_owned()),
            BodyError::Transport(error) => super::unreachable(provider, error),
        }
    }
}

impl StreamFailure for std::io::Error {}

pub struct UpstreamBody {
    inner: BodyDataStream<super::pool::PooledBody>,
    idle: Option<Duration>,
    deadline: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl UpstreamBody {
    pub fn new(
        response: UpstreamResponse,
        idle: Option<Duration>,
        deadline: Option<Instant>,
    ) -> Self {
        UpstreamBody {
            inner: BodyDataStream::new(response.into_body()),
            idle,
            deadline,
            timer: None,
        }
    }

    /// The earlier of the next idle expiry and the deadline.
    fn next_expiry(&self) -> Option<Instant> {
        let idle = self.idle.map(|idle| Instant::now() + idle);
        match (idle, self.deadline) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl Stream for UpstreamBody {
    type Item = Result<Bytes, BodyError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            // Data restarts the idle clock.
            this.timer = None;
            return Poll::Ready(item.map(|r| r.map_err(BodyError::from)));
        }
        if this.timer.is_none() {
            this.timer = this
                .next_expiry()
                .map(|at| Box::pin(tokio::time::sleep_until(at)));
        }
        match this.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => {
                this.timer = None;
                Poll::Ready(Some(Err(BodyError::TimedOut)))
            }
            _ => Poll::Pending,
        }
    }
}
