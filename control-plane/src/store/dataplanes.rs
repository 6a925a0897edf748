use super::Store;
use crate::error::Result;
use shared::time::now_ms;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct DataPlaneRow {
    pub id: String,
    pub hostname: String,
    pub software_version: String,
    pub applied_version: i64,
    pub last_error: String,
    pub connected_at: i64,
    pub disconnected_at: Option<i64>,
    pub last_seen: i64,
    /// The control-plane replica its stream was last opened on.
    pub control_plane: String,
    /// JSON: the open breakers it last reported.
    pub open_breakers: String,
}

impl Store {
    /// Records a config stream opening; returns its `connected_at`, which
    /// identifies this connection when it closes.
    pub async fn dataplane_connected(
        &self,
        id: &str,
        hostname: &str,
        software_version: &str,
        applied_version: i64,
        control_plane: &str,
    ) -> Result<i64> {
        let now = now_ms();
        sqlx::query(
            "INSERT INTO dataplanes (id, hostname, software_version, applied_version, last_error, \
             connected_at, disconnected_at, last_seen, control_plane) \
             VALUES ($1, $2, $3, $4, '', $5, NULL, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET hostname = $2, software_version = $3, \
             applied_version = $4, connected_at = $5, disconnected_at = NULL, last_seen = $5, \
             control_plane = $6",
        )
        .bind(id)
        .bind(hostname)
        .bind(software_version)
        .bind(applied_version)
        .bind(now)
        .bind(control_plane)
        .execute(&self.pool)
        .await?;
        Ok(now)
    }

    /// Only closes the connection it opened: a data plane that already
    /// reconnected (maybe to another replica) stays connected.
    pub async fn dataplane_disconnected(&self, id: &str, connected_at: i64) -> Result<()> {
        sqlx::query(
            "UPDATE dataplanes SET disconnected_at = $3 WHERE id = $1 AND connected_at = $2",
        )
        .bind(id)
        .bind(connected_at)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// An ACK moves the applied version; a NACK records why and keeps it.
    pub async fn dataplane_acked(&self, id: &str, version: i64, error: &str) -> Result<bool> {
        let query = if error.is_empty() {
            sqlx::query(
                "UPDATE dataplanes SET applied_version = $2, last_error = '', last_seen = $3 \
                 WHERE id = $1",
            )
            .bind(id)
            .bind(version)
        } else {
            let reason = format!("version {version}: {error}");
            sqlx::query("UPDATE dataplanes SET last_error = $2, last_seen = $3 WHERE id = $1")
                .bind(id)
                .bind(reason)
        };
        Ok(query
            .bind(now_ms())
            .execute(&self.pool)
            .await?
            .rows_affected()
            > 0)
    }

    /// A health report: its open breakers (JSON), and that it is alive.
    pub async fn dataplane_health(&self, id: &str, open_breakers: &str) -> Result<bool> {
        Ok(
            sqlx::query("UPDATE dataplanes SET open_breakers = $2, last_seen = $3 WHERE id = $1")
                .bind(id)
                .bind(open_breakers)
                .bind(now_ms())
                .execute(&self.pool)
                .await?
                .rows_affected()
                > 0,
        )
    }

    pub async fn list_dataplanes(&self) -> Result<Vec<DataPlaneRow>> {
        Ok(sqlx::query_as(
            "SELECT id, hostname, software_version, applied_version, last_error, connected_at, \
             disconnected_at, last_seen, control_plane, open_breakers FROM dataplanes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
