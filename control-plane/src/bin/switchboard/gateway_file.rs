//! The configuration file `apply` takes and `export` writes: providers
//! (credentials named by environment variable, never written in the file),
//! routes, prices, teams and users with their limits and budgets.

use crate::client::Api;
use anyhow::{anyhow, bail, Context};
use control_plane::model::{Budget, Limits, Route};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::money::{Currency, Micros};
use shared::provider_kind::ProviderKind;
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub providers: Vec<ProviderEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prices: Vec<PriceEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<TeamEntry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<UserEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderEntry {
    pub name: String,
    pub kind: ProviderKind,
    pub base_url: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub settings: BTreeMap<String, String>,
    /// The environment variable holding the API key when `apply` runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_env: Option<String>,
    /// The same for a second secret (Baidu v1 Secret Key, Tencent SecretKey).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key_env: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceEntry {
    pub model: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    pub input_per_million: Micros,
    pub output_per_million: Micros,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input_per_million: Option<Micros>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_million: Option<Micros>,
    #[serde(default)]
    pub currency: Currency,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guardrails: Option<shared::guardrails::Guardrails>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The team's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<String>,
    /// The identity provider's subject.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    #[serde(default, skip_serializing_if = "is_default")]
    pub limits: Limits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<Budget>,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

impl ProviderEntry {
    /// The normalised form the control plane stores.
    pub fn normalised(mut self) -> Self {
        self.base_url = self.base_url.trim().trim_end_matches('/').to_owned();
        self
    }
}

impl PriceEntry {
    /// How a price is told apart from the others.
    pub fn identity(&self) -> String {
        match &self.provider {
            Some(provider) => format!("{} ({provider})", self.model),
            None => self.model.clone(),
        }
    }

    /// An absent cache price is the input price.
    pub fn normalised(mut self) -> Self {
        self.cached_input_per_million
            .get_or_insert(self.input_per_million);
        self.cache_write_per_million
            .get_or_insert(self.input_per_million);
        self
    }
}

impl UserEntry {
    /// How a user is told apart: the identity provider's subject, else the
    /// email, else team and name.
    pub fn identity(&self) -> String {
        if let Some(external_id) = &self.external_id {
            return format!("external_id={external_id}");
        }
        if let Some(email) = &self.email {
            return format!("email={email}");
        }
        format!("{}/{}", self.team.as_deref().unwrap_or("-"), self.name)
    }
}

/// Reads a declaration file; errors name the file, the resource and the field.
pub fn load(path: &Path) -> anyhow::Result<GatewayFile> {
    let text = read_text(path)?;
    let where_ = path.display();
    // The parser's errors name the field's path, line and column.
    let file: GatewayFile = yaml_serde::from_str(&text).map_err(|e| anyhow!("{where_}: {e}"))?;
    check_unique(
        path,
        "providers",
        file.providers.iter().map(|p| p.name.clone()),
    )?;
    check_unique(path, "routes", file.routes.iter().map(|r| r.model.clone()))?;
    check_unique(path, "prices", file.prices.iter().map(PriceEntry::identity))?;
    check_unique(path, "teams", file.teams.iter().map(|t| t.name.clone()))?;
    check_unique(path, "users", file.users.iter().map(UserEntry::identity))?;
    for (i, route) in file.routes.iter().enumerate() {
        if route.model.is_empty() {
            bail!("{where_}: routes[{i}].model: missing");
        }
    }
    for (i, user) in file.users.iter().enumerate() {
        if let Some(team) = &user.team {
            if !file.teams.iter().any(|t| &t.name == team) {
                bail!("{where_}: users[{i}].team: team {team:?} is not declared in the file");
            }
        }
    }
    for (i, provider) in file.providers.iter().enumerate() {
        for (field, variable) in [
            ("api_key_env", &provider.api_key_env),
            ("secret_key_env", &provider.secret_key_env),
        ] {
            if variable.as_ref().is_some_and(|v| v.is_empty()) {
                bail!("{where_}: providers[{i}].{field}: an environment variable's name");
            }
        }
    }
    Ok(file)
}

fn check_unique(
    path: &Path,
    kind: &str,
    names: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    let mut seen = std::collections::BTreeSet::new();
    for (i, name) in names.enumerate() {
        if !seen.insert(name.clone()) {
            bail!(
                "{}: {kind}[{i}]: {name:?} is declared twice",
                path.display()
            );
        }
    }
    Ok(())
}

/// A request body for `create`, from JSON or YAML (`-`: standard input).
pub fn read_body(path: &Path) -> anyhow::Result<Value> {
    let text = read_text(path)?;
    yaml_serde::from_str(&text).with_context(|| format!("{}", path.display()))
}

fn read_text(path: &Path) -> anyhow::Result<String> {
    if path == Path::new("-") {
        return std::io::read_to_string(std::io::stdin()).context("standard input");
    }
    std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))
}

