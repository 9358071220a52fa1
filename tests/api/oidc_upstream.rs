//! The upstream OIDC client (`lintel::federation::oidc_upstream`) against a real Lintel as the
//! corporate IdP: discovery, the code flow with PKCE through the hosted login, ID token
//! validation (nonce, issuer, expiry via the passed clock, key rotation), token endpoint
//! errors (code replay, wrong secret), userinfo.
use crate::helpers::{Backend, Spawn, TestApp, free_port, spawn_app_with};
use crate::oidc::{Browser, PASSWORD, REDIRECT, Setup, query_of, setup, submit_login};
use chrono::{Duration, Utc};
use lintel::config::Secret;
use lintel::federation::oidc_upstream::{
    JWKS_REFETCH_INTERVAL, Started, TokenEndpointAuth, Upstream, UpstreamConfig, UpstreamError,
    check_response_iss,
};
use lintel::identity::users::{self, NewUser};
use lintel::oidc::clients::{self, NewClient};
use serde_json::Value;
use std::path::Path;

/// A Lintel acting as an organization's IdP, its issuer being the address it listens on.
struct Idp {
    app: TestApp,
    issuer: String,
    s: Setup,
}

/// A free loopback port (bound and released; the IdP binds it again at once).
async fn idp_with(test: &str, keys_dir: Option<&Path>) -> Idp {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let issuer = format!("http://127.0.0.1:{port}");
    let keys = keys_dir.map(|d| d.display().to_string());
    let mut env = vec![
        ("LINTEL_BIND", bind.as_str()),
        ("LINTEL_ISSUER", issuer.as_str()),
        ("LINTEL_OIDC_KEY_ACTIVATION_DELAY_SECS", "0"),
    ];
    if let Some(k) = &keys {
        env.push(("LINTEL_KEYS_DIR", k.as_str()));
    }
    let app = spawn_app_with(
        Backend::Sqlite,
        test,
        Spawn {
            env: &env,
            extra: None,
        },
    )
    .await
    .expect("idp app");
    assert_eq!(app.url(""), issuer);
    let s = setup(&app, true).await;
    Idp { app, issuer, s }
}

async fn idp(test: &str) -> Idp {
    idp_with(test, None).await
}

impl Idp {
    fn cfg(&self) -> UpstreamConfig {
        UpstreamConfig::new(&self.issuer, &self.s.client_id)
    }

    /// Follows `started.url` in `b` (logging in when the IdP asks) and returns the code.
    async fn code(&self, b: &mut Browser, started: &Started) -> String {
        let path = started
            .url
            .strip_prefix(&self.issuer)
            .expect("authorize URL on the IdP");
        let page = b.get(path).await;
        let done = if page.status == 303 {
            page
        } else {
            submit_login(b, &page, &self.s.email, PASSWORD).await
        };
        assert_eq!(done.status, 303, "{}", done.body);
        let location = done.location.unwrap();
        assert!(location.starts_with(REDIRECT), "{location}");
        let q = query_of(&location);
        assert_eq!(q["state"], started.state);
        check_response_iss(&self.cfg(), q.get("iss").map(String::as_str)).unwrap();
        q["code"].clone()
    }

    /// Starts a login and brings back a code for it.
    async fn login(
        &self,
        up: &Upstream,
        b: &mut Browser,
        cfg: &UpstreamConfig,
    ) -> (Started, String) {
        let started = up.start(cfg, REDIRECT, None, Utc::now()).await.unwrap();
        let code = self.code(b, &started).await;
        (started, code)
    }

    async fn finish(
        &self,
        up: &Upstream,
        cfg: &UpstreamConfig,
        started: &Started,
        code: &str,
        now: chrono::DateTime<Utc>,
    ) -> Result<lintel::federation::oidc_upstream::UpstreamIdentity, UpstreamError> {
        up.finish(
            cfg,
            Some(&self.s.secret),
            REDIRECT,
            code,
            &started.nonce,
            &started.pkce_verifier,
            now,
        )
        .await
    }

    /// Rotates the IdP's ES256 key (active at once) and makes the IdP sign with it now.
    async fn rotate_keys(&self) -> String {
        let id = &self.app.state.identity;
        let row = lintel::oidc::keys::rotate(id, &self.app.state.config.keys_dir, "ES256")
            .await
            .unwrap();
        self.app.state.oidc.keyring.reload(id).await.unwrap();
        row.kid
    }
}

fn upstream() -> Upstream {
    Upstream::new(std::time::Duration::from_secs(10)).unwrap()
}

