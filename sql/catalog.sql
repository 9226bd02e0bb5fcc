-- The REST schema cache: one statement, one jsonb, for the exposed schemas ($1).
-- Deserialised by extension/src/schema/mod.rs. No per-table query loops.
SELECT coalesce(jsonb_agg(jsonb_build_object(
  'schema', n.nspname,
  'name', c.relname,
  'kind', c.relkind::text,
  'columns', (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
      'name', a.attname,
      'type', format_type(a.atttypid, NULL),
      'nullable', NOT a.attnotnull,
      'has_default', a.atthasdef
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
  )
) ORDER BY n.nspname, c.relname), '[]'::jsonb)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = ANY($1)
  AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
