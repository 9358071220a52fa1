//! SAML Metadata (saml-metadata-2.0-os): importing an IdP's EntityDescriptor and writing ours.

use super::{
    BINDING_POST, BINDING_REDIRECT, IdpConfig, NAMEID_EMAIL, NS_DSIG, NS_METADATA, SamlError,
    SpConfig, child, children, full_text, is, refuse_doctype, xml_escape,
};

/// Reads an IdP's metadata: the EntityDescriptor (or the first one with an IDPSSODescriptor
/// inside an EntitiesDescriptor), its HTTP-Redirect SSO endpoint (Metadata §2.4.3), its
/// signing certificates (KeyDescriptor use="signing" or without `use`, §2.4.1.1),
/// the first NameIDFormat and WantAuthnRequestsSigned.
pub fn parse_idp_metadata(xml: &str) -> Result<IdpConfig, SamlError> {
    refuse_doctype(xml)?;
    let doc = xml_sec::Document::parse(xml).map_err(|e| SamlError::Malformed(e.to_string()))?;
    let root = doc.root_element();
    let entity = if is(root, NS_METADATA, "EntityDescriptor") {
        root
    } else if is(root, NS_METADATA, "EntitiesDescriptor") {
        root.descendants()
            .find(|n| {
                is(*n, NS_METADATA, "EntityDescriptor")
                    && child(*n, NS_METADATA, "IDPSSODescriptor").is_some()
            })
            .ok_or_else(|| SamlError::Malformed("no EntityDescriptor with an IdP role".into()))?
    } else {
        return Err(SamlError::Malformed(
            "root is not md:EntityDescriptor or md:EntitiesDescriptor".into(),
        ));
    };
    let entity_id = entity
        .attribute("entityID")
        .ok_or_else(|| SamlError::Malformed("EntityDescriptor without entityID".into()))?
        .to_string();
    let idp = child(entity, NS_METADATA, "IDPSSODescriptor")
        .ok_or_else(|| SamlError::Malformed("no IDPSSODescriptor".into()))?;
    let sso_url = children(idp, NS_METADATA, "SingleSignOnService")
        .find(|n| n.attribute("Binding") == Some(BINDING_REDIRECT))
        .and_then(|n| n.attribute("Location"))
        .ok_or_else(|| SamlError::Malformed("no HTTP-Redirect SingleSignOnService".into()))?
        .to_string();
    let mut certificates = Vec::new();
    for kd in children(idp, NS_METADATA, "KeyDescriptor") {
        if !matches!(kd.attribute("use"), None | Some("signing")) {
            continue;
        }
        for c in kd
            .descendants()
            .filter(|n| is(*n, NS_DSIG, "X509Certificate"))
        {
            let b64: String = full_text(c)?
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if !b64.is_empty() && !certificates.contains(&b64) {
                certificates.push(b64);
            }
        }
    }
    let name_id_format = children(idp, NS_METADATA, "NameIDFormat")
        .next()
        .map(full_text)
        .transpose()?
        .map(|s| s.trim().to_string());
    let sign_authn_requests = matches!(
        idp.attribute("WantAuthnRequestsSigned"),
        Some("true") | Some("1")
    );
    let cfg = IdpConfig {
        entity_id,
        sso_url,
        certificates,
        name_id_format,
        clock_skew_secs: 120,
        allow_idp_initiated: false,
        require_encrypted_assertions: false,
        sign_authn_requests,
        allow_sha1: false,
        allow_rsa1_5_key_transport: false,
    };
    cfg.validate()?;
    Ok(cfg)
}

