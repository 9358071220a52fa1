//! MFA over the real store, with a clock the test moves: TOTP enrolment and confirmation,
//! the ±1-step window, replay (sequential and concurrent), recovery codes, org policy,
//! device removal.
use crate::helpers::{TestDb, identity_with_clock};
use crate::on_both_databases;
use chrono::{DateTime, Duration, Utc};
use lintel::clock::FixedClock;
use lintel::identity::mfa::{self, RecoveryCodes};
use lintel::identity::users::NewUser;
use lintel::identity::{Identity, IdentityError, orgs, users};
use lintel::store;
use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use uuid::Uuid;

on_both_databases!(
    enrolment_uri_and_encrypted_secret,
    confirmation_needs_a_valid_code,
    verify_window_and_replay,
    concurrent_double_submit_succeeds_once,
    recovery_codes_are_single_use,
    org_policy,
    removing_devices_and_disabling,
    second_enabled_device_is_a_conflict,
);

/// Mid-step, so ±30 s stays within the neighbouring steps.
fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-01T12:00:15Z")
        .unwrap()
        .with_timezone(&Utc)
}

async fn setup(db: &TestDb) -> (Identity, FixedClock) {
    let clock = FixedClock::new(t0());
    (identity_with_clock(db, clock.clone()).await, clock)
}

async fn finish(id: Identity, db: TestDb) {
    id.db.close().await;
    db.drop_database().await;
}

