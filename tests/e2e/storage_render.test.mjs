// Image transforms (`/storage/v1/render/image/…`) through supabase-js's
// storage client: getPublicUrl / download / createSignedUrl with
// `transform`, checked by decoding the answer's real size and format
// (image-size); WebP negotiation, `format: 'origin'` and `'avif'`, the object's
// Cache-Control, renderings following a replaced object, and bad input: not
// an image, a pixel bomb, bad options, an RLS refusal, transforms off.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { deflateSync, crc32 } from 'node:zlib';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { imageSize } from 'image-size';
import { createClient } from '@supabase/supabase-js';
import { env, proxyWith, sign, sql, ADA, GRACE } from './helpers.mjs';

const suffix = Math.random().toString(36).slice(2, 8);
const PUBLIC = `img-pub-${suffix}`;
const PRIVATE = `imgdocs-${suffix}`;
const root = process.env.FLUXBASE_STORAGE_ROOT;
const JPEG = readFileSync(new URL('./fixtures/photo-640x480.jpg', import.meta.url));

const client = (key, url = env.url) =>
  createClient(url, key, { auth: { persistSession: false, autoRefreshToken: false } });
const service = client(env.serviceKey);
const userKey = (sub) => sign({ role: 'authenticated', sub, session_id: sub });
const ada = client(userKey(ADA));
const grace = client(userKey(GRACE));

function chunk(type, data) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'ascii');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

/** A real RGBA PNG of `w`×`h` (a gradient, half transparent), or only its
 * header claiming `w`×`h` when `headerOnly` (a decompression bomb). */
function png(w, h, headerOnly = false) {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 6, 0, 0, 0], 8);
  const parts = [Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), chunk('IHDR', ihdr)];
  if (!headerOnly) {
    const raw = Buffer.alloc((w * 4 + 1) * h);
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) raw.set([x % 256, y % 256, 90, x < w / 2 ? 255 : 128], y * (w * 4 + 1) + 1 + x * 4);
    }
    parts.push(chunk('IDAT', deflateSync(raw)));
  } else {
    parts.push(chunk('IDAT', deflateSync(Buffer.alloc(1024))));
  }
  parts.push(chunk('IEND', Buffer.alloc(0)));
  return Buffer.concat(parts);
}

/** The members of a storage error body that tests compare. */
const refusal = ({ statusCode, code, message }) => ({ statusCode, code, message });

const size = async (res) => {
  assert.equal(res.status, 200, await res.clone().text());
  return imageSize(new Uint8Array(await res.arrayBuffer()));
};

test.before(async () => {
  sql(`
    set client_min_messages = warning;
    drop policy if exists e2e_render_own_select on storage.objects;
    drop policy if exists e2e_render_own_insert on storage.objects;
    create policy e2e_render_own_select on storage.objects for select to authenticated
      using (bucket_id like 'imgdocs-%' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy e2e_render_own_insert on storage.objects for insert to authenticated
      with check (bucket_id like 'imgdocs-%' and (storage.foldername(name))[1] = auth.uid()::text);
  `);
  for (const [id, pub] of [[PUBLIC, true], [PRIVATE, false]]) {
    const r = await service.storage.createBucket(id, { public: pub });
    assert.equal(r.error, null, r.error?.message);
  }
  let r = await service.storage
    .from(PUBLIC)
    .upload('photo.jpg', JPEG, { contentType: 'image/jpeg', cacheControl: '120' });
  assert.equal(r.error, null, r.error?.message);
  r = await ada.storage.from(PRIVATE).upload(`${ADA}/badge.png`, png(300, 200), { contentType: 'image/png' });
  assert.equal(r.error, null, r.error?.message);
});

test.after(() => {
  sql(`
    drop policy if exists e2e_render_own_select on storage.objects;
    drop policy if exists e2e_render_own_insert on storage.objects;
  `);
});

