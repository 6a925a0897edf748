//! The live configuration: one config version as lookup tables, built off
//! the request path (whole from a snapshot, or from the previous version and
//! a delta) and swapped in whole, so a request sees one version or the next,
//! never a mix.

use crate::auth::directory::{Directory, DirectoryChanges};
use crate::auth::Caller;
pub use crate::error::InvalidConfig;
use crate::limits::Policy;
use crate::router::table::{RouteTable, Sources, TableChanges};
use arc_swap::ArcSwapOption;
use bytes::{Bytes, BytesMut};
use prost::Message;
use shared::proto;
use shared::time::now_ms;
use std::sync::Arc;

pub type Live = Arc<ArcSwapOption<Runtime>>;

#[derive(Debug)]
pub struct Runtime {
    pub version: i64,
    directory: Directory,
    /// Shared with the next version when a delta leaves it alone.
    routes: Arc<RouteTable>,
}

impl Runtime {
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    pub fn policy(&self) -> Policy<'_> {
        Policy {
            global: &self.routes.global_limits,
            prices: &self.routes.prices,
        }
    }

    /// Public model names the caller may use, sorted.
    pub fn models_for(&self, caller: &Caller) -> Vec<&str> {
        let mut models: Vec<&str> = self.routes.names().filter(|m| caller.allows(m)).collect();
        models.sort_unstable();
        models
    }

    pub fn key_count(&self) -> usize {
        self.directory.key_count()
    }

    /// A snapshot is checked as a whole: one bad entry rejects it, and the
    /// previous runtime keeps serving. Routing state of routes and targets
    /// that still exist is carried over from `previous`.
    pub fn build(
        snapshot: proto::Snapshot,
        previous: Option<&Runtime>,
    ) -> Result<Self, InvalidConfig> {
        let sources = Sources {
            providers: snapshot
                .providers
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
            routes: snapshot
                .routes
                .into_iter()
                .map(|r| (r.model.clone(), r))
                .collect(),
            prices: snapshot
                .prices
                .into_iter()
                .map(|p| ((p.model.clone(), p.provider.clone()), p))
                .collect(),
            global_limits: snapshot.global_limits,
            cache_purges: snapshot.cache_purges,
        };
        let routes = RouteTable::build(sources, previous.map(|p| &*p.routes))?;
        let directory = Directory::build(DirectoryChanges {
            keys: snapshot.keys,
            users: snapshot.users,
            teams: snapshot.teams,
            issuers: snapshot.jwt_issuers,
            ..DirectoryChanges::default()
        })?;
        Ok(Runtime {
            version: snapshot.version,
            directory,
            routes: Arc::new(routes),
        })
    }

    /// The next version: this one with a delta's changes, checked like a
    /// snapshot. `self` stays as it was (and serving) if it is refused.
    pub fn apply(&self, delta: proto::ConfigDelta) -> Result<Self, InvalidConfig> {
        if delta.from_version != self.version {
            return Err(InvalidConfig::OutOfOrder {
                from: delta.from_version,
                applied: self.version,
            });
        }
        let table = TableChanges {
            providers: delta.providers,
            removed_providers: delta.removed_providers,
            routes: delta.routes,
            removed_routes: delta.removed_routes,
            prices: delta.prices,
            removed_prices: delta.removed_prices,
            settings: delta.settings,
        };
        let routes = if table.is_empty() {
            self.routes.clone()
        } else {
            Arc::new(self.routes.changed(table)?)
        };
        let changes = DirectoryChanges {
            keys: delta.keys,
            removed_keys: delta.removed_keys,
            users: delta.users,
            removed_users: delta.removed_users,
            teams: delta.teams,
            removed_teams: delta.removed_teams,
            issuers: delta.jwt_issuers,
            removed_issuers: delta.removed_jwt_issuers,
        };
        let directory = if changes.is_empty() {
            self.directory.clone()
        } else {
            self.directory.changed(changes)?
        };
        Ok(Runtime {
            version: delta.version,
            directory,
            routes,
        })
    }

    /// This version as an encoded snapshot, with `spend` (the last counts):
    /// the copy on disk a cold start serves from. Keys are encoded one by one
    /// (protobuf merges concatenated messages), never all decoded at once.
    pub fn encode_snapshot(&self, spend: Vec<proto::SpendState>) -> Bytes {
        const KEYS_FIELD: u32 = 4;
        let sources = &self.routes.sources;
        let head = proto::Snapshot {
            version: self.version,
            providers: sources.providers.values().cloned().collect(),
            routes: sources.routes.values().cloned().collect(),
            keys: Vec::new(),
            created_at_ms: now_ms(),
            jwt_issuers: self.directory.snapshot_issuers(),
            users: self.directory.snapshot_users(),
            teams: self.directory.snapshot_teams(),
            prices: sources.prices.values().cloned().collect(),
            global_limits: sources.global_limits,
            cache_purges: sources.cache_purges.clone(),
            spend,
        };
        let mut bytes = BytesMut::with_capacity(head.encoded_len() + self.key_count() * 128);
        // A BytesMut grows as needed: encoding into it cannot fail.
        let _ = head.encode(&mut bytes);
        for key in self.directory.snapshot_keys() {
            prost::encoding::message::encode(KEYS_FIELD, &key, &mut bytes);
        }
        bytes.freeze()
    }
}

