//! Identity rules over the real store: conflicts named, no half-applied writes.
use crate::helpers::TestApp;
use crate::on_both_backends;
use lintel::config::Secret;
use lintel::identity::users::NewUser;
use lintel::identity::{IdentityError, orgs, users};
use lintel::store;
use uuid::Uuid;

on_both_backends!(
    organizations_can_be_renamed_described_and_deleted,
    concurrent_read_then_write_transactions_all_succeed,
    duplicate_slug_and_email_are_conflicts,
    failed_creates_leave_nothing_behind
);

async fn duplicate_slug_and_email_are_conflicts(app: TestApp) {
    let id = &app.state.identity;
    let org = orgs::create(id, "Initech Ltd", None).await.unwrap();
    assert_eq!(org.url_safe_org_name, "initech-ltd");
    let err = orgs::create(id, "INITECH  ltd.", None).await.unwrap_err();
    assert!(
        matches!(&err, IdentityError::Conflict { field, .. } if field == "url_safe_org_name"),
        "{err:?}"
    );
    let err = orgs::create(id, "Other", Some("initech-ltd"))
        .await
        .unwrap_err();
    assert!(matches!(&err, IdentityError::Conflict { .. }), "{err:?}");
    let err = orgs::create(id, "Other", Some("Not A Slug"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            IdentityError::Invalid {
                field: "url_safe_org_name",
                ..
            }
        ),
        "{err:?}"
    );

    let new = |email: &str| NewUser {
        email: email.into(),
        ..Default::default()
    };
    users::create(id, new("Peter@Initech.com")).await.unwrap();
    let err = users::create(id, new("peter@INITECH.com"))
        .await
        .unwrap_err();
    match err {
        IdentityError::Conflict { field, message } => {
            assert_eq!(field, "email");
            assert!(message.contains("peter@initech.com"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    app.finish().await;
}

async fn failed_creates_leave_nothing_behind(app: TestApp) {
    let id = &app.state.identity;
    // Unknown org: the user insert is rolled back with the transaction.
    let err = users::create(
        id,
        NewUser {
            email: "lost@example.com".into(),
            org_id: Some(Uuid::now_v7()),
            ..Default::default()
        },
    )
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
    // Password under the policy: refused before anything is written.
    let err = users::create(
        id,
        NewUser {
            email: "weak@example.com".into(),
            password: Some(Secret::new("short".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            err,
            IdentityError::Invalid {
                field: "password",
                ..
            }
        ),
        "{err:?}"
    );

    let mut c = app.db.conn().await.unwrap();
    assert!(
        store::users::find_by_email(&mut c, "lost@example.com")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store::users::find_by_email(&mut c, "weak@example.com")
            .await
            .unwrap()
            .is_none()
    );

    // And a good one writes user, password and membership together.
    let org = orgs::create(id, "Hooli", None).await.unwrap();
    let (u, m) = users::create(
        id,
        NewUser {
            email: "gavin@hooli.com".into(),
            password: Some(Secret::new("tethics-are-important".into())),
            org_id: Some(org.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let m = m.unwrap();
    assert_eq!(m.url_safe_org_name, "hooli");
    let stored = store::users::password_hash(&mut c, u.user_id)
        .await
        .unwrap()
        .unwrap();
    assert!(stored.starts_with("$argon2id$"));
    assert!(
        id.passwords
            .verify(&Secret::new("tethics-are-important".into()), &stored)
            .await
            .unwrap()
    );
    assert_eq!(
        store::memberships::get(&mut c, u.user_id, org.org_id)
            .await
            .unwrap(),
        Some(m)
    );
    drop(c);
    app.finish().await;
}

/// Many transactions that read then write, at once: none may fail with "database is locked"
/// (SQLite transactions take the write lock up front and wait their turn).
async fn concurrent_read_then_write_transactions_all_succeed(app: TestApp) {
    let id = &app.state.identity;
    let mut ids = Vec::new();
    for n in 0..12 {
        let (u, _) = users::create(
            id,
            NewUser {
                email: format!("c{n}@example.com"),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        ids.push(u.user_id);
    }
    let mut tasks = Vec::new();
    for (n, user_id) in ids.iter().copied().enumerate() {
        let id = id.clone();
        tasks.push(tokio::spawn(async move {
            for round in 0..3 {
                users::set_enabled(&id, user_id, (n + round) % 2 == 0).await?;
                // A refused write rolls back; the next transaction must still get through.
                let _ = users::update(
                    &id,
                    user_id,
                    users::UserPatch {
                        email: Some("c0@example.com".into()),
                        ..Default::default()
                    },
                )
                .await;
            }
            Ok::<_, IdentityError>(())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    app.finish().await;
}

async fn organizations_can_be_renamed_described_and_deleted(app: TestApp) {
    let id = &app.state.identity;
    let org = orgs::create(id, "Soylent", None).await.unwrap();
    let (u, _) = users::create(
        id,
        NewUser {
            email: "sol@example.com".into(),
            org_id: Some(org.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let meta = serde_json::json!({"plan": "enterprise", "seats": 10});
    let after = orgs::update(id, org.org_id, Some("Soylent Corp"), Some(meta.clone()))
        .await
        .unwrap();
    assert_eq!(after.org_name, "Soylent Corp");
    assert_eq!(after.url_safe_org_name, "soylent", "the slug stays");
    assert_eq!(
        orgs::get(id, org.org_id).await.unwrap().org_metadata.0,
        meta
    );
    for (name, m) in [(Some(""), None), (None, Some(serde_json::json!([1])))] {
        let e = orgs::update(id, org.org_id, name, m).await.unwrap_err();
        assert!(matches!(e, IdentityError::Invalid { .. }), "{e:?}");
    }
    assert!(matches!(
        orgs::update(id, Uuid::now_v7(), Some("x"), None).await,
        Err(IdentityError::NotFound { .. })
    ));
    let updated = lintel::identity::audit::list(
        id,
        &lintel::store::audit::Filter {
            action: Some("organization.updated".into()),
            ..Default::default()
        },
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(updated.len(), 1);
    assert_eq!(updated[0].details.0["org_name"]["after"], "Soylent Corp");

    orgs::delete(id, org.org_id).await.unwrap();
    assert!(matches!(
        orgs::get(id, org.org_id).await,
        Err(IdentityError::NotFound { .. })
    ));
    // The member's user stays; the membership went with the org.
    assert!(users::get(id, u.user_id).await.is_ok());
    let mut c = app.db.conn().await.unwrap();
    assert!(
        store::memberships::get(&mut c, u.user_id, org.org_id)
            .await
            .unwrap()
            .is_none()
    );
    drop(c);
    assert!(matches!(
        orgs::delete(id, org.org_id).await,
        Err(IdentityError::NotFound { .. })
    ));
    app.finish().await;
}
