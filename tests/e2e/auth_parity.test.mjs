// Answers that must be GoTrue's (Supabase Auth 2.18x), through supabase-js:
// redirects, e-mail validation on every path, invites whose mail bounces,
// the admin user list, generate_link's sign-up and e-mail-change types,
// GoTrue's JWK array for signing keys, the dev configuration's rate limits,
// and WebAuthn as an MFA factor (issue 14).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, randomUUID, createPublicKey, verify } from 'node:crypto';
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { createClient } from '@supabase/supabase-js';
import { env, sql, eventually, proxyWith } from './helpers.mjs';
import { ORIGIN, RP_ID, authenticator, b64url } from './authenticator.mjs';

const maildir = process.env.FLUXBASE_MAILDIR;
const opts = { auth: { persistSession: false, autoRefreshToken: false } };
const client = (url = env.url) => createClient(url, env.anonKey, opts);
const admin = (url = env.url) => createClient(url, env.serviceKey, opts).auth.admin;
const unique = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const SITE = 'http://localhost:3000';

/** Links in the messages received for `to`, oldest first. */
function links(to) {
  let files = [];
  try {
    files = readdirSync(maildir).sort();
  } catch {
    return [];
  }
  return files
    .map((f) => readFileSync(join(maildir, f), 'utf8'))
    .filter((raw) => raw.startsWith(`X-Envelope-To: ${to}\r\n`))
    .map((raw) => raw.replace(/=\r?\n/g, '').replace(/=3D/g, '='))
    .map((raw) => /href="([^"]+)"/.exec(raw)?.[1].replace(/&amp;/g, '&'));
}

test('a redirect_to that is not allowed falls back to the site URL (200), as GoTrue', async () => {
  const email = unique('redirect');
  assert.equal((await admin().createUser({ email, password: 'redirect-pass-1', email_confirm: true })).error, null);
  const { error } = await client().auth.resetPasswordForEmail(email, { redirectTo: 'https://evil.example/steal' });
  assert.equal(error, null, 'not a 422');
  assert.ok(await eventually(async () => links(email).length === 1, 10000));
  const link = new URL(links(email)[0]);
  assert.equal(link.searchParams.get('redirect_to'), SITE);
  // The allow-list still decides where links lead.
  const { data } = await admin().generateLink({ type: 'magiclink', email, options: { redirectTo: `${SITE}/ok` } });
  assert.equal(data.properties.redirect_to, `${SITE}/ok`);
  const other = await admin().generateLink({ type: 'magiclink', email, options: { redirectTo: 'https://evil.example/' } });
  assert.equal(other.data.properties.redirect_to, SITE);
  const followed = await fetch(other.data.properties.action_link, { redirect: 'manual' });
  assert.equal(followed.status, 303);
  assert.ok(followed.headers.get('location').startsWith(`${SITE}#access_token=`));
});

test('e-mail addresses are validated on admin paths too: 400 validation_failed', async () => {
  const invalid = ['not an email@example.com', 'trailing-dot@example.com.', 'two@@example.com', 'a@-x.example'];
  for (const email of invalid) {
    for (const [name, call] of [
      ['createUser', () => admin().createUser({ email, password: 'whatever-1' })],
      ['inviteUserByEmail', () => admin().inviteUserByEmail(email)],
      ['generateLink', () => admin().generateLink({ type: 'magiclink', email })],
      ['signUp', () => client().auth.signUp({ email, password: 'whatever-1' })],
    ]) {
      const { error } = await call();
      assert.equal(error?.status, 400, `${name} ${email}`);
      assert.equal(error?.code, 'validation_failed', `${name} ${email}`);
      assert.equal(error?.message, 'Unable to validate email address: invalid format', `${name} ${email}`);
    }
  }
  assert.equal(sql(`SELECT count(*) FROM auth.users WHERE email LIKE '%@-x.example' OR email LIKE 'not an email%'`), '0');
  const missing = await fetch(`${env.url}/auth/v1/invite`, {
    method: 'POST',
    headers: { apikey: env.serviceKey, Authorization: `Bearer ${env.serviceKey}`, 'content-type': 'application/json' },
    body: '{}',
  });
  assert.equal(missing.status, 400);
  assert.equal((await missing.json()).msg, 'An email address is required');
});

