//! Users.
use super::audit::{self, Event};
use super::{Identity, IdentityError};
use crate::config::Secret;
use crate::store::memberships::Membership;
use crate::store::{self, Json, Tx, users::User};
use serde_json::json;
use uuid::Uuid;

pub const MAX_EMAIL_LEN: usize = 254;

/// Normalizes an email address for storage and comparison: trimmed and lower-cased.
/// Checks the shape RFC 5321 §4.5.3.1 bounds: one `@`, non-empty local part (≤ 64 octets)
/// and a dotted domain, no whitespace or control characters, at most 254 octets.
pub fn normalize_email(raw: &str) -> Result<String, IdentityError> {
    let email = raw.trim().to_lowercase();
    let bad = |why: &str| IdentityError::invalid("email", why.to_string());
    if email.is_empty() {
        return Err(bad("is required"));
    }
    if email.len() > MAX_EMAIL_LEN {
        return Err(bad("must be at most 254 characters"));
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("must not contain spaces"));
    }
    let (local, domain) = email
        .rsplit_once('@')
        .ok_or_else(|| bad("must look like name@example.com"))?;
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return Err(bad("must look like name@example.com"));
    }
    if domain.split('.').count() < 2 || domain.split('.').any(str::is_empty) {
        return Err(bad("must have a domain like example.com"));
    }
    Ok(email)
}

/// A new, enabled user with nothing but an email.
pub(crate) fn fresh(email: String, now: chrono::DateTime<chrono::Utc>) -> User {
    User {
        user_id: Uuid::now_v7(),
        legacy_user_id: None,
        email,
        email_confirmed: false,
        username: None,
        first_name: None,
        last_name: None,
        picture_url: None,
        properties: Json(serde_json::json!({})),
        has_password: false,
        update_password_required: false,
        locked: false,
        enabled: true,
        mfa_enabled: false,
        can_create_orgs: false,
        created_at: now.timestamp(),
        last_active_at: None,
    }
}

/// A unique violation on users, as a conflict naming the field.
fn taken(e: crate::store::StoreError, email: &str) -> IdentityError {
    IdentityError::from_store_conflict(e, |field| match field {
        "email" => format!("a user with email {email} already exists"),
        other => format!("a user with this {other} already exists"),
    })
}

/// What `create` needs.
#[derive(Debug, Default)]
pub struct NewUser {
    pub email: String,
    pub password: Option<Secret<String>>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// Add the user to this org as `member`.
    pub org_id: Option<Uuid>,
}

/// The role a member gets when none is named.
pub const DEFAULT_MEMBER_ROLE: &str = "member";

/// Creates a user, its password and optional membership in one transaction. Audited as one
/// `user.created` row (with the org, when a membership is made, in `org_id` and details).
pub async fn create(
    id: &Identity,
    new: NewUser,
) -> Result<(User, Option<Membership>), IdentityError> {
    let email = normalize_email(&new.email)?;
    let hash = match &new.password {
        Some(pw) => Some(id.passwords.hash(pw).await?),
        None => None,
    };
    let now = id.clock.now();
    let user = User {
        first_name: new.first_name,
        last_name: new.last_name,
        ..fresh(email, now)
    };
    let mut tx = id.db.begin().await?;
    let org = match new.org_id {
        Some(org_id) => Some(store::orgs::get(&mut tx, org_id).await?.ok_or(
            IdentityError::NotFound {
                what: "organization",
            },
        )?),
        None => None,
    };
    store::users::insert(&mut tx, &user)
        .await
        .map_err(|e| taken(e, &user.email))?;
    let mut user = user;
    if let Some(hash) = hash {
        store::users::set_password_hash(&mut tx, user.user_id, &hash, now).await?;
        user.has_password = true;
    }
    let membership = match org {
        Some(org) => Some(
            super::memberships::add_in(&mut tx, &org, user.user_id, DEFAULT_MEMBER_ROLE, now)
                .await?,
        ),
        None => None,
    };
    let mut details = json!({ "email": user.email, "has_password": user.has_password });
    let mut event = Event::new("user.created", "user", user.user_id);
    if let Some(m) = &membership {
        details["org_id"] = json!(m.org_id);
        details["role"] = json!(m.user_role);
        event = event.org(m.org_id);
    }
    audit::record(&mut tx, id, event.details(details)).await?;
    let org_id = membership.as_ref().map(|m| m.org_id);
    super::metrics::record_signup(&mut tx, id, user.user_id, org_id).await?;
    tx.commit().await?;
    Ok((user, membership))
}

