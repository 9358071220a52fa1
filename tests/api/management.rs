//! The management API (`/api/v1`) through real HTTP on both backends: API-key auth,
//! tenancy (another org's ids are 404, a missing permission 403), the CRUD paths, cursor
//! pagination, audit rows naming the key, bad input as problems, and the OpenAPI document.
use crate::helpers::TestApp;
use crate::on_both_backends;
use lintel::identity::api_keys::{self, NewApiKey};
use lintel::identity::sessions::{self, NewSession};
use lintel::store::{self, TextList};
use reqwest::{Method, RequestBuilder, Response};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use uuid::Uuid;

on_both_backends!(
    bad_credentials_are_401_with_a_bearer_challenge,
    org_scoped_keys_see_only_their_org,
    user_keys_reach_only_their_owners_orgs,
    missing_permissions_are_403,
    non_admin_keys_cannot_use_admin_routes,
    orgs_members_roles_and_permissions_crud,
    role_inheritance_grants_and_cycles_are_409,
    members_paginate_with_cursors,
    users_update_password_unlock_and_delete,
    sessions_are_listed_and_revoked,
    api_keys_are_shown_once_and_bounded_by_the_creator,
    mutations_are_audited_as_the_key,
    bad_input_is_a_4xx_problem_never_500,
    openapi_document_describes_every_route,
);

const UA: &str = "lintel-management-tests/1.0";

/// A client for the app's API with a fixed user agent.
struct Api {
    base: String,
    client: reqwest::Client,
    admin: String,
}

