//! Counters shared by every data plane, in Redis: the same buckets and totals
//! as the in-process ones, each admission and settlement one Lua script, so a
//! request's checks pass or fail together across data planes. Redis's own
//! clock is used, so data planes' clocks need not agree.

use super::{Check, Outcome, Verdict};
use arc_swap::ArcSwapOption;
use parking_lot::Mutex;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::sentinel::{SentinelClient, SentinelNodeConnectionInfo, SentinelServerType};
use redis::{
    Cmd, ErrorKind, FromRedisValue, Pipeline, RedisFuture, RedisResult, RedisWrite, ToRedisArgs,
    Value,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What `--redis-url` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RedisMode {
    /// One Redis (or a proxy in front of several).
    Standalone,
    /// A Redis Cluster: the URL lists seed nodes, comma-separated.
    Cluster,
    /// Redis Sentinel: the URL lists sentinels, comma-separated; they name
    /// the master of `--redis-sentinel-master`, followed after a failover.
    Sentinel,
}

/// Where the shared counters are.
pub struct RedisOptions<'a> {
    pub url: &'a str,
    pub mode: RedisMode,
    /// The master's name at the sentinels (sentinel mode).
    pub sentinel_master: Option<&'a str>,
    /// The PEM CA of a `rediss://` server's certificate.
    pub ca: Option<&'a Path>,
    pub timeout: Duration,
}

impl RedisMode {
    /// Every key of one script must be in one slot of a cluster: all carry
    /// one hash tag. (Standalone keeps its unchanged names.)
    fn prefix(self) -> &'static str {
        match self {
            RedisMode::Standalone | RedisMode::Sentinel => "switchboard:",
            RedisMode::Cluster => "{switchboard}:",
        }
    }
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(timeout)
        .set_response_timeout(timeout)
        .set_number_of_retries(1)
        .set_max_delay(1_000)
}

