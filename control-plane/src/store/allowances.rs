//! Limits and budgets of keys, users and teams; prices; spend as last
//! counted from usage records; and the budget alerts sent.

use super::Store;
use crate::error::Result;
use crate::model::{Budget, Limits, PriceView};
use shared::limits::HolderKind;
use shared::money::{Currency, Micros};
use shared::time::ms_to_rfc3339;

pub fn limits_json(limits: &Limits) -> String {
    serde_json::to_string(limits).unwrap_or_else(|_| "{}".into())
}

/// Stored limits; a row the API wrote always reads back.
pub fn limits_of(json: &str) -> Limits {
    serde_json::from_str(json).unwrap_or_default()
}

pub fn budget_json(budget: Option<&Budget>) -> Option<String> {
    budget.and_then(|b| serde_json::to_string(b).ok())
}

pub fn budget_of(json: Option<&str>) -> Option<Budget> {
    json.and_then(|j| serde_json::from_str(j).ok())
}

fn table(kind: HolderKind) -> &'static str {
    match kind {
        HolderKind::Key => "api_keys",
        HolderKind::User => "users",
        HolderKind::Team => "teams",
    }
}

/// The usage column that names a holder of `kind`.
fn usage_column(kind: HolderKind) -> &'static str {
    match kind {
        HolderKind::Key => "key_id",
        HolderKind::User => "user_id",
        HolderKind::Team => "team_id",
    }
}

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
}

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SpendRow {
    pub holder: String,
    pub period_start: i64,
    pub spent_micros: i64,
    pub requests: i64,
    pub tokens: i64,
}

#[derive(sqlx::FromRow)]
struct PriceRecord {
    model: String,
    provider: String,
    input_micros: i64,
    output_micros: i64,
    cached_input_micros: i64,
    currency: String,
    updated_at: i64,
}

impl From<PriceRecord> for PriceView {
    fn from(r: PriceRecord) -> Self {
        PriceView {
            model: r.model,
            provider: (!r.provider.is_empty()).then_some(r.provider),
            input_per_million: Micros(r.input_micros),
            output_per_million: Micros(r.output_micros),
            cached_input_per_million: Micros(r.cached_input_micros),
            currency: r.currency.parse().unwrap_or_default(),
            updated_at: ms_to_rfc3339(r.updated_at),
        }
    }
}

/// An alert to record once per holder, period and kind.
pub struct NewAlert<'a> {
    pub holder: &'a str,
    pub period_start: i64,
    pub kind: &'a str,
    pub at: i64,
    pub spent: Micros,
    pub amount: Micros,
    pub currency: Currency,
}

