// The S3 protocol at /storage/v1/s3, end to end with the real AWS SDK
// (@aws-sdk/client-s3, @aws-sdk/lib-storage's Upload for multipart) against
// a proxy with storage.s3_encryption_key set and an access key made by
// `fluxbase s3-keys create`: objects written through S3 are storage
// objects supabase-js sees (and the other way round); ranges, listing
// with prefix/delimiter/continuation, copy, delete, multipart; SigV4
// refusals (wrong secret, unknown or revoked key, expired presigned URL,
// a forged chunk signature, a body that does not match its hash); the
// session-token mode where RLS applies.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import {
  S3Client,
  PutObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  DeleteObjectCommand,
  DeleteObjectsCommand,
  ListObjectsV2Command,
  CopyObjectCommand,
  CreateMultipartUploadCommand,
  UploadPartCommand,
  ListPartsCommand,
  AbortMultipartUploadCommand,
  ListBucketsCommand,
  HeadBucketCommand,
  CreateBucketCommand,
  DeleteBucketCommand,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { SignatureV4 } from '@smithy/signature-v4';
import { createClient } from '@supabase/supabase-js';
import { env, proxyWith, sign, sql, ADA } from './helpers.mjs';

const suffix = Math.random().toString(36).slice(2, 8);
const BUCKET = `s3-${suffix}`;
const SMALL = `s3small-${suffix}`;
const SESSION = `s3sess-${suffix}`;
const encryptionKey = randomBytes(32).toString('hex');
const proxyEnv = { FLUXBASE_STORAGE_S3_ENCRYPTION_KEY: encryptionKey };

let proxy;
let endpoint;
let key; // { id, secret }
const region = 'local';

const s3 = (credentials) =>
  new S3Client({ forcePathStyle: true, region, endpoint, credentials, maxAttempts: 1 });

/** `fluxbase s3-keys …` with the test proxy's configuration. */
function s3Keys(...args) {
  return execFileSync(process.env.FLUXBASE_BIN, ['s3-keys', ...args], {
    env: { ...process.env, ...proxyEnv },
    encoding: 'utf8',
  });
}

const sha = (buf) => createHash('sha256').update(buf).digest('hex');
const text = async (out) => Buffer.from(await out.Body.transformToByteArray()).toString('utf8');

/** Node's crypto as the SDK signer's hash. */
class Sha256 {
  constructor(secret) {
    this.h = secret ? createHmac('sha256', secret) : createHash('sha256');
  }
  update(data) {
    this.h.update(data);
  }
  async digest() {
    return new Uint8Array(this.h.digest());
  }
}

const signer = (credentials) =>
  new SignatureV4({ credentials, region, service: 's3', sha256: Sha256, uriEscapePath: false });

