// Resumable uploads (TUS) at /storage/v1/upload/resumable, end to end with
// the real tus-js-client configured as Supabase's "Resumable Uploads" guide
// configures it (6 MB chunks, upload data during creation, Upload-Metadata
// bucketName/objectName/contentType/cacheControl/metadata, `x-upsert`): chunked
// uploads that download byte for byte through supabase-js, a resume after
// the proxy is killed mid-upload, upsert, RLS refusals (auth.uid() and
// storage.foldername(name)), size and MIME limits, protocol refusals in
// @tus/server's words, termination, expiry and the signed variant.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { existsSync, readdirSync } from 'node:fs';
import { storedVersions } from './storage_store.mjs';
import { join } from 'node:path';
import tus from 'tus-js-client';
import { createClient } from '@supabase/supabase-js';
import { env, eventually, sign, sql, ADA, GRACE } from './helpers.mjs';

const suffix = Math.random().toString(36).slice(2, 8);
const BUCKET = `tus-${suffix}`;
const LIMITED = `tus-lim-${suffix}`;
const root = process.env.FLUXBASE_STORAGE_ROOT;
const staged = join(root, '.tus');
const MB = 1 << 20;

const client = (key) => createClient(env.url, key, { auth: { persistSession: false, autoRefreshToken: false } });
const userKey = (sub) => sign({ role: 'authenticated', sub, session_id: sub });
const service = client(env.serviceKey);
const ada = client(userKey(ADA));

/** Staged files of one upload (by its URL), or of all uploads. */
const stagedFiles = (url) => {
  if (!existsSync(staged)) return [];
  const all = readdirSync(staged);
  if (!url) return all;
  const id = Buffer.from(url.split('/').pop(), 'base64url').toString().split('/').pop();
  return all.filter((f) => f.startsWith(id));
};

/** An upload with tus-js-client; resolves with the upload, rejects with tus' DetailedError. */
function upload(data, { key = userKey(ADA), base = env.url, bucket = BUCKET, name, contentType = 'application/octet-stream',
  cacheControl = '3600', metadata, upsert = false, chunkSize = 6 * MB, signed, uploadUrl, onProgress, onChunkComplete,
  started } = {}) {
  return new Promise((resolve, reject) => {
    const headers = { apikey: env.anonKey, 'x-upsert': upsert ? 'true' : 'false' };
    if (signed) headers['x-signature'] = signed;
    else headers.authorization = `Bearer ${key}`;
    const meta = { bucketName: bucket, objectName: name, contentType, cacheControl };
    if (metadata) meta.metadata = JSON.stringify(metadata);
    const up = new tus.Upload(data, {
      endpoint: `${base}/storage/v1/upload/resumable${signed ? '/sign' : ''}`,
      uploadUrl,
      retryDelays: null,
      headers,
      uploadDataDuringCreation: true,
      removeFingerprintOnSuccess: true,
      metadata: meta,
      chunkSize,
      onProgress: (sent, total) => onProgress?.(sent, total, up),
      onChunkComplete: (chunk, accepted, total) => onChunkComplete?.(chunk, accepted, total, up),
      onError: reject,
      onSuccess: () => resolve(up),
    });
    started?.(up);
    up.start();
  });
}

/** The HTTP status and body of a tus-js-client error. */
const refusal = (err) => ({ status: err.originalResponse?.getStatus(), body: err.originalResponse?.getBody() });

const bytesOf = async (blob) => Buffer.from(await blob.arrayBuffer());

/** Raw TUS requests, for what tus-js-client never sends. */
const tusHeaders = (extra = {}) => ({
  apikey: env.anonKey,
  authorization: `Bearer ${userKey(ADA)}`,
  'tus-resumable': '1.0.0',
  ...extra,
});
const metadataHeader = (fields) =>
  Object.entries(fields).map(([k, v]) => `${k} ${Buffer.from(v).toString('base64')}`).join(',');
