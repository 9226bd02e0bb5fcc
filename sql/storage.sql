-- Supabase Storage's database side, in its names, so seed files, policies
-- and migrations written for Supabase load unchanged:
--   * storage.buckets and storage.objects with storage-api's columns,
--     defaults, constraints and indexes (as its migrations leave them:
--     path_tokens generated from the name, owner_id beside the deprecated
--     uuid owner, version naming the bytes, user_metadata);
--   * storage.foldername(), storage.filename(), storage.extension() for
--     policies, storage.search() for listing (the proxy lists through it,
--     as the caller, so RLS decides what is listed);
--   * row-level security on both tables, no policy: until a policy says
--     otherwise only service_role (BYPASSRLS) reads or writes them.
-- The proxy (proxy/src/storage) runs every metadata change as the caller
-- (fluxbase.authenticate: role and claims, transaction-local); the few
-- reads that must not depend on the caller's policies (a bucket's limits
-- before an upload, a public or signed download) go through the two
-- SECURITY DEFINER functions at the end, executable by authenticator only.
-- In a database that moved over from Supabase the schema and tables exist
-- already and are kept; only what is missing is added.

DO $schema$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'storage') THEN
    CREATE SCHEMA storage;
  END IF;
END
$schema$;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role, authenticator;

CREATE TABLE IF NOT EXISTS storage.buckets (
  id text NOT NULL,
  name text NOT NULL,
  owner uuid,
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now(),
  public boolean DEFAULT false,
  avif_autodetection boolean DEFAULT false,
  file_size_limit bigint,
  allowed_mime_types text[],
  owner_id text,
  CONSTRAINT buckets_pkey PRIMARY KEY (id),
  CONSTRAINT buckets_name_length_check CHECK (length(name) > 0 AND length(name) < 64)
);
CREATE UNIQUE INDEX IF NOT EXISTS bname ON storage.buckets USING btree (name);

CREATE TABLE IF NOT EXISTS storage.objects (
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  bucket_id text,
  name text,
  owner uuid,
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now(),
  last_accessed_at timestamptz DEFAULT now(),
  metadata jsonb,
  path_tokens text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED,
  version text,
  owner_id text,
  user_metadata jsonb,
  CONSTRAINT objects_pkey PRIMARY KEY (id),
  CONSTRAINT "objects_bucketId_fkey" FOREIGN KEY (bucket_id) REFERENCES storage.buckets (id)
);
CREATE UNIQUE INDEX IF NOT EXISTS bucketid_objname ON storage.objects USING btree (bucket_id, name);
CREATE INDEX IF NOT EXISTS name_prefix_search ON storage.objects USING btree (name text_pattern_ops);

ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
GRANT ALL ON storage.buckets, storage.objects TO anon, authenticated, service_role;
SELECT pg_catalog.pg_extension_config_dump('storage.buckets', '');
SELECT pg_catalog.pg_extension_config_dump('storage.objects', '');

CREATE OR REPLACE FUNCTION storage.update_updated_at_column() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  NEW.updated_at = now();
  RETURN NEW;
END;
$$;

DO $trigger$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'update_objects_updated_at'
                 AND tgrelid = 'storage.objects'::regclass) THEN
    CREATE TRIGGER update_objects_updated_at BEFORE UPDATE ON storage.objects
      FOR EACH ROW EXECUTE FUNCTION storage.update_updated_at_column();
  END IF;
END
$trigger$;

