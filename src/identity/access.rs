//! Access control for the management API: one check, [`authorize_org`], that hands back a
//! narrowed [`OrgScope`]; org-scoped operations take the scope, so they cannot run for an
//! org the caller was not cleared for. An org the caller cannot see is `NotFound` (404),
//! a visible org without the permission is `Forbidden` (403).
use super::audit::{Actor, ActorKind};
use super::{Identity, IdentityError};
use crate::store::{self, api_keys::ApiKey};
use uuid::Uuid;

/// The permissions the management API checks. Every org's default roles get them:
/// `member` ⊂ `admin` ⊂ `owner` (see `roles::create_default_roles`).
pub mod perm {
    pub const ORG_READ: &str = "org:read";
    pub const ORG_WRITE: &str = "org:write";
    pub const MEMBERS_READ: &str = "members:read";
    pub const MEMBERS_WRITE: &str = "members:write";
    pub const ROLES_READ: &str = "roles:read";
    pub const ROLES_WRITE: &str = "roles:write";
    pub const SESSIONS_WRITE: &str = "sessions:write";
    pub const MFA_WRITE: &str = "mfa:write";
    pub const AUDIT_READ: &str = "audit:read";
    pub const API_KEYS_WRITE: &str = "api_keys:write";
    pub const IMPERSONATE: &str = "impersonate";

    /// Held by `member`.
    pub const MEMBER: &[&str] = &[ORG_READ, MEMBERS_READ];
    /// Added by `admin`.
    pub const ADMIN: &[&str] = &[
        MEMBERS_WRITE,
        ROLES_READ,
        ROLES_WRITE,
        SESSIONS_WRITE,
        MFA_WRITE,
        AUDIT_READ,
        API_KEYS_WRITE,
    ];
    /// Added by `owner`.
    pub const OWNER: &[&str] = &[ORG_WRITE, IMPERSONATE];
    /// Every permission the API knows.
    pub fn all() -> impl Iterator<Item = &'static str> {
        MEMBER.iter().chain(ADMIN).chain(OWNER).copied()
    }
}

/// An authenticated caller of the management API.
#[derive(Debug, Clone, PartialEq)]
pub struct Principal {
    pub key: ApiKey,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.key.is_admin
    }

    /// The audit actor for this caller.
    pub fn actor(&self, ip: Option<std::net::IpAddr>, user_agent: Option<String>) -> Actor {
        Actor {
            kind: ActorKind::ApiKey {
                key_id: self.key.api_key_id,
                owner: self.key.user_id,
            },
            impersonator: None,
            ip,
            user_agent,
        }
    }
}

/// Proof that the caller may act on one org with the permissions listed.
#[derive(Debug, Clone)]
pub struct OrgScope {
    org_id: Uuid,
    permissions: Vec<String>,
    admin: bool,
}

impl OrgScope {
    pub fn org_id(&self) -> Uuid {
        self.org_id
    }

    /// Checks a further permission within the same scope.
    pub fn require(&self, permission: &str) -> Result<(), IdentityError> {
        if self.admin || self.permissions.iter().any(|p| p == permission) {
            Ok(())
        } else {
            Err(IdentityError::Forbidden {
                reason: format!("missing permission `{permission}`"),
            })
        }
    }
}

/// Clears `principal` for `permission` on `org_id`.
///
/// - super-admin keys: every org;
/// - org-scoped keys: only their org (any other is `NotFound`);
/// - user keys: orgs the owner is a member of (others are `NotFound`), with the owner's
///   effective permissions there intersected with the key's.
pub async fn authorize_org(
    id: &Identity,
    principal: &Principal,
    org_id: Uuid,
    permission: &str,
) -> Result<OrgScope, IdentityError> {
    let not_found = IdentityError::NotFound {
        what: "organization",
    };
    let mut c = id.db.conn().await?;
    let key = &principal.key;
    let scope = if key.is_admin {
        if store::orgs::get(&mut c, org_id).await?.is_none() {
            return Err(not_found);
        }
        OrgScope {
            org_id,
            permissions: Vec::new(),
            admin: true,
        }
    } else {
        // A membership row implies the org exists (foreign key): one query, not two.
        if key.org_id.is_some_and(|o| o != org_id) {
            return Err(not_found);
        }
        let Some(owner) = key.user_id else {
            return Err(not_found);
        };
        let Some(m) = store::memberships::get(&mut c, owner, org_id).await? else {
            return Err(not_found);
        };
        let permissions = m
            .user_permissions
            .0
            .into_iter()
            .filter(|p| key.permissions.0.contains(p))
            .collect();
        OrgScope {
            org_id,
            permissions,
            admin: false,
        }
    };
    scope.require(permission)?;
    Ok(scope)
}

/// Only super-admin keys manage what is not inside one org (all users, all orgs).
pub fn require_admin(principal: &Principal) -> Result<(), IdentityError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(IdentityError::Forbidden {
            reason: "needs a super-admin key".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_check_permissions() {
        let s = OrgScope {
            org_id: Uuid::nil(),
            permissions: vec!["org:read".into()],
            admin: false,
        };
        assert!(s.require("org:read").is_ok());
        assert!(matches!(
            s.require("org:write"),
            Err(IdentityError::Forbidden { .. })
        ));
        let a = OrgScope {
            org_id: Uuid::nil(),
            permissions: vec![],
            admin: true,
        };
        assert!(a.require("anything").is_ok());
        let all: Vec<_> = perm::all().collect();
        assert_eq!(all.len(), 11);
        let unique: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(unique.len(), all.len());
    }
}
