//! Per-org roles and permissions, role inheritance, and the derived role columns of
//! `user_organization_info`.
//!
//! `role_inheritance(role_id, parent_role_id)` means `role_id` includes `parent_role_id`:
//! the effective roles of R are R plus the effective roles of each parent, and a role's
//! permissions are its own grants plus those of every role it includes. The graph is kept
//! acyclic. Every change runs in one transaction that first locks the org row and ends by
//! recomputing the derived columns of the members it can affect ([`sync_org`] /
//! [`sync_member`]), so those columns never disagree with the tables they come from.
//!
//! Each public mutation writes one audit row in that transaction. Idempotent calls that
//! change nothing (granting a held permission, adding an existing edge, assigning a held
//! role) still write their row, with `"changed": false` (or an empty membership diff).
use super::audit::{self, Event};
use super::{Identity, IdentityError};
use crate::store::memberships::Membership;
use crate::store::orgs::Org;
use crate::store::roles::{Permission, Role};
use crate::store::{self, Access, StoreError, TextList, Tx};
use chrono::{DateTime, Utc};
use serde_json::json;
use std::collections::{BTreeSet, HashMap, HashSet};
use uuid::Uuid;

pub const MAX_NAME_LEN: usize = 64;
pub const MAX_DESCRIPTION_LEN: usize = 1000;

/// The roles every org starts with: owner includes admin includes member.
pub const OWNER: &str = "owner";
pub const ADMIN: &str = "admin";
pub const MEMBER: &str = "member";

/// `organizations.org_role_structure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoleStructure {
    /// Exactly one direct role per member (`user_role`).
    SingleRole,
    /// `user_role` plus any number of additional direct roles.
    MultiRole,
}

