//! Spend, counted incrementally: ingestion adds each new record to its
//! holders' daily and all-time totals and marks them dirty, in the
//! transaction that stores it; the leader's count reads only the dirty
//! holders' totals. So counting costs what traffic costs, not what the
//! number of keys costs, and no record is counted twice or missed.

use super::allowances::{budget_of, limits_of, table};
use super::sql::{placeholders, value_rows};
use super::{DatabaseKind, Fence, Store, Tx};
use crate::error::Result;
use crate::model::{Budget, Limits};
use shared::limits::HolderKind;
use shared::usage::UsageRecord;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// PostgreSQL channel on which a spend count that changed something is
/// announced, so replicas pass it on at once instead of at their next poll.
pub const SPEND_CHANNEL: &str = "switchboard_spend";

/// The bucket of all-time totals; other buckets are UTC days.
const ALL_TIME: i64 = -1;
const DAY_MS: i64 = 86_400_000;
/// Rows per statement: 6 parameters each.
const ROWS_PER_UPSERT: usize = 500;
/// Holders counted per transaction, so one count never holds locks long.
pub const HOLDERS_PER_COUNT: i64 = 10_000;

/// A key, user or team with a budget or a quota: what spend is counted for.
#[derive(Clone, Debug)]
pub struct Holder {
    pub kind: HolderKind,
    pub id: String,
    pub limits: Limits,
    pub budget: Option<Budget>,
    pub models: Vec<String>,
}

impl Holder {
    pub fn name(&self) -> String {
        self.kind.holder(&self.id)
    }

    fn counted(&self) -> bool {
        self.budget.is_some() || self.limits.has_quota()
    }

