-- Generated from sql/upgrade/0.2.0--0.3.0.sql by scripts/pg.sh (upgrade_scripts_build): edit that file.
\echo Use "ALTER EXTENSION fluxbase UPDATE" to load this file. \quit
-- Fluxbase 0.2.0 → 0.3.0. Frozen at the 0.4.0 release: the functions it once
-- pulled in with `-- @include-functions` are expanded below as they were at
-- 0.3.0, so later changes to sql/*.sql cannot rewrite history. What changed:
--   * the auth helpers every sign-in and refresh calls are PL/pgSQL instead
--     of SQL, so their plans are kept for the session instead of being
--     parsed and planned on every call (same results, same privileges);
--   * auth_mfa_result takes the failure limit and checks it under a per-user
--     lock (concurrent wrong codes could each pass the proxy's earlier check);
--     auth_mfa_secret no longer counts failures for that earlier check.


-- ---- sql/auth_functions.sql: fluxbase.auth_user_json ----
CREATE OR REPLACE FUNCTION fluxbase.auth_user_json(u auth.users) RETURNS jsonb
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

-- ---- sql/auth_functions.sql: fluxbase.auth_audit ----
CREATE OR REPLACE FUNCTION fluxbase.auth_audit(p_action text, p_user uuid, p_ip text, p_request_id text, p_traits jsonb DEFAULT '{}')
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

-- ---- sql/auth_functions.sql: fluxbase.auth_password_candidate ----
CREATE OR REPLACE FUNCTION fluxbase.auth_password_candidate(p_email text, p_phone text)
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

DROP FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, text, text, bigint);

-- ---- sql/auth_functions.sql: fluxbase.auth_mfa_result ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_result(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid, p_ok boolean,
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
REVOKE ALL ON FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, text, text, bigint, int, int) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_mfa_result(uuid, uuid, uuid, uuid, boolean, text, text, text, bigint, int, int) TO authenticator;

DROP FUNCTION fluxbase.auth_mfa_secret(uuid, uuid, uuid, uuid, int);

-- ---- sql/auth_functions.sql: fluxbase.auth_mfa_secret ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_secret(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid)
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
REVOKE ALL ON FUNCTION fluxbase.auth_mfa_secret(uuid, uuid, uuid, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.auth_mfa_secret(uuid, uuid, uuid, uuid) TO authenticator;
