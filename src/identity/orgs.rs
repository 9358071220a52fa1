//! Organizations.
use super::audit::{self, Event};
use super::roles::{self, RoleStructure};
use super::{Identity, IdentityError, memberships};
use crate::store::memberships::Membership;
use crate::store::org_settings::OrgDomain;
use crate::store::{self, Json, StoreError, Tx, orgs::Org};
use serde_json::json;
use std::collections::HashMap;
use uuid::Uuid;

pub const MAX_NAME_LEN: usize = 200;
pub const MAX_SLUG_LEN: usize = 63;

/// `url_safe_org_name` from a display name: lower-case ASCII letters and digits, runs of
/// anything else become one `-`, no leading or trailing `-`, at most 63 characters.
pub fn slugify(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for ch in name.chars() {
        let ch = ch.to_ascii_lowercase();
        if ch.is_ascii_alphanumeric() {
            out.push(ch);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.truncate(MAX_SLUG_LEN);
    out.trim_end_matches('-').to_string()
}

/// A valid slug is what [`slugify`] would keep unchanged.
pub fn check_slug(slug: &str) -> Result<(), IdentityError> {
    if slug.is_empty() || slugify(slug) != slug {
        return Err(IdentityError::invalid(
            "url_safe_org_name",
            "use 1 to 63 lower-case letters, digits and single dashes, e.g. acme-corp",
        ));
    }
    Ok(())
}

/// An org is named on the command line and in URLs either by id or by slug.
pub async fn resolve(id: &Identity, id_or_slug: &str) -> Result<Org, IdentityError> {
    let mut c = id.db.conn().await?;
    let found = match Uuid::parse_str(id_or_slug) {
        Ok(uuid) => store::orgs::get(&mut c, uuid).await?,
        Err(_) => store::orgs::get_by_slug(&mut c, id_or_slug).await?,
    };
    found.ok_or(IdentityError::NotFound {
        what: "organization",
    })
}

/// Creates an org with its default roles (see [`roles::create_default_roles`]) in one
/// transaction. The slug is derived from the name unless given; a taken slug is a conflict
/// naming `url_safe_org_name`.
pub async fn create(id: &Identity, name: &str, slug: Option<&str>) -> Result<Org, IdentityError> {
    let org = new_org(id, name, slug)?;
    let mut tx = id.db.begin().await?;
    insert_in(&mut tx, &org).await?;
    audit::record(&mut tx, id, created(&org, None)).await?;
    tx.commit().await?;
    Ok(org)
}

/// Creates an org on behalf of a user, who must have `can_create_orgs` (else `Forbidden`)
/// and becomes its `owner`; org, default roles and membership are one transaction.
pub async fn create_by_user(
    id: &Identity,
    user_id: Uuid,
    name: &str,
    slug: Option<&str>,
) -> Result<(Org, Membership), IdentityError> {
    let org = new_org(id, name, slug)?;
    let mut tx = id.db.begin().await?;
    let user = store::users::get(&mut tx, user_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "user" })?;
    if !user.can_create_orgs || !user.enabled {
        return Err(IdentityError::Forbidden {
            reason: "this user may not create organizations".into(),
        });
    }
    insert_in(&mut tx, &org).await?;
    let m = memberships::add_in(&mut tx, &org, user_id, roles::OWNER, org.created_at).await?;
    // One row for the whole change: the owner's membership is part of `organization.created`.
    audit::record(&mut tx, id, created(&org, Some(user_id))).await?;
    tx.commit().await?;
    Ok((org, m))
}

/// The `organization.created` event (with the owner made a member, if any).
fn created(org: &Org, owner: Option<Uuid>) -> Event<'static> {
    let mut details = json!({
        "org_name": org.org_name,
        "url_safe_org_name": org.url_safe_org_name,
    });
    if let Some(owner) = owner {
        details["owner_user_id"] = json!(owner);
    }
    Event::new("organization.created", "organization", org.org_id)
        .org(org.org_id)
        .details(details)
}

