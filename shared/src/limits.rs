//! What a key, user or team may use: rate limits, quotas and a budget. The
//! admin APIs take them; snapshots carry them; data planes enforce them.

use crate::money::{Currency, Micros};
use crate::proto;
use chrono::{DateTime, Datelike, Duration, NaiveDate, TimeZone, Utc};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Requests per minute, tokens per minute and per day; absent is unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RateLimits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpd: Option<u64>,
}

/// Rate limits, lifetime quotas, and rate limits per public model name.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpd: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tokens: Option<u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub models: BTreeMap<String, RateLimits>,
}

impl RateLimits {
    pub fn is_empty(&self) -> bool {
        self.rpm.is_none() && self.tpm.is_none() && self.tpd.is_none()
    }

    /// Zero is refused rather than read as "no limit" or "nothing".
    pub fn validate(&self, field: &str) -> Result<(), String> {
        for (name, value) in [("rpm", self.rpm), ("tpm", self.tpm), ("tpd", self.tpd)] {
            check_positive(field, name, value)?;
        }
        Ok(())
    }

    pub fn from_proto(p: Option<&proto::RateLimits>) -> Self {
        let some = |v: u64| (v > 0).then_some(v);
        p.map(|p| RateLimits {
            rpm: some(p.rpm),
            tpm: some(p.tpm),
            tpd: some(p.tpd),
        })
        .unwrap_or_default()
    }

    pub fn to_proto(&self) -> proto::RateLimits {
        proto::RateLimits {
            rpm: self.rpm.unwrap_or(0),
            tpm: self.tpm.unwrap_or(0),
            tpd: self.tpd.unwrap_or(0),
        }
    }
}

fn check_positive(field: &str, name: &str, value: Option<u64>) -> Result<(), String> {
    match value {
        Some(0) => Err(format!(
            "{field}{name}: must be at least 1 (leave it out for no limit)"
        )),
        Some(v) if v > i64::MAX as u64 => Err(format!("{field}{name}: too large")),
        _ => Ok(()),
    }
}

impl Limits {
    /// The holder's own rate limits (the per-model ones aside).
    pub fn rate(&self) -> RateLimits {
        RateLimits {
            rpm: self.rpm,
            tpm: self.tpm,
            tpd: self.tpd,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rate().is_empty()
            && self.max_requests.is_none()
            && self.max_tokens.is_none()
            && self.models.is_empty()
    }

    pub fn has_quota(&self) -> bool {
        self.max_requests.is_some() || self.max_tokens.is_some()
    }

    pub fn validate(&self) -> Result<(), String> {
        self.rate().validate("limits.")?;
        check_positive("limits.", "max_requests", self.max_requests)?;
        check_positive("limits.", "max_tokens", self.max_tokens)?;
        for (model, rate) in &self.models {
            if model.is_empty() || model.len() > 128 {
                return Err("limits.models: a model name is 1 to 128 characters".into());
            }
            if rate.is_empty() {
                return Err(format!("limits.models.{model}: set rpm, tpm or tpd"));
            }
            rate.validate(&format!("limits.models.{model}."))?;
        }
        Ok(())
    }

    /// The first limit set both here and in `ceiling` that is higher here.
    /// (One left unset here is bounded by the ceiling anyway: both apply.)
    pub fn exceeds(&self, ceiling: &Limits) -> Option<(&'static str, u64)> {
        let pairs = [
            ("rpm", self.rpm, ceiling.rpm),
            ("tpm", self.tpm, ceiling.tpm),
            ("tpd", self.tpd, ceiling.tpd),
            ("max_requests", self.max_requests, ceiling.max_requests),
            ("max_tokens", self.max_tokens, ceiling.max_tokens),
        ];
        pairs
            .into_iter()
            .find_map(|(name, mine, theirs)| match (mine, theirs) {
                (Some(mine), Some(theirs)) if mine > theirs => Some((name, theirs)),
                _ => None,
            })
    }

    pub fn from_proto(p: Option<&proto::Limits>) -> Self {
        let Some(p) = p else {
            return Limits::default();
        };
        let some = |v: u64| (v > 0).then_some(v);
        Limits {
            rpm: some(p.rpm),
            tpm: some(p.tpm),
            tpd: some(p.tpd),
            max_requests: some(p.max_requests),
            max_tokens: some(p.max_tokens),
            models: p
                .models
                .iter()
                .map(|(model, rate)| (model.clone(), RateLimits::from_proto(Some(rate))))
                .collect(),
        }
    }

    pub fn to_proto(&self) -> proto::Limits {
        proto::Limits {
            rpm: self.rpm.unwrap_or(0),
            tpm: self.tpm.unwrap_or(0),
            tpd: self.tpd.unwrap_or(0),
            max_requests: self.max_requests.unwrap_or(0),
            max_tokens: self.max_tokens.unwrap_or(0),
            models: self
                .models
                .iter()
                .map(|(model, rate)| (model.clone(), rate.to_proto()))
                .collect(),
        }
    }
}

/// When a budget starts afresh. Periods are calendar periods in UTC.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum BudgetPeriod {
    Daily,
    /// From Monday 00:00 UTC.
    Weekly,
    /// From the first of the month, 00:00 UTC.
    Monthly,
    /// Never: a lifetime allowance.
    #[default]
    None,
}

