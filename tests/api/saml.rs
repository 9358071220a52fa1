//! Enterprise SSO over SAML 2.0 through real HTTP on both backends, with a test IdP that
//! signs with its own key (xml-sec): SP-initiated login from the hosted login page
//! (home-realm discovery) to a relying party's code, JIT provisioning with group → role
//! mapping, later logins updating names, replay and wrong-key responses refused with an
//! error page and a failed login attempt, the completion bound to the browser, IdP-initiated
//! login only when allowed, account linking only when trusted, and orgs that require SSO.
use crate::federation_admin::testdata;
use crate::helpers::TestApp;
use crate::oidc::{Browser, Page, REDIRECT, Setup, auth_path, exchange, query_of, submit_login};
use crate::on_both_backends;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use lintel::config::Secret;
use lintel::federation::providers::{self, NewProvider, ProviderPatch};
use lintel::identity::orgs;
use lintel::identity::users::{self, NewUser};
use lintel::oidc::clients::{self, NewClient};
use lintel::store::federation::IdentityProvider;
use serde_json::{Value, json};
use std::io::Read;
use uuid::Uuid;
use xml_sec::xmldsig::{
    RsaSigningKey, SignContext, SignatureTemplateSelection, X509CertificateKeyInfoWriter,
};

on_both_backends!(
    sp_initiated_login_from_the_hosted_page_reaches_the_relying_party,
    bad_responses_are_refused_and_recorded,
    idp_initiated_login_only_when_allowed,
    existing_accounts_are_linked_only_when_trusted,
    orgs_that_require_sso_refuse_password_sessions,
    mfa_users_pass_the_totp_step_after_federation,
    one_orgs_sso_does_not_satisfy_anothers,
);

const IDP: &str = "https://idp.acme.test/entity";
const SSO: &str = "https://idp.acme.test/sso";
const EMAIL_FORMAT: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";
const TRANSIENT: &str = "urn:oasis:names:tc:SAML:2.0:nameid-format:transient";

/// What one test response asserts.
#[derive(Clone)]
struct Idp {
    key: String,
    cert: String,
    name_id: String,
    name_id_format: String,
    given: String,
    groups: Vec<String>,
    audience: Option<String>,
}

impl Idp {
    fn new() -> Idp {
        Idp {
            key: testdata("idp.key.pem"),
            cert: testdata("idp.crt.pem"),
            name_id: "alice@acme.test".into(),
            name_id_format: EMAIL_FORMAT.into(),
            given: "Alice".into(),
            groups: vec!["admins".into(), "staff".into()],
            audience: None,
        }
    }

