use super::{Spool, UsageQueue, UsageRecord};
use crate::cluster_client::ControlPlanes;
use shared::proto;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const SEND_TIMEOUT: Duration = Duration::from_secs(10);
const FINAL_SEND_TIMEOUT: Duration = Duration::from_secs(3);

pub struct Shipper {
    pub queue: UsageQueue,
    /// Its own: a failed batch moves it to the next address.
    pub control_planes: ControlPlanes,
    pub spool: Spool,
    pub dataplane_id: String,
    pub batch_size: usize,
    pub flush_interval: Duration,
    /// Cancelled once the HTTP server has drained: what is queued is the last.
    pub stop: CancellationToken,
}

/// The shipper is the spool's only writer, so it can count the backlog itself
/// instead of listing the directory for every batch.
struct Backlog(usize);

enum Sent {
    Ok,
    /// The control plane is unreachable or failing: keep the batch and retry later.
    Retry,
    /// The control plane refused the batch as invalid: retrying cannot help.
    Refused,
}

impl Shipper {
    /// Wakes on its flush timer or when a full batch waits, sends what is
    /// queued, and on `stop` sends or spools what is left.
    pub async fn run(mut self) {
        let mut backlog = Backlog(self.spool.list().await.map_or(0, |files| files.len()));
        let mut ticker = tokio::time::interval(self.flush_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = self.stop.clone();
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = self.queue.batch_ready.notified() => {}
                _ = stop.cancelled() => break,
            }
            let mut buffer = Vec::with_capacity(self.batch_size);
            while let Ok(record) = self.queue.receiver.try_recv() {
                buffer.push(record);
                if buffer.len() == self.batch_size {
                    let batch = self.batch(std::mem::replace(
                        &mut buffer,
                        Vec::with_capacity(self.batch_size),
                    ));
                    self.deliver(batch, SEND_TIMEOUT, &mut backlog).await;
                }
            }
            if !buffer.is_empty() {
                let batch = self.batch(buffer);
                self.deliver(batch, SEND_TIMEOUT, &mut backlog).await;
            }
            if backlog.0 > 0 {
                self.drain_spool(&mut backlog).await;
            }
        }
        // Records still waiting for room in the queue arrive before it closes.
        let mut buffer = Vec::with_capacity(self.batch_size);
        while self
            .queue
            .receiver
            .recv_many(&mut buffer, self.batch_size)
            .await
            > 0
        {
            if buffer.len() == self.batch_size {
                let batch = self.batch(std::mem::take(&mut buffer));
                self.deliver(batch, FINAL_SEND_TIMEOUT, &mut backlog).await;
            }
        }
        if !buffer.is_empty() {
            let batch = self.batch(buffer);
            self.deliver(batch, FINAL_SEND_TIMEOUT, &mut backlog).await;
        }
        tracing::info!("usage shipper stopped");
    }

    fn batch(&self, records: Vec<UsageRecord>) -> proto::UsageBatch {
        proto::UsageBatch {
            dataplane_id: self.dataplane_id.clone(),
            records: records.into_iter().map(Into::into).collect(),
        }
    }

    async fn send(&mut self, batch: proto::UsageBatch, timeout: Duration) -> Sent {
        let count = batch.records.len() as u64;
        let mut client = self.control_planes.client();
        let sent = tokio::time::timeout(timeout, client.report_usage(batch)).await;
        if !matches!(sent, Ok(Ok(_))) {
            self.control_planes.next();
        }
        match sent {
            Ok(Ok(_)) => {
                metrics::counter!("switchboard_usage_records_sent_total").increment(count);
                Sent::Ok
            }
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                tracing::error!(error = %status.message(), "control plane refused a usage batch");
                Sent::Refused
            }
            Ok(Err(status)) => {
                tracing::warn!(code = ?status.code(), error = %status.message(), "usage batch not delivered");
                Sent::Retry
            }
            Err(_) => {
                tracing::warn!("usage batch not delivered: control plane timed out");
                Sent::Retry
            }
        }
    }

    /// Sends a fresh batch; on failure it goes to the spool, never away.
    async fn deliver(
        &mut self,
        batch: proto::UsageBatch,
        timeout: Duration,
        backlog: &mut Backlog,
    ) {
        // With a backlog, new records queue behind it so they are sent in order.
        if backlog.0 == 0 {
            if let Sent::Ok = self.send(batch.clone(), timeout).await {
                return;
            }
        }
        let count = batch.records.len() as u64;
        match self.spool.push(&batch).await {
            Ok(()) => {
                backlog.0 += 1;
                metrics::counter!("switchboard_usage_records_spooled_total").increment(count);
            }
            Err(error) => {
                metrics::counter!("switchboard_usage_lost_total").increment(count);
                tracing::error!(%error, records = count, "usage could not be spooled to disk and is lost");
            }
        }
    }

    async fn drain_spool(&mut self, backlog: &mut Backlog) {
        let files = match self.spool.list().await {
            Ok(files) => files,
            Err(error) => {
                tracing::error!(%error, "usage spool unreadable");
                return;
            }
        };
        backlog.0 = files.len();
        for path in files {
            backlog.0 -= 1;
            let batch = match self.spool.read(&path).await {
                Ok(batch) => batch,
                Err(error) => {
                    tracing::error!(%error, file = %path.display(), "spooled usage unreadable; quarantined");
                    let _ = self.spool.quarantine(&path).await;
                    continue;
                }
            };
            match self.send(batch, SEND_TIMEOUT).await {
                Sent::Ok => {
                    if let Err(error) = self.spool.remove(&path).await {
                        // Still on disk: it will be resent, which ingestion ignores.
                        backlog.0 += 1;
                        tracing::error!(%error, "sent usage could not be removed from the spool");
                    }
                }
                Sent::Refused => {
                    let _ = self.spool.quarantine(&path).await;
                }
                Sent::Retry => {
                    backlog.0 += 1;
                    return;
                }
            }
        }
    }
}
