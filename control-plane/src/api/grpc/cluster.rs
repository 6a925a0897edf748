//! ClusterService: the config streams data planes watch, their ACK/NACKs,
//! and usage ingestion.

use crate::error::Error;
use crate::service::Admin;
use crate::snapshot::{ConfigFeed, CounterFeed, Update};
use crate::store::{Store, UsageReport};
use rand::Rng;
use shared::proto as pb;
use shared::proto::cluster_service_server::ClusterService;
use shared::proto::config_update::Update as Wire;
use shared::usage::{RefusalCount, UsageRecord};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

/// Larger batches are refused so one call cannot hold a transaction for long.
const MAX_BATCH: usize = 10_000;
/// Messages queued per stream before the stream waits for its data plane.
const STREAM_QUEUE: usize = 8;

#[derive(Clone)]
pub struct ClusterGrpc {
    pub admin: Admin,
    pub config: ConfigFeed,
    pub counters: CounterFeed,
    /// This replica's id, recorded as the control plane of its streams.
    pub replica: String,
    /// Streams end after about this long (jittered), so that data planes
    /// reconnecting through a load balancer spread over the replicas.
    pub stream_lifetime: Duration,
    pub shutdown: CancellationToken,
}

/// Marks the data plane's stream closed when the stream ends.
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
        metrics::gauge!("switchboard_dataplanes_connected").decrement(1.0);
        tracing::info!(dataplane = %self.dataplane_id, "config stream closed");
    }
}

type UpdateStream = ReceiverStream<Result<pb::ConfigUpdate, Status>>;

fn required(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(Error::invalid(format!("{field}: required")).into());
    }
    Ok(())
}

fn wire(update: &Update) -> pb::ConfigUpdate {
    let (version, update) = match update {
        Update::Snapshot(s) => (s.version, Wire::Snapshot(s.bytes.clone())),
        Update::Delta(d) => (d.to, Wire::Delta(d.bytes.clone())),
    };
    pb::ConfigUpdate {
        version,
        update: Some(update),
    }
}

fn counters(version: i64, complete: bool, spend: Vec<pb::SpendState>) -> pb::ConfigUpdate {
    pb::ConfigUpdate {
        version,
        update: Some(Wire::Counters(pb::Counters { complete, spend })),
    }
}

