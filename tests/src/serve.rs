//! How the mocks serve: plain HTTP/1.1 (the gateway's pool for `http://`
//! providers), or HTTPS with HTTP/2 by ALPN, as hosted providers answer.

use axum::serve::ListenerExt;
use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Debug, clap::Args)]
pub struct ServeArgs {
    /// PEM certificate chain: with `--tls-key`, serve HTTPS (HTTP/2 and
    /// HTTP/1.1 by ALPN) instead of plain HTTP/1.1.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Streams one HTTP/2 connection may carry at once (the server's
    /// SETTINGS_MAX_CONCURRENT_STREAMS; hyper's default).
    #[arg(long, default_value_t = 200)]
    pub max_concurrent_streams: u32,
}

/// Serves `app` until SIGTERM or Ctrl-C.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    args: &ServeArgs,
) -> std::io::Result<()> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else {
        // Streams are small writes apart in time: without TCP_NODELAY, Nagle holds them.
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        return axum::serve(listener, app)
            .with_graceful_shutdown(shared::tasks::shutdown_signal())
            .await;
    };
    shared::tls::install_crypto_provider();
    let tls = RustlsConfig::from_pem_file(cert, key).await?;
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shared::tasks::shutdown_signal().await;
        stopping.graceful_shutdown(Some(Duration::from_secs(5)));
    });
    let mut server = axum_server::from_tcp(listener.into_std()?)?
        .acceptor(RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new()))
        .handle(handle);
    server
        .http_builder()
        .http2()
        .max_concurrent_streams(args.max_concurrent_streams);
    server.serve(app.into_make_service()).await
}
