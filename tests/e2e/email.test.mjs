// E-mail sign-in and recovery through supabase-js, with a real SMTP server
// (tests/e2e/smtp-server.mjs) receiving the messages: links and codes are
// read from the received mail.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClient } from '@supabase/supabase-js';
import { env, sql, eventually, proxyWith } from './helpers.mjs';

const maildir = process.env.FLUXBASE_MAILDIR;
const client = () => createClient(env.url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
const unique = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** The decoded body of a raw message (7bit, quoted-printable or base64). */
function decode(raw) {
  const [head, ...rest] = raw.split(/\r?\n\r?\n/);
  const body = rest.join('\n\n');
  if (/content-transfer-encoding:\s*quoted-printable/i.test(head)) {
    return body.replace(/=\r?\n/g, '').replace(/=([0-9A-F]{2})/g, (_, h) => String.fromCharCode(parseInt(h, 16)));
  }
  if (/content-transfer-encoding:\s*base64/i.test(head)) return Buffer.from(body.replace(/\s+/g, ''), 'base64').toString();
  return body;
}

/** The messages received for `to`, oldest first. */
function mails(to) {
  let files = [];
  try {
    files = readdirSync(maildir).sort();
  } catch {
    return [];
  }
  return files
    .map((f) => readFileSync(join(maildir, f), 'utf8'))
    .filter((raw) => raw.startsWith(`X-Envelope-To: ${to}\r\n`))
    .map((raw) => ({ subject: /^Subject: (.*)$/m.exec(raw)?.[1], body: decode(raw) }));
}

async function nextMail(to, count) {
  assert.ok(await eventually(async () => mails(to).length >= count, 10000), `mail ${count} for ${to} arrived`);
  const mail = mails(to)[count - 1];
  const link = /href="([^"]+)"/.exec(mail.body)?.[1].replace(/&amp;/g, '&');
  const code = /code: (\d{6})/.exec(mail.body)[1];
  return { ...mail, link, code };
}

test('signInWithOtp: the code from the e-mail signs in; the link redirects with a session, once', async () => {
  const email = unique('otp');
  const sb = client();
  const { error } = await sb.auth.signInWithOtp({ email, options: { emailRedirectTo: 'http://localhost:3000/welcome' } });
  assert.equal(error, null);
  const first = await nextMail(email, 1);
  assert.equal(first.subject, 'Your sign-in link');
  // Neither the code nor the link token is stored.
  const stored = sql(`SELECT token_hash || ' ' || relates_to FROM auth.one_time_tokens t JOIN auth.users u ON u.id = t.user_id
                      WHERE u.email = '${email}'`);
  assert.ok(!stored.includes(first.code) && !stored.includes(new URL(first.link).searchParams.get('token')));

  const { data, error: verifyError } = await sb.auth.verifyOtp({ email, token: first.code, type: 'email' });
  assert.equal(verifyError, null);
  assert.equal(data.user.email, email);
  assert.ok(data.user.email_confirmed_at, 'the e-mail counts as confirmed');
  const again = await client().auth.verifyOtp({ email, token: first.code, type: 'email' });
  assert.equal(again.error?.code, 'otp_expired', 'a code works once');

  await sleep(2100); // auth.email_interval_seconds in the test run
  const redirect = { options: { emailRedirectTo: 'http://localhost:3000/welcome' } };
  assert.equal((await client().auth.signInWithOtp({ email, ...redirect })).error, null);
  const second = await nextMail(email, 2);
  const res = await fetch(second.link, { redirect: 'manual' });
  assert.equal(res.status, 303);
  const location = new URL(res.headers.get('location'));
  assert.equal(`${location.origin}${location.pathname}`, 'http://localhost:3000/welcome');
  const fragment = new URLSearchParams(location.hash.slice(1));
  assert.equal(fragment.get('token_type'), 'bearer');
  const viaLink = await client().auth.getUser(fragment.get('access_token'));
  assert.equal(viaLink.data.user.email, email);
  const reused = await fetch(second.link, { redirect: 'manual' });
  const reusedFragment = new URLSearchParams(new URL(reused.headers.get('location')).hash.slice(1));
  assert.equal(reusedFragment.get('error_code'), 'otp_expired');
});

