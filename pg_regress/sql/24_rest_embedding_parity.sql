-- Embedding and select as PostgREST 14 does them (issue 13): computed
-- relationships and fields, constraint names and FK columns as embed
-- targets, self-references, spreads next to aggregates and of to-many
-- embeds, embeds with no fields, PGRST200/201 bodies.
begin;
create table public.users (id int primary key, username text not null, created_at timestamptz not null);
create table public.channels (id int primary key, slug text not null, created_by int references public.users(id));
create table public.messages (
  id int primary key, message text, channel_id int not null references public.channels(id),
  user_id int references public.users(id)
);
create table public.best_friends (
  id int primary key,
  first_user int not null references public.users(id),
  second_user int not null references public.users(id)
);
create table public.collections (id int primary key, name text not null, parent_id int references public.collections(id));
create view public.active_users as select id, username from public.users where id < 3;
-- Computed relationships: to-many (SETOF), to-one (a single row, or ROWS 1).
create function public.get_messages(public.channels) returns setof public.messages
  language sql stable as $$ select * from public.messages where channel_id = $1.id $$;
create function public.first_message(public.channels) returns public.messages
  language sql stable as $$ select * from public.messages where channel_id = $1.id order by id limit 1 $$;
create function public.author(public.messages) returns setof public.users rows 1
  language sql stable as $$ select * from public.users where id = $1.user_id $$;
create function public.all_channels() returns setof public.channels
  language sql stable as $$ select * from public.channels order by id $$;
-- Computed fields.
create function public.shout(public.messages) returns text
  language sql immutable as $$ select upper($1.message) $$;
create function public.message_count(public.channels) returns bigint
  language sql stable as $$ select count(*) from public.messages where channel_id = $1.id $$;
grant select on all tables in schema public to anon;
grant insert, update on public.messages to anon;
insert into public.users values (1, 'supabot', '2024-01-01'), (2, 'kiwi', '2024-02-01'), (3, 'awailas', '2024-03-01');
insert into public.channels values (1, 'public', 1), (2, 'random', 2), (3, 'empty', 1);
insert into public.messages values (1, 'Hello World', 1, 1), (2, 'Perfection is attained', 1, 2), (3, 'Nope', 2, 3);
insert into public.best_friends values (1, 1, 2), (2, 3, 1);
insert into public.collections values (1, 'root', null), (2, 'child a', 1), (3, 'child b', 1), (4, 'grandchild', 2);
-- Many-to-many (section 7c): a view as the junction; a table with its own key is none.
create table public.teams (id int primary key, name text not null);
create schema p24;
create table p24.memberships (
  user_id int references public.users(id), team_id int references public.teams(id), role text,
  primary key (user_id, team_id)
);
create view public.memberships as select user_id, team_id, role from p24.memberships;
create table public.likes (
  id int primary key, message_id int not null references public.messages(id),
  user_id int not null references public.users(id), unique (message_id, user_id)
);
grant select on public.teams, public.memberships, public.likes to anon;
insert into public.teams values (1, 'core'), (2, 'docs');
insert into p24.memberships values (1, 1, 'owner'), (2, 1, 'member'), (2, 2, 'owner');
insert into public.likes values (1, 1, 2), (2, 2, 1);

create function rest(query text, headers text default '{}') returns table(status int, body text)
language sql as $$
  select status, body from fluxbase.rest(json_build_object('method', 'GET', 'path', split_part(query, '?', 1),
    'query', split_part(query, '?', 2), 'headers', headers::json), '{"role": "anon"}')
$$;

-- 2. computed fields over the rows of a write (records of the table: the call
-- casts them), first: a GET makes the transaction read-only
select status, body from fluxbase.rest(json_build_object('method', 'POST', 'path', 'messages', 'query', 'select=id,shout,channels(slug)',
  'headers', json_build_object('prefer', 'return=representation'), 'body', '{"id": 9, "message": "new", "channel_id": 2}'), '{"role": "anon"}');
select status, body from fluxbase.rest(json_build_object('method', 'PATCH', 'path', 'messages', 'query', 'id=eq.9&shout=eq.NEW&select=shout,message',
  'headers', json_build_object('prefer', 'return=representation'), 'body', '{"message": "newer"}'), '{"role": "anon"}');
