-- The signed-in user changes their account: PUT /user, e-mail and phone
-- changes, reauthentication (proxy/src/auth/user.rs).

-- PUT /user: e-mail, phone, password (already hashed) and metadata; NULL
-- leaves a field as it is. `data` is merged into user_metadata as Supabase does.
CREATE FUNCTION fluxbase.auth_update_user(p_user uuid, p_session uuid, p_email text, p_phone text, p_password_hash text,
  p_user_meta jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  -- The token's user and session must still be there (as for GET /user).
  PERFORM fluxbase.auth_user(p_user, p_session);
  IF p_email IS NOT NULL AND EXISTS (SELECT 1 FROM auth.users WHERE email = p_email AND id <> p_user AND NOT is_sso_user) THEN
    RAISE EXCEPTION 'email_exists' USING ERRCODE = 'FA422', HINT = 'A user with this email address has already been registered';
  END IF;
  -- The proxy passes an e-mail only when changes need no confirmation by mail.
  UPDATE auth.users SET
    email_confirmed_at = CASE WHEN p_email IS DISTINCT FROM email AND p_email IS NOT NULL THEN now()
      ELSE email_confirmed_at END,
    email = coalesce(p_email, email),
    -- Likewise a phone only under auth.sms_autoconfirm.
    phone_confirmed_at = CASE WHEN p_phone IS DISTINCT FROM phone AND p_phone IS NOT NULL THEN now()
      ELSE phone_confirmed_at END,
    phone = coalesce(p_phone, phone),
    encrypted_password = coalesce(p_password_hash, encrypted_password),
    raw_user_meta_data = CASE WHEN p_user_meta IS NULL THEN raw_user_meta_data
      ELSE coalesce(raw_user_meta_data, '{}'::jsonb) || p_user_meta END,
    updated_at = now()
  WHERE id = p_user AND deleted_at IS NULL
  RETURNING * INTO u;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  IF p_email IS NOT NULL THEN
    UPDATE auth.identities SET identity_data = identity_data || jsonb_build_object('email', p_email, 'email_verified', false),
      updated_at = now()
    WHERE user_id = p_user AND provider = 'email';
  END IF;
  -- An anonymous user who gets an address (or number) becomes a permanent one.
  IF u.is_anonymous AND (u.email IS NOT NULL OR u.phone IS NOT NULL) THEN
    PERFORM fluxbase.auth_make_permanent(u.id, CASE WHEN u.email IS NOT NULL THEN 'email' ELSE 'phone' END);
    SELECT * INTO u FROM auth.users WHERE id = p_user;
  END IF;
  PERFORM fluxbase.auth_audit('user_modified', p_user);
  IF p_password_hash IS NOT NULL THEN
    PERFORM fluxbase.auth_audit('user_updated_password', p_user);
  END IF;
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- PUT /user with a new e-mail, when changes are confirmed by e-mail: the
-- change waits in users.email_change for the link or code sent to the new
-- address and, with secure e-mail change, the one sent to the current
-- address too (one_time_tokens email_change_token_new / _current).
CREATE FUNCTION fluxbase.auth_email_change_request(p_user uuid, p_session uuid, p_new_email text,
  p_new_link_hash text, p_new_code_hash text, p_current_link_hash text, p_current_code_hash text,
  p_interval_seconds int)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  PERFORM fluxbase.auth_user(p_user, p_session);
  IF EXISTS (SELECT 1 FROM auth.users WHERE email = p_new_email AND id <> p_user AND NOT is_sso_user) THEN
    RAISE EXCEPTION 'email_exists' USING ERRCODE = 'FA422', HINT = 'A user with this email address has already been registered';
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = p_user FOR UPDATE;
  IF u.email_change_sent_at > now() - make_interval(secs => p_interval_seconds) THEN
    RAISE EXCEPTION 'over_email_send_rate_limit' USING ERRCODE = 'FA429',
      HINT = format('For security purposes, you can only request this after %s seconds.', p_interval_seconds);
  END IF;
  DELETE FROM auth.one_time_tokens WHERE user_id = p_user
    AND token_type IN ('email_change_token_new', 'email_change_token_current');
  INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
  VALUES (gen_random_uuid(), p_user, 'email_change_token_new', p_new_link_hash, p_new_code_hash, now(), now());
  IF p_current_link_hash IS NOT NULL AND coalesce(u.email, '') <> '' THEN
    INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
    VALUES (gen_random_uuid(), p_user, 'email_change_token_current', p_current_link_hash, p_current_code_hash, now(), now());
  END IF;
  UPDATE auth.users SET email_change = p_new_email, email_change_sent_at = now(), email_change_confirm_status = 0,
    updated_at = now()
  WHERE id = p_user
  RETURNING * INTO u;
  PERFORM fluxbase.auth_audit('user_modified', p_user, jsonb_build_object('email_change', p_new_email));
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- PUT /user with a new phone, confirmed by a code texted to it
-- (verifyOtp type phone_change); users.phone_change holds it meanwhile.
CREATE FUNCTION fluxbase.auth_phone_change_request(p_user uuid, p_session uuid, p_new_phone text, p_link_hash text,
  p_code_hash text, p_interval_seconds int)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  PERFORM fluxbase.auth_user(p_user, p_session);
  IF EXISTS (SELECT 1 FROM auth.users WHERE phone = p_new_phone AND id <> p_user) THEN
    RAISE EXCEPTION 'phone_exists' USING ERRCODE = 'FA422', HINT = 'Phone number already registered';
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = p_user FOR UPDATE;
  IF u.phone_change_sent_at > now() - make_interval(secs => p_interval_seconds) THEN
    RAISE EXCEPTION 'over_sms_send_rate_limit' USING ERRCODE = 'FA429',
      HINT = format('For security purposes, you can only request this after %s seconds.', p_interval_seconds);
  END IF;
  INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
  VALUES (gen_random_uuid(), p_user, 'phone_change_token', p_link_hash, p_code_hash, now(), now())
  ON CONFLICT (user_id, token_type) DO UPDATE SET token_hash = EXCLUDED.token_hash, relates_to = EXCLUDED.relates_to,
    created_at = now(), updated_at = now();
  DELETE FROM fluxbase.auth_token_failures WHERE user_id = p_user AND token_type = 'phone_change_token';
  UPDATE auth.users SET phone_change = p_new_phone, phone_change_sent_at = now(), updated_at = now()
  WHERE id = p_user RETURNING * INTO u;
  PERFORM fluxbase.auth_audit('user_modified', p_user, jsonb_build_object('phone_change', p_new_phone));
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- PUT /user's `nonce`: the code GET /reauthenticate sent, taken once.
CREATE FUNCTION fluxbase.auth_reauthenticated(p_user uuid, p_code_hash text, p_expiry_seconds int)
RETURNS boolean
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  issued timestamp;
BEGIN
  DELETE FROM auth.one_time_tokens
  WHERE user_id = p_user AND token_type = 'reauthentication_token' AND relates_to = p_code_hash
  RETURNING created_at INTO issued;
  IF issued IS NULL THEN
    PERFORM fluxbase.auth_token_failed(p_user, ARRAY['reauthentication_token']::auth.one_time_token_type[]);
    RETURN false;
  END IF;
  DELETE FROM fluxbase.auth_token_failures WHERE user_id = p_user AND token_type = 'reauthentication_token';
  RETURN issued >= now() - make_interval(secs => p_expiry_seconds);
END
$$;
