// Realtime, end to end, beyond public channels: private channels authorised
// by RLS policies on realtime.messages (auth.uid(), realtime.topic()),
// broadcast from SQL (realtime.send, realtime.send_binary, a trigger with
// realtime.broadcast_changes) after commit and in commit order, and the HTTP
// broadcast API (realtime-js's send() before joining, and httpSend()).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import { request } from 'node:http';
import { env, eventually, proxyWith, sign, sql, ADA, GRACE } from './helpers.mjs';

const clients = [];
// The channel's caller, as an app with its own auth passes it: supabase-js's
// `accessToken` callback (its token is what realtime-js sends again on every
// heartbeat; with the default callback that would be the anon key, which a
// private channel's policies refuse), and `setAuth(token)` so that the first
// join already carries it.
const client = (token, url = env.url) => {
  const c = createClient(url, env.anonKey, {
    realtime: { params: { log_level: 'error' } },
    ...(token ? { accessToken: async () => token } : { auth: { persistSession: false, autoRefreshToken: false } }),
  });
  if (token) c.realtime.setAuth(token);
  clients.push(c);
  return c;
};
const user = (sub) => sign({ role: 'authenticated', sub, session_id: sub });

function subscribe(channel) {
  return new Promise((resolve) => {
    channel.subscribe((status, err) => {
      if (status !== 'CLOSED') resolve({ status, err });
    });
  });
}

const suffix = Math.random().toString(36).slice(2, 8);
const room = `team-${suffix}`;

test.before(() => {
  sql(`
    create table if not exists public.rt_members (room text not null, user_id uuid not null);
    insert into public.rt_members values ('${room}', '${ADA}');
    grant select on public.rt_members to authenticated;
    drop policy if exists rt_read on realtime.messages;
    drop policy if exists rt_write on realtime.messages;
    create policy rt_read on realtime.messages for select to authenticated using (
      exists (select 1 from public.rt_members m where m.room = (select realtime.topic()) and m.user_id = auth.uid()));
    create policy rt_write on realtime.messages for insert to authenticated with check (
      extension = 'broadcast' and exists (select 1 from public.rt_members m
        where m.room = (select realtime.topic()) and m.user_id = auth.uid()));
  `);
});

test.after(async () => {
  for (const c of clients) await c.removeAllChannels();
  sql(`drop policy if exists rt_read on realtime.messages; drop policy if exists rt_write on realtime.messages;
       delete from public.rt_members where room = '${room}';`);
});

test('a private channel admits whom its SELECT policy admits; others get Supabase\'s reason', async () => {
  const ada = client(user(ADA)).channel(room, { config: { private: true } });
  const joined = await subscribe(ada);
  assert.equal(joined.status, 'SUBSCRIBED', joined.err?.message);
  const grace = client(user(GRACE)).channel(room, { config: { private: true } });
  const refused = await subscribe(grace);
  assert.equal(refused.status, 'CHANNEL_ERROR');
  assert.match(refused.err.message, new RegExp(`You do not have permissions to read from this Channel topic: ${room}`));
  const anon = client().channel(room, { config: { private: true } });
  assert.equal((await subscribe(anon)).status, 'CHANNEL_ERROR');
});

test('private and public channels of one name are apart; sending needs the INSERT policy', async () => {
  const got = { private: [], public: [] };
  const ada = client(user(ADA));
  const priv = ada.channel(room, { config: { private: true, broadcast: { self: true, ack: true } } });
  priv.on('broadcast', { event: '*' }, (m) => got.private.push(m.payload));
  assert.equal((await subscribe(priv)).status, 'SUBSCRIBED');
  const pub = client().channel(room, { config: { broadcast: { self: true, ack: true } } });
  pub.on('broadcast', { event: '*' }, (m) => got.public.push(m.payload));
  assert.equal((await subscribe(pub)).status, 'SUBSCRIBED');
  assert.equal(await priv.send({ type: 'broadcast', event: 'note', payload: { secret: 1 } }), 'ok');
  assert.equal(await pub.send({ type: 'broadcast', event: 'note', payload: { open: 1 } }), 'ok');
  assert.ok(await eventually(() => got.private.length === 1 && got.public.length === 1));
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(got, { private: [{ secret: 1 }], public: [{ open: 1 }] });

  // Grace may read a room whose SELECT policy lets everyone in, but not write.
  const open = `lobby-${suffix}`;
  sql(`create policy rt_lobby on realtime.messages for select to authenticated using ((select realtime.topic()) = '${open}')`);
  try {
    const grace = client(user(GRACE)).channel(open, { config: { private: true, broadcast: { ack: true } } });
    assert.equal((await subscribe(grace)).status, 'SUBSCRIBED');
    assert.equal(await grace.send({ type: 'broadcast', event: 'note', payload: {} }), 'error');
  } finally {
    sql('drop policy rt_lobby on realtime.messages');
  }
});

