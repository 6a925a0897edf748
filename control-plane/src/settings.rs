//! Settings every control-plane replica and data plane must apply alike:
//! kept in the database and changed through the admin API (audited), never
//! per replica. Flags only seed them on an empty database.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use shared::cache::CachePurges;
use shared::limits::RateLimits;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Limits over every caller of the cluster (all data planes together
    /// when they share Redis).
    pub global_limits: RateLimits,
    /// How often the leader counts spend from the usage ingested since the
    /// last count; an exhausted budget reaches every data plane within about
    /// this (each replica passes a count on as soon as it is written).
    pub spend_interval_ms: u64,
    /// How long the config change log is kept: a data plane further behind
    /// than this gets a full snapshot instead of a delta.
    pub config_history_hours: u64,
    /// Response-cache purge generations: moved on by `POST /cache/purge`,
    /// never set directly.
    pub cache_purges: CachePurges,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        ClusterSettings {
            global_limits: RateLimits::default(),
            spend_interval_ms: 250,
            config_history_hours: 168,
            cache_purges: CachePurges::default(),
        }
    }
}

/// A partial update: what is absent stays.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsUpdate {
    pub global_limits: Option<RateLimits>,
    pub spend_interval_ms: Option<u64>,
    pub config_history_hours: Option<u64>,
}

impl ClusterSettings {
    pub fn validate(&self) -> Result<()> {
        self.global_limits
            .validate("global_limits.")
            .map_err(Error::invalid)?;
        if !(100..=3_600_000).contains(&self.spend_interval_ms) {
            return Err(Error::invalid(
                "spend_interval_ms: must be between 100 and 3600000",
            ));
        }
        if !(1..=8_760).contains(&self.config_history_hours) {
            return Err(Error::invalid(
                "config_history_hours: must be between 1 and 8760",
            ));
        }
        Ok(())
    }

    pub fn updated(&self, update: SettingsUpdate) -> Self {
        ClusterSettings {
            global_limits: update
                .global_limits
                .unwrap_or_else(|| self.global_limits.clone()),
            spend_interval_ms: update.spend_interval_ms.unwrap_or(self.spend_interval_ms),
            config_history_hours: update
                .config_history_hours
                .unwrap_or(self.config_history_hours),
            cache_purges: self.cache_purges.clone(),
        }
    }

    pub fn spend_interval(&self) -> Duration {
        Duration::from_millis(self.spend_interval_ms)
    }

    pub fn config_history(&self) -> Duration {
        Duration::from_secs(self.config_history_hours * 3_600)
    }

    /// What data planes apply.
    pub fn to_proto(&self) -> shared::proto::ClusterSettings {
        shared::proto::ClusterSettings {
            global_limits: Some(self.global_limits.to_proto()),
            cache_purges: Some(self.cache_purges.to_proto()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_keep_what_is_absent_and_validation_names_the_field() {
        let base = ClusterSettings::default();
        let update: SettingsUpdate =
            serde_json::from_str(r#"{"global_limits": {"rpm": 10}}"#).expect("update");
        let next = base.updated(update);
        assert_eq!(next.global_limits.rpm, Some(10));
        assert_eq!(next.spend_interval_ms, base.spend_interval_ms);
        let bad = ClusterSettings {
            spend_interval_ms: 1,
            ..next.clone()
        };
        assert!(bad
            .validate()
            .expect_err("invalid")
            .to_string()
            .contains("spend_interval_ms"));
        let bad = ClusterSettings {
            global_limits: RateLimits {
                rpm: Some(0),
                ..RateLimits::default()
            },
            ..next
        };
        assert!(bad
            .validate()
            .expect_err("invalid")
            .to_string()
            .contains("global_limits.rpm"));
        assert!(serde_json::from_str::<SettingsUpdate>(r#"{"nope": 1}"#).is_err());
    }
}
