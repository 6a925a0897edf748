//! Follows the control plane's config stream on a background task: each
//! snapshot is validated, swapped in whole, saved to disk and ACKed (or NACKed
//! with the reason, leaving the previous one serving). Reconnects with
//! jittered exponential backoff; the request path never waits on any of this.

mod disk;

pub use disk::SnapshotFile;

use crate::cluster_client::ClusterClient;
use crate::runtime::{Live, Runtime};
use backon::{BackoffBuilder, ExponentialBuilder};
use prost::Message;
use shared::proto;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Keeps the control plane's `last_seen` for this data plane fresh.
const HEARTBEAT: Duration = Duration::from_secs(15);

pub struct ConfigSync {
    pub client: ClusterClient,
    pub live: Live,
    pub file: SnapshotFile,
    pub dataplane_id: String,
    pub hostname: String,
}

fn backoff() -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(10))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
}

impl ConfigSync {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut delays = backoff();
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.follow_stream() => outcome,
            };
            match outcome {
                Ok(received_any) => {
                    tracing::warn!("config stream ended; reconnecting");
                    if received_any {
                        delays = backoff();
                    }
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), error = %status.message(), "config stream failed; serving the last snapshot");
                }
            }
            let delay = delays.next().unwrap_or(Duration::from_secs(10));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn applied_version(&self) -> i64 {
        self.live.load().as_ref().map_or(0, |r| r.version)
    }

    /// Returns when the stream ends; `true` if it delivered at least one message.
    async fn follow_stream(&mut self) -> Result<bool, tonic::Status> {
        let request = proto::WatchRequest {
            dataplane_id: self.dataplane_id.clone(),
            hostname: self.hostname.clone(),
            applied_version: self.applied_version(),
            software_version: shared::SOFTWARE_VERSION.to_owned(),
        };
        let mut stream = self.client.watch_config(request).await?.into_inner();
        tracing::info!(
            applied_version = self.applied_version(),
            "config stream connected"
        );
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let mut received_any = false;
        loop {
            tokio::select! {
                message = stream.message() => match message? {
                    Some(snapshot) => {
                        received_any = true;
                        self.apply(snapshot).await;
                    }
                    None => return Ok(received_any),
                },
                _ = heartbeat.tick() => {
                    let version = self.applied_version();
                    self.ack(version, String::new()).await;
                }
            }
        }
    }

    async fn apply(&mut self, update: proto::ConfigUpdate) {
        let version = update.version;
        let started = std::time::Instant::now();
        let (live, file) = (self.live.clone(), self.file.clone());
        // Decoding, building the lookup tables, freeing the previous ones and
        // sealing the file are CPU work for large key sets: all off the reactor.
        let applied = tokio::task::spawn_blocking(move || {
            let snapshot = proto::Snapshot::decode(update.snapshot.clone())
                .map_err(|e| format!("snapshot does not decode: {e}"))?;
            let previous = live.load_full();
            let runtime =
                Runtime::build(snapshot, previous.as_deref()).map_err(|e| e.to_string())?;
            drop(previous);
            drop(install(&live, runtime));
            let elapsed = started.elapsed();
            if let Err(error) = file.save(&update.snapshot) {
                tracing::error!(%error, "snapshot could not be saved to the state dir");
            }
            Ok::<_, String>(elapsed)
        })
        .await
        .unwrap_or_else(|panicked| Err(format!("snapshot build panicked: {panicked}")));
        match applied {
            Ok(elapsed) => {
                metrics::histogram!("switchboard_config_apply_seconds")
                    .record(elapsed.as_secs_f64());
                tracing::info!(
                    version,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "snapshot applied"
                );
                self.ack(version, String::new()).await;
            }
            Err(invalid) => {
                metrics::counter!("switchboard_config_rejected_total").increment(1);
                tracing::error!(version, reason = %invalid, "snapshot rejected; the previous one keeps serving");
                self.ack(version, invalid).await;
            }
        }
    }

    async fn ack(&mut self, version: i64, error: String) {
        let ack = proto::AckRequest {
            dataplane_id: self.dataplane_id.clone(),
            version,
            error,
        };
        if let Err(status) = self.client.ack_config(ack).await {
            tracing::warn!(code = ?status.code(), "ACK not delivered");
        }
    }
}

/// Swaps `runtime` in; answers the one it replaced, for the caller to free
/// where freeing a large one costs the request path nothing.
pub fn install(live: &Live, runtime: Runtime) -> Option<Arc<Runtime>> {
    metrics::gauge!("switchboard_config_version").set(runtime.version as f64);
    metrics::gauge!("switchboard_config_keys").set(runtime.key_count() as f64);
    live.swap(Some(Arc::new(runtime)))
}
