-- Fluxbase bootstrap: roles, schemas and the schema-version counter.
-- Roles are cluster-wide, so they are created only when absent and are never
-- owned by the extension (DROP EXTENSION leaves them alone, as it should).
DO $roles$
BEGIN
  -- Supabase's statement timeouts for the API roles; the REST engine
  -- applies a role's settings when it switches to it, as PostgREST does.
  -- Only for roles created here: a role that exists keeps its settings.
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN NOINHERIT;
    ALTER ROLE anon SET statement_timeout = '3s';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN NOINHERIT;
    ALTER ROLE authenticated SET statement_timeout = '8s';
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
    CREATE ROLE service_role NOLOGIN NOINHERIT BYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticator') THEN
    CREATE ROLE authenticator LOGIN NOINHERIT;
  END IF;
END
$roles$;

GRANT anon, authenticated, service_role TO authenticator;

-- `auth` may already exist in a database that moved over from Supabase; in
-- that case keep it (and its tables) and only add what is missing.
DO $schemas$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
    CREATE SCHEMA auth;
  END IF;
END
$schemas$;

GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role, authenticator;
GRANT USAGE ON SCHEMA public TO anon, authenticated, service_role;
GRANT USAGE ON SCHEMA fluxbase TO authenticator, anon, authenticated, service_role;

-- Bumped on every DDL command (sql/schema_triggers.sql): a counter for
-- people and tests. The REST schema cache itself is invalidated through
-- Postgres' own cache invalidation (see extension/src/schema/mod.rs), which
-- costs nothing per request.
CREATE SEQUENCE fluxbase.schema_version;
GRANT SELECT ON SEQUENCE fluxbase.schema_version TO authenticator, anon, authenticated, service_role;

CREATE FUNCTION fluxbase.schema_version() RETURNS bigint
LANGUAGE sql STABLE
SET search_path = pg_catalog
AS $$ SELECT last_value FROM fluxbase.schema_version $$;

-- Idempotency keys of REST writes (`Idempotency-Key` header): the first
-- response is kept and replayed for a retry of the same request, per role
-- and user. Only the engine touches it, as the session user.
CREATE TABLE fluxbase.idempotency_keys (
  scope text NOT NULL,
  key text NOT NULL,
  request_hash text NOT NULL,
  status int NOT NULL,
  headers json NOT NULL,
  body text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at ON fluxbase.idempotency_keys (created_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON fluxbase.idempotency_keys TO authenticator;
