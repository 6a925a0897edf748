//! Usage ingestion: what a data plane reports in one call (usage records and
//! refusal counts), written once however often it is sent.
//!
//! On SQLite, reports are written in groups. Every report's records land in
//! the same hot index pages (the newest entry of each key, user and team, the
//! ends of the time and id indexes), and a commit writes each page it dirtied
//! to the WAL, which the checkpoint then copies into the database. SQLite
//! commits one writer at a time, so reports arriving while one is written
//! wait anyway: written together, in one transaction with one fsync, each hot
//! page is written once per group instead of once per report. PostgreSQL
//! writes reports concurrently, each in its own transaction.

use super::Store;
use crate::error::{Error, Result};
use shared::usage::{RefusalCount, UsageRecord};
use tokio::sync::{mpsc, oneshot};

/// A group closes at this many records; what waits beyond it is the next group.
const GROUP_RECORDS: usize = 10_000;

/// What one data plane reported in one call.
pub struct UsageReport {
    pub dataplane_id: String,
    pub records: Vec<UsageRecord>,
    pub refusals: Vec<RefusalCount>,
}

struct Queued {
    report: UsageReport,
    /// How many of its records were new.
    accepted: oneshot::Sender<Result<u64>>,
}

/// The way to the task that writes groups (SQLite only). The task's own
/// store has none, so it ends when the last other handle goes.
#[derive(Clone)]
pub(super) struct GroupWriter(mpsc::UnboundedSender<Queued>);

impl GroupWriter {
    /// Starts the task writing through `store`.
    pub(super) fn start(store: Store) -> Self {
        let (queue, reports) = mpsc::unbounded_channel();
        tokio::spawn(write_groups(store, reports));
        Self(queue)
    }
}

impl Store {
    /// Writes a report; answers how many of its records were new (a record
    /// sent before, e.g. after a lost answer, is not counted again).
    pub async fn ingest(&self, report: UsageReport) -> Result<u64> {
        let Some(GroupWriter(queue)) = &self.group_writer else {
            return Ok(self.write_reports(&[&report]).await?[0]);
        };
        let stopped = || Error::Internal("the usage writer has stopped".into());
        let (accepted, answer) = oneshot::channel();
        queue
            .send(Queued { report, accepted })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }

    /// One transaction for all of them; how many records of each were new.
    async fn write_reports(&self, reports: &[&UsageReport]) -> Result<Vec<u64>> {
        let mut tx = self.begin_write().await?;
        let mut accepted = Vec::with_capacity(reports.len());
        for report in reports {
            accepted.push(
                self.insert_usage_in(&mut tx, &report.dataplane_id, &report.records)
                    .await?,
            );
            Self::insert_refusals_in(&mut tx, &report.dataplane_id, &report.refusals).await?;
        }
        tx.commit().await?;
        Ok(accepted)
    }
}

/// Takes what waits (up to `GROUP_RECORDS`) and writes it in one transaction.
async fn write_groups(store: Store, mut reports: mpsc::UnboundedReceiver<Queued>) {
    while let Some(first) = reports.recv().await {
        let mut records = first.report.records.len();
        let mut group = vec![first];
        while records < GROUP_RECORDS {
            let Ok(next) = reports.try_recv() else { break };
            records += next.report.records.len();
            group.push(next);
        }
        let written: Vec<&UsageReport> = group.iter().map(|q| &q.report).collect();
        match store.write_reports(&written).await {
            Ok(accepted) => {
                for (queued, accepted) in group.into_iter().zip(accepted) {
                    let _ = queued.accepted.send(Ok(accepted));
                }
            }
            Err(error) if group.len() == 1 => {
                if let Some(queued) = group.pop() {
                    let _ = queued.accepted.send(Err(error));
                }
            }
            // One report's failure must not fail the others': each alone.
            Err(error) => {
                tracing::warn!(%error, reports = group.len(), "a usage group failed; writing its reports one by one");
                for queued in group {
                    let result = store.write_reports(&[&queued.report]).await;
                    let _ = queued.accepted.send(result.map(|accepted| accepted[0]));
                }
            }
        }
    }
}

#[cfg(test)]
impl Store {
    pub async fn insert_usage(&self, dataplane_id: &str, records: &[UsageRecord]) -> Result<u64> {
        self.ingest(UsageReport {
            dataplane_id: dataplane_id.to_owned(),
            records: records.to_vec(),
            refusals: Vec::new(),
        })
        .await
    }

    pub async fn insert_refusals(&self, dataplane_id: &str, counts: &[RefusalCount]) -> Result<()> {
        self.ingest(UsageReport {
            dataplane_id: dataplane_id.to_owned(),
            records: Vec::new(),
            refusals: counts.to_vec(),
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::usage::tests::record as stored;

    fn record() -> UsageRecord {
        stored("k", 1_000, 0)
    }

    /// Reports sent at once are written in groups, each answered with its own count.
    #[tokio::test]
    async fn reports_written_together_are_each_answered_with_their_own_count() {
        for store in super::super::testing::stores().await {
            let shared = record();
            let reports: Vec<Vec<UsageRecord>> = (0..20)
                .map(|n| {
                    let mut records: Vec<UsageRecord> = (0..n % 4).map(|_| record()).collect();
                    if n % 5 == 0 {
                        // The same record in four reports: new in exactly one.
                        records.push(shared.clone());
                    }
                    records
                })
                .collect();
            let answers = futures_util::future::join_all(
                reports
                    .iter()
                    .map(|records| store.insert_usage("dp", records)),
            )
            .await;
            let accepted: Vec<u64> = answers.into_iter().map(|a| a.expect("ingested")).collect();
            let fresh: u64 = reports.iter().map(|r| r.len() as u64).sum::<u64>() - 3;
            assert_eq!(accepted.iter().sum::<u64>(), fresh, "{:?}", store.kind());
            for (records, accepted) in reports.iter().zip(&accepted) {
                let own = records.iter().filter(|r| r.id != shared.id).count() as u64;
                assert!(
                    *accepted == own || *accepted == own + 1,
                    "{accepted} of {}",
                    records.len()
                );
            }
            let totals = store
                .usage_totals(&super::super::UsageQuery::default())
                .await
                .expect("totals");
            assert_eq!(totals.requests, fresh as i64);
        }
    }
}
