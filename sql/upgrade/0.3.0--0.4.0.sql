-- Fluxbase 0.3.0 → 0.4.0. Source of extension/sql/fluxbase--0.3.0--0.4.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:
--   * the request context (client address, user agent, request id) is read
--     from the transaction-local settings request.ip, request.user_agent and
--     request.id, which the proxy sets in the same statement, instead of
--     being passed to every auth function: the functions below lose their
--     p_ip, p_user_agent and p_request_id arguments;
--   * one refusal convention: auth_mfa_result's failure limit and
--     auth_pkce_exchange's unknown code are raised (FAnnn) instead of
--     returned; auth_password_outcome returns {error, status, msg} for a
--     wrong password instead of NULL (a returned refusal is kept only where
--     its writes must commit: sql/auth/helpers.sql lists them);
--   * sql/auth_functions.sql is split by area into sql/auth/*.sql (no
--     change to the installed objects).
--   * password lockout per (identifier, client address) with a per-identifier
--     ceiling, in a sliding window, the same for unknown identifiers:
--     fluxbase.auth_failures (per user, never decaying) is replaced by
--     fluxbase.auth_password_failures; auth_password_candidate and
--     auth_password_outcome take the identifier and the limits;
--   * sign-up of a confirmed address with confirmations on answers a made-up
--     user (auth_obfuscated_user), as Supabase Auth does.

-- lockout
ALTER EXTENSION fluxbase DROP TABLE fluxbase.auth_failures;
DROP TABLE fluxbase.auth_failures;
CREATE TABLE fluxbase.auth_password_failures (
  identifier text NOT NULL,
  ip text NOT NULL,
  at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX auth_password_failures_identifier_at ON fluxbase.auth_password_failures (identifier, at);
CREATE INDEX auth_password_failures_at ON fluxbase.auth_password_failures (at);

-- helpers
DROP FUNCTION fluxbase.auth_audit(text, uuid, text, text, jsonb);
DROP FUNCTION fluxbase.auth_issue_session(uuid, text, text, text, text);
DROP FUNCTION fluxbase.auth_token_failed(uuid, auth.one_time_token_type[], text, text);
-- @include-functions sql/auth/helpers.sql auth_audit auth_issue_session auth_token_failed
REVOKE ALL ON FUNCTION fluxbase.auth_audit(text, uuid, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_audit(text, uuid, jsonb) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_issue_session(uuid, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_issue_session(uuid, text, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_token_failed(uuid, auth.one_time_token_type[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_token_failed(uuid, auth.one_time_token_type[]) TO authenticator;

-- session
DROP FUNCTION fluxbase.auth_signup(text, text, text, jsonb, boolean, boolean, text, text, text, text);
DROP FUNCTION fluxbase.auth_password_outcome(uuid, boolean, int, int, text, text, text, text, text);
DROP FUNCTION fluxbase.auth_refresh(text, text, int, text, text);
DROP FUNCTION fluxbase.auth_logout(uuid, uuid, text, text, text);
DROP FUNCTION fluxbase.auth_password_candidate(text, text);
-- @include-functions sql/auth/session.sql auth_signup auth_obfuscated_user auth_password_lock_wait auth_password_refuse_locked auth_password_candidate auth_password_outcome auth_refresh auth_logout
REVOKE ALL ON FUNCTION fluxbase.auth_signup(text, text, text, jsonb, boolean, boolean, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_signup(text, text, text, jsonb, boolean, boolean, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_obfuscated_user(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_obfuscated_user(text, jsonb) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_password_lock_wait(text, int, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_password_lock_wait(text, int, int, int) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_password_refuse_locked(int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_password_refuse_locked(int) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_password_candidate(text, text, int, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_password_candidate(text, text, int, int, int) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_password_outcome(text, uuid, boolean, int, int, int, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_password_outcome(text, uuid, boolean, int, int, int, text, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_refresh(text, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_refresh(text, text, int) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_logout(uuid, uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_logout(uuid, uuid, text) TO authenticator;

-- user
DROP FUNCTION fluxbase.auth_update_user(uuid, uuid, text, text, text, jsonb, text, text);
DROP FUNCTION fluxbase.auth_email_change_request(uuid, uuid, text, text, text, text, text, int, text, text);
DROP FUNCTION fluxbase.auth_phone_change_request(uuid, uuid, text, text, text, int, text, text);
DROP FUNCTION fluxbase.auth_reauthenticated(uuid, text, int, text, text);
-- @include-functions sql/auth/user.sql auth_update_user auth_email_change_request auth_phone_change_request auth_reauthenticated
REVOKE ALL ON FUNCTION fluxbase.auth_update_user(uuid, uuid, text, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_update_user(uuid, uuid, text, text, text, jsonb) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_email_change_request(uuid, uuid, text, text, text, text, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_email_change_request(uuid, uuid, text, text, text, text, text, int) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_phone_change_request(uuid, uuid, text, text, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_phone_change_request(uuid, uuid, text, text, text, int) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_reauthenticated(uuid, text, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_reauthenticated(uuid, text, int) TO authenticator;

-- otp
DROP FUNCTION fluxbase.auth_send_token(text, text, text, text, text, boolean, jsonb, int, text, text, text, text);
DROP FUNCTION fluxbase.auth_verify_token(text, text, text, text, text, int, text, text, text, text, text);
DROP FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text, text, text, text);
DROP FUNCTION fluxbase.auth_verify_phone_change(text, int, text, text, text, text, text);
-- @include-functions sql/auth/otp.sql auth_send_token auth_verify_token auth_verify_email_change auth_verify_phone_change
REVOKE ALL ON FUNCTION fluxbase.auth_send_token(text, text, text, text, text, boolean, jsonb, int, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_send_token(text, text, text, text, text, boolean, jsonb, int, text, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_verify_token(text, text, text, text, text, int, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_verify_token(text, text, text, text, text, int, text, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_verify_phone_change(text, int, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_verify_phone_change(text, int, text, text) TO authenticator;

-- mfa
DROP FUNCTION fluxbase.auth_mfa_enroll(uuid, uuid, text, text, text, int, text, text, text, text);
DROP FUNCTION fluxbase.auth_mfa_challenge(uuid, uuid, uuid, text, int);
DROP FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, text, text, bigint, int, int);
DROP FUNCTION fluxbase.auth_mfa_unenroll(uuid, uuid, text, uuid, text, text);
-- @include-functions sql/auth/mfa.sql auth_mfa_enroll auth_mfa_challenge auth_mfa_result auth_mfa_unenroll
REVOKE ALL ON FUNCTION fluxbase.auth_mfa_enroll(uuid, uuid, text, text, text, int, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_mfa_enroll(uuid, uuid, text, text, text, int, text, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_mfa_challenge(uuid, uuid, uuid, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_mfa_challenge(uuid, uuid, uuid, int) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, bigint, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, bigint, int, int) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_mfa_unenroll(uuid, uuid, text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_mfa_unenroll(uuid, uuid, text, uuid) TO authenticator;

-- admin
DROP FUNCTION fluxbase.auth_admin_upsert(uuid, jsonb, text, text);
DROP FUNCTION fluxbase.auth_admin_delete(uuid, text, text);
DROP FUNCTION fluxbase.auth_admin_delete_factor(uuid, uuid, text, text);
-- @include-functions sql/auth/admin.sql auth_admin_upsert auth_admin_delete auth_admin_delete_factor
REVOKE ALL ON FUNCTION fluxbase.auth_admin_upsert(uuid, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_admin_upsert(uuid, jsonb) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_admin_delete(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_admin_delete(uuid) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_admin_delete_factor(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_admin_delete_factor(uuid, uuid) TO authenticator;

-- oauth
DROP FUNCTION fluxbase.auth_oauth_signin(text, text, jsonb, text, boolean, uuid, boolean, boolean, text, jsonb, text, text, text, boolean);
DROP FUNCTION fluxbase.auth_pkce_exchange(text, text, text, int, text, text, text, text);
DROP FUNCTION fluxbase.auth_unlink_identity(uuid, uuid, text, text);
-- @include-functions sql/auth/oauth.sql auth_oauth_signin auth_pkce_exchange auth_unlink_identity
REVOKE ALL ON FUNCTION fluxbase.auth_oauth_signin(text, text, jsonb, text, boolean, uuid, boolean, boolean, text, jsonb, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_oauth_signin(text, text, jsonb, text, boolean, uuid, boolean, boolean, text, jsonb, boolean) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_pkce_exchange(text, text, text, int, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_pkce_exchange(text, text, text, int, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_unlink_identity(uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_unlink_identity(uuid, uuid) TO authenticator;

-- passkey
DROP FUNCTION fluxbase.auth_passkey_register(uuid, bytea, bytea, bigint, uuid, text, text, text);
DROP FUNCTION fluxbase.auth_passkey_signin(uuid, bigint, text, text, text, text);
DROP FUNCTION fluxbase.auth_passkeys(uuid, uuid, text, boolean, text, text);
-- @include-functions sql/auth/passkey.sql auth_passkey_register auth_passkey_signin auth_passkeys
REVOKE ALL ON FUNCTION fluxbase.auth_passkey_register(uuid, bytea, bytea, bigint, uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_passkey_register(uuid, bytea, bytea, bigint, uuid, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_passkey_signin(uuid, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_passkey_signin(uuid, bigint, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_passkeys(uuid, uuid, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_passkeys(uuid, uuid, text, boolean) TO authenticator;