/** A presigned URL for `method` on `path` (below /storage/v1/s3). */
async function presign(method, path, expiresIn, credentials = { accessKeyId: key.id, secretAccessKey: key.secret }) {
  const url = new URL(endpoint);
  const request = await signer(credentials).presign(
    { method, protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: `/storage/v1/s3${path}`, headers: { host: url.host, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' }, query: {} },
    { expiresIn },
  );
  const query = new URLSearchParams(request.query).toString();
  return `${endpoint}${path}?${query}`;
}

let sdk;
let service;
const sentModes = [];

test.before(async () => {
  proxy = await proxyWith(proxyEnv);
  endpoint = `${proxy.url}/storage/v1/s3`;
  const out = s3Keys('create', '--description', 'e2e');
  key = {
    id: out.match(/access key id:\s+(\S+)/)[1],
    secret: out.match(/secret access key:\s+(\S+)/)[1],
  };
  sdk = s3({ accessKeyId: key.id, secretAccessKey: key.secret });
  // The body modes the SDK signs with, as sent (innermost: after signing).
  sdk.middlewareStack.add(
    (next) => async (args) => {
      sentModes.push(args.request.headers['x-amz-content-sha256']);
      return next(args);
    },
    { step: 'deserialize', name: 'recordPayloadMode' },
  );
  service = createClient(proxy.url, env.serviceKey, { auth: { persistSession: false, autoRefreshToken: false } });
  for (const [id, options] of [[BUCKET, {}], [SMALL, { fileSizeLimit: 1024 }], [SESSION, {}]]) {
    const { error } = await service.storage.createBucket(id, options);
    assert.equal(error, null);
  }
  sql(`
    set client_min_messages = warning;
    drop policy if exists e2e_s3_own_select on storage.objects;
    drop policy if exists e2e_s3_own_insert on storage.objects;
    create policy e2e_s3_own_select on storage.objects for select to authenticated
      using (bucket_id like 's3sess-%' and (storage.foldername(name))[1] = auth.uid()::text);
    create policy e2e_s3_own_insert on storage.objects for insert to authenticated
      with check (bucket_id like 's3sess-%' and (storage.foldername(name))[1] = auth.uid()::text);
  `);
});

test.after(async () => {
  sql(`
    drop policy if exists e2e_s3_own_select on storage.objects;
    drop policy if exists e2e_s3_own_insert on storage.objects;
  `);
  for (const id of [BUCKET, SMALL, SESSION]) {
    await service.storage.emptyBucket(id);
    await service.storage.deleteBucket(id);
  }
  proxy?.stop();
});

test('the secret is stored sealed, never as sent', () => {
  const stored = sql(`select secret_sealed from fluxbase.storage_s3_keys where access_key_id = '${key.id}'`);
  assert.ok(stored.length > 40);
  assert.ok(!stored.includes(key.secret));
  assert.match(s3Keys('list'), new RegExp(`${key.id}\\s.*\\se2e`));
});

test('PutObject and GetObject; supabase-js sees the object, and S3 sees supabase-js uploads', async () => {
  const put = await sdk.send(
    new PutObjectCommand({ Bucket: BUCKET, Key: 'docs/hello.txt', Body: 'hello from s3', ContentType: 'text/plain', Metadata: { origin: 'aws-sdk' } }),
  );
  assert.match(put.ETag, /^"[0-9a-f]{32}"$/);
  const got = await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'docs/hello.txt' }));
  assert.equal(await text(got), 'hello from s3');
  assert.equal(got.ContentType, 'text/plain');
  assert.equal(got.ETag, put.ETag);

  const { data, error } = await service.storage.from(BUCKET).download('docs/hello.txt');
  assert.equal(error, null);
  assert.equal(await data.text(), 'hello from s3');
  const { data: info } = await service.storage.from(BUCKET).info('docs/hello.txt');
  assert.deepEqual(info.metadata, { origin: 'aws-sdk' });
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${BUCKET}' and name = 'docs/hello.txt'`), '1');

  const upload = await service.storage.from(BUCKET).upload('docs/from-js.txt', new Blob(['written by supabase-js']), { contentType: 'text/plain' });
  assert.equal(upload.error, null);
  assert.equal(await text(await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'docs/from-js.txt' }))), 'written by supabase-js');

  // PutObject replaces, as S3 does.
  await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'docs/hello.txt', Body: 'replaced' }));
  assert.equal(await text(await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'docs/hello.txt' }))), 'replaced');

  // A conditional write (If-None-Match: *) only creates.
  await assert.rejects(
    sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'docs/hello.txt', Body: 'not again', IfNoneMatch: '*' })),
    (e) => e.name === 'PreconditionFailed' && e.$metadata.httpStatusCode === 412,
  );
  assert.equal(await text(await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'docs/hello.txt' }))), 'replaced');
  await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'docs/new-only.txt', Body: 'created', IfNoneMatch: '*' }));
  assert.equal(await text(await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'docs/new-only.txt' }))), 'created');
});

test('a streamed body (aws-chunked with a trailing checksum) is stored whole', async () => {
  const payload = randomBytes(300 * 1024);
  const body = Readable.from([payload.subarray(0, 100_000), payload.subarray(100_000)]);
  sentModes.length = 0;
  await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'stream/bin', Body: body, ContentLength: payload.length }));
  assert.deepEqual(sentModes, ['STREAMING-UNSIGNED-PAYLOAD-TRAILER']);
  const got = await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'stream/bin' }));
  assert.equal(sha(Buffer.from(await got.Body.transformToByteArray())), sha(payload));
});

