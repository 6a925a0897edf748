//! Unsent usage batches on disk, one file per batch, oldest first. Resending
//! a batch is safe: ingestion is idempotent on record ids.

use prost::Message;
use shared::proto::UsageBatch;
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone)]
pub struct Spool {
    dir: PathBuf,
}

impl Spool {
    pub fn open(state_dir: &Path) -> io::Result<Self> {
        let dir = state_dir.join("usage-spool");
        std::fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    /// Written to a temporary name and renamed, so a crash never leaves half a batch.
    pub async fn push(&self, batch: &UsageBatch) -> io::Result<()> {
        let name = format!("{}.pb", uuid::Uuid::now_v7());
        let temporary = self.dir.join(format!("{name}.tmp"));
        tokio::fs::write(&temporary, batch.encode_to_vec()).await?;
        tokio::fs::rename(&temporary, self.dir.join(name)).await
    }

    /// The spooled batches, oldest first (names are time-ordered UUIDs).
    pub async fn list(&self) -> io::Result<Vec<PathBuf>> {
        let mut entries = tokio::fs::read_dir(&self.dir).await?;
        let mut files = Vec::new();
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "pb") {
                files.push(path);
            }
        }
        files.sort();
        Ok(files)
    }

    pub async fn read(&self, path: &Path) -> io::Result<UsageBatch> {
        let bytes = tokio::fs::read(path).await?;
        UsageBatch::decode(bytes.as_slice())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    pub async fn remove(&self, path: &Path) -> io::Result<()> {
        tokio::fs::remove_file(path).await
    }

    /// Kept for an operator to inspect: the control plane refused it as invalid.
    pub async fn quarantine(&self, path: &Path) -> io::Result<()> {
        tokio::fs::rename(path, path.with_extension("rejected")).await
    }
}
