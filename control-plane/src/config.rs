//! The control plane's configuration: every option is a flag and a `SWITCHBOARD_*` env var.

use shared::telemetry::LogArgs;
use shared::tls::TlsArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "control-plane", version, about = "Switchboard control plane")]
pub struct Config {
    /// `sqlite://path` (created if missing) or `postgres://...`.
    #[arg(
        long,
        env = "SWITCHBOARD_DATABASE_URL",
        default_value = "sqlite://.switchboard/control-plane.db"
    )]
    pub database_url: String,

    /// Address of the gRPC server (admin API, config stream, usage ingestion).
    #[arg(long, env = "SWITCHBOARD_GRPC_ADDR", default_value = "0.0.0.0:50051")]
    pub grpc_addr: SocketAddr,

    /// Address of the HTTP server (REST admin API, health, metrics).
    #[arg(long, env = "SWITCHBOARD_HTTP_ADDR", default_value = "0.0.0.0:8081")]
    pub http_addr: SocketAddr,

    /// Bearer token of the admin APIs. Generated on first start with SQLite when not set.
    #[arg(long, env = "SWITCHBOARD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Bearer token data planes present. Generated on first start with SQLite when not set.
    #[arg(long, env = "SWITCHBOARD_CLUSTER_TOKEN", hide_env_values = true)]
    pub cluster_token: Option<String>,

    /// 64 hex characters: the key that encrypts provider credentials at rest.
    /// Generated on first start with SQLite when not set.
    #[arg(long, env = "SWITCHBOARD_SECRET_KEY", hide_env_values = true)]
    pub secret_key: Option<String>,

    /// Earlier secret keys (comma-separated hex), while rotating: what they
    /// sealed is still read, and re-sealed with `secret_key` at start.
    #[arg(
        long,
        env = "SWITCHBOARD_PREVIOUS_SECRET_KEYS",
        hide_env_values = true,
        value_delimiter = ','
    )]
    pub previous_secret_keys: Vec<String>,

    /// How often the database's config version is checked for writes made by other replicas.
    #[arg(long, env = "SWITCHBOARD_CONFIG_POLL_MS", default_value_t = 1000)]
    pub config_poll_ms: u64,

    /// Maximum database connections.
    #[arg(
        long,
        env = "SWITCHBOARD_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub database_max_connections: u32,

    /// Accept provider base URLs on link-local addresses and cloud metadata
    /// services (169.254.0.0/16, fe80::/10, metadata.google.internal, ...),
    /// which are refused otherwise.
    #[arg(long, env = "SWITCHBOARD_ALLOW_LINK_LOCAL_UPSTREAMS")]
    pub allow_link_local_upstreams: bool,

    /// How often the key sets of JWT issuers with a `jwks_url` are fetched
    /// again. New keys reach data planes within this time.
    #[arg(long, env = "SWITCHBOARD_JWKS_REFRESH_MS", default_value_t = 300_000)]
    pub jwks_refresh_ms: u64,

    /// PEM CA certificate of data planes' client certificates: with TLS on,
    /// the cluster service then requires one (mTLS) and takes a data plane's
    /// identity from it (first DNS name, else common name).
    #[arg(long, env = "SWITCHBOARD_CLUSTER_CLIENT_CA", requires = "tls_cert")]
    pub cluster_client_ca: Option<PathBuf>,

    /// Requests per minute over every caller of the cluster (all data planes
    /// together when they share Redis). Unset: no limit.
    #[arg(long, env = "SWITCHBOARD_GLOBAL_RPM")]
    pub global_rpm: Option<u64>,

    /// Tokens per minute over every caller of the cluster.
    #[arg(long, env = "SWITCHBOARD_GLOBAL_TPM")]
    pub global_tpm: Option<u64>,

    /// Tokens per day over every caller of the cluster.
    #[arg(long, env = "SWITCHBOARD_GLOBAL_TPD")]
    pub global_tpd: Option<u64>,

    /// How often spend is counted again from usage records for keys, users
    /// and teams with a budget or quota (and shipped to data planes).
    #[arg(long, env = "SWITCHBOARD_SPEND_INTERVAL_MS", default_value_t = 5_000)]
    pub spend_interval_ms: u64,

    /// URL that budget alerts (threshold crossed, budget exhausted) are
    /// POSTed to as JSON, once per holder, period and kind.
    #[arg(long, env = "SWITCHBOARD_BUDGET_ALERT_WEBHOOK")]
    pub budget_alert_webhook: Option<String>,

    /// Do not load the bundled default prices at start (they are added
    /// only for models without a price).
    #[arg(long, env = "SWITCHBOARD_NO_DEFAULT_PRICES")]
    pub no_default_prices: bool,

    /// TLS of the HTTP listener (reloaded when the files change) and of the
    /// gRPC listener (loaded at start).
    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    pub fn config_poll_interval(&self) -> Duration {
        Duration::from_millis(self.config_poll_ms.max(50))
    }

    pub fn jwks_refresh_interval(&self) -> Duration {
        Duration::from_millis(self.jwks_refresh_ms.max(100))
    }

    pub fn spend_interval(&self) -> Duration {
        Duration::from_millis(self.spend_interval_ms.max(100))
    }

    pub fn global_limits(&self) -> Result<shared::limits::RateLimits, String> {
        let limits = shared::limits::RateLimits {
            rpm: self.global_rpm,
            tpm: self.global_tpm,
            tpd: self.global_tpd,
        };
        limits.validate("global_")?;
        Ok(limits)
    }

    pub fn database(&self) -> Result<DatabaseKind, String> {
        DatabaseKind::of_url(&self.database_url)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatabaseKind {
    Sqlite,
    Postgres,
}

impl DatabaseKind {
    pub fn of_url(url: &str) -> Result<Self, String> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err("database_url: expected a sqlite:// or postgres:// URL".to_owned())
        }
    }
}
