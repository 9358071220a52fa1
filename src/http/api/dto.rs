//! The API's JSON shapes (with their OpenAPI schemas), converted from the store's rows.
//! Secrets (hashes, refresh tokens, TOTP seeds) have no field here.
use crate::store;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Debug, Serialize, ToSchema)]
pub struct Organization {
    pub org_id: Uuid,
    pub org_name: String,
    pub url_safe_org_name: String,
    #[schema(value_type = Object)]
    pub org_metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// `single_role` or `multi_role`.
    pub org_role_structure: String,
    pub mfa_required: bool,
}

impl From<store::orgs::Org> for Organization {
    fn from(o: store::orgs::Org) -> Self {
        Organization {
            org_id: o.org_id,
            org_name: o.org_name,
            url_safe_org_name: o.url_safe_org_name,
            org_metadata: o.org_metadata.0,
            created_at: o.created_at,
            org_role_structure: o.org_role_structure,
            mfa_required: o.mfa_required,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct User {
    pub user_id: Uuid,
    pub email: String,
    pub email_confirmed: bool,
    pub username: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub picture_url: Option<String>,
    #[schema(value_type = Object)]
    pub properties: serde_json::Value,
    pub legacy_user_id: Option<String>,
    pub has_password: bool,
    pub update_password_required: bool,
    pub locked: bool,
    pub enabled: bool,
    pub mfa_enabled: bool,
    pub can_create_orgs: bool,
    /// Epoch seconds.
    pub created_at: i64,
    /// Epoch seconds.
    pub last_active_at: Option<i64>,
}

impl From<store::users::User> for User {
    fn from(u: store::users::User) -> Self {
        User {
            user_id: u.user_id,
            email: u.email,
            email_confirmed: u.email_confirmed,
            username: u.username,
            first_name: u.first_name,
            last_name: u.last_name,
            picture_url: u.picture_url,
            properties: u.properties.0,
            legacy_user_id: u.legacy_user_id,
            has_password: u.has_password,
            update_password_required: u.update_password_required,
            locked: u.locked,
            enabled: u.enabled,
            mfa_enabled: u.mfa_enabled,
            can_create_orgs: u.can_create_orgs,
            created_at: u.created_at,
            last_active_at: u.last_active_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Membership {
    pub user_id: Uuid,
    pub org_id: Uuid,
    /// The member's primary role.
    pub user_role: String,
    pub url_safe_org_name: String,
    pub org_role_structure: String,
    /// Every role the member has, through inheritance too.
    pub inherited_user_roles_plus_current_role: Vec<String>,
    /// Every permission the member has.
    pub user_permissions: Vec<String>,
    /// Directly assigned roles besides the primary one (`multi_role` orgs).
    pub additional_roles: Vec<String>,
}

impl From<store::memberships::Membership> for Membership {
    fn from(m: store::memberships::Membership) -> Self {
        Membership {
            user_id: m.user_id,
            org_id: m.org_id,
            user_role: m.user_role,
            url_safe_org_name: m.url_safe_org_name,
            org_role_structure: m.org_role_structure,
            inherited_user_roles_plus_current_role: m.inherited_user_roles_plus_current_role.0,
            user_permissions: m.user_permissions.0,
            additional_roles: m.additional_roles.0,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Role {
    pub role_id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<store::roles::Role> for Role {
    fn from(r: store::roles::Role) -> Self {
        Role {
            role_id: r.role_id,
            org_id: r.org_id,
            name: r.name,
            description: r.description,
            created_at: r.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Permission {
    pub permission_id: Uuid,
    /// Null for a global permission.
    pub org_id: Option<Uuid>,
    pub name: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<store::roles::Permission> for Permission {
    fn from(p: store::roles::Permission) -> Self {
        Permission {
            permission_id: p.permission_id,
            org_id: p.org_id,
            name: p.name,
            description: p.description,
            created_at: p.created_at,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub org_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub revoked: bool,
    /// RFC 8176 authentication methods.
    pub auth_methods: Vec<String>,
    pub auth_time: DateTime<Utc>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
}

impl From<store::sessions::Session> for Session {
    fn from(s: store::sessions::Session) -> Self {
        Session {
            session_id: s.session_id,
            user_id: s.user_id,
            org_id: s.org_id,
            created_at: s.created_at,
            expires_at: s.expires_at,
            last_seen_at: s.last_seen_at,
            revoked: s.revoked,
            auth_methods: s.auth_methods.0,
            auth_time: s.auth_time,
            ip_address: s.ip_address.map(|i| i.0.to_string()),
            user_agent: s.user_agent,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ApiKey {
    pub api_key_id: Uuid,
    /// The public part of the key (`lk_<prefix>_…`).
    pub key_prefix: String,
    pub user_id: Option<Uuid>,
    pub org_id: Option<Uuid>,
    pub permissions: Vec<String>,
    pub is_admin: bool,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked: bool,
}

impl From<store::api_keys::ApiKey> for ApiKey {
    fn from(k: store::api_keys::ApiKey) -> Self {
        ApiKey {
            api_key_id: k.api_key_id,
            key_prefix: k.key_prefix,
            user_id: k.user_id,
            org_id: k.org_id,
            permissions: k.permissions.0,
            is_admin: k.is_admin,
            description: k.description,
            created_at: k.created_at,
            expires_at: k.expires_at,
            last_used_at: k.last_used_at,
            revoked: k.revoked,
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditLog {
    pub log_id: Uuid,
    pub timestamp: DateTime<Utc>,
    pub action: String,
    pub org_id: Option<Uuid>,
    pub object_type: Option<String>,
    pub object_id: Option<String>,
    /// `system`, `user`, `api_key` or `scim_client`.
    pub actor_type: String,
    pub actor_id: Option<String>,
    /// The user acted for (a key's owner, the impersonated user).
    pub user_id: Option<Uuid>,
    pub impersonator_id: Option<Uuid>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

impl From<store::audit::AuditLog> for AuditLog {
    fn from(a: store::audit::AuditLog) -> Self {
        AuditLog {
            log_id: a.log_id,
            timestamp: a.timestamp,
            action: a.action,
            org_id: a.org_id,
            object_type: a.object_type,
            object_id: a.object_id,
            actor_type: a.actor_type,
            actor_id: a.actor_id,
            user_id: a.user_id,
            impersonator_id: a.impersonator_id,
            ip_address: a.ip_address.map(|i| i.0.to_string()),
            user_agent: a.user_agent,
            details: a.details.0,
        }
    }
}
