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
    let ctx = &known_org(id, ctx).await?;
    let normalized = normalize_email(email);
    let found = match &normalized {
        Ok(email) => {
            let mut c = id.db.conn().await?;
            match store::users::find_by_email(&mut c, email).await? {
                Some(user) => {
                    let hash = store::users::password_hash(&mut c, user.user_id).await?;
                    Some((user, hash))
                }
                None => None,
            }
        }
        Err(_) => None,
    };
    let Some((user, hash)) = found else {
        // No account: the same work and the same answers as for a wrong password,
        // including a lock after repeated tries, so nothing tells the two apart.
        let key = normalized.unwrap_or_else(|_| email.trim().to_lowercase());
        let limits = Limits::new(id);
        let count = id.unknown_logins.count(&key, now, &limits);
        dummy(id, password).await?;
        record(id, None, ctx, now, false).await?;
        return Err(match count {
            Err(until) => IdentityError::AccountLocked { until: Some(until) },
            Ok(n) if n >= limits.max => {
                let until = now + limits.lockout;
                id.unknown_logins.lock(&key, until);
                IdentityError::AccountLocked { until: Some(until) }
            }
            Ok(_) => IdentityError::InvalidCredentials,
        });
    };
    // Count the attempt before checking it, so concurrent guesses cannot all be checked.
    let attempt = match count_attempt(id, &user, ctx, now).await? {
        Ok(n) => n,
        Err(locked) => {
            dummy(id, password).await?;
            return Err(locked);
        }
    };
    let verified = match &hash {
        Some(h) => id.passwords.verify(password, h).await?,
        None => {
            dummy(id, password).await?;
            false
        }
    };
    if !verified {
        return Err(failure(id, &user, ctx, now, attempt).await?);
    }
    // The password is right: from here on the caller may learn the account's state.
    let mut c = id.db.conn().await?;
    store::users::clear_login_failures(&mut c, user.user_id).await?;
    drop(c);
    let refused = if !user.enabled {
        Some(IdentityError::AccountDisabled)
    } else if user.locked {
        Some(IdentityError::AccountLocked { until: None })
    } else if let Some(org_id) = ctx.org_id {
        check_org(id, org_id, &user).await.err()
    } else {
        None
    };
    if let Some(e) = refused {
        record(id, Some(user.user_id), ctx, now, false).await?;
        return Err(e);
    }
    record(id, Some(user.user_id), ctx, now, true).await?;
    if let Some(old) = &hash
        && id.passwords.needs_rehash(old)
    {
        // Imported (bcrypt) or old-parameter hashes move to the current argon2id, unless
        // the password changed meanwhile.
        let fresh = id.passwords.hash_any(password).await?;
        let mut c = id.db.conn().await?;
        if store::users::replace_password_hash(&mut c, user.user_id, old, &fresh, now).await? {
            tracing::info!(user_id = %user.user_id, "password rehashed to current parameters");
        }
    }
    // The second factor comes before anything the password alone would unlock (such as
    // choosing a new password).
    if super::mfa::mfa_required(id, user.user_id, ctx.org_id).await? {
        return Ok(LoginOutcome::MfaRequired { user });
    }
    if user.update_password_required {
        return Err(IdentityError::PasswordChangeRequired);
    }
    Ok(LoginOutcome::Authenticated { user })
}

/// The lockout policy from the configuration.
struct Limits {
    max: u32,
    window: chrono::Duration,
    lockout: chrono::Duration,
}

impl Limits {
    fn new(id: &Identity) -> Self {
        let cfg = &id.config.login;
        let d = |d| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
        Limits {
            max: cfg.max_failures,
            window: d(cfg.failure_window),
            lockout: d(cfg.lockout),
        }
    }
}

/// A context naming an org that does not exist is refused (and recorded without it).
async fn known_org(id: &Identity, ctx: &LoginContext) -> Result<LoginContext, IdentityError> {
    if let Some(org_id) = ctx.org_id {
        let mut c = id.db.conn().await?;
        if store::orgs::get(&mut c, org_id).await?.is_none() {
            let bare = LoginContext {
                org_id: None,
                ..ctx.clone()
            };
            record(id, None, &bare, id.clock.now(), false).await?;
            return Err(IdentityError::NotFound {
                what: "organization",
            });
        }
    }
    Ok(ctx.clone())
}

