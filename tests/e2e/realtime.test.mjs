// Realtime, end to end: supabase-js's channel() (realtime-js, Phoenix
// protocol vsn 2.0.0 by default) against the proxy: subscribe, broadcast
// (self, ack), presence, two proxies on one database, limits and bad input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import { env, eventually, proxyWith, sign } from './helpers.mjs';

const clients = [];
const client = (url = env.url, key = env.anonKey, realtime = {}) => {
  const c = createClient(url, key, {
    auth: { persistSession: false, autoRefreshToken: false },
    realtime: { params: { log_level: 'error' }, ...realtime },
  });
  clients.push(c);
  return c;
};

/** Subscribes and resolves with the status realtime-js reports. */
function subscribe(channel) {
  return new Promise((resolve) => {
    channel.subscribe((status, err) => {
      if (status !== 'CLOSED') resolve({ status, err });
    });
  });
}

const topic = (name) => `${name}-${Math.random().toString(36).slice(2, 8)}`;

/** Opens a raw WebSocket speaking `vsn`; returns send/next helpers. */
async function raw(url = env.url, vsn = '2.0.0', key = env.anonKey) {
  const ws = new WebSocket(`${url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${key}&vsn=${vsn}`);
  ws.binaryType = 'arraybuffer';
  const inbox = [];
  let wake = null;
  let closed = null;
  ws.addEventListener('message', (e) => {
    inbox.push(typeof e.data === 'string' ? JSON.parse(e.data) : e.data);
    wake?.();
  });
  ws.addEventListener('close', (e) => {
    closed = { code: e.code, reason: e.reason };
    wake?.();
  });
  await new Promise((resolve, reject) => {
    ws.addEventListener('open', resolve);
    ws.addEventListener('error', reject);
  });
  return {
    ws,
    send: (frame) => ws.send(typeof frame === 'string' || frame instanceof ArrayBuffer ? frame : JSON.stringify(frame)),
    /** The next message matching `pred`, within `ms`. */
    async next(pred = () => true, ms = 3000) {
      const until = Date.now() + ms;
      for (;;) {
        const i = inbox.findIndex(pred);
        if (i >= 0) return inbox.splice(i, 1)[0];
        if (closed || Date.now() > until) return null;
        await new Promise((r) => {
          wake = r;
          setTimeout(r, 50);
        });
      }
    },
    closed: () => closed,
    close: () => ws.close(),
  };
}

test.after(async () => {
  for (const c of clients) await c.removeAllChannels();
});

test('a channel subscribes; a broadcast reaches the other client, and the sender only with self', async () => {
  const name = topic('room');
  const [a, b] = [client(), client()];
  const got = { a: [], b: [] };
  const chA = a.channel(name, { config: { broadcast: { self: true } } });
  const chB = b.channel(name);
  chA.on('broadcast', { event: 'msg' }, (m) => got.a.push(m));
  chB.on('broadcast', { event: 'msg' }, (m) => got.b.push(m));
  assert.equal((await subscribe(chA)).status, 'SUBSCRIBED');
  assert.equal((await subscribe(chB)).status, 'SUBSCRIBED');
  assert.equal(await chA.send({ type: 'broadcast', event: 'msg', payload: { n: 1, text: 'héllo ✓' } }), 'ok');
  assert.equal(await chB.send({ type: 'broadcast', event: 'msg', payload: { n: 2 } }), 'ok');
  assert.ok(await eventually(() => got.a.length === 2 && got.b.length === 1, 3000), JSON.stringify(got));
  assert.deepEqual(got.b[0], { type: 'broadcast', event: 'msg', payload: { n: 1, text: 'héllo ✓' } });
  assert.deepEqual(got.a.map((m) => m.payload.n).sort(), [1, 2]);
  // Another event name is not delivered to an `msg` listener.
  await chA.send({ type: 'broadcast', event: 'other', payload: {} });
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(got.b.length, 1);
});

