//! Usage on disk, so no record of a completed request is lost, even to a
//! SIGKILL. The batch being gathered is journaled as it grows: what the
//! shipper takes off the queue (every 50 ms) is appended to `<uuid>.journal`
//! as one length-delimited `UsageBatch` fragment (records and refusal
//! counts; an append, no fsync: the page cache outlives a killed process).
//! A delivered batch's journal is deleted; an undelivered one is renamed
//! `<uuid>.batch` and resent, oldest first, until it is. Whatever a crash
//! left behind is resent on the next start. Resending is safe: ingestion is
//! idempotent on record and count ids.

use prost::Message;
use shared::proto::{UsageBatch, UsageRecord};
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

const OPEN: &str = "journal";
const CLOSED: &str = "batch";
/// Journals of earlier versions: length-delimited records, open and closed.
const LEGACY_OPEN: &str = "open";
const LEGACY_RECORDS: &str = "log";
/// Batches spooled by still earlier versions, one encoded `UsageBatch` per file.
const LEGACY_BATCH: &str = "pb";

#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// The journal of the batch being gathered, and the batch.
pub struct Journal {
    path: PathBuf,
    /// None when the file could not be created (out of file descriptors, a
    /// full disk): the batch is then kept in memory only, and sent all the same.
    file: Option<tokio::fs::File>,
    pub batch: UsageBatch,
}

impl Spool {
    /// Journals a crash left open become spooled batches.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("usage-spool");
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let closed = match path.extension().and_then(|e| e.to_str()) {
                Some(OPEN) => CLOSED,
                Some(LEGACY_OPEN) => LEGACY_RECORDS,
                _ => continue,
            };
            std::fs::rename(&path, path.with_extension(closed))?;
        }
        Ok(Self { dir })
    }

    /// A new journal; in memory only if its file cannot be created (said
    /// in the log and in `switchboard_usage_journal_failures_total`).
    pub async fn journal(&self) -> Journal {
        let path = self.dir.join(format!("{}.{OPEN}", uuid::Uuid::now_v7()));
        let file = match tokio::fs::File::create(&path).await {
            Ok(file) => Some(file),
            Err(error) => {
                metrics::counter!("switchboard_usage_journal_failures_total").increment(1);
                tracing::error!(%error, "usage journal could not be created; this batch is kept in memory until delivered");
                None
            }
        };
        Journal {
            path,
            file,
            batch: UsageBatch::default(),
        }
    }

    /// The spooled batches, oldest first (names are time-ordered UUIDs).
    pub async fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            let extension = path.extension().and_then(|e| e.to_str());
            if matches!(extension, Some(CLOSED | LEGACY_RECORDS | LEGACY_BATCH)) {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// A spooled batch. A journal cut short by a crash (its last fragment
    /// half written) yields what came before the cut.
    pub async fn read(&self, path: &Path) -> io::Result<UsageBatch> {
        let bytes = tokio::fs::read(path).await?;
        let mut buffer = bytes.as_slice();
        let mut batch = UsageBatch::default();
        match path.extension().and_then(|e| e.to_str()) {
            Some(LEGACY_BATCH) => {
                return UsageBatch::decode(buffer)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
            }
            Some(LEGACY_RECORDS) => {
                while let Ok(record) = UsageRecord::decode_length_delimited(&mut buffer) {
                    batch.records.push(record);
                }
            }
            _ => {
                while let Ok(fragment) = UsageBatch::decode_length_delimited(&mut buffer) {
                    batch.records.extend(fragment.records);
                    batch.refusals.extend(fragment.refusals);
                }
            }
        }
        Ok(batch)
    }

    pub async fn remove(&self, path: &Path) -> io::Result<()> {
        tokio::fs::remove_file(path).await
    }

    /// Kept for an operator to inspect: the control plane refused it as invalid.
    pub async fn quarantine(&self, path: &Path) -> io::Result<()> {
        tokio::fs::rename(path, path.with_extension("rejected")).await
    }
}

impl Journal {
    /// Appends a fragment to the file and to the batch.
    pub async fn append(&mut self, fragment: UsageBatch) -> io::Result<()> {
        let bytes = fragment.encode_length_delimited_to_vec();
        self.batch.records.extend(fragment.records);
        self.batch.refusals.extend(fragment.refusals);
        let Some(file) = self.file.as_mut() else {
            return Ok(());
        };
        file.write_all(&bytes).await?;
        // Into the kernel's hands (not to disk): that is what outlives a kill.
        file.flush().await
    }

    /// Closed: the journal stays, as a spooled batch, until it is delivered;
    /// None for a journal kept in memory only.
    pub async fn keep(self) -> io::Result<Option<PathBuf>> {
        let Some(file) = self.file else {
            return Ok(None);
        };
        drop(file);
        let closed = self.path.with_extension(CLOSED);
        tokio::fs::rename(&self.path, &closed).await?;
        Ok(Some(closed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> UsageRecord {
        UsageRecord {
            id: id.into(),
            model: "m".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_journal_left_open_by_a_crash_is_read_up_to_its_cut() {
        let dir = std::env::temp_dir().join(format!("sb-spool-{}", uuid::Uuid::new_v4()));
        let spool = Spool::open(&dir).expect("spool");
        let mut journal = spool.journal().await;
        let fragment = |records, refusals| UsageBatch {
            records,
            refusals,
            ..UsageBatch::default()
        };
        journal
            .append(fragment(vec![record("a")], Vec::new()))
            .await
            .expect("appended");
        let refused = shared::proto::RefusalCount {
            id: "r".into(),
            count: 3,
            ..Default::default()
        };
        journal
            .append(fragment(vec![record("b")], vec![refused]))
            .await
            .expect("appended");
        // The process dies here: the journal is still open, and a third
        // record was half written.
        let open = journal.path.clone();
        drop(journal);
        let mut bytes = std::fs::read(&open).expect("journal");
        let third = fragment(vec![record("c")], Vec::new()).encode_length_delimited_to_vec();
        bytes.extend_from_slice(&third[..third.len() - 2]);
        std::fs::write(&open, bytes).expect("written");

        let spool = Spool::open(&dir).expect("reopened");
        let spooled = spool.list().await.expect("listed");
        assert_eq!(spooled.len(), 1, "the open journal became a spooled batch");
        let batch = spool.read(&spooled[0]).await.expect("read");
        let ids: Vec<&str> = batch.records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);
        assert_eq!(batch.refusals.iter().map(|r| r.count).sum::<u64>(), 3);

        let kept = spool.journal().await.keep().await.expect("kept");
        let kept = kept.expect("on disk");
        assert_eq!(spool.list().await.expect("listed").len(), 2);
        spool.remove(&kept).await.expect("removed once delivered");
        assert_eq!(spool.list().await.expect("listed").len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[tokio::test]
    async fn a_journal_that_cannot_be_created_keeps_its_batch_in_memory() {
        let dir = std::env::temp_dir().join(format!("sb-spool-gone-{}", uuid::Uuid::now_v7()));
        let spool = Spool::open(&dir).expect("spool");
        std::fs::remove_dir_all(&dir).expect("removed");
        let mut journal = spool.journal().await;
        journal
            .append(UsageBatch {
                records: vec![record("a")],
                ..UsageBatch::default()
            })
            .await
            .expect("appended in memory");
        assert_eq!(journal.batch.records.len(), 1);
        assert_eq!(journal.keep().await.expect("kept"), None);
    }
}
