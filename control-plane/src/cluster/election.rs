//! Leader election: exactly one replica runs the singleton jobs (spend
//! counting, budget alerts, JWKS refresh, change-log retention).
//!
//! - With etcd: a lease kept alive by this replica and a campaign on it
//!   (etcd's election API); a dead leader's lease expires after its TTL and
//!   the next campaigner wins.
//! - PostgreSQL without etcd: a session-level advisory lock on a connection
//!   of its own; a dead leader's session ends and PostgreSQL frees the lock.
//! - SQLite: one replica (the database file is locked), which leads.
//!
//! Whoever wins then takes a new fencing token in the database; every job's
//! write checks it, so a leader that was paused past its lease and replaced
//! cannot write when it wakes.

use crate::store::{Fence, Store};
use anyhow::anyhow;
use etcd_client::{Client, ConnectOptions, ResignOptions, TlsOptions};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The etcd election and the PostgreSQL advisory lock all replicas contend for.
const ELECTION: &str = "switchboard/control-plane/leader";
const ADVISORY_LOCK: i64 = 0x5357_4c45_4144; // "SWLEAD"
const ETCD_CONNECT: Duration = Duration::from_secs(3);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Follower,
    Leader(Fence),
}

/// This replica's part in the election, as jobs see it.
#[derive(Clone)]
pub struct Leadership {
    state: watch::Receiver<State>,
    /// Until when the lease is known to hold: a leader paused past it (its
    /// keep-alive could not run) stops at once when it wakes.
    lease_until: Arc<parking_lot::Mutex<Instant>>,
}

impl Leadership {
    /// The fence to write under while this replica leads on a live lease.
    pub fn fence(&self) -> Option<Fence> {
        match *self.state.borrow() {
            State::Leader(fence) if Instant::now() < *self.lease_until.lock() => Some(fence),
            _ => None,
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.state.clone()
    }
}

pub struct EtcdSettings {
    pub endpoints: Vec<String>,
    pub user: Option<(String, String)>,
    pub tls: Option<TlsOptions>,
}

pub enum Method {
    /// SQLite: the only replica.
    Solo,
    PostgresLock {
        url: String,
    },
    Etcd(EtcdSettings),
}

struct Campaign {
    store: Store,
    replica: String,
    lease: Duration,
    state: watch::Sender<State>,
    lease_until: Arc<parking_lot::Mutex<Instant>>,
    shutdown: CancellationToken,
}

/// Starts campaigning; the returned future runs the election until shutdown.
pub fn start(
    method: Method,
    store: Store,
    replica: String,
    lease: Duration,
    shutdown: CancellationToken,
) -> (Leadership, impl std::future::Future<Output = ()>) {
    let (state, receiver) = watch::channel(State::Follower);
    let lease_until = Arc::new(parking_lot::Mutex::new(Instant::now()));
    let leadership = Leadership {
        state: receiver,
        lease_until: lease_until.clone(),
    };
    let campaign = Campaign {
        store,
        replica,
        lease,
        state,
        lease_until,
        shutdown,
    };
    (leadership, campaign.run(method))
}

impl Campaign {
    async fn run(self, method: Method) {
        let mut delay = Duration::from_millis(200);
        loop {
            let outcome = match &method {
                Method::Solo => self.solo().await,
                Method::PostgresLock { url } => self.postgres(url).await,
                Method::Etcd(settings) => self.etcd(settings).await,
            };
            self.state.send_replace(State::Follower);
            if self.shutdown.is_cancelled() {
                return;
            }
            match outcome {
                Ok(()) => delay = Duration::from_millis(200),
                Err(error) => {
                    tracing::warn!(%error, "leader election: not leading; trying again");
                    delay = (delay * 2).min(self.lease);
                }
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Won: takes a newer fencing token than any leader before.
    async fn lead(&self, until: Instant) -> anyhow::Result<Fence> {
        let fence = self.store.take_leadership(&self.replica).await?;
        *self.lease_until.lock() = until;
        self.state.send_replace(State::Leader(fence));
        tracing::info!(replica = %self.replica, token = fence.token, "this control plane leads the singleton jobs");
        Ok(fence)
    }

    async fn step_down(&self, fence: Fence) {
        self.state.send_replace(State::Follower);
        if let Err(error) = self.store.release_leadership(fence).await {
            error.log_if_internal();
        }
    }

    async fn solo(&self) -> anyhow::Result<()> {
        let fence = self.lead(far_future()).await?;
        self.shutdown.cancelled().await;
        self.step_down(fence).await;
        Ok(())
    }

    async fn postgres(&self, url: &str) -> anyhow::Result<()> {
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(url).await?;
        let every = self.lease / 3;
        loop {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                .bind(ADVISORY_LOCK)
                .fetch_one(&mut conn)
                .await?;
            if locked {
                break;
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => {}
            }
        }
        let fence = self.lead(Instant::now() + self.lease).await?;
        // The lock lives as long as this session: check it is alive.
        let lost = loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break None,
                _ = tokio::time::sleep(every) => {}
            }
            let alive =
                tokio::time::timeout(every, sqlx::query("SELECT 1").execute(&mut conn)).await;
            match alive {
                Ok(Ok(_)) => *self.lease_until.lock() = Instant::now() + self.lease,
                Ok(Err(error)) => break Some(error.to_string()),
                Err(_) => break Some("the database did not answer".to_owned()),
            }
        };
        self.step_down(fence).await;
        match lost {
            None => {
                let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(ADVISORY_LOCK)
                    .execute(&mut conn)
                    .await;
                Ok(())
            }
            Some(reason) => anyhow::bail!("lost the leader lock's session: {reason}"),
        }
    }

    async fn etcd(&self, settings: &EtcdSettings) -> anyhow::Result<()> {
        // No per-request timeout on the client: a follower's campaign waits
        // as long as the leader lives (a timeout would end it every lease and
        // queue it anew). Each other call is bounded on its own, and an etcd
        // that is gone shows as renewals no longer answered.
        let mut options = ConnectOptions::new().with_connect_timeout(ETCD_CONNECT);
        if let Some((name, password)) = &settings.user {
            options = options.with_user(name.clone(), password.clone());
        }
        if let Some(tls) = &settings.tls {
            options = options.with_tls(tls.clone());
        }
        // Connecting includes authenticating, where a user is set.
        let connect = Client::connect(&settings.endpoints, Some(options));
        let mut client = bounded(ETCD_CONNECT + self.lease, connect).await?;
        let ttl = i64::try_from(self.lease.as_secs().max(1)).unwrap_or(3);
        let lease = bounded(self.lease, client.lease_grant(ttl, None))
            .await?
            .id();
        let outcome = self.campaign_on(&mut client, lease).await;
        // Also after a failure: a lease left to expire would keep its
        // campaign key, and this replica's next campaign would queue behind it.
        let _ = bounded(self.lease, client.lease_revoke(lease)).await;
        outcome
    }

    /// Campaigns on `lease`, then leads until shutdown or until the lease is lost.
    async fn campaign_on(&self, client: &mut Client, lease: i64) -> anyhow::Result<()> {
        let (keeper, answers) = bounded(self.lease, client.lease_keep_alive(lease)).await?;
        let every = self.lease / 3;
        let mut renewal = Renewal {
            keeper,
            answers,
            lease: self.lease,
            timeout: every,
        };
        let mut until = Instant::now() + self.lease;
        // Campaigning can wait long for a live leader: the lease is kept
        // alive meanwhile, or it would expire before it could win.
        let mut campaigner = client.clone();
        let campaign = campaigner.campaign(ELECTION, self.replica.as_bytes(), lease);
        tokio::pin!(campaign);
        let leader_key = loop {
            tokio::select! {
                won = &mut campaign => break won?.take_leader(),
                _ = self.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(every) => until = renewal.renew(until).await?,
            }
        };
        let fence = self.lead(until).await?;
        let lost = loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break None,
                _ = tokio::time::sleep(every) => {}
            }
            let holds_until = *self.lease_until.lock();
            if Instant::now() >= holds_until {
                break Some("the lease ran out before it was renewed".to_owned());
            }
            match renewal.renew(holds_until).await {
                Ok(until) => *self.lease_until.lock() = until,
                Err(error) => break Some(error.to_string()),
            }
        };
        self.step_down(fence).await;
        if lost.is_none() {
            // Resigning hands over at once instead of after the lease's TTL.
            if let Some(key) = leader_key {
                let resign = client.resign(Some(ResignOptions::new().with_leader(key)));
                let _ = bounded(self.lease, resign).await;
            }
        }
        match lost {
            None => Ok(()),
            Some(reason) => anyhow::bail!("lost the etcd lease: {reason}"),
        }
    }
}