test('an invite whose e-mail the relay refuses is a 400 and leaves no user behind', async () => {
  const email = unique('reject-invite');
  const { data, error } = await admin().inviteUserByEmail(email);
  assert.equal(data.user, null);
  assert.equal(error?.status, 400);
  assert.equal(error?.code, 'email_address_invalid');
  assert.equal(error?.message, `Email address "${email}" is invalid`);
  assert.equal(sql(`SELECT count(*) FROM auth.users WHERE email = '${email}'`), '0', 'no half-made user');
  // The same for a sign-in code that would have created the user.
  const otp = unique('reject-otp');
  assert.equal((await client().auth.signInWithOtp({ email: otp })).error?.code, 'email_address_invalid');
  assert.equal(sql(`SELECT count(*) FROM auth.users WHERE email = '${otp}'`), '0');
  // An invitation that can be delivered still works, and a confirmed address is refused.
  const ok = unique('invited');
  assert.equal((await admin().inviteUserByEmail(ok)).error, null);
  const taken = unique('taken');
  await admin().createUser({ email: taken, password: 'taken-pass-1', email_confirm: true });
  const again = await admin().inviteUserByEmail(taken);
  assert.equal(again.error?.status, 422);
  assert.equal(again.error?.code, 'email_exists');
});

test('GET /admin/users lists newest first; bad page and per_page are refused as GoTrue does', async () => {
  const first = unique('older');
  const second = unique('newer');
  await admin().createUser({ email: first, password: 'list-pass-1' });
  await sleep(20);
  await admin().createUser({ email: second, password: 'list-pass-1' });
  const { data, error } = await admin().listUsers({ page: 1, perPage: 2 });
  assert.equal(error, null);
  assert.deepEqual(data.users.map((u) => u.email), [second, first]);
  const times = (await admin().listUsers({ page: 1, perPage: 50 })).data.users.map((u) => Date.parse(u.created_at));
  assert.deepEqual(times, [...times].sort((a, b) => b - a));
  const headers = { apikey: env.serviceKey, Authorization: `Bearer ${env.serviceKey}` };
  for (const [query, msg] of [
    ['page=abc', 'Bad Pagination Parameters: strconv.ParseUint: parsing "abc": invalid syntax'],
    ['per_page=-1', 'Bad Pagination Parameters: strconv.ParseUint: parsing "-1": invalid syntax'],
    ['per_page=0', 'Bad Pagination Parameters: per_page must be greater than 0'],
    ['page=1.5', 'Bad Pagination Parameters: strconv.ParseUint: parsing "1.5": invalid syntax'],
  ]) {
    const res = await fetch(`${env.url}/auth/v1/admin/users?${query}`, { headers });
    assert.equal(res.status, 400, query);
    const body = await res.json();
    assert.deepEqual([body.error_code, body.msg], ['validation_failed', msg], query);
  }
});

test('admin listFactors of an unknown user is 404 user_not_found', async () => {
  const { data, error } = await admin().mfa.listFactors({ userId: randomUUID() });
  assert.equal(data, null);
  assert.equal(error?.status, 404);
  assert.equal(error?.code, 'user_not_found');
  const email = unique('factors');
  const { data: created } = await admin().createUser({ email, password: 'factor-pass-1' });
  const listed = await admin().mfa.listFactors({ userId: created.user.id });
  assert.equal(listed.error, null);
  assert.deepEqual(listed.data.factors, []);
});

