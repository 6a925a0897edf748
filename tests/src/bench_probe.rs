//! Measurements the benchmark suite needs and no load generator makes:
//! - `stream`: time to first byte and the gap between chunks of SSE streams;
//! - `idle`: many keep-alive connections held open, each after one request;
//! - `streams`: many streams in flight at once;
//! - `latency`: requests one at a time, listing when each slow one started.
//!
//! `idle` and `streams` print `ready` once their connections or streams are
//! open, then wait: `idle` for a line on stdin, `streams` for the streams to
//! end. Results are one JSON object on stdout.
#![allow(clippy::print_stdout)]

use bytes::Bytes;
use clap::{Parser, Subcommand};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Base URL with the version path, e.g. http://127.0.0.1:8080/v1.
    #[arg(long, global = true, default_value = "http://127.0.0.1:8080/v1")]
    url: String,
    #[arg(long, global = true, default_value = "")]
    key: String,
    #[arg(long, global = true, default_value = "bench")]
    model: String,
}

#[derive(Subcommand)]
enum Command {
    Stream {
        #[arg(long, default_value_t = 200)]
        requests: usize,
        #[arg(long, default_value_t = 4)]
        concurrency: usize,
    },
    Idle {
        #[arg(long, default_value_t = 10_000)]
        connections: usize,
    },
    Streams {
        #[arg(long, default_value_t = 1_000)]
        concurrency: usize,
        /// The requests start evenly over this long.
        #[arg(long, default_value_t = 0)]
        ramp_ms: u64,
    },
    /// Requests one after another for a while; reports when each slow one started.
    Latency {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Requests slower than this are listed with their start time.
        #[arg(long, default_value_t = 1_000)]
        slow_us: u64,
    },
}

fn chat_request(args: &Args, stream: bool) -> hyper::Request<Full<Bytes>> {
    let body = json!({
        "model": args.model,
        "messages": [{"role": "user", "content": "benchmark me please"}],
        "stream": stream,
    });
    hyper::Request::post(format!("{}/chat/completions", args.url))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", args.key))
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid request")
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn summary(mut values: Vec<u64>) -> serde_json::Value {
    values.sort_unstable();
    json!({"p50": percentile(&values, 50.0), "p99": percentile(&values, 99.0),
           "max": values.last().copied().unwrap_or(0), "count": values.len()})
}

/// One stream: its time to first body byte, gaps between body frames, frame count.
async fn one_stream(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<(u64, Vec<u64>), String> {
    let started = Instant::now();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    if !response.status().is_success() {
        return Err(format!("status {}", response.status()));
    }
    let mut body = response.into_body();
    let mut last = None;
    let mut ttfb = 0;
    let mut gaps = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if frame.data_ref().is_none_or(|d| d.is_empty()) {
            continue;
        }
        let now = Instant::now();
        match last {
            None => ttfb = now.duration_since(started).as_micros() as u64,
            Some(previous) => gaps.push(now.duration_since(previous).as_micros() as u64),
        }
        last = Some(now);
    }
    Ok((ttfb, gaps))
}

async fn stream(args: Arc<Args>, requests: usize, concurrency: usize) -> serde_json::Value {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let permits = Arc::new(Semaphore::new(concurrency));
    let mut tasks = Vec::with_capacity(requests);
    for _ in 0..requests {
        let permit = permits.clone().acquire_owned().await.expect("open");
        let (client, args) = (client.clone(), args.clone());
        tasks.push(tokio::spawn(async move {
            let result = one_stream(&client, chat_request(&args, true)).await;
            drop(permit);
            result
        }));
    }
    let (mut ttfbs, mut gaps, mut frames, mut errors) = (Vec::new(), Vec::new(), 0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok((ttfb, stream_gaps)) => {
                ttfbs.push(ttfb);
                frames += stream_gaps.len() + 1;
                gaps.extend(stream_gaps);
            }
            Err(_) => errors += 1,
        }
    }
    let streams = ttfbs.len().max(1);
    json!({"ttfb_us": summary(ttfbs), "gap_us": summary(gaps),
           "frames_per_stream": frames as f64 / streams as f64, "errors": errors})
}

/// One loopback source address has ~28k ephemeral ports towards one
/// listener; more connections than that come from 127.0.0.2, 127.0.0.3, ...
const CONNECTIONS_PER_SOURCE: usize = 20_000;

async fn connect_from(authority: &str, source: usize) -> std::io::Result<TcpStream> {
    let target = tokio::net::lookup_host(authority)
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    let socket = tokio::net::TcpSocket::new_v4()?;
    if source > 0 {
        let address = std::net::Ipv4Addr::new(127, 0, 0, 1 + source as u8);
        socket.bind((address, 0).into())?;
    }
    socket.connect(target).await
}