async function create(name, length, { base = env.url, body, headers = {} } = {}) {
  const extra = { 'upload-length': String(length), 'upload-metadata': metadataHeader({ bucketName: BUCKET, objectName: name, contentType: 'text/plain' }), ...headers };
  if (body !== undefined) extra['content-type'] = 'application/offset+octet-stream';
  for (const [k, v] of Object.entries(extra)) if (v === undefined) delete extra[k];
  return fetch(`${base}/storage/v1/upload/resumable`, { method: 'POST', headers: tusHeaders(extra), body });
}
const patch = (url, offset, body, headers = {}) =>
  fetch(url, {
    method: 'PATCH',
    headers: tusHeaders({ 'upload-offset': String(offset), 'content-type': 'application/offset+octet-stream', ...headers }),
    body,
  });
const head = (url) => fetch(url, { method: 'HEAD', headers: tusHeaders() });

async function freePort() {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address();
      probe.close(() => resolve(port));
    });
  });
}

/** A proxy of our own on `port` (sharing the database and the storage root). */
async function startProxy(port, overrides = {}) {
  const child = spawn(process.env.FLUXBASE_BIN, ['serve'], {
    env: { ...process.env, FLUXBASE_SERVER_LISTEN: `127.0.0.1:${port}`, ...overrides },
    stdio: 'inherit',
  });
  let exited = null;
  child.on('exit', (code, signal) => { exited = code ?? signal; });
  const base = `http://127.0.0.1:${port}`;
  const ready = await eventually(async () => exited !== null || (await fetch(`${base}/ready`).catch(() => ({ ok: false }))).ok, 10000);
  assert.ok(ready && exited === null, `the proxy on ${base} did not become ready (${exited})`);
  const gone = new Promise((resolve) => child.on('exit', resolve));
  return { base, kill: (sig = 'SIGTERM') => { child.kill(sig); return gone; } };
}

test.before(async () => {
  sql(`
    set client_min_messages = warning;
    drop policy if exists e2e_tus_select on storage.objects;
    drop policy if exists e2e_tus_insert on storage.objects;
    drop policy if exists e2e_tus_update on storage.objects;
    drop policy if exists e2e_tus_delete on storage.objects;
    create policy e2e_tus_select on storage.objects for select to authenticated
      using (bucket_id like 'tus-%' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy e2e_tus_insert on storage.objects for insert to authenticated
      with check (bucket_id like 'tus-%' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy e2e_tus_update on storage.objects for update to authenticated
      using (bucket_id like 'tus-%' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy e2e_tus_delete on storage.objects for delete to authenticated
      using (bucket_id like 'tus-%' and (storage.foldername(name))[1] = auth.uid()::text);
  `);
  assert.equal((await service.storage.createBucket(BUCKET)).error, null);
  const r = await service.storage.createBucket(LIMITED, { fileSizeLimit: '1KB', allowedMimeTypes: ['image/*'] });
  assert.equal(r.error, null, r.error?.message);
});

test.after(() => {
  sql(`
    drop policy if exists e2e_tus_select on storage.objects;
    drop policy if exists e2e_tus_insert on storage.objects;
    drop policy if exists e2e_tus_update on storage.objects;
    drop policy if exists e2e_tus_delete on storage.objects;
  `);
});

test('a 15 MB file in 6 MB chunks, as Supabase\'s guide uploads it, downloads byte for byte', async () => {
  const data = randomBytes(15 * MB);
  const name = `${ADA}/videos/big.bin`;
  const chunks = [];
  const up = await upload(data, { name, metadata: { kind: 'video' }, onChunkComplete: (size) => chunks.push(size) });
  assert.deepEqual(chunks, [6 * MB, 6 * MB, 3 * MB], 'three requests, the first one the creation');
  assert.match(up.url, /\/storage\/v1\/upload\/resumable\/[A-Za-z0-9_-]+$/);
  assert.equal(Buffer.from(up.url.split('/').pop(), 'base64url').toString().replace(/\/[0-9a-f-]{36}$/, ''), `${BUCKET}/${name}`,
    'the id is base64url of bucket/name/version, as storage-api makes it');

  const down = await ada.storage.from(BUCKET).download(name);
  assert.equal(down.error, null, down.error?.message);
  assert.ok((await bytesOf(down.data)).equals(data), 'the same bytes');
  const row = sql(`select owner_id || ' ' || (metadata->>'size') || ' ' || (metadata->>'cacheControl') || ' ' ||
    (metadata->>'mimetype') || ' ' || (user_metadata->>'kind') from storage.objects where bucket_id = '${BUCKET}' and name = '${name}'`);
  assert.equal(row, `${ADA} ${15 * MB} max-age=3600 application/octet-stream video`);
  assert.deepEqual(stagedFiles(up.url), [], 'nothing stays staged');
  // Finished: its URL is gone.
  assert.equal((await head(up.url)).status, 404);
});

