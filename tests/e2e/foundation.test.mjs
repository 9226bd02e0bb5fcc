// Foundation, end to end: the real supabase-js client against a real proxy
// and a real Postgres with the extension installed.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import { request } from 'node:http';
import { createClient } from '@supabase/supabase-js';
import { env, sign, ADA, GRACE } from './helpers.mjs';

const client = (key, accessToken) =>
  createClient(env.url, key, {
    auth: { persistSession: false, autoRefreshToken: false },
    ...(accessToken ? { global: { headers: { Authorization: `Bearer ${accessToken}` } } } : {}),
  });

test('anon key: the auth.uid() policy returns no rows', async () => {
  const { data, error, status } = await client(env.anonKey).from('todos').select('*');
  assert.equal(error, null);
  assert.equal(status, 200);
  assert.deepEqual(data, []);
});

test("a user's JWT returns exactly that user's rows", async () => {
  const token = sign({ role: 'authenticated', sub: ADA, aud: 'authenticated' });
  const { data, error } = await client(env.anonKey, token).from('todos').select('id, title, user_id').order('id');
  assert.equal(error, null);
  assert.equal(data.length, 2);
  assert.ok(data.every((r) => r.user_id === ADA));
  const other = await client(env.anonKey, sign({ role: 'authenticated', sub: GRACE })).from('todos').select('title');
  assert.deepEqual(other.data, [{ title: 'grace: find the bug' }]);
});

test('filters, order and limit go through supabase-js unchanged', async () => {
  const { data, error } = await client(env.serviceKey)
    .from('todos')
    .select('title')
    .eq('done', false)
    .ilike('title', '%ship%')
    .order('id', { ascending: false })
    .limit(5);
  assert.equal(error, null);
  assert.deepEqual(data, [{ title: 'ada: ship it' }]);
});

test('service_role key and secret key bypass RLS; publishable key is anon', async () => {
  for (const key of [env.serviceKey, env.secretKey]) {
    const { data, error } = await client(key).from('todos').select('id');
    assert.equal(error, null);
    assert.equal(data.length, 3);
  }
  const { data } = await client(env.publishableKey).from('todos').select('id');
  assert.deepEqual(data, []);
});

test('a forged token is a 401 PGRST301', async () => {
  const forged = sign({ role: 'service_role' }, 'not-the-secret-not-the-secret-not-the-secret');
  const { data, error, status } = await client(env.anonKey, forged).from('todos').select('*');
  assert.equal(data, null);
  assert.equal(status, 401);
  assert.equal(error.code, 'PGRST301');
});

test('an expired token is a 401 PGRST303 "JWT expired"', async () => {
  const now = Math.floor(Date.now() / 1000);
  const expired = sign({ role: 'authenticated', sub: ADA, iat: now - 7200, exp: now - 3600 });
  const { error, status } = await client(env.anonKey, expired).from('todos').select('*');
  assert.equal(status, 401);
  assert.equal(error.code, 'PGRST303');
  assert.equal(error.message, 'JWT expired');
});

test('alg "none" and algorithm confusion are refused', async () => {
  const none = `${Buffer.from('{"alg":"none","typ":"JWT"}').toString('base64url')}.${Buffer.from(
    JSON.stringify({ role: 'service_role' }),
  ).toString('base64url')}.`;
  const res = await fetch(`${env.url}/rest/v1/todos`, { headers: { Authorization: `Bearer ${none}` } });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).code, 'PGRST301');
  const rs = sign({ role: 'service_role' }, env.jwtSecret, { alg: 'RS256', typ: 'JWT' });
  const res2 = await fetch(`${env.url}/rest/v1/todos`, { headers: { Authorization: `Bearer ${rs}` } });
  assert.equal(res2.status, 401);
  assert.match(res2.headers.get('www-authenticate'), /invalid_token/);
});

test('an unknown API key is refused', async () => {
  const res = await fetch(`${env.url}/rest/v1/todos`, { headers: { apikey: 'sb_publishable_unknown' } });
  assert.equal(res.status, 401);
  assert.equal((await res.json()).code, 'FB010');
});

test('unknown filter operators are a 400, never silently eq', async () => {
  const { error, status } = await client(env.serviceKey).from('todos').select('*').filter('id', 'equals', '1');
  assert.equal(status, 400);
  assert.equal(error.code, 'PGRST100');
  const wrongType = await client(env.serviceKey).from('todos').select('*').eq('id', 'abc');
  assert.equal(wrongType.status, 400);
  assert.equal(wrongType.error.code, '22P02');
  const missing = await client(env.serviceKey).from('nope').select('*');
  assert.equal(missing.status, 404);
  assert.equal(missing.error.code, 'PGRST205');
});

