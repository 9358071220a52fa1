// The corporate OpenID Provider of the upstream-OIDC conformance run: node `oidc-provider`
// (panva), nobody here wrote it. One confidential client (client_secret_basic) whose
// redirect URIs are Lintel's `endpoints.redirect_uri`; the built-in devInteractions login and
// consent pages (any login name, any password); accounts and their claims are read from a
// JSON file on every lookup, so the driver can change a user's names between two logins.
// Env: PORT, CLIENT_ID, CLIENT_SECRET, REDIRECT_URIS (comma-separated), ACCOUNTS (file:
// {"login": {"email", "given_name", "family_name", "groups"}}).
import { readFileSync } from 'node:fs';
import Provider from 'oidc-provider';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing ${k}`);
  return v;
};
const port = Number(env('PORT'));
const issuer = `http://127.0.0.1:${port}`;
const accounts = () => JSON.parse(readFileSync(env('ACCOUNTS'), 'utf8'));

const provider = new Provider(issuer, {
  clients: [{
    client_id: env('CLIENT_ID'),
    client_secret: env('CLIENT_SECRET'),
    redirect_uris: env('REDIRECT_URIS').split(','),
    grant_types: ['authorization_code'],
    response_types: ['code'],
    token_endpoint_auth_method: 'client_secret_basic',
  }],
  claims: {
    openid: ['sub'],
    email: ['email', 'email_verified'],
    profile: ['given_name', 'family_name', 'name'],
    groups: ['groups'],
  },
  // Put the scope claims into the ID token too (not only userinfo).
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  cookies: { keys: ['conformance-only-cookie-key-not-secret'] },
  async findAccount(ctx, id) {
    const a = accounts()[id];
    if (!a) return undefined;
    return {
      accountId: id,
      async claims() {
        return {
          sub: id,
          email: a.email,
          email_verified: true,
          given_name: a.given_name,
          family_name: a.family_name,
          name: `${a.given_name} ${a.family_name}`,
          groups: a.groups ?? [],
        };
      },
    };
  },
});
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.on('grant.error', (ctx, err) => console.error('grant.error', err.message, err.error_description ?? ''));
provider.listen(port, '127.0.0.1', () => console.log(`oidc-provider listening on ${issuer}`));
