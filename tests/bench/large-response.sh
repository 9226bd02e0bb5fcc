#!/usr/bin/env bash
# Benchmarks large REST responses (docs/benchmarks.md, "Large responses"):
#   memory  the proxy's peak RSS growth while CLIENTS clients each fetch a
#           ~20 MB body at once, against the same for a real PostgREST (12.0.2,
#           lib.sh), which holds each body whole
#   speed   MB/s of 20 MB bodies (streamed: `rest_raw` leaves the body in the
#           backend, `SELECT fluxbase.rest_body()` sends it in 256 KiB rows)
#           against MB/s of ~1 MB bodies (inline: one round trip), interleaved
#           REPS times, and both against PostgREST
# Prints one line per measurement and RATIO lines last.
source "$(dirname "$0")/lib.sh"
bench_start
cluster_psql "$MAJOR" "$dir" "$port" -d bench <<SQL >/dev/null
create table public.wide (id int primary key, t text not null);
insert into public.wide select i, repeat(md5(i::text), 625) from generate_series(1, 1000) i;
grant select on public.wide to anon;
analyze;
SQL
TOKEN="$("$BIN" sign '{"role":"anon"}' --expires-in 86400)"
LARGE="wide?order=id" SMALL="wide?order=id&limit=50"
proxy_start
postgrest_start
FLUX="http://127.0.0.1:$http_port/rest/v1" PGRST="http://127.0.0.1:$postgrest_port"
size() { curl -fsS -o /dev/null -w '%{size_download}' -H "Authorization: Bearer $TOKEN" "$1"; }
large=$(size "$FLUX/$LARGE") small=$(size "$FLUX/$SMALL")
# PostgREST's JSON is the same rows with a few more separators.
pgrst_large=$(size "$PGRST/$LARGE")
test $(( pgrst_large - large )) -lt $(( large / 500 )) && test "$pgrst_large" -ge "$large"
test "$small" -lt 1048576
echo "bodies: large $large bytes (streamed), small $small bytes (inline)"

hwm() { awk '/VmHWM/ {print $2 * 1024}' "/proc/$1/status"; }
burst() { # burst URL: CLIENTS concurrent fetches of URL, all read to the end
  local pids=()
  for _ in $(seq 1 "$CLIENTS"); do curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "$1" & pids+=($!); done
  wait "${pids[@]}"
}
mem_f0=$(hwm "$proxy"); burst "$FLUX/$LARGE"; mem_f=$(( $(hwm "$proxy") - mem_f0 ))
mem_p0=$(hwm "$postgrest"); burst "$PGRST/$LARGE"; mem_p=$(( $(hwm "$postgrest") - mem_p0 ))
echo "peak RSS growth, $CLIENTS concurrent ${large}-byte responses: Fluxbase proxy $mem_f bytes, PostgREST $mem_p bytes"

cat > "$work/get.lua" <<LUA
wrk.headers["Authorization"] = "Bearer $TOKEN"
LUA
rows=()
for rep in $(seq 1 "$REPS"); do
  fl=$(wrk_run get.lua "rest/v1/$LARGE"); fs=$(wrk_run get.lua "rest/v1/$SMALL")
  pl=$(wrk_url get.lua "$PGRST/$LARGE"); ps=$(wrk_url get.lua "$PGRST/$SMALL")
  echo "rep $rep: Fluxbase large $fl req/s, small $fs req/s; PostgREST large $pl req/s, small $ps req/s"
  rows+=("$fl,$fs,$pl,$ps")
done
echo "proxy peak RSS after the runs: $(hwm "$proxy") bytes"
python3 - "$large" "$small" "$mem_f" "$mem_p" "$CLIENTS" "${rows[@]}" <<'PY'
import statistics, sys
large, small, mem_f, mem_p, clients = (int(x) for x in sys.argv[1:6])
fl, fs, pl, ps = zip(*[[float(x) for x in r.split(",")] for r in sys.argv[6:]])
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
mb = lambda rates, size: [r * size / 1e6 for r in rates]
print(f"MB/s: Fluxbase streamed {statistics.median(mb(fl, large)):.0f}, inline {statistics.median(mb(fs, small)):.0f}; "
      f"PostgREST large {statistics.median(mb(pl, large)):.0f}, small {statistics.median(mb(ps, small)):.0f}")
ratio("large-response-streamed-vs-inline (MB/s of 20 MB bodies / MB/s of 1 MB bodies)", mb(fl, large), mb(fs, small))
ratio("large-response-vs-postgrest (MB/s of 20 MB bodies)", fl, pl)
ratio("small-response-vs-postgrest (MB/s of 1 MB bodies)", fs, ps)
print(f"RATIO large-response-memory (proxy peak RSS growth / bodies in flight) {mem_f / (large * clients):.3f}; "
      f"PostgREST {mem_p / (large * clients):.3f}")
PY
