// The Data API through supabase-js: filters, embedding, writes, upserts,
// RPC, counts, singular responses, CSV refusal and errors, under RLS.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import { env, sign, ADA, GRACE } from './helpers.mjs';

const anon = createClient(env.url, env.anonKey, { auth: { persistSession: false } });
const as = (sub) =>
  createClient(env.url, env.anonKey, {
    auth: { persistSession: false },
    global: { headers: { Authorization: `Bearer ${sign({ role: 'authenticated', sub })}` } },
  });

test('embedding: many-to-one, one-to-many with inner filters and order', async () => {
  const { data, error } = await anon
    .from('cities')
    .select('name, country:countries(name)')
    .order('population', { ascending: false })
    .limit(2);
  assert.equal(error, null);
  assert.deepEqual(data, [
    { name: 'Tokyo', country: { name: 'Japan' } },
    { name: 'Osaka', country: { name: 'Japan' } },
  ]);
  const countries = await anon
    .from('countries')
    .select('name, cities!inner(name)')
    .eq('cities.name', 'Lyon');
  assert.equal(countries.error, null);
  assert.deepEqual(countries.data, [{ name: 'France', cities: [{ name: 'Lyon' }] }]);
  const all = await anon.from('countries').select('name, cities(name)').order('id').order('name', { referencedTable: 'cities' });
  assert.deepEqual(all.data.map((c) => [c.name, c.cities.map((x) => x.name)]), [
    ['France', ['Lyon', 'Paris']],
    ['Japan', ['Osaka', 'Tokyo']],
    ['Chile', []],
  ]);
});

test('filters: in, or, not, gte, is, textSearch-free operators', async () => {
  const q = await anon.from('cities').select('name').in('name', ['Paris', 'Osaka']).order('name');
  assert.deepEqual(q.data, [{ name: 'Osaka' }, { name: 'Paris' }]);
  const or = await anon.from('cities').select('name').or('name.eq.Lyon,population.gt.10000000').order('name');
  assert.deepEqual(or.data, [{ name: 'Lyon' }, { name: 'Tokyo' }]);
  const not = await anon.from('cities').select('name').not('country_id', 'eq', 2).order('name');
  assert.deepEqual(not.data, [{ name: 'Lyon' }, { name: 'Paris' }]);
  const range = await anon.from('cities').select('name').gte('population', 2700000).lte('population', 3000000);
  assert.deepEqual(range.data, [{ name: 'Osaka' }]);
});

test('count, head and range', async () => {
  const { count, data, error } = await anon.from('cities').select('*', { count: 'exact', head: true });
  assert.equal(error, null);
  assert.equal(count, 4);
  assert.equal(data, null);
  const page = await anon.from('cities').select('name', { count: 'exact' }).order('id').range(1, 2);
  assert.equal(page.status, 206);
  assert.equal(page.count, 4);
  assert.deepEqual(page.data, [{ name: 'Lyon' }, { name: 'Tokyo' }]);
});

test('single() and maybeSingle()', async () => {
  const one = await anon.from('countries').select('name').eq('id', 2).single();
  assert.deepEqual(one.data, { name: 'Japan' });
  const none = await anon.from('countries').select('name').eq('id', 99).single();
  assert.equal(none.error.code, 'PGRST116');
  assert.equal(none.status, 406);
  const maybe = await anon.from('countries').select('name').eq('id', 99).maybeSingle();
  assert.equal(maybe.error, null);
  assert.equal(maybe.data, null);
});

