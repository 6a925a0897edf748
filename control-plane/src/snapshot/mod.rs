//! Builds immutable, versioned snapshots from the database and publishes the
//! latest one to every config stream through a `watch` channel.
//!
//! The version is the database's, so every replica builds the same snapshot
//! for the same version. Local writes trigger a rebuild at once; writes made
//! through other replicas are picked up by polling the version.

use crate::error::{Error, Result};
use crate::store::{budget_of, limits_of, string_list, ConfigRows, JwtIssuerRow, Store};
use shared::crypto::Cipher;
use shared::limits::{Budget, RateLimits};
use shared::proto;
use shared::time::now_ms;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// The latest snapshot, encoded once: every config stream sends these bytes.
pub type SharedSnapshot = Option<Arc<proto::ConfigUpdate>>;

/// Asks the publisher to look at the database now, after a local write.
#[derive(Clone, Default)]
pub struct Refresher(Arc<Notify>);

impl Refresher {
    pub fn refresh_now(&self) {
        self.0.notify_one();
    }
}

pub struct Publisher {
    store: Store,
    cipher: Arc<Cipher>,
    poll_interval: Duration,
    refresher: Refresher,
    sender: watch::Sender<SharedSnapshot>,
    global_limits: RateLimits,
}

impl Publisher {
    pub fn new(store: Store, cipher: Arc<Cipher>, poll_interval: Duration) -> Self {
        let (sender, _) = watch::channel(None);
        Self {
            store,
            cipher,
            poll_interval,
            refresher: Refresher::default(),
            sender,
            global_limits: RateLimits::default(),
        }
    }

    /// Limits over every caller of the cluster, shipped in every snapshot.
    pub fn with_global_limits(mut self, limits: RateLimits) -> Self {
        self.global_limits = limits;
        self
    }

    pub fn refresher(&self) -> Refresher {
        self.refresher.clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<SharedSnapshot> {
        self.sender.subscribe()
    }

    /// Builds the first snapshot; the control plane is ready once this succeeded.
    pub async fn publish_current(&self) -> Result<()> {
        let started = std::time::Instant::now();
        let rows = self.store.load_config().await?;
        let cipher = self.cipher.clone();
        let global_limits = self.global_limits.to_proto();
        // Encoding a snapshot of many keys is CPU work: keep it off the reactor.
        let update = tokio::task::spawn_blocking(move || {
            build(rows, &cipher)
                .map(|mut snapshot| {
                    snapshot.global_limits = Some(global_limits);
                    snapshot
                })
                .map(|snapshot| proto::ConfigUpdate {
                    version: snapshot.version,
                    snapshot: prost::Message::encode_to_vec(&snapshot).into(),
                })
        })
        .await
        .map_err(|e| Error::Internal(format!("snapshot build task: {e}")))??;
        let (version, bytes) = (update.version, update.snapshot.len());
        self.sender.send_replace(Some(Arc::new(update)));
        metrics::gauge!("switchboard_config_version").set(version as f64);
        metrics::histogram!("switchboard_snapshot_build_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(
            version,
            bytes,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "published config snapshot"
        );
        Ok(())
    }

    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.refresher.0.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
            let published = self.sender.borrow().as_ref().map_or(0, |s| s.version);
            match self.store.config_version().await {
                Ok(version) if version == published => continue,
                Ok(_) => {}
                Err(error) => {
                    error.log_if_internal();
                    continue;
                }
            }
            if let Err(error) = self.publish_current().await {
                error.log_if_internal();
                tracing::warn!(%error, "snapshot build failed; data planes keep the previous one");
            }
        }
    }
}

