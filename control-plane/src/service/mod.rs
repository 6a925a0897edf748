//! The admin operations, shared by the REST and gRPC surfaces: validation,
//! encryption of credentials, and a prompt snapshot refresh after each write.

mod admins;
mod cluster;
mod jwt_issuers;
mod patch;
mod quotas;
mod validate;

pub use patch::{merge_patch, replace_fields, Edit};
pub use quotas::spend_view;

use crate::access::{Need, Principal};
use crate::error::{Error, Result};
use crate::model::*;
use crate::snapshot::Refresher;
use crate::store::{Store, UsageQuery};
use shared::crypto::Cipher;
use shared::ids::{KeyId, TeamId, UserId};
use shared::keys::ApiKeySecret;

const DEFAULT_ROTATION_GRACE_SECONDS: u64 = 3_600;
const MAX_ROTATION_GRACE_SECONDS: u64 = 30 * 24 * 3_600;
use shared::time::{ms_to_rfc3339, now_ms, rfc3339_to_ms};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How long a data plane may stay silent and still count as connected.
const DATAPLANE_LIVENESS_MS: i64 = 45_000;

#[derive(Clone)]
pub struct Admin {
    store: Store,
    cipher: Arc<Cipher>,
    refresher: Refresher,
    jwks: crate::jwks::JwksFetcher,
    allow_link_local_upstreams: bool,
}

impl Admin {
    pub fn new(store: Store, cipher: Arc<Cipher>, refresher: Refresher) -> Self {
        Self {
            store,
            cipher,
            refresher,
            jwks: crate::jwks::JwksFetcher::default(),
            allow_link_local_upstreams: false,
        }
    }

