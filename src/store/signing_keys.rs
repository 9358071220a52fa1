//! `signing_keys`: metadata of the JOSE signing keys whose private halves live in `keys/`.
use super::{Access, Json, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct SigningKey {
    pub kid: String,
    pub alg: String,
    pub public_jwk: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub active_from: DateTime<Utc>,
    pub retired_at: Option<DateTime<Utc>>,
    pub published_until: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "kid, alg, public_jwk, created_at, active_from, retired_at, published_until";

/// Records a key unless its `kid` is already known; returns whether it was new.
pub async fn insert_if_absent(a: &mut impl Access, k: &SigningKey) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO signing_keys ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (kid) DO NOTHING"
    );
    let n = with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.public_jwk)
        .bind(k.created_at)
        .bind(k.active_from)
        .bind(k.retired_at)
        .bind(k.published_until)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(n == 1)
}

pub async fn list(a: &mut impl Access) -> Result<Vec<SigningKey>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM signing_keys ORDER BY created_at, kid");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&mut *c)
        .await?))
}

/// Sets when a key stops signing and when it leaves the JWKS.
pub async fn retire(
    a: &mut impl Access,
    kid: &str,
    retired_at: DateTime<Utc>,
    published_until: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE signing_keys SET retired_at = $2, published_until = $3
         WHERE kid = $1 AND retired_at IS NULL"
    )
    .bind(kid)
    .bind(retired_at)
    .bind(published_until)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}