test('generate_link signup: the link or code confirms the new user, who signs in with the password', async () => {
  const email = unique('genlink-signup');
  const { data, error } = await admin().generateLink({ type: 'signup', email, password: 'signup-pass-1', options: { data: { plan: 'pro' } } });
  assert.equal(error, null);
  assert.equal(data.properties.verification_type, 'signup');
  assert.equal(data.user.email, email);
  assert.equal(data.user.email_confirmed_at ?? null, null);
  assert.equal(links(email).length, 0, 'nothing is sent');
  const sb = client();
  assert.equal((await sb.auth.signInWithPassword({ email, password: 'signup-pass-1' })).error?.code, 'email_not_confirmed');
  const verified = await sb.auth.verifyOtp({ email, token: data.properties.email_otp, type: 'signup' });
  assert.equal(verified.error, null);
  assert.equal(verified.data.user.user_metadata.plan, 'pro');
  assert.equal((await client().auth.signInWithPassword({ email, password: 'signup-pass-1' })).error, null);
  const again = await admin().generateLink({ type: 'signup', email, password: 'signup-pass-1' });
  assert.equal(again.error?.status, 422);
  assert.equal(again.error?.code, 'email_exists');
  // An unknown address's magic link is a sign-up, as GoTrue answers it.
  const fresh = unique('genlink-magic');
  const magic = await admin().generateLink({ type: 'magiclink', email: fresh });
  assert.equal(magic.data.properties.verification_type, 'signup');
  const unknownType = await admin().generateLink({ type: 'nope', email: fresh });
  assert.equal(unknownType.error?.status, 400);
  assert.equal(unknownType.error?.message, 'Invalid email action link type requested: nope');
});

test('generate_link email_change_current and email_change_new move the address when both are confirmed', async () => {
  const email = unique('genlink-current');
  const newEmail = unique('genlink-new');
  await admin().createUser({ email, password: 'change-pass-1', email_confirm: true });
  const current = await admin().generateLink({ type: 'email_change_current', email, newEmail });
  assert.equal(current.error, null);
  assert.equal(current.data.properties.verification_type, 'email_change_current');
  assert.equal(current.data.user.new_email, newEmail);
  const next = await admin().generateLink({ type: 'email_change_new', email, newEmail });
  assert.equal(next.error, null);
  assert.equal(new URL(next.data.properties.action_link).searchParams.get('type'), 'email_change');
  const sb = client();
  const first = await sb.auth.verifyOtp({ email, token: current.data.properties.email_otp, type: 'email_change' });
  assert.equal(first.error, null);
  assert.equal(first.data.session, null, 'one of two confirmations');
  const second = await sb.auth.verifyOtp({ email: newEmail, token: next.data.properties.email_otp, type: 'email_change' });
  assert.equal(second.error, null);
  assert.equal(second.data.user.email, newEmail);
  assert.equal((await client().auth.signInWithPassword({ email: newEmail, password: 'change-pass-1' })).error, null);
  const nobody = await admin().generateLink({ type: 'email_change_new', email: unique('nobody'), newEmail: unique('x') });
  assert.equal(nobody.error?.status, 404);
  assert.equal(nobody.error?.code, 'user_not_found');
  const other = unique('genlink-other');
  await admin().createUser({ email: other, password: 'change-pass-1', email_confirm: true });
  const clash = await admin().generateLink({ type: 'email_change_new', email: newEmail, newEmail: other });
  assert.equal(clash.error?.code, 'email_exists');
  const bad = await admin().generateLink({ type: 'email_change_new', email: newEmail, newEmail: 'not valid' });
  assert.equal(bad.error?.status, 400);
});

