-- Generated from sql/upgrade/0.6.0--0.7.0.sql by scripts/pg.sh (upgrade_scripts_build): edit that file.
\echo Use "ALTER EXTENSION fluxbase UPDATE" to load this file. \quit
-- Fluxbase 0.6.0 → 0.7.0. Source of extension/sql/fluxbase--0.6.0--0.7.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- Storage: one round trip per statement group (issue 17) ----
--   * fluxbase.storage_upload_token_spend: a signed upload's token is spent
--     in the write's own transaction, refusing a used one with FS400, so the
--     proxy sends redemption and write together.

-- ---- sql/storage.sql: fluxbase.storage_upload_token_spend ----
CREATE OR REPLACE FUNCTION fluxbase.storage_upload_token_spend(token text, expires timestamptz)
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

-- ---- sql/realtime.sql: fluxbase.realtime_replay ----
CREATE OR REPLACE FUNCTION fluxbase.realtime_replay(p_topic text, p_since_ms bigint, p_limit integer)
RETURNS TABLE (id uuid, event text, payload jsonb, binary_payload bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
SELECT r.id, r.event, r.payload, r.binary_payload FROM (
  SELECT m.id, m.event, m.payload, m.binary_payload, m.inserted_at
  FROM realtime.messages m
  WHERE m.topic = p_topic AND m.private AND m.extension = 'broadcast' AND m.event IS NOT NULL
    AND m.inserted_at >= to_timestamp(p_since_ms / 1000.0)::timestamp
  ORDER BY m.inserted_at DESC
  LIMIT least(greatest(p_limit, 0), 25)
) r
ORDER BY r.inserted_at;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_replay(text, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_replay(text, bigint, integer) TO authenticator;

-- ---- sql/realtime_changes.sql: fluxbase.realtime_unchanged ----
CREATE OR REPLACE FUNCTION fluxbase.realtime_unchanged(p_relid oid, p_keys jsonb, p_columns text[])
RETURNS TABLE (idx integer, vals text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  target text;
  joined text;
  picked text;
BEGIN
  SELECT format('%I.%I', n.nspname, c.relname) INTO target
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = p_relid
    AND EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                WHERE p.pubname = 'supabase_realtime' AND pr.prrelid = p_relid
                UNION ALL
                SELECT 1 FROM pg_publication p WHERE p.pubname = 'supabase_realtime' AND p.puballtables);
  IF target IS NULL OR jsonb_array_length(p_keys) = 0 THEN
    RETURN;
  END IF;
  SELECT string_agg(format('t.%1$I = k.%1$I', a.attname), ' AND ' ORDER BY a.attnum) INTO joined
  FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
  WHERE i.indrelid = p_relid AND i.indisprimary;
  SELECT string_agg(coalesce(format('t.%I::text', a.attname), 'NULL::text'), ', ' ORDER BY c.o) INTO picked
  FROM unnest(p_columns) WITH ORDINALITY c(name, o)
  LEFT JOIN pg_attribute a ON a.attrelid = p_relid AND a.attname = c.name AND a.attnum > 0 AND NOT a.attisdropped;
  IF joined IS NULL OR picked IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY EXECUTE format('SELECT k.ordinality::integer, ARRAY[%s] FROM jsonb_populate_recordset(NULL::%s, $1) '
    'WITH ORDINALITY k JOIN %s t ON %s', picked, target, target, joined) USING p_keys;
END;
$$;
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

-- ---- sql/storage.sql: fluxbase.storage_pending_expired ----
CREATE OR REPLACE FUNCTION fluxbase.storage_pending_expired(older_than double precision)
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

-- ---- Realtime (issue 15, write path): realtime.send in C for a public
-- message (no PL/pgSQL layer per row a trigger sends); other calls take
-- fluxbase.realtime_send_stored, the former PL/pgSQL body.

-- ---- sql/realtime.sql: fluxbase.realtime_send_stored ----
CREATE OR REPLACE FUNCTION fluxbase.realtime_send_stored(payload jsonb, event text, topic text, private boolean) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF NOT coalesce(private, true) THEN
    PERFORM fluxbase.realtime_publish(topic, event, payload::text, NULL);
    RETURN;
  END IF;
  PERFORM set_config('realtime.topic', topic, true);
  BEGIN
    INSERT INTO realtime.messages (payload, event, topic, private, extension)
    VALUES (payload, event, topic, private, 'broadcast');
  EXCEPTION
    WHEN OTHERS THEN
      PERFORM pg_notify('realtime:system', jsonb_build_object('error', SQLERRM, 'function', 'realtime.send',
        'event', event, 'topic', topic, 'private', private)::text);
  END;
END;
$$;
CREATE OR REPLACE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true) RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'realtime_send_fast';
