//! Ownership of background tasks: every task is spawned through `Tasks`, sees
//! the same cancellation token, and is awaited on shutdown.

use std::future::Future;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Default)]
pub struct Tasks {
    token: CancellationToken,
    tracker: TaskTracker,
}

impl Tasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled when shutdown begins.
    pub fn token(&self) -> CancellationToken {
        self.token.clone()
    }

    pub fn spawn<F>(&self, name: &'static str, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(async move {
            task.await;
            tracing::debug!(task = name, "background task ended");
        });
    }

    /// Asks every task to stop and waits for them.
    pub async fn shutdown(&self) {
        self.token.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

/// Resolves on the first SIGTERM or Ctrl-C, which begins a graceful stop; a
/// second one ends the process at once, drain or no drain.
pub async fn shutdown_requested() {
    shutdown_signal().await;
    tokio::spawn(async {
        shutdown_signal().await;
        tracing::warn!("second shutdown signal: stopping now");
        std::process::exit(130);
    });
}

/// The first moments of a graceful stop: `draining` makes `/readyz` answer
/// 503 at once, so load balancers take this process out of rotation, while
/// it goes on serving for `delay`.
pub async fn drain(draining: &std::sync::atomic::AtomicBool, delay: std::time::Duration) {
    draining.store(true, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        drain_delay_ms = delay.as_millis() as u64,
        "draining: /readyz answers 503; still serving until the drain delay ends"
    );
    tokio::time::sleep(delay).await;
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received");
}