/// Counts an attempt against the user; `Err` (already recorded) when the account is
/// temporarily locked, or this attempt is over the limit (which locks it).
async fn count_attempt(
    id: &Identity,
    user: &User,
    ctx: &LoginContext,
    now: DateTime<Utc>,
) -> Result<Result<u32, IdentityError>, IdentityError> {
    let limits = Limits::new(id);
    let mut c = id.db.conn().await?;
    let state = store::users::count_login_attempt(&mut c, user.user_id, now, now - limits.window)
        .await?
        .ok_or(IdentityError::InvalidCredentials)?;
    let count = u32::try_from(state.failed_login_count).unwrap_or(0);
    let locked = if let Some(until) = state
        .locked_until
        .filter(|u| temporarily_locked(Some(*u), now))
    {
        Some(until)
    } else if count > limits.max {
        let until = now + limits.lockout;
        store::users::lock_until(&mut c, user.user_id, until).await?;
        Some(until)
    } else {
        None
    };
    drop(c);
    match locked {
        Some(until) => {
            record(id, Some(user.user_id), ctx, now, false).await?;
            Ok(Err(IdentityError::AccountLocked { until: Some(until) }))
        }
        None => Ok(Ok(count)),
    }
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
    let ctx = &known_org(id, ctx).await?;
    let user = super::users::get(id, user_id).await?;
    let attempt = match count_attempt(id, &user, ctx, now).await? {
        Ok(n) => n,
        Err(locked) => return Err(locked),
    };
    let (result, amr) = if super::mfa::normalize_totp_input(code).is_some() {
        (
            super::mfa::verify_totp(id, user_id, code).await,
            vec!["pwd", "otp", "mfa"],
        )
    } else {
        // RFC 8176 has no value for a recovery code: it is a second factor, not an OTP.
        (
            super::mfa::use_recovery_code(id, user_id, code).await,
            vec!["pwd", "mfa"],
        )
    };
    match result {
        Ok(()) => {
            record(id, Some(user_id), ctx, now, true).await?;
            let mut c = id.db.conn().await?;
            store::users::clear_login_failures(&mut c, user_id).await?;
            if user.update_password_required {
                return Err(IdentityError::PasswordChangeRequired);
            }
            Ok(amr.into_iter().map(String::from).collect())
        }
        Err(e @ (IdentityError::MfaCodeInvalid | IdentityError::MfaCodeReplayed)) => {
            match failure(id, &user, ctx, now, attempt).await? {
                locked @ IdentityError::AccountLocked { .. } => Err(locked),
                _ => Err(e),
            }
        }
        Err(other) => Err(other),
    }
}

async fn dummy(id: &Identity, password: &Secret<String>) -> Result<(), IdentityError> {
    Ok(id.passwords.verify_dummy(password).await?)
}

/// A wrong password or code (already counted as attempt number `attempt`): the one that
/// reaches the limit locks the account and answers `AccountLocked`.
async fn failure(
    id: &Identity,
    user: &User,
    ctx: &LoginContext,
    now: DateTime<Utc>,
    attempt: u32,
) -> Result<IdentityError, IdentityError> {
    let limits = Limits::new(id);
    let mut tx = id.db.begin().await?;
    let locked = attempt >= limits.max;
    let until = now + limits.lockout;
    if locked {
        store::users::lock_until(&mut tx, user.user_id, until).await?;
    }
    insert_attempt(&mut tx, Some(user.user_id), ctx, now, false).await?;
    tx.commit().await?;
    if locked {
        tracing::warn!(user_id = %user.user_id, %until, "account temporarily locked after failed logins");
        Ok(IdentityError::AccountLocked { until: Some(until) })
    } else {
        Ok(IdentityError::InvalidCredentials)
    }
}

/// (attempts in the window, last attempt, temporary lock).
type UnknownEntry = (u32, DateTime<Utc>, Option<DateTime<Utc>>);

/// Failed-login bookkeeping for emails without an account, in memory, so that they lock
/// like real accounts do (a lock that only real accounts showed would reveal them).
#[derive(Debug, Default)]
pub struct UnknownEmails {
    entries: std::sync::Mutex<std::collections::HashMap<[u8; 32], UnknownEntry>>,
}

impl UnknownEmails {
    /// Entries beyond this are dropped wholesale.
    const MAX_ENTRIES: usize = 100_000;

    fn key(email: &str) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest(email.as_bytes()).into()
    }

    /// Counts an attempt like `count_login_attempt`; `Err(until)` while locked or when the
    /// count goes over the limit.
    fn count(
        &self,
        email: &str,
        now: DateTime<Utc>,
        limits: &Limits,
    ) -> Result<u32, DateTime<Utc>> {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX_ENTRIES {
            map.clear();
        }
        let e = map.entry(Self::key(email)).or_insert((0, now, None));
        match e.2 {
            Some(until) if until > now => return Err(until),
            Some(_) => *e = (0, now, None),
            None => {}
        }
        e.0 = if e.1 < now - limits.window {
            1
        } else {
            e.0 + 1
        };
        e.1 = now;
        if e.0 > limits.max {
            let until = now + limits.lockout;
            e.2 = Some(until);
            return Err(until);
        }
        Ok(e.0)
    }

    fn lock(&self, email: &str, until: DateTime<Utc>) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = map.get_mut(&Self::key(email)) {
            e.2 = Some(until);
        }
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

pub(crate) async fn insert_attempt(
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
