//! OpenID Connect Back-Channel Logout 1.0 for every way a browser session ends, on both
//! backends. Through the running server: an admin revoking a session, an admin setting the
//! password. Deterministically (the server built but not serving, so no worker of its own;
//! the test drives `backchannel::run_once` with a fixed clock): retry after a refusal,
//! abandonment after the last attempt, concurrent claims, which clients are owed a notice,
//! user deletion.
use crate::helpers::{Backend, Spawn, TestDb, admin_key, api_call, spawn_app_with, test_config};
use crate::oidc::{Browser, exchange, login_for_code, setup, verify_jwt};
use crate::on_both_databases;
use lintel::clock::FixedClock;
use lintel::identity::Identity;
use lintel::identity::sessions::{self, NewSession};
use lintel::identity::users::{self, NewUser};
use lintel::oidc::backchannel::{self, Round};
use lintel::oidc::clients::{self, NewClient};
use lintel::store;
use serde_json::{Value, json};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// A relying party's back-channel logout endpoint

/// An RP endpoint on its own port: records every POSTed body and answers with the next
/// scripted status (200 once the script is used up).
#[derive(Clone, Default)]
struct Rp {
    received: Arc<Mutex<Vec<String>>>,
    script: Arc<Mutex<VecDeque<u16>>>,
    url: String,
}

