-- Web3 sign-in's SQL surface (sql/auth/web3.sql), after the proxy checked
-- the signature and the message: one user per wallet identity, GoTrue's
-- identity data and amr, the metadata merged at each sign-in, a message
-- taken once, sign-ups off and banned users refused.
\set VERBOSITY terse
BEGIN;
SELECT set_config('request.ip', '198.51.100.70', true), set_config('request.id', 'req-70', true);
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
CREATE FUNCTION pg_temp.identity(statement text) RETURNS jsonb
LANGUAGE sql AS $$
  SELECT jsonb_build_object('sub', 'web3:ethereum:0xabc0000000000000000000000000000000000001',
    'custom_claims', jsonb_build_object('address', '0xabc0000000000000000000000000000000000001', 'chain', 'ethereum',
      'network', '1', 'domain', 'app.example.com', 'statement', statement),
    'email_verified', false, 'phone_verified', false)
$$;

-- A new wallet: a user without e-mail, the identity as GoTrue stores it.
SELECT s ->> 'aal' AS aal, s -> 'amr' -> 0 ->> 'method' AS amr, s -> 'user' ->> 'email' AS email,
  s -> 'user' -> 'app_metadata' AS app_metadata, s -> 'user' -> 'user_metadata' -> 'custom_claims' ->> 'statement' AS statement
FROM fluxbase.auth_web3_signin('web3:ethereum:0xabc0000000000000000000000000000000000001', pg_temp.identity('Hello'),
  'm1', 600, true, 'refresh-70-1', '{"provider": "web3", "chain": "ethereum"}') AS s;
SELECT provider, provider_id, identity_data -> 'custom_claims' ->> 'domain' AS domain, email
FROM auth.identities WHERE provider = 'web3';

-- The same message again: refused, nothing written.
SELECT fluxbase.auth_web3_signin('web3:ethereum:0xabc0000000000000000000000000000000000001', pg_temp.identity('Hello'),
  'm1', 600, true, 'refresh-70-2', '{}') AS replayed;
SELECT count(*) AS sessions FROM auth.sessions s JOIN auth.identities i ON i.user_id = s.user_id
WHERE i.provider = 'web3';

-- Another message of the same wallet: the same user, metadata merged.
SELECT (s -> 'user' ->> 'id') = (SELECT user_id::text FROM auth.identities WHERE provider = 'web3') AS same_user,
  s -> 'user' -> 'user_metadata' -> 'custom_claims' ->> 'statement' AS statement
FROM fluxbase.auth_web3_signin('web3:ethereum:0xabc0000000000000000000000000000000000001', pg_temp.identity('Again'),
  'm2', 600, false, 'refresh-70-3', '{}') AS s;
SELECT count(*) AS users FROM auth.identities WHERE provider = 'web3';
SELECT message_hash, expires_at > now() + interval '9 minutes' AS kept_ten_minutes
FROM fluxbase.auth_web3_messages ORDER BY message_hash;

-- A new wallet while sign-ups are off; a banned user.
SELECT pg_temp.try($q$SELECT fluxbase.auth_web3_signin('web3:solana:So1anaWa11et', '{}', 'm3', 600, false, 'r4', '{}')$q$)
  AS signups_off;
UPDATE auth.users SET banned_until = now() + interval '1 hour'
WHERE id = (SELECT user_id FROM auth.identities WHERE provider = 'web3');
SELECT pg_temp.try($q$SELECT fluxbase.auth_web3_signin('web3:ethereum:0xabc0000000000000000000000000000000000001',
  '{}', 'm4', 600, true, 'r5', '{}')$q$) AS banned;
SELECT count(*) AS taken FROM fluxbase.auth_web3_messages WHERE message_hash IN ('m3', 'm4');

-- An expired message is forgotten by the next sign-in.
UPDATE fluxbase.auth_web3_messages SET expires_at = now() - interval '1 second' WHERE message_hash = 'm1';
UPDATE auth.users SET banned_until = NULL;
SELECT fluxbase.auth_web3_signin('web3:ethereum:0xabc0000000000000000000000000000000000001', pg_temp.identity('Hi'),
  'm5', 600, true, 'refresh-70-6', '{}') ? 'session_id' AS signed_in;
SELECT message_hash FROM fluxbase.auth_web3_messages ORDER BY message_hash;
SELECT payload ->> 'action' AS action, payload -> 'traits' ->> 'provider' AS provider
FROM auth.audit_log_entries WHERE payload ->> 'request_id' = 'req-70' ORDER BY created_at, payload ->> 'action';
ROLLBACK;
