//! Sessions: opened after every required factor, ended by expiry, idle timeout or revocation.
//! Refresh tokens are 256-bit secrets stored only as SHA-256 hashes.
//!
//! Opening and revoking sessions is audited; validating a session and rotating its refresh
//! token are authentication steps and are not.
use super::audit::{self, Event};
use super::{Identity, IdentityError};
use crate::store::sessions::Session;
use crate::store::{self, Inet, TextList, Tx};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use uuid::Uuid;

/// Writes recording activity (`sessions.last_seen_at`, `users.last_active_at`) happen at
/// most this often per session / user.
pub const ACTIVITY_WRITE_INTERVAL_SECS: i64 = 60;

/// RFC 8176 authentication method references a session can record.
pub const AUTH_METHODS: &[&str] = &[
    "pwd", "otp", "mfa", "fed", "hwk", "swk", "sms", "email", "saml", "oidc",
];

#[derive(Debug, Clone, Default)]
pub struct NewSession {
    pub user_id: Uuid,
    pub org_id: Option<Uuid>,
    /// How the user authenticated (RFC 8176 `amr`), e.g. `["pwd", "otp"]`.
    pub auth_methods: Vec<String>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// Also issue a refresh token.
    pub with_refresh_token: bool,
    /// The admin impersonating the user (see `identity::impersonation`); such a session
    /// lasts at most `impersonation.max_duration`.
    pub impersonator_id: Option<Uuid>,
}

/// A new session and, when asked for, its refresh token (shown once; only its hash is kept).
#[derive(Debug)]
pub struct Issued {
    pub session: Session,
    pub refresh_token: Option<crate::config::Secret<String>>,
}

/// SHA-256 (hex) of a bearer secret: what the store keeps and looks up.
pub fn hash_token(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A fresh 256-bit secret, base64url without padding.
pub fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Why a session is no longer usable at `now`, if it is not: revoked, past its absolute
/// lifetime, or idle for longer than `idle`.
pub fn check(
    session: &Session,
    now: DateTime<Utc>,
    idle: chrono::Duration,
) -> Result<(), IdentityError> {
    if session.revoked {
        return Err(IdentityError::SessionRevoked);
    }
    if now >= session.expires_at || now - session.last_seen_at >= idle {
        return Err(IdentityError::SessionExpired);
    }
    Ok(())
}

fn duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Opens a session for a user who passed every required factor. Refused for a disabled or
/// locked user, or one who must change their password first.
pub async fn create(id: &Identity, new: NewSession) -> Result<Issued, IdentityError> {
    let mut tx = id.db.begin().await?;
    let issued = create_in(&mut tx, id, new).await?;
    tx.commit().await?;
    id.activity.seen(
        issued.session.user_id,
        issued.session.created_at.timestamp(),
    );
    Ok(issued)
}

/// [`create`] inside the caller's transaction (which must be committed for the session to
/// exist).
pub(crate) async fn create_in(
    tx: &mut Tx,
    id: &Identity,
    new: NewSession,
) -> Result<Issued, IdentityError> {
    if let Some(bad) = new
        .auth_methods
        .iter()
        .find(|m| !AUTH_METHODS.contains(&m.as_str()))
    {
        return Err(IdentityError::invalid(
            "auth_methods",
            format!("unknown method `{bad}`"),
        ));
    }
    let now = id.clock.now();
    let user = store::users::get_for_update(tx, new.user_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })?;
    if !user.enabled {
        return Err(IdentityError::AccountDisabled);
    }
    let lock = store::users::lockout(tx, user.user_id).await?;
    let temp_lock = lock
        .and_then(|l| l.locked_until)
        .filter(|u| super::login::temporarily_locked(Some(*u), now));
    if user.locked || temp_lock.is_some() {
        return Err(IdentityError::AccountLocked { until: temp_lock });
    }
    // A federated login does not use the password, so a pending change does not block it.
    if user.update_password_required && !new.auth_methods.iter().any(|m| m == "fed") {
        return Err(IdentityError::PasswordChangeRequired);
    }
    if let Some(org_id) = new.org_id
        && store::memberships::get(tx, user.user_id, org_id)
            .await?
            .is_none()
    {
        return Err(IdentityError::NotFound { what: "membership" });
    }
    // A membership the org's IdP deprovisioned over SCIM (`active: false`) opens nothing.
    if let Some(org_id) = new.org_id
        && !store::scim::resources::membership_active(tx, org_id, user.user_id).await?
    {
        return Err(IdentityError::AccountDisabled);
    }
    // MFA users, and members of orgs that require MFA, get sessions only after a second
    // factor (impersonation sessions carry the admin's authentication instead).
    let second_factor = new.auth_methods.iter().any(|m| m == "mfa" || m == "otp");
    if new.impersonator_id.is_none() && !second_factor {
        let org_requires = match new.org_id {
            Some(org_id) => store::orgs::get(tx, org_id)
                .await?
                .is_some_and(|o| o.mfa_required),
            None => false,
        };
        if user.mfa_enabled || org_requires {
            return Err(IdentityError::SecondFactorRequired);
        }
    }
    let refresh = new.with_refresh_token.then(new_token);
    let mut lifetime = duration(id.config.sessions.max_lifetime);
    if new.impersonator_id.is_some() {
        lifetime = lifetime.min(duration(id.config.impersonation.max_duration));
    }
    let session = Session {
        session_id: Uuid::now_v7(),
        user_id: user.user_id,
        refresh_token: refresh.as_deref().map(hash_token),
        created_at: now,
        expires_at: now + lifetime,
        revoked: false,
        ip_address: new.ip.map(Inet),
        user_agent: new.user_agent.map(|ua| ua.chars().take(512).collect()),
        org_id: new.org_id,
        auth_methods: TextList(new.auth_methods),
        auth_time: now,
        last_seen_at: now,
        impersonator_id: new.impersonator_id,
    };
    store::sessions::insert(tx, &session).await?;
    store::users::touch_last_active(
        tx,
        user.user_id,
        now.timestamp(),
        ACTIVITY_WRITE_INTERVAL_SECS,
    )
    .await?;
    let mut event = Event::new("session.created", "session", session.session_id).details(json!({
        "user_id": user.user_id,
        "auth_methods": session.auth_methods,
        "refresh_token_issued": refresh.is_some(),
        "expires_at": session.expires_at,
        "impersonator_id": session.impersonator_id,
    }));
    if let Some(org_id) = session.org_id {
        event = event.org(org_id);
    }
    audit::record(tx, id, event).await?;
    Ok(Issued {
        session,
        refresh_token: refresh.map(crate::config::Secret::new),
    })
}

