// The OAuth 2.1 server (Supabase Auth as an identity provider): clients
// managed with supabase-js's `auth.admin.oauth.*`, the consent page played
// with `auth.oauth.*`, and the third-party app played by a real OAuth
// client library (panva's oauth4webapi): discovery, PKCE, the code grant
// with client_secret_basic, client_secret_post and a public client, the
// refresh grant, userinfo and the ID token.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import * as oauth from 'oauth4webapi';
import { env, proxyWith, sql } from './helpers.mjs';

const SITE = 'http://localhost:3000';
const CALLBACK = 'http://localhost:4000/callback';
const unique = (name) => `${name}-${Date.now()}-${Math.floor(Math.random() * 1e6)}@example.com`;
const options = { auth: { persistSession: false, autoRefreshToken: false, detectSessionInUrl: false } };
const insecure = { [oauth.allowInsecureRequests]: true };
/** An error body without Fluxbase's `request_id`. */
const body = async (res) => {
  const { request_id: _, ...rest } = await res.json();
  return rest;
};

let proxy;
let admin;
before(async () => {
  proxy = await proxyWith({
    FLUXBASE_AUTH_OAUTH_SERVER:
      '{ enabled = true, authorization_url_path = "/oauth/consent", allow_dynamic_registration = true }',
  });
  admin = createClient(proxy.url, env.serviceKey, options).auth.admin;
});
after(() => proxy?.stop());

/** A signed-in user of the app that hosts the consent page. */
async function user() {
  const supabase = createClient(proxy.url, env.anonKey, options);
  const email = unique('oauth-user');
  const { data, error } = await supabase.auth.signUp({ email, password: 'consent-password-1' });
  assert.equal(error, null);
  assert.ok(data.session, 'sign-ups are confirmed at once in the e2e setup');
  return { supabase, email, id: data.user.id };
}

async function discover() {
  const issuer = new URL(`${proxy.url}/auth/v1`);
  const res = await oauth.discoveryRequest(issuer, { algorithm: 'oidc', ...insecure });
  return oauth.processDiscoveryResponse(issuer, res);
}

/** /oauth/authorize as the browser: the redirect to the consent page, or the answer. */
async function authorize(as, clientId, { scope = 'openid email profile', state, verifier, extra = {} } = {}) {
  const url = new URL(as.authorization_endpoint);
  url.searchParams.set('client_id', clientId);
  url.searchParams.set('redirect_uri', CALLBACK);
  url.searchParams.set('response_type', 'code');
  if (scope) url.searchParams.set('scope', scope);
  if (state) url.searchParams.set('state', state);
  if (verifier) {
    url.searchParams.set('code_challenge', await oauth.calculatePKCECodeChallenge(verifier));
    url.searchParams.set('code_challenge_method', 'S256');
  }
  for (const [k, v] of Object.entries(extra)) url.searchParams.set(k, v);
  return fetch(url, { redirect: 'manual' });
}

test('disabled by default: 404 feature_disabled, as GoTrue', async () => {
  const res = await fetch(`${env.url}/auth/v1/.well-known/oauth-authorization-server`);
  assert.equal(res.status, 404);
  assert.equal((await res.json()).error_code, 'feature_disabled');
  const list = await createClient(env.url, env.serviceKey, options).auth.admin.oauth.listClients();
  assert.equal(list.error.status, 404);
  assert.equal(list.error.code, 'feature_disabled');
  const oidc = await (await fetch(`${env.url}/auth/v1/.well-known/openid-configuration`)).json();
  assert.equal(oidc.registration_endpoint, undefined);
  assert.equal(oidc.token_endpoint, `${oidc.issuer}/oauth/token`);
});

