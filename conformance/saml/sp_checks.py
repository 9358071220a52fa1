"""SAML conformance against a live Lintel: pysaml2 (conformance/saml/idp.py) is the corporate
IdP of three orgs; `requests` is the browser.

  Acme   provider A: SP-initiated only, OID attribute names, group "acme-admins" -> admin,
                     emails not trusted
  Globex provider B: IdP-initiated allowed, signed AuthnRequests, default attribute mapping,
                     emails trusted (existing users linked)
  Hooli  provider C: encrypted assertions required

(a) SP-initiated login with Response and/or Assertion signed; JIT user with mapped names/role;
    signed AuthnRequests; linking of an existing user only with trust_email; encryption.
(b) IdP-initiated: accepted by B, replay refused; refused by A.
(c) must-reject responses (wrong key, edited after signing, wrong audience/destination/
    recipient/issuer, expired, not yet valid, replay, InResponseTo of another request or
    unknown, unsigned, two assertions, DOCTYPE, XSW1-8, encryption); each: no session and an
    error page naming the expected reason. NameID comment injection (CVE-2017-11427): never
    the truncated identity.

Env: LINTEL, ADMIN_KEY, WORK (dir with the keys, provider JSON files from `lintel idp create`,
and setup.json written by saml.sh), VICTIM_EMAIL (a password user of Acme), LINKED_EMAIL (a
password user of Globex).
"""
import copy
import html
import json
import os
import re
import sys
import urllib.parse
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Api, Browser, Tally  # noqa: E402
import variants as V  # noqa: E402
from idp import CorpIdp, b64  # noqa: E402

E = os.environ
BASE = E["LINTEL"].rstrip("/")
WORK = E["WORK"]
api = Api(BASE, E["ADMIN_KEY"])
T = Tally("saml")


def load(name):
    with open(os.path.join(WORK, name)) as f:
        return json.load(f)


A = load("provider-a.json")
B = load("provider-b.json")
C = load("provider-c.json")
SETUP = load("setup.json")  # org ids, IdP entity ids / SSO URLs (saml.sh)


def endpoints(p):
    e = p["endpoints"]
    return e["login_url"], e["acs_url"], e.get("sp_entity_id") or e["metadata_url"], e["metadata_url"]


def make_idp(which, key="idp", want_signed=False):
    s = SETUP[which]
    return CorpIdp(s["entity_id"], s["sso_url"], os.path.join(WORK, f"{which}-{key}.key"),
                   os.path.join(WORK, f"{which}-{key}.crt"), want_signed=want_signed)


# --- setup: the IdPs read Lintel's SP metadata (pysaml2 refuses metadata it cannot parse) ---
# Globex's IdP wants signed AuthnRequests (provider B has sign_authn_requests on).
idp_a, idp_b, evil_a = make_idp("a"), make_idp("b", want_signed=True), make_idp("a", "other")
idp_c = make_idp("c")
LOGIN_A, ACS_A, SPID_A, MD_A = endpoints(A)
LOGIN_B, ACS_B, SPID_B, MD_B = endpoints(B)
LOGIN_C, ACS_C, SPID_C, MD_C = endpoints(C)


def sp_metadata():
    for idp, md in ((idp_a, MD_A), (evil_a, MD_A), (idp_b, MD_B), (idp_c, MD_C)):
        r = Browser(BASE).get(md)
        assert r.status_code == 200, (md, r.status_code)
        assert "SPSSODescriptor" in r.text
        idp.add_sp_metadata(r.text)
    ent = idp_a.server.metadata[SPID_A]
    acs = ent["spsso_descriptor"][0]["assertion_consumer_service"]
    assert [(a["location"], a["binding"]) for a in acs] == [
        (ACS_A, "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST")], acs


if not T.check("SP metadata parsed by pysaml2 (entity ID, ACS HTTP-POST)", sp_metadata):
    T.finish()


def user(local, domain="acme.test", groups=(), given="Ada", family="Lovelace"):
    return {"email": f"{local}@{domain}", "given_name": given, "family_name": family,
            "groups": list(groups)}


def start(browser, login_url, idp, acs, spid):
    """GET the provider's login URL; returns (AuthnRequest, RelayState) read by pysaml2."""
    r = browser.get(login_url)
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    assert browser.has_cookie("lintel_sso"), "no lintel_sso cookie"
    req, relay, _ = idp.read_request(r.headers["location"])
    assert req.issuer.text == spid, req.issuer.text
    assert req.assertion_consumer_service_url in (None, acs), req.assertion_consumer_service_url
    assert req.destination == idp.sso_url, req.destination
    assert relay, "no RelayState"
    return req, relay


