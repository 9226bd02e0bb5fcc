#!/usr/bin/env bash
# realtime-send-sql (docs/benchmarks.md, "Realtime"): realtime.sh's PART=send
# pair without the proxy, so the writers have the two cores to themselves:
# inserts/s of `INSERT INTO t (v) VALUES (1)` into a table without a trigger,
# with a row trigger calling realtime.send (public, as realtime.sh's), and
# with the same trigger calling realtime.send's former PL/pgSQL body
# (0.6.0, copied here as public.bench_send_plpgsql), pgbench CLIENTS (8)
# clients, fsync on, interleaved REPS (5) times. wal_level is logical, so
# every message is a logical-decoding message in the WAL; no slot reads it.
# Prints one line per rep and RATIO lines last.
source "$(dirname "$0")/lib.sh"
BENCH_NO_PROXY=1 bench_start
cluster_psql "$MAJOR" "$dir" "$port" -d bench <<'SQL' >/dev/null
create table public.bench_rows (id bigint generated always as identity primary key, v int not null);
create table public.bench_sent (id bigint generated always as identity primary key, v int not null);
create table public.bench_sent_old (id bigint generated always as identity primary key, v int not null);
create function public.bench_send() returns trigger language plpgsql as $$
begin
  perform realtime.send(jsonb_build_object('id', new.id, 'v', new.v), 'row', 'bench', false);
  return null;
end $$;
create function public.bench_send_plpgsql(payload jsonb, event text, topic text, private boolean DEFAULT true)
returns void language plpgsql as $$
begin
  if not coalesce(private, true) then
    perform fluxbase.realtime_publish(topic, event, payload::text, NULL);
    return;
  end if;
  raise exception 'public messages only here';
end $$;
create function public.bench_send_old() returns trigger language plpgsql as $$
begin
  perform public.bench_send_plpgsql(jsonb_build_object('id', new.id, 'v', new.v), 'row', 'bench', false);
  return null;
end $$;
create trigger bench_send after insert on public.bench_sent for each row execute function public.bench_send();
create trigger bench_send after insert on public.bench_sent_old for each row execute function public.bench_send_old();
grant insert on public.bench_rows, public.bench_sent, public.bench_sent_old to authenticator;
grant usage on sequence public.bench_rows_id_seq, public.bench_sent_id_seq, public.bench_sent_old_id_seq to authenticator;
SQL
test "$(cluster_psql "$MAJOR" "$dir" "$port" -d bench -tA -c 'show wal_level')" = logical
for t in rows sent sent_old; do
  printf 'BEGIN;\nINSERT INTO public.bench_%s (v) VALUES (1);\nCOMMIT;\n' "$t" > "$work/$t.sql"
done
cluster_psql "$MAJOR" "$dir" "$port" -d bench -c "ALTER SYSTEM SET fsync = on" -c "SELECT pg_reload_conf()" >/dev/null
rows=()
for rep in $(seq 1 "$REPS"); do
  p=$(pgbench_run "$work/rows.sql"); s=$(pgbench_run "$work/sent.sql"); o=$(pgbench_run "$work/sent_old.sql")
  echo "rep $rep: insert $p tps; with a realtime.send trigger $s tps; with the PL/pgSQL realtime.send $o tps"
  rows+=("$p,$s,$o")
done
python3 - "${rows[*]}" <<'PY'
import statistics, sys
p, s, o = zip(*[[float(x) for x in r.split(",")] for r in sys.argv[1].split()])
def ratio(name, a, b):
    r = [x / y for x, y in zip(a, b)]
    print(f"RATIO {name} {statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f}, n={len(r)})")
ratio("realtime-send-sql (insert with a realtime.send trigger / insert, no proxy)", s, p)
ratio("realtime-send-sql-plpgsql (the same with 0.6.0's PL/pgSQL realtime.send)", o, p)
PY
