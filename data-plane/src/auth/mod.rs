//! Step 2 of the request path: who is calling, as an API key or a JWT.
//! Checked against the snapshot only.

pub mod directory;
pub mod holder;
pub mod jwt;

pub use jwt::TokenRejection;

use crate::error::GatewayError;
use axum::http::{header, HeaderMap};
use directory::{Directory, KeyEntry, ModelScope};
use holder::{Allowance, Holder};
use serde_json::Value;
use shared::ids::{KeyId, TeamId, UserId};
use shared::keys::KeyHash;
use shared::limits::HolderKind;
use shared::time::now_ms;
use shared::usage::JwtCaller;
use std::sync::Arc;

/// An authenticated caller and everything that narrows what it may call.
#[derive(Debug)]
#[cfg_attr(test, derive(Default))]
pub struct Caller {
    pub key_id: Option<KeyId>,
    pub jwt: Option<JwtCaller>,
    pub user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
    /// A model must be on every one of these lists (key or token, user, team).
    scopes: Vec<ModelScope>,
    /// Its key, user and team that have limits or a budget: a token's
    /// caller meets the same limiters as a key's.
    pub holders: Vec<Holder>,
    /// Its team's guardrails, applied on every route after the route's own.
    pub team_guardrails: Option<Arc<crate::guardrails::Compiled>>,
}

impl Caller {
    pub fn allows(&self, model: &str) -> bool {
        self.scopes.iter().all(|scope| scope.contains(model))
    }

    /// What keeps a caller on one A/B variant: the user, else the key.
    pub fn sticky_id(&self) -> &str {
        match (&self.user_id, &self.key_id) {
            (Some(user), _) => user.as_str(),
            (None, Some(key)) => key.as_str(),
            (None, None) => "",
        }
    }

    fn of_key(key: &KeyEntry, directory: &Directory) -> Self {
        let user = key.user_id.as_ref().and_then(|id| directory.user(id));
        let team = key.team_id.as_ref().and_then(|id| directory.team(id));
        let scopes = [
            key.models.as_ref(),
            user.and_then(|u| u.models.as_ref()),
            team.and_then(|t| t.models.as_ref()),
        ];
        let holders = [
            holder(HolderKind::Key, key.id.as_str(), &key.allowance),
            user.and_then(|u| holder(HolderKind::User, u.id.as_str(), &u.allowance)),
            team.and_then(|t| holder(HolderKind::Team, t.id.as_str(), &t.allowance)),
        ];
        Caller {
            key_id: Some(key.id.clone()),
            jwt: None,
            user_id: key.user_id.clone(),
            team_id: key.team_id.clone(),
            scopes: scopes.into_iter().flatten().cloned().collect(),
            holders: holders.into_iter().flatten().collect(),
            team_guardrails: team.and_then(|t| t.guardrails.clone()),
        }
    }

    #[cfg(test)]
    pub fn for_test() -> Self {
        Caller {
            key_id: Some(KeyId::from("k".to_owned())),
            jwt: None,
            user_id: None,
            team_id: None,
            scopes: Vec::new(),
            holders: Vec::new(),
            team_guardrails: None,
        }
    }
}

pub fn authenticate(directory: &Directory, headers: &HeaderMap) -> Result<Caller, GatewayError> {
    let credential = bearer(headers).ok_or(GatewayError::MissingKey)?;
    if jwt::looks_like_jwt(credential) {
        return caller_of_token(directory, credential).map_err(GatewayError::InvalidToken);
    }
    // A typo, a truncated paste or a foreign token: refused without a lookup.
    if !shared::keys::is_well_formed(credential) {
        return Err(GatewayError::InvalidKey);
    }
    // Hash lookup: the stored side is a SHA-256, so timing reveals nothing of a secret.
    let key = directory
        .key(&KeyHash::of(credential))
        .ok_or(GatewayError::InvalidKey)?;
    if key.expires_at_ms.is_some_and(|at| at <= now_ms()) {
        return Err(GatewayError::ExpiredKey);
    }
    Ok(Caller::of_key(key, directory))
}