impl Api {
    async fn new(app: &TestApp) -> Api {
        let (_, secret) = api_keys::create(
            &app.state.identity,
            NewApiKey {
                is_admin: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        Api {
            base: app.url("/api/v1"),
            client: reqwest::Client::builder().user_agent(UA).build().unwrap(),
            admin: secret.expose().clone(),
        }
    }

    fn req(&self, method: Method, path: &str, key: Option<&str>) -> RequestBuilder {
        let r = self.client.request(method, format!("{}{path}", self.base));
        match key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn call(&self, method: Method, path: &str, key: &str, body: Option<Value>) -> Response {
        let mut r = self.req(method, path, Some(key));
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send().await.unwrap()
    }

    /// A call expected to answer `status`; returns the JSON body (Null when empty).
    async fn ok(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let r = self.call(method.clone(), path, key, body).await;
        let got = r.status().as_u16();
        let text = r.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap()
        }
    }

    /// A call expected to fail with `status` as an RFC 9457 problem; returns the problem.
    async fn problem(
        &self,
        method: Method,
        path: &str,
        key: &str,
        body: Option<Value>,
        status: u16,
    ) -> Value {
        let r = self.call(method.clone(), path, key, body).await;
        expect_problem(r, status, &format!("{method} {path}")).await
    }

    async fn org(&self, name: &str) -> Uuid {
        let v = self
            .ok(
                Method::POST,
                "/organizations",
                &self.admin,
                Some(json!({ "org_name": name })),
                201,
            )
            .await;
        id(&v["org_id"])
    }

    async fn user(&self, email: &str, org: Option<Uuid>) -> Uuid {
        let v = self
            .ok(
                Method::POST,
                "/users",
                &self.admin,
                Some(json!({ "email": email, "org_id": org })),
                201,
            )
            .await;
        id(&v["user_id"])
    }

    async fn add_member(&self, org: Uuid, user: Uuid, role: &str) -> Value {
        self.ok(
            Method::POST,
            &format!("/organizations/{org}/members"),
            &self.admin,
            Some(json!({ "user_id": user, "role": role })),
            201,
        )
        .await
    }

    /// A key minted by the admin: (secret, key id).
    async fn key(&self, owner: Uuid, org: Option<Uuid>, perms: &[&str]) -> (String, Uuid) {
        let v = self
            .ok(
                Method::POST,
                "/api-keys",
                &self.admin,
                Some(json!({ "user_id": owner, "org_id": org, "permissions": perms })),
                201,
            )
            .await;
        (
            v["key"].as_str().unwrap().to_string(),
            id(&v["api_key"]["api_key_id"]),
        )
    }

    async fn role(&self, org: Uuid, name: &str) -> Uuid {
        let v = self
            .ok(
                Method::POST,
                &format!("/organizations/{org}/roles"),
                &self.admin,
                Some(json!({ "name": name })),
                201,
            )
            .await;
        id(&v["role_id"])
    }
}

fn id(v: &Value) -> Uuid {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a uuid: {v}"))
}

const ALL: &[&str] = &[
    "org:read",
    "org:write",
    "members:read",
    "members:write",
    "roles:read",
    "roles:write",
    "sessions:write",
    "mfa:write",
    "audit:read",
    "api_keys:write",
    "impersonate",
];

async fn expect_problem(r: Response, status: u16, what: &str) -> Value {
    assert_eq!(r.status().as_u16(), status, "{what}");
    assert_eq!(
        r.headers()["content-type"],
        "application/problem+json",
        "{what}"
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], status, "{what}: {v}");
    assert!(
        v["type"]
            .as_str()
            .is_some_and(|t| t.starts_with("urn:lintel:problem:")),
        "{what}: {v}"
    );
    assert!(v["title"].is_string(), "{what}: {v}");
    v
}

async fn expect_401(r: Response, what: &str) -> Value {
    let challenge = r
        .headers()
        .get("www-authenticate")
        .unwrap_or_else(|| panic!("{what}: no WWW-Authenticate"))
        .to_str()
        .unwrap()
        .to_string();
    assert!(challenge.starts_with("Bearer "), "{what}: {challenge}");
    assert!(
        challenge.contains("error=\"invalid_token\""),
        "{what}: {challenge}"
    );
    let v = expect_problem(r, 401, what).await;
    assert_eq!(v["type"], "urn:lintel:problem:unauthorized", "{what}");
    v
}

/// An org with an owner (a member with the `owner` role): (org, owner).
async fn org_with_owner(api: &Api, name: &str) -> (Uuid, Uuid) {
    let org = api.org(name).await;
    let owner = api.user(&format!("owner@{name}.test"), None).await;
    api.add_member(org, owner, "owner").await;
    (org, owner)
}

// ---------------------------------------------------------------------------------------
// Authentication

async fn bad_credentials_are_401_with_a_bearer_challenge(app: TestApp) {
    let api = Api::new(&app).await;
    let (org, owner) = org_with_owner(&api, "auth").await;
    let path = format!("/organizations/{org}");
    let get = |key: Option<&str>| api.req(Method::GET, &path, key);

    // The baseline: a good key works (so the failures below are about the credential).
    let (good, good_id) = api.key(owner, Some(org), &["org:read"]).await;
    assert_eq!(get(Some(&good)).send().await.unwrap().status(), 200);

    expect_401(get(None).send().await.unwrap(), "no header").await;
    let basic = get(None)
        .header("authorization", format!("Basic {good}"))
        .send()
        .await
        .unwrap();
    expect_401(basic, "wrong scheme").await;
    let bare = get(None)
        .header("authorization", good.clone())
        .send()
        .await
        .unwrap();
    expect_401(bare, "no scheme").await;
    for malformed in [
        "garbage",
        "lk_short_x",
        &format!("{good}x"),
        &good[..good.len() - 1],
    ] {
        expect_401(get(Some(malformed)).send().await.unwrap(), malformed).await;
    }
    // Well-formed, unknown prefix; and a known prefix with the wrong secret.
    let unknown = format!("lk_abcdefghijkm_{}", "A".repeat(43));
    expect_401(get(Some(&unknown)).send().await.unwrap(), "unknown key").await;
    let prefix = &good[..16];
    let wrong_secret = format!("{prefix}{}", "B".repeat(43));
    assert_eq!(wrong_secret.len(), good.len());
    expect_401(
        get(Some(&wrong_secret)).send().await.unwrap(),
        "wrong secret",
    )
    .await;

    // Revoked.
    api.ok(
        Method::DELETE,
        &format!("/api-keys/{good_id}"),
        &api.admin,
        None,
        200,
    )
    .await;
    expect_401(get(Some(&good)).send().await.unwrap(), "revoked").await;

    // Expired: creation refuses a past expiry, so the row is written straight to the store.
    let now = app.state.identity.clock.now();
    let refused = api
        .call(
            Method::POST,
            "/api-keys",
            &api.admin,
            Some(json!({ "user_id": owner, "expires_at": now - chrono::Duration::hours(1) })),
        )
        .await;
    let v = expect_problem(refused, 422, "past expiry").await;
    assert_eq!(v["field"], "expires_at");
    let secret = "C".repeat(43);
    let expired = store::api_keys::ApiKey {
        api_key_id: Uuid::now_v7(),
        user_id: Some(owner),
        key_hash: api_keys::hash_secret(&secret),
        description: None,
        created_at: now - chrono::Duration::hours(2),
        expires_at: Some(now - chrono::Duration::hours(1)),
        revoked: false,
        key_prefix: "expiredkey22".into(),
        org_id: Some(org),
        permissions: TextList(vec!["org:read".into()]),
        is_admin: false,
        last_used_at: None,
    };
    let mut c = app.db.conn().await.unwrap();
    store::api_keys::insert(&mut c, &expired).await.unwrap();
    drop(c);
    let v = expect_401(
        get(Some(&format!("lk_expiredkey22_{secret}")))
            .send()
            .await
            .unwrap(),
        "expired",
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("expired"), "{v}");

    // A key whose owner is disabled (then locked) stops working.
    let (fresh, _) = api.key(owner, Some(org), &["org:read"]).await;
    assert_eq!(get(Some(&fresh)).send().await.unwrap().status(), 200);
    let user_path = format!("/users/{owner}");
    let off = Some(json!({ "enabled": false }));
    api.ok(Method::PATCH, &user_path, &api.admin, off, 200)
        .await;
    expect_401(get(Some(&fresh)).send().await.unwrap(), "disabled owner").await;
    let on = Some(json!({ "enabled": true, "locked": true }));
    api.ok(Method::PATCH, &user_path, &api.admin, on, 200).await;
    expect_401(get(Some(&fresh)).send().await.unwrap(), "locked owner").await;
    let unlock = format!("/users/{owner}/unlock");
    api.ok(Method::POST, &unlock, &api.admin, None, 200).await;
    assert_eq!(get(Some(&fresh)).send().await.unwrap().status(), 200);

    // No secret ever comes back in a 401.
    let r = get(Some(&wrong_secret)).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains(&"B".repeat(43)), "{text}");
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// Tenancy

async fn org_scoped_keys_see_only_their_org(app: TestApp) {
    let api = Api::new(&app).await;
    let (a, owner) = org_with_owner(&api, "alpha").await;
    let b = api.org("beta").await;
    // The owner owns B too: B is out of reach because of the key's scope alone.
    api.add_member(b, owner, "owner").await;
    let b_member = api.user("member@beta.test", Some(b)).await;
    let a_member = api.user("member@alpha.test", Some(a)).await;
    let b_role = api.role(b, "b-role").await;
    let b_perm = api
        .ok(
            Method::POST,
            &format!("/organizations/{b}/permissions"),
            &api.admin,
            Some(json!({ "name": "b:thing" })),
            201,
        )
        .await;
    let b_perm = id(&b_perm["permission_id"]);
    let (key, _) = api.key(owner, Some(a), ALL).await;

    // Its own org works.
    api.ok(Method::GET, &format!("/organizations/{a}"), &key, None, 200)
        .await;
    let m = format!("/organizations/{a}/members/{a_member}");
    api.ok(Method::GET, &m, &key, None, 200).await;
    let listed = api.ok(Method::GET, "/organizations", &key, None, 200).await;
    let ids: Vec<Uuid> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| id(&o["org_id"]))
        .collect();
    assert_eq!(ids, vec![a]);

    // B's resources under B's path: 404 (not 403: B's existence is not revealed).
    for path in [
        format!("/organizations/{b}"),
        format!("/organizations/{b}/members"),
        format!("/organizations/{b}/members/{b_member}"),
        format!("/organizations/{b}/roles"),
        format!("/organizations/{b}/permissions"),
        format!("/organizations/{b}/domains"),
        format!("/organizations/{b}/login-methods"),
    ] {
        let v = api.problem(Method::GET, &path, &key, None, 404).await;
        assert_eq!(v["type"], "urn:lintel:problem:not-found");
    }
    let path = format!("/organizations/{b}/roles");
    let body = Some(json!({ "name": "intruder" }));
    api.problem(Method::POST, &path, &key, body, 404).await;
    // B's ids under A's path: 404.
    let rename = Some(json!({ "name": "renamed" }));
    let ra = format!("/organizations/{a}/roles/{b_role}");
    api.problem(Method::PATCH, &ra, &key, rename, 404).await;
    api.problem(Method::DELETE, &ra, &key, None, 404).await;
    let pa = format!("/organizations/{a}/permissions/{b_perm}");
    api.problem(Method::DELETE, &pa, &key, None, 404).await;
    let ma = format!("/organizations/{a}/members/{b_member}");
    api.problem(Method::GET, &ma, &key, None, 404).await;
    let assign = Some(json!({ "role_id": b_role }));
    let roles_of = format!("/organizations/{a}/members/{a_member}/roles");
    api.problem(Method::POST, &roles_of, &key, assign, 404)
        .await;
    let audit = format!("/audit-logs?org_id={b}");
    api.problem(Method::GET, &audit, &key, None, 404).await;
    // Nothing of B changed.
    let roles = api
        .ok(
            Method::GET,
            &format!("/organizations/{b}/roles"),
            &api.admin,
            None,
            200,
        )
        .await;
    let names: BTreeSet<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(names.contains("b-role") && !names.contains("intruder") && !names.contains("renamed"));
    // An unknown org is the same 404.
    let path = format!("/organizations/{}", Uuid::now_v7());
    api.problem(Method::GET, &path, &key, None, 404).await;
    app.finish().await;
}

