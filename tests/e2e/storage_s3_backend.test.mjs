// Storage on the S3 backend, checked from the S3 side: objects land under
// the configured prefix as `<bucket>/<name>/<version>`, replaced and removed
// versions go, an upload over the limit (after a multipart upload began)
// leaves no object and no open multipart upload, and one a killed proxy
// left open is aborted by the next proxy. scripts/test.sh runs this with a
// real S3-protocol server (moto's); on the local backend it is skipped.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import { env, proxyWith, sql } from './helpers.mjs';
import { onS3, s3, S3_BUCKET as BUCKET, S3_PREFIX as PREFIX, storedVersions as versions, openUploads } from './storage_store.mjs';
import { GetObjectCommand } from '@aws-sdk/client-s3';

const skip = onS3 ? false : 'runs on the S3 backend only (scripts/test.sh runs it so)';
const suffix = Math.random().toString(36).slice(2, 8);
const ON_S3 = `on-s3-${suffix}`;
const service = createClient(env.url, env.serviceKey, { auth: { persistSession: false, autoRefreshToken: false } });
const authHeaders = { apikey: env.anonKey, authorization: `Bearer ${env.serviceKey}` };

const version = (bucket, name) =>
  sql(`select version from storage.objects where bucket_id = '${bucket}' and name = '${name}'`);

test.before(async () => {
  if (!onS3) return;
  const { error } = await service.storage.createBucket(ON_S3, { public: false, fileSizeLimit: '10MB' });
  assert.equal(error, null);
});

test('objects are stored in the S3 bucket under the prefix, one key per live version', { skip }, async () => {
  const from = service.storage.from(ON_S3);
  let { error } = await from.upload('dir/a note.txt', 'first', { contentType: 'text/plain' });
  assert.equal(error, null);
  const first = version(ON_S3, 'dir/a note.txt');
  assert.deepEqual(await versions(ON_S3, 'dir/a note.txt'), [first]);
  const raw = await s3.send(new GetObjectCommand({ Bucket: BUCKET, Key: `${PREFIX}${ON_S3}/dir/a note.txt/${first}` }));
  assert.equal(await raw.Body.transformToString(), 'first');

  ({ error } = await from.upload('dir/a note.txt', 'second, longer', { contentType: 'text/plain', upsert: true }));
  assert.equal(error, null);
  const second = version(ON_S3, 'dir/a note.txt');
  assert.notEqual(second, first);
  assert.deepEqual(await versions(ON_S3, 'dir/a note.txt'), [second], 'the replaced version is deleted');

  ({ error } = await from.copy('dir/a note.txt', 'dir/copy.txt'));
  assert.equal(error, null);
  assert.deepEqual(await versions(ON_S3, 'dir/copy.txt'), [version(ON_S3, 'dir/copy.txt')]);
  const { data } = await from.download('dir/copy.txt');
  assert.equal(await data.text(), 'second, longer');

  ({ error } = await from.remove(['dir/a note.txt', 'dir/copy.txt']));
  assert.equal(error, null);
  assert.deepEqual(await versions(ON_S3, 'dir/a note.txt'), []);
  assert.deepEqual(await versions(ON_S3, 'dir/copy.txt'), []);
});

