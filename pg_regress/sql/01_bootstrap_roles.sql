-- The roles Supabase users write policies against exist with Supabase's attributes.
begin;
select rolname, rolcanlogin, rolinherit, rolbypassrls
from pg_roles
where rolname in ('anon', 'authenticated', 'service_role', 'authenticator')
order by rolname;

select r.rolname as member_of
from pg_auth_members m
join pg_roles r on r.oid = m.roleid
join pg_roles u on u.oid = m.member
where u.rolname = 'authenticator'
order by 1;

select nspname from pg_namespace where nspname in ('auth', 'fluxbase') order by 1;

select fluxbase.version() = (select extversion from pg_extension where extname = 'fluxbase') as version_matches;
rollback;