async fn user_keys_reach_only_their_owners_orgs(app: TestApp) {
    let api = Api::new(&app).await;
    let (a, owner) = org_with_owner(&api, "one").await;
    let b = api.org("two").await;
    api.add_member(b, owner, "owner").await;
    let c = api.org("three").await;
    let (key, _) = api.key(owner, None, ALL).await;

    for org in [a, b] {
        api.ok(
            Method::GET,
            &format!("/organizations/{org}"),
            &key,
            None,
            200,
        )
        .await;
        let path = format!("/organizations/{org}/roles");
        api.ok(Method::GET, &path, &key, None, 200).await;
    }
    api.problem(Method::GET, &format!("/organizations/{c}"), &key, None, 404)
        .await;
    let path = format!("/organizations/{c}/members");
    api.problem(Method::GET, &path, &key, None, 404).await;
    let listed = api.ok(Method::GET, "/organizations", &key, None, 200).await;
    let ids: BTreeSet<Uuid> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| id(&o["org_id"]))
        .collect();
    assert_eq!(ids, BTreeSet::from([a, b]));
    // Leaving an org takes the key's reach with it.
    api.ok(
        Method::DELETE,
        &format!("/organizations/{b}/members/{owner}"),
        &api.admin,
        None,
        204,
    )
    .await;
    api.problem(Method::GET, &format!("/organizations/{b}"), &key, None, 404)
        .await;
    app.finish().await;
}

async fn missing_permissions_are_403(app: TestApp) {
    let api = Api::new(&app).await;
    let (org, owner) = org_with_owner(&api, "perms").await;
    let members = format!("/organizations/{org}/members");
    let roles = format!("/organizations/{org}/roles");
    let new_role = || Some(json!({ "name": "r" }));

    // Only members:read.
    let (reader, _) = api.key(owner, Some(org), &["members:read"]).await;
    api.ok(Method::GET, &members, &reader, None, 200).await;
    let v = api
        .problem(Method::POST, &roles, &reader, new_role(), 403)
        .await;
    assert_eq!(v["type"], "urn:lintel:problem:forbidden");
    assert!(v["detail"].as_str().unwrap().contains("roles:write"), "{v}");
    api.problem(Method::GET, &roles, &reader, None, 403).await;
    let path = format!("/organizations/{org}");
    api.problem(Method::GET, &path, &reader, None, 403).await;
    let patch = Some(json!({ "mfa_required": true }));
    api.problem(Method::PATCH, &path, &reader, patch, 403).await;

    // A key's permissions are capped by its owner's: a plain member with a roles:write key
    // still cannot write roles.
    let plain = api.user("plain@perms.test", Some(org)).await;
    let (capped, _) = api
        .key(plain, Some(org), &["roles:write", "members:read"])
        .await;
    api.ok(Method::GET, &members, &capped, None, 200).await;
    api.problem(Method::POST, &roles, &capped, new_role(), 403)
        .await;
    // Nothing was created by the refused calls.
    let list = api.ok(Method::GET, &roles, &api.admin, None, 200).await;
    assert!(
        list.as_array().unwrap().iter().all(|r| r["name"] != "r"),
        "{list}"
    );
    // The owner's key with roles:write can.
    let (writer, _) = api.key(owner, Some(org), &["roles:write"]).await;
    api.ok(Method::POST, &roles, &writer, new_role(), 201).await;
    app.finish().await;
}

