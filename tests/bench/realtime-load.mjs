// Load generator of tests/bench/realtime.sh: raw Phoenix vsn 2.0.0 frames
// over Node's WebSocket (what realtime-js sends, without its per-message
// overhead on this side). Prints one JSON line of results.
//   node realtime-load.mjs URL KEY PROXY_PID
const [url, key, pid] = process.argv.slice(2);
const ws = (u) => `${u.replace('http', 'ws')}/realtime/v1/websocket?apikey=${key}&vsn=2.0.0`;
import { readFileSync } from 'node:fs';

const rss = () => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))[1]) * 1024;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const now = () => Number(process.hrtime.bigint() / 1000n) / 1000; // ms

/** A socket joined to `topic`; `onBroadcast(payload)` for each broadcast. */
async function member(topic, onBroadcast = () => {}, self = false) {
  const s = new WebSocket(ws(url));
  await new Promise((resolve, reject) => { s.onopen = resolve; s.onerror = reject; });
  const joined = new Promise((resolve) => {
    s.onmessage = (e) => {
      const m = JSON.parse(e.data);
      if (m[3] === 'phx_reply' && m[1] === 'j') resolve();
      else if (m[3] === 'broadcast') onBroadcast(m[4].payload);
    };
  });
  s.send(JSON.stringify(['j', 'j', `realtime:${topic}`, 'phx_join',
    { config: { broadcast: { self }, presence: { enabled: false }, private: false } }]));
  await joined;
  return s;
}
const broadcast = (s, topic, payload) =>
  s.send(JSON.stringify([null, null, `realtime:${topic}`, 'broadcast', { type: 'broadcast', event: 'b', payload }]));
const quantile = (xs, q) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(q * s.length))]; };

const out = {};
// 1. Idle sockets: memory per joined socket.
const before = rss();
const idle = [];
for (let i = 0; i < 1000; i++) idle.push(await member('fanout'));
await sleep(500);
out.rss_per_idle_socket_bytes = Math.round((rss() - before) / 1000);

// 2. Fan-out: one message to the 1,000 sockets, send-to-receive latency.
const latencies = [];
for (const s of idle) s.onmessage = (e) => { const m = JSON.parse(e.data); if (m[3] === 'broadcast') latencies.push(now() - m[4].payload.t); };
const sender = await member('fanout');
for (let i = 0; i < 50; i++) {
  broadcast(sender, 'fanout', { t: now() });
  await sleep(40);
}
await sleep(1000);
out.fanout_deliveries = latencies.length;
out.fanout_p50_ms = +quantile(latencies, 0.5).toFixed(2);
out.fanout_p95_ms = +quantile(latencies, 0.95).toFixed(2);
for (const s of [...idle, sender]) s.close();
await sleep(500);

// 3. 100 senders × 100 receivers on one topic: deliveries per second.
let delivered = 0;
const receivers = [];
for (let i = 0; i < 100; i++) receivers.push(await member('busy', () => { delivered++; }));
const senders = [];
for (let i = 0; i < 100; i++) senders.push(await member('busy'));
const seconds = 5;
const start = now();
let sent = 0;
while (now() - start < seconds * 1000) {
  for (const s of senders) { broadcast(s, 'busy', { n: sent }); sent++; }
  await sleep(20);
}
await sleep(1000);
out.busy_sent = sent;
out.busy_delivered = delivered;
out.busy_delivered_per_s = Math.round(delivered / seconds);
out.busy_delivery_ratio = +(delivered / (sent * 100)).toFixed(3);
for (const s of [...receivers, ...senders]) s.close();
console.log(JSON.stringify(out));
process.exit(0);
