#!/usr/bin/env bash
# Runs once, when the official postgres image initialises an empty data dir.
set -euo pipefail
: "${FLUXBASE_AUTHENTICATOR_PASSWORD:?set FLUXBASE_AUTHENTICATOR_PASSWORD for the proxy's login role}"
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
  -v pw="$FLUXBASE_AUTHENTICATOR_PASSWORD" <<'SQL'
CREATE EXTENSION IF NOT EXISTS fluxbase;
ALTER ROLE authenticator PASSWORD :'pw';
SQL