test('writes under RLS: insert, select back, update, upsert, delete', async () => {
  const ada = as(ADA);
  const ins = await ada.from('notes').insert([{ body: 'one' }, { body: 'two' }]).select('id, body, owner');
  assert.equal(ins.error, null);
  assert.equal(ins.status, 201);
  assert.equal(ins.data.length, 2);
  assert.ok(ins.data.every((n) => n.owner === ADA));
  const [first, second] = ins.data;

  const upd = await ada.from('notes').update({ pinned: true }).eq('id', first.id).select().single();
  assert.equal(upd.error, null);
  assert.equal(upd.data.pinned, true);

  const ups = await ada.from('notes').upsert({ id: second.id, body: 'two, edited', owner: ADA }).select('body');
  assert.equal(ups.error, null);
  assert.deepEqual(ups.data, [{ body: 'two, edited' }]);

  // Grace sees none of Ada's notes and cannot change them.
  const grace = as(GRACE);
  const seen = await grace.from('notes').select('id');
  assert.deepEqual(seen.data, []);
  const steal = await grace.from('notes').update({ body: 'mine' }).eq('id', first.id).select();
  assert.deepEqual(steal.data, []);
  const forge = await grace.from('notes').insert({ body: 'as ada', owner: ADA });
  assert.equal(forge.status, 403);
  assert.equal(forge.error.code, '42501');

  const del = await ada.from('notes').delete({ count: 'exact' }).in('id', [first.id, second.id]);
  assert.equal(del.error, null);
  assert.equal(del.count, 2);
  const left = await ada.from('notes').select('id');
  assert.deepEqual(left.data, []);
});

test('anon cannot write: 401 with the SQLSTATE', async () => {
  const { error, status } = await anon.from('notes').insert({ body: 'x' });
  assert.equal(status, 401);
  assert.equal(error.code, '42501');
});

test('rpc: scalar, set-returning with filters, claims visible to SQL', async () => {
  const sum = await anon.rpc('add_numbers', { a: 2, b: 40 });
  assert.equal(sum.error, null);
  assert.equal(sum.data, 42);
  const big = await anon.rpc('big_cities', { min_population: 2000000 }).select('name').lt('population', 5000000).order('name');
  assert.deepEqual(big.data, [{ name: 'Osaka' }, { name: 'Paris' }]);
  const get = await anon.rpc('add_numbers', { a: 1, b: 1 }, { get: true });
  assert.equal(get.data, 2);
  const me = await as(ADA).rpc('whoami');
  assert.equal(me.data.sub, ADA);
  const missing = await anon.rpc('no_such_function', {});
  assert.equal(missing.status, 404);
  assert.equal(missing.error.code, 'PGRST202');
});

test('bad input: wrong types, unknown columns, bad JSON', async () => {
  const ada = as(ADA);
  const wrong = await ada.from('notes').insert({ body: 'x', pinned: 'maybe' });
  assert.equal(wrong.status, 400);
  assert.equal(wrong.error.code, '22P02');
  const unknown = await ada.from('notes').insert({ nope: 1 });
  assert.equal(unknown.error.code, 'PGRST204');
  const res = await fetch(`${env.url}/rest/v1/notes`, {
    method: 'POST',
    headers: { apikey: env.anonKey, Authorization: `Bearer ${sign({ role: 'authenticated', sub: ADA })}`, 'content-type': 'application/json' },
    body: '{"body": ',
  });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).code, 'PGRST102');
  const bad = await anon.from('cities').select('name, nope');
  assert.equal(bad.error.code, '42703');
  const left = await ada.from('notes').select('id');
  assert.deepEqual(left.data, [], 'nothing was written by the failed requests');
});

test('CSV out and in', async () => {
  const csv = await anon.from('cities').select('name,population').order('id').limit(2).csv();
  assert.equal(csv.error, null);
  assert.equal(csv.data, 'name,population\nParis,2100000\nLyon,516000');
  const token = sign({ role: 'authenticated', sub: ADA });
  const res = await fetch(`${env.url}/rest/v1/notes?select=body`, {
    method: 'POST',
    headers: { apikey: env.anonKey, Authorization: `Bearer ${token}`, 'content-type': 'text/csv', prefer: 'return=representation' },
    body: 'body\n"from, csv"\nplain',
  });
  assert.equal(res.status, 201);
  assert.deepEqual(await res.json(), [{ body: 'from, csv' }, { body: 'plain' }]);
  const del = await as(ADA).from('notes').delete({ count: 'exact' }).in('body', ['from, csv', 'plain']);
  assert.equal(del.count, 2);
});

test('ETag and If-None-Match answer 304', async () => {
  const url = `${env.url}/rest/v1/countries?select=name&id=eq.1`;
  const first = await fetch(url, { headers: { apikey: env.anonKey } });
  const tag = first.headers.get('etag');
  assert.match(tag, /^W\/"[0-9a-f]+"$/);
  const again = await fetch(url, { headers: { apikey: env.anonKey, 'if-none-match': tag } });
  assert.equal(again.status, 304);
  const other = await fetch(`${env.url}/rest/v1/countries?select=name&id=eq.2`, { headers: { apikey: env.anonKey, 'if-none-match': tag } });
  assert.equal(other.status, 200);
});

