#!/usr/bin/env bash
# Times `pgincr combine` against `pg_combinebackup` on the same real chain.
#
# pgincr repairs stale visibility-map bits by default (see README, combine section); on a
# PostgreSQL 17 chain its maps then differ from upstream's, so the byte comparison leaves
# *_vm files out for the default rows and includes them for the `--no-vm-repair` row, which
# also measures what the repair costs.
#
# Builds the reference chain once (kept in $WORK for later runs): pgbench scale $SCALE, a full
# backup, then $INCR incremental backups, each after $SECS s of `pgbench -c 4 -j 2`. Then, for
# each mode (default copy with CRC32C checksums and fsync on, then --copy-file-range, then
# --link where pg_combinebackup has it), runs both tools $RUNS times, checks that pgincr's
# output is byte-identical to pg_combinebackup's, and prints the best wall time, its user+sys
# CPU and peak RSS, and the ratio. `cp -a` of the full backup followed by `sync` is the copy
# limit. Page cache is warm (the inputs are read once before timing); outputs are removed
# and earlier writes flushed between runs, and the two tools' runs are interleaved.
#
#   benches/combine.sh                        # PostgreSQL 18, scale 300, 6 incrementals
#   MAJOR=17 SCALE=50 SECS=4 benches/combine.sh
#   WORK=/big/disk/chain benches/combine.sh   # reuse or place the chain elsewhere
#   BUILD_ONLY=1 benches/combine.sh           # only build the chain
set -euo pipefail

MAJOR=${MAJOR:-18}
SCALE=${SCALE:-300}
INCR=${INCR:-6}
SECS=${SECS:-8}
RUNS=${RUNS:-3}
WORK=${WORK:-/tmp/pgincr-bench-combine-pg$MAJOR-s$SCALE}
# shellcheck source=benches/common.sh
. "$(dirname "$0")/common.sh"

build_chain() {
    echo "building the chain in $WORK: PostgreSQL $MAJOR, scale $SCALE, $INCR incrementals..." >&2
    rm -rf "$WORK"
    mkdir -p "$WORK"
    chmod 755 "$WORK"
    [ "$(id -u)" = 0 ] && chown pgincr-pg: "$WORK"
    as_server "$BIN/initdb" -D "$WORK/data" -U postgres --auth=trust -E UTF8 --locale=C --no-sync >/dev/null
    cat >>"$WORK/data/postgresql.conf" <<CONF
summarize_wal = on
wal_level = replica
fsync = off
max_wal_size = 8GB
checkpoint_timeout = 30min
shared_buffers = 512MB
listen_addresses = ''
unix_socket_directories = '$WORK'
CONF
    as_server "$BIN/pg_ctl" -D "$WORK/data" -l "$WORK/log" -w start >/dev/null
    trap 'as_server "$BIN/pg_ctl" -D "$WORK/data" -m immediate stop >/dev/null 2>&1 || true' EXIT
    export PGHOST=$WORK PGUSER=postgres PGDATABASE=postgres
    "$BIN/pgbench" -i -q -s "$SCALE" >/dev/null 2>&1
    "$BIN/pg_basebackup" -D "$WORK/b1" -c fast
    for i in $(seq 2 $((INCR + 1))); do
        "$BIN/pgbench" -c 4 -j 2 -T "$SECS" >/dev/null 2>&1
        "$BIN/pg_basebackup" -D "$WORK/b$i" -c fast --incremental="$WORK/b$((i - 1))/backup_manifest"
    done
    as_server "$BIN/pg_ctl" -D "$WORK/data" -m fast stop >/dev/null
    trap - EXIT
    # The cluster is not needed any more; its pages would only crowd the page cache.
    rm -rf "$WORK/data"
    touch "$WORK/chain-complete"
}

[ -f "$WORK/chain-complete" ] || build_chain
[ -n "${BUILD_ONLY:-}" ] && exit 0
CHAIN=()
for i in $(seq 1 $((INCR + 1))); do CHAIN+=("$WORK/b$i"); done
OUT=$WORK/out
REF=$WORK/ref

