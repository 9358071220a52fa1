"""End to end: a relying party (openid-client, rp.mjs) starts an authorization request at
Lintel; the user types an Acme email on the hosted login page (home-realm discovery sends
them to Acme's SAML IdP, pysaml2), comes back through the ACS and /sso/complete, and the RP
receives a code; the RP's ID token is for the JIT-created user, whose org role is the one
mapped from the IdP group. Also `/sso/{org_slug}` starts the org's SSO directly.
Env: as sp_checks.py plus RP_NODE_DIR, ISSUER/CLIENT_ID/CLIENT_SECRET/REDIRECT_URI for rp.mjs.
"""
import json
import os
import subprocess
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from browser import Api, Browser, Tally, form_fields  # noqa: E402
from idp import CorpIdp, b64  # noqa: E402

E = os.environ
BASE = E["LINTEL"].rstrip("/")
WORK = E["WORK"]
REDIRECT_URI = E["REDIRECT_URI"]
api = Api(BASE, E["ADMIN_KEY"])
T = Tally("saml-e2e")

with open(os.path.join(WORK, "provider-a.json")) as f:
    A = json.load(f)
with open(os.path.join(WORK, "setup.json")) as f:
    SETUP = json.load(f)
S = SETUP["a"]
idp = CorpIdp(S["entity_id"], S["sso_url"], os.path.join(WORK, "a-idp.key"), os.path.join(WORK, "a-idp.crt"))
idp.add_sp_metadata(Browser(BASE).get(A["endpoints"]["metadata_url"]).text)
ACS = A["endpoints"]["acs_url"]
SPID = A["endpoints"].get("sp_entity_id") or A["endpoints"]["metadata_url"]


def rp(*args):
    out = subprocess.run(["node", os.path.join(E["RP_NODE_DIR"], "rp.mjs"), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"rp.mjs {args[0]} failed: {out.stderr[-2000:]}"
    return json.loads(out.stdout.strip().splitlines()[-1])


def to_idp(b, resp):
    """Follows Lintel's redirects until the IdP's SSO URL; pysaml2 reads the AuthnRequest."""
    resp, loc = b.follow(resp, stop=lambda u: u.startswith(idp.sso_url))
    assert loc.startswith(idp.sso_url), f"not sent to the IdP: {resp.status_code} {loc}"
    req, relay, _ = idp.read_request(loc)
    return req, relay


def idp_answers(b, req, relay, u):
    xml = idp.response_xml(u, req.id, ACS, SPID)
    return b.cross_site_post(ACS, {"SAMLResponse": b64(xml), "RelayState": relay})


def end_to_end():
    start = rp("start")
    b = Browser(BASE)
    page = b.get(start["url"])
    assert page.status_code == 200, (page.status_code, page.text[:300])
    action, fields = form_fields(page.text, "/login")
    assert {"email", "csrf", "auth"} <= set(fields), fields
    fields.update(email=E.get("E2E_EMAIL", "lin@acme.test"), password="")
    resp = b.post(urllib.parse.urljoin(page.url, action), fields)
    req, relay = to_idp(b, resp)
    u = {"email": fields["email"], "given_name": "Lin", "family_name": "Conway",
         "groups": ["staff", "acme-admins"]}
    resp = idp_answers(b, req, relay, u)
    assert resp.status_code == 303, (resp.status_code, resp.text[:500])
    resp, callback = b.follow(resp, stop=lambda x: x.startswith(REDIRECT_URI))
    assert callback.startswith(REDIRECT_URI), f"not back at the RP: {resp.status_code} {callback}"
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(callback).query))
    assert "code" in q and q.get("state") == start["state"], q
    got = rp("finish", callback, start["verifier"], start["state"], start["nonce"])
    claims, info = got["claims"], got["userinfo"]
    user, m = api.member_by_email(S["org_id"], u["email"])
    assert user is not None, "no JIT member"
    assert claims["sub"] == user["user_id"], (claims["sub"], user["user_id"])
    assert claims.get("email") == u["email"], claims
    assert (user["first_name"], user["last_name"]) == ("Lin", "Conway"), user
    assert m["user_role"] == "admin", m
    # The `org` scope: the token is about Acme and carries the mapped role.
    assert claims.get("org_id") == S["org_id"] or info.get("org_id") == S["org_id"], (claims, info)
    role = claims.get("role", info.get("role"))
    assert role == "admin", f"role claim {role!r}"
    amr = claims.get("amr")
    assert amr and "saml" in amr, f"amr {amr!r} does not record the SAML login"
    print(f"  ID token: sub={claims['sub']} org={claims.get('org_slug')} role={role} amr={amr}")


T.check("openid-client RP -> hosted login (home-realm discovery) -> pysaml2 IdP -> ACS -> "
        "code -> ID token for the JIT user with the mapped org role", end_to_end)


def org_slug_start():
    b = Browser(BASE)
    req, relay = to_idp(b, b.get(f"/sso/{S['slug']}"))
    u = {"email": "slug@acme.test", "given_name": "Sam", "family_name": "Slug", "groups": []}
    resp = idp_answers(b, req, relay, u)
    assert resp.status_code == 303, (resp.status_code, resp.text[:500])
    final, url = b.follow(resp)
    assert final.status_code == 200 and b.signed_in_as() == u["email"], (url, final.status_code)


T.check("/sso/{org_slug} starts Acme's SSO; signed in", org_slug_start)


def unknown_domain_is_password_login():
    start = rp("start")
    b = Browser(BASE)
    page = b.get(start["url"])
    action, fields = form_fields(page.text, "/login")
    fields.update(email="someone@not-claimed.test", password="")
    resp = b.post(urllib.parse.urljoin(page.url, action), fields)
    loc = resp.headers.get("location", "")
    assert not loc.startswith(idp.sso_url), "an unclaimed domain was sent to Acme's IdP"


T.check("an email of an unclaimed domain is not sent to the IdP", unknown_domain_is_password_login)

T.finish()
