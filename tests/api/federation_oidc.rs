//! Enterprise SSO through an upstream OpenID Connect provider, end to end on both backends:
//! a second Lintel is the organization's IdP; Lintel starts the login at
//! `/sso/oidc/{id}/login`, the user signs in upstream, and the callback provisions the user
//! (JIT) with the upstream claims. The callback works once, only in the browser that started
//! it; an upstream error ends on an error page with a failed login attempt.
use crate::helpers::{Backend, Spawn, TestApp, free_port, spawn_app_with};
use crate::oidc::{Browser, PASSWORD, query_of, submit_login};
use crate::on_both_backends;
use lintel::config::Secret;
use lintel::federation::providers::{self, NewProvider};
use lintel::identity::orgs;
use lintel::identity::users::{self, NewUser};
use lintel::oidc::clients::{self, NewClient};
use serde_json::json;

on_both_backends!(upstream_oidc_login_provisions_the_user);

async fn upstream_idp() -> (TestApp, String) {
    let port = free_port();
    let bind = format!("127.0.0.1:{port}");
    let issuer = format!("http://127.0.0.1:{port}");
    let app = spawn_app_with(
        Backend::Sqlite,
        "federation_oidc_upstream_idp",
        Spawn {
            env: &[("LINTEL_BIND", &bind), ("LINTEL_ISSUER", &issuer)],
            extra: None,
        },
    )
    .await
    .expect("upstream idp");
    (app, issuer)
}

/// Follows a redirect to `base` in `b` (whose base is `base`).
fn path_on(location: &str, base: &str) -> String {
    location
        .strip_prefix(base)
        .unwrap_or_else(|| panic!("{location} is not on {base}"))
        .to_string()
}

async fn upstream_oidc_login_provisions_the_user(app: TestApp) {
    let (up, up_issuer) = upstream_idp().await;
    let id = &app.state.identity;
    let org = orgs::create(id, "Globex", Some("globex")).await.unwrap();
    orgs::add_domain(id, org.org_id, "globex.test")
        .await
        .unwrap();
    orgs::set_domain_verified(id, org.org_id, "globex.test", true)
        .await
        .unwrap();
    // The provider first (its id is in the redirect URI), then the upstream client.
    let p = providers::create(
        id,
        org.org_id,
        NewProvider {
            kind: "oidc".into(),
            name: "Globex IdP".into(),
            config: json!({"issuer": up_issuer, "client_id": "pending"}),
            client_secret: Some(Secret::new("pending".into())),
            enabled: true,
        },
    )
    .await
    .unwrap();
    let base = crate::oidc::lintel_issuer();
    let callback = providers::oidc_redirect_uri(&base, p.provider_id);
    let (client, secret) = clients::create(
        &up.state.identity,
        NewClient {
            name: "Lintel downstream".into(),
            redirect_uris: vec![callback.clone()],
            first_party: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    providers::update(
        id,
        org.org_id,
        p.provider_id,
        providers::ProviderPatch {
            config: Some(json!({"issuer": up_issuer, "client_id": client.client_id})),
            client_secret: Some(Some(Secret::new(secret.unwrap().expose().clone()))),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (carol, _) = users::create(
        &up.state.identity,
        NewUser {
            email: "carol@globex.test".into(),
            password: Some(Secret::new(PASSWORD.into())),
            first_name: Some("Carol".into()),
            last_name: Some("Danvers".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let mut down = Browser::new(&app);
    let mut upb = Browser::new(&up);
    let start = down
        .get(&format!("/sso/oidc/{}/login", p.provider_id))
        .await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = start.location.unwrap();
    let q = query_of(&authorize);
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["redirect_uri"], callback);
    let page = upb.get(&path_on(&authorize, &up_issuer)).await;
    let back = submit_login(&mut upb, &page, "carol@globex.test", PASSWORD).await;
    assert_eq!(back.status, 303, "{}", back.body);
    let cb = path_on(back.location.as_deref().unwrap(), &base);

    // Another browser cannot use the callback.
    let mut thief = Browser::new(&app);
    let stolen = thief.get(&cb).await;
    assert_eq!(stolen.status, 400, "{}", stolen.body);

    let done = down.get(&cb).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/account"));
    assert_eq!(down.get("/account").await.status, 200);
    let user = users::find_by_email(id, "carol@globex.test").await.unwrap();
    assert_eq!(user.first_name.as_deref(), Some("Carol"));
    assert_eq!(user.last_name.as_deref(), Some("Danvers"));
    let mut c = id.db.conn().await.unwrap();
    let link =
        lintel::store::federation::find_link(&mut c, p.provider_id, &carol.user_id.to_string())
            .await
            .unwrap()
            .expect("linked by the upstream sub");
    drop(c);
    assert_eq!(link.user_id, user.user_id);
    let m = lintel::identity::memberships::get(id, org.org_id, user.user_id)
        .await
        .unwrap();
    assert_eq!(m.user_role, "member");
    let sessions = lintel::identity::sessions::list_active(id, user.user_id)
        .await
        .unwrap();
    assert!(
        sessions
            .iter()
            .any(|s| s.auth_methods.0 == vec!["fed".to_string(), "oidc".to_string()]),
        "{sessions:?}"
    );

    // The callback works once.
    let again = down.get(&cb).await;
    assert_eq!(again.status, 400, "{}", again.body);

    // The upstream refuses (the user cancelled): an error page, a failed attempt recorded.
    let start = down
        .get(&format!("/sso/oidc/{}/login", p.provider_id))
        .await;
    let state = query_of(start.location.as_deref().unwrap())["state"].clone();
    let refused = down
        .get(&format!(
            "/sso/oidc/{}/callback?error=access_denied&state={state}",
            p.provider_id
        ))
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert!(refused.body.contains("refused"), "{}", refused.body);
    let failed = crate::saml::count(
        &app,
        "SELECT COUNT(*) FROM login_attempts WHERE org_id = $1 AND NOT success",
        org.org_id,
    )
    .await;
    // The stolen callback, the replay, and the refusal.
    assert_eq!(failed, 3);
    up.finish().await;
    app.finish().await;
}
