//! Just-in-time provisioning and account linking for federated logins (issue #7 item 6):
//! the first login creates the user, the link and the membership; later logins update the
//! mapped names and the IdP-managed roles. Everything of one login commits together, with
//! its audit rows, its `login_attempts` row and its metrics event.
use super::FederationError;
use super::mapping::{self, Asserted, JitSettings};
use crate::identity::audit::{self, Event};
use crate::identity::login::{LoginContext, insert_attempt};
use crate::identity::orgs::LoginMethod;
use crate::identity::{Identity, IdentityError, memberships, metrics, roles, users};
use crate::store::federation::{FederatedIdentity, IdentityProvider};
use crate::store::users::User;
use crate::store::{self, StoreError};
use serde_json::json;
use uuid::Uuid;

/// The outcome of a successful federated login.
#[derive(Debug, Clone)]
pub struct Provisioned {
    pub user: User,
    pub org_id: Uuid,
    /// Whether this login created the user.
    pub created: bool,
    /// Whether this login linked an existing user to the provider.
    pub linked: bool,
}

/// Records a refused federated login (no user known): a `login_attempts` row for the org
/// and a failed-login metrics event.
pub async fn record_failure(
    id: &Identity,
    provider: &IdentityProvider,
    ctx: &LoginContext,
) -> Result<(), IdentityError> {
    let ctx = LoginContext {
        org_id: Some(provider.org_id),
        ..ctx.clone()
    };
    let mut tx = id.db.begin().await?;
    insert_attempt(&mut tx, None, &ctx, id.clock.now(), false).await?;
    let method = LoginMethod::of_provider(&provider.kind).as_str();
    metrics::record_login(&mut tx, id, None, Some(provider.org_id), false, method).await?;
    tx.commit().await?;
    Ok(())
}

