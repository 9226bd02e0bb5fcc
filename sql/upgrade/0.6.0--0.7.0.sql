-- Fluxbase 0.6.0 → 0.7.0. Source of extension/sql/fluxbase--0.6.0--0.7.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- Storage: one round trip per statement group (issue 17) ----
--   * fluxbase.storage_upload_token_spend: a signed upload's token is spent
--     in the write's own transaction, refusing a used one with FS400, so the
--     proxy sends redemption and write together.
-- @include-functions sql/storage.sql storage_upload_token_spend
REVOKE ALL ON FUNCTION fluxbase.storage_upload_token_spend(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.storage_upload_token_spend(text, timestamptz) TO authenticator;
