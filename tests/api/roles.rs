//! Orgs, memberships, roles and permissions over the real store (both backends), and a
//! property test: after random sequences of changes, every membership's derived columns
//! equal a from-scratch computation over the raw tables written here, independently.
use crate::helpers::{Backend, TestDb, identity_with_clock};
use crate::on_both_databases;
use chrono::{TimeZone, Utc};
use lintel::clock::FixedClock;
use lintel::identity::orgs::{self, LoginMethod};
use lintel::identity::roles::{self, RoleStructure};
use lintel::identity::users::{self, NewUser};
use lintel::identity::{Identity, IdentityError, memberships};
use lintel::store::memberships::Membership;
use lintel::store::roles::{Permission, Role};
use lintel::store::{self, Db, TextList};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

on_both_databases!(
    new_orgs_get_default_roles_and_the_creator_is_owner,
    can_create_orgs_is_enforced,
    cycles_and_self_parents_are_rejected_with_nothing_written,
    concurrent_opposite_edges_cannot_form_a_cycle,
    cross_org_ids_are_rejected_with_nothing_written,
    single_role_orgs_replace_the_primary_role,
    multi_role_orgs_keep_additional_roles,
    permissions_flow_through_a_three_level_chain,
    deleting_or_renaming_a_role_recomputes_members,
    memberships_add_remove_and_list,
    login_methods_are_allowed_or_refused,
    domains_are_unique_and_drive_discovery,
);

// ---------------------------------------------------------------------------------------
// Helpers

async fn identity(db: &TestDb) -> Identity {
    let clock = FixedClock::new(Utc.timestamp_opt(1_790_000_000, 0).unwrap());
    identity_with_clock(db, clock).await
}

async fn done(id: Identity, db: TestDb) {
    id.db.close().await;
    db.drop_database().await;
}

