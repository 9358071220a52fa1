// The relying party of the SAML end-to-end check: openid-client v6 (npm), nobody here wrote it.
//   node rp.mjs start          -> {"url", "verifier", "state", "nonce"}: an authorization request
//                                 (PKCE S256, state, nonce, scope openid email profile org)
//   node rp.mjs finish CALLBACK VERIFIER STATE NONCE
//                              -> {"claims": validated ID token claims, "userinfo": {...}}
// Env: ISSUER, CLIENT_ID, CLIENT_SECRET, REDIRECT_URI.
import * as client from 'openid-client';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing ${k}`);
  return v;
};
const config = await client.discovery(new URL(env('ISSUER')), env('CLIENT_ID'), undefined,
  client.ClientSecretBasic(env('CLIENT_SECRET')), { execute: [client.allowInsecureRequests] });

const [cmd, ...args] = process.argv.slice(2);
if (cmd === 'start') {
  const verifier = client.randomPKCECodeVerifier();
  const state = client.randomState();
  const nonce = client.randomNonce();
  const url = client.buildAuthorizationUrl(config, {
    redirect_uri: env('REDIRECT_URI'),
    scope: 'openid email profile org',
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: 'S256',
    state,
    nonce,
  });
  console.log(JSON.stringify({ url: url.href, verifier, state, nonce }));
} else if (cmd === 'finish') {
  const [callback, verifier, state, nonce] = args;
  const tokens = await client.authorizationCodeGrant(config, new URL(callback), {
    pkceCodeVerifier: verifier,
    expectedState: state,
    expectedNonce: nonce,
    idTokenExpected: true,
  });
  const claims = tokens.claims();
  const userinfo = await client.fetchUserInfo(config, tokens.access_token, claims.sub);
  console.log(JSON.stringify({ claims, userinfo }));
} else {
  throw new Error('usage: rp.mjs start | finish CALLBACK VERIFIER STATE NONCE');
}
