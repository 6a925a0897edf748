//! What `apply` changes: the file compared with the gateway, resource by
//! resource, as an ordered list of API calls. `diff` prints it; `apply` runs it.

use crate::client::{segment, Api};
use crate::gateway_file::{
    current, Current, GatewayFile, PriceEntry, ProviderEntry, TeamEntry, UserEntry,
};
use anyhow::{bail, Context};
use control_plane::model::Route;
use serde::Serialize;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::fmt::Write as _;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Create,
    Update,
    Delete,
}

/// One change, with what it would do shown field by field.
struct Change {
    action: Action,
    what: String,
    fields: Vec<String>,
    call: Call,
}

enum Call {
    /// The provider, and whether its credentials must be sent (read from the
    /// environment when the plan is applied, never when it is shown).
    CreateProvider(ProviderEntry),
    UpdateProvider(ProviderEntry, Credentials),
    DeleteProvider(String),
    PutRoute(Route, Action),
    DeleteRoute(String),
    PutPrice(PriceEntry),
    CreateTeam(TeamEntry),
    UpdateTeam(String, TeamEntry),
    DeleteTeam(String),
    CreateUser(UserEntry),
    UpdateUser(String, UserEntry),
    DeleteUser(String),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Credentials {
    /// Kept as stored.
    Kept,
    /// Every variable named must be set.
    Required,
    /// Those of the named variables that are set.
    IfSet,
}

pub struct Plan {
    changes: Vec<Change>,
    /// Things the file leaves out that `--prune` cannot remove.
    notes: Vec<String>,
}

impl Plan {
    pub fn make(
        api: &Api,
        desired: &GatewayFile,
        prune: bool,
        with_credentials: bool,
    ) -> anyhow::Result<Plan> {
        let Current {
            file: now,
            providers: raw_providers,
            teams: raw_teams,
            users: raw_users,
        } = current(api)?;
        let mut plan = Plan {
            changes: vec![],
            notes: vec![],
        };
        plan.providers(desired, &now, &raw_providers, with_credentials)?;
        plan.prices(desired, &now);
        plan.routes(desired, &now);
        plan.teams(desired, &now, &raw_teams);
        plan.users(desired, &now, &raw_users)?;
        if prune {
            plan.prune(desired, &now, &raw_teams, &raw_users);
        }
        Ok(plan)
    }

    fn providers(
        &mut self,
        desired: &GatewayFile,
        now: &GatewayFile,
        raw: &[Value],
        with_credentials: bool,
    ) -> anyhow::Result<()> {
        for want in &desired.providers {
            let want = want.clone().normalised();
            let what = format!("provider {}", want.name);
            match now.providers.iter().find(|p| p.name == want.name) {
                None => {
                    let fields = credential_sources(&want);
                    self.push(Action::Create, what, fields, Call::CreateProvider(want));
                }
                Some(have) => {
                    let stored = raw.iter().find(|p| p["name"] == want.name.as_str());
                    let lacks = |field: &str| stored.is_some_and(|p| p[field] == false);
                    let mut fields = field_changes(&strip_env(have), &strip_env(&want));
                    // A stored credential cannot be read back: it is set when the
                    // provider is created, when it has none, or when asked.
                    let missing = (want.api_key_env.is_some() && lacks("has_api_key"))
                        || (want.secret_key_env.is_some() && lacks("has_secret_key"));
                    let credentials = if missing {
                        Credentials::Required
                    } else if with_credentials {
                        Credentials::IfSet
                    } else {
                        Credentials::Kept
                    };
                    if credentials != Credentials::Kept {
                        fields.extend(credential_sources(&want));
                    }
                    if !fields.is_empty() {
                        let call = Call::UpdateProvider(want, credentials);
                        self.push(Action::Update, what, fields, call);
                    }
                }
            }
        }
        Ok(())
    }

    fn prices(&mut self, desired: &GatewayFile, now: &GatewayFile) {
        for want in &desired.prices {
            let want = want.clone().normalised();
            let what = format!("price {}", want.identity());
            match now.prices.iter().find(|p| p.identity() == want.identity()) {
                None => self.push(Action::Create, what, vec![], Call::PutPrice(want)),
                Some(have) => {
                    let fields = field_changes(have, &want);
                    if !fields.is_empty() {
                        self.push(Action::Update, what, fields, Call::PutPrice(want));
                    }
                }
            }
        }
    }

