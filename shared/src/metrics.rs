//! The Prometheus recorder both planes install, and where its `/metrics` is served.

use metrics::Unit;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Where `/metrics` is served.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MetricsArgs {
    /// Address of a listener that serves only `/metrics`; the main HTTP
    /// listener then answers 404 there, so scrapes stay off the port that
    /// clients (or the internet) reach. Unset: `/metrics` is on the main
    /// HTTP listener.
    #[arg(long, env = "SWITCHBOARD_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// The metrics listener, bound at start so a taken port fails the start.
pub struct MetricsListener(tokio::net::TcpListener);

impl MetricsArgs {
    pub async fn bind(&self) -> Result<Option<MetricsListener>, String> {
        let Some(addr) = self.metrics_addr else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| format!("metrics_addr: cannot listen on {addr}: {e}"))?;
        Ok(Some(MetricsListener(listener)))
    }
}

/// Serves `/metrics` on its own listener when there is one; answers what the
/// main HTTP listener should serve there (nothing when it has moved).
pub fn expose(
    listener: Option<MetricsListener>,
    handle: PrometheusHandle,
    tasks: &crate::tasks::Tasks,
) -> Option<PrometheusHandle> {
    let Some(listener) = listener else {
        return Some(handle);
    };
    if let Ok(addr) = listener.0.local_addr() {
        tracing::info!(metrics = %addr, "metrics listening");
    }
    tasks.spawn("metrics-listener", listener.serve(handle, tasks.token()));
    None
}

impl MetricsListener {
    async fn serve(self, handle: PrometheusHandle, shutdown: CancellationToken) {
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || std::future::ready(handle.render())),
        );
        let served = axum::serve(self.0, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await;
        if let Err(error) = served {
            tracing::error!(%error, "metrics listener failed");
        }
    }
}

/// Seconds, from 1 ms to 10 min: LLM calls span that whole range (a long
/// reasoning stream takes minutes).
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// A metric's name, unit and help text.
pub type Description = (&'static str, Unit, &'static str);

/// A plane's catalogue: the help texts of its counters, gauges and
/// histograms (durations, in seconds), with those both planes export.
/// `from_zero`: label-less counters of rare events, registered at 0 so an
/// alert on their increase, or a panel, has a series to read from the start.
pub fn describe(
    counters: &[Description],
    gauges: &[Description],
    histograms: &[(&'static str, &'static str)],
    from_zero: &[&'static str],
) {
    let common = (
        "switchboard_tls_reloads_total",
        Unit::Count,
        "Reloads of a listener's certificate after its files changed, by result.",
    );
    for &(name, unit, help) in counters.iter().chain([&common]) {
        metrics::describe_counter!(name, unit, help);
    }
    for &(name, unit, help) in gauges {
        metrics::describe_gauge!(name, unit, help);
    }
    for &(name, help) in histograms {
        metrics::describe_histogram!(name, Unit::Seconds, help);
    }
    for &name in from_zero {
        metrics::counter!(name).increment(0);
    }
}
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
