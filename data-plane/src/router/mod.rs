//! Step 3 of the request path: which upstream serves the request. A plan
//! names the route (after an A/B split), its fallbacks, and the order in
//! which the route's strategy tries its targets; `health` and `budget` keep
//! what the strategies and the retry loop need, lock-free.

pub mod budget;
pub mod health;
pub mod table;

use crate::auth::Caller;
use crate::error::GatewayError;
use health::BreakerConfig;
use rand::seq::SliceRandom;
use rand::Rng;
use shared::routing::Strategy;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use table::{Route, RouteTable, Target};

/// The data plane's routing defaults, for what a route leaves unset.
#[derive(Clone, Debug)]
pub struct RoutingConfig {
    pub breaker: BreakerConfig,
    pub max_attempts: u32,
    pub backoff: Duration,
    /// Share of a route's requests that retries may add.
    pub retry_budget: f64,
    /// First SSE comment while a stream waits for its first token, and the interval after.
    pub stream_keepalive: Duration,
    pub first_token_timeout: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            breaker: BreakerConfig::default(),
            max_attempts: 2,
            backoff: Duration::from_millis(100),
            retry_budget: 0.2,
            stream_keepalive: Duration::from_secs(10),
            first_token_timeout: Duration::from_secs(600),
        }
    }
}

/// Where a request may go, in order.
pub struct Plan {
    /// The route picked by an A/B split, when the asked route has one.
    pub variant: Option<String>,
    /// The route to serve from, then its fallbacks.
    pub routes: Vec<Arc<Route>>,
    pub context_fallback: Option<Arc<Route>>,
    pub content_fallback: Option<Arc<Route>>,
}

impl Plan {
    /// Every target the request may be sent to, fallbacks included.
    pub fn targets(&self) -> impl Iterator<Item = &Target> {
        self.routes
            .iter()
            .chain(&self.context_fallback)
            .chain(&self.content_fallback)
            .flat_map(|route| &route.targets)
    }
}

/// Resolves the model a client asked for. `sticky` (the user, else the key)
/// keeps one caller on one variant of a split.
pub fn plan(
    routes: &RouteTable,
    caller: &Caller,
    model: &str,
    sticky: &str,
) -> Result<Plan, GatewayError> {
    let asked = routes
        .route(model)
        .ok_or_else(|| GatewayError::ModelNotFound(model.to_owned()))?;
    if !caller.allows(model) {
        return Err(GatewayError::ModelNotAllowed(model.to_owned()));
    }
    let (route, variant) = match split_variant(asked, sticky) {
        Some(name) => (routes.route(name).unwrap_or(asked), Some(name.to_owned())),
        None if asked.split.is_empty() => (asked, None),
        None => (asked, Some(asked.model.clone())),
    };
    let named = |name: &String| routes.route(name).cloned();
    let mut routes = vec![route.clone()];
    routes.extend(route.fallbacks.iter().filter_map(named));
    Ok(Plan {
        variant,
        routes,
        context_fallback: route.context_fallback.as_ref().and_then(named),
        content_fallback: route.content_fallback.as_ref().and_then(named),
    })
}

/// Split weights are percentages of the route's traffic; the rest stays on
/// the route. A stable hash of the caller picks the bucket.
fn split_variant<'r>(route: &'r Route, sticky: &str) -> Option<&'r str> {
    if route.split.is_empty() {
        return None;
    }
    let bucket = (fnv1a(route.model.as_bytes(), sticky.as_bytes()) % 100) as u32;
    let mut edge = 0;
    for (name, percent) in &route.split {
        edge += percent;
        if bucket < edge {
            return Some(name);
        }
    }
    None
}

