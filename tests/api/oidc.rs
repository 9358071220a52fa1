//! The OpenID Connect provider through real HTTP on both backends: discovery and JWKS, the
//! hosted login (CSRF, MFA), authorization code + PKCE, tokens verified against the JWKS,
//! refresh rotation and reuse detection, code reuse, userinfo, introspection, revocation,
//! logout, and the OIDF Basic OP checks that can be driven without a browser.
use crate::helpers::TestApp;
use crate::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use lintel::config::Secret;
use lintel::identity::users::{self, NewUser};
use lintel::oidc::clients::{self, NewClient};
use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;

on_both_backends!(
    discovery_and_jwks_describe_the_provider,
    code_flow_with_tokens_userinfo_refresh_introspect_revoke_logout,
    a_reused_code_fails_and_revokes_its_tokens,
    refresh_reuse_after_grace_revokes_the_family,
    concurrent_refreshes_share_one_successor,
    authorization_errors_never_redirect_to_unregistered_uris,
    public_clients_need_pkce_s256,
    client_authentication_failures_are_401,
    client_credentials_tokens_are_jwt_access_tokens,
    prompt_max_age_and_hints_force_login,
    mfa_users_pass_a_totp_step,
    forms_without_csrf_are_refused,
);

pub const REDIRECT: &str = "https://rp.example/cb";
pub const PASSWORD: &str = "correct horse battery";
const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";

fn challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A browser: follows no redirects, keeps cookies.
pub struct Browser {
    http: reqwest::Client,
    cookies: HashMap<String, String>,
    base: String,
}

pub struct Page {
    pub status: u16,
    pub location: Option<String>,
    pub body: String,
}

