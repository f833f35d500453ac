# Sourced by the bench scripts after they set MAJOR: finds the PostgreSQL tool set of that
# major version (BIN), builds pgincr in release mode unless PGINCR names a binary, and defines
# as_server, which runs a command as the account postgres runs as (pgincr-pg when root).
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
if [ -f "$ROOT/.pg/env" ]; then . "$ROOT/.pg/env"; fi
binvar=PGINCR_PG${MAJOR}_BIN
BIN=${!binvar:?PostgreSQL $MAJOR is not installed: run scripts/install-postgres}

if [ -z "${PGINCR:-}" ]; then
    echo "building pgincr (release)..." >&2
    (cd "$ROOT" && cargo build --release -q -p pgincr)
    PGINCR=${CARGO_TARGET_DIR:-$ROOT/target}/release/pgincr
fi

as_server() {
    if [ "$(id -u)" = 0 ]; then runuser -u pgincr-pg -- "$@"; else "$@"; fi
}

# Runs "$@" once with its output discarded and prints "wall user sys maxrss_kb" as GNU time
# measures them.
time_once() {
    /usr/bin/time -f "%e %U %S %M" "$@" 2>&1 >/dev/null | tail -1
}

# Keeps the line with the smallest first field (the fastest run) of its input.
best() { sort -n -k1,1 | head -1; }

# init_cluster DATA SOCK PORT [CONF_LINE...]: initdb (data checksums, trust, C locale) as the
# server account and a bench configuration (Unix socket only, WAL summaries on, a large
# shared_buffers and max_wal_size so checkpoints stay out of the way), plus CONF_LINEs;
# then starts it, logging to DATA/../server.log.
init_cluster() {
    local data=$1 sock=$2 port=$3; shift 3
    as_server "$BIN/initdb" -D "$data" -U postgres --auth=trust --data-checksums -E UTF8 --locale=C >/dev/null
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$sock'"
        echo "port = $port"
        echo "wal_level = replica"
        echo "summarize_wal = on"
        echo "max_wal_senders = 10"
        echo "shared_buffers = 1GB"
        echo "max_wal_size = 8GB"
        echo "checkpoint_timeout = 30min"
        for line in "$@"; do echo "$line"; done
    } >>"$data/postgresql.conf"
    as_server "$BIN/pg_ctl" -D "$data" -l "$(dirname "$data")/server.log" -w start >/dev/null
}
