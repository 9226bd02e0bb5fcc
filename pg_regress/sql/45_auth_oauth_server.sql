-- The OAuth 2.1 server's SQL surface (sql/auth/oauth_server.sql): an
-- authorization request becomes the user's who opens it, consent is
-- remembered per scope set, a code works once for its client and verifier,
-- a refresh token only for the client its session was issued to, and
-- revoking a grant ends the client's sessions.
\set VERBOSITY terse
BEGIN;
SELECT set_config('request.ip', '198.51.100.45', true), set_config('request.id', 'req-45', true);
SELECT fluxbase.auth_signup('oauth-user@example.com', NULL, 'hash', NULL, true, false, 'refresh-45') ? 'session_id' AS signed_up;
CREATE TEMP TABLE ids AS SELECT (SELECT id FROM auth.users WHERE email = 'oauth-user@example.com') AS uid;
CREATE FUNCTION pg_temp.try(sql text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  result text;
  state text;
  msg text;
  hint text;
BEGIN
  EXECUTE sql INTO result;
  RETURN result;
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, hint = PG_EXCEPTION_HINT;
  RETURN format('%s %s: %s', state, msg, hint);
END
$$;
-- A confidential client; its JSON leaves empty fields out and never the secret.
SELECT fluxbase.auth_oauth_client_create('{"registration_type": "manual", "client_type": "confidential",
  "token_endpoint_auth_method": "client_secret_basic", "secret_hash": "h", "redirect_uris": ["http://localhost:4000/cb"],
  "grant_types": ["authorization_code", "refresh_token"], "client_name": "App", "client_uri": "", "logo_uri": ""}')
  - 'client_id' - 'created_at' - 'updated_at' AS client;
ALTER TABLE ids ADD COLUMN cid uuid;
UPDATE ids SET cid = (SELECT id FROM auth.oauth_clients WHERE client_name = 'App');
SELECT redirect_uris, grant_types, client_secret_hash FROM auth.oauth_clients WHERE client_name = 'App';
-- A public client may only authenticate with `none`.
SELECT pg_temp.try(format('SELECT fluxbase.auth_oauth_client_update(%L, %L)', cid,
  '{"token_endpoint_auth_method": "none"}')) AS public_method_on_confidential FROM ids;
SELECT pg_temp.try(format('SELECT fluxbase.auth_oauth_client_get(%L)', gen_random_uuid())) AS unknown_client;

-- /oauth/authorize stored a request; the consent page opens it.
SELECT fluxbase.auth_oauth_authorize(cid, 'authz-1', 'http://localhost:4000/cb', 'openid email', 'st', NULL,
  rtrim(translate(encode(sha256('verifier-45-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'), 'base64'), '+/', '-_'), '='),
  'S256', 'n-1', 600) FROM ids;
SELECT d - 'client' - 'user' AS details, d -> 'client' ->> 'name' AS client_name, d -> 'user' ->> 'email' AS email
FROM (SELECT fluxbase.auth_oauth_authorization_details('authz-1', uid, 'unused') AS d FROM ids) x;
-- Another user cannot see or decide it; the owner approves once.
SELECT pg_temp.try(format('SELECT fluxbase.auth_oauth_authorization_details(%L, %L, %L)', 'authz-1',
  gen_random_uuid(), 'x')) AS other_user;
SELECT fluxbase.auth_oauth_consent('authz-1', uid, true, 'code-hash-1') AS approved FROM ids;
SELECT pg_temp.try(format('SELECT fluxbase.auth_oauth_consent(%L, %L, true, %L)', 'authz-1', uid, 'y')) AS again FROM ids;
SELECT scopes, revoked_at IS NULL AS active FROM auth.oauth_consents;

-- The code: another client, a wrong redirect_uri or verifier are refused
-- (and leave the code usable); then it becomes a session of the client, once.
SELECT fluxbase.auth_oauth_code_exchange(gen_random_uuid(), 'code-hash-1', NULL, NULL, 'v', 'v', 'r1') AS other_client;
SELECT fluxbase.auth_oauth_code_exchange(cid, 'code-hash-1', 'http://localhost:4000/other', NULL, 'v', 'v', 'r1')
  AS wrong_redirect FROM ids;
SELECT fluxbase.auth_oauth_code_exchange(cid, 'code-hash-1', NULL, NULL, 'v', 'v', 'r1') AS wrong_verifier FROM ids;
SELECT s ? 'session_id' AS session, s ->> 'scope' AS scope, s ->> 'nonce' AS nonce, (s ->> 'client_id')::uuid = cid AS client,
  s -> 'amr' -> 0 ->> 'method' AS amr
FROM (SELECT cid, fluxbase.auth_oauth_code_exchange(cid, 'code-hash-1', 'http://localhost:4000/cb', NULL,
  'verifier-45-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa',
  rtrim(translate(encode(sha256('verifier-45-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa'), 'base64'), '+/', '-_'), '='),
  'r1') AS s FROM ids) x;
SELECT fluxbase.auth_oauth_code_exchange(cid, 'code-hash-1', NULL, NULL, 'v', 'v', 'r2') AS replayed FROM ids;
SELECT scopes, oauth_client_id = (SELECT cid FROM ids) AS client FROM auth.sessions WHERE oauth_client_id IS NOT NULL;

-- Refresh: only by the session's client (GoTrue's invalid_client, nothing
-- consumed), and not at /token (auth_refresh without a client).
SELECT fluxbase.auth_oauth_refresh(gen_random_uuid(), 'r1', 'r3', 10) AS other_client_refresh;
SELECT fluxbase.auth_refresh('r1', 'r3', 10) AS refresh_without_client;
SELECT (fluxbase.auth_oauth_refresh(cid, 'r1', 'r3', 10) ->> 'client_id')::uuid = cid AS refreshed FROM ids;

