-- Every fluxbase.auth_* function: EXECUTE for `authenticator` only. Loaded
-- after all of sql/auth/.
DO $grants$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = 'fluxbase'::regnamespace AND p.proname LIKE 'auth\_%'
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticator', f);
  END LOOP;
END
$grants$;