async fn user(id: &Identity, email: &str) -> Uuid {
    let (u, _) = users::create(
        id,
        NewUser {
            email: email.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    u.user_id
}

fn seed_of(secret_base32: &str) -> Vec<u8> {
    let s = totp_rs::Secret::try_from_base32(secret_base32).unwrap();
    let bytes: &[u8] = s.as_ref();
    bytes.to_vec()
}

/// The 6-digit code an authenticator shows for `step`.
fn code(seed: &[u8], step: u64) -> String {
    mfa::totp_code(seed, step, 6).unwrap()
}

fn step_now(clock: &FixedClock) -> u64 {
    use lintel::clock::Clock;
    mfa::totp_step(clock.now())
}

/// A well-formed code that matches none of the steps around `step`.
fn wrong_code(seed: &[u8], step: u64) -> String {
    let near: HashSet<String> = (step - 1..=step + 1).map(|s| code(seed, s)).collect();
    (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !near.contains(c))
        .unwrap()
}

async fn user_row(id: &Identity, user_id: Uuid) -> store::users::User {
    let mut c = id.db.conn().await.unwrap();
    store::users::get(&mut c, user_id).await.unwrap().unwrap()
}

async fn device_row(id: &Identity, device_id: Uuid) -> Option<store::mfa::Device> {
    let mut c = id.db.conn().await.unwrap();
    store::mfa::get_device(&mut c, device_id).await.unwrap()
}

struct Enrolled {
    device_id: Uuid,
    secret_base32: String,
    seed: Vec<u8>,
    codes: RecoveryCodes,
}

/// Enrols and confirms a TOTP device at the clock's current time.
async fn enrol(id: &Identity, clock: &FixedClock, user_id: Uuid) -> Enrolled {
    let e = mfa::begin_totp_enrolment(id, user_id).await.unwrap();
    let seed = seed_of(&e.secret_base32);
    let codes = mfa::confirm_totp(id, user_id, e.device_id, &code(&seed, step_now(clock)))
        .await
        .unwrap();
    Enrolled {
        device_id: e.device_id,
        secret_base32: e.secret_base32,
        seed,
        codes,
    }
}

async fn enrolment_uri_and_encrypted_secret(db: TestDb) {
    let (mut id, _clock) = setup(&db).await;
    let mut config = (*id.config).clone();
    config.mfa.totp_issuer = "Acme Corp".into();
    id.config = Arc::new(config);
    let ada = user(&id, "Ada+MFA@Example.com").await;

    let e = mfa::begin_totp_enrolment(&id, ada).await.unwrap();
    // 160-bit seed, base32 without padding.
    assert_eq!(e.secret_base32.len(), 32);
    assert_eq!(seed_of(&e.secret_base32).len(), 20);

    let uri = url::Url::parse(&e.otpauth_uri).unwrap();
    assert_eq!(uri.scheme(), "otpauth");
    assert_eq!(uri.host_str(), Some("totp"));
    assert_eq!(uri.path(), "/Acme%20Corp:ada%2Bmfa@example.com");
    let q: BTreeMap<String, String> = uri.query_pairs().into_owned().collect();
    assert_eq!(q["secret"], e.secret_base32);
    assert_eq!(q["issuer"], "Acme Corp");
    assert_eq!(q["algorithm"], "SHA1");
    assert_eq!(q["digits"], "6");
    assert_eq!(q["period"], "30");
    assert!(!e.otpauth_uri.contains('+'), "spaces must be %20");

    // Stored disabled and encrypted: not the base32, not the raw bytes; decrypts to the seed.
    let row = device_row(&id, e.device_id).await.unwrap();
    assert_eq!(row.user_id, ada);
    assert_eq!(row.device_type, "totp");
    assert!(!row.enabled);
    assert_eq!(row.last_used, None);
    assert_ne!(row.secret, e.secret_base32);
    assert!(!row.secret.contains(&e.secret_base32));
    assert!(
        !row.secret
            .to_ascii_uppercase()
            .contains(&e.secret_base32[..16])
    );
    assert_eq!(row.secret.split('.').count(), 5, "compact JWE");
    assert_eq!(
        id.data_key.decrypt(&row.secret).unwrap(),
        seed_of(&e.secret_base32)
    );
    assert!(!user_row(&id, ada).await.mfa_enabled);

    // A new enrolment replaces the unconfirmed one.
    let again = mfa::begin_totp_enrolment(&id, ada).await.unwrap();
    assert_ne!(again.secret_base32, e.secret_base32);
    let devices = mfa::list_devices(&id, ada).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, again.device_id);
    assert!(device_row(&id, e.device_id).await.is_none());
    let old_seed = seed_of(&e.secret_base32);
    let err = mfa::confirm_totp(
        &id,
        ada,
        e.device_id,
        &code(&old_seed, mfa::totp_step(t0())),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, IdentityError::NotFound { .. }), "{err:?}");

    // Unknown user.
    let err = mfa::begin_totp_enrolment(&id, Uuid::now_v7())
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "user" }),
        "{err:?}"
    );
    finish(id, db).await;
}