impl Rp {
    async fn start(script: &[u16]) -> Rp {
        let mut rp = Rp {
            script: Arc::new(Mutex::new(script.iter().copied().collect())),
            ..Rp::default()
        };
        let (sink, script) = (rp.received.clone(), rp.script.clone());
        let router = axum::Router::new().route(
            "/backchannel",
            axum::routing::post(move |body: String| {
                let (sink, script) = (sink.clone(), script.clone());
                async move {
                    sink.lock().unwrap().push(body);
                    let status = script.lock().unwrap().pop_front().unwrap_or(200);
                    axum::http::StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        rp.url = format!("http://{}/backchannel", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, router).await.unwrap() });
        rp
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    /// The logout tokens received so far.
    fn tokens(&self) -> Vec<String> {
        self.received
            .lock()
            .unwrap()
            .iter()
            .map(|b| {
                let form: HashMap<String, String> = url::form_urlencoded::parse(b.as_bytes())
                    .into_owned()
                    .collect();
                form["logout_token"].clone()
            })
            .collect()
    }

    /// Waits up to 15 s for the `n`th POST (the server's worker polls every 5 s and is
    /// also woken by local revocations).
    async fn wait_for(&self, n: usize) -> Vec<String> {
        for _ in 0..300 {
            if self.count() >= n {
                return self.tokens();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} back-channel POSTs, got {}", self.count());
    }
}

/// The claims of a JWT, unverified (the server tests verify against the JWKS).
fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let part = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------
// Through the running server (its worker delivers)

/// Signs in through the hosted pages for a client whose back-channel URI is `rp`; returns
/// the setup and the verified ID token claims (whose `sid` is the browser session).
async fn signed_in(app: &crate::helpers::TestApp, rp: &Rp) -> (crate::oidc::Setup, Value) {
    let s = setup(app, true).await;
    clients::update(
        &app.state.identity,
        &s.client_id,
        clients::ClientPatch {
            backchannel_logout_uri: Some(rp.url.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut b = Browser::new(app);
    let code = login_for_code(&mut b, &s, &[]).await;
    let (st, t) = exchange(app, &s, &code).await;
    assert_eq!(st, 200, "{t}");
    let (_, idt) = verify_jwt(app, t["id_token"].as_str().unwrap()).await;
    (s, idt)
}

async fn check_logout_token(
    app: &crate::helpers::TestApp,
    jwt: &str,
    s: &crate::oidc::Setup,
    idt: &Value,
) {
    let (h, c) = verify_jwt(app, jwt).await;
    assert_eq!(h["typ"], "logout+jwt");
    assert_eq!(c["aud"], s.client_id);
    assert_eq!(c["sid"], idt["sid"]);
    assert_eq!(c["sub"], s.user_id.to_string());
    assert!(c["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
    assert!(c.get("nonce").is_none());
}

async fn admin_revoking_a_session_sends_a_logout_token(backend: Backend) {
    let rp = Rp::start(&[]).await;
    let Some(app) = spawn_app_with(
        backend,
        "oidc_backchannel::admin_revoke",
        Spawn {
            env: &[],
            extra: None,
        },
    )
    .await
    else {
        return;
    };
    let (s, idt) = signed_in(&app, &rp).await;
    let key = admin_key(&app).await;
    let sid = idt["sid"].as_str().unwrap();
    let (st, body) = api_call(
        &app,
        &key,
        reqwest::Method::DELETE,
        &format!("/users/{}/sessions/{sid}", s.user_id),
        None,
    )
    .await;
    assert_eq!(st, 204, "{body}");
    let tokens = rp.wait_for(1).await;
    check_logout_token(&app, &tokens[0], &s, &idt).await;
    // Delivered once, recorded as such.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rp.count(), 1);
    let mut c = app.db.conn().await.unwrap();
    let n = store::oidc::logout_notices_of_session(&mut c, sid.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].attempts, 1);
    assert!(n[0].delivered_at.is_some());
    drop(c);
    app.finish().await;
}

async fn setting_the_password_sends_a_logout_token(backend: Backend) {
    let rp = Rp::start(&[]).await;
    let Some(app) = spawn_app_with(
        backend,
        "oidc_backchannel::password_set",
        Spawn {
            env: &[],
            extra: None,
        },
    )
    .await
    else {
        return;
    };
    let (s, idt) = signed_in(&app, &rp).await;
    let key = admin_key(&app).await;
    let (st, body) = api_call(
        &app,
        &key,
        reqwest::Method::PUT,
        &format!("/users/{}/password", s.user_id),
        Some(json!({ "password": "another long passphrase" })),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    let tokens = rp.wait_for(1).await;
    check_logout_token(&app, &tokens[0], &s, &idt).await;
    app.finish().await;
}

mod through_the_server {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_revoke_sqlite() {
        super::admin_revoking_a_session_sends_a_logout_token(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn admin_revoke_postgres() {
        super::admin_revoking_a_session_sends_a_logout_token(Backend::Postgres).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_set_sqlite() {
        super::setting_the_password_sends_a_logout_token(Backend::Sqlite).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn password_set_postgres() {
        super::setting_the_password_sends_a_logout_token(Backend::Postgres).await;
    }
}

// ---------------------------------------------------------------------------------------
// Driven by hand with a fixed clock

on_both_databases!(
    a_refused_token_is_delivered_on_retry,
    notices_are_abandoned_after_the_last_attempt,
    concurrent_rounds_never_send_a_notice_twice,
    only_enabled_clients_with_a_uri_are_owed_a_notice,
    deleting_the_user_still_sends_the_logout_token,
);

/// The server's services, built but not serving (so its worker does not run).
struct Quiet {
    id: Identity,
    oidc: Arc<lintel::oidc::Provider>,
    clock: FixedClock,
    http: reqwest::Client,
    db: TestDb,
    _app: lintel::app::App,
}

impl Quiet {
    async fn new(db: TestDb, env: &[(&str, &str)]) -> Quiet {
        let clock = FixedClock::new(chrono::Utc::now());
        let config = test_config(&db, env);
        let app = lintel::app::App::build_with_clock(config, Arc::new(clock.clone()))
            .await
            .unwrap();
        Quiet {
            id: app.state.identity.clone(),
            oidc: app.state.oidc.clone(),
            clock,
            http: backchannel::http_client().unwrap(),
            db,
            _app: app,
        }
    }

    async fn run(&self) -> Round {
        backchannel::run_once(&self.id, &self.oidc, &self.http)
            .await
            .unwrap()
    }

    async fn user(&self, email: &str) -> Uuid {
        let (u, _) = users::create(
            &self.id,
            NewUser {
                email: email.into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        u.user_id
    }

    async fn client(&self, name: &str, uri: Option<&str>) -> String {
        let (c, _) = clients::create(
            &self.id,
            NewClient {
                name: name.into(),
                redirect_uris: vec!["https://rp.example/cb".into()],
                backchannel_logout_uri: uri.map(String::from),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        c.client_id
    }

    /// A browser session of the user with a grant to each client; returns the session id.
    async fn signed_in(&self, user_id: Uuid, clients: &[&str]) -> Uuid {
        let (browser, _) =
            lintel::oidc::session::open(&self.id, user_id, None, vec!["pwd".into()], None, None)
                .await
                .unwrap();
        for client_id in clients {
            self.grant(user_id, client_id, browser.session_id).await;
        }
        browser.session_id
    }

    /// A grant (its own refresh session) made from `browser`; returns the grant's session.
    async fn grant(&self, user_id: Uuid, client_id: &str, browser: Uuid) -> Uuid {
        let g = sessions::create(
            &self.id,
            NewSession {
                user_id,
                org_id: None,
                auth_methods: vec!["pwd".into()],
                ip: None,
                user_agent: None,
                with_refresh_token: true,
                impersonator_id: None,
            },
        )
        .await
        .unwrap();
        let mut c = self.id.db.conn().await.unwrap();
        store::oidc::insert_grant(
            &mut c,
            &store::oidc::Grant {
                session_id: g.session.session_id,
                client_id: client_id.to_string(),
                browser_session_id: Some(browser),
                code_hash: None,
                scope: "openid".into(),
                acr: None,
                created_at: self.clock.now(),
            },
        )
        .await
        .unwrap();
        g.session.session_id
    }

    async fn notices(&self, browser: Uuid) -> Vec<store::oidc::LogoutNotice> {
        let mut c = self.id.db.conn().await.unwrap();
        store::oidc::logout_notices_of_session(&mut c, browser)
            .await
            .unwrap()
    }

    async fn finish(self) {
        self.id.db.close().await;
        self.db.drop_database().await;
    }
}

use lintel::clock::Clock;

fn secs(n: i64) -> chrono::Duration {
    chrono::Duration::seconds(n)
}

async fn a_refused_token_is_delivered_on_retry(db: TestDb) {
    let q = Quiet::new(db, &[]).await;
    let rp = Rp::start(&[500]).await;
    let user = q.user("ada@example.com").await;
    let client = q.client("RP", Some(&rp.url)).await;
    let sid = q.signed_in(user, &[&client]).await;
    // Any revocation path: here the account-level "sign out everywhere".
    sessions::revoke_all_for_user(&q.id, user, None)
        .await
        .unwrap();
    let n = q.notices(sid).await;
    assert_eq!(n.len(), 1);
    assert_eq!((n[0].attempts, n[0].user_id), (0, user));

    let r = q.run().await;
    assert_eq!((r.claimed, r.retried, rp.count()), (1, 1, 1), "{r:?}");
    let n = &q.notices(sid).await[0];
    assert_eq!(n.attempts, 1);
    assert_eq!(n.last_error.as_deref(), Some("HTTP 500"));
    assert_eq!(n.next_attempt_at, q.clock.now() + secs(10));
    assert!(n.delivered_at.is_none());

    // Not due yet.
    q.clock.advance(secs(9));
    assert_eq!(q.run().await.claimed, 0);
    q.clock.advance(secs(1));
    let r = q.run().await;
    assert_eq!((r.claimed, r.delivered), (1, 1), "{r:?}");
    let n = &q.notices(sid).await[0];
    assert_eq!(n.attempts, 2);
    assert_eq!(n.delivered_at, Some(q.clock.now()));
    // Nothing more, ever.
    q.clock.advance(secs(86_400));
    assert_eq!(q.run().await.claimed, 0);
    assert_eq!(rp.count(), 2);
    let tokens = rp.tokens();
    let (a, b) = (claims_of(&tokens[0]), claims_of(&tokens[1]));
    assert_eq!(a["sid"], sid.to_string());
    assert_eq!(b["sid"], sid.to_string());
    assert_eq!(b["sub"], user.to_string());
    assert_eq!(b["aud"], client);
    assert_ne!(a["jti"], b["jti"], "a fresh token each attempt");
    q.finish().await;
}

async fn notices_are_abandoned_after_the_last_attempt(db: TestDb) {
    let q = Quiet::new(db, &[("LINTEL_OIDC_BACKCHANNEL_LOGOUT_MAX_ATTEMPTS", "3")]).await;
    let rp = Rp::start(&[500, 503, 400, 500, 500]).await;
    let user = q.user("ada@example.com").await;
    let client = q.client("RP", Some(&rp.url)).await;
    let sid = q.signed_in(user, &[&client]).await;
    users::lock(&q.id, user).await.unwrap();
    for (attempt, wait) in [(1, 10), (2, 30)] {
        let r = q.run().await;
        assert_eq!((r.claimed, r.retried), (1, 1), "attempt {attempt}: {r:?}");
        q.clock.advance(secs(wait));
    }
    let r = q.run().await;
    assert_eq!((r.claimed, r.abandoned), (1, 1), "{r:?}");
    let n = &q.notices(sid).await[0];
    assert_eq!(n.attempts, 3);
    assert_eq!(n.abandoned_at, Some(q.clock.now()));
    assert_eq!(n.last_error.as_deref(), Some("HTTP 400"));
    assert!(n.delivered_at.is_none());
    q.clock.advance(secs(86_400));
    assert_eq!(q.run().await.claimed, 0);
    assert_eq!(rp.count(), 3, "no POST after the last attempt");

    // A client disabled before its notice is sent is owed nothing: abandoned unsent.
    let other = q.user("bob@example.com").await;
    let sid = q.signed_in(other, &[&client]).await;
    sessions::revoke(&q.id, other, sid).await.unwrap();
    clients::update(
        &q.id,
        &client,
        clients::ClientPatch {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = q.run().await;
    assert_eq!((r.claimed, r.abandoned), (1, 1), "{r:?}");
    assert_eq!(rp.count(), 3);

    // Finished notices are purged after the retention period.
    assert_eq!(backchannel::purge(&q.id).await.unwrap(), 0);
    q.clock.advance(backchannel::RETENTION + secs(1));
    assert_eq!(backchannel::purge(&q.id).await.unwrap(), 2);
    q.finish().await;
}

async fn concurrent_rounds_never_send_a_notice_twice(db: TestDb) {
    let q = Quiet::new(db, &[]).await;
    let rp = Rp::start(&[]).await;
    let a = q.client("A", Some(&rp.url)).await;
    let b = q.client("B", Some(&rp.url)).await;
    let mut sids = Vec::new();
    for i in 0..20 {
        let user = q.user(&format!("u{i}@example.com")).await;
        sids.push(q.signed_in(user, &[&a, &b]).await);
        sessions::revoke_all_for_user(&q.id, user, None)
            .await
            .unwrap();
    }
    // 40 notices; four rounds at once (BATCH is 32, so they must share).
    let rounds = tokio::join!(q.run(), q.run(), q.run(), q.run());
    let rounds = [rounds.0, rounds.1, rounds.2, rounds.3];
    let claimed: usize = rounds.iter().map(|r| r.claimed).sum();
    let delivered: usize = rounds.iter().map(|r| r.delivered).sum();
    // A round that found nothing left is fine; together they claim each notice once.
    let rest = q.run().await.claimed;
    assert_eq!((claimed + rest, delivered + rest), (40, 40), "{rounds:?}");
    let mut seen: Vec<(String, String)> = rp
        .tokens()
        .iter()
        .map(|t| {
            let c = claims_of(t);
            (c["aud"].to_string(), c["sid"].to_string())
        })
        .collect();
    assert_eq!(seen.len(), 40);
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 40, "a notice was sent twice");
    for sid in sids {
        for n in q.notices(sid).await {
            assert_eq!(n.attempts, 1);
            assert!(n.delivered_at.is_some());
        }
    }
    q.finish().await;
}

async fn only_enabled_clients_with_a_uri_are_owed_a_notice(db: TestDb) {
    let q = Quiet::new(db, &[]).await;
    let rp = Rp::start(&[]).await;
    let plain = q.client("No URI", None).await;
    let disabled = q.client("Disabled", Some(&rp.url)).await;
    clients::update(
        &q.id,
        &disabled,
        clients::ClientPatch {
            enabled: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let user = q.user("ada@example.com").await;
    let sid = q.signed_in(user, &[&plain, &disabled]).await;
    // Two grants to one client: still one notice.
    let owed = q.client("Owed", Some(&rp.url)).await;
    let other = q.user("bob@example.com").await;
    let sid2 = q.signed_in(other, &[&plain, &owed]).await;
    let grant = q.grant(other, &owed, sid2).await;
    // Ending a grant's own session (not a browser session) owes nothing.
    sessions::revoke(&q.id, other, grant).await.unwrap();
    assert!(q.notices(sid2).await.is_empty());

    sessions::revoke(&q.id, user, sid).await.unwrap();
    sessions::revoke(&q.id, other, sid2).await.unwrap();
    assert!(q.notices(sid).await.is_empty(), "no notice without a URI");
    let n = q.notices(sid2).await;
    assert_eq!(n.len(), 1);
    assert_eq!(n[0].client_id, owed);
    // Revoking again changes nothing.
    sessions::revoke_all_for_user(&q.id, other, None)
        .await
        .unwrap();
    assert_eq!(q.notices(sid2).await.len(), 1);
    let r = q.run().await;
    assert_eq!((r.claimed, r.delivered), (1, 1));
    assert_eq!(claims_of(&rp.tokens()[0])["aud"], owed);
    q.finish().await;
}

async fn deleting_the_user_still_sends_the_logout_token(db: TestDb) {
    let q = Quiet::new(db, &[]).await;
    let rp = Rp::start(&[]).await;
    let client = q.client("RP", Some(&rp.url)).await;
    let user = q.user("ada@example.com").await;
    let sid = q.signed_in(user, &[&client]).await;
    users::delete(&q.id, user).await.unwrap();
    let n = q.notices(sid).await;
    assert_eq!(n.len(), 1, "the notice outlives the user");
    assert_eq!(n[0].user_id, user);
    let r = q.run().await;
    assert_eq!((r.claimed, r.delivered), (1, 1), "{r:?}");
    let c = claims_of(&rp.tokens()[0]);
    assert_eq!(
        (c["sub"].as_str(), c["sid"].as_str()),
        (
            Some(user.to_string().as_str()),
            Some(sid.to_string().as_str())
        )
    );

    // Deleting an org ends the sessions opened for it the same way.
    let bob = q.user("bob@example.com").await;
    let org = lintel::identity::orgs::create(&q.id, "Acme", None)
        .await
        .unwrap();
    lintel::identity::memberships::add(&q.id, org.org_id, bob, "member")
        .await
        .unwrap();
    let (browser, _) =
        lintel::oidc::session::open(&q.id, bob, Some(org.org_id), vec!["pwd".into()], None, None)
            .await
            .unwrap();
    q.grant(bob, &client, browser.session_id).await;
    lintel::identity::orgs::delete(&q.id, org.org_id)
        .await
        .unwrap();
    assert_eq!(q.notices(browser.session_id).await.len(), 1);
    assert_eq!(q.run().await.delivered, 1);
    q.finish().await;
}
