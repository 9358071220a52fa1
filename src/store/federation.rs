//! Enterprise SSO tables: `identity_providers`, `federation_requests`,
//! `saml_used_assertions`, `federated_identities`.
use super::{Access, Json, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct IdentityProvider {
    pub provider_id: Uuid,
    pub org_id: Uuid,
    /// `saml` or `oidc`.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    pub name: String,
    pub config: Json<serde_json::Value>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: Option<DateTime<Utc>>,
    /// The upstream OIDC client secret, encrypted with the data key.
    #[serde(skip)]
    pub secret: Option<String>,
}

const PROVIDER_COLUMNS: &str =
    "provider_id, org_id, type, name, config, enabled, created_at, updated_at, secret";

pub async fn insert_provider(a: &mut impl Access, p: &IdentityProvider) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO identity_providers ({PROVIDER_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(p.provider_id)
        .bind(p.org_id)
        .bind(&p.kind)
        .bind(&p.name)
        .bind(&p.config)
        .bind(p.enabled)
        .bind(p.created_at)
        .bind(p.updated_at)
        .bind(&p.secret)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// Replaces the mutable fields (name, config, enabled, secret, updated_at).
pub async fn update_provider(
    a: &mut impl Access,
    p: &IdentityProvider,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE identity_providers
         SET name = $3, config = $4, enabled = $5, secret = $6, updated_at = $7
         WHERE provider_id = $1 AND org_id = $2"
    )
    .bind(p.provider_id)
    .bind(p.org_id)
    .bind(&p.name)
    .bind(&p.config)
    .bind(p.enabled)
    .bind(&p.secret)
    .bind(p.updated_at)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// A provider by id, whatever its org (the SP endpoints are addressed by provider id).
pub async fn get_provider(
    a: &mut impl Access,
    provider_id: Uuid,
) -> Result<Option<IdentityProvider>, StoreError> {
    let sql = format!("SELECT {PROVIDER_COLUMNS} FROM identity_providers WHERE provider_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(provider_id)
    .fetch_optional(&mut *c)
    .await?))
}

/// A provider of the org (another org's id reads as absent).
pub async fn get_provider_in(
    a: &mut impl Access,
    org_id: Uuid,
    provider_id: Uuid,
) -> Result<Option<IdentityProvider>, StoreError> {
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM identity_providers WHERE provider_id = $1 AND org_id = $2"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(provider_id)
    .bind(org_id)
    .fetch_optional(&mut *c)
    .await?))
}

