-- Auth operations that must be atomic, one function each, called by the
-- proxy (which hashes passwords and signs tokens). SECURITY DEFINER and
-- granted to `authenticator` only: the proxy's role needs no privileges on
-- the auth tables themselves.
--
-- Errors a client should see are raised with SQLSTATE `FAnnn` (nnn: the HTTP
-- status) and Supabase Auth's `error_code` as the message; the proxy turns
-- them into `{code, error_code, msg}` with the hint as `msg`.
--
-- Refresh tokens and one-time tokens arrive as SHA-256 hex digests: clear
-- tokens never reach the database.

-- The user as Supabase Auth returns it.
--
-- The hot helpers here are PL/pgSQL, not SQL: an SQL function with a SET
-- clause is never inlined and, before PostgreSQL 18, is parsed and planned
-- again on every call, while PL/pgSQL keeps its plans for the session
-- (a password sign-in's SQL ran 2.2x faster once this one and auth_audit
-- were converted; docs/benchmarks.md).
CREATE FUNCTION fluxbase.auth_user_json(u auth.users) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  RETURN jsonb_build_object(
    'id', u.id,
    'aud', coalesce(u.aud, 'authenticated'),
    'role', coalesce(u.role, 'authenticated'),
    'email', coalesce(u.email, ''),
    'email_confirmed_at', u.email_confirmed_at,
    'phone', coalesce(u.phone, ''),
    'phone_confirmed_at', u.phone_confirmed_at,
    'confirmed_at', u.confirmed_at,
    'last_sign_in_at', u.last_sign_in_at,
    'app_metadata', coalesce(u.raw_app_meta_data, '{}'::jsonb),
    'user_metadata', coalesce(u.raw_user_meta_data, '{}'::jsonb),
    'identities', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
        'identity_id', i.id, 'id', i.provider_id, 'user_id', i.user_id, 'identity_data', i.identity_data,
        'provider', i.provider, 'last_sign_in_at', i.last_sign_in_at, 'created_at', i.created_at,
        'updated_at', i.updated_at, 'email', i.email) ORDER BY i.created_at)
      FROM auth.identities i WHERE i.user_id = u.id), '[]'::jsonb),
    'created_at', u.created_at,
    'updated_at', u.updated_at,
    'banned_until', u.banned_until,
    'is_anonymous', u.is_anonymous,
    'factors', coalesce((
      SELECT jsonb_agg(jsonb_build_object('id', f.id, 'friendly_name', f.friendly_name,
        'factor_type', f.factor_type, 'status', f.status, 'created_at', f.created_at, 'updated_at', f.updated_at)
        || CASE WHEN f.phone IS NOT NULL THEN jsonb_build_object('phone', f.phone) ELSE '{}' END ORDER BY f.created_at)
      FROM auth.mfa_factors f WHERE f.user_id = u.id), '[]'::jsonb)
  ) || CASE WHEN coalesce(u.email_change, '') <> '' THEN
    jsonb_build_object('new_email', u.email_change, 'email_change_sent_at', u.email_change_sent_at) ELSE '{}' END
    || CASE WHEN coalesce(u.phone_change, '') <> '' THEN
    jsonb_build_object('new_phone', u.phone_change, 'phone_change_sent_at', u.phone_change_sent_at) ELSE '{}' END;
END
$$;

CREATE FUNCTION fluxbase.auth_audit(p_action text, p_user uuid, p_ip text, p_request_id text, p_traits jsonb DEFAULT '{}')
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  INSERT INTO auth.audit_log_entries (id, payload, created_at, ip_address)
  VALUES (gen_random_uuid(), json_build_object(
    'action', p_action, 'actor_id', p_user,
    'actor_username', (SELECT coalesce(u.email, u.phone) FROM auth.users u WHERE u.id = p_user),
    'log_type', CASE WHEN p_action LIKE 'token%' THEN 'token' WHEN p_action LIKE 'user%' THEN 'user' ELSE 'account' END,
    'request_id', p_request_id, 'traits', p_traits), now(), coalesce(left(p_ip, 64), ''));
END
$$;

-- A new session with its first refresh token; returns what the access
-- token needs.
CREATE FUNCTION fluxbase.auth_issue_session(p_user uuid, p_refresh_hash text, p_method text, p_ip text, p_user_agent text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  sid uuid := gen_random_uuid();
  u auth.users;
BEGIN
  INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip)
  VALUES (sid, p_user, now(), now(), 'aal1', p_user_agent, CASE WHEN p_ip ~ '^[0-9a-fA-F:.]+$' THEN p_ip::inet END);
  INSERT INTO auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method)
  VALUES (sid, now(), now(), p_method);
  INSERT INTO auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, session_id)
  VALUES (p_refresh_hash, p_user::text, false, now(), now(), sid);
  UPDATE auth.users SET last_sign_in_at = now(), updated_at = now() WHERE id = p_user RETURNING * INTO u;
  RETURN jsonb_build_object('session_id', sid, 'aal', 'aal1',
    'amr', jsonb_build_array(jsonb_build_object('method', p_method, 'timestamp', extract(epoch FROM now())::bigint)),
    'user', fluxbase.auth_user_json(u));
END
$$;