test('an upload over the limit after its first part went up leaves no object and no open upload', { skip }, async () => {
  // 12 MiB against the bucket's 10 MB: the first 8 MiB part is sent
  // before the limit is reached.
  // Streamed (chunked, no Content-Length), so the limit is met while reading.
  const body = new Uint8Array(12 << 20).map((_, i) => i % 251);
  const stream = new ReadableStream({
    start(c) {
      for (let at = 0; at < body.length; at += 1 << 20) c.enqueue(body.slice(at, at + (1 << 20)));
      c.close();
    },
  });
  const res = await fetch(`${env.url}/storage/v1/object/${ON_S3}/big/over.bin`, {
    method: 'POST', headers: { ...authHeaders, 'content-type': 'application/octet-stream' },
    body: stream, duplex: 'half',
  });
  assert.equal((await res.json()).statusCode, '413');
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${ON_S3}' and name = 'big/over.bin'`), '0');
  assert.deepEqual(await versions(ON_S3, 'big/over.bin'), []);
  assert.deepEqual(await openUploads(ON_S3), []);

  // Just under the limit: three parts' worth of upload, stored whole.
  const fits = body.subarray(0, 9 << 20);
  const ok = await fetch(`${env.url}/storage/v1/object/${ON_S3}/big/fits.bin`, {
    method: 'POST', headers: { ...authHeaders, 'content-type': 'application/octet-stream' }, body: fits,
  });
  assert.equal(ok.status, 200, await ok.clone().text());
  const back = new Uint8Array(await (await service.storage.from(ON_S3).download('big/fits.bin')).data.arrayBuffer());
  assert.equal(back.length, fits.length);
  assert.ok(Buffer.from(back).equals(Buffer.from(fits)), 'the bytes come back as sent');
  const ranged = await fetch(`${env.url}/storage/v1/object/${ON_S3}/big/fits.bin`, {
    headers: { ...authHeaders, range: `bytes=${(8 << 20) - 2}-${(8 << 20) + 1}` },
  });
  assert.equal(ranged.status, 206);
  assert.deepEqual([...new Uint8Array(await ranged.arrayBuffer())], [...fits.subarray((8 << 20) - 2, (8 << 20) + 2)]);
  assert.deepEqual(await openUploads(ON_S3), []);
  await service.storage.from(ON_S3).remove(['big/fits.bin']);
});

test('a multipart upload a killed proxy left open is aborted by the next proxy', { skip }, async () => {
  const first = await proxyWith({});
  let push;
  const body = new ReadableStream({ start(c) { push = c; c.enqueue(new Uint8Array(9 << 20)); } });
  const upload = fetch(`${first.url}/storage/v1/object/${ON_S3}/crash/half.bin`, {
    method: 'POST', headers: { ...authHeaders, 'content-type': 'application/octet-stream' }, body, duplex: 'half',
  }).catch((e) => e);
  let open = [];
  for (let i = 0; i < 100 && open.length === 0; i++) {
    open = await openUploads(ON_S3);
    if (open.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(open.length, 1, 'a multipart upload is open');
  assert.ok(open[0].startsWith(`${PREFIX}${ON_S3}/crash/half.bin/`), open[0]);
  process.kill(first.pid, 'SIGKILL');
  push.error(new Error('gone'));
  await upload;
  assert.equal((await openUploads(ON_S3)).length, 1, 'the crash left the upload open');
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${ON_S3}' and name = 'crash/half.bin'`), '0');

  // No upload outlives the request timeout: with 1 s, one open for more
  // than 2 s (1 s more for clock skew) is a dead proxy's. (moto lists
  // every upload as started in 2010, so there the wait is not needed.)
  await new Promise((r) => setTimeout(r, 2500));
  const second = await proxyWith({ FLUXBASE_STORAGE_REQUEST_TIMEOUT_MS: '1000' });
  try {
    await fetch(`${second.url}/storage/v1/bucket/${ON_S3}`, { headers: authHeaders }).then((r) => r.text());
    let left = open;
    for (let i = 0; i < 50 && left.length > 0; i++) {
      await new Promise((r) => setTimeout(r, 100));
      left = await openUploads(ON_S3);
    }
    assert.deepEqual(left, [], 'the next proxy aborted the orphaned upload');
    assert.deepEqual(await versions(ON_S3, 'crash/half.bin'), []);
  } finally {
    second.stop();
  }
});

test.after(async () => {
  if (!onS3) return;
  await service.storage.emptyBucket(ON_S3);
  await service.storage.deleteBucket(ON_S3);
});
