// Robustness of the proxy itself, against a real proxy and Postgres: bounded
// versions of attacks that once took the service down (issue "Hardening").
// Each runs its own proxy with small limits, so it cannot disturb the others.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { env, sign, sql, eventually, proxyWith } from '../e2e/helpers.mjs';

/** A REST call as the anon key: status and parsed body. */
async function rest(url, path, body) {
  const r = await fetch(`${url}/rest/v1/${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { apikey: env.anonKey, 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: r.status, body: await r.json() };
}

/** Sends raw bytes as one HTTP/1.1 request; resolves with the status line and body. */
function raw(url, bytes) {
  const { hostname, port } = new URL(url);
  return new Promise((resolve, reject) => {
    // Written, not ended: a half-closed request may be dropped unanswered.
    const socket = connect(Number(port), hostname, () => socket.write(bytes));
    let text = '';
    socket.on('data', (d) => (text += d.toString('latin1')));
    socket.on('end', () => resolve({ status: Number(text.split(' ')[1]), body: text.split('\r\n\r\n')[1] ?? '' }));
    socket.on('error', reject);
  });
}

test('slow statements past the time limit are cancelled, and the pool serves the next request at once', async () => {
  const proxy = await proxyWith({ FLUXBASE_DATABASE_POOL_SIZE: '2', FLUXBASE_SERVER_REQUEST_TIMEOUT_MS: '1000' });
  try {
    const slow = await Promise.all([1, 2].map(() => rest(proxy.url, 'rpc/slow', { seconds: 20 })));
    for (const r of slow) {
      assert.equal(r.status, 504);
      assert.equal(r.body.code, 'FB005');
    }
    const started = Date.now();
    const read = await rest(proxy.url, 'countries?select=name&id=eq.1');
    assert.equal(read.status, 200);
    assert.deepEqual(read.body, [{ name: 'France' }]);
    assert.ok(Date.now() - started < 900, `the next read waited ${Date.now() - started} ms for a busy connection`);
    // The abandoned statements are stopped in the database, not left running.
    const stopped = await eventually(
      () => sql("select count(*) from pg_stat_activity where query like '%pg_sleep%' and state = 'active' and pid <> pg_backend_pid()") === '0',
      3000,
    );
    assert.ok(stopped, 'pg_sleep still running after its request timed out');
    const metrics = await (await fetch(`${proxy.url}/metrics`)).text();
    assert.match(metrics, /fluxbase_db_queries_cancelled_total [1-9]/);
  } finally {
    proxy.stop();
  }
});

test('silent sockets are closed when idle, and connections past the cap are refused with 503', async () => {
  const proxy = await proxyWith({ FLUXBASE_SERVER_IDLE_TIMEOUT_MS: '1000', FLUXBASE_SERVER_MAX_CONNECTIONS: '20' });
  const { hostname, port } = new URL(proxy.url);
  const sockets = [];
  const closed = new Set();
  try {
    for (let i = 0; i < 20; i++) {
      const s = connect(Number(port), hostname);
      s.on('close', () => closed.add(s));
      s.on('error', () => {});
      s.resume(); // read, so that the server's FIN is seen

      sockets.push(s);
    }
    await new Promise((r) => setTimeout(r, 200));
    const refused = await raw(proxy.url, 'GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n');
    assert.equal(refused.status, 503);
    assert.equal(JSON.parse(refused.body).code, 'FB007');
    // Never a byte sent: closed by the server after the idle time.
    assert.ok(await eventually(() => closed.size === sockets.length, 4000), 'silent sockets were not closed');
    const health = await fetch(`${proxy.url}/health`);
    assert.equal(health.status, 200);
    assert.match(await (await fetch(`${proxy.url}/metrics`)).text(), /fluxbase_connections_refused_total [1-9]/);
  } finally {
    for (const s of sockets) s.destroy();
    proxy.stop();
  }
});

test('a keep-alive connection in use is not idle while its request runs', async () => {
  const proxy = await proxyWith({ FLUXBASE_SERVER_IDLE_TIMEOUT_MS: '500' });
  try {
    const r = await rest(proxy.url, 'rpc/slow', { seconds: 1.5 });
    assert.equal(r.status, 200);
    assert.equal(r.body, 1);
  } finally {
    proxy.stop();
  }
});

test('time claims that are not numbers, and expired fractional ones, are refused', async () => {
  const now = Date.now() / 1000;
  const cases = [
    // Beyond jwt.leeway_seconds (30 s by default).
    [{ role: 'authenticated', exp: now - 60.5 }, 401, 'PGRST303'],
    [{ role: 'authenticated', exp: 'never' }, 401, 'PGRST301'],
    [{ role: 'authenticated', exp: null }, 401, 'PGRST301'],
    [{ role: 'authenticated', exp: -1 }, 401, 'PGRST303'],
    [{ role: 'authenticated', nbf: '0' }, 401, 'PGRST301'],
  ];
  for (const [claims, status, code] of cases) {
    const token = sign({ iat: undefined, ...claims });
    const r = await fetch(`${env.url}/rest/v1/countries?select=id`, {
      headers: { apikey: env.anonKey, authorization: `Bearer ${token}` },
    });
    assert.equal(r.status, status, JSON.stringify(claims));
    assert.equal((await r.json()).code, code, JSON.stringify(claims));
  }
});

test('credentials that are not valid UTF-8 are refused, not taken as anonymous', async () => {
  const bytes = Buffer.concat([
    Buffer.from('GET /rest/v1/countries?select=id HTTP/1.1\r\nhost: x\r\nconnection: close\r\nauthorization: Bearer '),
    Buffer.from([0xff, 0xfe, 0x41]),
    Buffer.from('\r\n\r\n'),
  ]);
  const r = await raw(env.url, bytes);
  assert.equal(r.status, 401);
  assert.equal(JSON.parse(r.body).code, 'PGRST301');
});

test('a token may not name the login role or `none`', async () => {
  for (const role of ['authenticator', 'none']) {
    const r = await fetch(`${env.url}/rest/v1/countries?select=id`, {
      headers: { apikey: env.anonKey, authorization: `Bearer ${sign({ role })}` },
    });
    assert.equal(r.status, 403, role);
    const body = await r.json();
    assert.equal(body.code, '42501');
    assert.equal(body.message, `permission denied to set role "${role}"`);
  }
});
