-- Enterprise SSO: identity providers' extra columns, pending federated sign-ins, used SAML
-- assertion IDs (replay memory) and the links between users and upstream identities.

-- The upstream OIDC client secret, encrypted with the data key (never in `config`).
ALTER TABLE identity_providers ADD COLUMN secret text;
ALTER TABLE identity_providers ADD COLUMN updated_at timestamptz;

-- A federated sign-in in flight: the SAML AuthnRequest ID or the upstream OIDC `state`.
-- `browser_hash` is the SHA-256 of a cookie set in the browser that started it; the sign-in
-- completes only in that browser, once.
CREATE TABLE federation_requests (
    request_id    text        NOT NULL PRIMARY KEY,
    provider_id   uuid        NOT NULL REFERENCES identity_providers (provider_id) ON DELETE CASCADE,
    browser_hash  text        NOT NULL,
    -- The OIDC authorization request to continue (form-encoded), '' when none.
    auth          text        NOT NULL DEFAULT '',
    -- Upstream OIDC: the nonce and the PKCE verifier (encrypted with the data key).
    nonce         text,
    pkce_verifier text,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz NOT NULL,
    -- SAML: the accepted assertion's identity (JSON), set at the ACS, read once at completion.
    result        jsonb,
    asserted_at   timestamptz,
    completed_at  timestamptz
);
CREATE INDEX federation_requests_expires_at_idx ON federation_requests (expires_at);

-- Assertion IDs already accepted, remembered until they expire (SAML profiles §4.1.4.5).
CREATE TABLE saml_used_assertions (
    provider_id  uuid        NOT NULL REFERENCES identity_providers (provider_id) ON DELETE CASCADE,
    assertion_id text        NOT NULL,
    expires_at   timestamptz NOT NULL,
    PRIMARY KEY (provider_id, assertion_id)
);
CREATE INDEX saml_used_assertions_expires_at_idx ON saml_used_assertions (expires_at);

-- A user's identity at an upstream provider: SAML NameID or OIDC `sub`.
CREATE TABLE federated_identities (
    provider_id   uuid        NOT NULL REFERENCES identity_providers (provider_id) ON DELETE CASCADE,
    subject       text        NOT NULL,
    user_id       uuid        NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    created_at    timestamptz NOT NULL,
    last_login_at timestamptz NOT NULL,
    PRIMARY KEY (provider_id, subject)
);
CREATE INDEX federated_identities_user_id_idx ON federated_identities (user_id);
