// Auth (/auth/v1) through supabase-js: sign-up, password sign-in, the user,
// refresh-token rotation and reuse detection, sign-out scopes, the admin
// API, lockout, and the audit log; RLS sees the signed-in user.
import { test } from 'node:test';
import { createHash, createHmac, createPublicKey, generateKeyPairSync, verify } from 'node:crypto';
import { createServer } from 'node:http';
import { readFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import { env, sql, sign, proxyWith } from './helpers.mjs';

const client = () =>
  createClient(env.url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
const admin = createClient(env.url, env.serviceKey, { auth: { persistSession: false, autoRefreshToken: false } });
const unique = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;

test('signUp, signInWithPassword, getUser, updateUser; RLS sees auth.uid()', async () => {
  const email = unique('ada');
  const sb = client();
  const { data: up, error: upError } = await sb.auth.signUp({ email, password: 'correct horse', options: { data: { name: 'Ada' } } });
  assert.equal(upError, null);
  assert.equal(up.user.email, email);
  assert.equal(up.user.user_metadata.name, 'Ada');
  assert.ok(up.session.access_token && up.session.refresh_token);

  const again = await client().auth.signUp({ email, password: 'correct horse' });
  assert.equal(again.error?.code, 'user_already_exists');

  const weak = await client().auth.signUp({ email: unique('weak'), password: '123' });
  assert.equal(weak.error?.code, 'weak_password');
  assert.equal(weak.error?.status, 422);

  const wrong = await client().auth.signInWithPassword({ email, password: 'wrong horse' });
  assert.equal(wrong.error?.code, 'invalid_credentials');
  const nobody = await client().auth.signInWithPassword({ email: unique('nobody'), password: 'whatever1' });
  assert.equal(nobody.error?.code, 'invalid_credentials');

  const { data: signIn, error } = await sb.auth.signInWithPassword({ email, password: 'correct horse' });
  assert.equal(error, null);
  const claims = JSON.parse(Buffer.from(signIn.session.access_token.split('.')[1], 'base64url'));
  assert.equal(claims.sub, signIn.user.id);
  assert.equal(claims.role, 'authenticated');
  assert.equal(claims.aal, 'aal1');
  assert.equal(claims.amr[0].method, 'password');
  assert.ok(claims.session_id);

  const { data: me } = await sb.auth.getUser();
  assert.equal(me.user.id, signIn.user.id);
  const { data: updated, error: updError } = await sb.auth.updateUser({ data: { plan: 'pro' } });
  assert.equal(updError, null);
  assert.deepEqual(updated.user.user_metadata, { name: 'Ada', plan: 'pro' });

  // The session's token works against REST under RLS: notes are per owner.
  const { data: note, error: noteError } = await sb.from('notes').insert({ body: 'mine' }).select('owner').single();
  assert.equal(noteError, null);
  assert.equal(note.owner, signIn.user.id);

  // Passwords are stored as argon2id, never in clear.
  const stored = sql(`SELECT encrypted_password FROM auth.users WHERE email = '${email}'`);
  assert.match(stored, /^\$argon2id\$/);
});

test('refresh rotates the token; a reused token revokes the session', async () => {
  const email = unique('grace');
  const sb = client();
  const { data } = await sb.auth.signUp({ email, password: 'hopper1906' });
  const first = data.session.refresh_token;
  const { data: refreshed, error } = await sb.auth.refreshSession({ refresh_token: first });
  assert.equal(error, null);
  assert.notEqual(refreshed.session.refresh_token, first);
  const second = refreshed.session.refresh_token;
  // Only hashes are stored.
  assert.equal(sql(`SELECT count(*) FROM auth.refresh_tokens WHERE token = '${first}' OR token = '${second}'`), '0');

  // Reuse outside the reuse interval (aged here) revokes every token of the session.
  const sessionId = JSON.parse(Buffer.from(refreshed.session.access_token.split('.')[1], 'base64url')).session_id;
  sql(`UPDATE auth.refresh_tokens SET updated_at = now() - interval '1 minute' WHERE session_id = '${sessionId}' AND revoked`);
  const reused = await client().auth.refreshSession({ refresh_token: first });
  assert.equal(reused.error?.code, 'refresh_token_already_used');
  const after = await client().auth.refreshSession({ refresh_token: second });
  assert.ok(after.error, 'the whole session is gone after a reuse');
  const audit = sql(`SELECT count(*) FROM auth.audit_log_entries WHERE payload->>'action' = 'token_revoked'
                     AND payload->>'actor_id' = '${data.user.id}'`);
  assert.equal(audit, '1');
});

test('signOut scopes: local ends one session, global all of them', async () => {
  const email = unique('lin');
  await client().auth.signUp({ email, password: 'password-1' });
  const a = client();
  const b = client();
  await a.auth.signInWithPassword({ email, password: 'password-1' });
  const { data: bSession } = await b.auth.signInWithPassword({ email, password: 'password-1' });
  assert.equal((await a.auth.signOut({ scope: 'local' })).error, null);
  assert.equal((await b.auth.getUser()).error, null, 'the other session lives on');
  assert.equal((await b.auth.signOut({ scope: 'global' })).error, null);
  const refresh = await client().auth.refreshSession({ refresh_token: bSession.session.refresh_token });
  assert.ok(refresh.error, 'refresh tokens die with their sessions');
  // An access token of an ended session no longer reads the user.
  const res = await fetch(`${env.url}/auth/v1/user`, {
    headers: { apikey: env.anonKey, Authorization: `Bearer ${bSession.session.access_token}` },
  });
  assert.equal(res.status, 403);
  assert.equal((await res.json()).error_code, 'session_not_found');
});

test('lockout after repeated failures, shared state in Postgres', async () => {
  const email = unique('locked');
  await client().auth.signUp({ email, password: 'the-right-one' });
  for (let i = 0; i < 5; i++) {
    const r = await client().auth.signInWithPassword({ email, password: `wrong-${i}` });
    assert.equal(r.error?.code, 'invalid_credentials');
  }
  const locked = await client().auth.signInWithPassword({ email, password: 'the-right-one' });
  assert.equal(locked.error?.status, 429);
  assert.equal(locked.error?.code, 'over_request_rate_limit');
  assert.equal(sql(`SELECT count(*) FROM fluxbase.auth_password_failures WHERE identifier = '${email}' AND ip = '127.0.0.1'`), '5');
});

/** POST /token?grant_type=password through `url`, as the client at `ip` behind a trusted proxy. */
const passwordSignIn = async (url, email, password, ip) => {
  const headers = { apikey: env.anonKey, 'content-type': 'application/json' };
  if (ip) headers['x-forwarded-for'] = ip;
  const res = await fetch(`${url}/auth/v1/token?grant_type=password`, {
    method: 'POST', headers, body: JSON.stringify({ email, password }),
  });
  return { status: res.status, retryAfter: res.headers.get('retry-after'), body: await res.json() };
};

/** An answer without its request id and the seconds of a lockout's wait (two lockouts a moment apart may differ by one). */
const shape = ({ body: { request_id, ...body }, ...answer }) => ({ ...answer, retryAfter: answer.retryAfter && 'n',
  body: { ...body, msg: body.msg?.replace(/\d+/g, 'n') } });

test('account enumeration: known and unknown addresses get the same answers, before and after the lockout', async () => {
  const known = unique('enum-known');
  const unknown = unique('enum-unknown');
  assert.equal((await client().auth.signUp({ email: known, password: 'the-right-one' })).error, null);
  // Six tries each: five wrong passwords, then the lockout (429, not 400).
  for (let i = 0; i < 6; i++) {
    const a = await passwordSignIn(env.url, known, `wrong-${i}`);
    const b = await passwordSignIn(env.url, unknown, `wrong-${i}`);
    assert.deepEqual(shape(a), shape(b), `attempt ${i + 1}`);
    assert.equal(a.status, i < 5 ? 400 : 429, `attempt ${i + 1}`);
  }
  const locked = await passwordSignIn(env.url, known, 'the-right-one');
  assert.deepEqual(shape(locked), shape(await passwordSignIn(env.url, unknown, 'the-right-one')));
  assert.equal(locked.body.error_code, 'over_request_rate_limit');
  assert.ok(Number(locked.retryAfter) > 850 && Number(locked.retryAfter) <= 900, locked.retryAfter);
  // supabase-js sees the same error for both.
  const viaJs = await client().auth.signInWithPassword({ email: unknown, password: 'x-whatever' });
  assert.equal(viaJs.error?.status, 429);
  assert.equal(viaJs.error?.code, 'over_request_rate_limit');
});

test('lockout is per client address; the account-wide ceiling locks everyone out', async () => {
  const proxy = await proxyWith({
    FLUXBASE_SERVER_TRUSTED_PROXIES: '["127.0.0.1"]',
    FLUXBASE_AUTH_LOCKOUT_MAX_FAILURES: '2',
    FLUXBASE_AUTH_LOCKOUT_ACCOUNT_MAX_FAILURES: '5',
  });
  try {
    const from = (ip) => createClient(proxy.url, env.anonKey, {
      auth: { persistSession: false, autoRefreshToken: false }, global: { headers: { 'x-forwarded-for': ip } },
    });
    const email = unique('per-ip');
    assert.equal((await client().auth.signUp({ email, password: 'the-right-one' })).error, null);
    const attacker = from('198.51.100.1');
    for (let i = 0; i < 2; i++) {
      assert.equal((await attacker.auth.signInWithPassword({ email, password: `guess-${i}` })).error?.code, 'invalid_credentials');
    }
    const lockedOut = await attacker.auth.signInWithPassword({ email, password: 'the-right-one' });
    assert.equal(lockedOut.error?.status, 429, 'the guessing address is locked');
    // The owner, elsewhere, is not.
    const owner = await from('203.0.113.5').auth.signInWithPassword({ email, password: 'the-right-one' });
    assert.equal(owner.error, null);
    assert.equal((await attacker.auth.signInWithPassword({ email, password: 'the-right-one' })).error?.status, 429,
      "the owner's sign-in does not unlock the guessing address");
    // Five wrong passwords from all addresses within the window: locked for everyone.
    const second = from('198.51.100.2');
    for (let i = 0; i < 2; i++) {
      assert.equal((await second.auth.signInWithPassword({ email, password: `guess-b${i}` })).error?.code, 'invalid_credentials');
    }
    assert.equal((await from('198.51.100.3').auth.signInWithPassword({ email, password: 'guess-c' })).error?.code,
      'invalid_credentials');
    const ceiling = await from('203.0.113.5').auth.signInWithPassword({ email, password: 'the-right-one' });
    assert.equal(ceiling.error?.status, 429, 'the account-wide ceiling is reached');
    assert.equal(ceiling.error?.code, 'over_request_rate_limit');
    // An unknown address reaches the same ceiling with the same answers.
    const nobody = unique('per-ip-nobody');
    for (const ip of ['198.51.100.1', '198.51.100.1', '198.51.100.2', '198.51.100.2', '198.51.100.3']) {
      assert.equal((await from(ip).auth.signInWithPassword({ email: nobody, password: 'guess' })).error?.code, 'invalid_credentials');
    }
    assert.equal((await from('203.0.113.5').auth.signInWithPassword({ email: nobody, password: 'guess' })).error?.status, 429);
  } finally {
    proxy.stop();
  }
});

test('wrong passwords decay: those older than the lockout window no longer count', async () => {
  const proxy = await proxyWith({ FLUXBASE_AUTH_LOCKOUT_MAX_FAILURES: '3', FLUXBASE_AUTH_LOCKOUT_SECONDS: '2' });
  try {
    const sb = () => createClient(proxy.url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const email = unique('decay');
    assert.equal((await client().auth.signUp({ email, password: 'the-right-one' })).error, null);
    for (let i = 0; i < 2; i++) {
      assert.equal((await sb().auth.signInWithPassword({ email, password: `typo-${i}` })).error?.code, 'invalid_credentials');
    }
    await new Promise((r) => setTimeout(r, 2200));
    for (let i = 0; i < 2; i++) {
      assert.equal((await sb().auth.signInWithPassword({ email, password: `typo-b${i}` })).error?.code, 'invalid_credentials');
    }
    assert.equal((await sb().auth.signInWithPassword({ email, password: 'the-right-one' })).error, null,
      'four wrong passwords, but only two within the window');
    // Three within the window lock; the lock ends with the window.
    const burst = unique('decay-burst');
    assert.equal((await client().auth.signUp({ email: burst, password: 'the-right-one' })).error, null);
    for (let i = 0; i < 3; i++) await sb().auth.signInWithPassword({ email: burst, password: `typo-${i}` });
    const locked = await passwordSignIn(proxy.url, burst, 'the-right-one');
    assert.equal(locked.status, 429);
    assert.ok(['1', '2'].includes(locked.retryAfter), locked.retryAfter);
    await new Promise((r) => setTimeout(r, 2200));
    assert.equal((await sb().auth.signInWithPassword({ email: burst, password: 'the-right-one' })).error, null);
  } finally {
    proxy.stop();
  }
});

test('sign-ins per account and address are rate limited: 429 with Retry-After, counted in Postgres', async () => {
  // Windows are 300 s, aligned to the epoch: do not straddle a boundary.
  const left = 300 - ((Date.now() / 1000) % 300);
  if (left < 15) await new Promise((r) => setTimeout(r, (left + 1) * 1000));
  const email = unique('busy');
  await client().auth.signUp({ email, password: 'busy-password' });
  const signIn = () =>
    fetch(`${env.url}/auth/v1/token?grant_type=password`, {
      method: 'POST',
      headers: { apikey: env.anonKey, 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: 'busy-password' }),
    });
  for (let i = 0; i < 10; i++) assert.equal((await signIn()).status, 200);
  const limited = await signIn();
  assert.equal(limited.status, 429);
  assert.ok(Number(limited.headers.get('retry-after')) >= 1);
  assert.equal((await limited.json()).error_code, 'over_request_rate_limit');
  // Counted per account and client address: a stranger elsewhere cannot use it up.
  assert.match(sql(`SELECT max(hits) FROM fluxbase.auth_rate_limits WHERE key = 'signin:account:${email}:ip:127.0.0.1'`), /^1[01]$/);
});

test('admin API: create, list, get, update (ban), delete; not for users', async () => {
  const email = unique('admin-made');
  const { data: created, error } = await admin.auth.admin.createUser({
    email,
    password: 'made-by-admin',
    email_confirm: true,
    user_metadata: { team: 'core' },
  });
  assert.equal(error, null);
  assert.equal(created.user.email, email);
  assert.ok(created.user.email_confirmed_at);

  const { data: listed } = await admin.auth.admin.listUsers({ page: 1, perPage: 1000 });
  assert.ok(listed.users.some((u) => u.id === created.user.id));
  const { data: got } = await admin.auth.admin.getUserById(created.user.id);
  assert.equal(got.user.user_metadata.team, 'core');

  const signedIn = await client().auth.signInWithPassword({ email, password: 'made-by-admin' });
  assert.equal(signedIn.error, null);
  const { error: banError } = await admin.auth.admin.updateUserById(created.user.id, { ban_duration: '24h' });
  assert.equal(banError, null);
  const banned = await client().auth.signInWithPassword({ email, password: 'made-by-admin' });
  assert.equal(banned.error?.code, 'user_banned');

  const user = client();
  await user.auth.signUp({ email: unique('plain'), password: 'plain-user' });
  const forbidden = await fetch(`${env.url}/auth/v1/admin/users`, {
    headers: { apikey: env.anonKey, Authorization: `Bearer ${(await user.auth.getSession()).data.session.access_token}` },
  });
  assert.equal(forbidden.status, 403);

  assert.equal((await admin.auth.admin.deleteUser(created.user.id)).error, null);
  assert.equal((await admin.auth.admin.getUserById(created.user.id)).error?.status, 404);
});

test('forged and foreign tokens do not reach /user', async () => {
  const forged = sign({ role: 'authenticated', sub: '00000000-0000-0000-0000-000000000001' }, 'not-the-secret-not-the-secret-0000');
  const res = await fetch(`${env.url}/auth/v1/user`, { headers: { apikey: env.anonKey, Authorization: `Bearer ${forged}` } });
  assert.equal(res.status, 403, 'GoTrue: 403 bad_jwt');
  assert.match((await res.json()).msg, /^invalid JWT: unable to parse or verify signature, /);
  const none = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${Buffer.from('{"sub":"x","role":"service_role"}').toString('base64url')}.`;
  const alg = await fetch(`${env.url}/auth/v1/admin/users`, { headers: { apikey: env.anonKey, Authorization: `Bearer ${none}` } });
  assert.equal(alg.status, 403);
  const settings = await (await fetch(`${env.url}/auth/v1/settings`, { headers: { apikey: env.anonKey } })).json();
  assert.equal(settings.external.email, true);
  const missing = await fetch(`${env.url}/auth/v1/sso`, { method: 'POST', headers: { apikey: env.anonKey }, body: '{"domain":"x.test"}' });
  assert.equal(missing.status, 404, 'no SAML provider in this run');
  assert.deepEqual(await missing.json().then((b) => [b.error_code, b.msg]), ['saml_provider_disabled', 'SAML 2.0 is disabled']);
});

/** RFC 6238 code for a base32 secret, computed here independently of the server. */
function totp(secret, offsetSteps = 0) {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = '';
  for (const c of secret.replace(/=+$/, '')) bits += alphabet.indexOf(c).toString(2).padStart(5, '0');
  const key = Buffer.from(bits.match(/.{8}/g).map((b) => parseInt(b, 2)));
  const step = Math.floor(Date.now() / 1000 / 30) + offsetSteps;
  const msg = Buffer.alloc(8);
  msg.writeBigUInt64BE(BigInt(step));
  const digest = createHmac('sha1', key).update(msg).digest();
  const offset = digest[19] & 0xf;
  const value = (digest.readUInt32BE(offset) & 0x7fffffff) % 1_000_000;
  return value.toString().padStart(6, '0');
}

test('MFA TOTP: enroll, verify to aal2, secrets sealed, brute force limited, unenroll needs aal2', async () => {
  const email = unique('mfa');
  const sb = client();
  await sb.auth.signUp({ email, password: 'mfa-password' });
  const { data: enrolled, error } = await sb.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'phone' });
  assert.equal(error, null);
  assert.ok(enrolled.totp.qr_code.startsWith('data:image/svg+xml;utf-8,'));
  assert.match(enrolled.totp.uri, /^otpauth:\/\/totp\//);
  const secret = enrolled.totp.secret;
  const stored = sql(`SELECT secret FROM auth.mfa_factors WHERE id = '${enrolled.id}'`);
  assert.ok(stored.length > 0 && !stored.includes(secret), 'the secret is stored encrypted');

  const { data: challenge } = await sb.auth.mfa.challenge({ factorId: enrolled.id });
  const right = totp(secret);
  const wrongCode = ((Number(right) + 500000) % 1_000_000).toString().padStart(6, '0');
  const wrong = await sb.auth.mfa.verify({ factorId: enrolled.id, challengeId: challenge.id, code: wrongCode });
  assert.equal(wrong.error?.code, 'mfa_verification_failed');
  const { data: verified, error: verifyError } = await sb.auth.mfa.verify({
    factorId: enrolled.id,
    challengeId: challenge.id,
    code: right,
  });
  assert.equal(verifyError, null);
  const claims = JSON.parse(Buffer.from(verified.access_token.split('.')[1], 'base64url'));
  assert.equal(claims.aal, 'aal2');
  assert.deepEqual(claims.amr.map((a) => a.method).sort(), ['password', 'totp']);
  const { data: level } = await sb.auth.mfa.getAuthenticatorAssuranceLevel();
  assert.equal(level.currentLevel, 'aal2');
  const { data: factors } = await sb.auth.mfa.listFactors();
  assert.equal(factors.totp.length, 1);
  // A used challenge cannot be answered again.
  const replay = await sb.auth.mfa.verify({ factorId: enrolled.id, challengeId: challenge.id, code: right });
  assert.equal(replay.error?.code, 'mfa_challenge_expired');
  // A code is good once, not for the whole window it is valid in; a later one works.
  const { data: again } = await sb.auth.mfa.challenge({ factorId: enrolled.id });
  const reused = await sb.auth.mfa.verify({ factorId: enrolled.id, challengeId: again.id, code: right });
  assert.equal(reused.error?.code, 'mfa_verification_failed');
  const next = await sb.auth.mfa.verify({ factorId: enrolled.id, challengeId: again.id, code: totp(secret, 1) });
  assert.equal(next.error, null);

  // An aal1 session (password only) may not remove a verified factor.
  const weak = client();
  await weak.auth.signInWithPassword({ email, password: 'mfa-password' });
  const refused = await weak.auth.mfa.unenroll({ factorId: enrolled.id });
  assert.equal(refused.error?.code, 'insufficient_aal');

  // Brute force: after 5 wrong codes in the window even the right one is refused.
  const { data: c2 } = await weak.auth.mfa.challenge({ factorId: enrolled.id });
  for (let i = 0; i < 5; i++) {
    const r = await weak.auth.mfa.verify({ factorId: enrolled.id, challengeId: c2.id, code: wrongCode });
    assert.equal(r.error?.code, 'mfa_verification_failed');
  }
  const limited = await weak.auth.mfa.verify({ factorId: enrolled.id, challengeId: c2.id, code: totp(secret) });
  assert.equal(limited.error?.status, 429);

  const admin2 = createClient(env.url, env.serviceKey, { auth: { persistSession: false, autoRefreshToken: false } });
  const { data: listed } = await admin2.auth.admin.mfa.listFactors({ userId: verified.user.id });
  assert.equal(listed.factors.length, 1);
  assert.equal(listed.factors[0].status, 'verified');
  const { data: second } = await sb.auth.mfa.enroll({ factorType: 'totp', friendlyName: 'backup' });
  assert.equal((await admin2.auth.admin.mfa.deleteFactor({ userId: verified.user.id, id: second.id })).error, null);
  assert.equal((await sb.auth.mfa.unenroll({ factorId: enrolled.id })).error, null);
  assert.equal(sql(`SELECT count(*) FROM auth.mfa_factors WHERE id = '${enrolled.id}'`), '0');
});

test('MFA TOTP: wrong codes sent all at once count towards the limit one by one', async () => {
  const email = unique('mfa-burst');
  const sb = client();
  await sb.auth.signUp({ email, password: 'mfa-password' });
  const { data: enrolled } = await sb.auth.mfa.enroll({ factorType: 'totp' });
  const { data: first } = await sb.auth.mfa.challenge({ factorId: enrolled.id });
  const secret = enrolled.totp.secret;
  assert.equal((await sb.auth.mfa.verify({ factorId: enrolled.id, challengeId: first.id, code: totp(secret) })).error, null);

  const weak = client();
  await weak.auth.signInWithPassword({ email, password: 'mfa-password' });
  const { data: challenge } = await weak.auth.mfa.challenge({ factorId: enrolled.id });
  const right = totp(secret, 1);
  const guesses = Array.from({ length: 16 }, (_, i) => String((Number(right) + 1 + i) % 1_000_000).padStart(6, '0'));
  const answers = await Promise.all(
    guesses.map((code) => weak.auth.mfa.verify({ factorId: enrolled.id, challengeId: challenge.id, code })),
  );
  const counted = answers.filter((a) => a.error?.code === 'mfa_verification_failed').length;
  const limited = answers.filter((a) => a.error?.status === 429).length;
  assert.equal(counted + limited, guesses.length);
  assert.ok(counted <= 5, `${counted} wrong codes were checked; the limit is 5`);
  assert.equal(sql(`SELECT count(*) FROM fluxbase.auth_mfa_failures WHERE user_id = (SELECT id FROM auth.users WHERE email = '${email}')`), String(counted));
  const late = await weak.auth.mfa.verify({ factorId: enrolled.id, challengeId: challenge.id, code: right });
  assert.equal(late.error?.status, 429);
});

test('sessions are signed with the published ES256 key: JWKS and OpenID discovery', async () => {
  const { data } = await client().auth.signUp({ email: unique('jwks'), password: 'jwks-password' });
  const [h, p, sig] = data.session.access_token.split('.');
  const header = JSON.parse(Buffer.from(h, 'base64url'));
  assert.equal(header.alg, 'ES256');
  const jwks = await (await fetch(`${env.url}/auth/v1/.well-known/jwks.json`)).json();
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  assert.ok(jwk, 'the signing key is published');
  assert.equal(jwk.d, undefined, 'no private part');
  const key = createPublicKey({ key: jwk, format: 'jwk' });
  assert.ok(verify('sha256', Buffer.from(`${h}.${p}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url')));
  const tampered = Buffer.from(JSON.stringify({ ...JSON.parse(Buffer.from(p, 'base64url')), role: 'service_role' })).toString('base64url');
  assert.ok(!verify('sha256', Buffer.from(`${h}.${tampered}`), { key, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url')));
  const refused = await fetch(`${env.url}/rest/v1/todos`, {
    headers: { apikey: env.anonKey, Authorization: `Bearer ${h}.${tampered}.${sig}` },
  });
  assert.equal(refused.status, 401);
  const oidc = await (await fetch(`${env.url}/auth/v1/.well-known/openid-configuration`)).json();
  assert.equal(oidc.jwks_uri, `${oidc.issuer}/.well-known/jwks.json`);
  assert.equal(JSON.parse(Buffer.from(p, 'base64url')).iss, oidc.issuer);
});

test('RS256 signing keys: a rotated-in RSA key signs, the older ES256 key still verifies', async () => {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const rsa = { ...privateKey.export({ format: 'jwk' }), kid: 'rsa-e2e', alg: 'RS256', use: 'sig' };
  const current = JSON.parse(readFileSync(process.env.FLUXBASE_JWT_SIGNING_JWKS_FILE, 'utf8'));
  const file = join(tmpdir(), `fluxbase-rs256-${process.pid}.json`);
  writeFileSync(file, JSON.stringify({ keys: [rsa, ...current.keys] }), { mode: 0o600 });
  const proxy = await proxyWith({ FLUXBASE_JWT_SIGNING_JWKS_FILE: file });
  try {
    const options = { auth: { persistSession: false, autoRefreshToken: false } };
    const { data: before } = await client().auth.signUp({ email: unique('es256'), password: 'rotation-password' });
    const rotated = createClient(proxy.url, env.anonKey, options);
    const { data, error } = await rotated.auth.signUp({ email: unique('rs256'), password: 'rotation-password' });
    assert.equal(error, null);
    const [h, p, sig] = data.session.access_token.split('.');
    assert.deepEqual(JSON.parse(Buffer.from(h, 'base64url')), { typ: 'JWT', alg: 'RS256', kid: 'rsa-e2e' });
    const jwks = await (await fetch(`${proxy.url}/auth/v1/.well-known/jwks.json`)).json();
    assert.deepEqual(jwks.keys.map((k) => k.alg), ['RS256', 'ES256']);
    const published = jwks.keys[0];
    assert.equal(published.d, undefined);
    assert.equal(published.p, undefined);
    const key = createPublicKey({ key: published, format: 'jwk' });
    assert.ok(verify('RSA-SHA256', Buffer.from(`${h}.${p}`), key, Buffer.from(sig, 'base64url')));
    const oidc = await (await fetch(`${proxy.url}/auth/v1/.well-known/openid-configuration`)).json();
    assert.deepEqual(oidc.id_token_signing_alg_values_supported, ['RS256']);
    // A session the ES256 key signed before the rotation still works.
    const res = await fetch(`${proxy.url}/auth/v1/user`, {
      headers: { apikey: env.anonKey, Authorization: `Bearer ${before.session.access_token}` },
    });
    assert.equal(res.status, 200);
  } finally {
    proxy.stop();
    rmSync(file, { force: true });
  }
  // A weak RSA key is refused at start-up, naming the key.
  const { privateKey: weak } = generateKeyPairSync('rsa', { modulusLength: 1024 });
  writeFileSync(file, JSON.stringify({ keys: [{ ...weak.export({ format: 'jwk' }), kid: 'weak' }] }));
  try {
    await assert.rejects(proxyWith({ FLUXBASE_JWT_SIGNING_JWKS_FILE: file }), /did not become ready/);
  } finally {
    rmSync(file, { force: true });
  }
});

test('password policy: required characters and leaked passwords (file and k-anonymity range API)', async () => {
  const leaked = ['password123', 'qwerty2024', 'letmein99'];
  const sha1 = (p) => createHash('sha1').update(p).digest('hex').toUpperCase();
  const lines = leaked.map(sha1).sort().map((h, i) => `${h}:${1000 + i}`);
  const file = join(tmpdir(), `fluxbase-pwned-${process.pid}.txt`);
  writeFileSync(file, `${lines.join('\r\n')}\r\n`);
  // The same list behind Have I Been Pwned's range protocol: only 5 hex characters leave the proxy.
  const prefixes = [];
  const range = createServer((req, res) => {
    const prefix = req.url.split('/').pop();
    prefixes.push(prefix);
    const body = lines.filter((l) => l.startsWith(prefix)).map((l) => l.slice(5)).concat(['0000000000000000000000000000000000A:0']);
    res.writeHead(200, { 'content-type': 'text/plain' }).end(body.join('\r\n'));
  });
  await new Promise((r) => range.listen(0, '127.0.0.1', r));
  const sets = '["abcdefghijklmnopqrstuvwxyz","0123456789"]';
  const options = { auth: { persistSession: false, autoRefreshToken: false } };
  const withFile = await proxyWith({ FLUXBASE_AUTH_PASSWORD_REQUIRED_CHARACTERS: sets, FLUXBASE_AUTH_PASSWORD_BREACHED_FILE: file });
  const withRange = await proxyWith({
    FLUXBASE_AUTH_PASSWORD_BREACHED_RANGE_URL: `http://127.0.0.1:${range.address().port}/range/`,
  });
  try {
    const sb = createClient(withFile.url, env.anonKey, options);
    const noDigit = await sb.auth.signUp({ email: unique('policy'), password: 'onlyletters' });
    assert.equal(noDigit.error?.code, 'weak_password');
    assert.deepEqual(noDigit.error.reasons, ['characters']);
    const pwned = await sb.auth.signUp({ email: unique('policy'), password: 'password123' });
    assert.deepEqual(pwned.error?.reasons, ['pwned']);
    const short = await sb.auth.signUp({ email: unique('policy'), password: 'a1' });
    assert.deepEqual(short.error?.reasons, ['length']);
    const good = await sb.auth.signUp({ email: unique('policy'), password: 'unlisted-passw0rd' });
    assert.equal(good.error, null);
    assert.deepEqual((await sb.auth.updateUser({ password: 'letmein99' })).error?.reasons, ['pwned']);

    const viaRange = createClient(withRange.url, env.anonKey, options);
    assert.deepEqual((await viaRange.auth.signUp({ email: unique('range'), password: 'qwerty2024' })).error?.reasons, ['pwned']);
    assert.equal((await viaRange.auth.signUp({ email: unique('range'), password: 'not-on-the-list-7' })).error, null);
    assert.ok(prefixes.length >= 2 && prefixes.every((p) => /^[0-9A-F]{5}$/.test(p)), prefixes.join());
  } finally {
    withFile.stop();
    withRange.stop();
    range.close();
  }
  // A range API that cannot be reached does not wave passwords through.
  const down = await proxyWith({ FLUXBASE_AUTH_PASSWORD_BREACHED_RANGE_URL: 'http://127.0.0.1:9/range/' });
  try {
    const res = await fetch(`${down.url}/auth/v1/signup`, {
      method: 'POST',
      headers: { apikey: env.anonKey, 'content-type': 'application/json' },
      body: JSON.stringify({ email: unique('down'), password: 'whatever-passw0rd' }),
    });
    assert.equal(res.status, 503);
  } finally {
    down.stop();
    rmSync(file, { force: true });
  }
});

test('an anonymous user who adds an e-mail becomes a permanent user', async () => {
  const proxy = await proxyWith({ FLUXBASE_AUTH_ANONYMOUS_USERS: 'true' });
  try {
    const sb = createClient(proxy.url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const { data, error } = await sb.auth.signInAnonymously();
    assert.equal(error, null);
    assert.equal(data.user.is_anonymous, true);
    const email = unique('was-anonymous');
    const { data: updated, error: updateError } = await sb.auth.updateUser({ email, password: 'permanent-passw0rd' });
    assert.equal(updateError, null);
    assert.equal(updated.user.email, email);
    assert.equal(updated.user.is_anonymous, false);
    assert.deepEqual(updated.user.identities.map((i) => i.provider), ['email']);
    const again = await createClient(proxy.url, env.anonKey, { auth: { persistSession: false } })
      .auth.signInWithPassword({ email, password: 'permanent-passw0rd' });
    assert.equal(again.error, null);
    assert.equal(again.data.user.id, data.user.id);
  } finally {
    proxy.stop();
  }
});

test('user enumeration: a wrong password and an unknown address take about as long and answer alike', async () => {
  const known = [unique('timing-a'), unique('timing-b')];
  for (const email of known) await client().auth.signUp({ email, password: 'timing-password' });
  const attempt = async (email) => {
    const started = performance.now();
    const res = await fetch(`${env.url}/auth/v1/token?grant_type=password`, {
      method: 'POST',
      headers: { apikey: env.anonKey, 'content-type': 'application/json' },
      body: JSON.stringify({ email, password: 'not-the-password' }),
    });
    const body = await res.json();
    return { ms: performance.now() - started, status: res.status, code: body.error_code, msg: body.msg };
  };
  const knownRuns = [];
  const unknownRuns = [];
  // Interleaved, four per known account (below the lockout), against fresh unknown addresses.
  for (let i = 0; i < 4; i++) {
    for (const email of known) {
      knownRuns.push(await attempt(email));
      unknownRuns.push(await attempt(unique('timing-nobody')));
    }
  }
  for (const r of [...knownRuns, ...unknownRuns]) {
    assert.deepEqual([r.status, r.code, r.msg], [400, 'invalid_credentials', 'Invalid login credentials']);
  }
  const median = (runs) => runs.map((r) => r.ms).sort((a, b) => a - b)[Math.floor(runs.length / 2)];
  const ratio = median(knownRuns) / median(unknownRuns);
  // Both cost one argon2id hash (tens of ms); a missing hash would make unknown addresses several times faster.
  assert.ok(ratio > 0.5 && ratio < 2, `median known ${median(knownRuns).toFixed(1)} ms, unknown ${median(unknownRuns).toFixed(1)} ms`);
});
