//! API keys: secrets shown once and stored as hashes, rotated with a grace
//! period, revoked at once; never reaching beyond their user and team.

use super::quotas::{ceilings, spend_view};
use super::write::Audited;
use super::{non_empty, validate, Admin};
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::{ApiKey, CreatedKey, KeyRotation, LimitsUpdate, NewKey, User};
use shared::ids::{KeyId, TeamId, UserId};
use shared::keys::ApiKeySecret;
use shared::limits::HolderKind;
use shared::time::{ms_to_rfc3339, now_ms, rfc3339_to_ms};

const DEFAULT_ROTATION_GRACE_SECONDS: u64 = 3_600;
const MAX_ROTATION_GRACE_SECONDS: u64 = 30 * 24 * 3_600;

impl Admin {
    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey> {
        let who = crate::audit::principal()?;
        validate::display_name("name", &new.name)?;
        let user_id = non_empty(new.user_id.clone());
        let mut team_id = non_empty(new.team_id.clone());
        if user_id.is_none() && team_id.is_none() {
            team_id = who.team_scope().cloned();
        }
        let key_user = match &user_id {
            Some(user_id) => Some(self.key_user(user_id, &mut team_id).await?),
            None => None,
        };
        // Nobody hands out a key that reaches beyond their own team.
        self.write(Need::TeamWrite(team_id.as_ref()), async |grant| {
            let key_team = match &team_id {
                Some(team) => Some(self.store.get_team(team.as_str()).await?.ok_or_else(|| {
                    Error::invalid(format!("team_id: team {team:?} does not exist"))
                })?),
                None => None,
            };
            validate::models(&new.models)?;
            // Nor one that names models its user or team may not call.
            let user_models = key_user.as_ref().map(|u| &u.models);
            let team_models = key_team.as_ref().map(|t| &t.models);
            for (holder, allowed) in [("user", user_models), ("team", team_models)] {
                check_models(&new.models, holder, allowed.map_or(&[][..], Vec::as_slice))?;
            }
            // Nor one with higher limits or a larger budget than its user or team.
            let ceilings = ceilings(key_user.as_ref(), key_team.as_ref());
            self.check_allowance(&new.limits, new.budget.as_ref(), &new.models, &ceilings)
                .await?;
            let now = now_ms();
            let expires_at_ms = expiry(new.expires_at.as_deref(), now)?;
            let secret = ApiKeySecret::generate();
            let key = ApiKey {
                id: KeyId::generate(),
                name: new.name.trim().to_owned(),
                prefix: secret.display_prefix(),
                user_id: user_id.clone(),
                team_id: team_id.clone(),
                models: new.models,
                expires_at: expires_at_ms.map(ms_to_rfc3339),
                revoked: false,
                created_at: ms_to_rfc3339(now),
                previous_valid_until: None,
                spend: spend_view(&new.limits, new.budget.as_ref(), None, now),
                limits: new.limits,
                budget: new.budget,
            };
            let row = crate::store::NewKeyRow {
                key: &key,
                key_hash_hex: secret.hash().to_hex(),
                expires_at_ms,
                created_at_ms: now,
            };
            self.store.insert_key(grant, row).await?;
            // The key's view only: its secret is never recorded.
            let resource = format!("key/{}", key.id);
            let view = key.clone();
            let created = CreatedKey {
                key,
                secret: secret.expose().to_owned(),
            };
            Ok(Audited::new(
                created,
                "key.create",
                resource,
                None,
                Some(&view),
            ))
        })
        .await
    }

    /// The key's user; its team is the key's unless the key names another.
    async fn key_user(&self, user_id: &UserId, team_id: &mut Option<TeamId>) -> Result<User> {
        let user = self
            .store
            .get_user(user_id.as_str())
            .await?
            .ok_or_else(|| Error::invalid(format!("user_id: user {user_id:?} does not exist")))?;
        match (&*team_id, &user.team_id) {
            (Some(asked), Some(users)) if asked != users => Err(Error::invalid(format!(
                "team_id: user {user_id:?} belongs to team {users:?}, not {asked:?}"
            ))),
            (None, Some(users)) => {
                *team_id = Some(users.clone());
                Ok(user)
            }
            _ => Ok(user),
        }
    }