/// Per check, ARGV holds: window_ms (0 for a total), limit, cost, floor,
/// expires_at_ms (0 for never). Answers the 1-based index of the first
/// refused check (0: all admitted), then remaining, reset_ms and
/// retry_after_ms per check.
const ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local refused = 0
local out = {}
local kept = {}
for i = 1, #KEYS do
  local b = (i - 1) * 5
  local window, limit, cost = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local floor, expires = tonumber(ARGV[b + 4]), tonumber(ARGV[b + 5])
  if window > 0 then
    local state = redis.call('HMGET', KEYS[i], 'level', 'at')
    local rate = limit / window
    local level = tonumber(state[1]) or 0
    local at = tonumber(state[2]) or now
    level = math.max(0, level - math.max(0, now - at) * rate)
    local after = level + cost
    local allowed = after <= limit
    if allowed then kept[i] = after else kept[i] = level end
    if not allowed and refused == 0 then refused = i end
    out[#out + 1] = math.max(0, math.floor(limit - kept[i]))
    out[#out + 1] = math.ceil(kept[i] / rate)
    if allowed then out[#out + 1] = 0 else out[#out + 1] = math.ceil((after - limit) / rate) end
  else
    local used = math.max(tonumber(redis.call('GET', KEYS[i])) or 0, floor)
    local allowed = used + cost <= limit
    if allowed then kept[i] = used + cost else kept[i] = used end
    if not allowed and refused == 0 then refused = i end
    local left = 0
    if expires > 0 then left = math.max(0, expires - now) end
    out[#out + 1] = math.max(0, limit - kept[i])
    out[#out + 1] = left
    if allowed then out[#out + 1] = 0 else out[#out + 1] = left end
  end
end
if refused == 0 then
  for i = 1, #KEYS do
    local b = (i - 1) * 5
    local window, expires = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 5])
    if window > 0 then
      redis.call('HSET', KEYS[i], 'level', tostring(kept[i]), 'at', now)
      redis.call('PEXPIRE', KEYS[i], window * 2)
    else
      redis.call('SET', KEYS[i], kept[i])
      if expires > 0 then redis.call('PEXPIREAT', KEYS[i], expires + 86400000) end
    end
  end
end
table.insert(out, 1, refused)
return out
";

/// Per counter, ARGV holds: window_ms (0 for a total), limit, then what the
/// settlements gathered for it gave back (<= 0) and added (>= 0), applied in
/// that order: the order of those requests' settlements that leaves the
/// count highest, so that gathering them errs high, never low.
const SETTLE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
for i = 1, #KEYS do
  local b = (i - 1) * 4
  local window, limit = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2])
  local back, added = tonumber(ARGV[b + 3]), tonumber(ARGV[b + 4])
  if window > 0 then
    local state = redis.call('HMGET', KEYS[i], 'level', 'at')
    if state[1] then
      local level = math.max(0, tonumber(state[1]) - math.max(0, now - tonumber(state[2])) * limit / window)
      redis.call('HSET', KEYS[i], 'level', tostring(math.max(0, level + back) + added), 'at', now)
    end
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    local used = math.max(0, (tonumber(redis.call('GET', KEYS[i])) or 0) + back) + added
    redis.call('SET', KEYS[i], used, 'KEEPTTL')
  end
end
return 1
";

/// Settlements are gathered this long and sent together: one script call
/// per data plane every 10 ms at most, where a call per request was a
/// quarter of Redis's CPU under load (docs/benchmarks.md, scenario 11).
/// A reservation stands that much longer, which errs high.
const SETTLE_EVERY: Duration = Duration::from_millis(10);
/// Most counters one settlement call carries.
const COUNTERS_PER_SETTLE: usize = 256;

/// What the requests settled since the last call did to one counter.
#[derive(Default)]
struct Unsettled {
    window_ms: i64,
    limit: i64,
    given_back: i64,
    added: i64,
}

/// One call of a script, its counters' names and then their arguments
/// written straight into one command: redis-rs's `ScriptInvocation`
/// allocates each key and argument apart and then copies them all into the
/// command, some twenty allocations an admission (docs/benchmarks.md,
/// scenario 11).
struct ScriptCall<'a> {
    script: &'a redis::Script,
    command: Cmd,
}

/// A counter's name in Redis: the mode's prefix and the counter's key, one
/// argument written in two pieces.
struct CounterName<'a>(&'static str, &'a str);

impl ToRedisArgs for CounterName<'_> {
    fn write_redis_args<W: ?Sized + RedisWrite>(&self, out: &mut W) {
        let mut arg = out.writer_for_next_arg();
        // Into the command's own buffer: writing cannot fail.
        let _ = arg
            .write_all(self.0.as_bytes())
            .and_then(|()| arg.write_all(self.1.as_bytes()));
    }
}

impl<'a> ScriptCall<'a> {
    /// A call over these counters, each given as its key and its arguments:
    /// the script takes all the keys first, then all the arguments.
    fn new<'k, const N: usize>(
        script: &'a redis::Script,
        prefix: &'static str,
        counters: impl ExactSizeIterator<Item = (&'k str, [i64; N])> + Clone,
    ) -> Self {
        let count = counters.len();
        // Room for every argument at once: the buffer never grows.
        let mut command = Cmd::with_capacity(3 + count * (1 + N), 64 + count * (64 + N * 20));
        command.arg("EVALSHA").arg(script.get_hash()).arg(count);
        for (key, _) in counters.clone() {
            command.arg(CounterName(prefix, key));
        }
        for (_, args) in counters {
            command.arg(&args[..]);
        }
        ScriptCall { script, command }
    }

    /// Runs it; a Redis that does not have the script yet (new, restarted,
    /// flushed) is given it, and the call made again.
    async fn run<T: FromRedisValue>(&self, connection: &mut Connection) -> RedisResult<T> {
        match self.command.query_async(connection).await {
            Err(error) if error.kind() == ErrorKind::NoScriptError => {
                self.script.load_async(connection).await?;
                self.command.query_async(connection).await
            }
            answer => answer,
        }
    }
}

pub struct RedisCounters {
    /// Empty until the first connection; it reconnects by itself after.
    connected: ArcSwapOption<Connected>,
    /// Names this instance's connections in each thread's `OWN`.
    id: usize,
    prefix: &'static str,
    admit: redis::Script,
    settle: redis::Script,
    /// Per counter (its name without the prefix), settled but not yet sent.
    unsettled: Mutex<HashMap<String, Unsettled>>,
    settle_due: Notify,
}

