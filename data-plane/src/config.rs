//! The data plane's configuration: every option is a flag and a `SWITCHBOARD_*` env var.

use crate::limits::redis::RedisMode;
use crate::limits::FailMode;
use crate::providers::UpstreamSettings;
use crate::router::health::BreakerConfig;
use crate::router::RoutingConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use shared::metrics::MetricsArgs;
use shared::telemetry::LogArgs;
use shared::tls::TlsArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "data-plane", version, about = "Switchboard data plane")]
pub struct Config {
    /// Address of the OpenAI-compatible HTTP API (also /healthz, /readyz, and
    /// /metrics unless `--metrics-addr` moves it).
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// gRPC address of the control plane: one (a load balancer in front of
    /// the replicas), or several replicas' addresses, comma-separated, tried
    /// in turn when one fails.
    #[arg(
        long,
        env = "SWITCHBOARD_CONTROL_PLANE",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub control_plane: Vec<String>,

    /// Token presented to the control plane; also keys the encryption of the state dir.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,

    /// Where the last applied snapshot (encrypted), unsent usage and this data plane's id are kept.
    #[arg(
        long,
        env = "SWITCHBOARD_STATE_DIR",
        default_value = ".switchboard/data-plane"
    )]
    pub state_dir: PathBuf,

    /// Largest accepted request body.
    #[arg(long, env = "SWITCHBOARD_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Time allowed to open a connection to a provider.
    #[arg(
        long,
        env = "SWITCHBOARD_UPSTREAM_CONNECT_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub upstream_connect_timeout_ms: u64,

    /// Time allowed for a non-streaming upstream answer, and for a stream's
    /// first token, where a route sets no timeouts.
    #[arg(
        long,
        env = "SWITCHBOARD_UPSTREAM_TIMEOUT_MS",
        default_value_t = 600_000
    )]
    pub upstream_timeout_ms: u64,

    /// Let provider names resolve to link-local or cloud metadata addresses
    /// (169.254.0.0/16, fe80::/10, ...), which are refused otherwise.
    #[arg(long, env = "SWITCHBOARD_ALLOW_LINK_LOCAL_UPSTREAMS")]
    pub allow_link_local_upstreams: bool,

    /// How long a connection to a provider may wait, unused, for its next
    /// request before it is closed. Keep it below the provider's (or its
    /// load balancer's) own idle timeout.
    #[arg(
        long,
        env = "SWITCHBOARD_UPSTREAM_IDLE_TIMEOUT_SECONDS",
        default_value_t = 90
    )]
    pub upstream_idle_timeout_seconds: u64,

    /// Independent connection pools per data plane. Each holds one HTTP/2
    /// connection per provider host, so this many times the provider's
    /// concurrent-stream limit can be in flight before requests queue.
    #[arg(
        long,
        env = "SWITCHBOARD_UPSTREAM_HTTP2_CONNECTIONS",
        default_value_t = 4
    )]
    pub upstream_http2_connections: usize,

    /// PEM CA certificates trusted for `https://` providers besides the
    /// public (webpki) roots: a private CA in front of a self-hosted model,
    /// or a corporate proxy's.
    #[arg(long, env = "SWITCHBOARD_UPSTREAM_CA")]
    pub upstream_ca: Option<PathBuf>,

    /// Threads serving the public listener, each with its own connections to
    /// clients and providers; 0 means one per CPU.
    #[arg(long, env = "SWITCHBOARD_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Most usage records sent in one batch (at most 10,000).
    #[arg(long, env = "SWITCHBOARD_USAGE_BATCH_SIZE", default_value_t = 500)]
    pub usage_batch_size: usize,

    /// Longest a usage record waits before its batch is sent.
    #[arg(long, env = "SWITCHBOARD_USAGE_FLUSH_MS", default_value_t = 250)]
    pub usage_flush_ms: u64,

    /// Usage records held in memory before the request path waits for the shipper.
    #[arg(long, env = "SWITCHBOARD_USAGE_QUEUE", default_value_t = 65_536)]
    pub usage_queue: usize,

    /// On SIGTERM, how long the data plane keeps accepting connections
    /// while `/readyz` answers 503, so load balancers take it out of rotation
    /// before it stops listening. Answers meanwhile carry `Connection: close`.
    #[arg(long, env = "SWITCHBOARD_DRAIN_DELAY_MS", default_value_t = 5_000)]
    pub drain_delay_ms: u64,

    /// After the drain delay, longest in-flight requests and streams may take
    /// to finish before they are cut.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE_MS", default_value_t = 300_000)]
    pub shutdown_grace_ms: u64,

    /// Attempts per request when a route sets no retry policy (1: no retry).
    #[arg(long, env = "SWITCHBOARD_RETRY_MAX_ATTEMPTS", default_value_t = 2)]
    pub retry_max_attempts: u32,

    /// First retry backoff when a route sets none; doubles per attempt, with jitter.
    #[arg(long, env = "SWITCHBOARD_RETRY_BACKOFF_MS", default_value_t = 100)]
    pub retry_backoff_ms: u64,

    /// Share of a route's requests that retries and fallbacks may add (per 10 s window).
    #[arg(long, env = "SWITCHBOARD_RETRY_BUDGET", default_value_t = 0.2)]
    pub retry_budget: f64,

    /// Consecutive failures that eject a target (circuit breaker).
    #[arg(long, env = "SWITCHBOARD_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// Failure share in the breaker window that ejects a target.
    #[arg(long, env = "SWITCHBOARD_BREAKER_ERROR_RATE", default_value_t = 0.5)]
    pub breaker_error_rate: f64,

    /// Requests the breaker window needs before the error rate counts.
    #[arg(long, env = "SWITCHBOARD_BREAKER_MIN_REQUESTS", default_value_t = 10)]
    pub breaker_min_requests: u32,

    /// Length of the breaker's error-rate window.
    #[arg(long, env = "SWITCHBOARD_BREAKER_WINDOW_MS", default_value_t = 10_000)]
    pub breaker_window_ms: u64,

    /// First ejection; doubled on each repeated ejection.
    #[arg(long, env = "SWITCHBOARD_BREAKER_COOLDOWN_MS", default_value_t = 5_000)]
    pub breaker_cooldown_ms: u64,

    /// Longest ejection.
    #[arg(
        long,
        env = "SWITCHBOARD_BREAKER_MAX_COOLDOWN_MS",
        default_value_t = 300_000
    )]
    pub breaker_max_cooldown_ms: u64,

    /// Longest a provider's `retry-after` (on 429 or 503) sets a target aside; 0: never.
    #[arg(
        long,
        env = "SWITCHBOARD_BREAKER_MAX_RETRY_AFTER_MS",
        default_value_t = 60_000
    )]
    pub breaker_max_retry_after_ms: u64,

    /// While a stream waits for its first token: when the first SSE comment
    /// keepalive is sent, and how often after.
    #[arg(
        long,
        env = "SWITCHBOARD_STREAM_KEEPALIVE_MS",
        default_value_t = 10_000
    )]
    pub stream_keepalive_ms: u64,

    /// PEM CA certificate of the control plane's gRPC certificate, for an
    /// `https://` control plane; without it, public (webpki) roots are trusted.
    #[arg(long, env = "SWITCHBOARD_CONTROL_PLANE_CA")]
    pub control_plane_ca: Option<PathBuf>,

    /// PEM certificate this data plane presents to an `https://` control
    /// plane (mTLS): its identity there. With `--cluster-client-key`.
    #[arg(
        long,
        env = "SWITCHBOARD_CLUSTER_CLIENT_CERT",
        requires = "cluster_client_key"
    )]
    pub cluster_client_cert: Option<PathBuf>,

    /// PEM private key of `--cluster-client-cert`.
    #[arg(
        long,
        env = "SWITCHBOARD_CLUSTER_CLIENT_KEY",
        requires = "cluster_client_cert"
    )]
    pub cluster_client_key: Option<PathBuf>,

    /// Redis holding the counters of rate limits, quotas and budgets that
    /// every data plane shares (`redis://[:password@]host:port[/db]`, or
    /// `rediss://` for TLS).
    /// Unset: each data plane counts in process.
    #[arg(long, env = "SWITCHBOARD_REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,

    /// `standalone`, `cluster` (a Redis Cluster: `--redis-url` lists seed
    /// nodes, comma-separated) or `sentinel` (`--redis-url` lists sentinels,
    /// comma-separated, that name the master `--redis-sentinel-master`).
    #[arg(
        long,
        env = "SWITCHBOARD_REDIS_MODE",
        value_enum,
        default_value = "standalone"
    )]
    pub redis_mode: RedisMode,

    /// The master's name at the sentinels (with `--redis-mode sentinel`).
    #[arg(long, env = "SWITCHBOARD_REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,

    /// PEM CA certificate of a `rediss://` Redis's server certificate;
    /// without it, the system's trusted roots.
    #[arg(long, env = "SWITCHBOARD_REDIS_CA")]
    pub redis_ca: Option<PathBuf>,

    /// How long a Redis call may take before it counts as failed.
    #[arg(long, env = "SWITCHBOARD_REDIS_TIMEOUT_MS", default_value_t = 250)]
    pub redis_timeout_ms: u64,

    /// Rate limits (rpm, tpm, tpd) while Redis is unreachable: `open` counts
    /// in process, `closed` refuses with 503.
    #[arg(
        long,
        env = "SWITCHBOARD_RATE_LIMITS_ON_REDIS_ERROR",
        value_enum,
        default_value = "open"
    )]
    pub rate_limits_on_redis_error: FailMode,

    /// Quotas and budgets while Redis is unreachable: `open` counts in
    /// process, `closed` refuses with 503.
    #[arg(
        long,
        env = "SWITCHBOARD_QUOTAS_ON_REDIS_ERROR",
        value_enum,
        default_value = "closed"
    )]
    pub quotas_on_redis_error: FailMode,

    /// Tokens reserved for the answer of a request that sets no max_tokens,
    /// against token limits and budgets (settled to the real count after).
    #[arg(
        long,
        env = "SWITCHBOARD_COMPLETION_RESERVATION_TOKENS",
        default_value_t = 4_096
    )]
    pub completion_reservation_tokens: u32,

    /// A request that sets no max_tokens, under a token quota or budget with
    /// room for less than the reservation, is sent with max_tokens capped to
    /// what fits (said in `x-switchboard-max-tokens-capped`); below this many
    /// tokens it is refused instead.
    #[arg(
        long,
        env = "SWITCHBOARD_COMPLETION_FLOOR_TOKENS",
        default_value_t = 16
    )]
    pub completion_floor_tokens: u32,

    /// Where the response cache keeps answers of routes that cache
    /// (docs/caching.md): `memory` (this data plane's) or `redis` (the
    /// Redis of `--redis-url`, shared by every data plane).
    #[arg(
        long,
        env = "SWITCHBOARD_CACHE_BACKEND",
        value_enum,
        default_value = "memory"
    )]
    pub cache_backend: crate::cache::CacheBackend,

    /// The most bytes of answers the in-memory cache holds; the least
    /// recently used go first.
    #[arg(
        long,
        env = "SWITCHBOARD_CACHE_MEMORY_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub cache_memory_bytes: u64,

    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// Checks what clap cannot, naming the field at fault.
    pub fn validate(&self) -> Result<(), String> {
        match &self.cluster_token {
            None => {
                return Err(
                    "cluster_token (--cluster-token / SWITCHBOARD_CLUSTER_TOKEN) is required"
                        .into(),
                )
            }
            Some(t) if t.trim().is_empty() => return Err("cluster_token: must not be empty".into()),
            Some(_) => {}
        }
        let secured = self.control_plane_ca.is_some() || self.cluster_client_cert.is_some();
        if self.control_plane.is_empty() {
            return Err("control_plane: at least one address is required".into());
        }
        for url in &self.control_plane {
            if secured && !url.starts_with("https://") {
                return Err(
                    "control_plane_ca, cluster_client_cert: only with https:// control_plane addresses"
                        .into(),
                );
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "control_plane: expected http:// or https:// URLs, not {url:?}"
                ));
            }
        }
        if self.cache_backend == crate::cache::CacheBackend::Redis && self.redis_url.is_none() {
            return Err("cache_backend: redis needs --redis-url".into());
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes: must be positive".into());
        }
        if self.upstream_idle_timeout_seconds == 0 {
            return Err("upstream_idle_timeout_seconds: must be positive".into());
        }
        if self.upstream_http2_connections == 0 {
            return Err("upstream_http2_connections: must be positive".into());
        }
        if self.usage_batch_size == 0 || self.usage_queue == 0 {
            return Err("usage_batch_size and usage_queue: must be positive".into());
        }
        // The control plane refuses larger batches.
        if self.usage_batch_size > 10_000 {
            return Err("usage_batch_size: must be at most 10000".into());
        }
        if !(1..=10).contains(&self.retry_max_attempts) {
            return Err("retry_max_attempts: must be between 1 and 10".into());
        }
        if !(0.0..=1.0).contains(&self.retry_budget) {
            return Err("retry_budget: must be between 0 and 1".into());
        }
        if !(self.breaker_error_rate > 0.0 && self.breaker_error_rate <= 1.0) {
            return Err("breaker_error_rate: must be above 0 and at most 1".into());
        }
        if self.breaker_failures == 0
            || self.breaker_cooldown_ms == 0
            || self.breaker_window_ms == 0
        {
            return Err(
                "breaker_failures, breaker_cooldown_ms and breaker_window_ms: must be positive"
                    .into(),
            );
        }
        if self.stream_keepalive_ms == 0 {
            return Err("stream_keepalive_ms: must be positive".into());
        }
        Ok(())
    }

    pub fn routing(&self) -> RoutingConfig {
        let ms = Duration::from_millis;
        RoutingConfig {
            breaker: BreakerConfig {
                consecutive_failures: self.breaker_failures,
                error_rate: self.breaker_error_rate,
                min_requests: self.breaker_min_requests,
                window: ms(self.breaker_window_ms),
                cooldown: ms(self.breaker_cooldown_ms),
                max_cooldown: ms(self.breaker_max_cooldown_ms.max(self.breaker_cooldown_ms)),
                max_retry_after: ms(self.breaker_max_retry_after_ms),
            },
            max_attempts: self.retry_max_attempts,
            backoff: ms(self.retry_backoff_ms),
            retry_budget: self.retry_budget,
            stream_keepalive: ms(self.stream_keepalive_ms),
            first_token_timeout: self.upstream_timeout(),
        }
    }

    pub fn cluster_token(&self) -> &str {
        self.cluster_token.as_deref().unwrap_or_default().trim()
    }

    /// Reads `--upstream-ca`: an error names the flag and what is wrong.
    pub fn upstream(&self) -> Result<UpstreamSettings, String> {
        let mut roots = UpstreamSettings::public_roots();
        if let Some(path) = &self.upstream_ca {
            let pem = shared::tls::read_pem("upstream_ca", path)?;
            let certificates = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("upstream_ca: {} is not PEM: {e}", path.display()))?;
            if certificates.is_empty() {
                return Err(format!("upstream_ca: no certificate in {}", path.display()));
            }
            for certificate in certificates {
                roots.add(certificate).map_err(|e| {
                    format!(
                        "upstream_ca: a certificate in {} cannot be a root: {e}",
                        path.display()
                    )
                })?;
            }
        }
        Ok(UpstreamSettings {
            connect_timeout: Duration::from_millis(self.upstream_connect_timeout_ms),
            idle_timeout: Duration::from_secs(self.upstream_idle_timeout_seconds),
            http2_connections: self.upstream_http2_connections,
            allow_link_local: self.allow_link_local_upstreams,
            roots: Arc::new(roots),
        })
    }

    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms.max(1))
    }

    pub fn upstream_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_timeout_ms)
    }

    pub fn workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }

    pub fn usage_flush_interval(&self) -> Duration {
        Duration::from_millis(self.usage_flush_ms.max(10))
    }

    pub fn drain_delay(&self) -> Duration {
        Duration::from_millis(self.drain_delay_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}
