#!/usr/bin/env bash
# Times `pgincr summary show` against `pg_walsummary` on the same real summary files.
#
# Starts a throwaway cluster (summarize_wal=on), runs a pgbench workload cut into several
# summaries by checkpoints, copies the summaries until the set holds about $TARGET_MB MB, then
# times both tools over the whole set (ranges, -i and -q), best of $RUNS, output to /dev/null,
# after checking that both print the same bytes. Prints a table of wall time and MB/s.
#
#   benches/summary.sh                 # PostgreSQL 18, pgbench scale 30
#   MAJOR=17 SCALE=10 TARGET_MB=32 RUNS=5 benches/summary.sh
set -euo pipefail

MAJOR=${MAJOR:-18}
SCALE=${SCALE:-30}
TARGET_MB=${TARGET_MB:-64}
RUNS=${RUNS:-3}
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

WORK=$(mktemp -d /tmp/pgincr-bench-summary-XXXXXX)
chmod 755 "$WORK"
cleanup() {
    as_server "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] && chown pgincr-pg: "$WORK"

echo "generating summaries: PostgreSQL $MAJOR, pgbench scale $SCALE..." >&2
as_server "$BIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
cat >>"$WORK/data/postgresql.conf" <<CONF
summarize_wal = on
wal_level = replica
fsync = off
max_wal_size = 4GB
listen_addresses = ''
unix_socket_directories = '$WORK'
CONF
as_server "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w start >/dev/null
export PGHOST=$WORK PGUSER=postgres PGDATABASE=postgres
psql() { "$BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 "$@"; }
wait_summarized() {
    psql -c CHECKPOINT
    local redo
    redo=$(psql -c "SELECT redo_lsn FROM pg_control_checkpoint()")
    until [ "$(psql -c "SELECT summarized_lsn >= '$redo' FROM pg_get_wal_summarizer_state()")" = t ]; do
        sleep 0.2
    done
}
"$BIN/pgbench" -i -q -s "$SCALE" >/dev/null 2>&1
wait_summarized
for i in 1 2 3 4; do
    "$BIN/pgbench" -n -c 2 -t $((SCALE * 1000)) >/dev/null 2>&1
    psql -c "UPDATE pgbench_accounts SET filler = 'x' WHERE aid % $((i * 7)) = 0"
    wait_summarized
done

SET=$WORK/set
mkdir "$SET"
cp "$WORK"/data/pg_wal/summaries/*.summary "$SET/"
real_files=$(ls "$SET" | wc -l)
real_bytes=$(cat "$SET"/*.summary | wc -c)
copy=0
while [ "$(cat "$SET"/*.summary | wc -c)" -lt $((TARGET_MB * 1024 * 1024)) ]; do
    copy=$((copy + 1))
    for f in "$WORK"/data/pg_wal/summaries/*.summary; do
        cp "$f" "$SET/copy$copy-$(basename "$f")"
    done
done
FILES=("$SET"/*.summary)
total_bytes=$(cat "${FILES[@]}" | wc -c)
cat "${FILES[@]}" >/dev/null # warm the page cache

for flags in "" "-i"; do
    if ! cmp -s <("$PGINCR" summary show $flags "${FILES[@]}") <("$BIN/pg_walsummary" $flags "${FILES[@]}"); then
        echo "output differs for flags '$flags'" >&2
        exit 1
    fi
done
out_lines=$("$BIN/pg_walsummary" "${FILES[@]}" | wc -l)
out_lines_i=$("$BIN/pg_walsummary" -i "${FILES[@]}" | wc -l)

best_wall() { # best wall time in seconds of $RUNS runs of "$@"
    local best_wall="" t s e
    for _ in $(seq "$RUNS"); do
        s=$(date +%s.%N)
        "$@" >/dev/null
        e=$(date +%s.%N)
        t=$(echo "$e - $s" | bc -l)
        if [ -z "$best_wall" ] || [ "$(echo "$t < $best_wall" | bc -l)" = 1 ]; then best_wall=$t; fi
    done
    echo "$best_wall"
}

echo
echo "PostgreSQL $MAJOR summaries: $real_files real files ($real_bytes bytes) + $copy copies of the set:"
echo "$((${#FILES[@]})) files, $total_bytes bytes; output $out_lines lines ($out_lines_i with -i)."
echo "Best of $RUNS runs, output to /dev/null; MB/s = summary bytes read per second."
echo
printf "| %-6s | %-16s | %-16s | %-16s | %-16s | %-7s |\n" mode "pg_walsummary s" "pg_walsummary MB/s" "pgincr s" "pgincr MB/s" speedup
printf "|%s|%s|%s|%s|%s|%s|\n" -------- ------------------ -------------------- ------------------ ------------------ ---------
for flags in "" "-i" "-q"; do
    tp=$(best_wall "$BIN/pg_walsummary" $flags "${FILES[@]}")
    tr=$(best_wall "$PGINCR" summary show $flags "${FILES[@]}")
    mb=$(echo "$total_bytes / 1048576" | bc -l)
    printf "| %-6s | %16.3f | %18.1f | %16.3f | %16.1f | %6.1fx |\n" "${flags:-ranges}" \
        "$tp" "$(echo "$mb / $tp" | bc -l)" "$tr" "$(echo "$mb / $tr" | bc -l)" "$(echo "$tp / $tr" | bc -l)"
done
