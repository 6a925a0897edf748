//! A consistent read of everything a snapshot holds.

use super::allowances::SpendRow;
use super::jwt_issuers::JwtIssuerRow;
use super::providers::StoredProvider;
use super::Store;
use crate::error::{Error, Result};
use crate::model::{PriceView, Route};

pub type ProviderRow = StoredProvider;

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub key_hash: String,
    pub name: String,
    pub user_id: Option<String>,
    pub team_id: Option<String>,
    pub models: String,
    pub expires_at: Option<i64>,
    pub previous_key_hash: Option<String>,
    pub previous_valid_until: Option<i64>,
    pub limits: String,
    pub budget: Option<String>,
}

impl KeyRow {
    pub fn models(&self) -> Vec<String> {
        super::keys::string_list(&self.models)
    }
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct UserRow {
    pub id: String,
    pub external_id: Option<String>,
    pub team_id: Option<String>,
    pub models: String,
    pub limits: String,
    pub budget: Option<String>,
}

#[derive(Clone, Debug, sqlx::FromRow)]
pub struct TeamRow {
    pub id: String,
    pub name: String,
    pub models: String,
    pub limits: String,
    pub budget: Option<String>,
}

/// The configuration at one version.
pub struct ConfigRows {
    pub version: i64,
    pub providers: Vec<ProviderRow>,
    pub routes: Vec<Route>,
    pub keys: Vec<KeyRow>,
    /// Only users a data plane needs: with an external id, a model list,
    /// limits or a budget.
    pub users: Vec<UserRow>,
    pub teams: Vec<TeamRow>,
    pub jwt_issuers: Vec<JwtIssuerRow>,
    pub prices: Vec<PriceView>,
    pub spend: Vec<SpendRow>,
}

const MAX_ATTEMPTS: usize = 10;

impl Store {
    /// Reads the version, then the rows, then the version again: if a write
    /// landed in between, read again, so rows and version always agree. This
    /// works alike on both databases without relying on isolation levels.
    pub async fn load_config(&self) -> Result<ConfigRows> {
        for _ in 0..MAX_ATTEMPTS {
            let mut conn = self.pool.acquire().await?;
            let version: i64 =
                sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
                    .fetch_one(&mut *conn)
                    .await?;
            let providers = Self::providers_in(&mut *conn).await?;
            let routes = Self::routes_in(&mut conn).await?;
            let keys: Vec<KeyRow> = sqlx::query_as(
                "SELECT id, key_hash, name, user_id, team_id, models, expires_at, previous_key_hash, \
                 previous_valid_until, limits, budget FROM api_keys \
                 WHERE revoked_at IS NULL ORDER BY id",
            )
            .fetch_all(&mut *conn)
            .await?;
            let users: Vec<UserRow> = sqlx::query_as(
                "SELECT id, external_id, team_id, models, limits, budget FROM users \
                 WHERE external_id IS NOT NULL OR models <> '[]' OR limits <> '{}' \
                 OR budget IS NOT NULL ORDER BY id",
            )
            .fetch_all(&mut *conn)
            .await?;
            let teams: Vec<TeamRow> =
                sqlx::query_as("SELECT id, name, models, limits, budget FROM teams ORDER BY id")
                    .fetch_all(&mut *conn)
                    .await?;
            let jwt_issuers = Self::jwt_issuers_in(&mut *conn).await?;
            let prices = Self::prices_in(&mut *conn).await?;
            let spend = Self::spend_in(&mut *conn).await?;
            let after: i64 = sqlx::query_scalar("SELECT version FROM config_version WHERE id = 1")
                .fetch_one(&mut *conn)
                .await?;
            if after == version {
                return Ok(ConfigRows {
                    version,
                    providers,
                    routes,
                    keys,
                    users,
                    teams,
                    jwt_issuers,
                    prices,
                    spend,
                });
            }
        }
        Err(Error::Internal(
            "configuration kept changing while a snapshot was read".into(),
        ))
    }
}
