//! The audit log over the real store (both backends): a scripted run of mutations across
//! users, orgs, memberships, roles, MFA, tokens and sessions, diffed against the log; failed
//! mutations leave no row; filters, cursor pagination and JSON Lines export.
use crate::helpers::{TestDb, identity_with_clock};
use crate::on_both_databases;
use chrono::{DateTime, Duration, Utc};
use lintel::clock::{Clock, FixedClock};
use lintel::config::Secret;
use lintel::identity::audit::{self, Actor, ActorKind};
use lintel::identity::mailer::{Email, MailError, Mailer, SendFuture};
use lintel::identity::roles::RoleStructure;
use lintel::identity::sessions::NewSession;
use lintel::identity::users::{ImportRecord, NewUser, UserPatch};
use lintel::identity::{
    Identity, IdentityError, memberships, mfa, orgs, roles, sessions, tokens, users,
};
use lintel::store::{self, audit::AuditLog, audit::Filter, users::User};
use serde_json::{Value, json};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use uuid::Uuid;

on_both_databases!(
    every_mutation_is_in_the_log_exactly_once,
    failed_mutations_write_no_row_and_no_change_lands_without_its_row,
    filters_narrow_the_log,
    cursor_pages_cover_the_log_once,
    export_streams_json_lines_across_pages,
);

/// Mid-step, so a TOTP code for "now" is unambiguous.
fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:15Z")
        .unwrap()
        .with_timezone(&Utc)
}

fn pw(s: &str) -> Secret<String> {
    Secret::new(s.to_string())
}

/// Keeps every mail so the test can read the links.
#[derive(Default)]
struct Outbox(Mutex<Vec<Email>>);

impl Mailer for Outbox {
    fn send(&self, email: Email) -> SendFuture<'_> {
        self.0.lock().unwrap().push(email);
        Box::pin(async { Ok::<(), MailError>(()) })
    }
}

