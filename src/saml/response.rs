//! Validation of a SAML Response received at the ACS (HTTP-POST binding, Bindings §3.5;
//! Web Browser SSO profile, Profiles §4.1.4.2–3). Every rule has its own unit test below.
//!
//! Replay memory ("each assertion ID used once") and the pending-request lookup are the
//! caller's: it gets `assertion_id` and `not_on_or_after` back.

use super::{
    IdpConfig, NS_ASSERTION, NS_DSIG, NS_PROTOCOL, SamlError, SpConfig, child, children, full_text,
    is, refuse_doctype,
};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, Duration, Utc};
use std::collections::{BTreeMap, BTreeSet};
use xml_sec::policy::{DecryptionPolicy, SignatureConstraints, VerificationPolicy};
use xml_sec::xmldsig::{
    CallerTrustedSignatureKey, DigestAlgorithm, DsigStatus, KeyTrustEvidence, SignatureAlgorithm,
    SignatureRequirement, VerificationKey, VerificationRequest, VerifyContext,
};
use xml_sec::xmlenc::{DataEncryptionAlgorithm, KeyTransportAlgorithm, OaepDigestAlgorithm};
use xml_sec::{NodeId, NodeIdentity, XmlDocument};

pub const MAX_RESPONSE_BYTES: usize = 256 * 1024;

const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const EXC_C14N: &str = "http://www.w3.org/2001/10/xml-exc-c14n#";
const BEARER: &str = "urn:oasis:names:tc:SAML:2.0:cm:bearer";
const SUCCESS: &str = "urn:oasis:names:tc:SAML:2.0:status:Success";

/// What the ACS expects: the answer to one of its own requests (looked up by RelayState),
/// or an IdP-initiated (unsolicited) response.
#[derive(Clone, Copy, Debug)]
pub enum Expect<'a> {
    InResponseTo(&'a str),
    Unsolicited,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Assertion {
    pub response_id: String,
    pub assertion_id: String,
    pub issuer: String,
    pub in_response_to: Option<String>,
    pub name_id: String,
    pub name_id_format: Option<String>,
    pub session_index: Option<String>,
    /// By Name; the FriendlyName is inserted too when it differs.
    pub attributes: BTreeMap<String, Vec<String>>,
    pub authn_instant: Option<DateTime<Utc>>,
    /// Remember `assertion_id` until this instant (clock skew already added): after it the
    /// assertion is refused anyway.
    pub not_on_or_after: DateTime<Utc>,
}

/// Validates a base64 `SAMLResponse` form value.
pub fn validate(
    saml_response_b64: &str,
    idp: &IdpConfig,
    sp: &SpConfig,
    expect: Expect,
    now: DateTime<Utc>,
) -> Result<Assertion, SamlError> {
    if saml_response_b64.len() > MAX_RESPONSE_BYTES / 3 * 4 + 4096 {
        return Err(SamlError::TooLarge);
    }
    let compact: String = saml_response_b64
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let bytes = STANDARD
        .decode(compact)
        .map_err(|e| SamlError::Malformed(format!("base64: {e}")))?;
    if bytes.len() > MAX_RESPONSE_BYTES {
        return Err(SamlError::TooLarge);
    }
    let xml = String::from_utf8(bytes).map_err(|_| SamlError::Malformed("not UTF-8".into()))?;
    validate_xml(&xml, idp, sp, expect, now)
}

fn verification_policy(idp: &IdpConfig) -> VerificationPolicy {
    let mut sigs = BTreeSet::from([
        SignatureAlgorithm::RsaSha256,
        SignatureAlgorithm::RsaSha384,
        SignatureAlgorithm::RsaSha512,
        SignatureAlgorithm::EcdsaSha256,
        SignatureAlgorithm::EcdsaSha384,
        SignatureAlgorithm::EcdsaSha512,
    ]);
    let mut digests = BTreeSet::from([
        DigestAlgorithm::Sha256,
        DigestAlgorithm::Sha384,
        DigestAlgorithm::Sha512,
    ]);
    let mut p = VerificationPolicy {
        signature_constraints: SignatureConstraints::Saml,
        ..VerificationPolicy::default()
    };
    if idp.allow_sha1 {
        sigs.insert(SignatureAlgorithm::RsaSha1);
        digests.insert(DigestAlgorithm::Sha1);
        p.key_trust
            .allowed_legacy_signature_algorithms
            .insert(SignatureAlgorithm::RsaSha1);
        // Legacy IdP certificates are often 1024-bit RSA.
        p.key_trust.rsa_keys.minimum_modulus_bits = 1024;
    }
    p.signature_algorithms = Some(sigs);
    p.digest_algorithms = Some(digests);
    p.transforms.allowed_algorithms = Some([ENVELOPED, EXC_C14N].map(str::to_owned).into());
    p.uris.references = xml_sec::xmldsig::UriTypeSet::new(false, true, false);
    p
}

fn decryption_policy(idp: &IdpConfig) -> DecryptionPolicy {
    let mut transport = BTreeSet::from([
        KeyTransportAlgorithm::RsaOaepMgf1p,
        KeyTransportAlgorithm::RsaOaep11,
    ]);
    if idp.allow_rsa1_5_key_transport {
        transport.insert(KeyTransportAlgorithm::RsaPkcs1v15);
    }
    let mut p = DecryptionPolicy {
        data_algorithms: Some(BTreeSet::from([
            DataEncryptionAlgorithm::Aes128Cbc,
            DataEncryptionAlgorithm::Aes256Cbc,
            DataEncryptionAlgorithm::Aes128Gcm,
            DataEncryptionAlgorithm::Aes256Gcm,
        ])),
        key_transport_algorithms: Some(transport),
        oaep_digests: Some(BTreeSet::from([
            OaepDigestAlgorithm::Sha1,
            OaepDigestAlgorithm::Sha256,
            OaepDigestAlgorithm::Sha384,
            OaepDigestAlgorithm::Sha512,
        ])),
        ..DecryptionPolicy::default()
    };
    if idp.allow_rsa1_5_key_transport {
        // Legacy deployments also reuse old 1024-bit SP keys.
        p.rsa_keys.minimum_modulus_bits = 1024;
    }
    p
}

fn malformed(e: impl std::fmt::Display) -> SamlError {
    SamlError::Malformed(e.to_string())
}

/// Where the (single) assertion and the signatures are, by document order.
struct Layout {
    response_signature: Option<usize>,
    assertion: Option<(usize, String)>,
    assertion_signature: Option<usize>,
    encrypted: bool,
}

fn order(n: xml_sec::Node<'_, '_>) -> usize {
    // NodeId wraps the preorder arena index (xml-sec `DocumentView::document_order`) and
    // orders like it; only `From<u32>` is public, so find the index by bisection.
    let (mut lo, mut hi) = (0u32, u32::MAX);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if NodeId::from(mid) < n.id() {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo as usize
}

fn node_at<'a>(v: xml_sec::DocumentView<'a>, pos: usize) -> Option<xml_sec::Node<'a, 'a>> {
    let id = NodeId::from(u32::try_from(pos).ok()?);
    v.document().get_node(id)
}

/// Core §3.2.2: root Response; one Assertion or EncryptedAssertion, a child of the Response
/// (or, once decrypted, of its EncryptedAssertion); signatures only as direct children of
/// the Response or of that Assertion (Core §5.4.1).
fn layout(v: xml_sec::DocumentView<'_>) -> Result<Layout, SamlError> {
    let root = v.document().root_element();
    if !is(root, NS_PROTOCOL, "Response") {
        return Err(malformed("root element is not samlp:Response"));
    }
    let all = |name: &'static str| {
        root.descendants()
            .filter(move |n| is(*n, NS_ASSERTION, name))
            .collect::<Vec<_>>()
    };
    let assertions = all("Assertion");
    let encrypted = all("EncryptedAssertion");
    let plain_in_encrypted = assertions.len() == 1
        && encrypted.len() == 1
        && assertions[0].parent() == Some(encrypted[0]);
    let distinct = assertions.len() + encrypted.len() - usize::from(plain_in_encrypted);
    if distinct == 0 {
        return Err(malformed("no Assertion"));
    }
    if distinct > 1 {
        return Err(SamlError::MultipleAssertions);
    }
    if let Some(e) = encrypted.first()
        && e.parent() != Some(root)
    {
        return Err(malformed(
            "EncryptedAssertion is not a child of the Response",
        ));
    }
    let assertion = match assertions.first() {
        Some(a) => {
            let parent_ok = a.parent() == Some(root) || plain_in_encrypted;
            if !parent_ok {
                return Err(malformed("Assertion is not a child of the Response"));
            }
            let id = a
                .attribute("ID")
                .ok_or_else(|| malformed("Assertion without ID"))?;
            Some((*a, id.to_string()))
        }
        None => None,
    };
    let mut response_signature = None;
    let mut assertion_signature = None;
    for s in root.descendants().filter(|n| is(*n, NS_DSIG, "Signature")) {
        let parent = s.parent();
        if parent == Some(root) && response_signature.is_none() {
            response_signature = Some(order(s));
        } else if assertion.as_ref().is_some_and(|(a, _)| parent == Some(*a))
            && assertion_signature.is_none()
        {
            assertion_signature = Some(order(s));
        } else {
            return Err(SamlError::Signature(
                "a Signature is outside the Response and Assertion headers".into(),
            ));
        }
    }
    Ok(Layout {
        response_signature,
        assertion: assertion.map(|(a, id)| (order(a), id)),
        assertion_signature,
        encrypted: !encrypted.is_empty() && !plain_in_encrypted,
    })
}

