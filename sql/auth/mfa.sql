-- MFA, TOTP, phone and WebAuthn factors (proxy/src/auth/mfa.rs). The proxy generates
-- and encrypts secrets (AES-256-GCM) and checks codes; these functions keep
-- factors, challenges and the per-user failure count atomic.

-- A new factor: TOTP (p_secret, sealed by the proxy) or phone (p_phone).
CREATE FUNCTION fluxbase.auth_mfa_enroll(p_user uuid, p_session uuid, p_aal text, p_friendly text, p_secret text,
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

-- A challenge for a factor. Phone factors: at most one per
-- p_interval_seconds (each one sends an SMS); `phone` is returned for the
-- proxy, which then stores the code's hash (auth_mfa_challenge_code).
CREATE FUNCTION fluxbase.auth_mfa_challenge(p_user uuid, p_session uuid, p_factor uuid,
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
      'msg', (SELECT CASE factor_type WHEN 'phone' THEN 'Invalid MFA Phone code entered'
                WHEN 'webauthn' THEN 'WebAuthn MFA response could not be verified' ELSE 'Invalid TOTP code entered' END
              FROM auth.mfa_factors WHERE id = p_factor));
  END IF;
  UPDATE auth.mfa_challenges SET verified_at = now() WHERE id = p_challenge AND verified_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mfa_challenge_expired' USING ERRCODE = 'FA422', HINT = 'MFA challenge was already verified';
  END IF;
  UPDATE auth.mfa_factors SET status = 'verified', updated_at = now() WHERE id = p_factor;
  UPDATE auth.sessions SET aal = 'aal2', factor_id = p_factor, updated_at = now() WHERE id = p_session;
  INSERT INTO auth.mfa_amr_claims (session_id, created_at, updated_at, authentication_method)
  VALUES (p_session, now(), now(), (SELECT CASE factor_type WHEN 'webauthn' THEN 'mfa/webauthn'
                                     WHEN 'phone' THEN 'mfa/phone' ELSE factor_type::text END
                                     FROM auth.mfa_factors WHERE id = p_factor))
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

CREATE FUNCTION fluxbase.auth_mfa_unenroll(p_user uuid, p_session uuid, p_aal text, p_factor uuid)
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

-- WebAuthn factors. A challenge auth_mfa_challenge made gets its ceremony
-- (p_session_data: the challenge the proxy drew, the relying party); the
-- answer is what the options need: the factor's status (unverified:
-- registration, verified: assertion), its credential, a name for the
-- authenticator and the credential ids (base64) not to register again.
CREATE FUNCTION fluxbase.auth_mfa_webauthn_begin(p_user uuid, p_challenge uuid, p_session_data jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  f auth.mfa_factors;
  u auth.users;
BEGIN
  SELECT fa.* INTO f FROM auth.mfa_challenges c JOIN auth.mfa_factors fa ON fa.id = c.factor_id
  WHERE c.id = p_challenge AND fa.user_id = p_user AND fa.factor_type = 'webauthn';
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mfa_factor_not_found' USING ERRCODE = 'FA404', HINT = 'Factor not found';
  END IF;
  UPDATE auth.mfa_challenges SET web_authn_session_data = p_session_data WHERE id = p_challenge;
  SELECT * INTO u FROM auth.users WHERE id = p_user;
  RETURN jsonb_build_object('status', f.status, 'credential', f.web_authn_credential,
    'name', coalesce(nullif(u.email, ''), nullif(u.phone, ''), u.id::text),
    'exclude', coalesce((SELECT jsonb_agg(o.web_authn_credential -> 'id') FROM auth.mfa_factors o
                         WHERE o.user_id = p_user AND o.web_authn_credential ? 'id'), '[]'::jsonb)
      || coalesce((SELECT jsonb_agg(to_jsonb(encode(w.credential_id, 'base64'))) FROM auth.webauthn_credentials w
                   WHERE w.user_id = p_user), '[]'::jsonb));
END
$$;

-- What checking a WebAuthn answer needs: the factor's status and
-- credential and the challenge's ceremony, while the challenge can still
-- be answered (as auth_mfa_secret for codes).
CREATE FUNCTION fluxbase.auth_mfa_webauthn_state(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid)
RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  f auth.mfa_factors;
  c auth.mfa_challenges;
BEGIN
  PERFORM fluxbase.auth_require_factor(p_user, p_session, p_factor);
  SELECT * INTO c FROM auth.mfa_challenges WHERE id = p_challenge AND factor_id = p_factor
    AND verified_at IS NULL AND created_at > now() - interval '5 minutes' AND web_authn_session_data IS NOT NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'mfa_challenge_expired' USING ERRCODE = 'FA422',
      HINT = 'MFA challenge has expired, verify against another challenge or create a new challenge';
  END IF;
  SELECT * INTO f FROM auth.mfa_factors WHERE id = p_factor;
  RETURN jsonb_build_object('factor_type', f.factor_type, 'status', f.status, 'credential', f.web_authn_credential,
    'session_data', c.web_authn_session_data);
END
$$;

-- The outcome of a WebAuthn answer: a new credential (registration) is
-- kept on the factor, an assertion's sign count must grow (when the
-- authenticator counts; else a cloned key: wrong), then as
-- auth_mfa_result (failures counted, or the session at aal2), all in one
-- transaction.
CREATE FUNCTION fluxbase.auth_mfa_webauthn_result(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid,
  p_ok boolean, p_credential jsonb, p_aaguid uuid, p_sign_count bigint, p_refresh_hash text,
  p_max_failures int, p_window_seconds int)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  f auth.mfa_factors;
  stored bigint;
BEGIN
  SELECT * INTO f FROM auth.mfa_factors WHERE id = p_factor AND user_id = p_user FOR UPDATE;
  IF p_ok AND p_credential IS NOT NULL THEN
    UPDATE auth.mfa_factors SET web_authn_credential = p_credential, web_authn_aaguid = p_aaguid, updated_at = now()
    WHERE id = p_factor;
  ELSIF p_ok AND p_sign_count IS NOT NULL THEN
    stored := coalesce((f.web_authn_credential #>> '{authenticator,signCount}')::bigint, 0);
    IF (p_sign_count <> 0 OR stored <> 0) AND p_sign_count <= stored THEN
      PERFORM fluxbase.auth_audit('webauthn_clone_suspected', p_user,
        jsonb_build_object('factor_id', p_factor, 'stored', stored, 'presented', p_sign_count));
      p_ok := false;
    ELSE
      UPDATE auth.mfa_factors SET web_authn_credential = jsonb_set(web_authn_credential, '{authenticator,signCount}',
        to_jsonb(p_sign_count)), updated_at = now()
      WHERE id = p_factor;
    END IF;
  END IF;
  RETURN fluxbase.auth_mfa_result(p_user, p_session, p_factor, p_challenge, p_ok, p_refresh_hash, NULL,
    p_max_failures, p_window_seconds);
END
$$;