fn kid_of(jwt: &str) -> String {
    use base64::Engine;
    let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(jwt.split('.').next().unwrap())
        .unwrap();
    serde_json::from_slice::<Value>(&h).unwrap()["kid"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn code_flow_with_pkce_yields_the_upstream_identity() {
    let idp = idp("oidc_upstream::code_flow").await;
    let up = upstream();
    let cfg = idp.cfg();
    let mut b = Browser::new(&idp.app);

    let started = up
        .start(&cfg, REDIRECT, Some("ada@example.com"), Utc::now())
        .await
        .unwrap();
    let u = url::Url::parse(&started.url).unwrap();
    assert_eq!(
        u.as_str().split('?').next().unwrap(),
        format!("{}/oauth2/authorize", idp.issuer)
    );
    let q: std::collections::HashMap<_, _> = u.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], idp.s.client_id);
    assert_eq!(q["redirect_uri"], REDIRECT);
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["state"], started.state);
    assert_eq!(q["nonce"], started.nonce);
    assert_eq!(q["login_hint"], "ada@example.com");
    assert!(!started.url.contains(&started.pkce_verifier));
    // RFC 7636 §4.2: the challenge is the verifier's SHA-256.
    {
        use base64::Engine;
        use sha2::Digest;
        let ch = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(sha2::Sha256::digest(started.pkce_verifier.as_bytes()));
        assert_eq!(q["code_challenge"], ch);
    }
    // ≥ 128 bits of randomness each, fresh per start.
    assert!(started.state.len() >= 22 && started.nonce.len() >= 22);
    let again = up.start(&cfg, REDIRECT, None, Utc::now()).await.unwrap();
    assert_ne!(again.state, started.state);
    assert_ne!(again.nonce, started.nonce);
    assert_ne!(again.pkce_verifier, started.pkce_verifier);
    assert!(!again.url.contains("login_hint"));

    let code = idp.code(&mut b, &started).await;
    // The wrong PKCE verifier is refused by the IdP.
    let wrong = up
        .finish(
            &cfg,
            Some(&idp.s.secret),
            REDIRECT,
            &code,
            &started.nonce,
            &again.pkce_verifier,
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&wrong, UpstreamError::TokenEndpoint { error, .. } if error == "invalid_grant"),
        "{wrong:?}"
    );

    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let who = idp
        .finish(&up, &cfg, &started, &code, Utc::now())
        .await
        .unwrap();
    assert_eq!(who.issuer, idp.issuer);
    assert_eq!(who.subject, idp.s.user_id.to_string());
    assert_eq!(who.email(), Some("ada@example.com"));
    assert_eq!(who.claims["given_name"], "Ada");
    assert_eq!(who.claims["aud"], idp.s.client_id);
    assert_eq!(who.claims["nonce"], started.nonce.as_str());
    idp.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_post_and_userinfo() {
    let idp = idp("oidc_upstream::userinfo").await;
    let (client, secret) = clients::create(
        &idp.app.state.identity,
        NewClient {
            name: "Lintel RP".into(),
            redirect_uris: vec![REDIRECT.into()],
            token_endpoint_auth_method: Some("client_secret_post".into()),
            first_party: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let secret = secret.unwrap().expose().clone();
    let mut cfg = UpstreamConfig::new(&idp.issuer, &client.client_id);
    cfg.token_endpoint_auth = TokenEndpointAuth::ClientSecretPost;
    cfg.use_userinfo = true;
    let up = upstream();
    let mut b = Browser::new(&idp.app);
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let who = up
        .finish(
            &cfg,
            Some(&secret),
            REDIRECT,
            &code,
            &started.nonce,
            &started.pkce_verifier,
            Utc::now(),
        )
        .await
        .unwrap();
    assert_eq!(who.subject, idp.s.user_id.to_string());
    assert_eq!(who.email(), Some("ada@example.com"));
    assert_eq!(who.claims["family_name"], "Lovelace");
    assert_eq!(who.claims["azp"], client.client_id);

    // Basic authentication for a client registered for client_secret_post.
    cfg.token_endpoint_auth = TokenEndpointAuth::ClientSecretBasic;
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let r = up
        .finish(
            &cfg,
            Some(&secret),
            REDIRECT,
            &code,
            &started.nonce,
            &started.pkce_verifier,
            Utc::now(),
        )
        .await;
    assert!(
        matches!(&r, Err(UpstreamError::TokenEndpoint { error, .. }) if error == "invalid_client"),
        "{r:?}"
    );
    idp.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_nonce_is_refused() {
    let idp = idp("oidc_upstream::nonce").await;
    let up = upstream();
    let cfg = idp.cfg();
    let mut b = Browser::new(&idp.app);
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    // The nonce of another pending login of the same browser.
    let other = up.start(&cfg, REDIRECT, None, Utc::now()).await.unwrap();
    let e = up
        .finish(
            &cfg,
            Some(&idp.s.secret),
            REDIRECT,
            &code,
            &other.nonce,
            &started.pkce_verifier,
            Utc::now(),
        )
        .await
        .unwrap_err();
    assert_eq!(e.category(), "id_token", "{e:?}");
    assert!(e.to_string().contains("nonce"), "{e}");
    idp.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_is_redeemed_once() {
    let idp = idp("oidc_upstream::replay").await;
    let up = upstream();
    let cfg = idp.cfg();
    let mut b = Browser::new(&idp.app);
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    idp.finish(&up, &cfg, &started, &code, Utc::now())
        .await
        .unwrap();
    let e = idp
        .finish(&up, &cfg, &started, &code, Utc::now())
        .await
        .unwrap_err();
    assert!(
        matches!(&e, UpstreamError::TokenEndpoint { error, .. } if error == "invalid_grant"),
        "{e:?}"
    );
    idp.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_missing_client_secret_is_refused() {
    let idp = idp("oidc_upstream::secret").await;
    let up = upstream();
    let cfg = idp.cfg();
    let mut b = Browser::new(&idp.app);
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let finish = |secret: Option<&'static str>| {
        let (up, cfg, started, code) = (&up, &cfg, &started, &code);
        async move {
            up.finish(
                cfg,
                secret,
                REDIRECT,
                code,
                &started.nonce,
                &started.pkce_verifier,
                Utc::now(),
            )
            .await
        }
    };
    let e = finish(Some("not-the-secret")).await.unwrap_err();
    assert!(
        matches!(&e, UpstreamError::TokenEndpoint { error, .. } if error == "invalid_client"),
        "{e:?}"
    );
    assert!(!e.to_string().contains("not-the-secret"));
    let e = finish(None).await.unwrap_err();
    assert_eq!(e.category(), "config", "{e:?}");
    // The code was not spent by the refused attempts.
    idp.finish(&up, &cfg, &started, &code, Utc::now())
        .await
        .unwrap();
    idp.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_and_issue_time_follow_the_passed_clock() {
    let idp = idp("oidc_upstream::clock").await;
    let ttl = Duration::from_std(idp.app.state.config.oidc.id_token_ttl).unwrap();
    let up = upstream();
    let cfg = idp.cfg();
    let mut b = Browser::new(&idp.app);

    // Our clock past the token's exp (beyond the skew).
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let late = Utc::now() + ttl + Duration::minutes(5);
    let e = idp
        .finish(&up, &cfg, &started, &code, late)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "id_token", "{e:?}");
    assert!(e.to_string().contains("expired"), "{e}");

    // Our clock well behind the IdP's: the token is issued in the future.
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let early = Utc::now() - Duration::minutes(10);
    let e = idp
        .finish(&up, &cfg, &started, &code, early)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "id_token", "{e:?}");
    assert!(e.to_string().contains("future"), "{e}");

    // Within the skew both ways: accepted.
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    idp.finish(
        &up,
        &cfg,
        &started,
        &code,
        Utc::now() - Duration::seconds(30),
    )
    .await
    .unwrap();
    idp.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_documents_of_another_issuer_are_refused() {
    let a = idp("oidc_upstream::issuer_a").await;
    // B signs with A's keys (as the tenants of a multi-tenant IdP do): only `iss` tells
    // their tokens apart.
    let keys = a.app.state.config.keys_dir.clone();
    let b_idp = idp_with("oidc_upstream::issuer_b", Some(&keys)).await;
    let up = upstream();
    let cfg_b = b_idp.cfg();
    let mut browser = Browser::new(&b_idp.app);
    let (started, code) = b_idp.login(&up, &mut browser, &cfg_b).await;
    let (status, body, _) = crate::oidc::token(
        &b_idp.app,
        &b_idp.s,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &started.pkce_verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let id_token = body["id_token"].as_str().unwrap();
    let now = Utc::now();
    // Valid for B…
    let claims = up
        .verify_id_token(&cfg_b, id_token, &started.nonce, now)
        .await
        .unwrap();
    assert_eq!(claims["iss"], b_idp.issuer);
    // …and refused for A, although signed by a key A publishes and addressed to the client.
    let cfg_a = UpstreamConfig::new(&a.issuer, &b_idp.s.client_id);
    let a_jwks: Value = reqwest::get(a.app.url("/oauth2/jwks"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kid = kid_of(id_token);
    assert!(
        a_jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["kid"] == kid.as_str())
    );
    let e = up
        .verify_id_token(&cfg_a, id_token, &started.nonce, now)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "id_token", "{e:?}");
    assert!(e.to_string().contains("issuer"), "{e}");

    // A configured issuer that is not the document's (Discovery §4.3).
    let mut cfg = a.cfg();
    cfg.issuer = format!("{}/", a.issuer);
    let e = up.start(&cfg, REDIRECT, None, now).await.unwrap_err();
    assert_eq!(e.category(), "discovery", "{e:?}");
    // No OpenID Provider there at all.
    cfg.issuer = format!("{}/nothing", a.issuer);
    let e = up.start(&cfg, REDIRECT, None, now).await.unwrap_err();
    assert_eq!(e.category(), "discovery", "{e:?}");
    cfg.issuer = format!("http://127.0.0.1:{}", free_port());
    let e = up.start(&cfg, REDIRECT, None, now).await.unwrap_err();
    assert_eq!(e.category(), "http", "{e:?}");
    // An authorization response naming another issuer (RFC 9207).
    assert!(check_response_iss(&a.cfg(), Some(&b_idp.issuer)).is_err());
    b_idp.app.finish().await;
    a.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_kid_refetches_the_jwks_at_most_once_per_interval() {
    let idp = idp("oidc_upstream::rotation").await;
    let up = upstream();
    let cfg = idp.cfg();
    let mut b = Browser::new(&idp.app);
    let t0 = Utc::now();
    // Discovery and the JWK Set are cached now.
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let first = idp.finish(&up, &cfg, &started, &code, t0).await.unwrap();

    // The IdP rotates: its next token carries a kid our cached JWK Set lacks.
    let kid2 = idp.rotate_keys().await;
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let who = idp
        .finish(&up, &cfg, &started, &code, t0 + Duration::seconds(1))
        .await
        .unwrap();
    assert_eq!(who.subject, first.subject);

    // Rotated again within the interval: no second fetch, so the token is refused…
    let kid3 = idp.rotate_keys().await;
    assert_ne!(kid2, kid3);
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let e = idp
        .finish(&up, &cfg, &started, &code, t0 + Duration::seconds(2))
        .await
        .unwrap_err();
    assert_eq!(e.category(), "id_token", "{e:?}");
    assert!(e.to_string().contains("key"), "{e}");

    // …and accepted once the interval has passed.
    let (started, code) = idp.login(&up, &mut b, &cfg).await;
    let later = t0 + JWKS_REFETCH_INTERVAL + Duration::seconds(2);
    idp.finish(&up, &cfg, &started, &code, later).await.unwrap();
    idp.app.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_users_login_is_that_users_identity() {
    // Two users of one IdP: each login yields its own subject (no cross-talk in the cache).
    let idp = idp("oidc_upstream::two_users").await;
    let (grace, _) = users::create(
        &idp.app.state.identity,
        NewUser {
            email: "grace@example.com".into(),
            password: Some(Secret::new(PASSWORD.into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let up = upstream();
    let cfg = idp.cfg();
    let mut b1 = Browser::new(&idp.app);
    let (s1, c1) = idp.login(&up, &mut b1, &cfg).await;
    let mut b2 = Browser::new(&idp.app);
    let s2 = up.start(&cfg, REDIRECT, None, Utc::now()).await.unwrap();
    let path = s2.url.strip_prefix(&idp.issuer).unwrap();
    let page = b2.get(path).await;
    let done = submit_login(&mut b2, &page, "grace@example.com", PASSWORD).await;
    let c2 = query_of(done.location.as_deref().unwrap())["code"].clone();
    let who2 = idp.finish(&up, &cfg, &s2, &c2, Utc::now()).await.unwrap();
    let who1 = idp.finish(&up, &cfg, &s1, &c1, Utc::now()).await.unwrap();
    assert_eq!(who1.subject, idp.s.user_id.to_string());
    assert_eq!(who2.subject, grace.user_id.to_string());
    assert_eq!(who2.email(), Some("grace@example.com"));
    // Swapping the pending requests (nonce and verifier of the other login) fails.
    let (_, c3) = idp.login(&up, &mut b1, &cfg).await;
    let e = idp
        .finish(&up, &cfg, &s2, &c3, Utc::now())
        .await
        .unwrap_err();
    assert_eq!(e.category(), "token_endpoint", "{e:?}");
    idp.app.finish().await;
}
