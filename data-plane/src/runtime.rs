//! The live configuration: a snapshot turned into lookup tables, built off the
//! request path and swapped in whole, so a request sees one version or the next.

use crate::auth::directory::Directory;
use crate::auth::Caller;
use crate::limits::Policy;
use crate::providers::{self, Adapter};
use crate::router::budget::RetryBudget;
use crate::router::health::TargetState;
use arc_swap::ArcSwapOption;
use shared::limits::RateLimits;
use shared::money::Prices;
use shared::proto;
use shared::routing::Strategy;
use std::collections::HashMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

pub type Live = Arc<ArcSwapOption<Runtime>>;

#[derive(Debug)]
pub struct Runtime {
    pub version: i64,
    directory: Directory,
    /// By public name and by alias.
    routes: HashMap<String, Arc<Route>>,
    /// Global limits, prices and the control plane's count of spend.
    policy: Policy,
}

pub struct Provider {
    pub name: String,
    /// Holds the base URL and credentials; never printed.
    pub adapter: Box<dyn Adapter>,
    /// Active health checks, when the provider's settings ask for them.
    pub health_check: Option<HealthCheck>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub interval: Duration,
    pub timeout: Duration,
}

impl HealthCheck {
    fn of(settings: &HashMap<String, String>) -> Option<Self> {
        let ms = |name: &str| {
            settings
                .get(name)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis)
        };
        let interval = ms("health_check_interval_ms")?;
        Some(HealthCheck {
            interval,
            timeout: ms("health_check_timeout_ms").unwrap_or(interval.min(Duration::from_secs(5))),
        })
    }
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
    pub priority: u32,
    pub rpm: Option<u32>,
    pub tpm: Option<u32>,
    /// Input plus output price per million tokens, for the `cost` strategy.
    pub price_rank: Option<i64>,
    /// Carried over from the previous runtime while the target exists.
    pub health: Arc<TargetState>,
}

impl Target {
    /// Not ejected and under its capacity this minute.
    pub fn available(&self) -> bool {
        !self.health.ejected() && !self.health.saturated(self.rpm, self.tpm)
    }
}

#[derive(Debug)]
pub struct Route {
    pub model: String,
    pub targets: Vec<Target>,
    pub strategy: Strategy,
    pub fallbacks: Vec<String>,
    /// `None`: the data plane's default.
    pub retry: Option<RetryPolicy>,
    pub timeouts: RouteTimeouts,
    /// Other routes' names and their percentage of this route's traffic.
    pub split: Vec<(String, u32)>,
    pub context_fallback: Option<String>,
    pub content_fallback: Option<String>,
    /// Limits on the model over every caller.
    pub limits: RateLimits,
    /// Smooth weighted round robin: target indexes in serving order.
    pub rotation: Vec<usize>,
    /// Carried over from the previous runtime while the route exists.
    pub state: Arc<RouteState>,
}

#[derive(Clone, Copy, Debug)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub backoff: Duration,
}

/// `None`: the data plane's default.
#[derive(Clone, Copy, Debug, Default)]
pub struct RouteTimeouts {
    pub connect: Option<Duration>,
    pub first_token: Option<Duration>,
    pub idle: Option<Duration>,
    pub total: Option<Duration>,
}

/// A route's rotation position and retry budget.
#[derive(Debug, Default)]
pub struct RouteState {
    pub cursor: AtomicUsize,
    pub budget: RetryBudget,
}