    /// Whether provider base URLs may name link-local or metadata addresses.
    pub fn allowing_link_local_upstreams(mut self, allow: bool) -> Self {
        self.allow_link_local_upstreams = allow;
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The caller, as its token made it known.
    pub fn whoami(&self) -> Result<Whoami> {
        let who = crate::audit::principal()?;
        Ok(Whoami {
            actor: who.actor,
            role: who.role,
            team_id: who.team_id,
        })
    }

    /// The caller of a listing of teams' records, which it filters with `sees`.
    fn team_lister(&self) -> Result<Principal> {
        let who = crate::audit::principal()?;
        who.require(Need::TeamRead(who.team_scope()))?;
        Ok(who)
    }

    /// The calling principal, once it is allowed what `need` names.
    fn require(&self, need: Need<'_>) -> Result<Principal> {
        let principal = crate::audit::principal()?;
        principal.require(need)?;
        Ok(principal)
    }

    // ---- providers

    async fn create_provider_unaudited(&self, spec: ProviderSpec) -> Result<Provider> {
        validate::provider(&spec, false, self.allow_link_local_upstreams)?;
        let stored = self.stored_provider(&spec)?;
        self.store.insert_provider(&stored).await?;
        self.refresher.refresh_now();
        self.get_provider(&spec.name).await
    }

    async fn update_provider_unaudited(
        &self,
        name: &str,
        mut spec: ProviderSpec,
    ) -> Result<Provider> {
        spec.name = path_name(name, &spec.name, "name")?;
        let has_secret_key = self
            .store
            .get_provider(&spec.name)
            .await?
            .is_some_and(|p| p.secret_key_encrypted.is_some());
        validate::provider(&spec, has_secret_key, self.allow_link_local_upstreams)?;
        let stored = self.stored_provider(&spec)?;
        if !self.store.update_provider(&stored).await? {
            return Err(Error::NotFound(format!("provider {name:?}")));
        }
        self.refresher.refresh_now();
        self.get_provider(name).await
    }

    fn stored_provider(&self, spec: &ProviderSpec) -> Result<crate::store::ProviderRow> {
        let now = now_ms();
        Ok(crate::store::ProviderRow {
            name: spec.name.clone(),
            kind: spec.kind.as_str().to_owned(),
            base_url: normalise_base_url(&spec.base_url),
            api_key_encrypted: spec
                .api_key
                .as_ref()
                .map(|k| self.cipher.encrypt_to_string(k.expose())),
            secret_key_encrypted: spec
                .secret_key
                .as_ref()
                .map(|k| self.cipher.encrypt_to_string(k.expose())),
            settings: settings_json(&spec.settings)?,
            created_at: now,
            updated_at: now,
        })
    }

    pub async fn get_provider(&self, name: &str) -> Result<Provider> {
        self.require(Need::ConfigRead)?;
        let row = self.store.get_provider(name).await?;
        row.map(provider_view)
            .transpose()?
            .ok_or_else(|| Error::NotFound(format!("provider {name:?}")))
    }

    pub async fn list_providers(&self) -> Result<Vec<Provider>> {
        self.require(Need::ConfigRead)?;
        self.store
            .list_providers()
            .await?
            .into_iter()
            .map(provider_view)
            .collect()
    }

    async fn delete_provider_unaudited(&self, name: &str) -> Result<()> {
        if !self.store.delete_provider(name).await? {
            return Err(Error::NotFound(format!("provider {name:?}")));
        }
        self.refresher.refresh_now();
        Ok(())
    }

    // ---- routes

    async fn create_route_unaudited(&self, route: Route) -> Result<Route> {
        self.validate_route(&route).await?;
        self.store.insert_route(&route).await?;
        self.refresher.refresh_now();
        self.get_route(&route.model).await
    }

    async fn update_route_unaudited(&self, model: &str, mut route: Route) -> Result<Route> {
        route.model = path_name(model, &route.model, "model")?;
        self.validate_route(&route).await?;
        if !self.store.replace_route(&route).await? {
            return Err(Error::NotFound(format!("route {model:?}")));
        }
        self.refresher.refresh_now();
        self.get_route(model).await
    }

    async fn validate_route(&self, route: &Route) -> Result<()> {
        validate::route(route)?;
        route.limits.validate("limits.").map_err(Error::invalid)?;
        let providers = self.store.list_providers().await?;
        for (i, target) in route.targets.iter().enumerate() {
            if !providers.iter().any(|p| p.name == target.provider) {
                return Err(Error::invalid(format!(
                    "targets[{i}].provider: provider {:?} does not exist",
                    target.provider
                )));
            }
        }
        let others: Vec<Route> = self
            .store
            .list_routes()
            .await?
            .into_iter()
            .filter(|r| r.model != route.model)
            .collect();
        // Routes it sends traffic to must exist: a dangling name would fail
        // only when the traffic arrives.
        for (field, name) in validate::route_references(route) {
            if !others.iter().any(|r| r.model == name) {
                return Err(Error::invalid(format!(
                    "{field}: route {name:?} does not exist"
                )));
            }
        }
        for alias in &route.aliases {
            if let Some(owner) = others
                .iter()
                .find(|r| r.model == *alias || r.aliases.contains(alias))
            {
                return Err(Error::Conflict(format!(
                    "aliases: {alias:?} already names route {:?}",
                    owner.model
                )));
            }
        }
        if let Some(owner) = others.iter().find(|r| r.aliases.contains(&route.model)) {
            return Err(Error::Conflict(format!(
                "model: {:?} is already an alias of route {:?}",
                route.model, owner.model
            )));
        }
        self.check_cost_strategy(route).await?;
        self.check_route_priced(route, &others).await
    }

    pub async fn get_route(&self, model: &str) -> Result<Route> {
        self.require(Need::Catalog)?;
        self.store
            .get_route(model)
            .await?
            .ok_or_else(|| Error::NotFound(format!("route {model:?}")))
    }

    pub async fn list_routes(&self) -> Result<Vec<Route>> {
        self.require(Need::Catalog)?;
        self.store.list_routes().await
    }

    async fn delete_route_unaudited(&self, model: &str) -> Result<()> {
        let routes = self.store.list_routes().await?;
        if let Some(user) = routes.iter().find(|r| {
            r.model != model && validate::route_references(r).any(|(_, name)| name == model)
        }) {
            return Err(Error::Conflict(format!(
                "route {model:?} is a fallback or variant of route {:?}",
                user.model
            )));
        }
        if !self.store.delete_route(model).await? {
            return Err(Error::NotFound(format!("route {model:?}")));
        }
        self.refresher.refresh_now();
        Ok(())
    }

    // ---- teams and users

    async fn create_team_unaudited(&self, new: NewTeam) -> Result<Team> {
        validate::display_name("name", &new.name)?;
        validate::models(&new.models)?;
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
        };
        self.store.insert_team(&team, now).await?;
        self.refresher.refresh_now();
        Ok(team)
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

    async fn delete_team_unaudited(&self, id: &str) -> Result<()> {
        if !self.store.delete_team(id).await? {
            return Err(Error::NotFound(format!("team {id:?}")));
        }
        self.refresher.refresh_now();
        Ok(())
    }

    async fn create_user_unaudited(&self, mut new: NewUser) -> Result<User> {
        let who = crate::audit::principal()?;
        // A team admin's users are its team's, whether it says so or not.
        if non_empty(new.team_id.as_ref()).is_none() {
            new.team_id = who.team_scope().cloned();
        }
        who.require(Need::TeamWrite(non_empty(new.team_id.as_ref())))?;
        validate::display_name("name", &new.name)?;
        let email = new.email.filter(|e| !e.trim().is_empty());
        if let Some(email) = &email {
            validate::email(email)?;
        }
        let team_id = non_empty(new.team_id);
        if let Some(team) = &team_id {
            self.require_team(team, "team_id").await?;
        }
        let external_id = non_empty(new.external_id);
        if let Some(external_id) = &external_id {
            validate::external_id(external_id)?;
        }
        validate::models(&new.models)?;
        let team = self.team_of(team_id.as_ref()).await?;
        let ceilings = quotas::ceilings(None, team.as_ref());
        self.check_allowance(&new.limits, new.budget.as_ref(), &new.models, &ceilings)
            .await?;
        let now = now_ms();
        let user = User {
            id: UserId::generate(),
            name: new.name.trim().to_owned(),
            email,
            team_id,
            external_id,
            models: new.models,
            created_at: ms_to_rfc3339(now),
            spend: spend_view(&new.limits, new.budget.as_ref(), None, now),
            limits: new.limits,
            budget: new.budget,
        };
        self.store.insert_user(&user, now).await?;
        self.refresher.refresh_now();
        Ok(user)
    }

    pub async fn get_user(&self, id: &str) -> Result<User> {
        let mut user = self
            .store
            .get_user(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("user {id:?}")))?;
        self.require(Need::TeamRead(user.team_id.as_ref()))?;
        self.show_spend(std::slice::from_mut(&mut user)).await?;
        Ok(user)
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let who = self.team_lister()?;
        let mut users = self.store.list_users().await?;
        users.retain(|u| who.sees(u.team_id.as_ref()));
        self.show_spend(&mut users).await?;
        Ok(users)
    }