impl Browser {
    pub fn new(app: &TestApp) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
            base: app.url(""),
        }
    }

    fn keep(&mut self, h: &HeaderMap) {
        for v in h.get_all(SET_COOKIE) {
            let v = v.to_str().unwrap();
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn page(&mut self, r: reqwest::RequestBuilder) -> Page {
        let resp = r
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(resp.headers());
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get(LOCATION)
            .map(|v| v.to_str().unwrap().to_string());
        Page {
            status,
            location,
            body: resp.text().await.unwrap(),
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        let r = self.http.get(format!("{}{path}", self.base));
        self.page(r).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let r = self.http.post(format!("{}{path}", self.base)).form(form);
        self.page(r).await
    }
}

fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// The value of a hidden input in a page.
pub fn hidden(body: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let start = body
        .find(&marker)
        .unwrap_or_else(|| panic!("no {name} in {body}"))
        + marker.len();
    let end = body[start..].find('"').unwrap() + start;
    unescape(&body[start..end])
}

pub fn query_of(location: &str) -> HashMap<String, String> {
    let u = url::Url::parse(location).unwrap();
    u.query_pairs().into_owned().collect()
}

pub struct Setup {
    pub client_id: String,
    pub secret: String,
    pub user_id: uuid::Uuid,
    pub email: String,
}

pub async fn setup(app: &TestApp, first_party: bool) -> Setup {
    let id = &app.state.identity;
    let email = "ada@example.com".to_string();
    let (user, _) = users::create(
        id,
        NewUser {
            email: email.clone(),
            password: Some(Secret::new(PASSWORD.into())),
            first_name: Some("Ada".into()),
            last_name: Some("Lovelace".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (client, secret) = clients::create(
        id,
        NewClient {
            name: "RP".into(),
            redirect_uris: vec![REDIRECT.into()],
            post_logout_redirect_uris: vec!["https://rp.example/bye".into()],
            scopes: Some(
                ["openid", "profile", "email", "offline_access"]
                    .map(String::from)
                    .to_vec(),
            ),
            first_party,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Setup {
        client_id: client.client_id,
        secret: secret.unwrap().expose().clone(),
        user_id: user.user_id,
        email,
    }
}

pub fn auth_path(client_id: &str, extra: &[(&str, &str)]) -> String {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    let mut base = vec![
        ("client_id", client_id),
        ("redirect_uri", REDIRECT),
        ("response_type", "code"),
        ("scope", "openid profile email"),
        ("state", "st-1"),
        ("nonce", "n-1"),
    ];
    let ch = challenge(VERIFIER);
    base.push(("code_challenge", &ch));
    base.push(("code_challenge_method", "S256"));
    for (k, v) in extra {
        base.retain(|(b, _)| b != k);
        if !v.is_empty() {
            base.push((k, v));
        }
    }
    q.extend_pairs(base);
    format!("/oauth2/authorize?{}", q.finish())
}

/// Posts the login form of `page`.
pub async fn submit_login(b: &mut Browser, page: &Page, email: &str, password: &str) -> Page {
    assert_eq!(page.status, 200, "{}", page.body);
    let csrf = hidden(&page.body, "csrf");
    let auth = hidden(&page.body, "auth");
    b.post(
        "/login",
        &[
            ("email", email),
            ("password", password),
            ("csrf", &csrf),
            ("auth", &auth),
        ],
    )
    .await
}

/// Logs in through the authorize endpoint; returns the code.
pub async fn login_for_code(b: &mut Browser, s: &Setup, extra: &[(&str, &str)]) -> String {
    let page = b.get(&auth_path(&s.client_id, extra)).await;
    // Already signed in (SSO): straight back to the client.
    let done = if page.status == 303 {
        page
    } else {
        submit_login(b, &page, &s.email, PASSWORD).await
    };
    assert_eq!(done.status, 303, "{}", done.body);
    let q = query_of(done.location.as_deref().unwrap());
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], lintel_issuer());
    q["code"].clone()
}

pub fn lintel_issuer() -> String {
    "http://127.0.0.1:8080".into()
}

pub async fn token(app: &TestApp, s: &Setup, form: &[(&str, &str)]) -> (u16, Value, HeaderMap) {
    let resp = app
        .client
        .post(app.url("/oauth2/token"))
        .basic_auth(&s.client_id, Some(&s.secret))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, resp.json().await.unwrap_or(Value::Null), headers)
}

pub async fn exchange(app: &TestApp, s: &Setup, code: &str) -> (u16, Value) {
    let (st, v, h) = token(
        app,
        s,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    if st == 200 {
        assert_eq!(h["cache-control"], "no-store");
    }
    (st, v)
}

/// Verifies a JWT against the provider's JWKS; returns (header, claims).
pub async fn verify_jwt(app: &TestApp, jwt: &str) -> (Value, Value) {
    let jwks: Value = app
        .client
        .get(app.url("/oauth2/jwks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(jwt.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    let kid = header["kid"].as_str().unwrap();
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .expect("signing key published");
    let jwk = josekit::jwk::Jwk::from_map(key.as_object().unwrap().clone()).unwrap();
    assert_eq!(key["alg"], header["alg"]);
    let verifier: Box<dyn josekit::jws::JwsVerifier> = match header["alg"].as_str().unwrap() {
        "ES256" => Box::new(josekit::jws::ES256.verifier_from_jwk(&jwk).unwrap()),
        "RS256" => Box::new(josekit::jws::RS256.verifier_from_jwk(&jwk).unwrap()),
        "EdDSA" => Box::new(josekit::jws::EdDSA.verifier_from_jwk(&jwk).unwrap()),
        other => panic!("unexpected alg {other}"),
    };
    let (payload, _) =
        josekit::jwt::decode_with_verifier(jwt, verifier.as_ref()).expect("valid signature");
    (header, Value::Object(payload.claims_set().clone()))
}

async fn userinfo_get(app: &TestApp, at: &str) -> (u16, Value, HeaderMap) {
    let r = app
        .client
        .get(app.url("/oauth2/userinfo"))
        .bearer_auth(at)
        .send()
        .await
        .unwrap();
    let s = r.status().as_u16();
    let h = r.headers().clone();
    (s, r.json().await.unwrap_or(Value::Null), h)
}

async fn discovery_and_jwks_describe_the_provider(app: TestApp) {
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(
            r.headers()["cache-control"]
                .to_str()
                .unwrap()
                .contains("max-age")
        );
        let d: Value = r.json().await.unwrap();
        assert_eq!(d["issuer"], lintel_issuer());
        assert_eq!(
            d["token_endpoint"],
            format!("{}/oauth2/token", lintel_issuer())
        );
        assert_eq!(d["response_types_supported"], json!(["code"]));
        assert_eq!(d["code_challenge_methods_supported"], json!(["S256"]));
        assert_eq!(
            d["id_token_signing_alg_values_supported"],
            json!(["ES256", "RS256", "EdDSA"])
        );
        assert_eq!(d["request_parameter_supported"], false);
        assert_eq!(d["authorization_response_iss_parameter_supported"], true);
        assert_eq!(
            d["token_endpoint_auth_methods_supported"],
            json!([
                "client_secret_basic",
                "client_secret_post",
                "private_key_jwt",
                "none"
            ])
        );
        assert_eq!(d["backchannel_logout_supported"], true);
    }
    let r = app
        .client
        .get(app.url("/oauth2/jwks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["cache-control"]
            .to_str()
            .unwrap()
            .contains("max-age")
    );
    let jwks: Value = r.json().await.unwrap();
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0].get("d").is_none(), "no private part");
    app.finish().await;
}

async fn code_flow_with_tokens_userinfo_refresh_introspect_revoke_logout(app: TestApp) {
    let s = setup(&app, true).await;
    let mut b = Browser::new(&app);
    let page = b
        .get(&auth_path(&s.client_id, &[("unknown_param", "x")]))
        .await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"name="email""#) && page.body.contains(r#"name="password""#));
    // Wrong password: the form again, no session.
    let bad = submit_login(&mut b, &page, &s.email, "wrong password!").await;
    assert_eq!(bad.status, 401);
    assert!(bad.body.contains("Invalid email or password"));
    assert!(!b.cookies.contains_key("lintel_session"));
    let done = submit_login(&mut b, &page, &s.email, PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let q = query_of(done.location.as_deref().unwrap());
    assert!(done.location.as_deref().unwrap().starts_with(REDIRECT));
    assert_eq!(q["state"], "st-1");
    let code = q["code"].clone();
    let (st, t) = exchange(&app, &s, &code).await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["scope"], "openid profile email");
    let at = t["access_token"].as_str().unwrap().to_string();
    let rt = t["refresh_token"].as_str().unwrap().to_string();
    let (h, idt) = verify_jwt(&app, t["id_token"].as_str().unwrap()).await;
    assert_eq!(h["alg"], "ES256");
    assert_eq!(idt["iss"], lintel_issuer());
    assert_eq!(idt["sub"], s.user_id.to_string());
    assert_eq!(idt["aud"], s.client_id);
    assert_eq!(idt["azp"], s.client_id);
    assert_eq!(idt["nonce"], "n-1");
    assert_eq!(idt["amr"], json!(["pwd"]));
    assert_eq!(idt["email"], s.email);
    assert_eq!(idt["name"], "Ada Lovelace");
    let at_hash = URL_SAFE_NO_PAD.encode(&Sha256::digest(at.as_bytes())[..16]);
    assert_eq!(idt["at_hash"], at_hash);
    assert!(idt["exp"].as_i64().unwrap() > idt["iat"].as_i64().unwrap());
    assert!(idt["auth_time"].as_i64().unwrap() <= idt["iat"].as_i64().unwrap());
    let sid = idt["sid"].as_str().unwrap().to_string();
    let (ah, atc) = verify_jwt(&app, &at).await;
    assert_eq!(ah["typ"], "at+jwt");
    assert_eq!(atc["client_id"], s.client_id);
    assert!(atc["jti"].is_string());

    // UserInfo: header, POST form body, POST with header.
    let (st, ui, _) = userinfo_get(&app, &at).await;
    assert_eq!(st, 200, "{ui}");
    assert_eq!(ui["sub"], s.user_id.to_string());
    assert_eq!(ui["email"], s.email);
    let r = app
        .client
        .post(app.url("/oauth2/userinfo"))
        .form(&[("access_token", at.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = app
        .client
        .post(app.url("/oauth2/userinfo"))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (st, _, h) = userinfo_get(&app, "not-a-token").await;
    assert_eq!(st, 401);
    assert!(
        h["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );

    // SSO: a second authorization needs no login.
    let again = b.get(&auth_path(&s.client_id, &[])).await;
    assert_eq!(again.status, 303, "{}", again.body);
    assert!(query_of(again.location.as_deref().unwrap()).contains_key("code"));

    // Refresh: rotated each time.
    let (st, r1, _) = token(
        &app,
        &s,
        &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
    )
    .await;
    assert_eq!(st, 200, "{r1}");
    let rt2 = r1["refresh_token"].as_str().unwrap().to_string();
    assert_ne!(rt2, rt);
    let (_, idt2) = verify_jwt(&app, r1["id_token"].as_str().unwrap()).await;
    assert_eq!(idt2["sub"], idt["sub"]);
    assert_eq!(idt2["auth_time"], idt["auth_time"]);

    // Introspection.
    let intro = |token: String| {
        let app = &app;
        let s = &s;
        async move {
            app.client
                .post(app.url("/oauth2/introspect"))
                .basic_auth(&s.client_id, Some(&s.secret))
                .form(&[("token", token.as_str())])
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let new_at = r1["access_token"].as_str().unwrap().to_string();
    let v = intro(new_at.clone()).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["client_id"], s.client_id);
    assert_eq!(intro(rt2.clone()).await["active"], true);
    assert_eq!(intro("garbage".into()).await, json!({ "active": false }));

    // Revocation of the refresh token ends the grant (and its access tokens).
    let r = app
        .client
        .post(app.url("/oauth2/revoke"))
        .basic_auth(&s.client_id, Some(&s.secret))
        .form(&[("token", rt2.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(intro(rt2.clone()).await["active"], false);
    assert_eq!(intro(new_at.clone()).await["active"], false);
    assert_eq!(userinfo_get(&app, &new_at).await.0, 401);
    let r = app
        .client
        .post(app.url("/oauth2/revoke"))
        .basic_auth(&s.client_id, Some(&s.secret))
        .form(&[("token", "unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // RP-initiated logout with id_token_hint, registered URI and state.
    let hint = t["id_token"].as_str().unwrap();
    let bad = b
        .get(&format!(
            "/oauth2/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Fevil.example%2F"
        ))
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.location.is_none());
    let out = b
        .get(&format!(
            "/oauth2/logout?id_token_hint={hint}&post_logout_redirect_uri=https%3A%2F%2Frp.example%2Fbye&state=bye-1"
        ))
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    assert_eq!(
        out.location.as_deref(),
        Some("https://rp.example/bye?state=bye-1")
    );
    assert!(!b.cookies.contains_key("lintel_session"));
    let mut c = app.db.conn().await.unwrap();
    let browser = lintel::store::sessions::get(&mut c, uuid::Uuid::parse_str(&sid).unwrap())
        .await
        .unwrap()
        .unwrap();
    drop(c);
    assert!(browser.revoked);
    // The access token of the first grant (made from that session) is dead too.
    assert_eq!(userinfo_get(&app, &at).await.0, 401);
    // No session: prompt=none answers login_required by redirect.
    let none = b.get(&auth_path(&s.client_id, &[("prompt", "none")])).await;
    assert_eq!(none.status, 303);
    let q = query_of(none.location.as_deref().unwrap());
    assert_eq!(q["error"], "login_required");
    assert_eq!(q["state"], "st-1");
    assert_eq!(q["iss"], lintel_issuer());
    app.finish().await;
}

async fn a_reused_code_fails_and_revokes_its_tokens(app: TestApp) {
    let s = setup(&app, true).await;
    let mut b = Browser::new(&app);
    let code = login_for_code(&mut b, &s, &[]).await;
    let (st, t) = exchange(&app, &s, &code).await;
    assert_eq!(st, 200);
    let at = t["access_token"].as_str().unwrap();
    assert_eq!(userinfo_get(&app, at).await.0, 200);
    let (st, e) = exchange(&app, &s, &code).await;
    assert_eq!(st, 400);
    assert_eq!(e["error"], "invalid_grant");
    assert_eq!(userinfo_get(&app, at).await.0, 401);
    let (st, e, _) = token(
        &app,
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", t["refresh_token"].as_str().unwrap()),
        ],
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(e["error"], "invalid_grant");
    // Wrong redirect_uri or verifier: invalid_grant, and the code survives for its owner.
    let code = login_for_code(&mut b, &s, &[]).await;
    let (st, e, _) = token(
        &app,
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", "https://rp.example/other"),
            ("code_verifier", VERIFIER),
        ],
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    let (st, e, _) = token(
        &app,
        &s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", "x".repeat(43).as_str()),
        ],
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    assert_eq!(exchange(&app, &s, &code).await.0, 200);
    app.finish().await;
}

/// Logs in through a browser and exchanges the code: the refresh token issued.
async fn first_refresh_token(app: &TestApp, s: &Setup) -> String {
    let mut b = Browser::new(app);
    let code = login_for_code(&mut b, s, &[]).await;
    let (_, t) = exchange(app, s, &code).await;
    t["refresh_token"].as_str().unwrap().to_string()
}

async fn refresh_reuse_after_grace_revokes_the_family(app: TestApp) {
    let s = setup(&app, true).await;
    let rt = first_refresh_token(&app, &s).await;
    let refresh = |rt: String| {
        let app = &app;
        let s = &s;
        async move {
            let (st, v, _) = token(
                app,
                s,
                &[("grant_type", "refresh_token"), ("refresh_token", &rt)],
            )
            .await;
            (st, v)
        }
    };
    let (st, r1) = refresh(rt.clone()).await;
    assert_eq!(st, 200);
    let rt2 = r1["refresh_token"].as_str().unwrap().to_string();
    // Within the grace window (default 10 s) a concurrent refresh gets the same successor.
    let (st, r1b) = refresh(rt.clone()).await;
    assert_eq!(st, 200, "{r1b}");
    assert_eq!(r1b["refresh_token"], rt2);
    // Past the grace window (simulated by rotating again, so the successor is no longer
    // current), reuse of the first token revokes the family.
    let (st, r2) = refresh(rt2.clone()).await;
    assert_eq!(st, 200);
    let rt3 = r2["refresh_token"].as_str().unwrap().to_string();
    let (st, e) = refresh(rt.clone()).await;
    assert_eq!(st, 400);
    assert_eq!(e["error"], "invalid_grant");
    let (st, _) = refresh(rt3).await;
    assert_eq!(st, 400, "the whole family is revoked");
    app.finish().await;
}

/// Eight refreshes of one token at once: exactly one rotation happens (the others lose the
/// race in `rotate_refresh` and are answered from the grace window with the same
/// successor), and the successor then rotates normally.
async fn concurrent_refreshes_share_one_successor(app: TestApp) {
    let s = setup(&app, true).await;
    let rt = first_refresh_token(&app, &s).await;
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (client, url) = (app.client.clone(), app.url("/oauth2/token"));
            let (id, secret, rt) = (s.client_id.clone(), s.secret.clone(), rt.clone());
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .basic_auth(id, Some(secret))
                    .form(&[
                        ("grant_type", "refresh_token"),
                        ("refresh_token", rt.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                let st = r.status().as_u16();
                (st, r.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut successors = std::collections::BTreeSet::new();
    for call in calls {
        let (st, v) = call.await.unwrap();
        assert_eq!(st, 200, "{v}");
        successors.insert(v["refresh_token"].as_str().unwrap().to_string());
    }
    assert_eq!(successors.len(), 1, "one successor for all: {successors:?}");
    let next = successors.into_iter().next().unwrap();
    assert_ne!(next, rt);
    let (st, v, _) = token(
        &app,
        &s,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", next.as_str()),
        ],
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_ne!(v["refresh_token"].as_str().unwrap(), next);
    app.finish().await;
}

async fn authorization_errors_never_redirect_to_unregistered_uris(app: TestApp) {
    let s = setup(&app, true).await;
    let mut b = Browser::new(&app);
    for path in [
        auth_path("no-such-client", &[]),
        auth_path(&s.client_id, &[("redirect_uri", "https://evil.example/cb")]),
        auth_path(
            &s.client_id,
            &[("redirect_uri", "https://rp.example/cb/extra")],
        ),
        auth_path(&s.client_id, &[("redirect_uri", "")]),
        auth_path("", &[]),
    ] {
        let p = b.get(&path).await;
        assert_eq!(p.status, 400, "{path}");
        assert!(p.location.is_none(), "{path}");
        assert!(p.body.contains("<h1>"), "an HTML page");
    }
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("request", "eyJhbGciOiJub25lIn0.e30.")],
            "request_not_supported",
        ),
        (
            &[("request_uri", "https://rp.example/req")],
            "request_uri_not_supported",
        ),
        (&[("response_type", "token")], "unsupported_response_type"),
        (&[("scope", "profile")], "invalid_scope"),
        (&[("code_challenge_method", "plain")], "invalid_request"),
        (&[("prompt", "none")], "login_required"),
    ];
    for (extra, code) in cases {
        let p = b.get(&auth_path(&s.client_id, extra)).await;
        assert_eq!(p.status, 303, "{extra:?}: {}", p.body);
        let loc = p.location.unwrap();
        assert!(loc.starts_with(REDIRECT), "{loc}");
        let q = query_of(&loc);
        assert_eq!(q["error"], *code, "{extra:?}");
        assert_eq!(q["state"], "st-1");
        assert_eq!(q["iss"], lintel_issuer());
    }
    // POST to the authorization endpoint works like GET.
    let p = b
        .post(
            "/oauth2/authorize",
            &[
                ("client_id", s.client_id.as_str()),
                ("redirect_uri", REDIRECT),
                ("response_type", "code"),
                ("scope", "openid"),
                ("prompt", "none"),
                ("state", "p"),
            ],
        )
        .await;
    assert_eq!(
        query_of(p.location.as_deref().unwrap())["error"],
        "login_required"
    );
    app.finish().await;
}

async fn public_clients_need_pkce_s256(app: TestApp) {
    let s = setup(&app, true).await;
    let (public, none) = clients::create(
        &app.state.identity,
        NewClient {
            name: "native".into(),
            public: true,
            redirect_uris: vec!["http://127.0.0.1/cb".into()],
            first_party: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(none.is_none());
    let mut b = Browser::new(&app);
    // Loopback: any port (RFC 8252 §7.3).
    let redirect = "http://127.0.0.1:49152/cb";
    let p = b
        .get(&auth_path(
            &public.client_id,
            &[
                ("redirect_uri", redirect),
                ("code_challenge", ""),
                ("code_challenge_method", ""),
            ],
        ))
        .await;
    assert_eq!(p.status, 303);
    assert_eq!(
        query_of(p.location.as_deref().unwrap())["error"],
        "invalid_request"
    );
    let page = b
        .get(&auth_path(&public.client_id, &[("redirect_uri", redirect)]))
        .await;
    let done = submit_login(&mut b, &page, &s.email, PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let loc = done.location.unwrap();
    assert!(loc.starts_with(redirect));
    let code = query_of(&loc)["code"].clone();
    let post = |form: Vec<(&'static str, String)>| {
        let app = &app;
        async move {
            let r = app
                .client
                .post(app.url("/oauth2/token"))
                .form(&form)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let base = |verifier: &str| {
        vec![
            ("grant_type", "authorization_code".to_string()),
            ("client_id", public.client_id.clone()),
            ("code", code.clone()),
            ("redirect_uri", redirect.to_string()),
            ("code_verifier", verifier.to_string()),
        ]
    };
    let (st, e) = post(base("wrong-verifier-wrong-verifier-wrong-verifier")).await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_grant")));
    let (st, t) = post(base(VERIFIER)).await;
    assert_eq!(st, 200, "{t}");
    assert!(t["id_token"].is_string());
    app.finish().await;
}

async fn client_authentication_failures_are_401(app: TestApp) {
    let s = setup(&app, true).await;
    let r = app
        .client
        .post(app.url("/oauth2/token"))
        .basic_auth(&s.client_id, Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(
        r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Basic")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"], "invalid_client");
    // client_secret_post for a client registered with client_secret_basic: refused.
    let r = app
        .client
        .post(app.url("/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", s.client_id.as_str()),
            ("client_secret", s.secret.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // A client_secret_post client authenticates in the body.
    let (post_client, secret) = clients::create(
        &app.state.identity,
        NewClient {
            name: "post".into(),
            redirect_uris: vec![REDIRECT.into()],
            token_endpoint_auth_method: Some("client_secret_post".into()),
            first_party: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let secret = secret.unwrap().expose().clone();
    let mut b = Browser::new(&app);
    let page = b.get(&auth_path(&post_client.client_id, &[])).await;
    let done = submit_login(&mut b, &page, &s.email, PASSWORD).await;
    let code = query_of(done.location.as_deref().unwrap())["code"].clone();
    let r = app
        .client
        .post(app.url("/oauth2/token"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("client_id", post_client.client_id.as_str()),
            ("client_secret", secret.as_str()),
            ("code", code.as_str()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", VERIFIER),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Unsupported grant and missing parameters.
    let (st, e, _) = token(&app, &s, &[("grant_type", "password")]).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );
    let (st, e, _) = token(&app, &s, &[("grant_type", "client_credentials")]).await;
    assert_eq!(
        (st, e["error"].as_str()),
        (400, Some("unauthorized_client"))
    );
    let r = app
        .client
        .post(app.url("/oauth2/token"))
        .basic_auth(&s.client_id, Some(&s.secret))
        .json(&json!({"grant_type": "client_credentials"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    app.finish().await;
}

async fn client_credentials_tokens_are_jwt_access_tokens(app: TestApp) {
    let (m2m, secret) = clients::create(
        &app.state.identity,
        NewClient {
            name: "service".into(),
            grant_types: Some(vec!["client_credentials".into()]),
            scopes: Some(vec!["org".into()]),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let s = Setup {
        client_id: m2m.client_id.clone(),
        secret: secret.unwrap().expose().clone(),
        user_id: uuid::Uuid::nil(),
        email: String::new(),
    };
    let (st, t, h) = token(&app, &s, &[("grant_type", "client_credentials")]).await;
    assert_eq!(st, 200, "{t}");
    assert!(
        h.get("ratelimit-limit").is_some(),
        "token endpoint is rate limited"
    );
    assert!(t.get("refresh_token").is_none() && t.get("id_token").is_none());
    let (hd, c) = verify_jwt(&app, t["access_token"].as_str().unwrap()).await;
    assert_eq!(hd["typ"], "at+jwt");
    assert_eq!(c["sub"], m2m.client_id);
    assert_eq!(c["client_id"], m2m.client_id);
    assert_eq!(c["scope"], "org");
    let (st, e, _) = token(
        &app,
        &s,
        &[("grant_type", "client_credentials"), ("scope", "admin")],
    )
    .await;
    assert_eq!((st, e["error"].as_str()), (400, Some("invalid_scope")));
    let v: Value = app
        .client
        .post(app.url("/oauth2/introspect"))
        .basic_auth(&s.client_id, Some(&s.secret))
        .form(&[("token", t["access_token"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["active"], true);
    // No user behind it: userinfo refuses.
    assert_eq!(
        userinfo_get(&app, t["access_token"].as_str().unwrap())
            .await
            .0,
        403
    );
    app.finish().await;
}

async fn prompt_max_age_and_hints_force_login(app: TestApp) {
    let s = setup(&app, true).await;
    let mut b = Browser::new(&app);
    let code = login_for_code(&mut b, &s, &[]).await;
    let (_, t) = exchange(&app, &s, &code).await;
    let hint = t["id_token"].as_str().unwrap().to_string();
    // Signed in: prompt=none issues a code; id_token_hint of the same user too.
    let p = b
        .get(&auth_path(
            &s.client_id,
            &[("prompt", "none"), ("id_token_hint", &hint)],
        ))
        .await;
    assert_eq!(p.status, 303);
    assert!(query_of(p.location.as_deref().unwrap()).contains_key("code"));
    // prompt=login shows the login page despite the session, and the new login succeeds.
    let p = b
        .get(&auth_path(&s.client_id, &[("prompt", "login")]))
        .await;
    assert_eq!(p.status, 200);
    let done = submit_login(&mut b, &p, &s.email, PASSWORD).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let code = query_of(done.location.as_deref().unwrap())["code"].clone();
    let (_, t2) = exchange(&app, &s, &code).await;
    let (_, c2) = verify_jwt(&app, t2["id_token"].as_str().unwrap()).await;
    let (_, c1) = verify_jwt(&app, &hint).await;
    assert!(c2["auth_time"].as_i64() >= c1["auth_time"].as_i64());
    // max_age=0: always a fresh login; with prompt=none, login_required.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let p = b.get(&auth_path(&s.client_id, &[("max_age", "0")])).await;
    assert_eq!(p.status, 200, "max_age forces the login page");
    let p = b
        .get(&auth_path(
            &s.client_id,
            &[("max_age", "0"), ("prompt", "none")],
        ))
        .await;
    assert_eq!(
        query_of(p.location.as_deref().unwrap())["error"],
        "login_required"
    );
    // login_hint of another user: the login page, prefilled.
    let p = b
        .get(&auth_path(
            &s.client_id,
            &[("login_hint", "bob@example.com")],
        ))
        .await;
    assert_eq!(p.status, 200);
    assert!(p.body.contains(r#"value="bob@example.com""#), "{}", p.body);
    // A bad id_token_hint is an error redirect.
    let p = b
        .get(&auth_path(&s.client_id, &[("id_token_hint", "a.b.c")]))
        .await;
    assert_eq!(
        query_of(p.location.as_deref().unwrap())["error"],
        "invalid_request"
    );
    app.finish().await;
}

async fn mfa_users_pass_a_totp_step(app: TestApp) {
    let s = setup(&app, true).await;
    let id = &app.state.identity;
    let e = lintel::identity::mfa::begin_totp_enrolment(id, s.user_id)
        .await
        .unwrap();
    let seed = totp_rs::Secret::try_from_base32(&e.secret_base32).unwrap();
    let seed: Vec<u8> = AsRef::<[u8]>::as_ref(&seed).to_vec();
    let step = lintel::identity::mfa::totp_step(lintel::clock::Clock::now(&*id.clock));
    let code = lintel::identity::mfa::totp_code(&seed, step, 6).unwrap();
    lintel::identity::mfa::confirm_totp(id, s.user_id, e.device_id, &code)
        .await
        .unwrap();
    let mut b = Browser::new(&app);
    let page = b.get(&auth_path(&s.client_id, &[])).await;
    let mfa = submit_login(&mut b, &page, &s.email, PASSWORD).await;
    assert_eq!(mfa.status, 200, "{}", mfa.body);
    assert!(mfa.body.contains(r#"name="code""#));
    assert!(
        !b.cookies.contains_key("lintel_session"),
        "no session before the second factor"
    );
    let csrf = hidden(&mfa.body, "csrf");
    let auth = hidden(&mfa.body, "auth");
    let pending = hidden(&mfa.body, "pending");
    let wrong = b
        .post(
            "/login/mfa",
            &[
                ("code", "000000"),
                ("csrf", &csrf),
                ("auth", &auth),
                ("pending", &pending),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    // The next step's code (the current one was spent by the enrolment).
    let next = lintel::identity::mfa::totp_code(&seed, step + 1, 6).unwrap();
    let done = b
        .post(
            "/login/mfa",
            &[
                ("code", &next),
                ("csrf", &csrf),
                ("auth", &auth),
                ("pending", &pending),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let code = query_of(done.location.as_deref().unwrap())["code"].clone();
    let (_, t) = exchange(&app, &s, &code).await;
    let (_, c) = verify_jwt(&app, t["id_token"].as_str().unwrap()).await;
    assert_eq!(c["amr"], json!(["pwd", "otp", "mfa"]));
    assert_eq!(c["acr"], "urn:lintel:acr:mfa");
    app.finish().await;
}

async fn forms_without_csrf_are_refused(app: TestApp) {
    let s = setup(&app, true).await;
    let mut b = Browser::new(&app);
    let page = b.get(&auth_path(&s.client_id, &[])).await;
    let auth = hidden(&page.body, "auth");
    let r = b
        .post(
            "/login",
            &[
                ("email", s.email.as_str()),
                ("password", PASSWORD),
                ("auth", &auth),
                ("csrf", "forged-forged-forged-forged-forged-forged"),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    assert!(!b.cookies.contains_key("lintel_session"));
    // Cookie flags.
    let resp = reqwest::Client::new()
        .get(app.url(&auth_path(&s.client_id, &[])))
        .send()
        .await
        .unwrap();
    let set = resp.headers()[SET_COOKIE].to_str().unwrap().to_string();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Lax"),
        "{set}"
    );
    app.finish().await;
}

mod more {
    //! Keys, org claims, impersonation by token exchange, forced password change, consent,
    //! login rate limit.
    use super::*;
    use crate::helpers::{Spawn, TestDb, identity_with_config, lintel, spawn_app_with};
    use crate::on_both_databases;
    use lintel::clock::FixedClock;
    use lintel::identity::{memberships, orgs};

    on_both_backends!(
        org_scope_claims_and_impersonation_by_token_exchange,
        forced_password_change_then_code,
        third_party_clients_ask_for_consent,
        keys_rotate_cli_publishes_the_new_key_first,
        orgs_requiring_mfa_step_up_sso_sessions,
        id_tokens_use_the_clients_algorithm,
        the_org_scope_lets_members_of_several_orgs_choose,
        private_key_jwt_clients_sign_single_use_assertions,
    );
    on_both_databases!(rotation_signs_with_the_new_key_after_the_delay);

    async fn org_scope_claims_and_impersonation_by_token_exchange(app: TestApp) {
        let id = &app.state.identity;
        let org = orgs::create(id, "Acme", Some("acme")).await.unwrap();
        let mk = |email: &str| NewUser {
            email: email.into(),
            password: Some(Secret::new(PASSWORD.into())),
            ..Default::default()
        };
        let (admin, _) = users::create(id, mk("admin@acme.example")).await.unwrap();
        let (member, _) = users::create(id, mk("member@acme.example")).await.unwrap();
        let (outsider, _) = users::create(id, mk("out@else.example")).await.unwrap();
        memberships::add(id, org.org_id, admin.user_id, "owner")
            .await
            .unwrap();
        memberships::add(id, org.org_id, member.user_id, "member")
            .await
            .unwrap();
        let (client, secret) = clients::create(
            id,
            NewClient {
                name: "Acme admin".into(),
                org_id: Some(org.org_id),
                redirect_uris: vec![REDIRECT.into()],
                grant_types: Some(
                    [
                        "authorization_code",
                        "refresh_token",
                        "urn:ietf:params:oauth:grant-type:token-exchange",
                    ]
                    .map(String::from)
                    .to_vec(),
                ),
                scopes: Some(
                    ["openid", "profile", "email", "org"]
                        .map(String::from)
                        .to_vec(),
                ),
                first_party: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let s = Setup {
            client_id: client.client_id.clone(),
            secret: secret.unwrap().expose().clone(),
            user_id: admin.user_id,
            email: admin.email.clone(),
        };
        // An outsider cannot sign in to an org-bound client.
        let mut b = Browser::new(&app);
        let page = b
            .get(&auth_path(&s.client_id, &[("scope", "openid org")]))
            .await;
        let r = submit_login(&mut b, &page, &outsider.email, PASSWORD).await;
        assert_eq!(r.status, 401);
        assert!(!b.cookies.contains_key("lintel_session"));
        // The admin gets the org claims.
        let mut b = Browser::new(&app);
        let code = login_for_code(&mut b, &s, &[("scope", "openid org")]).await;
        let (st, t) = exchange(&app, &s, &code).await;
        assert_eq!(st, 200, "{t}");
        let (_, c) = verify_jwt(&app, t["id_token"].as_str().unwrap()).await;
        assert_eq!(c["org_id"], org.org_id.to_string());
        assert_eq!(c["org_slug"], "acme");
        assert_eq!(c["org_name"], "Acme");
        assert_eq!(c["role"], "owner");
        assert!(
            c["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p == "impersonate")
        );
        assert!(c.get("email").is_none(), "no email scope asked");
        // Token exchange: the admin's access token → a token for the member with `act`.
        let at = t["access_token"].as_str().unwrap();
        let form = |subject: &str| {
            vec![
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange".to_string(),
                ),
                ("subject_token", at.to_string()),
                (
                    "subject_token_type",
                    "urn:ietf:params:oauth:token-type:access_token".to_string(),
                ),
                ("requested_subject", subject.to_string()),
                ("scope", "openid org".to_string()),
            ]
        };
        let f = form(&member.user_id.to_string());
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (st, x, _) = token(&app, &s, &pairs).await;
        assert_eq!(st, 200, "{x}");
        assert_eq!(
            x["issued_token_type"],
            "urn:ietf:params:oauth:token-type:access_token"
        );
        let (_, xc) = verify_jwt(&app, x["access_token"].as_str().unwrap()).await;
        assert_eq!(xc["sub"], member.user_id.to_string());
        assert_eq!(xc["act"], json!({ "sub": admin.user_id.to_string() }));
        let ui: Value = app
            .client
            .get(app.url("/oauth2/userinfo"))
            .bearer_auth(x["access_token"].as_str().unwrap())
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(ui["sub"], member.user_id.to_string());
        assert_eq!(ui["role"], "member");
        let mut c = app.db.conn().await.unwrap();
        let logs = lintel::store::impersonation::list_active_for_admin(
            &mut c,
            admin.user_id,
            chrono::Utc::now(),
        )
        .await
        .unwrap();
        drop(c);
        assert_eq!(logs.len(), 1);
        // Impersonating oneself, or an admin-level member, is refused.
        let f = form(&admin.user_id.to_string());
        let pairs: Vec<(&str, &str)> = f.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let (st, e, _) = token(&app, &s, &pairs).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (400, Some("invalid_request")),
            "{e}"
        );
        app.finish().await;
    }

    async fn forced_password_change_then_code(app: TestApp) {
        let s = setup(&app, true).await;
        users::set_password(
            &app.state.identity,
            s.user_id,
            &Secret::new(PASSWORD.into()),
            true,
        )
        .await
        .unwrap();
        let mut b = Browser::new(&app);
        let page = b.get(&auth_path(&s.client_id, &[])).await;
        let p = submit_login(&mut b, &page, &s.email, PASSWORD).await;
        assert_eq!(p.status, 200, "{}", p.body);
        assert!(p.body.contains(r#"name="new_password""#));
        assert!(!b.cookies.contains_key("lintel_session"));
        let (csrf, auth, pending) = (
            hidden(&p.body, "csrf"),
            hidden(&p.body, "auth"),
            hidden(&p.body, "pending"),
        );
        let mismatch = b
            .post(
                "/login/password",
                &[
                    ("new_password", "a brand new secret"),
                    ("confirm_password", "other"),
                    ("csrf", &csrf),
                    ("auth", &auth),
                    ("pending", &pending),
                ],
            )
            .await;
        assert_eq!(mismatch.status, 400);
        let done = b
            .post(
                "/login/password",
                &[
                    ("new_password", "a brand new secret"),
                    ("confirm_password", "a brand new secret"),
                    ("csrf", &csrf),
                    ("auth", &auth),
                    ("pending", &pending),
                ],
            )
            .await;
        assert_eq!(done.status, 303, "{}", done.body);
        assert!(query_of(done.location.as_deref().unwrap()).contains_key("code"));
        let u = users::get(&app.state.identity, s.user_id).await.unwrap();
        assert!(!u.update_password_required);
        // A forged pending value is refused.
        let forged = b
            .post(
                "/login/password",
                &[
                    ("new_password", "x y z w v u"),
                    ("confirm_password", "x y z w v u"),
                    ("csrf", &csrf),
                    ("auth", &auth),
                    ("pending", "abc"),
                ],
            )
            .await;
        assert_eq!(forged.status, 400);
        app.finish().await;
    }

    async fn third_party_clients_ask_for_consent(app: TestApp) {
        let s = setup(&app, false).await;
        let mut b = Browser::new(&app);
        let page = b.get(&auth_path(&s.client_id, &[])).await;
        let c = submit_login(&mut b, &page, &s.email, PASSWORD).await;
        assert_eq!(c.status, 200, "{}", c.body);
        assert!(c.body.contains("Allow RP?"), "{}", c.body);
        let (csrf, auth) = (hidden(&c.body, "csrf"), hidden(&c.body, "auth"));
        let denied = b
            .post(
                "/consent",
                &[("decision", "deny"), ("csrf", &csrf), ("auth", &auth)],
            )
            .await;
        assert_eq!(
            query_of(denied.location.as_deref().unwrap())["error"],
            "access_denied"
        );
        let allowed = b
            .post(
                "/consent",
                &[("decision", "allow"), ("csrf", &csrf), ("auth", &auth)],
            )
            .await;
        assert_eq!(allowed.status, 303);
        assert!(query_of(allowed.location.as_deref().unwrap()).contains_key("code"));
        // prompt=none cannot show the consent page.
        let none = b.get(&auth_path(&s.client_id, &[("prompt", "none")])).await;
        assert_eq!(
            query_of(none.location.as_deref().unwrap())["error"],
            "consent_required"
        );
        app.finish().await;
    }

    async fn keys_rotate_cli_publishes_the_new_key_first(app: TestApp) {
        let dir = app.test_db.dir.path().to_path_buf();
        let keys = app.test_db.keys_dir().display().to_string();
        let env = [
            ("LINTEL_DATABASE_URL", app.test_db.url.as_str()),
            ("LINTEL_KEYS_DIR", keys.as_str()),
        ];
        let (code, out, err) = lintel(&dir, &["keys", "rotate"], &env, None);
        assert_eq!(code, 0, "{err}");
        let new: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(new["state"], "upcoming");
        let (code, out, _) = lintel(&dir, &["keys", "list"], &env, None);
        assert_eq!(code, 0);
        let list: Value = serde_json::from_str(&out).unwrap();
        let states: Vec<&str> = list["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, vec!["active", "upcoming"]);
        let jwks: Value = app
            .client
            .get(app.url("/oauth2/jwks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(kids.len(), 2);
        assert!(kids.contains(&new["kid"].as_str().unwrap()));
        // Still signed with the old key until the delay has passed.
        let s = setup(&app, true).await;
        let mut b = Browser::new(&app);
        let code = login_for_code(&mut b, &s, &[]).await;
        let (_, t) = exchange(&app, &s, &code).await;
        let (h, _) = verify_jwt(&app, t["id_token"].as_str().unwrap()).await;
        assert_ne!(h["kid"], new["kid"]);
        app.finish().await;
    }

    async fn rotation_signs_with_the_new_key_after_the_delay(db: TestDb) {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let clock = FixedClock::new(t0);
        let id = identity_with_config(
            &db,
            clock.clone(),
            &[("LINTEL_OIDC_KEY_ACTIVATION_DELAY_SECS", "3600")],
        )
        .await;
        let dir = db.keys_dir();
        lintel::oidc::keys::record_existing(&id, &dir)
            .await
            .unwrap();
        let ring = lintel::oidc::keys::Keyring::new(&dir);
        let old = ring.active(&id).await.unwrap().kid;
        let new = lintel::oidc::keys::rotate(&id, &dir, "ES256")
            .await
            .unwrap();
        ring.reload(&id).await.unwrap();
        assert_eq!(ring.active(&id).await.unwrap().kid, old);
        assert_eq!(
            ring.jwks(&id).await.unwrap()["keys"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        clock.advance(chrono::Duration::seconds(3600));
        ring.reload(&id).await.unwrap();
        assert_eq!(ring.active(&id).await.unwrap().kid, new.kid);
        // The old key stays published while its tokens live (ID tokens: 3600 s, + 5 min).
        clock.advance(chrono::Duration::seconds(3600 + 299));
        ring.reload(&id).await.unwrap();
        assert_eq!(
            ring.jwks(&id).await.unwrap()["keys"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        clock.advance(chrono::Duration::seconds(2));
        ring.reload(&id).await.unwrap();
        let jwks = ring.jwks(&id).await.unwrap();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        assert_eq!(jwks["keys"][0]["kid"], new.kid);
        // Audited.
        let mut c = id.db.conn().await.unwrap();
        let rows = lintel::store::audit::list(&mut c, &Default::default(), None, 50)
            .await
            .unwrap();
        assert!(rows.iter().any(|r| r.action == "signing_key.rotated"));
        drop(c);
        id.db.close().await;
        db.drop_database().await;
    }

    async fn orgs_requiring_mfa_step_up_sso_sessions(app: TestApp) {
        let s = setup(&app, true).await;
        let id = &app.state.identity;
        let org = orgs::create(id, "Strict", None).await.unwrap();
        memberships::add(id, org.org_id, s.user_id, "member")
            .await
            .unwrap();
        let (strict, _) = clients::create(
            id,
            NewClient {
                name: "Strict app".into(),
                org_id: Some(org.org_id),
                redirect_uris: vec![REDIRECT.into()],
                first_party: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut b = Browser::new(&app);
        login_for_code(&mut b, &s, &[]).await;
        // Without the org's MFA rule the SSO session is enough.
        let p = b.get(&auth_path(&strict.client_id, &[])).await;
        assert_eq!(p.status, 303, "{}", p.body);
        lintel::identity::mfa::set_org_mfa_required(id, org.org_id, true)
            .await
            .unwrap();
        // With it, a password-only session must sign in again (step-up).
        let p = b.get(&auth_path(&strict.client_id, &[])).await;
        assert_eq!(p.status, 200);
        assert!(p.body.contains(r#"name="password""#));
        let p = b
            .get(&auth_path(&strict.client_id, &[("prompt", "none")]))
            .await;
        assert_eq!(
            query_of(p.location.as_deref().unwrap())["error"],
            "login_required"
        );
        app.finish().await;
    }

    async fn id_tokens_use_the_clients_algorithm(app: TestApp) {
        let base = setup(&app, true).await;
        let id = &app.state.identity;
        let mk = |alg: &str| NewClient {
            name: format!("{alg} app"),
            redirect_uris: vec![REDIRECT.into()],
            first_party: true,
            id_token_signed_response_alg: Some(alg.into()),
            ..Default::default()
        };
        // No EdDSA key yet: refused.
        let e = clients::create(id, mk("EdDSA")).await.unwrap_err();
        assert!(
            matches!(&e, lintel::identity::IdentityError::Invalid { field, .. } if *field == "id_token_signed_response_alg"),
            "{e:?}"
        );
        for alg in ["EdDSA", "RS256"] {
            let k = lintel::oidc::keys::rotate(id, &app.test_db.keys_dir(), alg)
                .await
                .unwrap();
            assert_eq!(k.alg, alg);
        }
        for alg in ["EdDSA", "RS256"] {
            let (c, secret) = clients::create(id, mk(alg)).await.unwrap();
            let s = Setup {
                client_id: c.client_id,
                secret: secret.unwrap().expose().clone(),
                user_id: base.user_id,
                email: base.email.clone(),
            };
            let mut b = Browser::new(&app);
            let code = login_for_code(&mut b, &s, &[]).await;
            let (st, t) = exchange(&app, &s, &code).await;
            assert_eq!(st, 200, "{t}");
            let (h, c) = verify_jwt(&app, t["id_token"].as_str().unwrap()).await;
            assert_eq!(h["alg"], alg);
            assert_eq!(c["aud"], s.client_id);
            let (h, _) = verify_jwt(&app, t["access_token"].as_str().unwrap()).await;
            assert_eq!(h["alg"], "ES256", "access tokens stay ES256");
            // The ID token works as id_token_hint (verified with its own algorithm).
            let p = b
                .get(&auth_path(
                    &s.client_id,
                    &[
                        ("prompt", "none"),
                        ("id_token_hint", t["id_token"].as_str().unwrap()),
                    ],
                ))
                .await;
            assert!(query_of(p.location.as_deref().unwrap()).contains_key("code"));
        }
        app.finish().await;
    }

    async fn the_org_scope_lets_members_of_several_orgs_choose(app: TestApp) {
        let id = &app.state.identity;
        let base = setup(&app, true).await;
        let (c, secret) = clients::create(
            id,
            NewClient {
                name: "Multi".into(),
                redirect_uris: vec![REDIRECT.into()],
                scopes: Some(vec!["openid".into(), "org".into()]),
                first_party: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let s = Setup {
            client_id: c.client_id,
            secret: secret.unwrap().expose().clone(),
            ..base
        };
        let a = orgs::create(id, "Alpha", None).await.unwrap();
        memberships::add(id, a.org_id, s.user_id, "member")
            .await
            .unwrap();
        // One org: no question.
        let mut b = Browser::new(&app);
        let code = login_for_code(&mut b, &s, &[("scope", "openid org")]).await;
        let (_, t) = exchange(&app, &s, &code).await;
        let (_, claims) = verify_jwt(&app, t["id_token"].as_str().unwrap()).await;
        assert_eq!(claims["org_id"], a.org_id.to_string());
        // Two orgs: the picker, then the chosen org's claims.
        let z = orgs::create(id, "Zulu", None).await.unwrap();
        memberships::add(id, z.org_id, s.user_id, "admin")
            .await
            .unwrap();
        let p = b
            .get(&auth_path(&s.client_id, &[("scope", "openid org")]))
            .await;
        assert_eq!(p.status, 200, "{}", p.body);
        assert!(p.body.contains("Alpha") && p.body.contains("Zulu"));
        let none = b
            .get(&auth_path(
                &s.client_id,
                &[("scope", "openid org"), ("prompt", "none")],
            ))
            .await;
        assert_eq!(
            query_of(none.location.as_deref().unwrap())["error"],
            "interaction_required"
        );
        let (csrf, auth) = (hidden(&p.body, "csrf"), hidden(&p.body, "auth"));
        let zid = z.org_id.to_string();
        let done = b
            .post(
                "/select-org",
                &[("org", zid.as_str()), ("csrf", &csrf), ("auth", &auth)],
            )
            .await;
        assert_eq!(done.status, 303, "{}", done.body);
        let code = query_of(done.location.as_deref().unwrap())["code"].clone();
        let (_, t) = exchange(&app, &s, &code).await;
        let (_, claims) = verify_jwt(&app, t["id_token"].as_str().unwrap()).await;
        assert_eq!(claims["org_id"], zid);
        assert_eq!(claims["role"], "admin");
        // An org the user is not in cannot be chosen.
        let other = orgs::create(id, "Other", None)
            .await
            .unwrap()
            .org_id
            .to_string();
        let p = b
            .post(
                "/select-org",
                &[("org", other.as_str()), ("csrf", &csrf), ("auth", &auth)],
            )
            .await;
        assert_eq!(p.status, 200, "the picker again");
        app.finish().await;
    }

    async fn private_key_jwt_clients_sign_single_use_assertions(app: TestApp) {
        use josekit::jws::{ES256, JwsHeader};
        let pair = ES256.generate_key_pair().unwrap();
        let mut public = pair.to_jwk_public_key();
        public.set_key_id("rp-key-1");
        let jwks = json!({ "keys": [Value::Object(public.as_ref().clone())] });
        let (c, secret) = clients::create(
            &app.state.identity,
            NewClient {
                name: "pkjwt".into(),
                grant_types: Some(vec!["client_credentials".into()]),
                scopes: Some(vec!["org".into()]),
                token_endpoint_auth_method: Some("private_key_jwt".into()),
                jwks: Some(jwks),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(secret.is_none(), "no secret for private_key_jwt");
        let signer = ES256.signer_from_jwk(&pair.to_jwk_private_key()).unwrap();
        let token_url = format!("{}/oauth2/token", lintel_issuer());
        let assertion = |aud: &str, jti: &str, kid: &str, signer: &dyn josekit::jws::JwsSigner| {
            let mut h = JwsHeader::new();
            h.set_key_id(kid);
            let mut p = josekit::jwt::JwtPayload::new();
            p.set_issuer(&c.client_id);
            p.set_subject(&c.client_id);
            p.set_audience(vec![aud]);
            p.set_jwt_id(jti);
            p.set_expires_at(&(std::time::SystemTime::now() + std::time::Duration::from_secs(60)));
            josekit::jwt::encode_with_signer(&p, &h, signer).unwrap()
        };
        let call = |a: String| {
            let app = &app;
            async move {
                let r = app
                    .client
                    .post(app.url("/oauth2/token"))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        (
                            "client_assertion_type",
                            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                        ),
                        ("client_assertion", a.as_str()),
                    ])
                    .send()
                    .await
                    .unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        let good = assertion(&token_url, "jti-1", "rp-key-1", &signer);
        let (st, t) = call(good.clone()).await;
        assert_eq!(st, 200, "{t}");
        let (_, claims) = verify_jwt(&app, t["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["sub"], c.client_id);
        // Replayed, wrong audience, or signed by another key: invalid_client.
        let (st, e) = call(good).await;
        assert_eq!(
            (st, e["error"].as_str()),
            (401, Some("invalid_client")),
            "replay"
        );
        let (st, _) = call(assertion(
            "https://elsewhere.example/token",
            "jti-2",
            "rp-key-1",
            &signer,
        ))
        .await;
        assert_eq!(st, 401, "audience");
        let other = ES256.generate_key_pair().unwrap();
        let other = ES256.signer_from_jwk(&other.to_jwk_private_key()).unwrap();
        let (st, _) = call(assertion(&token_url, "jti-3", "rp-key-1", &other)).await;
        assert_eq!(st, 401, "foreign key");
        let (st, _) = call(assertion(&lintel_issuer(), "jti-4", "rp-key-1", &signer)).await;
        assert_eq!(st, 200, "the issuer is an accepted audience too");
        app.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn logout_sends_back_channel_logout_tokens() {
        use std::sync::{Arc, Mutex};
        let received: Arc<Mutex<Vec<String>>> = Arc::default();
        let sink = received.clone();
        let rp = axum::Router::new().route(
            "/rp/backchannel",
            axum::routing::post(move |body: String| {
                let sink = sink.clone();
                async move {
                    sink.lock().unwrap().push(body);
                    "ok"
                }
            }),
        );
        let app = spawn_app_with(
            crate::helpers::Backend::Sqlite,
            "oidc::backchannel",
            Spawn {
                env: &[],
                extra: Some(rp),
            },
        )
        .await
        .unwrap();
        let s = setup(&app, true).await;
        // Not a URL: refused.
        let bad = clients::update(
            &app.state.identity,
            &s.client_id,
            clients::ClientPatch {
                backchannel_logout_uri: Some("com.example.app:/logout".into()),
                ..Default::default()
            },
        )
        .await;
        assert!(bad.is_err());
        clients::update(
            &app.state.identity,
            &s.client_id,
            clients::ClientPatch {
                backchannel_logout_uri: Some(app.url("/rp/backchannel")),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let mut b = Browser::new(&app);
        let code = login_for_code(&mut b, &s, &[]).await;
        let (_, t) = exchange(&app, &s, &code).await;
        let (_, idt) = verify_jwt(&app, t["id_token"].as_str().unwrap()).await;
        let out = b
            .get(&format!(
                "/oauth2/logout?id_token_hint={}",
                t["id_token"].as_str().unwrap()
            ))
            .await;
        assert_eq!(out.status, 200, "signed-out page");
        let mut body = None;
        for _ in 0..100 {
            if let Some(b) = received.lock().unwrap().first().cloned() {
                body = Some(b);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let body = body.expect("a logout token was POSTed");
        let form: HashMap<String, String> = url::form_urlencoded::parse(body.as_bytes())
            .into_owned()
            .collect();
        let (h, c) = verify_jwt(&app, &form["logout_token"]).await;
        assert_eq!(h["typ"], "logout+jwt");
        assert_eq!(c["aud"], s.client_id);
        assert_eq!(c["sid"], idt["sid"]);
        assert_eq!(c["sub"], s.user_id.to_string());
        assert!(c["events"]["http://schemas.openid.net/event/backchannel-logout"].is_object());
        assert!(c.get("nonce").is_none());
        app.finish().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_login_form_is_rate_limited_per_ip() {
        let app = spawn_app_with(
            crate::helpers::Backend::Sqlite,
            "oidc::login_rate_limit",
            Spawn {
                env: &[("LINTEL_RATE_LIMITS_LOGIN", "2/60")],
                extra: None,
            },
        )
        .await
        .unwrap();
        let s = setup(&app, true).await;
        let mut b = Browser::new(&app);
        let page = b.get(&auth_path(&s.client_id, &[])).await;
        for _ in 0..2 {
            assert_eq!(
                submit_login(&mut b, &page, &s.email, "wrong password!")
                    .await
                    .status,
                401
            );
        }
        let limited = submit_login(&mut b, &page, &s.email, PASSWORD).await;
        assert_eq!(limited.status, 429);
        assert!(!b.cookies.contains_key("lintel_session"));
        app.finish().await;
    }
}
