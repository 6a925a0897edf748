-- Console sign-ins through the identity provider (OIDC): a session token's
-- hash, who it stands for, and until when.
CREATE TABLE admin_sessions (
    token_hash TEXT PRIMARY KEY,
    actor TEXT NOT NULL,
    role TEXT NOT NULL,
    team_id TEXT,
    expires_at BIGINT NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);
