//! Switchboard's control plane as a library; `main.rs` only parses flags.
#![forbid(unsafe_code)]

pub mod access;
pub mod api;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod error;
pub mod jwks;
pub mod meters;
pub mod model;
pub mod outbound;
pub mod secrets;
pub mod service;
pub mod settings;
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
    meters::describe();
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

    if let Some(seed) = config.seed_settings() {
        seed.validate()
            .context("--global-rpm, --global-tpm, --global-tpd, --spend-interval-ms")?;
        if !store.seed_settings(&seed).await? && store.settings().await? != seed {
            tracing::warn!("the cluster settings in the database win over --global-* and --spend-interval-ms, which only seed an empty database; change them with PATCH /api/v1/settings");
        }
    }
    let webhook = config
        .budget_alert_webhook
        .as_deref()
        .map(spend::AlertWebhook::new)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let feed = match snapshot::ConfigFeed::start(
        store.clone(),
        cipher.clone(),
        config.config_poll_interval(),
    )
    .await
    {
        Ok(feed) => feed,
        Err(error) => {
            // The detail (which credential, say) is for the operator starting it.
            error.log_if_internal();
            return Err(anyhow::Error::new(error).context("reading the configuration"));
        }
    };
    let counters = snapshot::CounterFeed::start(store.clone(), config.config_poll_interval())
        .await
        .context("reading the spend counts")?;
    let admin = service::Admin::new(store.clone(), cipher.clone(), feed.refresher())
        .allowing_link_local_upstreams(config.allow_link_local_upstreams);
    let oidc = config
        .oidc()
        .map(|settings| Arc::new(api::oidc::Oidc::new(settings, admin.clone(), cipher)));
    if !config.no_default_prices {
        let added = admin
            .load_default_prices()
            .await
            .context("loading the bundled prices")?;
        if added > 0 {
            tracing::info!(added, "bundled default prices loaded");
        }
    }

    let (replica_id, address) = config.replica();
    let method = election_method(&config)?;
    let (leadership, campaign) = cluster::election::start(
        method,
        store.clone(),
        replica_id.clone(),
        config.leader_lease(),
        tasks.token(),
    );
    tasks.spawn("leader-election", campaign);
    tasks.spawn(
        "replica-registry",
        cluster::registry::run(
            store.clone(),
            cluster::registry::Replica {
                id: replica_id.clone(),
                address,
                started_at: shared::time::now_ms(),
            },
            tasks.token(),
        ),
    );
    spawn_singleton_jobs(
        &tasks,
        &leadership,
        &store,
        &feed,
        &counters,
        webhook,
        &config,
    );
    if store.kind() == config::DatabaseKind::Postgres {
        tasks.spawn(
            "config-listener",
            snapshot::feed::listen_for_changes(
                config.database_url.clone(),
                feed.refresher(),
                counters.refresher(),
                tasks.token(),
            ),
        );
    }
    tasks.spawn("config-feed", feed.clone().run(tasks.token()));
    tasks.spawn("counter-feed", counters.clone().run(tasks.token()));

    let grpc_listener = tokio::net::TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("grpc_addr: cannot listen on {}", config.grpc_addr))?;
    let http_listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("http_addr: cannot listen on {}", config.http_addr))?;
    let metrics_listener = config.metrics.bind().await.map_err(anyhow::Error::msg)?;
    tracing::info!(
        grpc = %grpc_listener.local_addr()?,
        http = %http_listener.local_addr()?,
        database = ?admin.store().kind(),
        "control plane listening"
    );

    let http_tls = config.tls.load().await.map_err(anyhow::Error::msg)?;
    let grpc_tls = grpc_tls(&config)?;

    let grpc_state = api::grpc::GrpcState {
        admin: admin.clone(),
        admin_token: secrets.admin_token.clone(),
        cluster_token: secrets.cluster_token,
        cluster: api::grpc::ClusterGrpc {
            admin: admin.clone(),
            config: feed,
            counters,
            replica: replica_id,
            stream_lifetime: config.config_stream_lifetime(),
            shutdown: tasks.token(),
        },
        shutdown: tasks.token(),
        tls: grpc_tls,
    };
    tasks.spawn("grpc-server", async move {
        if let Err(error) = api::grpc::serve(grpc_listener, grpc_state).await {
            tracing::error!(%error, "gRPC server failed");
        }
    });
    let public_metrics = shared::metrics::expose(metrics_listener, metrics, &tasks);
    let draining = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rest = api::rest::router(api::rest::RestState {
        admin,
        admin_token: secrets.admin_token,
        metrics: public_metrics,
        draining: draining.clone(),
        oidc,
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
    shared::tasks::drain(
        &draining,
        std::time::Duration::from_millis(config.drain_delay_ms),
    )
    .await;
    tasks.shutdown().await;
    tracing::info!("control plane stopped");
    Ok(())
}

/// How this replica takes part in electing the leader of the singleton jobs.
fn election_method(config: &Config) -> anyhow::Result<cluster::election::Method> {
    use cluster::election::{EtcdSettings, Method};
    if config.etcd_endpoints.is_empty() {
        return Ok(match config.database().map_err(anyhow::Error::msg)? {
            config::DatabaseKind::Sqlite => Method::Solo,
            config::DatabaseKind::Postgres => Method::PostgresLock {
                url: config.database_url.clone(),
            },
        });
    }
    let tls = if config
        .etcd_endpoints
        .iter()
        .any(|e| e.starts_with("https://"))
        || config.etcd_ca.is_some()
    {
        shared::tls::install_crypto_provider();
        let read = |flag: &str, path: &std::path::Path| {
            shared::tls::read_pem(flag, path).map_err(anyhow::Error::msg)
        };
        let mut tls = etcd_client::TlsOptions::new();
        tls = match &config.etcd_ca {
            Some(ca) => {
                tls.ca_certificate(etcd_client::Certificate::from_pem(read("etcd_ca", ca)?))
            }
            None => tls.with_webpki_roots(),
        };
        if let (Some(cert), Some(key)) = (&config.etcd_client_cert, &config.etcd_client_key) {
            tls = tls.identity(etcd_client::Identity::from_pem(
                read("etcd_client_cert", cert)?,
                read("etcd_client_key", key)?,
            ));
        }
        Some(tls)
    } else {
        None
    };
    Ok(Method::Etcd(EtcdSettings {
        endpoints: config.etcd_endpoints.clone(),
        user: config
            .etcd_username
            .clone()
            .zip(config.etcd_password.clone()),
        tls,
    }))
}

/// The jobs only the leader runs.
fn spawn_singleton_jobs(
    tasks: &Tasks,
    leadership: &cluster::Leadership,
    store: &store::Store,
    feed: &snapshot::ConfigFeed,
    counters: &snapshot::CounterFeed,
    webhook: Option<spend::AlertWebhook>,
    config: &Config,
) {
    let (counting, counted) = (store.clone(), counters.refresher());
    cluster::jobs::spawn(tasks, "spend-counter", leadership, move |fence, stop| {
        spend::SpendCounter {
            store: counting.clone(),
            webhook: webhook.clone(),
            counted: counted.clone(),
        }
        .run(fence, stop)
    });
    let (fetching, refresher, every) = (
        store.clone(),
        feed.refresher(),
        config.jwks_refresh_interval(),
    );
    cluster::jobs::spawn(tasks, "jwks-refresher", leadership, move |fence, stop| {
        jwks::JwksFetcher::default().run(fetching.clone(), refresher.clone(), every, fence, stop)
    });
    let pruning = store.clone();
    cluster::jobs::spawn(tasks, "config-history", leadership, move |fence, stop| {
        snapshot::history::prune(pruning.clone(), fence, stop)
    });
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
