use clap::Parser;
use data_plane::config::Config;
use std::process::ExitCode;

// Requests are served on the worker threads of `server`; this runtime only
// runs background work (config sync, usage shipping, metrics upkeep).
#[tokio::main(worker_threads = 1)]
async fn main() -> ExitCode {
    let config = Config::parse();
    let telemetry = match config.log.init("switchboard-data-plane") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let code = match data_plane::run(config, shared::tasks::shutdown_requested()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