/// Reads a user.
pub async fn get(id: &Identity, user_id: Uuid) -> Result<User, IdentityError> {
    let mut c = id.db.conn().await?;
    store::users::get(&mut c, user_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })
}

/// Finds a user by email (case-insensitively).
pub async fn find_by_email(id: &Identity, email: &str) -> Result<User, IdentityError> {
    let email = normalize_email(email)?;
    let mut c = id.db.conn().await?;
    store::users::find_by_email(&mut c, &email)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })
}

/// A page of users in creation order, after `after`.
pub async fn list(
    id: &Identity,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<User>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::users::list(&mut c, after, limit.clamp(1, 1000)).await?)
}

/// Changes to a user's profile; `None` leaves a field as it is. For the optional fields,
/// `Some(None)` clears them.
#[derive(Debug, Default, Clone)]
pub struct UserPatch {
    pub email: Option<String>,
    pub username: Option<Option<String>>,
    pub first_name: Option<Option<String>>,
    pub last_name: Option<Option<String>>,
    pub picture_url: Option<Option<String>>,
    pub properties: Option<serde_json::Value>,
    pub legacy_user_id: Option<Option<String>>,
    pub can_create_orgs: Option<bool>,
    pub update_password_required: Option<bool>,
    pub email_confirmed: Option<bool>,
}

/// `username`: 1–64 of letters, digits, `.`, `_`, `-`, `@`.
pub fn check_username(name: &str) -> Result<(), IdentityError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 64
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || "._-@".contains(c));
    if ok {
        Ok(())
    } else {
        Err(IdentityError::invalid(
            "username",
            "use 1 to 64 letters, digits, `.`, `_`, `-` or `@`",
        ))
    }
}

/// `picture_url`: an absolute http(s) URL.
fn check_picture_url(u: &str) -> Result<(), IdentityError> {
    match url::Url::parse(u) {
        Ok(url) if matches!(url.scheme(), "https" | "http") && u.len() <= 2048 => Ok(()),
        _ => Err(IdentityError::invalid(
            "picture_url",
            "must be an http(s) URL",
        )),
    }
}

