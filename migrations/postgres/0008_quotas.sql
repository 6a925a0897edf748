-- Cost control: prices, limits and budgets on keys, users and teams, the
-- cost of every request, spend as last counted, and budget alerts.

-- Prices per million tokens of an upstream model, in micro-units; provider ''
-- prices the model for every provider without a row of its own.
CREATE TABLE prices (
    model TEXT NOT NULL,
    provider TEXT NOT NULL DEFAULT '',
    input_micros BIGINT NOT NULL,
    output_micros BIGINT NOT NULL,
    cached_input_micros BIGINT NOT NULL,
    currency TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (model, provider)
);

-- Limits as JSON objects (docs/quotas.md); a budget as JSON, or NULL for none.
ALTER TABLE api_keys ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE api_keys ADD COLUMN budget TEXT;
ALTER TABLE users ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE users ADD COLUMN budget TEXT;
ALTER TABLE teams ADD COLUMN limits TEXT NOT NULL DEFAULT '{}';
ALTER TABLE teams ADD COLUMN budget TEXT;

ALTER TABLE usage_records ADD COLUMN cost_micros BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN currency TEXT NOT NULL DEFAULT 'USD';
ALTER TABLE usage_records ADD COLUMN estimated BIGINT NOT NULL DEFAULT 0;
CREATE INDEX usage_records_user ON usage_records (user_id, created_at);
CREATE INDEX usage_records_team ON usage_records (team_id, created_at);

-- What a holder ("key/<id>", ...) with a budget or quota has used, as the
-- control plane last counted it from usage records; shipped in snapshots.
CREATE TABLE spend (
    holder TEXT PRIMARY KEY,
    period_start BIGINT NOT NULL,
    spent_micros BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One row per holder, period and kind (threshold, exhausted): an alert fires
-- once per period however many control planes see it.
CREATE TABLE budget_alerts (
    holder TEXT NOT NULL,
    period_start BIGINT NOT NULL,
    kind TEXT NOT NULL,
    at BIGINT NOT NULL,
    spent_micros BIGINT NOT NULL,
    amount_micros BIGINT NOT NULL,
    currency TEXT NOT NULL,
    -- The webhook's answer: NULL until called, then 'delivered' or the error.
    outcome TEXT,
    PRIMARY KEY (holder, period_start, kind)
);