async fn user(id: &Identity, email: &str, can_create_orgs: bool) -> Uuid {
    let (mut u, _) = users::create(
        id,
        NewUser {
            email: email.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    if can_create_orgs {
        u.can_create_orgs = true;
        let mut c = id.db.conn().await.unwrap();
        assert!(store::users::update(&mut c, &u).await.unwrap());
    }
    u.user_id
}

async fn role(id: &Identity, org_id: Uuid, name: &str) -> Role {
    let mut c = id.db.conn().await.unwrap();
    store::roles::find_role_by_name(&mut c, org_id, name)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("role {name}"))
}

async fn member(id: &Identity, org_id: Uuid, user_id: Uuid) -> Membership {
    memberships::get(id, org_id, user_id).await.unwrap()
}

fn list(items: &[&str]) -> TextList {
    items.iter().copied().collect()
}

/// The permissions beyond the management API's defaults every org's roles carry
/// (`access::perm`), so tests can state just the ones they granted.
fn custom(l: &TextList) -> TextList {
    let defaults: Vec<&str> = lintel::identity::access::perm::all().collect();
    l.0.iter()
        .filter(|p| !defaults.contains(&p.as_str()))
        .cloned()
        .collect()
}

/// Runs one statement on whichever pool the store holds (test-only raw reads).
macro_rules! fetch {
    ($db:expr, $ty:ty, $sql:expr $(, $bind:expr)* $(,)?) => {
        match $db {
            Db::Sqlite(p, _) => sqlx::query_as::<_, $ty>($sql)$(.bind($bind))*.fetch_all(p).await,
            Db::Postgres(p) => sqlx::query_as::<_, $ty>($sql)$(.bind($bind))*.fetch_all(p).await,
        }
        .expect("raw read")
    };
}

type MemberRow = (Uuid, String, String, TextList, TextList, TextList);

/// Everything of one org the role rules can touch, read straight from the tables.
#[derive(Debug, Clone, PartialEq)]
struct Snapshot {
    structure: String,
    roles: Vec<(Uuid, String)>,
    permissions: Vec<(Uuid, String)>,
    grants: Vec<(Uuid, Uuid)>,
    edges: Vec<(Uuid, Uuid)>,
    assignments: Vec<(Uuid, Uuid)>,
    members: Vec<MemberRow>,
}

async fn snapshot(db: &Db, org_id: Uuid) -> Snapshot {
    let structure: Vec<(String,)> = fetch!(
        db,
        (String,),
        "SELECT org_role_structure FROM organizations WHERE org_id = $1",
        org_id
    );
    Snapshot {
        structure: structure.into_iter().map(|(s,)| s).collect(),
        roles: fetch!(
            db,
            (Uuid, String),
            "SELECT role_id, name FROM roles WHERE org_id = $1 ORDER BY role_id",
            org_id
        ),
        permissions: fetch!(
            db,
            (Uuid, String),
            "SELECT permission_id, name FROM permissions
             WHERE org_id = $1 OR org_id IS NULL ORDER BY permission_id",
            org_id
        ),
        grants: fetch!(
            db,
            (Uuid, Uuid),
            "SELECT role_id, permission_id FROM role_permissions
             WHERE role_id IN (SELECT role_id FROM roles WHERE org_id = $1)
                OR permission_id IN (SELECT permission_id FROM permissions WHERE org_id = $1)
             ORDER BY role_id, permission_id",
            org_id
        ),
        edges: fetch!(
            db,
            (Uuid, Uuid),
            "SELECT role_id, parent_role_id FROM role_inheritance
             WHERE role_id IN (SELECT role_id FROM roles WHERE org_id = $1)
                OR parent_role_id IN (SELECT role_id FROM roles WHERE org_id = $1)
             ORDER BY role_id, parent_role_id",
            org_id
        ),
        assignments: fetch!(
            db,
            (Uuid, Uuid),
            "SELECT user_id, role_id FROM user_roles
             WHERE role_id IN (SELECT role_id FROM roles WHERE org_id = $1)
             ORDER BY user_id, role_id",
            org_id
        ),
        members: fetch!(
            db,
            MemberRow,
            "SELECT user_id, user_role, org_role_structure, inherited_user_roles_plus_current_role,
                    user_permissions, additional_roles
             FROM user_organization_info WHERE org_id = $1 ORDER BY user_id",
            org_id
        ),
    }
}

/// The derived columns recomputed from scratch: a fixpoint over the raw edges (not the
/// library's graph walk), then names collected and sorted. Also checks the invariants the
/// tables must keep, returning the first broken one.
fn check_derived(s: &Snapshot) -> Result<(), String> {
    let name: BTreeMap<Uuid, &str> = s.roles.iter().map(|(id, n)| (*id, n.as_str())).collect();
    let perm_name: BTreeMap<Uuid, &str> = s
        .permissions
        .iter()
        .map(|(id, n)| (*id, n.as_str()))
        .collect();
    for (r, p) in &s.edges {
        if !name.contains_key(r) || !name.contains_key(p) {
            return Err(format!("edge {r} → {p} leaves the org"));
        }
    }
    for (r, p) in &s.grants {
        if !name.contains_key(r) || !perm_name.contains_key(p) {
            return Err(format!("grant {r} → {p} leaves the org"));
        }
    }
    let closure = |start: BTreeSet<Uuid>| {
        let mut set = start;
        loop {
            let more: BTreeSet<Uuid> = s
                .edges
                .iter()
                .filter(|(r, p)| set.contains(r) && !set.contains(p))
                .map(|(_, p)| *p)
                .collect();
            if more.is_empty() {
                return set;
            }
            set.extend(more);
        }
    };
    // Acyclic: no role reaches itself through at least one edge.
    for r in name.keys() {
        let parents: BTreeSet<Uuid> = s
            .edges
            .iter()
            .filter(|(c, _)| c == r)
            .map(|(_, p)| *p)
            .collect();
        if closure(parents).contains(r) {
            return Err(format!("cycle through {}", name[r]));
        }
    }
    let members: BTreeSet<Uuid> = s.members.iter().map(|m| m.0).collect();
    for (u, _) in &s.assignments {
        if !members.contains(u) {
            return Err(format!("user {u} holds a role without being a member"));
        }
    }
    for (user, user_role, structure, inherited, perms, additional) in &s.members {
        if structure != &s.structure {
            return Err(format!(
                "{user}: structure {structure} ≠ org's {}",
                s.structure
            ));
        }
        let direct: BTreeSet<Uuid> = s
            .assignments
            .iter()
            .filter(|(u, _)| u == user)
            .map(|(_, r)| *r)
            .collect();
        let direct_names: BTreeSet<&str> = direct.iter().map(|r| name[r]).collect();
        if !direct_names.contains(user_role.as_str()) {
            return Err(format!("{user}: primary role {user_role} not assigned"));
        }
        if s.structure == "single_role" && direct.len() != 1 {
            return Err(format!(
                "{user}: {} direct roles in a single_role org",
                direct.len()
            ));
        }
        let all = closure(direct.clone());
        let want_roles: BTreeSet<String> = all.iter().map(|r| name[r].to_string()).collect();
        let want_perms: BTreeSet<String> = s
            .grants
            .iter()
            .filter(|(r, _)| all.contains(r))
            .map(|(_, p)| perm_name[p].to_string())
            .collect();
        let want_additional: BTreeSet<String> = direct_names
            .iter()
            .filter(|n| **n != user_role)
            .map(|n| n.to_string())
            .collect();
        let got = |l: &TextList| l.0.clone();
        let want = |s: BTreeSet<String>| s.into_iter().collect::<Vec<_>>();
        if got(inherited) != want(want_roles.clone()) {
            return Err(format!("{user}: roles {:?} ≠ {want_roles:?}", inherited.0));
        }
        if got(perms) != want(want_perms.clone()) {
            return Err(format!(
                "{user}: permissions {:?} ≠ {want_perms:?}",
                perms.0
            ));
        }
        if got(additional) != want(want_additional.clone()) {
            return Err(format!(
                "{user}: additional {:?} ≠ {want_additional:?}",
                additional.0
            ));
        }
    }
    Ok(())
}

async fn assert_consistent(id: &Identity, org_id: Uuid) -> Snapshot {
    let s = snapshot(&id.db, org_id).await;
    if let Err(e) = check_derived(&s) {
        panic!("{e}\n{s:#?}");
    }
    s
}

// ---------------------------------------------------------------------------------------
// Behaviour

async fn new_orgs_get_default_roles_and_the_creator_is_owner(db: TestDb) {
    let id = identity(&db).await;
    let ada = user(&id, "ada@example.com", true).await;
    let (org, m) = orgs::create_by_user(&id, ada, "Analytical Engines", None)
        .await
        .unwrap();
    assert_eq!(org.url_safe_org_name, "analytical-engines");
    assert_eq!(org.org_role_structure, "single_role");
    let names: Vec<String> = roles::list_roles(&id, org.org_id)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["admin", "member", "owner"]);
    assert_eq!(m.user_role, "owner");
    assert_eq!(m.url_safe_org_name, "analytical-engines");
    assert_eq!(
        m.inherited_user_roles_plus_current_role,
        list(&["admin", "member", "owner"])
    );
    assert_eq!(m.additional_roles, list(&[]));
    assert_eq!(member(&id, org.org_id, ada).await, m);
    let (roles_, perms) = roles::effective_for_member(&id, org.org_id, ada)
        .await
        .unwrap();
    assert_eq!(roles_, vec!["admin", "member", "owner"]);
    // The owner holds every management permission through inheritance.
    let mut all: Vec<String> = lintel::identity::access::perm::all()
        .map(String::from)
        .collect();
    all.sort();
    assert_eq!(perms, all);

    // The CLI / admin path gets the same roles; users::create joins as `member`.
    let plain = orgs::create(&id, "Plain", None).await.unwrap();
    assert_eq!(roles::list_roles(&id, plain.org_id).await.unwrap().len(), 3);
    let (bob, bm) = users::create(
        &id,
        NewUser {
            email: "bob@example.com".into(),
            org_id: Some(plain.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let bm = bm.unwrap();
    assert_eq!(bm.user_role, "member");
    assert_eq!(bm.inherited_user_roles_plus_current_role, list(&["member"]));
    assert_eq!(member(&id, plain.org_id, bob.user_id).await, bm);
    assert_eq!(orgs::get(&id, plain.org_id).await.unwrap(), plain);
    let all = orgs::list(&id, None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_consistent(&id, org.org_id).await;
    assert_consistent(&id, plain.org_id).await;
    done(id, db).await;
}

async fn can_create_orgs_is_enforced(db: TestDb) {
    let id = identity(&db).await;
    let no = user(&id, "no@example.com", false).await;
    let err = orgs::create_by_user(&id, no, "Nope Inc", None)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Forbidden { .. }), "{err:?}");

    // Disabled users may not either, even with the flag.
    let off = user(&id, "off@example.com", true).await;
    let mut c = id.db.conn().await.unwrap();
    let mut u = store::users::get(&mut c, off).await.unwrap().unwrap();
    u.enabled = false;
    store::users::update(&mut c, &u).await.unwrap();
    let err = orgs::create_by_user(&id, off, "Nope Inc", None)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Forbidden { .. }), "{err:?}");

    let err = orgs::create_by_user(&id, Uuid::now_v7(), "Nope Inc", None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "user" }),
        "{err:?}"
    );
    assert!(
        store::orgs::get_by_slug(&mut c, "nope-inc")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store::memberships::list_for_user(&mut c, no)
            .await
            .unwrap()
            .is_empty()
    );

    // A taken slug rolls back the whole creation (no second owner membership, no roles).
    let yes = user(&id, "yes@example.com", true).await;
    orgs::create_by_user(&id, yes, "Taken", None).await.unwrap();
    let err = orgs::create_by_user(&id, yes, "Taken", None)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Conflict { .. }), "{err:?}");
    assert_eq!(
        store::memberships::list_for_user(&mut c, yes)
            .await
            .unwrap()
            .len(),
        1
    );
    drop(c);
    done(id, db).await;
}

