-- Admin principals besides the bootstrap admin token: a role, a team for
-- team admins, and the SHA-256 of the token (the token itself is never stored).
CREATE TABLE admins (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    team_id TEXT REFERENCES teams (id),
    token_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
CREATE INDEX admins_team ON admins (team_id);
