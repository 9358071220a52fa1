//! `users` and `user_passwords`.
use super::{Access, Json, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct User {
    pub user_id: Uuid,
    pub legacy_user_id: Option<String>,
    pub email: String,
    pub email_confirmed: bool,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub picture_url: Option<String>,
    pub properties: Json<serde_json::Value>,
    pub has_password: bool,
    pub update_password_required: bool,
    pub locked: bool,
    pub enabled: bool,
    pub mfa_enabled: bool,
    pub can_create_orgs: bool,
    /// Epoch seconds (the seed's `bigint`).
    pub created_at: i64,
    pub last_active_at: Option<i64>,
}

const COLUMNS: &str = "user_id, legacy_user_id, email, email_confirmed, username, first_name, \
    last_name, picture_url, properties, has_password, update_password_required, locked, enabled, \
    mfa_enabled, can_create_orgs, created_at, last_active_at";

pub async fn insert(a: &mut impl Access, u: &User) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO users ({COLUMNS}, username_key) VALUES \
         ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(u.user_id)
        .bind(&u.legacy_user_id)
        .bind(&u.email)
        .bind(u.email_confirmed)
        .bind(&u.username)
        .bind(&u.first_name)
        .bind(&u.last_name)
        .bind(&u.picture_url)
        .bind(&u.properties)
        .bind(u.has_password)
        .bind(u.update_password_required)
        .bind(u.locked)
        .bind(u.enabled)
        .bind(u.mfa_enabled)
        .bind(u.can_create_orgs)
        .bind(u.created_at)
        .bind(u.last_active_at)
        .bind(u.username.as_deref().map(super::types::fold_key))
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get(a: &mut impl Access, user_id: Uuid) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE user_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Reads a user to change it: on PostgreSQL the row stays locked until the transaction
/// ends, so concurrent read-modify-write changes (a lock and a profile edit) cannot undo
/// each other. The dialect exception: SQLite has no `FOR UPDATE`, and needs none — its
/// transactions hold the database write lock from `BEGIN IMMEDIATE`.
pub async fn get_for_update(tx: &mut super::Tx, user_id: Uuid) -> Result<Option<User>, StoreError> {
    let base = format!("SELECT {COLUMNS} FROM users WHERE user_id = $1");
    Ok(with_conn!(tx, |c| {
        let sql = match super::c_backend(&*c) {
            super::Backend::Sqlite => base.clone(),
            super::Backend::Postgres => format!("{base} FOR UPDATE"),
        };
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(user_id)
            .fetch_optional(&mut *c)
            .await?
    }))
}

/// Case-insensitive lookup (uses the `users_email_key` index on `lower(email)`).
pub async fn find_by_email(a: &mut impl Access, email: &str) -> Result<Option<User>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM users WHERE lower(email) = lower($1)");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(email)
        .fetch_optional(&mut *c)
        .await?))
}

/// Keyset page ordered by `user_id` (UUIDv7, so creation order).
pub async fn list(
    a: &mut impl Access,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<User>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM users WHERE ($1 IS NULL OR user_id > $1) ORDER BY user_id LIMIT $2"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

/// Writes every mutable column of `u` (all but `user_id` and `created_at`); returns whether
/// the user exists.
pub async fn update(a: &mut impl Access, u: &User) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE users SET legacy_user_id = $2, email = $3, email_confirmed = $4, username = $5,
             first_name = $6, last_name = $7, picture_url = $8, properties = $9,
             has_password = $10, update_password_required = $11, locked = $12, enabled = $13,
             mfa_enabled = $14, can_create_orgs = $15, last_active_at = $16, username_key = $17
         WHERE user_id = $1"
    )
    .bind(u.user_id)
    .bind(&u.legacy_user_id)
    .bind(&u.email)
    .bind(u.email_confirmed)
    .bind(&u.username)
    .bind(&u.first_name)
    .bind(&u.last_name)
    .bind(&u.picture_url)
    .bind(&u.properties)
    .bind(u.has_password)
    .bind(u.update_password_required)
    .bind(u.locked)
    .bind(u.enabled)
    .bind(u.mfa_enabled)
    .bind(u.can_create_orgs)
    .bind(u.last_active_at)
    .bind(u.username.as_deref().map(super::types::fold_key))
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn delete(a: &mut impl Access, user_id: Uuid) -> Result<bool, StoreError> {
    let r = with_conn!(a, |c| sqlx::query("DELETE FROM users WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(r == 1)
}

/// Stores (or replaces) the password hash and marks the user as having a password.
pub async fn set_password_hash(
    a: &mut impl Access,
    user_id: Uuid,
    hash: &str,
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| {
        sqlx::query(
            "INSERT INTO user_passwords (user_id, password_hash, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (user_id) DO UPDATE SET password_hash = excluded.password_hash,
                                                 updated_at = excluded.updated_at",
        )
        .bind(user_id)
        .bind(hash)
        .bind(at)
        .execute(&mut *c)
        .await?
        .rows_affected();
        sqlx::query("UPDATE users SET has_password = $2 WHERE user_id = $1")
            .bind(user_id)
            .bind(true)
            .execute(&mut *c)
            .await?
            .rows_affected()
    });
    Ok(())
}

pub async fn password_hash(
    a: &mut impl Access,
    user_id: Uuid,
) -> Result<Option<String>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT password_hash FROM user_passwords WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_optional(&mut *c)
    .await?))
}

