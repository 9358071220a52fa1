// A relying party nobody here wrote (openid-client v6) drives Lintel end to end:
// discovery, authorization URL with PKCE/state/nonce, the hosted login form (posted by this
// script, as a browser would), code exchange with ID-token validation (signature by JWKS,
// iss, aud, nonce, RFC 9207 iss), userinfo, refresh, revocation and RP-initiated logout.
// Env: ISSUER, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, POST_LOGOUT_URI, EMAIL, PASSWORD.
import * as client from 'openid-client';
import assert from 'node:assert/strict';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing ${k}`);
  return v;
};
const issuer = new URL(env('ISSUER'));
const redirectUri = env('REDIRECT_URI');
const cookies = new Map();
const keep = (resp) => {
  for (const c of resp.headers.getSetCookie()) {
    const [kv, ...attrs] = c.split(';');
    const i = kv.indexOf('=');
    const name = kv.slice(0, i);
    if (attrs.some((a) => a.trim() === 'Max-Age=0')) cookies.delete(name);
    else cookies.set(name, kv.slice(i + 1));
  }
};
const cookieHeader = () => [...cookies].map(([k, v]) => `${k}=${v}`).join('; ');
const browse = async (url, init = {}) => {
  const resp = await fetch(url, { ...init, redirect: 'manual', headers: { ...(init.headers || {}), cookie: cookieHeader() } });
  keep(resp);
  return resp;
};
const unescape = (s) => s.replaceAll('&#x2f;', '/').replaceAll('&#x27;', "'").replaceAll('&quot;', '"')
  .replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&amp;', '&');
const hidden = (html, name) => {
  const m = html.match(new RegExp(`name="${name}" value="([^"]*)"`));
  assert.ok(m, `no ${name} field in the page`);
  return unescape(m[1]);
};

const config = await client.discovery(issuer, env('CLIENT_ID'), undefined, client.ClientSecretBasic(env('CLIENT_SECRET')), {
  execute: [client.allowInsecureRequests],
});
const meta = config.serverMetadata();
assert.equal(meta.issuer, issuer.href.replace(/\/$/, ''));
console.log('discovery: ok');

const verifier = client.randomPKCECodeVerifier();
const challenge = await client.calculatePKCECodeChallenge(verifier);
const state = client.randomState();
const nonce = client.randomNonce();
const authUrl = client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri,
  scope: 'openid email profile',
  code_challenge: challenge,
  code_challenge_method: 'S256',
  state,
  nonce,
});
let resp = await browse(authUrl);
assert.equal(resp.status, 200, 'the login page');
const page = await resp.text();
const form = new URLSearchParams({
  email: env('EMAIL'),
  password: env('PASSWORD'),
  csrf: hidden(page, 'csrf'),
  auth: hidden(page, 'auth'),
});
resp = await browse(new URL('/login', issuer), {
  method: 'POST',
  body: form,
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
});
assert.equal(resp.status, 303, `login answered ${resp.status}: ${await resp.text()}`);
const callback = new URL(resp.headers.get('location'));
assert.equal(callback.origin + callback.pathname, redirectUri);
console.log('hosted login: ok');

const tokens = await client.authorizationCodeGrant(config, callback, {
  pkceCodeVerifier: verifier,
  expectedState: state,
  expectedNonce: nonce,
  idTokenExpected: true,
});
const claims = tokens.claims();
assert.equal(claims.email, env('EMAIL'));
assert.ok(claims.sid && claims.auth_time && claims.at_hash);
console.log('code exchange + ID token validation: ok');

const info = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
assert.equal(info.sub, claims.sub);
assert.equal(info.email, env('EMAIL'));
console.log('userinfo: ok');

const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
assert.notEqual(refreshed.refresh_token, tokens.refresh_token, 'refresh tokens rotate');
assert.equal(refreshed.claims().sub, claims.sub);
console.log('refresh: ok');

const intro = await client.tokenIntrospection(config, refreshed.access_token);
assert.equal(intro.active, true);
await client.tokenRevocation(config, refreshed.refresh_token);
const after = await client.tokenIntrospection(config, refreshed.refresh_token);
assert.equal(after.active, false);
console.log('introspection + revocation: ok');

const logoutState = client.randomState();
const endUrl = client.buildEndSessionUrl(config, {
  id_token_hint: tokens.id_token,
  post_logout_redirect_uri: env('POST_LOGOUT_URI'),
  state: logoutState,
});
resp = await browse(endUrl);
assert.equal(resp.status, 303);
const back = new URL(resp.headers.get('location'));
assert.equal(back.searchParams.get('state'), logoutState);
assert.ok(!cookies.has('lintel_session'));
// Signed out: prompt=none now answers login_required.
resp = await browse(client.buildAuthorizationUrl(config, {
  redirect_uri: redirectUri, scope: 'openid', code_challenge: challenge,
  code_challenge_method: 'S256', state, prompt: 'none',
}));
assert.equal(new URL(resp.headers.get('location')).searchParams.get('error'), 'login_required');
console.log('logout: ok');
console.log('openid-client RP: all checks passed');
