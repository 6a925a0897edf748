//! Keep-alive HTTP/1.1 connections to plain `http://` upstreams (vLLM,
//! Ollama, in-cluster services, egress proxies), reused last-in first-out.
//!
//! hyper-util's pooled client does, per request, a race of its pool
//! checkout against a lazily built connect, hashes the origin with SipHash
//! byte by byte several times, and spawns a task to put the connection back:
//! 13.5k of the data plane's 107.7k instructions per request (callgrind,
//! docs/benchmarks.md). Here a request
//! takes an idle connection under one short lock, and the connection goes
//! back when its answer's body has been read to the end (a body dropped
//! early closes it, as does any answer that ends the connection).

use super::connect::{BoxError, TimedConnector};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::ServiceExt;

type Sender = http1::SendRequest<Full<Bytes>>;

/// How long a connection may wait in the pool for its next request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);

struct Idle {
    sender: Sender,
    since: Instant,
}

#[derive(Default)]
struct Idles(Mutex<foldhash::HashMap<Box<str>, VecDeque<Idle>>>);

impl Idles {
    fn take(&self, origin: &str) -> Option<Sender> {
        let mut idle = self.0.lock();
        let waiting = idle.get_mut(origin)?;
        while let Some(Idle { sender, since }) = waiting.pop_back() {
            if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                return Some(sender);
            }
        }
        None
    }

    fn put(&self, origin: &str, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.0.lock();
        let waiting = match idle.get_mut(origin) {
            Some(waiting) => waiting,
            None => idle.entry(origin.into()).or_default(),
        };
        // The oldest are at the front; those gone stale leave here, since
        // last-in first-out reuse would never reach them.
        while waiting
            .front()
            .is_some_and(|old| old.sender.is_closed() || old.since.elapsed() >= IDLE_TIMEOUT)
        {
            waiting.pop_front();
        }
        waiting.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    }
}

#[derive(Clone)]
pub struct Http1Pool {
    idle: Arc<Idles>,
    connector: TimedConnector,
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("connect: {0}")]
    Connect(BoxError),
    #[error("{0}")]
    Http(#[from] hyper::Error),
}

impl Http1Pool {
    pub fn new(connector: TimedConnector) -> Self {
        Http1Pool {
            idle: Arc::default(),
            connector,
        }
    }

    /// Sends `request` (absolute URI, `http` scheme) on an idle connection to
    /// its origin, or a new one. A request an idle connection could not take
    /// (the upstream closed it as it was reused) goes on a new connection.
    pub async fn send(
        &self,
        mut request: hyper::Request<Full<Bytes>>,
    ) -> Result<hyper::Response<PooledBody>, PoolError> {
        let uri = request.uri().clone();
        let origin = uri.authority().map_or("", |a| a.as_str());
        if !request.headers().contains_key(hyper::header::HOST) {
            if let Some(host) = host_header(&uri) {
                request.headers_mut().insert(hyper::header::HOST, host);
            }
        }
        // HTTP/1.1 requests name their path; the origin went into Host.
        let mut path = uri.clone().into_parts();
        path.scheme = None;
        path.authority = None;
        *request.uri_mut() =
            hyper::Uri::from_parts(path).unwrap_or_else(|_| hyper::Uri::from_static("/"));
        while let Some(mut sender) = self.idle.take(origin) {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.pooled(response, origin, sender)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) => request = unsent,
                    None => return Err(failed.into_error().into()),
                },
            }
        }
        let mut sender = self.connect(&uri).await?;
        let response = sender.send_request(request).await?;
        Ok(self.pooled(response, origin, sender))
    }

    async fn connect(&self, uri: &hyper::Uri) -> Result<Sender, PoolError> {
        let io = self
            .connector
            .clone()
            .oneshot(uri.clone())
            .await
            .map_err(PoolError::Connect)?;
        let (sender, connection) = http1::handshake(io).await?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    fn pooled(
        &self,
        response: hyper::Response<Incoming>,
        origin: &str,
        sender: Sender,
    ) -> hyper::Response<PooledBody> {
        let give_back = GiveBack {
            idle: self.idle.clone(),
            origin: origin.into(),
            sender,
        };
        response.map(|inner| PooledBody::new(inner, Some(give_back)))
    }
}