test('HeadObject and ranged GetObject', async () => {
  await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'range.txt', Body: '0123456789', ContentType: 'text/plain' }));
  const head = await sdk.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'range.txt' }));
  assert.equal(head.ContentLength, 10);
  assert.equal(head.ContentType, 'text/plain');
  const part = await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'range.txt', Range: 'bytes=2-5' }));
  assert.equal(await text(part), '2345');
  assert.equal(part.ContentRange, 'bytes 2-5/10');
  await assert.rejects(sdk.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'nothing-here' })), (e) => e.$metadata.httpStatusCode === 404);
  await assert.rejects(sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'nothing-here' })), (e) => e.name === 'NoSuchKey');
  await assert.rejects(sdk.send(new GetObjectCommand({ Bucket: `nope-${suffix}`, Key: 'x' })), (e) => e.name === 'NoSuchKey' || e.name === 'NoSuchBucket');
});

test('ListObjectsV2: prefix, delimiter, max-keys and continuation', async () => {
  for (const k of ['list/a.txt', 'list/b.txt', 'list/c.txt', 'list/sub/d.txt', 'list/sub/e.txt', 'list/zz/f.txt']) {
    await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: k, Body: k }));
  }
  const top = await sdk.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'list/', Delimiter: '/' }));
  assert.deepEqual(top.Contents.map((c) => c.Key), ['list/a.txt', 'list/b.txt', 'list/c.txt']);
  assert.deepEqual(top.CommonPrefixes.map((p) => p.Prefix), ['list/sub/', 'list/zz/']);
  assert.equal(top.Contents[0].Size, 'list/a.txt'.length);
  assert.equal(top.IsTruncated, false);

  const seen = [];
  let token;
  let pages = 0;
  do {
    const page = await sdk.send(new ListObjectsV2Command({ Bucket: BUCKET, Prefix: 'list/', MaxKeys: 2, ContinuationToken: token }));
    seen.push(...(page.Contents ?? []).map((c) => c.Key));
    token = page.NextContinuationToken;
    pages += 1;
    assert.equal(page.KeyCount, (page.Contents ?? []).length);
  } while (token);
  assert.equal(pages, 3);
  assert.deepEqual(seen, ['list/a.txt', 'list/b.txt', 'list/c.txt', 'list/sub/d.txt', 'list/sub/e.txt', 'list/zz/f.txt']);
  await assert.rejects(sdk.send(new ListObjectsV2Command({ Bucket: `nope-${suffix}` })), (e) => e.name === 'NoSuchBucket');
});

test('CopyObject, DeleteObject and DeleteObjects change what supabase-js lists', async () => {
  await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'del/one.txt', Body: 'one' }));
  const copy = await sdk.send(new CopyObjectCommand({ Bucket: BUCKET, Key: 'del/two.txt', CopySource: `${BUCKET}/del/one.txt` }));
  assert.match(copy.CopyObjectResult.ETag, /^"[0-9a-f]+"$/);
  assert.equal(await text(await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'del/two.txt' }))), 'one');
  await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'del/three.txt', Body: '3' }));
  let { data } = await service.storage.from(BUCKET).list('del');
  assert.deepEqual(data.map((o) => o.name).sort(), ['one.txt', 'three.txt', 'two.txt']);

  await sdk.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'del/one.txt' }));
  // Deleting what is not there is no error in S3.
  await sdk.send(new DeleteObjectCommand({ Bucket: BUCKET, Key: 'del/never.txt' }));
  const many = await sdk.send(
    new DeleteObjectsCommand({ Bucket: BUCKET, Delete: { Objects: [{ Key: 'del/two.txt' }, { Key: 'del/three.txt' }] } }),
  );
  assert.deepEqual(many.Deleted.map((d) => d.Key).sort(), ['del/three.txt', 'del/two.txt']);
  ({ data } = await service.storage.from(BUCKET).list('del'));
  assert.deepEqual(data, []);
});

