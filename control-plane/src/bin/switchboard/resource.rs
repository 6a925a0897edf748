//! The resources the CLI manages by name: their API paths and table columns.

use crate::client::{segment, Api};
use anyhow::bail;
use serde_json::{json, Value};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Resource {
    #[value(alias = "provider")]
    Providers,
    #[value(alias = "route")]
    Routes,
    #[value(alias = "team")]
    Teams,
    #[value(alias = "user")]
    Users,
    #[value(alias = "key")]
    Keys,
    #[value(alias = "price")]
    Prices,
    #[value(name = "jwt-issuers", alias = "jwt-issuer")]
    JwtIssuers,
    #[value(alias = "admin")]
    Admins,
}

pub const CREATED_KEY_COLUMNS: &[&str] = &["id", "name", "team_id", "models", "key"];

impl Resource {
    pub fn path(self) -> &'static str {
        match self {
            Resource::Providers => "/providers",
            Resource::Routes => "/routes",
            Resource::Teams => "/teams",
            Resource::Users => "/users",
            Resource::Keys => "/keys",
            Resource::Prices => "/prices",
            Resource::JwtIssuers => "/jwt-issuers",
            Resource::Admins => "/admins",
        }
    }

    pub fn singular(self) -> &'static str {
        match self {
            Resource::Providers => "provider",
            Resource::Routes => "route",
            Resource::Teams => "team",
            Resource::Users => "user",
            Resource::Keys => "key",
            Resource::Prices => "price",
            Resource::JwtIssuers => "JWT issuer",
            Resource::Admins => "admin",
        }
    }

    /// The path of one resource. Teams may be named by name as well as id.
    pub fn item_path(self, api: &Api, id: &str) -> anyhow::Result<String> {
        let id = match self {
            Resource::Teams => team_id(api, id)?,
            Resource::Prices => bail!("prices are listed together: `switchboard get prices`"),
            _ => id.to_owned(),
        };
        // Route and price names may hold slashes: the API takes the rest of the path.
        let tail = match self {
            Resource::Routes => id.split('/').map(segment).collect::<Vec<_>>().join("/"),
            _ => segment(&id),
        };
        Ok(format!("{}/{tail}", self.path()))
    }

    pub fn columns(self) -> &'static [&'static str] {
        match self {
            Resource::Providers => &["name", "kind", "base_url", "has_api_key", "updated_at"],
            Resource::Routes => &["model", "strategy", "targets", "fallbacks", "aliases"],
            Resource::Teams => &["id", "name", "models", "limits", "budget", "spend"],
            Resource::Users => &[
                "id", "name", "email", "team_id", "models", "limits", "budget",
            ],
            Resource::Keys => &[
                "id",
                "name",
                "prefix",
                "team_id",
                "user_id",
                "models",
                "revoked",
                "expires_at",
            ],
            Resource::Prices => &[
                "model",
                "provider",
                "input_per_million",
                "output_per_million",
                "cached_input_per_million",
                "cache_write_per_million",
                "currency",
            ],
            Resource::JwtIssuers => &["name", "issuer", "audiences", "algorithms", "jwks_error"],
            Resource::Admins => &["id", "name", "role", "team_id", "created_at"],
        }
    }

    /// A key's secret is in this answer only: say so where it cannot be missed.
    pub fn warn_if_secret(self, answer: &Value) {
        if answer.get("key").and_then(Value::as_str).is_some()
            || answer.get("token").and_then(Value::as_str).is_some()
        {
            eprintln!("The secret below is shown only now: store it somewhere safe.");
        }
    }
}

/// A team, given its id or its name.
pub fn team(api: &Api, id_or_name: &str) -> anyhow::Result<Value> {
    let teams = api.get("/teams")?;
    let teams = teams.as_array().map(Vec::as_slice).unwrap_or_default();
    match teams
        .iter()
        .find(|t| t["id"] == id_or_name)
        .or_else(|| teams.iter().find(|t| t["name"] == id_or_name))
    {
        Some(team) => Ok(team.clone()),
        None => bail!("team {id_or_name:?} not found (by id or name)"),
    }
}

pub fn team_id(api: &Api, id_or_name: &str) -> anyhow::Result<String> {
    Ok(team(api, id_or_name)?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

#[derive(clap::Args)]
pub struct NewKeyArgs {
    #[arg(long)]
    name: String,
    /// The team's name or id.
    #[arg(long)]
    team: Option<String>,
    #[arg(long)]
    user: Option<String>,
    /// Public model names the key may call, comma-separated (default: all its team may call).
    #[arg(long, value_delimiter = ',')]
    models: Vec<String>,
    /// RFC 3339.
    #[arg(long)]
    expires_at: Option<String>,
    /// Requests per minute.
    #[arg(long)]
    rpm: Option<u64>,
    /// Tokens per minute.
    #[arg(long)]
    tpm: Option<u64>,
    /// A budget in USD per month, such as 25.00.
    #[arg(long)]
    monthly_budget: Option<String>,
}

impl NewKeyArgs {
    pub fn body(&self, api: &Api) -> anyhow::Result<Value> {
        let team = match &self.team {
            Some(name) => Some(team(api, name)?),
            None => None,
        };
        let team_id = team.as_ref().map(|t| t["id"].clone());
        let models = match (&team, self.models.is_empty()) {
            (Some(team), true) => team["models"].clone(),
            _ => json!(self.models),
        };
        let mut limits = serde_json::Map::new();
        if let Some(rpm) = self.rpm {
            limits.insert("rpm".into(), json!(rpm));
        }
        if let Some(tpm) = self.tpm {
            limits.insert("tpm".into(), json!(tpm));
        }
        let budget = self
            .monthly_budget
            .as_ref()
            .map(|amount| json!({"amount": amount, "period": "monthly"}));
        Ok(json!({
            "name": self.name,
            "team_id": team_id,
            "user_id": self.user,
            "models": models,
            "expires_at": self.expires_at,
            "limits": limits,
            "budget": budget,
        }))
    }
}