/// A connection to one Redis or to a cluster: both reconnect by themselves.
/// The response cache's Redis backend shares it.
#[derive(Clone)]
pub enum Connection {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Standalone(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Standalone(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

/// How to open a connection to the Redis in use.
#[derive(Clone)]
enum Dial {
    Standalone(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient),
}

impl Dial {
    /// A connection driven by the calling thread's runtime; it reconnects by itself.
    async fn open(&self) -> RedisResult<Connection> {
        Ok(match self {
            Dial::Standalone(client, config) => Connection::Standalone(
                ConnectionManager::new_with_config(client.clone(), config.clone()).await?,
            ),
            Dial::Cluster(client) => Connection::Cluster(client.get_async_connection().await?),
        })
    }
}

/// The Redis connected to: how to reach it, and the connection opened to
/// check it, which a thread uses until it has its own.
struct Connected {
    dial: Dial,
    first: Connection,
}

/// A thread's own connection, per `RedisCounters` (by id).
enum Own {
    Opening,
    Open(Connection),
    /// Opening failed; tried again after this.
    Failed(Instant),
}

thread_local! {
    /// Each thread's own connections, and the `Connected` they were opened from.
    static OWN: RefCell<HashMap<usize, (Arc<Connected>, Own)>> = RefCell::default();
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(0);
const OWN_RETRY: Duration = Duration::from_secs(1);

/// How to (re)connect.
enum Connector {
    /// One Redis, or a cluster: always the same.
    Fixed(Dial),
    /// The master the sentinels name.
    Sentinel(tokio::sync::Mutex<SentinelClient>, ConnectionManagerConfig),
}

impl Connector {
    /// How to reach the Redis to use now, and (with sentinels) the master's address.
    async fn dial(&self) -> RedisResult<(Dial, Option<String>)> {
        Ok(match self {
            Connector::Fixed(dial) => (dial.clone(), None),
            Connector::Sentinel(sentinels, config) => {
                let master = sentinels.lock().await.async_get_client().await?;
                let address = master.get_connection_info().addr.to_string();
                (Dial::Standalone(master, config.clone()), Some(address))
            }
        })
    }

    /// The master the sentinels name now (sentinel mode only).
    async fn master(&self) -> Option<RedisResult<String>> {
        let Connector::Sentinel(sentinels, _) = self else {
            return None;
        };
        let master = sentinels.lock().await.async_get_client().await;
        Some(master.map(|m| m.get_connection_info().addr.to_string()))
    }
}

/// The Redis to use now, checked by opening a first connection to it.
async fn connect(connector: &Connector) -> RedisResult<(Connected, Option<String>)> {
    let (dial, address) = connector.dial().await?;
    let first = dial.open().await?;
    Ok((Connected { dial, first }, address))
}

#[derive(Debug, thiserror::Error)]
pub enum RedisUnavailable {
    #[error("not connected yet")]
    NotConnected,
    #[error("{0}")]
    Redis(#[from] redis::RedisError),
    #[error("unexpected answer from the admission script")]
    BadAnswer,
}

impl RedisCounters {
    /// Checks the URL now; connects in the background (and keeps trying), so
    /// a data plane starts and serves, by its failure modes, while Redis is down.
    /// Connects in the background (limits use their failure modes until
    /// then). `ca`: the PEM CA that signs a `rediss://` server's certificate,
    /// instead of the system's roots.
    pub fn start(options: RedisOptions, shutdown: CancellationToken) -> Result<Arc<Self>, String> {
        let RedisOptions {
            url,
            mode,
            sentinel_master,
            ca,
            timeout,
        } = options;
        if url.contains("rediss://") {
            shared::tls::install_crypto_provider();
        }
        let certificates = match ca {
            None => None,
            Some(_) if !url.contains("rediss://") => {
                return Err("redis_ca: only with a rediss:// redis_url".into())
            }
            Some(path) => Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(
                    std::fs::read(path)
                        .map_err(|e| format!("redis_ca: cannot read {}: {e}", path.display()))?,
                ),
            }),
        };
        let unusable = |e: redis::RedisError| format!("redis_url: not a usable Redis URL ({e})");
        let connector = match mode {
            RedisMode::Standalone => {
                let client = match certificates {
                    None => redis::Client::open(url),
                    Some(certificates) => redis::Client::build_with_tls(url, certificates),
                }
                .map_err(unusable)?;
                Connector::Fixed(Dial::Standalone(client, manager_config(timeout)))
            }
            RedisMode::Cluster => {
                let nodes: Vec<&str> = url.split(',').map(str::trim).collect();
                let mut builder = ClusterClient::builder(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    .retries(1);
                if let Some(certificates) = certificates {
                    builder = builder.certs(certificates);
                }
                Connector::Fixed(Dial::Cluster(builder.build().map_err(unusable)?))
            }
            RedisMode::Sentinel => {
                let master = sentinel_master.ok_or(
                    "redis_sentinel_master: required with redis_mode sentinel (the master's name)",
                )?;
                let sentinels: Vec<&str> = url.split(',').map(str::trim).collect();
                // The sentinels' user, password, database and TLS are the master's too.
                let first = redis::IntoConnectionInfo::into_connection_info(sentinels[0])
                    .map_err(unusable)?;
                let node = SentinelNodeConnectionInfo {
                    tls_mode: url.contains("rediss://").then_some(redis::TlsMode::Secure),
                    redis_connection_info: Some(first.redis.clone()),
                };
                let client = SentinelClient::build(
                    sentinels,
                    master.to_owned(),
                    Some(node),
                    SentinelServerType::Master,
                )
                .map_err(unusable)?;
                Connector::Sentinel(tokio::sync::Mutex::new(client), manager_config(timeout))
            }
        };
        let counters = Arc::new(RedisCounters {
            connected: ArcSwapOption::empty(),
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            prefix: mode.prefix(),
            admit: redis::Script::new(ADMIT),
            settle: redis::Script::new(SETTLE),
            unsettled: Mutex::default(),
            settle_due: Notify::new(),
        });
        tokio::spawn(counters.clone().keep_connected(connector, shutdown));
        // For the process's life: requests still settle while the server drains.
        tokio::spawn(counters.clone().send_settlements());
        Ok(counters)
    }

    /// Connects until connected; with sentinels, asks them every second
    /// which master to use and moves to a new one after a failover.
    async fn keep_connected(self: Arc<Self>, connector: Connector, shutdown: CancellationToken) {
        let mut master: Option<Option<String>> = None;
        loop {
            let stale = match (&master, connector.master().await) {
                (None, _) => true,
                (Some(_), None) => return,
                (Some(current), Some(Ok(named))) => current.as_deref() != Some(named.as_str()),
                (Some(_), Some(Err(error))) => {
                    tracing::warn!(%error, "Redis sentinels unreachable; keeping the master known");
                    false
                }
            };
            if stale {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    connected = connect(&connector) => match connected {
                        Ok((connected, address)) => {
                            tracing::info!(master = ?address, "connected to Redis for shared limits");
                            let connected = Arc::new(connected);
                            // The first connection is this (background) thread's own.
                            let own = Own::Open(connected.first.clone());
                            OWN.with_borrow_mut(|owned| owned.insert(self.id, (connected.clone(), own)));
                            self.connected.store(Some(connected));
                            master = Some(address);
                        }
                        Err(error) => {
                            tracing::warn!(%error, "Redis unreachable; limits use their failure modes");
                        }
                    }
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    /// The calling thread's own connection, driven by its own runtime: a
    /// serving thread's checks and cache lookups then never leave it (through
    /// one connection, driven by the background thread, each call woke two
    /// threads). Until it is open, the first connection.
    pub fn connection(&self) -> Result<Connection, RedisUnavailable> {
        let connected = self
            .connected
            .load_full()
            .ok_or(RedisUnavailable::NotConnected)?;
        let mut open_own = false;
        let own = OWN.with_borrow_mut(|owned| {
            if let Some((from, state)) = owned.get(&self.id) {
                if Arc::ptr_eq(from, &connected) {
                    match state {
                        Own::Open(connection) => return Some(connection.clone()),
                        Own::Opening => return None,
                        Own::Failed(at) if at.elapsed() < OWN_RETRY => return None,
                        Own::Failed(_) => {}
                    }
                }
            }
            owned.insert(self.id, (connected.clone(), Own::Opening));
            open_own = true;
            None
        });
        if let Some(own) = own {
            return Ok(own);
        }
        if open_own {
            self.open_own(connected.clone());
        }
        Ok(connected.first.clone())
    }

    /// Opens the calling thread's own connection, on its runtime (each
    /// serving thread runs a runtime of its own, so the task stays on it).
    fn open_own(&self, connected: Arc<Connected>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let id = self.id;
        runtime.spawn(async move {
            let own = match connected.dial.open().await {
                Ok(connection) => Own::Open(connection),
                Err(error) => {
                    tracing::warn!(%error, "could not open this thread's Redis connection");
                    Own::Failed(Instant::now())
                }
            };
            OWN.with_borrow_mut(|owned| owned.insert(id, (connected, own)));
        });
    }

    pub async fn admit(&self, checks: &[Check]) -> Result<Verdict, RedisUnavailable> {
        let mut connection = self.connection()?;
        let counters = checks.iter().map(|check| {
            let args = [
                check.window_ms().unwrap_or(0),
                check.limit,
                check.cost,
                check.floor,
                check.expires_ms.unwrap_or(0),
            ];
            (check.key.as_str(), args)
        });
        let call = ScriptCall::new(&self.admit, self.prefix, counters);
        let answer: Vec<i64> = call.run(&mut connection).await?;
        let (refused, rest) = answer.split_first().ok_or(RedisUnavailable::BadAnswer)?;
        if rest.len() != checks.len() * 3 {
            return Err(RedisUnavailable::BadAnswer);
        }
        Ok(Verdict {
            refused: usize::try_from(*refused)
                .ok()
                .and_then(|i| i.checked_sub(1)),
            outcomes: rest
                .chunks(3)
                .map(|c| Outcome {
                    remaining: c[0],
                    reset_ms: c[1],
                    retry_after_ms: c[2],
                })
                .collect(),
        })
    }

    /// Adds a request's settlement to those the next call sends.
    pub fn settle(&self, adjustments: &[(Check, i64)]) {
        let mut unsettled = self.unsettled.lock();
        for (check, delta) in adjustments {
            let counter = match unsettled.get_mut(&check.key) {
                Some(counter) => counter,
                None => unsettled.entry(check.key.clone()).or_default(),
            };
            counter.window_ms = check.window_ms().unwrap_or(0);
            counter.limit = check.limit;
            if *delta < 0 {
                counter.given_back += delta;
            } else {
                counter.added += delta;
            }
        }
        drop(unsettled);
        self.settle_due.notify_one();
    }

    async fn send_settlements(self: Arc<Self>) {
        loop {
            self.settle_due.notified().await;
            tokio::time::sleep(SETTLE_EVERY).await;
            self.flush_settlements().await;
        }
    }

    /// Sends every settlement gathered so far. One that cannot be sent
    /// leaves its reservations standing (the count errs high, never low).
    pub async fn flush_settlements(&self) {
        let unsettled: Vec<(String, Unsettled)> = self.unsettled.lock().drain().collect();
        for counters in unsettled.chunks(COUNTERS_PER_SETTLE) {
            if let Err(error) = self.send_settlement(counters).await {
                metrics::counter!("switchboard_limits_settle_failures_total")
                    .increment(counters.len() as u64);
                tracing::warn!(%error, counters = counters.len(), "could not settle reservations in Redis");
            }
        }
    }

    async fn send_settlement(
        &self,
        counters: &[(String, Unsettled)],
    ) -> Result<(), RedisUnavailable> {
        let mut connection = self.connection()?;
        let counters = counters.iter().map(|(key, c)| {
            let args = [c.window_ms, c.limit, c.given_back, c.added];
            (key.as_str(), args)
        });
        let call = ScriptCall::new(&self.settle, self.prefix, counters);
        let _: i64 = call.run(&mut connection).await?;
        Ok(())
    }
}
