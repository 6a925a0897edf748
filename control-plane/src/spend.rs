//! Spend from usage records, the source of truth: counted every interval for
//! every key, user and team with a budget or quota, written where snapshots
//! carry it to data planes (which never count less), and checked against
//! budgets' alert thresholds.

use crate::error::Result;
use crate::store::{Holder, NewAlert, NewAuditEntry, SpendRow, Store};
use bytes::Bytes;
use http_body_util::Full;
use shared::money::Micros;
use shared::time::{ms_to_rfc3339, now_ms};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Where budget alerts are posted.
#[derive(Clone)]
pub struct AlertWebhook {
    url: hyper::Uri,
    client: crate::outbound::Outbound<Full<Bytes>>,
}

impl AlertWebhook {
    pub fn new(url: &str) -> std::result::Result<Self, String> {
        let uri: hyper::Uri = url
            .parse()
            .map_err(|_| format!("budget_alert_webhook: {url:?} is not a URL"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err("budget_alert_webhook: expected an http:// or https:// URL".into());
        }
        Ok(AlertWebhook {
            url: uri,
            client: crate::outbound::client(),
        })
    }

    /// "delivered", or why not.
    async fn post(&self, body: &serde_json::Value) -> String {
        let request = hyper::Request::post(self.url.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())));
        let Ok(request) = request else {
            return "could not build the request".into();
        };
        match tokio::time::timeout(WEBHOOK_TIMEOUT, self.client.request(request)).await {
            Ok(Ok(response)) if response.status().is_success() => "delivered".into(),
            Ok(Ok(response)) => format!("answered {}", response.status().as_u16()),
            Ok(Err(error)) => format!("failed: {error}"),
            Err(_) => "timed out".into(),
        }
    }
}

pub struct SpendCounter {
    pub store: Store,
    pub refresher: crate::snapshot::Refresher,
    pub interval: Duration,
    pub webhook: Option<AlertWebhook>,
}

impl SpendCounter {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if let Err(error) = self.count_once(now_ms()).await {
                error.log_if_internal();
                tracing::warn!(%error, "counting spend failed; data planes keep the last count");
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
        }
    }

    /// One count at `now_ms` (the clock is the caller's, so tests can move it).
    pub async fn count_once(&self, now_ms: i64) -> Result<()> {
        let holders = self.store.holders().await?;
        let mut rows = Vec::with_capacity(holders.len());
        for holder in &holders {
            let row = count(&self.store, holder, now_ms).await?;
            self.alert(holder, &row, now_ms).await?;
            rows.push(row);
        }
        // In the table's order, so an unchanged count compares equal.
        rows.sort_by(|a, b| a.holder.cmp(&b.holder));
        if self.store.write_spend(&rows, now_ms).await? {
            self.refresher.refresh_now();
        }
        Ok(())
    }

    /// Soft threshold, then exhaustion: each recorded (and posted) once per
    /// holder and period, however many control planes count.
    async fn alert(&self, holder: &Holder, row: &SpendRow, now_ms: i64) -> Result<()> {
        let Some(budget) = &holder.budget else {
            return Ok(());
        };
        let spent = Micros(row.spent_micros);
        let name = holder.name();
        for (kind, reached) in [
            ("threshold", spent >= budget.alert_at()),
            ("exhausted", spent >= budget.amount),
        ] {
            if !reached {
                continue;
            }
            let alert = NewAlert {
                holder: &name,
                period_start: row.period_start,
                kind,
                at: now_ms,
                spent,
                amount: budget.amount,
                currency: budget.currency,
            };
            if !self.store.insert_alert(&alert).await? {
                continue;
            }
            metrics::counter!("switchboard_budget_alerts_total", "kind" => kind).increment(1);
            let body = serde_json::json!({
                "type": format!("budget.{kind}"),
                "holder": name,
                "spent": spent,
                "amount": budget.amount,
                "currency": budget.currency,
                "alert_threshold": budget.alert_threshold,
                "period": budget.period,
                "period_start": (row.period_start > 0).then(|| ms_to_rfc3339(row.period_start)),
                "at": ms_to_rfc3339(now_ms),
            });
            let outcome = match &self.webhook {
                Some(webhook) => webhook.post(&body).await,
                None => "no webhook configured".into(),
            };
            if outcome != "delivered" {
                tracing::warn!(holder = %name, kind, %outcome, "budget alert not delivered");
            }
            self.store
                .set_alert_outcome(&name, row.period_start, kind, &outcome)
                .await?;
            let after = serde_json::json!({"alert": body, "webhook": outcome}).to_string();
            let entry = NewAuditEntry {
                at_ms: now_ms,
                actor: "system",
                action: &format!("budget.{kind}"),
                resource: &name,
                request_id: "",
                before: None,
                after: Some(after),
            };
            self.store.insert_audit(&entry).await?;
        }
        Ok(())
    }
}

