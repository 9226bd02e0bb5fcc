// Where the storage tests look at the stored bytes themselves, on either
// backend: the local root (FLUXBASE_STORAGE_ROOT) or the S3 bucket
// (FLUXBASE_STORAGE_BACKEND=s3 and the FLUXBASE_STORAGE_S3_* variables,
// as scripts/test.sh sets them for the S3 pass).
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { S3Client, ListObjectsV2Command, ListMultipartUploadsCommand } from '@aws-sdk/client-s3';

export const onS3 = process.env.FLUXBASE_STORAGE_BACKEND === 's3';
export const root = onS3 ? undefined : process.env.FLUXBASE_STORAGE_ROOT;
export const S3_BUCKET = process.env.FLUXBASE_STORAGE_S3_BUCKET;
export const S3_PREFIX = process.env.FLUXBASE_STORAGE_S3_PREFIX ? `${process.env.FLUXBASE_STORAGE_S3_PREFIX}/` : '';

export const s3 = onS3
  ? new S3Client({
    endpoint: process.env.FLUXBASE_STORAGE_S3_ENDPOINT,
    region: process.env.FLUXBASE_STORAGE_S3_REGION ?? 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: process.env.AWS_ACCESS_KEY_ID, secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY },
  })
  : null;

/** Whether the stored bytes can be looked at (a local root, or S3). */
export const storeVisible = onS3 || Boolean(root);

/** The versions stored for one object (one key or file per version). */
export async function storedVersions(bucket, name) {
  if (onS3) {
    const prefix = `${S3_PREFIX}${bucket}/${name}/`;
    const out = await s3.send(new ListObjectsV2Command({ Bucket: S3_BUCKET, Prefix: prefix }));
    return (out.Contents ?? []).map((o) => o.Key.slice(prefix.length)).filter((v) => !v.includes('/'));
  }
  const dir = join(root, bucket, name);
  return existsSync(dir) ? readdirSync(dir, { withFileTypes: true }).filter((e) => e.isFile()).map((e) => e.name) : [];
}

/** Keys of the S3 multipart uploads open under `bucket/` (none on disk). */
export async function openUploads(bucket) {
  if (!onS3) return [];
  const out = await s3.send(new ListMultipartUploadsCommand({ Bucket: S3_BUCKET, Prefix: `${S3_PREFIX}${bucket}/` }));
  return (out.Uploads ?? []).map((u) => u.Key);
}
