// Storage, end to end, with supabase-js's storage client: buckets and
// their limits, uploads (multipart and raw), downloads (ranges, HEAD,
// `download`), listing, move/copy/remove, signed and public URLs, signed
// upload URLs (once), RLS policies written as Supabase users write them
// (auth.uid() and storage.foldername(name)), bad input, and a 1 GiB object
// through a proxy whose memory must stay flat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createClient } from '@supabase/supabase-js';
import { env, proxyWith, sign, sql, ADA, GRACE } from './helpers.mjs';
import { onS3, root, storeVisible, storedVersions, openUploads } from './storage_store.mjs';

const suffix = Math.random().toString(36).slice(2, 8);
const PRIVATE = `docs-${suffix}`;
const PUBLIC = `public-${suffix}`;
const LIMITED = `limited-${suffix}`;

const client = (key, url = env.url) =>
  createClient(url, key, { auth: { persistSession: false, autoRefreshToken: false } });
const service = client(env.serviceKey);
const anon = client(env.anonKey);
const userKey = (sub) => sign({ role: 'authenticated', sub, session_id: sub });
const ada = client(userKey(ADA));
const grace = client(userKey(GRACE));
const storageUrl = `${env.url}/storage/v1`;
const authHeaders = (key) => ({ apikey: env.anonKey, authorization: `Bearer ${key}` });

/** The versions stored for one object, on either backend (storage_store.mjs). */
const storedCount = async (bucket, name) => (await storedVersions(bucket, name)).length;

test.before(() => {
  // Each user reads and writes only below a folder named after their id.
  sql(`
    set client_min_messages = warning;
    drop policy if exists e2e_storage_own_select on storage.objects;
    drop policy if exists e2e_storage_own_insert on storage.objects;
    drop policy if exists e2e_storage_own_update on storage.objects;
    drop policy if exists e2e_storage_own_delete on storage.objects;
    create policy e2e_storage_own_select on storage.objects for select to authenticated
      using (bucket_id like 'docs-%' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy e2e_storage_own_insert on storage.objects for insert to authenticated
      with check (bucket_id like 'docs-%' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy e2e_storage_own_update on storage.objects for update to authenticated
      using (bucket_id like 'docs-%' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy e2e_storage_own_delete on storage.objects for delete to authenticated
      using (bucket_id like 'docs-%' and (storage.foldername(name))[1] = auth.uid()::text);
  `);
});

test.after(() => {
  sql(`
    drop policy if exists e2e_storage_own_select on storage.objects;
    drop policy if exists e2e_storage_own_insert on storage.objects;
    drop policy if exists e2e_storage_own_update on storage.objects;
    drop policy if exists e2e_storage_own_delete on storage.objects;
  `);
});

test('buckets: create, list, get, update, with Supabase\'s answers and errors', async () => {
  let r = await service.storage.createBucket(PRIVATE);
  assert.equal(r.error, null, r.error?.message);
  assert.deepEqual(r.data, { name: PRIVATE });
  r = await service.storage.createBucket(PUBLIC, { public: true });
  assert.equal(r.error, null);
  r = await service.storage.createBucket(LIMITED, { fileSizeLimit: '1KB', allowedMimeTypes: ['image/*', 'text/plain'] });
  assert.equal(r.error, null, r.error?.message);

  const again = await service.storage.createBucket(PRIVATE);
  assert.equal(again.error.statusCode, '409');
  assert.equal(again.error.message, 'The resource already exists');
  assert.equal(again.error.status, 400, 'storage-api answers HTTP 400 with the real status in the body');

  const bad = await service.storage.createBucket('no/slashes');
  assert.equal(bad.error.statusCode, '400');
  assert.equal(bad.error.message, 'Bucket name invalid');
  const badSize = await service.storage.createBucket(`x-${suffix}`, { fileSizeLimit: 'ten megabytes' });
  assert.match(badSize.error.message, /Invalid file size format/);

  const { data: list } = await service.storage.listBuckets();
  const limited = list.find((b) => b.id === LIMITED);
  assert.equal(limited.file_size_limit, 1024);
  assert.deepEqual(limited.allowed_mime_types, ['image/*', 'text/plain']);
  assert.equal(limited.public, false);

  const { data: got } = await service.storage.getBucket(PUBLIC);
  assert.equal(got.public, true);
  const missing = await service.storage.getBucket(`missing-${suffix}`);
  assert.equal(missing.error.statusCode, '404');
  assert.equal(missing.error.message, 'Bucket not found');

  r = await service.storage.updateBucket(LIMITED, { public: false, fileSizeLimit: 2048, allowedMimeTypes: ['image/*', 'text/plain'] });
  assert.equal(r.error, null, r.error?.message);
  assert.equal(r.data.message, 'Successfully updated');
  assert.equal((await service.storage.getBucket(LIMITED)).data.file_size_limit, 2048);

  // No policy on storage.buckets: the anon key sees none of them.
  const { data: anonList } = await anon.storage.listBuckets();
  assert.deepEqual(anonList, []);
});

