-- Anthropic prices prompt tokens written to its cache apart from the rest.
ALTER TABLE prices ADD COLUMN cache_write_input_micros BIGINT NOT NULL DEFAULT 0;
UPDATE prices SET cache_write_input_micros = input_micros;
ALTER TABLE usage_records ADD COLUMN cache_write_tokens BIGINT NOT NULL DEFAULT 0;
