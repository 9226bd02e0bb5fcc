-- application/geo+json: a FeatureCollection of the rows where PostGIS is
-- installed (expected/12_rest_geojson.out), 406 PGRST107 where it is not
-- (expected/12_rest_geojson_1.out: the pg18 test build has no PostGIS).
select exists (select 1 from pg_available_extensions where name = 'postgis') as has_postgis \gset
\if :has_postgis
create extension postgis;
create table public.places (id int primary key, name text not null, geom geometry(Point, 4326));
insert into public.places values (1, 'Paris', 'SRID=4326;POINT(2.35 48.85)'), (2, 'Tokyo', 'SRID=4326;POINT(139.69 35.69)');
\else
create table public.places (id int primary key, name text not null, geom text);
insert into public.places values (1, 'Paris', 'POINT(2.35 48.85)'), (2, 'Tokyo', 'POINT(139.69 35.69)');
\endif
grant select on public.places to anon;
begin;
select status, headers->>'Content-Type' as type, body from fluxbase.rest(
  '{"method": "GET", "path": "places", "query": "order=id", "headers": {"accept": "application/geo+json"}}', '{"role": "anon"}');
select status, headers->>'Content-Type' as type, body from fluxbase.rest(
  '{"method": "GET", "path": "places", "query": "select=id,geom&id=eq.2", "headers": {"accept": "application/geo+json"}}', '{"role": "anon"}');
rollback;
drop table public.places;
\if :has_postgis
drop extension postgis;
\endif
