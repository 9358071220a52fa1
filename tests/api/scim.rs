//! The SCIM server over real HTTP on both backends: client tokens and tenancy, discovery,
//! Users and Groups CRUD, filters, listing, PATCH as the big IdPs send it, ETags,
//! concurrency of member PATCHes, Bulk, mappings and group → role rules, and the audit
//! trail with the SCIM client as actor.
use crate::helpers::TestApp;
use crate::on_both_backends;
use lintel::identity::{audit, memberships, orgs, users};
use lintel::scim::clients;
use lintel::store::audit::Filter;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use uuid::Uuid;

on_both_backends!(
    discovery_endpoints_describe_the_schemas,
    tokens_authenticate_rotate_and_revoke,
    tenancy_keeps_orgs_apart,
    user_lifecycle_create_get_replace_patch_delete,
    user_errors_are_scim_errors,
    filters_listing_sorting_and_projection,
    cursor_pagination_walks_every_user,
    etags_and_preconditions,
    groups_members_and_entra_remove_by_value,
    concurrent_member_patches_lose_nothing,
    bulk_resolves_bulk_ids_and_stops_on_errors,
    deactivation_revokes_org_sessions_and_delete_removes_membership,
    existing_verified_user_is_linked_unverified_refused,
    mappings_apply_on_input_output_and_filters,
    group_roles_follow_group_membership,
    every_change_is_audited_as_the_scim_client,
    root_search_spans_users_and_groups,
    listed_users_follow_every_change_they_are_built_from,
);

const SCIM: &str = "application/scim+json";

/// A SCIM client of a fresh org, speaking to the live server.
struct Scim<'a> {
    app: &'a TestApp,
    token: String,
    org_id: Uuid,
    client_id: Uuid,
}

struct Answer {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl<'a> Scim<'a> {
    async fn new(app: &'a TestApp, org: &str) -> Scim<'a> {
        let id = &app.state.identity;
        let o = orgs::create(id, org, None).await.unwrap();
        let (client, _, secret) = clients::create(id, o.org_id, Some(format!("{org} IdP")))
            .await
            .unwrap();
        Scim {
            app,
            token: secret.expose().clone(),
            org_id: o.org_id,
            client_id: client.client_id,
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        headers: &[(&str, &str)],
    ) -> Answer {
        call_with(self.app, &self.token, method, path, body, headers).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, None, &[]).await
    }

    async fn post(&self, path: &str, body: Value) -> Answer {
        self.call(Method::POST, path, Some(body), &[]).await
    }

    async fn put(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PUT, path, Some(body), &[]).await
    }

    async fn patch(&self, path: &str, body: Value) -> Answer {
        self.call(Method::PATCH, path, Some(body), &[]).await
    }

    async fn delete(&self, path: &str) -> Answer {
        self.call(Method::DELETE, path, None, &[]).await
    }

    async fn user(&self, user_name: &str, email: &str) -> String {
        let a = self
            .post(
                "/Users",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": user_name,
                    "name": { "givenName": "Given", "familyName": user_name },
                    "emails": [{ "value": email, "type": "work", "primary": true }],
                    "active": true
                }),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }

    async fn group(&self, name: &str, members: &[&str]) -> String {
        let members: Vec<Value> = members.iter().map(|m| json!({ "value": m })).collect();
        let a = self
            .post(
                "/Groups",
                json!({
                    "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                    "displayName": name,
                    "members": members
                }),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        a.body["id"].as_str().unwrap().to_string()
    }
}

async fn call_with(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let mut req = app
        .client
        .request(method, app.url(&format!("/scim/v2{path}")))
        .bearer_auth(token);
    if let Some(b) = body {
        req = req.header("content-type", SCIM).body(b.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn assert_scim_error(a: &Answer, status: u16, scim_type: Option<&str>) {
    assert_eq!(a.status.as_u16(), status, "{}", a.body);
    assert_eq!(a.headers["content-type"], SCIM);
    assert_eq!(
        a.body["schemas"],
        json!(["urn:ietf:params:scim:api:messages:2.0:Error"])
    );
    assert_eq!(
        a.body["status"],
        json!(status.to_string()),
        "status is a string"
    );
    match scim_type {
        Some(t) => assert_eq!(a.body["scimType"], json!(t), "{}", a.body),
        None => assert!(a.body.get("scimType").is_none(), "{}", a.body),
    }
}

fn ids(list: &Value) -> Vec<String> {
    list["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

async fn discovery_endpoints_describe_the_schemas(app: TestApp) {
    let s = Scim::new(&app, "disco").await;
    let spc = s.get("/ServiceProviderConfig").await;
    assert_eq!(spc.status, StatusCode::OK);
    assert_eq!(spc.headers["content-type"], SCIM);
    assert_eq!(spc.body["patch"]["supported"], json!(true));
    assert_eq!(spc.body["bulk"]["maxOperations"], json!(1000));
    assert_eq!(spc.body["filter"]["maxResults"], json!(1000));
    assert_eq!(spc.body["etag"]["supported"], json!(true));
    assert_eq!(spc.body["pagination"]["cursor"], json!(true));

    let rts = s.get("/ResourceTypes").await;
    assert_eq!(rts.body["totalResults"], json!(2));
    let user_rt = s.get("/ResourceTypes/User").await;
    assert_eq!(user_rt.body["endpoint"], json!("/Users"));
    assert_eq!(
        user_rt.body["schemaExtensions"][0]["schema"],
        json!("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")
    );
    assert_scim_error(&s.get("/ResourceTypes/Nope").await, 404, None);

    let schemas = s.get("/Schemas").await;
    assert_eq!(schemas.body["totalResults"], json!(3));
    let user = s
        .get("/Schemas/urn:ietf:params:scim:schemas:core:2.0:User")
        .await;
    let attrs = user.body["attributes"].as_array().unwrap();
    let user_name = attrs.iter().find(|a| a["name"] == "userName").unwrap();
    assert_eq!(user_name["uniqueness"], json!("server"));
    assert_eq!(user_name["required"], json!(true));
    assert_eq!(user_name["caseExact"], json!(false));
    let password = attrs.iter().find(|a| a["name"] == "password").unwrap();
    assert_eq!(password["returned"], json!("never"));
    assert_eq!(password["mutability"], json!("writeOnly"));
    assert_scim_error(&s.get("/Schemas/urn:nope").await, 404, None);
    assert_scim_error(&s.get("/Nope").await, 404, None);
    app.finish().await;
}

async fn tokens_authenticate_rotate_and_revoke(app: TestApp) {
    let s = Scim::new(&app, "tokens").await;
    assert_eq!(s.get("/Users").await.status, StatusCode::OK);

    let no_auth = app
        .client
        .get(app.url("/scim/v2/Users"))
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), StatusCode::UNAUTHORIZED);
    assert!(
        no_auth.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let bad = call_with(
        &app,
        "lst_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        Method::GET,
        "/Users",
        None,
        &[],
    )
    .await;
    assert_scim_error(&bad, 401, None);

    // Rotation: the new token works at once, the old one until the overlap ends.
    let id = &app.state.identity;
    let (new_token, new_secret) = clients::rotate_token(id, s.client_id).await.unwrap();
    let new_secret = new_secret.expose().clone();
    let tokens = clients::tokens(id, s.client_id).await.unwrap();
    assert_eq!(tokens.len(), 2);
    let old = tokens
        .iter()
        .find(|t| t.token_id != new_token.token_id)
        .unwrap();
    let overlap_end = old.expires_at.expect("old token now expires");
    let now = chrono::Utc::now();
    assert!(
        overlap_end > now + chrono::Duration::hours(23),
        "24 h overlap by default"
    );
    assert!(overlap_end <= now + chrono::Duration::hours(25));
    assert_eq!(
        s.get("/Users").await.status,
        StatusCode::OK,
        "old token in overlap"
    );
    let new = call_with(&app, &new_secret, Method::GET, "/Users", None, &[]).await;
    assert_eq!(new.status, StatusCode::OK);
    // Stored hashed: the secret is nowhere in the table.
    assert!(
        tokens
            .iter()
            .all(|t| t.token != new_secret && t.token != s.token)
    );

    // Revocation is immediate.
    clients::revoke_token(id, s.client_id, old.token_id)
        .await
        .unwrap();
    assert_scim_error(&s.get("/Users").await, 401, None);
    // Disabling the client stops its other tokens too.
    clients::update(id, s.client_id, None, Some(false))
        .await
        .unwrap();
    let disabled = call_with(&app, &new_secret, Method::GET, "/Users", None, &[]).await;
    assert_scim_error(&disabled, 401, None);
    app.finish().await;
}

async fn tenancy_keeps_orgs_apart(app: TestApp) {
    let a = Scim::new(&app, "tenant-a").await;
    let b = Scim::new(&app, "tenant-b").await;
    let alice = a.user("alice", "alice@a.example").await;
    let group = a.group("A team", &[&alice]).await;
    for path in [format!("/Users/{alice}"), format!("/Groups/{group}")] {
        assert_scim_error(&b.get(&path).await, 404, None);
        assert_scim_error(&b.delete(&path).await, 404, None);
        assert_scim_error(
            &b.patch(
                &path,
                json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations":[{"op":"replace","path":"displayName","value":"x"}]}),
            )
            .await,
            404,
            None,
        );
    }
    let found = b.get("/Users?filter=userName%20eq%20%22alice%22").await;
    assert_eq!(found.body["totalResults"], json!(0));
    let all = b.get("/Users").await;
    assert_eq!(all.body["totalResults"], json!(0));
    // B cannot put A's user into its own group.
    let g = b
        .post(
            "/Groups",
            json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName":"B", "members":[{"value": alice}]}),
        )
        .await;
    assert_scim_error(&g, 400, Some("invalidValue"));
    // The same userName may exist in another org.
    b.user("alice", "alice@b.example").await;
    assert_eq!(a.get("/Users").await.body["totalResults"], json!(1));
    app.finish().await;
}

async fn user_lifecycle_create_get_replace_patch_delete(app: TestApp) {
    let s = Scim::new(&app, "life").await;
    let created = s
        .post(
            "/Users",
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User",
                            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],
                "externalId": "ext-1",
                "userName": "Barbara.Jensen@example.com",
                "name": { "givenName": "Barbara", "familyName": "Jensen", "formatted": "Ms. Barbara J Jensen" },
                "displayName": "Babs Jensen",
                "title": "Tour Guide",
                "emails": [{ "value": "bjensen@example.com", "type": "work", "primary": true }],
                "phoneNumbers": [{ "value": "555-555-8377", "type": "work" }],
                "password": "correct horse battery staple",
                "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User": {
                    "employeeNumber": "701984", "department": "Tour Operations",
                    "manager": { "value": "26118915-6090-4610-87e4-49d8ca9f808d" }
                }
            }),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_string();
    let location = created.headers["location"].to_str().unwrap().to_string();
    assert!(
        location.ends_with(&format!("/scim/v2/Users/{id}")),
        "{location}"
    );
    assert_eq!(created.body["meta"]["location"], json!(location));
    assert_eq!(created.body["meta"]["resourceType"], json!("User"));
    assert_eq!(created.body["meta"]["version"], json!("W/\"1\""));
    assert_eq!(created.headers["etag"], "W/\"1\"");
    assert!(
        created.body.get("password").is_none(),
        "password is never returned"
    );
    assert_eq!(created.body["externalId"], json!("ext-1"));
    assert!(
        created.body.get("active").is_none(),
        "not sent, not shown (it is true)"
    );
    assert_eq!(created.body["title"], json!("Tour Guide"));

    // Landed in Lintel: the user, the membership, a usable password, properties.
    let user = users::find_by_email(&app.state.identity, "bjensen@example.com")
        .await
        .unwrap();
    assert_eq!(user.user_id.to_string(), id);
    assert_eq!(user.first_name.as_deref(), Some("Barbara"));
    assert_eq!(user.last_name.as_deref(), Some("Jensen"));
    assert_eq!(user.properties.0["department"], json!("Tour Operations"));
    assert_eq!(user.properties.0["employeeNumber"], json!("701984"));
    assert!(user.has_password);
    memberships::get(&app.state.identity, s.org_id, user.user_id)
        .await
        .unwrap();

    let got = s.get(&format!("/Users/{id}")).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["userName"], json!("Barbara.Jensen@example.com"));
    assert_eq!(got.body["phoneNumbers"][0]["value"], json!("555-555-8377"));

    // PUT replaces: attributes left out are gone, mapped columns follow.
    let put = s
        .put(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                "userName": "Barbara.Jensen@example.com",
                "name": { "givenName": "Barb", "familyName": "Jensen" },
                "emails": [{ "value": "bjensen@example.com", "type": "work", "primary": true }]
            }),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert!(put.body.get("title").is_none(), "{}", put.body);
    assert_eq!(put.body["meta"]["version"], json!("W/\"2\""));
    let user = users::get(&app.state.identity, user.user_id).await.unwrap();
    assert_eq!(user.first_name.as_deref(), Some("Barb"));

    // PATCH as Entra sends it: capitalised op, string boolean, dotted keys without path.
    let patched = s
        .patch(
            &format!("/Users/{id}"),
            json!({
                "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations": [
                    { "op": "Replace", "path": "title", "value": "Head Guide" },
                    { "op": "Add", "value": { "name.familyName": "Jensen-Smith", "nickName": "Babs" } },
                    { "op": "replace", "path": "emails[type eq \"work\"].value", "value": "babs@example.com" },
                    { "op": "Replace", "path": "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department", "value": "Guides" }
                ]
            }),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.body);
    assert_eq!(patched.body["title"], json!("Head Guide"));
    assert_eq!(patched.body["nickName"], json!("Babs"));
    assert_eq!(patched.body["name"]["familyName"], json!("Jensen-Smith"));
    assert_eq!(
        patched.body["emails"][0]["value"],
        json!("babs@example.com")
    );
    let user = users::get(&app.state.identity, user.user_id).await.unwrap();
    assert_eq!(user.email, "babs@example.com");
    assert_eq!(user.last_name.as_deref(), Some("Jensen-Smith"));
    assert_eq!(user.properties.0["department"], json!("Guides"));

    // DELETE: gone for SCIM, and the user too (no other org, no... password? they have one).
    let del = s.delete(&format!("/Users/{id}")).await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    assert_scim_error(&s.get(&format!("/Users/{id}")).await, 404, None);
    assert_scim_error(&s.delete(&format!("/Users/{id}")).await, 404, None);
    assert!(
        memberships::get(&app.state.identity, s.org_id, user.user_id)
            .await
            .is_err()
    );
    // They have a password (another way in), so the account itself stays.
    assert!(users::get(&app.state.identity, user.user_id).await.is_ok());

    // A user with nothing else is deleted with the membership.
    let lone = s.user("lone", "lone@example.com").await;
    assert_eq!(
        s.delete(&format!("/Users/{lone}")).await.status,
        StatusCode::NO_CONTENT
    );
    assert!(
        users::find_by_email(&app.state.identity, "lone@example.com")
            .await
            .is_err()
    );
    app.finish().await;
}

async fn user_errors_are_scim_errors(app: TestApp) {
    let s = Scim::new(&app, "errors").await;
    let id = s.user("dup", "dup@example.com").await;
    // userName is unique per org, case-insensitively (caseExact false).
    let dup = s
        .post(
            "/Users",
            json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName":"DUP","emails":[{"value":"other@example.com"}]}),
        )
        .await;
    assert_scim_error(&dup, 409, Some("uniqueness"));
    let no_name = s
        .post(
            "/Users",
            json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"]}),
        )
        .await;
    assert_scim_error(&no_name, 400, Some("invalidValue"));
    // Without any email the user gets an unroutable placeholder that SCIM never shows.
    let no_email = s
        .post(
            "/Users",
            json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"], "userName":"nomail"}),
        )
        .await;
    assert_eq!(no_email.status, StatusCode::CREATED, "{}", no_email.body);
    assert!(no_email.body.get("emails").is_none(), "{}", no_email.body);
    let uid = Uuid::parse_str(no_email.body["id"].as_str().unwrap()).unwrap();
    let stored = users::get(&app.state.identity, uid).await.unwrap();
    assert!(stored.email.ends_with(".invalid"), "{}", stored.email);

    let raw = app
        .client
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(&s.token)
        .header("content-type", SCIM)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::BAD_REQUEST);
    let body: Value = raw.json().await.unwrap();
    assert_eq!(body["scimType"], json!("invalidSyntax"));
    let wrong_type = app
        .client
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(&s.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // application/json is accepted too.
    let plain = app
        .client
        .post(app.url("/scim/v2/Users"))
        .bearer_auth(&s.token)
        .json(
            &json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName":"plain@example.com"}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::CREATED);

    assert_scim_error(
        &s.get("/Users?filter=userName%20eq").await,
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(
        &s.get("/Users?filter=nope%20eq%20%22x%22").await,
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(&s.get("/Users?filter=((((((((((((((((((((((((((((((((((userName%20pr))))))))))))))))))))))))))))))))))").await, 400, Some("invalidFilter"));
    assert_scim_error(
        &s.get("/Users?startIndex=x").await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &s.get("/Users?sortBy=nope").await,
        400,
        Some("invalidValue"),
    );
    // RFC 7644 §3.4.2.3: a multi-valued sortBy orders by the primary value.
    assert_eq!(s.get("/Users?sortBy=emails").await.status, StatusCode::OK);
    assert_scim_error(&s.get("/Users/not-a-uuid").await, 404, None);
    assert_scim_error(
        &s.get(&format!("/Users/{}", Uuid::now_v7())).await,
        404,
        None,
    );

    // Mutability: id is readOnly in a path; nothing of a failing request is applied.
    let before = s.get(&format!("/Users/{id}")).await;
    let bad = s
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[
                {"op":"replace","path":"title","value":"changed"},
                {"op":"replace","path":"id","value":"x"}
            ]}),
        )
        .await;
    assert_scim_error(&bad, 400, Some("mutability"));
    let after = s.get(&format!("/Users/{id}")).await;
    assert_eq!(before.body, after.body, "all operations or none");
    let no_target = s
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                "Operations":[{"op":"remove"}]}),
        )
        .await;
    assert_scim_error(&no_target, 400, Some("noTarget"));
    let not_patch = s
        .patch(
            &format!("/Users/{id}"),
            json!({"Operations":[{"op":"add","path":"title","value":"x"}]}),
        )
        .await;
    assert_scim_error(&not_patch, 400, Some("invalidSyntax"));
    app.finish().await;
}