test('PKCE (flowType pkce, as @supabase/ssr uses it): the e-mailed link leads to ?code= for exchangeCodeForSession', async () => {
  const email = unique('pkce-link');
  const pkce = () => createClient(env.url, env.anonKey, {
    auth: { flowType: 'pkce', persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });
  const app = pkce();
  const { error } = await app.auth.signInWithOtp({ email, options: { emailRedirectTo: 'http://localhost:3000/auth/callback' } });
  assert.equal(error, null);
  const mail = await nextMail(email, 1);
  const res = await fetch(mail.link, { redirect: 'manual' });
  assert.equal(res.status, 303);
  const back = new URL(res.headers.get('location'));
  assert.equal(`${back.origin}${back.pathname}`, 'http://localhost:3000/auth/callback');
  assert.equal(back.hash, '', 'no session in the URL: only the app with the verifier gets one');
  const code = back.searchParams.get('code');
  assert.ok(code);
  const { data, error: exchangeError } = await app.auth.exchangeCodeForSession(code);
  assert.equal(exchangeError, null);
  assert.equal(data.user.email, email);
  assert.ok(data.user.email_confirmed_at);
  const claims = JSON.parse(Buffer.from(data.session.access_token.split('.')[1], 'base64url'));
  assert.equal(claims.amr[0].method, 'magiclink');
  // Someone who intercepts the link but not the verifier gets nothing.
  await sleep(2100);
  assert.equal((await app.auth.signInWithOtp({ email })).error, null);
  const second = await nextMail(email, 2);
  const intercepted = new URL((await fetch(second.link, { redirect: 'manual' })).headers.get('location'));
  const stolen = await fetch(`${env.url}/auth/v1/token?grant_type=pkce`, {
    method: 'POST',
    headers: { apikey: env.anonKey, 'content-type': 'application/json' },
    body: JSON.stringify({ auth_code: intercepted.searchParams.get('code'), code_verifier: 'a'.repeat(43) }),
  });
  assert.equal(stolen.status, 403);
  // A code typed in (verifyOtp) signs in directly, PKCE or not.
  await sleep(2100);
  const recover = pkce();
  assert.equal((await recover.auth.resetPasswordForEmail(email, { redirectTo: 'http://localhost:3000/reset' })).error, null);
  const third = await nextMail(email, 3);
  const viaCode = await recover.auth.verifyOtp({ email, token: third.code, type: 'recovery' });
  assert.equal(viaCode.error, null);
  assert.equal(viaCode.data.user.email, email);
  assert.equal(sql(`SELECT count(*) FROM auth.flow_state f JOIN auth.users u ON u.id = f.user_id
                    WHERE u.email = '${email}' AND f.auth_code LIKE 'pending:%'`), '0', 'no pending flow left');
});

test('a six-digit code is not guessable: the fifth wrong try deletes it', async () => {
  const email = unique('guess');
  assert.equal((await client().auth.signInWithOtp({ email })).error, null);
  const { code } = await nextMail(email, 1);
  for (let i = 0; i < 5; i++) {
    const wrong = String((Number(code) + 1 + i) % 1000000).padStart(6, '0');
    assert.equal((await client().auth.verifyOtp({ email, token: wrong, type: 'email' })).error?.code, 'otp_expired');
  }
  const right = await client().auth.verifyOtp({ email, token: code, type: 'email' });
  assert.equal(right.error?.code, 'otp_expired', 'the right code came too late');
  const audit = sql(`SELECT count(*) FROM auth.audit_log_entries WHERE payload->>'action' = 'token_revoked_after_failures'
                     AND payload->>'actor_username' = '${email}'`);
  assert.equal(audit, '1');
});

test('resetPasswordForEmail: the recovery code signs in and the password can be changed', async () => {
  const email = unique('recover');
  await client().auth.signUp({ email, password: 'old-password' });
  const { error } = await client().auth.resetPasswordForEmail(email, { redirectTo: 'http://localhost:3000/reset' });
  assert.equal(error, null);
  const mail = await nextMail(email, 1);
  assert.equal(mail.subject, 'Reset your password');
  assert.match(mail.link, /type=recovery/);
  const sb = client();
  const { error: verifyError } = await sb.auth.verifyOtp({ email, token: mail.code, type: 'recovery' });
  assert.equal(verifyError, null);
  assert.equal((await sb.auth.updateUser({ password: 'new-password' })).error, null);
  assert.equal((await client().auth.signInWithPassword({ email, password: 'old-password' })).error?.code, 'invalid_credentials');
  assert.equal((await client().auth.signInWithPassword({ email, password: 'new-password' })).error, null);
});

test('e-mail requests: open redirects go to the site URL, unknown addresses not revealed, one mail per interval', async () => {
  const email = unique('guarded');
  // As GoTrue: a redirect_to that is not allowed is answered 200 and the
  // link leads to the site URL instead.
  const evil = await client().auth.signInWithOtp({ email, options: { emailRedirectTo: 'https://evil.example/steal' } });
  assert.equal(evil.error, null);
  const sent = await nextMail(email, 1);
  assert.ok(!sent.link.includes('evil.example'), sent.link);
  assert.equal(new URL(sent.link).searchParams.get('redirect_to'), 'http://localhost:3000');
  await sleep(2100);

  const nobody = unique('nobody');
  const unknown = await client().auth.resetPasswordForEmail(nobody);
  assert.equal(unknown.error, null, 'the same answer as for a known address');
  const noCreate = await client().auth.signInWithOtp({ email: nobody, options: { shouldCreateUser: false } });
  assert.equal(noCreate.error, null);
  await sleep(500);
  assert.equal(mails(nobody).length, 0, 'nothing was sent');
  assert.equal(sql(`SELECT count(*) FROM auth.users WHERE email = '${nobody}'`), '0');

  assert.equal((await client().auth.signInWithOtp({ email })).error, null);
  const tooSoon = await client().auth.signInWithOtp({ email });
  assert.equal(tooSoon.error?.status, 429);
  const wrong = await client().auth.verifyOtp({ email, token: '000000', type: 'email' });
  assert.ok(wrong.error, 'a wrong code is refused');
});


test('with confirmations on, signUp mails a confirmation; its code confirms and signs in', async () => {
  const proxy = await proxyWith({ FLUXBASE_AUTH_EMAIL_AUTOCONFIRM: 'false' });
  try {
    const sb = createClient(proxy.url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const email = unique('confirm');
    const { data, error } = await sb.auth.signUp({ email, password: 'confirm-me', options: { emailRedirectTo: 'http://localhost:3000/in' } });
    assert.equal(error, null);
    assert.equal(data.session, null, 'no session before confirmation');
    assert.equal(data.user.email_confirmed_at, null);
    const early = await sb.auth.signInWithPassword({ email, password: 'confirm-me' });
    assert.equal(early.error?.code, 'email_not_confirmed');
    const mail = await nextMail(email, 1);
    assert.equal(mail.subject, 'Confirm your e-mail address');
    assert.match(mail.link, /type=signup/);
    await sleep(2100);
    assert.equal((await sb.auth.resend({ type: 'signup', email })).error, null);
    const again = await nextMail(email, 2);
    const { data: confirmed, error: verifyError } = await sb.auth.verifyOtp({ email, token: again.code, type: 'signup' });
    assert.equal(verifyError, null);
    assert.ok(confirmed.user.email_confirmed_at);
    assert.equal((await sb.auth.signInWithPassword({ email, password: 'confirm-me' })).error, null);
    assert.equal((await sb.auth.verifyOtp({ email, token: mail.code, type: 'signup' })).error?.code, 'otp_expired',
      'the first code was replaced by the resent one');
  } finally {
    proxy.stop();
  }
});

test('with confirmations on, signUp of a registered address answers as Supabase does: a made-up user, nothing sent', async () => {
  const proxy = await proxyWith({ FLUXBASE_AUTH_EMAIL_AUTOCONFIRM: 'false' });
  try {
    const options = { auth: { persistSession: false, autoRefreshToken: false } };
    const sb = createClient(proxy.url, env.anonKey, options);
    const admin = createClient(proxy.url, env.serviceKey, options);
    // A confirmed user: the answer looks like a new sign-up, without identities (GoTrue's sanitizeUser).
    const taken = unique('taken');
    const { data: created } = await admin.auth.admin.createUser({ email: taken, password: 'owner-password', email_confirm: true });
    const { data, error } = await sb.auth.signUp({ email: taken, password: 'attacker-1', options: { data: { x: 1 } } });
    assert.equal(error, null);
    assert.equal(data.session, null);
    assert.equal(data.user.email, taken);
    assert.notEqual(data.user.id, created.user.id);
    assert.deepEqual(data.user.identities, []);
    assert.equal(data.user.email_confirmed_at, null);
    assert.deepEqual(data.user.user_metadata, { x: 1 });
    assert.equal(sql(`SELECT count(*) FROM auth.users WHERE email = '${taken}' OR id = '${data.user.id}'`), '1');
    assert.equal(sql(`SELECT count(*) FROM auth.audit_log_entries WHERE payload->>'action' = 'user_repeated_signup'
                      AND payload->>'actor_id' = '${created.user.id}'`), '1');
    await sleep(1000);
    assert.equal(mails(taken).length, 0, 'nothing is sent to the owner');
    assert.equal((await sb.auth.signInWithPassword({ email: taken, password: 'owner-password' })).error, null,
      'the password is unchanged');
    // An unconfirmed user: the confirmation again, the first password kept (as GoTrue).
    const pending = unique('pending');
    const first = await sb.auth.signUp({ email: pending, password: 'first-password' });
    assert.equal(first.error, null);
    await nextMail(pending, 1);
    await sleep(2100);
    const again = await sb.auth.signUp({ email: pending, password: 'second-password' });
    assert.equal(again.error, null);
    assert.equal(again.data.user.id, first.data.user.id);
    assert.equal(again.data.user.identities.length, 1);
    const mail = await nextMail(pending, 2);
    assert.equal((await sb.auth.verifyOtp({ email: pending, token: mail.code, type: 'signup' })).error, null);
    assert.equal((await sb.auth.signInWithPassword({ email: pending, password: 'first-password' })).error, null);
    // With sign-ups confirmed at once, the address is said to be taken (GoTrue too).
    const autoconfirmed = await client().auth.signUp({ email: taken, password: 'attacker-1' });
    assert.equal(autoconfirmed.error?.code, 'user_already_exists');
    assert.equal(autoconfirmed.error?.status, 422);
  } finally {
    proxy.stop();
  }
});

test('updateUser({email}) waits for both addresses; a password change can demand a reauthentication code', async () => {
  const proxy = await proxyWith({
    FLUXBASE_AUTH_EMAIL_AUTOCONFIRM: 'false',
    FLUXBASE_AUTH_UPDATE_PASSWORD_REQUIRE_REAUTHENTICATION: 'true',
  });
  try {
    const options = { auth: { persistSession: false, autoRefreshToken: false } };
    const admin = createClient(proxy.url, env.serviceKey, options);
    const old = unique('change-from');
    const next = unique('change-to');
    assert.equal((await admin.auth.admin.createUser({ email: old, password: 'first-password', email_confirm: true })).error, null);
    const sb = createClient(proxy.url, env.anonKey, options);
    assert.equal((await sb.auth.signInWithPassword({ email: old, password: 'first-password' })).error, null);

    const { data, error } = await sb.auth.updateUser({ email: next }, { emailRedirectTo: 'http://localhost:3000/changed' });
    assert.equal(error, null);
    assert.equal(data.user.email, old, 'not changed yet');
    assert.equal(data.user.new_email, next);
    const toNew = await nextMail(next, 1);
    const toOld = await nextMail(old, 1);
    assert.equal(toNew.subject, 'Confirm the change of your e-mail address');
    assert.match(toOld.body, new RegExp(`From ${old} to ${next}`));
    // The first confirmation only counts; the second moves the address.
    const first = await sb.auth.verifyOtp({ email: next, token: toNew.code, type: 'email_change' });
    assert.equal(first.error, null);
    assert.equal(first.data.session, null);
    assert.equal(sql(`SELECT email FROM auth.users WHERE email_change = '${next}'`), old);
    const res = await fetch(toOld.link, { redirect: 'manual' });
    const fragment = new URLSearchParams(new URL(res.headers.get('location')).hash.slice(1));
    assert.ok(fragment.get('access_token'), res.headers.get('location'));
    assert.equal(sql(`SELECT email FROM auth.users WHERE email = '${next}'`), next);
    assert.equal((await sb.auth.signInWithPassword({ email: next, password: 'first-password' })).error, null);
    assert.equal((await sb.auth.verifyOtp({ email: old, token: toOld.code, type: 'email_change' })).error?.code, 'otp_expired');

    // Password changes need the code GET /reauthenticate mails, once.
    const without = await sb.auth.updateUser({ password: 'second-password' });
    assert.equal(without.error?.code, 'reauthentication_needed');
    assert.equal((await sb.auth.reauthenticate()).error, null);
    const nonce = (await nextMail(next, 2)).code;
    const wrong = await sb.auth.updateUser({ password: 'second-password', nonce: nonce === '000000' ? '111111' : '000000' });
    assert.equal(wrong.error?.code, 'reauthentication_not_valid');
    assert.equal((await sb.auth.updateUser({ password: 'second-password', nonce })).error, null);
    assert.equal((await sb.auth.updateUser({ password: 'third-password', nonce })).error?.code, 'reauthentication_not_valid');
    assert.equal((await sb.auth.signInWithPassword({ email: next, password: 'second-password' })).error, null);
  } finally {
    proxy.stop();
  }
});

test('a password set by someone who never proved the address dies when its owner signs in by e-mail', async () => {
  const proxy = await proxyWith({ FLUXBASE_AUTH_EMAIL_AUTOCONFIRM: 'false' });
  try {
    const sb = () => createClient(proxy.url, env.anonKey, { auth: { persistSession: false, autoRefreshToken: false } });
    const victim = unique('squatted');
    // The attacker registers the victim's address first; it stays unconfirmed.
    assert.equal((await sb().auth.signUp({ email: victim, password: 'attacker-password' })).error, null);
    await nextMail(victim, 1); // the confirmation nobody clicks
    await sleep(2100);
    // The owner signs in with a code sent to the mailbox.
    assert.equal((await sb().auth.signInWithOtp({ email: victim })).error, null);
    const { code } = await nextMail(victim, 2);
    const owner = await sb().auth.verifyOtp({ email: victim, token: code, type: 'email' });
    assert.equal(owner.error, null);
    const attacker = await sb().auth.signInWithPassword({ email: victim, password: 'attacker-password' });
    assert.equal(attacker.error?.code, 'invalid_credentials');
  } finally {
    proxy.stop();
  }
});

test('admin: inviteUserByEmail mails an invitation; generateLink returns a working link; audit log', async () => {
  const admin = createClient(env.url, env.serviceKey, { auth: { persistSession: false, autoRefreshToken: false } });
  const invited = unique('invited');
  const { data: inv, error } = await admin.auth.admin.inviteUserByEmail(invited, { data: { team: 'core' } });
  assert.equal(error, null);
  assert.equal(inv.user.email, invited);
  const mail = await nextMail(invited, 1);
  assert.equal(mail.subject, 'You have been invited');
  assert.match(mail.link, /type=invite/);
  const sb = client();
  const { data: accepted, error: acceptError } = await sb.auth.verifyOtp({ email: invited, token: mail.code, type: 'invite' });
  assert.equal(acceptError, null);
  assert.ok(accepted.user.email_confirmed_at);
  assert.equal(accepted.user.user_metadata.team, 'core');
  const notAdmin = await sb.auth.admin.inviteUserByEmail(unique('nope'));
  assert.equal(notAdmin.error?.status, 403);

  const email = unique('linked');
  const { data: link, error: linkError } = await admin.auth.admin.generateLink({ type: 'magiclink', email });
  assert.equal(linkError, null);
  assert.equal(link.user.email, email);
  assert.match(link.properties.email_otp, /^\d{6}$/);
  assert.equal(link.properties.verification_type, 'signup', 'an unknown address is signed up, as GoTrue answers it');
  assert.equal(mails(email).length, 0, 'generate_link sends nothing');
  const res = await fetch(link.properties.action_link, { redirect: 'manual' });
  const fragment = new URLSearchParams(new URL(res.headers.get('location')).hash.slice(1));
  assert.equal((await client().auth.getUser(fragment.get('access_token'))).data.user.email, email);

  const audit = await (await fetch(`${env.url}/auth/v1/admin/audit?per_page=1000`, {
    headers: { apikey: env.serviceKey, Authorization: `Bearer ${env.serviceKey}` },
  })).json();
  const actions = audit.entries.filter((e) => e.payload.actor_username === email).map((e) => e.payload.action);
  assert.ok(actions.includes('user_signedup') && actions.includes('login'), actions.join(','));
});

test('X-Forwarded-For is believed only from server.trusted_proxies', async () => {
  const signUp = async (url, email) =>
    fetch(`${url}/auth/v1/signup`, {
      method: 'POST',
      headers: { apikey: env.anonKey, 'content-type': 'application/json', 'x-forwarded-for': '198.51.100.9, 203.0.113.7' },
      body: JSON.stringify({ email, password: 'forwarded-1' }),
    });
  const ipOf = (email) =>
    sql(`SELECT ip_address FROM auth.audit_log_entries WHERE payload->>'action' = 'user_signedup'
         AND payload->>'actor_username' = '${email}'`);
  const direct = unique('direct');
  assert.equal((await signUp(env.url, direct)).status, 200);
  assert.equal(ipOf(direct), '127.0.0.1', 'an untrusted peer cannot choose its address');
  const proxy = await proxyWith({ FLUXBASE_SERVER_TRUSTED_PROXIES: '["127.0.0.1"]', FLUXBASE_AUTH_EMAIL_AUTOCONFIRM: 'true' });
  try {
    const forwarded = unique('forwarded');
    assert.equal((await signUp(proxy.url, forwarded)).status, 200);
    assert.equal(ipOf(forwarded), '203.0.113.7', 'the rightmost untrusted forwarded address');
  } finally {
    proxy.stop();
  }
});