impl Runtime {
    pub fn directory(&self) -> &Directory {
        &self.directory
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn route(&self, model: &str) -> Option<&Arc<Route>> {
        self.routes.get(model)
    }

    /// Public model names the caller may use, sorted.
    pub fn models_for(&self, caller: &Caller) -> Vec<&str> {
        let mut models: Vec<&str> = self
            .routes
            .keys()
            .map(String::as_str)
            .filter(|m| caller.allows(m))
            .collect();
        models.sort_unstable();
        models
    }

    pub fn key_count(&self) -> usize {
        self.directory.key_count()
    }

    /// Providers with active health checks, and the targets (of every route)
    /// that use each.
    pub fn health_checked(&self) -> Vec<(Arc<Provider>, Vec<Arc<TargetState>>)> {
        let mut checked: Vec<(Arc<Provider>, Vec<Arc<TargetState>>)> = Vec::new();
        for route in self.routes.values() {
            for target in &route.targets {
                if target.provider.health_check.is_none() {
                    continue;
                }
                let entry = match checked
                    .iter_mut()
                    .find(|(p, _)| Arc::ptr_eq(p, &target.provider))
                {
                    Some(entry) => entry,
                    None => {
                        checked.push((target.provider.clone(), Vec::new()));
                        let last = checked.len() - 1;
                        &mut checked[last]
                    }
                };
                // Aliases share a route: each target's state once.
                if !entry.1.iter().any(|s| Arc::ptr_eq(s, &target.health)) {
                    entry.1.push(target.health.clone());
                }
            }
        }
        checked
    }
}

impl TryFrom<proto::Snapshot> for Runtime {
    type Error = InvalidSnapshot;

