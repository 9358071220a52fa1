//! Per-org sign-in settings: `org_login_methods` and `org_domains`.
use super::{Access, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

// Login methods

/// Inserts or replaces the org's setting for `method`.
pub async fn set_login_method(
    a: &mut impl Access,
    org_id: Uuid,
    method: &str,
    enabled: bool,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO org_login_methods (org_id, method, enabled) VALUES ($1, $2, $3)
         ON CONFLICT (org_id, method) DO UPDATE SET enabled = excluded.enabled"
    )
    .bind(org_id)
    .bind(method)
    .bind(enabled)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// The org's setting for `method`, if it has one.
pub async fn login_method(
    a: &mut impl Access,
    org_id: Uuid,
    method: &str,
) -> Result<Option<bool>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT enabled FROM org_login_methods WHERE org_id = $1 AND method = $2"
    )
    .bind(org_id)
    .bind(method)
    .fetch_optional(&mut *c)
    .await?))
}

/// Every `(method, enabled)` row of the org.
pub async fn login_methods(
    a: &mut impl Access,
    org_id: Uuid,
) -> Result<Vec<(String, bool)>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT method, enabled FROM org_login_methods WHERE org_id = $1 ORDER BY method"
    )
    .bind(org_id)
    .fetch_all(&mut *c)
    .await?))
}

// Domains

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct OrgDomain {
    pub domain_id: Uuid,
    pub org_id: Uuid,
    /// Lower-case.
    pub domain: String,
    pub verified: bool,
    pub created_at: DateTime<Utc>,
}

const DOMAIN_COLUMNS: &str = "domain_id, org_id, domain, verified, created_at";

pub async fn insert_domain(a: &mut impl Access, d: &OrgDomain) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "INSERT INTO org_domains (domain_id, org_id, domain, verified, created_at)
         VALUES ($1, $2, $3, $4, $5)"
    )
    .bind(d.domain_id)
    .bind(d.org_id)
    .bind(&d.domain)
    .bind(d.verified)
    .bind(d.created_at)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// The org's claim on a domain (case-insensitive).
pub async fn find_domain(
    a: &mut impl Access,
    org_id: Uuid,
    domain: &str,
) -> Result<Option<OrgDomain>, StoreError> {
    let sql = format!(
        "SELECT {DOMAIN_COLUMNS} FROM org_domains WHERE org_id = $1 AND lower(domain) = lower($2)"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .bind(domain)
        .fetch_optional(&mut *c)
        .await?))
}

/// The verified claim on a domain, if any (at most one: `org_domains_domain_key`).
pub async fn find_verified_domain(
    a: &mut impl Access,
    domain: &str,
) -> Result<Option<OrgDomain>, StoreError> {
    let sql = format!(
        "SELECT {DOMAIN_COLUMNS} FROM org_domains WHERE lower(domain) = lower($1) AND verified"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(domain)
        .fetch_optional(&mut *c)
        .await?))
}

pub async fn list_domains(a: &mut impl Access, org_id: Uuid) -> Result<Vec<OrgDomain>, StoreError> {
    let sql = format!("SELECT {DOMAIN_COLUMNS} FROM org_domains WHERE org_id = $1 ORDER BY domain");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(org_id)
        .fetch_all(&mut *c)
        .await?))
}

pub async fn set_domain_verified(
    a: &mut impl Access,
    org_id: Uuid,
    domain: &str,
    verified: bool,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE org_domains SET verified = $3 WHERE org_id = $1 AND lower(domain) = lower($2)"
    )
    .bind(org_id)
    .bind(domain)
    .bind(verified)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn delete_domain(
    a: &mut impl Access,
    org_id: Uuid,
    domain: &str,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM org_domains WHERE org_id = $1 AND lower(domain) = lower($2)"
    )
    .bind(org_id)
    .bind(domain)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}
