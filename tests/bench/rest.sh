#!/usr/bin/env bash
# Benchmarks rest-read, rest-read-vs-postgrest, rest-engine, rest-write and
# rest-embed (docs/benchmarks.md), all under RLS with a user JWT. Ratios are
# measured in one run, interleaved, REPS times:
#   read   GET one row by primary key: wrk vs pgbench of the statement the
#          proxy sends vs pgbench of PostgREST's 4-statement transaction
#   write  POST one row, return=representation: wrk vs pgbench of the statement
#   embed  GET 100 rows with one embedded relation: wrk vs pgbench of the statement
# Each HTTP request is also sent to a real PostgREST (12.0.2, lib.sh) on the
# same database, so PostgREST's own HTTP ÷ SQL ratio is measured on this box.
# Prints one line per measurement, RATIO lines last, and writes a CSV.
source "$(dirname "$0")/lib.sh"
bench_start
rest_bench_schema

TOKEN="$("$BIN" sign "{\"role\":\"authenticated\",\"sub\":\"$UID_ONE\"}" --expires-in 86400)"
READ="items?select=*&id=eq.42" WRITE="events?select=id,kind,n" EMBED="items?select=id,name,price,category%3Acategories(name)&order=id&limit=100"
proxy_start
postgrest_start
FLUX="http://127.0.0.1:$http_port/rest/v1" PGRST="http://127.0.0.1:$postgrest_port"
for base in "$FLUX" "$PGRST"; do
  test "$(curl -fsS "$base/$READ" -H "Authorization: Bearer $TOKEN")" \
    = '[{"id":42,"owner":"5a0e4f3c-1b6f-4c57-9f0e-6b1d7f2f1a01","name":"item 42","price":63.0,"category_id":43}]'
done

cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM SET log_min_duration_statement = 0" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
captured engine.sql "$FLUX/$READ"
captured write.sql -X POST "$FLUX/$WRITE" -H 'Content-Type: application/json' -H 'Prefer: return=representation' -d '{"kind":"click","n":1}'
captured embed.sql "$FLUX/$EMBED"
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM RESET log_min_duration_statement" -c "SELECT pg_reload_conf()" >/dev/null
# PostgREST's transaction for the read, with the same claims and headers.
read -r CLAIMS HEADERS < <(python3 -c '
import json, re, sys
one, two = re.match(r"SELECT fluxbase.rest_raw\((.*), (.*)\);$", open(sys.argv[1]).read().strip()).groups()
unq = lambda lit: lit[1:-1].replace("\x27\x27", "\x27")
print(unq(two), json.dumps(json.loads(unq(one))["headers"], separators=(",", ":")))' "$work/engine.sql")
cat > "$work/postgrest.sql" <<SQL
BEGIN;
SELECT set_config('search_path', '"public", "public"', true), set_config('role', 'authenticated', true), set_config('request.jwt.claims', '$CLAIMS', true), set_config('request.method', 'GET', true), set_config('request.path', '/items', true), set_config('request.headers', '$HEADERS', true);
WITH pgrst_source AS (SELECT "public"."items".* FROM "public"."items" WHERE "public"."items"."id" = 42) SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, coalesce(json_agg(_postgrest_t), '[]')::text AS body FROM (SELECT * FROM pgrst_source) _postgrest_t;
COMMIT;
SQL
cat > "$work/get.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"kind":"click","n":1}'
wrk.headers["Authorization"] = "Bearer $TOKEN"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Prefer"] = "return=representation"
LUA
peak_rss() { awk '/VmHWM/ {print $2}' "/proc/$proxy/status"; }

csv="tests/bench/results/rest-$(date -u +%Y%m%dT%H%M%SZ).csv"
echo "rep,read_http,read_engine,read_postgrest,write_http,write_engine,embed_http,embed_engine,read_postgrest_http,write_postgrest_http,embed_postgrest_http" > "$csv"
rows=()
for rep in $(seq 1 "$REPS"); do
  re=$(pgbench_run "$work/engine.sql"); rh=$(wrk_run get.lua "rest/v1/$READ"); rp=$(pgbench_run "$work/postgrest.sql")
  ph=$(wrk_url get.lua "$PGRST/$READ")
  wh=$(wrk_run post.lua "rest/v1/$WRITE"); we=$(pgbench_run "$work/write.sql"); pw=$(wrk_url post.lua "$PGRST/$WRITE")
  eh=$(wrk_run get.lua "rest/v1/$EMBED"); ee=$(pgbench_run "$work/embed.sql"); pe=$(wrk_url get.lua "$PGRST/$EMBED")
  echo "rep $rep: read http $rh req/s, engine $re tps, postgrest-4-stmt $rp tps, postgrest http $ph; write http $wh, engine $we, postgrest http $pw; embed http $eh, engine $ee, postgrest http $pe"
  echo "$rep,$rh,$re,$rp,$wh,$we,$eh,$ee,$ph,$pw,$pe" >> "$csv"
  rows+=("$rh,$re,$rp,$wh,$we,$eh,$ee,$ph,$pw,$pe")
done
echo "proxy peak RSS: $(peak_rss) kB"
c200=$(wrk -t 2 -c 200 -d "${SECONDS_PER_RUN}s" -s "$work/get.lua" "$FLUX/$READ" \
  | awk '/Requests\/sec/ {print $2}')
echo "200 concurrent clients: read http $c200 req/s; proxy peak RSS $(peak_rss) kB"
python3 - "${rows[@]}" <<'PY'
import statistics, sys
cols = list(zip(*[[float(x) for x in r.split(",")] for r in sys.argv[1:]]))
rh, re, rp, wh, we, eh, ee, ph, pw, pe = cols
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
ratio("rest-engine", re, rp)
ratio("rest-read-vs-postgrest", rh, rp)
ratio("rest-read", rh, re)
ratio("rest-write", wh, we)
ratio("rest-embed", eh, ee)
ratio("rest-read-vs-postgrest-http (Fluxbase HTTP / PostgREST 12 HTTP)", rh, ph)
ratio("rest-write-vs-postgrest-http", wh, pw)
ratio("rest-embed-vs-postgrest-http", eh, pe)
ratio("postgrest-read (PostgREST 12 HTTP / its 4-statement SQL)", ph, rp)
PY
echo "csv: $csv"
