"""Upstream-OIDC conformance against a live Lintel: node `oidc-provider` (idp.mjs) is the
corporate OpenID Provider of org Umbrella; `requests` is the browser.

  - GET the provider's login_url -> 303 to the upstream authorize endpoint with PKCE S256,
    state, nonce and our redirect_uri; the oidc-provider login and consent forms; the
    callback -> signed in; the JIT user exists with mapped names and the group's role.
  - a second login (fresh browser) after the IdP changed the user's names updates them.
  - a provider configured with a wrong client secret: the code exchange fails at the
    upstream token endpoint -> an error page, no session, no user.
  - a callback with a forged state, and a replayed callback: no session.
Env: LINTEL, ADMIN_KEY, WORK (provider JSON files and setup.json from oidc-upstream.sh),
ACCOUNTS (the JSON file idp.mjs reads), UPSTREAM (the oidc-provider issuer).
"""
import html
import json
import os
import re
import sys
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "saml"))
from browser import Api, Browser, Tally, form_fields  # noqa: E402

E = os.environ
BASE = E["LINTEL"].rstrip("/")
WORK = E["WORK"]
UPSTREAM = E["UPSTREAM"].rstrip("/")
api = Api(BASE, E["ADMIN_KEY"])
T = Tally("oidc-upstream")


def load(name):
    with open(os.path.join(WORK, name)) as f:
        return json.load(f)


GOOD = load("provider-good.json")
BAD = load("provider-bad-secret.json")
SETUP = load("setup.json")
ORG = SETUP["good"]["org_id"]


def set_account(login, **claims):
    with open(E["ACCOUNTS"]) as f:
        accounts = json.load(f)
    accounts[login] = claims
    tmp = E["ACCOUNTS"] + ".tmp"
    with open(tmp, "w") as f:
        json.dump(accounts, f)
    os.replace(tmp, E["ACCOUNTS"])


def upstream_login(b, provider, login, start=None):
    """GET login_url (or `start`), check the authorization request, pass oidc-provider's login
    and consent forms; returns (the callback response from Lintel, the callback URL, the
    authorize query)."""
    e = provider["endpoints"]
    r = b.get(start or e["login_url"])
    assert r.status_code in (302, 303), (r.status_code, r.text[:300])
    auth = r.headers["location"]
    assert auth.startswith(UPSTREAM + "/"), f"redirected to {auth}, not to {UPSTREAM}"
    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(auth).query))
    assert q.get("response_type") == "code", q
    assert q.get("client_id") == provider["config"]["client_id"], q
    assert q.get("redirect_uri") == e["redirect_uri"], (q.get("redirect_uri"), e["redirect_uri"])
    assert q.get("code_challenge_method") == "S256" and len(q.get("code_challenge", "")) >= 43, q
    assert len(q.get("state", "")) >= 16 and len(q.get("nonce", "")) >= 16, q
    assert "openid" in q.get("scope", "").split(), q
    resp = b.get(auth)
    for _ in range(20):
        if resp.status_code in (302, 303) and resp.headers["location"].startswith(e["redirect_uri"]):
            cb = resp.headers["location"]
            return b.get(cb), cb, q
        if resp.status_code in (302, 303):
            resp = b.get(urllib.parse.urljoin(resp.url, resp.headers["location"]))
            continue
        assert resp.status_code == 200, (resp.url, resp.status_code, resp.text[:500])
        action, fields = form_fields(resp.text)
        if fields.get("prompt") == "login":
            fields.update(login=login, password="any-password")
        elif fields.get("prompt") != "consent":
            raise AssertionError(f"unexpected oidc-provider page: {fields}")
        resp = b.post(urllib.parse.urljoin(resp.url, action), fields)
    raise AssertionError("never came back to Lintel's redirect_uri")


def assert_signed_in(b, resp, email):
    assert resp.status_code == 303, (resp.status_code, resp.text[:500])
    final, url = b.follow(resp)
    assert final.status_code == 200, (url, final.status_code, final.text[:300])
    assert b.has_cookie("lintel_session"), "no session cookie"
    who = b.signed_in_as()
    assert who == email, f"/account shows {who!r}, expected {email}"


