//! The pooled HTTP client every adapter sends through: HTTP/1.1 keep-alive
//! for plain `http://` upstreams (our own pool, `pool.rs`), HTTP/2 (by ALPN)
//! or HTTP/1.1 over TLS (hyper-util's pooled client).
//!
//! hyper keeps one HTTP/2 connection per host and queues requests once the
//! server's concurrent-stream limit is reached, so the TLS client is
//! sharded: requests rotate over several independent pools, each with its
//! own connection, and the stream limit is multiplied by the shard count.

use super::connect::{TimedConnector, CONNECT_TIMEOUT};
use super::pool::{Http1Pool, PoolError, PooledBody};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::{ClientConfig, RootCertStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamRequest = hyper::Request<Full<Bytes>>;
pub type UpstreamResponse = hyper::Response<PooledBody>;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Plain(#[from] PoolError),
    /// hyper-util's own message only says the connect failed: the cause says why.
    #[error("{0}: {cause}", cause = shared::net::innermost_cause(.0))]
    Tls(#[from] hyper_util::client::legacy::Error),
}

type Pool = Client<HttpsConnector<TimedConnector>, Full<Bytes>>;

#[derive(Clone)]
pub struct UpstreamClient {
    plain: Http1Pool,
    shards: Arc<[Pool]>,
    next: Arc<AtomicUsize>,
}

/// How the data plane connects to providers.
#[derive(Clone, Debug)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    /// How long a connection may wait in a pool for its next request.
    pub idle_timeout: Duration,
    /// Independent pools for HTTPS providers, requests rotating over them.
    pub http2_connections: usize,
    /// Whether providers may resolve to link-local or cloud metadata addresses.
    pub allow_link_local: bool,
    /// The CAs an `https://` provider's certificate may chain to.
    pub roots: Arc<RootCertStore>,
}

impl UpstreamSettings {
    /// The public (webpki) roots, the trust of every provider on the internet.
    pub fn public_roots() -> RootCertStore {
        RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
    }
}

impl UpstreamClient {
    pub fn new(settings: UpstreamSettings) -> Self {
        let connector = || TimedConnector::new(settings.connect_timeout, settings.allow_link_local);
        shared::tls::install_crypto_provider();
        // One for all shards: clones share its session cache, so a shard's
        // new connection can resume a session another shard began.
        let tls = ClientConfig::builder()
            .with_root_certificates(settings.roots.clone())
            .with_no_client_auth();
        let shards = (0..settings.http2_connections.max(1))
            .map(|_| {
                let https = HttpsConnectorBuilder::new()
                    .with_tls_config(tls.clone())
                    .https_or_http()
                    .enable_all_versions()
                    .wrap_connector(connector());
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(settings.idle_timeout)
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(https)
            })
            .collect();
        Self {
            plain: Http1Pool::new(connector(), settings.idle_timeout),
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
        let sent = async {
            if request.uri().scheme() == Some(&hyper::http::uri::Scheme::HTTP) {
                return Ok(self.plain.send(request).await?);
            }
            let shard = self.next.fetch_add(1, Ordering::Relaxed) % self.shards.len();
            let response = self.shards[shard].request(request).await?;
            Ok(response.map(PooledBody::unpooled))
        };
        match connect_timeout {
            Some(limit) => CONNECT_TIMEOUT.scope(limit, sent).await,
            None => sent.await,
        }
    }
}