    /// A signed Response (SAML core §2, signature on the Response) to `in_response_to`.
    fn response(&self, p: &IdentityProvider, in_response_to: Option<&str>) -> String {
        let base = lintel_base();
        let acs = providers::acs_url(&base, p.provider_id);
        let audience = self
            .audience
            .clone()
            .unwrap_or_else(|| providers::metadata_url(&base, p.provider_id));
        let now = chrono::Utc::now();
        let t = |s: i64| {
            (now + chrono::Duration::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        let irt = in_response_to
            .map(|i| format!(" InResponseTo=\"{i}\""))
            .unwrap_or_default();
        let groups: String = self
            .groups
            .iter()
            .map(|g| format!("<saml:AttributeValue>{g}</saml:AttributeValue>"))
            .collect();
        let rid = format!("_r{}", Uuid::new_v4().simple());
        let aid = format!("_a{}", Uuid::new_v4().simple());
        let sig = format!(
            concat!(
                "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>",
                "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
                "<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>",
                "<ds:Reference URI=\"#{rid}\"><ds:Transforms>",
                "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>",
                "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>",
                "<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue/>",
                "</ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo/></ds:Signature>"
            ),
            rid = rid
        );
        let xml = format!(
            concat!(
                "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{rid}\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{acs}\"{irt}>",
                "<saml:Issuer>{idp}</saml:Issuer>{sig}",
                "<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>",
                "<saml:Assertion ID=\"{aid}\" Version=\"2.0\" IssueInstant=\"{now}\"><saml:Issuer>{idp}</saml:Issuer>",
                "<saml:Subject><saml:NameID Format=\"{nidf}\">{nid}</saml:NameID>",
                "<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"><saml:SubjectConfirmationData NotOnOrAfter=\"{later}\" Recipient=\"{acs}\"{irt}/></saml:SubjectConfirmation></saml:Subject>",
                "<saml:Conditions NotBefore=\"{before}\" NotOnOrAfter=\"{later}\"><saml:AudienceRestriction><saml:Audience>{aud}</saml:Audience></saml:AudienceRestriction></saml:Conditions>",
                "<saml:AuthnStatement AuthnInstant=\"{now}\" SessionIndex=\"_s1\"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>",
                "<saml:AttributeStatement>",
                "<saml:Attribute Name=\"givenName\"><saml:AttributeValue>{given}</saml:AttributeValue></saml:Attribute>",
                "<saml:Attribute Name=\"sn\"><saml:AttributeValue>Liddell</saml:AttributeValue></saml:Attribute>",
                "<saml:Attribute Name=\"groups\">{groups}</saml:Attribute>",
                "</saml:AttributeStatement></saml:Assertion></samlp:Response>"
            ),
            rid = rid,
            aid = aid,
            now = t(0),
            before = t(-30),
            later = t(300),
            acs = acs,
            irt = irt,
            idp = IDP,
            sig = sig,
            nid = self.name_id,
            nidf = self.name_id_format,
            aud = audience,
            given = self.given,
            groups = groups,
        );
        let key = RsaSigningKey::from_pkcs8_pem(&self.key).unwrap();
        let writer = X509CertificateKeyInfoWriter::from_pem(&self.cert).unwrap();
        let signed = SignContext::new(&key)
            .key_info_writer(&writer)
            .start_node_id(&rid)
            .signature_template_selection(SignatureTemplateSelection::FirstDescendant)
            .sign_template(&xml)
            .unwrap();
        STANDARD.encode(signed)
    }
}

/// The issuer the test apps are configured with (the base of every URL Lintel emits).
fn lintel_base() -> String {
    crate::oidc::lintel_issuer()
}

struct Fixture {
    org_id: Uuid,
    provider: IdentityProvider,
}

async fn saml_org(app: &TestApp, slug: &str, extra: Value) -> Fixture {
    let id = &app.state.identity;
    let org = orgs::create(id, &format!("Org {slug}"), Some(slug))
        .await
        .unwrap();
    orgs::add_domain(id, org.org_id, "acme.test").await.unwrap();
    orgs::set_domain_verified(id, org.org_id, "acme.test", true)
        .await
        .unwrap();
    let mut config = json!({
        "entity_id": IDP, "sso_url": SSO, "certificates": [testdata("idp.crt.pem")],
        "group_roles": {"admins": "admin"},
    });
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let provider = providers::create(
        id,
        org.org_id,
        NewProvider {
            kind: "saml".into(),
            name: "Acme IdP".into(),
            config,
            client_secret: None,
            enabled: true,
        },
    )
    .await
    .unwrap();
    Fixture {
        org_id: org.org_id,
        provider,
    }
}

/// The AuthnRequest ID and RelayState of a redirect to the IdP (HTTP-Redirect binding).
fn authn_request_of(location: &str) -> (String, String) {
    assert!(location.starts_with(SSO), "{location}");
    let q = query_of(location);
    let deflated = STANDARD.decode(&q["SAMLRequest"]).unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..])
        .read_to_string(&mut xml)
        .unwrap();
    let start = xml.find(" ID=\"").unwrap() + 5;
    let end = xml[start..].find('"').unwrap() + start;
    (xml[start..end].to_string(), q["RelayState"].clone())
}