async fn cycles_and_self_parents_are_rejected_with_nothing_written(db: TestDb) {
    let id = identity(&db).await;
    let ada = user(&id, "ada@example.com", true).await;
    let (org, _) = orgs::create_by_user(&id, ada, "Acme", None).await.unwrap();
    let o = org.org_id;
    let (owner, admin, member) = (
        role(&id, o, "owner").await,
        role(&id, o, "admin").await,
        role(&id, o, "member").await,
    );
    let before = assert_consistent(&id, o).await;
    for (child, parent) in [
        (member.role_id, owner.role_id), // member → owner → admin → member
        (admin.role_id, owner.role_id),  // admin → owner → admin
        (member.role_id, member.role_id),
    ] {
        let err = roles::add_inheritance(&id, o, child, parent)
            .await
            .unwrap_err();
        assert!(matches!(err, IdentityError::InheritanceCycle), "{err:?}");
        assert_eq!(snapshot(&id.db, o).await, before);
    }
    // A shortcut along the existing direction is not a cycle, and adding it twice is fine.
    roles::add_inheritance(&id, o, owner.role_id, member.role_id)
        .await
        .unwrap();
    roles::add_inheritance(&id, o, owner.role_id, member.role_id)
        .await
        .unwrap();
    assert_consistent(&id, o).await;
    let err = roles::remove_inheritance(&id, o, member.role_id, owner.role_id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::NotFound {
                what: "inheritance"
            }
        ),
        "{err:?}"
    );
    done(id, db).await;
}

/// Two transactions adding a → b and b → a at once: the org lock serializes them, so one
/// wins and the other sees the edge and is refused.
async fn concurrent_opposite_edges_cannot_form_a_cycle(db: TestDb) {
    let id = identity(&db).await;
    let org = orgs::create(&id, "Race", None).await.unwrap();
    let o = org.org_id;
    for round in 0..6 {
        let a = roles::create_role(&id, o, &format!("a{round}"), None)
            .await
            .unwrap();
        let b = roles::create_role(&id, o, &format!("b{round}"), None)
            .await
            .unwrap();
        let (x, y) = (id.clone(), id.clone());
        let t1 =
            tokio::spawn(async move { roles::add_inheritance(&x, o, a.role_id, b.role_id).await });
        let t2 =
            tokio::spawn(async move { roles::add_inheritance(&y, o, b.role_id, a.role_id).await });
        let results = [t1.await.unwrap(), t2.await.unwrap()];
        let ok = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(ok, 1, "{results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(IdentityError::InheritanceCycle))),
            "{results:?}"
        );
    }
    assert_consistent(&id, o).await;
    done(id, db).await;
}

async fn cross_org_ids_are_rejected_with_nothing_written(db: TestDb) {
    let id = identity(&db).await;
    let ada = user(&id, "ada@example.com", true).await;
    let (a, _) = orgs::create_by_user(&id, ada, "Org A", None).await.unwrap();
    let (b, _) = orgs::create_by_user(&id, ada, "Org B", None).await.unwrap();
    let a_admin = role(&id, a.org_id, "admin").await;
    let b_member = role(&id, b.org_id, "member").await;
    let a_perm = roles::create_permission(&id, a.org_id, "a:read", None)
        .await
        .unwrap();
    let (sa, sb) = (
        assert_consistent(&id, a.org_id).await,
        assert_consistent(&id, b.org_id).await,
    );

    let cross =
        |e: &IdentityError, w: &str| matches!(e, IdentityError::CrossOrg { what } if *what == w);
    // A role of org A given in org B.
    let err = roles::assign_role(&id, b.org_id, ada, a_admin.role_id)
        .await
        .unwrap_err();
    assert!(cross(&err, "role"), "{err:?}");
    let err = roles::unassign_role(&id, b.org_id, ada, a_admin.role_id)
        .await
        .unwrap_err();
    assert!(cross(&err, "role"), "{err:?}");
    let err = roles::add_inheritance(&id, b.org_id, b_member.role_id, a_admin.role_id)
        .await
        .unwrap_err();
    assert!(cross(&err, "role"), "{err:?}");
    let err = roles::add_inheritance(&id, a.org_id, a_admin.role_id, b_member.role_id)
        .await
        .unwrap_err();
    assert!(cross(&err, "role"), "{err:?}");
    let err = roles::grant_permission(&id, b.org_id, b_member.role_id, a_perm.permission_id)
        .await
        .unwrap_err();
    assert!(cross(&err, "permission"), "{err:?}");
    let err = roles::delete_role(&id, b.org_id, a_admin.role_id)
        .await
        .unwrap_err();
    assert!(cross(&err, "role"), "{err:?}");
    let err = roles::delete_permission(&id, b.org_id, a_perm.permission_id)
        .await
        .unwrap_err();
    assert!(cross(&err, "permission"), "{err:?}");
    // Unknown ids are NotFound; a non-member is NotFound { membership }.
    let err = roles::assign_role(&id, b.org_id, ada, Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "role" }),
        "{err:?}"
    );
    let stranger = user(&id, "stranger@example.com", false).await;
    let err = roles::assign_role(&id, b.org_id, stranger, b_member.role_id)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "membership" }),
        "{err:?}"
    );
    let err = roles::assign_role(&id, Uuid::now_v7(), ada, b_member.role_id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::NotFound {
                what: "organization"
            }
        ),
        "{err:?}"
    );
    assert_eq!(snapshot(&id.db, a.org_id).await, sa);
    assert_eq!(snapshot(&id.db, b.org_id).await, sb);
    done(id, db).await;
}

