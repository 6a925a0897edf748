//! Usage leaves the request path through a bounded queue; a shipper sends it
//! to the control plane in batches and spools to disk whatever cannot be sent.

mod shipper;
mod spool;

pub use shipper::Shipper;
pub use spool::Spool;

use shared::ids::{KeyId, TeamId, UsageRecordId, UserId};
use tokio::sync::mpsc;

/// Token counts as the provider reported them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
pub struct TokenUsage {
    #[serde(default)]
    pub prompt_tokens: i64,
    #[serde(default)]
    pub completion_tokens: i64,
    #[serde(default)]
    pub total_tokens: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Embeddings,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "chat.completions",
            Endpoint::Embeddings => "embeddings",
        }
    }
}

/// One request's usage.
#[derive(Clone, Debug)]
pub struct UsageEvent {
    pub id: UsageRecordId,
    pub key_id: KeyId,
    pub user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    pub endpoint: Endpoint,
    pub tokens: TokenUsage,
    pub latency_ms: i64,
    pub status: u16,
    pub streamed: bool,
    pub created_at_ms: i64,
}

/// The request path's handle: never blocks while the queue has room.
#[derive(Clone)]
pub struct UsageSink {
    sender: mpsc::Sender<UsageEvent>,
}

impl UsageSink {
    pub fn channel(capacity: usize) -> (Self, mpsc::Receiver<UsageEvent>) {
        let (sender, receiver) = mpsc::channel(capacity);
        (Self { sender }, receiver)
    }

    /// A full queue means the shipper is behind: the record waits for room
    /// on a task of its own rather than being dropped or stalling the response.
    pub fn record(&self, event: UsageEvent) {
        match self.sender.try_send(event) {
            Ok(()) => {}
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
    pub event: UsageEvent,
}

impl UsageDraft {
    pub fn finish(mut self, status: u16, tokens: TokenUsage) {
        self.event.status = status;
        self.event.tokens = tokens;
        self.event.latency_ms =
            i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.sink.record(self.event);
    }
}