test('admin client API through supabase-js: create, get, list with pagination, update, regenerate, delete', async () => {
  const { data: created, error } = await admin.oauth.createClient({
    client_name: 'Admin Made',
    client_uri: 'https://app.example.com',
    redirect_uris: [CALLBACK],
  });
  assert.equal(error, null);
  assert.equal(created.client_type, 'confidential');
  assert.equal(created.registration_type, 'manual');
  assert.equal(created.token_endpoint_auth_method, 'client_secret_basic');
  assert.deepEqual(created.grant_types, ['authorization_code', 'refresh_token']);
  assert.deepEqual(created.response_types, ['code']);
  assert.equal(typeof created.client_secret, 'string');
  // Only the hash is stored (as GoTrue: SHA-256, base64url).
  const stored = sql(`SELECT client_secret_hash FROM auth.oauth_clients WHERE id = '${created.client_id}'`);
  assert.notEqual(stored, created.client_secret);
  assert.equal(stored.length, 43);

  const { data: got } = await admin.oauth.getClient(created.client_id);
  assert.equal(got.client_name, 'Admin Made');
  assert.equal(got.client_secret, undefined, 'the secret is shown once');

  const second = await admin.oauth.createClient({ client_name: 'Second', redirect_uris: [CALLBACK] });
  const page = await admin.oauth.listClients({ page: 1, perPage: 1 });
  assert.equal(page.error, null);
  assert.equal(page.data.clients.length, 1);
  assert.equal(page.data.clients[0].client_id, second.data.client_id, 'newest first');
  assert.ok(page.data.total >= 2);
  assert.equal(page.data.nextPage, 2);

  const { data: updated } = await admin.oauth.updateClient(created.client_id, {
    client_name: 'Renamed',
    token_endpoint_auth_method: 'client_secret_post',
  });
  assert.equal(updated.client_name, 'Renamed');
  assert.equal(updated.token_endpoint_auth_method, 'client_secret_post');
  const wrongMethod = await admin.oauth.updateClient(created.client_id, { token_endpoint_auth_method: 'none' });
  assert.equal(wrongMethod.error.status, 400);
  assert.equal(wrongMethod.error.code, 'validation_failed');
  const nothing = await admin.oauth.updateClient(created.client_id, {});
  assert.equal(nothing.error.message, 'No fields provided for update');

  const { data: regenerated } = await admin.oauth.regenerateClientSecret(created.client_id);
  assert.notEqual(regenerated.client_secret, created.client_secret);

  const bad = await admin.oauth.createClient({ client_name: 'Bad', redirect_uris: ['http://evil.example/cb'] });
  assert.equal(bad.error.status, 400);
  assert.equal(bad.error.code, 'validation_failed');
  assert.equal(bad.error.message,
    "400: invalid redirect_uri 'http://evil.example/cb': HTTP scheme only allowed for localhost");

  assert.equal((await admin.oauth.deleteClient(created.client_id)).error, null);
  const gone = await admin.oauth.getClient(created.client_id);
  assert.equal(gone.error.status, 404);
  assert.equal(gone.error.code, 'oauth_client_not_found');
  const malformed = await admin.oauth.getClient('not-a-uuid');
  assert.equal(malformed.error.message, 'invalid client_id format');

  const { supabase } = await user();
  const { data: { session } } = await supabase.auth.getSession();
  const asUser = createClient(proxy.url, session.access_token, options);
  const refused = await asUser.auth.admin.oauth.listClients();
  assert.equal(refused.error.status, 403);
});