    async fn delete_user_unaudited(&self, id: &str) -> Result<()> {
        let user = self.get_user(id).await?;
        self.require(Need::TeamWrite(user.team_id.as_ref()))?;
        if !self.store.delete_user(&UserId::from(id.to_owned())).await? {
            return Err(Error::NotFound(format!("user {id:?}")));
        }
        self.refresher.refresh_now();
        Ok(())
    }

    async fn require_team(&self, id: &TeamId, field: &str) -> Result<()> {
        match self.store.get_team(id.as_str()).await? {
            Some(_) => Ok(()),
            None => Err(Error::invalid(format!(
                "{field}: team {id:?} does not exist"
            ))),
        }
    }

    // ---- keys

    async fn create_key_unaudited(&self, new: NewKey) -> Result<CreatedKey> {
        let who = crate::audit::principal()?;
        validate::display_name("name", &new.name)?;
        let user_id = non_empty(new.user_id);
        let mut team_id = non_empty(new.team_id);
        let mut user_models = Vec::new();
        let mut key_user = None;
        if user_id.is_none() && team_id.is_none() {
            team_id = who.team_scope().cloned();
        }
        if let Some(user_id) = &user_id {
            let user = self
                .store
                .get_user(user_id.as_str())
                .await?
                .ok_or_else(|| {
                    Error::invalid(format!("user_id: user {user_id:?} does not exist"))
                })?;
            match (&team_id, &user.team_id) {
                (Some(asked), Some(users)) if asked != users => {
                    return Err(Error::invalid(format!(
                        "team_id: user {user_id:?} belongs to team {users:?}, not {asked:?}"
                    )))
                }
                (None, Some(users)) => team_id = Some(users.clone()),
                _ => {}
            }
            user_models = user.models.clone();
            key_user = Some(user);
        }
        // Nobody hands out a key that reaches beyond their own team.
        who.require(Need::TeamWrite(team_id.as_ref()))?;
        let mut team_models = Vec::new();
        let mut key_team = None;
        if let Some(team) = &team_id {
            let found =
                self.store.get_team(team.as_str()).await?.ok_or_else(|| {
                    Error::invalid(format!("team_id: team {team:?} does not exist"))
                })?;
            team_models = found.models.clone();
            key_team = Some(found);
        }
        validate::models(&new.models)?;
        // Nor one that names models its user or team may not call.
        for (holder, allowed) in [("user", &user_models), ("team", &team_models)] {
            if allowed.is_empty() {
                continue;
            }
            if new.models.is_empty() {
                return Err(Error::invalid(format!(
                    "models: the key's {holder} may call only {allowed:?}; list the key's models within them"
                )));
            }
            if let Some((i, model)) = new
                .models
                .iter()
                .enumerate()
                .find(|(_, m)| !allowed.contains(m))
            {
                return Err(Error::invalid(format!(
                    "models[{i}]: the key's {holder} may not call {model:?}"
                )));
            }
        }
        // Nor one with higher limits or a larger budget than its user or team.
        let ceilings = quotas::ceilings(key_user.as_ref(), key_team.as_ref());
        self.check_allowance(&new.limits, new.budget.as_ref(), &new.models, &ceilings)
            .await?;
        let now = now_ms();
        let expires_at_ms = match new.expires_at.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => {
                let ms = rfc3339_to_ms(text).ok_or_else(|| {
                    Error::invalid(
                        "expires_at: expected an RFC 3339 time such as 2030-01-31T00:00:00Z",
                    )
                })?;
                if ms <= now {
                    return Err(Error::invalid("expires_at: must be in the future"));
                }
                Some(ms)
            }
        };
        let secret = ApiKeySecret::generate();
        let key = ApiKey {
            id: KeyId::generate(),
            name: new.name.trim().to_owned(),
            prefix: secret.display_prefix(),
            user_id,
            team_id,
            models: new.models,
            expires_at: expires_at_ms.map(ms_to_rfc3339),
            revoked: false,
            created_at: ms_to_rfc3339(now),
            previous_valid_until: None,
            spend: spend_view(&new.limits, new.budget.as_ref(), None, now),
            limits: new.limits,
            budget: new.budget,
        };
        self.store
            .insert_key(crate::store::NewKeyRow {
                key: &key,
                key_hash_hex: secret.hash().to_hex(),
                expires_at_ms,
                created_at_ms: now,
            })
            .await?;
        self.refresher.refresh_now();
        Ok(CreatedKey {
            key,
            secret: secret.expose().to_owned(),
        })
    }

    pub async fn get_key(&self, id: &str) -> Result<ApiKey> {
        let mut key = self
            .store
            .get_key(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("key {id:?}")))?;
        self.require(Need::TeamRead(key.team_id.as_ref()))?;
        self.show_spend(std::slice::from_mut(&mut key)).await?;
        Ok(key)
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let who = self.team_lister()?;
        let mut keys = self.store.list_keys().await?;
        keys.retain(|k| who.sees(k.team_id.as_ref()));
        self.show_spend(&mut keys).await?;
        Ok(keys)
    }

    /// A new secret at once; the previous one keeps working for the grace
    /// period, so clients can switch over without an outage.
    async fn rotate_key_unaudited(&self, id: &str, rotation: KeyRotation) -> Result<CreatedKey> {
        let grace_seconds = rotation
            .grace_seconds
            .unwrap_or(DEFAULT_ROTATION_GRACE_SECONDS);
        if grace_seconds > MAX_ROTATION_GRACE_SECONDS {
            return Err(Error::invalid(format!(
                "grace_seconds: at most {MAX_ROTATION_GRACE_SECONDS} (30 days)"
            )));
        }
        let current = self.get_key(id).await?;
        self.require(Need::TeamWrite(current.team_id.as_ref()))?;
        if current.revoked {
            return Err(Error::Conflict(format!("key {id:?} is revoked")));
        }
        let secret = ApiKeySecret::generate();
        let grace_ms = i64::try_from(grace_seconds * 1000).unwrap_or(i64::MAX);
        let rotated = self
            .store
            .rotate_key(
                id,
                &secret.hash().to_hex(),
                &secret.display_prefix(),
                now_ms().saturating_add(grace_ms),
            )
            .await?;
        if !rotated {
            // Revoked or deleted between the read and the write.
            return Err(Error::Conflict(format!("key {id:?} is revoked")));
        }
        self.refresher.refresh_now();
        Ok(CreatedKey {
            key: self.get_key(id).await?,
            secret: secret.expose().to_owned(),
        })
    }

    async fn revoke_key_unaudited(&self, id: &str) -> Result<ApiKey> {
        let current = self.get_key(id).await?;
        self.require(Need::TeamWrite(current.team_id.as_ref()))?;
        let key = self
            .store
            .revoke_key(id)
            .await?
            .ok_or_else(|| Error::NotFound(format!("key {id:?}")))?;
        self.refresher.refresh_now();
        Ok(key)
    }

    // ---- audited writes: each records who did what, with the resource
    // before and after (as the admin API shows it, so never a secret).

    pub async fn create_provider(&self, spec: ProviderSpec) -> Result<Provider> {
        self.require(Need::ConfigWrite)?;
        let created = self.create_provider_unaudited(spec).await?;
        self.audit(
            "provider.create",
            format!("provider/{}", created.name),
            None,
            Some(&created),
        )
        .await;
        Ok(created)
    }

    pub async fn update_provider(&self, name: &str, spec: ProviderSpec) -> Result<Provider> {
        self.require(Need::ConfigWrite)?;
        let before = self.get_provider(name).await.ok();
        let after = self.update_provider_unaudited(name, spec).await?;
        self.audit(
            "provider.update",
            format!("provider/{name}"),
            before.as_ref(),
            Some(&after),
        )
        .await;
        Ok(after)
    }

    pub async fn delete_provider(&self, name: &str) -> Result<()> {
        self.require(Need::ConfigWrite)?;
        let before = self.get_provider(name).await.ok();
        self.delete_provider_unaudited(name).await?;
        self.audit::<Provider>(
            "provider.delete",
            format!("provider/{name}"),
            before.as_ref(),
            None,
        )
        .await;
        Ok(())
    }

    pub async fn create_route(&self, route: Route) -> Result<Route> {
        self.require(Need::ConfigWrite)?;
        let created = self.create_route_unaudited(route).await?;
        self.audit(
            "route.create",
            format!("route/{}", created.model),
            None,
            Some(&created),
        )
        .await;
        Ok(created)
    }

    pub async fn update_route(&self, model: &str, route: Route) -> Result<Route> {
        self.require(Need::ConfigWrite)?;
        let before = self.get_route(model).await.ok();
        let after = self.update_route_unaudited(model, route).await?;
        self.audit(
            "route.update",
            format!("route/{model}"),
            before.as_ref(),
            Some(&after),
        )
        .await;
        Ok(after)
    }

    pub async fn delete_route(&self, model: &str) -> Result<()> {
        self.require(Need::ConfigWrite)?;
        let before = self.get_route(model).await.ok();
        self.delete_route_unaudited(model).await?;
        self.audit::<Route>(
            "route.delete",
            format!("route/{model}"),
            before.as_ref(),
            None,
        )
        .await;
        Ok(())
    }

    pub async fn create_team(&self, new: NewTeam) -> Result<Team> {
        self.require(Need::ConfigWrite)?;
        let created = self.create_team_unaudited(new).await?;
        self.audit(
            "team.create",
            format!("team/{}", created.id.as_str()),
            None,
            Some(&created),
        )
        .await;
        Ok(created)
    }

    pub async fn delete_team(&self, id: &str) -> Result<()> {
        self.require(Need::ConfigWrite)?;
        let before = self.get_team(id).await.ok();
        self.delete_team_unaudited(id).await?;
        self.audit::<Team>("team.delete", format!("team/{id}"), before.as_ref(), None)
            .await;
        Ok(())
    }

    pub async fn create_user(&self, new: NewUser) -> Result<User> {
        let created = self.create_user_unaudited(new).await?;
        self.audit(
            "user.create",
            format!("user/{}", created.id.as_str()),
            None,
            Some(&created),
        )
        .await;
        Ok(created)
    }

    pub async fn delete_user(&self, id: &str) -> Result<()> {
        let before = self.get_user(id).await.ok();
        self.delete_user_unaudited(id).await?;
        self.audit::<User>("user.delete", format!("user/{id}"), before.as_ref(), None)
            .await;
        Ok(())
    }

    pub async fn create_key(&self, new: NewKey) -> Result<CreatedKey> {
        let created = self.create_key_unaudited(new).await?;
        // The key's view only: its secret is never recorded.
        self.audit(
            "key.create",
            format!("key/{}", created.key.id.as_str()),
            None,
            Some(&created.key),
        )
        .await;
        Ok(created)
    }

    pub async fn rotate_key(&self, id: &str, rotation: KeyRotation) -> Result<CreatedKey> {
        let before = self.get_key(id).await.ok();
        let rotated = self.rotate_key_unaudited(id, rotation).await?;
        self.audit(
            "key.rotate",
            format!("key/{id}"),
            before.as_ref(),
            Some(&rotated.key),
        )
        .await;
        Ok(rotated)
    }

    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        let before = self.get_key(id).await.ok();
        let revoked = self.revoke_key_unaudited(id).await?;
        self.audit(
            "key.revoke",
            format!("key/{id}"),
            before.as_ref(),
            Some(&revoked),
        )
        .await;
        Ok(revoked)
    }

    /// Records a write. The write is already committed: a failure to record
    /// it is logged loudly rather than undoing it.
    async fn audit<T: serde::Serialize>(
        &self,
        action: &str,
        resource: String,
        before: Option<&T>,
        after: Option<&T>,
    ) {
        let context = crate::audit::current().unwrap_or_else(|_| {
            crate::audit::AuditContext::new(Principal::system("system".into()), None)
        });
        let json = |state: Option<&T>| state.and_then(|s| serde_json::to_string(s).ok());
        let entry = crate::store::NewAuditEntry {
            at_ms: now_ms(),
            actor: &context.principal.actor,
            action,
            resource: &resource,
            request_id: &context.request_id,
            before: json(before),
            after: json(after),
        };
        if let Err(error) = self.store.insert_audit(&entry).await {
            error.log_if_internal();
            tracing::error!(action, %resource, "an admin write could not be recorded in the audit log");
            metrics::counter!("switchboard_audit_failures_total").increment(1);
        }
    }

    pub async fn audit_log(&self, filter: AuditFilter) -> Result<Vec<AuditEntry>> {
        self.require(Need::ConfigRead)?;
        let since = match filter.since.as_deref().filter(|s| !s.is_empty()) {
            None => None,
            Some(text) => Some(
                rfc3339_to_ms(text)
                    .ok_or_else(|| Error::invalid("since: expected an RFC 3339 time"))?,
            ),
        };
        let limit = filter.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(Error::invalid("limit: must be between 1 and 1000"));
        }
        self.store.list_audit(&filter, since, limit).await
    }

    // ---- usage and data planes

    pub async fn usage(&self, filter: UsageFilter) -> Result<UsageAnswer> {
        let groups = UsageGroup::parse_list(filter.group_by.as_deref().unwrap_or_default())
            .map_err(Error::invalid)?;
        let query = self.usage_query(filter)?;
        if groups.is_empty() {
            return Ok(UsageAnswer::Totals(self.store.usage_totals(&query).await?));
        }
        let rows = self.store.usage_report(&query, &groups).await?;
        Ok(UsageAnswer::Report { rows })
    }

    /// The newest records matching the filter (its grouping aside): at most
    /// `limit` (100 unless asked), never more than 1,000.
    pub async fn usage_records(&self, filter: UsageFilter) -> Result<UsageRecords> {
        let limit = filter.limit.unwrap_or(100);
        const MAX_LISTED: u32 = 1_000;
        if !(1..=MAX_LISTED).contains(&limit) {
            return Err(Error::invalid(format!("limit: expected 1 to {MAX_LISTED}")));
        }
        let query = self.usage_query(filter)?;
        let records = self.store.usage_records(&query, limit).await?;
        Ok(UsageRecords { records })
    }

    /// A usage filter checked and in stored terms; a team admin's is its team's.
    fn usage_query(&self, mut filter: UsageFilter) -> Result<UsageQuery> {
        let who = crate::audit::principal()?;
        if non_empty(filter.team_id.as_ref()).is_none() {
            filter.team_id = who.team_scope().map(|t| t.as_str().to_owned());
        }
        let team = non_empty(filter.team_id.clone()).map(TeamId::from);
        who.require(Need::TeamRead(team.as_ref()))?;
        let time = |field: &str, value: Option<String>| -> Result<Option<i64>> {
            match value.filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(text) => rfc3339_to_ms(&text)
                    .map(Some)
                    .ok_or_else(|| Error::invalid(format!("{field}: expected an RFC 3339 time"))),
            }
        };
        Ok(UsageQuery {
            since_ms: time("since", filter.since)?,
            until_ms: time("until", filter.until)?,
            key_id: filter.key_id.filter(|v| !v.is_empty()),
            user_id: filter.user_id.filter(|v| !v.is_empty()),
            team_id: filter.team_id.filter(|v| !v.is_empty()),
            model: filter.model.filter(|v| !v.is_empty()),
            provider: filter.provider.filter(|v| !v.is_empty()),
            variant: filter.variant.filter(|v| !v.is_empty()),
            estimated: filter.estimated,
            request_id: filter.request_id.filter(|v| !v.is_empty()),
            trace_id: filter.trace_id.filter(|v| !v.is_empty()),
        })
    }

    pub async fn dataplanes(&self) -> Result<DataPlanes> {
        self.require(Need::ConfigRead)?;
        let now = now_ms();
        let data_planes = self
            .store
            .list_dataplanes()
            .await?
            .into_iter()
            .map(|row| DataPlane {
                connected: row.disconnected_at.is_none()
                    && now - row.last_seen < DATAPLANE_LIVENESS_MS,
                id: row.id,
                hostname: row.hostname,
                software_version: row.software_version,
                applied_version: row.applied_version,
                last_error: row.last_error,
                last_seen: ms_to_rfc3339(row.last_seen),
                control_plane: row.control_plane,
                // Written by this control plane: a list it cannot read is shown as none.
                open_breakers: serde_json::from_str(&row.open_breakers).unwrap_or_default(),
            })
            .collect();
        Ok(DataPlanes {
            current_version: self.store.config_version().await?,
            data_planes,
        })
    }
}

