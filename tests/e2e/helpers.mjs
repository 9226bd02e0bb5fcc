// Shared helpers for the end-to-end tests: environment, token signing.
import { createHmac } from 'node:crypto';
import { execSync, spawn } from 'node:child_process';
import { createServer } from 'node:net';

export const env = {
  url: need('FLUXBASE_URL'),
  anonKey: need('FLUXBASE_ANON_KEY'),
  serviceKey: need('FLUXBASE_SERVICE_KEY'),
  publishableKey: need('FLUXBASE_PUBLISHABLE_KEY'),
  secretKey: need('FLUXBASE_SECRET_KEY'),
  jwtSecret: need('FLUXBASE_JWT_SECRET'),
  pgRestart: process.env.FLUXBASE_PG_RESTART,
  psql: process.env.FLUXBASE_PSQL,
};

/** Runs SQL as the superuser on the test database; returns psql's unaligned output. */
export function sql(text) {
  if (!env.psql) throw new Error('FLUXBASE_PSQL must be set (scripts/test.sh sets it)');
  return execSync(env.psql, { input: text, encoding: 'utf8' }).trim();
}

/** Polls `check` until it returns true, for at most `ms`. */
export async function eventually(check, ms = 5000) {
  const until = Date.now() + ms;
  for (;;) {
    if (await check()) return true;
    if (Date.now() > until) return false;
    await new Promise((r) => setTimeout(r, 100));
  }
}

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} must be set (tests/run-e2e.sh sets it)`);
  return v;
}

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/** An HS256 JWT, as Supabase Auth would issue it. */
export function sign(claims, secret = env.jwtSecret, header = { alg: 'HS256', typ: 'JWT' }) {
  const now = Math.floor(Date.now() / 1000);
  const body = { iat: now, exp: now + 3600, ...claims };
  const unsigned = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(body))}`;
  const sig = createHmac('sha256', secret).update(unsigned).digest();
  return `${unsigned}.${b64url(sig)}`;
}

export const ADA = '5a0e4f3c-1b6f-4c57-9f0e-6b1d7f2f1a01';
export const GRACE = '9c4b7d2e-8a31-4f0d-b6a5-3e2c1d0f9b02';

/** A second proxy with `overrides` in its environment, on a free port. */
export async function proxyWith(overrides) {
  const port = await new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
  const child = spawn(process.env.FLUXBASE_BIN, ['serve'], {
    env: { ...process.env, FLUXBASE_SERVER_LISTEN: `127.0.0.1:${port}`, ...overrides },
    stdio: 'inherit',
  });
  const url = `http://127.0.0.1:${port}`;
  let exited = null;
  child.on('exit', (code) => { exited = code; });
  const ready = await eventually(
    async () => exited !== null || (await fetch(`${url}/ready`).catch(() => ({ ok: false }))).ok,
    10000,
  );
  if (!ready || exited !== null) {
    child.kill('SIGTERM');
    throw new Error(`the proxy on ${url} did not become ready (exit code ${exited})`);
  }
  return { url, pid: child.pid, stop: () => child.kill('SIGTERM') };
}
