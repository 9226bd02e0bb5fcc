-- The auth functions take the request's context from the transaction-local
-- settings request.ip, request.user_agent and request.id (set by the proxy
-- in the same statement), and refuse in one of two documented ways: raised
-- FAnnn, or returned {error, status, msg} when their writes must commit.
\set VERBOSITY terse
BEGIN;
SELECT set_config('request.ip', '203.0.113.7', true), set_config('request.user_agent', 'regress/1', true),
  set_config('request.id', 'req-14', true);
SELECT s ? 'session_id' AS has_session, s -> 'user' ->> 'email' AS email
FROM fluxbase.auth_signup('ctx@example.com', NULL, 'hash', NULL, true, false, 'refresh-14') s;
SELECT host(s.ip) AS ip, s.user_agent FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id
WHERE u.email = 'ctx@example.com';
SELECT payload ->> 'action' AS action, payload ->> 'request_id' AS request_id, ip_address
FROM auth.audit_log_entries WHERE payload ->> 'actor_username' = 'ctx@example.com' ORDER BY payload ->> 'action';
-- A wrong password: returned, so that the failure it counts commits.
SELECT fluxbase.auth_password_outcome('ctx@example.com', (SELECT id FROM auth.users WHERE email = 'ctx@example.com'),
  false, 5, 100, 60, NULL, 'refresh-14b') AS refusal;
SELECT ip, count(*) AS failures FROM fluxbase.auth_password_failures WHERE identifier = 'ctx@example.com' GROUP BY ip;
-- A reused refresh token: returned, so that the session's revocation commits.
SELECT fluxbase.auth_refresh('refresh-14', 'refresh-14c', 0) ? 'session_id' AS rotated;
SELECT fluxbase.auth_refresh('refresh-14', 'refresh-14d', -1) AS refusal;
SELECT count(*) AS sessions_left FROM auth.sessions s JOIN auth.users u ON u.id = s.user_id
WHERE u.email = 'ctx@example.com';
-- Refusals that write nothing are raised: SQLSTATE FA + status, error_code, client message.
DO $$
DECLARE
  hint text;
BEGIN
  PERFORM fluxbase.auth_pkce_exchange('no-such-code', 'x', 'x', 600, 'refresh-14e');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS hint = PG_EXCEPTION_HINT;
  RAISE NOTICE '% % (%)', SQLSTATE, SQLERRM, hint;
END
$$;
ROLLBACK;
