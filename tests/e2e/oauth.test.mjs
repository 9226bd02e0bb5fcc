// OAuth 2.0 / OpenID Connect sign-in through supabase-js against a real
// OpenID provider (panva's oidc-provider, tests/e2e/oidc-provider.mjs), the
// browser played by tests/e2e/browser.mjs. `keycloak` is a generic OIDC
// provider found by discovery (identity from the verified ID token);
// `acme` is the same server used as plain OAuth 2.0 (identity from the
// user-info endpoint). The IdP signs in whoever `login_hint` names; an
// address starting with "unverified" comes with email_verified = false.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createClient } from '@supabase/supabase-js';
import { env, sql } from './helpers.mjs';
import { follow } from './browser.mjs';

const idp = process.env.FLUXBASE_IDP_URL;
const APP = 'http://localhost:3000';
const unique = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
const client = (flowType = 'pkce') =>
  createClient(env.url, env.anonKey, {
    auth: { flowType, persistSession: false, autoRefreshToken: false, detectSessionInUrl: false },
  });

/** Signs in at the IdP as `email` from the URL the app was given; returns the app URL reached. */
async function browse(url, email) {
  const withHint = new URL(url);
  // supabase-js puts queryParams on /authorize; Fluxbase forwards them to the IdP.
  if (email && !withHint.searchParams.has('login_hint')) withHint.searchParams.set('login_hint', email);
  const hop = await follow(withHint.href, { until: APP });
  assert.ok(hop.url.startsWith(APP), `expected a redirect to the app, got ${hop.status} ${hop.url} ${hop.body ?? ''}`);
  return new URL(hop.url);
}

/** POST /token?grant_type=pkce by hand (supabase-js only sends the verifier it kept). */
const pkceToken = (code, verifier) =>
  fetch(`${env.url}/auth/v1/token?grant_type=pkce`, {
    method: 'POST',
    headers: { apikey: env.anonKey, 'content-type': 'application/json' },
    body: JSON.stringify({ auth_code: code, code_verifier: verifier }),
  });

async function pkceSignIn(provider, email, supabase = client()) {
  const { data, error } = await supabase.auth.signInWithOAuth({
    provider,
    options: { redirectTo: `${APP}/welcome`, skipBrowserRedirect: true, queryParams: { login_hint: email } },
  });
  assert.equal(error, null);
  const back = await browse(data.url);
  assert.equal(back.pathname, '/welcome');
  const code = back.searchParams.get('code');
  assert.ok(code, `no code in ${back.href}`);
  const exchanged = await supabase.auth.exchangeCodeForSession(code);
  return { ...exchanged, code, supabase };
}

test('OIDC sign-in with PKCE: supabase-js signInWithOAuth + exchangeCodeForSession', async () => {
  const email = unique('oidc');
  const { data, error, code, supabase } = await pkceSignIn('keycloak', email);
  assert.equal(error, null);
  const user = data.session.user;
  assert.equal(user.email, email);
  assert.ok(user.email_confirmed_at, 'the provider verified the address');
  assert.equal(user.app_metadata.provider, 'keycloak');
  assert.deepEqual(user.app_metadata.providers, ['keycloak']);
  assert.equal(user.identities.length, 1);
  assert.equal(user.identities[0].provider, 'keycloak');
  assert.match(user.identities[0].id, /^u-[0-9a-f]{16}$/);
  assert.equal(user.user_metadata.full_name, email.split('@')[0]);
  assert.equal(user.user_metadata.email_verified, true);
  assert.equal(data.session.provider_token?.length > 0, true, 'provider token handed to the app');
  // The session works for the REST API and for /user.
  const { data: me } = await supabase.auth.getUser();
  assert.equal(me.user.id, user.id);
  const claims = JSON.parse(Buffer.from(data.session.access_token.split('.')[1], 'base64url'));
  assert.equal(claims.amr[0].method, 'oauth');
  // A code is good once.
  const again = await pkceToken(code, 'v'.repeat(43));
  assert.equal(again.status, 404);
  assert.equal((await again.json()).error_code, 'flow_state_not_found');
  // Signing in again finds the same user through the identity.
  const second = await pkceSignIn('keycloak', email);
  assert.equal(second.error, null);
  assert.equal(second.data.session.user.id, user.id);
  const audit = sql(`SELECT count(*) FROM auth.audit_log_entries
    WHERE payload->>'actor_id' = '${user.id}' AND payload->'traits'->>'provider' = 'keycloak'`);
  assert.ok(Number(audit) >= 2, `audit rows: ${audit}`);
});

test('PKCE: a wrong code verifier burns the code', async () => {
  const supabase = client();
  const { data } = await supabase.auth.signInWithOAuth({
    provider: 'keycloak',
    options: { redirectTo: APP, skipBrowserRedirect: true, queryParams: { login_hint: unique('verifier') } },
  });
  const code = (await browse(data.url)).searchParams.get('code');
  const wrong = await pkceToken(code, 'x'.repeat(43));
  assert.equal(wrong.status, 403);
  assert.equal((await wrong.json()).error_code, 'bad_code_verifier');
  // The right verifier is too late now.
  const right = await supabase.auth.exchangeCodeForSession(code);
  assert.equal(right.error?.code, 'flow_state_not_found');
});

