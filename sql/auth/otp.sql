-- One-time links and codes by e-mail or SMS (proxy/src/auth/otp.rs).

-- Links and codes sent by e-mail or SMS (magic link / OTP, recovery,
-- sign-up confirmation). One row per user and kind in auth.one_time_tokens:
-- token_hash is the SHA-256 of the link token, relates_to the SHA-256 of
-- "address:code"; neither the link nor the code is stored.
--
-- Stores a one-time link (p_link_hash) and code (p_code_hash) of p_kind
-- (magiclink, recovery, signup) for the user whose e-mail or phone
-- (p_channel 'email' | 'phone') is p_address; creates that user when
-- unknown and p_create. Returns 'sent' ('created' when it made the user),
-- 'no_user' or 'too_soon' (one per p_interval_seconds). A new token
-- replaces the user's previous one.
CREATE FUNCTION fluxbase.auth_send_token(p_channel text, p_address text, p_kind text, p_link_hash text,
  p_code_hash text, p_create boolean, p_user_meta jsonb, p_interval_seconds int, p_code_challenge text,
  p_code_challenge_method text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
  tt auth.one_time_token_type := CASE p_kind WHEN 'recovery' THEN 'recovery_token'
    WHEN 'reauthentication' THEN 'reauthentication_token' ELSE 'confirmation_token' END;
  uid uuid;
  by_phone boolean := p_channel = 'phone';
BEGIN
  SELECT * INTO u FROM auth.users
  WHERE deleted_at IS NULL
    AND ((by_phone AND phone = p_address) OR (NOT by_phone AND email = p_address AND NOT is_sso_user));
  IF NOT FOUND THEN
    IF NOT p_create THEN
      RETURN 'no_user';
    END IF;
    uid := gen_random_uuid();
    INSERT INTO auth.users (id, aud, role, email, phone, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
      is_super_admin)
    VALUES (uid, 'authenticated', 'authenticated', CASE WHEN NOT by_phone THEN p_address END,
      CASE WHEN by_phone THEN p_address END,
      jsonb_build_object('provider', p_channel, 'providers', jsonb_build_array(p_channel)),
      coalesce(p_user_meta, '{}'::jsonb), now(), now(), false)
    RETURNING * INTO u;
    INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
    VALUES (uid::text, uid, jsonb_build_object('sub', uid::text, CASE WHEN by_phone THEN 'phone' ELSE 'email' END, p_address,
      CASE WHEN by_phone THEN 'phone_verified' ELSE 'email_verified' END, false), p_channel, now(), now());
    PERFORM fluxbase.auth_audit('user_signedup', uid, jsonb_build_object('provider', p_channel));
  END IF;
  IF EXISTS (SELECT 1 FROM auth.one_time_tokens WHERE user_id = u.id AND token_type = tt
             AND created_at > now() - make_interval(secs => p_interval_seconds)) THEN
    RETURN 'too_soon';
  END IF;
  -- A sign-up confirmation's code is marked: redeeming it keeps the
  -- password its owner chose (see auth_verify_token).
  INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
  VALUES (gen_random_uuid(), u.id, tt, p_link_hash,
    CASE WHEN p_kind = 'signup' THEN 'signup:' || p_code_hash ELSE p_code_hash END, now(), now())
  ON CONFLICT (user_id, token_type) DO UPDATE SET token_hash = EXCLUDED.token_hash, relates_to = EXCLUDED.relates_to,
    created_at = now(), updated_at = now();
  DELETE FROM fluxbase.auth_token_failures WHERE user_id = u.id AND token_type = tt;
  -- PKCE (the app sent a code_challenge): the link will lead to ?code=,
  -- which only the app holding the verifier can trade for a session. Until
  -- the link is used, the flow state waits under 'pending:' + its hash.
  DELETE FROM auth.flow_state WHERE user_id = u.id AND provider_type = 'email' AND authentication_method = p_kind
    AND auth_code LIKE 'pending:%';
  IF p_code_challenge IS NOT NULL AND NOT by_phone THEN
    INSERT INTO auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
      created_at, updated_at, authentication_method)
    VALUES (gen_random_uuid(), u.id, 'pending:' || p_link_hash, lower(p_code_challenge_method)::auth.code_challenge_method,
      p_code_challenge, 'email', now(), now(), p_kind);
  END IF;
  IF p_kind = 'recovery' THEN
    UPDATE auth.users SET recovery_sent_at = now() WHERE id = u.id;
  ELSIF p_kind = 'reauthentication' THEN
    UPDATE auth.users SET reauthentication_sent_at = now() WHERE id = u.id;
  ELSE
    UPDATE auth.users SET confirmation_sent_at = now() WHERE id = u.id;
  END IF;
  PERFORM fluxbase.auth_audit(CASE p_kind WHEN 'recovery' THEN 'user_recovery_requested'
    ELSE 'user_confirmation_requested' END, u.id,
    jsonb_build_object('kind', p_kind, 'channel', p_channel));
  RETURN CASE WHEN uid IS NOT NULL THEN 'created' ELSE 'sent' END;
