#!/usr/bin/env bash
# A/B of password sign-in (auth-password, docs/benchmarks.md): an older
# proxy against its own release's SQL, beside the current proxy and SQL,
# interleaved in one run so that both see the same machine.
#   OLD_BIN=/path/to/old/fluxbase OLD_VERSION=0.3.0 REPS=5 tests/bench/auth-ab.sh
# Build OLD_BIN from a `git worktree add --detach DIR COMMIT` (cargo build
# --release -p fluxbase-proxy there). One cluster, two databases: `bench`
# at the current extension, `bench_old` created at OLD_VERSION from
# tests/upgrade/fluxbase--OLD_VERSION.sql (its C functions served by the
# current library, as in the upgrade test; the sign-in's functions are
# PL/pgSQL). Per rep, in alternating order: wrk sign-ins through each proxy,
# then `hash-rate` of each binary. Prints RATIO lines and writes a CSV.
OLD_BIN="${OLD_BIN:?OLD_BIN: the older fluxbase binary}"
OLD_VERSION="${OLD_VERSION:-0.3.0}"
source "$(dirname "$0")/lib.sh"
bench_start
export FLUXBASE_AUTH_LOCKOUT_MAX_FAILURES=0 FLUXBASE_AUTH_RATE_LIMIT_SIGNUPS_PER_IP=0 \
  FLUXBASE_AUTH_RATE_LIMIT_SIGNINS_PER_IP=0 FLUXBASE_AUTH_RATE_LIMIT_SIGNINS_PER_ACCOUNT=0 FLUXBASE_AUTH_RATE_LIMIT_REFRESH_PER_IP=0
ANON="$("$BIN" sign '{"role":"anon"}' --expires-in 86400)"
extdir="$("$(pg_bin "$MAJOR")/pg_config" --sharedir)/extension"
as_root cp "$FLUXBASE_ROOT/tests/upgrade/fluxbase--$OLD_VERSION.sql" "$extdir/"
cluster_psql "$MAJOR" "$dir" "$port" -d postgres -c "CREATE DATABASE bench_old"
cluster_psql "$MAJOR" "$dir" "$port" -d bench_old -c "CREATE EXTENSION fluxbase VERSION '$OLD_VERSION'"
new_port="$http_port"
proxy_start
old_port="$(free_port)"
FLUXBASE_DATABASE_URL="${FLUXBASE_DATABASE_URL%/bench}/bench_old" FLUXBASE_SERVER_LISTEN="127.0.0.1:$old_port" \
  "$OLD_BIN" serve &
old_proxy=$!
trap 'kill $proxy $old_proxy 2>/dev/null || true; cluster_stop "$MAJOR" "$dir"; as_root rm -rf "$dir"' EXIT
for p in "$new_port" "$old_port"; do
  for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$p/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  curl -fsS "http://127.0.0.1:$p/auth/v1/signup" -H "apikey: $ANON" -H 'content-type: application/json' \
    -d '{"email":"bench@example.com","password":"bench-password"}' | grep -q access_token
done
cat > "$work/password.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"email":"bench@example.com","password":"bench-password"}'
wrk.headers["apikey"] = "$ANON"
wrk.headers["Content-Type"] = "application/json"
LUA
# CPU time (ns, /proc schedstat) of a proxy's hashing threads, its other
# threads, and all of the cluster's processes: CPU per sign-in, which other
# load on the box does not change the way it changes rates.
cpu_ns() { # cpu_ns PROXY_PID -> "hash other postgres"
  local h=0 o=0 pg=0 t
  for t in /proc/"$1"/task/*; do
    if grep -q '^fluxbase-hash' "$t/comm" 2>/dev/null; then h=$((h + $(cut -d' ' -f1 "$t/schedstat")))
    else o=$((o + $(cut -d' ' -f1 "$t/schedstat" 2>/dev/null || echo 0))); fi
  done
  for t in $(pgrep -P "$(head -1 "$dir/postmaster.pid")"); do pg=$((pg + $(cut -d' ' -f1 /proc/"$t"/schedstat 2>/dev/null || echo 0))); done
  echo "$h $o $pg"
}
signins() { # signins HTTP_PORT PROXY_PID -> "req/s hash_us other_us postgres_us" (CPU per sign-in)
  local a b r
  a=$(cpu_ns "$2")
  r=$(wrk_url password.lua "http://127.0.0.1:$1/auth/v1/token?grant_type=password")
  b=$(cpu_ns "$2")
  python3 -c "import sys; r=float(sys.argv[1]); a=sys.argv[2].split(); b=sys.argv[3].split(); n=r*$SECONDS_PER_RUN
print(r, *[f'{(int(y)-int(x))/n/1000:.0f}' for x, y in zip(a, b)])" "$r" "$a" "$b"
}
hashes() { "$1" hash-rate "$SECONDS_PER_RUN" | awk '{print $3}'; }
csv="tests/bench/results/auth-ab-$(date -u +%Y%m%dT%H%M%SZ).csv"
echo "rep,new_signins,old_signins,new_hashes,old_hashes" > "$csv"
rows=()
for rep in $(seq 1 "$REPS"); do
  if [ $((rep % 2)) = 1 ]; then
    nr=$(signins "$new_port" "$proxy"); or=$(signins "$old_port" "$old_proxy"); nh=$(hashes "$BIN"); oh=$(hashes "$OLD_BIN")
  else
    or=$(signins "$old_port" "$old_proxy"); nr=$(signins "$new_port" "$proxy"); oh=$(hashes "$OLD_BIN"); nh=$(hashes "$BIN")
  fi
  ns=${nr%% *} os=${or%% *}
  echo "rep $rep: sign-ins new $ns/s old $os/s; argon2id hashes new $nh/s old $oh/s"
  echo "  CPU µs per sign-in (hashing threads, rest of proxy, postgres): new ${nr#* }, old ${or#* }"
  echo "$rep,$ns,$os,$nh,$oh" >> "$csv"
  rows+=("$ns,$os,$nh,$oh")
done
python3 - "${rows[@]}" <<'PY'
import statistics, sys
ns, os_, nh, oh = list(zip(*[[float(x) for x in r.split(",")] for r in sys.argv[1:]]))
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
ratio("auth-password new (new sign-ins/s / new hashes/s)", ns, nh)
ratio("auth-password old (old sign-ins/s / old hashes/s)", os_, oh)
ratio("auth-password new/old sign-ins", ns, os_)
ratio("auth-password new/old hashes", nh, oh)
PY
echo "csv: $csv"
