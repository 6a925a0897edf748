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
    match control_plane::run(config, shared::tasks::shutdown_requested()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}
