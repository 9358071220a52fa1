//! SAML 2.0 service provider: pure protocol rules (no I/O except loading the SP key).
//!
//! XML is parsed and signatures are verified with the pure-Rust `xml-sec` crate; every
//! field that is used is read from the same parsed tree whose elements the signature
//! verification proved covered (target evidence), so signature wrapping cannot swap them.

pub mod authn_request;
pub mod config;
pub mod error;
pub mod metadata;
pub mod response;
pub mod sp_key;

#[cfg(test)]
mod corpus_tests;

pub use config::{IdpConfig, SpConfig};
pub use error::SamlError;
pub use sp_key::SpKey;

pub(crate) const NS_ASSERTION: &str = "urn:oasis:names:tc:SAML:2.0:assertion";
pub(crate) const NS_PROTOCOL: &str = "urn:oasis:names:tc:SAML:2.0:protocol";
pub(crate) const NS_METADATA: &str = "urn:oasis:names:tc:SAML:2.0:metadata";
pub(crate) const NS_DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
pub(crate) const BINDING_REDIRECT: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-Redirect";
pub(crate) const BINDING_POST: &str = "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST";
pub(crate) const NAMEID_EMAIL: &str = "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress";

/// DOCTYPE (and so entity declarations) is refused before any parser sees the input:
/// no XXE, no entity expansion (SAML Bindings §3.5.5: no DTD in protocol messages).
pub(crate) fn refuse_doctype(xml: &str) -> Result<(), SamlError> {
    let upper = xml.to_ascii_uppercase();
    if upper.contains("<!DOCTYPE") || upper.contains("<!ENTITY") {
        return Err(SamlError::Doctype);
    }
    Ok(())
}

/// The whole character content of an element, concatenating every text node and
/// skipping comments and processing instructions (a comment cannot truncate a NameID:
/// CVE-2017-11427). Child elements are refused: the value must be simple content.
pub(crate) fn full_text(node: xml_sec::Node<'_, '_>) -> Result<String, SamlError> {
    let mut out = String::new();
    for d in node.descendants().skip(1) {
        if d.is_element() {
            return Err(SamlError::Malformed(format!(
                "<{}> must contain text only",
                node.tag_name().name()
            )));
        }
        if d.is_text() {
            out.push_str(d.text().unwrap_or_default());
        }
    }
    Ok(out)
}

/// Escapes text for an XML attribute value or element content.
pub(crate) fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            _ => out.push(c),
        }
    }
    out
}

pub(crate) fn is(node: xml_sec::Node<'_, '_>, ns: &str, name: &str) -> bool {
    node.is_element() && node.tag_name().namespace() == Some(ns) && node.tag_name().name() == name
}

pub(crate) fn child<'a, 'i>(
    node: xml_sec::Node<'a, 'i>,
    ns: &str,
    name: &str,
) -> Option<xml_sec::Node<'a, 'i>> {
    node.children().find(|c| is(*c, ns, name))
}

pub(crate) fn children<'a, 'i>(
    node: xml_sec::Node<'a, 'i>,
    ns: &'a str,
    name: &'a str,
) -> impl Iterator<Item = xml_sec::Node<'a, 'i>> + 'a
where
    'i: 'a,
{
    node.children().filter(move |c| is(*c, ns, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doctype_and_entities_are_refused() {
        assert_eq!(refuse_doctype("<!doctype x><x/>"), Err(SamlError::Doctype));
        assert_eq!(
            refuse_doctype("<x><!ENTITY a 'b'></x>"),
            Err(SamlError::Doctype)
        );
        assert!(refuse_doctype("<x>doctype</x>").is_ok());
    }

    #[test]
    fn full_text_skips_comments() {
        let doc = xml_sec::Document::parse("<a>user@evil.com<!---->.example.com</a>").unwrap();
        assert_eq!(
            full_text(doc.root_element()).unwrap(),
            "user@evil.com.example.com"
        );
        let doc = xml_sec::Document::parse("<a>x<b/>y</a>").unwrap();
        assert!(full_text(doc.root_element()).is_err());
    }

    #[test]
    fn escape() {
        assert_eq!(xml_escape(r#"a<&>"'"#), "a&lt;&amp;&gt;&quot;&apos;");
    }
}
