//! Usage leaves the request path through a bounded queue; a shipper sends it
//! to the control plane in batches and spools to disk whatever cannot be sent.

mod shipper;
mod spool;

pub use shipper::Shipper;
pub use spool::Spool;

pub use shared::usage::{Endpoint, TokenUsage, UsageRecord};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// The request path's handle: never blocks while the queue has room.
#[derive(Clone)]
pub struct UsageSink {
    sender: mpsc::Sender<UsageRecord>,
    batch_ready: Arc<Notify>,
    batch_size: usize,
}

/// The shipper's end of the queue.
pub struct UsageQueue {
    pub receiver: mpsc::Receiver<UsageRecord>,
    /// Signalled when a full batch is waiting; otherwise the shipper wakes on
    /// its flush timer, so the request path does not wake it per record.
    pub batch_ready: Arc<Notify>,
}

impl UsageSink {
    pub fn channel(capacity: usize, batch_size: usize) -> (Self, UsageQueue) {
        let (sender, receiver) = mpsc::channel(capacity);
        let batch_ready = Arc::new(Notify::new());
        let sink = Self {
            sender,
            batch_ready: batch_ready.clone(),
            batch_size,
        };
        (
            sink,
            UsageQueue {
                receiver,
                batch_ready,
            },
        )
    }

    /// A full queue means the shipper is behind: the record waits for room
    /// on a task of its own rather than being dropped or stalling the response.
    pub fn record(&self, event: UsageRecord) {
        match self.sender.try_send(event) {
            Ok(()) => {
                let queued = self.sender.max_capacity() - self.sender.capacity();
                if queued.is_multiple_of(self.batch_size) {
                    self.batch_ready.notify_one();
                }
            }
            Err(mpsc::error::TrySendError::Full(event)) => {
                metrics::counter!("switchboard_usage_queue_full_total").increment(1);
                let sender = self.sender.clone();
                tokio::spawn(async move {
                    if sender.send(event).await.is_err() {
                        tracing::error!("usage queue closed; record lost");
                    }
                });
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                metrics::counter!("switchboard_usage_lost_total").increment(1);
                tracing::error!("usage queue closed; record lost");
            }
        }
    }
}

/// A request's usage record, filled in as far as it can be before the
/// upstream answers; `finish` completes it and hands it to the sink.
pub struct UsageDraft {
    pub sink: UsageSink,
    pub started: std::time::Instant,
    pub record: UsageRecord,
}

impl UsageDraft {
    /// A streamed chat request's draft and the queue it lands in, for tests.
    #[cfg(test)]
    pub fn for_test() -> (Self, UsageQueue) {
        let (sink, queue) = UsageSink::channel(4, 1);
        let record = UsageRecord {
            id: shared::ids::UsageRecordId::generate(),
            key_id: Some("k".to_owned().into()),
            jwt: None,
            user_id: None,
            team_id: None,
            model: "m".into(),
            provider: "p".into(),
            upstream_model: "u".into(),
            endpoint: "chat.completions".into(),
            tokens: TokenUsage::default(),
            latency_ms: 0,
            status: 0,
            streamed: true,
            created_at_ms: 0,
            variant: None,
        };
        let draft = UsageDraft {
            sink,
            started: std::time::Instant::now(),
            record,
        };
        (draft, queue)
    }

    pub fn finish(mut self, status: u16, tokens: TokenUsage) {
        self.record.status = status;
        self.record.tokens = tokens;
        self.record.latency_ms =
            i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.sink.record(self.record);
    }
}
