//! The response cache's settings: a route's `cache` object, as admins write
//! it and data planes apply it, and the purge generations every cache key
//! carries (docs/caching.md).

use crate::proto;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// Whose requests share cached answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CacheScope {
    /// The caller's team (a caller without one: its key or JWT subject).
    #[default]
    Team,
    /// The calling key (or JWT subject) alone.
    Key,
    /// Every caller of the route.
    Global,
}

impl CacheScope {
    pub fn as_str(self) -> &'static str {
        match self {
            CacheScope::Team => "team",
            CacheScope::Key => "key",
            CacheScope::Global => "global",
        }
    }
}

impl fmt::Display for CacheScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CacheScope {
    type Err = String;

    /// The empty string is the default, as proto3 sends an unset field.
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "" | "team" => Ok(CacheScope::Team),
            "key" => Ok(CacheScope::Key),
            "global" => Ok(CacheScope::Global),
            other => Err(format!(
                "cache.scope: {other:?} is not a scope; expected one of: team, key, global"
            )),
        }
    }
}

pub const DEFAULT_MAX_ENTRY_BYTES: u64 = 1 << 20;
const MAX_ENTRY_BYTES: u64 = 64 << 20;
const MAX_TTL_SECONDS: u32 = 30 * 24 * 3600;

fn default_max_entry_bytes() -> u64 {
    DEFAULT_MAX_ENTRY_BYTES
}

/// A route's response cache; a route without one caches nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RouteCache {
    /// How long an answer is served from the cache (1 s to 30 days).
    pub ttl_seconds: u32,
    #[serde(default)]
    pub scope: CacheScope,
    /// Larger answers are not stored (default 1 MiB, at most 64 MiB).
    #[serde(default = "default_max_entry_bytes")]
    pub max_entry_bytes: u64,
    /// Whether answers to sampled requests (`temperature` above 0, or unset,
    /// which providers read as 1) are cached too.
    #[serde(default)]
    pub nondeterministic: bool,
    /// Whether a hit's tokens and cost count against limits and budgets as
    /// if the provider had answered; requests always count.
    #[serde(default)]
    pub bill_hits: bool,
}

impl RouteCache {
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_TTL_SECONDS).contains(&self.ttl_seconds) {
            return Err(format!(
                "cache.ttl_seconds: must be between 1 and {MAX_TTL_SECONDS}"
            ));
        }
        if !(1..=MAX_ENTRY_BYTES).contains(&self.max_entry_bytes) {
            return Err(format!(
                "cache.max_entry_bytes: must be between 1 and {MAX_ENTRY_BYTES}"
            ));
        }
        Ok(())
    }

    pub fn from_proto(p: &proto::RouteCache) -> Result<Self, String> {
        let cache = RouteCache {
            ttl_seconds: p.ttl_seconds,
            scope: p.scope.parse()?,
            max_entry_bytes: match p.max_entry_bytes {
                0 => DEFAULT_MAX_ENTRY_BYTES,
                n => n,
            },
            nondeterministic: p.nondeterministic,
            bill_hits: p.bill_hits,
        };
        cache.validate()?;
        Ok(cache)
    }

    pub fn to_proto(&self) -> proto::RouteCache {
        proto::RouteCache {
            ttl_seconds: self.ttl_seconds,
            scope: self.scope.as_str().to_owned(),
            max_entry_bytes: self.max_entry_bytes,
            nondeterministic: self.nondeterministic,
            bill_hits: self.bill_hits,
        }
    }
}

/// Purge generations: part of every cache key, so moving one on (a purge)
/// leaves what was cached under the old one unread until it expires.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(default, deny_unknown_fields)]
pub struct CachePurges {
    pub everything: u64,
    /// By route (public model name).
    pub routes: BTreeMap<String, u64>,
    /// By team id.
    pub teams: BTreeMap<String, u64>,
}

impl CachePurges {
    pub fn route(&self, model: &str) -> u64 {
        self.routes.get(model).copied().unwrap_or(0)
    }

    pub fn team(&self, team: &str) -> u64 {
        self.teams.get(team).copied().unwrap_or(0)
    }

    pub fn from_proto(p: Option<&proto::CachePurges>) -> Self {
        p.map(|p| CachePurges {
            everything: p.everything,
            routes: p.routes.clone().into_iter().collect(),
            teams: p.teams.clone().into_iter().collect(),
        })
        .unwrap_or_default()
    }

    pub fn to_proto(&self) -> proto::CachePurges {
        proto::CachePurges {
            everything: self.everything,
            routes: self.routes.clone().into_iter().collect(),
            teams: self.teams.clone().into_iter().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_proto_form_with_defaults_and_names_bad_fields() {
        let cache = RouteCache::from_proto(&proto::RouteCache {
            ttl_seconds: 60,
            ..Default::default()
        })
        .expect("valid");
        assert_eq!(cache.scope, CacheScope::Team);
        assert_eq!(cache.max_entry_bytes, DEFAULT_MAX_ENTRY_BYTES);
        assert_eq!(RouteCache::from_proto(&cache.to_proto()), Ok(cache));
        let error = RouteCache::from_proto(&proto::RouteCache::default()).expect_err("ttl 0");
        assert!(error.starts_with("cache.ttl_seconds"), "{error}");
        let error = RouteCache::from_proto(&proto::RouteCache {
            ttl_seconds: 1,
            scope: "world".into(),
            ..Default::default()
        })
        .expect_err("bad scope");
        assert!(error.starts_with("cache.scope"), "{error}");
    }
}
