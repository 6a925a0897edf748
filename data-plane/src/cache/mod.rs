//! The response cache, between limits and the provider: an exact-match
//! cache of chat, completion and embedding answers, per route (its `cache`
//! object) and per tenant. In process (moka, bounded by bytes) or in Redis
//! (shared by every data plane, compressed, expiring by Redis's TTL).
//!
//! A miss hands the request's usage draft a `Fill`, which stores the answer
//! once it is complete and successful; a stream's answer is put back
//! together from its events. A hit is answered here, as JSON or replayed as
//! a stream, and recorded as a cache hit. Cache failures never fail a
//! request: a Redis error is a miss.

mod key;

pub use key::{key, CacheKey, KeyParts};

use crate::chat::assemble;
use crate::limits::redis::RedisCounters;
use axum::http::{HeaderMap, HeaderValue};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use shared::cache::RouteCache;
use shared::usage::{Endpoint, TokenUsage};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// `SWITCHBOARD_CACHE_BACKEND`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CacheBackend {
    /// In this data plane's memory.
    #[default]
    Memory,
    /// In the Redis of `--redis-url`, shared by every data plane.
    Redis,
}

/// The answer header that says how the cache took part.
pub const CACHE_HEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-switchboard-cache");

/// A stored answer: its JSON as the client got it unstreamed, and what
/// the provider that gave it counted.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    pub body: String,
    pub usage: TokenUsage,
    pub provider: String,
    pub upstream_model: String,
    /// How long it is kept (the in-process cache expires entries by it).
    ttl_ms: u64,
}

enum Store {
    Memory(moka::sync::Cache<CacheKey, Arc<Entry>>),
    Redis(Arc<RedisCounters>),
}

pub struct ResponseCache {
    store: Store,
}

/// Entries live for their route's TTL.
struct PerEntryTtl;

impl moka::Expiry<CacheKey, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _: &CacheKey,
        entry: &Arc<Entry>,
        _: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(entry.ttl_ms))
    }
}

const REDIS_PREFIX: &str = "switchboard:cache:";

impl ResponseCache {
    pub fn in_memory(max_bytes: u64) -> Self {
        let cache = moka::sync::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_, entry: &Arc<Entry>| {
                u32::try_from(entry.body.len() + 256).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        ResponseCache {
            store: Store::Memory(cache),
        }
    }

    pub fn in_redis(redis: Arc<RedisCounters>) -> Self {
        ResponseCache {
            store: Store::Redis(redis),
        }
    }

    async fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        match &self.store {
            Store::Memory(cache) => cache.get(key),
            Store::Redis(redis) => {
                let mut connection = redis.connection().ok()?;
                let stored: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(format!("{REDIS_PREFIX}{}", key.hex()))
                    .query_async(&mut connection)
                    .await
                    .inspect_err(|_| failed("get"))
                    .ok()?;
                let json = lz4_flex::decompress_size_prepended(&stored?).ok()?;
                serde_json::from_slice(&json).map(Arc::new).ok()
            }
        }
    }

    fn put(self: &Arc<Self>, key: CacheKey, entry: Entry) {
        metrics::counter!("switchboard_cache_stored_bytes_total")
            .increment(entry.body.len() as u64);
        match &self.store {
            Store::Memory(cache) => {
                cache.insert(key, Arc::new(entry));
                metrics::gauge!("switchboard_cache_memory_bytes").set(cache.weighted_size() as f64);
            }
            Store::Redis(redis) => {
                let Ok(mut connection) = redis.connection() else {
                    return failed("set");
                };
                let Ok(json) = serde_json::to_vec(&entry) else {
                    return;
                };
                let value = lz4_flex::compress_prepend_size(&json);
                let ttl = entry.ttl_ms.max(1);
                tokio::spawn(async move {
                    let set: redis::RedisResult<()> = redis::cmd("SET")
                        .arg(format!("{REDIS_PREFIX}{}", key.hex()))
                        .arg(value)
                        .arg("PX")
                        .arg(ttl)
                        .query_async(&mut connection)
                        .await;
                    if set.is_err() {
                        failed("set");
                    }
                });
            }
        }
    }
}

