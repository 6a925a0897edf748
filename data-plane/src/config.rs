//! The data plane's configuration: every option is a flag and a `SWITCHBOARD_*` env var.

use shared::telemetry::LogArgs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, clap::Parser)]
#[command(name = "data-plane", version, about = "Switchboard data plane")]
pub struct Config {
    /// Address of the OpenAI-compatible HTTP API (also /healthz, /readyz, /metrics).
    #[arg(long, env = "SWITCHBOARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// gRPC address of the control plane.
    #[arg(
        long,
        env = "SWITCHBOARD_CONTROL_PLANE",
        default_value = "http://127.0.0.1:50051"
    )]
    pub control_plane: String,

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

    /// Time allowed for a non-streaming upstream answer, and for a stream's first byte.
    #[arg(
        long,
        env = "SWITCHBOARD_UPSTREAM_TIMEOUT_MS",
        default_value_t = 600_000
    )]
    pub upstream_timeout_ms: u64,

    /// Independent connection pools per data plane. Each holds one HTTP/2
    /// connection per provider host, so this many times the provider's
    /// concurrent-stream limit can be in flight before requests queue.
    #[arg(
        long,
        env = "SWITCHBOARD_UPSTREAM_HTTP2_CONNECTIONS",
        default_value_t = 4
    )]
    pub upstream_http2_connections: usize,

    /// Threads serving the public listener, each with its own connections to
    /// clients and providers; 0 means one per CPU.
    #[arg(long, env = "SWITCHBOARD_WORKERS", default_value_t = 0)]
    pub workers: usize,

    /// Most usage records sent in one batch.
    #[arg(long, env = "SWITCHBOARD_USAGE_BATCH_SIZE", default_value_t = 500)]
    pub usage_batch_size: usize,

    /// Longest a usage record waits before its batch is sent.
    #[arg(long, env = "SWITCHBOARD_USAGE_FLUSH_MS", default_value_t = 1000)]
    pub usage_flush_ms: u64,

    /// Usage records held in memory before the request path waits for the shipper.
    #[arg(long, env = "SWITCHBOARD_USAGE_QUEUE", default_value_t = 65_536)]
    pub usage_queue: usize,

    /// Longest in-flight requests may take to finish on shutdown.
    #[arg(long, env = "SWITCHBOARD_SHUTDOWN_GRACE_MS", default_value_t = 30_000)]
    pub shutdown_grace_ms: u64,

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
        if !(self.control_plane.starts_with("http://")
            || self.control_plane.starts_with("https://"))
        {
            return Err("control_plane: expected an http:// or https:// URL".into());
        }
        if self.max_body_bytes == 0 {
            return Err("max_body_bytes: must be positive".into());
        }
        if self.upstream_http2_connections == 0 {
            return Err("upstream_http2_connections: must be positive".into());
        }
        if self.usage_batch_size == 0 || self.usage_queue == 0 {
            return Err("usage_batch_size and usage_queue: must be positive".into());
        }
        Ok(())
    }

    pub fn cluster_token(&self) -> &str {
        self.cluster_token.as_deref().unwrap_or_default().trim()
    }

    pub fn upstream_connect_timeout(&self) -> Duration {
        Duration::from_millis(self.upstream_connect_timeout_ms)
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

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }
}