/// Looks a session up and checks it is still usable; records activity (at most one write a
/// minute per session and per user).
pub async fn validate(id: &Identity, session_id: Uuid) -> Result<Session, IdentityError> {
    let now = id.clock.now();
    let mut c = id.db.conn().await?;
    let session = store::sessions::get(&mut c, session_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "session" })?;
    check(&session, now, duration(id.config.sessions.idle_timeout))?;
    let interval = chrono::Duration::seconds(ACTIVITY_WRITE_INTERVAL_SECS);
    if now - session.last_seen_at >= interval {
        store::sessions::touch(&mut c, session_id, now, interval).await?;
    }
    if id.activity.due(session.user_id, now.timestamp()) {
        store::users::touch_last_active(
            &mut c,
            session.user_id,
            now.timestamp(),
            ACTIVITY_WRITE_INTERVAL_SECS,
        )
        .await?;
        id.activity.seen(session.user_id, now.timestamp());
    }
    Ok(session)
}

/// Exchanges a refresh token for a new one (rotation): the old token stops working. A
/// refresh token of a revoked or expired session, or an unknown one, is refused.
pub async fn rotate_refresh_token(
    id: &Identity,
    refresh_token: &str,
) -> Result<Issued, IdentityError> {
    let now = id.clock.now();
    let old_hash = hash_token(refresh_token);
    let mut c = id.db.conn().await?;
    let session = store::sessions::find_by_refresh_hash(&mut c, &old_hash)
        .await?
        .ok_or(IdentityError::TokenInvalid)?;
    // Revoked, past its lifetime, or idle too long: a refresh token cannot revive it.
    check(&session, now, duration(id.config.sessions.idle_timeout))?;
    let fresh = new_token();
    if !store::sessions::rotate_refresh_hash(
        &mut c,
        session.session_id,
        &old_hash,
        &hash_token(&fresh),
    )
    .await?
    {
        // Another request rotated it first.
        return Err(IdentityError::TokenUsed);
    }
    store::sessions::touch(&mut c, session.session_id, now, chrono::Duration::zero()).await?;
    let session = store::sessions::get(&mut c, session.session_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "session" })?;
    Ok(Issued {
        session,
        refresh_token: Some(crate::config::Secret::new(fresh)),
    })
}

/// Ends one session of a user (another user's session id is not found).
pub async fn revoke(id: &Identity, user_id: Uuid, session_id: Uuid) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let s = match store::sessions::get(&mut tx, session_id).await? {
        Some(s) if s.user_id == user_id => s,
        _ => return Err(IdentityError::NotFound { what: "session" }),
    };
    store::sessions::revoke(&mut tx, session_id).await?;
    let mut event = Event::new("session.revoked", "session", session_id).details(json!({
        "user_id": user_id,
        "was_revoked": s.revoked,
    }));
    if let Some(org_id) = s.org_id {
        event = event.org(org_id);
    }
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    id.sessions_ended();
    Ok(())
}

