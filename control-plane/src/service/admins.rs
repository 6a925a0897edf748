//! Admin principals: created by admins, each with a role and a token shown
//! once; and how a bearer token becomes a principal.

use super::{non_empty, validate, Admin};
use crate::access::{Need, Principal, Role};
use crate::api::auth::BearerToken;
use crate::error::{Error, Result};
use crate::model::{AdminPrincipal, CreatedAdmin, NewAdmin};
use shared::ids::AdminId;
use shared::time::{ms_to_rfc3339, now_ms};

/// Recognisable in a leak, like API keys: `sbadm_` and 256 random bits.
const TOKEN_PREFIX: &str = "sbadm_";

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
            .filter(|t| t.starts_with(TOKEN_PREFIX))
            .ok_or(Error::Unauthenticated)?;
        let hash = hex::encode(BearerToken::new(token).hash());
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
        self.require(Need::ConfigWrite)?;
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
        self.store.insert_admin(&admin, &hash, now).await?;
        // The principal's view only: its token is never recorded.
        self.audit(
            "admin.create",
            format!("admin/{}", admin.id),
            None,
            Some(&admin),
        )
        .await;
        Ok(CreatedAdmin { admin, token })
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
        self.require(Need::ConfigWrite)?;
        let before = self.get_admin(id).await?;
        if !self.store.delete_admin(id).await? {
            return Err(Error::NotFound(format!("admin {id:?}")));
        }
        self.audit::<AdminPrincipal>("admin.delete", format!("admin/{id}"), Some(&before), None)
            .await;
        Ok(())
    }
}
