//! The store contract: the same suite, unchanged, against SQLite and PostgreSQL.
use crate::helpers::TestDb;
use crate::on_both_databases;
use chrono::{DateTime, Duration, TimeZone, Utc};
use lintel::store::memberships::Membership;
use lintel::store::orgs::Org;
use lintel::store::sessions::Session;
use lintel::store::signing_keys::SigningKey;
use lintel::store::users::User;
use lintel::store::{
    self, Db, DbOptions, Inet, Json, StoreError, TextList, memberships, orgs, sessions, users,
};
use serde_json::json;
use uuid::Uuid;

on_both_databases!(
    orgs_round_trip_and_unique_slug,
    users_round_trip_case_insensitive_email_and_passwords,
    memberships_text_lists_and_foreign_keys,
    sessions_inet_expiry_and_revocation,
    transactions_commit_or_roll_back,
    deleting_a_user_cascades,
    signing_keys_are_recorded_once,
);

async fn open(db: &TestDb) -> Db {
    let store = Db::connect(&db.url, &DbOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    store
}

async fn done(store: Db, db: TestDb) {
    store.close().await;
    db.drop_database().await;
}

/// A timestamp with microseconds, to prove sub-second precision survives both backends.
fn at(secs: i64, micros: u32) -> DateTime<Utc> {
    Utc.timestamp_opt(1_790_000_000 + secs, micros * 1000)
        .unwrap()
}

fn org(slug: &str) -> Org {
    Org {
        org_id: Uuid::now_v7(),
        org_name: format!("Org {slug}"),
        url_safe_org_name: slug.into(),
        org_metadata: Json(json!({"plan": "enterprise", "seats": 50, "tags": ["a", "b"]})),
        created_at: at(0, 123_456),
        org_role_structure: "multi_role".into(),
        mfa_required: true,
    }
}

fn user(email: &str) -> User {
    User {
        user_id: Uuid::now_v7(),
        legacy_user_id: Some("legacy-1".into()),
        email: email.into(),
        email_confirmed: true,
        username: None,
        first_name: Some("Ada".into()),
        last_name: Some("Lovelace".into()),
        picture_url: None,
        properties: Json(json!({"department": "R&D", "nested": {"k": [1, 2.5, null]}})),
        has_password: false,
        update_password_required: true,
        locked: false,
        enabled: true,
        mfa_enabled: false,
        can_create_orgs: true,
        created_at: 1_790_000_000,
        last_active_at: Some(1_790_000_123),
    }
}

fn membership(u: &User, o: &Org) -> Membership {
    Membership {
        user_id: u.user_id,
        org_id: o.org_id,
        user_role: "admin".into(),
        url_safe_org_name: o.url_safe_org_name.clone(),
        org_role_structure: "multi_role".into(),
        inherited_user_roles_plus_current_role: TextList(vec!["admin".into(), "member".into()]),
        user_permissions: TextList(vec![
            "users:read".into(),
            "with, comma".into(),
            "with \"quotes\" and {braces}".into(),
            "ünïcödé".into(),
        ]),
        additional_roles: TextList::default(),
    }
}

async fn orgs_round_trip_and_unique_slug(db: TestDb) {
    let store = open(&db).await;
    let mut c = store.conn().await.unwrap();
    let a = org("acme");
    orgs::insert(&mut c, &a).await.unwrap();
    assert_eq!(orgs::get(&mut c, a.org_id).await.unwrap(), Some(a.clone()));
    assert_eq!(
        orgs::get_by_slug(&mut c, "acme").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(orgs::get(&mut c, Uuid::now_v7()).await.unwrap(), None);

    let err = orgs::insert(&mut c, &org("acme")).await.unwrap_err();
    assert!(matches!(err, StoreError::Conflict { .. }), "{err:?}");
    assert_eq!(err.conflict_field(), Some("url_safe_org_name"));

    let b = org("beta");
    let z = org("zeta");
    orgs::insert(&mut c, &b).await.unwrap();
    orgs::insert(&mut c, &z).await.unwrap();
    let page1 = orgs::list(&mut c, None, 2).await.unwrap();
    assert_eq!(
        page1.iter().map(|o| o.org_id).collect::<Vec<_>>(),
        vec![a.org_id, b.org_id]
    );
    let page2 = orgs::list(&mut c, Some(b.org_id), 2).await.unwrap();
    assert_eq!(
        page2.iter().map(|o| o.org_id).collect::<Vec<_>>(),
        vec![z.org_id]
    );

    assert!(orgs::delete(&mut c, z.org_id).await.unwrap());
    assert!(!orgs::delete(&mut c, z.org_id).await.unwrap());
    drop(c);
    done(store, db).await;
}

async fn users_round_trip_case_insensitive_email_and_passwords(db: TestDb) {
    let store = open(&db).await;
    let mut c = store.conn().await.unwrap();
    let u = user("ada@example.com");
    users::insert(&mut c, &u).await.unwrap();
    assert_eq!(
        users::get(&mut c, u.user_id).await.unwrap(),
        Some(u.clone())
    );
    assert_eq!(
        users::find_by_email(&mut c, "ADA@Example.COM")
            .await
            .unwrap(),
        Some(u.clone())
    );

    let err = users::insert(&mut c, &user("Ada@EXAMPLE.com"))
        .await
        .unwrap_err();
    assert_eq!(err.conflict_field(), Some("email"), "{err:?}");

    let mut named = user("grace@example.com");
    named.username = Some("Grace".into());
    users::insert(&mut c, &named).await.unwrap();
    let mut clash = user("other@example.com");
    clash.username = Some("grace".into());
    let err = users::insert(&mut c, &clash).await.unwrap_err();
    assert_eq!(err.conflict_field(), Some("username"), "{err:?}");

    assert_eq!(users::password_hash(&mut c, u.user_id).await.unwrap(), None);
    users::set_password_hash(&mut c, u.user_id, "$argon2id$v=19$first", at(1, 0))
        .await
        .unwrap();
    users::set_password_hash(&mut c, u.user_id, "$argon2id$v=19$second", at(2, 0))
        .await
        .unwrap();
    assert_eq!(
        users::password_hash(&mut c, u.user_id)
            .await
            .unwrap()
            .as_deref(),
        Some("$argon2id$v=19$second")
    );
    assert!(
        users::get(&mut c, u.user_id)
            .await
            .unwrap()
            .unwrap()
            .has_password
    );

    let all = users::list(&mut c, None, 10).await.unwrap();
    assert_eq!(all.len(), 2);
    let after = users::list(&mut c, Some(all[0].user_id), 10).await.unwrap();
    assert_eq!(after.len(), 1);
    drop(c);
    done(store, db).await;
}

async fn memberships_text_lists_and_foreign_keys(db: TestDb) {
    let store = open(&db).await;
    let mut c = store.conn().await.unwrap();
    let (u, o) = (user("m@example.com"), org("m-org"));
    users::insert(&mut c, &u).await.unwrap();
    orgs::insert(&mut c, &o).await.unwrap();
    let m = membership(&u, &o);
    memberships::insert(&mut c, &m).await.unwrap();
    assert_eq!(
        memberships::get(&mut c, u.user_id, o.org_id).await.unwrap(),
        Some(m.clone())
    );
    assert_eq!(
        memberships::list_for_user(&mut c, u.user_id).await.unwrap(),
        vec![m.clone()]
    );
    assert_eq!(
        memberships::list_for_org(&mut c, o.org_id, None, 10)
            .await
            .unwrap(),
        vec![m.clone()]
    );
    assert!(
        memberships::list_for_org(&mut c, o.org_id, Some(u.user_id), 10)
            .await
            .unwrap()
            .is_empty()
    );

    let err = memberships::insert(&mut c, &m).await.unwrap_err();
    assert_eq!(err.conflict_field(), Some("membership"), "{err:?}");

    let mut orphan = m.clone();
    orphan.org_id = Uuid::now_v7();
    let err = memberships::insert(&mut c, &orphan).await.unwrap_err();
    assert!(matches!(err, StoreError::ForeignKey), "{err:?}");

    let mut bad = m.clone();
    bad.user_id = user("n@example.com").user_id;
    bad.org_role_structure = "anarchy".into();
    let err = memberships::insert(&mut c, &bad).await.unwrap_err();
    assert!(
        matches!(err, StoreError::ForeignKey | StoreError::Check),
        "{err:?}"
    );

    assert!(
        memberships::delete(&mut c, u.user_id, o.org_id)
            .await
            .unwrap()
    );
    assert!(
        memberships::get(&mut c, u.user_id, o.org_id)
            .await
            .unwrap()
            .is_none()
    );
    drop(c);
    done(store, db).await;
}

async fn sessions_inet_expiry_and_revocation(db: TestDb) {
    let store = open(&db).await;
    let mut c = store.conn().await.unwrap();
    let u = user("s@example.com");
    users::insert(&mut c, &u).await.unwrap();
    let mk = |ip: Option<&str>, created: DateTime<Utc>, ttl: i64, hash: &str| Session {
        session_id: Uuid::now_v7(),
        user_id: u.user_id,
        refresh_token: Some(hash.into()),
        created_at: created,
        expires_at: created + Duration::seconds(ttl),
        revoked: false,
        ip_address: ip.map(|s| Inet(s.parse().unwrap())),
        user_agent: Some("Mozilla/5.0 (X11; Linux x86_64)".into()),
        org_id: None,
        auth_methods: TextList(vec!["pwd".into(), "otp".into()]),
        auth_time: created,
        last_seen_at: created + Duration::seconds(5),
        impersonator_id: None,
    };
    let v4 = mk(Some("203.0.113.7"), at(0, 1), 3600, "hash-v4");
    let v6 = mk(Some("2001:db8::1"), at(10, 999_999), 3600, "hash-v6");
    let old = mk(None, at(-7200, 0), 60, "hash-old");
    for s in [&v4, &v6, &old] {
        sessions::insert(&mut c, s).await.unwrap();
    }
    assert_eq!(
        sessions::get(&mut c, v4.session_id).await.unwrap(),
        Some(v4.clone())
    );
    assert_eq!(
        sessions::get(&mut c, v6.session_id).await.unwrap(),
        Some(v6.clone())
    );
    assert_eq!(
        sessions::find_by_refresh_hash(&mut c, "hash-v6")
            .await
            .unwrap(),
        Some(v6.clone())
    );
    assert_eq!(
        sessions::find_by_refresh_hash(&mut c, "hash-nope")
            .await
            .unwrap(),
        None
    );

    let err = sessions::insert(&mut c, &mk(None, at(0, 0), 1, "hash-v4"))
        .await
        .unwrap_err();
    assert_eq!(err.conflict_field(), Some("refresh_token"));

    // Active at at(20): both fresh ones, newest first; the expired one is excluded.
    let active = sessions::list_active_for_user(&mut c, u.user_id, at(20, 0))
        .await
        .unwrap();
    assert_eq!(
        active.iter().map(|s| s.session_id).collect::<Vec<_>>(),
        vec![v6.session_id, v4.session_id]
    );
    // Precision: one microsecond past v6's expiry, only v4... no: v4 expires earlier.
    let later = sessions::list_active_for_user(&mut c, u.user_id, v4.expires_at)
        .await
        .unwrap();
    assert_eq!(
        later.iter().map(|s| s.session_id).collect::<Vec<_>>(),
        vec![v6.session_id]
    );

    assert!(sessions::revoke(&mut c, v4.session_id).await.unwrap());
    assert!(!sessions::revoke(&mut c, v4.session_id).await.unwrap());
    let n = sessions::revoke_all_for_user(&mut c, u.user_id, Some(v6.session_id))
        .await
        .unwrap();
    assert_eq!(n, 1); // only `old` was still unrevoked besides the kept one
    assert!(
        !sessions::get(&mut c, v6.session_id)
            .await
            .unwrap()
            .unwrap()
            .revoked
    );
    assert_eq!(
        sessions::revoke_all_for_user(&mut c, u.user_id, None)
            .await
            .unwrap(),
        1
    );
    drop(c);
    done(store, db).await;
}

async fn transactions_commit_or_roll_back(db: TestDb) {
    let store = open(&db).await;
    let (kept, dropped, failed) = (org("kept"), org("dropped"), org("failed"));
    let mut tx = store.begin().await.unwrap();
    orgs::insert(&mut tx, &kept).await.unwrap();
    tx.commit().await.unwrap();

    let mut tx = store.begin().await.unwrap();
    orgs::insert(&mut tx, &dropped).await.unwrap();
    assert!(orgs::get(&mut tx, dropped.org_id).await.unwrap().is_some());
    drop(tx);

    // A failure mid-transaction leaves nothing behind.
    let mut tx = store.begin().await.unwrap();
    orgs::insert(&mut tx, &failed).await.unwrap();
    assert!(orgs::insert(&mut tx, &kept).await.is_err());
    drop(tx);

    let mut c = store.conn().await.unwrap();
    assert!(orgs::get(&mut c, kept.org_id).await.unwrap().is_some());
    assert!(orgs::get(&mut c, dropped.org_id).await.unwrap().is_none());
    assert!(orgs::get(&mut c, failed.org_id).await.unwrap().is_none());
    drop(c);
    done(store, db).await;
}

async fn deleting_a_user_cascades(db: TestDb) {
    let store = open(&db).await;
    let mut c = store.conn().await.unwrap();
    let (u, o) = (user("gone@example.com"), org("stays"));
    users::insert(&mut c, &u).await.unwrap();
    orgs::insert(&mut c, &o).await.unwrap();
    memberships::insert(&mut c, &membership(&u, &o))
        .await
        .unwrap();
    let s = Session {
        session_id: Uuid::now_v7(),
        user_id: u.user_id,
        refresh_token: None,
        created_at: at(0, 0),
        expires_at: at(60, 0),
        revoked: false,
        ip_address: None,
        user_agent: None,
        org_id: Some(o.org_id),
        auth_methods: TextList::default(),
        auth_time: at(0, 0),
        last_seen_at: at(0, 0),
        impersonator_id: None,
    };
    sessions::insert(&mut c, &s).await.unwrap();
    users::set_password_hash(&mut c, u.user_id, "$argon2id$x", at(0, 0))
        .await
        .unwrap();

    assert!(users::delete(&mut c, u.user_id).await.unwrap());
    assert!(
        memberships::get(&mut c, u.user_id, o.org_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(sessions::get(&mut c, s.session_id).await.unwrap().is_none());
    assert!(
        users::password_hash(&mut c, u.user_id)
            .await
            .unwrap()
            .is_none()
    );
    assert!(orgs::get(&mut c, o.org_id).await.unwrap().is_some());
    drop(c);
    done(store, db).await;
}

async fn signing_keys_are_recorded_once(db: TestDb) {
    let store = open(&db).await;
    let mut c = store.conn().await.unwrap();
    let k = SigningKey {
        kid: "kid-1".into(),
        alg: "ES256".into(),
        public_jwk: Json(json!({"kty": "EC", "crv": "P-256", "x": "x", "y": "y", "kid": "kid-1"})),
        created_at: at(0, 5),
        active_from: at(60, 0),
        retired_at: None,
        published_until: None,
    };
    assert!(
        store::signing_keys::insert_if_absent(&mut c, &k)
            .await
            .unwrap()
    );
    assert!(
        !store::signing_keys::insert_if_absent(&mut c, &k)
            .await
            .unwrap()
    );
    assert_eq!(store::signing_keys::list(&mut c).await.unwrap(), vec![k]);
    let mut bad = store::signing_keys::list(&mut c).await.unwrap().remove(0);
    bad.kid = "kid-2".into();
    bad.alg = "HS256".into();
    let err = store::signing_keys::insert_if_absent(&mut c, &bad)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Check), "{err:?}");
    drop(c);
    done(store, db).await;
}
