//! `mfa_devices` and `mfa_recovery_codes`, plus the two MFA flags they drive
//! (`users.mfa_enabled`, `organizations.mfa_required`). `secret` holds an encrypted seed and
//! `code_hash` a SHA-256; neither is ever plaintext.
use super::{Access, StoreError, with_conn};
use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

/// A device row, secret included (for verification only; never serialized).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct Device {
    pub device_id: Uuid,
    pub user_id: Uuid,
    /// `totp`.
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub device_type: String,
    /// The seed, encrypted with the data key (compact JWE).
    #[serde(skip)]
    pub secret: String,
    pub created_at: DateTime<Utc>,
    pub enabled: bool,
    /// Start of the last accepted TOTP time step (whole seconds).
    pub last_used: Option<DateTime<Utc>>,
}

/// A device as listed to its owner: everything but the secret, which is never selected.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct DeviceSummary {
    pub device_id: Uuid,
    #[sqlx(rename = "type")]
    #[serde(rename = "type")]
    pub device_type: String,
    pub created_at: DateTime<Utc>,
    pub enabled: bool,
    pub last_used: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, Serialize)]
pub struct RecoveryCode {
    pub code_id: Uuid,
    pub user_id: Uuid,
    #[serde(skip)]
    pub code_hash: String,
    pub created_at: DateTime<Utc>,
    pub used_at: Option<DateTime<Utc>>,
}

const DEVICE_COLUMNS: &str = "device_id, user_id, type, secret, created_at, enabled, last_used";

pub async fn insert_device(a: &mut impl Access, d: &Device) -> Result<(), StoreError> {
    let sql =
        format!("INSERT INTO mfa_devices ({DEVICE_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)");
    with_conn!(a, |c| sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(d.device_id)
        .bind(d.user_id)
        .bind(&d.device_type)
        .bind(&d.secret)
        .bind(d.created_at)
        .bind(d.enabled)
        .bind(d.last_used)
        .execute(&mut *c)
        .await?
        .rows_affected());
    Ok(())
}

pub async fn get_device(
    a: &mut impl Access,
    device_id: Uuid,
) -> Result<Option<Device>, StoreError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM mfa_devices WHERE device_id = $1");
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(device_id)
        .fetch_optional(&mut *c)
        .await?))
}

/// The user's enabled device of `device_type` (at most one, by `mfa_devices_enabled_totp_key`).
pub async fn enabled_device(
    a: &mut impl Access,
    user_id: Uuid,
    device_type: &str,
) -> Result<Option<Device>, StoreError> {
    let sql = format!(
        "SELECT {DEVICE_COLUMNS} FROM mfa_devices WHERE user_id = $1 AND type = $2 AND enabled
         ORDER BY created_at, device_id LIMIT 1"
    );
    Ok(with_conn!(a, |c| sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(user_id)
        .bind(device_type)
        .fetch_optional(&mut *c)
        .await?))
}

/// The user's devices, oldest first, without their secrets.
pub async fn list_devices(
    a: &mut impl Access,
    user_id: Uuid,
) -> Result<Vec<DeviceSummary>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT device_id, type, created_at, enabled, last_used FROM mfa_devices
         WHERE user_id = $1 ORDER BY created_at, device_id"
    )
    .bind(user_id)
    .fetch_all(&mut *c)
    .await?))
}

pub async fn count_enabled_devices(a: &mut impl Access, user_id: Uuid) -> Result<i64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM mfa_devices WHERE user_id = $1 AND enabled"
    )
    .bind(user_id)
    .fetch_one(&mut *c)
    .await?))
}

/// Deletes the user's unconfirmed devices of `device_type`; returns how many.
pub async fn delete_pending_devices(
    a: &mut impl Access,
    user_id: Uuid,
    device_type: &str,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM mfa_devices WHERE user_id = $1 AND type = $2 AND NOT enabled"
    )
    .bind(user_id)
    .bind(device_type)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// Enables an unconfirmed device and records its first accepted step. False when the device
/// is gone or already enabled.
pub async fn enable_device(
    a: &mut impl Access,
    device_id: Uuid,
    last_used: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| {
        sqlx::query(
        "UPDATE mfa_devices SET enabled = $3, last_used = $2 WHERE device_id = $1 AND NOT enabled"
    )
    .bind(device_id)
    .bind(last_used)
    .bind(true)
    .execute(&mut *c)
    .await?
    .rows_affected()
    });
    Ok(n == 1)
}

