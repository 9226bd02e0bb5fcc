-- Schema changes reach every backend's REST schema cache: each DDL command
-- (and `NOTIFY pgrst, 'reload schema'`, through reload_schema()) sends a
-- relcache "invalidate all" message that every backend processes before its
-- next request. Created last: the functions need the extension's C entry
-- points, and event triggers would fire on the extension's own DDL.

REVOKE ALL ON FUNCTION fluxbase.invalidate_schema_caches() FROM PUBLIC;

-- Start the counter at 1, so that the first DDL command moves it (a fresh
-- sequence's first nextval returns its last_value, 1, unchanged).
SELECT nextval('fluxbase.schema_version');

-- SECURITY DEFINER: any role that may run DDL must be able to signal it
-- without holding privileges on the counter.
CREATE FUNCTION fluxbase.bump_schema_version() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  PERFORM nextval('fluxbase.schema_version');
  PERFORM fluxbase.invalidate_schema_caches();
END
$$;
REVOKE ALL ON FUNCTION fluxbase.bump_schema_version() FROM PUBLIC;

-- What `NOTIFY pgrst, 'reload schema'` does for PostgREST: every backend's
-- schema cache reloads on its next request (DDL does this by itself).
CREATE FUNCTION fluxbase.reload_schema() RETURNS bigint
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  PERFORM fluxbase.invalidate_schema_caches();
  RETURN nextval('fluxbase.schema_version');
END
$$;
REVOKE ALL ON FUNCTION fluxbase.reload_schema() FROM PUBLIC;
-- The proxy calls it when it hears `NOTIFY pgrst, 'reload schema'`.
GRANT EXECUTE ON FUNCTION fluxbase.reload_schema() TO authenticator;

CREATE EVENT TRIGGER fluxbase_ddl_command_end ON ddl_command_end
  EXECUTE FUNCTION fluxbase.bump_schema_version();
CREATE EVENT TRIGGER fluxbase_sql_drop ON sql_drop
  EXECUTE FUNCTION fluxbase.bump_schema_version();