test('uploads and downloads under RLS: a user owns the folder named after them', async () => {
  const files = ada.storage.from(PRIVATE);
  const up = await files.upload(`${ADA}/notes/hello.txt`, new Blob(['hello storage'], { type: 'text/plain' }), {
    metadata: { topic: 'greeting' },
  });
  assert.equal(up.error, null, up.error?.message);
  assert.equal(up.data.fullPath, `${PRIVATE}/${ADA}/notes/hello.txt`);
  assert.match(up.data.id, /^[0-9a-f-]{36}$/);

  const down = await files.download(`${ADA}/notes/hello.txt`);
  assert.equal(down.error, null);
  assert.equal(await down.data.text(), 'hello storage');
  assert.equal(down.data.type, 'text/plain');

  const info = await files.info(`${ADA}/notes/hello.txt`);
  assert.equal(info.error, null, info.error?.message);
  assert.equal(info.data.size, 13);
  assert.equal(info.data.contentType, 'text/plain');
  assert.deepEqual(info.data.metadata, { topic: 'greeting' });
  assert.equal((await files.exists(`${ADA}/notes/hello.txt`)).data, true);
  assert.equal((await files.exists(`${ADA}/notes/nothing.txt`)).data, false);

  const row = sql(`select owner_id || ' ' || (metadata->>'size') from storage.objects where bucket_id = '${PRIVATE}' and name = '${ADA}/notes/hello.txt'`);
  assert.equal(row, `${ADA} 13`);

  // Grace: not her folder, so neither reading nor writing.
  const theirs = await grace.storage.from(PRIVATE).download(`${ADA}/notes/hello.txt`);
  assert.ok(theirs.error);
  const info2 = await grace.storage.from(PRIVATE).info(`${ADA}/notes/hello.txt`);
  assert.equal(info2.error.statusCode, '404');
  assert.equal(info2.error.message, 'Object not found');
  const intrude = await grace.storage.from(PRIVATE).upload(`${ADA}/notes/evil.txt`, new Blob(['x']));
  assert.equal(intrude.error.statusCode, '403');
  assert.match(intrude.error.message, /row-level security/);
  if (storeVisible) assert.equal(await storedCount(PRIVATE, `${ADA}/notes/evil.txt`), 0, 'a refused upload leaves no file');
  const own = await grace.storage.from(PRIVATE).upload(`${GRACE}/mine.txt`, 'raw body text', { contentType: 'text/plain' });
  assert.equal(own.error, null, own.error?.message);
  // The anon key: nothing.
  assert.ok((await anon.storage.from(PRIVATE).download(`${ADA}/notes/hello.txt`)).error);
});

test('upsert: refused without it, replaces with it, the old version\'s file is removed', async () => {
  const files = ada.storage.from(PRIVATE);
  const path = `${ADA}/replace.txt`;
  assert.equal((await files.upload(path, 'one', { contentType: 'text/plain' })).error, null);
  const dup = await files.upload(path, 'two', { contentType: 'text/plain' });
  assert.equal(dup.error.statusCode, '409');
  assert.equal(dup.error.message, 'The resource already exists');
  const up = await files.upload(path, 'two!', { contentType: 'text/plain', upsert: true });
  assert.equal(up.error, null, up.error?.message);
  assert.equal(await (await files.download(path)).data.text(), 'two!');
  const upd = await files.update(path, 'three', { contentType: 'text/plain' });
  assert.equal(upd.error, null, upd.error?.message);
  assert.equal(await (await files.download(path)).data.text(), 'three');
  if (storeVisible) assert.equal(await storedCount(PRIVATE, path), 1, 'one version on disk');
  const missing = await files.update(`${ADA}/never.txt`, 'x', { contentType: 'text/plain' });
  assert.equal(missing.error.statusCode, '404');
});

