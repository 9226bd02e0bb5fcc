-- Fluxbase 0.4.0 → 0.5.0. Source of extension/sql/fluxbase--0.4.0--0.5.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:
--   * fluxbase.rest_raw returns a body over 1 MiB in pieces: its first line
--     becomes `status length` and the proxy reads the body with the new
--     fluxbase.rest_body(), 256 KiB a row, while it sends it (a 0.4.0 proxy
--     cannot read such a response: upgrade them together).

CREATE FUNCTION fluxbase."rest_body"() RETURNS SETOF bytea
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rest_body_wrapper';

