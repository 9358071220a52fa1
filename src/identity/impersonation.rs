//! Impersonation: an org admin holding the `impersonate` permission acts as a member of
//! that org, through a session of the member's that names the admin (`impersonator_id`).
//!
//! Rules (checked in one transaction that holds the org lock, so a concurrent role change
//! cannot slip between the check and the session):
//! - the admin is a member of the org whose effective permissions include `impersonate`,
//!   and is not impersonating anyone through the calling handle (no chains);
//! - the target is another member of the same org;
//! - the target is not a super-admin (holds no live `is_admin` API key), does not hold
//!   `impersonate` itself (no admin-on-admin), and holds no permission in the org that the
//!   admin lacks (impersonating must not widen the admin's reach).
//!
//! The session records no RFC 8176 `amr` value: the member did not authenticate, and no
//! registered value means "impersonated". Tokens issued for it carry the RFC 8693 §4.1
//! `act` claim instead ([`act_claim`]). The session, and with it the impersonation, ends by
//! itself after `impersonation.max_duration`.
use super::audit::{self, Actor, ActorKind, Event};
use super::sessions::{self, NewSession};
use super::{Identity, IdentityError};
use crate::config::Secret;
use crate::store::impersonation::ImpersonationLog;
use crate::store::sessions::Session;
use crate::store::{self, Inet};
use serde_json::{Value, json};
use std::net::IpAddr;
use uuid::Uuid;

/// The permission an admin needs in the org.
pub const PERMISSION: &str = "impersonate";
/// Longest page [`list`] returns; also the batch size of [`close_expired`].
pub const MAX_PAGE: u32 = 1000;

/// A started impersonation: the log row, the member's session (with `impersonator_id`)
/// and its refresh token (shown once; only its hash is kept).
#[derive(Debug)]
pub struct Impersonation {
    pub log: ImpersonationLog,
    pub session: Session,
    pub refresh_token: Option<Secret<String>>,
}

/// Whether `perms` (effective permission names) include `name` (names are unique per org
/// case-insensitively).
pub fn has_permission(perms: &[String], name: &str) -> bool {
    perms.iter().any(|p| p.eq_ignore_ascii_case(name))
}

/// May an admin with effective permissions `admin` impersonate a member with `target`?
/// Not an admin whose permissions lack `impersonate`; not a target holding `impersonate`;
/// not a target holding any permission the admin lacks.
pub fn check_permissions(admin: &[String], target: &[String]) -> Result<(), IdentityError> {
    if !has_permission(admin, PERMISSION) {
        return Err(IdentityError::Forbidden {
            reason: format!("the `{PERMISSION}` permission is required in this organization"),
        });
    }
    if has_permission(target, PERMISSION) {
        return Err(IdentityError::Forbidden {
            reason: "a member who may impersonate others cannot be impersonated".into(),
        });
    }
    if let Some(extra) = target.iter().find(|p| !has_permission(admin, p)) {
        return Err(IdentityError::Forbidden {
            reason: format!("the member holds `{extra}`, which you do not"),
        });
    }
    Ok(())
}

/// The RFC 8693 §4.1 actor claim for a token issued while `impersonator_id` impersonates
/// the token's subject: `{"act": {"sub": "<admin user id>"}}`, to merge into the claims.
/// (`sub` inside `act` uses the same namespace as the token's own `sub`: user ids.)
pub fn act_claim(impersonator_id: Uuid) -> Value {
    json!({ "act": { "sub": impersonator_id.to_string() } })
}

/// The handle to act through while using `session`: actor = the session's user, with the
/// impersonating admin (if any) beside it, so every audit row names both. The request's
/// IP and user agent are kept from `id`'s actor.
pub fn acting_identity(id: &Identity, session: &Session) -> Identity {
    id.acting_as(Actor {
        kind: ActorKind::User(session.user_id),
        impersonator: session.impersonator_id,
        ip: id.actor.ip,
        user_agent: id.actor.user_agent.clone(),
    })
}

/// `id` acting as the admin (the audit actor of start / end), keeping the request's origin.
fn as_admin(id: &Identity, admin_user_id: Uuid, ip: Option<IpAddr>, ua: Option<&str>) -> Identity {
    id.acting_as(Actor {
        kind: ActorKind::User(admin_user_id),
        impersonator: None,
        ip: ip.or(id.actor.ip),
        user_agent: ua
            .map(str::to_string)
            .or_else(|| id.actor.user_agent.clone()),
    })
}

