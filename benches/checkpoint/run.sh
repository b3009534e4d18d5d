#!/usr/bin/env bash
# Checkpoint size and duration, and recovery time, of a server holding a given amount of
# state. Loads ROWS rows into a table, keeps a GROUP BY view over them (one group per
# row: groups beyond --operator-cache-mb in the aggregate's RocksDB, its result rows in
# RocksDB), takes a checkpoint, updates 1% of the rows and takes another (incremental for
# the aggregate's SST files), then kills the server with SIGKILL and times its recovery.
#
#   benches/checkpoint/run.sh [ROWS] [PAYLOAD_BYTES]      (defaults: 4000000, 96)
#
# SLUICE_OPERATOR_CACHE_MB sets the aggregate's memory budget (default: the server's, 64).
#
# Needs a release build (`cargo build --release -p sluice-server`, or SLUICE_BIN) and
# psql. Prints one line per measure; see docs/benchmarks.md for results.
set -euo pipefail
cd "$(dirname "$0")/../.."

ROWS=${1:-4000000}
PAYLOAD=${2:-96}
BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice}
[[ -x "$BIN" ]] || { echo "no release binary at $BIN; build it with cargo build --release -p sluice-server" >&2; exit 1; }
WORK=$(mktemp -d)
trap 'kill -9 "${SERVER:-0}" 2>/dev/null || true; rm -rf "$WORK"' EXIT
CACHE_FLAGS=()
[[ -n "${SLUICE_OPERATOR_CACHE_MB:-}" ]] && CACHE_FLAGS=(--operator-cache-mb "$SLUICE_OPERATOR_CACHE_MB")

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PG=$(free_port); REST=$(free_port); FLIGHT=$(free_port)

now() { date +%s.%N; }
elapsed() { python3 -c "print(f'{$2 - $1:.2f}')"; }

start_server() {
    "$BIN" serve --data-dir "$WORK/data" --pg-listen "127.0.0.1:$PG" \
        --rest-listen "127.0.0.1:$REST" --flight-listen "127.0.0.1:$FLIGHT" \
        --checkpoint-interval 0 "${CACHE_FLAGS[@]}" >"$WORK/server.out" 2>>"$WORK/server.err" &
    SERVER=$!
    disown "$SERVER"
    for _ in $(seq 1 6000); do
        grep -q "sluice ready" "$WORK/server.out" 2>/dev/null && return 0
        kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/server.err" >&2; exit 1; }
        sleep 0.05
    done
    echo "the server did not become ready" >&2
    exit 1
}

sql() { psql -h 127.0.0.1 -p "$PG" -U sluice -d sluice -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
rss_mb() { awk '/VmRSS/ { printf "%d", $2 / 1024 }' "/proc/$SERVER/status"; }

start_server
sql "CREATE TABLE t (id BIGINT, payload VARCHAR)"
sql "CREATE MATERIALIZED VIEW groups AS SELECT id, max(payload) AS payload, count(*) AS n FROM t GROUP BY id"
t0=$(now)
# The payload: PAYLOAD characters derived from the id (md5 is 32 hex characters).
sql "INSERT INTO t SELECT value, substr(repeat(md5(CAST(value AS VARCHAR)), $(( (PAYLOAD + 31) / 32 ))), 1, $PAYLOAD) FROM generate_series(1, $ROWS)"
sql "FLUSH"
t1=$(now)
echo "load: $ROWS rows of $PAYLOAD-byte payloads in $(elapsed "$t0" "$t1") s; server RSS $(rss_mb) MB"

# What the newest checkpoint uploaded itself (files it references in older ones are not
# in its directory): all of it, and the aggregate's RocksDB files among it.
uploaded() {
    local dir
    dir=$(ls -d "$WORK"/data/checkpoints/chk-* | sort | tail -1)
    local all db
    all=$(du -sb "$dir" | cut -f1)
    db=$(find "$dir" -type d -name '*.db' -exec du -cb {} + | awk 'END { print $1 + 0 }')
    echo "uploaded $((all / 1048576)) MB, of which aggregate RocksDB files $((db / 1048576)) MB"
}

# Takes a checkpoint and reports it under the label $1.
timed_checkpoint() {
    local t0 t1
    t0=$(now)
    sql "CHECKPOINT"
    t1=$(now)
    echo "$1: $(elapsed "$t0" "$t1") s end to end, $(uploaded); SHOW CHECKPOINTS:"
    psql -h 127.0.0.1 -p "$PG" -U sluice -d sluice -X -A -c "SHOW CHECKPOINTS"
}

timed_checkpoint "first checkpoint"
echo "checkpoint directory: $(du -sm "$WORK/data/checkpoints" | cut -f1) MB; table log: $(du -sm "$WORK/data/tables.log" | cut -f1) MB; RocksDB state: $(du -sm "$WORK/data/state" | cut -f1) MB; operator state: $(du -sm "$WORK/data/operator-state" | cut -f1) MB"

t0=$(now)
sql "UPDATE t SET payload = upper(payload) WHERE id % 100 = 0"
sql "FLUSH"
t1=$(now)
echo "update of 1% of the rows: $(elapsed "$t0" "$t1") s"
timed_checkpoint "second checkpoint"

kill -9 "$SERVER"
while kill -0 "$SERVER" 2>/dev/null; do sleep 0.01; done
: >"$WORK/server.out"
t0=$(now)
start_server
t1=$(now)
sql "FLUSH"
count=$(sql "SELECT count(*) FROM groups")
t2=$(now)
[[ "$count" == "$ROWS" ]] || { echo "recovered view has $count rows, expected $ROWS" >&2; exit 1; }
echo "recovery after SIGKILL: ready in $(elapsed "$t0" "$t1") s, view complete (FLUSH + count) in $(elapsed "$t0" "$t2") s; server RSS $(rss_mb) MB"
