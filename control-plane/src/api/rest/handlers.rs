//! One thin handler per REST route: parse, call the admin service, answer.

use super::{Body, Params, RestState};
use crate::error::Result;
use crate::model::*;
use crate::service::{merge_patch, PurgeCache};
use crate::settings::{ClusterSettings, SettingsUpdate};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};

type Created<T> = (StatusCode, Json<T>);

fn created<T>(value: T) -> Created<T> {
    (StatusCode::CREATED, Json(value))
}

/// The REST contract, generated from the handlers below and the model's
/// types; `openapi::document` adds what every operation shares.
#[derive(utoipa::OpenApi)]
#[openapi(paths(
    whoami,
    audit,
    create_admin,
    list_admins,
    get_admin,
    delete_admin,
    create_jwt_issuer,
    list_jwt_issuers,
    get_jwt_issuer,
    update_jwt_issuer,
    delete_jwt_issuer,
    create_provider,
    list_providers,
    get_provider,
    update_provider,
    delete_provider,
    create_route,
    list_routes,
    get_route,
    patch_provider,
    patch_route,
    update_route,
    delete_route,
    create_team,
    list_teams,
    get_team,
    delete_team,
    create_user,
    list_users,
    get_user,
    delete_user,
    create_key,
    list_keys,
    get_key,
    rotate_key,
    revoke_key,
    usage,
    usage_records,
    dataplanes,
    cluster,
    settings,
    update_settings,
    purge_cache,
    update_team,
    update_user,
    update_key,
    list_prices,
    put_price
))]
pub struct ApiDoc;

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
        .route("/cache/purge", axum::routing::post(purge_cache))
        .route("/audit", get(audit))
        .route("/whoami", get(whoami))
}

#[utoipa::path(
    get,
    path = "/whoami",
    tag = "admins",
    summary = "The caller: its name in the audit log, its role and team",
    responses((status = 200, body = Whoami, description = "OK"))
)]
async fn whoami(State(s): State<RestState>) -> Result<Json<Whoami>> {
    Ok(Json(s.admin.whoami()?))
}

#[utoipa::path(
    get,
    path = "/audit",
    tag = "audit",
    summary = "The audit log of admin writes, newest first",
    params(AuditFilter),
    responses((status = 200, body = AuditLog, description = "OK"))
)]
async fn audit(
    State(s): State<RestState>,
    Params(filter): Params<AuditFilter>,
) -> Result<Json<AuditLog>> {
    let rows = s.admin.audit_log(filter).await?;
    Ok(Json(AuditLog { rows }))
}

#[utoipa::path(
    post,
    path = "/admins",
    tag = "admins",
    summary = "Create an admin principal; its token is shown only in this answer",
    request_body = NewAdmin,
    responses((status = 201, body = CreatedAdmin, description = "OK"))
)]
async fn create_admin(
    State(s): State<RestState>,
    Body(new): Body<NewAdmin>,
) -> Result<Created<CreatedAdmin>> {
    Ok(created(s.admin.create_admin(new).await?))
}

#[utoipa::path(
    get,
    path = "/admins",
    tag = "admins",
    summary = "List admin principals",
    responses((status = 200, body = Vec<AdminPrincipal>, description = "OK"))
)]
async fn list_admins(State(s): State<RestState>) -> Result<Json<Vec<AdminPrincipal>>> {
    Ok(Json(s.admin.list_admins().await?))
}

#[utoipa::path(
    get,
    path = "/admins/{id}",
    tag = "admins",
    summary = "Get an admin principal",
    params(("id" = String, Path, description = "The resource's id")),
    responses((status = 200, body = AdminPrincipal, description = "OK"))
)]
async fn get_admin(
    State(s): State<RestState>,
    Path(id): Path<String>,
) -> Result<Json<AdminPrincipal>> {
    Ok(Json(s.admin.get_admin(&id).await?))
}