test('multipart: lib-storage Upload in parts, ListParts, Abort', async () => {
  const payload = randomBytes(11 * 1024 * 1024 + 123);
  const upload = new Upload({
    client: sdk,
    params: { Bucket: BUCKET, Key: 'big/file.bin', Body: payload, ContentType: 'application/x-test' },
    partSize: 5 * 1024 * 1024,
    queueSize: 2,
  });
  const done = await upload.done();
  assert.equal(done.Key, 'big/file.bin');
  const got = await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'big/file.bin' }));
  assert.equal(got.ContentType, 'application/x-test');
  assert.equal(sha(Buffer.from(await got.Body.transformToByteArray())), sha(payload));
  const { data } = await service.storage.from(BUCKET).download('big/file.bin');
  assert.equal(data.size, payload.length);
  assert.equal(sql(`select count(*) from fluxbase.storage_s3_uploads where bucket_id = '${BUCKET}'`), '0');

  const { UploadId } = await sdk.send(new CreateMultipartUploadCommand({ Bucket: BUCKET, Key: 'big/aborted.bin' }));
  await sdk.send(new UploadPartCommand({ Bucket: BUCKET, Key: 'big/aborted.bin', UploadId, PartNumber: 1, Body: 'part one' }));
  const parts = await sdk.send(new ListPartsCommand({ Bucket: BUCKET, Key: 'big/aborted.bin', UploadId }));
  assert.deepEqual(parts.Parts.map((p) => [p.PartNumber, p.Size]), [[1, 8]]);
  await sdk.send(new AbortMultipartUploadCommand({ Bucket: BUCKET, Key: 'big/aborted.bin', UploadId }));
  await assert.rejects(
    sdk.send(new UploadPartCommand({ Bucket: BUCKET, Key: 'big/aborted.bin', UploadId, PartNumber: 2, Body: 'late' })),
    (e) => e.name === 'NoSuchUpload',
  );
  await assert.rejects(sdk.send(new HeadObjectCommand({ Bucket: BUCKET, Key: 'big/aborted.bin' })), (e) => e.$metadata.httpStatusCode === 404);
});

test('buckets: list, head, create, delete', async () => {
  const { Buckets } = await sdk.send(new ListBucketsCommand({}));
  assert.ok(Buckets.some((b) => b.Name === BUCKET));
  await sdk.send(new HeadBucketCommand({ Bucket: BUCKET }));
  const made = `s3made-${suffix}`;
  await sdk.send(new CreateBucketCommand({ Bucket: made }));
  const { data } = await service.storage.getBucket(made);
  assert.equal(data.id, made);
  await sdk.send(new DeleteBucketCommand({ Bucket: made }));
  await assert.rejects(sdk.send(new HeadBucketCommand({ Bucket: made })), (e) => e.$metadata.httpStatusCode === 404);
  await assert.rejects(sdk.send(new DeleteBucketCommand({ Bucket: BUCKET })), (e) => e.name === 'BucketNotEmpty');
});

test('limits: a body over the bucket limit is refused and nothing is kept', async () => {
  await assert.rejects(
    sdk.send(new PutObjectCommand({ Bucket: SMALL, Key: 'too-big.bin', Body: randomBytes(4096) })),
    (e) => e.name === 'EntityTooLarge' && e.$metadata.httpStatusCode === 400,
  );
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${SMALL}'`), '0');
});

test('refused signatures: wrong secret, unknown key, no signature, revoked key', async () => {
  const wrong = s3({ accessKeyId: key.id, secretAccessKey: `${key.secret}x` });
  await assert.rejects(wrong.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'range.txt' })), (e) => e.name === 'SignatureDoesNotMatch' && e.$metadata.httpStatusCode === 403);
  await assert.rejects(wrong.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'forged.txt', Body: 'x' })), (e) => e.name === 'SignatureDoesNotMatch');
  const unknown = s3({ accessKeyId: 'FBAKNOSUCHKEY0000000', secretAccessKey: key.secret });
  await assert.rejects(unknown.send(new ListBucketsCommand({})), (e) => e.name === 'InvalidAccessKeyId' && e.$metadata.httpStatusCode === 403);

  const bare = await fetch(`${endpoint}/${BUCKET}/range.txt`);
  assert.equal(bare.status, 403);
  const xml = await bare.text();
  assert.match(xml, /<Code>AccessDenied<\/Code>/);
  assert.match(xml, /<Resource>\/[^<]*range.txt<\/Resource>/);

  const other = s3Keys('create');
  const id = other.match(/access key id:\s+(\S+)/)[1];
  const secret = other.match(/secret access key:\s+(\S+)/)[1];
  const client = s3({ accessKeyId: id, secretAccessKey: secret });
  await client.send(new HeadBucketCommand({ Bucket: BUCKET }));
  assert.match(s3Keys('revoke', id), /revoked/);
  await assert.rejects(client.send(new HeadBucketCommand({ Bucket: BUCKET })), (e) => e.$metadata.httpStatusCode === 403);
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${BUCKET}' and name = 'forged.txt'`), '0');
});