def post_acs(browser, acs, xml, relay):
    data = {"SAMLResponse": b64(xml)}
    if relay is not None:
        data["RelayState"] = relay
    return browser.cross_site_post(acs, data)


def assert_signed_in(browser, resp, email):
    assert resp.status_code == 303, (resp.status_code, resp.text[:500])
    final, url = browser.follow(resp)
    assert final.status_code == 200, (url, final.status_code, final.text[:300])
    assert browser.has_cookie("lintel_session"), "no session cookie"
    who = browser.signed_in_as()
    assert who == email, f"/account shows {who!r}, expected {email}"


def assert_rejected(browser, resp, at_acs=True, reasons=None):
    """No session: the ACS (or, when at_acs is False, the page it leads to) answers 4xx with
    an error page naming the reason's category (one of `reasons` when given), no
    lintel_session cookie, /account not reachable."""
    final, url = (resp, resp.url) if at_acs else browser.follow(resp)
    assert 400 <= final.status_code < 500, f"{url} answered {final.status_code}: {final.text[:300]}"
    assert final.status_code != 429, "rate limited: the response itself was not judged"
    assert "text/html" in final.headers.get("content-type", ""), final.headers.get("content-type")
    m = re.search(r"Single sign-on failed \(([^)]*)\)", html.unescape(final.text))
    reason = m.group(1) if m else None
    print(f"     {final.status_code} at {urllib.parse.urlsplit(url).path}: {reason}")
    if reasons:
        assert reason and any(r in reason for r in reasons), f"reason {reason!r}, expected one of {reasons}"
    assert not browser.has_cookie("lintel_session"), "a session cookie was set"
    assert browser.signed_in_as() is None, "/account answers 200"


def sp_login(u, idp=None, edit=None, at_acs=True, expect_ok=True, reasons=None, **kw):
    """One SP-initiated login at provider A in a fresh browser; `edit(xml, req) -> xml`."""
    idp = idp or idp_a
    b = Browser(BASE)
    req, relay = start(b, LOGIN_A, idp_a, ACS_A, SPID_A)
    xml = idp.response_xml(u, req.id, ACS_A, SPID_A, **kw)
    if edit:
        xml = edit(xml, req)
    resp = post_acs(b, ACS_A, xml, relay)
    if expect_ok:
        assert_signed_in(b, resp, u["email"])
    else:
        assert_rejected(b, resp, at_acs, reasons)
    return b, xml, relay


# --- (a) SP-initiated ---
ADA = user("ada", groups=["staff", "acme-admins"])


def member(org, email):
    u, m = api.member_by_email(org, email)
    assert u is not None, f"{email} is not a member of {org}"
    return u, m


def a_first_login():
    sp_login(ADA)
    u, m = member(SETUP["a"]["org_id"], ADA["email"])
    assert (u["first_name"], u["last_name"]) == ("Ada", "Lovelace"), u
    assert m["user_role"] == "admin", f"role {m['user_role']} (group acme-admins maps to admin)"


T.check("(a) SP-initiated, Response+Assertion signed: signed in; JIT user with names and the group's role",
        a_first_login)

GRACE = user("grace", groups=["staff"], given="Grace", family="Hopper")


def a_assertion_only():
    sp_login(GRACE, sign_response=False, sign_assertion=True)
    u, m = member(SETUP["a"]["org_id"], GRACE["email"])
    assert (u["first_name"], u["last_name"]) == ("Grace", "Hopper"), u
    assert m["user_role"] == "member", f"role {m['user_role']} (no mapped group: default_role member)"


T.check("(a) SP-initiated, only the Assertion signed: signed in; default role", a_assertion_only)


def a_response_only_updates_names():
    sp_login(dict(GRACE, given_name="Grace B.", family_name="Hopper-Murray"), sign_response=True,
             sign_assertion=False)
    u, _ = member(SETUP["a"]["org_id"], GRACE["email"])
    assert (u["first_name"], u["last_name"]) == ("Grace B.", "Hopper-Murray"), u


T.check("(a) SP-initiated, only the Response signed: signed in; second login updates names",
        a_response_only_updates_names)

