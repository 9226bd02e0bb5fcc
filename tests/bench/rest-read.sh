#!/usr/bin/env bash
# Benchmark rest-read / rest-read-vs-postgrest / rest-engine (docs/benchmarks.md).
# GET one row by primary key with a user JWT under an RLS policy that calls
# auth.uid(). Ratios are measured in one run, interleaved A/B/C, REPS times:
#   http      wrk against the proxy (req/s)
#   engine    pgbench running the exact statement the proxy sends
#   postgrest pgbench running PostgREST's 4-statement transaction
# Prints one line per measurement, RATIO lines last, and writes a CSV.
set -euo pipefail
source "$(dirname "$0")/../../scripts/env.sh"
source "$FLUXBASE_ROOT/scripts/pg.sh"

MAJOR="${FLUXBASE_BENCH_MAJOR:-15}"
REPS="${REPS:-5}"
SECONDS_PER_RUN="${SECONDS_PER_RUN:-5}"
CLIENTS="${CLIENTS:-8}"
command -v wrk >/dev/null || as_root apt-get install -y -qq wrk >/dev/null

cd "$FLUXBASE_ROOT"
cargo build --release -p fluxbase-proxy --quiet
extension_install "$MAJOR" >/dev/null 2>&1
BIN="$FLUXBASE_ROOT/target/release/fluxbase"
dir="$FLUXBASE_VAR/bench-$$"
port="$(free_port)"
http_port="$(free_port)"
password=benchpw
FLUXBASE_PG_FSYNC=off cluster_start "$MAJOR" "$dir" "$port"
trap 'kill $proxy 2>/dev/null || true; cluster_stop "$MAJOR" "$dir"; as_root rm -rf "$dir"' EXIT
database_prepare "$MAJOR" "$dir" "$port" bench "$password" >/dev/null 2>&1
UID_ONE=5a0e4f3c-1b6f-4c57-9f0e-6b1d7f2f1a01
cluster_psql "$MAJOR" "$dir" "$port" -d bench <<SQL
create table public.items (id int primary key, owner uuid not null, name text not null, price numeric not null);
insert into public.items select i, case when i % 2 = 0 then '$UID_ONE'::uuid else gen_random_uuid() end, 'item ' || i, i * 1.5
  from generate_series(1, 10000) i;
alter table public.items enable row level security;
create policy own on public.items for select using (owner = auth.uid());
grant select on public.items to authenticated;
analyze public.items;
SQL

export FLUXBASE_DATABASE_URL="postgres://authenticator:$password@127.0.0.1:$port/bench"
export FLUXBASE_JWT_SECRET="bench-secret-bench-secret-bench-secret-0001"
export FLUXBASE_SERVER_LISTEN="127.0.0.1:$http_port" FLUXBASE_LOG_LEVEL=warn
export FLUXBASE_DATABASE_POOL_SIZE="$CLIENTS"
TOKEN="$("$BIN" sign "{\"role\":\"authenticated\",\"sub\":\"$UID_ONE\"}" --expires-in 86400)"
"$BIN" serve & proxy=$!
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$http_port/ready" >/dev/null 2>&1 && break; sleep 0.1; done
test "$(curl -fsS "http://127.0.0.1:$http_port/rest/v1/items?select=*&id=eq.42" -H "Authorization: Bearer $TOKEN")" \
  = '[{"id":42,"owner":"5a0e4f3c-1b6f-4c57-9f0e-6b1d7f2f1a01","name":"item 42","price":63.0}]'

CLAIMS="{\"role\":\"authenticated\",\"sub\":\"$UID_ONE\"}"
work="$(mktemp -d)"
chmod 755 "$work"
cat > "$work/engine.sql" <<SQL
SELECT status, headers::text, body FROM fluxbase.rest('{"method":"GET","path":"items","query":"select=*&id=eq.42","headers":{}}'::json, '$CLAIMS'::json);
SQL
cat > "$work/postgrest.sql" <<SQL
BEGIN;
SELECT set_config('role', 'authenticated', true), set_config('request.jwt.claims', '$CLAIMS', true), set_config('request.method', 'GET', true), set_config('request.path', '/items', true), set_config('request.headers', '{}', true);
WITH pgrst_source AS (SELECT "public"."items".* FROM "public"."items" WHERE "public"."items"."id" = 42) SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, coalesce(json_agg(_postgrest_t), '[]')::text AS body FROM (SELECT * FROM pgrst_source) _postgrest_t;
COMMIT;
SQL
cat > "$work/get.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
pgbench_run() { # pgbench_run FILE -> tps
  PGPASSWORD="$password" "$(pg_bin "$MAJOR")/pgbench" -n -M prepared -h 127.0.0.1 -p "$port" -U authenticator \
    -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" -f "$1" bench 2>/dev/null | awk '/^tps/ {print $3; exit}'
}
wrk_run() {
  wrk -t 2 -c "$CLIENTS" -d "${SECONDS_PER_RUN}s" -s "$work/get.lua" \
    "http://127.0.0.1:$http_port/rest/v1/items?select=*&id=eq.42" | awk '/Requests\/sec/ {print $2}'
}
peak_rss() { awk '/VmHWM/ {print $2}' "/proc/$proxy/status"; }

mkdir -p tests/bench/results
csv="tests/bench/results/rest-read-$(date -u +%Y%m%dT%H%M%SZ).csv"
echo "rep,http_rps,engine_tps,postgrest_tps" > "$csv"
http=() engine=() pgrst=()
for rep in $(seq 1 "$REPS"); do
  e=$(pgbench_run "$work/engine.sql"); h=$(wrk_run); p=$(pgbench_run "$work/postgrest.sql")
  echo "rep $rep: http ${h} req/s, engine ${e} tps, postgrest-4-stmt ${p} tps"
  echo "$rep,$h,$e,$p" >> "$csv"
  http+=("$h") engine+=("$e") pgrst+=("$p")
done
echo "proxy peak RSS: $(peak_rss) kB"
python3 - "${http[*]}" "${engine[*]}" "${pgrst[*]}" <<'PY'
import statistics, sys
h, e, p = ([float(x) for x in s.split()] for s in sys.argv[1:4])
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
ratio("rest-engine", e, p)
ratio("rest-read-vs-postgrest", h, p)
ratio("rest-read", h, e)
PY
echo "csv: $csv"