impl BudgetPeriod {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetPeriod::Daily => "daily",
            BudgetPeriod::Weekly => "weekly",
            BudgetPeriod::Monthly => "monthly",
            BudgetPeriod::None => "none",
        }
    }

    /// The start (Unix ms) of the period holding `now_ms`; 0 for `None`.
    pub fn start(self, now_ms: i64) -> i64 {
        let Some(now) = DateTime::<Utc>::from_timestamp_millis(now_ms) else {
            return 0;
        };
        let day = now.date_naive();
        let first = match self {
            BudgetPeriod::None => return 0,
            BudgetPeriod::Daily => day,
            BudgetPeriod::Weekly => {
                day - Duration::days(i64::from(day.weekday().num_days_from_monday()))
            }
            BudgetPeriod::Monthly => day.with_day(1).unwrap_or(day),
        };
        midnight_ms(first)
    }

    /// When the period holding `now_ms` ends (Unix ms); `None` never ends.
    pub fn end(self, now_ms: i64) -> Option<i64> {
        let start = DateTime::<Utc>::from_timestamp_millis(self.start(now_ms))?.date_naive();
        let next = match self {
            BudgetPeriod::None => return None,
            BudgetPeriod::Daily => start.succ_opt()?,
            BudgetPeriod::Weekly => start + Duration::days(7),
            BudgetPeriod::Monthly => start.checked_add_months(chrono::Months::new(1))?,
        };
        Some(midnight_ms(next))
    }
}

fn midnight_ms(day: NaiveDate) -> i64 {
    Utc.from_utc_datetime(&day.and_time(chrono::NaiveTime::MIN))
        .timestamp_millis()
}

impl FromStr for BudgetPeriod {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "daily" => Ok(BudgetPeriod::Daily),
            "weekly" => Ok(BudgetPeriod::Weekly),
            "monthly" => Ok(BudgetPeriod::Monthly),
            "" | "none" => Ok(BudgetPeriod::None),
            other => Err(format!(
                "budget.period: {other:?} is not a period; expected daily, weekly, monthly or none"
            )),
        }
    }
}

impl fmt::Display for BudgetPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

pub const DEFAULT_ALERT_THRESHOLD: f64 = 0.8;

fn default_alert_threshold() -> f64 {
    DEFAULT_ALERT_THRESHOLD
}

/// A money ceiling per period.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub amount: Micros,
    #[serde(default)]
    pub currency: Currency,
    #[serde(default)]
    pub period: BudgetPeriod,
    /// Share of the amount at which the alert webhook is called.
    #[serde(default = "default_alert_threshold")]
    pub alert_threshold: f64,
}

impl Budget {
    pub fn validate(&self) -> Result<(), String> {
        if self.amount.0 <= 0 {
            return Err("budget.amount: must be more than zero".into());
        }
        if !(self.alert_threshold > 0.0 && self.alert_threshold <= 1.0) {
            return Err("budget.alert_threshold: must be more than 0 and at most 1".into());
        }
        Ok(())
    }

    /// The amount at which the soft alert fires, in micro-units.
    pub fn alert_at(&self) -> Micros {
        // Rounded up: an alert at "80%" never fires below 80%.
        Micros((self.amount.0 as f64 * self.alert_threshold).ceil() as i64)
    }

    pub fn from_proto(p: &proto::Budget) -> Result<Self, String> {
        Ok(Budget {
            amount: Micros::parse(&p.amount, "budget.amount")?,
            currency: p.currency.parse()?,
            period: p.period.parse()?,
            alert_threshold: if p.alert_threshold == 0.0 {
                DEFAULT_ALERT_THRESHOLD
            } else {
                p.alert_threshold
            },
        })
    }

    pub fn to_proto(&self) -> proto::Budget {
        proto::Budget {
            amount: self.amount.to_string(),
            currency: self.currency.to_string(),
            period: self.period.to_string(),
            alert_threshold: self.alert_threshold,
        }
    }

