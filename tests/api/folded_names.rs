//! Case-insensitive uniqueness agrees on both backends for non-ASCII names: keys are folded
//! in Rust (SQLite's lower() only folds ASCII).
use crate::helpers::TestApp;
use crate::on_both_backends;
use lintel::identity::users::{self, NewUser, UserPatch};
use lintel::identity::{IdentityError, orgs, roles};
use lintel::scim::clients;
use serde_json::json;

on_both_backends!(non_ascii_names_collide_case_insensitively);

async fn non_ascii_names_collide_case_insensitively(app: TestApp) {
    let id = &app.state.identity;
    let (a, _) = users::create(
        id,
        NewUser {
            email: "a@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (b, _) = users::create(
        id,
        NewUser {
            email: "b@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    users::update(
        id,
        a.user_id,
        UserPatch {
            username: Some(Some("Émile".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let taken = users::update(
        id,
        b.user_id,
        UserPatch {
            username: Some(Some("éMILE".into())),
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(&taken, Err(IdentityError::Conflict { field, .. }) if field == "username"),
        "{taken:?}"
    );
    // A different name is fine, and renaming to one's own name in another case too.
    users::update(
        id,
        b.user_id,
        UserPatch {
            username: Some(Some("Emile".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    users::update(
        id,
        a.user_id,
        UserPatch {
            username: Some(Some("ÉMILE".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let org = orgs::create(id, "Folding", None).await.unwrap();
    roles::create_role(id, org.org_id, "Équipe", None)
        .await
        .unwrap();
    let dup = roles::create_role(id, org.org_id, "équipe", None).await;
    assert!(
        matches!(&dup, Err(IdentityError::Conflict { field, .. }) if field == "role_name"),
        "{dup:?}"
    );
    // Lookups by name fold the same way.
    let found = lintel::store::roles::find_role_by_name(
        &mut id.db.conn().await.unwrap(),
        org.org_id,
        "ÉQUIPE",
    )
    .await
    .unwrap();
    assert_eq!(found.map(|r| r.name), Some("Équipe".to_string()));

    // SCIM userName: unique and filtered the same way.
    let (_, _, token) = clients::create(id, org.org_id, None).await.unwrap();
    let post = |name: &str| {
        app.client
            .post(app.url("/scim/v2/Users"))
            .bearer_auth(token.expose())
            .header("content-type", "application/scim+json")
            .body(
                json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name})
                    .to_string(),
            )
            .send()
    };
    assert_eq!(post("Ødegaard").await.unwrap().status(), 201);
    assert_eq!(post("øDEGAARD").await.unwrap().status(), 409);
    let list: serde_json::Value = app
        .client
        .get(app.url("/scim/v2/Users?filter=userName%20eq%20%22%C3%98DEGAARD%22"))
        .bearer_auth(token.expose())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(list["totalResults"], json!(1), "{list}");
    app.finish().await;
}
