#!/usr/bin/env bash
# Benchmarks auth-password and auth-refresh (docs/benchmarks.md). Ratios are
# measured in one run, interleaved, REPS times:
#   password  wrk POST /auth/v1/token?grant_type=password (one user, right
#             password) vs `fluxbase hash-rate`: argon2id hashes/s with the
#             same parameters on all CPUs (the ceiling: a sign-in is one hash)
#   refresh   wrk POST /auth/v1/token?grant_type=refresh_token, every request
#             a fresh token, vs pgbench of the rotation SQL the proxy runs
#             (fluxbase.auth_refresh) on fresh tokens
# Prints one line per measurement, RATIO lines last, and writes a CSV.
TOKENS="${TOKENS:-150000}" # per kind: 6 runs of up to 25,000 grants
source "$(dirname "$0")/lib.sh"
bench_start
export FLUXBASE_AUTH_LOCKOUT_MAX_FAILURES=0 FLUXBASE_AUTH_RATE_LIMIT_SIGNUPS_PER_IP=0 \
  FLUXBASE_AUTH_RATE_LIMIT_SIGNINS_PER_IP=0 FLUXBASE_AUTH_RATE_LIMIT_SIGNINS_PER_ACCOUNT=0 FLUXBASE_AUTH_RATE_LIMIT_REFRESH_PER_IP=0
ANON="$("$BIN" sign '{"role":"anon"}' --expires-in 86400)"
proxy_start
curl -fsS "http://127.0.0.1:$http_port/auth/v1/signup" -H "apikey: $ANON" -H 'content-type: application/json' \
  -d '{"email":"bench@example.com","password":"bench-password"}' | grep -q access_token

# Fresh refresh tokens, known to the bench (bench-N for HTTP, pg-N for
# pgbench); the database keeps only their SHA-256, as for real ones.
cluster_psql "$MAJOR" "$dir" "$port" -d bench <<SQL
CREATE SEQUENCE public.bench_tok;
CREATE FUNCTION public.bench_tokens(prefix text, n int) RETURNS void LANGUAGE sql AS \$\$
  WITH u AS (SELECT id FROM auth.users WHERE email = 'bench@example.com'),
  s AS (INSERT INTO auth.sessions (id, user_id, created_at, updated_at, aal)
        SELECT gen_random_uuid(), u.id, now(), now(), 'aal1' FROM u, generate_series(1, n) RETURNING id, user_id),
  numbered AS (SELECT id, user_id, row_number() OVER () AS i FROM s)
  INSERT INTO auth.refresh_tokens (token, user_id, revoked, created_at, updated_at, session_id)
  SELECT encode(sha256(convert_to(prefix || i, 'UTF8')), 'hex'), user_id::text, false, now(), now(), id FROM numbered
\$\$;
SELECT public.bench_tokens('bench-', $TOKENS);
SELECT public.bench_tokens('pg-', $TOKENS);
GRANT USAGE, SELECT ON SEQUENCE public.bench_tok TO authenticator;
ANALYZE;
SQL

cat > "$work/refresh.sql" <<'SQL'
-- As the proxy sends it: the request context set first, in the same statement.
WITH ctx AS MATERIALIZED (SELECT set_config('request.id', 'bench', true), set_config('request.ip', '127.0.0.1', true), set_config('request.user_agent', 'pgbench', true))
SELECT fluxbase.auth_refresh(encode(sha256(convert_to('pg-' || n, 'UTF8')), 'hex'), encode(sha256(convert_to('pg-next-' || n, 'UTF8')), 'hex'), 10) FROM ctx, (SELECT nextval('public.bench_tok') AS n) s;
SQL
cat > "$work/password.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"email":"bench@example.com","password":"bench-password"}'
wrk.headers["apikey"] = "$ANON"
wrk.headers["Content-Type"] = "application/json"
LUA
# Each wrk thread takes every n-th token from its own offset; FIRST moves per run.
refresh_lua() { # refresh_lua FIRST
  cat > "$work/refresh.lua" <<LUA
local counter, threads, next_id = 0, 2, 0
-- setup runs in the main state and sets the global "id" in each thread's.
function setup(thread) thread:set("id", next_id); next_id = next_id + 1 end
wrk.method = "POST"
wrk.headers["apikey"] = "$ANON"
wrk.headers["Content-Type"] = "application/json"
function request()
  local n = $1 + id + counter * threads
  counter = counter + 1
  return wrk.format(nil, nil, nil, '{"refresh_token":"bench-' .. n .. '"}')
end
LUA
}
csv="tests/bench/results/auth-$(date -u +%Y%m%dT%H%M%SZ).csv"
echo "rep,password_http,argon2_hashes,refresh_http,refresh_sql" > "$csv"
rows=()
first=1
for rep in $(seq 1 "$REPS"); do
  ph=$(wrk_run password.lua "auth/v1/token?grant_type=password")
  ah=$("$BIN" hash-rate "$SECONDS_PER_RUN" | awk '{print $3}')
  refresh_lua "$first"
  rh=$(wrk_run refresh.lua "auth/v1/token?grant_type=refresh_token")
  first=$((first + 25000))
  rs=$(pgbench_run "$work/refresh.sql")
  echo "rep $rep: password sign-ins $ph/s, argon2id hashes $ah/s; refresh http $rh/s, rotation SQL $rs tps"
  echo "$rep,$ph,$ah,$rh,$rs" >> "$csv"
  rows+=("$ph,$ah,$rh,$rs")
done
python3 - "${rows[@]}" <<'PY'
import statistics, sys
ph, ah, rh, rs = list(zip(*[[float(x) for x in r.split(",")] for r in sys.argv[1:]]))
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
ratio("auth-password (sign-ins/s / argon2id hashes/s)", ph, ah)
ratio("auth-refresh (HTTP grants/s / rotation SQL tps)", rh, rs)
PY
echo "csv: $csv"
