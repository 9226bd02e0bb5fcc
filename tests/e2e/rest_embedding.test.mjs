// Embedding and select through supabase-js against a schema shaped like real
// Supabase projects (a chat app: self-references, two foreign keys to one
// table, functions of a row type, a view over a table of an unexposed
// schema), checked against PostgREST 14's documented answers (issue 13):
// computed relationships and fields, constraint names and FK columns as
// embed targets, self-references, spreads, embeds with no fields, and
// PGRST200/201 bodies.
import { test, before } from 'node:test';
import assert from 'node:assert/strict';
import { createClient } from '@supabase/supabase-js';
import { env, sql, eventually } from './helpers.mjs';

const anon = createClient(env.url, env.anonKey, { auth: { persistSession: false } });

before(async () => {
  sql(`
    set client_min_messages = warning;
    drop schema if exists chat_private cascade;
    drop table if exists public.chat_messages, public.chat_channels, public.chat_best_friends,
      public.chat_collections, public.chat_users cascade;
    create table public.chat_users (id int primary key, username text not null);
    create table public.chat_channels (id int primary key, slug text not null,
      created_by int not null references public.chat_users(id));
    create table public.chat_messages (id int primary key, message text not null,
      channel_id int not null references public.chat_channels(id),
      user_id int not null references public.chat_users(id));
    create table public.chat_best_friends (id int primary key,
      first_user int not null references public.chat_users(id),
      second_user int not null references public.chat_users(id));
    create table public.chat_collections (id int primary key, name text not null,
      parent_id int references public.chat_collections(id));
    -- A view in the exposed schema over a table of an unexposed one.
    create schema chat_private;
    create table chat_private.profiles (id int primary key references public.chat_users(id), bio text not null);
    create view public.chat_profiles as select id, bio from chat_private.profiles;
    create function public.chat_get_messages(public.chat_channels) returns setof public.chat_messages
      language sql stable as 'select * from public.chat_messages where channel_id = $1.id';
    create function public.chat_last_message(public.chat_channels) returns setof public.chat_messages rows 1
      language sql stable as 'select * from public.chat_messages where channel_id = $1.id order by id desc limit 1';
    create function public.chat_shout(public.chat_messages) returns text
      language sql immutable as 'select upper($1.message)';
    create function public.chat_message_count(public.chat_channels) returns bigint
      language sql stable as 'select count(*) from public.chat_messages where channel_id = $1.id';
    grant usage on schema chat_private to anon;
    grant select on public.chat_users, public.chat_channels, public.chat_messages, public.chat_best_friends,
      public.chat_collections, public.chat_profiles, chat_private.profiles to anon;
    insert into public.chat_users values (1, 'supabot'), (2, 'kiwi'), (3, 'awailas');
    insert into public.chat_channels values (1, 'public', 1), (2, 'random', 2), (3, 'empty', 1);
    insert into public.chat_messages values (1, 'Hello World', 1, 1), (2, 'Perfection', 1, 2), (3, 'Nope', 2, 3);
    insert into public.chat_best_friends values (1, 1, 2), (2, 3, 1);
    insert into public.chat_collections values (1, 'root', null), (2, 'a', 1), (3, 'b', 1), (4, 'a.1', 2);
    insert into chat_private.profiles values (1, 'the bot'), (2, 'a bird');
  `);
  // DDL reloads the schema cache; wait until the new tables are served.
  assert.ok(await eventually(async () => !(await anon.from('chat_profiles').select('id')).error));
});

test('computed relationships: to-many with filters, order and limit; to-one', async () => {
  const { data, error } = await anon
    .from('chat_channels')
    .select('id, msgs:chat_get_messages(id, message)')
    .order('id')
    .order('id', { referencedTable: 'msgs', ascending: false });
  assert.equal(error, null);
  assert.deepEqual(data, [
    { id: 1, msgs: [{ id: 2, message: 'Perfection' }, { id: 1, message: 'Hello World' }] },
    { id: 2, msgs: [{ id: 3, message: 'Nope' }] },
    { id: 3, msgs: [] },
  ]);
  const limited = await anon
    .from('chat_channels')
    .select('id, msgs:chat_get_messages(id)')
    .eq('id', 1)
    .eq('msgs.user_id', 2)
    .limit(1, { referencedTable: 'msgs' });
  assert.deepEqual(limited.data, [{ id: 1, msgs: [{ id: 2 }] }]);
  // `ROWS 1`: an object (or null), not an array.
  const last = await anon.from('chat_channels').select('slug, last:chat_last_message(message)').order('id');
  assert.deepEqual(last.data, [
    { slug: 'public', last: { message: 'Perfection' } },
    { slug: 'random', last: { message: 'Nope' } },
    { slug: 'empty', last: null },
  ]);
});

test('computed fields in select, filters and order', async () => {
  const shouted = await anon.from('chat_messages').select('id, chat_shout').like('chat_shout', '%WORLD%');
  assert.equal(shouted.error, null);
  assert.deepEqual(shouted.data, [{ id: 1, chat_shout: 'HELLO WORLD' }]);
  const counted = await anon
    .from('chat_channels')
    .select('slug, chat_message_count')
    .order('chat_message_count', { ascending: false })
    .order('id');
  assert.deepEqual(counted.data, [
    { slug: 'public', chat_message_count: 2 },
    { slug: 'random', chat_message_count: 1 },
    { slug: 'empty', chat_message_count: 0 },
  ]);
});

