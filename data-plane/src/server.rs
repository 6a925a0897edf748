//! The public listener, served thread-per-core: each worker thread runs a
//! single-threaded runtime that accepts on the shared listening socket and
//! keeps its own upstream pools, so a request is served start to finish on
//! one thread, with no cross-thread wakeups or work stealing on the request
//! path (measured in docs/benchmarks.md). Background work (config sync, usage
//! shipping) stays on the main runtime.
//!
//! One socket, not one per worker with `SO_REUSEPORT`: a second process
//! started on the same port fails instead of silently taking half the
//! connections, and a new connection goes to whichever worker accepts first,
//! which is the least busy one.

use crate::ingress::{self, AppState};
use axum::serve::ListenerExt;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

const BACKLOG: u32 = 4096;

/// Binds the listening socket, and answers one handle on it per worker.
pub fn bind(addr: SocketAddr, workers: usize) -> std::io::Result<Vec<std::net::TcpListener>> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    let listener = socket.listen(BACKLOG)?.into_std()?;
    let mut handles = Vec::with_capacity(workers.max(1));
    for _ in 1..workers.max(1) {
        handles.push(listener.try_clone()?);
    }
    handles.push(listener);
    Ok(handles)
}

/// A running worker; resolves when it has stopped.
pub type Stopped = oneshot::Receiver<std::io::Result<()>>;

/// Starts one worker thread per listener. On `shutdown` each stops accepting,
/// lets its requests finish for up to `grace`, then drops what is left (a
/// stream cut this way still records its usage).
pub fn start(
    listeners: Vec<std::net::TcpListener>,
    state: impl Fn() -> AppState,
    tls: Option<RustlsConfig>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<Vec<Stopped>> {
    listeners
        .into_iter()
        .enumerate()
        .map(|(index, listener)| {
            let (state, shutdown, tls) = (state(), shutdown.clone(), tls.clone());
            let (done, stopped) = oneshot::channel();
            std::thread::Builder::new()
                .name(format!("worker-{index}"))
                .spawn(move || {
                    let _ = done.send(serve(listener, state, tls, shutdown, grace));
                })?;
            Ok(stopped)
        })
        .collect()
}

fn serve(
    listener: std::net::TcpListener,
    state: AppState,
    tls: Option<RustlsConfig>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if let Some(tls) = tls {
        let result = runtime.block_on(serve_tls(listener, state, tls, shutdown, grace));
        runtime.shutdown_timeout(Duration::from_millis(100));
        return result;
    }
    let result = runtime.block_on(async move {
        // Without TCP_NODELAY, Nagle holds each small SSE chunk until the
        // client's delayed ACK (up to 40 ms) arrives.
        let listener = TcpListener::from_std(listener)?.tap_io(|tcp| {
            if let Err(error) = tcp.set_nodelay(true) {
                tracing::debug!(%error, "TCP_NODELAY not set");
            }
        });
        let stopping = shutdown.clone();
        let server = axum::serve(listener, ingress::router(state))
            .with_graceful_shutdown(async move { stopping.cancelled().await });
        tokio::select! {
            served = server => served,
            _ = async { shutdown.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("in-flight requests outlived the shutdown grace period; closing them");
                Ok(())
            }
        }
    });
    // Drops the connections still open, and with them their usage sinks.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// HTTPS: the same service behind a TLS handshake, its certificate reloaded
/// from its files by the main runtime. Handshakes run per connection, so a
/// slow client never holds up accepting others.
async fn serve_tls(
    listener: std::net::TcpListener,
    state: AppState,
    tls: RustlsConfig,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let handle = axum_server::Handle::new();
    let stopping = handle.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        stopping.graceful_shutdown(Some(grace));
    });
    // Without TCP_NODELAY, Nagle holds each small SSE chunk until the client's delayed ACK.
    let acceptor = RustlsAcceptor::new(tls).acceptor(NoDelayAcceptor::new());
    axum_server::from_tcp(listener)?
        .acceptor(acceptor)
        .handle(handle)
        .serve(ingress::router(state).into_make_service())
        .await
}
