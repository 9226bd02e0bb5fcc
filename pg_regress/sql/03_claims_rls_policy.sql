-- An RLS policy written against auth.uid(), as in Supabase, sees the claims.
begin;
create table public.notes (
  id int primary key,
  owner uuid not null,
  body text not null
);
alter table public.notes enable row level security;
create policy notes_owner on public.notes for select using (owner = auth.uid());
grant select on public.notes to anon, authenticated, service_role;
insert into public.notes values
  (1, '11111111-1111-1111-1111-111111111111', 'ada 1'),
  (2, '11111111-1111-1111-1111-111111111111', 'ada 2'),
  (3, '33333333-3333-3333-3333-333333333333', 'grace');

savepoint as_anon;
select fluxbase.authenticate('{"role": "anon"}');
select count(*) as anon_sees from public.notes;
rollback to as_anon;

savepoint as_ada;
select fluxbase.authenticate('{"role": "authenticated", "sub": "11111111-1111-1111-1111-111111111111"}');
select id, body from public.notes order by id;
rollback to as_ada;

savepoint as_service;
select fluxbase.authenticate('{"role": "service_role"}');
select count(*) as service_sees from public.notes;
rollback to as_service;
rollback;
