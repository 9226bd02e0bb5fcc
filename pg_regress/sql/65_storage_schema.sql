-- Supabase Storage's SQL surface (sql/storage.sql): the tables' columns and
-- indexes as storage-api's migrations leave them, the helper functions
-- policies use, storage.search() as the caller sees it, and the proxy's
-- definer functions (bucket rules, unchecked reads, upload tokens once).
\set VERBOSITY terse
begin;
select table_name, column_name, data_type, column_default, is_nullable, is_generated
from information_schema.columns
where table_schema = 'storage' and table_name in ('buckets', 'objects')
order by table_name, ordinal_position;
select indexname, indexdef from pg_indexes where schemaname = 'storage' order by indexname;
select relname, relrowsecurity from pg_class where relnamespace = 'storage'::regnamespace and relkind = 'r' order by relname;

select storage.foldername('a/b/c.png') as folders, storage.filename('a/b/c.png') as file,
       storage.extension('a/b/c.tar.gz') as ext, storage.foldername('top.txt') as no_folder;

-- A policy as Supabase users write it: a user's own folder.
insert into storage.buckets (id, name) values ('docs', 'docs');
create policy own_select on storage.objects for select to authenticated
  using (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
create policy own_insert on storage.objects for insert to authenticated
  with check (bucket_id = 'docs' and (storage.foldername(name))[1] = auth.uid()::text);
insert into storage.objects (bucket_id, name, version, metadata) values
  ('docs', '11111111-1111-1111-1111-111111111111/a.txt', 'v1', '{"size": 1}'),
  ('docs', '11111111-1111-1111-1111-111111111111/sub/b.txt', 'v1', '{"size": 2}'),
  ('docs', '33333333-3333-3333-3333-333333333333/c.txt', 'v1', '{"size": 3}');
select name, path_tokens from storage.objects order by name;

savepoint as_ada;
select fluxbase.authenticate('{"role": "authenticated", "sub": "11111111-1111-1111-1111-111111111111"}');
select name, id is null as is_folder from storage.search('11111111-1111-1111-1111-111111111111/', 'docs', 100, 2);
select count(*) as ada_sees from storage.objects;
insert into storage.objects (bucket_id, name) values ('docs', '11111111-1111-1111-1111-111111111111/new.txt');
savepoint intrude;
insert into storage.objects (bucket_id, name) values ('docs', '33333333-3333-3333-3333-333333333333/evil.txt');
rollback to intrude;
savepoint rules;
select * from fluxbase.storage_bucket_rules('docs');
rollback to rules;
rollback to as_ada;

-- The proxy's definer functions, as authenticator.
savepoint as_authenticator;
set local role authenticator;
select * from fluxbase.storage_bucket_rules('docs');
select * from fluxbase.storage_bucket_rules('missing');
select version, metadata from fluxbase.storage_object_unchecked('docs', '33333333-3333-3333-3333-333333333333/c.txt', false);
select count(*) as private_bucket_public_read from fluxbase.storage_object_unchecked('docs', '33333333-3333-3333-3333-333333333333/c.txt', true);
select fluxbase.storage_upload_token_redeem('token-1', now() + interval '1 hour') as first_use,
       fluxbase.storage_upload_token_redeem('token-1', now() + interval '1 hour') as second_use;
rollback to as_authenticator;

-- A bucket with objects cannot go; names are 1 to 63 characters.
savepoint fk;
delete from storage.buckets where id = 'docs';
rollback to fk;
savepoint name_check;
insert into storage.buckets (id, name) values ('long', repeat('x', 64));
rollback to name_check;
rollback;