# Warm the page cache with every input once, so both tools see the same cache state.
cat "$WORK"/b*/base/*/* "$WORK"/b*/pg_wal/* >/dev/null 2>&1 || true

# Runs "$@" once, after flushing earlier writes and letting the disk settle. Prints
# "wall user+sys maxrss_mb".
measure_once() {
    rm -rf "$OUT"
    sync
    sleep 3
    time_once "$@" | awk '{printf "%s %.2f %.0f\n", $1, $2 + $3, $4 / 1024}'
}

same_output() { # [exact]: also the visibility maps
    # Byte-identical files; the manifests differ only in Last-Modified (and, with the repair,
    # in the entries of repaired maps).
    local x=() m='^$'
    if [ "${1:-}" != exact ]; then x=(-x '*_vm'); m='_vm"'; fi
    diff -r --no-dereference -x backup_manifest "${x[@]}" "$REF" "$OUT" >/dev/null || { echo "OUTPUT DIFFERS" >&2; exit 1; }
    diff <(sed -E 's/"Last-Modified": "[^"]*"//; /Manifest-Checksum/d' "$REF/backup_manifest" | grep -v -- "$m") \
         <(sed -E 's/"Last-Modified": "[^"]*"//; /Manifest-Checksum/d' "$OUT/backup_manifest" | grep -v -- "$m") >/dev/null \
        || { echo "MANIFEST DIFFERS" >&2; exit 1; }
}

row() { # name pg_combinebackup-result pgincr-result
    local ratio
    ratio=$(awk "BEGIN{printf \"%.2f\", $(echo "$3" | cut -d' ' -f1) / $(echo "$2" | cut -d' ' -f1)}")
    printf "| %-18s | %8s s | %8s s | %6s MB | %8s s | %8s s | %6s MB | %5sx |\n" "$1" \
        $(echo "$2" | cut -d' ' -f1-3) $(echo "$3" | cut -d' ' -f1-3) "$ratio"
}

SIZE=$(du -sh "$WORK/b1" | cut -f1)
echo
echo "PostgreSQL $MAJOR, pgbench scale $SCALE (full backup $SIZE), $INCR incrementals of ${SECS}s of pgbench -c 4 -j 2;"
echo "$(nproc) cores; best of $RUNS; CPU = user+sys; RSS = peak resident memory."
echo
echo "| mode               | pg_combinebackup wall | CPU | RSS | pgincr wall | CPU | RSS | pgincr / upstream |"
echo "|---|---|---|---|---|---|---|---|"
MODES=("copy (CRC32C, fsync)|" "copy, --no-vm-repair|--no-vm-repair" "copy-file-range|--copy-file-range")
[ "$MAJOR" -ge 18 ] && MODES+=("link|--link")
for m in "${MODES[@]}"; do
    name=${m%%|*}
    flag=${m#*|}
    ups=""
    ours=""
    # Interleave the two tools so that both see the same background noise.
    # pg_combinebackup has no such flag: it always writes what --no-vm-repair writes.
    upflag=${flag/--no-vm-repair/}
    for _ in $(seq "$RUNS"); do
        ups+="$(measure_once "$BIN/pg_combinebackup" $upflag -o "$OUT" "${CHAIN[@]}")"$'\n'
        rm -rf "$REF"
        mv "$OUT" "$REF"
        ours+="$(measure_once "$PGINCR" combine $flag -o "$OUT" "${CHAIN[@]}")"$'\n'
        if [ "$flag" = --no-vm-repair ]; then same_output exact; else same_output; fi
    done
    row "$name" "$(printf "%s" "$ups" | best)" "$(printf "%s" "$ours" | best)"
done
cps=""
for _ in $(seq "$RUNS"); do
    cps+="$(measure_once sh -c "cp -a '$WORK/b1' '$OUT' && sync")"$'\n'
done
cp_limit=$(printf "%s" "$cps" | best)
echo
echo "Copy limit: \`cp -a\` of the full backup + sync: $(echo "$cp_limit" | cut -d' ' -f1) s wall."
rm -rf "$OUT" "$REF"
