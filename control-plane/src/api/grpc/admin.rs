//! AdminService over gRPC: converts, calls the admin service, converts back.

use crate::error::Error;
use crate::model;
use crate::service::{replace_fields, Admin};
use shared::proto as pb;
use shared::proto::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

pub struct AdminGrpc {
    admin: Admin,
}

impl AdminGrpc {
    pub fn new(admin: Admin) -> Self {
        Self { admin }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn ok<T, U: From<T>>(value: T) -> Reply<U> {
    Ok(Response::new(U::from(value)))
}

fn deleted() -> Reply<pb::DeleteResponse> {
    Ok(Response::new(pb::DeleteResponse { deleted: true }))
}

#[tonic::async_trait]
impl AdminService for AdminGrpc {
    async fn create_provider(&self, r: Request<pb::ProviderSpec>) -> Reply<pb::Provider> {
        let spec = model::ProviderSpec::try_from(r.into_inner())?;
        ok(self.admin.create_provider(spec).await?)
    }

    async fn list_providers(
        &self,
        _: Request<pb::ListProvidersRequest>,
    ) -> Reply<pb::ListProvidersResponse> {
        let providers = self.admin.list_providers().await?;
        Ok(Response::new(pb::ListProvidersResponse {
            providers: providers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_provider(&self, r: Request<pb::GetProviderRequest>) -> Reply<pb::Provider> {
        ok(self.admin.get_provider(&r.into_inner().name).await?)
    }

    async fn update_provider(&self, r: Request<pb::ProviderSpec>) -> Reply<pb::Provider> {
        let spec = model::ProviderSpec::try_from(r.into_inner())?;
        let name = spec.name.clone();
        ok(self.admin.update_provider(&name, spec).await?)
    }

    async fn patch_provider(&self, r: Request<pb::PatchProviderRequest>) -> Reply<pb::Provider> {
        let patch = r.into_inner();
        let spec = patch.provider.unwrap_or_default();
        let name = spec.name.clone();
        let mut source = serde_json::Map::new();
        source.insert("kind".into(), spec.kind.into());
        source.insert("base_url".into(), spec.base_url.into());
        source.insert("settings".into(), serde_json::json!(spec.settings));
        if let Some(key) = spec.api_key {
            source.insert("api_key".into(), key.into());
        }
        if let Some(key) = spec.secret_key {
            source.insert("secret_key".into(), key.into());
        }
        let edit = replace_fields(source, mask(patch.update_mask), PROVIDER_FIELDS);
        ok(self.admin.patch_provider(&name, edit).await?)
    }

    async fn delete_provider(
        &self,
        r: Request<pb::DeleteProviderRequest>,
    ) -> Reply<pb::DeleteResponse> {
        self.admin.delete_provider(&r.into_inner().name).await?;
        deleted()
    }

    async fn create_route(&self, r: Request<pb::Route>) -> Reply<pb::Route> {
        ok(self.admin.create_route(r.into_inner().try_into()?).await?)
    }

    async fn list_routes(
        &self,
        _: Request<pb::ListRoutesRequest>,
    ) -> Reply<pb::ListRoutesResponse> {
        let routes = self.admin.list_routes().await?;
        Ok(Response::new(pb::ListRoutesResponse {
            routes: routes.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_route(&self, r: Request<pb::GetRouteRequest>) -> Reply<pb::Route> {
        ok(self.admin.get_route(&r.into_inner().model).await?)
    }

    async fn update_route(&self, r: Request<pb::Route>) -> Reply<pb::Route> {
        let route = model::Route::try_from(r.into_inner())?;
        let name = route.model.clone();
        ok(self.admin.update_route(&name, route).await?)
    }

    async fn patch_route(&self, r: Request<pb::PatchRouteRequest>) -> Reply<pb::Route> {
        let patch = r.into_inner();
        let route = model::Route::try_from(patch.route.unwrap_or_default())?;
        let name = route.model.clone();
        let source = match serde_json::to_value(&route) {
            Ok(serde_json::Value::Object(fields)) => fields,
            _ => return Err(Error::Internal("a route is not a JSON object".into()).into()),
        };
        let edit = replace_fields(source, mask(patch.update_mask), ROUTE_FIELDS);
        ok(self.admin.patch_route(&name, edit).await?)
    }

    async fn delete_route(&self, r: Request<pb::DeleteRouteRequest>) -> Reply<pb::DeleteResponse> {
        self.admin.delete_route(&r.into_inner().model).await?;
        deleted()
    }

    async fn create_team(&self, r: Request<pb::CreateTeamRequest>) -> Reply<pb::Team> {
        ok(self.admin.create_team(r.into_inner().try_into()?).await?)
    }

    async fn list_teams(&self, _: Request<pb::ListTeamsRequest>) -> Reply<pb::ListTeamsResponse> {
        let teams = self.admin.list_teams().await?;
        Ok(Response::new(pb::ListTeamsResponse {
            teams: teams.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_team(&self, r: Request<pb::GetTeamRequest>) -> Reply<pb::Team> {
        ok(self.admin.get_team(&r.into_inner().id).await?)
    }

    async fn delete_team(&self, r: Request<pb::DeleteTeamRequest>) -> Reply<pb::DeleteResponse> {
        self.admin.delete_team(&r.into_inner().id).await?;
        deleted()
    }

    async fn create_jwt_issuer(&self, r: Request<pb::JwtIssuerSpec>) -> Reply<pb::JwtIssuer> {
        ok(self.admin.create_jwt_issuer(r.into_inner().into()).await?)
    }

    async fn list_jwt_issuers(
        &self,
        _: Request<pb::ListJwtIssuersRequest>,
    ) -> Reply<pb::ListJwtIssuersResponse> {
        let issuers = self.admin.list_jwt_issuers().await?;
        Ok(Response::new(pb::ListJwtIssuersResponse {
            issuers: issuers.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_jwt_issuer(&self, r: Request<pb::GetJwtIssuerRequest>) -> Reply<pb::JwtIssuer> {
        ok(self.admin.get_jwt_issuer(&r.into_inner().name).await?)
    }

    async fn update_jwt_issuer(&self, r: Request<pb::JwtIssuerSpec>) -> Reply<pb::JwtIssuer> {
        let spec = model::JwtIssuerSpec::from(r.into_inner());
        let name = spec.name.clone();
        ok(self.admin.update_jwt_issuer(&name, spec).await?)
    }

    async fn delete_jwt_issuer(
        &self,
        r: Request<pb::DeleteJwtIssuerRequest>,
    ) -> Reply<pb::DeleteResponse> {
        self.admin.delete_jwt_issuer(&r.into_inner().name).await?;
        deleted()
    }

    async fn create_admin(&self, r: Request<pb::CreateAdminRequest>) -> Reply<pb::CreatedAdmin> {
        let new = model::NewAdmin::try_from(r.into_inner())?;
        ok(self.admin.create_admin(new).await?)
    }

    async fn list_admins(
        &self,
        _: Request<pb::ListAdminsRequest>,
    ) -> Reply<pb::ListAdminsResponse> {
        let admins = self.admin.list_admins().await?;
        Ok(Response::new(pb::ListAdminsResponse {
            admins: admins.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_admin(&self, r: Request<pb::GetAdminRequest>) -> Reply<pb::AdminPrincipal> {
        ok(self.admin.get_admin(&r.into_inner().id).await?)
    }

    async fn delete_admin(&self, r: Request<pb::DeleteAdminRequest>) -> Reply<pb::DeleteResponse> {
        self.admin.delete_admin(&r.into_inner().id).await?;
        deleted()
    }

    async fn create_user(&self, r: Request<pb::CreateUserRequest>) -> Reply<pb::User> {
        ok(self.admin.create_user(r.into_inner().try_into()?).await?)
    }

    async fn list_users(&self, _: Request<pb::ListUsersRequest>) -> Reply<pb::ListUsersResponse> {
        let users = self.admin.list_users().await?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_user(&self, r: Request<pb::GetUserRequest>) -> Reply<pb::User> {
        ok(self.admin.get_user(&r.into_inner().id).await?)
    }

    async fn delete_user(&self, r: Request<pb::DeleteUserRequest>) -> Reply<pb::DeleteResponse> {
        self.admin.delete_user(&r.into_inner().id).await?;
        deleted()
    }

    async fn create_key(&self, r: Request<pb::CreateKeyRequest>) -> Reply<pb::CreatedKey> {
        ok(self.admin.create_key(r.into_inner().try_into()?).await?)
    }

    async fn rotate_key(&self, r: Request<pb::RotateKeyRequest>) -> Reply<pb::CreatedKey> {
        let r = r.into_inner();
        let rotation = model::KeyRotation {
            grace_seconds: r.grace_seconds,
        };
        ok(self.admin.rotate_key(&r.id, rotation).await?)
    }

    async fn list_keys(&self, _: Request<pb::ListKeysRequest>) -> Reply<pb::ListKeysResponse> {
        let keys = self.admin.list_keys().await?;
        Ok(Response::new(pb::ListKeysResponse {
            keys: keys.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_key(&self, r: Request<pb::GetKeyRequest>) -> Reply<pb::ApiKey> {
        ok(self.admin.get_key(&r.into_inner().id).await?)
    }

    async fn revoke_key(&self, r: Request<pb::RevokeKeyRequest>) -> Reply<pb::ApiKey> {
        ok(self.admin.revoke_key(&r.into_inner().id).await?)
    }

    async fn list_audit(&self, r: Request<pb::AuditQuery>) -> Reply<pb::AuditEntries> {
        let q = r.into_inner();
        let present = |s: String| (!s.is_empty()).then_some(s);
        let filter = model::AuditFilter {
            resource: present(q.resource),
            actor: present(q.actor),
            since: present(q.since),
            // Zero is proto3's "unset"; a negative limit is refused as over REST.
            limit: (q.limit != 0).then_some(q.limit),
        };
        let json = |v: Option<serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_default();
        let entries = self
            .admin
            .audit_log(filter)
            .await?
            .into_iter()
            .map(|e| pb::AuditEntry {
                id: e.id,
                at: e.at,
                actor: e.actor,
                action: e.action,
                resource: e.resource,
                request_id: e.request_id,
                before: json(e.before),
                after: json(e.after),
            })
            .collect();
        Ok(tonic::Response::new(pb::AuditEntries { entries }))
    }

    async fn update_team(&self, r: Request<pb::UpdateLimitsRequest>) -> Reply<pb::Team> {
        let r = r.into_inner();
        let id = r.id.clone();
        ok(self.admin.update_team(&id, r.try_into()?).await?)
    }

    async fn update_user(&self, r: Request<pb::UpdateLimitsRequest>) -> Reply<pb::User> {
        let r = r.into_inner();
        let id = r.id.clone();
        ok(self.admin.update_user(&id, r.try_into()?).await?)
    }

    async fn update_key(&self, r: Request<pb::UpdateLimitsRequest>) -> Reply<pb::ApiKey> {
        let r = r.into_inner();
        let id = r.id.clone();
        ok(self.admin.update_key(&id, r.try_into()?).await?)
    }

    async fn put_price(&self, r: Request<pb::PriceSpec>) -> Reply<pb::Price> {
        ok(self.admin.put_price(r.into_inner().try_into()?).await?)
    }

    async fn list_prices(
        &self,
        _: Request<pb::ListPricesRequest>,
    ) -> Reply<pb::ListPricesResponse> {
        let prices = self.admin.list_prices().await?;
        Ok(Response::new(pb::ListPricesResponse {
            prices: prices.into_iter().map(Into::into).collect(),
        }))
    }

    async fn get_usage(&self, r: Request<pb::UsageQuery>) -> Reply<pb::UsageTotals> {
        ok(self.admin.usage(r.into_inner().into()).await?)
    }

    async fn list_usage_records(&self, r: Request<pb::UsageQuery>) -> Reply<pb::UsageRecordList> {
        ok(self.admin.usage_records(r.into_inner().into()).await?)
    }

    async fn list_data_planes(
        &self,
        _: Request<pb::ListDataPlanesRequest>,
    ) -> Reply<pb::ListDataPlanesResponse> {
        ok(self.admin.dataplanes().await?)
    }

    async fn get_cluster(&self, _: Request<pb::GetClusterRequest>) -> Reply<pb::Cluster> {
        ok(self.admin.cluster().await?)
    }

    async fn get_settings(&self, _: Request<pb::GetSettingsRequest>) -> Reply<pb::Settings> {
        ok(self.admin.settings().await?)
    }

    async fn update_settings(
        &self,
        request: Request<pb::UpdateSettingsRequest>,
    ) -> Reply<pb::Settings> {
        ok(self
            .admin
            .update_settings(request.into_inner().into())
            .await?)
    }

    async fn purge_cache(&self, request: Request<pb::PurgeCacheRequest>) -> Reply<pb::CachePurges> {
        let r = request.into_inner();
        let present = |s: String| (!s.is_empty()).then_some(s);
        let purged = self
            .admin
            .purge_cache(crate::service::PurgeCache {
                route: present(r.route),
                team_id: present(r.team_id),
                everything: r.everything,
            })
            .await?;
        ok(purged.to_proto())
    }
}

/// What PatchProvider and PatchRoute may name in their update masks.
const PROVIDER_FIELDS: &[&str] = &["kind", "base_url", "api_key", "secret_key", "settings"];
const ROUTE_FIELDS: &[&str] = &[
    "targets",
    "aliases",
    "strategy",
    "fallbacks",
    "retry",
    "timeouts",
    "split",
    "context_fallback",
    "content_fallback",
    "limits",
    "cache",
    "guardrails",
];

fn mask(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|m| m.paths).unwrap_or_default()
}