test('ranges, HEAD, cache headers and the download parameter', async () => {
  const files = ada.storage.from(PRIVATE);
  const path = `${ADA}/alphabet.txt`;
  await files.upload(path, 'abcdefghijklmnopqrstuvwxyz', { contentType: 'text/plain', cacheControl: '60' });
  const url = `${storageUrl}/object/${PRIVATE}/${path}`;
  let res = await fetch(url, { headers: { ...authHeaders(userKey(ADA)), range: 'bytes=2-5' } });
  assert.equal(res.status, 206);
  assert.equal(res.headers.get('content-range'), 'bytes 2-5/26');
  assert.equal(await res.text(), 'cdef');
  res = await fetch(url, { headers: { ...authHeaders(userKey(ADA)), range: 'bytes=-3' } });
  assert.equal(await res.text(), 'xyz');
  res = await fetch(url, { headers: { ...authHeaders(userKey(ADA)), range: 'bytes=40-' } });
  assert.equal(res.status, 416);
  assert.equal(res.headers.get('content-range'), 'bytes */26');
  res = await fetch(url, { method: 'HEAD', headers: authHeaders(userKey(ADA)) });
  assert.equal(res.status, 200);
  assert.equal(res.headers.get('content-length'), '26');
  assert.equal(res.headers.get('cache-control'), 'max-age=60');
  assert.ok(res.headers.get('etag'));
  assert.ok(res.headers.get('last-modified'));
  res = await fetch(`${url}?download=letters.txt`, { headers: authHeaders(userKey(ADA)) });
  assert.match(res.headers.get('content-disposition'), /^attachment; filename="letters.txt"/);
  await res.arrayBuffer();
});

test('list: one level at a time, folders first, with limit, offset, sort and search', async () => {
  const files = service.storage.from(PRIVATE);
  for (const name of ['b.txt', 'a.txt', 'c.md', 'sub/deep.txt']) {
    const r = await files.upload(`lists/${name}`, name, { contentType: 'text/plain' });
    assert.equal(r.error, null, r.error?.message);
  }
  let { data, error } = await files.list('lists');
  assert.equal(error, null, error?.message);
  assert.deepEqual(data.map((o) => o.name), ['sub', 'a.txt', 'b.txt', 'c.md']);
  assert.equal(data[0].id, null, 'a folder has no id');
  assert.equal(data[1].metadata.size, 5);
  ({ data } = await files.list('lists', { limit: 2, offset: 1 }));
  assert.deepEqual(data.map((o) => o.name), ['a.txt', 'b.txt']);
  ({ data } = await files.list('lists', { sortBy: { column: 'name', order: 'desc' } }));
  assert.deepEqual(data.map((o) => o.name), ['sub', 'c.md', 'b.txt', 'a.txt']);
  ({ data } = await files.list('lists', { search: 'c' }));
  assert.deepEqual(data.map((o) => o.name), ['c.md']);
  ({ data } = await files.list('lists/sub'));
  assert.deepEqual(data.map((o) => o.name), ['deep.txt']);
  // Ada's policies hide other people's files from her listing.
  ({ data } = await ada.storage.from(PRIVATE).list('lists'));
  assert.deepEqual(data, []);
});