fn fnv1a(a: &[u8], b: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in a.iter().chain(&[0]).chain(b) {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// The route's targets in the order its strategy tries them, those ejected
/// or at capacity left out. Retries walk on down the list (and wrap).
pub fn order(route: &Route) -> Vec<usize> {
    let available: Vec<usize> = (0..route.targets.len())
        .filter(|&i| route.targets[i].available())
        .collect();
    if available.len() <= 1 {
        return available;
    }
    let t = &route.targets;
    let mut order = available;
    match route.strategy {
        Strategy::Weighted => {
            let start = route.state.cursor.fetch_add(1, Relaxed);
            let len = route.rotation.len();
            let mut seen = Vec::with_capacity(order.len());
            // Stops once every available target is placed: a heavily weighted
            // target could otherwise make each request walk the whole cycle.
            for step in 0..len {
                let i = route.rotation[(start + step) % len];
                if order.contains(&i) && !seen.contains(&i) {
                    seen.push(i);
                    if seen.len() == order.len() {
                        break;
                    }
                }
            }
            order = seen;
        }
        Strategy::RoundRobin => {
            let start = route.state.cursor.fetch_add(1, Relaxed) % order.len();
            order.rotate_left(start);
        }
        Strategy::Random => order.shuffle(&mut rand::thread_rng()),
        Strategy::LeastLatency => {
            order.sort_by_key(|&i| (t[i].health.latency_us(), t[i].health.in_flight()))
        }
        Strategy::LeastBusy => {
            // Ties broken at random, so equal targets share the load.
            order.shuffle(&mut rand::thread_rng());
            order.sort_by_key(|&i| t[i].health.in_flight());
        }
        Strategy::Cost => {
            // Cheapest first (unpriced last); equal prices share the load.
            order.shuffle(&mut rand::thread_rng());
            order.sort_by_key(|&i| t[i].price_rank.unwrap_or(i64::MAX));
        }
        Strategy::Priority => {
            // Within a tier, by weight at random; tiers in order.
            let mut rng = rand::thread_rng();
            let mut keyed: Vec<(u32, f64, usize)> = order
                .iter()
                .map(|&i| {
                    // Weighted random order: key u^(1/w), largest first.
                    let u: f64 = rng.gen_range(f64::EPSILON..1.0);
                    (t[i].priority, -u.powf(1.0 / f64::from(t[i].weight)), i)
                })
                .collect();
            keyed.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)));
            order = keyed.into_iter().map(|(_, _, i)| i).collect();
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::Runtime;
    use shared::proto;

    fn runtime(strategy: &str, weights: &[(u32, u32)]) -> Runtime {
        let targets = weights
            .iter()
            .enumerate()
            .map(|(i, (weight, priority))| proto::RouteTarget {
                provider: "p".into(),
                model: format!("t{i}"),
                weight: *weight,
                priority: *priority,
                ..Default::default()
            })
            .collect();
        let snapshot = proto::Snapshot {
            providers: vec![proto::SnapshotProvider {
                name: "p".into(),
                kind: "openai".into(),
                base_url: "http://127.0.0.1:9/v1".into(),
                ..Default::default()
            }],
            routes: vec![
                proto::Route {
                    model: "m".into(),
                    targets,
                    strategy: strategy.into(),
                    split: vec![proto::SplitVariant {
                        model: "b".into(),
                        weight: 30,
                    }],
                    ..Default::default()
                },
                proto::Route {
                    model: "b".into(),
                    targets: vec![proto::RouteTarget {
                        provider: "p".into(),
                        model: "x".into(),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        Runtime::try_from(snapshot).expect("valid")
    }

    fn firsts(runtime: &Runtime, n: usize) -> Vec<usize> {
        let route = runtime.routes().route("m").expect("m");
        let mut counts = vec![0; route.targets.len()];
        for _ in 0..n {
            counts[order(route)[0]] += 1;
        }
        counts
    }

    #[test]
    fn strategies_distribute_as_configured() {
        assert_eq!(
            firsts(&runtime("weighted", &[(3, 0), (1, 0)]), 400),
            vec![300, 100]
        );
        assert_eq!(
            firsts(&runtime("round_robin", &[(3, 0), (1, 0)]), 400),
            vec![200, 200]
        );
        let random = firsts(&runtime("random", &[(1, 0), (1, 0)]), 2000);
        assert!(random[0] > 850 && random[1] > 850, "{random:?}");
        assert_eq!(
            firsts(&runtime("priority", &[(1, 1), (5, 0), (1, 2)]), 100),
            vec![0, 100, 0]
        );
        let rt = runtime("least_busy", &[(1, 0), (1, 0)]);
        let route = rt.routes().route("m").expect("m");
        let _busy = route.targets[0].health.start();
        assert_eq!(firsts(&rt, 50), vec![0, 50]);
    }

    #[test]
    fn priority_orders_tiers_and_split_is_sticky() {
        let rt = runtime("priority", &[(1, 1), (1, 0)]);
        assert_eq!(order(rt.routes().route("m").expect("m")), vec![1, 0]);
        let caller = Caller::for_test();
        let chosen: Vec<Option<String>> = (0..200)
            .map(|i| {
                plan(rt.routes(), &caller, "m", &format!("user-{i}"))
                    .expect("plan")
                    .variant
            })
            .collect();
        let to_b = chosen.iter().filter(|v| v.as_deref() == Some("b")).count();
        assert!((40..=80).contains(&to_b), "about 30% to b: {to_b}");
        for (i, first) in chosen.iter().enumerate().take(20) {
            let again = plan(rt.routes(), &caller, "m", &format!("user-{i}"))
                .expect("plan")
                .variant;
            assert_eq!(&again, first, "one user stays on one variant");
        }
    }
}
