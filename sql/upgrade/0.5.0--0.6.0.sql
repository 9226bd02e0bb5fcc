-- Fluxbase 0.5.0 → 0.6.0. Source of extension/sql/fluxbase--0.5.0--0.6.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- Auth parity (issue 14): Web3 sign-in, OAuth sessions refreshed by their client only ----
--   * Web3 sign-in (grant_type=web3): fluxbase.auth_web3_messages (signed
--     messages already used) and fluxbase.auth_web3_signin.
-- @include sql/auth/web3.sql
REVOKE ALL ON FUNCTION fluxbase.auth_web3_signin(text, jsonb, text, int, boolean, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_web3_signin(text, jsonb, text, int, boolean, text, jsonb) TO authenticator;
--   * fluxbase.auth_refresh takes the client that authenticated (p_client):
--     an OAuth client's session is rotated by that client only, with GoTrue's
--     invalid_client refusals; its new tokens keep client_id and scope.
--     fluxbase.auth_oauth_refresh hands it the client.
DROP FUNCTION fluxbase.auth_refresh(text, text, int);
-- @include-functions sql/auth/session.sql auth_refresh
-- @include-functions sql/auth/oauth_server.sql auth_oauth_refresh
REVOKE ALL ON FUNCTION fluxbase.auth_refresh(text, text, int, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_refresh(text, text, int, uuid) TO authenticator;
--   * a phone factor's verification is recorded with GoTrue's amr method
--     `mfa/phone` (was `phone`).
-- @include-functions sql/auth/mfa.sql auth_mfa_result
--   * a banned user's sign-in through a provider or a passkey is 403
--     user_banned (was 400), and a banned user's refresh token is answered
--     "Invalid Refresh Token: User Banned", as GoTrue.
-- @include-functions sql/auth/oauth.sql auth_oauth_signin
-- @include-functions sql/auth/passkey.sql auth_passkey_signin
--   * fluxbase.auth_verify_email_change takes auth.secure_email_change
--     (p_secure): with it, a change's first confirmation waits for a second
--     as GoTrue's emailChangeVerify, also when only email_change_new was
--     generated.
DROP FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text);
-- @include-functions sql/auth/otp.sql auth_verify_email_change
REVOKE ALL ON FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text, boolean) TO authenticator;
--   * fluxbase.auth_admin_email_change_link keeps the confirmations of the
--     change already pending.
-- @include-functions sql/auth/admin.sql auth_admin_email_change_link
-- ---- storage (issue 17) ----
--   * Supabase Storage's database side (sql/storage.sql): the storage schema
--     with storage.buckets and storage.objects (RLS on), storage.foldername(),
--     storage.filename(), storage.extension(), storage.search(), and the
--     proxy's fluxbase.storage_* helpers (bucket rules, unchecked reads for
--     public and signed downloads, signed-upload tokens redeemed once).
-- @include sql/storage.sql
-- ---- Realtime II: Postgres changes (issue 16) ----
--   * the publication supabase_realtime (if absent) and the functions the
--     proxies read table changes with and check them under RLS
--     (fluxbase.realtime_feed_changes, realtime_relation,
--     realtime_subscription, realtime_visible).
-- @include sql/realtime_changes.sql