fn provider_view(row: crate::store::ProviderRow) -> Result<Provider> {
    Ok(Provider {
        kind: row
            .kind
            .parse()
            .map_err(|e| Error::Internal(format!("stored provider {:?}: {e}", row.name)))?,
        settings: serde_json::from_str(&row.settings).unwrap_or_default(),
        has_api_key: row.api_key_encrypted.is_some(),
        has_secret_key: row.secret_key_encrypted.is_some(),
        name: row.name,
        base_url: row.base_url,
        created_at: ms_to_rfc3339(row.created_at),
        updated_at: ms_to_rfc3339(row.updated_at),
    })
}

fn settings_json(settings: &BTreeMap<String, String>) -> Result<String> {
    serde_json::to_string(settings).map_err(|e| Error::Internal(e.to_string()))
}

fn normalise_base_url(url: &str) -> String {
    url.trim().trim_end_matches('/').to_owned()
}

/// On PUT the path names the resource; a body may repeat the name but not contradict it.
fn path_name(path: &str, body: &str, field: &str) -> Result<String> {
    if body.is_empty() || body == path {
        Ok(path.to_owned())
    } else {
        Err(Error::invalid(format!(
            "{field}: {body:?} in the body differs from {path:?} in the path; renaming is not supported"
        )))
    }
}

fn non_empty<T: AsRef<str>>(value: Option<T>) -> Option<T> {
    value.filter(|v| !v.as_ref().is_empty())
}