async fn filters_listing_sorting_and_projection(app: TestApp) {
    let s = Scim::new(&app, "filters").await;
    let mut all = Vec::new();
    for (n, title) in [
        ("carol", "Engineer"),
        ("alice", "Manager"),
        ("bob", "Engineer"),
        ("dave", "Intern"),
    ] {
        let a = s
            .post(
                "/Users",
                json!({
                    "schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
                    "userName": n, "title": title, "externalId": format!("x-{n}"),
                    "name": {"givenName": n.to_uppercase(), "familyName": "Test"},
                    "emails":[{"value": format!("{n}@example.com"), "type":"work", "primary": true},
                              {"value": format!("{n}@home.example"), "type":"home"}]
                }),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
        all.push(a.body["id"].as_str().unwrap().to_string());
    }
    let q = |f: &str| format!("/Users?filter={}", urlencoding(f));
    let total = |a: &Answer| a.body["totalResults"].as_i64().unwrap();
    assert_eq!(
        total(&s.get(&q(r#"userName eq "ALICE""#)).await),
        1,
        "caseExact false"
    );
    assert_eq!(total(&s.get(&q(r#"externalId eq "x-bob""#)).await), 1);
    assert_eq!(
        total(&s.get(&q(r#"externalId eq "X-BOB""#)).await),
        0,
        "externalId is caseExact"
    );
    assert_eq!(total(&s.get(&q(r#"title eq "Engineer""#)).await), 2);
    assert_eq!(
        total(
            &s.get(&q(r#"title eq "Engineer" and not (userName sw "c")"#))
                .await
        ),
        1
    );
    assert_eq!(
        total(
            &s.get(&q(
                r#"userName eq "dave" or title eq "Manager" and userName eq "alice""#
            ))
            .await
        ),
        2
    );
    assert_eq!(
        total(
            &s.get(&q(r#"emails[type eq "home" and value co "@home"]"#))
                .await
        ),
        4
    );
    assert_eq!(
        total(&s.get(&q(r#"emails.value eq "carol@home.example""#)).await),
        1
    );
    assert_eq!(total(&s.get(&q(r#"emails eq "bob@example.com""#)).await), 1);
    assert_eq!(total(&s.get(&q(r#"name.givenName sw "AL""#)).await), 1);
    assert_eq!(total(&s.get(&q(r#"title ew "ger""#)).await), 1);
    assert_eq!(total(&s.get(&q(r#"nickName pr"#)).await), 0);
    assert_eq!(total(&s.get(&q(r#"title pr"#)).await), 4);
    assert_eq!(
        total(&s.get(&q(r#"userName co "%""#)).await),
        0,
        "% is literal"
    );
    assert_eq!(
        total(
            &s.get(&q(r#"meta.lastModified gt "2000-01-01T00:00:00Z""#))
                .await
        ),
        4
    );
    assert_eq!(total(&s.get(&q(r#"meta.resourceType eq "User""#)).await), 4);
    assert_eq!(
        total(&s.get(&q(&format!(r#"id eq "{}""#, all[0]))).await),
        1
    );
    assert_eq!(total(&s.get(&q(r#"active eq true"#)).await), 4);
    assert_eq!(total(&s.get(&q(r#"title ne "Engineer""#)).await), 2);
    // Injection attempts are values, never SQL.
    assert_eq!(total(&s.get(&q(r#"userName eq "x' OR '1'='1""#)).await), 0);

    // Sorting, paging, count=0.
    let sorted = s.get("/Users?sortBy=userName&sortOrder=descending").await;
    let names: Vec<&str> = sorted.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["dave", "carol", "bob", "alice"]);
    let page = s.get("/Users?sortBy=userName&startIndex=2&count=2").await;
    assert_eq!(page.body["startIndex"], json!(2));
    assert_eq!(page.body["itemsPerPage"], json!(2));
    assert_eq!(page.body["totalResults"], json!(4));
    let names: Vec<&str> = page.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "carol"]);
    let only_total = s.get("/Users?count=0").await;
    assert_eq!(only_total.body["totalResults"], json!(4));
    assert_eq!(only_total.body["Resources"], json!([]));
    let capped = spawn_limited_count(&s).await;
    assert!(capped <= 1000);

    // attributes / excludedAttributes.
    let proj = s
        .get("/Users?attributes=userName,name.givenName&count=1&sortBy=userName")
        .await;
    let r = &proj.body["Resources"][0];
    assert_eq!(r["userName"], json!("alice"));
    assert_eq!(r["name"], json!({"givenName": "ALICE"}));
    assert!(r.get("title").is_none() && r.get("emails").is_none());
    assert!(r.get("id").is_some(), "id is returned always");
    let excl = s
        .get(&format!(
            "/Users/{}?excludedAttributes=emails,title",
            all[0]
        ))
        .await;
    assert!(excl.body.get("emails").is_none() && excl.body.get("title").is_none());
    assert!(excl.body.get("userName").is_some());

    // POST /.search with the same semantics.
    let searched = s
        .post(
            "/Users/.search",
            json!({
                "schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                "filter":"title eq \"Engineer\"", "sortBy":"userName", "attributes":["userName"],
                "startIndex":1, "count":10
            }),
        )
        .await;
    assert_eq!(searched.status, StatusCode::OK, "{}", searched.body);
    let names: Vec<&str> = searched.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bob", "carol"]);
    app.finish().await;
}

/// A count above the advertised maximum is cut to it.
async fn spawn_limited_count(s: &Scim<'_>) -> usize {
    let a = s.get("/Users?count=100000").await;
    assert_eq!(a.status, StatusCode::OK);
    a.body["Resources"].as_array().unwrap().len()
}

fn urlencoding(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn cursor_pagination_walks_every_user(app: TestApp) {
    let s = Scim::new(&app, "cursor").await;
    let mut created = BTreeSet::new();
    for i in 0..7 {
        created.insert(s.user(&format!("u{i}"), &format!("u{i}@example.com")).await);
    }
    let mut seen = Vec::new();
    let mut cursor = String::new();
    let mut pages = 0;
    loop {
        let a = s.get(&format!("/Users?count=3&cursor={cursor}")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["totalResults"], json!(7));
        seen.extend(ids(&a.body));
        pages += 1;
        match a.body.get("nextCursor").and_then(Value::as_str) {
            Some(c) => cursor = c.to_string(),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(seen.len(), 7, "no duplicates, nothing skipped");
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), created);
    assert_scim_error(
        &s.get("/Users?cursor=garbage").await,
        400,
        Some("invalidValue"),
    );
    assert_scim_error(
        &s.get("/Users?cursor=&sortBy=userName").await,
        400,
        Some("invalidValue"),
    );
    app.finish().await;
}

async fn etags_and_preconditions(app: TestApp) {
    let s = Scim::new(&app, "etags").await;
    let id = s.user("etag", "etag@example.com").await;
    let path = format!("/Users/{id}");
    let got = s.get(&path).await;
    let tag = got.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(tag, "W/\"1\"");
    let nm = s
        .call(Method::GET, &path, None, &[("if-none-match", &tag)])
        .await;
    assert_eq!(nm.status, StatusCode::NOT_MODIFIED);
    let body = json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations":[{"op":"replace","path":"title","value":"t"}]});
    let stale = s
        .call(
            Method::PATCH,
            &path,
            Some(body.clone()),
            &[("if-match", "W/\"7\"")],
        )
        .await;
    assert_scim_error(&stale, 412, None);
    let ok = s
        .call(
            Method::PATCH,
            &path,
            Some(body.clone()),
            &[("if-match", &tag)],
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.headers["etag"], "W/\"2\"");
    let again = s
        .call(Method::PATCH, &path, Some(body), &[("if-match", &tag)])
        .await;
    assert_scim_error(&again, 412, None);
    let changed = s
        .call(Method::GET, &path, None, &[("if-none-match", &tag)])
        .await;
    assert_eq!(changed.status, StatusCode::OK);
    let del = s
        .call(Method::DELETE, &path, None, &[("if-match", &tag)])
        .await;
    assert_scim_error(&del, 412, None);
    let del = s
        .call(Method::DELETE, &path, None, &[("if-match", "*")])
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    app.finish().await;
}

async fn groups_members_and_entra_remove_by_value(app: TestApp) {
    let s = Scim::new(&app, "groups").await;
    let u: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..4 {
            v.push(s.user(&format!("m{i}"), &format!("m{i}@example.com")).await);
        }
        v
    };
    let g = s.group("Engineering", &[&u[0], &u[1]]).await;
    let path = format!("/Groups/{g}");
    let got = s.get(&path).await;
    assert_eq!(got.body["displayName"], json!("Engineering"));
    let members: BTreeSet<&str> = got.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        members,
        [u[0].as_str(), u[1].as_str()].into_iter().collect()
    );
    // The user shows the group (readOnly `groups`).
    let user = s.get(&format!("/Users/{}", u[0])).await;
    assert_eq!(user.body["groups"][0]["value"], json!(g));
    assert_eq!(user.body["groups"][0]["display"], json!("Engineering"));
    // A second group: both are shown, on GET and in lists (read in the page's statement).
    let g2 = s.group("Design", &[&u[0]]).await;
    let user = s.get(&format!("/Users/{}", u[0])).await;
    let shown = |doc: &Value| -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = doc["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| {
                (
                    x["value"].as_str().unwrap().to_string(),
                    x["display"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let mut want = vec![
        (g.clone(), "Engineering".to_string()),
        (g2, "Design".to_string()),
    ];
    want.sort();
    assert_eq!(shown(&user.body), want);
    let listed = s
        .get(&format!(
            "/Users?filter=userName%20eq%20%22{}%22",
            user.body["userName"].as_str().unwrap()
        ))
        .await;
    assert_eq!(listed.body["totalResults"], json!(1), "{}", listed.body);
    assert_eq!(shown(&listed.body["Resources"][0]), want);
    let other = s.get(&format!("/Users/{}", u[3])).await;
    assert!(
        other.body.get("groups").is_none_or(|g| g == &json!([])),
        "{}",
        other.body
    );
    let gone = s
        .delete(&format!(
            "/Groups/{}",
            want.iter().find(|w| w.1 == "Design").unwrap().0
        ))
        .await;
    assert_eq!(gone.status, StatusCode::NO_CONTENT);

    // Entra: add members, then remove by a value array with no filter.
    let add = s
        .patch(&path, json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"Add","path":"members","value":[{"value": u[2]},{"value": u[3]}]}]}))
        .await;
    assert_eq!(add.status, StatusCode::OK, "{}", add.body);
    assert_eq!(add.body["members"].as_array().unwrap().len(), 4);
    let remove = s
        .patch(&path, json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"Remove","path":"members","value":[{"value": u[0]},{"value": u[2]}]}]}))
        .await;
    assert_eq!(remove.status, StatusCode::OK, "{}", remove.body);
    let left: BTreeSet<&str> = remove.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap())
        .collect();
    assert_eq!(left, [u[1].as_str(), u[3].as_str()].into_iter().collect());
    // RFC filter form, and a rename.
    let f = s
        .patch(
            &path,
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[
                {"op":"remove","path": format!("members[value eq \"{}\"]", u[1])},
                {"op":"replace","path":"displayName","value":"Eng"}
            ]}),
        )
        .await;
    assert_eq!(f.status, StatusCode::OK, "{}", f.body);
    assert_eq!(f.body["displayName"], json!("Eng"));
    assert_eq!(f.body["members"].as_array().unwrap().len(), 1);
    // Okta: PUT with the full member list.
    let put = s
        .put(
            &path,
            json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "id": g, "displayName":"Eng", "members":[{"value": u[0]}, {"value": u[1]}]}),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{}", put.body);
    assert_eq!(put.body["members"].as_array().unwrap().len(), 2);
    // Filters on groups.
    let q = s
        .get(&format!(
            "/Groups?filter={}",
            urlencoding(&format!(r#"members[value eq "{}"]"#, u[0]))
        ))
        .await;
    assert_eq!(ids(&q.body), vec![g.clone()]);
    let q = s
        .get(&format!(
            "/Groups?filter={}&excludedAttributes=members",
            urlencoding(r#"displayName eq "eng""#)
        ))
        .await;
    assert_eq!(q.body["totalResults"], json!(1));
    assert!(q.body["Resources"][0].get("members").is_none());
    // Unknown member: 400 and nothing changes.
    let bad = s
        .patch(
            &path,
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"add","path":"members","value":[{"value": Uuid::now_v7()}]}]}),
        )
        .await;
    assert_scim_error(&bad, 400, Some("invalidValue"));
    assert_eq!(
        s.get(&path).await.body["members"].as_array().unwrap().len(),
        2
    );
    assert_eq!(s.delete(&path).await.status, StatusCode::NO_CONTENT);
    assert_scim_error(&s.get(&path).await, 404, None);
    assert!(
        s.get(&format!("/Users/{}", u[0]))
            .await
            .body
            .get("groups")
            .is_none()
    );
    app.finish().await;
}

async fn concurrent_member_patches_lose_nothing(app: TestApp) {
    let s = Scim::new(&app, "concurrent").await;
    // 16 clients, each owning 3 users: all start in the group, each client removes its
    // first and adds its other two... in parallel PATCHes.
    let mut owned: Vec<Vec<String>> = Vec::new();
    for c in 0..16 {
        let mut mine = Vec::new();
        for i in 0..3 {
            mine.push(
                s.user(&format!("c{c}u{i}"), &format!("c{c}u{i}@example.com"))
                    .await,
            );
        }
        owned.push(mine);
    }
    let initial: Vec<&str> = owned.iter().map(|m| m[0].as_str()).collect();
    let g = s.group("Contended", &initial).await;
    let path = format!("/Groups/{g}");
    let mut tasks = Vec::new();
    for mine in owned.clone() {
        let app_url = app.url(&format!("/scim/v2{path}"));
        let token = s.token.clone();
        let client = app.client.clone();
        tasks.push(tokio::spawn(async move {
            let ops = [
                json!({"op":"add","path":"members","value":[{"value": mine[1]}, {"value": mine[2]}]}),
                json!({"op":"remove","path": format!("members[value eq \"{}\"]", mine[0])}),
                json!({"op":"remove","path":"members","value":[{"value": mine[2]}]}),
            ];
            for op in ops {
                let body = json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations":[op]});
                let r = client
                    .patch(&app_url)
                    .bearer_auth(&token)
                    .header("content-type", SCIM)
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let got = s.get(&path).await;
    let members: BTreeSet<String> = got.body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = owned.iter().map(|m| m[1].clone()).collect();
    assert_eq!(members, expected);
    app.finish().await;
}

async fn bulk_resolves_bulk_ids_and_stops_on_errors(app: TestApp) {
    let s = Scim::new(&app, "bulk").await;
    let r = s
        .post("/Bulk", json!({
            "schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations":[
                {"method":"POST","path":"/Users","bulkId":"u1","data":{
                    "schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bulk1@example.com"}},
                {"method":"POST","path":"/Groups","bulkId":"g1","data":{
                    "schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Bulk",
                    "members":[{"type":"User","value":"bulkId:u1"}]}},
                {"method":"PATCH","path":"/Users/bulkId:u1","data":{
                    "schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations":[{"op":"add","path":"title","value":"Bulked"}]}}
            ]}))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.body);
    let ops = r.body["Operations"].as_array().unwrap();
    assert_eq!(
        ops.iter()
            .map(|o| o["status"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["201", "201", "200"]
    );
    let group_loc = ops[1]["location"].as_str().unwrap();
    let gid = group_loc.rsplit('/').next().unwrap();
    let group = s.get(&format!("/Groups/{gid}")).await;
    let uid = ops[0]["location"]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap();
    assert_eq!(group.body["members"][0]["value"], json!(uid));
    assert_eq!(
        s.get(&format!("/Users/{uid}")).await.body["title"],
        json!("Bulked")
    );

    // failOnErrors: 1 stops after the first failure.
    let r = s
        .post("/Bulk", json!({
            "schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "failOnErrors": 1,
            "Operations":[
                {"method":"POST","path":"/Users","bulkId":"a","data":{
                    "schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bulk1@example.com"}},
                {"method":"POST","path":"/Users","bulkId":"b","data":{
                    "schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"bulk2@example.com"}}
            ]}))
        .await;
    let ops = r.body["Operations"].as_array().unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0]["status"], json!("409"));
    assert_eq!(ops[0]["response"]["scimType"], json!("uniqueness"));
    let total = s.get("/Users").await.body["totalResults"].clone();
    assert_eq!(total, json!(1), "the second operation never ran");
    // An undefined bulkId is that operation's error.
    let r = s
        .post(
            "/Bulk",
            json!({
            "schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations":[{"method":"DELETE","path":"/Users/bulkId:nope"}]}),
        )
        .await;
    assert_eq!(r.body["Operations"][0]["status"], json!("409"));
    // A reference to a user created later in the request: the creation runs first
    // (RFC 7644 §3.7.2).
    let r = s
        .post(
            "/Bulk",
            json!({
            "schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
            "Operations":[
                {"method":"POST","path":"/Groups","bulkId":"g","data":{
                    "schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"displayName":"Forward",
                    "members":[{"value":"bulkId:later"}]}},
                {"method":"POST","path":"/Users","bulkId":"later","data":{
                    "schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],"userName":"later@example.com"}}
            ]}),
        )
        .await;
    let ops = r.body["Operations"].as_array().unwrap();
    assert_eq!(ops.len(), 2, "{}", r.body);
    assert!(
        ops.iter().all(|o| o["status"] == json!("201")),
        "{}",
        r.body
    );
    let g = ops.iter().find(|o| o["bulkId"] == json!("g")).unwrap();
    let gid = g["location"].as_str().unwrap().rsplit('/').next().unwrap();
    assert_eq!(
        s.get(&format!("/Groups/{gid}")).await.body["members"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // maxOperations.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"method":"DELETE","path":format!("/Users/{i}")}))
        .collect();
    let r = s
        .post("/Bulk", json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:BulkRequest"], "Operations": many}))
        .await;
    assert_scim_error(&r, 413, Some("tooLarge"));
    app.finish().await;
}

async fn deactivation_revokes_org_sessions_and_delete_removes_membership(app: TestApp) {
    use lintel::identity::sessions::{self, NewSession};
    let s = Scim::new(&app, "deact").await;
    let id = s.user("sess", "sess@example.com").await;
    let uid = Uuid::parse_str(&id).unwrap();
    let issued = sessions::create(
        &app.state.identity,
        NewSession {
            user_id: uid,
            org_id: Some(s.org_id),
            auth_methods: vec!["pwd".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let off = s
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"Replace","path":"active","value":"False"}]}),
        )
        .await;
    assert_eq!(off.status, StatusCode::OK, "{}", off.body);
    assert_eq!(off.body["active"], json!(false));
    assert!(
        sessions::validate(&app.state.identity, issued.session.session_id)
            .await
            .is_err()
    );
    // Their only org: the account is disabled too.
    let user = users::get(&app.state.identity, uid).await.unwrap();
    assert!(!user.enabled);
    // Re-enabled by an admin, the user still gets no session in the org: the membership
    // itself is inactive.
    users::set_enabled(&app.state.identity, uid, true)
        .await
        .unwrap();
    let refused = sessions::create(
        &app.state.identity,
        NewSession {
            user_id: uid,
            org_id: Some(s.org_id),
            auth_methods: vec!["pwd".into()],
            ..Default::default()
        },
    )
    .await;
    assert!(
        matches!(
            refused,
            Err(lintel::identity::IdentityError::AccountDisabled)
        ),
        "{refused:?}"
    );
    let filtered = s
        .get(&format!("/Users?filter={}", urlencoding("active eq false")))
        .await;
    assert_eq!(ids(&filtered.body), vec![id.clone()]);
    let on = s
        .patch(
            &format!("/Users/{id}"),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"replace","value":{"active":true}}]}),
        )
        .await;
    assert_eq!(on.body["active"], json!(true));
    assert!(users::get(&app.state.identity, uid).await.unwrap().enabled);
    app.finish().await;
}

async fn existing_verified_user_is_linked_unverified_refused(app: TestApp) {
    let s = Scim::new(&app, "link").await;
    let idt = &app.state.identity;
    let (verified, _) = users::create(
        idt,
        users::NewUser {
            email: "verified@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    lintel::store::users::update(
        &mut idt.db.conn().await.unwrap(),
        &lintel::store::users::User {
            email_confirmed: true,
            ..verified.clone()
        },
    )
    .await
    .unwrap();
    users::create(
        idt,
        users::NewUser {
            email: "unverified@example.com".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let linked = s
        .post(
            "/Users",
            json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName":"verified@example.com"}),
        )
        .await;
    assert_eq!(linked.status, StatusCode::CREATED, "{}", linked.body);
    assert_eq!(linked.body["id"], json!(verified.user_id));
    memberships::get(idt, s.org_id, verified.user_id)
        .await
        .unwrap();
    let refused = s
        .post(
            "/Users",
            json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName":"unverified@example.com"}),
        )
        .await;
    assert_scim_error(&refused, 409, Some("uniqueness"));
    let log = audit::list(
        idt,
        &Filter {
            action: Some("scim_user.linked".into()),
            ..Default::default()
        },
        None,
        10,
    )
    .await
    .unwrap();
    assert_eq!(log.len(), 1);
    app.finish().await;
}

async fn mappings_apply_on_input_output_and_filters(app: TestApp) {
    let s = Scim::new(&app, "mapping").await;
    let idt = &app.state.identity;
    clients::set_mappings(
        idt,
        s.client_id,
        vec![
            ("userName".into(), "username".into()),
            ("title".into(), "properties.job_title".into()),
            ("nickName".into(), "first_name".into()),
        ],
    )
    .await
    .unwrap();
    let a = s
        .post(
            "/Users",
            json!({"schemas":["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName":"jdoe", "nickName":"Johnny", "title":"Boss",
            "name":{"givenName":"John"}, "emails":[{"value":"jdoe@example.com","primary":true}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let uid = Uuid::parse_str(a.body["id"].as_str().unwrap()).unwrap();
    let user = users::get(idt, uid).await.unwrap();
    assert_eq!(user.username.as_deref(), Some("jdoe"));
    assert_eq!(
        user.first_name.as_deref(),
        Some("Johnny"),
        "nickName → first_name"
    );
    assert_eq!(user.properties.0["job_title"], json!("Boss"));
    // Output follows changes made in Lintel.
    users::update(
        idt,
        uid,
        users::UserPatch {
            first_name: Some(Some("Jonathan".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let got = s.get(&format!("/Users/{}", uid)).await;
    assert_eq!(got.body["nickName"], json!("Jonathan"));
    // Filters read the mapped column.
    let f = s
        .get(&format!(
            "/Users?filter={}",
            urlencoding(r#"nickName eq "jonathan""#)
        ))
        .await;
    assert_eq!(f.body["totalResults"], json!(1));
    let f = s
        .get(&format!(
            "/Users?filter={}",
            urlencoding(r#"title eq "Boss""#)
        ))
        .await;
    assert_eq!(f.body["totalResults"], json!(1));
    // Bad mappings are refused.
    let bad = clients::set_mappings(
        idt,
        s.client_id,
        vec![("userName".into(), "password".into())],
    )
    .await;
    assert!(bad.is_err());
    app.finish().await;
}

async fn group_roles_follow_group_membership(app: TestApp) {
    let s = Scim::new(&app, "grouproles").await;
    let idt = &app.state.identity;
    orgs::set_role_structure(
        idt,
        s.org_id,
        lintel::identity::roles::RoleStructure::MultiRole,
    )
    .await
    .unwrap();
    lintel::identity::roles::create_role(idt, s.org_id, "engineer", None)
        .await
        .unwrap();
    clients::set_group_roles(
        idt,
        s.client_id,
        vec![("Engineering".into(), "engineer".into())],
    )
    .await
    .unwrap();
    let u = s.user("roley", "roley@example.com").await;
    let uid = Uuid::parse_str(&u).unwrap();
    let g = s.group("engineering", &[&u]).await;
    let m = memberships::get(idt, s.org_id, uid).await.unwrap();
    assert!(
        m.inherited_user_roles_plus_current_role
            .0
            .contains(&"engineer".to_string()),
        "{m:?}"
    );
    let out = s
        .patch(
            &format!("/Groups/{g}"),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations":[{"op":"remove","path":"members","value":[{"value": u}]}]}),
        )
        .await;
    assert_eq!(out.status, StatusCode::OK);
    let m = memberships::get(idt, s.org_id, uid).await.unwrap();
    assert!(
        !m.inherited_user_roles_plus_current_role
            .0
            .contains(&"engineer".to_string()),
        "{m:?}"
    );
    assert_eq!(m.user_role, "member", "the primary role stays");
    app.finish().await;
}

async fn every_change_is_audited_as_the_scim_client(app: TestApp) {
    let s = Scim::new(&app, "audited").await;
    let u = s.user("aud", "aud@example.com").await;
    let g = s.group("Audited", &[&u]).await;
    s.patch(
        &format!("/Users/{u}"),
        json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations":[{"op":"add","path":"title","value":"x"}]}),
    )
    .await;
    s.delete(&format!("/Groups/{g}")).await;
    s.delete(&format!("/Users/{u}")).await;
    let idt = &app.state.identity;
    let rows = audit::list(
        idt,
        &Filter {
            org_id: Some(s.org_id),
            ..Default::default()
        },
        None,
        100,
    )
    .await
    .unwrap();
    let scim_rows: Vec<_> = rows
        .iter()
        .filter(|r| r.action.starts_with("scim_user.") || r.action.starts_with("scim_group."))
        .collect();
    let actions: BTreeSet<&str> = scim_rows.iter().map(|r| r.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "scim_user.created",
            "scim_group.created",
            "scim_user.updated",
            "scim_group.deleted",
            "scim_user.deleted"
        ]
        .into_iter()
        .collect()
    );
    for r in scim_rows {
        assert_eq!(r.actor_type, "scim_client", "{r:?}");
        assert_eq!(
            r.actor_id.as_deref(),
            Some(s.client_id.to_string().as_str())
        );
    }
    app.finish().await;
}

async fn root_search_spans_users_and_groups(app: TestApp) {
    let s = Scim::new(&app, "root").await;
    let u = s.user("rooty", "rooty@example.com").await;
    let g = s.group("Rooted", &[&u]).await;
    let all = s
        .post(
            "/.search",
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"]}),
        )
        .await;
    assert_eq!(all.status, StatusCode::OK, "{}", all.body);
    assert_eq!(all.body["totalResults"], json!(2));
    assert_eq!(ids(&all.body), vec![u.clone(), g.clone()]);
    let only_users = s
        .post(
            "/.search",
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter":"userName eq \"rooty\""}),
        )
        .await;
    assert_eq!(ids(&only_users.body), vec![u]);
    let by_name = s
        .post(
            "/.search",
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
            "filter":"displayName eq \"Rooted\""}),
        )
        .await;
    assert_eq!(ids(&by_name.body), vec![g]);
    app.finish().await;
}

/// Runs one statement with one uuid bound to `$1`, as another node or code path would.
async fn exec(app: &TestApp, sql: &'static str, id: Uuid) -> u64 {
    let mut c = app.db.conn().await.unwrap();
    lintel::with_conn!(&mut c, |c| sqlx::query(sql)
        .bind(id)
        .execute(&mut *c)
        .await
        .unwrap()
        .rows_affected())
}

async fn meta_stamp(app: &TestApp, id: Uuid) -> i64 {
    let mut c = app.db.conn().await.unwrap();
    let (v,): (i64,) = lintel::with_conn!(&mut c, |c| sqlx::query_as(
        "SELECT stamp FROM scim_resource_meta WHERE resource_id = $1"
    )
    .bind(id)
    .fetch_one(&mut *c)
    .await
    .unwrap());
    v
}

/// The list (unfiltered, so from kept renderings) as `{id: resource}`.
async fn listed(s: &Scim<'_>) -> std::collections::HashMap<String, Value> {
    let a = s.get("/Users?count=50").await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    a.body["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// Lists reuse this node's rendered Users (scim::rendered) only while the database's
/// version and stamp say nothing they are built from changed: every such change, made
/// by SQL as another node or code path would, shows in the next list.
async fn listed_users_follow_every_change_they_are_built_from(app: TestApp) {
    use lintel::scim::rendered;
    let s = Scim::new(&app, "rendered").await;
    let u1 = s.user("r1", "r1@example.com").await;
    let u2 = s.user("r2", "r2@example.com").await;
    let id1: Uuid = u1.parse().unwrap();
    let before = listed(&s).await;
    assert_eq!(before.len(), 2);
    let kept = rendered::kept(s.client_id, id1).expect("the list kept its rendering");
    // A single GET renders afresh: it must agree with the kept rendering.
    assert_eq!(s.get(&format!("/Users/{u1}")).await.body, before[&u1]);

    // Served from the kept rendering: a write that moves neither version nor stamp (no
    // code path does this) is not seen.
    exec(
        &app,
        "UPDATE scim_resource_meta SET created_at = last_modified WHERE resource_id = $1",
        id1,
    )
    .await;
    assert_eq!(listed(&s).await[&u1], before[&u1]);
    assert_eq!(rendered::kept(s.client_id, id1), Some(kept));

    // A users column a mapping reads.
    exec(
        &app,
        "UPDATE users SET first_name = 'Changed' WHERE user_id = $1",
        id1,
    )
    .await;
    let now = listed(&s).await;
    assert_eq!(now[&u1]["name"]["givenName"], "Changed");
    assert_eq!(now[&u2], before[&u2], "the other user is untouched");
    assert_ne!(rendered::kept(s.client_id, id1), Some(kept));
    // Writing the same values (as a profile save does) moves nothing.
    let stamp = meta_stamp(&app, id1).await;
    exec(
        &app,
        "UPDATE users SET first_name = first_name, email = email WHERE user_id = $1",
        id1,
    )
    .await;
    assert_eq!(meta_stamp(&app, id1).await, stamp);

    // The scim_users row.
    exec(
        &app,
        "UPDATE scim_users SET active = false WHERE user_id = $1",
        id1,
    )
    .await;
    assert_eq!(listed(&s).await[&u1]["active"], false);

    // The client's externalId: set, changed, removed.
    let a = s
        .patch(
            &format!("/Users/{u1}"),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations":[{"op":"add","path":"externalId","value":"ext-1"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(listed(&s).await[&u1]["externalId"], "ext-1");
    exec(
        &app,
        "UPDATE scim_external_ids SET external_id = 'ext-2' WHERE resource_id = $1",
        id1,
    )
    .await;
    assert_eq!(listed(&s).await[&u1]["externalId"], "ext-2");
    exec(
        &app,
        "DELETE FROM scim_external_ids WHERE resource_id = $1",
        id1,
    )
    .await;
    assert!(listed(&s).await[&u1].get("externalId").is_none());

    // Group membership, a group's name, and the group's deletion.
    let g = s.group("Team", &[&u1]).await;
    assert_eq!(listed(&s).await[&u1]["groups"][0]["display"], "Team");
    // Another member joining leaves u1's stamp alone (the group's name did not change).
    let id2: Uuid = u2.parse().unwrap();
    let (s1, s2) = (meta_stamp(&app, id1).await, meta_stamp(&app, id2).await);
    let a = s
        .patch(
            &format!("/Groups/{g}"),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations":[{"op":"add","path":"members","value":[{"value": u2}]}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(meta_stamp(&app, id1).await, s1);
    assert_ne!(meta_stamp(&app, id2).await, s2);
    assert_eq!(listed(&s).await[&u2]["groups"][0]["display"], "Team");
    let a = s
        .patch(
            &format!("/Groups/{g}"),
            json!({"schemas":["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                   "Operations":[{"op":"replace","path":"displayName","value":"Team 2"}]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let now = listed(&s).await;
    assert_eq!(now[&u1]["groups"][0]["display"], "Team 2");
    assert_eq!(now[&u2]["groups"][0]["display"], "Team 2");
    assert_eq!(s.delete(&format!("/Groups/{g}")).await.status, 204);
    assert!(listed(&s).await[&u1].get("groups").is_none());

    // The client's mapping rules.
    clients::set_mappings(
        &app.state.identity,
        s.client_id,
        vec![("name.givenName".into(), "last_name".into())],
    )
    .await
    .unwrap();
    assert_eq!(listed(&s).await[&u1]["name"]["givenName"], "r1");

    // A resource provisioned again under the same id starts from a new stamp.
    let old = meta_stamp(&app, id1).await;
    exec(
        &app,
        "INSERT INTO scim_resource_meta (resource_type, resource_id, org_id, version, created_at, last_modified) \
         SELECT 'Group', resource_id, org_id, version, created_at, last_modified FROM scim_resource_meta WHERE resource_id = $1",
        id1,
    )
    .await;
    exec(
        &app,
        "DELETE FROM scim_resource_meta WHERE resource_type = 'User' AND resource_id = $1",
        id1,
    )
    .await;
    exec(
        &app,
        "UPDATE scim_resource_meta SET resource_type = 'User' WHERE resource_id = $1",
        id1,
    )
    .await;
    assert_ne!(meta_stamp(&app, id1).await, old);

    // Listing in another view is not served from the cache and agrees with it.
    let a = s.get("/Users?count=50&attributes=userName").await;
    assert_eq!(a.body["Resources"].as_array().unwrap().len(), 2);
    assert!(a.body["Resources"][0].get("name").is_none());
    app.finish().await;
}

/// Deep `startIndex` pages start from this node's page anchors (every 4th id here): every
/// window equals the same slice of the whole list, before and after the org changes.
mod deep_start_index_pages_from_anchors {
    use crate::helpers::{Backend, Spawn, spawn_app_with};

    async fn app(backend: Backend) -> Option<crate::helpers::TestApp> {
        let opts = Spawn {
            env: &[("LINTEL_SCIM_PAGE_ANCHOR_STEP", "4")],
            extra: None,
        };
        spawn_app_with(backend, module_path!(), opts).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::deep_start_index(app(Backend::Sqlite).await.expect("sqlite app")).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        let Some(app) = app(Backend::Postgres).await else {
            return;
        };
        super::deep_start_index(app).await;
    }
}

/// Every `startIndex` window of `count` 3 over `path` against the whole list.
async fn assert_windows(s: &Scim<'_>, path: &str, whole: &[String]) {
    for start in 1..=whole.len() + 1 {
        let a = s.get(&format!("{path}?startIndex={start}&count=3")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.body["totalResults"], json!(whole.len()), "{}", a.body);
        assert_eq!(a.body["startIndex"], json!(start));
        let end = (start + 2).min(whole.len());
        assert_eq!(ids(&a.body), whole[start - 1..end], "startIndex {start}");
    }
}

async fn deep_start_index(app: TestApp) {
    use lintel::scim::anchors;
    use lintel::store::scim::query::Resource;
    use lintel::store::scim::resources as res;
    let s = Scim::new(&app, "anchors").await;
    let mut made = Vec::new();
    for i in 0..23 {
        made.push(
            s.user(&format!("a{i:02}"), &format!("a{i:02}@example.com"))
                .await,
        );
    }
    let whole = ids(&s.get("/Users?count=100").await.body);
    let mut sorted = made.clone();
    sorted.sort();
    assert_eq!(whole, sorted, "the default order is by id");
    assert_eq!(
        anchors::kept(s.org_id, Resource::User, 4),
        None,
        "a first page needs none"
    );
    assert_windows(&s, "/Users", &whole).await;
    let (total, changes) = res::counts(&mut app.db.conn().await.unwrap(), s.org_id, "User")
        .await
        .unwrap();
    assert_eq!(total, 23);
    assert_eq!(
        anchors::kept(s.org_id, Resource::User, 4),
        Some((changes, 6)),
        "ids at positions 0, 4, …, 20 are kept for the current counter"
    );

    // The org changes: the kept anchors no longer hold, and no page may show it.
    assert_eq!(s.delete(&format!("/Users/{}", whole[5])).await.status, 204);
    s.user("a23", "a23@example.com").await;
    s.user("a24", "a24@example.com").await;
    let whole = ids(&s.get("/Users?count=100").await.body);
    assert_eq!(whole.len(), 24);
    assert_windows(&s, "/Users", &whole).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_windows(&s, "/Users", &whole).await;
    let (_, changes2) = res::counts(&mut app.db.conn().await.unwrap(), s.org_id, "User")
        .await
        .unwrap();
    assert_eq!(changes2, changes + 3, "a delete and two inserts");
    assert_eq!(
        anchors::kept(s.org_id, Resource::User, 4),
        Some((changes2, 6)),
        "rebuilt once a second had passed"
    );

    // The page statement itself refuses an anchor of another counter value (one snapshot).
    let page = |changes| res::Page {
        offset: 1,
        limit: 3,
        anchor: Some(res::Anchor {
            id: whole[8].parse().unwrap(),
            changes,
        }),
        ..res::Page::default()
    };
    let all = lintel::store::scim::query::Cond::Const(true);
    let mut c = app.db.conn().await.unwrap();
    let rows = res::search_users(&mut c, s.client_id, s.org_id, &all, &page(changes2))
        .await
        .unwrap();
    let got: Vec<String> = rows.iter().map(|r| r.user_id.to_string()).collect();
    assert_eq!(got, whole[9..12]);
    let stale = res::search_users(&mut c, s.client_id, s.org_id, &all, &page(changes))
        .await
        .unwrap();
    assert!(
        stale.is_empty(),
        "an anchor of an older counter finds nothing"
    );
    drop(c);

    // Groups page the same way.
    let mut groups = Vec::new();
    for i in 0..9 {
        groups.push(s.group(&format!("g{i}"), &[]).await);
    }
    groups.sort();
    assert_windows(&s, "/Groups", &groups).await;
    assert!(matches!(
        anchors::kept(s.org_id, Resource::Group, 4),
        Some((_, 3))
    ));
    app.finish().await;
}