/// Applies a patch. A changed email is no longer confirmed; a taken email or username is a
/// conflict naming the field.
/// Audited as `user.updated` with the before/after of each changed field.
pub async fn update(id: &Identity, user_id: Uuid, patch: UserPatch) -> Result<User, IdentityError> {
    let mut tx = id.db.begin().await?;
    let mut user = store::users::get_for_update(&mut tx, user_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })?;
    let before = user.clone();
    if let Some(email) = patch.email {
        let email = normalize_email(&email)?;
        if email != user.email {
            user.email = email;
            user.email_confirmed = false;
        }
    }
    if let Some(username) = patch.username {
        if let Some(u) = &username {
            check_username(u)?;
        }
        user.username = username;
    }
    if let Some(v) = patch.picture_url {
        if let Some(u) = &v {
            check_picture_url(u)?;
        }
        user.picture_url = v;
    }
    if let Some(v) = patch.properties {
        if !v.is_object() {
            return Err(IdentityError::invalid(
                "properties",
                "must be a JSON object",
            ));
        }
        user.properties = Json(v);
    }
    for (field, value, target) in [
        ("first_name", patch.first_name, &mut user.first_name),
        ("last_name", patch.last_name, &mut user.last_name),
        (
            "legacy_user_id",
            patch.legacy_user_id,
            &mut user.legacy_user_id,
        ),
    ] {
        if let Some(v) = value {
            if v.as_ref().is_some_and(|s| s.chars().count() > 256) {
                return Err(IdentityError::invalid(
                    field,
                    "must be at most 256 characters",
                ));
            }
            *target = v;
        }
    }
    if let Some(v) = patch.can_create_orgs {
        user.can_create_orgs = v;
    }
    if let Some(v) = patch.update_password_required {
        user.update_password_required = v;
    }
    if let Some(v) = patch.email_confirmed {
        user.email_confirmed = v;
    }
    store::users::update(&mut tx, &user)
        .await
        .map_err(|e| taken(e, &user.email))?;
    let changes = audit::diff_of(&before, &user, &[]);
    audit::record(
        &mut tx,
        id,
        Event::new("user.updated", "user", user_id).details(changes),
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

/// Flips `enabled`. Disabling ends every session of the user, in the same transaction.
pub async fn set_enabled(
    id: &Identity,
    user_id: Uuid,
    enabled: bool,
) -> Result<User, IdentityError> {
    let action = if enabled {
        "user.enabled"
    } else {
        "user.disabled"
    };
    let mut tx = id.db.begin().await?;
    let user = set_state(
        &mut tx,
        id,
        user_id,
        action,
        |u| u.enabled = enabled,
        !enabled,
    )
    .await?;
    tx.commit().await?;
    super::api_keys::forget_user(user_id);
    if !enabled {
        id.sessions_ended();
    }
    Ok(user)
}

/// Sets the admin lock (`locked`), ending every session; the user cannot sign in until
/// unlocked.
pub async fn lock(id: &Identity, user_id: Uuid) -> Result<User, IdentityError> {
    let mut tx = id.db.begin().await?;
    let user = set_state(
        &mut tx,
        id,
        user_id,
        "user.locked",
        |u| u.locked = true,
        true,
    )
    .await?;
    tx.commit().await?;
    super::api_keys::forget_user(user_id);
    id.sessions_ended();
    Ok(user)
}

/// Lifts the admin lock and any temporary lockout after failed logins.
pub async fn unlock(id: &Identity, user_id: Uuid) -> Result<User, IdentityError> {
    let mut tx = id.db.begin().await?;
    let user = set_state(
        &mut tx,
        id,
        user_id,
        "user.unlocked",
        |u| u.locked = false,
        false,
    )
    .await?;
    store::users::clear_login_failures(&mut tx, user_id).await?;
    tx.commit().await?;
    Ok(user)
}

/// Changes a user flag inside `tx`, optionally ending their sessions, and records `action`
/// with the changed fields (and how many sessions ended).
async fn set_state(
    tx: &mut Tx,
    id: &Identity,
    user_id: Uuid,
    action: &str,
    change: impl FnOnce(&mut User),
    revoke_sessions: bool,
) -> Result<User, IdentityError> {
    let mut user = store::users::get_for_update(tx, user_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })?;
    let before = user.clone();
    change(&mut user);
    store::users::update(tx, &user).await?;
    let mut details = audit::diff_of(&before, &user, &[]);
    if revoke_sessions {
        let n = store::sessions::revoke_all_for_user(tx, user_id, None).await?;
        details["sessions_revoked"] = json!(n);
    }
    audit::record(tx, id, Event::new(action, "user", user_id).details(details)).await?;
    Ok(user)
}

/// Deletes a user and everything that belongs to them (sessions, memberships, credentials);
/// history rows (audit, login attempts) keep their place with the user id cleared.
pub async fn delete(id: &Identity, user_id: Uuid) -> Result<(), IdentityError> {
    let mut tx = id.db.begin().await?;
    let user = store::users::get_for_update(&mut tx, user_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })?;
    // Recorded before the delete: a user deleting themselves is still a valid actor here
    // (the row's `user_id` is then cleared by `ON DELETE SET NULL`).
    audit::record(
        &mut tx,
        id,
        Event::new("user.deleted", "user", user_id).details(json!({ "email": user.email })),
    )
    .await?;
    // The database revokes the user's sessions before deleting them (migration 0006), so
    // the clients signed in through them are owed logout tokens.
    if !store::users::delete(&mut tx, user_id).await? {
        return Err(IdentityError::NotFound { what: "user" });
    }
    tx.commit().await?;
    super::api_keys::forget_user(user_id);
    id.sessions_ended();
    Ok(())
}

