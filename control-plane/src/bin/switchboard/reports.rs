//! Read-only reports: usage and cost, data planes, the audit log.

use crate::client::Api;
use crate::output::{self, cell, Format};
use anyhow::{bail, Context};
use serde_json::Value;
use std::time::{Duration, SystemTime};

#[derive(clap::Args)]
pub struct UsageArgs {
    /// Group by any of key, user, team, model, provider, variant, day, hour (comma-separated).
    #[arg(long, value_delimiter = ',')]
    by: Vec<String>,
    /// A duration back from now (7d, 12h, 30m) or an RFC 3339 time.
    #[arg(long, default_value = "7d")]
    since: String,
    /// The same, for the end of the range (default: now).
    #[arg(long)]
    until: Option<String>,
    /// The team's name or id.
    #[arg(long)]
    team: Option<String>,
    #[arg(long)]
    model: Option<String>,
    /// Comma-separated values instead of a table.
    #[arg(long)]
    csv: bool,
}

const USAGE_COLUMNS: &[&str] = &[
    "requests",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "total_tokens",
    "cost",
    "currency",
    "latency_ms_p50",
    "latency_ms_p99",
];

pub fn usage(api: &Api, args: &UsageArgs, format: Format) -> anyhow::Result<()> {
    let mut query = vec![("since", time_arg("since", &args.since)?)];
    if let Some(until) = &args.until {
        query.push(("until", time_arg("until", until)?));
    }
    if let Some(team) = &args.team {
        query.push(("team_id", crate::resource::team_id(api, team)?));
    }
    if let Some(model) = &args.model {
        query.push(("model", model.clone()));
    }
    // Rows even without a grouping: one row of totals per currency is what a table shows.
    let groups = if args.by.is_empty() {
        "model".to_owned()
    } else {
        args.by.join(",")
    };
    query.push(("group_by", groups.clone()));
    let answer = api.get_query("/usage", &query)?;
    let rows = answer["rows"].clone();
    let mut columns: Vec<&str> = groups.split(',').map(|g| group_field(g.trim())).collect();
    columns.extend_from_slice(USAGE_COLUMNS);
    if args.csv {
        return write_csv(&rows, &columns);
    }
    output::print(&rows, format, &columns)
}

/// The answer's field for a grouping.
fn group_field(group: &str) -> &str {
    match group {
        "key" => "key_id",
        "user" => "user_id",
        "team" => "team_id",
        other => other,
    }
}

fn write_csv(rows: &Value, columns: &[&str]) -> anyhow::Result<()> {
    let mut writer = csv::Writer::from_writer(std::io::stdout());
    writer.write_record(columns)?;
    for row in rows.as_array().map(Vec::as_slice).unwrap_or_default() {
        writer.write_record(columns.iter().map(|c| match &row[*c] {
            Value::Null => String::new(),
            other => cell(other),
        }))?;
    }
    writer.flush()?;
    Ok(())
}

/// `7d` back from now, or an RFC 3339 time as given.
fn time_arg(field: &str, text: &str) -> anyhow::Result<String> {
    if text.contains('T') {
        return Ok(text.to_owned());
    }
    let back: Duration = humantime::parse_duration(text).with_context(|| {
        format!("--{field}: expected a duration such as 7d or 12h, or an RFC 3339 time")
    })?;
    let Some(at) = SystemTime::now().checked_sub(back) else {
        bail!("--{field}: too far back");
    };
    Ok(humantime::format_rfc3339_seconds(at).to_string())
}

pub fn dataplanes(api: &Api, format: Format) -> anyhow::Result<()> {
    let mut answer = api.get("/dataplanes")?;
    let current = answer["current_version"].as_i64().unwrap_or(0);
    let mut planes = answer["data_planes"].take();
    for plane in planes.as_array_mut().into_iter().flatten() {
        let lag = current - plane["applied_version"].as_i64().unwrap_or(0);
        plane["lag"] = Value::from(lag);
    }
    if !matches!(format, Format::Table) {
        return output::print(&planes, format, &[]);
    }
    println!("config version {current}");
    output::print(
        &planes,
        format,
        &[
            "id",
            "hostname",
            "software_version",
            "applied_version",
            "lag",
            "connected",
            "last_seen",
            "control_plane",
            "last_error",
        ],
    )
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// A duration back from now (1h, 7d) or an RFC 3339 time.
    #[arg(long, default_value = "24h")]
    since: String,
    /// Only this resource, such as `key/<id>` or `route/gpt-4o`.
    #[arg(long)]
    resource: Option<String>,
    /// Only this actor, such as `admin` or `admin/<id>`.
    #[arg(long)]
    actor: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: u32,
}

pub fn audit(api: &Api, args: &AuditArgs, format: Format) -> anyhow::Result<()> {
    let mut query = vec![
        ("since", time_arg("since", &args.since)?),
        ("limit", args.limit.to_string()),
    ];
    if let Some(resource) = &args.resource {
        query.push(("resource", resource.clone()));
    }
    if let Some(actor) = &args.actor {
        query.push(("actor", actor.clone()));
    }
    let answer = api.get_query("/audit", &query)?;
    output::print(
        &answer["rows"],
        format,
        &["at", "actor", "action", "resource", "request_id"],
    )
}
