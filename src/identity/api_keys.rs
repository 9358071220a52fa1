//! API keys: `lk_<prefix>_<secret>`, shown once. The 12-character prefix is public and
//! looked up; only the SHA-256 of the 256-bit secret is stored, compared in constant time.
use super::access::Principal;
use super::audit::{self, Event};
use super::{Identity, IdentityError};
use crate::config::Secret;
use crate::store::{self, TextList, api_keys::ApiKey};
use chrono::{DateTime, Utc};
use subtle::ConstantTimeEq;
use uuid::Uuid;

pub const PREFIX_LEN: usize = 12;
const PREFIX_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";

/// What a new key is for.
#[derive(Debug, Clone, Default)]
pub struct NewApiKey {
    /// The owner (`None` only for a super-admin service key).
    pub user_id: Option<Uuid>,
    /// Limit the key to this org.
    pub org_id: Option<Uuid>,
    pub permissions: Vec<String>,
    pub description: Option<String>,
    pub expires_at: Option<DateTime<Utc>>,
    pub is_admin: bool,
}

/// The parts of a presented key: (prefix, secret).
pub fn parse(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("lk_")?;
    let (prefix, secret) = rest.split_at_checked(PREFIX_LEN)?;
    let secret = secret.strip_prefix('_')?;
    let ok_prefix = prefix.bytes().all(|b| PREFIX_ALPHABET.contains(&b));
    (ok_prefix && secret.len() == 43).then_some((prefix, secret))
}

/// The stored form of a key's secret (the same SHA-256 as every bearer secret).
pub fn hash_secret(secret: &str) -> String {
    super::sessions::hash_token(secret)
}

fn new_prefix() -> String {
    let bytes: [u8; PREFIX_LEN] = rand::random();
    bytes
        .iter()
        .map(|b| PREFIX_ALPHABET[usize::from(*b) % PREFIX_ALPHABET.len()] as char)
        .collect()
}

/// Creates a key and returns it with its full secret (never shown again).
pub async fn create(
    id: &Identity,
    new: NewApiKey,
) -> Result<(ApiKey, Secret<String>), IdentityError> {
    if new
        .description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 256)
    {
        return Err(IdentityError::invalid(
            "description",
            "must be at most 256 characters",
        ));
    }
    let known: Vec<&str> = super::access::perm::all().collect();
    if let Some(bad) = new
        .permissions
        .iter()
        .find(|p| !known.contains(&p.as_str()))
    {
        return Err(IdentityError::invalid(
            "permissions",
            format!("unknown permission `{bad}`"),
        ));
    }
    let now = id.clock.now();
    if new.expires_at.is_some_and(|t| t <= now) {
        return Err(IdentityError::invalid(
            "expires_at",
            "must be in the future",
        ));
    }
    if new.user_id.is_none() && !new.is_admin {
        return Err(IdentityError::invalid(
            "user_id",
            "a key needs an owner unless it is a super-admin key",
        ));
    }
    let mut tx = id.db.begin().await?;
    if let Some(user_id) = new.user_id {
        store::users::get(&mut tx, user_id)
            .await?
            .ok_or(IdentityError::NotFound { what: "user" })?;
        if let Some(org_id) = new.org_id
            && store::memberships::get(&mut tx, user_id, org_id)
                .await?
                .is_none()
        {
            return Err(IdentityError::NotFound { what: "membership" });
        }
    }
    if let Some(org_id) = new.org_id
        && store::orgs::get(&mut tx, org_id).await?.is_none()
    {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    let prefix = new_prefix();
    let secret = super::sessions::new_token();
    let key = ApiKey {
        api_key_id: Uuid::now_v7(),
        user_id: new.user_id,
        key_hash: hash_secret(&secret),
        description: new.description,
        created_at: now,
        expires_at: new.expires_at,
        revoked: false,
        key_prefix: prefix.clone(),
        org_id: new.org_id,
        permissions: TextList(new.permissions),
        is_admin: new.is_admin,
        last_used_at: None,
    };
    store::api_keys::insert(&mut tx, &key).await?;
    audit::record(
        &mut tx,
        id,
        Event {
            org_id: key.org_id,
            action: "api_key.created",
            object_type: "api_key",
            object_id: key.api_key_id.to_string(),
            details: serde_json::json!({
                "prefix": key.key_prefix,
                "user_id": key.user_id,
                "permissions": key.permissions,
                "is_admin": key.is_admin,
                "expires_at": key.expires_at,
            }),
        },
    )
    .await?;
    tx.commit().await?;
    Ok((key, Secret::new(format!("lk_{prefix}_{secret}"))))
}

