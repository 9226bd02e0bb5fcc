-- Fluxbase 0.6.0 → 0.7.0. Source of extension/sql/fluxbase--0.6.0--0.7.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- Realtime (issues 15/16 gaps): binary broadcasts replayed, TOAST-ed
-- unchanged columns of an UPDATE read back by key.
DROP FUNCTION IF EXISTS fluxbase.realtime_replay(text, bigint, integer);
-- @include-functions sql/realtime.sql realtime_replay
REVOKE ALL ON FUNCTION fluxbase.realtime_replay(text, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_replay(text, bigint, integer) TO authenticator;
-- @include-functions sql/realtime_changes.sql realtime_unchanged
REVOKE ALL ON FUNCTION fluxbase.realtime_unchanged(oid, jsonb, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_unchanged(oid, jsonb, text[]) TO authenticator;