/// SignedInfo must use exclusive c14n, an accepted SignatureMethod, one Reference to the
/// enclosing element with only enveloped + exclusive c14n transforms and an accepted
/// DigestMethod (Core §5.4.1–5.4.4; SHA-1 only when the provider opts in).
fn check_signed_info(
    sig: xml_sec::Node<'_, '_>,
    target_id: &str,
    idp: &IdpConfig,
) -> Result<SignatureAlgorithm, SamlError> {
    let si = child(sig, NS_DSIG, "SignedInfo").ok_or_else(|| malformed("no SignedInfo"))?;
    let alg = |n: Option<xml_sec::Node<'_, '_>>, what: &str| {
        n.and_then(|n| n.attribute("Algorithm"))
            .map(str::to_owned)
            .ok_or_else(|| malformed(format!("no {what}")))
    };
    let c14n = alg(
        child(si, NS_DSIG, "CanonicalizationMethod"),
        "CanonicalizationMethod",
    )?;
    if c14n != EXC_C14N {
        return Err(SamlError::Algorithm(format!("canonicalization {c14n}")));
    }
    let sm = alg(child(si, NS_DSIG, "SignatureMethod"), "SignatureMethod")?;
    let mut ok_sigs = vec![
        SignatureAlgorithm::RsaSha256,
        SignatureAlgorithm::RsaSha384,
        SignatureAlgorithm::RsaSha512,
        SignatureAlgorithm::EcdsaSha256,
        SignatureAlgorithm::EcdsaSha384,
        SignatureAlgorithm::EcdsaSha512,
    ];
    let mut ok_digests = vec![
        DigestAlgorithm::Sha256,
        DigestAlgorithm::Sha384,
        DigestAlgorithm::Sha512,
    ];
    if idp.allow_sha1 {
        ok_sigs.push(SignatureAlgorithm::RsaSha1);
        ok_digests.push(DigestAlgorithm::Sha1);
    }
    let sig_alg = SignatureAlgorithm::from_uri(&sm)
        .filter(|a| ok_sigs.contains(a))
        .ok_or_else(|| SamlError::Algorithm(format!("signature method {sm}")))?;
    let refs: Vec<_> = children(si, NS_DSIG, "Reference").collect();
    if refs.len() != 1 {
        return Err(SamlError::Signature(
            "exactly one Reference is required".into(),
        ));
    }
    let r = refs[0];
    if r.attribute("URI") != Some(&format!("#{target_id}")) {
        return Err(SamlError::Signature(
            "the Reference does not point at the signed element".into(),
        ));
    }
    if let Some(ts) = child(r, NS_DSIG, "Transforms") {
        for t in children(ts, NS_DSIG, "Transform") {
            let a = t.attribute("Algorithm").unwrap_or_default();
            if a != ENVELOPED && a != EXC_C14N {
                return Err(SamlError::Algorithm(format!("transform {a}")));
            }
        }
    }
    let dm = alg(child(r, NS_DSIG, "DigestMethod"), "DigestMethod")?;
    DigestAlgorithm::from_uri(&dm)
        .filter(|a| ok_digests.contains(a))
        .ok_or_else(|| SamlError::Algorithm(format!("digest method {dm}")))?;
    Ok(sig_alg)
}