async fn idle(args: Arc<Args>, connections: usize) -> serde_json::Value {
    let authority = args
        .url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    // Connections open a few hundred at a time, within the listener's backlog.
    let permits = Arc::new(Semaphore::new(256));
    let mut tasks = Vec::with_capacity(connections);
    for index in 0..connections {
        let (permits, args, authority) = (permits.clone(), args.clone(), authority.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = permits.acquire_owned().await.expect("open");
            let stream = connect_from(&authority, index / CONNECTIONS_PER_SOURCE)
                .await
                .map_err(|e| e.to_string())?;
            let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| e.to_string())?;
            let connection = tokio::spawn(connection);
            let response = sender
                .send_request(chat_request(&args, false))
                .await
                .map_err(|e| e.to_string())?;
            response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?;
            Ok::<_, String>((sender, connection))
        }));
    }
    let mut open = Vec::with_capacity(connections);
    let mut errors = 0;
    for task in tasks {
        match task.await.expect("task") {
            Ok(connection) => open.push(connection),
            Err(_) => errors += 1,
        }
    }
    println!("ready {}", open.len());
    let _ = tokio::task::spawn_blocking(|| std::io::stdin().lock().lines().next()).await;
    let held = open.len();
    for (sender, connection) in open {
        drop(sender);
        connection.abort();
    }
    json!({"connections": held, "errors": errors})
}

/// Streams all in flight at once (their requests spread over `ramp_ms`):
/// prints `ready` once every one has its answer's head, then reads them to
/// the end, timing the gaps between body frames. A stream is complete when
/// its body ends with `[DONE]`.
async fn streams(args: Arc<Args>, concurrency: usize, ramp_ms: u64) -> serde_json::Value {
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(concurrency)
        .build_http();
    let started = Arc::new(Semaphore::new(0));
    let mut tasks = Vec::with_capacity(concurrency);
    for index in 0..concurrency {
        let (client, args, started) = (client.clone(), args.clone(), started.clone());
        let delay = Duration::from_millis(ramp_ms * index as u64 / concurrency.max(1) as u64);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let response = client
                .request(chat_request(&args, true))
                .await
                .map_err(|e| e.to_string());
            started.add_permits(1);
            let response = response?;
            if !response.status().is_success() {
                return Err(format!("status {}", response.status()));
            }
            let mut body = response.into_body();
            let (mut gaps, mut last, mut tail) = (Vec::with_capacity(128), None, Vec::new());
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| e.to_string())?;
                let Some(data) = frame.data_ref().filter(|d| !d.is_empty()) else {
                    continue;
                };
                let now = Instant::now();
                if let Some(previous) = last {
                    gaps.push(now.duration_since(previous).as_micros() as u64);
                }
                last = Some(now);
                tail = data[data.len().saturating_sub(16)..].to_vec();
            }
            let complete = memchr::memmem::find(&tail, b"[DONE]").is_some();
            Ok::<_, String>((gaps, complete))
        }));
    }
    let all = u32::try_from(concurrency).unwrap_or(u32::MAX);
    let wait = Duration::from_millis(60_000 + ramp_ms);
    let in_flight = tokio::time::timeout(wait, started.acquire_many(all)).await;
    println!("ready {}", if in_flight.is_ok() { concurrency } else { 0 });
    let (mut errors, mut incomplete, mut gaps) = (0, 0, Vec::new());
    for task in tasks {
        match task.await {
            Ok(Ok((stream_gaps, complete))) => {
                incomplete += usize::from(!complete);
                gaps.extend(stream_gaps);
            }
            _ => errors += 1,
        }
    }
    json!({"streams": concurrency, "errors": errors, "incomplete": incomplete, "gap_us": summary(gaps)})
}

/// Concurrency 1 on one keep-alive connection, so each latency is the gateway's
/// answer time alone; slow requests are listed as (unix start in us, latency in us).
async fn latency(args: Arc<Args>, seconds: u64, slow_us: u64) -> serde_json::Value {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut count, mut errors, mut slow, mut max) = (0u64, 0u64, Vec::new(), 0u64);
    while Instant::now() < deadline {
        let at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let started = Instant::now();
        let ok = match client.request(chat_request(&args, false)).await {
            Ok(response) => {
                let success = response.status().is_success();
                response.into_body().collect().await.is_ok() && success
            }
            Err(_) => false,
        };
        let took = started.elapsed().as_micros() as u64;
        count += 1;
        errors += u64::from(!ok);
        max = max.max(took);
        if took > slow_us {
            slow.push((at, took));
        }
    }
    json!({"requests": count, "errors": errors, "max_us": max, "slow": slow})
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let result = match args.command {
        Command::Stream {
            requests,
            concurrency,
        } => stream(args.clone(), requests, concurrency).await,
        Command::Idle { connections } => idle(args.clone(), connections).await,
        Command::Streams {
            concurrency,
            ramp_ms,
        } => streams(args.clone(), concurrency, ramp_ms).await,
        Command::Latency { seconds, slow_us } => latency(args.clone(), seconds, slow_us).await,
    };
    println!("{result}");
}