impl TryFrom<proto::Snapshot> for Runtime {
    type Error = InvalidConfig;

    fn try_from(snapshot: proto::Snapshot) -> Result<Self, InvalidConfig> {
        Runtime::build(snapshot, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::keys::KeyHash;

    fn snapshot() -> proto::Snapshot {
        proto::Snapshot {
            version: 7,
            providers: vec![proto::SnapshotProvider {
                name: "up".into(),
                kind: "openai".into(),
                base_url: "http://127.0.0.1:1/v1/".into(),
                api_key: "sk-up".into(),
                ..Default::default()
            }],
            routes: vec![proto::Route {
                model: "m".into(),
                aliases: vec!["m-alias".into()],
                targets: vec![
                    proto::RouteTarget {
                        provider: "up".into(),
                        model: "a".into(),
                        weight: 1,
                        ..Default::default()
                    },
                    proto::RouteTarget {
                        provider: "up".into(),
                        model: "b".into(),
                        weight: 3,
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            keys: vec![proto::SnapshotKey {
                id: "k".into(),
                key_hash: KeyHash::of("sk-sb-x").as_bytes().to_vec(),
                models: vec!["m".into()],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn key(id: &str, secret: &str) -> proto::SnapshotKey {
        proto::SnapshotKey {
            id: id.into(),
            key_hash: KeyHash::of(secret).as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn builds_lookup_tables() {
        let runtime = Runtime::try_from(snapshot()).expect("valid snapshot");
        let key = runtime
            .directory()
            .key(&KeyHash::of("sk-sb-x"))
            .expect("key present");
        assert!(key
            .models
            .as_ref()
            .is_some_and(|m| m.contains("m") && m.len() == 1));
        let route = runtime.routes().route("m").expect("route present");
        assert!(Arc::ptr_eq(
            route,
            runtime.routes().route("m-alias").expect("alias")
        ));
        assert_eq!(
            route.rotation,
            vec![1, 0, 1, 1],
            "weights 1 and 3, interleaved"
        );
        let call = route.targets[0]
            .provider
            .adapter
            .passthrough("/chat/completions", "a", bytes::Bytes::new())
            .expect("OpenAI passes through");
        assert_eq!(call.uri, "http://127.0.0.1:1/v1/chat/completions");
        assert!(!format!("{:?}", route.targets[0].provider).contains("sk-up"));
    }

    #[test]
    fn carries_routing_state_over_for_targets_that_remain() {
        let first = Runtime::try_from(snapshot()).expect("valid");
        let mut next = snapshot();
        next.routes[0].targets.remove(0);
        let second = Runtime::build(next, Some(&first)).expect("valid");
        let (old, new) = (
            first.routes().route("m").expect("m"),
            second.routes().route("m").expect("m"),
        );
        assert!(Arc::ptr_eq(&old.targets[1].health, &new.targets[0].health));
        assert!(Arc::ptr_eq(&old.state, &new.state));
    }

    #[test]
    fn rejects_a_route_to_a_missing_provider_as_a_whole() {
        let mut s = snapshot();
        s.routes[0].targets[1].provider = "ghost".into();
        let error = Runtime::try_from(s).expect_err("must be rejected");
        assert!(error.to_string().contains("ghost"));
    }

    #[test]
    fn rejects_malformed_provider_settings() {
        let mut s = snapshot();
        s.providers[0]
            .settings
            .insert("health_check_interval_ms".into(), "soon".into());
        let error = Runtime::try_from(s).expect_err("must be rejected");
        assert!(
            error.to_string().contains("health_check_interval_ms"),
            "{error}"
        );
    }

    #[test]
    fn a_delta_changes_only_what_it_names_and_leaves_the_previous_version_serving() {
        let first = Runtime::try_from(snapshot()).expect("valid");
        let delta = proto::ConfigDelta {
            from_version: 7,
            version: 8,
            keys: vec![key("k2", "sk-sb-two")],
            ..Default::default()
        };
        let second = first.apply(delta).expect("valid delta");
        assert_eq!(second.version, 8);
        assert!(second.directory().key(&KeyHash::of("sk-sb-two")).is_some());
        assert!(second.directory().key(&KeyHash::of("sk-sb-x")).is_some());
        assert!(first.directory().key(&KeyHash::of("sk-sb-two")).is_none());
        assert!(
            Arc::ptr_eq(&first.routes, &second.routes),
            "a delta of keys leaves the routing table shared"
        );

        // A rotated key replaces its entries; a removed one loses them all.
        let rotate = proto::ConfigDelta {
            from_version: 8,
            version: 9,
            keys: vec![key("k", "sk-sb-new"), key("k", "sk-sb-x")],
            ..Default::default()
        };
        let third = second.apply(rotate).expect("valid");
        assert!(third.directory().key(&KeyHash::of("sk-sb-new")).is_some());
        let again = proto::ConfigDelta {
            from_version: 9,
            version: 10,
            keys: vec![key("k", "sk-sb-newer"), key("k", "sk-sb-new")],
            ..Default::default()
        };
        let fourth = third.apply(again).expect("valid");
        assert!(
            fourth.directory().key(&KeyHash::of("sk-sb-x")).is_none(),
            "a second rotation ends the first one's grace at once"
        );
        let revoke = proto::ConfigDelta {
            from_version: 10,
            version: 11,
            removed_keys: vec!["k".into()],
            ..Default::default()
        };
        let fifth = fourth.apply(revoke).expect("valid");
        assert_eq!(fifth.key_count(), 1);
    }

    #[test]
    fn a_bad_or_out_of_order_delta_is_refused() {
        let first = Runtime::try_from(snapshot()).expect("valid");
        let gap = proto::ConfigDelta {
            from_version: 6,
            version: 8,
            ..Default::default()
        };
        assert!(matches!(
            first.apply(gap),
            Err(InvalidConfig::OutOfOrder {
                from: 6,
                applied: 7
            })
        ));
        let dangling = proto::ConfigDelta {
            from_version: 7,
            version: 8,
            removed_providers: vec!["up".into()],
            ..Default::default()
        };
        let error = first
            .apply(dangling)
            .expect_err("route m still names provider up");
        assert!(error.to_string().contains("\"up\""), "{error}");
        let bad_key = proto::ConfigDelta {
            from_version: 7,
            version: 8,
            keys: vec![proto::SnapshotKey {
                id: "short".into(),
                key_hash: vec![1, 2, 3],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert!(first.apply(bad_key).is_err());
    }

    #[test]
    fn the_disk_copy_serves_as_the_runtime_did() {
        let first = Runtime::try_from(snapshot()).expect("valid");
        let spend = vec![proto::SpendState {
            holder: "key/k".into(),
            spent_micros: 5,
            ..Default::default()
        }];
        let encoded = first.encode_snapshot(spend.clone());
        let decoded = proto::Snapshot::decode(encoded).expect("decodes");
        assert_eq!(decoded.spend, spend);
        let again = Runtime::try_from(decoded).expect("valid");
        assert_eq!(again.version, 7);
        let key = again
            .directory()
            .key(&KeyHash::of("sk-sb-x"))
            .expect("key kept");
        assert!(key.models.as_ref().is_some_and(|m| m.contains("m")));
        assert!(again.routes().route("m-alias").is_some());
    }
}