/// Our SP metadata (Metadata §2.4.4): AuthnRequestsSigned, WantAssertionsSigned="true",
/// signing and encryption KeyDescriptors from the SP key, the HTTP-POST ACS.
pub fn sp_metadata(sp: &SpConfig) -> String {
    let keys = match sp.key {
        Some(k) => {
            let cert = k.cert_base64_der();
            ["signing", "encryption"]
                .iter()
                .map(|u| {
                    format!(
                        "<md:KeyDescriptor use=\"{u}\"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{cert}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>"
                    )
                })
                .collect::<String>()
        }
        None => String::new(),
    };
    format!(
        concat!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>",
            "<md:EntityDescriptor xmlns:md=\"{md}\" xmlns:ds=\"{ds}\" entityID=\"{eid}\">",
            "<md:SPSSODescriptor AuthnRequestsSigned=\"{signed}\" WantAssertionsSigned=\"true\" ",
            "protocolSupportEnumeration=\"urn:oasis:names:tc:SAML:2.0:protocol\">",
            "{keys}",
            "<md:NameIDFormat>{nif}</md:NameIDFormat>",
            "<md:AssertionConsumerService Binding=\"{post}\" Location=\"{acs}\" index=\"0\" isDefault=\"true\"/>",
            "</md:SPSSODescriptor></md:EntityDescriptor>"
        ),
        md = NS_METADATA,
        ds = NS_DSIG,
        eid = xml_escape(sp.entity_id),
        signed = sp.key.is_some(),
        keys = keys,
        nif = NAMEID_EMAIL,
        post = BINDING_POST,
        acs = xml_escape(sp.acs_url),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saml::sp_key::tests::test_sp_key;

    fn cert_body(pem: &str) -> String {
        pem.lines().filter(|l| !l.starts_with("-----")).collect()
    }

    fn idp_metadata(extra_root: &str) -> String {
        let signing = cert_body(include_str!("testdata/idp.crt.pem"));
        let enc = cert_body(include_str!("testdata/other.crt.pem"));
        format!(
            r#"<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="https://idp.example.test/{extra_root}">
  <md:IDPSSODescriptor WantAuthnRequestsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    <md:KeyDescriptor use="encryption"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>{enc}</ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:KeyDescriptor use="signing"><ds:KeyInfo><ds:X509Data><ds:X509Certificate>
      {signing}
    </ds:X509Certificate></ds:X509Data></ds:KeyInfo></md:KeyDescriptor>
    <md:NameIDFormat>urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress</md:NameIDFormat>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST" Location="https://idp.example.test/post"/>
    <md:SingleSignOnService Binding="urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect" Location="https://idp.example.test/redirect"/>
  </md:IDPSSODescriptor>
</md:EntityDescriptor>"#
        )
    }

    #[test]
    fn imports_idp_metadata() {
        let c = parse_idp_metadata(&idp_metadata("")).unwrap();
        assert_eq!(c.entity_id, "https://idp.example.test/");
        assert_eq!(c.sso_url, "https://idp.example.test/redirect");
        assert_eq!(
            c.certificates,
            vec![cert_body(include_str!("testdata/idp.crt.pem"))]
        );
        assert_eq!(c.name_id_format.as_deref(), Some(NAMEID_EMAIL));
        assert!(c.sign_authn_requests);
        assert!(!c.allow_idp_initiated);
    }

    #[test]
    fn imports_first_idp_of_entities_descriptor() {
        let inner = idp_metadata("two");
        let xml = format!(
            r#"<md:EntitiesDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata"><md:EntityDescriptor entityID="sp-only"><md:SPSSODescriptor protocolSupportEnumeration="x"/></md:EntityDescriptor>{inner}</md:EntitiesDescriptor>"#
        );
        let c = parse_idp_metadata(&xml).unwrap();
        assert_eq!(c.entity_id, "https://idp.example.test/two");
    }

    #[test]
    fn metadata_without_signing_certificate_is_refused() {
        let xml = idp_metadata("").replace("use=\"signing\"", "use=\"encryption\"");
        assert!(matches!(
            parse_idp_metadata(&xml),
            Err(SamlError::Config(_))
        ));
    }

    #[test]
    fn metadata_with_doctype_is_refused() {
        let xml = format!(
            "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]>{}",
            idp_metadata("")
        );
        assert_eq!(parse_idp_metadata(&xml), Err(SamlError::Doctype));
    }

    #[test]
    fn sp_metadata_has_keys_and_acs() {
        let key = test_sp_key();
        let sp = SpConfig {
            entity_id: "https://sp.example.test/saml/1/metadata",
            acs_url: "https://sp.example.test/saml/1/acs?a=1&b=2",
            key: Some(&key),
        };
        let xml = sp_metadata(&sp);
        let doc = xml_sec::Document::parse(&xml).unwrap();
        let root = doc.root_element();
        assert_eq!(root.attribute("entityID"), Some(sp.entity_id));
        let spsso = child(root, NS_METADATA, "SPSSODescriptor").unwrap();
        assert_eq!(spsso.attribute("WantAssertionsSigned"), Some("true"));
        assert_eq!(spsso.attribute("AuthnRequestsSigned"), Some("true"));
        let uses: Vec<_> = children(spsso, NS_METADATA, "KeyDescriptor")
            .map(|k| k.attribute("use").unwrap())
            .collect();
        assert_eq!(uses, ["signing", "encryption"]);
        let acs = child(spsso, NS_METADATA, "AssertionConsumerService").unwrap();
        assert_eq!(acs.attribute("Location"), Some(sp.acs_url));
        assert_eq!(acs.attribute("Binding"), Some(BINDING_POST));
        assert!(xml.contains(&key.cert_base64_der()));
        let none = sp_metadata(&SpConfig { key: None, ..sp });
        assert!(!none.contains("KeyDescriptor") && none.contains("AuthnRequestsSigned=\"false\""));
    }
}
