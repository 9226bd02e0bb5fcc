-- Fluxbase 0.1.0 → 0.2.0. Source of extension/sql/fluxbase--0.1.0--0.2.0.sql:
-- `-- @include FILE` lines are replaced by FILE (scripts/pg.sh,
-- upgrade_scripts_build). What changed:
--   * Supabase's auth schema and the fluxbase.auth_* functions (new);
--   * the REST schema cache is invalidated through Postgres' relcache
--     invalidation: fluxbase.invalidate_schema_caches(), called by the DDL
--     event trigger and by reload_schema();
--   * fluxbase.rest_raw() takes text instead of json (no double parse);
--   * DROP EXTENSION fluxbase needs SET fluxbase.allow_drop_with_data = on.

DROP FUNCTION fluxbase.rest_raw(json, json);
CREATE FUNCTION fluxbase.rest_raw("request" text, "claims" text) RETURNS text
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'rest_raw_wrapper';

CREATE FUNCTION fluxbase.invalidate_schema_caches() RETURNS void
STRICT VOLATILE
LANGUAGE c
AS 'MODULE_PATHNAME', 'invalidate_schema_caches_wrapper';
REVOKE ALL ON FUNCTION fluxbase.invalidate_schema_caches() FROM PUBLIC;

CREATE OR REPLACE FUNCTION fluxbase.bump_schema_version() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  PERFORM nextval('fluxbase.schema_version');
  PERFORM fluxbase.invalidate_schema_caches();
END
$$;

CREATE OR REPLACE FUNCTION fluxbase.reload_schema() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  PERFORM fluxbase.invalidate_schema_caches();
  RETURN nextval('fluxbase.schema_version');
END
$$;
REVOKE ALL ON FUNCTION fluxbase.reload_schema() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.reload_schema() TO authenticator;

-- @include sql/auth_schema.sql
-- @include sql/auth_functions.sql
-- @include sql/drop_guard.sql
