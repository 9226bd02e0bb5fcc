-- Postgres changes under RLS (sql/realtime_changes.sql): which rows of a
-- batch each group of subscribers may see, one statement per group as that
-- group; a table without RLS only needs the role's SELECT privilege; a
-- group whose check fails sees nothing; what the proxy learns of a table;
-- how a join's binding is judged.
\set VERBOSITY terse
BEGIN;
SELECT pubname FROM pg_publication WHERE pubname = 'supabase_realtime';
CREATE TABLE public.rt60 (id bigint PRIMARY KEY, owner uuid, title text, done boolean, meta jsonb);
ALTER TABLE public.rt60 ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON public.rt60 FOR SELECT TO authenticated USING (owner = auth.uid());
CREATE POLICY broken ON public.rt60 FOR SELECT TO anon USING (1 / (id - id) = 1);
GRANT SELECT ON public.rt60 TO authenticated, anon;
INSERT INTO public.rt60 VALUES
  (1, '5a0e4f3c-1b6f-4c57-9f0e-6b1d7f2f1a01', 'ada', false, NULL),
  (2, '9c4b7d2e-8a31-4f0d-b6a5-3e2c1d0f9b02', 'grace', true, '{}'),
  (3, '5a0e4f3c-1b6f-4c57-9f0e-6b1d7f2f1a01', 'ada again', false, NULL);
CREATE TABLE public.rt60_open (id int PRIMARY KEY, body text);
GRANT SELECT ON public.rt60_open TO authenticated;

SELECT fluxbase.realtime_relation('public.rt60'::regclass) AS relation;

SET LOCAL ROLE authenticator;
-- Group 1 is ada, group 2 grace, group 3 anon (its policy raises: nothing),
-- keys 1..4 are rows 1, 2, 3 and a row that no longer exists.
SELECT grp, idx FROM fluxbase.realtime_visible('public.rt60'::regclass,
  '[{"id": "1"}, {"id": "2"}, {"id": "3"}, {"id": "99"}]',
  '[{"role": "authenticated", "sub": "5a0e4f3c-1b6f-4c57-9f0e-6b1d7f2f1a01"},
    {"role": "authenticated", "sub": "9c4b7d2e-8a31-4f0d-b6a5-3e2c1d0f9b02"},
    {"role": "anon"}]') ORDER BY grp, idx;
SELECT current_user AS back_as;
-- No RLS: every key for a role with SELECT, none for one without.
SELECT grp, idx FROM fluxbase.realtime_visible('public.rt60_open'::regclass, '[{"id": "1"}, {"id": "2"}]',
  '[{"role": "authenticated"}, {"role": "anon"}]') ORDER BY grp, idx;

-- A join's binding.
SELECT fluxbase.realtime_subscription('{"role": "authenticated"}', 'public', 'rt60_open') AS columns;
SELECT fluxbase.realtime_subscription('{"role": "anon"}', 'public', 'rt60_open') AS no_privilege;
SELECT fluxbase.realtime_subscription('{"role": "anon"}', 'public', 'nope') AS no_table;
ROLLBACK;
