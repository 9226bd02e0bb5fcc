#!/usr/bin/env bash
# Benchmarks realtime (docs/benchmarks.md, "Realtime"):
#   send     inserts/s of a transaction that also calls realtime.send, against
#            the same transaction without it (pgbench, CLIENTS clients,
#            interleaved REPS times), over logical decoding (the default where
#            wal_level = logical) and over NOTIFY (the fallback), with a proxy
#            reading the messages (one socket joined keeps its feed running)
#   sockets  realtime-load.mjs: proxy RSS per idle joined socket (1,000),
#            fan-out latency p50/p95 of one message to 1,000 sockets, and
#            deliveries/s with 100 senders and 100 receivers on one topic
# Prints one line per measurement and RATIO lines last.
source "$(dirname "$0")/lib.sh"
ulimit -n 65536 2>/dev/null || true
bench_start
cluster_psql "$MAJOR" "$dir" "$port" -d bench <<SQL >/dev/null
create table public.bench_rows (id bigint generated always as identity primary key, v int not null);
grant insert on public.bench_rows to authenticator;
grant usage on sequence public.bench_rows_id_seq to authenticator;
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

cat > "$work/plain.sql" <<'SQL'
BEGIN;
INSERT INTO public.bench_rows (v) VALUES (1);
COMMIT;
SQL
cat > "$work/send.sql" <<'SQL'
BEGIN;
INSERT INTO public.bench_rows (v) VALUES (1);
SELECT realtime.send('{"v": 1}', 'row', 'bench', false);
COMMIT;
SQL
cat > "$work/notify.sql" <<'SQL'
BEGIN;
SET LOCAL fluxbase.realtime_transport = 'notify';
INSERT INTO public.bench_rows (v) VALUES (1);
SELECT realtime.send('{"v": 1}', 'row', 'bench', false);
COMMIT;
SQL
# realtime.send inserts into realtime.messages as the caller: the bench
# runs as authenticator, which may not (no policy), so give it one.
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "grant insert on realtime.messages to authenticator" \
  -c "create policy bench_send on realtime.messages for insert to authenticator with check (true)" >/dev/null
rows=()
for rep in $(seq 1 "$REPS"); do
  p=$(pgbench_run "$work/plain.sql"); s=$(pgbench_run "$work/send.sql"); n=$(pgbench_run "$work/notify.sql")
  echo "rep $rep: insert $p tps, insert + realtime.send (logical) $s tps, insert + realtime.send (NOTIFY) $n tps"
  rows+=("$p,$s,$n")
done
sent=$(cluster_psql "$MAJOR" "$dir" "$port" -d bench -tA -c "select count(*) from realtime.messages where topic = 'bench'")
echo "messages stored: $sent"
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "delete from realtime.messages" >/dev/null

sockets=$("$NODE22" "$FLUXBASE_ROOT/tests/bench/realtime-load.mjs" "http://127.0.0.1:$http_port" "$FLUXBASE_API_KEYS_ANON" "$proxy")
echo "sockets: $sockets"
python3 - "$sockets" "${rows[@]}" <<'PY'
import json, statistics, sys
s = json.loads(sys.argv[1])
p, l, n = zip(*[[float(x) for x in r.split(",")] for r in sys.argv[2:]])
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
ratio("realtime-send-logical (insert + realtime.send / insert)", l, p)
ratio("realtime-send-notify (the same over NOTIFY / insert)", n, p)
print(f"RATIO realtime-fanout 1000 sockets: p50 {s['fanout_p50_ms']} ms, p95 {s['fanout_p95_ms']} ms "
      f"({s['fanout_deliveries']} of 50000 delivered)")
print(f"RATIO realtime-busy 100x100: {s['busy_delivered_per_s']} deliveries/s, "
      f"{s['busy_delivery_ratio']} of what was sent")
print(f"RATIO realtime-idle-socket {s['rss_per_idle_socket_bytes']} bytes of proxy RSS per joined socket")
PY