test('policies decide at creation, on every request, and at completion', async () => {
  const before = stagedFiles().length;
  // Grace may not write in Ada's folder; the anon key nowhere.
  for (const key of [userKey(GRACE), env.anonKey]) {
    const err = await upload(Buffer.from('intruder'), { key, name: `${ADA}/evil.txt` }).then(() => null, (e) => e);
    assert.ok(err, 'refused');
    assert.equal(refusal(err).status, 403);
    assert.match(refusal(err).body, /row-level security/);
  }
  assert.equal(stagedFiles().length, before, 'a refused creation stages nothing');

  // Ada starts an upload; Grace cannot continue it with its URL.
  let res = await create(`${ADA}/shared.txt`, 10, { body: 'hello' });
  assert.equal(res.status, 201);
  const url = res.headers.get('location');
  res = await fetch(url, {
    method: 'PATCH',
    headers: { ...tusHeaders({ 'upload-offset': '5', 'content-type': 'application/offset+octet-stream' }), authorization: `Bearer ${userKey(GRACE)}` },
    body: 'world',
  });
  assert.equal(res.status, 403);
  assert.equal(res.headers.get('upload-offset'), null);

  // The path is taken meanwhile: refused before a byte is taken (409),
  // and with x-upsert the same request completes the upload.
  assert.equal((await service.storage.from(BUCKET).upload(`${ADA}/shared.txt`, 'first', { contentType: 'text/plain' })).error, null);
  res = await patch(url, 5, 'world');
  assert.equal(res.status, 409);
  assert.equal(await res.text(), 'The resource already exists');
  assert.equal((await head(url)).headers.get('upload-offset'), '5');
  res = await patch(url, 5, 'world', { 'x-upsert': 'true' });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('tus-complete'), '1');
  assert.equal(await (await ada.storage.from(BUCKET).download(`${ADA}/shared.txt`)).data.text(), 'helloworld');

  // A policy that only the finished row can fail (its size): the precheck
  // passes, the commit at completion is refused and no object is kept.
  sql(`create policy e2e_tus_tiny on storage.objects as restrictive for insert to authenticated
       with check (name not like '%/tiny/%' or coalesce((metadata->>'size')::bigint, 0) <= 5)`);
  try {
    res = await create(`${ADA}/tiny/x.txt`, 10, { body: '0123456789' });
    assert.equal(res.status, 403);
    assert.match(await res.text(), /row-level security/);
    assert.equal((await ada.storage.from(BUCKET).exists(`${ADA}/tiny/x.txt`)).data, false);
    assert.equal((await storedVersions(BUCKET, `${ADA}/tiny/x.txt`)).length, 0, 'no object file is left');
    res = await create(`${ADA}/tiny/y.txt`, 5, { body: '01234' });
    assert.equal(res.status, 201);
  } finally {
    sql('drop policy e2e_tus_tiny on storage.objects');
  }
});

test('upsert: a second upload to a path is refused without x-upsert and replaces with it', async () => {
  const name = `${ADA}/again.bin`;
  await upload(Buffer.from('version one'), { name });
  const err = await upload(Buffer.from('version two'), { name }).then(() => null, (e) => e);
  assert.equal(refusal(err).status, 409);
  assert.equal(refusal(err).body, 'The resource already exists');
  await upload(Buffer.from('version three'), { name, upsert: true });
  assert.equal(await (await ada.storage.from(BUCKET).download(name)).data.text(), 'version three');
  assert.equal((await storedVersions(BUCKET, name)).length, 1, 'the replaced version\'s file is removed');
});

