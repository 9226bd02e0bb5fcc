-- Hardening (issue "Hardening"): one anonymous GET repeating a column 400
-- times over a 52k-row table made the proxy allocate gigabytes. Reads are
-- capped at 1000 rows by default (fluxbase.max_rows, as Supabase), select
-- items at fluxbase.max_select_items, the body at fluxbase.max_response_bytes;
-- a NUL in a name is refused while parsing, before any SQL is written.
begin;
create table public.many (id int primary key, label text);
insert into public.many select i, 'label ' || i from generate_series(1, 1500) i;
grant select, insert on public.many to anon;

create function r(method text, path text, body text default null, headers text default '{}') returns table(status int, headers jsonb, body text)
language sql as $$
  select status, headers::jsonb, body from fluxbase.rest(json_build_object('method', method, 'path', split_part(path, '?', 1),
    'query', split_part(path, '?', 2), 'headers', headers::json, 'body', body), '{"role": "anon"}')
$$;

-- a write whose representation is past fluxbase.max_response_bytes fails
-- with 54000 and is rolled back with it (first: reads make the transaction
-- read-only)
set local fluxbase.max_response_bytes = 2000;
\set VERBOSITY terse
savepoint s;
select status from r('POST', 'many?select=id,label',
  (select json_agg(json_build_object('id', 10000 + i, 'label', repeat('x', 50)))::text from generate_series(1, 100) i),
  '{"prefer": "return=representation"}');
rollback to s;
\set VERBOSITY default
select count(*) as not_written from public.many where id > 10000;
reset fluxbase.max_response_bytes;

-- the defaults
select current_setting('fluxbase.max_rows') as max_rows,
       current_setting('fluxbase.max_select_items') as max_select_items,
       current_setting('fluxbase.max_response_bytes') as max_response_bytes;

-- 1000 rows at most, and the page says the server's limit cut it
select status, headers ->> 'Content-Range' as range, headers ->> 'Warning' as warning,
       json_array_length(body::json) as rows
from r('GET', 'many?select=id&order=id');
select status, headers ->> 'Content-Range' as range, json_array_length(body::json) as rows
from r('GET', 'many?select=id&order=id', null, '{"prefer": "count=exact"}');
-- pgrst.db_max_rows wins where it is set; fluxbase.max_rows = 0 lifts the cap
set local pgrst.db_max_rows = '7';
select status, headers ->> 'Warning' as warning, json_array_length(body::json) as rows from r('GET', 'many?select=id');
set local pgrst.db_max_rows = '';
reset role;  -- each request leaves the transaction in its role
set local fluxbase.max_rows = 0;
select status, headers ->> 'Warning' is null as no_warning, json_array_length(body::json) as rows from r('GET', 'many?select=id');
reset role;
reset fluxbase.max_rows;

-- select items: 100 pass, 101 are refused (embedded items count)
select status from r('GET', 'many?limit=1&select=' || (select string_agg('id', ',') from generate_series(1, 100)));
select status, body::jsonb ->> 'code' as code, body::jsonb ->> 'message' as message
from r('GET', 'many?limit=1&select=' || (select string_agg('id', ',') from generate_series(1, 400)));
reset role;
set local fluxbase.max_select_items = 2;
select status, body::jsonb ->> 'message' as message from r('GET', 'many?limit=1&select=id,many(id)');
reset role;
reset fluxbase.max_select_items;

-- the response body: past the cap the request fails with 54000, nothing is
-- returned, and a write that produced it is rolled back
reset role;
set local fluxbase.max_response_bytes = 2000;
select status, length(body) as bytes from r('GET', 'many?select=id&limit=100');
\set VERBOSITY terse
savepoint s;
select status from r('GET', 'many?select=id,label&limit=100');
rollback to s;
savepoint s;
select status from r('GET', 'many?select=id,label&limit=200', null, '{"accept": "text/csv"}');
rollback to s;
\set VERBOSITY default
do $$ begin
  perform r('GET', 'many?select=id,label&limit=100');
exception when program_limit_exceeded then
  raise notice 'refused with %', sqlstate;
end $$;
reset role;
reset fluxbase.max_response_bytes;

-- NUL in an identifier, alias or JSON key: 400 PGRST100, no SQL in the answer
select status, body::jsonb ->> 'code' as code, body::jsonb ->> 'message' as message from r('GET', 'many?select=x%00:id');
select status, body::jsonb ->> 'code' as code from r('GET', 'many?select=id,label->a%00b');
select status, body::jsonb ->> 'code' as code from r('GET', 'many?order=id%00.desc');
select status, body::jsonb ->> 'code' as code from r('POST', 'many', '{"id": 1, "la\u0000bel": "x"}');
rollback;
