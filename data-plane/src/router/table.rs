//! The routing table of one config version: providers (their adapters),
//! routes with their targets and rotation, the global rate limits and the
//! prices targets are chosen and charged by. Rebuilt only when a delta
//! changes one of them; routing state (health, rotation, retry budget) of routes and
//! targets that remain is carried over from the previous table.

use super::budget::RetryBudget;
use super::health::TargetState;
use crate::error::{Entity, InvalidConfig};
use crate::guardrails::Compiled;
use crate::meters::TargetMeters;
use crate::providers::{self, Adapter};
use axum::http::HeaderValue;
use foldhash::{HashMap, HashMapExt};
use shared::cache::{CachePurges, RouteCache};
use shared::limits::RateLimits;
use shared::money::Prices;
use shared::proto;
use shared::routing::Strategy;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// What a table is built from, as the control plane sent it: kept for
/// applying deltas and for the copy on disk.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    pub providers: BTreeMap<String, proto::SnapshotProvider>,
    pub routes: BTreeMap<String, proto::Route>,
    pub prices: BTreeMap<(String, String), proto::SnapshotPrice>,
    pub global_limits: Option<proto::RateLimits>,
    pub cache_purges: Option<proto::CachePurges>,
}

/// What a delta changes in the table.
#[derive(Default)]
pub struct TableChanges {
    pub providers: Vec<proto::SnapshotProvider>,
    pub removed_providers: Vec<String>,
    pub routes: Vec<proto::Route>,
    pub removed_routes: Vec<String>,
    pub prices: Vec<proto::SnapshotPrice>,
    pub removed_prices: Vec<proto::PriceKey>,
    pub settings: Option<proto::ClusterSettings>,
}

impl TableChanges {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty()
            && self.removed_providers.is_empty()
            && self.routes.is_empty()
            && self.removed_routes.is_empty()
            && self.prices.is_empty()
            && self.removed_prices.is_empty()
            && self.settings.is_none()
    }
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// By public name and by alias.
    routes: HashMap<String, Arc<Route>>,
    providers: HashMap<String, Arc<Provider>>,
    /// The cluster's rate limits.
    pub global_limits: RateLimits,
    /// The response cache's purge generations.
    pub cache_purges: CachePurges,
    pub prices: Arc<Prices>,
    pub sources: Sources,
}

impl RouteTable {
    /// A table is checked as a whole: one bad entry rejects it.
    pub fn build(sources: Sources, previous: Option<&RouteTable>) -> Result<Self, InvalidConfig> {
        let prices: Vec<proto::SnapshotPrice> = sources.prices.values().cloned().collect();
        let global_limits = RateLimits::from_proto(sources.global_limits.as_ref());
        let cache_purges = CachePurges::from_proto(sources.cache_purges.as_ref());
        let prices = Arc::new(Prices::from_proto(&prices).map_err(InvalidConfig::Prices)?);
        let mut providers = HashMap::with_capacity(sources.providers.len());
        for (name, p) in &sources.providers {
            // An unchanged provider keeps its adapter.
            let unchanged = previous.and_then(|t| {
                (t.sources.providers.get(name) == Some(p))
                    .then(|| t.providers.get(name).cloned())
                    .flatten()
            });
            let provider = match unchanged {
                Some(provider) => provider,
                None => Arc::new(Provider {
                    name: p.name.clone(),
                    adapter: providers::adapter(p)?,
                    health_check: HealthCheck::of(&p.settings)
                        .map_err(|e| Entity::Provider.invalid(&p.name, format!("settings.{e}")))?,
                }),
            };
            providers.insert(name.clone(), provider);
        }
        let mut routes = HashMap::with_capacity(sources.routes.len());
        for r in sources.routes.values() {
            let old = previous
                .and_then(|p| p.routes.get(&r.model))
                .filter(|old| old.model == r.model);
            let route = Arc::new(build_route(r, &providers, &prices, old)?);
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
                    return Err(InvalidConfig::UnknownRoute {
                        route: route.model.clone(),
                        target: name.clone(),
                    });
                }
            }
        }
        Ok(RouteTable {
            routes,
            providers,
            global_limits,
            cache_purges,
            prices,
            sources,
        })
    }

    /// This table with a delta's changes; `self` is left as it was.
    pub fn changed(&self, changes: TableChanges) -> Result<Self, InvalidConfig> {
        let mut sources = self.sources.clone();
        for name in &changes.removed_providers {
            sources.providers.remove(name);
        }
        for p in changes.providers {
            sources.providers.insert(p.name.clone(), p);
        }
        for model in &changes.removed_routes {
            sources.routes.remove(model);
        }
        for r in changes.routes {
            sources.routes.insert(r.model.clone(), r);
        }
        for key in changes.removed_prices {
            sources.prices.remove(&(key.model, key.provider));
        }
        for p in changes.prices {
            sources
                .prices
                .insert((p.model.clone(), p.provider.clone()), p);
        }
        if let Some(settings) = changes.settings {
            sources.global_limits = settings.global_limits;
            sources.cache_purges = settings.cache_purges;
        }
        RouteTable::build(sources, Some(self))
    }

    pub fn route(&self, model: &str) -> Option<&Arc<Route>> {
        self.routes.get(model)
    }

    /// Every route's targets (a route with aliases is listed under each name).
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.routes.values().flat_map(|route| &route.targets)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.keys().map(String::as_str)
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
    /// From a provider's settings; a value that is not milliseconds is refused, not ignored.
    fn of(settings: &std::collections::HashMap<String, String>) -> Result<Option<Self>, String> {
        let ms = |name: &str| -> Result<Option<Duration>, String> {
            settings
                .get(name)
                .map(|v| {
                    v.parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| format!("{name}: expected milliseconds, not {v:?}"))
                })
                .transpose()
        };
        let Some(interval) = ms("health_check_interval_ms")? else {
            return Ok(None);
        };
        Ok(Some(HealthCheck {
            interval,
            timeout: ms("health_check_timeout_ms")?.unwrap_or(interval.min(Duration::from_secs(5))),
        }))
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
    /// Its metrics' handles, registered once (carried over like `health`).
    pub meters: Arc<TargetMeters>,
    pub served_by: ServedBy,
}