test('realtime.send from SQL: delivered after commit, in commit order, never when rolled back', async () => {
  const name = `sql-${suffix}`;
  const got = [];
  const ch = client().channel(name);
  ch.on('broadcast', { event: '*' }, (m) => got.push([m.event, m.payload]));
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  sql(`select realtime.send('{"n": 1}', 'first', '${name}', false);
       begin; select realtime.send('{"n": 2}', 'gone', '${name}', false); rollback;
       begin; select realtime.send('{"n": 3}', 'second', '${name}', false); select realtime.send('{"n": 4}', 'third', '${name}', false); commit;
       select realtime.send_binary('\\x0102ff', 'bytes', '${name}', false);`);
  assert.ok(await eventually(() => got.length >= 4), `got ${JSON.stringify(got)}`);
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(got.slice(0, 3), [['first', { n: 1 }], ['second', { n: 3 }], ['third', { n: 4 }]]);
  assert.equal(got[3][0], 'bytes');
  assert.deepEqual([...new Uint8Array(got[3][1])], [1, 2, 255]);
  assert.equal(got.length, 4, 'the rolled back message never arrives');
  // A private message from SQL reaches the private channel only.
  const priv = client(user(ADA)).channel(room, { config: { private: true } });
  const secret = [];
  priv.on('broadcast', { event: 'from-sql' }, (m) => secret.push(m.payload));
  assert.equal((await subscribe(priv)).status, 'SUBSCRIBED');
  sql(`select realtime.send('{"big": "${'y'.repeat(9000)}"}', 'from-sql', '${room}', true)`);
  assert.ok(await eventually(() => secret.length === 1), 'a message over NOTIFY\'s 8000 bytes arrives too');
  assert.equal(secret[0].big.length, 9000);

  // The same through NOTIFY, the transport where wal_level is not logical.
  got.length = 0;
  sql(`set fluxbase.realtime_transport = 'notify';
       begin; select realtime.send('{"n": 5}', 'n5', '${name}', false); rollback;
       select realtime.send('{"n": 6}', 'n6', '${name}', false);
       begin; select realtime.send('{"n": 7}', 'n7', '${name}', false); select realtime.send('{"n": 8}', 'n8', '${name}', false); commit;
       select realtime.send('{"big": "${'z'.repeat(9000)}"}', 'from-sql', '${room}', true);
       select realtime.send('{"big": "${'p'.repeat(9000)}"}', 'n9', '${name}', false);
       select realtime.send_binary(decode(repeat('ab', 100), 'hex'), 'n10', '${name}', false);`);
  assert.ok(await eventually(() => got.length === 5 && secret.length === 2), `got ${JSON.stringify(got).slice(0, 300)}`);
  assert.deepEqual(got.map(([e]) => e), ['n6', 'n7', 'n8', 'n9', 'n10']);
  assert.equal(got[3][1].big.length, 9000, 'a public message too large for NOTIFY arrives too');
  assert.deepEqual([...new Uint8Array(got[4][1])], Array(100).fill(0xab), 'bytes over 57 (base64 lines) arrive whole');
  assert.equal(secret[1].big.length, 9000, 'read back by id when too large for NOTIFY');
});