/// The gateway's configuration as it is now: in the file's terms, and the
/// API's providers, teams and users as answered, for what the file does not
/// hold (ids, whether a credential is set), in the same order.
pub struct Current {
    pub file: GatewayFile,
    pub providers: Vec<Value>,
    pub teams: Vec<Value>,
    pub users: Vec<Value>,
}

pub fn current(api: &Api) -> anyhow::Result<Current> {
    let providers: Vec<Value> = serde_json::from_value(api.get("/providers")?)?;
    let teams: Vec<Value> = serde_json::from_value(api.get("/teams")?)?;
    let users: Vec<Value> = serde_json::from_value(api.get("/users")?)?;
    let file = in_file_terms(api, &providers, &teams, &users)?;
    Ok(Current {
        file,
        providers,
        teams,
        users,
    })
}

fn in_file_terms(
    api: &Api,
    providers: &[Value],
    teams: &[Value],
    users: &[Value],
) -> anyhow::Result<GatewayFile> {
    let team_names: BTreeMap<String, String> = teams
        .iter()
        .map(|t| (text(&t["id"]), text(&t["name"])))
        .collect();
    Ok(GatewayFile {
        providers: providers
            .iter()
            .map(|p| {
                let env = |present: &str, suffix: &str| {
                    p[present]
                        .as_bool()
                        .unwrap_or(false)
                        .then(|| env_name(&text(&p["name"]), suffix))
                };
                Ok(ProviderEntry {
                    name: text(&p["name"]),
                    kind: serde_json::from_value(p["kind"].clone())?,
                    base_url: text(&p["base_url"]),
                    settings: serde_json::from_value(p["settings"].clone())?,
                    api_key_env: env("has_api_key", "API_KEY"),
                    secret_key_env: env("has_secret_key", "SECRET_KEY"),
                })
            })
            .collect::<anyhow::Result<_>>()?,
        routes: serde_json::from_value(api.get("/routes")?)?,
        prices: serde_json::from_value::<Vec<Value>>(api.get("/prices")?)?
            .into_iter()
            .map(|mut p| {
                if let Some(object) = p.as_object_mut() {
                    object.remove("updated_at");
                }
                serde_json::from_value(p)
            })
            .collect::<Result<_, _>>()?,
        teams: teams
            .iter()
            .map(|t| {
                Ok(TeamEntry {
                    name: text(&t["name"]),
                    models: serde_json::from_value(t["models"].clone())?,
                    limits: serde_json::from_value(t["limits"].clone())?,
                    budget: serde_json::from_value(t["budget"].clone())?,
                    guardrails: serde_json::from_value(t["guardrails"].clone())?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
        users: users
            .iter()
            .map(|u| {
                Ok(UserEntry {
                    name: text(&u["name"]),
                    email: u["email"].as_str().map(str::to_owned),
                    team: u["team_id"]
                        .as_str()
                        .and_then(|id| team_names.get(id).cloned()),
                    external_id: u["external_id"].as_str().map(str::to_owned),
                    models: serde_json::from_value(u["models"].clone())?,
                    limits: serde_json::from_value(u["limits"].clone())?,
                    budget: serde_json::from_value(u["budget"].clone())?,
                })
            })
            .collect::<anyhow::Result<_>>()?,
    })
}

/// `export`: the current configuration as a file `apply` takes back unchanged.
pub fn export(api: &Api) -> anyhow::Result<String> {
    let mut file = current(api)?.file;
    // Users the file cannot tell apart (same team and name, no email or
    // subject) cannot be managed as code: the first is kept, the rest named.
    let mut seen = std::collections::BTreeSet::new();
    file.users.retain(|user| {
        let first = seen.insert(user.identity());
        if !first {
            eprintln!(
                "warning: more than one user is {}; only the first is exported (give them an email to manage them as code)",
                user.identity()
            );
        }
        first
    });
    let header = "# Switchboard gateway configuration, from `switchboard export`.\n\
                  # Provider credentials are not exported: `apply` reads them from the\n\
                  # environment variables named by api_key_env / secret_key_env.\n";
    Ok(format!("{header}{}", yaml_serde::to_string(&file)?))
}

/// The variable an exported provider's credential is read from.
fn env_name(provider: &str, suffix: &str) -> String {
    let name: String = provider
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("SWITCHBOARD_{name}_{suffix}")
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_owned()
}
