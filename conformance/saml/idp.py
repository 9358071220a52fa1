"""The corporate SAML IdP of the conformance run: pysaml2 (PyPI) with Debian's xmlsec1 doing
every signature. Lintel's code has no part in building these messages.

`CorpIdp` wraps a pysaml2 `Server`: it reads the AuthnRequest of an HTTP-Redirect binding URL,
and builds Responses signed by pysaml2 (sign_response and/or sign_assertion). `edit` hooks
change a response with lxml and sign it again with pysaml2's xmlsec1 backend (assertion first,
then the response, as pysaml2 itself does), so each must-reject variant carries a valid
signature over exactly the one defect it is meant to show, unless the defect is the signature.
"""
import base64
import os
import tempfile
import urllib.parse

from lxml import etree
from saml2 import BINDING_HTTP_REDIRECT
from saml2.authn_context import PASSWORD, AuthnBroker, authn_context_class_ref
from saml2.config import IdPConfig
from saml2.metadata import create_metadata_string
from saml2.saml import NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server
from saml2.sigver import RSA_OAEP_MGF1P, pre_encryption_part
from saml2.xmldsig import DIGEST_SHA256, SIG_RSA_SHA256

NS = {
    "samlp": "urn:oasis:names:tc:SAML:2.0:protocol",
    "saml": "urn:oasis:names:tc:SAML:2.0:assertion",
    "ds": "http://www.w3.org/2000/09/xmldsig#",
}
AES256_CBC = "http://www.w3.org/2001/04/xmlenc#aes256-cbc"
XMLSEC = os.environ.get("XMLSEC1", "/usr/bin/xmlsec1")
RESPONSE = "urn:oasis:names:tc:SAML:2.0:protocol:Response"
ASSERTION = "urn:oasis:names:tc:SAML:2.0:assertion:Assertion"


def idp_config(entity_id, sso_url, key_file, cert_file, sp_metadata_files, want_signed=False):
    return {
        "entityid": entity_id,
        "service": {
            "idp": {
                "name": "Conformance corporate IdP (pysaml2)",
                "endpoints": {"single_sign_on_service": [(sso_url, BINDING_HTTP_REDIRECT)]},
                "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                "want_authn_requests_signed": want_signed,
                "policy": {"default": {"lifetime": {"minutes": 5}, "attribute_restrictions": None}},
            }
        },
        "key_file": key_file,
        "cert_file": cert_file,
        "xmlsec_binary": XMLSEC,
        "metadata": {"local": list(sp_metadata_files)},
        "signing_algorithm": SIG_RSA_SHA256,
        "digest_algorithm": DIGEST_SHA256,
        "delete_tmpfiles": True,
    }


