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

--   * Auth parity with GoTrue 2.18x (issue 14, docs/auth.md): the admin
--     user list is newest first; a user's factors for an unknown user are
--     404 user_not_found; generate_link email_change_current/_new
--     (fluxbase.auth_admin_email_change_link); a user made for an e-mail or
--     SMS that could not be delivered is removed again
--     (auth_send_token says 'created', fluxbase.auth_withdraw_new_user); a
--     replayed passkey challenge is told from an expired one; WebAuthn MFA
--     factors in Supabase's columns (mfa_factors.web_authn_credential,
--     web_authn_aaguid, mfa_challenges.web_authn_session_data) with
--     fluxbase.auth_mfa_webauthn_begin/_state/_result, and auth_mfa_result's
--     wording and amr method for them.
ALTER TABLE auth.mfa_factors ADD COLUMN IF NOT EXISTS web_authn_credential jsonb,
  ADD COLUMN IF NOT EXISTS web_authn_aaguid uuid;
ALTER TABLE auth.mfa_challenges ADD COLUMN IF NOT EXISTS web_authn_session_data jsonb;
-- @include-functions sql/auth/mfa.sql auth_mfa_result auth_mfa_webauthn_begin auth_mfa_webauthn_state auth_mfa_webauthn_result
-- @include-functions sql/auth/admin.sql auth_admin_list auth_admin_factors auth_admin_email_change_link
-- @include-functions sql/auth/otp.sql auth_send_token auth_withdraw_new_user
-- @include-functions sql/auth/passkey.sql auth_passkey_take_challenge
-- @include sql/auth/grants.sql

--   * The OAuth 2.1 server (sql/auth/oauth_server.sql): GoTrue's
--     auth.oauth_clients, auth.oauth_authorizations and auth.oauth_consents
--     (with their enum types), auth.sessions.oauth_client_id and .scopes,
--     and the fluxbase.auth_oauth_client_*, auth_oauth_authorize,
--     auth_oauth_authorization_details, auth_oauth_consent,
--     auth_oauth_code_exchange, auth_oauth_refresh and auth_oauth_grant*
--     functions (granted to authenticator only, in the file itself).
-- @include sql/auth/oauth_server.sql
