-- The OAuth 2.1 server: Supabase Auth as the identity provider of
-- third-party apps (proxy/src/auth/oauth_server.rs). Tables and columns
-- carry GoTrue's names (auth.oauth_clients, auth.oauth_authorizations,
-- auth.oauth_consents, auth.sessions.oauth_client_id and .scopes), so a
-- database that moved over from Supabase keeps its clients; only what is
-- missing is added. Secrets are stored as hashes: a client secret as
-- GoTrue stores it (SHA-256, base64url without padding, so moved-over
-- clients keep working) and an authorization code as its SHA-256 (hex).

DO $types$
BEGIN
  IF to_regtype('auth.oauth_registration_type') IS NULL THEN
    CREATE TYPE auth.oauth_registration_type AS ENUM ('dynamic', 'manual');
  END IF;
  IF to_regtype('auth.oauth_client_type') IS NULL THEN
    CREATE TYPE auth.oauth_client_type AS ENUM ('public', 'confidential');
  END IF;
  IF to_regtype('auth.oauth_response_type') IS NULL THEN
    CREATE TYPE auth.oauth_response_type AS ENUM ('code');
  END IF;
  IF to_regtype('auth.oauth_authorization_status') IS NULL THEN
    CREATE TYPE auth.oauth_authorization_status AS ENUM ('pending', 'approved', 'denied', 'expired');
  END IF;
END
$types$;

-- redirect_uris and grant_types are comma-separated, as GoTrue stores them.
CREATE TABLE IF NOT EXISTS auth.oauth_clients (
  id uuid NOT NULL PRIMARY KEY,
  client_secret_hash text,
  registration_type auth.oauth_registration_type NOT NULL,
  redirect_uris text NOT NULL,
  grant_types text NOT NULL,
  client_name text CONSTRAINT oauth_clients_client_name_length CHECK (char_length(client_name) <= 1024),
  client_uri text CONSTRAINT oauth_clients_client_uri_length CHECK (char_length(client_uri) <= 2048),
  logo_uri text CONSTRAINT oauth_clients_logo_uri_length CHECK (char_length(logo_uri) <= 2048),
  created_at timestamptz NOT NULL DEFAULT now(),
  updated_at timestamptz NOT NULL DEFAULT now(),
  deleted_at timestamptz,
  client_type auth.oauth_client_type NOT NULL DEFAULT 'confidential',
  token_endpoint_auth_method text NOT NULL CONSTRAINT oauth_clients_token_endpoint_auth_method_check
    CHECK (token_endpoint_auth_method IN ('client_secret_basic', 'client_secret_post', 'none'))
);
CREATE INDEX IF NOT EXISTS oauth_clients_deleted_at_idx ON auth.oauth_clients (deleted_at);

-- One authorization request, from /oauth/authorize to the token exchange.
-- `authorization_code` holds the SHA-256 (hex) of the code, never the code.
CREATE TABLE IF NOT EXISTS auth.oauth_authorizations (
  id uuid NOT NULL PRIMARY KEY,
  authorization_id text NOT NULL UNIQUE,
  client_id uuid NOT NULL REFERENCES auth.oauth_clients (id) ON DELETE CASCADE,
  user_id uuid REFERENCES auth.users (id) ON DELETE CASCADE,
  redirect_uri text NOT NULL CONSTRAINT oauth_authorizations_redirect_uri_length CHECK (char_length(redirect_uri) <= 2048),
  scope text NOT NULL CONSTRAINT oauth_authorizations_scope_length CHECK (char_length(scope) <= 4096),
  state text CONSTRAINT oauth_authorizations_state_length CHECK (char_length(state) <= 4096),
  resource text CONSTRAINT oauth_authorizations_resource_length CHECK (char_length(resource) <= 2048),
  code_challenge text CONSTRAINT oauth_authorizations_code_challenge_length CHECK (char_length(code_challenge) <= 128),
  code_challenge_method auth.code_challenge_method,
  response_type auth.oauth_response_type NOT NULL DEFAULT 'code',
  status auth.oauth_authorization_status NOT NULL DEFAULT 'pending',
  authorization_code text UNIQUE
    CONSTRAINT oauth_authorizations_authorization_code_length CHECK (char_length(authorization_code) <= 255),
  created_at timestamptz NOT NULL DEFAULT now(),
  expires_at timestamptz NOT NULL DEFAULT now() + interval '3 minutes',
  approved_at timestamptz,
  nonce text CONSTRAINT oauth_authorizations_nonce_length CHECK (char_length(nonce) <= 255),
  CONSTRAINT oauth_authorizations_expires_at_future CHECK (expires_at > created_at)
);
CREATE INDEX IF NOT EXISTS oauth_authorizations_expires_at_idx ON auth.oauth_authorizations (expires_at);

