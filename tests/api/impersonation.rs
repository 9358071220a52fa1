//! Impersonation over the real store (both backends): the permission comes from a role, the
//! log row and the member's session name the admin, actions through the session are audited
//! with both identities, ending and expiry close it, and the refusals write nothing.
use crate::helpers::{TestDb, identity_with_config};
use crate::on_both_databases;
use chrono::{DateTime, Duration, Utc};
use lintel::clock::FixedClock;
use lintel::identity::impersonation::{self, Impersonation};
use lintel::identity::users::{self, NewUser, UserPatch};
use lintel::identity::{
    Identity, IdentityError, audit, memberships, orgs, roles, sessions, waitlist,
};
use lintel::store::audit::{AuditLog, Filter};
use lintel::store::{self, Inet};
use std::net::IpAddr;
use uuid::Uuid;

on_both_databases!(
    an_admin_with_the_permission_impersonates_a_member,
    actions_through_the_session_are_audited_with_both_identities,
    ending_sets_ended_at_and_revokes_the_session,
    refusals_are_errors_with_nothing_written,
    super_admins_cannot_be_impersonated,
    impersonations_end_by_themselves_after_the_max_duration,
);

const MAX_SECS: i64 = 600;

fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-05-01T08:00:00Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn ip() -> IpAddr {
    "198.51.100.23".parse().unwrap()
}

const UA: &str = "Mozilla/5.0 (admin console)";

async fn setup(db: &TestDb) -> (Identity, FixedClock) {
    let clock = FixedClock::new(t0());
    let id = identity_with_config(
        db,
        clock.clone(),
        &[(
            "LINTEL_IMPERSONATION_MAX_DURATION_SECS",
            &MAX_SECS.to_string(),
        )],
    )
    .await;
    (id, clock)
}

async fn finish(id: Identity, db: TestDb) {
    id.db.close().await;
    db.drop_database().await;
}

/// An org where `admin` holds `impersonate` through the `admin` role, and `member` is a
/// plain member.
struct World {
    org_id: Uuid,
    admin: Uuid,
    member: Uuid,
}

async fn user_in(id: &Identity, email: &str, org_id: Option<Uuid>) -> Uuid {
    users::create(
        id,
        NewUser {
            email: email.into(),
            org_id,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .0
    .user_id
}

async fn role_id(id: &Identity, org_id: Uuid, name: &str) -> Uuid {
    roles::list_roles(id, org_id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("role {name}"))
        .role_id
}

async fn world(id: &Identity, name: &str) -> World {
    let org = orgs::create(id, name, None).await.unwrap();
    // Every org has `impersonate` (held by `owner`); here `admin` gets it too.
    let p = roles::list_permissions(id, org.org_id)
        .await
        .unwrap()
        .into_iter()
        .find(|p| p.name == "impersonate")
        .expect("default impersonate permission");
    let admin_role = role_id(id, org.org_id, "admin").await;
    roles::grant_permission(id, org.org_id, admin_role, p.permission_id)
        .await
        .unwrap();
    let admin = user_in(id, &format!("admin@{name}.example"), Some(org.org_id)).await;
    roles::assign_role(id, org.org_id, admin, admin_role)
        .await
        .unwrap();
    let member = user_in(id, &format!("member@{name}.example"), Some(org.org_id)).await;
    World {
        org_id: org.org_id,
        admin,
        member,
    }
}

async fn start(id: &Identity, w: &World, target: Uuid) -> Result<Impersonation, IdentityError> {
    impersonation::start(id, w.admin, w.org_id, target, Some(ip()), Some(UA)).await
}

async fn audit_rows(id: &Identity, action: &str) -> Vec<AuditLog> {
    let f = Filter {
        action: Some(action.into()),
        ..Default::default()
    };
    audit::list(id, &f, None, 1000).await.unwrap()
}

async fn all_logs(id: &Identity) -> Vec<store::impersonation::ImpersonationLog> {
    impersonation::list(id, None, None, None, 1000)
        .await
        .unwrap()
}

/// Unrevoked, unexpired sessions of the user that name an impersonator.
async fn impersonation_sessions(id: &Identity, user_id: Uuid) -> usize {
    let mut c = id.db.conn().await.unwrap();
    store::sessions::list_active_for_user(&mut c, user_id, t0())
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.impersonator_id.is_some())
        .count()
}

/// Gives the user an API key row with `is_admin` (a super-admin), straight in the table.
async fn admin_key(id: &Identity, user_id: Uuid, revoked: bool) {
    let key_id = Uuid::now_v7();
    let mut c = id.db.conn().await.unwrap();
    lintel::with_conn!(&mut c, |c| sqlx::query(
        "INSERT INTO api_keys (api_key_id, user_id, key_hash, created_at, revoked, key_prefix,
                               is_admin)
         VALUES ($1, $2, $3, $4, $5, $6, $7)"
    )
    .bind(key_id)
    .bind(user_id)
    .bind(format!("hash-{key_id}"))
    .bind(t0())
    .bind(revoked)
    .bind(key_id.simple().to_string())
    .bind(true)
    .execute(&mut *c)
    .await
    .unwrap()
    .rows_affected());
}

