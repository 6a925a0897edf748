//! Proto <-> domain conversions for the admin service: the only place the two meet.

use crate::error::Error;
use crate::model::{self, Credential};
use crate::settings::{ClusterSettings, SettingsUpdate};
use shared::proto as pb;

fn opt(value: String) -> Option<String> {
    (!value.is_empty()).then_some(value)
}

impl TryFrom<pb::ProviderSpec> for model::ProviderSpec {
    type Error = Error;

    fn try_from(p: pb::ProviderSpec) -> Result<Self, Error> {
        Ok(model::ProviderSpec {
            kind: p
                .kind
                .parse()
                .map_err(|e| Error::invalid(format!("kind: {e}")))?,
            name: p.name,
            base_url: p.base_url,
            api_key: p.api_key.map(Credential::new),
            secret_key: p.secret_key.map(Credential::new),
            settings: p.settings.into_iter().collect(),
        })
    }
}

impl From<model::Provider> for pb::Provider {
    fn from(p: model::Provider) -> Self {
        pb::Provider {
            name: p.name,
            kind: p.kind.to_string(),
            base_url: p.base_url,
            has_api_key: p.has_api_key,
            has_secret_key: p.has_secret_key,
            settings: p.settings.into_iter().collect(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

impl TryFrom<pb::Route> for model::Route {
    type Error = Error;

    fn try_from(r: pb::Route) -> Result<Self, Error> {
        let present = |s: String| (!s.is_empty()).then_some(s);
        let positive = |n: u32| (n > 0).then_some(n);
        Ok(model::Route {
            model: r.model,
            targets: r
                .targets
                .into_iter()
                .map(|t| model::RouteTarget {
                    provider: t.provider,
                    model: t.model,
                    // proto3 cannot tell an absent weight from 0; absent means 1.
                    weight: t.weight.max(1),
                    priority: t.priority,
                    rpm: positive(t.rpm),
                    tpm: positive(t.tpm),
                })
                .collect(),
            aliases: r.aliases,
            strategy: r.strategy.parse().map_err(Error::invalid)?,
            fallbacks: r.fallbacks,
            retry: r.retry.map(|p| model::RetryPolicy {
                max_attempts: p.max_attempts,
                backoff_ms: p.backoff_ms,
            }),
            timeouts: r.timeouts.map(|t| model::RouteTimeouts {
                connect_ms: t.connect_ms,
                first_token_ms: t.first_token_ms,
                idle_ms: t.idle_ms,
                total_ms: t.total_ms,
            }),
            split: r
                .split
                .into_iter()
                .map(|v| model::SplitVariant {
                    model: v.model,
                    weight: v.weight.max(1),
                })
                .collect(),
            context_fallback: present(r.context_fallback),
            content_fallback: present(r.content_fallback),
            limits: model::RateLimits::from_proto(r.limits.as_ref()),
            cache: r
                .cache
                .as_ref()
                .map(shared::cache::RouteCache::from_proto)
                .transpose()
                .map_err(Error::invalid)?,
            guardrails: r
                .guardrails
                .as_ref()
                .map(shared::guardrails::Guardrails::from_proto)
                .transpose()
                .map_err(Error::invalid)?,
        })
    }
}

/// Also what snapshots carry: data planes read the admin API's own form.
impl From<model::Route> for pb::Route {
    fn from(r: model::Route) -> Self {
        pb::Route {
            model: r.model,
            targets: r
                .targets
                .into_iter()
                .map(|t| pb::RouteTarget {
                    provider: t.provider,
                    model: t.model,
                    weight: t.weight,
                    priority: t.priority,
                    rpm: t.rpm.unwrap_or(0),
                    tpm: t.tpm.unwrap_or(0),
                })
                .collect(),
            aliases: r.aliases,
            strategy: r.strategy.as_str().to_owned(),
            fallbacks: r.fallbacks,
            retry: r.retry.map(|p| pb::RetryPolicy {
                max_attempts: p.max_attempts,
                backoff_ms: p.backoff_ms,
            }),
            timeouts: r.timeouts.map(|t| pb::RouteTimeouts {
                connect_ms: t.connect_ms,
                first_token_ms: t.first_token_ms,
                idle_ms: t.idle_ms,
                total_ms: t.total_ms,
            }),
            split: r
                .split
                .into_iter()
                .map(|v| pb::SplitVariant {
                    model: v.model,
                    weight: v.weight,
                })
                .collect(),
            context_fallback: r.context_fallback.unwrap_or_default(),
            content_fallback: r.content_fallback.unwrap_or_default(),
            limits: (!r.limits.is_empty()).then(|| r.limits.to_proto()),
            cache: r.cache.as_ref().map(shared::cache::RouteCache::to_proto),
            guardrails: r
                .guardrails
                .as_ref()
                .map(shared::guardrails::Guardrails::to_proto),
        }
    }
}

/// A budget as the API takes it; unset is none.
pub fn budget(b: Option<pb::Budget>) -> Result<Option<model::Budget>, Error> {
    b.map(|b| model::Budget::from_proto(&b))
        .transpose()
        .map_err(Error::invalid)
}

fn spend(s: model::Spend) -> pb::Spend {
    pb::Spend {
        spent: s.spent.to_string(),
        remaining: s.remaining.map(|r| r.to_string()).unwrap_or_default(),
        currency: s.currency.to_string(),
        period_start: s.period_start.unwrap_or_default(),
        resets_at: s.resets_at.unwrap_or_default(),
        requests: s.requests,
        tokens: s.tokens,
        exhausted: s.exhausted,
    }
}

impl TryFrom<pb::CreateTeamRequest> for model::NewTeam {
    type Error = Error;

    fn try_from(t: pb::CreateTeamRequest) -> Result<Self, Error> {
        Ok(model::NewTeam {
            name: t.name,
            models: t.models,
            limits: model::Limits::from_proto(t.limits.as_ref()),
            budget: budget(t.budget)?,
            guardrails: t
                .guardrails
                .as_ref()
                .map(shared::guardrails::Guardrails::from_proto)
                .transpose()
                .map_err(Error::invalid)?,
        })
    }
}

impl From<model::Team> for pb::Team {
    fn from(t: model::Team) -> Self {
        pb::Team {
            id: t.id.into_string(),
            name: t.name,
            created_at: t.created_at,
            models: t.models,
            limits: Some(t.limits.to_proto()),
            budget: t.budget.as_ref().map(model::Budget::to_proto),
            spend: t.spend.map(spend),
            guardrails: t
                .guardrails
                .as_ref()
                .map(shared::guardrails::Guardrails::to_proto),
        }
    }
}

impl TryFrom<pb::CreateUserRequest> for model::NewUser {
    type Error = Error;

    fn try_from(u: pb::CreateUserRequest) -> Result<Self, Error> {
        Ok(model::NewUser {
            name: u.name,
            email: opt(u.email),
            team_id: opt(u.team_id).map(Into::into),
            external_id: opt(u.external_id),
            models: u.models,
            limits: model::Limits::from_proto(u.limits.as_ref()),
            budget: budget(u.budget)?,
        })
    }
}

impl TryFrom<pb::UpdateLimitsRequest> for model::LimitsUpdate {
    type Error = Error;

    fn try_from(u: pb::UpdateLimitsRequest) -> Result<Self, Error> {
        let budget = if u.clear_budget {
            Some(None)
        } else {
            budget(u.budget)?.map(Some)
        };
        let guardrails = if u.clear_guardrails {
            Some(None)
        } else {
            u.guardrails
                .as_ref()
                .map(shared::guardrails::Guardrails::from_proto)
                .transpose()
                .map_err(Error::invalid)?
                .map(Some)
        };
        Ok(model::LimitsUpdate {
            guardrails,
            models: None,
            limits: u
                .limits
                .as_ref()
                .map(|l| model::Limits::from_proto(Some(l))),
            budget,
        })
    }
}

impl TryFrom<pb::PriceSpec> for model::PriceSpec {
    type Error = Error;

    fn try_from(p: pb::PriceSpec) -> Result<Self, Error> {
        let money = |text: &str, field: &str| {
            shared::money::Micros::parse(text, field).map_err(Error::invalid)
        };
        Ok(model::PriceSpec {
            input_per_million: money(&p.input_per_million, "input_per_million")?,
            output_per_million: money(&p.output_per_million, "output_per_million")?,
            cached_input_per_million: opt(p.cached_input_per_million)
                .map(|c| money(&c, "cached_input_per_million"))
                .transpose()?,
            cache_write_per_million: opt(p.cache_write_per_million)
                .map(|c| money(&c, "cache_write_per_million"))
                .transpose()?,
            currency: p.currency.parse().map_err(Error::invalid)?,
            model: p.model,
            provider: opt(p.provider),
        })
    }
}

impl From<model::PriceView> for pb::Price {
    fn from(p: model::PriceView) -> Self {
        pb::Price {
            model: p.model,
            provider: p.provider.unwrap_or_default(),
            input_per_million: p.input_per_million.to_string(),
            output_per_million: p.output_per_million.to_string(),
            cached_input_per_million: p.cached_input_per_million.to_string(),
            cache_write_per_million: p.cache_write_per_million.to_string(),
            currency: p.currency.to_string(),
            updated_at: p.updated_at,
        }
    }
}

impl From<model::User> for pb::User {
    fn from(u: model::User) -> Self {
        pb::User {
            id: u.id.into_string(),
            name: u.name,
            email: u.email.unwrap_or_default(),
            team_id: u.team_id.map(|t| t.into_string()).unwrap_or_default(),
            created_at: u.created_at,
            external_id: u.external_id.unwrap_or_default(),
            models: u.models,
            limits: Some(u.limits.to_proto()),
            budget: u.budget.as_ref().map(model::Budget::to_proto),
            spend: u.spend.map(spend),
        }
    }
}

impl From<pb::JwtClaims> for model::JwtClaims {
    fn from(c: pb::JwtClaims) -> Self {
        model::JwtClaims {
            user: opt(c.user),
            team: opt(c.team),
            models: opt(c.models),
        }
    }
}

impl From<pb::JwtIssuerSpec> for model::JwtIssuerSpec {
    fn from(i: pb::JwtIssuerSpec) -> Self {
        model::JwtIssuerSpec {
            name: i.name,
            issuer: i.issuer,
            audiences: i.audiences,
            algorithms: i.algorithms,
            jwks_url: opt(i.jwks_url),
            public_keys_pem: i.public_keys_pem,
            claims: i.claims.map(Into::into).unwrap_or_default(),
            auto_create_users: i.auto_create_users,
            // Zero is proto3's "unset".
            leeway_seconds: (i.leeway_seconds > 0).then_some(i.leeway_seconds),
        }
    }
}

impl From<model::JwtIssuer> for pb::JwtIssuer {
    fn from(i: model::JwtIssuer) -> Self {
        pb::JwtIssuer {
            name: i.name,
            issuer: i.issuer,
            audiences: i.audiences,
            algorithms: i.algorithms,
            jwks_url: i.jwks_url.unwrap_or_default(),
            public_keys_pem: i.public_keys_pem,
            claims: Some(pb::JwtClaims {
                user: i.claims.user.unwrap_or_default(),
                team: i.claims.team.unwrap_or_default(),
                models: i.claims.models.unwrap_or_default(),
            }),
            auto_create_users: i.auto_create_users,
            leeway_seconds: i.leeway_seconds,
            key_ids: i.key_ids,
            jwks_fetched_at: i.jwks_fetched_at.unwrap_or_default(),
            jwks_error: i.jwks_error.unwrap_or_default(),
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

impl TryFrom<pb::CreateKeyRequest> for model::NewKey {
    type Error = Error;

    fn try_from(k: pb::CreateKeyRequest) -> Result<Self, Error> {
        Ok(model::NewKey {
            name: k.name,
            user_id: opt(k.user_id).map(Into::into),
            team_id: opt(k.team_id).map(Into::into),
            models: k.models,
            expires_at: opt(k.expires_at),
            limits: model::Limits::from_proto(k.limits.as_ref()),
            budget: budget(k.budget)?,
        })
    }
}

impl From<model::ApiKey> for pb::ApiKey {
    fn from(k: model::ApiKey) -> Self {
        pb::ApiKey {
            id: k.id.into_string(),
            name: k.name,
            prefix: k.prefix,
            user_id: k.user_id.map(|u| u.into_string()).unwrap_or_default(),
            team_id: k.team_id.map(|t| t.into_string()).unwrap_or_default(),
            models: k.models,
            expires_at: k.expires_at.unwrap_or_default(),
            revoked: k.revoked,
            created_at: k.created_at,
            previous_valid_until: k.previous_valid_until.unwrap_or_default(),
            limits: Some(k.limits.to_proto()),
            budget: k.budget.as_ref().map(model::Budget::to_proto),
            spend: k.spend.map(spend),
        }
    }
}

impl From<model::CreatedKey> for pb::CreatedKey {
    fn from(created: model::CreatedKey) -> Self {
        pb::CreatedKey {
            key: Some(created.key.into()),
            secret: created.secret,
        }
    }
}

impl From<pb::UsageQuery> for model::UsageFilter {
    fn from(q: pb::UsageQuery) -> Self {
        model::UsageFilter {
            key_id: opt(q.key_id),
            user_id: opt(q.user_id),
            team_id: opt(q.team_id),
            model: opt(q.model),
            since: opt(q.since),
            until: opt(q.until),
            provider: opt(q.provider),
            variant: opt(q.variant),
            group_by: opt(q.group_by),
            estimated: q.estimated,
            limit: (q.limit > 0).then_some(q.limit),
            request_id: opt(q.request_id),
            trace_id: opt(q.trace_id),
        }
    }
}

impl From<model::UsageTotals> for pb::UsageTotals {
    fn from(t: model::UsageTotals) -> Self {
        pb::UsageTotals {
            requests: t.requests,
            prompt_tokens: t.prompt_tokens,
            completion_tokens: t.completion_tokens,
            total_tokens: t.total_tokens,
            cached_tokens: t.cached_tokens,
            cache_write_tokens: t.cache_write_tokens,
            cache_hits: t.cache_hits,
            reasoning_tokens: t.reasoning_tokens,
            errors: t.errors,
            rows: Vec::new(),
            cost: t.cost.map(|c| c.to_string()).unwrap_or_default(),
            currency: t.currency.unwrap_or_default(),
            costs: t
                .costs
                .into_iter()
                .map(|(currency, cost)| (currency, cost.to_string()))
                .collect(),
            latency_ms_p50: t.latency_ms_p50,
            latency_ms_p99: t.latency_ms_p99,
            ttft_ms_p50: t.ttft_ms_p50.unwrap_or(0),
            ttft_ms_p99: t.ttft_ms_p99.unwrap_or(0),
            estimated: t.estimated,
            retried: t.retried,
            refusals: t.refusals.into_iter().collect(),
        }
    }
}

impl From<model::UsageRecords> for pb::UsageRecordList {
    fn from(list: model::UsageRecords) -> Self {
        let text = |value: Option<String>| value.unwrap_or_default();
        pb::UsageRecordList {
            records: list
                .records
                .into_iter()
                .map(|r| pb::UsageRecordView {
                    id: r.id,
                    created_at: r.created_at,
                    key_id: text(r.key_id),
                    user_id: text(r.user_id),
                    team_id: text(r.team_id),
                    model: r.model,
                    provider: r.provider,
                    upstream_model: r.upstream_model,
                    endpoint: r.endpoint,
                    status: u32::from(r.status),
                    prompt_tokens: r.prompt_tokens,
                    completion_tokens: r.completion_tokens,
                    total_tokens: r.total_tokens,
                    latency_ms: r.latency_ms,
                    streamed: r.streamed,
                    variant: text(r.variant),
                    cost: r.cost.to_string(),
                    currency: r.currency,
                    estimated: r.estimated,
                    failed_attempts: r.failed_attempts.into_iter().map(Into::into).collect(),
                    request_id: text(r.request_id),
                    trace_id: text(r.trace_id),
                    ttft_ms: r.ttft_ms,
                    cached_tokens: r.cached_tokens,
                    cache_write_tokens: r.cache_write_tokens,
                    cache_hit: r.cache_hit,
                    cost_saved: r.cost_saved.to_string(),
                })
                .collect(),
        }
    }
}

impl From<model::UsageAnswer> for pb::UsageTotals {
    fn from(answer: model::UsageAnswer) -> Self {
        match answer {
            model::UsageAnswer::Totals(totals) => totals.into(),
            model::UsageAnswer::Report { rows } => pb::UsageTotals {
                rows: rows
                    .into_iter()
                    .map(|row| pb::UsageRow {
                        group: row
                            .group
                            .into_iter()
                            .filter_map(|(k, v)| v.map(|v| (k, v)))
                            .collect(),
                        totals: Some(row.totals.into()),
                    })
                    .collect(),
                ..Default::default()
            },
        }
    }
}

impl From<model::DataPlanes> for pb::ListDataPlanesResponse {
    fn from(d: model::DataPlanes) -> Self {
        pb::ListDataPlanesResponse {
            current_version: d.current_version,
            data_planes: d
                .data_planes
                .into_iter()
                .map(|p| pb::DataPlane {
                    id: p.id,
                    hostname: p.hostname,
                    applied_version: p.applied_version,
                    last_error: p.last_error,
                    last_seen: p.last_seen,
                    connected: p.connected,
                    software_version: p.software_version,
                    control_plane: p.control_plane,
                    open_breakers: p
                        .open_breakers
                        .into_iter()
                        .map(|b| format!("{}/{}", b.provider, b.model))
                        .collect(),
                })
                .collect(),
        }
    }
}

impl From<model::Cluster> for pb::Cluster {
    fn from(c: model::Cluster) -> Self {
        let planes = pb::ListDataPlanesResponse::from(model::DataPlanes {
            current_version: c.config_version,
            data_planes: c.data_planes,
        });
        pb::Cluster {
            config_version: c.config_version,
            leader: c.leader.map(|l| pb::ClusterLeader {
                id: l.id,
                since: l.since,
            }),
            control_planes: c
                .control_planes
                .into_iter()
                .map(|p| pb::ControlPlane {
                    id: p.id,
                    address: p.address,
                    is_leader: p.is_leader,
                    last_seen: p.last_seen,
                    started_at: p.started_at,
                })
                .collect(),
            data_planes: planes.data_planes,
        }
    }
}

impl From<ClusterSettings> for pb::Settings {
    fn from(s: ClusterSettings) -> Self {
        pb::Settings {
            global_limits: Some(s.global_limits.to_proto()),
            spend_interval_ms: s.spend_interval_ms,
            config_history_hours: s.config_history_hours,
            cache_purges: Some(s.cache_purges.to_proto()),
        }
    }
}

impl From<pb::UpdateSettingsRequest> for SettingsUpdate {
    fn from(u: pb::UpdateSettingsRequest) -> Self {
        SettingsUpdate {
            global_limits: u
                .global_limits
                .map(|l| shared::limits::RateLimits::from_proto(Some(&l))),
            spend_interval_ms: u.spend_interval_ms,
            config_history_hours: u.config_history_hours,
        }
    }
}

impl TryFrom<pb::CreateAdminRequest> for model::NewAdmin {
    type Error = crate::error::Error;

    fn try_from(a: pb::CreateAdminRequest) -> Result<Self, Self::Error> {
        let role = crate::access::Role::parse(&a.role).ok_or_else(|| {
            crate::error::Error::invalid(format!(
                "role: {:?} is not one of admin, team_admin, viewer",
                a.role
            ))
        })?;
        Ok(model::NewAdmin {
            name: a.name,
            role,
            team_id: opt(a.team_id).map(Into::into),
        })
    }
}

impl From<model::AdminPrincipal> for pb::AdminPrincipal {
    fn from(a: model::AdminPrincipal) -> Self {
        pb::AdminPrincipal {
            id: a.id.into_string(),
            name: a.name,
            role: a.role.as_str().to_owned(),
            team_id: a.team_id.map(|t| t.into_string()).unwrap_or_default(),
            created_at: a.created_at,
        }
    }
}

impl From<model::CreatedAdmin> for pb::CreatedAdmin {
    fn from(c: model::CreatedAdmin) -> Self {
        pb::CreatedAdmin {
            admin: Some(c.admin.into()),
            token: c.token,
        }
    }
}