test('discovery, consent and the code grant with client_secret_basic, then refresh and userinfo (oauth4webapi)', async () => {
  const as = await discover();
  assert.equal(as.issuer, `${proxy.url}/auth/v1`);
  assert.equal(as.registration_endpoint, `${proxy.url}/auth/v1/oauth/clients/register`);
  assert.deepEqual(as.code_challenge_methods_supported, ['S256', 'plain']);
  const rfc8414 = await (await fetch(`${proxy.url}/auth/v1/.well-known/oauth-authorization-server`)).json();
  assert.deepEqual(rfc8414, as);

  const { data: registered } = await admin.oauth.createClient({
    client_name: 'Basic App', logo_uri: 'https://app.example.com/logo.png', redirect_uris: [CALLBACK],
  });
  const client = { client_id: registered.client_id };
  const clientAuth = oauth.ClientSecretBasic(registered.client_secret);
  const { supabase, email, id } = await user();

  const verifier = oauth.generateRandomCodeVerifier();
  const state = oauth.generateRandomState();
  const nonce = oauth.generateRandomNonce();
  const res = await authorize(as, client.client_id, { state, verifier, extra: { nonce } });
  assert.equal(res.status, 302);
  const consent = new URL(res.headers.get('location'));
  assert.equal(`${consent.origin}${consent.pathname}`, `${SITE}/oauth/consent`);
  const authorizationId = consent.searchParams.get('authorization_id');
  assert.ok(authorizationId);

  // The consent page, signed in as the user.
  const details = await supabase.auth.oauth.getAuthorizationDetails(authorizationId);
  assert.equal(details.error, null);
  assert.equal(details.data.authorization_id, authorizationId);
  assert.equal(details.data.redirect_uri, CALLBACK);
  assert.equal(details.data.scope, 'openid email profile');
  assert.deepEqual(details.data.client, {
    id: registered.client_id, name: 'Basic App', logo_uri: 'https://app.example.com/logo.png',
  });
  assert.deepEqual(details.data.user, { id, email });
  // Someone else's session does not see it.
  const stranger = await user();
  const hidden = await stranger.supabase.auth.oauth.getAuthorizationDetails(authorizationId);
  assert.equal(hidden.error.status, 404);
  assert.equal(hidden.error.code, 'oauth_authorization_not_found');

  const approved = await supabase.auth.oauth.approveAuthorization(authorizationId, { skipBrowserRedirect: true });
  assert.equal(approved.error, null);
  const back = new URL(approved.data.redirect_url);
  assert.equal(`${back.origin}${back.pathname}`, CALLBACK);
  const again = await supabase.auth.oauth.approveAuthorization(authorizationId, { skipBrowserRedirect: true });
  assert.equal(again.error.status, 400, 'a decided request cannot be decided again');

  const params = oauth.validateAuthResponse(as, client, back, state);
  const tokenRes = await oauth.authorizationCodeGrantRequest(as, client, clientAuth, params, CALLBACK, verifier, insecure);
  const tokens = await oauth.processAuthorizationCodeResponse(as, client, tokenRes, { expectedNonce: nonce, requireIdToken: true });
  assert.equal(tokens.token_type, 'bearer');
  assert.ok(tokens.refresh_token);
  const claims = oauth.getValidatedIdTokenClaims(tokens);
  assert.equal(claims.sub, id);
  assert.equal(claims.aud, registered.client_id);
  assert.equal(claims.email, email);
  // GoTrue's claim set (tokens.IDTokenClaims) for openid email profile: no
  // phone scope, yet phone_number_verified is there (not omitempty); no
  // name in the metadata, so the e-mail; an hour's lifetime.
  assert.deepEqual(Object.keys(claims).sort(), ['aud', 'auth_time', 'client_id', 'email', 'email_verified', 'exp',
    'iat', 'iss', 'name', 'nonce', 'phone_number_verified', 'sub', 'updated_at']);
  assert.equal(claims.iss, `${proxy.url}/auth/v1`);
  assert.equal(claims.client_id, registered.client_id);
  assert.equal(claims.exp - claims.iat, 3600);
  assert.ok(Math.abs(claims.auth_time - claims.iat) <= 2, 'auth_time is this sign-in');
  assert.equal(claims.email_verified, true);
  assert.equal(claims.phone_number_verified, false);
  assert.equal(claims.name, email);
  const access = JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url'));
  assert.equal(access.client_id, registered.client_id);
  assert.equal(access.scope, 'openid email profile', 'the granted scopes, as GoTrue\'s access tokens carry them');
  assert.equal(access.sub, id);
  assert.equal(access.role, 'authenticated');
  assert.ok(access.amr.some((m) => m.method === 'oauth_provider/authorization_code'));

  // The code works once.
  const replay = await oauth.authorizationCodeGrantRequest(as, client, clientAuth, params, CALLBACK, verifier, insecure);
  await assert.rejects(oauth.processAuthorizationCodeResponse(as, client, replay), (e) => {
    assert.equal(e.error, 'invalid_grant');
    assert.equal(e.error_description, 'Invalid authorization code');
    return true;
  });

  // The access token works on the REST API and on userinfo.
  const info = await oauth.userInfoRequest(as, client, tokens.access_token, insecure);
  const profile = await oauth.processUserInfoResponse(as, client, id, info);
  assert.equal(profile.email, email);
  assert.equal(profile.email_verified, true);
  assert.equal(profile.name, email);

  // refresh_token: rotated, still the client's.
  const refreshed = await oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, insecure));
  assert.notEqual(refreshed.refresh_token, tokens.refresh_token);
  assert.equal(JSON.parse(Buffer.from(refreshed.access_token.split('.')[1], 'base64url')).client_id, registered.client_id);

  // A wrong secret is refused before any grant.
  const wrong = await oauth.refreshTokenGrantRequest(as, client, oauth.ClientSecretBasic('nope'), refreshed.refresh_token, insecure);
  assert.equal(wrong.status, 400);
  assert.deepEqual(await body(wrong), { code: 400, error_code: 'invalid_credentials', msg: 'invalid client credentials' });

  // The user's grants list the client; a second request is approved without asking.
  const grants = await supabase.auth.oauth.listGrants();
  assert.deepEqual(grants.data.map((g) => g.client.id), [registered.client_id]);
  assert.deepEqual(grants.data[0].scopes, ['openid', 'email', 'profile']);
  const second = await authorize(as, client.client_id, { scope: 'email', verifier: oauth.generateRandomCodeVerifier() });
  const secondId = new URL(second.headers.get('location')).searchParams.get('authorization_id');
  const auto = await supabase.auth.oauth.getAuthorizationDetails(secondId);
  assert.ok(auto.data.redirect_url.startsWith(`${CALLBACK}?code=`));

  // Revoking the grant ends the client's sessions.
  assert.equal((await supabase.auth.oauth.revokeGrant({ clientId: registered.client_id })).error, null);
  const revoked = await oauth.refreshTokenGrantRequest(as, client, clientAuth, refreshed.refresh_token, insecure);
  await assert.rejects(oauth.processRefreshTokenResponse(as, client, revoked), (e) => e.error === 'invalid_grant');
});