// ---- tests ----

async fn an_admin_with_the_permission_impersonates_a_member(db: TestDb) {
    let (id, _) = setup(&db).await;
    let w = world(&id, "acme").await;
    // The permission reached the admin through the role (derived membership column).
    let m = memberships::get(&id, w.org_id, w.admin).await.unwrap();
    assert!(m.user_permissions.0.contains(&"impersonate".to_string()));

    let imp = start(&id, &w, w.member).await.unwrap();
    let log = &imp.log;
    assert_eq!(log.admin_user_id, Some(w.admin));
    assert_eq!(log.impersonated_user_id, Some(w.member));
    assert_eq!(log.org_id, Some(w.org_id));
    assert_eq!(log.started_at, t0());
    assert_eq!(log.ended_at, None);
    assert_eq!(log.ip_address, Some(Inet(ip())));
    assert_eq!(log.user_agent.as_deref(), Some(UA));
    assert_eq!(log.session_id, Some(imp.session.session_id));
    assert_eq!(log.expires_at, t0() + Duration::seconds(MAX_SECS));
    // Stored as returned.
    assert_eq!(all_logs(&id).await, vec![log.clone()]);

    // The member's session names the admin and lasts no longer than the impersonation.
    let s = {
        let mut c = id.db.conn().await.unwrap();
        store::sessions::get(&mut c, imp.session.session_id)
            .await
            .unwrap()
            .unwrap()
    };
    assert_eq!(s, imp.session);
    assert_eq!(s.user_id, w.member);
    assert_eq!(s.impersonator_id, Some(w.admin));
    assert_eq!(s.org_id, Some(w.org_id));
    assert!(s.auth_methods.0.is_empty(), "{:?}", s.auth_methods);
    assert_eq!(s.expires_at, log.expires_at);
    assert!(imp.refresh_token.is_some());
    assert_eq!(
        sessions::validate(&id, s.session_id).await.unwrap().user_id,
        w.member
    );
    assert_eq!(
        impersonation::active(&id, w.admin).await.unwrap(),
        vec![log.clone()]
    );
    assert!(
        impersonation::active(&id, w.member)
            .await
            .unwrap()
            .is_empty()
    );

    // Audited once, actor = the admin, the target in the details.
    let rows = audit_rows(&id, "impersonation.started").await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.actor_type, "user");
    assert_eq!(r.actor_id, Some(w.admin.to_string()));
    assert_eq!(r.user_id, Some(w.admin));
    assert_eq!(r.org_id, Some(w.org_id));
    assert_eq!(r.object_id, Some(log.log_id.to_string()));
    assert_eq!(r.ip_address, Some(Inet(ip())));
    assert_eq!(r.user_agent.as_deref(), Some(UA));
    assert_eq!(
        r.details.0["impersonated_user_id"],
        w.member.to_string().as_str()
    );
    finish(id, db).await;
}

