//! Users.
use super::{Identity, IdentityError};
use crate::config::Secret;
use crate::store::memberships::Membership;
use crate::store::{self, Json, users::User};
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

/// Creates a user, its password and optional membership in one transaction.
pub async fn create(
    id: &Identity,
    new: NewUser,
) -> Result<(User, Option<Membership>), IdentityError> {
    let email = normalize_email(&new.email)?;
    let hash = match &new.password {
        Some(pw) => Some(id.passwords.hash(pw).await.map_err(|e| match e {
            super::passwords::PasswordError::Hash(m) => IdentityError::Internal(m),
            other => IdentityError::invalid("password", other.to_string()),
        })?),
        None => None,
    };
    let now = id.clock.now();
    let user = User {
        user_id: Uuid::now_v7(),
        legacy_user_id: None,
        email,
        email_confirmed: false,
        username: None,
        first_name: new.first_name,
        last_name: new.last_name,
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
    store::users::insert(&mut tx, &user).await.map_err(|e| {
        IdentityError::from_store_conflict(e, |field| match field {
            "email" => format!("a user with email {} already exists", user.email),
            other => format!("a user with this {other} already exists"),
        })
    })?;
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
    tx.commit().await?;
    Ok((user, membership))
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