    fn try_from(snapshot: proto::Snapshot) -> Result<Self, InvalidSnapshot> {
        Runtime::build(snapshot, None)
    }
}

impl Runtime {
    /// A snapshot is checked as a whole: one bad entry rejects it, and the
    /// previous runtime keeps serving. Routing state (health, rotation,
    /// retry budget) of routes and targets that still exist is carried over
    /// from `previous`.
    pub fn build(
        mut snapshot: proto::Snapshot,
        previous: Option<&Runtime>,
    ) -> Result<Self, InvalidSnapshot> {
        let bad = |what: String| InvalidSnapshot(what);
        let policy = Policy::build(&mut snapshot).map_err(bad)?;
        let mut providers = HashMap::with_capacity(snapshot.providers.len());
        for p in &snapshot.providers {
            let adapter =
                providers::adapter(p).map_err(|e| bad(format!("provider {:?}: {e}", p.name)))?;
            let provider = Provider {
                name: p.name.clone(),
                adapter,
                health_check: HealthCheck::of(&p.settings),
            };
            providers.insert(p.name.as_str(), Arc::new(provider));
        }
        let mut routes = HashMap::with_capacity(snapshot.routes.len());
        for r in &snapshot.routes {
            let old = previous
                .and_then(|p| p.routes.get(&r.model))
                .filter(|old| old.model == r.model);
            let route = build_route(r, &providers, &policy.prices, old).map_err(bad)?;
            let route = Arc::new(route);
            for alias in &r.aliases {
                routes.insert(alias.clone(), route.clone());
            }
            routes.insert(r.model.clone(), route);
        }
        for route in routes.values() {
            let named = route
                .fallbacks
                .iter()
                .chain(route.split.iter().map(|(name, _)| name))
                .chain(route.context_fallback.iter())
                .chain(route.content_fallback.iter());
            for name in named {
                if !routes.contains_key(name) {
                    return Err(bad(format!(
                        "route {:?} sends traffic to route {name:?}, which does not exist",
                        route.model
                    )));
                }
            }
        }
        let directory = Directory::build(
            snapshot.keys,
            snapshot.users,
            snapshot.teams,
            &snapshot.jwt_issuers,
        )
        .map_err(bad)?;
        Ok(Runtime {
            version: snapshot.version,
            directory,
            routes,
            policy,
        })
    }
}

fn millis(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
}

fn build_route(
    r: &proto::Route,
    providers: &HashMap<&str, Arc<Provider>>,
    prices: &Prices,
    old: Option<&Arc<Route>>,
) -> Result<Route, String> {
    let targets = r
        .targets
        .iter()
        .map(|t| {
            let provider = providers.get(t.provider.as_str()).ok_or_else(|| {
                format!(
                    "route {:?} names provider {:?}, which does not exist",
                    r.model, t.provider
                )
            })?;
            let health = old
                .and_then(|old| {
                    old.targets
                        .iter()
                        .find(|o| o.provider.name == t.provider && o.upstream_model == t.model)
                })
                .map(|o| o.health.clone())
                .unwrap_or_default();
            Ok(Target {
                provider: provider.clone(),
                upstream_model: t.model.clone(),
                weight: t.weight.max(1),
                priority: t.priority,
                rpm: (t.rpm > 0).then_some(t.rpm),
                tpm: (t.tpm > 0).then_some(t.tpm),
                price_rank: prices
                    .get(&t.provider, &t.model)
                    .map(|p| p.input.0.saturating_add(p.output.0)),
                health,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    if targets.is_empty() {
        return Err(format!("route {:?} has no targets", r.model));
    }
    let strategy: Strategy = r
        .strategy
        .parse()
        .map_err(|e| format!("route {:?}: {e}", r.model))?;
    let rotation = smooth_rotation(&targets.iter().map(|t| t.weight).collect::<Vec<_>>());
    let present = |s: &String| (!s.is_empty()).then(|| s.clone());
    Ok(Route {
        model: r.model.clone(),
        targets,
        strategy,
        fallbacks: r.fallbacks.clone(),
        retry: r.retry.map(|p| RetryPolicy {
            max_attempts: p.max_attempts.max(1),
            backoff: Duration::from_millis(u64::from(p.backoff_ms)),
        }),
        timeouts: r
            .timeouts
            .map(|t| RouteTimeouts {
                connect: millis(t.connect_ms),
                first_token: millis(t.first_token_ms),
                idle: millis(t.idle_ms),
                total: millis(t.total_ms),
            })
            .unwrap_or_default(),
        split: r
            .split
            .iter()
            .map(|v| (v.model.clone(), v.weight))
            .collect(),
        context_fallback: present(&r.context_fallback),
        content_fallback: present(&r.content_fallback),
        limits: RateLimits::from_proto(r.limits.as_ref()),
        rotation,
        state: old.map(|o| o.state.clone()).unwrap_or_default(),
    })
}

/// Nginx's smooth weighted round robin, unrolled once: weights 5,1,1 serve
/// a,a,b,a,c,a,a rather than a,a,a,a,a,b,c. Weights are reduced by their
/// greatest common divisor and the cycle is capped, so it stays small.
fn smooth_rotation(weights: &[u32]) -> Vec<usize> {
    const MAX_CYCLE: u64 = 4096;
    let gcd = weights.iter().fold(0u32, |a, &b| gcd(a, b)).max(1);
    let mut reduced: Vec<u64> = weights.iter().map(|w| u64::from(w / gcd)).collect();
    let total: u64 = reduced.iter().sum();
    if total > MAX_CYCLE {
        for w in &mut reduced {
            *w = (*w * MAX_CYCLE / total).max(1);
        }
    }
    let total: i64 = reduced.iter().sum::<u64>() as i64;
    let mut current = vec![0i64; reduced.len()];
    (0..total)
        .map(|_| {
            for (c, w) in current.iter_mut().zip(&reduced) {
                *c += *w as i64;
            }
            let best = (0..current.len())
                .max_by_key(|&i| (current[i], std::cmp::Reverse(i)))
                .unwrap_or(0);
            current[best] -= total;
            best
        })
        .collect()
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Why a snapshot was rejected; sent back to the control plane as a NACK.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSnapshot(String);

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
        let route = runtime.route("m").expect("route present");
        assert!(Arc::ptr_eq(route, runtime.route("m-alias").expect("alias")));
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
        let (old, new) = (first.route("m").expect("m"), second.route("m").expect("m"));
        assert!(Arc::ptr_eq(&old.targets[1].health, &new.targets[0].health));
        assert!(Arc::ptr_eq(&old.state, &new.state));
    }

    #[test]
    fn smooth_rotation_interleaves() {
        assert_eq!(smooth_rotation(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_rotation(&[2, 2]), vec![0, 1]);
        assert_eq!(smooth_rotation(&[1_000_000, 1]).len(), 4096, "capped");
    }

    #[test]
    fn rejects_a_route_to_a_missing_provider_as_a_whole() {
        let mut s = snapshot();
        s.routes[0].targets[1].provider = "ghost".into();
        let error = Runtime::try_from(s).expect_err("must be rejected");
        assert!(error.to_string().contains("ghost"));
    }
}
