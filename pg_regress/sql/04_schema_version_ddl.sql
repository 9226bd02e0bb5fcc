-- Every DDL command bumps fluxbase.schema_version(); caches key on it.
begin;
create temp table v0 as select fluxbase.schema_version() as v;
create table public.version_probe (id int);
select fluxbase.schema_version() > (select v from v0) as bumped_by_create;
create temp table v1 as select fluxbase.schema_version() as v;
drop table public.version_probe;
select fluxbase.schema_version() > (select v from v1) as bumped_by_drop;
rollback;
