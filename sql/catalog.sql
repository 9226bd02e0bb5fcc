-- The REST schema cache: one statement, one jsonb, for the exposed schemas ($1):
-- tables and views with columns and unique keys, foreign keys, functions.
-- Deserialised by extension/src/schema/mod.rs. No per-table query loops.
SELECT jsonb_build_object(
  'tables', (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
      'schema', n.nspname,
      'name', c.relname,
      'kind', c.relkind::text,
      'comment', obj_description(c.oid, 'pg_class'),
      'columns', (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
          'name', a.attname,
          'type', format_type(a.atttypid, NULL),
          'nullable', NOT a.attnotnull,
          'has_default', a.atthasdef OR a.attidentity <> '',
          'generated', a.attgenerated <> ''
        ) ORDER BY a.attnum), '[]'::jsonb)
        FROM pg_attribute a
        WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      ),
      'primary_key', (
        SELECT coalesce(jsonb_agg(a.attname ORDER BY k.ord), '[]'::jsonb)
        FROM pg_constraint con
        CROSS JOIN LATERAL unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
        WHERE con.conrelid = c.oid AND con.contype = 'p'
      ),
      'unique_keys', (
        SELECT coalesce(jsonb_agg((
          SELECT jsonb_agg(a.attname ORDER BY a.attname)
          FROM unnest(con.conkey) AS k(attnum)
          JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
        )), '[]'::jsonb)
        FROM pg_constraint con
        WHERE con.conrelid = c.oid AND con.contype IN ('p', 'u')
      )
    ) ORDER BY n.nspname, c.relname), '[]'::jsonb)
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = ANY($1)
      AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
  ),
  'foreign_keys', (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
      'name', con.conname,
      'schema', ns.nspname,
      'table', cl.relname,
      'columns', (
        SELECT jsonb_agg(a.attname ORDER BY k.ord)
        FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum
      ),
      'foreign_schema', fns.nspname,
      'foreign_table', fcl.relname,
      'foreign_columns', (
        SELECT jsonb_agg(a.attname ORDER BY k.ord)
        FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum
      )
    ) ORDER BY ns.nspname, cl.relname, con.conname), '[]'::jsonb)
    FROM pg_constraint con
    JOIN pg_class cl ON cl.oid = con.conrelid
    JOIN pg_namespace ns ON ns.oid = cl.relnamespace
    JOIN pg_class fcl ON fcl.oid = con.confrelid
    JOIN pg_namespace fns ON fns.oid = fcl.relnamespace
    WHERE con.contype = 'f' AND (ns.nspname = ANY($1) OR fns.nspname = ANY($1))
  ),
  'functions', (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
      'schema', n.nspname,
      'name', p.proname,
      'args', (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
          'name', coalesce(a.name, ''),
          'type', format_type(a.type, NULL)
        ) ORDER BY a.ord), '[]'::jsonb)
        FROM unnest(
          coalesce(p.proallargtypes, p.proargtypes::oid[]),
          coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs::int])),
          p.proargnames
        ) WITH ORDINALITY AS a(type, mode, name, ord)
        WHERE a.mode IN ('i', 'b', 'v')
      ),
      'defaults', p.pronargdefaults,
      'returns_set', p.proretset,
      'returns_composite', p.prorettype = 'record'::regtype OR t.typtype = 'c',
      'returns_void', p.prorettype = 'void'::regtype,
      'result_columns', CASE
        WHEN p.prorettype = 'record'::regtype THEN (
          SELECT jsonb_agg(jsonb_build_object('name', a.name, 'type', format_type(a.type, NULL)) ORDER BY a.ord)
          FROM unnest(p.proallargtypes, p.proargmodes, p.proargnames) WITH ORDINALITY AS a(type, mode, name, ord)
          WHERE a.mode IN ('o', 'b', 't'))
        WHEN t.typtype = 'c' THEN (
          SELECT jsonb_agg(jsonb_build_object('name', att.attname, 'type', format_type(att.atttypid, NULL)) ORDER BY att.attnum)
          FROM pg_attribute att
          WHERE att.attrelid = t.typrelid AND att.attnum > 0 AND NOT att.attisdropped)
      END,
      'volatility', p.provolatile::text
    ) ORDER BY n.nspname, p.proname, p.oid), '[]'::jsonb)
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_type t ON t.oid = p.prorettype
    WHERE n.nspname = ANY($1) AND p.prokind = 'f'
  )
)
