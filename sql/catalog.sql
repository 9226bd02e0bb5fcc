-- The REST schema cache: one statement, one jsonb, for the exposed schemas ($1):
-- tables and views with columns and unique keys, foreign keys, functions.
-- Deserialised by extension/src/schema/mod.rs. No per-table query loops.
SELECT jsonb_build_object(
  'postgis', EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'postgis'),
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
          'generated', a.attgenerated <> '',
          -- What `Prefer: missing=default` puts in a missing key.
          'default', CASE
            WHEN a.attgenerated <> '' OR a.attidentity = 'a' THEN NULL
            -- The identity's sequence found by OID (pg_depend), not by
            -- pg_get_serial_sequence(text), which needs USAGE on the schema.
            WHEN a.attidentity = 'd' THEN (
              SELECT format('nextval(%L::regclass)', format('%I.%I', sn.nspname, s.relname))
              FROM pg_depend dep
              JOIN pg_class s ON s.oid = dep.objid AND s.relkind = 'S'
              JOIN pg_namespace sn ON sn.oid = s.relnamespace
              WHERE dep.classid = 'pg_class'::regclass AND dep.refclassid = 'pg_class'::regclass
                AND dep.refobjid = c.oid AND dep.refobjsubid = a.attnum AND dep.deptype = 'i'
              LIMIT 1)
            ELSE pg_get_expr(ad.adbin, ad.adrelid)
          END
        ) ORDER BY a.attnum), '[]'::jsonb)
        FROM pg_attribute a
        LEFT JOIN pg_attrdef ad ON ad.adrelid = a.attrelid AND ad.adnum = a.attnum
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
    -- Exposed schemas, and the tables their views show (for inferred keys).
    WHERE (n.nspname = ANY($1) OR c.oid IN (
        SELECT d.refobjid
        FROM pg_depend d
        JOIN pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_rewrite'::regclass
        JOIN pg_class vc ON vc.oid = r.ev_class
        JOIN pg_namespace vn ON vn.oid = vc.relnamespace
        WHERE vn.nspname = ANY($1) AND d.refobjid <> r.ev_class))
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
    -- Every schema: a view in an exposed schema may show tables of others.
    WHERE con.contype = 'f' AND ns.nspname NOT IN ('pg_catalog', 'information_schema')
  ),
  -- Where each view column comes from: the parser records the origin table
  -- and column of every target entry (resorigtbl/resorigcol) in the view's
  -- stored query. An origin may itself be a view; the extension follows the
  -- chain. Entries of subqueries can match too: the name must match the view
  -- column's, and a column with two different origins is dropped.
  'view_columns', (
    SELECT coalesce(jsonb_agg(DISTINCT jsonb_build_object(
      'schema', vn.nspname, 'view', v.relname, 'column', va.attname,
      'origin_schema', bn.nspname, 'origin_table', b.relname, 'origin_column', ba.attname
    )), '[]'::jsonb)
    FROM pg_class v
    JOIN pg_namespace vn ON vn.oid = v.relnamespace
    JOIN pg_rewrite r ON r.ev_class = v.oid AND r.rulename = '_RETURN'
    CROSS JOIN LATERAL regexp_matches(r.ev_action::text,
      ':resno (\d+) :resname ((?:[^\s\\]|\\.)+) :ressortgroupref \d+ :resorigtbl (\d+) :resorigcol (\d+)', 'g') AS m
    JOIN pg_attribute va ON va.attrelid = v.oid AND va.attnum = m[1]::int
      AND va.attname = regexp_replace(m[2], '\\(.)', '\1', 'g')
    JOIN pg_class b ON b.oid = m[3]::oid
    JOIN pg_namespace bn ON bn.oid = b.relnamespace
    JOIN pg_attribute ba ON ba.attrelid = b.oid AND ba.attnum = m[4]::int
    WHERE v.relkind IN ('v', 'm') AND vn.nspname NOT IN ('pg_catalog', 'information_schema')
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
      -- The row type of a table or view: the result embeds like that table.
      'returns_table', (
        SELECT jsonb_build_object('schema', rn.nspname, 'name', rc.relname)
        FROM pg_class rc JOIN pg_namespace rn ON rn.oid = rc.relnamespace
        WHERE rc.oid = t.typrelid AND rc.relkind IN ('r', 'v', 'm', 'f', 'p')),
      -- The one argument is a table's (or view's) row type: a computed field
      -- (`tbl.fn` in SQL), or, returning rows of a table, a computed
      -- relationship (embedded as `fn(...)`).
      'row_arg', (
        SELECT jsonb_build_object('schema', an.nspname, 'name', ac.relname)
        FROM pg_type at
        JOIN pg_class ac ON ac.oid = at.typrelid
        JOIN pg_namespace an ON an.oid = ac.relnamespace
        WHERE p.pronargs = 1 AND at.oid = p.proargtypes[0] AND ac.relkind IN ('r', 'v', 'm', 'f', 'p')),
      'return_type', format_type(p.prorettype, NULL),
      -- To-one as a computed relationship: not SETOF, or `ROWS 1`.
      'single_row', NOT p.proretset OR p.prorows = 1,
      'volatility', p.provolatile::text
    ) ORDER BY n.nspname, p.proname, p.oid), '[]'::jsonb)
    FROM pg_proc p
    JOIN pg_namespace n ON n.oid = p.pronamespace
    JOIN pg_type t ON t.oid = p.prorettype
    WHERE n.nspname = ANY($1) AND p.prokind = 'f'
  )
)
