-- Keyset (cursor) pagination: pages follow a position, not an offset, so a
-- row inserted before the position does not shift the next page.
begin;
create table public.posts (id int primary key, created date not null, title text not null, note text);
insert into public.posts select i, date '2026-01-01' + (i / 3), 'post ' || i, null from generate_series(1, 10) i;
grant select on public.posts to anon;
create function page(query text) returns table(status int, cursor text, body text)
language sql as $$
  select status, headers::jsonb ->> 'Fluxbase-Next-Cursor', body from fluxbase.rest(json_build_object('method', 'GET', 'path', 'posts',
    'query', query, 'headers', json_build_object('prefer', 'pagination=keyset')), '{"role": "anon"}')
$$;
savepoint p1;
select status, body, cursor is not null as has_next from page('select=id,created&order=created.desc&limit=4');
select cursor as c1 from page('select=id,created&order=created.desc&limit=4') \gset
rollback to p1;
-- a newer row arrives between the pages: the next page does not shift
insert into public.posts values (0, '2026-01-09', 'newest', null);
select status, body from page('select=id,created&order=created.desc&limit=4&cursor=' || :'c1');
-- the Link header repeats the query with the cursor
select headers::jsonb ->> 'Link' like '</rest/v1/posts?select=id,created&order=created.desc&limit=4&cursor=%>; rel="next"' as link
from fluxbase.rest(json_build_object('method', 'GET', 'path', 'posts', 'query', 'select=id,created&order=created.desc&limit=4',
  'headers', json_build_object('prefer', 'pagination=keyset')), '{"role": "anon"}');
-- refusals: nullable order column, missing key column, offset, foreign cursor
select status, body from page('select=id&order=note&limit=2');
select status, body from page('select=title&limit=2');
select status, body from page('select=id&limit=2&offset=2');
select status, body from page('select=id,created&order=created.asc&limit=4&cursor=' || :'c1');
rollback;
