// Robustness of the REST engine, against a real proxy and Postgres: the
// attacks of the issue "Hardening" on a fresh setup, each now refused.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { env, sign, sql, proxyWith, eventually, ADA, GRACE } from '../e2e/helpers.mjs';

const anon = { apikey: env.anonKey, 'content-type': 'application/json' };
const as = (sub) => ({ ...anon, Authorization: `Bearer ${sign({ role: 'authenticated', sub, session_id: sub })}` });

test('one anonymous GET cannot make the service allocate gigabytes: rows and select items are capped', async () => {
  const select = Array(400).fill('value').join(',');
  const repeated = await fetch(`${env.url}/rest/v1/readings?select=${select}`, { headers: anon });
  assert.equal(repeated.status, 400);
  const refusal = await repeated.json();
  assert.equal(refusal.code, 'PGRST100');
  assert.match(refusal.message, /fluxbase\.max_select_items/);
  const all = await fetch(`${env.url}/rest/v1/readings?select=id`, { headers: anon });
  assert.equal(all.status, 200);
  assert.equal((await all.json()).length, 1000);
  assert.equal(all.headers.get('content-range'), '0-999/*');
  assert.match(all.headers.get('warning'), /fluxbase\.max_rows = 1000/);
});

test('a response past fluxbase.max_response_bytes is refused whole, and a write behind it is rolled back', async () => {
  const login = `fb_small_${process.pid}`;
  const url = new URL(process.env.FLUXBASE_DATABASE_URL);
  sql(`create role ${login} login password 'small-responses' in role authenticator;
       alter role ${login} set fluxbase.max_response_bytes = '4096';`);
  url.username = login;
  url.password = 'small-responses';
  const proxy = await proxyWith({ FLUXBASE_DATABASE_URL: url.toString() });
  try {
    const small = await fetch(`${proxy.url}/rest/v1/readings?select=id&limit=10`, { headers: anon });
    assert.equal(small.status, 200);
    const big = await fetch(`${proxy.url}/rest/v1/readings?select=id,value`, { headers: anon });
    assert.equal(big.status, 500);
    const error = await big.json();
    assert.equal(error.code, '54000');
    assert.match(error.message, /fluxbase\.max_response_bytes/);
    const note = `too big ${process.pid} ${'x'.repeat(60)}`;
    const rows = Array.from({ length: 100 }, () => ({ note }));
    const write = await fetch(`${proxy.url}/rest/v1/guestbook`, {
      method: 'POST',
      headers: { ...anon, prefer: 'return=representation' },
      body: JSON.stringify(rows),
    });
    assert.equal(write.status, 500);
    assert.equal((await write.json()).code, '54000');
    assert.equal(sql(`select count(*) from public.guestbook where note = '${note}'`), '0');
  } finally {
    proxy.stop();
    sql(`drop role ${login}`);
  }
});

test('an Idempotency-Key is the caller\'s own: anonymous clients and users never get each other\'s response', async () => {
  const proxy = await proxyWith({ FLUXBASE_SERVER_TRUSTED_PROXIES: '["127.0.0.1"]' });
  const key = `shared-${process.pid}-${Date.now()}`;
  const post = (headers, note) =>
    fetch(`${proxy.url}/rest/v1/guestbook?select=note`, {
      method: 'POST',
      headers: { ...headers, prefer: 'return=representation', 'idempotency-key': key },
      body: JSON.stringify({ note }),
    });
  try {
    const clientA = { ...anon, 'x-forwarded-for': '203.0.113.10' };
    const clientB = { ...anon, 'x-forwarded-for': '203.0.113.20' };
    const a = await post(clientA, 'secret of A');
    assert.equal(a.status, 201);
    const b = await post(clientB, 'note of B');
    assert.equal(b.status, 201);
    assert.equal(b.headers.get('idempotent-replayed'), null);
    assert.deepEqual(await b.json(), [{ note: 'note of B' }]);
    const retry = await post(clientA, 'secret of A');
    assert.equal(retry.headers.get('idempotent-replayed'), 'true');
    assert.deepEqual(await retry.json(), [{ note: 'secret of A' }]);
    // Another API key from the same address is another caller too.
    const publishable = await post({ ...clientA, apikey: env.publishableKey }, 'with the publishable key');
    assert.equal(publishable.status, 201);
    assert.deepEqual(await publishable.json(), [{ note: 'with the publishable key' }]);
  } finally {
    proxy.stop();
    sql(`delete from public.guestbook where note in ('secret of A', 'note of B', 'with the publishable key')`);
  }
  const users = await Promise.all([ADA, GRACE].map((sub) =>
    fetch(`${env.url}/rest/v1/notes?select=body`, {
      method: 'POST',
      headers: { ...as(sub), prefer: 'return=representation', 'idempotency-key': key },
      body: JSON.stringify({ body: `idempotent ${sub}` }),
    })));
  assert.deepEqual(users.map((r) => r.headers.get('idempotent-replayed')), [null, null]);
  sql(`delete from public.notes where body like 'idempotent %'`);
});

