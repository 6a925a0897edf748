//! The live configuration: a snapshot turned into lookup tables, built off the
//! request path and swapped in whole, so a request sees one version or the next.

use crate::providers::{self, Adapter};
use arc_swap::ArcSwapOption;
use shared::ids::{KeyId, TeamId, UserId};
use shared::keys::KeyHash;
use shared::proto;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

pub type Live = Arc<ArcSwapOption<Runtime>>;

#[derive(Debug)]
pub struct Runtime {
    pub version: i64,
    keys: HashMap<KeyHash, Arc<KeyEntry>>,
    routes: HashMap<String, Route>,
}

#[derive(Debug)]
pub struct KeyEntry {
    pub id: KeyId,
    pub user_id: Option<UserId>,
    pub team_id: Option<TeamId>,
    /// `None` allows every model.
    models: Option<HashSet<String>>,
    pub expires_at_ms: Option<i64>,
}

impl KeyEntry {
    pub fn allows(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
    }
}

pub struct Provider {
    pub name: String,
    /// Holds the base URL and credentials; never printed.
    pub adapter: Box<dyn Adapter>,
}

impl std::fmt::Debug for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provider")
            .field("name", &self.name)
            .field("kind", &self.adapter.kind())
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct Target {
    pub provider: Arc<Provider>,
    pub upstream_model: String,
    pub weight: u32,
}

#[derive(Debug)]
pub struct Route {
    pub targets: Vec<Target>,
    total_weight: u64,
}

impl Route {
    /// Weighted random choice; `ticket` is uniform in `0..total_weight`.
    pub fn pick(&self, ticket: u64) -> &Target {
        let mut remaining = ticket;
        for target in &self.targets {
            let weight = u64::from(target.weight);
            if remaining < weight {
                return target;
            }
            remaining -= weight;
        }
        // Only reachable with a ticket out of range; the last target is as good as any.
        &self.targets[self.targets.len() - 1]
    }

    pub fn total_weight(&self) -> u64 {
        self.total_weight
    }
}

impl Runtime {
    pub fn key(&self, hash: &KeyHash) -> Option<&Arc<KeyEntry>> {
        self.keys.get(hash)
    }

    pub fn route(&self, model: &str) -> Option<&Route> {
        self.routes.get(model)
    }

    /// Public model names the key may use, sorted.
    pub fn models_for(&self, key: &KeyEntry) -> Vec<&str> {
        let mut models: Vec<&str> = self
            .routes
            .keys()
            .map(String::as_str)
            .filter(|m| key.allows(m))
            .collect();
        models.sort_unstable();
        models
    }

    pub fn key_count(&self) -> usize {
        self.keys.len()
    }
}

/// Why a snapshot was rejected; sent back to the control plane as a NACK.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSnapshot(String);

/// A snapshot is checked as a whole: one bad entry rejects it, and the
/// previous runtime keeps serving.
impl TryFrom<proto::Snapshot> for Runtime {
    type Error = InvalidSnapshot;

    fn try_from(snapshot: proto::Snapshot) -> Result<Self, InvalidSnapshot> {
        let bad = |what: String| InvalidSnapshot(what);
        let mut providers = HashMap::with_capacity(snapshot.providers.len());
        for p in &snapshot.providers {
            let adapter =
                providers::adapter(p).map_err(|e| bad(format!("provider {:?}: {e}", p.name)))?;
            let provider = Provider {
                name: p.name.clone(),
                adapter,
            };
            providers.insert(p.name.as_str(), Arc::new(provider));
        }
        let mut routes = HashMap::with_capacity(snapshot.routes.len());
        for r in &snapshot.routes {
            let targets = r
                .targets
                .iter()
                .map(|t| {
                    let provider = providers.get(t.provider.as_str()).ok_or_else(|| {
                        bad(format!(
                            "route {:?} names provider {:?}, which does not exist",
                            r.model, t.provider
                        ))
                    })?;
                    Ok(Target {
                        provider: provider.clone(),
                        upstream_model: t.model.clone(),
                        weight: t.weight.max(1),
                    })
                })
                .collect::<Result<Vec<_>, InvalidSnapshot>>()?;
            if targets.is_empty() {
                return Err(bad(format!("route {:?} has no targets", r.model)));
            }
            let total_weight = targets.iter().map(|t| u64::from(t.weight)).sum();
            routes.insert(
                r.model.clone(),
                Route {
                    targets,
                    total_weight,
                },
            );
        }
        let mut keys = HashMap::with_capacity(snapshot.keys.len());
        // Keys are most of a large snapshot: moved, not copied.
        for k in snapshot.keys {
            let hash = KeyHash::from_bytes(&k.key_hash)
                .ok_or_else(|| bad(format!("key {:?}: hash is not 32 bytes", k.id)))?;
            let entry = KeyEntry {
                user_id: (!k.user_id.is_empty()).then(|| UserId::from(k.user_id)),
                team_id: (!k.team_id.is_empty()).then(|| TeamId::from(k.team_id)),
                models: (!k.models.is_empty()).then(|| k.models.into_iter().collect()),
                id: KeyId::from(k.id),
                expires_at_ms: (k.expires_at_ms > 0).then_some(k.expires_at_ms),
            };
            keys.insert(hash, Arc::new(entry));
        }
        Ok(Runtime {
            version: snapshot.version,
            keys,
            routes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            routes: vec![proto::SnapshotRoute {
                model: "m".into(),
                targets: vec![
                    proto::SnapshotRouteTarget {
                        provider: "up".into(),
                        model: "a".into(),
                        weight: 1,
                    },
                    proto::SnapshotRouteTarget {
                        provider: "up".into(),
                        model: "b".into(),
                        weight: 3,
                    },
                ],
            }],
            keys: vec![proto::SnapshotKey {
                id: "k".into(),
                key_hash: KeyHash::of("sk-sb-x").as_bytes().to_vec(),
                models: vec!["m".into()],
                ..Default::default()
            }],
            created_at_ms: 0,
        }
    }

    #[test]
    fn builds_lookup_tables() {
        let runtime = Runtime::try_from(snapshot()).expect("valid snapshot");
        let key = runtime.key(&KeyHash::of("sk-sb-x")).expect("key present");
        assert!(key.allows("m") && !key.allows("other"));
        let route = runtime.route("m").expect("route present");
        assert_eq!(route.total_weight(), 4);
        assert_eq!(route.pick(0).upstream_model, "a");
        assert_eq!(route.pick(1).upstream_model, "b");
        assert_eq!(route.pick(3).upstream_model, "b");
        let call = route.targets[0]
            .provider
            .adapter
            .passthrough("/chat/completions", "a", bytes::Bytes::new())
            .expect("OpenAI passes through");
        assert_eq!(call.uri, "http://127.0.0.1:1/v1/chat/completions");
        assert!(!format!("{:?}", route.targets[0].provider).contains("sk-up"));
    }

    #[test]
    fn rejects_a_route_to_a_missing_provider_as_a_whole() {
        let mut s = snapshot();
        s.routes[0].targets[1].provider = "ghost".into();
        let error = Runtime::try_from(s).expect_err("must be rejected");
        assert!(error.to_string().contains("ghost"));
    }
}
