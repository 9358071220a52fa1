"""SAML conformance against a live Lintel: pysaml2 (conformance/saml/idp.py) is the corporate
IdP of two orgs; `requests` is the browser.

  Acme   provider A: SP-initiated only (allow_idp_initiated off), group "acme-admins" -> admin
  Globex provider B: IdP-initiated allowed

(a) SP-initiated login with Response and/or Assertion signed; JIT user with mapped names/role.
(b) IdP-initiated: accepted by B, replay refused; refused by A.
(c) must-reject responses (wrong key, edited after signing, wrong audience/destination/
    recipient/issuer, expired, not yet valid, replay, InResponseTo of another request or
    unknown, unsigned, two assertions, DOCTYPE, XSW wrapping); each: no session.
    NameID comment injection (CVE-2017-11427): never the truncated identity.

Env: LINTEL, ADMIN_KEY, WORK (dir with the keys, provider JSON files from `lintel idp create`,
and the IdP settings written by saml.sh), VICTIM_EMAIL (a password user of Acme).
"""
import copy
import datetime as dt
import json
import os
import sys
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Api, Browser, Tally  # noqa: E402
from idp import NS, CorpIdp, b64, parse, tostring  # noqa: E402

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
SETUP = load("setup.json")  # org ids, IdP entity ids / SSO URLs (saml.sh)


def endpoints(p):
    e = p["endpoints"]
    return e["login_url"], e["acs_url"], e.get("sp_entity_id") or e["metadata_url"], e["metadata_url"]


def make_idp(which, key="idp"):
    s = SETUP[which]
    return CorpIdp(s["entity_id"], s["sso_url"], os.path.join(WORK, f"{which}-{key}.key"),
                   os.path.join(WORK, f"{which}-{key}.crt"))


# --- setup: the IdPs read Lintel's SP metadata (pysaml2 refuses metadata it cannot parse) ---
idp_a, idp_b, evil_a = make_idp("a"), make_idp("b"), make_idp("a", "other")
LOGIN_A, ACS_A, SPID_A, MD_A = endpoints(A)
LOGIN_B, ACS_B, SPID_B, MD_B = endpoints(B)


def sp_metadata():
    for idp, md in ((idp_a, MD_A), (evil_a, MD_A), (idp_b, MD_B)):
        r = Browser(BASE).get(md)
        assert r.status_code == 200, (md, r.status_code)
        assert "SPSSODescriptor" in r.text
        idp.add_sp_metadata(r.text)
    ent = idp_a.server.metadata.entity[SPID_A]
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


def assert_rejected(browser, resp, at_acs=True):
    """No session: the ACS (or, when at_acs is False, the page it leads to) answers 4xx with
    an error page, no lintel_session cookie, /account not reachable."""
    final, url = (resp, resp.url) if at_acs else browser.follow(resp)
    assert 400 <= final.status_code < 500, f"{url} answered {final.status_code}: {final.text[:300]}"
    assert "text/html" in final.headers.get("content-type", ""), final.headers.get("content-type")
    assert not browser.has_cookie("lintel_session"), "a session cookie was set"
    assert browser.signed_in_as() is None, "/account answers 200"


def sp_login(u, idp=None, edit=None, at_acs=True, expect_ok=True, **kw):
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
        assert_rejected(b, resp, at_acs)
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
    assert_rejected(b, post_acs(b, ACS_B, captured["xml"], None))


T.check("(b) IdP-initiated replay of the same POST: rejected", b_idp_initiated_replay)


def b_idp_initiated_off():
    b = Browser(BASE)
    xml = unsolicited(idp_a, user("ivy"), ACS_A, SPID_A)
    assert_rejected(b, post_acs(b, ACS_A, xml, None))
    assert api.member_by_email(SETUP["a"]["org_id"], "ivy@acme.test")[0] is None, "JIT happened"