impl ClusterGrpc {
    /// One data plane's stream, until it goes away, the stream's lifetime
    /// ends, or this control plane stops.
    async fn follow(
        self,
        watch: pb::WatchRequest,
        out: mpsc::Sender<Result<pb::ConfigUpdate, Status>>,
        _guard: ConnectionGuard,
    ) {
        let mut versions = self.config.latest();
        let mut counts = self.counters.subscribe();
        let jitter = rand::thread_rng().gen_range(0.9..1.1);
        let lifetime = tokio::time::sleep(self.stream_lifetime.mul_f64(jitter));
        tokio::pin!(lifetime);
        let mut at = watch.applied_version;
        let mut full = watch.full_snapshot;
        let mut counted = false;
        loop {
            versions.borrow_and_update();
            match self.config.catch_up(at, full).await {
                Ok(updates) => {
                    for update in &updates {
                        if out.send(Ok(wire(update))).await.is_err() {
                            return;
                        }
                        at = update.version();
                        metrics::counter!("switchboard_config_updates_sent_total", "kind" => match update {
                            Update::Snapshot(_) => "snapshot",
                            Update::Delta(_) => "delta",
                        })
                        .increment(1);
                    }
                }
                Err(error) => {
                    error.log_if_internal();
                    let _ = out
                        .send(Err(Status::unavailable(
                            "the configuration could not be read; retry",
                        )))
                        .await;
                    return;
                }
            }
            full = false;
            if !counted {
                // After the config: counts name keys the data plane now has.
                let all = self.counters.all().await;
                if out.send(Ok(counters(at, true, all))).await.is_err() {
                    return;
                }
                counted = true;
            }
            loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return,
                    _ = &mut lifetime => {
                        tracing::debug!(dataplane = %watch.dataplane_id, "config stream reached its lifetime; the data plane reconnects");
                        return;
                    }
                    _ = out.closed() => return,
                    changed = versions.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                    received = counts.recv() => {
                        let message = match received {
                            Ok(spend) => counters(at, false, spend.to_vec()),
                            // Too slow to keep up with every change: all of them again.
                            Err(broadcast::error::RecvError::Lagged(_)) => counters(at, true, self.counters.all().await),
                            Err(broadcast::error::RecvError::Closed) => return,
                        };
                        if out.send(Ok(message)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterGrpc {
    type WatchConfigStream = UpdateStream;

    async fn watch_config(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<UpdateStream>, Status> {
        let identity = certified_identity(&request);
        let mut watch = request.into_inner();
        if let Some(identity) = identity {
            watch.dataplane_id = certified_id(&identity, &watch.dataplane_id);
        }
        required("dataplane_id", &watch.dataplane_id)?;
        let store = self.admin.store().clone();
        let connected_at = store
            .dataplane_connected(
                &watch.dataplane_id,
                &watch.hostname,
                &watch.software_version,
                watch.applied_version,
                &self.replica,
            )
            .await?;
        metrics::gauge!("switchboard_dataplanes_connected").increment(1.0);
        tracing::info!(
            dataplane = %watch.dataplane_id,
            applied_version = watch.applied_version,
            full_snapshot = watch.full_snapshot,
            software_version = %watch.software_version,
            "config stream opened"
        );
        let guard = ConnectionGuard {
            store,
            dataplane_id: watch.dataplane_id.clone(),
            connected_at,
        };
        let (out, stream) = mpsc::channel(STREAM_QUEUE);
        tokio::spawn(self.clone().follow(watch, out, guard));
        Ok(Response::new(ReceiverStream::new(stream)))
    }

    async fn ack_config(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        let identity = certified_identity(&request);
        let mut ack = request.into_inner();
        if let Some(identity) = identity {
            ack.dataplane_id = certified_id(&identity, &ack.dataplane_id);
        }
        required("dataplane_id", &ack.dataplane_id)?;
        if ack.error.is_empty() {
            tracing::debug!(dataplane = %ack.dataplane_id, version = ack.version, "config applied");
        } else {
            metrics::counter!("switchboard_config_nacks_total").increment(1);
            tracing::warn!(dataplane = %ack.dataplane_id, version = ack.version, error = %ack.error, "config rejected");
        }
        self.admin
            .store()
            .dataplane_acked(&ack.dataplane_id, ack.version, &ack.error)
            .await?;
        Ok(Response::new(pb::AckResponse {}))
    }

    async fn report_health(
        &self,
        request: Request<pb::HealthReport>,
    ) -> Result<Response<pb::HealthAck>, Status> {
        let identity = certified_identity(&request);
        let mut report = request.into_inner();
        if let Some(identity) = identity {
            report.dataplane_id = certified_id(&identity, &report.dataplane_id);
        }
        required("dataplane_id", &report.dataplane_id)?;
        const MAX_REPORTED: usize = 10_000;
        if report.open_breakers.len() > MAX_REPORTED {
            return Err(Error::invalid(format!("open_breakers: at most {MAX_REPORTED}")).into());
        }
        let mut open: Vec<crate::model::OpenBreaker> = report
            .open_breakers
            .into_iter()
            .map(|b| crate::model::OpenBreaker {
                provider: b.provider,
                model: b.model,
            })
            .collect();
        open.sort();
        open.dedup();
        let json = serde_json::to_string(&open).map_err(|e| Error::Internal(e.to_string()))?;
        self.admin
            .store()
            .dataplane_health(&report.dataplane_id, &json)
            .await?;
        Ok(Response::new(pb::HealthAck {}))
    }

    async fn report_usage(
        &self,
        request: Request<pb::UsageBatch>,
    ) -> Result<Response<pb::UsageAck>, Status> {
        let identity = certified_identity(&request);
        let mut batch = request.into_inner();
        if let Some(identity) = identity {
            batch.dataplane_id = certified_id(&identity, &batch.dataplane_id);
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
        if batch.refusals.len() > MAX_BATCH {
            return Err(Error::invalid(format!("refusals: at most {MAX_BATCH} per batch")).into());
        }
        let refusals = batch
            .refusals
            .into_iter()
            .map(|c| RefusalCount::try_from(c).map_err(|e| Error::invalid(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        self.admin.create_token_users(&records).await?;
        let sent = records.len() as u64;
        let accepted = self
            .admin
            .store()
            .ingest(UsageReport {
                dataplane_id: batch.dataplane_id,
                records,
                refusals,
            })
            .await?;
        let duplicates = sent - accepted;
        metrics::counter!("switchboard_usage_records_ingested_total").increment(accepted);
        metrics::counter!("switchboard_usage_records_duplicate_total").increment(duplicates);
        Ok(Response::new(pb::UsageAck {
            accepted: u32::try_from(accepted).unwrap_or(u32::MAX),
            duplicates: u32::try_from(duplicates).unwrap_or(u32::MAX),
        }))
    }
}

/// Under mTLS, a data plane is who its certificate says, not what it claims:
/// the certificate's name, then the claimed id, which only tells apart
/// replicas sharing one certificate (a Deployment's pods with one Secret).
fn certified_id(certificate: &str, claimed: &str) -> String {
    if claimed.is_empty() {
        certificate.to_owned()
    } else {
        format!("{certificate}/{claimed}")
    }
}

fn certified_identity<T>(request: &Request<T>) -> Option<String> {
    request
        .extensions()
        .get::<super::DataPlaneIdentity>()
        .map(|identity| identity.0.clone())
}
