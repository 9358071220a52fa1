//! The waitlist: people leave their address (public, rate-limited by the HTTP layer), an
//! admin invites them, and the mailed single-use link lets them create their account.
//!
//! Invitation tokens are 256 random bits ([`super::tokens::generate`]), stored only as their
//! SHA-256, void once used, once expired (`waitlist.invitation_ttl`) and once a newer
//! invitation is sent to the same signup (the older ones are marked used).
use super::audit::{self, Event};
use super::mailer::Email;
use super::tokens::{self, describe_ttl, token_hash};
use super::users::normalize_email;
use super::{Identity, IdentityError};
use crate::config::Secret;
use crate::store::users::User;
use crate::store::waitlist::{Invitation, Signup};
use crate::store::{self, Json};
use chrono::{DateTime, Utc};
use serde_json::json;
use subtle::ConstantTimeEq as _;
use url::Url;
use uuid::Uuid;

/// Where the invitation link points (the hosted sign-up page).
pub const SIGNUP_PATH: &str = "/signup";
/// Longest page [`list`] returns.
pub const MAX_PAGE: u32 = 500;
/// Longest first or last name.
pub const MAX_NAME_LEN: usize = 256;

/// `{issuer}/signup?invitation={token}`, with no double slash when the issuer ends in `/`.
/// The token is base64url (RFC 4648 §5), so it needs no percent-encoding.
pub fn invitation_link(issuer: &Url, token: &str) -> String {
    format!(
        "{}{SIGNUP_PATH}?invitation={token}",
        issuer.as_str().trim_end_matches('/')
    )
}

/// Decides whether a stored invitation may be used at `now` by someone presenting a token
/// whose hash is `presented_hash`: wrong hash → invalid; used (or superseded) → used;
/// `now >= expires_at` → expired (in that order).
pub fn check_invitation(
    row: &Invitation,
    presented_hash: &str,
    now: DateTime<Utc>,
) -> Result<(), IdentityError> {
    let hash_ok: bool = row
        .token_hash
        .as_bytes()
        .ct_eq(presented_hash.as_bytes())
        .into();
    if !hash_ok {
        return Err(IdentityError::TokenInvalid);
    }
    if row.used_at.is_some() {
        return Err(IdentityError::TokenUsed);
    }
    if now >= row.expires_at {
        return Err(IdentityError::TokenExpired);
    }
    Ok(())
}

/// A first or last name: trimmed, empty is none, at most [`MAX_NAME_LEN`] characters.
fn check_name(field: &'static str, raw: Option<&str>) -> Result<Option<String>, IdentityError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(n) if n.chars().count() > MAX_NAME_LEN || n.chars().any(char::is_control) => {
            Err(IdentityError::invalid(
                field,
                "must be at most 256 characters, no control characters",
            ))
        }
        Some(n) => Ok(Some(n.to_string())),
    }
}

fn not_found() -> IdentityError {
    IdentityError::NotFound {
        what: "waitlist signup",
    }
}

fn email_taken(email: &str) -> IdentityError {
    IdentityError::Conflict {
        field: "email".into(),
        message: format!("a user with email {email} already exists"),
    }
}

/// Puts an address on the waitlist. Joining again with the same address (in any case) returns
/// the existing signup and writes nothing, so the answer is the same either way; only a new
/// row is audited (`waitlist.joined`). A malformed address is `Invalid { field: "email" }`.
pub async fn join(id: &Identity, email: &str) -> Result<Signup, IdentityError> {
    let email = normalize_email(email)?;
    let signup = Signup {
        signup_id: Uuid::now_v7(),
        email,
        invited: false,
        invited_at: None,
        created_at: id.clock.now(),
    };
    let mut tx = id.db.begin().await?;
    if store::waitlist::insert_if_absent(&mut tx, &signup).await? {
        audit::record(
            &mut tx,
            id,
            Event {
                org_id: None,
                action: "waitlist.joined",
                object_type: "waitlist_signup",
                object_id: signup.signup_id.to_string(),
                details: json!({ "email": signup.email }),
            },
        )
        .await?;
        tx.commit().await?;
        return Ok(signup);
    }
    // Already there: read it back in the same transaction (nothing was written).
    store::waitlist::find_by_email(&mut tx, &signup.email)
        .await?
        .ok_or_else(|| IdentityError::Internal("waitlist signup vanished".into()))
}

pub async fn get(id: &Identity, signup_id: Uuid) -> Result<Signup, IdentityError> {
    let mut c = id.db.conn().await?;
    store::waitlist::get(&mut c, signup_id)
        .await?
        .ok_or_else(not_found)
}

