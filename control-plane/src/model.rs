//! The control plane's domain types: what the admin service takes and returns.
//! REST serialises them as JSON; gRPC converts them to and from proto at its edge.

use crate::access::Role;
use serde::{Deserialize, Serialize};
use shared::ids::{AdminId, KeyId, TeamId, UserId};
pub use shared::limits::{Budget, Limits, RateLimits};
use shared::money::{Currency, Micros};
use shared::provider_kind::ProviderKind;
use shared::routing::Strategy;
use std::collections::BTreeMap;
use std::fmt;
use utoipa::{IntoParams, ToSchema};

/// A credential given by an admin: write-only, never printed.
#[derive(Clone, Deserialize, ToSchema)]
#[schema(value_type = String, format = Password)]
#[serde(transparent)]
pub struct Credential(String);

impl Credential {
    pub fn new(value: String) -> Self {
        Self(value)
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    #[serde(default)]
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    /// On update, `None` keeps the stored credential.
    #[serde(default)]
    pub api_key: Option<Credential>,
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Baidu v1 Secret Key, Tencent SecretKey; on update `None` keeps the stored one.
    #[serde(default)]
    pub secret_key: Option<Credential>,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    pub has_api_key: bool,
    pub has_secret_key: bool,
    pub settings: BTreeMap<String, String>,
    pub created_at: String,
    pub updated_at: String,
}

fn default_weight() -> u32 {
    1
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTarget {
    pub provider: String,
    pub model: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Tier for the `priority` strategy; lower first.
    #[serde(default)]
    pub priority: u32,
    /// Requests and tokens per minute this target may be given; absent is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpm: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tpm: Option<u32>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Route {
    #[serde(default)]
    pub model: String,
    pub targets: Vec<RouteTarget>,
    // The rest is optional, with defaults (docs/routing.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub strategy: Strategy,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallbacks: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<RouteTimeouts>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub split: Vec<SplitVariant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_fallback: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_fallback: Option<String>,
    /// Limits on this model over every caller of the cluster.
    #[serde(default, skip_serializing_if = "RateLimits::is_empty")]
    pub limits: RateLimits,
    /// The response cache (docs/caching.md); absent: nothing is cached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<shared::cache::RouteCache>,
    /// Checks of requests and answers (docs/guardrails.md); absent: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<shared::guardrails::Guardrails>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    #[serde(default)]
    pub backoff_ms: u32,
}

/// Absent fields (or 0) take the data plane's defaults.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    #[serde(default)]
    pub connect_ms: u32,
    #[serde(default)]
    pub first_token_ms: u32,
    #[serde(default)]
    pub idle_ms: u32,
    #[serde(default)]
    pub total_ms: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SplitVariant {
    pub model: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTeam {
    pub name: String,
    /// Public model names the team's keys and users may call; empty means all.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub budget: Option<Budget>,
    /// Checks of the team's requests on every route (docs/guardrails.md).
    #[serde(default)]
    pub guardrails: Option<shared::guardrails::Guardrails>,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    pub models: Vec<String>,
    pub created_at: String,
    pub limits: Limits,
    pub budget: Option<Budget>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<shared::guardrails::Guardrails>,
    /// What the budget and quotas have used, as last counted; `null` when
    /// there is neither.
    pub spend: Option<Spend>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub team_id: Option<TeamId>,
    /// The identity provider's subject: how a JWT caller is matched to this user.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Public model names the user's keys and tokens may call; empty means all.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub budget: Option<Budget>,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub email: Option<String>,
    pub team_id: Option<TeamId>,
    pub external_id: Option<String>,
    pub models: Vec<String>,
    pub created_at: String,
    pub limits: Limits,
    pub budget: Option<Budget>,
    /// What the budget and quotas have used, as last counted; `null` when
    /// there is neither.
    pub spend: Option<Spend>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAdmin {
    pub name: String,
    pub role: Role,
    /// Required for a team admin, refused for the other roles.
    #[serde(default)]
    pub team_id: Option<TeamId>,
}

/// An admin principal: who may call the admin APIs, with which role.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct AdminPrincipal {
    pub id: AdminId,
    pub name: String,
    pub role: Role,
    pub team_id: Option<TeamId>,
    pub created_at: String,
}

/// `GET /whoami`: the caller of the admin API.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct Whoami {
    /// As the audit log names it.
    pub actor: String,
    pub role: Role,
    /// A team admin's team.
    pub team_id: Option<TeamId>,
}

/// A new admin principal with its token, shown only in this answer.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct CreatedAdmin {
    #[serde(flatten)]
    pub admin: AdminPrincipal,
    pub token: String,
}

/// Which claims name a token's user, team and models.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtClaims {
    /// Default `sub`; matched against users' `external_id`.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub team: Option<String>,
    #[serde(default)]
    pub models: Option<String>,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerSpec {
    /// From the path on update.
    #[serde(default)]
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    #[serde(default)]
    pub jwks_url: Option<String>,
    #[serde(default)]
    pub public_keys_pem: Vec<String>,
    #[serde(default)]
    pub claims: JwtClaims,
    #[serde(default)]
    pub auto_create_users: bool,
    #[serde(default)]
    pub leeway_seconds: Option<u32>,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct JwtIssuer {
    pub name: String,
    pub issuer: String,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub jwks_url: Option<String>,
    pub public_keys_pem: Vec<String>,
    pub claims: JwtClaims,
    pub auto_create_users: bool,
    pub leeway_seconds: u32,
    /// The `kid`s of the fetched keys the data planes verify with.
    pub key_ids: Vec<String>,
    pub jwks_fetched_at: Option<String>,
    /// Why the last fetch failed; the keys fetched before stay in use.
    pub jwks_error: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    #[serde(default)]
    pub user_id: Option<UserId>,
    #[serde(default)]
    pub team_id: Option<TeamId>,
    #[serde(default)]
    pub models: Vec<String>,
    /// RFC 3339.
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub budget: Option<Budget>,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct ApiKey {
    pub id: KeyId,
    pub name: String,
    pub prefix: String,
    pub user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
    pub models: Vec<String>,
    pub expires_at: Option<String>,
    pub revoked: bool,
    pub created_at: String,
    /// After a rotation: until when (RFC 3339) the previous secret still works.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_valid_until: Option<String>,
    pub limits: Limits,
    pub budget: Option<Budget>,
    /// What the budget and quotas have used, as last counted; `null` when
    /// there is neither.
    pub spend: Option<Spend>,
}

/// What a key, user or team has used, as the control plane last counted it.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct Spend {
    /// Of the budget, in the current period, in the budget's currency.
    pub spent: Micros,
    pub remaining: Option<Micros>,
    pub currency: Currency,
    pub period_start: Option<String>,
    pub resets_at: Option<String>,
    /// Over the holder's life, for quotas: successful requests and their tokens.
    pub requests: i64,
    pub tokens: i64,
    /// The budget or a quota is used up: requests are refused.
    pub exhausted: bool,
}

/// `PATCH` of a key, user or team: absent fields keep what is there; a
/// `null` budget removes it.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LimitsUpdate {
    #[serde(default)]
    pub limits: Option<Limits>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Budget>)]
    pub budget: Option<Option<Budget>>,
    /// A team's or user's public model names (empty: all); a key's are fixed
    /// when it is created.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// A team's only: its guardrails (`null` removes them).
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<shared::guardrails::Guardrails>)]
    pub guardrails: Option<Option<shared::guardrails::Guardrails>>,
}

