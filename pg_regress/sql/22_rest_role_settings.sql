-- Per-role settings, as Supabase has them: Postgres applies ALTER ROLE … SET
-- only at login, never on SET ROLE, so the engine applies the request role's
-- settings itself, transaction-locally (PostgREST's "impersonated role
-- settings"), and arms statement_timeout anew. The extension gives anon 3s
-- and authenticated 8s when it creates those roles.
begin;
select r.rolname, s.setconfig
from pg_db_role_setting s join pg_roles r on r.oid = s.setrole
where r.rolname in ('anon', 'authenticated', 'service_role') and s.setdatabase = 0
order by 1;

create function public.setting(name text) returns text language sql stable as $$ select current_setting(name) $$;
create function public.nap(seconds float) returns int language sql volatile as $$ select 1 from pg_sleep(seconds) $$;
grant execute on function public.setting(text), public.nap(float) to anon, authenticated, service_role;
create role fb_impatient nologin;
alter role fb_impatient set statement_timeout = '200ms';
alter role fb_impatient set work_mem = '5MB';
do $$ begin execute format('alter role fb_impatient in database %I set work_mem = %L', current_database(), '6MB'); end $$;
grant execute on function public.setting(text), public.nap(float) to fb_impatient;

create function r(role text, path text) returns table(status int, body text) language sql as $$
  select status, body from fluxbase.rest(json_build_object('method', 'GET', 'path', split_part(path, '?', 1),
    'query', split_part(path, '?', 2)), json_build_object('role', role))
$$;

-- each role's own settings, for the request only
savepoint s;
select status, body from r('anon', 'rpc/setting?name=statement_timeout');
rollback to s;
savepoint s;
select status, body from r('authenticated', 'rpc/setting?name=statement_timeout');
rollback to s;
savepoint s;
select status, body from r('service_role', 'rpc/setting?name=statement_timeout');
rollback to s;
-- this database's setting wins over the cluster-wide one
savepoint s;
select status, body from r('fb_impatient', 'rpc/setting?name=work_mem');
rollback to s;
select current_setting('statement_timeout') as session_unchanged;

-- the timeout applies to the request's statement, which had already started
\set VERBOSITY terse
savepoint s;
select status from r('fb_impatient', 'rpc/nap?seconds=5');
rollback to s;
\set VERBOSITY default
savepoint s;
select status, body from r('fb_impatient', 'rpc/nap?seconds=0');
rollback to s;
rollback;
