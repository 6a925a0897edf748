-- Scale-out: a change log from which config deltas are read, settings every
-- replica agrees on, spend counted incrementally and off the config path,
-- and the cluster's control planes and leader.

-- The entities each config version changed, written in the transaction that
-- changed them: the delta between two versions is read from here, so every
-- replica sends the same delta for the same range.
CREATE TABLE config_changes (
    version BIGINT NOT NULL,
    kind TEXT NOT NULL,
    entity TEXT NOT NULL,
    committed_at BIGINT NOT NULL,
    PRIMARY KEY (version, kind, entity)
);
-- Deltas start from this version or later; a data plane further behind gets
-- a full snapshot. Older changes are pruned by the leader.
ALTER TABLE config_version ADD COLUMN history_from BIGINT NOT NULL DEFAULT 0;
-- Version 1 was the empty configuration: it is 0 now, so that the first
-- state an admin sees (the bundled prices, or the first write) is version 1.
UPDATE config_version SET version = 0 WHERE version = 1;
UPDATE config_version SET history_from = version;

-- Settings that ship to data planes or that every replica must agree on (JSON).
CREATE TABLE cluster_settings (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    settings TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Usage summed per holder ("key/<id>", ...), UTC day (bucket: the day's first
-- millisecond; -1: all time) and currency, updated in the transaction that
-- ingests the records: spend is counted from these, not from the records.
CREATE TABLE usage_totals (
    holder TEXT NOT NULL,
    bucket BIGINT NOT NULL,
    currency TEXT NOT NULL,
    cost_micros BIGINT NOT NULL,
    -- Successful requests (status < 400) and their tokens.
    requests BIGINT NOT NULL,
    tokens BIGINT NOT NULL,
    PRIMARY KEY (holder, bucket, currency)
);
INSERT INTO usage_totals (holder, bucket, currency, cost_micros, requests, tokens)
SELECT holder, bucket, currency, SUM(cost_micros), SUM(ok), SUM(ok_tokens) FROM (
    SELECT 'key/' || key_id AS holder, created_at - (created_at % 86400000) AS bucket, currency,
           cost_micros, CASE WHEN status < 400 THEN 1 ELSE 0 END AS ok,
           CASE WHEN status < 400 THEN total_tokens ELSE 0 END AS ok_tokens
    FROM usage_records WHERE key_id <> ''
    UNION ALL
    SELECT 'key/' || key_id, -1, currency, cost_micros, CASE WHEN status < 400 THEN 1 ELSE 0 END,
           CASE WHEN status < 400 THEN total_tokens ELSE 0 END
    FROM usage_records WHERE key_id <> ''
    UNION ALL
    SELECT 'user/' || user_id, created_at - (created_at % 86400000), currency, cost_micros,
           CASE WHEN status < 400 THEN 1 ELSE 0 END, CASE WHEN status < 400 THEN total_tokens ELSE 0 END
    FROM usage_records WHERE user_id IS NOT NULL AND user_id <> ''
    UNION ALL
    SELECT 'user/' || user_id, -1, currency, cost_micros, CASE WHEN status < 400 THEN 1 ELSE 0 END,
           CASE WHEN status < 400 THEN total_tokens ELSE 0 END
    FROM usage_records WHERE user_id IS NOT NULL AND user_id <> ''
    UNION ALL
    SELECT 'team/' || team_id, created_at - (created_at % 86400000), currency, cost_micros,
           CASE WHEN status < 400 THEN 1 ELSE 0 END, CASE WHEN status < 400 THEN total_tokens ELSE 0 END
    FROM usage_records WHERE team_id IS NOT NULL AND team_id <> ''
    UNION ALL
    SELECT 'team/' || team_id, -1, currency, cost_micros, CASE WHEN status < 400 THEN 1 ELSE 0 END,
           CASE WHEN status < 400 THEN total_tokens ELSE 0 END
    FROM usage_records WHERE team_id IS NOT NULL AND team_id <> ''
) AS records
GROUP BY holder, bucket, currency;

-- Holders whose usage or allowance changed since their spend was counted.
CREATE TABLE spend_dirty (
    holder TEXT PRIMARY KEY
);
INSERT INTO spend_dirty (holder)
SELECT 'key/' || id FROM api_keys WHERE budget IS NOT NULL OR limits <> '{}'
UNION SELECT 'user/' || id FROM users WHERE budget IS NOT NULL OR limits <> '{}'
UNION SELECT 'team/' || id FROM teams WHERE budget IS NOT NULL OR limits <> '{}';

-- Every spend write takes the next revision: control planes send data planes
-- the counts written since the revision they last read.
ALTER TABLE spend ADD COLUMN revision BIGINT NOT NULL DEFAULT 0;
CREATE INDEX spend_by_revision ON spend (revision);
CREATE TABLE spend_revision (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    revision BIGINT NOT NULL
);
INSERT INTO spend_revision (id, revision) VALUES (1, 0);

-- Control-plane replicas, each refreshing its row while it runs.
CREATE TABLE control_planes (
    id TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

-- Who runs the singleton jobs, and its fencing token: a job's write commits
-- only while its leader's token is the newest.
CREATE TABLE leadership (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    since BIGINT NOT NULL
);
INSERT INTO leadership (id, holder, token, since) VALUES (1, '', 0, 0);

-- The control-plane replica a data plane's config stream is open on.
ALTER TABLE dataplanes ADD COLUMN control_plane TEXT NOT NULL DEFAULT '';
