#!/usr/bin/env bash
# Time from "restore" to a server out of recovery at the end of the archived WAL:
# `pgincr restore --start` against the manual upstream path (pg_combinebackup, recovery
# settings with cp as restore_command, pg_ctl start, wait until pg_is_in_recovery() is false).
#
#   benches/restore.sh [SCALE] [MAJOR]       defaults: SCALE=300 (about 4.5 GB), MAJOR=18
#
# Environment: BENCH_DIR (default /tmp/pgincr-bench-restore), PGINCR (binary; default: built
# with cargo --release), INCREMENTALS (default 7), INCR_SECONDS (pgbench seconds before each
# incremental; default 5), WAL_SECONDS (pgbench seconds after the last backup, archived;
# default 20).
#
# Columns: our part / upstream's part (combine and recovery settings), the recovery part
# (PostgreSQL's replay of the archived WAL, with the restore_command of each), and the total.
set -euo pipefail

SCALE=${1:-300}
MAJOR=${2:-18}
INCREMENTALS=${INCREMENTALS:-7}
INCR_SECONDS=${INCR_SECONDS:-5}
WAL_SECONDS=${WAL_SECONDS:-20}
BENCH_DIR=${BENCH_DIR:-/tmp/pgincr-bench-restore}
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

DATA=$BENCH_DIR/data
SOCK=$BENCH_DIR/sock
REPO=$BENCH_DIR/repo
OUT=$BENCH_DIR/out
PORT=${PORT:-54333}
export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres LC_ALL=C
unset PGDATA PGDATABASE PGPASSWORD
ACCOUNT=$(id -un)
[ "$(id -u)" = 0 ] && ACCOUNT=pgincr-pg

stop_all() {
    as_server "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true
    for d in "$OUT"/*; do as_server "$BIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true; done
}
trap stop_all EXIT

stop_all
rm -rf "$BENCH_DIR"
mkdir -p "$SOCK" "$REPO/main/wal" "$OUT"
chmod 755 "$BENCH_DIR" "$OUT"
[ "$(id -u)" = 0 ] && chown pgincr-pg "$BENCH_DIR" "$SOCK" "$REPO/main/wal" "$OUT"
init_cluster "$DATA" "$SOCK" "$PORT" "archive_mode = on" "archive_command = 'cp %p $REPO/main/wal/%f'"
echo "loading pgbench scale $SCALE ..." >&2
"$BIN/pgbench" -i -q -s "$SCALE" postgres >&2
cat >"$BENCH_DIR/pgincr.toml" <<TOML
[repository]
path = "$REPO"
[server.main]
conninfo = "host=$SOCK port=$PORT user=postgres"
max_incrementals = $INCREMENTALS
checkpoint = "fast"
pg_bin = "$BIN"
TOML
echo "full + $INCREMENTALS incrementals ..." >&2
"$PGINCR" run --config "$BENCH_DIR/pgincr.toml" >/dev/null
for _ in $(seq "$INCREMENTALS"); do
    "$BIN/pgbench" -T "$INCR_SECONDS" -c 4 postgres >/dev/null 2>&1
    "$PGINCR" run --config "$BENCH_DIR/pgincr.toml" >/dev/null
done
echo "pgbench $WAL_SECONDS s after the last backup ..." >&2
"$BIN/pgbench" -T "$WAL_SECONDS" -c 4 postgres >/dev/null 2>&1
seg=$("$BIN/psql" -XAtc "SELECT pg_walfile_name(pg_switch_wal())" postgres)
until [ -f "$REPO/main/wal/$seg" ]; do sleep 0.2; done
as_server "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
wal_mb=$(du -sm "$REPO/main/wal" | cut -f1)
chain=()
while IFS= read -r n; do chain+=("$REPO/main/backups/$n"); done < <(ls "$REPO/main/backups")
[ "$(id -u)" = 0 ] && chmod -R o+rX "$REPO/main/wal"

wait_production() {
    until [ "$("$BIN/psql" -h "$1" -p "$2" -XAtc "SELECT pg_is_in_recovery()" postgres 2>/dev/null)" = f ]; do sleep 0.05; done
}

now() { date +%s.%N; }

# Upstream.
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now)
"$BIN/pg_combinebackup" -o "$OUT/upstream" "${chain[@]}"
rm -f "$OUT/upstream"/pg_wal/0*
printf "restore_command = 'cp %s/%%f %%p'\narchive_mode = off\n" "$REPO/main/wal" >>"$OUT/upstream/postgresql.auto.conf"
touch "$OUT/upstream/recovery.signal"
chmod 700 "$OUT/upstream"
[ "$(id -u)" = 0 ] && chown -R pgincr-pg "$OUT/upstream"
t1=$(now)
as_server "$BIN/pg_ctl" -D "$OUT/upstream" -l "$OUT/upstream.log" -o "-p $((PORT + 1)) -k $SOCK" -w start >/dev/null
wait_production "$SOCK" $((PORT + 1))
t2=$(now)
as_server "$BIN/pg_ctl" -D "$OUT/upstream" -m immediate -w stop >/dev/null
up_restore=$(echo "$t1 - $t0" | bc); up_recovery=$(echo "$t2 - $t1" | bc); up_total=$(echo "$t2 - $t0" | bc)

# pgincr (the same restore_command, so only our part differs).
sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
t0=$(now)
"$PGINCR" restore --config "$BENCH_DIR/pgincr.toml" --to "$OUT/pgincr" --no-verify \
    --restore-command "cp $REPO/main/wal/%f %p" --start --owner "$ACCOUNT" --json >"$BENCH_DIR/restore.json"
t2=$(now)
ours_restore=$(python3 -c "import json; print(json.load(open('$BENCH_DIR/restore.json'))['restore_secs'])")
ours_recovery=$(python3 -c "import json; print(json.load(open('$BENCH_DIR/restore.json'))['reached']['recovery_secs'])")
ours_total=$(echo "$t2 - $t0" | bc)
as_server "$BIN/pg_ctl" -D "$OUT/pgincr" -m immediate -w stop >/dev/null 2>&1 || true

echo
echo "## restore to the end of the WAL: scale $SCALE, full + $INCREMENTALS incrementals, $wal_mb MB of archived WAL, PostgreSQL $MAJOR"
echo
printf '| %-26s | %12s | %12s | %8s |\n' "" "upstream (s)" "pgincr (s)" ratio
printf '|%s|%s|%s|%s|\n' ---------------------------- -------------- -------------- ----------
row() { printf '| %-26s | %12.2f | %12.2f | %7.2fx |\n' "$1" "$2" "$3" "$(echo "scale=2; $3 / $2" | bc)"; }
row "combine + settings" "$up_restore" "$ours_restore"
row "start + WAL replay" "$up_recovery" "$ours_recovery"
row "total" "$up_total" "$ours_total"
