//! OIDC clients through the management API and the CLI, on both backends: secrets shown
//! once and stored hashed, exact redirect URIs, org-scoped visibility, audit rows.
use crate::helpers::{TestApp, lintel};
use crate::on_both_backends;
use lintel::identity::api_keys::{self, NewApiKey};
use lintel::store;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

on_both_backends!(
    clients_crud_secret_once_and_audited,
    org_keys_see_only_their_orgs_clients,
    bad_clients_are_422,
    cli_creates_a_client_and_prints_the_secret_once,
);

pub async fn admin_key(app: &TestApp) -> String {
    let (_, secret) = api_keys::create(
        &app.state.identity,
        NewApiKey {
            is_admin: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    secret.expose().clone()
}

pub async fn call(
    app: &TestApp,
    method: Method,
    path: &str,
    key: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut r = app
        .client
        .request(method, app.url(&format!("/api/v1{path}")))
        .bearer_auth(key);
    if let Some(b) = body {
        r = r.json(&b);
    }
    let resp = r.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn audit_actions(app: &TestApp, object_id: &str) -> Vec<String> {
    let mut c = app.db.conn().await.unwrap();
    let rows = store::audit::list(&mut c, &Default::default(), None, 500)
        .await
        .unwrap();
    rows.into_iter()
        .filter(|r| r.object_id.as_deref() == Some(object_id))
        .map(|r| r.action)
        .collect()
}

async fn clients_crud_secret_once_and_audited(app: TestApp) {
    let admin = admin_key(&app).await;
    let (s, created) = call(
        &app,
        Method::POST,
        "/oidc-clients",
        &admin,
        Some(json!({
            "name": "Web app",
            "redirect_uris": ["https://app.example.com/cb"],
            "post_logout_redirect_uris": ["https://app.example.com/bye"],
            "first_party": true,
        })),
    )
    .await;
    assert_eq!(s, 201, "{created}");
    let secret = created["client_secret"].as_str().unwrap().to_string();
    assert!(secret.len() >= 43);
    let cid = created["client"]["client_id"].as_str().unwrap().to_string();
    assert_eq!(
        created["client"]["token_endpoint_auth_method"],
        "client_secret_basic"
    );
    assert_eq!(
        created["client"]["grant_types"],
        json!(["authorization_code", "refresh_token"])
    );
    // Stored hashed, never returned again.
    let row = {
        let mut c = app.db.conn().await.unwrap();
        store::oidc::get_client(&mut c, &cid)
            .await
            .unwrap()
            .unwrap()
    };
    assert_ne!(row.secret_hash.as_deref(), Some(secret.as_str()));
    assert!(lintel::oidc::clients::secret_matches(
        row.secret_hash.as_deref(),
        &secret
    ));
    let (s, got) = call(
        &app,
        Method::GET,
        &format!("/oidc-clients/{cid}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert!(!got.to_string().contains(&secret));
    assert!(got.get("client_secret").is_none());
    let (s, list) = call(&app, Method::GET, "/oidc-clients", &admin, None).await;
    assert_eq!(s, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    let (s, upd) = call(
        &app,
        Method::PATCH,
        &format!("/oidc-clients/{cid}"),
        &admin,
        Some(json!({ "name": "Renamed", "enabled": false })),
    )
    .await;
    assert_eq!(s, 200, "{upd}");
    assert_eq!(upd["name"], "Renamed");
    assert_eq!(upd["enabled"], false);

    let (s, rot) = call(
        &app,
        Method::POST,
        &format!("/oidc-clients/{cid}/rotate-secret"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let fresh = rot["client_secret"].as_str().unwrap();
    assert_ne!(fresh, secret);
    let row = {
        let mut c = app.db.conn().await.unwrap();
        store::oidc::get_client(&mut c, &cid)
            .await
            .unwrap()
            .unwrap()
    };
    assert!(!lintel::oidc::clients::secret_matches(
        row.secret_hash.as_deref(),
        &secret
    ));
    assert!(lintel::oidc::clients::secret_matches(
        row.secret_hash.as_deref(),
        fresh
    ));

    let (s, _) = call(
        &app,
        Method::DELETE,
        &format!("/oidc-clients/{cid}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 204);
    let (s, _) = call(
        &app,
        Method::GET,
        &format!("/oidc-clients/{cid}"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 404);
    assert_eq!(
        audit_actions(&app, &cid).await,
        vec![
            "oidc_client.created",
            "oidc_client.updated",
            "oidc_client.secret_rotated",
            "oidc_client.deleted"
        ]
    );
    // No audit row carries a secret.
    let mut c = app.db.conn().await.unwrap();
    let rows = store::audit::list(&mut c, &Default::default(), None, 500)
        .await
        .unwrap();
    for r in rows {
        let d = serde_json::to_string(&r.details).unwrap();
        assert!(!d.contains(&secret) && !d.contains(fresh));
        assert!(!d.contains("secret_hash"));
    }
    drop(c);
    app.finish().await;
}

async fn org_keys_see_only_their_orgs_clients(app: TestApp) {
    let admin = admin_key(&app).await;
    let id = &app.state.identity;
    let a = lintel::identity::orgs::create(id, "Org A", None)
        .await
        .unwrap();
    let b = lintel::identity::orgs::create(id, "Org B", None)
        .await
        .unwrap();
    let (owner, _) = lintel::identity::users::create(
        id,
        lintel::identity::users::NewUser {
            email: "owner@a.example".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    lintel::identity::memberships::add(id, a.org_id, owner.user_id, "owner")
        .await
        .unwrap();
    let (_, key_a) = api_keys::create(
        id,
        NewApiKey {
            user_id: Some(owner.user_id),
            org_id: Some(a.org_id),
            permissions: vec!["org:read".into(), "org:write".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let key_a = key_a.expose().clone();
    let mk = |org: Uuid| json!({ "name": "c", "org_id": org, "redirect_uris": ["https://rp.example/cb"] });
    let (s, in_b) = call(
        &app,
        Method::POST,
        "/oidc-clients",
        &admin,
        Some(mk(b.org_id)),
    )
    .await;
    assert_eq!(s, 201);
    let b_id = in_b["client"]["client_id"].as_str().unwrap();
    // The org key creates in its org, not in another.
    let (s, in_a) = call(
        &app,
        Method::POST,
        "/oidc-clients",
        &key_a,
        Some(mk(a.org_id)),
    )
    .await;
    assert_eq!(s, 201, "{in_a}");
    assert_eq!(in_a["client"]["org_id"], json!(a.org_id));
    let (s, _) = call(
        &app,
        Method::POST,
        "/oidc-clients",
        &key_a,
        Some(mk(b.org_id)),
    )
    .await;
    assert_eq!(s, 404);
    // Global clients are for super-admins only.
    let (s, _) = call(
        &app,
        Method::POST,
        "/oidc-clients",
        &admin,
        Some(json!({ "name": "global", "redirect_uris": ["https://g.example/cb"] })),
    )
    .await;
    assert_eq!(s, 201);
    let (s, list) = call(&app, Method::GET, "/oidc-clients", &key_a, None).await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["client_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![in_a["client"]["client_id"].as_str().unwrap()]);
    let (_, all) = call(&app, Method::GET, "/oidc-clients", &admin, None).await;
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    for m in [Method::GET, Method::DELETE] {
        let (s, _) = call(&app, m, &format!("/oidc-clients/{b_id}"), &key_a, None).await;
        assert_eq!(s, 404);
    }
    let (s, _) = call(
        &app,
        Method::POST,
        &format!("/oidc-clients/{b_id}/rotate-secret"),
        &key_a,
        None,
    )
    .await;
    assert_eq!(s, 404);
    app.finish().await;
}

async fn bad_clients_are_422(app: TestApp) {
    let admin = admin_key(&app).await;
    let cases = [
        (
            json!({ "name": "x", "redirect_uris": ["https://*.example.com/cb"] }),
            "redirect_uris",
        ),
        (
            json!({ "name": "x", "redirect_uris": ["http://rp.example/cb"] }),
            "redirect_uris",
        ),
        (
            json!({ "name": "x", "redirect_uris": ["https://rp.example/cb#f"] }),
            "redirect_uris",
        ),
        (json!({ "name": "x" }), "redirect_uris"),
        (
            json!({ "name": "", "redirect_uris": ["https://rp.example/cb"] }),
            "name",
        ),
        (
            json!({ "name": "x", "redirect_uris": ["https://rp.example/cb"], "grant_types": ["implicit"] }),
            "grant_types",
        ),
        (
            json!({ "name": "x", "redirect_uris": ["https://rp.example/cb"], "scopes": ["openid", "admin"] }),
            "scopes",
        ),
        (
            json!({ "name": "x", "public": true, "redirect_uris": ["https://rp.example/cb"], "grant_types": ["client_credentials"] }),
            "grant_types",
        ),
        (
            json!({ "name": "x", "public": true, "token_endpoint_auth_method": "client_secret_basic", "redirect_uris": ["https://rp.example/cb"] }),
            "token_endpoint_auth_method",
        ),
        (
            json!({ "name": "x", "token_endpoint_auth_method": "private_key_jwt", "redirect_uris": ["https://rp.example/cb"] }),
            "jwks",
        ),
        (
            json!({ "name": "x", "token_endpoint_auth_method": "private_key_jwt", "redirect_uris": ["https://rp.example/cb"],
                    "jwks": { "keys": [{ "kty": "oct", "k": "c2VjcmV0" }] } }),
            "jwks",
        ),
        (
            json!({ "name": "x", "redirect_uris": ["https://rp.example/cb"], "jwks": { "keys": [] } }),
            "jwks",
        ),
        (
            json!({ "name": "x", "redirect_uris": ["https://rp.example/cb"], "id_token_signed_response_alg": "none" }),
            "id_token_signed_response_alg",
        ),
    ];
    for (body, field) in cases {
        let (s, v) = call(
            &app,
            Method::POST,
            "/oidc-clients",
            &admin,
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, 422, "{body} → {v}");
        assert_eq!(v["field"], field, "{body}");
    }
    // A public client gets no secret.
    let (s, v) = call(
        &app,
        Method::POST,
        "/oidc-clients",
        &admin,
        Some(json!({ "name": "spa", "public": true, "redirect_uris": ["http://127.0.0.1/cb"] })),
    )
    .await;
    assert_eq!(s, 201);
    assert_eq!(v["client_secret"], Value::Null);
    assert_eq!(v["client"]["token_endpoint_auth_method"], "none");
    let cid = v["client"]["client_id"].as_str().unwrap();
    let (s, _) = call(
        &app,
        Method::POST,
        &format!("/oidc-clients/{cid}/rotate-secret"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 422);
    app.finish().await;
}

async fn cli_creates_a_client_and_prints_the_secret_once(app: TestApp) {
    let dir = app.test_db.dir.path().to_path_buf();
    let keys = app.test_db.keys_dir().display().to_string();
    let env = [
        ("LINTEL_DATABASE_URL", app.test_db.url.as_str()),
        ("LINTEL_KEYS_DIR", keys.as_str()),
    ];
    let (code, out, err) = lintel(
        &dir,
        &[
            "oidc-client",
            "create",
            "--name",
            "CLI app",
            "--redirect-uri",
            "https://cli.example/cb",
            "--redirect-uri",
            "https://cli.example/cb2",
        ],
        &env,
        None,
    );
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let secret = v["client_secret"].as_str().unwrap();
    assert!(v.get("secret_hash").is_none());
    assert_eq!(v["redirect_uris"].as_array().unwrap().len(), 2);
    let cid = v["client_id"].as_str().unwrap();
    let (code, out, _) = lintel(&dir, &["oidc-client", "list"], &env, None);
    assert_eq!(code, 0);
    assert!(out.contains(cid) && !out.contains(secret));
    let (code, _, err) = lintel(
        &dir,
        &[
            "oidc-client",
            "create",
            "--name",
            "bad",
            "--redirect-uri",
            "http://evil.example/cb",
        ],
        &env,
        None,
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("redirect_uris"), "{err}");
    let (code, out, _) = lintel(
        &dir,
        &[
            "oidc-client",
            "create",
            "--name",
            "native",
            "--public",
            "--redirect-uri",
            "http://127.0.0.1/cb",
        ],
        &env,
        None,
    );
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["client_secret"], Value::Null);
    app.finish().await;
}
