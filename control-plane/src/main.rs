use clap::Parser;
use control_plane::config::Config;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Config::parse();
    let telemetry = match config.log.init("switchboard-control-plane") {
        Ok(telemetry) => telemetry,
        Err(error) => {
            eprintln!("{error}");
            return ExitCode::from(2);
        }
    };
    let code = match control_plane::run(config, shared::tasks::shutdown_requested()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown();
    code
}