/// An etcd call that gives up after `limit`.
async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limit, call).await {
        Ok(answer) => Ok(answer?),
        Err(_) => anyhow::bail!("etcd did not answer within {limit:?}"),
    }
}

/// Keeps an etcd lease alive, one renewal at a time.
struct Renewal {
    keeper: etcd_client::LeaseKeeper,
    answers: etcd_client::LeaseKeepAliveStream,
    lease: Duration,
    timeout: Duration,
}

impl Renewal {
    /// Renews the lease held until `holds_until`; returns until when it holds
    /// now. A renewal not answered in time (etcd busy, a slow machine) is
    /// tried again at the next tick while the lease still holds; a lease etcd
    /// says has expired ends at once.
    async fn renew(&mut self, holds_until: Instant) -> anyhow::Result<Instant> {
        let sent = Instant::now();
        match self.keep_alive().await {
            // etcd counts the TTL from when it took the keep-alive, after `sent`.
            Ok(()) => Ok(sent + self.lease),
            Err(NotRenewed::Expired) => anyhow::bail!("the lease expired"),
            Err(NotRenewed::Failed(error)) if Instant::now() + self.timeout < holds_until => {
                tracing::warn!(%error, "etcd lease renewal failed; trying again while the lease holds");
                Ok(holds_until)
            }
            Err(NotRenewed::Failed(error)) => Err(error),
        }
    }

    async fn keep_alive(&mut self) -> Result<(), NotRenewed> {
        self.keeper
            .keep_alive()
            .await
            .map_err(|error| NotRenewed::Failed(error.into()))?;
        match tokio::time::timeout(self.timeout, self.answers.message()).await {
            Ok(Ok(Some(answer))) if answer.ttl() > 0 => Ok(()),
            Ok(Ok(Some(_))) => Err(NotRenewed::Expired),
            Ok(Ok(None)) => Err(NotRenewed::Failed(anyhow!(
                "etcd closed the keep-alive stream"
            ))),
            Ok(Err(error)) => Err(NotRenewed::Failed(error.into())),
            Err(_) => Err(NotRenewed::Failed(anyhow!(
                "etcd did not answer the keep-alive"
            ))),
        }
    }
}

/// Why a renewal did not renew.
enum NotRenewed {
    Expired,
    Failed(anyhow::Error),
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}