/// Records `step_start` as the last accepted step only if it is later than the stored one:
/// the check-and-set that makes a TOTP code single-use under concurrency. Returns whether
/// it was recorded. (`last_used` only ever holds whole-second instants, so SQLite's text
/// comparison orders them correctly.)
pub async fn advance_last_used(
    a: &mut impl Access,
    device_id: Uuid,
    step_start: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE mfa_devices SET last_used = $2
         WHERE device_id = $1 AND enabled AND (last_used IS NULL OR last_used < $2)"
    )
    .bind(device_id)
    .bind(step_start)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Deletes one device of one user; false when no such device belongs to the user.
pub async fn delete_device(
    a: &mut impl Access,
    user_id: Uuid,
    device_id: Uuid,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "DELETE FROM mfa_devices WHERE device_id = $1 AND user_id = $2"
    )
    .bind(device_id)
    .bind(user_id)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

pub async fn delete_devices_for_user(
    a: &mut impl Access,
    user_id: Uuid,
) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM mfa_devices WHERE user_id = $1"
    )
    .bind(user_id)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// Inserts one recovery code per hash (the caller wraps this in a transaction).
pub async fn insert_recovery_codes(
    a: &mut impl Access,
    user_id: Uuid,
    hashes: &[String],
    at: DateTime<Utc>,
) -> Result<(), StoreError> {
    for hash in hashes {
        with_conn!(a, |c| sqlx::query(
            "INSERT INTO mfa_recovery_codes (code_id, user_id, code_hash, created_at, used_at)
             VALUES ($1, $2, $3, $4, NULL)"
        )
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(hash)
        .bind(at)
        .execute(&mut *c)
        .await?
        .rows_affected());
    }
    Ok(())
}

pub async fn delete_recovery_codes(a: &mut impl Access, user_id: Uuid) -> Result<u64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query(
        "DELETE FROM mfa_recovery_codes WHERE user_id = $1"
    )
    .bind(user_id)
    .execute(&mut *c)
    .await?
    .rows_affected()))
}

/// Marks an unused code as used at `at`: the single-use check-and-set. Returns whether a
/// code was consumed.
pub async fn consume_recovery_code(
    a: &mut impl Access,
    user_id: Uuid,
    code_hash: &str,
    at: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE mfa_recovery_codes SET used_at = $3
         WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL"
    )
    .bind(user_id)
    .bind(code_hash)
    .bind(at)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Whether the user has a code with this hash, used or not.
pub async fn recovery_code_exists(
    a: &mut impl Access,
    user_id: Uuid,
    code_hash: &str,
) -> Result<bool, StoreError> {
    let n: i64 = with_conn!(a, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND code_hash = $2"
    )
    .bind(user_id)
    .bind(code_hash)
    .fetch_one(&mut *c)
    .await?);
    Ok(n > 0)
}

pub async fn count_unused_recovery_codes(
    a: &mut impl Access,
    user_id: Uuid,
) -> Result<i64, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_scalar(
        "SELECT COUNT(*) FROM mfa_recovery_codes WHERE user_id = $1 AND used_at IS NULL"
    )
    .bind(user_id)
    .fetch_one(&mut *c)
    .await?))
}

/// The user's recovery codes (hashes only), oldest first.
pub async fn list_recovery_codes(
    a: &mut impl Access,
    user_id: Uuid,
) -> Result<Vec<RecoveryCode>, StoreError> {
    Ok(with_conn!(a, |c| sqlx::query_as(
        "SELECT code_id, user_id, code_hash, created_at, used_at FROM mfa_recovery_codes
         WHERE user_id = $1 ORDER BY created_at, code_id"
    )
    .bind(user_id)
    .fetch_all(&mut *c)
    .await?))
}

/// Sets `users.mfa_enabled`; false when the user does not exist.
pub async fn set_user_mfa_enabled(
    a: &mut impl Access,
    user_id: Uuid,
    enabled: bool,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE users SET mfa_enabled = $2 WHERE user_id = $1"
    )
    .bind(user_id)
    .bind(enabled)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}

/// Sets `organizations.mfa_required`; false when the org does not exist.
pub async fn set_org_mfa_required(
    a: &mut impl Access,
    org_id: Uuid,
    required: bool,
) -> Result<bool, StoreError> {
    let n = with_conn!(a, |c| sqlx::query(
        "UPDATE organizations SET mfa_required = $2 WHERE org_id = $1"
    )
    .bind(org_id)
    .bind(required)
    .execute(&mut *c)
    .await?
    .rows_affected());
    Ok(n == 1)
}
