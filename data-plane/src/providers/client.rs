//! The pooled HTTP client every adapter sends through: HTTP/1.1 keep-alive
//! for plain `http://` upstreams (our own pool, `pool.rs`), HTTP/2 (by ALPN)
//! or HTTP/1.1 over TLS (hyper-util's pooled client).
//!
//! hyper keeps one HTTP/2 connection per host and queues requests once the
//! server's concurrent-stream limit is reached, so the TLS client is
//! sharded: requests rotate over several independent pools, each with its
//! own connection, and the stream limit is multiplied by the shard count.

use super::pool::{Http1Pool, PoolError, PooledBody};
use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

pub type UpstreamRequest = hyper::Request<Full<Bytes>>;
pub type UpstreamResponse = hyper::Response<PooledBody>;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error(transparent)]
    Plain(#[from] PoolError),
    #[error(transparent)]
    Tls(#[from] hyper_util::client::legacy::Error),
}

type Pool = Client<HttpsConnector<TimedConnector>, Full<Bytes>>;

/// DNS that will not hand out link-local or cloud metadata addresses, so a
/// provider's name cannot lead to them (the control plane refuses such
/// addresses written in a base URL).
#[derive(Clone)]
pub(super) struct GuardedResolver {
    inner: GaiResolver,
    allow_link_local: bool,
}

impl tower::Service<Name> for GuardedResolver {
    type Response = std::vec::IntoIter<std::net::SocketAddr>;
    type Error = std::io::Error;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, std::io::Error>> + Send>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), std::io::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let allow = self.allow_link_local;
        let resolving = self.inner.call(name);
        Box::pin(async move {
            let addresses: Vec<std::net::SocketAddr> = resolving
                .await?
                .filter(|a| allow || !shared::net::is_link_local_or_metadata(a.ip()))
                .collect();
            if addresses.is_empty() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    "the provider's name resolves only to link-local or metadata addresses",
                ));
            }
            Ok(addresses.into_iter())
        })
    }
}

tokio::task_local! {
    /// A route's connect timeout, for the connection this request may open.
    static CONNECT_TIMEOUT: Duration;
}

/// The TCP connector, bounded by the calling request's connect timeout when
/// it has one. hyper starts a new connection inside the request's own task,
/// so the request's task-local value is in scope when `call` runs.
#[derive(Clone)]
pub(super) struct TimedConnector(HttpConnector<GuardedResolver>);

pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower::Service<hyper::Uri> for TimedConnector {
    type Response = <HttpConnector<GuardedResolver> as tower::Service<hyper::Uri>>::Response;
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
    plain: Http1Pool,
    shards: Arc<[Pool]>,
    next: Arc<AtomicUsize>,
}

impl UpstreamClient {
    /// `allow_link_local`: whether providers may resolve to link-local or
    /// cloud metadata addresses.
    pub fn new(connect_timeout: Duration, shards: usize, allow_link_local: bool) -> Self {
        let connector = || {
            let mut http = HttpConnector::new_with_resolver(GuardedResolver {
                inner: GaiResolver::new(),
                allow_link_local,
            });
            http.set_nodelay(true);
            http.set_connect_timeout(Some(connect_timeout));
            http.enforce_http(false);
            TimedConnector(http)
        };
        let shards = (0..shards.max(1))
            .map(|_| {
                let https = HttpsConnectorBuilder::new()
                    .with_webpki_roots()
                    .https_or_http()
                    .enable_all_versions()
                    .wrap_connector(connector());
                Client::builder(TokioExecutor::new())
                    .pool_idle_timeout(Duration::from_secs(90))
                    .pool_timer(TokioTimer::new())
                    .timer(TokioTimer::new())
                    .build(https)
            })
            .collect();
        Self {
            plain: Http1Pool::new(connector()),
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

#[cfg(test)]
pub(super) fn test_connector() -> TimedConnector {
    let mut http = HttpConnector::new_with_resolver(GuardedResolver {
        inner: GaiResolver::new(),
        allow_link_local: false,
    });
    http.enforce_http(false);
    TimedConnector(http)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;
    use tower::ServiceExt;

    #[tokio::test]
    async fn names_never_resolve_to_metadata_addresses() {
        let resolver = GuardedResolver {
            inner: GaiResolver::new(),
            allow_link_local: false,
        };
        let resolve = |host: &str| {
            let name = Name::from_str(host).expect("name");
            resolver.clone().oneshot(name)
        };
        assert!(resolve("169.254.169.254").await.is_err());
        assert!(resolve("127.0.0.1").await.is_ok());
        let allowed = GuardedResolver {
            inner: GaiResolver::new(),
            allow_link_local: true,
        };
        let name = Name::from_str("169.254.169.254").expect("name");
        assert!(allowed.oneshot(name).await.is_ok());
    }
}
