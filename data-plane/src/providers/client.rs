//! The pooled HTTP client every adapter sends through: HTTP/1.1 keep-alive
//! for plain `http://` upstreams, HTTP/2 (by ALPN) or HTTP/1.1 over TLS.
//!
//! hyper keeps one HTTP/2 connection per host and queues requests once the
//! server's concurrent-stream limit is reached, so the client is sharded:
//! requests rotate over several independent pools, each with its own
//! connection, and the stream limit is multiplied by the shard count.

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamRequest = hyper::Request<Full<Bytes>>;
pub type UpstreamResponse = hyper::Response<hyper::body::Incoming>;
type SendError = hyper_util::client::legacy::Error;

type Pool = Client<HttpsConnector<TimedConnector>, Full<Bytes>>;

tokio::task_local! {
    /// A route's connect timeout, for the connection this request may open.
    static CONNECT_TIMEOUT: Duration;
}

/// The TCP connector, bounded by the calling request's connect timeout when
/// it has one. hyper starts a new connection inside the request's own task,
/// so the request's task-local value is in scope when `call` runs.
#[derive(Clone)]
struct TimedConnector(HttpConnector);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<hyper::Uri> for TimedConnector {
    type Response = <HttpConnector as tower::Service<hyper::Uri>>::Response;
    type Error = BoxError;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, BoxError>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: hyper::Uri) -> Self::Future {
        let limit = CONNECT_TIMEOUT.try_with(|limit| *limit).ok();
        let connecting = self.0.call(uri);
        Box::pin(async move {
            match limit {
                Some(limit) => match tokio::time::timeout(limit, connecting).await {
                    Ok(connected) => connected.map_err(Into::into),
                    Err(_) => Err("connect timed out".into()),
                },
                None => connecting.await.map_err(Into::into),
            }
        })
    }
}

#[derive(Clone)]
pub struct UpstreamClient {
    shards: Arc<[Pool]>,
    next: Arc<AtomicUsize>,
}

impl UpstreamClient {
    pub fn new(connect_timeout: Duration, shards: usize) -> Self {
        let shards = (0..shards.max(1))
            .map(|_| {
                let mut http = HttpConnector::new();
                http.set_nodelay(true);
                http.set_connect_timeout(Some(connect_timeout));
                http.enforce_http(false);
                let https = HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_or_http()
                    .enable_all_versions()
                    .wrap_connector(TimedConnector(http));
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(https)
            })
            .collect();
        Self {
            shards,
            next: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// `connect_timeout`: a bound below the client's own, for this request's
    /// new connection (pooled ones are reused at once).
    pub async fn send(
        &self,
        request: UpstreamRequest,
        connect_timeout: Option<Duration>,
    ) -> Result<UpstreamResponse, SendError> {
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        let sent = self.shards[shard].request(request);
        match connect_timeout {
            Some(limit) => CONNECT_TIMEOUT.scope(limit, sent).await,
            None => sent.await,
        }
    }
}
