//! Limits and budgets of keys, users and teams; prices; spend as last
//! counted from usage records; and the budget alerts sent.

use super::changes::{Change, EntityKind};
use super::Store;
use crate::error::Result;
use crate::model::{Budget, Limits, PriceView};
use crate::service::write::grant::Grant;
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

pub(super) fn table(kind: HolderKind) -> &'static str {
    match kind {
        HolderKind::Key => "api_keys",
        HolderKind::User => "users",
        HolderKind::Team => "teams",
    }
}

#[derive(sqlx::FromRow)]
struct PriceRecord {
    model: String,
    provider: String,
    input_micros: i64,
    output_micros: i64,
    cached_input_micros: i64,
    cache_write_input_micros: i64,
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
            cache_write_per_million: Micros(r.cache_write_input_micros),
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
        _: &Grant,
        kind: HolderKind,
        id: &str,
        limits: &Limits,
        budget: Option<&Budget>,
        models: Option<&[String]>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let live = if kind == HolderKind::Key {
            " AND revoked_at IS NULL"
        } else {
            ""
        };
        // Absent models stay as they are.
        let changed = sqlx::query(&format!(
            "UPDATE {} SET limits = $2, budget = $3, models = COALESCE($4, models) WHERE id = $1{live}",
            table(kind)
        ))
        .bind(id)
        .bind(limits_json(limits))
        .bind(budget_json(budget))
        .bind(models.map(super::sql::string_list_json))
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if changed && (budget.is_some() || limits.has_quota()) {
            // Counted from now on, from its records: what was used before counts.
            Self::recount_totals(&mut tx, kind, id).await?;
        }
        let change = Change::new(EntityKind::of_holder(kind), id);
        self.commit_config_change_if(tx, changed, &[change]).await
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

    /// Upserts prices in one config version; `only_if_absent` leaves
    /// existing ones alone. Answers how many were written.
    pub async fn put_prices(
        &self,
        _: &Grant,
        prices: &[PriceView],
        at: i64,
        only_if_absent: bool,
    ) -> Result<usize> {
        let mut tx = self.begin().await?;
        let conflict = if only_if_absent {
            "DO NOTHING"
        } else {
            "DO UPDATE SET input_micros = excluded.input_micros, output_micros = excluded.output_micros, \
             cached_input_micros = excluded.cached_input_micros, \
             cache_write_input_micros = excluded.cache_write_input_micros, currency = excluded.currency, \
             updated_at = excluded.updated_at"
        };
        let sql = format!(
            "INSERT INTO prices (model, provider, input_micros, output_micros, cached_input_micros, currency, updated_at, cache_write_input_micros) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (model, provider) {conflict}"
        );
        let mut changes = Vec::new();
        for price in prices {
            let written = sqlx::query(&sql)
                .bind(&price.model)
                .bind(price.provider.as_deref().unwrap_or_default())
                .bind(price.input_per_million.0)
                .bind(price.output_per_million.0)
                .bind(price.cached_input_per_million.0)
                .bind(price.currency.as_str())
                .bind(at)
                .bind(price.cache_write_per_million.0)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            if written {
                changes.push(Change::price(&price.model, price.provider.as_deref()));
            }
        }
        self.commit_config_change_if(tx, !changes.is_empty(), &changes)
            .await?;
        Ok(changes.len())
    }

    pub async fn list_prices(&self) -> Result<Vec<PriceView>> {
        Self::prices_in(&self.pool).await
    }

    pub(super) async fn prices_in<'e, E>(executor: E) -> Result<Vec<PriceView>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        let rows: Vec<PriceRecord> = sqlx::query_as(
            "SELECT model, provider, input_micros, output_micros, cached_input_micros, cache_write_input_micros, currency, updated_at \
             FROM prices ORDER BY model, provider",
        )
        .fetch_all(executor)
        .await?;
        Ok(rows.into_iter().map(PriceView::from).collect())
    }
}
