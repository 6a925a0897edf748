//! Routes: the public model names on offer and how each picks its targets.

use super::write::Audited;
use super::{path_name, validate, Admin};
use crate::access::Need;
use crate::error::{Error, Result};
use crate::model::Route;

impl Admin {
    pub async fn create_route(&self, route: Route) -> Result<Route> {
        self.write(Need::ConfigWrite, async |grant| {
            self.validate_route(&route).await?;
            self.store.insert_route(grant, &route).await?;
            let created = self.get_route(&route.model).await?;
            let resource = format!("route/{}", created.model);
            Ok(Audited::new(
                created.clone(),
                "route.create",
                resource,
                None,
                Some(&created),
            ))
        })
        .await
    }

    pub async fn update_route(&self, model: &str, mut route: Route) -> Result<Route> {
        self.write(Need::ConfigWrite, async |grant| {
            route.model = path_name(model, &route.model, "model")?;
            let before = self.get_route(model).await?;
            self.validate_route(&route).await?;
            if !self.store.replace_route(grant, &route).await? {
                return Err(Error::NotFound(format!("route {model:?}")));
            }
            let after = self.get_route(model).await?;
            let resource = format!("route/{model}");
            Ok(Audited::new(
                after.clone(),
                "route.update",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }

    pub async fn delete_route(&self, model: &str) -> Result<()> {
        self.write(Need::ConfigWrite, async |grant| {
            let before = self.get_route(model).await?;
            let routes = self.store.list_routes().await?;
            if let Some(user) = routes.iter().find(|r| {
                r.model != model && validate::route_references(r).any(|(_, name)| name == model)
            }) {
                return Err(Error::Conflict(format!(
                    "route {model:?} is a fallback or variant of route {:?}",
                    user.model
                )));
            }
            if !self.store.delete_route(grant, model).await? {
                return Err(Error::NotFound(format!("route {model:?}")));
            }
            let resource = format!("route/{model}");
            Ok(Audited::new(
                (),
                "route.delete",
                resource,
                Some(&before),
                None,
            ))
        })
        .await
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
}