def a_signed_request():
    """Provider B signs its AuthnRequests: pysaml2 checks the HTTP-Redirect signature with the
    certificate of Lintel's SP metadata before answering; a changed RelayState breaks it."""
    b = Browser(BASE)
    r = b.get(LOGIN_B)
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    loc = r.headers["location"]
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(loc).query))
    assert q.get("SigAlg") == "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256", q.get("SigAlg")
    assert q.get("Signature"), "no Signature parameter"
    forged = loc.replace("RelayState=", "RelayState=x", 1)
    try:
        idp_b.read_request(forged)
    except Exception:  # noqa: BLE001 - pysaml2 raises IncorrectlySigned (or a subclass)
        pass
    else:
        raise AssertionError("pysaml2 accepted a request whose RelayState was changed: no signature check")
    req, relay, _ = idp_b.read_request(loc)
    u = user("sig", domain="globex.test", given="Sig", family="Ned")
    assert_signed_in(b, post_acs(b, ACS_B, idp_b.response_xml(u, req.id, ACS_B, SPID_B), relay), u["email"])


T.check("(a) signed AuthnRequest (sign_authn_requests): pysaml2 verifies it; a changed one fails; signed in",
        a_signed_request)


def a_existing_user_not_linked():
    """Acme does not trust its IdP's emails (trust_email off): a login asserting the email of
    an existing password user is refused, not linked to that account."""
    victim = E.get("VICTIM_EMAIL", "victim@acme.test")
    b = Browser(BASE)
    req, relay = start(b, LOGIN_A, idp_a, ACS_A, SPID_A)
    u = dict(user("victim", given="Vic", family="Tim"), email=victim)
    resp = post_acs(b, ACS_A, idp_a.response_xml(u, req.id, ACS_A, SPID_A), relay)
    assert_rejected(b, resp, at_acs=False, reasons=["account exists"])


T.check("(a) an existing user's email from an IdP without trust_email: refused (account exists)",
        a_existing_user_not_linked)


def b_existing_user_linked():
    """Globex trusts its IdP for its verified domain (trust_email on): the existing user with
    that email is linked, not duplicated."""
    email = E["LINKED_EMAIL"]
    before, _ = member(SETUP["b"]["org_id"], email)
    b = Browser(BASE)
    req, relay = start(b, LOGIN_B, idp_b, ACS_B, SPID_B)
    u = dict(user("linked", domain="globex.test", given="Lin", family="Ked"), email=email)
    assert_signed_in(b, post_acs(b, ACS_B, idp_b.response_xml(u, req.id, ACS_B, SPID_B), relay), email)
    after, _ = member(SETUP["b"]["org_id"], email)
    assert after["user_id"] == before["user_id"], "another user was created"


T.check("(a) an existing user's email from an IdP with trust_email (verified domain): linked", b_existing_user_linked)


def encrypted(sign_response, to_cert=None, expect_ok=True, reasons=None):
    """Hooli requires encrypted assertions: pysaml2 signs the assertion, xmlsec1 encrypts it
    (AES-256-CBC, RSA-OAEP) to the encryption certificate of Lintel's SP metadata (or to
    `to_cert`), then the Response is signed or not."""
    u = user("enc", domain="hooli.test", given="En", family="Crypted")
    b = Browser(BASE)
    req, relay = start(b, LOGIN_C, idp_c, ACS_C, SPID_C)
    xml = idp_c.response_xml(u, req.id, ACS_C, SPID_C, sign_response=sign_response, sign_assertion=True)
    xml = idp_c.encrypt(xml, to_cert or idp_c.sp_encryption_cert(SPID_C))
    assert "EncryptedAssertion" in xml and "saml:Assertion" not in xml.replace("EncryptedAssertion", "")
    if sign_response:
        xml = idp_c.resign(xml, assertion=False)
    resp = post_acs(b, ACS_C, xml, relay)
    if expect_ok:
        assert_signed_in(b, resp, u["email"])
    else:
        assert_rejected(b, resp, reasons=reasons)


def other_cert():
    with open(os.path.join(WORK, "a-other.crt")) as f:
        return "".join(line.strip() for line in f if "CERTIFICATE" not in line)


T.check("(a) encrypted assertion (AES-256-CBC, RSA-OAEP), Response signed: decrypted, signed in",
        encrypted, True)
T.check("(a) encrypted assertion, only the Assertion (inside) signed: signed in", encrypted, False)
T.check("(c) rejected: assertion encrypted to another key", encrypted, True, to_cert=other_cert(),
        expect_ok=False, reasons=["encryption"])


