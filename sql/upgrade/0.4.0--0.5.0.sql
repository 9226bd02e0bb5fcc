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

--   * Realtime's database side (sql/realtime.sql): the realtime schema with
--     Supabase's realtime.messages, realtime.topic(), realtime.send(),
--     realtime.send_binary() and realtime.broadcast_changes(); the trigger
--     that hands broadcast rows to the proxies (fluxbase.realtime_emit), and
--     the proxy's functions for private channels, replay, the HTTP API, the
--     logical-decoding feed and pruning (fluxbase.realtime_*).
-- @include sql/realtime.sql
--   * fluxbase.realtime_publish (Rust, extension/src/realtime.rs): a public
--     broadcast from SQL handed to the proxies in one C call.
CREATE FUNCTION fluxbase."realtime_publish"(
	"topic" TEXT,
	"event" TEXT,
	"payload" TEXT,
	"binary" bytea
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'realtime_publish_wrapper';