class CorpIdp:
    def __init__(self, entity_id, sso_url, key_file, cert_file, sp_metadata_files=(), want_signed=False):
        """want_signed: AuthnRequests must carry a valid HTTP-Redirect signature (SAML
        bindings §3.4.4.1) by the SP metadata's signing certificate."""
        self.entity_id = entity_id
        self.sso_url = sso_url
        self.key_file = key_file
        self.cert_file = cert_file
        self._sp_metadata = list(sp_metadata_files)
        self.want_signed = want_signed
        self._build()

    def _build(self):
        conf = IdPConfig()
        conf.load(idp_config(self.entity_id, self.sso_url, self.key_file, self.cert_file, self._sp_metadata,
                             self.want_signed))
        self.server = Server(config=conf)
        self.broker = AuthnBroker()
        self.broker.add(authn_context_class_ref(PASSWORD), "")

    def add_sp_metadata(self, xml):
        fd, path = tempfile.mkstemp(suffix=".xml", prefix="sp-metadata-")
        with os.fdopen(fd, "w") as f:
            f.write(xml)
        self._sp_metadata.append(path)
        self._build()

    def metadata(self):
        """This IdP's metadata XML (EntityDescriptor with IDPSSODescriptor, signing KeyDescriptor)."""
        conf = IdPConfig()
        conf.load(idp_config(self.entity_id, self.sso_url, self.key_file, self.cert_file, []))
        xml = create_metadata_string(None, config=conf, valid=24)
        return xml.decode() if isinstance(xml, bytes) else xml

    def read_request(self, location):
        """Parse the AuthnRequest of an HTTP-Redirect binding URL (SAML bindings §3.4).
        Returns (request, relay_state, query) where request is pysaml2's AuthnRequest."""
        url = urllib.parse.urlsplit(location)
        base = urllib.parse.urlunsplit((url.scheme, url.netloc, url.path, "", ""))
        assert base == self.sso_url, f"redirected to {base}, not the IdP SSO URL {self.sso_url}"
        q = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        req = self.server.parse_authn_request(
            q["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=q.get("RelayState"),
            sigalg=q.get("SigAlg"), signature=q.get("Signature"))
        return req.message, q.get("RelayState"), q

    def response_xml(self, user, in_response_to, acs_url, sp_entity_id,
                     sign_response=True, sign_assertion=True, name_id=None):
        """A pysaml2 Response for `user` ({"email", "given_name", "family_name", "groups"})."""
        identity = {
            "mail": [user["email"]],
            "givenName": [user["given_name"]],
            "sn": [user["family_name"]],
            "groups": list(user.get("groups", [])),
        }
        nid = NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=name_id or user["email"])
        resp = self.server.create_authn_response(
            identity,
            in_response_to=in_response_to,
            destination=acs_url,
            sp_entity_id=sp_entity_id,
            name_id=nid,
            authn=self.broker.get_authn_by_accr(PASSWORD),
            sign_response=sign_response,
            sign_assertion=sign_assertion,
            sign_alg=SIG_RSA_SHA256,
            digest_alg=DIGEST_SHA256,
        )
        return str(resp)

    def resign(self, xml, assertion=True, response=True):
        """Sign `xml` again with this IdP's key (pysaml2's xmlsec1 backend): the existing
        ds:Signature templates get fresh digests and signature values."""
        doc = etree.fromstring(xml.encode())
        if assertion:
            a = doc.find("saml:Assertion", NS)
            assert a is not None and a.find("ds:Signature", NS) is not None
            xml = self.server.sec.sign_statement(xml, ASSERTION, node_id=a.get("ID"))
        if response:
            assert doc.find("ds:Signature", NS) is not None
            xml = self.server.sec.sign_statement(xml, RESPONSE, node_id=doc.get("ID"))
        return xml

    def sp_encryption_cert(self, sp_entity_id):
        """The base64 DER of the SP metadata's encryption (or unmarked) certificate."""
        certs = self.server.metadata.certs(sp_entity_id, "any", "encryption")
        assert certs, f"no encryption certificate in the metadata of {sp_entity_id}"
        return certs[0][1]

    def encrypt(self, xml, cert_b64, msg_enc=AES256_CBC, session_key="aes-256"):
        """Replace the Assertion by an EncryptedAssertion (XML-Enc: `msg_enc` content
        encryption, RSA-OAEP key transport to `cert_b64`), done by xmlsec1 through pysaml2."""
        cert_b64 = "".join(cert_b64.split())
        doc = parse(xml)
        a = doc.find("saml:Assertion", NS)
        enc = etree.Element("{%s}EncryptedAssertion" % NS["saml"])
        a.addprevious(enc)
        enc.append(a)
        pem = "-----BEGIN CERTIFICATE-----\n" + "\n".join(
            cert_b64[i:i + 64] for i in range(0, len(cert_b64), 64)) + "\n-----END CERTIFICATE-----\n"
        fd, path = tempfile.mkstemp(suffix=".pem", prefix="sp-enc-")
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        try:
            template = pre_encryption_part(msg_enc=msg_enc, key_enc=RSA_OAEP_MGF1P, encrypt_cert=cert_b64)
            return self.server.sec.encrypt_assertion(tostring(doc), path, str(template), key_type=session_key)
        finally:
            os.unlink(path)


def b64(xml):
    return base64.b64encode(xml.encode() if isinstance(xml, str) else xml).decode()


def parse(xml):
    return etree.fromstring(xml.encode() if isinstance(xml, str) else xml)


def tostring(doc):
    return etree.tostring(doc, encoding="unicode")



if __name__ == "__main__":
    # python idp.py metadata ENTITY_ID SSO_URL KEY CERT  -> this IdP's metadata XML on stdout
    import sys

    if len(sys.argv) != 6 or sys.argv[1] != "metadata":
        sys.exit("usage: idp.py metadata ENTITY_ID SSO_URL KEY_FILE CERT_FILE")
    print(CorpIdp(*sys.argv[2:6]).metadata())