test('implicit flow: the session arrives in the URL fragment', async () => {
  const email = unique('implicit');
  const { data } = await client('implicit').auth.signInWithOAuth({
    provider: 'keycloak',
    options: { redirectTo: `${APP}/done`, skipBrowserRedirect: true, queryParams: { login_hint: email } },
  });
  assert.ok(!new URL(data.url).searchParams.has('code_challenge'));
  const back = await browse(data.url);
  const fragment = new URLSearchParams(back.hash.slice(1));
  assert.equal(back.search, '');
  assert.equal(fragment.get('token_type'), 'bearer');
  assert.ok(fragment.get('provider_token'));
  const supabase = client('implicit');
  const { data: set, error } = await supabase.auth.setSession({
    access_token: fragment.get('access_token'),
    refresh_token: fragment.get('refresh_token'),
  });
  assert.equal(error, null);
  assert.equal(set.user.email, email);
});

test('plain OAuth 2.0 provider: identity from the user-info endpoint', async () => {
  const email = unique('unverified.oauth2');
  const { data, error } = await pkceSignIn('acme', email);
  assert.equal(error, null);
  const user = data.session.user;
  assert.equal(user.email, email);
  assert.equal(user.identities[0].provider, 'acme');
  assert.equal(user.identities[0].identity_data.email_verified, false);
  // Not verified by the provider: confirmed only because this instance autoconfirms.
  assert.ok(user.email_confirmed_at);
});

test('linking: a verified address joins the existing account, an unverified one is refused', async () => {
  const email = unique('linked');
  const supabase = client();
  const signed = await supabase.auth.signUp({ email, password: 'correct horse battery' });
  assert.equal(signed.error, null);
  // Until the owner proves the address, a provider's sign-in does not join
  // the account: whoever registered it first could be someone else.
  const unproven = await client().auth.signInWithOAuth({
    provider: 'keycloak',
    options: { redirectTo: APP, skipBrowserRedirect: true, queryParams: { login_hint: email } },
  });
  assert.equal((await browse(unproven.data.url)).searchParams.get('error_code'), 'email_exists');
  // The owner proves it with a code, as the e-mail would carry it.
  const admin = createClient(env.url, env.serviceKey, { auth: { persistSession: false } });
  const { data: link } = await admin.auth.admin.generateLink({ type: 'magiclink', email });
  assert.equal((await client().auth.verifyOtp({ email, token: link.properties.email_otp, type: 'magiclink' })).error, null);
  const { data, error } = await pkceSignIn('keycloak', email);
  assert.equal(error, null);
  assert.equal(data.session.user.id, signed.data.user.id, 'same user');
  assert.deepEqual(data.session.user.identities.map((i) => i.provider).sort(), ['email', 'keycloak']);
  assert.deepEqual(data.session.user.app_metadata.providers, ['email', 'keycloak']);

  // Someone else's account must not be taken over by an unproven address.
  const victim = unique('unverified.victim');
  await client().auth.signUp({ email: victim, password: 'correct horse battery' });
  const attacker = client();
  const { data: start } = await attacker.auth.signInWithOAuth({
    provider: 'acme',
    options: { redirectTo: APP, skipBrowserRedirect: true, queryParams: { login_hint: victim } },
  });
  const back = await browse(start.url);
  assert.equal(back.searchParams.get('error_code'), 'email_exists');
  assert.equal(back.searchParams.get('code'), null);
});

test('linkIdentity and unlinkIdentity', async () => {
  const email = unique('manual');
  const supabase = client();
  const { error: signUpError } = await supabase.auth.signUp({ email, password: 'correct horse battery' });
  assert.equal(signUpError, null);
  const other = unique('elsewhere');
  const { data: link, error } = await supabase.auth.linkIdentity({
    provider: 'keycloak',
    options: { redirectTo: `${APP}/linked`, queryParams: { login_hint: other } },
  });
  assert.equal(error, null);
  assert.ok(link.url.startsWith(idp), link.url);
  const back = await browse(link.url);
  const { data: exchanged, error: exchangeError } = await supabase.auth.exchangeCodeForSession(back.searchParams.get('code'));
  assert.equal(exchangeError, null);
  assert.equal(exchanged.user.email, email, 'the account keeps its address');
  const { data: ids } = await supabase.auth.getUserIdentities();
  assert.deepEqual(ids.identities.map((i) => i.provider).sort(), ['email', 'keycloak']);
  const keycloak = ids.identities.find((i) => i.provider === 'keycloak');
  assert.equal(keycloak.identity_data.email, other);

  // The same provider identity cannot belong to a second user.
  const thief = client();
  await thief.auth.signUp({ email: unique('thief'), password: 'correct horse battery' });
  const { data: steal } = await thief.auth.linkIdentity({
    provider: 'keycloak',
    options: { redirectTo: APP, queryParams: { login_hint: other } },
  });
  const refused = await browse(steal.url);
  assert.equal(refused.searchParams.get('error_code'), 'identity_already_exists');

  assert.equal((await supabase.auth.unlinkIdentity(keycloak)).error, null);
  const { data: after } = await supabase.auth.getUserIdentities();
  assert.deepEqual(after.identities.map((i) => i.provider), ['email']);
  const last = await supabase.auth.unlinkIdentity(after.identities[0]);
  assert.equal(last.error?.code, 'single_identity_not_deletable');
  // A token whose session was signed out links nothing.
  const { data: { session } } = await supabase.auth.getSession();
  await supabase.auth.signOut();
  const stale = await fetch(`${env.url}/auth/v1/user/identities/authorize?provider=keycloak&skip_http_redirect=true`, {
    headers: { apikey: env.anonKey, Authorization: `Bearer ${session.access_token}` },
  });
  assert.equal(stale.status, 403);
});

