//! Fetches the key sets of JWT issuers that publish them (`jwks_url`), when
//! an issuer is written and then periodically, so data planes get keys in
//! snapshots and never call an identity provider on the request path.

use crate::error::{Error, Result};
use crate::snapshot::Refresher;
use crate::store::{Fence, Store};
use bytes::Bytes;
use http_body_util::Empty;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_JWKS_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct JwksFetcher {
    client: crate::outbound::Outbound<Empty<Bytes>>,
}

impl Default for JwksFetcher {
    fn default() -> Self {
        Self {
            client: crate::outbound::client(),
        }
    }
}

impl JwksFetcher {
    /// The key set at `url`, as fetched, once it holds at least one key that
    /// can verify signatures. Redirects are not followed.
    pub async fn fetch(&self, url: &str) -> std::result::Result<String, String> {
        let uri: hyper::Uri = url.parse().map_err(|_| "not a URL".to_owned())?;
        let request = hyper::Request::get(uri)
            .body(Empty::new())
            .map_err(|_| "not a URL".to_owned())?;
        let body =
            crate::outbound::fetch(&self.client, request, FETCH_TIMEOUT, MAX_JWKS_BYTES).await?;
        let fetched =
            String::from_utf8(body.to_vec()).map_err(|_| "its answer is not UTF-8".to_owned())?;
        let (keys, _) = shared::jwt::keys_from_jwks(&fetched)?;
        if keys.is_empty() {
            return Err("the key set holds no key that can verify signatures".into());
        }
        Ok(fetched)
    }

    /// Fetches every issuer's key set every `interval`; a failure keeps the
    /// keys fetched before and is recorded on the issuer.
    /// The leader's job: every `interval`, fetches every issuer's key set
    /// again and stores it under `fence`.
    pub async fn run(
        self,
        store: Store,
        refresher: Refresher,
        interval: Duration,
        fence: Fence,
        shutdown: CancellationToken,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
            // A slow identity provider must not hold up a shutdown.
            let refreshed = tokio::select! {
                _ = shutdown.cancelled() => return,
                refreshed = self.refresh_all(&store, fence) => refreshed,
            };
            match refreshed {
                Ok(true) => refresher.refresh_now(),
                Ok(false) => {}
                Err(Error::Fenced) => return,
                Err(error) => error.log_if_internal(),
            }
        }
    }

    async fn refresh_all(&self, store: &Store, fence: Fence) -> Result<bool> {
        let mut changed = false;
        for issuer in store.list_jwt_issuers().await? {
            let Some(url) = issuer.jwks_url.as_deref() else {
                continue;
            };
            match self.fetch(url).await {
                Ok(jwks) => {
                    changed |= store
                        .record_jwks(fence, &issuer.name, &jwks, shared::time::now_ms())
                        .await?;
                }
                Err(error) => {
                    metrics::counter!("switchboard_jwks_fetch_failures_total").increment(1);
                    tracing::warn!(issuer = %issuer.name, %error, "JWKS refresh failed; the previous keys stay in use");
                    store.record_jwks_error(&issuer.name, &error).await?;
                }
            }
        }
        Ok(changed)
    }
}