/// Ends every session of the user except `keep`; returns how many.
pub async fn revoke_all_for_user(
    id: &Identity,
    user_id: Uuid,
    keep: Option<Uuid>,
) -> Result<u64, IdentityError> {
    let mut tx = id.db.begin().await?;
    if store::users::get_for_update(&mut tx, user_id)
        .await?
        .is_none()
    {
        return Err(IdentityError::NotFound { what: "user" });
    }
    let n = store::sessions::revoke_all_for_user(&mut tx, user_id, keep).await?;
    let event = Event::new("sessions.revoked", "user", user_id)
        .details(json!({ "count": n, "kept_session_id": keep }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    id.sessions_ended();
    Ok(n)
}

/// Ends every session opened for the org; returns how many.
pub async fn revoke_all_for_org(id: &Identity, org_id: Uuid) -> Result<u64, IdentityError> {
    let mut tx = id.db.begin().await?;
    if store::orgs::get(&mut tx, org_id).await?.is_none() {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    let n = store::sessions::revoke_all_for_org(&mut tx, org_id).await?;
    let event = Event::new("sessions.revoked", "organization", org_id)
        .org(org_id)
        .details(json!({ "count": n }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    id.sessions_ended();
    Ok(n)
}

/// The user's usable sessions, newest first.
pub async fn list_active(id: &Identity, user_id: Uuid) -> Result<Vec<Session>, IdentityError> {
    let now = id.clock.now();
    let idle = duration(id.config.sessions.idle_timeout);
    let mut c = id.db.conn().await?;
    Ok(store::sessions::list_active_for_user(&mut c, user_id, now)
        .await?
        .into_iter()
        .filter(|s| check(s, now, idle).is_ok())
        .collect())
}

/// Remembers, per process, when each user's activity was last written, so a busy user
/// costs no query at all between writes (the store's conditional update keeps several
/// nodes to the same once-a-minute bound).
#[derive(Debug, Default)]
pub struct ActivityThrottle {
    last: Mutex<HashMap<Uuid, i64>>,
}

impl ActivityThrottle {
    /// Entries beyond this are dropped wholesale (they only save queries).
    const MAX_ENTRIES: usize = 100_000;

    pub fn due(&self, user_id: Uuid, now: i64) -> bool {
        let last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        last.get(&user_id)
            .is_none_or(|t| now - t >= ACTIVITY_WRITE_INTERVAL_SECS)
    }

    pub fn seen(&self, user_id: Uuid, now: i64) {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.len() >= Self::MAX_ENTRIES {
            last.clear();
        }
        last.insert(user_id, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(now: DateTime<Utc>) -> Session {
        Session {
            session_id: Uuid::nil(),
            user_id: Uuid::nil(),
            refresh_token: None,
            created_at: now,
            expires_at: now + chrono::Duration::hours(10),
            revoked: false,
            ip_address: None,
            user_agent: None,
            org_id: None,
            auth_methods: TextList::default(),
            auth_time: now,
            last_seen_at: now,
            impersonator_id: None,
        }
    }

    #[test]
    fn expiry_idle_and_revocation() {
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let idle = chrono::Duration::minutes(30);
        let s = session(t0);
        assert!(check(&s, t0 + chrono::Duration::minutes(29), idle).is_ok());
        assert!(matches!(
            check(&s, t0 + idle, idle),
            Err(IdentityError::SessionExpired)
        ));
        let mut active = s.clone();
        active.last_seen_at = t0 + chrono::Duration::hours(9) + chrono::Duration::minutes(50);
        assert!(
            check(
                &active,
                t0 + chrono::Duration::hours(9) + chrono::Duration::minutes(59),
                idle
            )
            .is_ok()
        );
        assert!(matches!(
            check(&active, t0 + chrono::Duration::hours(10), idle),
            Err(IdentityError::SessionExpired)
        ));
        let mut revoked = s;
        revoked.revoked = true;
        assert!(matches!(
            check(&revoked, t0, idle),
            Err(IdentityError::SessionRevoked)
        ));
    }

    #[test]
    fn tokens_are_256_bit_and_hashed() {
        let t = new_token();
        assert_eq!(t.len(), 43);
        assert_ne!(new_token(), t);
        assert_eq!(hash_token(&t).len(), 64);
        assert_ne!(hash_token(&t), t);
    }

    #[test]
    fn throttle_allows_one_write_a_minute() {
        let th = ActivityThrottle::default();
        let u = Uuid::now_v7();
        assert!(th.due(u, 1000));
        th.seen(u, 1000);
        assert!(!th.due(u, 1059));
        assert!(th.due(u, 1060));
    }
}
