-- Enterprise SSO: identity providers' extra columns, pending federated sign-ins, used SAML
-- assertion IDs (replay memory) and the links between users and upstream identities.

-- The upstream OIDC client secret, encrypted with the data key (never in `config`).
ALTER TABLE identity_providers ADD COLUMN secret TEXT;
ALTER TABLE identity_providers ADD COLUMN updated_at TEXT;

-- A federated sign-in in flight: the SAML AuthnRequest ID or the upstream OIDC `state`.
-- `browser_hash` is the SHA-256 of a cookie set in the browser that started it; the sign-in
-- completes only in that browser, once.
CREATE TABLE federation_requests (
    request_id    TEXT NOT NULL PRIMARY KEY,
    provider_id   BLOB NOT NULL REFERENCES identity_providers (provider_id) ON DELETE CASCADE,
    browser_hash  TEXT NOT NULL,
    -- The OIDC authorization request to continue (form-encoded), '' when none.
    auth          TEXT NOT NULL DEFAULT '',
    -- Upstream OIDC: the nonce and the PKCE verifier (encrypted with the data key).
    nonce         TEXT,
    pkce_verifier TEXT,
    created_at    TEXT NOT NULL,
    expires_at    TEXT NOT NULL,
    -- SAML: the accepted assertion's identity (JSON), set at the ACS, read once at completion.
    result        TEXT,
    asserted_at   TEXT,
    completed_at  TEXT
);
CREATE INDEX federation_requests_expires_at_idx ON federation_requests (expires_at);

-- Assertion IDs already accepted, remembered until they expire (SAML profiles §4.1.4.5).
CREATE TABLE saml_used_assertions (
    provider_id  BLOB NOT NULL REFERENCES identity_providers (provider_id) ON DELETE CASCADE,
    assertion_id TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    PRIMARY KEY (provider_id, assertion_id)
);
CREATE INDEX saml_used_assertions_expires_at_idx ON saml_used_assertions (expires_at);

-- A user's identity at an upstream provider: SAML NameID or OIDC `sub`.
CREATE TABLE federated_identities (
    provider_id   BLOB NOT NULL REFERENCES identity_providers (provider_id) ON DELETE CASCADE,
    subject       TEXT NOT NULL,
    user_id       BLOB NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    created_at    TEXT NOT NULL,
    last_login_at TEXT NOT NULL,
    PRIMARY KEY (provider_id, subject)
);
CREATE INDEX federated_identities_user_id_idx ON federated_identities (user_id);
