//! `switchboard`: the admin CLI. A client of the control plane's REST API:
//! resources, keys, configuration as code (apply, diff, export) and reports.
//! docs/admin.md is its manual.

// A CLI answers on its standard output.
#![allow(clippy::print_stdout)]

mod client;
mod gateway_file;
mod output;
mod plan;
mod reports;
mod resource;
mod session;

use clap::{Parser, Subcommand};
use client::Api;
use output::Format;
use resource::Resource;
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "switchboard",
    version,
    about = "Administer a Switchboard gateway"
)]
struct Cli {
    /// The control plane's REST address (default: what `login` saved).
    #[arg(long, global = true, env = "SWITCHBOARD_URL")]
    url: Option<String>,
    /// An admin token (default: what `login` saved).
    #[arg(long, global = true, env = "SWITCHBOARD_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A PEM file of the CA that signed the control plane's certificate.
    #[arg(long, global = true, env = "SWITCHBOARD_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// table, json or yaml.
    #[arg(short, long, global = true, default_value = "table")]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a control plane's address and token, and keep them for later commands.
    Login {
        /// Where the token is kept: this file, mode 0600.
        #[arg(long, env = "SWITCHBOARD_CONFIG")]
        config: Option<PathBuf>,
    },
    #[command(flatten)]
    Admin(AdminCommand),
}

/// The commands that call the control plane with a session.
#[derive(Subcommand)]
enum AdminCommand {
    /// List resources, or show one.
    Get {
        resource: Resource,
        id: Option<String>,
    },
    /// One resource in full, as YAML.
    Describe { resource: Resource, id: String },
    /// Create a resource from a JSON or YAML file (`-` for standard input) in the API's shape.
    Create {
        resource: Resource,
        #[arg(short, long)]
        file: PathBuf,
    },
    /// Delete a resource (a key: revoke it).
    Delete { resource: Resource, id: String },
    /// API keys: create (the secret is printed once), rotate, revoke.
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Make the gateway's configuration what a file declares.
    Apply {
        #[arg(short, long)]
        file: PathBuf,
        /// Delete what the file no longer lists.
        #[arg(long)]
        prune: bool,
        /// Also set credentials of existing providers from their environment variables.
        #[arg(long)]
        with_credentials: bool,
    },
    /// Show what `apply` would change.
    Diff {
        #[arg(short, long)]
        file: PathBuf,
        #[arg(long)]
        prune: bool,
    },
    /// Print the current configuration in the file format `apply` takes.
    Export {
        /// Write here instead of standard output.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// The response cache.
    Cache {
        #[command(subcommand)]
        action: CacheCommand,
    },
    /// Usage and cost, grouped.
    Usage(reports::UsageArgs),
    /// Data planes and the config version each applied.
    Dataplanes,
    /// The audit log of admin writes.
    Audit(reports::AuditArgs),
}

#[derive(Subcommand)]
enum CacheCommand {
    /// Forget cached answers: of a route, of a team, or all of them (one of the three).
    #[command(group(clap::ArgGroup::new("purged").required(true).args(["route", "team", "all"])))]
    Purge {
        /// A route's public model name.
        #[arg(long)]
        route: Option<String>,
        /// A team, by name or id.
        #[arg(long)]
        team: Option<String>,
        /// Every cached answer.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    Create(resource::NewKeyArgs),
    Rotate {
        id: String,
        /// How long the old secret keeps working (default one hour).
        #[arg(long)]
        grace_seconds: Option<u64>,
    },
    Revoke {
        id: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // reqwest is built without a default crypto provider; ring is the workspace's.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let command = match cli.command {
        Command::Login { config } => {
            return session::login(
                cli.url.as_deref(),
                cli.token.as_deref(),
                cli.ca_cert.as_deref(),
                config.as_deref(),
            )
        }
        Command::Admin(command) => command,
    };
    let session = session::resolve(cli.url, cli.token, cli.ca_cert)?;
    let api = Api::connect(&session.url, &session.token, session.ca_cert.as_deref())?;
    let format = cli.output;
    match command {
        AdminCommand::Get { resource, id } => {
            let value = match id {
                Some(id) => api.get(&resource.item_path(&api, &id)?)?,
                None => api.get(resource.path())?,
            };
            output::print(&value, format, resource.columns())
        }
        AdminCommand::Describe { resource, id } => {
            let value = api.get(&resource.item_path(&api, &id)?)?;
            output::print(&value, Format::Yaml, &[])
        }
        AdminCommand::Create { resource, file } => {
            let body = gateway_file::read_body(&file)?;
            let created = api.post(resource.path(), &body)?;
            resource.warn_if_secret(&created);
            output::print(&created, format, resource.columns())
        }
        AdminCommand::Delete { resource, id } => {
            api.delete(&resource.item_path(&api, &id)?)?;
            eprintln!("{} {id} deleted", resource.singular());
            Ok(())
        }
        AdminCommand::Keys { action } => match action {
            KeysCommand::Create(args) => {
                let created = api.post("/keys", &args.body(&api)?)?;
                Resource::Keys.warn_if_secret(&created);
                output::print(&created, format, resource::CREATED_KEY_COLUMNS)
            }
            KeysCommand::Rotate { id, grace_seconds } => {
                let body = serde_json::json!({ "grace_seconds": grace_seconds });
                let rotated = api.post(&format!("/keys/{}/rotate", client::segment(&id)), &body)?;
                Resource::Keys.warn_if_secret(&rotated);
                output::print(&rotated, format, resource::CREATED_KEY_COLUMNS)
            }
            KeysCommand::Revoke { id } => {
                let revoked = api.delete(&format!("/keys/{}", client::segment(&id)))?;
                output::print(&revoked, format, Resource::Keys.columns())
            }
        },
        AdminCommand::Apply {
            file,
            prune,
            with_credentials,
        } => {
            let desired = gateway_file::load(&file)?;
            let plan = plan::Plan::make(&api, &desired, prune, with_credentials)?;
            plan.print_to_stdout();
            plan.apply(&api)
        }
        AdminCommand::Diff { file, prune } => {
            let desired = gateway_file::load(&file)?;
            let plan = plan::Plan::make(&api, &desired, prune, false)?;
            plan.print_to_stdout();
            Ok(())
        }
        AdminCommand::Export { file } => {
            let text = gateway_file::export(&api)?;
            match file {
                Some(path) => std::fs::write(&path, text)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display())),
                None => {
                    print!("{text}");
                    Ok(())
                }
            }
        }
        AdminCommand::Cache {
            action: CacheCommand::Purge { route, team, all },
        } => {
            let team_id = team.map(|t| resource::team_id(&api, &t)).transpose()?;
            let body = serde_json::json!({ "route": route, "team_id": team_id, "everything": all });
            let generations = api.post("/cache/purge", &body)?;
            eprintln!("cache purged");
            output::print(&generations, format, &[])
        }
        AdminCommand::Usage(args) => reports::usage(&api, &args, format),
        AdminCommand::Dataplanes => reports::dataplanes(&api, format),
        AdminCommand::Audit(args) => reports::audit(&api, &args, format),
    }
}
