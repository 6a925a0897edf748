//! The control plane's metrics catalogue: every metric's name, type and
//! help text (docs/observability.md lists them).

use metrics::Unit;

/// Registers the help text of every metric the control plane exports.
pub fn describe() {
    use Unit::Count;
    let counters = [
        (
            "switchboard_usage_records_ingested_total",
            Count,
            "Usage records written (each once, whatever the retries).",
        ),
        (
            "switchboard_usage_records_duplicate_total",
            Count,
            "Usage records received again and ignored (a data plane retried a batch).",
        ),
        (
            "switchboard_config_updates_sent_total",
            Count,
            "Config updates streamed to data planes, by kind (snapshot, delta, counters).",
        ),
        (
            "switchboard_config_nacks_total",
            Count,
            "Config versions a data plane reported it could not apply.",
        ),
        (
            "switchboard_budget_alerts_total",
            Count,
            "Budget alerts raised, by kind (threshold, exhausted).",
        ),
        (
            "switchboard_spend_holders_counted_total",
            Count,
            "Keys, users and teams whose spend the leader counted from new usage.",
        ),
        (
            "switchboard_jwks_fetch_failures_total",
            Count,
            "Fetches of a JWT issuer's key set that failed.",
        ),
        (
            "switchboard_audit_failures_total",
            Count,
            "Admin writes whose audit entry could not be written. Should stay 0.",
        ),
    ];
    let from_zero = [
        "switchboard_usage_records_ingested_total",
        "switchboard_usage_records_duplicate_total",
        "switchboard_config_nacks_total",
        "switchboard_spend_holders_counted_total",
        "switchboard_jwks_fetch_failures_total",
        "switchboard_audit_failures_total",
    ];
    for kind in ["threshold", "exhausted"] {
        metrics::counter!("switchboard_budget_alerts_total", "kind" => kind).increment(0);
    }
    let gauges = [
        (
            "switchboard_dataplanes_connected",
            Count,
            "Data planes with a config stream open to this replica.",
        ),
        (
            "switchboard_leader",
            Count,
            "1 while this replica leads, by singleton job.",
        ),
        (
            "switchboard_config_version",
            Count,
            "The newest config version this replica publishes.",
        ),
    ];
    let histograms = [
        (
            "switchboard_snapshot_build_seconds",
            "Time to build a full config snapshot.",
        ),
        (
            "switchboard_config_delta_build_seconds",
            "Time to build a config delta from the change log.",
        ),
        (
            "switchboard_spend_count_seconds",
            "Time of one round of spend counting by the leader.",
        ),
    ];
    shared::metrics::describe(&counters, &gauges, &histograms, &from_zero);
}
