-- DROP EXTENSION fluxbase would take auth.users and every other table the
-- extension created with it, rows and all (they are extension members so
-- that pg_dump keeps their rows; it is how extension data works). It is
-- refused unless the session says it means it:
--   SET fluxbase.allow_drop_with_data = on;  DROP EXTENSION fluxbase;
-- The check must run at ddl_command_start: by sql_drop the extension's own
-- event triggers are gone. That event does not say which extension is
-- being dropped, so the statement's text is read; a DROP that names
-- fluxbase in an unusual way slips through, one that names it plainly
-- never does.
CREATE OR REPLACE FUNCTION fluxbase.guard_drop() RETURNS event_trigger
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  IF current_setting('fluxbase.allow_drop_with_data', true) IS DISTINCT FROM 'on'
     AND lower(current_query()) ~ 'drop\s+extension\s+(if\s+exists\s+)?([a-z0-9_"]+\s*,\s*)*"?fluxbase"?(\s|,|;|$)' THEN
    RAISE EXCEPTION 'DROP EXTENSION fluxbase would delete the auth schema''s users, sessions and identities'
      USING ERRCODE = 'FB012',
        HINT = 'Back up first; then SET fluxbase.allow_drop_with_data = on in the same session to confirm.';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION fluxbase.guard_drop() FROM PUBLIC;

DO $guard$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_event_trigger WHERE evtname = 'fluxbase_guard_drop') THEN
    CREATE EVENT TRIGGER fluxbase_guard_drop ON ddl_command_start WHEN TAG IN ('DROP EXTENSION')
      EXECUTE FUNCTION fluxbase.guard_drop();
  END IF;
END
$guard$;
