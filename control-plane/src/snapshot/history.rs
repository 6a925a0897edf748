//! The leader keeps the config change log for `config_history_hours` (a
//! cluster setting): data planes further behind get a full snapshot.

use crate::error::{Error, Result};
use crate::store::{Fence, Store};
use shared::time::now_ms;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const EVERY: Duration = Duration::from_secs(600);

pub async fn prune(store: Store, fence: Fence, stop: CancellationToken) {
    loop {
        match prune_once(&store, fence, now_ms()).await {
            Ok(0) => {}
            Ok(pruned) => tracing::info!(pruned, "config change log pruned"),
            Err(Error::Fenced) => return,
            Err(error) => error.log_if_internal(),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}

/// Drops the changes older than the history kept; answers how many.
pub async fn prune_once(store: &Store, fence: Fence, now_ms: i64) -> Result<u64> {
    let kept = store.settings().await?.config_history();
    let cutoff = now_ms - i64::try_from(kept.as_millis()).unwrap_or(i64::MAX);
    match store.config_version_before(cutoff).await? {
        Some(version) => store.prune_config_history(fence, version).await,
        None => Ok(0),
    }
}
