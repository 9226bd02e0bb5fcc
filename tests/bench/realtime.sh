#!/usr/bin/env bash
# Benchmarks realtime (docs/benchmarks.md, "Realtime"):
#   send     inserts/s into a table whose row trigger calls realtime.send
#            (public, as apps broadcast their rows), against the same insert
#            into a table without the trigger (pgbench, CLIENTS clients,
#            interleaved REPS times, fsync on: commits wait for the WAL, which
#            is where NOTIFY's commit lock bites), over logical decoding (the
#            default where wal_level = logical) and over NOTIFY (the
#            fallback), with a proxy reading the messages (one joined socket
#            keeps its feed running)
#   sockets  realtime-load.mjs: proxy RSS per idle joined socket (1,000),
#            fan-out latency p50/p95 of one message to 1,000 sockets, and
#            deliveries/s with 100 senders and 100 receivers on one topic
#   changes  Postgres changes (realtime-changes-load.mjs): inserts/s into a
#            table in the publication supabase_realtime with SUBSCRIBERS
#            (100) sockets subscribed, ÷ the same insert into the same table
#            unpublished, interleaved REPS times in one run; then
#            RLS-checked deliveries/s with 500 sockets of 100 users on an
#            auth.uid() policy, and commit-to-client latency p50/p95
# PART=send|changes runs one part only (default: all).
# Prints one line per measurement and RATIO lines last.
source "$(dirname "$0")/lib.sh"
PART="${PART:-all}"
SUBSCRIBERS="${SUBSCRIBERS:-100}"
ulimit -n 65536 2>/dev/null || true
bench_start
cluster_psql "$MAJOR" "$dir" "$port" -d bench <<'SQL' >/dev/null
create table public.bench_rows (id bigint generated always as identity primary key, v int not null);
create table public.bench_sent (id bigint generated always as identity primary key, v int not null);
create function public.bench_send() returns trigger language plpgsql as $$
begin
  perform realtime.send(jsonb_build_object('id', new.id, 'v', new.v), 'row', 'bench', false);
  return null;
end $$;
create trigger bench_send after insert on public.bench_sent for each row execute function public.bench_send();
grant insert on public.bench_rows, public.bench_sent to authenticator;
grant usage on sequence public.bench_rows_id_seq, public.bench_sent_id_seq to authenticator;
create table public.bench_changes (id bigint generated always as identity primary key, owner uuid not null,
  v int not null);
create index on public.bench_changes (owner);
alter table public.bench_changes enable row level security;
create policy own on public.bench_changes for select to authenticated using (owner = auth.uid());
grant select on public.bench_changes to authenticated;
grant insert on public.bench_changes to authenticator;
create policy writer on public.bench_changes for insert to authenticator with check (true);
SQL
test "$(cluster_psql "$MAJOR" "$dir" "$port" -d bench -tA -c 'show wal_level')" = logical
export FLUXBASE_API_KEYS_ANON="$("$BIN" sign '{"role":"anon"}' --expires-in 86400)"
export FLUXBASE_REALTIME_MAX_EVENTS_PER_SECOND=100000 FLUXBASE_REALTIME_MAX_CHANNELS_PER_CONNECTION=10
export FLUXBASE_SERVER_MAX_CONNECTIONS=5000 FLUXBASE_REALTIME_MAX_CONNECTIONS_PER_IP=5000
proxy_start
# One joined socket starts the proxy's realtime feed (its logical slot).
"$NODE22" -e "
const s = new WebSocket('ws://127.0.0.1:$http_port/realtime/v1/websocket?apikey=$FLUXBASE_API_KEYS_ANON&vsn=2.0.0');
s.onopen = () => s.send(JSON.stringify(['1','1','realtime:bench','phx_join',{config:{}}]));
s.onmessage = () => {};
setInterval(() => s.send(JSON.stringify([null,'h','phoenix','heartbeat',{}])), 20000);
" & holder=$!
trap 'kill $holder 2>/dev/null; kill $proxy $postgrest 2>/dev/null || true; cluster_stop "$MAJOR" "$dir"; as_root rm -rf "$dir"' EXIT
sleep 2
cluster_psql "$MAJOR" "$dir" "$port" -d bench -tA -c "select count(*) from pg_replication_slots where slot_name like 'fluxbase_rt_%'" | grep -qx 1

rows=()
sockets='{}'
if [ "$PART" = all ] || [ "$PART" = send ]; then
for t in rows sent; do
  printf 'BEGIN;\nINSERT INTO public.bench_%s (v) VALUES (1);\nCOMMIT;\n' "$t" > "$work/$t.sql"
  printf "BEGIN;\nSET LOCAL fluxbase.realtime_transport = 'notify';\nINSERT INTO public.bench_%s (v) VALUES (1);\nCOMMIT;\n" "$t" \
    > "$work/$t-notify.sql"
done
# Durable commits for this part: with fsync off a commit costs nothing, and
# NOTIFY's lock (held across the commit) would not show.
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM SET fsync = on" -c "SELECT pg_reload_conf()" >/dev/null
rows=()
for rep in $(seq 1 "$REPS"); do
  p=$(pgbench_run "$work/rows.sql"); s=$(pgbench_run "$work/sent.sql")
  pn=$(pgbench_run "$work/rows-notify.sql"); n=$(pgbench_run "$work/sent-notify.sql")
  echo "rep $rep: insert $p tps, insert with realtime.send trigger (logical) $s tps; insert $pn tps, with trigger (NOTIFY) $n tps"
  rows+=("$p,$s,$pn,$n")
