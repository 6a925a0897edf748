//! How the data plane opens a TCP connection to a provider: names resolved
//! never to link-local or metadata addresses, `TCP_NODELAY`, and a connect
//! timeout (the client's, or a route's tighter one for the request at hand).
//! Both upstream clients (`client.rs`, `pool.rs`) connect through it.

use hyper_util::client::legacy::connect::dns::{GaiResolver, Name};
use hyper_util::client::legacy::connect::HttpConnector;
use std::time::Duration;

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
    pub(super) static CONNECT_TIMEOUT: Duration;
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

impl TimedConnector {
    /// `allow_link_local`: whether providers may resolve to link-local or
    /// cloud metadata addresses.
    pub(super) fn new(connect_timeout: Duration, allow_link_local: bool) -> Self {
        let mut http = HttpConnector::new_with_resolver(GuardedResolver {
            inner: GaiResolver::new(),
            allow_link_local,
        });
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.enforce_http(false);
        TimedConnector(http)
    }
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