async fn single_role_orgs_replace_the_primary_role(db: TestDb) {
    let id = identity(&db).await;
    let org = orgs::create(&id, "Solo", None).await.unwrap();
    let o = org.org_id;
    let u = user(&id, "u@example.com", false).await;
    memberships::add(&id, o, u, "Member").await.unwrap();
    let admin = role(&id, o, "admin").await;
    let member_role = role(&id, o, "member").await;

    let m = roles::assign_role(&id, o, u, admin.role_id).await.unwrap();
    assert_eq!(m.user_role, "admin");
    assert_eq!(
        m.inherited_user_roles_plus_current_role,
        list(&["admin", "member"])
    );
    assert_eq!(m.additional_roles, list(&[]));
    let s = assert_consistent(&id, o).await;
    assert_eq!(s.assignments, vec![(u, admin.role_id)], "old row removed");

    let m = memberships::set_primary_role(&id, o, u, "owner")
        .await
        .unwrap();
    assert_eq!(m.user_role, "owner");
    assert_eq!(
        m.inherited_user_roles_plus_current_role,
        list(&["admin", "member", "owner"])
    );
    assert_eq!(assert_consistent(&id, o).await.assignments.len(), 1);

    // The primary role cannot be unassigned; a role not held is NotFound.
    let owner = role(&id, o, "owner").await;
    let before = snapshot(&id.db, o).await;
    let err = roles::unassign_role(&id, o, u, owner.role_id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::Invalid {
                field: "role_id",
                ..
            }
        ),
        "{err:?}"
    );
    let err = roles::unassign_role(&id, o, u, member_role.role_id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::NotFound {
                what: "role assignment"
            }
        ),
        "{err:?}"
    );
    let err = memberships::set_primary_role(&id, o, u, "ghost")
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "role" }),
        "{err:?}"
    );
    assert_eq!(snapshot(&id.db, o).await, before);
    done(id, db).await;
}

async fn multi_role_orgs_keep_additional_roles(db: TestDb) {
    let id = identity(&db).await;
    let org = orgs::create(&id, "Multi", None).await.unwrap();
    let o = org.org_id;
    let u = user(&id, "u@example.com", false).await;
    memberships::add(&id, o, u, "member").await.unwrap();
    let org = orgs::set_role_structure(&id, o, RoleStructure::MultiRole)
        .await
        .unwrap();
    assert_eq!(org.org_role_structure, "multi_role");
    assert_eq!(member(&id, o, u).await.org_role_structure, "multi_role");

    let billing = roles::create_role(&id, o, "billing", Some("Pays the bills"))
        .await
        .unwrap();
    let auditor = roles::create_role(&id, o, "auditor", None).await.unwrap();
    let pay = roles::create_permission(&id, o, "invoices:pay", None)
        .await
        .unwrap();
    roles::grant_permission(&id, o, billing.role_id, pay.permission_id)
        .await
        .unwrap();
    roles::assign_role(&id, o, u, billing.role_id)
        .await
        .unwrap();
    let m = roles::assign_role(&id, o, u, auditor.role_id)
        .await
        .unwrap();
    assert_eq!(m.user_role, "member");
    assert_eq!(m.additional_roles, list(&["auditor", "billing"]));
    assert_eq!(
        m.inherited_user_roles_plus_current_role,
        list(&["auditor", "billing", "member"])
    );
    assert_eq!(custom(&m.user_permissions), list(&["invoices:pay"]));
    assert_consistent(&id, o).await;

    // An additional role promoted to primary leaves the old primary.
    let m = memberships::set_primary_role(&id, o, u, "billing")
        .await
        .unwrap();
    assert_eq!(m.user_role, "billing");
    assert_eq!(m.additional_roles, list(&["auditor"]));
    let m = roles::unassign_role(&id, o, u, auditor.role_id)
        .await
        .unwrap();
    assert_eq!(m.additional_roles, list(&[]));
    roles::assign_role(&id, o, u, auditor.role_id)
        .await
        .unwrap();

    // Back to single_role: additional roles are dropped, the primary stays.
    orgs::set_role_structure(&id, o, RoleStructure::SingleRole)
        .await
        .unwrap();
    let m = member(&id, o, u).await;
    assert_eq!(m.org_role_structure, "single_role");
    assert_eq!(m.user_role, "billing");
    assert_eq!(m.additional_roles, list(&[]));
    assert_eq!(m.inherited_user_roles_plus_current_role, list(&["billing"]));
    assert_eq!(assert_consistent(&id, o).await.assignments.len(), 1);
    done(id, db).await;
}

async fn permissions_flow_through_a_three_level_chain(db: TestDb) {
    let id = identity(&db).await;
    let ada = user(&id, "ada@example.com", true).await;
    let (org, _) = orgs::create_by_user(&id, ada, "Chain", None).await.unwrap();
    let o = org.org_id;
    let bob = user(&id, "bob@example.com", false).await;
    memberships::add(&id, o, bob, "member").await.unwrap();
    let member_role = role(&id, o, "member").await;
    let admin = role(&id, o, "admin").await;
    let read = roles::create_permission(&id, o, "docs:read", None)
        .await
        .unwrap();
    let write = roles::create_permission(&id, o, "docs:write", None)
        .await
        .unwrap();
    roles::grant_permission(&id, o, member_role.role_id, read.permission_id)
        .await
        .unwrap();
    roles::grant_permission(&id, o, admin.role_id, write.permission_id)
        .await
        .unwrap();
    // Owner (3 levels: owner → admin → member) gets both; member only its own.
    let owner_m = member(&id, o, ada).await;
    assert_eq!(
        custom(&owner_m.user_permissions),
        list(&["docs:read", "docs:write"])
    );
    assert_eq!(
        custom(&member(&id, o, bob).await.user_permissions),
        list(&["docs:read"])
    );
    assert_eq!(
        custom(&TextList(
            roles::effective_for_member(&id, o, ada).await.unwrap().1
        )),
        list(&["docs:read", "docs:write"])
    );
    // A global permission can be granted too.
    let global = Permission {
        permission_id: Uuid::now_v7(),
        org_id: None,
        name: "support:impersonate".into(),
        description: None,
        created_at: id.clock.now(),
    };
    let mut c = id.db.conn().await.unwrap();
    store::roles::insert_permission(&mut c, &global)
        .await
        .unwrap();
    drop(c);
    roles::grant_permission(&id, o, member_role.role_id, global.permission_id)
        .await
        .unwrap();
    assert_eq!(
        custom(&member(&id, o, bob).await.user_permissions),
        list(&["docs:read", "support:impersonate"])
    );
    let err = roles::delete_permission(&id, o, global.permission_id)
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::Forbidden { .. }), "{err:?}");

    // Revoking at the bottom reaches the top; cutting the chain too.
    roles::revoke_permission(&id, o, member_role.role_id, read.permission_id)
        .await
        .unwrap();
    assert_eq!(
        custom(&member(&id, o, ada).await.user_permissions),
        list(&["docs:write", "support:impersonate"])
    );
    let err = roles::revoke_permission(&id, o, member_role.role_id, read.permission_id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::NotFound {
                what: "permission grant"
            }
        ),
        "{err:?}"
    );
    roles::remove_inheritance(&id, o, admin.role_id, member_role.role_id)
        .await
        .unwrap();
    let m = member(&id, o, ada).await;
    assert_eq!(
        m.inherited_user_roles_plus_current_role,
        list(&["admin", "owner"])
    );
    assert_eq!(custom(&m.user_permissions), list(&["docs:write"]));
    roles::delete_permission(&id, o, write.permission_id)
        .await
        .unwrap();
    assert_eq!(
        custom(&member(&id, o, ada).await.user_permissions),
        list(&[])
    );
    assert_consistent(&id, o).await;
    done(id, db).await;
}