test('the OpenAPI description shows only what the caller may use', async () => {
  const forAnon = await (await fetch(`${env.url}/rest/v1/`, { headers: anon })).text();
  for (const hidden of ['payroll', 'salary', 'ssn', 'social security', '/notes']) {
    assert.ok(!forAnon.includes(hidden), `anon's description shows ${hidden}`);
  }
  assert.ok(JSON.parse(forAnon).paths['/readings'].get);
  const forUser = JSON.parse(await (await fetch(`${env.url}/rest/v1/`, { headers: as(ADA) })).text());
  assert.deepEqual(Object.keys(forUser.definitions.payroll.properties), ['id', 'name']);
  assert.deepEqual(Object.keys(forUser.paths['/payroll']), ['get']);
});

test('anonymous statements stop at the anon role\'s statement_timeout (3 s), as on Supabase', async () => {
  const started = Date.now();
  const r = await fetch(`${env.url}/rest/v1/rpc/slow`, { method: 'POST', headers: anon, body: '{"seconds": 10}' });
  const body = await r.json();
  assert.equal(r.status, 500);
  assert.equal(body.code, '57014');
  const took = Date.now() - started;
  assert.ok(took >= 2900 && took < 6000, `cancelled after ${took} ms`);
  const fast = await fetch(`${env.url}/rest/v1/rpc/slow`, { method: 'POST', headers: as(ADA), body: '{"seconds": 0.01}' });
  assert.equal(fast.status, 200);
});

/** The proxy's peak resident memory so far (VmHWM), in bytes. */
const peakRss = (pid) => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)[1]) * 1024;
};

test('a large response streams through the proxy: its memory grows by a few chunks, not the body', async () => {
  const table = `fb_wide_${process.pid}`;
  sql(`create table public.${table} (id int primary key, t text);
       insert into public.${table} select i, repeat(md5(i::text), 625) from generate_series(1, 1000) i;
       grant select on public.${table} to anon;
       notify pgrst, 'reload schema';`);
  const proxy = await proxyWith({});
  try {
    // Warm up: the same request shape, small, so the peak below is the body's.
    const warm = await fetch(`${proxy.url}/rest/v1/${table}?limit=1`, { headers: anon });
    assert.equal(warm.status, 200);
    await warm.arrayBuffer();
    const before = peakRss(proxy.pid);
    const response = await fetch(`${proxy.url}/rest/v1/${table}?order=id`, { headers: anon });
    assert.equal(response.status, 200);
    const length = Number(response.headers.get('content-length'));
    assert.ok(length > 20_000_000, `a body of ${length} bytes`);
    const body = Buffer.from(await response.arrayBuffer());
    assert.equal(body.length, length);
    const rows = JSON.parse(body);
    assert.equal(rows.length, 1000);
    assert.deepEqual([rows[0].id, rows[999].id], [1, 1000]);
    assert.equal(rows[0].t.length, 20_000);
    const grew = peakRss(proxy.pid) - before;
    assert.ok(grew < 6_000_000, `the proxy's peak memory grew by ${grew} bytes for a ${length}-byte body`);

    // A client that leaves mid-body frees the connection: the statement is
    // cancelled and the next requests are served.
    const reader = (await fetch(`${proxy.url}/rest/v1/${table}`, { headers: anon })).body.getReader();
    await reader.read();
    await reader.cancel();
    for (let i = 0; i < 10; i++) {
      const next = await fetch(`${proxy.url}/rest/v1/${table}?id=eq.${i + 1}&select=id`, { headers: anon });
      assert.deepEqual(await next.json(), [{ id: i + 1 }]);
    }
    assert.ok(
      await eventually(() => sql(`select count(*) from pg_stat_activity where query like '%rest_body%' and state = 'active' and pid <> pg_backend_pid()`) === '0'),
      'no statement left streaming',
    );
  } finally {
    proxy.stop();
    sql(`drop table public.${table}`);
  }
});
