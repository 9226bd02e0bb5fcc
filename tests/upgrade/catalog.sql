-- What an installed Fluxbase consists of, in a stable text form: run on a
-- database upgraded from an older release and on a fresh one, the two
-- outputs must be equal (scripts/test.sh, run_upgrade).
\pset format unaligned
\pset tuples_only on
\pset footer off

\echo == version
SELECT extversion FROM pg_extension WHERE extname = 'fluxbase';

\echo == extension members
SELECT pg_describe_object(classid, objid, objsubid)
FROM pg_depend
WHERE refclassid = 'pg_extension'::regclass
  AND refobjid = (SELECT oid FROM pg_extension WHERE extname = 'fluxbase')
  AND deptype = 'e'
ORDER BY 1;

\echo == tables dumped with their rows (pg_extension_config_dump)
SELECT c::regclass::text, coalesce(cond, '')
FROM pg_extension e, unnest(e.extconfig, e.extcondition) AS x(c, cond)
WHERE e.extname = 'fluxbase'
ORDER BY 1;

\echo == functions: definition and privileges
SELECT p.oid::regprocedure::text, md5(pg_get_functiondef(p.oid)), coalesce(p.proacl::text, '')
FROM pg_proc p
WHERE p.pronamespace IN ('fluxbase'::regnamespace, 'auth'::regnamespace)
ORDER BY 1;

\echo == relations: kind, persistence, row security, privileges
SELECT c.oid::regclass::text, c.relkind, c.relpersistence, c.relrowsecurity, coalesce(c.relacl::text, '')
FROM pg_class c
WHERE c.relnamespace IN ('fluxbase'::regnamespace, 'auth'::regnamespace)
ORDER BY 1;

\echo == columns
SELECT table_schema, table_name, ordinal_position, column_name, data_type, coalesce(character_maximum_length, 0),
       coalesce(column_default, ''), is_nullable, is_generated, coalesce(generation_expression, '')
FROM information_schema.columns
WHERE table_schema IN ('fluxbase', 'auth')
ORDER BY 1, 2, 3;

\echo == indexes
SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE c.relnamespace IN ('fluxbase'::regnamespace, 'auth'::regnamespace)
ORDER BY 1;

\echo == constraints
SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
FROM pg_constraint
WHERE connamespace IN ('fluxbase'::regnamespace, 'auth'::regnamespace)
ORDER BY 1, 2;

\echo == policies and triggers
SELECT schemaname, tablename, policyname, permissive, roles::text, cmd, coalesce(qual, ''), coalesce(with_check, '')
FROM pg_policies WHERE schemaname IN ('fluxbase', 'auth') ORDER BY 1, 2, 3;
SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid)
FROM pg_trigger
WHERE NOT tgisinternal AND tgrelid IN (SELECT oid FROM pg_class WHERE relnamespace IN ('fluxbase'::regnamespace, 'auth'::regnamespace))
ORDER BY 1, 2;
SELECT evtname, evtevent, evtfoid::regproc::text, evtenabled, coalesce(evttags::text, '') FROM pg_event_trigger ORDER BY 1;

\echo == types
SELECT t.oid::regtype::text, e.enumsortorder, e.enumlabel
FROM pg_enum e JOIN pg_type t ON t.oid = e.enumtypid
WHERE t.typnamespace IN ('fluxbase'::regnamespace, 'auth'::regnamespace)
ORDER BY 1, 2;

\echo == schemas
SELECT nspname, coalesce(nspacl::text, '') FROM pg_namespace WHERE nspname IN ('fluxbase', 'auth', 'public') ORDER BY 1;

\echo == roles
SELECT rolname, rolsuper, rolinherit, rolcanlogin, rolbypassrls FROM pg_roles
WHERE rolname IN ('anon', 'authenticated', 'service_role', 'authenticator') ORDER BY 1;
SELECT r.rolname, m.rolname FROM pg_auth_members a JOIN pg_roles r ON r.oid = a.roleid JOIN pg_roles m ON m.oid = a.member
WHERE m.rolname = 'authenticator' ORDER BY 1;