CREATE FUNCTION fluxbase.auth_signup(p_email text, p_phone text, p_password_hash text, p_user_meta jsonb,
  p_confirmed boolean, p_anonymous boolean, p_refresh_hash text, p_ip text, p_user_agent text, p_request_id text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  uid uuid := gen_random_uuid();
  u auth.users;
  provider text := CASE WHEN p_email IS NOT NULL THEN 'email' WHEN p_phone IS NOT NULL THEN 'phone' END;
BEGIN
  IF p_email IS NOT NULL AND EXISTS (SELECT 1 FROM auth.users WHERE email = p_email AND NOT is_sso_user) THEN
    RAISE EXCEPTION 'user_already_exists' USING ERRCODE = 'FA422', HINT = 'User already registered';
  END IF;
  IF p_phone IS NOT NULL AND EXISTS (SELECT 1 FROM auth.users WHERE phone = p_phone) THEN
    RAISE EXCEPTION 'phone_exists' USING ERRCODE = 'FA422', HINT = 'Phone number already registered';
  END IF;
  INSERT INTO auth.users (id, aud, role, email, phone, encrypted_password, email_confirmed_at, phone_confirmed_at,
    raw_app_meta_data, raw_user_meta_data, created_at, updated_at, is_anonymous, is_super_admin)
  VALUES (uid, 'authenticated', 'authenticated', p_email, p_phone, p_password_hash,
    CASE WHEN p_confirmed AND p_email IS NOT NULL THEN now() END,
    CASE WHEN p_confirmed AND p_phone IS NOT NULL THEN now() END,
    CASE WHEN p_anonymous THEN '{}'::jsonb
      ELSE jsonb_build_object('provider', provider, 'providers', jsonb_build_array(provider)) END,
    coalesce(p_user_meta, '{}'::jsonb), now(), now(), p_anonymous, false)
  RETURNING * INTO u;
  IF NOT p_anonymous THEN
    INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at, last_sign_in_at)
    VALUES (uid::text, uid, jsonb_strip_nulls(jsonb_build_object('sub', uid::text, 'email', p_email, 'phone', p_phone,
      -- Proven only by a link or code: auto-confirmation is not proof.
      'email_verified', false, 'phone_verified', false)),
      provider, now(), now(), now());
  END IF;
  PERFORM fluxbase.auth_audit('user_signedup', uid, p_ip, p_request_id, jsonb_build_object('provider', coalesce(provider, 'anonymous')));
  IF p_confirmed OR p_anonymous THEN
    RETURN fluxbase.auth_issue_session(uid, p_refresh_hash, CASE WHEN p_anonymous THEN 'anonymous' ELSE 'password' END,
      p_ip, p_user_agent);
  END IF;
  RETURN jsonb_build_object('user', fluxbase.auth_user_json(u));
END
$$;

-- The stored hash of a password sign-in candidate. No row: no such user
-- (the proxy still hashes, so both cases take as long).
CREATE FUNCTION fluxbase.auth_password_candidate(p_email text, p_phone text)
RETURNS TABLE (user_id uuid, password_hash text, locked_until timestamptz, confirmed boolean, banned boolean)
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  RETURN QUERY SELECT u.id, u.encrypted_password::text, f.locked_until,
    CASE WHEN p_email IS NOT NULL THEN u.email_confirmed_at IS NOT NULL ELSE u.phone_confirmed_at IS NOT NULL END,
    u.banned_until IS NOT NULL AND u.banned_until > now()
  FROM auth.users u
  LEFT JOIN fluxbase.auth_failures f ON f.user_id = u.id
  WHERE u.deleted_at IS NULL
    AND ((p_email IS NOT NULL AND u.email = p_email AND NOT u.is_sso_user) OR (p_phone IS NOT NULL AND u.phone = p_phone))
  LIMIT 1;
END
$$;