    /// Routes a route sends traffic to are written before it.
    fn routes(&mut self, desired: &GatewayFile, now: &GatewayFile) {
        let mut pending: Vec<(Action, Vec<String>, &Route)> = vec![];
        for want in &desired.routes {
            match now.routes.iter().find(|r| r.model == want.model) {
                None => pending.push((Action::Create, vec![], want)),
                Some(have) => {
                    let fields = field_changes(have, want);
                    if !fields.is_empty() {
                        pending.push((Action::Update, fields, want));
                    }
                }
            }
        }
        let mut ready: BTreeSet<String> = now.routes.iter().map(|r| r.model.clone()).collect();
        let new: BTreeSet<&str> = pending
            .iter()
            .filter(|(a, _, _)| *a == Action::Create)
            .map(|(_, _, r)| r.model.as_str())
            .collect();
        ready.retain(|m| !new.contains(m.as_str()));
        while !pending.is_empty() {
            let next = pending
                .iter()
                .position(|(_, _, r)| references(r).iter().all(|m| ready.contains(m)))
                // A cycle or a missing route: the control plane will say which.
                .unwrap_or(0);
            let (action, fields, route) = pending.remove(next);
            ready.insert(route.model.clone());
            let what = format!("route {}", route.model);
            self.push(action, what, fields, Call::PutRoute(route.clone(), action));
        }
    }

    fn teams(&mut self, desired: &GatewayFile, now: &GatewayFile, raw: &[Value]) {
        for want in &desired.teams {
            let what = format!("team {}", want.name);
            match now.teams.iter().find(|t| t.name == want.name) {
                None => self.push(Action::Create, what, vec![], Call::CreateTeam(want.clone())),
                Some(have) => {
                    let fields = field_changes(have, want);
                    if !fields.is_empty() {
                        let id = id_of(raw, |t| t["name"] == want.name.as_str());
                        self.push(
                            Action::Update,
                            what,
                            fields,
                            Call::UpdateTeam(id, want.clone()),
                        );
                    }
                }
            }
        }
    }

    fn users(
        &mut self,
        desired: &GatewayFile,
        now: &GatewayFile,
        raw: &[Value],
    ) -> anyhow::Result<()> {
        for (i, want) in desired.users.iter().enumerate() {
            let what = format!("user {}", want.identity());
            let Some(index) = now
                .users
                .iter()
                .position(|u| u.identity() == want.identity())
            else {
                self.push(Action::Create, what, vec![], Call::CreateUser(want.clone()));
                continue;
            };
            let have = &now.users[index];
            let fields = field_changes(have, want);
            if fields.is_empty() {
                continue;
            }
            for fixed in ["name", "team", "email", "external_id"] {
                if fields.iter().any(|f| f.starts_with(&format!("{fixed}:"))) {
                    bail!(
                        "users[{i}] ({}): {fixed}: cannot be changed in place; delete the user and apply again",
                        want.identity()
                    );
                }
            }
            let id = raw[index]["id"].as_str().unwrap_or_default().to_owned();
            self.push(
                Action::Update,
                what,
                fields,
                Call::UpdateUser(id, want.clone()),
            );
        }
        Ok(())
    }

    /// What the file no longer lists, dependents first.
    fn prune(
        &mut self,
        desired: &GatewayFile,
        now: &GatewayFile,
        teams: &[Value],
        users: &[Value],
    ) {
        for (index, have) in now.users.iter().enumerate() {
            if !desired
                .users
                .iter()
                .any(|u| u.identity() == have.identity())
            {
                let id = users[index]["id"].as_str().unwrap_or_default().to_owned();
                let what = format!("user {}", have.identity());
                self.push(Action::Delete, what, vec![], Call::DeleteUser(id));
            }
        }
        for have in &now.teams {
            if !desired.teams.iter().any(|t| t.name == have.name) {
                let id = id_of(teams, |t| t["name"] == have.name.as_str());
                self.push(
                    Action::Delete,
                    format!("team {}", have.name),
                    vec![],
                    Call::DeleteTeam(id),
                );
            }
        }
        let gone: Vec<&Route> = now
            .routes
            .iter()
            .filter(|r| !desired.routes.iter().any(|w| w.model == r.model))
            .collect();
        // A route others fall back to goes after them.
        let mut order = gone.clone();
        order.sort_by_key(|r| gone.iter().any(|o| references(o).contains(&r.model)));
        for route in order {
            let what = format!("route {}", route.model);
            self.push(
                Action::Delete,
                what,
                vec![],
                Call::DeleteRoute(route.model.clone()),
            );
        }
        for have in &now.providers {
            if !desired.providers.iter().any(|p| p.name == have.name) {
                let what = format!("provider {}", have.name);
                self.push(
                    Action::Delete,
                    what,
                    vec![],
                    Call::DeleteProvider(have.name.clone()),
                );
            }
        }
        for have in &now.prices {
            if !desired
                .prices
                .iter()
                .any(|p| p.identity() == have.identity())
            {
                self.notes.push(format!(
                    "price {} is not in the file; prices are not deleted (the API keeps every price)",
                    have.identity()
                ));
            }
        }
    }

