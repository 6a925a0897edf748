//! Usage on disk, so no record of a completed request is lost, even to a
//! SIGKILL. The batch being gathered is journaled as it grows: its records
//! are appended to `<uuid>.open` as the shipper takes them off the queue
//! (every 50 ms; an append, no fsync: the page cache outlives a killed
//! process). A delivered batch's journal is deleted; an undelivered one is
//! renamed `<uuid>.log` and resent, oldest first, until it is. Whatever a
//! crash left behind is resent on the next start. Resending is safe:
//! ingestion is idempotent on record ids.

use prost::Message;
use shared::proto::UsageRecord;
use std::io;
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

const OPEN: &str = "open";
const CLOSED: &str = "log";
/// Batches spooled by earlier versions, one encoded `UsageBatch` per file.
const LEGACY: &str = "pb";

#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
}

/// The journal of the batch being gathered.
pub struct Journal {
    path: PathBuf,
    file: tokio::fs::File,
    pub records: Vec<UsageRecord>,
}

impl Spool {
    /// Journals a crash left open become spooled batches.
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("usage-spool");
        std::fs::create_dir_all(&dir)?;
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == OPEN) {
                std::fs::rename(&path, path.with_extension(CLOSED))?;
            }
        }
        Ok(Self { dir })
    }

    pub async fn journal(&self) -> io::Result<Journal> {
        let path = self.dir.join(format!("{}.{OPEN}", uuid::Uuid::now_v7()));
        let file = tokio::fs::File::create(&path).await?;
        Ok(Journal {
            path,
            file,
            records: Vec::new(),
        })
    }

    /// The spooled batches, oldest first (names are time-ordered UUIDs).
    pub async fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == CLOSED || e == LEGACY) {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    /// A spooled batch's records. A journal cut short by a crash (its last
    /// record half written) yields the records before the cut.
    pub async fn read(&self, path: &Path) -> io::Result<Vec<UsageRecord>> {
        let bytes = tokio::fs::read(path).await?;
        if path.extension().is_some_and(|e| e == LEGACY) {
            return shared::proto::UsageBatch::decode(bytes.as_slice())
                .map(|batch| batch.records)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e));
        }
        let mut buffer = bytes.as_slice();
        let mut records = Vec::new();
        while !buffer.is_empty() {
            match UsageRecord::decode_length_delimited(&mut buffer) {
                Ok(record) => records.push(record),
                Err(_) => break,
            }
        }
        Ok(records)
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
    /// Appends records to the file and to the batch.
    pub async fn append(&mut self, records: Vec<UsageRecord>) -> io::Result<()> {
        let mut bytes = Vec::new();
        for record in &records {
            record
                .encode_length_delimited(&mut bytes)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        }
        self.records.extend(records);
        self.file.write_all(&bytes).await?;
        // Into the kernel's hands (not to disk): that is what outlives a kill.
        self.file.flush().await
    }

    /// Delivered: the journal goes.
    pub async fn delivered(self) -> io::Result<()> {
        drop(self.file);
        tokio::fs::remove_file(&self.path).await
    }

    /// Not delivered: the journal stays, as a spooled batch.
    pub async fn keep(self) -> io::Result<PathBuf> {
        drop(self.file);
        let closed = self.path.with_extension(CLOSED);
        tokio::fs::rename(&self.path, &closed).await?;
        Ok(closed)
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
        let mut journal = spool.journal().await.expect("journal");
        journal
            .append(vec![record("a"), record("b")])
            .await
            .expect("appended");
        // The process dies here: the journal is still open, and a third
        // record was half written.
        let open = journal.path.clone();
        drop(journal);
        let mut bytes = std::fs::read(&open).expect("journal");
        let mut third = Vec::new();
        record("c")
            .encode_length_delimited(&mut third)
            .expect("encodes");
        bytes.extend_from_slice(&third[..third.len() - 2]);
        std::fs::write(&open, bytes).expect("written");

        let spool = Spool::open(&dir).expect("reopened");
        let spooled = spool.list().await.expect("listed");
        assert_eq!(spooled.len(), 1, "the open journal became a spooled batch");
        let records = spool.read(&spooled[0]).await.expect("read");
        let ids: Vec<&str> = records.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["a", "b"]);

        let journal = spool.journal().await.expect("journal");
        journal.delivered().await.expect("deleted");
        assert_eq!(spool.list().await.expect("listed").len(), 1);
        let _ = std::fs::remove_dir_all(dir);
    }
}