#[utoipa::path(
    delete,
    path = "/admins/{id}",
    tag = "admins",
    summary = "Delete an admin principal; its token stops working at once",
    params(("id" = String, Path, description = "The resource's id")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_admin(State(s): State<RestState>, Path(id): Path<String>) -> Result<StatusCode> {
    s.admin.delete_admin(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/jwt-issuers",
    tag = "jwt-issuers",
    summary = "Trust a JWT issuer",
    request_body = JwtIssuerSpec,
    responses((status = 201, body = JwtIssuer, description = "OK"))
)]
async fn create_jwt_issuer(
    State(s): State<RestState>,
    Body(spec): Body<JwtIssuerSpec>,
) -> Result<Created<JwtIssuer>> {
    Ok(created(s.admin.create_jwt_issuer(spec).await?))
}

#[utoipa::path(
    get,
    path = "/jwt-issuers",
    tag = "jwt-issuers",
    summary = "List JWT issuers",
    responses((status = 200, body = Vec<JwtIssuer>, description = "OK"))
)]
async fn list_jwt_issuers(State(s): State<RestState>) -> Result<Json<Vec<JwtIssuer>>> {
    Ok(Json(s.admin.list_jwt_issuers().await?))
}

#[utoipa::path(
    get,
    path = "/jwt-issuers/{name}",
    tag = "jwt-issuers",
    summary = "Get a JWT issuer",
    params(("name" = String, Path, description = "The resource's name")),
    responses((status = 200, body = JwtIssuer, description = "OK"))
)]
async fn get_jwt_issuer(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<Json<JwtIssuer>> {
    Ok(Json(s.admin.get_jwt_issuer(&name).await?))
}

#[utoipa::path(
    put,
    path = "/jwt-issuers/{name}",
    tag = "jwt-issuers",
    summary = "Replace a JWT issuer",
    params(("name" = String, Path, description = "The resource's name")),
    request_body = JwtIssuerSpec,
    responses((status = 200, body = JwtIssuer, description = "OK"))
)]
async fn update_jwt_issuer(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Body(spec): Body<JwtIssuerSpec>,
) -> Result<Json<JwtIssuer>> {
    Ok(Json(s.admin.update_jwt_issuer(&name, spec).await?))
}

#[utoipa::path(
    delete,
    path = "/jwt-issuers/{name}",
    tag = "jwt-issuers",
    summary = "Stop trusting a JWT issuer",
    params(("name" = String, Path, description = "The resource's name")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_jwt_issuer(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    s.admin.delete_jwt_issuer(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/providers",
    tag = "providers",
    summary = "Create a provider (credentials are write-only)",
    request_body = ProviderSpec,
    responses((status = 201, body = Provider, description = "OK"))
)]
async fn create_provider(
    State(s): State<RestState>,
    Body(spec): Body<ProviderSpec>,
) -> Result<Created<Provider>> {
    Ok(created(s.admin.create_provider(spec).await?))
}

#[utoipa::path(
    get,
    path = "/providers",
    tag = "providers",
    summary = "List providers",
    responses((status = 200, body = Vec<Provider>, description = "OK"))
)]
async fn list_providers(State(s): State<RestState>) -> Result<Json<Vec<Provider>>> {
    Ok(Json(s.admin.list_providers().await?))
}

#[utoipa::path(
    get,
    path = "/providers/{name}",
    tag = "providers",
    summary = "Get a provider",
    params(("name" = String, Path, description = "The resource's name")),
    responses((status = 200, body = Provider, description = "OK"))
)]
async fn get_provider(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<Json<Provider>> {
    Ok(Json(s.admin.get_provider(&name).await?))
}

#[utoipa::path(
    put,
    path = "/providers/{name}",
    tag = "providers",
    summary = "Replace a provider; absent credentials are kept",
    params(("name" = String, Path, description = "The resource's name")),
    request_body = ProviderSpec,
    responses((status = 200, body = Provider, description = "OK"))
)]
async fn update_provider(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Body(spec): Body<ProviderSpec>,
) -> Result<Json<Provider>> {
    Ok(Json(s.admin.update_provider(&name, spec).await?))
}

#[utoipa::path(
    delete,
    path = "/providers/{name}",
    tag = "providers",
    summary = "Delete a provider no route uses",
    params(("name" = String, Path, description = "The resource's name")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_provider(
    State(s): State<RestState>,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    s.admin.delete_provider(&name).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/routes",
    tag = "routes",
    summary = "Create a route",
    request_body = Route,
    responses((status = 201, body = Route, description = "OK"))
)]
async fn create_route(
    State(s): State<RestState>,
    Body(route): Body<Route>,
) -> Result<Created<Route>> {
    Ok(created(s.admin.create_route(route).await?))
}