test('broadcast with ack resolves ok once the server has it; vsn 1.0.0 clients interoperate', async () => {
  const name = topic('ack');
  const a = client(env.url, env.anonKey, { vsn: '2.0.0' });
  const b = client(env.url, env.anonKey, { vsn: '1.0.0' });
  const chA = a.channel(name, { config: { broadcast: { ack: true } } });
  const chB = b.channel(name, { config: { broadcast: { ack: true } } });
  const got = [];
  const back = [];
  chB.on('broadcast', { event: 'e' }, (m) => got.push(m.payload));
  chA.on('broadcast', { event: 'e' }, (m) => back.push(m.payload));
  assert.equal((await subscribe(chA)).status, 'SUBSCRIBED');
  assert.equal((await subscribe(chB)).status, 'SUBSCRIBED');
  assert.equal(await chA.send({ type: 'broadcast', event: 'e', payload: { from: 'v2' } }), 'ok');
  assert.equal(await chB.send({ type: 'broadcast', event: 'e', payload: { from: 'v1' } }), 'ok');
  assert.ok(await eventually(() => got.length === 1 && back.length === 1), JSON.stringify({ got, back }));
  assert.deepEqual(got[0], { from: 'v2' });
  assert.deepEqual(back[0], { from: 'v1' });
});

test('presence: sync, join and leave between two clients; a closed socket leaves', async () => {
  const name = topic('presence');
  const [a, b] = [client(), client()];
  const chA = a.channel(name, { config: { presence: { key: 'ada' } } });
  const chB = b.channel(name, { config: { presence: { key: 'grace' } } });
  const joins = [];
  const leaves = [];
  chA.on('presence', { event: 'sync' }, () => {});
  chA.on('presence', { event: 'join' }, ({ key, newPresences }) => joins.push({ key, newPresences }));
  chA.on('presence', { event: 'leave' }, ({ key }) => leaves.push(key));
  chB.on('presence', { event: 'sync' }, () => {});
  assert.equal((await subscribe(chA)).status, 'SUBSCRIBED');
  assert.equal(await chA.track({ status: 'online' }), 'ok');
  assert.equal((await subscribe(chB)).status, 'SUBSCRIBED');
  // B sees A in its first state.
  assert.ok(await eventually(() => chB.presenceState().ada?.length === 1), JSON.stringify(chB.presenceState()));
  assert.equal(chB.presenceState().ada[0].status, 'online');
  assert.ok(chB.presenceState().ada[0].presence_ref);
  assert.equal(await chB.track({ status: 'typing' }), 'ok');
  assert.ok(await eventually(() => joins.some((j) => j.key === 'grace')), JSON.stringify(joins));
  assert.deepEqual(Object.keys(chA.presenceState()).sort(), ['ada', 'grace']);
  assert.equal(chA.presenceState().grace[0].status, 'typing');
  // Tracking again replaces the meta, not adds one.
  assert.equal(await chB.track({ status: 'idle' }), 'ok');
  assert.ok(await eventually(() => chA.presenceState().grace?.[0]?.status === 'idle'));
  assert.equal(chA.presenceState().grace.length, 1);
  assert.equal(await chB.untrack(), 'ok');
  assert.ok(await eventually(() => leaves.includes('grace') && !chA.presenceState().grace));
  await chB.track({ status: 'back' });
  assert.ok(await eventually(() => chA.presenceState().grace?.length === 1));
  // The socket closes: its presence leaves.
  b.realtime.disconnect();
  assert.ok(await eventually(() => !chA.presenceState().grace, 3000), JSON.stringify(chA.presenceState()));
});

test('two proxies on one database: a broadcast sent to one reaches sockets on the other', async () => {
  const other = await proxyWith({ FLUXBASE_SERVER_IDLE_TIMEOUT_MS: '1500' });
  try {
    const name = topic('cross');
    const a = client(env.url);
    const b = client(other.url);
    const got = { a: [], b: [] };
    const chA = a.channel(name);
    const chB = b.channel(name, { config: { broadcast: { ack: true } } });
    chA.on('broadcast', { event: 'x' }, (m) => got.a.push(m.payload));
    chB.on('broadcast', { event: 'x' }, (m) => got.b.push(m.payload));
    assert.equal((await subscribe(chA)).status, 'SUBSCRIBED');
    assert.equal((await subscribe(chB)).status, 'SUBSCRIBED');
    await chA.send({ type: 'broadcast', event: 'x', payload: { via: 'first' } });
    assert.ok(await eventually(() => got.b.length === 1), 'first → second');
    assert.deepEqual(got.b[0], { via: 'first' });
    // Past the second proxy's idle timeout (1.5 s, no heartbeat yet): the
    // WebSocket is not an idle HTTP connection and stays open.
    await new Promise((r) => setTimeout(r, 3000));
    assert.equal(await chB.send({ type: 'broadcast', event: 'x', payload: { via: 'second' } }), 'ok');
    assert.ok(await eventually(() => got.a.length === 1), 'second → first');
    assert.deepEqual(got.a[0], { via: 'second' });
    assert.equal(got.b.length, 1, 'the sender does not get its own message back through the database');
  } finally {
    other.stop();
  }
});

