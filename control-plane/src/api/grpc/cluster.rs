//! ClusterService: the config stream data planes watch, their ACK/NACKs, and usage ingestion.

use crate::error::Error;
use crate::service::Admin;
use crate::snapshot::SharedSnapshot;
use crate::store::Store;
use futures_util::Stream;
use shared::proto as pb;
use shared::proto::cluster_service_server::ClusterService;
use shared::usage::UsageRecord;
use std::pin::Pin;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Larger batches are refused so one call cannot hold a transaction for long.
const MAX_BATCH: usize = 10_000;

pub struct ClusterGrpc {
    admin: Admin,
    snapshots: watch::Receiver<SharedSnapshot>,
    shutdown: CancellationToken,
}

impl ClusterGrpc {
    pub fn new(
        admin: Admin,
        snapshots: watch::Receiver<SharedSnapshot>,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            admin,
            snapshots,
            shutdown,
        }
    }
}

/// Marks the data plane's stream closed when the stream is dropped.
struct ConnectionGuard {
    store: Store,
    dataplane_id: String,
    connected_at: i64,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let (store, id, connected_at) = (
            self.store.clone(),
            self.dataplane_id.clone(),
            self.connected_at,
        );
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.dataplane_disconnected(&id, connected_at).await {
                    error.log_if_internal();
                }
            });
        }
        tracing::info!(dataplane = %self.dataplane_id, "config stream closed");
    }
}

struct WatchState {
    snapshots: watch::Receiver<SharedSnapshot>,
    last_sent: i64,
    shutdown: CancellationToken,
    _guard: ConnectionGuard,
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<pb::ConfigUpdate, Status>> + Send>>;

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{field}: required")).into());
    }
    Ok(())
}

#[tonic::async_trait]
impl ClusterService for ClusterGrpc {
    type WatchConfigStream = SnapshotStream;

    async fn watch_config(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<SnapshotStream>, Status> {
        let identity = certified_identity(&request);
        let mut watch = request.into_inner();
        if let Some(identity) = identity {
            watch.dataplane_id = identity;
        }
        required("dataplane_id", &watch.dataplane_id)?;
        let store = self.admin.store().clone();
        let connected_at = store
            .dataplane_connected(
                &watch.dataplane_id,
                &watch.hostname,
                &watch.software_version,
                watch.applied_version,
            )
            .await?;
        tracing::info!(
            dataplane = %watch.dataplane_id,
            applied_version = watch.applied_version,
            software_version = %watch.software_version,
            "config stream opened"
        );
        let state = WatchState {
            snapshots: self.snapshots.clone(),
            // A data plane that already has the current version is not sent it again.
            last_sent: watch.applied_version,
            shutdown: self.shutdown.clone(),
            _guard: ConnectionGuard {
                store,
                dataplane_id: watch.dataplane_id,
                connected_at,
            },
        };
        let stream = futures_util::stream::unfold(state, |mut state| async move {
            loop {
                let latest = state.snapshots.borrow_and_update().clone();
                if let Some(snapshot) = latest.filter(|s| s.version != state.last_sent) {
                    state.last_sent = snapshot.version;
                    return Some((Ok(pb::ConfigUpdate::clone(&snapshot)), state));
                }
                tokio::select! {
                    changed = state.snapshots.changed() => changed.ok()?,
                    _ = state.shutdown.cancelled() => return None,
                }
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn ack_config(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let identity = certified_identity(&request);
        let mut ack = request.into_inner();
        if let Some(identity) = identity {
            ack.dataplane_id = identity;
        }
        required("dataplane_id", &ack.dataplane_id)?;
        if ack.error.is_empty() {
            tracing::debug!(dataplane = %ack.dataplane_id, version = ack.version, "snapshot applied");
        } else {
            tracing::warn!(dataplane = %ack.dataplane_id, version = ack.version, error = %ack.error, "snapshot rejected");
        }
        self.admin
            .store()
            .dataplane_acked(&ack.dataplane_id, ack.version, &ack.error)
            .await?;
        Ok(Response::new(pb::AckResponse {}))
    }

    async fn report_usage(
        &self,
        request: Request<pb::UsageBatch>,
    ) -> Result<Response<pb::UsageAck>, Status> {
        let identity = certified_identity(&request);
        let mut batch = request.into_inner();
        if let Some(identity) = identity {
            batch.dataplane_id = identity;
        }
        required("dataplane_id", &batch.dataplane_id)?;
        if batch.records.len() > MAX_BATCH {
            return Err(Error::invalid(format!("records: at most {MAX_BATCH} per batch")).into());
        }
        let records = batch
            .records
            .into_iter()
            .map(|r| UsageRecord::try_from(r).map_err(|e| Error::invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        self.admin.create_token_users(&records).await?;
        let accepted = self
            .admin
            .store()
            .insert_usage(&batch.dataplane_id, &records)
            .await?;
        let duplicates = records.len() as u64 - accepted;
        metrics::counter!("switchboard_usage_records_ingested_total").increment(accepted);
        metrics::counter!("switchboard_usage_records_duplicate_total").increment(duplicates);
        Ok(Response::new(pb::UsageAck {
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
            duplicates: u32::try_from(duplicates).unwrap_or(u32::MAX),
        }))
    }
}

/// Under mTLS, a data plane is who its certificate says, not what it claims.
fn certified_identity<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<super::DataPlaneIdentity>()
        .map(|identity| identity.0.clone())
}
