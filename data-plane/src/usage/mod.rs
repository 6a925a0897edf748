//! Step 6 of the request path: every admitted request's one usage record.
//! The draft (with the limits permit) finishes itself on drop, so whatever
//! ends a request records it; records leave through a bounded queue, are
//! journaled to the spool within 50 ms, and a shipper sends them to the
//! control plane in batches.

mod refusals;
mod shipper;
mod spool;

pub use refusals::{Refusals, Refused};
pub use shipper::Shipper;
pub use spool::Spool;

use crate::limits::Permit;
use shared::money::{Micros, Prices};
pub use shared::usage::{Endpoint, TokenUsage, UsageRecord};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};

/// The request path's handle: never blocks while the queue has room.
#[derive(Clone)]
pub struct UsageSink {
    sender: mpsc::Sender<UsageRecord>,
    batch_ready: Arc<Notify>,
    batch_size: usize,
    refusals: Arc<Refusals>,
}

/// The shipper's end of the queue.
pub struct UsageQueue {
    pub receiver: mpsc::Receiver<UsageRecord>,
    /// Signalled when a full batch is waiting; otherwise the shipper wakes on
    /// its flush timer, so the request path does not wake it per record.
    pub batch_ready: Arc<Notify>,
    /// Requests refused before admission, taken with each journal tick.
    pub refusals: Arc<Refusals>,
}

impl UsageSink {
    pub fn channel(capacity: usize, batch_size: usize) -> (Self, UsageQueue) {
        let (sender, receiver) = mpsc::channel(capacity);
        let batch_ready = Arc::new(Notify::new());
        let refusals = Arc::new(Refusals::default());
        let sink = Self {
            sender,
            batch_ready: batch_ready.clone(),
            batch_size,
            refusals: refusals.clone(),
        };
        (
            sink,
            UsageQueue {
                receiver,
                batch_ready,
                refusals,
            },
        )
    }

    /// A request refused before admission: counted, not recorded.
    pub fn refused(&self, who: Refused, kind: &'static str) {
        self.refusals.count(who, kind);
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
/// upstream answers; `finish` completes it and hands it to the sink. It is a
/// guard: however an admitted request ends (the client gone, an HTTP/2
/// reset, a shutdown, a panic in the handler), dropping the draft unfinished
/// records it as 499 (client closed request), its prompt counted by
/// tokenizer, and settles its reservations. No path can forget it.
pub struct UsageDraft {
    pub sink: UsageSink,
    pub started: std::time::Instant,
    pub record: UsageRecord,
    /// The limits' reservations, settled to the real use.
    pub permit: Option<Permit>,
    /// The snapshot's prices, for the record's cost.
    pub prices: Arc<Prices>,
    /// The request's prompt, counted only if the provider reports no usage.
    pub prompt: Option<Arc<dyn PromptTokens>>,
    /// The metrics of the target that answered (set with the provider).
    pub meters: Option<Arc<crate::meters::TargetMeters>>,
    /// Counts the request in flight until it is recorded.
    pub in_flight: Option<crate::meters::InFlight>,
    /// The request's span: its token counts are recorded there, and it
    /// lasts (in a trace) until the usage is handed off.
    pub span: tracing::Span,
    /// Whether the request's trace is exported: the hand-off gets a span.
    pub traced: bool,
    /// Recorded already: dropping it does nothing more.
    pub finished: bool,
    pub cache: CacheUse,
    /// Set when the stream may be ended by a check after its relay.
    pub cut_short: Option<CutShort>,
}

/// The status a stream is recorded with when something after its relay
/// (a guardrail refusing one of its events) ended it: not the 499 of a
/// client that left.
#[derive(Clone, Debug, Default)]
pub struct CutShort(Arc<std::sync::atomic::AtomicU16>);

impl CutShort {
    pub fn set(&self, status: u16) {
        self.0.store(status, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn status(&self) -> Option<u16> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            status => Some(status),
        }
    }
}

/// The response cache's part in a request.
#[derive(Default)]
pub enum CacheUse {
    #[default]
    None,
    /// A miss: the answer is stored once it is complete and successful.
    Fill(crate::cache::Fill),
    /// Answered from the cache. `billed`: its tokens and cost count against
    /// limits and budgets as if the provider had answered; otherwise only
    /// the request does.
    Hit { billed: bool },
}

/// What an abandoned request is recorded with: nginx's "client closed request".
pub const CLIENT_CLOSED: u16 = 499;

/// A request whose prompt a tokenizer can count.
pub trait PromptTokens: Send + Sync {
    fn prompt_tokens(&self) -> i64;
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
            cost: shared::money::Micros::ZERO,
            currency: shared::money::Currency::Usd,
            estimated: false,
            failed_attempts: Vec::new(),
            request_id: None,
            trace_id: None,
            ttft_ms: None,
            cache_hit: false,
            cost_saved: shared::money::Micros::ZERO,
        };
        let draft = UsageDraft {
            sink,
            started: std::time::Instant::now(),
            record,
            permit: None,
            prices: Arc::default(),
            prompt: None,
            meters: None,
            in_flight: None,
            span: tracing::Span::none(),
            traced: false,
            finished: false,
            cache: CacheUse::None,
            cut_short: None,
        };
        (draft, queue)
    }