impl LimitsUpdate {
    /// For users and keys: guardrails are set on routes and teams.
    pub fn refuse_guardrails(&self) -> crate::error::Result<()> {
        match self.guardrails {
            Some(_) => Err(crate::error::Error::invalid(
                "guardrails: only routes and teams have guardrails",
            )),
            None => Ok(()),
        }
    }

    /// The limits and budget left after this update of `limits` and `budget`.
    pub fn applied_to(self, limits: &Limits, budget: &Option<Budget>) -> (Limits, Option<Budget>) {
        (
            self.limits.unwrap_or_else(|| limits.clone()),
            self.budget.unwrap_or_else(|| budget.clone()),
        )
    }
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

/// `PUT /prices/{model}`: per million tokens of the upstream model.
#[derive(Clone, Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceSpec {
    /// From the path.
    #[serde(default)]
    pub model: String,
    /// Prices this provider's model apart from the model's general price.
    #[serde(default)]
    pub provider: Option<String>,
    pub input_per_million: Micros,
    pub output_per_million: Micros,
    /// Default: the input price.
    #[serde(default)]
    pub cached_input_per_million: Option<Micros>,
    /// Prompt tokens written to the provider's cache. Default: the input price.
    #[serde(default)]
    pub cache_write_per_million: Option<Micros>,
    #[serde(default)]
    pub currency: Currency,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct PriceView {
    pub model: String,
    pub provider: Option<String>,
    pub input_per_million: Micros,
    pub output_per_million: Micros,
    pub cached_input_per_million: Micros,
    pub cache_write_per_million: Micros,
    pub currency: Currency,
    pub updated_at: String,
}

/// A rotation: a new secret now, the old one valid for `grace_seconds` more.
#[derive(Clone, Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    /// Default one hour; 0 ends the old secret at once.
    #[serde(default)]
    pub grace_seconds: Option<u64>,
}

