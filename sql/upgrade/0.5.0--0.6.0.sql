-- Fluxbase 0.5.0 → 0.6.0. Frozen at the 0.7.0 release: the files and functions it once
-- pulled in with `-- @include` and `-- @include-functions` are expanded below as they were
-- at 0.6.0, so later changes to sql/*.sql cannot rewrite history. What changed:

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
    -- As GoTrue's AccountExists: the identity takes this message's data and
    -- the user's metadata is merged with it.
    uid := ident.user_id;
    UPDATE auth.identities SET identity_data = p_identity, updated_at = now(), last_sign_in_at = now()
    WHERE id = ident.id;
    UPDATE auth.users SET raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || p_identity,
      updated_at = now()
    WHERE id = uid;
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
    -- 403, as GoTrue's createAccountFromExternalIdentity.
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA403', HINT = 'User is banned';
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
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA400', HINT = 'Invalid Refresh Token: User Banned';
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
--   * a phone factor's verification is recorded with GoTrue's amr method
--     `mfa/phone` (was `phone`).

-- ---- sql/auth/mfa.sql: fluxbase.auth_mfa_result ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_result(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid, p_ok boolean,
  p_refresh_hash text, p_step bigint DEFAULT NULL,
  p_max_failures int DEFAULT 0, p_window_seconds int DEFAULT 300)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('fluxbase.auth_mfa_result:' || p_user, 0));
  IF p_max_failures > 0 AND (SELECT count(*) FROM fluxbase.auth_mfa_failures m
      WHERE m.user_id = p_user AND m.at > now() - make_interval(secs => p_window_seconds)) >= p_max_failures THEN
    RAISE EXCEPTION 'over_request_rate_limit' USING ERRCODE = 'FA429',
      HINT = 'Too many wrong MFA codes. Try again in a few minutes.';
  END IF;
  -- A TOTP step at or before the last accepted one is a replayed code, as
  -- wrong as any other.
  IF p_ok AND p_step IS NOT NULL THEN
    IF EXISTS (SELECT 1 FROM fluxbase.auth_totp_steps WHERE factor_id = p_factor AND step >= p_step) THEN
      p_ok := false;
    ELSE
      INSERT INTO fluxbase.auth_totp_steps (factor_id, step) VALUES (p_factor, p_step)
      ON CONFLICT (factor_id) DO UPDATE SET step = excluded.step;
    END IF;
  END IF;
  IF NOT p_ok THEN
    INSERT INTO fluxbase.auth_mfa_failures (user_id, at) VALUES (p_user, now());
    PERFORM fluxbase.auth_audit('mfa_verify_failed', p_user, jsonb_build_object('factor_id', p_factor));
    RETURN jsonb_build_object('error', 'mfa_verification_failed', 'status', 422,
      'msg', (SELECT CASE factor_type WHEN 'phone' THEN 'Invalid MFA Phone code entered'
                WHEN 'webauthn' THEN 'WebAuthn MFA response could not be verified' ELSE 'Invalid TOTP code entered' END
              FROM auth.mfa_factors WHERE id = p_factor));
  END IF;
  UPDATE auth.mfa_challenges SET verified_at = now() WHERE id = p_challenge AND verified_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mfa_challenge_expired' USING ERRCODE = 'FA422', HINT = 'MFA challenge was already verified';
  END IF;
  UPDATE auth.mfa_factors SET status = 'verified', updated_at = now() WHERE id = p_factor;
  UPDATE auth.sessions SET aal = 'aal2', factor_id = p_factor, updated_at = now() WHERE id = p_session;
  INSERT INTO auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method)
  VALUES (p_session, now(), now(), (SELECT CASE factor_type WHEN 'webauthn' THEN 'mfa/webauthn'
                                     WHEN 'phone' THEN 'mfa/phone' ELSE factor_type::text END
                                     FROM auth.mfa_factors WHERE id = p_factor))
  ON CONFLICT (session_id, authentication_method) DO UPDATE SET updated_at = now();
  UPDATE auth.refresh_tokens SET revoked = true, updated_at = now() WHERE session_id = p_session AND NOT revoked;
  INSERT INTO auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, session_id)
  VALUES (p_refresh_hash, p_user::text, false, now(), now(), p_session);
  DELETE FROM fluxbase.auth_mfa_failures WHERE user_id = p_user;
  PERFORM fluxbase.auth_audit('mfa_verified', p_user, jsonb_build_object('factor_id', p_factor));
  SELECT * INTO u FROM auth.users WHERE id = p_user;
  RETURN jsonb_build_object('session_id', p_session, 'aal', 'aal2',
    'amr', (SELECT jsonb_agg(jsonb_build_object('method', c.authentication_method,
      'timestamp', extract(epoch FROM c.updated_at)::bigint) ORDER BY c.updated_at DESC)
      FROM auth.mfa_amr_claims c WHERE c.session_id = p_session),
    'user', fluxbase.auth_user_json(u));
END
$$;
--   * a banned user's sign-in through a provider or a passkey is 403
--     user_banned (was 400), and a banned user's refresh token is answered
--     "Invalid Refresh Token: User Banned", as GoTrue.

-- ---- sql/auth/oauth.sql: fluxbase.auth_oauth_signin ----
CREATE OR REPLACE FUNCTION fluxbase.auth_oauth_signin(p_provider text, p_provider_id text, p_identity jsonb, p_email text,
  p_email_verified boolean, p_link_user uuid, p_allow_signup boolean, p_autoconfirm boolean,
  p_refresh_hash text, p_flow jsonb, p_sso boolean DEFAULT false)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  ident auth.identities;
  uid uuid;
  u auth.users;
  action text := 'login';
BEGIN
  IF coalesce(p_provider_id, '') = '' THEN
    RAISE EXCEPTION 'bad_oauth_callback' USING ERRCODE = 'FA400', HINT = 'The provider returned no user id';
  END IF;
  SELECT * INTO ident FROM auth.identities i WHERE i.provider = p_provider AND i.provider_id = p_provider_id FOR UPDATE;
  IF p_link_user IS NOT NULL THEN
    IF FOUND AND ident.user_id <> p_link_user THEN
      RAISE EXCEPTION 'identity_already_exists' USING ERRCODE = 'FA422',
        HINT = 'Identity is already linked to another user';
    END IF;
    uid := p_link_user;
    action := 'identity_linked';
  ELSIF FOUND THEN
    uid := ident.user_id;
  ELSIF p_email IS NOT NULL AND NOT p_sso THEN
    -- SAML users are users of their own (is_sso_user), as in Supabase:
    -- an enterprise IdP never takes over an account made elsewhere.
    SELECT id INTO uid FROM auth.users WHERE email = p_email AND NOT is_sso_user FOR UPDATE;
    -- Joined automatically only when both sides proved the address: the
    -- provider verified it, and the account's owner did (a link, a code, or
    -- a provider that verified it). Otherwise whoever registered the
    -- address first (perhaps without ever proving it) would receive the
    -- newcomer's sign-ins. The owner can still link by hand.
    IF uid IS NOT NULL AND NOT (p_email_verified AND EXISTS (
        SELECT 1 FROM auth.identities i WHERE i.user_id = uid AND lower(i.identity_data ->> 'email') = p_email
          AND (i.identity_data ->> 'email_verified') = 'true')) THEN
      RAISE EXCEPTION 'email_exists' USING ERRCODE = 'FA422',
        HINT = 'A user with this email address has already been registered';
    END IF;
  END IF;
  IF uid IS NULL THEN
    IF NOT p_allow_signup THEN
      RAISE EXCEPTION 'signup_disabled' USING ERRCODE = 'FA422', HINT = 'Signups not allowed for this instance';
    END IF;
    uid := gen_random_uuid();
    INSERT INTO auth.users (id, aud, role, email, email_confirmed_at, raw_app_meta_data, raw_user_meta_data,
      created_at, updated_at, is_anonymous, is_super_admin, is_sso_user)
    VALUES (uid, 'authenticated', 'authenticated', p_email,
      CASE WHEN p_email IS NOT NULL AND (p_email_verified OR p_autoconfirm) THEN now() END,
      jsonb_build_object('provider', p_provider, 'providers', jsonb_build_array(p_provider)),
      p_identity, now(), now(), false, false, p_sso);
    action := 'user_signedup';
  END IF;
  INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at, last_sign_in_at)
  VALUES (p_provider_id, uid, p_identity, p_provider, now(), now(), now())
  ON CONFLICT (provider_id, provider) DO UPDATE
    SET identity_data = excluded.identity_data, updated_at = now(), last_sign_in_at = now();
  -- The user's metadata follows the provider; the provider list grows; an
  -- anonymous user who links an identity becomes a permanent one; an
  -- address the provider verified counts as confirmed.
  UPDATE auth.users SET
    raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || p_identity,
    raw_app_meta_data = jsonb_set(
      jsonb_set(coalesce(raw_app_meta_data, '{}'::jsonb), '{provider}',
        coalesce(raw_app_meta_data -> 'provider', to_jsonb(p_provider))),
      '{providers}', (SELECT jsonb_agg(DISTINCT i.provider ORDER BY i.provider) FROM auth.identities i WHERE i.user_id = uid)),
    email = coalesce(email, CASE WHEN p_email_verified THEN p_email END),
    email_confirmed_at = coalesce(email_confirmed_at,
      CASE WHEN p_email_verified AND (email IS NULL OR email = p_email) THEN now() END),
    is_anonymous = false,
    updated_at = now()
  WHERE id = uid
  RETURNING * INTO u;
  IF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
    -- 403, as GoTrue's createAccountFromExternalIdentity.
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA403', HINT = 'User is banned';
  END IF;
  IF u.email IS NOT NULL AND u.email_confirmed_at IS NULL THEN
    RAISE EXCEPTION 'provider_email_needs_verification' USING ERRCODE = 'FA422',
      HINT = format('Unverified email with %s. Verify the email with %s and sign in again', p_provider, p_provider);
  END IF;
  PERFORM fluxbase.auth_audit(action, uid, jsonb_build_object('provider', p_provider));
  IF p_flow IS NOT NULL THEN
    INSERT INTO auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
      provider_access_token, provider_refresh_token, created_at, updated_at, authentication_method, auth_code_issued_at)
    VALUES (gen_random_uuid(), uid, p_flow ->> 'code_hash', (p_flow ->> 'code_challenge_method')::auth.code_challenge_method,
      p_flow ->> 'code_challenge', p_provider, p_flow ->> 'provider_access_token', p_flow ->> 'provider_refresh_token',
      now(), now(), coalesce(p_flow ->> 'method', 'oauth'), now());
    RETURN jsonb_build_object('user_id', uid);
  END IF;
  RETURN fluxbase.auth_issue_session(uid, p_refresh_hash, CASE WHEN p_sso THEN 'sso/saml' ELSE 'oauth' END);
END
$$;

-- ---- sql/auth/passkey.sql: fluxbase.auth_passkey_signin ----
CREATE OR REPLACE FUNCTION fluxbase.auth_passkey_signin(p_passkey uuid, p_sign_count bigint, p_refresh_hash text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.webauthn_credentials;
  u auth.users;
BEGIN
  SELECT * INTO c FROM auth.webauthn_credentials WHERE id = p_passkey FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'passkey_not_found' USING ERRCODE = 'FA404', HINT = 'Passkey not found';
  END IF;
  IF (p_sign_count <> 0 OR c.sign_count <> 0) AND p_sign_count <= c.sign_count THEN
    PERFORM fluxbase.auth_audit('passkey_clone_suspected', c.user_id,
      jsonb_build_object('passkey_id', c.id, 'stored', c.sign_count, 'presented', p_sign_count));
    RETURN jsonb_build_object('error', 'webauthn_verification_failed', 'status', 400,
      'msg', 'The passkey''s signature counter went backwards: it may have been cloned');
  END IF;
  UPDATE auth.webauthn_credentials SET sign_count = p_sign_count, last_used_at = now(), updated_at = now()
  WHERE id = c.id;
  SELECT * INTO u FROM auth.users WHERE id = c.user_id AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  IF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
    -- 403, as GoTrue's passkey sign-in.
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA403', HINT = 'User is banned';
  END IF;
  PERFORM fluxbase.auth_audit('login', u.id, jsonb_build_object('provider', 'passkey'));
  RETURN fluxbase.auth_issue_session(u.id, p_refresh_hash, 'passkey');
END
$$;
--   * fluxbase.auth_verify_email_change takes auth.secure_email_change
--     (p_secure): with it, a change's first confirmation waits for a second
--     as GoTrue's emailChangeVerify, also when only email_change_new was
--     generated.
DROP FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text);

-- ---- sql/auth/otp.sql: fluxbase.auth_verify_email_change ----
CREATE OR REPLACE FUNCTION fluxbase.auth_verify_email_change(p_link_hash text, p_code_hash text, p_expiry_seconds int,
  p_refresh_hash text, p_address text DEFAULT NULL, p_secure boolean DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  t auth.one_time_tokens;
  u auth.users;
BEGIN
  SELECT * INTO t FROM auth.one_time_tokens
  WHERE token_type IN ('email_change_token_new', 'email_change_token_current')
    AND ((p_link_hash IS NOT NULL AND token_hash = p_link_hash) OR (p_code_hash IS NOT NULL AND relates_to = p_code_hash))
  LIMIT 1 FOR UPDATE;
  IF FOUND THEN
    DELETE FROM auth.one_time_tokens WHERE id = t.id;
  END IF;
  IF NOT FOUND OR t.created_at < now() - make_interval(secs => p_expiry_seconds) THEN
    IF t.id IS NULL AND p_code_hash IS NOT NULL THEN
      PERFORM fluxbase.auth_token_failed((SELECT id FROM auth.users WHERE deleted_at IS NULL AND NOT is_sso_user
          AND (email = p_address OR email_change = p_address) LIMIT 1),
        ARRAY['email_change_token_new', 'email_change_token_current']::auth.one_time_token_type[]);
    END IF;
    RETURN jsonb_build_object('error', 'otp_expired', 'status', 403, 'msg', 'Email link is invalid or has expired');
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = t.user_id AND deleted_at IS NULL FOR UPDATE;
  IF coalesce(u.email_change, '') = '' THEN
    RETURN jsonb_build_object('error', 'otp_expired', 'status', 403, 'msg', 'Email link is invalid or has expired');
  END IF;
  -- GoTrue's emailChangeVerify: with secure e-mail change (p_secure) the
  -- first confirmation of a change from an address waits for a second,
  -- whichever tokens exist (a generate_link email_change_new alone waits
  -- too); without it (or from a proxy that does not say, NULL) the change
  -- waits only while the other address's token is outstanding.
  IF (p_secure IS NULL AND EXISTS (SELECT 1 FROM auth.one_time_tokens WHERE user_id = u.id
        AND token_type IN ('email_change_token_new', 'email_change_token_current')))
     OR (p_secure AND u.email_change_confirm_status = 0 AND coalesce(u.email, '') <> '') THEN
    UPDATE auth.users SET email_change_confirm_status = 1, updated_at = now() WHERE id = u.id;
    RETURN jsonb_build_object('msg', 'Confirmation link accepted. Please proceed to confirm link sent to the other email');
  END IF;
  IF EXISTS (SELECT 1 FROM auth.users WHERE email = u.email_change AND id <> u.id AND NOT is_sso_user) THEN
    RETURN jsonb_build_object('error', 'email_exists', 'status', 422,
      'msg', 'A user with this email address has already been registered');
  END IF;
  UPDATE auth.users SET email = email_change, email_change = '', email_change_confirm_status = 0,
    email_confirmed_at = now(), updated_at = now()
  WHERE id = u.id;
  IF u.is_anonymous THEN
    PERFORM fluxbase.auth_make_permanent(u.id, 'email');
  END IF;
  UPDATE auth.identities SET identity_data = identity_data || jsonb_build_object('email', u.email_change,
      'email_verified', true), updated_at = now()
  WHERE user_id = u.id AND provider = 'email';
  PERFORM fluxbase.auth_audit('user_modified', u.id, jsonb_build_object('email', u.email_change));
  RETURN fluxbase.auth_issue_session(u.id, p_refresh_hash, 'email_change');
END
$$;
REVOKE ALL ON FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_verify_email_change(text, text, int, text, text, boolean) TO authenticator;
--   * fluxbase.auth_admin_email_change_link keeps the confirmations of the
--     change already pending.

-- ---- sql/auth/admin.sql: fluxbase.auth_admin_email_change_link ----
CREATE OR REPLACE FUNCTION fluxbase.auth_admin_email_change_link(p_email text, p_new_email text, p_kind text,
  p_link_hash text, p_code_hash text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
  tt auth.one_time_token_type := CASE p_kind WHEN 'email_change_current' THEN 'email_change_token_current'
    ELSE 'email_change_token_new' END;
BEGIN
  SELECT * INTO u FROM auth.users WHERE email = p_email AND NOT is_sso_user AND deleted_at IS NULL FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User with this email not found';
  END IF;
  IF EXISTS (SELECT 1 FROM auth.users WHERE email = p_new_email AND id <> u.id AND NOT is_sso_user) THEN
    RAISE EXCEPTION 'email_exists' USING ERRCODE = 'FA422', HINT = 'A user with this email address has already been registered';
  END IF;
  IF u.email_change IS DISTINCT FROM p_new_email THEN
    DELETE FROM auth.one_time_tokens WHERE user_id = u.id
      AND token_type IN ('email_change_token_new', 'email_change_token_current');
  END IF;
  INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
  VALUES (gen_random_uuid(), u.id, tt, p_link_hash, p_code_hash, now(), now())
  ON CONFLICT (user_id, token_type) DO UPDATE SET token_hash = EXCLUDED.token_hash, relates_to = EXCLUDED.relates_to,
    created_at = now(), updated_at = now();
  -- A link for the change already pending keeps its confirmations.
  UPDATE auth.users SET email_change = p_new_email, email_change_sent_at = now(),
    email_change_confirm_status = CASE WHEN email_change IS DISTINCT FROM p_new_email THEN 0
      ELSE email_change_confirm_status END,
    updated_at = now()
  WHERE id = u.id
  RETURNING * INTO u;
  PERFORM fluxbase.auth_audit('user_modified', u.id, jsonb_build_object('email_change', p_new_email, 'by', 'admin'));
  RETURN fluxbase.auth_user_json(u);
END
$$;
-- ---- storage (issue 17) ----
--   * Supabase Storage's database side (sql/storage.sql): the storage schema
--     with storage.buckets and storage.objects (RLS on), storage.foldername(),
--     storage.filename(), storage.extension(), storage.search(), and the
--     proxy's fluxbase.storage_* helpers (bucket rules, unchecked reads for
--     public and signed downloads, signed-upload tokens redeemed once).

-- ---- sql/storage.sql ----
-- Supabase Storage's database side, in its names, so seed files, policies
-- and migrations written for Supabase load unchanged:
--   * storage.buckets and storage.objects with storage-api's columns,
--     defaults, constraints and indexes (as its migrations leave them:
--     path_tokens generated from the name, owner_id beside the deprecated
--     uuid owner, version naming the bytes, user_metadata);
--   * storage.foldername(), storage.filename(), storage.extension() for
--     policies, storage.search() for listing (the proxy lists through it,
--     as the caller, so RLS decides what is listed);
--   * row-level security on both tables, no policy: until a policy says
--     otherwise only service_role (BYPASSRLS) reads or writes them.
-- The proxy (proxy/src/storage) runs every metadata change as the caller
-- (fluxbase.authenticate: role and claims, transaction-local); the few
-- reads that must not depend on the caller's policies (a bucket's limits
-- before an upload, a public or signed download) go through the two
-- SECURITY DEFINER functions at the end, executable by authenticator only.
-- In a database that moved over from Supabase the schema and tables exist
-- already and are kept; only what is missing is added.

DO $schema$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'storage') THEN
    CREATE SCHEMA storage;
  END IF;
END
$schema$;
GRANT USAGE ON SCHEMA storage TO anon, authenticated, service_role, authenticator;

CREATE TABLE IF NOT EXISTS storage.buckets (
  id text NOT NULL,
  name text NOT NULL,
  owner uuid,
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now(),
  public boolean DEFAULT false,
  avif_autodetection boolean DEFAULT false,
  file_size_limit bigint,
  allowed_mime_types text[],
  owner_id text,
  CONSTRAINT buckets_pkey PRIMARY KEY (id),
  CONSTRAINT buckets_name_length_check CHECK (length(name) > 0 AND length(name) < 64)
);
CREATE UNIQUE INDEX IF NOT EXISTS bname ON storage.buckets USING btree (name);

CREATE TABLE IF NOT EXISTS storage.objects (
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  bucket_id text,
  name text,
  owner uuid,
  created_at timestamptz DEFAULT now(),
  updated_at timestamptz DEFAULT now(),
  last_accessed_at timestamptz DEFAULT now(),
  metadata jsonb,
  path_tokens text[] GENERATED ALWAYS AS (string_to_array(name, '/')) STORED,
  version text,
  owner_id text,
  user_metadata jsonb,
  CONSTRAINT objects_pkey PRIMARY KEY (id),
  CONSTRAINT "objects_bucketId_fkey" FOREIGN KEY (bucket_id) REFERENCES storage.buckets (id)
);
CREATE UNIQUE INDEX IF NOT EXISTS bucketid_objname ON storage.objects USING btree (bucket_id, name);
CREATE INDEX IF NOT EXISTS name_prefix_search ON storage.objects USING btree (name text_pattern_ops);

ALTER TABLE storage.buckets ENABLE ROW LEVEL SECURITY;
ALTER TABLE storage.objects ENABLE ROW LEVEL SECURITY;
GRANT ALL ON storage.buckets, storage.objects TO anon, authenticated, service_role;
SELECT pg_catalog.pg_extension_config_dump('storage.buckets', '');
SELECT pg_catalog.pg_extension_config_dump('storage.objects', '');

CREATE OR REPLACE FUNCTION storage.update_updated_at_column() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
  NEW.updated_at = now();
  RETURN NEW;
END;
$$;

DO $trigger$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = 'update_objects_updated_at'
                 AND tgrelid = 'storage.objects'::regclass) THEN
    CREATE TRIGGER update_objects_updated_at BEFORE UPDATE ON storage.objects
      FOR EACH ROW EXECUTE FUNCTION storage.update_updated_at_column();
  END IF;
END
$trigger$;

-- 'a/b/c.png' → {a,b}
CREATE OR REPLACE FUNCTION storage.foldername(name text) RETURNS text[]
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  _parts text[];
BEGIN
  SELECT string_to_array(name, '/') INTO _parts;
  RETURN _parts[1:array_length(_parts, 1) - 1];
END
$$;

-- 'a/b/c.png' → c.png
CREATE OR REPLACE FUNCTION storage.filename(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  _parts text[];
BEGIN
  SELECT string_to_array(name, '/') INTO _parts;
  RETURN _parts[array_length(_parts, 1)];
END
$$;

-- 'a/b/c.tar.gz' → gz
CREATE OR REPLACE FUNCTION storage.extension(name text) RETURNS text
LANGUAGE plpgsql IMMUTABLE
AS $$
DECLARE
  _parts text[];
  _filename text;
BEGIN
  SELECT string_to_array(name, '/') INTO _parts;
  SELECT _parts[array_length(_parts, 1)] INTO _filename;
  RETURN reverse(split_part(reverse(_filename), '.', 1));
END
$$;

-- One level of a bucket under `prefix` (which ends in '/' or is empty;
-- `levels` is the level listed, 1 for the top): the folders first (id
-- NULL), then the objects, as storage-api's search. Security invoker: the
-- caller's policies decide which rows are seen.
CREATE OR REPLACE FUNCTION storage.search(
  prefix text,
  bucketname text,
  limits int DEFAULT 100,
  levels int DEFAULT 1,
  offsets int DEFAULT 0,
  search text DEFAULT '',
  sortcolumn text DEFAULT 'name',
  sortorder text DEFAULT 'asc'
) RETURNS TABLE (
  name text,
  id uuid,
  updated_at timestamptz,
  created_at timestamptz,
  last_accessed_at timestamptz,
  metadata jsonb
)
LANGUAGE plpgsql STABLE
AS $$
DECLARE
  v_order_by text;
  v_sort_order text;
BEGIN
  v_order_by := CASE sortcolumn
    WHEN 'updated_at' THEN 'updated_at'
    WHEN 'created_at' THEN 'created_at'
    WHEN 'last_accessed_at' THEN 'last_accessed_at'
    ELSE 'name' END;
  v_sort_order := CASE WHEN lower(sortorder) = 'desc' THEN 'desc' ELSE 'asc' END;
  v_order_by := v_order_by || ' ' || v_sort_order;

  RETURN QUERY EXECUTE
    'WITH folders AS (
       SELECT path_tokens[$1] AS folder
       FROM storage.objects
       WHERE objects.name ILIKE $2 || $3 || ''%''
         AND bucket_id = $4
         AND array_length(objects.path_tokens, 1) <> $1
       GROUP BY folder
       ORDER BY folder ' || v_sort_order || '
     )
     (SELECT folder AS "name", NULL::uuid AS id, NULL::timestamptz AS updated_at,
             NULL::timestamptz AS created_at, NULL::timestamptz AS last_accessed_at,
             NULL::jsonb AS metadata
      FROM folders)
     UNION ALL
     (SELECT path_tokens[$1] AS "name", id, updated_at, created_at, last_accessed_at, metadata
      FROM storage.objects
      WHERE objects.name ILIKE $2 || $3 || ''%''
        AND bucket_id = $4
        AND array_length(objects.path_tokens, 1) = $1
      ORDER BY ' || v_order_by || ')
     LIMIT $5
     OFFSET $6' USING levels, prefix, search, bucketname, limits, offsets;
END
$$;

GRANT EXECUTE ON FUNCTION storage.foldername(text), storage.filename(text), storage.extension(text),
  storage.search(text, text, int, int, int, text, text, text)
  TO anon, authenticated, service_role;

-- A bucket's rules for the proxy, whatever the caller's policies on
-- storage.buckets say: an upload is checked against the bucket's limits
-- before a byte is stored, as storage-api reads them as its superuser.
CREATE OR REPLACE FUNCTION fluxbase.storage_bucket_rules(bucket text)
RETURNS TABLE (public boolean, file_size_limit bigint, allowed_mime_types text[])
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT coalesce(b.public, false), b.file_size_limit, b.allowed_mime_types
  FROM storage.buckets b WHERE b.id = bucket;
$$;

-- An object read without the caller's policies: for a public bucket's
-- object (`public_only`), or through a signed URL the proxy has verified.
CREATE OR REPLACE FUNCTION fluxbase.storage_object_unchecked(bucket text, object_name text, public_only boolean)
RETURNS TABLE (id uuid, version text, metadata jsonb)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT o.id, o.version, o.metadata
  FROM storage.objects o JOIN storage.buckets b ON b.id = o.bucket_id
  WHERE o.bucket_id = bucket AND o.name = object_name
    AND (NOT public_only OR coalesce(b.public, false));
$$;

-- Signed upload URLs work once: a token's id is recorded when it is
-- redeemed (and forgotten when it has expired anyway).
CREATE TABLE IF NOT EXISTS fluxbase.storage_upload_tokens (
  token_id text PRIMARY KEY,
  expires_at timestamptz NOT NULL
);

CREATE OR REPLACE FUNCTION fluxbase.storage_upload_token_redeem(token text, expires timestamptz)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  inserted int;
BEGIN
  DELETE FROM fluxbase.storage_upload_tokens WHERE expires_at < now();
  INSERT INTO fluxbase.storage_upload_tokens (token_id, expires_at) VALUES (token, expires)
  ON CONFLICT (token_id) DO NOTHING;
  GET DIAGNOSTICS inserted = ROW_COUNT;
  RETURN inserted = 1;
END
$$;

REVOKE ALL ON FUNCTION fluxbase.storage_bucket_rules(text),
  fluxbase.storage_object_unchecked(text, text, boolean),
  fluxbase.storage_upload_token_redeem(text, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.storage_bucket_rules(text),
  fluxbase.storage_object_unchecked(text, text, boolean),
  fluxbase.storage_upload_token_redeem(text, timestamptz) TO authenticator;
-- ---- Realtime II: Postgres changes (issue 16) ----
--   * the publication supabase_realtime (if absent) and the functions the
--     proxies read table changes with and check them under RLS
--     (fluxbase.realtime_feed_changes, realtime_relation,
--     realtime_subscription, realtime_visible).

-- ---- sql/realtime_changes.sql ----
-- Postgres changes (`postgres_changes` bindings of realtime-js), the
-- database side. Tables stream as on Supabase: by membership in the
-- publication `supabase_realtime` (`ALTER PUBLICATION supabase_realtime ADD
-- TABLE …`). Each proxy reads them from its own temporary pgoutput slot
-- (fluxbase.realtime_feed_changes, commit order, nothing added to the
-- writer's transaction), decodes them and asks here, once per batch and
-- table, which of the batch's rows each group of subscribers (same role and
-- claims) may SELECT (fluxbase.realtime_visible).

DO $publication$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    CREATE PUBLICATION supabase_realtime;
  END IF;
END
$publication$;

-- Everything committed since the last read, as pgoutput's binary messages
-- (begin, relation, insert/update/delete, logical messages, commit), in
-- commit order; at most about `p_max` a call (whole transactions). Tables
-- come from `supabase_realtime` (when it exists), the proxies' messages from
-- `fluxbase_realtime`-prefixed logical messages.
-- Each call decodes from the slot's restart point, which moves only when
-- Postgres logs the running transactions (every 15 s, or at a checkpoint):
-- under load a reader would decode up to 15 s of WAL again on every call.
-- With `p_advance` (the proxy sets it while it is busy) the call logs them
-- first (pg_log_standby_snapshot, Postgres 16 and later), so the restart
-- point follows the reader.
CREATE FUNCTION fluxbase.realtime_feed_changes(p_slot text, p_max integer, p_advance boolean) RETURNS SETOF bytea
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  publications text := 'fluxbase_realtime_feed';
BEGIN
  IF p_slot !~ '^fluxbase_rt_[a-z0-9_]{1,40}$' THEN
    RAISE EXCEPTION 'not a realtime slot name: %', p_slot USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    publications := publications || ',supabase_realtime';
  END IF;
  IF p_advance AND current_setting('server_version_num')::int >= 160000 THEN
    EXECUTE 'SELECT pg_log_standby_snapshot()';
  END IF;
  RETURN QUERY
  SELECT c.data
  FROM pg_logical_slot_get_binary_changes(p_slot, NULL, p_max, 'proto_version', '1',
    'publication_names', publications, 'messages', 'true') c;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_feed_changes(text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_feed_changes(text, integer, boolean) TO authenticator;

-- What the proxy needs to know of a streamed table beyond pgoutput's
-- relation message: its primary key's columns and each column's type name
-- and kind ('b' boolean, 'n' number, 'j' JSON, 's' anything else), and
-- whether row level security is on, as {pk: [name…], types: {name:
-- [typname, kind]}, rls}.
CREATE FUNCTION fluxbase.realtime_relation(p_relid oid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
SELECT jsonb_build_object(
  'rls', (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = p_relid),
  'pk', coalesce((
    SELECT jsonb_agg(a.attname ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = p_relid AND i.indisprimary), '[]'::jsonb),
  'types', coalesce((
    SELECT jsonb_object_agg(a.attname, jsonb_build_array(t.typname,
      CASE WHEN t.oid = 16 THEN 'b'
           WHEN t.oid IN (20, 21, 23, 26, 700, 701, 1700) THEN 'n'
           WHEN t.oid IN (114, 3802) THEN 'j'
           ELSE 's' END))
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped), '{}'::jsonb));
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_relation(oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_relation(oid) TO authenticator;

-- A join's binding on one table, judged as the caller of `p_claims`: the
-- table must exist and the caller's role may SELECT it. Returns {columns:
-- {name: typname}} (for the proxy to check filters against), or {error}.
CREATE FUNCTION fluxbase.realtime_subscription(p_claims jsonb, p_schema text, p_table text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  rel oid;
  role text := coalesce(nullif(p_claims->>'role', ''), 'anon');
BEGIN
  SELECT c.oid INTO rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = p_schema AND c.relname = p_table AND c.relkind IN ('r', 'p');
  IF rel IS NULL THEN
    RETURN jsonb_build_object('error', format('Unable to subscribe to changes with given parameters. '
      'Table %s.%s does not exist', quote_ident(p_schema), quote_ident(p_table)));
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
     OR NOT has_table_privilege(role, rel, 'SELECT') THEN
    RETURN jsonb_build_object('error', format('Unauthorized: role %s may not SELECT from %s.%s',
      role, quote_ident(p_schema), quote_ident(p_table)));
  END IF;
  RETURN jsonb_build_object('columns', (
    SELECT jsonb_object_agg(a.attname, t.typname)
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_subscription(jsonb, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_subscription(jsonb, text, text) TO authenticator;

-- Which rows of a batch of changes to table `p_relid` each group of
-- subscribers may see. `p_keys` holds the changed rows' primary keys,
-- `[{col: text value}…]`; `p_groups` the groups' claims, `[{role, sub, …}…]`.
-- Per group, one statement as that group (role switched, claims set as for
-- a REST request): the batch's keys joined to the table under its policies.
-- Returns (group, key) pairs, 1-based, and first (0, 1) if the table has row
-- level security on, (0, 0) if not. Without RLS a group sees every row of a
-- table its role may SELECT. A group whose check fails sees nothing. The
-- caller's role is restored at the end.
CREATE FUNCTION fluxbase.realtime_visible(p_relid oid, p_keys jsonb, p_groups jsonb)
RETURNS TABLE (grp integer, idx integer)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  rls boolean;
  target text;
  joined text;
  query text;
  claims jsonb;
  g integer := 0;
  role text;
  caller text := current_setting('role');
  pk_columns integer;
  pk_name text;
  pk_type text;
  single text[];
BEGIN
  SELECT c.relrowsecurity, format('%I.%I', n.nspname, c.relname) INTO rls, target
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_relid;
  IF target IS NULL THEN
    RETURN;
  END IF;
  grp := 0; idx := CASE WHEN rls THEN 1 ELSE 0 END;
  RETURN NEXT;
  IF jsonb_array_length(p_keys) = 0 THEN
    RETURN;
  END IF;
  IF NOT rls THEN
    FOR claims IN SELECT value FROM jsonb_array_elements(p_groups) LOOP
      g := g + 1;
      role := coalesce(nullif(claims->>'role', ''), 'anon');
      IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) AND has_table_privilege(role, p_relid, 'SELECT') THEN
        RETURN QUERY SELECT g, i::integer FROM generate_series(1, jsonb_array_length(p_keys)) i;
      END IF;
    END LOOP;
    RETURN;
  END IF;
  SELECT string_agg(format('t.%1$I = k.%1$I', a.attname), ' AND ' ORDER BY a.attnum), count(*),
         min(a.attname), min(format_type(a.atttypid, a.atttypmod))
    INTO joined, pk_columns, pk_name, pk_type
  FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
  WHERE i.indrelid = p_relid AND i.indisprimary;
  IF joined IS NULL THEN
    RETURN;
  END IF;
  IF pk_columns = 1 THEN
    -- One key column: the keys become an array of its type once, and each
    -- group's statement probes the key's index with it (about twice as fast
    -- as turning the JSON into rows for every group).
    single := ARRAY(SELECT e.x->>pk_name FROM jsonb_array_elements(p_keys) WITH ORDINALITY e(x, o) ORDER BY e.o);
    query := format('SELECT $2, k.o::integer FROM unnest($1::%s[]) WITH ORDINALITY k(v, o) JOIN %s t ON t.%I = k.v',
      pk_type, target, pk_name);
  ELSE
    query := format('SELECT $2, k.ordinality::integer FROM jsonb_populate_recordset(NULL::%1$s, $1) WITH ORDINALITY k '
      'JOIN %1$s t ON %2$s', target, joined);
  END IF;
  FOR claims IN SELECT value FROM jsonb_array_elements(p_groups) LOOP
    g := g + 1;
    BEGIN
      PERFORM set_config('role', 'none', true);
      PERFORM set_config('request.jwt.claim.sub', '', true), set_config('request.jwt.claim.role', '', true),
        set_config('request.jwt.claim.email', '', true);
      PERFORM fluxbase.authenticate(claims);
      IF pk_columns = 1 THEN
        RETURN QUERY EXECUTE query USING single, g;
      ELSE
        RETURN QUERY EXECUTE query USING p_keys, g;
      END IF;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'realtime: a group''s visibility check on % failed: %', target, SQLERRM;
    END;
  END LOOP;
  PERFORM set_config('role', 'none', true);
  PERFORM set_config('role', caller, true);
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_visible(oid, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_visible(oid, jsonb, jsonb) TO authenticator;