impl Store {
    /// `false` when there is no such holder (or a key is revoked).
    pub async fn set_allowance(
        &self,
        kind: HolderKind,
        id: &str,
        limits: &Limits,
        budget: Option<&Budget>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let live = if kind == HolderKind::Key {
            " AND revoked_at IS NULL"
        } else {
            ""
        };
        let changed = sqlx::query(&format!(
            "UPDATE {} SET limits = $2, budget = $3 WHERE id = $1{live}",
            table(kind)
        ))
        .bind(id)
        .bind(limits_json(limits))
        .bind(budget_json(budget))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        Self::commit_config_change_if(tx, changed).await
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
                    .map(|(id, limits, budget, models)| Holder {
                        kind,
                        id,
                        limits: limits_of(&limits),
                        budget: budget_of(budget.as_deref()),
                        models: super::string_list(&models),
                    })
                    .filter(|h| h.budget.is_some() || h.limits.has_quota()),
            );
        }
        Ok(holders)
    }

    /// What a holder has used: cost in `currency` within the period
    /// `[start, end)`, successful requests and their tokens over all time
    /// when `lifetime` (else within the period too).
    pub async fn count_usage(
        &self,
        holder: &Holder,
        (period_start_ms, period_end_ms): (i64, i64),
        currency: Currency,
        lifetime: bool,
    ) -> Result<(i64, i64, i64)> {
        let column = usage_column(holder.kind);
        let since = if lifetime { 0 } else { period_start_ms };
        let row: (i64, i64, i64) = sqlx::query_as(&format!(
            "SELECT \
             CAST(COALESCE(SUM(CASE WHEN created_at >= $2 AND created_at < $5 AND currency = $3 \
             THEN cost_micros ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status < 400 THEN 1 ELSE 0 END), 0) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN status < 400 THEN total_tokens ELSE 0 END), 0) AS BIGINT) \
             FROM usage_records WHERE {column} = $1 AND created_at >= $4"
        ))
        .bind(&holder.id)
        .bind(period_start_ms)
        .bind(currency.as_str())
        .bind(since)
        .bind(period_end_ms)
        .fetch_one(&self.pool)
        .await?;
        Ok(row)
    }

    pub async fn spend_rows(&self) -> Result<Vec<SpendRow>> {
        Self::spend_in(&self.pool).await
    }

    pub(super) async fn spend_in<'e, E>(executor: E) -> Result<Vec<SpendRow>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        Ok(sqlx::query_as(
            "SELECT holder, period_start, spent_micros, requests, tokens FROM spend ORDER BY holder",
        )
        .fetch_all(executor)
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

    /// Replaces the spend table with `rows`. Spend ships in snapshots, so
    /// the version moves, but only when something changed.
    pub async fn write_spend(&self, rows: &[SpendRow], now_ms: i64) -> Result<bool> {
        let current = self.spend_rows().await?;
        if current == rows {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM spend").execute(&mut *tx).await?;
        for row in rows {
            sqlx::query(
                "INSERT INTO spend (holder, period_start, spent_micros, requests, tokens, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&row.holder)
            .bind(row.period_start)
            .bind(row.spent_micros)
            .bind(row.requests)
            .bind(row.tokens)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        Self::commit_config_change(tx).await?;
        Ok(true)
    }

    /// `true` when this alert is new for its holder, period and kind.
    pub async fn insert_alert(&self, alert: &NewAlert<'_>) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO budget_alerts (holder, period_start, kind, at, spent_micros, amount_micros, currency) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
        )
        .bind(alert.holder)
        .bind(alert.period_start)
        .bind(alert.kind)
        .bind(alert.at)
        .bind(alert.spent.0)
        .bind(alert.amount.0)
        .bind(alert.currency.as_str())
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn set_alert_outcome(
        &self,
        holder: &str,
        period_start: i64,
        kind: &str,
        outcome: &str,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE budget_alerts SET outcome = $4 WHERE holder = $1 AND period_start = $2 AND kind = $3",
        )
        .bind(holder)
        .bind(period_start)
        .bind(kind)
        .bind(outcome)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Upserts a price; `only_if_absent` leaves an existing one alone.
    pub async fn put_price(&self, price: &PriceView, at: i64, only_if_absent: bool) -> Result<()> {
        let mut tx = self.begin().await?;
        let conflict = if only_if_absent {
            "DO NOTHING"
        } else {
            "DO UPDATE SET input_micros = excluded.input_micros, output_micros = excluded.output_micros, \
             cached_input_micros = excluded.cached_input_micros, currency = excluded.currency, \
             updated_at = excluded.updated_at"
        };
        let changed = sqlx::query(&format!(
            "INSERT INTO prices (model, provider, input_micros, output_micros, cached_input_micros, currency, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (model, provider) {conflict}"
        ))
        .bind(&price.model)
        .bind(price.provider.as_deref().unwrap_or_default())
        .bind(price.input_per_million.0)
        .bind(price.output_per_million.0)
        .bind(price.cached_input_per_million.0)
        .bind(price.currency.as_str())
        .bind(at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        Self::commit_config_change_if(tx, changed).await?;
        Ok(())
    }

    pub async fn list_prices(&self) -> Result<Vec<PriceView>> {
        Self::prices_in(&self.pool).await
    }

    pub(super) async fn prices_in<'e, E>(executor: E) -> Result<Vec<PriceView>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let rows: Vec<PriceRecord> = sqlx::query_as(
            "SELECT model, provider, input_micros, output_micros, cached_input_micros, currency, updated_at \
             FROM prices ORDER BY model, provider",
        )
        .fetch_all(executor)
        .await?;
        Ok(rows.into_iter().map(PriceView::from).collect())
    }
}
