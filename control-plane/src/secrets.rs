//! The admin token, cluster token and secret key: from flags, or on SQLite
//! generated on first start and kept beside the database. Tokens are kept
//! only as hashes; the secret key must be kept as is to decrypt credentials.

use crate::api::auth::BearerToken;
use crate::config::{Config, DatabaseKind};
use crate::store::sqlite_file;
use anyhow::{bail, Context};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use shared::crypto::SecretKey;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct Secrets {
    pub admin_token: BearerToken,
    pub cluster_token: BearerToken,
    pub secret_key: SecretKey,
    /// Keys being rotated out: read, never written with.
    pub previous_secret_keys: Vec<SecretKey>,
}

#[derive(Default, Serialize, Deserialize)]
struct SecretsFile {
    secret_key: Option<String>,
    admin_token_sha256: Option<String>,
    cluster_token_sha256: Option<String>,
}

pub fn resolve(config: &Config) -> anyhow::Result<Secrets> {
    let given_key = config
        .secret_key
        .as_deref()
        .map(SecretKey::from_hex)
        .transpose()
        .context("secret_key (SWITCHBOARD_SECRET_KEY)")?;
    let kind = config.database().map_err(anyhow::Error::msg)?;
    if kind == DatabaseKind::Postgres {
        let missing: Vec<&str> = [
            ("--admin-token", config.admin_token.is_none()),
            ("--cluster-token", config.cluster_token.is_none()),
            ("--secret-key", given_key.is_none()),
        ]
        .into_iter()
        .filter_map(|(flag, missing)| missing.then_some(flag))
        .collect();
        if !missing.is_empty() {
            bail!(
                "with PostgreSQL these must be set (flags or SWITCHBOARD_* env): {}",
                missing.join(", ")
            );
        }
    }
    let path = sqlite_file(&config.database_url).map(|db| secrets_path(&db));
    let mut file = match &path {
        Some(path) if path.exists() => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?
        }
        _ => SecretsFile::default(),
    };
    let mut changed = false;
    let secret_key = match (given_key, &file.secret_key) {
        (Some(key), _) => key,
        (None, Some(stored)) => {
            SecretKey::from_hex(stored).context("secret_key in the secrets file")?
        }
        (None, None) => {
            let key = SecretKey::generate();
            file.secret_key = Some(key.to_hex());
            changed = true;
            key
        }
    };
    let admin_token = token(
        &config.admin_token,
        &mut file.admin_token_sha256,
        "admin",
        &mut changed,
    )?;
    let cluster_token = token(
        &config.cluster_token,
        &mut file.cluster_token_sha256,
        "cluster",
        &mut changed,
    )?;
    if let (true, Some(path)) = (changed, &path) {
        write_private(path, &serde_json::to_string_pretty(&file)?)?;
    }
    let previous_secret_keys = config
        .previous_secret_keys
        .iter()
        .filter(|k| !k.trim().is_empty())
        .map(|k| SecretKey::from_hex(k.trim()))
        .collect::<Result<Vec<_>, _>>()
        .context("previous_secret_keys (SWITCHBOARD_PREVIOUS_SECRET_KEYS)")?;
    Ok(Secrets {
        admin_token,
        cluster_token,
        secret_key,
        previous_secret_keys,
    })
}

fn token(
    given: &Option<String>,
    stored_hash: &mut Option<String>,
    what: &str,
    changed: &mut bool,
) -> anyhow::Result<BearerToken> {
    if let Some(token) = given {
        if token.trim().len() < 16 {
            bail!("the {what} token must be at least 16 characters");
        }
        return Ok(BearerToken::new(token.trim()));
    }
    if let Some(hash) = stored_hash {
        let bytes: [u8; 32] = hex::decode(hash)
            .ok()
            .and_then(|b| b.try_into().ok())
            .with_context(|| format!("{what} token hash in the secrets file is malformed"))?;
        return Ok(BearerToken::from_hash(bytes));
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let token = format!("sb-{what}-{}", hex::encode(bytes));
    let bearer = BearerToken::new(&token);
    *stored_hash = Some(hex::encode(bearer.hash()));
    *changed = true;
    // Shown once, on the terminal, never through the log.
    let _ = writeln!(
        std::io::stderr(),
        "\n  Switchboard {what} token (shown once; only its hash is kept): {token}\n"
    );
    Ok(bearer)
}

fn secrets_path(database: &Path) -> PathBuf {
    let mut name = database.file_name().unwrap_or_default().to_os_string();
    name.push(".secrets.json");
    database.with_file_name(name)
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::fs::OpenOptions;
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}
