#!/usr/bin/env bash
# Times `pgincr verify` against `pg_verifybackup` on the same backups of a pgbench data set.
#
# Builds the backups once (kept in $WORK for later runs): a cluster with data checksums,
# pgbench scale $SCALE, then by pg_basebackup a plain backup, an uncompressed tar backup
# (pg_wal.tar) and a gzip one (-z), and by `pgincr backup -F t` an lz4 one. Then for each
# backup runs each command $RUNS times, page cache warm (every file read once first), the
# commands interleaved, and prints the best wall time, its user+sys CPU, peak RSS and the ratio
# to pg_verifybackup. `cat` of the same files is the read floor.
#
# Rows: pg_verifybackup (WAL parsed with pg_waldump; tar only in 18, and only with -n, as its
# pg_waldump cannot read tar); `pgincr verify` with the same checks (--no-page-checksums; -n
# where upstream needs it); and `pgincr verify` as it runs by default (page checksums on every
# relation block, WAL parsed from inside pg_wal.tar).
#
#   benches/verify.sh                     # PostgreSQL 18, scale 30
#   MAJOR=17 SCALE=10 benches/verify.sh
#   WORK=/big/disk/v benches/verify.sh
set -euo pipefail

MAJOR=${MAJOR:-18}
SCALE=${SCALE:-30}
RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/pgincr-bench-verify-pg$MAJOR-s$SCALE}
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

build() {
    echo "building backups in $WORK: PostgreSQL $MAJOR, scale $SCALE, data checksums on..." >&2
    rm -rf "$WORK"
    mkdir -p "$WORK"
    chmod 755 "$WORK"
    [ "$(id -u)" = 0 ] && chown pgincr-pg: "$WORK"
    as_server "$BIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C \
        --no-sync --data-checksums >/dev/null
    cat >>"$WORK/data/postgresql.conf" <<CONF
wal_level = replica
fsync = off
max_wal_size = 4GB
shared_buffers = 256MB
listen_addresses = ''
unix_socket_directories = '$WORK'
CONF
    as_server "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w start >/dev/null
    trap 'as_server "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true' EXIT
    export PGHOST=$WORK PGUSER=postgres PGDATABASE=postgres
    "$BIN/pgbench" -i -q -s "$SCALE" >/dev/null 2>&1
    "$BIN/psql" -qc checkpoint
    "$BIN/pg_basebackup" -D "$WORK/plain" -c fast
    "$BIN/pg_basebackup" -D "$WORK/tar" -c fast -Ft
    "$BIN/pg_basebackup" -D "$WORK/tgz" -c fast -Ft -z
    "$PGINCR" backup -d "host=$WORK user=postgres" -D "$WORK/tlz4" -c fast -F t -Z lz4 >/dev/null
    as_server "$BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null
    trap - EXIT
    rm -rf "$WORK/data"
    touch "$WORK/complete"
}

[ -f "$WORK/complete" ] || build

# Prints "wall user+sys maxrss_mb" of the fastest of $RUNS runs of "$@" (exit status 0
# required: a bench of a failing check measures nothing).
measure() {
    local out
    out=$(for _ in $(seq "$RUNS"); do
        if ! "$@" >/dev/null 2>&1; then echo "FAILED: $*" >&2; exit 1; fi
        time_once "$@"
    done | best)
    # shellcheck disable=SC2086
    set -- $out
    awk -v w="$1" -v u="$2" -v s="$3" -v m="$4" 'BEGIN { printf "%.2f %.2f %.0f\n", w, u + s, m / 1024 }'
}

row() { # label backup-size-mb base-wall result...
    local label=$1 base=$2 w c m
    read -r w c m <<<"$3"
    local ratio
    ratio=$(awk -v a="$w" -v b="$base" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "-" }')
    printf "%-46s %8s %9s %8s %7s\n" "$label" "$w" "$c" "$m" "$ratio"
}

size_mb() { du -sm "$1" | cut -f1; }

echo
echo "PostgreSQL $MAJOR, pgbench scale $SCALE, data checksums on, page cache warm, best of $RUNS"
echo "$(nproc) cores; pgincr: $PGINCR"
printf "%-46s %8s %9s %8s %7s\n" "command" "wall s" "cpu s" "rss MB" "vs pg"
for b in plain tar tgz tlz4; do
    dir=$WORK/$b
    find "$dir" -type f -exec cat {} + >/dev/null
    echo "--- $b ($(size_mb "$dir") MB)"
    cat_r=$(measure sh -c "find '$dir' -type f -exec cat {} + >/dev/null")
    if [ "$b" = plain ]; then
        pg=$(measure "$BIN/pg_verifybackup" -q "$dir")
        same=$(measure "$PGINCR" verify -q --no-page-checksums "$dir")
        full=$(measure "$PGINCR" verify -q "$dir")
        same_label="pgincr verify --no-page-checksums"
    else
        # 17 cannot read tar at all; an 18 built without lz4 cannot read tlz4.
        if [ "$MAJOR" -ge 18 ] && "$BIN/pg_verifybackup" -q -n "$dir" >/dev/null 2>&1; then
            pg=$(measure "$BIN/pg_verifybackup" -q -n "$dir")
        else
            pg="- - -"
        fi
        same=$(measure "$PGINCR" verify -q -n --no-page-checksums "$dir")
        full=$(measure "$PGINCR" verify -q "$dir")
        same_label="pgincr verify -n --no-page-checksums"
    fi
    base=$(echo "$pg" | cut -d' ' -f1)
    [ "$base" = - ] && base=0
    row "cat (read floor)" "$base" "$cat_r"
    if [ "$b" = plain ]; then
        row "pg_verifybackup" "$base" "$pg"
    else
        row "pg_verifybackup -n" "$base" "$pg"
    fi
    row "$same_label" "$base" "$same"
    row "pgincr verify (pages + WAL)" "$base" "$full"
done
