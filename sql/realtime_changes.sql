-- Postgres changes (`postgres_changes` bindings of realtime-js), the
-- database side. Tables stream as on Supabase: by membership in the
-- publication `supabase_realtime` (`ALTER PUBLICATION supabase_realtime ADD
-- TABLE …`). Each proxy reads them from its own temporary pgoutput slot
-- (fluxbase.realtime_feed_changes, commit order, nothing added to the
-- writer's transaction), decodes them and asks here, once per batch and
-- table, which of the batch's rows each group of subscribers (same role and
-- claims) may SELECT (fluxbase.realtime_visible).

DO $publication$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    CREATE PUBLICATION supabase_realtime;
  END IF;
END
$publication$;

-- Everything committed since the last read, as pgoutput's binary messages
-- (begin, relation, insert/update/delete, logical messages, commit), in
-- commit order; at most about `p_max` a call (whole transactions). Tables
-- come from `supabase_realtime` (when it exists), the proxies' messages from
-- `fluxbase_realtime`-prefixed logical messages.
-- Each call decodes from the slot's restart point, which moves only when
-- Postgres logs the running transactions (every 15 s, or at a checkpoint):
-- under load a reader would decode up to 15 s of WAL again on every call.
-- With `p_advance` (the proxy sets it while it is busy) the call logs them
-- first (pg_log_standby_snapshot, Postgres 16 and later), so the restart
-- point follows the reader.
CREATE FUNCTION fluxbase.realtime_feed_changes(p_slot text, p_max integer, p_advance boolean) RETURNS SETOF bytea
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  publications text := 'fluxbase_realtime_feed';
BEGIN
  IF p_slot !~ '^fluxbase_rt_[a-z0-9_]{1,40}$' THEN
    RAISE EXCEPTION 'not a realtime slot name: %', p_slot USING ERRCODE = 'invalid_parameter_value';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_publication WHERE pubname = 'supabase_realtime') THEN
    publications := publications || ',supabase_realtime';
  END IF;
  IF p_advance AND current_setting('server_version_num')::int >= 160000 THEN
    EXECUTE 'SELECT pg_log_standby_snapshot()';
  END IF;
  RETURN QUERY
  SELECT c.data
  FROM pg_logical_slot_get_binary_changes(p_slot, NULL, p_max, 'proto_version', '1',
    'publication_names', publications, 'messages', 'true') c;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_feed_changes(text, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_feed_changes(text, integer, boolean) TO authenticator;

-- What the proxy needs to know of a streamed table beyond pgoutput's
-- relation message: its primary key's columns and each column's type name
-- and kind ('b' boolean, 'n' number, 'j' JSON, 's' anything else), and
-- whether row level security is on, as {pk: [name…], types: {name:
-- [typname, kind]}, rls}.
CREATE FUNCTION fluxbase.realtime_relation(p_relid oid) RETURNS jsonb
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
SELECT jsonb_build_object(
  'rls', (SELECT c.relrowsecurity FROM pg_class c WHERE c.oid = p_relid),
  'pk', coalesce((
    SELECT jsonb_agg(a.attname ORDER BY k.ord)
    FROM pg_index i
    CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY k(attnum, ord)
    JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
    WHERE i.indrelid = p_relid AND i.indisprimary), '[]'::jsonb),
  'types', coalesce((
    SELECT jsonb_object_agg(a.attname, jsonb_build_array(t.typname,
      CASE WHEN t.oid = 16 THEN 'b'
           WHEN t.oid IN (20, 21, 23, 26, 700, 701, 1700) THEN 'n'
           WHEN t.oid IN (114, 3802) THEN 'j'
           ELSE 's' END))
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped), '{}'::jsonb));
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_relation(oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_relation(oid) TO authenticator;

-- A join's binding on one table, judged as the caller of `p_claims`: the
-- table must exist and the caller's role may SELECT it. Returns {columns:
-- {name: typname}} (for the proxy to check filters against), or {error}.
CREATE FUNCTION fluxbase.realtime_subscription(p_claims jsonb, p_schema text, p_table text) RETURNS jsonb
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  rel oid;
  role text := coalesce(nullif(p_claims->>'role', ''), 'anon');
BEGIN
  SELECT c.oid INTO rel FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE n.nspname = p_schema AND c.relname = p_table AND c.relkind IN ('r', 'p');
  IF rel IS NULL THEN
    RETURN jsonb_build_object('error', format('Unable to subscribe to changes with given parameters. '
      'Table %s.%s does not exist', quote_ident(p_schema), quote_ident(p_table)));
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role)
     OR NOT has_table_privilege(role, rel, 'SELECT') THEN
    RETURN jsonb_build_object('error', format('Unauthorized: role %s may not SELECT from %s.%s',
      role, quote_ident(p_schema), quote_ident(p_table)));
  END IF;
  RETURN jsonb_build_object('columns', (
    SELECT jsonb_object_agg(a.attname, t.typname)
    FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = rel AND a.attnum > 0 AND NOT a.attisdropped));
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_subscription(jsonb, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_subscription(jsonb, text, text) TO authenticator;

-- Which rows of a batch of changes to table `p_relid` each group of
-- subscribers may see. `p_keys` holds the changed rows' primary keys,
-- `[{col: text value}…]`; `p_groups` the groups' claims, `[{role, sub, …}…]`.
-- Per group, one statement as that group (role switched, claims set as for
-- a REST request): the batch's keys joined to the table under its policies.
-- Returns (group, key) pairs, 1-based, and first (0, 1) if the table has row
-- level security on, (0, 0) if not. Without RLS a group sees every row of a
-- table its role may SELECT. A group whose check fails sees nothing. The
-- caller's role is restored at the end.
CREATE FUNCTION fluxbase.realtime_visible(p_relid oid, p_keys jsonb, p_groups jsonb)
RETURNS TABLE (grp integer, idx integer)
LANGUAGE plpgsql VOLATILE
AS $$
DECLARE
  rls boolean;
  target text;
  joined text;
  query text;
  claims jsonb;
  g integer := 0;
  role text;
  caller text := current_setting('role');
  pk_columns integer;
  pk_name text;
  pk_type text;
  single text[];
BEGIN
  SELECT c.relrowsecurity, format('%I.%I', n.nspname, c.relname) INTO rls, target
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = p_relid;
  IF target IS NULL THEN
    RETURN;
  END IF;
  grp := 0; idx := CASE WHEN rls THEN 1 ELSE 0 END;
  RETURN NEXT;
  IF jsonb_array_length(p_keys) = 0 THEN
    RETURN;
  END IF;
  IF NOT rls THEN
    FOR claims IN SELECT value FROM jsonb_array_elements(p_groups) LOOP
      g := g + 1;
      role := coalesce(nullif(claims->>'role', ''), 'anon');
      IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = role) AND has_table_privilege(role, p_relid, 'SELECT') THEN
        RETURN QUERY SELECT g, i::integer FROM generate_series(1, jsonb_array_length(p_keys)) i;
      END IF;
    END LOOP;
    RETURN;
  END IF;
  SELECT string_agg(format('t.%1$I = k.%1$I', a.attname), ' AND ' ORDER BY a.attnum), count(*),
         min(a.attname), min(format_type(a.atttypid, a.atttypmod))
    INTO joined, pk_columns, pk_name, pk_type
  FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
  WHERE i.indrelid = p_relid AND i.indisprimary;
  IF joined IS NULL THEN
    RETURN;
  END IF;
  IF pk_columns = 1 THEN
    -- One key column: the keys become an array of its type once, and each
    -- group's statement probes the key's index with it (about twice as fast
    -- as turning the JSON into rows for every group).
    single := ARRAY(SELECT e.x->>pk_name FROM jsonb_array_elements(p_keys) WITH ORDINALITY e(x, o) ORDER BY e.o);
    query := format('SELECT $2, k.o::integer FROM unnest($1::%s[]) WITH ORDINALITY k(v, o) JOIN %s t ON t.%I = k.v',
      pk_type, target, pk_name);
  ELSE
    query := format('SELECT $2, k.ordinality::integer FROM jsonb_populate_recordset(NULL::%1$s, $1) WITH ORDINALITY k '
      'JOIN %1$s t ON %2$s', target, joined);
  END IF;
  FOR claims IN SELECT value FROM jsonb_array_elements(p_groups) LOOP
    g := g + 1;
    BEGIN
      PERFORM set_config('role', 'none', true);
      PERFORM set_config('request.jwt.claim.sub', '', true), set_config('request.jwt.claim.role', '', true),
        set_config('request.jwt.claim.email', '', true);
      PERFORM fluxbase.authenticate(claims);
      IF pk_columns = 1 THEN
        RETURN QUERY EXECUTE query USING single, g;
      ELSE
        RETURN QUERY EXECUTE query USING p_keys, g;
      END IF;
    EXCEPTION WHEN OTHERS THEN
      RAISE WARNING 'realtime: a group''s visibility check on % failed: %', target, SQLERRM;
    END;
  END LOOP;
  PERFORM set_config('role', 'none', true);
  PERFORM set_config('role', caller, true);
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_visible(oid, jsonb, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_visible(oid, jsonb, jsonb) TO authenticator;

-- The values of TOAST-ed columns an UPDATE did not change, which the WAL
-- does not carry without REPLICA IDENTITY FULL (pgoutput sends 'u' for
-- them): for each of `p_keys` (the updated rows' primary keys, `[{col: text
-- value}…]`), the row's current `p_columns` as text, in that order, with its
-- 1-based position in `p_keys`. Only tables in the publication
-- supabase_realtime (whose rows the feed already carries to the proxy);
-- who may see them is decided by fluxbase.realtime_visible as before.
CREATE FUNCTION fluxbase.realtime_unchanged(p_relid oid, p_keys jsonb, p_columns text[])
RETURNS TABLE (idx integer, vals text[])
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog
AS $$
DECLARE
  target text;
  joined text;
  picked text;
BEGIN
  SELECT format('%I.%I', n.nspname, c.relname) INTO target
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = p_relid
    AND EXISTS (SELECT 1 FROM pg_publication_rel pr JOIN pg_publication p ON p.oid = pr.prpubid
                WHERE p.pubname = 'supabase_realtime' AND pr.prrelid = p_relid
                UNION ALL
                SELECT 1 FROM pg_publication p WHERE p.pubname = 'supabase_realtime' AND p.puballtables);
  IF target IS NULL OR jsonb_array_length(p_keys) = 0 THEN
    RETURN;
  END IF;
  SELECT string_agg(format('t.%1$I = k.%1$I', a.attname), ' AND ' ORDER BY a.attnum) INTO joined
  FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
  WHERE i.indrelid = p_relid AND i.indisprimary;
  SELECT string_agg(coalesce(format('t.%I::text', a.attname), 'NULL::text'), ', ' ORDER BY c.o) INTO picked
  FROM unnest(p_columns) WITH ORDINALITY c(name, o)
  LEFT JOIN pg_attribute a ON a.attrelid = p_relid AND a.attname = c.name AND a.attnum > 0 AND NOT a.attisdropped;
  IF joined IS NULL OR picked IS NULL THEN
    RETURN;
  END IF;
  RETURN QUERY EXECUTE format('SELECT k.ordinality::integer, ARRAY[%s] FROM jsonb_populate_recordset(NULL::%s, $1) '
    'WITH ORDINALITY k JOIN %s t ON %s', picked, target, target, joined) USING p_keys;
END;
$$;
REVOKE ALL ON FUNCTION fluxbase.realtime_unchanged(oid, jsonb, text[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION fluxbase.realtime_unchanged(oid, jsonb, text[]) TO authenticator;
