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
# Prints one line per measurement and RATIO lines last.
source "$(dirname "$0")/lib.sh"
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
python3 - "$sockets" "${rows[@]}" <<'PY'
import json, statistics, sys
s = json.loads(sys.argv[1])
p, l, pn, n = zip(*[[float(x) for x in r.split(",")] for r in sys.argv[2:]])
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
ratio("realtime-send-logical (insert with a realtime.send trigger / insert)", l, p)
ratio("realtime-send-notify (the same over NOTIFY)", n, pn)
print(f"RATIO realtime-fanout 1000 sockets: p50 {s['fanout_p50_ms']} ms, p95 {s['fanout_p95_ms']} ms "
      f"({s['fanout_deliveries']} of 50000 delivered)")
print(f"RATIO realtime-busy 100x100: {s['busy_delivered_per_s']} deliveries/s, "
      f"{s['busy_delivery_ratio']} of what was sent")
print(f"RATIO realtime-idle-socket {s['rss_per_idle_socket_bytes']} bytes of proxy RSS per joined socket")
PY
