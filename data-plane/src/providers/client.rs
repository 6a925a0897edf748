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

type Pool = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

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
                    .wrap_connector(http);
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

    pub async fn send(&self, request: UpstreamRequest) -> Result<UpstreamResponse, SendError> {
        let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
        self.shards[shard].request(request).await
    }
}