async fn deleting_or_renaming_a_role_recomputes_members(db: TestDb) {
    let id = identity(&db).await;
    let ada = user(&id, "ada@example.com", true).await;
    let (org, _) = orgs::create_by_user(&id, ada, "Del", None).await.unwrap();
    let o = org.org_id;
    let member_role = role(&id, o, "member").await;
    let admin = role(&id, o, "admin").await;
    let owner = role(&id, o, "owner").await;
    let p = roles::create_permission(&id, o, "p", None).await.unwrap();
    roles::grant_permission(&id, o, member_role.role_id, p.permission_id)
        .await
        .unwrap();
    assert_eq!(
        custom(&member(&id, o, ada).await.user_permissions),
        list(&["p"])
    );

    // Deleting a member's primary role is refused, nothing changes.
    let before = snapshot(&id.db, o).await;
    let err = roles::delete_role(&id, o, owner.role_id).await.unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::Invalid {
                field: "role_id",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(snapshot(&id.db, o).await, before);

    // Deleting the middle of the chain cuts owner off from member and its permission.
    roles::delete_role(&id, o, admin.role_id).await.unwrap();
    let m = member(&id, o, ada).await;
    assert_eq!(m.inherited_user_roles_plus_current_role, list(&["owner"]));
    assert_eq!(custom(&m.user_permissions), list(&[]));
    let err = roles::delete_role(&id, o, admin.role_id).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "role" }),
        "{err:?}"
    );

    // Renaming follows into user_role and the derived lists; a taken name is a conflict.
    let r = roles::rename_role(&id, o, owner.role_id, "Proprietor")
        .await
        .unwrap();
    assert_eq!(r.name, "Proprietor");
    let m = member(&id, o, ada).await;
    assert_eq!(m.user_role, "Proprietor");
    assert_eq!(
        m.inherited_user_roles_plus_current_role,
        list(&["Proprietor"])
    );
    let err = roles::rename_role(&id, o, owner.role_id, "MEMBER")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "role_name"),
        "{err:?}"
    );
    let err = roles::create_role(&id, o, "member", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "role_name"),
        "{err:?}"
    );
    let err = roles::create_permission(&id, o, "P", None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "permission_name"),
        "{err:?}"
    );
    let err = roles::create_role(&id, o, "  ", None).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::Invalid { field: "name", .. }),
        "{err:?}"
    );
    assert_consistent(&id, o).await;
    done(id, db).await;
}

async fn memberships_add_remove_and_list(db: TestDb) {
    let id = identity(&db).await;
    let org = orgs::create(&id, "Club", None).await.unwrap();
    let o = org.org_id;
    let u = user(&id, "u@example.com", false).await;
    let m = memberships::add(&id, o, u, "admin").await.unwrap();
    assert_eq!(m.user_role, "admin");
    let err = memberships::add(&id, o, u, "member").await.unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "membership"),
        "{err:?}"
    );
    let err = memberships::add(&id, o, Uuid::now_v7(), "member")
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "user" }),
        "{err:?}"
    );
    let v = user(&id, "v@example.com", false).await;
    let err = memberships::add(&id, o, v, "janitor").await.unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "role" }),
        "{err:?}"
    );
    assert_eq!(
        memberships::list_for_org(&id, o, None, 10).await.unwrap(),
        vec![m.clone()]
    );
    assert_eq!(memberships::list_for_user(&id, u).await.unwrap(), vec![m]);
    memberships::remove(&id, o, u).await.unwrap();
    let s = assert_consistent(&id, o).await;
    assert!(s.members.is_empty() && s.assignments.is_empty(), "{s:?}");
    let err = memberships::remove(&id, o, u).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "membership" }),
        "{err:?}"
    );
    let err = memberships::get(&id, o, u).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "membership" }),
        "{err:?}"
    );
    // Re-adding starts clean.
    let m = memberships::add(&id, o, u, "member").await.unwrap();
    assert_eq!(m.inherited_user_roles_plus_current_role, list(&["member"]));
    done(id, db).await;
}

