-- Fluxbase 0.4.0 → 0.5.0. Frozen at the 0.6.0 release: the files and functions it once
-- pulled in with `-- @include` and `-- @include-functions` are expanded below as they were
-- at 0.5.0, so later changes to sql/*.sql cannot rewrite history. What changed:
--   * fluxbase.rest_raw returns a body over 1 MiB in pieces: its first line
--     becomes `status length` and the proxy reads the body with the new
--     fluxbase.rest_body(), 256 KiB a row, while it sends it (a 0.4.0 proxy
--     cannot read such a response: upgrade them together).

CREATE FUNCTION fluxbase."rest_body"() RETURNS SETOF bytea
STRICT VOLATILE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'rest_body_wrapper';

--   * Realtime's database side (sql/realtime.sql): the realtime schema with
--     Supabase's realtime.messages, realtime.topic(), realtime.send(),
--     realtime.send_binary() and realtime.broadcast_changes(); the trigger
--     that hands broadcast rows to the proxies (fluxbase.realtime_emit), and
--     the proxy's functions for private channels, replay, the HTTP API, the
--     logical-decoding feed and pruning (fluxbase.realtime_*).

-- ---- sql/realtime.sql ----
-- Supabase Realtime's database side, in its names, so migrations, policies
-- and triggers written for Supabase work unchanged:
--   * realtime.messages: what private channels are authorised against (RLS
--     policies: SELECT decides who may join and receive, INSERT who may send
--     or track, per `extension` 'broadcast' or 'presence'), and the messages
--     sent from SQL;
--   * realtime.topic(): the topic being authorised or sent to, for policies;
--   * realtime.send(), realtime.send_binary(), realtime.broadcast_changes():
--     broadcast from SQL, delivered to the topic's sockets on every proxy
--     once the transaction commits, never if it rolls back, in commit order
--     (fluxbase.realtime_deliver()). A private message is stored in
--     realtime.messages (its INSERT policies decide, and it can be
--     replayed); a public one goes straight to the proxies. Any row inserted
--     into realtime.messages with extension 'broadcast' and an event is
--     delivered too (fluxbase.realtime_emit()).
-- In a database that moved over from Supabase the schema and table exist
-- already and are kept; only what is missing is added.

DO $schema$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'realtime') THEN
    CREATE SCHEMA realtime;
  END IF;
END
$schema$;
GRANT USAGE ON SCHEMA realtime TO anon, authenticated, service_role, authenticator;

CREATE TABLE IF NOT EXISTS realtime.messages (
  topic text NOT NULL,
  extension text NOT NULL,
  payload jsonb,
  event text,
  private boolean DEFAULT false,
  updated_at timestamp NOT NULL DEFAULT now(),
  inserted_at timestamp NOT NULL DEFAULT now(),
  id uuid NOT NULL DEFAULT gen_random_uuid(),
  PRIMARY KEY (id, inserted_at)
);
-- realtime.send_binary()'s bytes (Supabase keeps them beside `payload`).
ALTER TABLE realtime.messages ADD COLUMN IF NOT EXISTS binary_payload bytea;
CREATE INDEX IF NOT EXISTS messages_inserted_at_topic_index ON realtime.messages (inserted_at DESC, topic);
ALTER TABLE realtime.messages ENABLE ROW LEVEL SECURITY;
GRANT SELECT, INSERT, UPDATE ON realtime.messages TO anon, authenticated;
GRANT ALL ON realtime.messages TO service_role;
SELECT pg_catalog.pg_extension_config_dump('realtime.messages', '');

CREATE OR REPLACE FUNCTION realtime.topic() RETURNS text
LANGUAGE sql STABLE
AS $$
SELECT nullif(current_setting('realtime.topic', true), '')::text;
$$;

-- As Supabase's, for a private message: the insert runs as the caller, so
-- it needs an INSERT policy, and a failure does not fail the caller's
-- transaction: it is reported on the `realtime:system` NOTIFY channel. A
-- public message is not stored (replay is for private channels) and needs
-- no policy: it goes to the proxies at once (fluxbase.realtime_publish, in
-- Rust: extension/src/realtime.rs), without the subtransaction the insert
-- needs, which keeps writers that send fast (docs/realtime.md).
CREATE OR REPLACE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF NOT coalesce(private, true) THEN
    PERFORM fluxbase.realtime_publish(topic, event, payload::text, NULL);
    RETURN;
  END IF;
  PERFORM set_config('realtime.topic', topic, true);
  BEGIN
    INSERT INTO realtime.messages (payload, event, topic, private, extension)
    VALUES (payload, event, topic, private, 'broadcast');
  EXCEPTION
    WHEN OTHERS THEN
      PERFORM pg_notify('realtime:system', jsonb_build_object('error', SQLERRM, 'function', 'realtime.send',
        'event', event, 'topic', topic, 'private', private)::text);
  END;
END;
$$;

CREATE OR REPLACE FUNCTION realtime.send_binary(payload bytea, event text, topic text, private boolean DEFAULT true) RETURNS void
LANGUAGE plpgsql
AS $$
BEGIN
  IF NOT coalesce(private, true) THEN
    PERFORM fluxbase.realtime_publish(topic, event, NULL, payload);
    RETURN;
  END IF;
  PERFORM set_config('realtime.topic', topic, true);
  BEGIN
    INSERT INTO realtime.messages (binary_payload, event, topic, private, extension)
    VALUES (payload, event, topic, private, 'broadcast');
  EXCEPTION
    WHEN OTHERS THEN
      PERFORM pg_notify('realtime:system', jsonb_build_object('error', SQLERRM, 'function', 'realtime.send_binary',
        'event', event, 'topic', topic, 'private', private)::text);
  END;
END;
$$;

CREATE OR REPLACE FUNCTION realtime.broadcast_changes(topic_name text, event_name text, operation text, table_name text,
    table_schema text, new record, old record, level text DEFAULT 'ROW') RETURNS void
LANGUAGE plpgsql
AS $$
DECLARE
  row_data jsonb := '{}'::jsonb;
BEGIN
  IF level = 'STATEMENT' THEN
    RAISE EXCEPTION 'function can only be triggered for each row, not for each statement';
  END IF;
  IF operation = 'INSERT' OR operation = 'UPDATE' OR operation = 'DELETE' THEN
    row_data := jsonb_build_object('old_record', OLD, 'record', NEW, 'operation', operation, 'table', table_name,
      'schema', table_schema);
    PERFORM realtime.send(row_data, event_name, topic_name);
  ELSE
    RAISE EXCEPTION 'Unexpected operation type: %', operation;
  END IF;
EXCEPTION
  WHEN OTHERS THEN
    RAISE EXCEPTION 'Failed to process the row: %', SQLERRM;
END;
$$;

-- Hands a broadcast to the proxies as part of the current transaction: a
-- transactional logical-decoding message where wal_level is logical (no
-- lock: commits stay parallel; each proxy reads them from its own slot,
-- fluxbase.realtime_feed_read), else (or with the setting
-- fluxbase.realtime_transport = 'notify') NOTIFY fluxbase_realtime, which
-- Postgres delivers at commit and in commit order too but for which it
-- serialises the commits of transactions that notify. The envelope is the
-- one proxies exchange: {t: topic, e: event, private, p: payload | b: base64
-- bytes}, written as text directly. A NOTIFY is at most 8000 bytes: a larger
-- message travels as its row's id ({id, at}; a public one is stored for it)
-- and each proxy reads it with fluxbase.realtime_message().
CREATE FUNCTION fluxbase.realtime_deliver(p_topic text, p_event text, p_payload jsonb, p_binary bytea,
    p_private boolean, p_id uuid, p_at timestamp) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  envelope text := '{"t":' || to_json('realtime:' || p_topic)::text || ',"e":' || to_json(p_event)::text
    || CASE WHEN p_private THEN ',"private":true' ELSE '' END
    || CASE WHEN p_binary IS NOT NULL THEN ',"b":"' || translate(encode(p_binary, 'base64'), E'\n', '') || '"'
            ELSE ',"p":' || coalesce(p_payload, '{}'::jsonb)::text END
    || '}';
BEGIN
  IF current_setting('wal_level') = 'logical'
     AND coalesce(current_setting('fluxbase.realtime_transport', true), '') <> 'notify' THEN
    PERFORM pg_logical_emit_message(true, 'fluxbase_realtime', envelope);
  ELSIF octet_length(envelope) < 8000 THEN
    PERFORM pg_notify('fluxbase_realtime', envelope);
  ELSE
    IF p_id IS NULL THEN
      PERFORM set_config('fluxbase.realtime_storing', 'on', true);
      INSERT INTO realtime.messages (topic, event, payload, binary_payload, private, extension)
      VALUES (p_topic, p_event, CASE WHEN p_binary IS NULL THEN coalesce(p_payload, '{}'::jsonb) END, p_binary,
        p_private, 'broadcast')
      RETURNING id, inserted_at INTO p_id, p_at;
      PERFORM set_config('fluxbase.realtime_storing', '', true);
    END IF;
    PERFORM pg_notify('fluxbase_realtime', json_build_object('id', p_id, 'at', p_at)::text);
  END IF;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_deliver(text, text, jsonb, bytea, boolean, uuid, timestamp) FROM PUBLIC;

-- A broadcast row inserted into realtime.messages (by realtime.send for a
-- private message, or by anyone) is delivered by this trigger.
CREATE FUNCTION fluxbase.realtime_emit() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
  IF NEW.extension = 'broadcast' AND NEW.event IS NOT NULL
     AND coalesce(current_setting('fluxbase.realtime_storing', true), '') <> 'on' THEN
    PERFORM fluxbase.realtime_deliver(NEW.topic, NEW.event, NEW.payload, NEW.binary_payload,
      coalesce(NEW.private, false), NEW.id, NEW.inserted_at);
  END IF;
  RETURN NULL;
END;
$$;

CREATE TRIGGER fluxbase_emit AFTER INSERT ON realtime.messages
FOR EACH ROW EXECUTE FUNCTION fluxbase.realtime_emit();

-- A message too large for NOTIFY, by id, in the envelope's shape.
CREATE FUNCTION fluxbase.realtime_message(p_id uuid, p_at timestamp) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
SELECT jsonb_build_object('t', 'realtime:' || m.topic, 'e', m.event, 'private', coalesce(m.private, false))
  || CASE WHEN m.binary_payload IS NOT NULL THEN jsonb_build_object('b', encode(m.binary_payload, 'base64'))
          ELSE jsonb_build_object('p', coalesce(m.payload, '{}'::jsonb)) END
FROM realtime.messages m WHERE m.id = p_id AND m.inserted_at = p_at;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_message(uuid, timestamp) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_message(uuid, timestamp) TO authenticator;

-- Supabase Realtime's authorisation of a private channel, for the caller of
-- `p_claims` on `p_topic` (without the `realtime:` prefix): one probe row
-- per extension is inserted as the extension's owner, read back as the
-- caller (SELECT policies: may read), then inserted as the caller (INSERT
-- policies: may write), with realtime.topic() set. Nothing of it stays: the
-- work runs in a subtransaction that is always rolled back.
CREATE FUNCTION fluxbase.realtime_probe(p_topic text) RETURNS uuid[]
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
WITH probe AS (
  INSERT INTO realtime.messages (topic, extension, private)
  VALUES (p_topic, 'broadcast', true), (p_topic, 'presence', true)
  RETURNING id
)
SELECT array_agg(id) FROM probe;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_probe(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_probe(text) TO authenticator;

CREATE FUNCTION fluxbase.realtime_authorize(p_claims jsonb, p_topic text) RETURNS jsonb
LANGUAGE plpgsql
AS $$
DECLARE
  probes uuid[];
  result jsonb;
  extension text;
BEGIN
  BEGIN
    probes := fluxbase.realtime_probe(p_topic);
    PERFORM set_config('realtime.topic', p_topic, true);
    PERFORM fluxbase.authenticate(p_claims);
    SELECT jsonb_build_object(
        'broadcast_read', coalesce(bool_or(m.extension = 'broadcast'), false),
        'presence_read', coalesce(bool_or(m.extension = 'presence'), false))
      INTO result
      FROM realtime.messages m WHERE m.id = ANY (probes);
    FOREACH extension IN ARRAY ARRAY['broadcast', 'presence'] LOOP
      BEGIN
        INSERT INTO realtime.messages (topic, extension, private) VALUES (p_topic, extension, true);
        result := result || jsonb_build_object(extension || '_write', true);
      EXCEPTION WHEN insufficient_privilege THEN
        result := result || jsonb_build_object(extension || '_write', false);
      END;
    END LOOP;
    RAISE EXCEPTION USING ERRCODE = 'FBR00', MESSAGE = result::text;
  EXCEPTION WHEN SQLSTATE 'FBR00' THEN
    RETURN SQLERRM::jsonb;
  END;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_authorize(jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_authorize(jsonb, text) TO authenticator;

-- A private broadcast row, inserted as the extension's owner once the
-- sender was authorised (fluxbase.realtime_broadcast).
CREATE FUNCTION fluxbase.realtime_insert(p_topic text, p_event text, p_payload jsonb, p_binary bytea, p_private boolean)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
INSERT INTO realtime.messages (topic, event, payload, binary_payload, private, extension)
VALUES (p_topic, p_event, CASE WHEN p_binary IS NULL THEN coalesce(p_payload, '{}'::jsonb) END, p_binary, p_private,
  'broadcast');
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_insert(text, text, jsonb, bytea, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_insert(text, text, jsonb, bytea, boolean) TO authenticator;

-- POST /realtime/v1/api/broadcast: `p_messages` ([{topic, event, payload
-- or binary (base64), private}]) sent in order, as the caller of `p_claims` may: a public topic
-- needs only the key the proxy verified, a private one an INSERT policy on
-- realtime.messages for its topic (fluxbase.realtime_authorize); refused
-- ones are left out. Returns how many were sent.
CREATE FUNCTION fluxbase.realtime_broadcast(p_claims jsonb, p_messages jsonb) RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
  m jsonb;
  private boolean;
  allowed jsonb := '{}'::jsonb;
  sent integer := 0;
BEGIN
  FOR m IN SELECT value FROM jsonb_array_elements(p_messages) LOOP
    private := coalesce((m->>'private')::boolean, false);
    IF private AND NOT allowed ? (m->>'topic') THEN
      allowed := allowed || jsonb_build_object(m->>'topic',
        (fluxbase.realtime_authorize(p_claims, m->>'topic')->>'broadcast_write')::boolean);
    END IF;
    IF NOT private THEN
      PERFORM fluxbase.realtime_publish(m->>'topic', m->>'event', (m->'payload')::text, decode(m->>'binary', 'base64'));
      sent := sent + 1;
    ELSIF (allowed->>(m->>'topic'))::boolean THEN
      PERFORM fluxbase.realtime_insert(m->>'topic', m->>'event', m->'payload', decode(m->>'binary', 'base64'), true);
      sent := sent + 1;
    END IF;
  END LOOP;
  RETURN sent;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_broadcast(jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_broadcast(jsonb, jsonb) TO authenticator;

-- Messages older than `p_keep` are deleted (the proxies call it every
-- minute with realtime.message_retention_seconds).
CREATE FUNCTION fluxbase.realtime_prune(p_keep interval) RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
WITH gone AS (DELETE FROM realtime.messages WHERE inserted_at < (now() - p_keep)::timestamp RETURNING 1)
SELECT count(*) FROM gone;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_prune(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_prune(interval) TO authenticator;

-- The logical-decoding feed of one proxy: a temporary slot (dropped with the
-- session that made it) read with pgoutput, which passes on only logical
-- messages here (the publication is empty). Slots are named fluxbase_rt_*;
-- no other slot can be opened or read through these functions.
-- The (empty) publication pgoutput is given; in its own transaction, since a
-- slot cannot be made in one that wrote.
CREATE FUNCTION fluxbase.realtime_feed_prepare() RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'fluxbase_realtime_feed') THEN
    CREATE PUBLICATION fluxbase_realtime_feed;
  END IF;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_feed_prepare() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_feed_prepare() TO authenticator;

CREATE FUNCTION fluxbase.realtime_feed_open(p_slot text) RETURNS pg_lsn
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  at pg_lsn;
BEGIN
  IF p_slot !~ '^fluxbase_rt_[a-z0-9_]{1,40}$' THEN
    RAISE EXCEPTION 'not a realtime slot name: %', p_slot USING ERRCODE = 'invalid_parameter_value';
  END IF;
  SELECT lsn INTO at FROM pg_create_logical_replication_slot(p_slot, 'pgoutput', true);
  RETURN at;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_feed_open(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_feed_open(text) TO authenticator;

-- The envelopes committed since the last read, in commit order (at most
-- `p_max` decoded changes a call). A pgoutput message record is 'M', flags,
-- its LSN (8 bytes), the prefix with a NUL, the length (4 bytes), content.
CREATE FUNCTION fluxbase.realtime_feed_read(p_slot text, p_max integer) RETURNS SETOF text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
BEGIN
  IF p_slot !~ '^fluxbase_rt_[a-z0-9_]{1,40}$' THEN
    RAISE EXCEPTION 'not a realtime slot name: %', p_slot USING ERRCODE = 'invalid_parameter_value';
  END IF;
  RETURN QUERY
  SELECT convert_from(substring(c.data FROM 33), 'UTF8')
  FROM pg_logical_slot_get_binary_changes(p_slot, NULL, p_max, 'proto_version', '1',
    'publication_names', 'fluxbase_realtime_feed', 'messages', 'true') c
  WHERE get_byte(c.data, 0) = 77
    AND substring(c.data FROM 11 FOR 18) = '\x666c7578626173655f7265616c74696d6500'::bytea;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_feed_read(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_feed_read(text, integer) TO authenticator;

-- Replay of a private channel (`config.broadcast.replay`): its stored JSON
-- broadcasts since `p_since_ms` (ms since the epoch), the newest
-- `p_limit` of them (at most 25), oldest first. The proxy calls it once the
-- caller's SELECT policies admitted the join.
CREATE FUNCTION fluxbase.realtime_replay(p_topic text, p_since_ms bigint, p_limit integer)
RETURNS TABLE (id uuid, event text, payload jsonb)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
SELECT r.id, r.event, r.payload FROM (
  SELECT m.id, m.event, m.payload, m.inserted_at
  FROM realtime.messages m
  WHERE m.topic = p_topic AND m.private AND m.extension = 'broadcast' AND m.event IS NOT NULL
    AND m.binary_payload IS NULL AND m.inserted_at >= to_timestamp(p_since_ms / 1000.0)::timestamp
  ORDER BY m.inserted_at DESC
  LIMIT least(greatest(p_limit, 0), 25)
) r
ORDER BY r.inserted_at;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_replay(text, bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_replay(text, bigint, integer) TO authenticator;

-- Presence shared by the proxies of one database. Each proxy writes the
-- presence of its own sockets here and tells the others by NOTIFY
-- (fluxbase_realtime, {o, kind: "presence", op, t, s, k, r, m}); a proxy
-- whose first member joins a topic loads the others' entries from here.
-- Every proxy says it is alive every 5 s; one not heard from for 15 s is
-- gone: its entries are deleted and the others told ({kind: "gone", i}), so
-- its sockets leave presence everywhere. Unlogged: presence does not outlive
-- a database crash, as it does not outlive the proxies.
CREATE UNLOGGED TABLE fluxbase.realtime_presence (
  instance text NOT NULL,
  topic text NOT NULL,
  socket bigint NOT NULL,
  key text NOT NULL,
  ref text NOT NULL,
  meta jsonb NOT NULL,
  PRIMARY KEY (topic, instance, socket)
);
CREATE INDEX realtime_presence_instance ON fluxbase.realtime_presence (instance);
CREATE UNLOGGED TABLE fluxbase.realtime_instances (
  instance text PRIMARY KEY,
  seen_at timestamptz NOT NULL
);

CREATE FUNCTION fluxbase.realtime_presence_track(p_instance text, p_topic text, p_socket bigint, p_key text,
    p_ref text, p_meta jsonb) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
INSERT INTO fluxbase.realtime_presence (instance, topic, socket, key, ref, meta)
VALUES (p_instance, p_topic, p_socket, p_key, p_ref, p_meta)
ON CONFLICT (topic, instance, socket) DO UPDATE SET key = EXCLUDED.key, ref = EXCLUDED.ref, meta = EXCLUDED.meta;
SELECT pg_notify('fluxbase_realtime', json_build_object('o', p_instance, 'kind', 'presence', 'op', 'join', 't', p_topic,
  's', p_socket, 'k', p_key, 'r', p_ref, 'm', p_meta)::text);
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_presence_track(text, text, bigint, text, text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_presence_track(text, text, bigint, text, text, jsonb) TO authenticator;

CREATE FUNCTION fluxbase.realtime_presence_untrack(p_instance text, p_topic text, p_socket bigint) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DELETE FROM fluxbase.realtime_presence WHERE topic = p_topic AND instance = p_instance AND socket = p_socket;
SELECT pg_notify('fluxbase_realtime', json_build_object('o', p_instance, 'kind', 'presence', 'op', 'leave',
  't', p_topic, 's', p_socket)::text);
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_presence_untrack(text, text, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_presence_untrack(text, text, bigint) TO authenticator;

-- The other proxies' entries of a topic: [{i, s, k, r, m}].
CREATE FUNCTION fluxbase.realtime_presence_state(p_topic text, p_instance text) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
SELECT coalesce(jsonb_agg(jsonb_build_object('i', instance, 's', socket, 'k', key, 'r', ref, 'm', meta)), '[]'::jsonb)
FROM fluxbase.realtime_presence WHERE topic = p_topic AND instance <> p_instance;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_presence_state(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_presence_state(text, text) TO authenticator;

-- A proxy's heartbeat; proxies silent for `p_dead_after` are reaped.
CREATE FUNCTION fluxbase.realtime_presence_alive(p_instance text, p_dead_after interval) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  gone text;
BEGIN
  INSERT INTO fluxbase.realtime_instances (instance, seen_at) VALUES (p_instance, now())
  ON CONFLICT (instance) DO UPDATE SET seen_at = now();
  FOR gone IN
    DELETE FROM fluxbase.realtime_instances WHERE seen_at < now() - p_dead_after RETURNING instance
  LOOP
    DELETE FROM fluxbase.realtime_presence WHERE instance = gone;
    PERFORM pg_notify('fluxbase_realtime', json_build_object('kind', 'gone', 'i', gone)::text);
  END LOOP;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_presence_alive(text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_presence_alive(text, interval) TO authenticator;
--   * fluxbase.realtime_publish (Rust, extension/src/realtime.rs): a public
--     broadcast from SQL handed to the proxies in one C call.
CREATE FUNCTION fluxbase."realtime_publish"(
	"topic" TEXT,
	"event" TEXT,
	"payload" TEXT,
	"binary" bytea
) RETURNS void
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'realtime_publish_wrapper';

--   * Auth parity with GoTrue 2.18x (issue 14, docs/auth.md): the admin
--     user list is newest first; a user's factors for an unknown user are
--     404 user_not_found; generate_link email_change_current/_new
--     (fluxbase.auth_admin_email_change_link); a user made for an e-mail or
--     SMS that could not be delivered is removed again
--     (auth_send_token says 'created', fluxbase.auth_withdraw_new_user); a
--     replayed passkey challenge is told from an expired one; WebAuthn MFA
--     factors in Supabase's columns (mfa_factors.web_authn_credential,
--     web_authn_aaguid, mfa_challenges.web_authn_session_data) with
--     fluxbase.auth_mfa_webauthn_begin/_state/_result, and auth_mfa_result's
--     wording and amr method for them.
ALTER TABLE auth.mfa_factors ADD COLUMN IF NOT EXISTS web_authn_credential jsonb,
  ADD COLUMN IF NOT EXISTS web_authn_aaguid uuid;
ALTER TABLE auth.mfa_challenges ADD COLUMN IF NOT EXISTS web_authn_session_data jsonb;

-- ---- sql/auth/mfa.sql: fluxbase.auth_mfa_result ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_result(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid, p_ok boolean,
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
  VALUES (p_session, now(), now(), (SELECT CASE factor_type WHEN 'webauthn' THEN 'mfa/webauthn' ELSE factor_type::text END
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

-- ---- sql/auth/mfa.sql: fluxbase.auth_mfa_webauthn_begin ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_webauthn_begin(p_user uuid, p_challenge uuid, p_session_data jsonb)
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

-- ---- sql/auth/mfa.sql: fluxbase.auth_mfa_webauthn_state ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_webauthn_state(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid)
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

-- ---- sql/auth/mfa.sql: fluxbase.auth_mfa_webauthn_result ----
CREATE OR REPLACE FUNCTION fluxbase.auth_mfa_webauthn_result(p_user uuid, p_session uuid, p_factor uuid, p_challenge uuid,
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

-- ---- sql/auth/admin.sql: fluxbase.auth_admin_list ----
CREATE OR REPLACE FUNCTION fluxbase.auth_admin_list(p_page int, p_per_page int) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  SELECT jsonb_build_object(
    'users', coalesce((SELECT jsonb_agg(fluxbase.auth_user_json(u) ORDER BY u.created_at DESC, u.id DESC)
      FROM (SELECT * FROM auth.users WHERE deleted_at IS NULL ORDER BY created_at DESC, id DESC
            LIMIT p_per_page OFFSET (p_page - 1) * p_per_page) u), '[]'::jsonb),
    'total', (SELECT count(*) FROM auth.users WHERE deleted_at IS NULL))
$$;

-- ---- sql/auth/admin.sql: fluxbase.auth_admin_factors ----
CREATE OR REPLACE FUNCTION fluxbase.auth_admin_factors(p_user uuid) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog
AS $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM auth.users WHERE id = p_user AND deleted_at IS NULL) THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User not found';
  END IF;
  RETURN (SELECT coalesce(jsonb_agg(jsonb_build_object('id', f.id, 'friendly_name', f.friendly_name,
    'factor_type', f.factor_type, 'status', f.status, 'created_at', f.created_at, 'updated_at', f.updated_at)
    ORDER BY f.created_at), '[]'::jsonb)
  FROM auth.mfa_factors f WHERE f.user_id = p_user);
END
$$;

-- ---- sql/auth/admin.sql: fluxbase.auth_admin_email_change_link ----
CREATE OR REPLACE FUNCTION fluxbase.auth_admin_email_change_link(p_email text, p_new_email text, p_kind text,
  p_link_hash text, p_code_hash text)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
  tt auth.one_time_token_type := CASE p_kind WHEN 'email_change_current' THEN 'email_change_token_current'
    ELSE 'email_change_token_new' END;
BEGIN
  SELECT * INTO u FROM auth.users WHERE email = p_email AND NOT is_sso_user AND deleted_at IS NULL FOR UPDATE;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'user_not_found' USING ERRCODE = 'FA404', HINT = 'User with this email not found';
  END IF;
  IF EXISTS (SELECT 1 FROM auth.users WHERE email = p_new_email AND id <> u.id AND NOT is_sso_user) THEN
    RAISE EXCEPTION 'email_exists' USING ERRCODE = 'FA422', HINT = 'A user with this email address has already been registered';
  END IF;
  IF u.email_change IS DISTINCT FROM p_new_email THEN
    DELETE FROM auth.one_time_tokens WHERE user_id = u.id
      AND token_type IN ('email_change_token_new', 'email_change_token_current');
  END IF;
  INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
  VALUES (gen_random_uuid(), u.id, tt, p_link_hash, p_code_hash, now(), now())
  ON CONFLICT (user_id, token_type) DO UPDATE SET token_hash = EXCLUDED.token_hash, relates_to = EXCLUDED.relates_to,
    created_at = now(), updated_at = now();
  UPDATE auth.users SET email_change = p_new_email, email_change_sent_at = now(), email_change_confirm_status = 0,
    updated_at = now()
  WHERE id = u.id
  RETURNING * INTO u;
  PERFORM fluxbase.auth_audit('user_modified', u.id, jsonb_build_object('email_change', p_new_email, 'by', 'admin'));
  RETURN fluxbase.auth_user_json(u);
END
$$;

-- ---- sql/auth/otp.sql: fluxbase.auth_send_token ----
CREATE OR REPLACE FUNCTION fluxbase.auth_send_token(p_channel text, p_address text, p_kind text, p_link_hash text,
  p_code_hash text, p_create boolean, p_user_meta jsonb, p_interval_seconds int, p_code_challenge text,
  p_code_challenge_method text)
RETURNS text
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  u auth.users;
  tt auth.one_time_token_type := CASE p_kind WHEN 'recovery' THEN 'recovery_token'
    WHEN 'reauthentication' THEN 'reauthentication_token' ELSE 'confirmation_token' END;
  uid uuid;
  by_phone boolean := p_channel = 'phone';
BEGIN
  SELECT * INTO u FROM auth.users
  WHERE deleted_at IS NULL
    AND ((by_phone AND phone = p_address) OR (NOT by_phone AND email = p_address AND NOT is_sso_user));
  IF NOT FOUND THEN
    IF NOT p_create THEN
      RETURN 'no_user';
    END IF;
    uid := gen_random_uuid();
    INSERT INTO auth.users (id, aud, role, email, phone, raw_app_meta_data, raw_user_meta_data, created_at, updated_at,
      is_super_admin)
    VALUES (uid, 'authenticated', 'authenticated', CASE WHEN NOT by_phone THEN p_address END,
      CASE WHEN by_phone THEN p_address END,
      jsonb_build_object('provider', p_channel, 'providers', jsonb_build_array(p_channel)),
      coalesce(p_user_meta, '{}'::jsonb), now(), now(), false)
    RETURNING * INTO u;
    INSERT INTO auth.identities (provider_id, user_id, identity_data, provider, created_at, updated_at)
    VALUES (uid::text, uid, jsonb_build_object('sub', uid::text, CASE WHEN by_phone THEN 'phone' ELSE 'email' END, p_address,
      CASE WHEN by_phone THEN 'phone_verified' ELSE 'email_verified' END, false), p_channel, now(), now());
    PERFORM fluxbase.auth_audit('user_signedup', uid, jsonb_build_object('provider', p_channel));
  END IF;
  IF EXISTS (SELECT 1 FROM auth.one_time_tokens WHERE user_id = u.id AND token_type = tt
             AND created_at > now() - make_interval(secs => p_interval_seconds)) THEN
    RETURN 'too_soon';
  END IF;
  -- A sign-up confirmation's code is marked: redeeming it keeps the
  -- password its owner chose (see auth_verify_token).
  INSERT INTO auth.one_time_tokens (id, user_id, token_type, token_hash, relates_to, created_at, updated_at)
  VALUES (gen_random_uuid(), u.id, tt, p_link_hash,
    CASE WHEN p_kind = 'signup' THEN 'signup:' || p_code_hash ELSE p_code_hash END, now(), now())
  ON CONFLICT (user_id, token_type) DO UPDATE SET token_hash = EXCLUDED.token_hash, relates_to = EXCLUDED.relates_to,
    created_at = now(), updated_at = now();
  DELETE FROM fluxbase.auth_token_failures WHERE user_id = u.id AND token_type = tt;
  -- PKCE (the app sent a code_challenge): the link will lead to ?code=,
  -- which only the app holding the verifier can trade for a session. Until
  -- the link is used, the flow state waits under 'pending:' + its hash.
  DELETE FROM auth.flow_state WHERE user_id = u.id AND provider_type = 'email' AND authentication_method = p_kind
    AND auth_code LIKE 'pending:%';
  IF p_code_challenge IS NOT NULL AND NOT by_phone THEN
    INSERT INTO auth.flow_state (id, user_id, auth_code, code_challenge_method, code_challenge, provider_type,
      created_at, updated_at, authentication_method)
    VALUES (gen_random_uuid(), u.id, 'pending:' || p_link_hash, lower(p_code_challenge_method)::auth.code_challenge_method,
      p_code_challenge, 'email', now(), now(), p_kind);
  END IF;
  IF p_kind = 'recovery' THEN
    UPDATE auth.users SET recovery_sent_at = now() WHERE id = u.id;
  ELSIF p_kind = 'reauthentication' THEN
    UPDATE auth.users SET reauthentication_sent_at = now() WHERE id = u.id;
  ELSE
    UPDATE auth.users SET confirmation_sent_at = now() WHERE id = u.id;
  END IF;
  PERFORM fluxbase.auth_audit(CASE p_kind WHEN 'recovery' THEN 'user_recovery_requested'
    ELSE 'user_confirmation_requested' END, u.id,
    jsonb_build_object('kind', p_kind, 'channel', p_channel));
  RETURN CASE WHEN uid IS NOT NULL THEN 'created' ELSE 'sent' END;
END
$$;

-- ---- sql/auth/otp.sql: fluxbase.auth_withdraw_new_user ----
CREATE OR REPLACE FUNCTION fluxbase.auth_withdraw_new_user(p_code_hash text)
RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  DELETE FROM auth.users u USING auth.one_time_tokens t
  WHERE t.relates_to IN (p_code_hash, 'signup:' || p_code_hash) AND u.id = t.user_id
    AND u.last_sign_in_at IS NULL AND u.email_confirmed_at IS NULL AND u.phone_confirmed_at IS NULL
    AND u.encrypted_password IS NULL;
$$;

-- ---- sql/auth/passkey.sql: fluxbase.auth_passkey_take_challenge ----
CREATE OR REPLACE FUNCTION fluxbase.auth_passkey_take_challenge(p_id uuid, p_kind text, p_user uuid, p_expiry_seconds int)
RETURNS text
LANGUAGE sql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
  WITH taken AS (DELETE FROM fluxbase.auth_webauthn_challenges WHERE id = p_id RETURNING *)
  SELECT CASE WHEN created_at >= now() - make_interval(secs => p_expiry_seconds) THEN challenge ELSE '' END
  FROM taken
  WHERE kind = p_kind AND user_id IS NOT DISTINCT FROM p_user
$$;

-- ---- sql/auth/grants.sql ----
-- Every fluxbase.auth_* function: EXECUTE for `authenticator` only. Loaded
-- after all of sql/auth/.
DO $grants$
DECLARE
  f regprocedure;
BEGIN
  FOR f IN SELECT p.oid::regprocedure FROM pg_proc p
    WHERE p.pronamespace = 'fluxbase'::regnamespace AND p.proname LIKE 'auth\_%'
  LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticator', f);
  END LOOP;
END
$grants$;

--   * The OAuth 2.1 server (sql/auth/oauth_server.sql): GoTrue's
--     auth.oauth_clients, auth.oauth_authorizations and auth.oauth_consents
--     (with their enum types), auth.sessions.oauth_client_id and .scopes,
--     and the fluxbase.auth_oauth_client_*, auth_oauth_authorize,
--     auth_oauth_authorization_details, auth_oauth_consent,
--     auth_oauth_code_exchange, auth_oauth_refresh and auth_oauth_grant*
--     functions (granted to authenticator only, in the file itself).

-- ---- sql/auth/oauth_server.sql ----
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

-- grant_type=refresh_token at /oauth/token: only the client the session
-- was issued to may rotate its tokens (then as auth_refresh, with its
-- reuse detection); the new tokens keep the client and scopes.
CREATE FUNCTION fluxbase.auth_oauth_refresh(p_client uuid, p_old_hash text, p_new_hash text, p_reuse_seconds int)
RETURNS jsonb
LANGUAGE plpgsql SECURITY DEFINER
SET search_path = pg_catalog
AS $$
DECLARE
  s auth.sessions;
BEGIN
  SELECT se.* INTO s FROM auth.refresh_tokens t JOIN auth.sessions se ON se.id = t.session_id
  WHERE t.token = p_old_hash;
  IF FOUND AND s.oauth_client_id IS DISTINCT FROM p_client THEN
    RAISE EXCEPTION 'refresh_token_not_found' USING ERRCODE = 'FA400',
      HINT = 'Invalid Refresh Token: Refresh Token Not Found';
  END IF;
  RETURN fluxbase.auth_refresh(p_old_hash, p_new_hash, p_reuse_seconds)
    || jsonb_strip_nulls(jsonb_build_object('client_id', s.oauth_client_id, 'scope', s.scopes));
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
