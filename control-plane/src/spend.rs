//! Spend from usage, the source of truth: counted by the leader for the
//! keys, users and teams with a budget or quota whose usage (or allowance)
//! changed since the last count, from totals that ingestion keeps (so the
//! work follows traffic, not the number of keys); written to the spend table,
//! whose changes every replica passes on to its data planes as counters
//! (which never count less); and checked against budgets' alert thresholds.

use crate::error::{Error, Result};
use crate::snapshot::Refresher;
use crate::store::{Fence, Holder, NewAlert, NewAuditEntry, SpendRow, Store};
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

/// The leader's job: counts the spend of holders whose usage or allowance
/// changed, and sends budget alerts.
pub struct SpendCounter {
    pub store: Store,
    pub webhook: Option<AlertWebhook>,
    /// This replica's counter feed, woken when a count changed something.
    pub counted: Refresher,
}

impl SpendCounter {
    /// Counts every `spend_interval_ms` (a cluster setting) until `stop`, or
    /// until its fence is taken by a newer leader.
    pub async fn run(self, fence: Fence, stop: CancellationToken) {
        loop {
            match self.count(fence, now_ms()).await {
                Ok(0) => {}
                Ok(_) => self.counted.refresh_now(),
                Err(Error::Fenced) => {
                    tracing::warn!("spend counting stopped: another control plane leads now");
                    return;
                }
                Err(error) => {
                    error.log_if_internal();
                    tracing::warn!(%error, "counting spend failed; data planes keep the last count");
                }
            }
            let interval = match self.store.settings().await {
                Ok(settings) => settings.spend_interval(),
                Err(_) => Duration::from_secs(1),
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Counts every holder marked since the last count, at `now_ms` (the
    /// clock is the caller's, so tests can move it); answers how many
    /// holders' spend changed.
    pub async fn count(&self, fence: Fence, now_ms: i64) -> Result<usize> {
        let started = std::time::Instant::now();
        let mut changed = 0;
        loop {
            let (rows, more) = self.store.count_spend(fence, now_ms).await?;
            for (holder, row) in &rows {
                self.alert(holder, row, now_ms).await?;
            }
            changed += rows.len();
            if !more {
                break;
            }
        }
        metrics::histogram!("switchboard_spend_count_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::counter!("switchboard_spend_holders_counted_total").increment(changed as u64);
        Ok(changed)
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
            failed_attempts: Vec::new(),
            request_id: None,
            trace_id: None,
            ttft_ms: None,
            cache_hit: false,
            cost_saved: Micros::ZERO,
        }
    }

    /// The clock is the caller's: a daily budget starts afresh at midnight
    /// UTC, and each alert is recorded once per period.
    async fn spend_rows(store: &Store) -> Vec<(String, i64, i64)> {
        store
            .spend_rows()
            .await
            .expect("rows")
            .into_iter()
            .map(|r| (r.holder, r.period_start, r.spent_micros))
            .collect()
    }

    #[tokio::test]
    async fn daily_spend_resets_at_midnight_and_alerts_once_per_period() {
        for store in crate::store::testing::stores().await {
            daily_spend_resets_at_midnight_and_alerts_once_per_period_on(store).await;
        }
    }

    async fn daily_spend_resets_at_midnight_and_alerts_once_per_period_on(store: Store) {
        let team = Team {
            id: TeamId::generate(),
            name: "t".into(),
            models: Vec::new(),
            created_at: String::new(),
            limits: Limits::default(),
            guardrails: None,
            budget: Some(Budget {
                amount: Micros(10_000_000),
                currency: Currency::Usd,
                period: BudgetPeriod::Daily,
                alert_threshold: 0.5,
            }),
            spend: None,
        };
        store
            .insert_team(&crate::service::write::grant::Grant::for_tests(), &team, 0)
            .await
            .expect("team");
        let records = [
            record(&team.id, at("2026-11-25T10:00:00Z"), 4_000_000),
            record(&team.id, at("2026-11-25T23:59:59.999Z"), 2_000_000),
            record(&team.id, at("2026-11-26T00:00:00Z"), 1_000_000),
        ];
        store.insert_usage("dp", &records).await.expect("usage");
        let fence = store.take_leadership("test").await.expect("leader");
        let counter = SpendCounter {
            store: store.clone(),
            webhook: None,
            counted: Refresher::default(),
        };
        let holder = format!("team/{}", team.id.as_str());
        let spent = |rows: Vec<SpendRow>| {
            let row = rows
                .into_iter()
                .find(|r| r.holder == holder)
                .expect("counted");
            (row.period_start, row.spent_micros)
        };
        let alerts = |audit: Vec<crate::model::AuditEntry>| {
            audit
                .into_iter()
                .filter(|e| e.resource == holder)
                .map(|e| e.action)
                .collect::<Vec<_>>()
        };
        let filter = AuditFilter::default();

        // Day one's records only: the one of the next day is not in its period.
        let changed = counter
            .count(fence, at("2026-11-25T23:59:59.999Z"))
            .await
            .expect("count");
        assert_eq!(changed, 1);
        let day_one = at("2026-11-25T00:00:00Z");
        assert_eq!(
            spend_rows(&store).await,
            vec![(holder.clone(), day_one, 6_000_000)]
        );
        assert_eq!(
            spent(store.spend_rows().await.expect("rows")),
            (day_one, 6_000_000)
        );
        // Counted again with nothing new: nothing is read, nothing alerts twice.
        for _ in 0..3 {
            let changed = counter
                .count(fence, at("2026-11-25T23:59:59.999Z"))
                .await
                .expect("count");
            assert_eq!(changed, 0);
        }
        let audit = store.list_audit(&filter, None, 100).await.expect("audit");
        assert_eq!(alerts(audit), ["budget.threshold"]);

        // Traffic in day two: its period holds day two's records only, and a
        // new period is a new alert once its spend crosses the threshold.
        store
            .insert_usage(
                "dp",
                &[record(&team.id, at("2026-11-26T01:00:00Z"), 5_000_000)],
            )
            .await
            .expect("usage");
        counter
            .count(fence, at("2026-11-26T02:00:00Z"))
            .await
            .expect("count");
        let day_two = at("2026-11-26T00:00:00Z");
        assert_eq!(
            spent(store.spend_rows().await.expect("rows")),
            (day_two, 6_000_000)
        );
        let audit = store.list_audit(&filter, None, 100).await.expect("audit");
        assert_eq!(alerts(audit), ["budget.threshold", "budget.threshold"]);

        // A record sent twice is counted once.
        store
            .insert_usage("dp", &[records[0].clone()])
            .await
            .expect("usage");
        assert_eq!(
            counter
                .count(fence, at("2026-11-26T02:00:00Z"))
                .await
                .expect("count"),
            0
        );

        // A newer leader's token fences this one out.
        let newer = store.take_leadership("other").await.expect("leader");
        store
            .insert_usage(
                "dp",
                &[record(&team.id, at("2026-11-26T01:30:00Z"), 1_000_000)],
            )
            .await
            .expect("usage");
        assert!(matches!(
            counter.count(fence, at("2026-11-26T02:00:00Z")).await,
            Err(Error::Fenced)
        ));
        counter
            .count(newer, at("2026-11-26T02:00:00Z"))
            .await
            .expect("count");
        assert_eq!(
            spent(store.spend_rows().await.expect("rows")),
            (day_two, 7_000_000)
        );
    }
}