async fn login_methods_are_allowed_or_refused(db: TestDb) {
    let id = identity(&db).await;
    let org = orgs::create(&id, "Gate", None).await.unwrap();
    let o = org.org_id;
    // Defaults: password only.
    assert!(
        orgs::login_method_allowed(&id, o, "password")
            .await
            .unwrap()
    );
    for m in ["magic_link", "saml", "oidc", "passkey"] {
        assert!(!orgs::login_method_allowed(&id, o, m).await.unwrap(), "{m}");
    }
    orgs::set_login_method(&id, o, "saml", true).await.unwrap();
    orgs::set_login_method(&id, o, LoginMethod::Password, false)
        .await
        .unwrap();
    assert!(
        orgs::login_method_allowed(&id, o, LoginMethod::Saml)
            .await
            .unwrap()
    );
    assert!(
        !orgs::login_method_allowed(&id, o, "password")
            .await
            .unwrap()
    );
    let err = orgs::require_login_method(&id, o, LoginMethod::Password)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::LoginMethodNotAllowed { method } if method == "password"),
        "{err:?}"
    );
    orgs::require_login_method(&id, o, LoginMethod::Saml)
        .await
        .unwrap();
    let all = orgs::login_methods(&id, o).await.unwrap();
    assert_eq!(
        all,
        vec![
            (LoginMethod::Password, false),
            (LoginMethod::MagicLink, false),
            (LoginMethod::Saml, true),
            (LoginMethod::Oidc, false),
            (LoginMethod::Passkey, false),
        ]
    );
    // Other orgs keep the defaults; bad input is refused.
    let other = orgs::create(&id, "Other", None).await.unwrap();
    assert!(
        orgs::login_method_allowed(&id, other.org_id, "password")
            .await
            .unwrap()
    );
    for bad in ["kerberos", "SAML", ""] {
        let err = orgs::set_login_method(&id, o, bad, true).await.unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::Invalid {
                    field: "method",
                    ..
                }
            ),
            "{err:?}"
        );
    }
    let err = orgs::set_login_method(&id, Uuid::now_v7(), "saml", true)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::NotFound {
                what: "organization"
            }
        ),
        "{err:?}"
    );
    let err = orgs::login_method_allowed(&id, Uuid::now_v7(), "password")
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::NotFound { .. }), "{err:?}");
    done(id, db).await;
}

async fn domains_are_unique_and_drive_discovery(db: TestDb) {
    let id = identity(&db).await;
    let acme = orgs::create(&id, "Acme", None).await.unwrap();
    let evil = orgs::create(&id, "Evil", None).await.unwrap();
    let d = orgs::add_domain(&id, acme.org_id, " Acme.COM. ")
        .await
        .unwrap();
    assert_eq!(d.domain, "acme.com");
    assert!(!d.verified);
    // Another org may claim it too (unverified claims prove nothing and route nothing)...
    let squat = orgs::add_domain(&id, evil.org_id, "ACME.com")
        .await
        .unwrap();
    assert!(!squat.verified);
    // ...but one org cannot claim it twice.
    let err = orgs::add_domain(&id, acme.org_id, "acme.com")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "domain"),
        "{err:?}"
    );
    for bad in ["localhost", "10.0.0.1", "acme..com", "bücher.de", "a_b.com"] {
        let err = orgs::add_domain(&id, acme.org_id, bad).await.unwrap_err();
        assert!(
            matches!(
                err,
                IdentityError::Invalid {
                    field: "domain",
                    ..
                }
            ),
            "{bad}: {err:?}"
        );
    }
    let err = orgs::add_domain(&id, Uuid::now_v7(), "ghost.example")
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::NotFound {
                what: "organization"
            }
        ),
        "{err:?}"
    );

    // Unverified: no discovery for anyone.
    assert!(
        orgs::org_for_email_domain(&id, "Wile.E@ACME.com")
            .await
            .unwrap()
            .is_none()
    );
    orgs::set_domain_verified(&id, acme.org_id, "acme.com", true)
        .await
        .unwrap();
    let found = orgs::org_for_email_domain(&id, "Wile.E@ACME.com")
        .await
        .unwrap();
    assert_eq!(found.map(|o| o.org_id), Some(acme.org_id));
    // Only one org can hold it verified.
    let err = orgs::set_domain_verified(&id, evil.org_id, "acme.com", true)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "domain"),
        "{err:?}"
    );
    assert!(
        orgs::org_for_email_domain(&id, "x@eng.acme.com")
            .await
            .unwrap()
            .is_none(),
        "exact match only"
    );
    assert!(
        orgs::org_for_email_domain(&id, "x@example.org")
            .await
            .unwrap()
            .is_none()
    );
    let err = orgs::org_for_email_domain(&id, "not-an-email")
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::Invalid { field: "email", .. }),
        "{err:?}"
    );

    orgs::set_domain_verified(&id, acme.org_id, "acme.com", true)
        .await
        .unwrap();
    assert!(orgs::list_domains(&id, acme.org_id).await.unwrap()[0].verified);
    // An org removes only its own claim: evil's goes, acme keeps discovery.
    orgs::remove_domain(&id, evil.org_id, "acme.com")
        .await
        .unwrap();
    let err = orgs::remove_domain(&id, evil.org_id, "acme.com")
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "domain" }),
        "{err:?}"
    );
    let found = orgs::org_for_email_domain(&id, "wile@acme.com")
        .await
        .unwrap();
    assert_eq!(found.map(|o| o.org_id), Some(acme.org_id));
    orgs::add_domain(&id, evil.org_id, "acme.com")
        .await
        .unwrap();
    orgs::remove_domain(&id, acme.org_id, "ACME.com")
        .await
        .unwrap();
    assert!(
        orgs::org_for_email_domain(&id, "wile@acme.com")
            .await
            .unwrap()
            .is_none()
    );
    // Once acme let go, evil can have its claim verified.
    orgs::set_domain_verified(&id, evil.org_id, "acme.com", true)
        .await
        .unwrap();
    let found = orgs::org_for_email_domain(&id, "wile@acme.com")
        .await
        .unwrap();
    assert_eq!(found.map(|o| o.org_id), Some(evil.org_id));
    done(id, db).await;
}

// ---------------------------------------------------------------------------------------
// Property: derived columns always equal a from-scratch computation

