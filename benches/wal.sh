#!/usr/bin/env bash
# Times pgincr-wal's reader (`walstats`, crates/wal/examples/walstats.rs: every record read,
# CRC-checked and its block references decoded) against `pg_waldump --stats` over the same
# segments, and checks that both count the same records.
#
# Builds a WAL directory once (kept in $WORK): pgbench scale $SCALE, then $SECS s of
# `pgbench -c 4 -j 2`, with every segment kept. Then runs both readers $RUNS times (page cache
# warm, interleaved) and prints the best wall time, its user+sys CPU and peak RSS.
#
#   benches/wal.sh                         # PostgreSQL 18, scale 10, 20 s of pgbench
#   MAJOR=17 SCALE=5 SECS=5 benches/wal.sh
set -euo pipefail

MAJOR=${MAJOR:-18}
SCALE=${SCALE:-10}
SECS=${SECS:-20}
RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/pgincr-bench-wal-pg$MAJOR-s$SCALE-t$SECS}
# The reader is a library: common.sh need not build the pgincr binary.
PGINCR=${PGINCR:-unused}
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

echo "building walstats (release)..." >&2
(cd "$ROOT" && cargo build --release -q -p pgincr-wal --example walstats)
WALSTATS=${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/walstats

build_wal() {
    echo "building WAL in $WORK: PostgreSQL $MAJOR, scale $SCALE, $SECS s of pgbench..." >&2
    rm -rf "$WORK"
    mkdir -p "$WORK"
    chmod 755 "$WORK"
    [ "$(id -u)" = 0 ] && chown pgincr-pg: "$WORK"
    as_server "$BIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
    cat >>"$WORK/data/postgresql.conf" <<CONF
wal_level = replica
fsync = off
max_wal_size = 16GB
wal_keep_size = 16GB
checkpoint_timeout = 30min
shared_buffers = 256MB
listen_addresses = ''
unix_socket_directories = '$WORK'
CONF
    as_server "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w start >/dev/null
    trap 'as_server "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true' EXIT
    export PGHOST=$WORK PGUSER=postgres PGDATABASE=postgres
    "$BIN/pgbench" -i -q -s "$SCALE" >/dev/null 2>&1
    "$BIN/pgbench" -c 4 -j 2 -T "$SECS" >/dev/null 2>&1
    "$BIN/psql" -XAtq -c CHECKPOINT
    "$BIN/psql" -XAtq -c "SELECT pg_current_wal_flush_lsn()" >"$WORK/end_lsn"
    as_server "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null
    trap - EXIT
    first=$(cd "$WORK/data/pg_wal" && ls | grep -E '^[0-9A-F]{24}$' | sort | head -1)
    # 16 MiB segments: LSN = log/seg from the name's second and third words.
    printf '%X/%X\n' $((16#${first:8:8})) $(((16#${first:16:8}) * 16777216)) >"$WORK/start_lsn"
}

[ -f "$WORK/end_lsn" ] || build_wal
START=$(cat "$WORK/start_lsn")
END=$(cat "$WORK/end_lsn")
WAL=$WORK/data/pg_wal
lsn_bytes() { echo $(( (16#${1%/*} << 32) + 16#${1#*/} )); }
BYTES=$(( $(lsn_bytes "$END") - $(lsn_bytes "$START") ))

# Warm the page cache and compare the record counts.
ours_n=$("$WALSTATS" "$WAL" "$START" "$END" | awk '$1 == "Total" {print $2}')
theirs_n=$("$BIN/pg_waldump" --stats -p "$WAL" -s "$START" -e "$END" | awk '$1 == "Total" {print $2}')
if [ "$ours_n" != "$theirs_n" ]; then
    echo "record counts differ: walstats $ours_n, pg_waldump $theirs_n" >&2
    exit 1
fi


ours="" theirs=""
for _ in $(seq "$RUNS"); do
    theirs+="$(time_once "$BIN/pg_waldump" --stats -p "$WAL" -s "$START" -e "$END")"$'\n'
    ours+="$(time_once "$WALSTATS" "$WAL" "$START" "$END")"$'\n'
done

echo
echo "WAL $START..$END: $(( BYTES / 1048576 )) MiB of WAL, $ours_n records (PostgreSQL $MAJOR, best of $RUNS)"
printf '%-22s %9s %12s %10s %10s %12s\n' tool "wall (s)" "user+sys (s)" "peak RSS" "MB/s" "records/s"
row() {
    read -r wall user sys rss <<<"$2"
    printf '%-22s %9.2f %12.2f %8d MB %10.0f %12.0f\n' "$1" "$wall" "$(echo "$user + $sys" | bc)" $((rss / 1024)) \
        "$(echo "$BYTES / 1048576 / ($wall + 0.0001)" | bc -l)" "$(echo "$ours_n / ($wall + 0.0001)" | bc -l)"
}
row "pg_waldump --stats" "$(printf '%s' "$theirs" | best)"
row "pgincr-wal walstats" "$(printf '%s' "$ours" | best)"
