-- Fluxbase 0.5.0 → 0.6.0. Source of extension/sql/fluxbase--0.5.0--0.6.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- Realtime II: Postgres changes (issue 16) ----
--   * the publication supabase_realtime (if absent) and the functions the
--     proxies read table changes with and check them under RLS
--     (fluxbase.realtime_feed_changes, realtime_relation,
--     realtime_subscription, realtime_visible).
-- @include sql/realtime_changes.sql
