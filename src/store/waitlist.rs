//! `waitlist_signups` and `waitlist_invitations`. `token_hash` holds the SHA-256 of the
//! invitation token, never the token.
use super::{Access, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Signup {
    pub signup_id: Uuid,
    pub email: String,
    pub invited: bool,
    pub invited_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str = "signup_id, email, invited, invited_at, created_at";

/// Inserts the signup unless one with the same email (case-insensitively) exists; returns
/// whether a row was written.
pub async fn insert_if_absent(a: &mut impl Access, s: &Signup) -> Result<bool, StoreError> {
    let sql = format!(
        "INSERT INTO waitlist_signups ({COLUMNS}) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING"
    );
    let n = with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(s.signup_id)
        .bind(&s.email)
        .bind(s.invited)
        .bind(s.invited_at)
        .bind(s.created_at)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(n == 1)
}

pub async fn get(a: &mut impl Access, signup_id: Uuid) -> Result<Option<Signup>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM waitlist_signups WHERE signup_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(signup_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Case-insensitive lookup (the `waitlist_signups_email_key` index on `lower(email)`).
pub async fn find_by_email(a: &mut impl Access, email: &str) -> Result<Option<Signup>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM waitlist_signups WHERE lower(email) = lower($1)");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(email)
        .fetch_optional(&mut *c)
        .await?))
}

/// Keyset page ordered by `signup_id` (UUIDv7, so sign-up order), optionally only the
/// invited (or not yet invited) ones.
pub async fn list(
    a: &mut impl Access,
    after: Option<Uuid>,
    limit: u32,
    invited: Option<bool>,
) -> Result<Vec<Signup>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM waitlist_signups
         WHERE ($1 IS NULL OR signup_id > $1) AND ($2 IS NULL OR invited = $2)
         ORDER BY signup_id LIMIT $3"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(after)
        .bind(invited)
        .bind(i64::from(limit))
        .fetch_all(&mut *c)
        .await?))
}

/// Sets `invited` and `invited_at`; returns whether the signup exists.
pub async fn mark_invited(
    a: &mut impl Access,
    signup_id: Uuid,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE waitlist_signups SET invited = $2, invited_at = $3 WHERE signup_id = $1"
    )
    .bind(signup_id)
    .bind(true)
    .bind(at)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Invitation {
    pub invitation_id: Uuid,
    pub signup_id: Uuid,
    /// SHA-256 (hex) of the secret token.
    #[serde(skip)]
    pub token_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
    /// The account created with the invitation.
    pub user_id: Option<Uuid>,
}

const INVITATION_COLUMNS: &str =
    "invitation_id, signup_id, token_hash, created_at, expires_at, used_at, user_id";

pub async fn insert_invitation(a: &mut impl Access, i: &Invitation) -> Result<(), StoreError> {
    let sql = format!(
        "INSERT INTO waitlist_invitations ({INVITATION_COLUMNS})
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    );
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(i.invitation_id)
        .bind(i.signup_id)
        .bind(&i.token_hash)
        .bind(i.created_at)
        .bind(i.expires_at)
        .bind(i.used_at)
        .bind(i.user_id)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get_invitation(
    a: &mut impl Access,
    invitation_id: Uuid,
) -> Result<Option<Invitation>, StoreError> {
    let sql =
        format!("SELECT {INVITATION_COLUMNS} FROM waitlist_invitations WHERE invitation_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(invitation_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// Lookup by the hash of the secret (the unique `waitlist_invitations_token_hash_key`).
pub async fn find_invitation_by_hash(
    a: &mut impl Access,
    token_hash: &str,
) -> Result<Option<Invitation>, StoreError> {
    let sql =
        format!("SELECT {INVITATION_COLUMNS} FROM waitlist_invitations WHERE token_hash = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(token_hash)
        .fetch_optional(&mut *c)
        .await?))
}

/// The signup's invitations, oldest first.
pub async fn list_invitations(
    a: &mut impl Access,
    signup_id: Uuid,
) -> Result<Vec<Invitation>, StoreError> {
    let sql = format!(
        "SELECT {INVITATION_COLUMNS} FROM waitlist_invitations WHERE signup_id = $1
         ORDER BY created_at, invitation_id"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(signup_id)
        .fetch_all(&mut *c)
        .await?))
}

/// Marks every unused invitation of the signup used at `now` (superseded); returns how many.
pub async fn void_unused_invitations(
    a: &mut impl Access,
    signup_id: Uuid,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "UPDATE waitlist_invitations SET used_at = $2 WHERE signup_id = $1 AND used_at IS NULL"
    )
    .bind(signup_id)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// Uses the invitation: sets `used_at = now` only if it is unused and unexpired at `now`, in
/// one conditional statement, so of two concurrent uses exactly one gets `true`.
pub async fn mark_invitation_used(
    a: &mut impl Access,
    invitation_id: Uuid,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE waitlist_invitations SET used_at = $2
         WHERE invitation_id = $1 AND used_at IS NULL AND expires_at > $2"
    )
    .bind(invitation_id)
    .bind(now)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Records the account created with a used invitation.
pub async fn set_invitation_user(
    a: &mut impl Access,
    invitation_id: Uuid,
    user_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE waitlist_invitations SET user_id = $2 WHERE invitation_id = $1"
    )
    .bind(invitation_id)
    .bind(user_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}
