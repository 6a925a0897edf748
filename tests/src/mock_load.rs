//! A mock OpenAI upstream built for load: every answer is the same fixed-size
//! chat completion, prepared once at start, so the mock costs as little as an
//! HTTP server can and benchmarks measure the gateway, not the mock.
//!
//! `POST /v1/chat/completions` answers a plain completion, or when the body
//! asks for `"stream":true`, `--chunks` SSE chunks `--chunk-gap-ms` apart,
//! then a usage chunk (when `include_usage` is asked) and `[DONE]`. The body is
//! not parsed: a byte search decides which, as a static upstream would.
#![allow(clippy::print_stdout)]

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::Response;
use axum::routing::post;
use axum::Router;
use clap::Parser;
use memchr::memmem;
use std::sync::Arc;
use std::time::Duration;
use switchboard_tests::serve::{serve, ServeArgs};

#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port, printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Delay before every answer (0 and 50 are the benchmark's settings).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Content chunks per streamed answer.
    #[arg(long, default_value_t = 20)]
    chunks: usize,
    /// Gap between streamed chunks.
    #[arg(long, default_value_t = 10)]
    chunk_gap_ms: u64,
    /// Words in the answer; the plain answer's size grows with it.
    #[arg(long, default_value_t = 20)]
    answer_words: usize,
    #[command(flatten)]
    serve: ServeArgs,
}

struct Mock {
    latency: Duration,
    gap: Duration,
    answer: Bytes,
    chunk: Bytes,
    chunks: usize,
    usage_chunk: Bytes,
}

const USAGE: &str = r#"{"prompt_tokens":10,"completion_tokens":20,"total_tokens":30}"#;

impl Mock {
    fn new(args: &Args) -> Self {
        let content = vec!["word"; args.answer_words].join(" ");
        let answer = format!(
            r#"{{"id":"chatcmpl-load","object":"chat.completion","created":1700000000,"model":"load","choices":[{{"index":0,"message":{{"role":"assistant","content":"{content}"}},"finish_reason":"stop"}}],"usage":{USAGE}}}"#
        );
        let chunk = r#"data: {"id":"chatcmpl-load","object":"chat.completion.chunk","created":1700000000,"model":"load","choices":[{"index":0,"delta":{"content":"word "},"finish_reason":null}]}"#;
        let usage_chunk = format!(
            r#"data: {{"id":"chatcmpl-load","object":"chat.completion.chunk","created":1700000000,"model":"load","choices":[],"usage":{USAGE}}}"#
        );
        Self {
            latency: Duration::from_millis(args.latency_ms),
            gap: Duration::from_millis(args.chunk_gap_ms),
            answer: Bytes::from(answer),
            chunk: Bytes::from(format!("{chunk}\n\n")),
            chunks: args.chunks,
            usage_chunk: Bytes::from(format!("{usage_chunk}\n\n")),
        }
    }
}

async fn chat(State(mock): State<Arc<Mock>>, body: Bytes) -> Response {
    if !mock.latency.is_zero() {
        tokio::time::sleep(mock.latency).await;
    }
    if memmem::find(&body, br#""stream":true"#).is_none() {
        let mut response = Response::new(Body::from(mock.answer.clone()));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return response;
    }
    let include_usage = memmem::find(&body, br#""include_usage":true"#).is_some();
    let stream = futures_util::stream::unfold(0usize, move |sent| {
        let mock = mock.clone();
        async move {
            let event = if sent < mock.chunks {
                if sent > 0 {
                    tokio::time::sleep(mock.gap).await;
                }
                mock.chunk.clone()
            } else if sent == mock.chunks && include_usage {
                mock.usage_chunk.clone()
            } else if sent <= mock.chunks + 1 {
                Bytes::from_static(b"data: [DONE]\n\n")
            } else {
                return None;
            };
            // After [DONE] the stream ends: skip the usage slot when not asked.
            let next = if sent == mock.chunks && !include_usage {
                mock.chunks + 2
            } else {
                sent + 1
            };
            Some((Ok::<_, std::convert::Infallible>(event), next))
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mock = Arc::new(Mock::new(&args));
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(mock);
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    serve(listener, app, &args.serve).await
}