test('generate_link email_change_new alone waits for the current address too, as GoTrue with secure e-mail change', async () => {
  const email = unique('genlink-alone');
  const newEmail = unique('genlink-alone-new');
  await admin().createUser({ email, password: 'change-pass-1', email_confirm: true });
  const next = await admin().generateLink({ type: 'email_change_new', email, newEmail });
  assert.equal(next.error, null);
  const first = await client().auth.verifyOtp({ email: newEmail, token: next.data.properties.email_otp, type: 'email_change' });
  assert.equal(first.error, null);
  assert.equal(first.data.session, null, 'the first of two confirmations');
  assert.equal(sql(`SELECT email FROM auth.users WHERE email_change = '${newEmail}'`), email, 'not moved yet');
  const current = await admin().generateLink({ type: 'email_change_current', email, newEmail });
  const second = await client().auth.verifyOtp({ email, token: current.data.properties.email_otp, type: 'email_change' });
  assert.equal(second.error, null);
  assert.equal(second.data.user.email, newEmail);
});

test('GoTrue messages: reauthenticate without e-mail or phone, a replayed passkey challenge', async () => {
  const proxy = await proxyWith({ FLUXBASE_AUTH_ANONYMOUS_USERS: 'true' });
  try {
    const sb = client(proxy.url);
    assert.equal((await sb.auth.signInAnonymously()).error, null);
    const { error } = await sb.auth.reauthenticate();
    assert.equal(error?.status, 422);
    assert.equal(error?.message, 'Reauthentication requires the user to have an email or a phone number');
  } finally {
    proxy.stop();
  }
  const res = await fetch(`${env.url}/auth/v1/passkeys/authentication/verify`, {
    method: 'POST',
    headers: { apikey: env.anonKey, 'content-type': 'application/json' },
    body: JSON.stringify({ challenge_id: randomUUID(), credential: {} }),
  });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.deepEqual([body.error_code, body.msg], ['webauthn_challenge_not_found', 'Challenge not found or already used']);
});

