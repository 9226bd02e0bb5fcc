-- Generated from sql/upgrade/0.3.0--0.4.0.sql by scripts/pg.sh (upgrade_scripts_build): edit that file.
\echo Use "ALTER EXTENSION fluxbase UPDATE" to load this file. \quit
-- Fluxbase 0.3.0 → 0.4.0. Frozen at the 0.5.0 release: the functions it once
-- pulled in with `-- @include-functions` are expanded below as they were at
-- 0.4.0, so later changes to sql/*.sql cannot rewrite history. What changed:
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

-- ---- sql/auth/helpers.sql: fluxbase.auth_audit ----
CREATE OR REPLACE FUNCTION fluxbase.auth_audit(p_action text, p_user uuid, p_traits jsonb DEFAULT '{}')
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
    'request_id', current_setting('request.id', true), 'traits', p_traits), now(),
    coalesce(left(current_setting('request.ip', true), 64), ''));
END
$$;

-- ---- sql/auth/helpers.sql: fluxbase.auth_issue_session ----
CREATE OR REPLACE FUNCTION fluxbase.auth_issue_session(p_user uuid, p_refresh_hash text, p_method text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  sid uuid := gen_random_uuid();
  u auth.users;
  ip text := current_setting('request.ip', true);
BEGIN
  INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal, user_agent, ip)
  VALUES (sid, p_user, now(), now(), 'aal1', current_setting('request.user_agent', true),
    CASE WHEN ip ~ '^[0-9a-fA-F:.]+$' THEN ip::inet END);
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

-- ---- sql/auth/helpers.sql: fluxbase.auth_token_failed ----
CREATE OR REPLACE FUNCTION fluxbase.auth_token_failed(p_user uuid, p_types auth.one_time_token_type[])
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
    PERFORM fluxbase.auth_audit('token_revoked_after_failures', p_user,
      jsonb_build_object('types', p_types));
  END IF;
END
$$;
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

-- ---- sql/auth/session.sql: fluxbase.auth_signup ----
CREATE OR REPLACE FUNCTION fluxbase.auth_signup(p_email text, p_phone text, p_password_hash text, p_user_meta jsonb,
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

-- ---- sql/auth/session.sql: fluxbase.auth_obfuscated_user ----
CREATE OR REPLACE FUNCTION fluxbase.auth_obfuscated_user(p_email text, p_user_meta jsonb)
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

-- ---- sql/auth/session.sql: fluxbase.auth_password_lock_wait ----
CREATE OR REPLACE FUNCTION fluxbase.auth_password_lock_wait(p_identifier text, p_max_failures int, p_account_max_failures int,
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

-- ---- sql/auth/session.sql: fluxbase.auth_password_refuse_locked ----
CREATE OR REPLACE FUNCTION fluxbase.auth_password_refuse_locked(p_wait int)
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

-- ---- sql/auth/session.sql: fluxbase.auth_password_candidate ----
CREATE OR REPLACE FUNCTION fluxbase.auth_password_candidate(p_email text, p_phone text, p_max_failures int,
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

-- ---- sql/auth/session.sql: fluxbase.auth_password_outcome ----
CREATE OR REPLACE FUNCTION fluxbase.auth_password_outcome(p_identifier text, p_user uuid, p_ok boolean, p_max_failures int,
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

-- ---- sql/auth/session.sql: fluxbase.auth_refresh ----
CREATE OR REPLACE FUNCTION fluxbase.auth_refresh(p_old_hash text, p_new_hash text, p_reuse_seconds int)
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
  RETURN jsonb_build_object('session_id', s.id, 'aal', s.aal,
    'amr', coalesce((SELECT jsonb_agg(jsonb_build_object('method', c.authentication_method,
      'timestamp', extract(epoch FROM c.created_at)::bigint) ORDER BY c.created_at)
      FROM auth.mfa_amr_claims c WHERE c.session_id = s.id), '[]'::jsonb),
    'user', fluxbase.auth_user_json(u));
END
$$;

-- ---- sql/auth/session.sql: fluxbase.auth_logout ----
CREATE OR REPLACE FUNCTION fluxbase.auth_logout(p_user uuid, p_session uuid, p_scope text)
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

-- ---- sql/auth/user.sql: fluxbase.auth_update_user ----
CREATE OR REPLACE FUNCTION fluxbase.auth_update_user(p_user uuid, p_session uuid, p_email text, p_phone text, p_password_hash text,
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

-- ---- sql/auth/user.sql: fluxbase.auth_email_change_request ----
CREATE OR REPLACE FUNCTION fluxbase.auth_email_change_request(p_user uuid, p_session uuid, p_new_email text,
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

-- ---- sql/auth/user.sql: fluxbase.auth_phone_change_request ----
CREATE OR REPLACE FUNCTION fluxbase.auth_phone_change_request(p_user uuid, p_session uuid, p_new_phone text, p_link_hash text,
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

-- ---- sql/auth/user.sql: fluxbase.auth_reauthenticated ----
CREATE OR REPLACE FUNCTION fluxbase.auth_reauthenticated(p_user uuid, p_code_hash text, p_expiry_seconds int)
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

-- ---- sql/auth/otp.sql: fluxbase.auth_send_token ----
CREATE OR REPLACE FUNCTION fluxbase.auth_send_token(p_channel text, p_address text, p_kind text, p_link_hash text,
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
  RETURN 'sent';
END
$$;

-- ---- sql/auth/otp.sql: fluxbase.auth_verify_token ----
CREATE OR REPLACE FUNCTION fluxbase.auth_verify_token(p_channel text, p_kind text, p_link_hash text, p_code_hash text,
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

-- ---- sql/auth/otp.sql: fluxbase.auth_verify_email_change ----
CREATE OR REPLACE FUNCTION fluxbase.auth_verify_email_change(p_link_hash text, p_code_hash text, p_expiry_seconds int,
  p_refresh_hash text, p_address text DEFAULT NULL)
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
  PERFORM fluxbase.auth_audit('user_modified', u.id, jsonb_build_object('email', u.email_change));
  RETURN fluxbase.auth_issue_session(u.id, p_refresh_hash, 'email_change');
END
$$;

-- ---- sql/auth/otp.sql: fluxbase.auth_verify_phone_change ----
CREATE OR REPLACE FUNCTION fluxbase.auth_verify_phone_change(p_code_hash text, p_expiry_seconds int, p_refresh_hash text,
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

-- ---- sql/auth/mfa.sql: fluxbase.auth_mfa_enroll ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_enroll(p_user uuid, p_session uuid, p_aal text, p_friendly text, p_secret text,
  p_max_factors int, p_factor_type text DEFAULT 'totp', p_phone text DEFAULT NULL)
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
  PERFORM fluxbase.auth_audit('factor_in_progress', p_user, jsonb_build_object('factor_id', fid));
  RETURN fid;
END
$$;

-- ---- sql/auth/mfa.sql: fluxbase.auth_mfa_challenge ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_challenge(p_user uuid, p_session uuid, p_factor uuid,
  p_interval_seconds int DEFAULT 60)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  cid uuid := gen_random_uuid();
  f auth.mfa_factors;
  ip text := current_setting('request.ip', true);
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
  VALUES (cid, p_factor, now(), CASE WHEN ip ~ '^[0-9a-fA-F:.]+$' THEN ip::inet ELSE '0.0.0.0'::inet END);
  RETURN jsonb_strip_nulls(jsonb_build_object('id', cid, 'type', f.factor_type, 'phone', f.phone,
    'expires_at', extract(epoch FROM now() + interval '5 minutes')::bigint));
END
$$;

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
  PERFORM fluxbase.auth_audit('mfa_verified', p_user, jsonb_build_object('factor_id', p_factor));
  SELECT * INTO u FROM auth.users WHERE id = p_user;
  RETURN jsonb_build_object('session_id', p_session, 'aal', 'aal2',
    'amr', (SELECT jsonb_agg(jsonb_build_object('method', c.authentication_method,
      'timestamp', extract(epoch FROM c.updated_at)::bigint) ORDER BY c.updated_at DESC)
      FROM auth.mfa_amr_claims c WHERE c.session_id = p_session),
    'user', fluxbase.auth_user_json(u));
END
$$;

-- ---- sql/auth/mfa.sql: fluxbase.auth_mfa_unenroll ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_unenroll(p_user uuid, p_session uuid, p_aal text, p_factor uuid)
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
  PERFORM fluxbase.auth_audit('factor_deleted', p_user, jsonb_build_object('factor_id', p_factor));
  RETURN jsonb_build_object('id', p_factor);
END
$$;
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

-- ---- sql/auth/admin.sql: fluxbase.auth_admin_upsert ----
CREATE OR REPLACE FUNCTION fluxbase.auth_admin_upsert(p_user uuid, p jsonb) RETURNS jsonb
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

-- ---- sql/auth/admin.sql: fluxbase.auth_admin_delete ----
CREATE OR REPLACE FUNCTION fluxbase.auth_admin_delete(p_user uuid) RETURNS jsonb
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

-- ---- sql/auth/admin.sql: fluxbase.auth_admin_delete_factor ----
CREATE OR REPLACE FUNCTION fluxbase.auth_admin_delete_factor(p_user uuid, p_factor uuid) RETURNS jsonb
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
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA400', HINT = 'User is banned';
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

-- ---- sql/auth/oauth.sql: fluxbase.auth_pkce_exchange ----
CREATE OR REPLACE FUNCTION fluxbase.auth_pkce_exchange(p_code_hash text, p_verifier_s256 text, p_verifier text,
  p_expiry_seconds int, p_refresh_hash text)
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
    RAISE EXCEPTION 'flow_state_not_found' USING ERRCODE = 'FA404',
      HINT = 'invalid flow state, no valid flow state found';
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
    CASE f.authentication_method WHEN 'signup' THEN 'email/signup' ELSE coalesce(f.authentication_method, 'oauth') END);
  PERFORM fluxbase.auth_audit('token_exchanged', f.user_id, jsonb_build_object('provider', f.provider_type));
  RETURN issued || jsonb_strip_nulls(jsonb_build_object('provider_token', f.provider_access_token,
    'provider_refresh_token', f.provider_refresh_token));
END
$$;

-- ---- sql/auth/oauth.sql: fluxbase.auth_unlink_identity ----
CREATE OR REPLACE FUNCTION fluxbase.auth_unlink_identity(p_user uuid, p_identity uuid)
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
  PERFORM fluxbase.auth_audit('identity_unlinked', p_user,
    jsonb_build_object('provider', gone.provider, 'identity_id', gone.id));
  RETURN '{}'::jsonb;
END
$$;
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

-- ---- sql/auth/passkey.sql: fluxbase.auth_passkey_register ----
CREATE OR REPLACE FUNCTION fluxbase.auth_passkey_register(p_user uuid, p_credential_id bytea, p_public_key bytea,
  p_sign_count bigint, p_aaguid uuid, p_friendly_name text)
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
  PERFORM fluxbase.auth_audit('passkey_registered', p_user, jsonb_build_object('passkey_id', c.id));
  RETURN fluxbase.auth_passkey_json(c);
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
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA400', HINT = 'User is banned';
  END IF;
  PERFORM fluxbase.auth_audit('login', u.id, jsonb_build_object('provider', 'passkey'));
  RETURN fluxbase.auth_issue_session(u.id, p_refresh_hash, 'passkey');
END
$$;

-- ---- sql/auth/passkey.sql: fluxbase.auth_passkeys ----
CREATE OR REPLACE FUNCTION fluxbase.auth_passkeys(p_user uuid, p_passkey uuid, p_name text, p_delete boolean)
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
    PERFORM fluxbase.auth_audit('passkey_deleted', p_user, jsonb_build_object('passkey_id', c.id));
    RETURN 'null'::jsonb;
  END IF;
  RETURN fluxbase.auth_passkey_json(c);
END
$$;
REVOKE ALL ON FUNCTION fluxbase.auth_passkey_register(uuid, bytea, bytea, bigint, uuid, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_passkey_register(uuid, bytea, bytea, bigint, uuid, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_passkey_signin(uuid, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_passkey_signin(uuid, bigint, text) TO authenticator;
REVOKE ALL ON FUNCTION fluxbase.auth_passkeys(uuid, uuid, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_passkeys(uuid, uuid, text, boolean) TO authenticator;
