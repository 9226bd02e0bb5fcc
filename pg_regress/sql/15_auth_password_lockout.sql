-- Password lockout (the attacker test of the Hardening issue): wrong
-- passwords count per (identifier, client address) within a sliding
-- window, with a higher ceiling per identifier across addresses; unknown
-- identifiers count and lock exactly as known ones, so neither the answer
-- nor its wait tells which exist.
\set VERBOSITY terse
BEGIN;
SELECT set_config('request.ip', '198.51.100.1', true), set_config('request.id', 'req-15', true);
SELECT fluxbase.auth_signup('known@example.com', NULL, 'hash', NULL, true, false, 'refresh-15') ? 'session_id' AS signed_up;
CREATE FUNCTION pg_temp.attempt(p_identifier text, p_ok boolean) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
  state text;
  msg text;
  detail text;
BEGIN
  PERFORM fluxbase.auth_password_candidate(p_identifier, NULL, 3, 5, 60);
  RETURN coalesce(fluxbase.auth_password_outcome(p_identifier, (SELECT id FROM auth.users WHERE email = p_identifier),
    p_ok, 3, 5, 60, NULL, 'refresh-15-' || gen_random_uuid()) ->> 'error', 'session');
EXCEPTION WHEN OTHERS THEN
  GET STACKED DIAGNOSTICS state = RETURNED_SQLSTATE, msg = MESSAGE_TEXT, detail = PG_EXCEPTION_DETAIL;
  RETURN format('%s %s (wait %s)', state, msg, CASE WHEN detail::int BETWEEN 1 AND 60 THEN 'ok' ELSE detail END);
END
$$;
-- Three wrong passwords from one address, then a fourth try: the same
-- answers for the known and the unknown address.
SELECT i, pg_temp.attempt('known@example.com', false) AS known, pg_temp.attempt('nobody@example.com', false) AS unknown
FROM generate_series(1, 4) i;
-- The right password from that address is refused too; from another it works.
SELECT pg_temp.attempt('known@example.com', true) AS same_address;
SELECT set_config('request.ip', '198.51.100.2', true) IS NOT NULL AS other_address;
SELECT pg_temp.attempt('known@example.com', true) AS other_address_right;
-- The ceiling: five wrong passwords from all addresses lock for everyone.
SELECT pg_temp.attempt('known@example.com', false) AS second_address_wrong;
SELECT pg_temp.attempt('known@example.com', false) AS second_address_wrong;
SELECT set_config('request.ip', '198.51.100.3', true) IS NOT NULL AS third_address;
SELECT pg_temp.attempt('known@example.com', true) AS third_address_right;
-- Failures older than the window no longer count.
UPDATE fluxbase.auth_password_failures SET at = at - interval '61 seconds';
SELECT pg_temp.attempt('known@example.com', true) AS after_the_window, pg_temp.attempt('nobody@example.com', false) AS unknown;
SELECT payload ->> 'action' AS action, count(*) FROM auth.audit_log_entries
WHERE payload ->> 'actor_username' = 'known@example.com' GROUP BY 1 ORDER BY 1;
ROLLBACK;