T.check("(b) IdP-initiated at provider A (allow_idp_initiated off): rejected", b_idp_initiated_off)

# --- (c) must-reject ---
MALLORY = user("mallory", groups=["staff"], given="Mal", family="Lory")
VICTIM = E.get("VICTIM_EMAIL", "victim@acme.test")


def iso(delta_secs):
    t = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=delta_secs)
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def resigned(fn, assertion=True, response=True, idp=None):
    """An edit: fn(doc, req) changes the lxml tree, then pysaml2 signs it again."""
    def edit(xml, req):
        doc = parse(xml)
        fn(doc, req)
        return (idp or idp_a).resign(tostring(doc), assertion=assertion, response=response)
    return edit


def unsigned_edit(fn):
    def edit(xml, req):
        doc = parse(xml)
        fn(doc, req)
        return tostring(doc)
    return edit


def all_(doc, path):
    found = doc.findall(path, NS)
    assert found, f"nothing at {path}"
    return found


def set_attr(path, name, value):
    def fn(doc, req):
        for el in all_(doc, path):
            el.set(name, value)
    return fn


def set_text(path, value):
    def fn(doc, req):
        for el in all_(doc, path):
            el.text = value
    return fn


def attr_values(doc, friendly):
    return [v for a in doc.iterfind(".//saml:Attribute", NS)
            if friendly in (a.get("FriendlyName"), a.get("Name"))
            for v in a.findall("saml:AttributeValue", NS)]


def to_victim(doc, req):
    for el in all_(doc, ".//saml:Subject/saml:NameID"):
        el.text = VICTIM
    for v in attr_values(doc, "mail"):
        v.text = VICTIM


def add_admin_group(doc, req):
    vals = attr_values(doc, "groups")
    assert vals
    extra = copy.deepcopy(vals[0])
    extra.text = "acme-admins"
    vals[0].addnext(extra)


def expired(doc, req):
    for el in all_(doc, ".//saml:Conditions"):
        el.set("NotBefore", iso(-1800))
        el.set("NotOnOrAfter", iso(-900))
    for el in all_(doc, ".//saml:SubjectConfirmationData"):
        el.set("NotOnOrAfter", iso(-900))
    for el in [doc, *all_(doc, "saml:Assertion")]:
        el.set("IssueInstant", iso(-1800))


def not_yet_valid(doc, req):
    for el in all_(doc, ".//saml:Conditions"):
        el.set("NotBefore", iso(900))
        el.set("NotOnOrAfter", iso(1800))


def in_response_to(value):
    def fn(doc, req):
        doc.set("InResponseTo", value)
        for el in all_(doc, ".//saml:SubjectConfirmationData"):
            el.set("InResponseTo", value)
    return fn


def other_issuer(doc, req):
    for el in all_(doc, ".//saml:Issuer"):
        el.text = "https://idp.other.test/saml"


def two_assertions(doc, req):
    a = doc.find("saml:Assertion", NS)
    b = copy.deepcopy(a)
    b.set("ID", "_" + uuid.uuid4().hex)
    b.find("saml:Subject/saml:NameID", NS).text = VICTIM
    a.addnext(b)


def sign_two(xml, req):
    doc = parse(xml)
    two_assertions(doc, req)
    xml = tostring(doc)
    second = parse(xml).findall("saml:Assertion", NS)[1].get("ID")
    xml = idp_a.server.sec.sign_statement(xml, "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
                                          node_id=second)
    return idp_a.resign(xml)


def doctype(xml, req):
    body = xml.split("?>", 1)[1] if xml.startswith("<?xml") else xml
    return ('<?xml version="1.0"?>\n<!DOCTYPE Response [<!ENTITY who "' + VICTIM + '">]>\n' + body)


