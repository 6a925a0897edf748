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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::access::Principal;
    use crate::audit::{scope, AuditContext};
    use crate::service::Admin;
    use crate::snapshot::{full, Refresher};
    use serde_json::json;
    use shared::crypto::SecretKey;
    use std::sync::Arc;

    fn parse<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).expect("a valid body")
    }

    /// The change log, read back: what changed between two versions, as
    /// every replica would read it, and full snapshots for the rest.
    #[tokio::test]
    async fn deltas_carry_what_changed_between_two_versions() {
        for store in crate::store::testing::stores().await {
            deltas_carry_what_changed_between_two_versions_on(store).await;
        }
    }

    async fn deltas_carry_what_changed_between_two_versions_on(store: Store) {
        let cipher = Arc::new(Cipher::new(&SecretKey::generate()));
        let admin = Admin::new(store.clone(), cipher.clone(), Refresher::default());
        let context = || AuditContext::new(Principal::bootstrap(), None);
        let start = store.config_version().await.expect("version");
        assert_eq!(
            start, 0,
            "a fresh database has version 0; its first write is 1"
        );

        scope(context(), async {
            admin
                .create_provider(parse(json!({"name": "p", "kind": "openai_compatible",
                    "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-upstream"})))
                .await
                .expect("provider");
            admin
                .create_route(parse(
                    json!({"model": "m", "targets": [{"provider": "p", "model": "u"}]}),
                ))
                .await
                .expect("route");
        })
        .await;
        let key = scope(context(), admin.create_key(parse(json!({"name": "k"}))))
            .await
            .expect("key");

        let decode =
            |d: &EncodedDelta| proto::ConfigDelta::decode(d.bytes.clone()).expect("decodes");
        let first = since(&store, &cipher, start)
            .await
            .expect("read")
            .expect("in the log");
        assert_eq!((first.from, first.to), (start, start + 3));
        let delta = decode(&first);
        assert_eq!(delta.providers.len(), 1);
        assert_eq!(
            delta.providers[0].api_key, "sk-upstream",
            "decrypted for the stream"
        );
        assert_eq!(delta.routes[0].model, "m");
        assert_eq!(delta.keys[0].id, key.key.id.as_str());
        assert!(delta.removed_keys.is_empty());

        // Only what changed after a version: the revoked key, as removed.
        scope(context(), admin.revoke_key(key.key.id.as_str()))
            .await
            .expect("revoked");
        let second = decode(
            &since(&store, &cipher, first.to)
                .await
                .expect("read")
                .expect("in the log"),
        );
        assert_eq!(second.removed_keys, [key.key.id.as_str()]);
        assert!(second.providers.is_empty() && second.routes.is_empty() && second.keys.is_empty());
        assert_eq!(
            since(&store, &cipher, second.version)
                .await
                .expect("read")
                .expect("current")
                .changes,
            0
        );

        // Older than the log reaches (pruned), or ahead of the database: no delta.
        let fence = store.take_leadership("test").await.expect("leader");
        store
            .prune_config_history(fence, first.to)
            .await
            .expect("pruned");
        assert!(since(&store, &cipher, start).await.expect("read").is_none());
        assert!(since(&store, &cipher, second.version + 5)
            .await
            .expect("read")
            .is_none());
        assert!(since(&store, &cipher, first.to)
            .await
            .expect("read")
            .is_some());

        let snapshot = full::build(&store, &cipher).await.expect("snapshot");
        let decoded = proto::Snapshot::decode(snapshot.bytes.clone()).expect("decodes");
        assert_eq!(decoded.version, second.version);
        assert_eq!(
            (
                decoded.providers.len(),
                decoded.routes.len(),
                decoded.keys.len()
            ),
            (1, 1, 0)
        );
    }
}
