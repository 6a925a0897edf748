//! The config change log: which entities each config version changed. It is
//! written in the transaction that makes the change and moves the version, so
//! the delta between two versions is a fact of the database, the same on
//! every replica.

use super::sql::value_rows;
use super::{Store, Tx};
use crate::error::{Error, Result};
use shared::time::now_ms;
use std::collections::BTreeSet;

/// PostgreSQL channel on which a committed config change is announced, so
/// replicas publish it at once instead of at their next poll.
pub const CONFIG_CHANNEL: &str = "switchboard_config";

/// What a data plane holds that an admin write can change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EntityKind {
    Provider,
    Route,
    Key,
    User,
    Team,
    JwtIssuer,
    Price,
    Settings,
}

impl EntityKind {
    const ALL: [EntityKind; 8] = [
        EntityKind::Provider,
        EntityKind::Route,
        EntityKind::Key,
        EntityKind::User,
        EntityKind::Team,
        EntityKind::JwtIssuer,
        EntityKind::Price,
        EntityKind::Settings,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EntityKind::Provider => "provider",
            EntityKind::Route => "route",
            EntityKind::Key => "key",
            EntityKind::User => "user",
            EntityKind::Team => "team",
            EntityKind::JwtIssuer => "jwt_issuer",
            EntityKind::Price => "price",
            EntityKind::Settings => "settings",
        }
    }

    pub fn of_holder(kind: shared::limits::HolderKind) -> Self {
        match kind {
            shared::limits::HolderKind::Key => EntityKind::Key,
            shared::limits::HolderKind::User => EntityKind::User,
            shared::limits::HolderKind::Team => EntityKind::Team,
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }
}

/// One entity a config version changed: written, created or removed alike.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Change {
    pub kind: EntityKind,
    /// Its name or id; for a price, `PriceEntity`'s encoding.
    pub entity: String,
}

impl Change {
    pub fn new(kind: EntityKind, entity: impl Into<String>) -> Self {
        Change {
            kind,
            entity: entity.into(),
        }
    }

    pub fn price(model: &str, provider: Option<&str>) -> Self {
        Change::new(
            EntityKind::Price,
            price_entity(model, provider.unwrap_or_default()),
        )
    }

    pub fn settings() -> Self {
        Change::new(EntityKind::Settings, "cluster")
    }
}

/// A price is named by its model and provider ('' for any): as a JSON pair,
/// which no model or provider name can make ambiguous.
fn price_entity(model: &str, provider: &str) -> String {
    serde_json::json!([model, provider]).to_string()
}

/// The model and provider of a price change's entity.
pub fn price_of_entity(entity: &str) -> Option<(String, String)> {
    serde_json::from_str(entity).ok()
}

/// At most this many rows per INSERT: 2 parameters each, far within both databases' limits.
const ROWS_PER_INSERT: usize = 300;

impl Store {
    /// Every configuration write ends here: the version moves and the change
    /// log names what changed, in the same transaction as the change, so a
    /// version names exactly one state and every replica reads the same
    /// delta between two versions. Answers the new version.
    pub(super) async fn commit_config_change(&self, mut tx: Tx, changes: &[Change]) -> Result<i64> {
        let version: i64 = sqlx::query_scalar(
            "UPDATE config_version SET version = version + 1 WHERE id = 1 RETURNING version",
        )
        .fetch_one(&mut *tx)
        .await?;
        let unique: BTreeSet<&Change> = changes.iter().collect();
        let unique: Vec<&Change> = unique.into_iter().collect();
        for chunk in unique.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO config_changes (kind, entity, version, committed_at) VALUES {}",
                value_rows(chunk.len(), 2, 2)
            );
            let mut query = sqlx::query(&sql).bind(version).bind(now_ms());
            for change in chunk {
                query = query
                    .bind(change.kind.as_str())
                    .bind(change.entity.as_str());
            }
            query.execute(&mut *tx).await?;
        }
        self.notify_on_commit(&mut tx, CONFIG_CHANNEL, version)
            .await?;
        tx.commit().await?;
        Ok(version)
    }

    /// For a write that may have matched nothing: the version moves only when
    /// something changed; otherwise the dropped transaction rolls back.
    pub(super) async fn commit_config_change_if(
        &self,
        tx: Tx,
        changed: bool,
        changes: &[Change],
    ) -> Result<bool> {
        if changed {
            self.commit_config_change(tx, changes).await?;
        }
        Ok(changed)
    }

    /// Drops the change log up to `version` (inclusive): deltas can then
    /// start only after it. Fenced: only the leader prunes.
    pub async fn prune_config_history(
        &self,
        fence: super::Fence,
        up_to_version: i64,
    ) -> Result<u64> {
        let mut tx = self.begin().await?;
        Self::check_fence(&mut tx, fence).await?;
        let pruned = sqlx::query("DELETE FROM config_changes WHERE version <= $1")
            .bind(up_to_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        sqlx::query(
            "UPDATE config_version SET history_from = $1 WHERE id = 1 AND history_from < $1",
        )
        .bind(up_to_version)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(pruned)
    }

    /// The newest version committed before `before_ms`: where pruning by age cuts.
    pub async fn config_version_before(&self, before_ms: i64) -> Result<Option<i64>> {
        Ok(
            sqlx::query_scalar("SELECT MAX(version) FROM config_changes WHERE committed_at < $1")
                .bind(before_ms)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

pub(super) fn parse_change(kind: &str, entity: String) -> Result<Change> {
    let kind = EntityKind::parse(kind)
        .ok_or_else(|| Error::Internal(format!("config change of unknown kind {kind:?}")))?;
    Ok(Change { kind, entity })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        for kind in EntityKind::ALL {
            assert_eq!(EntityKind::parse(kind.as_str()), Some(kind));
        }
    }

    #[test]
    fn price_entities_are_unambiguous() {
        let a = Change::price("a/b", Some("c"));
        let b = Change::price("a", Some("b/c"));
        assert_ne!(a, b);
        assert_eq!(
            price_of_entity(&a.entity),
            Some(("a/b".to_owned(), "c".to_owned()))
        );
        assert_eq!(
            price_of_entity(&Change::price("m", None).entity),
            Some(("m".to_owned(), String::new()))
        );
    }
}