test('list v2: flat or by folder, paged by cursor, sorted, under the caller\'s policies', async () => {
  const files = service.storage.from(PRIVATE);
  for (const name of ['b.txt', 'a.txt', 'c.md', 'sub/deep.txt', 'sub/deeper/x.txt', 'zz/one.txt']) {
    const r = await files.upload(`lists2/${name}`, name, { contentType: 'text/plain' });
    assert.equal(r.error, null, r.error?.message);
  }
  // Flat: every key under the prefix, full paths, in byte order.
  let { data, error } = await files.listV2({ prefix: 'lists2/' });
  assert.equal(error, null, error?.message);
  assert.deepEqual(data.objects.map((o) => o.name),
    ['lists2/a.txt', 'lists2/b.txt', 'lists2/c.md', 'lists2/sub/deep.txt', 'lists2/sub/deeper/x.txt', 'lists2/zz/one.txt']);
  assert.deepEqual(data.folders, []);
  assert.equal(data.hasNext, false);
  assert.equal(data.nextCursor, undefined);
  assert.equal(data.objects[0].metadata.size, 5);
  assert.ok(data.objects[0].id && data.objects[0].version && data.objects[0].created_at);
  // By folder: sub-folders as common prefixes, objects directly under it.
  ({ data } = await files.listV2({ prefix: 'lists2/', with_delimiter: true }));
  assert.deepEqual(data.folders.map((f) => f.name), ['lists2/sub/', 'lists2/zz/']);
  assert.deepEqual(data.objects.map((o) => o.name), ['lists2/a.txt', 'lists2/b.txt', 'lists2/c.md']);
  ({ data } = await files.listV2({ prefix: 'lists2/sub/', with_delimiter: true }));
  assert.deepEqual(data.folders.map((f) => f.key), ['lists2/sub/deeper/']);
  assert.deepEqual(data.objects.map((o) => o.key), ['lists2/sub/deep.txt']);
  // Pages of two, by cursor, cover the listing once, in order.
  const seen = [];
  let cursor;
  for (let page = 0; page < 10; page++) {
    ({ data, error } = await files.listV2({ prefix: 'lists2/', with_delimiter: true, limit: 2, cursor }));
    assert.equal(error, null, error?.message);
    seen.push(...data.objects.map((o) => o.name), ...data.folders.map((f) => f.name));
    if (!data.hasNext) break;
    cursor = data.nextCursor;
  }
  assert.deepEqual(seen.sort(), ['lists2/a.txt', 'lists2/b.txt', 'lists2/c.md', 'lists2/sub/', 'lists2/zz/']);
  // Newest first, paged, is the upload order reversed.
  const newest = [];
  cursor = undefined;
  for (let page = 0; page < 10; page++) {
    ({ data } = await files.listV2({ prefix: 'lists2/', limit: 4, cursor, sortBy: { column: 'created_at', order: 'desc' } }));
    newest.push(...data.objects.map((o) => o.name.slice('lists2/'.length)));
    if (!data.hasNext) break;
    cursor = data.nextCursor;
  }
  assert.deepEqual(newest, ['zz/one.txt', 'sub/deeper/x.txt', 'sub/deep.txt', 'c.md', 'a.txt', 'b.txt']);
  // Bad input is refused; other people's files are not listed.
  ({ error } = await files.listV2({ prefix: 'lists2/', cursor: 'not a cursor' }));
  assert.equal(error?.message, 'Invalid cursor');
  ({ error } = await files.listV2({ sortBy: { column: 'size' } }));
  assert.match(error?.message ?? '', /sortBy.column/);
  ({ data } = await ada.storage.from(PRIVATE).listV2({ prefix: 'lists2/' }));
  assert.deepEqual(data.objects, []);
});

test('move, copy (also across buckets) and remove many', async () => {
  const files = ada.storage.from(PRIVATE);
  await files.upload(`${ADA}/m/src.txt`, 'moving', { contentType: 'text/plain' });
  let r = await files.move(`${ADA}/m/src.txt`, `${ADA}/m/dst.txt`);
  assert.equal(r.error, null, r.error?.message);
  assert.equal(r.data.message, 'Successfully moved');
  assert.equal(await (await files.download(`${ADA}/m/dst.txt`)).data.text(), 'moving');
  assert.ok((await files.download(`${ADA}/m/src.txt`)).error);
  if (storeVisible) assert.equal(await storedCount(PRIVATE, `${ADA}/m/src.txt`), 0);
  r = await files.move(`${ADA}/m/dst.txt`, `${GRACE}/stolen.txt`);
  assert.equal(r.error.statusCode, '403', 'the moved row must pass the UPDATE policy');

  r = await files.copy(`${ADA}/m/dst.txt`, `${ADA}/m/copy.txt`);
  assert.equal(r.error, null, r.error?.message);
  assert.equal(r.data.path, `${PRIVATE}/${ADA}/m/copy.txt`);
  assert.equal(await (await files.download(`${ADA}/m/copy.txt`)).data.text(), 'moving');
  const across = await service.storage.from(PRIVATE).copy(`${ADA}/m/dst.txt`, 'copied/here.txt', { destinationBucket: PUBLIC });
  assert.equal(across.error, null, across.error?.message);
  assert.equal(await (await service.storage.from(PUBLIC).download('copied/here.txt')).data.text(), 'moving');
  // Each new version was pending until its row committed (a crash between
  // the bytes and the row leaves them to the sweeper), and is no longer.
  assert.equal(sql(`select count(*) from fluxbase.storage_pending_versions
    where name in ('${ADA}/m/dst.txt', '${ADA}/m/copy.txt', 'copied/here.txt')`), '0',
    'a committed move or copy leaves no pending record');

  const removed = await files.remove([`${ADA}/m/dst.txt`, `${ADA}/m/copy.txt`, `${ADA}/m/none.txt`]);
  assert.equal(removed.error, null, removed.error?.message);
  assert.deepEqual(removed.data.map((o) => o.name).sort(), [`${ADA}/m/copy.txt`, `${ADA}/m/dst.txt`]);
  if (storeVisible) assert.equal(await storedCount(PRIVATE, `${ADA}/m/copy.txt`), 0, 'removed objects leave no file');
});

