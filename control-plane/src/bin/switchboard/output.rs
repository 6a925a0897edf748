//! Answers as a table for people, or as JSON or YAML for programs.

use comfy_table::presets::UTF8_HORIZONTAL_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Yaml,
}

pub fn print(value: &Value, format: Format, columns: &[&str]) -> anyhow::Result<()> {
    let text = match format {
        Format::Json => serde_json::to_string_pretty(value)? + "\n",
        Format::Yaml => yaml_serde::to_string(value)?,
        Format::Table => table(value, columns),
    };
    print!("{text}");
    Ok(())
}

/// Rows of objects as a table of `columns` (all fields when none are named);
/// a single object as one row.
pub fn table(value: &Value, columns: &[&str]) -> String {
    let rows: Vec<&Value> = match value {
        Value::Array(items) => items.iter().collect(),
        Value::Null => vec![],
        other => vec![other],
    };
    let columns: Vec<String> = if columns.is_empty() {
        rows.first()
            .and_then(|r| r.as_object())
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    } else {
        columns.iter().map(|c| (*c).to_owned()).collect()
    };
    let mut table = Table::new();
    table
        .load_style(UTF8_HORIZONTAL_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(columns.iter().map(|c| c.to_uppercase()));
    for row in rows {
        table.add_row(columns.iter().map(|c| cell(&row[c.as_str()])));
    }
    format!("{table}\n")
}

/// A value in one cell: text as is, lists joined, objects compact.
pub fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(|i| !i.is_object()) => {
            items.iter().map(cell).collect::<Vec<_>>().join(",")
        }
        Value::Array(items) if items.iter().all(|i| i.get("provider").is_some()) => items
            .iter()
            .map(|t| format!("{}/{}", cell(&t["provider"]), cell(&t["model"])))
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(map) if map.is_empty() => "-".into(),
        other => other.to_string(),
    }
}