test('an upload resumes from its offset after the proxy is killed mid-upload', async () => {
  const port = await freePort();
  let proxy = await startProxy(port);
  const data = randomBytes(8 * MB);
  const name = `${ADA}/resumed.bin`;
  let url;
  let killed = null;
  const err = await upload(data, {
    base: proxy.base,
    name,
    chunkSize: MB,
    started: (up) => { url = () => up.url; },
    onProgress: (sent) => {
      if (sent > 3.5 * MB && !killed) killed = proxy.kill('SIGKILL');
    },
  }).then(() => null, (e) => e);
  assert.ok(err, 'the upload broke off with the proxy');
  await killed;
  const uploadUrl = url();
  assert.ok(uploadUrl.startsWith(proxy.base));

  proxy = await startProxy(port);
  try {
    let res = await head(uploadUrl);
    assert.equal(res.status, 200);
    const offset = Number(res.headers.get('upload-offset'));
    assert.ok(offset >= 3 * MB && offset < 8 * MB, `resumes from what is on disk (${offset})`);
    assert.equal(res.headers.get('upload-length'), String(8 * MB));

    const firstAccepted = [];
    const up = await upload(data, {
      base: proxy.base,
      name,
      chunkSize: MB,
      uploadUrl,
      onChunkComplete: (_, accepted) => firstAccepted.push(accepted),
    });
    assert.equal(up.url, uploadUrl, 'the same upload, not a new one');
    assert.ok(firstAccepted[0] > offset, 'nothing before the offset was sent again');
    assert.ok(firstAccepted.length <= Math.ceil((8 * MB - offset) / MB));
    const down = await ada.storage.from(BUCKET).download(name);
    assert.ok((await bytesOf(down.data)).equals(data), 'the same bytes after the restart');
  } finally {
    await proxy.kill();
  }
});

test('limits: Upload-Length over the bucket\'s or the global limit, a MIME type the bucket refuses', async () => {
  let err = await upload(randomBytes(2048), { bucket: LIMITED, name: `${ADA}/big.png`, contentType: 'image/png' }).then(() => null, (e) => e);
  assert.equal(refusal(err).status, 413);
  assert.equal(refusal(err).body, 'Maximum size exceeded\n');
  err = await upload(Buffer.from('<p>'), { bucket: LIMITED, name: `${ADA}/page.html`, contentType: 'text/html' }).then(() => null, (e) => e);
  assert.equal(refusal(err).status, 415);
  assert.equal(refusal(err).body, 'mime type text/html is not supported');
  await upload(randomBytes(512), { bucket: LIMITED, name: `${ADA}/small.png`, contentType: 'image/png' });
  // The finished bytes are sniffed too: an executable called a PNG is refused.
  const elf = Buffer.concat([Buffer.from('7f454c4602010100000000000000000002003e00', 'hex'), Buffer.alloc(64)]);
  err = await upload(elf, { bucket: LIMITED, name: `${ADA}/cat.png`, contentType: 'image/png' }).then(() => null, (e) => e);
  assert.equal(refusal(err).status, 415);
  assert.equal(refusal(err).body, 'mime type application/x-executable is not supported');

  // 50 MiB is the global limit: refused before a byte is sent.
  let res = await create(`${ADA}/huge.bin`, 50 * MB + 1);
  assert.equal(res.status, 413);
  assert.equal(await res.text(), 'Maximum size exceeded\n');
  // More bytes than the upload's length.
  res = await create(`${ADA}/ten.txt`, 10);
  const url = res.headers.get('location');
  res = await patch(url, 0, 'twenty bytes, not 10');
  assert.equal(res.status, 413);
  assert.equal(await res.text(), "upload's size exceeded\n");
  assert.equal((await head(url)).headers.get('upload-offset'), '0', 'nothing of it was kept');
  res = await create(`${ADA}/none.txt`, 10, { headers: { 'upload-length': undefined } });
  assert.equal(res.status, 400);
  assert.equal(await res.text(), 'Upload-Length or Upload-Defer-Length header required\n');
});

