//! One thin handler per REST route: parse, call the admin service, answer.

use super::{Body, Params, RestState};
use crate::error::Result;
use crate::model::*;
use crate::service::merge_patch;
use crate::settings::{ClusterSettings, SettingsUpdate};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

type Created<T> = (StatusCode, Json<T>);

fn created<T>(value: T) -> Created<T> {
    (StatusCode::CREATED, Json(value))
}

pub fn routes() -> Router<RestState> {
    Router::new()
        .route("/providers", get(list_providers).post(create_provider))
        .route(
            "/providers/{name}",
            get(get_provider)
                .put(update_provider)
                .patch(patch_provider)
                .delete(delete_provider),
        )
        .route("/routes", get(list_routes).post(create_route))
        .route(
            "/routes/{*model}",
            get(get_route)
                .put(update_route)
                .patch(patch_route)
                .delete(delete_route),
        )
        .route(
            "/jwt-issuers",
            get(list_jwt_issuers).post(create_jwt_issuer),
        )
        .route(
            "/jwt-issuers/{name}",
            get(get_jwt_issuer)
                .put(update_jwt_issuer)
                .delete(delete_jwt_issuer),
        )
        .route("/admins", get(list_admins).post(create_admin))
        .route("/admins/{id}", get(get_admin).delete(delete_admin))
        .route("/teams", get(list_teams).post(create_team))
        .route(
            "/teams/{id}",
            get(get_team).patch(update_team).delete(delete_team),
        )
        .route("/users", get(list_users).post(create_user))
        .route(
            "/users/{id}",
            get(get_user).patch(update_user).delete(delete_user),
        )
        .route("/keys", get(list_keys).post(create_key))
        .route(
            "/keys/{id}",
            get(get_key).patch(update_key).delete(revoke_key),
        )
        .route("/prices", get(list_prices))
        .route("/prices/{*model}", axum::routing::put(put_price))
        .route("/keys/{id}/rotate", axum::routing::post(rotate_key))
        .route("/usage", get(usage))
        .route("/usage/records", get(usage_records))
        .route("/dataplanes", get(dataplanes))
        .route("/cluster", get(cluster))
        .route("/settings", get(settings).patch(update_settings))
        .route("/audit", get(audit))
}

async fn audit(
    State(s): State<RestState>,
    Params(filter): Params<AuditFilter>,
) -> Result<Json<serde_json::Value>> {
    let entries = s.admin.audit_log(filter).await?;
    Ok(Json(serde_json::json!({ "rows": entries })))
}

async fn create_admin(
    State(s): State<RestState>,
    Body(new): Body<NewAdmin>,
) -> Result<Created<CreatedAdmin>> {
    Ok(created(s.admin.create_admin(new).await?))
}

async fn list_admins(State(s): State<RestState>) -> Result<Json<Vec<AdminPrincipal>>> {
    Ok(Json(s.admin.list_admins().await?))
}

