//! AuthnRequest (SAML Core §3.4.1) sent by the HTTP-Redirect binding (Bindings §3.4.4:
//! raw DEFLATE, base64, URL-encoded; signed per §3.4.4.1 when configured).

use super::{BINDING_POST, IdpConfig, NS_ASSERTION, NS_PROTOCOL, SamlError, SpConfig, xml_escape};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore;
use std::io::Write;

pub const SIG_ALG_RSA_SHA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";

/// "_" + 160 random bits as hex (an xs:ID must not start with a digit; Core §1.3.4 asks
/// for at least 128 bits of randomness).
pub fn new_request_id() -> String {
    let mut b = [0u8; 20];
    rand::rng().fill_bytes(&mut b);
    format!("_{}", hex::encode(b))
}

/// The AuthnRequest XML.
pub fn authn_request_xml(
    sp: &SpConfig,
    idp: &IdpConfig,
    request_id: &str,
    now: DateTime<Utc>,
) -> String {
    let policy = match &idp.name_id_format {
        Some(f) => format!(
            "<samlp:NameIDPolicy Format=\"{}\" AllowCreate=\"true\"/>",
            xml_escape(f)
        ),
        None => "<samlp:NameIDPolicy AllowCreate=\"true\"/>".to_string(),
    };
    format!(
        concat!(
            "<samlp:AuthnRequest xmlns:samlp=\"{p}\" xmlns:saml=\"{a}\" ID=\"{id}\" Version=\"2.0\" ",
            "IssueInstant=\"{now}\" Destination=\"{dest}\" AssertionConsumerServiceURL=\"{acs}\" ",
            "ProtocolBinding=\"{post}\"><saml:Issuer>{issuer}</saml:Issuer>{policy}</samlp:AuthnRequest>"
        ),
        p = NS_PROTOCOL,
        a = NS_ASSERTION,
        id = xml_escape(request_id),
        now = now.to_rfc3339_opts(SecondsFormat::Secs, true),
        dest = xml_escape(&idp.sso_url),
        acs = xml_escape(sp.acs_url),
        post = BINDING_POST,
        issuer = xml_escape(sp.entity_id),
        policy = policy,
    )
}

fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The URL to send the browser to. Signed (SigAlg rsa-sha256 over
/// `SAMLRequest=..&RelayState=..&SigAlg=..`) when the IdP wants signed requests.
pub fn redirect_url(
    sp: &SpConfig,
    idp: &IdpConfig,
    request_id: &str,
    relay_state: &str,
    now: DateTime<Utc>,
) -> Result<String, SamlError> {
    // Bindings §3.4.3: RelayState MUST NOT exceed 80 bytes.
    if relay_state.len() > 80 {
        return Err(SamlError::Config("RelayState longer than 80 bytes".into()));
    }
    let xml = authn_request_xml(sp, idp, request_id, now);
    let mut z = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(xml.as_bytes())
        .and_then(|_| z.flush())
        .map_err(|e| SamlError::Config(e.to_string()))?;
    let deflated = z.finish().map_err(|e| SamlError::Config(e.to_string()))?;
    let mut query = format!("SAMLRequest={}", enc(&STANDARD.encode(deflated)));
    if !relay_state.is_empty() {
        query.push_str(&format!("&RelayState={}", enc(relay_state)));
    }
    if idp.sign_authn_requests {
        let key = sp.key.ok_or_else(|| {
            SamlError::Config("the IdP wants signed requests but there is no SP key".into())
        })?;
        query.push_str(&format!("&SigAlg={}", enc(SIG_ALG_RSA_SHA256)));
        let sig = key
            .sign_rsa_sha256(query.as_bytes())
            .map_err(|e| SamlError::Config(e.to_string()))?;
        query.push_str(&format!("&Signature={}", enc(&STANDARD.encode(sig))));
    }
    let sep = if idp.sso_url.contains('?') { '&' } else { '?' };
    Ok(format!("{}{sep}{query}", idp.sso_url))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saml::sp_key::tests::test_sp_key;
    use std::io::Read;

    fn idp(sign: bool) -> IdpConfig {
        IdpConfig {
            entity_id: "https://idp.example.test".into(),
            sso_url: "https://idp.example.test/sso?tenant=a".into(),
            certificates: vec![include_str!("testdata/idp.crt.pem").into()],
            name_id_format: Some(crate::saml::NAMEID_EMAIL.into()),
            clock_skew_secs: 120,
            allow_idp_initiated: false,
            require_encrypted_assertions: false,
            sign_authn_requests: sign,
            allow_sha1: false,
            allow_rsa1_5_key_transport: false,
        }
    }

    fn params(url: &str) -> Vec<(String, String)> {
        let u = url::Url::parse(url).unwrap();
        u.query_pairs().map(|(k, v)| (k.into(), v.into())).collect()
    }

    fn get<'a>(p: &'a [(String, String)], k: &str) -> Option<&'a str> {
        p.iter().find(|(a, _)| a == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn request_ids_are_random_and_xs_id() {
        let a = new_request_id();
        assert!(a.starts_with('_') && a.len() == 41);
        assert_ne!(a, new_request_id());
    }

    #[test]
    fn unsigned_redirect_carries_deflated_request() {
        let key = test_sp_key();
        let sp = SpConfig {
            entity_id: "https://sp/meta",
            acs_url: "https://sp/acs",
            key: Some(&key),
        };
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let url = redirect_url(&sp, &idp(false), "_abc", "rs-1", now).unwrap();
        assert!(url.starts_with("https://idp.example.test/sso?tenant=a&SAMLRequest="));
        let p = params(&url);
        assert_eq!(get(&p, "RelayState"), Some("rs-1"));
        assert!(get(&p, "Signature").is_none());
        let raw = STANDARD.decode(get(&p, "SAMLRequest").unwrap()).unwrap();
        let mut xml = String::new();
        flate2::read::DeflateDecoder::new(&raw[..])
            .read_to_string(&mut xml)
            .unwrap();
        let doc = xml_sec::Document::parse(&xml).unwrap();
        let r = doc.root_element();
        assert_eq!(r.tag_name().name(), "AuthnRequest");
        assert_eq!(r.attribute("ID"), Some("_abc"));
        assert_eq!(
            r.attribute("AssertionConsumerServiceURL"),
            Some("https://sp/acs")
        );
        assert_eq!(
            r.attribute("Destination"),
            Some("https://idp.example.test/sso?tenant=a")
        );
        assert_eq!(r.attribute("IssueInstant"), Some("2023-11-14T22:13:20Z"));
        assert!(xml.contains("<saml:Issuer>https://sp/meta</saml:Issuer>"));
    }

    #[test]
    fn signed_redirect_verifies_over_the_query_octets() {
        let key = test_sp_key();
        let sp = SpConfig {
            entity_id: "https://sp/meta",
            acs_url: "https://sp/acs",
            key: Some(&key),
        };
        let url = redirect_url(&sp, &idp(true), "_abc", "x y&z", Utc::now()).unwrap();
        let query = url.split_once("&SAMLRequest=").unwrap().1;
        let (signed, sig) = query.rsplit_once("&Signature=").unwrap();
        let signed = format!("SAMLRequest={signed}");
        assert!(signed.contains("&RelayState=x+y%26z&SigAlg="));
        let sig: String = url::form_urlencoded::parse(format!("s={sig}").as_bytes())
            .next()
            .unwrap()
            .1
            .into();
        let sig = STANDARD.decode(sig).unwrap();
        let cert = openssl::x509::X509::from_pem(include_bytes!("testdata/sp.crt.pem")).unwrap();
        let pk = cert.public_key().unwrap();
        let mut v =
            openssl::sign::Verifier::new(openssl::hash::MessageDigest::sha256(), &pk).unwrap();
        v.update(signed.as_bytes()).unwrap();
        assert!(v.verify(&sig).unwrap());
        assert_eq!(get(&params(&url), "SigAlg"), Some(SIG_ALG_RSA_SHA256));
    }

    #[test]
    fn signing_without_key_or_long_relay_state_fails() {
        let sp = SpConfig {
            entity_id: "e",
            acs_url: "a",
            key: None,
        };
        assert!(redirect_url(&sp, &idp(true), "_a", "", Utc::now()).is_err());
        assert!(redirect_url(&sp, &idp(false), "_a", &"x".repeat(81), Utc::now()).is_err());
        assert!(redirect_url(&sp, &idp(false), "_a", &"x".repeat(80), Utc::now()).is_ok());
    }
}
