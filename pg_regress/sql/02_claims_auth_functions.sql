-- fluxbase.authenticate() switches role and exposes the claims, transaction-locally;
-- auth.uid()/role()/email()/jwt() read them as Supabase's do.
begin;
select auth.uid() is null as no_uid_before, auth.role() is null as no_role_before;

select fluxbase.authenticate('{"role": "authenticated", "sub": "11111111-1111-1111-1111-111111111111", "email": "ada@example.com", "aal": "aal1"}');
select current_user, auth.uid(), auth.role(), auth.email(), auth.jwt() ->> 'aal' as aal;
rollback;

-- Outside the transaction everything is back.
select current_user = session_user as role_restored, auth.uid() is null as claims_cleared;

-- PostgREST's legacy per-claim settings are honoured too.
begin;
set local request.jwt.claim.sub = '22222222-2222-2222-2222-222222222222';
select auth.uid();
rollback;

-- Claims without a role fall back to fluxbase.anon_role.
begin;
select fluxbase.authenticate('{}');
select current_user;
rollback;

-- A role the session user (the proxy's authenticator) may not become is
-- refused by Postgres' own membership check.
begin;
create role fb_regress_other nologin;
set local session authorization authenticator;
\set VERBOSITY terse
select fluxbase.authenticate('{"role": "fb_regress_other"}');
rollback;
begin;
set local session authorization authenticator;
select fluxbase.authenticate('{"role": "postgres"}');
rollback;
