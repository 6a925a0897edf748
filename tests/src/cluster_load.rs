//! Many simulated data planes against one control plane, for the benchmark
//! suite: `--streams` config streams (each ACKing what it receives, as a
//! data plane does) that start at the control plane's current version, then
//! - keys created through the admin API, one after another, each timed until
//!   every stream has received it (propagation);
//! - usage batches reported as fast as `--reporters` concurrent callers can
//!   for `--usage-seconds`, for keys `<prefix><8 digits>` below `--usage-keys`
//!   (ingestion rate; the leader's spend count follows it).
//!
//! Results are one JSON object on stdout.
#![allow(clippy::print_stdout)]

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prost::Message;
use shared::proto;
use shared::proto::cluster_service_client::ClusterServiceClient;
use shared::proto::config_update::Update;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
struct Args {
    /// The control plane's gRPC address.
    #[arg(long)]
    control_plane: String,
    #[arg(long)]
    cluster_token: String,
    /// The control plane's REST base, e.g. http://127.0.0.1:8081.
    #[arg(long)]
    admin_url: String,
    #[arg(long)]
    admin_token: String,
    #[arg(long, default_value_t = 100)]
    streams: usize,
    /// Keys created and timed to every stream.
    #[arg(long, default_value_t = 20)]
    creates: usize,
    #[arg(long, default_value_t = 10)]
    usage_seconds: u64,
    #[arg(long, default_value_t = 8)]
    reporters: usize,
    #[arg(long, default_value_t = 500)]
    batch: usize,
    #[arg(long, default_value = "key-")]
    usage_key_prefix: String,
    /// Usage goes to keys 0 up to this (the benchmark gives the first ones budgets).
    #[arg(long, default_value_t = 1_000)]
    usage_keys: u64,
}

type Seen = Arc<Mutex<HashMap<String, Vec<Instant>>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let http: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let admin = Admin {
        http,
        base: args.admin_url.trim_end_matches('/').to_owned(),
        token: args.admin_token.clone(),
    };
    let version = admin.get("/api/v1/cluster").await?["config_version"]
        .as_i64()
        .unwrap_or(0);
    let channel = Endpoint::from_shared(args.control_plane.clone())?
        .connect()
        .await?;
    let bearer: tonic::metadata::MetadataValue<_> =
        format!("Bearer {}", args.cluster_token).parse()?;

    // Streams, each on the one HTTP/2 connection (as many data planes' would be on theirs).
    let seen: Seen = Arc::default();
    let received_bytes = Arc::new(AtomicU64::new(0));
    let mut opened = Vec::new();
    for i in 0..args.streams {
        let (seen, bytes, channel, bearer) = (
            seen.clone(),
            received_bytes.clone(),
            channel.clone(),
            bearer.clone(),
        );
        opened.push(tokio::spawn(async move {
            follow(i, version, channel, bearer, seen, bytes).await
        }));
    }
    // Every stream is open once it has had its first counters message.
    if args.streams > 0 {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }

    // Propagation: each key until every stream has it.
    let mut latencies = Vec::new();
    let bytes_before = received_bytes.load(Ordering::Relaxed);
    for i in 0..args.creates {
        let started = Instant::now();
        let created = admin
            .post(
                "/api/v1/keys",
                serde_json::json!({"name": format!("cluster-load-{i}")}),
            )
            .await?;
        let id = created["id"].as_str().unwrap_or_default().to_owned();
        loop {
            let arrivals = seen.lock().map(|s| s.get(&id).cloned()).ok().flatten();
            if let Some(arrivals) = arrivals.filter(|a| a.len() >= args.streams) {
                latencies.extend(arrivals.iter().map(|at| at.duration_since(started)));
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("key {id} did not reach every stream in 30 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let per_change = (received_bytes.load(Ordering::Relaxed) - bytes_before)
        / (args.creates * args.streams).max(1) as u64;
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 * p).ceil() as usize).saturating_sub(1))
            .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
    };

    // Usage ingestion.
    let accepted = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(args.usage_seconds);
    let mut reporters = Vec::new();
    for r in 0..args.reporters {
        let mut client = ClusterServiceClient::new(channel.clone());
        let (bearer, accepted, prefix) = (
            bearer.clone(),
            accepted.clone(),
            args.usage_key_prefix.clone(),
        );
        let (batch, keys) = (args.batch, args.usage_keys.max(1));
        reporters.push(tokio::spawn(async move {
            let mut n: u64 = r as u64;
            while Instant::now() < deadline {
                let records = (0..batch)
                    .map(|_| {
                        n = n
                            .wrapping_mul(6364136223846793005)
                            .wrapping_add(1442695040888963407);
                        record(&format!("{prefix}{:08}", (n >> 33) % keys))
                    })
                    .collect();
                let mut request = tonic::Request::new(proto::UsageBatch {
                    dataplane_id: format!("load-reporter-{r}"),
                    records,
                    ..proto::UsageBatch::default()
                });
                request
                    .metadata_mut()
                    .insert("authorization", bearer.clone());
                match client.report_usage(request).await {
                    Ok(answer) => {
                        accepted
                            .fetch_add(u64::from(answer.into_inner().accepted), Ordering::Relaxed);
                    }
                    Err(status) => eprintln!("usage batch refused: {status}"),
                }
            }
        }));
    }
    let usage_started = Instant::now();
    for reporter in reporters {
        reporter.await?;
    }
    let usage_elapsed = usage_started.elapsed().as_secs_f64();
    for stream in opened {
        stream.abort();
    }
    let total = accepted.load(Ordering::Relaxed);
    println!(
        "{}",
        serde_json::json!({
            "streams": args.streams,
            "creates": args.creates,
            "propagation_ms": {"p50": pct(0.50), "p99": pct(0.99), "max": pct(1.0)},
            "bytes_per_stream_per_change": per_change,
            "usage_records": total,
            "usage_records_per_second": total as f64 / usage_elapsed,
        })
    );
    Ok(())
}