/// Verifies the Signature at document position `sig_pos` with one of the configured
/// certificates, and proves with xml-sec's target evidence that it covers the element at
/// `target_pos` — the element whose content will be used (defeats XSW).
fn verify_signed_element(
    doc: &XmlDocument,
    sig_pos: usize,
    target_pos: usize,
    idp: &IdpConfig,
) -> Result<(), SamlError> {
    let policy = verification_policy(idp);
    // Identities of the signature and of the target, checked against the nodes we read.
    let (alg, target) = doc.with_view(|v| {
        let sig = node_at(v, sig_pos).ok_or_else(|| malformed("no signature"))?;
        let target_node = node_at(v, target_pos).ok_or_else(|| malformed("no target"))?;
        let id = target_node
            .attribute("ID")
            .ok_or_else(|| malformed("signed element without ID"))?;
        let alg = check_signed_info(sig, id, idp)?;
        let target = v
            .node_for_id(id, &[])
            .ok_or_else(|| SamlError::Signature(format!("ID {id} is missing or not unique")))?;
        if v.document_order(target).map_err(malformed)? != target_pos {
            return Err(SamlError::Signature(format!(
                "ID {id} names another element"
            )));
        }
        Ok::<_, SamlError>((alg, target))
    })?;
    let ctx = VerifyContext::new().policy(policy);
    let sig_id: NodeIdentity = ctx
        .signature_identities(doc)
        .map_err(|e| SamlError::Signature(e.to_string()))?
        .into_iter()
        .find(|s| doc.with_view(|v| v.document_order(*s).ok()) == Some(sig_pos))
        .ok_or_else(|| SamlError::Signature("signature not found".into()))?;
    let mut last = String::from("no configured certificate verifies the signature");
    for der in idp.certificate_ders() {
        let Ok(cert) = openssl::x509::X509::from_der(&der) else {
            continue;
        };
        let Some(spki) = cert
            .public_key()
            .ok()
            .and_then(|k| k.public_key_to_der().ok())
        else {
            continue;
        };
        let key = VerificationKey {
            algorithm: alg,
            public_key_bytes: spki,
            certificate_der: Some(der),
            name: None,
        };
        let keys = [CallerTrustedSignatureKey {
            signature: sig_id,
            key: &key,
        }];
        let targets = [target];
        let request = VerificationRequest {
            expected_targets: &targets,
            trusted_keys: &keys,
            signatures: SignatureRequirement::AtLeast(1),
            ..VerificationRequest::default()
        };
        let evidence = match ctx.verify_request(doc, &request) {
            Ok(e) => e,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let this_valid = evidence.signatures().iter().any(|s| {
            s.identity() == sig_id
                && s.result().as_ref().is_ok_and(|r| {
                    r.status == DsigStatus::Valid
                        && matches!(r.key_trust, KeyTrustEvidence::CallerTrusted)
                })
        });
        if !this_valid {
            if let Some(s) = evidence
                .signatures()
                .iter()
                .find(|s| s.identity() == sig_id)
            {
                last = match s.result() {
                    Ok(r) => format!("{:?}", r.status),
                    Err(e) => e.to_string(),
                };
            }
            continue;
        }
        let accepted = evidence.accepted(doc).unwrap_or(false)
            && evidence.covers_element(doc, target).unwrap_or(false);
        if accepted {
            return Ok(());
        }
        last = "the signature does not cover the element that is used".into();
    }
    Err(SamlError::Signature(last))
}

fn decrypt(doc: &mut XmlDocument, idp: &IdpConfig, sp: &SpConfig) -> Result<(), SamlError> {
    let key = sp.key.ok_or_else(|| {
        SamlError::Encryption("encrypted assertion but no SP key is configured".into())
    })?;
    let policy = decryption_policy(idp);
    let mut inventory = xml_sec::key_manager::KeyInventory::default();
    inventory
        .add_private_pem(
            "sp".into(),
            key.pkcs8_pem(),
            None,
            xml_sec::key_manager::KeyUsages::DECRYPT,
            &policy.resources,
        )
        .map_err(|e| SamlError::Encryption(e.to_string()))?;
    let resolver = inventory
        .decryption_resolver("sp", &policy)
        .map_err(|e| SamlError::Encryption(e.to_string()))?;
    xml_sec::xmlenc::DecryptContext::new(&*resolver)
        .policy(policy)
        .decrypt_owned_document(doc, None)
        .map_err(|e| SamlError::Encryption(e.to_string()))
}

fn time(s: Option<&str>, what: &str) -> Result<Option<DateTime<Utc>>, SamlError> {
    s.map(|s| {
        DateTime::parse_from_rfc3339(s.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| malformed(format!("{what}: not an xs:dateTime")))
    })
    .transpose()
}

/// Validates a decoded Response document.
pub fn validate_xml(
    xml: &str,
    idp: &IdpConfig,
    sp: &SpConfig,
    expect: Expect,
    now: DateTime<Utc>,
) -> Result<Assertion, SamlError> {
    if xml.len() > MAX_RESPONSE_BYTES {
        return Err(SamlError::TooLarge);
    }
    refuse_doctype(xml)?;
    if idp.certificates.is_empty() {
        return Err(SamlError::Config("no IdP certificate configured".into()));
    }
    let policy = verification_policy(idp);
    let mut doc = XmlDocument::parse_with_policy(xml, &policy).map_err(malformed)?;

    // Core §3.2.2.2: a non-Success status is reported as such (it needs no signature to
    // be refused).
    doc.with_view(|v| status(v.document().root_element()))?;

    let first = doc.with_view(layout)?;
    let mut response_signed = false;
    if let Some(sig) = first.response_signature {
        verify_signed_element(
            &doc,
            sig,
            doc.with_view(|v| order(v.document().root_element())),
            idp,
        )?;
        response_signed = true;
    }
    let layout = if first.encrypted {
        decrypt(&mut doc, idp, sp)?;
        let l = doc.with_view(layout)?;
        if l.assertion.is_none() {
            return Err(SamlError::Encryption(
                "decrypted content is not an Assertion".into(),
            ));
        }
        l
    } else {
        if idp.require_encrypted_assertions {
            return Err(SamlError::Encryption(
                "this provider requires encrypted assertions".into(),
            ));
        }
        first
    };
    let Some((assertion_pos, _)) = &layout.assertion else {
        return Err(malformed("no Assertion"));
    };
    let mut assertion_signed = false;
    if let Some(sig) = layout.assertion_signature {
        verify_signed_element(&doc, sig, *assertion_pos, idp)?;
        assertion_signed = true;
    }
    if !response_signed && !assertion_signed {
        return Err(SamlError::Signature(
            "neither the Response nor the Assertion is signed".into(),
        ));
    }
    doc.with_view(|v| {
        let a = node_at(v, *assertion_pos).ok_or_else(|| malformed("no Assertion"))?;
        read_and_check(
            v.document().root_element(),
            a,
            response_signed,
            idp,
            sp,
            expect,
            now,
        )
    })
}

fn status(root: xml_sec::Node<'_, '_>) -> Result<(), SamlError> {
    let st =
        child(root, NS_PROTOCOL, "Status").ok_or_else(|| SamlError::Status("no Status".into()))?;
    let code = child(st, NS_PROTOCOL, "StatusCode")
        .ok_or_else(|| SamlError::Status("no StatusCode".into()))?;
    let value = code.attribute("Value").unwrap_or_default();
    if value == SUCCESS {
        return Ok(());
    }
    let mut msg = value.to_string();
    if let Some(sub) = child(code, NS_PROTOCOL, "StatusCode").and_then(|c| c.attribute("Value")) {
        msg.push_str(&format!(" / {sub}"));
    }
    if let Some(m) = child(st, NS_PROTOCOL, "StatusMessage") {
        msg.push_str(&format!(": {}", full_text(m).unwrap_or_default()));
    }
    Err(SamlError::Status(msg))
}

fn issuer_matches(n: Option<xml_sec::Node<'_, '_>>, idp: &IdpConfig) -> Result<bool, SamlError> {
    let Some(n) = n else { return Ok(false) };
    // Core §2.2.5: an Issuer's Format, if any, must be the entity format.
    if let Some(f) = n.attribute("Format")
        && f != "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"
    {
        return Err(SamlError::Issuer(format!("issuer format {f}")));
    }
    Ok(full_text(n)?.trim() == idp.entity_id)
}

#[allow(clippy::too_many_arguments)]
fn read_and_check(
    resp: xml_sec::Node<'_, '_>,
    a: xml_sec::Node<'_, '_>,
    response_signed: bool,
    idp: &IdpConfig,
    sp: &SpConfig,
    expect: Expect,
    now: DateTime<Utc>,
) -> Result<Assertion, SamlError> {
    let skew = Duration::seconds(idp.clock_skew_secs);
    let response_id = resp
        .attribute("ID")
        .ok_or_else(|| malformed("Response without ID"))?
        .to_string();
    if resp.attribute("Version") != Some("2.0") || a.attribute("Version") != Some("2.0") {
        return Err(malformed("Version is not 2.0"));
    }
    // Bindings §3.5.5.2: Destination must be our ACS; required when the Response is signed.
    match resp.attribute("Destination") {
        Some(d) if d == sp.acs_url => {}
        Some(d) => return Err(SamlError::Destination(format!("{d} is not our ACS URL"))),
        None if response_signed => {
            return Err(SamlError::Destination(
                "signed Response without Destination".into(),
            ));
        }
        None => {}
    }
    // Core §3.2.2 / Profiles §4.1.4.2: issuers must be the IdP. The Response Issuer is
    // required here although the profile needs it only on signed Responses or with
    // encrypted assertions: every IdP we know sends it.
    if !issuer_matches(child(resp, NS_ASSERTION, "Issuer"), idp)? {
        return Err(SamlError::Issuer(
            "Response issuer is missing or not the IdP".into(),
        ));
    }
    if !issuer_matches(child(a, NS_ASSERTION, "Issuer"), idp)? {
        return Err(SamlError::Issuer("Assertion issuer is not the IdP".into()));
    }
    // Profiles §4.1.4.3: InResponseTo must name our outstanding request; unsolicited
    // responses only where the provider allows IdP-initiated SSO.
    let irt = resp.attribute("InResponseTo");
    let expected = match expect {
        Expect::InResponseTo(x) => {
            if irt != Some(x) {
                return Err(SamlError::InResponseTo(
                    "the Response does not answer our request".into(),
                ));
            }
            Some(x)
        }
        Expect::Unsolicited => {
            if !idp.allow_idp_initiated {
                return Err(SamlError::Unsolicited);
            }
            if irt.is_some() {
                return Err(SamlError::InResponseTo(
                    "an unsolicited Response must not have InResponseTo".into(),
                ));
            }
            None
        }
    };
    let assertion_id = a
        .attribute("ID")
        .ok_or_else(|| malformed("Assertion without ID"))?
        .to_string();

    // Subject and NameID (Core §2.4, §2.2.3).
    let subject =
        child(a, NS_ASSERTION, "Subject").ok_or_else(|| malformed("Assertion without Subject"))?;
    let name_id_node = child(subject, NS_ASSERTION, "NameID")
        .ok_or_else(|| malformed("Subject without NameID"))?;
    let name_id = full_text(name_id_node)?.trim().to_string();
    if name_id.is_empty() {
        return Err(malformed("empty NameID"));
    }
    let name_id_format = name_id_node.attribute("Format").map(str::to_owned);
    // Core §2.2.2: a NameID qualified for another SP is not ours to use.
    if let Some(q) = name_id_node.attribute("SPNameQualifier")
        && q != sp.entity_id
    {
        return Err(SamlError::Audience(format!("NameID is qualified for {q}")));
    }

    // Bearer SubjectConfirmation (Profiles §4.1.4.2–3): Recipient = ACS, NotOnOrAfter in
    // the future, InResponseTo consistent with the request.
    let mut scd_limit = None;
    let mut first_err = None;
    let bearers: Vec<_> = children(subject, NS_ASSERTION, "SubjectConfirmation")
        .filter(|c| c.attribute("Method") == Some(BEARER))
        .collect();
    if bearers.is_empty() {
        return Err(SamlError::SubjectConfirmation(
            "no bearer SubjectConfirmation".into(),
        ));
    }
    for sc in bearers {
        match check_scd(sc, sp, expected, now, skew) {
            Ok(t) => {
                scd_limit = Some(t);
                break;
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let Some(scd_limit) = scd_limit else {
        return Err(first_err.unwrap_or_else(|| {
            SamlError::SubjectConfirmation("no valid bearer confirmation".into())
        }));
    };

    // Conditions (Core §2.5.1): time window within skew; our entity ID in every
    // AudienceRestriction, and at least one (Profiles §4.1.4.2).
    let mut limit = scd_limit;
    let conditions = child(a, NS_ASSERTION, "Conditions")
        .ok_or_else(|| SamlError::Audience("no Conditions/AudienceRestriction".into()))?;
    if let Some(nb) = time(conditions.attribute("NotBefore"), "NotBefore")?
        && now + skew < nb
    {
        return Err(SamlError::Timing(
            "assertion not yet valid (NotBefore)".into(),
        ));
    }
    if let Some(na) = time(conditions.attribute("NotOnOrAfter"), "NotOnOrAfter")? {
        if now - skew >= na {
            return Err(SamlError::Timing("assertion expired (NotOnOrAfter)".into()));
        }
        limit = limit.min(na);
    }
    let restrictions: Vec<_> = children(conditions, NS_ASSERTION, "AudienceRestriction").collect();
    if restrictions.is_empty() {
        return Err(SamlError::Audience("no AudienceRestriction".into()));
    }
    for r in restrictions {
        let mut found = false;
        for au in children(r, NS_ASSERTION, "Audience") {
            if full_text(au)?.trim() == sp.entity_id {
                found = true;
            }
        }
        if !found {
            return Err(SamlError::Audience(
                "our entity ID is not an audience".into(),
            ));
        }
    }

    // AuthnStatement (Profiles §4.1.4.2: at least one).
    let authn =
        child(a, NS_ASSERTION, "AuthnStatement").ok_or_else(|| malformed("no AuthnStatement"))?;
    let authn_instant = time(authn.attribute("AuthnInstant"), "AuthnInstant")?;
    if let Some(end) = time(
        authn.attribute("SessionNotOnOrAfter"),
        "SessionNotOnOrAfter",
    )? && now - skew >= end
    {
        return Err(SamlError::Timing(
            "IdP session ended (SessionNotOnOrAfter)".into(),
        ));
    }
    let session_index = authn.attribute("SessionIndex").map(str::to_owned);

    let mut attributes: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for st in children(a, NS_ASSERTION, "AttributeStatement") {
        for at in children(st, NS_ASSERTION, "Attribute") {
            let Some(name) = at.attribute("Name") else {
                continue;
            };
            // Two Attribute elements with one Name make the value ambiguous.
            if !seen.insert(name) {
                return Err(malformed(format!("attribute {name} appears twice")));
            }
            let values: Vec<String> = children(at, NS_ASSERTION, "AttributeValue")
                .map(|v| {
                    v.descendants()
                        .filter(|d| d.is_text())
                        .filter_map(|d| d.text())
                        .collect::<String>()
                        .trim()
                        .to_string()
                })
                .collect();
            attributes
                .entry(name.to_string())
                .or_default()
                .extend(values.iter().cloned());
            if let Some(f) = at.attribute("FriendlyName")
                && f != name
            {
                attributes.entry(f.to_string()).or_default().extend(values);
            }
        }
    }
    Ok(Assertion {
        response_id,
        assertion_id,
        issuer: idp.entity_id.clone(),
        in_response_to: irt.map(str::to_owned),
        name_id,
        name_id_format,
        session_index,
        attributes,
        authn_instant,
        not_on_or_after: limit + skew,
    })
}

fn check_scd(
    sc: xml_sec::Node<'_, '_>,
    sp: &SpConfig,
    expected: Option<&str>,
    now: DateTime<Utc>,
    skew: Duration,
) -> Result<DateTime<Utc>, SamlError> {
    let scd = child(sc, NS_ASSERTION, "SubjectConfirmationData")
        .ok_or_else(|| SamlError::SubjectConfirmation("bearer confirmation without data".into()))?;
    match scd.attribute("Recipient") {
        Some(r) if r == sp.acs_url => {}
        Some(r) => return Err(SamlError::Recipient(format!("{r} is not our ACS URL"))),
        None => return Err(SamlError::Recipient("no Recipient".into())),
    }
    let na = time(scd.attribute("NotOnOrAfter"), "NotOnOrAfter")?
        .ok_or_else(|| SamlError::SubjectConfirmation("no NotOnOrAfter".into()))?;
    if now - skew >= na {
        return Err(SamlError::Timing("subject confirmation expired".into()));
    }
    if let Some(nb) = time(scd.attribute("NotBefore"), "NotBefore")?
        && now + skew < nb
    {
        return Err(SamlError::Timing(
            "subject confirmation not yet valid".into(),
        ));
    }
    match (scd.attribute("InResponseTo"), expected) {
        (Some(got), Some(want)) if got != want => Err(SamlError::InResponseTo(
            "subject confirmation answers another request".into(),
        )),
        (Some(_), None) => Err(SamlError::InResponseTo(
            "unsolicited assertion must not have InResponseTo".into(),
        )),
        // Profiles §4.1.4.2: in response to an AuthnRequest, it MUST match the request.
        (None, Some(_)) => Err(SamlError::InResponseTo(
            "subject confirmation does not name the request".into(),
        )),
        _ => Ok(na),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::saml::sp_key::tests::test_sp_key;
    use xml_sec::xmldsig::{
        RsaSigningKey, SignContext, SignatureTemplateSelection, X509CertificateKeyInfoWriter,
    };

    pub const IDP_KEY: &str = include_str!("testdata/idp.key.pem");
    pub const IDP_CERT: &str = include_str!("testdata/idp.crt.pem");
    const OTHER_KEY: &str = include_str!("testdata/other.key.pem");
    const OTHER_CERT: &str = include_str!("testdata/other.crt.pem");
    pub const IDP: &str = "https://idp.example.test";
    pub const SP: &str = "https://sp.example.test/saml/p1/metadata";
    pub const ACS: &str = "https://sp.example.test/saml/p1/acs";
    pub const REQ: &str = "_req-1";
    const RSA256: &str = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256";
    const SHA256: &str = "http://www.w3.org/2001/04/xmlenc#sha256";

    pub fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2030-01-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn t(secs: i64) -> String {
        (now() + Duration::seconds(secs)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    pub fn idp_config() -> IdpConfig {
        IdpConfig {
            entity_id: IDP.into(),
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

    /// The knobs of one test response; `Default` is a valid SP-initiated response whose
    /// Response is signed.
    #[derive(Clone)]
    pub struct R {
        pub destination: Option<String>,
        pub irt: Option<String>,
        pub response_issuer: Option<String>,
        pub assertion_issuer: String,
        pub status: String,
        pub name_id: String,
        pub method: String,
        pub recipient: String,
        pub scd_noa: String,
        pub scd_irt: Option<String>,
        pub audience: String,
        pub not_before: String,
        pub not_on_or_after: String,
        pub sign_response: bool,
        pub sign_assertion: bool,
        pub sig_alg: String,
        pub digest: String,
        pub key: &'static str,
        pub cert: &'static str,
    }

    impl Default for R {
        fn default() -> Self {
            R {
                destination: Some(ACS.into()),
                irt: Some(REQ.into()),
                response_issuer: Some(IDP.into()),
                assertion_issuer: IDP.into(),
                status: SUCCESS.into(),
                name_id: "alice@example.test".into(),
                method: BEARER.into(),
                recipient: ACS.into(),
                scd_noa: t(300),
                scd_irt: Some(REQ.into()),
                audience: SP.into(),
                not_before: t(-60),
                not_on_or_after: t(300),
                sign_response: true,
                sign_assertion: false,
                sig_alg: RSA256.into(),
                digest: SHA256.into(),
                key: IDP_KEY,
                cert: IDP_CERT,
            }
        }
    }

    fn sig_template(r: &R, id: &str) -> String {
        format!(
            concat!(
                "<ds:Signature xmlns:ds=\"http://www.w3.org/2000/09/xmldsig#\"><ds:SignedInfo>",
                "<ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
                "<ds:SignatureMethod Algorithm=\"{}\"/><ds:Reference URI=\"#{}\"><ds:Transforms>",
                "<ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>",
                "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/></ds:Transforms>",
                "<ds:DigestMethod Algorithm=\"{}\"/><ds:DigestValue/></ds:Reference></ds:SignedInfo>",
                "<ds:SignatureValue/><ds:KeyInfo/></ds:Signature>"
            ),
            r.sig_alg, id, r.digest
        )
    }

    pub fn assertion_xml(r: &R, id: &str) -> String {
        let sig = if r.sign_assertion {
            sig_template(r, id)
        } else {
            String::new()
        };
        let scd_irt = r
            .scd_irt
            .as_ref()
            .map(|x| format!(" InResponseTo=\"{x}\""))
            .unwrap_or_default();
        format!(
            concat!(
                "<saml:Assertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\" ID=\"{id}\" Version=\"2.0\" IssueInstant=\"{now}\">",
                "<saml:Issuer>{ai}</saml:Issuer>{sig}",
                "<saml:Subject><saml:NameID Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\">{nid}</saml:NameID>",
                "<saml:SubjectConfirmation Method=\"{method}\"><saml:SubjectConfirmationData NotOnOrAfter=\"{scdnoa}\" Recipient=\"{rcpt}\"{scdirt}/></saml:SubjectConfirmation></saml:Subject>",
                "<saml:Conditions NotBefore=\"{nb}\" NotOnOrAfter=\"{noa}\"><saml:AudienceRestriction><saml:Audience>{aud}</saml:Audience></saml:AudienceRestriction></saml:Conditions>",
                "<saml:AuthnStatement AuthnInstant=\"{now}\" SessionIndex=\"_s1\"><saml:AuthnContext><saml:AuthnContextClassRef>urn:oasis:names:tc:SAML:2.0:ac:classes:Password</saml:AuthnContextClassRef></saml:AuthnContext></saml:AuthnStatement>",
                "<saml:AttributeStatement><saml:Attribute Name=\"urn:oid:0.9.2342.19200300.100.1.3\" FriendlyName=\"mail\"><saml:AttributeValue>alice@example.test</saml:AttributeValue></saml:Attribute>",
                "<saml:Attribute Name=\"groups\"><saml:AttributeValue>admins</saml:AttributeValue><saml:AttributeValue>staff</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>",
                "</saml:Assertion>"
            ),
            id = id,
            now = t(0),
            ai = r.assertion_issuer,
            sig = sig,
            nid = r.name_id,
            method = r.method,
            scdnoa = r.scd_noa,
            rcpt = r.recipient,
            scdirt = scd_irt,
            nb = r.not_before,
            noa = r.not_on_or_after,
            aud = r.audience,
        )
    }

    /// Unsigned Response XML around `assertion` (with a Signature template when
    /// `r.sign_response`).
    pub fn response_around(r: &R, assertion: &str) -> String {
        let dest = r
            .destination
            .as_ref()
            .map(|d| format!(" Destination=\"{d}\""))
            .unwrap_or_default();
        let irt = r
            .irt
            .as_ref()
            .map(|x| format!(" InResponseTo=\"{x}\""))
            .unwrap_or_default();
        let issuer = r
            .response_issuer
            .as_ref()
            .map(|i| format!("<saml:Issuer xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">{i}</saml:Issuer>"))
            .unwrap_or_default();
        let sig = if r.sign_response {
            sig_template(r, "_resp-1")
        } else {
            String::new()
        };
        format!(
            concat!(
                "<samlp:Response xmlns:samlp=\"urn:oasis:names:tc:SAML:2.0:protocol\" ID=\"_resp-1\" Version=\"2.0\" IssueInstant=\"{now}\"{dest}{irt}>",
                "{issuer}{sig}<samlp:Status><samlp:StatusCode Value=\"{status}\"/></samlp:Status>{assertion}</samlp:Response>"
            ),
            now = t(0),
            dest = dest,
            irt = irt,
            issuer = issuer,
            sig = sig,
            status = r.status,
            assertion = assertion,
        )
    }

    pub fn sign(xml: &str, r: &R, start_id: &str) -> String {
        let key = RsaSigningKey::from_pkcs8_pem(r.key).unwrap();
        let writer = X509CertificateKeyInfoWriter::from_pem(r.cert).unwrap();
        // The test IdP may sign with SHA-1 (to test its refusal): an explicit allowlist.
        let policy = xml_sec::policy::SigningPolicy {
            signature_algorithms: SignatureAlgorithm::from_uri(&r.sig_alg)
                .map(|a| BTreeSet::from([a])),
            digest_algorithms: DigestAlgorithm::from_uri(&r.digest).map(|a| BTreeSet::from([a])),
            ..xml_sec::policy::SigningPolicy::default()
        };
        SignContext::new(&key)
            .policy(policy)
            .key_info_writer(&writer)
            .start_node_id(start_id)
            .signature_template_selection(SignatureTemplateSelection::FirstDescendant)
            .sign_template(xml)
            .unwrap()
    }

    /// A signed assertion element (when `r.sign_assertion`), as text.
    pub fn signed_assertion(r: &R, id: &str) -> String {
        let a = assertion_xml(r, id);
        if r.sign_assertion { sign(&a, r, id) } else { a }
    }

    pub fn build(r: &R) -> String {
        let mut xml = response_around(r, &signed_assertion(r, "_a-1"));
        if r.sign_response {
            xml = sign(&xml, r, "_resp-1");
        }
        xml
    }

    fn sp_config(key: Option<&SpKey>) -> SpConfig<'_> {
        SpConfig {
            entity_id: SP,
            acs_url: ACS,
            key,
        }
    }

    fn check_with(xml: &str, idp: &IdpConfig, expect: Expect) -> Result<Assertion, SamlError> {
        let key = test_sp_key();
        validate(
            &STANDARD.encode(xml),
            idp,
            &sp_config(Some(&key)),
            expect,
            now(),
        )
    }

    fn check(xml: &str) -> Result<Assertion, SamlError> {
        check_with(xml, &idp_config(), Expect::InResponseTo(REQ))
    }

    fn check_r(r: R) -> Result<Assertion, SamlError> {
        check(&build(&r))
    }

    use crate::saml::sp_key::SpKey;

    #[test]
    fn valid_signed_response_is_accepted() {
        let a = check_r(R::default()).unwrap();
        assert_eq!(a.name_id, "alice@example.test");
        assert_eq!(a.assertion_id, "_a-1");
        assert_eq!(a.response_id, "_resp-1");
        assert_eq!(a.in_response_to.as_deref(), Some(REQ));
        assert_eq!(a.session_index.as_deref(), Some("_s1"));
        assert_eq!(a.attributes["groups"], ["admins", "staff"]);
        assert_eq!(a.attributes["mail"], ["alice@example.test"]);
        assert_eq!(
            a.attributes["urn:oid:0.9.2342.19200300.100.1.3"],
            ["alice@example.test"]
        );
        assert_eq!(a.authn_instant, Some(now()));
        assert_eq!(a.not_on_or_after, now() + Duration::seconds(300 + 120));
    }

    #[test]
    fn valid_signed_assertion_is_accepted() {
        let r = R {
            sign_response: false,
            sign_assertion: true,
            ..R::default()
        };
        assert_eq!(check_r(r).unwrap().name_id, "alice@example.test");
        let both = R {
            sign_assertion: true,
            ..R::default()
        };
        check_r(both).unwrap();
    }

    #[test]
    fn unsigned_is_refused() {
        let r = R {
            sign_response: false,
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Signature(_))));
    }

    #[test]
    fn wrong_key_is_refused() {
        let r = R {
            key: OTHER_KEY,
            cert: OTHER_CERT,
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Signature(_))));
    }

    #[test]
    fn second_certificate_is_accepted_for_rollover() {
        let r = R {
            key: OTHER_KEY,
            cert: OTHER_CERT,
            ..R::default()
        };
        let mut idp = idp_config();
        idp.certificates.push(OTHER_CERT.into());
        check_with(&build(&r), &idp, Expect::InResponseTo(REQ)).unwrap();
    }

    #[test]
    fn provider_without_certificate_accepts_nothing() {
        let mut idp = idp_config();
        idp.certificates.clear();
        assert!(check_with(&build(&R::default()), &idp, Expect::InResponseTo(REQ)).is_err());
    }

    #[test]
    fn tampered_after_signing_is_refused() {
        let xml = build(&R::default()).replace(
            "alice@example.test</saml:NameID>",
            "mallory@example.test</saml:NameID>",
        );
        assert!(matches!(check(&xml), Err(SamlError::Signature(_))));
        let r = R {
            sign_response: false,
            sign_assertion: true,
            ..R::default()
        };
        let xml = build(&r).replace("admins", "root");
        assert!(matches!(check(&xml), Err(SamlError::Signature(_))));
    }

    #[test]
    fn sha1_is_refused_unless_allowed() {
        let r = R {
            sig_alg: "http://www.w3.org/2000/09/xmldsig#rsa-sha1".into(),
            digest: "http://www.w3.org/2000/09/xmldsig#sha1".into(),
            ..R::default()
        };
        let xml = build(&r);
        assert!(matches!(check(&xml), Err(SamlError::Algorithm(_))));
        let mut idp = idp_config();
        idp.allow_sha1 = true;
        check_with(&xml, &idp, Expect::InResponseTo(REQ)).unwrap();
        // A SHA-1 digest under a SHA-256 signature is refused too.
        let r = R {
            digest: "http://www.w3.org/2000/09/xmldsig#sha1".into(),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Algorithm(_))));
    }

    #[test]
    fn other_transforms_are_refused() {
        let xml = build(&R::default()).replacen(
            "<ds:Transform Algorithm=\"http://www.w3.org/2001/10/xml-exc-c14n#\"/>",
            "<ds:Transform Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/>",
            1,
        );
        assert!(matches!(check(&xml), Err(SamlError::Algorithm(_))));
    }

    #[test]
    fn destination_must_be_our_acs() {
        let r = R {
            destination: Some("https://evil.example/acs".into()),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Destination(_))));
        // Required on a signed Response (Bindings §3.5.5.2) ...
        let r = R {
            destination: None,
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Destination(_))));
        // ... optional when only the Assertion is signed.
        let r = R {
            destination: None,
            sign_response: false,
            sign_assertion: true,
            ..R::default()
        };
        check_r(r).unwrap();
    }

    #[test]
    fn issuers_must_be_the_idp() {
        let r = R {
            response_issuer: Some("https://evil.example".into()),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Issuer(_))));
        let r = R {
            assertion_issuer: "https://evil.example".into(),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Issuer(_))));
        let r = R {
            response_issuer: None,
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Issuer(_))));
    }

    #[test]
    fn non_success_status_is_named() {
        let r = R {
            status: "urn:oasis:names:tc:SAML:2.0:status:Responder".into(),
            ..R::default()
        };
        match check_r(r) {
            Err(SamlError::Status(s)) => assert!(s.contains("Responder"), "{s}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn audience_must_be_us() {
        let r = R {
            audience: "https://other-sp.example".into(),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Audience(_))));
    }

    #[test]
    fn name_id_for_another_sp_is_refused() {
        let r = R {
            name_id: "alice@example.test".into(),
            ..R::default()
        };
        let xml = response_around(
            &r,
            &assertion_xml(&r, "_a-1").replace(
                "<saml:NameID ",
                "<saml:NameID SPNameQualifier=\"https://other-sp.example\" ",
            ),
        );
        let xml = sign(&xml, &r, "_resp-1");
        assert!(matches!(check(&xml), Err(SamlError::Audience(_))));
        let ok = sign(
            &response_around(
                &r,
                &assertion_xml(&r, "_a-1").replace(
                    "<saml:NameID ",
                    &format!("<saml:NameID SPNameQualifier=\"{SP}\" "),
                ),
            ),
            &r,
            "_resp-1",
        );
        check(&ok).unwrap();
    }

    #[test]
    fn conditions_time_window_with_skew() {
        let r = R {
            not_before: t(121),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Timing(_))));
        let r = R {
            not_before: t(119),
            ..R::default()
        };
        check_r(r).unwrap();
        let r = R {
            not_on_or_after: t(-120),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Timing(_))));
        let r = R {
            not_on_or_after: t(-119),
            ..R::default()
        };
        check_r(r).unwrap();
    }

    #[test]
    fn subject_confirmation_rules() {
        let r = R {
            recipient: "https://evil.example/acs".into(),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Recipient(_))));
        let r = R {
            scd_noa: t(-121),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::Timing(_))));
        let r = R {
            method: "urn:oasis:names:tc:SAML:2.0:cm:holder-of-key".into(),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::SubjectConfirmation(_))));
        let r = R {
            scd_irt: Some("_other".into()),
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::InResponseTo(_))));
    }

    #[test]
    fn in_response_to_must_match_our_request() {
        let xml = build(&R::default());
        assert!(matches!(
            check_with(&xml, &idp_config(), Expect::InResponseTo("_someone-else")),
            Err(SamlError::InResponseTo(_))
        ));
        let r = R {
            irt: None,
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::InResponseTo(_))));
    }

    #[test]
    fn a_solicited_subject_confirmation_must_name_the_request() {
        // Only the Assertion is signed: the Response's InResponseTo is not, so the signed
        // SubjectConfirmationData must carry it (profiles §4.1.4.2).
        let r = R {
            scd_irt: None,
            sign_response: false,
            sign_assertion: true,
            ..R::default()
        };
        assert!(matches!(check_r(r), Err(SamlError::InResponseTo(_))));
    }

    #[test]
    fn unsolicited_needs_opt_in_and_no_in_response_to() {
        let r = R {
            irt: None,
            scd_irt: None,
            ..R::default()
        };
        let xml = build(&r);
        assert_eq!(
            check_with(&xml, &idp_config(), Expect::Unsolicited),
            Err(SamlError::Unsolicited)
        );
        let mut idp = idp_config();
        idp.allow_idp_initiated = true;
        let a = check_with(&xml, &idp, Expect::Unsolicited).unwrap();
        assert_eq!(a.in_response_to, None);
        // A solicited response cannot be replayed as unsolicited.
        let solicited = build(&R::default());
        assert!(matches!(
            check_with(&solicited, &idp, Expect::Unsolicited),
            Err(SamlError::InResponseTo(_))
        ));
        let r = R {
            irt: None,
            ..R::default()
        };
        assert!(matches!(
            check_with(&build(&r), &idp, Expect::Unsolicited),
            Err(SamlError::InResponseTo(_))
        ));
    }

    #[test]
    fn comment_in_name_id_cannot_truncate_it() {
        // CVE-2017-11427: exclusive c14n drops the comment, so the signature stays valid.
        let r = R {
            name_id: "user@evil.com<!---->.example.com".into(),
            ..R::default()
        };
        let a = check_r(r).unwrap();
        assert_eq!(a.name_id, "user@evil.com.example.com");
    }

    #[test]
    fn missing_name_id_is_refused() {
        let r = R {
            sign_response: false,
            ..R::default()
        };
        let a = assertion_xml(&r, "_a-1").replace(
            "<saml:NameID Format=\"urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress\">alice@example.test</saml:NameID>",
            "",
        );
        let r = R::default();
        let xml = sign(&response_around(&r, &a), &r, "_resp-1");
        assert!(matches!(check(&xml), Err(SamlError::Malformed(_))));
    }

    #[test]
    fn duplicated_attribute_names_are_refused() {
        let r = R {
            sign_response: false,
            ..R::default()
        };
        let a = assertion_xml(&r, "_a-1").replace(
            "</saml:AttributeStatement>",
            "<saml:Attribute Name=\"groups\"><saml:AttributeValue>root</saml:AttributeValue></saml:Attribute></saml:AttributeStatement>",
        );
        let r = R::default();
        let xml = sign(&response_around(&r, &a), &r, "_resp-1");
        assert!(matches!(check(&xml), Err(SamlError::Malformed(_))));
    }

    #[test]
    fn two_assertions_are_refused() {
        let r = R::default();
        let two = format!("{}{}", assertion_xml(&r, "_a-1"), assertion_xml(&r, "_a-2"));
        let xml = sign(&response_around(&r, &two), &r, "_resp-1");
        assert_eq!(check(&xml), Err(SamlError::MultipleAssertions));
    }

    #[test]
    fn doctype_and_billion_laughs_are_refused() {
        let xml = build(&R::default());
        let laughs = format!(
            "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\"><!ENTITY lol2 \"&lol;&lol;&lol;&lol;\">]>{}",
            xml.replace("alice@example.test<", "&lol2;<")
        );
        assert_eq!(check(&laughs), Err(SamlError::Doctype));
        let xxe = format!(
            "<!DOCTYPE r [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{}",
            xml
        );
        assert_eq!(check(&xxe), Err(SamlError::Doctype));
    }

    #[test]
    fn too_large_is_refused() {
        let big = "A".repeat(MAX_RESPONSE_BYTES / 3 * 4 + 8192);
        let key = test_sp_key();
        assert_eq!(
            validate(
                &big,
                &idp_config(),
                &sp_config(Some(&key)),
                Expect::Unsolicited,
                now()
            ),
            Err(SamlError::TooLarge)
        );
        let pad = format!("<!--{}-->", "x".repeat(MAX_RESPONSE_BYTES));
        let xml = build(&R::default()).replace("<samlp:Status>", &format!("{pad}<samlp:Status>"));
        assert_eq!(check(&xml), Err(SamlError::TooLarge));
        assert!(matches!(
            validate(
                "%%%",
                &idp_config(),
                &sp_config(None),
                Expect::Unsolicited,
                now()
            ),
            Err(SamlError::Malformed(_))
        ));
    }

    // ---- XML signature wrapping, after Somorovsky et al., "On Breaking SAML" (2012) ----

    fn strip_signature(xml: &str) -> String {
        let s = xml.find("<ds:Signature").unwrap();
        let e = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        format!("{}{}", &xml[..s], &xml[e..])
    }

    fn signature_of(xml: &str) -> String {
        let s = xml.find("<ds:Signature").unwrap();
        let e = xml.find("</ds:Signature>").unwrap() + "</ds:Signature>".len();
        xml[s..e].to_string()
    }

    fn evil_assertion(id: &str) -> String {
        let r = R {
            name_id: "attacker@evil.test".into(),
            ..R::default()
        };
        assertion_xml(&r, id)
    }

    fn with_object(signature: &str, inner: &str) -> String {
        signature.replace(
            "</ds:Signature>",
            &format!("<ds:Object>{inner}</ds:Object></ds:Signature>"),
        )
    }

    /// XSW1–2 wrap a signed Response; XSW3–8 a signed Assertion.
    fn xsw_variants() -> Vec<(&'static str, String)> {
        let signed_resp = build(&R::default());
        let resp_sig = signature_of(&signed_resp);
        let r = R {
            sign_response: false,
            ..R::default()
        };
        let evil_resp_unsigned =
            response_around(&r, &evil_assertion("_evil")).replace("_resp-1", "_evil-resp");
        let ar = R {
            sign_response: false,
            sign_assertion: true,
            ..R::default()
        };
        let orig = signed_assertion(&ar, "_a-1");
        let orig_sig = signature_of(&orig);
        let orig_unsigned = strip_signature(&orig);
        let wrap = |assertions: &str| response_around(&r, assertions);
        let evil_with_sig = |sig: &str| {
            evil_assertion("_a-1").replace("</saml:Issuer>", &format!("</saml:Issuer>{sig}"))
        };
        vec![
            (
                "XSW1",
                evil_resp_unsigned.replace(
                    "<samlp:Status>",
                    &format!("{}<samlp:Status>", with_object(&resp_sig, &signed_resp)),
                ),
            ),
            (
                "XSW2",
                evil_resp_unsigned.replace(
                    "<samlp:Status>",
                    &format!(
                        "{}{}<samlp:Status>",
                        strip_signature(&signed_resp),
                        resp_sig
                    ),
                ),
            ),
            (
                "XSW3",
                wrap(&format!("{}{}", evil_assertion("_evil"), orig)),
            ),
            (
                "XSW3-same-id",
                wrap(&format!("{}{}", evil_assertion("_a-1"), orig)),
            ),
            (
                "XSW4",
                wrap(
                    &evil_assertion("_evil")
                        .replace("</saml:Assertion>", &format!("{orig}</saml:Assertion>")),
                ),
            ),
            (
                "XSW5",
                wrap(&format!("{}{}", evil_with_sig(&orig_sig), orig_unsigned)),
            ),
            (
                "XSW6",
                wrap(&evil_with_sig(&with_object(&orig_sig, &orig_unsigned))),
            ),
            (
                "XSW7",
                response_around(&r, &evil_assertion("_evil")).replace(
                    "<samlp:Status>",
                    &format!("<samlp:Extensions>{orig}</samlp:Extensions><samlp:Status>"),
                ),
            ),
            (
                "XSW8",
                wrap(
                    &evil_with_sig(&with_object(&orig_sig, &orig_unsigned))
                        .replace("_a-1\"", "_evil\""),
                ),
            ),
        ]
    }

    #[test]
    fn signature_wrapping_xsw1_to_xsw8_is_refused() {
        for (name, xml) in xsw_variants() {
            let r = check(&xml);
            assert!(r.is_err(), "{name} accepted: {r:?}");
            assert!(!format!("{r:?}").contains("attacker"), "{name}");
        }
    }

    #[test]
    fn target_evidence_binds_the_signature_to_the_used_element() {
        // A valid Assertion signature does not authenticate the Response around it: asking
        // for the Response as target fails even though the signature itself verifies.
        let r = R {
            sign_response: false,
            sign_assertion: true,
            ..R::default()
        };
        let xml = build(&r);
        let idp = idp_config();
        let doc = XmlDocument::parse_with_policy(xml.as_str(), &verification_policy(&idp)).unwrap();
        let l = doc.with_view(layout).unwrap();
        let (a_pos, _) = l.assertion.clone().unwrap();
        let sig = l.assertion_signature.unwrap();
        verify_signed_element(&doc, sig, a_pos, &idp).unwrap();
        let root = doc.with_view(|v| order(v.document().root_element()));
        assert!(matches!(
            verify_signed_element(&doc, sig, root, &idp),
            Err(SamlError::Signature(_))
        ));
        // Duplicate IDs make the target ambiguous.
        let dup = xml.replace(
            "<samlp:Status>",
            "<samlp:Extensions><x ID=\"_a-1\"/></samlp:Extensions><samlp:Status>",
        );
        assert!(matches!(check(&dup), Err(SamlError::Signature(_))));
    }

    // ---- Encrypted assertions (XMLEnc; Core §2.3.4) ----

    fn encrypt_for_sp(plain: &str) -> String {
        use xml_sec::rsa_encoding::RsaPublicKeyEncoding as _;
        use xml_sec::xmlenc::{EncryptedDataBuilder, EncryptionRecipient};
        let cert = openssl::x509::X509::from_pem(include_bytes!("testdata/sp.crt.pem")).unwrap();
        let pem = cert.public_key().unwrap().public_key_to_pem().unwrap();
        let public =
            rsa::RsaPublicKey::from_public_key_pem(std::str::from_utf8(&pem).unwrap()).unwrap();
        EncryptedDataBuilder::new(DataEncryptionAlgorithm::Aes256Gcm)
            .add_recipient(EncryptionRecipient::rsa_oaep(public))
            .encrypt_xml(plain)
            .unwrap()
            .encrypted_data_xml
    }

    fn encrypted_response(sign_assertion: bool, sign_response: bool) -> String {
        let r = R {
            sign_response,
            sign_assertion,
            ..R::default()
        };
        let enc = encrypt_for_sp(&signed_assertion(&r, "_a-1"));
        let mut xml = response_around(
            &r,
            &format!(
                "<saml:EncryptedAssertion xmlns:saml=\"urn:oasis:names:tc:SAML:2.0:assertion\">{enc}</saml:EncryptedAssertion>"
            ),
        );
        if sign_response {
            xml = sign(&xml, &r, "_resp-1");
        }
        xml
    }

    #[test]
    fn encrypted_assertion_is_decrypted_with_our_key() {
        let xml = encrypted_response(true, false);
        assert!(!xml.contains("alice"));
        let a = check(&xml).unwrap();
        assert_eq!(a.name_id, "alice@example.test");
        // Response signed over the ciphertext, assertion unsigned inside.
        let a = check(&encrypted_response(false, true)).unwrap();
        assert_eq!(a.name_id, "alice@example.test");
        // Without our key it cannot be read.
        assert!(matches!(
            validate(
                &STANDARD.encode(&xml),
                &idp_config(),
                &sp_config(None),
                Expect::InResponseTo(REQ),
                now()
            ),
            Err(SamlError::Encryption(_))
        ));
        // Encrypted but signed nowhere.
        assert!(matches!(
            check(&encrypted_response(false, false)),
            Err(SamlError::Signature(_))
        ));
    }

    #[test]
    fn plain_assertion_refused_when_encryption_is_required() {
        let mut idp = idp_config();
        idp.require_encrypted_assertions = true;
        assert!(matches!(
            check_with(&build(&R::default()), &idp, Expect::InResponseTo(REQ)),
            Err(SamlError::Encryption(_))
        ));
        check_with(
            &encrypted_response(true, false),
            &idp,
            Expect::InResponseTo(REQ),
        )
        .unwrap();
    }

    #[test]
    fn verification_time_per_response() {
        let xml = STANDARD.encode(build(&R::default()));
        let key = test_sp_key();
        let sp = sp_config(Some(&key));
        let idp = idp_config();
        let n = 20;
        let start = std::time::Instant::now();
        for _ in 0..n {
            validate(&xml, &idp, &sp, Expect::InResponseTo(REQ), now()).unwrap();
        }
        eprintln!(
            "SAML response validation: {:?} per response (debug build)",
            start.elapsed() / n
        );
    }
}
