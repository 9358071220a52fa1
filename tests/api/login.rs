//! authenticate, lockout, legacy import, sessions and user administration, on both backends.
use crate::helpers::{TestDb, identity_with_config};
use crate::on_both_databases;
use chrono::{Duration, TimeZone, Utc};
use lintel::clock::{Clock, FixedClock};
use lintel::config::Secret;
use lintel::identity::login::{LoginContext, LoginOutcome, authenticate};
use lintel::identity::sessions::{self, NewSession};
use lintel::identity::users::{self, ImportRecord, NewUser, UserPatch};
use lintel::identity::{Identity, IdentityError, orgs};
use lintel::store;
use uuid::Uuid;

on_both_databases!(
    login_succeeds_and_every_attempt_is_recorded,
    unknown_email_and_wrong_password_are_the_same_error,
    repeated_failures_lock_temporarily_and_admin_can_unlock,
    failures_outside_the_window_do_not_accumulate,
    disabled_and_admin_locked_users_cannot_sign_in,
    password_change_required_blocks_sessions,
    mfa_and_org_membership_shape_the_outcome,
    imported_bcrypt_hashes_verify_and_are_rehashed,
    sessions_expire_idle_and_revoke,
    refresh_tokens_rotate_once,
    activity_is_written_at_most_once_a_minute,
    user_administration,
    second_factor_completes_login_and_counts_failures,
);

const PW: &str = "correct horse battery staple";

fn pw(s: &str) -> Secret<String> {
    Secret::new(s.to_string())
}

async fn setup(db: &TestDb) -> (Identity, FixedClock) {
    let clock = FixedClock::new(Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap());
    let id = identity_with_config(
        db,
        clock.clone(),
        &[
            ("LINTEL_LOGIN_MAX_FAILURES", "3"),
            ("LINTEL_LOGIN_FAILURE_WINDOW_SECS", "600"),
            ("LINTEL_LOGIN_LOCKOUT_SECS", "900"),
        ],
    )
    .await;
    (id, clock)
}

