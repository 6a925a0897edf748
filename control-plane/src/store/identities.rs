//! Teams and users. Both are in snapshots (model lists, external ids), so
//! every write moves the configuration version.

use super::allowances::{budget_json, budget_of, limits_json, limits_of};
use super::changes::{Change, EntityKind};
use super::sql::{string_list, string_list_json};
use super::Store;
use crate::error::{already_exists, Error, Result};
use crate::model::{Team, User};
use crate::service::write::grant::Grant;
use shared::guardrails::Guardrails;
use shared::ids::{TeamId, UserId};
use shared::limits::HolderKind;
use shared::time::ms_to_rfc3339;

#[derive(sqlx::FromRow)]
struct TeamRecord {
    id: String,
    name: String,
    models: String,
    created_at: i64,
    limits: String,
    budget: Option<String>,
    guardrails: Option<String>,
}

const TEAM_COLUMNS: &str = "id, name, models, created_at, limits, budget, guardrails";

impl From<TeamRecord> for Team {
    fn from(r: TeamRecord) -> Self {
        Team {
            id: r.id.into(),
            name: r.name,
            models: string_list(&r.models),
            created_at: ms_to_rfc3339(r.created_at),
            limits: limits_of(&r.limits),
            budget: budget_of(r.budget.as_deref()),
            guardrails: guardrails_of(r.guardrails.as_deref()),
            spend: None,
        }
    }
}

/// Written by this store: guardrails it cannot read are shown as none.
pub fn guardrails_of(json: Option<&str>) -> Option<Guardrails> {
    json.and_then(|json| serde_json::from_str(json).ok())
}

fn guardrails_json(guardrails: Option<&Guardrails>) -> Option<String> {
    guardrails.and_then(|g| serde_json::to_string(g).ok())
}

#[derive(sqlx::FromRow)]
struct UserRecord {
    id: String,
    name: String,
    email: Option<String>,
    team_id: Option<String>,
    external_id: Option<String>,
    models: String,
    created_at: i64,
    limits: String,
    budget: Option<String>,
}

const USER_COLUMNS: &str =
    "id, name, email, team_id, external_id, models, created_at, limits, budget";

impl From<UserRecord> for User {
    fn from(r: UserRecord) -> Self {
        User {
            id: r.id.into(),
            name: r.name,
            email: r.email,
            team_id: r.team_id.map(TeamId::from),
            external_id: r.external_id,
            models: string_list(&r.models),
            created_at: ms_to_rfc3339(r.created_at),
            limits: limits_of(&r.limits),
            budget: budget_of(r.budget.as_deref()),
            spend: None,
        }
    }
}

impl Store {
    pub async fn insert_team(&self, _: &Grant, team: &Team, created_at: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(&format!(
            "INSERT INTO teams ({TEAM_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"
        ))
        .bind(team.id.as_str())
        .bind(&team.name)
        .bind(string_list_json(&team.models))
        .bind(created_at)
        .bind(limits_json(&team.limits))
        .bind(budget_json(team.budget.as_ref()))
        .bind(guardrails_json(team.guardrails.as_ref()))
        .execute(&mut *tx)
        .await
        .map_err(already_exists(format!("team {:?}", team.name)))?;
        if team.budget.is_some() || team.limits.has_quota() {
            Self::mark_spend_dirty(&mut tx, &[HolderKind::Team.holder(team.id.as_str())]).await?;
        }
        self.commit_config_change(tx, &[Change::new(EntityKind::Team, team.id.as_str())])
            .await
            .map(drop)
    }

    /// Replaces a team's guardrails (`None` removes them).
    pub async fn set_team_guardrails(
        &self,
        _: &Grant,
        id: &str,
        guardrails: Option<&Guardrails>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        let changed = sqlx::query("UPDATE teams SET guardrails = $2 WHERE id = $1")
            .bind(id)
            .bind(guardrails_json(guardrails))
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        let change = Change::new(EntityKind::Team, id);
        self.commit_config_change_if(tx, changed, &[change])
            .await
            .map(drop)
    }