async fn actions_through_the_session_are_audited_with_both_identities(db: TestDb) {
    let (id, _) = setup(&db).await;
    let w = world(&id, "acme").await;
    let imp = start(&id, &w, w.member).await.unwrap();
    let acting = impersonation::acting_identity(&id, &imp.session);
    // A profile change made while impersonating goes through.
    let u = users::update(
        &acting,
        w.member,
        UserPatch {
            first_name: Some(Some("Changed".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(u.first_name.as_deref(), Some("Changed"));
    // An audited action: the row names the member as actor and the admin as impersonator.
    let s = waitlist::join(&acting, "friend@example.com").await.unwrap();
    let rows = audit_rows(&id, "waitlist.joined").await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.object_id, Some(s.signup_id.to_string()));
    assert_eq!(r.actor_type, "user");
    assert_eq!(r.actor_id, Some(w.member.to_string()));
    assert_eq!(r.user_id, Some(w.member));
    assert_eq!(r.impersonator_id, Some(w.admin));
    // A session without an impersonator acts as its user alone.
    let own = sessions::create(
        &id,
        sessions::NewSession {
            user_id: w.member,
            auth_methods: vec!["pwd".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .session;
    let plain = impersonation::acting_identity(&id, &own);
    waitlist::join(&plain, "other@example.com").await.unwrap();
    let rows = audit_rows(&id, "waitlist.joined").await;
    assert_eq!(rows[1].user_id, Some(w.member));
    assert_eq!(rows[1].impersonator_id, None);
    // No impersonation can be started through the impersonating handle.
    let other = user_in(&id, "third@acme.example", Some(w.org_id)).await;
    let e = impersonation::start(&acting, w.admin, w.org_id, other, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Forbidden { .. }), "{e:?}");
    assert_eq!(all_logs(&id).await.len(), 1);
    finish(id, db).await;
}

async fn ending_sets_ended_at_and_revokes_the_session(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let w = world(&id, "acme").await;
    let imp = start(&id, &w, w.member).await.unwrap();
    clock.advance(Duration::seconds(90));
    // Only the admin who started it can end it.
    let other_admin = user_in(&id, "other@acme.example", Some(w.org_id)).await;
    let e = impersonation::end(&id, imp.log.log_id, other_admin)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::NotFound { .. }), "{e:?}");
    let e = impersonation::end(&id, Uuid::now_v7(), w.admin)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::NotFound { .. }), "{e:?}");

    let ended = impersonation::end(&id, imp.log.log_id, w.admin)
        .await
        .unwrap();
    assert_eq!(ended.ended_at, Some(t0() + Duration::seconds(90)));
    assert_eq!(all_logs(&id).await, vec![ended.clone()]);
    assert!(matches!(
        sessions::validate(&id, imp.session.session_id).await,
        Err(IdentityError::SessionRevoked)
    ));
    let refresh = imp.refresh_token.unwrap();
    assert!(matches!(
        sessions::rotate_refresh_token(&id, refresh.expose()).await,
        Err(IdentityError::SessionRevoked)
    ));
    assert!(
        impersonation::active(&id, w.admin)
            .await
            .unwrap()
            .is_empty()
    );
    let rows = audit_rows(&id, "impersonation.ended").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].actor_id, Some(w.admin.to_string()));
    assert_eq!(rows[0].details.0["expired"], false);
    // Ending again changes nothing and writes nothing.
    clock.advance(Duration::seconds(5));
    let again = impersonation::end(&id, imp.log.log_id, w.admin)
        .await
        .unwrap();
    assert_eq!(again, ended);
    assert_eq!(audit_rows(&id, "impersonation.ended").await.len(), 1);
    finish(id, db).await;
}

async fn refusals_are_errors_with_nothing_written(db: TestDb) {
    let (id, _) = setup(&db).await;
    let w = world(&id, "acme").await;
    let elsewhere = world(&id, "globex").await;
    let second = user_in(&id, "second@acme.example", Some(w.org_id)).await;

    // A plain member lacks the permission.
    let e = impersonation::start(&id, w.member, w.org_id, second, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Forbidden { .. }), "{e:?}");
    // An admin of another org is not a member of this one.
    let e = impersonation::start(&id, elsewhere.admin, w.org_id, w.member, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Forbidden { .. }), "{e:?}");
    // The target belongs to another org.
    let e = start(&id, &w, elsewhere.member).await.unwrap_err();
    assert!(
        matches!(e, IdentityError::NotFound { what: "membership" }),
        "{e:?}"
    );
    // Unknown org.
    let e = impersonation::start(&id, w.admin, Uuid::now_v7(), w.member, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::NotFound { .. }), "{e:?}");
    // Oneself.
    let e = start(&id, &w, w.admin).await.unwrap_err();
    assert!(
        matches!(
            e,
            IdentityError::Invalid {
                field: "target_user_id",
                ..
            }
        ),
        "{e:?}"
    );
    // Another admin (holds `impersonate` too), and the owner (whose role includes admin).
    let peer = user_in(&id, "peer@acme.example", Some(w.org_id)).await;
    roles::assign_role(&id, w.org_id, peer, role_id(&id, w.org_id, "admin").await)
        .await
        .unwrap();
    let e = start(&id, &w, peer).await.unwrap_err();
    assert!(matches!(e, IdentityError::Forbidden { .. }), "{e:?}");
    let owner = user_in(&id, "owner@acme.example", Some(w.org_id)).await;
    roles::assign_role(&id, w.org_id, owner, role_id(&id, w.org_id, "owner").await)
        .await
        .unwrap();
    let e = start(&id, &w, owner).await.unwrap_err();
    assert!(matches!(e, IdentityError::Forbidden { .. }), "{e:?}");
    // A member holding a permission the admin lacks.
    let billing = roles::create_role(&id, w.org_id, "billing", None)
        .await
        .unwrap();
    let p = roles::create_permission(&id, w.org_id, "billing.write", None)
        .await
        .unwrap();
    roles::grant_permission(&id, w.org_id, billing.role_id, p.permission_id)
        .await
        .unwrap();
    roles::assign_role(&id, w.org_id, second, billing.role_id)
        .await
        .unwrap();
    let e = start(&id, &w, second).await.unwrap_err();
    match e {
        IdentityError::Forbidden { reason } => assert!(reason.contains("billing.write")),
        other => panic!("{other:?}"),
    }

    // Nothing of it was written.
    assert!(all_logs(&id).await.is_empty());
    assert!(audit_rows(&id, "impersonation.started").await.is_empty());
    for u in [w.member, elsewhere.member, w.admin, peer, owner, second] {
        assert_eq!(impersonation_sessions(&id, u).await, 0);
    }
    // The plain member is still impersonable: the refusals were about the targets.
    start(&id, &w, w.member).await.unwrap();
    finish(id, db).await;
}

