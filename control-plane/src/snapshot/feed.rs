//! The config feed of one control plane: notices new versions (local writes
//! at once, other replicas' through PostgreSQL's NOTIFY or polling), reads
//! each step as one delta, and brings every config stream from the version
//! its data plane has to the newest with as little as that takes.

use super::delta::{self, EncodedDelta};
use super::full::{self, EncodedSnapshot};
use crate::error::Result;
use crate::store::Store;
use shared::crypto::Cipher;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{watch, Mutex, Notify, RwLock};
use tokio_util::sync::CancellationToken;

/// Recent deltas kept for streams to catch up from without the database.
const RECENT_DELTAS: usize = 1024;
/// A cached full snapshot this many versions behind is built again, so a
/// first contact does not catch up through a long tail of deltas.
const FULL_SNAPSHOT_MAX_LAG: i64 = 10_000;

/// Asks the feed to look at the database now, after a local write.
#[derive(Clone, Default)]
pub struct Refresher(Arc<Notify>);

impl Refresher {
    pub fn refresh_now(&self) {
        self.0.notify_one();
    }

    pub(super) async fn notified(&self) {
        self.0.notified().await;
    }
}

/// One step of a stream's catch-up.
#[derive(Clone, Debug)]
pub enum Update {
    Snapshot(Arc<EncodedSnapshot>),
    Delta(Arc<EncodedDelta>),
}

impl Update {
    /// The version a data plane has once it applied this.
    pub fn version(&self) -> i64 {
        match self {
            Update::Snapshot(s) => s.version,
            Update::Delta(d) => d.to,
        }
    }
}

#[derive(Clone)]
pub struct ConfigFeed {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    cipher: Arc<Cipher>,
    refresher: Refresher,
    poll_interval: Duration,
    latest: watch::Sender<i64>,
    /// Contiguous: each delta starts where the one before it ends, the last
    /// ends at `latest`.
    recent: RwLock<VecDeque<Arc<EncodedDelta>>>,
    /// Built on first need and shared; the lock makes concurrent first
    /// contacts wait for one build instead of starting many.
    full: Mutex<Option<Arc<EncodedSnapshot>>>,
}

impl ConfigFeed {
    /// Starts at the database's current version. Every credential is
    /// decrypted once here, so a wrong secret key stops the start with the
    /// provider it cannot open, not the first data plane's stream.
    pub async fn start(store: Store, cipher: Arc<Cipher>, poll_interval: Duration) -> Result<Self> {
        for provider in store.list_providers().await? {
            super::rows::provider(provider, &cipher)?;
        }
        let version = store.config_version().await?;
        metrics::gauge!("switchboard_config_version").set(version as f64);
        let (latest, _) = watch::channel(version);
        Ok(ConfigFeed {
            inner: Arc::new(Inner {
                store,
                cipher,
                refresher: Refresher::default(),
                poll_interval,
                latest,
                recent: RwLock::new(VecDeque::new()),
                full: Mutex::new(None),
            }),
        })
    }

    pub fn refresher(&self) -> Refresher {
        self.inner.refresher.clone()
    }

