use super::changes::{Change, EntityKind};
use super::sql::{string_list, string_list_json};
use super::Store;
use crate::error::Result;
use crate::model::ApiKey;
use crate::service::write::grant::Grant;
use shared::ids::{TeamId, UserId};
use shared::limits::HolderKind;
use shared::time::{ms_to_rfc3339, now_ms};

#[derive(sqlx::FromRow)]
struct KeyRecord {
    id: String,
    name: String,
    prefix: String,
    user_id: Option<String>,
    team_id: Option<String>,
    models: String,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    created_at: i64,
    previous_valid_until: Option<i64>,
    limits: String,
    budget: Option<String>,
}

const COLUMNS: &str = "id, name, prefix, user_id, team_id, models, expires_at, revoked_at, \
     created_at, previous_valid_until, limits, budget";

impl From<KeyRecord> for ApiKey {
    fn from(r: KeyRecord) -> Self {
        ApiKey {
            id: r.id.into(),
            name: r.name,
            prefix: r.prefix,
            user_id: r.user_id.map(UserId::from),
            team_id: r.team_id.map(TeamId::from),
            models: string_list(&r.models),
            expires_at: r.expires_at.map(ms_to_rfc3339),
            revoked: r.revoked_at.is_some(),
            created_at: ms_to_rfc3339(r.created_at),
            previous_valid_until: r.previous_valid_until.map(ms_to_rfc3339),
            limits: super::allowances::limits_of(&r.limits),
            budget: super::allowances::budget_of(r.budget.as_deref()),
            spend: None,
        }
    }
}

/// What is stored for a new key: its hash, never its secret.
pub struct NewKeyRow<'a> {
    pub key: &'a ApiKey,
    pub key_hash_hex: String,
    pub expires_at_ms: Option<i64>,
    pub created_at_ms: i64,
}

impl Store {
    pub async fn insert_key(&self, _: &Grant, row: NewKeyRow<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        let key = row.key;
        sqlx::query(&format!(
            "INSERT INTO api_keys ({COLUMNS}, key_hash) VALUES ($1, $2, $3, $4, $5, $6, $7, NULL, $8, NULL, $9, $10, $11)"
        ))
        .bind(key.id.as_str())
        .bind(&key.name)
        .bind(&key.prefix)
        .bind(key.user_id.as_ref().map(UserId::as_str))
        .bind(key.team_id.as_ref().map(TeamId::as_str))
        .bind(string_list_json(&key.models))
        .bind(row.expires_at_ms)
        .bind(row.created_at_ms)
        .bind(super::allowances::limits_json(&key.limits))
        .bind(super::allowances::budget_json(key.budget.as_ref()))
        .bind(row.key_hash_hex)
        .execute(&mut *tx)
        .await?;
        if key.budget.is_some() || key.limits.has_quota() {
            Self::mark_spend_dirty(&mut tx, &[HolderKind::Key.holder(key.id.as_str())]).await?;
        }
        self.commit_config_change(tx, &[Change::new(EntityKind::Key, key.id.as_str())])
            .await
            .map(drop)
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let rows: Vec<KeyRecord> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM api_keys ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(ApiKey::from).collect())
    }

    pub async fn get_key(&self, id: &str) -> Result<Option<ApiKey>> {
        let row: Option<KeyRecord> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM api_keys WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(ApiKey::from))
    }

    /// Moves the current hash to `previous_key_hash`, valid until
    /// `previous_valid_until_ms`, and stores the new one. `false` when there is
    /// no such key or it is revoked.
    pub async fn rotate_key(
        &self,
        _: &Grant,
        id: &str,
        new_hash_hex: &str,
        new_prefix: &str,
        previous_valid_until_ms: i64,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query(
            "UPDATE api_keys SET previous_key_hash = key_hash, previous_valid_until = $2, \
             key_hash = $3, prefix = $4 WHERE id = $1 AND revoked_at IS NULL",
        )
        .bind(id)
        .bind(previous_valid_until_ms)
        .bind(new_hash_hex)
        .bind(new_prefix)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        self.commit_config_change_if(tx, changed, &[Change::new(EntityKind::Key, id)])
            .await
    }

    /// Revoking twice is not an error; only the first revocation changes config.
    pub async fn revoke_key(&self, _: &Grant, id: &str) -> Result<Option<ApiKey>> {
        let mut tx = self.begin().await?;
        let changed =
            sqlx::query("UPDATE api_keys SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL")
                .bind(id)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
        self.commit_config_change_if(tx, changed, &[Change::new(EntityKind::Key, id)])
            .await?;
        self.get_key(id).await
    }
}
