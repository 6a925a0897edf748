//! Counters are not config: what budgets and quotas have used travels to data
//! planes on messages of its own, never moving the config version. Each
//! replica follows the spend table by revision (the leader writes it) and
//! passes on what changed; a new stream gets every count first. A count is
//! read when the leader's job has written one (in this process, or announced
//! by PostgreSQL's NOTIFY from another replica); polling is the fallback.

use super::Refresher;
use crate::error::Result;
use crate::store::{SpendRow, Store};
use shared::proto;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, RwLock};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct CounterFeed {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    refresher: Refresher,
    /// The fallback: a NOTIFY missed while the listener reconnects.
    poll_interval: Duration,
    counts: RwLock<Counts>,
    changes: broadcast::Sender<Arc<Vec<proto::SpendState>>>,
}

#[derive(Default)]
struct Counts {
    revision: i64,
    by_holder: HashMap<String, proto::SpendState>,
}

impl CounterFeed {
    pub async fn start(store: Store, poll_interval: Duration) -> Result<Self> {
        let feed = CounterFeed {
            inner: Arc::new(Inner {
                store,
                refresher: Refresher::default(),
                poll_interval,
                counts: RwLock::new(Counts {
                    revision: -1,
                    by_holder: HashMap::new(),
                }),
                changes: broadcast::channel(64).0,
            }),
        };
        feed.poll().await?;
        Ok(feed)
    }

    /// Wakes the feed to read the spend table now.
    pub fn refresher(&self) -> Refresher {
        self.inner.refresher.clone()
    }

    /// Changed counts, as they are read.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<proto::SpendState>>> {
        self.inner.changes.subscribe()
    }

    /// Every count this replica knows.
    pub async fn all(&self) -> Vec<proto::SpendState> {
        self.inner
            .counts
            .read()
            .await
            .by_holder
            .values()
            .cloned()
            .collect()
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.inner.refresher.notified() => {}
                _ = tokio::time::sleep(self.inner.poll_interval) => {}
            }
            if let Err(error) = self.poll().await {
                error.log_if_internal();
            }
        }
    }

    async fn poll(&self) -> Result<()> {
        let since = self.inner.counts.read().await.revision;
        let (revision, rows) = self.inner.store.spend_since(since).await?;
        if rows.is_empty() {
            return Ok(());
        }
        let states: Vec<proto::SpendState> = rows.into_iter().map(state).collect();
        {
            let mut counts = self.inner.counts.write().await;
            counts.revision = revision;
            for s in &states {
                counts.by_holder.insert(s.holder.clone(), s.clone());
            }
        }
        // No stream listening is not an error.
        let _ = self.inner.changes.send(Arc::new(states));
        Ok(())
    }
}

fn state(row: SpendRow) -> proto::SpendState {
    proto::SpendState {
        holder: row.holder,
        period_start_ms: row.period_start,
        spent_micros: row.spent_micros,
        requests: row.requests,
        tokens: row.tokens,
    }
}