test('getPublicUrl with transform: cover, contain, fill at their real sizes; WebP only when accepted', async () => {
  const url = (transform) => service.storage.from(PUBLIC).getPublicUrl('photo.jpg', { transform }).data.publicUrl;
  const cover = url({ width: 320, height: 100 });
  assert.match(cover, /\/storage\/v1\/render\/image\/public\//);

  // Node's fetch sends Accept: */* — no WebP, so the source's format.
  const plain = await fetch(cover);
  assert.equal(plain.headers.get('content-type'), 'image/jpeg');
  assert.equal(plain.headers.get('cache-control'), 'max-age=120', "the object's Cache-Control");
  assert.deepEqual(await size(plain), { width: 320, height: 100, type: 'jpg' });

  const webp = await fetch(cover, { headers: { accept: 'image/avif,image/webp,*/*' } });
  assert.equal(webp.headers.get('content-type'), 'image/webp');
  assert.deepEqual(await size(webp), { width: 320, height: 100, type: 'webp' });

  const origin = await fetch(url({ width: 320, height: 100, format: 'origin' }), { headers: { accept: 'image/webp' } });
  assert.equal((await size(origin)).type, 'jpg', "format 'origin' keeps the source's format");

  assert.deepEqual(await size(await fetch(url({ width: 100, height: 100, resize: 'contain' }))), { width: 100, height: 75, type: 'jpg' });
  assert.deepEqual(await size(await fetch(url({ width: 100, height: 100, resize: 'fill' }))), { width: 100, height: 100, type: 'jpg' });
  assert.deepEqual(await size(await fetch(url({ width: 160 }))), { width: 160, height: 120, type: 'jpg' });
  assert.deepEqual(await size(await fetch(url({ width: 2000 }))), { width: 640, height: 480, type: 'jpg' }, 'never enlarged');

  // Quality changes the bytes.
  const low = await (await fetch(url({ width: 320, quality: 20 }))).arrayBuffer();
  const high = await (await fetch(url({ width: 320, quality: 100 }))).arrayBuffer();
  assert.ok(low.byteLength < high.byteLength, `quality 20 (${low.byteLength} B) < quality 100 (${high.byteLength} B)`);

  // Renderings are kept under <root>/~render.
  const cached = join(root, '~render');
  assert.ok(existsSync(cached) && readdirSync(cached).length > 0, 'renderings are cached on disk');
});

test("format 'avif': a real AVIF of the asked size, kept apart from WebP and the source's format", async () => {
  const url = (transform) => service.storage.from(PUBLIC).getPublicUrl('photo.jpg', { transform }).data.publicUrl;
  const avifUrl = url({ width: 320, height: 100, format: 'avif' });
  assert.match(avifUrl, /format=avif/);
  const avif = await fetch(avifUrl, { headers: { accept: 'image/webp,*/*' } });
  assert.equal(avif.headers.get('content-type'), 'image/avif');
  const bytes = Buffer.from(await avif.clone().arrayBuffer());
  assert.equal(bytes.subarray(4, 12).toString('latin1'), 'ftypavif', 'an ISO-BMFF file of the avif brand');
  assert.deepEqual(await size(avif), { width: 320, height: 100, type: 'avif' });
  // Same size and options, other formats: each its own rendering (the cache
  // keys by output format), in the same order as a browser might ask.
  const webp = await fetch(url({ width: 320, height: 100 }), { headers: { accept: 'image/webp' } });
  assert.equal((await size(webp)).type, 'webp');
  const jpeg = await fetch(url({ width: 320, height: 100, format: 'origin' }));
  assert.equal((await size(jpeg)).type, 'jpg');
  const again = await fetch(avifUrl);
  assert.equal(again.headers.get('content-type'), 'image/avif');
  assert.deepEqual(Buffer.from(await again.arrayBuffer()), bytes, 'the cached AVIF');
  // The automatic choice stays WebP even for a client that names AVIF first.
  const auto = await fetch(url({ width: 320, height: 100 }), { headers: { accept: 'image/avif,image/webp,*/*' } });
  assert.equal(auto.headers.get('content-type'), 'image/webp');
});

test('download with transform: the caller\'s policies decide, alpha survives as PNG', async () => {
  const r = await ada.storage.from(PRIVATE).download(`${ADA}/badge.png`, { transform: { width: 150, height: 150 } });
  assert.equal(r.error, null, r.error?.message);
  assert.equal(r.data.type, 'image/png');
  assert.deepEqual(imageSize(new Uint8Array(await r.data.arrayBuffer())), { width: 150, height: 150, type: 'png' });

  const refused = await grace.storage.from(PRIVATE).download(`${ADA}/badge.png`, { transform: { width: 150 } });
  assert.ok(refused.error, 'Grace may not read Ada\'s folder');
  const raw = await fetch(`${env.url}/storage/v1/render/image/authenticated/${PRIVATE}/${ADA}/badge.png?width=150`, {
    headers: { apikey: env.anonKey, authorization: `Bearer ${userKey(GRACE)}` },
  });
  assert.equal(raw.status, 400);
  assert.equal((await raw.json()).statusCode, '404', 'as storage-api: not found, not forbidden');

  // Nor can anyone through the public route of a private bucket.
  const pub = await fetch(service.storage.from(PRIVATE).getPublicUrl(`${ADA}/badge.png`, { transform: { width: 10 } }).data.publicUrl);
  assert.equal(pub.status, 400);
  assert.equal((await pub.json()).statusCode, '404');
});

test('createSignedUrl with transform: sealed in the token, query changes ignored', async () => {
  const r = await ada.storage.from(PRIVATE).createSignedUrl(`${ADA}/badge.png`, 60, { transform: { width: 50, height: 40, resize: 'fill' } });
  assert.equal(r.error, null, r.error?.message);
  assert.match(r.data.signedUrl, /\/storage\/v1\/render\/image\/sign\//);
  const res = await fetch(r.data.signedUrl, { headers: { accept: 'image/webp' } });
  assert.deepEqual(await size(res), { width: 50, height: 40, type: 'webp' });
  const tampered = await fetch(`${r.data.signedUrl}&width=290&height=190`);
  assert.deepEqual(await size(tampered), { width: 50, height: 40, type: 'png' }, 'the token\'s transforms, not the query\'s');

  const forged = await fetch(r.data.signedUrl.replace(/token=[^&]+/, `token=${sign({ url: `${PRIVATE}/${ADA}/badge.png`, transformations: 'width:290' }, 'another-secret-another-secret-xx')}`));
  assert.equal(forged.status, 400);
  assert.equal((await forged.json()).code, 'InvalidSignature');

  const refused = await grace.storage.from(PRIVATE).createSignedUrl(`${ADA}/badge.png`, 60, { transform: { width: 50 } });
  assert.ok(refused.error, 'no signed URL for an object the caller cannot read');
});

test('a replaced object is rendered anew (the cache follows its version)', async () => {
  const first = service.storage.from(PUBLIC).getPublicUrl('swap.png', { transform: { width: 100 } }).data.publicUrl;
  let r = await service.storage.from(PUBLIC).upload('swap.png', png(200, 100), { contentType: 'image/png' });
  assert.equal(r.error, null, r.error?.message);
  assert.deepEqual(await size(await fetch(first)), { width: 100, height: 50, type: 'png' });
  r = await service.storage.from(PUBLIC).upload('swap.png', png(200, 200), { contentType: 'image/png', upsert: true });
  assert.equal(r.error, null, r.error?.message);
  assert.deepEqual(await size(await fetch(first)), { width: 100, height: 100, type: 'png' });
});

test('bad input: not an image, a pixel bomb, bad options: clear errors, and the proxy keeps serving', async () => {
  const bucket = service.storage.from(PUBLIC);
  let r = await bucket.upload('notes.txt', Buffer.from('not an image at all'), { contentType: 'text/plain' });
  assert.equal(r.error, null, r.error?.message);
  // 60000 × 60000 pixels claimed by a 100-byte file: refused from the header.
  r = await bucket.upload('bomb.png', png(60000, 60000, true), { contentType: 'image/png' });
  assert.equal(r.error, null, r.error?.message);

  const answer = async (name, transform) => {
    const res = await fetch(bucket.getPublicUrl(name, { transform }).data.publicUrl);
    return { status: res.status, body: await res.json() };
  };
  let a = await answer('notes.txt', { width: 10 });
  assert.equal(a.status, 400);
  assert.deepEqual(refusal(a.body), { statusCode: '422', code: 'InvalidRequest', message: 'Source image format is not supported' });
  a = await answer('bomb.png', { width: 10 });
  assert.deepEqual(refusal(a.body), { statusCode: '422', code: 'InvalidRequest', message: 'Source image resolution is too big' });

  const raw = async (query) => {
    const res = await fetch(`${env.url}/storage/v1/render/image/public/${PUBLIC}/photo.jpg?${query}`);
    return { status: res.status, body: await res.json() };
  };
  for (const [query, message] of [
    ['width=abc', 'querystring/width must be integer'],
    ['height=-5', 'querystring/height must be >= 0'],
    ['resize=crop&width=10', 'querystring/resize must be equal to one of the allowed values'],
    ['quality=5', 'querystring/quality must be >= 20'],
    ['format=tiff', 'querystring/format must be equal to one of the allowed values'],
  ]) {
    a = await raw(query);
    assert.equal(a.status, 400, query);
    assert.equal(a.body.statusCode, '400', query);
    assert.equal(a.body.code, 'InvalidRequest', query);
    assert.equal(a.body.message, message, query);
  }
});

test('bad input, continued: an unknown object, and the proxy still renders', async () => {
  let res = await fetch(`${env.url}/storage/v1/render/image/public/${PUBLIC}/missing.jpg?width=10`);
  assert.equal(res.status, 400);
  assert.equal((await res.json()).statusCode, '404');
  res = await fetch(`${env.url}/storage/v1/render/image/public/${PUBLIC}/photo.jpg?width=10`);
  assert.deepEqual(await size(res), { width: 10, height: 8, type: 'jpg' });
});

test('transforms switched off: FeatureNotEnabled, and signed URLs sign the plain object', async () => {
  const proxy = await proxyWith({ FLUXBASE_STORAGE_IMAGE_TRANSFORMS: 'false' });
  try {
    const res = await fetch(`${proxy.url}/storage/v1/render/image/public/${PUBLIC}/photo.jpg?width=10`);
    assert.equal(res.status, 400);
    assert.deepEqual(refusal(await res.json()), {
      statusCode: '409',
      code: 'FeatureNotEnabled',
      message: 'The feature imageTransformation is not enabled for this resource',
    });
    const off = client(userKey(ADA), proxy.url);
    const r = await off.storage.from(PRIVATE).createSignedUrl(`${ADA}/badge.png`, 60, { transform: { width: 50 } });
    assert.equal(r.error, null, r.error?.message);
    assert.match(r.data.signedUrl, /\/storage\/v1\/object\/sign\//);
  } finally {
    proxy.stop();
  }
});

test('many renders at once: each waits for a permit and gets its own size', async () => {
  const widths = Array.from({ length: 12 }, (_, i) => 40 + i * 8);
  const answers = await Promise.all(
    widths.map((width) => fetch(service.storage.from(PUBLIC).getPublicUrl('photo.jpg', { transform: { width } }).data.publicUrl).then(size)),
  );
  assert.deepEqual(answers.map((a) => a.width), widths);
  assert.deepEqual(answers.map((a) => a.height), widths.map((w) => Math.round((w * 480) / 640)));
});