def plain_when_encryption_required():
    b = Browser(BASE)
    req, relay = start(b, LOGIN_C, idp_c, ACS_C, SPID_C)
    xml = idp_c.response_xml(user("plain", domain="hooli.test"), req.id, ACS_C, SPID_C)
    assert_rejected(b, post_acs(b, ACS_C, xml, relay), reasons=["encryption"])


T.check("(c) rejected: a plain assertion where encryption is required", plain_when_encryption_required)


# --- (b) IdP-initiated ---
BOB = user("bob", domain="globex.test", given="Bob", family="Globex")


def unsolicited(idp, u, acs, spid, **kw):
    return idp.response_xml(u, None, acs, spid, **kw)


captured = {}


def b_idp_initiated():
    b = Browser(BASE)
    xml = unsolicited(idp_b, BOB, ACS_B, SPID_B)
    assert "InResponseTo" not in xml
    captured["xml"] = xml
    assert_signed_in(b, post_acs(b, ACS_B, xml, None), BOB["email"])
    u, m = member(SETUP["b"]["org_id"], BOB["email"])
    assert (u["first_name"], u["last_name"]) == ("Bob", "Globex") and m["user_role"] == "member", (u, m)


T.check("(b) IdP-initiated, allowed by provider B: signed in; JIT member", b_idp_initiated)


def b_idp_initiated_replay():
    assert "xml" in captured, "no accepted IdP-initiated response to replay"
    b = Browser(BASE)
    assert_rejected(b, post_acs(b, ACS_B, captured["xml"], None), reasons=["already used"])


T.check("(b) IdP-initiated replay of the same POST: rejected", b_idp_initiated_replay)


def b_idp_initiated_off():
    b = Browser(BASE)
    xml = unsolicited(idp_a, user("ivy"), ACS_A, SPID_A)
    assert_rejected(b, post_acs(b, ACS_A, xml, None), reasons=["unsolicited"])
    assert api.member_by_email(SETUP["a"]["org_id"], "ivy@acme.test")[0] is None, "JIT happened"


T.check("(b) IdP-initiated at provider A (allow_idp_initiated off): rejected", b_idp_initiated_off)

# --- (c) must-reject ---
MALLORY = user("mallory", groups=["staff"], given="Mal", family="Lory")
VICTIM = E.get("VICTIM_EMAIL", "victim@acme.test")


R = V.resigned
SIG = ["signature"]
# An answer to a request this browser did not make, or made and already used.
CORR = ["request correlation", "started in another browser", "already used"]
XSW = ["signature", "multiple assertions", "malformed response"]
AUD = "https://sp.other.test/metadata"
rejects = [
    ("signed by another key (same IdP entity ID)", dict(idp=evil_a, reasons=SIG)),
    ("NameID and mail edited after signing (to an existing user)",
     dict(edit=V.unsigned_edit(V.to_user(VICTIM)), reasons=SIG)),
    ("groups edited after signing (acme-admins added)",
     dict(edit=V.unsigned_edit(V.add_group("acme-admins")), reasons=SIG)),
    ("unsigned Response and Assertion", dict(sign_response=False, sign_assertion=False, reasons=SIG)),
    ("wrong Audience", dict(edit=R(idp_a, V.set_text(".//saml:Audience", AUD)), reasons=["audience"])),
    ("wrong Response Destination",
     dict(edit=R(idp_a, V.set_attr(".", "Destination", ACS_B)), reasons=["destination"])),
    ("wrong SubjectConfirmationData Recipient",
     dict(edit=R(idp_a, V.set_attr(".//saml:SubjectConfirmationData", "Recipient", ACS_B)),
          reasons=["recipient", "subject confirmation"])),
    ("wrong Issuer (right key)",
     dict(edit=R(idp_a, V.issuer("https://idp.other.test/saml")), reasons=["issuer"])),
    ("expired (NotOnOrAfter 15 min ago)",
     dict(edit=R(idp_a, V.expired), reasons=["validity period", "subject confirmation"])),
    ("not yet valid (NotBefore in 15 min)", dict(edit=R(idp_a, V.not_yet_valid), reasons=["validity period"])),
    ("InResponseTo unknown", dict(edit=R(idp_a, V.in_response_to("_" + uuid.uuid4().hex)), reasons=CORR)),
    ("two assertions (second for another user, both signed)",
     dict(edit=V.two_assertions(idp_a, VICTIM), reasons=["multiple assertions"])),
    ("DOCTYPE with an entity", dict(edit=V.doctype, reasons=["document type declaration"])),
]
rejects += [(f"XSW{k} (signed Response wrapped)",
             dict(edit=V.xsw_response(k, VICTIM), sign_assertion=False, reasons=XSW)) for k in (1, 2)]
