-- Requests answered from the response cache, and what each saved.
ALTER TABLE usage_records ADD COLUMN cache_hit BIGINT NOT NULL DEFAULT 0;
ALTER TABLE usage_records ADD COLUMN cost_saved_micros BIGINT NOT NULL DEFAULT 0;
