#!/usr/bin/env bash
# rest-engine-instructions (docs/benchmarks.md): the instructions Postgres
# spends per benchmark read (`items?select=*&id=eq.42`, user JWT, RLS), which
# do not move with this machine's noise. The statement the proxy sends is
# captured from the server log, then `postgres --single` runs it N and 11·N
# times under `valgrind --tool=callgrind`; the difference ÷ 10·N is the cost
# of one request (no start-up or warm-up in it), for the whole statement and
# inclusive for `fluxbase.rest_raw`.
# Prints one line per figure and `INSTRUCTIONS <name> <n>` lines last.
source "$(dirname "$0")/lib.sh"
N="${N:-100}"
command -v valgrind >/dev/null || as_root apt-get install -y -qq valgrind >/dev/null
bench_start
rest_bench_schema
TOKEN="$("$BIN" sign "{\"role\":\"authenticated\",\"sub\":\"$UID_ONE\"}" --expires-in 86400)"
proxy_start
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM SET log_min_duration_statement = 0" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
captured engine.sql "http://127.0.0.1:$http_port/rest/v1/items?select=*&id=eq.42"
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM RESET log_min_duration_statement" >/dev/null
kill "$proxy"
proxy=
cluster_stop "$MAJOR" "$dir"

out="$dir-callgrind"
as_root mkdir -p "$out"
as_root chown postgres "$out"
for n in "$N" "$((11 * N))"; do
  python3 -c 'import sys; sys.stdout.write(open(sys.argv[1]).read() * int(sys.argv[2]))' "$work/engine.sql" "$n" \
    | as_root tee "$out/statements-$n.sql" >/dev/null
  as_root chown postgres "$out/statements-$n.sql"
  as_pg valgrind --tool=callgrind --callgrind-out-file="$out/callgrind-$n.out" \
    "$(pg_bin "$MAJOR")/postgres" --single -D "$dir" -c log_min_messages=fatal bench \
    < "$out/statements-$n.sql" > /dev/null 2>"$out/valgrind-$n.log"
done
python3 - "$out" "$N" <<'PY'
import re, subprocess, sys
out, n = sys.argv[1], int(sys.argv[2])
def figures(path):
    total = next(int(l.split()[1]) for l in open(path) if l.startswith(("summary:", "totals:")))
    annotated = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100", path],
                               capture_output=True, text=True).stdout
    rest_raw = max((int(m.group(1).replace(",", "")) for m in
                    re.finditer(r"^\s*([\d,]+) .*fluxbase::rest_raw\b", annotated, re.M)), default=0)
    return total, rest_raw
(t1, r1), (t2, r2) = figures(f"{out}/callgrind-{n}.out"), figures(f"{out}/callgrind-{11 * n}.out")
per = lambda a, b: round((b - a) / (10 * n))
print(f"whole statement: {per(t1, t2)} instructions per request")
print(f"fluxbase.rest_raw (inclusive): {per(r1, r2)} instructions per request")
print(f"INSTRUCTIONS rest-engine-statement {per(t1, t2)}")
print(f"INSTRUCTIONS rest-engine-rest_raw {per(r1, r2)}")
PY
as_root rm -rf "$out"