impl RoleStructure {
    pub fn as_str(self) -> &'static str {
        match self {
            RoleStructure::SingleRole => "single_role",
            RoleStructure::MultiRole => "multi_role",
        }
    }

    pub fn parse(s: &str) -> Result<Self, IdentityError> {
        match s {
            "single_role" => Ok(RoleStructure::SingleRole),
            "multi_role" => Ok(RoleStructure::MultiRole),
            _ => Err(IdentityError::invalid(
                "org_role_structure",
                "must be single_role or multi_role",
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Pure computation

/// One org's roles, their parents and the names of the permissions granted to each.
#[derive(Debug, Clone, Default)]
pub struct RoleGraph {
    roles: HashMap<Uuid, Node>,
}

#[derive(Debug, Clone, Default)]
struct Node {
    name: String,
    parents: Vec<Uuid>,
    permissions: Vec<String>,
}

impl RoleGraph {
    /// Builds a graph from rows; edges and grants naming unknown roles are ignored.
    pub fn from_parts(
        roles: impl IntoIterator<Item = (Uuid, String)>,
        edges: impl IntoIterator<Item = (Uuid, Uuid)>,
        grants: impl IntoIterator<Item = (Uuid, String)>,
    ) -> Self {
        let mut g = RoleGraph::default();
        for (id, name) in roles {
            g.roles.insert(
                id,
                Node {
                    name,
                    ..Node::default()
                },
            );
        }
        for (role, parent) in edges {
            if g.roles.contains_key(&parent)
                && let Some(n) = g.roles.get_mut(&role)
            {
                n.parents.push(parent);
            }
        }
        for (role, permission) in grants {
            if let Some(n) = g.roles.get_mut(&role) {
                n.permissions.push(permission);
            }
        }
        g
    }

    pub fn name(&self, role_id: Uuid) -> Option<&str> {
        self.roles.get(&role_id).map(|n| n.name.as_str())
    }

    /// The roles reachable from `start` through "includes" edges, `start` itself included.
    fn closure(&self, start: impl IntoIterator<Item = Uuid>) -> HashSet<Uuid> {
        let mut seen = HashSet::new();
        let mut stack: Vec<Uuid> = start
            .into_iter()
            .filter(|r| self.roles.contains_key(r))
            .collect();
        while let Some(r) = stack.pop() {
            if seen.insert(r)
                && let Some(n) = self.roles.get(&r)
            {
                stack.extend(n.parents.iter().filter(|p| !seen.contains(p)));
            }
        }
        seen
    }

    /// Whether `role_id` includes `other` (directly or through inheritance, or is it).
    pub fn includes(&self, role_id: Uuid, other: Uuid) -> bool {
        self.closure([role_id]).contains(&other)
    }

    /// Whether the edge "`role_id` includes `parent_role_id`" would close a cycle: the parent
    /// is the role itself or already includes it.
    pub fn would_cycle(&self, role_id: Uuid, parent_role_id: Uuid) -> bool {
        role_id == parent_role_id || self.includes(parent_role_id, role_id)
    }
}

/// The effective roles and permissions (names, sorted, deduplicated) of someone holding
/// `direct` roles. Unknown ids are ignored; a cycle in the data would not loop.
pub fn effective(graph: &RoleGraph, direct: &[Uuid]) -> (Vec<String>, Vec<String>) {
    let all = graph.closure(direct.iter().copied());
    let mut roles = BTreeSet::new();
    let mut permissions = BTreeSet::new();
    for r in &all {
        if let Some(n) = graph.roles.get(r) {
            roles.insert(n.name.clone());
            permissions.extend(n.permissions.iter().cloned());
        }
    }
    (
        roles.into_iter().collect(),
        permissions.into_iter().collect(),
    )
}

/// A membership row with its derived columns recomputed from the graph and the member's
/// direct roles: `inherited_user_roles_plus_current_role`, `user_permissions`,
/// `additional_roles` (direct roles other than `user_role`, sorted) and the org's
/// `org_role_structure`.
pub fn derive(graph: &RoleGraph, org: &Org, m: &Membership, direct: &[Uuid]) -> Membership {
    let (roles, permissions) = effective(graph, direct);
    let additional: BTreeSet<String> = direct
        .iter()
        .filter_map(|r| graph.name(*r))
        .filter(|n| *n != m.user_role)
        .map(str::to_string)
        .collect();
    Membership {
        org_role_structure: org.org_role_structure.clone(),
        inherited_user_roles_plus_current_role: TextList(roles),
        user_permissions: TextList(permissions),
        additional_roles: TextList(additional.into_iter().collect()),
        ..m.clone()
    }
}

/// A role or permission name: trimmed, 1 to 64 characters, no control characters.
pub fn check_name(field: &'static str, raw: &str) -> Result<String, IdentityError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME_LEN {
        return Err(IdentityError::invalid(
            field,
            format!("must be 1 to {MAX_NAME_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(IdentityError::invalid(
            field,
            "must not contain control characters",
        ));
    }
    Ok(name.to_string())
}

fn check_description(raw: Option<&str>) -> Result<Option<String>, IdentityError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(d) if d.chars().count() > MAX_DESCRIPTION_LEN => Err(IdentityError::invalid(
            "description",
            format!("must be at most {MAX_DESCRIPTION_LEN} characters"),
        )),
        Some(d) => Ok(Some(d.to_string())),
    }
}

// ---------------------------------------------------------------------------------------
// Store-backed helpers shared with `orgs` and `memberships`

/// Starts a transaction holding the org's lock (see [`store::orgs::lock`]).
pub(crate) async fn begin_org(id: &Identity, org_id: Uuid) -> Result<(Tx, Org), IdentityError> {
    let mut tx = id.db.begin().await?;
    let org = lock_org(&mut tx, org_id).await?;
    Ok((tx, org))
}

/// Locks the org row inside `tx` and returns the org.
pub(crate) async fn lock_org(tx: &mut Tx, org_id: Uuid) -> Result<Org, IdentityError> {
    let not_found = IdentityError::NotFound {
        what: "organization",
    };
    if !store::orgs::lock(tx, org_id).await? {
        return Err(not_found);
    }
    store::orgs::get(tx, org_id).await?.ok_or(not_found)
}

/// The org's role graph as stored.
pub async fn load_graph(a: &mut impl Access, org_id: Uuid) -> Result<RoleGraph, StoreError> {
    let roles = store::roles::list_roles(a, org_id).await?;
    let edges = store::roles::org_edges(a, org_id).await?;
    let grants = store::roles::org_grants(a, org_id).await?;
    Ok(RoleGraph::from_parts(
        roles.into_iter().map(|r| (r.role_id, r.name)),
        edges,
        grants,
    ))
}

/// A role of this org: one of another org is `CrossOrg`, an unknown id `NotFound`.
pub(crate) async fn role_in(
    a: &mut impl Access,
    org_id: Uuid,
    role_id: Uuid,
) -> Result<Role, IdentityError> {
    match store::roles::get_role(a, role_id).await? {
        None => Err(IdentityError::NotFound { what: "role" }),
        Some(r) if r.org_id != org_id => Err(IdentityError::CrossOrg { what: "role" }),
        Some(r) => Ok(r),
    }
}

pub(crate) async fn role_named(
    a: &mut impl Access,
    org_id: Uuid,
    name: &str,
) -> Result<Role, IdentityError> {
    store::roles::find_role_by_name(a, org_id, name.trim())
        .await?
        .ok_or(IdentityError::NotFound { what: "role" })
}

/// A permission of this org or a global one.
async fn permission_in(
    a: &mut impl Access,
    org_id: Uuid,
    permission_id: Uuid,
) -> Result<Permission, IdentityError> {
    match store::roles::get_permission(a, permission_id).await? {
        None => Err(IdentityError::NotFound { what: "permission" }),
        Some(p) if p.org_id.is_some_and(|o| o != org_id) => {
            Err(IdentityError::CrossOrg { what: "permission" })
        }
        Some(p) => Ok(p),
    }
}

pub(crate) async fn membership_in(
    a: &mut impl Access,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Membership, IdentityError> {
    store::memberships::get(a, user_id, org_id)
        .await?
        .ok_or(IdentityError::NotFound { what: "membership" })
}

/// Recomputes the derived columns of every member of the org (writing only rows that
/// change). Call inside the transaction that changed roles, edges, grants or structure.
pub async fn sync_org(tx: &mut Tx, org_id: Uuid) -> Result<(), IdentityError> {
    let org = store::orgs::get(tx, org_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "organization",
        })?;
    let graph = load_graph(tx, org_id).await?;
    let mut direct: HashMap<Uuid, Vec<Uuid>> = HashMap::new();
    for (user, role) in store::roles::org_assignments(tx, org_id).await? {
        direct.entry(user).or_default().push(role);
    }
    for m in store::memberships::all_for_org(tx, org_id).await? {
        let roles = direct.get(&m.user_id).map(Vec::as_slice).unwrap_or(&[]);
        let new = derive(&graph, &org, &m, roles);
        if new != m {
            store::memberships::update_derived(tx, &new).await?;
        }
    }
    Ok(())
}

/// Recomputes the derived columns of one member; returns the row as stored.
pub async fn sync_member(
    tx: &mut Tx,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<Membership, IdentityError> {
    let org = store::orgs::get(tx, org_id)
        .await?
        .ok_or(IdentityError::NotFound {
            what: "organization",
        })?;
    let m = membership_in(tx, org_id, user_id).await?;
    let graph = load_graph(tx, org_id).await?;
    let direct = store::roles::member_role_ids(tx, org_id, user_id).await?;
    let new = derive(&graph, &org, &m, &direct);
    if new != m {
        store::memberships::update_derived(tx, &new).await?;
    }
    Ok(new)
}

/// Makes `role` the member's primary role: the previous primary role is unassigned (in a
/// `single_role` org every other direct role too), `role` is assigned, and the row synced.
pub(crate) async fn replace_primary(
    tx: &mut Tx,
    org: &Org,
    m: &Membership,
    role: &Role,
    now: DateTime<Utc>,
) -> Result<Membership, IdentityError> {
    if org.org_role_structure == RoleStructure::SingleRole.as_str() {
        let keep = store::roles::member_role_ids(tx, org.org_id, m.user_id).await?;
        for r in keep.into_iter().filter(|r| *r != role.role_id) {
            store::roles::unassign(tx, m.user_id, r).await?;
        }
    } else if m.user_role != role.name
        && let Some(old) = store::roles::find_role_by_name(tx, org.org_id, &m.user_role).await?
    {
        store::roles::unassign(tx, m.user_id, old.role_id).await?;
    }
    store::roles::assign(tx, m.user_id, role.role_id, now).await?;
    store::memberships::set_user_role(tx, m.user_id, org.org_id, &role.name).await?;
    sync_member(tx, org.org_id, m.user_id).await
}

/// Creates `owner`, `admin` and `member` (owner includes admin includes member) for a new
/// org; returns them in that order.
pub async fn create_default_roles(
    tx: &mut Tx,
    org_id: Uuid,
    now: DateTime<Utc>,
) -> Result<[Role; 3], IdentityError> {
    let role = |name: &str, description: &str| Role {
        role_id: Uuid::now_v7(),
        org_id,
        name: name.into(),
        description: Some(description.into()),
        created_at: now,
    };
    let owner = role(OWNER, "Owns the organization");
    let admin = role(ADMIN, "Administers the organization");
    let member = role(MEMBER, "Member of the organization");
    for r in [&owner, &admin, &member] {
        store::roles::insert_role(tx, r).await?;
    }
    store::roles::add_edge(tx, owner.role_id, admin.role_id).await?;
    store::roles::add_edge(tx, admin.role_id, member.role_id).await?;
    // The management API's permissions, each given to the lowest default role that has it
    // (inheritance passes it up): see `access::perm`.
    use super::access::perm;
    for (role, names) in [
        (&member, perm::MEMBER),
        (&admin, perm::ADMIN),
        (&owner, perm::OWNER),
    ] {
        for name in names {
            let p = Permission {
                permission_id: Uuid::now_v7(),
                org_id: Some(org_id),
                name: (*name).to_string(),
                description: None,
                created_at: now,
            };
            store::roles::insert_permission(tx, &p).await?;
            store::roles::grant(tx, role.role_id, p.permission_id).await?;
        }
    }
    Ok([owner, admin, member])
}

fn role_conflict(e: StoreError, name: &str) -> IdentityError {
    IdentityError::from_store_conflict(e, |_| {
        format!("a role named `{name}` already exists in this organization")
    })
}

// ---------------------------------------------------------------------------------------
// Public API

pub async fn create_role(
    id: &Identity,
    org_id: Uuid,
    name: &str,
    description: Option<&str>,
) -> Result<Role, IdentityError> {
    let name = check_name("name", name)?;
    let description = check_description(description)?;
    let (mut tx, _) = begin_org(id, org_id).await?;
    let role = Role {
        role_id: Uuid::now_v7(),
        org_id,
        name,
        description,
        created_at: id.clock.now(),
    };
    store::roles::insert_role(&mut tx, &role)
        .await
        .map_err(|e| role_conflict(e, &role.name))?;
    sync_org(&mut tx, org_id).await?;
    let event = Event::new("role.created", "role", role.role_id)
        .org(org_id)
        .details(json!({ "name": role.name, "description": role.description }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(role)
}

/// Renames a role; members whose primary role it is follow the new name.
pub async fn rename_role(
    id: &Identity,
    org_id: Uuid,
    role_id: Uuid,
    name: &str,
) -> Result<Role, IdentityError> {
    let name = check_name("name", name)?;
    let (mut tx, _) = begin_org(id, org_id).await?;
    let role = role_in(&mut tx, org_id, role_id).await?;
    store::roles::rename_role(&mut tx, role_id, &name)
        .await
        .map_err(|e| role_conflict(e, &name))?;
    store::memberships::rename_primary_role(&mut tx, org_id, &role.name, &name).await?;
    sync_org(&mut tx, org_id).await?;
    let event = Event::new("role.renamed", "role", role_id)
        .org(org_id)
        .details(json!({ "name": { "before": role.name, "after": name } }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(Role { name, ..role })
}

/// Deletes a role with its grants, edges and assignments. Refused (`Invalid`) while it is
/// any member's primary role: give them another one first.
pub async fn delete_role(id: &Identity, org_id: Uuid, role_id: Uuid) -> Result<(), IdentityError> {
    let (mut tx, _) = begin_org(id, org_id).await?;
    let role = role_in(&mut tx, org_id, role_id).await?;
    let holders = store::memberships::count_with_primary_role(&mut tx, org_id, &role.name).await?;
    if holders > 0 {
        return Err(IdentityError::invalid(
            "role_id",
            format!(
                "`{}` is the primary role of {holders} member(s); give them another role first",
                role.name
            ),
        ));
    }
    store::roles::delete_role(&mut tx, role_id).await?;
    sync_org(&mut tx, org_id).await?;
    let event = Event::new("role.deleted", "role", role_id)
        .org(org_id)
        .details(json!({ "name": role.name }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn list_roles(id: &Identity, org_id: Uuid) -> Result<Vec<Role>, IdentityError> {
    let mut c = id.db.conn().await?;
    if store::orgs::get(&mut c, org_id).await?.is_none() {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    Ok(store::roles::list_roles(&mut c, org_id).await?)
}

pub async fn create_permission(
    id: &Identity,
    org_id: Uuid,
    name: &str,
    description: Option<&str>,
) -> Result<Permission, IdentityError> {
    let name = check_name("name", name)?;
    let description = check_description(description)?;
    let (mut tx, _) = begin_org(id, org_id).await?;
    let p = Permission {
        permission_id: Uuid::now_v7(),
        org_id: Some(org_id),
        name,
        description,
        created_at: id.clock.now(),
    };
    store::roles::insert_permission(&mut tx, &p)
        .await
        .map_err(|e| {
            IdentityError::from_store_conflict(e, |_| {
                format!(
                    "a permission named `{}` already exists in this organization",
                    p.name
                )
            })
        })?;
    sync_org(&mut tx, org_id).await?;
    let event = Event::new("permission.created", "permission", p.permission_id)
        .org(org_id)
        .details(json!({ "name": p.name, "description": p.description }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(p)
}

/// Deletes one of the org's permissions (and its grants). Global permissions are not the
/// org's to delete (`Forbidden`).
pub async fn delete_permission(
    id: &Identity,
    org_id: Uuid,
    permission_id: Uuid,
) -> Result<(), IdentityError> {
    let (mut tx, _) = begin_org(id, org_id).await?;
    let p = permission_in(&mut tx, org_id, permission_id).await?;
    if p.org_id.is_none() {
        return Err(IdentityError::Forbidden {
            reason: "a global permission cannot be deleted by an organization".into(),
        });
    }
    store::roles::delete_permission(&mut tx, permission_id).await?;
    sync_org(&mut tx, org_id).await?;
    let event = Event::new("permission.deleted", "permission", permission_id)
        .org(org_id)
        .details(json!({ "name": p.name }));
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

/// The org's permissions and the global ones.
pub async fn list_permissions(
    id: &Identity,
    org_id: Uuid,
) -> Result<Vec<Permission>, IdentityError> {
    let mut c = id.db.conn().await?;
    if store::orgs::get(&mut c, org_id).await?.is_none() {
        return Err(IdentityError::NotFound {
            what: "organization",
        });
    }
    Ok(store::roles::list_permissions(&mut c, org_id).await?)
}

/// Grants a permission (the org's or a global one) to a role; granting twice is a no-op.
pub async fn grant_permission(
    id: &Identity,
    org_id: Uuid,
    role_id: Uuid,
    permission_id: Uuid,
) -> Result<(), IdentityError> {
    let (mut tx, _) = begin_org(id, org_id).await?;
    let role = role_in(&mut tx, org_id, role_id).await?;
    let p = permission_in(&mut tx, org_id, permission_id).await?;
    let changed = store::roles::grant(&mut tx, role_id, permission_id).await?;
    if changed {
        sync_org(&mut tx, org_id).await?;
    }
    let event = grant_event("role_permission.granted", org_id, &role, &p, changed);
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn revoke_permission(
    id: &Identity,
    org_id: Uuid,
    role_id: Uuid,
    permission_id: Uuid,
) -> Result<(), IdentityError> {
    let (mut tx, _) = begin_org(id, org_id).await?;
    let role = role_in(&mut tx, org_id, role_id).await?;
    let p = permission_in(&mut tx, org_id, permission_id).await?;
    if !store::roles::revoke(&mut tx, role_id, permission_id).await? {
        return Err(IdentityError::NotFound {
            what: "permission grant",
        });
    }
    sync_org(&mut tx, org_id).await?;
    let event = grant_event("role_permission.revoked", org_id, &role, &p, true);
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

fn grant_event(
    action: &'static str,
    org_id: Uuid,
    role: &Role,
    p: &Permission,
    changed: bool,
) -> Event<'static> {
    Event::new(
        action,
        "role_permission",
        audit::pair(role.role_id, p.permission_id),
    )
    .org(org_id)
    .details(json!({ "role": role.name, "permission": p.name, "changed": changed }))
}

fn inheritance_event(
    action: &'static str,
    org_id: Uuid,
    role: &Role,
    parent: &Role,
    changed: bool,
) -> Event<'static> {
    Event::new(
        action,
        "role_inheritance",
        audit::pair(role.role_id, parent.role_id),
    )
    .org(org_id)
    .details(json!({ "role": role.name, "parent_role": parent.name, "changed": changed }))
}

/// `user_role.*` with the member's row before/after (an empty diff: nothing changed).
fn assignment_event(
    action: &'static str,
    org_id: Uuid,
    role: &Role,
    before: &Membership,
    after: &Membership,
) -> Event<'static> {
    let mut details = audit::diff_of(before, after, &[]);
    details["role"] = json!(role.name);
    Event::new(
        action,
        "user_role",
        audit::pair(after.user_id, role.role_id),
    )
    .org(org_id)
    .details(details)
}

/// Makes `role_id` include `parent_role_id`. A self-parent or an edge closing a cycle is
/// `InheritanceCycle`; roles of different orgs `CrossOrg`. Adding an existing edge is a no-op.
pub async fn add_inheritance(
    id: &Identity,
    org_id: Uuid,
    role_id: Uuid,
    parent_role_id: Uuid,
) -> Result<(), IdentityError> {
    let (mut tx, _) = begin_org(id, org_id).await?;
    let role = role_in(&mut tx, org_id, role_id).await?;
    let parent = role_in(&mut tx, org_id, parent_role_id).await?;
    // The org lock taken above keeps a concurrent edge from slipping past this check.
    let graph = load_graph(&mut tx, org_id).await?;
    if graph.would_cycle(role_id, parent_role_id) {
        return Err(IdentityError::InheritanceCycle);
    }
    let changed = store::roles::add_edge(&mut tx, role_id, parent_role_id).await?;
    if changed {
        sync_org(&mut tx, org_id).await?;
    }
    let event = inheritance_event("role_inheritance.added", org_id, &role, &parent, changed);
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn remove_inheritance(
    id: &Identity,
    org_id: Uuid,
    role_id: Uuid,
    parent_role_id: Uuid,
) -> Result<(), IdentityError> {
    let (mut tx, _) = begin_org(id, org_id).await?;
    let role = role_in(&mut tx, org_id, role_id).await?;
    let parent = role_in(&mut tx, org_id, parent_role_id).await?;
    if !store::roles::remove_edge(&mut tx, role_id, parent_role_id).await? {
        return Err(IdentityError::NotFound {
            what: "inheritance",
        });
    }
    sync_org(&mut tx, org_id).await?;
    let event = inheritance_event("role_inheritance.removed", org_id, &role, &parent, true);
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(())
}

/// Brings a member's roles from an external source (SCIM group → role rules) in line,
/// inside the caller's transaction: of the `managed` roles, the member ends up holding
/// exactly `desired`. In a `multi_role` org they are additional roles (the primary role is
/// never taken away); in a `single_role` org the first desired role (by name) becomes the
/// primary role, and a managed primary role no longer desired falls back to `member`.
/// Returns the membership before and after when anything changed. Writes no audit row (the
/// caller's mutation does).
pub(crate) async fn sync_managed_roles(
    tx: &mut Tx,
    org: &Org,
    user_id: Uuid,
    managed: &[Uuid],
    desired: &[Uuid],
    now: DateTime<Utc>,
) -> Result<Option<(Membership, Membership)>, IdentityError> {
    let Some(before) = store::memberships::get(tx, user_id, org.org_id).await? else {
        return Ok(None);
    };
    let held = store::roles::member_role_ids(tx, org.org_id, user_id).await?;
    let m = if org.org_role_structure == RoleStructure::SingleRole.as_str() {
        let mut wanted: Vec<Role> = Vec::new();
        for r in desired {
            if let Some(role) = store::roles::get_role(tx, *r).await? {
                wanted.push(role);
            }
        }
        wanted.sort_by(|a, b| a.name.cmp(&b.name));
        let current = store::roles::find_role_by_name(tx, org.org_id, &before.user_role).await?;
        let current_managed = current
            .as_ref()
            .is_some_and(|c| managed.contains(&c.role_id));
        let target = match (wanted.first(), current_managed) {
            (Some(w), _) => Some(w.clone()),
            (None, true) => {
                Some(role_named(tx, org.org_id, super::users::DEFAULT_MEMBER_ROLE).await?)
            }
            (None, false) => None,
        };
        match target {
            Some(t) if t.name != before.user_role => {
                replace_primary(tx, org, &before, &t, now).await?
            }
            _ => return Ok(None),
        }
    } else {
        let mut changed = false;
        for r in managed {
            let want = desired.contains(r);
            let has = held.contains(r);
            if want && !has {
                changed |= store::roles::assign(tx, user_id, *r, now).await?;
            } else if !want && has {
                let is_primary = store::roles::get_role(tx, *r)
                    .await?
                    .is_some_and(|role| role.name == before.user_role);
                if !is_primary {
                    changed |= store::roles::unassign(tx, user_id, *r).await?;
                }
            }
        }
        if !changed {
            return Ok(None);
        }
        sync_member(tx, org.org_id, user_id).await?
    };
    Ok(Some((before, m)))
}

/// Gives a member a role. In a `single_role` org it replaces the primary role; in a
/// `multi_role` org it is added (assigning a held role is a no-op).
pub async fn assign_role(
    id: &Identity,
    org_id: Uuid,
    user_id: Uuid,
    role_id: Uuid,
) -> Result<Membership, IdentityError> {
    let (mut tx, org) = begin_org(id, org_id).await?;
    let role = role_in(&mut tx, org_id, role_id).await?;
    let before = membership_in(&mut tx, org_id, user_id).await?;
    let now = id.clock.now();
    let m = if org.org_role_structure == RoleStructure::SingleRole.as_str() {
        replace_primary(&mut tx, &org, &before, &role, now).await?
    } else {
        store::roles::assign(&mut tx, user_id, role_id, now).await?;
        sync_member(&mut tx, org_id, user_id).await?
    };
    let event = assignment_event("user_role.assigned", org_id, &role, &before, &m);
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(m)
}

/// Takes a direct role away. The primary role cannot be unassigned (`Invalid`): set
/// another primary role instead.
pub async fn unassign_role(
    id: &Identity,
    org_id: Uuid,
    user_id: Uuid,
    role_id: Uuid,
) -> Result<Membership, IdentityError> {
    let (mut tx, _) = begin_org(id, org_id).await?;
    let role = role_in(&mut tx, org_id, role_id).await?;
    let before = membership_in(&mut tx, org_id, user_id).await?;
    if before.user_role == role.name {
        return Err(IdentityError::invalid(
            "role_id",
            "is the member's primary role; set another primary role instead",
        ));
    }
    if !store::roles::unassign(&mut tx, user_id, role_id).await? {
        return Err(IdentityError::NotFound {
            what: "role assignment",
        });
    }
    let m = sync_member(&mut tx, org_id, user_id).await?;
    let event = assignment_event("user_role.unassigned", org_id, &role, &before, &m);
    audit::record(&mut tx, id, event).await?;
    tx.commit().await?;
    Ok(m)
}

/// The member's effective roles and permissions (names, sorted), resolved through
/// inheritance from the tables themselves.
pub async fn effective_for_member(
    id: &Identity,
    org_id: Uuid,
    user_id: Uuid,
) -> Result<(Vec<String>, Vec<String>), IdentityError> {
    // One transaction: a consistent read of the graph on SQLite; harmless on PostgreSQL.
    let mut tx = id.db.begin().await?;
    membership_in(&mut tx, org_id, user_id).await?;
    let graph = load_graph(&mut tx, org_id).await?;
    let direct = store::roles::member_role_ids(&mut tx, org_id, user_id).await?;
    Ok(effective(&graph, &direct))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<Uuid> {
        (0..n).map(|_| Uuid::new_v4()).collect()
    }

    fn graph(ids: &[Uuid], edges: &[(usize, usize)], grants: &[(usize, &str)]) -> RoleGraph {
        RoleGraph::from_parts(
            ids.iter().enumerate().map(|(i, id)| (*id, format!("r{i}"))),
            edges.iter().map(|(a, b)| (ids[*a], ids[*b])),
            grants.iter().map(|(r, p)| (ids[*r], p.to_string())),
        )
    }

    #[test]
    fn effective_follows_a_chain_and_merges_permissions() {
        let r = ids(4);
        // r0 includes r1 includes r2; r3 stands alone.
        let g = graph(
            &r,
            &[(0, 1), (1, 2)],
            &[(0, "a"), (1, "b"), (2, "c"), (2, "a"), (3, "d")],
        );
        assert_eq!(
            effective(&g, &[r[0]]),
            (
                vec!["r0".into(), "r1".into(), "r2".into()],
                vec!["a".into(), "b".into(), "c".into()]
            )
        );
        assert_eq!(
            effective(&g, &[r[1]]),
            (
                vec!["r1".into(), "r2".into()],
                vec!["a".into(), "b".into(), "c".into()]
            )
        );
        assert_eq!(
            effective(&g, &[r[2], r[3]]),
            (
                vec!["r2".into(), "r3".into()],
                vec!["a".into(), "c".into(), "d".into()]
            )
        );
        assert_eq!(effective(&g, &[]), (vec![], vec![]));
        // Unknown roles contribute nothing.
        assert_eq!(effective(&g, &[Uuid::new_v4()]), (vec![], vec![]));
    }

    #[test]
    fn effective_handles_diamonds_and_does_not_loop_on_bad_data() {
        let r = ids(4);
        // Diamond: r0 → r1, r0 → r2, r1 → r3, r2 → r3.
        let g = graph(&r, &[(0, 1), (0, 2), (1, 3), (2, 3)], &[(3, "x")]);
        let (roles, perms) = effective(&g, &[r[0]]);
        assert_eq!(roles, vec!["r0", "r1", "r2", "r3"]);
        assert_eq!(perms, vec!["x"]);
        // A cycle can never be stored, but the computation still terminates.
        let cyclic = graph(&r[..2], &[(0, 1), (1, 0)], &[(1, "y")]);
        assert_eq!(
            effective(&cyclic, &[r[0]]),
            (vec!["r0".into(), "r1".into()], vec!["y".into()])
        );
    }

    #[test]
    fn cycles_are_detected_before_they_exist() {
        let r = ids(4);
        let g = graph(&r, &[(0, 1), (1, 2)], &[]);
        assert!(g.would_cycle(r[0], r[0]), "self-parent");
        assert!(g.would_cycle(r[2], r[0]), "closes r0→r1→r2→r0");
        assert!(g.would_cycle(r[1], r[0]), "closes r0→r1→r0");
        assert!(!g.would_cycle(r[0], r[2]), "a shortcut is not a cycle");
        assert!(!g.would_cycle(r[3], r[0]));
        assert!(!g.would_cycle(r[2], r[3]));
        assert!(g.includes(r[0], r[2]));
        assert!(!g.includes(r[2], r[0]));
    }

    #[test]
    fn edges_to_unknown_roles_are_ignored() {
        let r = ids(2);
        let g = RoleGraph::from_parts(
            [(r[0], "a".to_string())],
            [(r[0], r[1]), (r[1], r[0])],
            [(r[1], "p".to_string())],
        );
        assert_eq!(effective(&g, &[r[0], r[1]]), (vec!["a".into()], vec![]));
    }

    #[test]
    fn derive_fills_the_membership_columns() {
        let r = ids(3);
        let g = graph(&r, &[(0, 1)], &[(1, "read"), (2, "write")]);
        let org = Org {
            org_id: Uuid::new_v4(),
            org_name: "O".into(),
            url_safe_org_name: "o".into(),
            org_metadata: crate::store::Json(serde_json::json!({})),
            created_at: Utc::now(),
            org_role_structure: "multi_role".into(),
            mfa_required: false,
        };
        let m = Membership {
            user_id: Uuid::new_v4(),
            org_id: org.org_id,
            user_role: "r0".into(),
            url_safe_org_name: "o".into(),
            org_role_structure: "single_role".into(),
            inherited_user_roles_plus_current_role: TextList::default(),
            user_permissions: TextList::default(),
            additional_roles: TextList(vec!["stale".into()]),
        };
        let d = derive(&g, &org, &m, &[r[2], r[0]]);
        assert_eq!(d.org_role_structure, "multi_role");
        assert_eq!(d.user_role, "r0");
        assert_eq!(
            d.inherited_user_roles_plus_current_role.0,
            ["r0", "r1", "r2"]
        );
        assert_eq!(d.user_permissions.0, ["read", "write"]);
        assert_eq!(d.additional_roles.0, ["r2"]);
    }

    #[test]
    fn names_and_structures() {
        assert_eq!(
            check_name("name", "  billing admin ").unwrap(),
            "billing admin"
        );
        assert!(check_name("name", "   ").is_err());
        assert!(check_name("name", &"x".repeat(65)).is_err());
        assert!(check_name("name", "a\nb").is_err());
        assert_eq!(
            RoleStructure::parse("multi_role").unwrap(),
            RoleStructure::MultiRole
        );
        assert!(RoleStructure::parse("Multi_Role").is_err());
        assert_eq!(RoleStructure::SingleRole.as_str(), "single_role");
    }
}