test('presigned URLs: GET and PUT work until they expire', async () => {
  await sdk.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'signed/a.txt', Body: 'presigned read' }));
  const url = await presign('GET', `/${BUCKET}/signed/a.txt`, 60);
  const res = await fetch(url);
  assert.equal(res.status, 200);
  assert.equal(await res.text(), 'presigned read');

  const putUrl = await presign('PUT', `/${BUCKET}/signed/b.txt`, 60);
  assert.equal((await fetch(putUrl, { method: 'PUT', body: 'presigned write' })).status, 200);
  assert.equal(await text(await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'signed/b.txt' }))), 'presigned write');

  const tampered = url.replace('signed%2Fa.txt', 'signed%2Fb.txt').replace('/signed/a.txt', '/signed/b.txt');
  assert.equal((await fetch(tampered)).status, 403);

  const short = await presign('GET', `/${BUCKET}/signed/a.txt`, 1);
  await new Promise((r) => setTimeout(r, 2100));
  const expired = await fetch(short);
  assert.equal(expired.status, 403);
  const body = await expired.text();
  assert.match(body, /<Code>AccessDenied<\/Code>/);
  assert.match(body, /Request has expired/);
});

/** The SigV4 signing key, as the spec derives it. */
function signingKey(secret, date) {
  const h = (k, d) => createHmac('sha256', k).update(d).digest();
  return h(h(h(h(`AWS4${secret}`, date), region), 's3'), 'aws4_request');
}

/** A PutObject whose body is signed chunk by chunk (STREAMING-AWS4-HMAC-SHA256-PAYLOAD), `forge` spoiling one chunk's signature. */
async function chunkSignedPut(path, chunks, forge = -1) {
  const url = new URL(`${endpoint}${path}`);
  const decoded = chunks.reduce((n, c) => n + c.length, 0);
  const headers = {
    host: url.host,
    'content-encoding': 'aws-chunked',
    'x-amz-content-sha256': 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD',
    'x-amz-decoded-content-length': String(decoded),
  };
  const signed = await signer({ accessKeyId: key.id, secretAccessKey: key.secret }).sign({
    method: 'PUT', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: url.pathname, headers, query: {},
  });
  const auth = signed.headers.authorization;
  const amzDate = signed.headers['x-amz-date'];
  const scope = auth.match(/Credential=[^/]+\/([^,]+),/)[1];
  let previous = auth.match(/Signature=([0-9a-f]{64})/)[1];
  const k = signingKey(key.secret, amzDate.slice(0, 8));
  const empty = sha('');
  const parts = [];
  [...chunks, Buffer.alloc(0)].forEach((chunk, i) => {
    const sts = `AWS4-HMAC-SHA256-PAYLOAD\n${amzDate}\n${scope}\n${previous}\n${empty}\n${sha(chunk)}`;
    previous = createHmac('sha256', k).update(sts).digest('hex');
    const sig = i === forge ? previous.replace(/.$/, (c) => (c === '0' ? '1' : '0')) : previous;
    parts.push(Buffer.from(`${chunk.length.toString(16)};chunk-signature=${sig}\r\n`), chunk, Buffer.from('\r\n'));
  });
  const body = Buffer.concat(parts);
  const sent = { ...signed.headers };
  delete sent.host;
  return fetch(url, { method: 'PUT', headers: sent, body });
}

test('signed chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD) are checked one by one', async () => {
  const chunks = [randomBytes(64 * 1024), randomBytes(1000)];
  const ok = await chunkSignedPut(`/${BUCKET}/chunked/ok.bin`, chunks);
  assert.equal(ok.status, 200, await ok.clone().text());
  const got = await sdk.send(new GetObjectCommand({ Bucket: BUCKET, Key: 'chunked/ok.bin' }));
  assert.equal(sha(Buffer.from(await got.Body.transformToByteArray())), sha(Buffer.concat(chunks)));

  const forged = await chunkSignedPut(`/${BUCKET}/chunked/forged.bin`, chunks, 1);
  assert.equal(forged.status, 403);
  assert.match(await forged.text(), /<Code>SignatureDoesNotMatch<\/Code>/);
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${BUCKET}' and name = 'chunked/forged.bin'`), '0');
});