test('signed URLs: single and batch, tampered and expired ones are refused', async () => {
  const files = ada.storage.from(PRIVATE);
  await files.upload(`${ADA}/signed me.txt`, 'signed body', { contentType: 'text/plain' });
  const { data, error } = await files.createSignedUrl(`${ADA}/signed me.txt`, 60);
  assert.equal(error, null, error?.message);
  let res = await fetch(data.signedUrl);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'signed body');
  const { data: dl } = await files.createSignedUrl(`${ADA}/signed me.txt`, 60, { download: true });
  res = await fetch(dl.signedUrl);
  assert.match(res.headers.get('content-disposition'), /attachment; filename="signed me.txt"/);
  await res.arrayBuffer();

  // A token is for its own path only, and must be ours.
  const token = new URL(data.signedUrl).searchParams.get('token');
  res = await fetch(`${storageUrl}/object/sign/${PRIVATE}/${ADA}/other.txt?token=${token}`);
  let body = await res.json();
  assert.equal(res.status, 400);
  assert.deepEqual([body.statusCode, body.code, body.message], ['400', 'InvalidSignature', 'Invalid signature']);
  res = await fetch(`${storageUrl}/object/sign/${PRIVATE}/${ADA}/signed%20me.txt?token=${token.slice(0, -3)}abc`);
  assert.equal((await res.json()).code, 'InvalidSignature');
  const { data: short } = await files.createSignedUrl(`${ADA}/signed me.txt`, 1);
  await new Promise((r) => setTimeout(r, 2100));
  res = await fetch(short.signedUrl);
  body = await res.json();
  assert.deepEqual([body.code, body.message], ['ExpiredToken', 'The provided token has expired.']);

  // Not for an object the caller cannot read.
  const refused = await grace.storage.from(PRIVATE).createSignedUrl(`${ADA}/signed me.txt`, 60);
  assert.equal(refused.error.statusCode, '404');
  const { data: many } = await files.createSignedUrls([`${ADA}/signed me.txt`, `${ADA}/none.txt`], 60);
  assert.equal(many.length, 2);
  assert.equal(many[0].error, null);
  assert.equal(await (await fetch(many[0].signedUrl)).text(), 'signed body');
  assert.equal(many[1].signedUrl, null);
  assert.match(many[1].error, /does not exist/);
});

test('signed upload URLs work once, as the user who asked', async () => {
  const files = ada.storage.from(PRIVATE);
  const path = `${ADA}/via-signed.txt`;
  const { data, error } = await files.createSignedUploadUrl(path);
  assert.equal(error, null, error?.message);
  const up = await anon.storage.from(PRIVATE).uploadToSignedUrl(path, data.token, 'from a link', { contentType: 'text/plain' });
  assert.equal(up.error, null, up.error?.message);
  assert.equal(up.data.fullPath, `${PRIVATE}/${path}`);
  assert.equal(await (await files.download(path)).data.text(), 'from a link');
  assert.equal(sql(`select owner_id from storage.objects where bucket_id = '${PRIVATE}' and name = '${path}'`), ADA);
  const again = await anon.storage.from(PRIVATE).uploadToSignedUrl(path, data.token, 'twice', { contentType: 'text/plain' });
  assert.ok(again.error);
  assert.equal(again.error.code, 'InvalidUploadSignature');
  assert.equal(await (await files.download(path)).data.text(), 'from a link');
  // Asking for a URL needs the INSERT policy now.
  const refused = await grace.storage.from(PRIVATE).createSignedUploadUrl(`${ADA}/nope.txt`);
  assert.equal(refused.error.statusCode, '403');
  const forged = await anon.storage.from(PRIVATE).uploadToSignedUrl(path, 'not.a.token', 'x');
  assert.equal(forged.error.code, 'InvalidUploadSignature');
});

test('public URLs serve public buckets only', async () => {
  await service.storage.from(PUBLIC).upload('open.txt', 'for everyone', { contentType: 'text/plain' });
  const { data } = anon.storage.from(PUBLIC).getPublicUrl('open.txt');
  let res = await fetch(data.publicUrl);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'for everyone');
  await service.storage.from(PRIVATE).upload('closed.txt', 'secret', { contentType: 'text/plain' });
  const { data: closed } = anon.storage.from(PRIVATE).getPublicUrl('closed.txt');
  res = await fetch(closed.publicUrl);
  assert.equal(res.status, 400);
  assert.equal((await res.json()).message, 'Object not found');
});

