use super::sql::{value_rows, Conditions};
use super::{DatabaseKind, Store, Tx};
use crate::error::Result;
use crate::model::{UsageGroup, UsageRecordView, UsageRow, UsageTotals};
use shared::ids::{KeyId, TeamId, UserId};
use shared::money::Micros;
use shared::time::now_ms;
use shared::usage::{FailedAttempt, RefusalCount, UsageRecord};
use std::collections::{BTreeMap, HashSet};

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
    pub estimated: Option<bool>,
    pub request_id: Option<String>,
    pub trace_id: Option<String>,
}

impl UsageQuery {
    /// The records matching the filter. A request id is stored once more
    /// only when it is not the record's own id (a client's `x-request-id`):
    /// only those are in `usage_records_request`.
    fn conditions(&self) -> Conditions<'_> {
        Conditions::default()
            .text("key_id = {}", self.key_id.as_deref())
            .text("user_id = {}", self.user_id.as_deref())
            .text("team_id = {}", self.team_id.as_deref())
            .text("model = {}", self.model.as_deref())
            .int("created_at >= {}", self.since_ms)
            .int("created_at < {}", self.until_ms)
            .text("provider = {}", self.provider.as_deref())
            .text("variant = {}", self.variant.as_deref())
            .int("estimated = {}", self.estimated.map(i64::from))
            .text(
                "((id = {} AND request_id = id) OR (request_id = {} AND request_id <> id))",
                self.request_id.as_deref(),
            )
            .text("trace_id = {}", self.trace_id.as_deref())
    }

    /// The refusals of the filter's callers and time (they have no model, request or trace).
    fn refusal_conditions(&self) -> Conditions<'_> {
        Conditions::default()
            .text("key_id = {}", self.key_id.as_deref())
            .text("user_id = {}", self.user_id.as_deref())
            .text("team_id = {}", self.team_id.as_deref())
            .int("minute >= {}", self.since_ms)
            .int("minute < {}", self.until_ms)
    }
}

const USAGE_SUMS: &str = "COUNT(*) AS requests, \
     CAST(COALESCE(SUM(prompt_tokens), 0) AS BIGINT) AS prompt_tokens, \
     CAST(COALESCE(SUM(completion_tokens), 0) AS BIGINT) AS completion_tokens, \
     CAST(COALESCE(SUM(total_tokens), 0) AS BIGINT) AS total_tokens, \
     CAST(COALESCE(SUM(cached_tokens), 0) AS BIGINT) AS cached_tokens, \
     CAST(COALESCE(SUM(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens, \
     CAST(COALESCE(SUM(cache_hit), 0) AS BIGINT) AS cache_hits, \
     CAST(COALESCE(SUM(reasoning_tokens), 0) AS BIGINT) AS reasoning_tokens, \
     CAST(COALESCE(SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), 0) AS BIGINT) AS errors, \
     CAST(COALESCE(SUM(estimated), 0) AS BIGINT) AS estimated, \
     CAST(COALESCE(SUM(CASE WHEN failed_attempts IS NULL THEN 0 ELSE 1 END), 0) AS BIGINT) AS retried, \
     CAST(COALESCE(SUM(cost_micros), 0) AS BIGINT) AS cost_micros";

fn totals_of(row: &sqlx::any::AnyRow) -> std::result::Result<UsageTotals, sqlx::Error> {
    use sqlx::Row;
    Ok(UsageTotals {
        requests: row.try_get("requests")?,
        prompt_tokens: row.try_get("prompt_tokens")?,
        completion_tokens: row.try_get("completion_tokens")?,
        total_tokens: row.try_get("total_tokens")?,
        cached_tokens: row.try_get("cached_tokens")?,
        cache_write_tokens: row.try_get("cache_write_tokens")?,
        cache_hits: row.try_get("cache_hits")?,
        reasoning_tokens: row.try_get("reasoning_tokens")?,
        errors: row.try_get("errors")?,
        estimated: row.try_get("estimated")?,
        retried: row.try_get("retried")?,
        ..UsageTotals::default()
    })
}

