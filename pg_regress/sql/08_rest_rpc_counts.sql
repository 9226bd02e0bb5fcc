-- RPC (named arguments, GET for stable functions, set-returning functions
-- with filters, scalar, void, single json argument), counts, ranges,
-- singular reads, HEAD and the OpenAPI description.
begin;
create table public.nums (n int primary key, label text);
insert into public.nums select i, 'n' || i from generate_series(1, 25) i;
update public.nums set label = null where n = 1;
analyze public.nums;
grant select on public.nums to anon;
create function public.add(a int, b int default 10) returns int language sql immutable as $$ select a + b $$;
create function public.evens(lim int) returns setof public.nums language sql stable as $$ select * from public.nums where n % 2 = 0 and n <= lim $$;
create function public.pairs() returns table(x int, y text) language sql stable as $$ values (1, 'one'), (2, 'two') $$;
create function public.echo(jsonb) returns jsonb language sql immutable as $$ select $1 $$;
create function public.touch() returns void language sql volatile as $$ select $$;
create function public.bump() returns int language sql volatile as $$ insert into public.nums values (100, 'bumped') returning n $$;
grant execute on all functions in schema public to anon;
grant insert on public.nums to anon;

create function r(method text, path text, body text default null, headers text default '{}') returns table(status int, headers jsonb, body text)
language sql as $$
  select status, headers::jsonb, body from fluxbase.rest(json_build_object('method', method, 'path', split_part(path, '?', 1),
    'query', split_part(path, '?', 2), 'headers', headers::json, 'body', body), '{"role": "anon"}')
$$;

select status, body from r('POST', 'rpc/add', '{"a": 1, "b": 2}');
select status, body from r('POST', 'rpc/add', '{"a": 1}');
select status, body from r('GET', 'rpc/add?a=5');
select status, body from r('GET', 'rpc/evens?lim=10&n=gt.4&select=n&order=n.desc');
select status, body from r('GET', 'rpc/pairs?y=eq.two');
select status, body from r('POST', 'rpc/echo', '{"any": ["json", 1]}');
select status, body from r('POST', 'rpc/touch', '{}');
select status, body from r('POST', 'rpc/nope', '{}');
select status, body from r('POST', 'rpc/add', '{"c": 1}');
-- GET runs read-only, as in PostgREST: a writing function fails with 25006
\set VERBOSITY terse
savepoint s;
select status, body from r('GET', 'rpc/bump');
rollback to s;
\set VERBOSITY default
-- counts, Range, 206, singular
select status, headers, body from r('GET', 'nums?select=n&n=lte.3&order=n', null, '{"prefer": "count=exact"}');
select status, headers ->> 'Content-Range' as range from r('GET', 'nums?select=n&limit=5&offset=10', null, '{"prefer": "count=exact"}');
select status, headers ->> 'Content-Range' as range from r('GET', 'nums?select=n', null, '{"range": "0-4"}');
-- planned: the planner's estimate (exact here, after ANALYZE); estimated: exact below max_rows
select status, headers ->> 'Content-Range' as range, headers ->> 'Preference-Applied' as applied
from r('GET', 'nums?select=n&limit=5', null, '{"prefer": "count=planned"}');
select status, headers ->> 'Content-Range' as range, headers ->> 'Preference-Applied' as applied
from r('GET', 'nums?select=n&limit=5', null, '{"prefer": "count=estimated"}');
select status, body from r('GET', 'nums?select=n&offset=100', null, '{"prefer": "count=exact"}');
select status, headers ->> 'Content-Type' as ct, body from r('GET', 'nums?n=eq.7', null, '{"accept": "application/vnd.pgrst.object+json"}');
select status, body from r('GET', 'nums?n=lt.3', null, '{"accept": "application/vnd.pgrst.object+json"}');
select status, body from r('GET', 'nums?select=n,label&n=eq.1', null, '{"accept": "application/json;nulls=stripped"}');
select status, headers ->> 'Content-Range' as range, body = '' as empty from r('HEAD', 'nums?select=n&n=lte.2');
select status, body from r('GET', 'nums', null, '{"accept": "text/html"}');
-- CSV out; ETag and If-None-Match
select status, headers ->> 'Content-Type' as ct, body from r('GET', 'nums?select=n,label&n=lte.2&order=n', null, '{"accept": "text/csv"}');
select status, headers ->> 'ETag' like 'W/"%"' as weak_etag from r('GET', 'nums?select=n&n=eq.5');
select status, body = '' as empty from r('GET', 'nums?select=n&n=eq.5', null,
  json_build_object('if-none-match', (select headers ->> 'ETag' from r('GET', 'nums?select=n&n=eq.5')))::text);
select status from r('GET', 'nums?select=n&n=eq.5', null, '{"if-none-match": "W/\"0000000000000000deadbeef\""}');
-- PostgREST's in-database settings are honoured when Fluxbase's are unset
set local pgrst.db_max_rows = '3';
select status, headers ->> 'Content-Range' as range, headers ->> 'Warning' as warning from r('GET', 'nums?select=n');
select status, headers ->> 'Warning' is null as no_warning from r('GET', 'nums?select=n&limit=2');
-- OpenAPI
select status, (body::jsonb) ->> 'swagger' as swagger,
       jsonb_path_query_array(body::jsonb, '$.paths.keyvalue().key') as paths,
       (body::jsonb) #> '{definitions,nums,properties,n}' as n
from r('GET', '');
rollback;
