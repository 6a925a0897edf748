use super::changes::{Change, EntityKind};
use super::{Store, Tx};
use crate::error::{already_exists, Error, Result};
use crate::model::{Route, RouteTarget};
use crate::service::write::grant::Grant;
use shared::time::now_ms;
use std::collections::BTreeMap;

#[derive(sqlx::FromRow)]
struct TargetRecord {
    route_model: String,
    provider: String,
    upstream_model: String,
    weight: i64,
    priority: i64,
    rpm: Option<i64>,
    tpm: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct RouteRecord {
    model: String,
    policy: String,
}

const TARGET_COLUMNS: &str = "route_model, provider, upstream_model, weight, priority, rpm, tpm";

/// The route's policy (all but its name and targets) as the JSON stored in
/// `routes.policy`: the admin API's own form, so no second field list.
fn policy_json(route: &Route) -> Result<String> {
    let mut value = serde_json::to_value(route).map_err(|e| Error::Internal(e.to_string()))?;
    if let Some(fields) = value.as_object_mut() {
        fields.remove("model");
        fields.remove("targets");
    }
    Ok(value.to_string())
}

fn route_of(record: RouteRecord, targets: Vec<RouteTarget>) -> Result<Route> {
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&record.policy).unwrap_or_default();
    fields.insert("model".into(), record.model.into());
    fields.insert(
        "targets".into(),
        serde_json::to_value(targets).map_err(|e| Error::Internal(e.to_string()))?,
    );
    serde_json::from_value(fields.into())
        .map_err(|e| Error::Internal(format!("stored route policy cannot be read: {e}")))
}

impl Store {
    pub async fn insert_route(&self, _: &Grant, route: &Route) -> Result<()> {
        let mut tx = self.begin().await?;
        let now = now_ms();
        sqlx::query(
            "INSERT INTO routes (model, created_at, updated_at, policy) VALUES ($1, $2, $2, $3)",
        )
        .bind(&route.model)
        .bind(now)
        .bind(policy_json(route)?)
        .execute(&mut *tx)
        .await
        .map_err(already_exists(format!("route {:?}", route.model)))?;
        insert_targets(&mut tx, route).await?;
        self.commit_config_change(tx, &[Change::new(EntityKind::Route, &route.model)])
            .await
            .map(drop)
    }

    pub async fn replace_route(&self, _: &Grant, route: &Route) -> Result<bool> {
        let mut tx = self.begin().await?;
        let found = sqlx::query("UPDATE routes SET updated_at = $2, policy = $3 WHERE model = $1")
            .bind(&route.model)
            .bind(now_ms())
            .bind(policy_json(route)?)
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
        self.commit_config_change(tx, &[Change::new(EntityKind::Route, &route.model)])
            .await?;
        Ok(true)
    }

    pub async fn delete_route(&self, _: &Grant, model: &str) -> Result<bool> {
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
        self.commit_config_change_if(tx, deleted, &[Change::new(EntityKind::Route, model)])
            .await
    }

    pub async fn get_route(&self, model: &str) -> Result<Option<Route>> {
        let record: Option<RouteRecord> =
            sqlx::query_as("SELECT model, policy FROM routes WHERE model = $1")
                .bind(model)
                .fetch_optional(&self.pool)
                .await?;
        let Some(record) = record else {
            return Ok(None);
        };
        let records: Vec<TargetRecord> = sqlx::query_as(&format!(
            "SELECT {TARGET_COLUMNS} FROM route_targets WHERE route_model = $1 ORDER BY position"
        ))
        .bind(model)
        .fetch_all(&self.pool)
        .await?;
        Ok(group_routes(vec![record], records)?.pop())
    }

    pub async fn list_routes(&self) -> Result<Vec<Route>> {
        Self::routes_in(&mut *self.pool.acquire().await?).await
    }

    pub(super) async fn routes_in(conn: &mut sqlx::AnyConnection) -> Result<Vec<Route>> {
        let routes: Vec<RouteRecord> =
            sqlx::query_as("SELECT model, policy FROM routes ORDER BY model")
                .fetch_all(&mut *conn)
                .await?;
        let records: Vec<TargetRecord> = sqlx::query_as(&format!(
            "SELECT {TARGET_COLUMNS} FROM route_targets ORDER BY route_model, position"
        ))
        .fetch_all(&mut *conn)
        .await?;
        group_routes(routes, records)
    }
}

async fn insert_targets(tx: &mut Tx, route: &Route) -> Result<()> {
    for (position, target) in route.targets.iter().enumerate() {
        sqlx::query(
            "INSERT INTO route_targets (route_model, position, provider, upstream_model, weight, \
             priority, rpm, tpm) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&route.model)
        .bind(position as i64)
        .bind(&target.provider)
        .bind(&target.model)
        .bind(i64::from(target.weight))
        .bind(i64::from(target.priority))
        .bind(target.rpm.map(i64::from))
        .bind(target.tpm.map(i64::from))
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

fn group_routes(routes: Vec<RouteRecord>, records: Vec<TargetRecord>) -> Result<Vec<Route>> {
    let mut targets: BTreeMap<String, Vec<RouteTarget>> = BTreeMap::new();
    let count = |n: Option<i64>| n.and_then(|n| u32::try_from(n).ok());
    for record in records {
        targets
            .entry(record.route_model)
            .or_default()
            .push(RouteTarget {
                provider: record.provider,
                model: record.upstream_model,
                weight: u32::try_from(record.weight).unwrap_or(1),
                priority: u32::try_from(record.priority).unwrap_or(0),
                rpm: count(record.rpm),
                tpm: count(record.tpm),
            });
    }
    routes
        .into_iter()
        .map(|record| {
            let route_targets = targets.remove(&record.model).unwrap_or_default();
            route_of(record, route_targets)
        })
        .collect()
}
