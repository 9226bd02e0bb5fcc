#!/usr/bin/env bash
# realtime-instructions (docs/benchmarks.md, "Realtime"): Postgres
# instructions under callgrind, which do not move with this machine's noise,
# for the two realtime paths Postgres runs:
#   visible  one call of fluxbase.realtime_visible as proxy/src/realtime
#            sends it: a batch of CHANGES (3,000) changes to an RLS table
#            (`owner = auth.uid()`), keys `[{"id": "<n>"}…]`, checked for
#            NGROUPS (100) groups of claims `{exp, role: authenticated, sub}`;
#            each change is owned by one user, so it is visible to one group.
#            Per visible (group, change) pair and per delivered change with
#            SOCKETS_PER_GROUP (5) sockets a group (the PART=changes load of
#            realtime.sh: 500 sockets of 100 users).
#   send     one-row INSERT into a table whose row trigger calls
#            realtime.send (public), and the same INSERT without the trigger
#            (realtime.sh's PART=send pair), per statement and their ratio.
# Each statement runs K and 3·K times (visible: 1 and 3; send: N and 11·N)
# in `postgres --single` under `valgrind --tool=callgrind`; the difference ÷
# the extra runs is the cost of one (no start-up or warm-up in it).
# PART=visible|send runs one part only (default: both). SETUP_SQL=FILE runs
# FILE in the database after the set-up (an A/B: e.g. an older definition of
# realtime.send).
# Prints one line per figure and `INSTRUCTIONS <name> <n>` lines last.
source "$(dirname "$0")/lib.sh"
PART="${PART:-all}"
N="${N:-200}"
CHANGES="${CHANGES:-3000}" NGROUPS="${NGROUPS:-100}" SOCKETS_PER_GROUP="${SOCKETS_PER_GROUP:-5}"
command -v valgrind >/dev/null || as_root apt-get install -y -qq valgrind >/dev/null
BENCH_NO_PROXY=1 bench_start
cluster_psql "$MAJOR" "$dir" "$port" -d bench -v changes="$CHANGES" -v groups="$NGROUPS" <<'SQL' >/dev/null
create table public.bench_rows (id bigint generated always as identity primary key, v int not null);
create table public.bench_sent (id bigint generated always as identity primary key, v int not null);
create function public.bench_send() returns trigger language plpgsql as $$
begin
  perform realtime.send(jsonb_build_object('id', new.id, 'v', new.v), 'row', 'bench', false);
  return null;
end $$;
create trigger bench_send after insert on public.bench_sent for each row execute function public.bench_send();
create table public.bench_changes (id bigint generated always as identity primary key, owner uuid not null,
  v int not null);
create index on public.bench_changes (owner);
alter table public.bench_changes enable row level security;
create policy own on public.bench_changes for select to authenticated using (owner = auth.uid());
grant select on public.bench_changes to authenticated;
insert into public.bench_changes (owner, v)
  select ('00000000-0000-4000-8000-' || lpad((i % :groups)::text, 12, '0'))::uuid, 1
  from generate_series(0, :changes - 1) i;
vacuum analyze public.bench_changes;
SQL
if [ -n "${SETUP_SQL:-}" ]; then
  cluster_psql "$MAJOR" "$dir" "$port" -d bench -v ON_ERROR_STOP=1 -f "$SETUP_SQL" >/dev/null
fi
# The statement the proxy sends, with its arguments inlined.
cluster_psql "$MAJOR" "$dir" "$port" -d bench -tA -v changes="$CHANGES" -v groups="$NGROUPS" <<'SQL' > "$work/visible.sql"
select format('SELECT grp, idx FROM fluxbase.realtime_visible(%s::oid, %L::jsonb, %L::jsonb);',
  'public.bench_changes'::regclass::oid,
  (select jsonb_agg(jsonb_build_object('id', i::text) order by i) from generate_series(1, :changes) i),
  (select jsonb_agg(jsonb_build_object('exp', 4102444800, 'role', 'authenticated',
     'sub', '00000000-0000-4000-8000-' || lpad(g::text, 12, '0')) order by g) from generate_series(0, :groups - 1) g));