async fn post_acs(b: &mut Browser, p: &IdentityProvider, response: &str, relay: &str) -> Page {
    b.post(
        &format!("/saml/{}/acs", p.provider_id),
        &[("SAMLResponse", response), ("RelayState", relay)],
    )
    .await
}

/// SP-initiated login at `/saml/{id}/login` through to the completion; the final page.
async fn saml_login(b: &mut Browser, p: &IdentityProvider, idp: &Idp) -> Page {
    let start = b.get(&format!("/saml/{}/login", p.provider_id)).await;
    assert_eq!(start.status, 303, "{}", start.body);
    let (req_id, relay) = authn_request_of(start.location.as_deref().unwrap());
    let acs = post_acs(b, p, &idp.response(p, Some(&req_id)), &relay).await;
    assert_eq!(acs.status, 303, "{}", acs.body);
    let next = acs.location.unwrap();
    assert!(next.starts_with("/sso/complete?request="), "{next}");
    b.get(&next).await
}

async fn rp_client(app: &TestApp) -> Setup {
    let (client, secret) = clients::create(
        &app.state.identity,
        NewClient {
            name: "RP".into(),
            redirect_uris: vec![REDIRECT.into()],
            first_party: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    Setup {
        client_id: client.client_id,
        secret: secret.unwrap().expose().clone(),
        user_id: Uuid::nil(),
        email: String::new(),
    }
}

pub async fn count(app: &TestApp, sql: &str, org_id: Uuid) -> i64 {
    use lintel::store::Db;
    match &app.state.identity.db {
        Db::Sqlite(p, _) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(org_id)
            .fetch_one(p)
            .await
            .unwrap(),
        Db::Postgres(p) => sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_string()))
            .bind(org_id)
            .fetch_one(p)
            .await
            .unwrap(),
    }
}

async fn sp_initiated_login_from_the_hosted_page_reaches_the_relying_party(app: TestApp) {
    let f = saml_org(&app, "acme", json!({})).await;
    let s = rp_client(&app).await;
    let mut b = Browser::new(&app);
    // The hosted login page: an email of the org's verified domain goes to its IdP.
    let page = b.get(&auth_path(&s.client_id, &[])).await;
    let to_idp = submit_login(&mut b, &page, "alice@acme.test", "").await;
    assert_eq!(to_idp.status, 303, "{}", to_idp.body);
    let (req_id, relay) = authn_request_of(to_idp.location.as_deref().unwrap());
    let response = Idp::new().response(&f.provider, Some(&req_id));
    let acs = post_acs(&mut b, &f.provider, &response, &relay).await;
    assert_eq!(acs.status, 303, "{}", acs.body);
    let done = b.get(acs.location.as_deref().unwrap()).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let q = query_of(done.location.as_deref().unwrap());
    assert!(done.location.unwrap().starts_with(REDIRECT));
    assert_eq!(q["state"], "st-1");
    let (st, tokens) = exchange(&app, &s, &q["code"]).await;
    assert_eq!(st, 200, "{tokens}");
    let (_, claims) = crate::oidc::verify_jwt(&app, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["amr"], json!(["fed", "saml"]));

    // JIT: the user, the link, the membership with the mapped role.
    let id = &app.state.identity;
    let user = users::find_by_email(id, "alice@acme.test").await.unwrap();
    assert_eq!(claims["sub"], json!(user.user_id.to_string()));
    assert_eq!(user.first_name.as_deref(), Some("Alice"));
    assert_eq!(user.last_name.as_deref(), Some("Liddell"));
    assert!(!user.has_password);
    assert!(!user.email_confirmed, "trust_email is off");
    let m = lintel::identity::memberships::get(id, f.org_id, user.user_id)
        .await
        .unwrap();
    assert!(
        m.user_role == "admin" || m.additional_roles.0.contains(&"admin".to_string()),
        "{m:?}"
    );
    let mut c = id.db.conn().await.unwrap();
    let link =
        lintel::store::federation::find_link(&mut c, f.provider.provider_id, "alice@acme.test")
            .await
            .unwrap()
            .unwrap();
    drop(c);
    assert_eq!(link.user_id, user.user_id);
    // Audit, login attempts and metrics for the federated login.
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM login_attempts WHERE org_id = $1 AND success",
            f.org_id
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &app,
            "SELECT COUNT(*) FROM audit_logs WHERE org_id = $1 AND action IN \
             ('user.created', 'federated_identity.linked', 'membership.created')",
            f.org_id
        )
        .await,
        3
    );
    assert!(
        count(
            &app,
            "SELECT COUNT(*) FROM metrics_events WHERE org_id = $1 AND event_type = 'login.succeeded'",
            f.org_id
        )
        .await
            >= 1
    );

    // The same response again: a replay.
    let again = post_acs(&mut b, &f.provider, &response, &relay).await;
    assert_eq!(again.status, 400, "{}", again.body);
    assert!(again.body.contains("already used"), "{}", again.body);

    // A later login updates the mapped names and the IdP-managed role.
    let mut b2 = Browser::new(&app);
    let idp = Idp {
        given: "Alicia".into(),
        groups: vec!["staff".into()],
        ..Idp::new()
    };
    let done = saml_login(&mut b2, &f.provider, &idp).await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location.as_deref(), Some("/account"));
    let again = users::find_by_email(id, "alice@acme.test").await.unwrap();
    assert_eq!(again.user_id, user.user_id);
    assert_eq!(again.first_name.as_deref(), Some("Alicia"));
    let m = lintel::identity::memberships::get(id, f.org_id, user.user_id)
        .await
        .unwrap();
    assert_eq!(m.user_role, "member", "{m:?}");
    assert!(
        !m.additional_roles.0.contains(&"admin".to_string()),
        "{m:?}"
    );
    app.finish().await;
}

