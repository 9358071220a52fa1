//! Managing identity providers: the management API (SAML from metadata, a provider without
//! a certificate refused, other orgs' providers 404, the OIDC client secret write-only and
//! stored encrypted, certificate expiry warnings, audit rows) and the CLI
//! (`lintel idp create --saml-metadata`).
use crate::helpers::{TestApp, TestDb, admin_key, api_call as call, cli as run};
use crate::{on_both_backends, on_both_databases};
use lintel::identity::api_keys::{self, NewApiKey};
use lintel::identity::orgs;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(management_api_manages_identity_providers);
on_both_databases!(cli_imports_saml_metadata);

pub fn testdata(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/src/saml/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// IdP metadata as Okta or Entra publish it (one signing certificate, HTTP-Redirect SSO).
pub fn idp_metadata(entity_id: &str, sso_url: &str, cert_pem: &str) -> String {
    let b64: String = cert_pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="{entity_id}">
  <md:IDPSSODescriptor WantAuthnRequestsSigned="false" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="signing">
      <ds:KeyInfo xmlns:ds="http://www.w3.org/2000/09/xmldsig#"><ds:X509Data><ds:X509Certificate>{b64}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>
    </md:KeyDescriptor>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="{sso_url}/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="{sso_url}"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#
    )
}

