use super::Store;
use crate::error::Result;
use crate::model::{AuditEntry, AuditFilter};
use shared::time::ms_to_rfc3339;

#[derive(sqlx::FromRow)]
struct AuditRecord {
    id: String,
    at: i64,
    actor: String,
    action: String,
    resource: String,
    request_id: String,
    before_state: Option<String>,
    after_state: Option<String>,
}

/// An audit entry as stored: times in Unix ms, states as JSON text.
pub struct NewAuditEntry<'a> {
    pub at_ms: i64,
    pub actor: &'a str,
    pub action: &'a str,
    pub resource: &'a str,
    pub request_id: &'a str,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl Store {
    pub async fn insert_audit(&self, entry: &NewAuditEntry<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO audit_log (id, at, actor, action, resource, request_id, before_state, after_state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(entry.at_ms)
        .bind(entry.actor)
        .bind(entry.action)
        .bind(entry.resource)
        .bind(entry.request_id)
        .bind(&entry.before)
        .bind(&entry.after)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Newest first.
    pub async fn list_audit(
        &self,
        filter: &AuditFilter,
        since_ms: Option<i64>,
        limit: i64,
    ) -> Result<Vec<AuditEntry>> {
        let records: Vec<AuditRecord> = sqlx::query_as(
            "SELECT id, at, actor, action, resource, request_id, before_state, after_state FROM audit_log \
             WHERE ($1 IS NULL OR resource = $1) AND ($2 IS NULL OR actor = $2) AND ($3 IS NULL OR at >= $3) \
             ORDER BY at DESC, id DESC LIMIT $4",
        )
        .bind(&filter.resource)
        .bind(&filter.actor)
        .bind(since_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let json = |text: Option<String>| text.and_then(|t| serde_json::from_str(&t).ok());
        Ok(records
            .into_iter()
            .map(|r| AuditEntry {
                id: r.id,
                at: ms_to_rfc3339(r.at),
                actor: r.actor,
                action: r.action,
                resource: r.resource,
                request_id: r.request_id,
                before: json(r.before_state),
                after: json(r.after_state),
            })
            .collect())
    }
}