rejects = [
    ("signed by another key (same IdP entity ID)", dict(idp=evil_a)),
    ("NameID and mail edited after signing (to an existing user)", dict(edit=unsigned_edit(to_victim))),
    ("groups edited after signing (acme-admins added)", dict(edit=unsigned_edit(add_admin_group))),
    ("unsigned Response and Assertion", dict(sign_response=False, sign_assertion=False)),
    ("wrong Audience", dict(edit=resigned(set_text(".//saml:Audience", "https://sp.other.test/metadata")))),
    ("wrong Response Destination", dict(edit=resigned(set_attr(".", "Destination", ACS_B)))),
    ("wrong SubjectConfirmationData Recipient",
     dict(edit=resigned(set_attr(".//saml:SubjectConfirmationData", "Recipient", ACS_B)))),
    ("wrong Issuer (right key)", dict(edit=resigned(other_issuer))),
    ("expired (NotOnOrAfter 15 min ago)", dict(edit=resigned(expired))),
    ("not yet valid (NotBefore in 15 min)", dict(edit=resigned(not_yet_valid))),
    ("InResponseTo unknown", dict(edit=resigned(in_response_to("_" + uuid.uuid4().hex)))),
    ("two assertions (second for another user, both signed)", dict(edit=sign_two)),
    ("DOCTYPE with an entity", dict(edit=doctype)),
]
for label, kw in rejects:
    T.check(f"(c) rejected: {label}", sp_login, MALLORY, expect_ok=False, **kw)


def replay_sp_initiated():
    b, xml, relay = sp_login(user("replay", groups=["staff"]))
    # An attacker who captured the POST and the browser's cookies posts it again.
    thief = Browser(BASE)
    for c in b.s.cookies:
        if c.name != "lintel_session":
            thief.s.cookies.set_cookie(copy.copy(c))
    assert_rejected(thief, post_acs(thief, ACS_A, xml, relay), at_acs=False)
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
    assert_rejected(b2, post_acs(b2, ACS_A, xml, relay2), at_acs=False)


T.check("(c) rejected: InResponseTo of another browser's request", other_request)


def same_browser_older_request():
    """One browser starts two logins; the answer to the first posted with the second's RelayState."""
    b = Browser(BASE)
    r1, _ = start(b, LOGIN_A, idp_a, ACS_A, SPID_A)
    r2, relay2 = start(b, LOGIN_A, idp_a, ACS_A, SPID_A)
    xml = idp_a.response_xml(MALLORY, r1.id, ACS_A, SPID_A)
    assert_rejected(b, post_acs(b, ACS_A, xml, relay2), at_acs=False)


T.check("(c) rejected: InResponseTo of the same browser's other request", same_browser_older_request)


def login_csrf():
    """Browser 2 (the victim) is handed browser 1's (the attacker's) response and RelayState:
    it must not end up signed in as the attacker (the pending request is bound to browser 1)."""
    b1, b2 = Browser(BASE), Browser(BASE)
    r1, relay1 = start(b1, LOGIN_A, idp_a, ACS_A, SPID_A)
    xml = idp_a.response_xml(MALLORY, r1.id, ACS_A, SPID_A)
    assert_rejected(b2, post_acs(b2, ACS_A, xml, relay1), at_acs=False)


T.check("(c) rejected: a response for another browser's request (login CSRF)", login_csrf)


# XML signature wrapping (the "On Breaking SAML" XSW variants, built on pysaml2's signed XML).
def evil_assertion(signed_assertion):
    evil = copy.deepcopy(signed_assertion)
    evil.set("ID", "_evil" + uuid.uuid4().hex)
    sig = evil.find("ds:Signature", NS)
    if sig is not None:
        evil.remove(sig)
    evil.find("saml:Subject/saml:NameID", NS).text = VICTIM
    for v in attr_values(evil, "mail"):
        v.text = VICTIM
    return evil


