//! Usage from the queue to the control plane, through the disk. Two tasks:
//! the journaler takes records (and refusal counts) off the queue every 50 ms
//! and appends them to the journal of the batch being gathered (so a record is on disk within
//! about 50 ms of its answer), and closes the batch when it is full or its
//! flush interval is up; the sender delivers closed batches in order,
//! retrying with backoff while the control plane is away, and deletes each
//! delivered batch's journal. Neither waits for the other: a slow or absent
//! control plane never keeps records off the disk.

use super::spool::Journal;
use super::{Spool, UsageQueue};
use crate::cluster_client::ControlPlanes;
use shared::proto;
use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often queued records are journaled.
const JOURNAL_EVERY: Duration = Duration::from_millis(50);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const FINAL_SEND_TIMEOUT: Duration = Duration::from_secs(3);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// A batch closes at this many refusal counts (at most `MAX_COUNTS` more
/// come in one tick): well within the control plane's 10,000.
const REFUSALS_PER_BATCH: usize = 5_000;
/// Batches waiting with their records in memory; beyond these, only on disk.
const BATCHES_IN_MEMORY: usize = 8;

pub struct Shipper {
    pub queue: UsageQueue,
    pub control_planes: ControlPlanes,
    pub spool: Spool,
    pub dataplane_id: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Cancelled once the HTTP server has drained: what is queued is the last.
    pub stop: CancellationToken,
}

/// A closed batch: its journal, and the batch while it is kept in memory.
struct Closed {
    /// Its spool file; None for a batch kept in memory only.
    path: Option<PathBuf>,
    /// None once only on disk.
    batch: Option<proto::UsageBatch>,
    /// When this process first held it (for the spool's age).
    queued: std::time::Instant,
}

enum Sent {
    Ok,
    /// The control plane is unreachable or failing: keep the batch and retry later.
    Retry,
    /// The control plane refused the batch as invalid: retrying cannot help.
    Refused,
}

impl Shipper {
    /// Runs until `stop`, then journals and sends (or leaves on disk) what is left.
    pub async fn run(self) {
        let (closed, batches) = mpsc::unbounded_channel();
        let sender = Sender {
            control_planes: self.control_planes,
            spool: self.spool.clone(),
            dataplane_id: self.dataplane_id,
            pending: VecDeque::new(),
        };
        let sending = tokio::spawn(sender.run(batches));
        Journaler {
            queue: self.queue,
            spool: self.spool,
            batch_size: self.batch_size,
            flush_interval: self.flush_interval,
            closed,
        }
        .run(self.stop)
        .await;
        // The journaler dropped its end: the sender delivers what it has and stops.
        if sending.await.is_err() {
            tracing::error!(
                "usage sender failed; its batches stay in the spool for the next start"
            );
        }
        tracing::info!("usage shipper stopped");
    }
}

struct Journaler {
    queue: UsageQueue,
    spool: Spool,
    batch_size: usize,
    flush_interval: Duration,
    closed: mpsc::UnboundedSender<Closed>,
}