test('a trigger with realtime.broadcast_changes sends each row change', async () => {
  const name = `rows-${suffix}`;
  sql(`create table public.rt_notes_${suffix} (id int primary key, body text);
       create function public.rt_notes_${suffix}_changed() returns trigger language plpgsql security definer as $$
       begin
         perform realtime.broadcast_changes('${name}', tg_op, tg_op, tg_table_name, tg_table_schema, new, old);
         return null;
       end $$;
       create trigger rt_changed after insert or update or delete on public.rt_notes_${suffix}
         for each row execute function public.rt_notes_${suffix}_changed();
       create policy rt_rows on realtime.messages for select to authenticated using ((select realtime.topic()) = '${name}');`);
  try {
    const got = [];
    const ch = client(user(GRACE)).channel(name, { config: { private: true } });
    ch.on('broadcast', { event: '*' }, (m) => got.push(m));
    assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
    sql(`insert into public.rt_notes_${suffix} values (1, 'hello');
         update public.rt_notes_${suffix} set body = 'hi' where id = 1;
         delete from public.rt_notes_${suffix} where id = 1;`);
    assert.ok(await eventually(() => got.length === 3), `got ${got.length}`);
    assert.deepEqual(got.map((m) => m.event), ['INSERT', 'UPDATE', 'DELETE']);
    assert.deepEqual(got[1].payload, {
      operation: 'UPDATE', table: `rt_notes_${suffix}`, schema: 'public',
      record: { id: 1, body: 'hi' }, old_record: { id: 1, body: 'hello' },
    });
    assert.equal(got[0].payload.old_record, null);
  } finally {
    sql(`drop table public.rt_notes_${suffix}; drop function public.rt_notes_${suffix}_changed();
         drop policy rt_rows on realtime.messages;`);
  }
});

test('HTTP broadcast: send() before joining and httpSend() answer 202 and reach sockets on every proxy', async () => {
  const other = await proxyWith({});
  try {
    const name = `http-${suffix}`;
    const got = [];
    const listener = client(undefined, other.url).channel(name);
    listener.on('broadcast', { event: '*' }, (m) => got.push([m.event, m.payload]));
    assert.equal((await subscribe(listener)).status, 'SUBSCRIBED');
    const sender = client().channel(name);
    const warn = console.warn;
    console.warn = () => {};
    try {
      assert.equal(await sender.send({ type: 'broadcast', event: 'rest', payload: { via: 'batch' } }), 'ok');
    } finally {
      console.warn = warn;
    }
    assert.deepEqual(await sender.httpSend('direct', { via: 'path' }), { success: true });
    assert.ok(await eventually(() => got.length === 2), `got ${JSON.stringify(got)}`);
    assert.deepEqual(got, [['rest', { via: 'batch' }], ['direct', { via: 'path' }]]);

    // A private topic needs the INSERT policy: refused messages are left out.
    const priv = client(user(ADA), other.url).channel(room, { config: { private: true } });
    const secret = [];
    priv.on('broadcast', { event: '*' }, (m) => secret.push(m.payload));
    assert.equal((await subscribe(priv)).status, 'SUBSCRIBED');
    const post = (token, payload) => fetch(`${env.url}/realtime/v1/api/broadcast`, {
      method: 'POST',
      headers: { apikey: env.anonKey, authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ messages: [{ topic: room, event: 'e', payload, private: true }] }),
    });
    assert.equal((await post(user(GRACE), { from: 'grace' })).status, 202);
    assert.equal((await post(user(ADA), { from: 'ada' })).status, 202);
    assert.ok(await eventually(() => secret.length === 1));
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(secret, [{ from: 'ada' }]);

    const bad = await fetch(`${env.url}/realtime/v1/api/broadcast`, {
      method: 'POST', headers: { apikey: env.anonKey, 'content-type': 'application/json' }, body: '{"messages": 1}',
    });
    assert.equal(bad.status, 400);
    const badToken = await fetch(`${env.url}/realtime/v1/api/broadcast`, {
      method: 'POST', headers: { apikey: env.anonKey, authorization: 'Bearer not.a.jwt' }, body: '{"messages": []}',
    });
    assert.equal(badToken.status, 401);
  } finally {
    other.stop();
  }
});

