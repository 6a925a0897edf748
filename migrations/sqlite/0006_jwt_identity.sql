-- JWT callers: users are found by the identity provider's subject, and users
-- and teams carry model allow-lists (JSON arrays; empty means all) that apply
-- to their keys and tokens alike.
ALTER TABLE users ADD COLUMN external_id TEXT;
ALTER TABLE users ADD COLUMN models TEXT NOT NULL DEFAULT '[]';
ALTER TABLE teams ADD COLUMN models TEXT NOT NULL DEFAULT '[]';
CREATE UNIQUE INDEX users_external_id ON users (external_id);

CREATE TABLE jwt_issuers (
    name TEXT PRIMARY KEY,
    -- The `iss` claim; one issuer configuration per value.
    issuer TEXT NOT NULL UNIQUE,
    audiences TEXT NOT NULL,
    algorithms TEXT NOT NULL,
    jwks_url TEXT,
    public_keys_pem TEXT NOT NULL DEFAULT '[]',
    claims TEXT NOT NULL,
    auto_create_users BIGINT NOT NULL DEFAULT 0,
    leeway_seconds BIGINT NOT NULL,
    -- The last key set fetched from jwks_url, as fetched; shipped in snapshots.
    jwks TEXT,
    jwks_fetched_at BIGINT,
    jwks_error TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Requests made with a JWT: no key (key_id is empty), the issuer by name.
ALTER TABLE usage_records ADD COLUMN jwt_issuer TEXT;
