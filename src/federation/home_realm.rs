//! Home-realm discovery (issue #7 item 5): which org's IdP a login belongs to — by the
//! email's domain on the hosted login page, or by the org's slug at `/sso/{org_slug}`.
use crate::identity::orgs::LoginMethod;
use crate::identity::{Identity, IdentityError, orgs};
use crate::store::federation::IdentityProvider;
use crate::store::orgs::Org;
use crate::store::{self};

/// Where a login goes: the org and its IdP, and whether the org still allows passwords.
#[derive(Debug, Clone)]
pub struct Realm {
    pub org: Org,
    pub provider: IdentityProvider,
    pub password_allowed: bool,
}

/// The org's first enabled provider whose login method the org allows.
async fn realm_of(id: &Identity, org: Org) -> Result<Option<Realm>, IdentityError> {
    let mut c = id.db.conn().await?;
    let providers = store::federation::enabled_for_org(&mut c, org.org_id).await?;
    let methods = orgs::login_methods_in(&mut c, org.org_id).await?;
    drop(c);
    let allowed = |m: LoginMethod| methods.iter().any(|(x, on)| *x == m && *on);
    let password_allowed = allowed(LoginMethod::Password);
    let provider = providers
        .into_iter()
        .find(|p| allowed(LoginMethod::of_provider(&p.kind)));
    Ok(provider.map(|provider| Realm {
        org,
        provider,
        password_allowed,
    }))
}

/// The realm of an email: the org that verified the email's domain, when it has an enabled
/// IdP it allows. Unverified domains route nothing (`orgs::org_for_email_domain`).
pub async fn for_email(id: &Identity, email: &str) -> Result<Option<Realm>, IdentityError> {
    match orgs::org_for_email_domain(id, email).await {
        Ok(Some(org)) => realm_of(id, org).await,
        Ok(None) | Err(IdentityError::Invalid { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The realm of an org slug (`/sso/{org_slug}`).
pub async fn for_slug(id: &Identity, slug: &str) -> Result<Option<Realm>, IdentityError> {
    let mut c = id.db.conn().await?;
    let Some(org) = store::orgs::get_by_slug(&mut c, slug).await? else {
        return Ok(None);
    };
    drop(c);
    realm_of(id, org).await
}

/// The realm of an org by id (an org-bound client's login goes straight to it when the org
/// refuses passwords).
pub async fn for_org(id: &Identity, org_id: uuid::Uuid) -> Result<Option<Realm>, IdentityError> {
    let mut c = id.db.conn().await?;
    let Some(org) = store::orgs::get(&mut c, org_id).await? else {
        return Ok(None);
    };
    drop(c);
    realm_of(id, org).await
}
