//! Serves one provider's mock API (tests/src/mocks) on
//! loopback: `mock-provider --kind anthropic`, `--kind qianfan --api native`.
//! Prints `listening on <addr>` once bound.
#![allow(clippy::print_stdout)]

use clap::Parser;
use shared::provider_kind::{ProviderApi, ProviderKind};
use std::time::Duration;
use switchboard_tests::mocks::{router, MockConfig};
use switchboard_tests::serve::{serve, ServeArgs};

#[derive(Parser)]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The provider kind whose API to serve (openai, anthropic, gemini, ...).
    #[arg(long)]
    kind: ProviderKind,
    /// For kinds with two APIs: "openai" or "native".
    #[arg(long, default_value = "openai", value_parser = |s: &str| s.parse::<ProviderApi>())]
    api: ProviderApi,
    /// The key callers must present; empty accepts any (Ollama, vLLM).
    #[arg(long, default_value = "sk-mock-upstream")]
    api_key: String,
    /// Baidu v1 Secret Key, Tencent SecretKey.
    #[arg(long, default_value = "mock-secret-key")]
    secret_key: String,
    /// Tencent SecretId.
    #[arg(long, default_value = "AKIDmock")]
    secret_id: String,
    /// Gap between streamed events.
    #[arg(long, default_value_t = 0)]
    chunk_gap_ms: u64,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    println!("listening on {}", listener.local_addr()?);
    let app = router(MockConfig {
        kind: args.kind,
        api: args.api,
        api_key: args.api_key,
        secret_key: args.secret_key,
        secret_id: args.secret_id,
        chunk_gap: Duration::from_millis(args.chunk_gap_ms),
    });
    serve(listener, app, &args.serve).await
}