    fn push(&mut self, action: Action, what: String, fields: Vec<String>, call: Call) {
        self.changes.push(Change {
            action,
            what,
            fields,
            call,
        });
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for change in &self.changes {
            let sign = match change.action {
                Action::Create => '+',
                Action::Update => '~',
                Action::Delete => '-',
            };
            let _ = writeln!(out, "{sign} {}", change.what);
            for field in &change.fields {
                let _ = writeln!(out, "    {field}");
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "! {note}");
        }
        if self.changes.is_empty() {
            out.push_str("No changes.\n");
        }
        out
    }

    pub fn print_to_stdout(&self) {
        print!("{}", self.render());
    }

    pub fn apply(self, api: &Api) -> anyhow::Result<()> {
        // Every credential is found before anything changes.
        for change in &self.changes {
            if let Call::CreateProvider(provider) | Call::UpdateProvider(provider, _) = &change.call
            {
                credentials(provider, credential_use(&change.call))?;
            }
        }
        let total = self.changes.len();
        for (done, change) in self.changes.into_iter().enumerate() {
            run(api, change.call).with_context(|| {
                format!(
                    "{} (after {done} of {total} changes were applied)",
                    change.what
                )
            })?;
        }
        if total > 0 {
            println!("Applied {total} change(s).");
        }
        Ok(())
    }
}

fn credential_use(call: &Call) -> Credentials {
    match call {
        Call::UpdateProvider(_, credentials) => *credentials,
        _ => Credentials::Required,
    }
}

fn run(api: &Api, call: Call) -> anyhow::Result<()> {
    let credentials_used = credential_use(&call);
    match call {
        Call::CreateProvider(provider) => {
            let mut body = provider_body(&provider);
            merge(&mut body, credentials(&provider, credentials_used)?);
            api.post("/providers", &body).map(drop)
        }
        Call::UpdateProvider(provider, _) => {
            let mut body = provider_body(&provider);
            merge(&mut body, credentials(&provider, credentials_used)?);
            api.put(&format!("/providers/{}", segment(&provider.name)), &body)
                .map(drop)
        }
        Call::DeleteProvider(name) => api
            .delete(&format!("/providers/{}", segment(&name)))
            .map(drop),
        Call::PutRoute(route, Action::Create) => api
            .post("/routes", &serde_json::to_value(&route)?)
            .map(drop),
        Call::PutRoute(route, _) => api
            .put(&route_path(&route.model), &serde_json::to_value(&route)?)
            .map(drop),
        Call::DeleteRoute(model) => api.delete(&route_path(&model)).map(drop),
        Call::PutPrice(price) => {
            let path = format!("/prices/{}", path_tail(&price.model));
            let mut body = serde_json::to_value(&price)?;
            if let Some(object) = body.as_object_mut() {
                object.remove("model");
            }
            api.put(&path, &body).map(drop)
        }
        Call::CreateTeam(team) => api.post("/teams", &serde_json::to_value(&team)?).map(drop),
        Call::UpdateTeam(id, team) => {
            let mut update = allowance(&team.models, &team.limits, &team.budget);
            update["guardrails"] = serde_json::to_value(&team.guardrails)?;
            api.patch(&format!("/teams/{}", segment(&id)), &update)
                .map(drop)
        }
        Call::DeleteTeam(id) => api.delete(&format!("/teams/{}", segment(&id))).map(drop),
        Call::CreateUser(user) => {
            let team_id = match &user.team {
                Some(team) => Some(crate::resource::team_id(api, team)?),
                None => None,
            };
            let body = json!({
                "name": user.name,
                "email": user.email,
                "team_id": team_id,
                "external_id": user.external_id,
                "models": user.models,
                "limits": user.limits,
                "budget": user.budget,
            });
            api.post("/users", &body).map(drop)
        }
        Call::UpdateUser(id, user) => api
            .patch(
                &format!("/users/{}", segment(&id)),
                &allowance(&user.models, &user.limits, &user.budget),
            )
            .map(drop),
        Call::DeleteUser(id) => api.delete(&format!("/users/{}", segment(&id))).map(drop),
    }
}

fn allowance(models: &[String], limits: &impl Serialize, budget: &impl Serialize) -> Value {
    json!({ "models": models, "limits": limits, "budget": budget })
}

fn route_path(model: &str) -> String {
    format!("/routes/{}", path_tail(model))
}

/// A name the API takes as the rest of the path (it may hold slashes).
fn path_tail(name: &str) -> String {
    name.split('/').map(segment).collect::<Vec<_>>().join("/")
}

/// The routes a route sends traffic to.
fn references(route: &Route) -> Vec<String> {
    let mut names: Vec<String> = route.fallbacks.clone();
    names.extend(route.split.iter().map(|s| s.model.clone()));
    names.extend(route.context_fallback.clone());
    names.extend(route.content_fallback.clone());
    names.retain(|n| *n != route.model);
    names
}

fn provider_body(provider: &ProviderEntry) -> Value {
    json!({
        "name": provider.name,
        "kind": provider.kind,
        "base_url": provider.base_url,
        "settings": provider.settings,
    })
}

fn credential_fields(provider: &ProviderEntry) -> impl Iterator<Item = (&'static str, &String)> {
    [
        ("api_key", &provider.api_key_env),
        ("secret_key", &provider.secret_key_env),
    ]
    .into_iter()
    .filter_map(|(field, variable)| variable.as_ref().map(|v| (field, v)))
}

/// Where a plan takes the provider's credentials from, as the plan shows it.
fn credential_sources(provider: &ProviderEntry) -> Vec<String> {
    credential_fields(provider)
        .map(|(field, variable)| format!("{field}: from ${variable}"))
        .collect()
}

/// The provider's credentials from the environment variables it names.
fn credentials(provider: &ProviderEntry, using: Credentials) -> anyhow::Result<Value> {
    let mut given = serde_json::Map::new();
    if using == Credentials::Kept {
        return Ok(Value::Object(given));
    }
    for (field, variable) in credential_fields(provider) {
        match std::env::var(variable) {
            Ok(value) if !value.is_empty() => {
                given.insert(field.into(), Value::String(value));
            }
            _ if using == Credentials::Required => bail!(
                "provider {}: {field}_env: environment variable {variable} is not set",
                provider.name
            ),
            _ => {}
        }
    }
    Ok(Value::Object(given))
}

fn strip_env(provider: &ProviderEntry) -> ProviderEntry {
    ProviderEntry {
        api_key_env: None,
        secret_key_env: None,
        ..provider.clone()
    }
}

fn merge(body: &mut Value, extra: Value) {
    if let (Some(body), Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
}

fn id_of(list: &[Value], matches: impl Fn(&Value) -> bool) -> String {
    list.iter()
        .find(|item| matches(item))
        .and_then(|item| item["id"].as_str())
        .unwrap_or_default()
        .to_owned()
}

/// `field: old -> new` for each top-level field that differs.
fn field_changes<T: Serialize>(have: &T, want: &T) -> Vec<String> {
    let (Ok(Value::Object(have)), Ok(Value::Object(want))) =
        (serde_json::to_value(have), serde_json::to_value(want))
    else {
        return vec![];
    };
    let keys: BTreeSet<&String> = have.keys().chain(want.keys()).collect();
    let shown = |v: Option<&Value>| v.map_or("(none)".to_owned(), Value::to_string);
    keys.into_iter()
        .filter(|k| have.get(*k) != want.get(*k))
        .map(|k| format!("{k}: {} -> {}", shown(have.get(k)), shown(want.get(k))))
        .collect()
}
