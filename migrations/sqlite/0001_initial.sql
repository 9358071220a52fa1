-- Lintel initial schema (SQLite).
-- Seed data model plus OIDC, SCIM and signing-key tables.
-- uuid=BLOB, timestamps=TEXT, json and text[]=TEXT (JSON); app supplies ids/times.

-- Users and organizations

CREATE TABLE users (
    user_id                  BLOB    NOT NULL PRIMARY KEY,
    legacy_user_id           TEXT,
    email                    TEXT    NOT NULL,
    email_confirmed          BOOLEAN NOT NULL DEFAULT 0,
    username                 TEXT,
    first_name               TEXT,
    last_name                TEXT,
    picture_url              TEXT,
    properties               TEXT    NOT NULL DEFAULT '{}',
    has_password             BOOLEAN NOT NULL DEFAULT 0,
    update_password_required BOOLEAN NOT NULL DEFAULT 0,
    locked                   BOOLEAN NOT NULL DEFAULT 0,
    enabled                  BOOLEAN NOT NULL DEFAULT 1,
    mfa_enabled              BOOLEAN NOT NULL DEFAULT 0,
    can_create_orgs          BOOLEAN NOT NULL DEFAULT 0,
    created_at               INTEGER NOT NULL,
    last_active_at           INTEGER,
    -- Temporary lockout after repeated failures (identity::login); `locked` is the admin lock.
    failed_login_count       INTEGER NOT NULL DEFAULT 0,
    last_failed_login_at     TEXT,
    locked_until             TEXT
);
CREATE UNIQUE INDEX users_email_key ON users (lower(email));
CREATE UNIQUE INDEX users_username_key ON users (lower(username));