impl Outbox {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// Waits (up to 5 s) for a mail beyond the first `before` (reset mails are sent in the
    /// background).
    async fn wait_beyond(&self, before: usize) {
        for _ in 0..250 {
            if self.len() > before {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("no mail arrived");
    }

    /// The token of the last link mailed.
    fn last_token(&self) -> String {
        let mails = self.0.lock().unwrap();
        let text = &mails.last().expect("a mail").text;
        let at = text.find("token=").expect("a link") + "token=".len();
        text[at..at + tokens::TOKEN_LEN].to_string()
    }
}

async fn setup(db: &TestDb) -> (Identity, FixedClock, Arc<Outbox>) {
    let clock = FixedClock::new(t0());
    let mut id = identity_with_clock(db, clock.clone()).await;
    let outbox = Arc::new(Outbox::default());
    id.mailer = outbox.clone();
    (id, clock, outbox)
}

async fn finish(id: Identity, db: TestDb) {
    id.db.close().await;
    db.drop_database().await;
}

/// The whole log in order, read through cursor pages.
async fn whole_log(id: &Identity, filter: &Filter) -> Vec<AuditLog> {
    let mut out: Vec<AuditLog> = Vec::new();
    loop {
        let page = audit::list(id, filter, out.last().map(|r| r.log_id), 7)
            .await
            .unwrap();
        if page.is_empty() {
            return out;
        }
        out.extend(page);
    }
}

/// What the log's actor columns should say for `a`: (actor_type, actor_id, user_id,
/// impersonator_id, ip, user agent).
type ActorCols = (
    &'static str,
    Option<String>,
    Option<Uuid>,
    Option<Uuid>,
    Option<IpAddr>,
    Option<String>,
);

fn actor_cols(a: &Actor) -> ActorCols {
    let (t, id, user) = match &a.kind {
        ActorKind::System => ("system", None, None),
        ActorKind::User(u) => ("user", Some(u.to_string()), Some(*u)),
        ActorKind::ApiKey { key_id, owner } => ("api_key", Some(key_id.to_string()), *owner),
        ActorKind::ScimClient { client_id } => ("scim_client", Some(client_id.to_string()), None),
    };
    (t, id, user, a.impersonator, a.ip, a.user_agent.clone())
}

fn row_actor(r: &AuditLog) -> ActorCols {
    let t = match r.actor_type.as_str() {
        "system" => "system",
        "user" => "user",
        "api_key" => "api_key",
        "scim_client" => "scim_client",
        other => panic!("actor_type {other}"),
    };
    (
        t,
        r.actor_id.clone(),
        r.user_id,
        r.impersonator_id,
        r.ip_address.map(|i| i.0),
        r.user_agent.clone(),
    )
}

/// One expected row: (action, object_type, object_id, org_id) and who acted.
#[derive(Debug, Clone, PartialEq)]
struct Expected {
    action: String,
    object_type: String,
    object_id: String,
    org_id: Option<Uuid>,
    actor: ActorCols,
}

#[derive(Default)]
struct Script {
    rows: Vec<Expected>,
    secrets: Vec<String>,
}

impl Script {
    /// A successful call through `id` that must have written exactly this row.
    fn expect(
        &mut self,
        id: &Identity,
        action: &'static str,
        object_type: &'static str,
        object_id: impl ToString,
        org_id: Option<Uuid>,
    ) {
        self.rows.push(Expected {
            action: action.into(),
            object_type: object_type.into(),
            object_id: object_id.to_string(),
            org_id,
            actor: actor_cols(&id.actor),
        });
    }

    fn secret(&mut self, s: impl Into<String>) {
        self.secrets.push(s.into());
    }

    async fn password_hash_of(&mut self, id: &Identity, user_id: Uuid) {
        let mut c = id.db.conn().await.unwrap();
        let h = store::users::password_hash(&mut c, user_id)
            .await
            .unwrap()
            .unwrap();
        self.secrets.push(h);
    }
}

fn pair(a: impl std::fmt::Display, b: impl std::fmt::Display) -> String {
    format!("{a}:{b}")
}

fn totp_now(clock: &FixedClock, secret_base32: &str) -> String {
    let seed = totp_rs::Secret::try_from_base32(secret_base32).unwrap();
    let seed: &[u8] = seed.as_ref();
    mfa::totp_code(seed, mfa::totp_step(clock.now()), 6).unwrap()
}

async fn user_row(id: &Identity, user_id: Uuid) -> User {
    users::get(id, user_id).await.unwrap()
}

async fn every_mutation_is_in_the_log_exactly_once(db: TestDb) {
    let (base, clock, outbox) = setup(&db).await;
    let mut s = Script::default();
    let ip: IpAddr = "203.0.113.9".parse().unwrap();

    // The CLI (system) creates the admin who owns the API key.
    let (admin, _) = users::create(
        &base,
        NewUser {
            email: "admin@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.expect(&base, "user.created", "user", admin.user_id, None);

    let key_id = Uuid::now_v7();
    let k = base.acting_as(Actor {
        kind: ActorKind::ApiKey {
            key_id,
            owner: Some(admin.user_id),
        },
        ip: Some(ip),
        user_agent: Some("lintel-admin/1.0".into()),
        impersonator: None,
    });

    // Orgs, users, memberships.
    let acme = orgs::create(&k, "Acme", None).await.unwrap();
    let a = Some(acme.org_id);
    s.expect(&k, "organization.created", "organization", acme.org_id, a);

    let bob_pw = "bob's first password 1";
    s.secret(bob_pw);
    let (bob, m) = users::create(
        &k,
        NewUser {
            email: "bob@example.com".into(),
            password: Some(pw(bob_pw)),
            org_id: a,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(m.is_some());
    s.expect(&k, "user.created", "user", bob.user_id, a);
    s.password_hash_of(&k, bob.user_id).await;

    let (carol, _) = users::create(
        &k,
        NewUser {
            email: "carol@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.expect(&k, "user.created", "user", carol.user_id, None);

    let dup = users::create(
        &k,
        NewUser {
            email: "BOB@example.com".into(),
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(dup, Err(IdentityError::Conflict { .. })),
        "{dup:?}"
    );

    users::update(
        &k,
        carol.user_id,
        UserPatch {
            first_name: Some(Some("Carol".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.expect(&k, "user.updated", "user", carol.user_id, None);
    let bad = users::update(
        &k,
        carol.user_id,
        UserPatch {
            username: Some(Some("no spaces allowed".into())),
            ..Default::default()
        },
    )
    .await;
    assert!(matches!(bad, Err(IdentityError::Invalid { .. })), "{bad:?}");

    memberships::add(&k, acme.org_id, carol.user_id, "member")
        .await
        .unwrap();
    let carol_in_acme = pair(carol.user_id, acme.org_id);
    s.expect(&k, "membership.created", "membership", &carol_in_acme, a);
    let again = memberships::add(&k, acme.org_id, carol.user_id, "member").await;
    assert!(
        matches!(again, Err(IdentityError::Conflict { .. })),
        "{again:?}"
    );

    // Roles and permissions.
    let billing = roles::create_role(&k, acme.org_id, "billing", Some("Pays"))
        .await
        .unwrap();
    s.expect(&k, "role.created", "role", billing.role_id, a);
    let again = roles::create_role(&k, acme.org_id, "billing", None).await;
    assert!(
        matches!(again, Err(IdentityError::Conflict { .. })),
        "{again:?}"
    );
    let perm = roles::create_permission(&k, acme.org_id, "invoices:read", None)
        .await
        .unwrap();
    s.expect(
        &k,
        "permission.created",
        "permission",
        perm.permission_id,
        a,
    );
    let grant = pair(billing.role_id, perm.permission_id);
    roles::grant_permission(&k, acme.org_id, billing.role_id, perm.permission_id)
        .await
        .unwrap();
    s.expect(&k, "role_permission.granted", "role_permission", &grant, a);
    // Granting again changes nothing but is still the caller's call: one row, marked.
    roles::grant_permission(&k, acme.org_id, billing.role_id, perm.permission_id)
        .await
        .unwrap();
    s.expect(&k, "role_permission.granted", "role_permission", &grant, a);

    let member = roles::list_roles(&k, acme.org_id)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.name == "member")
        .unwrap();
    roles::add_inheritance(&k, acme.org_id, billing.role_id, member.role_id)
        .await
        .unwrap();
    let edge = pair(billing.role_id, member.role_id);
    s.expect(&k, "role_inheritance.added", "role_inheritance", &edge, a);
    let cycle = roles::add_inheritance(&k, acme.org_id, member.role_id, billing.role_id).await;
    assert!(
        matches!(cycle, Err(IdentityError::InheritanceCycle)),
        "{cycle:?}"
    );

    orgs::set_role_structure(&k, acme.org_id, RoleStructure::MultiRole)
        .await
        .unwrap();
    s.expect(&k, "organization.updated", "organization", acme.org_id, a);
    roles::assign_role(&k, acme.org_id, carol.user_id, billing.role_id)
        .await
        .unwrap();
    let carol_billing = pair(carol.user_id, billing.role_id);
    s.expect(&k, "user_role.assigned", "user_role", &carol_billing, a);
    roles::unassign_role(&k, acme.org_id, carol.user_id, billing.role_id)
        .await
        .unwrap();
    s.expect(&k, "user_role.unassigned", "user_role", &carol_billing, a);
    let again = roles::unassign_role(&k, acme.org_id, carol.user_id, billing.role_id).await;
    assert!(
        matches!(again, Err(IdentityError::NotFound { .. })),
        "{again:?}"
    );
    memberships::set_primary_role(&k, acme.org_id, carol.user_id, "admin")
        .await
        .unwrap();
    s.expect(
        &k,
        "membership.role_changed",
        "membership",
        &carol_in_acme,
        a,
    );

    roles::revoke_permission(&k, acme.org_id, billing.role_id, perm.permission_id)
        .await
        .unwrap();
    s.expect(&k, "role_permission.revoked", "role_permission", &grant, a);
    let again =
        roles::revoke_permission(&k, acme.org_id, billing.role_id, perm.permission_id).await;
    assert!(
        matches!(again, Err(IdentityError::NotFound { .. })),
        "{again:?}"
    );
    roles::remove_inheritance(&k, acme.org_id, billing.role_id, member.role_id)
        .await
        .unwrap();
    s.expect(&k, "role_inheritance.removed", "role_inheritance", &edge, a);
    roles::rename_role(&k, acme.org_id, billing.role_id, "finance")
        .await
        .unwrap();
    s.expect(&k, "role.renamed", "role", billing.role_id, a);
    roles::delete_role(&k, acme.org_id, billing.role_id)
        .await
        .unwrap();
    s.expect(&k, "role.deleted", "role", billing.role_id, a);
    roles::delete_permission(&k, acme.org_id, perm.permission_id)
        .await
        .unwrap();
    s.expect(
        &k,
        "permission.deleted",
        "permission",
        perm.permission_id,
        a,
    );

    // Org settings.
    orgs::set_login_method(&k, acme.org_id, "saml", true)
        .await
        .unwrap();
    s.expect(
        &k,
        "org_login_method.enabled",
        "org_login_method",
        pair(acme.org_id, "saml"),
        a,
    );
    let bad = orgs::set_login_method(&k, acme.org_id, "kerberos", true).await;
    assert!(matches!(bad, Err(IdentityError::Invalid { .. })), "{bad:?}");
    let d = orgs::add_domain(&k, acme.org_id, "Acme.test")
        .await
        .unwrap();
    s.expect(&k, "org_domain.added", "org_domain", d.domain_id, a);
    let again = orgs::add_domain(&k, acme.org_id, "acme.test").await;
    assert!(
        matches!(again, Err(IdentityError::Conflict { .. })),
        "{again:?}"
    );
    orgs::set_domain_verified(&k, acme.org_id, "acme.test", true)
        .await
        .unwrap();
    s.expect(&k, "org_domain.verified", "org_domain", d.domain_id, a);
    orgs::remove_domain(&k, acme.org_id, "acme.test")
        .await
        .unwrap();
    s.expect(&k, "org_domain.removed", "org_domain", d.domain_id, a);
    let again = orgs::remove_domain(&k, acme.org_id, "acme.test").await;
    assert!(
        matches!(again, Err(IdentityError::NotFound { .. })),
        "{again:?}"
    );
    mfa::set_org_mfa_required(&k, acme.org_id, true)
        .await
        .unwrap();
    s.expect(&k, "organization.updated", "organization", acme.org_id, a);

    // Account state.
    let carol_pw = "carol's admin-set password";
    s.secret(carol_pw);
    users::set_password(&k, carol.user_id, &pw(carol_pw), true)
        .await
        .unwrap();
    s.expect(&k, "user.password_set", "user", carol.user_id, None);
    s.password_hash_of(&k, carol.user_id).await;
    let short = users::set_password(&k, carol.user_id, &pw("short"), false).await;
    assert!(
        matches!(short, Err(IdentityError::Invalid { .. })),
        "{short:?}"
    );
    users::lock(&k, carol.user_id).await.unwrap();
    s.expect(&k, "user.locked", "user", carol.user_id, None);
    users::unlock(&k, carol.user_id).await.unwrap();
    s.expect(&k, "user.unlocked", "user", carol.user_id, None);
    users::set_enabled(&k, carol.user_id, false).await.unwrap();
    s.expect(&k, "user.disabled", "user", carol.user_id, None);
    users::set_enabled(&k, carol.user_id, true).await.unwrap();
    s.expect(&k, "user.enabled", "user", carol.user_id, None);
    let missing = users::lock(&k, Uuid::now_v7()).await;
    assert!(
        matches!(missing, Err(IdentityError::NotFound { .. })),
        "{missing:?}"
    );
    let legacy_hash = format!("$2b$04${}", "q".repeat(53));
    s.secret(legacy_hash.clone());
    let import = |email: &str, hash: &str| ImportRecord {
        email: email.into(),
        legacy_user_id: Some("legacy-7".into()),
        password_hash: Some(hash.into()),
        first_name: None,
        last_name: None,
        username: None,
        email_confirmed: true,
        properties: None,
    };
    let dave = users::import(&k, import("dave@example.com", &legacy_hash))
        .await
        .unwrap();
    s.expect(&k, "user.imported", "user", dave.user_id, None);
    let bad = users::import(&k, import("eve@example.com", "md5:abc")).await;
    assert!(matches!(bad, Err(IdentityError::Invalid { .. })), "{bad:?}");
    users::update(
        &k,
        bob.user_id,
        UserPatch {
            can_create_orgs: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.expect(&k, "user.updated", "user", bob.user_id, None);

    // A SCIM client provisions and deprovisions.
    let scim = base.acting_as(Actor {
        kind: ActorKind::ScimClient {
            client_id: Uuid::now_v7(),
        },
        ip: Some("198.51.100.20".parse().unwrap()),
        user_agent: Some("Okta SCIM".into()),
        impersonator: None,
    });
    let (erin, _) = users::create(
        &scim,
        NewUser {
            email: "erin@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.expect(&scim, "user.created", "user", erin.user_id, None);
    users::delete(&scim, erin.user_id).await.unwrap();
    s.expect(&scim, "user.deleted", "user", erin.user_id, None);
    let again = users::delete(&scim, erin.user_id).await;
    assert!(
        matches!(again, Err(IdentityError::NotFound { .. })),
        "{again:?}"
    );

    // Bob acting for himself.
    let b = base.acting_as(Actor {
        ip: Some("2001:db8::5".parse().unwrap()),
        user_agent: Some("Mozilla/5.0".into()),
        ..Actor::user(bob.user_id)
    });
    let (bobco, _) = orgs::create_by_user(&b, bob.user_id, "Bobco", None)
        .await
        .unwrap();
    s.expect(
        &b,
        "organization.created",
        "organization",
        bobco.org_id,
        Some(bobco.org_id),
    );
    let refused = orgs::create_by_user(&b, carol.user_id, "Carolco", None).await;
    assert!(
        matches!(refused, Err(IdentityError::Forbidden { .. })),
        "{refused:?}"
    );

    let e = mfa::begin_totp_enrolment(&b, bob.user_id).await.unwrap();
    s.secret(e.secret_base32.clone());
    s.secret(e.otpauth_uri.clone());
    s.expect(&b, "mfa.enrolment_started", "mfa_device", e.device_id, None);
    let code = totp_now(&clock, &e.secret_base32);
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let bad = mfa::confirm_totp(&b, bob.user_id, e.device_id, wrong).await;
    assert!(matches!(bad, Err(IdentityError::MfaCodeInvalid)), "{bad:?}");
    let codes = mfa::confirm_totp(&b, bob.user_id, e.device_id, &code)
        .await
        .unwrap();
    s.expect(&b, "mfa.enrolled", "mfa_device", e.device_id, None);
    // Authentication is not audited: a code, a recovery code.
    clock.advance(Duration::seconds(30));
    mfa::verify_totp(&b, bob.user_id, &totp_now(&clock, &e.secret_base32))
        .await
        .unwrap();
    mfa::use_recovery_code(&b, bob.user_id, &codes.0[0])
        .await
        .unwrap();
    let fresh = mfa::regenerate_recovery_codes(&b, bob.user_id)
        .await
        .unwrap();
    s.expect(
        &b,
        "mfa.recovery_codes_regenerated",
        "user",
        bob.user_id,
        None,
    );
    for c in codes.0.iter().chain(&fresh) {
        s.secret(c.clone());
        s.secret(c.replace('-', ""));
    }

    let issued = sessions::create(
        &b,
        NewSession {
            user_id: bob.user_id,
            org_id: a,
            auth_methods: vec!["pwd".into(), "otp".into()],
            with_refresh_token: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let session_id = issued.session.session_id;
    s.secret(issued.refresh_token.unwrap().expose().clone());
    s.expect(&b, "session.created", "session", session_id, a);
    sessions::validate(&b, session_id).await.unwrap(); // not a mutation worth a row
    sessions::revoke(&b, bob.user_id, session_id).await.unwrap();
    s.expect(&b, "session.revoked", "session", session_id, a);
    let other = sessions::revoke(&b, carol.user_id, session_id).await;
    assert!(
        matches!(other, Err(IdentityError::NotFound { .. })),
        "{other:?}"
    );

    tokens::send_email_verification(&b, bob.user_id)
        .await
        .unwrap();
    s.expect(
        &b,
        "user.email_verification_sent",
        "user",
        bob.user_id,
        None,
    );
    let verify = outbox.last_token();
    s.secret(verify.clone());
    tokens::verify_email(&b, &verify).await.unwrap();
    s.expect(&b, "user.email_verified", "user", bob.user_id, None);
    let used = tokens::verify_email(&b, &verify).await;
    assert!(matches!(used, Err(IdentityError::TokenUsed)), "{used:?}");
    // Already confirmed: nothing is sent, nothing changes, nothing is logged.
    tokens::send_email_verification(&b, bob.user_id)
        .await
        .unwrap();

    let bob_pw2 = "bob's second password 2";
    s.secret(bob_pw2);
    tokens::change_password(&b, bob.user_id, Some(&pw(bob_pw)), &pw(bob_pw2), None)
        .await
        .unwrap();
    s.expect(&b, "user.password_changed", "user", bob.user_id, None);
    s.password_hash_of(&b, bob.user_id).await;
    let wrong = tokens::change_password(
        &b,
        bob.user_id,
        Some(&pw(bob_pw)),
        &pw("x y z 1234 5"),
        None,
    )
    .await;
    assert!(
        matches!(wrong, Err(IdentityError::InvalidCredentials)),
        "{wrong:?}"
    );

    // An admin impersonating Bob.
    let imp = base.acting_as(Actor {
        kind: ActorKind::User(bob.user_id),
        impersonator: Some(admin.user_id),
        ip: Some(ip),
        user_agent: Some("lintel-console".into()),
    });
    let mails = outbox.len();
    tokens::request_password_reset(&imp, "Bob@Example.com")
        .await
        .unwrap();
    outbox.wait_beyond(mails).await;
    s.expect(
        &imp,
        "user.password_reset_requested",
        "user",
        bob.user_id,
        None,
    );
    let reset = outbox.last_token();
    s.secret(reset.clone());
    // Unknown addresses answer the same and log nothing.
    tokens::request_password_reset(&imp, "nobody@example.com")
        .await
        .unwrap();
    let bob_pw3 = "bob's third password 3";
    s.secret(bob_pw3);
    tokens::reset_password(&imp, &reset, &pw(bob_pw3))
        .await
        .unwrap();
    s.expect(&imp, "user.password_reset", "user", bob.user_id, None);
    s.password_hash_of(&imp, bob.user_id).await;
    let used = tokens::reset_password(&imp, &reset, &pw(bob_pw3)).await;
    assert!(matches!(used, Err(IdentityError::TokenUsed)), "{used:?}");

    assert_eq!(
        sessions::revoke_all_for_user(&imp, bob.user_id, None)
            .await
            .unwrap(),
        0
    );
    s.expect(&imp, "sessions.revoked", "user", bob.user_id, None);
    sessions::revoke_all_for_org(&imp, acme.org_id)
        .await
        .unwrap();
    s.expect(&imp, "sessions.revoked", "organization", acme.org_id, a);
    let missing = sessions::revoke_all_for_org(&imp, Uuid::now_v7()).await;
    assert!(
        matches!(missing, Err(IdentityError::NotFound { .. })),
        "{missing:?}"
    );
    mfa::remove_device(&imp, bob.user_id, e.device_id)
        .await
        .unwrap();
    s.expect(&imp, "mfa.device_removed", "mfa_device", e.device_id, None);
    mfa::disable_mfa(&imp, bob.user_id).await.unwrap();
    s.expect(&imp, "mfa.disabled", "user", bob.user_id, None);
    let none = mfa::regenerate_recovery_codes(&imp, bob.user_id).await;
    assert!(
        matches!(none, Err(IdentityError::MfaNotEnrolled)),
        "{none:?}"
    );
    memberships::remove(&imp, acme.org_id, carol.user_id)
        .await
        .unwrap();
    s.expect(&imp, "membership.deleted", "membership", &carol_in_acme, a);
    let again = memberships::remove(&imp, acme.org_id, carol.user_id).await;
    assert!(
        matches!(again, Err(IdentityError::NotFound { .. })),
        "{again:?}"
    );

    // The diff: the log is exactly the successful operations, in order.
    let log = whole_log(&base, &Filter::default()).await;
    let got: Vec<Expected> = log
        .iter()
        .map(|r| Expected {
            action: r.action.clone(),
            object_type: r.object_type.clone().unwrap(),
            object_id: r.object_id.clone().unwrap(),
            org_id: r.org_id,
            actor: row_actor(r),
        })
        .collect();
    assert!(s.rows.len() >= 50, "{} operations", s.rows.len());
    for (i, (g, e)) in got.iter().zip(&s.rows).enumerate() {
        assert_eq!(g, e, "row {i}");
    }
    assert_eq!(got.len(), s.rows.len(), "{got:#?}");
    // Time order: every row at the clock of its operation.
    assert!(log.windows(2).all(|w| w[0].timestamp <= w[1].timestamp));

    // No secret anywhere in any row.
    for r in &log {
        let line = audit::json_line(r).unwrap();
        for secret in &s.secrets {
            assert!(!line.contains(secret.as_str()), "{secret} in {line}");
        }
    }

    // Details say what changed.
    let details = |action: &str, n: usize| -> Value {
        log.iter()
            .filter(|r| r.action == action)
            .nth(n)
            .unwrap()
            .details
            .0
            .clone()
    };
    assert_eq!(
        details("user.updated", 0),
        json!({"first_name": {"before": null, "after": "Carol"}})
    );
    assert_eq!(
        details("user.password_set", 0),
        json!({"require_change": true})
    );
    assert_eq!(details("role_permission.granted", 0)["changed"], true);
    assert_eq!(details("role_permission.granted", 1)["changed"], false);
    assert_eq!(
        details("role.renamed", 0),
        json!({"name": {"before": "billing", "after": "finance"}})
    );
    assert_eq!(
        details("organization.updated", 1),
        json!({"mfa_required": {"before": false, "after": true}})
    );
    assert_eq!(
        details("membership.role_changed", 0)["user_role"],
        json!({"before": "member", "after": "admin"})
    );
    assert_eq!(details("user.created", 1)["org_id"], json!(acme.org_id));
    assert_eq!(
        details("organization.created", 1)["owner_user_id"],
        json!(bob.user_id)
    );
    assert_eq!(
        details("user.disabled", 0)["enabled"],
        json!({"before": true, "after": false})
    );
    assert_eq!(details("sessions.revoked", 0)["count"], 0);
    finish(base, db).await;
}

async fn failed_mutations_write_no_row_and_no_change_lands_without_its_row(db: TestDb) {
    let (id, _clock, _) = setup(&db).await;
    let org = orgs::create(&id, "Initech", None).await.unwrap();
    let (u, _) = users::create(
        &id,
        NewUser {
            email: "peter@initech.test".into(),
            org_id: Some(org.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let count = || async { whole_log(&id, &Filter::default()).await.len() };
    assert_eq!(count().await, 2);

    // Invalid, conflicting, missing: each fails inside (or before) its transaction.
    let nobody = Uuid::now_v7();
    let errs: Vec<IdentityError> = vec![
        users::create(
            &id,
            NewUser {
                email: "not an email".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
        users::create(
            &id,
            NewUser {
                email: "PETER@initech.test".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
        users::create(
            &id,
            NewUser {
                email: "lost@initech.test".into(),
                org_id: Some(nobody),
                ..Default::default()
            },
        )
        .await
        .unwrap_err(),
        users::update(&id, nobody, UserPatch::default())
            .await
            .unwrap_err(),
        users::delete(&id, nobody).await.unwrap_err(),
        orgs::create(&id, "INITECH", None).await.unwrap_err(),
        orgs::set_login_method(&id, nobody, "saml", true)
            .await
            .unwrap_err(),
        orgs::add_domain(&id, nobody, "initech.test")
            .await
            .unwrap_err(),
        orgs::set_domain_verified(&id, org.org_id, "initech.test", true)
            .await
            .unwrap_err(),
        memberships::add(&id, org.org_id, u.user_id, "member")
            .await
            .unwrap_err(),
        memberships::set_primary_role(&id, org.org_id, u.user_id, "no-such-role")
            .await
            .unwrap_err(),
        roles::create_role(&id, org.org_id, "member", None)
            .await
            .unwrap_err(),
        roles::delete_role(&id, org.org_id, nobody)
            .await
            .unwrap_err(),
        mfa::begin_totp_enrolment(&id, nobody).await.unwrap_err(),
        mfa::disable_mfa(&id, nobody).await.unwrap_err(),
        mfa::set_org_mfa_required(&id, nobody, true)
            .await
            .unwrap_err(),
        tokens::verify_email(&id, &"A".repeat(tokens::TOKEN_LEN))
            .await
            .unwrap_err(),
        sessions::revoke_all_for_user(&id, nobody, None)
            .await
            .unwrap_err(),
    ];
    assert_eq!(errs.len(), 18);
    for e in &errs {
        assert!(
            matches!(
                e,
                IdentityError::Invalid { .. }
                    | IdentityError::Conflict { .. }
                    | IdentityError::NotFound { .. }
                    | IdentityError::TokenInvalid
            ),
            "{e:?}"
        );
    }
    assert_eq!(count().await, 2, "a failed mutation wrote a row");

    // The row is part of the change: when it cannot be written (an actor user that does
    // not exist breaks its foreign key), the change is rolled back with it.
    let ghost = id.acting_as(Actor::user(Uuid::now_v7()));
    let err = users::update(
        &ghost,
        u.user_id,
        UserPatch {
            first_name: Some(Some("Changed".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, IdentityError::Store(_)), "{err:?}");
    assert_eq!(user_row(&id, u.user_id).await.first_name, None);
    assert!(orgs::create(&ghost, "Ghost Corp", None).await.is_err());
    assert!(orgs::resolve(&id, "ghost-corp").await.is_err());
    assert!(users::delete(&ghost, u.user_id).await.is_err());
    users::get(&id, u.user_id).await.unwrap();
    assert_eq!(count().await, 2);
    finish(id, db).await;
}

/// Eight rows at three instants, by three actors, in two orgs.
struct Fixture {
    id: Identity,
    admin: Uuid,
    key_id: Uuid,
    org_a: Uuid,
    org_b: Uuid,
}

async fn fixture(db: &TestDb) -> (Fixture, FixedClock) {
    let (id, clock, _) = setup(db).await;
    let (admin, _) = users::create(
        &id,
        NewUser {
            email: "root@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let key_id = Uuid::now_v7();
    let k = id.acting_as(Actor {
        kind: ActorKind::ApiKey {
            key_id,
            owner: Some(admin.user_id),
        },
        ..Actor::default()
    });
    let u = id.acting_as(Actor::user(admin.user_id));
    let org_a = orgs::create(&k, "Org A", None).await.unwrap().org_id;
    let org_b = orgs::create(&k, "Org B", None).await.unwrap().org_id;
    clock.advance(Duration::hours(1));
    orgs::set_login_method(&k, org_a, "saml", true)
        .await
        .unwrap();
    orgs::set_login_method(&u, org_b, "oidc", true)
        .await
        .unwrap();
    clock.advance(Duration::hours(1));
    for n in 0..3 {
        users::update(
            &u,
            admin.user_id,
            UserPatch {
                first_name: Some(Some(format!("Root {n}"))),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    }
    (
        Fixture {
            id,
            admin: admin.user_id,
            key_id,
            org_a,
            org_b,
        },
        clock,
    )
}

async fn filters_narrow_the_log(db: TestDb) {
    let (f, _clock) = fixture(&db).await;
    let actions =
        |rows: Vec<AuditLog>| -> Vec<String> { rows.into_iter().map(|r| r.action).collect() };
    let q = |filter: Filter| {
        let id = f.id.clone();
        async move { whole_log(&id, &filter).await }
    };
    assert_eq!(q(Filter::default()).await.len(), 8);
    assert_eq!(
        actions(
            q(Filter {
                org_id: Some(f.org_a),
                ..Default::default()
            })
            .await
        ),
        ["organization.created", "org_login_method.enabled"]
    );
    let b = q(Filter {
        org_id: Some(f.org_b),
        ..Default::default()
    })
    .await;
    assert_eq!(b.len(), 2);
    assert!(b.iter().all(|r| r.org_id == Some(f.org_b)));
    // By actor: the key, users, the system; and on whose behalf (`user_id`).
    let by_key = q(Filter {
        actor_type: Some("api_key".into()),
        actor_id: Some(f.key_id.to_string()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        actions(by_key),
        [
            "organization.created",
            "organization.created",
            "org_login_method.enabled"
        ]
    );
    let other_key = q(Filter {
        actor_type: Some("api_key".into()),
        actor_id: Some(Uuid::now_v7().to_string()),
        ..Default::default()
    })
    .await;
    assert!(other_key.is_empty());
    let by_users = q(Filter {
        actor_type: Some("user".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_users.len(), 4);
    assert_eq!(
        actions(
            q(Filter {
                actor_type: Some("system".into()),
                ..Default::default()
            })
            .await
        ),
        ["user.created"]
    );
    let for_admin = q(Filter {
        user_id: Some(f.admin),
        ..Default::default()
    })
    .await;
    assert_eq!(for_admin.len(), 7);
    // By action.
    let updates = q(Filter {
        action: Some("user.updated".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(updates.len(), 3);
    assert!(updates.iter().all(|r| r.action == "user.updated"));
    // Time range: `since` inclusive, `until` exclusive.
    let at = |h: i64| Some(t0() + Duration::hours(h));
    let window = |since, until| Filter {
        since,
        until,
        ..Default::default()
    };
    assert_eq!(q(window(at(1), None)).await.len(), 5);
    assert_eq!(q(window(None, at(1))).await.len(), 3);
    assert_eq!(
        actions(q(window(at(1), at(2))).await),
        ["org_login_method.enabled", "org_login_method.enabled"]
    );
    assert_eq!(q(window(at(3), None)).await.len(), 0);
    // Filters combine.
    let combined = q(Filter {
        org_id: Some(f.org_a),
        since: at(1),
        ..Default::default()
    })
    .await;
    assert_eq!(actions(combined), ["org_login_method.enabled"]);
    let combined = q(Filter {
        actor_type: Some("user".into()),
        action: Some("org_login_method.enabled".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(combined.len(), 1);
    assert_eq!(combined[0].org_id, Some(f.org_b));
    finish(f.id, db).await;
}

async fn cursor_pages_cover_the_log_once(db: TestDb) {
    let (f, _clock) = fixture(&db).await;
    let all = audit::list(&f.id, &Filter::default(), None, 100)
        .await
        .unwrap();
    assert_eq!(all.len(), 8);
    let mut ids: Vec<Uuid> = all.iter().map(|r| r.log_id).collect();
    ids.sort();
    assert_eq!(ids, all.iter().map(|r| r.log_id).collect::<Vec<_>>());
    for size in [1u32, 3, 4, 8] {
        let mut seen = Vec::new();
        let mut sizes = Vec::new();
        let mut after = None;
        loop {
            let page = audit::list(&f.id, &Filter::default(), after, size)
                .await
                .unwrap();
            if page.is_empty() {
                break;
            }
            assert!(page.len() <= size as usize);
            sizes.push(page.len());
            after = page.last().map(|r| r.log_id);
            seen.extend(page);
        }
        assert_eq!(seen, all, "pages of {size}");
        assert_eq!(
            sizes.len(),
            8usize.div_ceil(size as usize),
            "pages of {size}"
        );
    }
    // A cursor with a filter keeps filtering.
    let users_only = Filter {
        actor_type: Some("user".into()),
        ..Default::default()
    };
    let first = audit::list(&f.id, &users_only, None, 3).await.unwrap();
    assert_eq!(first.len(), 3);
    let rest = audit::list(&f.id, &users_only, first.last().map(|r| r.log_id), 3)
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert!(rest.iter().chain(&first).all(|r| r.actor_type == "user"));
    // A limit of 0 still returns a page of one.
    assert_eq!(
        audit::list(&f.id, &Filter::default(), None, 0)
            .await
            .unwrap()
            .len(),
        1
    );
    finish(f.id, db).await;
}

async fn export_streams_json_lines_across_pages(db: TestDb) {
    let (f, _clock) = fixture(&db).await;
    let all = whole_log(&f.id, &Filter::default()).await;
    let parse = |out: &[u8]| -> Vec<Value> {
        let text = std::str::from_utf8(out).unwrap();
        assert!(text.is_empty() || text.ends_with('\n'));
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let mut whole = Vec::new();
    let n = audit::export_jsonl(&f.id, &Filter::default(), &mut whole)
        .await
        .unwrap();
    assert_eq!(n, 8);
    let lines = parse(&whole);
    assert_eq!(lines.len(), 8);
    for (line, row) in lines.iter().zip(&all) {
        assert_eq!(line["log_id"], json!(row.log_id));
        assert_eq!(line["action"], json!(row.action));
        assert_eq!(line["actor_type"], json!(row.actor_type));
        assert_eq!(line["details"], row.details.0);
    }
    // Any page size gives the same bytes (3: a short last page; 4: an exact multiple).
    for size in [1u32, 3, 4] {
        let mut out = Vec::new();
        let n = audit::export_jsonl_pages(&f.id, &Filter::default(), size, &mut out)
            .await
            .unwrap();
        assert_eq!((n, &out), (8, &whole), "pages of {size}");
    }
    // Filtered.
    let mut out = Vec::new();
    let filter = Filter {
        org_id: Some(f.org_b),
        ..Default::default()
    };
    let n = audit::export_jsonl_pages(&f.id, &filter, 1, &mut out)
        .await
        .unwrap();
    assert_eq!(n, 2);
    assert!(parse(&out).iter().all(|l| l["org_id"] == json!(f.org_b)));
    // Nothing matches: no bytes.
    let mut out = Vec::new();
    let none = Filter {
        action: Some("nothing.happened".into()),
        ..Default::default()
    };
    assert_eq!(
        audit::export_jsonl(&f.id, &none, &mut out).await.unwrap(),
        0
    );
    assert!(out.is_empty());
    finish(f.id, db).await;
}
