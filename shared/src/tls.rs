//! TLS for the HTTP listeners (the data plane's public one, the control
//! plane's admin one): a certificate and key from PEM files, loaded again
//! when the files change, so a renewed certificate needs no restart.

pub use axum_server::tls_rustls::RustlsConfig;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// The TLS flags of both binaries' HTTP listeners.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct TlsArgs {
    /// PEM certificate chain: with `--tls-key`, the listener serves HTTPS
    /// (HTTP/1.1 and HTTP/2 by ALPN) instead of plain HTTP.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key (PKCS#8, PKCS#1 or SEC1) of `--tls-cert`.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// How often the certificate and key files are checked; a change is loaded
    /// for new connections (a bad pair is logged and the old one kept).
    #[arg(long, env = "SWITCHBOARD_TLS_RELOAD_MS", default_value_t = 10_000)]
    pub tls_reload_ms: u64,
}

/// A listener's certificate, kept fresh from its files.
#[derive(Clone)]
pub struct ServerTls {
    pub config: RustlsConfig,
    cert: PathBuf,
    key: PathBuf,
    every: Duration,
}

/// The process's TLS provider: one, chosen here, so rustls never has to guess.
pub fn install_crypto_provider() {
    // Err only means it was installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

impl TlsArgs {
    /// `None` for plain HTTP; an error names the file that could not be used.
    pub async fn load(&self) -> Result<Option<ServerTls>, String> {
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        install_crypto_provider();
        let config = RustlsConfig::from_pem_file(cert, key).await.map_err(|e| {
            format!(
                "tls_cert, tls_key: cannot use {} with {}: {e}",
                cert.display(),
                key.display()
            )
        })?;
        Ok(Some(ServerTls {
            config,
            cert: cert.clone(),
            key: key.clone(),
            every: Duration::from_millis(self.tls_reload_ms.max(100)),
        }))
    }
}

impl ServerTls {
    /// Loads the pair again whenever either file changes, until `shutdown`.
    pub async fn keep_fresh(self, shutdown: CancellationToken) {
        let mut seen = stamp(&self.cert, &self.key);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.every) => {}
            }
            let now = stamp(&self.cert, &self.key);
            if now == seen {
                continue;
            }
            match self
                .config
                .reload_from_pem_file(&self.cert, &self.key)
                .await
            {
                Ok(()) => {
                    seen = now;
                    metrics::counter!("switchboard_tls_reloads_total", "result" => "ok")
                        .increment(1);
                    tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                }
                // A pair caught half-written is tried again on the next tick.
                Err(error) => {
                    metrics::counter!("switchboard_tls_reloads_total", "result" => "error")
                        .increment(1);
                    tracing::warn!(cert = %self.cert.display(), %error, "TLS certificate not reloaded; the previous one stays in use");
                }
            }
        }
    }
}

/// A PEM file named by a flag; an error names the flag and the path.
pub fn read_pem(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag}: cannot read {}: {e}", path.display()))
}

fn stamp(cert: &Path, key: &Path) -> [Option<(SystemTime, u64)>; 2] {
    let of = |path: &Path| {
        std::fs::metadata(path)
            .ok()
            .and_then(|m| Some((m.modified().ok()?, m.len())))
    };
    [of(cert), of(key)]
}
