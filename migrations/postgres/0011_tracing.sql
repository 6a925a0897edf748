-- The W3C trace id of each request's trace: usage found from a trace, and a trace from usage.
ALTER TABLE usage_records ADD COLUMN trace_id TEXT;
CREATE INDEX usage_records_trace ON usage_records (trace_id);
