-- A streamed request's time to first token (ms from arrival), for the console's overview.
ALTER TABLE usage_records ADD COLUMN ttft_ms BIGINT;