#[utoipa::path(
    get,
    path = "/routes",
    tag = "routes",
    summary = "List routes (the models on offer)",
    responses((status = 200, body = Vec<Route>, description = "OK"))
)]
async fn list_routes(State(s): State<RestState>) -> Result<Json<Vec<Route>>> {
    Ok(Json(s.admin.list_routes().await?))
}

#[utoipa::path(
    get,
    path = "/routes/{model}",
    tag = "routes",
    summary = "Get a route",
    params(("model" = String, Path, description = "The model name (may contain slashes)")),
    responses((status = 200, body = Route, description = "OK"))
)]
async fn get_route(State(s): State<RestState>, Path(model): Path<String>) -> Result<Json<Route>> {
    Ok(Json(s.admin.get_route(&model).await?))
}

#[utoipa::path(
    patch,
    path = "/providers/{name}",
    tag = "providers",
    summary = "Change some fields of a provider (JSON merge patch)",
    params(("name" = String, Path, description = "The resource's name")),
    request_body(content = serde_json::Value, description = "A JSON merge patch (RFC 7396) of the resource: fields given replace, null removes"),
    responses((status = 200, body = Provider, description = "OK"))
)]
async fn patch_provider(
    State(s): State<RestState>,
    Path(name): Path<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<Provider>> {
    Ok(Json(
        s.admin.patch_provider(&name, merge_patch(patch)).await?,
    ))
}

#[utoipa::path(
    patch,
    path = "/routes/{model}",
    tag = "routes",
    summary = "Change some fields of a route (JSON merge patch)",
    params(("model" = String, Path, description = "The model name (may contain slashes)")),
    request_body(content = serde_json::Value, description = "A JSON merge patch (RFC 7396) of the resource: fields given replace, null removes"),
    responses((status = 200, body = Route, description = "OK"))
)]
async fn patch_route(
    State(s): State<RestState>,
    Path(model): Path<String>,
    Body(patch): Body<serde_json::Value>,
) -> Result<Json<Route>> {
    Ok(Json(s.admin.patch_route(&model, merge_patch(patch)).await?))
}

#[utoipa::path(
    put,
    path = "/routes/{model}",
    tag = "routes",
    summary = "Replace a route",
    params(("model" = String, Path, description = "The model name (may contain slashes)")),
    request_body = Route,
    responses((status = 200, body = Route, description = "OK"))
)]
async fn update_route(
    State(s): State<RestState>,
    Path(model): Path<String>,
    Body(route): Body<Route>,
) -> Result<Json<Route>> {
    Ok(Json(s.admin.update_route(&model, route).await?))
}

#[utoipa::path(
    delete,
    path = "/routes/{model}",
    tag = "routes",
    summary = "Delete a route no other route falls back to",
    params(("model" = String, Path, description = "The model name (may contain slashes)")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_route(State(s): State<RestState>, Path(model): Path<String>) -> Result<StatusCode> {
    s.admin.delete_route(&model).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/teams",
    tag = "teams",
    summary = "Create a team",
    request_body = NewTeam,
    responses((status = 201, body = Team, description = "OK"))
)]
async fn create_team(
    State(s): State<RestState>,
    Body(team): Body<NewTeam>,
) -> Result<Created<Team>> {
    Ok(created(s.admin.create_team(team).await?))
}

#[utoipa::path(
    get,
    path = "/teams",
    tag = "teams",
    summary = "List teams (a team admin sees its own)",
    responses((status = 200, body = Vec<Team>, description = "OK"))
)]
async fn list_teams(State(s): State<RestState>) -> Result<Json<Vec<Team>>> {
    Ok(Json(s.admin.list_teams().await?))
}

#[utoipa::path(
    get,
    path = "/teams/{id}",
    tag = "teams",
    summary = "Get a team",
    params(("id" = String, Path, description = "The resource's id")),
    responses((status = 200, body = Team, description = "OK"))
)]
async fn get_team(State(s): State<RestState>, Path(id): Path<String>) -> Result<Json<Team>> {
    Ok(Json(s.admin.get_team(&id).await?))
}

