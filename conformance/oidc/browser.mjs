// The hosted pages in a real headless browser (Debian's chromium driven by playwright-core):
// sign in (fields found by their labels), choose an organization, enrol TOTP on the account
// page, sign out with the confirmation form, then sign in again through the MFA step with a
// recovery code. Screenshots go to $SHOTS (a CI artifact under target/).
// Env: ISSUER, ORG_CLIENT_ID, REDIRECT_URI, EMAIL, PASSWORD, SHOTS.
import { chromium } from 'playwright-core';
import assert from 'node:assert/strict';
import crypto from 'node:crypto';
import fs from 'node:fs';

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`missing ${k}`);
  return v;
};
const issuer = env('ISSUER');
const redirect = env('REDIRECT_URI');
const shots = env('SHOTS');
fs.mkdirSync(shots, { recursive: true });

// RFC 6238 TOTP (SHA-1, 6 digits, 30 s) from a base32 key.
const totp = (base32) => {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of base32.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const counter = Buffer.alloc(8);
  counter.writeBigUInt64BE(BigInt(Math.floor(Date.now() / 30000)));
  const h = crypto.createHmac('sha1', key).update(counter).digest();
  const o = h[h.length - 1] & 0xf;
  const n = ((h[o] & 0x7f) << 24) | (h[o + 1] << 16) | (h[o + 2] << 8) | h[o + 3];
  return String(n % 1_000_000).padStart(6, '0');
};

const authUrl = () => {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  const u = new URL('/oauth2/authorize', issuer);
  u.search = new URLSearchParams({
    client_id: env('ORG_CLIENT_ID'), redirect_uri: redirect, response_type: 'code',
    scope: 'openid org', state: 'browser-state', nonce: 'browser-nonce',
    code_challenge: challenge, code_challenge_method: 'S256',
  }).toString();
  return u.toString();
};

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--no-sandbox'] });
try {
  const context = await browser.newContext();
  const page = await context.newPage();
  // The relying party's callback: answered here, its URL kept.
  const callbacks = [];
  await page.route(`${redirect}**`, (route) => {
    callbacks.push(route.request().url());
    route.fulfill({ status: 200, contentType: 'text/html', body: '<h1>RP callback</h1>' });
  });

  // 1. Sign in, then the organization picker.
  await page.goto(authUrl());
  await page.getByLabel('Email').fill(env('EMAIL'));
  await page.getByLabel('Password').fill(env('PASSWORD'));
  await page.screenshot({ path: `${shots}/1-login.png` });
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Choose an organization' }).waitFor();
  await page.screenshot({ path: `${shots}/2-org-picker.png` });
  await page.getByLabel('Beta Org').check();
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByRole('heading', { name: 'RP callback' }).waitFor();
  let cb = new URL(callbacks.at(-1));
  assert.ok(cb.searchParams.get('code'));
  assert.equal(cb.searchParams.get('state'), 'browser-state');
  console.log('login + org picker: ok');

  // 2. The account page: enrol TOTP, keep a recovery code.
  await page.goto(new URL('/account', issuer).toString());
  await page.getByRole('button', { name: 'Set up an authenticator app' }).click();
  await page.getByRole('img', { name: 'QR code of the authenticator link' }).waitFor();
  const key = await page.getByLabel('Key').inputValue();
  await page.getByLabel('Code', { exact: true }).fill(totp(key));
  await page.screenshot({ path: `${shots}/3-totp.png` });
  await page.getByRole('button', { name: 'Confirm' }).click();
  await page.getByRole('heading', { name: 'Your recovery codes' }).waitFor();
  const recovery = (await page.locator('code').first().textContent()).trim();
  await page.screenshot({ path: `${shots}/4-recovery-codes.png` });
  console.log('TOTP enrolment: ok');

  // 3. Sign out through the confirmation form.
  await page.goto(new URL('/oauth2/logout', issuer).toString());
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'You are signed out' }).waitFor();
  await page.screenshot({ path: `${shots}/5-signed-out.png` });
  console.log('logout: ok');

  // 4. Sign in again: password, then the MFA step (a recovery code), then the picker.
  await page.goto(authUrl());
  await page.getByLabel('Email').fill(env('EMAIL'));
  await page.getByLabel('Password').fill(env('PASSWORD'));
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Verification code' }).waitFor();
  await page.screenshot({ path: `${shots}/6-mfa.png` });
  await page.getByLabel(/authenticator app/).fill(recovery);
  await page.getByRole('button', { name: 'Verify' }).click();
  await page.getByRole('heading', { name: 'Choose an organization' }).waitFor();
  await page.getByLabel('Alpha Org').check();
  await page.getByRole('button', { name: 'Continue' }).click();
  await page.getByRole('heading', { name: 'RP callback' }).waitFor();
  cb = new URL(callbacks.at(-1));
  assert.ok(cb.searchParams.get('code'));
  console.log('MFA login: ok');
  console.log('browser: all checks passed');
} finally {
  await browser.close();
}