test('unknown routes are a 404 in the catalogue format, with the request id', async () => {
  const res = await fetch(`${env.url}/no/such/route`, { headers: { 'x-request-id': 'e2e-req-1' } });
  assert.equal(res.status, 404);
  assert.equal(res.headers.get('x-request-id'), 'e2e-req-1');
  const body = await res.json();
  assert.equal(body.code, 'FB001');
  assert.equal(body.request_id, 'e2e-req-1');
  const generated = await fetch(`${env.url}/nope`);
  const id = generated.headers.get('x-request-id');
  assert.match(id, /^[0-9a-f-]{36}$/);
  assert.equal((await generated.json()).request_id, id);
});

/** A raw HTTP/1.1 request with node:http: lets the test send bodies the way
 * uploaders do (Expect: 100-continue, or chunked without a length). */
function rawRequest(path, { method = 'POST', headers = {}, body, chunks }) {
  return new Promise((resolve, reject) => {
    const req = request(`${env.url}${path}`, { method, headers }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode, text }));
    });
    req.on('error', reject);
    if (headers.Expect) {
      req.on('continue', () => req.end(body));
    } else if (chunks) {
      for (const c of chunks) req.write(c);
      req.end();
    } else {
      req.end(body);
    }
  });
}

test('limits: oversized body 413 (declared or streamed), oversized headers 431, and the proxy keeps serving', async () => {
  const big = Buffer.alloc(2 * 1024 * 1024, 'x');
  // A declared length over the limit is refused before any byte is sent.
  const declared = await rawRequest('/rest/v1/todos', {
    headers: { 'content-type': 'application/json', 'content-length': big.length, Expect: '100-continue' },
    body: big,
  });
  assert.equal(declared.status, 413);
  assert.equal(JSON.parse(declared.text).code, 'FB003');
  // A chunked body is cut off when it crosses the limit.
  const streamed = await rawRequest('/rest/v1/todos', {
    headers: { 'content-type': 'application/json' },
    chunks: [Buffer.alloc(700 * 1024, 'x'), Buffer.alloc(700 * 1024, 'y')],
  }).catch((e) => e);
  // The server may close while the client is still writing: then the client
  // sees a reset instead of the 413. Either is a refusal; nothing else is.
  if (streamed instanceof Error) {
    assert.match(streamed.code, /^(EPIPE|ECONNRESET)$/);
  } else {
    assert.equal(streamed.status, 413);
    assert.equal(JSON.parse(streamed.text).code, 'FB003');
  }
  const huge = await rawRequest('/health', { method: 'GET', headers: { 'x-padding': 'y'.repeat(64 * 1024) } }).catch((e) => e);
  if (huge instanceof Error) {
    assert.match(huge.code, /^(EPIPE|ECONNRESET)$/);
  } else {
    assert.equal(huge.status, 431);
  }
  const ok = await fetch(`${env.url}/health`);
  assert.equal(ok.status, 200);
});

test('health, readiness and metrics', async () => {
  assert.equal((await fetch(`${env.url}/health`)).status, 200);
  const ready = await fetch(`${env.url}/ready`);
  assert.equal(ready.status, 200);
  assert.equal((await ready.json()).status, 'ready');
  const metrics = await (await fetch(`${env.url}/metrics`)).text();
  assert.match(metrics, /fluxbase_http_requests_total\{route="rest",status="200"\} \d+/);
  assert.match(metrics, /fluxbase_http_request_duration_seconds_bucket\{route="rest",le="\+Inf"\}/);
  assert.match(metrics, /fluxbase_db_pool_max_size \d+/);
});

test('CORS preflight and security headers', async () => {
  const pre = await fetch(`${env.url}/rest/v1/todos`, {
    method: 'OPTIONS',
    headers: { Origin: 'http://localhost:3000', 'Access-Control-Request-Method': 'GET' },
  });
  assert.equal(pre.status, 204);
  assert.match(pre.headers.get('access-control-allow-headers'), /apikey/);
  assert.equal(pre.headers.get('access-control-allow-origin'), '*');
  const res = await fetch(`${env.url}/health`);
  assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
  assert.equal(res.headers.get('x-frame-options'), 'DENY');
  assert.equal(res.headers.get('server'), null);
});

test('services of later releases answer 501, not a hang or a crash', async () => {
  const res = await fetch(`${env.url}/functions/v1/hello`);
  assert.equal(res.status, 501);
  assert.equal((await res.json()).code, 'FB002');
  // A known auth route with a method it does not take: 405 in Supabase Auth's error shape.
  const auth = await fetch(`${env.url}/auth/v1/factors`, { method: 'PUT' });
  assert.equal(auth.status, 405);
  const body = await auth.json();
  assert.equal(body.error_code, 'method_not_allowed');
});

test('the proxy reconnects after a Postgres restart', { skip: !env.pgRestart && 'FLUXBASE_PG_RESTART not set' }, async () => {
  execSync(env.pgRestart, { stdio: 'inherit' });
  const { data, error } = await client(env.serviceKey).from('todos').select('id');
  assert.equal(error, null);
  assert.equal(data.length, 3);
});