async fn confirmation_needs_a_valid_code(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let bob = user(&id, "bob@example.com").await;
    let e = mfa::begin_totp_enrolment(&id, ada).await.unwrap();
    let seed = seed_of(&e.secret_base32);
    let s = step_now(&clock);

    for bad in [wrong_code(&seed, s), "12ab56".into(), String::new()] {
        let err = mfa::confirm_totp(&id, ada, e.device_id, &bad)
            .await
            .unwrap_err();
        assert!(matches!(err, IdentityError::MfaCodeInvalid), "{err:?}");
    }
    // A code two steps off is outside the window.
    let err = mfa::confirm_totp(&id, ada, e.device_id, &code(&seed, s + 2))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaCodeInvalid), "{err:?}");
    // Someone else's device does not exist for bob.
    let err = mfa::confirm_totp(&id, bob, e.device_id, &code(&seed, s))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::NotFound { .. }), "{err:?}");
    // Nothing changed.
    assert!(!device_row(&id, e.device_id).await.unwrap().enabled);
    assert!(!user_row(&id, ada).await.mfa_enabled);
    assert_eq!(mfa::remaining_recovery_codes(&id, ada).await.unwrap(), 0);
    let err = mfa::verify_totp(&id, ada, &code(&seed, s))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaNotEnrolled), "{err:?}");

    // The right code enables it, records its step and issues ten distinct codes.
    let codes = mfa::confirm_totp(&id, ada, e.device_id, &code(&seed, s))
        .await
        .unwrap();
    assert_eq!(codes.0.len(), 10);
    assert_eq!(codes.0.iter().collect::<HashSet<_>>().len(), 10);
    for c in &codes.0 {
        let groups: Vec<&str> = c.split('-').collect();
        assert_eq!(groups.len(), 4, "{c}");
        assert!(groups.iter().all(|g| {
            g.len() == 4
                && g.bytes()
                    .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
        }));
    }
    let row = device_row(&id, e.device_id).await.unwrap();
    assert!(row.enabled);
    assert_eq!(row.last_used, mfa::step_start(s));
    assert!(user_row(&id, ada).await.mfa_enabled);
    assert_eq!(mfa::remaining_recovery_codes(&id, ada).await.unwrap(), 10);

    // The confirming code cannot be used again to sign in, nor confirm twice.
    let err = mfa::verify_totp(&id, ada, &code(&seed, s))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaCodeReplayed), "{err:?}");
    let err = mfa::confirm_totp(&id, ada, e.device_id, &code(&seed, s + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::Invalid {
                field: "device_id",
                ..
            }
        ),
        "{err:?}"
    );
    // One enabled authenticator per user: a new enrolment is refused until it is removed.
    let err = mfa::begin_totp_enrolment(&id, ada).await.unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "mfa_device"),
        "{err:?}"
    );
    assert_eq!(mfa::list_devices(&id, ada).await.unwrap().len(), 1);
    finish(id, db).await;
}

async fn verify_window_and_replay(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let e = enrol(&id, &clock, ada).await;
    clock.advance(Duration::minutes(5));
    let s = step_now(&clock);
    let verify = |c: String| {
        let id = id.clone();
        async move { mfa::verify_totp(&id, ada, &c).await }
    };
    let invalid = |r: Result<(), IdentityError>| matches!(r, Err(IdentityError::MfaCodeInvalid));
    let replayed = |r: Result<(), IdentityError>| matches!(r, Err(IdentityError::MfaCodeReplayed));

    // ±60 s: outside the window.
    assert!(invalid(verify(code(&e.seed, s - 2)).await));
    assert!(invalid(verify(code(&e.seed, s + 2)).await));
    assert!(invalid(verify(wrong_code(&e.seed, s)).await));
    assert!(invalid(verify("abcdef".into()).await));
    // −30 s is accepted, once.
    verify(code(&e.seed, s - 1)).await.unwrap();
    assert!(replayed(verify(code(&e.seed, s - 1)).await));
    // Now, with the app's spacing.
    let now_code = code(&e.seed, s);
    verify(format!("{} {}", &now_code[..3], &now_code[3..]))
        .await
        .unwrap();
    assert!(replayed(verify(now_code.clone()).await));
    // An earlier step after a later one was used.
    assert!(replayed(verify(code(&e.seed, s - 1)).await));
    // +30 s.
    verify(code(&e.seed, s + 1)).await.unwrap();
    assert!(replayed(verify(now_code).await));
    let row = device_row(&id, e.device_id).await.unwrap();
    assert_eq!(row.last_used, mfa::step_start(s + 1));

    // The window moves with the clock.
    clock.advance(Duration::seconds(30));
    verify(code(&e.seed, s + 2)).await.unwrap();
    clock.advance(Duration::seconds(30));
    assert!(invalid(verify(code(&e.seed, s)).await));

    // No enabled device: not enrolled (a pending one does not count).
    let bob = user(&id, "bob@example.com").await;
    assert!(matches!(
        verify_as(&id, bob, "123456").await,
        Err(IdentityError::MfaNotEnrolled)
    ));
    mfa::begin_totp_enrolment(&id, bob).await.unwrap();
    assert!(matches!(
        verify_as(&id, bob, "123456").await,
        Err(IdentityError::MfaNotEnrolled)
    ));
    finish(id, db).await;
}