test('limits and bad input: clear errors, nothing stored', async () => {
  const files = service.storage.from(LIMITED);
  let r = await files.upload('small.txt', 'ok', { contentType: 'text/plain' });
  assert.equal(r.error, null, r.error?.message);
  r = await files.upload('big.txt', 'x'.repeat(4096), { contentType: 'text/plain' });
  assert.deepEqual([r.error.statusCode, r.error.message], ['413', 'The object exceeded the maximum allowed size']);
  r = await files.upload('big-form.txt', new Blob(['x'.repeat(4096)], { type: 'text/plain' }));
  assert.equal(r.error.statusCode, '413', 'a multipart body is counted as it arrives');
  r = await files.upload('page.html', '<p>', { contentType: 'text/html' });
  assert.deepEqual([r.error.statusCode, r.error.message], ['415', 'mime type text/html is not supported']);
  r = await files.upload('pic.png', new Blob(['png'], { type: 'image/png' }));
  assert.equal(r.error, null, 'image/* allows image/png');
  // The bytes are checked too: an executable called a PNG is refused by
  // its magic number, before anything is stored.
  const elf = Buffer.concat([Buffer.from('7f454c4602010100000000000000000002003e00', 'hex'), Buffer.alloc(64)]);
  r = await files.upload('cat.png', new Blob([elf], { type: 'image/png' }));
  assert.deepEqual([r.error?.statusCode, r.error?.message], ['415', 'mime type application/x-executable is not supported']);
  r = await files.upload('cat.png', elf, { contentType: 'image/png' });
  assert.equal(r.error?.statusCode, '415', 'a raw body is sniffed as a form is');
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${LIMITED}'`), '2');
  if (root) assert.deepEqual(readdirSync(join(root, LIMITED)).sort(), ['pic.png', 'small.txt']);
  if (storeVisible) assert.deepEqual([await storedCount(LIMITED, 'big.txt'), await storedCount(LIMITED, 'big-form.txt')], [0, 0]);
  assert.deepEqual(await openUploads(LIMITED), [], 'no S3 multipart upload left open');

  const names = ['../escape.txt', 'a/../../b', 'a//b', 'tab\there'];
  for (const name of names) {
    const res = await fetch(`${storageUrl}/object/${PRIVATE}/${encodeURIComponent(name)}`, {
      method: 'POST', headers: { ...authHeaders(env.serviceKey), 'content-type': 'text/plain' }, body: 'x',
    });
    const body = await res.json();
    assert.equal(res.status, 400, name);
    assert.equal(body.code, 'InvalidKey', `${name}: ${JSON.stringify(body)}`);
  }
  // A multipart body that breaks off: refused, nothing kept.
  const res = await fetch(`${storageUrl}/object/${PRIVATE}/broken.txt`, {
    method: 'POST',
    headers: { ...authHeaders(env.serviceKey), 'content-type': 'multipart/form-data; boundary=XyZ' },
    body: '--XyZ\r\nContent-Disposition: form-data; name=""; filename="f.txt"\r\nContent-Type: text/plain\r\n\r\npartial data without the end',
  });
  assert.equal(res.status, 400);
  assert.equal((await res.json()).code, 'InvalidRequest');
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${PRIVATE}' and name = 'broken.txt'`), '0');
  if (storeVisible) assert.equal(await storedCount(PRIVATE, 'broken.txt'), 0);
  // Bodies that are not JSON, unknown buckets, the service keeps serving.
  const notJson = await fetch(`${storageUrl}/bucket`, {
    method: 'POST', headers: { ...authHeaders(env.serviceKey), 'content-type': 'application/json' }, body: '{nope',
  });
  assert.equal((await notJson.json()).code, 'InvalidRequest');
  r = await service.storage.from(`missing-${suffix}`).upload('a.txt', 'x');
  assert.equal(r.error.message, 'Bucket not found');
  assert.equal((await service.storage.getBucket(PUBLIC)).error, null);
});

test('empty and delete buckets: a bucket with objects is refused', async () => {
  let r = await service.storage.deleteBucket(LIMITED);
  assert.equal(r.error.statusCode, '409');
  assert.equal(r.error.message, 'The bucket you tried to delete is not empty');
  r = await service.storage.emptyBucket(LIMITED);
  assert.equal(r.error, null, r.error?.message);
  assert.equal(r.data.message, 'Successfully emptied');
  if (storeVisible) assert.equal(await storedCount(LIMITED, 'small.txt'), 0);
  r = await service.storage.deleteBucket(LIMITED);
  assert.equal(r.error, null, r.error?.message);
  assert.equal(r.data.message, 'Successfully deleted');
  r = await service.storage.deleteBucket(LIMITED);
  assert.equal(r.error.statusCode, '404');
});

