//! Where the CLI finds the control plane and its token: flags, then
//! `SWITCHBOARD_*` variables, then what `login` saved.

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub url: String,
    pub token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

fn default_config_path() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("SWITCHBOARD_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let dir = dirs::config_dir().context("no configuration directory: set SWITCHBOARD_CONFIG")?;
    Ok(dir.join("switchboard").join("config.yaml"))
}

fn saved() -> anyhow::Result<Option<Session>> {
    let path = default_config_path()?;
    match std::fs::read_to_string(&path) {
        Ok(text) => yaml_serde::from_str(&text)
            .map(Some)
            .with_context(|| format!("{}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("{}", path.display())),
    }
}

/// The session a command runs with.
pub fn resolve(
    url: Option<String>,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
) -> anyhow::Result<Session> {
    let saved = saved()?;
    let url = url.or_else(|| saved.as_ref().map(|s| s.url.clone()));
    let token = token.or_else(|| saved.as_ref().map(|s| s.token.clone()));
    let ca_cert = ca_cert.or_else(|| saved.and_then(|s| s.ca_cert));
    match (url, token) {
        (Some(url), Some(token)) => Ok(Session {
            url,
            token,
            ca_cert,
        }),
        _ => bail!(
            "not logged in: run `switchboard login --url URL --token TOKEN`, or set SWITCHBOARD_URL and SWITCHBOARD_TOKEN"
        ),
    }
}

/// Checks the address and token with one call, then keeps them in a file
/// only its owner can read.
pub fn login(
    url: Option<&str>,
    token: Option<&str>,
    ca_cert: Option<&Path>,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let (Some(url), Some(token)) = (url, token) else {
        bail!("login needs --url and --token (or SWITCHBOARD_URL and SWITCHBOARD_TOKEN)");
    };
    let session = Session {
        url: url.trim_end_matches('/').to_owned(),
        token: token.to_owned(),
        ca_cert: ca_cert.map(Path::to_path_buf),
    };
    let api = crate::client::Api::connect(&session.url, &session.token, ca_cert)?;
    api.get("/routes")
        .context("the control plane refused the login")?;
    let path = match config {
        Some(path) => path.to_path_buf(),
        None => default_config_path()?,
    };
    write_private(&path, &yaml_serde::to_string(&session)?)
        .with_context(|| format!("{}", path.display()))?;
    eprintln!("logged in to {}; saved in {}", session.url, path.display());
    Ok(())
}

#[cfg(unix)]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: make it private too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

#[cfg(not(unix))]
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}