async fn verify_as(id: &Identity, user_id: Uuid, code: &str) -> Result<(), IdentityError> {
    mfa::verify_totp(id, user_id, code).await
}

async fn concurrent_double_submit_succeeds_once(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let e = enrol(&id, &clock, ada).await;
    // Several rounds, since an interleaving that exposes a race is not guaranteed in one.
    for _ in 0..20 {
        clock.advance(Duration::seconds(30));
        let c = code(&e.seed, step_now(&clock));
        let (a, b, c3) = tokio::join!(
            mfa::verify_totp(&id, ada, &c),
            mfa::verify_totp(&id, ada, &c),
            mfa::verify_totp(&id, ada, &c)
        );
        let oks = [&a, &b, &c3].iter().filter(|r| r.is_ok()).count();
        assert_eq!(oks, 1, "{a:?} {b:?} {c3:?}");
        for r in [a, b, c3] {
            assert!(
                matches!(r, Ok(()) | Err(IdentityError::MfaCodeReplayed)),
                "{r:?}"
            );
        }
    }
    // The same for one recovery code.
    let rc = e.codes.0[0].clone();
    let (a, b) = tokio::join!(
        mfa::use_recovery_code(&id, ada, &rc),
        mfa::use_recovery_code(&id, ada, &rc)
    );
    assert_eq!(
        [&a, &b].iter().filter(|r| r.is_ok()).count(),
        1,
        "{a:?} {b:?}"
    );
    assert_eq!(mfa::remaining_recovery_codes(&id, ada).await.unwrap(), 9);
    finish(id, db).await;
}

async fn recovery_codes_are_single_use(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let bob = user(&id, "bob@example.com").await;
    let e = enrol(&id, &clock, ada).await;
    let codes = &e.codes.0;

    // Stored hashed: SHA-256 hex of the canonical form, never the code.
    let rows = {
        let mut c = id.db.conn().await.unwrap();
        store::mfa::list_recovery_codes(&mut c, ada).await.unwrap()
    };
    assert_eq!(rows.len(), 10);
    let stored: HashSet<&str> = rows.iter().map(|r| r.code_hash.as_str()).collect();
    for c in codes {
        let canonical = c.replace('-', "");
        assert!(!stored.contains(c.as_str()) && !stored.contains(canonical.as_str()));
        assert!(stored.contains(mfa::hash_recovery_code(&canonical).as_str()));
    }

    // Another user cannot spend ada's code.
    let err = mfa::use_recovery_code(&id, bob, &codes[0])
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaCodeInvalid), "{err:?}");

    clock.advance(Duration::minutes(1));
    mfa::use_recovery_code(&id, ada, &codes[0]).await.unwrap();
    let err = mfa::use_recovery_code(&id, ada, &codes[0])
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaCodeReplayed), "{err:?}");
    // Case and dashes do not matter.
    mfa::use_recovery_code(&id, ada, &codes[1].replace('-', "").to_uppercase())
        .await
        .unwrap();
    mfa::use_recovery_code(&id, ada, &format!(" {} ", codes[2].replace('-', " ")))
        .await
        .unwrap();
    assert_eq!(mfa::remaining_recovery_codes(&id, ada).await.unwrap(), 7);
    let used_at: Vec<_> = {
        let mut c = id.db.conn().await.unwrap();
        store::mfa::list_recovery_codes(&mut c, ada)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|r| r.used_at)
            .collect()
    };
    assert_eq!(used_at, vec![t0() + Duration::minutes(1); 3]);

    // Unknown and malformed codes.
    for bad in [
        "aaaa-aaaa-aaaa-aaaa",
        "aaaa-aaaa-aaaa",
        "1111-1111-1111-1111",
        "",
    ] {
        let err = mfa::use_recovery_code(&id, ada, bad).await.unwrap_err();
        assert!(
            matches!(err, IdentityError::MfaCodeInvalid),
            "{bad}: {err:?}"
        );
    }

    // Regenerating replaces the whole set.
    let fresh = mfa::regenerate_recovery_codes(&id, ada).await.unwrap();
    assert_eq!(fresh.len(), 10);
    assert_eq!(fresh.iter().collect::<HashSet<_>>().len(), 10);
    assert!(fresh.iter().all(|c| !codes.contains(c)));
    assert_eq!(mfa::remaining_recovery_codes(&id, ada).await.unwrap(), 10);
    let err = mfa::use_recovery_code(&id, ada, &codes[3])
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaCodeInvalid), "{err:?}");
    mfa::use_recovery_code(&id, ada, &fresh[9]).await.unwrap();

    // No MFA, no recovery codes.
    let err = mfa::regenerate_recovery_codes(&id, bob).await.unwrap_err();
    assert!(matches!(err, IdentityError::MfaNotEnrolled), "{err:?}");
    assert_eq!(mfa::remaining_recovery_codes(&id, bob).await.unwrap(), 0);
    finish(id, db).await;
}

