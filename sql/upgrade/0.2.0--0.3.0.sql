-- Fluxbase 0.2.0 → 0.3.0. Source of extension/sql/fluxbase--0.2.0--0.3.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:
--   * the auth helpers every sign-in and refresh calls are PL/pgSQL instead
--     of SQL, so their plans are kept for the session instead of being
--     parsed and planned on every call (same results, same privileges);
--   * auth_mfa_result takes the failure limit and checks it under a per-user
--     lock (concurrent wrong codes could each pass the proxy's earlier check);
--     auth_mfa_secret no longer counts failures for that earlier check.

-- @include-functions sql/auth_functions.sql auth_user_json auth_audit auth_password_candidate

DROP FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, text, text, bigint);
-- @include-functions sql/auth_functions.sql auth_mfa_result
REVOKE ALL ON FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, text, text, bigint, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, text, text, bigint, int, int) TO authenticator;

DROP FUNCTION fluxbase.auth_mfa_secret(uuid, uuid, uuid, uuid, int);
-- @include-functions sql/auth_functions.sql auth_mfa_secret
REVOKE ALL ON FUNCTION fluxbase.auth_mfa_secret(uuid, uuid, uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_mfa_secret(uuid, uuid, uuid, uuid) TO authenticator;
