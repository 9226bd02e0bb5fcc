-- The auth service's SQL: operations that must be atomic, one function
-- each, called by the proxy (which hashes passwords and signs tokens), one
-- file per area of proxy/src/auth/ (session, user, otp, mfa, admin, oauth,
-- passkey), this file's helpers first and grants.sql last. SECURITY DEFINER
-- and granted to `authenticator` only: the proxy's role needs no privileges
-- on the auth tables themselves.
--
-- Request context. The proxy sets it once per statement, as
-- transaction-local settings, before the call: `request.ip` (the client's
-- address), `request.user_agent` and `request.id` (the proxy's request id).
-- The audit log and new sessions read them; no function takes them as
-- arguments.
--
-- Refusals. A refusal a client should see is raised with SQLSTATE `FAnnn`
-- (nnn: the HTTP status), Supabase Auth's `error_code` as the message and
-- the client's message as the hint; the proxy maps it once (db_error).
-- Only a refusal whose writes must commit (a raise would roll them back) is
-- returned instead, always as `{error, status, msg}` (the proxy's refusal()):
--   * auth_refresh, refresh_token_already_used: a reused token revokes its
--     session (and says so in the audit log);
--   * auth_password_outcome, invalid_credentials: the wrong password counts
--     towards the lockout (per identifier and client address, and per
--     identifier), known identifier or not;
--   * auth_mfa_result, mfa_verification_failed: the wrong (or replayed) code
--     counts towards the MFA failure limit;
--   * auth_verify_token, auth_verify_email_change, auth_verify_phone_change,
--     otp_expired: the expired token is deleted, or the wrong code counted
--     (the fifth deletes the token); and, once a token is taken, its other
--     refusals (otp_expired with no change pending, email_exists,
--     phone_exists): a token works once;
--   * auth_pkce_exchange, flow_state_expired and bad_code_verifier: a code is
--     taken by its first attempt, right or wrong;
--   * auth_passkey_signin, webauthn_verification_failed: a suspected cloned
--     passkey is recorded in the audit log.
-- The token endpoints' OAuth refusals (RFC 6749, as GoTrue's OAuthError)
-- are returned as {error, error_description} and commit nothing:
-- auth_oauth_code_exchange, auth_refresh's invalid_client (an OAuth
-- client's session and the client that asks do not match) and
-- auth_web3_signin's message used twice.
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

-- An audit log entry, with the request's id and client address from the
-- settings the proxy sets (request.id, request.ip).
CREATE FUNCTION fluxbase.auth_audit(p_action text, p_user uuid, p_traits jsonb DEFAULT '{}')
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

-- A new session with its first refresh token; returns what the access
-- token needs. The session keeps the request's user agent and client
-- address (settings request.user_agent, request.ip).
CREATE FUNCTION fluxbase.auth_issue_session(p_user uuid, p_refresh_hash text, p_method text)
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
CREATE FUNCTION fluxbase.auth_token_failed(p_user uuid, p_types auth.one_time_token_type[])
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
