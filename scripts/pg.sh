# PostgreSQL helpers for Fluxbase's scripts: build the extension for one
# major, and run throwaway or persistent clusters as the unprivileged
# `postgres` user. Sourced after env.sh, never run.

# extension_install MAJOR: build (release) and install the extension into that major.
extension_install() {
  local major="$1" bin
  bin="$(pg_bin "$major")"
  local sudo_flag=()
  [ "$(id -u)" = 0 ] || sudo_flag=(--sudo)
  upgrade_scripts_build || return 1
  log "building and installing the extension for PostgreSQL $major"
  (cd "$FLUXBASE_ROOT/extension" && \
    cargo pgrx install --release --pg-config "$bin/pg_config" \
      --no-default-features --features "pg$major" "${sudo_flag[@]}")
}

# upgrade_scripts_build: extension/sql/fluxbase--A--B.sql from
# sql/upgrade/A--B.sql, each `-- @include FILE` line replaced by FILE and each
# `-- @include-functions FILE NAME...` line by those functions of FILE as
# CREATE OR REPLACE (paths from the repository root). `cargo pgrx install`
# ships those files. A released script is frozen: its includes are expanded
# in place when the next version starts (docs/operations.md).
upgrade_scripts_build() {
  local src out
  for src in "$FLUXBASE_ROOT"/sql/upgrade/*--*.sql; do
    out="$FLUXBASE_ROOT/extension/sql/fluxbase--$(basename "$src")"
    mkdir -p "$(dirname "$out")"
    python3 - "$src" "$out" "$FLUXBASE_ROOT" <<'PY' || return 1
import pathlib, re, sys
src, out, root = sys.argv[1], pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3])
text = "-- Generated from %s by scripts/pg.sh (upgrade_scripts_build): edit that file.\n" % pathlib.Path(src).relative_to(root)
text += "\\echo Use \"ALTER EXTENSION fluxbase UPDATE\" to load this file. \\quit\n"
for line in open(src):
    if line.startswith("-- @include "):
        name = line.split(None, 2)[2].strip()
        text += "\n-- ---- %s ----\n" % name + (root / name).read_text()
    elif line.startswith("-- @include-functions "):
        name, *functions = line.split()[2:]
        source = (root / name).read_text()
        for function in functions:
            found = re.search(r"^CREATE FUNCTION fluxbase\.%s\(.*?^\$\$;\n" % re.escape(function), source, re.S | re.M)
            if not found:
                sys.exit("%s: no function fluxbase.%s in %s" % (src, function, name))
            text += "\n-- ---- %s: fluxbase.%s ----\n" % (name, function)
            text += found.group(0).replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    else:
        text += line
if not out.exists() or out.read_text() != text:
    out.write_text(text)
PY
  done
}

# cluster_start MAJOR DIR PORT: initialise DIR (if new) and start a server on
# 127.0.0.1:PORT with its socket in DIR. Idempotent for an existing DIR.
cluster_start() {
  local major="$1" dir="$2" port="$3" bin
  bin="$(pg_bin "$major")"
  if [ ! -s "$dir/PG_VERSION" ]; then
    as_root mkdir -p "$dir"
    as_root chown postgres "$dir"
    as_root chmod 0700 "$dir"
    as_pg "$bin/initdb" -D "$dir" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
      --encoding=UTF8 --locale=C.UTF-8 >/dev/null
    cat <<CONF | as_pg tee -a "$dir/postgresql.conf" >/dev/null
# Fluxbase
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir'
max_connections = 200
shared_buffers = 128MB
fsync = ${FLUXBASE_PG_FSYNC:-on}
# As Supabase's Postgres: realtime messages sent from SQL reach the proxies
# by logical decoding (docs/realtime.md).
wal_level = logical
CONF
  fi
  as_pg "$bin/pg_ctl" -D "$dir" -o "-p $port" -l "$dir/server.log" -w -t 60 start >/dev/null
}

cluster_stop() {
  local major="$1" dir="$2"
  [ -s "$dir/postmaster.pid" ] || return 0
  as_pg "$(pg_bin "$major")/pg_ctl" -D "$dir" -m fast -w stop >/dev/null || true
}

# cluster_psql MAJOR DIR PORT [psql args...]: psql as superuser over the socket.
cluster_psql() {
  local major="$1" dir="$2" port="$3"
  shift 3
  as_pg "$(pg_bin "$major")/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres "$@"
}

# database_prepare MAJOR DIR PORT DB PASSWORD: create DB with the extension,
# and give `authenticator` the proxy's password.
database_prepare() {
  local major="$1" dir="$2" port="$3" db="$4" password="$5"
  if ! cluster_psql "$major" "$dir" "$port" -d postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
    cluster_psql "$major" "$dir" "$port" -d postgres -c "CREATE DATABASE \"$db\""
  fi
  cluster_psql "$major" "$dir" "$port" -d "$db" -c "CREATE EXTENSION IF NOT EXISTS fluxbase"
  cluster_psql "$major" "$dir" "$port" -d "$db" -c "ALTER EXTENSION fluxbase UPDATE"
  cluster_psql "$major" "$dir" "$port" -d "$db" -c "ALTER ROLE authenticator PASSWORD '$password'"
}

# free_port: a TCP port nobody listens on right now.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
