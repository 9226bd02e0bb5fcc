-- Generated from sql/upgrade/0.2.0--0.3.0.sql by scripts/pg.sh (upgrade_scripts_build): edit that file.
\echo Use "ALTER EXTENSION fluxbase UPDATE" to load this file. \quit
-- Fluxbase 0.2.0 → 0.3.0. Source of extension/sql/fluxbase--0.2.0--0.3.0.sql
-- (scripts/pg.sh, upgrade_scripts_build). What changed:
--   * the auth helpers every sign-in and refresh calls are PL/pgSQL instead
--     of SQL, so their plans are kept for the session instead of being
--     parsed and planned on every call (same results, same privileges).


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
