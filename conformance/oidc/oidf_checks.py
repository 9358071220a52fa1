"""Checks modelled on the OpenID Foundation's Basic OP and Config OP test modules, run
against a live Lintel (a browser is simulated: the script posts the hosted login form).
Each check prints `ok <module>`; the first failure raises.

Env: ISSUER, CLIENT_ID, CLIENT_SECRET (client_secret_basic), POST_CLIENT_ID,
POST_CLIENT_SECRET (client_secret_post), RS256_CLIENT_ID, RS256_CLIENT_SECRET,
REDIRECT_URI, EMAIL, PASSWORD."""
import base64
import hashlib
import html
import os
import re
import secrets
import time
from urllib.parse import urlencode, urlparse, parse_qs

import requests
from authlib.jose import JsonWebKey, JsonWebToken

E = os.environ
ISSUER = E["ISSUER"].rstrip("/")
REDIRECT = E["REDIRECT_URI"]
META = requests.get(ISSUER + "/.well-known/openid-configuration", timeout=10).json()
JWKS = JsonWebKey.import_key_set(requests.get(META["jwks_uri"], timeout=10).json())


def ok(name):
    print("ok", name)


def pkce():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


class Browser:
    def __init__(self):
        self.s = requests.Session()

    def get(self, url):
        return self.s.get(url, allow_redirects=False, timeout=10)

    def login(self, page, email=None, password=None):
        assert page.status_code == 200, (page.status_code, page.text[:200])
        field = lambda n: html.unescape(re.search(r'name="%s" value="([^"]*)"' % n, page.text).group(1))
        return self.s.post(ISSUER + "/login", data={
            "email": email or E["EMAIL"], "password": password or E["PASSWORD"],
            "csrf": field("csrf"), "auth": field("auth")}, allow_redirects=False, timeout=10)


def auth_url(client_id=None, **extra):
    verifier, challenge = pkce()
    params = {"client_id": client_id or E["CLIENT_ID"], "redirect_uri": REDIRECT, "response_type": "code",
              "scope": "openid email profile", "state": secrets.token_urlsafe(8),
              "nonce": secrets.token_urlsafe(8), "code_challenge": challenge, "code_challenge_method": "S256"}
    params.update({k: v for k, v in extra.items() if v is not None})
    for k in [k for k, v in extra.items() if v is None]:
        params.pop(k, None)
    return META["authorization_endpoint"] + "?" + urlencode(params), params, verifier


def callback(resp):
    assert resp.status_code == 303, (resp.status_code, resp.text[:300])
    loc = resp.headers["location"]
    assert loc.startswith(REDIRECT), loc
    q = {k: v[0] for k, v in parse_qs(urlparse(loc).query).items()}
    return q


def exchange(code, verifier, client="basic"):
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT, "code_verifier": verifier}
    if client == "post":
        data.update(client_id=E["POST_CLIENT_ID"], client_secret=E["POST_CLIENT_SECRET"])
        return requests.post(META["token_endpoint"], data=data, timeout=10)
    cid, sec = (E["RS256_CLIENT_ID"], E["RS256_CLIENT_SECRET"]) if client == "rs256" else (E["CLIENT_ID"], E["CLIENT_SECRET"])
    return requests.post(META["token_endpoint"], data=data, auth=(cid, sec), timeout=10)


