//! Teams: the models their users and keys may call, their limits and budget.

use super::quotas::spend_view;
use super::write::Audited;
use super::{validate, Admin};
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::{LimitsUpdate, NewTeam, Team};
use shared::ids::TeamId;
use shared::limits::HolderKind;
use shared::time::{ms_to_rfc3339, now_ms};

impl Admin {
    pub async fn create_team(&self, new: NewTeam) -> Result<Team> {
        self.write(Need::ConfigWrite, async |grant| {
            validate::display_name("name", &new.name)?;
            validate::models(&new.models)?;
            if let Some(guardrails) = &new.guardrails {
                validate::guardrails(guardrails)?;
            }
            self.check_allowance(&new.limits, new.budget.as_ref(), &new.models, &[])
                .await?;
            let now = now_ms();
            let team = Team {
                id: TeamId::generate(),
                name: new.name.trim().to_owned(),
                models: new.models,
                created_at: ms_to_rfc3339(now),
                spend: spend_view(&new.limits, new.budget.as_ref(), None, now),
                limits: new.limits,
                budget: new.budget,
                guardrails: new.guardrails,
            };
            self.store.insert_team(grant, &team, now).await?;
            let resource = format!("team/{}", team.id);
            Ok(Audited::new(
                team.clone(),
                "team.create",
                resource,
                None,
                Some(&team),
            ))
        })
        .await
    }

    /// Its models, limits and budget; what the update leaves out stays.
    pub async fn update_team(&self, id: &str, update: LimitsUpdate) -> Result<Team> {
        self.write(Need::ConfigWrite, async |grant| {
            let before = self.get_team(id).await?;
            let models = update.models.clone();
            if let Some(Some(guardrails)) = &update.guardrails {
                validate::guardrails(guardrails)?;
            }
            let guardrails = update.guardrails.clone();
            let (limits, budget) = update.applied_to(&before.limits, &before.budget);
            if let Some(models) = &models {
                validate::models(models)?;
            }
            let allowed = models.as_ref().unwrap_or(&before.models);
            self.check_allowance(&limits, budget.as_ref(), allowed, &[])
                .await?;
            let holder = (HolderKind::Team, id);
            self.set_allowance(grant, holder, &limits, budget.as_ref(), models.as_deref())
                .await?;
            if let Some(guardrails) = guardrails {
                self.store
                    .set_team_guardrails(grant, id, guardrails.as_ref())
                    .await?;
            }
            let after = self.get_team(id).await?;
            let resource = format!("team/{id}");
            Ok(Audited::new(
                after.clone(),
                "team.update",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }

    pub async fn delete_team(&self, id: &str) -> Result<()> {
        self.write(Need::ConfigWrite, async |grant| {
            let before = self.get_team(id).await?;
            if !self.store.delete_team(grant, id).await? {
                return Err(Error::NotFound(format!("team {id:?}")));
            }
            Ok(Audited::new(
                (),
                "team.delete",
                format!("team/{id}"),
                Some(&before),
                None,
            ))
        })
        .await
    }

    pub async fn get_team(&self, id: &str) -> Result<Team> {
        let mut team = self
            .store
            .get_team(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("team {id:?}")))?;
        self.require(Need::TeamRead(Some(&team.id)))?;
        self.show_spend(std::slice::from_mut(&mut team)).await?;
        Ok(team)
    }

    pub async fn list_teams(&self) -> Result<Vec<Team>> {
        let who = self.team_lister()?;
        let mut teams = self.store.list_teams().await?;
        teams.retain(|t| who.sees(Some(&t.id)));
        self.show_spend(&mut teams).await?;
        Ok(teams)
    }

    pub(super) async fn require_team(&self, id: &TeamId, field: &str) -> Result<()> {
        match self.store.get_team(id.as_str()).await? {
            Some(_) => Ok(()),
            None => Err(Error::invalid(format!(
                "{field}: team {id:?} does not exist"
            ))),
        }
    }

    pub(super) async fn team_of(&self, id: Option<&TeamId>) -> Result<Option<Team>> {
        match super::non_empty(id.map(|t| t.as_str())) {
            Some(id) => self.store.get_team(id).await,
            None => Ok(None),
        }
    }
}