/** An ID token for the IdP's native-app client, as a mobile app would get one. */
async function nativeIdToken(email, nonce) {
  const url = new URL(`${idp}/auth`);
  for (const [k, v] of Object.entries({
    client_id: 'fluxbase-native',
    response_type: 'id_token',
    scope: 'openid email profile',
    redirect_uri: `${idp}/native-callback`,
    state: 'native',
    nonce,
    login_hint: email,
  })) url.searchParams.set(k, v);
  const hop = await follow(url.href, { until: `${idp}/native-callback` });
  const token = new URLSearchParams(new URL(hop.url).hash.slice(1)).get('id_token');
  assert.ok(token, `no id_token in ${hop.url}`);
  return token;
}

test('signInWithIdToken: nonce, audience and signature are checked', async () => {
  const email = unique('native');
  const raw = `nonce-${Math.random()}`;
  const hashed = createHash('sha256').update(raw).digest('hex');
  const token = await nativeIdToken(email, hashed);
  const supabase = client();

  const wrongNonce = await supabase.auth.signInWithIdToken({ provider: 'keycloak', token, nonce: 'not it' });
  assert.equal(wrongNonce.error?.code, 'bad_jwt');
  const noNonce = await supabase.auth.signInWithIdToken({ provider: 'keycloak', token });
  assert.equal(noNonce.error?.code, 'bad_jwt');
  const [h, p, s] = token.split('.');
  const payload = JSON.parse(Buffer.from(p, 'base64url'));
  const forged = `${h}.${Buffer.from(JSON.stringify({ ...payload, email: 'root@example.com' })).toString('base64url')}.${s}`;
  const bad = await supabase.auth.signInWithIdToken({ provider: 'keycloak', token: forged, nonce: raw });
  assert.equal(bad.error?.code, 'bad_jwt');
  const unsigned = `${Buffer.from('{"alg":"none"}').toString('base64url')}.${p}.`;
  assert.equal((await supabase.auth.signInWithIdToken({ provider: 'keycloak', token: unsigned, nonce: raw })).error?.code, 'bad_jwt');
  // acme is plain OAuth 2.0: it has no ID tokens to trust.
  const notOidc = await supabase.auth.signInWithIdToken({ provider: 'acme', token, nonce: raw });
  assert.equal(notOidc.error?.status, 400);

  const { data, error } = await supabase.auth.signInWithIdToken({ provider: 'keycloak', token, nonce: raw });
  assert.equal(error, null);
  assert.equal(data.user.email, email);
  assert.equal(data.user.identities[0].provider, 'keycloak');
});

test('authorize and callback refuse what they must', async () => {
  const get = (path) => fetch(`${env.url}/auth/v1/${path}`, { redirect: 'manual' });
  const unknown = await get('authorize?provider=nope');
  assert.equal(unknown.status, 400);
  assert.match((await unknown.json()).msg, /Unsupported provider/);
  // Open redirects: only the site URL and the allow-list; anything else
  // falls back to the site URL (GoTrue), the sign-in still starts.
  const open = await get(`authorize?provider=keycloak&redirect_to=${encodeURIComponent('https://evil.example/x')}`);
  assert.equal(open.status, 302);
  const ok = await get(`authorize?provider=keycloak&redirect_to=${encodeURIComponent(`${APP}/x`)}&login_hint=a%40b.co`);
  assert.equal(ok.status, 302);
  const to = new URL(ok.headers.get('location'));
  assert.equal(to.origin, idp);
  for (const k of ['state', 'nonce', 'code_challenge']) assert.ok(to.searchParams.get(k)?.length >= 43, k);
  assert.equal(to.searchParams.get('code_challenge_method'), 'S256');
  assert.equal(to.searchParams.get('login_hint'), 'a@b.co');
  // A forged or replayed state goes nowhere but the site URL, with an error.
  const forged = await get('callback?state=forged&code=x');
  assert.equal(forged.status, 302);
  const back = new URL(forged.headers.get('location'));
  assert.equal(back.origin, APP);
  assert.equal(back.searchParams.get('error_code'), 'bad_oauth_state');
  const settings = await (await fetch(`${env.url}/auth/v1/settings`, { headers: { apikey: env.anonKey } })).json();
  assert.equal(settings.external.keycloak, true);
  assert.equal(settings.external.acme, true);
});