-- What a user let a client do (space-separated scopes); a later request
-- for no more than these is approved without asking again.
CREATE TABLE IF NOT EXISTS auth.oauth_consents (
  id uuid NOT NULL PRIMARY KEY,
  user_id uuid NOT NULL REFERENCES auth.users (id) ON DELETE CASCADE,
  client_id uuid NOT NULL REFERENCES auth.oauth_clients (id) ON DELETE CASCADE,
  scopes text NOT NULL CONSTRAINT oauth_consents_scopes_length CHECK (char_length(scopes) <= 2048)
    CONSTRAINT oauth_consents_scopes_not_empty CHECK (char_length(trim(scopes)) > 0),
  granted_at timestamptz NOT NULL DEFAULT now(),
  revoked_at timestamptz,
  CONSTRAINT oauth_consents_user_client_unique UNIQUE (user_id, client_id),
  CONSTRAINT oauth_consents_revoked_after_granted CHECK (revoked_at IS NULL OR revoked_at >= granted_at)
);

-- A session an OAuth client obtained: its tokens carry `client_id`.
ALTER TABLE auth.sessions ADD COLUMN IF NOT EXISTS oauth_client_id uuid;
ALTER TABLE auth.sessions ADD COLUMN IF NOT EXISTS scopes text;

DO $dump$
DECLARE
  t text;
BEGIN
  FOREACH t IN ARRAY ARRAY['auth.oauth_clients', 'auth.oauth_authorizations', 'auth.oauth_consents'] LOOP
    IF EXISTS (SELECT 1 FROM pg_depend d WHERE d.objid = t::regclass AND d.deptype = 'e') THEN
      PERFORM pg_catalog.pg_extension_config_dump(t, '');
    END IF;
  END LOOP;
END
$dump$;

-- A client as GoTrue answers it: empty fields left out, the secret never.
CREATE FUNCTION fluxbase.auth_oauth_client_json(c auth.oauth_clients) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT jsonb_strip_nulls(jsonb_build_object(
    'client_id', c.id,
    'client_type', c.client_type,
    'redirect_uris', CASE WHEN c.redirect_uris <> '' THEN to_jsonb(string_to_array(c.redirect_uris, ',')) END,
    'token_endpoint_auth_method', c.token_endpoint_auth_method,
    'grant_types', CASE WHEN c.grant_types <> '' THEN to_jsonb(string_to_array(c.grant_types, ',')) END,
    'response_types', jsonb_build_array('code'),
    'client_name', nullif(c.client_name, ''),
    'client_uri', nullif(c.client_uri, ''),
    'logo_uri', nullif(c.logo_uri, ''),
    'registration_type', c.registration_type,
    'created_at', c.created_at,
    'updated_at', c.updated_at))
$$;

-- A client that is not deleted, or 404 oauth_client_not_found.
CREATE FUNCTION fluxbase.auth_oauth_client_row(p_client uuid) RETURNS auth.oauth_clients
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.oauth_clients;
BEGIN
  SELECT * INTO c FROM auth.oauth_clients WHERE id = p_client AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oauth_client_not_found' USING ERRCODE = 'FA404', HINT = 'OAuth client not found';
  END IF;
  RETURN c;
END
$$;