/// Resolves a presented key. Malformed, unknown and revoked keys are `TokenInvalid`,
/// expired ones `TokenExpired`; a key whose owner is disabled or locked stops working.
/// This node's memory of verified keys (by prefix; the secret's hash is still compared in
/// constant time) for
/// [`super::ttl_cache::TTL`]: a request with a remembered key reads nothing. Revoking a key,
/// or disabling, locking or deleting its owner, on this node forgets it at once; on another
/// node it stops working within the TTL. Expiry is checked on every request.
fn verified() -> &'static super::ttl_cache::Cache<ApiKey> {
    static C: std::sync::OnceLock<super::ttl_cache::Cache<ApiKey>> = std::sync::OnceLock::new();
    C.get_or_init(super::ttl_cache::Cache::new)
}

/// Forgets a remembered key (after a change to it on this node).
pub fn forget_key(api_key_id: Uuid) {
    verified().retain(|_, k| k.api_key_id != api_key_id);
}

/// Forgets every remembered key of a user (disabled, locked, deleted on this node).
pub fn forget_user(user_id: Uuid) {
    verified().retain(|_, k| k.user_id != Some(user_id));
}

pub async fn authenticate(id: &Identity, presented: &str) -> Result<Principal, IdentityError> {
    let now = id.clock.now();
    let Some((prefix, secret)) = parse(presented) else {
        return Err(IdentityError::TokenInvalid);
    };
    let presented_hash = hash_secret(secret);
    let fresh =
        |t: Option<DateTime<Utc>>| t.is_some_and(|t| now - t < chrono::Duration::seconds(60));
    if let Some(key) = verified().get(prefix)
        && bool::from(presented_hash.as_bytes().ct_eq(key.key_hash.as_bytes()))
    {
        if key.expires_at.is_some_and(|t| t <= now) {
            return Err(IdentityError::TokenExpired);
        }
        if fresh(key.last_used_at) {
            return Ok(Principal { key });
        }
    }
    let mut c = id.db.conn().await?;
    let found = store::api_keys::find_by_prefix(&mut c, prefix).await?;
    let Some(mut key) = found else {
        return Err(IdentityError::TokenInvalid);
    };
    if !bool::from(presented_hash.as_bytes().ct_eq(key.key_hash.as_bytes())) || key.revoked {
        return Err(IdentityError::TokenInvalid);
    }
    if key.expires_at.is_some_and(|t| t <= now) {
        return Err(IdentityError::TokenExpired);
    }
    if let Some(owner) = key.user_id {
        let user = store::users::get(&mut c, owner)
            .await?
            .ok_or(IdentityError::TokenInvalid)?;
        if !user.enabled || user.locked {
            return Err(IdentityError::TokenInvalid);
        }
    }
    if !fresh(key.last_used_at) {
        store::api_keys::touch(&mut c, key.api_key_id, now).await?;
        key.last_used_at = Some(now);
    }
    verified().put(prefix.to_string(), key.clone());
    Ok(Principal { key })
}

/// Revokes a key (idempotent for an already revoked key: `NotFound` only when unknown).
pub async fn revoke(id: &Identity, api_key_id: Uuid) -> Result<ApiKey, IdentityError> {
    let mut tx = id.db.begin().await?;
    let mut key = store::api_keys::get(&mut tx, api_key_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "api key" })?;
    forget_key(api_key_id);
    if store::api_keys::revoke(&mut tx, api_key_id).await? {
        audit::record(
            &mut tx,
            id,
            Event {
                org_id: key.org_id,
                action: "api_key.revoked",
                object_type: "api_key",
                object_id: api_key_id.to_string(),
                details: serde_json::json!({ "prefix": key.key_prefix }),
            },
        )
        .await?;
    }
    tx.commit().await?;
    forget_key(api_key_id);
    key.revoked = true;
    Ok(key)
}

pub async fn get(id: &Identity, api_key_id: Uuid) -> Result<ApiKey, IdentityError> {
    let mut c = id.db.conn().await?;
    store::api_keys::get(&mut c, api_key_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "api key" })
}

pub async fn list(
    id: &Identity,
    org_id: Option<Uuid>,
    user_id: Option<Uuid>,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<ApiKey>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::api_keys::list(&mut c, org_id, user_id, after, limit.clamp(1, 1000)).await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;

    #[test]
    fn key_format() {
        let p = new_prefix();
        assert_eq!(p.len(), PREFIX_LEN);
        let secret = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let key = format!("lk_{p}_{secret}");
        assert_eq!(parse(&key), Some((p.as_str(), secret.as_str())));
        for bad in [
            "",
            "lk_",
            "Bearer lk_x",
            &format!("lk_{p}{secret}"),
            &format!("lk_{}_{secret}", &p[..11]),
            &format!("lk_{}_{secret}", p.to_uppercase()),
            &format!("lk_{p}_{}", &secret[..42]),
            &format!("xx_{p}_{secret}"),
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
        assert_eq!(hash_secret(&secret).len(), 64);
    }
}