const ROLE_SLOTS: usize = 6;
const PERM_SLOTS: usize = 5; // 0..4 the org's own; 4 a global permission
const USERS: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    CreateRole(usize),
    RenameRole(usize, usize),
    DeleteRole(usize),
    CreatePermission(usize),
    DeletePermission(usize),
    Grant(usize, usize),
    /// `(k, role, permission)`: for k < 6 the k-th existing grant, else by slots.
    Revoke(usize, usize, usize),
    AddEdge(usize, usize),
    /// `(k, role, parent)`: for k < 6 the k-th existing edge, else by slots.
    RemoveEdge(usize, usize, usize),
    Assign(usize, usize),
    /// `(k, user, role)`: for k < 6 the k-th existing assignment, else by slots.
    Unassign(usize, usize, usize),
    SetPrimary(usize, usize),
    SetStructure(bool),
    AddMember(usize, usize),
    RemoveMember(usize),
    AssignForeignRole(usize),
    EdgeToForeignRole(usize),
    GrantForeignPermission(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let r = 0..ROLE_SLOTS;
    let p = 0..PERM_SLOTS;
    let u = 0..USERS;
    prop_oneof![
        2 => r.clone().prop_map(Op::CreateRole),
        1 => (r.clone(), 0..8usize).prop_map(|(a, b)| Op::RenameRole(a, b)),
        1 => r.clone().prop_map(Op::DeleteRole),
        2 => (0..PERM_SLOTS - 1).prop_map(Op::CreatePermission),
        1 => p.clone().prop_map(Op::DeletePermission),
        3 => (r.clone(), p.clone()).prop_map(|(a, b)| Op::Grant(a, b)),
        2 => (0..8usize, r.clone(), p.clone()).prop_map(|(k, a, b)| Op::Revoke(k, a, b)),
        3 => (r.clone(), r.clone()).prop_map(|(a, b)| Op::AddEdge(a, b)),
        2 => (0..8usize, r.clone(), r.clone()).prop_map(|(k, a, b)| Op::RemoveEdge(k, a, b)),
        3 => (u.clone(), r.clone()).prop_map(|(a, b)| Op::Assign(a, b)),
        2 => (0..8usize, u.clone(), r.clone()).prop_map(|(k, a, b)| Op::Unassign(k, a, b)),
        2 => (u.clone(), r.clone()).prop_map(|(a, b)| Op::SetPrimary(a, b)),
        3 => any::<bool>().prop_map(Op::SetStructure),
        2 => (u.clone(), r.clone()).prop_map(|(a, b)| Op::AddMember(a, b)),
        1 => u.clone().prop_map(Op::RemoveMember),
        1 => u.prop_map(Op::AssignForeignRole),
        1 => r.clone().prop_map(Op::EdgeToForeignRole),
        1 => r.prop_map(Op::GrantForeignPermission),
    ]
}

/// The ids the ops refer to by slot; an empty slot stands for an id that does not exist.
struct World {
    org: Uuid,
    foreign: Uuid,
    roles: [Option<Uuid>; ROLE_SLOTS],
    permissions: [Option<Uuid>; PERM_SLOTS],
    users: [Uuid; USERS],
    foreign_role: Uuid,
    foreign_permission: Uuid,
}

impl World {
    fn role(&self, i: usize) -> Uuid {
        self.roles[i].unwrap_or_else(Uuid::now_v7)
    }
    fn permission(&self, i: usize) -> Uuid {
        self.permissions[i].unwrap_or_else(Uuid::now_v7)
    }
}

async fn world(id: &Identity) -> World {
    let tag = Uuid::new_v4().simple().to_string();
    let mut users = [Uuid::nil(); USERS];
    for (i, u) in users.iter_mut().enumerate() {
        *u = user(id, &format!("u{i}-{tag}@example.com"), i == 0).await;
    }
    let (org, _) = orgs::create_by_user(id, users[0], &format!("p-{tag}"), None)
        .await
        .unwrap();
    memberships::add(id, org.org_id, users[1], "member")
        .await
        .unwrap();
    let foreign = orgs::create(id, &format!("f-{tag}"), None).await.unwrap();
    let foreign_permission = roles::create_permission(id, foreign.org_id, "fp", None)
        .await
        .unwrap();
    let global = Permission {
        permission_id: Uuid::now_v7(),
        org_id: None,
        name: format!("global-{tag}"),
        description: None,
        created_at: id.clock.now(),
    };
    let mut c = id.db.conn().await.unwrap();
    store::roles::insert_permission(&mut c, &global)
        .await
        .unwrap();
    drop(c);
    let mut roles = [None; ROLE_SLOTS];
    for (i, name) in ["owner", "admin", "member"].into_iter().enumerate() {
        roles[i] = Some(role(id, org.org_id, name).await.role_id);
    }
    // Slots 3 (role) and 0, 1 (permissions) start filled; the rest start empty.
    roles[3] = Some(
        roles::create_role(id, org.org_id, "r3", None)
            .await
            .unwrap()
            .role_id,
    );
    let mut permissions = [None; PERM_SLOTS];
    for (i, p) in permissions.iter_mut().enumerate().take(2) {
        *p = Some(
            roles::create_permission(id, org.org_id, &format!("p{i}"), None)
                .await
                .unwrap()
                .permission_id,
        );
    }
    permissions[PERM_SLOTS - 1] = Some(global.permission_id);
    World {
        org: org.org_id,
        foreign: foreign.org_id,
        roles,
        permissions,
        users,
        foreign_role: role(id, foreign.org_id, "member").await.role_id,
        foreign_permission: foreign_permission.permission_id,
    }
}

