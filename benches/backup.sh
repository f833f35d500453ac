#!/usr/bin/env bash
# pgincr backup vs pg_basebackup, side by side.
#
#   benches/backup.sh [SCALE] [MAJOR]       defaults: SCALE=300 (about 4.5 GB), MAJOR=17
#
# Environment: REPEAT (runs per cell, median reported; default 1), BENCH_DIR (default
# /tmp/pgincr-bench-backup), PGINCR (binary; default: built with cargo --release),
# INCR_SECONDS (pgbench seconds before the incremental row; default 8).
#
# Rows: full plain, full tar, tar+zstd, tar+lz4, tar+gzip (all -X stream -c fast), and an
# incremental (plain) after INCR_SECONDS of pgbench, both tools on top of the same upstream full
# backup. Cells: wall seconds, client user+sys CPU seconds (children included), peak RSS.
# Both tools fsync their output (their default). MAJOR=17 by default because the PostgreSQL 18
# wheel's pg_basebackup is built without lz4 and zstd.
set -euo pipefail

SCALE=${1:-300}
MAJOR=${2:-17}
REPEAT=${REPEAT:-1}
INCR_SECONDS=${INCR_SECONDS:-8}
BENCH_DIR=${BENCH_DIR:-/tmp/pgincr-bench-backup}
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

DATA=$BENCH_DIR/data
SOCK=$BENCH_DIR/sock
OUT=$BENCH_DIR/out
PORT=${PORT:-54329}
export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres LC_ALL=C
unset PGDATA PGDATABASE PGPASSWORD

stop_server() { as_server "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true; }
trap stop_server EXIT

mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
if [ ! -f "$DATA/.scale-$SCALE" ]; then
    stop_server
    rm -rf "$DATA" "$SOCK"
    mkdir -p "$SOCK"
    [ "$(id -u)" = 0 ] && chown pgincr-pg "$BENCH_DIR" "$SOCK"
    as_server "$BIN/initdb" -D "$DATA" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C >/dev/null
    cat >>"$DATA/postgresql.conf" <<CONF
listen_addresses = ''
unix_socket_directories = '$SOCK'
port = $PORT
wal_level = replica
summarize_wal = on
max_wal_senders = 10
shared_buffers = 1GB
max_wal_size = 8GB
checkpoint_timeout = 30min
CONF
    as_server "$BIN/pg_ctl" -D "$DATA" -l "$BENCH_DIR/server.log" -w start >/dev/null
    echo "loading pgbench scale $SCALE ..." >&2
    "$BIN/pgbench" -i -q -s "$SCALE" postgres >&2
    "$BIN/psql" -Xqc "CHECKPOINT" postgres
    as_server touch "$DATA/.scale-$SCALE"
elif ! as_server "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_server "$BIN/pg_ctl" -D "$DATA" -l "$BENCH_DIR/server.log" -w start >/dev/null
fi
SIZE=$("$BIN/psql" -XAtc "SELECT pg_size_pretty(pg_database_size('postgres'))" postgres)

# measure OUTDIR CMD... -> "wall user+sys maxrss_kb"
measure() {
    local dir=$1; shift
    rm -rf "$dir"
    sync
    /usr/bin/time -f "%e %U %S %M" -o "$BENCH_DIR/time" "$@" >/dev/null 2>"$BENCH_DIR/stderr" || {
        cat "$BENCH_DIR/stderr" >&2
        exit 1
    }
    read -r wall user sys rss <"$BENCH_DIR/time"
    awk -v w="$wall" -v u="$user" -v s="$sys" -v m="$rss" 'BEGIN {print w, u + s, m}'
    rm -rf "$dir"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# cell TOOL ARGS... -> median of REPEAT runs: "wall cpu rss"
cell() {
    local tool=$1; shift
    local runs=()
    for _ in $(seq "$REPEAT"); do
        if [ "$tool" = pg ]; then
            runs+=("$(measure "$OUT" "$BIN/pg_basebackup" -D "$OUT" "$@")")
        else
            runs+=("$(measure "$OUT" "$PGINCR" backup -D "$OUT" "$@")")
        fi
    done
    local w c m
    w=$(printf '%s\n' "${runs[@]}" | awk '{print $1}' | median)
    c=$(printf '%s\n' "${runs[@]}" | awk '{print $2}' | median)
    m=$(printf '%s\n' "${runs[@]}" | awk '{print $3}' | median)
    echo "$w $c $m"
}

row() {
    local name=$1; shift
    local pg ours
    pg=$(cell pg "$@")
    ours=$(cell ours "$@")
    read -r pw pc pm <<<"$pg"
    read -r ow oc om <<<"$ours"
    printf '| %s | %.1f s | %.1f s | %d MB | %.1f s | %.1f s | %d MB | %.2fx | %.2fx |\n' \
        "$name" "$pw" "$pc" $((pm / 1024)) "$ow" "$oc" $((om / 1024)) \
        "$(awk -v a="$ow" -v b="$pw" 'BEGIN {print a / b}')" "$(awk -v a="$oc" -v b="$pc" 'BEGIN {print a / b}')"
}

echo "pgbench scale $SCALE ($SIZE), PostgreSQL $MAJOR, $(nproc) cores, REPEAT=$REPEAT"
echo
echo "| row | pg_basebackup wall | CPU | peak RSS | pgincr wall | CPU | peak RSS | wall ratio | CPU ratio |"
echo "|---|---|---|---|---|---|---|---|---|"
row "full plain" -F p -X stream -c fast
row "full tar" -F t -X stream -c fast
row "tar + zstd" -F t -X stream -c fast -Z zstd
row "tar + lz4" -F t -X stream -c fast -Z lz4
row "tar + gzip" -F t -X stream -c fast -Z gzip

# Incremental: both on top of one upstream full backup, after INCR_SECONDS of pgbench.
BASE=$BENCH_DIR/base
rm -rf "$BASE"
"$BIN/pg_basebackup" -D "$BASE" -c fast -X stream
"$BIN/pgbench" -n -c 2 -T "$INCR_SECONDS" postgres >/dev/null
"$BIN/psql" -Xqc "CHECKPOINT" postgres
row "incremental (${INCR_SECONDS} s pgbench)" -F p -X stream -c fast -i "$BASE/backup_manifest"
rm -rf "$BASE"
