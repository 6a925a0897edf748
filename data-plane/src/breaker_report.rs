//! Which upstream targets have their circuit breaker open, sampled off the
//! request path: as gauges on /metrics, and reported to the control plane
//! (on a change, and every 15 s) for the console's overview.

use crate::cluster_client::ControlPlanes;
use crate::runtime::Live;
use shared::proto;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const SAMPLE: Duration = Duration::from_secs(2);
const REPORT_AT_LEAST_EVERY: Duration = Duration::from_secs(15);

pub async fn run(
    live: Live,
    mut control_planes: ControlPlanes,
    dataplane_id: String,
    stop: CancellationToken,
) {
    let mut every = tokio::time::interval(SAMPLE);
    let mut reported: Option<(BTreeSet<(String, String)>, Instant)> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let Some(runtime) = live.load_full() else {
            continue;
        };
        let mut open = BTreeSet::new();
        for target in runtime.routes().targets() {
            let ejected = target.health.ejected();
            target
                .meters
                .breaker_open
                .set(if ejected { 1.0 } else { 0.0 });
            if ejected {
                open.insert((target.provider.name.clone(), target.upstream_model.clone()));
            }
        }
        let due = match &reported {
            None => true,
            Some((last, at)) => *last != open || at.elapsed() >= REPORT_AT_LEAST_EVERY,
        };
        if !due {
            continue;
        }
        let report = proto::HealthReport {
            dataplane_id: dataplane_id.clone(),
            open_breakers: open
                .iter()
                .map(|(provider, model)| proto::OpenBreaker {
                    provider: provider.clone(),
                    model: model.clone(),
                })
                .collect(),
        };
        match control_planes.client().report_health(report).await {
            Ok(_) => reported = Some((open, Instant::now())),
            Err(status) => {
                // Tried again at the next sample, on the next address.
                tracing::debug!(error = %status.message(), "health report not delivered");
                reported = None;
                control_planes.next();
            }
        }
    }
}
