-- PostgREST's db-pre-request and response GUCs: a function every request
-- calls first, as its role (fluxbase.pre_request, else pgrst.db_pre_request),
-- which may refuse the request or set headers; response.status and
-- response.headers set by the SQL a request runs shape its response.
begin;
create table public.notes (id int primary key, body text);
insert into public.notes values (1, 'one'), (2, 'two');
grant select, insert on public.notes to anon;
create function public.check_request() returns void language plpgsql as $$
begin
  if current_setting('request.headers', true)::json->>'x-blocked' = 'yes' then
    raise sqlstate 'PGRST' using message = '{"code":"B001","message":"Blocked","hint":"Go away"}',
      detail = '{"status":403,"headers":{"X-Why":"blocked"}}';
  end if;
  perform set_config('response.headers', json_build_array(json_build_object('X-Role', current_user),
    json_build_object('Cache-Control', 'max-age=60'))::text, true);
end $$;
create function public.created(n int) returns int language plpgsql as $$
begin
  perform set_config('response.status', '201', true);
  perform set_config('response.headers', '[{"Location": "/notes/9"}, {"Set-Cookie": "a=1"}, {"Set-Cookie": "b=2"}]', true);
  return n;
end $$;
create function public.bad_status() returns int language plpgsql as $$
begin perform set_config('response.status', 'teapot', true); return 1; end $$;
create function public.bad_headers() returns int language plpgsql as $$
begin perform set_config('response.headers', '{"X-A": "b"}', true); return 1; end $$;
create function public.on_insert() returns trigger language plpgsql as $$
begin perform set_config('response.headers', '[{"X-Inserted": "' || new.id || '"}]', true); return new; end $$;
create trigger notes_inserted after insert on public.notes for each row execute function public.on_insert();
grant execute on all functions in schema public to anon;

create function r(method text, path text, headers json default '{}', body text default null)
returns table(status int, headers json, body text) language sql as $$
  select status, headers, body from fluxbase.rest(json_build_object('method', method, 'path', split_part(path, '?', 1),
    'query', split_part(path, '?', 2), 'headers', headers, 'body', body), '{"role": "anon"}')
$$;

-- without a pre-request function nothing is called
savepoint s;
select status, headers->>'Cache-Control' as cache, body from r('GET', 'notes?select=id&order=id');
rollback to s;
-- response.status and response.headers from an RPC: status replaced,
-- headers added, a name given twice sent twice
savepoint s;
select status, headers->'Location' as location, headers->'Set-Cookie' as cookies, body from r('GET', 'rpc/created?n=3');
rollback to s;
savepoint s;
select status, body from r('POST', 'rpc/created', '{"content-type": "application/json"}', '{"n": 4}');
rollback to s;
-- from a trigger of a write
savepoint s;
select status, headers->>'X-Inserted' as inserted from r('POST', 'notes', '{"content-type": "application/json"}', '{"id": 3, "body": "three"}');
rollback to s;
-- malformed settings are PostgREST's 500 PGRST112 / PGRST111
savepoint s;
select status, body from r('GET', 'rpc/bad_status');
rollback to s;
savepoint s;
select status, body from r('GET', 'rpc/bad_headers');
rollback to s;

-- the pre-request function, named in Fluxbase's setting or PostgREST's
set local fluxbase.pre_request = 'public.check_request';
savepoint s;
select status, headers->>'X-Role' as role, headers->>'Cache-Control' as cache, body from r('GET', 'notes?select=id&order=id');
rollback to s;
-- one setting per transaction: the main query's response.headers replaces the pre-request's
savepoint s;
select status, headers->>'X-Role' as role, headers->>'Location' as location from r('GET', 'rpc/created?n=5');
rollback to s;
-- a refusal raised by it is the request's answer
savepoint s;
select * from r('GET', 'notes', '{"x-blocked": "yes"}');
rollback to s;
reset fluxbase.pre_request;
set local pgrst.db_pre_request = 'check_request';
savepoint s;
select status, headers->>'X-Role' as role from r('GET', 'notes?select=id&id=eq.1');
rollback to s;
-- a pre-request function that does not exist fails the request
set local pgrst.db_pre_request = 'public.nope';
savepoint s;
select status from r('GET', 'notes');
rollback to s;
rollback;
