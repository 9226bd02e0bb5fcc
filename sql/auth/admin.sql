-- The admin API, service_role only (proxy/src/auth/admin.rs).

-- Admin API (service_role): list (newest first, as GoTrue), create, read,
-- update and delete users.
CREATE FUNCTION fluxbase.auth_admin_list(p_page int, p_per_page int) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT jsonb_build_object(
    'users', coalesce((SELECT jsonb_agg(fluxbase.auth_user_json(u) ORDER BY u.created_at DESC, u.id DESC)
      FROM (SELECT * FROM auth.users WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC
            LIMIT p_per_page OFFSET (p_page - 1) * p_per_page) u), '[]'::jsonb),
    'total', (SELECT count(*) FROM auth.users WHERE deleted_at IS NULL))
$$;

CREATE FUNCTION fluxbase.auth_admin_get(p_user uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  SELECT * INTO u FROM auth.users WHERE id = p_user AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- p: {email, phone, password_hash, email_confirm, phone_confirm, user_metadata, app_metadata, ban_duration_seconds}
CREATE FUNCTION fluxbase.auth_admin_upsert(p_user uuid, p jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
  uid uuid := coalesce(p_user, gen_random_uuid());
  email text := lower(p ->> 'email');
  phone text := p ->> 'phone';
BEGIN
  IF email IS NOT NULL AND EXISTS (SELECT 1 FROM auth.users WHERE auth.users.email = lower(p ->> 'email') AND id <> uid AND NOT is_sso_user) THEN
    RAISE EXCEPTION 'email_exists' USING ERRCODE = 'FA422', HINT = 'A user with this email address has already been registered';
  END IF;
  IF p_user IS NULL THEN
    INSERT INTO auth.users (id, aud, role, email, phone, encrypted_password, email_confirmed_at, phone_confirmed_at,
      raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_super_admin)
    VALUES (uid, 'authenticated', 'authenticated', email, phone, p ->> 'password_hash',
      CASE WHEN (p ->> 'email_confirm')::boolean THEN now() END,
      CASE WHEN (p ->> 'phone_confirm')::boolean THEN now() END,
      jsonb_build_object('provider', CASE WHEN email IS NOT NULL THEN 'email' ELSE 'phone' END,
        'providers', jsonb_build_array(CASE WHEN email IS NOT NULL THEN 'email' ELSE 'phone' END))
        || coalesce(p -> 'app_metadata', '{}'::jsonb),
      coalesce(p -> 'user_metadata', '{}'::jsonb), now(), now(), false)
    RETURNING * INTO u;
    INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
    VALUES (uid::text, uid, jsonb_strip_nulls(jsonb_build_object('sub', uid::text, 'email', email, 'phone', phone)),
      CASE WHEN email IS NOT NULL THEN 'email' ELSE 'phone' END, now(), now());
    PERFORM fluxbase.auth_audit('user_signedup', uid, '{"provider": "admin"}');
  ELSE
    UPDATE auth.users SET
      email = coalesce(lower(p ->> 'email'), auth.users.email),
      phone = coalesce(p ->> 'phone', auth.users.phone),
      encrypted_password = coalesce(p ->> 'password_hash', encrypted_password),
      email_confirmed_at = CASE WHEN (p ->> 'email_confirm')::boolean THEN coalesce(email_confirmed_at, now()) ELSE email_confirmed_at END,
      phone_confirmed_at = CASE WHEN (p ->> 'phone_confirm')::boolean THEN coalesce(phone_confirmed_at, now()) ELSE phone_confirmed_at END,
      raw_user_meta_data = CASE WHEN p ? 'user_metadata' THEN coalesce(raw_user_meta_data, '{}'::jsonb) || (p -> 'user_metadata') ELSE raw_user_meta_data END,
      raw_app_meta_data = CASE WHEN p ? 'app_metadata' THEN coalesce(raw_app_meta_data, '{}'::jsonb) || (p -> 'app_metadata') ELSE raw_app_meta_data END,
      banned_until = CASE WHEN p ? 'ban_duration_seconds' THEN
        CASE WHEN (p ->> 'ban_duration_seconds')::bigint > 0 THEN now() + make_interval(secs => (p ->> 'ban_duration_seconds')::bigint) END
        ELSE banned_until END,
      updated_at = now()
    WHERE id = uid AND deleted_at IS NULL
    RETURNING * INTO u;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
    END IF;
    IF p ? 'ban_duration_seconds' AND u.banned_until IS NOT NULL THEN
      DELETE FROM auth.sessions WHERE user_id = uid;
    END IF;
    PERFORM fluxbase.auth_audit('user_modified', uid, '{"by": "admin"}');
  END IF;
  RETURN fluxbase.auth_user_json(u);
END
$$;

CREATE FUNCTION fluxbase.auth_admin_delete(p_user uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  PERFORM fluxbase.auth_audit('user_deleted', p_user, '{"by": "admin"}');
  DELETE FROM auth.users WHERE id = p_user RETURNING * INTO u;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  RETURN fluxbase.auth_user_json(u);
END
$$;

CREATE FUNCTION fluxbase.auth_user_by_email(p_email text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT fluxbase.auth_user_json(u) FROM auth.users u WHERE u.email = p_email AND NOT u.is_sso_user AND u.deleted_at IS NULL
$$;

-- Admin: a user's factors, removing one, and the audit log.
-- An unknown user is 404 user_not_found, as GoTrue's loadUser.
CREATE FUNCTION fluxbase.auth_admin_factors(p_user uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM auth.users WHERE id = p_user AND deleted_at IS NULL) THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('id', f.id, 'friendly_name', f.friendly_name,
    'factor_type', f.factor_type, 'status', f.status, 'created_at', f.created_at, 'updated_at', f.updated_at)
    ORDER BY f.created_at), '[]'::jsonb)
  FROM auth.mfa_factors f WHERE f.user_id = p_user);
END
$$;

CREATE FUNCTION fluxbase.auth_admin_delete_factor(p_user uuid, p_factor uuid) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  DELETE FROM auth.mfa_factors WHERE id = p_factor AND user_id = p_user;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mfa_factor_not_found' USING ERRCODE = 'FA404', HINT = 'Factor not found';
  END IF;
  PERFORM fluxbase.auth_audit('factor_deleted', p_user, jsonb_build_object('factor_id', p_factor, 'by', 'admin'));
  RETURN jsonb_build_object('id', p_factor);
END
$$;

CREATE FUNCTION fluxbase.auth_admin_audit(p_page int, p_per_page int) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT jsonb_build_object(
    'entries', coalesce((SELECT jsonb_agg(jsonb_build_object('id', a.id, 'payload', a.payload,
      'created_at', a.created_at, 'ip_address', a.ip_address) ORDER BY a.created_at DESC, a.id)
      FROM (SELECT * FROM auth.audit_log_entries ORDER BY created_at DESC, id
            LIMIT p_per_page OFFSET (p_page - 1) * p_per_page) a), '[]'::jsonb),
    'total', (SELECT count(*) FROM auth.audit_log_entries))
$$;

-- generate_link `email_change_current` / `email_change_new` (GoTrue's
-- adminGenerateLink): the user of p_email is to move to p_new_email; the
-- link and code of that kind replace an earlier one of the same kind, and
-- one of the other kind for the same new address is kept. Nothing is sent.
CREATE FUNCTION fluxbase.auth_admin_email_change_link(p_email text, p_new_email text, p_kind text,
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