    /// The newest version this replica has published.
    pub fn latest(&self) -> watch::Receiver<i64> {
        self.inner.latest.subscribe()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.refresher.notified() => {}
                _ = tokio::time::sleep(self.inner.poll_interval) => {}
            }
            if let Err(error) = self.publish().await {
                error.log_if_internal();
                tracing::warn!(%error, "reading a config change failed; retrying at the next poll");
            }
        }
    }

    /// Reads what changed since the last published version, as one delta.
    async fn publish(&self) -> Result<()> {
        let published = *self.inner.latest.borrow();
        if self.inner.store.config_version().await? == published {
            return Ok(());
        }
        let started = Instant::now();
        let Some(delta) = delta::since(&self.inner.store, &self.inner.cipher, published).await?
        else {
            // The change log no longer reaches back to our version (it was
            // pruned while this replica was stalled): start over from the newest.
            let version = self.inner.store.config_version().await?;
            self.inner.recent.write().await.clear();
            self.inner.latest.send_replace(version);
            tracing::warn!(version, "config history pruned past this replica's version; streams catch up from the database");
            return Ok(());
        };
        if delta.to <= published {
            return Ok(());
        }
        let delta = Arc::new(delta);
        {
            let mut recent = self.inner.recent.write().await;
            if recent.len() == RECENT_DELTAS {
                recent.pop_front();
            }
            recent.push_back(delta.clone());
        }
        self.inner.latest.send_replace(delta.to);
        metrics::gauge!("switchboard_config_version").set(delta.to as f64);
        metrics::histogram!("switchboard_config_delta_build_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            from = delta.from,
            to = delta.to,
            changes = delta.changes,
            bytes = delta.bytes.len(),
            "published config delta"
        );
        Ok(())
    }

    /// What brings a data plane from version `from` (0: nothing) to the
    /// newest: the recent deltas after it, else one delta from the change
    /// log, else (first contact, asked for, or older than the log reaches)
    /// a full snapshot and the deltas after that.
    pub async fn catch_up(&self, from: i64, full_snapshot: bool) -> Result<Vec<Update>> {
        let latest = *self.inner.latest.borrow();
        let mut updates = Vec::new();
        let mut at = from;
        if full_snapshot || at <= 0 {
            // Asked for after a refusal: an older cached one would be refused again.
            let snapshot = self.full_snapshot(full_snapshot).await?;
            at = snapshot.version;
            updates.push(Update::Snapshot(snapshot));
        }
        if at == latest {
            return Ok(updates);
        }
        if at < latest {
            if let Some(chain) = self.recent_from(at, latest).await {
                updates.extend(chain.into_iter().map(Update::Delta));
                return Ok(updates);
            }
        }
        match delta::since(&self.inner.store, &self.inner.cipher, at).await? {
            Some(delta) if delta.to > at => updates.push(Update::Delta(Arc::new(delta))),
            Some(_) => {}
            // Older than the change log, or ahead of the database (restored
            // from a backup): only a whole snapshot says where things stand.
            None if updates.is_empty() => {
                updates.push(Update::Snapshot(self.full_snapshot(false).await?));
            }
            None => {}
        }
        Ok(updates)
    }

    async fn recent_from(&self, from: i64, to: i64) -> Option<Vec<Arc<EncodedDelta>>> {
        let recent = self.inner.recent.read().await;
        let start = recent.iter().position(|d| d.from == from)?;
        let chain: Vec<_> = recent.iter().skip(start).cloned().collect();
        (chain.last()?.to == to).then_some(chain)
    }

    /// The cached full snapshot while deltas can follow it (and only if it
    /// is the newest version, when `fresh`); else a new one.
    async fn full_snapshot(&self, fresh: bool) -> Result<Arc<EncodedSnapshot>> {
        let mut cached = self.inner.full.lock().await;
        let history_from = self.inner.store.history_from().await?;
        let latest = *self.inner.latest.borrow();
        let lag = if fresh { 0 } else { FULL_SNAPSHOT_MAX_LAG };
        if let Some(snapshot) = cached
            .as_ref()
            .filter(|s| s.version >= history_from && latest - s.version <= lag)
        {
            return Ok(snapshot.clone());
        }
        let started = Instant::now();
        let snapshot = Arc::new(full::build(&self.inner.store, &self.inner.cipher).await?);
        metrics::histogram!("switchboard_snapshot_build_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            version = snapshot.version,
            keys = snapshot.keys,
            bytes = snapshot.bytes.len(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "built a full config snapshot"
        );
        *cached = Some(snapshot.clone());
        Ok(snapshot)
    }
}

/// Wakes the config feed when another replica commits a config change, and
/// the counter feed when the leader (maybe another replica) has counted
/// spend, through PostgreSQL's LISTEN/NOTIFY (polling stays as the fallback).
pub async fn listen_for_changes(
    url: String,
    config: Refresher,
    counters: Refresher,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            Err(error) = listen(&url, &config, &counters) => {
                tracing::warn!(%error, "LISTEN for config and spend changes failed; polling meanwhile");
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

async fn listen(
    url: &str,
    config: &Refresher,
    counters: &Refresher,
) -> sqlx::Result<std::convert::Infallible> {
    let mut listener = sqlx::postgres::PgListener::connect(url).await?;
    listener
        .listen_all([crate::store::CONFIG_CHANNEL, crate::store::SPEND_CHANNEL])
        .await?;
    tracing::debug!("listening for config and spend changes of other replicas");
    loop {
        let notification = listener.recv().await?;
        match notification.channel() {
            crate::store::SPEND_CHANNEL => counters.refresh_now(),
            _ => config.refresh_now(),
        }
    }
}
