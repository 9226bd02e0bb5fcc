// Phone sign-up and sign-in through supabase-js. The SMS go to an HTTP
// receiver in this file: as a Standard Webhooks endpoint (the `webhook`
// provider, whose signature is checked here), and speaking Twilio's
// Messages API wire format (the `twilio` provider). Test numbers with fixed
// codes need no provider.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createClient } from '@supabase/supabase-js';
import { sql, eventually, proxyWith, env } from './helpers.mjs';

const KEY = Buffer.from('fluxbase-e2e-webhook-signing-key');
const SECRET = `v1,whsec_${KEY.toString('base64')}`;
const phoneNumber = () => `1555${String(Math.floor(Math.random() * 1e7)).padStart(7, '0')}`;
const client = (url) =>
  createClient(url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });

/** An HTTP server that keeps what it receives; `handle(req, body)` answers. */
async function receiver(handle) {
  const received = [];
  const server = createServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString();
      const [status, answer, kept] = handle(req, body);
      if (kept) received.push(kept);
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(answer));
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${server.address().port}`, received, close: () => server.close() };
}

/** Standard Webhooks: v1,base64(HMAC-SHA256(key, "id.timestamp.body")). */
function signatureValid(req, body) {
  const id = req.headers['webhook-id'];
  const timestamp = req.headers['webhook-timestamp'];
  const expected = createHmac('sha256', KEY).update(`${id}.${timestamp}.${body}`).digest('base64');
  const given = String(req.headers['webhook-signature'] ?? '').split(' ').map((s) => s.replace(/^v1,/, ''));
  const fresh = Math.abs(Date.now() / 1000 - Number(timestamp)) < 300;
  return fresh && given.some((g) => g.length === expected.length && timingSafeEqual(Buffer.from(g), Buffer.from(expected)));
}

/** A receiver checking Standard Webhooks signatures, and a proxy sending its SMS there. */
async function webhookProxy(overrides = {}) {
  const box = await receiver((req, body) => {
    if (!signatureValid(req, body)) return [401, { error: 'bad signature' }];
    const payload = JSON.parse(body);
    return [200, {}, { phone: payload.user.phone, code: payload.sms.otp }];
  });
  const proxy = await proxyWith({
    FLUXBASE_AUTH_SMS_PROVIDER: 'webhook',
    FLUXBASE_AUTH_SMS_WEBHOOK_URL: `${box.url}/sms`,
    FLUXBASE_AUTH_SMS_WEBHOOK_SECRET: SECRET,
    ...overrides,
  }).catch((e) => { box.close(); throw e; });
  return { box, proxy };
}

async function codeFor(box, phone, count) {
  assert.ok(await eventually(async () => box.received.filter((m) => m.phone === phone).length >= count, 10000));
  return box.received.filter((m) => m.phone === phone)[count - 1].code;
}

test('phone sign-up, confirmation and OTP sign-in with the webhook SMS provider', async () => {
  const { box, proxy } = await webhookProxy({ FLUXBASE_AUTH_SMS_INTERVAL_SECONDS: '0' });
  try {
    const settings = await (await fetch(`${proxy.url}/auth/v1/settings`)).json();
    assert.equal(settings.external.phone, true);
    assert.equal(settings.sms_provider, 'webhook');
    const phone = phoneNumber();
    const sb = client(proxy.url);
    const { data, error } = await sb.auth.signUp({ phone: `+${phone.slice(0, 1)} ${phone.slice(1)}`, password: 'phone-password-1' });
    assert.equal(error, null);
    assert.equal(data.session, null, 'no session before the code');
    assert.equal(data.user.phone, phone, 'stored as digits, as Supabase does');
    const early = await client(proxy.url).auth.signInWithPassword({ phone, password: 'phone-password-1' });
    assert.equal(early.error?.code, 'phone_not_confirmed');
    const code = await codeFor(box, phone, 1);
    assert.match(code, /^\d{6}$/);
    // Codes are stored hashed.
    assert.equal(sql(`SELECT count(*) FROM auth.one_time_tokens t JOIN auth.users u ON u.id = t.user_id
                      WHERE u.phone = '${phone}' AND (t.relates_to LIKE '%${code}%' OR t.token_hash LIKE '%${code}%')`), '0');
    const wrong = await sb.auth.verifyOtp({ phone, token: code === '000000' ? '111111' : '000000', type: 'sms' });
    assert.equal(wrong.error?.code, 'otp_expired');
    const verified = await sb.auth.verifyOtp({ phone: `+${phone}`, token: code, type: 'sms' });
    assert.equal(verified.error, null);
    assert.ok(verified.data.user.phone_confirmed_at);
    assert.deepEqual(verified.data.user.app_metadata.providers, ['phone']);
    const password = await client(proxy.url).auth.signInWithPassword({ phone, password: 'phone-password-1' });
    assert.equal(password.error, null);

    // Passwordless: a code by SMS for a known number; an unknown one with
    // shouldCreateUser: false gets the same answer and no SMS.
    assert.equal((await sb.auth.signInWithOtp({ phone })).error, null);
    const otp = await codeFor(box, phone, 2);
    const signedIn = await client(proxy.url).auth.verifyOtp({ phone, token: otp, type: 'sms' });
    assert.equal(signedIn.error, null);
    assert.equal(signedIn.data.user.id, verified.data.user.id);
    const again = await client(proxy.url).auth.verifyOtp({ phone, token: otp, type: 'sms' });
    assert.equal(again.error?.code, 'otp_expired', 'a code works once');
    const nobody = phoneNumber();
    assert.equal((await sb.auth.signInWithOtp({ phone: nobody, options: { shouldCreateUser: false } })).error, null);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(box.received.filter((m) => m.phone === nobody).length, 0);

    const bad = await sb.auth.signInWithOtp({ phone: '0123' });
    assert.equal(bad.error?.code, 'validation_failed');

    // A new number is confirmed by a code texted to it before it counts.
    const moved = phoneNumber();
    const { data: pending, error: changeError } = await sb.auth.updateUser({ phone: moved });
    assert.equal(changeError, null);
    assert.equal(pending.user.phone, phone, 'not moved yet');
    assert.equal(pending.user.new_phone, moved);
    const changeCode = await codeFor(box, moved, 1);
    const wrongChange = await client(proxy.url).auth.verifyOtp({ phone: moved, token: changeCode === '000000' ? '111111' : '000000', type: 'phone_change' });
    assert.equal(wrongChange.error?.code, 'otp_expired');
    const { data: changed, error: verifyChangeError } = await client(proxy.url).auth.verifyOtp({ phone: moved, token: changeCode, type: 'phone_change' });
    assert.equal(verifyChangeError, null);
    assert.equal(changed.user.phone, moved);
    assert.ok(changed.user.phone_confirmed_at);
  } finally {
    proxy.stop();
    box.close();
  }
});

test('MFA by phone: enroll, the challenge texts a code, verify moves the session to aal2', async () => {
  const { box, proxy } = await webhookProxy();
  try {
    const sb = client(proxy.url);
    const email = `mfa-phone-${Date.now()}@example.com`;
    assert.equal((await sb.auth.signUp({ email, password: 'mfa-phone-password' })).error, null);
    const phone = phoneNumber();
    const { data: factor, error } = await sb.auth.mfa.enroll({ factorType: 'phone', phone: `+${phone}` });
    assert.equal(error, null);
    assert.equal(factor.type, 'phone');
    assert.equal(factor.phone, phone);
    const { data: challenge, error: challengeError } = await sb.auth.mfa.challenge({ factorId: factor.id, channel: 'sms' });
    assert.equal(challengeError, null);
    assert.equal(challenge.type, 'phone');
    assert.equal(challenge.phone, undefined, 'the number is not echoed');
    const code = await codeFor(box, phone, 1);
    assert.equal(sql(`SELECT count(*) FROM auth.mfa_challenges WHERE id = '${challenge.id}' AND otp_code LIKE '%${code}%'`), '0',
      'only a hash of the code is stored');
    const wrong = await sb.auth.mfa.verify({ factorId: factor.id, challengeId: challenge.id, code: code === '000000' ? '111111' : '000000' });
    assert.equal(wrong.error?.code, 'mfa_verification_failed');
    const { data: verified, error: verifyError } = await sb.auth.mfa.verify({ factorId: factor.id, challengeId: challenge.id, code });
    assert.equal(verifyError, null);
    const claims = JSON.parse(Buffer.from(verified.access_token.split('.')[1], 'base64url'));
    assert.equal(claims.aal, 'aal2');
    assert.ok(claims.amr.some((m) => m.method === 'mfa/phone'), 'GoTrue\'s method for a phone factor');
    const { data: aal } = await sb.auth.mfa.getAuthenticatorAssuranceLevel();
    assert.equal(aal.currentLevel, 'aal2');
    // One SMS per factor per interval.
    const tooSoon = await sb.auth.mfa.challenge({ factorId: factor.id, channel: 'sms' });
    assert.equal(tooSoon.error?.status, 429);
  } finally {
    proxy.stop();
    box.close();
  }
});

test('twilio SMS provider: the Messages API request Twilio expects', async () => {
  const box = await receiver((req, body) => {
    const form = new URLSearchParams(body);
    const auth = Buffer.from(String(req.headers.authorization).replace(/^Basic /, ''), 'base64').toString();
    if (req.url !== '/2010-04-01/Accounts/AC0123/Messages.json' || auth !== 'AC0123:twilio-token') {
      return [401, { code: 20003, message: 'Authenticate' }];
    }
    const code = /(\d{6})/.exec(form.get('Body'))?.[1];
    return [201, { sid: 'SM1', status: 'queued' }, { phone: form.get('To').replace(/^\+/, ''), from: form.get('From'), code, body: form.get('Body') }];
  });
  const proxy = await proxyWith({
    FLUXBASE_AUTH_SMS_PROVIDER: 'twilio',
    FLUXBASE_AUTH_SMS_TWILIO_API_URL: box.url,
    FLUXBASE_AUTH_SMS_TWILIO_ACCOUNT_SID: 'AC0123',
    FLUXBASE_AUTH_SMS_TWILIO_AUTH_TOKEN: 'twilio-token',
    FLUXBASE_AUTH_SMS_TWILIO_FROM: '+15550000000',
    FLUXBASE_AUTH_SMS_TEMPLATE: 'Fluxbase code: {{ .Code }}',
  }).catch((e) => { box.close(); throw e; });
  try {
    const phone = phoneNumber();
    const sb = client(proxy.url);
    assert.equal((await sb.auth.signInWithOtp({ phone })).error, null);
    const code = await codeFor(box, phone, 1);
    const message = box.received.find((m) => m.phone === phone);
    assert.equal(message.from, '+15550000000');
    assert.equal(message.body, `Fluxbase code: ${code}`);
    const { data, error } = await sb.auth.verifyOtp({ phone, token: code, type: 'sms' });
    assert.equal(error, null);
    assert.equal(data.user.phone, phone);
    // A provider that refuses: the client hears it, nothing is half done.
    const refusing = await proxyWith({
      FLUXBASE_AUTH_SMS_PROVIDER: 'twilio',
      FLUXBASE_AUTH_SMS_TWILIO_API_URL: box.url,
      FLUXBASE_AUTH_SMS_TWILIO_ACCOUNT_SID: 'AC0123',
      FLUXBASE_AUTH_SMS_TWILIO_AUTH_TOKEN: 'wrong-token',
      FLUXBASE_AUTH_SMS_TWILIO_FROM: '+15550000000',
    });
    try {
      const number = phoneNumber();
      const failed = await fetch(`${refusing.url}/auth/v1/otp`, {
        method: 'POST',
        headers: { apikey: env.anonKey, 'content-type': 'application/json' },
        body: JSON.stringify({ phone: number }),
      });
      assert.equal(failed.status, 500);
      assert.equal((await failed.json()).error_code, 'sms_send_failed');
      // The undelivered code is withdrawn: asking again is not "too soon".
      assert.equal(sql(`SELECT count(*) FROM auth.one_time_tokens t JOIN auth.users u ON u.id = t.user_id
                        WHERE u.phone = '${number}'`), '0');
    } finally {
      refusing.stop();
    }
  } finally {
    proxy.stop();
    box.close();
  }
});

test('reauthentication texts its code to a user without an e-mail, as GoTrue; the nonce changes the password', async () => {
  const { box, proxy } = await webhookProxy({ FLUXBASE_AUTH_SMS_AUTOCONFIRM: 'true', FLUXBASE_AUTH_SMS_INTERVAL_SECONDS: '0' });
  try {
    const phone = phoneNumber();
    const sb = client(proxy.url);
    const { data, error } = await sb.auth.signUp({ phone, password: 'phone-password-1' });
    assert.equal(error, null);
    assert.ok(data.session, 'sms_autoconfirm: a session at once');
    assert.equal((await sb.auth.reauthenticate()).error, null);
    const code = await codeFor(box, phone, 1);
    const wrong = await sb.auth.updateUser({ password: 'phone-password-2', nonce: code === '000000' ? '111111' : '000000' });
    assert.equal(wrong.error?.code, 'reauthentication_not_valid');
    const changed = await sb.auth.updateUser({ password: 'phone-password-2', nonce: code });
    assert.equal(changed.error, null);
    const signedIn = await client(proxy.url).auth.signInWithPassword({ phone, password: 'phone-password-2' });
    assert.equal(signedIn.error, null);
    const used = await sb.auth.updateUser({ password: 'phone-password-3', nonce: code });
    assert.equal(used.error?.code, 'reauthentication_not_valid', 'a code works once');
  } finally {
    proxy.stop();
    box.close();
  }
});

test('test numbers sign in with their fixed code; without a provider other numbers are refused', async () => {
  const test = phoneNumber();
  const proxy = await proxyWith({ FLUXBASE_AUTH_SMS_TEST_OTP: `{ "${test}" = "424242" }` });
  try {
    const sb = client(proxy.url);
    assert.equal((await sb.auth.signInWithOtp({ phone: test })).error, null);
    const { data, error } = await sb.auth.verifyOtp({ phone: test, token: '424242', type: 'sms' });
    assert.equal(error, null);
    assert.equal(data.user.phone, test);
    const other = await sb.auth.signInWithOtp({ phone: phoneNumber() });
    assert.equal(other.error?.code, 'phone_provider_disabled');
  } finally {
    proxy.stop();
  }
  // The main test proxy has no SMS provider at all.
  const plain = await client(env.url).auth.signUp({ phone: phoneNumber(), password: 'phone-password-1' });
  assert.equal(plain.error?.code, 'phone_provider_disabled');
});