test('raw protocol: heartbeat, join reply, leave and close, for both versions', async () => {
  const v2 = await raw(env.url, '2.0.0');
  v2.send([null, '1', 'phoenix', 'heartbeat', {}]);
  assert.deepEqual(await v2.next((m) => m[1] === '1'), [null, '1', 'phoenix', 'phx_reply', { status: 'ok', response: {} }]);
  v2.send(['2', '2', 'realtime:raw', 'phx_join', { config: { broadcast: { self: true }, presence: { key: '', enabled: false }, postgres_changes: [], private: false } }]);
  assert.deepEqual(await v2.next((m) => m[1] === '2'), ['2', '2', 'realtime:raw', 'phx_reply', { status: 'ok', response: { postgres_changes: [] } }]);
  v2.send(['2', '3', 'realtime:raw', 'broadcast', { type: 'broadcast', event: 'e', payload: { a: 1 } }]);
  assert.deepEqual((await v2.next((m) => m[3] === 'broadcast'))[4], { type: 'broadcast', event: 'e', payload: { a: 1 } });
  v2.send(['2', '4', 'realtime:raw', 'phx_leave', {}]);
  assert.deepEqual((await v2.next((m) => m[1] === '4'))[4], { status: 'ok', response: {} });
  assert.deepEqual(await v2.next((m) => m[3] === 'phx_close'), ['2', '2', 'realtime:raw', 'phx_close', {}]);
  v2.close();

  const v1 = await raw(env.url, '1.0.0');
  v1.send({ topic: 'phoenix', event: 'heartbeat', payload: {}, ref: '9' });
  assert.deepEqual(await v1.next((m) => m.ref === '9'), { join_ref: null, ref: '9', topic: 'phoenix', event: 'phx_reply', payload: { status: 'ok', response: {} } });
  v1.close();
});

