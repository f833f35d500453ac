#!/usr/bin/env bash
# The rotation's cost, side by side with what it drives.
#
#   benches/rotation.sh [SCALE] [MAJOR]      defaults: SCALE=300 (about 4.5 GB), MAJOR=18
#
# Environment: BENCH_DIR (default /tmp/pgincr-bench-rotation), PGINCR (binary; default: built
# with cargo --release), INCR_SECONDS (pgbench seconds before each incremental; default 8),
# INFO_BACKUPS / INFO_SEGMENTS (the synthetic repository for the info row; 100 / 100000).
#
# Tables:
#  1. `pgincr backup` alone vs `pgincr run` taking the same kind of backup (full, then an
#     incremental): wall seconds, and the run's phases from its --json report (prepare =
#     lock, repair, catalog, server identity, decision; verify = the manifest check; record,
#     retention, WAL cleanup). Overhead = run wall - backup engine time, as % of the latter.
#  2. `pgincr info` (text and Prometheus) on a repository of INFO_BACKUPS backups and
#     INFO_SEGMENTS archived WAL files.
#  3. A new round's first backup: a server full backup vs a synthetic one (round_start =
#     "synthetic", combined from the previous round in the repository): wall seconds, bytes the
#     server sent, server CPU seconds (the postmaster's reaped children: the walsenders).
set -euo pipefail

SCALE=${1:-300}
MAJOR=${2:-18}
INCR_SECONDS=${INCR_SECONDS:-8}
INFO_BACKUPS=${INFO_BACKUPS:-100}
INFO_SEGMENTS=${INFO_SEGMENTS:-100000}
BENCH_DIR=${BENCH_DIR:-/tmp/pgincr-bench-rotation}
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

DATA=$BENCH_DIR/data
SOCK=$BENCH_DIR/sock
REPO=$BENCH_DIR/repo
PORT=${PORT:-54331}
export PGHOST=$SOCK PGPORT=$PORT PGUSER=postgres LC_ALL=C
unset PGDATA PGDATABASE PGPASSWORD