test('a foreign key constraint name or column as the embed target', async () => {
  const byName = await anon
    .from('chat_users')
    .select('username, first:chat_best_friends_first_user_fkey(id), second:chat_best_friends_second_user_fkey(id)')
    .order('id');
  assert.equal(byName.error, null);
  assert.deepEqual(byName.data, [
    { username: 'supabot', first: [{ id: 1 }], second: [{ id: 2 }] },
    { username: 'kiwi', first: [], second: [{ id: 1 }] },
    { username: 'awailas', first: [{ id: 2 }], second: [] },
  ]);
  const byColumn = await anon.from('chat_best_friends').select('id, first_user(username), second_user(username)').order('id');
  assert.deepEqual(byColumn.data, [
    { id: 1, first_user: { username: 'supabot' }, second_user: { username: 'kiwi' } },
    { id: 2, first_user: { username: 'awailas' }, second_user: { username: 'supabot' } },
  ]);
  // A view over an unexposed schema's table embeds like that table.
  const profiles = await anon.from('chat_users').select('username, chat_profiles(bio)').order('id').limit(2);
  assert.deepEqual(profiles.data, [
    { username: 'supabot', chat_profiles: { bio: 'the bot' } },
    { username: 'kiwi', chat_profiles: { bio: 'a bird' } },
  ]);
});

test('self-references: the table name is the children, the column the parent', async () => {
  const children = await anon
    .from('chat_collections')
    .select('name, chat_collections(name)')
    .order('id')
    .order('id', { referencedTable: 'chat_collections' });
  assert.equal(children.error, null);
  assert.deepEqual(children.data, [
    { name: 'root', chat_collections: [{ name: 'a' }, { name: 'b' }] },
    { name: 'a', chat_collections: [{ name: 'a.1' }] },
    { name: 'b', chat_collections: [] },
    { name: 'a.1', chat_collections: [] },
  ]);
  const parents = await anon.from('chat_collections').select('*, parent_id(name)').eq('id', 4);
  assert.deepEqual(parents.data, [{ id: 4, name: 'a.1', parent_id: { name: 'a' } }]);
  const hinted = await anon.from('chat_collections').select('name, kids:chat_collections!parent_id(name)').eq('id', 2);
  assert.deepEqual(hinted.data, [{ name: 'a', kids: [{ name: 'a.1' }] }]);
  // A hint that does not apply to a self-reference: 400 PGRST200.
  const bad = await anon.from('chat_collections').select('name, chat_collections!chat_collections_parent_id_fkey(name)');
  assert.equal(bad.status, 400);
  assert.deepEqual(bad.error, {
    code: 'PGRST200',
    message: "Could not find a relationship between 'chat_collections' and 'chat_collections' in the schema cache",
    details:
      "Searched for a foreign key relationship between 'chat_collections' and 'chat_collections' using the hint 'chat_collections_parent_id_fkey' in the schema 'public', but no matches were found.",
    hint: null,
  });
});

test('spreading a to-many embed gives an array per column (PostgREST 13+)', async () => {
  const { data, error } = await anon
    .from('chat_channels')
    .select('slug, ...chat_messages(id, message)')
    .order('id')
    .order('id', { referencedTable: 'chat_messages' });
  assert.equal(error, null);
  assert.deepEqual(data, [
    { slug: 'public', id: [1, 2], message: ['Hello World', 'Perfection'] },
    { slug: 'random', id: [3], message: ['Nope'] },
    { slug: 'empty', id: [], message: [] },
  ]);
  const toOne = await anon.from('chat_messages').select('id, ...chat_channels(slug)').eq('id', 3);
  assert.deepEqual(toOne.data, [{ id: 3, slug: 'random' }]);
});

test('an embed with no fields only filters and is left out', async () => {
  const all = await anon.from('chat_messages').select('message, chat_users()').order('id');
  assert.deepEqual(all.data, [{ message: 'Hello World' }, { message: 'Perfection' }, { message: 'Nope' }]);
  const kiwi = await anon.from('chat_messages').select('message, chat_users!inner()').eq('chat_users.username', 'kiwi');
  assert.deepEqual(kiwi.data, [{ message: 'Perfection' }]);
});

test('PGRST201 and PGRST200 bodies as PostgREST 14 sends them', async () => {
  const ambiguous = await anon.from('chat_users').select('*, chat_best_friends(*)');
  assert.equal(ambiguous.status, 300);
  assert.deepEqual(ambiguous.error, {
    code: 'PGRST201',
    message: "Could not embed because more than one relationship was found for 'chat_users' and 'chat_best_friends'",
    details: [
      {
        cardinality: 'one-to-many',
        embedding: 'chat_users with chat_best_friends',
        relationship: 'chat_best_friends_first_user_fkey using chat_users(id) and chat_best_friends(first_user)',
      },
      {
        cardinality: 'one-to-many',
        embedding: 'chat_users with chat_best_friends',
        relationship: 'chat_best_friends_second_user_fkey using chat_users(id) and chat_best_friends(second_user)',
      },
    ],
    hint:
      "Try changing 'chat_best_friends' to one of the following: 'chat_best_friends!chat_best_friends_first_user_fkey', 'chat_best_friends!chat_best_friends_second_user_fkey'. Find the desired relationship in the 'details' key.",
  });
  const missing = await anon.from('chat_channels').select('*, chat_message(*)');
  assert.equal(missing.status, 400);
  assert.deepEqual(missing.error, {
    code: 'PGRST200',
    message: "Could not find a relationship between 'chat_channels' and 'chat_message' in the schema cache",
    details:
      "Searched for a foreign key relationship between 'chat_channels' and 'chat_message' in the schema 'public', but no matches were found.",
    hint: "Perhaps you meant 'chat_messages' instead of 'chat_message'.",
  });
  // A function of another table's row type is no relationship of this one.
  const other = await anon.from('chat_users').select('id, chat_get_messages(*)');
  assert.equal(other.error.code, 'PGRST200');
});