impl Journaler {
    async fn run(mut self, stop: CancellationToken) {
        let mut tick = tokio::time::interval(JOURNAL_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut gathering: Option<(Journal, Instant)> = None;
        loop {
            let stopping = tokio::select! {
                _ = tick.tick() => false,
                _ = self.queue.batch_ready.notified() => false,
                _ = stop.cancelled() => true,
            };
            if stopping {
                break;
            }
            let room = self.room(&gathering);
            let mut taken = Vec::new();
            while taken.len() < room {
                match self.queue.receiver.try_recv() {
                    Ok(record) => taken.push(record),
                    Err(_) => break,
                }
            }
            let refusals = self.queue.refusals.take();
            self.journal(&mut gathering, taken, refusals).await;
        }
        // The last records: the queue closes once every sink is gone.
        let mut taken = Vec::new();
        while self
            .queue
            .receiver
            .recv_many(&mut taken, self.room(&gathering))
            .await
            > 0
        {
            self.journal(&mut gathering, std::mem::take(&mut taken), Vec::new())
                .await;
        }
        let refusals = self.queue.refusals.take();
        self.journal(&mut gathering, Vec::new(), refusals).await;
        if let Some((journal, _)) = gathering {
            self.close(journal).await;
        }
    }

    /// How many records fill the batch being gathered (a batch is closed once full).
    fn room(&self, gathering: &Option<(Journal, Instant)>) -> usize {
        let gathered = gathering.as_ref().map_or(0, |(j, _)| j.batch.records.len());
        self.batch_size.saturating_sub(gathered).max(1)
    }

    /// Appends to the batch being gathered, and closes it when it is due.
    async fn journal(
        &mut self,
        gathering: &mut Option<(Journal, Instant)>,
        records: Vec<super::UsageRecord>,
        refusals: Vec<proto::RefusalCount>,
    ) {
        if !records.is_empty() || !refusals.is_empty() {
            if gathering.is_none() {
                *gathering = Some((self.spool.journal().await, Instant::now()));
            }
            if let Some((journal, _)) = gathering.as_mut() {
                let count = records.len() as u64;
                let fragment = proto::UsageBatch {
                    records: records.into_iter().map(Into::into).collect(),
                    refusals,
                    ..proto::UsageBatch::default()
                };
                if let Err(error) = journal.append(fragment).await {
                    // The records are still in the batch (memory): sent if the control plane answers.
                    metrics::counter!("switchboard_usage_journal_failures_total").increment(1);
                    tracing::error!(%error, records = count, "usage journal write failed");
                }
            }
        }
        let due = gathering.as_ref().is_some_and(|(journal, since)| {
            journal.batch.records.len() >= self.batch_size
                || journal.batch.refusals.len() >= REFUSALS_PER_BATCH
                || since.elapsed() >= self.flush_interval
        });
        if due {
            if let Some((journal, _)) = gathering.take() {
                self.close(journal).await;
            }
        }
    }

    async fn close(&mut self, mut journal: Journal) {
        let batch = std::mem::take(&mut journal.batch);
        let path = journal.keep().await.unwrap_or_else(|error| {
            // Left open on disk, it is sent again at the next start (ingestion
            // ignores what it already has); now it goes from memory.
            metrics::counter!("switchboard_usage_journal_failures_total").increment(1);
            tracing::error!(%error, "a usage journal could not be closed; its batch is sent from memory");
            None
        });
        let _ = self.closed.send(Closed {
            path,
            batch: Some(batch),
            queued: std::time::Instant::now(),
        });
    }
}

struct Sender {
    control_planes: ControlPlanes,
    spool: Spool,
    dataplane_id: String,
    /// Oldest first: what a crash left in the spool, then what was closed since.
    pending: VecDeque<Closed>,
}

impl Sender {
    async fn run(mut self, mut batches: mpsc::UnboundedReceiver<Closed>) {
        match self.spool.list().await {
            Ok(paths) => self.pending.extend(paths.into_iter().map(|path| Closed {
                path: Some(path),
                batch: None,
                queued: std::time::Instant::now(),
            })),
            Err(error) => tracing::error!(%error, "usage spool unreadable"),
        }
        if !self.pending.is_empty() {
            tracing::info!(
                batches = self.pending.len(),
                "sending the usage spooled before this start"
            );
        }
        let mut delay = RETRY_MIN;
        // The journaler is done: what is pending is delivered once, or left on disk.
        let mut stopping = false;
        loop {
            if self.pending.is_empty() {
                if stopping {
                    return;
                }
                match batches.recv().await {
                    Some(batch) => self.push(batch),
                    None => return,
                }
            }
            loop {
                match batches.try_recv() {
                    Ok(batch) => self.push(batch),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        stopping = true;
                        break;
                    }
                }
            }
            let timeout = if stopping {
                FINAL_SEND_TIMEOUT
            } else {
                SEND_TIMEOUT
            };
            match self.send_front(timeout, &mut batches, &mut stopping).await {
                Sent::Retry if stopping => return,
                Sent::Retry => {
                    // Wait, still taking closed batches; the journaler stopping ends the wait.
                    let until = Instant::now() + delay;
                    delay = (delay * 2).min(RETRY_MAX);
                    while !stopping {
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            batch = batches.recv() => self.take(batch, &mut stopping),
                        }
                    }
                }
                Sent::Ok | Sent::Refused => delay = RETRY_MIN,
            }
        }
    }

    /// A batch from the journaler, or its end.
    fn take(&mut self, batch: Option<Closed>, stopping: &mut bool) {
        match batch {
            Some(batch) => self.push(batch),
            None => *stopping = true,
        }
    }

    fn push(&mut self, mut batch: Closed) {
        if self.pending.len() >= BATCHES_IN_MEMORY && batch.path.is_some() {
            batch.batch = None;
        }
        self.pending.push_back(batch);
    }

    /// Sends the oldest batch, taking the batches closed meanwhile (until
    /// `batches` ends, which sets `stopping`).
    async fn send_front(
        &mut self,
        timeout: Duration,
        batches: &mut mpsc::UnboundedReceiver<Closed>,
        stopping: &mut bool,
    ) -> Sent {
        let Some(front) = self.pending.front_mut() else {
            return Sent::Ok;
        };
        let mut batch = match (front.batch.take(), &front.path) {
            (Some(batch), _) => batch,
            (None, Some(path)) => match self.spool.read(path).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(%error, file = %path.display(), "spooled usage unreadable; quarantined");
                    let _ = self.spool.quarantine(path).await;
                    self.pending.pop_front();
                    return Sent::Refused;
                }
            },
            (None, None) => {
                // Not made: `push` drops only batches that have a file.
                tracing::error!("a usage batch with neither file nor records; skipped");
                self.pending.pop_front();
                return Sent::Refused;
            }
        };
        let count = batch.records.len() as u64;
        batch.dataplane_id.clone_from(&self.dataplane_id);
        // A batch in the journal is sent as it is and read back if it must be
        // sent again; only one the journal could not hold is copied to keep.
        let (sending, kept) = match front.path {
            Some(_) => (batch, None),
            None => (batch.clone(), Some(batch)),
        };
        let mut client = self.control_planes.client();
        let call = tokio::time::timeout(timeout, client.report_usage(sending));
        tokio::pin!(call);
        // Batches closed during the call are taken as they come, so that all
        // but the first few are kept on disk alone: a control plane that hangs
        // holds the call until the timeout, and records keep coming (left in
        // the channel, 8 s of them at 47k requests/s took 280 MB).
        let sent = loop {
            tokio::select! {
                sent = &mut call => break sent,
                batch = batches.recv(), if !*stopping => self.take(batch, stopping),
            }
        };
        let delivered = matches!(sent, Ok(Ok(_)));
        let outcome = match sent {
            Ok(Ok(_)) => {
                metrics::counter!("switchboard_usage_records_sent_total").increment(count);
                Sent::Ok
            }
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                tracing::error!(error = %status.message(), "control plane refused a usage batch");
                Sent::Refused
            }
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), error = %status.message(), "usage batch not delivered; kept in the spool");
                Sent::Retry
            }
            Err(_) => {
                tracing::warn!(
                    "usage batch not delivered: control plane timed out; kept in the spool"
                );
                Sent::Retry
            }
        };
        if !delivered {
            self.control_planes.next();
        }
        let Some(front) = self.pending.front_mut() else {
            return outcome;
        };
        match outcome {
            Sent::Ok => {
                if let Some(path) = &front.path {
                    if let Err(error) = self.spool.remove(path).await {
                        // Still on disk: sent again at the next start, which ingestion ignores.
                        tracing::error!(%error, "sent usage could not be removed from the spool");
                    }
                }
                self.pending.pop_front();
            }
            Sent::Refused => {
                if let Some(path) = &front.path {
                    let _ = self.spool.quarantine(path).await;
                }
                self.pending.pop_front();
            }
            Sent::Retry => {
                metrics::counter!("switchboard_usage_send_failures_total").increment(1);
                front.batch = kept;
            }
        }
        metrics::gauge!("switchboard_usage_spool_batches").set(self.pending.len() as f64);
        let oldest = self.pending.iter().map(|c| c.queued).min();
        metrics::gauge!("switchboard_usage_spool_oldest_seconds")
            .set(oldest.map_or(0.0, |at| at.elapsed().as_secs_f64()));
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster_client::ClusterTls;

    fn closed(id: &str) -> Closed {
        Closed {
            path: Some(PathBuf::from(format!("{id}.batch"))),
            batch: Some(proto::UsageBatch {
                records: vec![proto::UsageRecord {
                    id: id.into(),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            queued: std::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn batches_closed_while_a_hung_control_plane_holds_a_send_are_kept_on_disk_alone() {
        // Connections complete in the kernel's backlog and are never answered.
        let hung = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
        let url = format!("http://{}", hung.local_addr().expect("address"));
        let tls = ClusterTls {
            ca: None,
            client_cert: None,
        };
        let dir = std::env::temp_dir().join(format!("sb-sender-{}", uuid::Uuid::new_v4()));
        let mut sender = Sender {
            control_planes: ControlPlanes::connect(&[url], "token", &tls).expect("client"),
            spool: Spool::open(&dir).expect("spool"),
            dataplane_id: "dp".into(),
            pending: VecDeque::from([closed("front")]),
        };
        let (journaler, mut batches) = mpsc::unbounded_channel();
        for i in 0..20 {
            journaler.send(closed(&i.to_string())).expect("sent");
        }
        let mut stopping = false;
        let sent = sender
            .send_front(Duration::from_millis(500), &mut batches, &mut stopping)
            .await;
        assert!(matches!(sent, Sent::Retry));
        assert!(!stopping);
        assert!(batches.try_recv().is_err(), "taken during the send");
        assert_eq!(sender.pending.len(), 21);
        let in_memory = sender.pending.iter().filter(|c| c.batch.is_some()).count();
        assert_eq!(
            in_memory,
            BATCHES_IN_MEMORY - 1,
            "the front is on disk, then 7 kept"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
