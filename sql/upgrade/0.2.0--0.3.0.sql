-- Fluxbase 0.2.0 → 0.3.0. Source of extension/sql/fluxbase--0.2.0--0.3.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:
--   * the auth helpers every sign-in and refresh calls are PL/pgSQL instead
--     of SQL, so their plans are kept for the session instead of being
--     parsed and planned on every call (same results, same privileges).

-- @include-functions sql/auth_functions.sql auth_user_json auth_audit auth_password_candidate
