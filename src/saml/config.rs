//! Per-provider SAML configuration (stored as JSON in `identity_providers.config`) and
//! our own SP identity.

use super::SamlError;
use super::sp_key::SpKey;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Utc};
use openssl::x509::X509;
use serde::{Deserialize, Serialize};

fn default_skew() -> i64 {
    120
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct IdpConfig {
    pub entity_id: String,
    /// HTTP-Redirect SSO endpoint (SAML Bindings §3.4).
    pub sso_url: String,
    /// Signing certificates, PEM or bare base64 DER; more than one during rollover.
    pub certificates: Vec<String>,
    #[serde(default)]
    pub name_id_format: Option<String>,
    #[serde(default = "default_skew")]
    pub clock_skew_secs: i64,
    #[serde(default)]
    pub allow_idp_initiated: bool,
    #[serde(default)]
    pub require_encrypted_assertions: bool,
    #[serde(default)]
    pub sign_authn_requests: bool,
    /// Accept RSA-SHA1 signatures and SHA-1 digests (legacy IdPs only).
    #[serde(default)]
    pub allow_sha1: bool,
    /// Accept RSA PKCS#1 v1.5 key transport for encrypted assertions (legacy IdPs only;
    /// XMLEnc 1.1 §5.5.1 warns against it).
    #[serde(default)]
    pub allow_rsa1_5_key_transport: bool,
}

impl IdpConfig {
    /// A provider must name itself, have an SSO URL and at least one usable certificate:
    /// without one no response could be authenticated.
    pub fn validate(&self) -> Result<(), SamlError> {
        if self.entity_id.trim().is_empty() {
            return Err(SamlError::Config("entity_id is empty".into()));
        }
        let url = url::Url::parse(&self.sso_url)
            .map_err(|e| SamlError::Config(format!("sso_url: {e}")))?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(SamlError::Config("sso_url must be http(s)".into()));
        }
        if self.certificates.is_empty() {
            return Err(SamlError::Config(
                "at least one signing certificate is required".into(),
            ));
        }
        for (i, c) in self.certificates.iter().enumerate() {
            parse_certificate(c)
                .map_err(|e| SamlError::Config(format!("certificate {}: {e}", i + 1)))?;
        }
        if !(0..=3600).contains(&self.clock_skew_secs) {
            return Err(SamlError::Config("clock_skew_secs must be 0..=3600".into()));
        }
        Ok(())
    }

    /// (subject, notAfter) of each parseable certificate, for expiry warnings.
    pub fn certificate_expiries(&self) -> Vec<(String, DateTime<Utc>)> {
        self.certificates
            .iter()
            .filter_map(|c| parse_certificate(c).ok())
            .filter_map(|x| {
                let subject = x
                    .subject_name()
                    .entries()
                    .filter_map(|e| e.data().to_string().ok())
                    .collect::<Vec<_>>()
                    .join(", ");
                Some((subject, asn1_to_utc(x.not_after())?))
            })
            .collect()
    }

    /// DER of every configured certificate; unparseable ones are skipped
    /// (`validate` refuses them when the configuration is saved).
    pub(crate) fn certificate_ders(&self) -> Vec<Vec<u8>> {
        self.certificates
            .iter()
            .filter_map(|c| parse_certificate(c).ok())
            .filter_map(|x| x.to_der().ok())
            .collect()
    }
}

/// Our side: entity ID, ACS URL and (optionally) the SP key for signing requests and
/// decrypting assertions.
#[derive(Clone, Copy, Debug)]
pub struct SpConfig<'a> {
    pub entity_id: &'a str,
    pub acs_url: &'a str,
    pub key: Option<&'a SpKey>,
}

/// PEM (with or without header lines) or bare base64 DER.
pub(crate) fn parse_certificate(text: &str) -> Result<X509, SamlError> {
    let t = text.trim();
    if t.starts_with("-----BEGIN") {
        return X509::from_pem(t.as_bytes()).map_err(|e| SamlError::Config(e.to_string()));
    }
    let compact: String = t.chars().filter(|c| !c.is_whitespace()).collect();
    let der = STANDARD
        .decode(compact)
        .map_err(|e| SamlError::Config(format!("certificate base64: {e}")))?;
    X509::from_der(&der).map_err(|e| SamlError::Config(e.to_string()))
}

pub(crate) fn asn1_to_utc(t: &openssl::asn1::Asn1TimeRef) -> Option<DateTime<Utc>> {
    let epoch = openssl::asn1::Asn1Time::from_unix(0).ok()?;
    let d = epoch.diff(t).ok()?;
    DateTime::from_timestamp(i64::from(d.days) * 86_400 + i64::from(d.secs), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const IDP_CERT: &str = include_str!("testdata/idp.crt.pem");

    fn cfg() -> IdpConfig {
        IdpConfig {
            entity_id: "https://idp.example.test".into(),
            sso_url: "https://idp.example.test/sso".into(),
            certificates: vec![IDP_CERT.into()],
            name_id_format: None,
            clock_skew_secs: 120,
            allow_idp_initiated: false,
            require_encrypted_assertions: false,
            sign_authn_requests: false,
            allow_sha1: false,
            allow_rsa1_5_key_transport: false,
        }
    }

    #[test]
    fn valid_config_passes() {
        cfg().validate().unwrap();
    }

    #[test]
    fn provider_without_certificate_is_refused() {
        let mut c = cfg();
        c.certificates.clear();
        assert!(matches!(c.validate(), Err(SamlError::Config(_))));
        c.certificates.push("not a certificate".into());
        assert!(matches!(c.validate(), Err(SamlError::Config(_))));
    }

    #[test]
    fn bad_entity_or_url_is_refused() {
        let mut c = cfg();
        c.entity_id = " ".into();
        assert!(c.validate().is_err());
        let mut c = cfg();
        c.sso_url = "ftp://idp/sso".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn bare_base64_and_pem_are_the_same_certificate() {
        let body: String = IDP_CERT
            .lines()
            .filter(|l| !l.starts_with("-----"))
            .collect();
        let a = parse_certificate(IDP_CERT).unwrap().to_der().unwrap();
        let b = parse_certificate(&body).unwrap().to_der().unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn expiry_is_read_from_the_certificate() {
        let exp = cfg().certificate_expiries();
        assert_eq!(exp.len(), 1);
        // The test certificate was made for 3650 days in 2025 or later.
        assert!(exp[0].1.timestamp() > 1_900_000_000, "{:?}", exp[0]);
        assert!(exp[0].0.contains("Lintel test IdP"), "{}", exp[0].0);
    }

    #[test]
    fn serde_defaults() {
        let c: IdpConfig = serde_json::from_str(
            r#"{"entity_id":"e","sso_url":"https://x/sso","certificates":["c"]}"#,
        )
        .unwrap();
        assert_eq!(c.clock_skew_secs, 120);
        assert!(!c.allow_idp_initiated && !c.allow_sha1 && !c.require_encrypted_assertions);
    }
}
