#!/usr/bin/env bash
# Runs Fluxbase locally: a PostgreSQL 15 cluster with the extension, and the
# proxy on http://127.0.0.1:54321. Prints the URL and keys. Data and config
# persist between runs; Ctrl-C stops both.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$FLUXBASE_ROOT/scripts/pg.sh"

MAJOR="${FLUXBASE_PG_MAJOR:-15}"
PORT="${FLUXBASE_DEV_PG_PORT:-54322}"
STATE="$FLUXBASE_ROOT/.fluxbase"
DATA="$FLUXBASE_VAR/dev-$(echo "$FLUXBASE_ROOT" | sha1sum | cut -c1-8)-pg$MAJOR"
CONFIG="$STATE/fluxbase.toml"

"$FLUXBASE_ROOT/scripts/setup.sh"
extension_install "$MAJOR"
log "building the proxy"
(cd "$FLUXBASE_ROOT" && cargo build --release -p fluxbase-proxy --quiet)
FLUXBASE_BIN="$FLUXBASE_ROOT/target/release/fluxbase"

mkdir -p "$STATE"
if [ ! -f "$STATE/db-password" ]; then
  (umask 077; head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$STATE/db-password")
fi
PASSWORD="$(cat "$STATE/db-password")"
[ -f "$CONFIG" ] || "$FLUXBASE_BIN" gen-config "$CONFIG" \
  --database-url "postgres://authenticator:$PASSWORD@127.0.0.1:$PORT/postgres"

# A database from an earlier release is moved forward by ALTER EXTENSION
# UPDATE (database_prepare). Within one version under development the SQL
# can still change, which no upgrade script covers: a stamp of the version
# and SQL each database was made with catches that, instead of a proxy
# answering "function ... does not exist".
VERSION="$(sed -n "s/^version = \"\(.*\)\"/\1/p" "$FLUXBASE_ROOT/Cargo.toml" | head -1)"
SQL_FILE="$("$(pg_bin "$MAJOR")/pg_config" --sharedir)/extension/fluxbase--$VERSION.sql"
STAMP_NOW="$VERSION $(sha256sum "$SQL_FILE" | cut -d' ' -f1)"
STAMP="$DATA.extension-sha256"
if [ ! -s "$DATA/PG_VERSION" ]; then
  :
elif [ ! -f "$STAMP" ]; then
  log "note: $DATA predates the extension SQL check; if requests fail with \"function ... does not exist\", remove it to start over"
elif [ "$(cat "$STAMP")" != "$STAMP_NOW" ]; then
  read -r made_version _ < "$STAMP"
  if [ "${made_version%%.*}" = "$made_version" ] || [ "$made_version" = "$VERSION" ]; then
    echo "fluxbase: $DATA was made from extension SQL of no release (a build between releases)," >&2
    echo "which cannot be upgraded in place. Remove $DATA (its data is lost) and run again." >&2
    exit 1
  fi
  log "upgrading the extension in $DATA from $made_version to $VERSION"
fi

log "starting PostgreSQL $MAJOR (data in $DATA, port $PORT)"
cluster_start "$MAJOR" "$DATA" "$PORT"
stop() { trap "" INT TERM; log "stopping"; kill "${PROXY_PID:-0}" 2>/dev/null || true; wait "${PROXY_PID:-0}" 2>/dev/null || true; cluster_stop "$MAJOR" "$DATA"; }
trap stop EXIT
trap 'exit 0' INT TERM
database_prepare "$MAJOR" "$DATA" "$PORT" postgres "$PASSWORD"
echo "$STAMP_NOW" > "$STAMP"

"$FLUXBASE_BIN" serve --config "$CONFIG" &
PROXY_PID=$!
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:54321/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
echo
"$FLUXBASE_BIN" keys --config "$CONFIG"
echo "database:         psql -h $DATA -p $PORT -U postgres postgres   (as the postgres user)"
echo "config:           $CONFIG"
echo
echo "Fluxbase is running. Press Ctrl-C to stop."
wait "$PROXY_PID"