#[utoipa::path(
    delete,
    path = "/teams/{id}",
    tag = "teams",
    summary = "Delete a team",
    params(("id" = String, Path, description = "The resource's id")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_team(State(s): State<RestState>, Path(id): Path<String>) -> Result<StatusCode> {
    s.admin.delete_team(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/users",
    tag = "users",
    summary = "Create a user",
    request_body = NewUser,
    responses((status = 201, body = User, description = "OK"))
)]
async fn create_user(
    State(s): State<RestState>,
    Body(user): Body<NewUser>,
) -> Result<Created<User>> {
    Ok(created(s.admin.create_user(user).await?))
}

#[utoipa::path(
    get,
    path = "/users",
    tag = "users",
    summary = "List users",
    responses((status = 200, body = Vec<User>, description = "OK"))
)]
async fn list_users(State(s): State<RestState>) -> Result<Json<Vec<User>>> {
    Ok(Json(s.admin.list_users().await?))
}

#[utoipa::path(
    get,
    path = "/users/{id}",
    tag = "users",
    summary = "Get a user",
    params(("id" = String, Path, description = "The resource's id")),
    responses((status = 200, body = User, description = "OK"))
)]
async fn get_user(State(s): State<RestState>, Path(id): Path<String>) -> Result<Json<User>> {
    Ok(Json(s.admin.get_user(&id).await?))
}

#[utoipa::path(
    delete,
    path = "/users/{id}",
    tag = "users",
    summary = "Delete a user",
    params(("id" = String, Path, description = "The resource's id")),
    responses((status = 204, description = "Deleted"))
)]
async fn delete_user(State(s): State<RestState>, Path(id): Path<String>) -> Result<StatusCode> {
    s.admin.delete_user(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/keys",
    tag = "keys",
    summary = "Create an API key; its secret is shown only in this answer",
    request_body = NewKey,
    responses((status = 201, body = CreatedKey, description = "OK"))
)]
async fn create_key(
    State(s): State<RestState>,
    Body(key): Body<NewKey>,
) -> Result<Created<CreatedKey>> {
    Ok(created(s.admin.create_key(key).await?))
}

#[utoipa::path(
    get,
    path = "/keys",
    tag = "keys",
    summary = "List API keys (never their secrets)",
    responses((status = 200, body = Vec<ApiKey>, description = "OK"))
)]
async fn list_keys(State(s): State<RestState>) -> Result<Json<Vec<ApiKey>>> {
    Ok(Json(s.admin.list_keys().await?))
}

#[utoipa::path(
    get,
    path = "/keys/{id}",
    tag = "keys",
    summary = "Get an API key",
    params(("id" = String, Path, description = "The resource's id")),
    responses((status = 200, body = ApiKey, description = "OK"))
)]
async fn get_key(State(s): State<RestState>, Path(id): Path<String>) -> Result<Json<ApiKey>> {
    Ok(Json(s.admin.get_key(&id).await?))
}

#[utoipa::path(
    post,
    path = "/keys/{id}/rotate",
    tag = "keys",
    summary = "A new secret now; the old one works for the grace period",
    params(("id" = String, Path, description = "The resource's id")),
    request_body = KeyRotation,
    responses((status = 200, body = CreatedKey, description = "OK"))
)]
async fn rotate_key(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Body(rotation): Body<KeyRotation>,
) -> Result<Json<CreatedKey>> {
    Ok(Json(s.admin.rotate_key(&id, rotation).await?))
}

#[utoipa::path(
    delete,
    path = "/keys/{id}",
    tag = "keys",
    summary = "Revoke an API key",
    params(("id" = String, Path, description = "The resource's id")),
    responses((status = 200, body = ApiKey, description = "OK"))
)]
async fn revoke_key(State(s): State<RestState>, Path(id): Path<String>) -> Result<Json<ApiKey>> {
    Ok(Json(s.admin.revoke_key(&id).await?))
}

#[utoipa::path(
    get,
    path = "/usage",
    tag = "usage",
    summary = "Usage totals, or rows when grouped",
    params(UsageFilter),
    responses((status = 200, body = UsageAnswer, description = "OK"))
)]
async fn usage(
    State(s): State<RestState>,
    Params(filter): Params<UsageFilter>,
) -> Result<Json<UsageAnswer>> {
    Ok(Json(s.admin.usage(filter).await?))
}

#[utoipa::path(
    get,
    path = "/usage/records",
    tag = "usage",
    summary = "The newest usage records",
    params(UsageFilter),
    responses((status = 200, body = UsageRecords, description = "OK"))
)]
async fn usage_records(
    State(s): State<RestState>,
    Params(filter): Params<UsageFilter>,
) -> Result<Json<UsageRecords>> {
    Ok(Json(s.admin.usage_records(filter).await?))
}