    pub fn to_snapshot(&self) -> proto::SnapshotBudget {
        proto::SnapshotBudget {
            amount_micros: self.amount.0,
            currency: self.currency.to_string(),
            period: self.period.to_string(),
        }
    }
}

/// A budget as a data plane holds it (the alert is the control plane's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BudgetCeiling {
    pub amount: Micros,
    pub currency: Currency,
    pub period: BudgetPeriod,
}

impl BudgetCeiling {
    pub fn to_snapshot(&self) -> proto::SnapshotBudget {
        proto::SnapshotBudget {
            amount_micros: self.amount.0,
            currency: self.currency.to_string(),
            period: self.period.to_string(),
        }
    }

    pub fn from_snapshot(p: Option<&proto::SnapshotBudget>) -> Result<Option<Self>, String> {
        let Some(p) = p.filter(|p| p.amount_micros > 0) else {
            return Ok(None);
        };
        Ok(Some(BudgetCeiling {
            amount: Micros(p.amount_micros),
            currency: p.currency.parse()?,
            period: p.period.parse()?,
        }))
    }
}

/// Who a limit or budget belongs to, as counters and spend records name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HolderKind {
    Key,
    User,
    Team,
}

impl HolderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            HolderKind::Key => "key",
            HolderKind::User => "user",
            HolderKind::Team => "team",
        }
    }

    /// "key/<id>": how spend records and counters name a holder.
    pub fn holder(self, id: &str) -> String {
        format!("{}/{id}", self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::rfc3339_to_ms;

    fn at(text: &str) -> i64 {
        rfc3339_to_ms(text).expect("time")
    }

    #[test]
    fn periods_start_and_end_on_utc_calendar_boundaries() {
        // A Wednesday.
        let now = at("2026-11-25T13:14:15Z");
        assert_eq!(BudgetPeriod::Daily.start(now), at("2026-11-25T00:00:00Z"));
        assert_eq!(
            BudgetPeriod::Daily.end(now),
            Some(at("2026-11-26T00:00:00Z"))
        );
        assert_eq!(BudgetPeriod::Weekly.start(now), at("2026-11-23T00:00:00Z"));
        assert_eq!(
            BudgetPeriod::Weekly.end(now),
            Some(at("2026-11-30T00:00:00Z"))
        );
        assert_eq!(BudgetPeriod::Monthly.start(now), at("2026-11-01T00:00:00Z"));
        assert_eq!(
            BudgetPeriod::Monthly.end(now),
            Some(at("2026-12-01T00:00:00Z"))
        );
        assert_eq!(
            BudgetPeriod::Monthly.end(at("2026-12-31T23:59:59Z")),
            Some(at("2027-01-01T00:00:00Z"))
        );
        assert_eq!(BudgetPeriod::None.start(now), 0);
        assert_eq!(BudgetPeriod::None.end(now), None);
        // The last millisecond of a day is still that day.
        let last = at("2026-11-25T23:59:59.999Z");
        assert_eq!(BudgetPeriod::Daily.start(last), at("2026-11-25T00:00:00Z"));
    }

    #[test]
    fn budgets_and_limits_read_as_the_api_writes_them() {
        let budget: Budget = serde_json::from_str(
            r#"{"amount": "12.50", "currency": "CNY", "period": "monthly", "alert_threshold": 0.5}"#,
        )
        .expect("budget");
        assert_eq!(budget.amount, Micros(12_500_000));
        assert_eq!(budget.alert_at(), Micros(6_250_000));
        assert!(serde_json::from_str::<Budget>(r#"{"amount": 12.5}"#).is_err());
        let limits: Limits =
            serde_json::from_str(r#"{"rpm": 10, "max_tokens": 5, "models": {"m": {"tpm": 9}}}"#)
                .expect("limits");
        assert_eq!(limits.rpm, Some(10));
        assert_eq!(Limits::from_proto(Some(&limits.to_proto())), limits);
        assert!(serde_json::from_str::<Limits>(r#"{"rpn": 1}"#).is_err());
        let zero: Limits = serde_json::from_str(r#"{"tpm": 0}"#).expect("limits");
        assert!(zero.validate().expect_err("zero").starts_with("limits.tpm"));
        let team = Limits {
            rpm: Some(10),
            ..Limits::default()
        };
        let key = Limits {
            rpm: Some(11),
            ..Limits::default()
        };
        assert_eq!(key.exceeds(&team), Some(("rpm", 10)));
        assert_eq!(team.exceeds(&team), None);
        assert_eq!(Limits::default().exceeds(&team), None);
    }
}
