use clap::Parser;
use control_plane::config::Config;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    if let Err(error) = config.log.init() {
        eprintln!("{error}");
        return ExitCode::from(2);
    }
    let shutdown = async {
        shared::tasks::shutdown_signal().await;
        // A second signal ends at once, drain or no drain.
        tokio::spawn(async {
            shared::tasks::shutdown_signal().await;
            tracing::warn!("second shutdown signal: stopping now");
            std::process::exit(130);
        });
    };
    match control_plane::run(config, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