/// Validates the name and slug and builds the row (nothing written).
fn new_org(id: &Identity, name: &str, slug: Option<&str>) -> Result<Org, IdentityError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(IdentityError::invalid(
            "org_name",
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    let slug = match slug {
        Some(s) => s.to_string(),
        None => slugify(name),
    };
    check_slug(&slug).map_err(|e| match (e, slug.is_empty()) {
        (_, true) => IdentityError::invalid(
            "org_name",
            "needs at least one letter or digit to derive url_safe_org_name",
        ),
        (e, false) => e,
    })?;
    Ok(Org {
        org_id: Uuid::now_v7(),
        org_name: name.to_string(),
        url_safe_org_name: slug,
        org_metadata: Json(serde_json::json!({})),
        created_at: id.clock.now(),
        org_role_structure: RoleStructure::SingleRole.as_str().into(),
        mfa_required: false,
    })
}

async fn insert_in(tx: &mut Tx, org: &Org) -> Result<(), IdentityError> {
    store::orgs::insert(tx, org).await.map_err(|e| {
        IdentityError::from_store_conflict(e, |_| {
            format!(
                "an organization with url_safe_org_name `{}` already exists",
                org.url_safe_org_name
            )
        })
    })?;
    roles::create_default_roles(tx, org.org_id, org.created_at).await?;
    Ok(())
}

pub async fn get(id: &Identity, org_id: Uuid) -> Result<Org, IdentityError> {
    let mut c = id.db.conn().await?;
    store::orgs::get(&mut c, org_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "organization",
        })
}

pub const MAX_PAGE: u32 = 500;

/// A page of orgs in creation order, after `after`.
pub async fn list(
    id: &Identity,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Org>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::orgs::list(&mut c, after, limit.clamp(1, MAX_PAGE)).await?)
}

/// Switches between one role per member and several. Going to `single_role` drops every
/// member's additional roles (the primary role stays); members are re-derived either way.
pub async fn set_role_structure(
    id: &Identity,
    org_id: Uuid,
    structure: RoleStructure,
) -> Result<Org, IdentityError> {
    let (mut tx, org) = roles::begin_org(id, org_id).await?;
    store::orgs::set_role_structure(&mut tx, org_id, structure.as_str()).await?;
    if structure == RoleStructure::SingleRole {
        let members = store::memberships::all_for_org(&mut tx, org_id).await?;
        let names: HashMap<Uuid, String> = store::roles::list_roles(&mut tx, org_id)
            .await?
            .into_iter()
            .map(|r| (r.role_id, r.name))
            .collect();
        let primary: HashMap<Uuid, String> = members
            .into_iter()
            .map(|m| (m.user_id, m.user_role))
            .collect();
        for (user, role) in store::roles::org_assignments(&mut tx, org_id).await? {
            if primary.get(&user) != names.get(&role) {
                store::roles::unassign(&mut tx, user, role).await?;
            }
        }
    }
    roles::sync_org(&mut tx, org_id).await?;
    let after = Org {
        org_role_structure: structure.as_str().into(),
        ..org.clone()
    };
    audit::record(&mut tx, id, org_updated(&org, &after)).await?;
    tx.commit().await?;
    Ok(after)
}

/// `organization.updated` with the changed fields.
/// Renames the org and/or replaces its metadata (a JSON object of at most 16 KiB); the
/// slug stays (links and logins use it).
pub async fn update(
    id: &Identity,
    org_id: Uuid,
    name: Option<&str>,
    metadata: Option<serde_json::Value>,
) -> Result<Org, IdentityError> {
    if let Some(m) = &metadata {
        if !m.is_object() {
            return Err(IdentityError::invalid(
                "org_metadata",
                "must be a JSON object",
            ));
        }
        if m.to_string().len() > 16 * 1024 {
            return Err(IdentityError::invalid(
                "org_metadata",
                "must be at most 16 KiB",
            ));
        }
    }
    let name = match name.map(str::trim) {
        Some(n) if n.is_empty() || n.chars().count() > MAX_NAME_LEN => {
            return Err(IdentityError::invalid(
                "org_name",
                format!("must be 1 to {MAX_NAME_LEN} characters"),
            ));
        }
        other => other.map(String::from),
    };
    let (mut tx, before) = roles::begin_org(id, org_id).await?;
    let after = Org {
        org_name: name.unwrap_or_else(|| before.org_name.clone()),
        org_metadata: metadata
            .map(Json)
            .unwrap_or_else(|| before.org_metadata.clone()),
        ..before.clone()
    };
    store::orgs::update_profile(&mut tx, org_id, &after.org_name, &after.org_metadata).await?;
    audit::record(&mut tx, id, org_updated(&before, &after)).await?;
    tx.commit().await?;
    Ok(after)
}