def id_token(tokens, client_id, nonce, alg="ES256"):
    claims = JsonWebToken([alg]).decode(tokens["id_token"], JWKS, claims_options={
        "iss": {"essential": True, "value": ISSUER},
        "aud": {"essential": True, "value": client_id},
        "nonce": {"essential": True, "value": nonce},
        "exp": {"essential": True}, "iat": {"essential": True}, "sub": {"essential": True},
    })
    claims.validate()
    at = tokens["access_token"].encode()
    digest = hashlib.sha256(at).digest()
    assert claims["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()
    return claims


def full_login(b, client_id=None, **extra):
    url, params, verifier = auth_url(client_id, **extra)
    page = b.get(url)
    resp = page if page.status_code == 303 else b.login(page)
    q = callback(resp)
    assert q["state"] == params["state"] and q["iss"] == ISSUER
    return q["code"], verifier, params


# oidcc-discovery-endpoint-verification (Config OP)
for k in ["issuer", "authorization_endpoint", "token_endpoint", "userinfo_endpoint", "jwks_uri",
          "response_types_supported", "subject_types_supported", "id_token_signing_alg_values_supported"]:
    assert k in META, k
assert META["issuer"] == ISSUER
assert "RS256" in META["id_token_signing_alg_values_supported"]
assert "code" in META["response_types_supported"]
assert all(k.get("kid") and k.get("alg") for k in requests.get(META["jwks_uri"], timeout=10).json()["keys"])
ok("oidcc-discovery-endpoint-verification")

# oidcc-server
b = Browser()
code, verifier, params = full_login(b)
r = exchange(code, verifier)
assert r.status_code == 200, r.text
tokens = r.json()
claims = id_token(tokens, E["CLIENT_ID"], params["nonce"])
ok("oidcc-server")

# oidcc-codereuse
r = exchange(code, verifier)
assert r.status_code == 400 and r.json()["error"] == "invalid_grant", r.text
assert requests.get(META["userinfo_endpoint"], headers={"Authorization": "Bearer " + tokens["access_token"]}, timeout=10).status_code == 401
ok("oidcc-codereuse")

# oidcc-userinfo-get / -post-header / -post-body
code, verifier, params = full_login(b)
tokens = exchange(code, verifier).json()
at = tokens["access_token"]
u1 = requests.get(META["userinfo_endpoint"], headers={"Authorization": "Bearer " + at}, timeout=10)
u2 = requests.post(META["userinfo_endpoint"], headers={"Authorization": "Bearer " + at}, timeout=10)
u3 = requests.post(META["userinfo_endpoint"], data={"access_token": at}, timeout=10)
for u in (u1, u2, u3):
    assert u.status_code == 200 and u.json()["sub"] == claims["sub"], u.text
ok("oidcc-userinfo-get")
ok("oidcc-userinfo-post-header")
ok("oidcc-userinfo-post-body")

# oidcc-refresh-token
r = requests.post(META["token_endpoint"], data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
                  auth=(E["CLIENT_ID"], E["CLIENT_SECRET"]), timeout=10)
assert r.status_code == 200, r.text
new = r.json()
assert new["refresh_token"] != tokens["refresh_token"]
assert JsonWebToken(["ES256"]).decode(new["id_token"], JWKS)["sub"] == claims["sub"]
ok("oidcc-refresh-token")

# oidcc-ensure-registered-redirect-uri
url, _, _ = auth_url(redirect_uri="https://attacker.example/cb")
r = b.get(url)
assert r.status_code == 400 and "location" not in r.headers
ok("oidcc-ensure-registered-redirect-uri")

# oidcc-response-type-missing
url, params, _ = auth_url(response_type=None)
q = callback(b.get(url))
assert q["error"] in ("invalid_request", "unsupported_response_type") and q["state"] == params["state"]
ok("oidcc-response-type-missing")

# oidcc-unknown-parameters, oidcc-ensure-other-scope-order-succeeds
code, verifier, params = full_login(b, extra_param="ignored", scope="email openid")
assert exchange(code, verifier).status_code == 200
ok("oidcc-unknown-parameters")
ok("oidcc-ensure-other-scope-order-succeeds")

# oidcc-id-token-hint: prompt=none with the hint of the signed-in user
code, verifier, params = full_login(b, prompt="none", id_token_hint=tokens["id_token"])
assert exchange(code, verifier).status_code == 200
ok("oidcc-id-token-hint")

# oidcc-prompt-login: a signed-in user is asked again; auth_time moves on
time.sleep(1.1)
url, params, verifier = auth_url(prompt="login")
page = b.get(url)
assert page.status_code == 200 and 'name="password"' in page.text
q = callback(b.login(page))
again = id_token(exchange(q["code"], verifier).json(), E["CLIENT_ID"], params["nonce"])
assert again["auth_time"] > claims["auth_time"]
ok("oidcc-prompt-login")

# oidcc-max-age-1: after more than a second, max_age=1 asks again
time.sleep(2)
url, params, verifier = auth_url(max_age="1")
page = b.get(url)
assert page.status_code == 200 and 'name="password"' in page.text
q = callback(b.login(page))
c = id_token(exchange(q["code"], verifier).json(), E["CLIENT_ID"], params["nonce"])
assert c["auth_time"] >= int(time.time()) - 5
ok("oidcc-max-age-1")

# oidcc-prompt-none-not-logged-in
fresh = Browser()
url, params, _ = auth_url(prompt="none")
q = callback(fresh.get(url))
assert q["error"] == "login_required" and q["state"] == params["state"] and q["iss"] == ISSUER
ok("oidcc-prompt-none-not-logged-in")

# oidcc-login-hint
url, _, _ = auth_url(login_hint="someone@else.test")
page = fresh.get(url)
assert page.status_code == 200 and 'value="someone@else.test"' in page.text
ok("oidcc-login-hint")

# oidcc-client-secret-post
code, verifier, params = full_login(b, client_id=E["POST_CLIENT_ID"])
r = exchange(code, verifier, client="post")
assert r.status_code == 200, r.text
id_token(r.json(), E["POST_CLIENT_ID"], params["nonce"])
ok("oidcc-client-secret-post")

# oidcc-idtoken-rs256
code, verifier, params = full_login(b, client_id=E["RS256_CLIENT_ID"])
r = exchange(code, verifier, client="rs256")
assert r.status_code == 200, r.text
id_token(r.json(), E["RS256_CLIENT_ID"], params["nonce"], alg="RS256")
ok("oidcc-idtoken-rs256")

# oidcc-request-uri-unsigned / request objects: refused with the registered codes
url, params, _ = auth_url(request_uri="https://rp.example/req")
assert callback(b.get(url))["error"] == "request_uri_not_supported"
url, params, _ = auth_url(request="eyJhbGciOiJub25lIn0.e30.")
assert callback(b.get(url))["error"] == "request_not_supported"
ok("oidcc-ensure-request-object-and-request-uri-refused")
print("OIDF-style checks: all passed")