fn failed(operation: &'static str) {
    metrics::counter!("switchboard_cache_errors_total", "operation" => operation).increment(1);
}

/// How the cache takes part in one request.
pub enum Verdict {
    Hit(Arc<Entry>),
    /// Not served from the cache; the answer is stored (after a lookup, or
    /// without one for `Cache-Control: no-cache`).
    Miss(Fill),
    /// Neither read nor stored: `no-store`, or an answer the route does not cache.
    Bypass,
}

impl Verdict {
    fn as_str(&self) -> &'static str {
        match self {
            Verdict::Hit(_) => "hit",
            Verdict::Miss(_) => "miss",
            Verdict::Bypass => "bypass",
        }
    }

    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_static(self.as_str())
    }

    fn counted(self) -> Self {
        metrics::counter!("switchboard_cache_requests_total", "result" => self.as_str())
            .increment(1);
        self
    }
}

/// What the cache needs of a request.
pub struct Lookup<'a> {
    pub key: KeyParts<'a>,
    pub stream: bool,
    pub headers: &'a HeaderMap,
}

/// Whether `endpoint`'s answers can be cached at all (Anthropic's and the
/// Responses API's are not).
pub fn serves(endpoint: Endpoint) -> bool {
    matches!(
        endpoint,
        Endpoint::ChatCompletions | Endpoint::Completions | Endpoint::Embeddings
    )
}

impl ResponseCache {
    /// Looks the request up, as its route and the client's `Cache-Control` say.
    pub async fn consult(self: &Arc<Self>, route: &RouteCache, lookup: Lookup<'_>) -> Verdict {
        let directives = cache_control(lookup.headers);
        let endpoint = lookup.key.endpoint;
        // Legacy completions stream in their own format, and a stream of
        // several choices interleaves them: neither is replayed.
        let choices = lookup
            .key
            .request
            .get("n")
            .and_then(serde_json::Value::as_u64);
        let replayable = !(lookup.stream
            && (endpoint == Endpoint::Completions || choices.is_some_and(|n| n > 1)));
        if directives.no_store || !replayable || !deterministic(route, lookup.key.request, endpoint)
        {
            return Verdict::Bypass.counted();
        }
        let key = key(&lookup.key);
        if !directives.no_cache {
            if let Some(entry) = self.get(&key).await {
                return Verdict::Hit(entry).counted();
            }
        }
        Verdict::Miss(Fill {
            cache: self.clone(),
            key,
            ttl: Duration::from_secs(u64::from(route.ttl_seconds)),
            max_bytes: usize::try_from(route.max_entry_bytes).unwrap_or(usize::MAX),
            events: lookup.stream.then(BytesMut::new),
        })
        .counted()
    }
}

#[derive(Default)]
struct Directives {
    no_cache: bool,
    no_store: bool,
}

fn cache_control(headers: &HeaderMap) -> Directives {
    let mut directives = Directives::default();
    let values = headers.get_all(axum::http::header::CACHE_CONTROL);
    for directive in values
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        match directive.trim().to_ascii_lowercase().as_str() {
            "no-cache" => directives.no_cache = true,
            "no-store" => directives.no_store = true,
            _ => {}
        }
    }
    directives
}

/// Sampled answers (any `temperature` but 0; providers read an absent one
/// as 1) differ from one call to the next: cached only when the route says.
fn deterministic(route: &RouteCache, request: &serde_json::Value, endpoint: Endpoint) -> bool {
    route.nondeterministic
        || endpoint == Endpoint::Embeddings
        || request
            .get("temperature")
            .and_then(serde_json::Value::as_f64)
            == Some(0.0)
}

