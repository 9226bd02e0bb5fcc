-- Sessions: sign-up, password sign-in, refresh-token rotation, logout
-- (proxy/src/auth/session.rs).

CREATE FUNCTION fluxbase.auth_signup(p_email text, p_phone text, p_password_hash text, p_user_meta jsonb,
  p_confirmed boolean, p_anonymous boolean, p_refresh_hash text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  uid uuid := gen_random_uuid();
  u auth.users;
  provider text := CASE WHEN p_email IS NOT NULL THEN 'email' WHEN p_phone IS NOT NULL THEN 'phone' END;
BEGIN
  IF p_email IS NOT NULL THEN
    SELECT * INTO u FROM auth.users WHERE email = p_email AND NOT is_sso_user LIMIT 1;
    IF FOUND THEN
      -- As Supabase Auth: auto-confirmed sign-ups say the address is taken;
      -- with confirmations on, the answer does not tell. An unconfirmed
      -- user is answered as a new one and gets the confirmation again (its
      -- password kept: the caller has not proved the address); a confirmed
      -- one gets nothing (`obfuscated`), the caller a made-up user.
      IF p_confirmed THEN
        RAISE EXCEPTION 'user_already_exists' USING ERRCODE = 'FA422', HINT = 'User already registered';
      END IF;
      PERFORM fluxbase.auth_audit('user_repeated_signup', u.id, '{"provider": "email"}');
      IF u.email_confirmed_at IS NULL THEN
        RETURN jsonb_build_object('user', fluxbase.auth_user_json(u));
      END IF;
      RETURN jsonb_build_object('user', fluxbase.auth_obfuscated_user(p_email, p_user_meta), 'obfuscated', true);
    END IF;
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
  PERFORM fluxbase.auth_audit('user_signedup', uid, jsonb_build_object('provider', coalesce(provider, 'anonymous')));
  IF p_confirmed OR p_anonymous THEN
    RETURN fluxbase.auth_issue_session(uid, p_refresh_hash, CASE WHEN p_anonymous THEN 'anonymous' ELSE 'password' END);
  END IF;
  RETURN jsonb_build_object('user', fluxbase.auth_user_json(u));
END
$$;

-- What GoTrue's sanitizeUser answers a sign-up of a confirmed address with
-- (confirmations on): a user that looks new and unconfirmed, with a random
-- id, no role and no identities. Nothing is stored.
CREATE FUNCTION fluxbase.auth_obfuscated_user(p_email text, p_user_meta jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  u.id := gen_random_uuid();
  u.aud := 'authenticated';
  u.role := '';
  u.email := p_email;
  u.raw_app_meta_data := '{"provider": "email", "providers": ["email"]}';
  u.raw_user_meta_data := coalesce(p_user_meta, '{}');
  u.created_at := now();
  u.updated_at := now();
  u.is_anonymous := false;
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- Password lockout: how many seconds p_identifier (an e-mail or phone, a
-- user's or not) stays locked for the request's client address
-- (request.ip), 0 when it is not. Wrong passwords count for
-- p_window_seconds: p_max_failures of them from one address lock the
-- identifier for that address, p_account_max_failures from all addresses
-- lock it for everyone, until the oldest of them leaves the window (a
-- burst locks for the whole window). 0 disables either limit.
CREATE FUNCTION fluxbase.auth_password_lock_wait(p_identifier text, p_max_failures int, p_account_max_failures int,
  p_window_seconds int)
RETURNS int
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  since timestamptz := now() - make_interval(secs => p_window_seconds);
  v_ip text := coalesce(current_setting('request.ip', true), '');
  nth timestamptz;
  until timestamptz;
BEGIN
  IF p_max_failures > 0 THEN
    SELECT f.at INTO nth FROM fluxbase.auth_password_failures f
    WHERE f.identifier = p_identifier AND f.at > since AND f.ip = v_ip
    ORDER BY f.at DESC OFFSET p_max_failures - 1 LIMIT 1;
    until := nth + make_interval(secs => p_window_seconds);
  END IF;
  IF p_account_max_failures > 0 THEN
    SELECT f.at INTO nth FROM fluxbase.auth_password_failures f
    WHERE f.identifier = p_identifier AND f.at > since
    ORDER BY f.at DESC OFFSET p_account_max_failures - 1 LIMIT 1;
    until := greatest(until, nth + make_interval(secs => p_window_seconds));
  END IF;
  IF until IS NULL OR until <= now() THEN
    RETURN 0;
  END IF;
  RETURN greatest(ceil(extract(epoch FROM until - now()))::int, 1);
END
$$;

-- A locked identifier: 429 with the wait in DETAIL (the proxy's
-- Retry-After), the same for unknown and known accounts.
CREATE FUNCTION fluxbase.auth_password_refuse_locked(p_wait int)
RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  IF p_wait > 0 THEN
    RAISE EXCEPTION 'over_request_rate_limit' USING ERRCODE = 'FA429', DETAIL = p_wait::text,
      HINT = format('Too many failed sign-in attempts. Try again in %s seconds.', p_wait);
  END IF;
END
$$;

-- A password sign-in's candidate: {user_id, password_hash, confirmed,
-- banned}, or {} when no user has the address (the proxy still hashes, so
-- both take as long, and reports the outcome either way). A locked
-- identifier is refused first (auth_password_lock_wait), before any
-- hashing, whether or not a user has it.
CREATE FUNCTION fluxbase.auth_password_candidate(p_email text, p_phone text, p_max_failures int,
  p_account_max_failures int, p_window_seconds int)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
BEGIN
  PERFORM fluxbase.auth_password_refuse_locked(fluxbase.auth_password_lock_wait(coalesce(p_email, p_phone),
    p_max_failures, p_account_max_failures, p_window_seconds));
  SELECT * INTO u FROM auth.users
  WHERE deleted_at IS NULL
    AND ((p_email IS NOT NULL AND email = p_email AND NOT is_sso_user) OR (p_phone IS NOT NULL AND phone = p_phone))
  LIMIT 1;
  IF NOT FOUND THEN
    RETURN '{}';
  END IF;
  RETURN jsonb_build_object('user_id', u.id, 'password_hash', u.encrypted_password,
    'confirmed', CASE WHEN p_email IS NOT NULL THEN u.email_confirmed_at IS NOT NULL ELSE u.phone_confirmed_at IS NOT NULL END,
    'banned', u.banned_until IS NOT NULL AND u.banned_until > now());
END
$$;

-- The outcome of a password check for p_identifier (p_user: its user, NULL
-- when none). Outcomes of one identifier are recorded one at a time and
-- the lockout is checked again under that lock, so guesses sent all at
-- once cannot slip past it. A failure is recorded for the request's
-- client address, whether or not a user has the identifier, and returned,
-- not raised, so it commits; a success forgets this address's failures,
-- stores a rehash (bcrypt → argon2id, or new parameters) and opens a
-- session.
CREATE FUNCTION fluxbase.auth_password_outcome(p_identifier text, p_user uuid, p_ok boolean, p_max_failures int,
  p_account_max_failures int, p_window_seconds int, p_rehash text, p_refresh_hash text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  v_ip text := coalesce(current_setting('request.ip', true), '');
  since timestamptz := now() - make_interval(secs => p_window_seconds);
  wait int;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('fluxbase.auth_password:' || p_identifier, 0));
  PERFORM fluxbase.auth_password_refuse_locked(fluxbase.auth_password_lock_wait(p_identifier,
    p_max_failures, p_account_max_failures, p_window_seconds));
  IF NOT p_ok THEN
    IF p_max_failures > 0 OR p_account_max_failures > 0 THEN
      -- Expired rows of any identifier go a few at a time, skipping rows
      -- another sign-in is deleting.
      DELETE FROM fluxbase.auth_password_failures WHERE ctid = ANY (ARRAY(
        SELECT f.ctid FROM fluxbase.auth_password_failures f WHERE f.at <= since
        LIMIT 100 FOR UPDATE SKIP LOCKED));
      INSERT INTO fluxbase.auth_password_failures (identifier, ip) VALUES (p_identifier, v_ip);
    END IF;
    IF p_user IS NOT NULL THEN
      PERFORM fluxbase.auth_audit('login_failed', p_user);
      wait := fluxbase.auth_password_lock_wait(p_identifier, p_max_failures, p_account_max_failures, p_window_seconds);
      IF wait > 0 THEN
        PERFORM fluxbase.auth_audit('user_locked', p_user, jsonb_build_object('seconds', wait));
      END IF;
    END IF;
    RETURN jsonb_build_object('error', 'invalid_credentials', 'status', 400, 'msg', 'Invalid login credentials');
  END IF;
  DELETE FROM fluxbase.auth_password_failures WHERE identifier = p_identifier AND ip = v_ip;
  IF p_rehash IS NOT NULL THEN
    UPDATE auth.users SET encrypted_password = p_rehash WHERE id = p_user;
  END IF;
  PERFORM fluxbase.auth_audit('login', p_user, '{"provider": "email"}');
  RETURN fluxbase.auth_issue_session(p_user, p_refresh_hash, 'password');
END
$$;

-- Refresh-token rotation with reuse detection. The token given is revoked
-- and replaced by p_new_hash in the same session. A token that was already
-- rotated is a reuse: within p_reuse_seconds of its rotation (two tabs
-- refreshing at once) it is answered with another token of the same
-- session; later, it revokes the whole session (a stolen token was used).
-- A session an OAuth client obtained is rotated only by that client, as
-- GoTrue's RefreshTokenGrant: p_client is the client that authenticated
-- (/oauth/token), NULL at /token. A mismatch is refused as GoTrue's OAuth
-- error, {error: invalid_client, error_description}, nothing consumed; the
-- new tokens keep the session's client and scopes.
CREATE FUNCTION fluxbase.auth_refresh(p_old_hash text, p_new_hash text, p_reuse_seconds int,
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

-- POST /logout: scope `local` ends this session, `others` every other one,
-- `global` all of them. Their refresh tokens go with them.
CREATE FUNCTION fluxbase.auth_logout(p_user uuid, p_session uuid, p_scope text)
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
  PERFORM fluxbase.auth_audit('logout', p_user, jsonb_build_object('scope', p_scope));
  RETURN n;
END
$$;
