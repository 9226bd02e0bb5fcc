-- Hardening: the OpenAPI description listed tables and columns the caller
-- has no privileges on (anon saw a payroll table's salary, ssn and comment).
-- It follows the role's privileges, as PostgREST's default openapi-mode
-- follow-privileges: tables it may use, the columns it may select, insert or
-- update, the operations it may do, the functions it may execute.
begin;
create table public.payroll (id int primary key, name text not null, salary numeric not null, ssn text not null);
comment on table public.payroll is 'salaries and social security numbers';
create table public.menu (id int primary key, dish text);
grant select on public.menu to anon, authenticated;
grant select (id, name), update (name) on public.payroll to authenticated;
create function public.raise_salary(pct int) returns void language sql volatile as $$ select $$;
create function public.dish_count() returns bigint language sql stable as $$ select count(*) from public.menu $$;
revoke execute on function public.raise_salary(int) from public;
revoke execute on function public.dish_count() from public;
grant execute on function public.dish_count() to anon, authenticated;

create function openapi(role text) returns jsonb language sql as $$
  select body::jsonb from fluxbase.rest('{"method": "GET", "path": ""}', json_build_object('role', role))
$$;

-- anon: the menu and the function it may call; nothing of payroll
select jsonb_path_query_array(openapi('anon'), '$.paths.keyvalue().key') as paths,
       jsonb_path_query_array(openapi('anon'), '$.definitions.keyvalue().key') as definitions,
       openapi('anon')::text ~ '(salary|ssn|social security|raise_salary)' as leaks;
select jsonb_path_query_array(openapi('anon'), '$.paths."/menu".keyvalue().key') as menu_operations;
-- authenticated: payroll's granted columns, read and update only
select jsonb_path_query_array(openapi('authenticated'), '$.definitions.payroll.properties.keyvalue().key') as payroll_columns,
       jsonb_path_query_array(openapi('authenticated'), '$.paths."/payroll".keyvalue().key') as payroll_operations,
       openapi('authenticated')::text ~ '(salary|ssn)' as leaks;
-- a role that may do everything sees everything
select jsonb_path_query_array(openapi('postgres'), '$.definitions.payroll.properties.keyvalue().key') as payroll_columns,
       openapi('postgres') #>> '{definitions,payroll,description}' as comment,
       openapi('postgres') -> 'paths' ? '/rpc/raise_salary' as raise_salary;
rollback;
