//! Switchboard's data plane as a library; `main.rs` only parses flags.

pub mod auth;
pub mod breaker_report;
pub mod cache;
pub mod chat;
pub mod cluster_client;
pub mod config;
pub mod config_sync;
pub mod cow_map;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod guardrails;
pub mod ingress;
pub mod json_scan;
pub mod limits;
pub mod memory;
pub mod meters;
pub mod probe;
pub mod providers;
pub mod relay;
pub mod router;
pub mod runtime;
pub mod server;
pub mod usage;

use anyhow::Context;
use arc_swap::ArcSwapOption;
use config::Config;
use config_sync::{ConfigSync, SnapshotFile};
use futures_util::stream::{FuturesUnordered, StreamExt};
use runtime::{Live, Runtime};
use shared::tasks::Tasks;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

/// Serves until `shutdown` resolves; then lets in-flight requests finish
/// (up to the grace period) and flushes usage before returning.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let upstream = config.upstream().map_err(anyhow::Error::msg)?;
    let tasks = Tasks::new();
    let metrics = shared::metrics::install(&tasks).context("installing the metrics recorder")?;
    meters::describe();
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("state_dir: cannot create {}", config.state_dir.display()))?;
    let dataplane_id = dataplane_id(&config.state_dir)?;

    let redis = config
        .redis_url
        .as_deref()
        .map(|url| {
            let options = limits::redis::RedisOptions {
                url,
                mode: config.redis_mode,
                sentinel_master: config.redis_sentinel_master.as_deref(),
                ca: config.redis_ca.as_deref(),
                timeout: config.redis_timeout(),
            };
            limits::redis::RedisCounters::start(options, tasks.token())
        })
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let cache = Arc::new(match (config.cache_backend, &redis) {
        (cache::CacheBackend::Redis, Some(redis)) => cache::ResponseCache::in_redis(redis.clone()),
        _ => cache::ResponseCache::in_memory(config.cache_memory_bytes),
    });
    let mut limiter = limits::Limiter::new(redis);
    limiter.rates_on_redis_error = config.rate_limits_on_redis_error;
    limiter.quotas_on_redis_error = config.quotas_on_redis_error;
    limiter.completion_reservation = i64::from(config.completion_reservation_tokens);
    limiter.completion_floor = i64::from(config.completion_floor_tokens);
    let limiter = Arc::new(limiter);

    let live: Live = Arc::new(ArcSwapOption::empty());
    let file = SnapshotFile::new(&config.state_dir, config.cluster_token());
    match file.load() {
        Ok(Some(mut snapshot)) => {
            let spend = std::mem::take(&mut snapshot.spend);
            match Runtime::try_from(snapshot) {
                Ok(runtime) => {
                    tracing::info!(
                        version = runtime.version,
                        "serving the config kept in the state dir"
                    );
                    limiter.counted.apply(shared::proto::Counters {
                        complete: true,
                        spend,
                    });
                    config_sync::install(&live, runtime);
                }
                Err(error) => {
                    tracing::warn!(%error, "the config in the state dir is invalid; waiting for the control plane")
                }
            }
        }
        Ok(None) => tracing::info!("no config in the state dir yet; waiting for the control plane"),
        Err(error) => {
            tracing::warn!(%error, "the config in the state dir is unreadable; waiting for the control plane")
        }
    }

    let cluster_tls = cluster_client::ClusterTls {
        ca: config.control_plane_ca.as_deref(),
        client_cert: config
            .cluster_client_cert
            .as_deref()
            .zip(config.cluster_client_key.as_deref()),
    };
    let control_planes = cluster_client::ControlPlanes::connect(
        &config.control_plane,
        config.cluster_token(),
        &cluster_tls,
    )?;
    let tls = config.tls.load().await.map_err(anyhow::Error::msg)?;
    if let Some(tls) = &tls {
        tasks.spawn("tls-reload", tls.clone().keep_fresh(tasks.token()));
    }
    let config_changed = Arc::new(tokio::sync::Notify::new());
    tasks.spawn(
        "config-sync",
        ConfigSync {
            control_planes: control_planes.clone(),
            live: live.clone(),
            limiter: limiter.clone(),
            changed: config_changed.clone(),
            dataplane_id: dataplane_id.clone(),
            hostname: hostname(),
        }
        .run(tasks.token()),
    );
    tasks.spawn(
        "config-persist",
        config_sync::persist(
            live.clone(),
            limiter.clone(),
            file,
            config_changed,
            tasks.token(),
        ),
    );
    tasks.spawn(
        "health-checks",
        probe::run(
            live.clone(),
            providers::UpstreamClient::new(providers::UpstreamSettings {
                http2_connections: 1,
                ..upstream.clone()
            }),
            config.routing().breaker,
            tasks.token(),
        ),
    );

    tasks.spawn(
        "breaker-report",
        breaker_report::run(
            live.clone(),
            control_planes.clone(),
            dataplane_id.clone(),
            tasks.token(),
        ),
    );

    let (sweeping, stop) = (limiter.clone(), tasks.token());
    tasks.spawn("limits-sweep", async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(600));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = every.tick() => sweeping.sweep(),
            }
        }
    });

    let (usage, queue) = usage::UsageSink::channel(config.usage_queue, config.usage_batch_size);
    let stop_shipper = tokio_util::sync::CancellationToken::new();
    let shipper = usage::Shipper {
        queue,
        control_planes,
        spool: usage::Spool::open(&config.state_dir)
            .context("state_dir: cannot create the usage spool")?,
        dataplane_id,
        batch_size: config.usage_batch_size,
        flush_interval: config.usage_flush_interval(),
        stop: stop_shipper.clone(),
    };
    // Not tied to the cancellation token: it ends once the server has drained.
    let shipper = tokio::spawn(shipper.run());

    let metrics_listener = config.metrics.bind().await.map_err(anyhow::Error::msg)?;
    let public_metrics = shared::metrics::expose(metrics_listener, metrics, &tasks);
    let workers = config.workers();
    let listeners = server::bind(config.listen, workers)
        .with_context(|| format!("listen: cannot listen on {}", config.listen))?;
    tracing::info!(
        listen = %listeners[0].local_addr()?,
        workers,
        control_plane = %config.control_plane.join(","),
        tls = tls.is_some(),
        "data plane listening"
    );
    let routing = Arc::new(config.routing());
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let state = || ingress::AppState {
        draining: draining.clone(),
        live: live.clone(),
        // Per worker: connections to providers stay on the thread that uses them.
        http: providers::UpstreamClient::new(upstream.clone()),
        usage: usage.clone(),
        limiter: limiter.clone(),
        cache: cache.clone(),
        metrics: public_metrics.clone(),
        max_body_bytes: config.max_body_bytes,
        upstream_timeout: config.upstream_timeout(),
        routing: routing.clone(),
    };
    let tls = tls.map(|t| t.config);
    let started = server::start(
        listeners,
        state,
        tls,
        tasks.token(),
        config.shutdown_grace(),
    )
    .context("starting the worker threads")?;
    tasks.spawn(
        "memory",
        memory::give_back_after_surges(started.runtimes, tasks.token()),
    );
    drop(usage);
    let mut workers: FuturesUnordered<_> = started.stopped.into_iter().collect();
    tokio::select! {
        _ = shutdown => {
            // Load balancers see /readyz fail and stop sending; whoever still
            // comes is served, then told to reconnect elsewhere.
            shared::tasks::drain(&draining, config.drain_delay()).await;
            tracing::info!("no longer accepting connections; waiting for requests in flight");
        }
        // Workers only stop when told to: one that stops on its own takes the process down.
        stopped = workers.next() => {
            tasks.shutdown().await;
            let reason = match stopped {
                Some(Ok(Err(error))) => error.to_string(),
                _ => "it stopped".to_owned(),
            };
            anyhow::bail!("an HTTP worker failed: {reason}");
        }
    }
    tasks.shutdown().await;
    while let Some(stopped) = workers.next().await {
        if let Ok(Err(error)) = stopped {
            tracing::error!(%error, "HTTP worker failed");
        }
    }
    limiter.flush().await;
    // Every usage sink lived in the server; with it gone the shipper drains and stops.
    stop_shipper.cancel();
    shipper.await.context("usage shipper task")?;
    tracing::info!("data plane stopped");
    Ok(())
}

/// Stable across restarts, so the control plane sees one data plane, not many.
fn dataplane_id(state_dir: &Path) -> anyhow::Result<String> {
    let path = state_dir.join("dataplane-id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    let id = shared::ids::DataPlaneId::generate().into_string();
    std::fs::write(&path, &id)
        .with_context(|| format!("state_dir: cannot write {}", path.display()))?;
    Ok(id)
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}
