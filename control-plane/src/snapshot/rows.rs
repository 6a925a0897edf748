//! Stored rows as data planes receive them, shared by full snapshots and
//! deltas so both say the same thing of the same row. Credentials are
//! decrypted here: they reach data planes only through the config stream.

use crate::error::{Error, Result};
use crate::model::PriceView;
use crate::store::{budget_of, limits_of, string_list, JwtIssuerRow, KeyRow, ProviderRow};
use crate::store::{TeamRow, UserRow};
use shared::crypto::Cipher;
use shared::limits::Budget;
use shared::proto;

pub fn provider(p: ProviderRow, cipher: &Cipher) -> Result<proto::SnapshotProvider> {
    let decrypt = |sealed: &Option<String>| {
        match sealed {
        Some(sealed) => cipher.decrypt_string(sealed).map_err(|_| {
            Error::Internal(format!(
                "credential of provider {:?} cannot be decrypted: is --secret-key the one it was stored with?",
                p.name
            ))
        }),
        None => Ok(String::new()),
    }
    };
    let api_key = decrypt(&p.api_key_encrypted)?;
    let secret_key = decrypt(&p.secret_key_encrypted)?;
    let settings = serde_json::from_str(&p.settings)
        .map_err(|e| Error::Internal(format!("stored settings of provider {:?}: {e}", p.name)))?;
    Ok(proto::SnapshotProvider {
        settings,
        name: p.name,
        kind: p.kind,
        base_url: p.base_url,
        api_key,
        secret_key,
    })
}

/// A key's entries: its current secret's hash, and during a rotation's grace
/// period the previous one, as the same key ending with the grace (or the
/// key, if sooner). So data planes need nothing rotation-specific.
pub fn keys(k: KeyRow, now_ms: i64) -> impl Iterator<Item = proto::SnapshotKey> {
    let hash = |hex: &str| shared::keys::KeyHash::from_hex(hex).map(|h| h.as_bytes().to_vec());
    let expires_at_ms = k.expires_at.unwrap_or(0);
    let previous = match (k.previous_key_hash.as_deref(), k.previous_valid_until) {
        (Some(previous), Some(until)) if until > now_ms => {
            let ends = if expires_at_ms > 0 {
                until.min(expires_at_ms)
            } else {
                until
            };
            hash(previous).map(|previous| (previous, ends))
        }
        _ => None,
    };
    let current = hash(&k.key_hash).map(|key_hash| proto::SnapshotKey {
        models: k.models(),
        limits: Some(limits_of(&k.limits).to_proto()),
        budget: budget(k.budget.as_deref()),
        key_hash,
        id: k.id,
        name: k.name,
        user_id: k.user_id.unwrap_or_default(),
        team_id: k.team_id.unwrap_or_default(),
        expires_at_ms,
    });
    let previous = current
        .as_ref()
        .zip(previous)
        .map(|(current, (key_hash, expires_at_ms))| proto::SnapshotKey {
            key_hash,
            expires_at_ms,
            ..current.clone()
        });
    current.into_iter().chain(previous)
}

pub fn user(u: UserRow) -> proto::SnapshotUser {
    proto::SnapshotUser {
        models: string_list(&u.models),
        limits: Some(limits_of(&u.limits).to_proto()),
        budget: budget(u.budget.as_deref()),
        id: u.id,
        external_id: u.external_id.unwrap_or_default(),
        team_id: u.team_id.unwrap_or_default(),
    }
}

pub fn team(t: TeamRow) -> proto::SnapshotTeam {
    proto::SnapshotTeam {
        models: string_list(&t.models),
        limits: Some(limits_of(&t.limits).to_proto()),
        budget: budget(t.budget.as_deref()),
        guardrails: crate::store::guardrails_of(t.guardrails.as_deref()).map(|g| g.to_proto()),
        id: t.id,
        name: t.name,
    }
}

pub fn price(p: PriceView) -> proto::SnapshotPrice {
    proto::SnapshotPrice {
        model: p.model,
        provider: p.provider.unwrap_or_default(),
        input_micros: p.input_per_million.0,
        output_micros: p.output_per_million.0,
        cached_input_micros: p.cached_input_per_million.0,
        cache_write_input_micros: p.cache_write_per_million.0,
        currency: p.currency.to_string(),
    }
}

fn budget(json: Option<&str>) -> Option<proto::SnapshotBudget> {
    budget_of(json).as_ref().map(Budget::to_snapshot)
}

pub fn issuer(row: &JwtIssuerRow) -> proto::SnapshotJwtIssuer {
    let claims = row.claims();
    proto::SnapshotJwtIssuer {
        name: row.name.clone(),
        issuer: row.issuer.clone(),
        audiences: row.audiences(),
        algorithms: row.algorithms(),
        jwks: row.jwks.clone().unwrap_or_default(),
        public_keys_pem: row.public_keys_pem(),
        user_claim: claims.user.unwrap_or_default(),
        team_claim: claims.team.unwrap_or_default(),
        models_claim: claims.models.unwrap_or_default(),
        auto_create_users: row.auto_create_users != 0,
        leeway_seconds: u32::try_from(row.leeway_seconds).unwrap_or(0),
    }
}