async fn management_api_manages_identity_providers(app: TestApp) {
    let key = admin_key(&app).await;
    let id = &app.state.identity;
    let org = orgs::create(id, "Idp Admin", None).await.unwrap();
    let other = orgs::create(id, "Idp Other", None).await.unwrap();
    let base = format!("/orgs/{}/identity-providers", org.org_id);
    let metadata = idp_metadata(
        "https://idp.example.com/entity",
        "https://idp.example.com/sso",
        &testdata("idp.crt.pem"),
    );

    // SAML from metadata, with JIT settings laid over it.
    let (s, p) = call(
        &app,
        &key,
        Method::POST,
        &base,
        Some(json!({
            "type": "saml", "name": "Okta",
            "saml_metadata": metadata,
            "config": {"group_roles": {"Admins": "admin"}, "clock_skew_secs": 60},
        })),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{p}");
    let pid = p["provider_id"].as_str().unwrap().to_string();
    assert_eq!(p["config"]["entity_id"], "https://idp.example.com/entity");
    assert_eq!(p["config"]["sso_url"], "https://idp.example.com/sso");
    assert_eq!(p["config"]["clock_skew_secs"], 60);
    assert_eq!(p["config"]["group_roles"]["Admins"], "admin");
    assert_eq!(p["config"]["default_role"], "member");
    assert_eq!(p["enabled"], true);
    let acs = p["endpoints"]["acs_url"].as_str().unwrap();
    assert!(acs.ends_with(&format!("/saml/{pid}/acs")), "{acs}");
    assert_eq!(
        p["endpoints"]["sp_entity_id"],
        p["endpoints"]["metadata_url"]
    );
    // Our SP metadata names the ACS and carries our certificate.
    let md = app
        .client
        .get(app.url(&format!("/saml/{pid}/metadata")))
        .send()
        .await
        .unwrap();
    assert_eq!(md.status(), StatusCode::OK);
    let md = md.text().await.unwrap();
    assert!(md.contains(acs), "{md}");
    assert!(md.contains("X509Certificate"), "{md}");

    // Creating an enabled provider allowed its login method.
    assert!(
        orgs::login_method_allowed(id, org.org_id, "saml")
            .await
            .unwrap()
    );

    // No certificate: refused, with nothing stored.
    let (s, e) = call(
        &app,
        &key,
        Method::POST,
        &base,
        Some(json!({"type": "saml", "name": "No cert", "config": {
            "entity_id": "https://x.example.com", "sso_url": "https://x.example.com/sso",
            "certificates": []}})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["detail"].as_str().unwrap().contains("certificate"), "{e}");
    let (_, e) = call(
        &app,
        &key,
        Method::POST,
        &base,
        Some(json!({"type": "saml", "name": "Typo", "config": {
            "entity_id": "https://x.example.com", "sso_url": "https://x.example.com/sso",
            "certificates": [testdata("idp.crt.pem")], "trust_emails": true}})),
    )
    .await;
    assert!(
        e["detail"].as_str().unwrap().contains("trust_emails"),
        "{e}"
    );
    let (_, e) = call(
        &app,
        &key,
        Method::POST,
        &base,
        Some(json!({"type": "saml", "name": "Bad role", "config": {
            "entity_id": "https://x.example.com", "sso_url": "https://x.example.com/sso",
            "certificates": [testdata("idp.crt.pem")], "default_role": "nope"}})),
    )
    .await;
    assert!(e["detail"].as_str().unwrap().contains("nope"), "{e}");

    // OIDC: the secret is write-only and stored encrypted.
    let (s, o) = call(
        &app,
        &key,
        Method::POST,
        &base,
        Some(
            json!({"type": "oidc", "name": "Entra", "client_secret": "s3cr3t-value",
            "config": {"issuer": "https://login.example.com", "client_id": "lintel"}}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{o}");
    assert_eq!(o["client_secret_set"], true);
    assert!(!o.to_string().contains("s3cr3t-value"));
    let oid = o["provider_id"].as_str().unwrap();
    assert!(
        o["endpoints"]["redirect_uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/sso/oidc/{oid}/callback"))
    );
    let mut c = id.db.conn().await.unwrap();
    let row = lintel::store::federation::get_provider(&mut c, oid.parse().unwrap())
        .await
        .unwrap()
        .unwrap();
    drop(c);
    let stored = row.secret.unwrap();
    assert!(!stored.contains("s3cr3t-value"));
    assert_eq!(id.data_key.decrypt(&stored).unwrap(), b"s3cr3t-value");

    // List, get; another org's path is a 404.
    let (s, list) = call(&app, &key, Method::GET, &base, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["data"].as_array().unwrap().len(), 2, "{list}");
    let (s, _) = call(
        &app,
        &key,
        Method::GET,
        &format!("/orgs/{}/identity-providers/{pid}", other.org_id),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = call(
        &app,
        &key,
        Method::DELETE,
        &format!("/orgs/{}/identity-providers/{pid}", other.org_id),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    // Update: disable, rename; a config without a certificate is refused and changes nothing.
    let (s, u) = call(
        &app,
        &key,
        Method::PATCH,
        &format!("{base}/{pid}"),
        Some(json!({"enabled": false, "name": "Okta (old)"})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{u}");
    assert_eq!(u["enabled"], false);
    let (s, _) = call(
        &app,
        &key,
        Method::PATCH,
        &format!("{base}/{pid}"),
        Some(
            json!({"enabled": true, "config": {"entity_id": "e", "sso_url": "https://x.example.com",
            "certificates": []}}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let (_, g) = call(&app, &key, Method::GET, &format!("{base}/{pid}"), None).await;
    assert_eq!(g["enabled"], false);
    assert_eq!(g["config"]["entity_id"], "https://idp.example.com/entity");

    // Audit rows for each change.
    let logs = lintel::identity::audit::list(
        id,
        &lintel::store::audit::Filter {
            org_id: Some(org.org_id),
            ..Default::default()
        },
        None,
        100,
    )
    .await
    .unwrap();
    let actions: Vec<&str> = logs.iter().map(|l| l.action.as_str()).collect();
    assert!(
        actions.contains(&"identity_provider.created"),
        "{actions:?}"
    );
    assert!(
        actions.contains(&"identity_provider.updated"),
        "{actions:?}"
    );

    let (s, _) = call(&app, &key, Method::DELETE, &format!("{base}/{pid}"), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = call(&app, &key, Method::GET, &format!("{base}/{pid}"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let md = app
        .client
        .get(app.url(&format!("/saml/{pid}/metadata")))
        .send()
        .await
        .unwrap();
    assert_eq!(md.status(), StatusCode::NOT_FOUND);
    app.finish().await;
}

async fn cli_imports_saml_metadata(db: TestDb) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("idp.xml");
    std::fs::write(
        &path,
        idp_metadata(
            "https://idp.cli.example/entity",
            "https://idp.cli.example/sso",
            &testdata("idp.crt.pem"),
        ),
    )
    .unwrap();
    let (code, out, err) = run(&db, &["org", "create", "--name", "Cli Idp"]);
    assert_eq!(code, 0, "{err}");
    let org: Value = serde_json::from_str(out.trim()).unwrap();
    let slug = org["url_safe_org_name"].as_str().unwrap();
    let (code, out, err) = run(
        &db,
        &[
            "org",
            "add-domain",
            "--org",
            slug,
            "--domain",
            "CLI.example",
            "--verified",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let d: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(d["domain"], "cli.example");
    assert_eq!(d["verified"], true);
    let (code, out, err) = run(
        &db,
        &[
            "org",
            "verify-domain",
            "--org",
            slug,
            "--domain",
            "cli.example",
            "--unverified",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"verified\":false"), "{out}");
    let (code, out, err) = run(
        &db,
        &[
            "idp",
            "create",
            "--org",
            slug,
            "--saml-metadata",
            path.to_str().unwrap(),
            "--settings",
            r#"{"allow_idp_initiated": true}"#,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let p: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(p["type"], "saml");
    assert_eq!(p["config"]["entity_id"], "https://idp.cli.example/entity");
    assert_eq!(p["config"]["allow_idp_initiated"], true);
    assert_eq!(p["config"]["certificates"].as_array().unwrap().len(), 1);
    assert!(p["endpoints"]["acs_url"].as_str().unwrap().contains("/acs"));
    // A metadata file without a certificate: exit 1, nothing created.
    std::fs::write(
        &path,
        r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" entityID="x"><md:IDPSSODescriptor protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol"><md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://x.example/sso"/></md:IDPSSODescriptor></md:EntityDescriptor>"#,
    )
    .unwrap();
    let (code, _, err) = run(
        &db,
        &[
            "idp",
            "create",
            "--org",
            slug,
            "--saml-metadata",
            path.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{err}");
    let (code, out, _) = run(&db, &["idp", "list", "--org", slug]);
    assert_eq!(code, 0);
    let list: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    db.drop_database().await;
}

on_both_databases!(expired_requests_are_purged_and_expiring_certificates_reported);

/// A self-signed certificate valid from `from` for `days` days, as PEM.
fn cert_valid(from: chrono::DateTime<chrono::Utc>, days: i64) -> String {
    use openssl::{asn1::Asn1Time, hash::MessageDigest, pkey::PKey, rsa::Rsa, x509};
    let key = PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap();
    let mut name = x509::X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", "expiring.idp.test")
        .unwrap();
    let name = name.build();
    let mut b = x509::X509::builder().unwrap();
    b.set_subject_name(&name).unwrap();
    b.set_issuer_name(&name).unwrap();
    b.set_pubkey(&key).unwrap();
    b.set_not_before(&Asn1Time::from_unix(from.timestamp()).unwrap())
        .unwrap();
    b.set_not_after(
        &Asn1Time::from_unix((from + chrono::Duration::days(days)).timestamp()).unwrap(),
    )
    .unwrap();
    b.sign(&key, MessageDigest::sha256()).unwrap();
    String::from_utf8(b.build().to_pem().unwrap()).unwrap()
}

async fn expired_requests_are_purged_and_expiring_certificates_reported(db: TestDb) {
    use chrono::{Duration, Utc};
    use lintel::federation::{flow, providers};
    use lintel::store::federation::{self as fs, FederationRequest};
    let now = Utc::now();
    let clock = lintel::clock::FixedClock::new(now);
    let id = crate::helpers::identity_with_clock(&db, clock.clone()).await;
    let org = orgs::create(&id, "Purge Org", None).await.unwrap();
    let p = providers::create(
        &id,
        org.org_id,
        providers::NewProvider {
            kind: "saml".into(),
            name: "Expiring".into(),
            config: json!({"entity_id": "https://idp.test", "sso_url": "https://idp.test/sso",
                "certificates": [cert_valid(now - Duration::days(100), 110)]}),
            client_secret: None,
            enabled: true,
        },
    )
    .await
    .unwrap();
    assert_eq!(flow::warn_expiring_certificates(&id).await.unwrap(), 1);

    let mut c = id.db.conn().await.unwrap();
    for (rid, ttl) in [("_old", -1), ("_live", 600)] {
        fs::insert_request(
            &mut c,
            &FederationRequest {
                request_id: rid.into(),
                provider_id: p.provider_id,
                browser_hash: "h".into(),
                auth: String::new(),
                nonce: None,
                pkce_verifier: None,
                created_at: now,
                expires_at: now + Duration::seconds(ttl),
                result: None,
                asserted_at: None,
                completed_at: None,
            },
        )
        .await
        .unwrap();
    }
    fs::use_assertion(&mut c, p.provider_id, "_a-old", now - Duration::seconds(1))
        .await
        .unwrap();
    fs::use_assertion(
        &mut c,
        p.provider_id,
        "_a-live",
        now + Duration::seconds(60),
    )
    .await
    .unwrap();
    // A remembered assertion ID cannot be used again.
    assert!(
        fs::use_assertion(
            &mut c,
            p.provider_id,
            "_a-live",
            now + Duration::seconds(60)
        )
        .await
        .is_err()
    );
    drop(c);
    assert_eq!(flow::purge_expired(&id).await.unwrap(), 2);
    let mut c = id.db.conn().await.unwrap();
    assert!(
        fs::get_request(&mut c, p.provider_id, "_old")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        fs::get_request(&mut c, p.provider_id, "_live")
            .await
            .unwrap()
            .is_some()
    );
    drop(c);
    db.drop_database().await;
}

on_both_backends!(only_super_admins_verify_domains);

async fn only_super_admins_verify_domains(app: TestApp) {
    use lintel::identity::users::{self, NewUser};
    let id = &app.state.identity;
    let (owner, _) = users::create(
        id,
        NewUser {
            email: "owner@verify.test".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let org = orgs::create(id, "Verify Org", None).await.unwrap();
    lintel::identity::memberships::add(id, org.org_id, owner.user_id, "owner")
        .await
        .unwrap();
    let (_, owner_key) = api_keys::create(
        id,
        NewApiKey {
            user_id: Some(owner.user_id),
            org_id: Some(org.org_id),
            permissions: vec!["org:write".into(), "org:read".into()],
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let owner_key = owner_key.expose().clone();
    let admin = admin_key(&app).await;
    let base = format!("/organizations/{}/domains", org.org_id);
    let (s, d) = call(
        &app,
        &owner_key,
        Method::POST,
        &base,
        Some(json!({"domain": "verify.test"})),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{d}");
    assert_eq!(d["verified"], false);
    // The org cannot vouch for itself.
    let (s, e) = call(
        &app,
        &owner_key,
        Method::PUT,
        &format!("{base}/verify.test/verified"),
        Some(json!({"verified": true})),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{e}");
    assert!(
        orgs::org_for_email_domain(id, "x@verify.test")
            .await
            .unwrap()
            .is_none()
    );
    let (s, d) = call(
        &app,
        &admin,
        Method::PUT,
        &format!("{base}/Verify.Test/verified"),
        Some(json!({"verified": true})),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{d}");
    assert_eq!(d["verified"], true);
    assert_eq!(
        orgs::org_for_email_domain(id, "x@verify.test")
            .await
            .unwrap()
            .unwrap()
            .org_id,
        org.org_id
    );
    let (s, _) = call(
        &app,
        &admin,
        Method::PUT,
        &format!("{base}/unclaimed.test/verified"),
        Some(json!({"verified": true})),
    )
    .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    app.finish().await;
}
