-- Fluxbase 0.5.0 → 0.6.0. Source of extension/sql/fluxbase--0.5.0--0.6.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- storage (issue 17) ----
--   * Supabase Storage's database side (sql/storage.sql): the storage schema
--     with storage.buckets and storage.objects (RLS on), storage.foldername(),
--     storage.filename(), storage.extension(), storage.search(), and the
--     proxy's fluxbase.storage_* helpers (bucket rules, unchecked reads for
--     public and signed downloads, signed-upload tokens redeemed once).
-- @include sql/storage.sql