test('a public client (PKCE, no secret) registered dynamically; client_secret_post; denial', async () => {
  const as = await discover();
  const reg = await fetch(as.registration_endpoint, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'Native', redirect_uris: [CALLBACK], token_endpoint_auth_method: 'none' }),
  });
  assert.equal(reg.status, 201);
  const registered = await reg.json();
  assert.equal(registered.client_type, 'public');
  assert.equal(registered.registration_type, 'dynamic');
  assert.equal(registered.client_secret, undefined);
  const client = { client_id: registered.client_id, token_endpoint_auth_method: 'none' };
  const { supabase, id } = await user();

  const verifier = oauth.generateRandomCodeVerifier();
  const res = await authorize(as, client.client_id, { scope: 'email', verifier });
  const authorizationId = new URL(res.headers.get('location')).searchParams.get('authorization_id');
  await supabase.auth.oauth.getAuthorizationDetails(authorizationId);
  const { data } = await supabase.auth.oauth.approveAuthorization(authorizationId, { skipBrowserRedirect: true });
  const params = oauth.validateAuthResponse(as, client, new URL(data.redirect_url), oauth.expectNoState);
  // A wrong verifier is refused.
  const wrongVerifier = await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, CALLBACK,
    oauth.generateRandomCodeVerifier(), insecure);
  await assert.rejects(oauth.processAuthorizationCodeResponse(as, client, wrongVerifier), (e) => {
    assert.equal(e.error, 'invalid_grant');
    assert.match(e.error_description, /^PKCE verification failed/);
    return true;
  });
  const tokens = await oauth.processAuthorizationCodeResponse(as, client,
    await oauth.authorizationCodeGrantRequest(as, client, oauth.None(), params, CALLBACK, verifier, insecure));
  assert.equal(JSON.parse(Buffer.from(tokens.access_token.split('.')[1], 'base64url')).sub, id);
  assert.equal(tokens.id_token, undefined, 'no openid scope, no ID token');

  // client_secret_post.
  const { data: post } = await admin.oauth.createClient({
    client_name: 'Post App', redirect_uris: [CALLBACK], token_endpoint_auth_method: 'client_secret_post',
  });
  const postClient = { client_id: post.client_id };
  const v2 = oauth.generateRandomCodeVerifier();
  const r2 = await authorize(as, post.client_id, { scope: 'email', verifier: v2, state: 'xyz' });
  const id2 = new URL(r2.headers.get('location')).searchParams.get('authorization_id');
  await supabase.auth.oauth.getAuthorizationDetails(id2);
  const approved = await supabase.auth.oauth.approveAuthorization(id2, { skipBrowserRedirect: true });
  const p2 = oauth.validateAuthResponse(as, postClient, new URL(approved.data.redirect_url), 'xyz');
  // Basic when the client registered post: refused as GoTrue refuses it.
  const viaBasic = await oauth.authorizationCodeGrantRequest(as, postClient, oauth.ClientSecretBasic(post.client_secret),
    p2, CALLBACK, v2, insecure);
  assert.equal((await viaBasic.json()).msg,
    "invalid authentication method: client is registered for 'client_secret_post' but 'client_secret_basic' was used");
  const t2 = await oauth.processAuthorizationCodeResponse(as, postClient,
    await oauth.authorizationCodeGrantRequest(as, postClient, oauth.ClientSecretPost(post.client_secret), p2, CALLBACK, v2, insecure));
  assert.ok(t2.access_token);

  // Denial goes back to the app with access_denied and the state.
  const r3 = await authorize(as, post.client_id, { scope: 'phone', verifier: v2, state: 'st' });
  const id3 = new URL(r3.headers.get('location')).searchParams.get('authorization_id');
  await supabase.auth.oauth.getAuthorizationDetails(id3);
  const denied = await supabase.auth.oauth.denyAuthorization(id3, { skipBrowserRedirect: true });
  const deniedUrl = new URL(denied.data.redirect_url);
  assert.equal(deniedUrl.searchParams.get('error'), 'access_denied');
  assert.equal(deniedUrl.searchParams.get('state'), 'st');
  assert.throws(() => oauth.validateAuthResponse(as, postClient, deniedUrl, 'st'), (e) => e.error === 'access_denied');
});

