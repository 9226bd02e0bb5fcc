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

--   * The OAuth 2.1 server (sql/auth/oauth_server.sql): GoTrue's
--     auth.oauth_clients, auth.oauth_authorizations and auth.oauth_consents
--     (with their enum types), auth.sessions.oauth_client_id and .scopes,
--     and the fluxbase.auth_oauth_client_*, auth_oauth_authorize,
--     auth_oauth_authorization_details, auth_oauth_consent,
--     auth_oauth_code_exchange, auth_oauth_refresh and auth_oauth_grant*
--     functions (granted to authenticator only, in the file itself).
-- @include sql/auth/oauth_server.sql
