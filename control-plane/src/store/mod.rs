//! Configuration and usage in SQL. One code path for SQLite and PostgreSQL:
//! portable SQL through sqlx's `Any` driver, `$n` placeholders, times as Unix
//! milliseconds, and integers as BIGINT.

mod admins;
mod allowances;
mod audit;
mod changes;
mod cluster;
mod dataplanes;
mod identities;
mod ingest;
mod jwt_issuers;
mod keys;
mod providers;
mod routes;
mod sessions;
mod settings;
mod snapshot;
mod spend;
mod sql;
#[cfg(test)]
pub mod testing;
mod usage;

pub use allowances::{budget_of, limits_of, NewAlert};
pub use audit::NewAuditEntry;
pub use changes::{price_of_entity, Change, EntityKind, CONFIG_CHANNEL};
pub use cluster::{ControlPlaneRow, Fence, LeadershipRow};
pub use dataplanes::DataPlaneRow;
pub use identities::guardrails_of;
pub use ingest::UsageReport;
pub use jwt_issuers::JwtIssuerRow;
pub use keys::NewKeyRow;
pub use snapshot::{ConfigReader, KeyRow, ProviderRow, TeamRow, UserRow, VersionInfo};
pub use spend::{Holder, SpendRow, SPEND_CHANNEL};
pub use sql::{string_list, string_list_json};
pub use usage::UsageQuery;

use crate::config::DatabaseKind;
use crate::error::Result;
use sqlx::any::AnyPoolOptions;
use sqlx::{Any, AnyPool, Transaction};
use std::path::PathBuf;

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    kind: DatabaseKind,
    /// SQLite: usage reports go through it to be written in groups.
    group_writer: Option<ingest::GroupWriter>,
    /// SQLite: held while this control plane runs, so a second one on the
    /// same file refuses to start instead of running every job twice.
    _sqlite_lock: Option<std::sync::Arc<std::fs::File>>,
}

type Tx = Transaction<'static, Any>;

impl Store {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        sqlx::any::install_default_drivers();
        let kind = DatabaseKind::of_url(url).map_err(anyhow::Error::msg)?;
        let sqlite_lock = match kind {
            DatabaseKind::Sqlite => lock_sqlite(url)?,
            DatabaseKind::Postgres => None,
        };
        let url = match kind {
            DatabaseKind::Sqlite => prepare_sqlite_url(url)?,
            DatabaseKind::Postgres => url.to_owned(),
        };
        let pool = open_pool(kind, &url, max_connections, &[]).await?;
        match kind {
            DatabaseKind::Sqlite => sqlx::migrate!("../migrations/sqlite").run(&pool).await?,
            DatabaseKind::Postgres => sqlx::migrate!("../migrations/postgres").run(&pool).await?,
        }
        let mut store = Self {
            pool,
            kind,
            group_writer: None,
            _sqlite_lock: sqlite_lock,
        };
        if kind == DatabaseKind::Sqlite {
            // Its own connection (to the same file: an in-memory database
            // would be another one): SQLite drops a connection's page cache
            // whenever another one wrote, so the hot index pages stay cached
            // only on a connection that does the writing.
            let mut writer = store.clone();
            if sqlite_file(&url).is_some() {
                writer.pool = open_pool(kind, &url, 1, USAGE_WRITER).await?;
            }
            store.group_writer = Some(ingest::GroupWriter::start(writer));
        }
        Ok(store)
    }

    pub fn kind(&self) -> DatabaseKind {
        self.kind
    }

    /// On PostgreSQL, announces `payload` on `channel` to every replica
    /// listening, when `tx` commits; on SQLite (one replica) nothing.
    async fn notify_on_commit(&self, tx: &mut Tx, channel: &str, payload: i64) -> Result<()> {
        if self.kind == DatabaseKind::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload.to_string())
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn config_version(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// The oldest version a delta may start from.
    pub async fn history_from(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT history_from FROM config_version WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// A transaction that writes (most read first): see `begin_write`.
    async fn begin(&self) -> Result<Tx> {
        self.begin_write().await
    }

    /// A transaction that only reads: a consistent snapshot that holds no
    /// write lock.
    async fn begin_read(&self) -> Result<Tx> {
        Ok(self.pool.begin().await?)
    }

    /// A transaction that reads before it writes. SQLite's default deferred
    /// transaction would take a read snapshot first and then fail (busy,
    /// without waiting) to become the writer when another one wrote since;
    /// `BEGIN IMMEDIATE` waits for the write lock up front instead.
    async fn begin_write(&self) -> Result<Tx> {
        Ok(match self.kind {
            DatabaseKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await?,
            DatabaseKind::Postgres => self.pool.begin().await?,
        })
    }
}

/// Every SQLite connection. WAL lets readers (snapshot builds) run beside a
/// writer. A multi-row insert that may abort keeps a statement journal (to
/// undo itself halfway); in a temporary file it doubled the page writes of
/// usage ingestion, whose insert now needs none (docs/benchmarks.md).
const SQLITE: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "PRAGMA foreign_keys = ON",
    "PRAGMA busy_timeout = 5000",
    "PRAGMA temp_store = MEMORY",
];

/// SQLite: the connection writing usage. A group of reports dirties more
/// pages than the default 2 MiB cache holds (they spilled to the WAL before
/// the commit), and a checkpoint every 1,000 WAL pages (the default) copied
/// the same hot index pages into the database after every few groups.
const USAGE_WRITER: &[&str] = &[
    "PRAGMA cache_size = -32768",
    "PRAGMA wal_autocheckpoint = 10000",
];

/// `pragmas`: SQLite settings of these connections beyond the common ones.
async fn open_pool(
    kind: DatabaseKind,
    url: &str,
    max_connections: u32,
    pragmas: &'static [&'static str],
) -> anyhow::Result<AnyPool> {
    Ok(AnyPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if kind == DatabaseKind::Sqlite {
                    for pragma in SQLITE.iter().chain(pragmas) {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
        .connect(url)
        .await?)
}

/// The path of the SQLite file named by `url`, if it names one.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or_default();
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

/// SQLite is the one-replica embedded default: a lock file beside the
/// database keeps a second control plane off it.
fn lock_sqlite(url: &str) -> anyhow::Result<Option<std::sync::Arc<std::fs::File>>> {
    let Some(path) = sqlite_file(url) else {
        return Ok(None);
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut lock_path = path.into_os_string();
    lock_path.push(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(std::sync::Arc::new(file))),
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "database_url: another control plane already uses this SQLite database ({}); \
             SQLite serves one control plane: run several replicas on PostgreSQL",
            std::path::Path::new(&lock_path).display()
        ),
        Err(std::fs::TryLockError::Error(error)) => Err(error.into()),
    }
}

/// Creates the database's folder, and asks SQLite to create the file.
fn prepare_sqlite_url(url: &str) -> anyhow::Result<String> {
    if let Some(parent) = sqlite_file(url).as_deref().and_then(|p| p.parent()) {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)?;
        }
    }
    Ok(if url.contains("mode=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_file_is_read_from_the_url() {
        assert_eq!(
            sqlite_file("sqlite://a/b.db?mode=rwc"),
            Some(PathBuf::from("a/b.db"))
        );
        assert_eq!(sqlite_file("sqlite:x.db"), Some(PathBuf::from("x.db")));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://h/db"), None);
    }
}
