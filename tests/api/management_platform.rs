//! The platform services through the management API, over real HTTP on both backends:
//! rate-limit policies and assignments, the per-key management rate limit, the public
//! waitlist (idempotent, validated, limited per IP) and its admin side, impersonation
//! and the daily metrics report.
use crate::helpers::{Backend, Spawn, TestApp, spawn_app_with};
use crate::on_both_backends;
use lintel::identity::api_keys::{self, NewApiKey};
use lintel::identity::users::{self, NewUser, UserPatch};
use lintel::identity::{audit, memberships, orgs, waitlist};
use lintel::store::audit::Filter;
use reqwest::{Response, StatusCode};
use serde_json::{Value, json};
use std::path::PathBuf;
use uuid::Uuid;

on_both_backends!(
    policies_crud_and_assignments_over_http,
    waitlist_public_signup_is_idempotent_and_validated,
    waitlist_admin_lists_and_invites,
    impersonation_starts_lists_and_ends_over_http,
    metrics_daily_report_shape_and_validation,
    openapi_documents_the_platform_operations,
);

const PROBLEM: &str = "application/problem+json";

async fn key(app: &TestApp, new: NewApiKey) -> String {
    let (_, secret) = api_keys::create(&app.state.identity, new).await.unwrap();
    secret.expose().clone()
}

async fn admin_key(app: &TestApp) -> String {
    key(
        app,
        NewApiKey {
            is_admin: true,
            ..Default::default()
        },
    )
    .await
}