/// A verified token's claims, mapped to a user (by `external_id`) and team.
/// A user already known keeps the team the admins gave it; a new one (when
/// its issuer creates users) takes the token's.
fn caller_of_token(directory: &Directory, token: &str) -> Result<Caller, TokenRejection> {
    let (issuer, claims) = directory.issuers.verify(token)?;
    let subject = issuer
        .user_claim
        .find(&claims)
        .and_then(claim_text)
        .ok_or(TokenRejection::MissingClaim)?;
    let claimed_team = match issuer.team_claim.as_ref().and_then(|c| c.find(&claims)) {
        Some(value) => Some(
            claim_text(value)
                .and_then(|name| directory.team_named(&name))
                .ok_or(TokenRejection::UnknownTeam)?,
        ),
        None => None,
    };
    let mut scopes = Vec::new();
    if let Some(value) = issuer.models_claim.as_ref().and_then(|c| c.find(&claims)) {
        scopes.push(models_of_claim(value).ok_or(TokenRejection::BadModelsClaim)?);
    }
    let mut holders = Vec::new();
    let (user_id, team) = match directory.user_by_external_id(&subject) {
        Some(user) => {
            scopes.extend(user.models.clone());
            holders.extend(holder(HolderKind::User, user.id.as_str(), &user.allowance));
            let team = match &user.team_id {
                Some(id) => directory.team(id),
                None => claimed_team,
            };
            (user.id.clone(), team)
        }
        None if issuer.auto_create_users => (UserId::for_external_id(&subject), claimed_team),
        None => return Err(TokenRejection::UnknownSubject),
    };
    scopes.extend(team.and_then(|t| t.models.clone()));
    holders.extend(team.and_then(|t| holder(HolderKind::Team, t.id.as_str(), &t.allowance)));
    Ok(Caller {
        key_id: None,
        jwt: Some(JwtCaller {
            issuer: issuer.name.clone(),
            subject,
        }),
        user_id: Some(user_id),
        team_id: team.map(|t| t.id.clone()),
        team_guardrails: team.and_then(|t| t.guardrails.clone()),
        scopes,
        holders,
    })
}

fn holder(kind: HolderKind, id: &str, allowance: &Option<Arc<Allowance>>) -> Option<Holder> {
    allowance.as_ref().map(|allowance| Holder {
        kind,
        id: id.to_owned(),
        allowance: allowance.clone(),
    })
}

/// A string claim, or a number (some providers use numeric subjects).
fn claim_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A list of names, or one space-separated string (as OAuth scopes are).
fn models_of_claim(value: &Value) -> Option<ModelScope> {
    let names: Option<_> = match value {
        Value::Array(items) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned))
            .collect(),
        Value::String(s) => Some(s.split_whitespace().map(str::to_owned).collect()),
        _ => None,
    };
    names.map(std::sync::Arc::new)
}

/// OpenAI SDKs send `Authorization: Bearer`; Anthropic-style clients send `x-api-key`.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let from_authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    from_authorization
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::proto;

    #[test]
    fn a_keys_models_are_narrowed_by_its_user_and_team() {
        let secret = shared::keys::ApiKeySecret::generate();
        let snapshot = proto::Snapshot {
            keys: vec![proto::SnapshotKey {
                id: "k".into(),
                key_hash: KeyHash::of(secret.expose()).as_bytes().to_vec(),
                user_id: "u".into(),
                team_id: "t".into(),
                ..Default::default()
            }],
            users: vec![proto::SnapshotUser {
                id: "u".into(),
                models: vec!["a".into(), "b".into()],
                ..Default::default()
            }],
            teams: vec![proto::SnapshotTeam {
                id: "t".into(),
                name: "blue".into(),
                models: vec!["b".into(), "c".into()],
                ..Default::default()
            }],
            ..Default::default()
        };
        let runtime = crate::runtime::Runtime::try_from(snapshot).expect("valid snapshot");
        let mut headers = HeaderMap::new();
        let bearer = format!("Bearer {}", secret.expose());
        headers.insert(header::AUTHORIZATION, bearer.parse().expect("header"));
        let caller = authenticate(runtime.directory(), &headers).expect("a known key");
        assert!(caller.allows("b"));
        assert!(!caller.allows("a") && !caller.allows("c") && !caller.allows("d"));
        assert_eq!(caller.sticky_id(), "u");
    }
}
