// Load generator of tests/bench/realtime.sh, Postgres changes: SOCKETS raw
// Phoenix vsn 2.0.0 sockets, each joined to one channel with a
// postgres_changes binding (INSERT on TABLE) as one of USERS users
// (role authenticated, sub 00000000-0000-4000-8000-<user>), tokens signed
// with SECRET. Prints `READY` once every channel is subscribed, then counts
// deliveries and their commit-to-client latency (now − commit_timestamp)
// until no change arrived for IDLE_S (3) s after the first one (or MAX_S
// passed), and
// prints one JSON line.
//   node realtime-changes-load.mjs URL ANON_KEY SECRET TABLE SOCKETS USERS MAX_S [IDLE_S]
import { createHmac } from 'node:crypto';

const [url, key, secret, table, sockets, users, maxS, idleS = '3'] = process.argv.slice(2);
const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
const sign = (claims) => {
  const unsigned = `${b64({ alg: 'HS256', typ: 'JWT' })}.${b64({ exp: Math.floor(Date.now() / 1000) + 3600, ...claims })}`;
  return `${unsigned}.${createHmac('sha256', secret).update(unsigned).digest('base64url')}`;
};
const userId = (i) => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`;

let delivered = 0;
let first = 0;
let last = 0;
const latencies = [];
const owners = new Map();
let wrongOwner = 0;

async function subscriber(i) {
  const user = i % Number(users);
  const token = sign({ role: 'authenticated', sub: userId(user) });
  const s = new WebSocket(`${url.replace('http', 'ws')}/realtime/v1/websocket?apikey=${key}&vsn=2.0.0`);
  await new Promise((resolve, reject) => { s.onopen = resolve; s.onerror = reject; });
  const joined = new Promise((resolve, reject) => {
    s.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m[3] === 'phx_reply' && m[1] === 'j') {
        if (m[4].status === 'ok') resolve(); else reject(new Error(JSON.stringify(m[4])));
      } else if (m[3] === 'postgres_changes') {
        const t = Date.now();
        const d = m[4].data;
        if (!first) first = t;
        last = t;
        delivered++;
        latencies.push(t - Date.parse(d.commit_timestamp));
        if (d.record.owner !== userId(user)) wrongOwner++;
      }
    };
  });
  s.send(JSON.stringify(['j', 'j', `realtime:changes-${i}`, 'phx_join', {
    config: { broadcast: { self: false }, presence: { enabled: false }, private: false,
      postgres_changes: [{ event: 'INSERT', schema: 'public', table }] },
    access_token: token,
  }]));
  await joined;
  setInterval(() => s.send(JSON.stringify([null, 'h', 'phoenix', 'heartbeat', {}])), 20000);
  owners.set(i, user);
  return s;
}

for (let i = 0; i < Number(sockets); i++) await subscriber(i);
console.log('READY');
const started = Date.now();
await new Promise((resolve) => {
  const tick = setInterval(() => {
    const idle = first && Date.now() - last > Number(idleS) * 1000;
    if (idle || Date.now() - started > Number(maxS) * 1000) {
      clearInterval(tick);
      resolve();
    }
  }, 200);
});
const q = (p) => { const s = [...latencies].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))] ?? null; };
console.log(JSON.stringify({
  delivered,
  seconds: +((last - first) / 1000).toFixed(2),
  per_s: last > first ? Math.round(delivered / ((last - first) / 1000)) : 0,
  p50_ms: q(0.5),
  p95_ms: q(0.95),
  wrong_owner: wrongOwner,
}));
process.exit(0);