#[utoipa::path(
    get,
    path = "/dataplanes",
    tag = "cluster",
    summary = "Data planes and the config version each applied",
    responses((status = 200, body = DataPlanes, description = "OK"))
)]
async fn dataplanes(State(s): State<RestState>) -> Result<Json<DataPlanes>> {
    Ok(Json(s.admin.dataplanes().await?))
}

#[utoipa::path(
    get,
    path = "/cluster",
    tag = "cluster",
    summary = "Control-plane replicas, the leader and the data planes",
    responses((status = 200, body = Cluster, description = "OK"))
)]
async fn cluster(State(s): State<RestState>) -> Result<Json<Cluster>> {
    Ok(Json(s.admin.cluster().await?))
}

#[utoipa::path(
    get,
    path = "/settings",
    tag = "settings",
    summary = "Cluster-wide settings",
    responses((status = 200, body = ClusterSettings, description = "OK"))
)]
async fn settings(State(s): State<RestState>) -> Result<Json<ClusterSettings>> {
    Ok(Json(s.admin.settings().await?))
}

#[utoipa::path(
    patch,
    path = "/settings",
    tag = "settings",
    summary = "Change cluster-wide settings",
    request_body = SettingsUpdate,
    responses((status = 200, body = ClusterSettings, description = "OK"))
)]
async fn update_settings(
    State(s): State<RestState>,
    Body(update): Body<SettingsUpdate>,
) -> Result<Json<ClusterSettings>> {
    Ok(Json(s.admin.update_settings(update).await?))
}

#[utoipa::path(
    post,
    path = "/cache/purge",
    tag = "settings",
    summary = "Forget cached answers of a route, of a team, or all of them",
    request_body = PurgeCache,
    responses(
        (status = 200, body = shared::cache::CachePurges, description = "The purge generations after this one"),
        // It names a route or team in its body: the error body is added with the others.
        (status = 404, description = "not_found")
    )
)]
async fn purge_cache(
    State(s): State<RestState>,
    Body(request): Body<PurgeCache>,
) -> Result<Json<shared::cache::CachePurges>> {
    Ok(Json(s.admin.purge_cache(request).await?))
}

#[utoipa::path(
    patch,
    path = "/teams/{id}",
    tag = "teams",
    summary = "Change a team's models, limits or budget",
    params(("id" = String, Path, description = "The resource's id")),
    request_body = LimitsUpdate,
    responses((status = 200, body = Team, description = "OK"))
)]
async fn update_team(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Body(update): Body<LimitsUpdate>,
) -> Result<Json<Team>> {
    Ok(Json(s.admin.update_team(&id, update).await?))
}

#[utoipa::path(
    patch,
    path = "/users/{id}",
    tag = "users",
    summary = "Change a user's models, limits or budget",
    params(("id" = String, Path, description = "The resource's id")),
    request_body = LimitsUpdate,
    responses((status = 200, body = User, description = "OK"))
)]
async fn update_user(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Body(update): Body<LimitsUpdate>,
) -> Result<Json<User>> {
    Ok(Json(s.admin.update_user(&id, update).await?))
}

#[utoipa::path(
    patch,
    path = "/keys/{id}",
    tag = "keys",
    summary = "Change a key's limits or budget",
    params(("id" = String, Path, description = "The resource's id")),
    request_body = LimitsUpdate,
    responses((status = 200, body = ApiKey, description = "OK"))
)]
async fn update_key(
    State(s): State<RestState>,
    Path(id): Path<String>,
    Body(update): Body<LimitsUpdate>,
) -> Result<Json<ApiKey>> {
    Ok(Json(s.admin.update_key(&id, update).await?))
}

#[utoipa::path(
    get,
    path = "/prices",
    tag = "prices",
    summary = "List prices",
    responses((status = 200, body = Vec<PriceView>, description = "OK"))
)]
async fn list_prices(State(s): State<RestState>) -> Result<Json<Vec<PriceView>>> {
    Ok(Json(s.admin.list_prices().await?))
}

#[utoipa::path(
    put,
    path = "/prices/{model}",
    tag = "prices",
    summary = "Set the price of an upstream model",
    params(("model" = String, Path, description = "The model name (may contain slashes)")),
    request_body = PriceSpec,
    responses((status = 200, body = PriceView, description = "OK"))
)]
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