reset role;
delete from public.messages where id = 9;
-- 1. computed relationships: to-many with filters, order and limit on it; to-one
select * from rest('channels?select=id,msgs:get_messages(id,message)&msgs.order=id.desc&order=id');
select * from rest('channels?select=id,msgs:get_messages(id)&msgs.limit=1&msgs.order=id&id=eq.1');
select * from rest('channels?select=id,get_messages(id)&get_messages.message=eq.Nope&order=id');
select * from rest('channels?select=id,first_message(message)&order=id');
select * from rest('messages?select=id,author(username)&order=id');
-- !inner on a computed relationship
select * from rest('channels?select=id,get_messages!inner(id)&order=id');
-- from the rows of a table-returning RPC
select * from rest('rpc/all_channels?select=id,msgs:get_messages(id)&id=lt.3');
-- only from the table whose row type the function takes
select * from rest('users?select=id,get_messages(*)');
-- 2. computed fields in select, filters and order
select * from rest('messages?select=id,shout&shout=like.*WORLD*');
select * from rest('channels?select=slug,message_count&order=message_count.desc,id');
select * from rest('channels?select=slug,msgs:get_messages(id,shout)&msgs.shout=eq.NOPE&order=id&limit=2');
-- 3. a constraint name or a FK column as the target
select * from rest('users?select=username,first:best_friends_first_user_fkey(id),second:best_friends_second_user_fkey(id)&order=id');
select * from rest('best_friends?select=id,first_user(username),second_user(username)&order=id');
select * from rest('messages?select=id,channel_id(slug)&id=eq.1');
-- the view that shows users is no candidate for a column target (PostgREST#2277)
select * from rest('messages?select=id,user_id(username)&id=eq.1');
-- 4. self-references: the table name is the children, the column the parent
select * from rest('collections?select=name,collections(name)&collections.order=id&order=id');
select * from rest('collections?select=name,parent_id(name)&order=id');
select * from rest('collections?select=name,children:collections!parent_id(name)&id=eq.1');
select * from rest('collections?select=name,collections!collections_parent_id_fkey(name)');
-- 5. spread next to aggregates; spread of a to-many embed (arrays per column)
reset role;
set local fluxbase.aggregates_enabled = on;
select * from rest('messages?select=...channels(slug),count()&channel_id=eq.1');
select * from rest('messages?select=id.max(),channels(slug)&channel_id=eq.2');
select * from rest('channels?select=slug,...get_messages(message)&order=id');
select * from rest('channels?select=slug,...messages(id,message)&messages.order=id.desc&order=id');
select * from rest('channels?select=slug,...messages(count())&order=id');
-- aggregates in to-one spreads are hoisted to the level above (PostgREST's
-- hoistSpreadAggFunctions): grouped by that level's other columns
select * from rest('messages?select=...channels(slug,n:count())&order=channels(slug)');
select * from rest('messages?select=total:id.sum(),...users(username,uid:id.sum())&order=users(username)');
select * from rest('messages?select=...channels(id.sum())');
select * from rest('messages?select=user_id,...channels(id.max())&order=user_id');
select * from rest('messages?select=...channels(...users!channels_created_by_fkey(username,msgs:count()))&order=channels(username)');
select * from rest('messages?select=...channels(slug,users!channels_created_by_fkey(username),created_by.sum())&order=channels(slug)');
select * from rest('messages?select=...channels(slug,id_text:id::text.max()::int)&order=channels(slug)');
-- 5b. related orders: a column of a to-one embed (order=rel(col)); a
-- to-many or unselected embed is PostgREST's PGRST118 / PGRST108
select * from rest('messages?select=id,channels(slug)&order=channels(slug).desc,id');
select * from rest('messages?select=id,ch:channels(slug)&order=ch(slug).asc.nullslast,id.desc');
select * from rest('messages?select=id,...users(username)&order=users(username).desc');
select * from rest('channels?select=slug,messages(id)&order=messages(id)');
select * from rest('messages?select=id&order=channels(slug)');
-- 6. an embed with no fields filters only
select * from rest('messages?select=message,users()&order=id');
select * from rest('messages?select=message,users!inner()&users.username=eq.kiwi');
-- 7. unknown columns of an embed, aggregated or not, are named by PostgREST's alias of it
select * from rest('channels?select=slug,messages(nope.sum())');
select * from rest('channels?select=slug,messages(nope)');
select * from rest('channels?select=nope.sum()');
-- 7b. an unknown table names a close one of its schema (PostgREST's
-- tableNotFoundHint, score 0.75 at least), else no hint
select * from rest('user?select=id');
select * from rest('chanels?select=id');
select * from rest('xyz?select=id');
-- 7c. many-to-many as PostgREST's addM2MRels finds it: a junction's foreign
-- key columns are part of its primary key (likes has its own id: not a
-- junction, so messages → users stays the one many-to-one); a view can be
-- the junction (memberships over a table of an unexposed schema)
select * from rest('users?select=username,teams(name)&order=id&teams.order=id');
select * from rest('teams?select=name,users(username)&order=id&users.order=id');
select * from rest('messages?select=id,users(username)&order=id');
-- 8. PGRST200 and PGRST201 as PostgREST sends them
select * from rest('users?select=*,best_friends(*)');
select * from rest('channels?select=*,message(*)');
select * from rest('messages?select=*,channel(*)');
select * from rest('messages?select=*,users!nope(*)');
rollback;