END
$$;

-- Redeems a link (p_link_hash) or a code (p_code_hash) once: the token is
-- deleted, the e-mail or phone (p_channel) counts as confirmed, and a
-- session starts. Refusals are returned, not raised (an expired token is
-- deleted for good). A link sent for a PKCE app gives no session: its flow
-- state gets the code p_pkce_code_hash, and `{pkce: true}` comes back.
CREATE FUNCTION fluxbase.auth_verify_token(p_channel text, p_kind text, p_link_hash text, p_code_hash text,
  p_pkce_code_hash text, p_expiry_seconds int, p_refresh_hash text,
  p_address text DEFAULT NULL)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  t auth.one_time_tokens;
  tt auth.one_time_token_type := CASE p_kind WHEN 'recovery' THEN 'recovery_token' ELSE 'confirmation_token' END;
  by_phone boolean := p_channel = 'phone';
BEGIN
  SELECT * INTO t FROM auth.one_time_tokens
  WHERE token_type = tt AND ((p_link_hash IS NOT NULL AND token_hash = p_link_hash)
                          OR (p_code_hash IS NOT NULL AND relates_to IN (p_code_hash, 'signup:' || p_code_hash)))
  LIMIT 1 FOR UPDATE;
  IF FOUND THEN
    DELETE FROM auth.one_time_tokens WHERE id = t.id;
  END IF;
  IF NOT FOUND OR t.created_at < now() - make_interval(secs => p_expiry_seconds) THEN
    IF t.id IS NULL AND p_code_hash IS NOT NULL THEN
      PERFORM fluxbase.auth_token_failed((SELECT id FROM auth.users WHERE deleted_at IS NULL
          AND ((by_phone AND phone = p_address) OR (NOT by_phone AND email = p_address AND NOT is_sso_user))),
        ARRAY[tt]);
    END IF;
    RETURN jsonb_build_object('error', 'otp_expired', 'status', 403,
      'msg', CASE WHEN by_phone THEN 'Token has expired or is invalid' ELSE 'Email link is invalid or has expired' END);
  END IF;
  DELETE FROM fluxbase.auth_token_failures WHERE user_id = t.user_id AND token_type = tt;
  -- A sign-in link or code that confirms an address for the first time
  -- proves its owner; a password someone set without proving it (perhaps
  -- registering the address before its owner did) goes.
  IF p_kind = 'magiclink' AND t.relates_to NOT LIKE 'signup:%' THEN
    UPDATE auth.users SET encrypted_password = NULL
    WHERE id = t.user_id AND encrypted_password IS NOT NULL
      AND CASE WHEN by_phone THEN phone_confirmed_at IS NULL ELSE email_confirmed_at IS NULL END;
  END IF;
  IF by_phone THEN
    UPDATE auth.users SET phone_confirmed_at = coalesce(phone_confirmed_at, now()), updated_at = now()
    WHERE id = t.user_id AND deleted_at IS NULL;
    UPDATE auth.identities SET identity_data = identity_data || '{"phone_verified": true}', last_sign_in_at = now()
    WHERE user_id = t.user_id AND provider = 'phone';
  ELSE
    UPDATE auth.users SET email_confirmed_at = coalesce(email_confirmed_at, now()), updated_at = now()
    WHERE id = t.user_id AND deleted_at IS NULL;
    UPDATE auth.identities SET identity_data = identity_data || '{"email_verified": true}', last_sign_in_at = now()
    WHERE user_id = t.user_id AND provider = 'email';
  END IF;
  PERFORM fluxbase.auth_audit('login', t.user_id, jsonb_build_object('provider', p_channel, 'kind', p_kind));
  IF p_link_hash IS NOT NULL AND p_pkce_code_hash IS NOT NULL THEN
    UPDATE auth.flow_state SET auth_code = p_pkce_code_hash, auth_code_issued_at = now(), updated_at = now()
    WHERE auth_code = 'pending:' || t.token_hash;
    IF FOUND THEN
      RETURN jsonb_build_object('pkce', true);
    END IF;
  ELSE
    DELETE FROM auth.flow_state WHERE auth_code = 'pending:' || t.token_hash;
  END IF;
  RETURN fluxbase.auth_issue_session(t.user_id, p_refresh_hash,
    CASE WHEN p_kind = 'recovery' THEN 'recovery' WHEN p_kind = 'signup' AND NOT by_phone THEN 'email/signup'
      WHEN p_link_hash IS NOT NULL THEN 'magiclink' ELSE 'otp' END);