async fn bad_responses_are_refused_and_recorded(app: TestApp) {
    let f = saml_org(&app, "acme-bad", json!({})).await;
    let p = &f.provider;
    let mut b = Browser::new(&app);
    let failures = || async {
        count(
            &app,
            "SELECT COUNT(*) FROM login_attempts WHERE org_id = $1 AND NOT success",
            f.org_id,
        )
        .await
    };

    let start = b.get(&format!("/saml/{}/login", p.provider_id)).await;
    let (req_id, relay) = authn_request_of(start.location.as_deref().unwrap());
    // Signed by another key.
    let other = Idp {
        key: testdata("other.key.pem"),
        cert: testdata("other.crt.pem"),
        ..Idp::new()
    };
    let page = post_acs(&mut b, p, &other.response(p, Some(&req_id)), &relay).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("signature"), "{}", page.body);
    assert_eq!(failures().await, 1);
    // For another SP.
    let wrong_aud = Idp {
        audience: Some("https://other-sp.example/metadata".into()),
        ..Idp::new()
    };
    let page = post_acs(&mut b, p, &wrong_aud.response(p, Some(&req_id)), &relay).await;
    assert_eq!(page.status, 400);
    assert!(page.body.contains("audience"), "{}", page.body);
    // Answering a request nobody made (RelayState of no request): unsolicited, refused.
    let page = post_acs(&mut b, p, &Idp::new().response(p, Some("_nobody")), "").await;
    assert_eq!(page.status, 400);
    assert_eq!(failures().await, 3);
    assert!(b.get("/account").await.status != 200, "no session");

    // The right response, completed in another browser: refused; the owner can finish.
    let ok = post_acs(&mut b, p, &Idp::new().response(p, Some(&req_id)), &relay).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    let next = ok.location.unwrap();
    let mut thief = Browser::new(&app);
    let stolen = thief.get(&next).await;
    assert_eq!(stolen.status, 400, "{}", stolen.body);
    assert!(stolen.body.contains("another browser"), "{}", stolen.body);
    let done = b.get(&next).await;
    assert_eq!(done.status, 303, "{}", done.body);
    // …once.
    assert_eq!(b.get(&next).await.status, 400);
    // A second response to the same request is refused (InResponseTo used once).
    let late = post_acs(&mut b, p, &Idp::new().response(p, Some(&req_id)), &relay).await;
    assert_eq!(late.status, 400, "{}", late.body);
    // Garbage and DOCTYPE: clear 400s, never a 500.
    let page = post_acs(&mut b, p, "not base64!!", &relay).await;
    assert_eq!(page.status, 400);
    let doctype =
        STANDARD.encode("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>");
    let page = post_acs(&mut b, p, &doctype, &relay).await;
    assert_eq!(page.status, 400);
    let page = b
        .post(
            &format!("/saml/{}/acs", Uuid::now_v7()),
            &[("SAMLResponse", "x")],
        )
        .await;
    assert_eq!(page.status, 404);
    // A new user outside the org's verified domains (an IdP squatting an address) and a
    // transient NameID (it cannot identify anyone next time) are refused.
    let mut b = Browser::new(&app);
    let outsider = Idp {
        name_id: "ceo@other-company.test".into(),
        ..Idp::new()
    };
    let page = saml_login(&mut b, p, &outsider).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("domain not verified"), "{}", page.body);
    assert!(
        users::find_by_email(&app.state.identity, "ceo@other-company.test")
            .await
            .is_err()
    );
    let transient = Idp {
        name_id_format: TRANSIENT.into(),
        ..Idp::new()
    };
    let start = b.get(&format!("/saml/{}/login", p.provider_id)).await;
    let (req_id, relay) = authn_request_of(start.location.as_deref().unwrap());
    let page = post_acs(&mut b, p, &transient.response(p, Some(&req_id)), &relay).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("transient"), "{}", page.body);
    app.finish().await;
}

