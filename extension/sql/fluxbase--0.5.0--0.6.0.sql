-- Generated from sql/upgrade/0.5.0--0.6.0.sql by scripts/pg.sh (upgrade_scripts_build): edit that file.
\echo Use "ALTER EXTENSION fluxbase UPDATE" to load this file. \quit
-- Fluxbase 0.5.0 → 0.6.0. Source of extension/sql/fluxbase--0.5.0--0.6.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:

-- ---- Auth parity (issue 14): Web3 sign-in, OAuth sessions refreshed by their client only ----
--   * Web3 sign-in (grant_type=web3): fluxbase.auth_web3_messages (signed
--     messages already used) and fluxbase.auth_web3_signin.

-- ---- sql/auth/web3.sql ----
-- Web3 sign-in (proxy/src/auth/web3.rs): a wallet's signed message names
-- its user, one user per wallet address.

-- Signed messages already used, kept for as long as they could still be
-- accepted (their Issued At plus the maximum validity, or their Expiration
-- Time): a message seen on the way signs in nobody else.
CREATE TABLE fluxbase.auth_web3_messages (
  message_hash text PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
CREATE INDEX auth_web3_messages_expires_at ON fluxbase.auth_web3_messages (expires_at);

-- grant_type=web3 once the proxy has verified the signature and checked
-- the message: p_provider_id (`web3:<chain>:<address>`) is the identity of
-- provider `web3`, with p_identity as GoTrue stores it (`sub`,
-- `custom_claims` {address, chain, network, domain, statement}). Its user,
-- or a new one without e-mail (when p_allow_signup), gets a session (`amr`
-- method `web3`). The message (SHA-256 in p_message_hash) is taken for
-- p_keep_seconds; a second use is refused as GoTrue's OAuth errors are
-- written, {error, error_description}.
CREATE FUNCTION fluxbase.auth_web3_signin(p_provider_id text, p_identity jsonb, p_message_hash text,
  p_keep_seconds int, p_allow_signup boolean, p_refresh_hash text, p_traits jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  ident auth.identities;
  uid uuid;
  u auth.users;
BEGIN
  DELETE FROM fluxbase.auth_web3_messages WHERE message_hash = ANY (ARRAY(
    SELECT m.message_hash FROM fluxbase.auth_web3_messages m WHERE m.expires_at < now()
    LIMIT 100 FOR UPDATE SKIP LOCKED));
  INSERT INTO fluxbase.auth_web3_messages (message_hash, expires_at)
  VALUES (p_message_hash, now() + make_interval(secs => p_keep_seconds))
  ON CONFLICT (message_hash) DO NOTHING;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('error', 'invalid_grant',
      'error_description', 'Signed message has already been used');
  END IF;
  SELECT * INTO ident FROM auth.identities i WHERE i.provider = 'web3' AND i.provider_id = p_provider_id FOR UPDATE;
  IF FOUND THEN
    uid := ident.user_id;
    UPDATE auth.identities SET identity_data = p_identity, updated_at = now(), last_sign_in_at = now()
    WHERE id = ident.id;
  ELSE
    IF NOT p_allow_signup THEN
      RAISE EXCEPTION 'signup_disabled' USING ERRCODE = 'FA422', HINT = 'Signups not allowed for this instance';
    END IF;
    uid := gen_random_uuid();
    INSERT INTO auth.users (id, aud, role, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
      is_anonymous, is_super_admin, is_sso_user)
    VALUES (uid, 'authenticated', 'authenticated', '{"provider": "web3", "providers": ["web3"]}', p_identity,
      now(), now(), false, false, false);
    INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at, last_sign_in_at)
    VALUES (p_provider_id, uid, p_identity, 'web3', now(), now(), now());
    PERFORM fluxbase.auth_audit('user_signedup', uid, jsonb_build_object('provider', 'web3'));
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = uid;
  IF u.deleted_at IS NOT NULL THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  IF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA400', HINT = 'User is banned';
  END IF;
  PERFORM fluxbase.auth_audit('login', uid, p_traits);
  RETURN fluxbase.auth_issue_session(uid, p_refresh_hash, 'web3');
END
$$;
REVOKE ALL ON FUNCTION fluxbase.auth_web3_signin(text, jsonb, text, int, boolean, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_web3_signin(text, jsonb, text, int, boolean, text, jsonb) TO authenticator;
--   * fluxbase.auth_refresh takes the client that authenticated (p_client):
--     an OAuth client's session is rotated by that client only, with GoTrue's
--     invalid_client refusals; its new tokens keep client_id and scope.
--     fluxbase.auth_oauth_refresh hands it the client.
DROP FUNCTION fluxbase.auth_refresh(text, text, int);

-- ---- sql/auth/session.sql: fluxbase.auth_refresh ----
CREATE OR REPLACE FUNCTION fluxbase.auth_refresh(p_old_hash text, p_new_hash text, p_reuse_seconds int,
  p_client uuid DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  t auth.refresh_tokens;
  s auth.sessions;
  u auth.users;
BEGIN
  SELECT * INTO t FROM auth.refresh_tokens WHERE token = p_old_hash FOR UPDATE;
  IF NOT FOUND OR t.session_id IS NULL THEN
    RAISE EXCEPTION 'refresh_token_not_found' USING ERRCODE = 'FA400', HINT = 'Invalid Refresh Token: Refresh Token Not Found';
  END IF;
  SELECT * INTO s FROM auth.sessions WHERE id = t.session_id FOR UPDATE;
  IF NOT FOUND OR (s.not_after IS NOT NULL AND s.not_after < now()) THEN
    RAISE EXCEPTION 'session_expired' USING ERRCODE = 'FA400', HINT = 'Invalid Refresh Token: Session Expired';
  END IF;
  IF s.oauth_client_id IS NOT NULL AND p_client IS NULL THEN
    RETURN jsonb_build_object('error', 'invalid_client',
      'error_description', 'Client authentication required for OAuth session');
  ELSIF s.oauth_client_id IS NOT NULL AND s.oauth_client_id <> p_client THEN
    RETURN jsonb_build_object('error', 'invalid_client',
      'error_description', 'Client does not match the session''s OAuth client');
  ELSIF s.oauth_client_id IS NULL AND p_client IS NOT NULL THEN
    RETURN jsonb_build_object('error', 'invalid_client',
      'error_description', 'Client authentication not allowed for non-OAuth session');
  END IF;
  IF t.revoked AND t.updated_at < now() - make_interval(secs => p_reuse_seconds) THEN
    -- Returned, not raised: the revocation must commit.
    DELETE FROM auth.sessions WHERE id = s.id;
    PERFORM fluxbase.auth_audit('token_revoked', s.user_id,
      jsonb_build_object('reason', 'refresh_token_reuse', 'session_id', s.id));
    RETURN jsonb_build_object('error', 'refresh_token_already_used', 'status', 400,
      'msg', 'Invalid Refresh Token: Already Used');
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = s.user_id;
  IF NOT FOUND OR u.deleted_at IS NOT NULL THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA403', HINT = 'User from sub claim in JWT does not exist';
  END IF;
  IF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA400', HINT = 'User is banned';
  END IF;
  UPDATE auth.refresh_tokens SET revoked = true, updated_at = now() WHERE id = t.id AND NOT revoked;
  INSERT INTO auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, parent, session_id)
  VALUES (p_new_hash, t.user_id, false, now(), now(), t.token, s.id);
  UPDATE auth.sessions SET refreshed_at = now()::timestamp, updated_at = now() WHERE id = s.id;
  PERFORM fluxbase.auth_audit('token_refreshed', u.id);
  -- A session an OAuth client obtained keeps naming it (client_id and
  -- scope in its tokens).
  RETURN jsonb_build_object('session_id', s.id, 'aal', s.aal,
    'amr', coalesce((SELECT jsonb_agg(jsonb_build_object('method', c.authentication_method,
      'timestamp', extract(epoch FROM c.created_at)::bigint) ORDER BY c.created_at)
      FROM auth.mfa_amr_claims c WHERE c.session_id = s.id), '[]'::jsonb),
    'user', fluxbase.auth_user_json(u))
    || jsonb_strip_nulls(jsonb_build_object('client_id', s.oauth_client_id, 'scope', s.scopes));
END
$$;

-- ---- sql/auth/oauth_server.sql: fluxbase.auth_oauth_refresh ----
CREATE OR REPLACE FUNCTION fluxbase.auth_oauth_refresh(p_client uuid, p_old_hash text, p_new_hash text, p_reuse_seconds int)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  RETURN fluxbase.auth_refresh(p_old_hash, p_new_hash, p_reuse_seconds, p_client);
END
$$;
REVOKE ALL ON FUNCTION fluxbase.auth_refresh(text, text, int, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_refresh(text, text, int, uuid) TO authenticator;