async fn user(app: &TestApp, email: &str) -> Uuid {
    users::create(
        &app.state.identity,
        NewUser {
            email: email.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap()
    .0
    .user_id
}

async fn get(app: &TestApp, key: &str, path: &str) -> Response {
    app.client
        .get(app.url(path))
        .bearer_auth(key)
        .send()
        .await
        .unwrap()
}

async fn send(app: &TestApp, method: &str, key: &str, path: &str, body: Option<Value>) -> Response {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = app.client.request(m, app.url(path)).bearer_auth(key);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.unwrap()
}

async fn json_of(r: Response) -> (StatusCode, Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn problem(r: Response, status: StatusCode) -> Value {
    assert_eq!(r.status(), status);
    assert_eq!(r.headers()["content-type"], PROBLEM);
    r.json().await.unwrap()
}

async fn audit_actions(app: &TestApp, action: &str) -> Vec<lintel::store::audit::AuditLog> {
    audit::list(
        &app.state.identity,
        &Filter {
            action: Some(action.into()),
            ..Default::default()
        },
        None,
        100,
    )
    .await
    .unwrap()
}

// ---- rate-limit policies ----

async fn policies_crud_and_assignments_over_http(app: TestApp) {
    let admin = admin_key(&app).await;
    let base = "/api/v1/rate-limit-policies";

    // Create: 201; bad scope 422; unknown field 400; reserved name refused.
    let (status, p) = json_of(
        send(
            &app,
            "POST",
            &admin,
            base,
            Some(
                json!({"name": "partners", "scope": "api_key", "limit_count": 100,
                        "window_sec": 60, "description": "partner keys"}),
            ),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{p}");
    assert_eq!(p["name"], "partners");
    assert_eq!(p["scope"], "api_key");
    assert_eq!(p["limit_count"], 100);
    let pid = p["policy_id"].as_i64().unwrap();
    let v = problem(
        send(
            &app,
            "POST",
            &admin,
            base,
            Some(json!({"name": "x", "scope": "planet", "limit_count": 1, "window_sec": 1})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(v["field"], "scope");
    problem(
        send(
            &app,
            "POST",
            &admin,
            base,
            Some(
                json!({"name": "x", "scope": "ip", "limit_count": 1, "window_sec": 1, "extra": 1}),
            ),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        send(
            &app,
            "POST",
            &admin,
            base,
            Some(json!({"name": "partners", "scope": "ip", "limit_count": 1, "window_sec": 1})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;

    // List: defaults and ours, paged by the opaque cursor.
    let (status, page) = json_of(get(&app, &admin, base).await).await;
    assert_eq!(status, StatusCode::OK);
    let names: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"partners"), "{names:?}");
    assert!(names.contains(&"default.management"), "{names:?}");
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("{base}?limit=2&cursor={c}"),
            None => format!("{base}?limit=2"),
        };
        let (status, page) = json_of(get(&app, &admin, &path).await).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for p in page["data"].as_array().unwrap() {
            seen.push(p["name"].as_str().unwrap().to_string());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen, names);
    let bad_cursor = format!(
        "{base}?cursor={}",
        lintel::http::api::encode_cursor(Uuid::now_v7())
    );
    problem(
        get(&app, &admin, &bad_cursor).await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Get, patch (and clear the description), defaults are read-only.
    let (status, got) = json_of(get(&app, &admin, &format!("{base}/{pid}")).await).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["description"], "partner keys");
    let (status, patched) = json_of(
        send(
            &app,
            "PATCH",
            &admin,
            &format!("{base}/{pid}"),
            Some(json!({"limit_count": 250, "description": null})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["limit_count"], 250);
    assert_eq!(patched["description"], Value::Null);
    assert_eq!(patched["name"], "partners");
    let default_id = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "default.management")
        .unwrap()["policy_id"]
        .as_i64()
        .unwrap();
    problem(
        send(
            &app,
            "PATCH",
            &admin,
            &format!("{base}/{default_id}"),
            Some(json!({"limit_count": 1})),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        get(&app, &admin, &format!("{base}/999999")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        get(&app, &admin, &format!("{base}/abc")).await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // Assignments: exactly one target; duplicates 409; unknown targets 404.
    let alice = user(&app, "alice@example.com").await;
    let (key_row, _) = api_keys::create(
        &app.state.identity,
        NewApiKey {
            user_id: Some(alice),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let assignments = format!("{base}/{pid}/assignments");
    let (status, a) = json_of(
        send(
            &app,
            "POST",
            &admin,
            &assignments,
            Some(json!({"user_id": alice})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    assert_eq!(
        a,
        json!({"policy_id": pid, "target_type": "user", "target_id": alice})
    );
    let (status, _) = json_of(
        send(
            &app,
            "POST",
            &admin,
            &assignments,
            Some(json!({"api_key_id": key_row.api_key_id})),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    problem(
        send(
            &app,
            "POST",
            &admin,
            &assignments,
            Some(json!({"user_id": alice})),
        )
        .await,
        StatusCode::CONFLICT,
    )
    .await;
    for body in [json!({}), json!({"user_id": alice, "org_id": alice})] {
        problem(
            send(&app, "POST", &admin, &assignments, Some(body)).await,
            StatusCode::UNPROCESSABLE_ENTITY,
        )
        .await;
    }
    problem(
        send(
            &app,
            "POST",
            &admin,
            &assignments,
            Some(json!({"org_id": Uuid::now_v7()})),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let (status, list) = json_of(get(&app, &admin, &assignments).await).await;
    assert_eq!(status, StatusCode::OK);
    let mut got: Vec<(String, String)> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["target_type"].as_str().unwrap().to_string(),
                a["target_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        ("api_key".to_string(), key_row.api_key_id.to_string()),
        ("user".to_string(), alice.to_string()),
    ];
    want.sort();
    assert_eq!(got, want);
    let (_, first) = json_of(get(&app, &admin, &format!("{assignments}?limit=1")).await).await;
    assert_eq!(first["data"].as_array().unwrap().len(), 1);
    let c = first["next_cursor"].as_str().unwrap();
    let (_, second) =
        json_of(get(&app, &admin, &format!("{assignments}?limit=1&cursor={c}")).await).await;
    assert_eq!(second["data"].as_array().unwrap().len(), 1);
    assert_ne!(second["data"][0], first["data"][0]);
    assert_eq!(second["next_cursor"], Value::Null);

    // Delete an assignment by its target; again is 404; a bad target type 422.
    let one = format!("{assignments}/user/{alice}");
    assert_eq!(
        send(&app, "DELETE", &admin, &one, None).await.status(),
        StatusCode::NO_CONTENT
    );
    problem(
        send(&app, "DELETE", &admin, &one, None).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        send(
            &app,
            "DELETE",
            &admin,
            &format!("{assignments}/team/{alice}"),
            None,
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let (_, list) = json_of(get(&app, &admin, &assignments).await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);

    // A key that is not a super-admin's cannot touch policies.
    let alice_key = key(
        &app,
        NewApiKey {
            user_id: Some(alice),
            ..Default::default()
        },
    )
    .await;
    problem(get(&app, &alice_key, base).await, StatusCode::FORBIDDEN).await;
    problem(
        send(&app, "DELETE", &alice_key, &format!("{base}/{pid}"), None).await,
        StatusCode::FORBIDDEN,
    )
    .await;

    // Delete the policy: 204, then 404; audited as the key.
    assert_eq!(
        send(&app, "DELETE", &admin, &format!("{base}/{pid}"), None)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    problem(
        get(&app, &admin, &format!("{base}/{pid}")).await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(get(&app, &admin, &assignments).await, StatusCode::NOT_FOUND).await;
    for action in [
        "rate_limit_policy.created",
        "rate_limit_policy.updated",
        "rate_limit_policy.assigned",
        "rate_limit_policy.unassigned",
        "rate_limit_policy.deleted",
    ] {
        let mut rows = audit_actions(&app, action).await;
        rows.retain(|r| r.object_id.as_deref() == Some(pid.to_string().as_str()));
        assert!(!rows.is_empty(), "{action}");
        assert!(rows.iter().all(|r| r.actor_type == "api_key"), "{action}");
    }
    app.finish().await;
}

// ---- the management rate limit ----

async fn management_requests_are_limited_per_key(backend: Backend) {
    // A day-long window: the test cannot straddle a window boundary in practice.
    let Some(app) = spawn_app_with(
        backend,
        "management_requests_are_limited_per_key",
        Spawn {
            env: &[("LINTEL_RATE_LIMITS_MANAGEMENT", "5/86400")],
            extra: None,
        },
    )
    .await
    else {
        return;
    };
    let admin = admin_key(&app).await;
    let path = "/api/v1/rate-limit-policies";
    for remaining in (0..5).rev() {
        let r = get(&app, &admin, path).await;
        assert_eq!(r.status(), StatusCode::OK);
        let h = r.headers();
        assert_eq!(h["ratelimit-limit"], "5");
        assert_eq!(h["ratelimit-remaining"], remaining.to_string().as_str());
        let reset: u64 = h["ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert!((1..=86400).contains(&reset), "{reset}");
        assert!(h.get("retry-after").is_none());
    }
    // The sixth: 429 problem with Retry-After, before the handler runs (even a POST).
    for r in [
        get(&app, &admin, path).await,
        send(
            &app,
            "POST",
            &admin,
            path,
            Some(json!({"name": "n", "scope": "ip", "limit_count": 1, "window_sec": 1})),
        )
        .await,
    ] {
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = r.headers().clone();
        assert_eq!(h["content-type"], PROBLEM);
        let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!((1..=86400).contains(&retry), "{retry}");
        assert_eq!(h["ratelimit-remaining"], "0");
        assert_eq!(h["ratelimit-limit"], "5");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["type"], "urn:lintel:problem:rate-limited");
        assert_eq!(v["status"], 429);
    }
    let policies = lintel::identity::rate_limit::list_policies(&app.state.identity)
        .await
        .unwrap();
    assert!(
        !policies.iter().any(|p| p.name == "n"),
        "the denied POST wrote nothing"
    );
    // Counted per key: another key starts afresh.
    let other = admin_key(&app).await;
    let r = get(&app, &other, path).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["ratelimit-remaining"], "4");
    // Unauthenticated requests are 401, not counted against anyone, and carry no headers.
    let r = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get("ratelimit-limit").is_none());
    app.finish().await;
}

mod management_requests_are_limited_per_key {
    use crate::helpers::Backend;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::management_requests_are_limited_per_key(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::management_requests_are_limited_per_key(Backend::Postgres).await;
    }
}

// ---- the waitlist ----

fn outbox_files(app: &TestApp) -> Vec<PathBuf> {
    let dir = app.state.config.data_dir.join("outbox");
    let mut files: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
        Err(_) => Vec::new(),
    };
    files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
    files
}

async fn join(app: &TestApp, body: Value) -> Response {
    app.client
        .post(app.url("/api/v1/waitlist"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn waitlist_public_signup_is_idempotent_and_validated(app: TestApp) {
    // No credentials needed; the same answer for a new and a listed address.
    let first = join(&app, json!({"email": "Wait@Example.com"})).await;
    assert_eq!(first.status(), StatusCode::ACCEPTED);
    assert!(first.headers().contains_key("ratelimit-limit"));
    assert!(first.headers().contains_key("ratelimit-remaining"));
    assert!(first.headers().contains_key("ratelimit-reset"));
    let first: Value = first.json().await.unwrap();
    let again = join(&app, json!({"email": "wait@example.com"})).await;
    assert_eq!(again.status(), StatusCode::ACCEPTED);
    let again: Value = again.json().await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first, json!({"status": "accepted"}));
    let rows = waitlist::list(&app.state.identity, None, 100, None)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].email, "wait@example.com");
    let joined = audit_actions(&app, "waitlist.joined").await;
    assert_eq!(joined.len(), 1);
    assert!(joined[0].ip_address.is_some(), "the client IP is audited");

    // Invalid address: 422 problem on `email`, with the headers; unknown field 400.
    let r = join(&app, json!({"email": "not-an-address"})).await;
    assert!(r.headers().contains_key("ratelimit-remaining"));
    let v = problem(r, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert_eq!(v["field"], "email");
    problem(
        join(&app, json!({"email": "x@example.com", "id": 1})).await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert_eq!(
        waitlist::list(&app.state.identity, None, 100, None)
            .await
            .unwrap()
            .len(),
        1
    );
    app.finish().await;
}

async fn waitlist_is_limited_per_ip(backend: Backend) {
    let Some(app) = spawn_app_with(
        backend,
        "waitlist_is_limited_per_ip",
        Spawn {
            env: &[("LINTEL_RATE_LIMITS_WAITLIST", "3/86400")],
            extra: None,
        },
    )
    .await
    else {
        return;
    };
    for (i, remaining) in ["2", "1", "0"].into_iter().enumerate() {
        let r = join(&app, json!({"email": format!("p{i}@example.com")})).await;
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        assert_eq!(r.headers()["ratelimit-limit"], "3");
        assert_eq!(r.headers()["ratelimit-remaining"], remaining);
    }
    let r = join(&app, json!({"email": "p3@example.com"})).await;
    assert!(r.headers().contains_key("retry-after"));
    let v = problem(r, StatusCode::TOO_MANY_REQUESTS).await;
    assert_eq!(v["type"], "urn:lintel:problem:rate-limited");
    let rows = waitlist::list(&app.state.identity, None, 100, None)
        .await
        .unwrap();
    assert_eq!(rows.len(), 3, "the refused signup was not stored");
    app.finish().await;
}

mod waitlist_is_limited_per_ip {
    use crate::helpers::Backend;
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::waitlist_is_limited_per_ip(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::waitlist_is_limited_per_ip(Backend::Postgres).await;
    }
}

async fn waitlist_admin_lists_and_invites(app: TestApp) {
    let admin = admin_key(&app).await;
    for email in ["one@example.com", "two@example.com"] {
        assert_eq!(
            join(&app, json!({"email": email})).await.status(),
            StatusCode::ACCEPTED
        );
    }
    let (status, page) = json_of(get(&app, &admin, "/api/v1/waitlist?invited=false").await).await;
    assert_eq!(status, StatusCode::OK);
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["email"], "one@example.com");
    assert_eq!(data[0]["invited"], false);
    let id = data[0]["signup_id"].as_str().unwrap().to_string();
    let (_, p1) = json_of(get(&app, &admin, "/api/v1/waitlist?limit=1").await).await;
    assert_eq!(p1["data"].as_array().unwrap().len(), 1);
    let c = p1["next_cursor"].as_str().unwrap();
    let (_, p2) = json_of(
        get(
            &app,
            &admin,
            &format!("/api/v1/waitlist?limit=1&cursor={c}"),
        )
        .await,
    )
    .await;
    assert_eq!(p2["data"][0]["email"], "two@example.com");
    assert_eq!(p2["next_cursor"], Value::Null);

    // Invite: 200, invited, a mail with the link in the outbox.
    let before = outbox_files(&app).len();
    let (status, s) = json_of(
        send(
            &app,
            "POST",
            &admin,
            &format!("/api/v1/waitlist/{id}/invite"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["invited"], true);
    assert!(s["invited_at"].is_string());
    let files = outbox_files(&app);
    assert_eq!(files.len(), before + 1);
    let newest = files
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .unwrap();
    let mail = std::fs::read_to_string(newest).unwrap();
    assert!(mail.contains("one@example.com"), "{mail}");
    assert!(mail.contains("invitation="), "{mail}");
    let (_, invited) = json_of(get(&app, &admin, "/api/v1/waitlist?invited=true").await).await;
    let invited = invited["data"].as_array().unwrap();
    assert_eq!(invited.len(), 1);
    assert_eq!(invited[0]["signup_id"], id.as_str());

    // Refusals: unknown signup 404, non-admin key 403, no key 401.
    problem(
        send(
            &app,
            "POST",
            &admin,
            &format!("/api/v1/waitlist/{}/invite", Uuid::now_v7()),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let u = user(&app, "someone@example.com").await;
    let plain = key(
        &app,
        NewApiKey {
            user_id: Some(u),
            ..Default::default()
        },
    )
    .await;
    problem(
        get(&app, &plain, "/api/v1/waitlist").await,
        StatusCode::FORBIDDEN,
    )
    .await;
    problem(
        send(
            &app,
            "POST",
            &plain,
            &format!("/api/v1/waitlist/{id}/invite"),
            None,
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let r = app
        .client
        .get(app.url("/api/v1/waitlist"))
        .send()
        .await
        .unwrap();
    assert!(r.headers().contains_key("www-authenticate"));
    problem(r, StatusCode::UNAUTHORIZED).await;
    assert_eq!(outbox_files(&app).len(), before + 1);
    app.finish().await;
}

// ---- impersonation ----

/// An org owned by `owner` (through `create_by_user`) with `member` as a plain member.
async fn org_with_owner(app: &TestApp, owner_email: &str, name: &str) -> (Uuid, Uuid) {
    let id = &app.state.identity;
    let owner = user(app, owner_email).await;
    users::update(
        id,
        owner,
        UserPatch {
            can_create_orgs: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (org, _) = orgs::create_by_user(id, owner, name, None).await.unwrap();
    (org.org_id, owner)
}

async fn impersonation_starts_lists_and_ends_over_http(app: TestApp) {
    let id = &app.state.identity;
    let (org, owner) = org_with_owner(&app, "owner@example.com", "Acme").await;
    let member = user(&app, "member@example.com").await;
    memberships::add(id, org, member, "member").await.unwrap();
    let owner_key = key(
        &app,
        NewApiKey {
            user_id: Some(owner),
            org_id: Some(org),
            permissions: vec!["impersonate".into(), "audit:read".into()],
            ..Default::default()
        },
    )
    .await;
    let base = format!("/api/v1/organizations/{org}/impersonations");

    // Start: 201, the log with the session id, no token in the body.
    let r = app
        .client
        .post(app.url(&base))
        .bearer_auth(&owner_key)
        .header("user-agent", "admin-console/1.0")
        .json(&json!({"target_user_id": member}))
        .send()
        .await
        .unwrap();
    let (status, log) = json_of(r).await;
    assert_eq!(status, StatusCode::CREATED, "{log}");
    assert_eq!(log["admin_user_id"], owner.to_string().as_str());
    assert_eq!(log["impersonated_user_id"], member.to_string().as_str());
    assert_eq!(log["org_id"], org.to_string().as_str());
    assert!(log["session_id"].is_string());
    assert_eq!(log["ended_at"], Value::Null);
    assert_eq!(log["user_agent"], "admin-console/1.0");
    assert_eq!(log["ip_address"], "127.0.0.1");
    assert!(!log.to_string().contains("refresh"), "{log}");
    let log_id = log["log_id"].as_str().unwrap().to_string();

    // Listed in the org.
    let (status, page) = json_of(get(&app, &owner_key, &base).await).await;
    assert_eq!(status, StatusCode::OK);
    let data = page["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    assert_eq!(data[0]["log_id"], log_id.as_str());

    // Bad input: yourself 422, a non-member 404, unknown field 400.
    let v = problem(
        send(
            &app,
            "POST",
            &owner_key,
            &base,
            Some(json!({"target_user_id": owner})),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(v["field"], "target_user_id");
    let stranger = user(&app, "stranger@example.com").await;
    problem(
        send(
            &app,
            "POST",
            &owner_key,
            &base,
            Some(json!({"target_user_id": stranger})),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        send(
            &app,
            "POST",
            &owner_key,
            &base,
            Some(json!({"target_user_id": member, "refresh": true})),
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;

    // A key without the `impersonate` permission: 403; a service key (no owner): 403.
    let read_only = key(
        &app,
        NewApiKey {
            user_id: Some(owner),
            org_id: Some(org),
            permissions: vec!["audit:read".into()],
            ..Default::default()
        },
    )
    .await;
    problem(
        send(
            &app,
            "POST",
            &read_only,
            &base,
            Some(json!({"target_user_id": member})),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    let service = admin_key(&app).await;
    let v = problem(
        send(
            &app,
            "POST",
            &service,
            &base,
            Some(json!({"target_user_id": member})),
        )
        .await,
        StatusCode::FORBIDDEN,
    )
    .await;
    assert!(v["detail"].as_str().unwrap().contains("owner"), "{v}");
    // A key without `audit:read` cannot read the log.
    let imp_only = key(
        &app,
        NewApiKey {
            user_id: Some(owner),
            org_id: Some(org),
            permissions: vec!["impersonate".into()],
            ..Default::default()
        },
    )
    .await;
    problem(get(&app, &imp_only, &base).await, StatusCode::FORBIDDEN).await;

    // A key of another org: 404 on everything here.
    let (other_org, other_owner) = org_with_owner(&app, "other@example.com", "Other").await;
    let other_key = key(
        &app,
        NewApiKey {
            user_id: Some(other_owner),
            org_id: Some(other_org),
            permissions: vec!["impersonate".into(), "audit:read".into()],
            ..Default::default()
        },
    )
    .await;
    problem(get(&app, &other_key, &base).await, StatusCode::NOT_FOUND).await;
    problem(
        send(
            &app,
            "POST",
            &other_key,
            &base,
            Some(json!({"target_user_id": member})),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    problem(
        send(
            &app,
            "POST",
            &other_key,
            &format!("{base}/{log_id}/end"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    // The log id under the other org's path is not found either.
    problem(
        send(
            &app,
            "POST",
            &other_key,
            &format!("/api/v1/organizations/{other_org}/impersonations/{log_id}/end"),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // End: 200 with ended_at; ending again returns it unchanged.
    let (status, ended) = json_of(
        send(
            &app,
            "POST",
            &owner_key,
            &format!("{base}/{log_id}/end"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert!(ended["ended_at"].is_string());
    let (status, again) = json_of(
        send(
            &app,
            "POST",
            &owner_key,
            &format!("{base}/{log_id}/end"),
            None,
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again["ended_at"], ended["ended_at"]);
    problem(
        send(
            &app,
            "POST",
            &owner_key,
            &format!("{base}/{}/end", Uuid::now_v7()),
            None,
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;
    let (_, page) = json_of(get(&app, &owner_key, &base).await).await;
    assert!(page["data"][0]["ended_at"].is_string());
    assert_eq!(audit_actions(&app, "impersonation.started").await.len(), 1);
    assert_eq!(audit_actions(&app, "impersonation.ended").await.len(), 1);
    app.finish().await;
}

// ---- metrics ----

async fn metrics_daily_report_shape_and_validation(app: TestApp) {
    let admin = admin_key(&app).await;
    let (org, owner) = org_with_owner(&app, "m-owner@example.com", "Metrics").await;
    let today = app.state.identity.clock.now().date_naive();
    let from = today - chrono::Duration::days(2);
    let path = format!("/api/v1/metrics/daily?from={from}&to={today}");

    // Every org: three days, zeros included, the signups of today counted.
    let (status, r) = json_of(get(&app, &admin, &path).await).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["org_id"], Value::Null);
    let days = r["days"].as_array().unwrap();
    assert_eq!(days.len(), 3);
    assert_eq!(days[0]["day"], from.to_string().as_str());
    assert_eq!(days[2]["day"], today.to_string().as_str());
    for d in days {
        for f in [
            "active_users",
            "logins_succeeded",
            "logins_failed",
            "signups",
            "tokens_issued",
        ] {
            assert!(d[f].is_u64(), "{f} in {d}");
        }
    }
    assert_eq!(days[0]["signups"], 0);
    assert!(days[2]["signups"].as_u64().unwrap() >= 1, "{r}");

    // One org, with `audit:read` there.
    let owner_key = key(
        &app,
        NewApiKey {
            user_id: Some(owner),
            org_id: Some(org),
            permissions: vec!["audit:read".into()],
            ..Default::default()
        },
    )
    .await;
    let (status, r) = json_of(get(&app, &owner_key, &format!("{path}&org_id={org}")).await).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["org_id"], org.to_string().as_str());
    assert_eq!(r["days"].as_array().unwrap().len(), 3);
    // All orgs needs a super-admin key; another org is 404.
    problem(get(&app, &owner_key, &path).await, StatusCode::FORBIDDEN).await;
    problem(
        get(
            &app,
            &owner_key,
            &format!("{path}&org_id={}", Uuid::now_v7()),
        )
        .await,
        StatusCode::NOT_FOUND,
    )
    .await;

    // Ranges: backwards or over 366 days 422; not a date, or missing, 400.
    let v = problem(
        get(
            &app,
            &admin,
            &format!("/api/v1/metrics/daily?from={today}&to={from}"),
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    assert_eq!(v["field"], "to");
    problem(
        get(
            &app,
            &admin,
            "/api/v1/metrics/daily?from=2024-01-01&to=2025-06-01",
        )
        .await,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    problem(
        get(
            &app,
            &admin,
            "/api/v1/metrics/daily?from=yesterday&to=2025-06-01",
        )
        .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    problem(
        get(&app, &admin, "/api/v1/metrics/daily?from=2025-06-01").await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    app.finish().await;
}

// ---- the OpenAPI document ----

async fn openapi_documents_the_platform_operations(app: TestApp) {
    let doc: Value = app
        .client
        .get(app.url("/api/v1/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = &doc["paths"];
    for (path, method) in [
        ("/api/v1/rate-limit-policies", "get"),
        ("/api/v1/rate-limit-policies", "post"),
        ("/api/v1/rate-limit-policies/{policy_id}", "get"),
        ("/api/v1/rate-limit-policies/{policy_id}", "patch"),
        ("/api/v1/rate-limit-policies/{policy_id}", "delete"),
        ("/api/v1/rate-limit-policies/{policy_id}/assignments", "get"),
        (
            "/api/v1/rate-limit-policies/{policy_id}/assignments",
            "post",
        ),
        (
            "/api/v1/rate-limit-policies/{policy_id}/assignments/{target_type}/{target_id}",
            "delete",
        ),
        ("/api/v1/organizations/{org_id}/impersonations", "get"),
        ("/api/v1/organizations/{org_id}/impersonations", "post"),
        (
            "/api/v1/organizations/{org_id}/impersonations/{log_id}/end",
            "post",
        ),
        ("/api/v1/waitlist", "get"),
        ("/api/v1/waitlist", "post"),
        ("/api/v1/waitlist/{signup_id}/invite", "post"),
        ("/api/v1/metrics/daily", "get"),
    ] {
        let op = &paths[path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(op["responses"]["4XX"].is_object(), "{method} {path}");
    }
    // The public sign-up needs no credentials; the admin listing does (the default).
    assert_eq!(paths["/api/v1/waitlist"]["post"]["security"], json!([{}]));
    assert!(paths["/api/v1/waitlist"]["get"].get("security").is_none());
    assert_eq!(doc["security"], json!([{"api_key": []}]));
    app.finish().await;
}