/// The only place a key's secret appears: the answer to its creation or rotation.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedKey {
    #[serde(flatten)]
    pub key: ApiKey,
    #[serde(rename = "key")]
    pub secret: String,
}

#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct UsageFilter {
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub model: Option<String>,
    pub provider: Option<String>,
    pub variant: Option<String>,
    /// Comma-separated: key, user, team, model, provider, variant, day, hour.
    pub group_by: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// RFC 3339, exclusive.
    pub until: Option<String>,
    /// Only records whose tokens a tokenizer counted (true) or the provider reported (false).
    pub estimated: Option<bool>,
    /// `GET /usage/records`: how many at most.
    pub limit: Option<u32>,
    /// Only the record of the request answered with this `x-request-id`.
    pub request_id: Option<String>,
    /// Only the records of requests in this W3C trace.
    pub trace_id: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq, ToSchema)]
pub struct UsageTotals {
    // Field order is the JSON's: counts, then money, then latency.
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub cached_tokens: i64,
    /// Of the prompt tokens, written to the provider's cache.
    pub cache_write_tokens: i64,
    /// Requests answered from the gateway's response cache.
    pub cache_hits: i64,
    pub reasoning_tokens: i64,
    /// Requests answered with a status of 400 or more.
    pub errors: i64,
    /// Requests whose tokens a tokenizer counted (the provider reported none).
    pub estimated: i64,
    /// Requests that had a try fail first (retried, or served by a fallback).
    pub retried: i64,
    /// In the ungrouped totals: requests refused before admission, by the
    /// error code they were answered with.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub refusals: BTreeMap<String, i64>,
    /// In a row: the row's cost, in its `currency`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Micros>,
    /// In the ungrouped totals: the cost per currency.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub costs: BTreeMap<String, Micros>,
    pub latency_ms_p50: i64,
    pub latency_ms_p99: i64,
    /// Of the streamed requests: time to first token (`null` when none streamed).
    pub ttft_ms_p50: Option<i64>,
    pub ttft_ms_p99: Option<i64>,
}

impl UsageTotals {
    /// Adds another group's counts (not its cost or latency).
    pub fn add(&mut self, other: &UsageTotals) {
        self.requests += other.requests;
        self.prompt_tokens += other.prompt_tokens;
        self.completion_tokens += other.completion_tokens;
        self.total_tokens += other.total_tokens;
        self.cached_tokens += other.cached_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.cache_hits += other.cache_hits;
        self.reasoning_tokens += other.reasoning_tokens;
        self.errors += other.errors;
        self.estimated += other.estimated;
        self.retried += other.retried;
    }
}

/// What usage can be grouped by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UsageGroup {
    Key,
    User,
    Team,
    Model,
    Provider,
    Variant,
    Day,
    Hour,
}

impl UsageGroup {
    const ALL: [UsageGroup; 8] = [
        UsageGroup::Key,
        UsageGroup::User,
        UsageGroup::Team,
        UsageGroup::Model,
        UsageGroup::Provider,
        UsageGroup::Variant,
        UsageGroup::Day,
        UsageGroup::Hour,
    ];

    /// As written in `group_by`.
    pub fn as_str(self) -> &'static str {
        match self {
            UsageGroup::Key => "key",
            UsageGroup::User => "user",
            UsageGroup::Team => "team",
            UsageGroup::Model => "model",
            UsageGroup::Provider => "provider",
            UsageGroup::Variant => "variant",
            UsageGroup::Day => "day",
            UsageGroup::Hour => "hour",
        }
    }

    /// The field of an answer's row.
    pub fn name(self) -> &'static str {
        match self {
            UsageGroup::Key => "key_id",
            UsageGroup::User => "user_id",
            UsageGroup::Team => "team_id",
            other => other.as_str(),
        }
    }

    /// The SQL expression grouped on; fixed text, never from input.
    pub fn column(self) -> &'static str {
        match self {
            UsageGroup::Key => "key_id",
            UsageGroup::User => "user_id",
            UsageGroup::Team => "team_id",
            UsageGroup::Model => "model",
            UsageGroup::Provider => "provider",
            UsageGroup::Variant => "variant",
            UsageGroup::Day => "(created_at / 86400000)",
            UsageGroup::Hour => "(created_at / 3600000)",
        }
    }

    pub fn is_time(self) -> bool {
        matches!(self, UsageGroup::Day | UsageGroup::Hour)
    }

    /// A time bucket as the RFC 3339 time it starts at.
    pub fn label(self, bucket: i64) -> String {
        let ms = match self {
            UsageGroup::Day => bucket * 86_400_000,
            _ => bucket * 3_600_000,
        };
        shared::time::ms_to_rfc3339(ms)
    }

    pub fn parse_list(text: &str) -> Result<Vec<UsageGroup>, String> {
        let mut groups = Vec::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let group = Self::ALL.into_iter().find(|g| g.as_str() == name).ok_or_else(|| {
                format!("group_by: {name:?} is not a grouping; expected key, user, team, model, provider, variant, day or hour")
            })?;
            if !groups.contains(&group) {
                groups.push(group);
            }
        }
        Ok(groups)
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, ToSchema)]
pub struct UsageRow {
    /// The grouped fields; `null` where records have none (no user, no variant).
    #[serde(flatten)]
    pub group: BTreeMap<String, Option<String>>,
    #[serde(flatten)]
    pub totals: UsageTotals,
}