-- 'a/b/c.png' → {a,b}
CREATE OR REPLACE FUNCTION storage.foldername(name text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  _parts text[];
BEGIN
  SELECT string_to_array(name, '/') INTO _parts;
  RETURN _parts[1:array_length(_parts, 1) - 1];
END
$$;

-- 'a/b/c.png' → c.png
CREATE OR REPLACE FUNCTION storage.filename(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  _parts text[];
BEGIN
  SELECT string_to_array(name, '/') INTO _parts;
  RETURN _parts[array_length(_parts, 1)];
END
$$;

-- 'a/b/c.tar.gz' → gz
CREATE OR REPLACE FUNCTION storage.extension(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  _parts text[];
  _filename text;
BEGIN
  SELECT string_to_array(name, '/') INTO _parts;
  SELECT _parts[array_length(_parts, 1)] INTO _filename;
  RETURN reverse(split_part(reverse(_filename), '.', 1));
END
$$;

-- One level of a bucket under `prefix` (which ends in '/' or is empty;
-- `levels` is the level listed, 1 for the top): the folders first (id
-- NULL), then the objects, as storage-api's search. Security invoker: the
-- caller's policies decide which rows are seen.
CREATE OR REPLACE FUNCTION storage.search(
  prefix text,
  bucketname text,
  limits int DEFAULT 100,
  levels int DEFAULT 1,
  offsets int DEFAULT 0,
  search text DEFAULT '',
  sortcolumn text DEFAULT 'name',
  sortorder text DEFAULT 'asc'
) RETURNS TABLE (
  name text,
  id uuid,
  updated_at timestamptz,
  created_at timestamptz,
  last_accessed_at timestamptz,
  metadata jsonb
)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_order_by text;
  v_sort_order text;
BEGIN
  v_order_by := CASE sortcolumn
    WHEN 'updated_at' THEN 'updated_at'
    WHEN 'created_at' THEN 'created_at'
    WHEN 'last_accessed_at' THEN 'last_accessed_at'
    ELSE 'name' END;
  v_sort_order := CASE WHEN lower(sortorder) = 'desc' THEN 'desc' ELSE 'asc' END;
  v_order_by := v_order_by || ' ' || v_sort_order;

  RETURN QUERY EXECUTE
    'WITH folders AS (
       SELECT path_tokens[$1] AS folder
       FROM storage.objects
       WHERE objects.name ILIKE $2 || $3 || ''%''
         AND bucket_id = $4
         AND array_length(objects.path_tokens, 1) <> $1
       GROUP BY folder
       ORDER BY folder ' || v_sort_order || '
     )
     (SELECT folder AS "name", NULL::uuid AS id, NULL::timestamptz AS updated_at,
             NULL::timestamptz AS created_at, NULL::timestamptz AS last_accessed_at,
             NULL::jsonb AS metadata
      FROM folders)
     UNION ALL
     (SELECT path_tokens[$1] AS "name", id, updated_at, created_at, last_accessed_at, metadata
      FROM storage.objects
      WHERE objects.name ILIKE $2 || $3 || ''%''
        AND bucket_id = $4
        AND array_length(objects.path_tokens, 1) = $1
      ORDER BY ' || v_order_by || ')
     LIMIT $5
     OFFSET $6' USING levels, prefix, search, bucketname, limits, offsets;
END
$$;

GRANT EXECUTE ON FUNCTION storage.foldername(text), storage.filename(text), storage.extension(text),
  storage.search(text, text, int, int, int, text, text, text)
  TO anon, authenticated, service_role;

-- A bucket's rules for the proxy, whatever the caller's policies on
-- storage.buckets say: an upload is checked against the bucket's limits
-- before a byte is stored, as storage-api reads them as its superuser.
CREATE OR REPLACE FUNCTION fluxbase.storage_bucket_rules(bucket text)
RETURNS TABLE (public boolean, file_size_limit bigint, allowed_mime_types text[])
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT coalesce(b.public, false), b.file_size_limit, b.allowed_mime_types
  FROM storage.buckets b WHERE b.id = bucket;
$$;

-- An object read without the caller's policies: for a public bucket's
-- object (`public_only`), or through a signed URL the proxy has verified.
CREATE OR REPLACE FUNCTION fluxbase.storage_object_unchecked(bucket text, object_name text, public_only boolean)
RETURNS TABLE (id uuid, version text, metadata jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT o.id, o.version, o.metadata
  FROM storage.objects o JOIN storage.buckets b ON b.id = o.bucket_id
  WHERE o.bucket_id = bucket AND o.name = object_name
    AND (NOT public_only OR coalesce(b.public, false));
$$;

-- Signed upload URLs work once: a token's id is recorded when it is
-- redeemed (and forgotten when it has expired anyway).
CREATE TABLE IF NOT EXISTS fluxbase.storage_upload_tokens (
  token_id text PRIMARY KEY,
  expires_at timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION fluxbase.storage_upload_token_redeem(token text, expires timestamptz)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  inserted int;
BEGIN
  DELETE FROM fluxbase.storage_upload_tokens WHERE expires_at < now();
  INSERT INTO fluxbase.storage_upload_tokens (token_id, expires_at) VALUES (token, expires)
  ON CONFLICT (token_id) DO NOTHING;
  GET DIAGNOSTICS inserted = ROW_COUNT;
  RETURN inserted = 1;
END
$$;

-- The same for the proxy's pipelined write: refuses a token already used
-- (SQLSTATE FS400) so the write sent with it does not commit; no token (an
-- upload as the caller) is a no-op. Supersedes storage_upload_token_redeem,
-- kept for 0.6.0 proxies.
CREATE FUNCTION fluxbase.storage_upload_token_spend(token text, expires timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  IF token IS NOT NULL AND NOT fluxbase.storage_upload_token_redeem(token, expires) THEN
    RAISE EXCEPTION 'The signed upload URL was already used' USING ERRCODE = 'FS400';
  END IF;
END
$$;

REVOKE ALL ON FUNCTION fluxbase.storage_bucket_rules(text),
  fluxbase.storage_object_unchecked(text, text, boolean),
  fluxbase.storage_upload_token_redeem(text, timestamptz),
  fluxbase.storage_upload_token_spend(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.storage_bucket_rules(text),
  fluxbase.storage_object_unchecked(text, text, boolean),
  fluxbase.storage_upload_token_redeem(text, timestamptz),
  fluxbase.storage_upload_token_spend(text, timestamptz) TO authenticator;

-- ---------------------------------------------------------------------------
-- Versions being written. An upload records its version here (with its dry
-- run, before a byte is stored) and the write that names it in
-- storage.objects deletes the record in the same transaction; a record that
-- outlives any request names bytes a crash left without a row, and the
-- proxy's sweeper deletes them (fluxbase.storage_pending_expired).
CREATE TABLE IF NOT EXISTS fluxbase.storage_pending_versions (
  version text PRIMARY KEY,
  bucket_id text NOT NULL,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON fluxbase.storage_pending_versions FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON fluxbase.storage_pending_versions TO authenticator;

-- Forgets the records older than `older_than` seconds and returns them,
-- except a version storage.objects names (whatever the caller's policies),
-- whose record is just dropped: the bytes a sweeper may delete.
CREATE FUNCTION fluxbase.storage_pending_expired(older_than double precision)
RETURNS TABLE (bucket_id text, name text, version text)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  WITH gone AS (
    DELETE FROM fluxbase.storage_pending_versions p
    WHERE p.created_at < now() - make_interval(secs => older_than)
    RETURNING p.bucket_id, p.name, p.version
  )
  SELECT g.bucket_id, g.name, g.version FROM gone g
  WHERE NOT EXISTS (
    SELECT 1 FROM storage.objects o WHERE o.bucket_id = g.bucket_id AND o.name = g.name AND o.version = g.version);
$$;
REVOKE ALL ON FUNCTION fluxbase.storage_pending_expired(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.storage_pending_expired(double precision) TO authenticator;

-- ---------------------------------------------------------------------------
-- The S3 protocol (/storage/v1/s3, proxy/src/storage/s3.rs).
-- Access keys: SigV4 needs the secret itself to verify a signature, so it
-- cannot be hashed; it is sealed (AES-256-GCM, the access key id as
-- associated data) with storage.s3_encryption_key, which only the proxy's
-- configuration holds. A dump of this table (kept by pg_dump, like the
-- objects) hands out no usable secret. Keys are made by `fluxbase s3-keys
-- create` (the proxy's binary seals them) and revoked by deleting the row
-- (`fluxbase s3-keys revoke ID`, or SQL).
CREATE TABLE IF NOT EXISTS fluxbase.storage_s3_keys (
  access_key_id text PRIMARY KEY,
  secret_sealed text NOT NULL,
  description text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('fluxbase.storage_s3_keys', '');

-- Multipart uploads in progress: the object's attributes given at
-- CreateMultipartUpload, and each part's file in the backend
-- (`~s3-multipart/<upload>/<part>-<uuid>`) until Complete or Abort.
CREATE TABLE IF NOT EXISTS fluxbase.storage_s3_uploads (
  upload_id uuid PRIMARY KEY,
  bucket_id text NOT NULL,
  name text NOT NULL,
  content_type text NOT NULL,
  cache_control text NOT NULL,
  user_metadata jsonb,
  created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS fluxbase.storage_s3_parts (
  upload_id uuid NOT NULL REFERENCES fluxbase.storage_s3_uploads ON DELETE CASCADE,
  part_number integer NOT NULL CHECK (part_number BETWEEN 1 AND 10000),
  key text NOT NULL,
  size bigint NOT NULL,
  etag text NOT NULL,
  PRIMARY KEY (upload_id, part_number)
);

REVOKE ALL ON fluxbase.storage_s3_keys, fluxbase.storage_s3_uploads, fluxbase.storage_s3_parts FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON fluxbase.storage_s3_keys TO authenticator;
GRANT SELECT, INSERT, UPDATE, DELETE ON fluxbase.storage_s3_uploads, fluxbase.storage_s3_parts TO authenticator;
