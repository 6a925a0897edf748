use super::{DatabaseKind, Store};
use crate::error::Result;
use crate::model::{UsageGroup, UsageRow, UsageTotals};
use shared::ids::{KeyId, TeamId, UserId};
use shared::time::now_ms;
use shared::usage::UsageRecord;
use std::collections::BTreeMap;

/// A usage filter in stored terms (times as Unix ms).
#[derive(Default)]
pub struct UsageQuery {
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub variant: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

/// Each filter is either unset (NULL) or must match: one statement for all combinations.
const USAGE_FILTER: &str = "($1 IS NULL OR key_id = $1) AND ($2 IS NULL OR user_id = $2) AND \
     ($3 IS NULL OR team_id = $3) AND ($4 IS NULL OR model = $4) AND \
     ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at < $6) AND \
     ($7 IS NULL OR provider = $7) AND ($8 IS NULL OR variant = $8)";

const USAGE_SUMS: &str = "COUNT(*) AS requests, \
     CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
     CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
     CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) AS total_tokens, \
     CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
     CAST(COALESCE(SUM(reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens, \
     CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors";

fn bind_filter<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    q: &'q UsageQuery,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&q.key_id)
        .bind(&q.user_id)
        .bind(&q.team_id)
        .bind(&q.model)
        .bind(q.since_ms)
        .bind(q.until_ms)
        .bind(&q.provider)
        .bind(&q.variant)
}

fn totals_of(row: &sqlx::any::AnyRow) -> std::result::Result<UsageTotals, sqlx::Error> {
    use sqlx::Row;
    Ok(UsageTotals {
        requests: row.try_get("requests")?,
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        total_tokens: row.try_get("total_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        reasoning_tokens: row.try_get("reasoning_tokens")?,
        errors: row.try_get("errors")?,
    })
}

const USAGE_COLUMNS: usize = 21;
/// 500 rows are 10,500 parameters: within SQLite's 32,766 and PostgreSQL's 65,535.
const ROWS_PER_INSERT: usize = 500;

/// SQLite gets anonymous `?` parameters: binding numbered ones looks each
/// name up in a list, which is quadratic in the parameters of a statement.
fn insert_usage_sql(kind: DatabaseKind, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO usage_records (id, dataplane_id, key_id, user_id, team_id, model, \
         provider, upstream_model, endpoint, prompt_tokens, completion_tokens, total_tokens, \
         cached_tokens, reasoning_tokens, latency_ms, status, streamed, created_at, received_at, variant, jwt_issuer) VALUES ",
    );
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for column in 0..USAGE_COLUMNS {
            if column > 0 {
                sql.push_str(", ");
            }
            match kind {
                DatabaseKind::Sqlite => sql.push('?'),
                DatabaseKind::Postgres => {
                    sql.push('$');
                    sql.push_str(&(row * USAGE_COLUMNS + column + 1).to_string());
                }
            }
        }
        sql.push(')');
    }
    sql.push_str(" ON CONFLICT (id) DO NOTHING");
    sql
}

impl Store {
    /// Inserts the records whose ids are new; returns how many were new.
    /// Many rows per statement: a statement per row costs a round trip each.
    pub async fn insert_usage(&self, dataplane_id: &str, records: &[UsageRecord]) -> Result<u64> {
        let mut tx = self.begin().await?;
        let received_at = now_ms();
        let mut inserted = 0;
        for chunk in records.chunks(ROWS_PER_INSERT) {
            let sql = insert_usage_sql(self.kind(), chunk.len());
            let mut query = sqlx::query(&sql);
            for r in chunk {
                query = query
                    .bind(r.id.as_str())
                    .bind(dataplane_id)
                    .bind(r.key_id.as_ref().map_or("", KeyId::as_str))
                    .bind(r.user_id.as_ref().map(UserId::as_str))
                    .bind(r.team_id.as_ref().map(TeamId::as_str))
                    .bind(&r.model)
                    .bind(&r.provider)
                    .bind(&r.upstream_model)
                    .bind(&r.endpoint)
                    .bind(r.tokens.prompt_tokens)
                    .bind(r.tokens.completion_tokens)
                    .bind(r.tokens.total_tokens)
                    .bind(r.tokens.cached_tokens)
                    .bind(r.tokens.reasoning_tokens)
                    .bind(r.latency_ms)
                    .bind(i64::from(r.status))
                    .bind(i64::from(r.streamed))
                    .bind(r.created_at_ms)
                    .bind(received_at)
                    .bind(r.variant.as_deref())
                    .bind(r.jwt.as_ref().map(|j| j.issuer.as_str()));
            }
            inserted += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    pub async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals> {
        let sql = format!("SELECT {USAGE_SUMS} FROM usage_records WHERE {USAGE_FILTER}");
        let row = bind_filter(sqlx::query(&sql), q)
            .fetch_one(&self.pool)
            .await?;
        Ok(totals_of(&row)?)
    }

    /// Sums per group, groups in order.
    pub async fn usage_report(
        &self,
        q: &UsageQuery,
        groups: &[UsageGroup],
    ) -> Result<Vec<UsageRow>> {
        use sqlx::Row;
        let columns: Vec<String> = groups
            .iter()
            .enumerate()
            .map(|(i, g)| format!("{} AS g{i}", g.column()))
            .collect();
        let keys: Vec<String> = (0..groups.len()).map(|i| format!("g{i}")).collect();
        let sql = format!(
            "SELECT {}, {USAGE_SUMS} FROM usage_records WHERE {USAGE_FILTER} GROUP BY {} ORDER BY {}",
            columns.join(", "),
            groups.iter().map(|g| g.column()).collect::<Vec<_>>().join(", "),
            keys.join(", ")
        );
        let rows = bind_filter(sqlx::query(&sql), q)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let mut group = BTreeMap::new();
                for (i, g) in groups.iter().enumerate() {
                    let value = if g.is_time() {
                        let bucket: i64 = row.try_get(i)?;
                        Some(g.label(bucket))
                    } else {
                        row.try_get::<Option<String>, _>(i)?
                    };
                    group.insert(g.name().to_owned(), value);
                }
                Ok(UsageRow {
                    group,
                    totals: totals_of(row)?,
                })
            })
            .collect()
    }
}