-- The outcome of a password check. A failure counts towards the lockout
-- (p_max_failures within the lockout window locks for p_lockout_seconds);
-- a success resets the count, stores a rehash (bcrypt → argon2id, or new
-- parameters) and opens a session.
CREATE FUNCTION fluxbase.auth_password_outcome(p_user uuid, p_ok boolean, p_max_failures int, p_lockout_seconds int,
  p_rehash text, p_refresh_hash text, p_ip text, p_user_agent text, p_request_id text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  n int;
BEGIN
  IF NOT p_ok THEN
    INSERT INTO fluxbase.auth_failures AS f (user_id, failures) VALUES (p_user, 1)
    ON CONFLICT (user_id) DO UPDATE SET failures = f.failures + 1
    RETURNING failures INTO n;
    PERFORM fluxbase.auth_audit('login_failed', p_user, p_ip, p_request_id);
    IF p_max_failures > 0 AND n >= p_max_failures THEN
      UPDATE fluxbase.auth_failures SET locked_until = now() + make_interval(secs => p_lockout_seconds), failures = 0
      WHERE user_id = p_user;
      PERFORM fluxbase.auth_audit('user_locked', p_user, p_ip, p_request_id,
        jsonb_build_object('seconds', p_lockout_seconds));
    END IF;
    RETURN NULL;
  END IF;
  DELETE FROM fluxbase.auth_failures WHERE user_id = p_user;
  IF p_rehash IS NOT NULL THEN
    UPDATE auth.users SET encrypted_password = p_rehash WHERE id = p_user;
  END IF;
  PERFORM fluxbase.auth_audit('login', p_user, p_ip, p_request_id, '{"provider": "email"}');
  RETURN fluxbase.auth_issue_session(p_user, p_refresh_hash, 'password', p_ip, p_user_agent);
END
$$;

-- Refresh-token rotation with reuse detection. The token given is revoked
-- and replaced by p_new_hash in the same session. A token that was already
-- rotated is a reuse: within p_reuse_seconds of its rotation (two tabs
-- refreshing at once) it is answered with another token of the same
-- session; later, it revokes the whole session (a stolen token was used).
CREATE FUNCTION fluxbase.auth_refresh(p_old_hash text, p_new_hash text, p_reuse_seconds int, p_ip text, p_request_id text)
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
  IF t.revoked AND t.updated_at < now() - make_interval(secs => p_reuse_seconds) THEN
    -- Returned, not raised: the revocation must commit.
    DELETE FROM auth.sessions WHERE id = s.id;
    PERFORM fluxbase.auth_audit('token_revoked', s.user_id, p_ip, p_request_id,
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
  PERFORM fluxbase.auth_audit('token_refreshed', u.id, p_ip, p_request_id);
  RETURN jsonb_build_object('session_id', s.id, 'aal', s.aal,
    'amr', coalesce((SELECT jsonb_agg(jsonb_build_object('method', c.authentication_method,
      'timestamp', extract(epoch FROM c.created_at)::bigint) ORDER BY c.created_at)
      FROM auth.mfa_amr_claims c WHERE c.session_id = s.id), '[]'::jsonb),
    'user', fluxbase.auth_user_json(u));
END
$$;

-- The user behind an access token, while its session lives.
CREATE FUNCTION fluxbase.auth_user(p_user uuid, p_session uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  SELECT * INTO u FROM auth.users WHERE id = p_user AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA403', HINT = 'User from sub claim in JWT does not exist';
  END IF;
  IF p_session IS NOT NULL THEN
    PERFORM fluxbase.auth_require_session(p_user, p_session);
  END IF;
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- PUT /user: e-mail, phone, password (already hashed) and metadata; NULL
-- leaves a field as it is. `data` is merged into user_metadata as Supabase does.
-- An anonymous user with an e-mail or phone now: not anonymous any more,
-- with that identity and provider.
CREATE FUNCTION fluxbase.auth_make_permanent(p_user uuid, p_provider text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at, last_sign_in_at)
  SELECT u.id::text, u.id, jsonb_strip_nulls(jsonb_build_object('sub', u.id::text, 'email', u.email, 'phone', u.phone,
    'email_verified', false, 'phone_verified', false)),
    p_provider, now(), now(), now()
  FROM auth.users u WHERE u.id = p_user
  ON CONFLICT (provider_id, provider) DO NOTHING;
  UPDATE auth.users SET is_anonymous = false,
    raw_app_meta_data = coalesce(raw_app_meta_data, '{}'::jsonb) || jsonb_build_object('provider', p_provider,
      'providers', (SELECT jsonb_agg(DISTINCT i.provider ORDER BY i.provider) FROM auth.identities i WHERE i.user_id = p_user)),
    updated_at = now()
  WHERE id = p_user;
$$;

CREATE FUNCTION fluxbase.auth_update_user(p_user uuid, p_session uuid, p_email text, p_phone text, p_password_hash text,
  p_user_meta jsonb, p_ip text, p_request_id text)
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
  PERFORM fluxbase.auth_audit('user_modified', p_user, p_ip, p_request_id);
  IF p_password_hash IS NOT NULL THEN
    PERFORM fluxbase.auth_audit('user_updated_password', p_user, p_ip, p_request_id);
  END IF;
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- POST /logout: scope `local` ends this session, `others` every other one,
-- `global` all of them. Their refresh tokens go with them.
CREATE FUNCTION fluxbase.auth_logout(p_user uuid, p_session uuid, p_scope text, p_ip text, p_request_id text)
RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  n int;
BEGIN
  DELETE FROM auth.sessions WHERE user_id = p_user AND CASE p_scope
    WHEN 'local' THEN id = p_session
    WHEN 'others' THEN id IS DISTINCT FROM p_session
    ELSE true END;
  GET DIAGNOSTICS n = ROW_COUNT;
  PERFORM fluxbase.auth_audit('logout', p_user, p_ip, p_request_id, jsonb_build_object('scope', p_scope));
  RETURN n;
END
$$;

-- Admin API (service_role): list, create, read, update and delete users.
CREATE FUNCTION fluxbase.auth_admin_list(p_page int, p_per_page int) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT jsonb_build_object(
    'users', coalesce((SELECT jsonb_agg(fluxbase.auth_user_json(u) ORDER BY u.created_at, u.id)
      FROM (SELECT * FROM auth.users WHERE deleted_at IS NULL ORDER BY created_at, id
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
CREATE FUNCTION fluxbase.auth_admin_upsert(p_user uuid, p jsonb, p_ip text, p_request_id text) RETURNS jsonb
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
    PERFORM fluxbase.auth_audit('user_signedup', uid, p_ip, p_request_id, '{"provider": "admin"}');
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
    PERFORM fluxbase.auth_audit('user_modified', uid, p_ip, p_request_id, '{"by": "admin"}');
  END IF;
  RETURN fluxbase.auth_user_json(u);
END
$$;

CREATE FUNCTION fluxbase.auth_admin_delete(p_user uuid, p_ip text, p_request_id text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  PERFORM fluxbase.auth_audit('user_deleted', p_user, p_ip, p_request_id, '{"by": "admin"}');
  DELETE FROM auth.users WHERE id = p_user RETURNING * INTO u;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- MFA (TOTP). The proxy generates and encrypts secrets (AES-256-GCM) and
-- checks codes; these functions keep factors, challenges and the per-user
-- failure count atomic.

-- The session of a request must be alive for any factor change.
CREATE FUNCTION fluxbase.auth_require_session(p_user uuid, p_session uuid) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM auth.sessions WHERE id = p_session AND user_id = p_user) THEN
    RAISE EXCEPTION 'session_not_found' USING ERRCODE = 'FA403', HINT = 'Session from session_id claim in JWT does not exist';
  END IF;
END
$$;

-- The session is alive and the factor is the user's.
CREATE FUNCTION fluxbase.auth_require_factor(p_user uuid, p_session uuid, p_factor uuid) RETURNS void
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  PERFORM fluxbase.auth_require_session(p_user, p_session);
  IF NOT EXISTS (SELECT 1 FROM auth.mfa_factors WHERE id = p_factor AND user_id = p_user) THEN
    RAISE EXCEPTION 'mfa_factor_not_found' USING ERRCODE = 'FA404', HINT = 'Factor not found';
  END IF;
END
$$;

-- A new factor: TOTP (p_secret, sealed by the proxy) or phone (p_phone).
CREATE FUNCTION fluxbase.auth_mfa_enroll(p_user uuid, p_session uuid, p_aal text, p_friendly text, p_secret text,
  p_max_factors int, p_ip text, p_request_id text, p_factor_type text DEFAULT 'totp', p_phone text DEFAULT NULL)
RETURNS uuid
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  fid uuid := gen_random_uuid();
BEGIN
  PERFORM fluxbase.auth_require_session(p_user, p_session);
  IF p_aal <> 'aal2' AND EXISTS (SELECT 1 FROM auth.mfa_factors WHERE user_id = p_user AND status = 'verified') THEN
    RAISE EXCEPTION 'insufficient_aal' USING ERRCODE = 'FA403', HINT = 'AAL2 required to enroll a new factor';
  END IF;
  IF (SELECT count(*) FROM auth.mfa_factors WHERE user_id = p_user) >= p_max_factors THEN
    RAISE EXCEPTION 'too_many_enrolled_mfa_factors' USING ERRCODE = 'FA422', HINT = 'Maximum number of enrolled factors reached';
  END IF;
  IF p_friendly IS NOT NULL AND EXISTS (SELECT 1 FROM auth.mfa_factors WHERE user_id = p_user AND friendly_name = p_friendly) THEN
    RAISE EXCEPTION 'mfa_factor_name_conflict' USING ERRCODE = 'FA422',
      HINT = format('A factor with the friendly name "%s" for this user already exists', p_friendly);
  END IF;
  IF p_factor_type = 'phone' AND EXISTS (SELECT 1 FROM auth.mfa_factors WHERE user_id = p_user
      AND factor_type = 'phone' AND phone = p_phone AND status = 'verified') THEN
    RAISE EXCEPTION 'phone_factor_already_exists' USING ERRCODE = 'FA422',
      HINT = 'A verified phone factor already exists for this number';
  END IF;
  INSERT INTO auth.mfa_factors (id, user_id, friendly_name, factor_type, status, created_at, updated_at, secret, phone)
  VALUES (fid, p_user, p_friendly, p_factor_type::auth.factor_type, 'unverified', now(), now(), p_secret, p_phone);
  PERFORM fluxbase.auth_audit('factor_in_progress', p_user, p_ip, p_request_id, jsonb_build_object('factor_id', fid));
  RETURN fid;
END
$$;

-- A challenge for a factor. Phone factors: at most one per
-- p_interval_seconds (each one sends an SMS); `phone` is returned for the
-- proxy, which then stores the code's hash (auth_mfa_challenge_code).
CREATE FUNCTION fluxbase.auth_mfa_challenge(p_user uuid, p_session uuid, p_factor uuid, p_ip text,
  p_interval_seconds int DEFAULT 60)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  cid uuid := gen_random_uuid();
  f auth.mfa_factors;
BEGIN
  PERFORM fluxbase.auth_require_factor(p_user, p_session, p_factor);
  SELECT * INTO f FROM auth.mfa_factors WHERE id = p_factor FOR UPDATE;
  IF f.factor_type = 'phone' THEN
    IF f.last_challenged_at > now() - make_interval(secs => p_interval_seconds) THEN
      RAISE EXCEPTION 'over_sms_send_rate_limit' USING ERRCODE = 'FA429',
        HINT = format('For security purposes, you can only request this after %s seconds.', p_interval_seconds);
    END IF;
    UPDATE auth.mfa_factors SET last_challenged_at = now() WHERE id = p_factor;
  END IF;
  INSERT INTO auth.mfa_challenges (id, factor_id, created_at, ip_address)
  VALUES (cid, p_factor, now(), CASE WHEN p_ip ~ '^[0-9a-fA-F:.]+$' THEN p_ip::inet ELSE '0.0.0.0'::inet END);
  RETURN jsonb_strip_nulls(jsonb_build_object('id', cid, 'type', f.factor_type, 'phone', f.phone,
    'expires_at', extract(epoch FROM now() + interval '5 minutes')::bigint));
END
$$;

-- The SHA-256 of the code texted for a phone challenge.
CREATE FUNCTION fluxbase.auth_mfa_challenge_code(p_challenge uuid, p_code_hash text) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  UPDATE auth.mfa_challenges SET otp_code = p_code_hash WHERE id = p_challenge AND verified_at IS NULL;
$$;

-- What checking a code needs: the encrypted secret (or the texted code's
-- hash) and whether the challenge can still be answered. The failure limit
-- is checked by auth_mfa_result, under the user's lock.
CREATE FUNCTION fluxbase.auth_mfa_secret(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid)
RETURNS TABLE (secret text, factor_type text, otp_code text)
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  PERFORM fluxbase.auth_require_factor(p_user, p_session, p_factor);
  IF NOT EXISTS (SELECT 1 FROM auth.mfa_challenges WHERE id = p_challenge AND factor_id = p_factor
                 AND verified_at IS NULL AND created_at > now() - interval '5 minutes') THEN
    RAISE EXCEPTION 'mfa_challenge_expired' USING ERRCODE = 'FA422',
      HINT = 'MFA challenge has expired, verify against another challenge or create a new challenge';
  END IF;
  RETURN QUERY SELECT f.secret, f.factor_type::text, (SELECT c.otp_code FROM auth.mfa_challenges c WHERE c.id = p_challenge)
  FROM auth.mfa_factors f WHERE f.id = p_factor;
END
$$;

-- The outcome of a code check. Wrong: counted (and returned, not raised, so
-- the count commits). Right: the challenge is used up, the factor verified,
-- and the session moves to aal2 with new tokens (the old refresh tokens of
-- the session are revoked). Outcomes of one user are taken one at a time,
-- and the failure limit is checked again under that lock: codes sent all
-- at once were otherwise each checked against the count before any of
-- them was recorded.
CREATE FUNCTION fluxbase.auth_mfa_result(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid, p_ok boolean,
  p_refresh_hash text, p_ip text, p_request_id text, p_step bigint DEFAULT NULL,
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
    RETURN jsonb_build_object('error', 'over_request_rate_limit', 'status', 429,
      'msg', 'Too many wrong MFA codes. Try again in a few minutes.');
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
    PERFORM fluxbase.auth_audit('mfa_verify_failed', p_user, p_ip, p_request_id, jsonb_build_object('factor_id', p_factor));
    RETURN jsonb_build_object('error', 'mfa_verification_failed', 'status', 422,
      'msg', (SELECT CASE WHEN factor_type = 'phone' THEN 'Invalid MFA Phone code entered' ELSE 'Invalid TOTP code entered' END
              FROM auth.mfa_factors WHERE id = p_factor));
  END IF;
  UPDATE auth.mfa_challenges SET verified_at = now() WHERE id = p_challenge AND verified_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mfa_challenge_expired' USING ERRCODE = 'FA422', HINT = 'MFA challenge was already verified';
  END IF;
  UPDATE auth.mfa_factors SET status = 'verified', updated_at = now() WHERE id = p_factor;
  UPDATE auth.sessions SET aal = 'aal2', factor_id = p_factor, updated_at = now() WHERE id = p_session;
  INSERT INTO auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method)
  VALUES (p_session, now(), now(), (SELECT factor_type::text FROM auth.mfa_factors WHERE id = p_factor))
  ON CONFLICT (session_id, authentication_method) DO UPDATE SET updated_at = now();
  UPDATE auth.refresh_tokens SET revoked = true, updated_at = now() WHERE session_id = p_session AND NOT revoked;
  INSERT INTO auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, session_id)
  VALUES (p_refresh_hash, p_user::text, false, now(), now(), p_session);
  DELETE FROM fluxbase.auth_mfa_failures WHERE user_id = p_user;
  PERFORM fluxbase.auth_audit('mfa_verified', p_user, p_ip, p_request_id, jsonb_build_object('factor_id', p_factor));
  SELECT * INTO u FROM auth.users WHERE id = p_user;
  RETURN jsonb_build_object('session_id', p_session, 'aal', 'aal2',
    'amr', (SELECT jsonb_agg(jsonb_build_object('method', c.authentication_method,
      'timestamp', extract(epoch FROM c.updated_at)::bigint) ORDER BY c.updated_at DESC)
      FROM auth.mfa_amr_claims c WHERE c.session_id = p_session),
    'user', fluxbase.auth_user_json(u));
END
$$;

CREATE FUNCTION fluxbase.auth_mfa_unenroll(p_user uuid, p_session uuid, p_aal text, p_factor uuid, p_ip text, p_request_id text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  f auth.mfa_factors;
BEGIN
  PERFORM fluxbase.auth_require_session(p_user, p_session);
  SELECT * INTO f FROM auth.mfa_factors WHERE id = p_factor AND user_id = p_user;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mfa_factor_not_found' USING ERRCODE = 'FA404', HINT = 'Factor not found';
  END IF;
  IF f.status = 'verified' AND p_aal <> 'aal2' THEN
    RAISE EXCEPTION 'insufficient_aal' USING ERRCODE = 'FA403', HINT = 'AAL2 required to unenroll verified factor';
  END IF;
  DELETE FROM auth.mfa_factors WHERE id = p_factor;
  PERFORM fluxbase.auth_audit('factor_deleted', p_user, p_ip, p_request_id, jsonb_build_object('factor_id', p_factor));
  RETURN jsonb_build_object('id', p_factor);
END
$$;

-- One hit on each rate-limit key; returns 0 when every key is within its
-- limit, else the seconds until the fullest window ends. p_keys and
-- p_limits pair up; a limit of 0 or less is no limit. Windows of
-- p_window_seconds are aligned to the epoch; a key's older windows are
-- deleted as it is hit.
CREATE FUNCTION fluxbase.auth_rate_hit(p_keys text[], p_limits int[], p_window_seconds int) RETURNS int
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  w timestamptz := to_timestamp(floor(extract(epoch FROM now()) / p_window_seconds) * p_window_seconds);
  n int;
  wait int := 0;
BEGIN
  FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
    CONTINUE WHEN p_limits[i] IS NULL OR p_limits[i] <= 0;
    DELETE FROM fluxbase.auth_rate_limits WHERE key = p_keys[i] AND window_start < w;
    INSERT INTO fluxbase.auth_rate_limits AS r (key, window_start, hits) VALUES (p_keys[i], w, 1)
    ON CONFLICT (key, window_start) DO UPDATE SET hits = r.hits + 1
    RETURNING hits INTO n;
    IF n > p_limits[i] THEN
      wait := greatest(wait, ceil(extract(epoch FROM w + make_interval(secs => p_window_seconds) - now()))::int, 1);
    END IF;
  END LOOP;
  RETURN wait;
END
$$;

-- A wrong code for p_user's token of type p_type: counted; the fifth
-- deletes the token (and says so in the audit log), so a six-digit code
-- cannot be guessed by spreading tries over many IP addresses.
CREATE FUNCTION fluxbase.auth_token_failed(p_user uuid, p_types auth.one_time_token_type[], p_ip text, p_request_id text)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  fails int;
BEGIN
  IF p_user IS NULL OR NOT EXISTS (SELECT 1 FROM auth.one_time_tokens WHERE user_id = p_user AND token_type = ANY (p_types)) THEN
    RETURN;
  END IF;
  INSERT INTO fluxbase.auth_token_failures (user_id, token_type, failures) VALUES (p_user, p_types[1], 1)
  ON CONFLICT (user_id, token_type) DO UPDATE SET failures = auth_token_failures.failures + 1
  RETURNING failures INTO fails;
  IF fails >= 5 THEN
    DELETE FROM auth.one_time_tokens WHERE user_id = p_user AND token_type = ANY (p_types);
    DELETE FROM fluxbase.auth_token_failures WHERE user_id = p_user AND token_type = p_types[1];
    PERFORM fluxbase.auth_audit('token_revoked_after_failures', p_user, p_ip, p_request_id,
      jsonb_build_object('types', p_types));
  END IF;
END
$$;

-- Links and codes sent by e-mail or SMS (magic link / OTP, recovery,
-- sign-up confirmation). One row per user and kind in auth.one_time_tokens:
-- token_hash is the SHA-256 of the link token, relates_to the SHA-256 of
-- "address:code"; neither the link nor the code is stored.
--
-- Stores a one-time link (p_link_hash) and code (p_code_hash) of p_kind
-- (magiclink, recovery, signup) for the user whose e-mail or phone
-- (p_channel 'email' | 'phone') is p_address; creates that user when
-- unknown and p_create. Returns 'sent', 'no_user' or 'too_soon' (one per
-- p_interval_seconds). A new token replaces the user's previous one.
CREATE FUNCTION fluxbase.auth_send_token(p_channel text, p_address text, p_kind text, p_link_hash text,
  p_code_hash text, p_create boolean, p_user_meta jsonb, p_interval_seconds int, p_code_challenge text,
  p_code_challenge_method text, p_ip text, p_request_id text)
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
    PERFORM fluxbase.auth_audit('user_signedup', uid, p_ip, p_request_id, jsonb_build_object('provider', p_channel));
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
    ELSE 'user_confirmation_requested' END, u.id, p_ip, p_request_id,
    jsonb_build_object('kind', p_kind, 'channel', p_channel));
  RETURN 'sent';
END
$$;

-- Redeems a link (p_link_hash) or a code (p_code_hash) once: the token is
-- deleted, the e-mail or phone (p_channel) counts as confirmed, and a
-- session starts. Refusals are returned, not raised (an expired token is
-- deleted for good). A link sent for a PKCE app gives no session: its flow
-- state gets the code p_pkce_code_hash, and `{pkce: true}` comes back.
CREATE FUNCTION fluxbase.auth_verify_token(p_channel text, p_kind text, p_link_hash text, p_code_hash text,
  p_pkce_code_hash text, p_expiry_seconds int, p_refresh_hash text, p_ip text, p_user_agent text, p_request_id text,
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
        ARRAY[tt], p_ip, p_request_id);
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
  PERFORM fluxbase.auth_audit('login', t.user_id, p_ip, p_request_id, jsonb_build_object('provider', p_channel, 'kind', p_kind));
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
      WHEN p_link_hash IS NOT NULL THEN 'magiclink' ELSE 'otp' END,
    p_ip, p_user_agent);
END
$$;

-- PUT /user with a new e-mail, when changes are confirmed by e-mail: the
-- change waits in users.email_change for the link or code sent to the new
-- address and, with secure e-mail change, the one sent to the current
-- address too (one_time_tokens email_change_token_new / _current).
CREATE FUNCTION fluxbase.auth_email_change_request(p_user uuid, p_session uuid, p_new_email text,
  p_new_link_hash text, p_new_code_hash text, p_current_link_hash text, p_current_code_hash text,
  p_interval_seconds int, p_ip text, p_request_id text)
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
  PERFORM fluxbase.auth_audit('user_modified', p_user, p_ip, p_request_id, jsonb_build_object('email_change', p_new_email));
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- Redeems an e-mail change link or code once. The first of two (secure
-- change) only counts; the last one moves the address and starts a session.
CREATE FUNCTION fluxbase.auth_verify_email_change(p_link_hash text, p_code_hash text, p_expiry_seconds int,
  p_refresh_hash text, p_ip text, p_user_agent text, p_request_id text, p_address text DEFAULT NULL)
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
        ARRAY['email_change_token_new', 'email_change_token_current']::auth.one_time_token_type[], p_ip, p_request_id);
    END IF;
    RETURN jsonb_build_object('error', 'otp_expired', 'status', 403, 'msg', 'Email link is invalid or has expired');
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = t.user_id AND deleted_at IS NULL FOR UPDATE;
  IF coalesce(u.email_change, '') = '' THEN
    RETURN jsonb_build_object('error', 'otp_expired', 'status', 403, 'msg', 'Email link is invalid or has expired');
  END IF;
  IF EXISTS (SELECT 1 FROM auth.one_time_tokens WHERE user_id = u.id
             AND token_type IN ('email_change_token_new', 'email_change_token_current')) THEN
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
  PERFORM fluxbase.auth_audit('user_modified', u.id, p_ip, p_request_id, jsonb_build_object('email', u.email_change));
  RETURN fluxbase.auth_issue_session(u.id, p_refresh_hash, 'email_change', p_ip, p_user_agent);
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

-- PUT /user's `nonce`: the code GET /reauthenticate sent, taken once.
CREATE FUNCTION fluxbase.auth_reauthenticated(p_user uuid, p_code_hash text, p_expiry_seconds int,
  p_ip text DEFAULT NULL, p_request_id text DEFAULT NULL)
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
    PERFORM fluxbase.auth_token_failed(p_user, ARRAY['reauthentication_token']::auth.one_time_token_type[],
      p_ip, p_request_id);
    RETURN false;
  END IF;
  DELETE FROM fluxbase.auth_token_failures WHERE user_id = p_user AND token_type = 'reauthentication_token';
  RETURN issued >= now() - make_interval(secs => p_expiry_seconds);
END
$$;

-- PUT /user with a new phone, confirmed by a code texted to it
-- (verifyOtp type phone_change); users.phone_change holds it meanwhile.
CREATE FUNCTION fluxbase.auth_phone_change_request(p_user uuid, p_session uuid, p_new_phone text, p_link_hash text,
  p_code_hash text, p_interval_seconds int, p_ip text, p_request_id text)
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
  PERFORM fluxbase.auth_audit('user_modified', p_user, p_ip, p_request_id, jsonb_build_object('phone_change', p_new_phone));
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- The texted code of a phone change, once: the number moves and is confirmed.
CREATE FUNCTION fluxbase.auth_verify_phone_change(p_code_hash text, p_expiry_seconds int, p_refresh_hash text,
  p_ip text, p_user_agent text, p_request_id text, p_address text)
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
        ARRAY['phone_change_token']::auth.one_time_token_type[], p_ip, p_request_id);
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
  PERFORM fluxbase.auth_audit('user_modified', u.id, p_ip, p_request_id, jsonb_build_object('phone', u.phone_change));
  RETURN fluxbase.auth_issue_session(u.id, p_refresh_hash, 'otp', p_ip, p_user_agent);
END
$$;

CREATE FUNCTION fluxbase.auth_user_by_email(p_email text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT fluxbase.auth_user_json(u) FROM auth.users u WHERE u.email = p_email AND NOT u.is_sso_user AND u.deleted_at IS NULL
$$;

-- Admin: a user's factors, removing one, and the audit log.
CREATE FUNCTION fluxbase.auth_admin_factors(p_user uuid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object('id', f.id, 'friendly_name', f.friendly_name,
    'factor_type', f.factor_type, 'status', f.status, 'created_at', f.created_at, 'updated_at', f.updated_at)
    ORDER BY f.created_at), '[]'::jsonb)
  FROM auth.mfa_factors f WHERE f.user_id = p_user
$$;

CREATE FUNCTION fluxbase.auth_admin_delete_factor(p_user uuid, p_factor uuid, p_ip text, p_request_id text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  DELETE FROM auth.mfa_factors WHERE id = p_factor AND user_id = p_user;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mfa_factor_not_found' USING ERRCODE = 'FA404', HINT = 'Factor not found';
  END IF;
  PERFORM fluxbase.auth_audit('factor_deleted', p_user, p_ip, p_request_id, jsonb_build_object('factor_id', p_factor, 'by', 'admin'));
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

-- OAuth: a sign-in begins. Stale rows (abandoned sign-ins) go on the way.
CREATE FUNCTION fluxbase.auth_oauth_begin(p_state_hash text, p_provider text, p_redirect_to text,
  p_code_challenge text, p_code_challenge_method text, p_nonce text, p_verifier text, p_link_user uuid,
  p_expiry_seconds int)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  DELETE FROM fluxbase.auth_oauth_states WHERE created_at < now() - make_interval(secs => p_expiry_seconds);
  INSERT INTO fluxbase.auth_oauth_states (state_hash, provider, redirect_to, code_challenge, code_challenge_method,
    nonce, verifier, link_user)
  VALUES (p_state_hash, p_provider, p_redirect_to, p_code_challenge,
    lower(p_code_challenge_method)::auth.code_challenge_method, p_nonce, p_verifier, p_link_user);
$$;

-- OAuth: the callback takes its sign-in, once; no row for an unknown or
-- expired state.
CREATE FUNCTION fluxbase.auth_oauth_take(p_state_hash text, p_expiry_seconds int)
RETURNS TABLE (provider text, redirect_to text, code_challenge text, code_challenge_method text, nonce text,
  verifier text, link_user uuid)
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  DELETE FROM fluxbase.auth_oauth_states s
  WHERE s.state_hash = p_state_hash AND s.created_at >= now() - make_interval(secs => p_expiry_seconds)
  RETURNING s.provider, s.redirect_to, s.code_challenge, s.code_challenge_method::text, s.nonce, s.verifier, s.link_user
$$;

-- OAuth / OIDC: the provider vouched for (p_provider, p_provider_id). Finds
-- the user by that identity, or links it (to p_link_user, or to the user
-- with the same e-mail when the provider verified it), or creates a user.
-- Then a session (p_refresh_hash, implicit flow and id_token grant) or a
-- PKCE flow state whose code the app trades for a session (p_flow:
-- {code_hash, code_challenge, code_challenge_method, provider_access_token,
-- provider_refresh_token}).
CREATE FUNCTION fluxbase.auth_oauth_signin(p_provider text, p_provider_id text, p_identity jsonb, p_email text,
  p_email_verified boolean, p_link_user uuid, p_allow_signup boolean, p_autoconfirm boolean,
  p_refresh_hash text, p_flow jsonb, p_ip text, p_user_agent text, p_request_id text, p_sso boolean DEFAULT false)
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
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA400', HINT = 'User is banned';
  END IF;
  IF u.email IS NOT NULL AND u.email_confirmed_at IS NULL THEN
    RAISE EXCEPTION 'provider_email_needs_verification' USING ERRCODE = 'FA422',
      HINT = format('Unverified email with %s. Verify the email with %s and sign in again', p_provider, p_provider);
  END IF;
  PERFORM fluxbase.auth_audit(action, uid, p_ip, p_request_id, jsonb_build_object('provider', p_provider));
  IF p_flow IS NOT NULL THEN
    INSERT INTO auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
      provider_access_token, provider_refresh_token, created_at, updated_at, authentication_method, auth_code_issued_at)
    VALUES (gen_random_uuid(), uid, p_flow ->> 'code_hash', (p_flow ->> 'code_challenge_method')::auth.code_challenge_method,
      p_flow ->> 'code_challenge', p_provider, p_flow ->> 'provider_access_token', p_flow ->> 'provider_refresh_token',
      now(), now(), coalesce(p_flow ->> 'method', 'oauth'), now());
    RETURN jsonb_build_object('user_id', uid);
  END IF;
  RETURN fluxbase.auth_issue_session(uid, p_refresh_hash, CASE WHEN p_sso THEN 'sso/saml' ELSE 'oauth' END,
    p_ip, p_user_agent);
END
$$;

-- grant_type=pkce: the code of a finished sign-in and the verifier of its
-- challenge become a session. A code is taken by its first attempt, right
-- or wrong (returned, not raised: the deletion must commit).
CREATE FUNCTION fluxbase.auth_pkce_exchange(p_code_hash text, p_verifier_s256 text, p_verifier text,
  p_expiry_seconds int, p_refresh_hash text, p_ip text, p_user_agent text, p_request_id text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  f auth.flow_state;
  issued jsonb;
BEGIN
  DELETE FROM auth.flow_state WHERE auth_code = p_code_hash RETURNING * INTO f;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('error', 'flow_state_not_found', 'status', 404,
      'msg', 'invalid flow state, no valid flow state found');
  END IF;
  IF coalesce(f.auth_code_issued_at, f.created_at) < now() - make_interval(secs => p_expiry_seconds) THEN
    RETURN jsonb_build_object('error', 'flow_state_expired', 'status', 422,
      'msg', 'invalid flow state, flow state has expired');
  END IF;
  IF f.code_challenge IS DISTINCT FROM (CASE f.code_challenge_method WHEN 's256' THEN p_verifier_s256 ELSE p_verifier END) THEN
    RETURN jsonb_build_object('error', 'bad_code_verifier', 'status', 403,
      'msg', 'code challenge does not match previously saved code verifier');
  END IF;
  issued := fluxbase.auth_issue_session(f.user_id, p_refresh_hash,
    CASE f.authentication_method WHEN 'signup' THEN 'email/signup' ELSE coalesce(f.authentication_method, 'oauth') END,
    p_ip, p_user_agent);
  PERFORM fluxbase.auth_audit('token_exchanged', f.user_id, p_ip, p_request_id, jsonb_build_object('provider', f.provider_type));
  RETURN issued || jsonb_strip_nulls(jsonb_build_object('provider_token', f.provider_access_token,
    'provider_refresh_token', f.provider_refresh_token));
END
$$;

-- unlinkIdentity(): a user keeps at least one identity.
CREATE FUNCTION fluxbase.auth_unlink_identity(p_user uuid, p_identity uuid, p_ip text, p_request_id text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  gone auth.identities;
BEGIN
  PERFORM 1 FROM auth.users WHERE id = p_user FOR UPDATE;
  IF (SELECT count(*) FROM auth.identities WHERE user_id = p_user) <= 1 THEN
    RAISE EXCEPTION 'single_identity_not_deletable' USING ERRCODE = 'FA422',
      HINT = 'User must have at least 1 identity after unlinking';
  END IF;
  DELETE FROM auth.identities WHERE id = p_identity AND user_id = p_user RETURNING * INTO gone;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'identity_not_found' USING ERRCODE = 'FA404', HINT = 'Identity doesn''t exist';
  END IF;
  UPDATE auth.users SET
    raw_app_meta_data = jsonb_set(coalesce(raw_app_meta_data, '{}'::jsonb), '{providers}',
      coalesce((SELECT jsonb_agg(DISTINCT i.provider ORDER BY i.provider) FROM auth.identities i WHERE i.user_id = p_user),
        '[]'::jsonb)),
    updated_at = now()
  WHERE id = p_user;
  PERFORM fluxbase.auth_audit('identity_unlinked', p_user, p_ip, p_request_id,
    jsonb_build_object('provider', gone.provider, 'identity_id', gone.id));
  RETURN '{}'::jsonb;
END
$$;

-- Passkeys. A challenge for a registration (p_user: who registers) or a
-- sign-in (no user: passkeys are discoverable); registration also returns
-- the user's existing credential ids (hex), which the browser must not
-- register twice, and the names for the authenticator.
CREATE FUNCTION fluxbase.auth_passkey_challenge(p_user uuid, p_session uuid, p_kind text, p_challenge text,
  p_expiry_seconds int, p_aal text DEFAULT 'aal1')
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  cid uuid := gen_random_uuid();
  me jsonb;
BEGIN
  IF p_user IS NOT NULL THEN
    me := fluxbase.auth_user(p_user, p_session);
    -- A new way in must not be addable with the password alone when MFA guards the account.
    IF p_aal <> 'aal2' AND EXISTS (SELECT 1 FROM auth.mfa_factors WHERE user_id = p_user AND status = 'verified') THEN
      RAISE EXCEPTION 'insufficient_aal' USING ERRCODE = 'FA403', HINT = 'AAL2 required to register a passkey';
    END IF;
  END IF;
  DELETE FROM fluxbase.auth_webauthn_challenges WHERE created_at < now() - make_interval(secs => p_expiry_seconds);
  INSERT INTO fluxbase.auth_webauthn_challenges (id, user_id, kind, challenge) VALUES (cid, p_user, p_kind, p_challenge);
  RETURN jsonb_build_object('id', cid, 'user', me,
    'exclude', coalesce((SELECT jsonb_agg(encode(credential_id, 'hex')) FROM auth.webauthn_credentials
                         WHERE user_id = p_user), '[]'::jsonb));
END
$$;

-- The challenge of p_id, once, if it is of p_kind, for p_user and fresh.
CREATE FUNCTION fluxbase.auth_passkey_take_challenge(p_id uuid, p_kind text, p_user uuid, p_expiry_seconds int)
RETURNS text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  WITH taken AS (DELETE FROM fluxbase.auth_webauthn_challenges WHERE id = p_id RETURNING *)
  SELECT challenge FROM taken
  WHERE kind = p_kind AND user_id IS NOT DISTINCT FROM p_user
    AND created_at >= now() - make_interval(secs => p_expiry_seconds)
$$;

CREATE FUNCTION fluxbase.auth_passkey_json(c auth.webauthn_credentials) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
  SELECT jsonb_strip_nulls(jsonb_build_object('id', c.id, 'friendly_name', c.friendly_name,
    'created_at', c.created_at, 'last_used_at', c.last_used_at))
$$;

CREATE FUNCTION fluxbase.auth_passkey_register(p_user uuid, p_credential_id bytea, p_public_key bytea,
  p_sign_count bigint, p_aaguid uuid, p_friendly_name text, p_ip text, p_request_id text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.webauthn_credentials;
BEGIN
  INSERT INTO auth.webauthn_credentials (user_id, credential_id, public_key, sign_count, aaguid, friendly_name)
  VALUES (p_user, p_credential_id, p_public_key, p_sign_count, p_aaguid, p_friendly_name)
  ON CONFLICT (credential_id) DO NOTHING
  RETURNING * INTO c;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'passkey_already_registered' USING ERRCODE = 'FA422', HINT = 'This passkey is already registered';
  END IF;
  PERFORM fluxbase.auth_audit('passkey_registered', p_user, p_ip, p_request_id, jsonb_build_object('passkey_id', c.id));
  RETURN fluxbase.auth_passkey_json(c);
END
$$;

-- The stored key of a credential id (no row: unknown passkey).
CREATE FUNCTION fluxbase.auth_passkey_lookup(p_credential_id bytea)
RETURNS TABLE (id uuid, user_id uuid, public_key bytea)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT c.id, c.user_id, c.public_key FROM auth.webauthn_credentials c WHERE c.credential_id = p_credential_id
$$;

-- A verified passkey assertion becomes a session. A sign count that does not
-- grow (when the authenticator counts) means a cloned key: refused.
CREATE FUNCTION fluxbase.auth_passkey_signin(p_passkey uuid, p_sign_count bigint, p_refresh_hash text,
  p_ip text, p_user_agent text, p_request_id text)
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
    PERFORM fluxbase.auth_audit('passkey_clone_suspected', c.user_id, p_ip, p_request_id,
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
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA400', HINT = 'User is banned';
  END IF;
  PERFORM fluxbase.auth_audit('login', u.id, p_ip, p_request_id, jsonb_build_object('provider', 'passkey'));
  RETURN fluxbase.auth_issue_session(u.id, p_refresh_hash, 'passkey', p_ip, p_user_agent);
END
$$;

-- A user's passkeys: list, rename (p_name), delete (p_delete).
CREATE FUNCTION fluxbase.auth_passkeys(p_user uuid, p_passkey uuid, p_name text, p_delete boolean,
  p_ip text, p_request_id text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.webauthn_credentials;
BEGIN
  IF p_passkey IS NULL THEN
    RETURN coalesce((SELECT jsonb_agg(fluxbase.auth_passkey_json(w) ORDER BY w.created_at)
                     FROM auth.webauthn_credentials w WHERE w.user_id = p_user), '[]'::jsonb);
  END IF;
  IF p_delete THEN
    DELETE FROM auth.webauthn_credentials WHERE id = p_passkey AND user_id = p_user RETURNING * INTO c;
  ELSE
    UPDATE auth.webauthn_credentials SET friendly_name = p_name, updated_at = now()
    WHERE id = p_passkey AND user_id = p_user RETURNING * INTO c;
  END IF;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'passkey_not_found' USING ERRCODE = 'FA404', HINT = 'Passkey not found';
  END IF;
  IF p_delete THEN
    PERFORM fluxbase.auth_audit('passkey_deleted', p_user, p_ip, p_request_id, jsonb_build_object('passkey_id', c.id));
    RETURN 'null'::jsonb;
  END IF;
  RETURN fluxbase.auth_passkey_json(c);
END
$$;

DO $grants$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = 'fluxbase'::regnamespace AND p.proname LIKE 'auth\_%'
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticator', f);
  END LOOP;
END
$grants$;
