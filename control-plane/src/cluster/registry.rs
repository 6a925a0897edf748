//! Each replica keeps its row in the database fresh, so any replica can list
//! them all (`GET /api/v1/cluster`).

use crate::store::Store;
use shared::time::now_ms;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A replica silent for longer is no longer listed.
pub const LIVENESS_MS: i64 = 15_000;

/// This replica, as the others see it.
#[derive(Clone, Debug)]
pub struct Replica {
    pub id: String,
    /// Where data planes and admins reach its gRPC listener.
    pub address: String,
    pub started_at: i64,
}

pub async fn run(store: Store, replica: Replica, shutdown: CancellationToken) {
    loop {
        if let Err(error) = store
            .control_plane_seen(&replica.id, &replica.address, replica.started_at)
            .await
        {
            error.log_if_internal();
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
    }
    if let Err(error) = store.control_plane_gone(&replica.id).await {
        error.log_if_internal();
    }
}

pub fn liveness_cutoff() -> i64 {
    now_ms() - LIVENESS_MS
}
