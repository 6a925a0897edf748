//! Teams and users.

use super::Store;
use crate::error::{already_exists, Error, Result};
use crate::model::{Team, User};
use shared::ids::{TeamId, UserId};
use shared::time::ms_to_rfc3339;

#[derive(sqlx::FromRow)]
struct TeamRecord {
    id: String,
    name: String,
    created_at: i64,
}

impl From<TeamRecord> for Team {
    fn from(r: TeamRecord) -> Self {
        Team {
            id: r.id.into(),
            name: r.name,
            created_at: ms_to_rfc3339(r.created_at),
        }
    }
}

#[derive(sqlx::FromRow)]
struct UserRecord {
    id: String,
    name: String,
    email: Option<String>,
    team_id: Option<String>,
    created_at: i64,
}

impl From<UserRecord> for User {
    fn from(r: UserRecord) -> Self {
        User {
            id: r.id.into(),
            name: r.name,
            email: r.email,
            team_id: r.team_id.map(TeamId::from),
            created_at: ms_to_rfc3339(r.created_at),
        }
    }
}

impl Store {
    pub async fn insert_team(&self, id: &TeamId, name: &str, created_at: i64) -> Result<()> {
        sqlx::query("INSERT INTO teams (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id.as_str())
            .bind(name)
            .bind(created_at)
            .execute(&self.pool)
            .await
            .map_err(already_exists(format!("team {name:?}")))?;
        Ok(())
    }

    pub async fn list_teams(&self) -> Result<Vec<Team>> {
        let rows: Vec<TeamRecord> =
            sqlx::query_as("SELECT id, name, created_at FROM teams ORDER BY created_at, id")
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(Team::from).collect())
    }

    pub async fn get_team(&self, id: &str) -> Result<Option<Team>> {
        let row: Option<TeamRecord> =
            sqlx::query_as("SELECT id, name, created_at FROM teams WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(Team::from))
    }

    pub async fn delete_team(&self, id: &str) -> Result<bool> {
        self.delete_referenced("teams", "team", id).await
    }

    pub async fn insert_user(&self, user: &User, created_at: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO users (id, name, email, team_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(user.id.as_str())
        .bind(&user.name)
        .bind(&user.email)
        .bind(user.team_id.as_ref().map(TeamId::as_str))
        .bind(created_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows: Vec<UserRecord> = sqlx::query_as(
            "SELECT id, name, email, team_id, created_at FROM users ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(User::from).collect())
    }

    pub async fn get_user(&self, id: &str) -> Result<Option<User>> {
        let row: Option<UserRecord> =
            sqlx::query_as("SELECT id, name, email, team_id, created_at FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.map(User::from))
    }

    pub async fn delete_user(&self, id: &UserId) -> Result<bool> {
        self.delete_referenced("users", "user", id.as_str()).await
    }

    /// Deletes a team or user, refusing with a clear message while keys or users refer to it.
    async fn delete_referenced(&self, table: &str, what: &str, id: &str) -> Result<bool> {
        sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
            .bind(id)
            .execute(&self.pool)
            .await
            .map(|done| done.rows_affected() > 0)
            .map_err(|e| match Error::from(e) {
                Error::Conflict(_) => Error::Conflict(format!(
                    "{what} {id:?} is still referred to by users or API keys; remove those first"
                )),
                other => other,
            })
    }
}
