-- DROP EXTENSION fluxbase is refused unless the session confirms it: it
-- would delete the auth data (users, sessions, ...).
\set VERBOSITY terse
BEGIN;
DROP EXTENSION fluxbase CASCADE;
ROLLBACK;
SELECT count(*) AS extension_still_there FROM pg_extension WHERE extname = 'fluxbase';
BEGIN;
SET LOCAL fluxbase.allow_drop_with_data = on;
DROP EXTENSION fluxbase CASCADE;
SELECT count(*) AS dropped FROM pg_extension WHERE extname = 'fluxbase';
ROLLBACK;
SELECT to_regclass('auth.users') IS NOT NULL AS users_kept;
BEGIN;
DROP EXTENSION IF EXISTS "fluxbase";
ROLLBACK;
-- Other drops are not affected.
DROP EXTENSION IF EXISTS fluxbase_other;
CREATE TABLE guard_probe (id int);
DROP TABLE guard_probe;