/// Deletes the org and everything it owns (roles, memberships, sessions opened for it,
/// domains, identity providers); history keeps its rows with the org cleared.
pub async fn delete(id: &Identity, org_id: Uuid) -> Result<(), IdentityError> {
    let (mut tx, org) = roles::begin_org(id, org_id).await?;
    // The audit row goes first: it references the org, which then clears it (SET NULL).
    let event = Event::new("organization.deleted", "organization", org_id)
        .details(json!({ "org_name": org.org_name, "url_safe_org_name": org.url_safe_org_name }));
    audit::record(&mut tx, id, event).await?;
    // Sessions opened for the org are revoked by the database before they are deleted
    // (migration 0006), which owes their clients logout tokens.
    store::orgs::delete(&mut tx, org_id).await?;
    tx.commit().await?;
    id.sessions_ended();
    Ok(())
}

pub(crate) fn org_updated(before: &Org, after: &Org) -> Event<'static> {
    Event::new("organization.updated", "organization", after.org_id)
        .org(after.org_id)
        .details(audit::diff_of(before, after, &[]))
}

// ---------------------------------------------------------------------------------------
// Login methods

/// A way of signing in that an org can allow or refuse (`org_login_methods.method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LoginMethod {
    Password,
    MagicLink,
    Saml,
    Oidc,
    Passkey,
}

impl LoginMethod {
    pub const ALL: [LoginMethod; 5] = [
        LoginMethod::Password,
        LoginMethod::MagicLink,
        LoginMethod::Saml,
        LoginMethod::Oidc,
        LoginMethod::Passkey,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LoginMethod::Password => "password",
            LoginMethod::MagicLink => "magic_link",
            LoginMethod::Saml => "saml",
            LoginMethod::Oidc => "oidc",
            LoginMethod::Passkey => "passkey",
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        Self::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                IdentityError::invalid(
                    "method",
                    "must be one of password, magic_link, saml, oidc, passkey",
                )
            })
    }

    /// Whether an org that never configured this method allows it: only passwords.
    pub fn allowed_by_default(self) -> bool {
        self == LoginMethod::Password
    }

    /// The method an identity provider of `kind` (`saml` or `oidc`) signs in with.
    pub fn of_provider(kind: &str) -> LoginMethod {
        if kind == "saml" {
            LoginMethod::Saml
        } else {
            LoginMethod::Oidc
        }
    }
}

/// Whether the org allows `method`, read with `a` (e.g. inside the caller's transaction):
/// its `org_login_methods` row if any, else the default.
pub(crate) async fn method_allowed_in(
    a: &mut impl crate::store::Access,
    org_id: Uuid,
    method: LoginMethod,
) -> Result<bool, StoreError> {
    Ok(
        store::org_settings::login_method(a, org_id, method.as_str())
            .await?
            .unwrap_or(method.allowed_by_default()),
    )
}

/// Every known method with whether the org allows it, read with `a`.
pub(crate) async fn login_methods_in(
    a: &mut impl crate::store::Access,
    org_id: Uuid,
) -> Result<Vec<(LoginMethod, bool)>, StoreError> {
    let rows: HashMap<String, bool> = store::org_settings::login_methods(a, org_id)
        .await?
        .into_iter()
        .collect();
    Ok(LoginMethod::ALL
        .into_iter()
        .map(|m| {
            let allowed = rows
                .get(m.as_str())
                .copied()
                .unwrap_or(m.allowed_by_default());
            (m, allowed)
        })
        .collect())
}