test('OpenAPI description at /rest/v1/', async () => {
  const res = await fetch(`${env.url}/rest/v1/`, { headers: { apikey: env.anonKey } });
  assert.equal(res.status, 200);
  const doc = await res.json();
  assert.equal(doc.swagger, '2.0');
  assert.ok(doc.paths['/cities']);
  assert.ok(doc.paths['/rpc/add_numbers']);
  assert.equal(doc.definitions.cities.properties.population.type, 'integer');
});

test('Idempotency-Key: concurrent retries of a write write once and get the same answer', async () => {
  const token = sign({ role: 'authenticated', sub: ADA });
  const key = `e2e-${process.pid}-${Date.now()}`;
  const send = () =>
    fetch(`${env.url}/rest/v1/notes?select=id,body`, {
      method: 'POST',
      headers: {
        apikey: env.anonKey,
        Authorization: `Bearer ${token}`,
        'content-type': 'application/json',
        prefer: 'return=representation',
        'idempotency-key': key,
      },
      body: JSON.stringify({ body: key }),
    });
  const responses = await Promise.all([send(), send(), send(), send(), send()]);
  const bodies = await Promise.all(responses.map((r) => r.text()));
  assert.deepEqual(responses.map((r) => r.status), [201, 201, 201, 201, 201]);
  assert.equal(new Set(bodies).size, 1, 'every retry sees the first response');
  assert.equal(responses.filter((r) => r.headers.get('idempotent-replayed') === 'true').length, 4);
  const ada = as(ADA);
  const { data } = await ada.from('notes').select('id').eq('body', key);
  assert.equal(data.length, 1);
  const other = await fetch(`${env.url}/rest/v1/notes`, {
    method: 'POST',
    headers: { apikey: env.anonKey, Authorization: `Bearer ${token}`, 'content-type': 'application/json', 'idempotency-key': key },
    body: JSON.stringify({ body: 'something else' }),
  });
  assert.equal(other.status, 422);
  assert.equal((await other.json()).code, 'FB021');
  await ada.from('notes').delete().eq('body', key);
});

test('If-Match: a write of rows that changed since their ETag is refused with 412', async () => {
  const token = sign({ role: 'authenticated', sub: ADA });
  const headers = { apikey: env.anonKey, Authorization: `Bearer ${token}`, 'content-type': 'application/json' };
  const ada = as(ADA);
  const { data } = await ada.from('notes').insert({ body: 'v1' }).select('id').single();
  const url = `${env.url}/rest/v1/notes?id=eq.${data.id}`;
  const tag = (await fetch(url, { headers })).headers.get('etag');
  const first = await fetch(url, { method: 'PATCH', headers: { ...headers, 'if-match': tag }, body: '{"body":"v2"}' });
  assert.equal(first.status, 204);
  const stale = await fetch(url, { method: 'PATCH', headers: { ...headers, 'if-match': tag }, body: '{"body":"v3"}' });
  assert.equal(stale.status, 412);
  assert.equal((await stale.json()).code, 'FB020');
  const now = await ada.from('notes').select('body').eq('id', data.id).single();
  assert.equal(now.data.body, 'v2');
  await ada.from('notes').delete().eq('id', data.id);
});

test('keyset pagination: the next page follows the cursor, not an offset', async () => {
  const headers = { apikey: env.anonKey, prefer: 'pagination=keyset' };
  const first = await fetch(`${env.url}/rest/v1/cities?select=id,name&order=name&limit=2`, { headers });
  assert.deepEqual(await first.json(), [
    { id: 2, name: 'Lyon' },
    { id: 4, name: 'Osaka' },
  ]);
  const next = first.headers.get('link').match(/<([^>]+)>; rel="next"/)[1];
  assert.ok(first.headers.get('fluxbase-next-cursor'));
  const second = await fetch(`${env.url}${next}`, { headers });
  assert.deepEqual(await second.json(), [
    { id: 1, name: 'Paris' },
    { id: 3, name: 'Tokyo' },
  ]);
});