async fn super_admins_cannot_be_impersonated(db: TestDb) {
    let (id, _) = setup(&db).await;
    let w = world(&id, "acme").await;
    let revoked_once = user_in(&id, "was-root@acme.example", Some(w.org_id)).await;
    admin_key(&id, w.member, false).await;
    admin_key(&id, revoked_once, true).await;
    let e = start(&id, &w, w.member).await.unwrap_err();
    match e {
        IdentityError::Forbidden { reason } => assert!(reason.contains("super-admin")),
        other => panic!("{other:?}"),
    }
    assert!(all_logs(&id).await.is_empty());
    assert_eq!(impersonation_sessions(&id, w.member).await, 0);
    // A revoked admin key confers nothing.
    let imp = start(&id, &w, revoked_once).await.unwrap();
    assert_eq!(imp.session.user_id, revoked_once);
    finish(id, db).await;
}

async fn impersonations_end_by_themselves_after_the_max_duration(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let w = world(&id, "acme").await;
    let imp = start(&id, &w, w.member).await.unwrap();
    // Shorter than both the session lifetime and the idle timeout.
    assert!(
        Duration::seconds(MAX_SECS) < Duration::from_std(id.config.sessions.max_lifetime).unwrap()
    );
    assert!(
        Duration::seconds(MAX_SECS) < Duration::from_std(id.config.sessions.idle_timeout).unwrap()
    );
    let sid = imp.session.session_id;
    clock.advance(Duration::seconds(MAX_SECS - 1));
    sessions::validate(&id, sid).await.unwrap();
    assert_eq!(impersonation::active(&id, w.admin).await.unwrap().len(), 1);
    clock.advance(Duration::seconds(1));
    assert!(matches!(
        sessions::validate(&id, sid).await,
        Err(IdentityError::SessionExpired)
    ));
    assert!(matches!(
        sessions::rotate_refresh_token(&id, imp.refresh_token.unwrap().expose()).await,
        Err(IdentityError::SessionExpired)
    ));
    assert!(
        impersonation::active(&id, w.admin)
            .await
            .unwrap()
            .is_empty()
    );

    // The sweep (run by the background housekeeping) records the end at the expiry, once.
    clock.advance(Duration::seconds(30));
    assert_eq!(lintel::identity::housekeeping::run_once(&id).await.1, 1);
    let log = &all_logs(&id).await[0];
    assert_eq!(log.ended_at, Some(imp.log.expires_at));
    let rows = audit_rows(&id, "impersonation.ended").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].details.0["expired"], true);
    assert_eq!(impersonation::close_expired(&id).await.unwrap(), 0);
    let ended = impersonation::end(&id, imp.log.log_id, w.admin)
        .await
        .unwrap();
    assert_eq!(ended.ended_at, Some(imp.log.expires_at));
    assert_eq!(audit_rows(&id, "impersonation.ended").await.len(), 1);

    // Ending an expired one that was never swept also stamps the expiry.
    let second = start(&id, &w, w.member).await.unwrap();
    clock.advance(Duration::seconds(MAX_SECS + 100));
    let ended = impersonation::end(&id, second.log.log_id, w.admin)
        .await
        .unwrap();
    assert_eq!(ended.ended_at, Some(second.log.expires_at));
    finish(id, db).await;
}