/// The org's providers, oldest first, after `after` (cursor) when given.
pub async fn list_providers(
    a: &mut impl Access,
    org_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<IdentityProvider>, StoreError> {
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM identity_providers
         WHERE org_id = $1 AND ($2 IS NULL OR provider_id > $2)
         ORDER BY provider_id LIMIT $3"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(org_id)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?))
}

pub async fn delete_provider(
    a: &mut impl Access,
    org_id: Uuid,
    provider_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM identity_providers WHERE provider_id = $1 AND org_id = $2"
    )
    .bind(provider_id)
    .bind(org_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

// Pending sign-ins

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FederationRequest {
    pub request_id: String,
    pub provider_id: Uuid,
    pub browser_hash: String,
    pub auth: String,
    pub nonce: Option<String>,
    pub pkce_verifier: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub result: Option<Json<serde_json::Value>>,
    pub asserted_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
}

const REQUEST_COLUMNS: &str = "request_id, provider_id, browser_hash, auth, nonce, \
    pkce_verifier, created_at, expires_at, result, asserted_at, completed_at";

pub async fn insert_request(a: &mut impl Access, r: &FederationRequest) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO federation_requests ({REQUEST_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&r.request_id)
        .bind(r.provider_id)
        .bind(&r.browser_hash)
        .bind(&r.auth)
        .bind(&r.nonce)
        .bind(&r.pkce_verifier)
        .bind(r.created_at)
        .bind(r.expires_at)
        .bind(&r.result)
        .bind(r.asserted_at)
        .bind(r.completed_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

/// A pending request of `provider_id`, whatever its state.
pub async fn get_request(
    a: &mut impl Access,
    provider_id: Uuid,
    request_id: &str,
) -> Result<Option<FederationRequest>, StoreError> {
    let sql = format!(
        "SELECT {REQUEST_COLUMNS} FROM federation_requests
         WHERE request_id = $1 AND provider_id = $2"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(request_id)
    .bind(provider_id)
    .fetch_optional(&mut *c)
    .await?))
}

/// Records the accepted assertion of an outstanding request: only once, and only before it
/// expires. False when the request was already answered, completed or has expired.
pub async fn assert_request(
    a: &mut impl Access,
    request_id: &str,
    result: &Json<serde_json::Value>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE federation_requests SET asserted_at = $2, result = $3
         WHERE request_id = $1 AND asserted_at IS NULL AND completed_at IS NULL
           AND expires_at > $2"
    )
    .bind(request_id)
    .bind(now)
    .bind(result)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Completes a request in the browser that started it (`browser_hash`), once, before it
/// expires; returns it as it was. `asserted`: whether it must have been answered at the ACS.
pub async fn complete_request(
    a: &mut impl Access,
    request_id: &str,
    browser_hash: &str,
    asserted: bool,
    now: DateTime<Utc>,
) -> Result<Option<FederationRequest>, StoreError> {
    let sql = format!(
        "UPDATE federation_requests SET completed_at = $3
         WHERE request_id = $1 AND browser_hash = $2 AND completed_at IS NULL
           AND expires_at > $3 AND ((asserted_at IS NOT NULL) = $4)
         RETURNING {REQUEST_COLUMNS}"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(request_id)
    .bind(browser_hash)
    .bind(now)
    .bind(asserted)
    .fetch_optional(&mut *c)
    .await?))
}

/// Deletes requests and remembered assertion IDs that have expired.
pub async fn purge_expired(a: &mut impl Access, now: DateTime<Utc>) -> Result<u64, StoreError> {
    let a1 = with_conn!(a, |c| sqlx::query(
        "DELETE FROM federation_requests WHERE expires_at <= $1"
    )
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    let a2 = with_conn!(a, |c| sqlx::query(
        "DELETE FROM saml_used_assertions WHERE expires_at <= $1"
    )
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(a1 + a2)
}

/// Remembers an accepted assertion ID until `expires_at`. `Conflict` when it was already
/// used (a replay).
pub async fn use_assertion(
    a: &mut impl Access,
    provider_id: Uuid,
    assertion_id: &str,
    expires_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO saml_used_assertions (provider_id, assertion_id, expires_at)
         VALUES ($1, $2, $3)"
    )
    .bind(provider_id)
    .bind(assertion_id)
    .bind(expires_at)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

// Links

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct FederatedIdentity {
    pub provider_id: Uuid,
    pub subject: String,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_login_at: DateTime<Utc>,
}

pub async fn find_link(
    a: &mut impl Access,
    provider_id: Uuid,
    subject: &str,
) -> Result<Option<FederatedIdentity>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT provider_id, subject, user_id, created_at, last_login_at
         FROM federated_identities WHERE provider_id = $1 AND subject = $2"
    )
    .bind(provider_id)
    .bind(subject)
    .fetch_optional(&mut *c)
    .await?))
}

pub async fn insert_link(a: &mut impl Access, l: &FederatedIdentity) -> Result<(), StoreError> {
    with_conn!(a, |c| {
        sqlx::query(
        "INSERT INTO federated_identities (provider_id, subject, user_id, created_at, last_login_at)
         VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(l.provider_id)
    .bind(&l.subject)
    .bind(l.user_id)
    .bind(l.created_at)
    .bind(l.last_login_at)
    .execute(&mut *c)
    .await?
    .rows_affected()
    });
    Ok(())
}

pub async fn touch_link(
    a: &mut impl Access,
    provider_id: Uuid,
    subject: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "UPDATE federated_identities SET last_login_at = $3 WHERE provider_id = $1 AND subject = $2"
    )
    .bind(provider_id)
    .bind(subject)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// The org's enabled providers (for home-realm discovery and `/sso/{org}`), oldest first.
pub async fn enabled_for_org(
    a: &mut impl Access,
    org_id: Uuid,
) -> Result<Vec<IdentityProvider>, StoreError> {
    let sql = format!(
        "SELECT {PROVIDER_COLUMNS} FROM identity_providers
         WHERE org_id = $1 AND enabled ORDER BY created_at, provider_id"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(
        sql.clone()
    ))
    .bind(org_id)
    .fetch_all(&mut *c)
    .await?))
}