stop_server() { as_server "$BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 || true; }
trap stop_server EXIT

mkdir -p "$BENCH_DIR"
chmod 755 "$BENCH_DIR"
rm -rf "$REPO" "$BENCH_DIR/out"
mkdir -p "$REPO/main/wal" "$REPO/syn/wal"
[ "$(id -u)" = 0 ] && chown pgincr-pg "$REPO/main/wal" "$REPO/syn/wal"
if [ ! -f "$DATA/.scale-$SCALE" ]; then
    stop_server
    rm -rf "$DATA" "$SOCK"
    mkdir -p "$SOCK"
    [ "$(id -u)" = 0 ] && chown pgincr-pg "$BENCH_DIR" "$SOCK"
    init_cluster "$DATA" "$SOCK" "$PORT" "archive_mode = on" "archive_command = 'cp %p $REPO/main/wal/%f'"
    echo "loading pgbench scale $SCALE ..." >&2
    "$BIN/pgbench" -i -q -s "$SCALE" postgres >&2
    "$BIN/psql" -Xqc "CHECKPOINT" postgres
    as_server touch "$DATA/.scale-$SCALE"
elif ! as_server "$BIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    as_server "$BIN/pg_ctl" -D "$DATA" -l "$BENCH_DIR/server.log" -w start >/dev/null
fi

CONFIG=$BENCH_DIR/pgincr.toml
cat >"$CONFIG" <<TOML
[repository]
path = "$REPO"

[server.main]
conninfo = "host=$SOCK port=$PORT user=postgres"
max_incrementals = 6
keep_rounds = 2
checkpoint = "fast"

[server.syn]
conninfo = "host=$SOCK port=$PORT user=postgres"
max_incrementals = 1
round_start = "synthetic"
checkpoint = "fast"
TOML
NOW=$(date -u -d '2025-01-23 05:00:02' +%s)
DAY=86400

json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

# `pgincr run` for server $1 at day $2 with more flags; prints wall seconds, leaves the
# report in $BENCH_DIR/last.json.
timed_run() {
    local server=$1 day=$2; shift 2
    local t0 t1
    t0=$(date +%s.%N)
    "$PGINCR" run --config "$CONFIG" --server "$server" --json --no-notify \
        --now $((NOW + day * DAY)) "$@" >"$BENCH_DIR/last.json"
    t1=$(date +%s.%N)
    echo "$t1 - $t0" | bc
}

server_cpu() {
    # utime+stime of reaped children of the postmaster (fields 16, 17), in seconds.
    local pid; pid=$(head -1 "$DATA/postmaster.pid")
    awk -v hz="$(getconf CLK_TCK)" '{print ($16 + $17) / hz}' "/proc/$pid/stat"
}

phases() {
    json_field "' '.join(f'{k}={v:.2f}' for k, v in d['phase_secs'].items())" <"$BENCH_DIR/last.json"
}

echo
echo "## 1. run overhead (scale $SCALE, PostgreSQL $MAJOR, plain, -X stream, -c fast)"
echo
printf '| %-12s | %10s | %10s | %10s | %-70s |\n' backup "backup (s)" "run (s)" overhead "run phases (s)"
printf '|%s|%s|%s|%s|%s|\n' -------------- ------------ ------------ ------------ "$(printf -- '-%.0s' {1..72})"
mkdir -p "$BENCH_DIR/out"
# The repository's first run also deletes the WAL archived before any backup existed (pgbench
# -i's, gigabytes at scale 300): a one-off, so it is done first and the measured full is the
# start of the second round, as every later full is.
timed_run main 0 --full >/dev/null
echo "first run (one-off WAL purge included): $(phases)" >&2
sync
t_backup=$( { /usr/bin/time -f %e "$PGINCR" backup -D "$BENCH_DIR/out/full" -c fast >/dev/null; } 2>&1 | tail -1)
t_run=$(timed_run main 1 --full)
engine=$(json_field "d['phase_secs']['backup']" <"$BENCH_DIR/last.json")
over=$(echo "scale=1; ($t_run - $engine) * 100 / $engine" | bc)
printf '| %-12s | %10s | %10.2f | %9s%% | %-70s |\n' full "$t_backup" "$t_run" "$over" "$(phases)"
"$BIN/pgbench" -T "$INCR_SECONDS" -c 4 postgres >/dev/null 2>&1
manifest=$REPO/main/backups/$(json_field "d['backup']['name']" <"$BENCH_DIR/last.json")/backup_manifest
t_backup=$( { /usr/bin/time -f %e "$PGINCR" backup -D "$BENCH_DIR/out/incr" -c fast -i "$manifest" >/dev/null; } 2>&1 | tail -1)
t_run=$(timed_run main 2)
engine=$(json_field "d['phase_secs']['backup']" <"$BENCH_DIR/last.json")
over=$(echo "scale=1; ($t_run - $engine) * 100 / $engine" | bc)
printf '| %-12s | %10s | %10.2f | %9s%% | %-70s |\n' incremental "$t_backup" "$t_run" "$over" "$(phases)"
rm -rf "$BENCH_DIR/out"

echo
echo "## 2. pgincr info on $INFO_BACKUPS backups and $INFO_SEGMENTS archived WAL files"
echo
FAKE=$BENCH_DIR/fake
rm -rf "$FAKE"
mkdir -p "$FAKE/big/wal" "$FAKE/big/backups"
python3 - "$FAKE/big" "$INFO_BACKUPS" "$INFO_SEGMENTS" <<'PY'
import json, os, sys
root, nb, ns = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
seg = 16 << 20
backups = []
for i in range(nb):
    rnd, idx = i // 7 + 1, i % 7
    start = (i * ns // nb) * seg + 0x28
    t = 1737608402 + i * 86400
    import time
    name = time.strftime('%Y-%m-%d-%H%M%S', time.gmtime(t)) + ('_FULL_0' if idx == 0 else f'_INCR_{idx}')
    backups.append({
        'name': name, 'kind': 'Full' if idx == 0 else 'Incremental', 'origin': 'Server',
        'parent': None if idx == 0 else backups[-1]['name'], 'round': rnd, 'index': idx,
        'start_lsn': f'{start >> 32:X}/{start & 0xffffffff:X}',
        'end_lsn': f'{(start + 0x1000) >> 32:X}/{(start + 0x1000) & 0xffffffff:X}',
        'timeline': 1, 'system_identifier': 7000000000000000001, 'start_time': t,
        'end_time': t + 60, 'bytes': 1 << 30, 'files': 1000, 'duration_secs': 60.0,
        'verification': {'Passed': {'at': t}}})
    os.mkdir(os.path.join(root, 'backups', name))
json.dump({'format_version': 1, 'backups': backups, 'events': []},
          open(os.path.join(root, 'catalog.json'), 'w'))
for s in range(ns):
    open(os.path.join(root, 'wal', '00000001%08X%08X' % (s >> 8, s & 0xff)), 'w').close()
PY
cat >"$BENCH_DIR/fake.toml" <<TOML
[repository]
path = "$FAKE"
[server.big]
conninfo = "host=/nonexistent"
TOML
printf '| %-22s | %10s | %10s |\n' command "wall (s)" "max RSS (MB)"
printf '|%s|%s|%s|\n' ------------------------ ------------ ------------
for fmt in text prometheus; do
    r=$( for _ in 1 2 3; do time_once "$PGINCR" info --config "$BENCH_DIR/fake.toml" --format $fmt; done | best)
    read -r wall _ _ rss <<<"$r"
    printf '| %-22s | %10s | %10s |\n' "info --format $fmt" "$wall" "$((rss / 1024))"
done
rm -rf "$FAKE"

echo
echo "## 3. a new round's first backup: from the server vs synthetic (scale $SCALE)"
echo
printf '| %-16s | %10s | %18s | %16s |\n' "first backup" "wall (s)" "server sent (MB)" "server CPU (s)"
printf '|%s|%s|%s|%s|\n' ------------------ ------------ -------------------- ------------------
# Round 1 of `syn`: a server full, then one incremental.
timed_run syn 0 >/dev/null
"$BIN/pgbench" -T "$INCR_SECONDS" -c 4 postgres >/dev/null 2>&1
timed_run syn 1 >/dev/null
"$BIN/pgbench" -T "$INCR_SECONDS" -c 4 postgres >/dev/null 2>&1
for kind in server synthetic; do
    c0=$(server_cpu)
    if [ $kind = server ]; then
        rm -rf "$REPO/main"; mkdir -p "$REPO/main/wal"; [ "$(id -u)" = 0 ] && chown pgincr-pg "$REPO/main/wal"
        t=$(timed_run main 3 --full)
    else
        t=$(timed_run syn 2)
    fi
    c1=$(server_cpu)
    origin=$(json_field "d['decision']['origin']" <"$BENCH_DIR/last.json")
    [ "$origin" = "$kind" ] || { echo "expected a $kind full, got $origin" >&2; exit 1; }
    if [ $kind = server ]; then
        sent=$(du -sm "$REPO/main/backups" | cut -f1)
    else
        sent=0
    fi
    printf '| %-16s | %10.2f | %18s | %16.2f |\n' "$kind full" "$t" "$sent" "$(echo "$c1 - $c0" | bc)"
done
