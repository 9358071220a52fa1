//! Managing SCIM clients: the management API (clients, tokens shown once, mappings with a
//! dry run, group → role rules, other orgs' clients are 404) and the CLI
//! (`lintel scim-client create` prints a token that works).
use crate::helpers::{Backend, TestApp, TestDb, admin_key, api_call as call, cli as run};
use crate::{on_both_backends, on_both_databases};
use lintel::identity::orgs;
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(management_api_manages_scim_clients);
on_both_databases!(cli_creates_a_client_whose_token_works);

async fn management_api_manages_scim_clients(app: TestApp) {
    use reqwest::Method;
    let key = admin_key(&app).await;
    let id = &app.state.identity;
    let org = orgs::create(id, "Scim Admin", None).await.unwrap();
    let other = orgs::create(id, "Other Org", None).await.unwrap();
    let base = format!("/orgs/{}/scim-clients", org.org_id);

    let (s, created) = call(
        &app,
        &key,
        Method::POST,
        &base,
        Some(json!({"name": "Okta"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let client_id = created["client"]["client_id"].as_str().unwrap().to_string();
    let token = created["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("lst_"));
    assert!(
        created["client"]["base_url"]
            .as_str()
            .unwrap()
            .ends_with("/scim/v2")
    );
    let scim = app
        .client
        .get(app.url("/scim/v2/Users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(scim.status(), StatusCode::OK);

    let (s, list) = call(&app, &key, Method::GET, &base, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // Another org's path never reaches this client.
    let (s, _) = call(
        &app,
        &key,
        Method::GET,
        &format!("/orgs/{}/scim-clients/{client_id}", other.org_id),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Tokens: rotate (shown once), list without secrets, revoke.
    let (s, rotated) = call(
        &app,
        &key,
        Method::POST,
        &format!("{base}/{client_id}/tokens"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, tokens) = call(
        &app,
        &key,
        Method::GET,
        &format!("{base}/{client_id}/tokens"),
        None,
    )
    .await;
    assert_eq!(tokens.as_array().unwrap().len(), 2);
    assert!(
        !tokens
            .to_string()
            .contains(rotated["token"].as_str().unwrap())
    );
    assert!(!tokens.to_string().contains(&token));
    let old_id = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["token_id"] != rotated["token_id"])
        .unwrap()["token_id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, _) = call(
        &app,
        &key,
        Method::DELETE,
        &format!("{base}/{client_id}/tokens/{old_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let scim = app
        .client
        .get(app.url("/scim/v2/Users"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(scim.status(), StatusCode::UNAUTHORIZED);

    // Mappings and the dry run.
    let (s, m) = call(
        &app,
        &key,
        Method::PUT,
        &format!("{base}/{client_id}/mappings"),
        Some(json!([{"scim_attribute": "title", "local_attribute": "properties.title"}])),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["mappings"].as_array().unwrap().len(), 1);
    assert!(
        m["effective"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["scim_attribute"] == "name.givenName")
    );
    let (s, bad) = call(
        &app,
        &key,
        Method::PUT,
        &format!("{base}/{client_id}/mappings"),
        Some(json!([{"scim_attribute": "title", "local_attribute": "password_hash"}])),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
    let (s, dry) = call(&app, &key, Method::POST, &format!("{base}/{client_id}/mappings/dry-run"),
        Some(json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": "d@example.com",
            "title": "CEO", "name": {"givenName": "Dee"}}))).await;
    assert_eq!(s, StatusCode::OK, "{dry}");
    assert_eq!(dry["local"]["email"], json!("d@example.com"));
    assert_eq!(dry["local"]["first_name"], json!("Dee"));
    assert_eq!(dry["local"]["properties"]["title"], json!("CEO"));
    let (s, _) = call(
        &app,
        &key,
        Method::POST,
        &format!("{base}/{client_id}/mappings/dry-run"),
        Some(json!(["not", "a", "user"])),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Group → role rules name roles of the org.
    let (s, rules) = call(
        &app,
        &key,
        Method::PUT,
        &format!("{base}/{client_id}/group-roles"),
        Some(json!([{"group": "Admins", "role": "admin"}])),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{rules}");
    assert_eq!(rules, json!([{"group": "admins", "role": "admin"}]));
    let (s, _) = call(
        &app,
        &key,
        Method::PUT,
        &format!("{base}/{client_id}/group-roles"),
        Some(json!([{"group": "X", "role": "no-such-role"}])),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Disable, then delete.
    let (s, upd) = call(
        &app,
        &key,
        Method::PATCH,
        &format!("{base}/{client_id}"),
        Some(json!({"enabled": false})),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(upd["enabled"], json!(false));
    let scim = app
        .client
        .get(app.url("/scim/v2/Users"))
        .bearer_auth(rotated["token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(scim.status(), StatusCode::UNAUTHORIZED);
    let (s, _) = call(
        &app,
        &key,
        Method::DELETE,
        &format!("{base}/{client_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(
        &app,
        &key,
        Method::GET,
        &format!("{base}/{client_id}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.finish().await;
}

async fn cli_creates_a_client_whose_token_works(db: TestDb) {
    let (code, out, err) = run(&db, &["org", "create", "--name", "Cli Scim"]);
    assert_eq!(code, 0, "{err}");
    let org: Value = serde_json::from_str(out.trim()).unwrap();
    let (code, out, err) = run(
        &db,
        &[
            "scim-client",
            "create",
            "--org",
            org["url_safe_org_name"].as_str().unwrap(),
            "--name",
            "Entra",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let c: Value = serde_json::from_str(out.trim()).unwrap();
    let token = c["token"].as_str().unwrap().to_string();
    assert!(token.starts_with("lst_"));
    assert!(c["client_id"].as_str().is_some());
    assert_eq!(c["base_url"], json!("http://127.0.0.1:8080/scim/v2"));
    assert!(!err.contains(&token), "the token is never logged");
    // The token authenticates against the same database.
    let db_handle = lintel::store::Db::connect(&db.url, &Default::default())
        .await
        .unwrap();
    let config = crate::helpers::test_config(&db, &[]);
    let id = lintel::app::identity(
        &config,
        db_handle.clone(),
        std::sync::Arc::new(lintel::clock::SystemClock),
    )
    .unwrap();
    let p = lintel::scim::clients::authenticate(&id, &token)
        .await
        .unwrap();
    assert_eq!(p.client_id().to_string(), c["client_id"].as_str().unwrap());
    // Mapping and rotation commands.
    let client_id = c["client_id"].as_str().unwrap();
    let (code, out, err) = run(
        &db,
        &[
            "scim-client",
            "set-mapping",
            "--id",
            client_id,
            "--map",
            "title=properties.title",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("properties.title"));
    let (code, _, _) = run(
        &db,
        &[
            "scim-client",
            "set-mapping",
            "--id",
            client_id,
            "--map",
            "title",
        ],
    );
    assert_eq!(code, 1);
    let (code, out, _) = run(&db, &["scim-client", "rotate-token", "--id", client_id]);
    assert_eq!(code, 0);
    let rotated: Value = serde_json::from_str(out.trim()).unwrap();
    assert_ne!(rotated["token"], json!(token));
    let (code, _, _) = run(&db, &["scim-client", "create", "--org", "no-such-org"]);
    assert_eq!(code, 1);
    db_handle.close().await;
    db.drop_database().await;
    let _ = Backend::Sqlite;
}