async fn idp_initiated_login_only_when_allowed(app: TestApp) {
    let f = saml_org(&app, "acme-idp", json!({})).await;
    let mut b = Browser::new(&app);
    let unsolicited = Idp::new().response(&f.provider, None);
    let page = post_acs(&mut b, &f.provider, &unsolicited, "").await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("unsolicited"), "{}", page.body);

    let mut cfg = f.provider.config.0.clone();
    cfg["allow_idp_initiated"] = json!(true);
    providers::update(
        &app.state.identity,
        f.org_id,
        f.provider.provider_id,
        ProviderPatch {
            config: Some(cfg),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let page = post_acs(
        &mut b,
        &f.provider,
        &Idp::new().response(&f.provider, None),
        "",
    )
    .await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/account"));
    assert_eq!(b.get("/account").await.status, 200);
    app.finish().await;
}

async fn existing_accounts_are_linked_only_when_trusted(app: TestApp) {
    let id = &app.state.identity;
    let (existing, _) = users::create(
        id,
        NewUser {
            email: "alice@acme.test".into(),
            password: Some(Secret::new("correct horse battery".into())),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let f = saml_org(&app, "acme-link", json!({})).await;
    let mut b = Browser::new(&app);
    let page = saml_login(&mut b, &f.provider, &Idp::new()).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("account exists"), "{}", page.body);
    assert!(
        lintel::identity::memberships::get(id, f.org_id, existing.user_id)
            .await
            .is_err()
    );

    let mut cfg = f.provider.config.0.clone();
    cfg["trust_email"] = json!(true);
    providers::update(
        id,
        f.org_id,
        f.provider.provider_id,
        ProviderPatch {
            config: Some(cfg),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Trusted, but the account never proved its address (it may be a squat): refused.
    let page = saml_login(&mut b, &f.provider, &Idp::new()).await;
    assert_eq!(page.status, 400, "{}", page.body);
    assert!(page.body.contains("account exists"), "{}", page.body);
    users::update(
        id,
        existing.user_id,
        users::UserPatch {
            email_confirmed: Some(true),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let page = saml_login(&mut b, &f.provider, &Idp::new()).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let user = users::find_by_email(id, "alice@acme.test").await.unwrap();
    assert_eq!(user.user_id, existing.user_id, "linked, not duplicated");
    lintel::identity::memberships::get(id, f.org_id, existing.user_id)
        .await
        .unwrap();
    app.finish().await;
}

async fn orgs_that_require_sso_refuse_password_sessions(app: TestApp) {
    let id = &app.state.identity;
    let f = saml_org(&app, "acme-sso", json!({})).await;
    orgs::set_login_method(id, f.org_id, "password", false)
        .await
        .unwrap();
    // A member who has a password, with an email outside the org's domain.
    let (bob, _) = users::create(
        id,
        NewUser {
            email: "bob@elsewhere.test".into(),
            password: Some(Secret::new("correct horse battery".into())),
            org_id: Some(f.org_id),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let (client, secret) = clients::create(
        id,
        NewClient {
            name: "Org app".into(),
            org_id: Some(f.org_id),
            redirect_uris: vec![REDIRECT.into()],
            first_party: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let s = Setup {
        client_id: client.client_id,
        secret: secret.unwrap().expose().clone(),
        user_id: bob.user_id,
        email: bob.email.clone(),
    };
    // The org-bound client's login goes straight to the org's IdP.
    let mut b = Browser::new(&app);
    let page = b.get(&auth_path(&s.client_id, &[])).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(page.location.unwrap().starts_with(SSO));
    // A password session (from the plain sign-in page) gets no code for that org: the
    // user is sent to the org's IdP instead (and `prompt=none` is refused).
    let mut b = Browser::new(&app);
    let login = b.get("/login").await;
    let signed_in = submit_login(&mut b, &login, &bob.email, "correct horse battery").await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    let page = b.get(&auth_path(&s.client_id, &[])).await;
    assert_eq!(page.status, 303, "{}", page.body);
    assert!(
        page.location.as_deref().unwrap().starts_with(SSO),
        "{}",
        page.body
    );
    let page = b.get(&auth_path(&s.client_id, &[("prompt", "none")])).await;
    let q = query_of(page.location.as_deref().unwrap());
    assert_eq!(q["error"], "access_denied", "{q:?}");
    // /sso/{org_slug} starts the org's SSO.
    let page = b.get("/sso/acme-sso").await;
    assert_eq!(page.status, 303);
    assert!(page.location.unwrap().starts_with(SSO));
    assert_eq!(b.get("/sso/no-such-org").await.status, 404);
    app.finish().await;
}

/// Signs in from the hosted page for `s` through the IdP; the page after the completion.
async fn hosted_saml_login(b: &mut Browser, p: &IdentityProvider, s: &Setup, idp: &Idp) -> Page {
    let page = b.get(&auth_path(&s.client_id, &[])).await;
    let to_idp = submit_login(b, &page, &idp.name_id, "").await;
    assert_eq!(to_idp.status, 303, "{}", to_idp.body);
    let (req_id, relay) = authn_request_of(to_idp.location.as_deref().unwrap());
    let acs = post_acs(b, p, &idp.response(p, Some(&req_id)), &relay).await;
    assert_eq!(acs.status, 303, "{}", acs.body);
    b.get(acs.location.as_deref().unwrap()).await
}

async fn mfa_users_pass_the_totp_step_after_federation(app: TestApp) {
    let f = saml_org(&app, "acme-mfa", json!({})).await;
    let s = rp_client(&app).await;
    let id = &app.state.identity;
    let mut b = Browser::new(&app);
    let done = hosted_saml_login(&mut b, &f.provider, &s, &Idp::new()).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let user = users::find_by_email(id, "alice@acme.test").await.unwrap();
    let e = lintel::identity::mfa::begin_totp_enrolment(id, user.user_id)
        .await
        .unwrap();
    let seed = totp_rs::Secret::try_from_base32(&e.secret_base32).unwrap();
    let seed: Vec<u8> = AsRef::<[u8]>::as_ref(&seed).to_vec();
    let step = lintel::identity::mfa::totp_step(lintel::clock::Clock::now(&*id.clock));
    let code = lintel::identity::mfa::totp_code(&seed, step, 6).unwrap();
    lintel::identity::mfa::confirm_totp(id, user.user_id, e.device_id, &code)
        .await
        .unwrap();

    // The IdP's login is the first factor; Lintel still asks for the TOTP code.
    let mut b = Browser::new(&app);
    let mfa = hosted_saml_login(&mut b, &f.provider, &s, &Idp::new()).await;
    assert_eq!(mfa.status, 200, "{}", mfa.body);
    assert!(mfa.body.contains(r#"name="code""#), "{}", mfa.body);
    let next = lintel::identity::mfa::totp_code(&seed, step + 1, 6).unwrap();
    let done = b
        .post(
            "/login/mfa",
            &[
                ("code", next.as_str()),
                ("csrf", &crate::oidc::hidden(&mfa.body, "csrf")),
                ("auth", &crate::oidc::hidden(&mfa.body, "auth")),
                ("pending", &crate::oidc::hidden(&mfa.body, "pending")),
            ],
        )
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    let q = query_of(done.location.as_deref().unwrap());
    let (st, tokens) = exchange(&app, &s, &q["code"]).await;
    assert_eq!(st, 200, "{tokens}");
    let (_, claims) = crate::oidc::verify_jwt(&app, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["amr"], json!(["fed", "saml", "otp", "mfa"]));
    app.finish().await;
}

async fn one_orgs_sso_does_not_satisfy_anothers(app: TestApp) {
    let id = &app.state.identity;
    let a = saml_org(&app, "acme-a", json!({})).await;
    // Org B requires its own SSO (passwords off); Alice belongs to both.
    let org_b = orgs::create(id, "Beta", Some("beta")).await.unwrap();
    let pb = providers::create(
        id,
        org_b.org_id,
        NewProvider {
            kind: "saml".into(),
            name: "Beta IdP".into(),
            config: json!({"entity_id": IDP, "sso_url": SSO,
                           "certificates": [testdata("idp.crt.pem")]}),
            client_secret: None,
            enabled: true,
        },
    )
    .await
    .unwrap();
    orgs::set_login_method(id, org_b.org_id, "password", false)
        .await
        .unwrap();
    let mut b = Browser::new(&app);
    let done = saml_login(&mut b, &a.provider, &Idp::new()).await;
    assert_eq!(done.status, 303, "{}", done.body);
    let alice = users::find_by_email(id, "alice@acme.test").await.unwrap();
    lintel::identity::memberships::add(id, org_b.org_id, alice.user_id, "member")
        .await
        .unwrap();
    let (client, _) = clients::create(
        id,
        NewClient {
            name: "Beta app".into(),
            org_id: Some(org_b.org_id),
            redirect_uris: vec![REDIRECT.into()],
            first_party: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The session from A's IdP is not B's SSO: B's client sends Alice to B's IdP.
    let page = b.get(&auth_path(&client.client_id, &[])).await;
    assert_eq!(page.status, 303, "{}", page.body);
    let location = page.location.unwrap();
    assert!(location.starts_with(SSO), "{location}");
    let q = query_of(&location);
    let deflated = STANDARD.decode(&q["SAMLRequest"]).unwrap();
    let mut xml = String::new();
    flate2::read::DeflateDecoder::new(&deflated[..])
        .read_to_string(&mut xml)
        .unwrap();
    assert!(xml.contains(&pb.provider_id.to_string()), "{xml}");
    app.finish().await;
}
