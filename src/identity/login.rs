//! `authenticate`: the one password check every login path uses. Records every attempt,
//! locks an account temporarily after repeated failures, and does not reveal by its answer
//! or its timing whether an email has an account.
use super::users::normalize_email;
use super::{Identity, IdentityError};
use crate::config::Secret;
use crate::store::login_attempts::LoginAttempt;
use crate::store::users::User;
use crate::store::{self, Inet};
use chrono::{DateTime, Utc};
use std::net::IpAddr;
use uuid::Uuid;

/// Where a login comes from.
#[derive(Debug, Clone, Default)]
pub struct LoginContext {
    /// The org the login is for (an org-bound client, an org's login page), if any.
    pub org_id: Option<Uuid>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

/// What a correct password leads to. Only `Authenticated` may be turned into a session
/// directly.
#[derive(Debug, Clone, PartialEq)]
pub enum LoginOutcome {
    Authenticated {
        user: User,
    },
    /// A second factor is needed first (the user enrolled MFA, or the org requires it).
    MfaRequired {
        user: User,
    },
}

/// Whether the lockout bookkeeping says the account is temporarily locked at `now`.
pub fn temporarily_locked(locked_until: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    locked_until.is_some_and(|until| until > now)
}

/// Checks an email and password.
///
/// Errors: `InvalidCredentials` (unknown email or wrong password — the same answer, after
/// the same work), `AccountLocked` (admin lock, or temporary lock after
/// `login.max_failures` failures within `login.failure_window`), `AccountDisabled`,
/// `PasswordChangeRequired`, `LoginMethodNotAllowed`, `Forbidden` (not a member of the
/// context's org). The account's state is only revealed to a caller who knows the password,
/// except a temporary lock, which is reported without checking the password so guessing
/// cannot continue during the lock.
pub async fn authenticate(
    id: &Identity,
    email: &str,
    password: &Secret<String>,
    ctx: &LoginContext,
) -> Result<LoginOutcome, IdentityError> {
    let r = check_password(id, email, password, ctx).await;
    super::metrics::observe_password_login(id, ctx.org_id, &r).await;
    r
}

async fn check_password(
    id: &Identity,
    email: &str,
    password: &Secret<String>,
    ctx: &LoginContext,
) -> Result<LoginOutcome, IdentityError> {
    let now = id.clock.now();
    let found = match normalize_email(email) {
        Ok(email) => {
            let mut c = id.db.conn().await?;
            match store::users::find_by_email(&mut c, &email).await? {
                Some(user) => {
                    let hash = store::users::password_hash(&mut c, user.user_id).await?;
                    let lock = store::users::lockout(&mut c, user.user_id).await?;
                    Some((user, hash, lock))
                }
                None => None,
            }
        }
        Err(_) => None,
    };
    let Some((user, hash, lock)) = found else {
        dummy(id, password).await?;
        record(id, None, ctx, now, false).await?;
        return Err(IdentityError::InvalidCredentials);
    };
    if let Some(until) = lock.as_ref().and_then(|l| l.locked_until)
        && temporarily_locked(Some(until), now)
    {
        dummy(id, password).await?;
        record(id, Some(user.user_id), ctx, now, false).await?;
        return Err(IdentityError::AccountLocked { until: Some(until) });
    }
    let verified = match &hash {
        Some(h) => id.passwords.verify(password, h).await.map_err(internal)?,
        None => {
            dummy(id, password).await?;
            false
        }
    };
    if !verified {
        return Err(failure(id, &user, ctx, now).await?);
    }
    // The password is right: from here on the caller may learn the account's state.
    record(id, Some(user.user_id), ctx, now, true).await?;
    if !user.enabled {
        return Err(IdentityError::AccountDisabled);
    }
    if user.locked {
        return Err(IdentityError::AccountLocked { until: None });
    }
    let mut c = id.db.conn().await?;
    store::users::clear_login_failures(&mut c, user.user_id).await?;
    if let Some(h) = &hash
        && id.passwords.needs_rehash(h)
    {
        // Imported (bcrypt) or old-parameter hashes move to the current argon2id.
        let fresh = id.passwords.hash_any(password).await.map_err(internal)?;
        store::users::set_password_hash(&mut c, user.user_id, &fresh, now).await?;
        tracing::info!(user_id = %user.user_id, "password rehashed to current parameters");
    }
    drop(c);
    if let Some(org_id) = ctx.org_id {
        check_org(id, org_id, &user).await?;
    }
    if user.update_password_required {
        return Err(IdentityError::PasswordChangeRequired);
    }
    if super::mfa::mfa_required(id, user.user_id, ctx.org_id).await? {
        return Ok(LoginOutcome::MfaRequired { user });
    }
    Ok(LoginOutcome::Authenticated { user })
}

/// The second step of a login that answered `MfaRequired`: a TOTP code (six digits) or a
/// recovery code. Wrong codes count towards the same temporary lockout as wrong passwords,
/// so the second factor cannot be guessed either. Returns the RFC 8176 `amr` values for the
/// session (`["pwd", "otp", "mfa"]`).
pub async fn second_factor(
    id: &Identity,
    user_id: Uuid,
    code: &str,
    ctx: &LoginContext,
) -> Result<Vec<String>, IdentityError> {
    let r = check_second_factor(id, user_id, code, ctx).await;
    super::metrics::observe_second_factor(id, user_id, ctx.org_id, &r).await;
    r
}

async fn check_second_factor(
    id: &Identity,
    user_id: Uuid,
    code: &str,
    ctx: &LoginContext,
) -> Result<Vec<String>, IdentityError> {
    let now = id.clock.now();
    let user = super::users::get(id, user_id).await?;
    let mut c = id.db.conn().await?;
    let lock = store::users::lockout(&mut c, user_id).await?;
    drop(c);
    if let Some(until) = lock.and_then(|l| l.locked_until)
        && temporarily_locked(Some(until), now)
    {
        record(id, Some(user_id), ctx, now, false).await?;
        return Err(IdentityError::AccountLocked { until: Some(until) });
    }
    let result = if super::mfa::normalize_totp_input(code).is_some() {
        super::mfa::verify_totp(id, user_id, code).await
    } else {
        super::mfa::use_recovery_code(id, user_id, code).await
    };
    match result {
        Ok(()) => {
            record(id, Some(user_id), ctx, now, true).await?;
            let mut c = id.db.conn().await?;
            store::users::clear_login_failures(&mut c, user_id).await?;
            Ok(vec!["pwd".into(), "otp".into(), "mfa".into()])
        }
        Err(e @ (IdentityError::MfaCodeInvalid | IdentityError::MfaCodeReplayed)) => {
            match failure(id, &user, ctx, now).await? {
                locked @ IdentityError::AccountLocked { .. } => Err(locked),
                _ => Err(e),
            }
        }
        Err(other) => Err(other),
    }
}

async fn dummy(id: &Identity, password: &Secret<String>) -> Result<(), IdentityError> {
    id.passwords.verify_dummy(password).await.map_err(internal)
}

fn internal(e: super::passwords::PasswordError) -> IdentityError {
    IdentityError::Internal(e.to_string())
}

/// Counts a wrong password; the failure that reaches the limit answers `AccountLocked`.
async fn failure(
    id: &Identity,
    user: &User,
    ctx: &LoginContext,
    now: DateTime<Utc>,
) -> Result<IdentityError, IdentityError> {
    let cfg = &id.config.login;
    let window = chrono::Duration::from_std(cfg.failure_window).unwrap_or(chrono::Duration::MAX);
    let lockout = chrono::Duration::from_std(cfg.lockout).unwrap_or(chrono::Duration::MAX);
    let mut tx = id.db.begin().await?;
    let state = store::users::record_login_failure(
        &mut tx,
        user.user_id,
        now,
        now - window,
        i32::try_from(cfg.max_failures).unwrap_or(i32::MAX),
        now + lockout,
    )
    .await?;
    insert_attempt(&mut tx, Some(user.user_id), ctx, now, false).await?;
    tx.commit().await?;
    match state.and_then(|s| s.locked_until) {
        Some(until) if temporarily_locked(Some(until), now) => {
            tracing::warn!(user_id = %user.user_id, %until, "account temporarily locked after failed logins");
            Ok(IdentityError::AccountLocked { until: Some(until) })
        }
        _ => Ok(IdentityError::InvalidCredentials),
    }
}

async fn record(
    id: &Identity,
    user_id: Option<Uuid>,
    ctx: &LoginContext,
    now: DateTime<Utc>,
    success: bool,
) -> Result<(), IdentityError> {
    let mut c = id.db.conn().await?;
    insert_attempt(&mut c, user_id, ctx, now, success).await
}

async fn insert_attempt(
    a: &mut impl store::Access,
    user_id: Option<Uuid>,
    ctx: &LoginContext,
    now: DateTime<Utc>,
    success: bool,
) -> Result<(), IdentityError> {
    let attempt = LoginAttempt {
        attempt_id: Uuid::now_v7(),
        user_id,
        org_id: ctx.org_id,
        timestamp: now,
        success,
        ip_address: ctx.ip.map(Inet),
        // Bounded: the header is attacker-controlled.
        user_agent: ctx
            .user_agent
            .as_ref()
            .map(|ua| ua.chars().take(512).collect()),
    };
    store::login_attempts::insert(a, &attempt).await?;
    Ok(())
}

/// A login for an org needs a membership and the org allowing passwords.
async fn check_org(id: &Identity, org_id: Uuid, user: &User) -> Result<(), IdentityError> {
    let mut c = id.db.conn().await?;
    if store::memberships::get(&mut c, user.user_id, org_id)
        .await?
        .is_none()
    {
        return Err(IdentityError::Forbidden {
            reason: "not a member of this organization".into(),
        });
    }
    drop(c);
    super::orgs::require_login_method(id, org_id, super::orgs::LoginMethod::Password).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_lock_ends_at_its_instant() {
        let t = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert!(temporarily_locked(
            Some(t),
            t - chrono::Duration::seconds(1)
        ));
        assert!(!temporarily_locked(Some(t), t));
        assert!(!temporarily_locked(None, t));
    }
}