async fn org_policy(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let org = orgs::create(&id, "Initech", None).await.unwrap();
    let ada = user(&id, "ada@example.com").await;

    assert!(!mfa::mfa_required(&id, ada, None).await.unwrap());
    assert!(!mfa::mfa_required(&id, ada, Some(org.org_id)).await.unwrap());
    mfa::set_org_mfa_required(&id, org.org_id, true)
        .await
        .unwrap();
    {
        let mut c = id.db.conn().await.unwrap();
        let stored = store::orgs::get(&mut c, org.org_id).await.unwrap().unwrap();
        assert!(stored.mfa_required);
    }
    assert!(mfa::mfa_required(&id, ada, Some(org.org_id)).await.unwrap());
    assert!(!mfa::mfa_required(&id, ada, None).await.unwrap());
    mfa::set_org_mfa_required(&id, org.org_id, false)
        .await
        .unwrap();
    assert!(!mfa::mfa_required(&id, ada, Some(org.org_id)).await.unwrap());

    // A user with MFA on always needs it.
    enrol(&id, &clock, ada).await;
    assert!(mfa::mfa_required(&id, ada, None).await.unwrap());
    assert!(mfa::mfa_required(&id, ada, Some(org.org_id)).await.unwrap());

    let err = mfa::mfa_required(&id, ada, Some(Uuid::now_v7()))
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
    let err = mfa::mfa_required(&id, Uuid::now_v7(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "user" }),
        "{err:?}"
    );
    let err = mfa::set_org_mfa_required(&id, Uuid::now_v7(), true)
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
    finish(id, db).await;
}