impl AsRef<str> for LoginMethod {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

/// Allows or refuses a login method for an org.
pub async fn set_login_method(
    id: &Identity,
    org_id: Uuid,
    method: impl AsRef<str>,
    enabled: bool,
) -> Result<(), IdentityError> {
    let method = LoginMethod::parse(method.as_ref())?;
    let mut tx = id.db.begin().await?;
    let before = store::org_settings::login_method(&mut tx, org_id, method.as_str()).await?;
    store::org_settings::set_login_method(&mut tx, org_id, method.as_str(), enabled)
        .await
        .map_err(|e| match e {
            StoreError::ForeignKey => IdentityError::NotFound {
                what: "organization",
            },
            e => e.into(),
        })?;
    let action = if enabled {
        "org_login_method.enabled"
    } else {
        "org_login_method.disabled"
    };
    let before = before.unwrap_or(method.allowed_by_default());
    let event = Event::new(
        action,
        "org_login_method",
        audit::pair(org_id, method.as_str()),
    )
    .org(org_id)
    .details(json!({
        "method": method.as_str(),
        "enabled": { "before": before, "after": enabled },
    }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Whether the org allows `method`: its `org_login_methods` row if any, else the default
/// ([`LoginMethod::allowed_by_default`]).
pub async fn login_method_allowed(
    id: &Identity,
    org_id: Uuid,
    method: impl AsRef<str>,
) -> Result<bool, IdentityError> {
    let method = LoginMethod::parse(method.as_ref())?;
    let mut c = id.db.conn().await?;
    if store::orgs::get(&mut c, org_id).await?.is_none() {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    Ok(method_allowed_in(&mut c, org_id, method).await?)
}

/// [`login_method_allowed`] as a gate: `LoginMethodNotAllowed` when refused.
pub async fn require_login_method(
    id: &Identity,
    org_id: Uuid,
    method: LoginMethod,
) -> Result<(), IdentityError> {
    if login_method_allowed(id, org_id, method).await? {
        Ok(())
    } else {
        Err(IdentityError::LoginMethodNotAllowed {
            method: method.as_str().into(),
        })
    }
}

/// Every known method with whether the org allows it.
pub async fn login_methods(
    id: &Identity,
    org_id: Uuid,
) -> Result<Vec<(LoginMethod, bool)>, IdentityError> {
    let mut c = id.db.conn().await?;
    if store::orgs::get(&mut c, org_id).await?.is_none() {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    Ok(login_methods_in(&mut c, org_id).await?)
}

// ---------------------------------------------------------------------------------------
// Email domains (home-realm discovery)

pub const MAX_DOMAIN_LEN: usize = 253;

/// A DNS domain name as stored in `org_domains`: trimmed, lower-cased, one trailing dot
/// dropped; at least two labels of 1–63 letters, digits or inner hyphens (RFC 1035 §2.3.1,
/// RFC 1123 §2.1), at most 253 characters; an all-numeric top label (an IP address) is
/// refused. Internationalized names must be given as A-labels (`xn--…`, RFC 5890 §2.3.2.1).
pub fn normalize_domain(raw: &str) -> Result<String, IdentityError> {
    let d = raw.trim().to_ascii_lowercase();
    let d = d.strip_suffix('.').unwrap_or(&d);
    let bad = |why: &str| IdentityError::invalid("domain", why.to_string());
    if d.is_empty() || d.len() > MAX_DOMAIN_LEN {
        return Err(bad("must be 1 to 253 characters"));
    }
    if !d.is_ascii() {
        return Err(bad(
            "use the ASCII (xn--) form of an internationalized name",
        ));
    }
    let labels: Vec<&str> = d.split('.').collect();
    if labels.len() < 2 {
        return Err(bad("must have at least two labels, like example.com"));
    }
    for l in &labels {
        if l.is_empty()
            || l.len() > 63
            || l.starts_with('-')
            || l.ends_with('-')
            || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(bad(
                "each label is 1 to 63 letters, digits or inner hyphens",
            ));
        }
    }
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad("must be a domain name, not an IP address"));
    }
    Ok(d.to_string())
}

/// Registers an email domain for the org. A domain belongs to at most one org (`Conflict`
/// naming `domain`). It starts unverified; see [`set_domain_verified`].
pub async fn add_domain(
    id: &Identity,
    org_id: Uuid,
    domain: &str,
) -> Result<OrgDomain, IdentityError> {
    let domain = normalize_domain(domain)?;
    let d = OrgDomain {
        domain_id: Uuid::now_v7(),
        org_id,
        domain,
        verified: false,
        created_at: id.clock.now(),
    };
    let mut tx = id.db.begin().await?;
    store::org_settings::insert_domain(&mut tx, &d)
        .await
        .map_err(|e| match e {
            StoreError::ForeignKey => IdentityError::NotFound {
                what: "organization",
            },
            e => IdentityError::from_store_conflict(e, |_| {
                format!("the organization already claims the domain {}", d.domain)
            }),
        })?;
    let event = Event::new("org_domain.added", "org_domain", d.domain_id)
        .org(org_id)
        .details(json!({ "domain": d.domain }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(d)
}

/// The org's registration of `domain` (normalized), read inside `tx`.
async fn domain_of(tx: &mut Tx, org_id: Uuid, domain: &str) -> Result<OrgDomain, IdentityError> {
    store::org_settings::find_domain(tx, org_id, domain)
        .await?
        .ok_or(IdentityError::NotFound { what: "domain" })
}

pub async fn remove_domain(id: &Identity, org_id: Uuid, domain: &str) -> Result<(), IdentityError> {
    let domain = normalize_domain(domain)?;
    let mut tx = id.db.begin().await?;
    let d = domain_of(&mut tx, org_id, &domain).await?;
    if !store::org_settings::delete_domain(&mut tx, org_id, &domain).await? {
        return Err(IdentityError::NotFound { what: "domain" });
    }
    let event = Event::new("org_domain.removed", "org_domain", d.domain_id)
        .org(org_id)
        .details(json!({ "domain": d.domain, "verified": d.verified }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Records whether the org proved it controls the domain (e.g. a DNS TXT check).
pub async fn set_domain_verified(
    id: &Identity,
    org_id: Uuid,
    domain: &str,
    verified: bool,
) -> Result<(), IdentityError> {
    let domain = normalize_domain(domain)?;
    let mut tx = id.db.begin().await?;
    let d = domain_of(&mut tx, org_id, &domain).await?;
    let set = store::org_settings::set_domain_verified(&mut tx, org_id, &domain, verified)
        .await
        .map_err(|e| {
            IdentityError::from_store_conflict(e, |_| {
                format!("the domain {domain} is already verified by another organization")
            })
        })?;
    if !set {
        return Err(IdentityError::NotFound { what: "domain" });
    }
    let action = if verified {
        "org_domain.verified"
    } else {
        "org_domain.unverified"
    };
    let event = Event::new(action, "org_domain", d.domain_id)
        .org(org_id)
        .details(json!({
            "domain": d.domain,
            "verified": { "before": d.verified, "after": verified },
        }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list_domains(id: &Identity, org_id: Uuid) -> Result<Vec<OrgDomain>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::org_settings::list_domains(&mut c, org_id).await?)
}

/// Home-realm discovery: the org that registered the email's domain (exact match, no
/// parent-domain fallback), if any. Routing only: callers linking accounts by email should
/// also require the domain to be verified ([`list_domains`]).
pub async fn org_for_email_domain(
    id: &Identity,
    email: &str,
) -> Result<Option<Org>, IdentityError> {
    let email = super::users::normalize_email(email)?;
    let domain = email
        .rsplit_once('@')
        .map(|(_, d)| d)
        .ok_or_else(|| IdentityError::invalid("email", "must look like name@example.com"))?;
    let Ok(domain) = normalize_domain(domain) else {
        return Ok(None);
    };
    let mut c = id.db.conn().await?;
    // Only a verified domain routes logins: an unverified claim proves nothing.
    match store::org_settings::find_verified_domain(&mut c, &domain).await? {
        Some(d) => Ok(store::orgs::get(&mut c, d.org_id).await?),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs() {
        assert_eq!(slugify("Acme Corp"), "acme-corp");
        assert_eq!(slugify("  ACME -- Corp!! "), "acme-corp");
        assert_eq!(slugify("Ünïcode Ltd."), "n-code-ltd");
        assert_eq!(slugify("!!!"), "");
        assert_eq!(slugify(&"a".repeat(100)).len(), 63);
        assert_eq!(slugify(&format!("{}-b", "a".repeat(62))), "a".repeat(62));
        assert!(check_slug("acme-corp").is_ok());
        for bad in ["", "Acme", "-acme", "acme-", "a--b", "a b"] {
            assert!(check_slug(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn domains() {
        assert_eq!(normalize_domain(" Acme.COM. ").unwrap(), "acme.com");
        assert_eq!(
            normalize_domain("xn--bcher-kva.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(normalize_domain("a-b.c1.io").unwrap(), "a-b.c1.io");
        let long_label = format!("{}.com", "a".repeat(64));
        let too_long = format!("{}com", "abcdefghi.".repeat(26));
        for bad in [
            "",
            ".",
            "com",
            "acme..com",
            ".acme.com",
            "-acme.com",
            "acme-.com",
            "ac_me.com",
            "acme.com/x",
            "ada@acme.com",
            "bücher.de",
            "10.0.0.1",
            long_label.as_str(),
            too_long.as_str(),
        ] {
            assert!(normalize_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn login_methods() {
        for m in LoginMethod::ALL {
            assert_eq!(LoginMethod::parse(m.as_str()).unwrap(), m);
        }
        assert!(LoginMethod::parse("Password").is_err());
        assert!(LoginMethod::parse("kerberos").is_err());
        assert!(LoginMethod::Password.allowed_by_default());
        assert!(!LoginMethod::Saml.allowed_by_default());
    }
}