test('concurrent uploads to one path: one wins whole, one version file is left', async () => {
  const files = service.storage.from(PUBLIC);
  const bodies = Array.from({ length: 6 }, (_, i) => `writer ${i} `.repeat(2000));
  const results = await Promise.all(bodies.map((b) => files.upload('race/one.txt', b, { contentType: 'text/plain', upsert: true })));
  for (const r of results) assert.equal(r.error, null, r.error?.message);
  const text = await (await files.download('race/one.txt')).data.text();
  assert.ok(bodies.includes(text), 'the object is one writer\'s bytes, whole');
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${PUBLIC}' and name = 'race/one.txt'`), '1');
  if (storeVisible) assert.equal(await storedCount(PUBLIC, 'race/one.txt'), 1);
});

test('bytes a crash left without a row are swept; a version a row names is kept', async () => {
  const files = service.storage.from(PUBLIC);
  for (const name of ['pending/orphan.bin', 'pending/kept.bin']) {
    const r = await files.upload(name, `bytes of ${name}`, { contentType: 'text/plain', upsert: true });
    assert.equal(r.error, null, r.error?.message);
  }
  assert.equal(sql(`select count(*) from fluxbase.storage_pending_versions where bucket_id = '${PUBLIC}' and name like 'pending/%'`), '0',
    'a committed upload leaves no pending record');
  // A crash between storing the bytes and committing the row looks like
  // this: the version's bytes, a pending record older than any request,
  // no row. The other record names a version a row still has.
  sql(`
    insert into fluxbase.storage_pending_versions (version, bucket_id, name, created_at)
      select version, bucket_id, name, now() - interval '2 hours' from storage.objects
      where bucket_id = '${PUBLIC}' and name in ('pending/orphan.bin', 'pending/kept.bin');
    delete from storage.objects where bucket_id = '${PUBLIC}' and name = 'pending/orphan.bin';
  `);
  assert.equal((await storedVersions(PUBLIC, 'pending/orphan.bin')).length, 1, 'the orphan is stored until swept');
  const proxy = await proxyWith({});
  try {
    await fetch(`${proxy.url}/storage/v1/bucket/${PUBLIC}`, { headers: authHeaders(env.serviceKey) }).then((r) => r.text());
    let left = 1;
    for (let i = 0; i < 50 && left > 0; i++) {
      left = (await storedVersions(PUBLIC, 'pending/orphan.bin')).length;
      if (left > 0) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(left, 0, 'the next proxy removed the version no row names');
    assert.equal((await storedVersions(PUBLIC, 'pending/kept.bin')).length, 1, 'a version a row names is kept');
    assert.equal(sql(`select count(*) from fluxbase.storage_pending_versions where bucket_id = '${PUBLIC}' and name like 'pending/%'`), '0');
    assert.equal(await (await files.download('pending/kept.bin')).data.text(), 'bytes of pending/kept.bin');
  } finally {
    proxy.stop();
    await files.remove(['pending/kept.bin']);
  }
});

test('a proxy killed mid-upload leaves no row, and its half-written version is swept by its pending record', async (t) => {
  if (!root) return t.skip('FLUXBASE_STORAGE_ROOT not set');
  const first = await proxyWith({});
  // Should an assertion fail before the kill, the proxy must not outlive the file.
  t.after(() => { try { process.kill(first.pid, 'SIGKILL'); } catch { /* already gone */ } });
  let push;
  const body = new ReadableStream({ start(c) { push = c; c.enqueue(new Uint8Array(1 << 20)); } });
  const upload = fetch(`${first.url}/storage/v1/object/${PUBLIC}/crash/half.bin`, {
    method: 'POST', headers: { ...authHeaders(env.serviceKey), 'content-type': 'application/octet-stream' },
    body, duplex: 'half',
  }).catch((e) => e);
  // The upload writes straight to its version's file, which no row names.
  const started = await (async () => {
    for (let i = 0; i < 100; i++) {
      if ((await storedVersions(PUBLIC, 'crash/half.bin')).length > 0) return true;
      await new Promise((r) => setTimeout(r, 50));
    }
    return false;
  })();
  assert.ok(started, 'the upload is being written');
  process.kill(first.pid, 'SIGKILL');
  push.error(new Error('gone'));
  await upload;
  const [version] = await storedVersions(PUBLIC, 'crash/half.bin');
  assert.ok(version, 'the half-written version is still there after the crash');
  assert.equal(sql(`select count(*) from storage.objects where name = 'crash/half.bin'`), '0');
  assert.equal(sql(`select count(*) from fluxbase.storage_pending_versions where version = '${version}'`), '1',
    'recorded as pending before a byte was written');
  // Older than any request may take (storage.request_timeout_ms + 1 min).
  sql(`update fluxbase.storage_pending_versions set created_at = now() - interval '1 day' where version = '${version}'`);
  const second = await proxyWith({});
  try {
    await fetch(`${second.url}/storage/v1/bucket/${PUBLIC}`, { headers: authHeaders(env.serviceKey) }).then((r) => r.text());
    let swept = false;
    for (let i = 0; i < 50 && !swept; i++) {
      swept = (await storedVersions(PUBLIC, 'crash/half.bin')).length === 0;
      if (!swept) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(swept, 'the next proxy removed the half-written version');
    assert.equal(sql(`select count(*) from fluxbase.storage_pending_versions where version = '${version}'`), '0');
  } finally {
    second.stop();
  }
});

/** Peak and current resident memory of a process, KiB. */
const memory = (pid) => {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = (key) => Number(status.match(new RegExp(`${key}:\\s+(\\d+)`))[1]);
  return { peak: kib('VmHWM'), now: kib('VmRSS') };
};

/** `total` bytes of a deterministic pattern, as a stream, hashed as it goes. */
function patternStream(total, hash) {
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 31 + 7) & 0xff;
  let sent = 0;
  return new ReadableStream({
    pull(controller) {
      if (sent >= total) return controller.close();
      const n = Math.min(chunk.length, total - sent);
      const part = chunk.subarray(0, n);
      chunk[0] = (chunk[0] + 1) & 0xff; // no two chunks alike
      hash.update(part);
      controller.enqueue(new Uint8Array(part));
      sent += n;
    },
  });
}

// 1 GiB on the local disk; 200 MiB on the S3 pass, whose test server (moto)
// keeps every byte in its own memory.
const BIG = onS3 ? 200 * 1024 * 1024 : 1024 * 1024 * 1024;
const BIG_TEXT = onS3 ? '200 MiB' : '1 GiB';

test(`a ${BIG_TEXT} object streams through the proxy in bounded memory`, async () => {
  const SIZE = BIG;
  const proxy = await proxyWith({ FLUXBASE_STORAGE_FILE_SIZE_LIMIT: String(SIZE) });
  try {
    // Warm up (first request: pool, sweeper), then take the idle figure.
    await fetch(`${proxy.url}/storage/v1/bucket/${PUBLIC}`, { headers: authHeaders(env.serviceKey) }).then((r) => r.text());
    const idle = memory(proxy.pid).now;
    const sent = createHash('sha256');
    let res = await fetch(`${proxy.url}/storage/v1/object/${PUBLIC}/big/blob.bin`, {
      method: 'POST',
      headers: { ...authHeaders(env.serviceKey), 'content-type': 'application/octet-stream' },
      body: patternStream(SIZE, sent),
      duplex: 'half',
    });
    assert.equal(res.status, 200, await res.clone().text());
    await res.json();
    assert.equal(sql(`select metadata->>'size' from storage.objects where bucket_id = '${PUBLIC}' and name = 'big/blob.bin'`), String(SIZE));

    res = await fetch(`${proxy.url}/storage/v1/object/public/${PUBLIC}/big/blob.bin`);
    assert.equal(res.headers.get('content-length'), String(SIZE));
    const got = createHash('sha256');
    let received = 0;
    for await (const part of res.body) {
      got.update(part);
      received += part.length;
    }
    assert.equal(received, SIZE);
    assert.equal(got.digest('hex'), sent.digest('hex'));
    const { peak } = memory(proxy.pid);
    const grew = (peak - idle) / 1024;
    console.log(`proxy RSS: idle ${(idle / 1024).toFixed(1)} MiB, peak ${(peak / 1024).toFixed(1)} MiB over ${BIG_TEXT} up + down`);
    assert.ok(grew < 64, `the proxy grew ${grew.toFixed(1)} MiB moving ${BIG_TEXT}`);
  } finally {
    proxy.stop();
    await service.storage.from(PUBLIC).remove(['big/blob.bin']);
  }
});
