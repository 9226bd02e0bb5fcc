-- Fluxbase 0.6.0 → 0.7.0. Source of extension/sql/fluxbase--0.6.0--0.7.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- Storage: one round trip per statement group (issue 17) ----
--   * fluxbase.storage_upload_token_spend: a signed upload's token is spent
--     in the write's own transaction, refusing a used one with FS400, so the
--     proxy sends redemption and write together.
-- @include-functions sql/storage.sql storage_upload_token_spend
REVOKE ALL ON FUNCTION fluxbase.storage_upload_token_spend(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.storage_upload_token_spend(text, timestamptz) TO authenticator;

-- ---- Storage: the S3 protocol's access keys and multipart uploads (helper s3p) ----
CREATE TABLE IF NOT EXISTS fluxbase.storage_s3_keys (
  access_key_id text PRIMARY KEY,
  secret_sealed text NOT NULL,
  description text NOT NULL DEFAULT '',
  created_at timestamptz NOT NULL DEFAULT now()
);
SELECT pg_catalog.pg_extension_config_dump('fluxbase.storage_s3_keys', '');

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

-- ---- Realtime (issues 15/16 gaps): binary broadcasts replayed, TOAST-ed
-- unchanged columns of an UPDATE read back by key.
DROP FUNCTION IF EXISTS fluxbase.realtime_replay(text, bigint, integer);
-- @include-functions sql/realtime.sql realtime_replay
REVOKE ALL ON FUNCTION fluxbase.realtime_replay(text, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_replay(text, bigint, integer) TO authenticator;
-- @include-functions sql/realtime_changes.sql realtime_unchanged
REVOKE ALL ON FUNCTION fluxbase.realtime_unchanged(oid, jsonb, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_unchanged(oid, jsonb, text[]) TO authenticator;

-- ---- Storage: bytes a crash left without a row are collected (issue 17) ----
--   * fluxbase.storage_pending_versions: a version being written, recorded
--     before its bytes are stored and dropped by the write that names it;
--     fluxbase.storage_pending_expired hands the sweeper the ones a crash left.
CREATE TABLE fluxbase.storage_pending_versions (
  version text PRIMARY KEY,
  bucket_id text NOT NULL,
  name text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now()
);
REVOKE ALL ON fluxbase.storage_pending_versions FROM PUBLIC;
GRANT SELECT, INSERT, DELETE ON fluxbase.storage_pending_versions TO authenticator;
-- @include-functions sql/storage.sql storage_pending_expired
REVOKE ALL ON FUNCTION fluxbase.storage_pending_expired(double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.storage_pending_expired(double precision) TO authenticator;

-- ---- Realtime (issue 15, write path): realtime.send in C for a public
-- message (no PL/pgSQL layer per row a trigger sends); other calls take
-- fluxbase.realtime_send_stored, the former PL/pgSQL body.
-- @include-functions sql/realtime.sql realtime_send_stored
CREATE OR REPLACE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true) RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'realtime_send_fast';
