-- Passkeys (WebAuthn) (proxy/src/auth/passkey.rs).

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

-- The challenge of p_id, once, if it is of p_kind and for p_user: NULL when
-- there is none such (unknown, used, another ceremony's or user's), '' when
-- it is older than p_expiry_seconds.
CREATE FUNCTION fluxbase.auth_passkey_take_challenge(p_id uuid, p_kind text, p_user uuid, p_expiry_seconds int)
RETURNS text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  WITH taken AS (DELETE FROM fluxbase.auth_webauthn_challenges WHERE id = p_id RETURNING *)
  SELECT CASE WHEN created_at >= now() - make_interval(secs => p_expiry_seconds) THEN challenge ELSE '' END
  FROM taken
  WHERE kind = p_kind AND user_id IS NOT DISTINCT FROM p_user
$$;

CREATE FUNCTION fluxbase.auth_passkey_json(c auth.webauthn_credentials) RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$
  SELECT jsonb_strip_nulls(jsonb_build_object('id', c.id, 'friendly_name', c.friendly_name,
    'created_at', c.created_at, 'last_used_at', c.last_used_at))
$$;

CREATE FUNCTION fluxbase.auth_passkey_register(p_user uuid, p_credential_id bytea, p_public_key bytea,
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
CREATE FUNCTION fluxbase.auth_passkey_signin(p_passkey uuid, p_sign_count bigint, p_refresh_hash text)
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

-- A user's passkeys: list, rename (p_name), delete (p_delete).
CREATE FUNCTION fluxbase.auth_passkeys(p_user uuid, p_passkey uuid, p_name text, p_delete boolean)
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