/// Lockout bookkeeping of a user (columns beside the seed's).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct Lockout {
    pub failed_login_count: i32,
    pub last_failed_login_at: Option<DateTime<Utc>>,
    pub locked_until: Option<DateTime<Utc>>,
}

pub async fn lockout(a: &mut impl Access, user_id: Uuid) -> Result<Option<Lockout>, StoreError> {
    Ok(with_conn!(a, |c| {
        sqlx::query_as(
        "SELECT failed_login_count, last_failed_login_at, locked_until FROM users WHERE user_id = $1"
    )
    .bind(user_id)
    .fetch_optional(&mut *c)
    .await?
    }))
}

/// Counts one login attempt against the user atomically, before its password is checked:
/// the count restarts at 1 when the previous counted attempt is older than `window_start`
/// or a temporary lock has run out (which is cleared).
/// Returns the new state (`None` for an unknown user).
pub async fn count_login_attempt(
    a: &mut impl Access,
    user_id: Uuid,
    now: DateTime<Utc>,
    window_start: DateTime<Utc>,
) -> Result<Option<Lockout>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "UPDATE users SET
             failed_login_count = CASE
                 WHEN last_failed_login_at IS NULL OR last_failed_login_at < $3
                      OR locked_until <= $2 THEN 1
                 ELSE failed_login_count + 1 END,
             locked_until = CASE WHEN locked_until <= $2 THEN NULL ELSE locked_until END,
             last_failed_login_at = $2
         WHERE user_id = $1
         RETURNING failed_login_count, last_failed_login_at, locked_until"
    )
    .bind(user_id)
    .bind(now)
    .bind(window_start)
    .fetch_optional(&mut *c)
    .await?))
}

/// Sets a temporary lock ending at `until`, unless one ending later is already set.
pub async fn lock_until(
    a: &mut impl Access,
    user_id: Uuid,
    until: DateTime<Utc>,
) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "UPDATE users SET locked_until = $2
         WHERE user_id = $1 AND (locked_until IS NULL OR locked_until < $2)"
    )
    .bind(user_id)
    .bind(until)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// Replaces the password hash only if it is still `old` (a rehash at login must not undo a
/// password change that committed meanwhile). Returns whether it was replaced.
pub async fn replace_password_hash(
    a: &mut impl Access,
    user_id: Uuid,
    old: &str,
    new: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE user_passwords SET password_hash = $3, updated_at = $4
         WHERE user_id = $1 AND password_hash = $2"
    )
    .bind(user_id)
    .bind(old)
    .bind(new)
    .bind(at)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Clears the failure count and any temporary lock (after a success, or an admin unlock).
pub async fn clear_login_failures(a: &mut impl Access, user_id: Uuid) -> Result<(), StoreError> {
    with_conn!(a, |c| sqlx::query(
        "UPDATE users SET failed_login_count = 0, last_failed_login_at = NULL, locked_until = NULL
         WHERE user_id = $1 AND (failed_login_count <> 0 OR locked_until IS NOT NULL)"
    )
    .bind(user_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(())
}

/// Sets `last_active_at` unless it was set less than `min_interval_secs` ago; returns whether
/// a row was written.
pub async fn touch_last_active(
    a: &mut impl Access,
    user_id: Uuid,
    now_epoch: i64,
    min_interval_secs: i64,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE users SET last_active_at = $2
         WHERE user_id = $1 AND (last_active_at IS NULL OR last_active_at <= $3)"
    )
    .bind(user_id)
    .bind(now_epoch)
    .bind(now_epoch - min_interval_secs)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}