CREATE TABLE organizations (
    org_id            BLOB    NOT NULL PRIMARY KEY,
    org_name          TEXT    NOT NULL,
    url_safe_org_name TEXT    NOT NULL,
    org_metadata      TEXT    NOT NULL DEFAULT '{}',
    created_at        TEXT    NOT NULL,
    org_role_structure TEXT NOT NULL DEFAULT 'single_role'
        CHECK (org_role_structure IN ('single_role', 'multi_role')),
    mfa_required       BOOLEAN NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX organizations_url_safe_org_name_key ON organizations (url_safe_org_name);

CREATE TABLE org_domains (
    domain_id  BLOB    NOT NULL PRIMARY KEY,
    org_id     BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    domain     TEXT    NOT NULL,
    verified   BOOLEAN NOT NULL DEFAULT 0,
    created_at TEXT    NOT NULL
);
-- Any org may claim a domain; only one can have it verified, and only verified domains
-- route logins (home-realm discovery), so an unverified claim cannot squat a domain.
CREATE UNIQUE INDEX org_domains_domain_key ON org_domains (lower(domain)) WHERE verified;
CREATE UNIQUE INDEX org_domains_org_domain_key ON org_domains (org_id, lower(domain));
CREATE INDEX org_domains_org_id_idx ON org_domains (org_id);

CREATE TABLE org_login_methods (
    org_id  BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    method  TEXT    NOT NULL,
    enabled BOOLEAN NOT NULL DEFAULT 1,
    PRIMARY KEY (org_id, method)
);

CREATE TABLE user_organization_info (
    user_id                                BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    org_id                                 BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    user_role                              TEXT    NOT NULL,
    url_safe_org_name                      TEXT    NOT NULL,
    org_role_structure                     TEXT    NOT NULL DEFAULT 'single_role'
        CHECK (org_role_structure IN ('single_role', 'multi_role')),
    inherited_user_roles_plus_current_role TEXT    NOT NULL DEFAULT '[]',
    user_permissions                       TEXT    NOT NULL DEFAULT '[]',
    additional_roles                       TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (user_id, org_id)
);
CREATE INDEX user_organization_info_org_id_idx ON user_organization_info (org_id);

CREATE TABLE waitlist_signups (
    signup_id  BLOB    NOT NULL PRIMARY KEY,
    email      TEXT    NOT NULL,
    invited    BOOLEAN NOT NULL DEFAULT 0,
    invited_at TEXT,
    created_at TEXT    NOT NULL
);
CREATE UNIQUE INDEX waitlist_signups_email_key ON waitlist_signups (lower(email));

-- Single-use invitations mailed to a signup (256-bit secrets, stored as SHA-256). A newer
-- invitation marks the older unused ones used.
CREATE TABLE waitlist_invitations (
    invitation_id BLOB    NOT NULL PRIMARY KEY,
    signup_id     BLOB    NOT NULL REFERENCES waitlist_signups (signup_id) ON DELETE CASCADE,
    token_hash    TEXT    NOT NULL,
    created_at    TEXT    NOT NULL,
    expires_at    TEXT    NOT NULL,
    used_at       TEXT,
    -- The account created with it.
    user_id       BLOB    REFERENCES users (user_id) ON DELETE SET NULL
);
CREATE UNIQUE INDEX waitlist_invitations_token_hash_key ON waitlist_invitations (token_hash);
CREATE INDEX waitlist_invitations_signup_id_idx ON waitlist_invitations (signup_id);
CREATE INDEX waitlist_invitations_user_id_idx ON waitlist_invitations (user_id);

-- Roles and permissions

CREATE TABLE roles (
    role_id     BLOB    NOT NULL PRIMARY KEY,
    org_id      BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    name        TEXT    NOT NULL,
    description TEXT,
    created_at  TEXT    NOT NULL
);
CREATE UNIQUE INDEX roles_org_name_key ON roles (org_id, lower(name));
CREATE INDEX roles_org_id_idx ON roles (org_id);

CREATE TABLE permissions (
    permission_id BLOB    NOT NULL PRIMARY KEY,
    org_id        BLOB    REFERENCES organizations (org_id) ON DELETE CASCADE,
    name          TEXT    NOT NULL,
    description   TEXT,
    created_at    TEXT    NOT NULL
);
CREATE UNIQUE INDEX permissions_org_name_key ON permissions (ifnull(org_id, x''), lower(name));
CREATE INDEX permissions_org_id_idx ON permissions (org_id);

CREATE TABLE role_permissions (
    role_id       BLOB    NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
    permission_id BLOB    NOT NULL REFERENCES permissions (permission_id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, permission_id)
);
CREATE INDEX role_permissions_permission_id_idx ON role_permissions (permission_id);

CREATE TABLE role_inheritance (
    role_id        BLOB    NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
    parent_role_id BLOB    NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
    PRIMARY KEY (role_id, parent_role_id),
    CHECK (role_id <> parent_role_id)
);
CREATE INDEX role_inheritance_parent_role_id_idx ON role_inheritance (parent_role_id);

CREATE TABLE user_roles (
    user_id     BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    role_id     BLOB    NOT NULL REFERENCES roles (role_id) ON DELETE CASCADE,
    assigned_at TEXT    NOT NULL,
    PRIMARY KEY (user_id, role_id)
);
CREATE INDEX user_roles_role_id_idx ON user_roles (role_id);

-- Credentials and sessions

CREATE TABLE sessions (
    session_id    BLOB    NOT NULL PRIMARY KEY,
    user_id       BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    refresh_token TEXT,
    created_at    TEXT    NOT NULL,
    expires_at    TEXT    NOT NULL,
    revoked       BOOLEAN NOT NULL DEFAULT 0,
    ip_address    TEXT,
    user_agent    TEXT,
    org_id        BLOB REFERENCES organizations (org_id) ON DELETE CASCADE,
    auth_methods  TEXT NOT NULL DEFAULT '[]',
    auth_time     TEXT NOT NULL,
    last_seen_at  TEXT NOT NULL,
    -- Set while an admin impersonates the session's user (RFC 8693 `act`).
    impersonator_id BLOB REFERENCES users (user_id) ON DELETE CASCADE
);
CREATE INDEX sessions_org_id_idx ON sessions (org_id);
CREATE UNIQUE INDEX sessions_refresh_token_key ON sessions (refresh_token);
CREATE INDEX sessions_user_id_idx ON sessions (user_id);

CREATE TABLE mfa_devices (
    device_id  BLOB    NOT NULL PRIMARY KEY,
    user_id    BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    type       TEXT    NOT NULL,
    secret     TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    enabled    BOOLEAN NOT NULL DEFAULT 0,
    last_used  TEXT
);
CREATE INDEX mfa_devices_user_id_idx ON mfa_devices (user_id);
-- At most one enabled TOTP device per user.
CREATE UNIQUE INDEX mfa_devices_enabled_totp_key ON mfa_devices (user_id) WHERE enabled AND type = 'totp';

-- Single-use MFA recovery codes (80-bit secrets, stored as SHA-256).
CREATE TABLE mfa_recovery_codes (
    code_id    BLOB NOT NULL PRIMARY KEY,
    user_id    BLOB NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    code_hash  TEXT NOT NULL,
    created_at TEXT NOT NULL,
    used_at    TEXT
);
CREATE UNIQUE INDEX mfa_recovery_codes_code_key ON mfa_recovery_codes (user_id, code_hash);

CREATE TABLE email_verification_tokens (
    token      BLOB    NOT NULL PRIMARY KEY,
    user_id    BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT,
    token_hash TEXT NOT NULL,
    -- The address the link was mailed to: the token is void once the user's email changes.
    email      TEXT NOT NULL
);
CREATE UNIQUE INDEX email_verification_tokens_token_hash_key ON email_verification_tokens (token_hash);
CREATE INDEX email_verification_tokens_user_id_idx ON email_verification_tokens (user_id);

CREATE TABLE password_reset_tokens (
    token      BLOB    NOT NULL PRIMARY KEY,
    user_id    BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    created_at TEXT    NOT NULL,
    expires_at TEXT    NOT NULL,
    used_at    TEXT,
    token_hash TEXT NOT NULL,
    -- The address the link was mailed to: the token is void once the user's email changes.
    email      TEXT NOT NULL
);
CREATE UNIQUE INDEX password_reset_tokens_token_hash_key ON password_reset_tokens (token_hash);
CREATE INDEX password_reset_tokens_user_id_idx ON password_reset_tokens (user_id);

CREATE TABLE api_keys (
    api_key_id  BLOB    NOT NULL PRIMARY KEY,
    -- NULL for a service (super-admin) key not tied to a person.
    user_id     BLOB             REFERENCES users (user_id) ON DELETE CASCADE,
    key_hash    TEXT    NOT NULL,
    description TEXT,
    created_at  TEXT    NOT NULL,
    expires_at  TEXT,
    revoked     BOOLEAN NOT NULL DEFAULT 0,
    -- Public part of the key (`lk_<prefix>_<secret>`), for lookup; the secret is only hashed.
    key_prefix   TEXT NOT NULL,
    -- Scoped to one org (NULL: the owner's reach), with these permissions.
    org_id       BLOB REFERENCES organizations (org_id) ON DELETE CASCADE,
    permissions  TEXT NOT NULL DEFAULT '[]',
    -- Super-admin key (`lintel api-key create --admin`).
    is_admin     BOOLEAN NOT NULL DEFAULT 0,
    last_used_at TEXT
);
CREATE UNIQUE INDEX api_keys_key_prefix_key ON api_keys (key_prefix);
CREATE INDEX api_keys_org_id_idx ON api_keys (org_id);
CREATE UNIQUE INDEX api_keys_key_hash_key ON api_keys (key_hash);
CREATE INDEX api_keys_user_id_idx ON api_keys (user_id);

-- Federation (SAML / OIDC identity providers)

CREATE TABLE identity_providers (
    provider_id BLOB    NOT NULL PRIMARY KEY,
    org_id      BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    type        TEXT    NOT NULL CHECK (type IN ('saml', 'oidc')),
    name        TEXT    NOT NULL,
    config      TEXT    NOT NULL DEFAULT '{}',
    enabled     BOOLEAN NOT NULL DEFAULT 0,
    created_at  TEXT    NOT NULL
);
CREATE INDEX identity_providers_org_id_idx ON identity_providers (org_id);

-- SCIM

CREATE TABLE scim_clients (
    client_id     BLOB    NOT NULL PRIMARY KEY,
    org_id        BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    client_secret TEXT,
    created_at    TEXT    NOT NULL,
    expires_at    TEXT,
    enabled       BOOLEAN NOT NULL DEFAULT 1
);
CREATE INDEX scim_clients_org_id_idx ON scim_clients (org_id);

CREATE TABLE scim_mappings (
    mapping_id      BLOB    NOT NULL PRIMARY KEY,
    client_id       BLOB    NOT NULL REFERENCES scim_clients (client_id) ON DELETE CASCADE,
    local_attribute TEXT    NOT NULL,
    scim_attribute  TEXT    NOT NULL
);
CREATE UNIQUE INDEX scim_mappings_client_attr_key ON scim_mappings (client_id, lower(scim_attribute));

CREATE TABLE scim_tokens (
    token_id   BLOB    NOT NULL PRIMARY KEY,
    client_id  BLOB    NOT NULL REFERENCES scim_clients (client_id) ON DELETE CASCADE,
    token      TEXT    NOT NULL,
    expires_at TEXT
);
CREATE UNIQUE INDEX scim_tokens_token_key ON scim_tokens (token);
CREATE INDEX scim_tokens_client_id_idx ON scim_tokens (client_id);

CREATE TABLE scim_groups (
    group_id     BLOB    NOT NULL PRIMARY KEY,
    org_id       BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    display_name TEXT    NOT NULL,
    created_at   TEXT    NOT NULL,
    updated_at   TEXT    NOT NULL,
    version      INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX scim_groups_org_display_name_idx ON scim_groups (org_id, lower(display_name));

CREATE TABLE scim_group_members (
    group_id BLOB    NOT NULL REFERENCES scim_groups (group_id) ON DELETE CASCADE,
    user_id  BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    added_at TEXT    NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX scim_group_members_user_id_idx ON scim_group_members (user_id);

-- Version (ETag) and timestamps per SCIM resource.
CREATE TABLE scim_resource_meta (
    resource_type TEXT    NOT NULL CHECK (resource_type IN ('User', 'Group')),
    resource_id   BLOB    NOT NULL,
    org_id        BLOB    NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    version       INTEGER NOT NULL DEFAULT 1,
    created_at    TEXT    NOT NULL,
    last_modified TEXT    NOT NULL,
    PRIMARY KEY (resource_type, resource_id)
);
CREATE INDEX scim_resource_meta_org_type_modified_idx ON scim_resource_meta (org_id, resource_type, last_modified);

-- externalId as set by each SCIM client.
CREATE TABLE scim_external_ids (
    client_id     BLOB    NOT NULL REFERENCES scim_clients (client_id) ON DELETE CASCADE,
    resource_type TEXT    NOT NULL CHECK (resource_type IN ('User', 'Group')),
    resource_id   BLOB    NOT NULL,
    external_id   TEXT    NOT NULL,
    PRIMARY KEY (client_id, resource_type, resource_id)
);
CREATE UNIQUE INDEX scim_external_ids_external_id_key ON scim_external_ids (client_id, resource_type, external_id);

-- A user as provisioned into one org over SCIM: userName is unique per org and, as in
-- RFC 7643 §4.1.1 (caseExact false), compared case-insensitively.
CREATE TABLE scim_users (
    org_id    BLOB NOT NULL REFERENCES organizations (org_id) ON DELETE CASCADE,
    user_id   BLOB NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    user_name TEXT NOT NULL,
    PRIMARY KEY (org_id, user_id)
);
CREATE UNIQUE INDEX scim_users_user_name_key ON scim_users (org_id, lower(user_name));
CREATE INDEX scim_users_user_id_idx ON scim_users (user_id);

-- OIDC provider

CREATE TABLE oidc_clients (
    client_id                    TEXT    NOT NULL PRIMARY KEY,
    org_id                       BLOB    REFERENCES organizations (org_id) ON DELETE CASCADE,
    name                         TEXT    NOT NULL,
    secret_hash                  TEXT,
    redirect_uris                TEXT    NOT NULL DEFAULT '[]',
    post_logout_redirect_uris    TEXT    NOT NULL DEFAULT '[]',
    grant_types                  TEXT    NOT NULL DEFAULT '["authorization_code"]',
    scopes                       TEXT    NOT NULL DEFAULT '["openid"]',
    token_endpoint_auth_method   TEXT    NOT NULL DEFAULT 'client_secret_basic'
        CHECK (token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none')),
    id_token_signed_response_alg TEXT    NOT NULL DEFAULT 'ES256'
        CHECK (id_token_signed_response_alg IN ('ES256', 'RS256', 'EdDSA')),
    first_party                  BOOLEAN NOT NULL DEFAULT 0,
    jwks                         TEXT,
    enabled                      BOOLEAN NOT NULL DEFAULT 1,
    created_at                   TEXT    NOT NULL,
    CHECK (token_endpoint_auth_method IN ('none', 'private_key_jwt') OR secret_hash IS NOT NULL)
);
CREATE INDEX oidc_clients_org_id_idx ON oidc_clients (org_id);

CREATE TABLE oidc_authorization_codes (
    code_hash             TEXT    NOT NULL PRIMARY KEY,
    client_id             TEXT    NOT NULL REFERENCES oidc_clients (client_id) ON DELETE CASCADE,
    user_id               BLOB    NOT NULL REFERENCES users (user_id) ON DELETE CASCADE,
    session_id            BLOB    REFERENCES sessions (session_id) ON DELETE CASCADE,
    org_id                BLOB    REFERENCES organizations (org_id) ON DELETE CASCADE,
    redirect_uri          TEXT    NOT NULL,
    scope                 TEXT    NOT NULL,
    nonce                 TEXT,
    code_challenge        TEXT,
    code_challenge_method TEXT    CHECK (code_challenge_method IS NULL OR code_challenge_method = 'S256'),
    auth_time             TEXT    NOT NULL,
    acr                   TEXT,
    created_at            TEXT    NOT NULL,
    expires_at            TEXT    NOT NULL,
    used_at               TEXT
);
CREATE INDEX oidc_authorization_codes_expires_at_idx ON oidc_authorization_codes (expires_at);
CREATE INDEX oidc_authorization_codes_client_id_idx ON oidc_authorization_codes (client_id);
CREATE INDEX oidc_authorization_codes_user_id_idx ON oidc_authorization_codes (user_id);
CREATE INDEX oidc_authorization_codes_session_id_idx ON oidc_authorization_codes (session_id);
CREATE INDEX oidc_authorization_codes_org_id_idx ON oidc_authorization_codes (org_id);

-- active_from: signs from then; published_until: dropped from JWKS after.
CREATE TABLE signing_keys (
    kid             TEXT    NOT NULL PRIMARY KEY,
    alg             TEXT    NOT NULL CHECK (alg IN ('ES256', 'RS256', 'EdDSA')),
    public_jwk      TEXT    NOT NULL,
    created_at      TEXT    NOT NULL,
    active_from     TEXT    NOT NULL,
    retired_at      TEXT,
    published_until TEXT
);

-- Rate limiting

CREATE TABLE rate_limit_policies (
    policy_id   INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL,
    scope       TEXT    NOT NULL CHECK (scope IN ('ip', 'user', 'org', 'api_key', 'client')),
    limit_count INTEGER NOT NULL CHECK (limit_count > 0),
    window_sec  INTEGER NOT NULL CHECK (window_sec > 0),
    description TEXT,
    created_at  TEXT    NOT NULL
);
CREATE UNIQUE INDEX rate_limit_policies_name_key ON rate_limit_policies (name);

CREATE TABLE rate_limit_assignments (
    assignment_id BLOB    NOT NULL PRIMARY KEY,
    policy_id     INTEGER NOT NULL REFERENCES rate_limit_policies (policy_id) ON DELETE CASCADE,
    user_id       BLOB    REFERENCES users (user_id) ON DELETE CASCADE,
    org_id        BLOB    REFERENCES organizations (org_id) ON DELETE CASCADE,
    CHECK (user_id IS NOT NULL OR org_id IS NOT NULL)
);
CREATE UNIQUE INDEX rate_limit_assignments_key ON rate_limit_assignments (policy_id, ifnull(user_id, x''), ifnull(org_id, x''));
CREATE INDEX rate_limit_assignments_user_id_idx ON rate_limit_assignments (user_id);
CREATE INDEX rate_limit_assignments_org_id_idx ON rate_limit_assignments (org_id);

CREATE TABLE rate_limit_counters (
    counter_id   BLOB    NOT NULL PRIMARY KEY,
    policy_id    INTEGER NOT NULL REFERENCES rate_limit_policies (policy_id) ON DELETE CASCADE,
    user_id      BLOB    REFERENCES users (user_id) ON DELETE CASCADE,
    org_id       BLOB    REFERENCES organizations (org_id) ON DELETE CASCADE,
    window_start TEXT    NOT NULL,
    count        INTEGER NOT NULL DEFAULT 0 CHECK (count >= 0),
    last_updated TEXT    NOT NULL,
    -- Who is counted, in the policy's scope: the IP (IPv6 by /64), user, org, API key or
    -- client id. user_id / org_id repeat it for user / org scopes (so counters go with the
    -- user or org); being derived from it, they need no place in the unique key.
    subject      TEXT    NOT NULL,
    -- window_start + the policy's window_sec: the counter is dead after it (purge).
    window_end   TEXT    NOT NULL
);
-- The upsert's ON CONFLICT target: plain NOT NULL columns, identical on both backends
-- (an ifnull() expression index cannot be a conflict target on SQLite).
CREATE UNIQUE INDEX rate_limit_counters_key ON rate_limit_counters (policy_id, subject, window_start);
CREATE INDEX rate_limit_counters_window_end_idx ON rate_limit_counters (window_end);
CREATE INDEX rate_limit_counters_user_id_idx ON rate_limit_counters (user_id);
CREATE INDEX rate_limit_counters_org_id_idx ON rate_limit_counters (org_id);

CREATE TABLE api_key_rate_limits (
    api_key_id BLOB    NOT NULL REFERENCES api_keys (api_key_id) ON DELETE CASCADE,
    policy_id  INTEGER NOT NULL REFERENCES rate_limit_policies (policy_id) ON DELETE CASCADE,
    PRIMARY KEY (api_key_id, policy_id)
);
CREATE INDEX api_key_rate_limits_policy_id_idx ON api_key_rate_limits (policy_id);

-- History (rows outlive the user / org)

CREATE TABLE audit_logs (
    log_id      BLOB    NOT NULL PRIMARY KEY,
    user_id     BLOB    REFERENCES users (user_id) ON DELETE SET NULL,
    org_id      BLOB    REFERENCES organizations (org_id) ON DELETE SET NULL,
    action      TEXT    NOT NULL,
    object_type TEXT,
    object_id   TEXT,
    ip_address  TEXT,
    user_agent  TEXT,
    timestamp   TEXT    NOT NULL,
    details     TEXT    NOT NULL DEFAULT '{}',
    -- Who acted: 'system' (CLI, background), 'user', 'api_key' or 'scim_client', and its id.
    -- user_id is the person on whose behalf (the key's owner, the impersonated user).
    actor_type      TEXT NOT NULL DEFAULT 'system'
        CHECK (actor_type IN ('system', 'user', 'api_key', 'scim_client')),
    actor_id        TEXT,
    impersonator_id BLOB REFERENCES users (user_id) ON DELETE SET NULL
);
CREATE INDEX audit_logs_actor_timestamp_idx ON audit_logs (actor_type, actor_id, timestamp);
CREATE INDEX audit_logs_timestamp_idx ON audit_logs (timestamp);
CREATE INDEX audit_logs_org_id_timestamp_idx ON audit_logs (org_id, timestamp);
CREATE INDEX audit_logs_user_id_timestamp_idx ON audit_logs (user_id, timestamp);
CREATE INDEX audit_logs_action_timestamp_idx ON audit_logs (action, timestamp);

CREATE TABLE login_attempts (
    attempt_id BLOB    NOT NULL PRIMARY KEY,
    user_id    BLOB    REFERENCES users (user_id) ON DELETE SET NULL,
    org_id     BLOB    REFERENCES organizations (org_id) ON DELETE SET NULL,
    timestamp  TEXT    NOT NULL,
    success    BOOLEAN NOT NULL DEFAULT 0,
    ip_address TEXT,
    user_agent TEXT
);
CREATE INDEX login_attempts_user_id_timestamp_idx ON login_attempts (user_id, timestamp);
CREATE INDEX login_attempts_org_id_timestamp_idx ON login_attempts (org_id, timestamp);

-- Product metrics. `day` is the UTC date of event_timestamp, written at insert so reports
-- group by it with the same SQL on both backends. Aggregated events (tokens issued) are one
-- row per minute whose event_id is derived from (type, org, client, minute), so nodes merge
-- by upserting on the primary key and adding to event_count.
CREATE TABLE metrics_events (
    event_id        BLOB    NOT NULL PRIMARY KEY,
    user_id         BLOB    REFERENCES users (user_id) ON DELETE SET NULL,
    org_id          BLOB    REFERENCES organizations (org_id) ON DELETE SET NULL,
    event_type      TEXT    NOT NULL,
    event_timestamp TEXT    NOT NULL,
    metadata        TEXT    NOT NULL DEFAULT '{}',
    day             TEXT    NOT NULL,
    event_count     INTEGER NOT NULL DEFAULT 1 CHECK (event_count > 0)
);
CREATE INDEX metrics_events_org_id_event_timestamp_idx ON metrics_events (org_id, event_timestamp);
CREATE INDEX metrics_events_user_id_idx ON metrics_events (user_id);
CREATE INDEX metrics_events_type_day_idx ON metrics_events (event_type, day);
CREATE INDEX metrics_events_type_org_day_idx ON metrics_events (event_type, org_id, day);

CREATE TABLE impersonation_logs (
    log_id               BLOB    NOT NULL PRIMARY KEY,
    admin_user_id        BLOB    REFERENCES users (user_id) ON DELETE SET NULL,
    impersonated_user_id BLOB    REFERENCES users (user_id) ON DELETE SET NULL,
    started_at           TEXT    NOT NULL,
    ended_at             TEXT,
    ip_address           TEXT,
    user_agent           TEXT,
    -- The org the admin acted through, the session opened for the impersonation, and
    -- when it ends by itself (`impersonation.max_duration_secs` after the start).
    org_id               BLOB    REFERENCES organizations (org_id) ON DELETE SET NULL,
    session_id           BLOB    REFERENCES sessions (session_id) ON DELETE SET NULL,
    expires_at           TEXT    NOT NULL
);
CREATE INDEX impersonation_logs_admin_user_id_idx ON impersonation_logs (admin_user_id);
CREATE INDEX impersonation_logs_impersonated_user_id_idx ON impersonation_logs (impersonated_user_id);
CREATE INDEX impersonation_logs_org_id_idx ON impersonation_logs (org_id);
CREATE INDEX impersonation_logs_session_id_idx ON impersonation_logs (session_id);

-- Password hashes live apart from `users` so no user read can carry one by accident.
CREATE TABLE user_passwords (
    user_id       BLOB NOT NULL PRIMARY KEY REFERENCES users (user_id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