test('/oauth/authorize refuses in JSON before the redirect_uri is trusted, at the redirect_uri after', async () => {
  const as = await discover();
  const { data: registered } = await admin.oauth.createClient({ client_name: 'Checks', redirect_uris: [CALLBACK] });
  const json = async (res) => [res.status, await body(res)];
  const unknown = await authorize(as, '00000000-0000-4000-8000-000000000000', { verifier: oauth.generateRandomCodeVerifier() });
  assert.deepEqual(await json(unknown), [400, { code: 400, error_code: 'oauth_client_not_found', msg: 'invalid client_id' }]);
  const url = new URL(as.authorization_endpoint);
  url.searchParams.set('client_id', registered.client_id);
  url.searchParams.set('redirect_uri', 'http://localhost:4000/elsewhere');
  assert.deepEqual(await json(await fetch(url, { redirect: 'manual' })),
    [400, { code: 400, error_code: 'validation_failed', msg: 'invalid redirect_uri' }]);
  // No PKCE: OAuth 2.1 requires it.
  const noPkce = await authorize(as, registered.client_id, { state: 's1' });
  assert.equal(noPkce.status, 302);
  const back = new URL(noPkce.headers.get('location'));
  assert.equal(back.searchParams.get('error'), 'invalid_request');
  assert.equal(back.searchParams.get('error_description'), 'PKCE flow requires both code_challenge and code_challenge_method');
  assert.equal(back.searchParams.get('state'), 's1');
  const badScope = await authorize(as, registered.client_id, { scope: 'admin', verifier: oauth.generateRandomCodeVerifier() });
  assert.equal(new URL(badScope.headers.get('location')).searchParams.get('error_description'), 'unsupported scope: admin');
  // The token endpoint without a grant type, and with an unknown code.
  const basic = `Basic ${Buffer.from(`${registered.client_id}:${registered.client_secret}`).toString('base64')}`;
  const token = (body) => fetch(as.token_endpoint, {
    method: 'POST', headers: { authorization: basic, 'content-type': 'application/x-www-form-urlencoded' }, body,
  });
  assert.deepEqual(await json(await token('')), [400, { error: 'invalid_request', error_description: 'grant_type is required' }]);
  assert.deepEqual(await json(await token('grant_type=password')),
    [400, { error: 'unsupported_grant_type', error_description: 'Client is not allowed to use grant type: password' }]);
  assert.deepEqual(await json(await token('grant_type=authorization_code&code=nope')),
    [400, { error: 'invalid_grant', error_description: 'Invalid authorization code' }]);
  const noClient = await fetch(as.token_endpoint, { method: 'POST', body: new URLSearchParams({ grant_type: 'authorization_code' }) });
  assert.deepEqual(await json(noClient),
    [400, { code: 400, error_code: 'invalid_credentials', msg: 'Invalid client credentials: client_id is required' }]);
  // The proxy keeps serving after malformed input.
  const garbage = await fetch(as.token_endpoint, { method: 'POST', headers: { authorization: 'Basic %%%' } });
  assert.equal(garbage.status, 400);
});

