//! Switchboard's control plane as a library; `main.rs` only parses flags.
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod audit;
pub mod config;
pub mod error;
pub mod jwks;
pub mod model;
pub mod outbound;
pub mod secrets;
pub mod service;
pub mod snapshot;
pub mod spend;
pub mod store;

use anyhow::Context;
use config::Config;
use shared::crypto::Cipher;
use shared::tasks::Tasks;
use std::future::Future;
use std::sync::Arc;

/// Runs until `shutdown` resolves, then stops every task.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
    let tasks = Tasks::new();
    let metrics = shared::metrics::install(&tasks).context("installing the metrics recorder")?;
    let store = store::Store::connect(&config.database_url, config.database_max_connections)
        .await
        .context("database_url: cannot open the database")?;
    let secrets = secrets::resolve(&config)?;
    let cipher = Arc::new(Cipher::with_previous(
        &secrets.secret_key,
        &secrets.previous_secret_keys,
    ));
    // A rotated secret key: what the previous ones sealed is sealed again now.
    let resealed = store
        .reseal_credentials(&cipher)
        .await
        .context("re-sealing provider credentials with the secret key")?;
    if resealed > 0 {
        tracing::info!(
            resealed,
            "provider credentials re-sealed with the current secret key"
        );
    }

    let webhook = config
        .budget_alert_webhook
        .as_deref()
        .map(spend::AlertWebhook::new)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let publisher =
        snapshot::Publisher::new(store.clone(), cipher.clone(), config.config_poll_interval())
            .with_global_limits(config.global_limits().map_err(anyhow::Error::msg)?);
    if let Err(error) = publisher.publish_current().await {
        // The detail (which credential, say) is for the operator starting it.
        error.log_if_internal();
        return Err(anyhow::Error::new(error).context("building the first snapshot"));
    }
    let snapshots = publisher.subscribe();
    tasks.spawn(
        "jwks-refresher",
        jwks::JwksFetcher::default().run(
            store.clone(),
            publisher.refresher(),
            config.jwks_refresh_interval(),
            tasks.token(),
        ),
    );
    tasks.spawn(
        "spend-counter",
        spend::SpendCounter {
            store: store.clone(),
            refresher: publisher.refresher(),
            interval: config.spend_interval(),
            webhook,
        }
        .run(tasks.token()),
    );
    let admin = service::Admin::new(store, cipher, publisher.refresher())
        .allowing_link_local_upstreams(config.allow_link_local_upstreams);
    if !config.no_default_prices {
        let added = crate::audit::scope(
            audit::AuditContext::new(access::Principal::system("system".into()), None),
            admin.load_default_prices(),
        )
        .await
        .context("loading the bundled prices")?;
        if added > 0 {
            tracing::info!(added, "bundled default prices loaded");
        }
    }

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("grpc_addr: cannot listen on {}", config.grpc_addr))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("http_addr: cannot listen on {}", config.http_addr))?;
    tracing::info!(
        grpc = %grpc_listener.local_addr()?,
        http = %http_listener.local_addr()?,
        database = ?admin.store().kind(),
        "control plane listening"
    );

    let http_tls = config.tls.load().await.map_err(anyhow::Error::msg)?;
    let grpc_tls = grpc_tls(&config)?;

    tasks.spawn("snapshot-publisher", publisher.run(tasks.token()));
    let grpc_state = api::grpc::GrpcState {
        admin: admin.clone(),
        admin_token: secrets.admin_token.clone(),
        cluster_token: secrets.cluster_token,
        snapshots: snapshots.clone(),
        shutdown: tasks.token(),
        tls: grpc_tls,
    };
    tasks.spawn("grpc-server", async move {
        if let Err(error) = api::grpc::serve(grpc_listener, grpc_state).await {
            tracing::error!(%error, "gRPC server failed");
        }
    });
    let rest = api::rest::router(api::rest::RestState {
        admin,
        admin_token: secrets.admin_token,
        snapshots,
        metrics,
    });
    let token = tasks.token();
    match http_tls {
        None => tasks.spawn("http-server", async move {
            let served = axum::serve(http_listener, rest)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "HTTP server failed");
            }
        }),
        Some(tls) => {
            tasks.spawn("tls-reload", tls.clone().keep_fresh(tasks.token()));
            let handle = axum_server::Handle::new();
            let stopping = handle.clone();
            tasks.spawn("http-server", async move {
                let listener = match http_listener.into_std() {
                    Ok(listener) => listener,
                    Err(error) => return tracing::error!(%error, "HTTP server failed"),
                };
                tokio::spawn(async move {
                    token.cancelled().await;
                    stopping.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
                });
                let served = match axum_server::from_tcp_rustls(listener, tls.config) {
                    Ok(server) => server.handle(handle).serve(rest.into_make_service()).await,
                    Err(error) => Err(error),
                };
                if let Err(error) = served {
                    tracing::error!(%error, "HTTP server failed");
                }
            });
        }
    }

    shutdown.await;
    tasks.shutdown().await;
    tracing::info!("control plane stopped");
    Ok(())
}

/// The gRPC listener's TLS, read once at start (tonic does not reload it).
fn grpc_tls(config: &Config) -> anyhow::Result<Option<api::grpc::GrpcTls>> {
    let (Some(cert), Some(key)) = (&config.tls.tls_cert, &config.tls.tls_key) else {
        return Ok(None);
    };
    shared::tls::install_crypto_provider();
    let read = |flag: &str, path: &std::path::Path| {
        shared::tls::read_pem(flag, path).map_err(anyhow::Error::msg)
    };
    Ok(Some(api::grpc::GrpcTls {
        cert: read("tls_cert", cert)?,
        key: read("tls_key", key)?,
        client_ca: config
            .cluster_client_ca
            .as_deref()
            .map(|ca| read("cluster_client_ca", ca))
            .transpose()?,
    }))
}
