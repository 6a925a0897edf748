//! Follows the control plane's config stream on a background task. A full
//! snapshot or a delta is validated and applied off the reactor into a new
//! runtime, swapped in whole and ACKed; a bad one is NACKed and the previous
//! version keeps serving (the next stream then asks for a full snapshot).
//! Counters update the limiter's floors. Reconnects with jittered
//! exponential backoff, trying the next control-plane address after a
//! failure; the request path never waits on any of this.

mod disk;

pub use disk::{persist, SnapshotFile};

use crate::cluster_client::ControlPlanes;
use crate::limits::Limiter;
use crate::runtime::{InvalidConfig, Live, Runtime};
use backon::{BackoffBuilder, ExponentialBuilder};
use bytes::Bytes;
use prost::Message;
use shared::proto;
use shared::proto::config_update::Update;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Keeps the control plane's `last_seen` for this data plane fresh.
const HEARTBEAT: Duration = Duration::from_secs(15);

pub struct ConfigSync {
    pub control_planes: ControlPlanes,
    pub live: Live,
    pub limiter: Arc<Limiter>,
    /// Told when there is something new to save to disk.
    pub changed: Arc<Notify>,
    pub dataplane_id: String,
    pub hostname: String,
}

/// Why a stream ended without an error.
enum Ended {
    /// The control plane closed it (its lifetime, or it is stopping).
    Closed { received_any: bool },
    /// A snapshot or delta was refused: ask for a full snapshot next.
    Resync,
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
        let mut full_snapshot = false;
        loop {
            let outcome = tokio::select! {
                _ = shutdown.cancelled() => return,
                outcome = self.follow_stream(full_snapshot) => outcome,
            };
            full_snapshot = false;
            let delay = match outcome {
                Ok(Ended::Closed { received_any }) => {
                    tracing::info!(control_plane = %self.control_planes.address(), "config stream closed by the control plane; reconnecting");
                    self.control_planes.reconnect();
                    if received_any {
                        delays = backoff();
                        Duration::ZERO
                    } else {
                        delays.next().unwrap_or(Duration::from_secs(10))
                    }
                }
                Ok(Ended::Resync) => {
                    full_snapshot = true;
                    delays.next().unwrap_or(Duration::from_secs(10))
                }
                Err(status) => {
                    let address = self.control_planes.address();
                    if self.live.load().is_none() {
                        tracing::info!(control_plane = %address, error = %status.message(), "waiting for the control plane");
                    } else {
                        tracing::warn!(control_plane = %address, code = ?status.code(), error = %status.message(), "config stream failed; serving the config applied last");
                    }
                    self.control_planes.next();
                    delays.next().unwrap_or(Duration::from_secs(10))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    fn applied_version(&self) -> i64 {
        self.live.load().as_ref().map_or(0, |r| r.version)
    }

    async fn follow_stream(&mut self, full_snapshot: bool) -> Result<Ended, tonic::Status> {
        let request = proto::WatchRequest {
            dataplane_id: self.dataplane_id.clone(),
            hostname: self.hostname.clone(),
            applied_version: self.applied_version(),
            software_version: shared::SOFTWARE_VERSION.to_owned(),
            full_snapshot,
        };
        let mut client = self.control_planes.client();
        let mut stream = client.watch_config(request).await?.into_inner();
        tracing::info!(
            control_plane = %self.control_planes.address(),
            applied_version = self.applied_version(),
            full_snapshot,
            "config stream connected"
        );
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.tick().await;
        let mut received_any = false;
        loop {
            tokio::select! {
                message = stream.message() => match message? {
                    Some(update) => {
                        received_any = true;
                        if !self.receive(update).await {
                            return Ok(Ended::Resync);
                        }
                    }
                    None => return Ok(Ended::Closed { received_any }),
                },
                _ = heartbeat.tick() => {
                    let version = self.applied_version();
                    self.ack(version, String::new()).await;
                }
            }
        }
    }

    /// `false` when the stream must start over from a full snapshot.
    async fn receive(&mut self, update: proto::ConfigUpdate) -> bool {
        let version = update.version;
        match update.update {
            Some(Update::Counters(counters)) => {
                metrics::counter!("switchboard_config_received_bytes_total", "kind" => "counters")
                    .increment(counters.encoded_len() as u64);
                self.limiter.counted.apply(counters);
                self.changed.notify_one();
                true
            }
            Some(Update::Snapshot(bytes)) => self.apply(version, Received::Snapshot(bytes)).await,
            Some(Update::Delta(bytes)) => self.apply(version, Received::Delta(bytes)).await,
            None => true,
        }
    }

    async fn apply(&mut self, version: i64, received: Received) -> bool {
        let started = Instant::now();
        let live = self.live.clone();
        let kind = received.kind();
        metrics::counter!("switchboard_config_received_bytes_total", "kind" => kind)
            .increment(received.len() as u64);
        // Decoding, building the tables, freeing the replaced ones: CPU work
        // for large key sets, all off the reactor.
        let applied = tokio::task::spawn_blocking(move || {
            let previous = live.load_full();
            let runtime = received.into_runtime(previous.as_deref())?;
            drop(previous);
            drop(install(&live, runtime));
            Ok::<_, InvalidConfig>(())
        })
        .await
        .unwrap_or_else(|panicked| Err(InvalidConfig::Panicked(panicked.to_string())));
        match applied {
            Ok(()) => {
                let elapsed = started.elapsed();
                metrics::histogram!("switchboard_config_apply_seconds", "kind" => kind)
                    .record(elapsed.as_secs_f64());
                tracing::info!(
                    version,
                    kind,
                    elapsed_ms = elapsed.as_millis() as u64,
                    "config applied"
                );
                self.changed.notify_one();
                self.ack(version, String::new()).await;
                true
            }
            Err(invalid) => {
                metrics::counter!("switchboard_config_rejected_total", "kind" => kind).increment(1);
                tracing::error!(version, kind, reason = %invalid, "config rejected; the version applied before keeps serving");
                self.ack(version, invalid.to_string()).await;
                false
            }
        }
    }

    async fn ack(&mut self, version: i64, error: String) {
        let ack = proto::AckRequest {
            dataplane_id: self.dataplane_id.clone(),
            version,
            error,
        };
        if let Err(status) = self.control_planes.client().ack_config(ack).await {
            tracing::warn!(code = ?status.code(), "ACK not delivered");
        }
    }
}

enum Received {
    Snapshot(Bytes),
    Delta(Bytes),
}

impl Received {
    fn len(&self) -> usize {
        match self {
            Received::Snapshot(bytes) | Received::Delta(bytes) => bytes.len(),
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Received::Snapshot(_) => "snapshot",
            Received::Delta(_) => "delta",
        }
    }

    fn into_runtime(self, previous: Option<&Runtime>) -> Result<Runtime, InvalidConfig> {
        let invalid = |what: &'static str, e: prost::DecodeError| InvalidConfig::Undecodable {
            what,
            reason: e.to_string(),
        };
        match self {
            Received::Snapshot(bytes) => {
                let snapshot =
                    proto::Snapshot::decode(bytes).map_err(|e| invalid("snapshot", e))?;
                Runtime::build(snapshot, previous)
            }
            Received::Delta(bytes) => {
                let delta = proto::ConfigDelta::decode(bytes).map_err(|e| invalid("delta", e))?;
                match previous {
                    Some(previous) => previous.apply(delta),
                    None => Err(InvalidConfig::OutOfOrder {
                        from: delta.from_version,
                        applied: 0,
                    }),
                }
            }
        }
    }
}

/// Swaps `runtime` in; answers the one it replaced, for the caller to free
/// where freeing a large one costs the request path nothing.
pub fn install(live: &Live, runtime: Runtime) -> Option<Arc<Runtime>> {
    metrics::gauge!("switchboard_config_version").set(runtime.version as f64);
    metrics::gauge!("switchboard_config_keys").set(runtime.key_count() as f64);
    metrics::gauge!("switchboard_config_applied_timestamp_seconds")
        .set(shared::time::now_ms() as f64 / 1000.0);
    live.swap(Some(Arc::new(runtime)))
}
