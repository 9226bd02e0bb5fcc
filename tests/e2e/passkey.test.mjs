// Passkeys through supabase-js's `auth.passkey.*` with a software
// authenticator (below): real ES256 keys, CBOR attestation objects and
// assertion signatures, as a browser's platform authenticator makes them.
// The relying party is the run's site URL, http://localhost:3000.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, generateKeyPairSync, randomBytes, sign } from 'node:crypto';
import { createClient } from '@supabase/supabase-js';
import { env, sql } from './helpers.mjs';

const ORIGIN = 'http://localhost:3000';
const RP_ID = 'localhost';
const unique = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
const client = () => createClient(env.url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
const sha256 = (b) => createHash('sha256').update(b).digest();
const b64url = (b) => Buffer.from(b).toString('base64url');

/** Minimal CBOR encoder: unsigned/negative ints, byte and text strings, maps. */
function cbor(value) {
  const head = (major, n) => {
    if (n < 24) return Buffer.from([(major << 5) | n]);
    if (n < 256) return Buffer.from([(major << 5) | 24, n]);
    if (n < 65536) return Buffer.from([(major << 5) | 25, n >> 8, n & 255]);
    const b = Buffer.alloc(5);
    b[0] = (major << 5) | 26;
    b.writeUInt32BE(n, 1);
    return b;
  };
  if (typeof value === 'number') return value >= 0 ? head(0, value) : head(1, -1 - value);
  if (Buffer.isBuffer(value)) return Buffer.concat([head(2, value.length), value]);
  if (typeof value === 'string') return Buffer.concat([head(3, Buffer.byteLength(value)), Buffer.from(value)]);
  if (value instanceof Map) {
    return Buffer.concat([head(5, value.size), ...[...value].flatMap(([k, v]) => [cbor(k), cbor(v)])]);
  }
  throw new Error(`cbor: ${typeof value}`);
}

/** A platform authenticator holding one discoverable ES256 credential. */
function authenticator({ origin = ORIGIN, rpId = RP_ID } = {}) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = publicKey.export({ format: 'jwk' });
  const id = randomBytes(32);
  let counter = 0;
  let userHandle;
  const clientData = (type, challenge) => Buffer.from(JSON.stringify({ type, challenge, origin, crossOrigin: false }));
  return {
    id,
    create(options) {
      userHandle = options.user.id;
      counter += 1;
      const cose = cbor(new Map([[1, 2], [3, -7], [-1, 1], [-2, Buffer.from(jwk.x, 'base64url')], [-3, Buffer.from(jwk.y, 'base64url')]]));
      const length = Buffer.alloc(2);
      length.writeUInt16BE(id.length);
      const count = Buffer.alloc(4);
      count.writeUInt32BE(counter);
      const authData = Buffer.concat([sha256(rpId), Buffer.from([0x45]), count, Buffer.alloc(16), length, id, cose]);
      const attestationObject = cbor(new Map([['fmt', 'none'], ['attStmt', new Map()], ['authData', authData]]));
      return {
        id: b64url(id),
        rawId: b64url(id),
        type: 'public-key',
        response: { clientDataJSON: b64url(clientData('webauthn.create', options.challenge)), attestationObject: b64url(attestationObject) },
        clientExtensionResults: {},
        authenticatorAttachment: 'platform',
      };
    },
    get(options, { step = 1 } = {}) {
      counter += step;
      const count = Buffer.alloc(4);
      count.writeUInt32BE(counter);
      const authData = Buffer.concat([sha256(options.rpId ?? rpId), Buffer.from([0x05]), count]);
      const data = clientData('webauthn.get', options.challenge);
      const signature = sign('sha256', Buffer.concat([authData, sha256(data)]), privateKey);
      return {
        id: b64url(id),
        rawId: b64url(id),
        type: 'public-key',
        response: {
          clientDataJSON: b64url(data),
          authenticatorData: b64url(authData),
          signature: b64url(signature),
          userHandle,
        },
        clientExtensionResults: {},
        authenticatorAttachment: 'platform',
      };
    },
  };
}

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
  assert.equal(twice.error?.code, 'webauthn_challenge_expired');
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
