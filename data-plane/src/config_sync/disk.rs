//! The last applied config on disk, as a full snapshot with the last counts,
//! encrypted (it holds provider credentials) with a key derived from the
//! cluster token: a cold start without the control plane serves from it.

use crate::limits::Limiter;
use crate::runtime::Live;
use prost::Message;
use shared::crypto::{Cipher, SecretKey};
use shared::proto::Snapshot;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Saves at most this often, and never more often than ten times as long
/// as a save takes: a million keys take about a second to write, and
/// deltas arriving every second must not keep a core busy rewriting them.
const MIN_SAVE_INTERVAL: Duration = Duration::from_millis(500);

const FILE_NAME: &str = "snapshot.bin";

#[derive(Clone)]
pub struct SnapshotFile {
    path: PathBuf,
    cipher: Cipher,
}

impl SnapshotFile {
    pub fn new(state_dir: &Path, cluster_token: &str) -> Self {
        Self {
            path: state_dir.join(FILE_NAME),
            cipher: Cipher::new(&SecretKey::derive(cluster_token, "data-plane snapshot")),
        }
    }

    /// `Ok(None)` when there is no saved snapshot yet.
    pub fn load(&self) -> io::Result<Option<Snapshot>> {
        let sealed = match std::fs::read(&self.path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let plain = self.cipher.decrypt(&sealed).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{e} (was the cluster token changed?)"),
            )
        })?;
        Snapshot::decode(plain.as_slice())
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Saves an encoded snapshot; blocking, so run it off the reactor. Written
    /// beside and renamed over, so a crash leaves the old file or the new one.
    pub fn save(&self, encoded: &[u8]) -> io::Result<()> {
        let sealed = self.cipher.encrypt(encoded);
        let temporary = self.path.with_extension("tmp");
        std::fs::write(&temporary, sealed)?;
        std::fs::rename(&temporary, &self.path)
    }
}

/// Writes the live config (and the limiter's counts) to `file` after each
/// change, at most every `MIN_SAVE_INTERVAL` (longer for large configs), and
/// once more on shutdown if anything changed since.
pub async fn persist(
    live: Live,
    limiter: Arc<Limiter>,
    file: SnapshotFile,
    changed: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut interval = MIN_SAVE_INTERVAL;
    let mut saved_at = Instant::now() - interval;
    loop {
        tokio::select! {
            _ = changed.notified() => {}
            _ = shutdown.cancelled() => return,
        }
        // Changes that arrive meanwhile are saved together.
        let stopping = tokio::select! {
            _ = tokio::time::sleep_until((saved_at + interval).into()) => false,
            _ = shutdown.cancelled() => true,
        };
        let Some(runtime) = live.load_full() else {
            continue;
        };
        let (file, counts) = (file.clone(), limiter.counted.all());
        let started = Instant::now();
        let saved =
            tokio::task::spawn_blocking(move || file.save(&runtime.encode_snapshot(counts))).await;
        let took = started.elapsed();
        saved_at = Instant::now();
        interval = MIN_SAVE_INTERVAL.max(took * 10);
        match saved {
            Ok(Ok(())) => {
                metrics::histogram!("switchboard_config_save_seconds").record(took.as_secs_f64());
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "the config could not be saved to the state dir")
            }
            Err(error) => tracing::error!(%error, "saving the config panicked"),
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_without_plaintext_credentials() {
        let dir = std::env::temp_dir().join(format!("sb-disk-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = SnapshotFile::new(&dir, "cluster-token");
        assert!(file.load().expect("readable").is_none());
        let snapshot = Snapshot {
            version: 3,
            providers: vec![shared::proto::SnapshotProvider {
                api_key: "sk-very-secret".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        file.save(&snapshot.encode_to_vec()).expect("saved");
        let raw = std::fs::read(dir.join(FILE_NAME)).expect("file");
        assert!(!raw.windows(14).any(|w| w == b"sk-very-secret"));
        assert_eq!(file.load().expect("readable"), Some(snapshot));
        assert!(SnapshotFile::new(&dir, "other-token").load().is_err());
        let _ = std::fs::remove_dir_all(dir);
    }
}