test('a body that does not match its signed hash is refused and not stored', async () => {
  const url = new URL(`${endpoint}/${BUCKET}/hash/x.txt`);
  const signed = await signer({ accessKeyId: key.id, secretAccessKey: key.secret }).sign({
    method: 'PUT', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: url.pathname,
    headers: { host: url.host, 'x-amz-content-sha256': sha('the signed body') }, query: {},
  });
  const sent = { ...signed.headers };
  delete sent.host;
  const res = await fetch(url, { method: 'PUT', headers: sent, body: 'another body!!!' });
  assert.equal(res.status, 400);
  assert.match(await res.text(), /<Code>XAmzContentSHA256Mismatch<\/Code>/);
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${BUCKET}' and name = 'hash/x.txt'`), '0');
});

test('an unsigned chunked body whose trailing CRC32 does not match is refused (BadDigest)', async () => {
  const url = new URL(`${endpoint}/${BUCKET}/trailer/x.txt`);
  const data = Buffer.from('checked by its trailer');
  const wrong = Buffer.alloc(4);
  wrong.writeUInt32BE((crc32(data) ^ 1) >>> 0);
  const signed = await signer({ accessKeyId: key.id, secretAccessKey: key.secret }).sign({
    method: 'PUT', protocol: 'http:', hostname: url.hostname, port: Number(url.port), path: url.pathname,
    headers: {
      host: url.host,
      'content-encoding': 'aws-chunked',
      'x-amz-content-sha256': 'STREAMING-UNSIGNED-PAYLOAD-TRAILER',
      'x-amz-trailer': 'x-amz-checksum-crc32',
      'x-amz-decoded-content-length': String(data.length),
    },
    query: {},
  });
  const sent = { ...signed.headers };
  delete sent.host;
  const body = (sum) => Buffer.concat([
    Buffer.from(`${data.length.toString(16)}\r\n`), data, Buffer.from(`\r\n0\r\nx-amz-checksum-crc32:${sum.toString('base64')}\r\n\r\n`),
  ]);
  const refused = await fetch(url, { method: 'PUT', headers: sent, body: body(wrong) });
  assert.equal(refused.status, 400);
  assert.match(await refused.text(), /<Code>BadDigest<\/Code>/);
  assert.equal(sql(`select count(*) from storage.objects where bucket_id = '${BUCKET}' and name = 'trailer/x.txt'`), '0');
  const right = Buffer.alloc(4);
  right.writeUInt32BE(crc32(data) >>> 0);
  assert.equal((await fetch(url, { method: 'PUT', headers: sent, body: body(right) })).status, 200);
});

test('session token: the anon key signs, the user JWT acts, RLS decides', async () => {
  const user = s3({ accessKeyId: 'fluxbase', secretAccessKey: env.anonKey, sessionToken: sign({ role: 'authenticated', sub: ADA }) });
  await user.send(new PutObjectCommand({ Bucket: SESSION, Key: `${ADA}/mine.txt`, Body: 'mine' }));
  assert.equal(await text(await user.send(new GetObjectCommand({ Bucket: SESSION, Key: `${ADA}/mine.txt` }))), 'mine');
  await assert.rejects(
    user.send(new PutObjectCommand({ Bucket: SESSION, Key: 'someone-else/theirs.txt', Body: 'no' })),
    (e) => e.name === 'AccessDenied' && e.$metadata.httpStatusCode === 403,
  );
  await sdk.send(new PutObjectCommand({ Bucket: SESSION, Key: 'someone-else/secret.txt', Body: 'hidden' }));
  await assert.rejects(user.send(new GetObjectCommand({ Bucket: SESSION, Key: 'someone-else/secret.txt' })), (e) => e.$metadata.httpStatusCode === 404);
  const listed = await user.send(new ListObjectsV2Command({ Bucket: SESSION }));
  assert.deepEqual(listed.Contents.map((c) => c.Key), [`${ADA}/mine.txt`]);

  const bad = s3({ accessKeyId: 'fluxbase', secretAccessKey: env.anonKey, sessionToken: 'not-a-jwt' });
  await assert.rejects(bad.send(new ListObjectsV2Command({ Bucket: SESSION })), (e) => e.$metadata.httpStatusCode === 403);
});
