//! SAML response validation (signature verification with xml-sec, exclusive c14n, every
//! protocol check) per response, single thread, optimized: `cargo bench --bench saml`.
//! The response is signed once here with the test IdP key (src/saml/testdata).
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use lintel::saml::config::{IdpConfig, SpConfig};
use lintel::saml::response::{Expect, validate};
use xml_sec::xmldsig::{
    RsaSigningKey, SignContext, SignatureTemplateSelection, X509CertificateKeyInfoWriter,
};

const IDP: &str = "https://idp.bench.test";
const SP: &str = "https://sp.bench.test/saml/p/metadata";
const ACS: &str = "https://sp.bench.test/saml/p/acs";

fn testdata(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/src/saml/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn signed_response(now: DateTime<Utc>) -> String {
    let t = |s: i64| {
        (now + chrono::Duration::seconds(s)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let xml = format!(
        concat!(
            "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"_r1\" Version=\"2.0\" IssueInstant=\"{now}\" Destination=\"{acs}\" InResponseTo=\"_req\">",
            "<saml:Issuer>{idp}</saml:Issuer>",
            "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>",
            "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
            "<ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#rsa-sha256\"/>",
            "<ds:Reference URI=\"#_r1\"><ds:Transforms>",
            "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>",
            "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>",
            "<ds:DigestMethod Algorithm=\"http://www.w3.org/2001/04/xmlenc#sha256\"/><ds:DigestValue/>",
            "</ds:Reference></ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo/></ds:Signature>",
            "<samlp:Status><samlp:StatusCode Value=\"urn:oasis:names:tc:SAML:2.0:status:Success\"/></samlp:Status>",
            "<saml:Assertion ID=\"_a1\" Version=\"2.0\" IssueInstant=\"{now}\"><saml:Issuer>{idp}</saml:Issuer>",
            "<saml:Subject><saml:NameID Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\">ada@bench.test</saml:NameID>",
            "<saml:SubjectConfirmation Method=\"urn:oasis:names:tc:SAML:2.0:cm:bearer\"><saml:SubjectConfirmationData NotOnOrAfter=\"{later}\" Recipient=\"{acs}\" InResponseTo=\"_req\"/></saml:SubjectConfirmation></saml:Subject>",
            "<saml:Conditions NotBefore=\"{before}\" NotOnOrAfter=\"{later}\"><saml:AudienceRestriction><saml:Audience>{sp}</saml:Audience></saml:AudienceRestriction></saml:Conditions>",
            "<saml:AuthnStatement AuthnInstant=\"{now}\"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>",
            "<saml:AttributeStatement><saml:Attribute Name=\"groups\"><saml:AttributeValue>eng</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>",
            "</saml:Assertion></samlp:Response>"
        ),
        now = t(0),
        before = t(-30),
        later = t(300),
        acs = ACS,
        idp = IDP,
        sp = SP,
    );
    let key = RsaSigningKey::from_pkcs8_pem(&testdata("idp.key.pem")).unwrap();
    let writer = X509CertificateKeyInfoWriter::from_pem(&testdata("idp.crt.pem")).unwrap();
    let signed = SignContext::new(&key)
        .key_info_writer(&writer)
        .start_node_id("_r1")
        .signature_template_selection(SignatureTemplateSelection::FirstDescendant)
        .sign_template(&xml)
        .unwrap();
    STANDARD.encode(signed)
}

fn bench(c: &mut Criterion) {
    let now = Utc::now();
    let b64 = signed_response(now);
    let idp = IdpConfig {
        entity_id: IDP.into(),
        sso_url: "https://idp.bench.test/sso".into(),
        certificates: vec![testdata("idp.crt.pem")],
        name_id_format: None,
        clock_skew_secs: 120,
        allow_idp_initiated: false,
        require_encrypted_assertions: false,
        sign_authn_requests: false,
        allow_sha1: false,
        allow_rsa1_5_key_transport: false,
    };
    let sp = SpConfig {
        entity_id: SP,
        acs_url: ACS,
        key: None,
    };
    validate(&b64, &idp, &sp, Expect::InResponseTo("_req"), now)
        .expect("the bench response is valid");
    c.bench_function("saml/validate_signed_response", |b| {
        b.iter(|| validate(&b64, &idp, &sp, Expect::InResponseTo("_req"), now).unwrap())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
