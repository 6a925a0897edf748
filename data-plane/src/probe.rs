//! Active health checks: providers whose settings ask for them
//! (`health_check_interval_ms`) are probed with a cheap request (their
//! model list) off the request path, and each result is recorded on every
//! target that uses the provider, as a request's would be: failures eject
//! targets before clients meet them, and a good probe closes a half-open
//! breaker.

use crate::providers::{self, UpstreamClient};
use crate::router::health::{BreakerConfig, Outcome};
use crate::runtime::Live;
use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often due probes are looked for.
const TICK: Duration = Duration::from_millis(100);

pub async fn run(
    live: Live,
    http: UpstreamClient,
    breaker: BreakerConfig,
    stop: CancellationToken,
) {
    let mut next_due: HashMap<String, Instant> = HashMap::new();
    let mut ticker = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let Some(runtime) = live.load_full() else {
            continue;
        };
        let now = Instant::now();
        let checked = runtime.routes().health_checked();
        // Providers that left the configuration are forgotten.
        next_due.retain(|name, _| checked.iter().any(|(p, _)| &p.name == name));
        for (provider, targets) in checked {
            let Some(check) = provider.health_check else {
                continue;
            };
            let due = next_due.entry(provider.name.clone()).or_insert(now);
            if *due > now {
                continue;
            }
            *due = now + check.interval;
            let Some(call) = provider.adapter.health_probe() else {
                continue;
            };
            let http = http.clone();
            tokio::spawn(async move {
                let adapter = provider.adapter.as_ref();
                let timeout = check.timeout;
                let result =
                    providers::send(&http, &provider.name, adapter, call, timeout, Some(timeout))
                        .await;
                let healthy = result.is_ok();
                // A probe's latency is not a request's (zero is not averaged):
                // only its verdict counts; any failed probe counts.
                let outcome = match result {
                    Ok(_) => Outcome::Success {
                        latency: Duration::ZERO,
                        tokens: 0,
                    },
                    Err(error) => Outcome::Failure {
                        retry_after: error
                            .retry_after()
                            .and_then(crate::router::health::parse_retry_after),
                    },
                };
                metrics::counter!("switchboard_health_checks_total", "provider" => provider.name.clone(), "result" => if healthy { "ok" } else { "failed" }).increment(1);
                if !healthy {
                    tracing::warn!(provider = %provider.name, "health check failed");
                }
                for target in targets {
                    target.record(outcome, &breaker);
                }
            });
        }
    }
}