-- Registration (admin: manual, or dynamic), validated by the proxy. p:
-- {registration_type, client_type, token_endpoint_auth_method, secret_hash,
-- redirect_uris: [], grant_types: [], client_name, client_uri, logo_uri}.
CREATE FUNCTION fluxbase.auth_oauth_client_create(p jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.oauth_clients;
BEGIN
  INSERT INTO auth.oauth_clients (id, client_secret_hash, registration_type, redirect_uris, grant_types, client_name,
    client_uri, logo_uri, client_type, token_endpoint_auth_method)
  VALUES (gen_random_uuid(), p ->> 'secret_hash', (p ->> 'registration_type')::auth.oauth_registration_type,
    array_to_string(ARRAY(SELECT jsonb_array_elements_text(p -> 'redirect_uris')), ','),
    array_to_string(ARRAY(SELECT jsonb_array_elements_text(p -> 'grant_types')), ','),
    p ->> 'client_name', p ->> 'client_uri', p ->> 'logo_uri',
    (p ->> 'client_type')::auth.oauth_client_type, p ->> 'token_endpoint_auth_method')
  RETURNING * INTO c;
  PERFORM fluxbase.auth_audit('oauth_client_registered', NULL,
    jsonb_build_object('client_id', c.id, 'registration_type', c.registration_type));
  RETURN fluxbase.auth_oauth_client_json(c);
END
$$;

CREATE FUNCTION fluxbase.auth_oauth_client_get(p_client uuid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT fluxbase.auth_oauth_client_json(fluxbase.auth_oauth_client_row(p_client))
$$;

-- The client of a token request, for its authentication by the proxy:
-- {client_type, token_endpoint_auth_method, secret_hash, grant_types};
-- unknown or deleted: 400 invalid_credentials, as GoTrue.
CREATE FUNCTION fluxbase.auth_oauth_client_credentials(p_client uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.oauth_clients;
BEGIN
  SELECT * INTO c FROM auth.oauth_clients WHERE id = p_client AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'invalid_credentials' USING ERRCODE = 'FA400', HINT = 'Invalid client credentials';
  END IF;
  RETURN jsonb_build_object('client_type', c.client_type, 'token_endpoint_auth_method', c.token_endpoint_auth_method,
    'secret_hash', c.client_secret_hash, 'grant_types', to_jsonb(string_to_array(c.grant_types, ',')));
END
$$;

-- Newest first, as GoTrue lists them.
CREATE FUNCTION fluxbase.auth_oauth_client_list(p_page int, p_per_page int) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT jsonb_build_object(
    'clients', coalesce((SELECT jsonb_agg(fluxbase.auth_oauth_client_json(c) ORDER BY c.created_at DESC, c.id)
      FROM (SELECT * FROM auth.oauth_clients WHERE deleted_at IS NULL ORDER BY created_at DESC, id
            LIMIT p_per_page OFFSET (p_page - 1) * p_per_page) c), '[]'::jsonb),
    'total', (SELECT count(*) FROM auth.oauth_clients WHERE deleted_at IS NULL))
$$;

-- p: the fields to change (redirect_uris, grant_types, client_name,
-- client_uri, logo_uri, token_endpoint_auth_method), validated by the proxy.
CREATE FUNCTION fluxbase.auth_oauth_client_update(p_client uuid, p jsonb) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.oauth_clients := fluxbase.auth_oauth_client_row(p_client);
BEGIN
  IF p ? 'token_endpoint_auth_method' AND NOT (CASE c.client_type
      WHEN 'public' THEN p ->> 'token_endpoint_auth_method' = 'none'
      ELSE p ->> 'token_endpoint_auth_method' IN ('client_secret_basic', 'client_secret_post') END) THEN
    RAISE EXCEPTION 'validation_failed' USING ERRCODE = 'FA400',
      HINT = format('token_endpoint_auth_method ''%s'' is not valid for client_type ''%s''; valid methods: [%s]',
        p ->> 'token_endpoint_auth_method', c.client_type,
        CASE c.client_type WHEN 'public' THEN 'none' ELSE 'client_secret_basic client_secret_post' END);
  END IF;
  UPDATE auth.oauth_clients SET
    redirect_uris = CASE WHEN p ? 'redirect_uris'
      THEN array_to_string(ARRAY(SELECT jsonb_array_elements_text(p -> 'redirect_uris')), ',') ELSE redirect_uris END,
    grant_types = CASE WHEN p ? 'grant_types'
      THEN array_to_string(ARRAY(SELECT jsonb_array_elements_text(p -> 'grant_types')), ',') ELSE grant_types END,
    client_name = CASE WHEN p ? 'client_name' THEN p ->> 'client_name' ELSE client_name END,
    client_uri = CASE WHEN p ? 'client_uri' THEN p ->> 'client_uri' ELSE client_uri END,
    logo_uri = CASE WHEN p ? 'logo_uri' THEN p ->> 'logo_uri' ELSE logo_uri END,
    token_endpoint_auth_method = coalesce(p ->> 'token_endpoint_auth_method', token_endpoint_auth_method),
    updated_at = now()
  WHERE id = c.id
  RETURNING * INTO c;
  RETURN fluxbase.auth_oauth_client_json(c);
END
$$;

-- Soft delete, as GoTrue: the row stays with deleted_at; its pending
-- authorizations and its sessions end.
CREATE FUNCTION fluxbase.auth_oauth_client_delete(p_client uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.oauth_clients := fluxbase.auth_oauth_client_row(p_client);
BEGIN
  UPDATE auth.oauth_clients SET deleted_at = now(), updated_at = now() WHERE id = c.id;
  DELETE FROM auth.oauth_authorizations WHERE client_id = c.id;
  DELETE FROM auth.sessions WHERE oauth_client_id = c.id;
  PERFORM fluxbase.auth_audit('oauth_client_deleted', NULL, jsonb_build_object('client_id', c.id));
END
$$;

-- A new secret for a confidential client (its hash replaces the old one).
CREATE FUNCTION fluxbase.auth_oauth_client_secret(p_client uuid, p_secret_hash text) RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  c auth.oauth_clients := fluxbase.auth_oauth_client_row(p_client);
BEGIN
  IF c.client_type <> 'confidential' THEN
    RAISE EXCEPTION 'validation_failed' USING ERRCODE = 'FA400', HINT = 'Cannot regenerate secret for public client';
  END IF;
  UPDATE auth.oauth_clients SET client_secret_hash = p_secret_hash, updated_at = now() WHERE id = c.id
  RETURNING * INTO c;
  PERFORM fluxbase.auth_audit('oauth_client_secret_regenerated', NULL, jsonb_build_object('client_id', c.id));
  RETURN fluxbase.auth_oauth_client_json(c);
END
$$;

-- /oauth/authorize, after the proxy checked the client, its redirect_uri
-- and the parameters: the request waits for the user's consent. Expired
-- requests of any client go on the way.
CREATE FUNCTION fluxbase.auth_oauth_authorize(p_client uuid, p_authorization_id text, p_redirect_uri text,
  p_scope text, p_state text, p_resource text, p_code_challenge text, p_code_challenge_method text, p_nonce text,
  p_ttl_seconds int)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  DELETE FROM auth.oauth_authorizations WHERE ctid = ANY (ARRAY(
    SELECT a.ctid FROM auth.oauth_authorizations a WHERE a.expires_at < now() LIMIT 100 FOR UPDATE SKIP LOCKED));
  INSERT INTO auth.oauth_authorizations (id, authorization_id, client_id, redirect_uri, scope, state, resource,
    code_challenge, code_challenge_method, nonce, created_at, expires_at)
  VALUES (gen_random_uuid(), p_authorization_id, p_client, p_redirect_uri, p_scope, nullif(p_state, ''),
    nullif(p_resource, ''), p_code_challenge, lower(p_code_challenge_method)::auth.code_challenge_method,
    nullif(p_nonce, ''), now(), now() + make_interval(secs => p_ttl_seconds));
$$;

-- A pending, unexpired authorization request (404 otherwise, as GoTrue:
-- an expired or unknown one is not told apart; 400 when already decided).
CREATE FUNCTION fluxbase.auth_oauth_pending(p_authorization_id text) RETURNS auth.oauth_authorizations
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  a auth.oauth_authorizations;
BEGIN
  SELECT * INTO a FROM auth.oauth_authorizations WHERE authorization_id = p_authorization_id FOR UPDATE;
  IF NOT FOUND OR a.expires_at <= now() THEN
    RAISE EXCEPTION 'oauth_authorization_not_found' USING ERRCODE = 'FA404', HINT = 'authorization not found';
  END IF;
  IF a.status <> 'pending' THEN
    RAISE EXCEPTION 'validation_failed' USING ERRCODE = 'FA400', HINT = 'authorization request cannot be processed';
  END IF;
  RETURN a;
END
$$;

-- The approval of a request: its code (p_code_hash) is issued and the
-- consent remembered. Returns where the browser goes.
CREATE FUNCTION fluxbase.auth_oauth_approve(a auth.oauth_authorizations, p_code_hash text, p_remember boolean)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  UPDATE auth.oauth_authorizations SET status = 'approved', authorization_code = p_code_hash, approved_at = now()
  WHERE id = a.id;
  IF p_remember THEN
    INSERT INTO auth.oauth_consents (id, user_id, client_id, scopes, granted_at)
    VALUES (gen_random_uuid(), a.user_id, a.client_id, a.scope, now())
    ON CONFLICT (user_id, client_id) DO UPDATE SET
      scopes = (SELECT string_agg(DISTINCT s, ' ' ORDER BY s) FROM unnest(
        string_to_array(auth.oauth_consents.scopes, ' ') || string_to_array(excluded.scopes, ' ')) s WHERE s <> ''),
      granted_at = CASE WHEN auth.oauth_consents.revoked_at IS NULL THEN auth.oauth_consents.granted_at ELSE now() END,
      revoked_at = NULL;
  END IF;
  PERFORM fluxbase.auth_audit('oauth_authorization_approved', a.user_id, jsonb_build_object('client_id', a.client_id));
  RETURN jsonb_build_object('approved', true, 'redirect_uri', a.redirect_uri, 'state', a.state);
END
$$;

-- GET /oauth/authorizations/{id} by the signed-in user of the consent page:
-- the request becomes theirs; already consented scopes are approved at
-- once ({approved, redirect_uri, state}: the proxy adds the code), else
-- the details the page shows.
CREATE FUNCTION fluxbase.auth_oauth_authorization_details(p_authorization_id text, p_user uuid, p_code_hash text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  a auth.oauth_authorizations := fluxbase.auth_oauth_pending(p_authorization_id);
  c auth.oauth_clients;
  u auth.users;
BEGIN
  IF a.user_id IS NULL THEN
    UPDATE auth.oauth_authorizations SET user_id = p_user WHERE id = a.id;
    a.user_id := p_user;
    IF EXISTS (SELECT 1 FROM auth.oauth_consents o WHERE o.user_id = p_user AND o.client_id = a.client_id
        AND o.revoked_at IS NULL
        AND string_to_array(a.scope, ' ') <@ string_to_array(o.scopes, ' ')) THEN
      RETURN fluxbase.auth_oauth_approve(a, p_code_hash, false);
    END IF;
  ELSIF a.user_id <> p_user THEN
    RAISE EXCEPTION 'oauth_authorization_not_found' USING ERRCODE = 'FA404', HINT = 'authorization not found';
  END IF;
  SELECT * INTO c FROM auth.oauth_clients WHERE id = a.client_id;
  SELECT * INTO u FROM auth.users WHERE id = p_user;
  RETURN jsonb_build_object(
    'authorization_id', a.authorization_id,
    'redirect_uri', a.redirect_uri,
    'client', jsonb_strip_nulls(jsonb_build_object('id', c.id, 'name', nullif(c.client_name, ''),
      'uri', nullif(c.client_uri, ''), 'logo_uri', nullif(c.logo_uri, ''))),
    'user', jsonb_strip_nulls(jsonb_build_object('id', u.id, 'email', nullif(u.email, ''))),
    'scope', a.scope);
END
$$;

-- POST /oauth/authorizations/{id}/consent: approve (the code is issued,
-- the consent remembered) or deny. Only the user the request was shown to.
CREATE FUNCTION fluxbase.auth_oauth_consent(p_authorization_id text, p_user uuid, p_approve boolean,
  p_code_hash text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  a auth.oauth_authorizations := fluxbase.auth_oauth_pending(p_authorization_id);
BEGIN
  IF a.user_id IS DISTINCT FROM p_user THEN
    RAISE EXCEPTION 'oauth_authorization_not_found' USING ERRCODE = 'FA404', HINT = 'authorization not found';
  END IF;
  IF p_approve THEN
    RETURN fluxbase.auth_oauth_approve(a, p_code_hash, true);
  END IF;
  UPDATE auth.oauth_authorizations SET status = 'denied' WHERE id = a.id;
  PERFORM fluxbase.auth_audit('oauth_authorization_denied', p_user, jsonb_build_object('client_id', a.client_id));
  RETURN jsonb_build_object('approved', false, 'redirect_uri', a.redirect_uri, 'state', a.state);
END
$$;

-- grant_type=authorization_code for an authenticated client: the approved
-- code (SHA-256 in p_code_hash), the verifier of its PKCE challenge, the
-- redirect_uri and resource when sent, become a session of that client.
-- Refusals are GoTrue's OAuth errors: {error, error_description}. A code
-- works once.
CREATE FUNCTION fluxbase.auth_oauth_code_exchange(p_client uuid, p_code_hash text, p_redirect_uri text,
  p_resource text, p_verifier text, p_verifier_s256 text, p_refresh_hash text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  a auth.oauth_authorizations;
  u auth.users;
  issued jsonb;
  refused text;
BEGIN
  SELECT * INTO a FROM auth.oauth_authorizations
  WHERE authorization_code = p_code_hash AND status = 'approved' FOR UPDATE;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('error', 'invalid_grant', 'error_description', 'Invalid authorization code');
  END IF;
  refused := CASE
    WHEN a.expires_at <= now() THEN 'Authorization code has expired'
    WHEN a.client_id <> p_client THEN 'Authorization code was not issued for this client'
    WHEN coalesce(p_resource, '') <> '' AND p_resource IS DISTINCT FROM a.resource
      THEN 'Authorization code resource does not match the resource parameter'
    WHEN coalesce(p_redirect_uri, '') <> '' AND p_redirect_uri <> a.redirect_uri THEN 'Invalid redirect_uri'
    WHEN a.code_challenge IS NOT NULL AND coalesce(p_verifier, '') = ''
      THEN 'PKCE verification failed: code_verifier is required'
    WHEN a.code_challenge IS NOT NULL AND a.code_challenge IS DISTINCT FROM
      (CASE a.code_challenge_method WHEN 's256' THEN p_verifier_s256 ELSE p_verifier END)
      THEN 'PKCE verification failed: code challenge does not match previously saved code verifier'
    WHEN a.user_id IS NULL THEN 'Authorization code has no associated user'
  END;
  IF refused IS NOT NULL THEN
    RETURN jsonb_build_object('error', 'invalid_grant', 'error_description', refused);
  END IF;
  SELECT * INTO u FROM auth.users WHERE id = a.user_id AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RETURN jsonb_build_object('error', 'invalid_grant', 'error_description', 'User not found for authorization code');
  END IF;
  IF u.banned_until IS NOT NULL AND u.banned_until > now() THEN
    RETURN jsonb_build_object('error', 'access_denied', 'error_description', 'User is banned');
  END IF;
  DELETE FROM auth.oauth_authorizations WHERE id = a.id;
  issued := fluxbase.auth_issue_session(u.id, p_refresh_hash, 'oauth_provider/authorization_code');
  UPDATE auth.sessions SET oauth_client_id = a.client_id, scopes = a.scope WHERE id = (issued ->> 'session_id')::uuid;
  PERFORM fluxbase.auth_audit('login', u.id,
    jsonb_build_object('provider_type', 'oauth_provider_authorization_code', 'client_id', a.client_id));
  RETURN issued || jsonb_strip_nulls(jsonb_build_object('client_id', a.client_id, 'scope', a.scope,
    'nonce', a.nonce, 'auth_time', extract(epoch FROM u.last_sign_in_at)::bigint));
END
$$;

-- grant_type=refresh_token at /oauth/token: auth_refresh with the client
-- that authenticated, so only the client the session was issued to may
-- rotate its tokens (GoTrue's invalid_client refusals otherwise); the new
-- tokens keep the client and scopes.
CREATE FUNCTION fluxbase.auth_oauth_refresh(p_client uuid, p_old_hash text, p_new_hash text, p_reuse_seconds int)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  RETURN fluxbase.auth_refresh(p_old_hash, p_new_hash, p_reuse_seconds, p_client);
END
$$;

-- GET /user/oauth/grants: the clients the user consented to.
CREATE FUNCTION fluxbase.auth_oauth_grants(p_user uuid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT coalesce(jsonb_agg(jsonb_build_object(
      'client', jsonb_strip_nulls(jsonb_build_object('id', c.id, 'name', nullif(c.client_name, ''),
        'uri', nullif(c.client_uri, ''), 'logo_uri', nullif(c.logo_uri, ''))),
      'scopes', to_jsonb(string_to_array(o.scopes, ' ')),
      'granted_at', o.granted_at) ORDER BY o.granted_at DESC), '[]'::jsonb)
  FROM auth.oauth_consents o JOIN auth.oauth_clients c ON c.id = o.client_id AND c.deleted_at IS NULL
  WHERE o.user_id = p_user AND o.revoked_at IS NULL
$$;

-- DELETE /user/oauth/grants?client_id=: the consent is revoked and the
-- client's sessions of this user end.
CREATE FUNCTION fluxbase.auth_oauth_grant_revoke(p_user uuid, p_client uuid) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  UPDATE auth.oauth_consents SET revoked_at = now()
  WHERE user_id = p_user AND client_id = p_client AND revoked_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'oauth_consent_not_found' USING ERRCODE = 'FA404', HINT = 'No active grant found for this client';
  END IF;
  DELETE FROM auth.sessions WHERE user_id = p_user AND oauth_client_id = p_client;
  PERFORM fluxbase.auth_audit('token_revoked', p_user,
    jsonb_build_object('oauth_client_id', p_client, 'action', 'revoke_oauth_grant'));
END
$$;

-- GET /oauth/userinfo (OIDC): the claims the session's scopes allow; a
-- session without scopes (not an OAuth client's) gets `sub` alone.
CREATE FUNCTION fluxbase.auth_oauth_userinfo(p_user uuid, p_session uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
  scopes text[];
  info jsonb;
  meta jsonb;
BEGIN
  SELECT * INTO u FROM auth.users WHERE id = p_user AND deleted_at IS NULL;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  info := jsonb_build_object('sub', u.id);
  SELECT string_to_array(s.scopes, ' ') INTO scopes FROM auth.sessions s WHERE s.id = p_session AND s.user_id = p_user;
  IF scopes IS NULL THEN
    RETURN info;
  END IF;
  meta := coalesce(u.raw_user_meta_data, '{}'::jsonb);
  IF 'email' = ANY (scopes) THEN
    info := info || jsonb_strip_nulls(jsonb_build_object('email', nullif(u.email, ''),
      'email_verified', CASE WHEN u.email_confirmed_at IS NOT NULL THEN true END));
  END IF;
  IF 'profile' = ANY (scopes) THEN
    info := info || jsonb_strip_nulls(jsonb_build_object(
      'name', coalesce(nullif(meta ->> 'name', ''), nullif(u.email, '')),
      'picture', coalesce(nullif(meta ->> 'picture', ''), nullif(meta ->> 'avatar_url', '')),
      'preferred_username', coalesce(nullif(meta ->> 'preferred_username', ''), nullif(meta ->> 'username', '')),
      'updated_at', extract(epoch FROM u.updated_at)::bigint,
      'user_metadata', u.raw_user_meta_data));
  END IF;
  IF 'phone' = ANY (scopes) THEN
    info := info || jsonb_strip_nulls(jsonb_build_object('phone', nullif(u.phone, ''),
      'phone_verified', CASE WHEN u.phone_confirmed_at IS NOT NULL THEN true END));
  END IF;
  RETURN info;
END
$$;

-- Loaded after sql/auth/grants.sql in an upgrade: the same privileges here.
DO $grants$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = 'fluxbase'::regnamespace AND p.proname LIKE 'auth\_oauth\_%'
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticator', f);
  END LOOP;
END
$grants$;