/// Turns a consistent read of the configuration into a snapshot. Credentials
/// are decrypted here: they reach data planes only through the config stream.
pub fn build(rows: ConfigRows, cipher: &Cipher) -> Result<proto::Snapshot> {
    let providers = rows
        .providers
        .into_iter()
        .map(|p| {
            let decrypt = |sealed: &Option<String>| match sealed {
                Some(sealed) => cipher.decrypt_string(sealed).map_err(|_| {
                    Error::Internal(format!(
                        "credential of provider {:?} cannot be decrypted: is --secret-key the one it was stored with?",
                        p.name
                    ))
                }),
                None => Ok(String::new()),
            };
            let api_key = decrypt(&p.api_key_encrypted)?;
            let secret_key = decrypt(&p.secret_key_encrypted)?;
            Ok(proto::SnapshotProvider {
                settings: serde_json::from_str(&p.settings).unwrap_or_default(),
                name: p.name,
                kind: p.kind,
                base_url: p.base_url,
                api_key,
                secret_key,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let routes = rows.routes.into_iter().map(proto::Route::from).collect();
    let now = now_ms();
    let keys = rows
        .keys
        .into_iter()
        .flat_map(|k| {
            let hash =
                |hex: &str| shared::keys::KeyHash::from_hex(hex).map(|h| h.as_bytes().to_vec());
            let expires_at_ms = k.expires_at.unwrap_or(0);
            // During a rotation's grace period the previous secret is the same
            // key under another hash, ending with the grace (or the key, if sooner).
            let previous = match (k.previous_key_hash.as_deref(), k.previous_valid_until) {
                (Some(previous), Some(until)) if until > now => {
                    let ends = if expires_at_ms > 0 {
                        until.min(expires_at_ms)
                    } else {
                        until
                    };
                    hash(previous).map(|previous| (previous, ends))
                }
                _ => None,
            };
            let Some(key_hash) = hash(&k.key_hash) else {
                return [None, None];
            };
            // Moved, not copied: keys are most of a large snapshot.
            let current = proto::SnapshotKey {
                models: k.models(),
                limits: Some(limits_of(&k.limits).to_proto()),
                budget: snapshot_budget(k.budget.as_deref()),
                key_hash,
                id: k.id,
                name: k.name,
                user_id: k.user_id.unwrap_or_default(),
                team_id: k.team_id.unwrap_or_default(),
                expires_at_ms,
            };
            let previous = previous.map(|(key_hash, expires_at_ms)| proto::SnapshotKey {
                key_hash,
                expires_at_ms,
                ..current.clone()
            });
            [Some(current), previous]
        })
        .flatten()
        .collect();
    let users = rows
        .users
        .into_iter()
        .map(|u| proto::SnapshotUser {
            models: string_list(&u.models),
            limits: Some(limits_of(&u.limits).to_proto()),
            budget: snapshot_budget(u.budget.as_deref()),
            id: u.id,
            external_id: u.external_id.unwrap_or_default(),
            team_id: u.team_id.unwrap_or_default(),
        })
        .collect();
    let teams = rows
        .teams
        .into_iter()
        .map(|t| proto::SnapshotTeam {
            models: string_list(&t.models),
            limits: Some(limits_of(&t.limits).to_proto()),
            budget: snapshot_budget(t.budget.as_deref()),
            id: t.id,
            name: t.name,
        })
        .collect();
    let jwt_issuers = rows.jwt_issuers.iter().map(snapshot_issuer).collect();
    let prices = rows
        .prices
        .into_iter()
        .map(|p| proto::SnapshotPrice {
            model: p.model,
            provider: p.provider.unwrap_or_default(),
            input_micros: p.input_per_million.0,
            output_micros: p.output_per_million.0,
            cached_input_micros: p.cached_input_per_million.0,
            currency: p.currency.to_string(),
        })
        .collect();
    let spend = rows
        .spend
        .into_iter()
        .map(|s| proto::SpendState {
            holder: s.holder,
            period_start_ms: s.period_start,
            spent_micros: s.spent_micros,
            requests: s.requests,
            tokens: s.tokens,
        })
        .collect();
    Ok(proto::Snapshot {
        version: rows.version,
        providers,
        routes,
        keys,
        created_at_ms: now,
        jwt_issuers,
        users,
        teams,
        prices,
        global_limits: None,
        spend,
    })
}

fn snapshot_budget(json: Option<&str>) -> Option<proto::SnapshotBudget> {
    budget_of(json).as_ref().map(Budget::to_snapshot)
}

fn snapshot_issuer(row: &JwtIssuerRow) -> proto::SnapshotJwtIssuer {
    let claims = row.claims();
    proto::SnapshotJwtIssuer {
        name: row.name.clone(),
        issuer: row.issuer.clone(),
        audiences: row.audiences(),
        algorithms: row.algorithms(),
        jwks: row.jwks.clone().unwrap_or_default(),
        public_keys_pem: row.public_keys_pem(),
        user_claim: claims.user.unwrap_or_default(),
        team_claim: claims.team.unwrap_or_default(),
        models_claim: claims.models.unwrap_or_default(),
        auto_create_users: row.auto_create_users != 0,
        leeway_seconds: u32::try_from(row.leeway_seconds).unwrap_or(0),
    }
}