rejects += [(f"XSW{k} (signed Assertion wrapped)",
             dict(edit=V.xsw_assertion(k, VICTIM), sign_response=False, reasons=XSW)) for k in range(3, 9)]
for label, kw in rejects:
    T.check(f"(c) rejected: {label}", sp_login, MALLORY, expect_ok=False, **kw)


def replay_sp_initiated():
    b, xml, relay = sp_login(user("replay", groups=["staff"]))
    # An attacker who captured the POST and the browser's cookies posts it again.
    thief = Browser(BASE)
    for c in b.s.cookies:
        if c.name != "lintel_session":
            thief.s.cookies.set_cookie(copy.copy(c))
    assert_rejected(thief, post_acs(thief, ACS_A, xml, relay), at_acs=False, reasons=CORR)
    # And the same browser again.
    resp = post_acs(b, ACS_A, xml, relay)
    assert 400 <= resp.status_code < 500, f"replay in the same browser answered {resp.status_code}"


T.check("(c) rejected: replay of an accepted SP-initiated POST", replay_sp_initiated)


def other_request():
    """The IdP answers request R1 of browser 1; the response is posted by browser 2 with its
    own RelayState (request R2): InResponseTo belongs to another request."""
    b1, b2 = Browser(BASE), Browser(BASE)
    r1, _ = start(b1, LOGIN_A, idp_a, ACS_A, SPID_A)
    r2, relay2 = start(b2, LOGIN_A, idp_a, ACS_A, SPID_A)
    assert r1.id != r2.id
    xml = idp_a.response_xml(MALLORY, r1.id, ACS_A, SPID_A)
    assert_rejected(b2, post_acs(b2, ACS_A, xml, relay2), at_acs=False, reasons=CORR)


T.check("(c) rejected: InResponseTo of another browser's request", other_request)


def same_browser_older_request():
    """One browser starts two logins; the answer to the first posted with the second's RelayState."""
    b = Browser(BASE)
    r1, _ = start(b, LOGIN_A, idp_a, ACS_A, SPID_A)
    r2, relay2 = start(b, LOGIN_A, idp_a, ACS_A, SPID_A)
    xml = idp_a.response_xml(MALLORY, r1.id, ACS_A, SPID_A)
    assert_rejected(b, post_acs(b, ACS_A, xml, relay2), at_acs=False, reasons=CORR)


T.check("(c) rejected: InResponseTo of the same browser's other request", same_browser_older_request)


def login_csrf():
    """Browser 2 (the victim) is handed browser 1's (the attacker's) response and RelayState:
    it must not end up signed in as the attacker (the pending request is bound to browser 1)."""
    b1, b2 = Browser(BASE), Browser(BASE)
    r1, relay1 = start(b1, LOGIN_A, idp_a, ACS_A, SPID_A)
    xml = idp_a.response_xml(MALLORY, r1.id, ACS_A, SPID_A)
    assert_rejected(b2, post_acs(b2, ACS_A, xml, relay1), at_acs=False, reasons=CORR)


T.check("(c) rejected: a response for another browser's request (login CSRF)", login_csrf)


def comment_injection():
    """Either refused, or signed in as the whole text; never as the victim."""
    whole = VICTIM + ".evil.test"
    u = dict(user("x", groups=["staff"]), email=whole)
    b = Browser(BASE)
    req, relay = start(b, LOGIN_A, idp_a, ACS_A, SPID_A)
    xml = V.comment_in_name_id(whole, VICTIM)(idp_a.response_xml(u, req.id, ACS_A, SPID_A), req)
    resp = post_acs(b, ACS_A, xml, relay)
    if resp.status_code == 303:
        b.follow(resp)
        who = b.signed_in_as()
        assert who != VICTIM, "signed in as the victim: NameID truncated at the comment"
        assert who in (None, whole), who
        print(f"     signed in as {who!r} (the whole NameID)")
    else:
        assert_rejected(b, resp)


T.check("(c) NameID comment injection: never the truncated identity", comment_injection)


def victim_untouched():
    u, m = member(SETUP["a"]["org_id"], VICTIM)
    assert m["user_role"] == "member", m
    assert api.member_by_email(SETUP["a"]["org_id"], MALLORY["email"])[0] is None, \
        "mallory was provisioned by a rejected response"


T.check("(c) after all must-rejects: no JIT user from them, the victim still a plain member", victim_untouched)

T.finish()
