-- Generated from sql/upgrade/0.6.0--0.7.0.sql by scripts/pg.sh (upgrade_scripts_build): edit that file.
\echo Use "ALTER EXTENSION fluxbase UPDATE" to load this file. \quit
-- Fluxbase 0.6.0 → 0.7.0. Source of extension/sql/fluxbase--0.6.0--0.7.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- Storage: one round trip per statement group (issue 17) ----
--   * fluxbase.storage_upload_token_spend: a signed upload's token is spent
--     in the write's own transaction, refusing a used one with FS400, so the
--     proxy sends redemption and write together.

-- ---- sql/storage.sql: fluxbase.storage_upload_token_spend ----
CREATE OR REPLACE FUNCTION fluxbase.storage_upload_token_spend(token text, expires timestamptz)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  IF token IS NOT NULL AND NOT fluxbase.storage_upload_token_redeem(token, expires) THEN
    RAISE EXCEPTION 'The signed upload URL was already used' USING ERRCODE = 'FS400';
  END IF;
END
$$;
REVOKE ALL ON FUNCTION fluxbase.storage_upload_token_spend(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.storage_upload_token_spend(text, timestamptz) TO authenticator;