async fn non_admin_keys_cannot_use_admin_routes(app: TestApp) {
    let api = Api::new(&app).await;
    let (org, owner) = org_with_owner(&api, "nonadmin").await;
    let (key, _) = api.key(owner, None, ALL).await;
    let body = Some(json!({ "org_name": "Mine" }));
    api.problem(Method::POST, "/organizations", &key, body, 403)
        .await;
    api.problem(Method::GET, "/users", &key, None, 403).await;
    let body = Some(json!({ "email": "x@y.test" }));
    api.problem(Method::POST, "/users", &key, body, 403).await;
    let path = format!("/users/{owner}");
    api.problem(Method::GET, &path, &key, None, 403).await;
    let body = Some(json!({ "first_name": "Eve" }));
    api.problem(Method::PATCH, &path, &key, body, 403).await;
    api.problem(Method::DELETE, &path, &key, None, 403).await;
    api.problem(Method::GET, "/audit-logs", &key, None, 403)
        .await;
    // An admin key, asked by a non-admin key: refused.
    let body = Some(json!({ "org_id": org, "is_admin": true }));
    api.problem(Method::POST, "/api-keys", &key, body, 403)
        .await;
    // The user still exists and no org was created.
    api.ok(Method::GET, &path, &api.admin, None, 200).await;
    let orgs = api
        .ok(Method::GET, "/organizations", &api.admin, None, 200)
        .await;
    assert_eq!(orgs["data"].as_array().unwrap().len(), 1);
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// CRUD

async fn orgs_members_roles_and_permissions_crud(app: TestApp) {
    let api = Api::new(&app).await;
    let admin = api.admin.clone();
    let org = api
        .ok(
            Method::POST,
            "/organizations",
            &admin,
            Some(json!({ "org_name": "Acme Corp" })),
            201,
        )
        .await;
    assert_eq!(org["org_name"], "Acme Corp");
    assert_eq!(org["url_safe_org_name"], "acme-corp");
    let org_id = id(&org["org_id"]);
    let dup = Some(json!({ "org_name": "Other", "url_safe_org_name": "acme-corp" }));
    api.problem(Method::POST, "/organizations", &admin, dup, 409)
        .await;
    let o = format!("/organizations/{org_id}");
    let got = api.ok(Method::GET, &o, &admin, None, 200).await;
    assert_eq!(got, org);
    let patched = api
        .ok(
            Method::PATCH,
            &o,
            &admin,
            Some(json!({ "org_role_structure": "multi_role", "mfa_required": true })),
            200,
        )
        .await;
    assert_eq!(patched["org_role_structure"], "multi_role");
    assert_eq!(patched["mfa_required"], true);

    // Members.
    let user = api.user("ann@acme.test", None).await;
    let m = api.add_member(org_id, user, "member").await;
    assert_eq!(m["user_role"], "member");
    assert_eq!(m["org_id"], json!(org_id));
    let again = Some(json!({ "user_id": user }));
    let members = format!("{o}/members");
    api.problem(Method::POST, &members, &admin, again, 409)
        .await;
    let mp = format!("{o}/members/{user}");
    let got = api.ok(Method::GET, &mp, &admin, None, 200).await;
    assert_eq!(got["user_role"], "member");
    let promoted = Some(json!({ "role": "admin" }));
    let got = api.ok(Method::PATCH, &mp, &admin, promoted, 200).await;
    assert_eq!(got["user_role"], "admin");
    assert!(
        got["user_permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("roles:write"))
    );

    // A role with a permission, assigned to the member.
    let role = api.role(org_id, "billing").await;
    let perm = api
        .ok(
            Method::POST,
            &format!("{o}/permissions"),
            &admin,
            Some(json!({ "name": "invoices:read", "description": "See invoices" })),
            201,
        )
        .await;
    let perm_id = id(&perm["permission_id"]);
    let grant = Some(json!({ "permission_id": perm_id }));
    let rp = format!("{o}/roles/{role}/permissions");
    api.ok(Method::POST, &rp, &admin, grant, 204).await;
    let assign = Some(json!({ "role_id": role }));
    let m = api
        .ok(Method::POST, &format!("{mp}/roles"), &admin, assign, 200)
        .await;
    assert!(
        m["additional_roles"]
            .as_array()
            .unwrap()
            .contains(&json!("billing"))
    );
    assert!(
        m["user_permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("invoices:read"))
    );
    // Revoking the permission takes it from the member; unassigning drops the role.
    let rpp = format!("{rp}/{perm_id}");
    api.ok(Method::DELETE, &rpp, &admin, None, 204).await;
    let m = api.ok(Method::GET, &mp, &admin, None, 200).await;
    assert!(
        !m["user_permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("invoices:read"))
    );
    let m = api
        .ok(
            Method::DELETE,
            &format!("{mp}/roles/{role}"),
            &admin,
            None,
            200,
        )
        .await;
    assert!(
        !m["additional_roles"]
            .as_array()
            .unwrap()
            .contains(&json!("billing"))
    );

    // Rename and delete a role; a taken name is a conflict.
    let rr = format!("{o}/roles/{role}");
    let v = api
        .ok(
            Method::PATCH,
            &rr,
            &admin,
            Some(json!({ "name": "finance" })),
            200,
        )
        .await;
    assert_eq!(v["name"], "finance");
    let taken = Some(json!({ "name": "admin" }));
    api.problem(Method::PATCH, &rr, &admin, taken, 409).await;
    api.ok(Method::DELETE, &rr, &admin, None, 204).await;
    api.problem(Method::DELETE, &rr, &admin, None, 404).await;
    let pp = format!("{o}/permissions/{perm_id}");
    api.ok(Method::DELETE, &pp, &admin, None, 204).await;
    api.problem(Method::DELETE, &pp, &admin, None, 404).await;

    // Login methods and domains.
    let lm = format!("{o}/login-methods/magic_link");
    let v = api
        .ok(
            Method::PUT,
            &lm,
            &admin,
            Some(json!({ "enabled": true })),
            200,
        )
        .await;
    assert_eq!(v, json!({ "method": "magic_link", "enabled": true }));
    let list = api
        .ok(
            Method::GET,
            &format!("{o}/login-methods"),
            &admin,
            None,
            200,
        )
        .await;
    assert!(list.as_array().unwrap().contains(&v), "{list}");
    let bogus = format!("{o}/login-methods/carrier-pigeon");
    let body = Some(json!({ "enabled": true }));
    api.problem(Method::PUT, &bogus, &admin, body, 422).await;
    let d = api
        .ok(
            Method::POST,
            &format!("{o}/domains"),
            &admin,
            Some(json!({ "domain": "Acme.TEST" })),
            201,
        )
        .await;
    assert_eq!(d["domain"], "acme.test");
    let d2 = api.org("Rival").await;
    let body = Some(json!({ "domain": "acme.test" }));
    let path = format!("/organizations/{d2}/domains");
    // Another org may claim it too (unverified claims route nothing)...
    api.ok(Method::POST, &path, &admin, body.clone(), 201).await;
    // ...but the same org cannot claim it twice.
    let mine = format!("{o}/domains");
    api.problem(Method::POST, &mine, &admin, body, 409).await;
    let dd = format!("{o}/domains/acme.test");
    api.ok(Method::DELETE, &dd, &admin, None, 204).await;

    // Removing the member.
    api.ok(Method::DELETE, &mp, &admin, None, 204).await;
    api.problem(Method::GET, &mp, &admin, None, 404).await;
    api.problem(Method::DELETE, &mp, &admin, None, 404).await;
    app.finish().await;
}

async fn role_inheritance_grants_and_cycles_are_409(app: TestApp) {
    let api = Api::new(&app).await;
    let admin = api.admin.clone();
    let org = api.org("inherit").await;
    let o = format!("/organizations/{org}");
    let user = api.user("kid@inherit.test", Some(org)).await;
    let child = api.role(org, "child").await;
    let parent = api.role(org, "parent").await;
    let perm = api
        .ok(
            Method::POST,
            &format!("{o}/permissions"),
            &admin,
            Some(json!({ "name": "vault:open" })),
            201,
        )
        .await;
    let grant = Some(json!({ "permission_id": id(&perm["permission_id"]) }));
    let path = format!("{o}/roles/{parent}/permissions");
    api.ok(Method::POST, &path, &admin, grant, 204).await;
    let link = Some(json!({ "parent_role_id": parent }));
    let path = format!("{o}/roles/{child}/parents");
    api.ok(Method::POST, &path, &admin, link, 204).await;
    let assign = Some(json!({ "role_id": child }));
    let path = format!("{o}/members/{user}/roles");
    let m = api.ok(Method::POST, &path, &admin, assign, 200).await;
    let roles = m["inherited_user_roles_plus_current_role"]
        .as_array()
        .unwrap();
    assert!(roles.contains(&json!("parent")), "{m}");
    assert!(
        m["user_permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("vault:open"))
    );

    // parent → child would close a cycle: 409 naming parent_role_id; nothing written.
    let back = Some(json!({ "parent_role_id": child }));
    let path = format!("{o}/roles/{parent}/parents");
    let v = api.problem(Method::POST, &path, &admin, back, 409).await;
    assert_eq!(v["field"], "parent_role_id");
    assert_eq!(v["type"], "urn:lintel:problem:conflict");
    let self_loop = Some(json!({ "parent_role_id": child }));
    let path = format!("{o}/roles/{child}/parents");
    let r = api.call(Method::POST, &path, &admin, self_loop).await;
    let status = r.status().as_u16();
    assert!(r.status().is_client_error(), "{status}");
    expect_problem(r, status, "self parent").await;

    // Removing the link takes the parent's permission away.
    let path = format!("{o}/roles/{child}/parents/{parent}");
    api.ok(Method::DELETE, &path, &admin, None, 204).await;
    let m = api
        .ok(
            Method::GET,
            &format!("{o}/members/{user}"),
            &admin,
            None,
            200,
        )
        .await;
    assert!(
        !m["user_permissions"]
            .as_array()
            .unwrap()
            .contains(&json!("vault:open"))
    );
    app.finish().await;
}

async fn members_paginate_with_cursors(app: TestApp) {
    let api = Api::new(&app).await;
    let org = api.org("pages").await;
    let mut expected = BTreeSet::new();
    for i in 0..5 {
        expected.insert(api.user(&format!("m{i}@pages.test"), Some(org)).await);
    }
    let base = format!("/organizations/{org}/members?limit=2");
    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}&cursor={c}"),
            None => base.clone(),
        };
        let page = api.ok(Method::GET, &path, &api.admin, None, 200).await;
        let data = page["data"].as_array().unwrap();
        sizes.push(data.len());
        seen.extend(data.iter().map(|m| id(&m["user_id"])));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => {
                assert!(page["next_cursor"].is_null(), "{page}");
                break;
            }
        }
        assert!(sizes.len() < 10, "pagination does not end");
    }
    assert_eq!(sizes, vec![2, 2, 1]);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "pages come in key order");
    assert_eq!(seen.iter().copied().collect::<BTreeSet<_>>(), expected);
    assert_eq!(seen.len(), 5, "no member twice");

    for bad in [
        format!("{base}&cursor=not-a-cursor"),
        format!("{base}&cursor=AAAA"),
        format!("/organizations/{org}/members?limit=0"),
        format!("/organizations/{org}/members?limit=201"),
        format!("/organizations/{org}/members?limit=two"),
        format!("/organizations/{org}/members?limit=-1"),
    ] {
        let v = api.problem(Method::GET, &bad, &api.admin, None, 400).await;
        assert_eq!(v["type"], "urn:lintel:problem:bad-request", "{bad}");
    }
    // The other lists page the same way.
    let users = api
        .ok(Method::GET, "/users?limit=3", &api.admin, None, 200)
        .await;
    assert_eq!(users["data"].as_array().unwrap().len(), 3);
    let c = users["next_cursor"].as_str().unwrap();
    let rest = api
        .ok(
            Method::GET,
            &format!("/users?limit=3&cursor={c}"),
            &api.admin,
            None,
            200,
        )
        .await;
    assert_eq!(rest["data"].as_array().unwrap().len(), 2);
    assert!(rest["next_cursor"].is_null());
    app.finish().await;
}

