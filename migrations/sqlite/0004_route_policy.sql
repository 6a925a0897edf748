-- Routing policy: the route's strategy, aliases, fallbacks, retry, timeouts
-- and split as one JSON document; per-target tier and capacity; and the A/B
-- variant a request was assigned, on its usage record.
ALTER TABLE routes ADD COLUMN policy TEXT NOT NULL DEFAULT '{}';
ALTER TABLE route_targets ADD COLUMN priority BIGINT NOT NULL DEFAULT 0;
ALTER TABLE route_targets ADD COLUMN rpm BIGINT;
ALTER TABLE route_targets ADD COLUMN tpm BIGINT;
ALTER TABLE usage_records ADD COLUMN variant TEXT;