-- A narrower request later is approved without asking; a wider one asks.
SELECT fluxbase.auth_oauth_authorize(cid, 'authz-2', 'http://localhost:4000/cb', 'email', NULL, NULL,
  repeat('c', 43), 'plain', NULL, 600) FROM ids;
SELECT fluxbase.auth_oauth_authorization_details('authz-2', uid, 'code-hash-2') AS auto_approved FROM ids;
SELECT fluxbase.auth_oauth_authorize(cid, 'authz-3', 'http://localhost:4000/cb', 'email phone', NULL, NULL,
  repeat('c', 43), 'plain', NULL, 600) FROM ids;
SELECT fluxbase.auth_oauth_authorization_details('authz-3', uid, 'code-hash-3') ? 'authorization_id' AS asks FROM ids;
-- An expired request is not found.
UPDATE auth.oauth_authorizations SET created_at = now() - interval '2 hours', expires_at = now() - interval '1 hour'
WHERE authorization_id = 'authz-3';
SELECT pg_temp.try(format('SELECT fluxbase.auth_oauth_consent(%L, %L, false, %L)', 'authz-3', uid, 'x')) AS expired FROM ids;

-- Grants: listed, then revoked with the client's sessions.
SELECT g -> 0 -> 'scopes' AS scopes FROM (SELECT fluxbase.auth_oauth_grants(uid) AS g FROM ids) x;
SELECT fluxbase.auth_oauth_grant_revoke(uid, cid) FROM ids;
SELECT count(*) AS client_sessions_left FROM auth.sessions WHERE oauth_client_id IS NOT NULL;
SELECT pg_temp.try(format('SELECT fluxbase.auth_oauth_grant_revoke(%L, %L)', uid, cid)) AS revoked_again FROM ids;
-- Deleting the client is a soft delete; it is gone for the API.
SELECT fluxbase.auth_oauth_client_delete(cid) FROM ids;
SELECT deleted_at IS NOT NULL AS soft_deleted FROM auth.oauth_clients;
SELECT pg_temp.try(format('SELECT fluxbase.auth_oauth_client_credentials(%L)', cid)) AS deleted_client FROM ids;
ROLLBACK;
