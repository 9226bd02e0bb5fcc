// Passkeys through supabase-js's `auth.passkey.*` with a software
// authenticator (authenticator.mjs): real ES256 keys, CBOR attestation objects and
// assertion signatures, as a browser's platform authenticator makes them.
// The relying party is the run's site URL, http://localhost:3000.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { createClient } from '@supabase/supabase-js';
import { env, sql } from './helpers.mjs';
import { RP_ID, authenticator, b64url } from './authenticator.mjs';

const unique = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
const client = () => createClient(env.url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });

async function signedInUser() {
  const sb = client();
  const email = unique('passkey');
  const { data, error } = await sb.auth.signUp({ email, password: 'passkey-password-1' });
  assert.equal(error, null);
  return { sb, email, user: data.user };
}

async function register(sb, device) {
  const { data: start, error } = await sb.auth.passkey.startRegistration();
  assert.equal(error, null);
  assert.equal(start.options.rp.id, RP_ID);
  assert.equal(start.options.attestation, 'none');
  return sb.auth.passkey.verifyRegistration({ challengeId: start.challenge_id, credential: device.create(start.options) });
}

async function signIn(device, tamper = (c) => c) {
  const sb = client();
  const { data: start, error } = await sb.auth.passkey.startAuthentication();
  assert.equal(error, null);
  const credential = tamper(device.get(start.options), start);
  return { sb, result: await sb.auth.passkey.verifyAuthentication({ challengeId: start.challenge_id, credential }) };
}

test('passkeys: register while signed in, then sign in with no e-mail or password', async () => {
  const { sb, email, user } = await signedInUser();
  const device = authenticator();
  const { data: passkey, error } = await register(sb, device);
  assert.equal(error, null);
  assert.ok(passkey.id);
  // The stored key is the COSE key, bound to the credential id.
  assert.equal(sql(`SELECT encode(credential_id, 'base64') FROM auth.webauthn_credentials WHERE id = '${passkey.id}'`),
    device.id.toString('base64'));

  const { result } = await signIn(device);
  assert.equal(result.error, null);
  assert.equal(result.data.user.id, user.id);
  assert.equal(result.data.user.email, email);
  const claims = JSON.parse(Buffer.from(result.data.session.access_token.split('.')[1], 'base64url'));
  assert.equal(claims.amr[0].method, 'passkey');

  const { data: list } = await sb.auth.passkey.list();
  assert.equal(list.length, 1);
  assert.ok(list[0].last_used_at);
  const { data: renamed } = await sb.auth.passkey.update({ passkeyId: passkey.id, friendlyName: 'Laptop' });
  assert.equal(renamed.friendly_name, 'Laptop');

  // The same authenticator cannot be registered twice.
  const again = await register(sb, device);
  assert.equal(again.error?.code, 'passkey_already_registered');

  // Admin view, and deletion by the owner.
  const admin = createClient(env.url, env.serviceKey, { auth: { persistSession: false } });
  const { data: adminList } = await admin.auth.admin.passkey.listPasskeys({ userId: user.id });
  assert.deepEqual(adminList.map((p) => p.id), [passkey.id]);
  assert.equal((await sb.auth.passkey.delete({ passkeyId: passkey.id })).error, null);
  const { result: gone } = await signIn(device);
  assert.equal(gone.error?.code, 'webauthn_verification_failed');
});

test('passkeys: forged, replayed, cloned and foreign-origin assertions are refused', async () => {
  const { sb } = await signedInUser();
  const device = authenticator();
  assert.equal((await register(sb, device)).error, null);

  // A well-formed signature by another key, and bytes that are no signature at all.
  const otherKey = authenticator();
  const forged = await signIn(device, (c, s) => ({ ...c, response: { ...c.response, signature: otherKey.get(s.options).response.signature } }));
  assert.equal(forged.result.error?.code, 'webauthn_verification_failed');
  const garbage = await signIn(device, (c) => ({ ...c, response: { ...c.response, signature: b64url(randomBytes(70)) } }));
  assert.equal(garbage.result.error?.code, 'webauthn_verification_failed');
  assert.equal(forged.result.error?.code, 'webauthn_verification_failed');
  // An answer to one challenge sent for another.
  let previous;
  const first = await signIn(device, (c) => { previous = c; return c; });
  assert.equal(first.result.error, null);
  const replay = await signIn(device, () => previous);
  assert.equal(replay.result.error?.code, 'webauthn_verification_failed');
  // The same challenge twice.
  const sb2 = client();
  const { data: start } = await sb2.auth.passkey.startAuthentication();
  const answer = device.get(start.options);
  assert.equal((await sb2.auth.passkey.verifyAuthentication({ challengeId: start.challenge_id, credential: answer })).error, null);
  const twice = await sb2.auth.passkey.verifyAuthentication({ challengeId: start.challenge_id, credential: answer });
  assert.equal(twice.error?.code, 'webauthn_challenge_not_found', 'a replayed challenge, as GoTrue');
  // A counter that goes backwards: a cloned authenticator.
  const cloned = await signIn(device, (c, s) => device.get(s.options, { step: -5 }));
  assert.equal(cloned.result.error?.code, 'webauthn_verification_failed');
  // A phishing page on another origin, and a credential for another relying party.
  const phished = authenticator({ origin: 'https://evil.example' });
  const other = await signedInUser();
  const otherRp = authenticator({ rpId: 'evil.example' });
  assert.equal((await register(other.sb, phished)).error?.code, 'webauthn_verification_failed');
  assert.equal((await register(other.sb, otherRp)).error?.code, 'webauthn_verification_failed');
  // Registration needs a signed-in user.
  const anonymous = await fetch(`${env.url}/auth/v1/passkeys/registration/options`, {
    method: 'POST',
    headers: { apikey: env.anonKey, 'content-type': 'application/json' },
    body: '{}',
  });
  assert.equal(anonymous.status, 401);
});
