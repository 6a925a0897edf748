use super::changes::{Change, EntityKind};
use super::Store;
use crate::error::{already_exists, Error, Result};
use crate::service::write::grant::Grant;
use shared::time::now_ms;

/// A provider as stored; the credential stays encrypted.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct StoredProvider {
    pub name: String,
    pub kind: String,
    pub base_url: String,
    pub api_key_encrypted: Option<String>,
    pub secret_key_encrypted: Option<String>,
    pub settings: String,
    pub created_at: i64,
    pub updated_at: i64,
}

const COLUMNS: &str =
    "name, kind, base_url, api_key_encrypted, settings, created_at, updated_at, secret_key_encrypted";

impl Store {
    /// Seals again, with the cipher's current key, every credential a
    /// previous key sealed; returns how many providers changed. Credentials no
    /// key opens are left as they are (the snapshot build reports them).
    pub async fn reseal_credentials(&self, cipher: &shared::crypto::Cipher) -> Result<usize> {
        let mut tx = self.begin().await?;
        let rows: Vec<(String, Option<String>, Option<String>)> =
            sqlx::query_as("SELECT name, api_key_encrypted, secret_key_encrypted FROM providers")
                .fetch_all(&mut *tx)
                .await?;
        let reseal = |sealed: &Option<String>| match sealed {
            Some(old) if !cipher.is_current(old) => cipher
                .decrypt_string(old)
                .ok()
                .map(|plain| cipher.encrypt_to_string(&plain)),
            _ => None,
        };
        let mut resealed = 0;
        for (name, api_key, secret_key) in rows {
            let (new_api, new_secret) = (reseal(&api_key), reseal(&secret_key));
            if new_api.is_none() && new_secret.is_none() {
                continue;
            }
            sqlx::query(
                "UPDATE providers SET api_key_encrypted = COALESCE($2, api_key_encrypted), \
                 secret_key_encrypted = COALESCE($3, secret_key_encrypted) WHERE name = $1",
            )
            .bind(&name)
            .bind(new_api)
            .bind(new_secret)
            .execute(&mut *tx)
            .await?;
            resealed += 1;
        }
        tx.commit().await?;
        Ok(resealed)
    }

    pub async fn insert_provider(&self, _: &Grant, p: &StoredProvider) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO providers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(&p.name)
        .bind(&p.kind)
        .bind(&p.base_url)
        .bind(&p.api_key_encrypted)
        .bind(&p.settings)
        .bind(p.created_at)
        .bind(p.updated_at)
        .bind(&p.secret_key_encrypted)
        .execute(&mut *tx)
        .await
        .map_err(already_exists(format!("provider {:?}", p.name)))?;
        self.commit_config_change(tx, &[Change::new(EntityKind::Provider, &p.name)])
            .await
            .map(drop)
    }

    /// Replaces kind, base URL and settings; each credential only when one is given.
    pub async fn update_provider(&self, _: &Grant, p: &StoredProvider) -> Result<bool> {
        let mut tx = self.begin().await?;
        let updated = sqlx::query(
            "UPDATE providers SET kind = $2, base_url = $3, \
             api_key_encrypted = COALESCE($4, api_key_encrypted), settings = $5, updated_at = $6, \
             secret_key_encrypted = COALESCE($7, secret_key_encrypted) WHERE name = $1",
        )
        .bind(&p.name)
        .bind(&p.kind)
        .bind(&p.base_url)
        .bind(&p.api_key_encrypted)
        .bind(&p.settings)
        .bind(now_ms())
        .bind(&p.secret_key_encrypted)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        self.commit_config_change_if(tx, updated, &[Change::new(EntityKind::Provider, &p.name)])
            .await
    }

    pub async fn get_provider(&self, name: &str) -> Result<Option<StoredProvider>> {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM providers WHERE name = $1"))
                .bind(name)
                .fetch_optional(&self.pool)
                .await?,
        )
    }

    pub async fn list_providers(&self) -> Result<Vec<StoredProvider>> {
        Self::providers_in(&self.pool).await
    }

    pub(super) async fn providers_in<'e, E>(executor: E) -> Result<Vec<StoredProvider>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM providers ORDER BY name"))
                .fetch_all(executor)
                .await?,
        )
    }

    /// Refuses while a route still sends traffic to the provider.
    pub async fn delete_provider(&self, _: &Grant, name: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT route_model FROM route_targets WHERE provider = $1 ORDER BY route_model",
        )
        .bind(name)
        .fetch_all(&mut *tx)
        .await?;
        if !users.is_empty() {
            return Err(Error::Conflict(format!(
                "provider {name:?} is used by routes: {}",
                users.join(", ")
            )));
        }
        let deleted = sqlx::query("DELETE FROM providers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        self.commit_config_change_if(tx, deleted, &[Change::new(EntityKind::Provider, name)])
            .await
    }
}