test('protocol: offsets, headers and metadata as @tus/server answers them', async () => {
  let res = await fetch(`${env.url}/storage/v1/upload/resumable`, { method: 'OPTIONS' });
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('tus-version'), '1.0.0');
  assert.equal(res.headers.get('tus-extension'), 'creation,creation-with-upload,termination,expiration');
  assert.equal(res.headers.get('tus-max-size'), String(50 * MB));

  res = await create(`${ADA}/proto.txt`, 10);
  assert.equal(res.status, 201);
  assert.ok(res.headers.get('upload-expires'), 'an unfinished upload says when it expires');
  const url = res.headers.get('location');

  res = await patch(url, 5, 'world');
  assert.equal(res.status, 409);
  assert.equal(await res.text(), 'Upload-Offset conflict\n');
  res = await fetch(url, {
    method: 'PATCH',
    headers: { apikey: env.anonKey, authorization: `Bearer ${userKey(ADA)}`, 'upload-offset': '0', 'content-type': 'application/offset+octet-stream' },
    body: 'hello',
  });
  assert.equal(res.status, 412);
  assert.equal(await res.text(), 'Tus-Resumable Required\n');
  res = await patch(url, 0, 'hello', { 'content-type': 'text/plain' });
  assert.equal(res.status, 400);
  assert.equal(await res.text(), 'Invalid content-type\n');
  res = await fetch(url, { method: 'PATCH', headers: tusHeaders({ 'content-type': 'application/offset+octet-stream' }), body: 'hello' });
  assert.equal(res.status, 403);
  assert.equal(await res.text(), 'Upload-Offset header required\n');
  res = await patch(url, -1, 'hello');
  assert.equal(res.status, 400);
  assert.equal(await res.text(), 'Invalid upload-offset\n');

  res = await patch(url, 0, 'hello');
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('upload-offset'), '5');
  assert.equal(res.headers.get('tus-resumable'), '1.0.0');
  res = await head(url);
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('upload-offset'), '5');
  assert.equal(res.headers.get('upload-length'), '10');
  assert.equal(res.headers.get('cache-control'), 'no-store');
  assert.equal(res.headers.get('upload-metadata'), metadataHeader({ bucketName: BUCKET, objectName: `${ADA}/proto.txt`, contentType: 'text/plain' }));
  res = await patch(url, 5, 'world');
  assert.equal(res.status, 204);
  assert.equal(res.headers.get('upload-offset'), '10');
  const down = await ada.storage.from(BUCKET).download(`${ADA}/proto.txt`);
  assert.equal(await down.data.text(), 'helloworld');
  assert.equal(down.data.type, 'text/plain');

  const missing = Buffer.from(`${BUCKET}/${ADA}/none.txt/${crypto.randomUUID()}`).toString('base64url');
  res = await head(`${env.url}/storage/v1/upload/resumable/${missing}`);
  assert.equal(res.status, 404);
  res = await head(`${env.url}/storage/v1/upload/resumable/not-an-id`);
  assert.equal(res.status, 404);
  res = await create(`${ADA}/bad.txt`, 1, { headers: { 'upload-metadata': 'bucketName !!!' } });
  assert.equal(res.status, 400);
  assert.equal(await res.text(), 'Invalid upload-metadata\n');
  res = await create(`${ADA}/bad.txt`, 1, { headers: { 'upload-metadata': metadataHeader({ bucketName: `nope-${suffix}`, objectName: 'x' }) } });
  assert.equal(res.status, 404);
  assert.equal(await res.text(), 'Bucket not found');
  res = await create(`${ADA}/bad.txt`, 1, { headers: { 'upload-defer-length': '1', 'upload-length': undefined } });
  assert.equal(res.status, 501);
  assert.equal(await res.text(), 'creation-defer-length extension is not (yet) supported.\n');
});