fn forbidden(reason: &str) -> IdentityError {
    IdentityError::Forbidden {
        reason: reason.into(),
    }
}

/// Starts an impersonation (see the module rules): in one transaction opens the member's
/// session (bound to the org, `impersonator_id` = admin, with a refresh token), writes the
/// log row (IP, user agent, org, session, expiry) and the audit row
/// (`impersonation.started`, actor = the admin).
///
/// Errors: self → `Invalid { field: "target_user_id" }`; unknown org → `NotFound`; admin
/// not a member or lacking `impersonate`, a protected target, or a call through an
/// impersonating handle → `Forbidden`; target not a member of the org →
/// `NotFound { what: "membership" }`; a disabled or locked target → as `sessions::create`.
pub async fn start(
    id: &Identity,
    admin_user_id: Uuid,
    org_id: Uuid,
    target_user_id: Uuid,
    ip: Option<IpAddr>,
    user_agent: Option<&str>,
) -> Result<Impersonation, IdentityError> {
    if id.actor.impersonator.is_some() {
        return Err(forbidden(
            "cannot start an impersonation while impersonating",
        ));
    }
    if admin_user_id == target_user_id {
        return Err(IdentityError::invalid(
            "target_user_id",
            "you cannot impersonate yourself",
        ));
    }
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    super::roles::lock_org(&mut tx, org_id).await?;
    let admin = store::memberships::get(&mut tx, admin_user_id, org_id)
        .await?
        .ok_or_else(|| forbidden("you are not a member of this organization"))?;
    if !has_permission(&admin.user_permissions.0, PERMISSION) {
        return Err(IdentityError::Forbidden {
            reason: format!("the `{PERMISSION}` permission is required in this organization"),
        });
    }
    let target = store::memberships::get(&mut tx, target_user_id, org_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "membership" })?;
    if store::impersonation::holds_admin_key(&mut tx, target_user_id, now).await? {
        return Err(forbidden("a super-admin cannot be impersonated"));
    }
    check_permissions(&admin.user_permissions.0, &target.user_permissions.0)?;

    let user_agent: Option<String> = user_agent.map(|ua| ua.chars().take(512).collect());
    let issued = sessions::create_in(
        &mut tx,
        id,
        NewSession {
            user_id: target_user_id,
            org_id: Some(org_id),
            auth_methods: Vec::new(),
            ip,
            user_agent: user_agent.clone(),
            with_refresh_token: true,
            impersonator_id: Some(admin_user_id),
        },
    )
    .await?;
    let log = ImpersonationLog {
        log_id: Uuid::now_v7(),
        admin_user_id: Some(admin_user_id),
        impersonated_user_id: Some(target_user_id),
        started_at: now,
        ended_at: None,
        ip_address: ip.map(Inet),
        user_agent: user_agent.clone(),
        org_id: Some(org_id),
        session_id: Some(issued.session.session_id),
        expires_at: issued.session.expires_at,
    };
    store::impersonation::insert(&mut tx, &log).await?;
    audit::record(
        &mut tx,
        &as_admin(id, admin_user_id, ip, user_agent.as_deref()),
        Event {
            org_id: Some(org_id),
            action: "impersonation.started",
            object_type: "impersonation",
            object_id: log.log_id.to_string(),
            details: json!({
                "admin_user_id": admin_user_id,
                "impersonated_user_id": target_user_id,
                "session_id": issued.session.session_id,
                "expires_at": log.expires_at,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Impersonation {
        log,
        session: issued.session,
        refresh_token: issued.refresh_token,
    })
}

/// Ends one of the admin's impersonations: sets `ended_at` (the expiry, if it already
/// passed), revokes its session and writes the audit row (`impersonation.ended`, actor =
/// the admin), in one transaction. Ending an ended one returns it unchanged; another
/// admin's is `NotFound`.
pub async fn end(
    id: &Identity,
    log_id: Uuid,
    admin_user_id: Uuid,
) -> Result<ImpersonationLog, IdentityError> {
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    let mut log = store::impersonation::get(&mut tx, log_id)
        .await?
        .filter(|l| l.admin_user_id == Some(admin_user_id))
        .ok_or(IdentityError::NotFound {
            what: "impersonation",
        })?;
    if log.ended_at.is_some() {
        return Ok(log);
    }
    let actor = as_admin(id, admin_user_id, None, None);
    close(&mut tx, &actor, &mut log, now).await?;
    tx.commit().await?;
    Ok(log)
}

/// Sets `ended_at` (at most the expiry), revokes the session, writes the audit row.
async fn close(
    tx: &mut store::Tx,
    id: &Identity,
    log: &mut ImpersonationLog,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), IdentityError> {
    let expired = now >= log.expires_at;
    let ended_at = now.min(log.expires_at);
    if !store::impersonation::set_ended(tx, log.log_id, ended_at).await? {
        return Ok(());
    }
    log.ended_at = Some(ended_at);
    if let Some(session_id) = log.session_id {
        store::sessions::revoke(tx, session_id).await?;
    }
    audit::record(
        tx,
        id,
        Event {
            org_id: log.org_id,
            action: "impersonation.ended",
            object_type: "impersonation",
            object_id: log.log_id.to_string(),
            details: json!({
                "admin_user_id": log.admin_user_id,
                "impersonated_user_id": log.impersonated_user_id,
                "session_id": log.session_id,
                "ended_at": ended_at,
                "expired": expired,
            }),
        },
    )
    .await
}

/// Records the end of impersonations that expired without being ended (`ended_at` = their
/// expiry; sessions revoked; one audit row each, actor = `id`'s), up to [`MAX_PAGE`] per
/// call in one transaction; returns how many. For a periodic task: expiry itself needs no
/// sweep, since the session stops working at `expires_at`.
pub async fn close_expired(id: &Identity) -> Result<u64, IdentityError> {
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    let logs = store::impersonation::list_expired_open(&mut tx, now, MAX_PAGE).await?;
    let n = logs.len() as u64;
    for mut log in logs {
        close(&mut tx, id, &mut log, now).await?;
    }
    tx.commit().await?;
    Ok(n)
}

/// The admin's impersonations still going (not ended, not expired, session not revoked),
/// newest first.
pub async fn active(
    id: &Identity,
    admin_user_id: Uuid,
) -> Result<Vec<ImpersonationLog>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::impersonation::list_active_for_admin(&mut c, admin_user_id, id.clock.now()).await?)
}

