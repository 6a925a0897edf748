//! A delta: what changed between two versions, read from the change log and
//! the rows as they stand at the newer one. Every replica reads the same log
//! and the same rows, so it builds the same delta for the same range.

use super::rows;
use crate::error::Result;
use crate::store::{price_of_entity, Change, EntityKind, Store};
use bytes::Bytes;
use prost::Message;
use shared::crypto::Cipher;
use shared::proto;
use shared::time::now_ms;
use std::collections::{BTreeSet, HashSet};

#[derive(Debug)]
pub struct EncodedDelta {
    pub from: i64,
    pub to: i64,
    pub bytes: Bytes,
    /// Entities it upserts or removes.
    pub changes: usize,
}

/// The delta from `from` to the current version; `None` when `from` is older
/// than the change log reaches (the caller sends a full snapshot instead).
pub async fn since(store: &Store, cipher: &Cipher, from: i64) -> Result<Option<EncodedDelta>> {
    let mut reader = store.config_reader().await?;
    let info = reader.version().await?;
    if from < info.history_from || from > info.version {
        return Ok(None);
    }
    let changes = reader.changes(from, info.version).await?;
    let named = |kind: EntityKind| -> BTreeSet<&str> {
        changes
            .iter()
            .filter(|c| c.kind == kind)
            .map(|c| c.entity.as_str())
            .collect()
    };
    let mut delta = proto::ConfigDelta {
        from_version: from,
        version: info.version,
        ..Default::default()
    };

    let providers = named(EntityKind::Provider);
    if !providers.is_empty() {
        let found: Vec<_> = reader
            .providers()
            .await?
            .into_iter()
            .filter(|p| providers.contains(p.name.as_str()))
            .collect();
        delta.removed_providers = absent(&providers, found.iter().map(|p| p.name.as_str()));
        delta.providers = found
            .into_iter()
            .map(|p| rows::provider(p, cipher))
            .collect::<Result<_>>()?;
    }
    let routes = named(EntityKind::Route);
    if !routes.is_empty() {
        let found: Vec<_> = reader
            .routes()
            .await?
            .into_iter()
            .filter(|r| routes.contains(r.model.as_str()))
            .collect();
        delta.removed_routes = absent(&routes, found.iter().map(|r| r.model.as_str()));
        delta.routes = found.into_iter().map(proto::Route::from).collect();
    }
    let keys = named(EntityKind::Key);
    if !keys.is_empty() {
        let ids: Vec<&str> = keys.iter().copied().collect();
        let now = now_ms();
        delta.keys = reader
            .keys(&ids)
            .await?
            .into_iter()
            .flat_map(|k| rows::keys(k, now))
            .collect();
        delta.removed_keys = absent(&keys, delta.keys.iter().map(|k| k.id.as_str()));
    }
    let users = named(EntityKind::User);
    if !users.is_empty() {
        let ids: Vec<&str> = users.iter().copied().collect();
        let found = reader.users(&ids).await?;
        // Users a data plane does not need (any more) are removed too.
        delta.removed_users = absent(&users, found.iter().map(|u| u.id.as_str()));
        delta.users = found.into_iter().map(rows::user).collect();
    }
    let teams = named(EntityKind::Team);
    if !teams.is_empty() {
        let ids: Vec<&str> = teams.iter().copied().collect();
        let found = reader.teams(&ids).await?;
        delta.removed_teams = absent(&teams, found.iter().map(|t| t.id.as_str()));
        delta.teams = found.into_iter().map(rows::team).collect();
    }
    let issuers = named(EntityKind::JwtIssuer);
    if !issuers.is_empty() {
        let found: Vec<_> = reader
            .jwt_issuers()
            .await?
            .into_iter()
            .filter(|i| issuers.contains(i.name.as_str()))
            .collect();
        delta.removed_jwt_issuers = absent(&issuers, found.iter().map(|i| i.name.as_str()));
        delta.jwt_issuers = found.iter().map(rows::issuer).collect();
    }
    let prices: BTreeSet<(String, String)> = changes
        .iter()
        .filter(|c| c.kind == EntityKind::Price)
        .filter_map(|c: &Change| price_of_entity(&c.entity))
        .collect();
    if !prices.is_empty() {
        let found: Vec<_> = reader
            .prices()
            .await?
            .into_iter()
            .map(rows::price)
            .filter(|p| prices.contains(&(p.model.clone(), p.provider.clone())))
            .collect();
        let present: HashSet<(&str, &str)> = found
            .iter()
            .map(|p| (p.model.as_str(), p.provider.as_str()))
            .collect();
        delta.removed_prices = prices
            .iter()
            .filter(|(m, p)| !present.contains(&(m.as_str(), p.as_str())))
            .map(|(model, provider)| proto::PriceKey {
                model: model.clone(),
                provider: provider.clone(),
            })
            .collect();
        delta.prices = found;
    }
    if !named(EntityKind::Settings).is_empty() {
        delta.settings = Some(reader.settings().await?.to_proto());
    }
    Ok(Some(EncodedDelta {
        from,
        to: info.version,
        bytes: delta.encode_to_vec().into(),
        changes: changes.len(),
    }))
}

/// The names in `changed` that are not among those found: removed.
fn absent<'a>(changed: &BTreeSet<&str>, found: impl Iterator<Item = &'a str>) -> Vec<String> {
    let found: HashSet<&str> = found.collect();
    changed
        .iter()
        .filter(|name| !found.contains(*name))
        .map(|name| (*name).to_owned())
        .collect()
}
