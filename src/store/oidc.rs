//! The OIDC provider's tables: `oidc_clients`, `oidc_authorization_codes`, `oidc_grants`,
//! `oidc_rotated_refresh_tokens`, `oidc_browser_sessions`. Secrets are stored hashed.
use super::{Access, Json, StoreError, TextList, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct OidcClient {
    pub client_id: String,
    pub org_id: Option<Uuid>,
    pub name: String,
    #[serde(skip)]
    pub secret_hash: Option<String>,
    pub redirect_uris: TextList,
    pub post_logout_redirect_uris: TextList,
    pub grant_types: TextList,
    pub scopes: TextList,
    pub token_endpoint_auth_method: String,
    pub id_token_signed_response_alg: String,
    pub first_party: bool,
    pub jwks: Option<Json<serde_json::Value>>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    /// OIDC Back-Channel Logout 1.0 endpoint of the client, if any.
    pub backchannel_logout_uri: Option<String>,
}

const CLIENT_COLUMNS: &str = "client_id, org_id, name, secret_hash, redirect_uris, \
    post_logout_redirect_uris, grant_types, scopes, token_endpoint_auth_method, \
    id_token_signed_response_alg, first_party, jwks, enabled, created_at, updated_at, \
    backchannel_logout_uri";

pub async fn insert_client(a: &mut impl Access, k: &OidcClient) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO oidc_clients ({CLIENT_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&k.client_id)
        .bind(k.org_id)
        .bind(&k.name)
        .bind(&k.secret_hash)
        .bind(&k.redirect_uris)
        .bind(&k.post_logout_redirect_uris)
        .bind(&k.grant_types)
        .bind(&k.scopes)
        .bind(&k.token_endpoint_auth_method)
        .bind(&k.id_token_signed_response_alg)
        .bind(k.first_party)
        .bind(&k.jwks)
        .bind(k.enabled)
        .bind(k.created_at)
        .bind(k.updated_at)
        .bind(&k.backchannel_logout_uri)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// Replaces every mutable column of the client (not its id, org or creation time).
pub async fn update_client(a: &mut impl Access, k: &OidcClient) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE oidc_clients SET name = $2, secret_hash = $3, redirect_uris = $4,
             post_logout_redirect_uris = $5, grant_types = $6, scopes = $7,
             token_endpoint_auth_method = $8, id_token_signed_response_alg = $9,
             first_party = $10, jwks = $11, enabled = $12, updated_at = $13,
             backchannel_logout_uri = $14
         WHERE client_id = $1"
    )
    .bind(&k.client_id)
    .bind(&k.name)
    .bind(&k.secret_hash)
    .bind(&k.redirect_uris)
    .bind(&k.post_logout_redirect_uris)
    .bind(&k.grant_types)
    .bind(&k.scopes)
    .bind(&k.token_endpoint_auth_method)
    .bind(&k.id_token_signed_response_alg)
    .bind(k.first_party)
    .bind(&k.jwks)
    .bind(k.enabled)
    .bind(k.updated_at)
    .bind(&k.backchannel_logout_uri)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn get_client(
    a: &mut impl Access,
    client_id: &str,
) -> Result<Option<OidcClient>, StoreError> {
    let sql = format!("SELECT {CLIENT_COLUMNS} FROM oidc_clients WHERE client_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Clients in `client_id` order after `after`, optionally of one org.
pub async fn list_clients(
    a: &mut impl Access,
    org_id: Option<Uuid>,
    after: Option<&str>,
    limit: u32,
) -> Result<Vec<OidcClient>, StoreError> {
    let sql = format!(
        "SELECT {CLIENT_COLUMNS} FROM oidc_clients
         WHERE ($1 IS NULL OR org_id = $1) AND ($2 IS NULL OR client_id > $2)
         ORDER BY client_id LIMIT $3"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

pub async fn delete_client(a: &mut impl Access, client_id: &str) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM oidc_clients WHERE client_id = $1"
    )
    .bind(client_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

// ---------------------------------------------------------------------------------------
// Authorization codes

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AuthorizationCode {
    pub code_hash: String,
    pub client_id: String,
    pub user_id: Uuid,
    /// The browser session the code was issued from.
    pub session_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub redirect_uri: String,
    pub scope: String,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub auth_time: DateTime<Utc>,
    pub acr: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

const CODE_COLUMNS: &str = "code_hash, client_id, user_id, session_id, org_id, redirect_uri, \
    scope, nonce, code_challenge, code_challenge_method, auth_time, acr, created_at, \
    expires_at, used_at";

pub async fn insert_code(a: &mut impl Access, k: &AuthorizationCode) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO oidc_authorization_codes ({CODE_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&k.code_hash)
        .bind(&k.client_id)
        .bind(k.user_id)
        .bind(k.session_id)
        .bind(k.org_id)
        .bind(&k.redirect_uri)
        .bind(&k.scope)
        .bind(&k.nonce)
        .bind(&k.code_challenge)
        .bind(&k.code_challenge_method)
        .bind(k.auth_time)
        .bind(&k.acr)
        .bind(k.created_at)
        .bind(k.expires_at)
        .bind(k.used_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get_code(
    a: &mut impl Access,
    code_hash: &str,
) -> Result<Option<AuthorizationCode>, StoreError> {
    let sql = format!("SELECT {CODE_COLUMNS} FROM oidc_authorization_codes WHERE code_hash = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(code_hash)
        .fetch_optional(&mut *c)
        .await?))
}

/// Marks the code used, only if it was not (one of two concurrent exchanges wins).
pub async fn use_code(
    a: &mut impl Access,
    code_hash: &str,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| {
        sqlx::query(
        "UPDATE oidc_authorization_codes SET used_at = $2 WHERE code_hash = $1 AND used_at IS NULL"
    )
    .bind(code_hash)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected()
    });
    Ok(n == 1)
}

/// Deletes codes that expired before `before`; returns how many.
pub async fn purge_codes(a: &mut impl Access, before: DateTime<Utc>) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM oidc_authorization_codes WHERE expires_at < $1"
    )
    .bind(before)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

// ---------------------------------------------------------------------------------------
// Grants

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Grant {
    pub session_id: Uuid,
    pub client_id: String,
    pub browser_session_id: Option<Uuid>,
    pub code_hash: Option<String>,
    pub scope: String,
    pub acr: Option<String>,
    pub created_at: DateTime<Utc>,
}

const GRANT_COLUMNS: &str =
    "session_id, client_id, browser_session_id, code_hash, scope, acr, created_at";

pub async fn insert_grant(a: &mut impl Access, g: &Grant) -> Result<(), StoreError> {
    let sql =
        format!("INSERT INTO oidc_grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(g.session_id)
        .bind(&g.client_id)
        .bind(g.browser_session_id)
        .bind(&g.code_hash)
        .bind(&g.scope)
        .bind(&g.acr)
        .bind(g.created_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get_grant(a: &mut impl Access, session_id: Uuid) -> Result<Option<Grant>, StoreError> {
    let sql = format!("SELECT {GRANT_COLUMNS} FROM oidc_grants WHERE session_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(session_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// What a refresh reads: the session holding the refresh token, its grant and its user.
#[derive(Debug, Clone)]
pub struct RefreshRead {
    pub session: crate::store::sessions::Session,
    pub grant: Grant,
    pub user: crate::store::users::User,
}

const REFRESH_READ: &str = "SELECT u.user_id, u.legacy_user_id, u.email, u.email_confirmed,
        u.username, u.first_name, u.last_name, u.picture_url, u.properties, u.has_password,
        u.update_password_required, u.locked, u.enabled, u.mfa_enabled, u.can_create_orgs,
        u.created_at, u.last_active_at,
        s.session_id AS s_session_id, s.refresh_token AS s_refresh_token,
        s.created_at AS s_created_at, s.expires_at AS s_expires_at, s.revoked AS s_revoked,
        s.ip_address AS s_ip_address, s.user_agent AS s_user_agent, s.org_id AS s_org_id,
        s.auth_methods AS s_auth_methods, s.auth_time AS s_auth_time,
        s.last_seen_at AS s_last_seen_at, s.impersonator_id AS s_impersonator_id,
        g.client_id AS g_client_id, g.browser_session_id AS g_browser_session_id,
        g.code_hash AS g_code_hash, g.scope AS g_scope, g.acr AS g_acr,
        g.created_at AS g_created_at
    FROM sessions s
    JOIN oidc_grants g ON g.session_id = s.session_id
    JOIN users u ON u.user_id = s.user_id
    WHERE s.refresh_token = $1";

/// The session holding refresh token `refresh_hash`, its grant and its user, in one
/// statement (the refresh grant's read).
pub async fn refresh_read(
    a: &mut impl Access,
    refresh_hash: &str,
) -> Result<Option<RefreshRead>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        #[sqlx(flatten)]
        user: crate::store::users::User,
        s_session_id: Uuid,
        s_refresh_token: Option<String>,
        s_created_at: DateTime<Utc>,
        s_expires_at: DateTime<Utc>,
        s_revoked: bool,
        s_ip_address: Option<crate::store::Inet>,
        s_user_agent: Option<String>,
        s_org_id: Option<Uuid>,
        s_auth_methods: TextList,
        s_auth_time: DateTime<Utc>,
        s_last_seen_at: DateTime<Utc>,
        s_impersonator_id: Option<Uuid>,
        g_client_id: String,
        g_browser_session_id: Option<Uuid>,
        g_code_hash: Option<String>,
        g_scope: String,
        g_acr: Option<String>,
        g_created_at: DateTime<Utc>,
    }
    let row: Option<Row> = with_conn!(a, |c| sqlx::query_as(REFRESH_READ)
        .bind(refresh_hash)
        .fetch_optional(&mut *c)
        .await?);
    Ok(row.map(|r| RefreshRead {
        session: crate::store::sessions::Session {
            session_id: r.s_session_id,
            user_id: r.user.user_id,
            refresh_token: r.s_refresh_token,
            created_at: r.s_created_at,
            expires_at: r.s_expires_at,
            revoked: r.s_revoked,
            ip_address: r.s_ip_address,
            user_agent: r.s_user_agent,
            org_id: r.s_org_id,
            auth_methods: r.s_auth_methods,
            auth_time: r.s_auth_time,
            last_seen_at: r.s_last_seen_at,
            impersonator_id: r.s_impersonator_id,
        },
        grant: Grant {
            session_id: r.s_session_id,
            client_id: r.g_client_id,
            browser_session_id: r.g_browser_session_id,
            code_hash: r.g_code_hash,
            scope: r.g_scope,
            acr: r.g_acr,
            created_at: r.g_created_at,
        },
        user: r.user,
    }))
}

pub async fn grant_by_code(
    a: &mut impl Access,
    code_hash: &str,
) -> Result<Option<Grant>, StoreError> {
    let sql = format!("SELECT {GRANT_COLUMNS} FROM oidc_grants WHERE code_hash = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(code_hash)
        .fetch_optional(&mut *c)
        .await?))
}

/// Revokes the sessions of every grant made from a browser session; returns how many.
pub async fn revoke_grants_of_browser_session(
    a: &mut impl Access,
    browser_session_id: Uuid,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "UPDATE sessions SET revoked = $2
         WHERE NOT revoked AND session_id IN
             (SELECT session_id FROM oidc_grants WHERE browser_session_id = $1)"
    )
    .bind(browser_session_id)
    .bind(true)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

// ---------------------------------------------------------------------------------------
// Rotated refresh tokens

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RotatedToken {
    pub token_hash: String,
    pub session_id: Uuid,
    /// The replacing token, encrypted with the data key.
    pub successor: String,
    pub successor_hash: String,
    pub rotated_at: DateTime<Utc>,
}

/// Rotates a refresh token in one statement: records `r` (the old token's hash, its
/// successor) if the session still holds the old token and is not revoked, and a trigger
/// (migration 0007) moves the session to the successor. `false` when the token was no
/// longer current: another rotation or a revocation came first (on PostgreSQL a concurrent
/// rotation of the same token meets the primary key instead).
pub async fn rotate_refresh(a: &mut impl Access, r: &RotatedToken) -> Result<bool, StoreError> {
    let rotated = with_conn!(a, |c| sqlx::query(
        "INSERT INTO oidc_rotated_refresh_tokens
             (token_hash, session_id, successor, successor_hash, rotated_at)
         SELECT $1, session_id, $3, $4, $5 FROM sessions
         WHERE session_id = $2 AND refresh_token = $1 AND NOT revoked"
    )
    .bind(&r.token_hash)
    .bind(r.session_id)
    .bind(&r.successor)
    .bind(&r.successor_hash)
    .bind(r.rotated_at)
    .execute(&mut *c)
    .await
    .map(|done| done.rows_affected()));
    match rotated {
        Ok(n) => Ok(n == 1),
        Err(e) => match StoreError::from(e) {
            StoreError::Conflict { .. } => Ok(false),
            other => Err(other),
        },
    }
}

pub async fn get_rotated(
    a: &mut impl Access,
    token_hash: &str,
) -> Result<Option<RotatedToken>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT token_hash, session_id, successor, successor_hash, rotated_at
         FROM oidc_rotated_refresh_tokens WHERE token_hash = $1"
    )
    .bind(token_hash)
    .fetch_optional(&mut *c)
    .await?))
}

// ---------------------------------------------------------------------------------------
// Browser sessions

pub async fn insert_browser_session(
    a: &mut impl Access,
    session_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO oidc_browser_sessions (session_id, created_at) VALUES ($1, $2)"
    )
    .bind(session_id)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

pub async fn is_browser_session(a: &mut impl Access, session_id: Uuid) -> Result<bool, StoreError> {
    let n: i64 = with_conn!(a, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM oidc_browser_sessions WHERE session_id = $1"
    )
    .bind(session_id)
    .fetch_one(&mut *c)
    .await?);
    Ok(n > 0)
}

// ---------------------------------------------------------------------------------------
// Client assertions (RFC 7523)

/// Records a used assertion id; false when it was already used (a replay).
pub async fn use_assertion(
    a: &mut impl Access,
    jti_hash: &str,
    client_id: &str,
    expires_at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| {
        sqlx::query(
        "INSERT INTO oidc_client_assertions (jti_hash, client_id, expires_at) VALUES ($1, $2, $3)
         ON CONFLICT (jti_hash) DO NOTHING"
    )
    .bind(jti_hash)
    .bind(client_id)
    .bind(expires_at)
    .execute(&mut *c)
    .await?
    .rows_affected()
    });
    Ok(n == 1)
}

/// Forgets assertions that expired before `before`.
pub async fn purge_assertions(
    a: &mut impl Access,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM oidc_client_assertions WHERE expires_at < $1"
    )
    .bind(before)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

// ---------------------------------------------------------------------------------------
// Back-channel logout notices (filled by the `sessions_logout_notices` trigger)

/// A logout token owed to a client for an ended browser session.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct LogoutNotice {
    pub notice_id: Uuid,
    pub client_id: String,
    pub user_id: Uuid,
    pub browser_session_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub abandoned_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

const NOTICE_COLUMNS: &str = "notice_id, client_id, user_id, browser_session_id, created_at, \
    attempts, next_attempt_at, delivered_at, abandoned_at, last_error";

/// Claims up to `limit` notices due at `now`, oldest due first: each gets one more attempt
/// and is leased until `lease_until` (it is due again then if its claimer never reports).
/// One statement on both backends. Several nodes may claim at once: on PostgreSQL a row
/// another node claimed meanwhile is re-checked against the outer conditions after its
/// lock is released, no longer due, and skipped; SQLite has one writer.
pub async fn claim_logout_notices(
    a: &mut impl Access,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u32,
) -> Result<Vec<LogoutNotice>, StoreError> {
    let sql = format!(
        "UPDATE oidc_logout_notices SET next_attempt_at = $2, attempts = attempts + 1
         WHERE notice_id IN
             (SELECT notice_id FROM oidc_logout_notices
              WHERE delivered_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= $1
              ORDER BY next_attempt_at, created_at LIMIT $3)
           AND delivered_at IS NULL AND abandoned_at IS NULL AND next_attempt_at <= $1
         RETURNING {NOTICE_COLUMNS}"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(now)
        .bind(lease_until)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

/// How a claimed attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum NoticeOutcome {
    Delivered(DateTime<Utc>),
    /// Try again at the given time.
    Retry(DateTime<Utc>, String),
    Abandoned(DateTime<Utc>, String),
}

/// Records the outcome of attempt number `attempts`; false when the notice has moved on
/// since (finished, or claimed again after the lease ran out).
pub async fn finish_logout_attempt(
    a: &mut impl Access,
    notice_id: Uuid,
    attempts: i32,
    outcome: &NoticeOutcome,
) -> Result<bool, StoreError> {
    let (delivered, abandoned, next, error) = match outcome {
        NoticeOutcome::Delivered(at) => (Some(*at), None, None, None),
        NoticeOutcome::Retry(at, e) => (None, None, Some(*at), Some(e.as_str())),
        NoticeOutcome::Abandoned(at, e) => (None, Some(*at), None, Some(e.as_str())),
    };
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE oidc_logout_notices
         SET delivered_at = $3, abandoned_at = $4,
             next_attempt_at = COALESCE($5, next_attempt_at),
             last_error = COALESCE($6, last_error)
         WHERE notice_id = $1 AND attempts = $2
           AND delivered_at IS NULL AND abandoned_at IS NULL"
    )
    .bind(notice_id)
    .bind(attempts)
    .bind(delivered)
    .bind(abandoned)
    .bind(next)
    .bind(error)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// The notices enqueued for a browser session, by client.
pub async fn logout_notices_of_session(
    a: &mut impl Access,
    browser_session_id: Uuid,
) -> Result<Vec<LogoutNotice>, StoreError> {
    let sql = format!(
        "SELECT {NOTICE_COLUMNS} FROM oidc_logout_notices WHERE browser_session_id = $1
         ORDER BY client_id"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(browser_session_id)
        .fetch_all(&mut *c)
        .await?))
}

/// Forgets notices delivered or abandoned before `before`.
pub async fn purge_logout_notices(
    a: &mut impl Access,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM oidc_logout_notices WHERE delivered_at < $1 OR abandoned_at < $1"
    )
    .bind(before)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}