/// The log, in start order after `after`, optionally one admin's or one member's.
pub async fn list(
    id: &Identity,
    admin_user_id: Option<Uuid>,
    impersonated_user_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ImpersonationLog>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::impersonation::list(
        &mut c,
        admin_user_id,
        impersonated_user_id,
        after,
        limit.clamp(1, MAX_PAGE),
    )
    .await?)
}

/// One log row.
pub async fn get(id: &Identity, log_id: Uuid) -> Result<ImpersonationLog, IdentityError> {
    let mut c = id.db.conn().await?;
    store::impersonation::get(&mut c, log_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "impersonation",
        })
}

/// One org's log, in start order after `after`.
pub async fn list_in_org(
    id: &Identity,
    org_id: Uuid,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ImpersonationLog>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::impersonation::list_in_org(&mut c, org_id, after, limit.clamp(1, MAX_PAGE)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn perms(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn act_claim_is_rfc8693_actor() {
        let admin = Uuid::parse_str("0190f5d2-7c1e-7a3b-9c4d-5e6f7a8b9c0d").unwrap();
        assert_eq!(
            act_claim(admin),
            json!({"act": {"sub": "0190f5d2-7c1e-7a3b-9c4d-5e6f7a8b9c0d"}})
        );
        // Merges into a claim set as one top-level member.
        let mut claims = json!({"sub": "someone", "iss": "https://id.example"});
        claims
            .as_object_mut()
            .unwrap()
            .extend(act_claim(admin).as_object().unwrap().clone());
        assert_eq!(claims["act"]["sub"], admin.to_string());
        assert_eq!(claims["sub"], "someone");
    }

    #[test]
    fn permission_rules() {
        let admin = perms(&["impersonate", "users.read", "users.write"]);
        assert!(check_permissions(&admin, &perms(&[])).is_ok());
        assert!(check_permissions(&admin, &perms(&["users.read"])).is_ok());
        // Names compare case-insensitively.
        assert!(check_permissions(&perms(&["Impersonate", "x"]), &perms(&["X"])).is_ok());
        // No `impersonate`: refused whatever the target.
        assert!(matches!(
            check_permissions(&perms(&["users.read"]), &perms(&[])),
            Err(IdentityError::Forbidden { .. })
        ));
        // A target who may impersonate too.
        assert!(matches!(
            check_permissions(&admin, &perms(&["impersonate"])),
            Err(IdentityError::Forbidden { .. })
        ));
        // A target with more reach than the admin.
        let e = check_permissions(&admin, &perms(&["users.read", "billing.write"])).unwrap_err();
        assert!(e.to_string().contains("billing.write"), "{e}");
    }
}