/// An administrator sets a user's password (policy checked). Every session of the user
/// ends; with `require_change` the user must pick a new one at next sign-in.
pub async fn set_password(
    id: &Identity,
    user_id: Uuid,
    password: &Secret<String>,
    require_change: bool,
) -> Result<User, IdentityError> {
    let hash = id.passwords.hash(password).await?;
    let now = id.clock.now();
    let mut tx = id.db.begin().await?;
    let mut user = store::users::get_for_update(&mut tx, user_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })?;
    store::users::set_password_hash(&mut tx, user_id, &hash, now).await?;
    user.has_password = true;
    user.update_password_required = require_change;
    store::users::update(&mut tx, &user).await?;
    store::sessions::revoke_all_for_user(&mut tx, user_id, None).await?;
    audit::record(
        &mut tx,
        id,
        Event::new("user.password_set", "user", user_id)
            .details(json!({ "require_change": require_change })),
    )
    .await?;
    tx.commit().await?;
    id.sessions_ended();
    Ok(user)
}

/// One user from a legacy system (`lintel user import`, one JSON object per line).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportRecord {
    pub email: String,
    pub legacy_user_id: Option<String>,
    /// A bcrypt (`$2a$`/`$2b$`/`$2y$`) or argon2 PHC hash; verified at first sign-in and
    /// then rehashed with the current parameters.
    pub password_hash: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub username: Option<String>,
    #[serde(default)]
    pub email_confirmed: bool,
    #[serde(default)]
    pub properties: Option<serde_json::Value>,
}

/// Imports one legacy user (one transaction).
pub async fn import(id: &Identity, r: ImportRecord) -> Result<User, IdentityError> {
    let email = normalize_email(&r.email)?;
    if let Some(h) = &r.password_hash
        && super::passwords::hash_kind(h).is_none()
    {
        return Err(IdentityError::invalid(
            "password_hash",
            "must be a bcrypt ($2a$, $2b$, $2y$) or argon2 PHC hash",
        ));
    }
    if let Some(u) = &r.username {
        check_username(u)?;
    }
    let properties = r.properties.unwrap_or_else(|| serde_json::json!({}));
    if !properties.is_object() {
        return Err(IdentityError::invalid(
            "properties",
            "must be a JSON object",
        ));
    }
    let now = id.clock.now();
    let user = User {
        legacy_user_id: r.legacy_user_id,
        email_confirmed: r.email_confirmed,
        username: r.username,
        first_name: r.first_name,
        last_name: r.last_name,
        properties: Json(properties),
        has_password: r.password_hash.is_some(),
        ..fresh(email, now)
    };
    let mut tx = id.db.begin().await?;
    store::users::insert(&mut tx, &user)
        .await
        .map_err(|e| taken(e, &user.email))?;
    if let Some(h) = &r.password_hash {
        store::users::set_password_hash(&mut tx, user.user_id, h, now).await?;
    }
    let details = json!({
        "email": user.email,
        "legacy_user_id": user.legacy_user_id,
        "has_password": user.has_password,
    });
    audit::record(
        &mut tx,
        id,
        Event::new("user.imported", "user", user.user_id).details(details),
    )
    .await?;
    tx.commit().await?;
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        assert_eq!(
            normalize_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "@example.com",
            "ada@",
            "ada@example",
            "a da@example.com",
            "ada@.com",
            "ada@example..com",
        ] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert!(normalize_email(&format!("{}@example.com", "a".repeat(65))).is_err());
    }
}