/// A page of signups in sign-up order after `after`; `invited` narrows to the invited
/// (`Some(true)`) or not yet invited (`Some(false)`) ones.
pub async fn list(
    id: &Identity,
    after: Option<Uuid>,
    limit: u32,
    invited: Option<bool>,
) -> Result<Vec<Signup>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::waitlist::list(&mut c, after, limit.clamp(1, MAX_PAGE), invited).await?)
}

/// Invites a signup: in one transaction voids its earlier invitations, stores a new one
/// (hashed, expiring after `waitlist.invitation_ttl`), sets `invited` / `invited_at` and
/// writes the audit row (`waitlist.invited`); then mails the link. Inviting again sends a
/// new link. An address that already has an account is a `Conflict` (nothing written).
/// A failed delivery is an error (the invitation stays valid; inviting again resends).
pub async fn invite(id: &Identity, signup_id: Uuid) -> Result<Signup, IdentityError> {
    let ttl = id.config.waitlist.invitation_ttl;
    let lifetime =
        chrono::Duration::from_std(ttl).map_err(|e| IdentityError::Internal(e.to_string()))?;
    let now = id.clock.now();
    let new = tokens::generate();
    let mut tx = id.db.begin().await?;
    let mut signup = store::waitlist::get(&mut tx, signup_id)
        .await?
        .ok_or_else(not_found)?;
    if store::users::find_by_email(&mut tx, &signup.email)
        .await?
        .is_some()
    {
        return Err(email_taken(&signup.email));
    }
    let voided = store::waitlist::void_unused_invitations(&mut tx, signup_id, now).await?;
    let invitation = Invitation {
        invitation_id: Uuid::now_v7(),
        signup_id,
        token_hash: new.hash,
        created_at: now,
        expires_at: now + lifetime,
        used_at: None,
        user_id: None,
    };
    store::waitlist::insert_invitation(&mut tx, &invitation).await?;
    store::waitlist::mark_invited(&mut tx, signup_id, now).await?;
    let before = signup.clone();
    signup.invited = true;
    signup.invited_at = Some(now);
    let mut details = audit::diff(&json!(before), &json!(signup), &[]);
    if let Some(d) = details.as_object_mut() {
        d.insert("email".into(), json!(signup.email));
        d.insert("invitation_id".into(), json!(invitation.invitation_id));
        d.insert("expires_at".into(), json!(invitation.expires_at));
        d.insert("voided_invitations".into(), json!(voided));
    }
    audit::record(
        &mut tx,
        id,
        Event {
            org_id: None,
            action: "waitlist.invited",
            object_type: "waitlist_signup",
            object_id: signup_id.to_string(),
            details,
        },
    )
    .await?;
    tx.commit().await?;

    let url = invitation_link(&id.config.issuer, new.secret.expose());
    let text = format!(
        "You are invited to create your account. Open this link to sign up:\n\n{url}\n\n\
         The link works once and expires in {}. If you did not join the waitlist, \
         you can ignore this message.\n",
        describe_ttl(ttl)
    );
    id.mailer
        .send(Email {
            to: signup.email.clone(),
            subject: "Your invitation".into(),
            text,
        })
        .await
        .map_err(|e| IdentityError::Internal(e.to_string()))?;
    Ok(signup)
}

