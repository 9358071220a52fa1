//! Memberships: a user in an org with a primary role (`user_role`), stored in
//! `user_organization_info` with derived role lists kept in sync by [`super::roles`].
//!
//! Invariant: the primary role is always one of the member's `user_roles` rows.
//!
//! Audit: [`add_in`] runs inside another mutation's transaction and records nothing; the
//! public mutation that calls it writes the one row (`membership.created` from [`add`],
//! `user.created` / `organization.created` when a membership comes with a new user or org).
use super::audit::{self, Event};
use super::roles::{self, lock_org, membership_in, role_named};
use super::{Identity, IdentityError};
use crate::store::memberships::Membership;
use crate::store::orgs::Org;
use crate::store::{self, StoreError, TextList, Tx};
use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

pub const MAX_PAGE: u32 = 500;

/// Adds `user_id` to `org` with primary role `role_name` inside the caller's transaction
/// (locks the org row); writes no audit row (the caller's mutation does). Unknown role → `NotFound { what: "role" }`, unknown user →
/// `NotFound { what: "user" }`, already a member → `Conflict { field: "membership" }`.
pub async fn add_in(
    tx: &mut Tx,
    org: &Org,
    user_id: Uuid,
    role_name: &str,
    now: DateTime<Utc>,
) -> Result<Membership, IdentityError> {
    let org = lock_org(tx, org.org_id).await?;
    let role = role_named(tx, org.org_id, role_name).await?;
    let m = Membership {
        user_id,
        org_id: org.org_id,
        user_role: role.name.clone(),
        url_safe_org_name: org.url_safe_org_name.clone(),
        org_role_structure: org.org_role_structure.clone(),
        inherited_user_roles_plus_current_role: TextList::default(),
        user_permissions: TextList::default(),
        additional_roles: TextList::default(),
    };
    store::memberships::insert(tx, &m)
        .await
        .map_err(|e| match e {
            StoreError::ForeignKey => IdentityError::NotFound { what: "user" },
            e => IdentityError::from_store_conflict(e, |_| {
                "the user is already a member of this organization".into()
            }),
        })?;
    store::roles::assign(tx, user_id, role.role_id, now).await?;
    roles::sync_member(tx, org.org_id, user_id).await
}

/// Adds a user to an org with the named primary role, in its own transaction.
pub async fn add(
    id: &Identity,
    org_id: Uuid,
    user_id: Uuid,
    role_name: &str,
) -> Result<Membership, IdentityError> {
    let mut tx = id.db.begin().await?;
    let org = lock_org(&mut tx, org_id).await?;
    if store::users::get(&mut tx, user_id).await?.is_none() {
        return Err(IdentityError::NotFound { what: "user" });
    }
    let m = add_in(&mut tx, &org, user_id, role_name, id.clock.now()).await?;
    let event = Event::new("membership.created", "membership", object_id(&m))
        .org(org_id)
        .details(json!({ "user_id": user_id, "role": m.user_role }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(m)
}

/// A membership's `object_id` in the audit log: `user_id:org_id` (its primary key).
fn object_id(m: &Membership) -> String {
    audit::pair(m.user_id, m.org_id)
}

/// Removes a member and their role assignments in the org.
pub async fn remove(id: &Identity, org_id: Uuid, user_id: Uuid) -> Result<(), IdentityError> {
    let (mut tx, _) = roles::begin_org(id, org_id).await?;
    let m = membership_in(&mut tx, org_id, user_id).await?;
    let ended = remove_in(&mut tx, org_id, user_id).await?;
    let event = Event::new("membership.deleted", "membership", object_id(&m))
        .org(org_id)
        .details(json!({ "user_id": user_id, "role": m.user_role, "sessions_revoked": ended }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    id.sessions_ended();
    Ok(())
}

/// Deletes a membership and the member's role assignments in the org inside the caller's
/// transaction (which records the audit row); the member's sessions opened for the org
/// end with it. Returns how many sessions were revoked.
pub(crate) async fn remove_in(
    tx: &mut Tx,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<u64, IdentityError> {
    store::roles::unassign_all_in_org(tx, user_id, org_id).await?;
    store::memberships::delete(tx, user_id, org_id).await?;
    Ok(store::sessions::revoke_for_member(tx, user_id, org_id).await?)
}

pub async fn get(id: &Identity, org_id: Uuid, user_id: Uuid) -> Result<Membership, IdentityError> {
    let mut c = id.db.conn().await?;
    membership_in(&mut c, org_id, user_id).await
}

/// A page of the org's members ordered by `user_id`, after `after`.
pub async fn list_for_org(
    id: &Identity,
    org_id: Uuid,
    after: Option<Uuid>,
    limit: u32,
) -> Result<Vec<Membership>, IdentityError> {
    let mut c = id.db.conn().await?;
    if store::orgs::get(&mut c, org_id).await?.is_none() {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    Ok(store::memberships::list_for_org(&mut c, org_id, after, limit.clamp(1, MAX_PAGE)).await?)
}

pub async fn list_for_user(id: &Identity, user_id: Uuid) -> Result<Vec<Membership>, IdentityError> {
    let mut c = id.db.conn().await?;
    Ok(store::memberships::list_for_user(&mut c, user_id).await?)
}

/// Makes `role_name` the member's primary role. The previous primary role is unassigned
/// (in a `multi_role` org other additional roles stay; a role that was additional becomes
/// primary).
pub async fn set_primary_role(
    id: &Identity,
    org_id: Uuid,
    user_id: Uuid,
    role_name: &str,
) -> Result<Membership, IdentityError> {
    let (mut tx, org) = roles::begin_org(id, org_id).await?;
    let role = role_named(&mut tx, org_id, role_name).await?;
    let before = membership_in(&mut tx, org_id, user_id).await?;
    let m = roles::replace_primary(&mut tx, &org, &before, &role, id.clock.now()).await?;
    let event = Event::new("membership.role_changed", "membership", object_id(&m))
        .org(org_id)
        .details(audit::diff_of(&before, &m, &[]));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(m)
}
