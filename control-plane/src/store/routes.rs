use super::{Store, Tx};
use crate::error::{already_exists, Result};
use crate::model::{Route, RouteTarget};
use shared::time::now_ms;
use std::collections::BTreeMap;

#[derive(sqlx::FromRow)]
struct TargetRecord {
    route_model: String,
    provider: String,
    upstream_model: String,
    weight: i64,
}

impl Store {
    pub async fn insert_route(&self, route: &Route) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        sqlx::query("INSERT INTO routes (model, created_at, updated_at) VALUES ($1, $2, $2)")
            .bind(&route.model)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(already_exists(format!("route {:?}", route.model)))?;
        insert_targets(&mut tx, route).await?;
        Self::commit_config_change(tx).await
    }

    pub async fn replace_route(&self, route: &Route) -> Result<bool> {
        let mut tx = self.begin().await?;
        let found = sqlx::query("UPDATE routes SET updated_at = $2 WHERE model = $1")
            .bind(&route.model)
            .bind(now_ms())
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if !found {
            return Ok(false);
        }
        sqlx::query("DELETE FROM route_targets WHERE route_model = $1")
            .bind(&route.model)
            .execute(&mut *tx)
            .await?;
        insert_targets(&mut tx, route).await?;
        Self::commit_config_change(tx).await?;
        Ok(true)
    }

    pub async fn delete_route(&self, model: &str) -> Result<bool> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM route_targets WHERE route_model = $1")
            .bind(model)
            .execute(&mut *tx)
            .await?;
        let deleted = sqlx::query("DELETE FROM routes WHERE model = $1")
            .bind(model)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        Self::commit_config_change_if(tx, deleted).await
    }

    pub async fn get_route(&self, model: &str) -> Result<Option<Route>> {
        let exists: Option<String> =
            sqlx::query_scalar("SELECT model FROM routes WHERE model = $1")
                .bind(model)
                .fetch_optional(&self.pool)
                .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let records: Vec<TargetRecord> = sqlx::query_as(
            "SELECT route_model, provider, upstream_model, weight FROM route_targets \
             WHERE route_model = $1 ORDER BY position",
        )
        .bind(model)
        .fetch_all(&self.pool)
        .await?;
        Ok(group_routes(vec![model.to_owned()], records).pop())
    }

    pub async fn list_routes(&self) -> Result<Vec<Route>> {
        Self::routes_in(&mut *self.pool.acquire().await?).await
    }

    pub(super) async fn routes_in(conn: &mut sqlx::AnyConnection) -> Result<Vec<Route>> {
        let models: Vec<String> = sqlx::query_scalar("SELECT model FROM routes ORDER BY model")
            .fetch_all(&mut *conn)
            .await?;
        let records: Vec<TargetRecord> = sqlx::query_as(
            "SELECT route_model, provider, upstream_model, weight FROM route_targets \
             ORDER BY route_model, position",
        )
        .fetch_all(&mut *conn)
        .await?;
        Ok(group_routes(models, records))
    }
}

async fn insert_targets(tx: &mut Tx, route: &Route) -> Result<()> {
    for (position, target) in route.targets.iter().enumerate() {
        sqlx::query(
            "INSERT INTO route_targets (route_model, position, provider, upstream_model, weight) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&route.model)
        .bind(position as i64)
        .bind(&target.provider)
        .bind(&target.model)
        .bind(i64::from(target.weight))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn group_routes(models: Vec<String>, records: Vec<TargetRecord>) -> Vec<Route> {
    let mut targets: BTreeMap<String, Vec<RouteTarget>> = BTreeMap::new();
    for record in records {
        targets
            .entry(record.route_model)
            .or_default()
            .push(RouteTarget {
                provider: record.provider,
                model: record.upstream_model,
                weight: u32::try_from(record.weight).unwrap_or(1),
            });
    }
    models
        .into_iter()
        .map(|model| Route {
            targets: targets.remove(&model).unwrap_or_default(),
            model,
        })
        .collect()
}