END
$$;

-- Redeems an e-mail change link or code once. The first of two (secure
-- change) only counts; the last one moves the address and starts a session.
CREATE FUNCTION fluxbase.auth_verify_email_change(p_link_hash text, p_code_hash text, p_expiry_seconds int,
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

-- The texted code of a phone change, once: the number moves and is confirmed.
CREATE FUNCTION fluxbase.auth_verify_phone_change(p_code_hash text, p_expiry_seconds int, p_refresh_hash text,
  p_address text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  t auth.one_time_tokens;
  u auth.users;
BEGIN
  SELECT * INTO t FROM auth.one_time_tokens
  WHERE token_type = 'phone_change_token' AND relates_to = p_code_hash LIMIT 1 FOR UPDATE;
  IF FOUND THEN
    DELETE FROM auth.one_time_tokens WHERE id = t.id;
  END IF;
  IF NOT FOUND OR t.created_at < now() - make_interval(secs => p_expiry_seconds) THEN
    IF t.id IS NULL THEN
      PERFORM fluxbase.auth_token_failed((SELECT id FROM auth.users WHERE phone_change = p_address AND deleted_at IS NULL LIMIT 1),
        ARRAY['phone_change_token']::auth.one_time_token_type[]);
    END IF;
    RETURN jsonb_build_object('error', 'otp_expired', 'status', 403, 'msg', 'Token has expired or is invalid');
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = t.user_id AND deleted_at IS NULL FOR UPDATE;
  IF coalesce(u.phone_change, '') = '' THEN
    RETURN jsonb_build_object('error', 'otp_expired', 'status', 403, 'msg', 'Token has expired or is invalid');
  END IF;
  IF EXISTS (SELECT 1 FROM auth.users WHERE phone = u.phone_change AND id <> u.id) THEN
    RETURN jsonb_build_object('error', 'phone_exists', 'status', 422, 'msg', 'Phone number already registered');
  END IF;
  DELETE FROM fluxbase.auth_token_failures WHERE user_id = u.id AND token_type = 'phone_change_token';
  UPDATE auth.users SET phone = phone_change, phone_change = '', phone_confirmed_at = now(), updated_at = now()
  WHERE id = u.id;
  IF u.is_anonymous THEN
    PERFORM fluxbase.auth_make_permanent(u.id, 'phone');
  END IF;
  UPDATE auth.identities SET identity_data = identity_data || jsonb_build_object('phone', u.phone_change,
      'phone_verified', true), updated_at = now()
  WHERE user_id = u.id AND provider = 'phone';
  PERFORM fluxbase.auth_audit('user_modified', u.id, jsonb_build_object('phone', u.phone_change));
  RETURN fluxbase.auth_issue_session(u.id, p_refresh_hash, 'otp');
END
$$;

-- A link and code that could not be delivered (SMTP or SMS failed) are
-- withdrawn, so that asking again is not refused as too soon.
CREATE FUNCTION fluxbase.auth_withdraw_token(p_code_hash text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  WITH gone AS (DELETE FROM auth.one_time_tokens WHERE relates_to IN (p_code_hash, 'signup:' || p_code_hash)
                RETURNING user_id, token_type)
  UPDATE auth.users u SET
    email_change = CASE WHEN gone.token_type IN ('email_change_token_new', 'email_change_token_current') THEN ''
      ELSE u.email_change END,
    email_change_confirm_status = 0,
    phone_change = CASE WHEN gone.token_type = 'phone_change_token' THEN '' ELSE u.phone_change END
  FROM gone WHERE u.id = gone.user_id
    AND gone.token_type IN ('email_change_token_new', 'email_change_token_current', 'phone_change_token');
$$;

-- A user auth_send_token made for a code that could not be delivered
-- (invite, sign-in code): removed with the code, as GoTrue's transaction
-- would roll it back, unless it has been used since.
CREATE FUNCTION fluxbase.auth_withdraw_new_user(p_code_hash text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  DELETE FROM auth.users u USING auth.one_time_tokens t
  WHERE t.relates_to IN (p_code_hash, 'signup:' || p_code_hash) AND u.id = t.user_id
    AND u.last_sign_in_at IS NULL AND u.email_confirmed_at IS NULL AND u.phone_confirmed_at IS NULL
    AND u.encrypted_password IS NULL;
$$;