/// One request's usage record, as `GET /usage/records` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct UsageRecordView {
    pub id: String,
    pub created_at: String,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub model: String,
    pub provider: String,
    pub upstream_model: String,
    pub endpoint: String,
    pub status: u16,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    pub latency_ms: i64,
    pub streamed: bool,
    pub variant: Option<String>,
    pub cost: Micros,
    pub currency: String,
    pub estimated: bool,
    /// Every try that failed, oldest first.
    pub failed_attempts: Vec<shared::usage::FailedAttempt>,
    /// The `x-request-id` the request was answered with.
    pub request_id: Option<String>,
    /// The W3C trace id of the request's trace.
    pub trace_id: Option<String>,
    /// A stream's time to first token, in ms from arrival.
    pub ttft_ms: Option<i64>,
    /// Of the prompt tokens, read from the provider's cache.
    pub cached_tokens: i64,
    /// Of the prompt tokens, written to the provider's cache.
    pub cache_write_tokens: i64,
    /// Answered from the response cache (tokens are the cached answer's).
    pub cache_hit: bool,
    /// Of a cache hit: what its tokens cost when the provider answered.
    pub cost_saved: Micros,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct UsageRecords {
    pub records: Vec<UsageRecordView>,
}

/// `GET /usage`: totals, or rows when grouped.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
#[serde(untagged)]
pub enum UsageAnswer {
    Totals(UsageTotals),
    Report { rows: Vec<UsageRow> },
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct DataPlane {
    pub id: String,
    pub hostname: String,
    pub software_version: String,
    pub applied_version: i64,
    pub last_error: String,
    pub last_seen: String,
    pub connected: bool,
    /// The control-plane replica its config stream was last opened on.
    pub control_plane: String,
    /// Upstream targets whose circuit breaker is open on it, as it last
    /// reported (every 15 s, and on a change).
    pub open_breakers: Vec<OpenBreaker>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, ToSchema)]
pub struct OpenBreaker {
    pub provider: String,
    /// The upstream model.
    pub model: String,
}

/// `GET /cluster`: who serves what, as the database has it.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct Cluster {
    pub config_version: i64,
    pub leader: Option<ClusterLeader>,
    pub control_planes: Vec<ControlPlane>,
    pub data_planes: Vec<DataPlane>,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct ClusterLeader {
    pub id: String,
    pub since: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct ControlPlane {
    pub id: String,
    pub address: String,
    pub is_leader: bool,
    pub last_seen: String,
    pub started_at: String,
}

#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct DataPlanes {
    pub current_version: i64,
    pub data_planes: Vec<DataPlane>,
}

/// One admin write, as `GET /audit` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct AuditEntry {
    pub id: String,
    pub at: String,
    pub actor: String,
    /// `provider.create`, `key.rotate`, ...
    pub action: String,
    /// `provider/openai`, `key/<id>`, ...
    pub resource: String,
    pub request_id: String,
    /// The resource as the admin API showed it before and after; never a secret.
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
}

/// `GET /audit`.
#[derive(Clone, Debug, Serialize, PartialEq, ToSchema)]
pub struct AuditLog {
    pub rows: Vec<AuditEntry>,
}

#[derive(Clone, Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct AuditFilter {
    pub resource: Option<String>,
    pub actor: Option<String>,
    /// RFC 3339, inclusive.
    pub since: Option<String>,
    /// Most entries answered (default 100, at most 1000).
    pub limit: Option<i64>,
}
