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
use hyper::header::HeaderValue;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Once};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tower::ServiceExt;

type Sender = http1::SendRequest<Full<Bytes>>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// One origin's idle connections, newest at the back.
struct Waiting {
    /// Shared with each answer that will give a connection back.
    origin: Arc<Origin>,
    idle: VecDeque<Idle>,
}

/// An upstream's `host[:port]`, and its `Host` header (without any user
/// info), made once.
struct Origin {
    name: Box<str>,
    host: Option<HeaderValue>,
}

impl Origin {
    fn new(name: &str) -> Arc<Self> {
        let host = match name.rsplit_once('@') {
            Some((_, host)) => host,
            None => name,
        };
        Arc::new(Origin {
            name: name.into(),
            host: HeaderValue::from_str(host).ok(),
        })
    }
}

struct Idles {
    waiting: Mutex<foldhash::HashMap<Box<str>, Waiting>>,
    /// How long a connection may wait for its next request.
    timeout: Duration,
    sweeping: Once,
}

impl Idles {
    fn live(&self, idle: &Idle) -> bool {
        !idle.sender.is_closed() && idle.since.elapsed() < self.timeout
    }

    /// The newest live idle connection to `origin`, if any, and the origin
    /// as the pool keeps it.
    fn take(&self, origin: &str) -> (Option<Sender>, Arc<Origin>) {
        let mut waiting = self.waiting.lock();
        let waiting = match waiting.get_mut(origin) {
            Some(waiting) => waiting,
            None => waiting.entry(origin.into()).or_insert_with(|| Waiting {
                origin: Origin::new(origin),
                idle: VecDeque::new(),
            }),
        };
        while let Some(idle) = waiting.idle.pop_back() {
            if self.live(&idle) {
                return (Some(idle.sender), waiting.origin.clone());
            }
        }
        (None, waiting.origin.clone())
    }

