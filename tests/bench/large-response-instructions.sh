#!/usr/bin/env bash
# large-response-instructions (docs/benchmarks.md, "Large responses"): Postgres
# instructions per 1 MB inline read (`wide?order=id&limit=50`, 50 rows of
# 20 kB), the statement the proxy sends against PostgREST's statement shape
# for the same read, N and 3·N times in `postgres --single` under callgrind;
# then the costliest functions of ours. Deterministic, unlike MB/s here.
source "$(dirname "$0")/lib.sh"
N="${N:-10}"
bench_start
cluster_psql "$MAJOR" "$dir" "$port" -d bench <<SQL >/dev/null
create table public.wide (id int primary key, t text not null);
insert into public.wide select i, repeat(md5(i::text), 625) from generate_series(1, 1000) i;
grant select on public.wide to anon;
analyze;
SQL
TOKEN="$("$BIN" sign '{"role":"anon"}' --expires-in 86400)"
proxy_start
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM SET log_min_duration_statement = 0" -c "SELECT pg_reload_conf()" >/dev/null
sleep 0.3
captured wide.sql "http://127.0.0.1:$http_port/rest/v1/wide?order=id&limit=50"
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM RESET log_min_duration_statement" >/dev/null
kill "$proxy"; proxy=
cluster_stop "$MAJOR" "$dir"
cat > "$work/pgrst.sql" <<'SQL'
SELECT null::bigint AS total_result_set, pg_catalog.count(_postgrest_t) AS page_total, coalesce(json_agg(_postgrest_t), '[]')::character varying AS body FROM (SELECT "public"."wide".* FROM "public"."wide" ORDER BY "wide"."id" ASC LIMIT 50 OFFSET 0) _postgrest_t;
SQL
out="$dir-callgrind"; as_root mkdir -p "$out"; as_root chown postgres "$out"
for q in wide pgrst; do for n in "$N" "$((3 * N))"; do
  python3 -c 'import sys; sys.stdout.write(open(sys.argv[1]).read() * int(sys.argv[2]))' "$work/$q.sql" "$n" | as_root tee "$out/$q-$n.sql" >/dev/null
  as_root chown postgres "$out/$q-$n.sql"
  as_pg valgrind --tool=callgrind --callgrind-out-file="$out/$q-$n.out" "$(pg_bin "$MAJOR")/postgres" --single -D "$dir" -c log_min_messages=fatal bench < "$out/$q-$n.sql" > /dev/null 2>"$out/vg-$q-$n.log"
done; done
python3 - "$out" "$N" <<'PY'
import subprocess, sys
out, n = sys.argv[1], int(sys.argv[2])
tot = lambda p: next(int(l.split()[1]) for l in open(p) if l.startswith(("summary:", "totals:")))
for q in ("wide", "pgrst"):
    a, b = tot(f"{out}/{q}-{n}.out"), tot(f"{out}/{q}-{3*n}.out")
    print(f"{q}: {(b - a) // (2 * n)} instructions per request")
ann = subprocess.run(["callgrind_annotate", "--threshold=95", f"{out}/wide-{3*n}.out"], capture_output=True, text=True).stdout
print("\n".join(ann.splitlines()[:60]))
PY
as_root rm -rf "$out"