test('replay: a private channel joined with replay gets its stored messages first, marked replayed', async () => {
  const since = Date.now() - 60_000;
  sql(`select realtime.send('{"seq": 1}', 'stored', '${room}', true);
       select realtime.send('{"seq": 2}', 'stored', '${room}', true);
       select realtime.send('{"seq": 3}', 'stored', '${room}', false);`);
  const got = [];
  const ch = client(user(ADA)).channel(room, { config: { private: true, broadcast: { replay: { since, limit: 2 } } } });
  ch.on('broadcast', { event: 'stored' }, (m) => got.push(m));
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  assert.ok(await eventually(() => got.length === 2));
  assert.deepEqual(got.map((m) => [m.payload.seq, m.meta.replayed]), [[1, true], [2, true]]);
  assert.match(got[0].meta.id, /^[0-9a-f-]{36}$/);
  sql(`select realtime.send('{"seq": 4}', 'stored', '${room}', true)`);
  assert.ok(await eventually(() => got.length === 3));
  assert.equal(got[2].payload.seq, 4);
  assert.equal(got[2].meta, undefined, 'live messages are not marked');
  // Grace may not read the room: no replay, no join.
  const refused = client(user(GRACE)).channel(room, { config: { private: true, broadcast: { replay: { since } } } });
  assert.equal((await subscribe(refused)).status, 'CHANNEL_ERROR');
});

test('a channel whose token expires is closed with a system message; a fresh access_token keeps it', async () => {
  const soon = (seconds) => sign({ role: 'authenticated', sub: ADA, exp: Math.floor(Date.now() / 1000) + seconds });
  const ws = new WebSocket(`${env.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${env.anonKey}&vsn=2.0.0`);
  const inbox = [];
  ws.onmessage = (e) => inbox.push(JSON.parse(e.data));
  await new Promise((resolve) => { ws.onopen = resolve; });
  ws.send(JSON.stringify(['1', '1', 'realtime:short', 'phx_join', { config: {}, access_token: soon(2) }]));
  ws.send(JSON.stringify(['2', '2', 'realtime:renewed', 'phx_join', { config: {}, access_token: soon(2) }]));
  ws.send(JSON.stringify(['2', '3', 'realtime:renewed', 'access_token', { access_token: soon(60) }]));
  assert.ok(await eventually(() => inbox.some((m) => m[3] === 'phx_close' && m[2] === 'realtime:short'), 6000));
  const system = inbox.find((m) => m[3] === 'system' && m[2] === 'realtime:short');
  assert.equal(system[4].status, 'error');
  assert.equal(system[4].extension, 'system');
  assert.equal(system[4].channel, 'short');
  assert.match(system[4].message, /^Token has expired \d+ seconds ago$/);
  assert.ok(!inbox.some((m) => m[2] === 'realtime:renewed' && ['system', 'phx_close'].includes(m[3])), 'the renewed channel stays');
  ws.close();
});

test('realtime sockets per client address are capped: one more upgrade is 429', async () => {
  const proxy = await proxyWith({ FLUXBASE_REALTIME_MAX_CONNECTIONS_PER_IP: '2' });
  const url = `${proxy.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${env.anonKey}&vsn=2.0.0`;
  const open = () => new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.onopen = () => resolve({ ws, ok: true });
    ws.onerror = () => resolve({ ws, ok: false });
  });
  try {
    const [a, b] = [await open(), await open()];
    assert.ok(a.ok && b.ok);
    const refused = await new Promise((resolve, reject) => {
      const req = request(`${proxy.url}/realtime/v1/websocket?apikey=${env.anonKey}&vsn=2.0.0`, {
        headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
      });
      req.on('response', (res) => {
        let body = '';
        res.on('data', (d) => { body += d; });
        res.on('end', () => resolve({ status: res.statusCode, retryAfter: res.headers['retry-after'], body: JSON.parse(body) }));
      });
      req.on('upgrade', () => reject(new Error('upgraded past the limit')));
      req.on('error', reject);
      req.end();
    });
    assert.equal(refused.status, 429);
    assert.equal(refused.retryAfter, '1');
    assert.match(refused.body.message, /^ConnectionRateLimitReached/);
    a.ws.close();
    assert.ok(await eventually(async () => (await open()).ok), 'a closed socket gives its place back');
  } finally {
    proxy.stop();
  }
});