async fn users_update_password_unlock_and_delete(app: TestApp) {
    let api = Api::new(&app).await;
    let admin = api.admin.clone();
    let created = api
        .ok(
            Method::POST,
            "/users",
            &admin,
            Some(
                json!({ "email": "Zoe@Example.TEST", "password": "correct horse battery",
                         "first_name": "Zoe" }),
            ),
            201,
        )
        .await;
    assert_eq!(created["email"], "zoe@example.test");
    assert_eq!(created["has_password"], true);
    assert!(created.get("password").is_none() && created.get("password_hash").is_none());
    let zoe = id(&created["user_id"]);
    let other = api.user("taken@example.test", None).await;
    let dup = Some(json!({ "email": "TAKEN@example.test" }));
    let v = api.problem(Method::POST, "/users", &admin, dup, 409).await;
    assert_eq!(v["field"], "email");
    let weak = Some(json!({ "email": "weak@example.test", "password": "short" }));
    let v = api.problem(Method::POST, "/users", &admin, weak, 422).await;
    assert_eq!(v["field"], "password");

    let up = format!("/users/{zoe}");
    let v = api
        .problem(
            Method::PATCH,
            &up,
            &admin,
            Some(json!({ "email": "taken@example.test" })),
            409,
        )
        .await;
    assert_eq!(v["field"], "email");
    let v = api
        .problem(
            Method::PATCH,
            &up,
            &admin,
            Some(json!({ "email": "nope" })),
            422,
        )
        .await;
    assert_eq!(v["field"], "email");
    let bad_url = Some(json!({ "picture_url": "javascript:alert(1)" }));
    let v = api.problem(Method::PATCH, &up, &admin, bad_url, 422).await;
    assert_eq!(v["field"], "picture_url");
    // Refused patches changed nothing.
    let got = api.ok(Method::GET, &up, &admin, None, 200).await;
    assert_eq!(got, created);

    let v = api
        .ok(
            Method::PATCH,
            &up,
            &admin,
            Some(
                json!({ "first_name": null, "last_name": "Z", "email": "zoe2@example.test",
                         "properties": { "team": "blue" } }),
            ),
            200,
        )
        .await;
    assert!(v["first_name"].is_null());
    assert_eq!(v["last_name"], "Z");
    assert_eq!(v["email"], "zoe2@example.test");
    assert_eq!(v["email_confirmed"], false);
    assert_eq!(v["properties"], json!({ "team": "blue" }));
    // Absent fields are kept.
    let v = api
        .ok(Method::PATCH, &up, &admin, Some(json!({})), 200)
        .await;
    assert_eq!(v["last_name"], "Z");

    // Password: policy checked; a good one is set.
    let pw = format!("{up}/password");
    let v = api
        .problem(
            Method::PUT,
            &pw,
            &admin,
            Some(json!({ "password": "x" })),
            422,
        )
        .await;
    assert_eq!(v["field"], "password");
    let body = Some(json!({ "password": "another long passphrase", "require_change": true }));
    let v = api.ok(Method::PUT, &pw, &admin, body, 200).await;
    assert_eq!(v["has_password"], true);
    assert_eq!(v["update_password_required"], true);

    // Lock, unlock.
    let v = api
        .ok(
            Method::PATCH,
            &up,
            &admin,
            Some(json!({ "locked": true })),
            200,
        )
        .await;
    assert_eq!(v["locked"], true);
    let v = api
        .ok(Method::POST, &format!("{up}/unlock"), &admin, None, 200)
        .await;
    assert_eq!(v["locked"], false);

    // Delete: 204, then 404 everywhere.
    api.ok(Method::DELETE, &up, &admin, None, 204).await;
    api.problem(Method::GET, &up, &admin, None, 404).await;
    api.problem(Method::DELETE, &up, &admin, None, 404).await;
    let body = Some(json!({ "first_name": "Ghost" }));
    api.problem(Method::PATCH, &up, &admin, body, 404).await;
    let path = format!("{up}/unlock");
    api.problem(Method::POST, &path, &admin, None, 404).await;
    let path = format!("{up}/sessions");
    api.problem(Method::GET, &path, &admin, None, 404).await;
    // The other user is untouched.
    let path = format!("/users/{other}");
    api.ok(Method::GET, &path, &admin, None, 200).await;
    app.finish().await;
}

