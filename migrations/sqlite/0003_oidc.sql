-- OIDC provider: grants (one per authorization-code exchange or token exchange, each a
-- `sessions` row holding the current refresh-token hash) and the rotated refresh tokens
-- of each grant (reuse detection, grace window).

CREATE TABLE oidc_grants (
    session_id         BLOB NOT NULL PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
    client_id          TEXT NOT NULL REFERENCES oidc_clients (client_id) ON DELETE CASCADE,
    -- The browser (SSO) session the user authorized from, if any.
    browser_session_id BLOB REFERENCES sessions (session_id) ON DELETE SET NULL,
    -- The authorization code it was issued from: a second use of the code revokes it.
    code_hash          TEXT,
    scope              TEXT NOT NULL,
    acr                TEXT,
    created_at         TEXT NOT NULL
);
CREATE UNIQUE INDEX oidc_grants_code_hash_key ON oidc_grants (code_hash);
CREATE INDEX oidc_grants_client_id_idx ON oidc_grants (client_id);
CREATE INDEX oidc_grants_browser_session_id_idx ON oidc_grants (browser_session_id);

-- Refresh tokens a grant has rotated away from. `successor` is the token that replaced it,
-- encrypted with the data key, returned again to a concurrent refresh within the grace window.
CREATE TABLE oidc_rotated_refresh_tokens (
    token_hash TEXT NOT NULL PRIMARY KEY,
    session_id BLOB NOT NULL REFERENCES sessions (session_id) ON DELETE CASCADE,
    successor  TEXT NOT NULL,
    successor_hash TEXT NOT NULL,
    rotated_at TEXT NOT NULL
);
CREATE INDEX oidc_rotated_refresh_tokens_session_id_idx ON oidc_rotated_refresh_tokens (session_id);

-- Sessions whose bearer secret (`sessions.refresh_token`) is a browser cookie.
CREATE TABLE oidc_browser_sessions (
    session_id BLOB NOT NULL PRIMARY KEY REFERENCES sessions (session_id) ON DELETE CASCADE,
    created_at TEXT NOT NULL
);

ALTER TABLE oidc_clients ADD COLUMN updated_at TEXT;
-- OIDC Back-Channel Logout 1.0: where logout tokens are POSTed.
ALTER TABLE oidc_clients ADD COLUMN backchannel_logout_uri TEXT;

-- RFC 7523 client assertions already used (`jti`, hashed), kept until they expire, so an
-- assertion cannot be replayed.
CREATE TABLE oidc_client_assertions (
    jti_hash   TEXT NOT NULL PRIMARY KEY,
    client_id  TEXT NOT NULL REFERENCES oidc_clients (client_id) ON DELETE CASCADE,
    expires_at TEXT NOT NULL
);
CREATE INDEX oidc_client_assertions_expires_at_idx ON oidc_client_assertions (expires_at);