/// A miss's answer on its way into the cache, carried by the usage draft.
pub struct Fill {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    ttl: Duration,
    max_bytes: usize,
    /// A stream's events as the client got them (`None` once too large, or
    /// for an answer that is not streamed).
    events: Option<BytesMut>,
}

impl Fill {
    /// More of a streamed answer.
    pub fn record(&mut self, bytes: &[u8]) {
        if let Some(events) = &mut self.events {
            if events.len() + bytes.len() > self.max_bytes {
                self.events = None;
                self.max_bytes = 0;
            } else {
                events.extend_from_slice(bytes);
            }
        }
    }

    /// Stores a successful answer: `body`, or the stream recorded.
    pub fn store(mut self, body: Option<&[u8]>, usage: TokenUsage, provider: &str, model: &str) {
        let body = match (body, self.events.take()) {
            (Some(body), _) => String::from_utf8(body.to_vec()).ok(),
            (None, Some(events)) => assemble::from_events(&events).and_then(|mut answer| {
                answer.usage = Some(usage);
                serde_json::to_string(&answer).ok()
            }),
            (None, None) => None,
        };
        let Some(body) = body.filter(|b| b.len() <= self.max_bytes) else {
            return;
        };
        let entry = Entry {
            body,
            usage,
            provider: provider.to_owned(),
            upstream_model: model.to_owned(),
            ttl_ms: u64::try_from(self.ttl.as_millis()).unwrap_or(u64::MAX),
        };
        self.cache.put(self.key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Caller;
    use serde_json::json;
    use shared::cache::{CachePurges, CacheScope};

    fn route(nondeterministic: bool) -> RouteCache {
        RouteCache {
            ttl_seconds: 60,
            scope: CacheScope::Team,
            max_entry_bytes: 1 << 20,
            nondeterministic,
            bill_hits: false,
        }
    }

    async fn consult(
        cache: &Arc<ResponseCache>,
        headers: &HeaderMap,
        request: &serde_json::Value,
        stream: bool,
    ) -> Verdict {
        let caller = Caller::default();
        let purges = CachePurges::default();
        let key = KeyParts {
            route: "m",
            endpoint: Endpoint::ChatCompletions,
            scope: CacheScope::Team,
            caller: &caller,
            purges: &purges,
            request,
        };
        let lookup = Lookup {
            key,
            stream,
            headers,
        };
        cache.consult(&route(false), lookup).await
    }

    #[tokio::test]
    async fn a_miss_fills_and_the_next_lookup_hits_unless_told_not_to() {
        let cache = Arc::new(ResponseCache::in_memory(1 << 20));
        let request = json!({"model": "m", "messages": [], "temperature": 0});
        let mut headers = HeaderMap::new();
        let Verdict::Miss(fill) = consult(&cache, &headers, &request, false).await else {
            panic!("a first lookup misses");
        };
        let answer = json!({"id": "c", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi"}, "finish_reason": "stop"}]});
        fill.store(
            Some(answer.to_string().as_bytes()),
            TokenUsage::new(1, 2),
            "p",
            "u",
        );
        let Verdict::Hit(entry) = consult(&cache, &headers, &request, true).await else {
            panic!("the same request, streamed, hits");
        };
        assert_eq!(
            (entry.body.as_str(), entry.usage),
            (answer.to_string().as_str(), TokenUsage::new(1, 2))
        );

        let sampled = json!({"model": "m", "messages": []});
        assert!(matches!(
            consult(&cache, &headers, &sampled, false).await,
            Verdict::Bypass
        ));
        headers.insert("cache-control", HeaderValue::from_static("no-cache"));
        assert!(matches!(
            consult(&cache, &headers, &request, false).await,
            Verdict::Miss(_)
        ));
        headers.insert(
            "cache-control",
            HeaderValue::from_static("max-age=0, no-store"),
        );
        assert!(matches!(
            consult(&cache, &headers, &request, false).await,
            Verdict::Bypass
        ));
    }
}
