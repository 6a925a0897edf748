//! The control plane's configuration: every option is a flag and a `SWITCHBOARD_*` env var.

use crate::settings::ClusterSettings;
use shared::metrics::MetricsArgs;
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

    /// Address of the HTTP server (REST admin API, health, and metrics unless
    /// `--metrics-addr` moves them).
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

    /// How often the database's config version, and the spend table for new
    /// counts, are checked for writes made by other replicas (on PostgreSQL
    /// they are announced at once by LISTEN/NOTIFY; this is the fallback).
    #[arg(long, env = "SWITCHBOARD_CONFIG_POLL_MS", default_value_t = 1000)]
    pub config_poll_ms: u64,

    /// A data plane's config stream ends after about this long (+-10%), and
    /// the data plane opens a new one: behind a load balancer, streams
    /// spread over the replicas again after a rolling restart.
    #[arg(
        long,
        env = "SWITCHBOARD_CONFIG_STREAM_LIFETIME_MS",
        default_value_t = 1_800_000
    )]
    pub config_stream_lifetime_ms: u64,

    /// etcd endpoints (comma-separated URLs) for electing the replica that
    /// runs the singleton jobs. Unset: on PostgreSQL the replicas elect one
    /// with an advisory lock; on SQLite the one replica leads.
    #[arg(long, env = "SWITCHBOARD_ETCD_ENDPOINTS", value_delimiter = ',')]
    pub etcd_endpoints: Vec<String>,

    /// etcd user name (with `--etcd-password`).
    #[arg(long, env = "SWITCHBOARD_ETCD_USERNAME", requires = "etcd_password")]
    pub etcd_username: Option<String>,

    /// etcd password.
    #[arg(
        long,
        env = "SWITCHBOARD_ETCD_PASSWORD",
        hide_env_values = true,
        requires = "etcd_username"
    )]
    pub etcd_password: Option<String>,

    /// PEM CA certificate of etcd's server certificate (https:// endpoints);
    /// without it, public (webpki) roots are trusted.
    #[arg(long, env = "SWITCHBOARD_ETCD_CA")]
    pub etcd_ca: Option<PathBuf>,

    /// PEM client certificate for etcd (mTLS), with `--etcd-client-key`.
    #[arg(
        long,
        env = "SWITCHBOARD_ETCD_CLIENT_CERT",
        requires = "etcd_client_key"
    )]
    pub etcd_client_cert: Option<PathBuf>,

    /// PEM private key of `--etcd-client-cert`.
    #[arg(
        long,
        env = "SWITCHBOARD_ETCD_CLIENT_KEY",
        requires = "etcd_client_cert"
    )]
    pub etcd_client_key: Option<PathBuf>,

    /// The leader's lease: a leader that dies is replaced within about this
    /// long (etcd lease TTL, or the advisory lock's liveness check).
    #[arg(long, env = "SWITCHBOARD_LEADER_LEASE_SECONDS", default_value_t = 3)]
    pub leader_lease_seconds: u64,

    /// This replica's name in the cluster view. Default: host name and gRPC port.
    #[arg(long, env = "SWITCHBOARD_REPLICA_ID")]
    pub replica_id: Option<String>,

    /// The gRPC address other processes reach this replica at, as the
    /// cluster view shows it. Default: host name and gRPC port.
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_ADDRESS")]
    pub advertise_address: Option<String>,

    /// On SIGTERM, how long this replica keeps serving while `/readyz`
    /// answers 503, so load balancers send admins and data planes elsewhere
    /// first; then its config streams end (their data planes reconnect to
    /// another replica) and it stops. A second signal stops it at once.
    #[arg(long, env = "SWITCHBOARD_DRAIN_DELAY_MS", default_value_t = 5_000)]
    pub drain_delay_ms: u64,

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

    /// Seeds the cluster setting `global_limits.rpm` on an empty database
    /// (requests per minute over every caller); afterwards the setting is
    /// changed with PATCH /api/v1/settings, and this flag is ignored.
    #[arg(long, env = "SWITCHBOARD_GLOBAL_RPM")]
    pub global_rpm: Option<u64>,

    /// Seeds `global_limits.tpm` (tokens per minute) on an empty database.
    #[arg(long, env = "SWITCHBOARD_GLOBAL_TPM")]
    pub global_tpm: Option<u64>,

    /// Seeds `global_limits.tpd` (tokens per day) on an empty database.
    #[arg(long, env = "SWITCHBOARD_GLOBAL_TPD")]
    pub global_tpd: Option<u64>,

    /// Seeds the cluster setting `spend_interval_ms` on an empty database:
    /// how often the leader counts spend from new usage (default 250).
    #[arg(long, env = "SWITCHBOARD_SPEND_INTERVAL_MS")]
    pub spend_interval_ms: Option<u64>,

    /// URL that budget alerts (threshold crossed, budget exhausted) are
    /// POSTed to as JSON, once per holder, period and kind.
    #[arg(long, env = "SWITCHBOARD_BUDGET_ALERT_WEBHOOK")]
    pub budget_alert_webhook: Option<String>,

    /// Do not load the bundled default prices at start (they are added
    /// only for models without a price).
    #[arg(long, env = "SWITCHBOARD_NO_DEFAULT_PRICES")]
    pub no_default_prices: bool,

    /// The identity provider admins sign in to the console with (OpenID
    /// Connect; its discovery document is at `<issuer>/.well-known/openid-configuration`).
    /// Unset: the console takes admin tokens only.
    #[arg(long, env = "SWITCHBOARD_OIDC_ISSUER", requires_all = ["oidc_client_id", "oidc_redirect_url"])]
    pub oidc_issuer: Option<String>,

    /// The console's client id at the identity provider.
    #[arg(long, env = "SWITCHBOARD_OIDC_CLIENT_ID")]
    pub oidc_client_id: Option<String>,

    /// The client's secret, for providers that want one besides PKCE.
    #[arg(long, env = "SWITCHBOARD_OIDC_CLIENT_SECRET", hide_env_values = true)]
    pub oidc_client_secret: Option<String>,

    /// Where the provider sends the browser back: this control plane's
    /// `/ui/oidc/callback` as browsers reach it.
    #[arg(long, env = "SWITCHBOARD_OIDC_REDIRECT_URL")]
    pub oidc_redirect_url: Option<String>,

    /// The ID token claim naming the console role: admin, team_admin or
    /// viewer (or a list; the strongest counts). Without one, no sign-in.
    #[arg(
        long,
        env = "SWITCHBOARD_OIDC_ROLE_CLAIM",
        default_value = "switchboard_role"
    )]
    pub oidc_role_claim: String,

    /// The claim naming a team admin's team (its id or name).
    #[arg(
        long,
        env = "SWITCHBOARD_OIDC_TEAM_CLAIM",
        default_value = "switchboard_team"
    )]
    pub oidc_team_claim: String,

    /// Scopes asked for.
    #[arg(
        long,
        env = "SWITCHBOARD_OIDC_SCOPES",
        default_value = "openid profile email"
    )]
    pub oidc_scopes: String,

    /// How long a console session lasts.
    #[arg(long, env = "SWITCHBOARD_OIDC_SESSION_HOURS", default_value_t = 8)]
    pub oidc_session_hours: u64,

    /// TLS of the HTTP listener (reloaded when the files change) and of the
    /// gRPC listener (loaded at start).
    #[command(flatten)]
    pub tls: TlsArgs,

    #[command(flatten)]
    pub metrics: MetricsArgs,

    #[command(flatten)]
    pub log: LogArgs,
}

