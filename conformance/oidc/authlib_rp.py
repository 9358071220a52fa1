"""A second relying party nobody here wrote (Authlib): discovery, PKCE authorization URL,
the hosted login form, code exchange with ID-token validation against the JWKS, userinfo,
refresh, revocation. Env as openid_client_rp.mjs."""
import os
import re
import html
import requests
from authlib.integrations.requests_client import OAuth2Session
from authlib.jose import JsonWebToken, JsonWebKey
from authlib.common.security import generate_token

E = os.environ
issuer = E["ISSUER"].rstrip("/")
meta = requests.get(issuer + "/.well-known/openid-configuration", timeout=10).json()
assert meta["issuer"] == issuer
jwks = JsonWebKey.import_key_set(requests.get(meta["jwks_uri"], timeout=10).json())
print("discovery: ok")

rp = OAuth2Session(E["CLIENT_ID"], E["CLIENT_SECRET"], scope="openid email profile",
                   redirect_uri=E["REDIRECT_URI"], code_challenge_method="S256",
                   token_endpoint_auth_method="client_secret_basic")
verifier = generate_token(48)
nonce = generate_token(20)
url, state = rp.create_authorization_url(meta["authorization_endpoint"], code_verifier=verifier, nonce=nonce)

browser = requests.Session()
page = browser.get(url, allow_redirects=False, timeout=10)
assert page.status_code == 200, page.status_code
field = lambda n: html.unescape(re.search(r'name="%s" value="([^"]*)"' % n, page.text).group(1))
done = browser.post(issuer + "/login", data={"email": E["EMAIL"], "password": E["PASSWORD"],
                    "csrf": field("csrf"), "auth": field("auth")}, allow_redirects=False, timeout=10)
assert done.status_code == 303, (done.status_code, done.text)
callback = done.headers["location"]
print("hosted login: ok")

token = rp.fetch_token(meta["token_endpoint"], authorization_response=callback, code_verifier=verifier, state=state)
jwt = JsonWebToken(["ES256"])
claims = jwt.decode(token["id_token"], jwks, claims_options={
    "iss": {"essential": True, "value": issuer},
    "aud": {"essential": True, "value": E["CLIENT_ID"]},
    "nonce": {"essential": True, "value": nonce},
})
claims.validate()
assert claims["email"] == E["EMAIL"]
print("code exchange + ID token validation: ok")

info = rp.get(meta["userinfo_endpoint"]).json()
assert info["sub"] == claims["sub"]
print("userinfo: ok")

new = rp.refresh_token(meta["token_endpoint"], refresh_token=token["refresh_token"])
assert new["refresh_token"] != token["refresh_token"]
print("refresh: ok")

r = rp.revoke_token(meta["revocation_endpoint"], token=new["refresh_token"], token_type_hint="refresh_token")
assert r.status_code == 200
again = requests.post(meta["token_endpoint"], auth=(E["CLIENT_ID"], E["CLIENT_SECRET"]),
                      data={"grant_type": "refresh_token", "refresh_token": new["refresh_token"]}, timeout=10)
assert again.status_code == 400 and again.json()["error"] == "invalid_grant"
print("revocation: ok")
print("Authlib RP: all checks passed")
