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
use axum::body::Body;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use futures_util::FutureExt;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::runtime::{Handle, Runtime};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

const BACKLOG: u32 = 4096;
/// hyper's per-connection buffer limit; request heads are capped below it.
const MAX_BUFFER_BYTES: usize = 128 * 1024;
/// After a failed accept (out of file descriptors): at most ten warnings a second.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At shutdown, how long a connection may take to bring in a request its
/// client already sent, before an idle one is closed.
const LINGER: Duration = Duration::from_millis(500);

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

/// The worker threads: each one's end, and its runtime for what watches them.
pub struct Workers {
    pub stopped: Vec<Stopped>,
    pub runtimes: Vec<Handle>,
}

/// Starts one worker thread per listener. On `shutdown` each stops accepting,
/// lets its requests finish for up to `grace`, then drops what is left (a
/// stream cut this way still records its usage).
pub fn start(
    listeners: Vec<std::net::TcpListener>,
    state: impl Fn() -> AppState,
    tls: Option<RustlsConfig>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<Workers> {
    let mut workers = Workers {
        stopped: Vec::with_capacity(listeners.len()),
        runtimes: Vec::with_capacity(listeners.len()),
    };
    for (index, listener) in listeners.into_iter().enumerate() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        workers.runtimes.push(runtime.handle().clone());
        let (state, shutdown, tls) = (state(), shutdown.clone(), tls.clone());
        let (done, stopped) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("worker-{index}"))
            .spawn(move || {
                let _ = done.send(serve(runtime, listener, state, tls, shutdown, grace));
            })?;
        workers.stopped.push(stopped);
    }
    Ok(workers)
}

fn serve(
    runtime: Runtime,
    listener: std::net::TcpListener,
    state: AppState,
    tls: Option<RustlsConfig>,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let result = match tls {
        Some(tls) => runtime.block_on(serve_tls(listener, state, tls, shutdown, grace)),
        None => runtime.block_on(serve_http1(listener, state, shutdown, grace)),
    };
    // Drops the connections still open, and with them their usage sinks.
    runtime.shutdown_timeout(Duration::from_millis(100));
    result
}

/// The ingress service on hyper's own request body.
fn service(
    state: AppState,
) -> impl tower::Service<
    hyper::Request<hyper::body::Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    ingress::service(state).map_request(|request: hyper::Request<_>| request.map(Body::new))
}

/// Plain HTTP: HTTP/1.1 only, straight on hyper. Clients and load balancers
/// speak HTTP/1.1 to a cleartext port; without the HTTP/1-or-h2c detection
/// layer a connection costs less memory and each request a little less work
/// (docs/benchmarks.md).
///
/// Stopping must not reset a request a client has already sent: one still
/// in the listen queue (accepted and served before the socket closes) or
/// one in a connection's socket that hyper has not read yet (each connection
/// gets `LINGER` to bring it in before idle ones are closed). While the data
/// plane drains, answers say `Connection: close`, so clients do not send
/// another.
async fn serve_http1(
    listener: std::net::TcpListener,
    state: AppState,
    shutdown: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = TcpListener::from_std(listener)?;
    let service = TowerToHyperService::new(service(state));
    // No header read timeout: hyper arms its timer for every request head,
    // which costs each request a wake-up of the thread's own event loop.
    let mut http = http1::Builder::new();
    http.max_buf_size(MAX_BUFFER_BYTES);
    let linger = grace.min(LINGER);
    let connections = TaskTracker::new();
    let serve = |tcp: TcpStream| {
        // Without TCP_NODELAY, Nagle holds each small SSE chunk until the
        // client's delayed ACK (up to 40 ms) arrives.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "TCP_NODELAY not set");
        }
        let connection = http.serve_connection(TokioIo::new(tcp), service.clone());
        let stopping = shutdown.clone();
        connections.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => return,
                _ = stopping.cancelled() => {}
            }
            if tokio::time::timeout(linger, connection.as_mut())
                .await
                .is_err()
            {
                // Idle connections close now; busy ones after their answer.
                connection.as_mut().graceful_shutdown();
                let _ = connection.await;
            }
        });
    };
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => serve(tcp),
                Err(error) => {
                    // Out of file descriptors, or a connection reset before it was
                    // taken: keep serving the open ones and try again shortly.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
    // Closing the socket would reset the connections still queued on it.
    while let Some(Ok((tcp, _))) = listener.accept().now_or_never() {
        serve(tcp);
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(grace, connections.wait())
        .await
        .is_err()
    {
        tracing::warn!("in-flight requests outlived the shutdown grace period; closing them");
    }
    Ok(())
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
        .serve(tower::make::Shared::new(service(state)))
        .await
}