impl Config {
    /// Console sign-in through the identity provider, when configured.
    pub fn oidc(&self) -> Option<OidcSettings> {
        Some(OidcSettings {
            issuer: self.oidc_issuer.clone()?,
            client_id: self.oidc_client_id.clone()?,
            client_secret: self.oidc_client_secret.clone(),
            redirect_url: self.oidc_redirect_url.clone()?,
            role_claim: self.oidc_role_claim.clone(),
            team_claim: self.oidc_team_claim.clone(),
            scopes: self.oidc_scopes.clone(),
            session_hours: self.oidc_session_hours.clamp(1, 24 * 30),
        })
    }

    pub fn config_poll_interval(&self) -> Duration {
        Duration::from_millis(self.config_poll_ms.max(50))
    }

    pub fn jwks_refresh_interval(&self) -> Duration {
        Duration::from_millis(self.jwks_refresh_ms.max(100))
    }

    pub fn leader_lease(&self) -> Duration {
        Duration::from_secs(self.leader_lease_seconds.clamp(1, 60))
    }

    pub fn config_stream_lifetime(&self) -> Duration {
        Duration::from_millis(self.config_stream_lifetime_ms.max(1_000))
    }

    /// The settings the flags seed an empty database with, if they name any.
    pub fn seed_settings(&self) -> Option<ClusterSettings> {
        let limits = [self.global_rpm, self.global_tpm, self.global_tpd];
        if limits.iter().all(Option::is_none) && self.spend_interval_ms.is_none() {
            return None;
        }
        let defaults = ClusterSettings::default();
        Some(ClusterSettings {
            global_limits: shared::limits::RateLimits {
                rpm: self.global_rpm,
                tpm: self.global_tpm,
                tpd: self.global_tpd,
            },
            spend_interval_ms: self.spend_interval_ms.unwrap_or(defaults.spend_interval_ms),
            ..defaults
        })
    }

    /// This replica's id and advertised address.
    pub fn replica(&self) -> (String, String) {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "control-plane".into());
        let default = if self.grpc_addr.ip().is_unspecified() {
            format!("{host}:{}", self.grpc_addr.port())
        } else {
            self.grpc_addr.to_string()
        };
        (
            self.replica_id.clone().unwrap_or_else(|| default.clone()),
            self.advertise_address.clone().unwrap_or(default),
        )
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

/// Console sign-in through the identity provider: what `--oidc-*` configure.
#[derive(Clone, Debug)]
pub struct OidcSettings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub redirect_url: String,
    pub role_claim: String,
    pub team_claim: String,
    pub scopes: String,
    pub session_hours: u64,
}
