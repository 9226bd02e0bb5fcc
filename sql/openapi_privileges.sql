-- What the current role may use in the schema $1, for the OpenAPI
-- description (PostgREST's openapi-mode follow-privileges): tables and views
-- with the columns it may select, insert or update and whether it may
-- delete, and the functions it may execute (name and input argument types,
-- as sql/catalog.sql lists them). Run after the request's role switch, by
-- extension/src/schema_cache.rs.
SELECT jsonb_build_object(
  'tables', (
    SELECT coalesce(jsonb_object_agg(c.relname, jsonb_build_object(
      'select', (SELECT coalesce(jsonb_agg(a.attname ORDER BY a.attnum), '[]'::jsonb) FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND has_column_privilege(c.oid, a.attnum, 'SELECT')),
      'insert', (SELECT coalesce(jsonb_agg(a.attname ORDER BY a.attnum), '[]'::jsonb) FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND has_column_privilege(c.oid, a.attnum, 'INSERT')),
      'update', (SELECT coalesce(jsonb_agg(a.attname ORDER BY a.attnum), '[]'::jsonb) FROM pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
                   AND has_column_privilege(c.oid, a.attnum, 'UPDATE')),
      'delete', has_table_privilege(c.oid, 'DELETE')
    )), '{}'::jsonb)
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relkind IN ('r', 'v', 'm', 'f', 'p')
      AND has_schema_privilege(n.oid, 'USAGE')
      AND (has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')
           OR has_any_column_privilege(c.oid, 'SELECT, INSERT, UPDATE'))
  ),
  'functions', (
    SELECT coalesce(jsonb_agg(jsonb_build_object(
      'name', p.proname,
      'args', (
        SELECT coalesce(jsonb_agg(format_type(a.type, NULL) ORDER BY a.ord), '[]'::jsonb)
        FROM unnest(
          coalesce(p.proallargtypes, p.proargtypes::oid[]),
          coalesce(p.proargmodes, array_fill('i'::"char", ARRAY[p.pronargs::int]))
        ) WITH ORDINALITY AS a(type, mode, ord)
        WHERE a.mode IN ('i', 'b', 'v')
      )
    )), '[]'::jsonb)
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname = $1 AND p.prokind = 'f'
      AND has_schema_privilege(n.oid, 'USAGE')
      AND has_function_privilege(p.oid, 'EXECUTE')
  )
)
