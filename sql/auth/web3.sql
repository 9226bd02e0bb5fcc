-- Web3 sign-in (proxy/src/auth/web3.rs): a wallet's signed message names
-- its user, one user per wallet address.

-- Signed messages already used, kept for as long as they could still be
-- accepted (their Issued At plus the maximum validity, or their Expiration
-- Time): a message seen on the way signs in nobody else.
CREATE TABLE fluxbase.auth_web3_messages (
  message_hash text PRIMARY KEY,
  expires_at timestamptz NOT NULL
);
CREATE INDEX auth_web3_messages_expires_at ON fluxbase.auth_web3_messages (expires_at);

-- grant_type=web3 once the proxy has verified the signature and checked
-- the message: p_provider_id (`web3:<chain>:<address>`) is the identity of
-- provider `web3`, with p_identity as GoTrue stores it (`sub`,
-- `custom_claims` {address, chain, network, domain, statement}). Its user,
-- or a new one without e-mail (when p_allow_signup), gets a session (`amr`
-- method `web3`). The message (SHA-256 in p_message_hash) is taken for
-- p_keep_seconds; a second use is refused as GoTrue's OAuth errors are
-- written, {error, error_description}.
CREATE FUNCTION fluxbase.auth_web3_signin(p_provider_id text, p_identity jsonb, p_message_hash text,
  p_keep_seconds int, p_allow_signup boolean, p_refresh_hash text, p_traits jsonb)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  ident auth.identities;
  uid uuid;
  u auth.users;
BEGIN
  DELETE FROM fluxbase.auth_web3_messages WHERE message_hash = ANY (ARRAY(
    SELECT m.message_hash FROM fluxbase.auth_web3_messages m WHERE m.expires_at < now()
    LIMIT 100 FOR UPDATE SKIP LOCKED));
  INSERT INTO fluxbase.auth_web3_messages (message_hash, expires_at)
  VALUES (p_message_hash, now() + make_interval(secs => p_keep_seconds))
  ON CONFLICT (message_hash) DO NOTHING;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('error', 'invalid_grant',
      'error_description', 'Signed message has already been used');
  END IF;
  SELECT * INTO ident FROM auth.identities i WHERE i.provider = 'web3' AND i.provider_id = p_provider_id FOR UPDATE;
  IF FOUND THEN
    -- As GoTrue's AccountExists: the identity takes this message's data and
    -- the user's metadata is merged with it.
    uid := ident.user_id;
    UPDATE auth.identities SET identity_data = p_identity, updated_at = now(), last_sign_in_at = now()
    WHERE id = ident.id;
    UPDATE auth.users SET raw_user_meta_data = coalesce(raw_user_meta_data, '{}'::jsonb) || p_identity,
      updated_at = now()
    WHERE id = uid;
  ELSE
    IF NOT p_allow_signup THEN
      RAISE EXCEPTION 'signup_disabled' USING ERRCODE = 'FA422', HINT = 'Signups not allowed for this instance';
    END IF;
    uid := gen_random_uuid();
    INSERT INTO auth.users (id, aud, role, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
      is_anonymous, is_super_admin, is_sso_user)
    VALUES (uid, 'authenticated', 'authenticated', '{"provider": "web3", "providers": ["web3"]}', p_identity,
      now(), now(), false, false, false);
    INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at, last_sign_in_at)
    VALUES (p_provider_id, uid, p_identity, 'web3', now(), now(), now());
    PERFORM fluxbase.auth_audit('user_signedup', uid, jsonb_build_object('provider', 'web3'));
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = uid;
  IF u.deleted_at IS NOT NULL THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  IF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
    -- 403, as GoTrue's createAccountFromExternalIdentity.
    RAISE EXCEPTION 'user_banned' USING ERRCODE = 'FA403', HINT = 'User is banned';
  END IF;
  PERFORM fluxbase.auth_audit('login', uid, p_traits);
  RETURN fluxbase.auth_issue_session(uid, p_refresh_hash, 'web3');
END
$$;
