//! Logging set-up shared by both binaries.

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// The logging flags of both binaries, flattened into each one's config.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log filter, in `RUST_LOG` syntax.
    #[arg(long = "log", env = "SWITCHBOARD_LOG", default_value = "info")]
    pub filter: String,

    #[arg(
        long = "log-format",
        env = "SWITCHBOARD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub format: LogFormat,
}

impl LogArgs {
    /// Logs go to stderr.
    pub fn init(&self) -> Result<(), String> {
        let filter =
            EnvFilter::try_new(&self.filter).map_err(|e| format!("log: invalid filter: {e}"))?;
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr);
        let result = match self.format {
            LogFormat::Text => builder.try_init(),
            LogFormat::Json => builder.json().try_init(),
        };
        result.map_err(|e| e.to_string())
    }
}