test('an OAuth client\'s session is refreshed by that client only, and keeps its client_id (GoTrue\'s invalid_client)', async () => {
  const as = await discover();
  const { data: registered } = await admin.oauth.createClient({ client_name: 'Refresh App', redirect_uris: [CALLBACK] });
  const { data: other } = await admin.oauth.createClient({ client_name: 'Other App', redirect_uris: [CALLBACK] });
  const client = { client_id: registered.client_id };
  const clientAuth = oauth.ClientSecretBasic(registered.client_secret);
  const { supabase, id } = await user();
  const verifier = oauth.generateRandomCodeVerifier();
  const res = await authorize(as, client.client_id, { scope: 'email', verifier });
  const authorizationId = new URL(res.headers.get('location')).searchParams.get('authorization_id');
  await supabase.auth.oauth.getAuthorizationDetails(authorizationId);
  const { data } = await supabase.auth.oauth.approveAuthorization(authorizationId, { skipBrowserRedirect: true });
  const params = oauth.validateAuthResponse(as, client, new URL(data.redirect_url), oauth.expectNoState);
  const tokens = await oauth.processAuthorizationCodeResponse(as, client,
    await oauth.authorizationCodeGrantRequest(as, client, clientAuth, params, CALLBACK, verifier, insecure));

  // supabase-js's refresh (/token?grant_type=refresh_token, no client): refused
  // as GoTrue refuses it, and the token is not used up.
  const app = createClient(proxy.url, env.anonKey, options);
  const viaToken = await app.auth.refreshSession({ refresh_token: tokens.refresh_token });
  assert.equal(viaToken.error.status, 400);
  assert.equal(viaToken.error.message, 'Client authentication required for OAuth session');
  const raw = await fetch(`${proxy.url}/auth/v1/token?grant_type=refresh_token`, {
    method: 'POST', headers: { apikey: env.anonKey, 'content-type': 'application/json' },
    body: JSON.stringify({ refresh_token: tokens.refresh_token }),
  });
  assert.deepEqual([raw.status, await raw.json()],
    [400, { error: 'invalid_client', error_description: 'Client authentication required for OAuth session' }]);

  // Another client may not rotate it either.
  const stolen = await oauth.refreshTokenGrantRequest(as, { client_id: other.client_id },
    oauth.ClientSecretBasic(other.client_secret), tokens.refresh_token, insecure);
  await assert.rejects(oauth.processRefreshTokenResponse(as, { client_id: other.client_id }, stolen), (e) => {
    assert.equal(e.error, 'invalid_client');
    assert.equal(e.error_description, "Client does not match the session's OAuth client");
    return true;
  });

  // Its own client rotates it; the new access token keeps client_id and scope.
  const refreshed = await oauth.processRefreshTokenResponse(as, client,
    await oauth.refreshTokenGrantRequest(as, client, clientAuth, tokens.refresh_token, insecure));
  const access = JSON.parse(Buffer.from(refreshed.access_token.split('.')[1], 'base64url'));
  assert.equal(access.sub, id);
  assert.equal(access.client_id, registered.client_id);
  assert.equal(access.scope, 'email');
  assert.equal(sql(`SELECT oauth_client_id FROM auth.sessions WHERE id = '${access.session_id}'`), registered.client_id);

  // An app's own session cannot be rotated by an OAuth client.
  const { data: { session } } = await supabase.auth.getSession();
  const foreign = await oauth.refreshTokenGrantRequest(as, client, clientAuth, session.refresh_token, insecure);
  await assert.rejects(oauth.processRefreshTokenResponse(as, client, foreign), (e) => {
    assert.equal(e.error, 'invalid_client');
    assert.equal(e.error_description, 'Client authentication not allowed for non-OAuth session');
    return true;
  });
  // ... and it still refreshes at /token as before, without client_id.
  const own = await supabase.auth.refreshSession();
  assert.equal(own.error, null);
  assert.equal(JSON.parse(Buffer.from(own.data.session.access_token.split('.')[1], 'base64url')).client_id, undefined);
});