    pub async fn list_teams(&self) -> Result<Vec<Team>> {
        let rows: Vec<TeamRecord> = sqlx::query_as(&format!(
            "SELECT {TEAM_COLUMNS} FROM teams ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(Team::from).collect())
    }

    pub async fn get_team(&self, id: &str) -> Result<Option<Team>> {
        let row: Option<TeamRecord> =
            sqlx::query_as(&format!("SELECT {TEAM_COLUMNS} FROM teams WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Team::from))
    }

    pub async fn delete_team(&self, _: &Grant, id: &str) -> Result<bool> {
        self.delete_referenced(HolderKind::Team, id).await
    }

    pub async fn insert_user(&self, _: &Grant, user: &User, created_at: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        Self::insert_user_in(&mut tx, user, created_at, false)
            .await
            .map_err(|e| match e {
                Error::AlreadyExists(_) => Error::AlreadyExists(format!(
                    "a user with external_id {:?} already exists",
                    user.external_id.as_deref().unwrap_or_default()
                )),
                other => other,
            })?;
        if user.budget.is_some() || user.limits.has_quota() {
            Self::mark_spend_dirty(&mut tx, &[HolderKind::User.holder(user.id.as_str())]).await?;
        }
        self.commit_config_change(tx, &[Change::new(EntityKind::User, user.id.as_str())])
            .await
            .map(drop)
    }

    /// Users first seen as token subjects: created once, however many
    /// records (or control planes) report them. Answers those that were new.
    pub async fn insert_users_if_absent<'u>(
        &self,
        _: &Grant,
        users: &'u [User],
        created_at: i64,
    ) -> Result<Vec<&'u User>> {
        let mut tx = self.begin().await?;
        let mut created = Vec::new();
        for user in users {
            if Self::insert_user_in(&mut tx, user, created_at, true).await? {
                created.push(user);
            }
        }
        let changes: Vec<Change> = created
            .iter()
            .map(|u| Change::new(EntityKind::User, u.id.as_str()))
            .collect();
        self.commit_config_change_if(tx, !created.is_empty(), &changes)
            .await?;
        Ok(created)
    }

    async fn insert_user_in(
        tx: &mut super::Tx,
        user: &User,
        created_at: i64,
        if_absent: bool,
    ) -> Result<bool> {
        let on_conflict = if if_absent {
            " ON CONFLICT DO NOTHING"
        } else {
            ""
        };
        let done = sqlx::query(&format!(
            "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9){on_conflict}"
        ))
        .bind(user.id.as_str())
        .bind(&user.name)
        .bind(&user.email)
        .bind(user.team_id.as_ref().map(TeamId::as_str))
        .bind(&user.external_id)
        .bind(string_list_json(&user.models))
        .bind(created_at)
        .bind(limits_json(&user.limits))
        .bind(budget_json(user.budget.as_ref()))
        .execute(&mut **tx)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows: Vec<UserRecord> = sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY created_at, id"
        ))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<User>> {
        let row: Option<UserRecord> =
            sqlx::query_as(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(User::from))
    }

    pub async fn delete_user(&self, _: &Grant, id: &UserId) -> Result<bool> {
        self.delete_referenced(HolderKind::User, id.as_str()).await
    }

    /// Deletes a team or user, refusing with a clear message while keys or users refer to it.
    async fn delete_referenced(&self, kind: HolderKind, id: &str) -> Result<bool> {
        let what = kind.as_str();
        let mut tx = self.begin().await?;
        let deleted = sqlx::query(&format!("DELETE FROM {} WHERE id = $1", super::allowances::table(kind)))
            .bind(id)
            .execute(&mut *tx)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => Error::Conflict(format!(
                    "{what} {id:?} is still referred to by users, API keys or admins; remove those first"
                )),
                other => other,
            })?;
        let change = Change::new(EntityKind::of_holder(kind), id);
        self.commit_config_change_if(tx, deleted, &[change]).await
    }
}
