//! Admin principals: created by admins, each with a role and a token shown
//! once; and how a bearer token becomes a principal.

use super::write::Audited;
use super::{non_empty, validate, Admin};
use crate::access::{Need, Principal, Role};
use crate::api::auth::BearerToken;
use crate::error::{Error, Result};
use crate::model::{AdminPrincipal, CreatedAdmin, NewAdmin};
use shared::ids::AdminId;
use shared::time::{ms_to_rfc3339, now_ms};

/// Recognisable in a leak, like API keys: `sbadm_` and 256 random bits.
const TOKEN_PREFIX: &str = "sbadm_";
/// A console session after a sign-in through the identity provider.
const SESSION_PREFIX: &str = "sbses_";

impl Admin {
    /// The principal a bearer token stands for: the bootstrap admin token,
    /// or an admin principal's token (found by its hash).
    pub async fn authenticate(
        &self,
        bootstrap: &BearerToken,
        authorization: Option<&str>,
    ) -> Result<Principal> {
        if bootstrap.accepts(authorization) {
            return Ok(Principal::bootstrap());
        }
        let token = authorization
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(Error::Unauthenticated)?;
        let hash = hex::encode(BearerToken::new(token).hash());
        if token.starts_with(SESSION_PREFIX) {
            return self
                .store
                .session(&hash)
                .await?
                .ok_or(Error::Unauthenticated);
        }
        if !token.starts_with(TOKEN_PREFIX) {
            return Err(Error::Unauthenticated);
        }
        let admin = self
            .store
            .admin_by_token_hash(&hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        Ok(Principal {
            actor: format!("admin/{}", admin.id),
            role: admin.role,
            team_id: admin.team_id,
        })
    }

    pub async fn create_admin(&self, new: NewAdmin) -> Result<CreatedAdmin> {
        self.write(Need::ConfigWrite, async |grant| {
            self.insert_admin(grant, new).await
        })
        .await
    }

    async fn insert_admin(
        &self,
        grant: &super::write::grant::Grant,
        new: NewAdmin,
    ) -> Result<Audited<CreatedAdmin>> {
        validate::display_name("name", &new.name)?;
        let team_id = non_empty(new.team_id);
        match (new.role, &team_id) {
            (Role::TeamAdmin, None) => {
                return Err(Error::invalid("team_id: a team_admin needs its team"))
            }
            (Role::TeamAdmin, Some(team)) => self.require_team(team, "team_id").await?,
            (role, Some(_)) => {
                return Err(Error::invalid(format!(
                    "team_id: only a team_admin has a team, not a {role}"
                )))
            }
            (_, None) => {}
        }
        let token = format!("{TOKEN_PREFIX}{}", shared::keys::random_token());
        let now = now_ms();
        let admin = AdminPrincipal {
            id: AdminId::generate(),
            name: new.name.trim().to_owned(),
            role: new.role,
            team_id,
            created_at: ms_to_rfc3339(now),
        };
        let hash = hex::encode(BearerToken::new(&token).hash());
        self.store.insert_admin(grant, &admin, &hash, now).await?;
        // The principal's view only: its token is never recorded.
        let resource = format!("admin/{}", admin.id);
        let view = admin.clone();
        let created = CreatedAdmin { admin, token };
        Ok(Audited::new(
            created,
            "admin.create",
            resource,
            None,
            Some(&view),
        ))
    }

    /// A console session for someone the identity provider vouched for;
    /// answers its token (shown only to that browser) and records the sign-in.
    pub async fn open_session(&self, principal: Principal, hours: u64) -> Result<String> {
        let token = format!("{SESSION_PREFIX}{}", shared::keys::random_token());
        let hash = hex::encode(BearerToken::new(&token).hash());
        let lifetime_ms = i64::try_from(hours.saturating_mul(3_600_000)).unwrap_or(i64::MAX);
        let expires_at = now_ms().saturating_add(lifetime_ms);
        self.store
            .insert_session(&hash, &principal, expires_at)
            .await?;
        let record = crate::store::NewAuditEntry {
            at_ms: now_ms(),
            actor: &principal.actor,
            action: "session.create",
            resource: &format!("session/{}", principal.actor),
            request_id: &uuid::Uuid::new_v4().to_string(),
            before: None,
            after: serde_json::to_string(&serde_json::json!({
                "role": principal.role,
                "team_id": principal.team_id,
                "expires_at": ms_to_rfc3339(expires_at),
            }))
            .ok(),
        };
        self.store.insert_audit(&record).await?;
        Ok(token)
    }

    pub async fn list_admins(&self) -> Result<Vec<AdminPrincipal>> {
        self.require(Need::ConfigRead)?;
        self.store.list_admins().await
    }

    pub async fn get_admin(&self, id: &str) -> Result<AdminPrincipal> {
        self.require(Need::ConfigRead)?;
        self.store
            .get_admin(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("admin {id:?}")))
    }

    /// Its token stops working at once.
    pub async fn delete_admin(&self, id: &str) -> Result<()> {
        self.write(Need::ConfigWrite, async |grant| {
            let before = self.get_admin(id).await?;
            if !self.store.delete_admin(grant, id).await? {
                return Err(Error::NotFound(format!("admin {id:?}")));
            }
            Ok(Audited::new(
                (),
                "admin.delete",
                format!("admin/{id}"),
                Some(&before),
                None,
            ))
        })
        .await
    }
}
