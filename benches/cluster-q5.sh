#!/usr/bin/env bash
# Nexmark q5 on a cluster of processes on this machine: the time from CREATE MATERIALIZED
# VIEW until FLUSH returns (the bounded bid source read to its end and every result in
# the view), as events per second.
#
#   benches/cluster-q5.sh EVENTS WORKERS SLOTS     # a coordinator and WORKERS x SLOTS
#   benches/cluster-q5.sh EVENTS 0 PARALLELISM     # `sluice serve`, everything in one process
#
# The view runs at parallelism WORKERS x SLOTS (or PARALLELISM). Needs a release build
# (`cargo build --release -p sluice-server`; SLUICE_BIN overrides the binary) and psql.
set -euo pipefail
cd "$(dirname "$0")/.."

EVENTS=${1:?events}
WORKERS=${2:?workers (0: sluice serve)}
SLOTS=${3:?slots per worker (or the parallelism of sluice serve)}
BIN=${SLUICE_BIN:-${CARGO_TARGET_DIR:-target}/release/sluice}
BASE=${SLUICE_BENCH_PORT:-27000}
DIR=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$DIR"
}
trap cleanup EXIT

# Starts `sluice "$@"` and waits until it prints a line starting with $READY.
start() {
    local ready=$1 log=$2
    shift 2
    "$BIN" "$@" >"$log" 2>"$log.err" &
    PIDS+=($!)
    for _ in $(seq 1 300); do
        if grep -q "^$ready" "$log"; then return 0; fi
        sleep 0.1
    done
    echo "sluice $1 did not start: $(cat "$log.err")" >&2
    exit 1
}

common=(--pg-listen "127.0.0.1:$BASE" --rest-listen "127.0.0.1:$((BASE + 1))"
    --flight-listen "127.0.0.1:$((BASE + 2))" --ephemeral)
if [ "$WORKERS" -eq 0 ]; then
    PARALLELISM=$SLOTS
    start "sluice ready" "$DIR/serve.log" serve "${common[@]}"
else
    PARALLELISM=$((WORKERS * SLOTS))
    start "sluice ready" "$DIR/coordinator.log" coordinator "${common[@]}" \
        --rpc-listen "127.0.0.1:$((BASE + 3))"
    for w in $(seq 1 "$WORKERS"); do
        start "sluice worker ready" "$DIR/worker$w.log" worker \
            --coordinator "http://127.0.0.1:$((BASE + 3))" --slots "$SLOTS" \
            --rpc-listen "127.0.0.1:$((BASE + 3 + w))"
    done
fi

psql_() { psql -h 127.0.0.1 -p "$BASE" -U sluice -d sluice -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }
psql_ -c "CREATE SOURCE bid (auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR,
    url VARCHAR, date_time TIMESTAMP(3), extra VARCHAR) WITH (connector = 'nexmark',
    nexmark.table.type = 'bid', nexmark.event.num = '$EVENTS',
    nexmark.min.event.gap.in.ns = '0')"
start_ns=$(date +%s%N)
psql_ -c "SET streaming_parallelism = $PARALLELISM" \
    -f benches/nexmark/queries/q5.sql -c "FLUSH"
end_ns=$(date +%s%N)
rows=$(psql_ -c "SELECT count(*) FROM nexmark_q5")
job=$(curl -s "127.0.0.1:$((BASE + 1))/jobs" | grep -o '"id":[0-9]*' | head -1 | cut -d: -f2)
placement=$(curl -s "127.0.0.1:$((BASE + 1))/jobs/$job" | tr -d '\n' | grep -o '"worker":[0-9]*' | sort | uniq -c | tr -s ' ' | tr '\n' ' ')
seconds=$(echo "scale=2; ($end_ns - $start_ns) / 1000000000" | bc)
echo "q5 events=$EVENTS workers=$WORKERS slots=$SLOTS parallelism=$PARALLELISM seconds=$seconds events_per_s=$(echo "$EVENTS * 1000000000 / ($end_ns - $start_ns)" | bc) rows=$rows subtasks_per_worker: $placement"