/// What an answer says served it (`x-switchboard-provider`, `-model`):
/// header values made once, not for every answer. A name that is no valid
/// header value is left out.
#[derive(Clone, Debug)]
pub struct ServedBy {
    pub provider: Option<HeaderValue>,
    pub model: Option<HeaderValue>,
}

impl ServedBy {
    pub fn new(provider: &str, model: &str) -> Self {
        ServedBy {
            provider: HeaderValue::try_from(provider).ok(),
            model: HeaderValue::try_from(model).ok(),
        }
    }
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
    /// The response cache; `None`: answers are not cached.
    pub cache: Option<RouteCache>,
    pub guardrails: Option<Arc<Compiled>>,
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

fn millis(ms: u32) -> Option<Duration> {
    (ms > 0).then(|| Duration::from_millis(u64::from(ms)))
}

fn build_route(
    r: &proto::Route,
    providers: &HashMap<String, Arc<Provider>>,
    prices: &Prices,
    old: Option<&Arc<Route>>,
) -> Result<Route, InvalidConfig> {
    let targets = r
        .targets
        .iter()
        .map(|t| {
            let provider = providers.get(t.provider.as_str()).ok_or_else(|| {
                let reason = format!("names provider {:?}, which does not exist", t.provider);
                Entity::Route.invalid(&r.model, reason)
            })?;
            let old = old.and_then(|old| {
                old.targets
                    .iter()
                    .find(|o| o.provider.name == t.provider && o.upstream_model == t.model)
            });
            let health = old.map(|o| o.health.clone()).unwrap_or_default();
            let price = prices.get(&t.provider, &t.model);
            let meters = match old {
                Some(o) => o.meters.clone(),
                None => Arc::new(TargetMeters::register(
                    &r.model,
                    &t.provider,
                    &t.model,
                    price.map_or("USD", |p| p.currency.as_str()),
                )),
            };
            Ok(Target {
                provider: provider.clone(),
                upstream_model: t.model.clone(),
                weight: t.weight.max(1),
                priority: t.priority,
                rpm: (t.rpm > 0).then_some(t.rpm),
                tpm: (t.tpm > 0).then_some(t.tpm),
                price_rank: price.map(|p| p.input.0.saturating_add(p.output.0)),
                health,
                meters,
                served_by: ServedBy::new(&t.provider, &t.model),
            })
        })
        .collect::<Result<Vec<_>, InvalidConfig>>()?;
    if targets.is_empty() {
        return Err(Entity::Route.invalid(&r.model, "has no targets"));
    }
    let strategy: Strategy = r
        .strategy
        .parse()
        .map_err(|e| Entity::Route.invalid(&r.model, e))?;
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
        cache: r
            .cache
            .as_ref()
            .map(RouteCache::from_proto)
            .transpose()
            .map_err(|e| Entity::Route.invalid(&r.model, e))?,
        guardrails: r
            .guardrails
            .as_ref()
            .map(Compiled::from_proto)
            .transpose()
            .map_err(|e| Entity::Route.invalid(&r.model, e))?
            .map(Arc::new),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smooth_rotation_interleaves() {
        assert_eq!(smooth_rotation(&[5, 1, 1]), vec![0, 0, 1, 0, 2, 0, 0]);
        assert_eq!(smooth_rotation(&[2, 2]), vec![0, 1]);
        assert_eq!(smooth_rotation(&[1_000_000, 1]).len(), 4096, "capped");
    }
}