/// Provisions or updates the user an upstream provider asserted, in one transaction.
pub async fn provision(
    id: &Identity,
    provider: &IdentityProvider,
    settings: &JitSettings,
    asserted: &Asserted,
    ctx: &LoginContext,
) -> Result<Provisioned, FederationError> {
    let now = id.clock.now();
    let method = LoginMethod::of_provider(&provider.kind);
    let mut tx = id.db.begin().await.map_err(IdentityError::from)?;
    let org = roles::lock_org(&mut tx, provider.org_id).await?;
    if !crate::identity::orgs::method_allowed_in(&mut tx, org.org_id, method)
        .await
        .map_err(IdentityError::from)?
    {
        return Err(FederationError::MethodNotAllowed);
    }
    let mapped = mapping::map(asserted, &settings.attribute_mapping);
    let email = mapped
        .email
        .as_deref()
        .ok_or(FederationError::MissingEmail)
        .and_then(|e| users::normalize_email(e).map_err(|_| FederationError::MissingEmail))?;
    let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
    // An IdP speaks only for addresses of its org's verified domains: a new user with any
    // other address would squat it (and a later password reset by its owner would leave
    // the IdP a way in).
    let domain_verified = store::org_settings::find_domain(&mut tx, org.org_id, domain)
        .await
        .map_err(IdentityError::from)?
        .is_some_and(|d| d.verified);
    // An upstream OIDC provider vouches for an address only with `email_verified: true`
    // (OIDC Core §5.1; an absent claim proves nothing); a SAML IdP's assertion is its word.
    let email_vouched = match asserted.email_verified {
        Some(v) => v,
        None => provider.kind == "saml",
    };
    // The org trusts this IdP for the address when it says so and has verified the domain.
    let trusted = settings.trust_email && email_vouched && domain_verified;
    let provider_ref = json!({ "provider_id": provider.provider_id, "type": provider.kind });

    let link = store::federation::find_link(&mut tx, provider.provider_id, &asserted.subject)
        .await
        .map_err(IdentityError::from)?;
    let (mut user, created, linked) = match link {
        Some(l) => {
            let user = store::users::get_for_update(&mut tx, l.user_id)
                .await
                .map_err(IdentityError::from)?
                .ok_or(IdentityError::NotFound { what: "user" })?;
            store::federation::touch_link(&mut tx, provider.provider_id, &asserted.subject, now)
                .await
                .map_err(IdentityError::from)?;
            (user, false, false)
        }
        None => {
            let existing = store::users::find_by_email(&mut tx, &email)
                .await
                .map_err(IdentityError::from)?;
            let (user, created) = match existing {
                // An account with this email exists: linked only when the org trusts the
                // IdP for the domain and the account's owner proved the address (an
                // unconfirmed account may be someone else's squat); otherwise refused.
                Some(u) if trusted && u.email_confirmed => (u, false),
                Some(_) => return Err(FederationError::AccountExists),
                None if !domain_verified => return Err(FederationError::DomainNotVerified),
                None => {
                    let user = User {
                        first_name: mapped.first_name.clone(),
                        last_name: mapped.last_name.clone(),
                        email_confirmed: trusted,
                        ..users::fresh(email.clone(), now)
                    };
                    store::users::insert(&mut tx, &user)
                        .await
                        .map_err(|e| match e {
                            StoreError::Conflict { .. } => FederationError::AccountExists,
                            e => IdentityError::from(e).into(),
                        })?;
                    let event = Event::new("user.created", "user", user.user_id)
                        .org(org.org_id)
                        .details(json!({
                            "email": user.email,
                            "has_password": false,
                            "via": provider_ref,
                        }));
                    audit::record(&mut tx, id, event).await?;
                    metrics::record_signup(&mut tx, id, user.user_id, Some(org.org_id)).await?;
                    (user, true)
                }
            };
            store::federation::insert_link(
                &mut tx,
                &FederatedIdentity {
                    provider_id: provider.provider_id,
                    subject: asserted.subject.clone(),
                    user_id: user.user_id,
                    created_at: now,
                    last_login_at: now,
                },
            )
            .await
            .map_err(IdentityError::from)?;
            let event = Event::new(
                "federated_identity.linked",
                "federated_identity",
                audit::pair(provider.provider_id, user.user_id),
            )
            .org(org.org_id)
            .details(
                json!({ "provider_id": provider.provider_id, "user_id": user.user_id,
                             "subject": asserted.subject, "new_user": created }),
            );
            audit::record(&mut tx, id, event).await?;
            (user, created, !created)
        }
    };
    if !user.enabled {
        return Err(IdentityError::AccountDisabled.into());
    }
    if user.locked {
        return Err(IdentityError::AccountLocked { until: None }.into());
    }

    // Later logins bring the mapped names up to date (the email is never changed by an IdP).
    if !created {
        let before = user.clone();
        if let Some(f) = &mapped.first_name {
            user.first_name = Some(f.clone());
        }
        if let Some(l) = &mapped.last_name {
            user.last_name = Some(l.clone());
        }
        if user != before {
            store::users::update(&mut tx, &user)
                .await
                .map_err(IdentityError::from)?;
            let event = Event::new("user.updated", "user", user.user_id)
                .org(org.org_id)
                .details(audit::diff_of(&before, &user, &[]));
            audit::record(&mut tx, id, event).await?;
        }
    }

    // Membership, with the role from the group mapping or the default role.
    let (desired, managed) = mapping::roles_for(settings, &mapped.groups);
    let is_member = store::memberships::get(&mut tx, user.user_id, org.org_id)
        .await
        .map_err(IdentityError::from)?
        .is_some();
    if !is_member {
        let m = memberships::add_in(&mut tx, &org, user.user_id, &settings.default_role, now)
            .await
            .map_err(|e| match e {
                IdentityError::NotFound { what: "role" } => FederationError::Config(format!(
                    "the default role `{}` does not exist in the organization",
                    settings.default_role
                )),
                e => e.into(),
            })?;
        let event = Event::new(
            "membership.created",
            "membership",
            audit::pair(user.user_id, org.org_id),
        )
        .org(org.org_id)
        .details(json!({ "user_id": user.user_id, "role": m.user_role, "via": provider_ref }));
        audit::record(&mut tx, id, event).await?;
    }
    let mut managed_ids = Vec::new();
    let mut desired_ids = Vec::new();
    for name in &managed {
        match store::roles::find_role_by_name(&mut tx, org.org_id, name)
            .await
            .map_err(IdentityError::from)?
        {
            Some(r) => {
                if desired.contains(name) {
                    desired_ids.push(r.role_id);
                }
                managed_ids.push(r.role_id);
            }
            None => tracing::warn!(
                provider_id = %provider.provider_id,
                role = %name,
                "group_roles names a role the organization does not have"
            ),
        }
    }
    if !managed_ids.is_empty()
        && let Some((before, after)) =
            roles::sync_managed_roles(&mut tx, &org, user.user_id, &managed_ids, &desired_ids, now)
                .await?
    {
        let event = Event::new(
            "membership.roles_synced",
            "membership",
            audit::pair(user.user_id, org.org_id),
        )
        .org(org.org_id)
        .details(json!({
            "groups": mapped.groups,
            "before": { "role": before.user_role, "additional_roles": before.additional_roles },
            "after": { "role": after.user_role, "additional_roles": after.additional_roles },
            "via": provider_ref,
        }));
        audit::record(&mut tx, id, event).await?;
    }

    // A membership the org's SCIM client deactivated opens nothing.
    if !store::scim::resources::membership_active(&mut tx, org.org_id, user.user_id)
        .await
        .map_err(IdentityError::from)?
    {
        return Err(IdentityError::AccountDisabled.into());
    }
    let ctx = LoginContext {
        org_id: Some(org.org_id),
        ..ctx.clone()
    };
    insert_attempt(&mut tx, Some(user.user_id), &ctx, now, true).await?;
    metrics::record_login(
        &mut tx,
        id,
        Some(user.user_id),
        Some(org.org_id),
        true,
        method.as_str(),
    )
    .await?;
    tx.commit().await.map_err(IdentityError::from)?;
    Ok(Provisioned {
        user,
        org_id: org.org_id,
        created,
        linked,
    })
}