def xsw_response(kind):
    """XSW1/2: the Response is signed; an evil Response wraps the original (XSW1: inside the
    original signature's place after it; XSW2: before it)."""
    def edit(xml, req):
        orig = parse(xml)
        evil = copy.deepcopy(orig)
        evil.set("ID", "_evil" + uuid.uuid4().hex)
        ea = evil.find("saml:Assertion", NS)
        evil.replace(ea, evil_assertion(orig.find("saml:Assertion", NS)))
        sig = evil.find("ds:Signature", NS)
        orig_clean = copy.deepcopy(orig)
        if kind == 1:
            sig.append(orig_clean)          # original signed Response inside the Signature
        else:
            sig.addprevious(orig_clean)     # original before the (now detached) Signature
        return tostring(evil)
    return edit


def xsw_assertion(kind):
    """XSW3–8: the Assertion is signed (sign_response=False); an evil assertion is added."""
    def edit(xml, req):
        doc = parse(xml)
        a = doc.find("saml:Assertion", NS)
        evil = evil_assertion(a)
        if kind == 3:       # evil assertion before the signed one
            a.addprevious(evil)
        elif kind == 4:     # signed assertion moved inside the evil one
            doc.replace(a, evil)
            evil.append(a)
        elif kind == 5:     # signature moved to the evil copy, original appended at the end
            sig = a.find("ds:Signature", NS)
            a.remove(sig)
            evil.insert(1, copy.deepcopy(sig))
            doc.replace(a, evil)
            doc.append(a)
            a.append(sig)
        elif kind == 6:     # original inside the evil assertion's (copied) Signature
            sig = copy.deepcopy(a.find("ds:Signature", NS))
            evil.insert(1, sig)
            doc.replace(a, evil)
            sig.append(a)
        elif kind == 7:     # original in an Extensions element, evil assertion used
            ext = parse('<samlp:Extensions xmlns:samlp="%s"/>' % NS["samlp"])
            doc.replace(a, evil)
            evil.addprevious(ext)
            ext.append(a)
        elif kind == 8:     # original inside ds:Object of the evil assertion's Signature
            sig = copy.deepcopy(a.find("ds:Signature", NS))
            obj = parse('<ds:Object xmlns:ds="%s"/>' % NS["ds"])
            sig.append(obj)
            evil.insert(1, sig)
            doc.replace(a, evil)
            obj.append(a)
        return tostring(doc)
    return edit


for k in (1, 2):
    T.check(f"(c) rejected: XSW{k} (signed Response wrapped)", sp_login, MALLORY, expect_ok=False,
            edit=xsw_response(k), sign_assertion=False)
for k in range(3, 9):
    T.check(f"(c) rejected: XSW{k} (signed Assertion wrapped)", sp_login, MALLORY, expect_ok=False,
            edit=xsw_assertion(k), sign_response=False)


def comment_injection():
    """CVE-2017-11427: <NameID>victim@acme.test<!---->.evil.test</NameID> is signed as
    victim@acme.test.evil.test (exclusive c14n drops comments); an SP reading only the first
    text node would sign in the victim. Either refused, or signed in as the whole text."""
    whole = VICTIM + ".evil.test"
    u = user("x", groups=["staff"])
    u["email"] = whole
    b = Browser(BASE)
    req, relay = start(b, LOGIN_A, idp_a, ACS_A, SPID_A)
    doc = parse(idp_a.response_xml(u, req.id, ACS_A, SPID_A, sign_response=False))
    from lxml import etree
    for el in [*doc.iterfind(".//saml:Subject/saml:NameID", NS), *attr_values(doc, "mail")]:
        assert el.text == whole
        el.text = VICTIM
        c = etree.Comment("")
        c.tail = ".evil.test"
        el.append(c)
    resp = post_acs(b, ACS_A, tostring(doc), relay)
    if resp.status_code == 303:
        final, _ = b.follow(resp)
        who = b.signed_in_as()
        assert who != VICTIM, "signed in as the victim: NameID truncated at the comment"
        assert who in (None, whole), who
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