def assert_no_session(b, resp, reasons):
    """An error page naming one of `reasons` (its category), no session."""
    final, url = b.follow(resp)
    assert 400 <= final.status_code < 500, f"{url} answered {final.status_code}: {final.text[:300]}"
    assert final.status_code != 429, "rate limited: the callback itself was not judged"
    assert "text/html" in final.headers.get("content-type", ""), final.headers.get("content-type")
    m = re.search(r"Single sign-on failed \(([^)]*)\)", html.unescape(final.text))
    reason = m.group(1) if m else None
    print(f"     {final.status_code} at {urllib.parse.urlsplit(url).path}: {reason}")
    assert reason and any(r in reason for r in reasons), f"reason {reason!r}, expected one of {reasons}"
    assert not b.has_cookie("lintel_session"), "a session cookie was set"
    assert b.signed_in_as() is None, "/account answers 200"


# A callback this browser did not start, or already used.
CORR = ["started in another browser", "already used"]
CAROL = dict(email="carol@umbrella.test", given_name="Carol", family_name="Danvers",
             groups=["staff", "umbrella-admins"])
saved = {}


def first_login():
    set_account("carol", **CAROL)
    b = Browser(BASE)
    resp, cb, _ = upstream_login(b, GOOD, "carol")
    saved["callback"] = cb
    saved["cookies"] = [c for c in b.s.cookies if c.name != "lintel_session"]
    assert_signed_in(b, resp, CAROL["email"])
    u, m = api.member_by_email(ORG, CAROL["email"])
    assert u is not None, "no JIT member"
    assert (u["first_name"], u["last_name"]) == ("Carol", "Danvers"), u
    assert m["user_role"] == "admin", f"role {m['user_role']} (group umbrella-admins maps to admin)"
    saved["user_id"] = u["user_id"]


T.check("login through oidc-provider: signed in; JIT user with names and the group's role", first_login)


def callback_replay():
    assert "callback" in saved, "no first login"
    b = Browser(BASE)
    assert_no_session(b, b.get(saved["callback"]), CORR)
    # With the first browser's lintel_sso cookie too (a thief who took both).
    thief = Browser(BASE)
    for c in saved["cookies"]:
        thief.s.cookies.set_cookie(c)
    assert thief.has_cookie("lintel_sso"), "the first login left no lintel_sso cookie"
    assert_no_session(thief, thief.get(saved["callback"]), CORR)


T.check("the same callback URL again (code and state used): no session", callback_replay)


def second_login_updates():
    set_account("carol", **dict(CAROL, given_name="Carol S.", family_name="Danvers-Rambeau"))
    b = Browser(BASE)
    resp, _, _ = upstream_login(b, GOOD, "carol")
    assert_signed_in(b, resp, CAROL["email"])
    u, _ = api.member_by_email(ORG, CAROL["email"])
    assert u["user_id"] == saved.get("user_id"), "a second user was created"
    assert (u["first_name"], u["last_name"]) == ("Carol S.", "Danvers-Rambeau"), u


T.check("second login: same user, names updated from the IdP", second_login_updates)


def default_role():
    dave = dict(email="dave@umbrella.test", given_name="Dave", family_name="Lister", groups=["staff"])
    set_account("dave", **dave)
    b = Browser(BASE)
    resp, _, _ = upstream_login(b, GOOD, "dave")
    assert_signed_in(b, resp, dave["email"])
    _, m = api.member_by_email(ORG, dave["email"])
    assert m and m["user_role"] == "member", m


T.check("a user of no mapped group: default role", default_role)


def org_slug_start():
    b = Browser(BASE)
    resp, _, _ = upstream_login(b, GOOD, "dave", start=f"/sso/{SETUP['good']['slug']}")
    assert_signed_in(b, resp, "dave@umbrella.test")


T.check("/sso/{org_slug} starts the org's upstream OIDC login; signed in", org_slug_start)


def forged_state():
    b = Browser(BASE)
    e = GOOD["endpoints"]
    r = b.get(e["login_url"])
    assert r.status_code in (302, 303)
    assert_no_session(b, b.get(e["redirect_uri"] + "?code=forged&state=forged"), CORR)


T.check("a callback with a state Lintel never issued: no session", forged_state)


def wrong_secret():
    eve = dict(email="eve@initech.test", given_name="Eve", family_name="Wrong", groups=[])
    set_account("eve", **eve)
    b = Browser(BASE)
    resp, _, _ = upstream_login(b, BAD, "eve")
    assert_no_session(b, resp, ["token_endpoint"])
    assert api.member_by_email(SETUP["bad"]["org_id"], eve["email"])[0] is None, "JIT happened"


T.check("provider with a wrong client secret: error page, no session, no user", wrong_secret)

T.finish()