SQL
visible_pairs=$(cluster_psql "$MAJOR" "$dir" "$port" -d bench -tA -f "$work/visible.sql" | grep -cv '^0|')
echo "visible: $CHANGES changes x $NGROUPS groups, $visible_pairs visible (group, change) pairs"
printf 'INSERT INTO public.bench_rows (v) VALUES (1);\n' > "$work/rows.sql"
printf 'INSERT INTO public.bench_sent (v) VALUES (1);\n' > "$work/sent.sql"
test "$(cluster_psql "$MAJOR" "$dir" "$port" -d bench -tA -c 'show wal_level')" = logical
cluster_stop "$MAJOR" "$dir"

out="$dir-callgrind"
as_root mkdir -p "$out"
as_root chown postgres "$out"
run() { # run NAME STATEMENT_FILE TIMES: callgrind-NAME-TIMES.out
  python3 -c 'import sys; sys.stdout.write(open(sys.argv[1]).read() * int(sys.argv[2]))' "$2" "$3" \
    | as_root tee "$out/statements-$1-$3.sql" >/dev/null
  as_root chown postgres "$out/statements-$1-$3.sql"
  as_pg valgrind --tool=callgrind --callgrind-out-file="$out/callgrind-$1-$3.out" \
    "$(pg_bin "$MAJOR")/postgres" --single -D "$dir" -c log_min_messages=fatal bench \
    < "$out/statements-$1-$3.sql" > /dev/null 2>"$out/valgrind-$1-$3.log"
}
if [ "$PART" = all ] || [ "$PART" = visible ]; then
  run visible "$work/visible.sql" 1
  run visible "$work/visible.sql" 3
fi
if [ "$PART" = all ] || [ "$PART" = send ]; then
  for t in rows sent; do
    run "$t" "$work/$t.sql" "$N"
    run "$t" "$work/$t.sql" "$((11 * N))"
  done
fi
python3 - "$out" "$N" "$CHANGES" "$NGROUPS" "$visible_pairs" "$SOCKETS_PER_GROUP" <<'PY'
import os, sys
out, n, changes, groups, pairs, sockets = sys.argv[1], *map(int, sys.argv[2:])
def total(name, k):
    path = f"{out}/callgrind-{name}-{k}.out"
    return next(int(l.split()[1]) for l in open(path) if l.startswith(("summary:", "totals:")))
lines = []
if os.path.exists(f"{out}/callgrind-visible-1.out"):
    call = (total("visible", 3) - total("visible", 1)) / 2
    print(f"fluxbase.realtime_visible, {changes} changes x {groups} groups: {call:,.0f} instructions a call, "
          f"{call / (changes * groups):,.0f} per (group, change) check, {call / pairs:,.0f} per visible pair, "
          f"{call / (pairs * sockets):,.0f} per delivered change ({sockets} sockets a group)")
    lines += [f"INSTRUCTIONS realtime-visible-call {call:.0f}",
              f"INSTRUCTIONS realtime-visible-per-check {call / (changes * groups):.0f}",
              f"INSTRUCTIONS realtime-visible-per-delivery {call / (pairs * sockets):.0f}"]
if os.path.exists(f"{out}/callgrind-rows-{n}.out"):
    per = lambda name: (total(name, 11 * n) - total(name, n)) / (10 * n)
    rows, sent = per("rows"), per("sent")
    print(f"insert: {rows:,.0f} instructions; insert with a realtime.send trigger: {sent:,.0f} "
          f"(+{sent - rows:,.0f}, ratio {rows / sent:.2f})")
    lines += [f"INSTRUCTIONS realtime-insert {rows:.0f}", f"INSTRUCTIONS realtime-insert-send {sent:.0f}"]
print("\n".join(lines))
PY
if [ -n "${KEEP:-}" ]; then
  as_root cp -r "$out" "$KEEP"
  echo "callgrind files kept in $KEEP"
fi
as_root rm -rf "$out"
