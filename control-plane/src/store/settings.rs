//! The cluster's settings row.

use super::changes::Change;
use super::Store;
use crate::error::{Error, Result};
use crate::service::write::grant::Grant;
use crate::settings::ClusterSettings;
use shared::time::now_ms;

impl Store {
    pub async fn settings(&self) -> Result<ClusterSettings> {
        Self::settings_in(&self.pool).await
    }

    /// The defaults until a first write (or seed) stores a row.
    pub(super) async fn settings_in<'e, E>(executor: E) -> Result<ClusterSettings>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let stored: Option<String> =
            sqlx::query_scalar("SELECT settings FROM cluster_settings WHERE id = 1")
                .fetch_optional(executor)
                .await?;
        match stored {
            None => Ok(ClusterSettings::default()),
            Some(json) => serde_json::from_str(&json)
                .map_err(|e| Error::Internal(format!("stored cluster settings: {e}"))),
        }
    }

    /// Stores `settings` when none are stored yet (flags seeding an empty
    /// database); answers whether it did.
    pub async fn seed_settings(&self, settings: &ClusterSettings) -> Result<bool> {
        let tx = self.begin().await?;
        self.write_settings(tx, settings, true).await
    }

    pub async fn put_settings(&self, _: &Grant, settings: &ClusterSettings) -> Result<()> {
        let tx = self.begin().await?;
        self.write_settings(tx, settings, false).await.map(drop)
    }

    async fn write_settings(
        &self,
        mut tx: super::Tx,
        settings: &ClusterSettings,
        only_if_absent: bool,
    ) -> Result<bool> {
        let json = serde_json::to_string(settings).map_err(|e| Error::Internal(e.to_string()))?;
        let conflict = if only_if_absent {
            "DO NOTHING"
        } else {
            "DO UPDATE SET settings = excluded.settings, updated_at = excluded.updated_at"
        };
        let written = sqlx::query(&format!(
            "INSERT INTO cluster_settings (id, settings, updated_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) {conflict}"
        ))
        .bind(json)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        self.commit_config_change_if(tx, written, &[Change::settings()])
            .await
    }
}