test('presence is shared across proxies; a proxy that dies leaves presence within 20 s', { timeout: 60_000 }, async () => {
  const other = await proxyWith({});
  const name = `presence-${suffix}`;
  try {
    const here = client().channel(name, { config: { presence: { key: 'ada' } } });
    let state = {};
    here.on('presence', { event: 'sync' }, () => { state = here.presenceState(); });
    assert.equal((await subscribe(here)).status, 'SUBSCRIBED');
    assert.equal(await here.track({ where: 'first proxy' }), 'ok');
    // A client of the other proxy joining later sees Ada.
    const there = client(undefined, other.url).channel(name, { config: { presence: { key: 'grace' } } });
    let thereState = {};
    there.on('presence', { event: 'sync' }, () => { thereState = there.presenceState(); });
    assert.equal((await subscribe(there)).status, 'SUBSCRIBED');
    assert.ok(await eventually(() => thereState.ada?.[0]?.where === 'first proxy'), JSON.stringify(thereState));
    assert.equal(await there.track({ where: 'second proxy' }), 'ok');
    assert.ok(await eventually(() => state.grace?.[0]?.where === 'second proxy'), JSON.stringify(state));
    // Untrack travels too.
    await there.untrack();
    assert.ok(await eventually(() => !state.grace), JSON.stringify(state));
    assert.equal(await there.track({ where: 'second proxy, again' }), 'ok');
    assert.ok(await eventually(() => state.grace?.[0]?.where === 'second proxy, again'));
    // The second proxy dies without a word: its sockets leave presence here.
    process.kill(other.pid, 'SIGKILL');
    assert.ok(await eventually(() => !state.grace, 25_000), 'gone within the heartbeat window');
    assert.equal(state.ada?.[0]?.where, 'first proxy');
  } finally {
    other.stop();
  }
});

/** A raw vsn 2.0.0 socket: its frames (arrays) land in `inbox`. */
async function rawSocket() {
  const ws = new WebSocket(`${env.url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${env.anonKey}&vsn=2.0.0`);
  const inbox = [];
  ws.onmessage = (e) => { if (typeof e.data === 'string') inbox.push(JSON.parse(e.data)); };
  await new Promise((resolve) => { ws.onopen = resolve; });
  return { ws, inbox };
}

