//! Consistent reads of what snapshots and deltas hold: one read-only
//! transaction (REPEATABLE READ on PostgreSQL; SQLite's read transactions
//! are snapshots already), so the rows and the version always agree however
//! long a read of a million keys takes and however many writes land meanwhile.

use super::changes::{parse_change, Change};
use super::jwt_issuers::JwtIssuerRow;
use super::providers::StoredProvider;
use super::sql::placeholders;
use super::{DatabaseKind, Store, Tx};
use crate::error::Result;
use crate::model::{PriceView, Route};
use crate::settings::ClusterSettings;
use futures_util::stream::BoxStream;
use std::collections::BTreeSet;

pub type ProviderRow = StoredProvider;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub key_hash: String,
    pub name: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub models: String,
    pub expires_at: Option<i64>,
    pub previous_key_hash: Option<String>,
    pub previous_valid_until: Option<i64>,
    pub limits: String,
    pub budget: Option<String>,
}

impl KeyRow {
    pub fn models(&self) -> Vec<String> {
        super::sql::string_list(&self.models)
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub external_id: Option<String>,
    pub team_id: Option<String>,
    pub models: String,
    pub limits: String,
    pub budget: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
    pub models: String,
    pub limits: String,
    pub budget: Option<String>,
    pub guardrails: Option<String>,
}

macro_rules! key_columns {
    () => {
        "id, key_hash, name, user_id, team_id, models, expires_at, previous_key_hash, \
         previous_valid_until, limits, budget"
    };
}
const KEY_COLUMNS: &str = key_columns!();
/// Revoked keys are not served.
const LIVE_KEYS: &str = "revoked_at IS NULL";
/// A 'static statement: the stream of a million keys borrows it.
const ALL_LIVE_KEYS: &str = concat!(
    "SELECT ",
    key_columns!(),
    " FROM api_keys WHERE revoked_at IS NULL ORDER BY id"
);
const USER_COLUMNS: &str = "id, external_id, team_id, models, limits, budget";
/// Only users a data plane needs: with an external id, a model list, limits
/// or a budget (a user without any of these narrows nothing).
const NEEDED_USERS: &str =
    "(external_id IS NOT NULL OR models <> '[]' OR limits <> '{}' OR budget IS NOT NULL)";
const TEAM_COLUMNS: &str = "id, name, models, limits, budget, guardrails";
/// Ids per `IN (...)` list.
const IDS_PER_QUERY: usize = 500;

/// A read-only transaction over the configuration at one version.
pub struct ConfigReader {
    tx: Tx,
}

/// The version a reader sees, and the oldest version a delta may start from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    pub version: i64,
    pub history_from: i64,
}

impl Store {
    pub async fn config_reader(&self) -> Result<ConfigReader> {
        let mut tx = self.begin_read().await?;
        if self.kind == DatabaseKind::Postgres {
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                .execute(&mut *tx)
                .await?;
        }
        Ok(ConfigReader { tx })
    }
}

impl ConfigReader {
    pub async fn version(&mut self) -> Result<VersionInfo> {
        let (version, history_from): (i64, i64) =
            sqlx::query_as("SELECT version, history_from FROM config_version WHERE id = 1")
                .fetch_one(&mut *self.tx)
                .await?;
        Ok(VersionInfo {
            version,
            history_from,
        })
    }

    /// The entities changed after version `after`, up to `up_to`.
    pub async fn changes(&mut self, after: i64, up_to: i64) -> Result<BTreeSet<Change>> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT DISTINCT kind, entity FROM config_changes WHERE version > $1 AND version <= $2",
        )
        .bind(after)
        .bind(up_to)
        .fetch_all(&mut *self.tx)
        .await?;
        rows.into_iter()
            .map(|(kind, entity)| parse_change(&kind, entity))
            .collect()
    }

    pub async fn providers(&mut self) -> Result<Vec<ProviderRow>> {
        Store::providers_in(&mut *self.tx).await
    }

    pub async fn routes(&mut self) -> Result<Vec<Route>> {
        Store::routes_in(&mut self.tx).await
    }

    pub async fn jwt_issuers(&mut self) -> Result<Vec<JwtIssuerRow>> {
        Store::jwt_issuers_in(&mut *self.tx).await
    }

    pub async fn prices(&mut self) -> Result<Vec<PriceView>> {
        Store::prices_in(&mut *self.tx).await
    }

    pub async fn settings(&mut self) -> Result<ClusterSettings> {
        Store::settings_in(&mut *self.tx).await
    }

    /// Every live key, streamed: a million keys need not be in memory at once.
    pub fn all_keys(&mut self) -> BoxStream<'_, std::result::Result<KeyRow, sqlx::Error>> {
        sqlx::query_as(ALL_LIVE_KEYS).fetch(&mut *self.tx)
    }

    pub async fn all_users(&mut self) -> Result<Vec<UserRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE {NEEDED_USERS} ORDER BY id"
        ))
        .fetch_all(&mut *self.tx)
        .await?)
    }

    pub async fn all_teams(&mut self) -> Result<Vec<TeamRow>> {
        Ok(
            sqlx::query_as(&format!("SELECT {TEAM_COLUMNS} FROM teams ORDER BY id"))
                .fetch_all(&mut *self.tx)
                .await?,
        )
    }

    /// The live keys among `ids` (revoked or deleted ones are absent).
    pub async fn keys(&mut self, ids: &[&str]) -> Result<Vec<KeyRow>> {
        self.by_ids(ids, |list| {
            format!("SELECT {KEY_COLUMNS} FROM api_keys WHERE {LIVE_KEYS} AND id IN ({list})")
        })
        .await
    }

    /// The needed users among `ids`.
    pub async fn users(&mut self, ids: &[&str]) -> Result<Vec<UserRow>> {
        self.by_ids(ids, |list| {
            format!("SELECT {USER_COLUMNS} FROM users WHERE {NEEDED_USERS} AND id IN ({list})")
        })
        .await
    }

    pub async fn teams(&mut self, ids: &[&str]) -> Result<Vec<TeamRow>> {
        self.by_ids(ids, |list| {
            format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id IN ({list})")
        })
        .await
    }

    async fn by_ids<T>(&mut self, ids: &[&str], sql: impl Fn(&str) -> String) -> Result<Vec<T>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
    {
        let mut rows = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_QUERY) {
            let sql = sql(&placeholders(chunk.len()));
            let mut query = sqlx::query_as(&sql);
            for id in chunk {
                query = query.bind(*id);
            }
            rows.extend(query.fetch_all(&mut *self.tx).await?);
        }
        Ok(rows)
    }
}