/// One simulated data plane's stream: records when each key id arrives.
async fn follow(
    i: usize,
    version: i64,
    channel: Channel,
    bearer: tonic::metadata::MetadataValue<tonic::metadata::Ascii>,
    seen: Seen,
    bytes: Arc<AtomicU64>,
) -> anyhow::Result<()> {
    let mut client = ClusterServiceClient::new(channel).max_decoding_message_size(1 << 30);
    let dataplane_id = format!("simulated-{i:03}");
    let mut request = tonic::Request::new(proto::WatchRequest {
        dataplane_id: dataplane_id.clone(),
        hostname: "cluster-load".into(),
        applied_version: version,
        software_version: shared::SOFTWARE_VERSION.into(),
        full_snapshot: false,
    });
    request
        .metadata_mut()
        .insert("authorization", bearer.clone());
    let mut stream = client.watch_config(request).await?.into_inner();
    while let Some(update) = stream.message().await? {
        let at = Instant::now();
        if let Some(Update::Delta(delta)) = &update.update {
            bytes.fetch_add(delta.len() as u64, Ordering::Relaxed);
            let delta = proto::ConfigDelta::decode(delta.clone())?;
            if let Ok(mut seen) = seen.lock() {
                for key in delta.keys {
                    seen.entry(key.id).or_default().push(at);
                }
            }
            let mut ack = tonic::Request::new(proto::AckRequest {
                dataplane_id: dataplane_id.clone(),
                version: update.version,
                error: String::new(),
            });
            ack.metadata_mut().insert("authorization", bearer.clone());
            client.ack_config(ack).await?;
        }
    }
    Ok(())
}

/// A record as a data plane sends it for a request that came without an
/// `x-request-id`: the request's id is the record's.
fn record(key_id: &str) -> proto::UsageRecord {
    let id = uuid::Uuid::now_v7().to_string();
    proto::UsageRecord {
        request_id: id.clone(),
        id,
        key_id: key_id.to_owned(),
        model: "load".into(),
        provider: "fast".into(),
        upstream_model: "load".into(),
        endpoint: "chat.completions".into(),
        prompt_tokens: 12,
        completion_tokens: 30,
        total_tokens: 42,
        latency_ms: 3,
        status: 200,
        created_at_ms: shared::time::now_ms(),
        cost_micros: 75,
        currency: "USD".into(),
        ..Default::default()
    }
}

struct Admin {
    http: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    base: String,
    token: String,
}

impl Admin {
    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<serde_json::Value> {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                body.map(|b| b.to_string()).unwrap_or_default(),
            )))?;
        let response = self.http.request(request).await?;
        let status = response.status();
        let bytes = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            anyhow::bail!(
                "{method} {path}: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }
        Ok(serde_json::from_slice(&bytes)?)
    }

    async fn get(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        self.send("GET", path, None).await
    }

    async fn post(&self, path: &str, body: serde_json::Value) -> anyhow::Result<serde_json::Value> {
        self.send("POST", path, Some(body)).await
    }
}
