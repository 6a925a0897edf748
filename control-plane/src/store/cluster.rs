//! The cluster as the database sees it: control-plane replicas and the
//! leader's fencing token.

use super::{Store, Tx};
use crate::error::{Error, Result};
use shared::time::now_ms;

/// A leader's token, taken when it became leader: a job's write commits only
/// while this is the newest token, so a leader that was paused past its
/// lease (and replaced) cannot write when it wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence {
    pub token: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct ControlPlaneRow {
    pub id: String,
    pub address: String,
    pub started_at: i64,
    pub last_seen: i64,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct LeadershipRow {
    pub holder: String,
    pub token: i64,
    pub since: i64,
}

impl Store {
    /// Takes the leadership with a token newer than any before it.
    pub async fn take_leadership(&self, holder: &str) -> Result<Fence> {
        let token: i64 = sqlx::query_scalar(
            "UPDATE leadership SET holder = $1, token = token + 1, since = $2 WHERE id = 1 \
             RETURNING token",
        )
        .bind(holder)
        .bind(now_ms())
        .fetch_one(&self.pool)
        .await?;
        Ok(Fence { token })
    }

    /// Gives the leadership up, if it is still `fence`'s.
    pub async fn release_leadership(&self, fence: Fence) -> Result<()> {
        sqlx::query("UPDATE leadership SET holder = '' WHERE id = 1 AND token = $1")
            .bind(fence.token)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn leadership(&self) -> Result<LeadershipRow> {
        Ok(
            sqlx::query_as("SELECT holder, token, since FROM leadership WHERE id = 1")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Inside a job's transaction: fails unless `fence` is still the newest
    /// token, and on PostgreSQL locks the row until commit, so a new leader's
    /// takeover waits for this write instead of racing it.
    pub(super) async fn check_fence(tx: &mut Tx, fence: Fence) -> Result<()> {
        let held = sqlx::query("UPDATE leadership SET token = token WHERE id = 1 AND token = $1")
            .bind(fence.token)
            .execute(&mut **tx)
            .await?
            .rows_affected()
            > 0;
        if held {
            Ok(())
        } else {
            Err(Error::Fenced)
        }
    }

    pub async fn control_plane_seen(&self, id: &str, address: &str, started_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO control_planes (id, address, started_at, last_seen) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (id) DO UPDATE SET address = $2, last_seen = $4",
        )
        .bind(id)
        .bind(address)
        .bind(started_at)
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// A replica stopping cleanly leaves the list at once.
    pub async fn control_plane_gone(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM control_planes WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Replicas seen since `since_ms`, oldest first; older rows (replicas
    /// that died) are removed.
    pub async fn control_planes(&self, since_ms: i64) -> Result<Vec<ControlPlaneRow>> {
        sqlx::query("DELETE FROM control_planes WHERE last_seen < $1")
            .bind(since_ms)
            .execute(&self.pool)
            .await?;
        Ok(sqlx::query_as(
            "SELECT id, address, started_at, last_seen FROM control_planes ORDER BY started_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
