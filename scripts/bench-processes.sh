#!/usr/bin/env bash
# Times the default dataset as whole processes, the way the course runs it: the central starts,
# the five agencies start as soon as it listens, the clock stops when the last agency exits.
# Durable acknowledgements on, INFO logs on every process (LOGGING_LEVEL=DEBUG for more; not
# less: the breakdown reads INFO lines).
#   scripts/bench-processes.sh [RUNS]   (default 9; prints every run, its breakdown, the medians)
# Every wait is on an event (a log line read from a pipe, a process exit), never a polling sleep.
# Each log line is stamped as it is read, so the breakdown is:
#   listen   central start → its `action: listen` line
#   upload   → the last agency's `action: upload | result: success` (all bets acknowledged)
#   draw     → the central's `action: sorteo`
#   winners  → the last agency's `action: consulta_ganadores`
#   exit     → the last agency process exited
# Builds the release binaries first. Extra variables (e.g. LOTTERY_FSYNC=false) pass through.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-9}
level=${LOGGING_LEVEL:-INFO}
case ${level^^} in
    INFO | DEBUG | TRACE) ;;
    *) echo "LOGGING_LEVEL=$level: the script reads INFO lines (listen, upload, sorteo, consulta_ganadores); use INFO or DEBUG" >&2; exit 2 ;;
esac
cargo build --release --quiet --bin lottery-server --bin lottery-client

now_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }
# Copies stdin to stdout, each line prefixed with the time (µs) it was read.
stamp() { while IFS= read -r line; do printf '%s %s\n' "${EPOCHREALTIME/./}" "$line"; done; }
# The stamp of the last line of files $2… that contains $1.
last_stamp() { local needle=$1; shift; grep -h -- "$needle" "$@" | cut -d' ' -f1 | sort -n | tail -1; }
ms() { echo $((($2 - $1) / 1000)); }
median() { sort -n | sed -n "$((($1 + 1) / 2))p"; }

declare -a totals listens uploads draws winners exits
for ((r = 1; r <= runs; r++)); do
    dir=$(mktemp -d)
    start=$(now_us)
    coproc CENTRAL {
        SERVER_IP=127.0.0.1 SERVER_PORT=0 LOTTERY_AGENCIES=5 BETS_FILE="$dir/bets.csv" \
            LOGGING_LEVEL=$level exec ./target/release/lottery-server
    }
    server=$CENTRAL_PID
    # A copy of the central's output fd: bash does not hand a coprocess's own fds to subshells.
    exec {central_out}<&"${CENTRAL[0]}"
    address=
    while IFS= read -r line <&"$central_out"; do
        printf '%s %s\n' "${EPOCHREALTIME/./}" "$line" >>"$dir/server.log"
        if [[ $line == *"action: listen | result: success"* ]]; then
            address=${line##*address: }
            break
        fi
    done
    [[ -n $address ]] || { echo "run $r: the central did not start; logs in $dir" >&2; exit 1; }
    stamp <&"$central_out" >>"$dir/server.log" &
    drain=$!
    exec {central_out}<&-
    pids=()
    for k in 1 2 3 4 5; do
        CLI_ID=$k CLI_SERVER_ADDRESS=$address CLI_DATA_FILE=.data/agency-$k.csv \
            CLI_LOG_LEVEL=$level \
            ./target/release/lottery-client > >(stamp >"$dir/client$k.log") &
        pids+=($!)
    done
    failed=0
    for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
    end=$(now_us)
    kill -TERM "$server"
    wait "$server" || failed=1
    wait "$drain" || true
    ((failed == 0)) || { echo "run $r failed; logs in $dir" >&2; exit 1; }
    clients=("$dir"/client?.log)
    listen=$(last_stamp "action: listen" "$dir/server.log")
    upload=$(last_stamp "action: upload | result: success" "${clients[@]}")
    draw=$(last_stamp "action: sorteo | result: success" "$dir/server.log")
    won=$(last_stamp "action: consulta_ganadores" "${clients[@]}")
    totals+=("$(ms "$start" "$end")")
    listens+=("$(ms "$start" "$listen")")
    uploads+=("$(ms "$listen" "$upload")")
    draws+=("$(ms "$upload" "$draw")")
    winners+=("$(ms "$draw" "$won")")
    exits+=("$(ms "$won" "$end")")
    echo "run $r: ${totals[-1]} ms (listen ${listens[-1]}, upload ${uploads[-1]}, draw ${draws[-1]}, winners ${winners[-1]}, exit ${exits[-1]})"
    rm -rf "$dir"
done
m() { local -n values=$1; printf '%s\n' "${values[@]}" | median "$runs"; }
echo "median of $runs runs: $(m totals) ms (central start → last agency exit, 5 agencies, 79,070 bets, $level logs)"
echo "  medians: listen $(m listens), upload $(m uploads), draw $(m draws), winners $(m winners), exit $(m exits) ms"