async fn user(id: &Identity, email: &str) -> store::users::User {
    users::create(
        id,
        NewUser {
            email: email.into(),
            password: Some(pw(PW)),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .0
}

fn ctx() -> LoginContext {
    LoginContext {
        org_id: None,
        ip: Some("198.51.100.4".parse().unwrap()),
        user_agent: Some("test-agent/1.0".into()),
    }
}

async fn attempts(id: &Identity, user_id: Uuid) -> Vec<store::login_attempts::LoginAttempt> {
    let mut c = id.db.conn().await.unwrap();
    store::login_attempts::list_for_user(&mut c, user_id, 100)
        .await
        .unwrap()
}

async fn login_succeeds_and_every_attempt_is_recorded(db: TestDb) {
    let (id, _) = setup(&db).await;
    let u = user(&id, "ada@example.com").await;
    let out = authenticate(&id, "  ADA@example.com ", &pw(PW), &ctx())
        .await
        .unwrap();
    assert!(matches!(out, LoginOutcome::Authenticated { ref user } if user.user_id == u.user_id));
    let rows = attempts(&id, u.user_id).await;
    assert_eq!(rows.len(), 1);
    assert!(rows[0].success);
    assert_eq!(rows[0].ip_address.unwrap().0.to_string(), "198.51.100.4");
    assert_eq!(rows[0].user_agent.as_deref(), Some("test-agent/1.0"));
    db.drop_database().await;
}

async fn unknown_email_and_wrong_password_are_the_same_error(db: TestDb) {
    let (id, _) = setup(&db).await;
    let u = user(&id, "bob@example.com").await;
    for (email, password) in [
        ("bob@example.com", "wrong password!!"),
        ("nobody@example.com", PW),
        ("not-an-email", PW),
    ] {
        let err = authenticate(&id, email, &pw(password), &ctx())
            .await
            .unwrap_err();
        assert!(
            matches!(err, IdentityError::InvalidCredentials),
            "{email}: {err:?}"
        );
        assert_eq!(err.to_string(), "invalid email or password");
    }
    let rows = attempts(&id, u.user_id).await;
    assert_eq!(rows.len(), 1);
    assert!(!rows[0].success);
    db.drop_database().await;
}

async fn repeated_failures_lock_temporarily_and_admin_can_unlock(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let u = user(&id, "carol@example.com").await;
    let bad = pw("not the password");
    for _ in 0..2 {
        let e = authenticate(&id, "carol@example.com", &bad, &ctx())
            .await
            .unwrap_err();
        assert!(matches!(e, IdentityError::InvalidCredentials), "{e:?}");
    }
    // The third failure in the window locks, for lockout_secs.
    let until = clock.now() + Duration::seconds(900);
    let e = authenticate(&id, "carol@example.com", &bad, &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(e, IdentityError::AccountLocked { until: Some(t) } if t == until),
        "{e:?}"
    );
    // Even the right password is refused while locked.
    clock.advance(Duration::seconds(899));
    let e = authenticate(&id, "carol@example.com", &pw(PW), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::AccountLocked { .. }), "{e:?}");
    // And no session can be opened.
    let e = sessions::create(
        &id,
        NewSession {
            user_id: u.user_id,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IdentityError::AccountLocked { .. }), "{e:?}");
    // When the lock ends, the right password works and resets the count.
    clock.advance(Duration::seconds(1));
    authenticate(&id, "carol@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    for _ in 0..2 {
        authenticate(&id, "carol@example.com", &bad, &ctx())
            .await
            .unwrap_err();
    }
    authenticate(&id, "carol@example.com", &pw(PW), &ctx())
        .await
        .unwrap();

    // Lock again, then an admin unlocks early.
    for _ in 0..3 {
        authenticate(&id, "carol@example.com", &bad, &ctx())
            .await
            .unwrap_err();
    }
    assert!(matches!(
        authenticate(&id, "carol@example.com", &pw(PW), &ctx()).await,
        Err(IdentityError::AccountLocked { .. })
    ));
    users::unlock(&id, u.user_id).await.unwrap();
    authenticate(&id, "carol@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    assert!(attempts(&id, u.user_id).await.len() >= 10);
    db.drop_database().await;
}

async fn failures_outside_the_window_do_not_accumulate(db: TestDb) {
    let (id, clock) = setup(&db).await;
    user(&id, "dan@example.com").await;
    let bad = pw("not the password");
    for _ in 0..6 {
        let e = authenticate(&id, "dan@example.com", &bad, &ctx())
            .await
            .unwrap_err();
        assert!(matches!(e, IdentityError::InvalidCredentials), "{e:?}");
        clock.advance(Duration::seconds(601));
    }
    authenticate(&id, "dan@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    db.drop_database().await;
}

async fn disabled_and_admin_locked_users_cannot_sign_in(db: TestDb) {
    let (id, _) = setup(&db).await;
    let u = user(&id, "erin@example.com").await;
    users::set_enabled(&id, u.user_id, false).await.unwrap();
    // Without the password, nothing about the account is revealed.
    let e = authenticate(&id, "erin@example.com", &pw("wrong password!"), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::InvalidCredentials), "{e:?}");
    let e = authenticate(&id, "erin@example.com", &pw(PW), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::AccountDisabled), "{e:?}");
    let e = sessions::create(
        &id,
        NewSession {
            user_id: u.user_id,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IdentityError::AccountDisabled), "{e:?}");
    users::set_enabled(&id, u.user_id, true).await.unwrap();
    users::lock(&id, u.user_id).await.unwrap();
    let e = authenticate(&id, "erin@example.com", &pw(PW), &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(e, IdentityError::AccountLocked { until: None }),
        "{e:?}"
    );
    users::unlock(&id, u.user_id).await.unwrap();
    authenticate(&id, "erin@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    db.drop_database().await;
}

async fn password_change_required_blocks_sessions(db: TestDb) {
    let (id, _) = setup(&db).await;
    let u = user(&id, "fay@example.com").await;
    users::set_password(&id, u.user_id, &pw("a temporary password"), true)
        .await
        .unwrap();
    let e = authenticate(&id, "fay@example.com", &pw("a temporary password"), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::PasswordChangeRequired), "{e:?}");
    let e = sessions::create(
        &id,
        NewSession {
            user_id: u.user_id,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(e, IdentityError::PasswordChangeRequired), "{e:?}");
    // The old password no longer works.
    let e = authenticate(&id, "fay@example.com", &pw(PW), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::InvalidCredentials), "{e:?}");
    users::set_password(&id, u.user_id, &pw("my own new password"), false)
        .await
        .unwrap();
    authenticate(&id, "fay@example.com", &pw("my own new password"), &ctx())
        .await
        .unwrap();
    db.drop_database().await;
}

async fn mfa_and_org_membership_shape_the_outcome(db: TestDb) {
    let (id, _) = setup(&db).await;
    let org = orgs::create(&id, "Umbrella", None).await.unwrap();
    let (member, _) = users::create(
        &id,
        NewUser {
            email: "gil@example.com".into(),
            password: Some(pw(PW)),
            org_id: Some(org.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let outsider = user(&id, "hal@example.com").await;
    let in_org = LoginContext {
        org_id: Some(org.org_id),
        ..ctx()
    };
    let out = authenticate(&id, "gil@example.com", &pw(PW), &in_org)
        .await
        .unwrap();
    assert!(matches!(out, LoginOutcome::Authenticated { .. }));
    let e = authenticate(&id, "hal@example.com", &pw(PW), &in_org)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::Forbidden { .. }), "{e:?}");

    // An org that turned passwords off refuses them (after the password is checked).
    orgs::set_login_method(&id, org.org_id, "password", false)
        .await
        .unwrap();
    let e = authenticate(&id, "gil@example.com", &pw(PW), &in_org)
        .await
        .unwrap_err();
    assert!(
        matches!(e, IdentityError::LoginMethodNotAllowed { ref method } if method == "password"),
        "{e:?}"
    );
    let e = authenticate(&id, "gil@example.com", &pw("wrong password!"), &in_org)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::InvalidCredentials), "{e:?}");
    // Without the org context the same user signs in.
    authenticate(&id, "gil@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    orgs::set_login_method(&id, org.org_id, "password", true)
        .await
        .unwrap();

    // The org requires MFA: its members must pass a second factor.
    set_org_mfa(&id, org.org_id, true).await;
    let out = authenticate(&id, "gil@example.com", &pw(PW), &in_org)
        .await
        .unwrap();
    assert!(
        matches!(out, LoginOutcome::MfaRequired { ref user } if user.user_id == member.user_id)
    );
    // A user who enrolled MFA needs it everywhere.
    let mut c = id.db.conn().await.unwrap();
    let mut u = store::users::get(&mut c, outsider.user_id)
        .await
        .unwrap()
        .unwrap();
    u.mfa_enabled = true;
    store::users::update(&mut c, &u).await.unwrap();
    drop(c);
    let out = authenticate(&id, "hal@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    assert!(matches!(out, LoginOutcome::MfaRequired { .. }));
    db.drop_database().await;
}

async fn set_org_mfa(id: &Identity, org_id: Uuid, on: bool) {
    lintel::identity::mfa::set_org_mfa_required(id, org_id, on)
        .await
        .unwrap();
}

async fn imported_bcrypt_hashes_verify_and_are_rehashed(db: TestDb) {
    let (id, _) = setup(&db).await;
    let legacy = bcrypt::hash(PW, 4).unwrap();
    let record: ImportRecord = serde_json::from_value(serde_json::json!({
        "email": "Ivy@Example.com",
        "legacy_user_id": "auth0|12345",
        "password_hash": legacy,
        "first_name": "Ivy",
        "email_confirmed": true
    }))
    .unwrap();
    let u = users::import(&id, record.clone()).await.unwrap();
    assert_eq!(u.email, "ivy@example.com");
    assert_eq!(u.legacy_user_id.as_deref(), Some("auth0|12345"));
    assert!(u.has_password && u.email_confirmed);
    // Importing again is a conflict on email.
    let e = users::import(&id, record).await.unwrap_err();
    assert!(
        matches!(e, IdentityError::Conflict { ref field, .. } if field == "email"),
        "{e:?}"
    );
    // A hash Lintel cannot verify is refused, naming the field.
    let bad: ImportRecord = serde_json::from_value(
        serde_json::json!({"email": "x@example.com", "password_hash": "md5:abc"}),
    )
    .unwrap();
    let e = users::import(&id, bad).await.unwrap_err();
    assert!(
        matches!(
            e,
            IdentityError::Invalid {
                field: "password_hash",
                ..
            }
        ),
        "{e:?}"
    );

    let e = authenticate(&id, "ivy@example.com", &pw("not it at all"), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::InvalidCredentials));
    authenticate(&id, "ivy@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    let mut c = id.db.conn().await.unwrap();
    let stored = store::users::password_hash(&mut c, u.user_id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.starts_with("$argon2id$"), "{stored}");
    drop(c);
    // And the new hash still verifies.
    authenticate(&id, "ivy@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    db.drop_database().await;
}

async fn sessions_expire_idle_and_revoke(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let org = orgs::create(&id, "Stark", None).await.unwrap();
    let (u, _) = users::create(
        &id,
        NewUser {
            email: "jo@example.com".into(),
            org_id: Some(org.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let new = |org_id| NewSession {
        user_id: u.user_id,
        org_id,
        auth_methods: vec!["pwd".into(), "otp".into()],
        ip: Some("2001:db8::7".parse().unwrap()),
        user_agent: Some("ua".into()),
        with_refresh_token: false,
        impersonator_id: None,
    };
    let s = sessions::create(&id, new(None)).await.unwrap().session;
    assert_eq!(s.auth_methods.0, vec!["pwd", "otp"]);
    assert_eq!(s.auth_time, clock.now());
    let bad = NewSession {
        auth_methods: vec!["magic".into()],
        ..new(None)
    };
    assert!(matches!(
        sessions::create(&id, bad).await,
        Err(IdentityError::Invalid { .. })
    ));

    // Idle timeout (1800 s by default): use keeps it alive, silence ends it.
    clock.advance(Duration::seconds(1700));
    sessions::validate(&id, s.session_id).await.unwrap();
    clock.advance(Duration::seconds(1700));
    sessions::validate(&id, s.session_id).await.unwrap();
    clock.advance(Duration::seconds(1800));
    let e = sessions::validate(&id, s.session_id).await.unwrap_err();
    assert!(matches!(e, IdentityError::SessionExpired), "{e:?}");

    // Absolute lifetime (36000 s) ends even a busy session.
    let busy = sessions::create(&id, new(None)).await.unwrap().session;
    for _ in 0..23 {
        clock.advance(Duration::seconds(1500));
        sessions::validate(&id, busy.session_id).await.unwrap();
    }
    // 34 500 s in; the next use, at 36 000 s, is past the lifetime.
    clock.advance(Duration::seconds(1500));
    assert!(matches!(
        sessions::validate(&id, busy.session_id).await,
        Err(IdentityError::SessionExpired)
    ));

    // Revocation: one, all of a user's but one, all of an org's.
    let a = sessions::create(&id, new(None)).await.unwrap().session;
    let b = sessions::create(&id, new(None)).await.unwrap().session;
    let c = sessions::create(&id, new(Some(org.org_id)))
        .await
        .unwrap()
        .session;
    sessions::revoke(&id, u.user_id, a.session_id)
        .await
        .unwrap();
    assert!(matches!(
        sessions::validate(&id, a.session_id).await,
        Err(IdentityError::SessionRevoked)
    ));
    // Someone else's session id is not found.
    let other = user(&id, "kim@example.com").await;
    assert!(matches!(
        sessions::revoke(&id, other.user_id, b.session_id).await,
        Err(IdentityError::NotFound { .. })
    ));
    assert_eq!(
        sessions::list_active(&id, u.user_id).await.unwrap().len(),
        2
    );
    assert_eq!(
        sessions::revoke_all_for_org(&id, org.org_id).await.unwrap(),
        1
    );
    assert!(matches!(
        sessions::validate(&id, c.session_id).await,
        Err(IdentityError::SessionRevoked)
    ));
    sessions::validate(&id, b.session_id).await.unwrap();
    let d = sessions::create(&id, new(None)).await.unwrap().session;
    assert_eq!(
        sessions::revoke_all_for_user(&id, u.user_id, Some(d.session_id))
            .await
            .unwrap(),
        3 // b, and the two expired ones that were never revoked
    );
    sessions::validate(&id, d.session_id).await.unwrap();
    // A session for an org the user is not a member of is refused.
    let other_org = orgs::create(&id, "Wayne", None).await.unwrap();
    assert!(matches!(
        sessions::create(&id, new(Some(other_org.org_id))).await,
        Err(IdentityError::NotFound { what: "membership" })
    ));
    db.drop_database().await;
}

async fn refresh_tokens_rotate_once(db: TestDb) {
    let (id, _) = setup(&db).await;
    let u = user(&id, "lee@example.com").await;
    let issued = sessions::create(
        &id,
        NewSession {
            user_id: u.user_id,
            auth_methods: vec!["pwd".into()],
            with_refresh_token: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let token = issued.refresh_token.unwrap().expose().clone();
    // Only the hash is stored.
    assert_ne!(
        issued.session.refresh_token.as_deref(),
        Some(token.as_str())
    );
    assert_eq!(
        issued.session.refresh_token.as_deref(),
        Some(sessions::hash_token(&token).as_str())
    );

    // Two concurrent rotations of one token: exactly one wins.
    let (r1, r2) = tokio::join!(
        sessions::rotate_refresh_token(&id, &token),
        sessions::rotate_refresh_token(&id, &token)
    );
    let winners: Vec<_> = [r1, r2].into_iter().filter_map(Result::ok).collect();
    assert_eq!(winners.len(), 1);
    let next = winners[0].refresh_token.as_ref().unwrap().expose().clone();
    assert!(matches!(
        sessions::rotate_refresh_token(&id, &token).await,
        Err(IdentityError::TokenInvalid)
    ));
    assert!(matches!(
        sessions::rotate_refresh_token(&id, "forged").await,
        Err(IdentityError::TokenInvalid)
    ));
    // Revoking the session kills its refresh token.
    sessions::revoke(&id, u.user_id, issued.session.session_id)
        .await
        .unwrap();
    assert!(matches!(
        sessions::rotate_refresh_token(&id, &next).await,
        Err(IdentityError::SessionRevoked)
    ));
    db.drop_database().await;
}

async fn activity_is_written_at_most_once_a_minute(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let u = user(&id, "max@example.com").await;
    let s = sessions::create(
        &id,
        NewSession {
            user_id: u.user_id,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .session;
    let read = |id: Identity| async move {
        let mut c = id.db.conn().await.unwrap();
        let user = store::users::get(&mut c, u.user_id).await.unwrap().unwrap();
        let sess = store::sessions::get(&mut c, s.session_id)
            .await
            .unwrap()
            .unwrap();
        (user.last_active_at, sess.last_seen_at)
    };
    let t0 = clock.now();
    assert_eq!(read(id.clone()).await, (Some(t0.timestamp()), t0));
    clock.advance(Duration::seconds(30));
    sessions::validate(&id, s.session_id).await.unwrap();
    assert_eq!(
        read(id.clone()).await,
        (Some(t0.timestamp()), t0),
        "written within the minute"
    );
    clock.advance(Duration::seconds(31));
    sessions::validate(&id, s.session_id).await.unwrap();
    let t1 = clock.now();
    assert_eq!(read(id.clone()).await, (Some(t1.timestamp()), t1));
    db.drop_database().await;
}

async fn user_administration(db: TestDb) {
    let (id, _) = setup(&db).await;
    let u = user(&id, "nia@example.com").await;
    let v = user(&id, "oz@example.com").await;
    let mut c = id.db.conn().await.unwrap();
    let mut confirmed = store::users::get(&mut c, u.user_id).await.unwrap().unwrap();
    confirmed.email_confirmed = true;
    store::users::update(&mut c, &confirmed).await.unwrap();
    drop(c);

    let patched = users::update(
        &id,
        u.user_id,
        UserPatch {
            email: Some("Nia.New@Example.com".into()),
            username: Some(Some("nia".into())),
            first_name: Some(Some("Nia".into())),
            properties: Some(serde_json::json!({"team": "blue"})),
            can_create_orgs: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(patched.email, "nia.new@example.com");
    assert!(
        !patched.email_confirmed,
        "a new email must be confirmed again"
    );
    assert_eq!(users::get(&id, u.user_id).await.unwrap(), patched);
    assert_eq!(
        users::find_by_email(&id, "NIA.NEW@example.com")
            .await
            .unwrap()
            .user_id,
        u.user_id
    );

    let e = users::update(
        &id,
        v.user_id,
        UserPatch {
            email: Some("nia.new@example.com".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, IdentityError::Conflict { ref field, .. } if field == "email"),
        "{e:?}"
    );
    let e = users::update(
        &id,
        v.user_id,
        UserPatch {
            username: Some(Some("NIA".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(e, IdentityError::Conflict { ref field, .. } if field == "username"),
        "{e:?}"
    );
    for bad in [
        UserPatch {
            username: Some(Some("has space".into())),
            ..Default::default()
        },
        UserPatch {
            picture_url: Some(Some("javascript:alert(1)".into())),
            ..Default::default()
        },
        UserPatch {
            properties: Some(serde_json::json!([1, 2])),
            ..Default::default()
        },
        UserPatch {
            email: Some("nope".into()),
            ..Default::default()
        },
    ] {
        let e = users::update(&id, v.user_id, bad).await.unwrap_err();
        assert!(matches!(e, IdentityError::Invalid { .. }), "{e:?}");
    }
    // Nothing half-applied by the refused patches.
    assert_eq!(users::get(&id, v.user_id).await.unwrap(), v);

    // Disabling ends sessions; deleting removes the user.
    let s = sessions::create(
        &id,
        NewSession {
            user_id: v.user_id,
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .session;
    users::set_enabled(&id, v.user_id, false).await.unwrap();
    assert!(matches!(
        sessions::validate(&id, s.session_id).await,
        Err(IdentityError::SessionRevoked)
    ));
    users::delete(&id, v.user_id).await.unwrap();
    assert!(matches!(
        users::get(&id, v.user_id).await,
        Err(IdentityError::NotFound { .. })
    ));
    assert!(matches!(
        users::delete(&id, v.user_id).await,
        Err(IdentityError::NotFound { .. })
    ));
    assert!(matches!(
        users::get(&id, Uuid::now_v7()).await,
        Err(IdentityError::NotFound { .. })
    ));
    db.drop_database().await;
}

async fn second_factor_completes_login_and_counts_failures(db: TestDb) {
    use lintel::identity::{login::second_factor, mfa};
    let (id, clock) = setup(&db).await;
    let u = user(&id, "quin@example.com").await;
    let enrol = mfa::begin_totp_enrolment(&id, u.user_id).await.unwrap();
    let mut c = id.db.conn().await.unwrap();
    let device = store::mfa::get_device(&mut c, enrol.device_id)
        .await
        .unwrap()
        .unwrap();
    drop(c);
    let seed = id.data_key.decrypt(&device.secret).unwrap();
    let code_now =
        |clock: &FixedClock| mfa::totp_code(&seed, mfa::totp_step(clock.now()), 6).unwrap();
    let recovery = mfa::confirm_totp(&id, u.user_id, enrol.device_id, &code_now(&clock))
        .await
        .unwrap();
    clock.advance(Duration::seconds(30));

    let out = authenticate(&id, "quin@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    assert!(matches!(out, LoginOutcome::MfaRequired { .. }));
    let amr = second_factor(&id, u.user_id, &code_now(&clock), &ctx())
        .await
        .unwrap();
    assert_eq!(amr, vec!["pwd", "otp", "mfa"]);
    // The same code again is a replay.
    let e = second_factor(&id, u.user_id, &code_now(&clock), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::MfaCodeReplayed), "{e:?}");
    // Wrong codes count towards the lockout (3 in this setup; the replay was the first).
    let e = second_factor(&id, u.user_id, "000000", &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::MfaCodeInvalid), "{e:?}");
    let e = second_factor(&id, u.user_id, "not-a-recovery-code", &ctx())
        .await
        .unwrap_err();
    assert!(
        matches!(e, IdentityError::AccountLocked { until: Some(_) }),
        "{e:?}"
    );
    clock.advance(Duration::seconds(30));
    let e = second_factor(&id, u.user_id, &code_now(&clock), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::AccountLocked { .. }), "{e:?}");
    clock.advance(Duration::seconds(900));
    // A recovery code also completes the login, once.
    let amr = second_factor(&id, u.user_id, &recovery.0[0].to_uppercase(), &ctx())
        .await
        .unwrap();
    assert_eq!(amr, vec!["pwd", "mfa"], "a recovery code is not an OTP");
    assert!(
        second_factor(&id, u.user_id, &recovery.0[0], &ctx())
            .await
            .is_err()
    );
    db.drop_database().await;
}

on_both_databases!(
    concurrent_guesses_cannot_outrun_the_lockout,
    unknown_emails_lock_like_real_ones,
    mfa_comes_before_a_forced_password_change,
    a_refresh_token_cannot_revive_an_idle_session,
    an_unknown_org_context_is_refused_and_recorded_without_it,
);

async fn concurrent_guesses_cannot_outrun_the_lockout(db: TestDb) {
    let (id, _) = setup(&db).await;
    user(&id, "rio@example.com").await;
    let bad = pw("a wrong guess!!");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (id, bad) = (id.clone(), bad.clone());
            tokio::spawn(async move { authenticate(&id, "rio@example.com", &bad, &ctx()).await })
        })
        .collect();
    let mut invalid = 0;
    let mut locked = 0;
    for t in tasks {
        match t.await.unwrap() {
            Err(IdentityError::InvalidCredentials) => invalid += 1,
            Err(IdentityError::AccountLocked { until: Some(_) }) => locked += 1,
            other => panic!("{other:?}"),
        }
    }
    // Attempts are counted before they are checked: only the first two (of max 3) are
    // answered as wrong; the third locks, the rest are refused unchecked.
    assert_eq!((invalid, locked), (2, 18));
    let e = authenticate(&id, "rio@example.com", &pw(PW), &ctx())
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::AccountLocked { .. }), "{e:?}");
    db.drop_database().await;
}

async fn unknown_emails_lock_like_real_ones(db: TestDb) {
    let (id, clock) = setup(&db).await;
    user(&id, "sal@example.com").await;
    let bad = pw("a wrong guess!!");
    for email in ["sal@example.com", "nobody-here@example.com"] {
        let before = id.passwords.verifications();
        let mut answers = Vec::new();
        for _ in 0..4 {
            let e = authenticate(&id, email, &bad, &ctx()).await.unwrap_err();
            answers.push(match e {
                IdentityError::InvalidCredentials => "invalid",
                IdentityError::AccountLocked { until: Some(t) } => {
                    assert_eq!(t, clock.now() + Duration::seconds(900));
                    "locked"
                }
                other => panic!("{other:?}"),
            });
        }
        assert_eq!(
            answers,
            ["invalid", "invalid", "locked", "locked"],
            "{email}"
        );
        // One (real or dummy) verification per attempt either way.
        assert_eq!(id.passwords.verifications() - before, 4, "{email}");
    }
    db.drop_database().await;
}

async fn mfa_comes_before_a_forced_password_change(db: TestDb) {
    let (id, _) = setup(&db).await;
    let u = user(&id, "tia@example.com").await;
    let mut c = id.db.conn().await.unwrap();
    let mut row = store::users::get(&mut c, u.user_id).await.unwrap().unwrap();
    row.mfa_enabled = true;
    row.update_password_required = true;
    store::users::update(&mut c, &row).await.unwrap();
    drop(c);
    let out = authenticate(&id, "tia@example.com", &pw(PW), &ctx())
        .await
        .unwrap();
    assert!(
        matches!(out, LoginOutcome::MfaRequired { .. }),
        "the password alone must not reach the password change"
    );
    db.drop_database().await;
}

async fn a_refresh_token_cannot_revive_an_idle_session(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let u = user(&id, "uma@example.com").await;
    let issued = sessions::create(
        &id,
        NewSession {
            user_id: u.user_id,
            with_refresh_token: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let token = issued.refresh_token.unwrap().expose().clone();
    clock.advance(Duration::hours(4));
    let e = sessions::rotate_refresh_token(&id, &token)
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::SessionExpired), "{e:?}");
    assert!(matches!(
        sessions::validate(&id, issued.session.session_id).await,
        Err(IdentityError::SessionExpired)
    ));
    db.drop_database().await;
}

async fn an_unknown_org_context_is_refused_and_recorded_without_it(db: TestDb) {
    let (id, _) = setup(&db).await;
    user(&id, "val@example.com").await;
    let ghost = LoginContext {
        org_id: Some(Uuid::now_v7()),
        ..ctx()
    };
    let e = authenticate(&id, "val@example.com", &pw(PW), &ghost)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IdentityError::NotFound {
                what: "organization"
            }
        ),
        "{e:?}"
    );
    db.drop_database().await;
}

on_both_databases!(
    sessions_need_the_second_factor_mfa_requires,
    concurrent_admin_changes_are_not_lost,
    removing_a_member_ends_their_org_sessions,
);

async fn sessions_need_the_second_factor_mfa_requires(db: TestDb) {
    let (id, _) = setup(&db).await;
    let org = orgs::create(&id, "Cyberdyne", None).await.unwrap();
    let (u, _) = users::create(
        &id,
        NewUser {
            email: "wes@example.com".into(),
            org_id: Some(org.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let new = |org_id, amr: &[&str]| NewSession {
        user_id: u.user_id,
        org_id,
        auth_methods: amr.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    // No MFA anywhere: a password session is fine.
    sessions::create(&id, new(Some(org.org_id), &["pwd"]))
        .await
        .unwrap();
    // The org requires MFA: only with a second factor, and only for that org.
    lintel::identity::mfa::set_org_mfa_required(&id, org.org_id, true)
        .await
        .unwrap();
    let e = sessions::create(&id, new(Some(org.org_id), &["pwd"]))
        .await
        .unwrap_err();
    assert!(matches!(e, IdentityError::SecondFactorRequired), "{e:?}");
    sessions::create(&id, new(Some(org.org_id), &["pwd", "otp", "mfa"]))
        .await
        .unwrap();
    sessions::create(&id, new(None, &["pwd"])).await.unwrap();
    db.drop_database().await;
}

/// Read-modify-write changes to one user at the same time: none is lost (PostgreSQL locks
/// the row; SQLite serializes write transactions).
async fn concurrent_admin_changes_are_not_lost(db: TestDb) {
    let (id, _) = setup(&db).await;
    let u = user(&id, "xan@example.com").await;
    for round in 0..8 {
        let name = format!("Round {round}");
        let (a, b) = tokio::join!(
            users::lock(&id, u.user_id),
            users::update(
                &id,
                u.user_id,
                UserPatch {
                    first_name: Some(Some(name.clone())),
                    ..Default::default()
                }
            )
        );
        a.unwrap();
        b.unwrap();
        let now = users::get(&id, u.user_id).await.unwrap();
        assert!(now.locked, "round {round}: the lock was overwritten");
        assert_eq!(
            now.first_name.as_deref(),
            Some(name.as_str()),
            "round {round}"
        );
        users::unlock(&id, u.user_id).await.unwrap();
    }
    db.drop_database().await;
}

async fn removing_a_member_ends_their_org_sessions(db: TestDb) {
    let (id, _) = setup(&db).await;
    let org = orgs::create(&id, "Tyrell", None).await.unwrap();
    let (u, _) = users::create(
        &id,
        NewUser {
            email: "yul@example.com".into(),
            org_id: Some(org.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let in_org = sessions::create(
        &id,
        NewSession {
            user_id: u.user_id,
            org_id: Some(org.org_id),
            auth_methods: vec!["pwd".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .session;
    let elsewhere = sessions::create(
        &id,
        NewSession {
            user_id: u.user_id,
            auth_methods: vec!["pwd".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .session;
    lintel::identity::memberships::remove(&id, org.org_id, u.user_id)
        .await
        .unwrap();
    assert!(matches!(
        sessions::validate(&id, in_org.session_id).await,
        Err(IdentityError::SessionRevoked)
    ));
    sessions::validate(&id, elsewhere.session_id).await.unwrap();
    db.drop_database().await;
}