/// Applies one op; returns its result and, for ops whose failure is certain, the error it
/// must fail with.
async fn apply(
    id: &Identity,
    w: &mut World,
    s: &Snapshot,
    op: &Op,
) -> (Result<(), IdentityError>, Option<&'static str>) {
    let o = w.org;
    let name_of = |r: Option<Uuid>| async move {
        let Some(r) = r else {
            return "no-such-role".to_string();
        };
        let mut c = id.db.conn().await.unwrap();
        store::roles::get_role(&mut c, r)
            .await
            .unwrap()
            .unwrap()
            .name
    };
    let cycle = |a: usize, b: usize, w: &World| a == b && w.roles[a].is_some();
    let expect_cross = |i: usize, w: &World| w.roles[i].is_some().then_some("CrossOrg");
    match *op {
        Op::CreateRole(i) => match w.roles[i] {
            Some(r) => {
                // The slot is taken: its name again (in other case) must conflict.
                let name = name_of(Some(r)).await;
                let res = roles::create_role(id, o, &name.to_uppercase(), None).await;
                (res.map(drop), Some("Conflict"))
            }
            None => {
                let res = roles::create_role(id, o, &format!("r{i}"), None).await;
                if let Ok(r) = &res {
                    w.roles[i] = Some(r.role_id);
                }
                (res.map(drop), None)
            }
        },
        Op::RenameRole(i, n) => (
            roles::rename_role(id, o, w.role(i), &format!("n{n}"))
                .await
                .map(drop),
            None,
        ),
        Op::DeleteRole(i) => {
            let res = roles::delete_role(id, o, w.role(i)).await;
            if res.is_ok() {
                w.roles[i] = None;
            }
            (res, None)
        }
        Op::CreatePermission(i) => {
            let res = roles::create_permission(id, o, &format!("p{i}"), None).await;
            let expect = w.permissions[i].is_some().then_some("Conflict");
            if let Ok(p) = &res {
                w.permissions[i] = Some(p.permission_id);
            }
            (res.map(drop), expect)
        }
        Op::DeletePermission(i) => {
            let res = roles::delete_permission(id, o, w.permission(i)).await;
            let expect = if i == PERM_SLOTS - 1 {
                Some("Forbidden")
            } else if w.permissions[i].is_none() {
                Some("NotFound")
            } else {
                None
            };
            if res.is_ok() {
                w.permissions[i] = None;
            }
            (res, expect)
        }
        Op::Grant(r, p) => (
            roles::grant_permission(id, o, w.role(r), w.permission(p)).await,
            None,
        ),
        Op::Revoke(k, r, p) => {
            let (r, p) = pick(&s.grants, k).unwrap_or_else(|| (w.role(r), w.permission(p)));
            (roles::revoke_permission(id, o, r, p).await, None)
        }
        Op::AddEdge(a, b) => (
            roles::add_inheritance(id, o, w.role(a), w.role(b)).await,
            cycle(a, b, w).then_some("InheritanceCycle"),
        ),
        Op::RemoveEdge(k, a, b) => {
            let (a, b) = pick(&s.edges, k).unwrap_or_else(|| (w.role(a), w.role(b)));
            (roles::remove_inheritance(id, o, a, b).await, None)
        }
        Op::Assign(u, r) => (
            roles::assign_role(id, o, w.users[u], w.role(r))
                .await
                .map(drop),
            None,
        ),
        Op::Unassign(k, u, r) => {
            // Mostly additional roles (removable), sometimes any (the primary is refused).
            let additional: Vec<(Uuid, Uuid)> = s
                .assignments
                .iter()
                .filter(|(u, r)| {
                    let name = s.roles.iter().find(|x| x.0 == *r).map(|x| &x.1);
                    s.members.iter().any(|m| m.0 == *u && Some(&m.1) != name)
                })
                .copied()
                .collect();
            let rows = if k < 4 { &additional } else { &s.assignments };
            let (u, r) = pick(rows, k).unwrap_or_else(|| (w.users[u], w.role(r)));
            (roles::unassign_role(id, o, u, r).await.map(drop), None)
        }
        Op::SetPrimary(u, r) => {
            let name = name_of(w.roles[r]).await;
            (
                memberships::set_primary_role(id, o, w.users[u], &name)
                    .await
                    .map(drop),
                None,
            )
        }
        Op::SetStructure(multi) => {
            let s = if multi {
                RoleStructure::MultiRole
            } else {
                RoleStructure::SingleRole
            };
            (orgs::set_role_structure(id, o, s).await.map(drop), None)
        }
        Op::AddMember(u, r) => {
            let name = name_of(w.roles[r]).await;
            (
                memberships::add(id, o, w.users[u], &name).await.map(drop),
                None,
            )
        }
        Op::RemoveMember(u) => (memberships::remove(id, o, w.users[u]).await, None),
        Op::AssignForeignRole(u) => (
            roles::assign_role(id, o, w.users[u], w.foreign_role)
                .await
                .map(drop),
            Some("CrossOrg"),
        ),
        Op::EdgeToForeignRole(r) => (
            roles::add_inheritance(id, o, w.role(r), w.foreign_role).await,
            expect_cross(r, w),
        ),
        Op::GrantForeignPermission(r) => (
            roles::grant_permission(id, o, w.role(r), w.foreign_permission).await,
            expect_cross(r, w),
        ),
    }
}

/// The k-th of some existing rows (k < 6), to reach valid removals often.
fn pick(rows: &[(Uuid, Uuid)], k: usize) -> Option<(Uuid, Uuid)> {
    (k < 6 && !rows.is_empty()).then(|| rows[k % rows.len()])
}

fn kind(e: &IdentityError) -> &'static str {
    match e {
        IdentityError::Invalid { .. } => "Invalid",
        IdentityError::Conflict { .. } => "Conflict",
        IdentityError::NotFound { .. } => "NotFound",
        IdentityError::Forbidden { .. } => "Forbidden",
        IdentityError::InheritanceCycle => "InheritanceCycle",
        IdentityError::CrossOrg { .. } => "CrossOrg",
        _ => "unexpected",
    }
}

async fn run_case(id: &Identity, multi: bool, ops: &[Op]) -> Result<(), String> {
    let mut w = world(id).await;
    if multi {
        orgs::set_role_structure(id, w.org, RoleStructure::MultiRole)
            .await
            .map_err(|e| e.to_string())?;
    }
    check_derived(&snapshot(&id.db, w.org).await)?;
    let foreign_before = snapshot(&id.db, w.foreign).await;
    for (n, op) in ops.iter().enumerate() {
        let before = snapshot(&id.db, w.org).await;
        let (res, expected) = apply(id, &mut w, &before, op).await;
        let after = snapshot(&id.db, w.org).await;
        let at = format!("op {n} {op:?}");
        match (&res, expected) {
            (Ok(()), Some(e)) => return Err(format!("{at}: succeeded, expected {e}")),
            (Err(e), Some(want)) if kind(e) != want => {
                return Err(format!("{at}: {e:?}, expected {want}"));
            }
            (Err(e), _) if kind(e) == "unexpected" => return Err(format!("{at}: {e:?}")),
            _ => {}
        }
        if res.is_err() && after != before {
            return Err(format!(
                "{at}: rejected ({res:?}) but changed the tables\nbefore {before:#?}\nafter {after:#?}"
            ));
        }
        check_derived(&after).map_err(|e| format!("{at}: {e}\n{after:#?}"))?;
    }
    if snapshot(&id.db, w.foreign).await != foreign_before {
        return Err("the other org changed".into());
    }
    Ok(())
}

fn derived_columns_property(backend: Backend, cases: u32) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let Some(db) = rt.block_on(TestDb::new(backend, "roles::derived_columns_property")) else {
        return;
    };
    let id = rt.block_on(identity(&db));
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    });
    let strategy = (any::<bool>(), prop::collection::vec(op(), 20..=40));
    let result = runner.run(&strategy, |(multi, ops)| {
        rt.block_on(run_case(&id, multi, &ops))
            .map_err(TestCaseError::fail)
    });
    rt.block_on(done(id, db));
    if let Err(e) = result {
        panic!("{e}");
    }
}

#[test]
fn derived_columns_property_sqlite() {
    derived_columns_property(Backend::Sqlite, 24);
}

#[test]
fn derived_columns_property_postgres() {
    derived_columns_property(Backend::Postgres, 8);
}
