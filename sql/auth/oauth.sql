-- OAuth / OIDC and SAML sign-in, PKCE and identities (proxy/src/auth/oauth.rs,
-- sso.rs).

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
    -- 403, as GoTrue's createAccountFromExternalIdentity.
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA403', HINT = 'User is banned';
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

-- grant_type=pkce: the code of a finished sign-in and the verifier of its
-- challenge become a session. A code is taken by its first attempt, right
-- or wrong (returned, not raised: the deletion must commit).
CREATE FUNCTION fluxbase.auth_pkce_exchange(p_code_hash text, p_verifier_s256 text, p_verifier text,
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

-- unlinkIdentity(): a user keeps at least one identity.
CREATE FUNCTION fluxbase.auth_unlink_identity(p_user uuid, p_identity uuid)
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