    fn put(&self, origin: &Arc<Origin>, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut waiting = self.waiting.lock();
        let waiting = match waiting.get_mut(&*origin.name) {
            Some(waiting) => waiting,
            None => waiting
                .entry(origin.name.clone())
                .or_insert_with(|| Waiting {
                    origin: origin.clone(),
                    idle: VecDeque::new(),
                }),
        };
        // The oldest are at the front; those gone stale leave here, since
        // last-in first-out reuse would never reach them.
        while waiting.idle.front().is_some_and(|old| !self.live(old)) {
            waiting.idle.pop_front();
        }
        waiting.idle.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// Closes the connections that waited too long (or that the upstream
    /// closed) and forgets origins left with none: without traffic to an
    /// origin, nothing else would.
    fn sweep(&self) {
        self.waiting.lock().retain(|_, waiting| {
            waiting.idle.retain(|idle| self.live(idle));
            !waiting.idle.is_empty()
        });
    }

    /// Sweeps on the current runtime while the pool lives, from the first
    /// connection on (a pool may be built outside any runtime).
    fn sweep_from_now_on(self: &Arc<Self>) {
        self.sweeping.call_once(|| {
            let pool = Arc::downgrade(self);
            let mut every = tokio::time::interval(self.timeout / 2);
            tokio::spawn(async move {
                every.tick().await;
                loop {
                    every.tick().await;
                    match pool.upgrade() {
                        Some(idles) => idles.sweep(),
                        None => return,
                    }
                }
            });
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
    /// `idle_timeout`: how long a connection may wait for its next request.
    pub fn new(connector: TimedConnector, idle_timeout: Duration) -> Self {
        let idle = Idles {
            waiting: Mutex::default(),
            timeout: idle_timeout,
            sweeping: Once::new(),
        };
        Http1Pool {
            idle: Arc::new(idle),
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
        let (mut idle, origin) = self.idle.take(uri.authority().map_or("", |a| a.as_str()));
        if let Some(host) = &origin.host {
            request
                .headers_mut()
                .entry(hyper::header::HOST)
                .or_insert_with(|| host.clone());
        }
        // HTTP/1.1 requests name their path; the origin went into Host.
        let mut path = uri.clone().into_parts();
        path.scheme = None;
        path.authority = None;
        *request.uri_mut() =
            hyper::Uri::from_parts(path).unwrap_or_else(|_| hyper::Uri::from_static("/"));
        while let Some(mut sender) = idle.take() {
            if sender.ready().await.is_ok() {
                match sender.try_send_request(request).await {
                    Ok(response) => return Ok(self.pooled(response, origin, sender)),
                    Err(mut failed) => match failed.take_message() {
                        Some(unsent) => request = unsent,
                        None => return Err(failed.into_error().into()),
                    },
                }
            }
            idle = self.idle.take(&origin.name).0;
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
        self.idle.sweep_from_now_on();
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
        origin: Arc<Origin>,
        sender: Sender,
    ) -> hyper::Response<PooledBody> {
        let give_back = GiveBack {
            idle: self.idle.clone(),
            origin,
            sender,
        };
        response.map(|inner| PooledBody::new(inner, Some(give_back)))
    }
}

/// A connection to put back in the pool once its answer is read.
struct GiveBack {
    idle: Arc<Idles>,
    origin: Arc<Origin>,
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

    struct Upstream {
        uri: String,
        accepted: Arc<AtomicUsize>,
        closed: Arc<AtomicUsize>,
    }

    /// An upstream that answers every request with `body`, counting the
    /// connections it accepted and those that ended; with a `lifetime`, it
    /// drops each connection that long after accepting it.
    async fn upstream(body: &'static str, lifetime: Option<Duration>) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let closed = Arc::new(AtomicUsize::new(0));
        let (accepting, closing) = (accepted.clone(), closed.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepting.fetch_add(1, Ordering::SeqCst);
                let service = hyper::service::service_fn(move |_request| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::from(
                        body,
                    ))))
                });
                let closing = closing.clone();
                tokio::spawn(async move {
                    let serving = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service);
                    match lifetime {
                        // Closed as servers close idle keep-alive connections: without a word.
                        Some(lifetime) => drop(tokio::time::timeout(lifetime, serving).await),
                        None => drop(serving.await),
                    }
                    closing.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        Upstream {
            uri: format!("http://{address}/v1/chat/completions"),
            accepted,
            closed,
        }
    }

    fn pool() -> Http1Pool {
        pool_with_idle_timeout(Duration::from_secs(90))
    }

    fn pool_with_idle_timeout(idle_timeout: Duration) -> Http1Pool {
        Http1Pool::new(
            TimedConnector::new(Duration::from_secs(5), false),
            idle_timeout,
        )
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

    /// Sends a request and reads its answer to the end.
    async fn ask(pool: &Http1Pool, uri: &str) -> Bytes {
        text(pool.send(request(uri)).await.expect("sent")).await
    }

    #[tokio::test]
    async fn answers_read_to_the_end_reuse_one_connection() {
        let Upstream { uri, accepted, .. } = upstream("hello", None).await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(ask(&pool, &uri).await, "hello");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_body_dropped_unread_closes_its_connection() {
        let Upstream { uri, accepted, .. } = upstream("hello", None).await;
        let pool = pool();
        drop(pool.send(request(&uri)).await.expect("sent"));
        assert_eq!(ask(&pool, &uri).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_connection_the_upstream_closed_is_replaced() {
        let Upstream { uri, accepted, .. } =
            upstream("hello", Some(Duration::from_millis(300))).await;
        let pool = pool();
        assert_eq!(ask(&pool, &uri).await, "hello");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(ask(&pool, &uri).await, "hello", "sent after the close");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn concurrent_requests_open_a_connection_each() {
        let Upstream { uri, accepted, .. } = upstream("hello", None).await;
        let pool = pool();
        let (a, b) = tokio::join!(pool.send(request(&uri)), pool.send(request(&uri)));
        assert_eq!(text(a.expect("a")).await, "hello");
        assert_eq!(text(b.expect("b")).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
        assert_eq!(ask(&pool, &uri).await, "hello");
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "an idle one was reused");
    }

    #[tokio::test]
    async fn connections_idle_past_the_timeout_are_closed_without_traffic() {
        let upstream = upstream("hello", None).await;
        let pool = pool_with_idle_timeout(Duration::from_millis(200));
        assert_eq!(ask(&pool, &upstream.uri).await, "hello");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            upstream.closed.load(Ordering::SeqCst),
            0,
            "kept while fresh"
        );
        // The sweep runs every half timeout: closed within 1.5 timeouts.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            upstream.closed.load(Ordering::SeqCst),
            1,
            "closed when stale"
        );
        assert!(pool.idle.waiting.lock().is_empty(), "the origin forgotten");
        assert_eq!(ask(&pool, &upstream.uri).await, "hello");
        assert_eq!(upstream.accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn requests_name_their_path_and_the_origin_as_host_also_on_a_reused_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let service = hyper::service::service_fn(|request: hyper::Request<Incoming>| {
                    let host = request.headers().get(hyper::header::HOST).cloned();
                    let seen = format!("{host:?} {}", request.uri());
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(seen),
                        )))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service),
                );
            }
        });
        let pool = pool();
        let expected = format!("Some(\"{address}\") /v1/chat/completions?x=1");
        for _ in 0..2 {
            let uri = format!("http://{address}/v1/chat/completions?x=1");
            assert_eq!(ask(&pool, &uri).await, expected);
        }
        let mut theirs = request(&format!("http://{address}/v1/models"));
        theirs.headers_mut().insert(
            hyper::header::HOST,
            HeaderValue::from_static("api.example.com"),
        );
        let answer = text(pool.send(theirs).await.expect("sent")).await;
        assert_eq!(answer, "Some(\"api.example.com\") /v1/models");
    }
}
