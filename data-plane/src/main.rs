use clap::Parser;
use data_plane::config::Config;
use std::process::ExitCode;

// Measured: the request path allocates small objects across threads, where
// mimalloc costs markedly less CPU than glibc's malloc (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(error) = config.log.init() {
        eprintln!("{error}");
        return ExitCode::from(2);
    }
    match data_plane::run(config, shared::tasks::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