async fn get_admin(
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Json<AdminPrincipal>> {
    Ok(Json(s.admin.get_admin(&id).await?))
}

async fn delete_admin(State(s): State<RestState>, Path(id): Path<String>) -> Result<StatusCode> {
    s.admin.delete_admin(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_jwt_issuer(
    State(s): State<RestState>,
    Body(spec): Body<JwtIssuerSpec>,
) -> Result<Created<JwtIssuer>> {
    Ok(created(s.admin.create_jwt_issuer(spec).await?))
}

async fn list_jwt_issuers(State(s): State<RestState>) -> Result<Json<Vec<JwtIssuer>>> {
    Ok(Json(s.admin.list_jwt_issuers().await?))
}

async fn get_jwt_issuer(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<Json<JwtIssuer>> {
    Ok(Json(s.admin.get_jwt_issuer(&name).await?))
}

async fn update_jwt_issuer(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Body(spec): Body<JwtIssuerSpec>,
) -> Result<Json<JwtIssuer>> {
    Ok(Json(s.admin.update_jwt_issuer(&name, spec).await?))
}

async fn delete_jwt_issuer(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    s.admin.delete_jwt_issuer(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_provider(
    State(s): State<RestState>,
    Body(spec): Body<ProviderSpec>,
) -> Result<Created<Provider>> {
    Ok(created(s.admin.create_provider(spec).await?))
}

async fn list_providers(State(s): State<RestState>) -> Result<Json<Vec<Provider>>> {
    Ok(Json(s.admin.list_providers().await?))
}

async fn get_provider(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<Json<Provider>> {
    Ok(Json(s.admin.get_provider(&name).await?))
}

async fn update_provider(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Body(spec): Body<ProviderSpec>,
) -> Result<Json<Provider>> {
    Ok(Json(s.admin.update_provider(&name, spec).await?))
}

async fn delete_provider(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    s.admin.delete_provider(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_route(
    State(s): State<RestState>,
    Body(route): Body<Route>,
) -> Result<Created<Route>> {
    Ok(created(s.admin.create_route(route).await?))
}

async fn list_routes(State(s): State<RestState>) -> Result<Json<Vec<Route>>> {
    Ok(Json(s.admin.list_routes().await?))
}

async fn get_route(State(s): State<RestState>, Path(model): Path<String>) -> Result<Json<Route>> {
    Ok(Json(s.admin.get_route(&model).await?))
}

async fn patch_provider(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<Provider>> {
    Ok(Json(
        s.admin.patch_provider(&name, merge_patch(patch)).await?,
    ))
}

async fn patch_route(
    State(s): State<RestState>,
    Path(model): Path<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<Route>> {
    Ok(Json(s.admin.patch_route(&model, merge_patch(patch)).await?))
}

async fn update_route(
    State(s): State<RestState>,
    Path(model): Path<String>,
    Body(route): Body<Route>,
) -> Result<Json<Route>> {
    Ok(Json(s.admin.update_route(&model, route).await?))
}

async fn delete_route(State(s): State<RestState>, Path(model): Path<String>) -> Result<StatusCode> {
    s.admin.delete_route(&model).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_team(
    State(s): State<RestState>,
    Body(team): Body<NewTeam>,
) -> Result<Created<Team>> {
    Ok(created(s.admin.create_team(team).await?))
}

async fn list_teams(State(s): State<RestState>) -> Result<Json<Vec<Team>>> {
    Ok(Json(s.admin.list_teams().await?))
}

async fn get_team(State(s): State<RestState>, Path(id): Path<String>) -> Result<Json<Team>> {
    Ok(Json(s.admin.get_team(&id).await?))
}

async fn delete_team(State(s): State<RestState>, Path(id): Path<String>) -> Result<StatusCode> {
    s.admin.delete_team(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_user(
    State(s): State<RestState>,
    Body(user): Body<NewUser>,
) -> Result<Created<User>> {
    Ok(created(s.admin.create_user(user).await?))
}

async fn list_users(State(s): State<RestState>) -> Result<Json<Vec<User>>> {
    Ok(Json(s.admin.list_users().await?))
}

async fn get_user(State(s): State<RestState>, Path(id): Path<String>) -> Result<Json<User>> {
    Ok(Json(s.admin.get_user(&id).await?))
}

async fn delete_user(State(s): State<RestState>, Path(id): Path<String>) -> Result<StatusCode> {
    s.admin.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn create_key(
    State(s): State<RestState>,
    Body(key): Body<NewKey>,
) -> Result<Created<CreatedKey>> {
    Ok(created(s.admin.create_key(key).await?))
}

async fn list_keys(State(s): State<RestState>) -> Result<Json<Vec<ApiKey>>> {
    Ok(Json(s.admin.list_keys().await?))
}

async fn get_key(State(s): State<RestState>, Path(id): Path<String>) -> Result<Json<ApiKey>> {
    Ok(Json(s.admin.get_key(&id).await?))
}

async fn rotate_key(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Body(rotation): Body<KeyRotation>,
) -> Result<Json<CreatedKey>> {
    Ok(Json(s.admin.rotate_key(&id, rotation).await?))
}

async fn revoke_key(State(s): State<RestState>, Path(id): Path<String>) -> Result<Json<ApiKey>> {
    Ok(Json(s.admin.revoke_key(&id).await?))
}

async fn usage(
    State(s): State<RestState>,
    Params(filter): Params<UsageFilter>,
) -> Result<Json<UsageAnswer>> {
    Ok(Json(s.admin.usage(filter).await?))
}

async fn usage_records(
    State(s): State<RestState>,
    Params(filter): Params<UsageFilter>,
) -> Result<Json<UsageRecords>> {
    Ok(Json(s.admin.usage_records(filter).await?))
}

async fn dataplanes(State(s): State<RestState>) -> Result<Json<DataPlanes>> {
    Ok(Json(s.admin.dataplanes().await?))
}

async fn cluster(State(s): State<RestState>) -> Result<Json<Cluster>> {
    Ok(Json(s.admin.cluster().await?))
}

async fn settings(State(s): State<RestState>) -> Result<Json<ClusterSettings>> {
    Ok(Json(s.admin.settings().await?))
}

async fn update_settings(
    State(s): State<RestState>,
    Body(update): Body<SettingsUpdate>,
) -> Result<Json<ClusterSettings>> {
    Ok(Json(s.admin.update_settings(update).await?))
}

async fn update_team(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Body(update): Body<LimitsUpdate>,
) -> Result<Json<Team>> {
    Ok(Json(s.admin.update_team(&id, update).await?))
}

async fn update_user(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Body(update): Body<LimitsUpdate>,
) -> Result<Json<User>> {
    Ok(Json(s.admin.update_user(&id, update).await?))
}

async fn update_key(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Body(update): Body<LimitsUpdate>,
) -> Result<Json<ApiKey>> {
    Ok(Json(s.admin.update_key(&id, update).await?))
}

async fn list_prices(State(s): State<RestState>) -> Result<Json<Vec<PriceView>>> {
    Ok(Json(s.admin.list_prices().await?))
}

/// The model is the rest of the path: upstream names may hold slashes.
async fn put_price(
    State(s): State<RestState>,
    Path(model): Path<String>,
    Body(mut spec): Body<PriceSpec>,
) -> Result<Json<PriceView>> {
    if !spec.model.is_empty() && spec.model != model {
        return Err(crate::error::Error::invalid(format!(
            "model: {:?} in the body differs from {model:?} in the path",
            spec.model
        )));
    }
    spec.model = model;
    Ok(Json(s.admin.put_price(spec).await?))
}