    /// The response cache's fill of a miss, for whoever has the whole answer.
    pub fn take_fill(&mut self) -> Option<crate::cache::Fill> {
        match std::mem::take(&mut self.cache) {
            CacheUse::Fill(fill) => Some(fill),
            other => {
                self.cache = other;
                None
            }
        }
    }

    /// Completes the record with the provider's usage. Without one, an
    /// answer that was (even partly) given is counted by tokenizer: the
    /// prompt, and `output`, the answer's text; with no answer, nothing.
    pub fn finish(
        mut self,
        status: u16,
        usage: Option<TokenUsage>,
        output: Option<&str>,
    ) -> TokenUsage {
        self.complete(status, usage, output)
    }

    fn complete(
        &mut self,
        status: u16,
        usage: Option<TokenUsage>,
        output: Option<&str>,
    ) -> TokenUsage {
        self.finished = true;
        let tokens = match (usage, output) {
            (Some(usage), _) => usage,
            (None, Some(output)) => {
                self.record.estimated = true;
                let prompt = self.prompt.as_ref().map_or(0, |p| p.prompt_tokens());
                TokenUsage::new(prompt, crate::limits::estimate::count(output))
            }
            (None, None) => TokenUsage::default(),
        };
        self.record.status = status;
        self.record.tokens = tokens;
        self.record.latency_ms =
            i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        let price = self
            .prices
            .get(&self.record.provider, &self.record.upstream_model);
        let mut cost = price.map(|price| (price.cost(&tokens), price.currency));
        let mut charged_tokens = tokens.total_tokens;
        if let CacheUse::Hit { billed } = self.cache {
            self.record.cache_hit = true;
            self.record.cost_saved = cost.map_or(Micros::ZERO, |(cost, _)| cost);
            if !billed {
                cost = cost.map(|(_, currency)| (Micros::ZERO, currency));
                charged_tokens = 0;
            }
        }
        if let Some((cost, currency)) = cost {
            self.record.cost = cost;
            self.record.currency = currency;
        }
        self.span
            .record("gen_ai.usage.input_tokens", tokens.prompt_tokens)
            .record("gen_ai.usage.output_tokens", tokens.completion_tokens);
        let handoff = if self.traced {
            tracing::debug_span!(target: shared::telemetry::TRACE, parent: &self.span, "usage")
        } else {
            tracing::Span::none()
        };
        let _handoff = handoff.entered();
        if let Some(meters) = &self.meters {
            let micros = cost.map_or(0, |(cost, _)| cost.0);
            meters.finished(status, &tokens, micros, self.started.elapsed());
        }
        self.in_flight.take();
        if let Some(permit) = self.permit.take() {
            permit.settle(charged_tokens, cost, status < 400);
        }
        self.sink.record(std::mem::take(&mut self.record));
        tokens
    }
}

impl Drop for UsageDraft {
    fn drop(&mut self) {
        if !self.finished {
            // Nothing was answered (or what was is unknown here): the prompt
            // is what the provider may have billed.
            self.complete(CLIENT_CLOSED, None, Some(""));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Prompt;
    impl PromptTokens for Prompt {
        fn prompt_tokens(&self) -> i64 {
            7
        }
    }

    fn new_draft() -> (UsageDraft, UsageQueue) {
        let (mut draft, queue) = UsageDraft::for_test();
        draft.prompt = Some(Arc::new(Prompt));
        (draft, queue)
    }

    #[test]
    fn a_draft_dropped_unfinished_records_the_request_as_abandoned() {
        let (draft, mut queue) = new_draft();
        drop(draft);
        let record = queue.receiver.try_recv().expect("recorded on drop");
        assert_eq!(record.status, CLIENT_CLOSED);
        assert!(record.estimated);
        assert_eq!(
            (record.tokens.prompt_tokens, record.tokens.completion_tokens),
            (7, 0)
        );
        let (draft, mut queue) = new_draft();
        draft.finish(200, Some(TokenUsage::new(1, 2)), None);
        assert!(queue.receiver.try_recv().is_ok());
        assert!(
            queue.receiver.try_recv().is_err(),
            "finished once, never again on drop"
        );
    }

    #[test]
    fn a_providers_zero_stays_zero_and_missing_usage_is_estimated() {
        let (draft, mut queue) = new_draft();
        draft.finish(200, Some(TokenUsage::default()), Some("ignored"));
        let record = queue.receiver.try_recv().expect("recorded");
        assert_eq!(
            (record.tokens, record.estimated),
            (TokenUsage::default(), false)
        );

        let (draft, mut queue) = new_draft();
        let tokens = draft.finish(499, None, Some("hello world"));
        let record = queue.receiver.try_recv().expect("recorded");
        assert!(record.estimated);
        assert_eq!(record.tokens.prompt_tokens, 7);
        assert!(record.tokens.completion_tokens > 0);
        assert_eq!(tokens, record.tokens);

        // Nothing was answered: nothing is counted or estimated.
        let (draft, mut queue) = new_draft();
        draft.finish(502, None, None);
        let record = queue.receiver.try_recv().expect("recorded");
        assert_eq!(
            (record.tokens, record.estimated),
            (TokenUsage::default(), false)
        );
    }
}