test('termination: tus-js-client\'s abort(true) removes the upload and its bytes', async () => {
  const data = randomBytes(4 * MB);
  let url;
  let aborted;
  const err = await new Promise((resolve) => {
    upload(data, {
      name: `${ADA}/dropped.bin`,
      chunkSize: MB,
      onChunkComplete: (_, accepted, __, up) => {
        if (accepted >= MB && !aborted) {
          url = up.url;
          aborted = up.abort(true).then(() => resolve(null), resolve);
        }
      },
    }).then(() => resolve(new Error('the upload finished')), resolve);
  });
  assert.equal(err, null, err?.message);
  assert.equal((await head(url)).status, 404);
  assert.deepEqual(stagedFiles(url), []);
  assert.equal((await ada.storage.from(BUCKET).exists(`${ADA}/dropped.bin`)).data, false);

  // Someone else may not terminate Ada's upload; nobody may terminate a complete one.
  let res = await create(`${ADA}/keep.txt`, 4, { body: 'ke' });
  const keep = res.headers.get('location');
  res = await fetch(keep, { method: 'DELETE', headers: { ...tusHeaders(), authorization: `Bearer ${userKey(GRACE)}` } });
  assert.equal(res.status, 403);
  assert.equal((await head(keep)).headers.get('upload-offset'), '2');
  res = await fetch(keep, { method: 'DELETE', headers: tusHeaders() });
  assert.equal(res.status, 204);
  assert.equal((await head(keep)).status, 404);
});

test('expiry: an abandoned upload is refused (410) after storage.resumable_expiry_seconds and swept', async () => {
  const proxy = await startProxy(await freePort(), { FLUXBASE_STORAGE_RESUMABLE_EXPIRY_SECONDS: '2' });
  try {
    let res = await create(`${ADA}/abandoned.txt`, 10, { base: proxy.base, body: 'hello' });
    assert.equal(res.status, 201);
    const expires = Date.parse(res.headers.get('upload-expires'));
    assert.ok(expires - Date.now() < 3000 && expires - Date.now() > -1000, res.headers.get('upload-expires'));
    const url = res.headers.get('location');
    assert.equal(stagedFiles(url).length, 2);
    await new Promise((r) => setTimeout(r, 3500));
    res = await patch(url, 5, 'world');
    // Either still staged and refused as expired, or already swept.
    assert.ok([404, 410].includes(res.status), String(res.status));
    assert.ok(await eventually(() => stagedFiles(url).length === 0, 8000), 'the sweeper removed its files');
    assert.equal((await head(url)).status, 404);
    assert.equal((await ada.storage.from(BUCKET).exists(`${ADA}/abandoned.txt`)).data, false);
  } finally {
    await proxy.kill();
  }
});

test('signed: /upload/resumable/sign with x-signature from createSignedUploadUrl', async () => {
  const name = `${ADA}/signed.bin`;
  const { data: signedUrl, error } = await ada.storage.from(BUCKET).createSignedUploadUrl(name);
  assert.equal(error, null, error?.message);
  const data = randomBytes(3 * MB);
  const up = await upload(data, { name, signed: signedUrl.token, chunkSize: MB });
  assert.match(up.url, /\/storage\/v1\/upload\/resumable\/sign\/[A-Za-z0-9_-]+$/);
  const down = await ada.storage.from(BUCKET).download(name);
  assert.ok((await bytesOf(down.data)).equals(data));
  assert.equal(sql(`select owner_id from storage.objects where bucket_id = '${BUCKET}' and name = '${name}'`), ADA);

  // The token is for that path only, and works once.
  let err = await upload(data, { name: `${ADA}/other.bin`, signed: signedUrl.token }).then(() => null, (e) => e);
  assert.equal(refusal(err).status, 400);
  err = await upload(Buffer.from('again'), { name, signed: signedUrl.token }).then(() => null, (e) => e);
  assert.equal(refusal(err).status, 400);
  assert.match(refusal(err).body, /already used/);
  const res = await fetch(`${env.url}/storage/v1/upload/resumable/sign`, {
    method: 'POST',
    headers: { apikey: env.anonKey, 'tus-resumable': '1.0.0', 'upload-length': '1', 'upload-metadata': metadataHeader({ bucketName: BUCKET, objectName: name }) },
  });
  assert.equal(res.status, 400);
  assert.equal(await res.text(), 'Missing x-signature header');
});
