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
-- no policy: it goes to the proxies at once, without the subtransaction the
-- insert needs, which keeps writers that send fast (docs/realtime.md).
-- realtime.send is a C function (extension/src/realtime.rs,
-- realtime_send_fast): a public message with a topic and an event is
-- published there with no PL/pgSQL layer (a row trigger calls it once a
-- row); any other call runs fluxbase.realtime_send_stored below.
CREATE FUNCTION fluxbase.realtime_send_stored(payload jsonb, event text, topic text, private boolean) RETURNS void
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

CREATE OR REPLACE FUNCTION realtime.send(payload jsonb, event text, topic text, private boolean DEFAULT true) RETURNS void
LANGUAGE c VOLATILE
AS 'MODULE_PATHNAME', 'realtime_send_fast';

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

-- Replay of a private channel (`config.broadcast.replay`): its stored
-- broadcasts since `p_since_ms` (ms since the epoch), JSON (`payload`) and
-- binary (`binary_payload`, from realtime.send_binary or a binary send) alike,
-- the newest `p_limit` of them (at most 25), oldest first. The proxy calls it
-- once the caller's SELECT policies admitted the join.
CREATE FUNCTION fluxbase.realtime_replay(p_topic text, p_since_ms bigint, p_limit integer)
RETURNS TABLE (id uuid, event text, payload jsonb, binary_payload bytea)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
SELECT r.id, r.event, r.payload, r.binary_payload FROM (
  SELECT m.id, m.event, m.payload, m.binary_payload, m.inserted_at
  FROM realtime.messages m
  WHERE m.topic = p_topic AND m.private AND m.extension = 'broadcast' AND m.event IS NOT NULL
    AND m.inserted_at >= to_timestamp(p_since_ms / 1000.0)::timestamp
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
