//! Users: people and services, in a team or not, matched to JWT callers by
//! their identity provider's subject.

use super::quotas::{ceilings, spend_view};
use super::write::Audited;
use super::{non_empty, validate, Admin};
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::{LimitsUpdate, NewUser, User};
use shared::ids::UserId;
use shared::limits::HolderKind;
use shared::time::{ms_to_rfc3339, now_ms};

impl Admin {
    pub async fn create_user(&self, mut new: NewUser) -> Result<User> {
        let who = crate::audit::principal()?;
        // A team admin's users are its team's, whether it says so or not.
        if non_empty(new.team_id.as_ref()).is_none() {
            new.team_id = who.team_scope().cloned();
        }
        let team_id = non_empty(new.team_id.clone());
        self.write(Need::TeamWrite(team_id.as_ref()), async |grant| {
            validate::display_name("name", &new.name)?;
            let email = new.email.filter(|e| !e.trim().is_empty());
            if let Some(email) = &email {
                validate::email(email)?;
            }
            if let Some(team) = &team_id {
                self.require_team(team, "team_id").await?;
            }
            let external_id = non_empty(new.external_id);
            if let Some(external_id) = &external_id {
                validate::external_id(external_id)?;
            }
            validate::models(&new.models)?;
            let team = self.team_of(team_id.as_ref()).await?;
            let ceilings = ceilings(None, team.as_ref());
            self.check_allowance(&new.limits, new.budget.as_ref(), &new.models, &ceilings)
                .await?;
            let now = now_ms();
            let user = User {
                id: UserId::generate(),
                name: new.name.trim().to_owned(),
                email,
                team_id: team_id.clone(),
                external_id,
                models: new.models,
                created_at: ms_to_rfc3339(now),
                spend: spend_view(&new.limits, new.budget.as_ref(), None, now),
                limits: new.limits,
                budget: new.budget,
            };
            self.store.insert_user(grant, &user, now).await?;
            let resource = format!("user/{}", user.id);
            Ok(Audited::new(
                user.clone(),
                "user.create",
                resource,
                None,
                Some(&user),
            ))
        })
        .await
    }

    /// Its models, limits and budget, within its team's.
    pub async fn update_user(&self, id: &str, update: LimitsUpdate) -> Result<User> {
        let before = self.get_user(id).await?;
        self.write(Need::TeamWrite(before.team_id.as_ref()), async |grant| {
            update.refuse_guardrails()?;
            let models = update.models.clone();
            let (limits, budget) = update.applied_to(&before.limits, &before.budget);
            if let Some(models) = &models {
                validate::models(models)?;
            }
            let allowed = models.as_ref().unwrap_or(&before.models);
            let team = self.team_of(before.team_id.as_ref()).await?;
            let ceilings = ceilings(None, team.as_ref());
            self.check_allowance(&limits, budget.as_ref(), allowed, &ceilings)
                .await?;
            let holder = (HolderKind::User, id);
            self.set_allowance(grant, holder, &limits, budget.as_ref(), models.as_deref())
                .await?;
            let after = self.get_user(id).await?;
            let resource = format!("user/{id}");
            Ok(Audited::new(
                after.clone(),
                "user.update",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }

    pub async fn delete_user(&self, id: &str) -> Result<()> {
        let before = self.get_user(id).await?;
        self.write(Need::TeamWrite(before.team_id.as_ref()), async |grant| {
            if !self
                .store
                .delete_user(grant, &UserId::from(id.to_owned()))
                .await?
            {
                return Err(Error::NotFound(format!("user {id:?}")));
            }
            Ok(Audited::new(
                (),
                "user.delete",
                format!("user/{id}"),
                Some(&before),
                None,
            ))
        })
        .await
    }

    pub async fn get_user(&self, id: &str) -> Result<User> {
        let mut user = self
            .store
            .get_user(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {id:?}")))?;
        self.require(Need::TeamRead(user.team_id.as_ref()))?;
        self.show_spend(std::slice::from_mut(&mut user)).await?;
        Ok(user)
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let who = self.team_lister()?;
        let mut users = self.store.list_users().await?;
        users.retain(|u| who.sees(u.team_id.as_ref()));
        self.show_spend(&mut users).await?;
        Ok(users)
    }
}