async fn removing_devices_and_disabling(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let bob = user(&id, "bob@example.com").await;
    let a = enrol(&id, &clock, ada).await;
    let b = enrol(&id, &clock, bob).await;

    // Listing never carries the secret.
    let devices = mfa::list_devices(&id, ada).await.unwrap();
    assert_eq!(devices.len(), 1);
    assert_eq!(devices[0].device_id, a.device_id);
    assert_eq!(devices[0].device_type, "totp");
    assert!(devices[0].enabled);
    let json = serde_json::to_value(&devices).unwrap();
    assert!(json[0].get("secret").is_none(), "{json}");
    assert_eq!(json[0]["type"], "totp");
    let stored = device_row(&id, a.device_id).await.unwrap().secret;
    let text = json.to_string();
    assert!(!text.contains(&a.secret_base32) && !text.contains(&stored));

    // Someone else's device, or none at all: not found, nothing removed.
    for (user_id, device_id) in [(bob, a.device_id), (ada, Uuid::now_v7())] {
        let err = mfa::remove_device(&id, user_id, device_id)
            .await
            .unwrap_err();
        assert!(
            matches!(err, IdentityError::NotFound { what: "MFA device" }),
            "{err:?}"
        );
    }
    assert!(device_row(&id, a.device_id).await.is_some());
    assert!(user_row(&id, ada).await.mfa_enabled);
    assert_eq!(mfa::remaining_recovery_codes(&id, ada).await.unwrap(), 10);

    // Removing the last enabled device turns MFA off and drops the recovery codes.
    mfa::remove_device(&id, ada, a.device_id).await.unwrap();
    assert!(mfa::list_devices(&id, ada).await.unwrap().is_empty());
    assert!(!user_row(&id, ada).await.mfa_enabled);
    assert_eq!(mfa::remaining_recovery_codes(&id, ada).await.unwrap(), 0);
    clock.advance(Duration::seconds(30));
    let err = mfa::verify_totp(&id, ada, &code(&a.seed, step_now(&clock)))
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaNotEnrolled), "{err:?}");
    let err = mfa::use_recovery_code(&id, ada, &a.codes.0[0])
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaCodeInvalid), "{err:?}");
    // Bob is untouched, and his code still works.
    assert!(user_row(&id, bob).await.mfa_enabled);
    mfa::verify_totp(&id, bob, &code(&b.seed, step_now(&clock)))
        .await
        .unwrap();

    // Removing a pending enrolment leaves MFA off.
    let pending = mfa::begin_totp_enrolment(&id, ada).await.unwrap();
    mfa::remove_device(&id, ada, pending.device_id)
        .await
        .unwrap();
    assert!(!user_row(&id, ada).await.mfa_enabled);
    assert!(mfa::list_devices(&id, ada).await.unwrap().is_empty());

    // disable_mfa removes everything; the user can enrol again afterwards.
    mfa::begin_totp_enrolment(&id, bob).await.unwrap_err(); // still enrolled
    mfa::disable_mfa(&id, bob).await.unwrap();
    assert!(mfa::list_devices(&id, bob).await.unwrap().is_empty());
    assert!(!user_row(&id, bob).await.mfa_enabled);
    assert_eq!(mfa::remaining_recovery_codes(&id, bob).await.unwrap(), 0);
    let err = mfa::use_recovery_code(&id, bob, &b.codes.0[0])
        .await
        .unwrap_err();
    assert!(matches!(err, IdentityError::MfaCodeInvalid), "{err:?}");
    let again = enrol(&id, &clock, bob).await;
    assert_ne!(again.device_id, b.device_id);
    let err = mfa::disable_mfa(&id, Uuid::now_v7()).await.unwrap_err();
    assert!(
        matches!(err, IdentityError::NotFound { what: "user" }),
        "{err:?}"
    );
    finish(id, db).await;
}

/// The database keeps one enabled TOTP device per user even past the rules: a second
/// confirmation is a conflict on `mfa_device`, and the transaction changes nothing.
async fn second_enabled_device_is_a_conflict(db: TestDb) {
    let (id, clock) = setup(&db).await;
    let ada = user(&id, "ada@example.com").await;
    let first = enrol(&id, &clock, ada).await;

    let seed = [7u8; 20];
    let second = store::mfa::Device {
        device_id: Uuid::now_v7(),
        user_id: ada,
        device_type: "totp".into(),
        secret: id.data_key.encrypt(&seed).unwrap(),
        created_at: t0(),
        enabled: false,
        last_used: None,
    };
    {
        let mut c = id.db.conn().await.unwrap();
        store::mfa::insert_device(&mut c, &second).await.unwrap();
    }
    let err = mfa::confirm_totp(&id, ada, second.device_id, &code(&seed, step_now(&clock)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "mfa_device"),
        "{err:?}"
    );
    assert!(!device_row(&id, second.device_id).await.unwrap().enabled);
    assert!(device_row(&id, first.device_id).await.unwrap().enabled);
    // The first set of recovery codes was not replaced.
    assert_eq!(mfa::remaining_recovery_codes(&id, ada).await.unwrap(), 10);
    mfa::use_recovery_code(&id, ada, &first.codes.0[0])
        .await
        .unwrap();
    finish(id, db).await;
}
