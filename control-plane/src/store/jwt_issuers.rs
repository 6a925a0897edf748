//! JWT issuers, and the key sets fetched for them.

use super::changes::{Change, EntityKind};
use super::sql::string_list;
use super::Store;
use crate::error::{already_exists, Result};
use crate::model::JwtClaims;
use crate::service::write::grant::Grant;

/// One issuer as stored: lists and claims as JSON text.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct JwtIssuerRow {
    pub name: String,
    pub issuer: String,
    pub audiences: String,
    pub algorithms: String,
    pub jwks_url: Option<String>,
    pub public_keys_pem: String,
    pub claims: String,
    pub auto_create_users: i64,
    pub leeway_seconds: i64,
    pub jwks: Option<String>,
    pub jwks_fetched_at: Option<i64>,
    pub jwks_error: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl JwtIssuerRow {
    pub fn audiences(&self) -> Vec<String> {
        string_list(&self.audiences)
    }

    pub fn algorithms(&self) -> Vec<String> {
        string_list(&self.algorithms)
    }

    pub fn public_keys_pem(&self) -> Vec<String> {
        string_list(&self.public_keys_pem)
    }

    pub fn claims(&self) -> JwtClaims {
        serde_json::from_str(&self.claims).unwrap_or_default()
    }
}

/// Binds a row's values as $1..$14, in the order of `COLUMNS`.
fn bind_row<'q>(query: AnyQuery<'q>, row: &'q JwtIssuerRow) -> AnyQuery<'q> {
    query
        .bind(&row.name)
        .bind(&row.issuer)
        .bind(&row.audiences)
        .bind(&row.algorithms)
        .bind(&row.jwks_url)
        .bind(&row.public_keys_pem)
        .bind(&row.claims)
        .bind(row.auto_create_users)
        .bind(row.leeway_seconds)
        .bind(&row.jwks)
        .bind(row.jwks_fetched_at)
        .bind(&row.jwks_error)
        .bind(row.created_at)
        .bind(row.updated_at)
}

fn issuer_change(name: &str) -> Change {
    Change::new(EntityKind::JwtIssuer, name)
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

const COLUMNS: &str = "name, issuer, audiences, algorithms, jwks_url, public_keys_pem, claims, \
     auto_create_users, leeway_seconds, jwks, jwks_fetched_at, jwks_error, created_at, updated_at";

impl Store {
    pub async fn insert_jwt_issuer(&self, _: &Grant, row: &JwtIssuerRow) -> Result<()> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "INSERT INTO jwt_issuers ({COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
        );
        bind_row(sqlx::query(&sql), row)
            .execute(&mut *tx)
            .await
            .map_err(already_exists(format!(
                "a JWT issuer named {:?} or with issuer {:?}",
                row.name, row.issuer
            )))?;
        self.commit_config_change(tx, &[issuer_change(&row.name)])
            .await
            .map(drop)
    }

    /// Replaces the row named `row.name`.
    pub async fn update_jwt_issuer(&self, _: &Grant, row: &JwtIssuerRow) -> Result<bool> {
        let mut tx = self.begin().await?;
        let sql = "UPDATE jwt_issuers SET issuer = $2, audiences = $3, algorithms = $4, \
             jwks_url = $5, public_keys_pem = $6, claims = $7, auto_create_users = $8, \
             leeway_seconds = $9, jwks = $10, jwks_fetched_at = $11, jwks_error = $12, \
             created_at = $13, updated_at = $14 WHERE name = $1";
        let done = bind_row(sqlx::query(sql), row)
            .execute(&mut *tx)
            .await
            .map_err(already_exists(format!(
                "a JWT issuer with issuer {:?}",
                row.issuer
            )))?;
        self.commit_config_change_if(tx, done.rows_affected() > 0, &[issuer_change(&row.name)])
            .await
    }

    pub async fn list_jwt_issuers(&self) -> Result<Vec<JwtIssuerRow>> {
        Self::jwt_issuers_in(&self.pool).await
    }

    pub(super) async fn jwt_issuers_in<'e, E>(executor: E) -> Result<Vec<JwtIssuerRow>>
    where
        E: sqlx::Executor<'e, Database = sqlx::Any>,
    {
        Ok(
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM jwt_issuers ORDER BY name"))
                .fetch_all(executor)
                .await?,
        )
    }

    pub async fn get_jwt_issuer(&self, name: &str) -> Result<Option<JwtIssuerRow>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM jwt_issuers WHERE name = $1"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn delete_jwt_issuer(&self, _: &Grant, name: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query("DELETE FROM jwt_issuers WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        self.commit_config_change_if(tx, done.rows_affected() > 0, &[issuer_change(name)])
            .await
    }

    /// A key set fetched from `jwks_url`: a new snapshot only when the keys
    /// changed (the same set fetched again moves nothing but the time).
    pub async fn record_jwks(
        &self,
        fence: super::Fence,
        name: &str,
        jwks: &str,
        fetched_at: i64,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        Self::check_fence(&mut tx, fence).await?;
        let changed = sqlx::query(
            "UPDATE jwt_issuers SET jwks = $2, jwks_fetched_at = $3, jwks_error = NULL \
             WHERE name = $1 AND (jwks IS NULL OR jwks <> $2)",
        )
        .bind(name)
        .bind(jwks)
        .bind(fetched_at)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            > 0;
        if !changed {
            sqlx::query(
                "UPDATE jwt_issuers SET jwks_fetched_at = $2, jwks_error = NULL WHERE name = $1",
            )
            .bind(name)
            .bind(fetched_at)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(false);
        }
        self.commit_config_change(tx, &[issuer_change(name)])
            .await?;
        Ok(true)
    }

    /// A failed fetch: the keys fetched before stay in use.
    pub async fn record_jwks_error(&self, name: &str, error: &str) -> Result<()> {
        sqlx::query("UPDATE jwt_issuers SET jwks_error = $2 WHERE name = $1")
            .bind(name)
            .bind(error)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
