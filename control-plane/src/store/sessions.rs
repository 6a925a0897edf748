//! Console sessions of admins who signed in through the identity provider.

use super::Store;
use crate::access::{Principal, Role};
use crate::error::{Error, Result};
use shared::time::now_ms;

impl Store {
    pub async fn insert_session(
        &self,
        token_hash_hex: &str,
        principal: &Principal,
        expires_at_ms: i64,
    ) -> Result<()> {
        // Expired sessions go as new ones come: the table stays small.
        sqlx::query("DELETE FROM admin_sessions WHERE expires_at < $1")
            .bind(now_ms())
            .execute(&self.pool)
            .await?;
        sqlx::query(
            "INSERT INTO admin_sessions (token_hash, actor, role, team_id, expires_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash_hex)
        .bind(&principal.actor)
        .bind(principal.role.as_str())
        .bind(principal.team_id.as_ref().map(|t| t.as_str()))
        .bind(expires_at_ms)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The principal of a session that has not expired.
    pub async fn session(&self, token_hash_hex: &str) -> Result<Option<Principal>> {
        let row: Option<(String, String, Option<String>)> = sqlx::query_as(
            "SELECT actor, role, team_id FROM admin_sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash_hex)
        .bind(now_ms())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|(actor, role, team_id)| {
            Ok(Principal {
                actor,
                role: Role::parse(&role)
                    .ok_or_else(|| Error::Internal(format!("stored session role {role:?}")))?,
                team_id: team_id.map(Into::into),
            })
        })
        .transpose()
    }
}
