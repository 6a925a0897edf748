//! Stores for the store's own tests: a fresh SQLite file, and a fresh
//! PostgreSQL database on the machine's server (127.0.0.1:5432, as CI has
//! it; `SWITCHBOARD_TEST_POSTGRES` names another). Without a reachable
//! server the PostgreSQL half is skipped, except in CI, where it fails.

use super::Store;
use sqlx::Executor;

const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// One store per database kind, each empty (migrated).
pub async fn stores() -> Vec<Store> {
    let dir = std::env::temp_dir().join(format!("sb-store-{}", uuid::Uuid::new_v4()));
    let sqlite = Store::connect(&format!("sqlite://{}/cp.db", dir.display()), 2)
        .await
        .expect("sqlite store");
    let mut stores = vec![sqlite];
    match postgres().await {
        Ok(store) => stores.push(store),
        Err(error) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL store not available in CI: {error}")
        }
        Err(error) => eprintln!("PostgreSQL store tests skipped: {error}"),
    }
    stores
}

async fn postgres() -> anyhow::Result<Store> {
    let admin_url =
        std::env::var("SWITCHBOARD_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_ADMIN_URL.into());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url).await?;
    // Earlier runs' databases go; those in use (this run's other tests) stay.
    let leftovers = sqlx::query_scalar::<_, String>(
        "SELECT CAST(datname AS TEXT) FROM pg_database WHERE datname LIKE 'sb\\_store\\_%'",
    )
    .fetch_all(&admin)
    .await?;
    for old in leftovers {
        let _ = admin.execute(format!("DROP DATABASE {old}").as_str()).await;
    }
    let name = format!("sb_store_{}", uuid::Uuid::new_v4().simple());
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(base, _)| base);
    Store::connect(&format!("{base}/{name}"), 2).await
}
