use super::{DatabaseKind, Store};
use crate::error::Result;
use crate::model::UsageTotals;
use shared::ids::{TeamId, UserId};
use shared::time::now_ms;
use shared::usage::UsageRecord;

/// A usage filter in stored terms (times as Unix ms).
#[derive(Default)]
pub struct UsageQuery {
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub model: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct TotalsRecord {
    requests: i64,
    prompt_tokens: i64,
    completion_tokens: i64,
    total_tokens: i64,
    cached_tokens: i64,
    reasoning_tokens: i64,
}

const USAGE_COLUMNS: usize = 20;
/// 500 rows are 10,000 parameters: within SQLite's 32,766 and PostgreSQL's 65,535.
const ROWS_PER_INSERT: usize = 500;

/// SQLite gets anonymous `?` parameters: binding numbered ones looks each
/// name up in a list, which is quadratic in the parameters of a statement.
fn insert_usage_sql(kind: DatabaseKind, rows: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO usage_records (id, dataplane_id, key_id, user_id, team_id, model, \
         provider, upstream_model, endpoint, prompt_tokens, completion_tokens, total_tokens, \
         cached_tokens, reasoning_tokens, latency_ms, status, streamed, created_at, received_at, variant) VALUES ",
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
                    .bind(r.key_id.as_str())
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
                    .bind(r.variant.as_deref());
            }
            inserted += query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    pub async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals> {
        // Each filter is either unset (NULL) or must match: one statement for all combinations.
        let record: TotalsRecord = sqlx::query_as(
            "SELECT COUNT(*) AS requests, \
             CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
             CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
             CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) AS total_tokens, \
             CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
             CAST(COALESCE(SUM(reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens \
             FROM usage_records WHERE \
             ($1 IS NULL OR key_id = $1) AND ($2 IS NULL OR user_id = $2) AND \
             ($3 IS NULL OR team_id = $3) AND ($4 IS NULL OR model = $4) AND \
             ($5 IS NULL OR created_at >= $5) AND ($6 IS NULL OR created_at < $6)",
        )
        .bind(&q.key_id)
        .bind(&q.user_id)
        .bind(&q.team_id)
        .bind(&q.model)
        .bind(q.since_ms)
        .bind(q.until_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(UsageTotals {
            requests: record.requests,
            prompt_tokens: record.prompt_tokens,
            completion_tokens: record.completion_tokens,
            total_tokens: record.total_tokens,
            cached_tokens: record.cached_tokens,
            reasoning_tokens: record.reasoning_tokens,
        })
    }
}