test('a new access_token checks a private channel\'s policies again: one they refuse closes it, as Supabase does', async () => {
  const token = (sub, exp = Math.floor(Date.now() / 1000) + 3600) => sign({ role: 'authenticated', sub, exp });
  const { ws, inbox } = await rawSocket();
  const join = (topic, ref) => ws.send(JSON.stringify([ref, ref, `realtime:${topic}`, 'phx_join',
    { config: { private: true }, access_token: token(ADA) }]));
  // Three channels of Ada's (sub-topics of one room name are one topic each).
  const [kept, moved, stale] = [room, `${room}-2`, `${room}-3`];
  sql(`insert into public.rt_members values ('${moved}', '${ADA}'), ('${stale}', '${ADA}')`);
  join(kept, '1');
  join(moved, '2');
  join(stale, '3');
  const replied = (ref) => inbox.find((m) => m[3] === 'phx_reply' && m[1] === ref);
  assert.ok(await eventually(() => ['1', '2', '3'].every(replied)), JSON.stringify(inbox));
  assert.ok(['1', '2', '3'].every((r) => replied(r)[4].status === 'ok'), JSON.stringify(inbox));
  // Grace's token on Ada's channel: her policies refuse the topic.
  ws.send(JSON.stringify(['2', '4', `realtime:${moved}`, 'access_token', { access_token: token(GRACE) }]));
  // An expired token: closed with Supabase's words.
  ws.send(JSON.stringify(['3', '5', `realtime:${stale}`, 'access_token',
    { access_token: token(ADA, Math.floor(Date.now() / 1000) - 30) }]));
  // A fresh token of Ada's keeps hers.
  ws.send(JSON.stringify(['1', '6', `realtime:${kept}`, 'access_token', { access_token: token(ADA) }]));
  const closed = (topic) => inbox.some((m) => m[3] === 'phx_close' && m[2] === `realtime:${topic}`);
  assert.ok(await eventually(() => closed(moved) && closed(stale)), JSON.stringify(inbox));
  const system = (topic) => inbox.find((m) => m[3] === 'system' && m[2] === `realtime:${topic}`)?.[4];
  assert.deepEqual(system(moved), { status: 'error', extension: 'system', channel: moved,
    message: `You do not have permissions to read from this Channel topic: ${moved}` });
  assert.equal(system(stale).extension, 'system');
  assert.match(system(stale).message, /^Token has expired (29|30|31|32) seconds ago$/);
  sql(`select realtime.send('{"after": "refresh"}', 'note', '${kept}', true);
       select realtime.send('{"after": "refresh"}', 'note', '${moved}', true);`);
  assert.ok(await eventually(() => inbox.some((m) => m[3] === 'broadcast' && m[2] === `realtime:${kept}`)));
  await new Promise((r) => setTimeout(r, 300));
  assert.ok(!closed(kept), 'the renewed channel stays');
  assert.ok(!inbox.some((m) => m[3] === 'broadcast' && m[2] === `realtime:${moved}`), 'nothing reaches the closed one');

  // Removed from the room while joined: Ada's next token no longer admits her.
  sql(`delete from public.rt_members where room = '${kept}' and user_id = '${ADA}'`);
  try {
    ws.send(JSON.stringify(['1', '7', `realtime:${kept}`, 'access_token', { access_token: token(ADA) }]));
    assert.ok(await eventually(() => closed(kept)), JSON.stringify(inbox));
    assert.equal(system(kept).message, `You do not have permissions to read from this Channel topic: ${kept}`);
  } finally {
    sql(`insert into public.rt_members values ('${kept}', '${ADA}');
         delete from public.rt_members where room in ('${moved}', '${stale}');`);
    ws.close();
  }
});

test('replay: binary broadcasts are stored and replayed like JSON ones (vsn 2.0.0)', async () => {
  const since = Date.now() - 1000;
  // A listener already joined sees the messages live; once it has, the
  // replaying join below cannot also get them live (a join racing the
  // decoder can: docs/realtime.md, Replay).
  const live = [];
  const listener = client(user(ADA)).channel(room, { config: { private: true } });
  listener.on('broadcast', { event: 'mixed' }, (m) => live.push(m));
  assert.equal((await subscribe(listener)).status, 'SUBSCRIBED');
  sql(`select realtime.send('{"seq": 1}', 'mixed', '${room}', true);
       select realtime.send_binary('\\x00ff10', 'mixed', '${room}', true);
       select realtime.send('{"seq": 3}', 'mixed', '${room}', true);`);
  assert.ok(await eventually(() => live.some((m) => m.payload?.seq === 3)), `live ${live.length}`);
  await listener.unsubscribe();
  const got = [];
  const ch = client(user(ADA)).channel(room, { config: { private: true, broadcast: { replay: { since, limit: 25 } } } });
  ch.on('broadcast', { event: 'mixed' }, (m) => got.push(m));
  assert.equal((await subscribe(ch)).status, 'SUBSCRIBED');
  assert.ok(await eventually(() => got.length === 3), `got ${got.length}`);
  assert.deepEqual(got[0].payload, { seq: 1 });
  assert.deepEqual([...new Uint8Array(got[1].payload)], [0, 255, 16], 'the bytes, as a binary broadcast');
  assert.equal(got[1].meta.replayed, true);
  assert.match(got[1].meta.id, /^[0-9a-f-]{36}$/);
  assert.deepEqual(got[2].payload, { seq: 3 });
  assert.ok(got.every((m) => m.meta?.replayed === true));
});
