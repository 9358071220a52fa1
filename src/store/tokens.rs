//! `email_verification_tokens` and `password_reset_tokens`: single-use tokens. The two
//! tables have the same shape, so one code path serves both ([`TokenKind`] picks the table).
//! `token_hash` holds the SHA-256 of the token, never the token; `token` is the row id.
use super::{Access, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

const EMAIL_VERIFICATION_TABLE: &str = "email_verification_tokens";
const PASSWORD_RESET_TABLE: &str = "password_reset_tokens";

/// Which table a token lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    EmailVerification,
    PasswordReset,
}

impl TokenKind {
    pub const ALL: [TokenKind; 2] = [TokenKind::EmailVerification, TokenKind::PasswordReset];

    /// The table name (one of two constants, so safe to splice into SQL).
    fn table(self) -> &'static str {
        match self {
            TokenKind::EmailVerification => EMAIL_VERIFICATION_TABLE,
            TokenKind::PasswordReset => PASSWORD_RESET_TABLE,
        }
    }
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Token {
    /// The row id (column `token`); not the secret.
    #[sqlx(rename = "token")]
    pub token_id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    /// SHA-256 (hex) of the secret token.
    #[serde(skip)]
    pub token_hash: String,
    /// The address the token was mailed to.
    pub email: String,
}

const COLUMNS: &str = "token, user_id, created_at, expires_at, used_at, token_hash, email";

pub async fn insert(a: &mut impl Access, kind: TokenKind, t: &Token) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO {} ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        kind.table()
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(t.token_id)
        .bind(t.user_id)
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.used_at)
        .bind(&t.token_hash)
        .bind(&t.email)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get(
    a: &mut impl Access,
    kind: TokenKind,
    token_id: Uuid,
) -> Result<Option<Token>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM {} WHERE token = $1", kind.table());
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(token_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Lookup by the hash of the secret (the unique `…_token_hash_key` index).
pub async fn find_by_hash(
    a: &mut impl Access,
    kind: TokenKind,
    token_hash: &str,
) -> Result<Option<Token>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE token_hash = $1",
        kind.table()
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(token_hash)
        .fetch_optional(&mut *c)
        .await?))
}

/// The user's tokens of one kind, oldest first.
pub async fn list_for_user(
    a: &mut impl Access,
    kind: TokenKind,
    user_id: Uuid,
) -> Result<Vec<Token>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM {} WHERE user_id = $1 ORDER BY created_at, token",
        kind.table()
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_all(&mut *c)
        .await?))
}

/// Marks every unused token of the user as used at `now` (superseded or no longer needed);
/// returns how many.
pub async fn invalidate_unused_for_user(
    a: &mut impl Access,
    kind: TokenKind,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let sql = format!(
        "UPDATE {} SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
        kind.table()
    );
    Ok(with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected()))
}

/// Uses the token: sets `used_at = now` only if it is unused and unexpired at `now`, in one
/// conditional statement, so of two concurrent uses exactly one gets `true`.
pub async fn mark_used(
    a: &mut impl Access,
    kind: TokenKind,
    token_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE {} SET used_at = $2 WHERE token = $1 AND used_at IS NULL AND expires_at > $2",
        kind.table()
    );
    let n = with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(token_id)
        .bind(now)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(n == 1)
}

/// Deletes the tokens that expired before `before`; returns how many.
pub async fn delete_expired_before(
    a: &mut impl Access,
    kind: TokenKind,
    before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let sql = format!("DELETE FROM {} WHERE expires_at < $1", kind.table());
    Ok(with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(before)
        .execute(&mut *c)
        .await?
        .rows_affected()))
}
