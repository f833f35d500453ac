#!/usr/bin/env bash
# `pgincr archive-push` against the archive_command lines people use instead, one process per
# segment as the archiver runs them, over the same $SEGS real WAL segments, on the same disk:
#
#   test ! -f DIR/%f && cp %p DIR/%f      no fsync at all (what the PostgreSQL docs show)
#   cp %p DIR/%f && sync DIR/%f           the file fsynced (not its directory)
#   gzip -c %p > DIR/%f.gz && sync        gzip -6, file fsynced
#   pgincr archive-push %p --archive DIR  header check, temp file, fsync, link, dir fsync
#   ... --compress lz4 / zstd:3 / gzip:6
#   ... --ahead 3                         the next 3 .ready segments pushed in parallel too
#
# Builds the WAL once (kept in $WORK): pgbench scale 10 and `pgbench -c 4 -j 2` until $SEGS
# completed segments exist. Each method archives all $SEGS into a fresh directory; best of
# $RUNS; wall seconds, user+sys CPU of all the processes, segments per second and archive size.
#
#   benches/archive_push.sh                  # PostgreSQL 18, 64 segments, best of 2
#   SEGS=32 RUNS=1 PGINCR=target/debug/pgincr benches/archive_push.sh
#   ROWS='pgincr' benches/archive_push.sh    # only the rows whose name matches
set -euo pipefail

MAJOR=${MAJOR:-18}
SEGS=${SEGS:-64}
RUNS=${RUNS:-2}
WORK=${WORK:-/tmp/pgincr-bench-archive-pg$MAJOR}
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

SRC=$WORK/segments
build_wal() {
    echo "building $SEGS WAL segments in $WORK (PostgreSQL $MAJOR)..." >&2
    rm -rf "$WORK"
    mkdir -p "$WORK"
    chmod 755 "$WORK"
    if [ "$(id -u)" = 0 ]; then chown pgincr-pg: "$WORK"; fi
    as_server "$BIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
    cat >>"$WORK/data/postgresql.conf" <<CONF
wal_level = replica
fsync = off
max_wal_size = 16GB
wal_keep_size = 16GB
checkpoint_timeout = 30min
listen_addresses = ''
unix_socket_directories = '$WORK'
CONF
    as_server "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w start >/dev/null
    trap 'as_server "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true' EXIT
    export PGHOST=$WORK PGUSER=postgres PGDATABASE=postgres
    "$BIN/pgbench" -i -q -s 10 >/dev/null 2>&1
    while [ "$(find "$WORK/data/pg_wal" -maxdepth 1 -regextype posix-extended -regex '.*/[0-9A-F]{24}' | wc -l)" -le "$SEGS" ]; do
        "$BIN/pgbench" -c 4 -j 2 -T 3 >/dev/null 2>&1
    done
    "$BIN/psql" -XAtq -c "SELECT pg_switch_wal()" >/dev/null
    as_server "$BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null
    trap - EXIT
    mkdir -p "$SRC"
    # The oldest $SEGS complete segments (the newest one may be in use).
    (cd "$WORK/data/pg_wal" && ls | grep -E '^[0-9A-F]{24}$' | sort | head -n "$SEGS" | xargs -I{} cp {} "$SRC/")
    rm -rf "$WORK/data"
}
[ "$(ls "$SRC" 2>/dev/null | wc -l)" -ge "$SEGS" ] || build_wal
mapfile -t FILES < <(ls "$SRC" | grep -E '^[0-9A-F]{24}$' | sort | head -n "$SEGS")
MB=$(( ${#FILES[@]} * 16 ))

OUT=$WORK/out
method() { # name, command with %p / %f / DIR placeholders[, setup command]
    local cmd=$2 best="" line
    if ! [[ $1 =~ ${ROWS:-.} ]]; then return; fi
    for _ in $(seq "$RUNS"); do
        rm -rf "$OUT"
        mkdir -p "$OUT"
        if [ -n "${3:-}" ]; then bash -c "$3"; fi
        sync
        TIMEFORMAT='%R %U %S'
        line=$( { time (for f in "${FILES[@]}"; do
            c=${cmd//%p/$SRC/$f}
            c=${c//%f/$f}
            c=${c//DIR/$OUT}
            bash -c "$c" || { echo "failed: $c" >&2; exit 1; }
        done) ; } 2>&1 )
        if [ -z "$best" ] || [ "$(echo "${line%% *} < ${best%% *}" | bc)" = 1 ]; then best=$line; fi
    done
    read -r wall user sys <<<"$best"
    size=$(du -sm "$OUT" | cut -f1)
    printf '%-46s %8.2f %10.2f %8.1f %9d %7.2f\n' "$1" "$wall" "$(echo "$user + $sys" | bc)" \
        "$(echo "${#FILES[@]} / ($wall + 0.0001)" | bc -l)" "$size" "$(echo "$MB / ($size + 0.0001)" | bc -l)"
}

echo
echo "${#FILES[@]} segments ($MB MiB of WAL, PostgreSQL $MAJOR), one process per segment, best of $RUNS, $(df -P "$WORK" | awk 'NR==2 {print $1}')"
printf '%-46s %8s %10s %8s %9s %7s\n' method "wall s" "user+sys" "segs/s" "size MiB" ratio
method "test ! -f && cp (no fsync)" 'test ! -f DIR/%f && cp %p DIR/%f'
method "cp && sync FILE" 'cp %p DIR/%f && sync DIR/%f'
method "gzip -6 && sync FILE" 'gzip -6 -c %p > DIR/%f.gz && sync DIR/%f.gz'
method "pgincr archive-push" "$PGINCR archive-push %p --archive DIR"
method "pgincr archive-push --compress lz4" "$PGINCR archive-push %p --archive DIR --compress lz4"
method "pgincr archive-push --compress zstd:3" "$PGINCR archive-push %p --archive DIR --compress zstd:3"
method "pgincr archive-push --compress gzip:6" "$PGINCR archive-push %p --archive DIR --compress gzip:6"
method "pgincr archive-push twice (2nd: identical)" "$PGINCR archive-push %p --archive DIR && $PGINCR archive-push %p --archive DIR"
# As the archiver runs it: .ready files for all, each renamed to .done after its call.
READY="rm -rf $SRC/archive_status && mkdir $SRC/archive_status && for f in \$(ls $SRC | grep -E '^[0-9A-F]{24}\$'); do touch $SRC/archive_status/\$f.ready; done"
DONE="mv $SRC/archive_status/%f.ready $SRC/archive_status/%f.done"
method "pgincr archive-push --ahead 3" "$PGINCR archive-push %p --archive DIR --ahead 3 && $DONE" "$READY"
method "pgincr archive-push --ahead 3 --compress zstd:3" "$PGINCR archive-push %p --archive DIR --ahead 3 --compress zstd:3 && $DONE" "$READY"
rm -rf "$OUT" "$SRC/archive_status"
