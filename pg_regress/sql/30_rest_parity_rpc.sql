-- PostgREST 14 parity of RPC (issue 13): max-affected on functions,
-- one unnamed parameter with a raw body, ambiguous overloads (PGRST203),
-- count=exact on scalar and set-returning functions, PGRST202's and
-- PGRST116's wording.
begin;
create table public.p30_items (id int primary key, label text);
insert into public.p30_items select i, 'item ' || i from generate_series(1, 5) i;
grant select, delete on public.p30_items to anon;
create function public.p30_purge(below int) returns setof public.p30_items language sql volatile as
  $$ delete from public.p30_items where id < below returning * $$;
create function public.p30_count_purge(below int) returns int language sql volatile as
  $$ with d as (delete from public.p30_items where id < below returning 1) select count(*)::int from d $$;
create function public.p30_ids() returns setof int language sql stable as $$ select generate_series(1, 4) $$;
create function public.p30_answer() returns int language sql stable as $$ select 42 $$;
create function public.p30_shout(text) returns text language sql immutable as $$ select upper($1) $$;
create function public.p30_size(bytea) returns int language sql immutable as $$ select length($1) $$;
create function public.p30_over() returns text language sql stable as $$ select 'none' $$;
create function public.p30_over(a text default 'x') returns text language sql stable as $$ select a $$;
create function public.p30_greet(name text, punct text default '!') returns text language sql stable as $$ select name || punct $$;
grant execute on all functions in schema public to anon;

create function r(method text, path text, body text default null, headers text default '{}') returns table(status int, headers jsonb, body text)
language sql as $$
  select status, headers::jsonb, body from fluxbase.rest(json_build_object('method', method, 'path', split_part(path, '?', 1),
    'query', split_part(path, '?', 2), 'headers', headers::json, 'body', body), '{"role": "anon"}')
$$;

-- max-affected on a set-returning function: more rows than allowed is
-- 400 PGRST124 and nothing is deleted; within the limit it runs.
select status, body from r('POST', 'rpc/p30_purge', '{"below": 4}', '{"prefer": "handling=strict, max-affected=2"}');
select count(*) as still_five from public.p30_items;
select status, body from r('POST', 'rpc/p30_purge?select=id', '{"below": 3}', '{"prefer": "handling=strict, max-affected=2"}');
select count(*) as three_left from public.p30_items;
-- lenient handling ignores max-affected
select status, body from r('POST', 'rpc/p30_purge?select=id', '{"below": 4}', '{"prefer": "max-affected=0"}');
-- not a set-returning function: 400 PGRST128, nothing runs
select status, body from r('POST', 'rpc/p30_count_purge', '{"below": 10}', '{"prefer": "handling=strict, max-affected=1"}');
select count(*) as two_left from public.p30_items;

-- one unnamed parameter, raw bodies
select status, body from r('POST', 'rpc/p30_shout', 'hello there', '{"content-type": "text/plain"}');
select status, body from r('POST', 'rpc/p30_size', '\x00ff10', '{"content-type": "application/octet-stream"}');
-- no function with an unnamed text parameter: PGRST202 in PostgREST's words
select status, body from r('POST', 'rpc/p30_size', 'abc', '{"content-type": "text/plain"}');
-- (xml bodies work the same way with an xml argument; no xml function here:
-- a server built without libxml cannot read xml)
select status, body from r('POST', 'rpc/p30_size', '<a/>', '{"content-type": "text/xml"}');

-- count=exact on a set-returning function called by POST
select status, headers ->> 'Content-Range' as range, body from r('POST', 'rpc/p30_purge?select=id', '{"below": 0}', '{"prefer": "count=exact"}');

-- ambiguous overloads: 300 PGRST203 with the candidates
select status, body from r('POST', 'rpc/p30_over', '{}');
select status, body from r('GET', 'rpc/p30_over');
select status, body from r('GET', 'rpc/p30_over?a=y');

-- count=exact on scalar and set-returning functions
select status, headers ->> 'Content-Range' as range, body from r('GET', 'rpc/p30_ids', null, '{"prefer": "count=exact"}');
select status, headers ->> 'Content-Range' as range, body from r('GET', 'rpc/p30_ids?limit=2', null, '{"prefer": "count=exact"}');
select status, headers ->> 'Content-Range' as range, body from r('GET', 'rpc/p30_answer', null, '{"prefer": "count=exact"}');
-- count=planned on a function: no total; estimated: counted (PostgREST's shouldCount)
select status, headers ->> 'Content-Range' as range from r('GET', 'rpc/p30_ids', null, '{"prefer": "count=planned"}');
select status, headers ->> 'Content-Range' as range from r('GET', 'rpc/p30_ids', null, '{"prefer": "count=estimated"}');
select status, headers ->> 'Content-Type' as ct, body from r('GET', 'rpc/p30_ids?offset=2', null, '{"accept": "text/csv"}');
-- one scalar as CSV: PostgREST's pgrst_scalar column
select status, headers ->> 'Content-Type' as ct, body from r('GET', 'rpc/p30_answer', null, '{"accept": "text/csv"}');
select status, headers ->> 'Content-Type' as ct, body from r('GET', 'rpc/p30_greet?name=a,%20b', null, '{"accept": "text/csv"}');

-- PGRST202: details and hint in PostgREST's wording
select status, body from r('POST', 'rpc/p30_gret', '{"name": "a"}');
select status, body from r('POST', 'rpc/p30_greet', '{"nam": "a"}');
select status, body from r('GET', 'rpc/p30_greet?nam=a&punct=.');
select status, body from r('GET', 'rpc/p30_nothing_like_it');
select status, body from r('POST', 'rpc/p30_nothing_like_it', '{}');

-- PGRST116
select status, body from r('GET', 'p30_items', null, '{"accept": "application/vnd.pgrst.object+json"}');
select status, body from r('GET', 'p30_items?id=eq.99', null, '{"accept": "application/vnd.pgrst.object+json"}');
rollback;