/// A holder's spend in its budget's current period, and its lifetime counts.
pub async fn count(store: &Store, holder: &Holder, now_ms: i64) -> Result<SpendRow> {
    let period = holder.budget.as_ref().map(|b| b.period);
    let period_start = period.map_or(0, |p| p.start(now_ms));
    let period_end = period.and_then(|p| p.end(now_ms)).unwrap_or(i64::MAX);
    let currency = holder
        .budget
        .as_ref()
        .map(|b| b.currency)
        .unwrap_or_default();
    let (spent_micros, requests, tokens) = store
        .count_usage(
            holder,
            (period_start, period_end),
            currency,
            holder.limits.has_quota(),
        )
        .await?;
    Ok(SpendRow {
        holder: holder.name(),
        period_start,
        spent_micros,
        requests,
        tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuditFilter, Budget, Limits, Team};
    use shared::ids::{TeamId, UsageRecordId};
    use shared::limits::BudgetPeriod;
    use shared::money::Currency;
    use shared::time::rfc3339_to_ms;
    use shared::usage::{TokenUsage, UsageRecord};

    fn at(text: &str) -> i64 {
        rfc3339_to_ms(text).expect("time")
    }

    fn record(team: &TeamId, created_at_ms: i64, cost: i64) -> UsageRecord {
        UsageRecord {
            id: UsageRecordId::generate(),
            key_id: Some("k".to_owned().into()),
            jwt: None,
            user_id: None,
            team_id: Some(team.clone()),
            model: "m".into(),
            provider: "p".into(),
            upstream_model: "u".into(),
            endpoint: "chat.completions".into(),
            tokens: TokenUsage::new(1, 1),
            latency_ms: 1,
            status: 200,
            streamed: false,
            created_at_ms,
            variant: None,
            cost: Micros(cost),
            currency: Currency::Usd,
            estimated: false,
        }
    }

    /// The clock is the caller's: a daily budget starts afresh at midnight
    /// UTC, and each alert is recorded once per period.
    #[tokio::test]
    async fn daily_spend_resets_at_midnight_and_alerts_once_per_period() {
        let dir = std::env::temp_dir().join(format!("sb-spend-{}", UsageRecordId::generate()));
        let url = format!("sqlite://{}/cp.db", dir.display());
        let store = Store::connect(&url, 2).await.expect("store");
        let team = Team {
            id: TeamId::generate(),
            name: "t".into(),
            models: Vec::new(),
            created_at: String::new(),
            limits: Limits::default(),
            budget: Some(Budget {
                amount: Micros(10_000_000),
                currency: Currency::Usd,
                period: BudgetPeriod::Daily,
                alert_threshold: 0.5,
            }),
            spend: None,
        };
        store.insert_team(&team, 0).await.expect("team");
        let records = [
            record(&team.id, at("2026-11-25T10:00:00Z"), 4_000_000),
            record(&team.id, at("2026-11-25T23:59:59.999Z"), 2_000_000),
            record(&team.id, at("2026-11-26T00:00:00Z"), 1_000_000),
        ];
        store.insert_usage("dp", &records).await.expect("usage");
        let counter = SpendCounter {
            store: store.clone(),
            refresher: crate::snapshot::Refresher::default(),
            interval: Duration::from_secs(1),
            webhook: None,
        };
        let holder = format!("team/{}", team.id.as_str());
        let spent = |rows: Vec<SpendRow>| {
            let row = rows
                .into_iter()
                .find(|r| r.holder == holder)
                .expect("counted");
            (row.period_start, row.spent_micros)
        };

        counter
            .count_once(at("2026-11-25T23:59:59.999Z"))
            .await
            .expect("count");
        let day_one = at("2026-11-25T00:00:00Z");
        assert_eq!(
            spent(store.spend_rows().await.expect("rows")),
            (day_one, 6_000_000)
        );
        counter
            .count_once(at("2026-11-26T00:00:00.001Z"))
            .await
            .expect("count");
        let day_two = at("2026-11-26T00:00:00Z");
        assert_eq!(
            spent(store.spend_rows().await.expect("rows")),
            (day_two, 1_000_000)
        );

        // Counted again and again in day one: one threshold alert, no exhaustion.
        for _ in 0..3 {
            counter
                .count_once(at("2026-11-25T23:00:00Z"))
                .await
                .expect("count");
        }
        let alerts = |audit: Vec<crate::model::AuditEntry>| {
            audit
                .into_iter()
                .filter(|e| e.resource == holder)
                .map(|e| e.action)
                .collect::<Vec<_>>()
        };
        let filter = AuditFilter::default();
        let audit = store.list_audit(&filter, None, 100).await.expect("audit");
        assert_eq!(alerts(audit), ["budget.threshold"]);
        // A new period is a new alert once its spend crosses the threshold.
        store
            .insert_usage(
                "dp",
                &[record(&team.id, at("2026-11-26T01:00:00Z"), 5_000_000)],
            )
            .await
            .expect("usage");
        counter
            .count_once(at("2026-11-26T02:00:00Z"))
            .await
            .expect("count");
        counter
            .count_once(at("2026-11-26T03:00:00Z"))
            .await
            .expect("count");
        let audit = store.list_audit(&filter, None, 100).await.expect("audit");
        assert_eq!(alerts(audit), ["budget.threshold", "budget.threshold"]);
        let _ = std::fs::remove_dir_all(dir);
    }
}
