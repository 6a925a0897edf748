//! Purging the response cache: a purge moves a generation on in the
//! cluster's settings, which every data plane applies from its config
//! stream; answers cached under the old generation are never read again.

use super::write::Audited;
use super::Admin;
use crate::access::Need;
use crate::error::{Error, Result};
use serde::Deserialize;
use shared::cache::CachePurges;
use std::collections::BTreeMap;

/// `POST /cache/purge`: exactly one of the three.
#[derive(Clone, Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeCache {
    /// A route's public model name: its answers, for every caller.
    pub route: Option<String>,
    /// A team's id: the answers cached for its callers, on every route.
    pub team_id: Option<String>,
    /// Every cached answer.
    #[serde(default)]
    pub everything: bool,
}

/// What a purge moves on: one generation.
enum Purge {
    Route(String),
    Team(String),
    Everything,
}

impl PurgeCache {
    fn purge(self) -> Result<Purge> {
        match (self.route, self.team_id, self.everything) {
            (Some(route), None, false) => Ok(Purge::Route(route)),
            (None, Some(team), false) => Ok(Purge::Team(team)),
            (None, None, true) => Ok(Purge::Everything),
            _ => Err(Error::invalid(
                "route: name exactly one of route, team_id and everything",
            )),
        }
    }
}

fn bump(generations: &mut BTreeMap<String, u64>, name: String) {
    *generations.entry(name).or_default() += 1;
}

impl Admin {
    pub async fn purge_cache(&self, request: PurgeCache) -> Result<CachePurges> {
        let purge = request.purge()?;
        self.write(Need::ConfigWrite, async |grant| {
            let resource = match &purge {
                Purge::Route(model) => {
                    self.store
                        .get_route(model)
                        .await?
                        .ok_or_else(|| Error::NotFound(format!("route {model}")))?;
                    format!("cache/routes/{model}")
                }
                Purge::Team(id) => {
                    self.store
                        .get_team(id)
                        .await?
                        .ok_or_else(|| Error::NotFound(format!("team {id}")))?;
                    format!("cache/teams/{id}")
                }
                Purge::Everything => "cache".to_owned(),
            };
            let mut settings = self.store.settings().await?;
            let before = settings.cache_purges.clone();
            let purges = &mut settings.cache_purges;
            match purge {
                Purge::Route(model) => bump(&mut purges.routes, model),
                Purge::Team(id) => bump(&mut purges.teams, id),
                Purge::Everything => purges.everything += 1,
            }
            self.store.put_settings(grant, &settings).await?;
            let after = settings.cache_purges;
            Ok(Audited::new(
                after.clone(),
                "cache.purge",
                resource,
                Some(&before),
                Some(&after),
            ))
        })
        .await
    }
}