    /// Its limits and budget, within its user's and team's.
    pub async fn update_key(&self, id: &str, update: LimitsUpdate) -> Result<ApiKey> {
        let before = self.get_key(id).await?;
        self.write(Need::TeamWrite(before.team_id.as_ref()), async |grant| {
            if before.revoked {
                return Err(Error::Conflict(format!("key {id:?} is revoked")));
            }
            update.refuse_guardrails()?;
            if update.models.is_some() {
                return Err(Error::invalid(
                    "models: a key's models are fixed when it is created; create a new key",
                ));
            }
            let (limits, budget) = update.applied_to(&before.limits, &before.budget);
            let user = match &before.user_id {
                Some(user) => self.store.get_user(user.as_str()).await?,
                None => None,
            };
            let team = self.team_of(before.team_id.as_ref()).await?;
            let ceilings = ceilings(user.as_ref(), team.as_ref());
            self.check_allowance(&limits, budget.as_ref(), &before.models, &ceilings)
                .await?;
            self.set_allowance(grant, (HolderKind::Key, id), &limits, budget.as_ref(), None)
                .await?;
            let after = self.get_key(id).await?;
            let resource = format!("key/{id}");
            Ok(Audited::new(
                after.clone(),
                "key.update",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }

    /// A new secret at once; the previous one keeps working for the grace
    /// period, so clients can switch over without an outage.
    pub async fn rotate_key(&self, id: &str, rotation: KeyRotation) -> Result<CreatedKey> {
        let before = self.get_key(id).await?;
        self.write(Need::TeamWrite(before.team_id.as_ref()), async |grant| {
            let grace_seconds = rotation
                .grace_seconds
                .unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
            if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
                return Err(Error::invalid(format!(
                    "grace_seconds: at most {MAX_ROTATION_GRACE_SECONDS} (30 days)"
                )));
            }
            if before.revoked {
                return Err(Error::Conflict(format!("key {id:?} is revoked")));
            }
            let secret = ApiKeySecret::generate();
            let grace_ms = i64::try_from(grace_seconds * 1000).unwrap_or(i64::MAX);
            let valid_until = now_ms().saturating_add(grace_ms);
            let hash = secret.hash().to_hex();
            let prefix = secret.display_prefix();
            if !self
                .store
                .rotate_key(grant, id, &hash, &prefix, valid_until)
                .await?
            {
                // Revoked or deleted between the read and the write.
                return Err(Error::Conflict(format!("key {id:?} is revoked")));
            }
            let key = self.get_key(id).await?;
            let resource = format!("key/{id}");
            let view = key.clone();
            let rotated = CreatedKey {
                key,
                secret: secret.expose().to_owned(),
            };
            Ok(Audited::new(
                rotated,
                "key.rotate",
                resource,
                Some(&before),
                Some(&view),
            ))
        })
        .await
    }

    /// Data planes refuse it within about a second.
    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        let before = self.get_key(id).await?;
        self.write(Need::TeamWrite(before.team_id.as_ref()), async |grant| {
            let after = self
                .store
                .revoke_key(grant, id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("key {id:?}")))?;
            let resource = format!("key/{id}");
            Ok(Audited::new(
                after.clone(),
                "key.revoke",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }

    pub async fn get_key(&self, id: &str) -> Result<ApiKey> {
        let mut key = self
            .store
            .get_key(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("key {id:?}")))?;
        self.require(Need::TeamRead(key.team_id.as_ref()))?;
        self.show_spend(std::slice::from_mut(&mut key)).await?;
        Ok(key)
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let who = self.team_lister()?;
        let mut keys = self.store.list_keys().await?;
        keys.retain(|k| who.sees(k.team_id.as_ref()));
        self.show_spend(&mut keys).await?;
        Ok(keys)
    }
}

/// A key's models within what its `holder` (user or team) may call.
fn check_models(models: &[String], holder: &str, allowed: &[String]) -> Result<()> {
    if allowed.is_empty() {
        return Ok(());
    }
    if models.is_empty() {
        return Err(Error::invalid(format!(
            "models: the key's {holder} may call only {allowed:?}; list the key's models within them"
        )));
    }
    match models
        .iter()
        .enumerate()
        .find(|(_, m)| !allowed.contains(m))
    {
        Some((i, model)) => Err(Error::invalid(format!(
            "models[{i}]: the key's {holder} may not call {model:?}"
        ))),
        None => Ok(()),
    }
}

/// `expires_at` as epoch ms; it must lie ahead.
fn expiry(text: Option<&str>, now: i64) -> Result<Option<i64>> {
    let Some(text) = text.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    let ms = rfc3339_to_ms(text).ok_or_else(|| {
        Error::invalid("expires_at: expected an RFC 3339 time such as 2030-01-31T00:00:00Z")
    })?;
    if ms <= now {
        return Err(Error::invalid("expires_at: must be in the future"));
    }
    Ok(Some(ms))
}