    /// Its spend in its budget's current period (in the budget's currency),
    /// and its successful requests and their tokens: over all time when it
    /// has a quota, else within the period.
    fn spend(&self, totals: &[TotalRow], now_ms: i64) -> SpendRow {
        let period = self.budget.as_ref().map(|b| b.period);
        let period_start = period.map_or(0, |p| p.start(now_ms));
        let period_end = period.and_then(|p| p.end(now_ms)).unwrap_or(i64::MAX);
        let periodic = period_end != i64::MAX;
        let currency = self.budget.as_ref().map(|b| b.currency).unwrap_or_default();
        let in_period = |t: &TotalRow| {
            if periodic {
                t.bucket != ALL_TIME && t.bucket >= period_start && t.bucket < period_end
            } else {
                t.bucket == ALL_TIME
            }
        };
        let counts_in = |t: &TotalRow| {
            if self.limits.has_quota() || !periodic {
                t.bucket == ALL_TIME
            } else {
                t.bucket != ALL_TIME && t.bucket >= period_start
            }
        };
        let mut row = SpendRow {
            holder: self.name(),
            period_start,
            spent_micros: 0,
            requests: 0,
            tokens: 0,
        };
        for total in totals {
            if in_period(total) && total.currency == currency.as_str() {
                row.spent_micros = row.spent_micros.saturating_add(total.cost_micros);
            }
            if counts_in(total) {
                row.requests = row.requests.saturating_add(total.requests);
                row.tokens = row.tokens.saturating_add(total.tokens);
            }
        }
        row
    }
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SpendRow {
    pub holder: String,
    pub period_start: i64,
    pub spent_micros: i64,
    pub requests: i64,
    pub tokens: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct TotalRow {
    holder: String,
    bucket: i64,
    currency: String,
    cost_micros: i64,
    requests: i64,
    tokens: i64,
}

/// Sums of new records per holder, bucket and currency.
#[derive(Default)]
struct Sums {
    cost_micros: i64,
    requests: i64,
    tokens: i64,
}

impl Store {
    /// In the ingesting transaction, before its inserts: which of the
    /// records' holders are counted (a budget or a quota). Read with a share
    /// lock on PostgreSQL: an allowance write waits for the ingestion (and
    /// then recounts the holder from its records), so no record falls
    /// between the two.
    pub(super) async fn counted_holders(
        &self,
        tx: &mut Tx,
        records: &[UsageRecord],
    ) -> Result<HashSet<String>> {
        let names: BTreeSet<String> = records.iter().flat_map(holders_of).collect();
        if names.is_empty() {
            return Ok(HashSet::new());
        }
        let lock = match self.kind {
            DatabaseKind::Postgres => " FOR SHARE",
            DatabaseKind::Sqlite => "",
        };
        let names: Vec<String> = names.into_iter().collect();
        Ok(Self::holders_named(tx, &names, lock)
            .await?
            .iter()
            .map(Holder::name)
            .collect())
    }

    /// Whether any of a record's holders is counted.
    pub(super) fn is_counted(record: &UsageRecord, counted: &HashSet<String>) -> bool {
        holders_of(record).any(|h| counted.contains(&h))
    }

    /// Adds new records to the totals of those of their holders that are
    /// counted and marks them for the next count; usage of other holders
    /// costs nothing here. Rows in key order, so concurrent ingestions lock
    /// them in one order.
    pub(super) async fn add_to_totals(
        tx: &mut Tx,
        records: &[&UsageRecord],
        counted: &HashSet<String>,
    ) -> Result<()> {
        if counted.is_empty() {
            return Ok(());
        }
        let mut sums: BTreeMap<(String, i64, &str), Sums> = BTreeMap::new();
        for record in records {
            let ok = record.status < 400;
            let day = record.created_at_ms - record.created_at_ms.rem_euclid(DAY_MS);
            for holder in holders_of(record).filter(|h| counted.contains(h)) {
                for bucket in [day, ALL_TIME] {
                    let sum = sums
                        .entry((holder.clone(), bucket, record.currency.as_str()))
                        .or_default();
                    sum.cost_micros = sum.cost_micros.saturating_add(record.cost.0);
                    if ok {
                        sum.requests += 1;
                        sum.tokens = sum.tokens.saturating_add(record.tokens.total_tokens);
                    }
                }
            }
        }
        let rows: Vec<_> = sums.into_iter().collect();
        for chunk in rows.chunks(ROWS_PER_UPSERT) {
            let values = value_rows(chunk.len(), 6, 0);
            let sql = format!(
                "INSERT INTO usage_totals (holder, bucket, currency, cost_micros, requests, tokens) \
                 VALUES {values} ON CONFLICT (holder, bucket, currency) DO UPDATE SET \
                 cost_micros = usage_totals.cost_micros + excluded.cost_micros, \
                 requests = usage_totals.requests + excluded.requests, \
                 tokens = usage_totals.tokens + excluded.tokens"
            );
            let mut query = sqlx::query(&sql);
            for ((holder, bucket, currency), sum) in chunk {
                query = query
                    .bind(holder.as_str())
                    .bind(*bucket)
                    .bind(*currency)
                    .bind(sum.cost_micros)
                    .bind(sum.requests)
                    .bind(sum.tokens);
            }
            query.execute(&mut **tx).await?;
        }
        let holders: BTreeSet<String> = rows.into_iter().map(|((h, _, _), _)| h).collect();
        Self::mark_spend_dirty(tx, &holders.into_iter().collect::<Vec<_>>()).await
    }

    /// Marks holders for the next count. An update, not a no-op on conflict:
    /// it locks the mark until commit, so a count that takes the mark waits
    /// for this transaction's totals instead of missing them.
    pub(super) async fn mark_spend_dirty(tx: &mut Tx, holders: &[String]) -> Result<()> {
        for chunk in holders.chunks(ROWS_PER_UPSERT) {
            let values = value_rows(chunk.len(), 1, 0);
            let sql = format!(
                "INSERT INTO spend_dirty (holder) VALUES {values} \
                 ON CONFLICT (holder) DO UPDATE SET holder = excluded.holder"
            );
            let mut query = sqlx::query(&sql);
            for holder in chunk {
                query = query.bind(holder.as_str());
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// One count, by the leader: takes up to `HOLDERS_PER_COUNT` dirty
    /// holders, counts their spend from their totals at `now_ms`, and writes
    /// the rows that changed under a new revision. Answers those rows with
    /// their holders, and whether dirty holders remain.
    pub async fn count_spend(
        &self,
        fence: Fence,
        now_ms: i64,
    ) -> Result<(Vec<(Holder, SpendRow)>, bool)> {
        // The common case, nothing to count, writes nothing.
        let any: Option<String> = sqlx::query_scalar("SELECT holder FROM spend_dirty LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        if any.is_none() {
            return Ok((Vec::new(), false));
        }
        let mut tx = self.begin().await?;
        Self::check_fence(&mut tx, fence).await?;
        let dirty: Vec<String> =
            sqlx::query_scalar("SELECT holder FROM spend_dirty ORDER BY holder LIMIT $1")
                .bind(HOLDERS_PER_COUNT + 1)
                .fetch_all(&mut *tx)
                .await?;
        let more = dirty.len() as i64 > HOLDERS_PER_COUNT;
        let dirty = &dirty[..dirty.len().min(HOLDERS_PER_COUNT as usize)];
        if dirty.is_empty() {
            return Ok((Vec::new(), false));
        }
        for chunk in dirty.chunks(ROWS_PER_UPSERT) {
            let sql = format!(
                "DELETE FROM spend_dirty WHERE holder IN ({})",
                placeholders(chunk.len())
            );
            let mut delete = sqlx::query(&sql);
            for holder in chunk {
                delete = delete.bind(holder.as_str());
            }
            delete.execute(&mut *tx).await?;
        }
        let holders = Self::holders_named(&mut tx, dirty, "").await?;
        let names: Vec<String> = holders.iter().map(Holder::name).collect();
        let since = now_ms - now_ms.rem_euclid(DAY_MS) - 32 * DAY_MS;
        let mut totals: HashMap<String, Vec<TotalRow>> = HashMap::new();
        let mut current: HashMap<String, SpendRow> = HashMap::new();
        for chunk in names.chunks(ROWS_PER_UPSERT) {
            let list = placeholders(chunk.len());
            let sql = format!(
                "SELECT holder, bucket, currency, cost_micros, requests, tokens FROM usage_totals \
                 WHERE holder IN ({list}) AND (bucket = {ALL_TIME} OR bucket >= ${})",
                chunk.len() + 1
            );
            let mut query = sqlx::query_as::<_, TotalRow>(&sql);
            for name in chunk {
                query = query.bind(name.as_str());
            }
            for row in query.bind(since).fetch_all(&mut *tx).await? {
                totals.entry(row.holder.clone()).or_default().push(row);
            }
            let sql = format!(
                "SELECT holder, period_start, spent_micros, requests, tokens FROM spend \
                 WHERE holder IN ({list})"
            );
            let mut query = sqlx::query_as::<_, SpendRow>(&sql);
            for name in chunk {
                query = query.bind(name.as_str());
            }
            for row in query.fetch_all(&mut *tx).await? {
                current.insert(row.holder.clone(), row);
            }
        }
        let changed: Vec<(Holder, SpendRow)> = holders
            .into_iter()
            .map(|holder| {
                let row = holder.spend(
                    totals.get(&holder.name()).map_or(&[][..], Vec::as_slice),
                    now_ms,
                );
                (holder, row)
            })
            .filter(|(_, row)| current.get(&row.holder) != Some(row))
            .collect();
        if !changed.is_empty() {
            let revision: i64 = sqlx::query_scalar(
                "UPDATE spend_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
            )
            .fetch_one(&mut *tx)
            .await?;
            for chunk in changed.chunks(ROWS_PER_UPSERT) {
                let values = value_rows(chunk.len(), 5, 2);
                let sql = format!(
                    "INSERT INTO spend (holder, period_start, spent_micros, requests, tokens, updated_at, revision) \
                     VALUES {values} ON CONFLICT (holder) DO UPDATE SET period_start = excluded.period_start, \
                     spent_micros = excluded.spent_micros, requests = excluded.requests, \
                     tokens = excluded.tokens, updated_at = excluded.updated_at, revision = excluded.revision"
                );
                let mut query = sqlx::query(&sql).bind(now_ms).bind(revision);
                for (_, row) in chunk {
                    query = query
                        .bind(&row.holder)
                        .bind(row.period_start)
                        .bind(row.spent_micros)
                        .bind(row.requests)
                        .bind(row.tokens);
                }
                query.execute(&mut *tx).await?;
            }
            self.notify_on_commit(&mut tx, SPEND_CHANNEL, revision)
                .await?;
        }
        tx.commit().await?;
        Ok((changed, more))
    }

    /// A holder's totals computed afresh from its usage records, in the
    /// transaction that gives it a budget or quota: what was used before (or
    /// ingested while it was not counted) counts as the records say.
    pub(super) async fn recount_totals(tx: &mut Tx, kind: HolderKind, id: &str) -> Result<()> {
        let holder = kind.holder(id);
        let column = match kind {
            HolderKind::Key => "key_id",
            HolderKind::User => "user_id",
            HolderKind::Team => "team_id",
        };
        sqlx::query("DELETE FROM usage_totals WHERE holder = $1")
            .bind(&holder)
            .execute(&mut **tx)
            .await?;
        let counted = "cost_micros, CASE WHEN status < 400 THEN 1 ELSE 0 END AS ok, \
             CASE WHEN status < 400 THEN total_tokens ELSE 0 END AS ok_tokens";
        sqlx::query(&format!(
            "INSERT INTO usage_totals (holder, bucket, currency, cost_micros, requests, tokens) \
             SELECT $1, bucket, currency, SUM(cost_micros), SUM(ok), SUM(ok_tokens) FROM ( \
             SELECT created_at - (created_at % {DAY_MS}) AS bucket, currency, {counted} \
             FROM usage_records WHERE {column} = $2 \
             UNION ALL SELECT {ALL_TIME}, currency, {counted} FROM usage_records WHERE {column} = $2 \
             ) AS records GROUP BY bucket, currency"
        ))
        .bind(&holder)
        .bind(id)
        .execute(&mut **tx)
        .await?;
        Self::mark_spend_dirty(tx, &[holder]).await
    }

    /// The counted ones among holders named "key/<id>", ...; `lock` is
    /// appended to the reads (" FOR SHARE" on PostgreSQL, or nothing).
    async fn holders_named(tx: &mut Tx, names: &[String], lock: &str) -> Result<Vec<Holder>> {
        let mut holders = Vec::new();
        for kind in [HolderKind::Key, HolderKind::User, HolderKind::Team] {
            let prefix = format!("{}/", kind.as_str());
            let ids: Vec<&str> = names
                .iter()
                .filter_map(|name| name.strip_prefix(prefix.as_str()))
                .collect();
            let live = if kind == HolderKind::Key {
                "revoked_at IS NULL AND "
            } else {
                ""
            };
            for chunk in ids.chunks(ROWS_PER_UPSERT) {
                let sql = format!(
                    "SELECT id, limits, budget, models FROM {} WHERE {live}id IN ({}){lock}",
                    table(kind),
                    placeholders(chunk.len())
                );
                let mut query = sqlx::query_as::<_, (String, String, Option<String>, String)>(&sql);
                for id in chunk {
                    query = query.bind(*id);
                }
                holders.extend(
                    query
                        .fetch_all(&mut **tx)
                        .await?
                        .into_iter()
                        .map(|row| holder_of(kind, row))
                        .filter(Holder::counted),
                );
            }
        }
        Ok(holders)
    }

    /// Every key (not revoked), user and team with a budget or a quota.
    pub async fn holders(&self) -> Result<Vec<Holder>> {
        let mut holders = Vec::new();
        for kind in [HolderKind::Key, HolderKind::User, HolderKind::Team] {
            let live = if kind == HolderKind::Key {
                " AND revoked_at IS NULL"
            } else {
                ""
            };
            let rows: Vec<(String, String, Option<String>, String)> = sqlx::query_as(&format!(
                "SELECT id, limits, budget, models FROM {} \
                 WHERE (budget IS NOT NULL OR limits <> '{{}}'){live} ORDER BY id",
                table(kind)
            ))
            .fetch_all(&self.pool)
            .await?;
            holders.extend(
                rows.into_iter()
                    .map(|row| holder_of(kind, row))
                    .filter(Holder::counted),
            );
        }
        Ok(holders)
    }

    /// Spend rows written after `revision`, and the newest revision among
    /// them (`revision` itself when none).
    pub async fn spend_since(&self, revision: i64) -> Result<(i64, Vec<SpendRow>)> {
        let rows: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT holder, period_start, spent_micros, requests, tokens, revision FROM spend \
             WHERE revision > $1 ORDER BY revision",
        )
        .bind(revision)
        .fetch_all(&self.pool)
        .await?;
        let newest = rows.last().map_or(revision, |row| row.5);
        let rows = rows
            .into_iter()
            .map(
                |(holder, period_start, spent_micros, requests, tokens, _)| SpendRow {
                    holder,
                    period_start,
                    spent_micros,
                    requests,
                    tokens,
                },
            )
            .collect();
        Ok((newest, rows))
    }

    pub async fn spend_rows(&self) -> Result<Vec<SpendRow>> {
        Ok(sqlx::query_as(
            "SELECT holder, period_start, spent_micros, requests, tokens FROM spend ORDER BY holder",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    pub async fn spend_of(&self, holder: &str) -> Result<Option<SpendRow>> {
        Ok(sqlx::query_as(
            "SELECT holder, period_start, spent_micros, requests, tokens FROM spend WHERE holder = $1",
        )
        .bind(holder)
        .fetch_optional(&self.pool)
        .await?)
    }
}

/// The key, user and team a record counts for, as holder names.
fn holders_of(record: &UsageRecord) -> impl Iterator<Item = String> + '_ {
    [
        record
            .key_id
            .as_ref()
            .map(|id| HolderKind::Key.holder(id.as_str())),
        record
            .user_id
            .as_ref()
            .map(|id| HolderKind::User.holder(id.as_str())),
        record
            .team_id
            .as_ref()
            .map(|id| HolderKind::Team.holder(id.as_str())),
    ]
    .into_iter()
    .flatten()
}

fn holder_of(
    kind: HolderKind,
    (id, limits, budget, models): (String, String, Option<String>, String),
) -> Holder {
    Holder {
        kind,
        id,
        limits: limits_of(&limits),
        budget: budget_of(budget.as_deref()),
        models: super::string_list(&models),
    }
}