/// `host[:port]`, as the URI gives it (without any user info).
fn host_header(uri: &hyper::Uri) -> Option<hyper::header::HeaderValue> {
    let authority = uri.authority()?.as_str();
    let host = match authority.rsplit_once('@') {
        Some((_, host)) => host,
        None => authority,
    };
    hyper::header::HeaderValue::from_str(host).ok()
}

/// A connection to put back in the pool once its answer is read.
struct GiveBack {
    idle: Arc<Idles>,
    origin: Box<str>,
    sender: Sender,
}

impl GiveBack {
    fn done(self) {
        self.idle.put(&self.origin, self.sender);
    }
}

/// An upstream answer's body; read to its end, it returns its connection
/// to the pool.
pub struct PooledBody {
    inner: Incoming,
    give_back: Option<GiveBack>,
}

impl PooledBody {
    /// A body whose connection is not ours to pool (hyper-util's client
    /// pools its own).
    pub(super) fn unpooled(inner: Incoming) -> Self {
        PooledBody::new(inner, None)
    }

    fn new(inner: Incoming, give_back: Option<GiveBack>) -> Self {
        let mut body = PooledBody { inner, give_back };
        if body.inner.is_end_stream() {
            body.finished();
        }
        body
    }

    fn finished(&mut self) {
        if let Some(give_back) = self.give_back.take() {
            give_back.done();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finished(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finished(),
            // A broken body's connection is not reused (dropped with it).
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use hyper_util::rt::TokioIo;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    /// An upstream that answers every request with `body`, counting the
    /// connections it accepted; with a `lifetime`, it drops each connection
    /// that long after accepting it.
    async fn upstream(
        body: &'static str,
        lifetime: Option<Duration>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |_request| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        body,
                    ))))
                });
                tokio::spawn(async move {
                    let serving = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service);
                    match lifetime {
                        // Closed as servers close idle keep-alive connections: without a word.
                        Some(lifetime) => drop(tokio::time::timeout(lifetime, serving).await),
                        None => drop(serving.await),
                    }
                });
            }
        });
        (format!("http://{address}/v1/chat/completions"), accepted)
    }

    fn pool() -> Http1Pool {
        Http1Pool::new(TimedConnector::new(Duration::from_secs(5), false))
    }

    fn request(uri: &str) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post(uri)
            .body(Full::new(Bytes::from_static(b"{}")))
            .expect("request")
    }

    async fn text(response: hyper::Response<PooledBody>) -> Bytes {
        response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
    }

    #[tokio::test]
    async fn answers_read_to_the_end_reuse_one_connection() {
        let (uri, accepted) = upstream("hello", None).await;
        let pool = pool();
        for _ in 0..5 {
            let response = pool.send(request(&uri)).await.expect("sent");
            assert_eq!(text(response).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_closes_its_connection() {
        let (uri, accepted) = upstream("hello", None).await;
        let pool = pool();
        drop(pool.send(request(&uri)).await.expect("sent"));
        let response = pool.send(request(&uri)).await.expect("sent");
        assert_eq!(text(response).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let (uri, accepted) = upstream("hello", Some(Duration::from_millis(300))).await;
        let pool = pool();
        let response = pool.send(request(&uri)).await.expect("sent");
        assert_eq!(text(response).await, "hello");
        tokio::time::sleep(Duration::from_millis(600)).await;
        let response = pool
            .send(request(&uri))
            .await
            .expect("sent after the close");
        assert_eq!(text(response).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_open_a_connection_each() {
        let (uri, accepted) = upstream("hello", None).await;
        let pool = pool();
        let (a, b) = tokio::join!(pool.send(request(&uri)), pool.send(request(&uri)));
        assert_eq!(text(a.expect("a")).await, "hello");
        assert_eq!(text(b.expect("b")).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        let response = pool.send(request(&uri)).await.expect("sent");
        assert_eq!(text(response).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "an idle one was reused");
    }
}