test('jwt.signing_jwks_file in GoTrue\'s format: a bare array, the key marked "sign" signs', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fluxbase-jwks-'));
  const jwk = (kid, ops) => {
    const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    return { ...privateKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig', key_ops: ops, ext: true };
  };
  const signer = jwk(randomUUID(), ['sign', 'verify']);
  const { d: _, ...retired } = jwk(randomUUID(), ['verify']);
  const file = join(dir, 'keys.json');
  // As `supabase gen signing-key` and GOTRUE_JWT_KEYS have it, with the legacy HS256 key beside.
  writeFileSync(file, JSON.stringify([retired, { kty: 'oct', kid: 'legacy', k: Buffer.from(env.jwtSecret).toString('base64url'), alg: 'HS256', key_ops: ['verify'] }, signer]));
  const proxy = await proxyWith({ FLUXBASE_JWT_SIGNING_JWKS_FILE: file });
  try {
    const published = await (await fetch(`${proxy.url}/auth/v1/.well-known/jwks.json`)).json();
    assert.deepEqual(published.keys.map((k) => k.kid).sort(), [retired.kid, signer.kid].sort());
    assert.ok(published.keys.every((k) => k.d === undefined));
    const email = unique('jwks');
    const { data, error } = await client(proxy.url).auth.signUp({ email, password: 'jwks-pass-1' });
    assert.equal(error, null);
    const [h, p, s] = data.session.access_token.split('.');
    const header = JSON.parse(Buffer.from(h, 'base64url'));
    assert.deepEqual([header.alg, header.kid], ['ES256', signer.kid]);
    const key = createPublicKey({ key: published.keys.find((k) => k.kid === signer.kid), format: 'jwk' });
    assert.ok(verify('sha256', Buffer.from(`${h}.${p}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(s, 'base64url')));
    const me = await client(proxy.url).auth.getUser(data.session.access_token);
    assert.equal(me.data.user?.email, email);
  } finally {
    proxy.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A proxy started from `fluxbase gen-config`'s file, without the run's rate-limit overrides. */
async function genConfigProxy(dir) {
  const file = join(dir, 'fluxbase.toml');
  execFileSync(process.env.FLUXBASE_BIN, ['gen-config', file, '--database-url', process.env.FLUXBASE_DATABASE_URL ?? 'postgres://x@127.0.0.1/x']);
  const port = await new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  const childEnv = { ...process.env, FLUXBASE_CONFIG: file, FLUXBASE_SERVER_LISTEN: `127.0.0.1:${port}` };
  for (const k of Object.keys(childEnv)) if (k.startsWith('FLUXBASE_AUTH_RATE_LIMIT_') || k.startsWith('FLUXBASE_AUTH_LOCKOUT_')) delete childEnv[k];
  const child = spawn(process.env.FLUXBASE_BIN, ['serve'], { env: childEnv, stdio: 'inherit' });
  const url = `http://127.0.0.1:${port}`;
  assert.ok(await eventually(async () => (await fetch(`${url}/ready`).catch(() => ({ ok: false }))).ok, 10000));
  return { url, stop: () => child.kill('SIGTERM') };
}

test('gen-config\'s dev limits let a suite sign up 100 users in a minute; the secure defaults would not', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'fluxbase-genconfig-'));
  const proxy = await genConfigProxy(dir);
  try {
    const started = Date.now();
    for (let i = 0; i < 100; i += 1) {
      const sb = client(proxy.url);
      const email = unique(`suite-${i}`);
      const { error } = await sb.auth.signUp({ email, password: 'suite-pass-1' });
      assert.equal(error, null, `sign-up ${i}`);
      assert.equal((await sb.auth.signInWithPassword({ email, password: 'suite-pass-1' })).error, null, `sign-in ${i}`);
    }
    assert.ok(Date.now() - started < 60_000, 'within a minute');
  } finally {
    proxy.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  // The secure default (30 sign-ups per IP per 300 s) stops such a suite.
  const strict = await proxyWith({ FLUXBASE_AUTH_RATE_LIMIT_SIGNUPS_PER_IP: '30' });
  try {
    let refused = null;
    for (let i = 0; i < 31 && !refused; i += 1) {
      const { error } = await client(strict.url).auth.signUp({ email: unique(`strict-${i}`), password: 'suite-pass-1' });
      if (error) refused = error;
    }
    assert.equal(refused?.status, 429);
    assert.equal(refused?.code, 'over_request_rate_limit');
  } finally {
    strict.stop();
  }
});

const claimsOf = (token) => JSON.parse(Buffer.from(token.split('.')[1], 'base64url'));
const bytes = (b) => b64url(new Uint8Array(b));
/** What a browser's PublicKeyCredential.toJSON() gives supabase-js's serializers. */
const asCredential = (json) => ({ toJSON: () => json });
const webauthn = { rpId: RP_ID, rpOrigins: [ORIGIN] };

/** A signed-in supabase-js client with a verified WebAuthn factor on `device`. */
async function withWebAuthnFactor(device) {
  const sb = client();
  const email = unique('mfa-webauthn');
  assert.equal((await sb.auth.signUp({ email, password: 'webauthn-pass-1' })).error, null);
  const { data: factor, error } = await sb.auth.mfa.enroll({ factorType: 'webauthn', friendlyName: 'Security key' });
  assert.equal(error, null);
  assert.deepEqual([factor.type, factor.friendly_name], ['webauthn', 'Security key']);
  const { data: challenge, error: challengeError } = await sb.auth.mfa.challenge({ factorId: factor.id, webauthn });
  assert.equal(challengeError, null);
  assert.equal(challenge.type, 'webauthn');
  assert.equal(challenge.webauthn.type, 'create');
  const pk = challenge.webauthn.credential_options.publicKey;
  assert.equal(pk.rp.id, RP_ID);
  assert.equal(pk.attestation, 'none');
  // supabase-js turned the options into ArrayBuffers for navigator.credentials.create().
  const created = device.create({ ...pk, challenge: bytes(pk.challenge), user: { ...pk.user, id: bytes(pk.user.id) } });
  const verified = await sb.auth.mfa.verify({
    factorId: factor.id,
    challengeId: challenge.id,
    webauthn: { type: 'create', ...webauthn, credential_response: asCredential(created) },
  });
  assert.equal(verified.error, null);
  return { sb, email, factor, verified: verified.data };
}

/** A fresh password sign-in of `email`, at aal1. */
async function signedIn(email) {
  const sb = client();
  assert.equal((await sb.auth.signInWithPassword({ email, password: 'webauthn-pass-1' })).error, null);
  return sb;
}

test('WebAuthn as an MFA factor: enroll, challenge (create), verify reaches aal2; a later sign-in steps up with it', async () => {
  const device = authenticator();
  const { sb, email, factor, verified } = await withWebAuthnFactor(device);
  const claims = claimsOf(verified.access_token);
  assert.equal(claims.aal, 'aal2');
  assert.ok(claims.amr.some((a) => a.method === 'mfa/webauthn'), JSON.stringify(claims.amr));
  assert.equal((await sb.auth.mfa.getAuthenticatorAssuranceLevel()).data.currentLevel, 'aal2');
  const { data: factors } = await sb.auth.mfa.listFactors();
  assert.deepEqual(factors.webauthn.map((f) => f.id), [factor.id]);
  assert.equal(sql(`SELECT web_authn_credential ->> 'id' FROM auth.mfa_factors WHERE id = '${factor.id}'`), device.id.toString('base64'));

  const later = await signedIn(email);
  const level = (await later.auth.mfa.getAuthenticatorAssuranceLevel()).data;
  assert.deepEqual([level.currentLevel, level.nextLevel], ['aal1', 'aal2']);
  const { data: challenge, error } = await later.auth.mfa.challenge({ factorId: factor.id, webauthn });
  assert.equal(error, null);
  assert.equal(challenge.webauthn.type, 'request');
  const pk = challenge.webauthn.credential_options.publicKey;
  assert.equal(pk.rpId, RP_ID);
  assert.deepEqual(pk.allowCredentials.map((c) => bytes(c.id)), [b64url(device.id)]);
  const answer = device.get({ challenge: bytes(pk.challenge), rpId: pk.rpId });
  const stepped = await later.auth.mfa.verify({
    factorId: factor.id,
    challengeId: challenge.id,
    webauthn: { type: 'request', ...webauthn, credential_response: asCredential(answer) },
  });
  assert.equal(stepped.error, null);
  assert.equal(claimsOf(stepped.data.access_token).aal, 'aal2');
  // The same answer again: the challenge is used up.
  const replayed = await later.auth.mfa.verify({
    factorId: factor.id,
    challengeId: challenge.id,
    webauthn: { type: 'request', ...webauthn, credential_response: asCredential(answer) },
  });
  assert.equal(replayed.error?.status, 422);
  assert.equal(replayed.error?.code, 'mfa_challenge_expired');
  // A verified factor at aal2 can be removed.
  assert.equal((await later.auth.mfa.unenroll({ factorId: factor.id })).error, null);
});

test('WebAuthn factors refuse forged, cloned, foreign and mismatched answers, and count them', async () => {
  const device = authenticator();
  const { email, factor } = await withWebAuthnFactor(device);
  const sb = await signedIn(email);
  const attempt = async (answerFor, type = 'request') => {
    const { data: challenge } = await sb.auth.mfa.challenge({ factorId: factor.id, webauthn });
    const pk = challenge.webauthn.credential_options.publicKey;
    const options = { challenge: bytes(pk.challenge), rpId: pk.rpId };
    return sb.auth.mfa.verify({
      factorId: factor.id,
      challengeId: challenge.id,
      webauthn: { type, ...webauthn, credential_response: asCredential(answerFor(options)) },
    });
  };
  const other = authenticator();
  other.create({ challenge: 'x', user: { id: 'eA' } });
  const forged = await attempt((o) => ({ ...device.get(o), response: { ...device.get(o).response, signature: other.get(o).response.signature } }));
  assert.equal(forged.error?.code, 'mfa_verification_failed');
  assert.equal(forged.error?.status, 422);
  const foreign = await attempt((o) => other.get(o));
  assert.equal(foreign.error?.code, 'mfa_verification_failed', 'not the factor\'s credential');
  const cloned = await attempt((o) => device.get(o, { step: -3 })); // back to 0, below the stored 1
  assert.equal(cloned.error?.code, 'mfa_verification_failed', 'the counter went back');
  const phished = authenticator({ origin: 'https://evil.example' });
  const created = await attempt((o) => phished.create({ ...o, user: { id: 'eA' } }), 'create');
  assert.equal(created.error?.code, 'mfa_verification_failed', 'a verified factor takes no new credential');
  const badType = await sb.auth.mfa.verify({ factorId: factor.id, challengeId: randomUUID(), webauthn: { type: 'other', credential_response: asCredential({}) } });
  assert.equal(badType.error?.status, 400);
  assert.equal(badType.error?.message, 'WebAuthn type must be create or request');
  assert.ok(Number(sql(`SELECT count(*) FROM fluxbase.auth_mfa_failures f JOIN auth.users u ON u.id = f.user_id WHERE u.email = '${email}'`)) >= 4);
  // The genuine device still gets through (below the failure limit).
  const ok = await attempt((o) => device.get(o, { step: 20 }));
  assert.equal(ok.error, null);
  // A code for a WebAuthn factor is GoTrue's 400.
  const { data: challenge } = await sb.auth.mfa.challenge({ factorId: factor.id, webauthn });
  const code = await sb.auth.mfa.verify({ factorId: factor.id, challengeId: challenge.id, code: '123456' });
  assert.equal(code.error?.status, 400);
  assert.equal(code.error?.message, 'WebAuthn config required');
});

test('MFA challenge and verify check the session before the factor, in GoTrue\'s words, whatever the factor id', async () => {
  const device = authenticator();
  const { sb, factor, verified } = await withWebAuthnFactor(device);
  for (const id of ['not-a-uuid', randomUUID(), factor.id]) {
    for (const step of ['challenge', 'verify']) {
      const send = (headers) => fetch(`${env.url}/auth/v1/factors/${id}/${step}`, {
        method: 'POST',
        headers: { apikey: env.anonKey, 'content-type': 'application/json', ...headers },
        body: JSON.stringify({ challenge_id: randomUUID(), code: '123456' }),
      });
      // No bearer token: 401; the anon key as bearer (supabase-js signed
      // out): GoTrue's 403 bad_jwt for a token without sub.
      const none = await send({});
      assert.equal(none.status, 401, `${step} ${id}`);
      assert.deepEqual([(await none.json()).error_code], ['no_authorization']);
      const anon = await send({ Authorization: `Bearer ${env.anonKey}` });
      assert.equal(anon.status, 403, `${step} ${id}`);
      const body = await anon.json();
      assert.equal(body.error_code, 'bad_jwt', `${step} ${id}`);
      assert.equal(body.msg, 'invalid claim: missing sub claim');
    }
  }
  // A signed-out session is refused as such, also for an id that is no factor.
  const token = verified.access_token;
  assert.equal((await sb.auth.signOut()).error, null);
  for (const id of ['not-a-uuid', randomUUID()]) {
    const res = await fetch(`${env.url}/auth/v1/factors/${id}/challenge`, {
      method: 'POST',
      headers: { apikey: env.anonKey, Authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: '{}',
    });
    const body = await res.json();
    assert.notEqual(body.error_code, 'mfa_factor_not_found', `${id}: ${JSON.stringify(body)}`);
    assert.ok([401, 403].includes(res.status), `${id}: ${res.status}`);
  }
});