/// Creates the account of an invited person. The token must be a live invitation
/// (`TokenInvalid` / `TokenUsed` / `TokenExpired`); the password, if any, must meet the
/// policy (a rejected one leaves the token unused). In one transaction: uses the token,
/// creates the user with the waitlist address already confirmed (the link reached it) and
/// writes the audit row (`user.created`). An address that already has an account is a
/// `Conflict`, and then nothing is written (the token stays unused).
pub async fn accept_invitation(
    id: &Identity,
    token: &str,
    password: Option<&Secret<String>>,
    first_name: Option<&str>,
    last_name: Option<&str>,
) -> Result<User, IdentityError> {
    let hash = token_hash(token).ok_or(IdentityError::TokenInvalid)?;
    let row = {
        let mut c = id.db.conn().await?;
        store::waitlist::find_invitation_by_hash(&mut c, &hash)
            .await?
            .ok_or(IdentityError::TokenInvalid)?
    };
    check_invitation(&row, &hash, id.clock.now())?;
    let first_name = check_name("first_name", first_name)?;
    let last_name = check_name("last_name", last_name)?;
    let phc = match password {
        Some(pw) => Some(id.passwords.hash(pw).await?),
        None => None,
    };
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    // First statement of the transaction: of two concurrent uses, the second waits here and
    // then matches no row.
    if !store::waitlist::mark_invitation_used(&mut tx, row.invitation_id, now).await? {
        let fresh = store::waitlist::get_invitation(&mut tx, row.invitation_id)
            .await?
            .ok_or(IdentityError::TokenInvalid)?;
        check_invitation(&fresh, &hash, now)?;
        return Err(IdentityError::TokenInvalid);
    }
    let signup = store::waitlist::get(&mut tx, row.signup_id)
        .await?
        .ok_or(IdentityError::TokenInvalid)?;
    if store::users::find_by_email(&mut tx, &signup.email)
        .await?
        .is_some()
    {
        // Dropping `tx` undoes the use of the token.
        return Err(email_taken(&signup.email));
    }
    let mut user = User {
        user_id: Uuid::now_v7(),
        legacy_user_id: None,
        email: signup.email.clone(),
        email_confirmed: true,
        username: None,
        first_name,
        last_name,
        picture_url: None,
        properties: Json(json!({})),
        has_password: false,
        update_password_required: false,
        locked: false,
        enabled: true,
        mfa_enabled: false,
        can_create_orgs: false,
        created_at: now.timestamp(),
        last_active_at: None,
    };
    store::users::insert(&mut tx, &user)
        .await
        .map_err(|e| match e.conflict_field() {
            Some("email") => email_taken(&signup.email),
            _ => IdentityError::from_store_conflict(e, |f| {
                format!("a user with this {f} already exists")
            }),
        })?;
    if let Some(phc) = &phc {
        store::users::set_password_hash(&mut tx, user.user_id, phc, now).await?;
        user.has_password = true;
    }
    store::waitlist::set_invitation_user(&mut tx, row.invitation_id, user.user_id).await?;
    audit::record(
        &mut tx,
        id,
        Event {
            org_id: None,
            action: "user.created",
            object_type: "user",
            object_id: user.user_id.to_string(),
            details: json!({
                "email": user.email,
                "via": "waitlist_invitation",
                "signup_id": signup.signup_id,
                "invitation_id": row.invitation_id,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn links() {
        let t = "A".repeat(43);
        for (issuer, want) in [
            (
                "https://id.example.com",
                format!("https://id.example.com/signup?invitation={t}"),
            ),
            (
                "https://id.example.com/",
                format!("https://id.example.com/signup?invitation={t}"),
            ),
            (
                "https://example.com/lintel/",
                format!("https://example.com/lintel/signup?invitation={t}"),
            ),
        ] {
            assert_eq!(invitation_link(&Url::parse(issuer).unwrap(), &t), want);
        }
    }

    fn row(hash: &str) -> Invitation {
        Invitation {
            invitation_id: Uuid::now_v7(),
            signup_id: Uuid::now_v7(),
            token_hash: hash.into(),
            created_at: at("2026-01-01T00:00:00Z"),
            expires_at: at("2026-01-08T00:00:00Z"),
            used_at: None,
            user_id: None,
        }
    }

    #[test]
    fn invitation_check_order_and_expiry_boundary() {
        let t = tokens::generate();
        let r = row(&t.hash);
        let before = at("2026-01-07T23:59:59.999999Z");
        assert!(check_invitation(&r, &t.hash, before).is_ok());
        assert!(matches!(
            check_invitation(&r, &t.hash, r.expires_at),
            Err(IdentityError::TokenExpired)
        ));
        assert!(matches!(
            check_invitation(&r, &tokens::generate().hash, before),
            Err(IdentityError::TokenInvalid)
        ));
        let used = Invitation {
            used_at: Some(before),
            ..r.clone()
        };
        assert!(matches!(
            check_invitation(&used, &t.hash, before),
            Err(IdentityError::TokenUsed)
        ));
        // Used wins over expired; invalid wins over both.
        assert!(matches!(
            check_invitation(&used, &t.hash, r.expires_at),
            Err(IdentityError::TokenUsed)
        ));
        assert!(matches!(
            check_invitation(&used, &tokens::generate().hash, r.expires_at),
            Err(IdentityError::TokenInvalid)
        ));
    }

    #[test]
    fn names() {
        assert_eq!(check_name("first_name", None).unwrap(), None);
        assert_eq!(check_name("first_name", Some("  ")).unwrap(), None);
        assert_eq!(
            check_name("first_name", Some(" Ada ")).unwrap().as_deref(),
            Some("Ada")
        );
        assert!(check_name("first_name", Some(&"x".repeat(257))).is_err());
        assert!(check_name("last_name", Some("a\u{0}b")).is_err());
    }
}
