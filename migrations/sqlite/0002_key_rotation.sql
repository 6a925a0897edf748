-- A rotated key's previous secret keeps working until previous_valid_until
-- (Unix ms), so clients can move to the new one without an outage.
ALTER TABLE api_keys ADD COLUMN previous_key_hash TEXT;
ALTER TABLE api_keys ADD COLUMN previous_valid_until BIGINT;