async fn sessions_are_listed_and_revoked(app: TestApp) {
    let api = Api::new(&app).await;
    let admin = api.admin.clone();
    let (org, owner) = org_with_owner(&api, "sess").await;
    let user = api.user("s@sess.test", Some(org)).await;
    let open = |org_id: Option<Uuid>| {
        sessions::create(
            &app.state.identity,
            NewSession {
                user_id: user,
                org_id,
                auth_methods: vec!["pwd".into()],
                ip: Some("192.0.2.7".parse().unwrap()),
                user_agent: Some("browser".into()),
                ..Default::default()
            },
        )
    };
    let s1 = open(Some(org)).await.unwrap().session.session_id;
    let s2 = open(None).await.unwrap().session.session_id;

    let list = api
        .ok(
            Method::GET,
            &format!("/users/{user}/sessions"),
            &admin,
            None,
            200,
        )
        .await;
    let ids: BTreeSet<Uuid> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| id(&s["session_id"]))
        .collect();
    assert_eq!(ids, BTreeSet::from([s1, s2]));
    let first = &list.as_array().unwrap()[0];
    assert_eq!(first["ip_address"], "192.0.2.7");
    assert!(first.get("refresh_token").is_none() && first.get("refresh_token_hash").is_none());
    // Per org, only that org's sessions.
    let ms = format!("/organizations/{org}/members/{user}/sessions");
    let list = api.ok(Method::GET, &ms, &admin, None, 200).await;
    let ids: Vec<Uuid> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| id(&s["session_id"]))
        .collect();
    assert_eq!(ids, vec![s1]);

    // Another user's path with this session id: 404; the right one: 204.
    let wrong = format!("/users/{owner}/sessions/{s2}");
    api.problem(Method::DELETE, &wrong, &admin, None, 404).await;
    let right = format!("/users/{user}/sessions/{s2}");
    api.ok(Method::DELETE, &right, &admin, None, 204).await;
    let list = api
        .ok(
            Method::GET,
            &format!("/users/{user}/sessions"),
            &admin,
            None,
            200,
        )
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1);

    // Revoking every session of a member, with an org key holding sessions:write.
    let (key, _) = api
        .key(owner, Some(org), &["sessions:write", "members:read"])
        .await;
    let v = api.ok(Method::DELETE, &ms, &key, None, 200).await;
    assert_eq!(v["revoked"], 1);
    let list = api.ok(Method::GET, &ms, &key, None, 200).await;
    assert_eq!(list, json!([]));
    // Without sessions:write: 403.
    let (reader, _) = api.key(owner, Some(org), &["members:read"]).await;
    api.problem(Method::DELETE, &ms, &reader, None, 403).await;
    app.finish().await;
}

