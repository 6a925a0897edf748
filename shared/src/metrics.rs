//! The Prometheus recorder both planes install.

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::time::Duration;

/// Seconds, from 1 ms to 2 min: upstream LLM calls span that whole range.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the global recorder and its upkeep task. Histograms are fixed
/// buckets (cheap to record, aggregatable across instances), and upkeep
/// drains their samples even when nobody scrapes, so memory stays flat.
pub fn install(tasks: &crate::tasks::Tasks) -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS)?
        .install_recorder()?;
    let upkeep = handle.clone();
    let token = tasks.token();
    tasks.spawn("metrics-upkeep", async move {
        let mut interval = tokio::time::interval(UPKEEP_INTERVAL);
        loop {
            tokio::select! {
                _ = interval.tick() => upkeep.run_upkeep(),
                _ = token.cancelled() => break,
            }
        }
    });
    Ok(handle)
}