test('bad input: malformed frames, unknown events, unjoined topics, oversized payloads; the socket survives', async () => {
  const s = await raw();
  s.send('not json');
  const err = await s.next((m) => m[3] === 'phx_error');
  assert.match(err[4].reason, /^MalformedMessage: not JSON/);
  s.send(JSON.stringify({ topic: 'x' }));
  assert.match((await s.next((m) => m[3] === 'phx_error'))[4].reason, /arrays/);
  s.send(new Uint8Array([9, 0, 0]).buffer);
  assert.match((await s.next((m) => m[3] === 'phx_error'))[4].reason, /MalformedMessage/);
  s.send([null, '1', 'realtime:nowhere', 'broadcast', { type: 'broadcast', event: 'e', payload: {} }]);
  assert.deepEqual((await s.next((m) => m[1] === '1'))[4], { status: 'error', response: { reason: 'unmatched topic' } });
  s.send(['2', '2', 'realtime:bad', 'phx_join', { config: {} }]);
  assert.equal((await s.next((m) => m[1] === '2'))[4].status, 'ok');
  s.send(['2', '3', 'realtime:bad', 'no_such_event', {}]);
  assert.match((await s.next((m) => m[1] === '3'))[4].response.reason, /^UnknownEvent/);
  s.send(['2', '4', 'realtime:bad', 'presence', { type: 'presence', event: 'dance', payload: {} }]);
  assert.match((await s.next((m) => m[1] === '4'))[4].response.reason, /^UnknownPresenceEvent/);
  s.send(['2', '5', 'realtime:bad', 'broadcast', { type: 'broadcast', event: 'big', payload: { blob: 'x'.repeat(8000) } }]);
  const big = await s.next((m) => m[1] === '5');
  assert.equal(big[4].status, 'error');
  assert.match(big[4].response.reason, /^PayloadTooLarge: the payload is 80\d\d bytes, more than this server's limit of 7500 bytes/);
  s.send(['6', '6', 'realtime:private', 'phx_join', { config: { private: true } }]);
  assert.match((await s.next((m) => m[1] === '6'))[4].response.reason, /^Unauthorized/);
  // A malformed postgres_changes binding refuses the join (realtime_changes.test.mjs has the rest).
  s.send(['7', '7', 'realtime:pg', 'phx_join', { config: { postgres_changes: [{ event: 'NOPE', schema: 'public' }] } }]);
  assert.match((await s.next((m) => m[1] === '7'))[4].response.reason, /^Unable to subscribe to changes with given parameters: unknown event/);
  s.send(['8', '8', 'realtime:bad', 'phx_join', { config: {}, access_token: 'not.a.jwt' }]);
  assert.match((await s.next((m) => m[1] === '8'))[4].response.reason, /^InvalidJWTToken/);
  // Still serving.
  s.send([null, '9', 'phoenix', 'heartbeat', {}]);
  assert.equal((await s.next((m) => m[1] === '9'))[4].status, 'ok');
  assert.equal(s.closed(), null);
  s.close();
  // A frame over 1 MiB closes that socket, and the proxy goes on.
  const huge = await raw();
  huge.send('x'.repeat((1 << 20) + 1));
  await huge.next(() => false, 2000);
  assert.ok(huge.closed(), 'the socket with the oversized frame is closed');
  assert.ok((await fetch(`${env.url}/health`)).ok);
});

test('a bad key is refused at the upgrade; an expired access_token closes the channel with a system message', async () => {
  const { get } = await import('node:http');
  const refused = await new Promise((resolve, reject) => {
    get(`${env.url}/realtime/v1/websocket?apikey=sb_publishable_nope&vsn=2.0.0`, {
      headers: { upgrade: 'websocket', connection: 'Upgrade', 'sec-websocket-version': '13', 'sec-websocket-key': 'dGhlIHNhbXBsZSBub25jZQ==' },
    }, (res) => { res.resume(); resolve({ status: res.statusCode }); }).on('error', reject);
  });
  assert.equal(refused.status, 401);
  const s = await raw();
  const user = sign({ role: 'authenticated', sub: 'u1' });
  s.send(['1', '1', 'realtime:tok', 'phx_join', { config: {}, access_token: user }]);
  assert.equal((await s.next((m) => m[1] === '1'))[4].status, 'ok');
  const expired = sign({ role: 'authenticated', sub: 'u1', exp: Math.floor(Date.now() / 1000) - 3600 });
  s.send(['1', '2', 'realtime:tok', 'access_token', { access_token: expired }]);
  const system = await s.next((m) => m[3] === 'system');
  assert.equal(system[4].status, 'error');
  assert.equal(system[4].extension, 'system');
  assert.equal(system[4].channel, 'tok');
  assert.ok(await s.next((m) => m[3] === 'phx_close'));
  s.close();
});

test('limits: channels per connection and events per second answer with Supabase reasons', async () => {
  const other = await proxyWith({ FLUXBASE_REALTIME_MAX_CHANNELS_PER_CONNECTION: '2', FLUXBASE_REALTIME_MAX_EVENTS_PER_SECOND: '3' });
  try {
    const s = await raw(other.url);
    for (const [i, t] of ['a', 'b', 'c'].entries()) s.send([`${i}`, `${i}`, `realtime:${t}`, 'phx_join', { config: {} }]);
    assert.equal((await s.next((m) => m[1] === '1'))[4].status, 'ok');
    assert.equal((await s.next((m) => m[1] === '2'))[4].response.reason, 'ChannelRateLimitReached: Too many channels');
    for (let i = 0; i < 5; i++) s.send(['0', `e${i}`, 'realtime:a', 'presence', { type: 'presence', event: 'track', payload: { i } }]);
    const replies = [];
    for (let i = 0; i < 5; i++) replies.push(await s.next((m) => m[1] === `e${i}`));
    assert.deepEqual(replies.map((r) => r[4].status), ['ok', 'ok', 'ok', 'error', 'error']);
    assert.equal(replies[3][4].response.reason, 'MessagePerSecondRateLimitReached: Too many messages per second');
    s.close();
    const metrics = await (await fetch(`${other.url}/metrics`)).text();
    assert.match(metrics, /fluxbase_realtime_refused_total\{reason="event_rate"\} 2/);
    assert.match(metrics, /fluxbase_realtime_refused_total\{reason="channels"\} 1/);
  } finally {
    other.stop();
  }
});