async fn api_keys_are_shown_once_and_bounded_by_the_creator(app: TestApp) {
    let api = Api::new(&app).await;
    let admin = api.admin.clone();
    let (org, owner) = org_with_owner(&api, "keys").await;
    let other = api.org("otherkeys").await;
    api.add_member(other, owner, "owner").await;

    let created = api
        .ok(
            Method::POST,
            "/api-keys",
            &admin,
            Some(
                json!({ "user_id": owner, "org_id": org, "description": "ci",
                         "permissions": ["members:read", "api_keys:write"] }),
            ),
            201,
        )
        .await;
    let parent = created["key"].as_str().unwrap().to_string();
    assert!(parent.starts_with("lk_"), "{parent}");
    let k = &created["api_key"];
    assert!(k.get("key").is_none() && k.get("key_hash").is_none(), "{k}");
    assert_eq!(k["org_id"], json!(org));
    assert_eq!(k["is_admin"], false);
    assert!(parent.starts_with(&format!("lk_{}_", k["key_prefix"].as_str().unwrap())));

    // An org key mints within its reach: a subset of its permissions, in its org.
    let child = api
        .ok(
            Method::POST,
            "/api-keys",
            &parent,
            Some(json!({ "permissions": ["members:read"] })),
            201,
        )
        .await;
    let child_key = child["key"].as_str().unwrap().to_string();
    let child_id = id(&child["api_key"]["api_key_id"]);
    assert_eq!(child["api_key"]["org_id"], json!(org));
    assert_eq!(child["api_key"]["user_id"], json!(owner));
    let members = format!("/organizations/{org}/members");
    api.ok(Method::GET, &members, &child_key, None, 200).await;
    // A permission it lacks: 403 (though the owner holds it).
    let more = Some(json!({ "permissions": ["roles:write"] }));
    let v = api
        .problem(Method::POST, "/api-keys", &parent, more, 403)
        .await;
    assert!(v["detail"].as_str().unwrap().contains("roles:write"), "{v}");
    // Another org: 404; an admin key or another owner: 403; unknown permission: 422.
    let body = Some(json!({ "org_id": other, "permissions": [] }));
    api.problem(Method::POST, "/api-keys", &parent, body, 404)
        .await;
    let body = Some(json!({ "is_admin": true }));
    api.problem(Method::POST, "/api-keys", &parent, body, 403)
        .await;
    let stranger = api.user("stranger@keys.test", Some(org)).await;
    let body = Some(json!({ "user_id": stranger }));
    api.problem(Method::POST, "/api-keys", &parent, body, 403)
        .await;
    let body = Some(json!({ "permissions": ["root:everything"] }));
    let v = api
        .problem(Method::POST, "/api-keys", &admin, body, 422)
        .await;
    assert_eq!(v["field"], "permissions");

    // Listing never shows a key or a hash.
    let r = api.call(Method::GET, "/api-keys", &admin, None).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for secret in [&parent, &child_key, &api.admin] {
        // The whole secret part (`lk_<prefix>_<secret>`; the secret may contain `_`).
        let tail = secret.splitn(3, '_').nth(2).unwrap();
        assert!(!text.contains(tail), "a secret leaked into the listing");
    }
    let listed: Value = serde_json::from_str(&text).unwrap();
    for k in listed["data"].as_array().unwrap() {
        assert!(k.get("key").is_none() && k.get("key_hash").is_none(), "{k}");
    }
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
    // A non-admin key lists only its owner's keys.
    let own = api.ok(Method::GET, "/api-keys", &parent, None, 200).await;
    let own: BTreeSet<Uuid> = own["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| id(&k["user_id"]))
        .collect();
    assert_eq!(own, BTreeSet::from([owner]));

    // Revoking: the key is then 401; another owner's key is 404 to a non-admin.
    let (strangers_key, strangers_id) = api.key(stranger, Some(org), &[]).await;
    let path = format!("/api-keys/{strangers_id}");
    api.problem(Method::DELETE, &path, &parent, None, 404).await;
    let r = api
        .call(Method::GET, "/api-keys", &strangers_key, None)
        .await;
    assert_eq!(r.status(), 200, "the stranger's key still works");
    let v = api
        .ok(
            Method::DELETE,
            &format!("/api-keys/{child_id}"),
            &parent,
            None,
            200,
        )
        .await;
    assert_eq!(v["revoked"], true);
    assert!(v.get("key_hash").is_none());
    let r = api.call(Method::GET, &members, &child_key, None).await;
    expect_401(r, "revoked child").await;
    let path = format!("/api-keys/{}", Uuid::now_v7());
    api.problem(Method::DELETE, &path, &admin, None, 404).await;
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// Audit

async fn mutations_are_audited_as_the_key(app: TestApp) {
    let api = Api::new(&app).await;
    let (org, owner) = org_with_owner(&api, "audited").await;
    let newcomer = api.user("new@audited.test", None).await;
    let (key, key_id) = api.key(owner, Some(org), ALL).await;
    let o = format!("/organizations/{org}");
    let body = Some(json!({ "name": "auditors" }));
    let role = api
        .ok(Method::POST, &format!("{o}/roles"), &key, body, 201)
        .await;
    let role_id = id(&role["role_id"]);
    let body = Some(json!({ "user_id": newcomer }));
    api.ok(Method::POST, &format!("{o}/members"), &key, body, 201)
        .await;

    let path = format!("/audit-logs?org_id={org}&actor_type=api_key&actor_id={key_id}");
    let page = api.ok(Method::GET, &path, &key, None, 200).await;
    let rows = page["data"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{page}");
    for r in rows {
        assert_eq!(r["actor_type"], "api_key", "{r}");
        assert_eq!(r["actor_id"], key_id.to_string(), "{r}");
        assert_eq!(r["user_id"], json!(owner), "{r}");
        assert_eq!(r["ip_address"], "127.0.0.1", "{r}");
        assert_eq!(r["user_agent"], UA, "{r}");
        assert_eq!(r["org_id"], json!(org), "{r}");
    }
    let objects: BTreeSet<&str> = rows
        .iter()
        .map(|r| r["object_id"].as_str().unwrap())
        .collect();
    assert!(objects.contains(role_id.to_string().as_str()), "{page}");
    assert!(
        rows.iter()
            .any(|r| r["action"] == "membership.created"
                && r["details"]["user_id"] == json!(newcomer)),
        "{page}"
    );
    // The admin's own mutations are recorded with the admin key's id, no owner.
    let all = format!("/audit-logs?org_id={org}&limit=200");
    let page = api.ok(Method::GET, &all, &api.admin, None, 200).await;
    let every = page["data"].as_array().unwrap().clone();
    assert!(every.len() > 2);
    assert!(
        every
            .iter()
            .filter(|r| r["actor_id"] != key_id.to_string())
            .all(|r| r["actor_type"] == "api_key" && r["user_id"].is_null()),
        "{page}"
    );

    // Export: the same rows as JSON lines.
    let r = api
        .call(
            Method::GET,
            &format!("/audit-logs/export?org_id={org}"),
            &key,
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let text = r.text().await.unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, every);
    // Filters apply to the export too.
    let path = format!("/audit-logs/export?org_id={org}&action=role.created");
    let r = api.call(Method::GET, &path, &key, None).await;
    let text = r.text().await.unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    // audit:read is required.
    let (no_audit, _) = api.key(owner, Some(org), &["members:read"]).await;
    let path = format!("/audit-logs?org_id={org}");
    api.problem(Method::GET, &path, &no_audit, None, 403).await;
    let path = format!("/audit-logs/export?org_id={org}");
    api.problem(Method::GET, &path, &no_audit, None, 403).await;
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// Bad input

async fn bad_input_is_a_4xx_problem_never_500(app: TestApp) {
    let api = Api::new(&app).await;
    let admin = api.admin.clone();
    let org = api.org("input").await;
    let user = api.user("in@input.test", Some(org)).await;

    for path in [
        "/organizations/not-a-uuid".to_string(),
        "/users/123".to_string(),
        format!("/organizations/{org}/members/xyz"),
        format!("/organizations/{org}/roles/{}x", Uuid::now_v7()),
    ] {
        let method = if path.contains("/roles/") {
            Method::DELETE
        } else {
            Method::GET
        };
        let v = api.problem(method, &path, &admin, None, 400).await;
        assert_eq!(v["type"], "urn:lintel:problem:bad-request", "{path}");
    }
    let bad_query = [
        "/audit-logs?org_id=nope".to_string(),
        format!("/audit-logs?org_id={org}&since=yesterday"),
    ];
    for path in bad_query {
        api.problem(Method::GET, &path, &admin, None, 400).await;
    }

    let post = |path: &str, ct: Option<&str>, body: &'static str| {
        let mut r = api.req(Method::POST, path, Some(&admin)).body(body);
        if let Some(ct) = ct {
            r = r.header("content-type", ct);
        }
        r
    };
    let members = format!("/organizations/{org}/members");
    let json_ct = Some("application/json");
    let cases: Vec<(RequestBuilder, u16, &str)> = vec![
        (post("/organizations", json_ct, "{nope"), 400, "malformed"),
        (post("/organizations", json_ct, ""), 400, "empty"),
        (post("/organizations", json_ct, "[1,2]"), 400, "wrong shape"),
        (
            post("/organizations", json_ct, r#"{"org_name": 5}"#),
            400,
            "wrong type",
        ),
        (post("/organizations", json_ct, "{}"), 400, "missing field"),
        (
            post("/organizations", Some("text/plain"), r#"{"org_name":"x"}"#),
            415,
            "text/plain",
        ),
        (
            post("/organizations", None, r#"{"org_name":"x"}"#),
            415,
            "no content type",
        ),
        (
            post(&members, json_ct, r#"{"user_id":"nope"}"#),
            400,
            "bad uuid in body",
        ),
    ];
    for (req, status, what) in cases {
        let r = req.send().await.unwrap();
        expect_problem(r, status, what).await;
    }
    // Unknown fields are refused (deny_unknown_fields), as a 4xx problem.
    for (path, body) in [
        (
            "/organizations".to_string(),
            r#"{"org_name":"x","owner":"me"}"#,
        ),
        (format!("/users/{user}"), r#"{"is_admin":true}"#),
        (
            "/api-keys".to_string(),
            r#"{"is_admin":true,"scope":"all"}"#,
        ),
    ] {
        let r = api
            .req(Method::PATCH, &path, Some(&admin))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let r = if r.status() == 405 {
            post(&path, json_ct, body).send().await.unwrap()
        } else {
            r
        };
        let status = r.status().as_u16();
        assert!((400..500).contains(&status), "{path}: {status}");
        let v = expect_problem(r, status, &path).await;
        assert!(
            v["detail"].as_str().unwrap().contains("unknown field"),
            "{v}"
        );
    }
    // Rule-breaking values are 422 naming the field, never 500.
    for (path, body, field) in [
        (
            "/organizations".to_string(),
            json!({ "org_name": "" }),
            "org_name",
        ),
        (
            "/organizations".to_string(),
            json!({ "org_name": "x", "url_safe_org_name": "Not Safe!" }),
            "url_safe_org_name",
        ),
        (
            format!("/organizations/{org}/roles"),
            json!({ "name": "" }),
            "name",
        ),
        ("/users".to_string(), json!({ "email": "" }), "email"),
    ] {
        let r = api.call(Method::POST, &path, &admin, Some(body)).await;
        let status = r.status().as_u16();
        let v = expect_problem(r, status, &path).await;
        assert_eq!(status, 422, "{path}: {v}");
        assert_eq!(v["field"], field, "{path}: {v}");
    }
    let body = Some(json!({ "org_role_structure": "anarchy" }));
    let path = format!("/organizations/{org}");
    api.problem(Method::PATCH, &path, &admin, body, 422).await;
    // Unknown ids in bodies: 404, not 500.
    let body = Some(json!({ "user_id": Uuid::now_v7() }));
    api.problem(Method::POST, &members, &admin, body, 404).await;
    let body = Some(json!({ "name": "x" }));
    let path = format!("/organizations/{org}/roles/{}", Uuid::now_v7());
    api.problem(Method::PATCH, &path, &admin, body, 404).await;
    // The body is read before the id is looked up: a bad body under an unknown id is 400.
    let body = Some(json!({ "org_name": "x" }));
    api.problem(Method::PATCH, &path, &admin, body, 400).await;
    // Wrong method on a known path: 405 problem.
    api.problem(Method::PUT, "/users", &admin, None, 405).await;
    app.finish().await;
}

// ---------------------------------------------------------------------------------------
// OpenAPI

async fn openapi_document_describes_every_route(app: TestApp) {
    let api = Api::new(&app).await;
    let r = api
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let doc: Value = r.json().await.unwrap();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["scheme"],
        "bearer"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["api_key"]["type"],
        "http"
    );
    let global = doc["security"].as_array().cloned().unwrap_or_default();
    let paths = doc["paths"].as_object().unwrap();

    // What the router serves (by reading the handlers) is in the document.
    for (method, path) in [
        ("get", "/api/v1/organizations"),
        ("post", "/api/v1/organizations"),
        ("patch", "/api/v1/organizations/{org_id}"),
        (
            "put",
            "/api/v1/organizations/{org_id}/login-methods/{method}",
        ),
        ("delete", "/api/v1/organizations/{org_id}/domains/{domain}"),
        ("get", "/api/v1/organizations/{org_id}/members"),
        (
            "delete",
            "/api/v1/organizations/{org_id}/members/{user_id}/roles/{role_id}",
        ),
        (
            "delete",
            "/api/v1/organizations/{org_id}/members/{user_id}/sessions",
        ),
        (
            "get",
            "/api/v1/organizations/{org_id}/members/{user_id}/mfa-devices",
        ),
        (
            "post",
            "/api/v1/organizations/{org_id}/roles/{role_id}/parents",
        ),
        (
            "delete",
            "/api/v1/organizations/{org_id}/roles/{role_id}/permissions/{permission_id}",
        ),
        ("post", "/api/v1/organizations/{org_id}/permissions"),
        ("get", "/api/v1/users"),
        ("put", "/api/v1/users/{user_id}/password"),
        ("post", "/api/v1/users/{user_id}/unlock"),
        ("delete", "/api/v1/users/{user_id}/sessions/{session_id}"),
        ("post", "/api/v1/api-keys"),
        ("delete", "/api/v1/api-keys/{api_key_id}"),
        ("get", "/api/v1/audit-logs"),
        ("get", "/api/v1/audit-logs/export"),
    ] {
        assert!(paths[path].get(method).is_some(), "{method} {path} missing");
    }

    // And everything in the document is served: without a key each operation is a 401
    // (an unknown route would be a 404), and each declares the api_key security.
    let methods = ["get", "post", "put", "patch", "delete"];
    let mut operations = 0;
    for (path, item) in paths {
        assert!(path.starts_with("/api/v1/"), "{path}");
        for (method, op) in item.as_object().unwrap() {
            if !methods.contains(&method.as_str()) {
                continue;
            }
            operations += 1;
            let security = op
                .get("security")
                .and_then(|s| s.as_array())
                .cloned()
                .unwrap_or_else(|| global.clone());
            // The one public operation: joining the waitlist.
            let public = path == "/api/v1/waitlist" && method == "post";
            assert_eq!(
                security.iter().any(|s| s.get("api_key").is_some()),
                !public,
                "{method} {path}: api_key requirement"
            );
            let concrete = path
                .split('/')
                .map(|seg| match seg {
                    "{method}" => "password".to_string(),
                    "{domain}" => "example.com".to_string(),
                    "{policy_id}" => "1".to_string(),
                    s if s.starts_with('{') => Uuid::now_v7().to_string(),
                    s => s.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/");
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let r = api
                .client
                .request(m, app.url(&concrete))
                .send()
                .await
                .unwrap();
            if public {
                // No key needed: an empty body is a problem, never a 401 or a 5xx.
                assert!(
                    r.status().is_client_error() && r.status() != 401,
                    "{method} {path}"
                );
            } else {
                expect_401(r, &format!("{method} {path}")).await;
            }
            // Every operation documents its problem responses.
            let problem = &op["responses"]["4XX"]["content"]["application/problem+json"];
            assert!(problem.is_object(), "{method} {path}: no 4XX problem");
        }
    }
    assert!(operations >= 40, "{operations} operations");
    app.finish().await;
}
