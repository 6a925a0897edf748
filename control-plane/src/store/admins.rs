//! Admin principals, found by the hash of their token.

use super::Store;
use crate::access::Role;
use crate::error::{Error, Result};
use crate::model::AdminPrincipal;
use crate::service::write::grant::Grant;
use shared::ids::TeamId;
use shared::time::ms_to_rfc3339;

#[derive(sqlx::FromRow)]
struct AdminRecord {
    id: String,
    name: String,
    role: String,
    team_id: Option<String>,
    created_at: i64,
}

const COLUMNS: &str = "id, name, role, team_id, created_at";

impl TryFrom<AdminRecord> for AdminPrincipal {
    type Error = Error;

    fn try_from(r: AdminRecord) -> Result<Self> {
        let role = Role::parse(&r.role).ok_or_else(|| {
            Error::Internal(format!("admin {:?} has unknown role {:?}", r.id, r.role))
        })?;
        Ok(AdminPrincipal {
            id: r.id.into(),
            name: r.name,
            role,
            team_id: r.team_id.map(TeamId::from),
            created_at: ms_to_rfc3339(r.created_at),
        })
    }
}

impl Store {
    pub async fn insert_admin(
        &self,
        _: &Grant,
        admin: &AdminPrincipal,
        token_hash_hex: &str,
        created_at: i64,
    ) -> Result<()> {
        sqlx::query(&format!(
            "INSERT INTO admins ({COLUMNS}, token_hash) VALUES ($1, $2, $3, $4, $5, $6)"
        ))
        .bind(admin.id.as_str())
        .bind(&admin.name)
        .bind(admin.role.as_str())
        .bind(admin.team_id.as_ref().map(TeamId::as_str))
        .bind(created_at)
        .bind(token_hash_hex)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn admin_by_token_hash(
        &self,
        token_hash_hex: &str,
    ) -> Result<Option<AdminPrincipal>> {
        let row: Option<AdminRecord> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM admins WHERE token_hash = $1"
        ))
        .bind(token_hash_hex)
        .fetch_optional(&self.pool)
        .await?;
        row.map(AdminPrincipal::try_from).transpose()
    }

    pub async fn list_admins(&self) -> Result<Vec<AdminPrincipal>> {
        let rows: Vec<AdminRecord> = sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM admins ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(AdminPrincipal::try_from).collect()
    }

    pub async fn get_admin(&self, id: &str) -> Result<Option<AdminPrincipal>> {
        let row: Option<AdminRecord> =
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM admins WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        row.map(AdminPrincipal::try_from).transpose()
    }

    pub async fn delete_admin(&self, _: &Grant, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM admins WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
