//! The control plane's metrics catalogue: every metric's name, type and
//! help text (docs/observability.md lists them).

use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};

/// Registers the help text of every metric the control plane exports.
pub fn describe() {
    use Unit::{Count, Seconds};
    shared::metrics::describe_common();
    let counters = [
        (
            "switchboard_usage_records_ingested_total",
            "Usage records written (each once, whatever the retries).",
        ),
        (
            "switchboard_usage_records_duplicate_total",
            "Usage records received again and ignored (a data plane retried a batch).",
        ),
        (
            "switchboard_config_updates_sent_total",
            "Config updates streamed to data planes, by kind (snapshot, delta, counters).",
        ),
        (
            "switchboard_config_nacks_total",
            "Config versions a data plane reported it could not apply.",
        ),
        (
            "switchboard_budget_alerts_total",
            "Budget alerts raised, by kind (threshold, exhausted).",
        ),
        (
            "switchboard_spend_holders_counted_total",
            "Keys, users and teams whose spend the leader counted from new usage.",
        ),
        (
            "switchboard_jwks_fetch_failures_total",
            "Fetches of a JWT issuer's key set that failed.",
        ),
        (
            "switchboard_audit_failures_total",
            "Admin writes whose audit entry could not be written. Should stay 0.",
        ),
    ];
    for (name, help) in counters {
        describe_counter!(name, Count, help);
    }
    // Counters of rare events exist from the start, at 0: an alert on their
    // increase, or a panel, then has a series to read.
    for name in [
        "switchboard_usage_records_ingested_total",
        "switchboard_usage_records_duplicate_total",
        "switchboard_config_nacks_total",
        "switchboard_spend_holders_counted_total",
        "switchboard_jwks_fetch_failures_total",
        "switchboard_audit_failures_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    for kind in ["threshold", "exhausted"] {
        metrics::counter!("switchboard_budget_alerts_total", "kind" => kind).increment(0);
    }
    let gauges = [
        (
            "switchboard_dataplanes_connected",
            "Data planes with a config stream open to this replica.",
        ),
        (
            "switchboard_leader",
            "1 while this replica leads, by singleton job.",
        ),
        (
            "switchboard_config_version",
            "The newest config version this replica publishes.",
        ),
    ];
    for (name, help) in gauges {
        describe_gauge!(name, Count, help);
    }
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
    for (name, help) in histograms {
        describe_histogram!(name, Seconds, help);
    }
}