/// Failed attempts as stored: a JSON list, NULL when there were none.
fn attempts_json(attempts: &[FailedAttempt]) -> Option<String> {
    if attempts.is_empty() {
        return None;
    }
    serde_json::to_string(attempts).ok()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Latency and time-to-first-token percentiles of a group's records.
#[derive(Default)]
struct Timings {
    latencies: Vec<i64>,
    first_tokens: Vec<i64>,
}

impl Timings {
    /// A row of `SELECT ..., latency_ms, ttft_ms`, the two at `at` and `at + 1`.
    fn add(&mut self, row: &sqlx::any::AnyRow, at: usize) -> Result<()> {
        use sqlx::Row;
        self.latencies.push(row.try_get::<i64, _>(at)?);
        if let Some(ttft) = row.try_get::<Option<i64>, _>(at + 1)? {
            self.first_tokens.push(ttft);
        }
        Ok(())
    }

    fn fill(mut self, totals: &mut UsageTotals) {
        self.latencies.sort_unstable();
        self.first_tokens.sort_unstable();
        totals.latency_ms_p50 = percentile(&self.latencies, 0.50);
        totals.latency_ms_p99 = percentile(&self.latencies, 0.99);
        if !self.first_tokens.is_empty() {
            totals.ttft_ms_p50 = Some(percentile(&self.first_tokens, 0.50));
            totals.ttft_ms_p99 = Some(percentile(&self.first_tokens, 0.99));
        }
    }
}

const USAGE_COLUMNS: usize = 31;
/// 500 rows are 13,500 parameters: within SQLite's 32,766 and PostgreSQL's 65,535.
const ROWS_PER_INSERT: usize = 500;

/// SQLite gets anonymous `?` parameters: binding numbered ones looks each
/// name up in a list, which is quadratic in the parameters of a statement.
/// And `OR FAIL`: a multi-row insert that may abort on a constraint copies
/// every page it changes into a statement journal, to undo itself alone and
/// leave the transaction going; an ingestion transaction that meets an error
/// is rolled back whole, so the journal was only cost (docs/benchmarks.md).
/// `returning`: answer the ids that were new (each a row to stream back).
fn insert_usage_sql(kind: DatabaseKind, rows: usize, returning: bool) -> String {
    let mut sql = String::from(match kind {
        DatabaseKind::Sqlite => "INSERT OR FAIL",
        DatabaseKind::Postgres => "INSERT",
    });
    sql.push_str(
        " INTO usage_records (id, dataplane_id, key_id, user_id, team_id, model, \
         provider, upstream_model, endpoint, prompt_tokens, completion_tokens, total_tokens, \
         cached_tokens, reasoning_tokens, latency_ms, status, streamed, created_at, received_at, variant, jwt_issuer, \
         cost_micros, currency, estimated, failed_attempts, request_id, trace_id, ttft_ms, cache_write_tokens, cache_hit, cost_saved_micros) VALUES ",
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
    if returning {
        sql.push_str(" RETURNING id");
    }
    sql
}

impl Store {
    /// Inserts the records whose ids are new, and adds them (only them) to
    /// their holders' totals in the same transaction; returns how many were
    /// new. Many rows per statement: a statement per row costs a round trip
    /// each. Which ids were new is asked only when a record has a counted
    /// holder: streaming the ids back cost a tenth of ingestion's throughput.
    pub(super) async fn insert_usage_in(
        &self,
        tx: &mut Tx,
        dataplane_id: &str,
        records: &[UsageRecord],
    ) -> Result<u64> {
        if records.is_empty() {
            return Ok(0);
        }
        let counted = self.counted_holders(tx, records).await?;
        let returning = records.iter().any(|r| Self::is_counted(r, &counted));
        let received_at = now_ms();
        let mut inserted: HashSet<String> = HashSet::new();
        let mut new_rows = 0;
        for chunk in records.chunks(ROWS_PER_INSERT) {
            let sql = insert_usage_sql(self.kind(), chunk.len(), returning);
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
                    .bind(r.jwt.as_ref().map(|j| j.issuer.as_str()))
                    .bind(r.cost.0)
                    .bind(r.currency.as_str())
                    .bind(i64::from(r.estimated))
                    .bind(attempts_json(&r.failed_attempts))
                    .bind(r.request_id.as_deref())
                    .bind(r.trace_id.as_deref())
                    .bind(r.ttft_ms)
                    .bind(r.tokens.cache_write_tokens)
                    .bind(i64::from(r.cache_hit))
                    .bind(r.cost_saved.0);
            }
            if !returning {
                new_rows += query.execute(&mut **tx).await?.rows_affected();
                continue;
            }
            for row in query.fetch_all(&mut **tx).await? {
                use sqlx::Row;
                inserted.insert(row.try_get::<String, _>(0)?);
            }
        }
        if returning {
            let new: Vec<&UsageRecord> = records
                .iter()
                .filter(|r| inserted.contains(r.id.as_str()))
                .collect();
            Self::add_to_totals(tx, &new, &counted).await?;
            new_rows = new.len() as u64;
        }
        Ok(new_rows)
    }

    /// Totals, with the cost per currency.
    pub async fn usage_totals(&self, q: &UsageQuery) -> Result<UsageTotals> {
        let mut totals = UsageTotals::default();
        for (_, row) in self.usage_sums(q, &[]).await? {
            totals.add(&row.totals);
            if let (Some(currency), Some(cost)) = (row.totals.currency, row.totals.cost) {
                totals.costs.insert(currency, cost);
            }
        }
        let filter = q.conditions();
        let sql = format!(
            "SELECT latency_ms, ttft_ms FROM usage_records WHERE {}",
            filter.sql()
        );
        let mut timings = Timings::default();
        for row in filter.bind(sqlx::query(&sql)).fetch_all(&self.pool).await? {
            timings.add(&row, 0)?;
        }
        timings.fill(&mut totals);
        let only_records = q.model.is_some()
            || q.provider.is_some()
            || q.variant.is_some()
            || q.estimated.is_some()
            || q.request_id.is_some()
            || q.trace_id.is_some();
        if !only_records {
            totals.refusals = self.refusal_totals(q).await?;
        }
        Ok(totals)
    }

    async fn refusal_totals(&self, q: &UsageQuery) -> Result<BTreeMap<String, i64>> {
        use sqlx::Row;
        let filter = q.refusal_conditions();
        let sql = format!(
            "SELECT kind, CAST(SUM(count) AS BIGINT) FROM refusals WHERE {} GROUP BY kind",
            filter.sql()
        );
        let rows = filter.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let mut totals = BTreeMap::new();
        for row in rows {
            totals.insert(row.try_get::<String, _>(0)?, row.try_get::<i64, _>(1)?);
        }
        Ok(totals)
    }

    /// Counts of refused requests; those whose ids are known are left out.
    pub(super) async fn insert_refusals_in(
        tx: &mut Tx,
        dataplane_id: &str,
        counts: &[RefusalCount],
    ) -> Result<()> {
        const COLUMNS: usize = 9;
        let received_at = now_ms();
        for chunk in counts.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO refusals (id, dataplane_id, key_id, user_id, team_id, kind, minute, \
                 count, received_at) VALUES {} ON CONFLICT (id) DO NOTHING",
                value_rows(chunk.len(), COLUMNS, 0)
            );
            let mut query = sqlx::query(&sql);
            for c in chunk {
                query = query
                    .bind(c.id.as_str())
                    .bind(dataplane_id)
                    .bind(c.key_id.as_ref().map_or("", KeyId::as_str))
                    .bind(c.user_id.as_ref().map(UserId::as_str))
                    .bind(c.team_id.as_ref().map(TeamId::as_str))
                    .bind(c.kind.as_str())
                    .bind(c.minute_ms)
                    .bind(i64::try_from(c.count).unwrap_or(i64::MAX))
                    .bind(received_at);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The newest records matching the filter, newest first.
    pub async fn usage_records(&self, q: &UsageQuery, limit: u32) -> Result<Vec<UsageRecordView>> {
        use sqlx::Row;
        let filter = q.conditions();
        let sql = format!(
            "SELECT id, key_id, user_id, team_id, model, provider, upstream_model, endpoint, \
             status, prompt_tokens, completion_tokens, total_tokens, latency_ms, streamed, \
             created_at, variant, cost_micros, currency, estimated, failed_attempts, request_id, \
             trace_id, ttft_ms, cached_tokens, cache_write_tokens, cache_hit, cost_saved_micros \
             FROM usage_records WHERE {} ORDER BY created_at DESC, id DESC LIMIT {}",
            filter.sql(),
            limit
        );
        let rows = filter.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let mut records = Vec::with_capacity(rows.len());
        for row in rows {
            let key_id: String = row.try_get("key_id")?;
            let attempts: Option<String> = row.try_get("failed_attempts")?;
            records.push(UsageRecordView {
                id: row.try_get("id")?,
                created_at: shared::time::ms_to_rfc3339(row.try_get("created_at")?),
                key_id: (!key_id.is_empty()).then_some(key_id),
                user_id: row.try_get("user_id")?,
                team_id: row.try_get("team_id")?,
                model: row.try_get("model")?,
                provider: row.try_get("provider")?,
                upstream_model: row.try_get("upstream_model")?,
                endpoint: row.try_get("endpoint")?,
                status: u16::try_from(row.try_get::<i64, _>("status")?).unwrap_or_default(),
                prompt_tokens: row.try_get("prompt_tokens")?,
                completion_tokens: row.try_get("completion_tokens")?,
                total_tokens: row.try_get("total_tokens")?,
                latency_ms: row.try_get("latency_ms")?,
                streamed: row.try_get::<i64, _>("streamed")? != 0,
                variant: row.try_get("variant")?,
                cost: Micros(row.try_get("cost_micros")?),
                currency: row.try_get("currency")?,
                estimated: row.try_get::<i64, _>("estimated")? != 0,
                // Written by this store: a list it cannot read is shown as none.
                failed_attempts: attempts
                    .and_then(|json| serde_json::from_str(&json).ok())
                    .unwrap_or_default(),
                request_id: row.try_get("request_id")?,
                trace_id: row.try_get("trace_id")?,
                ttft_ms: row.try_get("ttft_ms")?,
                cached_tokens: row.try_get("cached_tokens")?,
                cache_write_tokens: row.try_get("cache_write_tokens")?,
                cache_hit: row.try_get::<i64, _>("cache_hit")? != 0,
                cost_saved: Micros(row.try_get("cost_saved_micros")?),
            });
        }
        Ok(records)
    }

    /// Sums and latency percentiles per group, groups in order.
    pub async fn usage_report(
        &self,
        q: &UsageQuery,
        groups: &[UsageGroup],
    ) -> Result<Vec<UsageRow>> {
        let sums = self.usage_sums(q, groups).await?;
        let index: std::collections::HashMap<Vec<Option<String>>, usize> = sums
            .iter()
            .enumerate()
            .map(|(i, (key, _))| (key.clone(), i))
            .collect();
        let mut report: Vec<UsageRow> = sums.into_iter().map(|(_, row)| row).collect();
        // Percentiles from the latencies themselves.
        let expressions = group_expressions(groups);
        let filter = q.conditions();
        let sql = format!(
            "SELECT {}, latency_ms, ttft_ms FROM usage_records WHERE {}",
            group_columns(&expressions),
            filter.sql()
        );
        let mut timings: Vec<Timings> = (0..report.len()).map(|_| Timings::default()).collect();
        for row in filter.bind(sqlx::query(&sql)).fetch_all(&self.pool).await? {
            if let Some(&i) = index.get(&group_of(&row, groups)?) {
                timings[i].add(&row, expressions.len())?;
            }
        }
        for (row, timings) in report.iter_mut().zip(timings) {
            timings.fill(&mut row.totals);
        }
        Ok(report)
    }

    /// Sums per group and currency, in order, each with its group's values.
    async fn usage_sums(
        &self,
        q: &UsageQuery,
        groups: &[UsageGroup],
    ) -> Result<Vec<(Vec<Option<String>>, UsageRow)>> {
        use sqlx::Row;
        let expressions = group_expressions(groups);
        let keys: Vec<String> = (0..expressions.len()).map(|i| format!("g{i}")).collect();
        let filter = q.conditions();
        let sql = format!(
            "SELECT {}, {USAGE_SUMS} FROM usage_records WHERE {} GROUP BY {} ORDER BY {}",
            group_columns(&expressions),
            filter.sql(),
            expressions.join(", "),
            keys.join(", ")
        );
        let rows = filter.bind(sqlx::query(&sql)).fetch_all(&self.pool).await?;
        let mut sums = Vec::with_capacity(rows.len());
        for row in &rows {
            let values = group_of(row, groups)?;
            let mut totals = totals_of(row)?;
            totals.cost = Some(Micros(row.try_get("cost_micros")?));
            totals.currency = values.last().cloned().flatten();
            let group = groups
                .iter()
                .zip(&values)
                .map(|(g, v)| (g.name().to_owned(), v.clone()))
                .collect();
            sums.push((values, UsageRow { group, totals }));
        }
        Ok(sums)
    }
}

/// What usage is grouped on: the asked groups, then always the currency, so
/// costs in different currencies are never added.
fn group_expressions(groups: &[UsageGroup]) -> Vec<&'static str> {
    let mut expressions: Vec<&str> = groups.iter().map(|g| g.column()).collect();
    expressions.push("currency");
    expressions
}

fn group_columns(expressions: &[&str]) -> String {
    let columns: Vec<String> = expressions
        .iter()
        .enumerate()
        .map(|(i, e)| format!("{e} AS g{i}"))
        .collect();
    columns.join(", ")
}

/// A row's group values, the currency last; time buckets as RFC 3339.
fn group_of(
    row: &sqlx::any::AnyRow,
    groups: &[UsageGroup],
) -> std::result::Result<Vec<Option<String>>, sqlx::Error> {
    use sqlx::Row;
    let mut values = Vec::with_capacity(groups.len() + 1);
    for (i, g) in groups.iter().enumerate() {
        values.push(if g.is_time() {
            Some(g.label(row.try_get::<i64, _>(i)?))
        } else {
            row.try_get::<Option<String>, _>(i)?
        });
    }
    values.push(row.try_get::<Option<String>, _>(groups.len())?);
    Ok(values)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use shared::ids::UsageRecordId;
    use shared::money::Currency;
    use shared::tokens::TokenUsage;

    pub(in crate::store) fn record(key: &str, created_at_ms: i64, failed: usize) -> UsageRecord {
        UsageRecord {
            id: UsageRecordId::generate(),
            key_id: Some(KeyId::from(key.to_owned())),
            model: "m".into(),
            provider: "p".into(),
            upstream_model: "u".into(),
            endpoint: "chat.completions".into(),
            tokens: TokenUsage::new(3, 4),
            status: 200,
            created_at_ms,
            currency: Currency::Usd,
            failed_attempts: (0..failed)
                .map(|n| FailedAttempt {
                    provider: format!("down-{n}"),
                    model: "u".into(),
                    status: 503,
                    reason: "overloaded".into(),
                    duration_ms: 12,
                })
                .collect(),
            ..UsageRecord::default()
        }
    }

    fn refusal(key: Option<&str>, kind: &str, count: u64) -> RefusalCount {
        RefusalCount {
            id: uuid::Uuid::now_v7().to_string(),
            key_id: key.map(|k| KeyId::from(k.to_owned())),
            user_id: None,
            team_id: None,
            kind: kind.into(),
            minute_ms: 60_000,
            count,
        }
    }

    #[tokio::test]
    async fn records_keep_their_failed_attempts_and_count_once() {
        for store in super::super::testing::stores().await {
            let mut records = [record("a", 1_000, 0), record("a", 2_000, 2)];
            records[1].request_id = Some("req-2".into());
            assert_eq!(store.insert_usage("dp", &records).await.expect("insert"), 2);
            // A batch sent again (a lost reply) changes nothing.
            assert_eq!(store.insert_usage("dp", &records).await.expect("again"), 0);
            let q = UsageQuery {
                key_id: Some("a".into()),
                ..UsageQuery::default()
            };
            let totals = store.usage_totals(&q).await.expect("totals");
            assert_eq!(
                (totals.requests, totals.retried),
                (2, 1),
                "{:?}",
                store.kind()
            );
            let listed = store.usage_records(&q, 10).await.expect("records");
            assert_eq!(listed.len(), 2);
            assert_eq!(listed[0].id, records[1].id.as_str(), "newest first");
            assert_eq!(listed[0].failed_attempts, records[1].failed_attempts);
            assert!(listed[1].failed_attempts.is_empty());
            assert_eq!(store.usage_records(&q, 1).await.expect("one").len(), 1);
            let by_id = UsageQuery {
                request_id: Some("req-2".into()),
                ..UsageQuery::default()
            };
            let found = store.usage_records(&by_id, 10).await.expect("by id");
            assert_eq!(found.len(), 1);
            assert_eq!(found[0].request_id.as_deref(), Some("req-2"));
        }
    }

    #[tokio::test]
    async fn a_request_id_finds_its_record_whether_or_not_it_is_the_records_id() {
        for store in super::super::testing::stores().await {
            let mut records = [record("a", 1_000, 0), record("a", 2_000, 0)];
            // The gateway's own request id is the record's; a client's is not.
            records[0].request_id = Some(records[0].id.as_str().to_owned());
            records[1].request_id = Some("client-7".into());
            store.insert_usage("dp", &records).await.expect("insert");
            let find = |request_id: &str| UsageQuery {
                request_id: Some(request_id.to_owned()),
                ..UsageQuery::default()
            };
            for (request_id, record) in [
                (records[0].id.as_str(), &records[0]),
                ("client-7", &records[1]),
            ] {
                let found = store
                    .usage_records(&find(request_id), 10)
                    .await
                    .expect("by request id");
                assert_eq!(found.len(), 1, "{request_id} in {:?}", store.kind());
                assert_eq!(found[0].id, record.id.as_str());
                assert_eq!(found[0].request_id.as_deref(), Some(request_id));
                let totals = store.usage_totals(&find(request_id)).await.expect("totals");
                assert_eq!(totals.requests, 1);
            }
            // A record's id is not its request id when the client named the request.
            let by_record_id = store
                .usage_records(&find(records[1].id.as_str()), 10)
                .await
                .expect("none");
            assert!(by_record_id.is_empty(), "{:?}", store.kind());
        }
    }

    #[tokio::test]
    async fn refusals_sum_per_kind_once_and_only_for_callers() {
        for store in super::super::testing::stores().await {
            let counts = [
                refusal(Some("a"), "rate_limit_exceeded", 3),
                refusal(Some("a"), "rate_limit_exceeded", 2),
                refusal(None, "invalid_api_key", 7),
            ];
            store.insert_refusals("dp", &counts).await.expect("insert");
            store.insert_refusals("dp", &counts).await.expect("resent");
            let everyone = store
                .usage_totals(&UsageQuery::default())
                .await
                .expect("all");
            let expected: BTreeMap<String, i64> = [
                ("invalid_api_key".to_owned(), 7),
                ("rate_limit_exceeded".to_owned(), 5),
            ]
            .into();
            assert_eq!(everyone.refusals, expected, "{:?}", store.kind());
            let key_a = UsageQuery {
                key_id: Some("a".into()),
                ..UsageQuery::default()
            };
            let of_a = store.usage_totals(&key_a).await.expect("a");
            assert_eq!(of_a.refusals.len(), 1);
            let later = UsageQuery {
                since_ms: Some(120_000),
                ..UsageQuery::default()
            };
            assert!(store
                .usage_totals(&later)
                .await
                .expect("later")
                .refusals
                .is_empty());
            let of_a_model = UsageQuery {
                model: Some("m".into()),
                ..key_a
            };
            let totals = store.usage_totals(&of_a_model).await.expect("model");
            assert!(totals.refusals.is_empty(), "refusals have no model");
        }
    }
}
