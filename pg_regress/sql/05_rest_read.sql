-- fluxbase.rest(): GET requests in, status/headers/body out, under RLS.
begin;
create table public.todos (
  id int primary key,
  user_id uuid not null,
  title text not null,
  done boolean not null default false
);
alter table public.todos enable row level security;
create policy todos_owner on public.todos for select using (user_id = auth.uid());
grant select on public.todos to anon, authenticated, service_role;
insert into public.todos values
  (1, '11111111-1111-1111-1111-111111111111', 'write tests', true),
  (2, '11111111-1111-1111-1111-111111111111', 'ship it', false),
  (3, '33333333-3333-3333-3333-333333333333', 'someone else''s', false);

-- Anonymous: the policy hides every row.
savepoint s;
select status, headers, body from fluxbase.rest('{"method": "GET", "path": "todos", "query": "select=*"}', '{"role": "anon"}');
rollback to s;

-- A signed-in user sees their rows; filters, order, select with alias.
savepoint s;
select status, headers, body from fluxbase.rest(
  '{"method": "GET", "path": "todos", "query": "select=id,task:title&done=is.false&order=id.desc"}',
  '{"role": "authenticated", "sub": "11111111-1111-1111-1111-111111111111"}');
rollback to s;

savepoint s;
select status, body from fluxbase.rest(
  '{"method": "GET", "path": "todos", "query": "select=id&id=in.(1,2,3)&order=id&limit=1&offset=1"}',
  '{"role": "service_role"}');
rollback to s;

savepoint s;
select status, body from fluxbase.rest(
  '{"method": "GET", "path": "todos", "query": "select=title&title=ilike.*IT*&id=not.eq.2"}',
  '{"role": "service_role"}');
rollback to s;

-- Errors are responses with PostgREST's codes, never silent.
select status, body from fluxbase.rest('{"method": "GET", "path": "nope", "query": ""}', '{"role": "anon"}');
select status, body from fluxbase.rest('{"method": "GET", "path": "todos", "query": "id=equals.1"}', '{"role": "anon"}');
select status, body from fluxbase.rest('{"method": "GET", "path": "todos", "query": "select=id,nope"}', '{"role": "anon"}');
select status, body from fluxbase.rest('{"method": "GET", "path": "todos", "query": "limit=ten"}', '{"role": "anon"}');
select status, body from fluxbase.rest('{"method": "GET", "path": "todos", "headers": {"accept-profile": "private"}}', '{"role": "anon"}');
select status, body from fluxbase.rest('{"method": "TRACE", "path": "todos"}', '{"role": "anon"}');

-- A value of the wrong type is Postgres' own 22P02, raised for the proxy to map.
\set VERBOSITY terse
select status from fluxbase.rest('{"method": "GET", "path": "todos", "query": "id=eq.abc"}', '{"role": "service_role"}');
rollback;