done
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM RESET fsync" -c "SELECT pg_reload_conf()" >/dev/null

sockets=$("$NODE22" "$FLUXBASE_ROOT/tests/bench/realtime-load.mjs" "http://127.0.0.1:$http_port" "$FLUXBASE_API_KEYS_ANON" "$proxy")
echo "sockets: $sockets"
fi

# Postgres changes. Users 0..99 own the rows; each insert picks one.
changes=()
rls='{}'
if [ "$PART" = all ] || [ "$PART" = changes ]; then
printf '%s\n' "BEGIN;" \
  "INSERT INTO public.bench_changes (owner, v) VALUES (('00000000-0000-4000-8000-' || lpad(floor(random() * 100)::int::text, 12, '0'))::uuid, 1);" \
  "COMMIT;" > "$work/changes.sql"
load() { # load SOCKETS USERS MAX_S OUT [IDLE_S]: subscribers in the background, READY awaited
  "$NODE22" "$FLUXBASE_ROOT/tests/bench/realtime-changes-load.mjs" "http://127.0.0.1:$http_port" \
    "$FLUXBASE_API_KEYS_ANON" "$FLUXBASE_JWT_SECRET" bench_changes "$1" "$2" "$3" "${5:-3}" > "$4" &
  loader=$!
  for _ in $(seq 1 600); do grep -q READY "$4" 2>/dev/null && return 0; sleep 0.1; done
  echo "subscribers did not get ready: $(cat "$4")" >&2
  return 1
}
# The write path: published with SUBSCRIBERS subscribers vs unpublished.
load "$SUBSCRIBERS" 100 $((REPS * SECONDS_PER_RUN * 3 + 60)) "$work/write.out" 100000
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM SET fsync = on" -c "SELECT pg_reload_conf()" >/dev/null
for rep in $(seq 1 "$REPS"); do
  cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "alter publication supabase_realtime drop table public.bench_changes" \
    >/dev/null 2>&1 || true
  u=$(pgbench_run "$work/changes.sql")
  cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "alter publication supabase_realtime add table public.bench_changes" >/dev/null
  p=$(pgbench_run "$work/changes.sql")
  echo "rep $rep: insert unpublished $u tps; published with $SUBSCRIBERS subscribers $p tps"
  changes+=("$u,$p")
done
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM RESET fsync" -c "SELECT pg_reload_conf()" >/dev/null
kill "$loader" 2>/dev/null || true
wait "$loader" 2>/dev/null || true
# RLS-checked deliveries: 500 subscribers of 100 users, each insert visible
# to the 5 sockets of its owner.
# Writers at RLS_RATE inserts/s (RLS_RATE × 5 deliveries/s asked for) for
# RLS_SECONDS: deliveries/s from the first to the last one, and latency.
RLS_RATE="${RLS_RATE:-6000}" RLS_SECONDS="${RLS_SECONDS:-10}"
load 500 100 300 "$work/rls.out" 10
rls_inserts=$(PGPASSWORD="$password" "$(pg_bin "$MAJOR")/pgbench" -n -M prepared -h 127.0.0.1 -p "$port" \
  -U authenticator -c "$CLIENTS" -j 2 -R "$RLS_RATE" -T "$RLS_SECONDS" -f "$work/changes.sql" bench 2>/dev/null \
  | awk '/^tps/ {print $3; exit}')
wait "$loader" || true
rls=$(tail -1 "$work/rls.out")
echo "rls: $rls_inserts inserts/s for $RLS_SECONDS s, subscribers: $rls"
fi

python3 - "$sockets" "$rls" "${rows[*]:-}" "${changes[*]:-}" <<'PY'
import json, statistics, sys
s = json.loads(sys.argv[1])
rls = json.loads(sys.argv[2])
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
if sys.argv[3]:
    p, l, pn, n = zip(*[[float(x) for x in r.split(",")] for r in sys.argv[3].split()])
    ratio("realtime-send-logical (insert with a realtime.send trigger / insert)", l, p)
    ratio("realtime-send-notify (the same over NOTIFY)", n, pn)
if s:
    print(f"RATIO realtime-fanout 1000 sockets: p50 {s['fanout_p50_ms']} ms, p95 {s['fanout_p95_ms']} ms "
          f"({s['fanout_deliveries']} of 50000 delivered)")
    print(f"RATIO realtime-busy 100x100: {s['busy_delivered_per_s']} deliveries/s, "
          f"{s['busy_delivery_ratio']} of what was sent")
    print(f"RATIO realtime-idle-socket {s['rss_per_idle_socket_bytes']} bytes of proxy RSS per joined socket")
if sys.argv[4]:
    u, p = zip(*[[float(x) for x in r.split(",")] for r in sys.argv[4].split()])
    ratio("realtime-write (insert into a published table with subscribers / unpublished)", p, u)
if rls:
    print(f"RATIO realtime-rls 500 subscribers of 100 users: {rls['per_s']} RLS-checked deliveries/s, "
          f"p50 {rls['p50_ms']} ms, p95 {rls['p95_ms']} ms commit to client "
          f"({rls['delivered']} delivered, {rls['wrong_owner']} to the wrong user)")
PY
